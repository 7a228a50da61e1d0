//! Wire layers: HTTP(S) serving, routing, and one module per protocol. They
//! translate requests into engine calls and engine results into replies.
pub mod admin;
pub mod dispatch;
pub mod files;
pub mod metrics;
pub mod nbd;
pub mod soap;
pub mod tls;
pub mod vapi;
pub mod vcd;
pub mod vijson;

use crate::engine::auth::session::Session;
use crate::engine::Engine;
use bytes::Bytes;
use futures_util::FutureExt;
use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::{Method, Request, Response, StatusCode};
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpListener;

/// A response body: a whole buffer (`respond`) or a stream (file downloads).
pub type Body = UnsyncBoxBody<Bytes, std::io::Error>;
pub type Resp = Response<Body>;

/// A body of one buffer.
pub fn full_body(body: impl Into<Bytes>) -> Body {
    Full::new(body.into()).map_err(|never| match never {}).boxed_unsync()
}

/// What one outsider can hold: deadlines and the number of open connections.
#[derive(Clone, Debug)]
pub struct Limits {
    /// A new connection must deliver a request head within this, and so must
    /// a kept-alive one once it has sent the head's first byte.
    pub header_timeout: Duration,
    /// A kept-alive connection with no request for this long is closed; so is
    /// one whose request body or response stalls this long.
    pub idle_timeout: Duration,
    pub tls_handshake_timeout: Duration,
    pub max_connections: usize,
    /// Connections open now, shared by every listener given these limits.
    pub open: Arc<AtomicUsize>,
}

impl Default for Limits {
    fn default() -> Limits {
        Limits {
            header_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(120),
            tls_handshake_timeout: Duration::from_secs(10),
            max_connections: 4096,
            open: Default::default(),
        }
    }
}

pub struct AppState {
    pub engine: Arc<Engine>,
    pub tls: bool,
    pub metrics: metrics::Metrics,
    /// The NBD server's address, for ticket URIs.
    pub nbd_addr: Option<SocketAddr>,
    /// Which session asked for each NBD ticket (shared with the NBD server).
    pub nbd_tickets: Arc<nbd::Bindings>,
    /// This listener serves the vCloud Director API.
    pub vcd: bool,
    pub limits: Limits,
}

/// Releases of the VI/JSON API this server speaks (oldest first).
pub const RELEASES: &[&str] = &["8.0.1.0", "8.0.2.0", "8.0.3.0", "9.0.0.0", "9.1.0.0"];
pub const VSAN_RELEASES: &[&str] = &["8.0.0.4", "9.0.0.0", "9.1.0.0"];

/// Largest request bodies accepted: API calls with a session, calls without
/// one (Login, RetrieveServiceContent, session creation), and file uploads
/// to /folder.
pub const MAX_API_BODY: usize = 64 << 20;
pub const MAX_ANON_BODY: usize = 256 << 10;
pub const MAX_FILE_BODY: usize = 4 << 30;

pub fn newest_release() -> &'static str {
    RELEASES[RELEASES.len() - 1]
}

pub fn respond(status: StatusCode, content_type: &str, body: impl Into<Bytes>) -> Resp {
    Response::builder()
        .status(status)
        .header("Content-Type", content_type)
        .body(full_body(body))
        .expect("valid response")
}

