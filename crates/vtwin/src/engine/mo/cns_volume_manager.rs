//! CnsVolumeManager (moId `cns-volume-manager`, vSAN namespace): Cloud
//! Native Storage volumes are first-class disks. A BLOCK volume's id is its
//! backing disk's id; its CNS state (metadata: container cluster, entity
//! metadata, labels; storage policy; attached VM; last measured used and
//! snapshot space) is kept with the disk (`vtwin-disk.json`, key `cns`), so
//! it persists and moves with it. An in-memory index of that state answers
//! queries without opening a disk (it is loaded from the disks' metadata on
//! first use and follows every change). Calls that change volumes return a
//! task whose result is a batch with one entry per volume, each with its
//! own fault: a partial failure is not a task error.
use crate::engine::disks::{datastore_path, fcd_dir, DiskRef};
use crate::engine::kept::Kept;
use crate::engine::runner::TaskSpec;
use crate::engine::storage::cns::{
    attached_vm, disk_changed, is_volume, metadata, repoint_vm, set_state, update_state, CnsState, Rec,
};
use crate::engine::vm::{dashed_uuid, read_vmx, slot_of, vmx_of, write_vmx};
use crate::engine::{Ctx, Engine, Fault, Reply};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use vdisk::chain::Provisioning;
use vdisk::disk::Disk;
use vmodl::value::Args;
use vmodl::{types, Data, MoRef, Value};

const MB: u64 = 1 << 20;
/// Snapshots a volume may have (vSphere's limit for a first-class disk).
const MAX_SNAPSHOTS: usize = 32;
/// Largest page CnsQueryVolume returns, and the page without a cursor.
const MAX_PAGE: i64 = 1000;

fn volume_id(id: &str) -> Value {
    Data::new(types::CnsVolumeId).with("id", id).into()
}

fn cns_fault(reason: impl Into<String>) -> Fault {
    let reason = reason.into();
    Fault::new(types::CnsFault, reason.clone()).with("reason", reason)
}

fn not_found(id: &str) -> Fault {
    Fault::plain_not_found(format!("volume {id} not found"))
}

fn not_registered(id: &str) -> Fault {
    Fault::new(types::CnsNotRegisteredFault, format!("virtual storage object {id} is not a CNS volume"))
        .with("reason", format!("virtual storage object {id} is not registered as a CNS volume"))
        .with("volumeId", volume_id(id))
}

fn ids(v: Option<&Value>) -> Vec<String> {
    v.and_then(Value::as_array)
        .unwrap_or(&[])
        .iter()
        .filter_map(Value::as_data)
        .filter_map(|d| d.str("id").map(str::to_string))
        .collect()
}

fn id_of(spec: &Data) -> String {
    spec.get("volumeId").and_then(Value::as_data).and_then(|v| v.str("id")).unwrap_or("").to_string()
}

fn strings(v: Option<&Value>) -> Vec<String> {
    v.and_then(Value::as_array)
        .map(|a| a.iter().filter_map(|v| v.as_str().map(str::to_string)).collect())
        .unwrap_or_default()
}

fn result(ty: vmodl::TypeId, id: Option<&str>, fault: Option<Fault>) -> Data {
    let mut d = Data::new(ty);
    if let Some(i) = id {
        d.set("volumeId", volume_id(i));
    }
    if let Some(f) = fault {
        d.set("fault", f.data);
    }
    d
}

fn batch(results: Vec<Data>) -> Value {
    let v = results.into_iter().map(Value::from).collect();
    Data::new(types::CnsVolumeOperationBatchResult)
        .with("volumeResults", Value::Array(types::CnsVolumeOperationResult, v))
        .into()
}

/// Whether the datastore is mounted (its volumes are reachable).
fn accessible(eng: &Engine, ds: &str) -> bool {
    let inv = eng.inv.read();
    inv.get(ds).is_some_and(|e| {
        e.attrs.get("mounted").and_then(serde_json::Value::as_bool).unwrap_or(true)
            && e.attr("path").is_some_and(|p| Path::new(p).is_dir())
    })
}

/// The space of the disk's frozen (snapshot) layers, in MB.
fn snapshot_mb(d: &Disk) -> i64 {
    let bytes: u64 = d.meta.snapshots.iter().map(|s| layer_allocated(&d.dir().join(&s.layer))).sum();
    bytes.div_ceil(MB) as i64
}

/// Bytes a layer holds (its extent files' allocated blocks).
fn layer_allocated(desc: &Path) -> u64 {
    use std::os::unix::fs::MetadataExt;
    let Ok(c) = vdisk::Chain::open_readonly(desc) else { return 0 };
    c.files().iter().skip(1).take(1).filter_map(|f| std::fs::metadata(f).ok()).map(|m| m.blocks() * 512).sum()
}

