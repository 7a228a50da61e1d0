//! A disk as a chain of layers: a flat base, then zero or more sparse
//! deltas, the newest on top. Reads fall through the chain; writes go to the
//! top, copying a grain up from below the first time it is written.
use crate::descriptor::{Descriptor, Extent, ExtentKind, NO_PARENT};
use crate::sparse::{SparseExtent, GRAIN};
use crate::{format_err, io, Error, Result, SECTOR};
use std::fs::{File, OpenOptions};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Provisioning {
    /// Nothing allocated until written (a sparse file).
    Thin,
    /// Space reserved at creation, zeroed on first write (fallocate).
    LazyZeroed,
    /// Space reserved and zeros written at creation.
    EagerZeroed,
}

enum Data {
    Flat(File),
    Sparse(SparseExtent),
}

struct Layer {
    desc_path: PathBuf,
    desc: Descriptor,
    data: Data,
}

pub struct Chain {
    /// Newest first.
    layers: Vec<Layer>,
    capacity: u64,
}

fn stem(p: &Path) -> String {
    p.file_stem().map_or_else(|| "disk".into(), |s| s.to_string_lossy().into_owned())
}

/// Replace a file atomically: temp file, fsync, rename, fsync the directory.
pub fn write_atomic(path: &Path, text: &str) -> Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    let tmp = dir.join(format!(
        ".{}.tmp-{}",
        path.file_name().map(|f| f.to_string_lossy()).unwrap_or_default(),
        std::process::id()
    ));
    {
        let f = File::create(&tmp).map_err(io(&tmp))?;
        f.write_all_at(text.as_bytes(), 0).map_err(io(&tmp))?;
        f.sync_all().map_err(io(&tmp))?;
    }
    std::fs::rename(&tmp, path).map_err(io(path))?;
    if let Ok(d) = File::open(dir) {
        let _ = d.sync_all();
    }
    Ok(())
}

fn new_cid() -> u32 {
    loop {
        let c: u32 = rand::random();
        if c != NO_PARENT && c != 0 {
            return c;
        }
    }
}

fn read_flat(f: &File, path: &Path, mut offset: u64, mut buf: &mut [u8]) -> Result<()> {
    while !buf.is_empty() {
        let n = f.read_at(buf, offset).map_err(io(path))?;
        if n == 0 {
            buf.fill(0);
            return Ok(());
        }
        offset += n as u64;
        buf = &mut buf[n..];
    }
    Ok(())
}

impl Layer {
    fn open(desc_path: &Path, writable: bool) -> Result<Layer> {
        let text = std::fs::read(desc_path).map_err(io(desc_path))?;
        let desc = Descriptor::parse(&String::from_utf8_lossy(&text)).map_err(|m| format_err(desc_path, m))?;
        if desc.extents.len() != 1 {
            return Err(format_err(desc_path, "only single-extent disks are supported"));
        }
        // An extent lies beside its descriptor (as ESXi writes them): a
        // descriptor naming a file elsewhere could reach any file on the host.
        let f = &desc.extents[0].file;
        if f.is_empty() || f.contains('/') || f.contains('\\') || f == ".." || f == "." || f.contains('\0') {
            return Err(format_err(desc_path, format!("extent file '{f}' is not a file name beside the descriptor")));
        }
        let dir = desc_path.parent().unwrap_or(Path::new("."));
        let ext = dir.join(f);
        let data = match desc.extents[0].kind {
            ExtentKind::Flat => Data::Flat(OpenOptions::new().read(true).write(writable).open(&ext).map_err(io(&ext))?),
            ExtentKind::Sparse => Data::Sparse(SparseExtent::open(&ext, writable)?),
        };
        Ok(Layer { desc_path: desc_path.to_path_buf(), desc, data })
    }

    fn extent_path(&self) -> PathBuf {
        self.desc_path.parent().unwrap_or(Path::new(".")).join(&self.desc.extents[0].file)
    }
}

impl Chain {
    pub fn capacity(&self) -> u64 {
        self.capacity
    }

    /// Descriptor paths, newest first.
    pub fn descriptors(&self) -> Vec<PathBuf> {
        self.layers.iter().map(|l| l.desc_path.clone()).collect()
    }

    /// Every file of the chain (descriptors and extents), newest first.
    pub fn files(&self) -> Vec<PathBuf> {
        self.layers.iter().flat_map(|l| [l.desc_path.clone(), l.extent_path()]).collect()
    }

    pub fn top(&self) -> &Descriptor {
        &self.layers[0].desc
    }

