//! The vCloud Director API (`vtwin serve --vcd-listen`): versions,
//! sessions (CloudAPI and legacy), organizations, task lists, tasks
//! (external tasks: post, update, cancel) and the typed query service for
//! tasks, in XML (vcloud 1.5 namespace) or JSON by the Accept header, with
//! API version negotiation. The model and its rules are in `engine::vcd`.
pub mod tree;

use super::{respond, AppState, Req, Resp};
use crate::engine::tasks::vcd::{parse_status, Ref, TaskError, TaskSpec};
use crate::engine::tasks::TaskRecord;
use crate::engine::vcd::{self, VcdError, VcdErrorKind, Who};
use crate::engine::Engine;
use chrono::{TimeZone, Utc};
use hyper::{Method, StatusCode};
use tree::Node;

const NS: &str = "http://www.vmware.com/vcloud/v1.5";
const NS_VERSIONS: &str = "http://www.vmware.com/vcloud/versions";
/// API versions served (oldest first): 29.0–32.0 log in at /api/sessions,
/// 33.0 and later through CloudAPI.
pub const VERSIONS: &[&str] = &["29.0", "30.0", "31.0", "32.0", "33.0", "34.0", "35.0", "36.0"];
const TASK_XML: &str = "application/vnd.vmware.vcloud.task+xml";

/// How a reply is rendered.
#[derive(Clone)]
struct Ctx {
    base: String,
    json: bool,
    version: String,
}

impl Ctx {
    fn href(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }
    fn media(&self, xml_type: &str) -> String {
        let t = if self.json { xml_type.replace("+xml", "+json") } else { xml_type.to_string() };
        format!("{t};version={}", self.version)
    }
    fn reply(&self, status: StatusCode, xml_type: &str, n: &Node) -> Resp {
        let body = if self.json { tree::to_json(n).to_string() } else { tree::to_xml(n, NS) };
        respond(status, &self.media(xml_type), body)
    }
}

/// The HTTP status of an error: VCD's `majorErrorCode` too.
fn http_status(e: &VcdError) -> StatusCode {
    match e.kind {
        VcdErrorKind::BadRequest => StatusCode::BAD_REQUEST,
        VcdErrorKind::Unauthorized => StatusCode::UNAUTHORIZED,
        VcdErrorKind::Forbidden => StatusCode::FORBIDDEN,
        VcdErrorKind::NotFound => StatusCode::NOT_FOUND,
        VcdErrorKind::NotAcceptable => StatusCode::NOT_ACCEPTABLE,
        VcdErrorKind::UnsupportedMediaType => StatusCode::UNSUPPORTED_MEDIA_TYPE,
        VcdErrorKind::Internal => StatusCode::INTERNAL_SERVER_ERROR,
    }
}

fn error_node(e: &VcdError) -> Node {
    Node::new("Error")
        .attr("minorErrorCode", e.minor)
        .attr("message", e.message.clone())
        .attr("majorErrorCode", http_status(e).as_u16().to_string())
}

fn error_resp(ctx: Option<&Ctx>, e: &VcdError) -> Resp {
    let status = http_status(e);
    match ctx {
        Some(c) => c.reply(status, "application/vnd.vmware.vcloud.error+xml", &error_node(e)),
        None => respond(status, "application/vnd.vmware.vcloud.error+xml", tree::to_xml(&error_node(e), NS)),
    }
}

/// The API version and rendering the client asks for in `Accept`.
fn negotiate(req: &Req, base: String) -> Result<Ctx, VcdError> {
    let accept = req.header("accept").unwrap_or("").to_string();
    let json = accept.contains("json");
    let version =
        accept.split(';').find_map(|p| p.trim().strip_prefix("version=")).map(|v| v.trim_matches('"').to_string());
    let version = match version {
        Some(v) if VERSIONS.contains(&v.as_str()) => v,
        Some(v) => {
            return Err(VcdError::not_acceptable(format!(
                "API version {v} is not supported; this server speaks {}",
                VERSIONS.join(", ")
            )));
        }
        None => {
            return Err(VcdError::not_acceptable(
                "The request has an invalid accept header: give an API version (application/*+xml;version=36.0)",
            ))
        }
    };
    Ok(Ctx { base, json, version })
}

/// The base of every href. The client's Host header names the address it
/// reached us at (VCD's public address setting has no equivalent here); it
/// is used only when it is a plain host name or address with an optional
/// port, so nothing a client sends can be injected into a document.
fn base_of(state: &AppState, req: &Req) -> String {
    let plain = |h: &&str| {
        !h.is_empty()
            && h.len() <= 255
            && h.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | ':' | '[' | ']' | '_'))
    };
    let host = req.header("host").filter(plain).unwrap_or("localhost");
    format!("{}://{host}", if state.tls { "https" } else { "http" })
}

fn token_of(req: &Req) -> Option<String> {
    if let Some(t) = req.header("x-vcloud-authorization") {
        return Some(t.to_string());
    }
    let a = req.header("authorization")?;
    a.strip_prefix("Bearer ").or_else(|| a.strip_prefix("bearer ")).map(|t| t.trim().to_string())
}

