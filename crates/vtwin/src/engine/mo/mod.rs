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

use super::inventory::{Entity, Inventory};
use super::{Ctx, Engine, Fault, Reply};
use vmodl::value::Args;
use vmodl::{types, MethodDef, MoRef, TypeId, Value};

/// A managed object file's method entry point: `None` for a method it does
/// not implement.
type Invoke = fn(&Engine, &mut Ctx, &MoRef, &str, Args) -> Option<Reply>;

/// How a type's top-level properties are read.
#[derive(Clone, Copy)]
enum Props {
    /// An object outside the inventory: its file answers every property.
    Object(fn(&Engine, &Ctx, &MoRef, &str) -> Option<Value>),
    /// An inventory entity: its file's own properties, under the inventory's
    /// read lock, and ManagedEntity's for the rest. A type that is not an
    /// entity and has no entry of its own is looked up in the inventory too
    /// (and is not found there).
    Entity(fn(&Engine, &Inventory, &Entity, &str) -> Option<Value>),
}

const ENTITY_ONLY: Props = Props::Entity(|_, _, _, _| None);

/// One managed object type this server implements.
struct MoType {
    ty: TypeId,
    /// Also serves the registry's subtypes of `ty` that have no entry of
    /// their own (ClusterComputeResource is a ComputeResource).
    subtypes: bool,
    invoke: Option<Invoke>,
    props: Props,
    /// Whether an object of this type outside the inventory has this id
    /// (tasks, collectors, views, snapshots, per-host systems). Inventory
    /// entities and the service instance's singletons are found without it.
    find: Option<fn(&Engine, &str) -> bool>,
    /// Its methods do file or disk I/O, or wait for a busy disk: they run
    /// off the async workers (see [`blocks`]).
    blocking: bool,
}

impl MoType {
    const fn new(ty: TypeId) -> MoType {
        MoType { ty, subtypes: false, invoke: None, props: ENTITY_ONLY, find: None, blocking: false }
    }
    const fn invoke(mut self, f: Invoke) -> MoType {
        self.invoke = Some(f);
        self
    }
    const fn props(mut self, p: Props) -> MoType {
        self.props = p;
        self
    }
    const fn find(mut self, f: fn(&Engine, &str) -> bool) -> MoType {
        self.find = Some(f);
        self
    }
    const fn blocking(mut self) -> MoType {
        self.blocking = true;
        self
    }
    const fn with_subtypes(mut self) -> MoType {
        self.subtypes = true;
        self
    }
}

/// The dispatch table: a new managed type is one entry here and one file.
static TYPES: &[MoType] = &[
    MoType::new(types::ServiceInstance)
        .invoke(service_instance::invoke)
        .props(Props::Object(|e, c, _, n| service_instance::property(e, c, n))),
    MoType::new(types::SessionManager)
        .invoke(session_manager::invoke)
        .props(Props::Object(|e, c, _, n| session_manager::property(e, c, n))),
    MoType::new(types::AuthorizationManager)
        .invoke(authorization_manager::invoke)
        .props(Props::Object(|e, c, _, n| authorization_manager::property(e, c, n))),
    MoType::new(types::PropertyCollector)
        .invoke(property_collector::invoke)
        .props(Props::Object(property_collector::property))
        .find(|e, id| e.pc.lock().object_type(id) == Some(types::PropertyCollector)),
    MoType::new(types::PropertyFilter)
        .invoke(property_filter::invoke)
        .props(Props::Object(|e, _, o, n| property_filter::property(e, o, n)))
        .find(|e, id| e.pc.lock().object_type(id) == Some(types::PropertyFilter)),
    MoType::new(types::ViewManager)
        .invoke(view_manager::invoke)
        .props(Props::Object(|e, c, _, n| view_manager::property(e, c, n))),
    MoType::new(types::ContainerView)
        .invoke(container_view::invoke)
        .props(Props::Object(container_view::property))
        .find(|e, id| e.views.lock().get(id).is_some_and(|v| v.ty() == types::ContainerView)),
    MoType::new(types::ListView)
        .invoke(list_view::invoke)
        .props(Props::Object(list_view::property))
        .find(|e, id| e.views.lock().get(id).is_some_and(|v| v.ty() == types::ListView)),
    MoType::new(types::SearchIndex).invoke(search_index::invoke).props(Props::Object(|_, _, _, _| None)),
    MoType::new(types::Task)
        .invoke(task::invoke)
        .props(Props::Object(|e, _, o, n| task::property(e, o, n)))
        .find(|e, id| e.tasks.exists(id)),
    MoType::new(types::TaskManager)
        .invoke(task_manager::invoke)
        .props(Props::Object(|e, c, _, n| task_manager::property(e, c, n))),
    MoType::new(types::ExtensionManager)
        .invoke(extension_manager::invoke)
        .props(Props::Object(|e, _, _, n| extension_manager::property(e, n))),
    MoType::new(types::EventManager)
        .invoke(event_manager::invoke)
        .props(Props::Object(|e, c, _, n| event_manager::property(e, c, n))),
    MoType::new(types::TaskHistoryCollector)
        .invoke(task_history_collector::invoke)
        .props(Props::Object(task_history_collector::property))
        .find(|e, id| e.history.lock().get(id).is_some_and(|c| c.ty == types::TaskHistoryCollector)),
    MoType::new(types::EventHistoryCollector)
        .invoke(event_history_collector::invoke)
        .props(Props::Object(event_history_collector::property))
        .find(|e, id| e.history.lock().get(id).is_some_and(|c| c.ty == types::EventHistoryCollector)),
    MoType::new(types::VirtualMachineSnapshot)
        .blocking()
        .invoke(virtual_machine_snapshot::invoke)
        .props(Props::Object(|e, _, o, n| virtual_machine_snapshot::property(&e.inv.read(), o, n)))
        .find(|e, id| {
            id.starts_with(virtual_machine_snapshot::PREFIX) && virtual_machine_snapshot::exists(&e.inv.read(), id)
        }),
    // Per-host system objects: `datastoreSystem-<host>`, `storageSystem-<host>`.
    MoType::new(types::HostDatastoreSystem)
        .blocking()
        .invoke(host_datastore_system::invoke)
        .find(|e, id| host_of(e, id, host_datastore_system::PREFIX)),
    MoType::new(types::HostStorageSystem)
        .blocking()
        .invoke(host_storage_system::invoke)
        .find(|e, id| host_of(e, id, host_storage_system::PREFIX)),
    MoType::new(types::CnsVolumeManager).blocking().invoke(cns_volume_manager::invoke),
    MoType::new(types::VcenterVStorageObjectManager).blocking().invoke(vstorage_object_manager::invoke),
    // Inventory entities.
    MoType::new(types::Folder)
        .blocking()
        .invoke(folder::invoke)
        .props(Props::Entity(|_, i, e, n| folder::property(i, e, n))),
    MoType::new(types::Datacenter).props(Props::Entity(|_, i, e, n| datacenter::property(i, e, n))),
    MoType::new(types::ComputeResource)
        .with_subtypes()
        .props(Props::Entity(|_, i, e, n| compute_resource::property(i, e, n))),
    MoType::new(types::HostSystem).props(Props::Entity(host_system::property)),
    MoType::new(types::Datastore)
        .blocking()
        .invoke(datastore::invoke)
        .props(Props::Entity(|_, i, e, n| datastore::property(i, e, n))),
    MoType::new(types::VirtualMachine)
        .blocking()
        .invoke(virtual_machine::invoke)
        .props(Props::Entity(virtual_machine::property)),
    MoType::new(types::ResourcePool).props(Props::Entity(|_, i, e, n| resource_pool::property(i, e, n))),
];

