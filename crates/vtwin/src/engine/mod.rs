//! The engine: inventory, sessions, authorization and the managed objects'
//! behaviour. No HTTP and no wire format in here: the wire layers decode a
//! request into (object, method, args), call `invoke`, and encode the result.
pub mod auth;
pub mod control;
pub mod disks;
pub mod fault;
pub mod inventory;
pub mod kept;
pub mod mo;
pub mod node;
pub mod paths;
pub mod runner;
pub mod storage;
pub mod tasks;
pub mod vcd;
pub mod vm;

use crate::store::{PermissionRecord, Store, UserRecord};
use auth::session::{Session, Sessions, ADMIN_USER};
use auth::{authz, privileges, session};
pub use fault::Fault;
use inventory::{Inventory, Shape, ROOT_FOLDER};
use parking_lot::{Mutex, RwLock};
use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::Arc;
use vmodl::value::Args;
use vmodl::{types, MethodDef, MoRef, TypeId, Value, VersionId};

/// Per-call context: who is calling, with which API release.
pub struct Ctx {
    pub session: Option<Arc<Session>>,
    pub version: VersionId,
    pub ip: String,
    pub user_agent: String,
    /// Set by Login so the wire layer can hand the client its token.
    pub new_session: Option<Arc<Session>>,
}

impl Ctx {
    pub fn new(version: VersionId) -> Ctx {
        Ctx { session: None, version, ip: String::new(), user_agent: String::new(), new_session: None }
    }
    pub fn session(&self) -> Result<&Arc<Session>, Fault> {
        self.session.as_ref().ok_or_else(Fault::not_authenticated)
    }
}

pub type Reply = Result<Option<Value>, Fault>;

/// Runs `f`, which calls the engine, off the async worker when `blocking`
/// (see [`Engine::blocks`]), else inline.
pub fn call_engine<T>(blocking: bool, f: impl FnOnce() -> T) -> T {
    if blocking {
        off_worker(f)
    } else {
        f()
    }
}

/// Runs synchronous engine work (a disk's flock, a wait of up to 2 s for a
/// busy disk, a store write, a password hash) without holding an async
/// worker: on tokio's multi-threaded runtime the worker hands its other
/// tasks to another thread while `f` runs (`block_in_place`); anywhere else
/// (a current-thread runtime, no runtime) `f` runs inline. The wire layers
/// call the engine through this.
pub fn off_worker<T>(f: impl FnOnce() -> T) -> T {
    match tokio::runtime::Handle::try_current() {
        Ok(h) if h.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread => tokio::task::block_in_place(f),
        _ => f(),
    }
}

pub struct Engine {
    store: Arc<dyn Store>,
    data_dir: PathBuf,
    inv: RwLock<Inventory>,
    sessions: Sessions,
    perms: authz::Permissions,
    instance_uuid: String,
    views: Mutex<HashMap<String, mo::view_manager::View>>,
    retrievals: Mutex<HashMap<String, mo::property_collector::Pending>>,
    seq: AtomicU64,
    /// The store's external version when users and permissions were last read.
    seen_version: std::sync::atomic::AtomicI64,
    /// When that version was last checked (ms since the epoch).
    checked_at: std::sync::atomic::AtomicI64,
    users: RwLock<HashMap<String, UserRecord>>,
    tasks: tasks::Tasks,
    /// Property collectors and filters (session-scoped).
    pc: Mutex<mo::property_collector::PcState>,
    /// Bumped on every change a property collector could report; waiters
    /// watch it instead of polling.
    changes: tokio::sync::watch::Sender<u64>,
    /// Registered extensions by key (Extension data objects).
    extensions: RwLock<std::collections::BTreeMap<String, vmodl::Data>>,
    /// Task and event history collectors (session-scoped).
    history: Mutex<HashMap<String, mo::history_collector::Collector>>,
    /// Datastores whose VM files are being rewritten, and by which task.
    busy_datastores: Mutex<HashMap<String, String>>,
    /// First-class disks on the datastores.
    disks: disks::Disks,
    /// The CNS volumes' index.
    cns: storage::cns::Volumes,
    /// How long VCD tasks stay retrievable, in seconds.
    vcd_expiry: AtomicI64,
    /// The VCD directory as last read from the store.
    vcd_directory: Mutex<Option<(std::time::Instant, Arc<vcd::Directory>)>>,
    /// Test-control rules (delays and injected faults).
    control: control::Control,
    /// Per-entity queues of engine-run tasks.
    runner: runner::Runner,
    me: std::sync::OnceLock<std::sync::Weak<Engine>>,
    /// Set by an orderly stop: the node's threads end.
    stopping: std::sync::atomic::AtomicBool,
}