/// An error reply in the style of the API the path belongs to: a SOAP fault
/// (/sdk, /vsanHealth), VI/JSON fault (/sdk/vim25/), vAPI error (/api,
/// /rest), VCD Error document (the VCD listener), plain text otherwise.
pub fn error_response(state: &AppState, path: &str, status: StatusCode, message: &str) -> Resp {
    let newest = vmodl::VersionId::by_wire("vim25", newest_release()).expect("newest release");
    let fault = || {
        if status.is_server_error() {
            crate::engine::Fault::system_error(message)
        } else {
            crate::engine::Fault::invalid_request(message)
        }
    };
    let soap = path == "/sdk" || path == "/sdk/vimService" || path == "/vsanHealth";
    let vapi = path == "/api" || path.starts_with("/rest/") || path.starts_with("/api/");
    let mut r = if state.vcd {
        let minor = status.canonical_reason().unwrap_or("ERROR").to_ascii_uppercase().replace([' ', '-'], "_");
        let n = vcd::tree::Node::new("Error")
            .attr("minorErrorCode", minor)
            .attr("message", message.to_string())
            .attr("majorErrorCode", status.as_u16().to_string());
        respond(
            status,
            "application/vnd.vmware.vcloud.error+xml",
            vcd::tree::to_xml(&n, "http://www.vmware.com/vcloud/v1.5"),
        )
    } else if soap {
        let f = fault();
        respond(status, "text/xml; charset=utf-8", vmodl::soap::encode_fault(&f.data, &f.message, "urn:vim25", newest))
    } else if path.starts_with("/sdk/vim25/") {
        vijson::fault_resp(&fault(), newest)
    } else if vapi {
        let kind = match status.as_u16() {
            400 | 413 | 414 | 431 => "INVALID_ARGUMENT",
            401 => "UNAUTHENTICATED",
            403 => "UNAUTHORIZED",
            404 => "NOT_FOUND",
            408 | 504 => "TIMED_OUT",
            503 => "SERVICE_UNAVAILABLE",
            507 => "UNABLE_TO_ALLOCATE_RESOURCE",
            _ => "ERROR",
        };
        respond(
            status,
            "application/json",
            serde_json::json!({"error_type": kind, "messages": [{"id": format!("com.vmware.vtwin.{}", kind.to_ascii_lowercase()), "default_message": message, "args": []}]}).to_string(),
        )
    } else {
        respond(status, "text/plain; charset=utf-8", message.to_string())
    };
    *r.status_mut() = status;
    r
}

/// Everything a handler needs from the request, body already read.
pub struct Req {
    pub method: Method,
    pub path: String,
    pub query: String,
    pub headers: hyper::HeaderMap,
    pub body: Bytes,
    pub peer: SocketAddr,
}

impl Req {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }
    /// The SOAP session cookie; pyvmomi echoes the whole raw Set-Cookie, so
    /// take the value, strip quotes and ignore attributes.
    pub fn cookie(&self, name: &str) -> Option<String> {
        cookie_in(&self.headers, name)
    }
    pub fn query_param(&self, name: &str) -> Option<String> {
        self.query.split('&').find_map(|kv| {
            let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
            (k == name)
                .then(|| percent_encoding::percent_decode_str(&v.replace('+', " ")).decode_utf8_lossy().into_owned())
        })
    }
}

/// A cookie's value (quotes stripped, attributes ignored).
pub fn cookie_in(headers: &hyper::HeaderMap, name: &str) -> Option<String> {
    for h in headers.get_all("cookie") {
        let Ok(s) = h.to_str() else { continue };
        for part in s.split(';') {
            if let Some((k, v)) = part.trim().split_once('=') {
                if k.trim() == name {
                    return Some(v.trim().trim_matches('"').to_string());
                }
            }
        }
    }
    None
}

