//! HTTP file access on datastores: `GET|PUT|DELETE /folder/{path}?dcPath=&dsName=`.
use super::{respond, AppState, Req, Resp};
use hyper::{Method, StatusCode};
use std::path::{Path, PathBuf};
use vmodl::types;

fn text(status: StatusCode, msg: impl Into<String>) -> Resp {
    respond(status, "text/plain; charset=utf-8", msg.into())
}

/// Join a client path under the datastore directory, refusing anything that
/// could leave it.
pub fn safe_join(root: &Path, rel: &str) -> Option<PathBuf> {
    let mut out = root.to_path_buf();
    let mut any = false;
    for seg in rel.split('/') {
        if seg.is_empty() {
            continue;
        }
        if seg == "." || seg == ".." || seg.contains('\0') || seg.contains('\\') {
            return None;
        }
        out.push(seg);
        any = true;
    }
    any.then_some(out)
}

pub async fn handle(state: &AppState, req: &Req) -> Resp {
    let eng = &state.engine;
    let token = req.cookie(super::soap::COOKIE).or_else(|| req.header(super::vijson::SESSION_HEADER).map(str::to_string));
    let Some(session) = token.and_then(|t| eng.session_for_token(&t)) else {
        return text(StatusCode::UNAUTHORIZED, "a valid session is required");
    };
    let rel = percent_encoding::percent_decode_str(req.path.strip_prefix("/folder").unwrap_or("")).decode_utf8_lossy().into_owned();
    let Some(ds_name) = req.query_param("dsName") else {
        return text(StatusCode::BAD_REQUEST, "dsName is required");
    };
    let dc_path = req.query_param("dcPath").unwrap_or_else(|| "DC0".into());
    let ds = {
        let inv = eng.inv.read();
        let dc = inv
            .objects
            .values()
            .find(|e| e.moref.ty == types::Datacenter && (e.name == dc_path || e.name == dc_path.trim_matches('/').rsplit('/').next().unwrap_or("")));
        let Some(dc) = dc else { return text(StatusCode::NOT_FOUND, format!("datacenter '{dc_path}' not found")) };
        let found = inv
            .in_datacenter(&dc.moref.value, types::Datastore)
            .into_iter()
            .filter_map(|m| inv.get(&m.value))
            .find(|e| e.name == ds_name)
            .map(|e| (e.moref.clone(), e.attr("path").unwrap_or_default().to_string()));
        match found {
            Some(x) => x,
            None => return text(StatusCode::NOT_FOUND, format!("datastore '{ds_name}' not found in '{dc_path}'")),
        }
    };
    let privilege = if req.method == Method::GET || req.method == Method::HEAD { "Datastore.Browse" } else { "Datastore.FileManagement" };
    if !eng.has_privilege(&session.user, &ds.0, privilege) {
        return text(StatusCode::FORBIDDEN, format!("permission denied: {privilege} on {}", ds.0.value));
    }
    let root = PathBuf::from(&ds.1);
    let Some(path) = safe_join(&root, &rel) else {
        return text(StatusCode::BAD_REQUEST, format!("invalid datastore path '{rel}'"));
    };
    match req.method {
        Method::GET | Method::HEAD => match tokio::fs::metadata(&path).await {
            Ok(md) if md.is_file() => match tokio::fs::read(&path).await {
                Ok(data) => {
                    let body = if req.method == Method::HEAD { Vec::new() } else { data };
                    respond(StatusCode::OK, "application/octet-stream", body)
                }
                Err(e) => text(StatusCode::INTERNAL_SERVER_ERROR, format!("cannot read {rel}: {e}")),
            },
            Ok(_) => text(StatusCode::BAD_REQUEST, format!("'{rel}' is a directory")),
            Err(_) => text(StatusCode::NOT_FOUND, format!("'{rel}' not found")),
        },
        Method::PUT => {
            let existed = tokio::fs::metadata(&path).await.is_ok();
            if let Some(parent) = path.parent() {
                if let Err(e) = tokio::fs::create_dir_all(parent).await {
                    return text(StatusCode::INTERNAL_SERVER_ERROR, format!("cannot create directory: {e}"));
                }
            }
            let tmp = path.with_extension(format!("vtwin-upload-{}", uuid::Uuid::new_v4().simple()));
            let body = req.body.clone();
            let res = async {
                tokio::fs::write(&tmp, &body).await?;
                tokio::fs::File::open(&tmp).await?.sync_all().await?;
                tokio::fs::rename(&tmp, &path).await
            }
            .await;
            match res {
                Ok(()) => text(if existed { StatusCode::OK } else { StatusCode::CREATED }, ""),
                Err(e) => {
                    let _ = tokio::fs::remove_file(&tmp).await;
                    text(StatusCode::INTERNAL_SERVER_ERROR, format!("cannot write {rel}: {e}"))
                }
            }
        }
        Method::DELETE => match tokio::fs::remove_file(&path).await {
            Ok(()) => respond(StatusCode::NO_CONTENT, "text/plain", ""),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => text(StatusCode::NOT_FOUND, format!("'{rel}' not found")),
            Err(e) => text(StatusCode::INTERNAL_SERVER_ERROR, format!("cannot delete {rel}: {e}")),
        },
        _ => text(StatusCode::METHOD_NOT_ALLOWED, "use GET, PUT or DELETE"),
    }
}
