//! ComputeResource: the standalone-host container in a datacenter's host folder.
use super::refs;
use crate::engine::inventory::{Entity, Inventory};
use vmodl::{types, Data, Value};

pub fn property(inv: &Inventory, e: &Entity, name: &str) -> Option<Value> {
    let hosts: Vec<_> = e
        .children
        .iter()
        .filter_map(|c| inv.get(c))
        .filter(|c| c.moref.ty == types::HostSystem)
        .map(|c| c.moref.clone())
        .collect();
    match name {
        "host" => Some(refs(hosts)),
        "resourcePool" => e
            .children
            .iter()
            .filter_map(|c| inv.get(c))
            .find(|c| c.moref.ty == types::ResourcePool)
            .map(|c| Value::MoRef(c.moref.clone())),
        "datastore" => {
            let dc = inv.datacenter_of(&e.moref.value)?;
            Some(refs(inv.in_datacenter(&dc.moref.value, types::Datastore)))
        }
        "network" => Some(refs(vec![])),
        "summary" => {
            let hw = super::host_system::Hardware::get();
            let n = hosts.len() as i32;
            Some(
                Data::new(types::ComputeResourceSummary)
                    .with("totalCpu", hw.cpu_mhz * hw.cores as i32 * n)
                    .with("totalMemory", hw.memory * n as i64)
                    .with("numCpuCores", Value::Short(hw.cores * n as i16))
                    .with("numCpuThreads", Value::Short(hw.cores * n as i16))
                    .with("effectiveCpu", hw.cpu_mhz * hw.cores as i32 * n)
                    .with("effectiveMemory", hw.memory / (1024 * 1024) * n as i64)
                    .with("numHosts", n)
                    .with("numEffectiveHosts", n)
                    .with("overallStatus", Value::enum_value(types::ManagedEntityStatus, "green"))
                    .into(),
            )
        }
        "configurationEx" => {
            Some(Data::new(types::ComputeResourceConfigInfo).with("vmSwapPlacement", "vmDirectory").into())
        }
        _ => None,
    }
}
