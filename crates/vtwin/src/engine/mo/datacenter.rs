//! Datacenter: its four folders and the datastores inside it.
use super::refs;
use crate::engine::inventory::{Entity, Inventory};
use vmodl::{types, Data, MoRef, Value};

pub fn property(inv: &Inventory, e: &Entity, name: &str) -> Option<Value> {
    match name {
        "vmFolder" | "hostFolder" | "datastoreFolder" | "networkFolder" => {
            Some(Value::MoRef(MoRef::new(types::Folder, e.attr(name)?)))
        }
        "datastore" => Some(refs(inv.in_datacenter(&e.moref.value, types::Datastore))),
        "network" => Some(refs(inv.in_datacenter(&e.moref.value, types::Network))),
        "configuration" => Some(Data::new(types::DatacenterConfigInfo).into()),
        _ => None,
    }
}
