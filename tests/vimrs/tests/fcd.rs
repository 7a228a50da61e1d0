//! vim_rs 0.7.0 driving first-class disks: CreateDisk_Task, snapshots,
//! RetrieveSnapshotDetails and VstorageObjectVCenterQueryChangedDiskAreas,
//! with the faults the API page names.
use std::time::Duration;
use vim_rs::core::client::VimClientHandle;
use vim_rs::core::tasks::TaskTracker;
use vim_rs::core::ClientBuilder;
use vim_rs::mo::VcenterVStorageObjectManager;
use vim_rs::types::structs::{Id, ManagedObjectReference, VslmCreateSpec};
use vtwin_vimrs_tests::{start, PW};

async fn wait(handle: &VimClientHandle, task: ManagedObjectReference) {
    let tracker = TaskTracker::new(handle.clone());
    tokio::time::timeout(Duration::from_secs(60), tracker.wait_any(task))
        .await
        .expect("woken in time")
        .expect("task succeeded");
}

#[tokio::test(flavor = "multi_thread")]
async fn fcd_snapshots_and_changed_areas() {
    let srv = start("fcd", &[]).await;
    let client = ClientBuilder::new(&srv.addr)
        .basic_authn("administrator@vsphere.local", PW)
        .insecure(true)
        .build()
        .await
        .expect("login");
    let handle: VimClientHandle = client.clone();
    let sc = client.service_content();
    let vsom = VcenterVStorageObjectManager::new(
        handle.clone(),
        &sc.v_storage_object_manager.as_ref().expect("vStorageObjectManager").value,
    );
    let dc = vim_rs::mo::Datacenter::new(handle.clone(), "datacenter-2");
    let ds = dc.datastore().await.expect("datastores").and_then(|v| v.into_iter().next()).expect("a datastore");
    let spec: VslmCreateSpec = miniserde::json::from_str(&format!(
        r#"{{"_typeName":"VslmCreateSpec","name":"rs-disk","capacityInMB":32,
            "backingSpec":{{"_typeName":"VslmCreateSpecDiskFileBackingSpec","datastore":{{"_typeName":"ManagedObjectReference","type":"Datastore","value":"{}"}},"provisioningType":"thin"}}}}"#,
        ds.value
    ))
    .expect("spec");
    wait(&handle, vsom.create_disk_task(&spec).await.expect("CreateDisk_Task")).await;
    let ids = vsom.list_v_storage_object(&ds).await.expect("ListVStorageObject").expect("one disk");
    assert_eq!(ids.len(), 1);
    let id = Id { id: ids[0].id.clone() };
    let obj = vsom.retrieve_v_storage_object(&id, &ds, None).await.expect("RetrieveVStorageObject");
    assert_eq!(obj.config.name, "rs-disk");
    assert_eq!(obj.config.capacity_in_mb, 32);
    assert_eq!(obj.config.changed_block_tracking_enabled, Some(true));

    wait(&handle, vsom.v_storage_object_create_snapshot_task(&id, &ds, "one").await.expect("snapshot")).await;
    wait(&handle, vsom.v_storage_object_create_snapshot_task(&id, &ds, "two").await.expect("snapshot")).await;
    let snaps =
        vsom.retrieve_snapshot_info(&id, &ds).await.expect("RetrieveSnapshotInfo").snapshots.expect("snapshots");
    assert_eq!(snaps.len(), 2);
    let sid = |i: usize| Id { id: snaps[i].id.as_ref().expect("snapshot id").id.clone() };
    let (s1, s2) = (sid(0), sid(1));
    let details = vsom.retrieve_snapshot_details(&id, &ds, &s1).await.expect("RetrieveSnapshotDetails");
    let cid = details.changed_block_tracking_id.expect("changeId");
    assert!(cid.contains('/'), "{cid}");
    let info = vsom.vstorage_object_v_center_query_changed_disk_areas(&id, &ds, &s2, 0, &cid).await.expect("query");
    assert_eq!((info.start_offset, info.length), (0, 32 << 20));
    assert!(info.changed_area.unwrap_or_default().is_empty());
    let all = vsom.vstorage_object_v_center_query_changed_disk_areas(&id, &ds, &s2, 0, "*").await.expect("query *");
    assert!(all.changed_area.unwrap_or_default().is_empty());

    // Faults: past the end, a bad changeId, an unknown snapshot.
    let e = vsom
        .vstorage_object_v_center_query_changed_disk_areas(&id, &ds, &s2, 32 << 20, "*")
        .await
        .expect_err("past the end");
    assert!(format!("{e:?}").contains("InvalidArgument"), "{e:?}");
    let e = vsom
        .vstorage_object_v_center_query_changed_disk_areas(&id, &ds, &s2, 0, "not-a-change-id")
        .await
        .expect_err("bad changeId");
    assert!(format!("{e:?}").contains("InvalidArgument"), "{e:?}");
    let nope = Id { id: "nope".into() };
    let e =
        vsom.vstorage_object_v_center_query_changed_disk_areas(&id, &ds, &nope, 0, "*").await.expect_err("no snapshot");
    assert!(format!("{e:?}").contains("NotFound"), "{e:?}");

    wait(&handle, vsom.delete_v_storage_object_task(&id, &ds).await.expect("delete")).await;
    assert!(vsom.list_v_storage_object(&ds).await.expect("list").unwrap_or_default().is_empty());
    client.close().await.expect("Logout");
}
