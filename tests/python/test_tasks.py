"""pyvmomi, unmodified, driving an extension task over SOAP."""
import datetime

import pytest
from pyVmomi import vim, vmodl

from conftest import ADMIN, PW



def register(content):
    ext = vim.Extension(key="com.example.py", version="1.0",
                        description=vim.Description(label="py", summary="py"),
                        lastHeartbeatTime=datetime.datetime.now(datetime.timezone.utc),
                        taskList=[vim.Extension.TaskTypeInfo(taskID="com.example.py.job")])
    content.extensionManager.RegisterExtension(ext)
    assert content.extensionManager.FindExtension("com.example.py").taskList[0].taskID == "com.example.py.job"


def test_extension_task_success_and_error(si):
    content = si.RetrieveContent()
    register(content)
    dc = content.rootFolder.childEntity[0]
    info = content.taskManager.CreateTask(obj=dc, taskTypeId="com.example.py.job", cancelable=True)
    assert info.state == "queued" and info.entityName == "DC0" and info.entity == dc
    task = info.task
    task.SetTaskState(state="running")
    task.UpdateProgress(35)
    assert task.info.progress == 35 and task.info.state == "running"
    task.SetTaskState(state="success", result="all done")
    assert task.info.state == "success" and task.info.result == "all done"
    with pytest.raises(vim.fault.InvalidState):
        task.SetTaskState(state="running")
    assert task in content.taskManager.recentTask

    # A failed task's error comes back typed through LocalizedMethodFault.
    t2 = content.taskManager.CreateTask(obj=dc, taskTypeId="com.example.py.job", cancelable=False).task
    t2.SetTaskState(state="error", fault=vim.fault.NotFound(msg="snapshot gone"))
    err = t2.info.error
    assert isinstance(err, vim.fault.NotFound)
    with pytest.raises(vmodl.fault.NotSupported):
        t2.CancelTask()


def test_cancel_is_final(si):
    content = si.RetrieveContent()
    register(content)
    task = content.taskManager.CreateTask(obj=content.rootFolder, taskTypeId="com.example.py.job", cancelable=True).task
    task.SetTaskState(state="running")
    task.CancelTask()
    info = task.info
    assert info.state == "error" and info.cancelled
    assert isinstance(info.error, vmodl.fault.RequestCanceled)
    with pytest.raises(vim.fault.InvalidState):
        task.SetTaskState(state="success")


def test_wait_for_task_wakes_on_set_task_state(si):
    """pyvmomi's WaitForTask: CreateFilter + legacy WaitForUpdates."""
    import threading
    import time

    from pyVim.task import WaitForTask

    content = si.RetrieveContent()
    register(content)
    task = content.taskManager.CreateTask(obj=content.rootFolder, taskTypeId="com.example.py.job", cancelable=False).task

    def owner():
        time.sleep(0.3)
        task.SetTaskState(state="running")
        task.UpdateProgress(50)
        time.sleep(0.3)
        task.SetTaskState(state="success", result="ok")

    t = threading.Thread(target=owner)
    t.start()
    assert WaitForTask(task, si=si) == "success"
    t.join()
    assert task.info.result == "ok"

    failed = content.taskManager.CreateTask(obj=content.rootFolder, taskTypeId="com.example.py.job", cancelable=False).task
    threading.Timer(0.2, lambda: failed.SetTaskState(state="error", fault=vim.fault.NotFound(msg="gone"))).start()
    with pytest.raises(vim.fault.NotFound):
        WaitForTask(failed, si=si)


def test_wait_for_task_failed_by_test_control(server, si):
    """A Rename_Task the test-control surface fails after it started."""
    import requests
    from pyVim.task import WaitForTask

    base = f"http://{server.host}:{server.port}"
    rule = {"method": "Rename_Task", "mode": "task", "delay_ms": 300, "count": 1,
            "fault": {"_typeName": "InvalidName", "name": "bad"}, "message": "injected"}
    r = requests.post(f"{base}/admin/faults", json=rule, auth=(ADMIN, PW))
    assert r.status_code == 201, r.text
    dc = si.RetrieveContent().rootFolder.childEntity[0]
    task = dc.Rename_Task(newName="Lyon")
    with pytest.raises(vim.fault.InvalidName) as e:
        WaitForTask(task, si=si)
    assert e.value.name == "bad"
    assert dc.name == "DC0"
    # The rule is spent: the next rename runs for real.
    assert WaitForTask(dc.Rename_Task(newName="Lyon"), si=si) == "success"
    assert dc.name == "Lyon"


def test_task_history_collector_and_events(si):
    content = si.RetrieveContent()
    register(content)
    dc = content.rootFolder.childEntity[0]
    tm = content.taskManager
    keys = []
    for i in range(5):
        t = tm.CreateTask(obj=dc, taskTypeId="com.example.py.job", cancelable=False).task
        t.SetTaskState(state="running")
        t.SetTaskState(state="success" if i % 2 == 0 else "error",
                       fault=None if i % 2 == 0 else vim.fault.NotFound(msg="x"))
        keys.append(t.info.key)
    other = tm.CreateTask(obj=content.rootFolder, taskTypeId="com.example.py.job", cancelable=False).task

    spec = vim.TaskFilterSpec(entity=vim.TaskFilterSpec.ByEntity(entity=dc, recursion="self"))
    c = tm.CreateCollectorForTasks(spec)
    c.SetCollectorPageSize(3)
    assert [i.key for i in c.latestPage] == keys[::-1][:3]
    # The cursor starts at the oldest: read forward in pages, then back.
    c.RewindCollector()
    assert [i.key for i in c.ReadNextTasks(2)] == keys[:2]
    assert [i.key for i in c.ReadNextTasks(10)] == keys[2:]
    assert not c.ReadNextTasks(10)
    assert [i.key for i in c.ReadPreviousTasks(2)] == [keys[4], keys[3]]
    c.ResetCollector()
    assert [i.key for i in c.ReadPreviousTasks(10)] == [keys[1], keys[0]]
    c.DestroyCollector()

    failed = tm.CreateCollectorForTasks(vim.TaskFilterSpec(
        entity=vim.TaskFilterSpec.ByEntity(entity=content.rootFolder, recursion="all"), state=["error"]))
    failed.RewindCollector()
    assert [i.key for i in failed.ReadNextTasks(10)] == [keys[1], keys[3]]
    queued = tm.CreateCollectorForTasks(vim.TaskFilterSpec(state=["queued"]))
    assert [i.key for i in queued.latestPage] == [other.info.key]

    em = content.eventManager
    chain = other.info.eventChainId
    events = em.QueryEvents(vim.event.EventFilterSpec(eventChainId=chain))
    assert len(events) == 1 and isinstance(events[0], vim.event.TaskEvent)
    assert events[0].info.key == other.info.key and events[0].info.state == "queued"
    on_dc = em.QueryEvents(vim.event.EventFilterSpec(
        entity=vim.event.EventFilterSpec.ByEntity(entity=dc, recursion="self")))
    assert [e.info.key for e in on_dc] == keys[::-1]
    assert all(e.datacenter.datacenter == dc for e in on_dc)
    ec = em.CreateCollectorForEvents(vim.event.EventFilterSpec(type=[vim.event.TaskEvent]))
    ec.RewindCollector()
    assert len(ec.ReadNextEvents(100)) == 6
    assert em.latestEvent.info.key == other.info.key