/// The CnsVolume of a disk (from its metadata: the disk need not be
/// open); `select`: the selected fields (None: all).
fn volume(eng: &Engine, ds: &str, dir: &Path, meta: &vdisk::disk::Meta, select: Option<&[String]>) -> Data {
    let want = |name: &str| select.is_none_or(|s| s.iter().any(|x| x == name));
    let (url, ds_name, root) = {
        let inv = eng.inv.read();
        let e = inv.get(ds);
        (
            e.and_then(|e| e.attr("url").map(str::to_string)).unwrap_or_default(),
            e.map(|e| e.name.clone()).unwrap_or_default(),
            e.and_then(|e| e.attr("path").map(PathBuf::from)).unwrap_or_default(),
        )
    };
    let ok = accessible(eng, ds);
    let cns = CnsState::of(meta).unwrap_or_default();
    let mut v = Data::new(types::CnsVolume).with("volumeId", volume_id(&meta.id));
    if want("DATASTORE_URL") {
        v.set("datastoreUrl", url);
    }
    if want("VOLUME_NAME") {
        v.set("name", meta.name.clone());
    }
    if want("VOLUME_TYPE") {
        v.set("volumeType", "BLOCK");
    }
    if want("POLICY_ID") {
        if let Some(p) = &cns.storage_policy_id {
            v.set("storagePolicyId", p.clone());
        }
    }
    if select.is_none() {
        if let Some(m) = cns.metadata() {
            v.set("metadata", m.clone());
        }
    }
    if want("BACKING_OBJECT_DETAILS") {
        let top = dir.join(&meta.top);
        let path = match top.strip_prefix(&root) {
            Ok(rel) => format!("[{ds_name}] {}", rel.display()),
            Err(_) => top.display().to_string(),
        };
        let backing = Data::new(types::CnsBlockBackingDetails)
            .with("capacityInMb", (meta.capacity / MB) as i64)
            .with("backingDiskId", meta.id.clone())
            .with("backingDiskPath", path)
            .with_opt("usedCapacityInMb", cns.used_capacity_in_mb)
            .with_opt("aggregatedSnapshotCapacityInMb", cns.aggregated_snapshot_capacity_in_mb);
        v.set("backingObjectDetails", backing);
    }
    if want("COMPLIANCE_STATUS") {
        v.set("complianceStatus", "compliant");
    }
    if want("DATASTORE_ACCESSIBILITY_STATUS") {
        v.set("datastoreAccessibilityStatus", if ok { "accessible" } else { "notAccessible" });
    }
    if want("HEALTH_STATUS") {
        v.set("healthStatus", if ok { "green" } else { "red" });
    }
    v
}

/// A task on the volume manager, queued behind other work on `key` (a
/// volume's disk, so CNS and first-class-disk calls on it take turns).
fn cns_task(
    eng: &Engine,
    ctx: &Ctx,
    method: &'static str,
    vmodl: &str,
    key: String,
    work: impl FnOnce(&Engine) -> Value + Send + 'static,
) -> Reply {
    let root = eng.inv.read().root();
    let spec = TaskSpec { queue: Some(key), ..TaskSpec::on(method, format!("CnsVolumeManager.{vmodl}"), root) };
    eng.run_task(ctx, spec, Box::new(move |eng, _| Ok(Some(work(eng)))))
}

fn queue_key(id: &str) -> String {
    format!("fcd:{id}")
}

/// A volume's disk, or NotFound.
fn find(eng: &Engine, id: &str) -> Result<(String, DiskRef), Fault> {
    if id.is_empty() {
        return Err(Fault::invalid_argument("volumeId", "the volume id is empty"));
    }
    eng.disks.find(id).ok_or_else(|| not_found(id))
}

/// Run `f` on the volume `id` (locked), then refresh the index.
fn with_volume<T>(eng: &Engine, id: &str, f: impl FnOnce(&str, &mut Disk) -> Result<T, Fault>) -> Result<T, Fault> {
    let (ds, r) = find(eng, id)?;
    let mut d = r.lock()?;
    if !is_volume(&d) {
        return Err(not_registered(id));
    }
    let out = f(&ds, &mut d);
    eng.cns.put(eng, id, &d);
    out
}

// ---- create ------------------------------------------------------------

fn create_one(eng: &Engine, spec: &Data) -> Result<String, Fault> {
    let name = spec.str("name").unwrap_or("").to_string();
    if name.is_empty() {
        return Err(Fault::invalid_argument("createSpecs.name", "a volume needs a name"));
    }
    match spec.str("volumeType").unwrap_or("") {
        "BLOCK" => {}
        "FILE" => {
            return Err(Fault::not_supported("FILE volumes (vSAN file shares) are not supported; create BLOCK volumes"))
        }
        other => {
            return Err(Fault::invalid_argument(
                "createSpecs.volumeType",
                format!("volume type '{other}' is not BLOCK or FILE"),
            ))
        }
    }
    let backing = spec.get("backingObjectDetails").and_then(Value::as_data);
    let policy = spec
        .get("profile")
        .and_then(Value::as_array)
        .and_then(|a| a.iter().filter_map(Value::as_data).find_map(|p| p.str("profileId").map(str::to_string)));
    let state = CnsState {
        volume_type: "BLOCK".into(),
        metadata: spec.get("metadata").cloned().map(Kept),
        storage_policy_id: policy,
        create_time: Some(chrono::Utc::now().to_rfc3339()),
        ..CnsState::default()
    };
    // Static provisioning: an existing first-class disk becomes a volume.
    if let Some(existing) = backing.and_then(|b| b.str("backingDiskId")).filter(|s| !s.is_empty()) {
        return adopt(eng, existing, name, &state);
    }
    let mb = backing.and_then(|b| b.get("capacityInMb")).and_then(Value::as_i64).unwrap_or(0);
    if mb <= 0 {
        return Err(Fault::invalid_argument(
            "createSpecs.backingObjectDetails.capacityInMb",
            format!("capacity {mb} MB is not positive"),
        ));
    }
    let ds = placement(eng, spec)?;
    let root = datastore_path(&eng.inv.read(), &ds)
        .ok_or_else(|| Fault::new(types::InvalidDatastore, format!("{ds} is not a datastore")))?;
    let chosen = match spec.get("volumeId").and_then(Value::as_data).and_then(|v| v.str("id")) {
        Some(i) => Some(crate::engine::paths::disk_id(i, "createSpecs.volumeId")?),
        None => None,
    };
    if let Some(existing) = chosen.as_deref() {
        if eng.disks.exists(existing) {
            return Err(Fault::new(types::CnsVolumeAlreadyExistsFault, format!("volume {existing} already exists"))
                .with("reason", "volume already exists")
                .with("volumeId", volume_id(existing)));
        }
    }
    let id = chosen.unwrap_or_else(|| uuid::Uuid::new_v4().to_string());
    let dir = crate::engine::paths::contained(&fcd_dir(&root), &id, "createSpecs.volumeId")?;
    let mut extra = serde_json::Map::new();
    extra.insert("cns".into(), serde_json::to_value(&state).expect("CNS state serialises"));
    let d = Disk::create_with(&dir, &id, &name, mb as u64 * MB, Provisioning::Thin, true, extra)?;
    eng.cns.put(eng, &id, &d);
    eng.disks.insert(&ds, d);
    Ok(id)
}

