//! HostSystem: a host that mounts every datastore of its datacenter. Its
//! hardware figures are those of the machine vtwin runs on.
use super::refs;
use crate::engine::inventory::{Entity, Inventory};
use crate::engine::Engine;
use vmodl::{types, Data, MoRef, Value};

pub struct Hardware {
    pub memory: i64,
    pub cores: i16,
    pub cpu_mhz: i32,
    pub cpu_model: String,
}

impl Hardware {
    /// The machine's figures, read once.
    pub fn get() -> &'static Hardware {
        static HW: std::sync::OnceLock<Hardware> = std::sync::OnceLock::new();
        HW.get_or_init(Hardware::read)
    }

    fn read() -> Hardware {
        let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
        let memory = meminfo
            .lines()
            .find(|l| l.starts_with("MemTotal:"))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|k| k.parse::<i64>().ok())
            .map_or(0, |k| k * 1024);
        let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
        let field = |name: &str| {
            cpuinfo
                .lines()
                .find(|l| l.starts_with(name))
                .and_then(|l| l.split_once(':'))
                .map(|(_, v)| v.trim().to_string())
        };
        Hardware {
            memory,
            cores: std::thread::available_parallelism().map_or(1, |n| n.get() as i16),
            cpu_mhz: field("cpu MHz").and_then(|v| v.parse::<f64>().ok()).map_or(2000, |f| f as i32),
            cpu_model: field("model name").unwrap_or_else(|| "unknown".into()),
        }
    }
}

pub fn property(eng: &Engine, inv: &Inventory, e: &Entity, name: &str) -> Option<Value> {
    let dc = inv.datacenter_of(&e.moref.value);
    Some(match name {
        "datastore" => refs(inv.in_datacenter(&dc?.moref.value, types::Datastore)),
        "vm" | "network" => refs(vec![]),
        "runtime" => runtime().into(),
        "summary" => {
            let hw = Hardware::get();
            Data::new(types::HostListSummary)
                .with("host", e.moref.clone())
                .with("hardware", hardware_summary(hw, e))
                .with("runtime", runtime())
                .with(
                    "config",
                    Data::new(types::HostConfigSummary)
                        .with("name", e.name.clone())
                        .with("port", 443)
                        .with("vmotionEnabled", false)
                        .with("faultToleranceEnabled", false)
                        .with("product", super::service_instance::about(eng, "HostAgent")),
                )
                .with("quickStats", Data::new(types::HostListSummaryQuickStats))
                .with("overallStatus", Value::enum_value(types::ManagedEntityStatus, "green"))
                .with("rebootRequired", false)
                .into()
        }
        "licensableResource" => {
            let hw = Hardware::get();
            let kv = |k: &str, v: Value| Value::from(Data::new(types::KeyAnyValue).with("key", k).with("value", v));
            Data::new(types::HostLicensableResourceInfo)
                .with(
                    "resource",
                    Value::Array(
                        types::KeyAnyValue,
                        vec![
                            kv("numCpuPackages", Value::Int(1)),
                            kv("numCpuCores", Value::Int(hw.cores as i32)),
                            kv("memorySize", Value::Long(hw.memory)),
                        ],
                    ),
                )
                .into()
        }
        "configManager" => Data::new(types::HostConfigManager)
            .with(
                "datastoreSystem",
                MoRef::new(
                    types::HostDatastoreSystem,
                    format!("{}{}", super::host_datastore_system::PREFIX, e.moref.value),
                ),
            )
            .with(
                "storageSystem",
                MoRef::new(
                    types::HostStorageSystem,
                    format!("{}{}", super::host_storage_system::PREFIX, e.moref.value),
                ),
            )
            .into(),
        _ => return None,
    })
}

fn runtime() -> Data {
    Data::new(types::HostRuntimeInfo)
        .with("connectionState", Value::enum_value(types::HostSystemConnectionState, "connected"))
        .with("powerState", Value::enum_value(types::HostSystemPowerState, "poweredOn"))
        .with("inMaintenanceMode", false)
}

fn hardware_summary(hw: &Hardware, e: &Entity) -> Data {
    Data::new(types::HostHardwareSummary)
        .with("vendor", "vtwin")
        .with("model", "vtwin virtual host")
        .with("uuid", e.attr("uuid").unwrap_or_default().to_string())
        .with("memorySize", hw.memory)
        .with("cpuModel", hw.cpu_model.clone())
        .with("cpuMhz", hw.cpu_mhz)
        .with("numCpuPkgs", Value::Short(1))
        .with("numCpuCores", Value::Short(hw.cores))
        .with("numCpuThreads", Value::Short(hw.cores))
        .with("numNics", 1)
        .with("numHBAs", 1)
}
