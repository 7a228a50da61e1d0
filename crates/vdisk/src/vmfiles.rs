//! Virtual machine files as text: `.vmx`-style `key = "value"` files
//! (`.vmx`, `.vmsd`, `.vmxf`) and disk descriptors, and the rewrite that
//! `UpdateVirtualMachineFiles` needs after a datastore comes back under a new
//! mount path: every path under an old mount path is moved to the new one.
//! Each file is replaced atomically (temp file, fsync, rename, fsync dir),
//! so after a crash a file is wholly old or wholly new; running the rewrite
//! twice changes nothing the second time.
use crate::chain::write_atomic;
use std::path::{Path, PathBuf};

/// One old → new mount path.
#[derive(Clone, Debug)]
pub struct Mapping {
    pub old: String,
    pub new: String,
}

/// A file that could not be updated, and why.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Failure {
    pub path: PathBuf,
    pub reason: String,
}

#[derive(Default, Debug)]
pub struct Summary {
    /// Files rewritten.
    pub updated: Vec<PathBuf>,
    /// Files looked at that named no old path.
    pub unchanged: usize,
    pub failed: Vec<Failure>,
}

/// What kind of VM metadata a file is, by name.
fn kind(p: &Path) -> Option<&'static str> {
    match p.extension()?.to_str()? {
        "vmx" | "vmsd" | "vmxf" | "vmtx" => Some("kv"),
        "vmdk" => Some("vmdk"),
        _ => None,
    }
}

/// Move `value` from an old mount path to its new one, if it lies under one.
fn remap(value: &str, maps: &[Mapping]) -> Option<String> {
    for m in maps {
        let old = m.old.trim_end_matches('/');
        if old.is_empty() || old == m.new.trim_end_matches('/') {
            continue;
        }
        if let Some(rest) = value.strip_prefix(old) {
            if rest.is_empty() || rest.starts_with('/') {
                return Some(format!("{}{rest}", m.new.trim_end_matches('/')));
            }
        }
    }
    None
}

/// Rewrite the quoted values of `key = "value"` lines (and the quoted file
/// of descriptor extent lines) that name a path under an old mount path.
/// None when nothing changes.
pub fn rewrite_text(text: &str, maps: &[Mapping]) -> Option<String> {
    let mut changed = false;
    let mut out = String::with_capacity(text.len());
    for line in text.split_inclusive('\n') {
        let mut new_line = None;
        // key = "value" (vmx, vmsd, descriptor header and ddb).
        if let Some((k, v)) = line.split_once('=') {
            let v_trim = v.trim_end_matches(['\n', '\r']);
            let ending = &v[v_trim.len()..];
            let inner = v_trim.trim();
            if let Some(q) = inner.strip_prefix('"').and_then(|x| x.strip_suffix('"')) {
                if let Some(r) = remap(q, maps) {
                    let lead = &v_trim[..v_trim.len() - v_trim.trim_start().len()];
                    new_line = Some(format!("{k}={lead}\"{r}\"{ending}"));
                }
            }
        }
        // Descriptor extent lines: ACCESS SECTORS TYPE "file" [offset].
        let first = line.split_whitespace().next().unwrap_or("");
        if new_line.is_none() && matches!(first, "RW" | "RDONLY" | "NOACCESS") {
            if let Some((head, tail)) = line.split_once('"') {
                if let Some((file, rest)) = tail.split_once('"') {
                    if let Some(r) = remap(file, maps) {
                        new_line = Some(format!("{head}\"{r}\"{rest}"));
                    }
                }
            }
        }
        match new_line {
            Some(l) => {
                changed = true;
                out.push_str(&l);
            }
            None => out.push_str(line),
        }
    }
    changed.then_some(out)
}

/// Does a file name any old mount path?
fn mentions(bytes: &[u8], maps: &[Mapping]) -> bool {
    maps.iter().any(|m| {
        let old = m.old.trim_end_matches('/').as_bytes();
        !old.is_empty() && bytes.windows(old.len()).any(|w| w == old)
    })
}

