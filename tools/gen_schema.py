#!/usr/bin/env python3
"""Generate vtwin's VMODL schema (schema/vmodl.json) from pyvmomi's type registry.

Usage: tools/gen_schema.py PYVMOMI_PACKAGE_DIR [GOVMOMI_CNS_TYPES_GO] > schema/vmodl.json

The optional second source is govmomi's `cns/types/types.go` (Apache-2.0; the
Debian package golang-github-vmware-govmomi-dev installs it under
/usr/share/gocode/src/github.com/vmware/govmomi).  pyvmomi 9.1's registry lacks
a few CnsVolumeManager methods the vSphere CSI driver calls through govmomi
(CnsQueryAllVolume, CnsQueryVolumeInfo) and their types; those, and only
those absent from pyvmomi, are read from the Go declarations.

The registry files (pyVmomi/_typeinfo_*.py, Apache-2.0) are plain sequences of
calls: AddVersion, AddVersionParent, CreateDataType, CreateManagedType,
CreateEnumType.  We evaluate them with recording stand-ins for those functions
(never importing pyVmomi itself), resolve every type reference to its wire
(WSDL) name and write one JSON document.  The Rust build script turns that
document into static tables; no Rust type is written by hand.
"""
import json
import os
import re
import sys

F_LINK, F_LINKABLE, F_OPTIONAL, F_SECRET = [1 << x for x in range(4)]

# The registry modules served by vtwin: vim25 core, query, vim, vslm and vsan.
MODULES = ["core", "query", "vim", "vslm", "vsanhealth"]

# Built-in vmodl names and their wire names (pyVmomi.VmomiSupport.vmodlTypes).
PRIMITIVES = {
    "void": "void", "anyType": "anyType", "string": "string",
    "bool": "boolean", "boolean": "boolean", "byte": "byte", "short": "short",
    "int": "int", "long": "long", "float": "float", "double": "double",
    "Link": "Link", "vmodl.URI": "anyURI", "vmodl.Binary": "base64Binary",
    "vmodl.DateTime": "dateTime", "vmodl.TypeName": "TypeName",
    "vmodl.MethodName": "MethodName", "vmodl.PropertyPath": "PropertyPath",
    "vmodl.DataObject": "DataObject", "vmodl.ManagedObject": "ManagedObject",
}


class Registry:
    def __init__(self):
        self.versions = {}
        self.parents = {}
        self.types = {}      # vmodl name -> record
        self.order = []
        self.module_of = {}

    def add_version(self, name, ns, wire, is_legacy, service_ns):
        self.versions.setdefault(name, {"name": name, "ns": ns, "wire": wire,
                                        "legacy": bool(is_legacy), "service": service_ns})

    def add_parent(self, name, parent):
        self.parents.setdefault(name, set()).add(parent)

    def _add(self, rec):
        name = rec["vmodl"]
        if name in self.types:
            return  # identical definitions repeat across modules
        self.types[name] = rec
        self.order.append(name)

    def data(self, vmodl, wsdl, parent, version, props):
        self._add({"kind": "data", "vmodl": vmodl, "wsdl": wsdl, "base": parent,
                   "version": version,
                   "props": [{"name": p[0], "type": p[1], "version": p[2], "flags": p[3]}
                             for p in props or []]})

    def managed(self, vmodl, wsdl, parent, version, props, methods):
        ms = []
        for m in methods or []:
            (mname, mwsdl, mver, params, result, priv, faults) = m
            ms.append({
                "name": mname, "wsdl": mwsdl, "version": mver,
                "params": [{"name": p[0], "type": p[1], "version": p[2], "flags": p[3],
                            "privilege": p[4]} for p in params or ()],
                "result_flags": result[0], "result": result[1], "result_actual": result[2],
                "privilege": priv, "faults": list(faults or []),
            })
        self._add({"kind": "managed", "vmodl": vmodl, "wsdl": wsdl, "base": parent,
                   "version": version,
                   "props": [{"name": p[0], "type": p[1], "version": p[2], "flags": p[3],
                              "privilege": p[4]} for p in props or []],
                   "methods": ms})

    def enum(self, vmodl, wsdl, version, values):
        self._add({"kind": "enum", "vmodl": vmodl, "wsdl": wsdl, "version": version,
                   "values": list(values)})


