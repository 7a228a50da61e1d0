"""Two nodes on one PostgreSQL database and one data directory, with real
clients: a task started on node A is waited on and cancelled from node B;
then A is killed (SIGKILL) while it holds 1,000 running tasks, engine tasks
queued and running, and NBD writers; B ends A's tasks within A's lease, and
B and a restarted A find every acknowledged write on disk and in change
tracking, with `qemu-img check` clean."""
import datetime
import os
import random
import subprocess
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor

import pytest
import requests
from pyVim.connect import Disconnect
from pyVim.task import WaitForTask
from pyVmomi import vim, vmodl

from conftest import ADMIN, PW, Server
from test_fcd import ds_file
from test_nbd import CAP, Fcd

LEASE = 1.5
SLOT = 64 * 1024


def database():
    url = os.environ.get("VTWIN_TEST_POSTGRES")
    if not url:
        # scripts/test.sh starts one and sets VTWIN_REQUIRE_POSTGRES: there
        # a missing database fails instead.
        assert not os.environ.get("VTWIN_REQUIRE_POSTGRES"), "VTWIN_TEST_POSTGRES must name a PostgreSQL database"
        pytest.skip("VTWIN_TEST_POSTGRES names no PostgreSQL database (scripts/test.sh starts one)")
    return url + ("&" if "?" in url else "?") + "schema=n_" + uuid.uuid4().hex


def node(data_dir, db, name):
    db_args = ["--database", db] if db else []
    return Server(data_dir, extra=db_args + ["--node-name", name, "--node-lease", str(LEASE), "--datastores", "2"])


def connect(s):
    return s.connect()


def register(si, key):
    em = si.RetrieveContent().extensionManager
    em.RegisterExtension(vim.Extension(key=key, version="1", description=vim.Description(label=key, summary=key),
                                       lastHeartbeatTime=datetime.datetime.now(datetime.timezone.utc),
                                       taskList=[vim.Extension.TaskTypeInfo(taskID=f"{key}.run")]))


def wait_in_thread(task):
    """WaitForTask (a property-collector wait) on its own thread."""
    out = {}

    def run():
        try:
            WaitForTask(task)
            out["result"] = task.info.result
        except Exception as e:  # the task's fault
            out["fault"] = e
    t = threading.Thread(target=run, daemon=True)
    t.start()
    return t, out


def test_a_task_started_on_one_node_is_waited_on_and_cancelled_from_another(data_dir):
    db = database()
    a = node(data_dir, db, "a")
    b = node(data_dir, db, "b")
    try:
        sa, sb = connect(a), connect(b)
        register(sa, "com.vtwin.nodes")
        tm = sa.RetrieveContent().taskManager
        root = sa.RetrieveContent().rootFolder
        # Waited on from B, driven on A.
        info = tm.CreateTask(obj=root, taskTypeId="com.vtwin.nodes.run", cancelable=True)
        on_a, on_b = vim.Task(info.key, sa._stub), vim.Task(info.key, sb._stub)
        assert on_b.info.state == "queued"
        th, out = wait_in_thread(on_b)
        on_a.SetTaskState("running")
        on_a.UpdateProgress(40)
        time.sleep(0.3)
        assert th.is_alive(), "the waiter on B waits while the task runs on A"
        assert on_b.info.progress == 40
        on_a.SetTaskState("success", result="done on A")
        th.join(30)
        assert not th.is_alive() and out.get("result") == "done on A", out

        # Cancelled from B while A's client waits.
        info = tm.CreateTask(obj=root, taskTypeId="com.vtwin.nodes.run", cancelable=True)
        on_a, on_b = vim.Task(info.key, sa._stub), vim.Task(info.key, sb._stub)
        on_a.SetTaskState("running")
        th, out = wait_in_thread(on_a)
        time.sleep(0.3)
        on_b.CancelTask()
        th.join(30)
        assert not th.is_alive() and isinstance(out.get("fault"), vmodl.fault.RequestCanceled), out
        assert on_a.info.cancelled and on_a.info.state == "error"
        try:
            on_a.SetTaskState("success")
            raise AssertionError("a cancelled task took a new state")
        except vim.fault.InvalidState:
            pass
        # One disk used from both nodes in turn: each sees the other's
        # writes (a node whose copy of the disk is stale reads it again).
        fcd = Fcd(a, sa)
        cid = fcd.change_id(fcd.snapshot("base"))
        fcd_b = Fcd.__new__(Fcd)
        fcd_b.server, fcd_b.si, fcd_b.id, fcd_b.ds = b, sb, fcd.id, vim.Datastore(fcd.ds._moId, sb._stub)
        fcd_b.vsom = sb.RetrieveContent().vStorageObjectManager
        for i in range(3):
            w, r = (fcd, fcd_b) if i % 2 == 0 else (fcd_b, fcd)
            subprocess.run(["qemu-io", "-f", "raw", "-c", f"write -P {0x30 + i} {i * SLOT} {SLOT}", w.ticket(write=True)], check=True, capture_output=True)
            cmds = []
            for j in range(i + 1):
                cmds += ["-c", f"read -P {0x30 + j} {j * SLOT} {SLOT}"]
            out = subprocess.run(["qemu-io", "-r", "-f", "raw", *cmds, r.ticket()], capture_output=True, text=True)
            assert out.returncode == 0 and "verification failed" not in out.stdout, out.stdout
        snap = fcd_b.snapshot("after")
        areas = fcd_b.changed(snap, cid)
        assert all(any(st <= j * SLOT and (j + 1) * SLOT <= st + ln for st, ln in areas) for j in range(3)), areas
        # Each node names tasks from its own block: no key is handed out twice.
        keys = {tm.CreateTask(obj=root, taskTypeId="com.vtwin.nodes.run", cancelable=False).key for _ in range(20)}
        tmb = sb.RetrieveContent().taskManager
        keys |= {tmb.CreateTask(obj=root, taskTypeId="com.vtwin.nodes.run", cancelable=False).key for _ in range(20)}
        assert len(keys) == 40
        Disconnect(sa)
        Disconnect(sb)
    finally:
        a.stop()
        b.stop()


