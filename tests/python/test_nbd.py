"""The backup round trip a backup product runs, with real tools only:
tickets from vtwin, `nbdcopy` for the full copy, `qemu-io` for writes over
NBD, QueryChangedDiskAreas (pyvmomi) for the incremental, `qemu-img convert`
of just the changed areas onto the copy, `qemu-img compare` at the end.
Repeated across a revert and a snapshot deletion."""
import random
import subprocess

import requests
from pyVim.connect import Disconnect
from pyVim.task import WaitForTask
from pyVmomi import vim


MB = 1 << 20
CAP = 64 * MB



def run(*args):
    r = subprocess.run(list(args), capture_output=True, text=True)
    assert r.returncode == 0, f"{args}: {r.stdout}{r.stderr}"
    return r.stdout


class Fcd:
    def __init__(self, server, si):
        self.server, self.si = server, si
        self.vsom = si.RetrieveContent().vStorageObjectManager
        self.ds = si.RetrieveContent().rootFolder.childEntity[0].datastore[0]
        spec = vim.vslm.CreateSpec(name="backup-me", capacityInMB=CAP // MB,
                                   backingSpec=vim.vslm.CreateSpec.DiskFileBackingSpec(datastore=self.ds))
        t = self.vsom.CreateDisk_Task(spec)
        WaitForTask(t)
        self.id = t.info.result.config.id

    def ticket(self, snapshot=None, write=False):
        body = {"disk": self.id.id, "datastore": self.ds._moId, "write": write}
        if snapshot:
            body["snapshot"] = snapshot.id
        r = requests.post(f"http://{self.server.host}:{self.server.port}/api/vtwin/nbd-tickets", json=body,
                          headers={"vmware-api-session-id": self.si._stub.cookie.split('"')[1]})
        assert r.status_code == 201, r.text
        return r.json()["uri"]

    def snapshot(self, desc):
        t = self.vsom.VStorageObjectCreateSnapshot_Task(self.id, self.ds, desc)
        WaitForTask(t)
        return t.info.result

    def change_id(self, snap):
        return self.vsom.RetrieveSnapshotDetails(self.id, self.ds, snap).changedBlockTrackingId

    def changed(self, snap, change_id):
        areas, start = [], 0
        while start < CAP:
            info = self.vsom.VstorageObjectVCenterQueryChangedDiskAreas(self.id, self.ds, snap, start, change_id)
            areas += [(a.start, a.length) for a in info.changedArea or []]
            start = info.startOffset + info.length
        return areas


def nbd_opts(uri, offset, length):
    hostport, name = uri[len("nbd://"):].split("/", 1)
    host, port = hostport.rsplit(":", 1)
    return (f"driver=raw,offset={offset},size={length},file.driver=nbd,file.server.type=inet,"
            f"file.server.host={host},file.server.port={port},file.export={name}")


def random_writes(uri, rng, n):
    cmds = []
    for _ in range(n):
        length = rng.choice([512, 4096, 65536, 300000])
        off = rng.randrange(0, CAP - length) // 512 * 512
        cmds += ["-c", f"write -P {rng.randrange(1, 255)} {off} {length}"]
    run("qemu-io", "-f", "raw", *cmds, uri)


def apply_incremental(fcd, snap, base_cid, target):
    areas = fcd.changed(snap, base_cid)
    uri = fcd.ticket(snapshot=snap)
    for off, length in areas:
        run("qemu-img", "convert", "-n", "--image-opts", nbd_opts(uri, off, length),
            "--target-image-opts", f"driver=raw,offset={off},size={length},file.driver=file,file.filename={target}")
    return areas, uri


