//! VI/JSON request decoding: a JSON body decoded against one of a fixed list
//! of methods (chosen by the first byte), or, with the first byte's top bit
//! set, a bare value against a data type from the list (`json::decode`).
//! What decodes is encoded back.
#![no_main]
use libfuzzer_sys::fuzz_target;
use vmodl::{find_method, json, TypeId, TypeRef, VersionId};

/// (managed type, method) pairs whose parameters cover most of the schema's
/// shapes: strings and secrets, MoRefs, arrays, nested and polymorphic data
/// objects (specs, filters, device changes), enums, dates and anyType.
const METHODS: &[(&str, &str)] = &[
    ("SessionManager", "Login"),
    ("SessionManager", "LoginByToken"),
    ("PropertyCollector", "RetrievePropertiesEx"),
    ("PropertyCollector", "CreateFilter"),
    ("PropertyCollector", "WaitForUpdatesEx"),
    ("VcenterVStorageObjectManager", "CreateDisk_Task"),
    ("VcenterVStorageObjectManager", "VCenterUpdateVStorageObjectMetadataEx_Task"),
    ("VcenterVStorageObjectManager", "VstorageObjectVCenterQueryChangedDiskAreas"),
    ("CnsVolumeManager", "CnsCreateVolume"),
    ("CnsVolumeManager", "CnsQueryVolume"),
    ("CnsVolumeManager", "CnsAttachVolume"),
    ("Task", "SetTaskState"),
    ("Task", "UpdateProgress"),
    ("TaskManager", "CreateTask"),
    ("TaskManager", "CreateCollectorForTasks"),
    ("HostDatastoreSystem", "ResignatureUnresolvedVmfsVolume_Task"),
    ("Datacenter", "QueryConnectionInfoViaSpec"),
    ("Datastore", "UpdateVirtualMachineFiles_Task"),
    ("Folder", "CreateVM_Task"),
    ("VirtualMachine", "ReconfigVM_Task"),
    ("VirtualMachine", "CreateSnapshotEx_Task"),
    ("ViewManager", "CreateContainerView"),
    ("AuthorizationManager", "SetEntityPermissions"),
    ("ExtensionManager", "RegisterExtension"),
    ("EventManager", "CreateCollectorForEvents"),
    ("ServiceInstance", "RetrieveServiceContent"),
];

const TYPES: &[&str] = &[
    "anyType",
    "VirtualMachineConfigSpec",
    "PropertyFilterSpec",
    "TaskInfo",
    "LocalizedMethodFault",
    "CnsVolumeCreateSpec",
    "VslmCreateSpec",
    "EventFilterSpec",
    "KeyAnyValue",
    "dateTime",
];

fuzz_target!(|data: &[u8]| {
    let Some((&sel, body)) = data.split_first() else { return };
    let Ok(v) = serde_json::from_slice::<serde_json::Value>(body) else { return };
    let version = VersionId::by_wire("vim25", vtwin::api::newest_release()).expect("newest release");
    if sel & 0x80 != 0 {
        let Some(ty) = TypeId::by_name(TYPES[(sel & 0x7f) as usize % TYPES.len()]) else { return };
        let declared = TypeRef { ty, array: sel & 0x40 != 0 };
        if let Ok(Some(x)) = json::decode(&v, declared, "value") {
            std::hint::black_box(json::encode(&x, declared, version));
            let mut s = String::new();
            vmodl::soap::encode_value(&mut s, "value", &x, declared, version);
            std::hint::black_box(s);
        }
        return;
    }
    let (ty, name) = METHODS[sel as usize % METHODS.len()];
    let Some(m) = TypeId::by_name(ty).and_then(|t| find_method(t, name)) else { return };
    let Ok(args) = json::decode_args(&v, m) else { return };
    for (n, x) in &args.0 {
        let p = m.params.iter().find(|p| p.name == *n).expect("decoded parameters are the method's");
        std::hint::black_box(json::encode(x, p.ty, version));
    }
});
