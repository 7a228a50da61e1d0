//! vAPI: `/api` (bare JSON), `/rest` (`{"value":…}`) and JSON-RPC 2.0 on
//! `POST /api`, for `com.vmware.cis.session`, `com.vmware.cis.tasks` and
//! `com.vmware.vcenter.extension.tasks`. Sessions are the engine's sessions,
//! so a vAPI session id also works as a VI/JSON session and back.
pub mod tasks;
pub mod value;

use super::{respond, AppState, Req, Resp};
use crate::engine::auth::session::Session;
use crate::engine::{Ctx, Engine, Fault};
use base64::Engine as _;
use hyper::{Method, StatusCode};
use serde_json::{json, Value as J};
use std::sync::Arc;
use value::{message, Style, V};

pub const SESSION_HEADER: &str = "vmware-api-session-id";

/// A vAPI standard error: its name (`not_found`) and message.
#[derive(Debug)]
pub struct VapiError {
    pub kind: String,
    pub message: String,
}

impl VapiError {
    pub fn new(kind: &str, message: impl Into<String>) -> VapiError {
        VapiError { kind: kind.to_string(), message: message.into() }
    }
    pub fn invalid_argument(message: impl Into<String>) -> VapiError {
        VapiError::new("invalid_argument", message)
    }
    fn unauthenticated() -> VapiError {
        VapiError::new("unauthenticated", "This method requires authentication.")
    }
    fn status(&self) -> StatusCode {
        match self.kind.as_str() {
            "unauthenticated" => StatusCode::UNAUTHORIZED,
            "unauthorized" => StatusCode::FORBIDDEN,
            "not_found" | "operation_not_found" => StatusCode::NOT_FOUND,
            "service_unavailable" => StatusCode::SERVICE_UNAVAILABLE,
            "error" | "resource_inaccessible" | "internal_server_error" => StatusCode::INTERNAL_SERVER_ERROR,
            "timed_out" => StatusCode::GATEWAY_TIMEOUT,
            "already_exists" | "resource_busy" | "resource_in_use" | "concurrent_change" => StatusCode::BAD_REQUEST,
            _ => StatusCode::BAD_REQUEST,
        }
    }
    fn value(&self) -> V {
        V::Error(
            format!("com.vmware.vapi.std.errors.{}", self.kind),
            vec![
                (
                    "messages".into(),
                    V::List(vec![message(&format!("com.vmware.vtwin.{}", self.kind), &self.message, &[])]),
                ),
                ("data".into(), V::Opt(None)),
                ("error_type".into(), V::some(V::str(self.kind.to_uppercase()))),
            ],
        )
    }
}

impl From<Fault> for VapiError {
    fn from(f: Fault) -> VapiError {
        VapiError::new(tasks::error_kind(&f), f.message)
    }
}

type Out = Result<Option<V>, VapiError>;

fn reply(style: Style, ok: StatusCode, out: Out) -> Resp {
    match out {
        Ok(Some(v)) => {
            let body = match style {
                Style::Rest => json!({ "value": v.render(style) }),
                _ => v.render(style),
            };
            respond(ok, "application/json", body.to_string())
        }
        Ok(None) => match style {
            Style::Rest => respond(StatusCode::OK, "application/json", ""),
            _ => respond(StatusCode::NO_CONTENT, "application/json", ""),
        },
        Err(e) => {
            let v = e.value().render(style);
            let body = match style {
                Style::Rest => json!({ "type": format!("com.vmware.vapi.std.errors.{}", e.kind), "value": v }),
                _ => {
                    let mut b = v;
                    b["error_type"] = J::String(e.kind.to_uppercase());
                    b
                }
            };
            respond(e.status(), "application/json", body.to_string())
        }
    }
}

fn ctx_for(eng: &Engine, req: &Req) -> Ctx {
    let mut ctx = Ctx::new(vmodl::VersionId::by_wire("vim25", super::newest_release()).expect("newest release"));
    ctx.ip = req.peer.ip().to_string();
    ctx.user_agent = req.header("user-agent").unwrap_or("").to_string();
    ctx.session = super::request_session(eng, &req.headers);
    ctx
}

