"""A data directory made by an earlier build opens with this one and keeps
its state: every task (vim25, vAPI, VCD), first-class disk (data, snapshots,
change tracking), CNS volume, VM, user and org reads back through pyvmomi,
the vAPI and VCD APIs exactly as the build that made it showed them, and
the directory goes on working (new disks, tasks and VCD tasks).

The fixtures under tests/fixtures/ were made by `datadir_fixture.py` with
the build their name gives (`git log` on them says which commit)."""
import difflib
import glob
import json
import os
import re
import shutil
import sqlite3
import tarfile

import pytest
import requests
from pyVim.connect import Disconnect
from pyVim.task import WaitForTask
from pyVmomi import vim

import datadir_fixture as fx

FIXTURES = sorted(glob.glob(os.path.join(os.path.dirname(__file__), "..", "fixtures", "datadir-*.tar.gz")))


def unpack(tarball, into, made_at):
    """The data directory, unpacked at the path it was made at: the paths of
    datastore mounts (and those a .vmx holds to disks on them) are absolute,
    as ESXi's /vmfs/volumes/<uuid>/... are, so a directory opens where it
    was made; what moves with it is the rest of this test's subject."""
    assert os.path.basename(made_at).startswith("vtwin-fixture-"), made_at
    shutil.rmtree(made_at, ignore_errors=True)
    with tarfile.open(tarball) as tar:
        tar.extractall(into, filter="tar")
    shutil.move(os.path.join(into, "datadir"), made_at)
    return made_at


# What the build that made e4d0207's fixture read from the clock (and wrote
# changeVersion as a Rust Debug string): since then they are the time the
# .vmx (for layoutEx, the newest file of the VM) last changed, which the
# tarball keeps only to a tenth of a microsecond. They are checked by what
# they mean instead: unchanged from one start to the next, and changeVersion
# is `modified` as vCenter writes it.
CLOCK = (("config", "modified"), ("config", "changeVersion"), ("layoutEx", "timestamp"))


def without_clock(vms):
    vms = json.loads(json.dumps(vms))
    for vm in vms.values():
        for obj, field in CLOCK:
            if vm.get(obj):
                vm[obj][field] = "(clock)"
    return vms


def same(got, want, what):
    if what.startswith("vms"):
        got, want = without_clock(got), without_clock(want)
    if got != want:
        a = json.dumps(want, indent=1, sort_keys=True).splitlines()
        b = json.dumps(got, indent=1, sort_keys=True).splitlines()
        diff = "\n".join(list(difflib.unified_diff(a, b, "made", "opened", lineterm=""))[:80])
        pytest.fail(f"{what} differs after the upgrade:\n{diff}")


@pytest.mark.parametrize("tarball", FIXTURES, ids=[os.path.basename(f)[:-7] for f in FIXTURES])
def test_an_earlier_data_directory_opens_and_keeps_its_state(tarball, tmp_path, monkeypatch):
    # The fixtures are data directories with their embedded store (SQLite,
    # the default), also in the suite's PostgreSQL pass.
    monkeypatch.delenv("VTWIN_DATABASE", raising=False)
    with open(tarball[:-7] + ".json") as f:
        made = json.load(f)
    d = unpack(tarball, str(tmp_path), made["made_at"])
    try:
        check_upgrade(d, made)
    finally:
        shutil.rmtree(d, ignore_errors=True)


def check_upgrade(d, made):
    s = fx.start(d)
    try:
        si = s.connect()
        got = fx.read_state(s, si, made["ids"])
        for part in sorted(made["state"]):
            same(got.get(part), made["state"][part], part)

        # It goes on: a new disk, a new snapshot of an old one, new task keys
        # after the old ones, a new VCD task in the old org.
        content = si.RetrieveContent()
        ds1, _ = fx.datastores(si)
        vsom = content.vStorageObjectManager
        old_disk = vim.vslm.ID(id=made["ids"]["disks"][0][0])
        t = vsom.VStorageObjectCreateSnapshot_Task(old_disk, ds1, "after the upgrade")
        WaitForTask(t)
        last_old = max(int(k.split("-")[1]) for k in made["ids"]["tasks"] + [v.split(":")[0] for v in
                                                                         made["ids"]["vapi_tasks"]])
        assert int(t._moId.split("-")[1]) > last_old, t._moId
        snaps = vsom.RetrieveSnapshotInfo(old_disk, ds1).snapshots
        assert [x.description for x in snaps][-1] == "after the upgrade"
        spec = vim.vslm.CreateSpec(name="new-one", capacityInMB=4,
                                   backingSpec=vim.vslm.CreateSpec.DiskFileBackingSpec(datastore=ds1))
        t = vsom.CreateDisk_Task(spec)
        WaitForTask(t)
        assert t.info.result.config.name == "new-one"
        # The CNS volume's state is written again (the same metadata), now
        # in this build's form, which the second start must read.
        cvm = fx.cns_manager(s, si)
        (vol,) = [v for v in cvm.Query(vim.cns.QueryFilter()).volumes if v.name == "pv-data"]
        WaitForTask(cvm.UpdateVolumeMetadata([vim.cns.VolumeMetadataUpdateSpec(volumeId=vol.volumeId,
                                                                                metadata=vol.metadata)]))
        (meta,) = glob.glob(os.path.join(d, "vmfs", "volumes", "*", "fcd", vol.volumeId.id, "vtwin-disk.json"))
        with open(meta) as f:
            assert "_typeName" not in json.dumps(json.load(f)["extra"]["cns"]), "the CNS state was not rewritten"
        # The registered extension, written again in this build's form.
        em = content.extensionManager
        ext = em.FindExtension("com.example.backup")
        assert ext is not None and [t.taskID for t in ext.taskList] == ["com.example.backup.run"], ext
        em.UpdateExtension(ext)
        with sqlite3.connect(os.path.join(d, "vtwin.db")) as db:
            (rec,) = db.execute("SELECT record FROM extensions WHERE key = 'com.example.backup'").fetchone()
        assert "_typeName" not in rec, "the extension was not rewritten"
        token = fx.vcd_login(s, "acme", fx.TENANT, fx.TENANT_PW)
        r = fx.vcd_task(s, token, fx.org_of(s, token), "success", 100)
        assert r.status_code in (200, 201), r.text
        r = requests.get(s.vcd_url + "/api/query", params={"type": "task", "format": "records"},
                         headers={"Accept": "application/*+xml;version=36.0", "x-vcloud-authorization": token})
        assert r.status_code == 200 and r.text.count("<TaskRecord") == len(made["ids"]["vcd_tasks"]) + 1, r.text
        Disconnect(si)
    finally:
        s.stop()

    # And once more, from what this build wrote.
    s = fx.start(d)
    try:
        si = s.connect()
        again = fx.read_state(s, si, made["ids"])
        again_ext = si.RetrieveContent().extensionManager.FindExtension("com.example.backup")
        Disconnect(si)
    finally:
        s.stop()
    for part in ("tasks", "vapi_tasks", "vcd_tasks", "cns", "vms"):
        same(again[part], made["state"][part], f"{part} (second start)")
    assert fx.encode(again_ext) == fx.encode(ext)
    for name, vm in again["vms"].items():
        first = got["vms"][name]
        for obj, field in CLOCK:
            assert vm[obj][field] == first[obj][field], (name, obj, field)
        c = vm["config"]
        assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z", c["changeVersion"]), c["changeVersion"]
        assert c["modified"].startswith(c["changeVersion"][:-1]), (c["modified"], c["changeVersion"])
