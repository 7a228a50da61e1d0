//! The vCloud Director view of a task: its fields (status, owner, error,
//! params and result as given), the rules of the TaskType page for a
//! client's create and update, and how the VCD status follows a change
//! made through vim25 or vAPI. No HTTP in here: the wire layer maps a
//! `Refused` to its error document.
use super::record::{Kept, TaskRecord, TaskState};
pub use super::record::{Ref, TaskError, VcdTask};
use crate::engine::fault::Fault;
use vmodl::types;

/// A change the TaskType rules refuse (a bad request, in VCD's terms).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct Refused(pub String);

impl Refused {
    fn new(message: impl Into<String>) -> Refused {
        Refused(message.into())
    }
}

/// What a client sends to create or update a task (parsed from XML or
/// JSON by the wire layer); None leaves a field as it is.
#[derive(Clone, Debug, Default)]
pub struct TaskSpec {
    pub name: Option<String>,
    pub status: Option<String>,
    pub operation: Option<String>,
    pub operation_name: Option<String>,
    pub operation_key: Option<String>,
    pub service_namespace: Option<String>,
    pub description: Option<String>,
    pub details: Option<String>,
    pub progress: Option<i64>,
    pub owner: Option<Ref>,
    pub error: Option<TaskError>,
    pub params: Option<String>,
    pub result: Option<String>,
}

pub const STATUSES: &[&str] = &["queued", "preRunning", "running", "success", "error", "aborted"];

/// A status name in any case, also as vcd-cli spells them (`SUCCESS`,
/// `PRE_RUNNING`, `CANCELED` for aborted) → its canonical spelling.
pub fn parse_status(s: &str) -> Result<&'static str, Refused> {
    let k: String = s.chars().filter(|c| *c != '_').flat_map(char::to_lowercase).collect();
    if k == "canceled" || k == "cancelled" {
        return Ok("aborted");
    }
    STATUSES
        .iter()
        .copied()
        .find(|x| x.eq_ignore_ascii_case(&k))
        .ok_or_else(|| Refused(format!("'{s}' is not a task status ({})", STATUSES.join(", "))))
}

pub fn is_final(status: &str) -> bool {
    matches!(status, "success" | "error" | "aborted")
}

fn rank(status: &str) -> u8 {
    match status {
        "queued" => 0,
        "preRunning" => 1,
        "running" => 2,
        _ => 3,
    }
}

fn engine_state(status: &str) -> TaskState {
    match status {
        "queued" | "preRunning" => TaskState::Queued,
        "running" => TaskState::Running,
        "success" => TaskState::Success,
        _ => TaskState::Error,
    }
}

/// Apply a spec to a task's record: the rules of the TaskType page.
pub fn apply(t: &mut TaskRecord, spec: &TaskSpec, now: i64, creating: bool) -> Result<(), Refused> {
    let engine_final = t.state.is_final();
    let v = t.vcd.as_mut().expect("a VCD task");
    if is_final(&v.status) || engine_final {
        return Err(Refused::new(format!("task {} is {} and can no longer change", v.id, v.status)));
    }
    let status = match &spec.status {
        Some(s) => parse_status(s)?,
        None => STATUSES.iter().copied().find(|x| *x == v.status).unwrap_or("queued"),
    };
    if !creating && rank(status) < rank(&v.status) {
        return Err(Refused::new(format!("task {} is {}: it cannot go back to {status}", v.id, v.status)));
    }
    if let Some(p) = spec.progress {
        if !(0..=100).contains(&p) {
            return Err(Refused::new(format!("progress {p} is not between 0 and 100")));
        }
    }
    take_fields(v, spec, creating)?;
    if status == "error" && v.error.is_none() {
        v.error = Some(TaskError {
            major: 500,
            minor: "INTERNAL_SERVER_ERROR".into(),
            message: v.details.clone().unwrap_or_else(|| "The task failed.".into()),
            vendor: None,
            stack: None,
        });
    }
    v.status = status.to_string();
    if let Some(p) = spec.progress {
        t.progress = Some(p as i32);
    }
    let state = engine_state(status);
    if state != TaskState::Queued && t.start_time.is_none() {
        t.start_time = Some(now);
    }
    if state.is_final() {
        t.complete_time = Some(now);
        if status == "success" {
            t.progress = Some(100);
        } else {
            let msg = v.error.as_ref().map_or_else(|| "The task was aborted.".into(), |e| e.message.clone());
            let f = if status == "aborted" {
                Fault::new(types::RequestCanceled, msg.clone())
            } else {
                Fault::system_error(msg.clone())
            };
            t.error = Some(Kept(f.data.clone().into()));
            t.error_message = Some(msg);
            t.cancelled = status == "aborted";
        }
    }
    t.state = state;
    Ok(())
}

/// The fields a create (all of them) or an update (those a client may
/// change later) gives, checked: serviceNamespace 1 to 128 characters and
/// not VCD's own, a name not empty.
fn take_fields(v: &mut VcdTask, spec: &TaskSpec, creating: bool) -> Result<(), Refused> {
    if creating {
        if let Some(ns) = &spec.service_namespace {
            if ns.is_empty() || ns.chars().count() > 128 || ns.starts_with("com.vmware.vcloud") {
                return Err(Refused::new(format!(
                    "serviceNamespace '{ns}' must be 1 to 128 characters and not start with com.vmware.vcloud"
                )));
            }
        }
        v.service_namespace = spec.service_namespace.clone();
        v.operation_key = spec.operation_key.clone();
        v.owner = spec.owner.clone();
        if let Some(n) = &spec.operation_name {
            v.operation_name = Some(n.clone());
        }
    }
    if let Some(n) = &spec.name {
        if n.is_empty() {
            return Err(Refused::new("a task needs a name"));
        }
        v.name = n.clone();
    }
    for (dst, src) in [
        (&mut v.operation, &spec.operation),
        (&mut v.description, &spec.description),
        (&mut v.details, &spec.details),
        (&mut v.params, &spec.params),
        (&mut v.result, &spec.result),
    ] {
        if src.is_some() {
            *dst = src.clone();
        }
    }
    if spec.error.is_some() {
        v.error = spec.error.clone();
    }
    Ok(())
}

/// After a vim25 or vAPI change ended a VCD task (CancelTask,
/// SetTaskState, a vAPI update), its VCD status follows.
pub fn follow_engine(t: &mut TaskRecord) {
    let (state, cancelled, msg) = (t.state, t.cancelled, t.error_message.clone());
    let Some(v) = t.vcd.as_mut() else { return };
    if !state.is_final() || is_final(&v.status) {
        if state == TaskState::Running && rank(&v.status) < 2 {
            v.status = "running".into();
        }
        return;
    }
    v.status = match (state, cancelled) {
        (TaskState::Success, _) => "success",
        (_, true) => "aborted",
        _ => "error",
    }
    .into();
    if cancelled {
        v.cancel_requested = true;
    }
    if state == TaskState::Error && v.error.is_none() {
        v.error = Some(TaskError {
            major: 500,
            minor: "INTERNAL_SERVER_ERROR".into(),
            message: msg.unwrap_or_else(|| "The task failed.".into()),
            vendor: None,
            stack: None,
        });
    }
}
