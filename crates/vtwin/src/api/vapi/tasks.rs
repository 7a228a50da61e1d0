//! The vAPI view of the task engine: `com.vmware.cis.tasks` (get, list,
//! cancel) and `com.vmware.vcenter.extension.tasks` (create, update). The
//! records and their rules live in `engine::tasks`; this file translates.
use super::value::{message, V};
use super::VapiError;
use crate::engine::inventory::ROOT_FOLDER;
use crate::engine::tasks::{NewTask, TaskRecord, VapiStatus, VapiUpdate};
use crate::engine::{Ctx, Engine, Fault};
use chrono::{DateTime, SecondsFormat, TimeZone, Utc};
use serde_json::{json, Value as J};
use std::collections::HashSet;
use vmodl::{types, Data, MoRef, TypeId, Value};

/// A vAPI task id: the vim25 Task moId, a colon and this server's id
/// (govmomi takes the part before the colon as the Task moId).
pub fn task_id(eng: &Engine, key: &str) -> String {
    format!("{key}:{}", eng.instance_uuid())
}

/// The vim25 task key of a vAPI task id.
pub fn task_key(id: &str) -> &str {
    id.split_once(':').map_or(id, |(k, _)| k)
}

fn time(ms: i64) -> String {
    Utc.timestamp_millis_opt(ms).single().unwrap_or_else(Utc::now).to_rfc3339_opts(SecondsFormat::Millis, true)
}

fn parse_time(field: &str, j: &J) -> Result<i64, VapiError> {
    j.as_str()
        .and_then(|s| DateTime::parse_from_rfc3339(s).ok())
        .map(|t| t.timestamp_millis())
        .ok_or_else(|| VapiError::invalid_argument(format!("{field} is not a date-time: {j}")))
}

/// A vim25 fault as a vAPI standard error name.
pub fn error_kind(f: &Fault) -> &'static str {
    let ty = f.data.ty;
    let is = |t: TypeId| ty.is_a(t);
    if is(types::NotAuthenticated) || is(types::InvalidLogin) {
        "unauthenticated"
    } else if is(types::NoPermission) {
        "unauthorized"
    } else if is(types::NotFound) || is(types::ManagedObjectNotFound) {
        "not_found"
    } else if is(types::InvalidState) {
        "not_allowed_in_current_state"
    } else if is(types::NotSupported) {
        "unsupported"
    } else if is(types::RequestCanceled) {
        "canceled"
    } else if is(types::AlreadyExists) {
        "already_exists"
    } else if is(types::ResourceInUse) {
        "resource_in_use"
    } else if is(types::Timedout) {
        "timed_out"
    } else if is(types::LimitExceeded) {
        "unable_to_allocate_resource"
    } else if is(types::InvalidArgument)
        || is(types::InvalidRequest)
        || is(types::InvalidType)
        || is(types::InvalidProperty)
    {
        "invalid_argument"
    } else {
        "error"
    }
}

/// A vAPI standard error name as the vim25 fault type a vim25 client sees.
fn fault_type(kind: &str) -> TypeId {
    match kind {
        "not_found" => types::NotFound,
        "invalid_argument" | "invalid_request" | "unexpected_input" => types::InvalidArgument,
        "not_allowed_in_current_state" => types::InvalidState,
        "unsupported" => types::NotSupported,
        "canceled" => types::RequestCanceled,
        "already_exists" => types::AlreadyExists,
        "resource_in_use" | "resource_busy" => types::ResourceInUse,
        "timed_out" => types::Timedout,
        _ => types::SystemError,
    }
}

/// A vAPI error value as stored with a task: `{"type": kind, "messages": […]}`.
fn stored_error(kind: &str, messages: Vec<J>) -> J {
    json!({"type": kind, "messages": messages})
}

fn stored_message(j: &J) -> J {
    json!({
        "id": j.get("id").and_then(J::as_str).unwrap_or("com.vmware.vtwin.task.error"),
        "default_message": j.get("default_message").and_then(J::as_str).unwrap_or(""),
        "args": j.get("args").cloned().filter(J::is_array).unwrap_or(json!([])),
    })
}