/// Rewrite one file. Ok(true) when it changed.
pub fn update_file(path: &Path, maps: &[Mapping]) -> Result<bool, String> {
    let k = kind(path).ok_or("not a virtual machine metadata file")?;
    let meta = std::fs::metadata(path).map_err(|e| e.to_string())?;
    if k == "vmdk" {
        // Extents (flat, sparse) are binary and never name a path; a disk
        // whose descriptor is embedded in its extent cannot be rewritten.
        let mut head = [0u8; 4];
        use std::io::Read;
        let n = std::fs::File::open(path).and_then(|mut f| f.read(&mut head)).map_err(|e| e.to_string())?;
        if n == 4 && &head == b"KDMV" {
            let bytes = std::fs::read(path).map_err(|e| e.to_string())?;
            let limit = bytes.len().min(1 << 20);
            if mentions(&bytes[..limit], maps) {
                return Err("the descriptor is embedded in a sparse extent and cannot be rewritten".into());
            }
            return Ok(false);
        }
        if meta.len() > 64 << 10 {
            return Ok(false); // a flat extent
        }
    } else if meta.len() > 16 << 20 {
        return Err("file too large for a metadata file".into());
    }
    let bytes = std::fs::read(path).map_err(|e| e.to_string())?;
    let text = match std::str::from_utf8(&bytes) {
        Ok(t) => t.trim_end_matches('\0'),
        Err(_) if k == "vmdk" && !mentions(&bytes, maps) => return Ok(false),
        Err(_) => return Err("not a text file (invalid UTF-8)".into()),
    };
    if k == "vmdk" && !text.trim_start().starts_with('#') && !text.contains("createType") {
        if mentions(&bytes, maps) {
            return Err("not a disk descriptor".into());
        }
        return Ok(false);
    }
    match rewrite_text(text, maps) {
        Some(new) => {
            write_atomic(path, &new).map_err(|e| e.to_string())?;
            Ok(true)
        }
        None => Ok(false),
    }
}

/// The metadata files under `root`, in a stable order.
pub fn metadata_files(root: &Path) -> Vec<PathBuf> {
    let mut out = vec![];
    let mut stack = vec![root.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(rd) = std::fs::read_dir(&d) else { continue };
        for e in rd.flatten() {
            let p = e.path();
            match e.file_type() {
                Ok(t) if t.is_dir() => stack.push(p),
                Ok(t)
                    if t.is_file()
                        && kind(&p).is_some()
                        && !p.file_name().is_some_and(|n| n.to_string_lossy().starts_with('.')) =>
                {
                    out.push(p);
                }
                _ => {}
            }
        }
    }
    out.sort();
    out
}

/// Rewrite every metadata file under `root`; `progress(done, total)` after
/// each file.
pub fn update_tree(root: &Path, maps: &[Mapping], progress: &mut dyn FnMut(usize, usize)) -> Summary {
    let files = metadata_files(root);
    let total = files.len();
    let mut s = Summary::default();
    for (i, f) in files.into_iter().enumerate() {
        match update_file(&f, maps) {
            Ok(true) => s.updated.push(f),
            Ok(false) => s.unchanged += 1,
            Err(reason) => s.failed.push(Failure { path: f, reason }),
        }
        progress(i + 1, total);
    }
    s
}

/// Parse `key = "value"` lines (vmx, vmsd) in order.
pub fn parse_kv(text: &str) -> Vec<(String, String)> {
    text.lines()
        .filter_map(|l| {
            let l = l.trim();
            if l.is_empty() || l.starts_with('#') {
                return None;
            }
            let (k, v) = l.split_once('=')?;
            let v = v.trim();
            let v = v.strip_prefix('"').and_then(|x| x.strip_suffix('"')).unwrap_or(v);
            Some((k.trim().to_string(), v.to_string()))
        })
        .collect()
}

