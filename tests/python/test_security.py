"""Security regressions: nobody gets in where they don't belong; nothing an
outsider sends can crash the server.

- Path containment of first-class disk ids (CreateDisk_Task, RegisterDisk,
  DeleteVStorageObject(Ex)_Task): an id is never a path.
- Deep nesting (SOAP unauthenticated and authenticated, VI/JSON, VCD XML):
  a typed fault, and the server stays up.
- Privileges: ReadOnly and NoAccess users are refused every change
  (NoPermission, synchronously), NoAccess is refused every read, ReadOnly
  still reads; Admin still does everything.
- Tasks: another user's task cannot be cancelled or updated (vim25, vAPI,
  VCD), and a tenant cannot touch another org's task.

A NoAccess user may be refused at Login already (vim.fault.NoPermission, as
vCenter does for a user without any permission): then it is refused
everything, and each per-method test for it passes on that refusal.
"""
import datetime
import os
import shutil
import subprocess
import tempfile
import time
import uuid

import pytest
import requests
from lxml import etree
from pyVim.connect import Disconnect
from pyVmomi import SoapStubAdapter, vim, vmodl

from conftest import ADMIN, PW, Server, vtwin_bin

RO, RO_PW = "ro@vsphere.local", "Ro-Passw0rd!"
NA, NA_PW = "na@vsphere.local", "Na-Passw0rd!"
USERS = {"ro": (RO, RO_PW), "na": (NA, NA_PW)}
EXT_KEY = "com.example.sec"
EXT_TASK = "com.example.sec.job"
VCD_NS = "{http://www.vmware.com/vcloud/v1.5}"
TENANT_PW = "Tenant-Passw0rd!"


# --- helpers ------------------------------------------------------------------

def connect(server, user=ADMIN, pw=PW):
    return server.connect(user, pw)


def connect_or_refused(server, user, pw):
    """A session of `user`, or None when Login itself is refused with
    NoPermission (a user that holds no permission)."""
    try:
        return connect(server, user, pw)
    except vim.fault.NoPermission:
        return None


def bind(obj, si):
    """The same managed object, called through another user's session."""
    return type(obj)(obj._moId, si._stub)


def cns_of(server, si):
    stub = SoapStubAdapter(url=f"http://{server.host}:{server.port}/vsanHealth", version="vsan.version.v9_1_0_0")
    stub.cookie = si._stub.cookie
    return vim.cns.VolumeManager("cns-volume-manager", stub)


def wait_task(admin, task, timeout=8):
    """Wait (through the admin's session) for a task to end; its info."""
    t = vim.Task(task._moId, admin._stub)
    deadline = time.time() + timeout
    while True:
        info = t.info
        if info.state in ("success", "error") or time.time() > deadline:
            return info
        time.sleep(0.05)


def describe(admin, r):
    if isinstance(r, vim.Task):
        info = wait_task(admin, r)
        err = type(info.error).__name__ if info.error is not None else None
        return f"returned a task that ended {info.state} (error {err})"
    return f"returned {type(r).__name__}"


def fault_name(e):
    return f"{type(e).__name__}: {getattr(e, 'msg', '') or e}"


def expect_no_permission(admin, call):
    """`call()` must raise vim.fault.NoPermission synchronously."""
    try:
        r = call()
    except vim.fault.NoPermission:
        return
    except Exception as e:  # noqa: BLE001 - reported as the observed behaviour
        pytest.fail(f"expected NoPermission, got {fault_name(e)}")
    pytest.fail(f"expected NoPermission, but the call {describe(admin, r)}")


def expect_fault(admin, call, faults):
    """`call()` must fault with one of `faults`, synchronously or as the
    error of the task it returns. The observed fault."""
    try:
        r = call()
    except faults as e:
        return e
    except Exception as e:  # noqa: BLE001
        pytest.fail(f"expected {[f.__name__ for f in faults]}, got {fault_name(e)}")
    if isinstance(r, vim.Task):
        info = wait_task(admin, r)
        if info.state == "error" and isinstance(info.error, faults):
            return info.error
    pytest.fail(f"expected {[f.__name__ for f in faults]}, but the call {describe(admin, r)}")


def datastores(si):
    dc = si.RetrieveContent().rootFolder.childEntity[0]
    return sorted(dc.datastore, key=lambda d: d.name)


def mount_path(ds):
    """A datastore's root directory: its mount path on the host."""
    return os.path.realpath(ds.host[0].mountInfo.path)


def create_spec(ds, name="disk", mb=64, did=None):
    spec = vim.vslm.CreateSpec(name=name, capacityInMB=mb,
                               backingSpec=vim.vslm.CreateSpec.DiskFileBackingSpec(datastore=ds, provisioningType="thin"))
    if did is not None:
        spec.id = vim.vslm.ID(id=did)
    return spec


def new_disk(admin, ds, name="disk", mb=64, did=None):
    vsom = admin.RetrieveContent().vStorageObjectManager
    info = wait_task(admin, vsom.CreateDisk_Task(create_spec(ds, name, mb, did)))
    assert info.state == "success", info.error
    return info.result


