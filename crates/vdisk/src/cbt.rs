//! Changed block tracking. A per-disk, append-only change log records which
//! 64 KiB blocks each generation of writes touched; a snapshot closes the
//! current generation and its number becomes the snapshot's change point
//! (`<epoch uuid>/<point>` as a changeId). A block is logged, and the log
//! synced, the first time a generation touches it, before the write goes to
//! the disk, so a crash can never lose a change (at worst it reports a block
//! that was not written). Reverting to a point drops the generations after
//! it from the history, and with them every changeId that named them.
use crate::{io, Result};
use std::collections::{BTreeMap, BTreeSet};
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};

pub const BLOCK: u64 = 64 << 10;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ChangeIdError {
    /// Not of the form `<uuid>/<n>`.
    Malformed,
    /// From another disk or another tracking epoch.
    OtherEpoch,
    /// A point this disk never had, one in the future, or one a revert discarded.
    Unknown,
}

#[derive(Default)]
struct State {
    enabled: bool,
    epoch: u128,
    /// Generations on the current branch, oldest first.
    history: Vec<u64>,
    max_gen: u64,
    dirty: BTreeMap<u64, BTreeSet<u64>>,
}

pub struct ChangeLog {
    path: PathBuf,
    file: File,
    st: State,
    lines: usize,
}

fn checksum(s: &str) -> u32 {
    s.bytes().fold(0x811c9dc5u32, |h, b| (h ^ b as u32).wrapping_mul(0x01000193))
}

fn ranges(blocks: &BTreeSet<u64>) -> String {
    let mut out = vec![];
    let mut it = blocks.iter().copied().peekable();
    while let Some(a) = it.next() {
        let mut b = a;
        while it.peek() == Some(&(b + 1)) {
            b = it.next().expect("peeked");
        }
        out.push(if a == b { a.to_string() } else { format!("{a}-{b}") });
    }
    out.join(",")
}

fn parse_ranges(s: &str) -> Option<Vec<u64>> {
    let mut v = vec![];
    for part in s.split(',').filter(|p| !p.is_empty()) {
        match part.split_once('-') {
            Some((a, b)) => {
                let (a, b): (u64, u64) = (a.parse().ok()?, b.parse().ok()?);
                if b < a || b - a > 1 << 32 {
                    return None;
                }
                v.extend(a..=b);
            }
            None => v.push(part.parse().ok()?),
        }
    }
    Some(v)
}

/// ESXi's form of a tracking epoch: 16 bytes in hex pairs, a dash after 8.
pub fn epoch_text(e: u128) -> String {
    let b = e.to_be_bytes();
    let h: Vec<String> = b.iter().map(|x| format!("{x:02x}")).collect();
    format!("{}-{}", h[..8].join(" "), h[8..].join(" "))
}

impl State {
    fn apply(&mut self, rec: &str) -> Option<()> {
        let mut it = rec.split(' ');
        match it.next()? {
            "E" => {
                let epoch = u128::from_str_radix(it.next()?, 16).ok()?;
                *self = State { enabled: true, epoch, history: vec![1], max_gen: 1, dirty: BTreeMap::new() };
            }
            "D" => *self = State::default(),
            "W" => {
                let g: u64 = it.next()?.parse().ok()?;
                let blocks = parse_ranges(it.next().unwrap_or(""))?;
                self.dirty.entry(g).or_default().extend(blocks);
            }
            "P" | "R" => {
                let (g, next): (u64, u64) = (it.next()?.parse().ok()?, it.next()?.parse().ok()?);
                let pos = self.history.iter().position(|&x| x == g)?;
                self.history.truncate(pos + 1);
                self.history.push(next);
                self.max_gen = self.max_gen.max(next);
                // Generations no longer on the branch are gone for good.
                let keep: BTreeSet<u64> = self.history.iter().copied().collect();
                self.dirty.retain(|g, _| keep.contains(g));
            }
            _ => return None,
        }
        Some(())
    }
}

