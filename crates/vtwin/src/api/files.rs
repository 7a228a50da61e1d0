//! HTTP file access on datastores: `GET|HEAD|PUT|DELETE /folder/{path}?dcPath=&dsName=`.
//!
//! The session and the privilege are checked before the body is read. An
//! upload is streamed to a temporary file next to its target (never held in
//! memory), synced and renamed into place; a download is streamed from the
//! file, with a single `Range` honoured. Paths stay inside the datastore:
//! `..` is refused, and so is any path whose resolved form (symlinks
//! followed) leaves the datastore's directory.
use super::{full_body, respond, AppState, Req, Resp, MAX_FILE_BODY};
use crate::engine::storage::access::{FileAccess, FolderMiss};
use bytes::{Bytes, BytesMut};
use http_body_util::BodyExt;
use hyper::body::{Frame, Incoming};
use hyper::{Method, StatusCode};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncSeekExt, AsyncWriteExt};

/// Bytes read from a file per body frame.
const CHUNK: usize = 128 << 10;

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

/// Is `p`, resolved, inside `root` (already resolved)?
async fn inside(root: &Path, p: &Path) -> std::io::Result<bool> {
    Ok(tokio::fs::canonicalize(p).await?.starts_with(root))
}

/// The deepest existing ancestor of `p` (p itself included).
async fn existing_ancestor(p: &Path) -> Option<PathBuf> {
    let mut cur = Some(p);
    while let Some(c) = cur {
        if tokio::fs::symlink_metadata(c).await.is_ok() {
            return Some(c.to_path_buf());
        }
        cur = c.parent();
    }
    None
}

/// Bytes free for an unprivileged writer on the filesystem holding `dir`.
fn free_space(dir: &Path) -> Option<u64> {
    rustix::fs::statvfs(dir).ok().map(|st| st.f_bavail * st.f_frsize)
}

/// The byte range a `Range` header asks for, in a file of `len` bytes.
#[derive(Debug, PartialEq)]
enum Want {
    All,
    Part(u64, u64),
    Unsatisfiable,
}

fn parse_range(h: Option<&str>, len: u64) -> Want {
    let Some(spec) = h.and_then(|h| h.trim().strip_prefix("bytes=")) else { return Want::All };
    // Several ranges: the whole file is a valid answer.
    if spec.contains(',') {
        return Want::All;
    }
    let Some((a, b)) = spec.trim().split_once('-') else { return Want::All };
    let (a, b) = (a.trim(), b.trim());
    if a.is_empty() {
        // The last n bytes.
        let Ok(n) = b.parse::<u64>() else { return Want::All };
        if n == 0 || len == 0 {
            return Want::Unsatisfiable;
        }
        return Want::Part(len - n.min(len), len - 1);
    }
    let Ok(start) = a.parse::<u64>() else { return Want::All };
    let end = if b.is_empty() {
        u64::MAX
    } else {
        match b.parse::<u64>() {
            Ok(e) if e >= start => e,
            _ => return Want::All,
        }
    };
    if start >= len {
        return Want::Unsatisfiable;
    }
    Want::Part(start, end.min(len - 1))
}

/// Removes an upload's temporary file unless it was renamed into place
/// (also when the request is dropped half way, the client gone).
struct TempFile {
    path: PathBuf,
    keep: bool,
}

impl Drop for TempFile {
    fn drop(&mut self) {
        if !self.keep {
            let _ = std::fs::remove_file(&self.path);
        }
    }
}

