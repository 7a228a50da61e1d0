//! The task engine's vim25 view: extension tasks driven through
//! SetTaskState / UpdateProgress / CancelTask, retention and restart.
mod common;
use common::*;
use serde_json::json;

const R: &str = "/sdk/vim25/9.1.0.0";

fn call(s: &Server, sid: &str, path: &str, body: serde_json::Value) -> (u16, serde_json::Value) {
    s.call(sid, path, body)
}

fn info(s: &Server, sid: &str, task: &str) -> serde_json::Value {
    let (st, b, _) = s.json("GET", &format!("{R}/Task/{task}/info"), None, Some(sid));
    assert_eq!(st, 200, "{b}");
    json_value(&b)
}

fn register(s: &Server, sid: &str) {
    let ext = json!({"extension": {"_typeName": "Extension", "key": "com.example.backup", "version": "1.0",
        "description": {"_typeName": "Description", "label": "Backup", "summary": "Backup"},
        "taskList": [{"_typeName": "ExtensionTaskTypeInfo", "taskID": "com.example.backup.run"}]}});
    assert_eq!(call(s, sid, "ExtensionManager/ExtensionManager/RegisterExtension", ext).0, 204);
}

fn create(s: &Server, sid: &str, cancelable: bool) -> String {
    let (st, v) = call(
        s,
        sid,
        "TaskManager/TaskManager/CreateTask",
        json!({"obj": {"_typeName": "ManagedObjectReference", "type": "Folder", "value": "group-d1"}, "taskTypeId": "com.example.backup.run", "initiatedBy": "backup-svc", "cancelable": cancelable}),
    );
    assert_eq!(st, 200, "{v}");
    v["key"].as_str().unwrap().to_string()
}

fn state(s: &Server, sid: &str, task: &str, body: serde_json::Value) -> (u16, serde_json::Value) {
    call(s, sid, &format!("Task/{task}/SetTaskState"), body)
}

#[test]
fn extension_task_lifecycle() {
    let d = tempdir();
    let s = Server::start(d.path(), &[]);
    let sid = s.json_login(ADMIN, PW);
    // Unregistered task types are refused.
    let (st, v) = call(
        &s,
        &sid,
        "TaskManager/TaskManager/CreateTask",
        json!({"obj": {"_typeName": "ManagedObjectReference", "type": "Folder", "value": "group-d1"}, "taskTypeId": "nope", "cancelable": false}),
    );
    assert_eq!(
        (st, v["_typeName"].as_str().unwrap(), v["invalidProperty"].as_str().unwrap()),
        (500, "InvalidArgument", "taskTypeId")
    );
    register(&s, &sid);
    let (_, found) = call(
        &s,
        &sid,
        "ExtensionManager/ExtensionManager/FindExtension",
        json!({"extensionKey": "com.example.backup"}),
    );
    assert_eq!(found["taskList"][0]["taskID"], "com.example.backup.run");

    let t = create(&s, &sid, false);
    let i = info(&s, &sid, &t);
    assert_eq!(
        (i["state"].as_str(), i["entityName"].as_str(), i["descriptionId"].as_str()),
        (Some("queued"), Some("Datacenters"), Some("com.example.backup.run"))
    );
    assert_eq!(i["reason"], json!({"_typeName": "TaskReasonUser", "userName": "backup-svc"}));
    assert!(i["activationId"].is_string() && i["eventChainId"].is_i64());
    // Progress only while running; out-of-range values are clamped.
    let (st, v) = call(&s, &sid, &format!("Task/{t}/UpdateProgress"), json!({"percentDone": 10}));
    assert_eq!((st, v["_typeName"].as_str().unwrap()), (500, "InvalidState"));
    assert_eq!(state(&s, &sid, &t, json!({"state": "running"})).0, 204);
    assert_eq!(call(&s, &sid, &format!("Task/{t}/UpdateProgress"), json!({"percentDone": 40})).0, 204);
    assert_eq!(info(&s, &sid, &t)["progress"], 40);
    assert_eq!(call(&s, &sid, &format!("Task/{t}/UpdateProgress"), json!({"percentDone": 140})).0, 204);
    assert_eq!(info(&s, &sid, &t)["progress"], 100);
    let msg =
        json!({"description": {"_typeName": "LocalizableMessage", "key": "com.example.step", "message": "copying"}});
    assert_eq!(call(&s, &sid, &format!("Task/{t}/SetTaskDescription"), msg).0, 204);
    assert_eq!(info(&s, &sid, &t)["description"]["message"], "copying");
    // Not cancelable.
    let (st, v) = call(&s, &sid, &format!("Task/{t}/CancelTask"), json!({}));
    assert_eq!((st, v["_typeName"].as_str().unwrap()), (500, "NotSupported"));
    assert_eq!(
        state(&s, &sid, &t, json!({"state": "success", "result": {"_typeName": "string", "_value": "42 GB"}})).0,
        204
    );
    let i = info(&s, &sid, &t);
    assert_eq!(
        (i["state"].as_str(), &i["result"]),
        (Some("success"), &json!({"_typeName": "string", "_value": "42 GB"}))
    );
    assert!(i["completeTime"].is_string() && i["startTime"].is_string());
    // Terminal states are final.
    let (st, v) = state(&s, &sid, &t, json!({"state": "error", "fault": {"_typeName": "NotFound"}}));
    assert_eq!((st, v["_typeName"].as_str().unwrap()), (500, "InvalidState"));
    let (_, recent, _) = s.json("GET", &format!("{R}/TaskManager/TaskManager/recentTask"), None, Some(&sid));
    assert!(json_value(&recent).as_array().unwrap().iter().any(|r| r["value"] == t.as_str()));

    // A task failed by its owner carries the fault (plain in VI/JSON).
    let t2 = create(&s, &sid, false);
    let (st, v) = state(&s, &sid, &t2, json!({"state": "error"}));
    assert_eq!((st, v["invalidProperty"].as_str()), (500, Some("fault")));
    let fault = json!({"_typeName": "NotFound", "faultMessage": [{"_typeName": "LocalizableMessage", "key": "k", "message": "snapshot gone"}]});
    assert_eq!(state(&s, &sid, &t2, json!({"state": "error", "fault": fault})).0, 204);
    let i = info(&s, &sid, &t2);
    assert_eq!((i["state"].as_str(), i["error"]["_typeName"].as_str()), (Some("error"), Some("NotFound")));
    assert_eq!(i["error"]["faultMessage"][0]["message"], "snapshot gone");
}