impl ChangeLog {
    /// Open (or create) the log at `path` and replay it. A torn last record
    /// (a crash mid-append) is dropped.
    pub fn open(path: &Path) -> Result<ChangeLog> {
        let text = match std::fs::read(path) {
            Ok(b) => String::from_utf8_lossy(&b).into_owned(),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => String::new(),
            Err(e) => return Err(io(path)(e)),
        };
        let mut st = State::default();
        let mut good = 0usize;
        let mut lines = 0;
        for line in text.split_inclusive('\n') {
            let Some(body) = line.strip_suffix('\n') else { break };
            let Some((rec, sum)) = body.rsplit_once(" *") else { break };
            if u32::from_str_radix(sum, 16).ok() != Some(checksum(rec)) || st.apply(rec).is_none() {
                break;
            }
            good += line.len();
            lines += 1;
        }
        let file = OpenOptions::new().create(true).append(true).open(path).map_err(io(path))?;
        if good < text.len() {
            file.set_len(good as u64).map_err(io(path))?;
        }
        let mut log = ChangeLog { path: path.to_path_buf(), file, st, lines };
        if log.lines > 4096 {
            log.compact()?;
        }
        Ok(log)
    }

    fn append(&mut self, recs: &[String]) -> Result<()> {
        let mut buf = String::new();
        for r in recs {
            buf.push_str(&format!("{r} *{:08x}\n", checksum(r)));
        }
        self.file.write_all(buf.as_bytes()).map_err(io(&self.path))?;
        self.file.sync_data().map_err(io(&self.path))?;
        for r in recs {
            self.st.apply(r);
        }
        self.lines += recs.len();
        Ok(())
    }

    /// Rewrite the log as the shortest one with the same state.
    pub fn compact(&mut self) -> Result<()> {
        let mut recs = vec![];
        if self.st.enabled {
            recs.push(format!("E {:032x}", self.st.epoch));
            // E starts generation 1; reproduce the branch's generation numbers.
            let mut prev = 1u64;
            for (i, &g) in self.st.history.iter().enumerate() {
                if i > 0 {
                    recs.push(format!("P {prev} {g}"));
                }
                if let Some(d) = self.st.dirty.get(&g).filter(|d| !d.is_empty()) {
                    recs.push(format!("W {g} {}", ranges(d)));
                }
                prev = g;
            }
        }
        let text: String = recs.iter().map(|r| format!("{r} *{:08x}\n", checksum(r))).collect();
        crate::chain::write_atomic(&self.path, &text)?;
        self.file = OpenOptions::new().append(true).open(&self.path).map_err(io(&self.path))?;
        self.lines = recs.len();
        Ok(())
    }

    pub fn enabled(&self) -> bool {
        self.st.enabled
    }

    /// Start tracking with a new epoch (earlier changeIds become invalid).
    pub fn enable(&mut self) -> Result<()> {
        let epoch: u128 = rand::random();
        self.append(&[format!("E {epoch:032x}")])
    }

    pub fn disable(&mut self) -> Result<()> {
        if self.st.enabled {
            self.append(&["D".into()])?;
        }
        Ok(())
    }

    /// Record that bytes `[offset, offset+len)` are about to change. Returns
    /// once the record is durable.
    pub fn mark(&mut self, offset: u64, len: u64) -> Result<()> {
        self.mark_many(&[(offset, len)])
    }

    /// Record several ranges with one durable append (group commit).
    pub fn mark_many(&mut self, ranges_: &[(u64, u64)]) -> Result<()> {
        if !self.st.enabled {
            return Ok(());
        }
        let g = *self.st.history.last().expect("enabled log has a generation");
        let seen = self.st.dirty.get(&g);
        let mut new = BTreeSet::new();
        for &(offset, len) in ranges_.iter().filter(|r| r.1 > 0) {
            let (a, b) = (offset / BLOCK, (offset + len - 1) / BLOCK);
            new.extend((a..=b).filter(|x| !seen.is_some_and(|s| s.contains(x))));
        }
        if new.is_empty() {
            return Ok(());
        }
        self.append(&[format!("W {g} {}", ranges(&new))])
    }

    /// Close the current generation: the returned point names the state now.
    pub fn snapshot(&mut self) -> Result<Option<u64>> {
        if !self.st.enabled {
            return Ok(None);
        }
        let g = *self.st.history.last().expect("a generation");
        let next = self.st.max_gen + 1;
        self.append(&[format!("P {g} {next}")])?;
        Ok(Some(g))
    }

