//! Disk figures. NBD sequential read, sequential write and 4 KiB scattered
//! writes with `qemu-img bench` against vtwin's NBD server and, on the same
//! VMDK, against `qemu-nbd` (the peer); QueryChangedDiskAreas over a 2 TiB
//! sparse disk with 10,000 scattered changed 64 KiB blocks; deleting a
//! snapshot (consolidation) with 10 GiB written after it.
use super::Http;
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use serde_json::{json, Value};
use std::process::Command;
use std::time::{Duration, Instant};

const GIB: u64 = 1 << 30;

struct Vim<'a> {
    http: &'a Http,
    base: String,
    sid: String,
}

impl Vim<'_> {
    async fn call(&self, path: &str, body: Value) -> anyhow::Result<Value> {
        let req = hyper::Request::post(format!("{}/sdk/vim25/9.1.0.0/{path}", self.base))
            .header("Content-Type", "application/json")
            .header("vmware-api-session-id", &self.sid)
            .body(Full::new(Bytes::from(body.to_string())))?;
        let resp = self.http.request(req).await?;
        let st = resp.status().as_u16();
        let b = resp.into_body().collect().await?.to_bytes();
        let v: Value = if b.is_empty() { Value::Null } else { serde_json::from_slice(&b)? };
        anyhow::ensure!(st == 200 || st == 204, "{path}: {st} {v}");
        Ok(v)
    }

    async fn get(&self, path: &str) -> anyhow::Result<Value> {
        let req = hyper::Request::get(format!("{}/sdk/vim25/9.1.0.0/{path}", self.base))
            .header("vmware-api-session-id", &self.sid)
            .body(Full::new(Bytes::new()))?;
        let resp = self.http.request(req).await?;
        let b = resp.into_body().collect().await?.to_bytes();
        Ok(serde_json::from_slice(&b)?)
    }

    /// Run a task method and wait for its end; the TaskInfo.
    async fn task(&self, path: &str, body: Value) -> anyhow::Result<Value> {
        let t = self.call(path, body).await?;
        let key = t["value"].as_str().unwrap_or_default().to_string();
        loop {
            let info = self.get(&format!("Task/{key}/info")).await?;
            match info["state"].as_str() {
                Some("success") => return Ok(info),
                Some("error") => anyhow::bail!("{path}: {}", info["error"]),
                _ => tokio::time::sleep(Duration::from_millis(20)).await,
            }
        }
    }

    async fn ticket(&self, disk: &str, snapshot: Option<&str>, write: bool) -> anyhow::Result<String> {
        let mut body = json!({"disk": disk, "datastore": "datastore-1", "write": write});
        if let Some(s) = snapshot {
            body["snapshot"] = json!(s);
        }
        // datastore moId: look it up rather than guess.
        body["datastore"] = json!(self.datastore().await?);
        let req = hyper::Request::post(format!("{}/api/vtwin/nbd-tickets", self.base))
            .header("vmware-api-session-id", &self.sid)
            .body(Full::new(Bytes::from(body.to_string())))?;
        let resp = self.http.request(req).await?;
        let st = resp.status().as_u16();
        let v: Value = serde_json::from_slice(&resp.into_body().collect().await?.to_bytes())?;
        anyhow::ensure!(st == 201, "ticket: {st} {v}");
        Ok(v["uri"].as_str().unwrap_or_default().to_string())
    }

    async fn datastore(&self) -> anyhow::Result<String> {
        let dc = self.get("Folder/group-d1/childEntity").await?;
        let dc = dc[0]["value"].as_str().unwrap_or_default().to_string();
        let ds = self.get(&format!("Datacenter/{dc}/datastore")).await?;
        Ok(ds[0]["value"].as_str().unwrap_or_default().to_string())
    }

    async fn create_disk(&self, name: &str, bytes: u64) -> anyhow::Result<(String, String)> {
        let ds = self.datastore().await?;
        let spec = json!({"spec": {"_typeName": "VslmCreateSpec", "name": name, "capacityInMB": bytes >> 20,
            "backingSpec": {"_typeName": "VslmCreateSpecDiskFileBackingSpec", "datastore": {"_typeName": "ManagedObjectReference", "type": "Datastore", "value": ds}, "provisioningType": "thin"}}});
        let info = self.task("VcenterVStorageObjectManager/VStorageObjectManager/CreateDisk_Task", spec).await?;
        let id = info["result"]["config"]["id"]["id"].as_str().unwrap_or_default().to_string();
        let path = info["result"]["config"]["backing"]["filePath"].as_str().unwrap_or_default().to_string();
        Ok((id, path))
    }

    fn id_ds(&self, id: &str, ds: &str) -> Value {
        json!({"id": {"_typeName": "ID", "id": id}, "datastore": {"_typeName": "ManagedObjectReference", "type": "Datastore", "value": ds}})
    }

    async fn snapshot(&self, id: &str) -> anyhow::Result<String> {
        let ds = self.datastore().await?;
        let mut b = self.id_ds(id, &ds);
        b["description"] = json!("bench");
        let info = self
            .task("VcenterVStorageObjectManager/VStorageObjectManager/VStorageObjectCreateSnapshot_Task", b)
            .await?;
        Ok(info["result"]["id"].as_str().unwrap_or_default().to_string())
    }
}

