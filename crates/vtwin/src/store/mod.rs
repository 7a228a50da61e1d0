//! The store interface: everything vtwin keeps across restarts. SQLite in the
//! data directory is the embedded backend; a PostgreSQL backend implements
//! the same trait for several nodes.
pub mod postgres;
pub mod sqlite;

use serde::{Deserialize, Serialize};

pub type Result<T> = std::result::Result<T, StoreError>;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The database refused or failed a statement (its code and message).
    #[error("store: {0}")]
    Database(String),
    /// The database cannot be reached (its connections are gone).
    #[error("store: {0}")]
    Unavailable(String),
    /// The store's configuration is wrong (a schema name, say).
    #[error("store: {0}")]
    Config(String),
    /// This backend does not do what was asked.
    #[error("store: {0}")]
    Unsupported(String),
    /// A kept document cannot be read.
    #[error("store: {0}")]
    Corrupt(String),
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct UserRecord {
    pub name: String,
    pub password_hash: String,
    pub full_name: String,
}

/// One inventory object: its type, name, parent and type-specific attributes.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ObjectRecord {
    pub moid: String,
    pub ty: String,
    pub name: String,
    pub parent: Option<String>,
    pub attrs: serde_json::Value,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PermissionRecord {
    pub entity: String,
    pub principal: String,
    pub group: bool,
    pub role_id: i32,
    pub propagate: bool,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SessionRecord {
    /// The secret the client presents (cookie / vmware-api-session-id).
    pub token: String,
    /// UserSession.key
    pub key: String,
    pub user: String,
    pub login_time: i64,
    pub last_active: i64,
    pub locale: String,
    pub ip: String,
    pub user_agent: String,
}

/// The store: PostgreSQL when `database` (or `VTWIN_DATABASE`) is a
/// `postgres://` URL, else SQLite in the data directory. `schema=auto` in
/// the URL gives the data directory a schema of its own, so servers with
/// different data directories can share one database.
pub fn open(data_dir: &std::path::Path, database: Option<&str>) -> anyhow::Result<std::sync::Arc<dyn Store>> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::create_dir_all(data_dir)?;
    // The data directory holds the store, the TLS key and the datastores:
    // its owner's alone.
    std::fs::set_permissions(data_dir, std::fs::Permissions::from_mode(0o700))?;
    let env = std::env::var("VTWIN_DATABASE").ok();
    match database.or(env.as_deref()).filter(|d| !d.is_empty()) {
        Some(url) if url.starts_with("postgres://") || url.starts_with("postgresql://") => {
            let url = if url.contains("schema=auto") {
                use sha2::Digest;
                let dir = std::fs::canonicalize(data_dir)?;
                let h = sha2::Sha256::digest(dir.to_string_lossy().as_bytes());
                url.replace("schema=auto", &format!("schema=d_{}", &hex::encode(h)[..20]))
            } else {
                url.to_string()
            };
            Ok(std::sync::Arc::new(postgres::PgStore::open(&url).map_err(|e| anyhow::anyhow!("PostgreSQL: {e}"))?))
        }
        Some(other) => {
            anyhow::bail!("--database must be a postgres:// URL (SQLite, the default, needs none), not {other}")
        }
        None => {
            let db = data_dir.join("vtwin.db");
            let store = sqlite::SqliteStore::open(&db)?;
            // SQLite makes its -wal and -shm files with the database's mode.
            for f in ["vtwin.db", "vtwin.db-wal", "vtwin.db-shm"] {
                let p = data_dir.join(f);
                if p.exists() {
                    std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o600))?;
                }
            }
            Ok(std::sync::Arc::new(store))
        }
    }
}

pub trait Store: Send + Sync {
    fn get_meta(&self, key: &str) -> Result<Option<String>>;
    fn set_meta(&self, key: &str, value: &str) -> Result<()>;

    fn put_user(&self, u: &UserRecord) -> Result<()>;
    fn get_user(&self, name: &str) -> Result<Option<UserRecord>>;
    fn list_users(&self) -> Result<Vec<UserRecord>>;

