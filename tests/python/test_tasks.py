"""pyvmomi, unmodified, driving an extension task over SOAP."""
import datetime

import pytest
from pyVim.connect import Disconnect, SmartConnect
from pyVmomi import vim, vmodl

from conftest import ADMIN, PW


@pytest.fixture
def si(server):
    si = SmartConnect(host=server.host, port=server.port, protocol="http", user=ADMIN, pwd=PW)
    yield si
    Disconnect(si)


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
