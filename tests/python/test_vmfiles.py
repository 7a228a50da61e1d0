"""Datastore.UpdateVirtualMachineFiles_Task with pyvmomi, unmodified: VM
files on two datastores name each other's files by mount path; both
datastores come back under new mount paths (the admin remount); the task
rewrites every file, reports the one it cannot rewrite, and qemu-img
follows the rewritten chain."""
import os
import subprocess

import pytest
import requests
from pyVim.connect import Disconnect, SmartConnect
from pyVim.task import WaitForTask
from pyVmomi import vim, vmodl

from conftest import ADMIN, PW



def sh(*args):
    r = subprocess.run(list(args), capture_output=True, text=True)
    assert r.returncode == 0, f"{args}: {r.stdout}{r.stderr}"
    return r.stdout


def mount(ds):
    return ds.host[0].mountInfo.path


def make_vms(m1, m2):
    """vm1 on ds1 (base + delta, .vmx naming a disk on ds2, .vmsd);
    vm2 on ds2, a linked clone whose delta's parent is vm1's base on ds1."""
    os.makedirs(f"{m1}/vm1")
    os.makedirs(f"{m2}/vm1")
    os.makedirs(f"{m2}/vm2")
    sh("qemu-img", "create", "-q", "-f", "vmdk", "-o", "subformat=monolithicFlat", f"{m1}/vm1/vm1.vmdk", "8M")
    sh("qemu-io", "-f", "vmdk", "-c", "write -P 0x11 0 1M", f"{m1}/vm1/vm1.vmdk")
    sh("qemu-img", "create", "-q", "-f", "vmdk", "-o", "subformat=twoGbMaxExtentSparse", "-b", "vm1.vmdk", "-F", "vmdk",
       f"{m1}/vm1/vm1-000001.vmdk")
    sh("qemu-img", "create", "-q", "-f", "vmdk", "-o", "subformat=monolithicFlat", f"{m2}/vm1/vm1_1.vmdk", "4M")
    with open(f"{m1}/vm1/vm1.vmx", "w") as f:
        f.write('.encoding = "UTF-8"\nconfig.version = "8"\ndisplayName = "vm1"\n'
                'scsi0:0.fileName = "vm1-000001.vmdk"\n'
                f'scsi0:1.fileName = "{m2}/vm1/vm1_1.vmdk"\n'
                f'sched.swap.derivedName = "{m1}/vm1/vm1-1234.vswp"\n')
    with open(f"{m1}/vm1/vm1.vmsd", "w") as f:
        f.write(f'.encoding = "UTF-8"\nsnapshot0.disk0.fileName = "{m1}/vm1/vm1.vmdk"\n')
    # vm2: a delta on ds2 whose parent is on ds1.
    sh("qemu-img", "create", "-q", "-f", "vmdk", "-o", "subformat=twoGbMaxExtentSparse", "-b", f"{m1}/vm1/vm1.vmdk",
       "-F", "vmdk", f"{m2}/vm2/vm2.vmdk")
    with open(f"{m2}/vm2/vm2.vmx", "w") as f:
        f.write(f'.encoding = "UTF-8"\ndisplayName = "vm2"\nscsi0:0.fileName = "vm2.vmdk"\n'
                f'extendedConfigFile = "{m1}/vm1/shared.vmxf"\n')
    # One file that cannot be rewritten.
    with open(f"{m1}/vm1/broken.vmx", "wb") as f:
        f.write(b'x = "' + m2.encode() + b'/vm1/\xff\xfe"\n')


def remount(server, ds):
    r = requests.post(f"http://{server.host}:{server.port}/admin/datastores/{ds._moId}/remount", auth=(ADMIN, PW))
    assert r.status_code == 200, r.text
    return r.json()["mountPath"]


