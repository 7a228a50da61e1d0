//! vCloud Director's model on the shared engine: organizations (System and
//! tenants) with their users, VCD sessions (engine sessions whose principal
//! is `vcd:<org id>:<user>`), and VCD's view of tasks. A VCD task is an
//! engine task record with VCD fields (`TaskRecord::vcd`), so vim25 and vAPI
//! see it too; the rules of the VCD TaskType page live here. No HTTP.
use super::auth::session::{hash_password, verify_password};
use super::tasks::vcd::{apply, is_final, Refused, TaskSpec, VcdTask};
use super::tasks::{NewTask, TaskRecord};
use super::{Engine, Fault};
use crate::store::{Store, UserRecord};
use chrono::Utc;
use serde::{Deserialize, Serialize};
use std::sync::Arc;
use vmodl::types;

/// The System organization's name.
pub const SYSTEM: &str = "System";
const DIRECTORY_KEY: &str = "vcd.directory";
/// How long a task stays retrievable by default (VCD's 30 days).
pub const DEFAULT_EXPIRY_SECS: i64 = 30 * 24 * 3600;

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Org {
    pub id: String,
    pub name: String,
    pub full_name: String,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct User {
    pub id: String,
    pub name: String,
    pub org: String,
    pub password_hash: String,
    /// "Organization Administrator" or "vApp User" (tenants); System users
    /// are "System Administrator".
    pub role: String,
}

/// Organizations and their users, kept in the store as one document.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct Directory {
    pub orgs: Vec<Org>,
    pub users: Vec<User>,
}

impl Directory {
    /// The directory in the store; the System org is made on first use.
    pub fn load(store: &dyn Store) -> crate::store::Result<Directory> {
        // One loader at a time, so two first requests cannot both make System.
        static LOCK: parking_lot::Mutex<()> = parking_lot::Mutex::new(());
        let _g = LOCK.lock();
        let mut d: Directory = match store.get_meta(DIRECTORY_KEY)? {
            Some(t) => serde_json::from_str(&t)
                .map_err(|e| crate::store::StoreError::Corrupt(format!("the VCD directory is unreadable: {e}")))?,
            None => Directory::default(),
        };
        if !d.orgs.iter().any(|o| o.name == SYSTEM) {
            d.orgs.insert(
                0,
                Org {
                    id: uuid::Uuid::new_v4().to_string(),
                    name: SYSTEM.into(),
                    full_name: "System Organization".into(),
                },
            );
            d.save(store)?;
        }
        Ok(d)
    }
    pub fn save(&self, store: &dyn Store) -> crate::store::Result<()> {
        store.set_meta(DIRECTORY_KEY, &serde_json::to_string(self).expect("directory json"))
    }
    pub fn org_by_name(&self, name: &str) -> Option<&Org> {
        self.orgs.iter().find(|o| o.name.eq_ignore_ascii_case(name))
    }
    pub fn org(&self, id: &str) -> Option<&Org> {
        self.orgs.iter().find(|o| o.id == id)
    }
}