def vapi_session(s):
    r = requests.post(f"http://{s.host}:{s.port}/rest/com/vmware/cis/session", auth=(ADMIN, PW))
    assert r.status_code == 200, r.text
    return r.json()["value"]


def writer(fcd, uri, slots, acked, stop):
    """Write whole 64 KiB slots, each once with its own pattern, eight per
    qemu-io run; a run that exits 0 has had every write acknowledged."""
    rng = random.Random(hash(fcd.id.id))
    order = list(slots)
    rng.shuffle(order)
    while order and not stop.is_set():
        batch, order = order[:8], order[8:]
        cmds = []
        for s in batch:
            cmds += ["-c", f"write -P {s % 251 + 1} {s * SLOT} {SLOT}"]
        r = subprocess.run(["qemu-io", "-f", "raw", *cmds, uri], capture_output=True, text=True)
        if r.returncode != 0:
            break
        acked.extend(batch)


def check_node(s, disks, acked, change_ids, db_keys, engine_keys):
    """Every invariant, seen from node `s`."""
    si = connect(s)
    try:
        # No task of the dead node is left running: each ended in error.
        for key in db_keys + engine_keys:
            info = vim.Task(key, si._stub).info
            assert info.state == "error", (key, info.state)
            assert isinstance(info.error, vmodl.fault.SystemError) and "stopped while the task was" in info.error.msg, info.error
        vsom = si.RetrieveContent().vStorageObjectManager
        for fcd in disks:
            ds = vim.Datastore(fcd.ds._moId, si._stub)
            # Change tracking reports every acknowledged write.
            t = vsom.VStorageObjectCreateSnapshot_Task(fcd.id, ds, "after")
            WaitForTask(t)
            snap = t.info.result
            areas, start = [], 0
            while start < CAP:
                info = vsom.VstorageObjectVCenterQueryChangedDiskAreas(fcd.id, ds, snap, start, change_ids[fcd.id.id])
                areas += [(x.start, x.length) for x in info.changedArea or []]
                start = info.startOffset + info.length
            for slot in acked[fcd.id.id]:
                off = slot * SLOT
                assert any(st <= off and off + SLOT <= st + ln for st, ln in areas), (slot, areas[:5])
            # The data of every acknowledged write is there, read over NBD.
            r = requests.post(f"http://{s.host}:{s.port}/api/vtwin/nbd-tickets", json={"disk": fcd.id.id, "datastore": fcd.ds._moId},
                              headers={"vmware-api-session-id": si._stub.cookie.split('"')[1]})
            assert r.status_code == 201, r.text
            cmds = []
            for slot in acked[fcd.id.id]:
                cmds += ["-c", f"read -P {slot % 251 + 1} {slot * SLOT} {SLOT}"]
            out = subprocess.run(["qemu-io", "-r", "-f", "raw", *cmds, r.json()["uri"]], capture_output=True, text=True)
            assert out.returncode == 0 and "verification failed" not in out.stdout + out.stderr, out.stdout[-2000:] + out.stderr
            # And the files are sound.
            top = ds_file(s, fcd.ds, vsom.RetrieveVStorageObject(fcd.id, ds).config.backing.filePath)
            chk = subprocess.run(["qemu-img", "check", top], capture_output=True, text=True)
            assert chk.returncode == 0, chk.stdout + chk.stderr
    finally:
        Disconnect(si)


