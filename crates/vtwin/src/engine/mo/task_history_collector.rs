//! TaskHistoryCollector: the tasks a TaskFilterSpec selects (entity with
//! recursion, time, user, state, activationId, eventChainId, parent/root
//! task), oldest first, read through the history-collector cursor.
use super::history_collector::{self as hc, Items};
use crate::engine::inventory::Inventory;
use crate::engine::tasks::TaskRecord;
use crate::engine::{Ctx, Engine, Fault, Reply};
use vmodl::value::Args;
use vmodl::{types, Data, MoRef, Value};

fn strings(d: &Data, name: &str) -> Option<Vec<String>> {
    let a = d.get(name)?.as_array()?;
    Some(a.iter().filter_map(|v| v.as_str().map(str::to_string)).collect())
}

fn time(d: &Data, name: &str) -> Option<i64> {
    match d.get(name)? {
        Value::DateTime(t) => Some(t.timestamp_millis()),
        _ => None,
    }
}

pub fn matches(inv: &Inventory, f: &Data, t: &TaskRecord) -> bool {
    if !hc::entity_selected(inv, f, t.entity.as_ref()) {
        return false;
    }
    if let Some(by) = f.get("time").and_then(Value::as_data) {
        let when = match by.str("timeType").unwrap_or("queuedTime") {
            "startedTime" => t.start_time,
            "completedTime" => t.complete_time,
            _ => Some(t.queue_time),
        };
        let Some(when) = when else { return false };
        if time(by, "beginTime").is_some_and(|b| when < b) || time(by, "endTime").is_some_and(|e| when > e) {
            return false;
        }
    }
    if !hc::user_selected(f, &t.user) {
        return false;
    }
    if let Some(states) = strings(f, "state") {
        if !states.is_empty() && !states.iter().any(|s| s == t.state.as_str()) {
            return false;
        }
    }
    let any_of = |name: &str, v: Option<&String>| match strings(f, name) {
        Some(l) if !l.is_empty() => v.is_some_and(|v| l.contains(v)),
        _ => true,
    };
    if !any_of("activationId", t.activation_id.as_ref())
        || !any_of("parentTaskKey", t.parent_key.as_ref())
        || !any_of("rootTaskKey", t.root_key.as_ref())
    {
        return false;
    }
    if let Some(ids) = f.get("eventChainId").and_then(Value::as_array) {
        if !ids.is_empty() && !ids.iter().any(|v| v.as_i64() == Some(t.event_chain_id as i64)) {
            return false;
        }
    }
    // Alarms and scheduled tasks start none of our tasks.
    !(f.get("alarm").is_some() || f.get("scheduledTask").is_some())
}

/// The tasks the caller may see that the filter selects, oldest first.
pub fn items(eng: &Engine, ctx: &Ctx, f: &Data) -> Items {
    let mut all: Vec<TaskRecord> = {
        let inv = eng.inv.read();
        eng.tasks.all().into_iter().filter(|t| matches(&inv, f, t)).collect()
    };
    all.retain(|t| eng.can_see_task(ctx, t));
    all.sort_by_key(|t| t.seq);
    all.iter().map(|t| (t.seq, Value::from(t.vim_info()))).collect()
}

pub fn property(eng: &Engine, ctx: &Ctx, this: &MoRef, name: &str) -> Option<Value> {
    hc::property(eng, this, name, types::TaskInfo, |f| items(eng, ctx, f))
}

pub fn invoke(eng: &Engine, ctx: &mut Ctx, this: &MoRef, method: &str, args: Args) -> Option<Reply> {
    eng.history.lock().get(&this.value)?;
    match method {
        "ReadNextTasks" => Some(hc::read(eng, this, &args, true, types::TaskInfo, |f| items(eng, ctx, f))),
        "ReadPreviousTasks" => Some(hc::read(eng, this, &args, false, types::TaskInfo, |f| items(eng, ctx, f))),
        _ => hc::invoke(eng, this, method, &args, |f| items(eng, ctx, f)),
    }
}

/// TaskManager.CreateCollectorForTasks.
pub fn create(eng: &Engine, ctx: &Ctx, filter: Option<&Data>) -> Reply {
    let f = filter.cloned().unwrap_or_else(|| Data::new(types::TaskFilterSpec));
    if let Some(by) = f.get("time").and_then(Value::as_data) {
        if let (Some(b), Some(e)) = (time(by, "beginTime"), time(by, "endTime")) {
            if e < b {
                return Err(Fault::invalid_argument("filter.time", "endTime is before beginTime"));
            }
        }
    }
    if let Some(m) = f.get("entity").and_then(Value::as_data).and_then(|d| d.get("entity")).and_then(Value::as_moref) {
        eng.resolve(m)?;
    }
    hc::create(eng, ctx, types::TaskHistoryCollector, "taskcollector", f)
}
