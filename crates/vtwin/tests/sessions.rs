//! Sessions run out (idle and absolute), logins are throttled, and one user
//! cannot hold unbounded sessions or unfinished tasks: on the real binary.
mod common;
use common::*;
use serde_json::json;
use std::time::{Duration, Instant};

const R: &str = "/sdk/vim25/9.1.0.0";

fn fault(v: &serde_json::Value) -> &str {
    v.get("_typeName").and_then(|t| t.as_str()).unwrap_or("")
}

/// A plain authenticated call: the root folder's name.
fn name(s: &Server, sid: &str) -> (u16, serde_json::Value) {
    let (st, b, _) = s.json("GET", &format!("{R}/Folder/group-d1/name"), None, Some(sid));
    (st, json_value(&b))
}

fn login(s: &Server, user: &str, pw: &str) -> (u16, serde_json::Value, Option<String>) {
    let body = json!({"userName": user, "password": pw}).to_string();
    let (st, b, sid) = s.json("POST", &format!("{R}/SessionManager/SessionManager/Login"), Some(&body), None);
    (st, json_value(&b), sid)
}

fn add_user(dir: &std::path::Path, user: &str, pw: &str, role: &str) {
    let st = std::process::Command::new(bin())
        .args(["user", "add", user, "--password", pw, "--role", role])
        .arg("--data-dir")
        .arg(dir)
        .output()
        .unwrap();
    assert!(st.status.success());
}

#[test]
fn idle_sessions_end_and_busy_ones_end_at_their_lifetime() {
    let d = tempdir();
    let s = Server::start(d.path(), &["--session-idle-timeout", "1", "--session-max-lifetime", "4"]);
    let idle = s.json_login(ADMIN, PW);
    let busy = s.json_login(ADMIN, PW);
    assert_eq!(name(&s, &idle).0, 200);
    // The busy one is used every 300 ms, the idle one not at all.
    let start = Instant::now();
    while start.elapsed() < Duration::from_millis(2500) {
        assert_eq!(name(&s, &busy).0, 200, "a busy session ended before its lifetime");
        std::thread::sleep(Duration::from_millis(300));
    }
    let (st, v) = name(&s, &idle);
    assert_eq!((st, fault(&v)), (500, "NotAuthenticated"), "{v}");
    // Past four seconds in all, the busy one ends too.
    while start.elapsed() < Duration::from_millis(4600) {
        std::thread::sleep(Duration::from_millis(300));
        let _ = name(&s, &busy);
    }
    let (st, v) = name(&s, &busy);
    assert_eq!((st, fault(&v)), (500, "NotAuthenticated"), "{v}");
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(std::fs::metadata(d.path()).unwrap().permissions().mode() & 0o777, 0o700);
    // The rest is about the embedded store's file (the suite's second pass
    // runs on PostgreSQL, which has none).
    if std::env::var("VTWIN_DATABASE").is_ok_and(|v| !v.is_empty()) {
        return;
    }
    // Nothing in the store is a usable token.
    let fresh = s.json_login(ADMIN, PW);
    std::thread::sleep(Duration::from_millis(300));
    let db = std::fs::read(d.path().join("vtwin.db")).unwrap();
    let wal = std::fs::read(d.path().join("vtwin.db-wal")).unwrap_or_default();
    for hay in [&db, &wal] {
        assert!(!hay.windows(fresh.len()).any(|w| w == fresh.as_bytes()), "the token is stored in clear");
    }
    assert_eq!(std::fs::metadata(d.path().join("vtwin.db")).unwrap().permissions().mode() & 0o777, 0o600);
}