    /// Create a base disk: `desc_path` plus `<stem>-flat.vmdk` beside it.
    pub fn create(desc_path: &Path, capacity: u64, prov: Provisioning, uuid: &str) -> Result<Chain> {
        if capacity == 0 || !capacity.is_multiple_of(SECTOR) {
            return Err(format_err(desc_path, format!("capacity {capacity} is not a positive multiple of {SECTOR}")));
        }
        let flat_name = format!("{}-flat.vmdk", stem(desc_path));
        let flat_path = desc_path.parent().unwrap_or(Path::new(".")).join(&flat_name);
        let f = OpenOptions::new().read(true).write(true).create_new(true).open(&flat_path).map_err(io(&flat_path))?;
        f.set_len(capacity).map_err(io(&flat_path))?;
        if prov != Provisioning::Thin {
            if let Err(e) = allocate(&f, capacity) {
                let _ = std::fs::remove_file(&flat_path);
                return Err(Error::Io { path: flat_path.display().to_string(), source: e });
            }
        }
        if prov == Provisioning::EagerZeroed {
            let zeros = vec![0u8; 1 << 20];
            let mut at = 0;
            while at < capacity {
                let n = (capacity - at).min(zeros.len() as u64) as usize;
                f.write_all_at(&zeros[..n], at).map_err(io(&flat_path))?;
                at += n as u64;
            }
        }
        f.sync_all().map_err(io(&flat_path))?;
        let sectors = capacity / SECTOR;
        let heads = 255u64;
        let spt = 63u64;
        let mut desc = Descriptor {
            cid: new_cid(),
            parent_cid: NO_PARENT,
            create_type: "monolithicFlat".into(),
            parent_hint: None,
            extents: vec![Extent { sectors, kind: ExtentKind::Flat, file: flat_name }],
            ddb: vec![],
        };
        desc.set_ddb("adapterType", "lsilogic");
        desc.set_ddb("geometry.cylinders", (sectors / (heads * spt)).max(1).to_string());
        desc.set_ddb("geometry.heads", heads.to_string());
        desc.set_ddb("geometry.sectors", spt.to_string());
        desc.set_ddb("virtualHWVersion", "14");
        desc.set_ddb("uuid", uuid);
        desc.set_ddb("longContentID", format!("{:032x}", rand::random::<u128>()));
        desc.set_ddb("thinProvisioned", if prov == Provisioning::Thin { "1" } else { "0" });
        if let Err(e) = write_atomic(desc_path, &desc.render()) {
            let _ = std::fs::remove_file(&flat_path);
            return Err(e);
        }
        Chain::open(desc_path)
    }

    /// Open a disk (or a snapshot's state) without writing to any layer.
    pub fn open_readonly(desc_path: &Path) -> Result<Chain> {
        Chain::open_with(desc_path, false)
    }

    /// Open a disk by its top descriptor, following parentFileNameHint.
    /// Only the top is opened for writing: a parent never changes, so its
    /// CID keeps matching its children's parentCID.
    pub fn open(desc_path: &Path) -> Result<Chain> {
        Chain::open_with(desc_path, true)
    }

    fn open_with(desc_path: &Path, writable: bool) -> Result<Chain> {
        let mut layers = vec![Layer::open(desc_path, writable)?];
        loop {
            let last = layers.last().expect("one layer");
            let Some(hint) = last.desc.parent_hint.clone() else { break };
            if layers.len() > 255 {
                return Err(format_err(desc_path, "the snapshot chain is too long (a loop?)"));
            }
            let dir = last.desc_path.parent().unwrap_or(Path::new("."));
            let parent = Layer::open(&dir.join(&hint), false)?;
            if parent.desc.cid != last.desc.parent_cid {
                return Err(format_err(
                    &last.desc_path,
                    format!(
                        "parentCID {:08x} does not match {} (CID {:08x})",
                        last.desc.parent_cid, hint, parent.desc.cid
                    ),
                ));
            }
            layers.push(parent);
        }
        let capacity = layers[0].desc.capacity_sectors() * SECTOR;
        Ok(Chain { layers, capacity })
    }

