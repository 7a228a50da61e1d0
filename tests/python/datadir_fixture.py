"""A data directory with something of everything in it, made by one build
and opened by a later one (test_upgrade.py).

`python tests/python/datadir_fixture.py OUT_PREFIX` (with VTWIN_BIN naming
the build that makes it) starts that build on a fresh directory, makes
users, an org, first-class disks with data, snapshots and change tracking,
a CNS volume attached to a VM, a VM with its own disk and a snapshot,
finished vim25, vAPI and VCD tasks (results and faults of several types),
stops it, and writes OUT_PREFIX.tar.gz (the directory) and OUT_PREFIX.json
(what `read_state` saw through the APIs before the stop, and `made_at`,
the directory's path, where the test unpacks it). A later build must show
the same state, read the same way."""
import datetime
import hashlib
import json
import os
import subprocess
import sys
import tarfile
import tempfile

import requests
from pyVim.connect import Disconnect, SmartConnect
from pyVim.task import WaitForTask
from pyVmomi import SoapStubAdapter, VmomiSupport, vim, vmodl
from pyVmomi.VmomiJSONEncoder import VmomiJSONEncoder

from conftest import ADMIN, PW, Server, vtwin_bin

READER, READER_PW = "reader@vsphere.local", "Reader-Passw0rd!"
TENANT, TENANT_PW = "alice", "Tenant-Passw0rd!"
# The records must outlive the time between making the fixture and the
# test: a retention and a VCD expiry of ten years, both at make and at open.
TEN_YEARS = str(10 * 365 * 86400)
SERVE_ARGS = ["--datastores", "2", "--vcd-listen", "127.0.0.1:0", "--vcd-task-expiry", TEN_YEARS,
              "--task-retention-secs", TEN_YEARS]
MB = 1 << 20


def start(data_dir):
    return Server(data_dir, extra=SERVE_ARGS)


def session_id(si):
    return si._stub.cookie.split('"')[1]


def nbd_uri(server, si, disk, ds, write=False, snapshot=None):
    body = {"disk": disk, "datastore": ds._moId, "write": write}
    if snapshot:
        body["snapshot"] = snapshot
    r = requests.post(f"http://{server.host}:{server.port}/api/vtwin/nbd-tickets", json=body,
                      headers={"vmware-api-session-id": session_id(si)})
    assert r.status_code == 201, r.text
    return r.json()["uri"]


def sh(*args):
    r = subprocess.run(list(args), capture_output=True)
    assert r.returncode == 0, f"{args}: {r.stdout!r}{r.stderr!r}"
    return r.stdout


def cns_manager(server, si):
    stub = SoapStubAdapter(url=f"http://{server.host}:{server.port}/vsanHealth", version="vsan.version.v9_1_0_0")
    stub.cookie = si._stub.cookie
    return vim.cns.VolumeManager("cns-volume-manager", stub)


def datastores(si):
    return sorted(si.RetrieveContent().rootFolder.childEntity[0].datastore, key=lambda d: d.name)


def vcd_login(server, org, user, pw):
    r = requests.post(server.vcd_url + "/api/sessions", auth=(f"{user}@{org}", pw),
                      headers={"Accept": "application/*+xml;version=36.0"})
    assert r.status_code == 200, r.text
    return r.headers["x-vcloud-authorization"]


def vcd_task(server, token, org_href, status, progress, error=None):
    ns = "http://www.vmware.com/vcloud/v1.5"
    err = f'<Error xmlns="{ns}" majorErrorCode="500" message="{error}" minorErrorCode="INTERNAL_SERVER_ERROR"/>' \
        if error else ""
    body = (f'<Task xmlns="{ns}" name="task" status="{status}" serviceNamespace="com.example.backup" operation="Backing up"'
            f' operationName="jobBackup"><Owner href="{org_href}" name="acme"'
            f' type="application/vnd.vmware.vcloud.org+xml"/><Progress>{progress}</Progress>{err}</Task>')
    return requests.post(org_href.replace("/api/org/", "/api/tasksList/"), data=body, headers={
        "Accept": "application/*+xml;version=36.0", "x-vcloud-authorization": token,
        "Content-Type": "application/vnd.vmware.vcloud.task+xml"})


class Encoder(VmomiJSONEncoder):
    """pyvmomi's JSON form, with a method (TaskInfo.name) by its wire name."""

    def default(self, obj):  # pylint: disable=method-hidden
        if isinstance(obj, VmomiSupport.ManagedMethod):
            return obj.info.wsdlName
        return super().default(obj)


