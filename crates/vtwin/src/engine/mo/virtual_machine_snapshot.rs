//! VM snapshots, kept where ESXi keeps them: the `.vmsd` lists the
//! snapshots (uid, name, parent, the disk files each froze) and the current
//! one; each disk's writable delta is named by the `.vmx`. A snapshot
//! freezes every disk's current file and starts a delta in the VM's
//! directory (chained by `parentFileNameHint`, by mount path when the
//! parent is on another datastore); reverting starts a fresh delta on the
//! snapshot's files; removing one merges the layer above it into its files.
//! VirtualMachine.CreateSnapshot_Task / RemoveAllSnapshots_Task and
//! VirtualMachineSnapshot (`snapshot-<vm>-<uid>`) live here.
use crate::engine::inventory::Inventory;
use crate::engine::runner::TaskSpec;
use crate::engine::vm::{read_vmx, vmx_path};
use crate::engine::{Ctx, Engine, Fault, Reply};
use std::path::{Path, PathBuf};
use vdisk::vmfiles::{parse_kv, render_kv};
use vmodl::value::Args;
use vmodl::{types, Data, MoRef, Value};

pub const PREFIX: &str = "snapshot-";

#[derive(Clone, Debug, Default)]
struct Snap {
    uid: u32,
    name: String,
    description: String,
    parent: Option<u32>,
    create_us: i64,
    vmsn: String,
    /// (node, file as the .vmx named it when frozen)
    disks: Vec<(String, String)>,
}

#[derive(Clone, Debug, Default)]
struct Vmsd {
    last_uid: u32,
    current: Option<u32>,
    snaps: Vec<Snap>,
}

impl Vmsd {
    fn parse(text: &str) -> Vmsd {
        let kv = parse_kv(text);
        let get = |k: &str| kv.iter().find(|(x, _)| x == k).map(|(_, v)| v.clone());
        let mut v = Vmsd {
            last_uid: get("snapshot.lastUID").and_then(|x| x.parse().ok()).unwrap_or(0),
            current: get("snapshot.current").and_then(|x| x.parse().ok()),
            snaps: vec![],
        };
        let n: usize = get("snapshot.numSnapshots").and_then(|x| x.parse().ok()).unwrap_or(0);
        for i in 0..n {
            let p = |k: &str| get(&format!("snapshot{i}.{k}"));
            let Some(uid) = p("uid").and_then(|x| x.parse().ok()) else { continue };
            let nd: usize = p("numDisks").and_then(|x| x.parse().ok()).unwrap_or(0);
            let disks = (0..nd)
                .filter_map(|d| Some((p(&format!("disk{d}.node"))?, p(&format!("disk{d}.fileName"))?)))
                .collect();
            let hi: i64 = p("createTimeHigh").and_then(|x| x.parse().ok()).unwrap_or(0);
            let lo: i64 = p("createTimeLow").and_then(|x| x.parse::<i64>().ok()).unwrap_or(0);
            v.snaps.push(Snap {
                uid,
                name: p("displayName").unwrap_or_default(),
                description: p("description").unwrap_or_default(),
                parent: p("parent").and_then(|x| x.parse().ok()),
                create_us: (hi << 32) | (lo & 0xffff_ffff),
                vmsn: p("filename").unwrap_or_default(),
                disks,
            });
        }
        v
    }

    fn render(&self) -> String {
        let mut kv: Vec<(String, String)> = vec![
            ("snapshot.lastUID".into(), self.last_uid.to_string()),
            ("snapshot.numSnapshots".into(), self.snaps.len().to_string()),
        ];
        if let Some(c) = self.current {
            kv.push(("snapshot.current".into(), c.to_string()));
        }
        for (i, s) in self.snaps.iter().enumerate() {
            let mut put = |k: &str, v: String| kv.push((format!("snapshot{i}.{k}"), v));
            put("uid", s.uid.to_string());
            put("filename", s.vmsn.clone());
            if let Some(p) = s.parent {
                put("parent", p.to_string());
            }
            put("displayName", s.name.clone());
            put("description", s.description.clone());
            put("createTimeHigh", (s.create_us >> 32).to_string());
            put("createTimeLow", (s.create_us & 0xffff_ffff).to_string());
            put("numDisks", s.disks.len().to_string());
            for (d, (node, file)) in s.disks.iter().enumerate() {
                put(&format!("disk{d}.fileName"), file.clone());
                put(&format!("disk{d}.node"), node.clone());
            }
        }
        render_kv(&kv)
    }
}

