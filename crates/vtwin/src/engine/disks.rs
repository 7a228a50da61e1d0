//! The catalog of first-class disks: which disk lives on which datastore,
//! each open `vdisk::Disk` behind its own lock. The datastores' `fcd/`
//! directories are the catalog's truth: it is rebuilt by scanning them.
use super::inventory::Inventory;
use super::Fault;
use parking_lot::{Mutex, RwLock};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use vmodl::types;

/// One disk, locked while an operation works on it.
pub type DiskRef = Arc<Mutex<vdisk::Disk>>;

/// id → (datastore moId, disk). The datastore is kept outside the disk's
/// lock so listing never waits for a long operation.
#[derive(Default)]
pub struct Disks {
    map: RwLock<HashMap<String, (String, DiskRef)>>,
    /// NBD export names handed out, by name.
    tickets: Mutex<HashMap<String, Ticket>>,
}

/// The right to open one NBD export until `expires_ms`.
#[derive(Clone, Debug)]
pub struct Ticket {
    pub disk: String,
    pub datastore: String,
    /// A snapshot id: that state, read-only. None: the live disk.
    pub snapshot: Option<String>,
    pub write: bool,
    pub expires_ms: i64,
}

/// How long an NBD ticket can be used to connect.
pub const TICKET_TTL_MS: i64 = 10 * 60 * 1000;

/// `<datastore dir>/fcd`.
pub fn fcd_dir(ds_path: &Path) -> PathBuf {
    ds_path.join("fcd")
}

pub fn datastore_path(inv: &Inventory, ds: &str) -> Option<PathBuf> {
    let e = inv.get(ds).filter(|e| e.moref.ty == types::Datastore)?;
    e.attr("path").map(PathBuf::from)
}

impl Disks {
    /// Scan every datastore's `fcd/` directory.
    pub fn load(inv: &Inventory) -> Disks {
        let d = Disks::default();
        for e in inv.objects.values().filter(|e| e.moref.ty == types::Datastore) {
            let Some(p) = e.attr("path") else { continue };
            d.scan(&e.moref.value, Path::new(p));
        }
        d
    }

    /// Add the disks found under one datastore; the number added.
    pub fn scan(&self, ds: &str, ds_path: &Path) -> usize {
        let Ok(rd) = std::fs::read_dir(fcd_dir(ds_path)) else { return 0 };
        let mut n = 0;
        for ent in rd.flatten() {
            let dir = ent.path();
            if !dir.join(vdisk::disk::META).exists() {
                continue;
            }
            match vdisk::Disk::open(&dir) {
                Ok(disk) => {
                    let id = disk.meta.id.clone();
                    let mut map = self.map.write();
                    if let std::collections::hash_map::Entry::Vacant(v) = map.entry(id) {
                        v.insert((ds.to_string(), Arc::new(Mutex::new(disk))));
                        n += 1;
                    }
                }
                Err(e) => tracing::warn!(dir = %dir.display(), error = %e, "disk skipped"),
            }
        }
        n
    }

    pub fn insert(&self, ds: &str, disk: vdisk::Disk) -> DiskRef {
        let id = disk.meta.id.clone();
        let r = Arc::new(Mutex::new(disk));
        self.map.write().insert(id, (ds.to_string(), r.clone()));
        r
    }

    pub fn remove(&self, id: &str) {
        self.map.write().remove(id);
    }

    pub fn exists(&self, id: &str) -> bool {
        self.map.read().contains_key(id)
    }

    /// The disk `id` on datastore `ds`, or NotFound.
    pub fn get(&self, id: &str, ds: &str) -> Result<DiskRef, Fault> {
        match self.map.read().get(id) {
            Some((d, r)) if d == ds => Ok(r.clone()),
            _ => Err(Fault::plain_not_found(format!("The object or item referred to could not be found: virtual storage object {id} on datastore {ds}"))),
        }
    }

    /// The disk `id` wherever it is.
    pub fn find(&self, id: &str) -> Option<(String, DiskRef)> {
        self.map.read().get(id).cloned()
    }

    /// Ids of the disks on `ds`.
    pub fn list(&self, ds: &str) -> Vec<String> {
        let mut v: Vec<String> = self.map.read().iter().filter(|(_, (d, _))| d == ds).map(|(k, _)| k.clone()).collect();
        v.sort();
        v
    }

    /// Hand out an export name for `t`.
    pub fn issue_ticket(&self, t: Ticket) -> String {
        let name = format!("{}-{}", t.disk, uuid::Uuid::new_v4().simple());
        let now = chrono::Utc::now().timestamp_millis();
        let mut m = self.tickets.lock();
        m.retain(|_, t| t.expires_ms > now);
        m.insert(name.clone(), t);
        name
    }

    /// The ticket behind an export name, unless unknown or expired.
    pub fn ticket(&self, name: &str) -> Option<Ticket> {
        let now = chrono::Utc::now().timestamp_millis();
        self.tickets.lock().get(name).filter(|t| t.expires_ms > now).cloned()
    }

    /// Forget every disk of `ds` (before scanning it again).
    pub fn drop_all(&self, ds: &str) {
        self.map.write().retain(|_, (d, _)| d != ds);
    }

    /// Forget the disks of `ds` whose directory is gone; the ids dropped.
    pub fn drop_missing(&self, ds: &str) -> Vec<String> {
        let mut gone = vec![];
        self.map.write().retain(|id, (d, r)| {
            let keep = d != ds || r.try_lock().map(|x| x.dir().join(vdisk::disk::META).exists()).unwrap_or(true);
            if !keep {
                gone.push(id.clone());
            }
            keep
        });
        gone
    }
}