pub async fn handle(state: &AppState, parts: hyper::http::request::Parts, body: Incoming, peer: SocketAddr) -> Resp {
    let req = Req {
        method: parts.method,
        path: parts.uri.path().to_string(),
        query: parts.uri.query().unwrap_or("").to_string(),
        headers: parts.headers,
        body: Bytes::new(),
        peer,
    };
    let eng = &state.engine;
    let Some(session) = super::request_session(eng, &req.headers) else {
        return text(StatusCode::UNAUTHORIZED, "a valid session is required");
    };
    let rel = percent_encoding::percent_decode_str(req.path.strip_prefix("/folder").unwrap_or(""))
        .decode_utf8_lossy()
        .into_owned();
    let Some(ds_name) = req.query_param("dsName") else {
        return text(StatusCode::BAD_REQUEST, "dsName is required");
    };
    let dc_path = req.query_param("dcPath").unwrap_or_else(|| "DC0".into());
    let ds = match eng.folder_datastore(&dc_path, &ds_name) {
        Ok(ds) => ds,
        Err(FolderMiss::Datacenter) => return text(StatusCode::NOT_FOUND, format!("datacenter '{dc_path}' not found")),
        Err(FolderMiss::Datastore) => {
            return text(StatusCode::NOT_FOUND, format!("datastore '{ds_name}' not found in '{dc_path}'"))
        }
    };
    let access =
        if req.method == Method::GET || req.method == Method::HEAD { FileAccess::Read } else { FileAccess::Write };
    if !eng.may_access_files(&session.user, &ds.0, access) {
        return text(StatusCode::FORBIDDEN, format!("permission denied: {} on {}", access.privilege(), ds.0.value));
    }
    let root = match tokio::fs::canonicalize(&ds.1).await {
        Ok(r) => r,
        Err(e) => return text(StatusCode::INTERNAL_SERVER_ERROR, format!("datastore directory unavailable: {e}")),
    };
    let Some(path) = safe_join(&root, &rel) else {
        return text(StatusCode::BAD_REQUEST, format!("invalid datastore path '{rel}'"));
    };
    let outside = || text(StatusCode::FORBIDDEN, format!("'{rel}' leads outside the datastore"));
    match req.method {
        Method::GET | Method::HEAD => {
            match inside(&root, &path).await {
                Ok(true) => {}
                Ok(false) => return outside(),
                Err(_) => return text(StatusCode::NOT_FOUND, format!("'{rel}' not found")),
            }
            download(&req, &path, &rel).await
        }
        Method::PUT => upload(state, &req, body, &root, &path, &rel).await,
        Method::DELETE => {
            let Some(parent) = path.parent() else { return outside() };
            match inside(&root, parent).await {
                Ok(true) => {}
                Ok(false) => return outside(),
                Err(_) => return text(StatusCode::NOT_FOUND, format!("'{rel}' not found")),
            }
            // The final component is not followed: a symlink is removed itself.
            match tokio::fs::symlink_metadata(&path).await {
                Ok(md) if md.is_dir() => return text(StatusCode::BAD_REQUEST, format!("'{rel}' is a directory")),
                Ok(_) => {}
                Err(_) => return text(StatusCode::NOT_FOUND, format!("'{rel}' not found")),
            }
            match tokio::fs::remove_file(&path).await {
                Ok(()) => respond(StatusCode::NO_CONTENT, "text/plain", ""),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                    text(StatusCode::NOT_FOUND, format!("'{rel}' not found"))
                }
                Err(e) => text(StatusCode::INTERNAL_SERVER_ERROR, format!("cannot delete {rel}: {e}")),
            }
        }
        _ => {
            let mut r = text(StatusCode::METHOD_NOT_ALLOWED, "use GET, HEAD, PUT or DELETE");
            r.headers_mut()
                .insert(hyper::header::ALLOW, hyper::header::HeaderValue::from_static("GET, HEAD, PUT, DELETE"));
            r
        }
    }
}

