//! The vAPI view of a task: its five states and the extension-task
//! update rules (`update_spec`), applied to a record.
use super::record::{Kept, TaskRecord, TaskState};
use crate::engine::fault::Fault;
use vmodl::{types, Data, Value};

/// The five vAPI task states. vim25 has four: BLOCKED is running there.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum VapiStatus {
    Pending,
    Running,
    Blocked,
    Succeeded,
    Failed,
}

impl VapiStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            VapiStatus::Pending => "PENDING",
            VapiStatus::Running => "RUNNING",
            VapiStatus::Blocked => "BLOCKED",
            VapiStatus::Succeeded => "SUCCEEDED",
            VapiStatus::Failed => "FAILED",
        }
    }
    pub fn parse(s: &str) -> Option<VapiStatus> {
        Some(match s {
            "PENDING" => VapiStatus::Pending,
            "RUNNING" => VapiStatus::Running,
            "BLOCKED" => VapiStatus::Blocked,
            "SUCCEEDED" => VapiStatus::Succeeded,
            "FAILED" => VapiStatus::Failed,
            _ => return None,
        })
    }
    fn is_final(self) -> bool {
        matches!(self, VapiStatus::Succeeded | VapiStatus::Failed)
    }
}

impl TaskRecord {
    pub fn vapi_status(&self) -> VapiStatus {
        match self.state {
            TaskState::Queued => VapiStatus::Pending,
            TaskState::Running if self.blocked => VapiStatus::Blocked,
            TaskState::Running => VapiStatus::Running,
            TaskState::Success => VapiStatus::Succeeded,
            TaskState::Error => VapiStatus::Failed,
        }
    }
    /// The vAPI service and operation: the descriptionId split at its last
    /// dot (`Folder.rename` → `Folder`, `rename`).
    pub fn service_operation(&self) -> (&str, &str) {
        match self.description_id.rsplit_once('.') {
            Some((s, o)) => (s, o),
            None => ("", self.description_id.as_str()),
        }
    }
}

/// A vAPI update of a task (the extension-task `update_spec`, also used for
/// the initial values of `create_spec`). Unset fields leave the task as it is.
#[derive(Default, Clone, Debug)]
pub struct VapiUpdate {
    pub status: Option<VapiStatus>,
    /// (total, completed)
    pub progress: Option<(i64, i64)>,
    /// A vim25 LocalizableMessage.
    pub description: Option<Data>,
    /// The error as a vim25 fault and in its vAPI form.
    pub error: Option<(Fault, serde_json::Value)>,
    pub result: Option<serde_json::Value>,
    pub start_time: Option<i64>,
    pub end_time: Option<i64>,
}

impl VapiUpdate {
    fn is_empty(&self) -> bool {
        self.status.is_none()
            && self.progress.is_none()
            && self.description.is_none()
            && self.error.is_none()
            && self.result.is_none()
            && self.start_time.is_none()
            && self.end_time.is_none()
    }
}

fn not_allowed(t: &TaskRecord, what: &str) -> Fault {
    Fault::new(types::InvalidState, format!("{what} (task {} is {})", t.key, t.vapi_status().as_str()))
}

/// The extension-task state machine of the vAPI update page, applied to one
/// record: `InvalidState` is vAPI's not_allowed_in_current_state,
/// `InvalidArgument` its invalid_argument.
pub(super) fn apply_vapi(t: &mut TaskRecord, u: &VapiUpdate, now: i64) -> Result<(), Fault> {
    if t.state.is_final() {
        if u.is_empty() {
            return Ok(());
        }
        return Err(not_allowed(t, "a completed task cannot be changed"));
    }
    let cur = t.vapi_status();
    let new = u.status.unwrap_or(cur);
    if cur != VapiStatus::Pending && new == VapiStatus::Pending {
        return Err(not_allowed(t, "a started task cannot return to PENDING"));
    }
    if let Some((total, completed)) = u.progress {
        if cur != VapiStatus::Running && new != VapiStatus::Running {
            return Err(not_allowed(t, "percent_done can only be set on a RUNNING task"));
        }
        if total < 0 || completed < 0 || completed > total {
            return Err(Fault::invalid_argument(
                "percent_done",
                format!("completed {completed} must be between 0 and total {total}"),
            ));
        }
        if let (Some(ot), Some(oc)) = (t.progress_total, t.progress_completed) {
            // Compare fractions, so a changed total is judged fairly.
            if (completed as i128) * (ot as i128) < (oc as i128) * (total as i128) {
                return Err(Fault::invalid_argument(
                    "percent_done",
                    format!("completed can only grow (was {oc} of {ot}, now {completed} of {total})"),
                ));
            }
        }
    }
    if u.error.is_some() && new != VapiStatus::Failed {
        return Err(Fault::invalid_argument("error", "error is only relevant when the status is FAILED"));
    }
    if new == VapiStatus::Failed && u.error.is_none() {
        return Err(Fault::invalid_argument("error", "a FAILED task needs an error"));
    }
    if u.result.is_some() && new == VapiStatus::Pending {
        return Err(Fault::invalid_argument("result", "result is only relevant from RUNNING on"));
    }
    if u.start_time.is_some() && new == VapiStatus::Pending {
        return Err(not_allowed(t, "start_time can only be set on a task that has started"));
    }
    if u.end_time.is_some() && !new.is_final() {
        return Err(not_allowed(t, "end_time can only be set on a completed task"));
    }
    let start = if new == VapiStatus::Pending { None } else { Some(u.start_time.or(t.start_time).unwrap_or(now)) };
    let end = if new.is_final() { Some(u.end_time.unwrap_or(now)) } else { None };
    if let (Some(s), Some(e)) = (start, end) {
        if e < s {
            return Err(Fault::invalid_argument("end_time", "end_time is before start_time"));
        }
    }
    if let Some(d) = &u.description {
        t.description = Some(Kept(d.clone().into()));
    }
    if let Some((total, completed)) = u.progress {
        t.progress_total = Some(total);
        t.progress_completed = Some(completed);
        t.progress = Some(if total == 0 { 0 } else { ((completed as i128 * 100) / total as i128) as i32 });
    }
    if let Some(r) = &u.result {
        t.vapi_result = Some(r.clone());
        // A string result reads the same in vim25.
        t.result = r.as_str().map(|s| Kept(Value::String(s.to_string())));
    }
    if let Some((f, v)) = &u.error {
        t.error = Some(Kept(f.data.clone().into()));
        t.error_message = Some(f.message.clone());
        t.vapi_error = Some(v.clone());
    }
    t.start_time = start;
    t.complete_time = end;
    t.blocked = new == VapiStatus::Blocked;
    t.state = match new {
        VapiStatus::Pending => TaskState::Queued,
        VapiStatus::Running | VapiStatus::Blocked => TaskState::Running,
        VapiStatus::Succeeded => TaskState::Success,
        VapiStatus::Failed => TaskState::Error,
    };
    if t.state == TaskState::Success {
        t.progress = Some(100);
    }
    Ok(())
}