struct Vm {
    moid: String,
    vmx: PathBuf,
    dir: PathBuf,
    kv: Vec<(String, String)>,
    vmsd_path: PathBuf,
    vmsd: Vmsd,
}

fn fault_io(p: &Path, e: impl std::fmt::Display) -> Fault {
    Fault::new(types::FileFault, format!("{}: {e}", p.display())).with("file", p.display().to_string())
}

impl Vm {
    fn load(inv: &Inventory, moid: &str) -> Result<Vm, Fault> {
        let e = inv
            .get(moid)
            .filter(|e| e.moref.ty == types::VirtualMachine)
            .ok_or_else(|| Fault::not_found(&MoRef::new(types::VirtualMachine, moid)))?;
        let vmx = vmx_path(inv, e);
        let dir = vmx.parent().map(Path::to_path_buf).unwrap_or_default();
        let kv = read_vmx(&vmx)?;
        let stem = vmx.file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_default();
        let vmsd_path = dir.join(format!("{stem}.vmsd"));
        let vmsd = std::fs::read_to_string(&vmsd_path).map(|t| Vmsd::parse(&t)).unwrap_or_default();
        Ok(Vm { moid: moid.to_string(), vmx, dir, kv, vmsd_path, vmsd })
    }
    fn path(&self, file: &str) -> PathBuf {
        if file.starts_with('/') {
            PathBuf::from(file)
        } else {
            self.dir.join(file)
        }
    }
    /// (node, file) of every disk the .vmx names.
    fn disks(&self) -> Vec<(String, String)> {
        self.kv
            .iter()
            .filter_map(|(k, v)| {
                let node = k.strip_suffix(".fileName")?;
                (v.ends_with(".vmdk") && node.contains(':')).then(|| (node.to_string(), v.clone()))
            })
            .collect()
    }
    fn set_disk(&mut self, node: &str, file: &str) {
        let key = format!("{node}.fileName");
        match self.kv.iter_mut().find(|(k, _)| *k == key) {
            Some(e) => e.1 = file.to_string(),
            None => self.kv.push((key, file.to_string())),
        }
    }
    /// A new delta file name in the VM's directory for a disk.
    fn next_delta(&self, file: &str) -> String {
        let stem = Path::new(file).file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_default();
        let base = match stem.rsplit_once('-') {
            Some((b, n)) if n.len() == 6 && n.chars().all(|c| c.is_ascii_digit()) => b.to_string(),
            _ => stem,
        };
        (1..).map(|i| format!("{base}-{i:06}.vmdk")).find(|n| !self.dir.join(n).exists()).expect("a free name")
    }
    /// Write the .vmsd, then the .vmx (the commit point).
    fn save(&self) -> Result<(), Fault> {
        vdisk::chain::write_atomic(&self.vmsd_path, &self.vmsd.render()).map_err(|e| fault_io(&self.vmsd_path, e))?;
        vdisk::chain::write_atomic(&self.vmx, &render_kv(&self.kv)).map_err(|e| fault_io(&self.vmx, e))
    }
    fn snapshot_ref(&self, uid: u32) -> MoRef {
        MoRef::new(types::VirtualMachineSnapshot, format!("{PREFIX}{}-{uid}", self.moid))
    }
}

/// `snapshot-<vm>-<uid>` → (vm moId, uid).
pub fn parse_ref(moid: &str) -> Option<(&str, u32)> {
    let rest = moid.strip_prefix(PREFIX)?;
    let (vm, uid) = rest.rsplit_once('-')?;
    Some((vm, uid.parse().ok()?))
}

/// Does this snapshot object exist?
pub fn exists(inv: &Inventory, moid: &str) -> bool {
    parse_ref(moid).is_some_and(|(vm, uid)| Vm::load(inv, vm).is_ok_and(|v| v.vmsd.snaps.iter().any(|s| s.uid == uid)))
}

