//! Request counts and latencies per API and method, in the OpenMetrics text
//! format Prometheus scrapes.
//! Method labels are bounded: a name the registry knows, one the server
//! itself uses, or `other` (clients choose what they send).
use super::{respond, AppState, Req, Resp};
use hyper::StatusCode;
use prometheus_client::encoding::text::encode;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;
use std::collections::HashSet;
use std::sync::OnceLock;
use std::time::Duration;

/// Labels the server itself produces (outside the registry's method names).
const FIXED: &[&str] = &[
    // HTTP methods (/folder, /admin).
    "GET",
    "HEAD",
    "PUT",
    "POST",
    "DELETE",
    "PATCH",
    "OPTIONS",
    // route() and the wire layers.
    "vimServiceVersions",
    "vsanServiceVersions",
    "hello",
    "nbd-tickets",
    "scrape",
    "not_found",
    "invalid",
    "panic",
    "body_too_large",
    "body_unread",
    // vAPI (/api, /rest).
    "session.create",
    "session.get",
    "session.delete",
    "tasks.list",
    "tasks.get",
    "tasks.cancel",
    "extension.tasks.create",
    "extension.tasks.update",
    "unknown",
    "jsonrpc.parse_error",
    "jsonrpc.invalid",
    "com.vmware.cis.session.create",
    "com.vmware.cis.session.get",
    "com.vmware.cis.session.delete",
    "com.vmware.cis.tasks.get",
    "com.vmware.cis.tasks.list",
    "com.vmware.cis.tasks.cancel",
    "com.vmware.vcenter.extension.tasks.create",
    "com.vmware.vcenter.extension.tasks.update",
    // VCD.
    "versions",
    "negotiate",
];

/// VCD routes: "METHOD path", a `{id}` segment standing for any one segment.
const VCD_ROUTES: &[&str] = &[
    "POST /cloudapi/1.0.0/sessions/provider",
    "POST /cloudapi/1.0.0/sessions",
    "POST /api/sessions",
    "GET /api/session",
    "GET /cloudapi/1.0.0/sessions/current",
    "DELETE /api/session",
    "DELETE /cloudapi/1.0.0/sessions/current",
    "GET /api/org",
    "GET /api/org/{id}",
    "GET /api/tasksList/{id}",
    "POST /api/tasksList/{id}",
    "GET /api/task/{id}",
    "PUT /api/task/{id}",
    "POST /api/task/{id}/action/cancel",
    "GET /api/query",
];

fn known() -> &'static HashSet<&'static str> {
    static K: OnceLock<HashSet<&'static str>> = OnceLock::new();
    K.get_or_init(|| {
        let mut k: HashSet<&'static str> =
            vmodl::schema::TYPES.iter().flat_map(|t| t.methods.iter().map(|m| m.name)).collect();
        k.extend(FIXED.iter().copied());
        k
    })
}

/// The label recorded for a method name: itself if the server knows it,
/// else "other".
pub fn method_label(api: &str, method: &str) -> &'static str {
    if let Some(m) = known().get(method) {
        return m;
    }
    if api == "vcd" {
        if let Some((verb, path)) = method.split_once(' ') {
            let segs: Vec<&str> = path.split('/').collect();
            for r in VCD_ROUTES {
                let (rv, rp) = r.split_once(' ').expect("route has a method");
                let rs: Vec<&str> = rp.split('/').collect();
                if rv == verb && rs.len() == segs.len() && rs.iter().zip(&segs).all(|(a, b)| *a == "{id}" || a == b) {
                    return r;
                }
            }
        }
    }
    "other"
}

/// `GET /metrics` on an API listener: a session with System.Read on the
/// root folder.
pub fn handle(state: &AppState, req: &Req) -> Resp {
    let eng = &state.engine;
    let text = |st: StatusCode, m: &str| respond(st, "text/plain; charset=utf-8", m.to_string());
    let Some(session) = super::request_session(eng, &req.headers) else {
        return text(StatusCode::UNAUTHORIZED, "a valid session is required");
    };
    let root = vmodl::MoRef::new(vmodl::types::Folder, crate::engine::inventory::ROOT_FOLDER);
    if !eng.has_privilege(&session.user, &root, "System.Read") {
        return text(StatusCode::FORBIDDEN, "permission denied: System.Read on the root folder");
    }
    respond(StatusCode::OK, CONTENT_TYPE, state.metrics.render())
}

/// Request latency buckets, in seconds.
const BUCKETS: [f64; 14] = [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0];

/// The content type of [`Metrics::render`]'s text (OpenMetrics, which
/// Prometheus reads).
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct Labels {
    api: &'static str,
    method: &'static str,
}

type Latency = Family<Labels, Histogram, fn() -> Histogram>;

/// The request series, kept and encoded (label values escaped) by
/// prometheus-client.
pub struct Metrics {
    registry: Registry,
    requests: Family<Labels, Counter>,
    errors: Family<Labels, Counter>,
    latency: Latency,
}

impl Default for Metrics {
    fn default() -> Self {
        let requests = Family::<Labels, Counter>::default();
        let errors = Family::<Labels, Counter>::default();
        let latency: Latency = Family::new_with_constructor(|| Histogram::new(BUCKETS));
        let mut registry = Registry::default();
        registry.register("vtwin_requests", "Requests served, by API and method", requests.clone());
        registry.register("vtwin_request_errors", "Requests answered with a fault or error status", errors.clone());
        registry.register("vtwin_request_duration_seconds", "Request latency", latency.clone());
        Metrics { registry, requests, errors, latency }
    }
}

impl Metrics {
    /// Count one request. `api` is the server's own (a literal); `method`
    /// may come from the client and is bounded by `method_label`.
    pub fn record(&self, api: &'static str, method: &str, status: u16, d: Duration) {
        let l = Labels { api, method: method_label(api, method) };
        self.requests.get_or_create(&l).inc();
        // Every series has an error count, zero included.
        let e = self.errors.get_or_create(&l);
        if status >= 400 {
            e.inc();
        }
        self.latency.get_or_create(&l).observe(d.as_secs_f64());
    }

    pub fn render(&self) -> String {
        let mut o = String::new();
        // Writing to a String cannot fail.
        let _ = encode(&mut o, &self.registry);
        o
    }
}
