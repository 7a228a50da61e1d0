//! Datastore: a directory under the data directory. Capacity and free space
//! are the real figures of the filesystem that holds it.
use super::refs;
use crate::engine::inventory::{Entity, Inventory};
use crate::engine::runner::TaskSpec;
use crate::engine::storage::datastores::{fs_space, mount_path};
use crate::engine::{Ctx, Engine, Fault, Reply};
use std::path::Path;
use vdisk::vmfiles::{update_tree, Mapping, Summary};
use vmodl::value::Args;
use vmodl::{types, Data, MoRef, Value};

/// At most this many failed files are listed in a result.
const MAX_FAILED_LISTED: usize = 100;

pub fn invoke(eng: &Engine, ctx: &mut Ctx, this: &MoRef, method: &str, args: Args) -> Option<Reply> {
    Some(match method {
        "UpdateVirtualMachineFiles_Task" => update_vm_files(eng, ctx, this, &args),
        _ => return None,
    })
}

fn update_vm_files(eng: &Engine, ctx: &Ctx, this: &MoRef, args: &Args) -> Reply {
    let (maps, targets) = mappings(eng, ctx, args)?;
    let (root, name) = {
        let inv = eng.inv.read();
        let e = inv.get(&this.value).ok_or_else(|| Fault::not_found(this))?;
        (std::path::PathBuf::from(mount_path(e)), e.name.clone())
    };
    not_in_use(eng, std::iter::once(this).chain(&targets))?;
    let mounted = eng
        .inv
        .read()
        .get(&this.value)
        .and_then(|e| e.attrs.get("mounted").and_then(serde_json::Value::as_bool))
        .unwrap_or(true);
    if !root.is_dir() || !mounted {
        return Err(Fault::new(types::InvalidDatastore, format!("datastore {name} is not accessible"))
            .with("datastore", this.clone())
            .with("name", name));
    }
    // One update per datastore at a time: reserve it before the task exists.
    {
        let mut busy = eng.busy_datastores.lock();
        if let Some(running) = busy.get(&this.value) {
            return Err(Fault::new(
                types::TaskInProgress,
                format!("an update of the files on {name} is already running"),
            )
            .with("task", MoRef::new(types::Task, running.clone())));
        }
        busy.insert(this.value.clone(), String::new());
    }
    let spec = TaskSpec::on("UpdateVirtualMachineFiles_Task", "Datastore.updateVirtualMachineFiles", this.clone());
    let ds = this.value.clone();
    let started = eng.run_task(
        ctx,
        spec,
        Box::new(move |eng, ctl| {
            let mut last = -1;
            let summary = update_tree(&root, &maps, &mut |done, total| {
                let p = (done * 100 / total.max(1)) as i32;
                if p != last {
                    ctl.progress(p);
                    last = p;
                }
            });
            eng.busy_datastores.lock().remove(&ds);
            Ok(Some(update_result(&summary, &root, &name)))
        }),
    );
    let mut busy = eng.busy_datastores.lock();
    match &started {
        // Name the task, unless it has already finished and let go.
        Ok(Some(Value::MoRef(t))) => {
            if let Some(k) = busy.get_mut(&this.value).filter(|k| k.is_empty()) {
                *k = t.value.clone();
            }
        }
        _ => {
            busy.remove(&this.value);
        }
    }
    started
}

/// The mountPathDatastoreMapping: each old path names one datastore that
/// exists and the caller may update. The mappings, and the datastores.
fn mappings(eng: &Engine, ctx: &Ctx, args: &Args) -> Result<(Vec<Mapping>, Vec<MoRef>), Fault> {
    let pairs: Vec<(String, MoRef)> = args
        .get("mountPathDatastoreMapping")
        .and_then(Value::as_array)
        .unwrap_or(&[])
        .iter()
        .filter_map(Value::as_data)
        .map(|d| {
            (
                d.str("oldMountPath").unwrap_or("").to_string(),
                d.get("datastore")
                    .and_then(Value::as_moref)
                    .cloned()
                    .unwrap_or_else(|| MoRef::new(types::Datastore, "")),
            )
        })
        .collect();
    let norm = |p: &str| p.trim_end_matches('/').to_string();
    let mut maps = vec![];
    for (old, ds) in &pairs {
        if old.trim().is_empty() {
            return Err(Fault::invalid_argument(
                "mountPathDatastoreMapping.oldMountPath",
                "oldMountPath must not be empty",
            ));
        }
        let new = eng.inv.read().get(&ds.value).filter(|e| e.moref.ty == types::Datastore).map(mount_path);
        let Some(new) = new else {
            return Err(Fault::invalid_argument(
                "mountPathDatastoreMapping.datastore",
                format!("datastore {} does not exist", ds.value),
            ));
        };
        if pairs.iter().any(|(o, d)| norm(o) == norm(old) && d.value != ds.value) {
            return Err(Fault::invalid_argument(
                "mountPathDatastoreMapping",
                format!("old mount path {old} is mapped to more than one datastore"),
            ));
        }
        eng.check(ctx, ds, "Datastore.UpdateVirtualMachineFiles")?;
        maps.push(Mapping { old: norm(old), new });
    }
    Ok((maps, pairs.into_iter().map(|(_, d)| d).collect()))
}

