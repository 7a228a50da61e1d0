//! A managed disk: one directory holding its chain of VMDK files, its
//! change log and `vtwin-disk.json` (id, name, snapshots and which layer
//! each froze, change points). The directory is self-describing, so a disk
//! can be registered again from its files, and moving the directory moves
//! the disk (descriptors name their parents relatively).
use crate::cbt::{ChangeIdError, ChangeLog, BLOCK};
use crate::chain::{merge, merge_into_parent, write_atomic, Chain, Provisioning};
use crate::{format_err, io, Result};
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

pub const META: &str = "vtwin-disk.json";

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Snapshot {
    pub id: String,
    /// The descriptor (file name) of the layer this snapshot froze.
    pub layer: String,
    /// Its change point, when tracking was on.
    pub point: Option<u64>,
    pub description: String,
    pub created_ms: i64,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Meta {
    pub id: String,
    pub name: String,
    pub capacity: u64,
    /// "thin", "lazyZeroedThick" or "eagerZeroedThick".
    pub provisioning: String,
    pub created_ms: i64,
    /// The writable top's descriptor (file name).
    pub top: String,
    pub snapshots: Vec<Snapshot>,
    pub next_layer: u32,
    /// Anything the control plane keeps with the disk (metadata, tags,
    /// keepAfterDeleteVm, …).
    #[serde(default)]
    pub extra: serde_json::Map<String, serde_json::Value>,
}

pub struct Disk {
    dir: PathBuf,
    pub meta: Meta,
    chain: Chain,
    log: ChangeLog,
}

/// Why a changed-areas query cannot be answered.
#[derive(Debug)]
pub enum QueryError {
    SnapshotNotFound,
    OffsetBeyondEnd,
    /// Tracking is off now.
    NotTracking,
    /// The snapshot was taken while tracking was off.
    NoEpoch,
    BadChangeId(ChangeIdError),
    /// The changeId names a point after the snapshot.
    FutureChangeId,
    Io(crate::Error),
}

/// One window of answers: `[start, start+length)` and the changed areas in it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Changes {
    pub start: u64,
    pub length: u64,
    pub areas: Vec<(u64, u64)>,
}

/// The largest window one query answers; callers loop.
pub const WINDOW: u64 = 1 << 40;

fn now_ms() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis() as i64)
}

pub fn provisioning_name(p: Provisioning) -> &'static str {
    match p {
        Provisioning::Thin => "thin",
        Provisioning::LazyZeroed => "lazyZeroedThick",
        Provisioning::EagerZeroed => "eagerZeroedThick",
    }
}

impl Disk {
    pub fn dir(&self) -> &Path {
        &self.dir
    }
    pub fn capacity(&self) -> u64 {
        self.chain.capacity()
    }
    pub fn tracking(&self) -> bool {
        self.log.enabled()
    }
    /// The disk's `ddb.uuid` ("60 00 c2 …"): the top layer's, else one
    /// derived from the disk's id, as new disks get.
    pub fn ddb_uuid(&self) -> String {
        self.chain.top().ddb("uuid").map_or_else(|| uuid_ddb(&self.meta.id), str::to_string)
    }
    pub fn top_path(&self) -> PathBuf {
        self.dir.join(&self.meta.top)
    }
    /// Every file of the disk, for size accounting.
    pub fn files(&self) -> Vec<PathBuf> {
        let mut v = vec![self.dir.join(META), self.log_path()];
        for s in &self.meta.snapshots {
            v.push(self.dir.join(&s.layer));
        }
        v.extend(self.chain.files());
        v.sort();
        v.dedup();
        v
    }
    fn log_path(&self) -> PathBuf {
        self.dir.join(format!("{}-ctk.log", self.meta.id))
    }

    fn save(&self) -> Result<()> {
        let text = serde_json::to_string_pretty(&self.meta).expect("meta json");
        write_atomic(&self.dir.join(META), &text)
    }

    /// Create a disk in `dir` (created, must not exist).
    pub fn create(dir: &Path, id: &str, name: &str, capacity: u64, prov: Provisioning, track: bool) -> Result<Disk> {
        Disk::create_with(dir, id, name, capacity, prov, track, Default::default())
    }