/// Static provisioning: the first-class disk `existing` becomes the volume
/// `name`, unless it is one already.
fn adopt(eng: &Engine, existing: &str, name: String, state: &CnsState) -> Result<String, Fault> {
    let (_, r) = eng
        .disks
        .find(existing)
        .ok_or_else(|| Fault::plain_not_found(format!("virtual storage object {existing} not found")))?;
    let mut d = r.lock()?;
    if is_volume(&d) {
        return Err(Fault::new(
            types::CnsAlreadyRegisteredFault,
            format!("virtual storage object {existing} is already a CNS volume"),
        )
        .with("reason", "the disk is already registered as a CNS volume")
        .with("volumeId", volume_id(existing)));
    }
    d.meta.name = name;
    set_state(&mut d, state);
    d.save_meta()?;
    eng.cns.put(eng, existing, &d);
    Ok(existing.to_string())
}

/// Where a new volume goes: the first accessible datastore the spec names,
/// or, when it names none, the first accessible one by moId.
fn placement(eng: &Engine, spec: &Data) -> Result<String, Fault> {
    let asked: Vec<String> = spec
        .get("datastores")
        .and_then(Value::as_array)
        .map(|a| a.iter().filter_map(Value::as_moref).map(|m| m.value.clone()).collect())
        .unwrap_or_default();
    let given = spec.get("datastores").and_then(Value::as_array).is_some_and(|a| !a.is_empty());
    let candidates = if given {
        asked
    } else {
        let mut all: Vec<String> = eng.datastores().into_iter().map(|(d, _, _)| d.value).collect();
        all.sort();
        all
    };
    candidates.into_iter().find(|d| accessible(eng, d)).ok_or_else(|| {
        Fault::new(types::CnsPlacementFault, "none of the given datastores is accessible")
            .with("reason", "no accessible datastore to place the volume on")
    })
}

// ---- metadata ----------------------------------------------------------

/// Merge an update into a volume's metadata: the container cluster is
/// replaced; an entity (by name and type) is replaced, added, or removed
/// when marked `delete`.
fn update_metadata(d: &mut Disk, update: Option<&Data>) -> Result<(), Fault> {
    let update = update.ok_or_else(|| Fault::invalid_argument("updateSpecs.metadata", "metadata is required"))?;
    let mut md = metadata(d).unwrap_or_else(|| Data::new(types::CnsVolumeMetadata));
    if let Some(c) = update.get("containerCluster") {
        md.set("containerCluster", c.clone());
    }
    if let Some(c) = update.get("containerClusterArray") {
        md.set("containerClusterArray", c.clone());
    }
    let key = |e: &Data| (e.str("entityName").unwrap_or("").to_string(), e.str("entityType").unwrap_or("").to_string());
    let mut entities: Vec<Value> =
        md.get("entityMetadata").and_then(Value::as_array).map(<[Value]>::to_vec).unwrap_or_default();
    for e in update.get("entityMetadata").and_then(Value::as_array).unwrap_or(&[]).iter().filter_map(Value::as_data) {
        entities.retain(|x| x.as_data().map(key) != Some(key(e)));
        if e.get("delete").and_then(Value::as_bool) != Some(true) {
            entities.push(Value::Data(Box::new(e.clone())));
        }
    }
    md.set("entityMetadata", Value::Array(types::CnsEntityMetadata, entities));
    update_state(d, |s| s.metadata = Some(Kept(md.into())));
    d.save_meta().map_err(Fault::from)
}

// ---- space -------------------------------------------------------------

/// `SPACE_USAGE`: the allocated blocks of the backing disk, in MB; the
/// snapshot layers' space is measured again too.
fn sync_space(d: &mut Disk) -> Result<(), Fault> {
    let used: u64 = d.allocated()?.iter().map(|r| r.1).sum();
    let snap = (!d.meta.snapshots.is_empty()).then(|| snapshot_mb(d));
    update_state(d, |s| {
        s.used_capacity_in_mb = Some(used.div_ceil(MB) as i64);
        s.aggregated_snapshot_capacity_in_mb = snap;
    });
    d.save_meta().map_err(Fault::from)
}

// ---- attach / detach -----------------------------------------------------

