//! Engine-run tasks (Rename_Task), their per-entity queue, and the
//! test-control surface: delays, synchronous faults, asynchronous task
//! failures, count/probability/object filters, the admin endpoint and the
//! start-up file.
mod common;
use common::*;
use serde_json::json;
use std::time::{Duration, Instant};

const R: &str = "/sdk/vim25/9.1.0.0";

fn info(s: &Server, sid: &str, task: &str) -> serde_json::Value {
    let (st, b, _) = s.json("GET", &format!("{R}/Task/{task}/info"), None, Some(sid));
    assert_eq!(st, 200, "{b}");
    json_value(&b)
}

fn wait_done(s: &Server, sid: &str, task: &str) -> serde_json::Value {
    let end = Instant::now() + Duration::from_secs(20);
    loop {
        let i = info(s, sid, task);
        if i["state"] == "success" || i["state"] == "error" {
            return i;
        }
        assert!(Instant::now() < end, "task {task} did not finish: {i}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn rename(s: &Server, sid: &str, moid: &str, name: &str) -> (u16, serde_json::Value) {
    s.call(sid, &format!("Datacenter/{moid}/Rename_Task"), json!({"newName": name}))
}

fn admin(s: &Server, method: &str, path: &str, body: Option<serde_json::Value>) -> (u16, String) {
    let req = ureq::request(method, &s.url(path))
        .set("Authorization", &format!("Basic {}", base64(&format!("{ADMIN}:{PW}"))));
    let r = match body {
        Some(b) => req.send_string(&b.to_string()),
        None => req.call(),
    };
    let (st, b, _) = resp(r);
    (st, b)
}

fn base64(s: &str) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD.encode(s)
}

#[test]
fn rename_task_runs_and_checks_names() {
    let d = tempdir();
    let s = Server::start(d.path(), &["--datacenters", "2"]);
    let sid = s.json_login(ADMIN, PW);
    let (st, t) = rename(&s, &sid, "datacenter-2", "Paris");
    assert_eq!(st, 200, "{t}");
    let i = wait_done(&s, &sid, t["value"].as_str().unwrap());
    assert_eq!(
        (i["state"].as_str(), i["name"].as_str(), i["descriptionId"].as_str()),
        (Some("success"), Some("Rename_Task"), Some("Datacenter.rename"))
    );
    let (_, name, _) = s.json("GET", &format!("{R}/Datacenter/datacenter-2/name"), None, Some(&sid));
    assert_eq!(name, "\"Paris\"");
    // The sibling's name is taken: the task fails with DuplicateName.
    let other = {
        let (_, b, _) = s.json("GET", &format!("{R}/Folder/group-d1/childEntity"), None, Some(&sid));
        json_value(&b)
            .as_array()
            .unwrap()
            .iter()
            .map(|m| m["value"].as_str().unwrap().to_string())
            .find(|m| m != "datacenter-2")
            .unwrap()
    };
    let (_, t) = s.call(&sid, &format!("Datacenter/{other}/Rename_Task"), json!({"newName": "Paris"}));
    let i = wait_done(&s, &sid, t["value"].as_str().unwrap());
    assert_eq!(i["error"]["_typeName"], "DuplicateName", "{i}");
    // Bad names are refused at once; the root folder cannot be renamed.
    let (st, v) = rename(&s, &sid, "datacenter-2", "");
    assert_eq!((st, v["_typeName"].as_str()), (500, Some("InvalidName")));
    let (_, v) = s.call(&sid, "Folder/group-d1/Rename_Task", json!({"newName": "x"}));
    assert_eq!(v["_typeName"], "NotSupported");
}

#[test]
fn queued_is_observable_and_delays_fail_and_filter() {
    let d = tempdir();
    let s = Server::start(d.path(), &[]);
    let sid = s.json_login(ADMIN, PW);
    let (st, b) = admin(&s, "POST", "/admin/faults", Some(json!({"method": "Rename_Task", "delay_ms": 2000})));
    assert_eq!(st, 201, "{b}");
    let (_, t1) = rename(&s, &sid, "datacenter-2", "A");
    let (_, t2) = rename(&s, &sid, "datacenter-2", "B");
    let (t1, t2) = (t1["value"].as_str().unwrap().to_string(), t2["value"].as_str().unwrap().to_string());
    // One entity, one task at a time: while the first runs (its 2 s
    // delay, long enough that a loaded machine still sees it running), the
    // second waits its turn. Poll for the first to start, so a
    // loaded machine cannot make this flaky.
    let start = std::time::Instant::now();
    while info(&s, &sid, &t1)["state"] == "queued" && start.elapsed() < Duration::from_secs(10) {
        std::thread::sleep(Duration::from_millis(10));
    }
    assert_eq!(info(&s, &sid, &t1)["state"], "running");
    assert_eq!(info(&s, &sid, &t2)["state"], "queued", "t1 {} t2 {}", info(&s, &sid, &t1), info(&s, &sid, &t2));
    let i1 = wait_done(&s, &sid, &t1);
    let i2 = wait_done(&s, &sid, &t2);
    assert!(i2["startTime"].as_str().unwrap() >= i1["completeTime"].as_str().unwrap(), "{i1} {i2}");
    let (_, name, _) = s.json("GET", &format!("{R}/Datacenter/datacenter-2/name"), None, Some(&sid));
    assert_eq!(name, "\"B\"");
    assert_eq!(admin(&s, "DELETE", "/admin/faults", None).0, 204);

    // A fault returned synchronously, once, only for one object.
    let rule = json!({"method": "Rename_Task", "object": "datacenter-2", "count": 1,
                      "fault": {"_typeName": "InvalidName", "name": "Z"}, "message": "no such name"});
    assert_eq!(admin(&s, "POST", "/admin/faults", Some(rule)).0, 201);
    let (st, v) = s.call(&sid, "Folder/group-d1/Rename_Task", json!({"newName": "x"}));
    assert_eq!((st, v["_typeName"].as_str()), (500, Some("NotSupported")), "other objects are not affected");
    let (st, v) = rename(&s, &sid, "datacenter-2", "Z");
    assert_eq!((st, v["_typeName"].as_str(), v["name"].as_str()), (500, Some("InvalidName"), Some("Z")));
    assert_eq!(v["faultMessage"][0]["message"], "no such name");
    let (st, t) = rename(&s, &sid, "datacenter-2", "Z");
    assert_eq!(st, 200, "count exhausted: {t}");
    wait_done(&s, &sid, t["value"].as_str().unwrap());

    // A task that starts and then fails asynchronously.
    let rule = json!({"method": "Rename_Task", "mode": "task", "delay_ms": 300,
                      "fault": {"_typeName": "SystemError", "reason": "disk on fire"}});
    let (_, b) = admin(&s, "POST", "/admin/faults", Some(rule));
    let id = json_value(&b)[0]["id"].as_u64().unwrap();
    let (st, t) = rename(&s, &sid, "datacenter-2", "Y");
    assert_eq!(st, 200);
    let t = t["value"].as_str().unwrap().to_string();
    std::thread::sleep(Duration::from_millis(100));
    assert_eq!(info(&s, &sid, &t)["state"], "running");
    let i = wait_done(&s, &sid, &t);
    assert_eq!(
        (i["state"].as_str(), i["error"]["_typeName"].as_str(), i["error"]["reason"].as_str()),
        (Some("error"), Some("SystemError"), Some("disk on fire"))
    );
    let (_, name, _) = s.json("GET", &format!("{R}/Datacenter/datacenter-2/name"), None, Some(&sid));
    assert_eq!(name, "\"Z\"", "the failed task changed nothing");
    assert_eq!(admin(&s, "DELETE", &format!("/admin/faults/{id}"), None).0, 204);
    assert_eq!(admin(&s, "DELETE", &format!("/admin/faults/{id}"), None).0, 404);

    // Probability 0 never fires; bad rules are refused with a reason.
    admin(
        &s,
        "POST",
        "/admin/faults",
        Some(
            json!({"method": "Rename_Task", "probability": 0.0, "fault": {"_typeName": "SystemError", "reason": "x"}}),
        ),
    );
    assert_eq!(rename(&s, &sid, "datacenter-2", "W").0, 200);
    let (st, b) = admin(&s, "POST", "/admin/faults", Some(json!({"method": "X", "fault": {"_typeName": "Folder"}})));
    assert_eq!(st, 400, "{b}");
    assert!(b.contains("not a fault type"));

    // A plain (non-task) call can be slowed down too.
    admin(&s, "POST", "/admin/faults", Some(json!({"method": "CurrentTime", "delay_ms": 300})));
    let start = Instant::now();
    let (st, _) = s.call(&sid, "ServiceInstance/ServiceInstance/CurrentTime", json!({}));
    assert_eq!(st, 200);
    assert!(start.elapsed() >= Duration::from_millis(300));
    // Only administrators may change rules.
    let (st, _, _) = resp(ureq::get(&s.url("/admin/faults")).call());
    assert_eq!(st, 401);
}

#[test]
fn extension_task_failed_asynchronously_by_rule_file() {
    let d = tempdir();
    let file = d.path().join("rules.json");
    std::fs::write(
        &file,
        json!([{"task_type": "com.example.backup.run", "mode": "task", "delay_ms": 200,
        "fault": {"_typeName": "NotEnoughLicenses"}, "message": "licence expired"}])
        .to_string(),
    )
    .unwrap();
    let s = Server::start(d.path(), &["--test-control", file.to_str().unwrap()]);
    let sid = s.json_login(ADMIN, PW);
    let ext = json!({"extension": {"_typeName": "Extension", "key": "com.example.backup", "version": "1.0",
        "description": {"_typeName": "Description", "label": "Backup", "summary": "Backup"},
        "taskList": [{"_typeName": "ExtensionTaskTypeInfo", "taskID": "com.example.backup.run"}]}});
    assert_eq!(s.call(&sid, "ExtensionManager/ExtensionManager/RegisterExtension", ext).0, 204);
    let (_, v) = s.call(&sid, "TaskManager/TaskManager/CreateTask", json!({"obj": {"_typeName": "ManagedObjectReference", "type": "Folder", "value": "group-d1"}, "taskTypeId": "com.example.backup.run", "cancelable": true}));
    let t = v["key"].as_str().unwrap().to_string();
    assert_eq!(s.call(&sid, &format!("Task/{t}/SetTaskState"), json!({"state": "running"})).0, 204);
    let i = wait_done(&s, &sid, &t);
    assert_eq!(
        (i["error"]["_typeName"].as_str(), i["error"]["faultMessage"][0]["message"].as_str()),
        (Some("NotEnoughLicenses"), Some("licence expired"))
    );
    // The owner's late success does not overwrite the failure.
    let (st, v) = s.call(&sid, &format!("Task/{t}/SetTaskState"), json!({"state": "success"}));
    assert_eq!((st, v["_typeName"].as_str()), (500, Some("InvalidState")));
}

#[test]
fn cancel_racing_completion_never_flips() {
    // Cancel and SetTaskState(success) race from two threads, many times:
    // each task ends in exactly one final state, and a cancelled task is
    // never reported successful afterwards.
    let d = tempdir();
    let s = Server::start(d.path(), &[]);
    let sid = s.json_login(ADMIN, PW);
    let ext = json!({"extension": {"_typeName": "Extension", "key": "com.example.race", "version": "1.0",
        "description": {"_typeName": "Description", "label": "Race", "summary": "Race"},
        "taskList": [{"_typeName": "ExtensionTaskTypeInfo", "taskID": "com.example.race.run"}]}});
    assert_eq!(s.call(&sid, "ExtensionManager/ExtensionManager/RegisterExtension", ext).0, 204);
    let (mut cancelled, mut succeeded) = (0, 0);
    for _ in 0..40 {
        let (_, v) = s.call(&sid, "TaskManager/TaskManager/CreateTask", json!({"obj": {"_typeName": "ManagedObjectReference", "type": "Folder", "value": "group-d1"}, "taskTypeId": "com.example.race.run", "cancelable": true}));
        let t = v["key"].as_str().unwrap().to_string();
        s.call(&sid, &format!("Task/{t}/SetTaskState"), json!({"state": "running"}));
        let (a, b) = std::thread::scope(|sc| {
            let c = sc.spawn(|| s.call(&sid, &format!("Task/{t}/CancelTask"), json!({})).0);
            let w = sc.spawn(|| s.call(&sid, &format!("Task/{t}/SetTaskState"), json!({"state": "success"})).0);
            (c.join().unwrap(), w.join().unwrap())
        });
        // Exactly one of them won.
        assert!((a == 204) ^ (b == 204), "cancel {a}, success {b}");
        let i = info(&s, &sid, &t);
        if a == 204 {
            cancelled += 1;
            assert_eq!(
                (i["state"].as_str(), i["cancelled"].as_bool(), i["error"]["_typeName"].as_str()),
                (Some("error"), Some(true), Some("RequestCanceled"))
            );
        } else {
            succeeded += 1;
            assert_eq!((i["state"].as_str(), i["cancelled"].as_bool()), (Some("success"), Some(false)));
        }
        // And it stays that way.
        assert_eq!(s.call(&sid, &format!("Task/{t}/SetTaskState"), json!({"state": "success"})).0, 500);
    }
    assert_eq!(cancelled + succeeded, 40);
}
