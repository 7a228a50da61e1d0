"""pyvmomi, unmodified, driving first-class disks: create, snapshots, change
tracking queries, revert, delete snapshot, extend, inflate, clone, relocate,
tags, control flags; the files are checked with qemu-img."""
import os
import re
import subprocess

import pytest
from pyVim.connect import Disconnect
from pyVim.task import WaitForTask
from pyVmomi import vim, vmodl


CHANGE_ID = re.compile(r"^([0-9a-f]{2} ){7}[0-9a-f]{2}-([0-9a-f]{2} ){7}[0-9a-f]{2}/\d+$")



def datastores(si):
    dc = si.RetrieveContent().rootFolder.childEntity[0]
    return sorted(dc.datastore, key=lambda d: d.name)


def ds_file(server, ds, path):
    """A `[ds] rel` path as a file of the server's data directory."""
    name, rel = re.match(r"^\[(.+?)\] (.+)$", path).groups()
    return os.path.join(server.data_dir, "datastores", name, rel)


def qemu_img(*args):
    return subprocess.run(["qemu-img", *args], capture_output=True, text=True)


def new_disk(vsom, ds, name="disk-a", mb=64, prov="thin"):
    spec = vim.vslm.CreateSpec(name=name, capacityInMB=mb,
                               backingSpec=vim.vslm.CreateSpec.DiskFileBackingSpec(datastore=ds, provisioningType=prov))
    task = vsom.CreateDisk_Task(spec)
    WaitForTask(task)
    return task.info.result


