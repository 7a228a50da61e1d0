//! ViewManager: session-scoped ContainerViews and ListViews.
use crate::engine::{Ctx, Engine, Fault, Reply};
use vmodl::value::Args;
use vmodl::{types, MoRef, TypeId, Value};

pub enum ViewKind {
    Container { container: MoRef, types: Vec<TypeId>, recursive: bool },
    List { objs: Vec<MoRef> },
}

pub struct View {
    pub session_key: String,
    pub kind: ViewKind,
}

impl View {
    pub fn ty(&self) -> TypeId {
        match self.kind {
            ViewKind::Container { .. } => types::ContainerView,
            ViewKind::List { .. } => types::ListView,
        }
    }
}

pub fn property(eng: &Engine, ctx: &Ctx, name: &str) -> Option<Value> {
    match name {
        "viewList" => {
            let key = &ctx.session.as_ref()?.key;
            let views = eng.views.lock();
            Some(super::refs(
                views.iter().filter(|(_, v)| &v.session_key == key).map(|(m, v)| MoRef::new(v.ty(), m.clone())),
            ))
        }
        _ => None,
    }
}

fn new_view(eng: &Engine, ctx: &Ctx, kind: ViewKind) -> Reply {
    let s = ctx.session()?;
    let v = View { session_key: s.key.clone(), kind };
    let ty = v.ty();
    let moid = format!("session[{}]{}", s.key, eng.next_seq());
    eng.views.lock().insert(moid.clone(), v);
    Ok(Some(Value::MoRef(MoRef::new(ty, moid))))
}

pub fn invoke(eng: &Engine, ctx: &mut Ctx, _this: &MoRef, method: &str, args: Args) -> Option<Reply> {
    Some(match method {
        "CreateContainerView" => (|| {
            let c = args
                .get("container")
                .and_then(Value::as_moref)
                .ok_or_else(|| Fault::invalid_argument("container", "container is required"))?;
            let container = eng.resolve(c)?;
            let mut tys = vec![];
            for t in args.get("type").and_then(Value::as_array).unwrap_or(&[]) {
                let n = t.as_str().unwrap_or("");
                tys.push(
                    TypeId::by_name(n).ok_or_else(|| Fault::invalid_argument("type", format!("unknown type {n}")))?,
                );
            }
            let recursive = args.get("recursive").and_then(Value::as_bool).unwrap_or(false);
            new_view(eng, ctx, ViewKind::Container { container, types: tys, recursive })
        })(),
        "CreateListView" => {
            let objs = args
                .get("obj")
                .and_then(Value::as_array)
                .unwrap_or(&[])
                .iter()
                .filter_map(Value::as_moref)
                .filter_map(|o| eng.resolve(o).ok())
                .collect();
            new_view(eng, ctx, ViewKind::List { objs })
        }
        "CreateListViewFromView" => (|| {
            let v = args
                .get("view")
                .and_then(Value::as_moref)
                .ok_or_else(|| Fault::invalid_argument("view", "view is required"))?;
            let v = eng.resolve(v)?;
            let objs = view_objects(eng, ctx, &v.value);
            new_view(eng, ctx, ViewKind::List { objs })
        })(),
        _ => return None,
    })
}

/// The objects a view currently shows.
pub fn view_objects(eng: &Engine, ctx: &Ctx, moid: &str) -> Vec<MoRef> {
    let views = eng.views.lock();
    let Some(v) = views.get(moid) else { return vec![] };
    match &v.kind {
        ViewKind::List { objs } => objs.clone(),
        ViewKind::Container { container, types: tys, recursive } => {
            let mut all = vec![];
            eng.inv.read().descendants(&container.value, *recursive, &mut all);
            all.into_iter()
                .filter(|m| tys.is_empty() || tys.iter().any(|t| m.ty.is_a(*t)))
                .filter(|m| eng.can_view(ctx, m))
                .collect()
        }
    }
}

/// DestroyView for both view kinds.
pub fn destroy(eng: &Engine, this: &MoRef) -> Reply {
    eng.views.lock().remove(&this.value);
    eng.changed();
    Ok(None)
}