fn ms_time(ms: i64) -> String {
    Utc.timestamp_millis_opt(ms).single().unwrap_or_default().to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

/// Route a request on the VCD listener.
pub async fn handle(state: &AppState, req: &Req) -> (Resp, String) {
    let eng = state.engine.clone();
    let base = base_of(state, req);
    let path = req.path.trim_end_matches('/').to_string();
    if req.method == Method::GET && path == "/api/versions" {
        return (versions(&base, req.header("accept").unwrap_or("").contains("json")), "versions".into());
    }
    let ctx = match negotiate(req, base) {
        Ok(c) => c,
        Err(e) => return (error_resp(None, &e), "negotiate".into()),
    };
    let name = format!("{} {}", req.method, route_name(&path));
    let r = crate::engine::off_worker(|| dispatch(&eng, &ctx, req, &path));
    (r.unwrap_or_else(|e| error_resp(Some(&ctx), &e)), name)
}

fn route_name(path: &str) -> String {
    path.split('/').map(|s| if s.len() > 30 { "{id}" } else { s }).collect::<Vec<_>>().join("/")
}

fn dispatch(eng: &Engine, ctx: &Ctx, req: &Req, path: &str) -> Result<Resp, VcdError> {
    let ip = req.peer.ip().to_string();
    let ua = req.header("user-agent").unwrap_or("").to_string();
    match (&req.method, path) {
        (&Method::POST, "/cloudapi/1.0.0/sessions/provider" | "/cloudapi/1.0.0/sessions" | "/api/sessions") => {
            let (user, pw) = super::vapi::basic_auth(req).ok_or_else(VcdError::unauthorized)?;
            let provider = match path {
                "/cloudapi/1.0.0/sessions/provider" => Some(true),
                "/cloudapi/1.0.0/sessions" => Some(false),
                _ => None,
            };
            let who = vcd::login(eng, &user, &pw, provider, &ip, &ua)?;
            let mut r = if path.starts_with("/cloudapi") {
                let body = cloudapi_session(ctx, &who);
                respond(StatusCode::OK, &format!("application/json;version={}", ctx.version), body.to_string())
            } else {
                ctx.reply(StatusCode::OK, "application/vnd.vmware.vcloud.session+xml", &session_node(ctx, &who))
            };
            r.headers_mut().insert("x-vcloud-authorization", who.token.parse().expect("token header"));
            r.headers_mut().insert("x-vmware-vcloud-access-token", who.token.parse().expect("token header"));
            r.headers_mut().insert("x-vmware-vcloud-token-type", "Bearer".parse().expect("header"));
            Ok(r)
        }
        _ => {
            let who = token_of(req).and_then(|t| vcd::session(eng, &t)).ok_or_else(VcdError::unauthorized)?;
            authed(eng, ctx, req, path, &who)
        }
    }
}

fn authed(eng: &Engine, ctx: &Ctx, req: &Req, path: &str, who: &Who) -> Result<Resp, VcdError> {
    let segs: Vec<&str> = path.trim_start_matches('/').split('/').collect();
    let expiry = eng.vcd_task_expiry_secs();
    match (&req.method, segs.as_slice()) {
        (&Method::GET, ["api", "session"]) => {
            Ok(ctx.reply(StatusCode::OK, "application/vnd.vmware.vcloud.session+xml", &session_node(ctx, who)))
        }
        (&Method::GET, ["cloudapi", "1.0.0", "sessions", "current"]) => Ok(respond(
            StatusCode::OK,
            &format!("application/json;version={}", ctx.version),
            cloudapi_session(ctx, who).to_string(),
        )),
        (&Method::DELETE, ["api", "session"] | ["cloudapi", "1.0.0", "sessions", "current"]) => {
            vcd::logout(eng, who);
            Ok(respond(StatusCode::NO_CONTENT, "text/plain", ""))
        }
        (&Method::GET, ["api", "org"]) => {
            let d = vcd::shared_directory(eng);
            let orgs = d.orgs.iter().filter(|o| who.is_system() || o.id == who.org.id).map(|o| {
                Node::new("Org")
                    .attr("href", ctx.href(&format!("/api/org/{}", o.id)))
                    .attr("type", "application/vnd.vmware.vcloud.org+xml")
                    .attr("name", o.name.clone())
            });
            let n = Node::new("OrgList")
                .attr("href", ctx.href("/api/org/"))
                .attr("type", "application/vnd.vmware.vcloud.orgList+xml")
                .children(orgs);
            Ok(ctx.reply(StatusCode::OK, "application/vnd.vmware.vcloud.orgList+xml", &n))
        }
        (&Method::GET, ["api", "org", id]) => {
            let o = visible_org(eng, who, id)?;
            Ok(ctx.reply(StatusCode::OK, "application/vnd.vmware.vcloud.org+xml", &org_node(ctx, &o)))
        }
        (&Method::GET, ["api", "tasksList", id]) => {
            let o = visible_org(eng, who, id)?;
            let tasks = vcd::list_tasks(eng, who, Some(&o.id));
            let n = Node::new("TasksList")
                .attr("href", ctx.href(&format!("/api/tasksList/{}", o.id)))
                .attr("type", "application/vnd.vmware.vcloud.tasksList+xml")
                .attr("name", "Tasks Lists")
                .children(tasks.iter().map(|t| task_node(eng, ctx, t)));
            Ok(ctx.reply(StatusCode::OK, "application/vnd.vmware.vcloud.tasksList+xml", &n))
        }
        (&Method::POST, ["api", "tasksList", id]) => {
            let o = visible_org(eng, who, id)?;
            let spec = task_spec(ctx, req)?;
            let t = vcd::create_task(eng, who, &o.id, &spec, expiry)?;
            eng.changed();
            Ok(ctx.reply(StatusCode::CREATED, TASK_XML, &task_node(eng, ctx, &t)))
        }
        (&Method::GET, ["api", "task", id]) => {
            let t = vcd::get_task(eng, who, id)?;
            Ok(ctx.reply(StatusCode::OK, TASK_XML, &task_node(eng, ctx, &t)))
        }
        (&Method::PUT, ["api", "task", id]) => {
            let spec = task_spec(ctx, req)?;
            let t = vcd::update_task(eng, who, id, &spec)?;
            eng.changed();
            Ok(ctx.reply(StatusCode::OK, TASK_XML, &task_node(eng, ctx, &t)))
        }
        (&Method::POST, ["api", "task", id, "action", "cancel"]) => {
            vcd::cancel_task(eng, who, id)?;
            eng.changed();
            Ok(respond(StatusCode::NO_CONTENT, "text/plain", ""))
        }
        (&Method::GET, ["api", "query"]) => query(eng, ctx, req, who),
        _ => Err(VcdError::not_found(format!("no resource {} {path}", req.method))),
    }
}

fn visible_org(eng: &Engine, who: &Who, id: &str) -> Result<vcd::Org, VcdError> {
    let d = vcd::shared_directory(eng);
    let o = d.org(id).cloned().ok_or_else(|| VcdError::not_found(format!("no organization {id}")))?;
    if !who.is_system() && o.id != who.org.id {
        // Another org does not exist for a tenant, as an unknown id.
        return Err(VcdError::not_found(format!("no organization {id}")));
    }
    Ok(o)
}

fn versions(base: &str, json: bool) -> Resp {
    let infos = VERSIONS.iter().map(|v| {
        let login = if v.parse::<f64>().unwrap_or(0.0) >= 33.0 { "/cloudapi/1.0.0/sessions" } else { "/api/sessions" };
        Node::new("VersionInfo")
            .attr("deprecated", "false")
            .child(Node::new("Version").text(*v))
            .child(Node::new("LoginUrl").text(format!("{base}{login}")))
    });
    let n = Node::new("SupportedVersions").children(infos);
    if json {
        respond(StatusCode::OK, "application/json", tree::to_json(&n).to_string())
    } else {
        respond(StatusCode::OK, "application/xml;charset=UTF-8", tree::to_xml(&n, NS_VERSIONS))
    }
}

fn user_href(ctx: &Ctx, id: &str) -> String {
    ctx.href(&format!("/api/admin/user/{id}"))
}

fn session_node(ctx: &Ctx, who: &Who) -> Node {
    let mut links = vec![
        Node::new("Link")
            .attr("rel", "down")
            .attr("type", "application/vnd.vmware.vcloud.orgList+xml")
            .attr("href", ctx.href("/api/org/")),
        Node::new("Link").attr("rel", "remove").attr("href", ctx.href("/api/session/")),
        Node::new("Link")
            .attr("rel", "down")
            .attr("type", "application/vnd.vmware.vcloud.org+xml")
            .attr("name", who.org.name.clone())
            .attr("href", ctx.href(&format!("/api/org/{}", who.org.id))),
        Node::new("Link")
            .attr("rel", "down")
            .attr("type", "application/vnd.vmware.vcloud.query.queryList+xml")
            .attr("href", ctx.href("/api/query")),
    ];
    if who.is_system() {
        links.push(
            Node::new("Link")
                .attr("rel", "down")
                .attr("type", "application/vnd.vmware.admin.vcloud+xml")
                .attr("href", ctx.href("/api/admin/")),
        );
    }
    Node::new("Session")
        .attr("user", who.user.clone())
        .attr("org", who.org.name.clone())
        .attr("userId", format!("urn:vcloud:user:{}", who.user_id))
        .attr("roles", who.role.clone())
        .attr("locationId", format!("{}@vtwin", who.org.name))
        .attr("href", ctx.href("/api/session/"))
        .attr("type", "application/vnd.vmware.vcloud.session+xml")
        .children(links)
        .child(Node::new("AuthorizedLocations"))
}

fn cloudapi_session(ctx: &Ctx, who: &Who) -> serde_json::Value {
    serde_json::json!({
        "id": format!("urn:vcloud:session:{}", uuid::Uuid::new_v4()),
        "site": {"name": "vtwin", "id": "urn:vcloud:site:00000000-0000-0000-0000-000000000001"},
        "user": {"name": who.user, "id": format!("urn:vcloud:user:{}", who.user_id)},
        "org": {"name": who.org.name, "id": format!("urn:vcloud:org:{}", who.org.id)},
        "location": format!("{}@vtwin", who.org.name),
        "roles": [who.role],
        "roleRefs": [{"name": who.role, "id": format!("urn:vcloud:role:{}", who.role.replace(' ', "-"))}],
        "sessionIdleTimeoutMinutes": 30,
        "operatingOrg": {"name": who.org.name, "id": format!("urn:vcloud:org:{}", who.org.id)},
        "_links": [{"rel": "remove", "href": ctx.href("/cloudapi/1.0.0/sessions/current")}],
    })
}

fn org_node(ctx: &Ctx, o: &vcd::Org) -> Node {
    Node::new("Org")
        .attr("href", ctx.href(&format!("/api/org/{}", o.id)))
        .attr("type", "application/vnd.vmware.vcloud.org+xml")
        .attr("id", format!("urn:vcloud:org:{}", o.id))
        .attr("name", o.name.clone())
        .child(
            Node::new("Link")
                .attr("rel", "down")
                .attr("type", "application/vnd.vmware.vcloud.tasksList+xml")
                .attr("href", ctx.href(&format!("/api/tasksList/{}", o.id))),
        )
        .child(
            Node::new("Link")
                .attr("rel", "up")
                .attr("type", "application/vnd.vmware.vcloud.orgList+xml")
                .attr("href", ctx.href("/api/org/")),
        )
        .child(
            Node::new("Link")
                .attr("rel", "down")
                .attr("type", "application/vnd.vmware.vcloud.query.records+xml")
                .attr("href", ctx.href(&format!("/api/query?type=orgVdc&format=records&filter=orgName=={}", o.name))),
        )
        .child(Node::new("Description").text(o.full_name.clone()))
        .child(Node::new("FullName").text(o.full_name.clone()))
        .child(Node::new("IsEnabled").text("true"))
}

/// The path of an href that names an entity of this API (`…/api/…`,
/// `…/cloudapi/…`). A task's Owner is kept as that path, and shown at the
/// address the reader came in on, as VCD shows its entities wherever it is
/// reached: a data directory moved to another address, or read through
/// another name, shows working links. Owners that records of earlier builds
/// kept whole are shown the same way; any other href is kept as sent.
fn entity_path(href: &str) -> Option<&str> {
    let path = match href.strip_prefix("https://").or_else(|| href.strip_prefix("http://")) {
        Some(rest) => &rest[rest.find('/')?..],
        None => href,
    };
    (path.starts_with("/api/") || path.starts_with("/cloudapi/")).then_some(path)
}

/// An href as a client sent it, as kept.
fn kept_href(href: &str) -> String {
    entity_path(href).unwrap_or(href).to_string()
}

impl Ctx {
    /// A kept href, as shown.
    fn shown_href(&self, href: &str) -> String {
        entity_path(href).map_or_else(|| href.to_string(), |p| self.href(p))
    }
}

fn reference(ctx: &Ctx, name: &str, r: &Ref) -> Node {
    Node::new(name)
        .attr("href", ctx.shown_href(&r.href))
        .attr_opt("id", r.id.clone())
        .attr_opt("type", r.ty.clone())
        .attr_opt("name", r.name.clone())
}

fn task_node(eng: &Engine, ctx: &Ctx, t: &TaskRecord) -> Node {
    let v = t.vcd.as_ref().expect("a VCD task");
    let href = ctx.href(&format!("/api/task/{}", v.id));
    let d = vcd::shared_directory(eng);
    let org = d.org(&v.org).cloned();
    let mut links = vec![Node::new("Link").attr("rel", "edit").attr("type", TASK_XML).attr("href", href.clone())];
    if !matches!(v.status.as_str(), "success" | "error" | "aborted") {
        links.push(Node::new("Link").attr("rel", "task:cancel").attr("href", format!("{href}/action/cancel")));
    }
    if let Some(o) = &org {
        links.push(
            Node::new("Link")
                .attr("rel", "up")
                .attr("type", "application/vnd.vmware.vcloud.org+xml")
                .attr("name", o.name.clone())
                .attr("href", ctx.href(&format!("/api/org/{}", o.id))),
        );
    }
    let mut n = Node::new("Task")
        .attr("cancelRequested", v.cancel_requested.to_string())
        .attr_opt("expiryTime", v.expiry.map(ms_time))
        .attr_opt("operation", v.operation.clone())
        .attr_opt("operationName", v.operation_name.clone())
        .attr_opt("serviceNamespace", v.service_namespace.clone())
        .attr_opt("startTime", t.start_time.map(ms_time))
        .attr_opt("endTime", t.complete_time.map(ms_time))
        .attr("status", v.status.clone())
        .attr("name", v.name.clone())
        .attr("id", format!("urn:vcloud:task:{}", v.id))
        .attr_opt("operationKey", v.operation_key.clone())
        .attr("href", href)
        .attr("type", TASK_XML)
        .children(links);
    if let Some(desc) = &v.description {
        n = n.child(Node::new("Description").text(desc.clone()));
    }
    if let Some(o) = &v.owner {
        n = n.child(reference(ctx, "Owner", o));
    }
    if let Some(e) = &v.error {
        n = n.child(
            Node::new("Error")
                .attr_opt("stackTrace", e.stack.clone())
                .attr("minorErrorCode", e.minor.clone())
                .attr("message", e.message.clone())
                .attr("majorErrorCode", e.major.to_string())
                .attr_opt("vendorSpecificErrorCode", e.vendor.clone()),
        );
    }
    if let Some((id, name)) = &v.user {
        n = n.child(
            Node::new("User")
                .attr("href", user_href(ctx, id))
                .attr("name", name.clone())
                .attr("type", "application/vnd.vmware.admin.user+xml"),
        );
    }
    if let Some(o) = &org {
        n = n.child(
            Node::new("Organization")
                .attr("href", ctx.href(&format!("/api/org/{}", o.id)))
                .attr("name", o.name.clone())
                .attr("type", "application/vnd.vmware.vcloud.org+xml"),
        );
    }
    if let Some(p) = t.progress {
        n = n.child(Node::new("Progress").text(p.to_string()));
    }
    if let Some(p) = &v.params {
        n = n.child(Node::raw("Params", p.clone()));
    }
    if let Some(dt) = &v.details {
        n = n.child(Node::new("Details").text(dt.clone()));
    }
    // VcTaskList (API 33.0+; not in the 1.5 schema): vCenter tasks started
    // for this task (vim25 tasks whose parent it is).
    let vc = vcd::vc_tasks(eng, t);
    if !vc.is_empty() && ctx.version.parse::<f64>().unwrap_or(0.0) >= 33.0 {
        n = n.child(Node::new("VcTaskList").children(vc.iter().map(|x| {
            Node::new("VcTask")
                .attr("name", x.name.clone().unwrap_or_else(|| x.description_id.clone()))
                .attr("moref", x.key.clone())
                .attr("status", x.state.as_str())
                .attr_opt("errorMessage", x.error_message.clone())
                .attr_opt("objectName", x.entity_name.clone())
                .attr_opt("objectType", x.entity.as_ref().map(|e| e.0.clone()))
                .attr_opt("objectMoref", x.entity.as_ref().map(|e| e.1.clone()))
                .attr("virtualCenterID", eng.instance_uuid().to_string())
                .attr_opt("startTime", x.start_time.map(ms_time))
                .attr_opt("endTime", x.complete_time.map(ms_time))
        })));
    }
    if let Some(r) = &v.result {
        n = n.child(Node::raw("Result", r.clone()));
    }
    n
}

/// A JSON `params`/`result`: a string, kept as XML character data.
fn text_of(v: &serde_json::Value, k: &str) -> Result<Option<String>, VcdError> {
    match v.get(k) {
        None | Some(serde_json::Value::Null) => Ok(None),
        Some(serde_json::Value::String(s)) => Ok(Some(tree::esc(s))),
        Some(_) => Err(VcdError::bad_request(format!("{k} must be a string in JSON"))),
    }
}

/// Control characters XML cannot carry are refused in JSON input too.
fn check_text(v: &serde_json::Value) -> Result<(), VcdError> {
    match v {
        serde_json::Value::String(s) if s.chars().any(tree::forbidden) => {
            Err(VcdError::bad_request("control characters are not allowed"))
        }
        serde_json::Value::Array(a) => a.iter().try_for_each(check_text),
        serde_json::Value::Object(m) => m.values().try_for_each(check_text),
        _ => Ok(()),
    }
}

/// The Task body of a POST or PUT, XML or JSON by Content-Type.
fn task_spec(ctx: &Ctx, req: &Req) -> Result<TaskSpec, VcdError> {
    let ct = req.header("content-type").unwrap_or("").to_ascii_lowercase();
    if ct.contains("task+json") || ct.starts_with("application/json") {
        let v: serde_json::Value =
            serde_json::from_slice(&req.body).map_err(|e| VcdError::bad_request(format!("malformed JSON: {e}")))?;
        check_text(&v)?;
        let s = |k: &str| v.get(k).and_then(|x| x.as_str()).map(str::to_string);
        let r = |k: &str| {
            v.get(k).filter(|x| x.is_object()).map(|x| Ref {
                href: kept_href(x.get("href").and_then(|h| h.as_str()).unwrap_or("")),
                ty: x.get("type").and_then(|h| h.as_str()).map(str::to_string),
                name: x.get("name").and_then(|h| h.as_str()).map(str::to_string),
                id: x.get("id").and_then(|h| h.as_str()).map(str::to_string),
            })
        };
        let error = v.get("error").filter(|e| e.is_object()).map(|e| TaskError {
            major: e.get("majorErrorCode").and_then(serde_json::Value::as_i64).unwrap_or(500) as i32,
            minor: e.get("minorErrorCode").and_then(|x| x.as_str()).unwrap_or("INTERNAL_SERVER_ERROR").to_string(),
            message: e.get("message").and_then(|x| x.as_str()).unwrap_or("").to_string(),
            vendor: e.get("vendorSpecificErrorCode").and_then(|x| x.as_str()).map(str::to_string),
            stack: e.get("stackTrace").and_then(|x| x.as_str()).map(str::to_string),
        });
        let progress = match v.get("progress") {
            None | Some(serde_json::Value::Null) => None,
            Some(p) => Some(p.as_i64().ok_or_else(|| VcdError::bad_request("progress is not an integer"))?),
        };
        return Ok(TaskSpec {
            name: s("name"),
            status: s("status"),
            operation: s("operation"),
            operation_name: s("operationName"),
            operation_key: s("operationKey"),
            service_namespace: s("serviceNamespace"),
            description: s("description"),
            details: s("details"),
            progress,
            owner: r("owner"),
            error,
            params: text_of(&v, "params")?,
            result: text_of(&v, "result")?,
        });
    }
    if !ct.is_empty() && !ct.contains("task+xml") && !ct.starts_with("application/xml") && !ct.starts_with("text/xml") {
        return Err(VcdError::unsupported_media_type(format!("content type {ct} is not a task ({TASK_XML} or +json)")));
    }
    let _ = ctx;
    let n = tree::parse_xml(&req.body, &["Params", "Result"]).map_err(VcdError::bad_request)?;
    if n.name != "Task" {
        return Err(VcdError::bad_request(format!("expected a Task element, got {}", n.name)));
    }
    let a = |k: &str| n.get_attr(k).map(str::to_string);
    let r = |k: &str| {
        n.find(k).map(|x| Ref {
            href: kept_href(x.get_attr("href").unwrap_or("")),
            ty: x.get_attr("type").map(str::to_string),
            name: x.get_attr("name").map(str::to_string),
            id: x.get_attr("id").map(str::to_string),
        })
    };
    let progress = match n.child_text("Progress") {
        None => None,
        Some(p) => Some(
            p.trim().parse::<i64>().map_err(|_| VcdError::bad_request(format!("progress '{p}' is not an integer")))?,
        ),
    };
    let error = n.find("Error").map(|e| TaskError {
        major: e.get_attr("majorErrorCode").and_then(|x| x.parse().ok()).unwrap_or(500),
        minor: e.get_attr("minorErrorCode").unwrap_or("INTERNAL_SERVER_ERROR").to_string(),
        message: e.get_attr("message").unwrap_or("").to_string(),
        vendor: e.get_attr("vendorSpecificErrorCode").map(str::to_string),
        stack: e.get_attr("stackTrace").map(str::to_string),
    });
    Ok(TaskSpec {
        name: a("name"),
        status: a("status"),
        operation: a("operation"),
        operation_name: a("operationName"),
        operation_key: a("operationKey"),
        service_namespace: a("serviceNamespace"),
        description: n.child_text("Description"),
        details: n.child_text("Details"),
        progress,
        owner: r("Owner"),
        error,
        params: n.find("Params").and_then(|p| p.raw.clone()),
        result: n.find("Result").and_then(|p| p.raw.clone()),
    })
}

// ---- the typed query service ----------------------------------------------

/// A task as the query service's record attributes.
fn record_attrs(eng: &Engine, ctx: &Ctx, t: &TaskRecord, admin: bool) -> Vec<(String, String)> {
    let v = t.vcd.as_ref().expect("a VCD task");
    let d = vcd::shared_directory(eng);
    let org = d.org(&v.org).cloned();
    let mut a: Vec<(String, String)> = vec![
        ("href".into(), ctx.href(&format!("/api/task/{}", v.id))),
        ("id".into(), format!("urn:vcloud:task:{}", v.id)),
        ("type".into(), TASK_XML.into()),
        ("name".into(), v.name.clone()),
        ("status".into(), v.status.clone()),
    ];
    let mut opt = |k: &str, x: Option<String>| {
        if let Some(x) = x {
            a.push((k.to_string(), x));
        }
    };
    opt("org", org.as_ref().map(|o| ctx.href(&format!("/api/org/{}", o.id))));
    opt("orgName", org.as_ref().map(|o| o.name.clone()));
    opt("operationName", v.operation_name.clone());
    opt("startDate", t.start_time.map(ms_time));
    opt("endDate", t.complete_time.map(ms_time));
    opt("progress", t.progress.map(|p| p.to_string()));
    opt("ownerName", v.user.as_ref().map(|u| u.1.clone()));
    if admin {
        opt("owner", v.user.as_ref().map(|u| user_href(ctx, &u.0)));
    }
    opt("object", v.owner.as_ref().map(|o| ctx.shown_href(&o.href)));
    opt("objectType", v.owner.as_ref().and_then(|o| o.ty.clone()));
    opt("objectName", v.owner.as_ref().and_then(|o| o.name.clone()));
    opt("serviceNamespace", v.service_namespace.clone());
    a
}

/// One FIQL term (`attr==value`, `!=`, `=lt=`, `=le=`, `=gt=`, `=ge=`;
/// `*` wildcards in `==`/`!=`).
fn term_matches(attrs: &[(String, String)], term: &str) -> Result<bool, VcdError> {
    for op in ["==", "!=", "=lt=", "=le=", "=gt=", "=ge="] {
        if let Some((k, val)) = term.split_once(op) {
            // Values compare without regard to case; status names also as
            // vcd-cli spells them (RUNNING, PRE_RUNNING).
            let norm = |x: &str| {
                if k == "status" {
                    parse_status(x).map_or_else(|_| x.to_string(), str::to_string).to_lowercase()
                } else {
                    x.to_lowercase()
                }
            };
            let have_owned = attrs.iter().find(|(a, _)| a == k).map(|(_, v)| norm(v));
            let have = have_owned.as_deref();
            let val_owned = norm(val);
            let val = val_owned.as_str();
            let wild = |h: &str| {
                let parts: Vec<&str> = val.split('*').collect();
                if parts.len() == 1 {
                    return h == val;
                }
                let mut rest = h;
                for (i, p) in parts.iter().enumerate() {
                    if i == 0 {
                        let Some(r) = rest.strip_prefix(p) else { return false };
                        rest = r;
                    } else if i == parts.len() - 1 {
                        return rest.ends_with(p);
                    } else {
                        let Some(at) = rest.find(p) else { return false };
                        rest = &rest[at + p.len()..];
                    }
                }
                true
            };
            return Ok(match op {
                "==" => have.is_some_and(wild),
                "!=" => !have.is_some_and(wild),
                _ => {
                    let Some(h) = have else { return Ok(false) };
                    let ord = match (h.parse::<f64>(), val.parse::<f64>()) {
                        (Ok(a), Ok(b)) => a.partial_cmp(&b).unwrap_or(std::cmp::Ordering::Equal),
                        _ => h.cmp(val),
                    };
                    match op {
                        "=lt=" => ord.is_lt(),
                        "=le=" => ord.is_le(),
                        "=gt=" => ord.is_gt(),
                        _ => ord.is_ge(),
                    }
                }
            });
        }
    }
    Err(VcdError::bad_request(format!("filter term '{term}' has no operator (==, !=, =lt=, =le=, =gt=, =ge=)")))
}

/// FIQL: `,` (or) of `;` (and) of terms; `;` binds tighter.
fn filter_matches(attrs: &[(String, String)], filter: &str) -> Result<bool, VcdError> {
    let mut any = false;
    for disj in filter.split(',') {
        let mut all = true;
        for t in disj.split(';') {
            if !term_matches(attrs, t.trim().trim_start_matches('(').trim_end_matches(')'))? {
                all = false;
            }
        }
        any |= all;
    }
    Ok(any)
}

fn query(eng: &Engine, ctx: &Ctx, req: &Req, who: &Who) -> Result<Resp, VcdError> {
    let q = |k: &str| req.query_param(k);
    let Some(ty) = q("type") else {
        // The query list: one link per (format, type) a client can ask for.
        let mut links = vec![];
        for t in ["task", "adminTask", "orgVdc"] {
            for (f, media) in [("records", "records"), ("idrecords", "idrecords"), ("references", "references")] {
                links.push(
                    Node::new("Link")
                        .attr("rel", "down")
                        .attr("type", format!("application/vnd.vmware.vcloud.query.{media}+xml"))
                        .attr("name", t)
                        .attr("href", ctx.href(&format!("/api/query?type={t}&format={f}"))),
                );
            }
        }
        let n = Node::new("QueryList")
            .attr("href", ctx.href("/api/query"))
            .attr("type", "application/vnd.vmware.vcloud.query.queryList+xml")
            .children(links);
        return Ok(ctx.reply(StatusCode::OK, "application/vnd.vmware.vcloud.query.queryList+xml", &n));
    };
    if ty == "orgVdc" || ty == "vdc" {
        // No virtual datacenters here: an empty answer, as for an org without any.
        let n = Node::new("QueryResultRecords")
            .attr("href", ctx.href(&format!("/api/query?{}", req.query)))
            .attr("type", "application/vnd.vmware.vcloud.query.records+xml")
            .attr("name", ty.clone())
            .attr("page", "1")
            .attr("pageSize", "25")
            .attr("total", "0");
        return Ok(ctx.reply(StatusCode::OK, "application/vnd.vmware.vcloud.query.records+xml", &n));
    }
    let admin = match ty.as_str() {
        "task" => false,
        "adminTask" if who.is_system() => true,
        "adminTask" => return Err(VcdError::forbidden("adminTask queries are for the System organization")),
        other => return Err(VcdError::bad_request(format!("query type '{other}' is not served (task, adminTask)"))),
    };
    let format = q("format").unwrap_or_else(|| "records".into());
    if !matches!(format.as_str(), "records" | "idrecords" | "references") {
        return Err(VcdError::bad_request(format!("format '{format}' is not records, idrecords or references")));
    }
    let page: usize = q("page")
        .map(|p| p.parse().map_err(|_| VcdError::bad_request(format!("page '{p}' is not a number"))))
        .transpose()?
        .unwrap_or(1);
    let page_size: usize = q("pageSize")
        .map(|p| p.parse().map_err(|_| VcdError::bad_request(format!("pageSize '{p}' is not a number"))))
        .transpose()?
        .unwrap_or(25);
    if page == 0 || page > 1_000_000_000 || page_size == 0 || page_size > 128 {
        return Err(VcdError::bad_request("page is 1 to 1,000,000,000 and pageSize 1 to 128"));
    }
    // Before 33.0 pyvcloud encodes the filter twice and says so.
    let filter = q("filter").map(|f| {
        if q("filterEncoded").as_deref() == Some("true") {
            percent_encoding::percent_decode_str(&f).decode_utf8_lossy().into_owned()
        } else {
            f
        }
    });
    // A tenant's task query shows its own org's tasks; adminTask every org's.
    let own = if admin { None } else { Some(who.org.id.clone()) };
    let mut rows: Vec<(TaskRecord, Vec<(String, String)>)> = vec![];
    for t in vcd::list_tasks(eng, who, own.as_deref()) {
        let a = record_attrs(eng, ctx, &t, admin);
        if let Some(f) = filter.as_deref() {
            if !filter_matches(&a, f)? {
                continue;
            }
        }
        rows.push((t, a));
    }
    let key =
        |a: &[(String, String)], k: &str| a.iter().find(|(x, _)| x == k).map(|(_, v)| v.clone()).unwrap_or_default();
    let cmp = |a: &str, b: &str| match (a.parse::<f64>(), b.parse::<f64>()) {
        (Ok(x), Ok(y)) => x.partial_cmp(&y).unwrap_or(std::cmp::Ordering::Equal),
        _ => a.cmp(b),
    };
    if let Some(k) = q("sortAsc") {
        rows.sort_by(|x, y| cmp(&key(&x.1, &k), &key(&y.1, &k)));
    } else if let Some(k) = q("sortDesc") {
        rows.sort_by(|x, y| cmp(&key(&y.1, &k), &key(&x.1, &k)));
    }
    let total = rows.len();
    let record = if admin { "AdminTaskRecord" } else { "TaskRecord" };
    let mut links = vec![];
    let page_href = |p: usize| {
        let mut qs: Vec<String> =
            req.query.split('&').filter(|kv| !kv.starts_with("page=") && !kv.is_empty()).map(str::to_string).collect();
        qs.push(format!("page={p}"));
        ctx.href(&format!("/api/query?{}", qs.join("&")))
    };
    if page > 1 {
        links.push(
            Node::new("Link")
                .attr("rel", "previousPage")
                .attr("type", "application/vnd.vmware.vcloud.query.records+xml")
                .attr("href", page_href(page - 1)),
        );
    }
    if page * page_size < total {
        links.push(
            Node::new("Link")
                .attr("rel", "nextPage")
                .attr("type", "application/vnd.vmware.vcloud.query.records+xml")
                .attr("href", page_href(page + 1)),
        );
    }
    let items = rows.into_iter().skip((page - 1) * page_size).take(page_size).map(|(_, a)| {
        let mut n = Node::new(if format == "references" { "TaskReference" } else { record });
        if format == "references" {
            n.attrs = a.into_iter().filter(|(k, _)| matches!(k.as_str(), "href" | "id" | "type" | "name")).collect();
        } else {
            n.attrs = a.into_iter().filter(|(k, _)| format == "idrecords" || k != "id").collect();
        }
        n
    });
    let (root, media) = if format == "references" {
        ("References", "application/vnd.vmware.vcloud.query.references+xml")
    } else {
        ("QueryResultRecords", "application/vnd.vmware.vcloud.query.records+xml")
    };
    let n = Node::new(root)
        .attr("href", ctx.href(&format!("/api/query?{}", req.query)))
        .attr("type", media)
        .attr("name", ty.clone())
        .attr("page", page.to_string())
        .attr("pageSize", page_size.to_string())
        .attr("total", total.to_string())
        .children(links)
        .children(items);
    Ok(ctx.reply(StatusCode::OK, media, &n))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn owner_hrefs_are_kept_as_their_path_and_shown_at_the_readers_address() {
        let ctx = Ctx { base: "https://vcd.example:8443".into(), json: false, version: "36.0".into() };
        for (sent, kept) in [
            ("http://127.0.0.1:39751/api/org/1", "/api/org/1"),
            ("https://old-name/cloudapi/1.0.0/orgs/x", "/cloudapi/1.0.0/orgs/x"),
            ("/api/vApp/vapp-1", "/api/vApp/vapp-1"),
            ("https://elsewhere.example/other/thing", "https://elsewhere.example/other/thing"),
            ("urn:vcloud:org:1", "urn:vcloud:org:1"),
            ("http://hostonly", "http://hostonly"),
            ("", ""),
        ] {
            assert_eq!(kept_href(sent), kept, "{sent}");
        }
        assert_eq!(ctx.shown_href("/api/org/1"), "https://vcd.example:8443/api/org/1");
        // What an earlier build kept whole is shown at the new address too.
        assert_eq!(ctx.shown_href("http://127.0.0.1:1/api/org/1"), "https://vcd.example:8443/api/org/1");
        assert_eq!(ctx.shown_href("urn:vcloud:org:1"), "urn:vcloud:org:1");
    }
}