/// No registered VM has files on these datastores (it would read them
/// mid-update): ResourceInUse.
fn not_in_use<'a>(eng: &Engine, datastores: impl Iterator<Item = &'a MoRef>) -> Result<(), Fault> {
    let involved: Vec<&str> = datastores.map(|d| d.value.as_str()).collect();
    let inv = eng.inv.read();
    let vm = inv
        .objects
        .values()
        .filter(|v| v.moref.ty == types::VirtualMachine)
        .find(|v| super::virtual_machine::datastores(&inv, v).iter().any(|d| involved.contains(&d.value.as_str())));
    match vm {
        Some(vm) => Err(Fault::new(
            types::ResourceInUse,
            format!("virtual machine {} has files on the datastore; unregister it first", vm.name),
        )
        .with("type", "VirtualMachine")
        .with("name", vm.name.clone())),
        None => Ok(()),
    }
}

/// UpdateVirtualMachineFilesResult: the files that could not be updated
/// (at most MAX_FAILED_LISTED), as datastore paths.
fn update_result(summary: &Summary, root: &Path, name: &str) -> Value {
    let failed: Vec<Value> = summary
        .failed
        .iter()
        .take(MAX_FAILED_LISTED)
        .map(|f| {
            let rel = f
                .path
                .strip_prefix(root)
                .map_or_else(|_| f.path.to_string_lossy().into_owned(), |p| p.to_string_lossy().into_owned());
            let file = format!("[{name}] {rel}");
            let fault = Fault::new(types::FileFault, format!("{file}: {}", f.reason)).with("file", file.clone());
            Data::new(types::UpdateVirtualMachineFilesResultFailedVmFileInfo)
                .with("vmFile", file)
                .with("fault", fault.data)
                .into()
        })
        .collect();
    Data::new(types::UpdateVirtualMachineFilesResult)
        .with("failedVmFile", Value::Array(types::UpdateVirtualMachineFilesResultFailedVmFileInfo, failed))
        .into()
}

pub fn property(inv: &Inventory, e: &Entity, name: &str) -> Option<Value> {
    let path = e.attr("path").unwrap_or_default();
    // Only the properties that report space ask the filesystem.
    let mounted = e.attrs.get("mounted").and_then(serde_json::Value::as_bool).unwrap_or(true);
    let space = || {
        let s = if mounted { fs_space(path) } else { None };
        (s.is_some(), s.unwrap_or((0, 0)))
    };
    let url = e.attr("url").unwrap_or_default().to_string();
    Some(match name {
        "summary" => {
            let (accessible, (capacity, free)) = space();
            let mut d = Data::new(types::DatastoreSummary)
                .with("datastore", e.moref.clone())
                .with("name", e.name.clone())
                .with("url", url)
                .with("capacity", capacity)
                .with("freeSpace", free)
                .with("uncommitted", 0i64)
                .with("accessible", accessible)
                .with("multipleHostAccess", false)
                .with("type", "OTHER");
            d.set("maintenanceMode", "normal");
            d.into()
        }
        "info" => {
            let (_, (capacity, free)) = space();
            Data::new(types::LocalDatastoreInfo)
                .with("name", e.name.clone())
                .with("url", url)
                .with("freeSpace", free)
                .with("maxFileSize", capacity)
                .with("maxVirtualDiskCapacity", capacity)
                .with("maxMemoryFileSize", capacity)
                .with("timestamp", chrono::Utc::now())
                .with("containerId", e.attr("uuid").unwrap_or_default().to_string())
                .with("path", path.to_string())
                .into()
        }
        "host" => {
            let (accessible, _) = space();
            let dc = inv.datacenter_of(&e.moref.value)?;
            Value::Array(
                types::DatastoreHostMount,
                inv.in_datacenter(&dc.moref.value, types::HostSystem)
                    .into_iter()
                    .map(|h| {
                        Data::new(types::DatastoreHostMount)
                            .with("key", h)
                            .with(
                                "mountInfo",
                                Data::new(types::HostMountInfo)
                                    .with("path", mount_path(e))
                                    .with("accessMode", "readWrite")
                                    .with("mounted", mounted)
                                    .with("accessible", accessible),
                            )
                            .into()
                    })
                    .collect(),
            )
        }
        "vm" => refs(
            inv.objects
                .values()
                .filter(|v| v.moref.ty == types::VirtualMachine)
                .filter(|v| super::virtual_machine::datastores(inv, v).iter().any(|d| d.value == e.moref.value))
                .map(|v| v.moref.clone()),
        ),
        "capability" => Data::new(types::DatastoreCapability)
            .with("directoryHierarchySupported", true)
            .with("rawDiskMappingsSupported", false)
            .with("perFileThinProvisioningSupported", true)
            .with("storageIORMSupported", false)
            .with("nativeSnapshotSupported", false)
            .with("topLevelDirectoryCreateSupported", true)
            .with("seSparseSupported", false)
            .into(),
        _ => return None,
    })
}
