//! PropertyCollector waits over VI/JSON: the flows govmomi and vim_rs use
//! to wait for a task (filter, WaitForUpdatesEx with a version), timeouts,
//! truncation and cancel.
mod common;
use common::*;
use serde_json::json;
use std::time::{Duration, Instant};

const R: &str = "/sdk/vim25/9.1.0.0";

fn call(s: &Server, sid: &str, path: &str, body: serde_json::Value) -> (u16, serde_json::Value) {
    s.call(sid, path, body)
}

fn moref(ty: &str, v: &str) -> serde_json::Value {
    json!({"_typeName": "ManagedObjectReference", "type": ty, "value": v})
}

fn setup(s: &Server, sid: &str, n: usize) -> Vec<String> {
    let ext = json!({"extension": {"_typeName": "Extension", "key": "com.example.w", "version": "1",
        "description": {"_typeName": "Description", "label": "w", "summary": "w"},
        "taskList": [{"_typeName": "ExtensionTaskTypeInfo", "taskID": "com.example.w.job"}]}});
    assert_eq!(call(s, sid, "ExtensionManager/ExtensionManager/RegisterExtension", ext).0, 204);
    (0..n)
        .map(|_| {
            let (st, v) = call(
                s,
                sid,
                "TaskManager/TaskManager/CreateTask",
                json!({"obj": moref("Folder", "group-d1"), "taskTypeId": "com.example.w.job", "cancelable": true}),
            );
            assert_eq!(st, 200, "{v}");
            v["key"].as_str().unwrap().to_string()
        })
        .collect()
}

fn wait(
    s: &Server,
    sid: &str,
    pc: &str,
    version: &str,
    max_wait: i64,
    max_objects: Option<i64>,
) -> (u16, serde_json::Value) {
    let mut opts = json!({"_typeName": "WaitOptions", "maxWaitSeconds": max_wait});
    if let Some(m) = max_objects {
        opts["maxObjectUpdates"] = json!(m);
    }
    call(s, sid, &format!("PropertyCollector/{pc}/WaitForUpdatesEx"), json!({"version": version, "options": opts}))
}

#[test]
fn govmomi_flow_private_collector_whole_info() {
    let d = tempdir();
    let s = Server::start(d.path(), &[]);
    let sid = s.json_login(ADMIN, PW);
    let t = setup(&s, &sid, 1).remove(0);
    let (_, pc) = call(&s, &sid, "PropertyCollector/propertyCollector/CreatePropertyCollector", json!({}));
    let pc = pc["value"].as_str().unwrap().to_string();
    assert!(pc.starts_with("session["));
    let spec = json!({"spec": {"_typeName": "PropertyFilterSpec", "propSet": [{"_typeName": "PropertySpec", "type": "Task", "pathSet": ["info"]}],
        "objectSet": [{"_typeName": "ObjectSpec", "obj": moref("Task", &t)}]}, "partialUpdates": false});
    let (st, f) = call(&s, &sid, &format!("PropertyCollector/{pc}/CreateFilter"), spec);
    assert_eq!(st, 200, "{f}");
    // First wait: the whole state as enter.
    let (st, u) = wait(&s, &sid, &pc, "", 5, None);
    assert_eq!(st, 200, "{u}");
    let v1 = u["version"].as_str().unwrap().to_string();
    let ou = &u["filterSet"][0]["objectSet"][0];
    assert_eq!(
        (ou["kind"].as_str(), ou["changeSet"][0]["name"].as_str(), ou["changeSet"][0]["op"].as_str()),
        (Some("enter"), Some("info"), Some("assign"))
    );
    assert_eq!(ou["changeSet"][0]["val"]["_typeName"], "TaskInfo");
    // Nothing changed: a short wait times out with no body.
    let started = Instant::now();
    let (st, _) = wait(&s, &sid, &pc, &v1, 1, None);
    assert_eq!(st, 204);
    assert!(started.elapsed() >= Duration::from_millis(900));
    // A waiter is woken by SetTaskState from another session.
    let other = s.json_login(ADMIN, PW);
    let t2 = t.clone();
    let base = s.base.clone();
    let owner = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(300));
        let r = ureq::post(&format!("{base}{R}/Task/{t2}/SetTaskState"))
            .set("vmware-api-session-id", &other)
            .send_string(r#"{"state":"success"}"#);
        assert!(r.is_ok());
    });
    let started = Instant::now();
    let (st, u) = wait(&s, &sid, &pc, &v1, 30, None);
    owner.join().unwrap();
    assert_eq!(st, 200, "{u}");
    assert!(started.elapsed() < Duration::from_secs(10), "woken by the change, not by the timeout");
    let ou = &u["filterSet"][0]["objectSet"][0];
    assert_eq!((ou["kind"].as_str(), ou["changeSet"][0]["val"]["state"].as_str()), (Some("modify"), Some("success")));
    let v2 = u["version"].as_str().unwrap().to_string();
    assert!(v2.parse::<u64>().unwrap() > v1.parse::<u64>().unwrap(), "versions grow");
    // Resuming from an older version gives the change again; unknown ones are refused.
    let (st, u) = wait(&s, &sid, &pc, &v1, 0, None);
    assert_eq!((st, u["filterSet"][0]["objectSet"][0]["kind"].as_str()), (200, Some("modify")));
    let (st, u) = wait(&s, &sid, &pc, "999", 0, None);
    assert_eq!((st, u["_typeName"].as_str()), (500, Some("InvalidCollectorVersion")));
    assert_eq!(
        call(&s, &sid, &format!("PropertyFilter/{}/DestroyPropertyFilter", f["value"].as_str().unwrap()), json!({})).0,
        204
    );
    assert_eq!(call(&s, &sid, &format!("PropertyCollector/{pc}/DestroyPropertyCollector"), json!({})).0, 204);
}

