//! VcenterVStorageObjectManager (moId `VStorageObjectManager`): first-class
//! disks on the datastores, backed by the disk engine (`vdisk`). Long
//! operations are engine-run tasks queued per disk, with progress.
use crate::engine::disks::{datastore_path, fcd_dir, DiskGuard, DiskRef};
use crate::engine::runner::TaskSpec;
use crate::engine::{Ctx, Engine, Fault, Reply};
use chrono::TimeZone;
use vdisk::chain::Provisioning;
use vdisk::disk::{Disk, QueryError};
use vmodl::value::Args;
use vmodl::{types, Data, MoRef, Value};

const MB: u64 = 1 << 20;

fn id_value(id: &str) -> Value {
    Data::new(types::ID).with("id", id).into()
}

fn id_arg(args: &Args, name: &str) -> Result<String, Fault> {
    args.get(name)
        .and_then(Value::as_data)
        .and_then(|d| d.str("id"))
        .filter(|s| !s.is_empty())
        .map(str::to_string)
        .ok_or_else(|| Fault::invalid_argument(name, format!("{name} is required")))
}

fn ds_arg(args: &Args, name: &str) -> Result<MoRef, Fault> {
    args.get(name)
        .and_then(Value::as_moref)
        .cloned()
        .ok_or_else(|| Fault::invalid_argument(name, format!("{name} is required")))
}

fn ms_time(ms: i64) -> chrono::DateTime<chrono::Utc> {
    chrono::Utc.timestamp_millis_opt(ms).single().unwrap_or_default()
}

fn ds_name(eng: &Engine, ds: &str) -> String {
    eng.inv.read().get(ds).map_or_else(|| ds.to_string(), |e| e.name.clone())
}

/// `[LocalDS_0] fcd/<id>/<file>`: a path in datastore notation.
fn ds_path(eng: &Engine, ds: &str, disk: &Disk, file: &str) -> String {
    let root = datastore_path(&eng.inv.read(), ds).unwrap_or_default();
    let full = disk.dir().join(file);
    let full = std::fs::canonicalize(&full).unwrap_or(full);
    let root = std::fs::canonicalize(&root).unwrap_or(root);
    let rel = full
        .strip_prefix(&root)
        .map_or_else(|_| full.to_string_lossy().into_owned(), |p| p.to_string_lossy().into_owned());
    format!("[{}] {rel}", ds_name(eng, ds))
}

fn file_fault(file: String, key: &str, msg: impl Into<String>) -> Fault {
    let mut f = Fault::new(types::FileFault, msg).with("file", file);
    if !key.is_empty() {
        set_key(&mut f, key);
    }
    f
}

fn flag(disk: &Disk, name: &str) -> bool {
    disk.meta.extra.get(name).and_then(serde_json::Value::as_bool).unwrap_or(false)
}

fn key_values(disk: &Disk) -> Vec<Value> {
    disk.meta
        .extra
        .get("metadata")
        .and_then(|m| m.as_object())
        .map(|m| {
            m.iter()
                .map(|(k, v)| {
                    Data::new(types::KeyValue)
                        .with("key", k.clone())
                        .with("value", v.as_str().unwrap_or("").to_string())
                        .into()
                })
                .collect()
        })
        .unwrap_or_default()
}

/// The VStorageObject of a disk.
pub fn vstorage_object(eng: &Engine, ds: &str, disk: &Disk) -> Data {
    let dsref = MoRef::new(types::Datastore, ds);
    let backing = Data::new(types::BaseConfigInfoDiskFileBackingInfo)
        .with("datastore", dsref)
        .with("filePath", ds_path(eng, ds, disk, &disk.meta.top))
        .with("provisioningType", disk.meta.provisioning.clone());
    let mut config = Data::new(types::VStorageObjectConfigInfo)
        .with("id", id_value(&disk.meta.id))
        .with("name", disk.meta.name.clone())
        .with("createTime", ms_time(disk.meta.created_ms))
        .with("keepAfterDeleteVm", flag(disk, "keepAfterDeleteVm"))
        .with("relocationDisabled", flag(disk, "disableRelocation"))
        .with("nativeSnapshotSupported", true)
        .with("changedBlockTrackingEnabled", disk.tracking())
        .with("backing", backing)
        .with("capacityInMB", (disk.capacity() / MB) as i64)
        .with("consumptionType", Value::array_of_strings(["disk"]));
    let kv = key_values(disk);
    if !kv.is_empty() {
        config.set("metadata", Value::Array(types::KeyValue, kv));
    }
    Data::new(types::VStorageObject).with("config", config)
}

fn set_metadata(disk: &mut Disk, add: &[(String, String)], delete: &[String]) {
    let m = disk.meta.extra.entry("metadata").or_insert_with(|| serde_json::json!({}));
    if let Some(m) = m.as_object_mut() {
        for k in delete {
            m.remove(k);
        }
        for (k, v) in add {
            m.insert(k.clone(), serde_json::Value::String(v.clone()));
        }
    }
}

