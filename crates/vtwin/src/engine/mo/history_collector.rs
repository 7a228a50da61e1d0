//! HistoryCollector: what task and event history collectors share — a
//! session-owned, filtered, time-ordered list read through a cursor
//! (ReadNext…/ReadPrevious…, RewindCollector, ResetCollector), a latest page
//! of `pageSize` items, SetCollectorPageSize and DestroyCollector.
use crate::engine::{Ctx, Engine, Fault, Reply};
use vmodl::value::Args;
use vmodl::{Data, MoRef, TypeId, Value};

pub const DEFAULT_PAGE: usize = 10;
pub const MAX_PAGE: i64 = 1000;

pub struct Collector {
    pub ty: TypeId,
    pub session_key: String,
    /// TaskFilterSpec or EventFilterSpec as given.
    pub filter: Data,
    pub page_size: usize,
    /// The gap the cursor sits in: items with a sequence number ≤ cursor
    /// are behind it (older), the others ahead (newer). 0 = before the oldest.
    pub cursor: i64,
}

/// The collector's items: (sequence number, item), oldest first.
pub type Items = Vec<(i64, Value)>;

pub fn check_count(args: &Args) -> Result<usize, Fault> {
    let n = args.get("maxCount").and_then(Value::as_i64).unwrap_or(0);
    if !(1..=MAX_PAGE).contains(&n) {
        return Err(Fault::invalid_argument("maxCount", format!("maxCount {n} must be between 1 and {MAX_PAGE}")));
    }
    Ok(n as usize)
}

/// The newest `page_size` items, newest first.
pub fn latest_page(items: &Items, page_size: usize) -> Vec<Value> {
    items.iter().rev().take(page_size).map(|(_, v)| v.clone()).collect()
}

pub fn read_next(c: &mut Collector, items: &Items, n: usize) -> Vec<Value> {
    let out: Vec<&(i64, Value)> = items.iter().filter(|(s, _)| *s > c.cursor).take(n).collect();
    if let Some((s, _)) = out.last() {
        c.cursor = *s;
    }
    out.into_iter().map(|(_, v)| v.clone()).collect()
}

pub fn read_previous(c: &mut Collector, items: &Items, n: usize) -> Vec<Value> {
    let out: Vec<&(i64, Value)> = items.iter().rev().filter(|(s, _)| *s <= c.cursor).take(n).collect();
    if let Some((s, _)) = out.last() {
        c.cursor = *s - 1;
    }
    out.into_iter().map(|(_, v)| v.clone()).collect()
}

/// ResetCollector: just before the latest page.
pub fn reset(c: &mut Collector, items: &Items) {
    let skip = items.len().saturating_sub(c.page_size);
    c.cursor = items.get(skip).map_or(0, |(s, _)| s - 1);
}

/// `filter` and `latestPage` (an array of `ty`).
pub fn property(
    eng: &Engine,
    this: &MoRef,
    name: &str,
    ty: TypeId,
    items: impl FnOnce(&Data) -> Items,
) -> Option<Value> {
    let (filter, page) = {
        let h = eng.history.lock();
        let c = h.get(&this.value)?;
        (c.filter.clone(), c.page_size)
    };
    match name {
        "filter" => Some(filter.into()),
        "latestPage" => Some(Value::Array(ty, latest_page(&items(&filter), page))),
        _ => None,
    }
}

/// ReadNext… (`next`) or ReadPrevious…: up to maxCount items of type `ty`.
pub fn read(
    eng: &Engine,
    this: &MoRef,
    args: &Args,
    next: bool,
    ty: TypeId,
    items: impl FnOnce(&Data) -> Items,
) -> Reply {
    let n = check_count(args)?;
    let filter = eng.history.lock().get(&this.value).ok_or_else(|| Fault::not_found(this))?.filter.clone();
    let items = items(&filter);
    let mut h = eng.history.lock();
    let c = h.get_mut(&this.value).ok_or_else(|| Fault::not_found(this))?;
    let out = if next { read_next(c, &items, n) } else { read_previous(c, &items, n) };
    Ok(if out.is_empty() { None } else { Some(Value::Array(ty, out)) })
}