/// Render `key = "value"` lines as ESXi writes them.
pub fn render_kv(pairs: &[(String, String)]) -> String {
    let mut s = String::from(".encoding = \"UTF-8\"\n");
    for (k, v) in pairs.iter().filter(|(k, _)| k != ".encoding") {
        s.push_str(&format!("{k} = \"{v}\"\n"));
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    fn maps() -> Vec<Mapping> {
        vec![Mapping { old: "/vmfs/volumes/old-uuid".into(), new: "/vmfs/volumes/new-uuid".into() }]
    }

    #[test]
    fn rewrites_paths_under_the_old_mount_only() {
        let vmx = ".encoding = \"UTF-8\"\ndisplayName = \"vm1\"\nscsi0:1.fileName = \"/vmfs/volumes/old-uuid/vm1/vm1_1.vmdk\"\nx = \"/vmfs/volumes/old-uuid-other/a\"\nnvram = \"vm1.nvram\"\n";
        let out = rewrite_text(vmx, &maps()).unwrap();
        assert!(out.contains("scsi0:1.fileName = \"/vmfs/volumes/new-uuid/vm1/vm1_1.vmdk\""));
        assert!(out.contains("x = \"/vmfs/volumes/old-uuid-other/a\""), "a longer name is another volume");
        assert!(rewrite_text(&out, &maps()).is_none(), "twice is harmless");
        let desc = "# Disk DescriptorFile\nversion=1\nCID=1\nparentCID=2\ncreateType=\"twoGbMaxExtentSparse\"\nparentFileNameHint=\"/vmfs/volumes/old-uuid/vm1/vm1.vmdk\"\n# Extent description\nRW 8 SPARSE \"/vmfs/volumes/old-uuid/vm1/vm1-000001-s001.vmdk\"\n";
        let out = rewrite_text(desc, &maps()).unwrap();
        assert!(out.contains("parentFileNameHint=\"/vmfs/volumes/new-uuid/vm1/vm1.vmdk\""));
        assert!(out.contains("RW 8 SPARSE \"/vmfs/volumes/new-uuid/vm1/vm1-000001-s001.vmdk\""));
        let same = vec![Mapping { old: "/a".into(), new: "/a/".into() }];
        assert!(rewrite_text("k = \"/a/b\"\n", &same).is_none(), "a pair whose new path is the old one is ignored");
    }

    #[test]
    fn tree_update_reports_failures_and_keeps_going() {
        let d = tempfile::tempdir().unwrap();
        let vm = d.path().join("vm1");
        std::fs::create_dir(&vm).unwrap();
        std::fs::write(vm.join("vm1.vmx"), "a = \"/vmfs/volumes/old-uuid/vm1/vm1.vmdk\"\n").unwrap();
        std::fs::write(vm.join("vm1.vmsd"), "snapshot0.disk0.fileName = \"/vmfs/volumes/old-uuid/vm1/vm1.vmdk\"\n")
            .unwrap();
        std::fs::write(vm.join("broken.vmx"), b"a = \"/vmfs/volumes/old-uuid/\xff\xfe\"\n").unwrap();
        std::fs::write(vm.join("vm1-flat.vmdk"), vec![0u8; 100 << 10]).unwrap();
        let mut seen = 0;
        let s = update_tree(d.path(), &maps(), &mut |done, total| {
            seen = done;
            assert_eq!(total, 4);
        });
        assert_eq!(seen, 4);
        assert_eq!(s.updated.len(), 2);
        assert_eq!(s.failed.len(), 1);
        assert!(s.failed[0].path.ends_with("broken.vmx"));
        assert!(std::fs::read_to_string(vm.join("vm1.vmsd")).unwrap().contains("new-uuid"));
        let again = update_tree(d.path(), &maps(), &mut |_, _| {});
        assert!(again.updated.is_empty());
    }
}
