//! VirtualMachine: a `.vmx` file on a datastore, registered in a VM folder.
//! The files are the truth: configuration, disks and layout are read from
//! the `.vmx` (and the disk descriptors it names) each time they are asked
//! for. Power state is a recorded flag. Folder.RegisterVM_Task, UnregisterVM
//! and Destroy_Task live here.
use crate::engine::inventory::{Entity, Inventory};
use crate::engine::runner::TaskSpec;
use crate::engine::{Ctx, Engine, Fault, Reply};
use crate::store::ObjectRecord;
use std::path::{Path, PathBuf};
use vdisk::vmfiles::parse_kv;
use vmodl::value::Args;
use vmodl::{types, Data, MoRef, Value};

/// `[name] rel/path` → (datastore moId, real path).
pub fn resolve_ds_path(inv: &Inventory, path: &str) -> Result<(String, PathBuf), Fault> {
    let bad = || Fault::invalid_argument("path", format!("'{path}' is not a datastore path ([datastore] dir/file)"));
    let rest = path.trim().strip_prefix('[').ok_or_else(bad)?;
    let (name, rel) = rest.split_once(']').ok_or_else(bad)?;
    let e = inv.objects.values().find(|e| e.moref.ty == types::Datastore && e.name == name).ok_or_else(|| {
        Fault::new(types::InvalidDatastore, format!("no datastore named '{name}'")).with("name", name.to_string())
    })?;
    let rel = rel.trim().trim_start_matches('/');
    if rel.split('/').any(|c| c == "..") {
        return Err(bad());
    }
    Ok((e.moref.value.clone(), PathBuf::from(e.attr("path").unwrap_or_default()).join(rel)))
}

/// A real path as `[name] rel`, when it lies on a datastore.
pub fn to_ds_path(inv: &Inventory, file: &Path) -> Option<(String, String)> {
    let canon = |p: &Path| std::fs::canonicalize(p).unwrap_or_else(|_| p.to_path_buf());
    let f = canon(file);
    inv.objects.values().filter(|e| e.moref.ty == types::Datastore).find_map(|e| {
        let root = canon(Path::new(e.attr("path")?));
        let rel = f.strip_prefix(&root).ok()?;
        Some((e.moref.value.clone(), format!("[{}] {}", e.name, rel.to_string_lossy())))
    })
}

/// The `.vmx`: kept as (datastore, path in it), so a VM follows its
/// datastore to a new mount path.
fn vmx_path(inv: &Inventory, e: &Entity) -> PathBuf {
    let root = e.attr("ds").and_then(|d| inv.get(d)).and_then(|d| d.attr("path")).unwrap_or_default();
    PathBuf::from(root).join(e.attr("vmx").unwrap_or_default())
}

fn read_vmx(path: &Path) -> Result<Vec<(String, String)>, Fault> {
    let text = std::fs::read_to_string(path).map_err(|e| Fault::new(types::FileFault, format!("{}: {e}", path.display())).with("file", path.display().to_string()))?;
    Ok(parse_kv(&text))
}

fn get<'a>(kv: &'a [(String, String)], k: &str) -> Option<&'a str> {
    kv.iter().rev().find(|(key, _)| key.eq_ignore_ascii_case(k)).map(|(_, v)| v.as_str())
}

/// Every file of a VM: its directory, and the disk chains its `.vmx` names
/// (which may live on other datastores). (path, layoutEx type)
pub fn files(inv: &Inventory, e: &Entity) -> Vec<(PathBuf, &'static str)> {
    vm_files(inv, e, false)
}

/// The files destroying a VM removes: its directory and the top layer of
/// each disk it names elsewhere; a parent shared with another VM (a linked
/// clone's base) stays.
pub fn owned_files(inv: &Inventory, e: &Entity) -> Vec<PathBuf> {
    vm_files(inv, e, true).into_iter().map(|(p, _)| p).collect()
}