fn attach_one(eng: &Engine, spec: &Data) -> Result<String, Fault> {
    let id = id_of(spec);
    let (vm, vmx) = vmx_of(eng, spec.get("vm").and_then(Value::as_moref))?;
    with_volume(eng, &id, |_, d| {
        if let Some(other) = attached_vm(eng, d) {
            if other != vm {
                return Err(Fault::new(types::ResourceInUse, format!("volume {id} is attached to {}", other.value))
                    .with("type", "VirtualMachine")
                    .with("name", other.value.clone()));
            }
            // Attached here already: the same answer again.
            return Ok(dashed_uuid(&d.ddb_uuid()));
        }
        let mut kv = read_vmx(&vmx)?;
        let get = |kv: &[(String, String)], k: &str| {
            kv.iter().rev().find(|(key, _)| key.eq_ignore_ascii_case(k)).map(|(_, v)| v.clone())
        };
        let present = |kv: &[(String, String)], bus: i64| {
            get(kv, &format!("scsi{bus}.present")).is_some_and(|v| v.eq_ignore_ascii_case("true"))
        };
        let bus = match spec.get("controllerKey").and_then(Value::as_i64) {
            Some(k) if (1000..1004).contains(&k) && present(&kv, k - 1000) => k - 1000,
            Some(k) => {
                return Err(Fault::invalid_argument(
                    "attachSpecs.controllerKey",
                    format!("VM {} has no SCSI controller with key {k}", vm.value),
                ))
            }
            None => (0..4).find(|b| present(&kv, *b)).ok_or_else(|| {
                Fault::new(
                    types::CnsMissingControllerFault,
                    format!("VM {} has no SCSI controller to attach the volume to", vm.value),
                )
                .with("reason", "no SCSI controller")
            })?,
        };
        let used = |kv: &[(String, String)], u: i64| {
            get(kv, &format!("scsi{bus}:{u}.present")).is_some_and(|v| v.eq_ignore_ascii_case("true"))
        };
        let unit = match spec.get("unitNumber").and_then(Value::as_i64) {
            Some(u) if !(0..16).contains(&u) || u == 7 => {
                return Err(Fault::invalid_argument(
                    "attachSpecs.unitNumber",
                    format!("unit {u} is not a disk slot (0-15 but 7)"),
                ))
            }
            Some(u) if used(&kv, u) => {
                return Err(Fault::invalid_argument(
                    "attachSpecs.unitNumber",
                    format!("unit {u} of SCSI controller {bus} is taken"),
                ))
            }
            Some(u) => u,
            None => (0..16)
                .filter(|u| *u != 7)
                .find(|u| !used(&kv, *u))
                .ok_or_else(|| cns_fault(format!("SCSI controller {bus} of VM {} is full", vm.value)))?,
        };
        let slot = format!("scsi{bus}:{unit}");
        kv.retain(|(k, _)| !k.to_ascii_lowercase().starts_with(&format!("{slot}.")));
        kv.push((format!("{slot}.present"), "TRUE".into()));
        kv.push((format!("{slot}.fileName"), d.top_path().display().to_string()));
        kv.push((format!("{slot}.deviceType"), "scsi-hardDisk".into()));
        if let Some(mode) = spec.str("diskMode").filter(|m| !m.is_empty()) {
            kv.push((format!("{slot}.mode"), mode.replace("independent_", "independent-")));
        }
        write_vmx(&vmx, &kv)?;
        update_state(d, |s| s.attached_vm = Some(vm.value.clone()));
        d.save_meta()?;
        Ok(dashed_uuid(&d.ddb_uuid()))
    })
}

fn detach_one(eng: &Engine, spec: &Data) -> Result<(), Fault> {
    let id = id_of(spec);
    let (vm, vmx) = vmx_of(eng, spec.get("vm").and_then(Value::as_moref))?;
    with_volume(eng, &id, |_, d| {
        let mut kv = read_vmx(&vmx)?;
        let slot = slot_of(&kv, &vmx, d.dir());
        match (slot, attached_vm(eng, d)) {
            (Some(slot), _) => {
                let prefix = format!("{}.", slot.to_ascii_lowercase());
                kv.retain(|(k, _)| !k.to_ascii_lowercase().starts_with(&prefix));
                write_vmx(&vmx, &kv)?;
            }
            (None, Some(other)) if other != vm => {
                return Err(cns_fault(format!("volume {id} is attached to {}, not to {}", other.value, vm.value)))
            }
            (None, _) => {}
        }
        update_state(d, |s| s.attached_vm = None);
        d.save_meta().map_err(Fault::from)
    })
}

// ---- snapshots -----------------------------------------------------------

fn snapshot_one(eng: &Engine, spec: &Data) -> Result<(), Fault> {
    let id = id_of(spec);
    with_volume(eng, &id, |_, d| {
        if d.meta.snapshots.len() >= MAX_SNAPSHOTS {
            return Err(cns_fault(format!("volume {id} already has {MAX_SNAPSHOTS} snapshots")));
        }
        let sid = spec
            .get("snapshotId")
            .and_then(Value::as_data)
            .and_then(|s| s.str("id"))
            .map_or_else(|| uuid::Uuid::new_v4().to_string(), str::to_string);
        if sid.is_empty() || sid.contains('/') {
            return Err(Fault::invalid_argument("snapshotSpecs.snapshotId", format!("'{sid}' is not a snapshot id")));
        }
        if d.snapshot(&sid).is_some() {
            return Err(Fault::already_exists(&sid));
        }
        d.create_snapshot(&sid, spec.str("description").unwrap_or(""))?;
        let snap = snapshot_mb(d);
        update_state(d, |s| s.aggregated_snapshot_capacity_in_mb = Some(snap));
        d.save_meta()?;
        repoint_vm(eng, d)
    })
}