/// What the wire layers reach: the engine's services and the few facts
/// they need, through methods (the fields are private to the engine).
impl Engine {
    /// The task engine: records and the rules of each API's view.
    pub fn tasks(&self) -> &tasks::Tasks {
        &self.tasks
    }

    /// The test-control rules (delays, injected faults).
    pub fn control(&self) -> &control::Control {
        &self.control
    }

    /// The sessions: lifetimes and caps are set at start, the writer
    /// flushed at the end.
    pub fn sessions(&self) -> &Sessions {
        &self.sessions
    }

    /// Every entity of the inventory.
    pub fn entities(&self) -> Vec<MoRef> {
        self.inv.read().objects.values().map(|e| e.moref.clone()).collect()
    }

    /// The datastores: reference, name and mount path.
    pub fn datastores(&self) -> Vec<(MoRef, String, PathBuf)> {
        let inv = self.inv.read();
        let mut v: Vec<_> = inv
            .objects
            .values()
            .filter(|e| e.moref.ty == types::Datastore)
            .map(|e| (e.moref.clone(), e.name.clone(), PathBuf::from(e.attr("path").unwrap_or_default())))
            .collect();
        v.sort_by(|a, b| a.1.cmp(&b.1));
        v
    }

    /// A first-class disk made on datastore `ds` outside the API (a tool, a
    /// test harness) joins the catalog.
    pub fn add_disk(&self, ds: &str, disk: vdisk::disk::Disk) {
        self.disks.insert(ds, disk);
    }

    /// The datastore named `name`.
    pub fn datastore_named(&self, name: &str) -> Option<MoRef> {
        let inv = self.inv.read();
        inv.objects.values().find(|e| e.moref.ty == types::Datastore && e.name == name).map(|e| e.moref.clone())
    }

    /// This server's instance uuid (vCenter's `instanceUuid`).
    pub fn instance_uuid(&self) -> &str {
        &self.instance_uuid
    }

    /// The inventory's root folder.
    pub fn root(&self) -> MoRef {
        self.inv.read().root()
    }

    /// An inventory entity by moId, if it is of the type named `ty`: its
    /// reference and name.
    pub fn entity_of_type(&self, ty: &str, moid: &str) -> Option<(MoRef, String)> {
        self.inv.read().get(moid).filter(|e| e.moref.ty.name() == ty).map(|e| (e.moref.clone(), e.name.clone()))
    }

    /// Does a token name a live session? A check, not a use: the session's
    /// idle time is not reset (`any_session` does that).
    pub fn session_alive(&self, token: &str) -> bool {
        self.sessions.lookup(self.store.as_ref(), token).is_some()
    }

    /// A new session for an authenticated user (LimitExceeded at its cap).
    pub fn open_session(&self, user: &UserRecord, locale: &str, ip: &str, ua: &str) -> Result<Arc<Session>, Fault> {
        self.sessions.create(user, locale, ip, ua)
    }

    /// The NBD ticket `name`, while it is valid.
    pub fn nbd_ticket(&self, name: &str) -> Option<disks::Ticket> {
        self.disks.ticket(name)
    }

    /// The first-class disk `id` on datastore `ds`.
    pub fn disk(&self, id: &str, ds: &str) -> Result<disks::DiskRef, Fault> {
        self.disks.get(id, ds)
    }
}