#[test]
fn logins_are_throttled_per_user_and_unknown_users_cost_the_same() {
    let d = tempdir();
    add_user(d.path(), "ro@vsphere.local", "Ro-Passw0rd!", "ReadOnly");
    let s = Server::start(d.path(), &[]);
    // Five wrong guesses are answered; then the user is held back, even
    // with the right password, for a backoff.
    for _ in 0..5 {
        let (st, v, _) = login(&s, "ro@vsphere.local", "wrong");
        assert_eq!((st, fault(&v)), (500, "InvalidLogin"), "{v}");
    }
    let (st, v, _) = login(&s, "ro@vsphere.local", "Ro-Passw0rd!");
    assert_eq!((st, fault(&v)), (500, "InvalidLogin"), "the right password during the backoff: {v}");
    // Guesses during the backoff cost no password check: 50 of them are quick.
    let t = Instant::now();
    for _ in 0..50 {
        assert_eq!(login(&s, "ro@vsphere.local", "wrong").0, 500);
    }
    let held = t.elapsed();
    std::thread::sleep(Duration::from_millis(2200));
    // The backoff doubled at the last failure counted: wait it out.
    let mut ok = false;
    for _ in 0..80 {
        if login(&s, "ro@vsphere.local", "Ro-Passw0rd!").0 == 200 {
            ok = true;
            break;
        }
        std::thread::sleep(Duration::from_millis(250));
    }
    assert!(ok, "the user never got in again");
    // Timing, on a server with no failures counted yet (fewer than five
    // here, so nothing is held back): one password check, for an unknown
    // user and for a known one with a wrong password, the best of two each.
    let d2 = tempdir();
    add_user(d2.path(), "ro@vsphere.local", "Ro-Passw0rd!", "ReadOnly");
    let s2 = Server::start(d2.path(), &[]);
    let time = |u: &str| {
        (0..2)
            .map(|_| {
                let t = Instant::now();
                let (st, v, _) = login(&s2, u, "wrong-password");
                assert_eq!((st, fault(&v)), (500, "InvalidLogin"), "{v}");
                t.elapsed()
            })
            .min()
            .unwrap()
    };
    let (known, unknown) = (time("ro@vsphere.local"), time("nobody-else@vsphere.local"));
    assert!(unknown * 3 > known && known * 3 > unknown, "known {known:?} vs unknown {unknown:?}");
    // 50 guesses held back cost less than 25 password checks would.
    assert!(held < known.min(unknown) * 25, "50 throttled guesses took {held:?}, one password check {known:?}");
}

#[test]
fn sessions_and_unfinished_tasks_per_user_are_capped() {
    let d = tempdir();
    let s = Server::start(d.path(), &["--max-sessions-per-user", "3", "--max-live-tasks-per-user", "2"]);
    let sids: Vec<String> = (0..3).map(|_| s.json_login(ADMIN, PW)).collect();
    let (st, v, _) = login(&s, ADMIN, PW);
    assert_eq!((st, fault(&v)), (500, "LimitExceeded"), "{v}");
    assert_eq!(v["limit"], 3, "{v}");
    let (st, _, _) = s.json("POST", &format!("{R}/SessionManager/SessionManager/Logout"), Some("{}"), Some(&sids[2]));
    assert_eq!(st, 204);
    let sid = s.json_login(ADMIN, PW);

    let ext = json!({"extension": {"_typeName": "Extension", "key": "com.example.cap", "version": "1.0",
        "description": {"_typeName": "Description", "label": "Cap", "summary": "Cap"},
        "taskList": [{"_typeName": "ExtensionTaskTypeInfo", "taskID": "com.example.cap.run"}]}});
    assert_eq!(s.call(&sid, "ExtensionManager/ExtensionManager/RegisterExtension", ext).0, 204);
    let create = || {
        s.call(&sid, "TaskManager/TaskManager/CreateTask", json!({"obj": {"_typeName": "ManagedObjectReference", "type": "Folder", "value": "group-d1"}, "taskTypeId": "com.example.cap.run", "cancelable": false}))
    };
    let a = create();
    assert_eq!(a.0, 200, "{}", a.1);
    assert_eq!(create().0, 200);
    let (st, v) = create();
    assert_eq!((st, fault(&v)), (500, "LimitExceeded"), "{v}");
    // An ended task no longer counts.
    let key = a.1["key"].as_str().unwrap();
    assert_eq!(s.call(&sid, &format!("Task/{key}/SetTaskState"), json!({"state": "success"})).0, 204);
    assert_eq!(create().0, 200);
}
