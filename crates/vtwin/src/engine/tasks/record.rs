//! The task record: one durable record per task, whatever API made it,
//! and how its vim25 values are kept.
use chrono::{DateTime, TimeZone, Utc};
use serde::{Deserialize, Serialize};
use std::time::Duration;
use vmodl::{json, types, MoRef, TypeId, TypeRef, Value, VersionId};

#[derive(Copy, Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TaskState {
    Queued,
    Running,
    Success,
    Error,
}

impl TaskState {
    pub fn as_str(self) -> &'static str {
        match self {
            TaskState::Queued => "queued",
            TaskState::Running => "running",
            TaskState::Success => "success",
            TaskState::Error => "error",
        }
    }
    pub fn parse(s: &str) -> Option<TaskState> {
        Some(match s {
            "queued" => TaskState::Queued,
            "running" => TaskState::Running,
            "success" => TaskState::Success,
            "error" => TaskState::Error,
            _ => return None,
        })
    }
    pub fn is_final(self) -> bool {
        matches!(self, TaskState::Success | TaskState::Error)
    }
}

/// One task. Values that are vim25 data (result, fault, description) are
/// kept in their VI/JSON form so the record serializes as plain JSON.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct TaskRecord {
    pub key: String,
    pub seq: i64,
    /// Wire method name (`UpdateVirtualMachineFiles_Task`); None for extension tasks.
    pub name: Option<String>,
    pub description_id: String,
    /// (type, moId) of the entity the task works on.
    pub entity: Option<(String, String)>,
    pub entity_name: Option<String>,
    pub state: TaskState,
    pub cancelable: bool,
    pub cancelled: bool,
    pub progress: Option<i32>,
    pub description: Option<serde_json::Value>,
    pub result: Option<serde_json::Value>,
    pub error: Option<serde_json::Value>,
    pub error_message: Option<String>,
    /// The user the task shows (an extension may name the user it works for).
    pub user: String,
    /// The session user that made the task, whatever `user` says: the one
    /// its caps count against. Absent in records of earlier builds.
    #[serde(default)]
    pub creator: Option<String>,
    pub queue_time: i64,
    pub start_time: Option<i64>,
    pub complete_time: Option<i64>,
    pub event_chain_id: i32,
    pub change_tag: Option<String>,
    pub parent_key: Option<String>,
    pub root_key: Option<String>,
    pub activation_id: Option<String>,
    /// vAPI BLOCKED (vim25 shows it as running).
    #[serde(default)]
    pub blocked: bool,
    /// vAPI progress as total/completed; vim25 progress is its percentage.
    #[serde(default)]
    pub progress_total: Option<i64>,
    #[serde(default)]
    pub progress_completed: Option<i64>,
    /// A vAPI error given by a vAPI client, as `{"type": name, "value": fields}`.
    #[serde(default)]
    pub vapi_error: Option<serde_json::Value>,
    /// A vAPI (opaque) result given by a vAPI client.
    #[serde(default)]
    pub vapi_result: Option<serde_json::Value>,
    /// A vAPI target that names no inventory object, as (type, id).
    #[serde(default)]
    pub target: Option<(String, String)>,
    /// vCloud Director's fields, for a VCD task.
    #[serde(default)]
    pub vcd: Option<super::vcd::VcdTask>,
    /// The store's version of this record (not part of it).
    #[serde(skip)]
    pub version: i64,
}

impl TaskRecord {
    /// Is the task held by a node: not finished, and run or kept by the
    /// node that made it (a VCD external task is held by its client)?
    pub fn is_live(&self) -> bool {
        !self.state.is_final() && self.vcd.is_none()
    }
}

impl TaskRecord {
    /// Whose caps the task counts against: the session user that made it.
    pub fn quota_user(&self) -> &str {
        self.creator.as_deref().unwrap_or(&self.user)
    }
}

/// What a new task is about.
pub struct NewTask {
    pub name: Option<String>,
    pub description_id: String,
    pub entity: Option<(MoRef, String)>,
    pub cancelable: bool,
    pub user: String,
    /// The session user that asks for it (see `TaskRecord::creator`).
    pub creator: Option<String>,
    pub parent_key: Option<String>,
    pub activation_id: Option<String>,
    /// A vAPI target that names no inventory object.
    pub target: Option<(String, String)>,
}

/// How long completed tasks are kept: at most `max_completed` of them, none
/// older than `max_age`.
#[derive(Clone, Copy, Debug)]
pub struct Retention {
    pub max_completed: usize,
    pub max_age: Duration,
}

impl Default for Retention {
    fn default() -> Self {
        Retention { max_completed: 10_000, max_age: Duration::from_secs(24 * 3600) }
    }
}

/// Records are kept in the widest release: vSAN 9.1 includes vim25 9.1, so
/// CNS results (vSAN types) keep every field.
pub fn storage_version() -> VersionId {
    VersionId::by_wire("vsan", "9.1.0.0")
        .or_else(|| VersionId::by_wire("vim25", "9.1.0.0"))
        .expect("9.1.0.0 in the registry")
}

pub(super) fn to_json(v: &Value) -> serde_json::Value {
    json::encode(v, TypeRef { ty: types::anyType, array: false }, storage_version())
}

pub(super) fn from_json(v: &serde_json::Value, ty: TypeId) -> Option<Value> {
    json::decode(v, TypeRef { ty, array: false }, "stored").ok().flatten()
}

pub(super) fn ms(t: DateTime<Utc>) -> i64 {
    t.timestamp_millis()
}

pub(super) fn time(ms: i64) -> DateTime<Utc> {
    Utc.timestamp_millis_opt(ms).single().unwrap_or_else(Utc::now)
}