/// Does a filter's `entity` part (`…ByEntity{entity, recursion}`) select a
/// task or event on `entity`? No such part selects everything.
pub fn entity_selected(inv: &crate::engine::inventory::Inventory, f: &Data, entity: Option<&(String, String)>) -> bool {
    let Some(by) = f.get("entity").and_then(Value::as_data) else { return true };
    let root = by.get("entity").and_then(Value::as_moref).map_or("", |m| m.value.as_str());
    let rec = by.str("recursion").unwrap_or("all");
    match entity {
        Some((_, moid)) => match rec {
            "self" => moid == root,
            "children" => moid == root || inv.get(moid).and_then(|e| e.parent.as_deref()) == Some(root),
            _ => inv.path_to_root(moid).iter().any(|m| m == root),
        },
        None => false,
    }
}

/// Does a filter's `userName` part select user `u`? Every task here was
/// started by a user, so `systemUser` adds none.
pub fn user_selected(f: &Data, u: &str) -> bool {
    let Some(by) = f.get("userName").and_then(Value::as_data) else { return true };
    let list: Vec<String> = by
        .get("userList")
        .and_then(Value::as_array)
        .map(|a| a.iter().filter_map(|v| v.as_str().map(str::to_string)).collect())
        .unwrap_or_default();
    // Names compare without case and in either form (`DOM\u`, `u@dom`).
    let norm = |s: &str| {
        crate::engine::auth::session::normalize_user(&match s.split_once('\\') {
            Some((dom, user)) => format!("{user}@{dom}"),
            None => s.to_string(),
        })
    };
    let u = norm(u);
    list.iter().any(|x| norm(x) == u)
}

/// A new collector owned by the caller's session; its moId says so.
pub fn create(eng: &Engine, ctx: &Ctx, ty: TypeId, prefix: &str, filter: Data) -> Reply {
    let s = ctx.session()?;
    let moid = format!("session[{}]{prefix}-{}", s.key, eng.next_seq());
    eng.history
        .lock()
        .insert(moid.clone(), Collector { ty, session_key: s.key.clone(), filter, page_size: DEFAULT_PAGE, cursor: 0 });
    Ok(Some(Value::MoRef(MoRef::new(ty, moid))))
}

/// The methods every history collector has. `items` computes the list.
pub fn invoke(
    eng: &Engine,
    this: &MoRef,
    method: &str,
    args: &Args,
    items: impl FnOnce(&Data) -> Items,
) -> Option<Reply> {
    let filter = eng.history.lock().get(&this.value)?.filter.clone();
    Some(match method {
        "DestroyCollector" => {
            eng.history.lock().remove(&this.value);
            eng.changed();
            Ok(None)
        }
        "RewindCollector" => {
            if let Some(c) = eng.history.lock().get_mut(&this.value) {
                c.cursor = 0;
            }
            Ok(None)
        }
        "ResetCollector" => {
            let items = items(&filter);
            if let Some(c) = eng.history.lock().get_mut(&this.value) {
                reset(c, &items);
            }
            Ok(None)
        }
        "SetCollectorPageSize" => {
            let n = args.get("maxCount").and_then(Value::as_i64).unwrap_or(-1);
            if !(0..=MAX_PAGE).contains(&n) {
                return Some(Err(Fault::invalid_argument(
                    "maxCount",
                    format!("page size {n} must be between 0 and {MAX_PAGE}"),
                )));
            }
            if let Some(c) = eng.history.lock().get_mut(&this.value) {
                c.page_size = n as usize;
            }
            eng.changed();
            Ok(None)
        }
        _ => return None,
    })
}
