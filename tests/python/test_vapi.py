"""VMware's vAPI runtime, unmodified: cis sessions and tasks over JSON-RPC,
and the extension-task create/update over /rest through a hand-written
interface definition (no shipped binding has com.vmware.vcenter.extension)."""
import datetime

import pytest
import requests
from com.vmware.cis_client import Session, Tasks
from com.vmware.vapi.std import errors_client as errors
from com.vmware.vapi.std_client import LocalizableMessage
from com.vmware.cis.task_client import Progress, Status
from pyVim.connect import Disconnect
from vmware.vapi.bindings import type
from vmware.vapi.bindings.stub import ApiInterfaceStub, VapiInterface
from vmware.vapi.bindings.struct import VapiStruct
from vmware.vapi.lib.connect import get_requests_connector
from vmware.vapi.lib.rest import OperationRestMetadata
from vmware.vapi.security.client.security_context_filter import LegacySecurityContextFilter
from vmware.vapi.security.session import create_session_security_context
from vmware.vapi.security.user_password import create_user_password_security_context
from vmware.vapi.stdlib.client.factories import StubConfigurationFactory

from conftest import ADMIN, PW


# --- The hand-written interface: com.vmware.vcenter.extension.tasks -------

class CreateSpec(VapiStruct):
    def __init__(self, operation_id=None, cancelable=None, description=None, status=None,
                 percent_done=None, error=None, result=None, start_time=None, end_time=None,
                 user=None, parent_task=None):
        self.operation_id = operation_id
        self.cancelable = cancelable
        self.description = description
        self.status = status
        self.percent_done = percent_done
        self.error = error
        self.result = result
        self.start_time = start_time
        self.end_time = end_time
        self.user = user
        self.parent_task = parent_task
        VapiStruct.__init__(self)


class UpdateSpec(VapiStruct):
    def __init__(self, percent_done=None, description=None, status=None, error=None,
                 result=None, start_time=None, end_time=None):
        self.percent_done = percent_done
        self.description = description
        self.status = status
        self.error = error
        self.result = result
        self.start_time = start_time
        self.end_time = end_time
        VapiStruct.__init__(self)


_common = {
    'percent_done': type.OptionalType(type.ReferenceType('com.vmware.cis.task_client', 'Progress')),
    'description': type.OptionalType(type.ReferenceType('com.vmware.vapi.std_client', 'LocalizableMessage')),
    'status': type.OptionalType(type.ReferenceType('com.vmware.cis.task_client', 'Status')),
    'error': type.OptionalType(type.AnyErrorType()),
    'result': type.OptionalType(type.OpaqueType()),
    'start_time': type.OptionalType(type.DateTimeType()),
    'end_time': type.OptionalType(type.DateTimeType()),
}
UpdateSpec._set_binding_type(type.StructType('com.vmware.vcenter.extension.tasks.update_spec', dict(_common), UpdateSpec, False, None))
CreateSpec._set_binding_type(type.StructType('com.vmware.vcenter.extension.tasks.create_spec', dict(
    _common,
    operation_id=type.IdType(resource_types='com.vmware.cis.task'),
    cancelable=type.BooleanType(),
    user=type.OptionalType(type.StringType()),
    parent_task=type.OptionalType(type.IdType()),
), CreateSpec, False, None))

_errors = {
    'com.vmware.vapi.std.errors.invalid_argument': type.ReferenceType('com.vmware.vapi.std.errors_client', 'InvalidArgument'),
    'com.vmware.vapi.std.errors.not_allowed_in_current_state': type.ReferenceType('com.vmware.vapi.std.errors_client', 'NotAllowedInCurrentState'),
    'com.vmware.vapi.std.errors.not_found': type.ReferenceType('com.vmware.vapi.std.errors_client', 'NotFound'),
    'com.vmware.vapi.std.errors.unauthenticated': type.ReferenceType('com.vmware.vapi.std.errors_client', 'Unauthenticated'),
}


def _rest(method, url, path_variables):
    return OperationRestMetadata(http_method=method, url_template=url, path_variables=path_variables,
                                 query_parameters={}, header_parameters={})


