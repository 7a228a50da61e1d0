//! The store interface, the same checks on both backends: SQLite in a
//! directory and PostgreSQL (`VTWIN_TEST_POSTGRES`, a postgres:// URL; each
//! test takes a schema of its own). Then two nodes on one PostgreSQL
//! database: a session made on one is valid on the other.
mod common;
use common::*;
use std::sync::Arc;
use vtwin::store::postgres::PgStore;
use vtwin::store::sqlite::SqliteStore;
use vtwin::store::*;

/// The test database, or None (the test is skipped, and says so) when none
/// is configured. scripts/test.sh starts one and sets
/// VTWIN_REQUIRE_POSTGRES, so there a missing database fails instead.
fn pg_url() -> Option<String> {
    match std::env::var("VTWIN_TEST_POSTGRES") {
        Ok(u) if !u.is_empty() => Some(u),
        _ if std::env::var_os("VTWIN_REQUIRE_POSTGRES").is_some() => {
            panic!("VTWIN_TEST_POSTGRES must name a PostgreSQL database (VTWIN_REQUIRE_POSTGRES is set)")
        }
        _ => {
            eprintln!("skipped: VTWIN_TEST_POSTGRES names no PostgreSQL database (scripts/test.sh starts one)");
            None
        }
    }
}

fn schema() -> String {
    format!("t_{}", uuid::Uuid::new_v4().simple())
}

fn with_schema(url: &str, s: &str) -> String {
    format!("{url}{}schema={s}", if url.contains('?') { '&' } else { '?' })
}