pub fn basic_auth(req: &Req) -> Option<(String, String)> {
    let h = req.header("authorization")?;
    let b64 = h.strip_prefix("Basic ").or_else(|| h.strip_prefix("basic "))?;
    let raw = base64::engine::general_purpose::STANDARD.decode(b64.trim()).ok()?;
    let s = String::from_utf8(raw).ok()?;
    let (u, p) = s.split_once(':')?;
    Some((u.to_string(), p.to_string()))
}

fn login(eng: &Engine, ctx: &Ctx, user: &str, pw: &str) -> Result<Arc<Session>, VapiError> {
    let rec = eng
        .authenticate(user, pw, &ctx.ip)
        .map_err(|_| VapiError::new("unauthenticated", "Authentication required."))?;
    Ok(eng.open_session(&rec, "en", &ctx.ip, &ctx.user_agent)?)
}

fn session_info(s: &Session) -> V {
    let t = |d: chrono::DateTime<chrono::Utc>| V::Str(d.to_rfc3339_opts(chrono::SecondsFormat::Millis, true));
    V::structure(
        "com.vmware.cis.session.info",
        vec![
            ("user", V::str(crate::engine::auth::display_user(&s.user))),
            ("created_time", t(s.login_time)),
            ("last_accessed_time", t(s.last_active())),
        ],
    )
}

/// Query values for `name`: repeated keys and comma-separated lists.
fn query_list(req: &Req, name: &str) -> Option<Vec<String>> {
    let mut out = vec![];
    for kv in req.query.split('&') {
        let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
        let k = percent_encoding::percent_decode_str(k).decode_utf8_lossy();
        if k == name
            || k.strip_prefix(name).is_some_and(|r| r.starts_with('.') && r[1..].chars().all(|c| c.is_ascii_digit()))
        {
            let v = percent_encoding::percent_decode_str(&v.replace('+', " ")).decode_utf8_lossy().into_owned();
            out.extend(v.split(',').filter(|s| !s.is_empty()).map(str::to_string));
        }
    }
    (!out.is_empty()).then_some(out)
}

fn query_bool(req: &Req, names: &[&str]) -> bool {
    names.iter().any(|n| req.query_param(n).as_deref() == Some("true"))
}

fn body_json(req: &Req) -> Result<J, VapiError> {
    if req.body.is_empty() {
        return Ok(J::Null);
    }
    serde_json::from_slice(&req.body)
        .map_err(|e| VapiError::invalid_argument(format!("the request body is not JSON: {e}")))
}

fn require_session(ctx: &Ctx) -> Result<(), VapiError> {
    ctx.session.as_ref().map(|_| ()).ok_or_else(VapiError::unauthenticated)
}

