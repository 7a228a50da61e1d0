//! Managed object behaviour, one file per managed object type.
pub mod authorization_manager;
pub mod cns_volume_manager;
pub mod compute_resource;
pub mod container_view;
pub mod datacenter;
pub mod datastore;
pub mod event_history_collector;
pub mod event_manager;
pub mod extension_manager;
pub mod folder;
pub mod history_collector;
pub mod host_datastore_system;
pub mod host_storage_system;
pub mod host_system;
pub mod list_view;
pub mod managed_entity;
pub mod property_collector;
pub mod property_filter;
pub mod resource_pool;
pub mod search_index;
pub mod service_instance;
pub mod session_manager;
pub mod task;
pub mod task_history_collector;
pub mod task_manager;
pub mod view_manager;
pub mod virtual_machine;
pub mod virtual_machine_snapshot;
pub mod vstorage_object_manager;

use super::{Ctx, Engine, Fault, Reply};
use vmodl::value::Args;
use vmodl::{types, MethodDef, MoRef, Value};

/// Run method `m` on the resolved object `this`.
pub fn invoke(eng: &Engine, ctx: &mut Ctx, this: &MoRef, m: &'static MethodDef, args: Args) -> Reply {
    if m.name == "Fetch" {
        let prop = args.str("prop").ok_or_else(|| Fault::invalid_argument("prop", "prop is required"))?;
        return eng.read_property(ctx, this, prop);
    }
    let t = this.ty;
    // Methods declared on ManagedEntity itself, for every entity type.
    let entity_method = t.is_a(types::ManagedEntity) && vmodl::find_method(types::ManagedEntity, m.name).is_some();
    let handled = if entity_method {
        managed_entity::invoke(eng, ctx, this, m.name, args)
    } else if t == types::ServiceInstance {
        service_instance::invoke(eng, ctx, this, m.name, args)
    } else if t == types::SessionManager {
        session_manager::invoke(eng, ctx, this, m.name, args)
    } else if t == types::AuthorizationManager {
        authorization_manager::invoke(eng, ctx, this, m.name, args)
    } else if t == types::PropertyCollector {
        property_collector::invoke(eng, ctx, this, m.name, args)
    } else if t == types::ViewManager {
        view_manager::invoke(eng, ctx, this, m.name, args)
    } else if t == types::ContainerView {
        container_view::invoke(eng, ctx, this, m.name, args)
    } else if t == types::ListView {
        list_view::invoke(eng, ctx, this, m.name, args)
    } else if t == types::SearchIndex {
        search_index::invoke(eng, ctx, this, m.name, args)
    } else if t == types::Folder {
        folder::invoke(eng, ctx, this, m.name, args)
    } else if t == types::PropertyFilter {
        property_filter::invoke(eng, ctx, this, m.name, args)
    } else if t == types::Task {
        task::invoke(eng, ctx, this, m.name, args)
    } else if t == types::TaskManager {
        task_manager::invoke(eng, ctx, this, m.name, args)
    } else if t == types::ExtensionManager {
        extension_manager::invoke(eng, ctx, this, m.name, args)
    } else if t == types::EventManager {
        event_manager::invoke(eng, ctx, this, m.name, args)
    } else if t == types::Datastore {
        datastore::invoke(eng, ctx, this, m.name, args)
    } else if t == types::VirtualMachine {
        virtual_machine::invoke(eng, ctx, this, m.name, args)
    } else if t == types::VirtualMachineSnapshot {
        virtual_machine_snapshot::invoke(eng, ctx, this, m.name, args)
    } else if t == types::HostDatastoreSystem {
        host_datastore_system::invoke(eng, ctx, this, m.name, args)
    } else if t == types::HostStorageSystem {
        host_storage_system::invoke(eng, ctx, this, m.name, args)
    } else if t == types::CnsVolumeManager {
        cns_volume_manager::invoke(eng, ctx, this, m.name, args)
    } else if t == types::VcenterVStorageObjectManager {
        vstorage_object_manager::invoke(eng, ctx, this, m.name, args)
    } else if t == types::TaskHistoryCollector {
        task_history_collector::invoke(eng, ctx, this, m.name, args)
    } else if t == types::EventHistoryCollector {
        event_history_collector::invoke(eng, ctx, this, m.name, args)
    } else {
        None
    };
    match handled {
        Some(r) => r,
        None => Err(Fault::new(
            types::NotImplemented,
            format!("{}.{} is not implemented by this server yet", t.name(), m.name),
        )),
    }
}

/// The value of top-level property `name` of `obj`; None when unset.
pub fn property(eng: &Engine, ctx: &Ctx, obj: &MoRef, name: &str) -> Reply {
    let t = obj.ty;
    let v = if t == types::ServiceInstance {
        service_instance::property(eng, ctx, name)
    } else if t == types::SessionManager {
        session_manager::property(eng, ctx, name)
    } else if t == types::AuthorizationManager {
        authorization_manager::property(eng, ctx, name)
    } else if t == types::PropertyCollector {
        property_collector::property(eng, ctx, obj, name)
    } else if t == types::ViewManager {
        view_manager::property(eng, ctx, name)
    } else if t == types::ContainerView {
        container_view::property(eng, ctx, obj, name)
    } else if t == types::ListView {
        list_view::property(eng, ctx, obj, name)
    } else if t == types::SearchIndex {
        None
    } else if t == types::PropertyFilter {
        property_filter::property(eng, obj, name)
    } else if t == types::Task {
        task::property(eng, obj, name)
    } else if t == types::TaskManager {
        task_manager::property(eng, ctx, name)
    } else if t == types::ExtensionManager {
        extension_manager::property(eng, name)
    } else if t == types::EventManager {
        event_manager::property(eng, ctx, name)
    } else if t == types::VirtualMachineSnapshot {
        virtual_machine_snapshot::property(&eng.inv.read(), obj, name)
    } else if t == types::TaskHistoryCollector {
        task_history_collector::property(eng, ctx, obj, name)
    } else if t == types::EventHistoryCollector {
        event_history_collector::property(eng, ctx, obj, name)
    } else {
        let inv = eng.inv.read();
        let e = inv.get(&obj.value).ok_or_else(|| Fault::not_found(obj))?;
        let own = if t == types::Folder {
            folder::property(&inv, e, name)
        } else if t == types::Datacenter {
            datacenter::property(&inv, e, name)
        } else if t.is_a(types::ComputeResource) {
            compute_resource::property(&inv, e, name)
        } else if t == types::HostSystem {
            host_system::property(eng, &inv, e, name)
        } else if t == types::Datastore {
            datastore::property(&inv, e, name)
        } else if t == types::VirtualMachine {
            virtual_machine::property(eng, &inv, e, name)
        } else if t == types::ResourcePool {
            resource_pool::property(&inv, e, name)
        } else {
            None
        };
        match own {
            Some(v) => Some(v),
            None => managed_entity::property(eng, ctx, &inv, e, name),
        }
    };
    Ok(v)
}

/// An array of references.
pub fn refs(items: impl IntoIterator<Item = MoRef>) -> Value {
    Value::Array(types::ManagedObjectReference, items.into_iter().map(Value::MoRef).collect())
}
