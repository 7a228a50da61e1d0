//! EventHistoryCollector: the events an EventFilterSpec selects, read
//! through the history-collector cursor.
use super::event_manager::{array, items};
use super::history_collector as hc;
use crate::engine::{Ctx, Engine, Reply};
use vmodl::value::Args;
use vmodl::{MoRef, Value};

pub fn property(eng: &Engine, ctx: &Ctx, this: &MoRef, name: &str) -> Option<Value> {
    let (filter, page) = {
        let h = eng.history.lock();
        let c = h.get(&this.value)?;
        (c.filter.clone(), c.page_size)
    };
    match name {
        "filter" => Some(filter.into()),
        "initialized" => Some(Value::Bool(true)),
        "latestPage" => Some(array(hc::latest_page(&items(eng, ctx, &filter), page))),
        _ => None,
    }
}

pub fn invoke(eng: &Engine, ctx: &mut Ctx, this: &MoRef, method: &str, args: Args) -> Option<Reply> {
    let filter = eng.history.lock().get(&this.value)?.filter.clone();
    let read = |next: bool| -> Reply {
        let n = hc::check_count(&args)?;
        let items = items(eng, ctx, &filter);
        let mut h = eng.history.lock();
        let c = h.get_mut(&this.value).ok_or_else(|| crate::engine::Fault::not_found(this))?;
        let out = if next { hc::read_next(c, &items, n) } else { hc::read_previous(c, &items, n) };
        Ok(if out.is_empty() { None } else { Some(array(out)) })
    };
    match method {
        "ReadNextEvents" => Some(read(true)),
        "ReadPreviousEvents" => Some(read(false)),
        _ => hc::invoke(eng, this, method, &args, |f| items(eng, ctx, f)),
    }
}
