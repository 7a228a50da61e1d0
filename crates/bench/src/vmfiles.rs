//! VM files: UpdateVirtualMachineFiles_Task over 10,000 VMs (a `.vmx`, a
//! `.vmsd` and two disk descriptors each, naming their files by mount path)
//! after the datastore was remounted; files rewritten per second. vcsim has
//! no UpdateVirtualMachineFiles, so there is no peer figure.
use super::Http;
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use serde_json::{json, Value};
use std::time::{Duration, Instant};

async fn call(
    http: &Http,
    base: &str,
    sid: &str,
    method: &str,
    path: &str,
    body: Option<Value>,
    basic: Option<&str>,
) -> anyhow::Result<(u16, Value)> {
    let mut b = hyper::Request::builder()
        .method(method)
        .uri(format!("{base}{path}"))
        .header("Content-Type", "application/json")
        .header("vmware-api-session-id", sid);
    if let Some(a) = basic {
        b = b.header("Authorization", a);
    }
    let resp = http.request(b.body(Full::new(Bytes::from(body.map(|b| b.to_string()).unwrap_or_default())))?).await?;
    let st = resp.status().as_u16();
    let bytes = resp.into_body().collect().await?.to_bytes();
    Ok((st, if bytes.is_empty() { Value::Null } else { serde_json::from_slice(&bytes)? }))
}

pub async fn figures(http: &Http, base: &str, sid: &str, basic: &str, vms: usize) -> anyhow::Result<()> {
    const V: &str = "/sdk/vim25/9.1.0.0";
    let (_, dc) = call(http, base, sid, "GET", &format!("{V}/Folder/group-d1/childEntity"), None, None).await?;
    let dc = dc[0]["value"].as_str().unwrap_or_default().to_string();
    let (_, dss) = call(http, base, sid, "GET", &format!("{V}/Datacenter/{dc}/datastore"), None, None).await?;
    let ds = dss[0]["value"].as_str().unwrap_or_default().to_string();
    let (_, hosts) = call(http, base, sid, "GET", &format!("{V}/Datastore/{ds}/host"), None, None).await?;
    let old = hosts[0]["mountInfo"]["path"].as_str().unwrap_or_default().to_string();
    let t = Instant::now();
    for i in 0..vms {
        let d = format!("{old}/vm{i}");
        std::fs::create_dir_all(&d)?;
        std::fs::write(format!("{d}/vm{i}.vmx"), format!(".encoding = \"UTF-8\"\ndisplayName = \"vm{i}\"\nscsi0:0.fileName = \"vm{i}.vmdk\"\nscsi0:1.fileName = \"{old}/vm{i}/vm{i}_1.vmdk\"\nsched.swap.derivedName = \"{old}/vm{i}/vm{i}.vswp\"\n"))?;
        std::fs::write(
            format!("{d}/vm{i}.vmsd"),
            format!(".encoding = \"UTF-8\"\nsnapshot0.disk0.fileName = \"{old}/vm{i}/vm{i}.vmdk\"\n"),
        )?;
        std::fs::write(format!("{d}/vm{i}.vmdk"), format!("# Disk DescriptorFile\nversion=1\nCID=fffffffe\nparentCID=ffffffff\ncreateType=\"vmfs\"\n\n# Extent description\nRW 8 VMFS \"{old}/vm{i}/vm{i}-flat.vmdk\"\n"))?;
        std::fs::write(format!("{d}/vm{i}_1.vmdk"), format!("# Disk DescriptorFile\nversion=1\nCID=fffffffe\nparentCID=ffffffff\ncreateType=\"twoGbMaxExtentSparse\"\nparentFileNameHint=\"{old}/vm{i}/vm{i}.vmdk\"\n\n# Extent description\nRW 8 SPARSE \"vm{i}_1-s001.vmdk\"\n"))?;
    }
    let made = t.elapsed();
    let (st, r) = call(http, base, sid, "POST", &format!("/admin/datastores/{ds}/remount"), None, Some(basic)).await?;
    anyhow::ensure!(st == 200, "remount: {st} {r}");
    let body = json!({"mountPathDatastoreMapping": [{"_typeName": "DatastoreMountPathDatastorePair", "oldMountPath": old, "datastore": {"_typeName": "ManagedObjectReference", "type": "Datastore", "value": ds}}]});
    let t = Instant::now();
    let (st, task) =
        call(http, base, sid, "POST", &format!("{V}/Datastore/{ds}/UpdateVirtualMachineFiles_Task"), Some(body), None)
            .await?;
    anyhow::ensure!(st == 200, "UpdateVirtualMachineFiles_Task: {st} {task}");
    let key = task["value"].as_str().unwrap_or_default().to_string();
    loop {
        let (_, info) = call(http, base, sid, "GET", &format!("{V}/Task/{key}/info"), None, None).await?;
        match info["state"].as_str() {
            Some("success") => {
                let failed = info["result"]["failedVmFile"].as_array().map_or(0, std::vec::Vec::len);
                anyhow::ensure!(failed == 0, "{failed} files failed");
                break;
            }
            Some("error") => anyhow::bail!("update failed: {}", info["error"]),
            _ => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    }
    let secs = t.elapsed().as_secs_f64();
    let files = vms * 4;
    println!("\n# VM files: UpdateVirtualMachineFiles_Task after a remount (vtwin only: vcsim lacks it)");
    println!("{vms} VMs, {files} files (made in {:.1} s): rewritten in {secs:.1} s = {:.0} files/s (each replaced atomically: temp, fsync, rename, fsync dir)", made.as_secs_f64(), files as f64 / secs);
    Ok(())
}