fn tree(vm: &Vm, parent: Option<u32>) -> Vec<Value> {
    vm.vmsd
        .snaps
        .iter()
        .filter(|s| s.parent == parent)
        .map(|s| {
            Data::new(types::VirtualMachineSnapshotTree)
                .with("snapshot", vm.snapshot_ref(s.uid))
                .with("vm", MoRef::new(types::VirtualMachine, vm.moid.clone()))
                .with("name", s.name.clone())
                .with("description", s.description.clone())
                .with("id", s.uid as i32)
                .with("createTime", chrono::DateTime::from_timestamp_micros(s.create_us).unwrap_or_default())
                .with("state", Value::enum_value(types::VirtualMachinePowerState, "poweredOff"))
                .with("quiesced", false)
                .with("childSnapshotList", Value::Array(types::VirtualMachineSnapshotTree, tree(vm, Some(s.uid))))
                .into()
        })
        .collect()
}

/// VirtualMachine.snapshot / rootSnapshot.
pub fn vm_property(inv: &Inventory, moid: &str, name: &str) -> Option<Value> {
    let vm = Vm::load(inv, moid).ok()?;
    if vm.vmsd.snaps.is_empty() {
        return None;
    }
    match name {
        "snapshot" => Some(
            Data::new(types::VirtualMachineSnapshotInfo)
                .with_opt("currentSnapshot", vm.vmsd.current.map(|c| vm.snapshot_ref(c)))
                .with("rootSnapshotList", Value::Array(types::VirtualMachineSnapshotTree, tree(&vm, None)))
                .into(),
        ),
        "rootSnapshot" => {
            Some(super::refs(vm.vmsd.snaps.iter().filter(|s| s.parent.is_none()).map(|s| vm.snapshot_ref(s.uid))))
        }
        _ => None,
    }
}

pub fn property(inv: &Inventory, this: &MoRef, name: &str) -> Option<Value> {
    let (vmid, uid) = parse_ref(&this.value)?;
    let vm = Vm::load(inv, vmid).ok()?;
    match name {
        "vm" => Some(Value::MoRef(MoRef::new(types::VirtualMachine, vmid))),
        "childSnapshot" => {
            Some(super::refs(vm.vmsd.snaps.iter().filter(|s| s.parent == Some(uid)).map(|s| vm.snapshot_ref(s.uid))))
        }
        _ => None,
    }
}

/// The first-class disk (an attached CNS volume) a VM disk file is a layer
/// of: `…/fcd/<id>/<layer>.vmdk` of a catalogued disk.
fn fcd_of(eng: &Engine, file: &Path) -> Option<(String, crate::engine::disks::DiskRef)> {
    let dir = file.parent()?;
    if dir.parent()?.file_name()? != "fcd" {
        return None;
    }
    let id = dir.file_name()?.to_str()?;
    let canon = |p: &Path| std::fs::canonicalize(p).unwrap_or_else(|_| p.to_path_buf());
    eng.disks.find(id).filter(|(_, r)| canon(r.dir()) == canon(dir)).map(|(_, r)| (id.to_string(), r))
}

/// The id a VM snapshot's layer of a first-class disk has in that disk's
/// own snapshot list.
fn fcd_snapshot_id(vmid: &str, uid: u32) -> String {
    format!("{vmid}-snapshot-{uid}")
}