/// Objects that exist once per server, by moId.
pub const SINGLETONS: &[(&str, TypeId)] = &[
    ("ServiceInstance", types::ServiceInstance),
    ("propertyCollector", types::PropertyCollector),
    ("ViewManager", types::ViewManager),
    ("SessionManager", types::SessionManager),
    ("AuthorizationManager", types::AuthorizationManager),
    ("SearchIndex", types::SearchIndex),
    ("TaskManager", types::TaskManager),
    ("ExtensionManager", types::ExtensionManager),
    ("EventManager", types::EventManager),
    ("VStorageObjectManager", types::VcenterVStorageObjectManager),
    ("cns-volume-manager", types::CnsVolumeManager),
];

pub struct OpenResult {
    pub engine: Engine,
    /// A generated admin password, to be printed once.
    pub generated_password: Option<String>,
}

impl Engine {
    pub fn open(
        store: Arc<dyn Store>,
        data_dir: PathBuf,
        shape: Shape,
        admin_password: Option<String>,
        retention: tasks::Retention,
    ) -> anyhow::Result<OpenResult> {
        let instance_uuid = match store.get_meta("instance_uuid")? {
            Some(u) => u,
            None => {
                let u = uuid::Uuid::new_v4().to_string();
                store.set_meta("instance_uuid", &u)?;
                u
            }
        };
        let mut inv = match Inventory::load(store.as_ref())? {
            Some(inv) => inv,
            None => {
                let inv = Inventory::bootstrap(shape, &data_dir)?;
                store.put_objects(&inv.records())?;
                inv
            }
        };
        // Resource pools came after the first data directories: add any missing.
        let pools = inv.ensure_resource_pools();
        if !pools.is_empty() {
            store.put_objects(&pools)?;
        }
        inv.share_ids(store.clone())?;
        let mut generated_password = None;
        let existing = store.get_user(ADMIN_USER)?;
        match (admin_password, existing) {
            (Some(pw), _) => add_user(store.as_ref(), ADMIN_USER, &pw, authz::ROLE_ADMIN)?,
            (None, None) => {
                let pw = generate_password();
                add_user(store.as_ref(), ADMIN_USER, &pw, authz::ROLE_ADMIN)?;
                generated_password = Some(pw);
            }
            (None, Some(_)) => {}
        }
        let perms = authz::Permissions::default();
        perms.reload(store.as_ref())?;
        let seen_version = std::sync::atomic::AtomicI64::new(store.external_version()?);
        let users = RwLock::new(store.list_users()?.into_iter().map(|u| (u.name.clone(), u)).collect());
        let extensions = load_extensions(store.as_ref())?;
        let (changes, _) = tokio::sync::watch::channel(0u64);
        let disks = disks::Disks::load(&inv);
        let engine = Engine {
            tasks: tasks::Tasks::load(store.clone(), retention, changes.clone())?,
            pc: Mutex::new(Default::default()),
            changes,
            extensions: RwLock::new(extensions),
            sessions: Sessions::new(store.clone()),
            seen_version,
            checked_at: std::sync::atomic::AtomicI64::new(0),
            users,
            store,
            data_dir,
            inv: RwLock::new(inv),
            perms,
            instance_uuid,
            views: Mutex::new(HashMap::new()),
            retrievals: Mutex::new(HashMap::new()),
            seq: AtomicU64::new(1),
            history: Mutex::new(HashMap::new()),
            disks,
            cns: Default::default(),
            vcd_expiry: AtomicI64::new(vcd::DEFAULT_EXPIRY_SECS),
            vcd_directory: Mutex::new(None),
            busy_datastores: Mutex::new(HashMap::new()),
            control: Default::default(),
            runner: Default::default(),
            me: std::sync::OnceLock::new(),
            stopping: Default::default(),
        };
        Ok(OpenResult { engine, generated_password })
    }

    /// Share the engine; tasks it runs in the background hold it too.
    /// A thread ends the sessions that run out (and what they owned) every
    /// few seconds; a call with such a session is refused at once anyway.
    pub fn into_shared(self) -> Arc<Engine> {
        let e = Arc::new(self);
        let _ = e.me.set(Arc::downgrade(&e));
        let weak = Arc::downgrade(&e);
        let _ = std::thread::Builder::new().name("session-expiry".into()).spawn(move || loop {
            std::thread::sleep(std::time::Duration::from_secs(2));
            let Some(eng) = weak.upgrade() else { return };
            if eng.stopping.load(Ordering::Relaxed) {
                return;
            }
            for t in eng.sessions.expired() {
                eng.end_session(&t);
            }
        });
        e
    }

