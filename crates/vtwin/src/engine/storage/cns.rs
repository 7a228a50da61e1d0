//! CNS volumes: a first-class disk with CNS metadata kept beside it (the
//! `cns` entry of its metadata file), an index of them for queries, and
//! what follows when such a disk changes: the index is brought up to date
//! and the VM it is attached to names its new top layer. The first-class
//! disk and VM snapshot code tells this module through `disk_changed`.
use crate::engine::kept::Kept;
use crate::engine::vm::{read_vmx, slot_of, vmx_of, write_vmx};
use crate::engine::{Engine, Fault};
use parking_lot::RwLock;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use vdisk::disk::Disk;
use vmodl::{types, Data, MoRef, Value};

/// A CNS volume's own state, kept in its disk's metadata file (the `cns`
/// entry): a disk with one is a volume. Earlier builds wrote the same
/// fields, with the metadata in VI/JSON (read by [`Kept`]).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CnsState {
    /// BLOCK (FILE volumes are refused).
    #[serde(rename = "type", default = "block")]
    pub volume_type: String,
    /// The CnsVolumeMetadata the container orchestrator keeps.
    #[serde(default, deserialize_with = "crate::engine::kept::readable", skip_serializing_if = "Option::is_none")]
    pub metadata: Option<Kept>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub storage_policy_id: Option<String>,
    /// RFC 3339.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub create_time: Option<String>,
    /// The moId of the VM the volume is attached to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub attached_vm: Option<String>,
    /// SPACE_USAGE as last synced.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub used_capacity_in_mb: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub aggregated_snapshot_capacity_in_mb: Option<i64>,
}

fn block() -> String {
    "BLOCK".into()
}

impl CnsState {
    /// The state a disk's metadata keeps, if the disk is a volume (an entry
    /// that no longer reads is an empty state: the volume stays one).
    pub fn of(meta: &vdisk::disk::Meta) -> Option<CnsState> {
        let j = meta.extra.get("cns")?;
        Some(serde_json::from_value(j.clone()).unwrap_or_else(|e| {
            tracing::warn!("the CNS state of disk {} does not read ({e}); kept as an empty state", meta.id);
            CnsState { volume_type: block(), ..CnsState::default() }
        }))
    }

    /// The metadata, as data.
    pub fn metadata(&self) -> Option<&Data> {
        self.metadata.as_ref().and_then(|m| m.0.as_data())
    }
}

/// Make `d` a volume with `state` (not saved).
pub fn set_state(d: &mut Disk, state: &CnsState) {
    d.meta.extra.insert("cns".into(), serde_json::to_value(state).expect("CNS state serialises"));
}

/// Change the state of the volume `d` (not saved); nothing when `d` is not
/// a volume.
pub fn update_state(d: &mut Disk, f: impl FnOnce(&mut CnsState)) {
    if let Some(mut s) = CnsState::of(&d.meta) {
        f(&mut s);
        set_state(d, &s);
    }
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
    let cns = CnsState::of(meta)?;
    let md = cns.metadata();
    let mut clusters = vec![];
    if let Some(m) = md {
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
        labels: md.map(labels_of).unwrap_or_default(),
        policy: cns.storage_policy_id.clone(),
    })
}

/// The CNS metadata kept with a volume's disk.
pub fn metadata(d: &Disk) -> Option<Data> {
    CnsState::of(&d.meta)?.metadata().cloned()
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
    let vm = CnsState::of(&d.meta)?.attached_vm?;
    let inv = eng.inv.read();
    inv.get(&vm).filter(|e| e.moref.ty == types::VirtualMachine).map(|e| e.moref.clone())
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_state_of_an_earlier_build_reads_and_is_written_typed() {
        // As e4d0207 wrote it (metadata in VI/JSON).
        let earlier = serde_json::json!({
            "type": "BLOCK",
            "metadata": {"_typeName": "CnsVolumeMetadata",
                "containerCluster": {"_typeName": "CnsContainerCluster", "clusterType": "KUBERNETES",
                    "clusterId": "k8s-1", "vSphereUser": "administrator@vsphere.local"},
                "entityMetadata": [{"_typeName": "CnsKubernetesEntityMetadata", "entityName": "pv-data",
                    "labels": [{"_typeName": "KeyValue", "key": "app", "value": "db"}],
                    "entityType": "PERSISTENT_VOLUME"}]},
            "storagePolicyId": null,
            "createTime": "2026-12-03T15:50:06.940529488+00:00",
            "attachedVm": "vm-13",
            "usedCapacityInMb": 3
        });
        let mut meta: vdisk::disk::Meta = serde_json::from_value(serde_json::json!({
            "id": "78e40bd3-2dbb-4e80-9ff4-5056ca84bc04", "name": "pv-data", "capacity": 8388608,
            "provisioning": "thin", "created_ms": 1, "top": "x.vmdk", "snapshots": [], "next_layer": 1,
            "extra": {"cns": earlier}
        }))
        .unwrap();
        let s = CnsState::of(&meta).unwrap();
        assert_eq!(s.attached_vm.as_deref(), Some("vm-13"));
        assert_eq!((s.storage_policy_id.as_deref(), s.used_capacity_in_mb), (None, Some(3)));
        let md = s.metadata().unwrap();
        assert_eq!(labels_of(md), vec![("app".to_string(), "db".to_string())]);
        assert_eq!(rec_of_meta(&meta).unwrap().clusters, vec!["k8s-1".to_string()]);
        // Written back: the metadata in the kept form, the rest as it was.
        meta.extra.insert("cns".into(), serde_json::to_value(&s).unwrap());
        let j = &meta.extra["cns"];
        assert!(vmodl::kept::is_kept(&j["metadata"]), "{j}");
        assert_eq!((j["type"].as_str(), j["attachedVm"].as_str()), (Some("BLOCK"), Some("vm-13")));
        assert!(j.get("storagePolicyId").is_none());
        assert_eq!(CnsState::of(&meta).unwrap(), s);
    }
}
