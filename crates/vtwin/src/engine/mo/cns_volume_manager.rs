//! CnsVolumeManager (moId `cns-volume-manager`, vSAN namespace): Cloud
//! Native Storage volumes are first-class disks. A BLOCK volume's id is its
//! backing disk's id; its CNS metadata (container cluster, entity metadata,
//! labels) and its last measured used space are kept with the disk
//! (`vtwin-disk.json`), so they persist with it. Calls that change volumes
//! return a task whose result is a batch with one entry per volume, each
//! with its own fault: a partial failure is not a task error.
use crate::engine::disks::{datastore_path, fcd_dir};
use crate::engine::runner::TaskSpec;
use crate::engine::{Ctx, Engine, Fault, Reply};
use vdisk::chain::Provisioning;
use vdisk::disk::Disk;
use vmodl::value::Args;
use vmodl::{json, types, Data, MoRef, TypeRef, Value, VersionId};

const MB: u64 = 1 << 20;

fn storage_version() -> VersionId {
    VersionId::by_wire("vsan", "9.1.0.0").or_else(|| VersionId::by_wire("vim25", "9.1.0.0")).expect("a 9.1 version")
}

fn volume_id(id: &str) -> Value {
    Data::new(types::CnsVolumeId).with("id", id).into()
}

fn cns_fault(reason: &str) -> Fault {
    Fault::new(types::CnsFault, reason).with("reason", reason)
}

fn ids(v: Option<&Value>) -> Vec<String> {
    v.and_then(Value::as_array).unwrap_or(&[]).iter().filter_map(Value::as_data).filter_map(|d| d.str("id").map(str::to_string)).collect()
}

fn result(ty: vmodl::TypeId, id: Option<&str>, fault: Option<Fault>) -> Value {
    let mut d = Data::new(ty);
    if let Some(i) = id {
        d.set("volumeId", volume_id(i));
    }
    if let Some(f) = fault {
        d.set("fault", f.data);
    }
    d.into()
}

fn batch(results: Vec<Value>) -> Value {
    Data::new(types::CnsVolumeOperationBatchResult).with("volumeResults", Value::Array(types::CnsVolumeOperationResult, results)).into()
}

fn is_volume(d: &Disk) -> bool {
    d.meta.extra.contains_key("cns")
}

/// The CNS metadata kept with a volume's disk.
fn metadata(d: &Disk) -> Option<Data> {
    let j = d.meta.extra.get("cns")?.get("metadata")?;
    match json::decode(j, TypeRef { ty: types::CnsVolumeMetadata, array: false }, "cns").ok()? {
        Some(Value::Data(m)) => Some(*m),
        _ => None,
    }
}

fn used_mb(d: &Disk) -> Option<i64> {
    d.meta.extra.get("cns")?.get("usedCapacityInMb")?.as_i64()
}

/// The CnsVolume of a disk.
fn volume(eng: &Engine, ds: &str, d: &Disk) -> Data {
    let url = eng.inv.read().get(ds).and_then(|e| e.attr("url").map(str::to_string)).unwrap_or_default();
    let obj = super::vstorage_object_manager::vstorage_object(eng, ds, d);
    let path = obj.get("config").and_then(Value::as_data).and_then(|c| c.get("backing")).and_then(Value::as_data).and_then(|b| b.str("filePath")).unwrap_or("").to_string();
    let backing = Data::new(types::CnsBlockBackingDetails)
        .with("capacityInMb", (d.capacity() / MB) as i64)
        .with("backingDiskId", d.meta.id.clone())
        .with("backingDiskPath", path)
        .with_opt("usedCapacityInMb", used_mb(d));
    Data::new(types::CnsVolume)
        .with("volumeId", volume_id(&d.meta.id))
        .with("datastoreUrl", url)
        .with("name", d.meta.name.clone())
        .with("volumeType", "BLOCK")
        .with_opt("metadata", metadata(d))
        .with("backingObjectDetails", backing)
        .with("complianceStatus", "compliant")
        .with("datastoreAccessibilityStatus", "accessible")
        .with("healthStatus", "green")
}

