//! Shared set-up for the fuzz targets that need a running engine: one
//! engine per process on a temporary data directory (SQLite store, one
//! datacenter/host/datastore), a logged-in administrator session, a
//! first-class disk with a snapshot and NBD tickets for it, a VCD session
//! and task, and the NBD server listening on 127.0.0.1:0.
//!
//! Inputs may name these with placeholders, which `substitute` replaces:
//! `@SESSION@` (vSphere/vAPI session token), `@VCDTOKEN@`, `@ORG@` (the
//! System org's id), `@TASK@` (a VCD task's id), `@DISK@`, `@DS@`.
use bytes::Bytes;
use http_body_util::BodyExt;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};
use vtwin::api::{nbd, AppState, Req};
use vtwin::engine::{inventory::Shape, Engine};

pub const ADMIN: &str = "administrator@vsphere.local";
pub const PW: &str = "Fuzz-Passw0rd!";

pub struct Harness {
    pub rt: tokio::runtime::Runtime,
    pub state: Arc<AppState>,
    pub engine: Arc<Engine>,
    /// A vSphere session token (also a vAPI session id).
    pub token: String,
    pub vcd_token: String,
    pub vcd_org: String,
    pub vcd_task: String,
    pub disk: String,
    pub ds: String,
    pub snapshot: String,
    pub nbd_addr: SocketAddr,
    /// Export names: (read-write live disk, read-only live disk, snapshot),
    /// re-issued before the tickets run out.
    exports: Mutex<(Instant, [String; 3])>,
    _dir: tempfile::TempDir,
}

static HARNESS: OnceLock<Harness> = OnceLock::new();

pub fn harness() -> &'static Harness {
    HARNESS.get_or_init(|| setup().expect("fuzz harness set-up"))
}

/// A request as the HTTP layer hands it to a handler.
pub fn req(method: &str, path: &str, headers: &[(&str, &str)], body: impl Into<Bytes>) -> Req {
    let mut h = hyper::HeaderMap::new();
    for (k, v) in headers {
        if let (Ok(k), Ok(v)) =
            (hyper::header::HeaderName::from_bytes(k.as_bytes()), hyper::header::HeaderValue::from_str(v))
        {
            h.append(k, v);
        }
    }
    let (path, query) = match path.split_once('?') {
        Some((p, q)) => (p.to_string(), q.to_string()),
        None => (path.to_string(), String::new()),
    };
    Req {
        method: hyper::Method::from_bytes(method.as_bytes()).unwrap_or(hyper::Method::POST),
        path,
        query,
        headers: h,
        body: body.into(),
        peer: "127.0.0.1:40000".parse().expect("address"),
    }
}

/// Status and body of a handler's response.
pub fn read(h: &Harness, r: vtwin::api::Resp) -> (u16, Bytes) {
    let status = r.status().as_u16();
    let body = h.rt.block_on(r.into_body().collect()).map(|c| c.to_bytes()).unwrap_or_default();
    (status, body)
}