fn kv_arg(args: &Args, name: &str) -> Vec<(String, String)> {
    key_values_in(args.get(name))
}

/// The (key, value) pairs of an array of KeyValue.
pub(super) fn key_values_in(v: Option<&Value>) -> Vec<(String, String)> {
    v.and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .filter_map(Value::as_data)
                .map(|d| (d.str("key").unwrap_or("").to_string(), d.str("value").unwrap_or("").to_string()))
                .collect()
        })
        .unwrap_or_default()
}

fn kv_data(d: &Data, name: &str) -> Vec<(String, String)> {
    d.get(name)
        .and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .filter_map(Value::as_data)
                .map(|d| (d.str("key").unwrap_or("").to_string(), d.str("value").unwrap_or("").to_string()))
                .collect()
        })
        .unwrap_or_default()
}

fn provisioning(backing: &Data) -> Result<Provisioning, Fault> {
    match backing.str("provisioningType").unwrap_or("thin") {
        "thin" => Ok(Provisioning::Thin),
        "lazyZeroedThick" => Ok(Provisioning::LazyZeroed),
        "eagerZeroedThick" => Ok(Provisioning::EagerZeroed),
        other => Err(Fault::invalid_argument(
            "backingSpec.provisioningType",
            format!("'{other}' is not a provisioning type"),
        )),
    }
}

/// The directory of datastore `ds`, or InvalidDatastore.
fn ds_dir(eng: &Engine, ds: &MoRef) -> Result<std::path::PathBuf, Fault> {
    let p = datastore_path(&eng.inv.read(), &ds.value).ok_or_else(|| {
        Fault::new(types::InvalidDatastore, format!("{} is not a datastore", ds.value)).with("datastore", ds.clone())
    })?;
    if !p.is_dir() {
        return Err(Fault::new(
            types::InvalidDatastore,
            format!("datastore {} is not accessible", ds_name(eng, &ds.value)),
        )
        .with("datastore", ds.clone())
        .with("name", ds_name(eng, &ds.value)));
    }
    Ok(p)
}

/// Run `work` as a task queued on the disk `id`.
fn disk_task(
    eng: &Engine,
    ctx: &Ctx,
    method: &'static str,
    vmodl: &str,
    ds: &MoRef,
    id: &str,
    work: impl FnOnce(&Engine, &crate::engine::runner::TaskCtl) -> Result<Option<Value>, Fault> + Send + 'static,
) -> Reply {
    let spec = TaskSpec {
        queue: Some(format!("fcd:{id}")),
        ..TaskSpec::on(method, format!("VcenterVStorageObjectManager.{vmodl}"), ds.clone())
    };
    eng.run_task(ctx, spec, Box::new(work))
}

fn with_disk<T>(r: &DiskRef, f: impl FnOnce(&mut Disk) -> Result<T, Fault>) -> Result<T, Fault> {
    let mut d = r.lock()?;
    f(&mut d)
}

fn with_disk_now<T>(r: &DiskRef, f: impl FnOnce(&mut Disk) -> Result<T, Fault>) -> Result<T, Fault> {
    let mut d = lock_now(r)?;
    f(&mut d)
}

/// The disk for a call answered at once: a disk busy with a long operation
/// (a consolidation, a clone) is reported as such instead of holding the
/// caller, and a server thread, for the operation's length.
fn lock_now(r: &DiskRef) -> Result<DiskGuard<'_>, Fault> {
    r.try_lock_for(std::time::Duration::from_secs(2)).ok_or_else(|| {
        Fault::new(types::InvalidState, "the disk is busy with another operation; try again when its task has finished")
    })?
}

fn snapshot_missing(id: &str) -> Fault {
    Fault::plain_not_found(format!("The object or item referred to could not be found: snapshot {id}"))
}