fn cns_task(eng: &Engine, ctx: &Ctx, method: &'static str, vmodl: &str, work: impl FnOnce(&Engine) -> Value + Send + 'static) -> Reply {
    let root = eng.inv.read().root();
    let spec = TaskSpec { method, description_id: format!("CnsVolumeManager.{vmodl}"), entity: root, cancelable: false, queue: Some("cns".into()) };
    eng.run_task(ctx, spec, Box::new(move |eng, _| Ok(Some(work(eng)))))
}

fn labels_of(m: &Data) -> Vec<(String, String)> {
    m.get("entityMetadata")
        .and_then(Value::as_array)
        .unwrap_or(&[])
        .iter()
        .filter_map(Value::as_data)
        .flat_map(|e| e.get("labels").and_then(Value::as_array).map(<[Value]>::to_vec).unwrap_or_default())
        .filter_map(|kv| kv.as_data().map(|d| (d.str("key").unwrap_or("").to_string(), d.str("value").unwrap_or("").to_string())))
        .collect()
}

fn create_one(eng: &Engine, spec: &Data) -> Result<String, Fault> {
    let name = spec.str("name").unwrap_or("").to_string();
    if name.is_empty() {
        return Err(Fault::invalid_argument("createSpecs.name", "a volume needs a name"));
    }
    match spec.str("volumeType").unwrap_or("") {
        "BLOCK" => {}
        "FILE" => return Err(Fault::not_supported("FILE volumes (vSAN file shares) are not supported; create BLOCK volumes")),
        other => return Err(Fault::invalid_argument("createSpecs.volumeType", format!("volume type '{other}' is not BLOCK or FILE"))),
    }
    let mb = spec.get("backingObjectDetails").and_then(Value::as_data).and_then(|b| b.get("capacityInMb")).and_then(Value::as_i64).unwrap_or(0);
    if mb <= 0 {
        return Err(Fault::invalid_argument("createSpecs.backingObjectDetails.capacityInMb", format!("capacity {mb} MB is not positive")));
    }
    let ds = spec
        .get("datastores")
        .and_then(Value::as_array)
        .and_then(|a| a.first())
        .and_then(Value::as_moref)
        .map(|m| m.value.clone())
        .or_else(|| eng.inv.read().objects.values().filter(|e| e.moref.ty == types::Datastore).map(|e| e.moref.value.clone()).min())
        .ok_or_else(|| cns_fault("no datastore to place the volume on"))?;
    let root = datastore_path(&eng.inv.read(), &ds).ok_or_else(|| Fault::new(types::InvalidDatastore, format!("{ds} is not a datastore")))?;
    if let Some(existing) = spec.get("volumeId").and_then(Value::as_data).and_then(|v| v.str("id")) {
        if eng.disks.exists(existing) {
            return Err(Fault::new(types::CnsVolumeAlreadyExistsFault, format!("volume {existing} already exists")).with("reason", "volume already exists"));
        }
    }
    let id = spec.get("volumeId").and_then(Value::as_data).and_then(|v| v.str("id")).map(str::to_string).unwrap_or_else(|| uuid::Uuid::new_v4().to_string());
    let mut d = Disk::create(&fcd_dir(&root).join(&id), &id, &name, mb as u64 * MB, Provisioning::Thin, true).map_err(|e| cns_fault(&e.to_string()))?;
    let md = spec.get("metadata").map(|m| json::encode(m, TypeRef { ty: types::CnsVolumeMetadata, array: false }, storage_version()));
    d.meta.extra.insert("cns".into(), serde_json::json!({"type": "BLOCK", "metadata": md}));
    d.save_meta().map_err(|e| cns_fault(&e.to_string()))?;
    eng.disks.insert(&ds, d);
    Ok(id)
}