fn conformance(open: &dyn Fn() -> Arc<dyn Store>) {
    let st = open();
    // meta
    assert_eq!(st.get_meta("k").unwrap(), None);
    st.set_meta("k", "v1").unwrap();
    st.set_meta("k", "v2").unwrap();
    assert_eq!(st.get_meta("k").unwrap().as_deref(), Some("v2"));
    // users; another node (a second handle) sees its version change
    let other = open();
    let v0 = other.external_version().unwrap();
    let u = UserRecord { name: "a@vsphere.local".into(), password_hash: "h1".into(), full_name: "a".into() };
    st.put_user(&u).unwrap();
    st.put_user(&UserRecord { password_hash: "h2".into(), ..u.clone() }).unwrap();
    assert_eq!(st.get_user("a@vsphere.local").unwrap().unwrap().password_hash, "h2");
    assert_eq!(st.list_users().unwrap().len(), 1);
    assert!(st.get_user("nobody").unwrap().is_none());
    let v1 = other.external_version().unwrap();
    assert_ne!(v1, v0, "a user change is seen by another node");
    // objects
    let o = |m: &str, n: &str| ObjectRecord {
        moid: m.into(),
        ty: "Folder".into(),
        name: n.into(),
        parent: None,
        attrs: serde_json::json!({"x": 1}),
    };
    st.put_objects(&[o("group-1", "a"), o("group-2", "b")]).unwrap();
    st.put_objects(&[o("group-1", "a2")]).unwrap();
    let mut objs = st.list_objects().unwrap();
    objs.sort_by(|a, b| a.moid.cmp(&b.moid));
    assert_eq!((objs.len(), objs[0].name.as_str(), objs[0].attrs["x"].as_i64()), (2, "a2", Some(1)));
    st.delete_object("group-2").unwrap();
    assert_eq!(st.list_objects().unwrap().len(), 1);
    // permissions
    let p = PermissionRecord {
        entity: "group-d1".into(),
        principal: "a@vsphere.local".into(),
        group: false,
        role_id: -1,
        propagate: true,
    };
    st.put_permission(&p).unwrap();
    st.put_permission(&PermissionRecord { role_id: -2, ..p.clone() }).unwrap();
    assert_eq!(st.list_permissions().unwrap(), vec![PermissionRecord { role_id: -2, ..p.clone() }]);
    assert!(st.remove_permission("group-d1", "a@vsphere.local", false).unwrap());
    assert!(!st.remove_permission("group-d1", "a@vsphere.local", false).unwrap());
    assert_ne!(other.external_version().unwrap(), v1, "a permission change is seen by another node");
    assert!(other.get_user("a@vsphere.local").unwrap().is_some());
    drop(other);
    // sessions
    let s = SessionRecord {
        token: "t1".into(),
        key: "k1".into(),
        user: "a".into(),
        login_time: 1,
        last_active: 2,
        locale: "en".into(),
        ip: "::1".into(),
        user_agent: "ua".into(),
    };
    st.apply_sessions(&[SessionOp::Put(s.clone()), SessionOp::Put(SessionRecord { last_active: 5, ..s.clone() })])
        .unwrap();
    assert_eq!(st.get_session("t1").unwrap().unwrap().last_active, 5);
    st.apply_sessions(&[SessionOp::Delete("t1".into())]).unwrap();
    assert!(st.get_session("t1").unwrap().is_none());
    // tasks, by sequence; versions guard every change
    let row = |k: &str, seq: i64, owner: &str, live: bool, r: &str| TaskRow {
        key: k.into(),
        seq,
        version: 1,
        owner: owner.into(),
        live,
        record: r.into(),
    };
    st.insert_task(&row("task-2", 2, "n1#a", true, "{\"b\":1}")).unwrap();
    st.insert_task(&row("task-1", 1, "n1#a", false, "{\"a\":1}")).unwrap();
    assert!(st.insert_task(&row("task-1", 1, "n1#a", false, "{}")).is_err(), "a key is added once");
    assert_eq!(st.update_task("task-1", 1, false, "{\"a\":2}").unwrap(), Some(2));
    assert_eq!(st.update_task("task-1", 1, false, "{\"a\":3}").unwrap(), None, "a stale version loses");
    assert_eq!(st.update_task("task-9", 1, false, "{}").unwrap(), None);
    let t = st.list_tasks().unwrap();
    assert_eq!(
        t,
        vec![
            TaskRow { version: 2, ..row("task-1", 1, "n1#a", false, "{\"a\":2}") },
            row("task-2", 2, "n1#a", true, "{\"b\":1}")
        ]
    );
    assert_eq!(
        st.get_tasks(&["task-2".into(), "task-7".into()]).unwrap(),
        vec![row("task-2", 2, "n1#a", true, "{\"b\":1}")]
    );
    // sequence blocks never overlap, and start past every kept task
    let (f1, n1) = st.task_seqs().unwrap();
    let (f2, n2) = st.task_seqs().unwrap();
    assert!(n1 > 0 && n2 > 0 && (f2 >= f1 + n1 || f1 >= f2 + n2), "{f1}+{n1} {f2}+{n2}");
    // leases: a live task of a node whose lease holds is not claimed; an
    // earlier life of the claiming node's name is; claims return the old owner
    let embedded = is_embedded(&st);
    st.heartbeat("n1#a", 60_000).unwrap();
    // A live node also holds its life's lock (its watch connection does).
    let life = open();
    life.watch_tasks("n1#a", Box::new(|_| {})).unwrap();
    assert_eq!(
        st.claim_orphans("n2#b", "n2#").unwrap(),
        if embedded {
            vec![TaskRow { version: 2, owner: "n1#a".into(), ..row("task-2", 2, "", true, "{\"b\":1}") }]
        } else {
            vec![]
        }
    );
    if !embedded {
        let got = st.claim_orphans("n1#c", "n1#").unwrap();
        assert_eq!(got, vec![TaskRow { version: 2, owner: "n1#a".into(), ..row("task-2", 2, "", true, "{\"b\":1}") }]);
        assert_eq!(st.get_tasks(&["task-2".into()]).unwrap()[0].owner, "n1#c");
        assert!(st.claim_orphans("n1#c", "n1#").unwrap().is_empty(), "claimed once");
        // a lease that ran out
        st.heartbeat("n1#c", 1).unwrap();
        std::thread::sleep(std::time::Duration::from_millis(20));
        assert_eq!(st.claim_orphans("n3#d", "n3#").unwrap().len(), 1);
        st.release("n3#d").unwrap();
    }
    st.delete_tasks(&["task-1".into(), "task-9".into()]).unwrap();
    assert_eq!(st.list_tasks().unwrap().len(), 1);
    // extensions
    st.put_extension("com.x", "{}").unwrap();
    assert_eq!(st.list_extensions().unwrap(), vec![("com.x".to_string(), "{}".to_string())]);
    assert!(st.delete_extension("com.x").unwrap());
    assert!(!st.delete_extension("com.x").unwrap());
    drop(st);
    // Reopened (migrations already applied): the data is there.
    let st = open();
    assert_eq!(st.get_meta("k").unwrap().as_deref(), Some("v2"));
    assert_eq!(st.list_tasks().unwrap().len(), 1);
}

