//! Datastores as directories: where one is mounted, its space, and the two
//! changes a storage array makes under vCenter's feet, which the admin
//! surface stands in for: presenting a copy of a volume (a snapshot LUN, a
//! replica) and remounting a datastore under a new volume uuid.
use crate::engine::inventory::{link_by_name, mount_dir, vmfs_uuid, Entity};
use crate::engine::{Engine, Fault};
use crate::store::ObjectRecord;
use std::path::{Path, PathBuf};
use vmodl::{types, MoRef};

/// The file that marks a directory as a copy of a volume.
pub const MARKER: &str = ".vtwin-volume.json";

pub fn unresolved_dir(data_dir: &Path) -> PathBuf {
    data_dir.join("vmfs").join("unresolved")
}

/// A copy of a datastore's volume: (directory, original label, original uuid).
pub fn copies(data_dir: &Path) -> Vec<(PathBuf, String, String)> {
    let Ok(rd) = std::fs::read_dir(unresolved_dir(data_dir)) else { return vec![] };
    let mut v: Vec<_> = rd
        .flatten()
        .filter_map(|e| {
            let dir = e.path();
            let m: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(dir.join(MARKER)).ok()?).ok()?;
            Some((dir, m["label"].as_str()?.to_string(), m["uuid"].as_str()?.to_string()))
        })
        .collect();
    v.sort();
    v
}

/// The device path a copy shows as (its extent).
pub fn device_path(dir: &Path) -> String {
    format!(
        "/vmfs/devices/disks/vtwin.{}:1",
        dir.file_name().map(|f| f.to_string_lossy().into_owned()).unwrap_or_default()
    )
}

/// (capacity, free) in bytes of the filesystem holding `path`.
pub fn fs_space(path: &str) -> Option<(i64, i64)> {
    let st = rustix::fs::statvfs(path).ok()?;
    let frsize = st.f_frsize as i64;
    Some((st.f_blocks as i64 * frsize, st.f_bavail as i64 * frsize))
}

/// Where the datastore is mounted: a real directory (`DIR/vmfs/volumes/<uuid>`),
/// the prefix of every path other files hold to its files.
pub fn mount_path(e: &Entity) -> String {
    e.attr("path").unwrap_or_default().to_string()
}

impl Engine {
    /// Present a copy of datastore `ds` as an unresolved volume.
    pub fn present_datastore_copy(&self, ds: &MoRef) -> Result<String, Fault> {
        let (label, uuid, path) = {
            let inv = self.inv.read();
            let e =
                inv.get(&ds.value).filter(|e| e.moref.ty == types::Datastore).ok_or_else(|| Fault::not_found(ds))?;
            (
                e.name.clone(),
                e.attr("uuid").unwrap_or_default().to_string(),
                e.attr("path").unwrap_or_default().to_string(),
            )
        };
        let dir = unresolved_dir(&self.data_dir).join(uuid::Uuid::new_v4().simple().to_string());
        std::fs::create_dir_all(dir.parent().expect("unresolved dir"))
            .map_err(|e| Fault::system_error(e.to_string()))?;
        let out = std::process::Command::new("cp")
            .args(["-a", "--sparse=always"])
            .arg(format!("{path}/."))
            .arg(&dir)
            .output()
            .map_err(|e| Fault::system_error(format!("copy: {e}")))?;
        if !out.status.success() && !dir.exists() {
            return Err(Fault::system_error(format!("copy: {}", String::from_utf8_lossy(&out.stderr))));
        }
        std::fs::write(dir.join(MARKER), serde_json::json!({"label": label, "uuid": uuid}).to_string())
            .map_err(|e| Fault::system_error(e.to_string()))?;
        Ok(device_path(&dir))
    }

    /// The datastore comes back under a new mount path (a new volume uuid), as
    /// after a resignature or a remount: its directory moves, `DIR/datastores/
    /// <name>` follows, and files elsewhere that name the old path now dangle
    /// until UpdateVirtualMachineFiles_Task rewrites them. Returns the new
    /// mount path.
    pub fn remount_datastore(&self, ds: &MoRef) -> Result<String, Fault> {
        let (name, old) = {
            let inv = self.inv.read();
            let e =
                inv.get(&ds.value).filter(|e| e.moref.ty == types::Datastore).ok_or_else(|| Fault::not_found(ds))?;
            (e.name.clone(), std::path::PathBuf::from(mount_path(e)))
        };
        let uuid = vmfs_uuid();
        let new = mount_dir(&self.data_dir, &uuid);
        let io = |e: std::io::Error| Fault::system_error(format!("remount {name}: {e}"));
        std::fs::create_dir_all(new.parent().expect("volumes dir")).map_err(io)?;
        // A datastore of an older data directory is a real directory by name.
        let real = std::fs::canonicalize(&old).map_err(io)?;
        std::fs::rename(&real, &new).map_err(io)?;
        link_by_name(&self.data_dir, &name, &uuid).map_err(io)?;
        {
            // The store is written under the inventory's lock, as everywhere:
            // a reload of other nodes' changes cannot come in between.
            let mut inv = self.inv.write();
            let e = inv.objects.get_mut(&ds.value).expect("checked above");
            let mut attrs = e.attrs.clone();
            attrs["uuid"] = uuid.clone().into();
            attrs["path"] = new.to_string_lossy().into_owned().into();
            attrs["url"] = format!("ds:///vmfs/volumes/{uuid}/").into();
            self.store.put_objects(&[ObjectRecord {
                moid: e.moref.value.clone(),
                ty: e.moref.ty.name().into(),
                name: e.name.clone(),
                parent: e.parent.clone(),
                attrs: attrs.clone(),
            }])?;
            e.attrs = attrs;
        }
        // The disks of the datastore live under the new path now.
        self.disks.drop_all(&ds.value);
        self.disks.scan(&ds.value, &new);
        self.changed();
        Ok(new.to_string_lossy().into_owned())
    }
}
