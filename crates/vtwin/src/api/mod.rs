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

use crate::engine::Engine;
use bytes::Bytes;
use futures_util::FutureExt;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::{Method, Request, Response, StatusCode};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;
use tokio::net::TcpListener;

pub type Resp = Response<Full<Bytes>>;

pub struct AppState {
    pub engine: Arc<Engine>,
    pub tls: bool,
    pub metrics: metrics::Metrics,
    /// The NBD server's address, for ticket URIs.
    pub nbd_addr: Option<SocketAddr>,
    /// This listener serves the vCloud Director API.
    pub vcd: bool,
}

/// Releases of the VI/JSON API this server speaks (oldest first).
pub const RELEASES: &[&str] = &["8.0.1.0", "8.0.2.0", "8.0.3.0", "9.0.0.0", "9.1.0.0"];
pub const VSAN_RELEASES: &[&str] = &["8.0.0.4", "9.0.0.0", "9.1.0.0"];

/// Largest request bodies accepted: API calls, and file uploads to /folder.
pub const MAX_API_BODY: usize = 64 << 20;
pub const MAX_FILE_BODY: usize = 4 << 30;

pub fn newest_release() -> &'static str {
    RELEASES[RELEASES.len() - 1]
}

pub fn respond(status: StatusCode, content_type: &str, body: impl Into<Bytes>) -> Resp {
    Response::builder()
        .status(status)
        .header("Content-Type", content_type)
        .body(Full::new(body.into()))
        .expect("valid response")
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
        for h in self.headers.get_all("cookie") {
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
    pub fn query_param(&self, name: &str) -> Option<String> {
        self.query.split('&').find_map(|kv| {
            let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
            (k == name).then(|| percent_encoding::percent_decode_str(&v.replace('+', " ")).decode_utf8_lossy().into_owned())
        })
    }
}

async fn route(state: Arc<AppState>, req: Req) -> (Resp, &'static str, String) {
    if state.vcd {
        let (r, m) = vcd::handle(&state, &req).await;
        return (r, "vcd", m);
    }
    let path = req.path.clone();
    match (&req.method, path.as_str()) {
        (&Method::GET, "/sdk/vimServiceVersions.xml") => (soap::service_versions("urn:vim25", RELEASES), "soap", "vimServiceVersions".into()),
        (&Method::GET, "/sdk/vsanServiceVersions.xml") => (soap::service_versions("urn:vsan", VSAN_RELEASES), "soap", "vsanServiceVersions".into()),
        (&Method::POST, "/sdk") | (&Method::POST, "/sdk/vimService") => {
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
        (_, p) if p.starts_with("/rest/") || p == "/api/session" || p.starts_with("/api/cis/") || p.starts_with("/api/vcenter/extension/") => {
            let (r, m) = vapi::handle_rest(&state, &req);
            (r, "vapi", m)
        }
        (_, p) if p.starts_with("/sdk/vim25/") => {
            let (r, m) = vijson::handle(&state, &req).await;
            (r, "vijson", m)
        }
        (&Method::POST, "/api/vtwin/nbd-tickets") => (nbd::tickets(&state, &req), "vapi", "nbd-tickets".into()),
        (_, p) if p == "/admin/faults" || p.starts_with("/admin/faults/") || p.starts_with("/admin/datastores/") => (admin::handle(&state, &req), "admin", req.method.to_string()),
        (&Method::GET, "/metrics") => (
            respond(StatusCode::OK, "text/plain; version=0.0.4", state.metrics.render()),
            "metrics",
            "scrape".into(),
        ),
        (_, p) if p.starts_with("/folder") => {
            let r = files::handle(&state, &req).await;
            (r, "folder", req.method.to_string())
        }
        _ => (
            respond(StatusCode::NOT_FOUND, "application/json", serde_json::json!({"error": "not found", "path": path}).to_string()),
            "other",
            "not_found".into(),
        ),
    }
}

async fn serve_one(state: Arc<AppState>, req: Request<Incoming>, peer: SocketAddr) -> Result<Resp, std::convert::Infallible> {
    let start = Instant::now();
    let (parts, body) = req.into_parts();
    let limit = if parts.uri.path().starts_with("/folder") { MAX_FILE_BODY } else { MAX_API_BODY };
    let body = match http_body_util::Limited::new(body, limit).collect().await {
        Ok(b) => b.to_bytes(),
        Err(e) if e.is::<http_body_util::LengthLimitError>() => {
            return Ok(respond(StatusCode::PAYLOAD_TOO_LARGE, "text/plain", format!("request body larger than {limit} bytes")))
        }
        Err(e) => return Ok(respond(StatusCode::BAD_REQUEST, "text/plain", format!("cannot read request body: {e}"))),
    };
    let req = Req {
        method: parts.method,
        path: parts.uri.path().to_string(),
        query: parts.uri.query().unwrap_or("").to_string(),
        headers: parts.headers,
        body,
        peer,
    };
    // A bug must never drop the connection or answer an empty 500: turn a
    // panic in the handler into a typed SystemError.
    let soap = req.path == "/sdk" || req.path == "/sdk/vimService" || req.path == "/vsanHealth";
    let vapi = req.path == "/api" || req.path.starts_with("/rest/") || req.path.starts_with("/api/");
    let (resp, api, method) = match std::panic::AssertUnwindSafe(route(state.clone(), req)).catch_unwind().await {
        Ok(r) => r,
        Err(_) => {
            tracing::error!("request handler panicked");
            let f = crate::engine::Fault::system_error("internal error (handler panicked)");
            let newest = vmodl::VersionId::by_wire("vim25", newest_release()).expect("newest release");
            let r = if state.vcd {
                respond(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "application/vnd.vmware.vcloud.error+xml",
                    vcd::tree::to_xml(&vcd::tree::Node::new("Error").attr("minorErrorCode", "INTERNAL_SERVER_ERROR").attr("message", f.message.clone()).attr("majorErrorCode", "500"), "http://www.vmware.com/vcloud/v1.5"),
                )
            } else if vapi {
                respond(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "application/json",
                    serde_json::json!({"error_type": "ERROR", "messages": [{"id": "com.vmware.vtwin.internal", "default_message": f.message, "args": []}]}).to_string(),
                )
            } else if soap {
                respond(StatusCode::INTERNAL_SERVER_ERROR, "text/xml; charset=utf-8", vmodl::soap::encode_fault(&f.data, &f.message, "urn:vim25", newest))
            } else {
                vijson::fault_resp(&f, newest)
            };
            (r, "internal", "panic".to_string())
        }
    };
    state.metrics.record(api, &method, resp.status().as_u16(), start.elapsed());
    Ok(resp)
}

/// Accept connections until the process ends.
pub async fn serve(state: Arc<AppState>, listener: TcpListener, tls: Option<tokio_rustls::TlsAcceptor>) -> anyhow::Result<()> {
    loop {
        let (stream, peer) = match listener.accept().await {
            Ok(x) => x,
            Err(e) => {
                tracing::warn!(error = %e, "accept failed");
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        let state = state.clone();
        let tls = tls.clone();
        tokio::spawn(async move {
            let svc = hyper::service::service_fn(move |req| serve_one(state.clone(), req, peer));
            let builder = hyper::server::conn::http1::Builder::new();
            let res = match tls {
                Some(acc) => match acc.accept(stream).await {
                    Ok(s) => builder.serve_connection(hyper_util::rt::TokioIo::new(s), svc).await,
                    Err(e) => {
                        tracing::debug!(error = %e, %peer, "TLS handshake failed");
                        return;
                    }
                },
                None => builder.serve_connection(hyper_util::rt::TokioIo::new(stream), svc).await,
            };
            if let Err(e) = res {
                tracing::debug!(error = %e, %peer, "connection ended with an error");
            }
        });
    }
}
