"""pyvcloud 23.0.4 and vcd-cli 24.1.0, unmodified, against `vtwin serve
--vcd-listen`: CloudAPI (36.0) and legacy (32.0) logins, org and task
lists, external tasks posted and driven through running to success and
to error, the task monitor, cancel, the typed task query, tenant
isolation, and every XML reply validated against the vcloud 1.5 XSDs."""
import concurrent.futures
import os
import subprocess
import tempfile

import pytest
import requests
from lxml import etree
from pyvcloud.vcd.client import BasicLoginCredentials, Client, TaskStatus
from pyvcloud.vcd.exceptions import VcdTaskException
from pyvcloud.vcd.org import Org
from pyvcloud.vcd.task import Task

from conftest import PW, Server, vtwin_bin

XSD = os.path.join(os.path.dirname(__file__), "..", "..", "..", "shared", "specs", "vcd-xsd")
TENANT_PW = "Tenant-Passw0rd!"


@pytest.fixture
def vcd(data_dir):
    for args in (["org-add", "acme"], ["org-add", "globex"],
                 ["user-add", "alice@acme", "--password", TENANT_PW, "--role", "admin"],
                 ["user-add", "bob@globex", "--password", TENANT_PW, "--role", "user"]):
        subprocess.run([vtwin_bin(), "vcd", *args, "--data-dir", data_dir], check=True, capture_output=True)
    s = Server(data_dir, extra=["--vcd-listen", "127.0.0.1:0", "--vcd-task-expiry", "30"])
    assert s.vcd_url
    yield s
    s.stop()


def client(s, org, user, pw, version):
    c = Client(s.vcd_url, api_version=version, verify_ssl_certs=False, log_file=None, log_requests=False,
               log_headers=False, log_bodies=False)
    c.set_credentials(BasicLoginCredentials(user, org, pw))
    return c


def within(seconds, fn, *args):
    """Run fn with an outer deadline (pyvcloud's own timeout never fires)."""
    with concurrent.futures.ThreadPoolExecutor(1) as ex:
        return ex.submit(fn, *args).result(timeout=seconds)


def validate(xml_bytes):
    """xmllint --schema against the vcloud 1.5 XSDs (a wrapper schema
    includes the ones our documents use)."""
    v15 = os.path.abspath(os.path.join(XSD, "1.5", "schemas", "vcloud"))
    with tempfile.TemporaryDirectory() as d:
        master = os.path.join(d, "all.xsd")
        parts = ["common", "session", "organization", "organizationList", "tasksList", "task", "queryRecordView",
                 "queryReferenceView"]
        with open(master, "w") as f:
            f.write('<?xml version="1.0"?><xs:schema xmlns:xs="http://www.w3.org/2001/XMLSchema" '
                    'xmlns="http://www.vmware.com/vcloud/v1.5" targetNamespace="http://www.vmware.com/vcloud/v1.5" '
                    'elementFormDefault="qualified">'
                    + "".join(f'<xs:include schemaLocation="{v15}/{p}.xsd"/>' for p in parts) + '</xs:schema>')
        doc = os.path.join(d, "doc.xml")
        with open(doc, "wb") as f:
            f.write(xml_bytes)
        r = subprocess.run(["xmllint", "--noout", "--schema", master, doc], capture_output=True, text=True)
        assert r.returncode == 0, r.stderr + xml_bytes.decode()


def get(s, token, path, accept="application/*+xml;version=36.0"):
    return requests.get(s.vcd_url + path, headers={"Accept": accept, "x-vcloud-authorization": token})