/// The session tokens a request carries in its headers, in the one order
/// every endpoint looks them up in: the `vmware-api-session-id` header (VI/JSON,
/// vAPI, the NBD ticket call), then the cookies: the SOAP session cookie
/// `vmware_soap_session` and the vAPI runtime's `vmware-api-session-id`. On
/// the VCD listener: `x-vcloud-authorization`, then `Authorization: Bearer`.
/// What a protocol carries in its body (a SOAP header's session, a JSON-RPC
/// securityCtx) comes after these; HTTP Basic is a login, not a session,
/// and is taken only where vCenter takes it (the vAPI session create, the
/// admin surface).
pub fn header_tokens(headers: &hyper::HeaderMap, vcd: bool) -> Vec<String> {
    let h = |n: &str| headers.get(n).and_then(|v| v.to_str().ok()).map(|s| s.trim().to_string());
    let mut out = vec![];
    if vcd {
        out.extend(h("x-vcloud-authorization"));
        if let Some(a) = h("authorization") {
            if let Some(t) = a.strip_prefix("Bearer ").or_else(|| a.strip_prefix("bearer ")) {
                out.push(t.trim().to_string());
            }
        }
    } else {
        out.extend(h(vijson::SESSION_HEADER));
        out.extend(cookie_in(headers, soap::COOKIE));
        out.extend(cookie_in(headers, vapi::SESSION_HEADER));
    }
    out.retain(|t| !t.is_empty() && t.len() <= 256);
    out
}

/// The vSphere session of a request: the first of its `header_tokens`
/// that names one. The one session extractor of the vSphere endpoints.
pub fn request_session(eng: &Engine, headers: &hyper::HeaderMap) -> Option<Arc<Session>> {
    header_tokens(headers, false).iter().find_map(|t| eng.session_for_token(t))
}

/// Does the request carry a live session in its headers? (No side effect on
/// the session: the handler touches it.)
fn has_session(state: &AppState, headers: &hyper::HeaderMap) -> bool {
    let eng = &state.engine;
    header_tokens(headers, state.vcd).iter().any(|t| eng.session_alive(t))
}

fn content_length(headers: &hyper::HeaderMap) -> Option<u64> {
    headers.get(hyper::header::CONTENT_LENGTH).and_then(|v| v.to_str().ok()).and_then(|s| s.trim().parse().ok())
}

/// Read a whole request body of at most `limit` bytes; each piece must
/// arrive within `stall`.
async fn read_body(
    mut body: Incoming,
    limit: usize,
    stall: Duration,
    hint: Option<u64>,
) -> Result<Bytes, (StatusCode, String)> {
    let mut first: Option<Bytes> = None;
    let mut buf: Vec<u8> = vec![];
    loop {
        let frame = match tokio::time::timeout(stall, body.frame()).await {
            Err(_) => {
                return Err((StatusCode::REQUEST_TIMEOUT, format!("no request body data for {} s", stall.as_secs())))
            }
            Ok(None) => break,
            Ok(Some(Err(e))) => return Err((StatusCode::BAD_REQUEST, format!("cannot read request body: {e}"))),
            Ok(Some(Ok(f))) => f,
        };
        let Ok(data) = frame.into_data() else { continue };
        let have = first.as_ref().map_or(0, bytes::Bytes::len) + buf.len();
        if have + data.len() > limit {
            return Err((StatusCode::PAYLOAD_TOO_LARGE, format!("request body larger than {limit} bytes")));
        }
        match first.take() {
            None if buf.is_empty() => first = Some(data),
            f => {
                if let Some(f) = f {
                    buf.reserve(hint.map_or(0, |h| (h as usize).min(limit)).saturating_sub(f.len()));
                    buf.extend_from_slice(&f);
                }
                buf.extend_from_slice(&data);
            }
        }
    }
    Ok(first.unwrap_or_else(|| Bytes::from(buf)))
}