pub fn invoke(eng: &Engine, ctx: &mut Ctx, _this: &MoRef, method: &str, args: Args) -> Option<Reply> {
    let a = &args;
    Some(match method {
        "CreateDisk_Task" => create_disk(eng, ctx, a),
        "RegisterDisk" => register_disk(eng, a),
        "RetrieveVStorageObject" => On::of(a).and_then(|on| retrieve(eng, &on)),
        "RetrieveVStorageObjectState" => On::of(a).and_then(|on| retrieve_state(eng, &on)),
        "ListVStorageObject" => ds_arg(a, "datastore").and_then(|ds| list(eng, &ds)),
        "RenameVStorageObject" => On::of(a).and_then(|on| rename(eng, &on, a.str("name").unwrap_or(""))),
        "SetVStorageObjectControlFlags" => On::of(a).and_then(|on| control_flags(eng, &on, a, true)),
        "ClearVStorageObjectControlFlags" => On::of(a).and_then(|on| control_flags(eng, &on, a, false)),
        "AttachTagToVStorageObject" => Tagging::of(a).and_then(|t| tag(eng, &t, true)),
        "DetachTagFromVStorageObject" => Tagging::of(a).and_then(|t| tag(eng, &t, false)),
        "ListTagsAttachedToVStorageObject" => id_arg(a, "id").and_then(|id| list_tags(eng, &id)),
        "ListVStorageObjectsAttachedToTag" => {
            list_tagged(eng, a.str("category").unwrap_or(""), a.str("tag").unwrap_or(""))
        }
        "RetrieveSnapshotInfo" => On::of(a).and_then(|on| snapshot_info(eng, &on)),
        "RetrieveSnapshotDetails" => OnSnapshot::of(a).and_then(|on| snapshot_details(eng, &on)),
        "VstorageObjectVCenterQueryChangedDiskAreas" => query_changed(eng, a),
        "VStorageObjectCreateSnapshot_Task" => {
            On::of(a).and_then(|on| create_snapshot(eng, ctx, on, a.str("description").unwrap_or("")))
        }
        "DeleteSnapshot_Task" => OnSnapshot::of(a).and_then(|on| delete_snapshot(eng, ctx, on)),
        "RevertVStorageObject_Task" => OnSnapshot::of(a).and_then(|on| revert(eng, ctx, on)),
        "ExtendDisk_Task" => {
            On::of(a).and_then(|on| extend(eng, ctx, on, a.get("newCapacityInMB").and_then(Value::as_i64).unwrap_or(0)))
        }
        "InflateDisk_Task" => On::of(a).and_then(|on| inflate(eng, ctx, on)),
        "DeleteVStorageObject_Task" => On::of(a).and_then(|on| delete(eng, ctx, on, "DeleteVStorageObject_Task")),
        "DeleteVStorageObjectEx_Task" => On::of(a).and_then(|on| delete(eng, ctx, on, "DeleteVStorageObjectEx_Task")),
        "CloneVStorageObject_Task" => clone_disk(eng, ctx, a),
        "RelocateVStorageObject_Task" => relocate_disk(eng, ctx, a),
        "VCenterUpdateVStorageObjectMetadataEx_Task" => {
            On::of(a).and_then(|on| update_metadata(eng, ctx, on, kv_arg(a, "metadata"), strings(a, "deleteKeys")))
        }
        "ReconcileDatastoreInventory_Task" => ds_arg(a, "datastore").and_then(|ds| reconcile(eng, ctx, ds)),
        _ => return None,
    })
}

/// The disk most methods are on: `id` on `datastore`.
struct On {
    id: String,
    ds: MoRef,
}

impl On {
    fn of(args: &Args) -> Result<On, Fault> {
        Ok(On { id: id_arg(args, "id")?, ds: ds_arg(args, "datastore")? })
    }

    fn disk(&self, eng: &Engine) -> Result<DiskRef, Fault> {
        eng.disks.get(&self.id, &self.ds.value)
    }
}

/// A snapshot of a disk: `snapshotId` of `id` on `datastore`.
struct OnSnapshot {
    on: On,
    snapshot: String,
}

impl OnSnapshot {
    fn of(args: &Args) -> Result<OnSnapshot, Fault> {
        Ok(OnSnapshot { on: On::of(args)?, snapshot: id_arg(args, "snapshotId")? })
    }

    /// The disk, which must have the snapshot.
    fn disk(&self, eng: &Engine) -> Result<DiskRef, Fault> {
        let r = self.on.disk(eng)?;
        if lock_now(&r)?.snapshot(&self.snapshot).is_none() {
            return Err(snapshot_missing(&self.snapshot));
        }
        Ok(r)
    }
}

/// A tag of a disk: `category`/`tag` on `id` (on whichever datastore).
struct Tagging {
    id: String,
    category: String,
    tag: String,
}

impl Tagging {
    fn of(args: &Args) -> Result<Tagging, Fault> {
        Ok(Tagging {
            id: id_arg(args, "id")?,
            category: args.str("category").unwrap_or("").to_string(),
            tag: args.str("tag").unwrap_or("").to_string(),
        })
    }
}

fn strings(args: &Args, name: &str) -> Vec<String> {
    args.get(name)
        .and_then(Value::as_array)
        .map(|a| a.iter().filter_map(|v| v.as_str().map(str::to_string)).collect())
        .unwrap_or_default()
}

/// A disk found by id alone, on any datastore.
fn find_anywhere(eng: &Engine, id: &str) -> Result<DiskRef, Fault> {
    eng.disks
        .find(id)
        .map(|(_, r)| r)
        .ok_or_else(|| Fault::plain_not_found(format!("virtual storage object {id} not found")))
}

fn retrieve(eng: &Engine, on: &On) -> Reply {
    let r = on.disk(eng)?;
    let d = lock_now(&r)?;
    Ok(Some(vstorage_object(eng, &on.ds.value, &d).into()))
}