def encode(obj):
    return json.loads(json.dumps(obj, cls=Encoder, sort_keys=True))


def make(out_prefix):
    """Make the fixture with the build VTWIN_BIN names."""
    d = tempfile.mkdtemp(prefix="vtwin-fixture-")
    b = vtwin_bin()
    for args in (["user", "add", READER, "--password", READER_PW, "--role", "ReadOnly"],
                 ["vcd", "org-add", "acme"],
                 ["vcd", "user-add", f"{TENANT}@acme", "--password", TENANT_PW, "--role", "admin"]):
        subprocess.run([b, *args, "--data-dir", d], check=True, capture_output=True)
    s = start(d)
    si = s.connect()
    ids = {"tasks": [], "vapi_tasks": [], "vcd_tasks": [], "disks": []}
    content = si.RetrieveContent()
    dc = content.rootFolder.childEntity[0]
    pool = dc.hostFolder.childEntity[0].resourcePool
    ds1, ds2 = datastores(si)
    vsom = content.vStorageObjectManager

    def task(t):
        WaitForTask(t)
        ids["tasks"].append(t._moId)
        return t.info.result

    # First-class disks: one with data written over NBD between two
    # snapshots (so change tracking has something to say), one thick on the
    # second datastore, renamed.
    def new_disk(name, mb, ds, prov="thin"):
        spec = vim.vslm.CreateSpec(name=name, capacityInMB=mb, backingSpec=vim.vslm.CreateSpec.DiskFileBackingSpec(
            datastore=ds, provisioningType=prov))
        disk = task(vsom.CreateDisk_Task(spec))
        ids["disks"].append([disk.config.id.id, ds._moId])
        return disk.config.id

    a = new_disk("backup-me", 16, ds1)
    sh("qemu-io", "-f", "raw", "-c", "write -P 0x5a 0 1M", "-c", "write -P 0x11 8M 64k",
       nbd_uri(s, si, a.id, ds1, write=True))
    task(vsom.VStorageObjectCreateSnapshot_Task(a, ds1, "first"))
    sh("qemu-io", "-f", "raw", "-c", "write -P 0x33 4M 512k", nbd_uri(s, si, a.id, ds1, write=True))
    task(vsom.VStorageObjectCreateSnapshot_Task(a, ds1, "second"))
    bdisk = new_disk("thick-one", 4, ds2, "eagerZeroedThick")
    vsom.RenameVStorageObject(bdisk, ds2, "renamed-thick")
    # A VM with a disk of its own and a snapshot; a second VM that a CNS
    # volume is attached to.
    ctrl = vim.vm.device.VirtualDeviceSpec(operation="add", device=vim.vm.device.ParaVirtualSCSIController(
        key=1000, busNumber=0, sharedBus="noSharing"))
    vdisk = vim.vm.device.VirtualDeviceSpec(operation="add", fileOperation="create", device=vim.vm.device.VirtualDisk(
        key=-1, controllerKey=1000, unitNumber=0, capacityInKB=4096,
        backing=vim.vm.device.VirtualDisk.FlatVer2BackingInfo(diskMode="persistent", thinProvisioned=True,
                                                              fileName="")))
    web = task(dc.vmFolder.CreateVM_Task(config=vim.vm.ConfigSpec(
        name="web", guestId="otherGuest64", numCPUs=2, memoryMB=256, files=vim.vm.FileInfo(vmPathName=f"[{ds1.name}]"),
        deviceChange=[ctrl, vdisk]), pool=pool))
    # A task the engine ran that failed (a test-control rule: the task
    # starts, then ends in error).
    r = requests.post(f"http://{s.host}:{s.port}/admin/faults", auth=(ADMIN, PW), json={
        "method": "Rename_Task", "mode": "task", "count": 1, "message": "no rename today",
        "fault": {"_typeName": "InvalidName", "name": "web-2"}})
    assert r.status_code in (200, 201), r.text
    t = web.Rename_Task("web-2")
    try:
        WaitForTask(t)
        raise AssertionError("the rule did not fire")
    except vim.fault.InvalidName:
        ids["tasks"].append(t._moId)
    task(web.CreateSnapshot_Task(name="before", description="before the upgrade", memory=False, quiesce=False))
    node = task(dc.vmFolder.CreateVM_Task(config=vim.vm.ConfigSpec(
        name="node-1", guestId="otherGuest64", files=vim.vm.FileInfo(vmPathName=f"[{ds1.name}]"),
        deviceChange=[ctrl]), pool=pool))
    cvm = cns_manager(s, si)
    md = vim.cns.VolumeMetadata(
        containerCluster=vim.cns.ContainerCluster(clusterType="KUBERNETES", clusterId="k8s-1", vSphereUser=ADMIN),
        entityMetadata=[vim.cns.KubernetesEntityMetadata(entityType="PERSISTENT_VOLUME", entityName="pv-data",
                                                          labels=[vim.KeyValue(key="app", value="db")])])
    spec = vim.cns.VolumeCreateSpec(name="pv-data", volumeType="BLOCK", datastores=[ds1], metadata=md,
                                    backingObjectDetails=vim.cns.BackingObjectDetails(capacityInMb=8))
    r = task(cvm.Create([spec])).volumeResults[0]
    assert r.fault is None, r.fault
    vid = r.volumeId
    ids["disks"].append([vid.id, ds1._moId])
    (att,) = task(cvm.Attach([vim.cns.VolumeAttachDetachSpec(volumeId=vid, vm=node)])).volumeResults
    assert att.fault is None, att.fault
    cvm.Create([vim.cns.VolumeCreateSpec(name="f", volumeType="FILE",
                                         backingObjectDetails=vim.cns.BackingObjectDetails(capacityInMb=1))])

    # Extension tasks over vim25: a result of a data type, a typed fault.
    ext = vim.Extension(key="com.example.backup", version="1.0", description=vim.Description(label="b", summary="b"),
                        lastHeartbeatTime=datetime.datetime.now(datetime.timezone.utc),
                        taskList=[vim.Extension.TaskTypeInfo(taskID="com.example.backup.run")])
    content.extensionManager.RegisterExtension(ext)
    t1 = content.taskManager.CreateTask(obj=dc, taskTypeId="com.example.backup.run", cancelable=True).task
    t1.SetTaskState(state="running")
    t1.UpdateProgress(35)
    t1.SetTaskState(state="success", result=vim.KeyValue(key="copied", value="42"))
    t2 = content.taskManager.CreateTask(obj=web, taskTypeId="com.example.backup.run", cancelable=False).task
    t2.SetTaskState(state="error", fault=vim.fault.NotFound(msg="snapshot gone"))
    t3 = content.taskManager.CreateTask(obj=dc, taskTypeId="com.example.backup.run", cancelable=True).task
    t3.CancelTask()
    ids["tasks"] += [t1._moId, t2._moId, t3._moId]

    # Extension tasks over vAPI.
    base = f"http://{s.host}:{s.port}"
    h = {"vmware-api-session-id": session_id(si)}
    for end in ({"status": "SUCCEEDED", "result": "done"},
                {"status": "FAILED", "error": {"error_type": "NOT_FOUND", "messages": []}}):
        r = requests.post(f"{base}/api/vcenter/extension/tasks", headers=h, json={"spec": {
            "operation_id": "com.example.backup.run", "cancelable": False,
            "description": {"id": "com.example.msg", "default_message": "nightly", "args": []}}})
        assert r.status_code == 201, r.text
        tid = r.json()
        for spec in ({"status": "RUNNING", "progress": {"total": 100, "completed": 40, "message": {
                "id": "m", "default_message": "40/100", "args": []}}}, end):
            r = requests.patch(f"{base}/api/vcenter/extension/tasks/{tid}", headers=h, json={"spec": spec})
            assert r.status_code in (200, 204), r.text
        ids["vapi_tasks"].append(tid)

    # VCD tasks of a tenant: one ended well, one in error.
    token = vcd_login(s, "acme", TENANT, TENANT_PW)
    org_href = org_of(s, token)
    for status, progress, error in (("success", 100, None), ("error", 20, "disk full"), ("running", 50, None)):
        r = vcd_task(s, token, org_href, status, progress, error)
        assert r.status_code in (200, 201), r.text
        ids["vcd_tasks"].append(r.headers.get("Location") or href_of(r.text))
    ids["vcd_tasks"] = [h.replace(s.vcd_url, "") for h in ids["vcd_tasks"]]

    state = read_state(s, si, ids)
    Disconnect(si)
    s.stop()
    # One file, no write-ahead log beside it.
    import sqlite3
    c = sqlite3.connect(os.path.join(d, "vtwin.db"))
    c.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    c.close()
    for f in ("vtwin.db-wal", "vtwin.db-shm"):
        if os.path.exists(os.path.join(d, f)):
            os.remove(os.path.join(d, f))
    with tarfile.open(out_prefix + ".tar.gz", "w:gz") as tar:
        tar.add(d, arcname="datadir")
    with open(out_prefix + ".json", "w") as f:
        # Where it was made: datastore mount paths, and the disk paths a .vmx
        # holds, are absolute (as ESXi's /vmfs/volumes/<uuid>/...), so the
        # directory opens where it was made.
        json.dump({"made_at": d, "ids": ids, "state": state}, f, indent=1, sort_keys=True)
        f.write("\n")