@pytest.mark.parametrize("version", ["36.0", "32.0"])
def test_pyvcloud_external_task_lifecycle(vcd, version):
    c = client(vcd, "acme", "alice", TENANT_PW, version)
    assert not c.is_sysadmin()
    org = Org(c, resource=c.get_org())
    assert org.get_name() == "acme"
    user = c.get_user_in_org("alice", org.href) if False else None
    task = Task(c)
    t = task.update(TaskStatus.RUNNING.value, "com.example.backup", "Backing up db", "jobBackup", "starting", 10,
                    org.href, "acme", "application/vnd.vmware.vcloud.org+xml", "", "alice", org_href=org.href)
    assert t.get("status") == "running" and t.get("serviceNamespace") == "com.example.backup"
    href = t.get("href")
    assert t.get("id").startswith("urn:vcloud:task:")
    # Progress, then success; the monitor returns once the task has ended.
    task.update(TaskStatus.RUNNING.value, "com.example.backup", "Backing up db", "jobBackup", "half", 50,
                org.href, "acme", "application/vnd.vmware.vcloud.org+xml", "", "alice", task_href=href)
    assert int(c.get_resource(href).Progress) == 50
    task.update(TaskStatus.SUCCESS.value, "com.example.backup", "Backing up db", "jobBackup", "done", 100,
                org.href, "acme", "application/vnd.vmware.vcloud.org+xml", "", "alice", task_href=href)
    done = within(30, c.get_task_monitor().wait_for_status, c.get_resource(href))
    assert done.get("status") == "success" and done.get("endTime")
    # A final task does not change again.
    with pytest.raises(Exception):
        task.update(TaskStatus.RUNNING.value, "com.example.backup", "x", "jobBackup", "again", 10,
                    org.href, "acme", "application/vnd.vmware.vcloud.org+xml", "", "alice", task_href=href)
    # A second task ends in error: the monitor raises with its Error.
    t2 = task.update(TaskStatus.RUNNING.value, "com.example.backup", "Restore", "jobRestore", "", 5,
                     org.href, "acme", "application/vnd.vmware.vcloud.org+xml", "", "alice", org_href=org.href)
    task.update(TaskStatus.ERROR.value, "com.example.backup", "Restore", "jobRestore", "failed", None,
                org.href, "acme", "application/vnd.vmware.vcloud.org+xml", "", "alice", task_href=t2.get("href"),
                error_message="disk full")
    with pytest.raises(VcdTaskException):
        within(30, c.get_task_monitor().wait_for_success, c.get_resource(t2.get("href")))
    failed = c.get_resource(t2.get("href"))
    assert failed.Error.get("message") == "disk full" and failed.Error.get("majorErrorCode") == "500"
    # The org's tasks, through the typed query pyvcloud uses.
    listed = task.list_tasks(filter_status_list=[])
    names = sorted(r.get("status") for r in listed)
    assert names == ["error", "success"], names
    running = task.list_tasks(filter_status_list=["running"])
    assert list(running) == []
    c.logout()