    /// As `create`, with the caller's metadata (`Meta::extra`) written in
    /// the same durable write.
    pub fn create_with(
        dir: &Path,
        id: &str,
        name: &str,
        capacity: u64,
        prov: Provisioning,
        track: bool,
        extra: serde_json::Map<String, serde_json::Value>,
    ) -> Result<Disk> {
        std::fs::create_dir_all(dir.parent().unwrap_or(Path::new("."))).map_err(io(dir))?;
        std::fs::create_dir(dir).map_err(io(dir))?;
        let top = format!("{id}.vmdk");
        let made = (|| {
            let chain = Chain::create(&dir.join(&top), capacity, prov, &uuid_ddb(id))?;
            let mut log = ChangeLog::open(&dir.join(format!("{id}-ctk.log")))?;
            if track {
                log.enable()?;
            }
            let meta = Meta {
                id: id.into(),
                name: name.into(),
                capacity,
                provisioning: provisioning_name(prov).into(),
                created_ms: now_ms(),
                top,
                snapshots: vec![],
                next_layer: 1,
                extra,
            };
            let d = Disk { dir: dir.to_path_buf(), meta, chain, log };
            d.save()?;
            Ok(d)
        })();
        if made.is_err() {
            let _ = std::fs::remove_dir_all(dir);
        }
        made
    }

    /// Take an existing VMDK (and its chain) under management: `dir` gets
    /// the metadata and the change log; the files stay where they are.
    pub fn adopt(dir: &Path, id: &str, name: &str, desc: &Path, track: bool) -> Result<Disk> {
        let chain = Chain::open(desc)?;
        std::fs::create_dir_all(dir).map_err(io(dir))?;
        let canon = |p: &Path| std::fs::canonicalize(p).unwrap_or_else(|_| p.to_path_buf());
        let top = relative(&canon(dir), &canon(desc)).to_string_lossy().into_owned();
        let thin = chain.top().ddb("thinProvisioned") != Some("0");
        let mut log = ChangeLog::open(&dir.join(format!("{id}-ctk.log")))?;
        if track {
            log.enable()?;
        }
        let meta = Meta {
            id: id.into(),
            name: name.into(),
            capacity: chain.capacity(),
            provisioning: if thin { "thin" } else { "eagerZeroedThick" }.into(),
            created_ms: now_ms(),
            top,
            snapshots: vec![],
            next_layer: 1,
            extra: Default::default(),
        };
        let d = Disk { dir: dir.to_path_buf(), meta, chain, log };
        d.save()?;
        Ok(d)
    }

    pub fn open(dir: &Path) -> Result<Disk> {
        let mp = dir.join(META);
        let text = std::fs::read_to_string(&mp).map_err(io(&mp))?;
        let meta: Meta = serde_json::from_str(&text).map_err(|e| format_err(&mp, e.to_string()))?;
        let chain = Chain::open(&dir.join(&meta.top))?;
        let log = ChangeLog::open(&dir.join(format!("{}-ctk.log", meta.id)))?;
        Ok(Disk { dir: dir.to_path_buf(), meta, chain, log })
    }

    pub fn save_meta(&self) -> Result<()> {
        self.save()
    }

    pub fn read(&self, offset: u64, buf: &mut [u8]) -> Result<()> {
        self.chain.read(offset, buf)
    }

    /// Write; the change is in the log before the data is written.
    pub fn write(&mut self, offset: u64, data: &[u8]) -> Result<()> {
        if offset.checked_add(data.len() as u64).is_none_or(|e| e > self.capacity()) {
            return self.chain.write(offset, data);
        }
        self.log.mark(offset, data.len() as u64)?;
        self.chain.write(offset, data)
    }

    /// Several writes whose changes are logged with one durable append.
    pub fn write_batch(&mut self, writes: &[(u64, &[u8])]) -> Result<()> {
        let cap = self.capacity();
        let ranges: Vec<(u64, u64)> = writes
            .iter()
            .filter(|(o, d)| o.checked_add(d.len() as u64).is_some_and(|e| e <= cap))
            .map(|(o, d)| (*o, d.len() as u64))
            .collect();
        self.log.mark_many(&ranges)?;
        for (o, d) in writes {
            self.chain.write(*o, d)?;
        }
        Ok(())
    }

    pub fn flush(&self) -> Result<()> {
        self.chain.flush()
    }

    /// Data ranges of the live state (for NBD block status).
    pub fn allocated(&self) -> Result<Vec<(u64, u64)>> {
        self.chain.allocated()
    }

    /// The state a snapshot froze, opened read-only.
    pub fn open_snapshot(&self, snap_id: &str) -> Option<Result<Chain>> {
        let s = self.snapshot(snap_id)?;
        Some(Chain::open_readonly(&self.dir.join(&s.layer)))
    }

    pub fn set_tracking(&mut self, on: bool) -> Result<()> {
        match (on, self.log.enabled()) {
            (true, false) => self.log.enable(),
            (false, true) => self.log.disable(),
            _ => Ok(()),
        }
    }