fn retrieve_state(eng: &Engine, on: &On) -> Reply {
    on.disk(eng)?;
    Ok(Some(Data::new(types::VStorageObjectStateInfo).with("tentative", false).into()))
}

fn list(eng: &Engine, ds: &MoRef) -> Reply {
    ds_dir(eng, ds)?;
    Ok(Some(Value::Array(types::ID, eng.disks.list(&ds.value).iter().map(|i| id_value(i)).collect())))
}

fn rename(eng: &Engine, on: &On, name: &str) -> Reply {
    let name = name.trim().to_string();
    if name.is_empty() {
        return Err(Fault::invalid_argument("name", "name must not be empty"));
    }
    with_disk_now(&on.disk(eng)?, |d| {
        d.meta.name = name;
        d.save_meta().map_err(Fault::from)
    })?;
    crate::engine::storage::cns::disk_changed(eng, &on.id);
    Ok(None)
}

/// Set/ClearVStorageObjectControlFlags.
fn control_flags(eng: &Engine, on: &On, args: &Args, set: bool) -> Reply {
    let flags = strings(args, "controlFlags");
    for f in &flags {
        if !matches!(f.as_str(), "keepAfterDeleteVm" | "disableRelocation" | "enableChangedBlockTracking") {
            return Err(Fault::invalid_argument("controlFlags", format!("'{f}' is not a control flag")));
        }
    }
    with_disk_now(&on.disk(eng)?, |d| {
        for f in &flags {
            if f == "enableChangedBlockTracking" {
                d.set_tracking(set)?;
            } else {
                d.meta.extra.insert(f.clone(), serde_json::Value::Bool(set));
            }
        }
        d.save_meta().map_err(Fault::from)
    })?;
    Ok(None)
}

/// AttachTagToVStorageObject (`attach`) / DetachTagFromVStorageObject.
fn tag(eng: &Engine, t: &Tagging, attach: bool) -> Reply {
    with_disk_now(&find_anywhere(eng, &t.id)?, |d| {
        let tags = d.meta.extra.entry("tags").or_insert_with(|| serde_json::json!([]));
        let arr = tags.as_array_mut().expect("tags array");
        let entry = serde_json::json!([t.category, t.tag]);
        if attach {
            if !arr.contains(&entry) {
                arr.push(entry);
            }
        } else if let Some(i) = arr.iter().position(|e| *e == entry) {
            arr.remove(i);
        } else {
            return Err(Fault::plain_not_found(format!("tag {}/{} is not attached to {}", t.category, t.tag, t.id)));
        }
        d.save_meta().map_err(Fault::from)
    })?;
    Ok(None)
}

fn list_tags(eng: &Engine, id: &str) -> Reply {
    let r = find_anywhere(eng, id)?;
    let d = lock_now(&r)?;
    let tags: Vec<Value> = tags_of(&d)
        .into_iter()
        .map(|(c, t)| Data::new(types::VslmTagEntry).with("tagName", t).with("parentCategoryName", c).into())
        .collect();
    Ok(Some(Value::Array(types::VslmTagEntry, tags)))
}

fn list_tagged(eng: &Engine, cat: &str, tag: &str) -> Reply {
    let ids: Vec<Value> = eng
        .datastores()
        .iter()
        .flat_map(|(ds, _, _)| eng.disks.list(&ds.value))
        .filter(|id| {
            eng.disks
                .find(id)
                .is_some_and(|(_, r)| lock_now(&r).is_ok_and(|d| tags_of(&d).iter().any(|(c, t)| c == cat && t == tag)))
        })
        .map(|id| id_value(&id))
        .collect();
    Ok(Some(Value::Array(types::ID, ids)))
}

fn snapshot_info(eng: &Engine, on: &On) -> Reply {
    let r = on.disk(eng)?;
    let d = lock_now(&r)?;
    let snaps: Vec<Value> = d
        .meta
        .snapshots
        .iter()
        .map(|s| {
            Data::new(types::VStorageObjectSnapshotInfoVStorageObjectSnapshot)
                .with("id", id_value(&s.id))
                .with("backingObjectId", s.id.clone())
                .with("createTime", ms_time(s.created_ms))
                .with("description", s.description.clone())
                .into()
        })
        .collect();
    Ok(Some(
        Data::new(types::VStorageObjectSnapshotInfo)
            .with("snapshots", Value::Array(types::VStorageObjectSnapshotInfoVStorageObjectSnapshot, snaps))
            .into(),
    ))
}

fn snapshot_details(eng: &Engine, on: &OnSnapshot) -> Reply {
    let r = on.on.disk(eng)?;
    let d = lock_now(&r)?;
    let s = d.snapshot(&on.snapshot).cloned().ok_or_else(|| snapshot_missing(&on.snapshot))?;
    Ok(Some(
        Data::new(types::VStorageObjectSnapshotDetails)
            .with("path", ds_path(eng, &on.on.ds.value, &d, &s.layer))
            .with_opt("changedBlockTrackingId", d.change_id(&s))
            .into(),
    ))
}

