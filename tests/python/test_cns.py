"""pyvmomi, unmodified, on CnsVolumeManager over SOAP at /vsanHealth with
the session cookie of /sdk: create → query (filters, paging) → write data
over NBD → CnsSyncVolume shows the new used space → extend → delete, and
the errors CnsSyncVolume must give."""
import subprocess

import pytest
import requests
from pyVim.task import WaitForTask
from pyVmomi import SoapStubAdapter, vim, vmodl

from conftest import ADMIN



def cns(server, si):
    stub = SoapStubAdapter(url=f"http://{server.host}:{server.port}/vsanHealth", version="vsan.version.v9_1_0_0")
    stub.cookie = si._stub.cookie
    return vim.cns.VolumeManager("cns-volume-manager", stub)


def create(cvm, si, name, mb, labels, ds):
    md = vim.cns.VolumeMetadata(
        containerCluster=vim.cns.ContainerCluster(clusterType="KUBERNETES", clusterId="k8s-1", vSphereUser=ADMIN),
        entityMetadata=[vim.cns.KubernetesEntityMetadata(entityType="PERSISTENT_VOLUME", entityName=name,
                                                          labels=[vim.KeyValue(key=k, value=v) for k, v in labels.items()])])
    spec = vim.cns.VolumeCreateSpec(name=name, volumeType="BLOCK", datastores=[ds], metadata=md,
                                    backingObjectDetails=vim.cns.BackingObjectDetails(capacityInMb=mb))
    t = cvm.Create([spec])
    WaitForTask(t, si=si)
    r = t.info.result.volumeResults[0]
    assert r.fault is None, r.fault
    return r.volumeId