/// The embedded store has one node: every other owner is gone. (Asks by
/// watching as a node of its own.)
fn is_embedded(st: &Arc<dyn Store>) -> bool {
    !st.watch_tasks(&format!("probe#{}", uuid::Uuid::new_v4().simple()), Box::new(|_| {})).unwrap()
}

#[test]
fn sqlite_store() {
    let d = tempdir();
    let path = d.path().join("vtwin.db");
    conformance(&|| Arc::new(SqliteStore::open(&path).unwrap()) as Arc<dyn Store>);
}

#[test]
fn postgres_store() {
    let Some(pg) = pg_url() else { return };
    let url = with_schema(&pg, &schema());
    conformance(&|| Arc::new(PgStore::open(&url).unwrap()) as Arc<dyn Store>);
}

#[test]
fn postgres_nodes_migrate_once_together() {
    let Some(pg) = pg_url() else { return };
    let url = with_schema(&pg, &schema());
    let nodes: Vec<_> = (0..4)
        .map(|_| {
            let url = url.clone();
            std::thread::spawn(move || PgStore::open(&url).map(|_| ()))
        })
        .collect();
    for n in nodes {
        n.join().unwrap().expect("every node opens the store");
    }
    assert!(PgStore::open("postgres://x@127.0.0.1:1/none?schema=bad-name").is_err());
}

#[test]
fn a_session_made_on_one_node_is_valid_on_another() {
    let Some(pg) = pg_url() else { return };
    let url = with_schema(&pg, &schema());
    let d = tempdir();
    let a = Server::start(d.path(), &["--database", &url]);
    let sid = a.json_login(ADMIN, PW);
    let cookie = a.soap_login(ADMIN, PW);
    let b = Server::start(d.path(), &["--database", &url]);
    let (st, body, _) = b.json("GET", "/sdk/vim25/9.1.0.0/Folder/group-d1/childEntity", None, Some(&sid));
    assert_eq!(st, 200, "{body}");
    let (st, body, _) = b.soap(
        &envelope(r#"<RetrievePropertiesEx xmlns="urn:vim25"><_this type="PropertyCollector">propertyCollector</_this><specSet><propSet><type>SessionManager</type><pathSet>currentSession</pathSet></propSet><objectSet><obj type="SessionManager">SessionManager</obj></objectSet></specSet><options/></RetrievePropertiesEx>"#),
        Some(&cookie),
    );
    assert_eq!(st, 200, "{body}");
    assert!(body.contains("administrator"), "{body}");
    // Users added on A (through the store) log in on B.
    let out = std::process::Command::new(bin())
        .args(["user", "add", "pg@vsphere.local", "--password", "Pg-Passw0rd!", "--role", "ReadOnly", "--data-dir"])
        .arg(d.path())
        .env("VTWIN_DATABASE", &url)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let _ = b.json_login("pg@vsphere.local", "Pg-Passw0rd!");
    // Inventory made on either node shows on the other, numbered from one
    // shared counter (no moId is handed out twice).
    let mk = |s: &Server, name: &str| {
        let (st, body, _) = s.json(
            "POST",
            "/sdk/vim25/9.1.0.0/Folder/group-d1/CreateFolder",
            Some(&format!(r#"{{"name":"{name}"}}"#)),
            Some(&sid),
        );
        assert_eq!(st, 200, "{body}");
        serde_json::from_str::<serde_json::Value>(&body).unwrap()["value"].as_str().unwrap().to_string()
    };
    let fa = mk(&a, "made-on-a");
    let fb = mk(&b, "made-on-b");
    assert_ne!(fa, fb);
    for (s, other) in [(&a, &fb), (&b, &fa)] {
        let (st, body, _) = s.json("GET", &format!("/sdk/vim25/9.1.0.0/Folder/{other}/name"), None, Some(&sid));
        assert_eq!(st, 200, "{body}");
        let (_, body, _) = s.json("GET", "/sdk/vim25/9.1.0.0/Folder/group-d1/childEntity", None, Some(&sid));
        assert!(body.contains(&fa) && body.contains(&fb), "{body}");
    }
    drop(a);
    drop(b);
}
