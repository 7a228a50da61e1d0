//! The catalog of first-class disks: which disk lives on which datastore,
//! each `vdisk::Disk` behind its own lock. The datastores' `fcd/`
//! directories are the catalog's truth: it is rebuilt by scanning them.
//!
//! A disk is opened when it is first locked and closed again when too many
//! are open (least recently used first, never one that is locked), so a
//! catalog of 100,000 disks stays within the process's open-file limit.
use super::inventory::Inventory;
use super::Fault;
use parking_lot::{MappedMutexGuard, Mutex, MutexGuard, RwLock};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;
use vmodl::types;

/// Most disks kept open at once (each holds a few files).
pub const MAX_OPEN: usize = 2048;

/// One disk, locked while an operation works on it.
pub type DiskRef = Arc<DiskCell>;

/// The lock file in each disk's directory. Nodes sharing the datastores
/// (several processes, as hosts share an NFS datastore) take it, with
/// `flock`, for every operation; it holds the stamp of the process that
/// last had the disk, so a process whose copy of the disk's state (grain
/// tables, change log, metadata) may be stale reads it again first.
pub const LOCK_FILE: &str = ".vtwin-lock";

/// This process among those sharing the datastores.
static STAMP: std::sync::LazyLock<[u8; 16]> = std::sync::LazyLock::new(|| *uuid::Uuid::new_v4().as_bytes());

/// An open disk and its lock file.
struct Opened {
    disk: vdisk::Disk,
    lockf: Option<std::fs::File>,
}

/// The `flock` held on a disk's lock file (through a second descriptor of
/// the same open file, which shares its lock); released when dropped.
struct Held(std::fs::File);

impl Drop for Held {
    fn drop(&mut self) {
        let _ = self.0.unlock();
    }
}

/// A disk locked for one operation: in this process (its mutex) and among
/// processes (its lock file). The file lock goes first, before the mutex.
pub struct DiskGuard<'a> {
    _held: Held,
    disk: MappedMutexGuard<'a, vdisk::Disk>,
}

impl std::ops::Deref for DiskGuard<'_> {
    type Target = vdisk::Disk;
    fn deref(&self) -> &vdisk::Disk {
        &self.disk
    }
}

impl std::ops::DerefMut for DiskGuard<'_> {
    fn deref_mut(&mut self) -> &mut vdisk::Disk {
        &mut self.disk
    }
}

/// A disk's directory and, while it is open, the disk.
pub struct DiskCell {
    dir: PathBuf,
    slot: Mutex<Option<Opened>>,
    used: AtomicU64,
    open: Arc<AtomicUsize>,
    clock: Arc<AtomicU64>,
}

impl DiskCell {
    fn guard<'a>(&'a self, mut g: MutexGuard<'a, Option<Opened>>) -> vdisk::Result<DiskGuard<'a>> {
        use std::os::unix::fs::FileExt;
        let path = self.dir.join(LOCK_FILE);
        let io = |source: std::io::Error| vdisk::Error::Io { path: path.display().to_string(), source };
        let lockf = match g.as_mut().and_then(|o| o.lockf.take()) {
            Some(f) => f,
            None => std::fs::OpenOptions::new()
                .read(true)
                .write(true)
                .create(true)
                .truncate(false)
                .open(&path)
                .map_err(io)?,
        };
        loop {
            match lockf.lock() {
                Ok(()) => break,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => return Err(io(e)),
            }
        }
        let held = Held(lockf.try_clone().map_err(io)?);
        let mut stamp = [0u8; 16];
        let ours = lockf.read_at(&mut stamp, 0).is_ok_and(|n| n == 16) && stamp == *STAMP;
        if g.is_none() || !ours {
            // First use here, or another process had the disk since.
            let disk = vdisk::Disk::open(&self.dir)?;
            if g.is_none() {
                self.open.fetch_add(1, Ordering::Relaxed);
            }
            *g = Some(Opened { disk, lockf: None });
            if !ours {
                lockf.write_at(&STAMP[..], 0).map_err(io)?;
            }
        }
        g.as_mut().expect("opened above").lockf = Some(lockf);
        self.used.store(self.clock.fetch_add(1, Ordering::Relaxed), Ordering::Relaxed);
        Ok(DiskGuard { _held: held, disk: MutexGuard::map(g, |o| &mut o.as_mut().expect("opened above").disk) })
    }

