//! PropertyFilter: a filter of a property collector (spec, partialUpdates,
//! DestroyPropertyFilter).
use crate::engine::{Ctx, Engine, Reply};
use vmodl::value::Args;
use vmodl::{MoRef, Value};

pub fn property(eng: &Engine, this: &MoRef, name: &str) -> Option<Value> {
    let pc = eng.pc.lock();
    let f = pc.filter(&this.value)?;
    match name {
        "spec" => Some(f.spec.clone().into()),
        "partialUpdates" => Some(Value::Bool(f.partial_updates)),
        _ => None,
    }
}

pub fn invoke(eng: &Engine, _ctx: &mut Ctx, this: &MoRef, method: &str, _args: Args) -> Option<Reply> {
    match method {
        "DestroyPropertyFilter" => {
            eng.pc.lock().destroy_filter(&this.value);
            Some(Ok(None))
        }
        _ => None,
    }
}