fn setup() -> anyhow::Result<Harness> {
    let dir = tempfile::Builder::new().prefix("vtwin-fuzz-").tempdir()?;
    let store = vtwin::store::open(dir.path(), None)?;
    let data_dir = std::fs::canonicalize(dir.path())?;
    let shape = Shape { datacenters: 1, hosts: 1, datastores: 1 };
    let opened = Engine::open(store, data_dir, shape, Some(PW.into()), Default::default())?;
    let engine = opened.engine.into_shared();
    engine
        .sessions()
        .set_lifetimes(vtwin::engine::auth::session::Lifetimes { idle_ms: i64::MAX / 4, max_ms: i64::MAX / 4 });
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build()?;
    let _guard = rt.enter();
    engine.start_node("fuzz", Duration::from_secs(30))?;

    // A session for the administrator.
    let user =
        engine.user(ADMIN).map_err(|f| anyhow::anyhow!(f.message))?.ok_or_else(|| anyhow::anyhow!("no admin"))?;
    let session =
        engine.open_session(&user, "en", "127.0.0.1", "vtwin-fuzz").map_err(|f| anyhow::anyhow!(f.message))?;
    let token = session.token.clone();

    // A first-class disk (4 MiB, thin, change tracking on) with a snapshot.
    let (ds, _, ds_path) = engine.datastores().into_iter().next().ok_or_else(|| anyhow::anyhow!("no datastore"))?;
    let ds = ds.value;
    let disk = "00000000-0000-4000-8000-00000000f022".to_string();
    let ddir = vtwin::engine::disks::fcd_dir(&ds_path).join(&disk);
    let mut d = vdisk::Disk::create(&ddir, &disk, "fuzz-disk", 4 << 20, vdisk::Provisioning::Thin, true)?;
    d.write(0, &[0xa5; 65536])?;
    let snapshot = d.create_snapshot("fuzz-snap", "fuzz")?.id;
    d.write(1 << 20, &[0x5a; 4096])?;
    engine.add_disk(&ds, d);

    // The NBD server, as `vtwin serve` starts it.
    let bindings: Arc<nbd::Bindings> = Default::default();
    let (listener, nbd_addr) = rt.block_on(nbd::listen("127.0.0.1:0"))?;
    let limits = nbd::NbdLimits {
        handshake_timeout: Duration::from_secs(2),
        idle_timeout: Duration::from_secs(2),
        max_connections: 64,
    };
    rt.spawn(nbd::serve(engine.clone(), listener, bindings.clone(), limits));

    let state = Arc::new(AppState {
        engine: engine.clone(),
        tls: false,
        metrics: Default::default(),
        nbd_addr: Some(nbd_addr),
        nbd_tickets: bindings,
        vcd: true,
        limits: Default::default(),
    });

    let mut h = Harness {
        rt,
        state,
        engine,
        token,
        vcd_token: String::new(),
        vcd_org: String::new(),
        vcd_task: String::new(),
        disk,
        ds,
        snapshot,
        nbd_addr,
        exports: Mutex::new((Instant::now(), Default::default())),
        _dir: dir,
    };
    let ex = issue_exports(&h)?;
    *h.exports.get_mut().expect("lock") = (Instant::now(), ex);

    // A VCD session (System administrator) and a task in the System org.
    let basic = format!("Basic {}", b64(format!("administrator@System:{PW}").as_bytes()));
    let accept = "application/*+xml;version=36.0";
    let r = req("POST", "/api/sessions", &[("authorization", &basic), ("accept", accept)], Bytes::new());
    let resp = h.rt.block_on(vtwin::api::vcd::handle(&h.state, &r)).0;
    let tok = resp.headers().get("x-vcloud-authorization").and_then(|v| v.to_str().ok()).map(str::to_string);
    let (st, body) = read(&h, resp);
    h.vcd_token = tok.ok_or_else(|| anyhow::anyhow!("VCD login failed: {st} {}", String::from_utf8_lossy(&body)))?;
    let body = String::from_utf8_lossy(&body).into_owned();
    // <Link ... href=".../api/org/<id>" ...> in the session document.
    h.vcd_org = body
        .split("/api/org/")
        .skip(1)
        .filter_map(|s| s.split('"').next())
        .find(|id| !id.is_empty() && !id.contains('/'))
        .map(str::to_string)
        .ok_or_else(|| anyhow::anyhow!("no org in the VCD session: {body}"))?;
    let task = r#"<Task xmlns="http://www.vmware.com/vcloud/v1.5" name="fuzz" operationName="fuzzOp" operation="Fuzzing" status="running" serviceNamespace="com.example.fuzz"><Progress>1</Progress></Task>"#;
    let path = format!("/api/tasksList/{}", h.vcd_org);
    let r = req(
        "POST",
        &path,
        &[
            ("x-vcloud-authorization", &h.vcd_token),
            ("accept", accept),
            ("content-type", "application/vnd.vmware.vcloud.task+xml"),
        ],
        task,
    );
    let (st, body) = read(&h, h.rt.block_on(vtwin::api::vcd::handle(&h.state, &r)).0);
    let body = String::from_utf8_lossy(&body).into_owned();
    h.vcd_task = body
        .split("/api/task/")
        .nth(1)
        .and_then(|s| s.split('"').next())
        .map(str::to_string)
        .ok_or_else(|| anyhow::anyhow!("VCD task not created: {st} {body}"))?;
    Ok(h)
}

fn b64(b: &[u8]) -> String {
    const A: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut s = String::new();
    for c in b.chunks(3) {
        let n = (c[0] as u32) << 16 | (*c.get(1).unwrap_or(&0) as u32) << 8 | *c.get(2).unwrap_or(&0) as u32;
        for i in 0..4 {
            if i <= c.len() {
                s.push(A[(n >> (18 - 6 * i) & 63) as usize] as char);
            } else {
                s.push('=');
            }
        }
    }
    s
}

fn ticket(h: &Harness, body: serde_json::Value) -> anyhow::Result<String> {
    let r = req(
        "POST",
        "/api/vtwin/nbd-tickets",
        &[("vmware-api-session-id", &h.token), ("content-type", "application/json")],
        body.to_string(),
    );
    let (st, b) = read(h, nbd::tickets(&h.state, &r));
    let v: serde_json::Value = serde_json::from_slice(&b)?;
    let uri = v["uri"].as_str().ok_or_else(|| anyhow::anyhow!("no ticket: {st} {v}"))?;
    Ok(uri.rsplit('/').next().unwrap_or("").to_string())
}

fn issue_exports(h: &Harness) -> anyhow::Result<[String; 3]> {
    Ok([
        ticket(h, serde_json::json!({"disk": h.disk, "datastore": h.ds, "write": true}))?,
        ticket(h, serde_json::json!({"disk": h.disk, "datastore": h.ds}))?,
        ticket(h, serde_json::json!({"disk": h.disk, "datastore": h.ds, "snapshot": h.snapshot}))?,
    ])
}

impl Harness {
    /// Current export names (tickets live 10 minutes: re-issued after 4).
    pub fn exports(&self) -> [String; 3] {
        let mut g = self.exports.lock().unwrap_or_else(|e| e.into_inner());
        if g.0.elapsed() > Duration::from_secs(240) {
            if let Ok(ex) = issue_exports(self) {
                *g = (Instant::now(), ex);
            }
        }
        g.1.clone()
    }

    /// Replace the placeholders in a fuzz input with the real names.
    pub fn substitute(&self, s: &str) -> String {
        if !s.contains('@') {
            return s.to_string();
        }
        s.replace("@SESSION@", &self.token)
            .replace("@VCDTOKEN@", &self.vcd_token)
            .replace("@ORG@", &self.vcd_org)
            .replace("@TASK@", &self.vcd_task)
            .replace("@DISK@", &self.disk)
            .replace("@DS@", &self.ds)
    }
}