    /// Lock the disk, opening it if it is closed (I/O errors as they are).
    pub fn open(&self) -> vdisk::Result<DiskGuard<'_>> {
        self.guard(self.slot.lock())
    }

    /// Lock the disk, opening it if it is closed.
    pub fn lock(&self) -> Result<DiskGuard<'_>, Fault> {
        self.open().map_err(Fault::from)
    }

    /// As `lock`, waiting at most `t`; None when still busy.
    pub fn try_lock_for(&self, t: Duration) -> Option<Result<DiskGuard<'_>, Fault>> {
        self.slot.try_lock_for(t).map(|g| self.guard(g).map_err(Fault::from))
    }

    /// The disk's metadata, without opening a closed disk (its file is
    /// read instead); None while it stays busy for `t`.
    pub fn meta(&self, t: Duration) -> Option<Result<vdisk::disk::Meta, Fault>> {
        let g = self.slot.try_lock_for(t)?;
        Some(match &*g {
            Some(o) => Ok(o.disk.meta.clone()),
            None => {
                let p = self.dir.join(vdisk::disk::META);
                std::fs::read(&p)
                    .map_err(|e| {
                        Fault::new(types::FileFault, format!("{}: {e}", p.display()))
                            .with("file", p.display().to_string())
                    })
                    .and_then(|b| {
                        serde_json::from_slice(&b).map_err(|e| {
                            Fault::new(types::FileFault, format!("{}: {e}", p.display()))
                                .with("file", p.display().to_string())
                        })
                    })
            }
        })
    }

    /// The directory holding the disk's metadata.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Close the disk if it is open and nobody holds it.
    fn close_idle(&self) -> bool {
        let Some(mut g) = self.slot.try_lock() else { return false };
        if g.take().is_some() {
            self.open.fetch_sub(1, Ordering::Relaxed);
            return true;
        }
        false
    }

    fn is_open(&self) -> bool {
        self.slot.try_lock().is_none_or(|g| g.is_some())
    }
}

/// id → (datastore moId, disk). The datastore is kept outside the disk's
/// lock so listing never waits for a long operation.
#[derive(Default)]
pub struct Disks {
    map: RwLock<HashMap<String, (String, DiskRef)>>,
    open: Arc<AtomicUsize>,
    clock: Arc<AtomicU64>,
    /// NBD export names handed out, by name.
    tickets: Mutex<HashMap<String, Ticket>>,
    /// The datastores scanned: moId → directory.
    roots: RwLock<HashMap<String, PathBuf>>,
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

    fn cell(&self, dir: PathBuf, disk: Option<vdisk::Disk>) -> DiskRef {
        if disk.is_some() {
            self.open.fetch_add(1, Ordering::Relaxed);
        }
        let slot = disk.map(|disk| Opened { disk, lockf: None });
        Arc::new(DiskCell {
            dir,
            slot: Mutex::new(slot),
            used: AtomicU64::new(self.clock.fetch_add(1, Ordering::Relaxed)),
            open: self.open.clone(),
            clock: self.clock.clone(),
        })
    }