def new_vm(admin, name, ds):
    content = admin.RetrieveContent()
    dc = content.rootFolder.childEntity[0]
    pool = dc.hostFolder.childEntity[0].resourcePool
    spec = vim.vm.ConfigSpec(name=name, guestId="otherGuest64", files=vim.vm.FileInfo(vmPathName=f"[{ds.name}]"))
    info = wait_task(admin, dc.vmFolder.CreateVM_Task(config=spec, pool=pool))
    assert info.state == "success", info.error
    return info.result


def new_volume(server, admin, ds, name, mb=16):
    cvm = cns_of(server, admin)
    md = vim.cns.VolumeMetadata(
        containerCluster=vim.cns.ContainerCluster(clusterType="KUBERNETES", clusterId="k8s-1", vSphereUser=ADMIN),
        entityMetadata=[vim.cns.KubernetesEntityMetadata(entityType="PERSISTENT_VOLUME", entityName=name)])
    spec = vim.cns.VolumeCreateSpec(name=name, volumeType="BLOCK", datastores=[ds], metadata=md,
                                    backingObjectDetails=vim.cns.BackingObjectDetails(capacityInMb=mb))
    t = cvm.Create([spec])
    info = wait_task(admin, t)
    assert info.state == "success", info.error
    # Read the vSAN result through the vsanHealth stub.
    r = vim.Task(t._moId, cvm._stub).info.result.volumeResults[0]
    assert r.fault is None, r.fault
    return r.volumeId


def volume_of(server, admin, vid):
    vols = cns_of(server, admin).Query(vim.cns.QueryFilter(volumeIds=[vid])).volumes
    return vols[0] if vols else None


def register_extension(content):
    ext = vim.Extension(key=EXT_KEY, version="1.0", description=vim.Description(label="sec", summary="sec"),
                        lastHeartbeatTime=datetime.datetime.now(datetime.timezone.utc),
                        taskList=[vim.Extension.TaskTypeInfo(taskID=EXT_TASK)])
    content.extensionManager.RegisterExtension(ext)


def still_running(server, what):
    """The process has not exited (a stack overflow aborts it a moment after
    the connection drops, so give it that moment)."""
    try:
        rc = server.proc.wait(timeout=0.5)
    except subprocess.TimeoutExpired:
        return
    pytest.fail(f"vtwin exited with {rc} on {what}")


def alive(server):
    """The process runs and a fresh login works."""
    assert server.proc.poll() is None, f"vtwin exited with {server.proc.returncode}"
    si = connect(server)
    try:
        assert si.RetrieveContent().rootFolder.childEntity[0].name == "DC0"
    finally:
        Disconnect(si)


# --- a shared server with users and admin-made objects ---------------------------

class Env:
    pass


@pytest.fixture(scope="module")
def env():
    d = tempfile.mkdtemp(prefix="vtwin-sec-")
    s = Server(d, extra=["--datastores", "2"])
    e = Env()
    e.server, e.data_dir = s, d
    try:
        s.add_user(RO, RO_PW, "ReadOnly")
        s.add_user(NA, NA_PW, "NoAccess")
        e.admin = connect(s)
        content = e.admin.RetrieveContent()
        register_extension(content)
        e.content = content
        e.vsom = content.vStorageObjectManager
        e.dc = content.rootFolder.childEntity[0]
        e.ds, e.ds2 = datastores(e.admin)
        e.sessions = {"ro": connect(s, RO, RO_PW), "na": connect_or_refused(s, NA, NA_PW)}
        yield e
    finally:
        for si in getattr(e, "sessions", {}).values():
            if si is not None:
                try:
                    Disconnect(si)
                except Exception:  # noqa: BLE001
                    pass
        s.stop()
        shutil.rmtree(d, ignore_errors=True)


@pytest.fixture(scope="module")
def shared_disk(env):
    """An admin-made disk with a snapshot, for the read tests: (id, snapshot id)."""
    did = new_disk(env.admin, env.ds, "shared").config.id
    info = wait_task(env.admin, env.vsom.VStorageObjectCreateSnapshot_Task(did, env.ds, "base"))
    assert info.state == "success", info.error
    return did, info.result


@pytest.fixture(params=["ro", "na"])
def who(request):
    return request.param


@pytest.fixture
def user(env, who):
    """The user's session; None when its Login was refused (NoPermission):
    refused everything, and the test has passed."""
    si = env.sessions[who]
    if si is None:
        assert who == "na"
    return si


# --- 1. path containment -------------------------------------------------------------


def _create_with_bad_id(si, did):
    """CreateDisk_Task with `did`: None when refused with InvalidArgument
    (synchronously or as the task's error), else what happened."""
    vsom = si.RetrieveContent().vStorageObjectManager
    ds = datastores(si)[0]
    try:
        t = vsom.CreateDisk_Task(create_spec(ds, "evil", 1, did))
    except vmodl.fault.InvalidArgument:
        return None
    except Exception as e:  # noqa: BLE001
        return f"faulted {fault_name(e)}"
    info = wait_task(si, t)
    if info.state == "error" and isinstance(info.error, vmodl.fault.InvalidArgument):
        return None
    return f"task ended {info.state} ({type(info.error).__name__ if info.error else info.result.config.backing.filePath})"