    pub fn shared(&self) -> Option<Arc<Engine>> {
        self.me.get().and_then(std::sync::Weak::upgrade)
    }

    pub fn vcd_task_expiry_secs(&self) -> i64 {
        self.vcd_expiry.load(Ordering::Relaxed)
    }
    pub fn set_vcd_task_expiry_secs(&self, secs: i64) {
        self.vcd_expiry.store(secs.max(1), Ordering::Relaxed);
    }

    pub fn next_seq(&self) -> u64 {
        self.seq.fetch_add(1, Ordering::Relaxed)
    }

    /// The concrete type of a live object, or None.
    pub fn object_type(&self, moid: &str) -> Option<TypeId> {
        if let Some((_, t)) = SINGLETONS.iter().find(|(m, _)| *m == moid) {
            return Some(*t);
        }
        if let Some(e) = self.inv.read().get(moid) {
            return Some(e.moref.ty);
        }
        mo::find_type(self, moid)
    }

    /// Resolve a reference from the wire: the object must exist and be of the
    /// named type or a subtype of it.
    pub fn resolve(&self, r: &MoRef) -> Result<MoRef, Fault> {
        let mut ty = self.object_type(&r.value);
        if ty.is_none() {
            // Perhaps made on another node a moment ago.
            self.refresh_external(true)?;
            ty = self.object_type(&r.value);
        }
        match ty {
            Some(t) if t.is_a(r.ty) => Ok(MoRef::new(t, r.value.clone())),
            _ => Err(Fault::not_found(r)),
        }
    }

    /// Reload users, permissions and extensions when another process (`vtwin user add`)
    /// or node changed the store since we last looked. Unless `force`, look
    /// at most every 250 ms.
    pub fn refresh_external(&self, force: bool) -> Result<(), Fault> {
        let now = chrono::Utc::now().timestamp_millis();
        if !force && now - self.checked_at.load(Ordering::Relaxed) < 250 {
            return Ok(());
        }
        self.checked_at.store(now, Ordering::Relaxed);
        let v = self.store.external_version()?;
        if self.seen_version.load(Ordering::Relaxed) != v {
            self.perms.reload(self.store.as_ref())?;
            let all = self.store.list_users()?;
            *self.users.write() = all.into_iter().map(|u| (u.name.clone(), u)).collect();
            *self.extensions.write() = load_extensions(self.store.as_ref())?;
            self.reload_inventory()?;
            // Only now: a reload that failed is tried again.
            self.seen_version.store(v, Ordering::Relaxed);
        }
        Ok(())
    }

    /// Take in inventory objects another node added, changed or removed.
    /// The store is read under the inventory's lock: local changes write
    /// the store under it too, so none is lost in between.
    fn reload_inventory(&self) -> Result<(), Fault> {
        let mut inv = self.inv.write();
        let Some(mut fresh) = Inventory::load(self.store.as_ref())? else { return Ok(()) };
        fresh.keep_ids_of(&inv);
        let same = fresh.order == inv.order
            && fresh.objects.iter().all(|(k, e)| {
                inv.objects.get(k).is_some_and(|o| o.name == e.name && o.parent == e.parent && o.attrs == e.attrs)
            });
        if same {
            return Ok(());
        }
        *inv = fresh;
        let roots: Vec<(String, std::path::PathBuf)> = inv
            .objects
            .values()
            .filter(|e| e.moref.ty == types::Datastore)
            .filter_map(|e| e.attr("path").map(|p| (e.moref.value.clone(), std::path::PathBuf::from(p))))
            .collect();
        drop(inv);
        for (ds, p) in roots {
            self.disks.scan_new_root(&ds, &p);
        }
        self.changed();
        Ok(())
    }

    /// A user by (normalized) name; users added by another process since the
    /// last look are found too.
    pub fn user(&self, name: &str) -> Result<Option<UserRecord>, Fault> {
        self.refresh_external(false)?;
        if let Some(u) = self.users.read().get(name) {
            return Ok(Some(u.clone()));
        }
        self.refresh_external(true)?;
        Ok(self.users.read().get(name).cloned())
    }