def test_update_virtual_machine_files(server, si):
    content = si.RetrieveContent()
    ds1, ds2 = sorted(content.rootFolder.childEntity[0].datastore, key=lambda d: d.name)
    old1, old2 = mount(ds1), mount(ds2)
    make_vms(old1, old2)
    before = sh("qemu-img", "info", "--backing-chain", f"{old2}/vm2/vm2.vmdk")
    assert before.count("image:") == 2

    new1, new2 = remount(server, ds1), remount(server, ds2)
    assert new1 != old1 and mount(ds1) == new1 and ds1.summary.url.endswith("/")
    r = subprocess.run(["qemu-img", "info", "--backing-chain", f"{new2}/vm2/vm2.vmdk"], capture_output=True, text=True)
    assert r.returncode != 0, "the chain names the old mount path"

    pairs = [vim.Datastore.MountPathDatastorePair(oldMountPath=old1, datastore=ds1),
             vim.Datastore.MountPathDatastorePair(oldMountPath=old2, datastore=ds2)]
    # Refused at once: an old path mapped to two datastores.
    dup = [vim.Datastore.MountPathDatastorePair(oldMountPath=old1, datastore=ds1),
           vim.Datastore.MountPathDatastorePair(oldMountPath=old1, datastore=ds2)]
    with pytest.raises(vmodl.fault.InvalidArgument):
        ds1.UpdateVirtualMachineFiles_Task(dup)

    results = {}
    for ds in (ds1, ds2):
        t = ds.UpdateVirtualMachineFiles_Task(pairs)
        WaitForTask(t)
        assert t.info.descriptionId == "Datastore.updateVirtualMachineFiles" and t.info.progress == 100
        results[ds.name] = t.info.result
    failed = results[ds1.name].failedVmFile
    assert [f.vmFile for f in failed] == [f"[{ds1.name}] vm1/broken.vmx"]
    assert isinstance(failed[0].fault, vim.fault.FileFault)
    assert not results[ds2.name].failedVmFile

    chain = sh("qemu-img", "info", "--backing-chain", f"{new2}/vm2/vm2.vmdk")
    assert chain.count("image:") == 2 and new1 in chain
    sh("qemu-img", "check", f"{new2}/vm2/vm2.vmdk")
    sh("qemu-img", "compare", f"{new2}/vm2/vm2.vmdk", f"{new1}/vm1/vm1.vmdk")
    vmx = open(f"{new1}/vm1/vm1.vmx").read()
    assert f'scsi0:1.fileName = "{new2}/vm1/vm1_1.vmdk"' in vmx and old2 not in vmx
    assert f"{new1}/vm1/vm1-1234.vswp" in vmx
    assert new1 in open(f"{new1}/vm1/vm1.vmsd").read()
    assert new1 in open(f"{new2}/vm2/vm2.vmx").read()
    # Twice is harmless.
    snapshot = {p: open(p, "rb").read() for p in (f"{new1}/vm1/vm1.vmx", f"{new2}/vm2/vm2.vmdk")}
    WaitForTask(ds1.UpdateVirtualMachineFiles_Task(pairs))
    assert all(open(p, "rb").read() == b for p, b in snapshot.items())

    # The updated VMs register again, with their files on both datastores.
    folder = content.rootFolder.childEntity[0].vmFolder
    t = folder.RegisterVM_Task(path=f"[{ds1.name}] vm1/vm1.vmx", asTemplate=False)
    WaitForTask(t)
    vm1 = t.info.result
    assert vm1.name == "vm1" and vm1.config.files.vmPathName == f"[{ds1.name}] vm1/vm1.vmx"
    assert sorted(d.name for d in vm1.datastore) == sorted([ds1.name, ds2.name])
    names = [f.name for f in vm1.layoutEx.file]
    assert f"[{ds2.name}] vm1/vm1_1.vmdk" in names and f"[{ds1.name}] vm1/vm1-000001.vmdk" in names
    assert vm1.runtime.powerState == "poweredOff" and vm1 in ds2.vm
    with pytest.raises(vim.fault.AlreadyExists):
        WaitForTask(folder.RegisterVM_Task(path=f"[{ds1.name}] vm1/vm1.vmx", asTemplate=False))
    # A registered VM with files on the volume: ResourceInUse.
    with pytest.raises(vim.fault.ResourceInUse):
        ds2.UpdateVirtualMachineFiles_Task(pairs)
    vm1.UnregisterVM()
    assert os.path.exists(f"{new1}/vm1/vm1.vmx"), "unregistering keeps the files"
    WaitForTask(ds2.UpdateVirtualMachineFiles_Task(pairs))
    t = folder.RegisterVM_Task(path=f"[{ds2.name}] vm2/vm2.vmx", name="linked", asTemplate=False)
    WaitForTask(t)
    vm2 = t.info.result
    assert vm2.name == "linked"
    WaitForTask(vm2.Destroy_Task())
    assert not os.path.exists(f"{new2}/vm2/vm2.vmx")
    assert os.path.exists(f"{new1}/vm1/vm1.vmdk"), "the parent of a linked clone stays"