async fn download(req: &Req, path: &Path, rel: &str) -> Resp {
    let Ok(mut file) = tokio::fs::File::open(path).await else {
        return text(StatusCode::NOT_FOUND, format!("'{rel}' not found"));
    };
    let len = match file.metadata().await {
        Ok(md) if md.is_file() => md.len(),
        Ok(_) => return text(StatusCode::BAD_REQUEST, format!("'{rel}' is a directory")),
        Err(e) => return text(StatusCode::INTERNAL_SERVER_ERROR, format!("cannot read {rel}: {e}")),
    };
    let b =
        hyper::Response::builder().header("Content-Type", "application/octet-stream").header("Accept-Ranges", "bytes");
    let (b, start, n) = match parse_range(req.header("range"), len) {
        Want::All => (b.status(StatusCode::OK), 0, len),
        Want::Part(s, e) => (
            b.status(StatusCode::PARTIAL_CONTENT).header("Content-Range", format!("bytes {s}-{e}/{len}")),
            s,
            e - s + 1,
        ),
        Want::Unsatisfiable => {
            let mut r = text(StatusCode::RANGE_NOT_SATISFIABLE, format!("'{rel}' has {len} bytes"));
            r.headers_mut().insert("Content-Range", format!("bytes */{len}").parse().expect("header value"));
            return r;
        }
    };
    let b = b.header("Content-Length", n);
    if req.method == Method::HEAD {
        return b.body(full_body(Bytes::new())).expect("valid response");
    }
    if start > 0 {
        if let Err(e) = file.seek(std::io::SeekFrom::Start(start)).await {
            return text(StatusCode::INTERNAL_SERVER_ERROR, format!("cannot read {rel}: {e}"));
        }
    }
    let stream = futures_util::stream::unfold((file, n), |(mut f, left)| async move {
        if left == 0 {
            return None;
        }
        let mut buf = BytesMut::zeroed((left as usize).min(CHUNK));
        match f.read(&mut buf).await {
            Ok(0) => {
                Some((Err(std::io::Error::new(std::io::ErrorKind::UnexpectedEof, "the file got shorter")), (f, 0)))
            }
            Ok(k) => {
                buf.truncate(k);
                Some((Ok(Frame::data(buf.freeze())), (f, left - k as u64)))
            }
            Err(e) => Some((Err(e), (f, 0))),
        }
    });
    b.body(BodyExt::boxed_unsync(http_body_util::StreamBody::new(stream))).expect("valid response")
}

