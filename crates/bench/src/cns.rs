//! CNS: CnsCreateVolume + CnsDeleteVolume cycles per second at 64 clients
//! over SOAP (`/vsanHealth`, tasks awaited through `/sdk`), vtwin against
//! vcsim 0.24.2 (whose volumes are entries in a map, no disks); then vtwin
//! filled with 100,000 volumes and CnsQueryVolume with a label filter,
//! walked page by page. vcsim ignores label filters and cursors (every
//! volume comes back in one reply), so its figure is the time to fetch
//! everything and filter on the client, the only way to answer there.
use super::{envelope, Http};
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

#[derive(Clone)]
pub struct Cns {
    pub name: &'static str,
    /// `http://host:port`
    pub base: String,
    pub cookie: String,
    pub ds: String,
}

async fn post(
    http: &Http,
    url: &str,
    action: &str,
    body: String,
    cookie: Option<&str>,
) -> anyhow::Result<(u16, Option<String>, String)> {
    let mut b = hyper::Request::post(url)
        .header("Content-Type", "text/xml; charset=UTF-8")
        .header("SOAPAction", format!("\"{action}\""));
    if let Some(c) = cookie {
        b = b.header("Cookie", c);
    }
    let resp = http.request(b.body(Full::new(Bytes::from(body)))?).await?;
    let st = resp.status().as_u16();
    let cookie = resp
        .headers()
        .get("set-cookie")
        .and_then(|v| v.to_str().ok())
        .map(|s| s.split(';').next().unwrap_or("").to_string());
    let body = resp.into_body().collect().await?.to_bytes();
    Ok((st, cookie, String::from_utf8_lossy(&body).into_owned()))
}

/// Text of the first `<tag>…</tag>` after `from`.
fn between<'a>(s: &'a str, open: &str, close: &str) -> Option<&'a str> {
    let i = s.find(open)? + open.len();
    let j = s[i..].find(close)? + i;
    Some(&s[i..j])
}

impl Cns {
    pub async fn login(http: &Http, name: &'static str, base: &str, user: &str, pw: &str) -> anyhow::Result<Cns> {
        let login = envelope(&format!(
            r#"<Login xmlns="urn:vim25"><_this type="SessionManager">SessionManager</_this><userName>{user}</userName><password>{pw}</password></Login>"#
        ));
        let (st, cookie, body) = post(http, &format!("{base}/sdk"), "urn:vim25/8.0.3.0", login, None).await?;
        anyhow::ensure!(st == 200, "{name}: Login {st}: {body}");
        let cookie = cookie.ok_or_else(|| anyhow::anyhow!("{name}: no cookie"))?;
        let (st, _, body) =
            post(http, &format!("{base}/sdk"), "urn:vim25/8.0.3.0", envelope(super::RETRIEVE), Some(&cookie)).await?;
        anyhow::ensure!(st == 200, "{name}: RetrievePropertiesEx {st}");
        let ds = between(&body, "<obj type=\"Datastore\">", "</obj>")
            .ok_or_else(|| anyhow::anyhow!("{name}: no datastore"))?
            .to_string();
        Ok(Cns { name, base: base.to_string(), cookie, ds })
    }

    async fn call(&self, http: &Http, body: String) -> anyhow::Result<String> {
        let (st, _, text) =
            post(http, &format!("{}/vsanHealth", self.base), "urn:vsan/9.1.0.0", envelope(&body), Some(&self.cookie))
                .await?;
        anyhow::ensure!(st == 200, "{}: {st}: {text}", self.name);
        Ok(text)
    }

    /// Run a task-returning CNS call and wait for its TaskInfo.
    async fn task(&self, http: &Http, body: String) -> anyhow::Result<String> {
        let text = self.call(http, body).await?;
        let task = between(&text, "<returnval type=\"Task\">", "</returnval>")
            .ok_or_else(|| anyhow::anyhow!("{}: no task in {text}", self.name))?
            .to_string();
        let get = format!(
            r#"<RetrievePropertiesEx xmlns="urn:vim25"><_this type="PropertyCollector">propertyCollector</_this><specSet><propSet><type>Task</type><pathSet>info</pathSet></propSet><objectSet><obj type="Task">{task}</obj></objectSet></specSet><options></options></RetrievePropertiesEx>"#
        );
        loop {
            // The vSAN service version, so the CNS result is in the reply.
            let (st, _, info) =
                post(http, &format!("{}/sdk", self.base), "urn:vsan/9.1.0.0", envelope(&get), Some(&self.cookie))
                    .await?;
            anyhow::ensure!(st == 200, "{}: task info {st}", self.name);
            match between(&info, "<state>", "</state>") {
                Some("success") => return Ok(info),
                Some("error") => anyhow::bail!("{}: task failed: {info}", self.name),
                _ => tokio::time::sleep(Duration::from_millis(2)).await,
            }
        }
    }

    pub async fn create(&self, http: &Http, name: &str, labels: &[(&str, String)]) -> anyhow::Result<String> {
        let labels: String =
            labels.iter().map(|(k, v)| format!("<labels><key>{k}</key><value>{v}</value></labels>")).collect();
        let body = format!(
            r#"<CnsCreateVolume xmlns="urn:vsan"><_this type="CnsVolumeManager">cns-volume-manager</_this><createSpecs><name>{name}</name><volumeType>BLOCK</volumeType><datastores type="Datastore">{ds}</datastores><metadata><containerCluster><clusterType>KUBERNETES</clusterType><clusterId>bench</clusterId><vSphereUser>administrator@vsphere.local</vSphereUser></containerCluster><entityMetadata xsi:type="CnsKubernetesEntityMetadata"><entityName>{name}</entityName>{labels}<entityType>PERSISTENT_VOLUME</entityType></entityMetadata></metadata><backingObjectDetails xsi:type="CnsBlockBackingDetails"><capacityInMb>1024</capacityInMb></backingObjectDetails></createSpecs></CnsCreateVolume>"#,
            ds = self.ds
        );
        let info = self.task(http, body).await?;
        anyhow::ensure!(!info.contains("<fault"), "{}: create fault: {info}", self.name);
        let r = between(&info, "<volumeResults", "</volumeResults>").unwrap_or("");
        Ok(between(r, "<id>", "</id>")
            .ok_or_else(|| anyhow::anyhow!("{}: no volume id in {info}", self.name))?
            .to_string())
    }