async fn route(state: Arc<AppState>, req: Req) -> (Resp, &'static str, String) {
    if state.vcd {
        let (r, m) = vcd::handle(&state, &req).await;
        return (r, "vcd", m);
    }
    let path = req.path.clone();
    match (&req.method, path.as_str()) {
        (&Method::GET, "/sdk/vimServiceVersions.xml") => {
            (soap::service_versions("urn:vim25", RELEASES), "soap", "vimServiceVersions".into())
        }
        (&Method::GET, "/sdk/vsanServiceVersions.xml") => {
            (soap::service_versions("urn:vsan", VSAN_RELEASES), "soap", "vsanServiceVersions".into())
        }
        (&Method::POST, "/sdk" | "/sdk/vimService") => {
            let (r, m) = soap::handle(&state, &req, "urn:vim25").await;
            (r, "soap", m)
        }
        (&Method::POST, "/vsanHealth") => {
            let (r, m) = soap::handle(&state, &req, "urn:vsan").await;
            (r, "soap", m)
        }
        (&Method::POST, "/api/vcenter/system") if req.query_param("action").as_deref() == Some("hello") => {
            (vijson::hello(&req), "vijson", "hello".into())
        }
        (&Method::POST, "/api") => {
            let (r, m) = vapi::handle_jsonrpc(&state, &req);
            (r, "vapi", m)
        }
        (_, p)
            if p.starts_with("/rest/")
                || p == "/api/session"
                || p.starts_with("/api/cis/")
                || p.starts_with("/api/vcenter/extension/") =>
        {
            let (r, m) = vapi::handle_rest(&state, &req);
            (r, "vapi", m)
        }
        (_, p) if p.starts_with("/sdk/vim25/") => {
            let (r, m) = vijson::handle(&state, &req).await;
            (r, "vijson", m)
        }
        (&Method::POST, "/api/vtwin/nbd-tickets") => {
            (on_pool(state, req, nbd::tickets).await, "vapi", "nbd-tickets".into())
        }
        (_, p) if p == "/admin/faults" || p.starts_with("/admin/faults/") || p.starts_with("/admin/datastores/") => {
            let m = req.method.to_string();
            (on_pool(state, req, admin::handle).await, "admin", m)
        }
        (&Method::GET, "/metrics") => (metrics::handle(&state, &req), "metrics", "scrape".into()),
        _ => (
            respond(
                StatusCode::NOT_FOUND,
                "application/json",
                serde_json::json!({"error": "not found", "path": path}).to_string(),
            ),
            "other",
            "not_found".into(),
        ),
    }
}

/// Runs a synchronous handler that does file or disk I/O (NBD tickets look
/// at a disk's snapshots under its lock; /admin remounts datastores) on
/// tokio's blocking pool, so the async workers go on serving
/// other connections meanwhile. A panic in it is resumed here, where
/// [`guarded`] turns it into an error response.
async fn on_pool<T: Send + 'static>(state: Arc<AppState>, req: Req, handler: fn(&AppState, &Req) -> T) -> T {
    match tokio::task::spawn_blocking(move || handler(&state, &req)).await {
        Ok(v) => v,
        Err(e) => match e.try_into_panic() {
            Ok(p) => std::panic::resume_unwind(p),
            Err(e) => panic!("handler cancelled: {e}"),
        },
    }
}