class _ExtensionTasksStub(ApiInterfaceStub):
    def __init__(self, config):
        operations = {
            'create': {
                'input_type': type.StructType('operation-input', {'spec': type.ReferenceType(__name__, 'CreateSpec')}),
                'output_type': type.IdType(resource_types='com.vmware.cis.task'),
                'errors': _errors, 'input_value_validator_list': [], 'output_validator_list': [],
                'task_type': None,
            },
            'update': {
                'input_type': type.StructType('operation-input', {
                    'task_id': type.IdType(resource_types='com.vmware.cis.task'),
                    'spec': type.ReferenceType(__name__, 'UpdateSpec'),
                }),
                'output_type': type.VoidType(),
                'errors': _errors, 'input_value_validator_list': [], 'output_validator_list': [],
                'task_type': None,
            },
        }
        rest_metadata = {
            'create': _rest('POST', '/vcenter/extension/tasks', {}),
            'update': _rest('PATCH', '/vcenter/extension/tasks/{task_id}', {'task_id': 'task_id'}),
        }
        ApiInterfaceStub.__init__(self, iface_name='com.vmware.vcenter.extension.tasks', config=config,
                                  operations=operations, rest_metadata=rest_metadata, is_vapi_rest=True)


class ExtensionTasks(VapiInterface):
    def __init__(self, config):
        VapiInterface.__init__(self, config, _ExtensionTasksStub)

    def create(self, spec):
        return self._invoke('create', {'spec': spec})

    def update(self, task_id, spec):
        return self._invoke('update', {'task_id': task_id, 'spec': spec})


# --- Fixtures ---------------------------------------------------------------

def jsonrpc_config(server, sec_ctx):
    conn = get_requests_connector(session=requests.Session(), msg_protocol='json',
                                  url=f"http://{server.host}:{server.port}/api",
                                  provider_filter_chain=[LegacySecurityContextFilter(security_context=sec_ctx)])
    return StubConfigurationFactory.new_std_configuration(conn)


def rest_config(server, session_id):
    conn = get_requests_connector(session=requests.Session(), msg_protocol='rest',
                                  url=f"http://{server.host}:{server.port}/rest",
                                  provider_filter_chain=[LegacySecurityContextFilter(
                                      security_context=create_session_security_context(session_id))])
    return StubConfigurationFactory.new_std_configuration(conn)


@pytest.fixture
def vapi(server):
    """(session id, cis Tasks over JSON-RPC, extension tasks over /rest)."""
    login = Session(jsonrpc_config(server, create_user_password_security_context(ADMIN, PW)))
    sid = login.create()
    cfg = jsonrpc_config(server, create_session_security_context(sid))
    return sid, Tasks(cfg), ExtensionTasks(rest_config(server, sid)), Session(cfg)


def msg(text):
    return LocalizableMessage(id="com.example.msg", default_message=text, args=[])


def progress(total, completed):
    return Progress(total=total, completed=completed, message=msg(f"{completed}/{total}"))


# --- Tests ------------------------------------------------------------------

def test_session_over_jsonrpc(server, vapi):
    sid, _, _, sess = vapi
    info = sess.get()
    assert info.user.lower().endswith("administrator")
    bad = Session(jsonrpc_config(server, create_user_password_security_context(ADMIN, "wrong")))
    with pytest.raises(errors.Unauthenticated):
        bad.create()
    # The vAPI session is a vim25 session too.
    r = requests.get(f"http://{server.host}:{server.port}/sdk/vim25/9.1.0.0/SessionManager/SessionManager/currentSession",
                     headers={"vmware-api-session-id": sid})
    assert r.status_code == 200 and r.json()["userName"].lower().endswith("administrator")
    sess.delete()
    with pytest.raises(errors.Unauthenticated):
        sess.get()