def load(pkgdir):
    reg = Registry()
    env_funcs = {
        "AddVersion": reg.add_version,
        "AddVersionParent": reg.add_parent,
        "CreateDataType": reg.data,
        "CreateManagedType": reg.managed,
        "CreateEnumType": reg.enum,
        "AddBreakingChangesInfo": lambda *a, **k: None,
        "F_LINK": F_LINK, "F_LINKABLE": F_LINKABLE,
        "F_OPTIONAL": F_OPTIONAL, "F_SECRET": F_SECRET,
    }

    class _Set:
        def Add(self, *_a):
            pass

    for mod in MODULES:
        path = os.path.join(pkgdir, "_typeinfo_%s.py" % mod)
        src = open(path, encoding="utf-8").read()
        # Drop the relative imports; everything they name is in env_funcs.
        src = re.sub(r"^from \.VmomiSupport import .*$", "", src, flags=re.M)
        env = dict(env_funcs)
        env.update(newestVersions=_Set(), ltsVersions=_Set(), oldestVersions=_Set(),
                   dottedVersions=_Set())
        exec(compile(src, path, "exec"), env)
        if mod == "core":
            builtin_faults(reg, pkgdir)
    return reg


def builtin_faults(reg, pkgdir):
    """MethodFault, RuntimeFault and LocalizedMethodFault are created by
    pyVmomi.VmomiSupport itself rather than by the emitted registry; read their
    definitions from the installed pyVmomi so nothing is copied by hand."""
    sys.path.insert(0, os.path.dirname(os.path.abspath(pkgdir)))
    from pyVmomi import VmomiSupport as vs  # noqa: E402
    for name in ("vmodl.MethodFault", "vmodl.RuntimeFault", "vmodl.LocalizedMethodFault"):
        t = vs.GetVmodlType(name)
        parent = vs.GetVmodlName(t.__bases__[0])
        own = [p for p in t._propList
               if not any(p.name == q.name for q in getattr(t.__bases__[0], "_propList", []))]
        props = [(p.name, vs.GetVmodlName(p.type) if hasattr(p, "type") else p.typeName,
                  p.version, p.flags) for p in own]
        reg.data(name, t._wsdlName, parent, t._version, props)


def wire_type(reg, t):
    """Resolve a vmodl type reference to (wire name, is_array, kind)."""
    arr = t.endswith("[]")
    base = t[:-2] if arr else t
    if base in PRIMITIVES:
        w = PRIMITIVES[base]
        kind = {"DataObject": "data", "ManagedObject": "managed"}.get(w, "primitive")
        return w, arr, kind
    rec = reg.types.get(base)
    if rec is None:
        raise SystemExit("unresolved type reference: %s" % t)
    return rec["wsdl"], arr, rec["kind"]


GO_PRIMITIVES = {"string": "string", "int64": "long", "int32": "int", "int": "int",
                 "bool": "boolean", "byte": "byte", "int16": "short", "float32": "float",
                 "float64": "double", "time.Time": "vmodl.DateTime"}


def load_govmomi_cns(reg, path):
    """Add the CnsVolumeManager methods and Cns data types that govmomi's
    cns/types/types.go declares and the pyvmomi registry does not."""
    src = open(path, encoding="utf-8").read()
    by_wsdl = {r["wsdl"]: n for n, r in reg.types.items()}
    structs = {}
    for m in re.finditer(r"^type (\w+) struct \{\n(.*?)^\}", src, flags=re.M | re.S):
        fields, base = [], None
        for line in m.group(2).splitlines():
            line = line.strip()
            if not line or line.startswith("//"):
                continue
            f = re.match(r'(\w+)\s+(\S+)\s+`xml:"([^"]*)"`', line)
            if f:
                wire, _, opts = f.group(3).partition(",")
                fields.append((f.group(1), f.group(2), wire, "omitempty" in opts))
            elif re.fullmatch(r"[\w.]+", line):
                base = line
        structs[m.group(1)] = (base, fields)
    added = set(re.findall(r'types\.Add\("(\w+)"', src))
    mgr = reg.types["vim.cns.VolumeManager"]
    have_methods = {x["wsdl"] for x in mgr["methods"]}
    # Versioned as CnsQueryVolume, the method they sit beside.
    version = next(x["version"] for x in mgr["methods"] if x["wsdl"] == "CnsQueryVolume")

    def vmodl_of(gotype):
        arr = gotype.startswith("[]")
        t = gotype[2:] if arr else gotype
        t = t.lstrip("*")
        if t in GO_PRIMITIVES:
            v = GO_PRIMITIVES[t]
        else:
            w = t.split(".")[-1]
            if w.startswith("Base"):
                w = w[4:]
            if w == "ManagedObjectReference":
                v = "vmodl.ManagedObject"
            elif w in by_wsdl:
                v = by_wsdl[w]
            elif w in structs:
                v = "vim.cns." + w[3:]
            else:
                raise SystemExit("govmomi type %s has no registry counterpart" % gotype)
        return v + ("[]" if arr else "")

    # Data types first (methods refer to them).
    new = [n for n in sorted(added) if n in structs and n not in by_wsdl and n.startswith("Cns")
           and not n.endswith("RequestType") and not n.endswith("Response")
           and n + "RequestType" not in structs]
    for n in new:
        by_wsdl[n] = "vim.cns." + n[3:]
    for n in new:
        base, fields = structs[n]
        parent = vmodl_of(base)
        props = [(f[2], vmodl_of(f[1]), version, F_OPTIONAL if f[3] else 0) for f in fields]
        reg.data("vim.cns." + n[3:], n, parent, version, props)
    for n in sorted(added):
        req = structs.get(n + "RequestType")
        resp = structs.get(n + "Response")
        if req is None or n in have_methods or not n.startswith("Cns"):
            continue
        params = [(f[2], vmodl_of(f[1]), version, F_OPTIONAL if f[3] else 0, None)
                  for f in req[1] if f[2] != "_this"]
        ret = vmodl_of(resp[1][0][1]) if resp and resp[1] else "void"
        if ret == "vmodl.ManagedObject":
            ret = "vim.Task"
        mgr["methods"].append({
            "name": n[3:4].lower() + n[4:], "wsdl": n, "version": version, "params": [
                {"name": p[0], "type": p[1], "version": p[2], "flags": p[3], "privilege": None}
                for p in params],
            "result_flags": 0, "result": ret, "result_actual": ret,
            "privilege": None, "faults": ["vmodl.fault.InvalidArgument", "vim.fault.CnsFault"],
        })
        print("govmomi: method %s" % n, file=sys.stderr)
    for n in new:
        print("govmomi: type %s" % n, file=sys.stderr)


