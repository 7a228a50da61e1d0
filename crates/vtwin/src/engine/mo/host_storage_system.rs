//! HostStorageSystem (`storageSystem-<host>`): UnmountVmfsVolume and
//! MountVmfsVolume by volume uuid (an unmounted datastore keeps its files
//! but is inaccessible), and QueryUnresolvedVmfsVolume.
use crate::engine::{Ctx, Engine, Fault, Reply};
use crate::store::ObjectRecord;
use vmodl::types;
use vmodl::value::Args;

pub const PREFIX: &str = "storageSystem-";

fn set_mounted(eng: &Engine, uuid: &str, mounted: bool) -> Reply {
    {
        let mut inv = eng.inv.write();
        let e = inv
            .objects
            .values_mut()
            .find(|e| e.moref.ty == types::Datastore && e.attr("uuid") == Some(uuid))
            .ok_or_else(|| Fault::plain_not_found(format!("no VMFS volume with uuid {uuid}")))?;
        let now = e.attrs.get("mounted").and_then(serde_json::Value::as_bool).unwrap_or(true);
        if now == mounted {
            return Err(Fault::new(
                types::InvalidState,
                format!("volume {uuid} is already {}", if mounted { "mounted" } else { "unmounted" }),
            ));
        }
        let mut attrs = e.attrs.clone();
        attrs["mounted"] = mounted.into();
        // Written under the inventory's lock, as everywhere.
        eng.store.put_objects(&[ObjectRecord {
            moid: e.moref.value.clone(),
            ty: "Datastore".into(),
            name: e.name.clone(),
            parent: e.parent.clone(),
            attrs: attrs.clone(),
        }])?;
        e.attrs = attrs;
    }
    eng.changed();
    Ok(None)
}

pub fn invoke(eng: &Engine, _ctx: &mut Ctx, _this: &vmodl::MoRef, method: &str, args: Args) -> Option<Reply> {
    let uuid = args.str("vmfsUuid").unwrap_or("").to_string();
    Some(match method {
        "UnmountVmfsVolume" => set_mounted(eng, &uuid, false),
        "MountVmfsVolume" => set_mounted(eng, &uuid, true),
        "QueryUnresolvedVmfsVolume" => Ok(Some(super::host_datastore_system::unresolved(eng))),
        _ => return None,
    })
}