fn create_snapshot(eng: &Engine, ctx: &Ctx, on: On, description: &str) -> Reply {
    let r = on.disk(eng)?;
    let description = description.to_string();
    let id = on.id.clone();
    disk_task(eng, ctx, "VStorageObjectCreateSnapshot_Task", "createSnapshot", &on.ds, &on.id, move |eng, _| {
        let sid = uuid::Uuid::new_v4().to_string();
        with_disk(&r, |d| d.create_snapshot(&sid, &description).map_err(Fault::from))?;
        crate::engine::storage::cns::disk_changed(eng, &id);
        Ok(Some(id_value(&sid)))
    })
}

fn delete_snapshot(eng: &Engine, ctx: &Ctx, on: OnSnapshot) -> Reply {
    snapshot_task(eng, ctx, on, "DeleteSnapshot_Task", "deleteSnapshot", |d, sid, ctl| {
        d.delete_snapshot(sid, &mut |f| ctl.progress((f * 100.0) as i32))
    })
}

fn revert(eng: &Engine, ctx: &Ctx, on: OnSnapshot) -> Reply {
    snapshot_task(eng, ctx, on, "RevertVStorageObject_Task", "revert", |d, sid, _| d.revert(sid))
}

/// A task on a disk's snapshot, which must be there when it is asked for
/// and still when the task runs; CNS hears of the change.
fn snapshot_task(
    eng: &Engine,
    ctx: &Ctx,
    on: OnSnapshot,
    method: &'static str,
    vmodl: &str,
    work: impl FnOnce(&mut Disk, &str, &crate::engine::runner::TaskCtl) -> vdisk::Result<()> + Send + 'static,
) -> Reply {
    let r = on.disk(eng)?;
    let OnSnapshot { on, snapshot: sid } = on;
    let id = on.id.clone();
    disk_task(eng, ctx, method, vmodl, &on.ds, &on.id, move |eng, ctl| {
        with_disk(&r, |d| {
            if d.snapshot(&sid).is_none() {
                return Err(snapshot_missing(&sid));
            }
            work(d, &sid, ctl).map_err(Fault::from)
        })?;
        crate::engine::storage::cns::disk_changed(eng, &id);
        Ok(None)
    })
}

fn extend(eng: &Engine, ctx: &Ctx, on: On, mb: i64) -> Reply {
    let r = on.disk(eng)?;
    {
        let d = lock_now(&r)?;
        if mb <= 0 || (mb as u64) * MB < d.capacity() {
            return Err(Fault::invalid_argument(
                "newCapacityInMB",
                format!("{mb} MB is smaller than the disk's {} MB", d.capacity() / MB),
            ));
        }
        if !d.meta.snapshots.is_empty() {
            return Err(Fault::new(types::InvalidState, "a disk with snapshots cannot be extended"));
        }
    }
    disk_task(eng, ctx, "ExtendDisk_Task", "extendDisk", &on.ds, &on.id, move |_, _| {
        with_disk(&r, |d| d.extend(mb as u64 * MB).map_err(Fault::from))?;
        Ok(None)
    })
}

fn inflate(eng: &Engine, ctx: &Ctx, on: On) -> Reply {
    let r = on.disk(eng)?;
    disk_task(eng, ctx, "InflateDisk_Task", "inflateDisk", &on.ds, &on.id, move |_, _| {
        with_disk(&r, |d| d.inflate().map_err(Fault::from))?;
        Ok(None)
    })
}

/// DeleteVStorageObject_Task and DeleteVStorageObjectEx_Task (`method`).
fn delete(eng: &Engine, ctx: &Ctx, on: On, method: &'static str) -> Reply {
    if let Some(vm) = crate::engine::storage::cns::attached_vm(eng, &*lock_now(&on.disk(eng)?)?) {
        return Err(Fault::new(types::ResourceInUse, format!("disk {} is attached to VM {}", on.id, vm.value))
            .with("type", "VirtualMachine")
            .with("name", vm.value));
    }
    let (id, dsv) = (on.id.clone(), on.ds.value.clone());
    disk_task(eng, ctx, method, "deleteVStorageObject", &on.ds, &on.id, move |eng, _| {
        let r = eng.disks.get(&id, &dsv)?;
        eng.disks.delete(&id, &r)?;
        crate::engine::storage::cns::disk_changed(eng, &id);
        eng.changed();
        Ok(None)
    })
}