    pub fn snapshot(&self, id: &str) -> Option<&Snapshot> {
        self.meta.snapshots.iter().find(|s| s.id == id)
    }

    pub fn change_id(&self, s: &Snapshot) -> Option<String> {
        s.point.filter(|p| self.log.valid_point(*p)).map(|p| self.log.change_id(p))
    }

    /// A snapshot: the current top is frozen for it and a new delta takes
    /// the writes.
    pub fn create_snapshot(&mut self, snap_id: &str, description: &str) -> Result<Snapshot> {
        let layer = std::mem::take(&mut self.meta.top);
        let next = format!("{}-{:06}.vmdk", self.meta.id, self.meta.next_layer);
        if let Err(e) = self.chain.snapshot(&self.dir.join(&next)) {
            self.meta.top = layer;
            return Err(e);
        }
        let point = self.log.snapshot()?;
        let s = Snapshot { id: snap_id.into(), layer, point, description: description.into(), created_ms: now_ms() };
        self.meta.top = next;
        self.meta.next_layer += 1;
        self.meta.snapshots.push(s.clone());
        self.save()?;
        Ok(s)
    }

    /// The layers of the live chain, oldest first, named as in the
    /// metadata (paths relative to the disk's directory).
    fn layer_order(&self) -> Vec<String> {
        let canon = |p: &Path| std::fs::canonicalize(p).unwrap_or_else(|_| p.to_path_buf());
        let dir = canon(&self.dir);
        let mut v: Vec<String> =
            self.chain.descriptors().iter().map(|p| relative(&dir, &canon(p)).to_string_lossy().into_owned()).collect();
        v.reverse();
        v
    }

    fn remove_layer_files(&self, desc: &str) {
        let p = self.dir.join(desc);
        if let Ok(c) = Chain::open_readonly(&p) {
            let files = c.files();
            // The layer's own descriptor and extent are the first two.
            for f in files.iter().take(2) {
                let _ = std::fs::remove_file(f);
            }
        }
    }

    /// Go back to a snapshot: the snapshots taken after it and every write
    /// since are dropped, and a new delta takes the writes.
    pub fn revert(&mut self, snap_id: &str) -> Result<()> {
        let s =
            self.snapshot(snap_id).cloned().ok_or_else(|| format_err(&self.dir, format!("no snapshot {snap_id}")))?;
        let order = self.layer_order();
        let pos = order
            .iter()
            .position(|l| *l == s.layer)
            .ok_or_else(|| format_err(&self.dir, "snapshot layer not in the chain"))?;
        let doomed: Vec<String> = order[pos + 1..].to_vec();
        let next = format!("{}-{:06}.vmdk", self.meta.id, self.meta.next_layer);
        let mut chain = Chain::open(&self.dir.join(&s.layer))?;
        chain.snapshot(&self.dir.join(&next))?;
        self.chain = chain;
        if let Some(p) = s.point {
            self.log.revert(p)?;
        }
        self.meta.snapshots.retain(|x| !doomed.contains(&x.layer));
        self.meta.top = next;
        self.meta.next_layer += 1;
        self.save()?;
        for l in doomed {
            self.remove_layer_files(&l);
        }
        Ok(())
    }

    /// Delete a snapshot: the layer above it is merged into its layer, which
    /// then stands for that layer's state. Change points are kept.
    pub fn delete_snapshot(&mut self, snap_id: &str, progress: &mut dyn FnMut(f64)) -> Result<()> {
        let s =
            self.snapshot(snap_id).cloned().ok_or_else(|| format_err(&self.dir, format!("no snapshot {snap_id}")))?;
        let order = self.layer_order();
        let pos = order
            .iter()
            .position(|l| *l == s.layer)
            .ok_or_else(|| format_err(&self.dir, "snapshot layer not in the chain"))?;
        let child =
            order.get(pos + 1).cloned().ok_or_else(|| format_err(&self.dir, "snapshot without a child layer"))?;
        let grandchild = order.get(pos + 2).cloned();
        self.chain.flush()?;
        merge_into_parent(&self.dir.join(&child), &self.dir.join(&s.layer), progress)?;
        // Point the layer above the merged one at the snapshot's layer.
        match &grandchild {
            Some(g) => crate::chain::repoint(&self.dir.join(g), &s.layer, &self.dir.join(&s.layer))?,
            None => self.meta.top = s.layer.clone(),
        }
        for x in &mut self.meta.snapshots {
            if x.layer == child {
                x.layer = s.layer.clone();
            }
        }
        self.meta.snapshots.retain(|x| x.id != snap_id);
        self.chain = Chain::open(&self.dir.join(&self.meta.top))?;
        self.save()?;
        self.remove_layer_files(&child);
        Ok(())
    }