/// Merge an update into a volume's metadata: the container cluster is
/// replaced; an entity (by name and type) is replaced, added, or removed
/// when marked `delete`.
fn update_metadata(eng: &Engine, id: &str, update: Option<&Data>) -> Result<(), Fault> {
    let update = update.ok_or_else(|| Fault::invalid_argument("updateSpecs.metadata", "metadata is required"))?;
    let (_, r) = eng.disks.find(id).ok_or_else(|| Fault::plain_not_found(format!("volume {id} not found")))?;
    let mut d = r.lock();
    if !is_volume(&d) {
        return Err(Fault::plain_not_found(format!("volume {id} not found")));
    }
    let mut md = metadata(&d).unwrap_or_else(|| Data::new(types::CnsVolumeMetadata));
    if let Some(c) = update.get("containerCluster") {
        md.set("containerCluster", c.clone());
    }
    let key = |e: &Data| (e.str("entityName").unwrap_or("").to_string(), e.str("entityType").unwrap_or("").to_string());
    let mut entities: Vec<Value> = md.get("entityMetadata").and_then(Value::as_array).map(<[Value]>::to_vec).unwrap_or_default();
    for e in update.get("entityMetadata").and_then(Value::as_array).unwrap_or(&[]).iter().filter_map(Value::as_data) {
        entities.retain(|x| x.as_data().map(key) != Some(key(e)));
        if e.get("delete").and_then(Value::as_bool) != Some(true) {
            entities.push(Value::Data(Box::new(e.clone())));
        }
    }
    md.set("entityMetadata", Value::Array(types::CnsEntityMetadata, entities));
    let j = json::encode(&Value::Data(Box::new(md)), TypeRef { ty: types::CnsVolumeMetadata, array: false }, storage_version());
    d.meta.extra.get_mut("cns").expect("a volume")["metadata"] = j;
    d.save_meta().map_err(|e| cns_fault(&e.to_string()))
}

/// `SPACE_USAGE`: the allocated blocks of the backing disk, in MB.
fn sync_one(eng: &Engine, spec: &Data) -> Result<String, Fault> {
    let id = spec.get("volumeId").and_then(Value::as_data).and_then(|v| v.str("id")).unwrap_or("").to_string();
    if id.is_empty() || id.chars().any(|c| c.is_control() || c == '/') {
        return Err(Fault::invalid_argument("syncSpecs.volumeId", format!("'{id}' is not a volume id")));
    }
    let (_, r) = eng.disks.find(&id).ok_or_else(|| Fault::plain_not_found(format!("volume {id} not found")))?;
    let mut d = r.lock();
    if !is_volume(&d) {
        return Err(Fault::plain_not_found(format!("volume {id} not found (the disk is not a CNS volume)")));
    }
    let modes: Vec<String> = spec.get("syncMode").and_then(Value::as_array).map(|a| a.iter().filter_map(|v| v.as_str().map(str::to_string)).collect()).unwrap_or_default();
    // No mode: a full sync, which includes the space usage.
    if modes.is_empty() || modes.iter().any(|m| m == "SPACE_USAGE") {
        let used: u64 = d.allocated().map_err(|e| cns_fault(&e.to_string()))?.iter().map(|r| r.1).sum();
        let cns = d.meta.extra.get_mut("cns").expect("a volume");
        cns["usedCapacityInMb"] = (used.div_ceil(MB) as i64).into();
        d.save_meta().map_err(|e| cns_fault(&e.to_string()))?;
    }
    Ok(id)
}

