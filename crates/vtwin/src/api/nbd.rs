//! The NBD data path: fixed-newstyle NBD (OPT_GO/INFO, structured replies,
//! `base:allocation` block status; READ, WRITE, FLUSH, TRIM, WRITE_ZEROES,
//! BLOCK_STATUS) over first-class disks, and `POST /api/vtwin/nbd-tickets`,
//! which hands out the short-lived export names. The live disk is exported
//! read-write (writes go through change tracking), a snapshot read-only.
//!
//! A ticket belongs to the session that asked for it: a connection made
//! with it ends when that session does (logout). Negotiation has a
//! deadline, an idle connection is closed, and the number of connections
//! is capped (`NbdLimits`).
use super::{respond, AppState, Req, Resp};
use crate::engine::disks::{DiskRef, Ticket};
use crate::engine::storage::access::{Issued, TicketRefused, TicketRequest};
use crate::engine::Engine;
use hyper::StatusCode;
use parking_lot::Mutex;
use serde_json::json;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::AtomicUsize;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader, BufWriter};
use tokio::net::{TcpListener, TcpStream};

/// Deadlines and the connection cap of the NBD server.
#[derive(Clone, Debug)]
pub struct NbdLimits {
    /// From accept to the end of option haggling.
    pub handshake_timeout: Duration,
    /// A connection with no request for this long is closed.
    pub idle_timeout: Duration,
    pub max_connections: usize,
}

impl Default for NbdLimits {
    fn default() -> NbdLimits {
        NbdLimits {
            handshake_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(300),
            max_connections: 1024,
        }
    }
}

/// Which session asked for each ticket (export name).
#[derive(Default)]
pub struct Bindings {
    map: Mutex<HashMap<String, Binding>>,
}

#[derive(Clone)]
struct Binding {
    /// The session's token: the connection lives as long as the session.
    token: String,
    expires_ms: i64,
}

impl Bindings {
    fn bind(&self, name: &str, token: &str, expires_ms: i64) {
        let now = chrono::Utc::now().timestamp_millis();
        let mut m = self.map.lock();
        m.retain(|_, b| b.expires_ms > now);
        m.insert(name.to_string(), Binding { token: token.to_string(), expires_ms });
    }
    fn get(&self, name: &str) -> Option<Binding> {
        let now = chrono::Utc::now().timestamp_millis();
        self.map.lock().get(name).filter(|b| b.expires_ms > now).cloned()
    }
}

/// Is the session behind `token` still there (not logged out)? No side
/// effect on the session.
fn session_alive(eng: &Engine, token: &str) -> bool {
    eng.session_alive(token)
}

/// Per-connection buffers (an idle connection holds these and no more).
const READ_BUF: usize = 64 << 10;
const WRITE_BUF: usize = 64 << 10;
/// Pipelined writes applied together hold at most this much (plus one write).
const MAX_BATCH_BYTES: usize = 32 << 20;

const NBDMAGIC: u64 = 0x4e42444d41474943;
const IHAVEOPT: u64 = 0x49484156454f5054;
const REPLY_MAGIC: u64 = 0x0003e889045565a9;
const REQUEST_MAGIC: u32 = 0x25609513;
const SIMPLE_REPLY: u32 = 0x67446698;
const STRUCTURED_REPLY: u32 = 0x668e33ef;

const FLAG_FIXED_NEWSTYLE: u16 = 1;
const FLAG_NO_ZEROES: u16 = 2;

const OPT_EXPORT_NAME: u32 = 1;
const OPT_ABORT: u32 = 2;
const OPT_LIST: u32 = 3;
const OPT_INFO: u32 = 6;
const OPT_GO: u32 = 7;
const OPT_STRUCTURED_REPLY: u32 = 8;
const OPT_LIST_META_CONTEXT: u32 = 9;
const OPT_SET_META_CONTEXT: u32 = 10;

const REP_ACK: u32 = 1;
const REP_INFO: u32 = 3;
const REP_META_CONTEXT: u32 = 4;
const REP_ERR_UNSUP: u32 = 0x8000_0001;
const REP_ERR_POLICY: u32 = 0x8000_0002;
const REP_ERR_INVALID: u32 = 0x8000_0003;
const REP_ERR_UNKNOWN: u32 = 0x8000_0006;

const INFO_EXPORT: u16 = 0;
const INFO_BLOCK_SIZE: u16 = 3;

