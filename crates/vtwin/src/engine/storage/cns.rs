//! CNS volumes: a first-class disk with CNS metadata kept beside it (the
//! `cns` entry of its metadata file), an index of them for queries, and
//! what follows when such a disk changes: the index is brought up to date
//! and the VM it is attached to names its new top layer. The first-class
//! disk and VM snapshot code tells this module through `disk_changed`.
use crate::engine::vm::{read_vmx, slot_of, vmx_of, write_vmx};
use crate::engine::{Engine, Fault};
use parking_lot::RwLock;
use std::collections::BTreeMap;
use vdisk::disk::Disk;
use vmodl::{json, types, Data, MoRef, TypeRef, Value};

/// The release CNS metadata is encoded in (VI/JSON), the widest: vSAN 9.1
/// includes vim25 9.1.
pub fn storage_version() -> vmodl::VersionId {
    vmodl::VersionId::by_wire("vsan", "9.1.0.0")
        .or_else(|| vmodl::VersionId::by_wire("vim25", "9.1.0.0"))
        .expect("9.1.0.0 in the registry")
}

/// What queries filter on, per volume.
#[derive(Clone, Debug, Default)]
pub struct Rec {
    pub name: String,
    pub clusters: Vec<String>,
    pub labels: Vec<(String, String)>,
    pub policy: Option<String>,
}

/// The CNS volumes by id (ordered, for stable paging).
#[derive(Default)]
pub struct Volumes {
    map: RwLock<Option<BTreeMap<String, Rec>>>,
}

fn rec_of(d: &Disk) -> Option<Rec> {
    rec_of_meta(&d.meta)
}

impl Volumes {
    /// The index, loaded from every disk's metadata file on first use.
    pub fn loaded(&self, eng: &Engine) -> parking_lot::RwLockReadGuard<'_, Option<BTreeMap<String, Rec>>> {
        {
            let g = self.map.read();
            if g.is_some() {
                return g;
            }
        }
        let mut g = self.map.write();
        if g.is_none() {
            let mut m = BTreeMap::new();
            for (id, _, r) in eng.disks.all() {
                let Ok(text) = std::fs::read(r.dir().join(vdisk::disk::META)) else { continue };
                let Ok(meta) = serde_json::from_slice::<vdisk::disk::Meta>(&text) else { continue };
                if !meta.extra.contains_key("cns") {
                    continue;
                }
                if let Some(rec) = rec_of_meta(&meta) {
                    m.insert(id, rec);
                }
            }
            *g = Some(m);
        }
        parking_lot::RwLockWriteGuard::downgrade(g)
    }

    pub fn put(&self, eng: &Engine, id: &str, d: &Disk) {
        drop(self.loaded(eng));
        if let Some(m) = self.map.write().as_mut() {
            match rec_of(d) {
                Some(r) => m.insert(id.to_string(), r),
                None => m.remove(id),
            };
        }
    }

    pub fn forget(&self, id: &str) {
        if let Some(m) = self.map.write().as_mut() {
            m.remove(id);
        }
    }

    /// How many volumes there are.
    pub fn len(&self, eng: &Engine) -> usize {
        self.loaded(eng).as_ref().map_or(0, BTreeMap::len)
    }
}

fn rec_of_meta(meta: &vdisk::disk::Meta) -> Option<Rec> {
    let cns = meta.extra.get("cns")?;
    let md = decode_metadata(cns.get("metadata")?);
    let mut clusters = vec![];
    if let Some(m) = &md {
        if let Some(c) = m.get("containerCluster").and_then(Value::as_data).and_then(|c| c.str("clusterId")) {
            clusters.push(c.to_string());
        }
        for c in
            m.get("containerClusterArray").and_then(Value::as_array).unwrap_or(&[]).iter().filter_map(Value::as_data)
        {
            if let Some(id) = c.str("clusterId") {
                clusters.push(id.to_string());
            }
        }
    }
    Some(Rec {
        name: meta.name.clone(),
        clusters,
        labels: md.as_ref().map(labels_of).unwrap_or_default(),
        policy: cns.get("storagePolicyId").and_then(|p| p.as_str()).map(str::to_string),
    })
}

pub fn decode_metadata(j: &serde_json::Value) -> Option<Data> {
    match json::decode(j, TypeRef { ty: types::CnsVolumeMetadata, array: false }, "cns").ok()? {
        Some(Value::Data(m)) => Some(*m),
        _ => None,
    }
}

/// The CNS metadata kept with a volume's disk.
pub fn metadata(d: &Disk) -> Option<Data> {
    decode_metadata(d.meta.extra.get("cns")?.get("metadata")?)
}

pub fn set_cns(d: &mut Disk, key: &str, v: serde_json::Value) {
    if let Some(c) = d.meta.extra.get_mut("cns").and_then(|c| c.as_object_mut()) {
        if v.is_null() {
            c.remove(key);
        } else {
            c.insert(key.to_string(), v);
        }
    }
}

pub fn labels_of(m: &Data) -> Vec<(String, String)> {
    m.get("entityMetadata")
        .and_then(Value::as_array)
        .unwrap_or(&[])
        .iter()
        .filter_map(Value::as_data)
        .flat_map(|e| e.get("labels").and_then(Value::as_array).map(<[Value]>::to_vec).unwrap_or_default())
        .filter_map(|kv| {
            kv.as_data().map(|d| (d.str("key").unwrap_or("").to_string(), d.str("value").unwrap_or("").to_string()))
        })
        .collect()
}

pub fn is_volume(d: &Disk) -> bool {
    d.meta.extra.contains_key("cns")
}

/// A disk changed outside this manager (a first-class-disk call renamed,
/// snapshotted, reverted, moved or deleted it): bring the index up to date
/// and point an attached VM at the disk's current top layer.
pub fn disk_changed(eng: &Engine, id: &str) {
    let Some((_, r)) = eng.disks.find(id) else {
        eng.cns.forget(id);
        return;
    };
    let Ok(d) = r.lock() else { return };
    eng.cns.put(eng, id, &d);
    let _ = repoint_vm(eng, &d);
}

/// The VM a volume is attached to, if it still exists.
pub fn attached_vm(eng: &Engine, d: &Disk) -> Option<MoRef> {
    let vm = d.meta.extra.get("cns")?.get("attachedVm")?.as_str()?;
    let inv = eng.inv.read();
    inv.get(vm).filter(|e| e.moref.ty == types::VirtualMachine).map(|e| e.moref.clone())
}

/// After a volume's top layer changed (snapshot, revert, consolidation,
/// move), the VM it is attached to names the new top.
pub fn repoint_vm(eng: &Engine, d: &Disk) -> Result<(), Fault> {
    let Some(vm) = attached_vm(eng, d) else { return Ok(()) };
    let (_, vmx) = vmx_of(eng, Some(&vm))?;
    let mut kv = read_vmx(&vmx)?;
    let Some(slot) = slot_of(&kv, &vmx, d.dir()) else { return Ok(()) };
    let key = format!("{slot}.fileName");
    let top = d.top_path().display().to_string();
    let mut changed = false;
    for (k, v) in &mut kv {
        if k.eq_ignore_ascii_case(&key) && *v != top {
            *v = top.clone();
            changed = true;
        }
    }
    if changed {
        write_vmx(&vmx, &kv)?;
    }
    Ok(())
}
