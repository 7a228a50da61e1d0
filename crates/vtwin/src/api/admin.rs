//! Admin endpoints: `POST /admin/datastores/{moId}/remount` (the datastore
//! comes back under a new mount path), and the test-control surface:
//! `/admin/faults` lists,
//! adds (`POST`, one rule or an array) and removes (`DELETE`, all or one by
//! id) rules. Callers authenticate with a session (either API's) or Basic
//! auth, as a user holding Global.Settings on the root folder.
use super::{respond, AppState, Req, Resp};
use crate::engine::control::Rule;
use hyper::{Method, StatusCode};
use serde_json::json;

fn error(status: StatusCode, msg: impl Into<String>) -> Resp {
    respond(status, "application/json", json!({"error": msg.into()}).to_string())
}

fn caller(state: &AppState, req: &Req) -> Option<String> {
    let eng = &state.engine;
    if let Some(s) = super::request_session(eng, &req.headers) {
        return Some(s.user.clone());
    }
    let (u, p) = super::vapi::basic_auth(req)?;
    eng.authenticate(&u, &p, &req.peer.ip().to_string()).ok().map(|r| r.name)
}

pub fn handle(state: &AppState, req: &Req) -> Resp {
    let Some(user) = caller(state, req) else {
        return error(StatusCode::UNAUTHORIZED, "authenticate with a session or Basic auth");
    };
    let eng = &state.engine;
    if !eng.has_privilege(&user, &eng.root(), "Global.Settings") {
        return error(
            StatusCode::FORBIDDEN,
            format!("{user} may not change test-control rules (needs Global.Settings)"),
        );
    }
    if let Some(ds) = req.path.strip_prefix("/admin/datastores/").and_then(|r| r.strip_suffix("/copy")) {
        if req.method != Method::POST {
            return error(StatusCode::METHOD_NOT_ALLOWED, "POST to present a copy");
        }
        let ds = vmodl::MoRef::new(vmodl::types::Datastore, ds);
        return match eng.present_datastore_copy(&ds) {
            Ok(dev) => respond(
                StatusCode::CREATED,
                "application/json",
                json!({"datastore": ds.value, "extentDevicePath": dev}).to_string(),
            ),
            Err(f) => error(StatusCode::NOT_FOUND, f.message),
        };
    }
    if let Some(ds) = req.path.strip_prefix("/admin/datastores/").and_then(|r| r.strip_suffix("/remount")) {
        if req.method != Method::POST {
            return error(StatusCode::METHOD_NOT_ALLOWED, "POST to remount");
        }
        let ds = vmodl::MoRef::new(vmodl::types::Datastore, ds);
        return match eng.remount_datastore(&ds) {
            Ok(path) => respond(
                StatusCode::OK,
                "application/json",
                json!({"datastore": ds.value, "mountPath": path}).to_string(),
            ),
            Err(f) => error(StatusCode::NOT_FOUND, f.message),
        };
    }
    let rest = req.path.strip_prefix("/admin/faults").unwrap_or("").trim_matches('/');
    match (&req.method, rest) {
        (&Method::GET, "") => respond(
            StatusCode::OK,
            "application/json",
            serde_json::to_string(&eng.control().list()).unwrap_or_default(),
        ),
        (&Method::POST, "") => {
            let v: serde_json::Value = match serde_json::from_slice(&req.body) {
                Ok(v) => v,
                Err(e) => return error(StatusCode::BAD_REQUEST, format!("the body is not JSON: {e}")),
            };
            let items = match v {
                serde_json::Value::Array(a) => a,
                other => vec![other],
            };
            let mut rules = vec![];
            for it in items {
                match serde_json::from_value::<Rule>(it) {
                    Ok(r) => match r.validate() {
                        Ok(()) => rules.push(r),
                        Err(e) => return error(StatusCode::BAD_REQUEST, e.to_string()),
                    },
                    Err(e) => return error(StatusCode::BAD_REQUEST, format!("not a rule: {e}")),
                }
            }
            let added: Vec<Rule> = rules.into_iter().filter_map(|r| eng.control().add(r).ok()).collect();
            respond(StatusCode::CREATED, "application/json", serde_json::to_string(&added).unwrap_or_default())
        }
        (&Method::DELETE, "") => {
            eng.control().clear();
            respond(StatusCode::NO_CONTENT, "application/json", "")
        }
        (&Method::DELETE, id) => match id.parse::<u64>() {
            Ok(n) if eng.control().remove(n) => respond(StatusCode::NO_CONTENT, "application/json", ""),
            _ => error(StatusCode::NOT_FOUND, format!("no rule {id}")),
        },
        _ => error(StatusCode::METHOD_NOT_ALLOWED, format!("{} {} is not supported", req.method, req.path)),
    }
}
