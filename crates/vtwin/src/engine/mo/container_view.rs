//! ContainerView: the entities below a container, filtered by type.
use super::view_manager::{destroy, view_objects, ViewKind};
use crate::engine::{Ctx, Engine, Reply};
use vmodl::value::Args;
use vmodl::{MoRef, Value};

pub fn property(eng: &Engine, ctx: &Ctx, this: &MoRef, name: &str) -> Option<Value> {
    if name == "view" {
        return Some(super::refs(view_objects(eng, ctx, &this.value)));
    }
    let views = eng.views.lock();
    let ViewKind::Container { container, types: tys, recursive } = &views.get(&this.value)?.kind else { return None };
    Some(match name {
        "container" => Value::MoRef(container.clone()),
        "type" => Value::array_of_strings(tys.iter().map(|t| t.name())),
        "recursive" => Value::Bool(*recursive),
        _ => return None,
    })
}

pub fn invoke(eng: &Engine, _ctx: &mut Ctx, this: &MoRef, method: &str, _args: Args) -> Option<Reply> {
    match method {
        "DestroyView" => Some(destroy(eng, this)),
        _ => None,
    }
}
