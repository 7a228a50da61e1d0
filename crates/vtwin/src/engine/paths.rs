//! Containment: every path the engine derives from client input (datastore
//! paths, first-class-disk ids, names) is made here and proven to lie inside
//! its datastore. Nothing else joins client text onto a directory.
use super::inventory::Inventory;
use super::Fault;
use std::path::{Component, Path, PathBuf};
use vmodl::types;

/// A datastore path (`[name] dir/file`) resolved to a real path inside the
/// datastore's directory.
#[derive(Debug, Clone)]
pub struct DsPath {
    /// The datastore's moId.
    pub datastore: String,
    /// The datastore's directory.
    pub root: PathBuf,
    /// The path relative to the root, as the client wrote it (no leading `/`).
    pub rel: String,
    /// root + rel, proven inside root.
    pub path: PathBuf,
}

/// `rel` (a relative path, `/`-separated) under `root`, proven inside it:
/// no `..`, no absolute component, no NUL or backslash, and no symbolic
/// link on the way that leads out of the datastore. `param` names the
/// argument in the fault.
pub fn contained(root: &Path, rel: &str, param: &str) -> Result<PathBuf, Fault> {
    let bad = |why: &str| Fault::invalid_argument(param, format!("'{rel}' is not a path inside the datastore: {why}"));
    if rel.contains('\0') || rel.contains('\\') {
        return Err(bad("it holds a NUL or a backslash"));
    }
    let mut out = root.to_path_buf();
    for comp in Path::new(rel.trim_start_matches('/')).components() {
        match comp {
            Component::Normal(c) => out.push(c),
            Component::CurDir => {}
            Component::ParentDir => return Err(bad("'..' is not allowed")),
            Component::RootDir | Component::Prefix(_) => return Err(bad("it is absolute")),
        }
    }
    prove_inside(root, &out).map_err(|_| bad("it leads out of the datastore"))?;
    Ok(out)
}

/// Is `path` (already joined) inside `root`, following every symbolic link
/// that exists on the way? The deepest existing ancestor is resolved; the
/// rest must be plain names.
pub fn prove_inside(root: &Path, path: &Path) -> Result<(), Fault> {
    let outside = || Fault::invalid_argument("path", "the path is outside the datastore");
    if path.components().any(|c| matches!(c, Component::ParentDir)) {
        return Err(outside());
    }
    let root = real_path(root).ok_or_else(outside)?;
    match real_path(path) {
        Some(real) if real.starts_with(&root) => Ok(()),
        _ => Err(outside()),
    }
}

/// `p` with every symbolic link resolved: its deepest existing ancestor
/// canonicalized, the names below it (which do not exist yet) appended.
/// None for a dangling link on the way (a way out that cannot be judged).
fn real_path(p: &Path) -> Option<PathBuf> {
    let mut probe = p.to_path_buf();
    let mut rest: Vec<std::ffi::OsString> = vec![];
    loop {
        if let Ok(real) = std::fs::canonicalize(&probe) {
            let mut out = real;
            out.extend(rest.iter().rev());
            return Some(out);
        }
        if std::fs::symlink_metadata(&probe).is_ok() {
            return None;
        }
        rest.push(probe.file_name()?.to_os_string());
        if !probe.pop() {
            return None;
        }
    }
}

/// Resolve `[name] rel/path` on a datastore of the inventory. `param` names
/// the argument in faults.
pub fn resolve(inv: &Inventory, path: &str, param: &str) -> Result<DsPath, Fault> {
    let bad = || Fault::invalid_argument(param, format!("'{path}' is not a datastore path ([datastore] dir/file)"));
    let rest = path.trim().strip_prefix('[').ok_or_else(bad)?;
    let (name, rel) = rest.split_once(']').ok_or_else(bad)?;
    let e = inv.objects.values().find(|e| e.moref.ty == types::Datastore && e.name == name).ok_or_else(|| {
        Fault::new(types::InvalidDatastore, format!("no datastore named '{name}'")).with("name", name.to_string())
    })?;
    let root = PathBuf::from(e.attr("path").unwrap_or_default());
    let rel = rel.trim().trim_start_matches('/').to_string();
    let full = contained(&root, &rel, param)?;
    Ok(DsPath { datastore: e.moref.value.clone(), root, rel, path: full })
}

/// Does `path` lie inside one of the inventory's datastores? (For files a
/// client-supplied file names in turn: a VMDK's parent, say.)
pub fn on_a_datastore(inv: &Inventory, path: &Path) -> bool {
    inv.objects
        .values()
        .filter(|e| e.moref.ty == types::Datastore)
        .filter_map(|e| e.attr("path"))
        .any(|root| prove_inside(Path::new(root), path).is_ok())
}

/// A first-class-disk id chosen by a client: vCenter's form, a UUID
/// (`6f1b5c2e-…`, 36 characters), kept as the client wrote it. Anything else
/// is InvalidArgument.
pub fn disk_id(id: &str, param: &str) -> Result<String, Fault> {
    match uuid::Uuid::parse_str(id) {
        Ok(_) if id.len() == 36 => Ok(id.to_string()),
        _ => Err(Fault::invalid_argument(param, format!("'{id}' is not a valid id: first-class disk ids are UUIDs"))),
    }
}

/// May this id name a disk directory at all? (Looking a disk up by an id
/// that cannot be one answers NotFound, not a path.) Ids of disks made
/// before ids were checked are plain names too.
pub fn plausible_disk_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= 128
        && id.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
        && id != "."
        && id != ".."
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn contained_refuses_every_way_out() {
        let d = tempfile::tempdir().unwrap();
        let root = d.path().join("ds");
        std::fs::create_dir_all(root.join("fcd")).unwrap();
        let outside = d.path().join("outside");
        std::fs::create_dir_all(&outside).unwrap();
        std::os::unix::fs::symlink(&outside, root.join("link")).unwrap();
        std::os::unix::fs::symlink(d.path().join("nowhere"), root.join("dangling")).unwrap();
        for rel in ["../outside", "fcd/../../outside", "link/x.vmdk", "link", "dangling/x", "a\\b", "a\0b"] {
            assert!(contained(&root, rel, "path").is_err(), "{rel} accepted");
        }
        assert_eq!(contained(&root, "/fcd/x.vmdk", "path").unwrap(), root.join("fcd/x.vmdk"));
        assert_eq!(contained(&root, "new/dir/x.vmdk", "path").unwrap(), root.join("new/dir/x.vmdk"));
        assert_eq!(contained(&root, "./fcd", "path").unwrap(), root.join("fcd"));
        // A directory that is not there yet (a datastore's first fcd/).
        assert_eq!(contained(&root.join("none/yet"), "id", "id").unwrap(), root.join("none/yet/id"));
    }

    #[test]
    fn disk_ids_are_uuids() {
        assert!(disk_id("../loose", "id").is_err());
        assert!(disk_id("/tmp/x", "id").is_err());
        assert!(disk_id("../../..", "id").is_err());
        assert!(disk_id("", "id").is_err());
        assert!(disk_id("6f1b5c2e0f6a4e7b9c1d2e3f4a5b6c7d", "id").is_err());
        assert_eq!(
            disk_id("6F1B5C2E-0F6A-4E7B-9C1D-2E3F4A5B6C7D", "id").unwrap(),
            "6F1B5C2E-0F6A-4E7B-9C1D-2E3F4A5B6C7D"
        );
        assert!(!plausible_disk_id("/tmp/x") && !plausible_disk_id("..") && plausible_disk_id("abc-1"));
    }
}