/// VCenterUpdateVStorageObjectMetadataEx_Task.
fn update_metadata(eng: &Engine, ctx: &Ctx, on: On, add: Vec<(String, String)>, delete: Vec<String>) -> Reply {
    let r = on.disk(eng)?;
    let name = "VCenterUpdateVStorageObjectMetadataEx_Task";
    disk_task(eng, ctx, name, "updateVStorageObjectMetadataEx", &on.ds, &on.id, move |_, _| {
        with_disk(&r, |d| {
            set_metadata(d, &add, &delete);
            d.save_meta().map_err(Fault::from)
        })?;
        Ok(None)
    })
}

fn reconcile(eng: &Engine, ctx: &Ctx, ds: MoRef) -> Reply {
    let dir = ds_dir(eng, &ds)?;
    let spec = TaskSpec::on(
        "ReconcileDatastoreInventory_Task",
        "VcenterVStorageObjectManager.reconcileDatastoreInventory",
        ds.clone(),
    );
    let dsv = ds.value;
    eng.run_task(
        ctx,
        spec,
        Box::new(move |eng, _| {
            eng.disks.drop_missing(&dsv);
            eng.disks.scan(&dsv, &dir);
            eng.changed();
            Ok(None)
        }),
    )
}

fn tags_of(d: &Disk) -> Vec<(String, String)> {
    d.meta
        .extra
        .get("tags")
        .and_then(|t| t.as_array())
        .map(|a| {
            a.iter().filter_map(|e| Some((e.get(0)?.as_str()?.to_string(), e.get(1)?.as_str()?.to_string()))).collect()
        })
        .unwrap_or_default()
}

fn create_disk(eng: &Engine, ctx: &Ctx, args: &Args) -> Reply {
    let spec = args
        .get("spec")
        .and_then(Value::as_data)
        .ok_or_else(|| Fault::invalid_argument("spec", "spec is required"))?
        .clone();
    let name = spec.str("name").unwrap_or("").trim().to_string();
    if name.is_empty() {
        return Err(Fault::invalid_argument("spec.name", "the disk needs a name"));
    }
    let mb = spec.get("capacityInMB").and_then(Value::as_i64).unwrap_or(0);
    if mb <= 0 {
        return Err(Fault::invalid_argument("spec.capacityInMB", format!("capacity {mb} MB is not positive")));
    }
    let backing = spec
        .get("backingSpec")
        .and_then(Value::as_data)
        .ok_or_else(|| Fault::invalid_argument("spec.backingSpec", "backingSpec is required"))?
        .clone();
    let ds = backing
        .get("datastore")
        .and_then(Value::as_moref)
        .cloned()
        .ok_or_else(|| Fault::invalid_argument("spec.backingSpec.datastore", "datastore is required"))?;
    let ds = eng.resolve(&ds)?;
    let root = ds_dir(eng, &ds)?;
    let prov = provisioning(&backing)?;
    let id = match spec.get("id").and_then(Value::as_data).and_then(|d| d.str("id")) {
        Some(i) => {
            let i = crate::engine::paths::disk_id(i, "spec.id")?;
            if eng.disks.exists(&i) {
                return Err(Fault::already_exists(&i));
            }
            i
        }
        None => uuid::Uuid::new_v4().to_string(),
    };
    let dir = disk_dir(&root, &id)?;
    let keep = spec.get("keepAfterDeleteVm").and_then(Value::as_bool);
    let metadata = kv_data(&spec, "metadata");
    let dsv = ds.value.clone();
    disk_task(eng, ctx, "CreateDisk_Task", "createDisk", &ds, &id.clone(), move |eng, _| {
        // Change tracking is on for new disks.
        let mut d = Disk::create(&dir, &id, &name, mb as u64 * MB, prov, true)?;
        if let Some(k) = keep {
            d.meta.extra.insert("keepAfterDeleteVm".into(), serde_json::Value::Bool(k));
        }
        set_metadata(&mut d, &metadata, &[]);
        d.save_meta()?;
        let obj = vstorage_object(eng, &dsv, &d);
        eng.disks.insert(&dsv, d);
        eng.changed();
        Ok(Some(obj.into()))
    })
}

/// `[name] rel/path.vmdk` → (datastore moId, file).
/// The directory of disk `id` on the datastore whose directory is `root`,
/// proven inside it.
fn disk_dir(root: &std::path::Path, id: &str) -> Result<std::path::PathBuf, Fault> {
    crate::engine::paths::contained(&fcd_dir(root), id, "id")
}

