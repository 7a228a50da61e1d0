//! vim_rs 0.7.0 on CnsVolumeManager over VI/JSON
//! (`/sdk/vim25/{release}/vsan/CnsVolumeManager/cns-volume-manager/...`):
//! create → attach → query (filters, paging) → write over NBD →
//! CnsSyncVolume shows the used space → extend → snapshot → detach →
//! delete, and the error cases: request-level faults synchronous, per-volume
//! faults in the task's batch result.
use std::process::Command;
use std::time::Duration;
use vim_rs::core::client::VimClientHandle;
use vim_rs::core::tasks::TaskTracker;
use vim_rs::core::ClientBuilder;
use vim_rs::mo::{CnsVolumeManager, ComputeResource, Folder};
use vim_rs::types::structs::{
    CnsQueryFilter, CnsSnapshotCreateSpec, CnsSyncVolumeSpec, CnsVolumeAttachDetachSpec, CnsVolumeCreateSpec,
    CnsVolumeExtendSpec, CnsVolumeId, ManagedObjectReference, VirtualMachineConfigSpec,
};
use vtwin_vimrs_tests::{start, PW};

fn json<T: miniserde::Deserialize>(s: &str) -> T {
    miniserde::json::from_str(s).unwrap_or_else(|_| panic!("spec: {s}"))
}

fn to_value<T: miniserde::Serialize>(v: &T) -> serde_json::Value {
    serde_json::from_str(&miniserde::json::to_string(v)).expect("json")
}

/// Wait for a CNS task; its batch result's entries as JSON.
async fn results(handle: &VimClientHandle, task: ManagedObjectReference) -> Vec<serde_json::Value> {
    let tracker = TaskTracker::new(handle.clone());
    let any = tokio::time::timeout(Duration::from_secs(60), tracker.wait_any(task))
        .await
        .expect("in time")
        .expect("task succeeded")
        .expect("a result");
    let v = to_value(&any);
    assert_eq!(v["_typeName"], "CnsVolumeOperationBatchResult", "{v}");
    v["volumeResults"].as_array().expect("volumeResults").clone()
}

fn ok(r: &[serde_json::Value]) -> &serde_json::Value {
    assert_eq!(r.len(), 1);
    assert!(r[0].get("fault").is_none(), "{}", r[0]);
    &r[0]
}

fn fault_type(r: &[serde_json::Value]) -> String {
    r[0]["fault"]["_typeName"].as_str().unwrap_or_else(|| panic!("no fault in {}", r[0])).to_string()
}

fn vid(id: &str) -> CnsVolumeId {
    CnsVolumeId { id: id.to_string() }
}

