//! Virtual machines' own files, apart from how any API shows them: the
//! `.vmx` (a list of key = value lines, kept in order) and where it lives.
use crate::engine::inventory::{Entity, Inventory};
use crate::engine::{Engine, Fault};
use std::path::{Path, PathBuf};
use vdisk::vmfiles::parse_kv;
use vmodl::{types, MoRef};

/// The `.vmx`: kept as (datastore, path in it), so a VM follows its
/// datastore to a new mount path.
pub fn vmx_path(inv: &Inventory, e: &Entity) -> PathBuf {
    let root = e.attr("ds").and_then(|d| inv.get(d)).and_then(|d| d.attr("path")).unwrap_or_default();
    PathBuf::from(root).join(e.attr("vmx").unwrap_or_default())
}

pub fn read_vmx(path: &Path) -> Result<Vec<(String, String)>, Fault> {
    let text = std::fs::read_to_string(path).map_err(|e| {
        Fault::new(types::FileFault, format!("{}: {e}", path.display())).with("file", path.display().to_string())
    })?;
    Ok(parse_kv(&text))
}

/// Write a `.vmx` whole (atomically: a reader sees the old or the new file).
pub fn write_vmx(vmx: &Path, kv: &[(String, String)]) -> Result<(), Fault> {
    vdisk::chain::write_atomic(vmx, &vdisk::vmfiles::render_kv(kv)).map_err(Fault::from)
}

/// A VM's moref and its `.vmx` path; NotFound if `vm` names no VM.
pub fn vmx_of(eng: &Engine, vm: Option<&MoRef>) -> Result<(MoRef, PathBuf), Fault> {
    let vm = vm.ok_or_else(|| Fault::invalid_argument("vm", "vm is required"))?;
    let inv = eng.inv.read();
    let e = inv.get(&vm.value).filter(|e| e.moref.ty == types::VirtualMachine).ok_or_else(|| Fault::not_found(vm))?;
    Ok((e.moref.clone(), vmx_path(&inv, e)))
}

fn canon(p: &Path) -> PathBuf {
    std::fs::canonicalize(p).unwrap_or_else(|_| p.to_path_buf())
}

/// The `scsiB:U` slot of a `.vmx` naming a file in `dir`.
pub fn slot_of(kv: &[(String, String)], vmx: &Path, dir: &Path) -> Option<String> {
    let vmdir = vmx.parent().unwrap_or(Path::new("."));
    let dir = canon(dir);
    kv.iter().find_map(|(k, v)| {
        let slot = k.strip_suffix(".fileName").or_else(|| k.strip_suffix(".filename"))?;
        let p = if v.starts_with('/') { PathBuf::from(v) } else { vmdir.join(v) };
        (canon(&p).parent() == Some(dir.as_path())).then(|| slot.to_string())
    })
}

/// `60 00 c2 9a …` (a descriptor's ddb.uuid) → `6000c29a-…`, the form
/// vCenter reports disk UUIDs in.
pub fn dashed_uuid(ddb: &str) -> String {
    let hex: String = ddb.chars().filter(char::is_ascii_hexdigit).collect();
    if hex.len() != 32 {
        return ddb.to_string();
    }
    format!("{}-{}-{}-{}-{}", &hex[0..8], &hex[8..12], &hex[12..16], &hex[16..20], &hex[20..32])
}
