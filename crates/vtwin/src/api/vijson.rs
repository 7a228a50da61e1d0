//! VI/JSON endpoint: `/sdk/vim25/{release}[/vsan]/{Type}/{moId}/{method|property}`.
use super::dispatch::{call, resolve_target};
use super::{respond, AppState, Req, Resp};
use crate::engine::{Ctx, Fault};
use hyper::{Method, StatusCode};
use vmodl::{json, types, TypeRef, VersionId};

pub const SESSION_HEADER: &str = "vmware-api-session-id";

fn json_resp(status: StatusCode, v: &serde_json::Value) -> Resp {
    respond(status, "application/json", v.to_string())
}

pub fn fault_resp(f: &Fault, version: VersionId) -> Resp {
    json_resp(StatusCode::INTERNAL_SERVER_ERROR, &json::encode_data(&f.data, version))
}

/// `POST /api/vcenter/system?action=hello`: pick the newest release both
/// sides speak, or "" when there is none.
pub fn hello(req: &Req) -> Resp {
    let body: serde_json::Value = serde_json::from_slice(&req.body).unwrap_or(serde_json::Value::Null);
    let offered: Vec<&str> = body
        .get("api_releases")
        .and_then(|a| a.as_array())
        .map(|a| a.iter().filter_map(|v| v.as_str()).collect())
        .unwrap_or_default();
    let best = super::RELEASES.iter().rev().find(|r| offered.contains(r)).copied().unwrap_or("");
    json_resp(StatusCode::OK, &serde_json::json!({ "api_release": best }))
}

pub async fn handle(state: &AppState, req: &Req) -> (Resp, String) {
    let rest = &req.path["/sdk/vim25/".len()..];
    let mut segs: Vec<String> =
        rest.split('/').map(|s| percent_encoding::percent_decode_str(s).decode_utf8_lossy().into_owned()).collect();
    let newest = VersionId::by_wire("vim25", super::newest_release()).expect("newest release");
    let release = segs.first().cloned().unwrap_or_default();
    if !super::RELEASES.contains(&release.as_str()) {
        let f = Fault::invalid_request(format!(
            "API release '{release}' is not served; this server speaks {}",
            super::RELEASES.join(", ")
        ));
        return (fault_resp(&f, newest), "invalid".into());
    }
    if segs.get(1).map(String::as_str) == Some("vsan") {
        segs.remove(1);
    }
    // One VI/JSON release covers vim25 and vSAN (one specification, one
    // client type model): speak the release's vSAN version where there is
    // one, whose lineage includes the vim25 release, so a CNS task's result
    // read through /sdk/vim25/{release}/Task/... is whole.
    let version =
        VersionId::by_wire("vsan", &release).or_else(|| VersionId::by_wire("vim25", &release)).expect("served release");
    if segs.len() != 4 || segs[3].is_empty() {
        let f = Fault::invalid_request(format!(
            "expected /sdk/vim25/{{release}}/{{Type}}/{{moId}}/{{method}}, got {}",
            req.path
        ));
        return (fault_resp(&f, version), "invalid".into());
    }
    let (tname, moid, name) = (&segs[1], &segs[2], &segs[3]);
    let eng = &state.engine;
    let mut ctx = Ctx::new(version);
    ctx.ip = req.peer.ip().to_string();
    ctx.user_agent = req.header("user-agent").unwrap_or("").to_string();
    ctx.session = super::request_session(eng, &req.headers);

    let this = match resolve_target(eng, tname, moid) {
        Ok(t) => t,
        Err(f) => return (fault_resp(&f, version), name.clone()),
    };
    if req.method == Method::GET {
        return match crate::engine::call_engine(eng.blocks_reading(&this), || eng.read_property(&ctx, &this, name)) {
            Ok(Some(v)) => {
                let declared = this.ty.prop(name).map_or(TypeRef { ty: types::anyType, array: false }, |p| p.ty);
                (json_resp(StatusCode::OK, &json::encode(&v, declared, version)), format!("GET {name}"))
            }
            Ok(None) => (respond(StatusCode::NO_CONTENT, "application/json", ""), format!("GET {name}")),
            Err(f) => (fault_resp(&f, version), format!("GET {name}")),
        };
    }
    if req.method != Method::POST {
        let f = Fault::invalid_request(format!("{} is not allowed here", req.method));
        return (fault_resp(&f, version), name.clone());
    }
    let body: serde_json::Value = if req.body.iter().all(u8::is_ascii_whitespace) {
        serde_json::Value::Null
    } else {
        match serde_json::from_slice(&req.body) {
            Ok(v) => v,
            Err(e) => {
                return (fault_resp(&Fault::invalid_request(format!("malformed JSON: {e}")), version), name.clone())
            }
        }
    };
    let resp = match call(eng, &mut ctx, &this, name, |m| json::decode_args(&body, m)).await {
        Ok((Some(v), m)) => {
            let declared = m.result.unwrap_or(TypeRef { ty: types::anyType, array: false });
            let mut r = json_resp(StatusCode::OK, &json::encode(&v, declared, version));
            if let Some(s) = &ctx.new_session {
                r.headers_mut().insert(SESSION_HEADER, s.token.parse().expect("token header"));
            }
            r
        }
        Ok((None, _)) => respond(StatusCode::NO_CONTENT, "application/json", ""),
        Err(f) => fault_resp(&f, version),
    };
    (resp, name.clone())
}