def test_create_disk_id_dotdot_stays_inside(si):
    root = mount_path(datastores(si)[0])
    outcome = _create_with_bad_id(si, "../loose")
    leaked = [n for n in os.listdir(root) if n.startswith("loose")]
    assert not leaked, f"files at the datastore root: {leaked} (call: {outcome})"
    assert outcome is None, outcome


def test_create_disk_id_absolute_path_refused(si):
    target = f"/tmp/vtwin-abs-{uuid.uuid4().hex[:12]}"
    try:
        outcome = _create_with_bad_id(si, target)
        assert not os.path.exists(target), f"{target} was created (call: {outcome})"
        assert outcome is None, outcome
    finally:
        shutil.rmtree(target, ignore_errors=True)


def test_create_disk_id_parent_chain_refused(si):
    root = mount_path(datastores(si)[0])
    target = os.path.normpath(os.path.join(root, "fcd", "../../.."))
    before = sorted(os.listdir(target))
    outcome = _create_with_bad_id(si, "../../..")
    after = sorted(os.listdir(target))
    assert after == before, f"{target} changed: {sorted(set(after) - set(before))} (call: {outcome})"
    assert outcome is None, outcome


def test_register_disk_outside_id_then_delete_keeps_outside_dir(server, si):
    """RegisterDisk with an id naming a directory outside the datastore is
    refused; deleting by that id finds nothing; the directory survives."""
    vsom = si.RetrieveContent().vStorageObjectManager
    ds = datastores(si)[0]
    root = mount_path(ds)
    vmdk = os.path.join(root, "somefile.vmdk")
    r = subprocess.run(["qemu-img", "create", "-q", "-f", "vmdk", "-o", "subformat=monolithicFlat", vmdk, "8M"],
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    outside = tempfile.mkdtemp(prefix="vtwin-outside-")
    marker = os.path.join(outside, "marker.txt")
    with open(marker, "w") as f:
        f.write("keep me")
    problems = []
    try:
        try:
            obj = vsom.RegisterDisk("[LocalDS_0] somefile.vmdk", "evil", vim.vslm.ID(id=outside))
            problems.append(f"RegisterDisk succeeded: id {obj.config.id.id}")
        except vmodl.fault.InvalidArgument:
            pass
        except Exception as e:  # noqa: BLE001
            problems.append(f"RegisterDisk faulted {fault_name(e)}, not InvalidArgument")
        for method in ("DeleteVStorageObjectEx_Task", "DeleteVStorageObject_Task"):
            try:
                t = getattr(vsom, method)(vim.vslm.ID(id=outside), ds)
            except vim.fault.NotFound:
                continue
            except Exception as e:  # noqa: BLE001
                problems.append(f"{method} faulted {fault_name(e)}, not NotFound")
                continue
            info = wait_task(si, t)
            if not (info.state == "error" and isinstance(info.error, vim.fault.NotFound)):
                problems.append(f"{method} task ended {info.state} ({type(info.error).__name__ if info.error else ''})")
        if not os.path.isdir(outside):
            problems.append(f"the outside directory {outside} was deleted")
        elif not os.path.exists(marker):
            problems.append("the marker file in the outside directory was deleted")
        extra = sorted(set(os.listdir(outside)) - {"marker.txt"}) if os.path.isdir(outside) else []
        if extra:
            problems.append(f"files written into the outside directory: {extra}")
    finally:
        shutil.rmtree(outside, ignore_errors=True)
    assert not problems, "; ".join(problems)


@pytest.mark.parametrize("rel", ["fcd", "own-disk-dir"])
def test_register_disk_of_a_directory_faults(si, rel):
    vsom = si.RetrieveContent().vStorageObjectManager
    ds = datastores(si)[0]
    d = new_disk(si, ds, "present")
    if rel == "own-disk-dir":
        rel = os.path.dirname(d.config.backing.filePath.split("] ", 1)[1])
    e = expect_fault(si, lambda: vsom.RegisterDisk(f"[LocalDS_0] {rel}", "dir"),
                     (vim.fault.FileFault, vim.fault.NotFound, vmodl.fault.InvalidArgument))
    assert e is not None
    # The disk whose directory it is still works.
    assert vsom.RetrieveVStorageObject(d.config.id, ds).config.name == "present"


def test_register_disk_whose_parent_is_outside_is_refused(si):
    """A descriptor on the datastore naming a parent outside every datastore
    (parentFileNameHint) must not become a disk: its data would be host files."""
    vsom = si.RetrieveContent().vStorageObjectManager
    root = mount_path(datastores(si)[0])
    outside = tempfile.mkdtemp(prefix="vtwin-outside-")
    try:
        base = os.path.join(outside, "base.vmdk")
        subprocess.run(["qemu-img", "create", "-q", "-f", "vmdk", "-o", "subformat=monolithicFlat", base, "8M"], check=True)
        child = os.path.join(root, "child-of-outside.vmdk")
        subprocess.run(["qemu-img", "create", "-q", "-f", "vmdk", "-o", "subformat=twoGbMaxExtentSparse", "-b", base, "-F", "vmdk", child],
                       check=True)
        with pytest.raises(vmodl.fault.InvalidArgument):
            vsom.RegisterDisk("[LocalDS_0] child-of-outside.vmdk", "child")
        # A chain wholly on the datastore registers.
        base2 = os.path.join(root, "inside-base.vmdk")
        subprocess.run(["qemu-img", "create", "-q", "-f", "vmdk", "-o", "subformat=monolithicFlat", base2, "8M"], check=True)
        obj = vsom.RegisterDisk("[LocalDS_0] inside-base.vmdk", "inside")
        assert obj.config.capacityInMB == 8
    finally:
        shutil.rmtree(outside, ignore_errors=True)


def test_unknown_uuid_is_not_found(si):
    vsom = si.RetrieveContent().vStorageObjectManager
    ds = datastores(si)[0]
    ghost = vim.vslm.ID(id=str(uuid.uuid4()))
    with pytest.raises(vim.fault.NotFound):
        vsom.RetrieveVStorageObject(ghost, ds)
    expect_fault(si, lambda: vsom.DeleteVStorageObject_Task(ghost, ds), (vim.fault.NotFound,))
    expect_fault(si, lambda: vsom.DeleteVStorageObjectEx_Task(ghost, ds), (vim.fault.NotFound,))


def test_normal_create_disk_still_works(si):
    ds = datastores(si)[0]
    root = mount_path(ds)
    vsom = si.RetrieveContent().vStorageObjectManager
    a = new_disk(si, ds, "auto")
    assert a.config.name == "auto" and a.config.backing.filePath.startswith("[LocalDS_0] fcd/")
    chosen = str(uuid.uuid4())
    b = new_disk(si, ds, "chosen", did=chosen)
    assert b.config.id.id == chosen
    assert os.path.isdir(os.path.join(root, "fcd", chosen))
    assert sorted(i.id for i in vsom.ListVStorageObject(ds)) == sorted([a.config.id.id, chosen])


# --- 2. nesting -------------------------------------------------------------------------

def soap_post(server, body_xml, cookie=None):
    env = ('<?xml version="1.0" encoding="UTF-8"?>'
           '<soapenv:Envelope xmlns:soapenc="http://schemas.xmlsoap.org/soap/encoding/" '
           'xmlns:soapenv="http://schemas.xmlsoap.org/soap/envelope/" '
           'xmlns:xsd="http://www.w3.org/2001/XMLSchema" xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance">'
           f'<soapenv:Body>{body_xml}</soapenv:Body></soapenv:Envelope>')
    h = {"Content-Type": "text/xml; charset=utf-8", "SOAPAction": '"urn:vim25/8.0.3.0"'}
    if cookie:
        h["Cookie"] = cookie
    return requests.post(f"http://{server.host}:{server.port}/sdk", data=env.encode(), headers=h, timeout=30)


def test_soap_deep_nesting_unauthenticated(server):
    n = 35000
    body = ('<RetrieveServiceContent xmlns="urn:vim25"><_this type="ServiceInstance">ServiceInstance</_this>'
            + "<a>" * n + "</a>" * n + "</RetrieveServiceContent>")
    try:
        r = soap_post(server, body)
        got = (r.status_code, r.text)
    except requests.RequestException as e:
        got = (None, f"no HTTP response: {e}")
    still_running(server, f"{n} nested elements")
    assert got[0] in (500, 400, 413) and "Fault" in got[1], (got[0], got[1][:300])
    alive(server)


def test_soap_deep_nesting_any_type_authenticated(server, si):
    content = si.RetrieveContent()
    register_extension(content)
    task = content.taskManager.CreateTask(obj=content.rootFolder, taskTypeId=EXT_TASK, cancelable=False).task
    n = 4000
    nested = '<anyType xsi:type="ArrayOfAnyType">' * n + "</anyType>" * n
    body = (f'<SetTaskState xmlns="urn:vim25"><_this type="Task">{task._moId}</_this><state>running</state>'
            f'<result xsi:type="ArrayOfAnyType">{nested}</result></SetTaskState>')
    try:
        r = soap_post(server, body, cookie=si._stub.cookie)
        got = (r.status_code, r.text)
    except requests.RequestException as e:
        got = (None, f"no HTTP response: {e}")
    still_running(server, f"{n} nested anyType arrays")
    assert got[0] in (500, 400, 413) and "Fault" in got[1], (got[0], got[1][:300])
    assert task.info.state == "queued"
    alive(server)


def test_raw_socket_chunked_deep_nesting(server):
    """The same unauthenticated nesting, sent by hand in chunks over a raw
    socket: an HTTP answer with a SOAP fault, and the server stays up."""
    import socket
    n = 35000
    body = ('<?xml version="1.0"?><soapenv:Envelope xmlns:soapenv="http://schemas.xmlsoap.org/soap/envelope/">'
            '<soapenv:Body><RetrieveServiceContent xmlns="urn:vim25"><_this type="ServiceInstance">ServiceInstance'
            '</_this>' + "<a>" * n + "</a>" * n + "</RetrieveServiceContent></soapenv:Body></soapenv:Envelope>").encode()
    chunks = b"".join(b"%x\r\n%s\r\n" % (len(body[i:i + 8192]), body[i:i + 8192]) for i in range(0, len(body), 8192))
    head = (f"POST /sdk HTTP/1.1\r\nHost: {server.host}:{server.port}\r\nContent-Type: text/xml\r\n"
            'SOAPAction: "urn:vim25/8.0.3.0"\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n').encode()
    reply = b""
    with socket.create_connection((server.host, server.port), timeout=20) as sock:
        sock.sendall(head + chunks + b"0\r\n\r\n")
        try:
            while True:
                data = sock.recv(65536)
                if not data:
                    break
                reply += data
        except (ConnectionResetError, socket.timeout):
            pass
    still_running(server, f"{n} nested elements in a chunked body")
    status = reply.split(b"\r\n", 1)[0]
    assert status.split(b" ")[1:2] in ([b"500"], [b"400"], [b"413"]) and b"Fault" in reply, reply[:300]
    alive(server)


def test_vijson_deep_nesting(server):
    import json
    n = 40000
    try:
        r = requests.post(f"http://{server.host}:{server.port}/sdk/vim25/8.0.3.0/SessionManager/SessionManager/Login",
                          data=("[" * n + "]" * n).encode(), headers={"Content-Type": "application/json"}, timeout=30)
        got = (r.status_code, r.text)
    except requests.RequestException as e:
        got = (None, f"no HTTP response: {e}")
    still_running(server, f"{n} nested JSON arrays")
    assert got[0] is not None and 400 <= got[0] < 600, (got[0], got[1][:300])
    try:
        body = json.loads(got[1])
    except ValueError:
        pytest.fail(f"the error body is not JSON: {got[1][:300]}")
    assert isinstance(body, dict) and body, body
    alive(server)


# --- VCD fixture ---------------------------------------------------------------------

@pytest.fixture
def vcd(data_dir):
    for args in (["org-add", "acme"], ["org-add", "globex"],
                 ["user-add", "alice@acme", "--password", TENANT_PW, "--role", "admin"],
                 ["user-add", "bob@globex", "--password", TENANT_PW, "--role", "admin"]):
        subprocess.run([vtwin_bin(), "vcd", *args, "--data-dir", data_dir], check=True, capture_output=True)
    s = Server(data_dir, extra=["--vcd-listen", "127.0.0.1:0"])
    try:
        assert s.vcd_url
        s.add_user(RO, RO_PW, "ReadOnly")
        s.add_user(NA, NA_PW, "NoAccess")
        yield s
    finally:
        s.stop()


def vcd_login(s, user):
    r = requests.post(s.vcd_url + "/cloudapi/1.0.0/sessions", auth=(user, TENANT_PW),
                      headers={"Accept": "application/json;version=36.0"})
    assert r.status_code == 200, (r.status_code, r.text)
    token = r.headers["x-vmware-vcloud-access-token"]
    return {"Accept": "application/*+xml;version=36.0", "Authorization": "Bearer " + token,
            "Content-Type": "application/vnd.vmware.vcloud.task+xml"}


def tasks_list(s, hdr):
    orgs = etree.fromstring(requests.get(s.vcd_url + "/api/org", headers=hdr).content)
    org = requests.get(orgs[0].get("href"), headers=hdr)
    return [l.get("href") for l in etree.fromstring(org.content)
            if l.get("type") == "application/vnd.vmware.vcloud.tasksList+xml"][0]


def vcd_task(s, hdr, name="t", status="running", inner=""):
    body = (f'<Task xmlns="http://www.vmware.com/vcloud/v1.5" name="{name}" status="{status}" '
            f'serviceNamespace="com.example.sec">{inner}</Task>')
    return requests.post(tasks_list(s, hdr), data=body.encode(), headers=hdr, timeout=30)


def test_vcd_deep_nesting(vcd):
    hdr = vcd_login(vcd, "alice@acme")
    n = 35000
    try:
        r = vcd_task(vcd, hdr, "deep", "queued", "<Params>" + "<x>" * n + "</x>" * n + "</Params>")
        got = (r.status_code, r.content)
    except requests.RequestException as e:
        got = (None, f"no HTTP response: {e}".encode())
    still_running(vcd, f"{n} nested VCD elements")
    assert got[0] == 400, (got[0], got[1][:300])
    err = etree.fromstring(got[1])
    assert err.tag == VCD_NS + "Error" and err.get("majorErrorCode") == "400"
    assert requests.get(vcd.vcd_url + "/api/versions").status_code == 200
    alive(vcd)


# --- 3. privileges ---------------------------------------------------------------------

DISK_CHANGES = {
    "DeleteVStorageObjectEx_Task": lambda v, did, ds: v.DeleteVStorageObjectEx_Task(did, ds),
    "DeleteVStorageObject_Task": lambda v, did, ds: v.DeleteVStorageObject_Task(did, ds),
    "ExtendDisk_Task": lambda v, did, ds: v.ExtendDisk_Task(did, ds, 128),
    "InflateDisk_Task": lambda v, did, ds: v.InflateDisk_Task(did, ds),
    "RenameVStorageObject": lambda v, did, ds: v.RenameVStorageObject(did, ds, "stolen"),
    "VStorageObjectCreateSnapshot_Task": lambda v, did, ds: v.VStorageObjectCreateSnapshot_Task(did, ds, "theirs"),
}


@pytest.mark.parametrize("method", sorted(DISK_CHANGES))
def test_disk_change_refused(env, who, user, method):
    did = new_disk(env.admin, env.ds, f"victim-{who}-{method}").config.id
    if user is not None:
        vsom = bind(env.vsom, user)
        expect_no_permission(env.admin, lambda: DISK_CHANGES[method](vsom, did, env.ds))
    cfg = env.vsom.RetrieveVStorageObject(did, env.ds).config
    assert cfg.name == f"victim-{who}-{method}" and cfg.capacityInMB == 64 and cfg.backing.provisioningType == "thin"
    assert not env.vsom.RetrieveSnapshotInfo(did, env.ds).snapshots


def test_create_disk_refused(env, who, user):
    if user is not None:
        vsom = bind(env.vsom, user)
        expect_no_permission(env.admin, lambda: vsom.CreateDisk_Task(create_spec(env.ds2, f"mine-{who}")))
    assert not [i for i in env.vsom.ListVStorageObject(env.ds2)
                if env.vsom.RetrieveVStorageObject(i, env.ds2).config.name == f"mine-{who}"]


CNS_CHANGES = {
    "CnsDeleteVolume": lambda c, vid, ds: c.Delete([vid], True),
    "CnsSyncVolume": lambda c, vid, ds: c.SyncVolume([vim.cns.SyncVolumeSpec(volumeId=vid, syncMode=["SPACE_USAGE"])]),
    "CnsExtendVolume": lambda c, vid, ds: c.Extend([vim.cns.VolumeExtendSpec(volumeId=vid, capacityInMb=32)]),
}


@pytest.mark.parametrize("method", sorted(CNS_CHANGES))
def test_cns_change_refused(env, who, user, method):
    vid = new_volume(env.server, env.admin, env.ds, f"pv-{who}-{method.lower()}")
    if user is not None:
        cvm = cns_of(env.server, user)
        expect_no_permission(env.admin, lambda: CNS_CHANGES[method](cvm, vid, env.ds))
    vol = volume_of(env.server, env.admin, vid)
    assert vol is not None, "the volume is gone"
    assert vol.backingObjectDetails.capacityInMb == 16
    # The disk behind it too.
    assert env.vsom.RetrieveVStorageObject(vim.vslm.ID(id=vid.id), env.ds).config.capacityInMB == 16


def test_cns_create_refused(env, who, user):
    if user is not None:
        cvm = cns_of(env.server, user)
        spec = vim.cns.VolumeCreateSpec(name=f"pv-mine-{who}", volumeType="BLOCK", datastores=[env.ds2],
                                        backingObjectDetails=vim.cns.BackingObjectDetails(capacityInMb=8))
        expect_no_permission(env.admin, lambda: cvm.Create([spec]))
    names = [v.name for v in cns_of(env.server, env.admin).Query(vim.cns.QueryFilter()).volumes]
    assert f"pv-mine-{who}" not in names


def test_vm_destroy_refused(env, who, user):
    vm = new_vm(env.admin, f"vm-keep-{who}", env.ds)
    vmdir = os.path.join(mount_path(env.ds), f"vm-keep-{who}")
    assert os.path.isdir(vmdir)
    if user is not None:
        expect_no_permission(env.admin, lambda: bind(vm, user).Destroy_Task())
    assert os.path.isdir(vmdir), "the VM's directory was removed"
    assert vm.name == f"vm-keep-{who}"


@pytest.mark.parametrize("what", ["datacenter", "datastore", "vm"])
def test_rename_refused(env, who, user, what):
    if what == "datacenter":
        obj = env.dc
    elif what == "datastore":
        obj = env.ds2
    else:
        obj = new_vm(env.admin, f"vm-name-{who}", env.ds)
    name = obj.name
    try:
        if user is not None:
            expect_no_permission(env.admin, lambda: bind(obj, user).Rename_Task(newName=f"taken-{who}"))
        assert obj.name == name
    finally:
        if obj.name != name:
            wait_task(env.admin, obj.Rename_Task(newName=name))


def test_update_vm_files_refused(env, who, user):
    """Seed: Datastore.UpdateVirtualMachineFiles_Task."""
    if user is not None:
        ds = bind(env.ds, user)
        pair = vim.Datastore.MountPathDatastorePair(oldMountPath="/vmfs/volumes/old-volume", datastore=env.ds)
        expect_no_permission(env.admin, lambda: ds.UpdateVirtualMachineFiles_Task([pair]))


def test_query_changed_areas_noaccess_refused(env, shared_disk):
    """Seed: VstorageObjectVCenterQueryChangedDiskAreas for NoAccess."""
    na = env.sessions["na"]
    if na is None:
        return
    vsom = bind(env.vsom, na)
    did, snap = shared_disk
    expect_no_permission(env.admin, lambda: vsom.VstorageObjectVCenterQueryChangedDiskAreas(did, env.ds, snap, 0, "*"))


def test_list_and_retrieve_disk_noaccess_refused(env, shared_disk):
    na = env.sessions["na"]
    if na is None:
        return
    vsom = bind(env.vsom, na)
    expect_no_permission(env.admin, lambda: vsom.ListVStorageObject(env.ds))
    expect_no_permission(env.admin, lambda: vsom.RetrieveVStorageObject(shared_disk[0], env.ds))


def _root_retrieve(si):
    content = si.RetrieveContent()
    PC = vmodl.query.PropertyCollector
    walk = PC.TraversalSpec(name="f", type=vim.Folder, path="childEntity", skip=False)
    spec = PC.FilterSpec(objectSet=[PC.ObjectSpec(obj=content.rootFolder, skip=False, selectSet=[walk])],
                         propSet=[PC.PropertySpec(type=vim.Folder, pathSet=["childEntity"]),
                                  PC.PropertySpec(type=vim.Datacenter, pathSet=["name"])])
    return content.propertyCollector.RetrievePropertiesEx([spec], PC.RetrieveOptions())


def test_noaccess_reads_nothing(env):
    na = env.sessions["na"]
    if na is None:
        return
    dc = env.dc._moId
    # RetrievePropertiesEx on the root folder: nothing, or NoPermission.
    try:
        res = _root_retrieve(na)
    except vim.fault.NoPermission:
        res = None
    seen = []
    for o in (res.objects if res else []):
        seen.append(o.obj._moId)
        for p in o.propSet:
            vals = p.val if isinstance(p.val, list) else [p.val]
            seen.extend(getattr(v, "_moId", v) for v in vals)
    assert dc not in seen, f"NoAccess retrieved {seen}"
    content = na.RetrieveContent()
    # Recent tasks: refused (or nothing).
    try:
        recent = content.taskManager.recentTask
        assert not recent, f"NoAccess sees tasks {[t._moId for t in recent]}"
    except vim.fault.NoPermission:
        pass
    with pytest.raises(vim.fault.NoPermission):
        content.authorizationManager.RetrieveAllPermissions()


def test_readonly_still_reads(env, shared_disk):
    ro = env.sessions["ro"]
    res = _root_retrieve(ro)
    by = {o.obj._moId: o for o in res.objects}
    root = ro.RetrieveContent().rootFolder._moId
    child = [p.val for p in by[root].propSet if p.name == "childEntity"][0]
    assert [c._moId for c in child] == [env.dc._moId]
    assert [p.val for p in by[env.dc._moId].propSet if p.name == "name"] == ["DC0"]
    assert bind(env.dc, ro).name == "DC0"
    vsom = bind(env.vsom, ro)
    full = vsom.VstorageObjectVCenterQueryChangedDiskAreas(shared_disk[0], env.ds, shared_disk[1], 0, "*")
    assert full.startOffset == 0 and full.length == 64 << 20


def test_admin_still_deletes_and_destroys(env):
    did = new_disk(env.admin, env.ds, "admin-gone").config.id
    info = wait_task(env.admin, env.vsom.DeleteVStorageObjectEx_Task(did, env.ds))
    assert info.state == "success", info.error
    with pytest.raises(vim.fault.NotFound):
        env.vsom.RetrieveVStorageObject(did, env.ds)
    did2 = new_disk(env.admin, env.ds, "admin-gone-2").config.id
    assert wait_task(env.admin, env.vsom.DeleteVStorageObject_Task(did2, env.ds)).state == "success"
    vm = new_vm(env.admin, "vm-admin-gone", env.ds)
    vmdir = os.path.join(mount_path(env.ds), "vm-admin-gone")
    info = wait_task(env.admin, vm.Destroy_Task())
    assert info.state == "success", info.error
    assert not os.path.exists(vmdir)


# --- 4. tasks ----------------------------------------------------------------------------

def test_vim25_task_of_another_user(env):
    tm = env.content.taskManager
    task = tm.CreateTask(obj=env.dc, taskTypeId=EXT_TASK, cancelable=True).task
    task.SetTaskState(state="running")
    task.UpdateProgress(20)
    ro = bind(task, env.sessions["ro"])
    problems = []
    for name, call in (("CancelTask", lambda: ro.CancelTask()),
                       ("SetTaskState", lambda: ro.SetTaskState(state="success", result="hijacked")),
                       ("UpdateProgress", lambda: ro.UpdateProgress(90))):
        try:
            call()
            problems.append(f"{name} succeeded")
        except vim.fault.NoPermission:
            pass
        except Exception as e:  # noqa: BLE001
            problems.append(f"{name} faulted {fault_name(e)}")
    info = task.info
    if not (info.state == "running" and info.progress == 20 and not info.cancelled):
        problems.append(f"task now {info.state} progress {info.progress} cancelled {info.cancelled}")
    assert not problems, "; ".join(problems)


def vapi_session(server, user, pw):
    """A vAPI session id, or None when the session is refused (401/403)."""
    r = requests.post(f"http://{server.host}:{server.port}/api/session", auth=(user, pw))
    if r.status_code in (401, 403):
        return None
    assert r.status_code == 201, (r.status_code, r.text)
    return r.json()


def test_vapi_extension_task_of_another_user(env):
    """Seed: the extension-task PATCH on another's task."""
    base = f"http://{env.server.host}:{env.server.port}"
    admin = {"vmware-api-session-id": vapi_session(env.server, ADMIN, PW)}
    r = requests.post(f"{base}/api/vcenter/extension/tasks", headers=admin,
                      json={"spec": {"operation_id": "com.example.sec.run", "cancelable": True}})
    assert r.status_code == 201, r.text
    tid = r.json()
    ro = {"vmware-api-session-id": vapi_session(env.server, RO, RO_PW)}
    r = requests.patch(f"{base}/api/vcenter/extension/tasks/{tid}", headers=ro,
                       json={"spec": {"status": "RUNNING"}})
    got = (r.status_code, r.text[:200])
    assert r.status_code == 403 and r.json().get("error_type") == "UNAUTHORIZED", got
    info = requests.get(f"{base}/api/cis/tasks/{tid}", headers=admin).json()
    assert info["status"] == "PENDING", info


def test_vapi_noaccess_cannot_read_task(env):
    base = f"http://{env.server.host}:{env.server.port}"
    admin = {"vmware-api-session-id": vapi_session(env.server, ADMIN, PW)}
    r = requests.post(f"{base}/api/vcenter/extension/tasks", headers=admin,
                      json={"spec": {"operation_id": "com.example.sec.read", "cancelable": False}})
    assert r.status_code == 201, r.text
    tid = r.json()
    assert requests.get(f"{base}/api/cis/tasks/{tid}", headers=admin).status_code == 200
    sid = vapi_session(env.server, NA, NA_PW)
    if sid is None:
        return
    r = requests.get(f"{base}/api/cis/tasks/{tid}", headers={"vmware-api-session-id": sid})
    # 403 (or 401); the existing cis.tasks.get answers 404 for a task the
    # caller cannot see, which leaks nothing either. Never the task.
    assert r.status_code in (403, 401, 404), (r.status_code, r.text[:200])
    assert "PENDING" not in r.text and "com.example.sec" not in r.text, r.text[:200]


def test_vcd_task_not_updatable_by_outsiders(vcd):
    alice = vcd_login(vcd, "alice@acme")
    admin = connect(vcd)
    try:
        before = {t._moId for t in admin.RetrieveContent().taskManager.recentTask}
        r = vcd_task(vcd, alice, "acme-job", "running")
        assert r.status_code == 201, r.text
        href = etree.fromstring(r.content).get("href")
        new = [t for t in admin.RetrieveContent().taskManager.recentTask if t._moId not in before]
        assert len(new) == 1, [t._moId for t in new]
        key = new[0]._moId
        uuid_ = admin.RetrieveContent().about.instanceUuid
    finally:
        Disconnect(admin)
    problems = []
    # A NoAccess vSphere user through vAPI.
    sid = vapi_session(vcd, NA, NA_PW)
    if sid is not None:
        r = requests.patch(f"http://{vcd.host}:{vcd.port}/api/vcenter/extension/tasks/{key}:{uuid_}",
                           headers={"vmware-api-session-id": sid}, json={"spec": {"status": "SUCCEEDED"}})
        # 403; 404 (a task the caller cannot see does not exist for it) is a refusal too.
        if r.status_code not in (403, 404):
            problems.append(f"NoAccess vAPI PATCH: {r.status_code} {r.text[:150]}")
    # A tenant of another org.
    bob = vcd_login(vcd, "bob@globex")
    r = requests.put(href, data='<Task xmlns="http://www.vmware.com/vcloud/v1.5" status="success"/>', headers=bob)
    if r.status_code != 404:
        problems.append(f"other tenant PUT: {r.status_code} {r.text[:150]}")
    t = etree.fromstring(requests.get(href, headers=alice).content)
    if t.get("status") != "running":
        problems.append(f"alice's task is now {t.get('status')}")
    assert not problems, "; ".join(problems)