fn create(eng: &Engine, vmid: &str, name: &str, description: &str) -> Result<MoRef, Fault> {
    let mut vm = Vm::load(&eng.inv.read(), vmid)?;
    let uid = vm.vmsd.last_uid + 1;
    let stem = vm.vmx.file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_default();
    let mut frozen = vec![];
    let mut volumes = vec![];
    for (node, file) in vm.disks() {
        // A first-class disk snapshots in its own directory, through the
        // disk engine, so the disk's own metadata and change log follow.
        if let Some((id, r)) = fcd_of(eng, &vm.path(&file)) {
            let mut d = r.lock()?;
            let snap = d.create_snapshot(&fcd_snapshot_id(vmid, uid), description)?;
            frozen.push((node.clone(), d.dir().join(&snap.layer).display().to_string()));
            vm.set_disk(&node, &d.top_path().display().to_string());
            volumes.push(id);
            continue;
        }
        let mut chain = vdisk::Chain::open(&vm.path(&file)).map_err(|e| fault_io(&vm.path(&file), e))?;
        let delta = vm.next_delta(&file);
        chain.snapshot(&vm.dir.join(&delta)).map_err(|e| fault_io(&vm.dir.join(&delta), e))?;
        frozen.push((node.clone(), file.clone()));
        vm.set_disk(&node, &delta);
    }
    let vmsn = format!("{stem}-Snapshot{uid}.vmsn");
    std::fs::write(vm.dir.join(&vmsn), render_kv(&vm.kv)).map_err(|e| fault_io(&vm.dir.join(&vmsn), e))?;
    vm.vmsd.snaps.push(Snap {
        uid,
        name: name.to_string(),
        description: description.to_string(),
        parent: vm.vmsd.current,
        create_us: chrono::Utc::now().timestamp_micros(),
        vmsn,
        disks: frozen,
    });
    vm.vmsd.last_uid = uid;
    vm.vmsd.current = Some(uid);
    vm.save()?;
    for id in volumes {
        crate::engine::storage::cns::disk_changed(eng, &id);
    }
    eng.changed();
    Ok(vm.snapshot_ref(uid))
}

/// Remove the current writable deltas (never a snapshot's frozen file).
fn drop_live(vm: &Vm, old: &[(String, String)]) {
    for (_, file) in old {
        let p = vm.path(file);
        if vm.vmsd.snaps.iter().any(|s| s.disks.iter().any(|(_, f)| vm.path(f) == p)) {
            continue;
        }
        if let Ok(c) = vdisk::Chain::open_readonly(&p) {
            for f in c.files().into_iter().take(2) {
                let _ = std::fs::remove_file(f);
            }
        }
    }
}

fn revert(eng: &Engine, vmid: &str, uid: u32) -> Result<(), Fault> {
    let mut vm = Vm::load(&eng.inv.read(), vmid)?;
    let s = vm
        .vmsd
        .snaps
        .iter()
        .find(|s| s.uid == uid)
        .cloned()
        .ok_or_else(|| Fault::plain_not_found(format!("snapshot {uid} not found")))?;
    let old = vm.disks();
    // A first-class disk's snapshots are a line: reverting drops the later
    // ones, which later VM snapshots would still name. Refuse that first.
    for (_, file) in &s.disks {
        if let Some((id, r)) = fcd_of(eng, &vm.path(file)) {
            let d = r.lock()?;
            let sid = fcd_snapshot_id(vmid, uid);
            let at = d.meta.snapshots.iter().position(|x| x.id == sid);
            if at.is_some_and(|i| i + 1 < d.meta.snapshots.len()) {
                return Err(Fault::not_supported(format!(
                    "volume {id} has snapshots taken after this one; a first-class disk reverts only to its latest snapshot: remove the later snapshots first"
                )));
            }
        }
    }
    let mut volumes = vec![];
    for (node, file) in &s.disks {
        if let Some((id, r)) = fcd_of(eng, &vm.path(file)) {
            let mut d = r.lock()?;
            d.revert(&fcd_snapshot_id(vmid, uid))?;
            vm.set_disk(node, &d.top_path().display().to_string());
            volumes.push(id);
            continue;
        }
        let delta = vm.next_delta(file);
        let mut chain = vdisk::Chain::open(&vm.path(file)).map_err(|e| fault_io(&vm.path(file), e))?;
        chain.snapshot(&vm.dir.join(&delta)).map_err(|e| fault_io(&vm.dir.join(&delta), e))?;
        vm.set_disk(node, &delta);
    }
    vm.vmsd.current = Some(uid);
    vm.save()?;
    let live_fcd: Vec<(String, String)> = old.into_iter().filter(|(_, f)| fcd_of(eng, &vm.path(f)).is_none()).collect();
    drop_live(&vm, &live_fcd);
    for id in volumes {
        crate::engine::storage::cns::disk_changed(eng, &id);
    }
    eng.changed();
    Ok(())
}

