//! What an outsider can make the server hold: bodies read only with a
//! session, deadlines on connections (HTTP and NBD), connection caps, NBD
//! tickets bound to their session, /metrics behind a session, /folder
//! streaming and its path containment.
mod common;
use common::*;
use std::io::{ErrorKind, Read, Write};
use std::net::TcpStream;
use std::process::Command;
use std::time::{Duration, Instant};

const R: &str = "/sdk/vim25/9.1.0.0";

fn user_add(dir: &std::path::Path, name: &str, pw: &str, role: &str) {
    let out = Command::new(bin())
        .args(["user", "add", name, "--password", pw, "--role", role, "--data-dir"])
        .arg(dir)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
}

fn rss_kib(s: &Server) -> u64 {
    let st = std::fs::read_to_string(format!("/proc/{}/status", s.child.id())).unwrap();
    st.lines().find_map(|l| l.strip_prefix("VmRSS:")).unwrap().trim().trim_end_matches("kB").trim().parse().unwrap()
}

fn addr(s: &Server) -> String {
    s.base.strip_prefix("http://").unwrap().to_string()
}

fn connect(a: &str) -> TcpStream {
    let c = TcpStream::connect(a).unwrap();
    c.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    c
}

/// Read one HTTP response: status, head, body (by Content-Length).
fn read_response(c: &mut TcpStream) -> (u16, String, Vec<u8>) {
    let mut buf = vec![];
    let mut b = [0u8; 4096];
    let end = loop {
        if let Some(p) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break p + 4;
        }
        let n = c.read(&mut b).expect("read response");
        assert!(n > 0, "connection closed before a response: {}", String::from_utf8_lossy(&buf));
        buf.extend_from_slice(&b[..n]);
    };
    let head = String::from_utf8_lossy(&buf[..end]).to_string();
    let status: u16 = head.split(' ').nth(1).unwrap().parse().unwrap();
    let len: usize = head
        .lines()
        .find_map(|l| l.to_ascii_lowercase().strip_prefix("content-length:").map(|v| v.trim().parse().unwrap()))
        .unwrap_or(0);
    let mut body = buf[end..].to_vec();
    while body.len() < len {
        let n = c.read(&mut b).unwrap();
        assert!(n > 0);
        body.extend_from_slice(&b[..n]);
    }
    (status, head, body)
}

/// How long until the server closes `c` (None: still open after `max`).
fn closed_within(c: &mut TcpStream, max: Duration) -> Option<Duration> {
    let t = Instant::now();
    c.set_read_timeout(Some(Duration::from_millis(200))).unwrap();
    let mut b = [0u8; 4096];
    while t.elapsed() < max {
        match c.read(&mut b) {
            Ok(0) => return Some(t.elapsed()),
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock || e.kind() == std::io::ErrorKind::TimedOut => {}
            Err(_) => return Some(t.elapsed()),
        }
    }
    None
}

fn vapi_login(s: &Server, user: &str, pw: &str) -> String {
    use base64::Engine as _;
    let auth = base64::engine::general_purpose::STANDARD.encode(format!("{user}:{pw}"));
    let (st, b, _) = resp(ureq::post(&s.url("/api/session")).set("Authorization", &format!("Basic {auth}")).call());
    assert_eq!(st, 201, "{b}");
    json_value(&b).as_str().unwrap().to_string()
}

fn datastore(s: &Server, sid: &str) -> String {
    let (_, b, _) = s.json("GET", &format!("{R}/Folder/group-d1/childEntity"), None, Some(sid));
    let dc = json_value(&b)[0]["value"].as_str().unwrap().to_string();
    let (_, b, _) = s.json("GET", &format!("{R}/Datacenter/{dc}/datastore"), None, Some(sid));
    json_value(&b)[0]["value"].as_str().unwrap().to_string()
}