    /// The vSphere session of a token (a vCloud Director session is not one).
    pub fn session_for_token(&self, token: &str) -> Option<Arc<Session>> {
        self.any_session(token).filter(|s| !s.user.starts_with("vcd:"))
    }

    /// Any session of a token, vSphere or vCloud Director.
    pub fn any_session(&self, token: &str) -> Option<Arc<Session>> {
        let s = self.sessions.lookup(self.store.as_ref(), token)?;
        s.touch();
        Some(s)
    }

    /// The inventory object whose permissions govern `obj`: an entity
    /// itself; a task its entity; a snapshot its VM; a host's datastore and
    /// storage systems the host; everything else (managers, views,
    /// collectors, tasks without an entity) the root folder.
    pub fn governing_entity(&self, obj: &MoRef) -> String {
        let inv = self.inv.read();
        if inv.get(&obj.value).is_some() {
            return obj.value.clone();
        }
        let owner = if obj.ty == types::Task {
            self.tasks.get(&obj.value).and_then(|t| t.entity.map(|(_, id)| id))
        } else if obj.ty == types::VirtualMachineSnapshot {
            mo::virtual_machine_snapshot::parse_ref(&obj.value).map(|(vm, _)| vm.to_string())
        } else if obj.ty == types::HostDatastoreSystem {
            obj.value.strip_prefix(mo::host_datastore_system::PREFIX).map(str::to_string)
        } else if obj.ty == types::HostStorageSystem {
            obj.value.strip_prefix(mo::host_storage_system::PREFIX).map(str::to_string)
        } else {
            None
        };
        owner.filter(|o| inv.get(o).is_some()).unwrap_or_else(|| ROOT_FOLDER.to_string())
    }

    /// May `user` exercise `privilege` on `obj`? Objects outside the
    /// inventory take their permissions from the entity that governs them
    /// (`governing_entity`), so a NoAccess user holds nothing anywhere.
    pub fn has_privilege(&self, user: &str, obj: &MoRef, privilege: &str) -> bool {
        if privilege == "System.Anonymous" {
            return true;
        }
        let entity = self.governing_entity(obj);
        let path = self.inv.read().path_to_root(&entity);
        let role = self.perms.effective_role(user, &path).unwrap_or(authz::ROLE_NOACCESS);
        authz::role_has(role, privilege)
    }

    pub fn check(&self, ctx: &Ctx, obj: &MoRef, privilege: &str) -> Result<(), Fault> {
        let s = ctx.session()?;
        if self.has_privilege(&s.user, obj, privilege) {
            Ok(())
        } else {
            Err(Fault::no_permission(obj, privilege))
        }
    }

    /// Can this session see the object at all (System.View)?
    pub fn can_view(&self, ctx: &Ctx, obj: &MoRef) -> bool {
        match &ctx.session {
            Some(s) => self.has_privilege(&s.user, obj, "System.View"),
            None => false,
        }
    }

    /// May this session see a task (System.View on its entity, or on the
    /// root folder for a task without one)?
    pub fn can_see_task(&self, ctx: &Ctx, t: &tasks::TaskRecord) -> bool {
        let obj = t
            .entity
            .as_ref()
            .and_then(|(ty, id)| vmodl::TypeId::by_name(ty).map(|ty| MoRef::new(ty, id.clone())))
            .unwrap_or_else(|| MoRef::new(types::Folder, ROOT_FOLDER));
        self.can_view(ctx, &obj)
    }

    fn anonymous_ok(this: &MoRef, m: &MethodDef) -> bool {
        m.privilege == Some("System.Anonymous")
            && (this.ty == types::ServiceInstance || this.ty == types::SessionManager)
    }

    /// May `m` on `this` be called without a session? The wire layers ask
    /// before they decode a request's arguments, so an unauthenticated
    /// caller never gets a large or deep body decoded. (Fetch of
    /// ServiceInstance properties is public, as vCenter's content is.)
    pub fn callable_without_session(this: &MoRef, m: &MethodDef) -> bool {
        Self::anonymous_ok(this, m) || (std::ptr::eq(m, &vmodl::schema::FETCH) && this.ty == types::ServiceInstance)
    }

