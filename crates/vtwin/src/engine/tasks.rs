//! The task engine: one durable record per task, its state machine, and
//! retention. No HTTP and no wire format: the vim25 Task view
//! (`mo/task.rs`) and later views render these records.
use super::Fault;
use crate::store::Store;
use chrono::{DateTime, TimeZone, Utc};
use parking_lot::RwLock;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;
use std::time::Duration;
use vmodl::{json, types, Data, MoRef, TypeId, TypeRef, Value, VersionId};

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
    pub user: String,
    pub queue_time: i64,
    pub start_time: Option<i64>,
    pub complete_time: Option<i64>,
    pub event_chain_id: i32,
    pub change_tag: Option<String>,
    pub parent_key: Option<String>,
    pub root_key: Option<String>,
    pub activation_id: Option<String>,
}

/// What a new task is about.
pub struct NewTask {
    pub name: Option<String>,
    pub description_id: String,
    pub entity: Option<(MoRef, String)>,
    pub cancelable: bool,
    pub user: String,
    pub parent_key: Option<String>,
    pub activation_id: Option<String>,
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

fn storage_version() -> VersionId {
    VersionId::by_wire("vim25", "9.1.0.0").expect("9.1.0.0 in the registry")
}

fn to_json(v: &Value) -> serde_json::Value {
    json::encode(v, TypeRef { ty: types::anyType, array: false }, storage_version())
}

fn from_json(v: &serde_json::Value, ty: TypeId) -> Option<Value> {
    json::decode(v, TypeRef { ty, array: false }, "stored").ok().flatten()
}

fn ms(t: DateTime<Utc>) -> i64 {
    t.timestamp_millis()
}

fn time(ms: i64) -> DateTime<Utc> {
    Utc.timestamp_millis_opt(ms).single().unwrap_or_else(Utc::now)
}

pub struct Tasks {
    store: Arc<dyn Store>,
    map: RwLock<HashMap<String, TaskRecord>>,
    /// Completed tasks by completion order, for pruning.
    completed: RwLock<BTreeMap<(i64, i64), String>>,
    seq: AtomicI64,
    retention: Retention,
    changes: tokio::sync::watch::Sender<u64>,
}

impl Tasks {
    /// Load the tasks kept in the store. A task that was queued or running
    /// when the process stopped cannot be resumed: it ends in error.
    pub fn load(store: Arc<dyn Store>, retention: Retention, changes: tokio::sync::watch::Sender<u64>) -> crate::store::Result<Tasks> {
        let mut map = HashMap::new();
        let mut completed = BTreeMap::new();
        let mut max_seq = 0;
        for (key, seq, rec) in store.list_tasks()? {
            max_seq = max_seq.max(seq);
            let Ok(mut t) = serde_json::from_str::<TaskRecord>(&rec) else {
                tracing::warn!(%key, "unreadable task record skipped");
                continue;
            };
            if !t.state.is_final() {
                let f = Fault::system_error("the server stopped while this task was queued or running");
                t.state = TaskState::Error;
                t.error = Some(json::encode_data(&f.data, storage_version()));
                t.error_message = Some(f.message);
                t.complete_time = Some(ms(Utc::now()));
                store.put_task(&t.key, t.seq, &serde_json::to_string(&t).expect("task json"))?;
            }
            completed.insert((t.complete_time.unwrap_or(0), t.seq), key.clone());
            map.insert(key, t);
        }
        Ok(Tasks { store, map: RwLock::new(map), completed: RwLock::new(completed), seq: AtomicI64::new(max_seq), retention, changes })
    }

    /// Persist a task and wake property-collector waiters.
    fn save(&self, t: &TaskRecord) -> Result<(), Fault> {
        let json = serde_json::to_string(t).map_err(|e| Fault::system_error(e.to_string()))?;
        self.store.put_task(&t.key, t.seq, &json)?;
        self.changes.send_modify(|v| *v += 1);
        Ok(())
    }

    pub fn exists(&self, key: &str) -> bool {
        self.map.read().contains_key(key)
    }

    pub fn get(&self, key: &str) -> Option<TaskRecord> {
        self.map.read().get(key).cloned()
    }