const TF_HAS_FLAGS: u16 = 1;
const TF_READ_ONLY: u16 = 2;
const TF_SEND_FLUSH: u16 = 4;
const TF_SEND_FUA: u16 = 8;
const TF_SEND_TRIM: u16 = 32;
const TF_SEND_WRITE_ZEROES: u16 = 64;
const TF_CAN_MULTI_CONN: u16 = 256;

const CMD_READ: u16 = 0;
const CMD_WRITE: u16 = 1;
const CMD_DISC: u16 = 2;
const CMD_FLUSH: u16 = 3;
const CMD_TRIM: u16 = 4;
const CMD_WRITE_ZEROES: u16 = 6;
const CMD_BLOCK_STATUS: u16 = 7;
const CMD_FLAG_FUA: u16 = 1;
const CMD_FLAG_REQ_ONE: u16 = 8;

const REPLY_FLAG_DONE: u16 = 1;
const REPLY_TYPE_NONE: u16 = 0;
const REPLY_TYPE_OFFSET_DATA: u16 = 1;
const REPLY_TYPE_BLOCK_STATUS: u16 = 5;
const REPLY_TYPE_ERROR: u16 = 0x8001;

const EPERM: u32 = 1;
const EIO: u32 = 5;
const EINVAL: u32 = 22;
const ENOSPC: u32 = 28;
const EOVERFLOW: u32 = 75;
const ENOTSUP: u32 = 95;

const STATE_HOLE: u32 = 1;
const STATE_ZERO: u32 = 2;
const META_ID: u32 = 1;
/// Largest READ/WRITE accepted (the block-size info's maximum).
const MAX_PAYLOAD: u32 = 32 << 20;

/// `POST /api/vtwin/nbd-tickets`.
pub fn tickets(state: &AppState, req: &Req) -> Resp {
    let err = |status: StatusCode, kind: &str, msg: String| {
        respond(status, "application/json", json!({"error_type": kind.to_uppercase(), "messages": [{"id": format!("com.vmware.vtwin.{kind}"), "default_message": msg, "args": []}]}).to_string())
    };
    let eng = &state.engine;
    let Some(session) = super::request_session(eng, &req.headers) else {
        return err(
            StatusCode::UNAUTHORIZED,
            "unauthenticated",
            "send vmware-api-session-id or the SOAP session cookie".into(),
        );
    };
    let Some(nbd) = state.nbd_addr else {
        return err(StatusCode::SERVICE_UNAVAILABLE, "service_unavailable", "the NBD server is not running".into());
    };
    let body: serde_json::Value = match serde_json::from_slice(&req.body) {
        Ok(b) => b,
        Err(e) => return err(StatusCode::BAD_REQUEST, "invalid_argument", format!("the body is not JSON: {e}")),
    };
    let (Some(disk), Some(ds)) = (body["disk"].as_str(), body["datastore"].as_str()) else {
        return err(StatusCode::BAD_REQUEST, "invalid_argument", "disk and datastore are required".into());
    };
    let request = TicketRequest {
        disk,
        datastore: ds,
        snapshot: body["snapshot"].as_str(),
        write: body["write"].as_bool().unwrap_or(false),
    };
    let Issued { name, expires_ms } = match eng.issue_nbd_ticket(&session.user, &request) {
        Ok(t) => t,
        Err(e) => {
            let (status, kind, msg) = match e {
                TicketRefused::Forbidden { privilege } => {
                    (StatusCode::FORBIDDEN, "unauthorized", format!("{privilege} on {ds} is needed"))
                }
                TicketRefused::NoDisk => {
                    (StatusCode::NOT_FOUND, "not_found", format!("no disk {disk} on datastore {ds}"))
                }
                TicketRefused::NoSnapshot => (
                    StatusCode::NOT_FOUND,
                    "not_found",
                    format!("no snapshot {} of disk {disk}", request.snapshot.unwrap_or_default()),
                ),
                TicketRefused::SnapshotWritable => (StatusCode::BAD_REQUEST, "invalid_argument", e.to_string()),
            };
            return err(status, kind, msg);
        }
    };
    state.nbd_tickets.bind(&name, &session.token, expires_ms);
    let expires = chrono::DateTime::from_timestamp_millis(expires_ms)
        .unwrap_or_default()
        .to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    respond(
        StatusCode::CREATED,
        "application/json",
        json!({"uri": format!("nbd://{nbd}/{name}"), "expires": expires}).to_string(),
    )
}