fn vm_files(inv: &Inventory, e: &Entity, own_only: bool) -> Vec<(PathBuf, &'static str)> {
    let vmx = vmx_path(inv, e);
    let dir = vmx.parent().map(Path::to_path_buf).unwrap_or_default();
    let mut out: Vec<(PathBuf, &'static str)> = vec![];
    if let Ok(rd) = std::fs::read_dir(&dir) {
        for f in rd.flatten().map(|f| f.path()) {
            let name = f.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
            let ty = match f.extension().and_then(|x| x.to_str()).unwrap_or("") {
                "vmx" => "config",
                "vmxf" => "extendedConfig",
                "vmsd" => "snapshotList",
                "nvram" => "nvram",
                "log" => "log",
                "vswp" => "swap",
                "vmsn" => "snapshotData",
                "vmdk" if name.ends_with("-flat.vmdk") || name.ends_with("-delta.vmdk") || name.contains("-s00") => "diskExtent",
                "vmdk" => "diskDescriptor",
                _ => continue,
            };
            out.push((f, ty));
        }
    }
    if let Ok(kv) = read_vmx(&vmx) {
        for (k, v) in &kv {
            if !k.to_ascii_lowercase().ends_with(".filename") || !v.ends_with(".vmdk") {
                continue;
            }
            let p = if v.starts_with('/') { PathBuf::from(v) } else { dir.join(v) };
            if let Ok(c) = vdisk::Chain::open_readonly(&p) {
                let layers = if own_only { 2 } else { usize::MAX };
                for (i, f) in c.files().into_iter().take(layers).enumerate() {
                    out.push((f, if i % 2 == 0 { "diskDescriptor" } else { "diskExtent" }));
                }
            }
        }
    }
    let canon = |p: &Path| std::fs::canonicalize(p).unwrap_or_else(|_| p.to_path_buf());
    let mut seen = std::collections::HashSet::new();
    out.retain(|(p, _)| seen.insert(canon(p)));
    out
}

/// The datastores holding any of a VM's files.
pub fn datastores(inv: &Inventory, e: &Entity) -> Vec<MoRef> {
    let mut v: Vec<String> = files(inv, e).iter().filter_map(|(p, _)| to_ds_path(inv, p).map(|x| x.0)).collect();
    v.sort();
    v.dedup();
    v.into_iter().map(|d| MoRef::new(types::Datastore, d)).collect()
}

pub fn property(eng: &Engine, inv: &Inventory, e: &Entity, name: &str) -> Option<Value> {
    let vmx = vmx_path(inv, e);
    let vm_path = to_ds_path(inv, &vmx).map(|x| x.1).unwrap_or_else(|| vmx.display().to_string());
    let kv = read_vmx(&vmx).unwrap_or_default();
    let power = e.attr("powerState").unwrap_or("poweredOff").to_string();
    let num = |k: &str, d: i32| get(&kv, k).and_then(|v| v.parse().ok()).unwrap_or(d);
    let guest = get(&kv, "guestOS").unwrap_or("otherGuest").to_string();
    let uuid = get(&kv, "uuid.bios").map(|u| u.replace([' ', '-'], "")).unwrap_or_default();
    let uuid = if uuid.len() == 32 { format!("{}-{}-{}-{}-{}", &uuid[0..8], &uuid[8..12], &uuid[12..16], &uuid[16..20], &uuid[20..32]) } else { e.moref.value.clone() };
    let template = e.attr("template") == Some("true");
    let runtime = || {
        Data::new(types::VirtualMachineRuntimeInfo)
            .with("connectionState", Value::enum_value(types::VirtualMachineConnectionState, "connected"))
            .with("powerState", Value::enum_value(types::VirtualMachinePowerState, power.clone()))
            .with("faultToleranceState", Value::enum_value(types::VirtualMachineFaultToleranceState, "notConfigured"))
            .with("toolsInstallerMounted", false)
            .with("numMksConnections", 0)
            .with("recordReplayState", Value::enum_value(types::VirtualMachineRecordReplayState, "inactive"))
            .with("onlineStandby", false)
            .with("consolidationNeeded", false)
    };
    Some(match name {
        "config" => {
            let files = Data::new(types::VirtualMachineFileInfo)
                .with("vmPathName", vm_path.clone())
                .with("snapshotDirectory", vm_path.rsplit_once('/').map(|(d, _)| d.to_string()).unwrap_or_default())
                .with("logDirectory", vm_path.rsplit_once('/').map(|(d, _)| d.to_string()).unwrap_or_default());
            Data::new(types::VirtualMachineConfigInfo)
                .with("changeVersion", std::fs::metadata(&vmx).and_then(|m| m.modified()).map(|t| format!("{:?}", t)).unwrap_or_default())
                .with("modified", chrono::Utc::now())
                .with("name", e.name.clone())
                .with("guestFullName", guest.clone())
                .with("version", format!("vmx-{}", get(&kv, "virtualHW.version").unwrap_or("19")))
                .with("uuid", uuid.clone())
                .with("template", template)
                .with("guestId", guest.clone())
                .with("alternateGuestName", "")
                .with("files", files)
                .with("flags", Data::new(types::VirtualMachineFlagInfo))
                .with("defaultPowerOps", Data::new(types::VirtualMachineDefaultPowerOpInfo))
                .with("hardware", Data::new(types::VirtualHardware).with("numCPU", num("numvcpus", 1)).with("memoryMB", num("memsize", 128)))
                .into()
        }
        "summary" => Data::new(types::VirtualMachineSummary)
            .with("vm", e.moref.clone())
            .with("runtime", runtime())
            .with(
                "config",
                Data::new(types::VirtualMachineConfigSummary)
                    .with("name", e.name.clone())
                    .with("template", template)
                    .with("vmPathName", vm_path)
                    .with("uuid", uuid)
                    .with("guestId", guest)
                    .with("numCpu", num("numvcpus", 1))
                    .with("memorySizeMB", num("memsize", 128)),
            )
            .with("quickStats", Data::new(types::VirtualMachineQuickStats))
            .with("overallStatus", Value::enum_value(types::ManagedEntityStatus, "green"))
            .into(),
        "runtime" => runtime().into(),
        "datastore" => super::refs(datastores(inv, e)),
        "layoutEx" => {
            let list: Vec<Value> = files(inv, e)
                .into_iter()
                .enumerate()
                .map(|(i, (p, ty))| {
                    let size = std::fs::metadata(&p).map(|m| m.len() as i64).unwrap_or(0);
                    let name = to_ds_path(inv, &p).map(|x| x.1).unwrap_or_else(|| p.display().to_string());
                    Data::new(types::VirtualMachineFileLayoutExFileInfo).with("key", i as i32).with("name", name).with("type", ty).with("size", size).into()
                })
                .collect();
            Data::new(types::VirtualMachineFileLayoutEx).with("file", Value::Array(types::VirtualMachineFileLayoutExFileInfo, list)).with("timestamp", chrono::Utc::now()).into()
        }
        "resourcePool" | "snapshot" | "rootSnapshot" | "network" => {
            let _ = eng;
            return None;
        }
        _ => return None,
    })
}

/// Folder.RegisterVM_Task: a VM from an existing `.vmx`.
pub fn register(eng: &Engine, ctx: &Ctx, folder: &MoRef, args: &Args) -> Reply {
    let path = args.str("path").unwrap_or("").to_string();
    let (ds, file) = resolve_ds_path(&eng.inv.read(), &path)?;
    let rel = path.split_once(']').map(|(_, r)| r.trim().trim_start_matches('/').to_string()).unwrap_or_default();
    if !file.is_file() {
        return Err(Fault::new(types::NotFound, format!("File {path} was not found")));
    }
    {
        let inv = eng.inv.read();
        let f = inv.get(&folder.value).ok_or_else(|| Fault::not_found(folder))?;
        let holds_vms = f.attrs.get("childType").and_then(|c| c.as_array()).is_some_and(|a| a.iter().any(|t| t == "VirtualMachine"));
        if !holds_vms {
            return Err(Fault::not_supported(format!("folder {} does not hold virtual machines", f.name)));
        }
        let canon = std::fs::canonicalize(&file).unwrap_or(file.clone());
        if inv.objects.values().any(|e| e.moref.ty == types::VirtualMachine && std::fs::canonicalize(vmx_path(&inv, e)).ok().as_ref() == Some(&canon)) {
            return Err(Fault::already_exists(&path));
        }
    }
    let as_template = args.get("asTemplate").and_then(Value::as_bool).unwrap_or(false);
    let name_arg = args.str("name").map(str::to_string);
    let folder2 = folder.clone();
    let spec = TaskSpec { method: "RegisterVM_Task", description_id: "Folder.registerVm".into(), entity: folder.clone(), cancelable: false, queue: None };
    eng.run_task(
        ctx,
        spec,
        Box::new(move |eng, _| {
            let kv = read_vmx(&file)?;
            let name = name_arg.filter(|n| !n.is_empty()).or_else(|| get(&kv, "displayName").map(str::to_string)).unwrap_or_else(|| file.file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_default());
            let mut inv = eng.inv.write();
            let moid = inv.alloc("vm");
            let attrs = serde_json::json!({"ds": ds, "vmx": rel, "powerState": "poweredOff", "template": as_template.to_string()});
            let rec = ObjectRecord { moid: moid.clone(), ty: "VirtualMachine".into(), name: name.clone(), parent: Some(folder2.value.clone()), attrs: attrs.clone() };
            eng.store.put_objects(&[rec])?;
            inv.insert(Entity { moref: MoRef::new(types::VirtualMachine, moid.clone()), name, parent: Some(folder2.value.clone()), children: vec![], attrs });
            drop(inv);
            eng.changed();
            Ok(Some(Value::MoRef(MoRef::new(types::VirtualMachine, moid))))
        }),
    )
}

fn unregister(eng: &Engine, this: &MoRef) -> Result<Entity, Fault> {
    let mut inv = eng.inv.write();
    let e = inv.get(&this.value).ok_or_else(|| Fault::not_found(this))?;
    if e.attr("powerState") == Some("poweredOn") {
        return Err(Fault::new(types::InvalidPowerState, "the virtual machine is powered on").with("existingState", Value::enum_value(types::VirtualMachinePowerState, "poweredOn")));
    }
    eng.store.delete_object(&this.value)?;
    let e = inv.remove(&this.value).expect("checked above");
    drop(inv);
    eng.changed();
    Ok(e)
}

pub fn invoke(eng: &Engine, ctx: &mut Ctx, this: &MoRef, method: &str, _args: Args) -> Option<Reply> {
    Some(match method {
        "UnregisterVM" => unregister(eng, this).map(|_| None),
        "Destroy_Task" => {
            let spec = TaskSpec { method: "Destroy_Task", description_id: "VirtualMachine.destroy".into(), entity: this.clone(), cancelable: false, queue: None };
            let this = this.clone();
            eng.run_task(
                ctx,
                spec,
                Box::new(move |eng, _| {
                    let (files, vmx) = {
                        let inv = eng.inv.read();
                        let e = inv.get(&this.value).ok_or_else(|| Fault::not_found(&this))?;
                        (owned_files(&inv, e), vmx_path(&inv, e))
                    };
                    unregister(eng, &this)?;
                    for f in files {
                        let _ = std::fs::remove_file(f);
                    }
                    if let Some(dir) = vmx.parent() {
                        let _ = std::fs::remove_dir(dir);
                    }
                    Ok(None)
                }),
            )
        }
        _ => return None,
    })
}
