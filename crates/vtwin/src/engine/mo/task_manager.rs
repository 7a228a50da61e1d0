//! TaskManager: recentTask and CreateTask for extension task types.
use crate::engine::tasks::NewTask;
use crate::engine::{Ctx, Engine, Fault, Reply};
use vmodl::value::Args;
use vmodl::{types, Data, MoRef, Value};

pub fn property(eng: &Engine, ctx: &Ctx, name: &str) -> Option<Value> {
    Some(match name {
        // Only tasks on objects the caller may see (JSON: recentTask).
        "recentTask" => {
            super::refs(eng.tasks.recent(|t| eng.can_see_task(ctx, t)).into_iter().map(|k| MoRef::new(types::Task, k)))
        }
        "maxCollector" => Value::Int(32),
        "description" => {
            let el = |k: &str, label: &str| {
                Value::from(
                    Data::new(types::ElementDescription).with("key", k).with("label", label).with("summary", label),
                )
            };
            Data::new(types::TaskDescription)
                .with("methodInfo", Value::Array(types::ElementDescription, vec![]))
                .with(
                    "state",
                    Value::Array(
                        types::ElementDescription,
                        vec![
                            el("queued", "Queued"),
                            el("running", "Running"),
                            el("success", "Completed"),
                            el("error", "Failed"),
                        ],
                    ),
                )
                .with("reason", Value::Array(types::TypeDescription, vec![]))
                .into()
        }
        _ => return None,
    })
}

/// Is `task_type` in the taskList of a registered extension (one another
/// node registered a moment ago included)?
fn registered_task_type(eng: &Engine, task_type: &str) -> bool {
    if listed_task_type(eng, task_type) {
        return true;
    }
    let _ = eng.refresh_external(true);
    listed_task_type(eng, task_type)
}

fn listed_task_type(eng: &Engine, task_type: &str) -> bool {
    eng.extensions.read().values().any(|ext| {
        ext.get("taskList")
            .and_then(Value::as_array)
            .unwrap_or(&[])
            .iter()
            .filter_map(Value::as_data)
            .any(|t| t.str("taskID") == Some(task_type))
    })
}

pub fn invoke(eng: &Engine, ctx: &mut Ctx, _this: &MoRef, method: &str, args: Args) -> Option<Reply> {
    Some(match method {
        "CreateCollectorForTasks" => {
            super::task_history_collector::create(eng, ctx, args.get("filter").and_then(Value::as_data))
        }
        "CreateTask" => {
            (|| {
                let obj = args
                    .get("obj")
                    .and_then(Value::as_moref)
                    .ok_or_else(|| Fault::invalid_argument("obj", "obj is required"))?;
                let obj = eng.resolve(obj)?;
                let task_type = args.str("taskTypeId").unwrap_or("");
                if !registered_task_type(eng, task_type) {
                    return Err(Fault::invalid_argument(
                        "taskTypeId",
                        format!("task type '{task_type}' is not registered by any extension"),
                    ));
                }
                let entity = eng.inv.read().get(&obj.value).map(|e| (e.moref.clone(), e.name.clone()));
                // The parent may be named by its key or, for vCenter work done
                // for a vCloud Director task, by that task's URN
                // (urn:vcloud:task:<id>): the VCD task then lists it in VcTaskList.
                let parent =
                    match args.str("parentTaskKey") {
                        Some(p) if p.starts_with("urn:vcloud:task:") => {
                            let id = &p["urn:vcloud:task:".len()..];
                            Some(eng.tasks.by_vcd_id(id).map(|t| t.key).ok_or_else(|| {
                                Fault::invalid_argument("parentTaskKey", format!("task {p} not found"))
                            })?)
                        }
                        Some(p) => {
                            if eng.tasks.get(p).is_none() {
                                return Err(Fault::invalid_argument("parentTaskKey", format!("task {p} not found")));
                            }
                            Some(p.to_string())
                        }
                        None => None,
                    };
                let user = match args.str("initiatedBy") {
                    Some(u) if !u.is_empty() => u.to_string(),
                    _ => crate::engine::auth::display_user(&ctx.session()?.user),
                };
                let eff = eng.control.fire(None, Some(task_type), Some(&obj.value), true);
                if let Some(f) = eff.sync_fault {
                    return Err(f);
                }
                let t = eng.tasks.create(NewTask {
                    name: None,
                    description_id: task_type.to_string(),
                    entity,
                    cancelable: args.get("cancelable").and_then(Value::as_bool).unwrap_or(false),
                    user,
                    creator: Some(ctx.session()?.user.clone()),
                    parent_key: parent,
                    activation_id: args.str("activationId").map(str::to_string),
                    target: None,
                })?;
                if let Some(f) = eff.task_fault {
                    eng.fail_later(&t.key, eff.delay, f);
                }
                Ok(Some(t.vim_info().into()))
            })()
        }
        _ => return None,
    })
}