fn render_error(kind: &str, messages: &[J]) -> V {
    let msgs = messages
        .iter()
        .map(|m| {
            let args: Vec<String> = m["args"]
                .as_array()
                .map(|a| a.iter().map(|x| x.as_str().map_or_else(|| x.to_string(), str::to_string)).collect())
                .unwrap_or_default();
            message(m["id"].as_str().unwrap_or(""), m["default_message"].as_str().unwrap_or(""), &args)
        })
        .collect();
    V::Error(
        format!("com.vmware.vapi.std.errors.{kind}"),
        vec![
            ("messages".into(), V::List(msgs)),
            ("data".into(), V::Opt(None)),
            ("error_type".into(), V::some(V::str(kind.to_uppercase()))),
        ],
    )
}

/// The error a vAPI client gave in an update: an error value (its
/// `error_type` or, over JSON-RPC, its name says which) or a bare string.
fn parse_error(j: &J, name_hint: Option<&str>) -> Result<(Fault, J), VapiError> {
    let (kind, messages) = match j {
        J::String(s) => {
            ("error".to_string(), vec![json!({"id": "com.vmware.vtwin.task.error", "default_message": s, "args": []})])
        }
        J::Object(o) => {
            let kind = name_hint
                .and_then(|n| n.strip_prefix("com.vmware.vapi.std.errors."))
                .map(str::to_string)
                .or_else(|| o.get("error_type").and_then(J::as_str).map(str::to_lowercase))
                .unwrap_or_else(|| "error".into());
            let messages = o
                .get("messages")
                .and_then(J::as_array)
                .map(|a| a.iter().map(stored_message).collect())
                .unwrap_or_default();
            (kind, messages)
        }
        _ => return Err(VapiError::invalid_argument("error must be an error value")),
    };
    let text = messages
        .first()
        .and_then(|m| m["default_message"].as_str())
        .filter(|s| !s.is_empty())
        .unwrap_or("The operation failed.")
        .to_string();
    let ty = fault_type(&kind);
    let fault = if ty == types::SystemError { Fault::system_error(text) } else { Fault::new(ty, text) };
    Ok((fault, stored_error(&kind, messages)))
}

/// A vAPI LocalizableMessage as a vim25 one.
fn vim_message(j: &J) -> Result<Data, VapiError> {
    let id = j
        .get("id")
        .and_then(J::as_str)
        .ok_or_else(|| VapiError::invalid_argument("a localizable message needs an id"))?;
    let text = j.get("default_message").and_then(J::as_str).unwrap_or("");
    Ok(Data::new(types::LocalizableMessage).with("key", id).with("message", text))
}

/// Parse an update_spec (clean JSON). `error_name` is the JSON-RPC name of
/// the error value, when the request was JSON-RPC.
pub fn parse_update(spec: &J, error_name: Option<&str>) -> Result<VapiUpdate, VapiError> {
    if !spec.is_object() && !spec.is_null() {
        return Err(VapiError::invalid_argument("spec must be a structure"));
    }
    let mut u = VapiUpdate::default();
    if let Some(s) = spec.get("status").filter(|v| !v.is_null()) {
        let st = s.as_str().and_then(VapiStatus::parse).ok_or_else(|| {
            VapiError::invalid_argument(format!(
                "status {s} is not one of PENDING, RUNNING, BLOCKED, SUCCEEDED, FAILED"
            ))
        })?;
        u.status = Some(st);
    }
    if let Some(p) = spec.get("percent_done").filter(|v| !v.is_null()) {
        let total = p.get("total").and_then(J::as_i64);
        let completed = p.get("completed").and_then(J::as_i64);
        match (total, completed) {
            (Some(t), Some(c)) => u.progress = Some((t, c)),
            _ => return Err(VapiError::invalid_argument("percent_done needs integer total and completed")),
        }
    }
    if let Some(d) = spec.get("description").filter(|v| !v.is_null()) {
        u.description = Some(vim_message(d)?);
    }
    if let Some(e) = spec.get("error").filter(|v| !v.is_null()) {
        u.error = Some(parse_error(e, error_name)?);
    }
    if let Some(r) = spec.get("result").filter(|v| !v.is_null()) {
        u.result = Some(r.clone());
    }
    if let Some(t) = spec.get("start_time").filter(|v| !v.is_null()) {
        u.start_time = Some(parse_time("start_time", t)?);
    }
    if let Some(t) = spec.get("end_time").filter(|v| !v.is_null()) {
        u.end_time = Some(parse_time("end_time", t)?);
    }
    Ok(u)
}