def test_update_needs_the_privilege(server, si):
    server.add_user("ro@vsphere.local", "Ro-Passw0rd!", "ReadOnly")
    ro = SmartConnect(host=server.host, port=server.port, protocol="http", user="ro@vsphere.local", pwd="Ro-Passw0rd!")
    try:
        ds = ro.RetrieveContent().rootFolder.childEntity[0].datastore[0]
        pair = vim.Datastore.MountPathDatastorePair(oldMountPath="/vmfs/volumes/x", datastore=ds)
        with pytest.raises(vim.fault.NoPermission):
            ds.UpdateVirtualMachineFiles_Task([pair])
    finally:
        Disconnect(ro)


def test_kill_9_mid_update_leaves_no_torn_file(server, data_dir, si):
    """SIGKILL while UpdateVirtualMachineFiles_Task runs: every file is
    wholly old or wholly new; after a restart the update finishes the rest."""
    import time
    from conftest import Server
    content = si.RetrieveContent()
    ds = content.rootFolder.childEntity[0].datastore[0]
    old = mount(ds)
    body = lambda m, i: (f'.encoding = "UTF-8"\ndisplayName = "vm{i}"\n'
                         + "".join(f'scsi0:{k}.fileName = "{m}/vm{i}/disk{k}.vmdk"\n' for k in range(8)))
    n = 4000
    for i in range(n):
        os.makedirs(f"{old}/vm{i}")
        with open(f"{old}/vm{i}/vm{i}.vmx", "w") as f:
            f.write(body(old, i))
    new = remount(server, ds)
    pair = [vim.Datastore.MountPathDatastorePair(oldMountPath=old, datastore=ds)]
    task = ds.UpdateVirtualMachineFiles_Task(pair)
    # One update per datastore at a time.
    with pytest.raises(vim.fault.TaskInProgress) as busy:
        ds.UpdateVirtualMachineFiles_Task(pair)
    assert busy.value.task == task
    deadline = time.time() + 60
    while (task.info.progress or 0) < 5 and task.info.state != "success" and time.time() < deadline:
        time.sleep(0.01)
    server.proc.kill()
    server.proc.wait()
    wholly_old = wholly_new = 0
    for i in range(n):
        text = open(f"{new}/vm{i}/vm{i}.vmx").read()
        if text == body(old, i):
            wholly_old += 1
        else:
            assert text == body(new, i), f"vm{i}.vmx is torn"
            wholly_new += 1
    assert wholly_new > 0 and wholly_old > 0, (wholly_new, wholly_old)
    s2 = Server(data_dir, extra=["--datastores", "2"])
    try:
        si2 = s2.connect()
        ds2 = si2.RetrieveContent().rootFolder.childEntity[0].datastore[0]
        t = ds2.UpdateVirtualMachineFiles_Task([vim.Datastore.MountPathDatastorePair(oldMountPath=old, datastore=ds2)])
        WaitForTask(t)
        assert not t.info.result.failedVmFile
        stale = [i for i in range(n) if open(f"{new}/vm{i}/vm{i}.vmx").read() != body(new, i)]
        assert not stale, (len(stale), stale[:5], open(f"{new}/vm{stale[0]}/vm{stale[0]}.vmx").read()[:300], t.info.result)
        Disconnect(si2)
    finally:
        s2.stop()