def test_xml_validates_and_json(vcd):
    c = client(vcd, "System", "administrator", PW, "36.0")
    assert c.is_sysadmin()
    token = c._session.headers["Authorization"].split(" ", 1)[1]
    r = requests.get(vcd.vcd_url + "/api/versions")
    assert r.status_code == 200 and b"<VersionInfo" in r.content
    sess = get(vcd, token, "/api/session")
    validate(sess.content)
    orgs = get(vcd, token, "/api/org")
    validate(orgs.content)
    acme = [o for o in etree.fromstring(orgs.content) if o.get("name") == "acme"][0].get("href")
    org = requests.get(acme, headers={"Accept": "application/*+xml;version=36.0", "x-vcloud-authorization": token})
    validate(org.content)
    tl = [l.get("href") for l in etree.fromstring(org.content) if l.get("type") == "application/vnd.vmware.vcloud.tasksList+xml"][0]
    body = ('<Task xmlns="http://www.vmware.com/vcloud/v1.5" name="ext" status="queued" operationName="jobExt" '
            'serviceNamespace="com.example.ext"><Description>external</Description><Progress>0</Progress></Task>')
    hdr = {"Accept": "application/*+xml;version=36.0", "x-vcloud-authorization": token,
           "Content-Type": "application/vnd.vmware.vcloud.task+xml"}
    r = requests.post(tl, data=body, headers=hdr)
    assert r.status_code == 201, r.text
    validate(r.content)
    href = etree.fromstring(r.content).get("href")
    validate(requests.get(tl, headers=hdr).content)
    validate(get(vcd, token, "/api/query?type=adminTask&format=records").content)
    validate(get(vcd, token, "/api/query").content)
    # JSON for application/*+json, with the TaskType names.
    j = requests.get(href, headers={"Accept": "application/*+json;version=36.0", "x-vcloud-authorization": token})
    assert j.headers["Content-Type"].startswith("application/vnd.vmware.vcloud.task+json")
    jt = j.json()
    assert jt["status"] == "queued" and jt["serviceNamespace"] == "com.example.ext" and jt["progress"] == 0
    assert any(l["rel"] == "edit" for l in jt["link"]) and jt["organization"]["name"] == "acme"
    # JSON update: status in any case; progress bounds; cancel.
    hj = {"Accept": "application/*+json;version=36.0", "x-vcloud-authorization": token, "Content-Type": "application/vnd.vmware.vcloud.task+json"}
    r = requests.put(href, json={"status": "RUNNING", "progress": 40}, headers=hj)
    assert r.status_code == 200 and r.json()["status"] == "running" and r.json()["progress"] == 40, r.text
    r = requests.put(href, json={"progress": 140}, headers=hj)
    assert r.status_code == 400 and r.json()["minorErrorCode"] == "BAD_REQUEST"
    r = requests.post(href + "/action/cancel", headers=hdr)
    assert r.status_code == 204
    t = etree.fromstring(requests.get(href, headers=hdr).content)
    assert t.get("status") == "aborted" and t.get("cancelRequested") == "true"
    validate(etree.tostring(t))
    # Bad input: VCD Error documents with the right status.
    for resp, status in [
        (requests.post(tl, data="<Task", headers=hdr), 400),
        (requests.post(tl, data=body.replace("com.example.ext", "com.vmware.vcloud.x"), headers=hdr), 400),
        (requests.post(tl, data=body, headers={**hdr, "Content-Type": "text/plain"}), 415),
        (requests.get(href, headers={**hdr, "Accept": "application/*+xml;version=99.0"}), 406),
        (requests.get(href, headers={"Accept": "application/*+xml;version=36.0"}), 401),
        (get(vcd, token, "/api/task/00000000-0000-0000-0000-000000000000"), 404),
    ]:
        assert resp.status_code == status, (status, resp.text)
        err = etree.fromstring(resp.content)
        assert err.tag == "{http://www.vmware.com/vcloud/v1.5}Error" and err.get("majorErrorCode") == str(status)
        validate(resp.content)


def test_tenants_see_only_their_tasks(vcd):
    alice = client(vcd, "acme", "alice", TENANT_PW, "36.0")
    bob = client(vcd, "globex", "bob", TENANT_PW, "36.0")
    org = Org(alice, resource=alice.get_org())
    t = Task(alice).update(TaskStatus.QUEUED.value, "com.example.a", "a", "jobA", "", 0, org.href, "acme",
                           "application/vnd.vmware.vcloud.org+xml", "", "alice", org_href=org.href)
    href = t.get("href")
    with pytest.raises(Exception):
        bob.get_resource(href)
    assert list(Task(bob).list_tasks(filter_status_list=[])) == []
    assert [r.get("name") for r in Task(alice).list_tasks(filter_status_list=[])] == ["task"]
    # The System administrator sees every org's tasks (adminTask).
    admin = client(vcd, "System", "administrator", PW, "36.0")
    assert len(list(Task(admin).list_tasks(filter_status_list=["queued"]))) == 1
    # Wrong password, wrong endpoint for the org: 401.
    with pytest.raises(Exception):
        client(vcd, "acme", "alice", "nope", "36.0")
    r = requests.post(vcd.vcd_url + "/cloudapi/1.0.0/sessions/provider", auth=("alice@acme", TENANT_PW),
                      headers={"Accept": "application/json;version=36.0"})
    assert r.status_code == 401


def test_vcd_cli(vcd, tmp_path):
    env = {**os.environ, "HOME": str(tmp_path)}
    vcdbin = os.path.join(os.path.dirname(__import__("sys").executable), "vcd")

    def run(*args):
        r = subprocess.run([vcdbin, *args], capture_output=True, text=True, env=env, cwd=tmp_path, timeout=120)
        assert r.returncode == 0 and "rror" not in r.stdout.split("result:")[0], r.stdout + r.stderr
        return r.stdout

    out = run("login", vcd.vcd_url, "acme", "alice", "-p", TENANT_PW, "-i", "-w")
    assert "alice logged in" in out
    c = client(vcd, "acme", "alice", TENANT_PW, "36.0")
    org = Org(c, resource=c.get_org())
    t = Task(c).update(TaskStatus.RUNNING.value, "com.example.cli", "cli job", "jobCli", "working", 30, org.href,
                       "acme", "application/vnd.vmware.vcloud.org+xml", "", "alice", org_href=org.href)
    tid = t.get("id").split(":")[-1]
    out = run("task", "info", tid)
    assert "running" in out and "com.example.cli" in out
    out = run("task", "list", "RUNNING")
    assert "cli job" in out or "task" in out
    out = run("task", "update", "SUCCESS", tid)
    assert "result: success" in out
    assert c.get_resource(t.get("href")).get("status") == "success"


