//! `vtwin-bench`: SOAP Login + RetrievePropertiesEx + Logout requests/s at 1
//! and 64 concurrent clients against vtwin and, in the same run, against
//! vcsim (govmomi 0.24.2) as the peer; and the RSS of each with 10,000 hosts
//! and datastores in the inventory. Prints figures and ratios.
//!
//! Then the task engine's figures (see `tasks.rs`), and `--only nodes`:
//! task throughput and p99 wake-up latency on one node on SQLite, one node
//! on PostgreSQL and two nodes on PostgreSQL (`--database URL`, else
//! `VTWIN_TEST_POSTGRES`; each configuration gets a fresh schema).
//!
//! Usage: vtwin-bench [--seconds N] [--inventory N] [--peer-inventory N] [--vtwin PATH] [--vcsim PATH]
//!                    [--only soap|tasks|disks|vmfiles|cns|vcd|nodes] [--tasks-kept N] [--vms N] [--volumes N]
//!                    [--database postgres://...]
mod cns;
mod disks;
mod tasks;
mod vcd;
mod vmfiles;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use std::process::Stdio;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::io::{AsyncBufReadExt, BufReader};

type Http = Client<hyper_util::client::legacy::connect::HttpConnector, Full<Bytes>>;

const PW: &str = "Bench-Passw0rd!";

/// Where and as whom the SOAP loop talks.
#[derive(Clone)]
struct Endpoint {
    name: &'static str,
    sdk: String,
    user: String,
    pw: String,
}

struct Target {
    child: tokio::process::Child,
    ep: Endpoint,
}

impl Drop for Target {
    fn drop(&mut self) {
        let _ = self.child.start_kill();
    }
}

async fn spawn_until(
    mut cmd: tokio::process::Command,
    prefix: &str,
) -> anyhow::Result<(tokio::process::Child, String)> {
    let mut child = cmd.stdout(Stdio::piped()).stderr(Stdio::null()).kill_on_drop(true).spawn()?;
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    loop {
        let line = tokio::time::timeout(Duration::from_secs(600), lines.next_line()).await??;
        let Some(line) = line else { anyhow::bail!("{prefix}: process exited before listening") };
        if let Some(rest) = line.strip_prefix(prefix) {
            tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
            return Ok((child, rest.trim().to_string()));
        }
    }
}

async fn start_vtwin(bin: &str, dir: &std::path::Path, hosts: usize, datastores: usize) -> anyhow::Result<Target> {
    start_vtwin_with(bin, dir, hosts, datastores, &[]).await
}

async fn start_vtwin_with(
    bin: &str,
    dir: &std::path::Path,
    hosts: usize,
    datastores: usize,
    extra: &[&str],
) -> anyhow::Result<Target> {
    let _ = std::fs::remove_dir_all(dir);
    let mut cmd = tokio::process::Command::new(bin);
    cmd.args([
        "serve",
        "--plain-http",
        "--listen",
        "127.0.0.1:0",
        "--nbd-listen",
        "127.0.0.1:0",
        "--admin-password",
        PW,
    ])
    .args(extra)
    .args(["--hosts", &hosts.to_string(), "--datastores", &datastores.to_string()])
    .arg("--data-dir")
    .arg(dir)
    .env("RUST_LOG", "warn");
    let (child, url) = spawn_until(cmd, "vtwin listening on ").await?;
    Ok(Target {
        child,
        ep: Endpoint {
            name: "vtwin",
            sdk: format!("{url}/sdk"),
            user: "administrator@vsphere.local".into(),
            pw: PW.into(),
        },
    })
}

async fn start_vcsim(bin: &str, inventory: Option<(usize, usize)>) -> anyhow::Result<Target> {
    let mut cmd = tokio::process::Command::new(bin);
    if let Some((h, d)) = inventory {
        cmd.args([h.to_string(), d.to_string()]);
    }
    let (child, url) = spawn_until(cmd, "vcsim listening on ").await?;
    // http://user:pass@127.0.0.1:PORT/sdk
    let rest = url.strip_prefix("http://").unwrap_or(&url);
    let (auth, hostpath) = rest.split_once('@').unwrap_or(("user:pass", rest));
    let (user, pw) = auth.split_once(':').unwrap_or(("user", "pass"));
    let host = hostpath.split('/').next().unwrap_or(hostpath);
    Ok(Target {
        child,
        ep: Endpoint { name: "vcsim", sdk: format!("http://{host}/sdk"), user: user.into(), pw: pw.into() },
    })
}

