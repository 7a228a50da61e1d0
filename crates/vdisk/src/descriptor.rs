//! VMDK text descriptors. Written in the spelling qemu's parser needs
//! (`CID=` before `parentCID=`, no spaces around `=` in the header keys, a
//! comment line right before the extent lines) and read leniently.
use std::fmt::Write;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ExtentKind {
    /// A flat extent (`FLAT`, or ESXi's `VMFS`).
    Flat,
    /// A hosted-sparse (KDMV) extent.
    Sparse,
}

/// The most sectors a descriptor's extents may add up to: as many 512-byte
/// sectors as an i64 counts bytes.
pub const MAX_SECTORS: u64 = i64::MAX as u64 / 512;

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Extent {
    pub sectors: u64,
    pub kind: ExtentKind,
    /// File name, relative to the descriptor's directory.
    pub file: String,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Descriptor {
    pub cid: u32,
    /// `0xffffffff` when the disk has no parent.
    pub parent_cid: u32,
    pub create_type: String,
    pub parent_hint: Option<String>,
    pub extents: Vec<Extent>,
    /// `ddb.*` entries, in order, without the `ddb.` prefix.
    pub ddb: Vec<(String, String)>,
}

pub const NO_PARENT: u32 = 0xffff_ffff;

fn unquote(s: &str) -> &str {
    let s = s.trim();
    s.strip_prefix('"').and_then(|x| x.strip_suffix('"')).unwrap_or(s)
}

impl Descriptor {
    /// The sum of the extents' sizes (at most `MAX_SECTORS`, as parsed).
    pub fn capacity_sectors(&self) -> u64 {
        self.extents.iter().map(|e| e.sectors).sum()
    }

    pub fn ddb(&self, key: &str) -> Option<&str> {
        self.ddb.iter().find(|(k, _)| k == key).map(|(_, v)| v.as_str())
    }

    pub fn set_ddb(&mut self, key: &str, value: impl Into<String>) {
        let value = value.into();
        match self.ddb.iter_mut().find(|(k, _)| k == key) {
            Some(e) => e.1 = value,
            None => self.ddb.push((key.to_string(), value)),
        }
    }

    pub fn parse(text: &str) -> Result<Descriptor, String> {
        // qemu pads rewritten descriptors with NULs.
        let text = text.split('\0').next().unwrap_or("");
        let mut d = Descriptor {
            cid: 0,
            parent_cid: NO_PARENT,
            create_type: String::new(),
            parent_hint: None,
            extents: vec![],
            ddb: vec![],
        };
        let mut saw_cid = false;
        for raw in text.lines() {
            let line = raw.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let first = line.split_whitespace().next().unwrap_or("");
            if matches!(first, "RW" | "RDONLY" | "NOACCESS") {
                let rest = line[first.len()..].trim();
                let mut it = rest.splitn(3, char::is_whitespace);
                let sectors: u64 =
                    it.next().and_then(|s| s.parse().ok()).ok_or_else(|| format!("bad extent line: {line}"))?;
                let kind = match it.next().unwrap_or("") {
                    "FLAT" | "VMFS" => ExtentKind::Flat,
                    "SPARSE" => ExtentKind::Sparse,
                    other => return Err(format!("extent type {other} is not supported")),
                };
                let tail = it.next().unwrap_or("").trim();
                let file = tail
                    .strip_prefix('"')
                    .and_then(|t| t.split_once('"'))
                    .map(|(f, _)| f.to_string())
                    .ok_or_else(|| format!("bad extent file in: {line}"))?;
                // The disk's bytes must fit vim25's capacityInBytes (a
                // long), and so every size computed from it: an extent of
                // 5555555555555554094 sectors overflowed (vmdk fuzz target).
                let total = d.capacity_sectors().checked_add(sectors).filter(|t| *t <= MAX_SECTORS);
                if total.is_none() {
                    return Err(format!("the extents add up to more than {MAX_SECTORS} sectors: {line}"));
                }
                d.extents.push(Extent { sectors, kind, file });
                continue;
            }
            let Some((k, v)) = line.split_once('=') else { continue };
            let (k, v) = (k.trim(), unquote(v));
            match k {
                "CID" => {
                    d.cid = u32::from_str_radix(v, 16).map_err(|_| format!("bad CID {v}"))?;
                    saw_cid = true;
                }
                "parentCID" => d.parent_cid = u32::from_str_radix(v, 16).map_err(|_| format!("bad parentCID {v}"))?,
                "createType" => d.create_type = v.to_string(),
                "parentFileNameHint" => d.parent_hint = Some(v.to_string()),
                _ => {
                    if let Some(key) = k.strip_prefix("ddb.") {
                        d.ddb.push((key.to_string(), v.to_string()));
                    }
                }
            }
        }
        if !saw_cid {
            return Err("no CID".into());
        }
        if d.extents.is_empty() {
            return Err("no extent".into());
        }
        Ok(d)
    }

    pub fn render(&self) -> String {
        let mut s = String::new();
        let _ = writeln!(s, "# Disk DescriptorFile");
        let _ = writeln!(s, "version=1");
        let _ = writeln!(s, "encoding=\"UTF-8\"");
        let _ = writeln!(s, "CID={:08x}", self.cid);
        let _ = writeln!(s, "parentCID={:08x}", self.parent_cid);
        let _ = writeln!(s, "createType=\"{}\"", self.create_type);
        if let Some(h) = &self.parent_hint {
            let _ = writeln!(s, "parentFileNameHint=\"{h}\"");
        }
        let _ = writeln!(s, "\n# Extent description");
        for e in &self.extents {
            match e.kind {
                ExtentKind::Flat => {
                    let _ = writeln!(s, "RW {} FLAT \"{}\" 0", e.sectors, e.file);
                }
                ExtentKind::Sparse => {
                    let _ = writeln!(s, "RW {} SPARSE \"{}\"", e.sectors, e.file);
                }
            }
        }
        let _ = writeln!(s, "\n# The Disk Data Base\n#DDB\n");
        for (k, v) in &self.ddb {
            let _ = writeln!(s, "ddb.{k} = \"{v}\"");
        }
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn extents_larger_than_a_long_counts_bytes_are_refused() {
        let doc = |lines: &str| format!("# Disk DescriptorFile\nversion=1\nCID=fffffffe\nparentCID=ffffffff\n{lines}");
        // Found by the vmdk fuzz target: the byte size overflowed.
        assert!(Descriptor::parse(&doc("RW 5555555555555554094 FLAT \"a-flat.vmdk\" 0\n")).is_err());
        let half = MAX_SECTORS / 2 + 1;
        assert!(Descriptor::parse(&doc(&format!("RW {half} FLAT \"a\" 0\nRW {half} FLAT \"b\" 0\n"))).is_err());
        let d = Descriptor::parse(&doc(&format!("RW {MAX_SECTORS} FLAT \"a\" 0\n"))).unwrap();
        assert_eq!(d.capacity_sectors().checked_mul(512), Some(i64::MAX as u64 / 512 * 512));
    }

    #[test]
    fn round_trip_and_esxi_spelling() {
        let d = Descriptor {
            cid: 0xa80d92ef,
            parent_cid: NO_PARENT,
            create_type: "monolithicFlat".into(),
            parent_hint: None,
            extents: vec![Extent { sectors: 32768, kind: ExtentKind::Flat, file: "a b-flat.vmdk".into() }],
            ddb: vec![("adapterType".into(), "lsilogic".into())],
        };
        assert_eq!(Descriptor::parse(&d.render()).unwrap(), d);
        let esx = "# Disk DescriptorFile\nversion=1\nencoding=\"UTF-8\"\nCID=fffffffe\nparentCID=ffffffff\ncreateType=\"vmfs\"\n\n# Extent description\nRW 8 VMFS \"x-flat.vmdk\"\n\0\0\0";
        let p = Descriptor::parse(esx).unwrap();
        assert_eq!(
            (p.cid, p.extents[0].kind, p.extents[0].file.as_str()),
            (0xfffffffe, ExtentKind::Flat, "x-flat.vmdk")
        );
    }
}