/// `/api/…` and `/rest/…` (everything but JSON-RPC).
pub fn handle_rest(state: &AppState, req: &Req) -> (Resp, String) {
    let eng = &state.engine;
    let (style, rest) = if let Some(r) = req.path.strip_prefix("/rest") {
        (Style::Rest, r)
    } else {
        (Style::Api, req.path.strip_prefix("/api").unwrap_or(&req.path))
    };
    let mut ctx = ctx_for(eng, req);
    let action = req.query_param("~action").or_else(|| req.query_param("action"));
    let m = &req.method;
    let seg: Vec<&str> = rest.trim_matches('/').split('/').collect();
    let created = if style == Style::Api { StatusCode::CREATED } else { StatusCode::OK };
    let (name, status, out): (&str, StatusCode, Out) = match (m, seg.as_slice()) {
        // Sessions.
        (&Method::POST, ["session"] | ["com", "vmware", "cis", "session"]) if action.as_deref() != Some("get") => {
            let out = match basic_auth(req) {
                Some((u, p)) => login(eng, &ctx, &u, &p).map(|s| {
                    ctx.new_session = Some(s.clone());
                    Some(V::Secret(s.token.clone()))
                }),
                None => match &ctx.session {
                    // An authenticated caller gets its own session back.
                    Some(s) => Ok(Some(V::Secret(s.token.clone()))),
                    None => Err(VapiError::unauthenticated()),
                },
            };
            ("session.create", created, out)
        }
        (&Method::GET, ["session"] | ["com", "vmware", "cis", "session"])
        | (&Method::POST, ["com", "vmware", "cis", "session"]) => {
            let out = ctx.session.as_ref().map(|s| Some(session_info(s))).ok_or_else(VapiError::unauthenticated);
            ("session.get", StatusCode::OK, out)
        }
        (&Method::DELETE, ["session"] | ["com", "vmware", "cis", "session"]) => {
            let out = match &ctx.session {
                Some(s) => {
                    eng.end_session(&s.token);
                    Ok(None)
                }
                None => Err(VapiError::unauthenticated()),
            };
            ("session.delete", StatusCode::OK, out)
        }
        // cis tasks.
        (&Method::GET, ["cis", "tasks"]) => {
            let p = |n: &str| match style {
                Style::Rest => format!("filter_spec.{n}"),
                _ => n.to_string(),
            };
            let set = |n: &str| query_list(req, &p(n)).map(|v| v.into_iter().collect());
            let f = tasks::Filter {
                tasks: set("tasks"),
                services: set("services"),
                operations: set("operations"),
                status: set("status"),
                users: set("users"),
                targets: None,
            };
            let excl = query_bool(req, &["result_spec.exclude_result", "exclude_result"]);
            (
                "tasks.list",
                StatusCode::OK,
                require_session(&ctx).and_then(|_| tasks::list(eng, &ctx, &f, excl).map(Some)),
            )
        }
        (&Method::GET, ["cis", "tasks", id]) => {
            let excl = query_bool(req, &["spec.exclude_result", "exclude_result"]);
            ("tasks.get", StatusCode::OK, require_session(&ctx).and_then(|_| tasks::get(eng, &ctx, id, excl).map(Some)))
        }
        (&Method::POST, ["cis", "tasks", id]) if action.as_deref() == Some("cancel") => (
            "tasks.cancel",
            StatusCode::OK,
            require_session(&ctx).and_then(|_| tasks::cancel(eng, &ctx, id).map(|_| None)),
        ),
        // Extension tasks.
        (&Method::POST, ["vcenter", "extension", "tasks"]) => {
            let out = require_session(&ctx).and_then(|_| body_json(req)).and_then(|b| {
                let spec = b.get("spec").cloned().unwrap_or(J::Null);
                if !spec.is_object() {
                    return Err(VapiError::invalid_argument("the body needs a spec structure"));
                }
                tasks::create(eng, &ctx, &spec, None).map(|id| Some(V::Str(id)))
            });
            ("extension.tasks.create", created, out)
        }
        (&Method::PATCH, ["vcenter", "extension", "tasks", id]) => {
            let out = require_session(&ctx).and_then(|_| body_json(req)).and_then(|b| {
                let spec = b.get("spec").cloned().unwrap_or(J::Null);
                tasks::update(eng, &ctx, id, &spec, None).map(|_| None)
            });
            ("extension.tasks.update", StatusCode::OK, out)
        }
        _ => (
            "unknown",
            StatusCode::NOT_FOUND,
            Err(VapiError::new("operation_not_found", format!("no vAPI operation {} {}", req.method, req.path))),
        ),
    };
    let mut resp = reply(style, status, out);
    if let Some(s) = &ctx.new_session {
        // vCenter also sets the session as a cookie unless told not to.
        if req.header("vmware-use-header-authn") != Some("true") {
            let secure = if state.tls { "; Secure" } else { "" };
            if let Ok(v) = format!("{SESSION_HEADER}={}; Path=/; HttpOnly{secure}", s.token).parse() {
                resp.headers_mut().insert("set-cookie", v);
            }
        }
    }
    (resp, name.to_string())
}