/// A 16 MiB first-class disk: (id, datastore moId).
fn create_disk(s: &Server, sid: &str) -> (String, String) {
    let ds = datastore(s, sid);
    let spec = serde_json::json!({"spec": {"_typeName": "VslmCreateSpec", "name": "limits", "capacityInMB": 16,
        "backingSpec": {"_typeName": "VslmCreateSpecDiskFileBackingSpec", "datastore": {"_typeName": "ManagedObjectReference", "type": "Datastore", "value": ds}, "provisioningType": "thin"}}});
    let (st, t) = s.call(sid, "VcenterVStorageObjectManager/VStorageObjectManager/CreateDisk_Task", spec);
    assert_eq!(st, 200, "{t}");
    let key = t["value"].as_str().unwrap().to_string();
    let t0 = Instant::now();
    loop {
        let (_, b, _) = s.json("GET", &format!("{R}/Task/{key}/info"), None, Some(sid));
        let info = json_value(&b);
        match info["state"].as_str() {
            Some("success") => return (info["result"]["config"]["id"]["id"].as_str().unwrap().to_string(), ds),
            Some("error") => panic!("CreateDisk_Task: {info}"),
            _ => {
                assert!(t0.elapsed() < Duration::from_secs(30));
                std::thread::sleep(Duration::from_millis(20));
            }
        }
    }
}

fn ticket(s: &Server, sid: &str, disk: &str, ds: &str, write: bool) -> (u16, String) {
    let body = serde_json::json!({"disk": disk, "datastore": ds, "write": write}).to_string();
    let (st, b, _) = s.json("POST", "/api/vtwin/nbd-tickets", Some(&body), Some(sid));
    if st != 201 {
        return (st, b);
    }
    (st, json_value(&b)["uri"].as_str().unwrap().to_string())
}

/// A minimal NBD client (fixed newstyle, OPT_GO, simple replies).
struct Nbd {
    c: TcpStream,
}

impl Nbd {
    fn greeting(a: &str) -> TcpStream {
        let mut c = connect(a);
        let mut g = [0u8; 18];
        c.read_exact(&mut g).unwrap();
        assert_eq!(&g[..8], b"NBDMAGIC");
        c
    }

    fn open(uri: &str) -> Result<Nbd, String> {
        let rest = uri.strip_prefix("nbd://").unwrap();
        let (a, name) = rest.split_once('/').unwrap();
        let mut c = Nbd::greeting(a);
        c.write_all(&3u32.to_be_bytes()).unwrap(); // fixed newstyle, no zeroes
        let mut data = (name.len() as u32).to_be_bytes().to_vec();
        data.extend_from_slice(name.as_bytes());
        data.extend_from_slice(&0u16.to_be_bytes());
        let mut m = 0x49484156454f5054u64.to_be_bytes().to_vec();
        m.extend_from_slice(&7u32.to_be_bytes());
        m.extend_from_slice(&(data.len() as u32).to_be_bytes());
        m.extend_from_slice(&data);
        c.write_all(&m).unwrap();
        loop {
            let mut h = [0u8; 20];
            c.read_exact(&mut h).map_err(|e| e.to_string())?;
            let kind = u32::from_be_bytes(h[12..16].try_into().unwrap());
            let len = u32::from_be_bytes(h[16..20].try_into().unwrap());
            let mut d = vec![0u8; len as usize];
            c.read_exact(&mut d).unwrap();
            match kind {
                1 => return Ok(Nbd { c }),
                3 => {}
                k => return Err(format!("option refused: {k:#x} {}", String::from_utf8_lossy(&d))),
            }
        }
    }

    /// READ 4 KiB at 0: Ok(errno) or Err when the connection is gone.
    fn read(&mut self, handle: u64) -> Result<u32, std::io::Error> {
        let mut q = 0x25609513u32.to_be_bytes().to_vec();
        q.extend_from_slice(&0u16.to_be_bytes());
        q.extend_from_slice(&0u16.to_be_bytes());
        q.extend_from_slice(&handle.to_be_bytes());
        q.extend_from_slice(&0u64.to_be_bytes());
        q.extend_from_slice(&4096u32.to_be_bytes());
        self.c.write_all(&q)?;
        let mut h = [0u8; 16];
        self.c.read_exact(&mut h)?;
        assert_eq!(u32::from_be_bytes(h[..4].try_into().unwrap()), 0x67446698);
        assert_eq!(u64::from_be_bytes(h[8..16].try_into().unwrap()), handle);
        let err = u32::from_be_bytes(h[4..8].try_into().unwrap());
        if err == 0 {
            let mut d = vec![0u8; 4096];
            self.c.read_exact(&mut d)?;
        }
        Ok(err)
    }
}