/// What a connection serves.
enum Export {
    /// The size is taken when the export is opened, so answering it never
    /// waits for the disk's lock.
    Live {
        disk: DiskRef,
        write: bool,
        size: u64,
    },
    Snapshot(Arc<vdisk::Chain>),
}

impl Export {
    fn size(&self) -> u64 {
        match self {
            Export::Live { size, .. } => *size,
            Export::Snapshot(c) => c.capacity(),
        }
    }
    fn writable(&self) -> bool {
        matches!(self, Export::Live { write: true, .. })
    }
    fn flags(&self) -> u16 {
        let mut f = TF_HAS_FLAGS | TF_SEND_FLUSH | TF_SEND_FUA | TF_CAN_MULTI_CONN;
        if self.writable() {
            f |= TF_SEND_TRIM | TF_SEND_WRITE_ZEROES;
        } else {
            f |= TF_READ_ONLY;
        }
        f
    }
}

/// The export behind a ticket, and the token of the session it belongs to
/// (which must still be there).
fn open_export(eng: &Engine, bindings: &Bindings, name: &str) -> Option<(Export, String)> {
    let t = eng.nbd_ticket(name)?;
    let b = bindings.get(name)?;
    if !session_alive(eng, &b.token) {
        return None;
    }
    open_ticket(eng, &t).map(|e| (e, b.token))
}

fn open_ticket(eng: &Engine, t: &Ticket) -> Option<Export> {
    let disk = eng.disk(&t.disk, &t.datastore).ok()?;
    match &t.snapshot {
        Some(s) => {
            let chain = disk.open().ok()?.open_snapshot(s)?.ok()?;
            Some(Export::Snapshot(Arc::new(chain)))
        }
        None => {
            let size = disk.open().ok()?.capacity();
            Some(Export::Live { disk, write: t.write, size })
        }
    }
}