/// Run a handler; a panic in it (a bug) must never drop the connection or
/// answer an empty 500: it becomes an error in the API's own style.
async fn guarded<F>(state: &AppState, path: &str, fut: F) -> (Resp, &'static str, String)
where
    F: std::future::Future<Output = (Resp, &'static str, String)>,
{
    match std::panic::AssertUnwindSafe(fut).catch_unwind().await {
        Ok(r) => r,
        Err(_) => {
            tracing::error!(path, "request handler panicked");
            (
                error_response(state, path, StatusCode::INTERNAL_SERVER_ERROR, "internal error (handler panicked)"),
                "internal",
                "panic".to_string(),
            )
        }
    }
}

fn api_of(state: &AppState, path: &str) -> &'static str {
    if state.vcd {
        "vcd"
    } else if path == "/sdk" || path == "/sdk/vimService" || path == "/vsanHealth" {
        "soap"
    } else if path.starts_with("/sdk/vim25/") {
        "vijson"
    } else if path == "/api" || path.starts_with("/rest/") || path.starts_with("/api/") {
        "vapi"
    } else {
        "other"
    }
}

async fn serve_one(state: Arc<AppState>, req: Request<Incoming>, peer: SocketAddr) -> Resp {
    let start = Instant::now();
    let (parts, body) = req.into_parts();
    let path = parts.uri.path().to_string();
    // /folder decides on the session and the privilege before it reads
    // (streams) the body.
    if !state.vcd && path.starts_with("/folder") {
        let method = parts.method.to_string();
        let (resp, api, method) =
            guarded(&state, &path, async { (files::handle(&state, parts, body, peer).await, "folder", method) }).await;
        state.metrics.record(api, &method, resp.status().as_u16(), start.elapsed());
        return resp;
    }
    // The session is decided from the headers alone: without one only a
    // small body (a login) is read.
    let limit = if has_session(&state, &parts.headers) { MAX_API_BODY } else { MAX_ANON_BODY };
    let declared = content_length(&parts.headers);
    let body = match declared {
        Some(n) if n > limit as u64 => Err((
            StatusCode::PAYLOAD_TOO_LARGE,
            format!("request body of {n} bytes is larger than the {limit} accepted"),
        )),
        _ => read_body(body, limit, state.limits.idle_timeout, declared).await,
    };
    let body = match body {
        Ok(b) => b,
        Err((status, msg)) => {
            let mut r = error_response(&state, &path, status, &msg);
            // The rest of the body is not read: the connection ends here.
            r.headers_mut().insert(hyper::header::CONNECTION, hyper::header::HeaderValue::from_static("close"));
            state.metrics.record(
                api_of(&state, &path),
                if status == StatusCode::PAYLOAD_TOO_LARGE { "body_too_large" } else { "body_unread" },
                status.as_u16(),
                start.elapsed(),
            );
            return r;
        }
    };
    let req = Req {
        method: parts.method,
        path: path.clone(),
        query: parts.uri.query().unwrap_or("").to_string(),
        headers: parts.headers,
        body,
        peer,
    };
    let (resp, api, method) = guarded(&state, &path, route(state.clone(), req)).await;
    state.metrics.record(api, &method, resp.status().as_u16(), start.elapsed());
    resp
}

/// `GET /metrics` on the `--metrics-listen` listener (loopback, no session).
async fn serve_metrics_one(state: Arc<AppState>, req: Request<Incoming>) -> Resp {
    if req.method() == Method::GET && req.uri().path() == "/metrics" {
        respond(StatusCode::OK, metrics::CONTENT_TYPE, state.metrics.render())
    } else {
        respond(StatusCode::NOT_FOUND, "text/plain; charset=utf-8", "only GET /metrics is served here")
    }
}

/// Milliseconds since the process started serving (a monotonic clock that
/// fits an atomic).
fn now_ms() -> u64 {
    static T0: OnceLock<Instant> = OnceLock::new();
    T0.get_or_init(Instant::now).elapsed().as_millis() as u64
}

/// What a connection's watchdog needs: when bytes last moved, since when a
/// request head is awaited, how many requests are being handled.
struct Watch {
    last_io: AtomicU64,
    /// 0: no head started; else the time (+1) its first byte came (or the
    /// connection was accepted).
    head_since: AtomicU64,
    inflight: AtomicUsize,
}

impl Watch {
    fn new() -> Watch {
        let now = now_ms();
        Watch { last_io: AtomicU64::new(now), head_since: AtomicU64::new(now + 1), inflight: AtomicUsize::new(0) }
    }
    fn on_read(&self) {
        let now = now_ms();
        self.last_io.store(now, Ordering::Relaxed);
        if self.inflight.load(Ordering::Acquire) == 0 {
            let _ = self.head_since.compare_exchange(0, now + 1, Ordering::AcqRel, Ordering::Relaxed);
        }
    }
    fn on_write(&self) {
        self.last_io.store(now_ms(), Ordering::Relaxed);
    }
    /// A request head was read: until it is answered no deadline runs here
    /// (a long poll is fine; its body reads have their own).
    fn begin(self: &Arc<Self>) -> InFlight {
        self.inflight.fetch_add(1, Ordering::AcqRel);
        self.head_since.store(0, Ordering::Release);
        InFlight(self.clone())
    }
    /// Time left before the connection is closed; None: close it now.
    fn left(&self, limits: &Limits) -> Option<Duration> {
        if self.inflight.load(Ordering::Acquire) > 0 {
            return Some(Duration::from_secs(1));
        }
        let now = now_ms();
        let head = self.head_since.load(Ordering::Acquire);
        let end = if head > 0 {
            head - 1 + limits.header_timeout.as_millis() as u64
        } else {
            self.last_io.load(Ordering::Relaxed) + limits.idle_timeout.as_millis() as u64
        };
        (now < end).then(|| Duration::from_millis(end - now))
    }
}

struct InFlight(Arc<Watch>);

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.last_io.store(now_ms(), Ordering::Relaxed);
        self.0.inflight.fetch_sub(1, Ordering::AcqRel);
    }
}