// ---- request bodies ------------------------------------------------------

#[test]
fn a_huge_upload_without_a_session_is_refused_unread() {
    let d = tempdir();
    let s = Server::start(d.path(), &[]);
    let before = rss_kib(&s);
    let mut c = connect(&addr(&s));
    let t = Instant::now();
    write!(
        c,
        "PUT /folder/big.bin?dcPath=DC0&dsName=LocalDS_0 HTTP/1.1\r\nHost: x\r\nContent-Length: {}\r\n\r\n",
        1u64 << 30
    )
    .unwrap();
    // The refusal may close the connection before these bytes are all sent.
    if let Err(e) = c.write_all(&vec![7u8; 64 << 10]) {
        assert!(matches!(e.kind(), ErrorKind::BrokenPipe | ErrorKind::ConnectionReset), "{e}");
    }
    let (st, _, _) = read_response(&mut c);
    assert!(st == 401 || st == 413, "{st}");
    assert!(t.elapsed() < Duration::from_secs(3), "{:?}", t.elapsed());
    // The server does not read the rest: sending it fails (or goes nowhere).
    let chunk = vec![7u8; 1 << 20];
    c.set_write_timeout(Some(Duration::from_secs(2))).unwrap();
    for _ in 0..256 {
        if c.write_all(&chunk).is_err() {
            break;
        }
    }
    assert!(closed_within(&mut c, Duration::from_secs(5)).is_some(), "the connection ends after the refusal");
    let after = rss_kib(&s);
    assert!(after < before + (64 << 10), "RSS {before} KiB → {after} KiB");
    assert!(!d.path().join("datastores/LocalDS_0/big.bin").exists());

    // With a session, beyond the upload limit: refused before reading too.
    let cookie = s.soap_login(ADMIN, PW);
    let mut c = connect(&addr(&s));
    write!(c, "PUT /folder/big.bin?dcPath=DC0&dsName=LocalDS_0 HTTP/1.1\r\nHost: x\r\nCookie: {cookie}\r\nContent-Length: {}\r\n\r\n", 5u64 << 30).unwrap();
    let (st, _, _) = read_response(&mut c);
    assert_eq!(st, 413);
}

#[test]
fn a_huge_content_length_without_a_session_gets_413_at_once() {
    let d = tempdir();
    let s = Server::start(d.path(), &[]);
    for (path, style) in [
        ("/sdk", "Fault"),
        ("/api/session", "error_type"),
        ("/sdk/vim25/9.1.0.0/SessionManager/SessionManager/Login", "_typeName"),
        ("/admin/faults", "larger"),
    ] {
        let mut c = connect(&addr(&s));
        let t = Instant::now();
        write!(
            c,
            "POST {path} HTTP/1.1\r\nHost: x\r\nContent-Type: text/xml\r\nContent-Length: {}\r\n\r\n",
            10u64 << 30
        )
        .unwrap();
        let (st, head, body) = read_response(&mut c);
        assert_eq!(st, 413, "{path}");
        assert!(t.elapsed() < Duration::from_secs(2));
        assert!(String::from_utf8_lossy(&body).contains(style), "{path}: {head}{}", String::from_utf8_lossy(&body));
    }
}