#[test]
fn vim_rs_flow_list_view_and_truncation() {
    let d = tempdir();
    let s = Server::start(d.path(), &[]);
    let sid = s.json_login(ADMIN, PW);
    let tasks = setup(&s, &sid, 3);
    let (_, lv) = call(&s, &sid, "ViewManager/ViewManager/CreateListView", json!({"obj": []}));
    let lv = lv["value"].as_str().unwrap().to_string();
    let add: Vec<_> = tasks.iter().map(|t| moref("Task", t)).collect();
    assert_eq!(call(&s, &sid, &format!("ListView/{lv}/ModifyListView"), json!({"add": add})).0, 200);
    let spec = json!({"spec": {"_typeName": "PropertyFilterSpec", "propSet": [{"_typeName": "PropertySpec", "type": "Task", "pathSet": ["info"]}],
        "objectSet": [{"_typeName": "ObjectSpec", "obj": moref("ListView", &lv), "skip": true,
            "selectSet": [{"_typeName": "TraversalSpec", "name": "v", "type": "ListView", "path": "view", "skip": false}]}]}, "partialUpdates": false});
    assert_eq!(call(&s, &sid, "PropertyCollector/propertyCollector/CreateFilter", spec).0, 200);
    // maxObjectUpdates truncates; the rest comes with the next version.
    let (st, u) = wait(&s, &sid, "propertyCollector", "", 9, Some(2));
    assert_eq!(st, 200, "{u}");
    assert_eq!((u["truncated"].as_bool(), u["filterSet"][0]["objectSet"].as_array().unwrap().len()), (Some(true), 2));
    let (_, u2) = wait(&s, &sid, "propertyCollector", u["version"].as_str().unwrap(), 9, Some(2));
    assert_eq!(u2["filterSet"][0]["objectSet"].as_array().unwrap().len(), 1);
    assert!(u2["truncated"].is_null());
    // Removing a task from the list view makes it leave.
    assert_eq!(
        call(&s, &sid, &format!("ListView/{lv}/ModifyListView"), json!({"remove": [moref("Task", &tasks[0])]})).0,
        200
    );
    s.json("POST", &format!("{R}/Task/{}/SetTaskState", tasks[1]), Some(r#"{"state":"running"}"#), Some(&sid));
    let (_, u3) = wait(&s, &sid, "propertyCollector", u2["version"].as_str().unwrap(), 9, None);
    let kinds: Vec<&str> =
        u3["filterSet"][0]["objectSet"].as_array().unwrap().iter().map(|o| o["kind"].as_str().unwrap()).collect();
    assert!(kinds.contains(&"leave") && kinds.contains(&"modify"), "{kinds:?}");
}

#[test]
fn cancel_wait_for_updates() {
    let d = tempdir();
    let s = Server::start(d.path(), &[]);
    let sid = s.json_login(ADMIN, PW);
    let t = setup(&s, &sid, 1).remove(0);
    let spec = json!({"spec": {"_typeName": "PropertyFilterSpec", "propSet": [{"_typeName": "PropertySpec", "type": "Task", "all": true}],
        "objectSet": [{"_typeName": "ObjectSpec", "obj": moref("Task", &t)}]}, "partialUpdates": true});
    call(&s, &sid, "PropertyCollector/propertyCollector/CreateFilter", spec);
    let (_, u) = call(&s, &sid, "PropertyCollector/propertyCollector/WaitForUpdates", json!({"version": ""}));
    let v = u["version"].as_str().unwrap().to_string();
    let (base, sid2) = (s.base.clone(), sid.clone());
    let canceller = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(400));
        ureq::post(&format!("{base}{R}/PropertyCollector/propertyCollector/CancelWaitForUpdates"))
            .set("vmware-api-session-id", &sid2)
            .call()
            .unwrap()
            .status()
    });
    let (st, u) = call(&s, &sid, "PropertyCollector/propertyCollector/WaitForUpdates", json!({"version": v}));
    assert_eq!(canceller.join().unwrap(), 204);
    assert_eq!((st, u["_typeName"].as_str()), (500, Some("RequestCanceled")));
}