/// Why an organization or user could not be added.
#[derive(Debug, thiserror::Error)]
pub enum DirectoryError {
    #[error("'{0}' is not an organization name")]
    BadOrgName(String),
    #[error("organization {0} exists")]
    OrgExists(String),
    #[error("no organization {0}")]
    NoOrg(String),
    #[error("role '{0}' is not admin or user")]
    BadRole(String),
    #[error(transparent)]
    Store(#[from] crate::store::StoreError),
}

/// `vtwin vcd org add`.
pub fn add_org(store: &dyn Store, name: &str, full_name: &str) -> Result<Org, DirectoryError> {
    if name.is_empty() || name.len() > 128 || name.contains(['/', ':', '@', ' ']) {
        return Err(DirectoryError::BadOrgName(name.into()));
    }
    let mut d = Directory::load(store)?;
    if d.org_by_name(name).is_some() {
        return Err(DirectoryError::OrgExists(name.into()));
    }
    let o = Org {
        id: uuid::Uuid::new_v4().to_string(),
        name: name.into(),
        full_name: if full_name.is_empty() { name.into() } else { full_name.into() },
    };
    d.orgs.push(o.clone());
    d.save(store)?;
    Ok(o)
}

/// `vtwin vcd user add`: a user of an organization (replaced if present).
pub fn add_user(store: &dyn Store, org: &str, name: &str, password: &str, role: &str) -> Result<(), DirectoryError> {
    let mut d = Directory::load(store)?;
    let o = d.org_by_name(org).ok_or_else(|| DirectoryError::NoOrg(org.into()))?.clone();
    let role = match (o.name == SYSTEM, role) {
        (true, _) => "System Administrator",
        (false, "admin" | "Organization Administrator") => "Organization Administrator",
        (false, "user" | "vApp User") => "vApp User",
        (false, r) => return Err(DirectoryError::BadRole(r.into())),
    };
    d.users.retain(|u| !(u.org == o.id && u.name == name));
    d.users.push(User {
        id: uuid::Uuid::new_v4().to_string(),
        name: name.into(),
        org: o.id,
        password_hash: hash_password(password),
        role: role.into(),
    });
    Ok(d.save(store)?)
}

/// Who a VCD session belongs to.
#[derive(Clone, Debug)]
pub struct Who {
    pub token: String,
    pub org: Org,
    pub user: String,
    pub user_id: String,
    pub role: String,
}

impl Who {
    pub fn is_system(&self) -> bool {
        self.org.name == SYSTEM
    }
}

/// What kind of refusal a VCD error is; the wire layer gives each its HTTP
/// status (VCD's `majorErrorCode`).
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum VcdErrorKind {
    BadRequest,
    Unauthorized,
    Forbidden,
    NotFound,
    NotAcceptable,
    UnsupportedMediaType,
    Internal,
}

/// A VCD error: its kind, VCD's `minorErrorCode` and a message.
#[derive(Clone, Debug, thiserror::Error)]
#[error("{message}")]
pub struct VcdError {
    pub kind: VcdErrorKind,
    pub minor: &'static str,
    pub message: String,
}

impl VcdError {
    pub fn new(kind: VcdErrorKind, minor: &'static str, message: impl Into<String>) -> VcdError {
        VcdError { kind, minor, message: message.into() }
    }
    pub fn bad_request(message: impl Into<String>) -> VcdError {
        VcdError::new(VcdErrorKind::BadRequest, "BAD_REQUEST", message)
    }
    pub fn not_found(message: impl Into<String>) -> VcdError {
        VcdError::new(VcdErrorKind::NotFound, "RESOURCE_NOT_FOUND", message)
    }
    pub fn forbidden(message: impl Into<String>) -> VcdError {
        VcdError::new(VcdErrorKind::Forbidden, "ACCESS_TO_RESOURCE_IS_FORBIDDEN", message)
    }
    pub fn unauthorized() -> VcdError {
        VcdError::new(VcdErrorKind::Unauthorized, "UNAUTHORIZED", "This operation is denied: log in first.")
    }
    pub fn not_acceptable(message: impl Into<String>) -> VcdError {
        VcdError::new(VcdErrorKind::NotAcceptable, "NOT_ACCEPTABLE", message)
    }
    pub fn unsupported_media_type(message: impl Into<String>) -> VcdError {
        VcdError::new(VcdErrorKind::UnsupportedMediaType, "UNSUPPORTED_MEDIA_TYPE", message)
    }
}

impl From<Refused> for VcdError {
    fn from(r: Refused) -> VcdError {
        VcdError::bad_request(r.0)
    }
}

impl From<Fault> for VcdError {
    fn from(f: Fault) -> VcdError {
        if f.data.ty == types::NotFound || f.data.ty == types::ManagedObjectNotFound {
            VcdError::not_found(f.message)
        } else if [types::InvalidArgument, types::InvalidState, types::LimitExceeded].contains(&f.data.ty) {
            VcdError::bad_request(f.message)
        } else if f.data.ty == types::NoPermission {
            VcdError::forbidden(f.message)
        } else {
            VcdError::new(VcdErrorKind::Internal, "INTERNAL_SERVER_ERROR", f.message)
        }
    }
}

/// Log in `user@org` (the System org's `administrator` is the vSphere
/// administrator, with the same password). `provider`: only System users.
pub fn login(
    eng: &Engine,
    principal: &str,
    password: &str,
    provider: Option<bool>,
    ip: &str,
    ua: &str,
) -> Result<Who, VcdError> {
    let bad = || VcdError::unauthorized();
    let (user, org) = principal.rsplit_once('@').ok_or_else(bad)?;
    let d = shared_directory(eng);
    let o = d.org_by_name(org).ok_or_else(bad)?.clone();
    match provider {
        Some(true) if o.name != SYSTEM => return Err(VcdError::unauthorized()),
        Some(false) if o.name == SYSTEM => return Err(VcdError::unauthorized()),
        _ => {}
    }
    let (user_id, role) = if o.name == SYSTEM && user.eq_ignore_ascii_case("administrator") {
        eng.authenticate("administrator@vsphere.local", password, ip).map_err(|_| bad())?;
        (admin_id(&o), "System Administrator".to_string())
    } else {
        // Throttled and timed as vSphere logins are (`authenticate`).
        let (user_key, ip_key) = (format!("vcd:{}@{}", user, o.id), format!("ip:{ip}"));
        let keys = [user_key.as_str(), ip_key.as_str()];
        let throttle = &eng.sessions.throttle;
        if !throttle.admits(&keys) {
            return Err(bad());
        }
        let Some(u) = d.users.iter().find(|u| u.org == o.id && u.name == user) else {
            super::auth::session::verify_nobody(password);
            throttle.failed(&keys);
            return Err(bad());
        };
        let rec =
            UserRecord { name: u.name.clone(), password_hash: u.password_hash.clone(), full_name: u.name.clone() };
        if !verify_password(&rec, password) {
            throttle.failed(&keys);
            return Err(bad());
        }
        throttle.succeeded(&user_key);
        (u.id.clone(), u.role.clone())
    };
    let name = if o.name == SYSTEM && user.eq_ignore_ascii_case("administrator") {
        "administrator".to_string()
    } else {
        user.to_string()
    };
    let rec = UserRecord {
        name: format!("vcd:{}:{}:{}", o.id, user_id, name),
        password_hash: String::new(),
        full_name: name.clone(),
    };
    let s = eng.sessions.create(&rec, "en", ip, ua).map_err(VcdError::from)?;
    Ok(Who { token: s.token.clone(), org: o, user: name, user_id, role })
}

/// The System administrator's stable id, derived from the System org's.
fn admin_id(o: &Org) -> String {
    let mut b = uuid::Uuid::parse_str(&o.id).map(uuid::Uuid::into_bytes).unwrap_or_default();
    b[15] ^= 0x5a;
    uuid::Uuid::from_bytes(b).to_string()
}

/// The VCD session of a token.
pub fn session(eng: &Engine, token: &str) -> Option<Who> {
    let s = eng.any_session(token)?;
    let rest = s.user.strip_prefix("vcd:")?;
    let mut it = rest.splitn(3, ':');
    let (org, user_id, user) = (it.next()?, it.next()?, it.next()?);
    let d = shared_directory(eng);
    let o = d.org(org)?.clone();
    let role = if o.name == SYSTEM {
        "System Administrator".to_string()
    } else {
        d.users.iter().find(|u| u.id == user_id).map(|u| u.role.clone())?
    };
    Some(Who { token: token.to_string(), org: o, user: user.to_string(), user_id: user_id.to_string(), role })
}

pub fn logout(eng: &Engine, who: &Who) {
    eng.sessions.remove(&who.token);
}

// ---- tasks ---------------------------------------------------------------
// (the VCD fields of a task and their rules are in `tasks::vcd`)

/// POST /api/tasksList/{org}: an external task of the caller's org.
pub fn create_task(
    eng: &Engine,
    who: &Who,
    org_id: &str,
    spec: &TaskSpec,
    expiry_secs: i64,
) -> Result<TaskRecord, VcdError> {
    let d = shared_directory(eng);
    let org = d.org(org_id).ok_or_else(|| VcdError::not_found(format!("no organization {org_id}")))?;
    if !who.is_system() && org.id != who.org.id {
        return Err(VcdError::not_found(format!("no organization {org_id}")));
    }
    let now = Utc::now().timestamp_millis();
    let name =
        spec.name.clone().filter(|n| !n.is_empty()).ok_or_else(|| VcdError::bad_request("a task needs a name"))?;
    let id = uuid::Uuid::new_v4().to_string();
    let vcd = VcdTask {
        id: id.clone(),
        org: org.id.clone(),
        status: "queued".into(),
        name: name.clone(),
        user: Some((who.user_id.clone(), who.user.clone())),
        expiry: Some(now + expiry_secs * 1000),
        ..Default::default()
    };
    let n = NewTask {
        name: None,
        description_id: format!(
            "com.vmware.vcloud.{}",
            spec.operation_name.clone().unwrap_or_else(|| "jobExternal".into())
        ),
        entity: None,
        cancelable: true,
        user: format!("{}@{}", who.user, who.org.name),
        creator: Some(format!("vcd:{}:{}", who.org.id, who.user_id)),
        parent_key: None,
        activation_id: None,
        target: None,
    };
    let spec = spec.clone();
    eng.tasks
        .create_with(n, move |t| {
            t.vcd = Some(vcd);
            apply(t, &spec, now, true).map_err(|e| Fault::invalid_argument("task", e.0))
        })
        .map_err(VcdError::from)
}

/// The task with VCD id `id`, if the caller may see it and it has not expired.
pub fn get_task(eng: &Engine, who: &Who, id: &str) -> Result<TaskRecord, VcdError> {
    let t = eng.tasks.by_vcd_id(id).ok_or_else(|| VcdError::not_found(format!("task {id} not found")))?;
    let v = t.vcd.as_ref().expect("a VCD task");
    if v.expiry.is_some_and(|e| e <= Utc::now().timestamp_millis()) {
        return Err(VcdError::not_found(format!("task {id} has expired")));
    }
    if !who.is_system() && v.org != who.org.id {
        // Another org's task does not exist for this caller.
        return Err(VcdError::not_found(format!("task {id} not found")));
    }
    Ok(t)
}

/// PUT /api/task/{id}.
pub fn update_task(eng: &Engine, who: &Who, id: &str, spec: &TaskSpec) -> Result<TaskRecord, VcdError> {
    let t = get_task(eng, who, id)?;
    let mut err = None;
    let spec = spec.clone();
    let r = eng.tasks.update_with(&t.key, |t| {
        apply(t, &spec, Utc::now().timestamp_millis(), false).map_err(|e| {
            err = Some(e.clone());
            Fault::invalid_argument("task", e.0)
        })
    });
    match (r, err) {
        (Ok(t), _) => Ok(t),
        (Err(_), Some(e)) => Err(e.into()),
        (Err(f), None) => Err(f.into()),
    }
}

/// POST /api/task/{id}/action/cancel: cancelRequested, and a cancelable
/// task ends aborted.
pub fn cancel_task(eng: &Engine, who: &Who, id: &str) -> Result<TaskRecord, VcdError> {
    let t = get_task(eng, who, id)?;
    if t.vcd.as_ref().is_some_and(|v| is_final(&v.status)) {
        return Err(VcdError::bad_request(format!("task {id} has already completed")));
    }
    let cancelable = t.cancelable;
    let r = eng.tasks.update_with(&t.key, |t| {
        let now = Utc::now().timestamp_millis();
        t.vcd.as_mut().expect("a VCD task").cancel_requested = true;
        if cancelable {
            let spec = TaskSpec { status: Some("aborted".into()), ..Default::default() };
            apply(t, &spec, now, false).map_err(|e| Fault::invalid_argument("task", e.0))?;
        }
        Ok(())
    })?;
    if let Some(n) = eng.tasks.worker_notify(&t.key) {
        n.notify_one();
    }
    Ok(r)
}

/// Tasks the caller may see (System: every org's; tenants: their own),
/// unexpired, oldest first; `org`: only that org's.
pub fn list_tasks(eng: &Engine, who: &Who, org: Option<&str>) -> Vec<TaskRecord> {
    let now = Utc::now().timestamp_millis();
    eng.tasks.vcd_tasks(|v| {
        v.expiry.is_none_or(|e| e > now) && (who.is_system() || v.org == who.org.id) && org.is_none_or(|o| v.org == o)
    })
}

/// The vim25 tasks started on behalf of a VCD task (their parent).
pub fn vc_tasks(eng: &Engine, t: &TaskRecord) -> Vec<TaskRecord> {
    eng.tasks.children(&t.key)
}

/// The directory, read from the store at most once a second (admin
/// commands may change it while the server runs).
pub fn shared_directory(eng: &Engine) -> Arc<Directory> {
    let mut c = eng.vcd_directory.lock();
    if let Some((at, d)) = c.as_ref() {
        if at.elapsed() < std::time::Duration::from_secs(1) {
            return d.clone();
        }
    }
    let d = match Directory::load(eng.store.as_ref()) {
        Ok(d) => Arc::new(d),
        Err(e) => {
            tracing::error!(error = %e, "VCD directory");
            return c.as_ref().map(|(_, d)| d.clone()).unwrap_or_default();
        }
    };
    *c = Some((std::time::Instant::now(), d.clone()));
    d
}