    /// Session-scoped objects (views) belong to the session that made them;
    /// to any other caller they do not exist.
    /// Their moIds name them: `session[<key>]…`.
    fn check_owner(&self, ctx: &Ctx, this: &MoRef) -> Result<(), Fault> {
        let Some(owner) = session_of(&this.value) else { return Ok(()) };
        match &ctx.session {
            Some(s) if s.key != owner => Err(Fault::not_found(this)),
            _ => Ok(()),
        }
    }

    /// End a session and drop what it owned (views, collectors, filters,
    /// paged retrievals).
    pub fn end_session(&self, token: &str) {
        if let Some(s) = self.sessions.lookup_live(self.store.as_ref(), token) {
            self.views.lock().retain(|_, v| v.session_key != s.key);
            self.retrievals.lock().retain(|_, p| p.session_key != s.key);
            self.pc.lock().drop_session(&s.key);
            self.history.lock().retain(|_, c| c.session_key != s.key);
        }
        self.sessions.remove(token);
    }

    /// Tell property-collector waiters that something changed.
    pub fn changed(&self) {
        self.changes.send_modify(|v| *v += 1);
    }

    /// Call `m` on `this` (already resolved). Checks the session, the
    /// method's release, the privilege the registry names for the method and
    /// for each MoRef parameter, then runs the object's behaviour.
    pub fn invoke(&self, ctx: &mut Ctx, this: &MoRef, m: &'static MethodDef, args: Args) -> Reply {
        // What other nodes changed (looked at most every 250 ms).
        self.refresh_external(false)?;
        self.precheck(ctx, this, m, &args)?;
        mo::invoke(self, ctx, this, m, args).map_err(|f| self.scrub(f))
    }

    /// A fault as a client may see it: the server's own directories are
    /// not told. A path on a datastore is written as vCenter writes it
    /// (`[LocalDS_0] fcd/…`), any other path under the data directory
    /// relative to it.
    pub fn scrub(&self, mut f: Fault) -> Fault {
        // Most faults name no path at all.
        if !f.message.contains('/') && f.data.get("file").is_none() {
            return f;
        }
        let mut roots: Vec<(String, String)> = {
            let inv = self.inv.read();
            inv.objects
                .values()
                .filter(|e| e.moref.ty == types::Datastore)
                .filter_map(|e| e.attr("path").map(|p| (p.to_string(), e.name.clone())))
                .collect()
        };
        for (p, name) in roots.clone() {
            if let Ok(c) = std::fs::canonicalize(&p) {
                roots.push((c.to_string_lossy().into_owned(), name));
            }
        }
        // Longest first, so a datastore inside the data directory wins.
        roots.sort_by_key(|(p, _)| std::cmp::Reverse(p.len()));
        let data = self.data_dir.to_string_lossy().into_owned();
        fn strip(s: &str, roots: &[(String, String)], data: &str) -> String {
            let mut out = s.to_string();
            for (root, name) in roots {
                if !root.is_empty() && out.contains(root.as_str()) {
                    out = out
                        .replace(&format!("{root}/"), &format!("[{name}] "))
                        .replace(root.as_str(), &format!("[{name}]"));
                }
            }
            if !data.is_empty() && data != "/" {
                out = out.replace(&format!("{data}/"), "").replace(data, ".");
            }
            out
        }
        let clean = |s: &str| strip(s, &roots, &data);
        f.message = strip(&f.message, &roots, &data);
        if let Some(file) = f.data.str("file").map(clean) {
            f.data.set("file", file);
        }
        if let Some(Value::Array(t, mut msgs)) = f.data.get("faultMessage").cloned() {
            for m in &mut msgs {
                if let Value::Data(d) = m {
                    if let Some(text) = d.str("message").map(clean) {
                        d.set("message", text);
                    }
                }
            }
            f.data.set("faultMessage", Value::Array(t, msgs));
        }
        f
    }