/// Remove one snapshot: for each disk, the layer above its frozen file (a
/// child snapshot's frozen file, or the live delta) is merged into it.
fn remove(eng: &Engine, vmid: &str, uid: u32, progress: &mut dyn FnMut(i32)) -> Result<(), Fault> {
    let mut vm = Vm::load(&eng.inv.read(), vmid)?;
    let s = vm
        .vmsd
        .snaps
        .iter()
        .find(|s| s.uid == uid)
        .cloned()
        .ok_or_else(|| Fault::plain_not_found(format!("snapshot {uid} not found")))?;
    let children: Vec<u32> = vm.vmsd.snaps.iter().filter(|c| c.parent == Some(uid)).map(|c| c.uid).collect();
    if children.len() > 1 {
        return Err(Fault::not_supported(
            "removing a snapshot with more than one child is not supported; remove its children first",
        ));
    }
    let live = vm.disks();
    let n = s.disks.len().max(1);
    let mut volumes = vec![];
    for (i, (node, frozen)) in s.disks.iter().enumerate() {
        let mut step = |f: f64| progress(((i as f64 + f) * 100.0 / n as f64) as i32);
        let layer = Layer { node, frozen, path: vm.path(frozen) };
        // A first-class disk consolidates in its own directory.
        if let Some(id) = consolidate_fcd(eng, &mut vm, vmid, uid, &layer, &live, &mut step)? {
            volumes.push(id);
        } else {
            merge_layer(&mut vm, uid, children.first().copied(), &live, &layer, &mut step)?;
        }
    }
    for x in vm.vmsd.snaps.iter_mut().filter(|x| x.parent == Some(uid)) {
        x.parent = s.parent;
    }
    if vm.vmsd.current == Some(uid) {
        vm.vmsd.current = s.parent;
    }
    vm.vmsd.snaps.retain(|x| x.uid != uid);
    let _ = std::fs::remove_file(vm.dir.join(&s.vmsn));
    vm.save()?;
    for id in volumes {
        crate::engine::storage::cns::disk_changed(eng, &id);
    }
    eng.changed();
    Ok(())
}

/// One disk's layer a removed snapshot froze: the disk's node (`scsi0:0`),
/// the file as the .vmsd names it, and its path.
struct Layer<'a> {
    node: &'a str,
    frozen: &'a str,
    path: PathBuf,
}

/// A first-class disk's snapshot goes with the VM's: the disk deletes it
/// (consolidating in its own directory), and the VM's other snapshots and
/// its live file follow the disk's layers. The disk's id; None when the
/// layer is not a first-class disk's.
fn consolidate_fcd(
    eng: &Engine,
    vm: &mut Vm,
    vmid: &str,
    uid: u32,
    layer: &Layer,
    live: &[(String, String)],
    step: &mut dyn FnMut(f64),
) -> Result<Option<String>, Fault> {
    let Some((id, r)) = fcd_of(eng, &layer.path) else { return Ok(None) };
    let mut d = r.lock()?;
    let sid = fcd_snapshot_id(vmid, uid);
    if d.snapshot(&sid).is_some() {
        d.delete_snapshot(&sid, &mut |f| step(f))?;
    }
    let layers: std::collections::HashMap<String, String> =
        d.meta.snapshots.iter().map(|x| (x.id.clone(), d.dir().join(&x.layer).display().to_string())).collect();
    for x in vm.vmsd.snaps.iter_mut().filter(|x| x.uid != uid) {
        if let Some(l) = layers.get(&fcd_snapshot_id(vmid, x.uid)) {
            for dk in x.disks.iter_mut().filter(|(nd, _)| nd == layer.node) {
                dk.1 = l.clone();
            }
        }
    }
    if live.iter().any(|(nd, f)| nd == layer.node && fcd_of(eng, &vm.path(f)).is_some()) {
        vm.set_disk(layer.node, &d.top_path().display().to_string());
    }
    Ok(Some(id))
}

