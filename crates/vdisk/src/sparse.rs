//! Hosted-sparse ("KDMV") extents, laid out as qemu and VMware Workstation
//! lay them out: header, an empty embedded-descriptor area, the redundant
//! grain directory and tables, the grain directory and tables (all tables
//! preallocated, so no directory entry is ever zero), then 64 KiB grains
//! appended as they are first written.
use crate::{format_err, io, Result, SECTOR};
use std::fs::{File, OpenOptions};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

pub const GRAIN_SECTORS: u64 = 128;
pub const GRAIN: u64 = GRAIN_SECTORS * SECTOR;
const GTES_PER_GT: u64 = 512;
const GT_SECTORS: u64 = GTES_PER_GT * 4 / SECTOR;
const MAGIC: &[u8; 4] = b"KDMV";

pub struct SparseExtent {
    path: PathBuf,
    file: File,
    capacity_sectors: u64,
    gd_offset: u64,
    rgd_offset: u64,
    /// Sector of each grain table, and of its redundant copy.
    gts: Vec<u64>,
    rgts: Vec<u64>,
    /// Every grain-table entry: the grain's sector in the file, 0 = not
    /// allocated here.
    entries: Vec<u32>,
    /// Where the next grain goes (sectors).
    next_free: u64,
}

fn round_up(n: u64, to: u64) -> u64 {
    n.div_ceil(to) * to
}

impl SparseExtent {
    pub fn capacity_sectors(&self) -> u64 {
        self.capacity_sectors
    }

    /// Create an empty extent of `capacity_sectors` at `path`.
    pub fn create(path: &Path, capacity_sectors: u64) -> Result<SparseExtent> {
        let grains = capacity_sectors.div_ceil(GRAIN_SECTORS);
        let num_gts = grains.div_ceil(GTES_PER_GT).max(1);
        let gd_sectors = (num_gts * 4).div_ceil(SECTOR);
        let rgd_offset = 21;
        let rgt_start = rgd_offset + gd_sectors;
        let gd_offset = rgt_start + num_gts * GT_SECTORS;
        let gt_start = gd_offset + gd_sectors;
        let overhead = round_up(gt_start + num_gts * GT_SECTORS, GRAIN_SECTORS);

        let mut h = [0u8; 512];
        h[0..4].copy_from_slice(MAGIC);
        h[4..8].copy_from_slice(&1u32.to_le_bytes());
        h[8..12].copy_from_slice(&3u32.to_le_bytes());
        h[12..20].copy_from_slice(&capacity_sectors.to_le_bytes());
        h[20..28].copy_from_slice(&GRAIN_SECTORS.to_le_bytes());
        h[28..36].copy_from_slice(&1u64.to_le_bytes());
        h[36..44].copy_from_slice(&20u64.to_le_bytes());
        h[44..48].copy_from_slice(&(GTES_PER_GT as u32).to_le_bytes());
        h[48..56].copy_from_slice(&rgd_offset.to_le_bytes());
        h[56..64].copy_from_slice(&gd_offset.to_le_bytes());
        h[64..72].copy_from_slice(&overhead.to_le_bytes());
        h[72] = 0;
        h[73..77].copy_from_slice(b"\n \r\n");
        let file = OpenOptions::new().read(true).write(true).create_new(true).open(path).map_err(io(path))?;
        file.write_all_at(&h, 0).map_err(io(path))?;
        let dir = |first_gt: u64| -> Vec<u8> {
            (0..num_gts).flat_map(|i| ((first_gt + i * GT_SECTORS) as u32).to_le_bytes()).collect()
        };
        file.write_all_at(&dir(rgt_start), rgd_offset * SECTOR).map_err(io(path))?;
        file.write_all_at(&dir(gt_start), gd_offset * SECTOR).map_err(io(path))?;
        file.set_len(overhead * SECTOR).map_err(io(path))?;
        file.sync_all().map_err(io(path))?;
        SparseExtent::open(path, true)
    }