    /// WaitForUpdates / WaitForUpdatesEx: the same checks as `invoke`, then
    /// wait (without blocking a thread) until the collector has updates, the
    /// wait times out, or CancelWaitForUpdates cancels it.
    pub async fn wait_for_updates(&self, ctx: &mut Ctx, this: &MoRef, m: &'static MethodDef, args: Args) -> Reply {
        self.refresh_external(false)?;
        self.precheck(ctx, this, m, &args)?;
        mo::property_collector::wait(self, ctx, this, m.name == "WaitForUpdates", &args).await
    }

    fn precheck(&self, ctx: &mut Ctx, this: &MoRef, m: &'static MethodDef, args: &Args) -> Result<(), Fault> {
        let fetch = std::ptr::eq(m, &vmodl::schema::FETCH);
        // Fetch checks the session per property (ServiceInstance content is public).
        if !Self::anonymous_ok(this, m) && !fetch && ctx.session.is_none() {
            return Err(Fault::not_authenticated());
        }
        if !ctx.version.includes(m.version) && !fetch {
            return Err(Fault::method_not_found(this, m.name));
        }
        if ctx.session.is_some() && !privileges::always_allowed(this.ty, m.name) {
            match m.privilege {
                Some(p) => self.check(ctx, this, p)?,
                // Nothing in the registry: seeing the object is the least.
                None if !fetch => self.check(ctx, this, "System.View")?,
                None => {}
            }
            if let Some(rule) = privileges::rule(this.ty, m.name) {
                self.check_rule(ctx, this, rule, args)?;
            }
            for p in m.params {
                let Some(privilege) = p.privilege else { continue };
                match args.get(p.name) {
                    Some(Value::MoRef(r)) => {
                        let r = self.resolve(r)?;
                        self.check(ctx, &r, privilege)?;
                    }
                    // In lists, objects that do not exist are the method's to
                    // report (ModifyListView returns them as unresolved).
                    Some(Value::Array(_, items)) => {
                        for r in items.iter().filter_map(Value::as_moref) {
                            if let Ok(r) = self.resolve(r) {
                                self.check(ctx, &r, privilege)?;
                            }
                        }
                    }
                    _ => {}
                }
            }
        }
        self.check_owner(ctx, this)?;
        Ok(())
    }

    /// The checks of a rule of our privilege table (`privileges.rs`).
    fn check_rule(&self, ctx: &Ctx, this: &MoRef, rule: &privileges::Rule, args: &Args) -> Result<(), Fault> {
        use privileges::On;
        for need in rule.needs {
            let objects: Vec<MoRef> = match need.on {
                On::This => vec![this.clone()],
                On::Parent => {
                    let inv = self.inv.read();
                    inv.get(&this.value)
                        .and_then(|e| e.parent.clone())
                        .and_then(|p| inv.get(&p).map(|e| e.moref.clone()))
                        .into_iter()
                        .collect()
                }
                On::Root => vec![MoRef::new(types::Folder, ROOT_FOLDER)],
                On::Arg(path) => {
                    let mut out = vec![];
                    for r in args_at(args, path).into_iter().filter_map(Value::as_moref) {
                        // An unknown object is the method's to report.
                        if let Ok(r) = self.resolve(r) {
                            out.push(r);
                        }
                    }
                    out
                }
                On::DsPath(path) => {
                    let inv = self.inv.read();
                    args_at(args, path)
                        .into_iter()
                        .filter_map(Value::as_str)
                        .filter_map(|p| paths::resolve(&inv, p, path).ok())
                        .map(|p| MoRef::new(types::Datastore, p.datastore))
                        .collect()
                }
                On::DiskDatastore(path) => args_at(args, path)
                    .into_iter()
                    .filter_map(Value::as_str)
                    .filter_map(|id| self.disks.find(id).map(|(ds, _)| MoRef::new(types::Datastore, ds)))
                    .collect(),
            };
            for o in objects {
                self.check(ctx, &o, need.privilege)?;
            }
        }
        Ok(())
    }

    /// Read one top-level property (VI/JSON GET, Fetch). Reading
    /// ServiceInstance content/serverClock needs no session.
    /// Whether calling `m` on `this` may block its thread (file or disk
    /// I/O, a busy disk): the wire layers run such calls through
    /// [`off_worker`].
    pub fn blocks(&self, this: &MoRef, m: &MethodDef) -> bool {
        mo::blocks(this, m)
    }