fn delete_snapshot_one(eng: &Engine, spec: &Data) -> Result<(), Fault> {
    let id = id_of(spec);
    let sid = spec.get("snapshotId").and_then(Value::as_data).and_then(|s| s.str("id")).unwrap_or("").to_string();
    with_volume(eng, &id, |_, d| {
        if d.snapshot(&sid).is_none() {
            return Err(Fault::new(
                types::CnsSnapshotNotFoundFault,
                format!("snapshot {sid} of volume {id} not found"),
            )
            .with("reason", "snapshot not found")
            .with("volumeId", volume_id(&id))
            .with("SnapshotId", Data::new(types::CnsSnapshotId).with("id", sid.clone())));
        }
        d.delete_snapshot(&sid, &mut |_| {})?;
        let snap = (!d.meta.snapshots.is_empty()).then(|| snapshot_mb(d));
        update_state(d, |s| s.aggregated_snapshot_capacity_in_mb = snap);
        d.save_meta()?;
        repoint_vm(eng, d)
    })
}

// ---- the methods ---------------------------------------------------------

fn specs(args: &Args, name: &str) -> Vec<Data> {
    args.get(name).and_then(Value::as_array).unwrap_or(&[]).iter().filter_map(Value::as_data).cloned().collect()
}

/// Check the specs name volumes; the first id's queue key. The volume
/// manager takes one volume per call (`one`): zero or several specs are an
/// InvalidArgument, as vCenter's are.
fn check_ids(specs: &[Data], field: &str, one: bool) -> Result<String, Fault> {
    if specs.is_empty() || (one && specs.len() != 1) {
        return Err(Fault::invalid_argument(field, format!("{field} takes exactly one entry, not {}", specs.len())));
    }
    for s in specs {
        if id_of(s).is_empty() {
            return Err(Fault::invalid_argument(&format!("{field}.volumeId"), "a volume id is empty"));
        }
    }
    Ok(queue_key(&id_of(&specs[0])))
}

/// A task running `each` over `specs`, one plain result per volume.
fn per_volume(
    eng: &Engine,
    ctx: &Ctx,
    method: &'static str,
    vmodl: &str,
    field: &str,
    specs: Vec<Data>,
    each: fn(&Engine, &Data) -> Result<(), Fault>,
) -> Reply {
    let key = check_ids(&specs, field, true)?;
    cns_task(eng, ctx, method, vmodl, key, move |eng| {
        let results = specs
            .iter()
            .map(|s| result(types::CnsVolumeOperationResult, Some(&id_of(s)), each(eng, s).err()))
            .collect();
        eng.changed();
        batch(results)
    })
}

pub fn invoke(eng: &Engine, ctx: &mut Ctx, _this: &MoRef, method: &str, args: Args) -> Option<Reply> {
    let a = &args;
    let flag = |name: &str| a.get(name).and_then(Value::as_bool).unwrap_or(false);
    Some(match method {
        "CnsCreateVolume" => create(eng, ctx, specs(a, "createSpecs")),
        "CnsDeleteVolume" => delete(eng, ctx, ids(a.get("volumeIds")), flag("deleteDisk")),
        "CnsExtendVolume" => {
            per_volume(eng, ctx, "CnsExtendVolume", "extend", "extendSpecs", specs(a, "extendSpecs"), extend_one)
        }
        "CnsSyncVolume" => sync(eng, ctx, specs(a, "syncSpecs")),
        "CnsUpdateVolumeMetadata" => per_volume(
            eng,
            ctx,
            "CnsUpdateVolumeMetadata",
            "updateVolumeMetadata",
            "updateSpecs",
            specs(a, "updateSpecs"),
            |eng, s| with_volume(eng, &id_of(s), |_, d| update_metadata(d, s.get("metadata").and_then(Value::as_data))),
        ),
        "CnsAttachVolume" => attach(eng, ctx, specs(a, "attachSpecs")),
        "CnsDetachVolume" => {
            per_volume(eng, ctx, "CnsDetachVolume", "detach", "detachSpecs", specs(a, "detachSpecs"), detach_one)
        }
        "CnsCreateSnapshots" => per_volume(
            eng,
            ctx,
            "CnsCreateSnapshots",
            "createSnapshots",
            "snapshotSpecs",
            specs(a, "snapshotSpecs"),
            snapshot_one,
        ),
        "CnsDeleteSnapshots" => per_volume(
            eng,
            ctx,
            "CnsDeleteSnapshots",
            "deleteSnapshots",
            "snapshotDeleteSpecs",
            specs(a, "snapshotDeleteSpecs"),
            delete_snapshot_one,
        ),
        "CnsRelocateVolume" => relocate_checked(eng, ctx, specs(a, "relocateSpecs")),
        "CnsReconfigVolumePolicy" => per_volume(
            eng,
            ctx,
            "CnsReconfigVolumePolicy",
            "reconfigPolicy",
            "volumePolicyReconfigSpecs",
            specs(a, "volumePolicyReconfigSpecs"),
            reconfig_policy_one,
        ),
        "CnsQueryVolumeInfo" => query_volume_info(eng, ctx, ids(a.get("volumes"))),
        "CnsQueryAsync" => selection(a).and_then(|sel| query_async(eng, ctx, filter(a), sel)),
        // CnsQueryAllVolume answers every match at once.
        "CnsQueryVolume" => selection(a).and_then(|sel| Ok(Some(query(eng, &filter(a), sel.as_deref(), true)?.into()))),
        "CnsQueryAllVolume" => {
            selection(a).and_then(|sel| Ok(Some(query(eng, &filter(a), sel.as_deref(), false)?.into())))
        }
        _ => return None,
    })
}