/// `com.vmware.vcenter.extension.tasks.create`: the new task's id.
pub fn create(eng: &Engine, ctx: &Ctx, spec: &J, error_name: Option<&str>) -> Result<String, VapiError> {
    let op = spec
        .get("operation_id")
        .and_then(J::as_str)
        .filter(|s| !s.is_empty())
        .ok_or_else(|| VapiError::invalid_argument("spec.operation_id is required"))?;
    let cancelable = spec
        .get("cancelable")
        .and_then(J::as_bool)
        .ok_or_else(|| VapiError::invalid_argument("spec.cancelable is required"))?;
    let initial = parse_update(spec, error_name)?;
    // The target: an inventory object, or else the root folder (keeping the
    // target as given).
    let mut target = None;
    let entity = match spec.get("target").filter(|v| !v.is_null()) {
        Some(t) => {
            let ty = t
                .get("type")
                .and_then(J::as_str)
                .ok_or_else(|| VapiError::invalid_argument("target.type is required"))?;
            let id =
                t.get("id").and_then(J::as_str).ok_or_else(|| VapiError::invalid_argument("target.id is required"))?;
            let found = eng.entity_of_type(ty, id);
            if found.is_none() {
                target = Some((ty.to_string(), id.to_string()));
            }
            found
        }
        None => None,
    };
    let entity = entity.or_else(|| eng.entity_of_type("Folder", ROOT_FOLDER));
    if let Some((m, _)) = &entity {
        eng.check(ctx, m, "Task.Create")?;
    }
    let parent_key = match spec.get("parent_task").and_then(J::as_str) {
        Some(p) => {
            let k = task_key(p);
            if !eng.tasks().exists(k) {
                return Err(VapiError::invalid_argument(format!("parent task {p} not found")));
            }
            Some(k.to_string())
        }
        None => None,
    };
    let user = match spec.get("user").and_then(J::as_str) {
        Some(u) => u.to_string(),
        None => crate::engine::auth::display_user(&ctx.session()?.user),
    };
    let eff = eng.control().fire(
        Some("com.vmware.vcenter.extension.tasks.create"),
        Some(op),
        entity.as_ref().map(|(m, _)| m.value.as_str()),
        true,
    );
    if let Some(f) = eff.sync_fault {
        return Err(f.into());
    }
    let t = eng.tasks().create_vapi(
        NewTask {
            name: None,
            description_id: op.to_string(),
            entity,
            cancelable,
            user,
            creator: Some(ctx.session()?.user.clone()),
            parent_key,
            activation_id: None,
            target,
        },
        &initial,
    )?;
    if let Some(f) = eff.task_fault {
        eng.fail_later(&t.key, eff.delay, f);
    }
    Ok(task_id(eng, &t.key))
}

fn existing(eng: &Engine, id: &str) -> Result<TaskRecord, VapiError> {
    eng.tasks().get(task_key(id)).ok_or_else(|| VapiError::new("not_found", format!("task {id} not found")))
}