pub fn invoke(eng: &Engine, ctx: &mut Ctx, _this: &MoRef, method: &str, args: Args) -> Option<Reply> {
    Some(match method {
        "CnsCreateVolume" => {
            let specs: Vec<Data> = args.get("createSpecs").and_then(Value::as_array).unwrap_or(&[]).iter().filter_map(Value::as_data).cloned().collect();
            if specs.is_empty() {
                return Some(Err(Fault::invalid_argument("createSpecs", "at least one create spec is needed")));
            }
            cns_task(eng, ctx, "CnsCreateVolume", "create", move |eng| {
                let results = specs
                    .iter()
                    .map(|s| match create_one(eng, s) {
                        Ok(id) => {
                            let mut d = Data::new(types::CnsVolumeCreateResult).with("volumeId", volume_id(&id));
                            d.set("name", s.str("name").unwrap_or("").to_string());
                            d.into()
                        }
                        Err(f) => result(types::CnsVolumeCreateResult, None, Some(f)),
                    })
                    .collect();
                eng.changed();
                batch(results)
            })
        }
        "CnsDeleteVolume" => {
            let vols = ids(args.get("volumeIds"));
            let delete_disk = args.get("deleteDisk").and_then(Value::as_bool).unwrap_or(false);
            cns_task(eng, ctx, "CnsDeleteVolume", "delete", move |eng| {
                let results = vols
                    .iter()
                    .map(|id| {
                        let r = (|| {
                            let (_, r) = eng.disks.find(id).ok_or_else(|| Fault::plain_not_found(format!("volume {id} not found")))?;
                            let mut d = r.lock();
                            if !is_volume(&d) {
                                return Err(Fault::plain_not_found(format!("volume {id} not found")));
                            }
                            if delete_disk {
                                let dir = d.dir().to_path_buf();
                                drop(d);
                                eng.disks.remove(id);
                                std::fs::remove_dir_all(&dir).map_err(|e| cns_fault(&e.to_string()))?;
                            } else {
                                // The volume goes; its disk stays a first-class disk.
                                d.meta.extra.remove("cns");
                                d.save_meta().map_err(|e| cns_fault(&e.to_string()))?;
                            }
                            Ok(())
                        })();
                        result(types::CnsVolumeOperationResult, Some(id), r.err())
                    })
                    .collect();
                eng.changed();
                batch(results)
            })
        }
        "CnsExtendVolume" => {
            let specs: Vec<(String, i64)> = args
                .get("extendSpecs")
                .and_then(Value::as_array)
                .unwrap_or(&[])
                .iter()
                .filter_map(Value::as_data)
                .map(|s| (s.get("volumeId").and_then(Value::as_data).and_then(|v| v.str("id")).unwrap_or("").to_string(), s.get("capacityInMb").and_then(Value::as_i64).unwrap_or(0)))
                .collect();
            cns_task(eng, ctx, "CnsExtendVolume", "extend", move |eng| {
                let results = specs
                    .iter()
                    .map(|(id, mb)| {
                        let r = (|| {
                            let (_, r) = eng.disks.find(id).ok_or_else(|| Fault::plain_not_found(format!("volume {id} not found")))?;
                            let mut d = r.lock();
                            if (*mb as u64) * MB < d.capacity() || *mb <= 0 {
                                return Err(Fault::invalid_argument("extendSpecs.capacityInMb", format!("{mb} MB is smaller than the volume's {} MB", d.capacity() / MB)));
                            }
                            d.extend(*mb as u64 * MB).map_err(|e| cns_fault(&e.to_string()))
                        })();
                        result(types::CnsVolumeOperationResult, Some(id), r.err())
                    })
                    .collect();
                batch(results)
            })
        }
        "CnsSyncVolume" => {
            let specs: Vec<Data> = args.get("syncSpecs").and_then(Value::as_array).unwrap_or(&[]).iter().filter_map(Value::as_data).cloned().collect();
            if specs.len() != 1 {
                return Some(Err(Fault::invalid_argument("syncSpecs", format!("exactly one sync spec is accepted, not {}", specs.len()))));
            }
            let spec = specs.into_iter().next().expect("one spec");
            let id = spec.get("volumeId").and_then(Value::as_data).and_then(|v| v.str("id")).unwrap_or("").to_string();
            if id.is_empty() {
                return Some(Err(Fault::invalid_argument("syncSpecs.volumeId", "volumeId is required")));
            }
            if !eng.disks.exists(&id) {
                return Some(Err(Fault::plain_not_found(format!("volume {id} not found"))));
            }
            cns_task(eng, ctx, "CnsSyncVolume", "syncVolume", move |eng| {
                let r = sync_one(eng, &spec);
                batch(vec![result(types::CnsVolumeOperationResult, Some(&id), r.err())])
            })
        }
        "CnsUpdateVolumeMetadata" => {
            let specs: Vec<Data> = args.get("updateSpecs").and_then(Value::as_array).unwrap_or(&[]).iter().filter_map(Value::as_data).cloned().collect();
            cns_task(eng, ctx, "CnsUpdateVolumeMetadata", "updateVolumeMetadata", move |eng| {
                let results = specs
                    .iter()
                    .map(|s| {
                        let id = s.get("volumeId").and_then(Value::as_data).and_then(|v| v.str("id")).unwrap_or("").to_string();
                        let r = update_metadata(eng, &id, s.get("metadata").and_then(Value::as_data));
                        result(types::CnsVolumeOperationResult, Some(&id), r.err())
                    })
                    .collect();
                eng.changed();
                batch(results)
            })
        }
        "CnsQueryVolume" => Ok(Some(query(eng, args.get("filter").and_then(Value::as_data)).into())),
        _ => return None,
    })
}