def test_resignature_a_copy_then_update_and_register(server, si):
    """A copy of a datastore presented to the host: QueryUnresolvedVmfsVolumes
    lists it, ResignatureUnresolvedVmfsVolume_Task mounts it as a new
    datastore under a new mount path, UpdateVirtualMachineFiles_Task points
    its files at themselves, and the copied VM registers."""
    content = si.RetrieveContent()
    dc = content.rootFolder.childEntity[0]
    ds1, ds2 = sorted(dc.datastore, key=lambda d: d.name)
    old1, old2 = mount(ds1), mount(ds2)
    make_vms(old1, old2)
    os.remove(f"{old1}/vm1/broken.vmx")
    r = requests.post(f"http://{server.host}:{server.port}/admin/datastores/{ds1._moId}/copy", auth=(ADMIN, PW))
    assert r.status_code == 201, r.text
    host = dc.hostFolder.childEntity[0].host[0]
    dss = host.configManager.datastoreSystem
    vols = dss.QueryUnresolvedVmfsVolumes()
    assert len(vols) == 1 and vols[0].vmfsLabel == ds1.name and vols[0].resolveStatus.resolvable
    spec = vim.host.UnresolvedVmfsResignatureSpec(extentDevicePath=[vols[0].extent[0].devicePath])
    t = dss.ResignatureUnresolvedVmfsVolume_Task(spec)
    WaitForTask(t)
    snap = t.info.result.result
    assert snap.name.startswith("snap-") and snap.name.endswith(ds1.name)
    new = mount(snap)
    assert new not in (old1, old2) and not dss.QueryUnresolvedVmfsVolumes()
    # The copy's files still name the original: point them at the copy.
    assert old1 in open(f"{new}/vm1/vm1.vmsd").read()
    WaitForTask(snap.UpdateVirtualMachineFiles_Task(
        [vim.Datastore.MountPathDatastorePair(oldMountPath=old1, datastore=snap)]))
    assert new in open(f"{new}/vm1/vm1.vmsd").read()
    assert old1 in open(f"{old1}/vm1/vm1.vmsd").read(), "the original is untouched"
    t = dc.vmFolder.RegisterVM_Task(path=f"[{snap.name}] vm1/vm1.vmx", name="vm1-copy", asTemplate=False)
    WaitForTask(t)
    assert sorted(d.name for d in t.info.result.datastore) == sorted([snap.name, ds2.name])
    t.info.result.UnregisterVM()

    # Unmount makes a datastore inaccessible; mount brings it back.
    ss = host.configManager.storageSystem
    uuid2 = ds2.info.url.rstrip("/").rsplit("/", 1)[1]
    ss.UnmountVmfsVolume(uuid2)
    assert not ds2.summary.accessible
    with pytest.raises(vim.fault.InvalidDatastore):
        ds2.UpdateVirtualMachineFiles_Task([vim.Datastore.MountPathDatastorePair(oldMountPath="/x", datastore=ds2)])
    ss.MountVmfsVolume(uuid2)
    assert ds2.summary.accessible


def new_vm(content, name, ds1, ds2):
    dc = content.rootFolder.childEntity[0]
    pool = dc.hostFolder.childEntity[0].resourcePool
    ctrl = vim.vm.device.VirtualDeviceSpec(operation="add", device=vim.vm.device.ParaVirtualSCSIController(key=1000, busNumber=0, sharedBus="noSharing"))
    def disk(unit, kb, ds):
        backing = vim.vm.device.VirtualDisk.FlatVer2BackingInfo(diskMode="persistent", thinProvisioned=True,
                                                                fileName=f"[{ds.name}]" if ds else "")
        return vim.vm.device.VirtualDeviceSpec(operation="add", fileOperation="create", device=vim.vm.device.VirtualDisk(
            key=-unit - 1, controllerKey=1000, unitNumber=unit, capacityInKB=kb, backing=backing))
    spec = vim.vm.ConfigSpec(name=name, guestId="otherGuest64", numCPUs=2, memoryMB=256,
                             files=vim.vm.FileInfo(vmPathName=f"[{ds1.name}]"),
                             deviceChange=[ctrl, disk(0, 8192, None), disk(1, 4096, ds2)])
    t = dc.vmFolder.CreateVM_Task(config=spec, pool=pool)
    WaitForTask(t)
    return t.info.result