def test_extension_task_lifecycle_seen_by_cis_and_vim25(server, vapi):
    sid, tasks, ext, _ = vapi
    tid = ext.create(CreateSpec(operation_id="com.example.backup.run", cancelable=False, description=msg("nightly")))
    assert tid.startswith("task-") and ":" in tid
    info = tasks.get(tid)
    assert info.status == Status.PENDING and info.service == "com.example.backup" and info.operation == "run"
    assert info.description.default_message == "nightly" and info.start_time is None

    ext.update(tid, UpdateSpec(status=Status.RUNNING, percent_done=progress(100, 40)))
    info = tasks.get(tid)
    assert info.status == Status.RUNNING and info.progress.completed == 40 and info.start_time is not None

    # The same record through pyvmomi.
    si = server.connect()
    try:
        from pyVmomi import vim
        vt = vim.Task(tid.split(":")[0], si._stub)
        assert vt.info.state == "running" and vt.info.progress == 40
        ext.update(tid, UpdateSpec(status=Status.BLOCKED))
        assert tasks.get(tid).status == Status.BLOCKED and vt.info.state == "running"
        ext.update(tid, UpdateSpec(status=Status.RUNNING, percent_done=progress(100, 90)))
        ext.update(tid, UpdateSpec(status=Status.SUCCEEDED, result=None))
        assert vt.info.state == "success"
    finally:
        Disconnect(si)
    info = tasks.get(tid)
    assert info.status == Status.SUCCEEDED and info.end_time >= info.start_time
    listed = tasks.list(Tasks.FilterSpec(services={"com.example.backup"}, status={Status.SUCCEEDED}))
    assert tid in listed
    assert tasks.list(Tasks.FilterSpec(tasks={tid}, status={Status.FAILED})) == {}
    with pytest.raises(errors.InvalidArgument):
        tasks.list(Tasks.FilterSpec())


def test_every_update_rule(vapi):
    _, tasks, ext, _ = vapi
    tid = ext.create(CreateSpec(operation_id="com.example.rules.check", cancelable=True))
    # percent_done only while RUNNING.
    with pytest.raises(errors.NotAllowedInCurrentState):
        ext.update(tid, UpdateSpec(percent_done=progress(10, 1)))
    # start_time only for a task that has started; end_time only when done.
    with pytest.raises(errors.NotAllowedInCurrentState):
        ext.update(tid, UpdateSpec(start_time=datetime.datetime(2030, 1, 1)))
    with pytest.raises(errors.NotAllowedInCurrentState):
        ext.update(tid, UpdateSpec(status=Status.RUNNING, end_time=datetime.datetime(2030, 1, 1)))
    # start_time is kept as given.
    start = datetime.datetime(2026, 1, 2, 3, 4, 5)
    ext.update(tid, UpdateSpec(status=Status.RUNNING, start_time=start))
    assert tasks.get(tid).start_time == start
    ext.update(tid, UpdateSpec(percent_done=progress(10, 5)))
    # completed never below 0, never above total, never shrinking.
    for bad in (progress(10, -1), progress(10, 11), progress(10, 4)):
        with pytest.raises(errors.InvalidArgument):
            ext.update(tid, UpdateSpec(percent_done=bad))
    assert tasks.get(tid).progress.completed == 5
    ext.update(tid, UpdateSpec(percent_done=progress(10, 10)))
    # A running task cannot go back to PENDING.
    with pytest.raises(errors.NotAllowedInCurrentState):
        ext.update(tid, UpdateSpec(status=Status.PENDING))
    # FAILED needs an error.
    with pytest.raises(errors.InvalidArgument):
        ext.update(tid, UpdateSpec(status=Status.FAILED))
    ext.update(tid, UpdateSpec(status=Status.FAILED,
                               error=errors.NotFound(messages=[msg("the disk went away")])))
    info = tasks.get(tid)
    assert info.status == Status.FAILED and isinstance(info.error, errors.NotFound)
    assert info.error.messages[0].default_message == "the disk went away"
    # Nothing changes after FAILED, and a finished task cannot be cancelled.
    for spec in (UpdateSpec(status=Status.RUNNING), UpdateSpec(description=msg("late")),
                 UpdateSpec(status=Status.SUCCEEDED)):
        with pytest.raises(errors.NotAllowedInCurrentState):
            ext.update(tid, spec)
    with pytest.raises(errors.NotAllowedInCurrentState):
        tasks.cancel(tid)
    assert tasks.get(tid).status == Status.FAILED