def main():
    pkgdir = sys.argv[1]
    reg = load(pkgdir)
    extra_source = ""
    if len(sys.argv) > 2:
        load_govmomi_cns(reg, sys.argv[2])
        extra_source = "; CnsVolumeManager additions from govmomi %s cns/types/types.go (Apache-2.0)" % (
            sys.argv[3] if len(sys.argv) > 3 else "")

    # Wire names must be unique: the codecs key types by them.
    seen = {}
    for name in reg.order:
        w = reg.types[name]["wsdl"]
        if w in seen:
            raise SystemExit("wire name %s used by %s and %s" % (w, seen[w], name))
        seen[w] = name

    def ref(t):
        w, arr, kind = wire_type(reg, t)
        return {"type": w, "array": arr, "kind": kind}

    out_types = []
    for name in sorted(reg.order, key=lambda n: reg.types[n]["wsdl"]):
        r = reg.types[name]
        o = {"kind": r["kind"], "name": r["wsdl"], "vmodl": r["vmodl"], "version": r["version"]}
        if r["kind"] == "enum":
            o["values"] = r["values"]
        else:
            base = r["base"]
            o["base"] = None if base is None else wire_type(reg, base)[0]
            props = []
            for p in r["props"]:
                q = {"name": p["name"], "version": p["version"],
                     "optional": bool(p["flags"] & F_OPTIONAL)}
                q.update(ref(p["type"]))
                if p["flags"] & F_LINK:
                    q["link"] = True
                if p["flags"] & F_SECRET:
                    q["secret"] = True
                if r["kind"] == "managed" and p.get("privilege"):
                    q["privilege"] = p["privilege"]
                props.append(q)
            o["props"] = props
            if r["kind"] == "managed":
                ms = []
                for m in r["methods"]:
                    params = []
                    for p in m["params"]:
                        q = {"name": p["name"], "version": p["version"],
                             "optional": bool(p["flags"] & F_OPTIONAL)}
                        q.update(ref(p["type"]))
                        if p["flags"] & F_SECRET:
                            q["secret"] = True
                        if p.get("privilege"):
                            q["privilege"] = p["privilege"]
                        params.append(q)
                    res = ref(m["result"])
                    actual = ref(m["result_actual"])
                    ms.append({
                        "name": m["wsdl"], "vmodl": m["name"], "version": m["version"],
                        "params": params,
                        "result": res, "result_optional": bool(m["result_flags"] & F_OPTIONAL),
                        "task_result": actual if res["type"] == "ManagedObjectReference" or
                        (m["result"] == "vim.Task" and actual != res) else None,
                        "privilege": m["privilege"],
                        "faults": [wire_type(reg, f)[0] for f in m["faults"]],
                    })
                o["methods"] = ms
        out_types.append(o)

    versions = []
    for name in sorted(reg.versions):
        v = reg.versions[name]
        versions.append({"name": name, "ns": v["ns"], "wire": v["wire"],
                         "service": v["service"],
                         "parents": sorted(reg.parents.get(name, {name}) | {name})})

    import importlib.metadata as md
    try:
        src_ver = md.version("pyvmomi")
    except Exception:
        src_ver = "unknown"
    json.dump({"generator": "tools/gen_schema.py", "source": "pyvmomi %s (Apache-2.0)%s" % (src_ver, extra_source),
               "modules": MODULES, "versions": versions, "types": out_types},
              sys.stdout, indent=None, separators=(",", ":"), sort_keys=False)
    sys.stdout.write("\n")


if __name__ == "__main__":
    main()