async fn upload(state: &AppState, req: &Req, mut body: Incoming, root: &Path, path: &Path, rel: &str) -> Resp {
    let declared = req.header("content-length").and_then(|v| v.trim().parse::<u64>().ok());
    if declared.is_some_and(|n| n > MAX_FILE_BODY as u64) {
        return closing(text(StatusCode::PAYLOAD_TOO_LARGE, format!("uploads are limited to {MAX_FILE_BODY} bytes")));
    }
    let outside = || closing(text(StatusCode::FORBIDDEN, format!("'{rel}' leads outside the datastore")));
    let Some(parent) = path.parent().map(Path::to_path_buf) else { return outside() };
    // Directories are made only under a resolved ancestor inside the datastore.
    let Some(anc) = existing_ancestor(&parent).await else { return outside() };
    if !inside(root, &anc).await.unwrap_or(false) {
        return outside();
    }
    if let Err(e) = tokio::fs::create_dir_all(&parent).await {
        return closing(text(StatusCode::INTERNAL_SERVER_ERROR, format!("cannot create directory: {e}")));
    }
    if !inside(root, &parent).await.unwrap_or(false) {
        return outside();
    }
    // The final component is not followed.
    let existed = match tokio::fs::symlink_metadata(path).await {
        Ok(md) if md.file_type().is_symlink() => {
            return closing(text(StatusCode::FORBIDDEN, format!("'{rel}' is a symbolic link")))
        }
        Ok(md) if md.is_dir() => return closing(text(StatusCode::BAD_REQUEST, format!("'{rel}' is a directory"))),
        Ok(_) => true,
        Err(_) => false,
    };
    let free = free_space(&parent).unwrap_or(u64::MAX);
    let no_space = || {
        closing(text(StatusCode::INSUFFICIENT_STORAGE, format!("not enough free space on the datastore for '{rel}'")))
    };
    if declared.is_some_and(|n| n > free) {
        return no_space();
    }
    let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    let mut tmp =
        TempFile { path: parent.join(format!(".{name}.vtwin-upload-{}", uuid::Uuid::new_v4().simple())), keep: false };
    let mut file = match tokio::fs::OpenOptions::new().write(true).create_new(true).open(&tmp.path).await {
        Ok(f) => f,
        Err(e) => {
            tmp.keep = true; // nothing was created
            return closing(text(StatusCode::INTERNAL_SERVER_ERROR, format!("cannot write {rel}: {e}")));
        }
    };
    let stall: Duration = state.limits.idle_timeout;
    let mut written: u64 = 0;
    loop {
        let frame = match tokio::time::timeout(stall, body.frame()).await {
            Err(_) => {
                return closing(text(StatusCode::REQUEST_TIMEOUT, format!("no upload data for {} s", stall.as_secs())))
            }
            Ok(None) => break,
            Ok(Some(Err(e))) => return closing(text(StatusCode::BAD_REQUEST, format!("upload interrupted: {e}"))),
            Ok(Some(Ok(f))) => f,
        };
        let Ok(data) = frame.into_data() else { continue };
        written += data.len() as u64;
        if written > MAX_FILE_BODY as u64 {
            return closing(text(
                StatusCode::PAYLOAD_TOO_LARGE,
                format!("uploads are limited to {MAX_FILE_BODY} bytes"),
            ));
        }
        if written > free {
            return no_space();
        }
        if let Err(e) = file.write_all(&data).await {
            if e.raw_os_error() == Some(rustix::io::Errno::NOSPC.raw_os_error())
                || e.raw_os_error() == Some(rustix::io::Errno::DQUOT.raw_os_error())
            {
                return no_space();
            }
            return closing(text(StatusCode::INTERNAL_SERVER_ERROR, format!("cannot write {rel}: {e}")));
        }
    }
    if declared.is_some_and(|n| n != written) {
        return closing(text(StatusCode::BAD_REQUEST, "the upload ended before its Content-Length"));
    }
    let res = async {
        file.flush().await?;
        file.sync_all().await?;
        drop(file);
        tokio::fs::rename(&tmp.path, path).await?;
        tmp.keep = true;
        // The rename itself survives a crash once the directory is synced.
        if let Ok(d) = tokio::fs::File::open(&parent).await {
            let _ = d.sync_all().await;
        }
        Ok::<_, std::io::Error>(())
    }
    .await;
    match res {
        Ok(()) => text(if existed { StatusCode::OK } else { StatusCode::CREATED }, ""),
        Err(e) if e.raw_os_error() == Some(rustix::io::Errno::NOSPC.raw_os_error()) => no_space(),
        Err(e) => text(StatusCode::INTERNAL_SERVER_ERROR, format!("cannot write {rel}: {e}")),
    }
}

/// A refusal sent before the body is read (or while it is still coming):
/// the connection ends after it.
fn closing(mut r: Resp) -> Resp {
    r.headers_mut().insert(hyper::header::CONNECTION, hyper::header::HeaderValue::from_static("close"));
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges() {
        assert_eq!(parse_range(None, 10), Want::All);
        assert_eq!(parse_range(Some("bytes=0-3"), 10), Want::Part(0, 3));
        assert_eq!(parse_range(Some("bytes=5-"), 10), Want::Part(5, 9));
        assert_eq!(parse_range(Some("bytes=-4"), 10), Want::Part(6, 9));
        assert_eq!(parse_range(Some("bytes=-40"), 10), Want::Part(0, 9));
        assert_eq!(parse_range(Some("bytes=8-100"), 10), Want::Part(8, 9));
        assert_eq!(parse_range(Some("bytes=10-"), 10), Want::Unsatisfiable);
        assert_eq!(parse_range(Some("bytes=-0"), 10), Want::Unsatisfiable);
        assert_eq!(parse_range(Some("bytes=4-2"), 10), Want::All);
        assert_eq!(parse_range(Some("bytes=0-1,4-5"), 10), Want::All);
        assert_eq!(parse_range(Some("items=0-1"), 10), Want::All);
    }
}