/// A VM disk's frozen layer merges into the layer above it (the child
/// snapshot's, or the live delta), which then goes; whatever stood on that
/// layer stands on the frozen file. A layer nothing stands on directly (a
/// branch a revert left) is not merged, and goes with its snapshot when
/// nothing else uses it.
fn merge_layer(
    vm: &mut Vm,
    uid: u32,
    child_uid: Option<u32>,
    live: &[(String, String)],
    layer: &Layer,
    step: &mut dyn FnMut(f64),
) -> Result<(), Fault> {
    let (node, frozen, fp) = (layer.node, layer.frozen, &layer.path);
    let child_file = child_uid
        .and_then(|c| vm.vmsd.snaps.iter().find(|x| x.uid == c))
        .and_then(|c| c.disks.iter().find(|(nd, _)| nd == node).map(|(_, f)| f.clone()))
        .or_else(|| live.iter().find(|(nd, _)| nd == node).map(|(_, f)| f.clone()));
    let Some(child) = child_file else { return Ok(()) };
    let cp = vm.path(&child);
    let chain = vdisk::Chain::open_readonly(&cp).map_err(|e| fault_io(&cp, e))?;
    let canon = |p: &Path| std::fs::canonicalize(p).unwrap_or_else(|_| p.to_path_buf());
    let descs: Vec<PathBuf> = chain.descriptors().iter().map(|p| canon(p)).collect();
    if descs.get(1) != Some(&canon(fp)) {
        let others =
            vm.vmsd.snaps.iter().filter(|x| x.uid != uid).flat_map(|x| x.disks.clone()).chain(live.iter().cloned());
        let used = others.filter(|(nd, _)| nd == node).any(|(_, f)| {
            let p = vm.path(&f);
            canon(&p) == canon(fp)
                || vdisk::Chain::open_readonly(&p)
                    .is_ok_and(|c| c.descriptors().iter().skip(1).any(|d| canon(d) == canon(fp)))
        });
        if child_uid.is_none() && !used {
            for f in chain_files_of(fp) {
                let _ = std::fs::remove_file(f);
            }
        }
        return Ok(());
    }
    drop(chain);
    vdisk::chain::merge_into_parent(&cp, fp, &mut |f| step(f)).map_err(|e| fault_io(&cp, e))?;
    // Whatever sat on the child now sits on the frozen file.
    let all: Vec<(String, String)> =
        vm.vmsd.snaps.iter().flat_map(|x| x.disks.clone()).chain(live.iter().cloned()).collect();
    for (_, f) in all.iter().filter(|(nd, _)| nd == node) {
        let p = vm.path(f);
        if let Ok(c) = vdisk::Chain::open_readonly(&p) {
            if c.descriptors().get(1).map(|d| canon(d)) == Some(canon(&cp)) {
                let hint = if fp.parent() == p.parent() {
                    fp.file_name().map(|x| x.to_string_lossy().into_owned()).unwrap_or_default()
                } else {
                    frozen.to_string()
                };
                vdisk::chain::repoint(&p, &hint, fp).map_err(|e| fault_io(&p, e))?;
            }
        }
    }
    for x in &mut vm.vmsd.snaps {
        for d in x.disks.iter_mut().filter(|(nd, f)| nd == node && *f == child) {
            d.1 = frozen.to_string();
        }
    }
    if live.iter().any(|(nd, f)| nd == node && *f == child) {
        vm.set_disk(node, frozen);
    }
    for f in chain_files_of(&cp) {
        let _ = std::fs::remove_file(f);
    }
    Ok(())
}

/// The descriptor and extent of one layer (read before it is deleted).
fn chain_files_of(desc: &Path) -> Vec<PathBuf> {
    let text = std::fs::read_to_string(desc).unwrap_or_default();
    let mut v = vec![desc.to_path_buf()];
    if let Ok(d) = vdisk::Descriptor::parse(&text) {
        let dir = desc.parent().unwrap_or(Path::new("."));
        v.extend(d.extents.iter().map(|e| dir.join(&e.file)));
    }
    v
}

