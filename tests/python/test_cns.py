"""pyvmomi, unmodified, on CnsVolumeManager over SOAP at /vsanHealth with
the session cookie of /sdk: create → query (filters, paging) → write data
over NBD → CnsSyncVolume shows the new used space → extend → delete, and
the errors CnsSyncVolume must give."""
import subprocess

import pytest
import requests
from pyVim.connect import Disconnect, SmartConnect
from pyVim.task import WaitForTask
from pyVmomi import SoapStubAdapter, vim, vmodl

from conftest import ADMIN, PW


@pytest.fixture
def si(server):
    si = SmartConnect(host=server.host, port=server.port, protocol="http", user=ADMIN, pwd=PW)
    yield si
    Disconnect(si)


def cns(server, si):
    stub = SoapStubAdapter(url=f"http://{server.host}:{server.port}/vsanHealth", version="vsan.version.v9_1_0_0")
    stub.cookie = si._stub.cookie
    return vim.cns.VolumeManager("cns-volume-manager", stub)


def create(cvm, si, name, mb, labels, ds):
    md = vim.cns.VolumeMetadata(
        containerCluster=vim.cns.ContainerCluster(clusterType="KUBERNETES", clusterId="k8s-1", vSphereUser=ADMIN),
        entityMetadata=[vim.cns.KubernetesEntityMetadata(entityType="PERSISTENT_VOLUME", entityName=name,
                                                          labels=[vim.KeyValue(key=k, value=v) for k, v in labels.items()])])
    spec = vim.cns.VolumeCreateSpec(name=name, volumeType="BLOCK", datastores=[ds], metadata=md,
                                    backingObjectDetails=vim.cns.BackingObjectDetails(capacityInMb=mb))
    t = cvm.Create([spec])
    WaitForTask(t, si=si)
    r = t.info.result.volumeResults[0]
    assert r.fault is None, r.fault
    return r.volumeId


def test_volume_lifecycle(server, si):
    cvm = cns(server, si)
    ds = si.RetrieveContent().rootFolder.childEntity[0].datastore[0]
    vids = [create(cvm, si, f"pv-{i}", 16, {"app": "db" if i % 2 else "web"}, ds) for i in range(5)]
    res = cvm.Query(vim.cns.QueryFilter(labels=[vim.KeyValue(key="app", value="db")]))
    assert sorted(v.name for v in res.volumes) == ["pv-1", "pv-3"]
    page = cvm.Query(vim.cns.QueryFilter(cursor=vim.cns.Cursor(offset=0, limit=2)))
    assert len(page.volumes) == 2 and page.cursor.totalRecords == 5 and page.cursor.offset == 2
    rest = cvm.Query(vim.cns.QueryFilter(cursor=vim.cns.Cursor(offset=2, limit=10)))
    assert len(rest.volumes) == 3
    # New labels on pv-0's entity: the label query follows.
    md = vim.cns.VolumeMetadata(
        containerCluster=vim.cns.ContainerCluster(clusterType="KUBERNETES", clusterId="k8s-1", vSphereUser=ADMIN),
        entityMetadata=[vim.cns.KubernetesEntityMetadata(entityType="PERSISTENT_VOLUME", entityName="pv-0",
                                                          labels=[vim.KeyValue(key="app", value="db")])])
    t = cvm.UpdateVolumeMetadata([vim.cns.VolumeMetadataUpdateSpec(volumeId=vids[0], metadata=md)])
    WaitForTask(t, si=si)
    assert t.info.result.volumeResults[0].fault is None
    res = cvm.Query(vim.cns.QueryFilter(labels=[vim.KeyValue(key="app", value="db")]))
    assert sorted(v.name for v in res.volumes) == ["pv-0", "pv-1", "pv-3"]
    v0 = cvm.Query(vim.cns.QueryFilter(volumeIds=[vids[0]])).volumes[0]
    assert v0.backingObjectDetails.capacityInMb == 16 and v0.metadata.containerCluster.clusterId == "k8s-1"
    # The volume is a first-class disk: write to it over NBD, then sync.
    sid = si._stub.cookie.split('"')[1]
    uri = requests.post(f"http://{server.host}:{server.port}/api/vtwin/nbd-tickets",
                        json={"disk": vids[0].id, "datastore": ds._moId, "write": True},
                        headers={"vmware-api-session-id": sid}).json()["uri"]
    r = subprocess.run(["qemu-io", "-f", "raw", "-c", "write -P 0x7 0 3M", uri], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    t = cvm.SyncVolume([vim.cns.SyncVolumeSpec(volumeId=vids[0], syncMode=["SPACE_USAGE"])])
    WaitForTask(t, si=si)
    assert t.info.result.volumeResults[0].fault is None
    used = cvm.Query(vim.cns.QueryFilter(volumeIds=[vids[0]])).volumes[0].backingObjectDetails.usedCapacityInMb
    assert 3 <= used <= 4, used
    # Exactly one spec; unknown ids NotFound.
    with pytest.raises(vmodl.fault.InvalidArgument):
        cvm.SyncVolume([])
    with pytest.raises(vmodl.fault.InvalidArgument):
        cvm.SyncVolume([vim.cns.SyncVolumeSpec(volumeId=vids[0]), vim.cns.SyncVolumeSpec(volumeId=vids[1])])
    with pytest.raises(vim.fault.NotFound):
        cvm.SyncVolume([vim.cns.SyncVolumeSpec(volumeId=vim.cns.VolumeId(id="nope"))])
    # Extend, then a batch with one bad entry: a per-volume fault, not a task error.
    t = cvm.Extend([vim.cns.VolumeExtendSpec(volumeId=vids[0], capacityInMb=32),
                    vim.cns.VolumeExtendSpec(volumeId=vim.cns.VolumeId(id="nope"), capacityInMb=32)])
    WaitForTask(t, si=si)
    results = t.info.result.volumeResults
    assert results[0].fault is None and isinstance(results[1].fault, vim.fault.NotFound)
    assert cvm.Query(vim.cns.QueryFilter(volumeIds=[vids[0]])).volumes[0].backingObjectDetails.capacityInMb == 32
    # FILE volumes are refused clearly, per volume.
    t = cvm.Create([vim.cns.VolumeCreateSpec(name="f", volumeType="FILE",
                                             backingObjectDetails=vim.cns.BackingObjectDetails(capacityInMb=1))])
    WaitForTask(t, si=si)
    assert isinstance(t.info.result.volumeResults[0].fault, vmodl.fault.NotSupported)
    t = cvm.Delete(vids, True)
    WaitForTask(t, si=si)
    assert all(r.fault is None for r in t.info.result.volumeResults)
    assert not cvm.Query(vim.cns.QueryFilter()).volumes