pub async fn serve(engine: Arc<Engine>, listener: TcpListener, bindings: Arc<Bindings>, limits: NbdLimits) {
    static REFUSED: super::RefusalLog = super::RefusalLog::new();
    let open: Arc<AtomicUsize> = Default::default();
    let limits = Arc::new(limits);
    loop {
        let (stream, peer) = match listener.accept().await {
            Ok(x) => x,
            Err(e) => {
                tracing::warn!(error = %e, "NBD accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let Some(slot) = super::Slot::take(&open, limits.max_connections) else {
            drop(stream);
            REFUSED.refused("NBD", limits.max_connections);
            continue;
        };
        let _ = stream.set_nodelay(true);
        let eng = engine.clone();
        let bindings = bindings.clone();
        let limits = limits.clone();
        tokio::spawn(async move {
            let _slot = slot;
            if let Err(e) = connection(eng, bindings, &limits, stream).await {
                tracing::debug!(%peer, error = %e, "NBD connection ended");
            }
        });
    }
}

type Rd = BufReader<tokio::net::tcp::OwnedReadHalf>;
type Wr = BufWriter<tokio::net::tcp::OwnedWriteHalf>;

async fn opt_reply(w: &mut Wr, opt: u32, kind: u32, data: &[u8]) -> std::io::Result<()> {
    w.write_u64(REPLY_MAGIC).await?;
    w.write_u32(opt).await?;
    w.write_u32(kind).await?;
    w.write_u32(data.len() as u32).await?;
    w.write_all(data).await?;
    w.flush().await
}

fn be_string(b: &[u8], at: &mut usize) -> Option<String> {
    let len = u32::from_be_bytes(b.get(*at..*at + 4)?.try_into().ok()?) as usize;
    *at += 4;
    let s = String::from_utf8(b.get(*at..*at + len)?.to_vec()).ok()?;
    *at += len;
    Some(s)
}

/// What option haggling settled on.
struct Negotiated {
    export: Export,
    token: String,
    structured: bool,
    meta: bool,
}

async fn connection(
    eng: Arc<Engine>,
    bindings: Arc<Bindings>,
    limits: &NbdLimits,
    stream: TcpStream,
) -> std::io::Result<()> {
    let (r, w) = stream.into_split();
    let (mut r, mut w): (Rd, Wr) = (BufReader::with_capacity(READ_BUF, r), BufWriter::with_capacity(WRITE_BUF, w));
    let n = match tokio::time::timeout(limits.handshake_timeout, negotiate(&eng, &bindings, &mut r, &mut w)).await {
        Ok(n) => n?,
        Err(_) => return Err(std::io::Error::new(std::io::ErrorKind::TimedOut, "negotiation did not finish in time")),
    };
    let Some(n) = n else { return Ok(()) };
    transmission(&eng, n, r, w, limits.idle_timeout).await
}

async fn negotiate(
    eng: &Arc<Engine>,
    bindings: &Arc<Bindings>,
    r: &mut Rd,
    w: &mut Wr,
) -> std::io::Result<Option<Negotiated>> {
    w.write_u64(NBDMAGIC).await?;
    w.write_u64(IHAVEOPT).await?;
    w.write_u16(FLAG_FIXED_NEWSTYLE | FLAG_NO_ZEROES).await?;
    w.flush().await?;
    let client_flags = r.read_u32().await?;
    let no_zeroes = client_flags & FLAG_NO_ZEROES as u32 != 0;
    let mut structured = false;
    let mut meta = false;
    // Option haggling.
    let (export, token) = loop {
        if r.read_u64().await? != IHAVEOPT {
            return Err(std::io::Error::new(std::io::ErrorKind::InvalidData, "bad option magic"));
        }
        let opt = r.read_u32().await?;
        let len = r.read_u32().await?;
        if len > 64 << 10 {
            return Err(std::io::Error::new(std::io::ErrorKind::InvalidData, "option too long"));
        }
        let mut data = vec![0u8; len as usize];
        r.read_exact(&mut data).await?;
        match opt {
            OPT_EXPORT_NAME => {
                let name = String::from_utf8_lossy(&data).into_owned();
                let (eng2, b2) = (eng.clone(), bindings.clone());
                // Old-style: no way to say no but to hang up.
                let Some((ex, token)) =
                    tokio::task::spawn_blocking(move || open_export(&eng2, &b2, &name)).await.ok().flatten()
                else {
                    return Ok(None);
                };
                w.write_u64(ex.size()).await?;
                w.write_u16(ex.flags()).await?;
                if !no_zeroes {
                    w.write_all(&[0u8; 124]).await?;
                }
                w.flush().await?;
                break (ex, token);
            }
            OPT_ABORT => {
                opt_reply(w, opt, REP_ACK, &[]).await?;
                return Ok(None);
            }
            OPT_LIST => {
                // Export names are tickets: none is listed.
                opt_reply(w, opt, REP_ERR_POLICY, b"exports are reachable only with a ticket").await?;
            }
            OPT_STRUCTURED_REPLY => {
                structured = true;
                opt_reply(w, opt, REP_ACK, &[]).await?;
            }
            OPT_LIST_META_CONTEXT | OPT_SET_META_CONTEXT => {
                if meta_context(w, opt, &data, structured).await? {
                    meta = true;
                }
            }
            OPT_INFO | OPT_GO => {
                if let Some(found) = info(eng, bindings, w, opt, &data).await? {
                    if opt == OPT_GO {
                        break found;
                    }
                }
            }
            _ => opt_reply(w, opt, REP_ERR_UNSUP, b"option not supported").await?,
        }
    };
    Ok(Some(Negotiated { export, token, structured, meta }))
}

/// NBD_OPT_LIST_META_CONTEXT / SET_META_CONTEXT: the one context served is
/// base:allocation. Whether it is now set.
async fn meta_context(w: &mut Wr, opt: u32, data: &[u8], structured: bool) -> std::io::Result<bool> {
    let mut at = 0;
    let (Some(_name), Some(n)) =
        (be_string(data, &mut at), data.get(at..at + 4).map(|b| u32::from_be_bytes(b.try_into().expect("4 bytes"))))
    else {
        opt_reply(w, opt, REP_ERR_INVALID, b"malformed meta context request").await?;
        return Ok(false);
    };
    if !structured && opt == OPT_SET_META_CONTEXT {
        opt_reply(w, opt, REP_ERR_INVALID, b"structured replies first").await?;
        return Ok(false);
    }
    at += 4;
    let mut wants = n == 0 && opt == OPT_LIST_META_CONTEXT;
    for _ in 0..n {
        match be_string(data, &mut at) {
            Some(q) if q == "base:allocation" || (opt == OPT_LIST_META_CONTEXT && (q == "base:" || q == "base")) => {
                wants = true;
            }
            Some(_) => {}
            None => break,
        }
    }
    let mut set = false;
    if wants {
        let mut d = META_ID.to_be_bytes().to_vec();
        d.extend_from_slice(b"base:allocation");
        opt_reply(w, opt, REP_META_CONTEXT, &d).await?;
        set = opt == OPT_SET_META_CONTEXT;
    }
    opt_reply(w, opt, REP_ACK, &[]).await?;
    Ok(set)
}

/// NBD_OPT_INFO / GO: the export a ticket names, described (size, flags,
/// block sizes); None when the name is malformed or no valid ticket.
async fn info(
    eng: &Arc<Engine>,
    bindings: &Arc<Bindings>,
    w: &mut Wr,
    opt: u32,
    data: &[u8],
) -> std::io::Result<Option<(Export, String)>> {
    let mut at = 0;
    let Some(name) = be_string(data, &mut at) else {
        opt_reply(w, opt, REP_ERR_INVALID, b"malformed").await?;
        return Ok(None);
    };
    let (eng2, b2) = (eng.clone(), bindings.clone());
    let ex = tokio::task::spawn_blocking(move || open_export(&eng2, &b2, &name)).await.ok().flatten();
    let Some((ex, token)) = ex else {
        opt_reply(w, opt, REP_ERR_UNKNOWN, b"unknown or expired export name").await?;
        return Ok(None);
    };
    let mut info = INFO_EXPORT.to_be_bytes().to_vec();
    info.extend_from_slice(&ex.size().to_be_bytes());
    info.extend_from_slice(&ex.flags().to_be_bytes());
    opt_reply(w, opt, REP_INFO, &info).await?;
    let mut bs = INFO_BLOCK_SIZE.to_be_bytes().to_vec();
    bs.extend_from_slice(&1u32.to_be_bytes());
    bs.extend_from_slice(&4096u32.to_be_bytes());
    bs.extend_from_slice(&MAX_PAYLOAD.to_be_bytes());
    opt_reply(w, opt, REP_INFO, &bs).await?;
    opt_reply(w, opt, REP_ACK, &[]).await?;
    Ok(Some((ex, token)))
}

async fn simple_reply(w: &mut Wr, handle: u64, err: u32, data: &[u8]) -> std::io::Result<()> {
    w.write_u32(SIMPLE_REPLY).await?;
    w.write_u32(err).await?;
    w.write_u64(handle).await?;
    w.write_all(data).await
}

async fn chunk(w: &mut Wr, handle: u64, flags: u16, kind: u16, payload: &[&[u8]]) -> std::io::Result<()> {
    w.write_u32(STRUCTURED_REPLY).await?;
    w.write_u16(flags).await?;
    w.write_u16(kind).await?;
    w.write_u64(handle).await?;
    w.write_u32(payload.iter().map(|p| p.len()).sum::<usize>() as u32).await?;
    for p in payload {
        w.write_all(p).await?;
    }
    Ok(())
}

async fn error_reply(w: &mut Wr, handle: u64, structured: bool, err: u32, msg: &str) -> std::io::Result<()> {
    if structured {
        let mut p = err.to_be_bytes().to_vec();
        p.extend_from_slice(&(msg.len() as u16).to_be_bytes());
        p.extend_from_slice(msg.as_bytes());
        chunk(w, handle, REPLY_FLAG_DONE, REPLY_TYPE_ERROR, &[&p]).await
    } else {
        simple_reply(w, handle, err, &[]).await
    }
}

fn errno(e: &vdisk::Error) -> u32 {
    match e {
        vdisk::Error::OutOfRange { .. } => EINVAL,
        vdisk::Error::Io { source, .. } if source.raw_os_error() == Some(28) => ENOSPC,
        _ => EIO,
    }
}

struct Request {
    flags: u16,
    cmd: u16,
    handle: u64,
    offset: u64,
    len: u32,
    payload: Vec<u8>,
}

async fn read_request(r: &mut Rd) -> std::io::Result<Request> {
    if r.read_u32().await? != REQUEST_MAGIC {
        return Err(std::io::Error::new(std::io::ErrorKind::InvalidData, "bad request magic"));
    }
    let flags = r.read_u16().await?;
    let cmd = r.read_u16().await?;
    let handle = r.read_u64().await?;
    let offset = r.read_u64().await?;
    let len = r.read_u32().await?;
    let mut payload = vec![];
    if cmd == CMD_WRITE {
        if len > MAX_PAYLOAD {
            return Err(std::io::Error::new(std::io::ErrorKind::InvalidData, "write too large"));
        }
        payload = vec![0u8; len as usize];
        r.read_exact(&mut payload).await?;
    }
    Ok(Request { flags, cmd, handle, offset, len, payload })
}

/// Is the next buffered request a WRITE? (Peeks at the header.)
fn next_is_write(r: &Rd) -> bool {
    let b = r.buffer();
    b.len() >= 28 && u16::from_be_bytes([b[6], b[7]]) == CMD_WRITE
}

/// Pipelined writes are applied together: their changes are logged with one
/// durable append (group commit), then each is answered.
async fn write_batch(ex: &Arc<Export>, w: &mut Wr, batch: Vec<Request>, structured: bool) -> std::io::Result<()> {
    let ex2 = ex.clone();
    let (batch, res) = tokio::task::spawn_blocking(move || {
        let Export::Live { disk, .. } = &*ex2 else { return (batch, Ok(())) };
        let mut d = match disk.open() {
            Ok(d) => d,
            Err(e) => return (batch, Err(e)),
        };
        let writes: Vec<(u64, &[u8])> = batch.iter().map(|q| (q.offset, q.payload.as_slice())).collect();
        let mut r = d.write_batch(&writes);
        if r.is_ok() && batch.iter().any(|q| q.flags & CMD_FLAG_FUA != 0) {
            r = d.flush();
        }
        (batch, r)
    })
    .await
    .map_err(|e| std::io::Error::other(e.to_string()))?;
    for q in &batch {
        match &res {
            Ok(()) if structured => chunk(w, q.handle, REPLY_FLAG_DONE, REPLY_TYPE_NONE, &[]).await?,
            Ok(()) => simple_reply(w, q.handle, 0, &[]).await?,
            Err(e) => error_reply(w, q.handle, structured, errno(e), &e.to_string()).await?,
        }
    }
    Ok(())
}

/// Why a connection stops waiting for its next request.
enum Wait {
    Request,
    Eof,
    Idle,
    SessionEnded,
}

/// Wait for the next request's first bytes: at most `idle`, and checking
/// every second that the ticket's session is still there.
async fn wait_request(eng: &Engine, token: &str, r: &mut Rd, idle: Duration) -> std::io::Result<Wait> {
    let deadline = Instant::now() + idle;
    loop {
        if !session_alive(eng, token) {
            return Ok(Wait::SessionEnded);
        }
        if !r.buffer().is_empty() {
            return Ok(Wait::Request);
        }
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Ok(Wait::Idle);
        }
        // fill_buf is cancel-safe: bytes are kept in the buffer.
        tokio::select! {
            n = async { r.fill_buf().await.map(<[u8]>::len) } => {
                if n? == 0 {
                    return Ok(Wait::Eof);
                }
            }
            _ = tokio::time::sleep(left.min(Duration::from_secs(1))) => {}
        }
    }
}

async fn transmission(eng: &Arc<Engine>, n: Negotiated, mut r: Rd, mut w: Wr, idle: Duration) -> std::io::Result<()> {
    let Negotiated { export: ex, token, structured, meta } = n;
    let size = ex.size();
    let ex = Arc::new(ex);
    let timed_out = || std::io::Error::new(std::io::ErrorKind::TimedOut, "request not received in time");
    loop {
        match wait_request(eng, &token, &mut r, idle).await? {
            Wait::Request => {}
            Wait::Eof => return Ok(()),
            Wait::Idle => {
                tracing::debug!("closing an idle NBD connection");
                return Ok(());
            }
            Wait::SessionEnded => {
                tracing::debug!("closing an NBD connection: its session ended");
                let _ = w.flush().await;
                return Ok(());
            }
        }
        let q = tokio::time::timeout(idle, read_request(&mut r)).await.map_err(|_| timed_out())??;
        let in_range = |q: &Request| q.offset.checked_add(q.len as u64).is_some_and(|e| e <= size);
        if q.cmd == CMD_WRITE && ex.writable() && in_range(&q) {
            // Writes that follow each other go to the disk together.
            let mut bytes = q.payload.len();
            let mut batch = vec![q];
            while batch.len() < 64 && bytes < MAX_BATCH_BYTES && next_is_write(&r) {
                let n = tokio::time::timeout(idle, read_request(&mut r)).await.map_err(|_| timed_out())??;
                bytes += n.payload.len();
                if !in_range(&n) {
                    write_batch(&ex, &mut w, std::mem::take(&mut batch), structured).await?;
                    error_reply(&mut w, n.handle, structured, ENOSPC, "beyond the end of the export").await?;
                    continue;
                }
                batch.push(n);
            }
            if !batch.is_empty() {
                write_batch(&ex, &mut w, batch, structured).await?;
            }
        } else if q.cmd == CMD_DISC {
            w.flush().await?;
            return Ok(());
        } else {
            let writes = matches!(q.cmd, CMD_WRITE | CMD_WRITE_ZEROES | CMD_TRIM);
            let (cmd, handle) = (q.cmd, q.handle);
            if writes && !ex.writable() {
                error_reply(&mut w, handle, structured, EPERM, "the export is read-only").await?;
            } else if !in_range(&q) && cmd != CMD_FLUSH {
                let err = if cmd == CMD_WRITE { ENOSPC } else { EINVAL };
                error_reply(&mut w, handle, structured, err, "beyond the end of the export").await?;
            } else {
                match cmd {
                    CMD_READ => read_cmd(&ex, &mut w, &q, structured).await?,
                    CMD_WRITE | CMD_WRITE_ZEROES | CMD_TRIM | CMD_FLUSH => {
                        write_cmd(&ex, &mut w, q, structured).await?;
                    }
                    CMD_BLOCK_STATUS if meta => block_status(&ex, &mut w, &q, structured).await?,
                    _ => {
                        let err = if cmd == CMD_BLOCK_STATUS { EINVAL } else { ENOTSUP };
                        error_reply(&mut w, handle, structured, err, "command not supported").await?;
                    }
                }
            }
        }
        // Reply now unless more requests are already waiting (pipelining).
        if r.buffer().is_empty() {
            w.flush().await?;
        }
    }
}

/// NBD_CMD_READ: the bytes, as one data chunk or a simple reply.
async fn read_cmd(ex: &Arc<Export>, w: &mut Wr, q: &Request, structured: bool) -> std::io::Result<()> {
    let (handle, offset, len) = (q.handle, q.offset, q.len);
    if len > MAX_PAYLOAD {
        return error_reply(w, handle, structured, EOVERFLOW, "read too large").await;
    }
    let ex = ex.clone();
    let res = tokio::task::spawn_blocking(move || {
        let mut buf = vec![0u8; len as usize];
        let r = match &*ex {
            Export::Live { disk, .. } => disk.open().and_then(|d| d.read(offset, &mut buf)),
            Export::Snapshot(c) => c.read(offset, &mut buf),
        };
        r.map(|_| buf)
    })
    .await
    .map_err(|e| std::io::Error::other(e.to_string()))?;
    match res {
        Ok(buf) if structured => {
            chunk(w, handle, REPLY_FLAG_DONE, REPLY_TYPE_OFFSET_DATA, &[&offset.to_be_bytes(), &buf]).await
        }
        Ok(buf) => simple_reply(w, handle, 0, &buf).await,
        Err(e) => error_reply(w, handle, structured, errno(&e), &e.to_string()).await,
    }
}

/// NBD_CMD_WRITE (one alone), WRITE_ZEROES, TRIM (advisory: the data
/// stays, as a hole could expose a parent's) and FLUSH; FUA flushes.
async fn write_cmd(ex: &Arc<Export>, w: &mut Wr, q: Request, structured: bool) -> std::io::Result<()> {
    let Request { flags, cmd, handle, offset, len, payload } = q;
    let ex = ex.clone();
    let res = tokio::task::spawn_blocking(move || -> vdisk::Result<()> {
        let Export::Live { disk, .. } = &*ex else { return Ok(()) };
        let mut d = disk.open()?;
        match cmd {
            CMD_WRITE => d.write(offset, &payload)?,
            CMD_WRITE_ZEROES => {
                let zeros = vec![0u8; (len as usize).min(1 << 20)];
                let mut at = offset;
                while at < offset + len as u64 {
                    let n = ((offset + len as u64 - at) as usize).min(zeros.len());
                    d.write(at, &zeros[..n])?;
                    at += n as u64;
                }
            }
            _ => {}
        }
        if cmd == CMD_FLUSH || flags & CMD_FLAG_FUA != 0 {
            d.flush()?;
        }
        Ok(())
    })
    .await
    .map_err(|e| std::io::Error::other(e.to_string()))?;
    match res {
        Ok(()) if structured => chunk(w, handle, REPLY_FLAG_DONE, REPLY_TYPE_NONE, &[]).await,
        Ok(()) => simple_reply(w, handle, 0, &[]).await,
        Err(e) => error_reply(w, handle, structured, errno(&e), &e.to_string()).await,
    }
}

/// NBD_CMD_BLOCK_STATUS for base:allocation.
async fn block_status(ex: &Arc<Export>, w: &mut Wr, q: &Request, structured: bool) -> std::io::Result<()> {
    let ex = ex.clone();
    let res = tokio::task::spawn_blocking(move || match &*ex {
        Export::Live { disk, .. } => disk.open().and_then(|d| d.allocated()),
        Export::Snapshot(c) => c.allocated(),
    })
    .await
    .map_err(|e| std::io::Error::other(e.to_string()))?;
    match res {
        Ok(data) => {
            let desc = status_descriptors(&data, q.offset, q.len, q.flags & CMD_FLAG_REQ_ONE != 0);
            chunk(w, q.handle, REPLY_FLAG_DONE, REPLY_TYPE_BLOCK_STATUS, &[&desc]).await
        }
        Err(e) => error_reply(w, q.handle, structured, errno(&e), &e.to_string()).await,
    }
}

/// The base:allocation chunk of `[offset, offset + len)` from the allocated
/// ranges (offset, length; sorted): the context id, then (length, state)
/// descriptors; holes read as zeroes. `req_one`: stop after the first
/// allocated extent.
fn status_descriptors(data: &[(u64, u64)], offset: u64, len: u32, req_one: bool) -> Vec<u8> {
    let mut desc = META_ID.to_be_bytes().to_vec();
    let end = offset + len as u64;
    let mut at = offset;
    let push = |desc: &mut Vec<u8>, l: u64, state: u32| {
        desc.extend_from_slice(&(l as u32).to_be_bytes());
        desc.extend_from_slice(&state.to_be_bytes());
    };
    for &(o, l) in data {
        if o + l <= at {
            continue;
        }
        if o >= end {
            break;
        }
        if o > at {
            push(&mut desc, o - at, STATE_HOLE | STATE_ZERO);
            at = o;
        }
        let e = (o + l).min(end);
        push(&mut desc, e - at, 0);
        at = e;
        if req_one {
            break;
        }
    }
    if at < end && (desc.len() == 4 || !req_one) {
        push(&mut desc, end - at, STATE_HOLE | STATE_ZERO);
    }
    desc
}

pub async fn listen(addr: &str) -> std::io::Result<(TcpListener, SocketAddr)> {
    let l = TcpListener::bind(addr).await?;
    let a = l.local_addr()?;
    Ok((l, a))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn decode(d: &[u8]) -> (u32, Vec<(u32, u32)>) {
        let id = u32::from_be_bytes(d[..4].try_into().unwrap());
        let ds = d[4..]
            .chunks(8)
            .map(|c| (u32::from_be_bytes(c[..4].try_into().unwrap()), u32::from_be_bytes(c[4..].try_into().unwrap())));
        (id, ds.collect())
    }

    #[test]
    fn block_status_covers_the_range_with_extents_and_holes() {
        const H: u32 = STATE_HOLE | STATE_ZERO;
        let data = [(0, 4096), (8192, 4096)];
        assert_eq!(
            decode(&status_descriptors(&data, 0, 16384, false)),
            (META_ID, vec![(4096, 0), (4096, H), (4096, 0), (4096, H)])
        );
        // REQ_ONE: the first extent only.
        assert_eq!(decode(&status_descriptors(&data, 0, 16384, true)).1, vec![(4096, 0)]);
        // Starting inside an extent, ending inside the next.
        assert_eq!(decode(&status_descriptors(&data, 2048, 8192, false)).1, vec![(2048, 0), (4096, H), (2048, 0)]);
        // All hole: one descriptor, also with REQ_ONE.
        assert_eq!(decode(&status_descriptors(&[(65536, 512)], 0, 4096, true)).1, vec![(4096, H)]);
    }
}