#[tokio::test(flavor = "multi_thread")]
async fn cns_volume_story_over_vi_json() {
    let srv = start("cns", &["--datastores", "2"]).await;
    let client = ClientBuilder::new(&srv.addr)
        .basic_authn("administrator@vsphere.local", PW)
        .insecure(true)
        .build()
        .await
        .expect("login");
    let handle: VimClientHandle = client.clone();
    let cvm = CnsVolumeManager::new(handle.clone(), "cns-volume-manager");
    let dc = vim_rs::mo::Datacenter::new(handle.clone(), "datacenter-2");
    let ds = dc.datastore().await.unwrap().expect("datastores");
    let ds0 = ds.iter().find(|d| d.value == "datastore-1").or(ds.first()).expect("a datastore").value.clone();

    // Three volumes, two labelled app=db.
    let mut ids = vec![];
    for (i, app) in ["db", "web", "db"].iter().enumerate() {
        let spec: CnsVolumeCreateSpec = json(&format!(
            r#"{{"_typeName":"CnsVolumeCreateSpec","name":"rs-pv-{i}","volumeType":"BLOCK",
                "datastores":[{{"_typeName":"ManagedObjectReference","type":"Datastore","value":"{ds0}"}}],
                "metadata":{{"_typeName":"CnsVolumeMetadata",
                   "containerCluster":{{"_typeName":"CnsContainerCluster","clusterType":"KUBERNETES","clusterId":"rs-k8s","vSphereUser":"administrator@vsphere.local"}},
                   "entityMetadata":[{{"_typeName":"CnsKubernetesEntityMetadata","entityName":"rs-pv-{i}","entityType":"PERSISTENT_VOLUME",
                      "labels":[{{"_typeName":"KeyValue","key":"app","value":"{app}"}}]}}]}},
                "backingObjectDetails":{{"_typeName":"CnsBlockBackingDetails","capacityInMb":16}}}}"#
        ));
        let r = results(&handle, cvm.cns_create_volume(&[spec]).await.expect("CnsCreateVolume")).await;
        assert_eq!(ok(&r)["_typeName"], "CnsVolumeCreateResult");
        ids.push(ok(&r)["volumeId"]["id"].as_str().expect("id").to_string());
    }
    let id = ids[0].clone();

    // A node VM, and the volume attached to it.
    let hosts =
        Folder::new(handle.clone(), &dc.host_folder().await.unwrap().value).child_entity().await.unwrap().unwrap();
    let pool = ComputeResource::new(handle.clone(), &hosts[0].value).resource_pool().await.unwrap().expect("root pool");
    let vm_folder = Folder::new(handle.clone(), &dc.vm_folder().await.unwrap().value);
    let spec: VirtualMachineConfigSpec = json(
        r#"{"_typeName":"VirtualMachineConfigSpec","name":"rs-node","guestId":"otherGuest64",
            "files":{"_typeName":"VirtualMachineFileInfo","vmPathName":"[LocalDS_0]"},
            "deviceChange":[{"_typeName":"VirtualDeviceConfigSpec","operation":"add","device":{"_typeName":"ParaVirtualSCSIController","key":1000,"busNumber":0,"sharedBus":"noSharing"}}]}"#,
    );
    let t = vm_folder.create_vm_task(&spec, &pool, None).await.expect("CreateVM_Task");
    let vm = to_value(&TaskTracker::new(handle.clone()).wait_any(t).await.expect("created").expect("the VM"));
    let vm_id = vm["value"].as_str().expect("vm moId").to_string();
    let attach: CnsVolumeAttachDetachSpec = json(&format!(
        r#"{{"_typeName":"CnsVolumeAttachDetachSpec","volumeId":{{"_typeName":"CnsVolumeId","id":"{id}"}},"vm":{{"_typeName":"ManagedObjectReference","type":"VirtualMachine","value":"{vm_id}"}}}}"#
    ));
    let r =
        results(&handle, cvm.cns_attach_volume(std::slice::from_ref(&attach)).await.expect("CnsAttachVolume")).await;
    assert_eq!(ok(&r)["_typeName"], "CnsVolumeAttachResult");
    assert_eq!(ok(&r)["diskUUID"].as_str().map(str::len), Some(36));

    // Query: by label, by cluster with paging, by id.
    let by_label: CnsQueryFilter =
        json(r#"{"_typeName":"CnsQueryFilter","labels":[{"_typeName":"KeyValue","key":"app","value":"db"}]}"#);
    let q = to_value(&cvm.cns_query_volume(&by_label, None).await.expect("CnsQueryVolume"));
    let mut names: Vec<&str> = q["volumes"].as_array().unwrap().iter().map(|v| v["name"].as_str().unwrap()).collect();
    names.sort();
    assert_eq!(names, ["rs-pv-0", "rs-pv-2"]);
    let page: CnsQueryFilter = json(
        r#"{"_typeName":"CnsQueryFilter","containerClusterIds":["rs-k8s"],"cursor":{"_typeName":"CnsCursor","offset":1,"limit":1}}"#,
    );
    let q = to_value(&cvm.cns_query_volume(&page, None).await.expect("page"));
    assert_eq!(q["volumes"].as_array().unwrap().len(), 1);
    assert_eq!((q["cursor"]["offset"].as_i64(), q["cursor"]["totalRecords"].as_i64()), (Some(2), Some(3)));
    let one: CnsQueryFilter =
        json(&format!(r#"{{"_typeName":"CnsQueryFilter","volumeIds":[{{"_typeName":"CnsVolumeId","id":"{id}"}}]}}"#));
    let backing = |q: &serde_json::Value| q["volumes"][0]["backingObjectDetails"].clone();

    // Write 5 MiB over NBD with qemu-io; CnsSyncVolume measures it.
    let out = Command::new("curl")
        .args([
            "-sk",
            "-X",
            "POST",
            "-u",
            &format!("administrator@vsphere.local:{PW}"),
            &format!("https://{}/api/session", srv.addr),
        ])
        .output()
        .expect("curl");
    let session: String = serde_json::from_slice(&out.stdout).expect("session id");
    let out = Command::new("curl")
        .args([
            "-sk",
            "-X",
            "POST",
            "-H",
            &format!("vmware-api-session-id: {session}"),
            "-H",
            "Content-Type: application/json",
        ])
        .args([
            "-d",
            &format!(r#"{{"disk":"{id}","datastore":"{ds0}","write":true}}"#),
            &format!("https://{}/api/vtwin/nbd-tickets", srv.addr),
        ])
        .output()
        .expect("curl");
    let ticket: serde_json::Value = serde_json::from_slice(&out.stdout).expect("ticket");
    let io = Command::new("qemu-io")
        .args(["-f", "raw", "-c", "write -P 0x9 0 5M", ticket["uri"].as_str().expect("uri")])
        .output()
        .expect("qemu-io");
    assert!(io.status.success(), "{}", String::from_utf8_lossy(&io.stderr));
    let sync: CnsSyncVolumeSpec = json(&format!(
        r#"{{"_typeName":"CnsSyncVolumeSpec","volumeId":{{"_typeName":"CnsVolumeId","id":"{id}"}},"syncMode":["SPACE_USAGE"]}}"#
    ));
    ok(&results(&handle, cvm.cns_sync_volume(Some(std::slice::from_ref(&sync))).await.expect("CnsSyncVolume")).await);
    let b = backing(&to_value(&cvm.cns_query_volume(&one, None).await.unwrap()));
    assert_eq!(b["usedCapacityInMb"].as_i64(), Some(5), "{b}");

    // Extend, snapshot (its space shows after the next sync), detach, delete.
    let extend: CnsVolumeExtendSpec = json(&format!(
        r#"{{"_typeName":"CnsVolumeExtendSpec","volumeId":{{"_typeName":"CnsVolumeId","id":"{id}"}},"capacityInMb":48}}"#
    ));
    ok(&results(&handle, cvm.cns_extend_volume(&[extend]).await.expect("CnsExtendVolume")).await);
    let snap: CnsSnapshotCreateSpec = json(&format!(
        r#"{{"_typeName":"CnsSnapshotCreateSpec","volumeId":{{"_typeName":"CnsVolumeId","id":"{id}"}},"description":"rs snap"}}"#
    ));
    ok(&results(&handle, cvm.cns_create_snapshots(&[snap]).await.expect("CnsCreateSnapshots")).await);
    ok(&results(&handle, cvm.cns_sync_volume(Some(std::slice::from_ref(&sync))).await.unwrap()).await);
    let b = backing(&to_value(&cvm.cns_query_volume(&one, None).await.unwrap()));
    assert_eq!(b["capacityInMb"].as_i64(), Some(48), "{b}");
    assert_eq!(b["aggregatedSnapshotCapacityInMb"].as_i64(), Some(5), "{b}");
    assert_eq!(b["usedCapacityInMb"].as_i64(), Some(5), "{b}");
    // Attached: not deletable; detach, then delete.
    let r = results(&handle, cvm.cns_delete_volume(&[vid(&id)], true).await.unwrap()).await;
    assert_eq!(fault_type(&r), "ResourceInUse");
    ok(&results(&handle, cvm.cns_detach_volume(std::slice::from_ref(&attach)).await.expect("CnsDetachVolume")).await);
    ok(&results(&handle, cvm.cns_delete_volume(&[vid(&id)], true).await.expect("CnsDeleteVolume")).await);
    assert!(to_value(&cvm.cns_query_volume(&one, None).await.unwrap())["volumes"]
        .as_array()
        .is_none_or(|a| a.is_empty()));

    // Errors. Request level: zero or two sync specs, an empty id; unknown volume NotFound.
    let e = cvm.cns_sync_volume(Some(&[])).await.expect_err("no spec");
    assert!(format!("{e:?}").contains("InvalidArgument"), "{e:?}");
    let sync2: CnsSyncVolumeSpec = json(&format!(
        r#"{{"_typeName":"CnsSyncVolumeSpec","volumeId":{{"_typeName":"CnsVolumeId","id":"{}"}}}}"#,
        ids[1]
    ));
    let again: CnsSyncVolumeSpec = json(&format!(
        r#"{{"_typeName":"CnsSyncVolumeSpec","volumeId":{{"_typeName":"CnsVolumeId","id":"{}"}}}}"#,
        ids[2]
    ));
    let e = cvm.cns_sync_volume(Some(&[sync2, again])).await.expect_err("two specs");
    assert!(format!("{e:?}").contains("InvalidArgument"), "{e:?}");
    let empty: CnsSyncVolumeSpec =
        json(r#"{"_typeName":"CnsSyncVolumeSpec","volumeId":{"_typeName":"CnsVolumeId","id":""}}"#);
    let e = cvm.cns_sync_volume(Some(&[empty])).await.expect_err("empty id");
    assert!(format!("{e:?}").contains("InvalidArgument"), "{e:?}");
    let e = cvm.cns_sync_volume(Some(std::slice::from_ref(&sync))).await.expect_err("deleted volume");
    assert!(format!("{e:?}").contains("NotFound"), "{e:?}");
    // Per volume: an unknown volume in a task's result, the task a success.
    let gone: CnsVolumeExtendSpec = json(&format!(
        r#"{{"_typeName":"CnsVolumeExtendSpec","volumeId":{{"_typeName":"CnsVolumeId","id":"{id}"}},"capacityInMb":64}}"#
    ));
    let r = results(&handle, cvm.cns_extend_volume(&[gone]).await.unwrap()).await;
    assert_eq!(fault_type(&r), "NotFound");
    let file: CnsVolumeCreateSpec = json(
        r#"{"_typeName":"CnsVolumeCreateSpec","name":"f","volumeType":"FILE","backingObjectDetails":{"_typeName":"CnsBackingObjectDetails","capacityInMb":1}}"#,
    );
    let r = results(&handle, cvm.cns_create_volume(&[file]).await.unwrap()).await;
    assert_eq!(fault_type(&r), "NotSupported");
    client.close().await.expect("Logout");
}