def test_create_vm_with_disks_on_two_datastores(server, si):
    content = si.RetrieveContent()
    ds1, ds2 = sorted(content.rootFolder.childEntity[0].datastore, key=lambda d: d.name)
    vm = new_vm(content, "web", ds1, ds2)
    assert vm.config.hardware.numCPU == 2 and vm.config.hardware.memoryMB == 256
    disks = [d for d in vm.config.hardware.device if isinstance(d, vim.vm.device.VirtualDisk)]
    assert [d.capacityInKB for d in disks] == [8192, 4096]
    assert disks[0].backing.fileName == f"[{ds1.name}] web/web.vmdk"
    assert disks[1].backing.fileName == f"[{ds2.name}] web/web_1.vmdk" and disks[1].backing.datastore == ds2
    assert sorted(d.name for d in vm.datastore) == sorted([ds1.name, ds2.name])
    assert vm.resourcePool and vm in vm.resourcePool.vm
    vmx = open(f"{mount(ds1)}/web/web.vmx").read()
    assert f'scsi0:1.fileName = "{mount(ds2)}/web/web_1.vmdk"' in vmx and 'scsi0.virtualDev = "pvscsi"' in vmx
    for f in (f"{mount(ds1)}/web/web.vmdk", f"{mount(ds2)}/web/web_1.vmdk"):
        sh("qemu-img", "check", f)
    with pytest.raises(vim.fault.DuplicateName):
        new_vm(content, "web", ds1, ds2)
    WaitForTask(vm.Destroy_Task())
    assert not os.path.exists(f"{mount(ds1)}/web") and not os.path.exists(f"{mount(ds2)}/web/web_1.vmdk")


def vmx_disks(path):
    kv = dict(l.split(" = ", 1) for l in open(path).read().splitlines() if " = " in l)
    return [kv[f"scsi0:{u}.fileName"].strip('"') for u in (0, 1)]


def test_vm_snapshots_real_deltas_across_datastores(server, si):
    content = si.RetrieveContent()
    ds1, ds2 = sorted(content.rootFolder.childEntity[0].datastore, key=lambda d: d.name)
    vm = new_vm(content, "db", ds1, ds2)
    vmdir = f"{mount(ds1)}/db"
    def live(i):
        f = vmx_disks(f"{vmdir}/db.vmx")[i]
        return f if f.startswith("/") else f"{vmdir}/{f}"
    for i in (0, 1):
        sh("qemu-io", "-f", "vmdk", "-c", "write -P 0x11 0 64k", live(i))
    WaitForTask(vm.CreateSnapshot_Task(name="one", description="first", memory=False, quiesce=False))
    s1 = vm.snapshot.currentSnapshot
    assert live(1).startswith(vmdir), "deltas go to the VM's directory"
    chain = sh("qemu-img", "info", "--backing-chain", live(1))
    assert chain.count("image:") == 2 and mount(ds2) in chain
    for i in (0, 1):
        sh("qemu-io", "-f", "vmdk", "-c", "write -P 0x22 0 64k", live(i))
    WaitForTask(vm.CreateSnapshot_Task(name="two", memory=False, quiesce=False))
    s2 = vm.snapshot.currentSnapshot
    for i in (0, 1):
        sh("qemu-io", "-f", "vmdk", "-c", "write -P 0x33 0 64k", live(i))
    roots = vm.snapshot.rootSnapshotList
    assert [r.name for r in roots] == ["one"] and [c.name for c in roots[0].childSnapshotList] == ["two"]
    assert "snapshot.numSnapshots = \"2\"" in open(f"{vmdir}/db.vmsd").read()

    WaitForTask(s1.RevertToSnapshot_Task())
    assert vm.snapshot.currentSnapshot == s1
    for i in (0, 1):
        sh("qemu-io", "-r", "-f", "vmdk", "-c", "read -P 0x11 0 64k", live(i))
    WaitForTask(s2.RemoveSnapshot_Task(removeChildren=False))
    WaitForTask(s1.RemoveSnapshot_Task(removeChildren=False))
    assert vm.snapshot is None
    assert vmx_disks(f"{vmdir}/db.vmx") == ["db.vmdk", f"{mount(ds2)}/db/db_1.vmdk"], "consolidated back to the base disks"
    for i in (0, 1):
        sh("qemu-io", "-r", "-f", "vmdk", "-c", "read -P 0x11 0 64k", live(i))
        sh("qemu-img", "check", live(i))
    assert not [f for f in os.listdir(vmdir) if "-0000" in f], os.listdir(vmdir)
    # Destroying a VM with a snapshot removes its disks on both datastores.
    WaitForTask(vm.CreateSnapshot_Task(name="last", memory=False, quiesce=False))
    WaitForTask(vm.Destroy_Task())
    assert not os.path.exists(vmdir) and not os.path.exists(f"{mount(ds2)}/db/db_1.vmdk")