def test_volume_lifecycle(server, si):
    cvm = cns(server, si)
    ds = si.RetrieveContent().rootFolder.childEntity[0].datastore[0]
    vids = [create(cvm, si, f"pv-{i}", 16, {"app": "db" if i % 2 else "web"}, ds) for i in range(5)]
    res = cvm.Query(vim.cns.QueryFilter(labels=[vim.KeyValue(key="app", value="db")]))
    assert sorted(v.name for v in res.volumes) == ["pv-1", "pv-3"]
    page = cvm.Query(vim.cns.QueryFilter(cursor=vim.cns.Cursor(offset=0, limit=2)))
    assert len(page.volumes) == 2 and page.cursor.totalRecords == 5 and page.cursor.offset == 2
    rest = cvm.Query(vim.cns.QueryFilter(cursor=vim.cns.Cursor(offset=2, limit=10)))
    assert len(rest.volumes) == 3
    # New labels on pv-0's entity: the label query follows.
    md = vim.cns.VolumeMetadata(
        containerCluster=vim.cns.ContainerCluster(clusterType="KUBERNETES", clusterId="k8s-1", vSphereUser=ADMIN),
        entityMetadata=[vim.cns.KubernetesEntityMetadata(entityType="PERSISTENT_VOLUME", entityName="pv-0",
                                                          labels=[vim.KeyValue(key="app", value="db")])])
    t = cvm.UpdateVolumeMetadata([vim.cns.VolumeMetadataUpdateSpec(volumeId=vids[0], metadata=md)])
    WaitForTask(t, si=si)
    assert t.info.result.volumeResults[0].fault is None
    res = cvm.Query(vim.cns.QueryFilter(labels=[vim.KeyValue(key="app", value="db")]))
    assert sorted(v.name for v in res.volumes) == ["pv-0", "pv-1", "pv-3"]
    v0 = cvm.Query(vim.cns.QueryFilter(volumeIds=[vids[0]])).volumes[0]
    assert v0.backingObjectDetails.capacityInMb == 16 and v0.metadata.containerCluster.clusterId == "k8s-1"
    # The volume is a first-class disk: write to it over NBD, then sync.
    sid = si._stub.cookie.split('"')[1]
    uri = requests.post(f"http://{server.host}:{server.port}/api/vtwin/nbd-tickets",
                        json={"disk": vids[0].id, "datastore": ds._moId, "write": True},
                        headers={"vmware-api-session-id": sid}).json()["uri"]
    r = subprocess.run(["qemu-io", "-f", "raw", "-c", "write -P 0x7 0 3M", uri], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    t = cvm.SyncVolume([vim.cns.SyncVolumeSpec(volumeId=vids[0], syncMode=["SPACE_USAGE"])])
    WaitForTask(t, si=si)
    assert t.info.result.volumeResults[0].fault is None
    used = cvm.Query(vim.cns.QueryFilter(volumeIds=[vids[0]])).volumes[0].backingObjectDetails.usedCapacityInMb
    assert 3 <= used <= 4, used
    # Exactly one spec; unknown ids NotFound.
    with pytest.raises(vmodl.fault.InvalidArgument):
        cvm.SyncVolume([])
    with pytest.raises(vmodl.fault.InvalidArgument):
        cvm.SyncVolume([vim.cns.SyncVolumeSpec(volumeId=vids[0]), vim.cns.SyncVolumeSpec(volumeId=vids[1])])
    with pytest.raises(vim.fault.NotFound):
        cvm.SyncVolume([vim.cns.SyncVolumeSpec(volumeId=vim.cns.VolumeId(id="nope"))])
    # Extend, then a batch with one bad entry: a per-volume fault, not a task error.
    t = cvm.Extend([vim.cns.VolumeExtendSpec(volumeId=vids[0], capacityInMb=32)])
    WaitForTask(t, si=si)
    assert t.info.result.volumeResults[0].fault is None
    t = cvm.Extend([vim.cns.VolumeExtendSpec(volumeId=vim.cns.VolumeId(id="nope"), capacityInMb=32)])
    WaitForTask(t, si=si)
    assert t.info.state == "success" and isinstance(t.info.result.volumeResults[0].fault, vim.fault.NotFound)
    # One volume per call, as vCenter's volume manager takes.
    with pytest.raises(vmodl.fault.InvalidArgument):
        cvm.Extend([vim.cns.VolumeExtendSpec(volumeId=v, capacityInMb=64) for v in vids[:2]])
    assert cvm.Query(vim.cns.QueryFilter(volumeIds=[vids[0]])).volumes[0].backingObjectDetails.capacityInMb == 32
    # FILE volumes are refused clearly, per volume.
    t = cvm.Create([vim.cns.VolumeCreateSpec(name="f", volumeType="FILE",
                                             backingObjectDetails=vim.cns.BackingObjectDetails(capacityInMb=1))])
    WaitForTask(t, si=si)
    assert isinstance(t.info.result.volumeResults[0].fault, vmodl.fault.NotSupported)
    with pytest.raises(vmodl.fault.InvalidArgument):
        cvm.Delete(vids, True)
    for v in vids:
        t = cvm.Delete([v], True)
        WaitForTask(t, si=si)
        assert t.info.result.volumeResults[0].fault is None
    assert not cvm.Query(vim.cns.QueryFilter()).volumes


def new_vm(si, name, ds, controller=True):
    content = si.RetrieveContent()
    dc = content.rootFolder.childEntity[0]
    pool = dc.hostFolder.childEntity[0].resourcePool
    changes = []
    if controller:
        changes.append(vim.vm.device.VirtualDeviceSpec(operation="add", device=vim.vm.device.ParaVirtualSCSIController(
            key=1000, busNumber=0, sharedBus="noSharing")))
    spec = vim.vm.ConfigSpec(name=name, guestId="otherGuest64", files=vim.vm.FileInfo(vmPathName=f"[{ds.name}]"),
                             deviceChange=changes)
    t = dc.vmFolder.CreateVM_Task(config=spec, pool=pool)
    WaitForTask(t, si=si)
    return t.info.result


def run(si, t):
    WaitForTask(t, si=si)
    return t.info.result.volumeResults


def vm_disks(vm):
    return [d for d in vm.config.hardware.device if isinstance(d, vim.vm.device.VirtualDisk)]


def qemu_info(path):
    r = subprocess.run(["qemu-img", "info", "--backing-chain", "--output=json", path], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    import json
    return json.loads(r.stdout)


def test_attach_snapshot_detach_relocate(server, si):
    """A volume attached to a VM is a disk of that VM (its .vmx names the
    volume's current top layer, which qemu-img follows), snapshots keep the
    VM pointed at the new top, and the volume cannot be deleted or attached
    elsewhere while attached."""
    cvm = cns(server, si)
    content = si.RetrieveContent()
    ds1, ds2 = sorted(content.rootFolder.childEntity[0].datastore, key=lambda d: d.name)
    vid = create(cvm, si, "pvc-att", 64, {"app": "db"}, ds1)
    vm = new_vm(si, "node-1", ds1)
    vm2 = new_vm(si, "node-2", ds1)
    bare = new_vm(si, "bare", ds1, controller=False)

    (r,) = run(si, cvm.Attach([vim.cns.VolumeAttachDetachSpec(volumeId=vid, vm=vm)]))
    assert r.fault is None and isinstance(r, vim.cns.VolumeAttachResult)
    (disk,) = vm_disks(vm)
    assert disk.vDiskId.id == vid.id and disk.capacityInKB == 64 * 1024
    assert disk.backing.uuid == r.diskUUID and len(r.diskUUID) == 36
    assert disk.backing.fileName.startswith(f"[{ds1.name}] fcd/{vid.id}/")
    # Attaching again to the same VM answers the same; another VM is refused.
    (again,) = run(si, cvm.Attach([vim.cns.VolumeAttachDetachSpec(volumeId=vid, vm=vm)]))
    assert again.fault is None and again.diskUUID == r.diskUUID and len(vm_disks(vm)) == 1
    (busy,) = run(si, cvm.Attach([vim.cns.VolumeAttachDetachSpec(volumeId=vid, vm=vm2)]))
    assert isinstance(busy.fault, vim.fault.ResourceInUse)
    other = create(cvm, si, "pvc-other", 8, {}, ds1)
    (noctl,) = run(si, cvm.Attach([vim.cns.VolumeAttachDetachSpec(volumeId=other, vm=bare)]))
    assert isinstance(noctl.fault, vim.fault.CnsMissingControllerFault)
    (inuse,) = run(si, cvm.Delete([vid], True))
    assert isinstance(inuse.fault, vim.fault.ResourceInUse)

    # Write through NBD, snapshot with our own id: the VM now names the new
    # top, whose chain qemu-img reads back to the base.
    sid = si._stub.cookie.split('"')[1]
    uri = requests.post(f"http://{server.host}:{server.port}/api/vtwin/nbd-tickets",
                        json={"disk": vid.id, "datastore": ds1._moId, "write": True},
                        headers={"vmware-api-session-id": sid}).json()["uri"]
    assert subprocess.run(["qemu-io", "-f", "raw", "-c", "write -P 0x5 0 2M", uri], capture_output=True).returncode == 0
    (s,) = run(si, cvm.CreateSnapshots([vim.cns.SnapshotCreateSpec(volumeId=vid, description="before upgrade",
                                                                   snapshotId=vim.cns.SnapshotId(id="snap-1"))]))
    assert s.fault is None
    snaps = content.vStorageObjectManager.RetrieveSnapshotInfo(id=vim.vslm.ID(id=vid.id), datastore=ds1).snapshots
    assert [x.id.id for x in snaps] == ["snap-1"] and snaps[0].description == "before upgrade"
    (disk,) = vm_disks(vm)
    rel = disk.backing.fileName.split("] ", 1)[1]
    top = f"{server.data_dir}/datastores/{ds1.name}/{rel}"
    chain = qemu_info(top)
    assert len(chain) == 2 and chain[0]["filename"] == top
    subprocess.run(["qemu-img", "check", top], check=True, capture_output=True)
    vol = cvm.Query(vim.cns.QueryFilter(volumeIds=[vid])).volumes[0]
    assert vol.backingObjectDetails.aggregatedSnapshotCapacityInMb >= 2
    (dup,) = run(si, cvm.CreateSnapshots([vim.cns.SnapshotCreateSpec(volumeId=vid, description="x",
                                                                     snapshotId=vim.cns.SnapshotId(id="snap-1"))]))
    assert isinstance(dup.fault, vim.fault.AlreadyExists)
    (missing,) = run(si, cvm.DeleteSnapshots([vim.cns.SnapshotDeleteSpec(volumeId=vid, snapshotId=vim.cns.SnapshotId(id="nope"))]))
    assert isinstance(missing.fault, vim.fault.CnsSnapshotNotFoundFault) and missing.fault.volumeId.id == vid.id
    (gone,) = run(si, cvm.DeleteSnapshots([vim.cns.SnapshotDeleteSpec(volumeId=vid, snapshotId=vim.cns.SnapshotId(id="snap-1"))]))
    assert gone.fault is None
    (disk,) = vm_disks(vm)
    top = f"{server.data_dir}/datastores/{ds1.name}/" + disk.backing.fileName.split("] ", 1)[1]
    assert len(qemu_info(top)) == 1
    assert cvm.Query(vim.cns.QueryFilter(volumeIds=[vid])).volumes[0].backingObjectDetails.aggregatedSnapshotCapacityInMb is None

    # Detach, relocate to the other datastore, delete.
    (d,) = run(si, cvm.Detach([vim.cns.VolumeAttachDetachSpec(volumeId=vid, vm=vm)]))
    assert d.fault is None and vm_disks(vm) == []
    with pytest.raises(vim.fault.AlreadyExists):
        cvm.Relocate([vim.cns.BlockVolumeRelocateSpec(volumeId=vid, datastore=ds1)])
    (m,) = run(si, cvm.Relocate([vim.cns.BlockVolumeRelocateSpec(volumeId=vid, datastore=ds2)]))
    assert m.fault is None
    vol = cvm.Query(vim.cns.QueryFilter(datastores=[ds2])).volumes
    assert [v.volumeId.id for v in vol] == [vid.id] and vol[0].datastoreUrl == ds2.info.url
    assert [v.volumeId.id for v in cvm.Query(vim.cns.QueryFilter(datastores=[ds1])).volumes] == [other.id]
    (x,) = run(si, cvm.Delete([vid], True))
    assert x.fault is None


def test_policy_health_static_and_errors(server, si):
    cvm = cns(server, si)
    content = si.RetrieveContent()
    ds1, ds2 = sorted(content.rootFolder.childEntity[0].datastore, key=lambda d: d.name)
    a = create(cvm, si, "pv-a", 8, {"tier": "gold"}, ds1)
    b = create(cvm, si, "pv-b", 8, {"tier": "gold"}, ds2)
    # Policy: recorded, shown, filterable.
    (r,) = run(si, cvm.ReconfigPolicy([vim.cns.VolumePolicyReconfigSpec(
        volumeId=a, profile=[vim.vm.DefinedProfileSpec(profileId="gold-policy")])]))
    assert r.fault is None
    got = cvm.Query(vim.cns.QueryFilter(storagePolicyId="gold-policy")).volumes
    assert [v.volumeId.id for v in got] == [a.id] and got[0].storagePolicyId == "gold-policy"
    # Health follows the datastore: unmount ds2 and b turns red.
    host = content.rootFolder.childEntity[0].hostFolder.childEntity[0].host[0]
    uuid2 = ds2.info.url.rstrip("/").rsplit("/", 1)[1]
    host.configManager.storageSystem.UnmountVmfsVolume(uuid2)
    red = cvm.Query(vim.cns.QueryFilter(healthStatus="red")).volumes
    assert [v.volumeId.id for v in red] == [b.id] and red[0].datastoreAccessibilityStatus == "notAccessible"
    green = cvm.Query(vim.cns.QueryFilter(healthStatus="green")).volumes
    assert [v.volumeId.id for v in green] == [a.id]
    host.configManager.storageSystem.MountVmfsVolume(uuid2)
    assert len(cvm.Query(vim.cns.QueryFilter(healthStatus="green")).volumes) == 2
    # Selection: only the fields asked for.
    sel = cvm.Query(vim.cns.QueryFilter(volumeIds=[a]), vim.cns.QuerySelection(names=["VOLUME_NAME"])).volumes[0]
    assert sel.name == "pv-a" and sel.backingObjectDetails is None and sel.metadata is None
    with pytest.raises(vmodl.fault.InvalidArgument):
        cvm.Query(vim.cns.QueryFilter(), vim.cns.QuerySelection(names=["NOPE"]))
    # Static provisioning: an existing first-class disk becomes a volume, once.
    vsom = content.vStorageObjectManager
    spec = vim.vslm.CreateSpec(name="legacy", capacityInMB=4,
                               backingSpec=vim.vslm.CreateSpec.DiskFileBackingSpec(datastore=ds1, provisioningType="thin"))
    t = vsom.CreateDisk_Task(spec)
    WaitForTask(t, si=si)
    fcd = t.info.result.config.id.id
    # Not a volume yet: CNS calls on it say so.
    (nr,) = run(si, cvm.Attach([vim.cns.VolumeAttachDetachSpec(volumeId=vim.cns.VolumeId(id=fcd), vm=new_vm(si, "n", ds1))]))
    assert isinstance(nr.fault, vim.fault.CnsNotRegisteredFault) and nr.fault.volumeId.id == fcd
    static = vim.cns.VolumeCreateSpec(name="pv-static", volumeType="BLOCK",
                                      backingObjectDetails=vim.cns.BlockBackingDetails(backingDiskId=fcd))
    (c,) = run(si, cvm.Create([static]))
    assert c.fault is None and c.volumeId.id == fcd
    assert cvm.Query(vim.cns.QueryFilter(names=["pv-static"])).volumes[0].backingObjectDetails.capacityInMb == 4
    (c2,) = run(si, cvm.Create([static]))
    assert isinstance(c2.fault, vim.fault.CnsAlreadyRegisteredFault) and c2.fault.volumeId.id == fcd
    # Request-level errors are synchronous faults.
    with pytest.raises(vmodl.fault.InvalidArgument):
        cvm.Create([static, static])
    with pytest.raises(vmodl.fault.InvalidArgument):
        cvm.Attach([vim.cns.VolumeAttachDetachSpec(volumeId=vim.cns.VolumeId(id=""), vm=vim.VirtualMachine("vm-404", si._stub))])
    with pytest.raises(vmodl.fault.InvalidArgument):
        cvm.Query(vim.cns.QueryFilter(cursor=vim.cns.Cursor(offset=-1, limit=10)))
    # An unknown VM is a per-volume fault.
    (nv,) = run(si, cvm.Attach([vim.cns.VolumeAttachDetachSpec(volumeId=a, vm=vim.VirtualMachine("vm-404", si._stub))]))
    assert isinstance(nv.fault, vmodl.fault.ManagedObjectNotFound)
    # Deleting the volume but keeping the disk leaves a first-class disk.
    (k,) = run(si, cvm.Delete([vim.cns.VolumeId(id=fcd)], False))
    assert k.fault is None and cvm.Query(vim.cns.QueryFilter(names=["pv-static"])).volumes == []
    assert vsom.RetrieveVStorageObject(id=vim.vslm.ID(id=fcd), datastore=ds1).config.name == "pv-static"


def test_volumes_persist_across_restart(data_dir):
    from conftest import Server
    s = Server(data_dir, extra=["--datastores", "2"])
    try:
        si = s.connect()
        cvm = cns(s, si)
        ds = si.RetrieveContent().rootFolder.childEntity[0].datastore[0]
        vid = create(cvm, si, "pv-keep", 8, {"keep": "yes"}, ds)
        vm = new_vm(si, "keeper", ds)
        (r,) = run(si, cvm.Attach([vim.cns.VolumeAttachDetachSpec(volumeId=vid, vm=vm)]))
        assert r.fault is None
    finally:
        s.stop()
    s = Server(data_dir, extra=["--datastores", "2"])
    try:
        si = s.connect()
        cvm = cns(s, si)
        (v,) = cvm.Query(vim.cns.QueryFilter(labels=[vim.KeyValue(key="keep", value="yes")])).volumes
        assert v.volumeId.id == vid.id and v.metadata.containerCluster.clusterId == "k8s-1"
        vm = [x for x in si.RetrieveContent().rootFolder.childEntity[0].vmFolder.childEntity if x.name == "keeper"][0]
        assert [d.vDiskId.id for d in vm_disks(vm)] == [vid.id]
        (busy,) = run(si, cvm.Delete([vid], True))
        assert isinstance(busy.fault, vim.fault.ResourceInUse)
    finally:
        s.stop()


def test_query_async(server, si):
    cvm = cns(server, si)
    ds = si.RetrieveContent().rootFolder.childEntity[0].datastore[0]
    vids = [create(cvm, si, f"pv-async-{i}", 4, {"q": "async"}, ds) for i in range(3)]
    t = cvm.QueryAsync(vim.cns.QueryFilter(labels=[vim.KeyValue(key="q", value="async")],
                                           cursor=vim.cns.Cursor(offset=0, limit=2)))
    (r,) = run(si, t)
    assert isinstance(r, vim.cns.AsyncQueryResult) and r.fault is None
    page = r.queryResult
    assert len(page.volumes) == 2 and page.cursor.totalRecords == 3
    assert {v.volumeId.id for v in page.volumes} <= {v.id for v in vids}


def test_vm_snapshot_with_attached_volume(server, si):
    """A VM snapshot takes the attached volume's snapshot in the volume's own
    chain (so the disk's metadata, change log and CnsSyncVolume follow);
    reverting brings its data back; removing it consolidates."""
    cvm = cns(server, si)
    content = si.RetrieveContent()
    ds = sorted(content.rootFolder.childEntity[0].datastore, key=lambda d: d.name)[0]
    vid = create(cvm, si, "pvc-vmsnap", 16, {}, ds)
    vm = new_vm(si, "snapper", ds)
    (r,) = run(si, cvm.Attach([vim.cns.VolumeAttachDetachSpec(volumeId=vid, vm=vm)]))
    assert r.fault is None
    sid = si._stub.cookie.split('"')[1]

    def nbd(*cmds):
        uri = requests.post(f"http://{server.host}:{server.port}/api/vtwin/nbd-tickets",
                            json={"disk": vid.id, "datastore": ds._moId, "write": True},
                            headers={"vmware-api-session-id": sid}).json()["uri"]
        args = ["qemu-io", "-f", "raw"]
        for c in cmds:
            args += ["-c", c]
        return subprocess.run(args + [uri], capture_output=True, text=True)

    assert nbd("write -P 0x1 0 2M").returncode == 0
    WaitForTask(vm.CreateSnapshot_Task(name="s1", memory=False, quiesce=False), si=si)
    vsom = content.vStorageObjectManager
    snaps = vsom.RetrieveSnapshotInfo(id=vim.vslm.ID(id=vid.id), datastore=ds).snapshots
    assert [s.id.id for s in snaps] == [f"{vm._moId}-snapshot-1"]
    (disk,) = vm_disks(vm)
    top = f"{server.data_dir}/datastores/{ds.name}/" + disk.backing.fileName.split("] ", 1)[1]
    assert disk.backing.fileName.startswith(f"[{ds.name}] fcd/{vid.id}/") and len(qemu_info(top)) == 2
    (s,) = run(si, cvm.SyncVolume([vim.cns.SyncVolumeSpec(volumeId=vid)]))
    assert s.fault is None
    b = cvm.Query(vim.cns.QueryFilter(volumeIds=[vid])).volumes[0].backingObjectDetails
    assert b.aggregatedSnapshotCapacityInMb >= 2 and b.usedCapacityInMb >= 2
    # New data after the snapshot; a revert brings the old data back.
    assert nbd("write -P 0x2 0 1M").returncode == 0
    WaitForTask(vm.RevertToCurrentSnapshot_Task(), si=si)
    r = nbd("read -P 0x1 0 2M")
    assert r.returncode == 0 and "Pattern verification failed" not in r.stdout + r.stderr, r.stdout + r.stderr
    # Removing the snapshot consolidates the volume's chain.
    WaitForTask(vm.snapshot.rootSnapshotList[0].snapshot.RemoveSnapshot_Task(removeChildren=False), si=si)
    assert not vsom.RetrieveSnapshotInfo(id=vim.vslm.ID(id=vid.id), datastore=ds).snapshots
    (disk,) = vm_disks(vm)
    top = f"{server.data_dir}/datastores/{ds.name}/" + disk.backing.fileName.split("] ", 1)[1]
    assert len(qemu_info(top)) == 1
    subprocess.run(["qemu-img", "check", top], check=True, capture_output=True)
    r = nbd("read -P 0x1 0 2M")
    assert r.returncode == 0 and "Pattern verification failed" not in r.stdout + r.stderr
