//! EventHistoryCollector: the events an EventFilterSpec selects, read
//! through the history-collector cursor.
use super::event_manager::items;
use super::history_collector as hc;
use crate::engine::{Ctx, Engine, Reply};
use vmodl::value::Args;
use vmodl::{types, MoRef, Value};

pub fn property(eng: &Engine, ctx: &Ctx, this: &MoRef, name: &str) -> Option<Value> {
    match name {
        "initialized" => eng.history.lock().get(&this.value).map(|_| Value::Bool(true)),
        _ => hc::property(eng, this, name, types::Event, |f| items(eng, ctx, f)),
    }
}

pub fn invoke(eng: &Engine, ctx: &mut Ctx, this: &MoRef, method: &str, args: Args) -> Option<Reply> {
    eng.history.lock().get(&this.value)?;
    match method {
        "ReadNextEvents" => Some(hc::read(eng, this, &args, true, types::Event, |f| items(eng, ctx, f))),
        "ReadPreviousEvents" => Some(hc::read(eng, this, &args, false, types::Event, |f| items(eng, ctx, f))),
        _ => hc::invoke(eng, this, method, &args, |f| items(eng, ctx, f)),
    }
}
