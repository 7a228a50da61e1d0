//! Task: the vim25 view of a task record (info, CancelTask, SetTaskState,
//! UpdateProgress, SetTaskDescription).
use crate::engine::tasks::TaskState;
use crate::engine::{Ctx, Engine, Fault, Reply};
use vmodl::value::Args;
use vmodl::{types, MoRef, Value};

pub fn property(eng: &Engine, this: &MoRef, name: &str) -> Option<Value> {
    match name {
        "info" => eng.tasks.get(&this.value).map(|t| t.vim_info().into()),
        _ => None,
    }
}

/// A fault given to SetTaskState: a plain MethodFault (VI/JSON) or a
/// LocalizedMethodFault (SOAP).
fn fault_arg(v: &Value) -> Option<Fault> {
    let d = v.as_data()?;
    if d.ty == types::LocalizedMethodFault {
        let inner = d.get("fault")?.as_data()?.clone();
        let msg = d.str("localizedMessage").map_or_else(|| inner.ty.name().to_string(), str::to_string);
        return Some(Fault { data: inner, message: msg });
    }
    let msg = d
        .get("faultMessage")
        .and_then(Value::as_array)
        .and_then(|a| a.first())
        .and_then(Value::as_data)
        .and_then(|m| m.str("message"))
        .map_or_else(|| d.ty.name().to_string(), str::to_string);
    Some(Fault { data: d.clone(), message: msg })
}

pub fn invoke(eng: &Engine, _ctx: &mut Ctx, this: &MoRef, method: &str, args: Args) -> Option<Reply> {
    let key = &this.value;
    Some(match method {
        "CancelTask" => eng.tasks.cancel(key).map(|_| None),
        "SetTaskState" => (|| {
            let s = args.str("state").unwrap_or("");
            let state = TaskState::parse(s)
                .ok_or_else(|| Fault::invalid_argument("state", format!("'{s}' is not a task state")))?;
            let fault = args.get("fault").and_then(fault_arg);
            if state == TaskState::Error && fault.is_none() {
                return Err(Fault::invalid_argument("fault", "a task set to error needs a fault"));
            }
            eng.tasks.set_state(key, state, args.get("result"), fault.as_ref()).map(|_| None)
        })(),
        "UpdateProgress" => {
            let p = args.get("percentDone").and_then(Value::as_i64).unwrap_or(0);
            eng.tasks.update_progress(key, p.clamp(i32::MIN as i64, i32::MAX as i64) as i32).map(|_| None)
        }
        "SetTaskDescription" => match args.get("description").and_then(Value::as_data) {
            Some(d) => eng.tasks.set_description(key, d).map(|_| None),
            None => Err(Fault::invalid_argument("description", "description is required")),
        },
        _ => return None,
    })
}