/// A query's filter (none: every volume).
fn filter(args: &Args) -> Data {
    args.get("filter").and_then(Value::as_data).cloned().unwrap_or_else(|| Data::new(types::CnsQueryFilter))
}

/// The one spec a call that takes exactly one has.
fn only_one(mut specs: Vec<Data>, param: &str, what: &str) -> Result<Data, Fault> {
    if specs.len() != 1 {
        return Err(Fault::invalid_argument(
            param,
            format!("exactly one {what} spec is accepted, not {}", specs.len()),
        ));
    }
    Ok(specs.pop().expect("one spec"))
}

/// The results of a volume list given by id (`volumeIds`, `volumes`).
fn id_results(vols: &[String]) -> Vec<Data> {
    vols.iter().map(|i| Data::new(types::CnsVolumeOperationResult).with("volumeId", volume_id(i))).collect()
}

fn create(eng: &Engine, ctx: &Ctx, specs: Vec<Data>) -> Reply {
    let spec = only_one(specs, "createSpecs", "create")?;
    let key = format!("cns-create:{}", spec.str("name").unwrap_or(""));
    cns_task(eng, ctx, "CnsCreateVolume", "create", key, move |eng| {
        let name = spec.str("name").unwrap_or("").to_string();
        let r = match create_one(eng, &spec) {
            Ok(id) => result(types::CnsVolumeCreateResult, Some(&id), None),
            Err(f) => result(types::CnsVolumeCreateResult, None, Some(f)),
        };
        eng.changed();
        batch(vec![r.with("name", name)])
    })
}

fn delete(eng: &Engine, ctx: &Ctx, vols: Vec<String>, delete_disk: bool) -> Reply {
    let key = check_ids(&id_results(&vols), "volumeIds", true)?;
    cns_task(eng, ctx, "CnsDeleteVolume", "delete", key, move |eng| {
        let results = vols
            .iter()
            .map(|id| result(types::CnsVolumeOperationResult, Some(id), delete_one(eng, id, delete_disk).err()))
            .collect();
        eng.changed();
        batch(results)
    })
}

fn extend_one(eng: &Engine, s: &Data) -> Result<(), Fault> {
    let id = id_of(s);
    let mb = s.get("capacityInMb").and_then(Value::as_i64).unwrap_or(0);
    with_volume(eng, &id, |_, d| {
        if mb <= 0 || (mb as u64) * MB < d.capacity() {
            return Err(Fault::invalid_argument(
                "extendSpecs.capacityInMb",
                format!("{mb} MB is smaller than the volume's {} MB", d.capacity() / MB),
            ));
        }
        if !d.meta.snapshots.is_empty() {
            return Err(cns_fault(format!("volume {id} has snapshots; a volume with snapshots cannot be extended")));
        }
        d.extend(mb as u64 * MB).map_err(Fault::from)
    })
}

fn sync(eng: &Engine, ctx: &Ctx, specs: Vec<Data>) -> Reply {
    let spec = only_one(specs, "syncSpecs", "sync")?;
    let id = id_of(&spec);
    if id.is_empty() || id.chars().any(|c| c.is_control() || c == '/') {
        return Err(Fault::invalid_argument("syncSpecs.volumeId", format!("'{id}' is not a volume id")));
    }
    let modes = strings(spec.get("syncMode"));
    if let Some(m) = modes.iter().find(|m| *m != "SPACE_USAGE") {
        return Err(Fault::invalid_argument("syncSpecs.syncMode", format!("sync mode '{m}' is not SPACE_USAGE")));
    }
    let (ds, _) = eng.disks.find(&id).ok_or_else(|| not_found(&id))?;
    if let Some(want) = spec.get("datastore").and_then(Value::as_moref) {
        if want.value != ds {
            return Err(not_found(&format!("{id} on datastore {}", want.value)));
        }
    }
    if !eng.cns.loaded(eng).as_ref().is_some_and(|m| m.contains_key(&id)) {
        return Err(not_found(&id));
    }
    cns_task(eng, ctx, "CnsSyncVolume", "syncVolume", queue_key(&id), move |eng| {
        // No mode: a full sync, which includes the space usage.
        let r = with_volume(eng, &id, |_, d| sync_space(d));
        batch(vec![result(types::CnsVolumeOperationResult, Some(&id), r.err())])
    })
}

fn attach(eng: &Engine, ctx: &Ctx, specs: Vec<Data>) -> Reply {
    let key = check_ids(&specs, "attachSpecs", true)?;
    cns_task(eng, ctx, "CnsAttachVolume", "attach", key, move |eng| {
        let results = specs
            .iter()
            .map(|s| match attach_one(eng, s) {
                Ok(uuid) => result(types::CnsVolumeAttachResult, Some(&id_of(s)), None).with("diskUUID", uuid),
                Err(f) => result(types::CnsVolumeAttachResult, Some(&id_of(s)), Some(f)),
            })
            .collect();
        eng.changed();
        batch(results)
    })
}

/// CnsRelocateVolume: AlreadyExists when the volume is on the target.
fn relocate_checked(eng: &Engine, ctx: &Ctx, specs: Vec<Data>) -> Reply {
    check_ids(&specs, "relocateSpecs", true)?;
    let id = id_of(&specs[0]);
    let target = specs[0].get("datastore").and_then(Value::as_moref).map(|m| m.value.clone()).unwrap_or_default();
    if eng.disks.datastore_of(&id).is_some_and(|ds| ds == target) {
        return Err(
            Fault::new(types::AlreadyExists, format!("volume {id} is on datastore {target} already")).with("name", id)
        );
    }
    relocate(eng, ctx, specs)
}