/// The connection's IO, noting activity for its watchdog.
struct Watched<T> {
    io: T,
    watch: Arc<Watch>,
}

impl<T: AsyncRead + Unpin> AsyncRead for Watched<T> {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let r = Pin::new(&mut self.io).poll_read(cx, buf);
        if matches!(r, Poll::Ready(Ok(()))) && buf.filled().len() > before {
            self.watch.on_read();
        }
        r
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for Watched<T> {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<std::io::Result<usize>> {
        let r = Pin::new(&mut self.io).poll_write(cx, buf);
        if matches!(r, Poll::Ready(Ok(n)) if n > 0) {
            self.watch.on_write();
        }
        r
    }
    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        let r = Pin::new(&mut self.io).poll_write_vectored(cx, bufs);
        if matches!(r, Poll::Ready(Ok(n)) if n > 0) {
            self.watch.on_write();
        }
        r
    }
    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.io).poll_flush(cx)
    }
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }
}

/// One place in the open-connection count, given back on drop.
pub struct Slot(Arc<AtomicUsize>);

impl Slot {
    /// A place, unless `max` are taken.
    pub fn take(open: &Arc<AtomicUsize>, max: usize) -> Option<Slot> {
        open.fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| (n < max).then_some(n + 1))
            .ok()
            .map(|_| Slot(open.clone()))
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

/// Log refused connections at most every 10 s (a flood must not flood the log).
pub struct RefusalLog {
    last_ms: AtomicU64,
    since: AtomicU64,
}

impl RefusalLog {
    pub const fn new() -> RefusalLog {
        RefusalLog { last_ms: AtomicU64::new(0), since: AtomicU64::new(0) }
    }
    pub fn refused(&self, what: &str, max: usize) {
        let n = self.since.fetch_add(1, Ordering::Relaxed) + 1;
        let now = now_ms() + 1;
        let last = self.last_ms.load(Ordering::Relaxed);
        if (last == 0 || now >= last + 10_000)
            && self.last_ms.compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed).is_ok()
        {
            self.since.store(0, Ordering::Relaxed);
            tracing::warn!(refused = n, max, "{what}: connection limit reached, new connections are closed");
        }
    }
}

impl Default for RefusalLog {
    fn default() -> Self {
        RefusalLog::new()
    }
}

#[derive(Clone, Copy)]
enum Mode {
    Api,
    Metrics,
}