    /// Freeze the current top and put a new, empty delta on it:
    /// `desc_path` plus `<stem>-s001.vmdk`.
    pub fn snapshot(&mut self, desc_path: &Path) -> Result<()> {
        self.flush()?;
        let top = &self.layers[0];
        let ext_name = format!("{}-s001.vmdk", stem(desc_path));
        let dir = desc_path.parent().unwrap_or(Path::new("."));
        let ext_path = dir.join(&ext_name);
        let sectors = self.capacity / SECTOR;
        let sparse = SparseExtent::create(&ext_path, sectors)?;
        let hint = if top.desc_path.parent() == desc_path.parent() {
            top.desc_path.file_name().map(|f| f.to_string_lossy().into_owned()).unwrap_or_default()
        } else {
            top.desc_path.display().to_string()
        };
        let mut desc = Descriptor {
            cid: new_cid(),
            parent_cid: top.desc.cid,
            create_type: "twoGbMaxExtentSparse".into(),
            parent_hint: Some(hint),
            extents: vec![Extent { sectors, kind: ExtentKind::Sparse, file: ext_name }],
            ddb: top.desc.ddb.iter().filter(|(k, _)| k != "thinProvisioned").cloned().collect(),
        };
        desc.set_ddb("longContentID", format!("{:032x}", rand::random::<u128>()));
        if let Err(e) = write_atomic(desc_path, &desc.render()) {
            let _ = std::fs::remove_file(&ext_path);
            return Err(e);
        }
        // The old top is now read-only: reopen it so.
        let old = self.layers.remove(0);
        let frozen = Layer::open(&old.desc_path, false)?;
        self.layers.insert(0, frozen);
        self.layers.insert(0, Layer { desc_path: desc_path.to_path_buf(), desc, data: Data::Sparse(sparse) });
        Ok(())
    }

    fn check(&self, offset: u64, len: u64) -> Result<()> {
        if offset.checked_add(len).is_none_or(|end| end > self.capacity) {
            return Err(Error::OutOfRange { offset, len, capacity: self.capacity });
        }
        Ok(())
    }

    /// Read from layer `from` down.
    fn read_from(&self, from: usize, offset: u64, buf: &mut [u8]) -> Result<()> {
        let mut done = 0usize;
        while done < buf.len() {
            let at = offset + done as u64;
            let g = at / GRAIN;
            let within = at % GRAIN;
            let n = ((GRAIN - within) as usize).min(buf.len() - done);
            let chunk = &mut buf[done..done + n];
            let mut found = false;
            for l in &self.layers[from..] {
                match &l.data {
                    Data::Sparse(s) => {
                        if s.read_in_grain(g, within, chunk)? {
                            found = true;
                            break;
                        }
                    }
                    Data::Flat(f) => {
                        read_flat(f, &l.extent_path(), at, chunk)?;
                        found = true;
                        break;
                    }
                }
            }
            if !found {
                chunk.fill(0);
            }
            done += n;
        }
        Ok(())
    }

    pub fn read(&self, offset: u64, buf: &mut [u8]) -> Result<()> {
        self.check(offset, buf.len() as u64)?;
        self.read_from(0, offset, buf)
    }

    /// Write to the top layer. Durable once `flush` returns.
    pub fn write(&mut self, offset: u64, data: &[u8]) -> Result<()> {
        self.check(offset, data.len() as u64)?;
        if let Data::Flat(f) = &self.layers[0].data {
            let p = self.layers[0].extent_path();
            return f.write_all_at(data, offset).map_err(io(&p));
        }
        let mut done = 0usize;
        while done < data.len() {
            let at = offset + done as u64;
            let g = at / GRAIN;
            let within = at % GRAIN;
            let n = ((GRAIN - within) as usize).min(data.len() - done);
            let piece = &data[done..done + n];
            let allocated = matches!(&self.layers[0].data, Data::Sparse(s) if s.allocated(g));
            if allocated {
                if let Data::Sparse(s) = &self.layers[0].data {
                    s.write_in_grain(g, within, piece)?;
                }
            } else {
                // Copy the grain up from below, with the new bytes in it.
                let mut grain = vec![0u8; GRAIN as usize];
                let len = GRAIN.min(self.capacity - g * GRAIN) as usize;
                if n < len {
                    self.read_from(1, g * GRAIN, &mut grain[..len])?;
                }
                grain[within as usize..within as usize + n].copy_from_slice(piece);
                if let Data::Sparse(s) = &mut self.layers[0].data {
                    s.allocate(g, &grain)?;
                }
            }
            done += n;
        }
        Ok(())
    }

    pub fn flush(&self) -> Result<()> {
        match &self.layers[0].data {
            Data::Flat(f) => f.sync_data().map_err(io(&self.layers[0].extent_path())),
            Data::Sparse(s) => s.flush(),
        }
    }