#[test]
fn an_unauthenticated_body_over_256_kib_is_refused() {
    let d = tempdir();
    let s = Server::start(d.path(), &[]);
    let body = envelope(&format!(
        r#"<RetrieveServiceContent xmlns="urn:vim25"><_this type="ServiceInstance">ServiceInstance</_this></RetrieveServiceContent>{}"#,
        " ".repeat(300 << 10)
    ));
    let (st, b, _) = s.soap(&body, None);
    assert_eq!(st, 413, "{b}");
    assert!(b.contains("Fault"), "{b}");
    // Chunked, no Content-Length: refused as it passes the limit.
    let mut c = connect(&addr(&s));
    write!(c, "POST /sdk HTTP/1.1\r\nHost: x\r\nContent-Type: text/xml\r\nTransfer-Encoding: chunked\r\n\r\n").unwrap();
    // The server answers and closes as soon as the limit is passed, so a write after that may meet a
    // closed connection (EPIPE, ECONNRESET): the answer is already on its way and is read below.
    let mut chunk = b"8000\r\n".to_vec();
    chunk.extend_from_slice(&[b' '; 0x8000]);
    chunk.extend_from_slice(b"\r\n");
    for _ in 0..10 {
        if let Err(e) = c.write_all(&chunk) {
            assert!(matches!(e.kind(), ErrorKind::BrokenPipe | ErrorKind::ConnectionReset), "{e}");
            break;
        }
    }
    let (st, _, _) = read_response(&mut c);
    assert_eq!(st, 413);
    // A small login still works, and with its session the same body is read.
    let cookie = s.soap_login(ADMIN, PW);
    let (st, b, _) = s.soap(&body, Some(&cookie));
    assert_eq!(st, 200, "{b}");
    assert!(b.contains("RetrieveServiceContentResponse"), "{b}");
}

// ---- connection deadlines and caps ---------------------------------------

#[test]
fn a_slowloris_request_head_is_cut_off() {
    let d = tempdir();
    let s = Server::start(d.path(), &["--http-header-timeout", "1"]);
    let mut c = connect(&addr(&s));
    c.write_all(b"GET /sdk/vimServiceVersions.xml HTTP/1.1\r\nHost: local").unwrap();
    let t = closed_within(&mut c, Duration::from_secs(6)).expect("closed");
    assert!(t >= Duration::from_millis(700) && t < Duration::from_secs(4), "{t:?}");
}

