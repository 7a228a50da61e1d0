//! The engine without a wire: every property of every object in the default
//! inventory is complete (no required field unset), as strict clients need.
use std::sync::Arc;
use vtwin::engine::inventory::Shape;
use vtwin::engine::{mo, Ctx, Engine};
use vtwin::store::sqlite::SqliteStore;
use vtwin::store::Store;

#[test]
fn every_property_value_is_complete() {
    let d = tempfile::tempdir().unwrap();
    let store = Arc::new(SqliteStore::open(&d.path().join("db")).unwrap());
    let eng = Engine::open(
        store.clone(),
        d.path().to_path_buf(),
        Shape { datacenters: 1, hosts: 1, datastores: 1 },
        Some("pw".into()),
        Default::default(),
    )
    .unwrap()
    .engine;
    let admin = store.get_user("administrator@vsphere.local").unwrap().unwrap();
    let mut ctx = Ctx::new(vmodl::VersionId::by_wire("vim25", "9.1.0.0").unwrap());
    ctx.session = Some(eng.open_session(&admin, "en", "127.0.0.1", "test").unwrap());
    let mut objs: Vec<vmodl::MoRef> =
        vtwin::engine::SINGLETONS.iter().map(|(m, t)| vmodl::MoRef::new(*t, *m)).collect();
    objs.extend(eng.entities());
    let mut missing = vec![];
    let mut seen = 0;
    for o in &objs {
        for p in o.ty.all_props() {
            if let Some(v) = mo::property(&eng, &ctx, o, p.name).unwrap() {
                seen += 1;
                v.missing_required(&format!("{}:{}.{}", o.ty.name(), o.value, p.name), &mut missing);
            }
        }
    }
    assert!(seen > 50, "{seen}");
    assert!(missing.is_empty(), "required fields unset: {missing:#?}");
}

/// Faults never show the server's directories: a datastore path is written
/// as `[name] rel`, anything else under the data directory relative to it.
#[test]
fn faults_do_not_tell_server_paths() {
    let d = tempfile::tempdir().unwrap();
    let dir = std::fs::canonicalize(d.path()).unwrap();
    let store = Arc::new(SqliteStore::open(&dir.join("db")).unwrap());
    let eng = Engine::open(
        store,
        dir.clone(),
        Shape { datacenters: 1, hosts: 1, datastores: 1 },
        Some("pw".into()),
        Default::default(),
    )
    .unwrap()
    .engine;
    let root = std::fs::canonicalize(&eng.datastores()[0].2).unwrap();
    let file = root.join("fcd/abc/abc.vmdk");
    let f = vtwin::engine::Fault::new(
        vmodl::types::FileFault,
        format!("cannot open {}: gone; lock {}", file.display(), dir.join("vtwin.db").display()),
    )
    .with("file", file.display().to_string());
    let f = eng.scrub(f);
    let shown = format!("{} {:?}", f.message, f.data.str("file"));
    assert!(!shown.contains(&*dir.to_string_lossy()), "{shown}");
    assert_eq!(f.data.str("file"), Some("[LocalDS_0] fcd/abc/abc.vmdk"));
    assert_eq!(f.message, "cannot open [LocalDS_0] fcd/abc/abc.vmdk: gone; lock vtwin.db");
}
