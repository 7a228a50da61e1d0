//! vCloud Director: external tasks posted (running) and completed (PUT
//! success) per second over the VCD API, at 1 and 64 clients, with the
//! latency of each post+complete pair. vcsim has no VCD API, so there is no
//! peer figure.
use super::Http;
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

const ACCEPT: &str = "application/*+xml;version=36.0";
const TASK: &str = "application/vnd.vmware.vcloud.task+xml";

async fn call(
    http: &Http,
    method: &str,
    url: &str,
    token: Option<&str>,
    basic: Option<&str>,
    body: Option<String>,
) -> anyhow::Result<(u16, hyper::HeaderMap, String)> {
    let mut b = hyper::Request::builder().method(method).uri(url).header("Accept", ACCEPT);
    if let Some(t) = token {
        b = b.header("x-vcloud-authorization", t);
    }
    if let Some(a) = basic {
        b = b.header("Authorization", a);
    }
    if body.is_some() {
        b = b.header("Content-Type", TASK);
    }
    let resp = http.request(b.body(Full::new(Bytes::from(body.unwrap_or_default())))?).await?;
    let st = resp.status().as_u16();
    let headers = resp.headers().clone();
    let text = String::from_utf8_lossy(&resp.into_body().collect().await?.to_bytes()).into_owned();
    Ok((st, headers, text))
}

fn attr<'a>(s: &'a str, name: &str) -> Option<&'a str> {
    let i = s.find(&format!(" {name}=\""))? + name.len() + 3;
    let j = s[i..].find('"')? + i;
    Some(&s[i..j])
}

/// Log in as the System administrator; (token, System org's tasksList href).
pub async fn login(http: &Http, base: &str, basic: &str) -> anyhow::Result<(String, String)> {
    let (st, h, body) = call(http, "POST", &format!("{base}/api/sessions"), None, Some(basic), None).await?;
    anyhow::ensure!(st == 200, "login {st}: {body}");
    let token = h.get("x-vcloud-authorization").and_then(|v| v.to_str().ok()).unwrap_or_default().to_string();
    let org = body
        .split("<Link ")
        .find(|l| l.contains("vcloud.org+xml"))
        .and_then(|l| attr(&format!(" {l}"), "href").map(str::to_string))
        .ok_or_else(|| anyhow::anyhow!("no org link"))?;
    let (_, _, o) = call(http, "GET", &org, Some(&token), None, None).await?;
    let tl = o
        .split("<Link ")
        .find(|l| l.contains("tasksList+xml"))
        .and_then(|l| attr(&format!(" {l}"), "href").map(str::to_string))
        .ok_or_else(|| anyhow::anyhow!("no tasksList link"))?;
    Ok((token, tl))
}

/// One external task: posted running, then completed.
async fn cycle(http: &Http, token: &str, tasks_list: &str, i: u64) -> anyhow::Result<()> {
    let body = format!(
        r#"<Task xmlns="http://www.vmware.com/vcloud/v1.5" name="bench-{i}" status="running" operationName="jobBench" serviceNamespace="com.example.bench"><Progress>10</Progress></Task>"#
    );
    let (st, _, t) = call(http, "POST", tasks_list, Some(token), None, Some(body)).await?;
    anyhow::ensure!(st == 201, "post {st}: {t}");
    let href = attr(&t, "href").ok_or_else(|| anyhow::anyhow!("no href"))?.to_string();
    let done = r#"<Task xmlns="http://www.vmware.com/vcloud/v1.5" status="success"><Progress>100</Progress></Task>"#
        .to_string();
    let (st, _, t) = call(http, "PUT", &href, Some(token), None, Some(done)).await?;
    anyhow::ensure!(st == 200 && t.contains("status=\"success\""), "put {st}: {t}");
    Ok(())
}

/// (tasks/s, per-task latencies in ms)
pub async fn throughput(
    http: &Http,
    token: &str,
    tasks_list: &str,
    clients: usize,
    secs: u64,
) -> anyhow::Result<(f64, Vec<f64>)> {
    cycle(http, token, tasks_list, 0).await?;
    let stop = Arc::new(AtomicBool::new(false));
    let done = Arc::new(AtomicU64::new(0));
    let start = Instant::now();
    let mut tasks = vec![];
    for w in 0..clients {
        let (http, stop, done) = (http.clone(), stop.clone(), done.clone());
        let (token, tl) = (token.to_string(), tasks_list.to_string());
        tasks.push(tokio::spawn(async move {
            let mut lat = vec![];
            let mut i = 0u64;
            while !stop.load(Ordering::Relaxed) {
                let t = Instant::now();
                cycle(&http, &token, &tl, (w as u64) << 32 | i).await?;
                lat.push(t.elapsed().as_secs_f64() * 1000.0);
                done.fetch_add(1, Ordering::Relaxed);
                i += 1;
            }
            anyhow::Ok(lat)
        }));
    }
    tokio::time::sleep(Duration::from_secs(secs)).await;
    stop.store(true, Ordering::Relaxed);
    let mut lat = vec![];
    for t in tasks {
        lat.extend(t.await??);
    }
    Ok((done.load(Ordering::Relaxed) as f64 / start.elapsed().as_secs_f64(), lat))
}
