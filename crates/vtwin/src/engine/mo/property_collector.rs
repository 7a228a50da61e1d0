//! PropertyCollector: RetrieveProperties(Ex) with TraversalSpec/SelectionSpec
//! traversal, paging with ContinueRetrievePropertiesEx.
use crate::engine::{Ctx, Engine, Fault, Reply};
use std::collections::{HashMap, HashSet};
use vmodl::value::Args;
use vmodl::{types, Data, Kind, MoRef, TypeId, TypeRef, Value};

/// A paged retrieval waiting for ContinueRetrievePropertiesEx.
pub struct Pending {
    pub session_key: String,
    pub rest: Vec<Value>,
    pub page: usize,
}

pub fn property(_eng: &Engine, _ctx: &Ctx, name: &str) -> Option<Value> {
    match name {
        "filter" => Some(super::refs(vec![])),
        _ => None,
    }
}

/// Navigate `a.b.c` inside a value.
pub fn sub_path(v: &Value, path: &str) -> Option<Value> {
    let mut cur = v.clone();
    for seg in path.split('.') {
        cur = match cur {
            Value::Data(d) => d.get(seg)?.clone(),
            _ => return None,
        };
    }
    Some(cur)
}

/// Check a property path against the schema for objects of type `ty`.
fn valid_path(ty: TypeId, path: &str) -> bool {
    let mut segs = path.split('.');
    let Some(first) = segs.next() else { return false };
    let Some(mut p) = ty.prop(first) else { return false };
    for seg in segs {
        let t: TypeRef = p.ty;
        if t.array || t.ty.kind() != Kind::Data {
            return false;
        }
        match t.ty.prop(seg) {
            Some(q) => p = q,
            None => return false,
        }
    }
    true
}

struct PropSpec {
    ty: TypeId,
    all: bool,
    paths: Vec<String>,
}

fn list<'a>(d: &'a Data, name: &str) -> Vec<&'a Data> {
    d.get(name).and_then(Value::as_array).unwrap_or(&[]).iter().filter_map(Value::as_data).collect()
}

fn collect_named<'a>(sels: &[&'a Data], out: &mut HashMap<String, &'a Data>) {
    for s in sels {
        if s.ty == types::TraversalSpec {
            if let Some(n) = s.str("name") {
                if !n.is_empty() && !out.contains_key(n) {
                    out.insert(n.to_string(), s);
                    collect_named(&list(s, "selectSet"), out);
                    continue;
                }
            }
            collect_named(&list(s, "selectSet"), out);
        }
    }
}

struct Walker<'a> {
    eng: &'a Engine,
    ctx: &'a Ctx,
    named: HashMap<String, &'a Data>,
    seen: HashSet<(String, usize)>,
    out: Vec<MoRef>,
    included: HashSet<String>,
}

impl<'a> Walker<'a> {
    fn include(&mut self, r: MoRef) {
        if self.included.insert(r.value.clone()) {
            self.out.push(r);
        }
    }
    fn walk(&mut self, obj: &MoRef, sels: &[&'a Data]) -> Result<(), Fault> {
        for sel in sels {
            let ts: &'a Data = if sel.ty == types::TraversalSpec {
                sel
            } else {
                let name = sel.str("name").unwrap_or("");
                match self.named.get(name) {
                    Some(t) => t,
                    None => return Err(Fault::invalid_argument("selectSet", format!("no TraversalSpec is named '{name}'"))),
                }
            };
            let tname = ts.str("type").unwrap_or("");
            let tty = TypeId::by_name(tname).ok_or_else(|| Fault::invalid_type("type", format!("unknown type {tname}")))?;
            if !obj.ty.is_a(tty) {
                continue;
            }
            let key = (obj.value.clone(), ts as *const Data as usize);
            if !self.seen.insert(key) {
                continue;
            }
            let path = ts.str("path").unwrap_or("");
            if !valid_path(tty, path) {
                return Err(Fault::invalid_property(path));
            }
            let top = path.split('.').next().unwrap_or(path);
            let v = super::property(self.eng, self.ctx, obj, top)?;
            let v = match path.split_once('.') {
                Some((_, rest)) => v.and_then(|v| sub_path(&v, rest)),
                None => v,
            };
            let targets: Vec<MoRef> = match v {
                Some(Value::MoRef(r)) => vec![r],
                Some(Value::Array(_, items)) => items.into_iter().filter_map(|i| i.as_moref().cloned()).collect(),
                _ => vec![],
            };
            let skip = ts.get("skip").and_then(Value::as_bool).unwrap_or(false);
            let next = list(ts, "selectSet");
            for t in targets {
                let Some(actual) = self.eng.object_type(&t.value) else { continue };
                let t = MoRef::new(actual, t.value);
                if !skip {
                    self.include(t.clone());
                }
                self.walk(&t, &next)?;
            }
        }
        Ok(())
    }
}