    /// The areas of `snap_id`'s state changed since `change_id` ("*": every
    /// allocated area), in one window from `start`.
    pub fn changed_areas(
        &self,
        snap_id: &str,
        start: u64,
        change_id: &str,
    ) -> std::result::Result<Changes, QueryError> {
        let s = self.snapshot(snap_id).ok_or(QueryError::SnapshotNotFound)?;
        let cap = self.capacity();
        if start >= cap {
            return Err(QueryError::OffsetBeyondEnd);
        }
        let length = (cap - start).min(WINDOW);
        let end = start + length;
        let ranges: Vec<(u64, u64)> = if change_id == "*" {
            Chain::open_readonly(&self.dir.join(&s.layer)).and_then(|c| c.allocated()).map_err(QueryError::Io)?
        } else {
            if !self.log.enabled() {
                return Err(QueryError::NotTracking);
            }
            let from = self.log.parse_change_id(change_id).map_err(QueryError::BadChangeId)?;
            let to = s.point.filter(|p| self.log.valid_point(*p)).ok_or(QueryError::NoEpoch)?;
            let blocks = self.log.changed(from, to).map_err(|_| QueryError::FutureChangeId)?;
            merge(blocks.into_iter().map(|b| (b * BLOCK, BLOCK)).collect())
        };
        let areas = ranges
            .into_iter()
            .filter_map(|(o, l)| {
                let (a, b) = (o.max(start), (o + l).min(end));
                (a < b).then_some((a, b - a))
            })
            .collect();
        Ok(Changes { start, length, areas })
    }

    /// Grow the disk (no snapshots).
    pub fn extend(&mut self, new_capacity: u64) -> Result<()> {
        self.chain.extend(new_capacity)?;
        self.meta.capacity = new_capacity;
        self.save()
    }

    /// Thin → eager-zeroed thick.
    pub fn inflate(&mut self) -> Result<()> {
        self.chain.inflate(true)?;
        self.meta.provisioning = "eagerZeroedThick".into();
        self.save()
    }

    /// A full, independent copy of the current state as a new disk in `dir`.
    pub fn clone_to(
        &self,
        dir: &Path,
        id: &str,
        name: &str,
        prov: Provisioning,
        progress: &mut dyn FnMut(f64),
    ) -> Result<Disk> {
        let mut d = Disk::create(dir, id, name, self.capacity(), prov, self.tracking())?;
        let copy = (|| {
            let ranges = self.chain.allocated()?;
            let total: u64 = ranges.iter().map(|r| r.1).sum::<u64>().max(1);
            let mut done = 0;
            let mut buf = vec![0u8; 1 << 20];
            for (o, l) in ranges {
                let mut at = o;
                while at < o + l {
                    let n = (o + l - at).min(buf.len() as u64) as usize;
                    self.chain.read(at, &mut buf[..n])?;
                    // Zero runs stay holes in the copy.
                    if buf[..n].iter().any(|&b| b != 0) {
                        d.chain.write(at, &buf[..n])?;
                    }
                    at += n as u64;
                    done += n as u64;
                    progress(done as f64 / total as f64);
                }
            }
            d.chain.flush()
        })();
        if let Err(e) = copy {
            let _ = std::fs::remove_dir_all(dir);
            return Err(e);
        }
        Ok(d)
    }

    /// Delete every file of the disk.
    pub fn destroy(self) -> Result<()> {
        let dir = self.dir.clone();
        drop(self);
        std::fs::remove_dir_all(&dir).map_err(io(&dir))
    }
}

/// `to` as seen from directory `from` (both absolute).
fn relative(from: &Path, to: &Path) -> PathBuf {
    let f: Vec<_> = from.components().collect();
    let t: Vec<_> = to.components().collect();
    let common = f.iter().zip(&t).take_while(|(a, b)| a == b).count();
    let mut p = PathBuf::new();
    for _ in common..f.len() {
        p.push("..");
    }
    for c in &t[common..] {
        p.push(c);
    }
    p
}

/// `ddb.uuid` in VMware's spelling: 16 hex pairs, a dash after 8.
fn uuid_ddb(id: &str) -> String {
    let hex: String = id.chars().filter(char::is_ascii_hexdigit).take(32).collect();
    let hex = format!("{hex:0<32}");
    let pairs: Vec<&str> = (0..16).map(|i| &hex[2 * i..2 * i + 2]).collect();
    format!("{}-{}", pairs[..8].join(" "), pairs[8..].join(" "))
}