def test_backup_round_trip(server, si, tmp_path):
    rng = random.Random(7)
    fcd = Fcd(server, si)
    live = fcd.ticket(write=True)
    random_writes(live, rng, 20)
    s1 = fcd.snapshot("base")
    full = str(tmp_path / "backup.raw")
    run("nbdcopy", fcd.ticket(snapshot=s1), full)
    # The allocated map over NBD agrees with the "*" query.
    assert "data" in run("nbdinfo", "--map", fcd.ticket(snapshot=s1))

    random_writes(live, rng, 25)
    s2 = fcd.snapshot("incr-1")
    areas, s2uri = apply_incremental(fcd, s2, fcd.change_id(s1), full)
    assert areas and sum(l for _, l in areas) < CAP // 2, "only the changed areas are copied"
    run("qemu-img", "compare", "-f", "raw", "-F", "raw", full, s2uri)

    # Revert to s1 (s2 goes), write, snapshot: the incremental from s1 still works.
    WaitForTask(fcd.vsom.RevertVStorageObject_Task(fcd.id, fcd.ds, s1))
    full1 = str(tmp_path / "backup1.raw")
    run("nbdcopy", fcd.ticket(snapshot=s1), full1)
    live = fcd.ticket(write=True)
    random_writes(live, rng, 15)
    s3 = fcd.snapshot("after-revert")
    _, s3uri = apply_incremental(fcd, s3, fcd.change_id(s1), full1)
    run("qemu-img", "compare", "-f", "raw", "-F", "raw", full1, s3uri)

    # Delete s1 (consolidate): s3's changes since s1's changeId are still known.
    s1_cid = fcd.change_id(s1)
    random_writes(live, rng, 10)
    WaitForTask(fcd.vsom.DeleteSnapshot_Task(fcd.id, fcd.ds, s1))
    s4 = fcd.snapshot("after-delete")
    full2 = str(tmp_path / "backup2.raw")
    run("nbdcopy", fcd.ticket(snapshot=s3), full2)
    _, s4uri = apply_incremental(fcd, s4, fcd.change_id(s3), full2)
    run("qemu-img", "compare", "-f", "raw", "-F", "raw", full2, s4uri)
    areas_since_s1 = fcd.changed(s4, s1_cid)
    assert areas_since_s1, "the deleted snapshot's changeId still works"


def test_tickets_are_checked(server, si):
    fcd = Fcd(server, si)
    base = f"http://{server.host}:{server.port}/api/vtwin/nbd-tickets"
    assert requests.post(base, json={"disk": fcd.id.id, "datastore": fcd.ds._moId}).status_code == 401
    s1 = fcd.snapshot("ro")
    sid = si._stub.cookie.split('"')[1]
    r = requests.post(base, json={"disk": fcd.id.id, "datastore": fcd.ds._moId, "snapshot": s1.id, "write": True},
                      headers={"vmware-api-session-id": sid})
    assert r.status_code == 400
    # A read-only export refuses writes; an unknown export name is refused at negotiation.
    ro = fcd.ticket(snapshot=s1)
    r = subprocess.run(["qemu-io", "-f", "raw", "-c", "write 0 4k", ro], capture_output=True, text=True)
    assert r.returncode != 0 or "failed" in r.stdout + r.stderr
    bad = ro.rsplit("/", 1)[0] + "/no-such-export"
    r = subprocess.run(["nbdinfo", bad], capture_output=True, text=True)
    assert r.returncode != 0
    # Reading a disk's data needs what reading its files over /folder does
    # (Datastore.Browse), writing needs Datastore.FileManagement: a ReadOnly
    # user gets neither.
    server.add_user("ro@vsphere.local", "Ro-Passw0rd!", "ReadOnly")
    s = requests.post(f"http://{server.host}:{server.port}/api/session", auth=("ro@vsphere.local", "Ro-Passw0rd!")).json()
    body = {"disk": fcd.id.id, "datastore": fcd.ds._moId}
    assert requests.post(base, json=dict(body, write=True), headers={"vmware-api-session-id": s}).status_code == 403
    assert requests.post(base, json=body, headers={"vmware-api-session-id": s}).status_code == 403
    out = run("nbdinfo", "--json", fcd.ticket())
    assert str(CAP) in out


def test_change_log_survives_kill_9(server, data_dir, tmp_path):
    """Writes acknowledged over NBD, then SIGKILL (no flush, no shutdown):
    after a restart every written block is still reported as changed."""
    from conftest import Server
    si = server.connect()
    fcd = Fcd(server, si)
    s1 = fcd.snapshot("before")
    cid = fcd.change_id(s1)
    live = fcd.ticket(write=True)
    rng = random.Random(11)
    written = []
    cmds = []
    for _ in range(30):
        off = rng.randrange(0, CAP - 65536) // 4096 * 4096
        written.append((off, 4096))
        cmds += ["-c", f"write -P 0x5c {off} 4096"]
    run("qemu-io", "-f", "raw", *cmds, live)
    Disconnect(si)
    server.proc.kill()  # SIGKILL
    server.proc.wait()
    s2 = Server(data_dir, extra=["--datastores", "2"])
    try:
        si2 = s2.connect()
        vsom = si2.RetrieveContent().vStorageObjectManager
        ds = si2.RetrieveContent().rootFolder.childEntity[0].datastore[0]
        t = vsom.VStorageObjectCreateSnapshot_Task(fcd.id, ds, "after")
        WaitForTask(t)
        areas = vsom.VstorageObjectVCenterQueryChangedDiskAreas(fcd.id, ds, t.info.result, 0, cid).changedArea
        for off, length in written:
            assert any(a.start <= off and off + length <= a.start + a.length for a in areas), (off, areas)
        Disconnect(si2)
    finally:
        s2.stop()
