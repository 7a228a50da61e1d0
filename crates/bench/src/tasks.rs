//! Task-engine figures: extension tasks created and completed per second
//! through the vAPI extension API at 64 clients; p50/p99 from sending
//! SetTaskState(success) to the wake-up of a WaitForUpdatesEx waiter; RSS
//! with 100,000 completed tasks kept. vcsim has no extension-task API
//! (no CreateTask or SetTaskState either), so these figures have no peer;
//! they are compared with vtwin's own baseline (RSS with no tasks).
use super::Http;
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use serde_json::{json, Value};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

async fn req(
    http: &Http,
    method: &str,
    url: &str,
    headers: &[(&str, &str)],
    body: Option<Value>,
) -> anyhow::Result<(u16, Value, hyper::HeaderMap)> {
    let mut b = hyper::Request::builder().method(method).uri(url).header("Content-Type", "application/json");
    for (k, v) in headers {
        b = b.header(*k, *v);
    }
    let body = body.map(|b| b.to_string()).unwrap_or_default();
    let resp = http.request(b.body(Full::new(Bytes::from(body)))?).await?;
    let status = resp.status().as_u16();
    let headers = resp.headers().clone();
    let bytes = resp.into_body().collect().await?.to_bytes();
    let v = if bytes.is_empty() { Value::Null } else { serde_json::from_slice(&bytes).unwrap_or(Value::Null) };
    Ok((status, v, headers))
}

/// A vAPI session id (Basic auth on /rest).
pub async fn vapi_session(http: &Http, base: &str, user: &str, pw: &str) -> anyhow::Result<String> {
    use base64::Engine as _;
    let auth = format!("Basic {}", base64::engine::general_purpose::STANDARD.encode(format!("{user}:{pw}")));
    let (st, v, _) =
        req(http, "POST", &format!("{base}/rest/com/vmware/cis/session"), &[("Authorization", &auth)], None).await?;
    anyhow::ensure!(st == 200, "session: {st} {v}");
    Ok(v["value"].as_str().unwrap_or_default().to_string())
}

/// One extension task: create, RUNNING, SUCCEEDED (three requests).
async fn one_task(http: &Http, base: &str, sid: &str, n: u64) -> anyhow::Result<()> {
    let h = [("vmware-api-session-id", sid)];
    let (st, v, _) = req(
        http,
        "POST",
        &format!("{base}/rest/vcenter/extension/tasks"),
        &h,
        Some(json!({"spec": {"operation_id": "com.bench.task.run", "cancelable": false}})),
    )
    .await?;
    anyhow::ensure!(st == 200, "create: {st} {v}");
    let id = v["value"].as_str().unwrap_or_default().to_string();
    let url = format!("{base}/rest/vcenter/extension/tasks/{id}");
    let (st, v, _) = req(http, "PATCH", &url, &h, Some(json!({"spec": {"status": "RUNNING", "percent_done": {"total": 10, "completed": (n % 10) as i64, "message": {"id": "m", "default_message": "m", "args": []}}}}))).await?;
    anyhow::ensure!(st == 200, "running: {st} {v}");
    let (st, v, _) = req(http, "PATCH", &url, &h, Some(json!({"spec": {"status": "SUCCEEDED"}}))).await?;
    anyhow::ensure!(st == 200, "succeeded: {st} {v}");
    Ok(())
}

pub async fn throughput(http: &Http, base: &str, sid: &str, clients: usize, secs: u64) -> anyhow::Result<f64> {
    throughput_on(http, &[base.to_string()], sid, clients, secs).await
}

/// As `throughput`, client i talking to node `bases[i % n]`.
pub async fn throughput_on(http: &Http, bases: &[String], sid: &str, clients: usize, secs: u64) -> anyhow::Result<f64> {
    for b in bases {
        one_task(http, b, sid, 0).await?;
    }
    let stop = Arc::new(AtomicBool::new(false));
    let done = Arc::new(AtomicU64::new(0));
    let start = Instant::now();
    let mut all = vec![];
    for i in 0..clients {
        let (http, stop, done, base, sid) =
            (http.clone(), stop.clone(), done.clone(), bases[i % bases.len()].clone(), sid.to_string());
        all.push(tokio::spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                let n = done.fetch_add(1, Ordering::Relaxed);
                one_task(&http, &base, &sid, n).await?;
            }
            anyhow::Ok(())
        }));
    }
    tokio::time::sleep(Duration::from_secs(secs)).await;
    stop.store(true, Ordering::Relaxed);
    for t in all {
        t.await??;
    }
    Ok(done.load(Ordering::Relaxed) as f64 / start.elapsed().as_secs_f64())
}

/// Fill the server with `n` completed tasks (created straight as SUCCEEDED).
pub async fn fill(http: &Http, base: &str, sid: &str, n: u64, clients: usize) -> anyhow::Result<f64> {
    let next = Arc::new(AtomicU64::new(0));
    let start = Instant::now();
    let mut all = vec![];
    for _ in 0..clients {
        let (http, next, base, sid) = (http.clone(), next.clone(), base.to_string(), sid.to_string());
        all.push(tokio::spawn(async move {
            while next.fetch_add(1, Ordering::Relaxed) < n {
                let (st, v, _) = req(&http, "POST", &format!("{base}/rest/vcenter/extension/tasks"), &[("vmware-api-session-id", &sid)], Some(json!({"spec": {"operation_id": "com.bench.fill.run", "cancelable": false, "status": "SUCCEEDED", "description": {"id": "com.bench.fill", "default_message": "a completed task kept for the RSS figure", "args": []}}}))).await?;
                anyhow::ensure!(st == 200, "create: {st} {v}");
            }
            anyhow::Ok(())
        }));
    }
    for t in all {
        t.await??;
    }
    Ok(n as f64 / start.elapsed().as_secs_f64())
}

