//! ResourcePool: the root pool of each compute resource, where VMs run.
use crate::engine::inventory::{Entity, Inventory};
use vmodl::{types, Value};

pub fn property(inv: &Inventory, e: &Entity, name: &str) -> Option<Value> {
    match name {
        "owner" => inv.get(e.parent.as_deref()?).map(|p| Value::MoRef(p.moref.clone())),
        "vm" => Some(super::refs(
            inv.objects
                .values()
                .filter(|v| v.moref.ty == types::VirtualMachine && v.attr("pool") == Some(e.moref.value.as_str()))
                .map(|v| v.moref.clone()),
        )),
        "resourcePool" => Some(super::refs(vec![])),
        _ => None,
    }
}