    /// The disk went back to `point`: later generations are discarded.
    pub fn revert(&mut self, point: u64) -> Result<()> {
        if !self.st.enabled || !self.is_point(point) {
            return Ok(());
        }
        let next = self.st.max_gen + 1;
        self.append(&[format!("R {point} {next}")])
    }

    fn is_point(&self, p: u64) -> bool {
        // A point is a closed generation of the current branch.
        let h = &self.st.history;
        h.iter().position(|&g| g == p).is_some_and(|i| i + 1 < h.len())
    }

    pub fn change_id(&self, point: u64) -> String {
        format!("{}/{point}", epoch_text(self.st.epoch))
    }

    /// The point a changeId names, if it is valid on this disk now.
    pub fn parse_change_id(&self, id: &str) -> std::result::Result<u64, ChangeIdError> {
        let (epoch, n) = id.rsplit_once('/').ok_or(ChangeIdError::Malformed)?;
        let n: u64 = n.parse().map_err(|_| ChangeIdError::Malformed)?;
        let hex: String = epoch.chars().filter(char::is_ascii_hexdigit).collect();
        if hex.len() != 32 || epoch.chars().any(|c| !(c.is_ascii_hexdigit() || c == ' ' || c == '-')) {
            return Err(ChangeIdError::Malformed);
        }
        if !self.st.enabled || u128::from_str_radix(&hex, 16).ok() != Some(self.st.epoch) {
            return Err(ChangeIdError::OtherEpoch);
        }
        if !self.is_point(n) {
            return Err(ChangeIdError::Unknown);
        }
        Ok(n)
    }

    /// Blocks changed after point `from` up to point `to` (from ≤ to, both
    /// points of the current branch), in order.
    pub fn changed(&self, from: u64, to: u64) -> std::result::Result<BTreeSet<u64>, ChangeIdError> {
        let h = &self.st.history;
        let (i, j) = match (h.iter().position(|&g| g == from), h.iter().position(|&g| g == to)) {
            (Some(i), Some(j)) if i <= j => (i, j),
            _ => return Err(ChangeIdError::Unknown),
        };
        let mut out = BTreeSet::new();
        for g in &h[i + 1..=j] {
            if let Some(d) = self.st.dirty.get(g) {
                out.extend(d.iter().copied());
            }
        }
        Ok(out)
    }

    /// Is `point` (a snapshot's) still on the current branch?
    pub fn valid_point(&self, point: u64) -> bool {
        self.is_point(point)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn points_revert_and_replay() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("ctk.log");
        let mut l = ChangeLog::open(&p).unwrap();
        assert_eq!(l.snapshot().unwrap(), None, "off: no points");
        l.enable().unwrap();
        l.mark(0, 1).unwrap();
        let p1 = l.snapshot().unwrap().unwrap();
        l.mark(BLOCK * 5, BLOCK * 2).unwrap();
        let p2 = l.snapshot().unwrap().unwrap();
        assert_eq!(l.changed(p1, p2).unwrap().into_iter().collect::<Vec<_>>(), vec![5, 6]);
        l.revert(p1).unwrap();
        assert_eq!(l.parse_change_id(&l.change_id(p2)), Err(ChangeIdError::Unknown));
        l.mark(BLOCK * 9, 1).unwrap();
        let p3 = l.snapshot().unwrap().unwrap();
        let id1 = l.change_id(p1);
        drop(l);
        // Replayed from the file, with a torn record at the end.
        std::fs::OpenOptions::new().append(true).open(&p).unwrap().write_all(b"W 9 1-").unwrap();
        let mut l = ChangeLog::open(&p).unwrap();
        assert_eq!(l.parse_change_id(&id1), Ok(p1));
        assert_eq!(l.changed(p1, p3).unwrap().into_iter().collect::<Vec<_>>(), vec![9]);
        l.compact().unwrap();
        let l = ChangeLog::open(&p).unwrap();
        assert_eq!(l.changed(p1, p3).unwrap().into_iter().collect::<Vec<_>>(), vec![9]);
        assert_eq!(l.parse_change_id("52 05/1"), Err(ChangeIdError::Malformed));
        let other = format!("{}/{p1}", epoch_text(1));
        assert_eq!(l.parse_change_id(&other), Err(ChangeIdError::OtherEpoch));
    }
}
