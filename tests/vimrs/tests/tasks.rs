//! vim_rs 0.7.0's TaskTracker (ListView + WaitForUpdatesEx) against vtwin,
//! on extension tasks driven through SetTaskState.
use std::time::Duration;
use vim_rs::core::client::VimClientHandle;
use vim_rs::core::error::ErrorKind;
use vim_rs::core::tasks::TaskTracker;
use vim_rs::core::ClientBuilder;
use vim_rs::mo::{Datacenter, ExtensionManager, Task, TaskManager};
use vim_rs::types::enums::TaskInfoStateEnum;
use vim_rs::types::structs::{Extension, MethodFault};
use vim_rs::types::vim_any::VimAny;
use vtwin_vimrs_tests::{start, PW};

#[tokio::test(flavor = "multi_thread")]
async fn task_tracker_waits_for_extension_tasks() {
    let srv = start("tasks", &[]).await;
    let client = ClientBuilder::new(&srv.addr)
        .basic_authn("administrator@vsphere.local", PW)
        .insecure(true)
        .build()
        .await
        .expect("login");
    let sc = client.service_content();
    let handle: VimClientHandle = client.clone();
    let ext: Extension = miniserde::json::from_str(
        r#"{"_typeName":"Extension","key":"com.example.rs","version":"1","lastHeartbeatTime":"2026-01-01T00:00:00Z",
            "description":{"_typeName":"Description","label":"rs","summary":"rs"},
            "taskList":[{"_typeName":"ExtensionTaskTypeInfo","taskID":"com.example.rs.job"}]}"#,
    )
    .expect("extension");
    ExtensionManager::new(handle.clone(), &sc.extension_manager.as_ref().unwrap().value)
        .register_extension(&ext)
        .await
        .expect("RegisterExtension");
    let tm = TaskManager::new(handle.clone(), &sc.task_manager.as_ref().unwrap().value);
    let tracker = TaskTracker::new(handle.clone());

    let info = tm.create_task(&sc.root_folder, "com.example.rs.job", None, true, None, None).await.expect("CreateTask");
    let task = Task::new(handle.clone(), &info.task.value);
    let driver = tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(300)).await;
        task.set_task_state(TaskInfoStateEnum::Running, None, None).await.unwrap();
        tokio::time::sleep(Duration::from_millis(300)).await;
        let result: VimAny = miniserde::json::from_str(r#"{"_typeName":"string","_value":"done"}"#).unwrap();
        task.set_task_state(TaskInfoStateEnum::Success, Some(result), None).await.unwrap();
    });
    let r = tokio::time::timeout(Duration::from_secs(60), tracker.wait_any(info.task.clone()))
        .await
        .expect("woken in time")
        .expect("task succeeded");
    driver.await.unwrap();
    assert!(matches!(r, Some(VimAny::Value(_))), "{r:?}");

    let info =
        tm.create_task(&sc.root_folder, "com.example.rs.job", None, false, None, None).await.expect("CreateTask");
    let task = Task::new(handle.clone(), &info.task.value);
    let fault: MethodFault = miniserde::json::from_str(
        r#"{"_typeName":"NotFound","faultMessage":[{"_typeName":"LocalizableMessage","key":"k","message":"gone"}]}"#,
    )
    .unwrap();
    tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(200)).await;
        task.set_task_state(TaskInfoStateEnum::Error, None, Some(&fault)).await.unwrap();
    });
    // A tracker per wait: vim_rs's own loop teardown between two waits is not what is under test.
    let tracker2 = TaskTracker::new(handle.clone());
    let err = tokio::time::timeout(Duration::from_secs(60), tracker2.wait_any(info.task.clone()))
        .await
        .expect("woken in time")
        .expect_err("task failed");
    assert_eq!(err.kind(), ErrorKind::TaskFailed);
    assert_eq!(format!("{:?}", err.task_fault().unwrap().type_), "Some(NotFound)");
    // Both trackers' loops end by themselves once nothing is pending.
    drop((tracker, tracker2));
    client.close().await.expect("Logout");
}

/// A Rename_Task that a test-control rule (loaded from a file at start)
/// fails after it started: the tracker reports the injected fault.
#[tokio::test(flavor = "multi_thread")]
async fn task_tracker_sees_a_task_failed_by_test_control() {
    let rules = std::env::temp_dir().join(format!("vtwin-vimrs-rules-{}.json", std::process::id()));
    std::fs::write(
        &rules,
        r#"[{"method":"Rename_Task","mode":"task","delay_ms":300,"count":1,"fault":{"_typeName":"InvalidName","name":"bad"}}]"#,
    )
    .unwrap();
    let srv = start("control", &["--test-control", rules.to_str().unwrap()]).await;
    let client = ClientBuilder::new(&srv.addr)
        .basic_authn("administrator@vsphere.local", PW)
        .insecure(true)
        .build()
        .await
        .expect("login");
    let handle: VimClientHandle = client.clone();
    let dc = Datacenter::new(handle.clone(), "datacenter-2");
    let task = dc.rename_task("Oslo").await.expect("Rename_Task");
    let tracker = TaskTracker::new(handle.clone());
    let err = tokio::time::timeout(Duration::from_secs(60), tracker.wait_any(task))
        .await
        .expect("woken in time")
        .expect_err("task failed");
    assert_eq!(err.kind(), ErrorKind::TaskFailed);
    assert_eq!(format!("{:?}", err.task_fault().unwrap().type_), "Some(InvalidName)");
    // The rule is spent: the next rename succeeds.
    let task = dc.rename_task("Oslo").await.expect("Rename_Task");
    let tracker2 = TaskTracker::new(handle.clone());
    tokio::time::timeout(Duration::from_secs(60), tracker2.wait_any(task))
        .await
        .expect("woken in time")
        .expect("task succeeded");
    assert_eq!(dc.name().await.expect("name"), "Oslo");
    drop((tracker, tracker2));
    client.close().await.expect("Logout");
    let _ = std::fs::remove_file(&rules);
}