fn envelope(body: &str) -> String {
    format!(
        r#"<?xml version="1.0" encoding="UTF-8"?><soapenv:Envelope xmlns:soapenv="http://schemas.xmlsoap.org/soap/envelope/" xmlns:xsd="http://www.w3.org/2001/XMLSchema" xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance"><soapenv:Body>{body}</soapenv:Body></soapenv:Envelope>"#
    )
}

const RETRIEVE: &str = r#"<RetrievePropertiesEx xmlns="urn:vim25"><_this type="PropertyCollector">propertyCollector</_this><specSet><propSet><type>Datastore</type><pathSet>summary</pathSet></propSet><objectSet><obj type="Folder">group-d1</obj><skip>true</skip><selectSet xsi:type="TraversalSpec"><name>f</name><type>Folder</type><path>childEntity</path><skip>false</skip><selectSet><name>f</name></selectSet><selectSet><name>dc</name></selectSet></selectSet><selectSet xsi:type="TraversalSpec"><name>dc</name><type>Datacenter</type><path>datastoreFolder</path><skip>false</skip><selectSet><name>f</name></selectSet></selectSet></objectSet></specSet><options></options></RetrievePropertiesEx>"#;

async fn post(
    http: &Http,
    url: &str,
    body: String,
    cookie: Option<&str>,
) -> anyhow::Result<(u16, Option<String>, Bytes)> {
    let mut b = hyper::Request::post(url)
        .header("Content-Type", "text/xml; charset=UTF-8")
        .header("SOAPAction", "\"urn:vim25/8.0.3.0\"");
    if let Some(c) = cookie {
        b = b.header("Cookie", c);
    }
    let resp = http.request(b.body(Full::new(Bytes::from(body)))?).await?;
    let status = resp.status().as_u16();
    let cookie = resp
        .headers()
        .get("set-cookie")
        .and_then(|v| v.to_str().ok())
        .map(|s| s.split(';').next().unwrap_or("").to_string());
    let body = resp.into_body().collect().await?.to_bytes();
    Ok((status, cookie, body))
}

/// One iteration: Login, RetrievePropertiesEx, Logout. Returns the number of
/// datastores seen.
async fn iteration(http: &Http, t: &Endpoint) -> anyhow::Result<usize> {
    let login = envelope(&format!(
        r#"<Login xmlns="urn:vim25"><_this type="SessionManager">SessionManager</_this><userName>{}</userName><password>{}</password></Login>"#,
        t.user, t.pw
    ));
    let (st, cookie, body) = post(http, &t.sdk, login, None).await?;
    anyhow::ensure!(st == 200, "{}: Login {st}: {}", t.name, String::from_utf8_lossy(&body));
    let cookie = cookie.ok_or_else(|| anyhow::anyhow!("{}: no cookie", t.name))?;
    let (st, _, body) = post(http, &t.sdk, envelope(RETRIEVE), Some(&cookie)).await?;
    anyhow::ensure!(st == 200, "{}: RetrievePropertiesEx {st}: {}", t.name, String::from_utf8_lossy(&body));
    let n = count(&body, b"<obj type=\"Datastore\"");
    let (st, _, body) = post(
        http,
        &t.sdk,
        envelope(r#"<Logout xmlns="urn:vim25"><_this type="SessionManager">SessionManager</_this></Logout>"#),
        Some(&cookie),
    )
    .await?;
    anyhow::ensure!(st == 200, "{}: Logout {st}: {}", t.name, String::from_utf8_lossy(&body));
    Ok(n)
}

fn count(hay: &[u8], needle: &[u8]) -> usize {
    hay.windows(needle.len()).filter(|w| *w == needle).count()
}

async fn throughput(t: &Endpoint, clients: usize, secs: u64) -> anyhow::Result<f64> {
    let http: Http = Client::builder(TokioExecutor::new()).pool_max_idle_per_host(256).build_http();
    // Warm up (and check the loop works) before measuring.
    let n = iteration(&http, t).await?;
    anyhow::ensure!(n >= 1, "{}: no datastore in the reply", t.name);
    let stop = Arc::new(AtomicBool::new(false));
    let done = Arc::new(AtomicU64::new(0));
    let mut tasks = vec![];
    let start = Instant::now();
    for _ in 0..clients {
        let (http, stop, done) = (http.clone(), stop.clone(), done.clone());
        let t = t.clone();
        tasks.push(tokio::spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                iteration(&http, &t).await?;
                done.fetch_add(3, Ordering::Relaxed);
            }
            anyhow::Ok(())
        }));
    }
    tokio::time::sleep(Duration::from_secs(secs)).await;
    stop.store(true, Ordering::Relaxed);
    for task in tasks {
        task.await??;
    }
    Ok(done.load(Ordering::Relaxed) as f64 / start.elapsed().as_secs_f64())
}

fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|v| v.parse().ok())
        })
        .unwrap_or(0)
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let arg = |name: &str| args.iter().position(|a| a == name).and_then(|i| args.get(i + 1)).cloned();
    let secs: u64 = arg("--seconds").and_then(|s| s.parse().ok()).unwrap_or(5);
    let inventory: usize = arg("--inventory").and_then(|s| s.parse().ok()).unwrap_or(10_000);
    let vtwin = arg("--vtwin").unwrap_or_else(|| "target/release/vtwin".into());
    let vcsim = arg("--vcsim").unwrap_or_else(|| "target/bench/vcsim-peer".into());
    let tmp = std::env::temp_dir().join(format!("vtwin-bench-{}", std::process::id()));

    // Load an already running vtwin (for profiling): --load http://host:port clients
    if let Some(base) = arg("--load") {
        let clients = args.last().and_then(|s| s.parse().ok()).unwrap_or(64);
        let ep = Endpoint {
            name: "vtwin",
            sdk: format!("{base}/sdk"),
            user: "administrator@vsphere.local".into(),
            pw: PW.into(),
        };
        println!("{:.0} req/s", throughput(&ep, clients, secs).await?);
        return Ok(());
    }
    let only = arg("--only");
    if only.is_none() || only.as_deref() == Some("soap") {
        soap_figures(&args, secs, inventory, &vtwin, &vcsim, &tmp).await?;
    }
    if only.is_none() || only.as_deref() == Some("disks") {
        let v = start_vtwin(&vtwin, &tmp.join("disks"), 1, 1).await?;
        let http: Http = Client::builder(TokioExecutor::new()).build_http();
        let base = v.ep.sdk.trim_end_matches("/sdk").to_string();
        let sid = tasks::vapi_session(&http, &base, &v.ep.user, &v.ep.pw).await?;
        disks::figures(&http, &base, &sid, &tmp.join("disks")).await?;
        drop(v);
    }
    if only.is_none() || only.as_deref() == Some("vmfiles") {
        use base64::Engine as _;
        let v = start_vtwin(&vtwin, &tmp.join("vmfiles"), 1, 1).await?;
        let http: Http = Client::builder(TokioExecutor::new()).build_http();
        let base = v.ep.sdk.trim_end_matches("/sdk").to_string();
        let sid = tasks::vapi_session(&http, &base, &v.ep.user, &v.ep.pw).await?;
        let basic =
            format!("Basic {}", base64::engine::general_purpose::STANDARD.encode(format!("{}:{}", v.ep.user, v.ep.pw)));
        let vms: usize = arg("--vms").and_then(|s| s.parse().ok()).unwrap_or(10_000);
        vmfiles::figures(&http, &base, &sid, &basic, vms).await?;
        drop(v);
    }
    if only.is_none() || only.as_deref() == Some("cns") {
        let volumes: u64 = arg("--volumes").and_then(|s| s.parse().ok()).unwrap_or(100_000);
        cns_figures(secs.max(10), volumes, &vtwin, &vcsim, &tmp).await?;
    }
    if only.is_none() || only.as_deref() == Some("vcd") {
        use base64::Engine as _;
        let port = std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
        let v = start_vtwin_with(
            &vtwin,
            &tmp.join("vcd"),
            1,
            1,
            &["--vcd-listen", &format!("127.0.0.1:{port}"), "--task-retention-count", "1000000"],
        )
        .await?;
        let http: Http = Client::builder(TokioExecutor::new()).pool_max_idle_per_host(256).build_http();
        let base = format!("http://127.0.0.1:{port}");
        let basic =
            format!("Basic {}", base64::engine::general_purpose::STANDARD.encode(format!("administrator@System:{PW}")));
        let (token, tl) = vcd::login(&http, &base, &basic).await?;
        println!("\n# vCloud Director external tasks: POST (running) + PUT (success), XML (vtwin only: vcsim has no VCD API)");
        for clients in [1usize, 64] {
            let (rate, mut lat) = vcd::throughput(&http, &token, &tl, clients, secs).await?;
            let (p50, p99) = (tasks::percentile(&mut lat, 0.5), tasks::percentile(&mut lat, 0.99));
            println!("{clients:>2} clients: {rate:>7.0} tasks/s posted and completed ({:.0} requests/s), post+complete p50 {p50:.2} ms, p99 {p99:.2} ms", rate * 2.0);
        }
        drop(v);
    }
    if only.is_none() || only.as_deref() == Some("tasks") {
        let kept: u64 = arg("--tasks-kept").and_then(|s| s.parse().ok()).unwrap_or(100_000);
        task_figures(secs, kept, &vtwin, &tmp).await?;
    }
    if only.is_none() || only.as_deref() == Some("nodes") {
        let db = arg("--database").or_else(|| std::env::var("VTWIN_TEST_POSTGRES").ok());
        match db {
            Some(db) => node_figures(secs, &db, &vtwin, &tmp).await?,
            None => println!("\n# Nodes: skipped (give --database postgres://... or VTWIN_TEST_POSTGRES)"),
        }
    }
    let _ = std::fs::remove_dir_all(&tmp);
    Ok(())
}

