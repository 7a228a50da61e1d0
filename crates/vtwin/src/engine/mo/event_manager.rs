//! EventManager: QueryEvents, CreateCollectorForEvents, latestEvent. The events are the TaskEvents
//! of the tasks kept: one per task, posted when it was queued, with the
//! task's eventChainId and its TaskInfo as it was then. They go when their
//! task is pruned.
use super::history_collector::{self as hc, Items};
use crate::engine::inventory::Inventory;
use crate::engine::tasks::{TaskRecord, TaskState};
use crate::engine::{Ctx, Engine, Reply};
use vmodl::value::Args;
use vmodl::{types, Data, MoRef, TypeId, Value};

/// The TaskEvent of a task.
fn task_event(inv: &Inventory, t: &TaskRecord) -> Data {
    // TaskInfo as it was when the task was queued.
    let mut snap = t.clone();
    snap.state = TaskState::Queued;
    snap.start_time = None;
    snap.complete_time = None;
    snap.progress = None;
    snap.result = None;
    snap.error = None;
    snap.cancelled = false;
    snap.blocked = false;
    let what = t.name.clone().unwrap_or_else(|| t.description_id.clone());
    let mut e = Data::new(types::TaskEvent)
        .with("key", (t.seq % i32::MAX as i64) as i32)
        .with("chainId", t.event_chain_id)
        .with("createdTime", chrono::DateTime::from_timestamp_millis(t.queue_time).unwrap_or_default())
        .with("userName", t.user.clone())
        .with("info", snap.vim_info());
    let mut msg = format!("Task: {what}");
    if let Some((_, moid)) = &t.entity {
        if let Some(ent) = inv.get(moid) {
            msg = format!("Task: {what} on {}", ent.name);
            if let Some(dc) = inv.datacenter_of(moid) {
                e.set(
                    "datacenter",
                    Data::new(types::DatacenterEventArgument)
                        .with("name", dc.name.clone())
                        .with("datacenter", dc.moref.clone()),
                );
            }
            let ty = ent.moref.ty;
            let arg =
                |aty: TypeId, field: &str| Data::new(aty).with("name", ent.name.clone()).with(field, ent.moref.clone());
            if ty == types::HostSystem {
                e.set("host", arg(types::HostEventArgument, "host"));
            } else if ty.is_a(types::ComputeResource) {
                e.set("computeResource", arg(types::ComputeResourceEventArgument, "computeResource"));
            } else if ty == types::Datastore {
                e.set("ds", arg(types::DatastoreEventArgument, "datastore"));
            }
        }
    }
    e.set("fullFormattedMessage", msg);
    e
}

fn matches(inv: &Inventory, f: &Data, t: &TaskRecord) -> bool {
    if !hc::entity_selected(inv, f, t.entity.as_ref()) {
        return false;
    }
    if let Some(by) = f.get("time").and_then(Value::as_data) {
        let t0 = |n: &str| match by.get(n) {
            Some(Value::DateTime(d)) => Some(d.timestamp_millis()),
            _ => None,
        };
        if t0("beginTime").is_some_and(|b| t.queue_time < b) || t0("endTime").is_some_and(|e| t.queue_time > e) {
            return false;
        }
    }
    if !hc::user_selected(f, &t.user) {
        return false;
    }
    if let Some(id) = f.get("eventChainId").and_then(Value::as_i64) {
        if id != t.event_chain_id as i64 {
            return false;
        }
    }
    let names = |n: &str| -> Vec<String> {
        f.get(n)
            .and_then(Value::as_array)
            .map(|a| a.iter().filter_map(|v| v.as_str().map(str::to_string)).collect())
            .unwrap_or_default()
    };
    let types_wanted = names("type");
    if !types_wanted.is_empty()
        && !types_wanted.iter().any(|n| TypeId::by_name(n).is_some_and(|ty| types::TaskEvent.is_a(ty)))
    {
        return false;
    }
    let ids = names("eventTypeId");
    if !ids.is_empty() && !ids.iter().any(|n| n == "vim.event.TaskEvent" || n == "TaskEvent") {
        return false;
    }
    let cats = names("category");
    if !cats.is_empty() && !cats.iter().any(|c| c == "info") {
        return false;
    }
    !(f.get("alarm").is_some() || f.get("scheduledTask").is_some())
}

/// The events the caller may see that the filter selects, oldest first.
pub(super) fn items(eng: &Engine, ctx: &Ctx, f: &Data) -> Items {
    let inv = eng.inv.read();
    let mut all: Vec<TaskRecord> = eng.tasks.all().into_iter().filter(|t| matches(&inv, f, t)).collect();
    drop(inv);
    all.retain(|t| eng.can_see_task(ctx, t));
    all.sort_by_key(|t| t.seq);
    let inv = eng.inv.read();
    let mut out: Items = all.iter().map(|t| (t.seq, Value::from(task_event(&inv, t)))).collect();
    if let Some(max) = f.get("maxCount").and_then(Value::as_i64).filter(|m| *m > 0) {
        let skip = out.len().saturating_sub(max as usize);
        out.drain(..skip);
    }
    out
}

fn array(v: Vec<Value>) -> Value {
    Value::Array(types::Event, v)
}

fn description() -> Data {
    let cat =
        |k: &str| Value::from(Data::new(types::ElementDescription).with("key", k).with("label", k).with("summary", k));
    let detail = Data::new(types::EventDescriptionEventDetail)
        .with("key", Value::Typed(types::TypeName, "TaskEvent".into()))
        .with("description", "Task event")
        .with("category", "info")
        .with("formatOnDatacenter", "Task: {info.descriptionId}")
        .with("formatOnComputeResource", "Task: {info.descriptionId}")
        .with("formatOnHost", "Task: {info.descriptionId}")
        .with("formatOnVm", "Task: {info.descriptionId}")
        .with("fullFormat", "Task: {info.descriptionId}");
    Data::new(types::EventDescription)
        .with(
            "category",
            Value::Array(types::ElementDescription, vec![cat("info"), cat("warning"), cat("error"), cat("user")]),
        )
        .with("eventInfo", Value::Array(types::EventDescriptionEventDetail, vec![detail.into()]))
}

pub fn property(eng: &Engine, ctx: &Ctx, name: &str) -> Option<Value> {
    match name {
        "description" => Some(description().into()),
        "maxCollector" => Some(Value::Int(32)),
        "latestEvent" => items(eng, ctx, &Data::new(types::EventFilterSpec)).pop().map(|(_, v)| v),
        _ => None,
    }
}

pub fn invoke(eng: &Engine, ctx: &mut Ctx, _this: &MoRef, method: &str, args: Args) -> Option<Reply> {
    let filter =
        || args.get("filter").and_then(Value::as_data).cloned().unwrap_or_else(|| Data::new(types::EventFilterSpec));
    Some(match method {
        "QueryEvents" => {
            let items = items(eng, ctx, &filter());
            // Newest first, as vCenter answers.
            Ok(Some(array(items.into_iter().rev().map(|(_, v)| v).collect())))
        }
        "CreateCollectorForEvents" => {
            let f = filter();
            if let Some(m) =
                f.get("entity").and_then(Value::as_data).and_then(|d| d.get("entity")).and_then(Value::as_moref)
            {
                if let Err(e) = eng.resolve(m) {
                    return Some(Err(e));
                }
            }
            hc::create(eng, ctx, types::EventHistoryCollector, "eventcollector", f)
        }
        _ => return None,
    })
}