#[test]
fn a_thousand_waiters_wake_on_one_change() {
    // 1,000 clients, each with its own property collector and filter on one
    // task's state, all parked in WaitForUpdatesEx; one SetTaskState wakes
    // every one of them (waiters hold no server thread).
    const N: usize = 1000;
    let d = tempdir();
    let s = Server::start(d.path(), &[]);
    let sid = s.json_login(ADMIN, PW);
    let ext = serde_json::json!({"extension": {"_typeName": "Extension", "key": "com.example.many", "version": "1.0",
        "description": {"_typeName": "Description", "label": "m", "summary": "m"},
        "taskList": [{"_typeName": "ExtensionTaskTypeInfo", "taskID": "com.example.many.run"}]}});
    assert_eq!(s.call(&sid, "ExtensionManager/ExtensionManager/RegisterExtension", ext).0, 204);
    let (_, v) = s.call(&sid, "TaskManager/TaskManager/CreateTask", serde_json::json!({"obj": {"_typeName": "ManagedObjectReference", "type": "Folder", "value": "group-d1"}, "taskTypeId": "com.example.many.run", "cancelable": false}));
    let task = v["key"].as_str().unwrap().to_string();
    assert_eq!(s.call(&sid, &format!("Task/{task}/SetTaskState"), serde_json::json!({"state": "running"})).0, 204);
    let barrier = std::sync::Barrier::new(N + 1);
    let woken = std::sync::atomic::AtomicUsize::new(0);
    std::thread::scope(|sc| {
        for _ in 0..N {
            std::thread::Builder::new()
                .stack_size(256 << 10)
                .spawn_scoped(sc, || {
                    // Each client keeps its own connection, as real ones do.
                    let agent = ureq::AgentBuilder::new().max_idle_connections_per_host(1).build();
                    let call = |path: &str, body: serde_json::Value| -> (u16, serde_json::Value) {
                        let r = agent.post(&s.url(&format!("{R}/{path}"))).set("vmware-api-session-id", &sid).send_string(&body.to_string());
                        let (st, b, _) = resp(r);
                        (st, if b.is_empty() { serde_json::Value::Null } else { json_value(&b) })
                    };
                    let (st, pc) = call("PropertyCollector/propertyCollector/CreatePropertyCollector", serde_json::json!({}));
                    assert_eq!(st, 200, "{pc}");
                    let pc = pc["value"].as_str().unwrap().to_string();
                    let spec = serde_json::json!({"spec": {"_typeName": "PropertyFilterSpec",
                        "propSet": [{"_typeName": "PropertySpec", "type": "Task", "pathSet": ["info.state"]}],
                        "objectSet": [{"_typeName": "ObjectSpec", "obj": {"_typeName": "ManagedObjectReference", "type": "Task", "value": task}}]},
                        "partialUpdates": false});
                    assert_eq!(call(&format!("PropertyCollector/{pc}/CreateFilter"), spec).0, 200);
                    let (_, first) = call(&format!("PropertyCollector/{pc}/WaitForUpdatesEx"), serde_json::json!({"version": ""}));
                    let version = first["version"].as_str().unwrap().to_string();
                    barrier.wait();
                    let (st, upd) = call(&format!("PropertyCollector/{pc}/WaitForUpdatesEx"), serde_json::json!({"version": version, "options": {"_typeName": "WaitOptions", "maxWaitSeconds": 120}}));
                    assert_eq!(st, 200, "{upd}");
                    assert!(upd.to_string().contains("success"), "{upd}");
                    woken.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                })
                .unwrap();
        }
        barrier.wait();
        // Let every waiter reach the server and park.
        std::thread::sleep(std::time::Duration::from_millis(1500));
        assert_eq!(woken.load(std::sync::atomic::Ordering::SeqCst), 0, "nobody wakes before the change");
        assert_eq!(s.call(&sid, &format!("Task/{task}/SetTaskState"), serde_json::json!({"state": "success"})).0, 204);
    });
    assert_eq!(woken.into_inner(), N);
}