fn reconfig_policy_one(eng: &Engine, s: &Data) -> Result<(), Fault> {
    let profile = s
        .get("profile")
        .and_then(Value::as_array)
        .and_then(|a| a.iter().filter_map(Value::as_data).find_map(|p| p.str("profileId").map(str::to_string)));
    let profile = profile.ok_or_else(|| {
        Fault::invalid_argument("volumePolicyReconfigSpecs.profile", "a profile with a profileId is required")
    })?;
    with_volume(eng, &id_of(s), |_, d| {
        update_state(d, |s| s.storage_policy_id = Some(profile));
        d.save_meta().map_err(Fault::from)
    })
}

fn query_volume_info(eng: &Engine, ctx: &Ctx, vols: Vec<String>) -> Reply {
    let key = check_ids(&id_results(&vols), "volumes", false)?;
    cns_task(eng, ctx, "CnsQueryVolumeInfo", "queryVolumeInfo", key, move |eng| {
        let results = vols
            .iter()
            .map(|id| {
                match with_volume(eng, id, |ds, d| Ok(super::vstorage_object_manager::vstorage_object(eng, ds, d))) {
                    Ok(obj) => result(types::CnsQueryVolumeInfoResult, Some(id), None)
                        .with("volumeInfo", Data::new(types::CnsBlockVolumeInfo).with("vStorageObject", obj)),
                    Err(f) => result(types::CnsQueryVolumeInfoResult, Some(id), Some(f)),
                }
            })
            .collect();
        batch(results)
    })
}

fn query_async(eng: &Engine, ctx: &Ctx, filter: Data, select: Option<Vec<String>>) -> Reply {
    let root = eng.inv.read().root();
    let spec = TaskSpec::on("CnsQueryAsync", "CnsVolumeManager.queryAsync", root);
    eng.run_task(
        ctx,
        spec,
        Box::new(move |eng, _| {
            let r = query(eng, &filter, select.as_deref(), true)?;
            let entry = Data::new(types::CnsAsyncQueryResult).with("queryResult", r);
            Ok(Some(batch(vec![entry])))
        }),
    )
}

fn relocate(eng: &Engine, ctx: &Ctx, specs: Vec<Data>) -> Reply {
    per_volume(eng, ctx, "CnsRelocateVolume", "relocate", "relocateSpecs", specs, |eng, s| {
        let id = id_of(s);
        let target = s
            .get("datastore")
            .and_then(Value::as_moref)
            .ok_or_else(|| Fault::invalid_argument("relocateSpecs.datastore", "datastore is required"))?;
        let target = eng.resolve(target)?;
        if !accessible(eng, &target.value) {
            return Err(Fault::new(types::InvalidDatastore, format!("datastore {} is not accessible", target.value))
                .with("datastore", target.clone()));
        }
        let (ds, r) = find(eng, &id)?;
        if !is_volume(&*r.lock()?) {
            return Err(not_registered(&id));
        }
        super::vstorage_object_manager::move_disk(eng, &r, &id, &ds, &target.value, &mut |_| {})?;
        if let Some(p) = s
            .get("profile")
            .and_then(Value::as_array)
            .and_then(|a| a.iter().filter_map(Value::as_data).find_map(|p| p.str("profileId").map(str::to_string)))
        {
            with_volume(eng, &id, |_, d| {
                update_state(d, |s| s.storage_policy_id = Some(p));
                d.save_meta().map_err(Fault::from)
            })?;
        }
        disk_changed(eng, &id);
        Ok(())
    })
}

/// The fields a CnsQuerySelection names (None: every field).
fn selection(args: &Args) -> Result<Option<Vec<String>>, Fault> {
    const NAMES: &[&str] = &[
        "VOLUME_NAME",
        "VOLUME_TYPE",
        "BACKING_OBJECT_DETAILS",
        "COMPLIANCE_STATUS",
        "DATASTORE_ACCESSIBILITY_STATUS",
        "HEALTH_STATUS",
        "DATASTORE_URL",
        "POLICY_ID",
    ];
    let select =
        args.get("selection").and_then(Value::as_data).map(|s| strings(s.get("names"))).filter(|s| !s.is_empty());
    if let Some(bad) = select.iter().flatten().find(|n| !NAMES.contains(&n.as_str())) {
        return Err(Fault::invalid_argument(
            "selection.names",
            format!("'{bad}' is not a field to select ({})", NAMES.join(", ")),
        ));
    }
    Ok(select)
}

fn delete_one(eng: &Engine, id: &str, delete_disk: bool) -> Result<(), Fault> {
    let (_, r) = find(eng, id)?;
    let mut d = r.lock()?;
    if !is_volume(&d) {
        return Err(not_registered(id));
    }
    if let Some(vm) = attached_vm(eng, &d) {
        return Err(Fault::new(
            types::ResourceInUse,
            format!("volume {id} is attached to VM {}; detach it first", vm.value),
        )
        .with("type", "VirtualMachine")
        .with("name", vm.value));
    }
    if delete_disk {
        drop(d);
        eng.disks.delete(id, &r)?;
        eng.cns.forget(id);
    } else {
        // The volume goes; its disk stays a first-class disk.
        d.meta.extra.remove("cns");
        d.save_meta()?;
        eng.cns.forget(id);
    }
    Ok(())
}