@pytest.mark.parametrize("backend", ["postgres, two nodes", "sqlite, one node"])
def test_kill_9_of_a_node_with_1000_running_tasks_and_nbd_writers(data_dir, backend):
    """The same guarantees on both backends: on SQLite there is no other
    node, and the restarted one is checked."""
    db = database() if backend.startswith("postgres") else None
    a = node(data_dir, db, "a")
    b = node(data_dir, db, "b") if db else None
    a2 = None
    try:
        sa = connect(a)
        register(sa, "com.vtwin.kill")
        # Engine tasks: renames delayed by a test-control rule, one running
        # and two queued behind it on each of two folders.
        r = requests.post(f"http://{a.host}:{a.port}/admin/faults", auth=(ADMIN, PW), json={"method": "Rename_Task", "delay_ms": 600000})
        assert r.status_code in (200, 201), r.text
        content = sa.RetrieveContent()
        dc = content.rootFolder.childEntity[0]
        engine_keys = [f.Rename(f"renamed-{i}")._moId for f in (dc.vmFolder, dc.hostFolder) for i in range(3)]
        # Two disks with a change-tracking baseline, written over NBD on A.
        disks = [Fcd(a, sa), Fcd(a, sa)]
        change_ids = {f.id.id: f.change_id(f.snapshot("before")) for f in disks}
        uris = [f.ticket(write=True) for f in disks]
        # 1,000 tasks held running on A by clients (vAPI extension tasks).
        sid = vapi_session(a)

        def make(i):
            r = requests.post(f"http://{a.host}:{a.port}/rest/vcenter/extension/tasks", headers={"vmware-api-session-id": sid},
                              json={"spec": {"operation_id": "com.vtwin.kill.run", "cancelable": False, "status": "RUNNING"}})
            assert r.status_code == 200, r.text
            return r.json()["value"].split(":")[0]  # vAPI ids are key:service-uuid
        acked = {f.id.id: [] for f in disks}
        stop = threading.Event()
        writers = [threading.Thread(target=writer, args=(f, u, range(CAP // SLOT), acked[f.id.id], stop), daemon=True) for f, u in zip(disks, uris)]
        for w in writers:
            w.start()
        with ThreadPoolExecutor(8) as pool:
            db_keys = list(pool.map(make, range(1000)))
        assert len(set(db_keys)) == 1000
        sb = connect(b or a)
        assert vim.Task(db_keys[-1], sb._stub).info.state == "running"
        assert vim.Task(engine_keys[0], sb._stub).info.state == "running"
        assert vim.Task(engine_keys[1], sb._stub).info.state == "queued"
        Disconnect(sb)
        # Writers are mid-flight: kill A.
        while min(len(v) for v in acked.values()) < 16:
            time.sleep(0.05)
        a.proc.kill()
        a.proc.wait()
        stop.set()
        for w in writers:
            w.join(60)
        assert all(len(v) >= 16 for v in acked.values())
        if b:
            # B ends A's tasks once A's lease has run out (lease + a third, with room).
            sb = connect(b)
            deadline = time.monotonic() + LEASE * 2 + 20
            while vim.Task(db_keys[-1], sb._stub).info.state == "running":
                assert time.monotonic() < deadline, "A's tasks still running on B after its lease"
                time.sleep(0.1)
            Disconnect(sb)
            check_node(b, disks, acked, change_ids, db_keys, engine_keys)
        # A restarted (same name, same database, same data directory).
        a2 = node(data_dir, db, "a")
        check_node(a2, disks, acked, change_ids, db_keys, engine_keys)
    finally:
        for s in (a, b, a2):
            if s and s.proc.poll() is None:
                s.stop()


def test_a_stalled_node_loses_its_lease_and_its_tasks(data_dir):
    """SIGSTOP: the node's database session (and its lock) stays, but it
    stops renewing its lease; once the lease has run out the other node
    ends its tasks. Resumed, the node cannot undo that and serves on."""
    import signal
    db = database()
    a = node(data_dir, db, "a")
    b = node(data_dir, db, "b")
    try:
        sa, sb = connect(a), connect(b)
        register(sa, "com.vtwin.stall")
        root = sa.RetrieveContent().rootFolder
        tm = sa.RetrieveContent().taskManager
        keys = []
        for _ in range(5):
            info = tm.CreateTask(obj=root, taskTypeId="com.vtwin.stall.run", cancelable=False)
            vim.Task(info.key, sa._stub).SetTaskState("running")
            keys.append(info.key)
        a.proc.send_signal(signal.SIGSTOP)
        try:
            deadline = time.monotonic() + LEASE * 2 + 20
            while any(vim.Task(k, sb._stub).info.state == "running" for k in keys):
                assert time.monotonic() < deadline, "a stalled node's tasks still running after its lease"
                time.sleep(0.1)
            for k in keys:
                err = vim.Task(k, sb._stub).info.error
                assert isinstance(err, vmodl.fault.SystemError) and "stopped while the task was running" in err.msg, err
        finally:
            a.proc.send_signal(signal.SIGCONT)
        # The resumed node's client cannot finish them after all.
        try:
            vim.Task(keys[0], sa._stub).SetTaskState("success")
            raise AssertionError("a task ended by another node took a new state")
        except vim.fault.InvalidState:
            pass
        assert vim.Task(keys[1], sa._stub).info.state == "error"
        # And it serves on, holding a lease again: its new task stays running.
        info = tm.CreateTask(obj=root, taskTypeId="com.vtwin.stall.run", cancelable=False)
        vim.Task(info.key, sa._stub).SetTaskState("running")
        time.sleep(LEASE * 1.5)
        assert vim.Task(info.key, sb._stub).info.state == "running"
        Disconnect(sa)
        Disconnect(sb)
    finally:
        a.stop()
        b.stop()