/// `com.vmware.vcenter.extension.tasks.update`.
pub fn update(eng: &Engine, ctx: &Ctx, id: &str, spec: &J, error_name: Option<&str>) -> Result<(), VapiError> {
    let t = existing(eng, id)?;
    if !can_see(eng, ctx, &t) {
        return Err(VapiError::new("not_found", format!("task {id} not found")));
    }
    // As vim25's SetTaskState: Task.Update on the task's entity (the root
    // folder for a task without one, VCD tenants' tasks among them).
    eng.check(ctx, &task_ref(&t), "Task.Update")?;
    let u = parse_update(spec, error_name)?;
    eng.tasks().update_vapi(&t.key, &u)?;
    Ok(())
}

pub fn cancel(eng: &Engine, ctx: &Ctx, id: &str) -> Result<(), VapiError> {
    let t = existing(eng, id)?;
    if !can_see(eng, ctx, &t) {
        return Err(VapiError::new("not_found", format!("task {id} not found")));
    }
    // As vim25's CancelTask: Global.CancelTask on the task's entity.
    eng.check(ctx, &task_ref(&t), "Global.CancelTask")?;
    eng.tasks().cancel(&t.key)?;
    Ok(())
}

/// `com.vmware.cis.task.info` of a record.
pub fn info(eng: &Engine, t: &TaskRecord, exclude_result: bool) -> V {
    let (service, operation) = t.service_operation();
    let status = t.vapi_status();
    let description = match t.description.as_ref().and_then(|d| d.0.as_data()) {
        Some(d) => message(d.str("key").unwrap_or(&t.description_id), d.str("message").unwrap_or(""), &[]),
        None => message(&t.description_id, "", &[]),
    };
    // The runtime's union rule: every started task has a progress.
    let progress = (status != VapiStatus::Pending).then(|| {
        let total = t.progress_total.unwrap_or(100);
        let completed = t.progress_completed.unwrap_or(t.progress.unwrap_or(0) as i64);
        V::structure(
            "com.vmware.cis.task.progress",
            vec![
                ("total", V::Int(total)),
                ("completed", V::Int(completed)),
                ("message", message("com.vmware.vtwin.task.progress", &format!("{completed} of {total}"), &[])),
            ],
        )
    });
    let result = if exclude_result {
        None
    } else {
        t.vapi_result.as_ref().map(V::from_json).or_else(|| match t.result.as_ref().map(|r| &r.0) {
            Some(Value::String(s) | Value::Typed(_, s)) => Some(V::str(s)),
            _ => None,
        })
    };
    let error = if t.state == crate::engine::tasks::TaskState::Error {
        Some(match &t.vapi_error {
            Some(e) => render_error(
                e["type"].as_str().unwrap_or("error"),
                e["messages"].as_array().map_or(&[][..], Vec::as_slice),
            ),
            None => {
                let ty = t.error.as_ref().and_then(|e| e.0.as_data()).map_or("SystemError", |f| f.ty.name());
                let kind = TypeId::by_name(ty)
                    .map_or("error", |ty| error_kind(&Fault { data: Data::new(ty), message: String::new() }));
                let text = t.error_message.clone().unwrap_or_default();
                render_error(kind, &[json!({"id": format!("vim.fault.{ty}"), "default_message": text, "args": []})])
            }
        })
    } else {
        None
    };
    let target = match (&t.entity, &t.target) {
        (_, Some((ty, id))) | (Some((ty, id)), None) => Some(V::structure(
            "com.vmware.vapi.std.dynamic_ID",
            vec![("type", V::str(ty.clone())), ("id", V::str(id.clone()))],
        )),
        _ => None,
    };
    V::structure(
        "com.vmware.cis.task.info",
        vec![
            ("progress", V::opt(progress)),
            ("result", V::opt(result)),
            ("description", description),
            ("service", V::str(service)),
            ("operation", V::str(operation)),
            ("parent", V::opt(t.parent_key.as_ref().map(|p| V::str(task_id(eng, p))))),
            ("target", V::opt(target)),
            ("status", V::str(status.as_str())),
            ("cancelable", V::Bool(t.cancelable && !t.state.is_final())),
            ("error", V::opt(error)),
            ("start_time", V::opt(t.start_time.map(|s| V::Str(time(s))))),
            ("end_time", V::opt(t.complete_time.map(|s| V::Str(time(s))))),
            ("user", V::opt(Some(V::str(t.user.clone())))),
        ],
    )
}