/// JSON-RPC 2.0 `invoke` on `POST /api`.
pub fn handle_jsonrpc(state: &AppState, req: &Req) -> (Resp, String) {
    let eng = &state.engine;
    let body: J = match serde_json::from_slice(&req.body) {
        Ok(b) => b,
        Err(e) => {
            let r = json!({"jsonrpc": "2.0", "id": null, "error": {"code": -32700, "message": format!("Parse error: {e}")}});
            return (respond(StatusCode::OK, "application/json", r.to_string()), "jsonrpc.parse_error".into());
        }
    };
    let id = body.get("id").cloned().unwrap_or(J::Null);
    let params = &body["params"];
    if body.get("method").and_then(J::as_str) != Some("invoke") || !params.is_object() {
        let r = json!({"jsonrpc": "2.0", "id": id, "error": {"code": -32600, "message": "Invalid Request: method must be invoke with params"}});
        return (respond(StatusCode::OK, "application/json", r.to_string()), "jsonrpc.invalid".into());
    }
    let service = params["serviceId"].as_str().unwrap_or("").to_string();
    let operation = params["operationId"].as_str().unwrap_or("").to_string();
    let raw_input = &params["input"];
    let input = value::untag(raw_input);
    let sec = &params["ctx"]["securityCtx"];
    let mut ctx = ctx_for(eng, req);
    let scheme = sec["schemeId"].as_str().unwrap_or("");
    let mut transient = None;
    let auth: Result<(), VapiError> = match scheme {
        "com.vmware.vapi.std.security.session_id" => {
            let token = value::untag(&sec["sessionId"]);
            ctx.session = token.as_str().and_then(|t| eng.session_for_token(t));
            Ok(())
        }
        "com.vmware.vapi.std.security.user_pass" => {
            let pw = value::untag(&sec["password"]);
            login(eng, &ctx, sec["userName"].as_str().unwrap_or(""), pw.as_str().unwrap_or("")).map(|s| {
                ctx.session = Some(s.clone());
                transient = Some(s);
            })
        }
        _ => Ok(()),
    };
    let label = format!("{service}.{operation}");
    let out: Out = auth.and_then(|_| match (service.as_str(), operation.as_str()) {
        ("com.vmware.cis.session", "create") => match transient.take() {
            Some(s) => Ok(Some(V::Secret(s.token.clone()))),
            None => {
                ctx.session.as_ref().map(|s| Some(V::Secret(s.token.clone()))).ok_or_else(VapiError::unauthenticated)
            }
        },
        ("com.vmware.cis.session", "get") => {
            ctx.session.as_ref().map(|s| Some(session_info(s))).ok_or_else(VapiError::unauthenticated)
        }
        ("com.vmware.cis.session", "delete") => match &ctx.session {
            Some(s) => {
                eng.end_session(&s.token);
                Ok(Some(V::Void))
            }
            None => Err(VapiError::unauthenticated()),
        },
        ("com.vmware.cis.tasks", "get") => {
            let task = input["task"].as_str().unwrap_or("");
            let excl = input["spec"]["exclude_result"].as_bool().unwrap_or(false);
            require_session(&ctx).and_then(|_| tasks::get(eng, &ctx, task, excl).map(Some))
        }
        ("com.vmware.cis.tasks", "list") => {
            let f = tasks::Filter::from_json(&input["filter_spec"]);
            let excl = input["result_spec"]["exclude_result"].as_bool().unwrap_or(false);
            require_session(&ctx).and_then(|_| tasks::list(eng, &ctx, &f, excl).map(Some))
        }
        ("com.vmware.cis.tasks", "cancel") => {
            let task = input["task"].as_str().unwrap_or("");
            require_session(&ctx).and_then(|_| tasks::cancel(eng, &ctx, task).map(|_| Some(V::Void)))
        }
        ("com.vmware.vcenter.extension.tasks", "create") => require_session(&ctx).and_then(|_| {
            tasks::create(eng, &ctx, &input["spec"], error_name_in(raw_input)).map(|id| Some(V::Str(id)))
        }),
        ("com.vmware.vcenter.extension.tasks", "update") => {
            let task = input["task_id"].as_str().unwrap_or("");
            require_session(&ctx).and_then(|_| {
                tasks::update(eng, &ctx, task, &input["spec"], error_name_in(raw_input)).map(|_| Some(V::Void))
            })
        }
        _ => {
            Err(VapiError::new("operation_not_found", format!("operation {operation} of service {service} not found")))
        }
    });
    // A user_pass call outside session.create leaves no session behind.
    if let Some(s) = transient {
        eng.end_session(&s.token);
    }
    let result = match out {
        Ok(v) => json!({"output": v.unwrap_or(V::Void).render(Style::JsonRpc)}),
        Err(e) => json!({"error": e.value().render(Style::JsonRpc)}),
    };
    let r = json!({"jsonrpc": "2.0", "id": id, "result": result});
    (respond(StatusCode::OK, "application/json", r.to_string()), label)
}

/// The JSON-RPC name of the error in an update or create spec.
fn error_name_in(raw_input: &J) -> Option<&str> {
    let spec = raw_input.get("STRUCTURE")?.get("operation-input")?.get("spec")?;
    let spec = spec.get("OPTIONAL").unwrap_or(spec);
    let fields = spec.get("STRUCTURE")?.as_object()?.values().next()?;
    value::error_name(fields.get("error")?)
}
