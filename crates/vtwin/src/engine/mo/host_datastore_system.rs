//! HostDatastoreSystem (`datastoreSystem-<host>`): volumes presented as
//! copies of a datastore (a snapshot LUN, a replica) are listed by
//! QueryUnresolvedVmfsVolumes and mounted under a new signature by
//! ResignatureUnresolvedVmfsVolume_Task: a new datastore with a new volume
//! uuid, so a new mount path, whose files still name the original's until
//! UpdateVirtualMachineFiles_Task rewrites them. A copy is a directory
//! under `DIR/vmfs/unresolved/` (made by `POST /admin/datastores/{moId}/copy`).
use crate::engine::inventory::{link_by_name, mount_dir, vmfs_uuid, Entity};
use crate::engine::runner::TaskSpec;
use crate::engine::storage::datastores::{copies, device_path, MARKER};
use crate::engine::{Ctx, Engine, Fault, Reply};
use crate::store::ObjectRecord;
use std::path::Path;
use vmodl::value::Args;
use vmodl::{types, Data, MoRef, Value};

pub const PREFIX: &str = "datastoreSystem-";

fn volume(dir: &Path, label: &str, uuid: &str, others: usize) -> Data {
    let blocks = std::fs::read_dir(dir).map_or(0, std::iter::Iterator::count) as i32 + 1;
    let extent = Data::new(types::HostUnresolvedVmfsExtent)
        .with(
            "device",
            Data::new(types::HostScsiDiskPartition)
                .with("diskName", device_path(dir).trim_end_matches(":1").rsplit('/').next().unwrap_or("").to_string())
                .with("partition", 1),
        )
        .with("devicePath", device_path(dir))
        .with("vmfsUuid", uuid.to_string())
        .with("isHeadExtent", true)
        .with("ordinal", 0)
        .with("startBlock", 0)
        .with("endBlock", blocks)
        .with("reason", "uuidConflict");
    Data::new(types::HostUnresolvedVmfsVolume)
        .with("extent", Value::Array(types::HostUnresolvedVmfsExtent, vec![extent.into()]))
        .with("vmfsLabel", label.to_string())
        .with("vmfsUuid", uuid.to_string())
        .with("totalBlocks", blocks)
        .with(
            "resolveStatus",
            Data::new(types::HostUnresolvedVmfsVolumeResolveStatus)
                .with("resolvable", true)
                .with("incompleteExtents", false)
                .with("multipleCopies", others > 1),
        )
}

pub fn unresolved(eng: &Engine) -> Value {
    let all = copies(&eng.data_dir);
    let list = all
        .iter()
        .map(|(dir, label, uuid)| volume(dir, label, uuid, all.iter().filter(|c| &c.2 == uuid).count()).into())
        .collect();
    Value::Array(types::HostUnresolvedVmfsVolume, list)
}

/// The host a system object belongs to.
pub fn host_of(this: &MoRef) -> &str {
    this.value.split_once('-').map_or("", |(_, h)| h)
}

pub fn invoke(eng: &Engine, ctx: &mut Ctx, this: &MoRef, method: &str, args: Args) -> Option<Reply> {
    Some(match method {
        "QueryUnresolvedVmfsVolumes" => Ok(Some(unresolved(eng))),
        "ResignatureUnresolvedVmfsVolume_Task" => (|| {
            let spec = args
                .get("resolutionSpec")
                .and_then(Value::as_data)
                .ok_or_else(|| Fault::invalid_argument("resolutionSpec", "resolutionSpec is required"))?;
            let paths: Vec<String> = spec
                .get("extentDevicePath")
                .and_then(Value::as_array)
                .unwrap_or(&[])
                .iter()
                .filter_map(|v| v.as_str().map(str::to_string))
                .collect();
            let (dir, label, _) = copies(&eng.data_dir)
                .into_iter()
                .find(|(d, _, _)| paths.contains(&device_path(d)))
                .ok_or_else(|| {
                Fault::invalid_argument(
                    "resolutionSpec.extentDevicePath",
                    format!("no unresolved volume has the extent {paths:?}"),
                )
            })?;
            let host = MoRef::new(types::HostSystem, host_of(this));
            let spec = TaskSpec::on(
                "ResignatureUnresolvedVmfsVolume_Task",
                "HostDatastoreSystem.resignatureUnresolvedVmfsVolume",
                host.clone(),
            );
            eng.run_task(
                ctx,
                spec,
                Box::new(move |eng, _| {
                    let uuid = vmfs_uuid();
                    let new = mount_dir(&eng.data_dir, &uuid);
                    let io = |e: std::io::Error| Fault::system_error(format!("resignature: {e}"));
                    std::fs::create_dir_all(new.parent().expect("volumes")).map_err(io)?;
                    std::fs::rename(&dir, &new).map_err(io)?;
                    let _ = std::fs::remove_file(new.join(MARKER));
                    let name = format!("snap-{}-{label}", &uuid[..8]);
                    link_by_name(&eng.data_dir, &name, &uuid).map_err(io)?;
                    let mut inv = eng.inv.write();
                    let folder = inv
                        .datacenter_of(&host.value)
                        .and_then(|dc| dc.attr("datastoreFolder"))
                        .map(str::to_string)
                        .ok_or_else(|| Fault::system_error("the host has no datacenter"))?;
                    let moid = inv.alloc("datastore");
                    let attrs = serde_json::json!({"uuid": uuid, "path": new.to_string_lossy(), "url": format!("ds:///vmfs/volumes/{uuid}/")});
                    eng.store.put_objects(&[ObjectRecord { moid: moid.clone(), ty: "Datastore".into(), name: name.clone(), parent: Some(folder.clone()), attrs: attrs.clone() }])?;
                    inv.insert(Entity { moref: MoRef::new(types::Datastore, moid.clone()), name, parent: Some(folder), children: vec![], attrs });
                    drop(inv);
                    eng.disks.scan(&moid, &new);
                    eng.changed();
                    Ok(Some(Data::new(types::HostResignatureRescanResult).with("result", MoRef::new(types::Datastore, moid)).into()))
                }),
            )
        })(),
        _ => return None,
    })
}
