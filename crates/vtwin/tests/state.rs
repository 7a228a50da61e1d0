//! Users, privileges, persistence, datastore file access and metrics.
mod common;
use common::*;
use std::process::Command;

const R: &str = "/sdk/vim25/9.1.0.0";

fn user_add(dir: &std::path::Path, name: &str, pw: &str, role: &str) {
    let out = Command::new(bin())
        .args(["user", "add", name, "--password", pw, "--role", role, "--data-dir"])
        .arg(dir)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
}

fn fault_type(b: &str) -> String {
    json_value(b)["_typeName"].as_str().unwrap_or("").to_string()
}

#[test]
fn roles_are_enforced_for_every_method() {
    let d = tempdir();
    let s = Server::start(d.path(), &[]);
    // Users added while the server runs.
    user_add(d.path(), "reader@vsphere.local", "Reader-1!", "ReadOnly");
    user_add(d.path(), "nobody@vsphere.local", "Nobody-1!", "NoAccess");
    let ro = s.json_login("reader@vsphere.local", "Reader-1!");
    let (st, b, _) = s.json("GET", &format!("{R}/Folder/group-d1/childEntity"), None, Some(&ro));
    assert_eq!(st, 200, "{b}");
    let (st, b, _) = s.json("POST", &format!("{R}/Folder/group-d1/CreateFolder"), Some(r#"{"name":"x"}"#), Some(&ro));
    assert_eq!((st, fault_type(&b)), (500, "NoPermission".to_string()), "{b}");
    assert_eq!(json_value(&b)["privilegeId"], "Folder.Create");

    let na = s.json_login("nobody@vsphere.local", "Nobody-1!");
    let (st, b, _) = s.json("GET", &format!("{R}/Folder/group-d1/childEntity"), None, Some(&na));
    assert_eq!((st, fault_type(&b)), (500, "NoPermission".to_string()), "{b}");
    // The property collector shows a NoAccess user nothing.
    let spec = r#"{"specSet":[{"_typeName":"PropertyFilterSpec","propSet":[{"_typeName":"PropertySpec","type":"Folder","pathSet":["name"]}],"objectSet":[{"_typeName":"ObjectSpec","obj":{"_typeName":"ManagedObjectReference","type":"Folder","value":"group-d1"}}]}]}"#;
    let (st, b, _) =
        s.json("POST", &format!("{R}/PropertyCollector/propertyCollector/RetrievePropertiesEx"), Some(spec), Some(&na));
    assert_eq!((st, b.as_str()), (204, ""));

    // An admin grants the NoAccess user ReadOnly on DC0 only.
    let admin = s.json_login(ADMIN, PW);
    let (_, b, _) = s.json("GET", &format!("{R}/Folder/group-d1/childEntity"), None, Some(&admin));
    let dc = json_value(&b)[0]["value"].as_str().unwrap().to_string();
    let body = format!(
        r#"{{"entity":{{"_typeName":"ManagedObjectReference","type":"Datacenter","value":"{dc}"}},"permission":[{{"_typeName":"Permission","principal":"VSPHERE.LOCAL\\nobody","group":false,"roleId":-2,"propagate":true}}]}}"#
    );
    let (st, b, _) = s.json(
        "POST",
        &format!("{R}/AuthorizationManager/AuthorizationManager/SetEntityPermissions"),
        Some(&body),
        Some(&admin),
    );
    assert_eq!(st, 204, "{b}");
    let (st, b, _) = s.json("GET", &format!("{R}/Datacenter/{dc}/name"), None, Some(&na));
    assert_eq!((st, b.as_str()), (200, "\"DC0\""));
    // Unknown principals are refused.
    let body = body.replace("nobody", "ghost");
    let (_, b, _) = s.json(
        "POST",
        &format!("{R}/AuthorizationManager/AuthorizationManager/SetEntityPermissions"),
        Some(&body),
        Some(&admin),
    );
    assert_eq!(fault_type(&b), "UserNotFound");
    // The ReadOnly user may not change permissions (parameter privilege).
    let (_, b, _) = s.json(
        "POST",
        &format!("{R}/AuthorizationManager/AuthorizationManager/SetEntityPermissions"),
        Some(&body),
        Some(&ro),
    );
    assert_eq!(fault_type(&b), "NoPermission");
    // HasPrivilegeOnEntity answers per privilege.
    let (_, b, _) = s.json("GET", &format!("{R}/SessionManager/SessionManager/currentSession"), None, Some(&ro));
    let key = json_value(&b)["key"].as_str().unwrap().to_string();
    let body = format!(
        r#"{{"entity":{{"_typeName":"ManagedObjectReference","type":"Datacenter","value":"{dc}"}},"sessionId":"{key}","privId":["System.Read","Folder.Create"]}}"#
    );
    let (st, b, _) = s.json(
        "POST",
        &format!("{R}/AuthorizationManager/AuthorizationManager/HasPrivilegeOnEntity"),
        Some(&body),
        Some(&admin),
    );
    assert_eq!((st, json_value(&b)), (200, serde_json::json!([true, false])));
}

#[test]
fn restart_keeps_users_inventory_and_sessions() {
    let d = tempdir();
    let (sid, folder) = {
        let s = Server::start(d.path(), &[]);
        user_add(d.path(), "keeper@vsphere.local", "Keeper-1!", "Admin");
        let sid = s.json_login("keeper@vsphere.local", "Keeper-1!");
        let (st, b, _) =
            s.json("POST", &format!("{R}/Folder/group-d1/CreateFolder"), Some(r#"{"name":"Projects"}"#), Some(&sid));
        assert_eq!(st, 200, "{b}");
        (sid, json_value(&b)["value"].as_str().unwrap().to_string())
    };
    let s = Server::start(d.path(), &[]);
    let (st, b, _) = s.json("GET", &format!("{R}/Folder/{folder}/name"), None, Some(&sid));
    assert_eq!((st, b.as_str()), (200, "\"Projects\""), "session and folder survive");
    s.json_login("keeper@vsphere.local", "Keeper-1!");
    s.json_login(ADMIN, PW);
}

#[test]
fn generated_admin_password_is_printed_once() {
    let d = tempdir();
    let run = || {
        let mut c = Command::new(bin())
            .args(["serve", "--plain-http", "--listen", "127.0.0.1:0", "--data-dir"])
            .arg(d.path())
            .env_remove("VTWIN_ADMIN_PASSWORD")
            .stdout(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        use std::io::BufRead;
        let mut out = std::io::BufReader::new(c.stdout.take().unwrap());
        let mut lines = vec![];
        loop {
            let mut l = String::new();
            out.read_line(&mut l).unwrap();
            let done = l.starts_with("vtwin listening");
            lines.push(l);
            if done {
                break;
            }
        }
        let _ = c.kill();
        let _ = c.wait();
        lines
    };
    let first = run();
    let pw = first[0]
        .trim()
        .strip_prefix("generated password for administrator@vsphere.local: ")
        .expect("printed")
        .to_string();
    let second = run();
    assert!(second.iter().all(|l| !l.contains("generated password")), "{second:?}");
    // Only the hash is stored, on either backend.
    let store = vtwin::store::open(d.path(), None).unwrap();
    let users = store.list_users().unwrap();
    assert!(
        !users.is_empty()
            && users.iter().all(|u| !u.password_hash.contains(&pw) && u.password_hash.starts_with("$argon2"))
    );
    if let Ok(db) = std::fs::read(d.path().join("vtwin.db")) {
        assert!(!db.windows(pw.len()).any(|w| w == pw.as_bytes()), "only the hash is stored");
    }
}

#[test]
fn datastore_files_over_http() {
    let d = tempdir();
    let s = Server::start(d.path(), &[]);
    let cookie = s.soap_login(ADMIN, PW);
    let url = s.url("/folder/vm1/disk.txt?dcPath=DC0&dsName=LocalDS_0");
    let r = ureq::put(&url).set("Cookie", &cookie).send_bytes(b"hello datastore");
    assert_eq!(resp(r).0, 201);
    assert_eq!(std::fs::read(d.path().join("datastores/LocalDS_0/vm1/disk.txt")).unwrap(), b"hello datastore");
    let (st, body, _) = resp(ureq::get(&url).set("Cookie", &cookie).call());
    assert_eq!((st, body.as_str()), (200, "hello datastore"));
    assert_eq!(resp(ureq::get(&url).call()).0, 401);
    // Path traversal is refused, also percent-encoded.
    for bad in ["/folder/../vtwin.db?dsName=LocalDS_0", "/folder/vm1/%2e%2e/%2e%2e/vtwin.db?dsName=LocalDS_0"] {
        let (st, _, _) = resp(ureq::get(&s.url(bad)).set("Cookie", &cookie).call());
        assert!(st == 400 || st == 404, "{bad}: {st}");
        assert_ne!(st, 200);
    }
    assert_eq!(resp(ureq::delete(&url).set("Cookie", &cookie).call()).0, 204);
    assert_eq!(resp(ureq::get(&url).set("Cookie", &cookie).call()).0, 404);
    assert_eq!(resp(ureq::get(&s.url("/folder/x?dsName=NoSuchDS")).set("Cookie", &cookie).call()).0, 404);
}

#[test]
fn metrics_count_requests_per_api_and_method() {
    let d = tempdir();
    let s = Server::start(d.path(), &[]);
    s.soap_login(ADMIN, PW);
    let sid = s.json_login(ADMIN, PW);
    // Metrics are for a logged-in reader (or --metrics-listen).
    let m = ureq::get(&s.url("/metrics")).set("vmware-api-session-id", &sid).call().unwrap().into_string().unwrap();
    assert!(m.contains(r#"vtwin_requests_total{api="soap",method="Login"} 1"#), "{m}");
    assert!(m.contains(r#"vtwin_requests_total{api="vijson",method="Login"} 1"#), "{m}");
    // Label order carries no meaning in the exposition format: compare label sets.
    let inf = m.lines().find(|l| {
        l.split_once('{').is_some_and(|(name, rest)| {
            let mut labels: Vec<&str> = rest.rsplit_once('}').map_or("", |r| r.0).split(',').collect();
            labels.sort_unstable();
            name == "vtwin_request_duration_seconds_bucket"
                && labels == [r#"api="soap""#, r#"le="+Inf""#, r#"method="Login""#]
        })
    });
    assert!(inf.is_some_and(|l| l.ends_with("} 1")), "{m}");
}

#[test]
fn inventory_flags_shape_the_first_start() {
    let d = tempdir();
    let s = Server::start(d.path(), &["--datacenters", "2", "--hosts", "2", "--datastores", "2"]);
    let sid = s.json_login(ADMIN, PW);
    let body = r#"{"inventoryPath":"DC1/host/DC1_H1/DC1_H1"}"#;
    let (st, b, _) =
        s.json("POST", &format!("{R}/SearchIndex/SearchIndex/FindByInventoryPath"), Some(body), Some(&sid));
    assert_eq!(st, 200, "{b}");
    assert_eq!(json_value(&b)["type"], "HostSystem");
    let body = r#"{"inventoryPath":"DC1/datastore/DC1_LocalDS_1"}"#;
    let (st, b, _) =
        s.json("POST", &format!("{R}/SearchIndex/SearchIndex/FindByInventoryPath"), Some(body), Some(&sid));
    assert_eq!((st, json_value(&b)["type"].as_str().unwrap()), (200, "Datastore"));
    assert!(d.path().join("datastores/DC1_LocalDS_1").is_dir());
    let (st, b, _) = s.json(
        "POST",
        &format!("{R}/SearchIndex/SearchIndex/FindByInventoryPath"),
        Some(r#"{"inventoryPath":"DC9"}"#),
        Some(&sid),
    );
    assert_eq!((st, b.as_str()), (204, ""));
}