/// Evaluate filter specs into ObjectContent values.
pub fn retrieve(eng: &Engine, ctx: &Ctx, specs: &[&Data]) -> Result<Vec<Value>, Fault> {
    let mut result = vec![];
    for spec in specs {
        let mut props = vec![];
        for ps in list(spec, "propSet") {
            let tname = ps.str("type").unwrap_or("");
            let ty = TypeId::by_name(tname)
                .filter(|t| t.kind() == Kind::Managed)
                .ok_or_else(|| Fault::invalid_type("type", format!("{tname} is not a managed object type")))?;
            let paths: Vec<String> = ps
                .get("pathSet")
                .and_then(Value::as_array)
                .unwrap_or(&[])
                .iter()
                .filter_map(|v| v.as_str().map(str::to_string))
                .collect();
            for p in &paths {
                if !valid_path(ty, p) {
                    return Err(Fault::invalid_property(p));
                }
            }
            props.push(PropSpec { ty, all: ps.get("all").and_then(Value::as_bool).unwrap_or(false), paths });
        }
        let objsets = list(spec, "objectSet");
        let mut all_sels = vec![];
        for os in &objsets {
            all_sels.extend(list(os, "selectSet"));
        }
        let mut named = HashMap::new();
        collect_named(&all_sels, &mut named);
        let mut w = Walker { eng, ctx, named, seen: HashSet::new(), out: vec![], included: HashSet::new() };
        for os in &objsets {
            let r = os.get("obj").and_then(Value::as_moref).ok_or_else(|| Fault::invalid_argument("obj", "ObjectSpec.obj is required"))?;
            let r = eng.resolve(r)?;
            if !os.get("skip").and_then(Value::as_bool).unwrap_or(false) {
                w.include(r.clone());
            }
            w.walk(&r, &list(os, "selectSet"))?;
        }
        for obj in w.out {
            if !eng.can_view(ctx, &obj) {
                continue;
            }
            let mut paths: Vec<String> = vec![];
            let mut matched = false;
            for ps in &props {
                if !obj.ty.is_a(ps.ty) {
                    continue;
                }
                matched = true;
                if ps.all {
                    for p in obj.ty.all_props() {
                        if ctx.version.includes(p.version) && !paths.iter().any(|x| x == p.name) {
                            paths.push(p.name.to_string());
                        }
                    }
                }
                for p in &ps.paths {
                    if !paths.contains(p) {
                        paths.push(p.clone());
                    }
                }
            }
            if !matched {
                continue;
            }
            result.push(object_content(eng, ctx, &obj, &paths)?.into());
        }
    }
    Ok(result)
}

fn object_content(eng: &Engine, ctx: &Ctx, obj: &MoRef, paths: &[String]) -> Result<Data, Fault> {
    let mut set = vec![];
    let mut missing = vec![];
    let mut cache: HashMap<String, Option<Value>> = HashMap::new();
    for path in paths {
        let top = path.split('.').next().unwrap_or(path);
        let pdef = obj.ty.prop(top).ok_or_else(|| Fault::invalid_property(path))?;
        if let Some(privilege) = pdef.privilege {
            if let Err(f) = eng.check(ctx, obj, privilege) {
                missing.push(Value::from(Data::new(types::MissingProperty).with("path", Value::Typed(types::PropertyPath, path.clone())).with("fault", f.data)));
                continue;
            }
        }
        let v = match cache.get(top) {
            Some(v) => v.clone(),
            None => {
                let v = super::property(eng, ctx, obj, top)?;
                cache.insert(top.to_string(), v.clone());
                v
            }
        };
        let v = match path.split_once('.') {
            Some((_, rest)) => v.and_then(|v| sub_path(&v, rest)),
            None => v,
        };
        if let Some(v) = v {
            set.push(Value::from(Data::new(types::DynamicProperty).with("name", Value::Typed(types::PropertyPath, path.clone())).with("val", v)));
        }
    }
    let mut oc = Data::new(types::ObjectContent).with("obj", obj.clone());
    if !set.is_empty() {
        oc.set("propSet", Value::Array(types::DynamicProperty, set));
    }
    if !missing.is_empty() {
        oc.set("missingSet", Value::Array(types::MissingProperty, missing));
    }
    Ok(oc)
}

fn specs(args: &Args) -> Vec<&Data> {
    args.get("specSet").and_then(Value::as_array).unwrap_or(&[]).iter().filter_map(Value::as_data).collect()
}

fn page(eng: &Engine, ctx: &Ctx, mut objects: Vec<Value>, max: usize) -> Reply {
    if objects.is_empty() {
        return Ok(None);
    }
    let mut r = Data::new(types::RetrieveResult);
    if objects.len() > max {
        let rest = objects.split_off(max);
        let token = format!("{}", eng.next_seq());
        let key = ctx.session.as_ref().map(|s| s.key.clone()).unwrap_or_default();
        eng.retrievals.lock().insert(token.clone(), Pending { session_key: key, rest, page: max });
        r.set("token", token);
    }
    r.set("objects", Value::Array(types::ObjectContent, objects));
    Ok(Some(r.into()))
}

pub fn invoke(eng: &Engine, ctx: &mut Ctx, _this: &MoRef, method: &str, args: Args) -> Option<Reply> {
    Some(match method {
        "RetrieveProperties" => retrieve(eng, ctx, &specs(&args)).map(|v| Some(Value::Array(types::ObjectContent, v))),
        "RetrievePropertiesEx" => (|| {
            let max = args
                .get("options")
                .and_then(Value::as_data)
                .and_then(|o| o.get("maxObjects"))
                .and_then(Value::as_i64)
                .filter(|m| *m > 0)
                .map(|m| m as usize)
                .unwrap_or(100_000);
            let objects = retrieve(eng, ctx, &specs(&args))?;
            page(eng, ctx, objects, max)
        })(),
        "ContinueRetrievePropertiesEx" | "CancelRetrievePropertiesEx" => (|| {
            let token = args.str("token").unwrap_or("");
            let key = ctx.session.as_ref().map(|s| s.key.clone()).unwrap_or_default();
            let pending = {
                let mut m = eng.retrievals.lock();
                match m.get(token) {
                    Some(p) if p.session_key == key => m.remove(token),
                    _ => None,
                }
            };
            let p = pending.ok_or_else(|| Fault::invalid_argument("token", format!("unknown token '{token}'")))?;
            if method == "CancelRetrievePropertiesEx" {
                return Ok(None);
            }
            page(eng, ctx, p.rest, p.page)
        })(),
        _ => return None,
    })
}
