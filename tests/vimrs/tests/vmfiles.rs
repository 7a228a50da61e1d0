//! vim_rs 0.7.0 and the remount story: VM files on two datastores, both
//! remounted (`vtwin datastore remount`, server stopped), then
//! UpdateVirtualMachineFiles_Task on each and RegisterVM_Task; qemu-img
//! follows the rewritten chain.
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;
use vim_rs::core::client::VimClientHandle;
use vim_rs::core::tasks::TaskTracker;
use vim_rs::core::ClientBuilder;
use vim_rs::mo::{Datastore, Folder};
use vim_rs::types::structs::{DatastoreMountPathDatastorePair, ManagedObjectReference};
use vtwin_vimrs_tests::{data_dir, start_in, PW};

fn mount_of(dir: &Path, name: &str) -> PathBuf {
    std::fs::canonicalize(dir.join("datastores").join(name)).expect("datastore link")
}

fn sh(cmd: &str, args: &[&str]) -> String {
    let out = Command::new(cmd).args(args).output().expect("run");
    assert!(out.status.success(), "{cmd} {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[tokio::test(flavor = "multi_thread")]
async fn update_vm_files_after_remount_then_register() {
    let dir = data_dir("vmfiles");
    let _ = std::fs::remove_dir_all(&dir);
    let srv = start_in(&dir, &["--datastores", "2"]).await;
    let (m0, m1) = (mount_of(&dir, "LocalDS_0"), mount_of(&dir, "LocalDS_1"));
    std::fs::create_dir_all(m0.join("vm")).unwrap();
    std::fs::create_dir_all(m1.join("vm")).unwrap();
    let base = m1.join("vm/data.vmdk");
    sh("qemu-img", &["create", "-q", "-f", "vmdk", "-o", "subformat=monolithicFlat", base.to_str().unwrap(), "4M"]);
    let delta = m0.join("vm/data-000001.vmdk");
    sh(
        "qemu-img",
        &[
            "create",
            "-q",
            "-f",
            "vmdk",
            "-o",
            "subformat=twoGbMaxExtentSparse",
            "-b",
            base.to_str().unwrap(),
            "-F",
            "vmdk",
            delta.to_str().unwrap(),
        ],
    );
    std::fs::write(m0.join("vm/vm.vmx"), format!(".encoding = \"UTF-8\"\ndisplayName = \"rs-vm\"\nscsi0:0.fileName = \"data-000001.vmdk\"\nscsi0:1.fileName = \"{}\"\n", base.display())).unwrap();
    drop(srv);
    tokio::time::sleep(Duration::from_millis(300)).await;

    let bin = std::env::var("VTWIN_BIN").unwrap();
    for ds in ["LocalDS_0", "LocalDS_1"] {
        sh(&bin, &["datastore", "remount", ds, "--data-dir", dir.to_str().unwrap()]);
    }
    let (n0, n1) = (mount_of(&dir, "LocalDS_0"), mount_of(&dir, "LocalDS_1"));
    assert_ne!(n0, m0);
    assert!(
        Command::new("qemu-img")
            .args(["info", "--backing-chain", n0.join("vm/data-000001.vmdk").to_str().unwrap()])
            .output()
            .unwrap()
            .status
            .code()
            != Some(0)
    );

    let srv = start_in(&dir, &["--datastores", "2"]).await;
    let client = ClientBuilder::new(&srv.addr)
        .basic_authn("administrator@vsphere.local", PW)
        .insecure(true)
        .build()
        .await
        .expect("login");
    let handle: VimClientHandle = client.clone();
    let dc = vim_rs::mo::Datacenter::new(handle.clone(), "datacenter-2");
    let mut stores = dc.datastore().await.expect("datastores").unwrap_or_default();
    stores.sort_by(|a, b| a.value.cmp(&b.value));
    let pair = |old: &Path, ds: &ManagedObjectReference| -> DatastoreMountPathDatastorePair {
        miniserde::json::from_str(&format!(
            r#"{{"_typeName":"DatastoreMountPathDatastorePair","oldMountPath":"{}","datastore":{{"_typeName":"ManagedObjectReference","type":"Datastore","value":"{}"}}}}"#,
            old.display(),
            ds.value
        ))
        .unwrap()
    };
    // Map each old mount path to its datastore by name.
    let name_of = |m: &Path| if m == m0.as_path() { "LocalDS_0" } else { "LocalDS_1" };
    let mut pairs = vec![];
    for old in [&m0, &m1] {
        for ds in &stores {
            if Datastore::new(handle.clone(), &ds.value).name().await.unwrap() == name_of(old) {
                pairs.push(pair(old, ds));
            }
        }
    }
    assert_eq!(pairs.len(), 2);
    for ds in &stores {
        let task = Datastore::new(handle.clone(), &ds.value)
            .update_virtual_machine_files_task(&pairs)
            .await
            .expect("UpdateVirtualMachineFiles_Task");
        let tracker = TaskTracker::new(handle.clone());
        tokio::time::timeout(Duration::from_secs(60), tracker.wait_any(task))
            .await
            .expect("in time")
            .expect("task succeeded");
    }
    let chain = sh("qemu-img", &["info", "--backing-chain", n0.join("vm/data-000001.vmdk").to_str().unwrap()]);
    assert_eq!(chain.matches("image:").count(), 2, "{chain}");
    assert!(std::fs::read_to_string(n0.join("vm/vm.vmx")).unwrap().contains(n1.to_str().unwrap()));

    let vm_folder = dc.vm_folder().await.expect("vmFolder");
    let folder = Folder::new(handle.clone(), &vm_folder.value);
    let task =
        folder.register_vm_task("[LocalDS_0] vm/vm.vmx", None, false, None, None).await.expect("RegisterVM_Task");
    let tracker = TaskTracker::new(handle.clone());
    tokio::time::timeout(Duration::from_secs(60), tracker.wait_any(task)).await.expect("in time").expect("registered");
    client.close().await.expect("Logout");
    drop(srv);
    let _ = std::fs::remove_dir_all(&dir);
}

/// The full story with vim_rs: CreateVM_Task with disks on two datastores,
/// snapshots, UnregisterVM, both datastores remounted, UpdateVirtualMachineFiles
/// on both, RegisterVM_Task, qemu-img follows the rewritten chain.
#[tokio::test(flavor = "multi_thread")]
async fn full_story_create_snapshot_remount_update_register() {
    use vim_rs::mo::{ComputeResource, VirtualMachine};
    use vim_rs::types::structs::VirtualMachineConfigSpec;
    let dir = data_dir("story");
    let _ = std::fs::remove_dir_all(&dir);
    let srv = start_in(&dir, &["--datastores", "2"]).await;
    let (m0, m1) = (mount_of(&dir, "LocalDS_0"), mount_of(&dir, "LocalDS_1"));
    let client = ClientBuilder::new(&srv.addr)
        .basic_authn("administrator@vsphere.local", PW)
        .insecure(true)
        .build()
        .await
        .expect("login");
    let handle: VimClientHandle = client.clone();
    let dc = vim_rs::mo::Datacenter::new(handle.clone(), "datacenter-2");
    let hosts =
        Folder::new(handle.clone(), &dc.host_folder().await.unwrap().value).child_entity().await.unwrap().unwrap();
    let pool = ComputeResource::new(handle.clone(), &hosts[0].value).resource_pool().await.unwrap().expect("root pool");
    let vm_folder = Folder::new(handle.clone(), &dc.vm_folder().await.unwrap().value);
    let spec: VirtualMachineConfigSpec = miniserde::json::from_str(
        r#"{"_typeName":"VirtualMachineConfigSpec","name":"rs-story","guestId":"otherGuest64","numCPUs":1,"memoryMB":128,
            "files":{"_typeName":"VirtualMachineFileInfo","vmPathName":"[LocalDS_0]"},
            "deviceChange":[
              {"_typeName":"VirtualDeviceConfigSpec","operation":"add","device":{"_typeName":"VirtualLsiLogicController","key":1000,"busNumber":0,"sharedBus":"noSharing"}},
              {"_typeName":"VirtualDeviceConfigSpec","operation":"add","fileOperation":"create","device":{"_typeName":"VirtualDisk","key":-1,"controllerKey":1000,"unitNumber":0,"capacityInKB":4096,
                 "backing":{"_typeName":"VirtualDiskFlatVer2BackingInfo","fileName":"","diskMode":"persistent","thinProvisioned":true}}},
              {"_typeName":"VirtualDeviceConfigSpec","operation":"add","fileOperation":"create","device":{"_typeName":"VirtualDisk","key":-2,"controllerKey":1000,"unitNumber":1,"capacityInKB":4096,
                 "backing":{"_typeName":"VirtualDiskFlatVer2BackingInfo","fileName":"[LocalDS_1]","diskMode":"persistent","thinProvisioned":true}}}]}"#,
    )
    .expect("spec");
    let wait = |t: ManagedObjectReference| {
        let h = handle.clone();
        async move {
            let tracker = TaskTracker::new(h);
            tokio::time::timeout(Duration::from_secs(60), tracker.wait_any(t))
                .await
                .expect("in time")
                .expect("task succeeded")
        }
    };
    wait(vm_folder.create_vm_task(&spec, &pool, None).await.expect("CreateVM_Task")).await;
    let vm_ref = vm_folder
        .child_entity()
        .await
        .unwrap()
        .unwrap()
        .into_iter()
        .find(|m| m.r#type == vim_rs::types::enums::MoTypesEnum::VirtualMachine)
        .expect("the VM");
    let vm = VirtualMachine::new(handle.clone(), &vm_ref.value);
    wait(vm.create_snapshot_task("s1", Some("first"), false, false).await.expect("snapshot")).await;
    vm.unregister_vm().await.expect("UnregisterVM");
    client.close().await.expect("Logout");
    drop(srv);
    tokio::time::sleep(Duration::from_millis(300)).await;

    let bin = std::env::var("VTWIN_BIN").unwrap();
    for ds in ["LocalDS_0", "LocalDS_1"] {
        sh(&bin, &["datastore", "remount", ds, "--data-dir", dir.to_str().unwrap()]);
    }
    let (n0, n1) = (mount_of(&dir, "LocalDS_0"), mount_of(&dir, "LocalDS_1"));
    let srv = start_in(&dir, &["--datastores", "2"]).await;
    let client = ClientBuilder::new(&srv.addr)
        .basic_authn("administrator@vsphere.local", PW)
        .insecure(true)
        .build()
        .await
        .expect("login");
    let handle: VimClientHandle = client.clone();
    let dc = vim_rs::mo::Datacenter::new(handle.clone(), "datacenter-2");
    let stores = dc.datastore().await.expect("datastores").unwrap_or_default();
    let mut pairs = vec![];
    for ds in &stores {
        let name = Datastore::new(handle.clone(), &ds.value).name().await.unwrap();
        let old = if name == "LocalDS_0" { &m0 } else { &m1 };
        pairs.push(
            miniserde::json::from_str::<DatastoreMountPathDatastorePair>(&format!(
                r#"{{"_typeName":"DatastoreMountPathDatastorePair","oldMountPath":"{}","datastore":{{"_typeName":"ManagedObjectReference","type":"Datastore","value":"{}"}}}}"#,
                old.display(),
                ds.value
            ))
            .unwrap(),
        );
    }
    for ds in &stores {
        let t = Datastore::new(handle.clone(), &ds.value)
            .update_virtual_machine_files_task(&pairs)
            .await
            .expect("UpdateVirtualMachineFiles_Task");
        let tracker = TaskTracker::new(handle.clone());
        tokio::time::timeout(Duration::from_secs(60), tracker.wait_any(t)).await.expect("in time").expect("updated");
    }
    let vmx = std::fs::read_to_string(n0.join("rs-story/rs-story.vmx")).unwrap();
    let delta =
        vmx.lines().find(|l| l.starts_with("scsi0:1.fileName")).and_then(|l| l.split('"').nth(1)).unwrap().to_string();
    let chain = sh("qemu-img", &["info", "--backing-chain", n0.join("rs-story").join(&delta).to_str().unwrap()]);
    assert_eq!(chain.matches("image:").count(), 2, "{chain}");
    assert!(chain.contains(n1.to_str().unwrap()), "{chain}");
    let vm_folder = Folder::new(handle.clone(), &dc.vm_folder().await.unwrap().value);
    let t = vm_folder
        .register_vm_task("[LocalDS_0] rs-story/rs-story.vmx", None, false, None, None)
        .await
        .expect("RegisterVM_Task");
    let tracker = TaskTracker::new(handle.clone());
    tokio::time::timeout(Duration::from_secs(60), tracker.wait_any(t)).await.expect("in time").expect("registered");
    client.close().await.expect("Logout");
    drop(srv);
    let _ = std::fs::remove_dir_all(&dir);
}