/// Wake-up latencies (ms) of a WaitForUpdatesEx waiter on a task's
/// `info.state`, from sending SetTaskState(success), over `rounds` tasks.
pub async fn wake_latency(http: &Http, base: &str, sid: &str, rounds: usize) -> anyhow::Result<Vec<f64>> {
    wake_latency_on(http, base, base, sid, rounds).await
}

/// As `wake_latency`, the task driven on node `base` and waited on at
/// node `wait_base` (the same node, or another on the same database).
pub async fn wake_latency_on(
    http: &Http,
    base: &str,
    wait_base: &str,
    sid: &str,
    rounds: usize,
) -> anyhow::Result<Vec<f64>> {
    let vim = format!("{base}/sdk/vim25/9.1.0.0");
    let wvim = format!("{wait_base}/sdk/vim25/9.1.0.0");
    let h = [("vmware-api-session-id", sid)];
    let ext = json!({"extension": {"_typeName": "Extension", "key": "com.bench", "version": "1",
        "description": {"_typeName": "Description", "label": "bench", "summary": "bench"},
        "taskList": [{"_typeName": "ExtensionTaskTypeInfo", "taskID": "com.bench.wake"}]}});
    let (st, v, _) =
        req(http, "POST", &format!("{vim}/ExtensionManager/ExtensionManager/RegisterExtension"), &h, Some(ext)).await?;
    anyhow::ensure!(st == 204 || st == 200, "RegisterExtension: {st} {v}");
    let mut out = vec![];
    for _ in 0..rounds {
        let (st, info, _) = req(http, "POST", &format!("{vim}/TaskManager/TaskManager/CreateTask"), &h,
            Some(json!({"obj": {"_typeName": "ManagedObjectReference", "type": "Folder", "value": "group-d1"}, "taskTypeId": "com.bench.wake", "cancelable": false}))).await?;
        anyhow::ensure!(st == 200, "CreateTask: {st} {info}");
        let task = info["key"].as_str().unwrap_or_default().to_string();
        req(http, "POST", &format!("{vim}/Task/{task}/SetTaskState"), &h, Some(json!({"state": "running"}))).await?;
        let spec = json!({"spec": {"_typeName": "PropertyFilterSpec",
            "propSet": [{"_typeName": "PropertySpec", "type": "Task", "pathSet": ["info.state"]}],
            "objectSet": [{"_typeName": "ObjectSpec", "obj": {"_typeName": "ManagedObjectReference", "type": "Task", "value": task}}]},
            "partialUpdates": false});
        let (st, filter, _) =
            req(http, "POST", &format!("{wvim}/PropertyCollector/propertyCollector/CreateFilter"), &h, Some(spec))
                .await?;
        anyhow::ensure!(st == 200, "CreateFilter: {st} {filter}");
        let wait = |version: String| {
            let (http, url, sid) =
                (http.clone(), format!("{wvim}/PropertyCollector/propertyCollector/WaitForUpdatesEx"), sid.to_string());
            async move {
                let (st, v, _) = req(
                    &http,
                    "POST",
                    &url,
                    &[("vmware-api-session-id", &sid)],
                    Some(json!({"version": version, "options": {"_typeName": "WaitOptions", "maxWaitSeconds": 30}})),
                )
                .await?;
                anyhow::ensure!(st == 200, "WaitForUpdatesEx: {st} {v}");
                anyhow::Ok((Instant::now(), v))
            }
        };
        // Until the waiter has seen `running` (on another node that news
        // may come after the first answer).
        let mut version = String::new();
        loop {
            let (_, upd) = wait(version.clone()).await?;
            version = upd["version"].as_str().unwrap_or_default().to_string();
            if upd.to_string().contains("running") {
                break;
            }
        }
        let waiter = tokio::spawn(wait(version));
        // Let the waiter reach the server and park.
        tokio::time::sleep(Duration::from_millis(20)).await;
        let t0 = Instant::now();
        let (st, v, _) =
            req(http, "POST", &format!("{vim}/Task/{task}/SetTaskState"), &h, Some(json!({"state": "success"})))
                .await?;
        anyhow::ensure!(st == 204, "SetTaskState: {st} {v}");
        let (t1, upd) = waiter.await??;
        anyhow::ensure!(upd.to_string().contains("success"), "the waiter saw no success: {upd}");
        out.push((t1 - t0).as_secs_f64() * 1000.0);
        let f = filter["value"].as_str().unwrap_or_default();
        req(http, "POST", &format!("{wvim}/PropertyFilter/{f}/DestroyPropertyFilter"), &h, Some(json!({}))).await?;
    }
    Ok(out)
}

pub fn percentile(v: &mut [f64], p: f64) -> f64 {
    v.sort_by(f64::total_cmp);
    if v.is_empty() {
        return 0.0;
    }
    let i = ((v.len() as f64 - 1.0) * p).round() as usize;
    v[i]
}