    /// Add the disks found under one datastore; the number added. Only
    /// their metadata is read: a disk's files are opened when it is used.
    pub fn scan(&self, ds: &str, ds_path: &Path) -> usize {
        self.roots.write().insert(ds.to_string(), ds_path.to_path_buf());
        let Ok(rd) = std::fs::read_dir(fcd_dir(ds_path)) else { return 0 };
        let mut n = 0;
        for ent in rd.flatten() {
            let dir = ent.path();
            let meta = dir.join(vdisk::disk::META);
            let id = match std::fs::read(&meta)
                .map_err(|e| e.to_string())
                .and_then(|b| serde_json::from_slice::<vdisk::disk::Meta>(&b).map_err(|e| e.to_string()))
            {
                Ok(m) => m.id,
                Err(_) if !meta.exists() => continue,
                Err(e) => {
                    tracing::warn!(dir = %dir.display(), error = %e, "disk skipped");
                    continue;
                }
            };
            let mut map = self.map.write();
            if let std::collections::hash_map::Entry::Vacant(v) = map.entry(id) {
                v.insert((ds.to_string(), self.cell(dir, None)));
                n += 1;
            }
        }
        n
    }

    /// Scan a datastore not scanned before (one another node added).
    pub fn scan_new_root(&self, ds: &str, ds_path: &Path) {
        if !self.roots.read().contains_key(ds) {
            self.scan(ds, ds_path);
        }
    }

    pub fn insert(&self, ds: &str, disk: vdisk::Disk) -> DiskRef {
        let id = disk.meta.id.clone();
        let r = self.cell(disk.dir().to_path_buf(), Some(disk));
        self.map.write().insert(id, (ds.to_string(), r.clone()));
        self.evict();
        r
    }

    pub fn remove(&self, id: &str) {
        if let Some((_, r)) = self.map.write().remove(id) {
            r.close_idle();
        }
    }