def test_versions_expiry_and_restart(data_dir):
    subprocess.run([vtwin_bin(), "vcd", "org-add", "acme", "--data-dir", data_dir], check=True, capture_output=True)
    subprocess.run([vtwin_bin(), "vcd", "user-add", "alice@acme", "--password", TENANT_PW, "--data-dir", data_dir],
                   check=True, capture_output=True)
    # The expiry is long enough for a restart and a login on a loaded machine
    # (with 3 s the task had expired before the first read, once, on
    # PostgreSQL); the test then waits for the expiryTime the task names.
    s = Server(data_dir, extra=["--vcd-listen", "127.0.0.1:0", "--vcd-task-expiry", "12"])
    try:
        r = requests.get(s.vcd_url + "/api/versions")
        v = os.path.abspath(os.path.join(XSD, "schemas", "versioning", "versions.xsd"))
        with tempfile.NamedTemporaryFile(suffix=".xml") as f:
            f.write(r.content)
            f.flush()
            x = subprocess.run(["xmllint", "--noout", "--schema", v, f.name], capture_output=True, text=True)
            assert x.returncode == 0, x.stderr
        c = client(s, "acme", "alice", TENANT_PW, "36.0")
        org = Org(c, resource=c.get_org())
        keep = Task(c).update(TaskStatus.RUNNING.value, "com.example.k", "keep", "jobKeep", "", 20, org.href, "acme",
                              "application/vnd.vmware.vcloud.org+xml", "", "alice", org_href=org.href)
    finally:
        s.stop()
    # An external task is driven by its client: it keeps its state over a restart.
    s = Server(data_dir, extra=["--vcd-listen", "127.0.0.1:0", "--vcd-task-expiry", "12"])
    try:
        c = client(s, "acme", "alice", TENANT_PW, "36.0")
        href = keep.get("href").replace(keep.get("href").split("/api/")[0], s.vcd_url)
        t = c.get_resource(href)
        assert t.get("status") == "running" and int(t.Progress) == 20
        # Past its expiryTime the task is gone.
        import datetime
        import time
        expiry = datetime.datetime.fromisoformat(t.get("expiryTime").replace("Z", "+00:00"))
        time.sleep(max(0.0, (expiry - datetime.datetime.now(datetime.timezone.utc)).total_seconds()) + 0.5)
        with pytest.raises(Exception):
            c.get_resource(href)
        assert list(Task(c).list_tasks(filter_status_list=[])) == []
    finally:
        s.stop()


def test_vc_task_list(vcd):
    """vCenter work done for a VCD task (a vim25 task whose parent is the
    VCD task, named by its URN) is listed in the task's VcTaskList (33.0+),
    and the VCD task is a vim25 task too."""
    import datetime
    from pyVim.connect import Disconnect
    from pyVmomi import vim
    c = client(vcd, "acme", "alice", TENANT_PW, "36.0")
    org = Org(c, resource=c.get_org())
    t = Task(c).update(TaskStatus.RUNNING.value, "com.example.vc", "deploy", "jobDeploy", "", 10, org.href, "acme",
                       "application/vnd.vmware.vcloud.org+xml", "", "alice", org_href=org.href)
    si = vcd.connect()
    try:
        content = si.RetrieveContent()
        content.extensionManager.RegisterExtension(vim.Extension(
            key="com.example.vc", version="1.0", description=vim.Description(label="vc", summary="vc"),
            lastHeartbeatTime=datetime.datetime.now(datetime.timezone.utc),
            taskList=[vim.Extension.TaskTypeInfo(taskID="com.example.vc.clone")]))
        info = content.taskManager.CreateTask(obj=content.rootFolder, taskTypeId="com.example.vc.clone",
                                              cancelable=False, parentTaskKey=t.get("id"))
        info.task.SetTaskState(state="running")
        got = c.get_resource(t.get("href"))
        (vc,) = got.VcTaskList.VcTask
        assert vc.get("moref") == info.key and vc.get("status") == "running"
        assert info.task.info.parentTaskKey == info.task.info.rootTaskKey
        # The VCD task itself, seen through vim25.
        parent = vim.Task(info.task.info.parentTaskKey, si._stub)
        assert parent.info.state == "running"
        from pyVmomi import vmodl
        with pytest.raises(vmodl.fault.InvalidArgument):
            content.taskManager.CreateTask(obj=content.rootFolder, taskTypeId="com.example.vc.clone",
                                           cancelable=False, parentTaskKey="urn:vcloud:task:nope")
        # Before 33.0 there is no VcTaskList.
        old = requests.get(t.get("href"), headers={"Accept": "application/*+xml;version=32.0",
                                                   "Authorization": c._session.headers["Authorization"]})
        assert b"VcTaskList" not in old.content
    finally:
        Disconnect(si)