/// RegisterDisk takes a VMDK descriptor file inside a datastore, nothing
/// else (never a directory).
fn register_disk(eng: &Engine, args: &Args) -> Reply {
    let path = args.str("path").unwrap_or("");
    let p = crate::engine::paths::resolve(&eng.inv.read(), path, "path")?;
    let (ds, file) = (p.datastore, p.path);
    let is_file = std::fs::symlink_metadata(&file).is_ok_and(|m| m.is_file());
    if !is_file {
        return Err(file_fault(path.to_string(), "", format!("File {path} was not found")));
    }
    if file.extension().is_none_or(|e| e != "vmdk") {
        return Err(Fault::invalid_argument("path", format!("{path} is not a virtual disk (.vmdk)")));
    }
    // The disk's chain (parents named by parentFileNameHint, extents) must
    // lie on the datastores too: a descriptor must not reach host files.
    let chain = vdisk::Chain::open_readonly(&file)?;
    {
        let inv = eng.inv.read();
        if let Some(out) = chain.files().iter().find(|f| !crate::engine::paths::on_a_datastore(&inv, f)) {
            return Err(Fault::invalid_argument(
                "path",
                format!(
                    "{path} names a file outside every datastore ({})",
                    out.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default()
                ),
            ));
        }
    }
    drop(chain);
    let dir = file.parent().unwrap_or(std::path::Path::new("."));
    // A disk directory of ours (re-registering): its metadata says who it is.
    let disk = if dir.join(vdisk::disk::META).exists() {
        let d = Disk::open(dir)?;
        if eng.disks.exists(&d.meta.id) {
            return Err(Fault::already_exists(&d.meta.id));
        }
        d
    } else {
        let id = match args.get("id").and_then(Value::as_data).and_then(|d| d.str("id")) {
            Some(i) => crate::engine::paths::disk_id(i, "id")?,
            None => uuid::Uuid::new_v4().to_string(),
        };
        if eng.disks.exists(&id) {
            return Err(Fault::already_exists(&id));
        }
        let root = datastore_path(&eng.inv.read(), &ds).unwrap_or_default();
        let name = args.str("name").filter(|n| !n.is_empty()).map_or_else(
            || file.file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_default(),
            str::to_string,
        );
        let dir = disk_dir(&root, &id)?;
        if dir.exists() {
            return Err(Fault::already_exists(&id));
        }
        Disk::adopt(&dir, &id, &name, &file, true)?
    };
    let obj = vstorage_object(eng, &ds, &disk);
    eng.disks.insert(&ds, disk);
    eng.changed();
    Ok(Some(obj.into()))
}

fn clone_disk(eng: &Engine, ctx: &Ctx, args: &Args) -> Reply {
    let (id, ds) = (id_arg(args, "id")?, ds_arg(args, "datastore")?);
    let r = eng.disks.get(&id, &ds.value)?;
    let spec = args
        .get("spec")
        .and_then(Value::as_data)
        .ok_or_else(|| Fault::invalid_argument("spec", "spec is required"))?
        .clone();
    let name = spec.str("name").unwrap_or("").trim().to_string();
    if name.is_empty() {
        return Err(Fault::invalid_argument("spec.name", "the clone needs a name"));
    }
    let backing = spec
        .get("backingSpec")
        .and_then(Value::as_data)
        .ok_or_else(|| Fault::invalid_argument("spec.backingSpec", "backingSpec is required"))?
        .clone();
    let target = eng.resolve(
        backing
            .get("datastore")
            .and_then(Value::as_moref)
            .ok_or_else(|| Fault::invalid_argument("spec.backingSpec.datastore", "datastore is required"))?,
    )?;
    let root = ds_dir(eng, &target)?;
    let prov = provisioning(&backing)?;
    let metadata = kv_data(&spec, "metadata");
    disk_task(eng, ctx, "CloneVStorageObject_Task", "clone", &ds, &id, move |eng, ctl| {
        let new_id = uuid::Uuid::new_v4().to_string();
        let dir = disk_dir(&root, &new_id)?;
        let mut c = {
            let d = r.lock()?;
            d.clone_to(&dir, &new_id, &name, prov, &mut |f| ctl.progress((f * 100.0) as i32))?
        };
        set_metadata(&mut c, &metadata, &[]);
        c.save_meta()?;
        let obj = vstorage_object(eng, &target.value, &c);
        eng.disks.insert(&target.value, c);
        eng.changed();
        Ok(Some(obj.into()))
    })
}

fn relocate_disk(eng: &Engine, ctx: &Ctx, args: &Args) -> Reply {
    let (id, ds) = (id_arg(args, "id")?, ds_arg(args, "datastore")?);
    let r = eng.disks.get(&id, &ds.value)?;
    if flag(&*lock_now(&r)?, "disableRelocation") {
        return Err(Fault::new(types::InvalidState, format!("relocation of {id} is disabled")));
    }
    let spec = args
        .get("spec")
        .and_then(Value::as_data)
        .ok_or_else(|| Fault::invalid_argument("spec", "spec is required"))?
        .clone();
    let backing = spec
        .get("backingSpec")
        .and_then(Value::as_data)
        .ok_or_else(|| Fault::invalid_argument("spec.backingSpec", "backingSpec is required"))?
        .clone();
    let target = eng.resolve(
        backing
            .get("datastore")
            .and_then(Value::as_moref)
            .ok_or_else(|| Fault::invalid_argument("spec.backingSpec.datastore", "datastore is required"))?,
    )?;
    ds_dir(eng, &target)?;
    let source = ds.value.clone();
    disk_task(eng, ctx, "RelocateVStorageObject_Task", "relocate", &ds, &id.clone(), move |eng, ctl| {
        let obj = move_disk(eng, &r, &id, &source, &target.value, &mut |f| ctl.progress((f * 100.0) as i32))?;
        Ok(Some(obj.into()))
    })
}

