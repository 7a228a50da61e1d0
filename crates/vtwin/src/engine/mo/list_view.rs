//! ListView: an explicit list of objects, changed with ModifyListView.
use super::view_manager::{destroy, view_objects, ViewKind};
use crate::engine::{Ctx, Engine, Fault, Reply};
use vmodl::value::Args;
use vmodl::{MoRef, Value};

pub fn property(eng: &Engine, ctx: &Ctx, this: &MoRef, name: &str) -> Option<Value> {
    match name {
        "view" => Some(super::refs(view_objects(eng, ctx, &this.value))),
        _ => None,
    }
}

fn refs_arg(args: &Args, name: &str) -> Vec<MoRef> {
    args.get(name).and_then(Value::as_array).unwrap_or(&[]).iter().filter_map(Value::as_moref).cloned().collect()
}

pub fn invoke(eng: &Engine, ctx: &mut Ctx, this: &MoRef, method: &str, args: Args) -> Option<Reply> {
    Some(match method {
        "DestroyView" => destroy(eng, this),
        "ModifyListView" | "ResetListView" | "ResetListViewFromView" => {
            let (add, remove, reset) = match method {
                "ModifyListView" => (refs_arg(&args, "add"), refs_arg(&args, "remove"), false),
                "ResetListView" => (refs_arg(&args, "obj"), vec![], true),
                _ => {
                    let v = match args.get("view").and_then(Value::as_moref) {
                        Some(v) => v.clone(),
                        None => return Some(Err(Fault::invalid_argument("view", "view is required"))),
                    };
                    (view_objects(eng, ctx, &v.value), vec![], true)
                }
            };
            // Objects that do not exist are returned as unresolved.
            let mut unresolved = vec![];
            let mut resolved = vec![];
            for r in add {
                match eng.resolve(&r) {
                    Ok(r) => resolved.push(r),
                    Err(_) => unresolved.push(r),
                }
            }
            let mut views = eng.views.lock();
            let Some(v) = views.get_mut(&this.value) else { return Some(Err(Fault::not_found(this))) };
            if let ViewKind::List { objs } = &mut v.kind {
                if reset {
                    objs.clear();
                }
                for r in resolved {
                    if !objs.contains(&r) {
                        objs.push(r);
                    }
                }
                objs.retain(|o| !remove.iter().any(|r| r.value == o.value));
            }
            drop(views);
            // A running wait sees objects enter and leave the view.
            eng.changed();
            if method == "ResetListViewFromView" {
                Ok(None)
            } else {
                Ok(Some(super::refs(unresolved)))
            }
        }
        _ => return None,
    })
}
