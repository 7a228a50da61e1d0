//! VirtualMachine: a `.vmx` file on a datastore, registered in a VM folder.
//! The files are the truth: configuration, disks and layout are read from
//! the `.vmx` (and the disk descriptors it names) each time they are asked
//! for. Power state is a recorded flag. Folder.RegisterVM_Task, UnregisterVM
//! and Destroy_Task live here.
use crate::engine::inventory::{Entity, Inventory};
use crate::engine::runner::TaskSpec;
use crate::engine::vm::{dashed_uuid, read_vmx, vmx_path};
use crate::engine::{Ctx, Engine, Fault, Reply};
use crate::store::ObjectRecord;
use std::path::{Path, PathBuf};
use vmodl::value::Args;
use vmodl::{types, Data, MoRef, Value};

/// `[name] rel/path` → (datastore moId, real path).
/// The path is proven inside the datastore (`engine::paths`).
pub fn resolve_ds_path(inv: &Inventory, path: &str) -> Result<(String, PathBuf), Fault> {
    let p = crate::engine::paths::resolve(inv, path, "path")?;
    Ok((p.datastore, p.path))
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

/// When a file was last modified, as a vim25 dateTime.
fn modified(p: &Path) -> Option<chrono::DateTime<chrono::Utc>> {
    std::fs::metadata(p).and_then(|m| m.modified()).ok().map(chrono::DateTime::from)
}

/// A configuration's change version: the time of its last change, to the
/// microsecond, as vCenter shows it.
fn change_version(t: chrono::DateTime<chrono::Utc>) -> String {
    t.format("%Y-%m-%dT%H:%M:%S%.6fZ").to_string()
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
                "vmdk" if name.ends_with("-flat.vmdk") || name.ends_with("-delta.vmdk") || name.contains("-s00") => {
                    "diskExtent"
                }
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
                // The VM owns the layers in its directory and in directories
                // of the same name on other datastores (where its disks go);
                // a linked clone's parent in another VM's directory stays.
                let own_name = dir.file_name().map(std::ffi::OsStr::to_os_string);
                let owned =
                    |f: &PathBuf| f.parent().and_then(|d| d.file_name()).map(std::ffi::OsStr::to_os_string) == own_name;
                // First-class disks (attached volumes) outlive the VM.
                let fcd = |f: &PathBuf| {
                    f.parent().and_then(Path::parent).and_then(Path::file_name).is_some_and(|n| n == "fcd")
                };
                for (i, f) in
                    c.files().into_iter().enumerate().filter(|(i, f)| !own_only || ((*i < 2 || owned(f)) && !fcd(f)))
                {
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
    let _ = eng;
    Some(match name {
        "config" => VmFile::read(inv, e).config(inv, e).into(),
        "summary" => VmFile::read(inv, e).summary(e).into(),
        "runtime" => VmFile::read(inv, e).runtime().into(),
        "datastore" => super::refs(datastores(inv, e)),
        "layoutEx" => layout_ex(inv, e).into(),
        "resourcePool" => return e.attr("pool").and_then(|p| inv.get(p)).map(|p| Value::MoRef(p.moref.clone())),
        "snapshot" | "rootSnapshot" => return super::virtual_machine_snapshot::vm_property(inv, &e.moref.value, name),
        _ => return None,
    })
}

/// What the properties read from a VM's .vmx.
struct VmFile {
    vmx: PathBuf,
    /// `[ds] dir/name.vmx`.
    vm_path: String,
    kv: Vec<(String, String)>,
    power: String,
    guest: String,
    uuid: String,
    template: bool,
}

impl VmFile {
    fn read(inv: &Inventory, e: &Entity) -> VmFile {
        let vmx = vmx_path(inv, e);
        let vm_path = to_ds_path(inv, &vmx).map_or_else(|| vmx.display().to_string(), |x| x.1);
        let kv = read_vmx(&vmx).unwrap_or_default();
        let guest = get(&kv, "guestOS").unwrap_or("otherGuest").to_string();
        let uuid = get(&kv, "uuid.bios").map(|u| u.replace([' ', '-'], "")).unwrap_or_default();
        let uuid = if uuid.len() == 32 {
            format!("{}-{}-{}-{}-{}", &uuid[0..8], &uuid[8..12], &uuid[12..16], &uuid[16..20], &uuid[20..32])
        } else {
            e.moref.value.clone()
        };
        VmFile {
            vmx,
            vm_path,
            kv,
            power: e.attr("powerState").unwrap_or("poweredOff").to_string(),
            guest,
            uuid,
            template: e.attr("template") == Some("true"),
        }
    }

    fn num(&self, k: &str, default: i32) -> i32 {
        get(&self.kv, k).and_then(|v| v.parse().ok()).unwrap_or(default)
    }

    fn runtime(&self) -> Data {
        Data::new(types::VirtualMachineRuntimeInfo)
            .with("connectionState", Value::enum_value(types::VirtualMachineConnectionState, "connected"))
            .with("powerState", Value::enum_value(types::VirtualMachinePowerState, self.power.clone()))
            .with("faultToleranceState", Value::enum_value(types::VirtualMachineFaultToleranceState, "notConfigured"))
            .with("toolsInstallerMounted", false)
            .with("numMksConnections", 0)
            .with("recordReplayState", Value::enum_value(types::VirtualMachineRecordReplayState, "inactive"))
            .with("onlineStandby", false)
            .with("consolidationNeeded", false)
    }

    fn config(&self, inv: &Inventory, e: &Entity) -> Data {
        // The configuration changes when its file does: the .vmx's
        // modification time is `modified`, and the change version is that
        // time as vCenter writes one (`2024-01-18T10:05:26.129577Z`), the
        // same for as long as the file is unchanged.
        let changed = modified(&self.vmx);
        let dir = self.vm_path.rsplit_once('/').map(|(d, _)| d.to_string()).unwrap_or_default();
        let files = Data::new(types::VirtualMachineFileInfo)
            .with("vmPathName", self.vm_path.clone())
            .with("snapshotDirectory", dir.clone())
            .with("logDirectory", dir);
        Data::new(types::VirtualMachineConfigInfo)
            .with("changeVersion", changed.map(change_version).unwrap_or_default())
            .with("modified", changed.unwrap_or_else(chrono::Utc::now))
            .with("name", e.name.clone())
            .with("guestFullName", self.guest.clone())
            .with("version", format!("vmx-{}", get(&self.kv, "virtualHW.version").unwrap_or("19")))
            .with("uuid", self.uuid.clone())
            .with("template", self.template)
            .with("guestId", self.guest.clone())
            .with("alternateGuestName", "")
            .with("files", files)
            .with("flags", Data::new(types::VirtualMachineFlagInfo))
            .with("defaultPowerOps", Data::new(types::VirtualMachineDefaultPowerOpInfo))
            .with(
                "hardware",
                Data::new(types::VirtualHardware)
                    .with("numCPU", self.num("numvcpus", 1))
                    .with("memoryMB", self.num("memsize", 128))
                    .with("device", Value::Array(types::VirtualDevice, devices(inv, &self.vmx, &self.kv))),
            )
    }

    fn summary(&self, e: &Entity) -> Data {
        Data::new(types::VirtualMachineSummary)
            .with("vm", e.moref.clone())
            .with("runtime", self.runtime())
            .with(
                "config",
                Data::new(types::VirtualMachineConfigSummary)
                    .with("name", e.name.clone())
                    .with("template", self.template)
                    .with("vmPathName", self.vm_path.clone())
                    .with("uuid", self.uuid.clone())
                    .with("guestId", self.guest.clone())
                    .with("numCpu", self.num("numvcpus", 1))
                    .with("memorySizeMB", self.num("memsize", 128)),
            )
            .with("quickStats", Data::new(types::VirtualMachineQuickStats))
            .with("overallStatus", Value::enum_value(types::ManagedEntityStatus, "green"))
    }
}

/// The VM's files, with sizes; stamped with the time of the newest.
fn layout_ex(inv: &Inventory, e: &Entity) -> Data {
    let all = files(inv, e);
    let list: Vec<Value> = all
        .iter()
        .enumerate()
        .map(|(i, (p, ty))| {
            let size = std::fs::metadata(p).map_or(0, |m| m.len() as i64);
            let name = to_ds_path(inv, p).map_or_else(|| p.display().to_string(), |x| x.1);
            Data::new(types::VirtualMachineFileLayoutExFileInfo)
                .with("key", i as i32)
                .with("name", name)
                .with("type", *ty)
                .with("size", size)
                .into()
        })
        .collect();
    let newest = all.iter().filter_map(|(p, _)| modified(p)).max();
    Data::new(types::VirtualMachineFileLayoutEx)
        .with("file", Value::Array(types::VirtualMachineFileLayoutExFileInfo, list))
        .with("timestamp", newest.unwrap_or_else(chrono::Utc::now))
}

const SCSI_KINDS: &[(&str, vmodl::TypeId)] = &[
    ("lsilogic", types::VirtualLsiLogicController),
    ("pvscsi", types::ParaVirtualSCSIController),
    ("lsisas1068", types::VirtualLsiLogicSASController),
    ("buslogic", types::VirtualBusLogicController),
];

/// The SCSI controllers and disks a `.vmx` describes, as VirtualDevices.
fn devices(inv: &Inventory, vmx: &Path, kv: &[(String, String)]) -> Vec<Value> {
    let dir = vmx.parent().map(Path::to_path_buf).unwrap_or_default();
    let mut out = vec![];
    for bus in 0..4 {
        if get(kv, &format!("scsi{bus}.present")).is_none_or(|v| !v.eq_ignore_ascii_case("true")) {
            continue;
        }
        let kind = get(kv, &format!("scsi{bus}.virtualDev")).unwrap_or("lsilogic");
        let ty = SCSI_KINDS.iter().find(|(k, _)| *k == kind).map_or(types::VirtualLsiLogicController, |(_, t)| *t);
        let mut units = vec![];
        for unit in 0..16 {
            let Some(file) = get(kv, &format!("scsi{bus}:{unit}.fileName")) else { continue };
            let path = if file.starts_with('/') { PathBuf::from(file) } else { dir.join(file) };
            let chain = vdisk::Chain::open_readonly(&path).ok();
            let cap = chain.as_ref().map_or(0, vdisk::Chain::capacity) as i64;
            let (ds, name) = to_ds_path(inv, &path).unwrap_or_else(|| (String::new(), path.display().to_string()));
            let thin = chain.as_ref().is_some_and(|c| c.top().ddb("thinProvisioned") != Some("0"));
            let key = 2000 + bus * 16 + unit;
            units.push(Value::Int(key));
            let mut backing = Data::new(types::VirtualDiskFlatVer2BackingInfo)
                .with("fileName", name)
                .with("diskMode", "persistent")
                .with("thinProvisioned", thin);
            if !ds.is_empty() {
                backing.set("datastore", MoRef::new(types::Datastore, ds));
            }
            if let Some(cid) = chain.as_ref().map(|c| format!("{:08x}", c.top().cid)) {
                backing.set("contentId", cid);
            }
            if let Some(u) = chain.as_ref().and_then(|c| c.top().ddb("uuid").map(dashed_uuid)) {
                backing.set("uuid", u);
            }
            // A first-class disk (`…/fcd/<id>/…`) attached to the VM.
            let fcd = path
                .parent()
                .filter(|d| d.parent().and_then(|p| p.file_name()).is_some_and(|n| n == "fcd"))
                .and_then(|d| d.file_name())
                .map(|n| n.to_string_lossy().into_owned());
            out.push(
                Data::new(types::VirtualDisk)
                    .with("key", key)
                    .with(
                        "deviceInfo",
                        Data::new(types::Description)
                            .with("label", format!("Hard disk {}", out.len() + 1))
                            .with("summary", format!("{} KB", cap / 1024)),
                    )
                    .with("backing", backing)
                    .with("controllerKey", 1000 + bus)
                    .with("unitNumber", unit)
                    .with("capacityInKB", cap / 1024)
                    .with("capacityInBytes", cap)
                    .with_opt("vDiskId", fcd.map(|id| Data::new(types::ID).with("id", id)))
                    .into(),
            );
        }
        out.push(
            Data::new(ty)
                .with("key", 1000 + bus)
                .with(
                    "deviceInfo",
                    Data::new(types::Description)
                        .with("label", format!("SCSI controller {bus}"))
                        .with("summary", kind.to_string()),
                )
                .with("busNumber", bus)
                .with("device", Value::Array(types::int, units))
                .with("hotAddRemove", true)
                .with("sharedBus", Value::enum_value(types::VirtualSCSISharing, "noSharing"))
                .with("scsiCtlrUnitNumber", 7)
                .into(),
        );
    }
    out
}

/// Folder.CreateVM_Task: write the `.vmx`, the disks (on any datastore)
/// and the other files, then register the VM.
pub fn create(eng: &Engine, ctx: &Ctx, folder: &MoRef, args: &Args) -> Reply {
    let vm = NewVm::plan(eng, folder, args)?;
    let task = TaskSpec::on("CreateVM_Task", "Folder.createVm", folder.clone());
    let folder = folder.clone();
    eng.run_task(ctx, task, Box::new(move |eng, ctl| vm.make(eng, ctl, &folder)))
}

/// A SCSI controller of a new VM: (device key, bus number, virtualDev).
type NewBus = (i64, i64, &'static str);

/// A disk of a new VM, where it goes.
struct NewDisk {
    bus: i64,
    unit: i64,
    capacity: u64,
    provisioning: vdisk::chain::Provisioning,
    path: PathBuf,
}

/// What CreateVM_Task makes, checked before the task starts.
struct NewVm {
    name: String,
    pool: String,
    /// The datastore of the .vmx.
    ds: String,
    vmx: PathBuf,
    dir: PathBuf,
    buses: Vec<NewBus>,
    disks: Vec<NewDisk>,
    guest: String,
    cpus: i64,
    memory_mb: i64,
}

/// A disk the spec asks for: (controller key, unit, bytes, provisioning,
/// backing fileName).
type SpecDisk = (i64, i64, u64, vdisk::chain::Provisioning, String);

impl NewVm {
    fn plan(eng: &Engine, folder: &MoRef, args: &Args) -> Result<NewVm, Fault> {
        let spec = args
            .get("config")
            .and_then(Value::as_data)
            .ok_or_else(|| Fault::invalid_argument("config", "config is required"))?
            .clone();
        let name = spec.str("name").unwrap_or("").trim().to_string();
        if name.is_empty() || name.contains('/') || name.chars().count() > 80 {
            return Err(Fault::new(types::InvalidName, format!("'{name}' is not a valid virtual machine name"))
                .with("name", name));
        }
        let pool = args
            .get("pool")
            .and_then(Value::as_moref)
            .cloned()
            .ok_or_else(|| Fault::invalid_argument("pool", "pool is required"))?;
        let vm_path =
            spec.get("files").and_then(Value::as_data).and_then(|f| f.str("vmPathName")).unwrap_or("").to_string();
        let inv = eng.inv.read();
        check_folder(&inv, folder, &name)?;
        // "[ds]" or "[ds] dir/name.vmx".
        let (ds, target) = resolve_ds_path(&inv, &vm_path)?;
        let vmx = if vm_path.trim_end().ends_with(']') || target.extension().is_none() {
            target.join(&name).join(format!("{name}.vmx"))
        } else {
            target
        };
        if vmx.exists() {
            return Err(Fault::new(types::FileAlreadyExists, format!("{vm_path} already exists"))
                .with("file", vmx.display().to_string()));
        }
        let dir = vmx.parent().map(Path::to_path_buf).unwrap_or_default();
        let (mut buses, disks) = devices_of(&spec)?;
        let disks = place_disks(&inv, &name, &dir, &buses, disks)?;
        drop(inv);
        if buses.is_empty() && !disks.is_empty() {
            buses.push((1000, 0, "lsilogic"));
        }
        Ok(NewVm {
            name,
            pool: pool.value,
            ds,
            vmx,
            dir,
            buses,
            disks,
            guest: spec.str("guestId").unwrap_or("otherGuest64").to_string(),
            cpus: spec.get("numCPUs").and_then(Value::as_i64).unwrap_or(1),
            memory_mb: spec.get("memoryMB").and_then(Value::as_i64).unwrap_or(128),
        })
    }

    /// The task: the files (disks, .vmx, .nvram, .vmsd), then the entity.
    fn make(self, eng: &Engine, ctl: &crate::engine::runner::TaskCtl, folder: &MoRef) -> Reply {
        let fault = |p: &Path, e: &dyn std::fmt::Display| {
            Fault::new(types::FileFault, e.to_string()).with("file", p.display().to_string())
        };
        std::fs::create_dir_all(&self.dir).map_err(|e| fault(&self.dir, &e))?;
        let uuid = uuid::Uuid::new_v4().simple().to_string();
        let mut kv = self.vmx_pairs(&uuid);
        let total = self.disks.len().max(1);
        for (i, d) in self.disks.iter().enumerate() {
            if let Some(parent) = d.path.parent() {
                std::fs::create_dir_all(parent).map_err(|e| fault(&self.dir, &e))?;
            }
            vdisk::Chain::create(&d.path, d.capacity, d.provisioning, &uuid).map_err(|e| fault(&d.path, &e))?;
            // In the VM's directory by name, elsewhere by mount path.
            let file = if d.path.parent() == Some(self.dir.as_path()) {
                d.path.file_name().map(|f| f.to_string_lossy().into_owned()).unwrap_or_default()
            } else {
                d.path.display().to_string()
            };
            let slot = format!("scsi{}:{}", d.bus, d.unit);
            kv.push((format!("{slot}.present"), "TRUE".into()));
            kv.push((format!("{slot}.fileName"), file));
            kv.push((format!("{slot}.deviceType"), "scsi-hardDisk".into()));
            ctl.progress(((i + 1) * 90 / total) as i32);
        }
        let write = |p: PathBuf, text: String| vdisk::chain::write_atomic(&p, &text).map_err(|e| fault(&p, &e));
        write(self.dir.join(format!("{}.nvram", self.name)), String::new())?;
        write(self.dir.join(format!("{}.vmsd", self.name)), ".encoding = \"UTF-8\"\n".into())?;
        write(self.vmx.clone(), vdisk::vmfiles::render_kv(&kv))?;
        let rel = to_ds_path(&eng.inv.read(), &self.vmx).map(|x| x.1).unwrap_or_default();
        let rel = rel.split_once(']').map(|(_, r)| r.trim().to_string()).unwrap_or_default();
        let attrs = serde_json::json!({"ds": self.ds, "vmx": rel, "powerState": "poweredOff", "template": "false", "pool": self.pool});
        let mut inv = eng.inv.write();
        let moid = inv.alloc("vm");
        let parent = Some(folder.value.clone());
        let rec = ObjectRecord {
            moid: moid.clone(),
            ty: "VirtualMachine".into(),
            name: self.name.clone(),
            parent: parent.clone(),
            attrs: attrs.clone(),
        };
        eng.store.put_objects(&[rec])?;
        let moref = MoRef::new(types::VirtualMachine, moid);
        inv.insert(Entity { moref: moref.clone(), name: self.name, parent, children: vec![], attrs });
        drop(inv);
        eng.changed();
        Ok(Some(Value::MoRef(moref)))
    }

    /// The .vmx's settings before the disks.
    fn vmx_pairs(&self, uuid: &str) -> Vec<(String, String)> {
        let p: Vec<String> = (0..16).map(|i| uuid[2 * i..2 * i + 2].to_string()).collect();
        let mut kv: Vec<(String, String)> = vec![
            ("config.version".into(), "8".into()),
            ("virtualHW.version".into(), "19".into()),
            ("displayName".into(), self.name.clone()),
            ("guestOS".into(), self.guest.clone()),
            ("numvcpus".into(), self.cpus.to_string()),
            ("memsize".into(), self.memory_mb.to_string()),
            ("uuid.bios".into(), format!("{}-{}", p[..8].join(" "), p[8..].join(" "))),
            ("nvram".into(), format!("{}.nvram", self.name)),
        ];
        for (_, bus, kind) in &self.buses {
            kv.push((format!("scsi{bus}.present"), "TRUE".into()));
            kv.push((format!("scsi{bus}.virtualDev"), kind.to_string()));
        }
        kv
    }
}

/// The folder holds VMs and none named `name`.
fn check_folder(inv: &Inventory, folder: &MoRef, name: &str) -> Result<(), Fault> {
    let f = inv.get(&folder.value).ok_or_else(|| Fault::not_found(folder))?;
    if !f.attrs.get("childType").and_then(|c| c.as_array()).is_some_and(|a| a.iter().any(|t| t == "VirtualMachine")) {
        return Err(Fault::not_supported(format!("folder {} does not hold virtual machines", f.name)));
    }
    if f.children.iter().filter_map(|c| inv.get(c)).any(|c| c.moref.ty == types::VirtualMachine && c.name == name) {
        return Err(Fault::new(types::DuplicateName, format!("The name '{name}' already exists."))
            .with("name", name.to_string())
            .with("object", folder.clone()));
    }
    Ok(())
}

/// The controllers (by key) and disks a ConfigSpec's deviceChange adds.
fn devices_of(spec: &Data) -> Result<(Vec<NewBus>, Vec<SpecDisk>), Fault> {
    let mut buses: Vec<NewBus> = vec![];
    let mut disks: Vec<SpecDisk> = vec![];
    for ch in spec.get("deviceChange").and_then(Value::as_array).unwrap_or(&[]).iter().filter_map(Value::as_data) {
        let Some(dev) = ch.get("device").and_then(Value::as_data) else { continue };
        let key = dev.get("key").and_then(Value::as_i64).unwrap_or(0);
        if let Some((kind, _)) = SCSI_KINDS.iter().find(|(_, t)| dev.ty.is_a(*t)) {
            buses.push((key, dev.get("busNumber").and_then(Value::as_i64).unwrap_or(buses.len() as i64), kind));
        } else if dev.ty.is_a(types::VirtualDisk) {
            let cap = dev
                .get("capacityInBytes")
                .and_then(Value::as_i64)
                .filter(|c| *c > 0)
                .or_else(|| dev.get("capacityInKB").and_then(Value::as_i64).map(|k| k * 1024))
                .unwrap_or(0);
            if cap <= 0 || cap % 512 != 0 {
                return Err(Fault::invalid_argument(
                    "config.deviceChange.device.capacityInKB",
                    format!("disk capacity {cap} bytes is not a positive multiple of 512"),
                ));
            }
            let b = dev.get("backing").and_then(Value::as_data);
            let prov = match (
                b.and_then(|b| b.get("thinProvisioned")).and_then(Value::as_bool),
                b.and_then(|b| b.get("eagerlyScrub")).and_then(Value::as_bool),
            ) {
                (Some(true), _) => vdisk::chain::Provisioning::Thin,
                (_, Some(true)) => vdisk::chain::Provisioning::EagerZeroed,
                _ => vdisk::chain::Provisioning::LazyZeroed,
            };
            disks.push((
                dev.get("controllerKey").and_then(Value::as_i64).unwrap_or(1000),
                dev.get("unitNumber").and_then(Value::as_i64).unwrap_or(disks.len() as i64),
                cap as u64,
                prov,
                b.and_then(|b| b.str("fileName")).unwrap_or("").to_string(),
            ));
        }
    }
    Ok((buses, disks))
}

/// Where each disk goes: the VM's directory, or the datastore its backing
/// names (then the .vmx holds the mount path, as ESXi's do).
fn place_disks(
    inv: &Inventory,
    name: &str,
    dir: &Path,
    buses: &[NewBus],
    disks: Vec<SpecDisk>,
) -> Result<Vec<NewDisk>, Fault> {
    let mut placed = vec![];
    for (i, (ck, unit, capacity, provisioning, file)) in disks.into_iter().enumerate() {
        let stem = if i == 0 { name.to_string() } else { format!("{name}_{i}") };
        let path = if file.trim().is_empty() {
            dir.join(format!("{stem}.vmdk"))
        } else {
            let (_, p) = resolve_ds_path(inv, &file)?;
            if file.trim_end().ends_with(']') || p.extension().is_none() {
                p.join(name).join(format!("{stem}.vmdk"))
            } else {
                p
            }
        };
        let bus = buses.iter().find(|b| b.0 == ck).map_or(0, |b| b.1);
        placed.push(NewDisk { bus, unit, capacity, provisioning, path });
    }
    Ok(placed)
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
        let holds_vms = f
            .attrs
            .get("childType")
            .and_then(|c| c.as_array())
            .is_some_and(|a| a.iter().any(|t| t == "VirtualMachine"));
        if !holds_vms {
            return Err(Fault::not_supported(format!("folder {} does not hold virtual machines", f.name)));
        }
        let canon = std::fs::canonicalize(&file).unwrap_or(file.clone());
        if inv.objects.values().any(|e| {
            e.moref.ty == types::VirtualMachine
                && std::fs::canonicalize(vmx_path(&inv, e)).ok().as_ref() == Some(&canon)
        }) {
            return Err(Fault::already_exists(&path));
        }
    }
    let as_template = args.get("asTemplate").and_then(Value::as_bool).unwrap_or(false);
    let name_arg = args.str("name").map(str::to_string);
    let folder2 = folder.clone();
    let spec = TaskSpec::on("RegisterVM_Task", "Folder.registerVm", folder.clone());
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
        return Err(Fault::new(types::InvalidPowerState, "the virtual machine is powered on")
            .with("existingState", Value::enum_value(types::VirtualMachinePowerState, "poweredOn")));
    }
    eng.store.delete_object(&this.value)?;
    let e = inv.remove(&this.value).expect("checked above");
    drop(inv);
    eng.changed();
    Ok(e)
}

pub fn invoke(eng: &Engine, ctx: &mut Ctx, this: &MoRef, method: &str, args: Args) -> Option<Reply> {
    if let Some(r) = super::virtual_machine_snapshot::vm_invoke(eng, ctx, this, method, &args) {
        return Some(r);
    }
    Some(match method {
        "UnregisterVM" => unregister(eng, this).map(|_| None),
        "Destroy_Task" => {
            let spec = TaskSpec::on("Destroy_Task", "VirtualMachine.destroy", this.clone());
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