/// Move disk `id` from datastore `source` to `target`: its directory is
/// renamed when the datastores share a filesystem, else copied and the
/// original deleted. The new VStorageObject.
pub(super) fn move_disk(
    eng: &Engine,
    r: &DiskRef,
    id: &str,
    source: &str,
    target: &str,
    progress: &mut dyn FnMut(f64),
) -> Result<Data, Fault> {
    let root = ds_dir(eng, &MoRef::new(types::Datastore, target))?;
    // The disk stays locked while its files move.
    let d = r.lock()?;
    if target == source {
        return Ok(vstorage_object(eng, source, &d));
    }
    let dir = disk_dir(&root, id)?;
    if dir.exists() {
        return Err(
            Fault::new(types::AlreadyExists, format!("{} already exists", dir.display())).with("name", id.to_string())
        );
    }
    let old = r.dir().to_path_buf();
    std::fs::create_dir_all(fcd_dir(&root)).map_err(|e| file_fault(root.display().to_string(), "", e.to_string()))?;
    // A registered disk whose files live outside its directory is copied.
    let self_contained = !d.meta.top.contains('/');
    let moved = self_contained && std::fs::rename(&old, &dir).is_ok();
    if !moved {
        let mut c = d.clone_to(&dir, id, &d.meta.name, Provisioning::Thin, progress)?;
        c.meta.extra = d.meta.extra.clone();
        c.save_meta()?;
        let _ = std::fs::remove_dir_all(&old);
    }
    drop(d);
    let d = Disk::open(&dir)?;
    let obj = vstorage_object(eng, target, &d);
    eng.disks.remove(id);
    eng.disks.insert(target, d);
    crate::engine::storage::cns::disk_changed(eng, id);
    eng.changed();
    Ok(obj)
}

fn query_changed(eng: &Engine, args: &Args) -> Reply {
    let (id, ds, sid) = (id_arg(args, "id")?, ds_arg(args, "datastore")?, id_arg(args, "snapshotId")?);
    let start = args.get("startOffset").and_then(Value::as_i64).unwrap_or(0);
    let change_id = args.str("changeId").unwrap_or("").to_string();
    let r = eng.disks.get(&id, &ds.value)?;
    let d = lock_now(&r)?;
    if start < 0 {
        return Err(Fault::invalid_argument("startOffset", format!("startOffset {start} is negative")));
    }
    let top = ds_path(eng, &ds.value, &d, &d.meta.top);
    let c = d.changed_areas(&sid, start as u64, &change_id).map_err(|e| match e {
        QueryError::SnapshotNotFound => snapshot_missing(&sid),
        QueryError::OffsetBeyondEnd => Fault::invalid_argument(
            "startOffset",
            format!("startOffset {start} is beyond the end of the disk ({} bytes)", d.capacity()),
        ),
        QueryError::NotTracking => {
            let mut f = Fault::new(types::InvalidState, format!("changed block tracking is not enabled on {id}"));
            set_key(&mut f, "vim.hostd.vmsvc.cbt.noTrack");
            f
        }
        QueryError::NoEpoch => {
            let mut f = Fault::new(
                types::InvalidState,
                format!("snapshot {sid} was taken while changed block tracking was off"),
            );
            set_key(&mut f, "vim.hostd.vmsvc.cbt.noEpoch");
            f
        }
        QueryError::BadChangeId(_) | QueryError::FutureChangeId => Fault::invalid_argument(
            "changeId",
            format!("changeId '{change_id}' is not valid for snapshot {sid} of {id}"),
        ),
        QueryError::Io(e) => file_fault(top.clone(), "vim.hostd.vmsvc.cbt.cannotGetChanges", e.to_string()),
    })?;
    let areas: Vec<Value> = c
        .areas
        .iter()
        .map(|&(o, l)| Data::new(types::DiskChangeExtent).with("start", o as i64).with("length", l as i64).into())
        .collect();
    Ok(Some(
        Data::new(types::DiskChangeInfo)
            .with("startOffset", c.start as i64)
            .with("length", c.length as i64)
            .with("changedArea", Value::Array(types::DiskChangeExtent, areas))
            .into(),
    ))
}

fn set_key(f: &mut Fault, key: &str) {
    if let Some(Value::Array(_, mut m)) = f.data.get("faultMessage").cloned() {
        if let Some(Value::Data(first)) = m.first_mut() {
            first.set("key", key);
        }
        f.data.set("faultMessage", Value::Array(types::LocalizableMessage, m));
    }
}
