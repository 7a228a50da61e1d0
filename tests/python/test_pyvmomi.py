"""pyvmomi 9.1.1.0, unmodified, against vtwin over SOAP."""

import pytest
from pyVim.connect import Disconnect
from pyVmomi import vim, vmodl

from conftest import ADMIN, PW


def connect(server, user=ADMIN, pwd=PW):
    return server.connect(user, pwd)


def walk(si):
    content = si.RetrieveContent()
    dc = content.rootFolder.childEntity[0]
    assert isinstance(dc, vim.Datacenter)
    assert dc.name == "DC0"
    names = sorted(ds.name for ds in dc.datastoreFolder.childEntity)
    return content, dc, names


def test_smartconnect_http_walk_and_fetch(server):
    si = connect(server)
    try:
        content, dc, names = walk(si)
        assert names == ["LocalDS_0", "LocalDS_1"]
        assert content.about.apiType == "VirtualCenter"
        ds = dc.datastore[0]
        s = ds.summary  # read through Fetch
        assert s.url.startswith("ds:///vmfs/volumes/") and s.url.endswith("/")
        assert 0 < s.freeSpace <= s.capacity
        host = dc.hostFolder.childEntity[0].host[0]
        assert host.name == "DC0_H0"
        assert host.runtime.connectionState == "connected"
        assert content.sessionManager.currentSession.userName == "VSPHERE.LOCAL\\administrator"
    finally:
        Disconnect(si)


def test_smartconnect_https_self_signed(tls_server):
    si = connect(tls_server)
    try:
        _, _, names = walk(si)
        assert names == ["LocalDS_0"]
    finally:
        Disconnect(si)


def test_property_collector_traversal(server):
    si = connect(server)
    try:
        content = si.RetrieveContent()
        pc = content.propertyCollector
        PC = vmodl.query.PropertyCollector
        view = content.viewManager.CreateContainerView(content.rootFolder, [vim.Datastore], True)
        spec = PC.FilterSpec(
            objectSet=[PC.ObjectSpec(obj=view, skip=True, selectSet=[
                PC.TraversalSpec(name="v", type=vim.view.ContainerView, path="view", skip=False)])],
            propSet=[PC.PropertySpec(type=vim.Datastore, pathSet=["name", "summary.capacity", "host"])])
        res = pc.RetrievePropertiesEx([spec], PC.RetrieveOptions(maxObjects=1))
        objs = list(res.objects)
        while res.token:
            res = pc.ContinueRetrievePropertiesEx(res.token)
            objs += res.objects
        got = {}
        for oc in objs:
            props = {p.name: p.val for p in oc.propSet}
            got[props["name"]] = props
            assert props["summary.capacity"] > 0
            assert props["host"][0].key.name == "DC0_H0"
        assert sorted(got) == ["LocalDS_0", "LocalDS_1"]
        # The legacy call and a Folder traversal agree.
        t_dc = PC.TraversalSpec(name="dc", type=vim.Datacenter, path="datastoreFolder", skip=False,
                                selectSet=[PC.SelectionSpec(name="f")])
        t_f = PC.TraversalSpec(name="f", type=vim.Folder, path="childEntity", skip=False,
                               selectSet=[PC.SelectionSpec(name="f"), PC.SelectionSpec(name="dc")])
        spec = PC.FilterSpec(objectSet=[PC.ObjectSpec(obj=content.rootFolder, selectSet=[t_f, t_dc])],
                             propSet=[PC.PropertySpec(type=vim.Datastore, all=True)])
        oc = pc.RetrieveProperties([spec])
        assert sorted(o.obj._moId for o in oc) == sorted(o.obj._moId for o in objs)
        assert all(any(p.name == "summary" for p in o.propSet) for o in oc)
        view.DestroyView()
    finally:
        Disconnect(si)


def test_readonly_reads_noaccess_refused(server):
    server.add_user("reader@vsphere.local", "Reader-1!", "ReadOnly")
    server.add_user("nobody@vsphere.local", "Nobody-1!", "NoAccess")
    si = connect(server, "reader@vsphere.local", "Reader-1!")
    try:
        content, dc, names = walk(si)
        assert names == ["LocalDS_0", "LocalDS_1"]
        with pytest.raises(vim.fault.NoPermission) as e:
            content.rootFolder.CreateFolder("nope")
        assert e.value.privilegeId == "Folder.Create"
    finally:
        Disconnect(si)
    si = connect(server, "nobody@vsphere.local", "Nobody-1!")
    try:
        content = si.RetrieveContent()
        with pytest.raises(vim.fault.NoPermission):
            _ = content.rootFolder.childEntity
        # NoAccess holds no privilege anywhere: not even the search index's
        # System.View (a ReadOnly user's search just leaves out what it cannot see).
        with pytest.raises(vim.fault.NoPermission):
            content.searchIndex.FindByInventoryPath("DC0")
    finally:
        Disconnect(si)


def test_wrong_password_and_faults(server):
    with pytest.raises(vim.fault.InvalidLogin):
        connect(server, ADMIN, "wrong")
    si = connect(server)
    try:
        content = si.RetrieveContent()
        ghost = vim.Folder("group-ghost", si._stub)
        with pytest.raises(vmodl.fault.ManagedObjectNotFound):
            _ = ghost.name
        perms = content.authorizationManager.RetrieveEntityPermissions(content.rootFolder, True)
        assert [(p.principal, p.roleId) for p in perms] == [("VSPHERE.LOCAL\\administrator", -1)]
        roles = {r.name: r for r in content.authorizationManager.roleList}
        assert {"Admin", "ReadOnly", "NoAccess"} <= set(roles)
        assert "Datastore.UpdateVirtualMachineFiles" in roles["Admin"].privilege
    finally:
        Disconnect(si)