    pub fn create(&self, n: NewTask) -> Result<TaskRecord, Fault> {
        let seq = self.seq.fetch_add(1, Ordering::SeqCst) + 1;
        let key = format!("task-{seq}");
        // The root of a subtask is its parent's root, or the parent itself.
        let root_key = n.parent_key.as_ref().map(|p| self.get(p).and_then(|t| t.root_key.or(Some(t.key))).unwrap_or_else(|| p.clone()));
        let t = TaskRecord {
            key: key.clone(),
            seq,
            name: n.name,
            description_id: n.description_id,
            entity: n.entity.as_ref().map(|(m, _)| (m.ty.name().to_string(), m.value.clone())),
            entity_name: n.entity.map(|(_, name)| name),
            state: TaskState::Queued,
            cancelable: n.cancelable,
            cancelled: false,
            progress: None,
            description: None,
            result: None,
            error: None,
            error_message: None,
            user: n.user,
            queue_time: ms(Utc::now()),
            start_time: None,
            complete_time: None,
            event_chain_id: (seq % i32::MAX as i64) as i32,
            change_tag: None,
            parent_key: n.parent_key,
            root_key,
            activation_id: Some(n.activation_id.unwrap_or_else(|| uuid::Uuid::new_v4().to_string())),
        };
        self.map.write().insert(key.clone(), t.clone());
        if let Err(e) = self.save(&t) {
            self.map.write().remove(&key);
            return Err(e);
        }
        self.prune()?;
        Ok(t)
    }

    /// Apply `f` to a task that has not finished and persist the result.
    fn update(&self, key: &str, f: impl FnOnce(&mut TaskRecord) -> Result<(), Fault>) -> Result<TaskRecord, Fault> {
        let mut map = self.map.write();
        let t = map.get_mut(key).ok_or_else(|| Fault::plain_not_found(format!("task {key} not found")))?;
        let mut next = t.clone();
        f(&mut next)?;
        self.save(&next)?;
        if next.state.is_final() && !t.state.is_final() {
            self.completed.write().insert((next.complete_time.unwrap_or(0), next.seq), key.to_string());
        }
        *t = next.clone();
        Ok(next)
    }

    fn invalid_state(t: &TaskRecord, what: &str) -> Fault {
        Fault::new(types::InvalidState, format!("{what}: task {} is {}{}", t.key, t.state.as_str(), if t.cancelled { " (cancelled)" } else { "" }))
    }

    /// SetTaskState: queued → running → success | error; a finished task
    /// never changes again.
    pub fn set_state(&self, key: &str, state: TaskState, result: Option<&Value>, fault: Option<&Fault>) -> Result<TaskRecord, Fault> {
        self.update(key, |t| {
            if t.state.is_final() {
                return Err(Self::invalid_state(t, "the task has already completed"));
            }
            if state == TaskState::Queued && t.state == TaskState::Running {
                return Err(Self::invalid_state(t, "a running task cannot go back to queued"));
            }
            let now = ms(Utc::now());
            if state != TaskState::Queued && t.start_time.is_none() {
                t.start_time = Some(now);
            }
            match state {
                TaskState::Error => {
                    let f = fault.cloned().unwrap_or_else(|| Fault::system_error("the task failed"));
                    t.error = Some(json::encode_data(&f.data, storage_version()));
                    t.error_message = Some(f.message);
                    t.complete_time = Some(now);
                }
                TaskState::Success => {
                    t.complete_time = Some(now);
                    t.progress = Some(100);
                }
                _ => {}
            }
            if let Some(r) = result {
                t.result = Some(to_json(r));
            }
            t.state = state;
            Ok(())
        })
    }

    /// UpdateProgress: only while running; values outside 0–100 are clamped.
    pub fn update_progress(&self, key: &str, percent: i32) -> Result<TaskRecord, Fault> {
        self.update(key, |t| {
            if t.state != TaskState::Running {
                return Err(Self::invalid_state(t, "progress can only be reported while the task runs"));
            }
            t.progress = Some(percent.clamp(0, 100));
            Ok(())
        })
    }

    pub fn set_description(&self, key: &str, message: &Data) -> Result<TaskRecord, Fault> {
        self.update(key, |t| {
            if t.state.is_final() {
                return Err(Self::invalid_state(t, "the task has already completed"));
            }
            t.description = Some(json::encode_data(message, storage_version()));
            Ok(())
        })
    }

