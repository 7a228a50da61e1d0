//! What both vim25 codecs share: finding the object and method a request
//! names, mapping decode errors to faults, and calling the engine.
use crate::engine::{call_engine, Ctx, Engine, Fault};
use vmodl::value::Args;
use vmodl::{find_method, DecodeError, MethodDef, MoRef, TypeId, Value};

pub fn decode_fault(e: DecodeError) -> Fault {
    match e {
        DecodeError::InvalidValue { path, msg } => {
            Fault::invalid_argument(&path, format!("invalid value for {path}: {msg}"))
        }
        other => Fault::invalid_request(other.to_string()),
    }
}

/// Resolve `{type}/{moId}`: the type must be a managed object type of the
/// registry (else InvalidRequest), and the object must exist and be of that
/// type or a subtype (clients may name any ancestor type), else
/// ManagedObjectNotFound.
pub fn resolve_target(eng: &Engine, type_name: &str, moid: &str) -> Result<MoRef, Fault> {
    match TypeId::by_name(type_name) {
        Some(t) if t.kind() == vmodl::Kind::Managed => eng.resolve(&MoRef::new(t, moid)),
        _ => Err(Fault::invalid_request(format!("'{type_name}' is not a managed object type"))),
    }
}

/// Run `method` on `this` with arguments produced by `decode`. A call that
/// may block (`Engine::blocks`: file or disk I/O) runs off the async
/// workers; waiting for updates may take long, and it waits without a thread.
pub async fn call(
    eng: &Engine,
    ctx: &mut Ctx,
    this: &MoRef,
    method: &str,
    decode: impl FnOnce(&'static MethodDef) -> Result<Args, DecodeError>,
) -> Result<(Option<Value>, &'static MethodDef), Fault> {
    let m = find_method(this.ty, method).ok_or_else(|| Fault::method_not_found(this, method))?;
    // Authentication first, then decoding.
    if ctx.session.is_none() && !Engine::callable_without_session(this, m) {
        return Err(Fault::not_authenticated());
    }
    let args = decode(m).map_err(decode_fault)?;
    // Test-control rules for plain calls; task methods apply theirs when
    // they create the task.
    if !m.name.ends_with("_Task") {
        let eff = eng.control().fire(Some(m.name), None, Some(&this.value), false);
        if !eff.delay.is_zero() {
            tokio::time::sleep(eff.delay).await;
        }
        if let Some(f) = eff.sync_fault {
            return Err(f);
        }
    }
    let r =
        if this.ty == vmodl::types::PropertyCollector && (m.name == "WaitForUpdatesEx" || m.name == "WaitForUpdates") {
            eng.wait_for_updates(ctx, this, m, args).await?
        } else {
            call_engine(eng.blocks(this, m), || eng.invoke(ctx, this, m, args))?
        };
    Ok((r, m))
}
