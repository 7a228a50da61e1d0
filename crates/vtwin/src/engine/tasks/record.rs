//! The task record: one durable record per task, whatever API made it,
//! with the fields each API keeps in it (the VCD ones in `VcdTask`; their
//! rules and views are in `vim`, `vapi` and `vcd`, which import this and
//! not the other way round), and how its vim25 values are kept.
pub use crate::engine::kept::Kept;
use chrono::{DateTime, TimeZone, Utc};
use serde::{Deserialize, Serialize};
use std::time::Duration;
use vmodl::MoRef;

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

/// One task, as the store keeps it (JSON). Values that are vim25 data
/// (result, fault, description) are [`Kept`] values.
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
    /// A LocalizableMessage.
    #[serde(default, deserialize_with = "crate::engine::kept::readable")]
    pub description: Option<Kept>,
    #[serde(default, deserialize_with = "crate::engine::kept::readable")]
    pub result: Option<Kept>,
    /// A MethodFault.
    #[serde(default, deserialize_with = "crate::engine::kept::readable")]
    pub error: Option<Kept>,
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
    pub vcd: Option<VcdTask>,
    /// The store's version of this record (not part of it).
    #[serde(skip)]
    pub version: i64,
}

/// A reference to an entity (Owner, User, Organization, ResultReference).
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
pub struct Ref {
    pub href: String,
    #[serde(default)]
    pub ty: Option<String>,
    #[serde(default)]
    pub name: Option<String>,
    #[serde(default)]
    pub id: Option<String>,
}

/// A task's Error element.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
pub struct TaskError {
    pub major: i32,
    pub minor: String,
    pub message: String,
    #[serde(default)]
    pub vendor: Option<String>,
    #[serde(default)]
    pub stack: Option<String>,
}

/// The VCD fields of a task record (the rules and view of them are in
/// `tasks::vcd`).
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct VcdTask {
    /// The uuid of `urn:vcloud:task:<uuid>` and `/api/task/<uuid>`.
    pub id: String,
    /// The organization's id.
    pub org: String,
    /// queued, preRunning, running, success, error or aborted.
    pub status: String,
    pub name: String,
    #[serde(default)]
    pub operation: Option<String>,
    #[serde(default)]
    pub operation_name: Option<String>,
    #[serde(default)]
    pub operation_key: Option<String>,
    #[serde(default)]
    pub service_namespace: Option<String>,
    #[serde(default)]
    pub description: Option<String>,
    #[serde(default)]
    pub details: Option<String>,
    #[serde(default)]
    pub owner: Option<Ref>,
    /// (user id, name)
    #[serde(default)]
    pub user: Option<(String, String)>,
    #[serde(default)]
    pub expiry: Option<i64>,
    #[serde(default)]
    pub cancel_requested: bool,
    #[serde(default)]
    pub error: Option<TaskError>,
    /// The Params and Result elements' inner XML, kept as given.
    #[serde(default)]
    pub params: Option<String>,
    #[serde(default)]
    pub result: Option<String>,
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

pub(super) fn ms(t: DateTime<Utc>) -> i64 {
    t.timestamp_millis()
}

pub(super) fn time(ms: i64) -> DateTime<Utc> {
    Utc.timestamp_millis_opt(ms).single().unwrap_or_else(Utc::now)
}

#[cfg(test)]
mod tests {
    use super::*;
    use vmodl::{kept, types, Data, Value};

    /// A record as e4d0207 and earlier builds wrote it: values in VI/JSON.
    const EARLIER: &str = r#"{"key":"task-7","seq":7,"name":"CreateDisk_Task","description_id":"d",
        "entity":null,"entity_name":null,"state":"error","cancelable":false,"cancelled":false,"progress":null,
        "description":{"_typeName":"LocalizableMessage","key":"com.example.msg","message":"nightly"},
        "result":{"_typeName":"string","_value":"done"},
        "error":{"_typeName":"InvalidName","faultMessage":[{"_typeName":"LocalizableMessage","key":"k","message":"m"}],"name":"web-2"},
        "error_message":"m","user":"u","queue_time":1,"start_time":null,"complete_time":null,"event_chain_id":7,
        "change_tag":null,"parent_key":null,"root_key":null,"activation_id":null}"#;

    #[test]
    fn records_of_earlier_builds_read_and_are_written_in_the_kept_form() {
        let t: TaskRecord = serde_json::from_str(EARLIER).unwrap();
        let fault = Data::new(types::InvalidName)
            .with(
                "faultMessage",
                Value::Array(
                    types::LocalizableMessage,
                    vec![Data::new(types::LocalizableMessage).with("key", "k").with("message", "m").into()],
                ),
            )
            .with("name", "web-2");
        assert_eq!(t.error, Some(Kept(fault.into())));
        assert_eq!(t.result, Some(Kept(Value::String("done".into()))));
        assert_eq!(t.description.as_ref().and_then(|d| d.0.as_data()).and_then(|d| d.str("message")), Some("nightly"));
        let text = serde_json::to_string(&t).unwrap();
        let j: serde_json::Value = serde_json::from_str(&text).unwrap();
        for f in ["description", "result", "error"] {
            assert!(kept::is_kept(&j[f]), "{f}: {}", j[f]);
        }
        let again: TaskRecord = serde_json::from_str(&text).unwrap();
        assert_eq!((again.description, again.result, again.error), (t.description, t.result, t.error));
    }

    #[test]
    fn a_value_that_no_longer_reads_is_left_out_and_the_record_kept() {
        let text = EARLIER.replace(r#""_typeName":"InvalidName""#, r#""_typeName":"NoSuchFault""#);
        let t: TaskRecord = serde_json::from_str(&text).unwrap();
        assert_eq!(t.error, None);
        assert_eq!(t.error_message.as_deref(), Some("m"));
    }
}