/// Serve HTTP/1 on one connection until it ends or its watchdog closes it.
async fn drive<T>(state: Arc<AppState>, io: T, peer: SocketAddr, mode: Mode)
where
    T: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let watch = Arc::new(Watch::new());
    let w = watch.clone();
    let st = state.clone();
    let svc = hyper::service::service_fn(move |req| {
        let guard = w.begin();
        let st = st.clone();
        async move {
            let _guard = guard;
            Ok::<_, std::convert::Infallible>(match mode {
                Mode::Api => serve_one(st, req, peer).await,
                Mode::Metrics => serve_metrics_one(st, req).await,
            })
        }
    });
    let conn = hyper::server::conn::http1::Builder::new()
        .serve_connection(hyper_util::rt::TokioIo::new(Watched { io, watch: watch.clone() }), svc);
    tokio::pin!(conn);
    loop {
        let Some(left) = watch.left(&state.limits) else {
            tracing::debug!(%peer, "closing a connection: no request within the deadline");
            return;
        };
        tokio::select! {
            r = conn.as_mut() => {
                if let Err(e) = r {
                    tracing::debug!(error = %e, %peer, "connection ended with an error");
                }
                return;
            }
            _ = tokio::time::sleep(left.min(Duration::from_secs(1))) => {}
        }
    }
}

/// Accept connections until the process ends.
pub async fn serve(
    state: Arc<AppState>,
    listener: TcpListener,
    tls: Option<tokio_rustls::TlsAcceptor>,
) -> anyhow::Result<()> {
    accept_loop(state, listener, tls, Mode::Api).await
}

/// Serve `GET /metrics` alone, without a session (`--metrics-listen`, loopback).
pub async fn serve_metrics(state: Arc<AppState>, listener: TcpListener) -> anyhow::Result<()> {
    accept_loop(state, listener, None, Mode::Metrics).await
}

async fn accept_loop(
    state: Arc<AppState>,
    listener: TcpListener,
    tls: Option<tokio_rustls::TlsAcceptor>,
    mode: Mode,
) -> anyhow::Result<()> {
    static REFUSED: RefusalLog = RefusalLog::new();
    loop {
        let (stream, peer) = match listener.accept().await {
            Ok(x) => x,
            Err(e) => {
                tracing::warn!(error = %e, "accept failed");
                // Out of file descriptors, say: do not spin.
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let Some(slot) = Slot::take(&state.limits.open, state.limits.max_connections) else {
            drop(stream);
            REFUSED.refused("HTTP", state.limits.max_connections);
            continue;
        };
        let _ = stream.set_nodelay(true);
        let state = state.clone();
        let tls = tls.clone();
        tokio::spawn(async move {
            let _slot = slot;
            // Nothing is allocated for a connection (no TLS state, no HTTP
            // buffers) until its client sends a first byte, within the
            // header deadline.
            if tokio::time::timeout(state.limits.header_timeout, stream.readable()).await.is_err() {
                tracing::debug!(%peer, "closing a connection: nothing sent within the deadline");
                return;
            }
            match tls {
                Some(acc) => match tokio::time::timeout(state.limits.tls_handshake_timeout, acc.accept(stream)).await {
                    Ok(Ok(s)) => Box::pin(drive(state, s, peer, mode)).await,
                    Ok(Err(e)) => tracing::debug!(error = %e, %peer, "TLS handshake failed"),
                    Err(_) => tracing::debug!(%peer, "TLS handshake timed out"),
                },
                None => Box::pin(drive(state, stream, peer, mode)).await,
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn session_tokens_are_looked_up_in_one_order() {
        let mut h = hyper::HeaderMap::new();
        h.insert("cookie", "vmware-api-session-id=c2; vmware_soap_session=\"c1\"".parse().unwrap());
        h.insert("vmware-api-session-id", "h1".parse().unwrap());
        h.insert("x-vcloud-authorization", "v1".parse().unwrap());
        h.insert("authorization", "Bearer b1".parse().unwrap());
        // Header, then the SOAP cookie, then the vAPI cookie; the VCD
        // listener's own two.
        assert_eq!(header_tokens(&h, false), ["h1", "c1", "c2"]);
        assert_eq!(header_tokens(&h, true), ["v1", "b1"]);
        // Empty and oversized tokens are not tokens.
        h.insert("vmware-api-session-id", "x".repeat(257).parse().unwrap());
        h.insert("cookie", "vmware_soap_session=".parse().unwrap());
        assert!(header_tokens(&h, false).is_empty());
    }
}