    /// Byte ranges holding data anywhere in the chain, merged and in order
    /// (`changeId "*"`): grains of the deltas, and the data (not the holes)
    /// of the flat base.
    pub fn allocated(&self) -> Result<Vec<(u64, u64)>> {
        let mut all: Vec<(u64, u64)> = vec![];
        for l in &self.layers {
            match &l.data {
                // A layer may hold grains past the chain's capacity (its
                // own header says more than the descriptor): not the disk's.
                Data::Sparse(s) => all.extend(
                    s.allocated_grains()
                        .filter(|&g| g * GRAIN < self.capacity)
                        .map(|g| (g * GRAIN, GRAIN.min(self.capacity - g * GRAIN))),
                ),
                Data::Flat(f) => all.extend(data_extents(f, &l.extent_path(), self.capacity)?),
            }
        }
        Ok(merge(all))
    }

    /// Byte ranges the top layer holds (grains of a delta; for a flat base,
    /// the whole disk).
    pub fn top_allocated(&self) -> Vec<(u64, u64)> {
        match &self.layers[0].data {
            Data::Flat(_) => vec![(0, self.capacity)],
            Data::Sparse(s) => s
                .allocated_grains()
                .filter(|&g| g * GRAIN < self.capacity)
                .map(|g| (g * GRAIN, GRAIN.min(self.capacity - g * GRAIN)))
                .collect(),
        }
    }

    /// Grow a disk that has no snapshots.
    pub fn extend(&mut self, new_capacity: u64) -> Result<()> {
        let single = self.layers.len() == 1;
        let l = &mut self.layers[0];
        let Data::Flat(f) = &l.data else {
            return Err(format_err(&l.desc_path, "only a disk without snapshots can be extended"));
        };
        if !single || new_capacity < self.capacity || !new_capacity.is_multiple_of(SECTOR) {
            return Err(format_err(
                &l.desc_path,
                format!("cannot extend from {} to {new_capacity} bytes", self.capacity),
            ));
        }
        let ext = l.extent_path();
        f.set_len(new_capacity).map_err(io(&ext))?;
        f.sync_all().map_err(io(&ext))?;
        let sectors = new_capacity / SECTOR;
        l.desc.extents[0].sectors = sectors;
        l.desc.set_ddb("geometry.cylinders", (sectors / (255 * 63)).max(1).to_string());
        write_atomic(&l.desc_path, &l.desc.render())?;
        self.capacity = new_capacity;
        Ok(())
    }

    /// Reserve the whole flat base (thin → thick). Holes read as zeros, so
    /// reserving them is enough for lazy-zeroed; eager also writes zeros.
    pub fn inflate(&mut self, eager: bool) -> Result<()> {
        let base = self.layers.last_mut().expect("a layer");
        let Data::Flat(_) = &base.data else { return Err(format_err(&base.desc_path, "no flat base")) };
        let ext = base.extent_path();
        let f = OpenOptions::new().read(true).write(true).open(&ext).map_err(io(&ext))?;
        let holes = {
            let data = data_extents(&f, &ext, self.capacity)?;
            let mut holes = vec![];
            let mut at = 0;
            for (o, l) in data {
                if o > at {
                    holes.push((at, o - at));
                }
                at = o + l;
            }
            if at < self.capacity {
                holes.push((at, self.capacity - at));
            }
            holes
        };
        allocate(&f, self.capacity).map_err(io(&ext))?;
        if eager {
            let zeros = vec![0u8; 1 << 20];
            for (o, l) in holes {
                let mut at = o;
                while at < o + l {
                    let n = (o + l - at).min(zeros.len() as u64) as usize;
                    f.write_all_at(&zeros[..n], at).map_err(io(&ext))?;
                    at += n as u64;
                }
            }
        }
        f.sync_all().map_err(io(&ext))?;
        base.desc.set_ddb("thinProvisioned", "0");
        write_atomic(&base.desc_path, &base.desc.render())
    }
}

/// Sorted ranges merged where they touch or overlap.
pub fn merge(mut v: Vec<(u64, u64)>) -> Vec<(u64, u64)> {
    v.sort_unstable();
    let mut out: Vec<(u64, u64)> = vec![];
    for (o, l) in v {
        match out.last_mut() {
            Some((po, pl)) if o <= *po + *pl => *pl = (*pl).max(o + l - *po),
            _ => out.push((o, l)),
        }
    }
    out
}

/// Reserve blocks for the first `len` bytes of `f` (posix_fallocate's
/// meaning: a filesystem without fallocate gets the holes written with
/// zeros, as glibc does).
fn allocate(f: &File, len: u64) -> std::io::Result<()> {
    use rustix::fs::FallocateFlags;
    match rustix::fs::fallocate(f, FallocateFlags::empty(), 0, len) {
        Ok(()) => Ok(()),
        Err(rustix::io::Errno::OPNOTSUPP) => {
            let zeros = vec![0u8; 1 << 20];
            for (o, l) in holes_of(f, len)? {
                let mut at = o;
                while at < o + l {
                    let n = (o + l - at).min(zeros.len() as u64) as usize;
                    f.write_all_at(&zeros[..n], at)?;
                    at += n as u64;
                }
            }
            Ok(())
        }
        Err(e) => Err(e.into()),
    }
}