/// `qemu-img bench` against an NBD URI; bytes per second.
fn qemu_bench(uri: &str, write: bool, size: u64, count: u64, step: u64) -> anyhow::Result<f64> {
    let mut cmd = Command::new("qemu-img");
    cmd.args(["bench", "-f", "raw", "-d", "16", "-s", &size.to_string(), "-c", &count.to_string()]);
    if step != 0 {
        cmd.args(["-S", &step.to_string()]);
    }
    if write {
        cmd.arg("-w");
    }
    let start = Instant::now();
    let out = cmd.arg(uri).output()?;
    anyhow::ensure!(out.status.success(), "qemu-img bench: {}", String::from_utf8_lossy(&out.stderr));
    Ok((size * count) as f64 / start.elapsed().as_secs_f64())
}

fn mib(bps: f64) -> f64 {
    bps / (1 << 20) as f64
}

pub async fn figures(http: &Http, base: &str, sid: &str, data_dir: &std::path::Path) -> anyhow::Result<()> {
    let v = Vim { http, base: base.to_string(), sid: sid.to_string() };
    println!("\n# Disks: NBD through vtwin vs qemu-nbd on the same VMDK (qemu-img bench, queue depth 16)");
    let (id, path) = v.create_disk("nbd-bench", 2 * GIB).await?;
    let uri = v.ticket(&id, None, true).await?;
    let seq_n = 2 * GIB / (1 << 20);
    let rnd_n = 20_000;
    // First touch through vtwin (allocation + one change-log append per
    // batch of new blocks), reported on its own; the measured passes below
    // then overwrite allocated blocks on both servers alike.
    let first = qemu_bench(&uri, true, 1 << 20, seq_n, 0)?;
    println!("{:<28} vtwin {:>8.0} MiB/s (allocating, change-tracked)", "first write, 1 MiB", mib(first));
    let vt = [
        qemu_bench(&uri, true, 1 << 20, seq_n, 0)?,
        qemu_bench(&uri, false, 1 << 20, seq_n, 0)?,
        qemu_bench(&uri, true, 4096, rnd_n, 1_048_576 + 4096)?,
    ];
    // The same file through qemu-nbd.
    let rel = path.split_once("] ").map_or("", |x| x.1);
    let file = data_dir.join("datastores").join("LocalDS_0").join(rel);
    let port = 20000 + (std::process::id() % 20000) as u16;
    let mut peer = Command::new("qemu-nbd")
        .args(["-f", "vmdk", "-t", "-b", "127.0.0.1", "-p", &port.to_string(), "-x", "bench"])
        .arg(&file)
        .spawn()?;
    let puri = format!("nbd://127.0.0.1:{port}/bench");
    let mut ready = false;
    for _ in 0..100 {
        if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
            ready = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    anyhow::ensure!(ready, "qemu-nbd did not start");
    let qn = [
        qemu_bench(&puri, true, 1 << 20, seq_n, 0)?,
        qemu_bench(&puri, false, 1 << 20, seq_n, 0)?,
        qemu_bench(&puri, true, 4096, rnd_n, 1_048_576 + 4096)?,
    ];
    let _ = peer.kill();
    let _ = peer.wait();
    for (i, what) in ["sequential write, 1 MiB", "sequential read, 1 MiB", "4 KiB scattered writes"].iter().enumerate()
    {
        if i == 2 {
            println!(
                "{what:<28} vtwin {:>8.0} IOPS   qemu-nbd {:>8.0} IOPS   ratio {:.2}x",
                vt[i] / 4096.0,
                qn[i] / 4096.0,
                vt[i] / qn[i]
            );
        } else {
            println!(
                "{what:<28} vtwin {:>8.0} MiB/s  qemu-nbd {:>8.0} MiB/s  ratio {:.2}x",
                mib(vt[i]),
                mib(qn[i]),
                vt[i] / qn[i]
            );
        }
    }

    println!("\n# Disks: QueryChangedDiskAreas, 2 TiB thin disk, 10,000 scattered 64 KiB blocks changed");
    let cap = 2048 * GIB;
    let (big, _) = v.create_disk("cbt-bench", cap).await?;
    let s1 = v.snapshot(&big).await?;
    let buri = v.ticket(&big, None, true).await?;
    let stride = cap / 10_000 / 65536 * 65536;
    let t = Instant::now();
    qemu_bench(&buri, true, 65536, 10_000, stride)?;
    let wrote = t.elapsed();
    let s2 = v.snapshot(&big).await?;
    let ds = v.datastore().await?;
    let mut b = v.id_ds(&big, &ds);
    b["snapshotId"] = json!({"_typeName": "ID", "id": s1});
    let cid = v.call("VcenterVStorageObjectManager/VStorageObjectManager/RetrieveSnapshotDetails", b).await?
        ["changedBlockTrackingId"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    let t = Instant::now();
    let mut start = 0u64;
    let mut areas = 0usize;
    let mut calls = 0;
    while start < cap {
        let mut b = v.id_ds(&big, &ds);
        b["snapshotId"] = json!({"_typeName": "ID", "id": s2});
        b["startOffset"] = json!(start);
        b["changeId"] = json!(cid);
        let r = v
            .call("VcenterVStorageObjectManager/VStorageObjectManager/VstorageObjectVCenterQueryChangedDiskAreas", b)
            .await?;
        areas += r["changedArea"].as_array().map_or(0, std::vec::Vec::len);
        start = r["startOffset"].as_u64().unwrap_or(0) + r["length"].as_u64().unwrap_or(cap);
        calls += 1;
    }
    println!(
        "10,000 writes of 64 KiB over NBD: {:.1} s; the whole-disk query: {:.1} ms ({calls} calls, {areas} areas)",
        wrote.as_secs_f64(),
        t.elapsed().as_secs_f64() * 1000.0
    );

    println!("\n# Disks: delete a snapshot with 10 GiB written after it (consolidation)");
    let (cons, _) = v.create_disk("consolidate-bench", 12 * GIB).await?;
    let s = v.snapshot(&cons).await?;
    let curi = v.ticket(&cons, None, true).await?;
    qemu_bench(&curi, true, 1 << 20, 10 * 1024, 0)?;
    let mut b = v.id_ds(&cons, &ds);
    b["snapshotId"] = json!({"_typeName": "ID", "id": s});
    let t = Instant::now();
    v.task("VcenterVStorageObjectManager/VStorageObjectManager/DeleteSnapshot_Task", b).await?;
    let secs = t.elapsed().as_secs_f64();
    println!("DeleteSnapshot_Task: {secs:.1} s ({:.0} MiB/s merged)", 10.0 * 1024.0 / secs);
    Ok(())
}