def test_disk_lifecycle_and_change_queries(server, si):
    content = si.RetrieveContent()
    vsom = content.vStorageObjectManager
    ds1, ds2 = datastores(si)
    obj = new_disk(vsom, ds1)
    cfg = obj.config
    did = cfg.id
    assert cfg.name == "disk-a" and cfg.capacityInMB == 64 and cfg.changedBlockTrackingEnabled
    assert cfg.backing.provisioningType == "thin" and cfg.backing.filePath.startswith("[LocalDS_0] fcd/")
    top = ds_file(server, ds1, cfg.backing.filePath)
    r = qemu_img("check", top)
    assert r.returncode == 0, r.stdout + r.stderr
    assert [i.id for i in vsom.ListVStorageObject(ds1)] == [did.id]
    assert vsom.RetrieveVStorageObject(did, ds1).config.name == "disk-a"

    t = vsom.VStorageObjectCreateSnapshot_Task(did, ds1, "first")
    WaitForTask(t)
    s1 = t.info.result
    t = vsom.VStorageObjectCreateSnapshot_Task(did, ds1, "second")
    WaitForTask(t)
    s2 = t.info.result
    info = vsom.RetrieveSnapshotInfo(did, ds1)
    assert [s.description for s in info.snapshots] == ["first", "second"]
    d1 = vsom.RetrieveSnapshotDetails(did, ds1, s1)
    assert CHANGE_ID.match(d1.changedBlockTrackingId), d1.changedBlockTrackingId
    chain = qemu_img("info", "--backing-chain", ds_file(server, ds1, vsom.RetrieveVStorageObject(did, ds1).config.backing.filePath))
    assert chain.returncode == 0 and chain.stdout.count("image:") == 3, chain.stdout

    # Nothing was written: no allocated area, no change between the snapshots.
    full = vsom.VstorageObjectVCenterQueryChangedDiskAreas(did, ds1, s2, 0, "*")
    assert full.startOffset == 0 and full.length == 64 << 20 and not full.changedArea
    inc = vsom.VstorageObjectVCenterQueryChangedDiskAreas(did, ds1, s2, 0, d1.changedBlockTrackingId)
    assert not inc.changedArea

    # Faults from the API page.
    with pytest.raises(vmodl.fault.InvalidArgument):
        vsom.VstorageObjectVCenterQueryChangedDiskAreas(did, ds1, s2, 64 << 20, "*")
    with pytest.raises(vmodl.fault.InvalidArgument):
        vsom.VstorageObjectVCenterQueryChangedDiskAreas(did, ds1, s2, 0, "52 05/7")
    d2 = vsom.RetrieveSnapshotDetails(did, ds1, s2)
    with pytest.raises(vmodl.fault.InvalidArgument):
        vsom.VstorageObjectVCenterQueryChangedDiskAreas(did, ds1, s1, 0, d2.changedBlockTrackingId)
    with pytest.raises(vim.fault.NotFound):
        vsom.VstorageObjectVCenterQueryChangedDiskAreas(did, ds1, vim.vslm.ID(id="nope"), 0, "*")
    with pytest.raises(vim.fault.NotFound):
        vsom.RetrieveVStorageObject(vim.vslm.ID(id="nope"), ds1)
    vsom.ClearVStorageObjectControlFlags(did, ds1, ["enableChangedBlockTracking"])
    assert not vsom.RetrieveVStorageObject(did, ds1).config.changedBlockTrackingEnabled
    with pytest.raises(vim.fault.InvalidState):
        vsom.VstorageObjectVCenterQueryChangedDiskAreas(did, ds1, s2, 0, d1.changedBlockTrackingId)
    vsom.SetVStorageObjectControlFlags(did, ds1, ["enableChangedBlockTracking", "keepAfterDeleteVm"])
    cfg = vsom.RetrieveVStorageObject(did, ds1).config
    assert cfg.changedBlockTrackingEnabled and cfg.keepAfterDeleteVm

    # Revert to the first snapshot drops the second; deleting the first
    # consolidates; extend needs no snapshots.
    WaitForTask(vsom.RevertVStorageObject_Task(did, ds1, s1))
    assert [s.id.id for s in vsom.RetrieveSnapshotInfo(did, ds1).snapshots] == [s1.id]
    with pytest.raises(vim.fault.InvalidState):
        vsom.ExtendDisk_Task(did, ds1, 128)
    WaitForTask(vsom.DeleteSnapshot_Task(did, ds1, s1))
    assert not vsom.RetrieveSnapshotInfo(did, ds1).snapshots
    WaitForTask(vsom.ExtendDisk_Task(did, ds1, 128))
    assert vsom.RetrieveVStorageObject(did, ds1).config.capacityInMB == 128
    WaitForTask(vsom.InflateDisk_Task(did, ds1))
    cfg = vsom.RetrieveVStorageObject(did, ds1).config
    assert cfg.backing.provisioningType == "eagerZeroedThick"
    assert qemu_img("check", ds_file(server, ds1, cfg.backing.filePath)).returncode == 0

    # Rename, tags, clone to the other datastore, relocate, delete.
    vsom.RenameVStorageObject(did, ds1, "disk-b")
    vsom.AttachTagToVStorageObject(did, "backup", "gold")
    assert [i.id for i in vsom.ListVStorageObjectsAttachedToTag("backup", "gold")] == [did.id]
    assert vsom.ListTagsAttachedToVStorageObject(did)[0].tagName == "gold"
    t = vsom.CloneVStorageObject_Task(did, ds1, vim.vslm.CloneSpec(
        name="copy", backingSpec=vim.vslm.CreateSpec.DiskFileBackingSpec(datastore=ds2)))
    WaitForTask(t)
    copy = t.info.result.config
    assert copy.name == "copy" and copy.capacityInMB == 128 and copy.backing.datastore == ds2
    r = qemu_img("compare", ds_file(server, ds1, cfg.backing.filePath), ds_file(server, ds2, copy.backing.filePath))
    assert r.returncode == 0, r.stdout + r.stderr
    t = vsom.RelocateVStorageObject_Task(did, ds1, vim.vslm.RelocateSpec(
        backingSpec=vim.vslm.CreateSpec.DiskFileBackingSpec(datastore=ds2)))
    WaitForTask(t)
    assert t.info.result.config.backing.datastore == ds2
    assert sorted(i.id for i in vsom.ListVStorageObject(ds2)) == sorted([did.id, copy.id.id])
    assert not vsom.ListVStorageObject(ds1)
    WaitForTask(vsom.DeleteVStorageObject_Task(copy.id, ds2))
    assert [i.id for i in vsom.ListVStorageObject(ds2)] == [did.id]


def test_disks_survive_restart_and_register(server, data_dir, si):
    from conftest import Server
    vsom = si.RetrieveContent().vStorageObjectManager
    ds1 = datastores(si)[0]
    did = new_disk(vsom, ds1, name="keep").config.id
    server.stop()
    s2 = Server(data_dir, extra=["--datastores", "2"])
    try:
        si2 = s2.connect()
        vsom2 = si2.RetrieveContent().vStorageObjectManager
        ds = datastores(si2)[0]
        assert vsom2.RetrieveVStorageObject(did, ds).config.name == "keep"
        # A VMDK made by qemu-img, registered as a first-class disk.
        path = os.path.join(data_dir, "datastores", "LocalDS_0", "q.vmdk")
        assert qemu_img("create", "-q", "-f", "vmdk", "-o", "subformat=monolithicFlat", path, "8M").returncode == 0
        obj = vsom2.RegisterDisk("[LocalDS_0] q.vmdk", "imported")
        assert obj.config.name == "imported" and obj.config.capacityInMB == 8
        with pytest.raises(vim.fault.AlreadyExists):
            vsom2.RegisterDisk("[LocalDS_0] q.vmdk", "again", obj.config.id)
        assert obj.config.backing.filePath == "[LocalDS_0] q.vmdk"
        Disconnect(si2)
    finally:
        s2.stop()
