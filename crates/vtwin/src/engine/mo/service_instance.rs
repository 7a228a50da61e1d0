//! ServiceInstance: the root of the API, ServiceContent and the clock.
use crate::engine::{Ctx, Engine, Reply};
use vmodl::value::Args;
use vmodl::{types, Data, MoRef, Value};

pub const API_VERSION: &str = "9.1.0.0";

pub fn about(eng: &Engine, api_type: &str) -> Data {
    let (name, full, product) = if api_type == "HostAgent" {
        ("VMware ESXi", "VMware ESXi 9.1.0 build-24000000 (vtwin)", "embeddedEsx")
    } else {
        ("VMware vCenter Server", "VMware vCenter Server 9.1.0 build-24000000 (vtwin)", "vpx")
    };
    Data::new(types::AboutInfo)
        .with("name", name)
        .with("fullName", full)
        .with("vendor", "VMware, Inc.")
        .with("version", "9.1.0")
        .with("build", "24000000")
        .with("localeVersion", "INTL")
        .with("localeBuild", "000")
        .with("osType", "linux-x64")
        .with("productLineId", product)
        .with("apiType", api_type)
        .with("apiVersion", API_VERSION)
        .with("instanceUuid", eng.instance_uuid.clone())
        .with("licenseProductName", "VMware VirtualCenter Server")
        .with("licenseProductVersion", "9.0")
}

pub fn content(eng: &Engine) -> Data {
    let r = |t, v: &str| Value::MoRef(MoRef::new(t, v));
    Data::new(types::ServiceContent)
        .with("rootFolder", eng.inv.read().root())
        .with("propertyCollector", r(types::PropertyCollector, "propertyCollector"))
        .with("viewManager", r(types::ViewManager, "ViewManager"))
        .with("about", about(eng, "VirtualCenter"))
        .with("sessionManager", r(types::SessionManager, "SessionManager"))
        .with("authorizationManager", r(types::AuthorizationManager, "AuthorizationManager"))
        .with("searchIndex", r(types::SearchIndex, "SearchIndex"))
        .with("taskManager", r(types::TaskManager, "TaskManager"))
        .with("extensionManager", r(types::ExtensionManager, "ExtensionManager"))
        .with("eventManager", r(types::EventManager, "EventManager"))
        .with("vStorageObjectManager", r(types::VcenterVStorageObjectManager, "VStorageObjectManager"))
}

pub fn property(eng: &Engine, _ctx: &Ctx, name: &str) -> Option<Value> {
    Some(match name {
        "content" => content(eng).into(),
        "serverClock" => Value::DateTime(chrono::Utc::now()),
        "capability" => Data::new(types::Capability)
            .with("provisioningSupported", true)
            .with("multiHostSupported", true)
            .with("userShellAccessSupported", false)
            .into(),
        _ => return None,
    })
}

pub fn invoke(eng: &Engine, _ctx: &mut Ctx, _this: &MoRef, method: &str, _args: Args) -> Option<Reply> {
    Some(match method {
        "RetrieveServiceContent" => Ok(Some(content(eng).into())),
        "CurrentTime" => Ok(Some(Value::DateTime(chrono::Utc::now()))),
        _ => return None,
    })
}