/// The holes of the first `len` bytes of `f`.
fn holes_of(f: &File, len: u64) -> std::io::Result<Vec<(u64, u64)>> {
    let mut holes = vec![];
    let mut at = 0;
    for (d, l) in data_ranges(f, len)? {
        if d > at {
            holes.push((at, d - at));
        }
        at = d + l;
    }
    if at < len {
        holes.push((at, len - at));
    }
    Ok(holes)
}

/// The exact data (non-hole) ranges of the first `len` bytes of `f`.
fn data_ranges(f: &File, len: u64) -> std::io::Result<Vec<(u64, u64)>> {
    use rustix::fs::{seek, SeekFrom};
    let mut out = vec![];
    let mut at = 0u64;
    while at < len {
        let d = match seek(f, SeekFrom::Data(at)) {
            Ok(d) => d,
            Err(rustix::io::Errno::NXIO) => break,
            Err(e) => return Err(e.into()),
        };
        if d >= len {
            break;
        }
        let h = seek(f, SeekFrom::Hole(d)).map_or(len, |h| h.min(len));
        out.push((d, h - d));
        at = h;
    }
    Ok(out)
}

/// The data (non-hole) ranges of a flat file, rounded out to 64 KiB blocks.
fn data_extents(f: &File, path: &Path, capacity: u64) -> Result<Vec<(u64, u64)>> {
    Ok(data_ranges(f, capacity)
        .map_err(io(path))?
        .into_iter()
        .map(|(d, l)| {
            let (a, b) = (d / GRAIN * GRAIN, (d + l).div_ceil(GRAIN) * GRAIN);
            (a, b.min(capacity) - a)
        })
        .collect())
}

/// Point the layer `desc` at a new parent: `hint` as written in the
/// descriptor, and that parent's CID.
pub fn repoint(desc: &Path, hint: &str, parent: &Path) -> Result<()> {
    let parent_cid = Chain::open_readonly(parent)?.top().cid;
    let text = std::fs::read_to_string(desc).map_err(io(desc))?;
    let mut d = crate::Descriptor::parse(&text).map_err(|m| format_err(desc, m))?;
    d.parent_cid = parent_cid;
    d.parent_hint = Some(hint.to_string());
    write_atomic(desc, &d.render())
}

/// Copy every grain `child` holds into the layer below it, `parent` (which
/// is opened for writing): the first half of deleting the snapshot that
/// `parent` froze. `progress` gets the fraction done.
pub fn merge_into_parent(child: &Path, parent: &Path, progress: &mut dyn FnMut(f64)) -> Result<()> {
    let c = Chain::open_readonly(child)?;
    let mut p = Chain::open(parent)?;
    let ranges = c.top_allocated();
    let total: u64 = ranges.iter().map(|r| r.1).sum::<u64>().max(1);
    let mut done = 0;
    let mut buf = vec![0u8; GRAIN as usize];
    for (o, l) in ranges {
        let b = &mut buf[..l as usize];
        c.read(o, b)?;
        p.write(o, b)?;
        done += l;
        progress(done as f64 / total as f64);
    }
    p.flush()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn data_ranges_and_holes_of_a_sparse_file() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("f");
        let f = OpenOptions::new().read(true).write(true).create_new(true).open(&p).unwrap();
        let len = 4 << 20;
        f.set_len(len).unwrap();
        assert!(data_ranges(&f, len).unwrap().is_empty());
        assert_eq!(holes_of(&f, len).unwrap(), vec![(0, len)]);
        f.write_all_at(&[1u8; 4096], 1 << 20).unwrap();
        let data = data_ranges(&f, len).unwrap();
        assert_eq!(data.len(), 1, "{data:?}");
        let (d, l) = data[0];
        assert!(d <= 1 << 20 && d + l >= (1 << 20) + 4096 && d + l < len, "{data:?}");
        assert_eq!(holes_of(&f, len).unwrap(), vec![(0, d), (d + l, len - d - l)]);
        // Allocating reserves every block (ext4 still reports blocks reserved
        // and unwritten as holes) and leaves the data as it was.
        allocate(&f, len).unwrap();
        use std::os::unix::fs::MetadataExt;
        assert!(f.metadata().unwrap().blocks() * 512 >= len);
        let mut b = [0u8; 4096];
        f.read_exact_at(&mut b, 1 << 20).unwrap();
        assert_eq!(b, [1u8; 4096]);
    }
}