/// Task throughput (64 clients) and wake-up latency on one node on SQLite,
/// one on PostgreSQL, and two on PostgreSQL (clients on both; the waiter
/// on the node that did not make the change).
async fn node_figures(secs: u64, db: &str, vtwin: &str, tmp: &std::path::Path) -> anyhow::Result<()> {
    let http: Http = Client::builder(TokioExecutor::new()).pool_max_idle_per_host(256).build_http();
    println!("\n# Task engine on one and several nodes: extension tasks created+run+completed (vAPI), SetTaskState -> WaitForUpdatesEx wake-up");
    println!(
        "{:<44} {:>10} {:>10} {:>10} {:>10} {:>8}",
        "configuration", "tasks/s@1", "tasks/s@64", "wake p50", "wake p99", "vs SQLite"
    );
    let mut base_rate = None;
    for (n, (label, nodes, pg)) in [
        ("one node, SQLite", 1, false),
        ("one node, PostgreSQL", 1, true),
        ("two nodes, PostgreSQL (wait on the other)", 2, true),
    ]
    .into_iter()
    .enumerate()
    {
        let dir = tmp.join(format!("nodes-{n}"));
        let _ = std::fs::remove_dir_all(&dir);
        let url = format!("{db}{}schema=bench_{}_{n}", if db.contains('?') { '&' } else { '?' }, std::process::id());
        let mut targets = vec![];
        for _ in 0..nodes {
            let mut extra = vec!["--task-retention-count", "1000"];
            if pg {
                extra.extend(["--database", url.as_str()]);
            }
            // The second node shares the first one's data directory.
            let mut cmd = tokio::process::Command::new(vtwin);
            cmd.args([
                "serve",
                "--plain-http",
                "--listen",
                "127.0.0.1:0",
                "--nbd-listen",
                "127.0.0.1:0",
                "--admin-password",
                PW,
            ])
            .args(&extra)
            .arg("--data-dir")
            .arg(&dir)
            .env("RUST_LOG", "warn");
            let (child, u) = spawn_until(cmd, "vtwin listening on ").await?;
            targets.push(Target {
                child,
                ep: Endpoint {
                    name: "vtwin",
                    sdk: format!("{u}/sdk"),
                    user: "administrator@vsphere.local".into(),
                    pw: PW.into(),
                },
            });
        }
        let bases: Vec<String> = targets.iter().map(|t| t.ep.sdk.trim_end_matches("/sdk").to_string()).collect();
        let sid = tasks::vapi_session(&http, &bases[0], "administrator@vsphere.local", PW).await?;
        let r1 = tasks::throughput_on(&http, &bases, &sid, 1, secs).await?;
        let r64 = tasks::throughput_on(&http, &bases, &sid, 64, secs).await?;
        let mut lat = tasks::wake_latency_on(&http, &bases[0], bases.last().expect("a node"), &sid, 200).await?;
        let (p50, p99) = (tasks::percentile(&mut lat, 0.5), tasks::percentile(&mut lat, 0.99));
        let ratio = base_rate.map_or_else(|| "1.00x".into(), |b: f64| format!("{:.2}x", r64 / b));
        base_rate.get_or_insert(r64);
        println!("{label:<44} {r1:>10.0} {r64:>10.0} {p50:>8.2}ms {p99:>8.2}ms {ratio:>8}");
        drop(targets);
    }
    Ok(())
}