    /// Delete disk `id`: the files its own metadata lists inside its
    /// directory (metadata, change log, layers, extents), its lock file,
    /// then the directory if nothing else is left in it. Nothing else is
    /// removed: files of an adopted VMDK outside the directory stay.
    pub fn delete(&self, id: &str, r: &DiskRef) -> Result<(), Fault> {
        let d = r.lock()?;
        let dir = r.dir().to_path_buf();
        let mut files: Vec<PathBuf> = d.files().into_iter().filter(|f| f.parent() == Some(dir.as_path())).collect();
        files.push(dir.join(LOCK_FILE));
        self.remove(id);
        for f in &files {
            match std::fs::remove_file(f) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => {
                    return Err(Fault::new(types::FileFault, format!("cannot delete a file of disk {id}: {e}"))
                        .with("file", f.display().to_string()))
                }
            }
        }
        drop(d);
        let _ = std::fs::remove_dir(&dir);
        Ok(())
    }

    pub fn exists(&self, id: &str) -> bool {
        self.map.read().contains_key(id)
    }

    /// A disk made since the catalog was built (by another node on the
    /// same datastores): its directory is `fcd/<id>` on one of them.
    fn discover(&self, id: &str, only: Option<&str>) -> Option<(String, DiskRef)> {
        if !super::paths::plausible_disk_id(id) {
            return None;
        }
        let roots: Vec<(String, PathBuf)> = self
            .roots
            .read()
            .iter()
            .filter(|(d, _)| only.is_none_or(|o| o == d.as_str()))
            .map(|(d, p)| (d.clone(), p.clone()))
            .collect();
        for (ds, root) in roots {
            let dir = fcd_dir(&root).join(id);
            let Ok(b) = std::fs::read(dir.join(vdisk::disk::META)) else { continue };
            if serde_json::from_slice::<vdisk::disk::Meta>(&b).is_ok_and(|m| m.id == id) {
                let mut map = self.map.write();
                let e = map.entry(id.to_string()).or_insert_with(|| (ds.clone(), self.cell(dir, None)));
                return Some(e.clone());
            }
        }
        None
    }

    /// The disk `id` on datastore `ds`, or NotFound.
    pub fn get(&self, id: &str, ds: &str) -> Result<DiskRef, Fault> {
        self.evict();
        let found = self.map.read().get(id).cloned();
        match found.or_else(|| self.discover(id, Some(ds))) {
            Some((d, r)) if d == ds => Ok(r),
            _ => Err(Fault::plain_not_found(format!(
                "The object or item referred to could not be found: virtual storage object {id} on datastore {ds}"
            ))),
        }
    }

    /// The disk `id` wherever it is.
    pub fn find(&self, id: &str) -> Option<(String, DiskRef)> {
        self.evict();
        let found = self.map.read().get(id).cloned();
        found.or_else(|| self.discover(id, None))
    }

    /// The datastore holding disk `id`, without touching the disk.
    pub fn datastore_of(&self, id: &str) -> Option<String> {
        self.map.read().get(id).map(|(d, _)| d.clone())
    }

    /// Ids of the disks on `ds`.
    pub fn list(&self, ds: &str) -> Vec<String> {
        let mut v: Vec<String> = self.map.read().iter().filter(|(_, (d, _))| d == ds).map(|(k, _)| k.clone()).collect();
        v.sort();
        v
    }

    /// Every disk: (id, datastore, disk).
    pub fn all(&self) -> Vec<(String, String, DiskRef)> {
        self.map.read().iter().map(|(id, (d, r))| (id.clone(), d.clone(), r.clone())).collect()
    }

    /// How many disks are open now.
    pub fn open_count(&self) -> usize {
        self.open.load(Ordering::Relaxed)
    }

    /// Close the least recently used idle disks when more than MAX_OPEN
    /// are open, down to three quarters of it.
    fn evict(&self) {
        if self.open.load(Ordering::Relaxed) <= MAX_OPEN {
            return;
        }
        let mut open: Vec<(u64, DiskRef)> = self
            .map
            .read()
            .values()
            .filter(|(_, r)| r.is_open())
            .map(|(_, r)| (r.used.load(Ordering::Relaxed), r.clone()))
            .collect();
        open.sort_by_key(|(t, _)| *t);
        for (_, r) in open {
            if self.open.load(Ordering::Relaxed) <= MAX_OPEN * 3 / 4 {
                break;
            }
            r.close_idle();
        }
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
        let mut map = self.map.write();
        for (_, r) in map.values().filter(|(d, _)| d == ds) {
            r.close_idle();
        }
        map.retain(|_, (d, _)| d != ds);
    }

    /// Forget the disks of `ds` whose directory is gone; the ids dropped.
    pub fn drop_missing(&self, ds: &str) -> Vec<String> {
        let mut gone = vec![];
        self.map.write().retain(|id, (d, r)| {
            let keep = d != ds || r.dir().join(vdisk::disk::META).exists();
            if !keep {
                r.close_idle();
                gone.push(id.clone());
            }
            keep
        });
        gone
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// More disks than may be open: each is opened when used and closed
    /// again, least recently used first, and none loses a write.
    #[test]
    fn disks_beyond_the_open_limit_stay_usable() {
        let dir = tempfile::tempdir().expect("tempdir");
        let fcd = fcd_dir(dir.path());
        let disks = Disks::default();
        let n = MAX_OPEN + 300;
        for i in 0..n {
            let id = format!("d{i:05}");
            let d = vdisk::Disk::create(&fcd.join(&id), &id, &id, 1 << 20, vdisk::chain::Provisioning::Thin, true)
                .expect("create");
            disks.insert("ds", d);
            assert!(disks.open_count() <= MAX_OPEN + 1, "{} open", disks.open_count());
        }
        for i in 0..n {
            let (_, r) = disks.find(&format!("d{i:05}")).expect("listed");
            r.lock().expect("opens").write(4096, &(i as u32).to_le_bytes()).expect("write");
        }
        assert!(disks.open_count() <= MAX_OPEN + 1);
        for i in (0..n).rev() {
            let (_, r) = disks.find(&format!("d{i:05}")).expect("listed");
            let mut b = [0u8; 4];
            r.lock().expect("reopens").read(4096, &mut b).expect("read");
            assert_eq!(u32::from_le_bytes(b), i as u32);
        }
        // A fresh catalog reads only the metadata.
        let again = Disks::default();
        assert_eq!(again.scan("ds", dir.path()), n);
        assert_eq!(again.open_count(), 0);
    }
}