    /// Whether reading a property of `obj` may block its thread.
    pub fn blocks_reading(&self, obj: &MoRef) -> bool {
        mo::blocks_reading(obj)
    }

    pub fn read_property(&self, ctx: &Ctx, this: &MoRef, name: &str) -> Reply {
        let anonymous = this.ty == types::ServiceInstance && (name == "content" || name == "serverClock");
        if !anonymous {
            ctx.session()?;
        }
        let (top, rest) = match name.split_once('.') {
            Some((a, b)) => (a, Some(b)),
            None => (name, None),
        };
        let p = this.ty.prop(top).ok_or_else(|| Fault::invalid_property(name))?;
        self.check_owner(ctx, this)?;
        if !anonymous {
            if !self.can_view(ctx, this) {
                return Err(Fault::no_permission(this, "System.View"));
            }
            if let Some(privilege) = p.privilege {
                self.check(ctx, this, privilege)?;
            }
        }
        let v = mo::property(self, ctx, this, top)?;
        match rest {
            None => Ok(v),
            Some(path) => Ok(v.and_then(|v| mo::property_collector::sub_path(&v, path))),
        }
    }
}

/// The values at a dotted path in the arguments; arrays on the way are
/// walked, so `createSpecs.datastores` gives every datastore of every spec.
fn args_at<'a>(args: &'a Args, path: &str) -> Vec<&'a Value> {
    let (first, rest) = path.split_once('.').map_or((path, None), |(a, b)| (a, Some(b)));
    let mut cur: Vec<&Value> = args.get(first).into_iter().collect();
    for name in rest.into_iter().flat_map(|r| r.split('.')) {
        let mut next = vec![];
        for v in cur {
            let items: Vec<&Value> = match v {
                Value::Array(_, items) => items.iter().collect(),
                other => vec![other],
            };
            for it in items {
                if let Some(x) = it.as_data().and_then(|d| d.get(name)) {
                    next.push(x);
                }
            }
        }
        cur = next;
    }
    cur.into_iter()
        .flat_map(|v| match v {
            Value::Array(_, items) => items.iter().collect::<Vec<_>>(),
            other => vec![other],
        })
        .collect()
}

/// The session key in a session-scoped moId (`session[<key>]pc-3`).
pub fn session_of(moid: &str) -> Option<&str> {
    moid.strip_prefix("session[")?.split_once(']').map(|(k, _)| k)
}

pub fn generate_password() -> String {
    use rand::Rng;
    const CH: &[u8] = b"ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz23456789";
    let mut r = rand::thread_rng();
    let body: String = (0..16).map(|_| CH[r.gen_range(0..CH.len())] as char).collect();
    format!("{body}!9a")
}

/// Create or update a user and give it `role` on the root folder.
pub fn add_user(store: &dyn Store, name: &str, password: &str, role: i32) -> crate::store::Result<()> {
    let name = session::normalize_user(name);
    let full_name = name.split('@').next().unwrap_or(&name).to_string();
    store.put_user(&UserRecord { name: name.clone(), password_hash: session::hash_password(password), full_name })?;
    store.put_permission(&PermissionRecord {
        entity: ROOT_FOLDER.into(),
        principal: name,
        group: false,
        role_id: role,
        propagate: true,
    })
}

/// The registered extensions kept in the store, by key.
fn load_extensions(store: &dyn Store) -> crate::store::Result<std::collections::BTreeMap<String, vmodl::Data>> {
    let mut extensions = std::collections::BTreeMap::new();
    for (key, rec) in store.list_extensions()? {
        // Kept form; earlier builds wrote VI/JSON, which reads too.
        let decoded = serde_json::from_str::<serde_json::Value>(&rec).ok().and_then(|v| kept::Kept::read(&v).ok());
        match decoded {
            Some(kept::Kept(vmodl::Value::Data(d))) if d.ty == types::Extension => {
                extensions.insert(key, *d);
            }
            _ => tracing::warn!(%key, "unreadable extension record skipped"),
        }
    }
    Ok(extensions)
}