def test_create_rules_and_end_time_default(vapi):
    _, tasks, ext, _ = vapi
    # Created straight into SUCCEEDED: start and end default to now.
    tid = ext.create(CreateSpec(operation_id="com.example.quick.run", cancelable=False, status=Status.SUCCEEDED))
    info = tasks.get(tid)
    assert info.status == Status.SUCCEEDED and info.start_time and info.end_time
    with pytest.raises(errors.InvalidArgument):
        ext.create(CreateSpec(operation_id="com.example.quick.run", cancelable=False, status=Status.FAILED))
    with pytest.raises(errors.NotAllowedInCurrentState):
        ext.create(CreateSpec(operation_id="com.example.quick.run", cancelable=False,
                              start_time=datetime.datetime(2030, 1, 1)))
    with pytest.raises(errors.NotFound):
        ext.update("task-99999:x", UpdateSpec(status=Status.RUNNING))


def test_cancel_over_jsonrpc(vapi):
    _, tasks, ext, _ = vapi
    fixed = ext.create(CreateSpec(operation_id="com.example.fixed.run", cancelable=False))
    with pytest.raises(errors.Unsupported):
        tasks.cancel(fixed)
    tid = ext.create(CreateSpec(operation_id="com.example.cancel.run", cancelable=True))
    ext.update(tid, UpdateSpec(status=Status.RUNNING))
    tasks.cancel(tid)
    info = tasks.get(tid)
    assert info.status == Status.FAILED and isinstance(info.error, errors.Canceled)
    # Cancelled is final: the owner's later success is refused.
    with pytest.raises(errors.NotAllowedInCurrentState):
        ext.update(tid, UpdateSpec(status=Status.SUCCEEDED))
    with pytest.raises(errors.NotFound):
        tasks.get("task-424242:none")


def test_raw_rest_forms(server, vapi):
    sid, _, ext, _ = vapi
    base = f"http://{server.host}:{server.port}"
    h = {"vmware-api-session-id": sid}
    tid = ext.create(CreateSpec(operation_id="com.example.raw.run", cancelable=True))
    r = requests.get(f"{base}/rest/cis/tasks/{tid}", headers=h)
    assert r.status_code == 200 and r.json()["value"]["status"] == "PENDING"
    r = requests.get(f"{base}/api/cis/tasks/{tid}", headers=h)
    assert r.status_code == 200 and r.json()["status"] == "PENDING"
    r = requests.get(f"{base}/rest/cis/tasks", params={"filter_spec.tasks": tid}, headers=h)
    assert r.json()["value"][0]["key"] == tid
    r = requests.get(f"{base}/api/cis/tasks", params={"tasks": tid}, headers=h)
    assert list(r.json()) == [tid]
    r = requests.patch(f"{base}/rest/vcenter/extension/tasks/{tid}", headers=h, json={"spec": {"status": "DONE"}})
    assert r.status_code == 400 and r.json()["type"] == "com.vmware.vapi.std.errors.invalid_argument"
    r = requests.patch(f"{base}/rest/vcenter/extension/tasks/{tid}", headers=h,
                       json={"spec": {"status": "RUNNING", "start_time": "yesterday"}})
    assert r.status_code == 400 and r.json()["type"] == "com.vmware.vapi.std.errors.invalid_argument"
    r = requests.post(f"{base}/rest/cis/tasks/{tid}", params={"action": "cancel"}, headers=h)
    assert r.status_code == 200
    r = requests.post(f"{base}/api/cis/tasks/{tid}", params={"action": "cancel"}, headers=h)
    assert r.status_code == 400 and r.json()["error_type"] == "NOT_ALLOWED_IN_CURRENT_STATE"
    r = requests.get(f"{base}/api/cis/tasks/{tid}")
    assert r.status_code == 401 and r.json()["error_type"] == "UNAUTHENTICATED"
    # Sessions on both paths.
    r = requests.post(f"{base}/api/session", auth=(ADMIN, PW))
    assert r.status_code == 201
    s2 = r.json()
    assert requests.get(f"{base}/api/session", headers={"vmware-api-session-id": s2}).status_code == 200
    r = requests.post(f"{base}/rest/com/vmware/cis/session", params={"~action": "get"}, headers={"vmware-api-session-id": s2})
    assert r.status_code == 200 and "user" in r.json()["value"]
    assert requests.delete(f"{base}/api/session", headers={"vmware-api-session-id": s2}).status_code == 204
    assert requests.get(f"{base}/api/session", headers={"vmware-api-session-id": s2}).status_code == 401
