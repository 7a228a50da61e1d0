//! The role matrix, generated: every method of every type this server
//! serves objects of, called over VI/JSON as a NoAccess, a ReadOnly and an
//! Admin user on the real binary, against what the registry and our
//! privilege table (`engine::auth::privileges`) demand. Empty arguments: the
//! privilege checks on the object come before any argument is looked at.
mod common;
use common::*;
use serde_json::json;
use vmodl::TypeId;
use vtwin::engine::auth::privileges::{self, On};

const READ: &[&str] = &["System.Anonymous", "System.View", "System.Read"];

/// Methods left out: logging in and out (everyone may), and waits.
fn skipped(m: &str) -> bool {
    m.starts_with("Login")
        || matches!(
            m,
            "Logout"
                | "WaitForUpdates"
                | "WaitForUpdatesEx"
                | "CloneSession"
                | "ImpersonateUser"
                | "AcquireCloneTicket"
                | "AcquireGenericServiceTicket"
        )
}

/// What a ReadOnly user lacks to call `m` on an object of type `ty`: the
/// registry's privilege (or System.View) and the table's needs on the
/// object itself, its parent or the root folder.
fn beyond_read(ty: TypeId, m: &vmodl::MethodDef) -> Option<&'static str> {
    let floor = m.privilege.unwrap_or("System.View");
    if !READ.contains(&floor) {
        return Some(floor);
    }
    privileges::rule(ty, m.name)?
        .needs
        .iter()
        .filter(|n| matches!(n.on, On::This | On::Parent | On::Root))
        .map(|n| n.privilege)
        .find(|p| !READ.contains(p))
}

fn fault_type(body: &serde_json::Value) -> String {
    body.get("_typeName").and_then(|t| t.as_str()).unwrap_or("").to_string()
}

#[test]
fn every_method_against_the_role_table() {
    let dir = tempdir();
    let s = Server::start(dir.path(), &["--datastores", "2"]);
    for (u, role) in [("ro@vsphere.local", "ReadOnly"), ("na@vsphere.local", "NoAccess")] {
        let st = std::process::Command::new(bin())
            .args(["user", "add", u, "--password", "Role-Passw0rd!", "--role", role])
            .arg("--data-dir")
            .arg(dir.path())
            .status()
            .unwrap();
        assert!(st.success());
    }
    let admin = s.json_login(ADMIN, PW);
    let ro = s.json_login("ro@vsphere.local", "Role-Passw0rd!");
    let na = s.json_login("na@vsphere.local", "Role-Passw0rd!");

    // The objects: the singletons, then the inventory below the root folder.
    let get = |path: &str| -> serde_json::Value {
        let (st, b, _) = s.json("GET", &format!("/sdk/vim25/9.1.0.0/{path}"), None, Some(&admin));
        assert_eq!(st, 200, "{path}: {b}");
        json_value(&b)
    };
    let mut objects: Vec<(String, String)> =
        vtwin::engine::SINGLETONS.iter().map(|(m, t)| (t.name().to_string(), m.to_string())).collect();
    let mut queue = vec![("Folder".to_string(), "group-d1".to_string())];
    while let Some((ty, id)) = queue.pop() {
        objects.push((ty.clone(), id.clone()));
        let props: &[&str] = match ty.as_str() {
            "Folder" => &["childEntity"],
            "Datacenter" => &["hostFolder", "datastore"],
            "ComputeResource" => &["host", "resourcePool"],
            _ => &[],
        };
        for p in props {
            let v = get(&format!("{ty}/{id}/{p}"));
            let items = if v.is_array() { v.as_array().unwrap().clone() } else { vec![v] };
            for r in items {
                let (t, m) = (r["type"].as_str().unwrap().to_string(), r["value"].as_str().unwrap().to_string());
                if !objects.contains(&(t.clone(), m.clone())) && !queue.contains(&(t.clone(), m.clone())) {
                    queue.push((t, m));
                }
            }
        }
        if ty == "HostSystem" {
            objects.push(("HostDatastoreSystem".into(), format!("datastoreSystem-{id}")));
            objects.push(("HostStorageSystem".into(), format!("storageSystem-{id}")));
        }
    }
    assert!(
        objects.iter().any(|(t, _)| t == "Datastore") && objects.iter().any(|(t, _)| t == "HostSystem"),
        "{objects:?}"
    );

    let mut calls = 0;
    let mut bad = vec![];
    let mut refused_by: std::collections::BTreeMap<&str, (usize, usize)> = Default::default();
    // NoAccess and ReadOnly first: Admin's calls may change things.
    for (who, sid) in [("NoAccess", &na), ("ReadOnly", &ro), ("Admin", &admin)] {
        for (tname, moid) in &objects {
            let ty = TypeId::by_name(tname).unwrap();
            let mut t = Some(ty);
            let mut seen = std::collections::HashSet::new();
            while let Some(cur) = t {
                for m in cur.def().methods {
                    if skipped(m.name) || !seen.insert(m.name) || m.privilege == Some("System.Anonymous") {
                        continue;
                    }
                    let segment = if vmodl::VersionId::by_wire("vim25", "9.1.0.0").unwrap().includes(m.version) {
                        ""
                    } else {
                        "vsan/"
                    };
                    let (st, b, _) = s.json(
                        "POST",
                        &format!("/sdk/vim25/9.1.0.0/{segment}{tname}/{moid}/{}", m.name),
                        Some("{}"),
                        Some(sid),
                    );
                    let body = if b.is_empty() { json!(null) } else { serde_json::from_str(&b).unwrap_or(json!(null)) };
                    let refused = st == 500 && fault_type(&body) == "NoPermission";
                    let want_refused = match who {
                        "NoAccess" => true,
                        "ReadOnly" => beyond_read(ty, m).is_some(),
                        _ => false,
                    };
                    calls += 1;
                    let e = refused_by.entry(who).or_default();
                    e.0 += refused as usize;
                    e.1 += 1;
                    if refused != want_refused {
                        bad.push(format!(
                            "{who} {tname}/{moid}.{}: {} (wanted {})",
                            m.name,
                            if refused { "NoPermission".to_string() } else { format!("{st} {}", fault_type(&body)) },
                            if want_refused { "NoPermission" } else { "no NoPermission" }
                        ));
                    }
                }
                t = cur.def().base.filter(|b| b.kind() == vmodl::Kind::Managed);
            }
        }
    }
    eprintln!("refused / called, by role: {refused_by:?}");
    assert!(calls > 300, "only {calls} calls");
    // ReadOnly is refused some and allowed others; Admin nothing.
    let ro = refused_by["ReadOnly"];
    assert!(ro.0 > 20 && ro.0 < ro.1, "{ro:?}");
    assert!(bad.is_empty(), "{} of {calls} calls disagree with the table:\n{}", bad.len(), bad.join("\n"));
    // The server is still up and the admin session good.
    assert_eq!(s.json("GET", "/sdk/vim25/9.1.0.0/Folder/group-d1/name", None, Some(&admin)).0, 200);
}