def test_review_regressions(vcd):
    """Filters combine as FIQL says; text XML cannot carry is refused;
    nested Params round-trip; a VCD token is no vSphere session; a vim25
    cancel of a VCD task shows in VCD."""
    from pyVim.connect import Disconnect
    from pyVmomi import vim
    c = client(vcd, "acme", "alice", TENANT_PW, "36.0")
    token = c._session.headers["Authorization"].split(" ", 1)[1]
    org = Org(c, resource=c.get_org())
    tl = [l.get("href") for l in c.get_org().Link if l.get("type") == "application/vnd.vmware.vcloud.tasksList+xml"][0]
    hdr = {"Accept": "application/*+xml;version=36.0", "Authorization": "Bearer " + token,
           "Content-Type": "application/vnd.vmware.vcloud.task+xml"}

    def post(name, status="queued", extra=""):
        body = (f'<Task xmlns="http://www.vmware.com/vcloud/v1.5" name="{name}" status="{status}" '
                f'serviceNamespace="com.example.r">{extra}</Task>')
        r = requests.post(tl, data=body.encode(), headers=hdr)
        assert r.status_code == 201, r.text
        return etree.fromstring(r.content)

    post("t1", "running")
    post("t2", "running")
    t3 = post("t3", extra='<Params><Params><x a="1">y</x></Params></Params><Details>d</Details>')
    assert t3.find("{http://www.vmware.com/vcloud/v1.5}Details").text == "d"
    validate(etree.tostring(t3))
    q = get(vcd, token, "/api/query?type=task&format=records&filter=name==t1,name==t2;status==running")
    assert sorted(r.get("name") for r in etree.fromstring(q.content)) == ["t1", "t2"]
    # A control character is refused, in XML and in JSON.
    bad = requests.post(tl, data='<Task xmlns="http://www.vmware.com/vcloud/v1.5" name="a&#1;b" status="queued"/>',
                        headers=hdr)
    assert bad.status_code == 400
    bad = requests.post(tl, json={"name": "a\u0001b", "status": "queued"},
                        headers={**hdr, "Content-Type": "application/vnd.vmware.vcloud.task+json"})
    assert bad.status_code == 400
    validate(requests.get(tl, headers=hdr).content)
    # A VCD token is not a vSphere session.
    r = requests.get(f"http://{vcd.host}:{vcd.port}/api/cis/tasks", headers={"vmware-api-session-id": token})
    assert r.status_code == 401
    # A vSphere administrator cancelling the VCD task through vim25: VCD sees it aborted.
    key_task = post("t4", "running")
    si = vcd.connect()
    try:
        tasks = [vim.Task(k, si._stub) for k in [t.info.key for t in si.RetrieveContent().taskManager.recentTask]]
        mine = [t for t in tasks if t.info.state == "running"]
        assert mine
        for t in mine:
            t.CancelTask()
    finally:
        Disconnect(si)
    got = etree.fromstring(requests.get(key_task.get("href"), headers=hdr).content)
    assert got.get("status") == "aborted" and got.get("cancelRequested") == "true"
    r = requests.put(key_task.get("href"), data='<Task xmlns="http://www.vmware.com/vcloud/v1.5" status="success"/>',
                     headers=hdr)
    assert r.status_code == 400