fn host_of(eng: &Engine, moid: &str, prefix: &str) -> bool {
    moid.strip_prefix(prefix).is_some_and(|h| eng.inv.read().get(h).is_some_and(|e| e.moref.ty == types::HostSystem))
}

/// The table's entry for `t`: its own, or the nearest one that serves its
/// subtypes.
fn entry(t: TypeId) -> Option<&'static MoType> {
    TYPES.iter().find(|d| d.ty == t).or_else(|| TYPES.iter().find(|d| d.subtypes && t.is_a(d.ty)))
}

/// The type of an object outside the inventory with id `moid`, if there is
/// one (asked after the singletons and the inventory).
pub fn find_type(eng: &Engine, moid: &str) -> Option<TypeId> {
    TYPES.iter().find(|d| d.find.is_some_and(|f| f(eng, moid))).map(|d| d.ty)
}

/// Whether method `m` on `this` may block the thread it runs on (file or
/// disk I/O, a disk's flock, a wait of up to 2 s for a busy disk): every
/// `_Task` method, the entity methods (Destroy_Task deletes files), and
/// every method of a type the table marks. Everything else stays on the
/// async worker, store writes of tasks, extensions and permissions
/// included: moving each such call to another thread cost a third of the
/// extension-task throughput at 64 clients and doubled the memory per kept
/// task in `scripts/bench.sh --only tasks`, for SQLite writes that take well
/// under a millisecond.
pub fn blocks(this: &MoRef, m: &MethodDef) -> bool {
    m.name.ends_with("_Task")
        || (this.ty.is_a(types::ManagedEntity) && vmodl::find_method(types::ManagedEntity, m.name).is_some())
        || entry(this.ty).is_some_and(|d| d.blocking)
}

/// Whether reading a property of `obj` may block (the same table marks).
pub fn blocks_reading(obj: &MoRef) -> bool {
    entry(obj.ty).is_some_and(|d| d.blocking)
}

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
    } else {
        entry(t).and_then(|d| d.invoke).and_then(|f| f(eng, ctx, this, m.name, args))
    };
    handled.unwrap_or_else(|| {
        Err(Fault::new(types::NotImplemented, format!("{}.{} is not implemented by this server yet", t.name(), m.name)))
    })
}

/// The value of top-level property `name` of `obj`; None when unset.
pub fn property(eng: &Engine, ctx: &Ctx, obj: &MoRef, name: &str) -> Reply {
    match entry(obj.ty).map_or(ENTITY_ONLY, |d| d.props) {
        Props::Object(f) => Ok(f(eng, ctx, obj, name)),
        Props::Entity(own) => {
            let inv = eng.inv.read();
            let e = inv.get(&obj.value).ok_or_else(|| Fault::not_found(obj))?;
            Ok(own(eng, &inv, e, name).or_else(|| managed_entity::property(eng, ctx, &inv, e, name)))
        }
    }
}

/// An array of references.
pub fn refs(items: impl IntoIterator<Item = MoRef>) -> Value {
    Value::Array(types::ManagedObjectReference, items.into_iter().map(Value::MoRef).collect())
}
