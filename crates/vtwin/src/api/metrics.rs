//! Request counts and latencies per API and method, in Prometheus text format.
//! Method labels are bounded: a name the registry knows, one the server
//! itself uses, or `other` (clients choose what they send).
use super::{respond, AppState, Req, Resp};
use hyper::StatusCode;
use parking_lot::Mutex;
use std::collections::{BTreeMap, HashSet};
use std::fmt::Write;
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

/// A label value in the text format: backslash, double quote and newline escaped.
pub fn escape(v: &str) -> String {
    let mut o = String::with_capacity(v.len());
    for c in v.chars() {
        match c {
            '\\' => o.push_str("\\\\"),
            '"' => o.push_str("\\\""),
            '\n' => o.push_str("\\n"),
            c => o.push(c),
        }
    }
    o
}

/// `GET /metrics` on an API listener: a session with System.Read on the
/// root folder.
pub fn handle(state: &AppState, req: &Req) -> Resp {
    let eng = &state.engine;
    let text = |st: StatusCode, m: &str| respond(st, "text/plain; charset=utf-8", m.to_string());
    let Some(session) = super::header_tokens(&req.headers, false).iter().find_map(|t| eng.session_for_token(t)) else {
        return text(StatusCode::UNAUTHORIZED, "a valid session is required");
    };
    let root = vmodl::MoRef::new(vmodl::types::Folder, crate::engine::inventory::ROOT_FOLDER);
    if !eng.has_privilege(&session.user, &root, "System.Read") {
        return text(StatusCode::FORBIDDEN, "permission denied: System.Read on the root folder");
    }
    respond(StatusCode::OK, "text/plain; version=0.0.4", state.metrics.render())
}

const BUCKETS: &[f64] = &[0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0];

#[derive(Default)]
struct Series {
    count: u64,
    errors: u64,
    sum: f64,
    buckets: [u64; 14],
}

#[derive(Default)]
pub struct Metrics {
    series: Mutex<BTreeMap<(&'static str, &'static str), Series>>,
}

impl Metrics {
    /// Count one request. `api` is the server's own (a literal); `method`
    /// may come from the client and is bounded by `method_label`.
    pub fn record(&self, api: &'static str, method: &str, status: u16, d: Duration) {
        let secs = d.as_secs_f64();
        let key = (api, method_label(api, method));
        let mut m = self.series.lock();
        let s = m.entry(key).or_default();
        s.count += 1;
        if status >= 400 {
            s.errors += 1;
        }
        s.sum += secs;
        for (i, b) in BUCKETS.iter().enumerate() {
            if secs <= *b {
                s.buckets[i] += 1;
            }
        }
    }

    pub fn render(&self) -> String {
        let m = self.series.lock();
        let m: Vec<((String, String), &Series)> = m.iter().map(|((a, b), s)| ((escape(a), escape(b)), s)).collect();
        let mut o = String::new();
        o.push_str(
            "# HELP vtwin_requests_total Requests served, by API and method.\n# TYPE vtwin_requests_total counter\n",
        );
        for ((api, method), s) in &m {
            let _ = writeln!(o, "vtwin_requests_total{{api=\"{api}\",method=\"{method}\"}} {}", s.count);
        }
        o.push_str("# HELP vtwin_request_errors_total Requests answered with a fault or error status.\n# TYPE vtwin_request_errors_total counter\n");
        for ((api, method), s) in &m {
            let _ = writeln!(o, "vtwin_request_errors_total{{api=\"{api}\",method=\"{method}\"}} {}", s.errors);
        }
        o.push_str(
            "# HELP vtwin_request_duration_seconds Request latency.\n# TYPE vtwin_request_duration_seconds histogram\n",
        );
        for ((api, method), s) in &m {
            for (i, b) in BUCKETS.iter().enumerate() {
                let _ = writeln!(
                    o,
                    "vtwin_request_duration_seconds_bucket{{api=\"{api}\",method=\"{method}\",le=\"{b}\"}} {}",
                    s.buckets[i]
                );
            }
            let _ = writeln!(
                o,
                "vtwin_request_duration_seconds_bucket{{api=\"{api}\",method=\"{method}\",le=\"+Inf\"}} {}",
                s.count
            );
            let _ = writeln!(o, "vtwin_request_duration_seconds_sum{{api=\"{api}\",method=\"{method}\"}} {}", s.sum);
            let _ =
                writeln!(o, "vtwin_request_duration_seconds_count{{api=\"{api}\",method=\"{method}\"}} {}", s.count);
        }
        o
    }
}