async fn cns_figures(secs: u64, volumes: u64, vtwin: &str, vcsim: &str, tmp: &std::path::Path) -> anyhow::Result<()> {
    let http: Http = Client::builder(TokioExecutor::new()).pool_max_idle_per_host(256).build_http();
    let base = |ep: &Endpoint| ep.sdk.trim_end_matches("/sdk").to_string();
    println!("\n# CNS over SOAP (/vsanHealth), 64 clients");
    let v = start_vtwin(vtwin, &tmp.join("cns"), 1, 1).await?;
    let cv = cns::Cns::login(&http, "vtwin", &base(&v.ep), &v.ep.user, &v.ep.pw).await?;
    let p = start_vcsim(vcsim, None).await?;
    let cp = cns::Cns::login(&http, "vcsim", &base(&p.ep), &p.ep.user, &p.ep.pw).await?;
    let a = cns::cycles(&http, &cv, 64, secs).await?;
    let b = cns::cycles(&http, &cp, 64, secs).await?;
    println!("CnsCreateVolume + CnsDeleteVolume (deleteDisk) cycles/s: vtwin {a:.0} (thin VMDK, change log, metadata, fsync'd), vcsim {b:.0} (map entries): {:.2}x", a / b);

    let pid = v.child.id().unwrap_or(0);
    let before = rss_kib(pid);
    let rate = cns::fill(&http, &cv, volumes).await?;
    let after = rss_kib(pid);
    println!("filled {volumes} volumes at {rate:.0} volumes/s; RSS {} MiB -> {} MiB", before / 1024, after / 1024);
    let (_, _, total, _) = cv.query(&http, None, 0, 1).await?;
    anyhow::ensure!(total == volumes, "vtwin counts {total} volumes, not {volumes}");
    for (label, limit) in [(("app", "app-7"), 100u64), (("tier", "gold"), 1000)] {
        let (pages, seen, ms, mut lat) = cns::walk(&http, &cv, label, limit).await?;
        let (p50, p99) = (tasks::percentile(&mut lat, 0.5), tasks::percentile(&mut lat, 0.99));
        println!("vtwin CnsQueryVolume labels {}={} over {volumes}: {seen} volumes in {pages} pages of {limit}, {ms:.0} ms in all, page p50 {p50:.1} ms, p99 {p99:.1} ms", label.0, label.1);
    }
    drop(v);
    // vcsim returns every volume on every query: fetch them all and filter.
    let peer_n = volumes.min(100_000);
    let t = Instant::now();
    cns::fill(&http, &cp, peer_n).await?;
    let peer_fill = peer_n as f64 / t.elapsed().as_secs_f64();
    let t = Instant::now();
    let (n, _, _, text) = cp.query(&http, Some(("app", "app-7")), 0, 100).await?;
    let ms = t.elapsed().as_secs_f64() * 1000.0;
    let matching = text.matches("<value>app-7</value>").count();
    println!("vcsim: filled {peer_n} volumes at {peer_fill:.0} volumes/s; CnsQueryVolume labels app=app-7 (ignored by vcsim): {n} volumes, {:.1} MB, in {ms:.0} ms; {matching} match after client-side filtering", text.len() as f64 / 1e6);
    drop(p);
    Ok(())
}