    pub async fn delete(&self, http: &Http, id: &str) -> anyhow::Result<()> {
        let body = format!(
            r#"<CnsDeleteVolume xmlns="urn:vsan"><_this type="CnsVolumeManager">cns-volume-manager</_this><volumeIds><id>{id}</id></volumeIds><deleteDisk>true</deleteDisk></CnsDeleteVolume>"#
        );
        let info = self.task(http, body).await?;
        anyhow::ensure!(!info.contains("<fault"), "{}: delete fault: {info}", self.name);
        Ok(())
    }

    /// One CnsQueryVolume page: (volumes on it, next offset, total).
    pub async fn query(
        &self,
        http: &Http,
        label: Option<(&str, &str)>,
        offset: u64,
        limit: u64,
    ) -> anyhow::Result<(usize, u64, u64, String)> {
        let labels =
            label.map(|(k, v)| format!("<labels><key>{k}</key><value>{v}</value></labels>")).unwrap_or_default();
        let body = format!(
            r#"<CnsQueryVolume xmlns="urn:vsan"><_this type="CnsVolumeManager">cns-volume-manager</_this><filter>{labels}<cursor><offset>{offset}</offset><limit>{limit}</limit></cursor></filter></CnsQueryVolume>"#
        );
        let text = self.call(http, body).await?;
        let n = text.matches("<volumes>").count() + text.matches("<volumes xsi:type").count();
        let cursor = text.rsplit("<cursor>").next().unwrap_or("");
        let next = between(cursor, "<offset>", "</offset>").and_then(|s| s.parse().ok()).unwrap_or(0);
        let total = between(cursor, "<totalRecords>", "</totalRecords>").and_then(|s| s.parse().ok()).unwrap_or(0);
        Ok((n, next, total, text))
    }
}

/// Create+delete cycles per second with `clients` concurrent clients.
pub async fn cycles(http: &Http, c: &Cns, clients: usize, secs: u64) -> anyhow::Result<f64> {
    let id = c.create(http, "warm-up", &[]).await?;
    c.delete(http, &id).await?;
    let stop = Arc::new(AtomicBool::new(false));
    let done = Arc::new(AtomicU64::new(0));
    let start = Instant::now();
    let mut tasks = vec![];
    for w in 0..clients {
        let (http, c, stop, done) = (http.clone(), c.clone(), stop.clone(), done.clone());
        tasks.push(tokio::spawn(async move {
            let mut i = 0;
            while !stop.load(Ordering::Relaxed) {
                let id = c.create(&http, &format!("cycle-{w}-{i}"), &[("app", "cycle".into())]).await?;
                c.delete(&http, &id).await?;
                done.fetch_add(1, Ordering::Relaxed);
                i += 1;
            }
            anyhow::Ok(())
        }));
    }
    tokio::time::sleep(Duration::from_secs(secs)).await;
    stop.store(true, Ordering::Relaxed);
    for t in tasks {
        t.await??;
    }
    Ok(done.load(Ordering::Relaxed) as f64 / start.elapsed().as_secs_f64())
}

/// Create `n` volumes with 64 clients: volume i has labels app=app-(i%100)
/// and, for every tenth, tier=gold. Volumes per second.
pub async fn fill(http: &Http, c: &Cns, n: u64) -> anyhow::Result<f64> {
    let next = Arc::new(AtomicU64::new(0));
    let start = Instant::now();
    let mut tasks = vec![];
    for _ in 0..64 {
        let (http, c, next) = (http.clone(), c.clone(), next.clone());
        tasks.push(tokio::spawn(async move {
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= n {
                    break;
                }
                let mut labels = vec![("app", format!("app-{}", i % 100))];
                if i % 10 == 0 {
                    labels.push(("tier", "gold".into()));
                }
                c.create(&http, &format!("pv-{i}"), &labels).await?;
                if i > 0 && i % 10_000 == 0 {
                    eprintln!("  {i} volumes, {:.0}/s", i as f64 / start.elapsed().as_secs_f64());
                }
            }
            anyhow::Ok(())
        }));
    }
    for t in tasks {
        t.await??;
    }
    Ok(n as f64 / start.elapsed().as_secs_f64())
}

/// Walk every page of a label query; (pages, volumes, total ms, per-page ms).
pub async fn walk(
    http: &Http,
    c: &Cns,
    label: (&str, &str),
    limit: u64,
) -> anyhow::Result<(usize, usize, f64, Vec<f64>)> {
    let start = Instant::now();
    let (mut offset, mut pages, mut seen, mut lat) = (0u64, 0usize, 0usize, vec![]);
    loop {
        let t = Instant::now();
        let (n, next, total, _) = c.query(http, Some(label), offset, limit).await?;
        lat.push(t.elapsed().as_secs_f64() * 1000.0);
        pages += 1;
        seen += n;
        if n == 0 || next >= total {
            break;
        }
        offset = next;
    }
    Ok((pages, seen, start.elapsed().as_secs_f64() * 1000.0, lat))
}