#[test]
fn cancel_is_cooperative_and_final() {
    let d = tempdir();
    let s = Server::start(d.path(), &[]);
    let sid = s.json_login(ADMIN, PW);
    register(&s, &sid);
    let t = create(&s, &sid, true);
    assert_eq!(state(&s, &sid, &t, json!({"state": "running"})).0, 204);
    let (st, _) = call(&s, &sid, &format!("Task/{t}/CancelTask"), json!({}));
    assert_eq!(st, 204);
    let i = info(&s, &sid, &t);
    assert_eq!(
        (i["state"].as_str(), i["cancelled"].as_bool(), i["error"]["_typeName"].as_str()),
        (Some("error"), Some(true), Some("RequestCanceled"))
    );
    // The owner finishing later cannot overwrite the cancellation.
    let (st, v) = state(&s, &sid, &t, json!({"state": "success"}));
    assert_eq!((st, v["_typeName"].as_str().unwrap()), (500, "InvalidState"));
    let (st, v) = call(&s, &sid, &format!("Task/{t}/CancelTask"), json!({}));
    assert_eq!((st, v["_typeName"].as_str().unwrap()), (500, "InvalidState"));
    // A queued task can be cancelled too.
    let q = create(&s, &sid, true);
    assert_eq!(call(&s, &sid, &format!("Task/{q}/CancelTask"), json!({})).0, 204);
    assert_eq!(info(&s, &sid, &q)["state"], "error");
}

#[test]
fn tasks_survive_restart_and_running_ones_end_in_error() {
    let d = tempdir();
    let (done, running) = {
        let s = Server::start(d.path(), &[]);
        let sid = s.json_login(ADMIN, PW);
        register(&s, &sid);
        let done = create(&s, &sid, false);
        state(&s, &sid, &done, json!({"state": "success"}));
        let running = create(&s, &sid, false);
        state(&s, &sid, &running, json!({"state": "running"}));
        (done, running)
    };
    let s = Server::start(d.path(), &[]);
    let sid = s.json_login(ADMIN, PW);
    assert_eq!(info(&s, &sid, &done)["state"], "success");
    let i = info(&s, &sid, &running);
    assert_eq!((i["state"].as_str(), i["error"]["_typeName"].as_str()), (Some("error"), Some("SystemError")));
    // The extension is still registered, and task keys keep growing.
    let t = create(&s, &sid, false);
    assert!(
        t.trim_start_matches("task-").parse::<u64>().unwrap()
            > running.trim_start_matches("task-").parse::<u64>().unwrap()
    );
}

#[test]
fn completed_tasks_are_pruned_by_count() {
    let d = tempdir();
    let s = Server::start(d.path(), &["--task-retention-count", "2"]);
    let sid = s.json_login(ADMIN, PW);
    register(&s, &sid);
    let mut keys = vec![];
    for _ in 0..4 {
        let t = create(&s, &sid, false);
        state(&s, &sid, &t, json!({"state": "success"}));
        keys.push(t);
    }
    let _ = create(&s, &sid, false); // pruning runs as tasks are created
    let (st, b, _) = s.json("GET", &format!("{R}/Task/{}/info", keys[0]), None, Some(&sid));
    assert_eq!((st, json_value(&b)["_typeName"].as_str().unwrap()), (500, "ManagedObjectNotFound"));
    assert_eq!(info(&s, &sid, &keys[3])["state"], "success");
}