fn query(eng: &Engine, f: &Data, select: Option<&[String]>, paged: bool) -> Result<Data, Fault> {
    let q = VolumeFilter::of(f, paged)?;
    let matched = q.matches(eng);
    let total = matched.len() as i64;
    let mut page = vec![];
    for (id, ds) in matched.into_iter().skip(q.offset as usize).take(q.limit as usize) {
        let Ok(r) = eng.disks.get(&id, &ds) else { continue };
        let entry = match r.meta(std::time::Duration::from_secs(2)) {
            Some(Ok(m)) if m.extra.contains_key("cns") => Some(volume(eng, &ds, r.dir(), &m, select)),
            Some(Ok(_)) => None,
            // Busy with a long operation: what the index knows.
            None => Some(Data::new(types::CnsVolume).with("volumeId", volume_id(&id)).with("volumeType", "BLOCK")),
            Some(Err(e)) => return Err(e),
        };
        page.extend(entry.map(Value::from));
    }
    let next = (q.offset + page.len() as i64).min(total.max(q.offset));
    let shown_limit = if paged { q.limit } else { total };
    Ok(Data::new(types::CnsQueryResult).with("volumes", Value::Array(types::CnsVolume, page)).with(
        "cursor",
        Data::new(types::CnsCursor).with("offset", next).with("limit", shown_limit).with("totalRecords", total),
    ))
}

/// A CnsQueryFilter, decoded once: every condition a volume must meet, and
/// the page.
struct VolumeFilter {
    ids: Vec<String>,
    names: Vec<String>,
    datastores: Vec<String>,
    clusters: Vec<String>,
    labels: Vec<(String, String)>,
    policy: Option<String>,
    health: Option<String>,
    accessibility: Option<String>,
    compliance: Option<String>,
    offset: i64,
    /// The page size (unbounded for CnsQueryAllVolume).
    limit: i64,
}

impl VolumeFilter {
    fn of(f: &Data, paged: bool) -> Result<VolumeFilter, Fault> {
        let ids = ids(f.get("volumeIds"));
        if ids.len() > 1000 {
            return Err(Fault::invalid_argument(
                "filter.volumeIds",
                format!("at most 1000 volume ids can be given, not {}", ids.len()),
            ));
        }
        let text = |k: &str| f.str(k).filter(|s| !s.is_empty()).map(str::to_string);
        let cursor = f.get("cursor").and_then(Value::as_data);
        let offset = cursor.and_then(|c| c.get("offset")).and_then(Value::as_i64).unwrap_or(0);
        let limit = cursor.and_then(|c| c.get("limit")).and_then(Value::as_i64).unwrap_or(MAX_PAGE);
        if offset < 0 || limit <= 0 {
            return Err(Fault::invalid_argument(
                "filter.cursor",
                format!(
                    "offset {offset} and limit {limit}: the offset cannot be negative and the limit must be positive"
                ),
            ));
        }
        Ok(VolumeFilter {
            ids,
            names: strings(f.get("names")),
            datastores: f
                .get("datastores")
                .and_then(Value::as_array)
                .map(|a| a.iter().filter_map(|v| v.as_moref().map(|m| m.value.clone())).collect())
                .unwrap_or_default(),
            clusters: strings(f.get("containerClusterIds")),
            labels: super::vstorage_object_manager::key_values_in(f.get("labels")),
            policy: text("storagePolicyId"),
            health: text("healthStatus"),
            accessibility: text("datastoreAccessibilityStatus"),
            compliance: text("complianceStatus"),
            offset,
            limit: if paged { limit.min(MAX_PAGE) } else { i64::MAX },
        })
    }

    /// The volumes that match, by id, with their datastores: filtered in
    /// the index (only the page's disks are read afterwards).
    fn matches(&self, eng: &Engine) -> Vec<(String, String)> {
        let mut accessible_ds: std::collections::HashMap<String, bool> = Default::default();
        let idx = eng.cns.loaded(eng);
        let empty = BTreeMap::new();
        let map = idx.as_ref().unwrap_or(&empty);
        let mut check = |id: &String, r: &Rec| self.check(eng, id, r, &mut accessible_ds).map(|ds| (id.clone(), ds));
        if self.ids.is_empty() {
            map.iter().filter_map(|(id, r)| check(id, r)).collect()
        } else {
            let mut want = self.ids.clone();
            want.sort();
            want.dedup();
            want.iter().filter_map(|id| map.get(id).and_then(|r| check(id, r))).collect()
        }
    }

    /// The datastore of a volume that meets every condition.
    fn check(
        &self,
        eng: &Engine,
        id: &str,
        r: &Rec,
        acc: &mut std::collections::HashMap<String, bool>,
    ) -> Option<String> {
        if !self.names.is_empty() && !self.names.contains(&r.name) {
            return None;
        }
        if !self.clusters.is_empty() && !r.clusters.iter().any(|c| self.clusters.contains(c)) {
            return None;
        }
        if !self.labels.iter().all(|l| r.labels.contains(l)) {
            return None;
        }
        if self.policy.as_ref().is_some_and(|p| r.policy.as_ref() != Some(p)) {
            return None;
        }
        let ds = eng.disks.datastore_of(id)?;
        if !self.datastores.is_empty() && !self.datastores.contains(&ds) {
            return None;
        }
        if self.health.is_some() || self.accessibility.is_some() {
            let ok = *acc.entry(ds.clone()).or_insert_with(|| accessible(eng, &ds));
            if self.health.as_deref().is_some_and(|h| h != if ok { "green" } else { "red" })
                || self.accessibility.as_deref().is_some_and(|a| a != if ok { "accessible" } else { "notAccessible" })
            {
                return None;
            }
        }
        if self.compliance.as_deref().is_some_and(|c| c != "compliant") {
            return None;
        }
        Some(ds)
    }
}
