//! ExtensionManager: RegisterExtension, UpdateExtension, UnregisterExtension,
//! FindExtension and extensionList, kept in the store.
use crate::engine::kept::Kept;
use crate::engine::{Ctx, Engine, Fault, Reply};
use vmodl::value::Args;
use vmodl::{types, Data, MoRef, Value};

pub fn property(eng: &Engine, name: &str) -> Option<Value> {
    // Extensions other nodes registered.
    let _ = eng.refresh_external(false);
    match name {
        "extensionList" => {
            Some(Value::Array(types::Extension, eng.extensions.read().values().cloned().map(Value::from).collect()))
        }
        _ => None,
    }
}

fn save(eng: &Engine, mut ext: Data) -> Result<(), Fault> {
    let key = ext.str("key").unwrap_or("").to_string();
    if key.is_empty() {
        return Err(Fault::invalid_argument("extension.key", "an extension needs a key"));
    }
    if ext.get("lastHeartbeatTime").is_none() {
        ext.set("lastHeartbeatTime", chrono::Utc::now());
    }
    let kept = serde_json::to_string(&Kept(ext.clone().into())).expect("a kept value serialises");
    eng.store.put_extension(&key, &kept)?;
    eng.extensions.write().insert(key, ext);
    eng.changed();
    Ok(())
}

pub fn invoke(eng: &Engine, _ctx: &mut Ctx, _this: &MoRef, method: &str, args: Args) -> Option<Reply> {
    let key = args.str("extensionKey").unwrap_or("").to_string();
    let missing = |k: &str| Fault::plain_not_found(format!("extension '{k}' is not registered"));
    let _ = eng.refresh_external(false);
    Some(match method {
        "RegisterExtension" | "UpdateExtension" => (|| {
            let ext = args
                .get("extension")
                .and_then(Value::as_data)
                .ok_or_else(|| Fault::invalid_argument("extension", "extension is required"))?
                .clone();
            let k = ext.str("key").unwrap_or("").to_string();
            if method == "UpdateExtension" && !eng.extensions.read().contains_key(&k) {
                return Err(missing(&k));
            }
            save(eng, ext).map(|_| None)
        })(),
        "UnregisterExtension" => (|| {
            if eng.extensions.write().remove(&key).is_none() {
                return Err(missing(&key));
            }
            eng.store.delete_extension(&key)?;
            eng.changed();
            Ok(None)
        })(),
        "FindExtension" => Ok(eng.extensions.read().get(&key).cloned().map(Value::from)),
        _ => return None,
    })
}
