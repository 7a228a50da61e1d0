//! SOAP endpoint: `POST /sdk` (urn:vim25) and `POST /vsanHealth` (urn:vsan).
use super::dispatch::{call, resolve_target};
use super::{respond, AppState, Req, Resp};
use crate::engine::{Ctx, Fault};
use hyper::StatusCode;
use vmodl::{soap, types, TypeRef, VersionId};

pub const COOKIE: &str = "vmware_soap_session";

pub fn service_versions(ns: &str, releases: &[&str]) -> Resp {
    let mut o =
        String::from("<?xml version=\"1.0\" encoding=\"UTF-8\" ?>\n<namespaces version=\"1.0\">\n <namespace>\n");
    o.push_str(&format!(
        "  <name>{ns}</name>\n  <version>{}</version>\n  <priorVersions>\n",
        releases[releases.len() - 1]
    ));
    for r in releases[..releases.len() - 1].iter().rev() {
        o.push_str(&format!("   <version>{r}</version>\n"));
    }
    o.push_str("  </priorVersions>\n </namespace>\n</namespaces>\n");
    respond(StatusCode::OK, "text/xml", o)
}

/// The API release: SOAPAction is only a hint; an unknown one means the
/// newest release we serve.
/// `/vsanHealth` speaks vSAN releases; `/sdk` speaks vim25 releases, or
/// vSAN ones when the client says so (govmomi's `UseServiceVersion("vsan")`,
/// which the CSI driver uses so that CNS task results are in its version).
fn version_of(req: &Req, ns: &str) -> VersionId {
    let hint = req.header("soapaction").map(|s| s.trim_matches('"').to_string()).unwrap_or_default();
    let vns = if ns == "urn:vsan" || hint.starts_with("urn:vsan/") { "vsan" } else { "vim25" };
    let served: &[&str] = if vns == "vsan" { super::VSAN_RELEASES } else { super::RELEASES };
    let wire = hint.rsplit('/').next().unwrap_or("");
    let wire = if served.contains(&wire) { wire } else { served[served.len() - 1] };
    VersionId::by_wire(vns, wire).expect("served releases exist in the registry")
}

fn xml(status: StatusCode, body: String) -> Resp {
    respond(status, "text/xml; charset=utf-8", body)
}

pub async fn handle(state: &AppState, req: &Req, ns: &str) -> (Resp, String) {
    let version = version_of(req, ns);
    let fault = |f: Fault| xml(StatusCode::INTERNAL_SERVER_ERROR, soap::encode_fault(&f.data, &f.message, ns, version));
    let Ok(text) = std::str::from_utf8(&req.body) else {
        return (fault(Fault::invalid_request("request body is not UTF-8")), "invalid".into());
    };
    let parsed = match soap::parse_request(text) {
        Ok(p) => p,
        Err(e) => return (fault(Fault::invalid_request(e.to_string())), "invalid".into()),
    };
    let method = parsed.method.clone();
    let eng = &state.engine;
    let mut ctx = Ctx::new(version);
    ctx.ip = req.peer.ip().to_string();
    ctx.user_agent = req.header("user-agent").unwrap_or("").to_string();
    // The headers' tokens first (`header_tokens`), then the SOAP header's.
    let had_token = !super::header_tokens(&req.headers, false).is_empty() || parsed.header_session.is_some();
    ctx.session = super::request_session(eng, &req.headers)
        .or_else(|| parsed.header_session.as_deref().and_then(|t| eng.session_for_token(t)));

    let Some((tname, moid)) = parsed.this.clone() else {
        return (fault(Fault::invalid_request(format!("{method} has no _this"))), method);
    };
    let result = match resolve_target(eng, &tname, &moid) {
        Ok(this) => call(eng, &mut ctx, &this, &method, |m| soap::decode_args(&parsed, m)).await,
        Err(f) => Err(f),
    };
    let resp = match result {
        Ok((value, m)) => {
            let declared = m.result.unwrap_or(TypeRef { ty: types::anyType, array: false });
            let body = soap::encode_response(&method, ns, value.as_ref().map(|v| (v, declared)), version);
            let mut r = xml(StatusCode::OK, body);
            let new_token = ctx.new_session.as_ref().map(|s| s.token.clone()).or_else(|| {
                // vCenter hands out its session cookie with the first reply.
                (!had_token && method == "RetrieveServiceContent").then(|| hex::encode(rand::random::<[u8; 20]>()))
            });
            if let Some(t) = new_token {
                let secure = if state.tls { "; Secure" } else { "" };
                let c = format!("{COOKIE}=\"{t}\"; Path=/; HttpOnly{secure}");
                r.headers_mut().insert("Set-Cookie", c.parse().expect("cookie header"));
            }
            r
        }
        Err(f) => fault(f),
    };
    (resp, method)
}