fn can_see(eng: &Engine, ctx: &Ctx, t: &TaskRecord) -> bool {
    eng.can_view(ctx, &task_ref(t))
}

/// The vim25 Task of a record: its permissions are its entity's.
fn task_ref(t: &TaskRecord) -> MoRef {
    MoRef::new(vmodl::types::Task, t.key.clone())
}

pub fn get(eng: &Engine, ctx: &Ctx, id: &str, exclude_result: bool) -> Result<V, VapiError> {
    ctx.session()?;
    let t = existing(eng, id)?;
    if !can_see(eng, ctx, &t) {
        return Err(VapiError::new("not_found", format!("task {id} not found")));
    }
    Ok(info(eng, &t, exclude_result))
}

/// `Tasks.FilterSpec` as sets of strings.
#[derive(Default)]
pub struct Filter {
    pub tasks: Option<HashSet<String>>,
    pub services: Option<HashSet<String>>,
    pub operations: Option<HashSet<String>>,
    pub status: Option<HashSet<String>>,
    pub users: Option<HashSet<String>>,
    pub targets: Option<HashSet<(String, String)>>,
}

impl Filter {
    pub fn from_json(j: &J) -> Filter {
        let set = |k: &str| -> Option<HashSet<String>> {
            let a = j.get(k)?.as_array()?;
            let s: HashSet<String> = a.iter().filter_map(|v| v.as_str().map(str::to_string)).collect();
            (!s.is_empty()).then_some(s)
        };
        let targets = j.get("targets").and_then(J::as_array).map(|a| {
            a.iter()
                .filter_map(|t| Some((t.get("type")?.as_str()?.to_string(), t.get("id")?.as_str()?.to_string())))
                .collect::<HashSet<_>>()
        });
        Filter {
            tasks: set("tasks"),
            services: set("services"),
            operations: set("operations"),
            status: set("status"),
            users: set("users"),
            targets: targets.filter(|t| !t.is_empty()),
        }
    }
}

pub fn list(eng: &Engine, ctx: &Ctx, f: &Filter, exclude_result: bool) -> Result<V, VapiError> {
    ctx.session()?;
    if f.tasks.is_none() && f.services.is_none() {
        return Err(VapiError::invalid_argument("filter_spec.tasks or filter_spec.services must be given"));
    }
    if let Some(st) = &f.status {
        if let Some(bad) = st.iter().find(|s| VapiStatus::parse(s).is_none()) {
            return Err(VapiError::invalid_argument(format!("status {bad} is not a task status")));
        }
    }
    let keys: Option<HashSet<&str>> = f.tasks.as_ref().map(|s| s.iter().map(|id| task_key(id)).collect());
    let mut out: Vec<TaskRecord> = eng
        .tasks()
        .all()
        .into_iter()
        .filter(|t| keys.as_ref().is_none_or(|k| k.contains(t.key.as_str())))
        .filter(|t| {
            let (svc, op) = t.service_operation();
            f.services.as_ref().is_none_or(|s| s.contains(svc))
                && f.operations.as_ref().is_none_or(|s| s.contains(op))
                && f.status.as_ref().is_none_or(|s| s.contains(t.vapi_status().as_str()))
                && f.users.as_ref().is_none_or(|s| s.contains(&t.user))
                && f.targets
                    .as_ref()
                    .is_none_or(|s| t.target.as_ref().or(t.entity.as_ref()).is_some_and(|x| s.contains(x)))
        })
        .filter(|t| can_see(eng, ctx, t))
        .collect();
    out.sort_by_key(|t| t.seq);
    let skip = out.len().saturating_sub(1000);
    Ok(V::Map(out.iter().skip(skip).map(|t| (task_id(eng, &t.key), info(eng, t, exclude_result))).collect()))
}