fn query(eng: &Engine, filter: Option<&Data>) -> Data {
    let f = filter.cloned().unwrap_or_else(|| Data::new(types::CnsQueryFilter));
    let want_ids = ids(f.get("volumeIds"));
    let names: Vec<String> = f.get("names").and_then(Value::as_array).map(|a| a.iter().filter_map(|v| v.as_str().map(str::to_string)).collect()).unwrap_or_default();
    let stores: Vec<String> = f.get("datastores").and_then(Value::as_array).map(|a| a.iter().filter_map(|v| v.as_moref().map(|m| m.value.clone())).collect()).unwrap_or_default();
    let clusters: Vec<String> = f.get("containerClusterIds").and_then(Value::as_array).map(|a| a.iter().filter_map(|v| v.as_str().map(str::to_string)).collect()).unwrap_or_default();
    let labels: Vec<(String, String)> = f
        .get("labels")
        .and_then(Value::as_array)
        .map(|a| a.iter().filter_map(Value::as_data).map(|d| (d.str("key").unwrap_or("").to_string(), d.str("value").unwrap_or("").to_string())).collect())
        .unwrap_or_default();
    let all_ds: Vec<String> = eng.inv.read().objects.values().filter(|e| e.moref.ty == types::Datastore).map(|e| e.moref.value.clone()).collect();
    let mut found: Vec<(String, Data)> = vec![];
    for ds in &all_ds {
        if !stores.is_empty() && !stores.contains(ds) {
            continue;
        }
        for id in eng.disks.list(ds) {
            if !want_ids.is_empty() && !want_ids.contains(&id) {
                continue;
            }
            let Ok(r) = eng.disks.get(&id, ds) else { continue };
            let Some(d) = r.try_lock_for(std::time::Duration::from_secs(2)) else { continue };
            if !is_volume(&d) || (!names.is_empty() && !names.contains(&d.meta.name)) {
                continue;
            }
            let md = metadata(&d);
            if !clusters.is_empty() {
                let cid = md.as_ref().and_then(|m| m.get("containerCluster")).and_then(Value::as_data).and_then(|c| c.str("clusterId")).unwrap_or("").to_string();
                if !clusters.contains(&cid) {
                    continue;
                }
            }
            if !labels.is_empty() {
                let have = md.as_ref().map(labels_of).unwrap_or_default();
                if !labels.iter().all(|l| have.contains(l)) {
                    continue;
                }
            }
            found.push((id.clone(), volume(eng, ds, &d)));
        }
    }
    found.sort_by(|a, b| a.0.cmp(&b.0));
    let total = found.len() as i64;
    let cursor = f.get("cursor").and_then(Value::as_data);
    let offset = cursor.and_then(|c| c.get("offset")).and_then(Value::as_i64).unwrap_or(0).max(0);
    let limit = cursor.and_then(|c| c.get("limit")).and_then(Value::as_i64).filter(|l| *l > 0).unwrap_or(100);
    let page: Vec<Value> = found.into_iter().skip(offset as usize).take(limit as usize).map(|(_, v)| v.into()).collect();
    let next = (offset + page.len() as i64).min(total);
    Data::new(types::CnsQueryResult)
        .with("volumes", Value::Array(types::CnsVolume, page))
        .with("cursor", Data::new(types::CnsCursor).with("offset", next).with("limit", limit).with("totalRecords", total))
}