def org_of(s, token):
    from lxml import etree
    r = requests.get(s.vcd_url + "/api/org", headers={"Accept": "application/*+xml;version=36.0",
                                                     "x-vcloud-authorization": token})
    assert r.status_code == 200, r.text
    root = etree.fromstring(r.content)
    return [e.get("href") for e in root if e.get("name") == "acme"][0]


def href_of(xml):
    from lxml import etree
    return etree.fromstring(xml.encode()).get("href")


def read_state(s, si, ids):
    """What the APIs show of everything the fixture made, with this server's
    address taken out."""
    content = si.RetrieveContent()
    vsom = content.vStorageObjectManager
    out = {"tasks": {}, "disks": {}, "vms": {}, "vapi_tasks": {}, "vcd_tasks": {}}
    for moid in ids["tasks"]:
        out["tasks"][moid] = encode(vim.Task(moid, si._stub).info)
    by_ds = {ds._moId: ds for ds in datastores(si)}
    out["disk_list"] = {m: sorted(i.id for i in vsom.ListVStorageObject(ds)) for m, ds in by_ds.items()}
    for disk, dsid in ids["disks"]:
        ds, did = by_ds[dsid], vim.vslm.ID(id=disk)
        obj = vsom.RetrieveVStorageObject(did, ds)
        snaps = vsom.RetrieveSnapshotInfo(did, ds).snapshots
        data = sh("nbdcopy", nbd_uri(s, si, disk, ds), "-")
        entry = {"object": encode(obj), "snapshots": encode(snaps), "sha256": hashlib.sha256(data).hexdigest()}
        if len(snaps) >= 2:
            first = vsom.RetrieveSnapshotDetails(did, ds, snaps[0].id).changedBlockTrackingId
            areas = vsom.VstorageObjectVCenterQueryChangedDiskAreas(did, ds, snaps[-1].id, 0, first)
            entry["changed_since_first"] = encode(areas)
            entry["first_snapshot_sha256"] = hashlib.sha256(
                sh("nbdcopy", nbd_uri(s, si, disk, ds, snapshot=snaps[0].id.id), "-")).hexdigest()
        out["disks"][disk] = entry
    view = content.viewManager.CreateContainerView(content.rootFolder, [vim.VirtualMachine], True)
    for vm in view.view:
        out["vms"][vm.name] = {"config": encode(vm.config), "snapshot": encode(vm.snapshot),
                               "layoutEx": encode(vm.layoutEx), "datastore": sorted(d._moId for d in vm.datastore)}
    view.DestroyView()
    out["cns"] = encode(cns_manager(s, si).Query(vim.cns.QueryFilter()))
    base = f"http://{s.host}:{s.port}"
    h = {"vmware-api-session-id": session_id(si)}
    for tid in ids["vapi_tasks"]:
        r = requests.get(f"{base}/api/cis/tasks/{tid}", headers=h)
        assert r.status_code == 200, r.text
        out["vapi_tasks"][tid] = r.json()
    token = vcd_login(s, "acme", TENANT, TENANT_PW)
    for href in ids["vcd_tasks"]:
        r = requests.get(s.vcd_url + href, headers={"Accept": "application/*+xml;version=36.0",
                                                    "x-vcloud-authorization": token})
        assert r.status_code == 200, r.text
        out["vcd_tasks"][href] = r.text.replace(s.vcd_url, "VCD")
    reader = SmartConnect(host=s.host, port=s.port, protocol="http", user=READER, pwd=READER_PW)
    out["reader_sees"] = reader.RetrieveContent().rootFolder.childEntity[0].name
    Disconnect(reader)
    return json.loads(json.dumps(out).replace(s.data_dir, "DATADIR"))


if __name__ == "__main__":
    make(sys.argv[1])