    /// CancelTask: NotSupported when the task is not cancelable, InvalidState
    /// when it has finished. Cancelling is final: the task ends in error with
    /// RequestCanceled and no later state change is accepted.
    pub fn cancel(&self, key: &str) -> Result<TaskRecord, Fault> {
        self.update(key, |t| {
            if !t.cancelable {
                return Err(Fault::not_supported(format!("task {} cannot be cancelled", t.key)));
            }
            if t.state.is_final() {
                return Err(Self::invalid_state(t, "the task has already completed"));
            }
            let now = ms(Utc::now());
            let f = Fault::new(types::RequestCanceled, "The task was canceled by a user.");
            t.cancelled = true;
            t.state = TaskState::Error;
            t.error = Some(json::encode_data(&f.data, storage_version()));
            t.error_message = Some(f.message);
            t.start_time.get_or_insert(now);
            t.complete_time = Some(now);
            Ok(())
        })
    }

    /// Tasks not finished, and those finished in the last ten minutes, newest
    /// last (as TaskManager.recentTask shows them).
    pub fn recent(&self) -> Vec<String> {
        let horizon = ms(Utc::now()) - 10 * 60 * 1000;
        let map = self.map.read();
        let mut v: Vec<&TaskRecord> = map.values().filter(|t| !t.state.is_final() || t.complete_time.unwrap_or(0) >= horizon).collect();
        v.sort_by_key(|t| t.seq);
        let skip = v.len().saturating_sub(200);
        v.into_iter().skip(skip).map(|t| t.key.clone()).collect()
    }

    /// Drop completed tasks beyond the retention count or age.
    pub fn prune(&self) -> Result<usize, Fault> {
        let oldest_allowed = ms(Utc::now()) - self.retention.max_age.as_millis() as i64;
        let mut drop = vec![];
        {
            let mut done = self.completed.write();
            while let Some((&(when, seq), _)) = done.iter().next() {
                if done.len() > self.retention.max_completed || when < oldest_allowed {
                    if let Some(k) = done.remove(&(when, seq)) {
                        drop.push(k);
                    }
                } else {
                    break;
                }
            }
        }
        if !drop.is_empty() {
            self.store.delete_tasks(&drop)?;
            let mut map = self.map.write();
            for k in &drop {
                map.remove(k);
            }
        }
        Ok(drop.len())
    }

    /// The vim25 TaskInfo of a task.
    pub fn info(&self, t: &TaskRecord) -> Data {
        let task = MoRef::new(types::Task, t.key.clone());
        let mut d = Data::new(types::TaskInfo)
            .with("key", t.key.clone())
            .with("task", task)
            .with("descriptionId", t.description_id.clone())
            .with("state", Value::enum_value(types::TaskInfoState, t.state.as_str()))
            .with("cancelled", t.cancelled)
            .with("cancelable", t.cancelable)
            .with("reason", Data::new(types::TaskReasonUser).with("userName", t.user.clone()))
            .with("queueTime", time(t.queue_time))
            .with("eventChainId", t.event_chain_id)
            .with_opt("name", t.name.clone().map(|n| Value::Typed(types::MethodName, n)))
            .with_opt("entityName", t.entity_name.clone())
            .with_opt("progress", t.progress)
            .with_opt("startTime", t.start_time.map(time))
            .with_opt("completeTime", t.complete_time.map(time))
            .with_opt("changeTag", t.change_tag.clone())
            .with_opt("parentTaskKey", t.parent_key.clone())
            .with_opt("rootTaskKey", t.root_key.clone())
            .with_opt("activationId", t.activation_id.clone());
        if let Some((ty, moid)) = &t.entity {
            if let Some(ty) = TypeId::by_name(ty) {
                d.set("entity", MoRef::new(ty, moid.clone()));
            }
        }
        if let Some(v) = t.description.as_ref().and_then(|j| from_json(j, types::LocalizableMessage)) {
            d.set("description", v);
        }
        if let Some(v) = t.result.as_ref().and_then(|j| from_json(j, types::anyType)) {
            d.set("result", v);
        }
        if let Some(Value::Data(fault)) = t.error.as_ref().and_then(|j| from_json(j, types::MethodFault)) {
            // SOAP carries a LocalizedMethodFault here; VI/JSON flattens it.
            d.set(
                "error",
                Data::new(types::LocalizedMethodFault).with("fault", Value::Data(fault)).with_opt("localizedMessage", t.error_message.clone()),
            );
        }
        d
    }
}