fn task(
    eng: &Engine,
    ctx: &Ctx,
    method: &'static str,
    vmodl: &str,
    vm: &str,
    work: impl FnOnce(&Engine, &crate::engine::runner::TaskCtl) -> Result<Option<Value>, Fault> + Send + 'static,
) -> Reply {
    let spec = TaskSpec::on(method, vmodl, MoRef::new(types::VirtualMachine, vm));
    eng.run_task(ctx, spec, Box::new(work))
}

/// VirtualMachine.CreateSnapshot_Task / RemoveAllSnapshots_Task / RevertToCurrentSnapshot_Task.
pub fn vm_invoke(eng: &Engine, ctx: &Ctx, this: &MoRef, method: &str, args: &Args) -> Option<Reply> {
    let vmid = this.value.clone();
    Some(match method {
        "CreateSnapshot_Task" => {
            let name = args.str("name").unwrap_or("").to_string();
            let description = args.str("description").unwrap_or("").to_string();
            if args.get("memory").and_then(Value::as_bool) == Some(true) {
                return Some(Err(Fault::not_supported("memory snapshots need a powered-on virtual machine")));
            }
            task(eng, ctx, "CreateSnapshot_Task", "VirtualMachine.createSnapshot", &vmid.clone(), move |eng, _| {
                create(eng, &vmid, &name, &description).map(|r| Some(Value::MoRef(r)))
            })
        }
        "RevertToCurrentSnapshot_Task" => {
            let current = Vm::load(&eng.inv.read(), &vmid).ok().and_then(|v| v.vmsd.current);
            let Some(uid) = current else {
                return Some(Err(Fault::new(types::NotFound, "the virtual machine has no current snapshot")));
            };
            task(
                eng,
                ctx,
                "RevertToCurrentSnapshot_Task",
                "VirtualMachine.revertToCurrentSnapshot",
                &vmid.clone(),
                move |eng, _| revert(eng, &vmid, uid).map(|_| None),
            )
        }
        "RemoveAllSnapshots_Task" => task(
            eng,
            ctx,
            "RemoveAllSnapshots_Task",
            "VirtualMachine.removeAllSnapshots",
            &vmid.clone(),
            move |eng, ctl| {
                // Newest first keeps every removal a single-child merge.
                loop {
                    let vm = Vm::load(&eng.inv.read(), &vmid)?;
                    let Some(uid) = vm.vmsd.snaps.iter().map(|s| s.uid).max() else { break };
                    remove(eng, &vmid, uid, &mut |p| ctl.progress(p))?;
                }
                Ok(None)
            },
        ),
        _ => return None,
    })
}

pub fn invoke(eng: &Engine, ctx: &mut Ctx, this: &MoRef, method: &str, args: Args) -> Option<Reply> {
    let (vmid, uid) = parse_ref(&this.value)?;
    let vmid = vmid.to_string();
    Some(match method {
        "RevertToSnapshot_Task" => {
            task(eng, ctx, "RevertToSnapshot_Task", "vm.Snapshot.revert", &vmid.clone(), move |eng, _| {
                revert(eng, &vmid, uid).map(|_| None)
            })
        }
        "RemoveSnapshot_Task" => {
            let children = args.get("removeChildren").and_then(Value::as_bool).unwrap_or(false);
            task(eng, ctx, "RemoveSnapshot_Task", "vm.Snapshot.remove", &vmid.clone(), move |eng, ctl| {
                if children {
                    // Descendants first, deepest (newest) first.
                    loop {
                        let vm = Vm::load(&eng.inv.read(), &vmid)?;
                        let mut desc = vec![];
                        let mut frontier = vec![uid];
                        while let Some(u) = frontier.pop() {
                            for c in vm.vmsd.snaps.iter().filter(|s| s.parent == Some(u)) {
                                desc.push(c.uid);
                                frontier.push(c.uid);
                            }
                        }
                        let Some(last) = desc.into_iter().max() else { break };
                        remove(eng, &vmid, last, &mut |p| ctl.progress(p))?;
                    }
                }
                remove(eng, &vmid, uid, &mut |p| ctl.progress(p)).map(|_| None)
            })
        }
        _ => return None,
    })
}