    fn put_objects(&self, objs: &[ObjectRecord]) -> Result<()>;
    fn delete_object(&self, moid: &str) -> Result<()>;
    fn list_objects(&self) -> Result<Vec<ObjectRecord>>;

    /// Add or replace the permission of (entity, principal, group).
    fn put_permission(&self, p: &PermissionRecord) -> Result<()>;
    fn remove_permission(&self, entity: &str, principal: &str, group: bool) -> Result<bool>;
    fn list_permissions(&self) -> Result<Vec<PermissionRecord>>;

    fn get_session(&self, token: &str) -> Result<Option<SessionRecord>>;
    /// Apply session changes in one transaction (the session writer batches them).
    fn apply_sessions(&self, ops: &[SessionOp]) -> Result<()>;

    /// Add a task (version 1). Other nodes are told of it.
    fn insert_task(&self, row: &TaskRow) -> Result<()>;
    /// Replace a task's record if its version is still `version`: the new
    /// version, or None when another writer changed it first (read it again
    /// and retry). Other nodes are told of the change.
    fn update_task(&self, key: &str, version: i64, live: bool, record: &str) -> Result<Option<i64>>;
    /// The tasks among `keys` that exist.
    fn get_tasks(&self, keys: &[String]) -> Result<Vec<TaskRow>>;
    fn delete_tasks(&self, keys: &[String]) -> Result<()>;
    /// Every task, in sequence order.
    fn list_tasks(&self) -> Result<Vec<TaskRow>>;
    /// A block of task sequence numbers no other node gets: (first, count).
    fn task_seqs(&self) -> Result<(i64, i64)>;

    /// Renew this node's lease for `lease_ms`.
    fn heartbeat(&self, node: &str, lease_ms: i64) -> Result<()>;
    /// Give up this node's lease at once (an orderly stop).
    fn release(&self, node: &str) -> Result<()>;
    /// Take over, exclusively, the live tasks of nodes that are gone: those
    /// whose lease has run out, and earlier lives of this node (owners
    /// starting with `previous`). Each row is claimed by one node only;
    /// the claimed rows are returned (now owned by `node`; `owner` says
    /// whose they were).
    fn claim_orphans(&self, node: &str, previous: &str) -> Result<Vec<TaskRow>>;
    /// Call `on` with the keys of tasks other nodes change, as they commit.
    /// False when there can be no other node (an embedded store).
    fn watch_tasks(&self, node: &str, on: Box<dyn Fn(TaskNote) + Send + Sync>) -> Result<bool>;

    /// Registered extensions, as (key, serialized Extension).
    fn put_extension(&self, key: &str, record: &str) -> Result<()>;
    fn delete_extension(&self, key: &str) -> Result<bool>;
    fn list_extensions(&self) -> Result<Vec<(String, String)>>;

    /// A number that changes when another process or node has changed
    /// users, permissions, inventory objects or extensions, so cached copies
    /// are reloaded only then.
    fn external_version(&self) -> Result<i64>;
    /// Inventory moId numbers: shared by the nodes when this returns true
    /// (the counter is moved past `at_least` first); false on a store with
    /// one node, which numbers its own.
    fn object_ids(&self, at_least: i64) -> Result<bool>;
    /// The next inventory moId number (a shared store only).
    fn next_object_id(&self) -> Result<i64>;
}

/// A task as kept: the record is the engine's, serialized; `version` grows
/// with every change; `owner` is the node that holds a live task (one that
/// has not finished and is run or held by a node).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TaskRow {
    pub key: String,
    pub seq: i64,
    pub version: i64,
    pub owner: String,
    pub live: bool,
    pub record: String,
}

/// What another node did to tasks.
#[derive(Clone, Debug)]
pub enum TaskNote {
    /// These tasks were added, changed or deleted.
    Changed(Vec<String>),
    /// Notes may have been missed (the watch reconnected): read everything.
    Resync,
}

#[derive(Clone, Debug)]
pub enum SessionOp {
    Put(SessionRecord),
    Delete(String),
}