    pub fn open(path: &Path, writable: bool) -> Result<SparseExtent> {
        let file = OpenOptions::new().read(true).write(writable).open(path).map_err(io(path))?;
        let mut h = [0u8; 512];
        file.read_exact_at(&mut h, 0).map_err(io(path))?;
        if &h[0..4] != MAGIC {
            return Err(format_err(path, "no KDMV header"));
        }
        let u64_at = |o: usize| u64::from_le_bytes(h[o..o + 8].try_into().expect("8 bytes"));
        let capacity_sectors = u64_at(12);
        let grain = u64_at(20);
        let gtes = u32::from_le_bytes(h[44..48].try_into().expect("4 bytes")) as u64;
        let flags = u32::from_le_bytes(h[8..12].try_into().expect("4 bytes"));
        if grain != GRAIN_SECTORS || gtes != GTES_PER_GT {
            return Err(format_err(
                path,
                format!("grain {grain} sectors / {gtes} entries per table are not supported"),
            ));
        }
        let rgd_offset = u64_at(48);
        let gd_offset = u64_at(56);
        let grains = capacity_sectors.div_ceil(GRAIN_SECTORS);
        let num_gts = grains.div_ceil(GTES_PER_GT).max(1);
        // Every table this header claims lies in the file (they are
        // preallocated): judge the header against the file's length before
        // a buffer is sized from it, so a hostile header cannot ask for
        // more memory than the file holds, nor an offset that overflows.
        let len = file.metadata().map_err(io(path))?.len();
        let table_bytes = GTES_PER_GT * 4;
        let fits =
            |at: u64, n: u64| at.checked_mul(SECTOR).and_then(|a| a.checked_add(n)).is_some_and(|end| end <= len);
        if num_gts.checked_mul(table_bytes).is_none_or(|b| b > len)
            || !fits(gd_offset, num_gts * 4)
            || (flags & 2 != 0 && !fits(rgd_offset, num_gts * 4))
        {
            return Err(format_err(path, format!("the header's {capacity_sectors} sectors and grain directories do not fit in the file's {len} bytes")));
        }
        let read_dir = |at: u64| -> Result<Vec<u64>> {
            let mut b = vec![0u8; (num_gts * 4) as usize];
            file.read_exact_at(&mut b, at * SECTOR).map_err(io(path))?;
            Ok(b.chunks(4).map(|c| u32::from_le_bytes(c.try_into().expect("4 bytes")) as u64).collect())
        };
        let gts = read_dir(gd_offset)?;
        let rgts = if flags & 2 != 0 { read_dir(rgd_offset)? } else { vec![] };
        if gts.contains(&0) {
            return Err(format_err(path, "a grain directory entry is empty"));
        }
        let mut entries = vec![0u32; (num_gts * GTES_PER_GT) as usize];
        if let Some(gt) = gts.iter().find(|&&gt| !fits(gt, table_bytes)) {
            return Err(format_err(path, format!("grain table at sector {gt} lies beyond the end of the file")));
        }
        for (i, &gt) in gts.iter().enumerate() {
            let mut b = vec![0u8; (GTES_PER_GT * 4) as usize];
            file.read_exact_at(&mut b, gt * SECTOR).map_err(io(path))?;
            for (j, c) in b.chunks(4).enumerate() {
                entries[i * GTES_PER_GT as usize + j] = u32::from_le_bytes(c.try_into().expect("4 bytes"));
            }
        }
        let next_free = round_up(len.div_ceil(SECTOR), GRAIN_SECTORS);
        Ok(SparseExtent {
            path: path.to_path_buf(),
            file,
            capacity_sectors,
            gd_offset,
            rgd_offset,
            gts,
            rgts,
            entries,
            next_free,
        })
    }

    /// Is grain `g` allocated in this extent?
    pub fn allocated(&self, g: u64) -> bool {
        self.entries.get(g as usize).is_some_and(|&e| e != 0)
    }

    /// Read `buf.len()` bytes of grain `g` from offset `within`; false when
    /// the grain is not allocated here.
    pub fn read_in_grain(&self, g: u64, within: u64, buf: &mut [u8]) -> Result<bool> {
        let e = self.entries.get(g as usize).copied().unwrap_or(0);
        if e == 0 {
            return Ok(false);
        }
        self.file.read_exact_at(buf, e as u64 * SECTOR + within).map_err(io(&self.path))?;
        Ok(true)
    }

    /// Write into an allocated grain.
    pub fn write_in_grain(&self, g: u64, within: u64, data: &[u8]) -> Result<()> {
        let e = self.entries[g as usize];
        debug_assert!(e != 0);
        self.file.write_all_at(data, e as u64 * SECTOR + within).map_err(io(&self.path))
    }

    /// Allocate grain `g` with its whole content; the data lands before the
    /// table entries that point at it.
    pub fn allocate(&mut self, g: u64, grain: &[u8]) -> Result<()> {
        debug_assert_eq!(grain.len() as u64, GRAIN);
        let at = self.next_free;
        self.file.write_all_at(grain, at * SECTOR).map_err(io(&self.path))?;
        self.next_free += GRAIN_SECTORS;
        self.entries[g as usize] = at as u32;
        let (t, i) = (g / GTES_PER_GT, g % GTES_PER_GT);
        let e = (at as u32).to_le_bytes();
        self.file.write_all_at(&e, self.gts[t as usize] * SECTOR + i * 4).map_err(io(&self.path))?;
        if let Some(rgt) = self.rgts.get(t as usize) {
            self.file.write_all_at(&e, rgt * SECTOR + i * 4).map_err(io(&self.path))?;
        }
        Ok(())
    }

    pub fn flush(&self) -> Result<()> {
        self.file.sync_data().map_err(io(&self.path))
    }

    /// Allocated grains, in order.
    pub fn allocated_grains(&self) -> impl Iterator<Item = u64> + '_ {
        self.entries.iter().enumerate().filter(|(_, e)| **e != 0).map(|(g, _)| g as u64)
    }

    #[doc(hidden)]
    pub fn directory_offsets(&self) -> (u64, u64) {
        (self.gd_offset, self.rgd_offset)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::FileExt;

    /// A header is judged against the file before anything is sized from
    /// it: a hostile capacity or directory offset is a format error, never
    /// an allocation of its size or an overflow (found by the vmdk fuzz target).
    #[test]
    fn hostile_headers_are_refused() {
        let d = tempfile::tempdir().unwrap();
        let good = d.path().join("good.vmdk");
        SparseExtent::create(&good, 2048).unwrap();
        assert!(SparseExtent::open(&good, false).is_ok());
        let mut h = [0u8; 512];
        std::fs::File::open(&good).unwrap().read_exact_at(&mut h, 0).unwrap();
        for (at, value) in [(12usize, 1u64 << 62), (56, u64::MAX / 2), (56, 1 << 40)] {
            let bad = d.path().join(format!("bad-{at}-{value}.vmdk"));
            std::fs::copy(&good, &bad).unwrap();
            let mut b = h;
            b[at..at + 8].copy_from_slice(&value.to_le_bytes());
            std::fs::OpenOptions::new().write(true).open(&bad).unwrap().write_all_at(&b, 0).unwrap();
            assert!(
                matches!(SparseExtent::open(&bad, false), Err(crate::Error::Format { .. })),
                "offset {at} = {value}"
            );
        }
    }
}