#[test]
fn an_idle_kept_alive_connection_is_closed() {
    let d = tempdir();
    let s = Server::start(d.path(), &["--http-idle-timeout", "2"]);
    let mut c = connect(&addr(&s));
    for _ in 0..2 {
        c.write_all(b"GET /sdk/vimServiceVersions.xml HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
        assert_eq!(read_response(&mut c).0, 200);
    }
    let t = closed_within(&mut c, Duration::from_secs(8)).expect("closed");
    assert!(t >= Duration::from_millis(1500) && t < Duration::from_secs(5), "{t:?}");
    // A long request is not idleness: a 3 s WaitForUpdatesEx on a 2 s idle timeout is answered.
    let sid = s.json_login(ADMIN, PW);
    let (st, pc) = s.call(&sid, "PropertyCollector/propertyCollector/CreatePropertyCollector", serde_json::json!({}));
    assert_eq!(st, 200, "{pc}");
    let pc = pc["value"].as_str().unwrap().to_string();
    let spec = r#"{"spec":{"_typeName":"PropertyFilterSpec","propSet":[{"_typeName":"PropertySpec","type":"Folder","pathSet":["name"]}],"objectSet":[{"_typeName":"ObjectSpec","obj":{"_typeName":"ManagedObjectReference","type":"Folder","value":"group-d1"}}]},"partialUpdates":false}"#;
    let (st, b, _) = s.json("POST", &format!("{R}/PropertyCollector/{pc}/CreateFilter"), Some(spec), Some(&sid));
    assert_eq!(st, 200, "{b}");
    let (_, first) = s.call(
        &sid,
        &format!("PropertyCollector/{pc}/WaitForUpdatesEx"),
        serde_json::json!({"options": {"_typeName": "WaitOptions", "maxWaitSeconds": 0}}),
    );
    let version = first["version"].as_str().unwrap().to_string();
    let t = Instant::now();
    let (st, _) = s.call(
        &sid,
        &format!("PropertyCollector/{pc}/WaitForUpdatesEx"),
        serde_json::json!({"version": version, "options": {"_typeName": "WaitOptions", "maxWaitSeconds": 3}}),
    );
    assert!(st == 200 || st == 204, "{st}");
    assert!(t.elapsed() >= Duration::from_millis(2500), "{:?}", t.elapsed());
}

fn raise_nofile() {
    use rustix::process::{getrlimit, setrlimit, Resource, Rlimit};
    let r = getrlimit(Resource::Nofile);
    if r.current < r.maximum {
        let _ = setrlimit(Resource::Nofile, Rlimit { current: r.maximum, maximum: r.maximum });
    }
}

#[test]
fn two_thousand_idle_connections_are_closed_and_memory_returns() {
    raise_nofile();
    let d = tempdir();
    let s = Server::start(d.path(), &["--http-header-timeout", "2"]);
    let a = addr(&s);
    // Warm up (one request of each kind the baseline should include).
    let mut c = connect(&a);
    c.write_all(b"GET /sdk/vimServiceVersions.xml HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").unwrap();
    assert_eq!(read_response(&mut c).0, 200);
    drop(c);
    std::thread::sleep(Duration::from_millis(300));
    let base = rss_kib(&s);
    let t = Instant::now();
    let mut conns: Vec<TcpStream> = (0..2000).map(|_| TcpStream::connect(&a).unwrap()).collect();
    std::thread::sleep(Duration::from_millis(500));
    let held = rss_kib(&s);
    // Every one is closed by the server once the header deadline passes.
    for c in &mut conns {
        let left = Duration::from_secs(10).saturating_sub(t.elapsed());
        assert!(closed_within(c, left.max(Duration::from_millis(1))).is_some(), "open after {:?}", t.elapsed());
    }
    assert!(t.elapsed() >= Duration::from_millis(1500), "{:?}", t.elapsed());
    drop(conns);
    // Freed memory goes back to the system within a few seconds.
    let t = Instant::now();
    let mut after = rss_kib(&s);
    while after >= base + (32 << 10) && t.elapsed() < Duration::from_secs(15) {
        std::thread::sleep(Duration::from_millis(250));
        after = rss_kib(&s);
    }
    eprintln!("RSS: baseline {base} KiB, 2000 open {held} KiB, after {after} KiB ({:?})", t.elapsed());
    assert!(after < base + (32 << 10), "RSS baseline {base} KiB, after {after} KiB");
    // Still serving.
    let mut c = connect(&a);
    c.write_all(b"GET /sdk/vimServiceVersions.xml HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
    assert_eq!(read_response(&mut c).0, 200);
}

#[test]
fn connections_beyond_the_cap_are_closed_at_once() {
    raise_nofile();
    let d = tempdir();
    let s = Server::start(d.path(), &["--max-connections", "50"]);
    let a = addr(&s);
    let held: Vec<TcpStream> = (0..50).map(|_| TcpStream::connect(&a).unwrap()).collect();
    std::thread::sleep(Duration::from_millis(300));
    let mut extra = TcpStream::connect(&a).unwrap();
    assert!(closed_within(&mut extra, Duration::from_secs(2)).is_some(), "the 51st connection is closed");
    drop(held);
    std::thread::sleep(Duration::from_millis(300));
    let mut c = connect(&a);
    c.write_all(b"GET /sdk/vimServiceVersions.xml HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
    assert_eq!(read_response(&mut c).0, 200);
}

// ---- NBD -----------------------------------------------------------------

#[test]
fn nbd_negotiation_has_a_deadline_and_idle_connections_end() {
    let d = tempdir();
    let s = Server::start(d.path(), &["--nbd-handshake-timeout", "1", "--nbd-idle-timeout", "2"]);
    let sid = s.json_login(ADMIN, PW);
    let (disk, ds) = create_disk(&s, &sid);
    let (st, uri) = ticket(&s, &sid, &disk, &ds, false);
    assert_eq!(st, 201, "{uri}");
    let a = uri.strip_prefix("nbd://").unwrap().split_once('/').unwrap().0.to_string();
    // Greeting read, then nothing sent.
    let mut c = Nbd::greeting(&a);
    let t = closed_within(&mut c, Duration::from_secs(6)).expect("closed");
    assert!(t < Duration::from_secs(3), "{t:?}");
    // Negotiated, then idle past --nbd-idle-timeout.
    let mut n = Nbd::open(&uri).unwrap();
    assert_eq!(n.read(1).unwrap(), 0);
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(n.read(2).unwrap(), 0, "a connection in use stays");
    let t = closed_within(&mut n.c, Duration::from_secs(8)).expect("closed");
    assert!(t >= Duration::from_millis(1500) && t < Duration::from_secs(5), "{t:?}");
}

#[test]
fn an_nbd_connection_ends_with_the_session_that_made_its_ticket() {
    let d = tempdir();
    let s = Server::start(d.path(), &[]);
    let admin = s.json_login(ADMIN, PW);
    let (disk, ds) = create_disk(&s, &admin);
    // vAPI session, logged out with DELETE /api/session.
    let sid = vapi_login(&s, ADMIN, PW);
    let (st, uri) = ticket(&s, &sid, &disk, &ds, true);
    assert_eq!(st, 201, "{uri}");
    let mut n = Nbd::open(&uri).unwrap();
    for h in 0..5 {
        assert_eq!(n.read(h).unwrap(), 0);
    }
    let (st, b, _) = s.json("DELETE", "/api/session", None, Some(&sid));
    assert!(st == 200 || st == 204, "{st} {b}");
    let gone = match n.read(9) {
        Err(_) => true,
        Ok(e) => e != 0 || n.read(10).is_err(),
    };
    assert!(gone, "the connection outlived its session");
    // A new connection with the same ticket is refused at negotiation.
    assert!(Nbd::open(&uri).is_err());

    // SOAP session, logged out with Logout; the connection idle meanwhile.
    let cookie = s.soap_login(ADMIN, PW);
    let token = cookie.split_once('=').unwrap().1.trim_matches('"').to_string();
    let (st, uri) = ticket(&s, &token, &disk, &ds, false);
    assert_eq!(st, 201, "{uri}");
    let mut n = Nbd::open(&uri).unwrap();
    assert_eq!(n.read(1).unwrap(), 0);
    let (st, b, _) = s.soap(
        &envelope(r#"<Logout xmlns="urn:vim25"><_this type="SessionManager">SessionManager</_this></Logout>"#),
        Some(&cookie),
    );
    assert_eq!(st, 200, "{b}");
    let t = closed_within(&mut n.c, Duration::from_secs(5)).expect("closed after Logout");
    assert!(t < Duration::from_secs(3), "{t:?}");
}

#[test]
fn nbd_tickets_need_datastore_privileges() {
    let d = tempdir();
    let s = Server::start(d.path(), &[]);
    let admin = s.json_login(ADMIN, PW);
    let (disk, ds) = create_disk(&s, &admin);
    user_add(d.path(), "ro@vsphere.local", "Ro-Passw0rd!", "ReadOnly");
    user_add(d.path(), "na@vsphere.local", "Na-Passw0rd!", "NoAccess");
    let ro = s.json_login("ro@vsphere.local", "Ro-Passw0rd!");
    let na = s.json_login("na@vsphere.local", "Na-Passw0rd!");
    assert_eq!(ticket(&s, &ro, &disk, &ds, true).0, 403);
    assert_eq!(ticket(&s, &na, &disk, &ds, false).0, 403);
    assert_eq!(ticket(&s, &na, &disk, &ds, true).0, 403);
    // NoAccess learns nothing about which disks exist.
    assert_eq!(ticket(&s, &na, "no-such-disk", &ds, false).0, 403);
    assert_eq!(ticket(&s, &admin, &disk, &ds, true).0, 201);
    assert_eq!(ticket(&s, &admin, &disk, &ds, false).0, 201);
    let (st, _, _) =
        s.json("POST", "/api/vtwin/nbd-tickets", Some(&format!(r#"{{"disk":"{disk}","datastore":"{ds}"}}"#)), None);
    assert_eq!(st, 401);
}

// ---- /metrics -------------------------------------------------------------

#[test]
fn metrics_need_a_session_and_labels_stay_bounded() {
    let d = tempdir();
    let s = Server::start(d.path(), &[]);
    assert_eq!(resp(ureq::get(&s.url("/metrics")).call()).0, 401);
    user_add(d.path(), "na@vsphere.local", "Na-Passw0rd!", "NoAccess");
    let na = s.json_login("na@vsphere.local", "Na-Passw0rd!");
    assert_eq!(resp(ureq::get(&s.url("/metrics")).set("vmware-api-session-id", &na).call()).0, 403);
    let sid = s.json_login(ADMIN, PW);
    // Method names a client makes up (quotes, newlines, backslashes).
    for p in ["/sdk/vim25/9.1.0.0/Folder/group-d1/Evil%22Name%0Ax", "/sdk/vim25/9.1.0.0/Folder/group-d1/Evil%5C"] {
        let _ = s.json("POST", p, Some("{}"), Some(&sid));
    }
    let _ =
        s.soap(&envelope(r#"<EvilMethod xmlns="urn:vim25"><_this type="Folder">group-d1</_this></EvilMethod>"#), None);
    let (st, m, _) = resp(ureq::get(&s.url("/metrics")).set("vmware-api-session-id", &sid).call());
    assert_eq!(st, 200);
    assert!(!m.contains("Evil"), "{m}");
    assert!(m.contains(r#"vtwin_requests_total{api="vijson",method="other"} 2"#), "{m}");
    assert!(m.contains(r#"vtwin_requests_total{api="vijson",method="Login"} 2"#), "{m}");
    for line in m.lines().filter(|l| !l.starts_with('#')) {
        let labels = line.split_once('{').unwrap().1.rsplit_once('}').unwrap().0;
        for kv in labels.split(',') {
            let v = kv.split_once('=').unwrap().1;
            assert!(v.starts_with('"') && v.ends_with('"') && !v[1..v.len() - 1].contains('"'), "{line}");
        }
    }
}

#[test]
fn metrics_listen_serves_without_a_session_on_loopback() {
    let d = tempdir();
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let s = Server::start(d.path(), &["--metrics-listen", &format!("127.0.0.1:{port}")]);
    s.json_login(ADMIN, PW);
    let m = ureq::get(&format!("http://127.0.0.1:{port}/metrics")).call().unwrap().into_string().unwrap();
    assert!(m.contains(r#"vtwin_requests_total{api="vijson",method="Login"} 1"#), "{m}");
    assert_eq!(resp(ureq::get(&s.url("/metrics")).call()).0, 401);
    // Not on another address.
    let out = Command::new(bin())
        .args([
            "serve",
            "--plain-http",
            "--listen",
            "127.0.0.1:0",
            "--nbd-listen",
            "127.0.0.1:0",
            "--admin-password",
            PW,
            "--metrics-listen",
            "0.0.0.0:0",
            "--data-dir",
        ])
        .arg(tempdir().path())
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("loopback"), "{}", String::from_utf8_lossy(&out.stderr));
}

// ---- /folder ----------------------------------------------------------------

#[test]
fn folder_streams_uploads_and_ranged_downloads() {
    let d = tempdir();
    let s = Server::start(d.path(), &[]);
    let cookie = s.soap_login(ADMIN, PW);
    let url = s.url("/folder/big/data.bin?dcPath=DC0&dsName=LocalDS_0");
    let data: Vec<u8> = (0..20u32 << 20).map(|i| (i.wrapping_mul(2654435761) >> 13) as u8).collect();
    let before = rss_kib(&s);
    let (st, b, _) = resp(ureq::put(&url).set("Cookie", &cookie).send_bytes(&data));
    assert_eq!(st, 201, "{b}");
    assert_eq!(std::fs::read(d.path().join("datastores/LocalDS_0/big/data.bin")).unwrap(), data);
    let r = ureq::get(&url).set("Cookie", &cookie).call().unwrap();
    assert_eq!(r.header("content-length"), Some(data.len().to_string().as_str()));
    let mut got = vec![];
    r.into_reader().read_to_end(&mut got).unwrap();
    assert!(got == data, "GET returns what PUT stored");
    eprintln!("RSS {before} KiB → {} KiB around a 20 MiB round trip", rss_kib(&s));
    // Ranges.
    for (range, lo, hi) in [
        ("bytes=1000-1999", 1000usize, 2000usize),
        ("bytes=-10", data.len() - 10, data.len()),
        ("bytes=20971000-", 20971000, data.len()),
    ] {
        let r = ureq::get(&url).set("Cookie", &cookie).set("Range", range).call().unwrap();
        assert_eq!(r.status(), 206, "{range}");
        assert_eq!(r.header("content-range").unwrap(), format!("bytes {lo}-{}/{}", hi - 1, data.len()));
        let mut got = vec![];
        r.into_reader().read_to_end(&mut got).unwrap();
        assert!(got == data[lo..hi], "{range}");
    }
    let (st, _, _) = resp(ureq::get(&url).set("Cookie", &cookie).set("Range", "bytes=99999999-").call());
    assert_eq!(st, 416);
    // HEAD: the length, no body.
    let r = ureq::head(&url).set("Cookie", &cookie).call().unwrap();
    assert_eq!(r.header("content-length"), Some(data.len().to_string().as_str()));
    // Overwrite answers 200.
    assert_eq!(resp(ureq::put(&url).set("Cookie", &cookie).send_bytes(b"small")).0, 200);
    assert_eq!(std::fs::read(d.path().join("datastores/LocalDS_0/big/data.bin")).unwrap(), b"small");
}

#[test]
fn an_interrupted_upload_leaves_no_file() {
    let d = tempdir();
    let s = Server::start(d.path(), &[]);
    let cookie = s.soap_login(ADMIN, PW);
    let mut c = connect(&addr(&s));
    write!(c, "PUT /folder/part/cut.bin?dcPath=DC0&dsName=LocalDS_0 HTTP/1.1\r\nHost: x\r\nCookie: {cookie}\r\nContent-Length: {}\r\n\r\n", 10 << 20).unwrap();
    c.write_all(&vec![1u8; 1 << 20]).unwrap();
    std::thread::sleep(Duration::from_millis(300));
    drop(c);
    std::thread::sleep(Duration::from_millis(500));
    let dir = d.path().join("datastores/LocalDS_0/part");
    let left: Vec<_> =
        std::fs::read_dir(&dir).map(|r| r.flatten().map(|e| e.file_name()).collect()).unwrap_or_default();
    assert!(left.is_empty(), "{left:?}");
}

#[test]
fn folder_refuses_symlinks_out_of_the_datastore() {
    let d = tempdir();
    let s = Server::start(d.path(), &[]);
    let cookie = s.soap_login(ADMIN, PW);
    let root = d.path().join("datastores/LocalDS_0");
    std::os::unix::fs::symlink("/etc", root.join("etc-link")).unwrap();
    std::os::unix::fs::symlink("/etc/hostname", root.join("host-link")).unwrap();
    let outside = tempdir();
    std::fs::write(outside.path().join("victim"), b"keep").unwrap();
    std::os::unix::fs::symlink(outside.path().join("victim"), root.join("victim-link")).unwrap();
    let u = |p: &str| s.url(&format!("/folder/{p}?dcPath=DC0&dsName=LocalDS_0"));
    for p in ["etc-link/passwd", "host-link", "etc-link"] {
        let (st, b, _) = resp(ureq::get(&u(p)).set("Cookie", &cookie).call());
        assert_eq!(st, 403, "GET {p}: {b}");
    }
    // PUT through a symlinked directory, or onto a symlink: refused, nothing written.
    let (st, _, _) = resp(ureq::put(&u("etc-link/vtwin-test")).set("Cookie", &cookie).send_bytes(b"x"));
    assert_eq!(st, 403);
    let (st, _, _) = resp(ureq::put(&u("etc-link/sub/vtwin-test")).set("Cookie", &cookie).send_bytes(b"x"));
    assert_eq!(st, 403);
    assert!(!std::path::Path::new("/etc/sub").exists());
    let (st, _, _) = resp(ureq::put(&u("victim-link")).set("Cookie", &cookie).send_bytes(b"overwritten"));
    assert_eq!(st, 403);
    assert_eq!(std::fs::read(outside.path().join("victim")).unwrap(), b"keep");
    // DELETE removes the link itself, never its target.
    assert_eq!(resp(ureq::delete(&u("victim-link")).set("Cookie", &cookie).call()).0, 204);
    assert_eq!(std::fs::read(outside.path().join("victim")).unwrap(), b"keep");
    assert!(std::fs::symlink_metadata(root.join("victim-link")).is_err());
    // Without a session nothing is checked further.
    assert_eq!(resp(ureq::get(&u("etc-link/passwd")).call()).0, 401);
}
