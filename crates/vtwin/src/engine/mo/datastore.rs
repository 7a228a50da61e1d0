//! Datastore: a directory under the data directory. Capacity and free space
//! are the real figures of the filesystem that holds it.
use super::refs;
use crate::engine::inventory::{Entity, Inventory};
use vmodl::{types, Data, Value};

/// (capacity, free) in bytes of the filesystem holding `path`.
pub fn fs_space(path: &str) -> Option<(i64, i64)> {
    let c = std::ffi::CString::new(path).ok()?;
    let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
    // SAFETY: `c` is a valid NUL-terminated path and `st` a valid out pointer.
    let rc = unsafe { libc::statvfs(c.as_ptr(), &mut st) };
    if rc != 0 {
        return None;
    }
    let frsize = st.f_frsize as i64;
    Some((st.f_blocks as i64 * frsize, st.f_bavail as i64 * frsize))
}

pub fn mount_path(e: &Entity) -> String {
    format!("/vmfs/volumes/{}", e.attr("uuid").unwrap_or_default())
}

pub fn property(inv: &Inventory, e: &Entity, name: &str) -> Option<Value> {
    let path = e.attr("path").unwrap_or_default();
    // Only the properties that report space ask the filesystem.
    let space = || {
        let s = fs_space(path);
        (s.is_some(), s.unwrap_or((0, 0)))
    };
    let url = e.attr("url").unwrap_or_default().to_string();
    Some(match name {
        "summary" => {
            let (accessible, (capacity, free)) = space();
            let mut d = Data::new(types::DatastoreSummary)
                .with("datastore", e.moref.clone())
                .with("name", e.name.clone())
                .with("url", url)
                .with("capacity", capacity)
                .with("freeSpace", free)
                .with("uncommitted", 0i64)
                .with("accessible", accessible)
                .with("multipleHostAccess", false)
                .with("type", "OTHER");
            d.set("maintenanceMode", "normal");
            d.into()
        }
        "info" => {
            let (_, (capacity, free)) = space();
            Data::new(types::LocalDatastoreInfo)
            .with("name", e.name.clone())
            .with("url", url)
            .with("freeSpace", free)
            .with("maxFileSize", capacity)
            .with("maxVirtualDiskCapacity", capacity)
            .with("maxMemoryFileSize", capacity)
            .with("timestamp", chrono::Utc::now())
            .with("containerId", e.attr("uuid").unwrap_or_default().to_string())
            .with("path", path.to_string())
            .into()
        }
        "host" => {
            let (accessible, _) = space();
            let dc = inv.datacenter_of(&e.moref.value)?;
            Value::Array(
                types::DatastoreHostMount,
                inv.in_datacenter(&dc.moref.value, types::HostSystem)
                    .into_iter()
                    .map(|h| {
                        Data::new(types::DatastoreHostMount)
                            .with("key", h)
                            .with(
                                "mountInfo",
                                Data::new(types::HostMountInfo)
                                    .with("path", mount_path(e))
                                    .with("accessMode", "readWrite")
                                    .with("mounted", true)
                                    .with("accessible", accessible),
                            )
                            .into()
                    })
                    .collect(),
            )
        }
        "vm" => refs(vec![]),
        "capability" => Data::new(types::DatastoreCapability)
            .with("directoryHierarchySupported", true)
            .with("rawDiskMappingsSupported", false)
            .with("perFileThinProvisioningSupported", true)
            .with("storageIORMSupported", false)
            .with("nativeSnapshotSupported", false)
            .with("topLevelDirectoryCreateSupported", true)
            .with("seSparseSupported", false)
            .into(),
        _ => return None,
    })
}