async fn task_figures(secs: u64, kept: u64, vtwin: &str, tmp: &std::path::Path) -> anyhow::Result<()> {
    let http: Http = Client::builder(TokioExecutor::new()).pool_max_idle_per_host(256).build_http();
    println!("\n# Task engine (vtwin only: vcsim has no extension-task API)");
    let v = start_vtwin(vtwin, &tmp.join("tasks"), 1, 1).await?;
    let base = v.ep.sdk.trim_end_matches("/sdk").to_string();
    let sid = tasks::vapi_session(&http, &base, &v.ep.user, &v.ep.pw).await?;
    for clients in [1usize, 64] {
        let r = tasks::throughput(&http, &base, &sid, clients, secs).await?;
        println!(
            "extension tasks created+run+completed, {clients:>2} clients: {r:>8.0} tasks/s ({:.0} requests/s)",
            r * 3.0
        );
    }
    let mut lat = tasks::wake_latency(&http, &base, &sid, 200).await?;
    let (p50, p99) = (tasks::percentile(&mut lat, 0.5), tasks::percentile(&mut lat, 0.99));
    println!("SetTaskState(success) -> WaitForUpdatesEx wake-up, 200 tasks: p50 {p50:.2} ms, p99 {p99:.2} ms");
    drop(v);

    let keep = (kept + 1000).to_string();
    let v = start_vtwin_with(vtwin, &tmp.join("kept"), 1, 1, &["--task-retention-count", &keep]).await?;
    let base = v.ep.sdk.trim_end_matches("/sdk").to_string();
    let sid = tasks::vapi_session(&http, &base, &v.ep.user, &v.ep.pw).await?;
    let pid = v.child.id().unwrap_or(0);
    let before = rss_kib(pid);
    let rate = tasks::fill(&http, &base, &sid, kept, 64).await?;
    let after = rss_kib(pid);
    println!("RSS: {} MiB with no tasks, {} MiB with {kept} completed tasks kept ({:.0} bytes/task; filled at {rate:.0} tasks/s)",
        before / 1024, after / 1024, (after.saturating_sub(before) * 1024) as f64 / kept as f64);
    drop(v);
    Ok(())
}

async fn soap_figures(
    args: &[String],
    secs: u64,
    inventory: usize,
    vtwin: &str,
    vcsim: &str,
    tmp: &std::path::Path,
) -> anyhow::Result<()> {
    let arg = |name: &str| args.iter().position(|a| a == name).and_then(|i| args.get(i + 1)).cloned();
    println!("# SOAP Login + RetrievePropertiesEx + Logout, {secs} s per figure, requests/s");
    println!("{:<8} {:>8} {:>12} {:>12} {:>8}", "clients", "", "vtwin", "vcsim", "ratio");
    for clients in [1usize, 64] {
        let v = start_vtwin(vtwin, &tmp.join("tp"), 1, 1).await?;
        let a = throughput(&v.ep, clients, secs).await?;
        drop(v);
        let p = start_vcsim(vcsim, None).await?;
        let b = throughput(&p.ep, clients, secs).await?;
        drop(p);
        println!("{clients:<8} {:>8} {a:>12.0} {b:>12.0} {:>7.2}x", "req/s", a / b);
    }

    let half = inventory / 2;
    println!("\n# RSS after a full RetrievePropertiesEx of every datastore summary");
    println!("{:<34} {:>8} {:>10}", "inventory", "objects", "RSS");
    let http: Http = Client::builder(TokioExecutor::new()).build_http();
    for (h, d) in [(1usize, 1usize), (half, half)] {
        let v = start_vtwin(vtwin, &tmp.join(format!("rss{h}")), h, d).await?;
        let n = iteration(&http, &v.ep).await?;
        let r = rss_kib(v.child.id().unwrap_or(0));
        drop(v);
        println!("{:<34} {:>8} {:>6} MiB", format!("vtwin, {h} hosts + {d} datastores"), n, r / 1024);
    }
    // vcsim builds large inventories very slowly (minutes for thousands of
    // hosts), so its RSS is measured only on request, at --peer-inventory.
    if let Some(pi) = arg("--peer-inventory").and_then(|s| s.parse::<usize>().ok()) {
        for (h, d) in [(1usize, 1usize), (pi / 2, pi / 2)] {
            let p = start_vcsim(vcsim, Some((h, d))).await?;
            let n = iteration(&http, &p.ep).await?;
            let r = rss_kib(p.child.id().unwrap_or(0));
            drop(p);
            println!("{:<34} {:>8} {:>6} MiB", format!("vcsim, {h} hosts + {d} datastores"), n, r / 1024);
        }
    }
    Ok(())
}