def test_remove_a_middle_snapshot_consolidates(server, si):
    content = si.RetrieveContent()
    ds1, ds2 = sorted(content.rootFolder.childEntity[0].datastore, key=lambda d: d.name)
    vm = new_vm(content, "app", ds1, ds2)
    vmdir = f"{mount(ds1)}/app"
    def live(i):
        f = vmx_disks(f"{vmdir}/app.vmx")[i]
        return f if f.startswith("/") else f"{vmdir}/{f}"
    sh("qemu-io", "-f", "vmdk", "-c", "write -P 0x11 0 64k", live(1))
    WaitForTask(vm.CreateSnapshot_Task(name="a", memory=False, quiesce=False))
    a = vm.snapshot.currentSnapshot
    sh("qemu-io", "-f", "vmdk", "-c", "write -P 0x22 64k 64k", live(1))
    WaitForTask(vm.CreateSnapshot_Task(name="b", memory=False, quiesce=False))
    b = vm.snapshot.currentSnapshot
    sh("qemu-io", "-f", "vmdk", "-c", "write -P 0x33 128k 64k", live(1))
    WaitForTask(a.RemoveSnapshot_Task(removeChildren=False))
    assert [r.name for r in vm.snapshot.rootSnapshotList] == ["b"]
    sh("qemu-img", "check", live(1))
    sh("qemu-io", "-r", "-f", "vmdk", "-c", "read -P 0x11 0 64k", "-c", "read -P 0x22 64k 64k", "-c", "read -P 0x33 128k 64k", live(1))
    WaitForTask(b.RevertToSnapshot_Task())
    sh("qemu-io", "-r", "-f", "vmdk", "-c", "read -P 0x22 64k 64k", "-c", "read -P 0 128k 64k", live(1))
    WaitForTask(vm.RemoveAllSnapshots_Task())
    assert vm.snapshot is None
    sh("qemu-io", "-r", "-f", "vmdk", "-c", "read -P 0x11 0 64k", "-c", "read -P 0x22 64k 64k", live(1))


def test_full_story_create_snapshot_remount_update_register(server, si):
    """The issue's story: VMs with disks and snapshots across two
    datastores, unregistered, both datastores remounted, both updated, the
    VM registered again, qemu-img following the rewritten chain."""
    content = si.RetrieveContent()
    ds1, ds2 = sorted(content.rootFolder.childEntity[0].datastore, key=lambda d: d.name)
    vm = new_vm(content, "story", ds1, ds2)
    WaitForTask(vm.CreateSnapshot_Task(name="s1", memory=False, quiesce=False))
    WaitForTask(vm.CreateSnapshot_Task(name="s2", memory=False, quiesce=False))
    old1, old2 = mount(ds1), mount(ds2)
    vm.UnregisterVM()
    new1, new2 = remount(server, ds1), remount(server, ds2)
    delta = f"{new1}/story/" + vmx_disks(f"{new1}/story/story.vmx")[1]
    assert subprocess.run(["qemu-img", "info", "--backing-chain", delta], capture_output=True).returncode != 0
    pairs = [vim.Datastore.MountPathDatastorePair(oldMountPath=old1, datastore=ds1),
             vim.Datastore.MountPathDatastorePair(oldMountPath=old2, datastore=ds2)]
    for ds in (ds1, ds2):
        t = ds.UpdateVirtualMachineFiles_Task(pairs)
        WaitForTask(t)
        assert not t.info.result.failedVmFile
    chain = sh("qemu-img", "info", "--backing-chain", delta)
    assert chain.count("image:") == 3 and new2 in chain and old2 not in chain
    assert old2 not in open(f"{new1}/story/story.vmsd").read()
    t = content.rootFolder.childEntity[0].vmFolder.RegisterVM_Task(path=f"[{ds1.name}] story/story.vmx", asTemplate=False)
    WaitForTask(t)
    vm = t.info.result
    assert [s.name for s in vm.snapshot.rootSnapshotList] == ["s1"]
    assert sorted(d.name for d in vm.datastore) == sorted([ds1.name, ds2.name])
    WaitForTask(vm.RemoveAllSnapshots_Task())
    sh("qemu-img", "check", f"{new2}/story/story_1.vmdk")
