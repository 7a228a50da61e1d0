//! vCenter's privilege checks per method and per argument: our table. The
//! VMODL registry names a static privilege for many methods (and a few
//! parameters); vCenter checks more, on the objects an operation changes,
//! which its API reference states per method ("Required privileges") and the
//! registry lacks. Each rule here says where its fact comes from (keys:
//! JSON = the VI/JSON API reference, PY =
//! pyvmomi's registry, SEC = the vSphere Security guide, CNS = the CNS roles
//! page). The registry's privilege stays a floor: `Engine::invoke` checks it
//! first, then these.
use vmodl::TypeId;

/// Where a privilege is checked.
#[derive(Debug, Clone, Copy)]
pub enum On {
    /// The object called (for tasks: the task's entity; for snapshots: the VM;
    /// for a host's system objects: the host; for managers: the root folder).
    This,
    /// The parent entity of the object called.
    Parent,
    /// The root folder.
    Root,
    /// Every managed object reference at this dotted path in the arguments
    /// (arrays are walked; an absent value is not checked).
    Arg(&'static str),
    /// The datastore of every datastore path (`[name] …`) at this path.
    DsPath(&'static str),
    /// The datastore of every first-class disk / CNS volume whose id string
    /// is at this path (an unknown id is the method's to report).
    DiskDatastore(&'static str),
}

#[derive(Debug, Clone, Copy)]
pub struct Need {
    pub on: On,
    pub privilege: &'static str,
}

#[derive(Debug)]
pub struct Rule {
    /// The managed type (the rule applies to it and its subtypes).
    pub ty: &'static str,
    pub method: &'static str,
    pub needs: &'static [Need],
    pub source: &'static str,
}

const FM: &str = "Datastore.FileManagement";

const fn n(on: On, privilege: &'static str) -> Need {
    Need { on, privilege }
}

macro_rules! rule {
    ($ty:literal, $m:literal, [$($need:expr),* $(,)?], $src:literal) => {
        Rule { ty: $ty, method: $m, needs: &[$($need),*], source: $src }
    };
}

/// The table. More specific types come first: the first rule whose type
/// the object is and whose method matches is used.
pub static RULES: &[Rule] = &[
    // ---- VcenterVStorageObjectManager (JSON prose: FM on the datastore) ----
    rule!(
        "VcenterVStorageObjectManager",
        "CreateDisk_Task",
        [n(On::Arg("spec.backingSpec.datastore"), FM)],
        "JSON prose"
    ),
    rule!("VcenterVStorageObjectManager", "RegisterDisk", [n(On::DsPath("path"), FM)], "JSON prose"),
    rule!("VcenterVStorageObjectManager", "DeleteVStorageObject_Task", [n(On::Arg("datastore"), FM)], "JSON, PY param"),
    rule!("VcenterVStorageObjectManager", "DeleteVStorageObjectEx_Task", [n(On::Arg("datastore"), FM)], "JSON prose"),
    rule!("VcenterVStorageObjectManager", "InflateDisk_Task", [n(On::Arg("datastore"), FM)], "JSON prose"),
    rule!(
        "VcenterVStorageObjectManager",
        "ExtendDisk_Task",
        [n(On::Arg("datastore"), FM)],
        "PY (VStorageObjectExtendDiskEx_Task datastore: FM); JSON silent"
    ),
    rule!(
        "VcenterVStorageObjectManager",
        "RenameVStorageObject",
        [n(On::Arg("datastore"), FM)],
        "PY (RenameVStorageObjectEx datastore: FM); JSON silent"
    ),
    rule!(
        "VcenterVStorageObjectManager",
        "CloneVStorageObject_Task",
        [n(On::Arg("datastore"), FM), n(On::Arg("spec.backingSpec.datastore"), FM)],
        "JSON prose: source and destination"
    ),
    rule!(
        "VcenterVStorageObjectManager",
        "RelocateVStorageObject_Task",
        [n(On::Arg("datastore"), FM), n(On::Arg("spec.backingSpec.datastore"), FM)],
        "JSON prose: source and destination"
    ),
    rule!(
        "VcenterVStorageObjectManager",
        "VStorageObjectCreateSnapshot_Task",
        [n(On::Arg("datastore"), FM)],
        "JSON prose"
    ),
    rule!("VcenterVStorageObjectManager", "DeleteSnapshot_Task", [n(On::Arg("datastore"), FM)], "JSON prose"),
    rule!("VcenterVStorageObjectManager", "RevertVStorageObject_Task", [n(On::Arg("datastore"), FM)], "JSON prose"),
    rule!("VcenterVStorageObjectManager", "RetrieveSnapshotInfo", [n(On::Arg("datastore"), FM)], "JSON prose"),
    rule!(
        "VcenterVStorageObjectManager",
        "RetrieveSnapshotDetails",
        [n(On::Arg("datastore"), FM)],
        "PY param (JSON: System.View only; the registry's floor kept)"
    ),
    rule!("VcenterVStorageObjectManager", "RetrieveVStorageObject", [n(On::Arg("datastore"), FM)], "JSON prose"),
    rule!("VcenterVStorageObjectManager", "RetrieveVStorageObjectState", [n(On::Arg("datastore"), FM)], "JSON prose"),
    rule!("VcenterVStorageObjectManager", "ListVStorageObject", [n(On::Arg("datastore"), FM)], "JSON prose"),
    rule!(
        "VcenterVStorageObjectManager",
        "VCenterUpdateVStorageObjectMetadataEx_Task",
        [n(On::Arg("datastore"), FM)],
        "JSON, PY param"
    ),
    rule!(
        "VcenterVStorageObjectManager",
        "ReconcileDatastoreInventory_Task",
        [n(On::Arg("datastore"), FM)],
        "JSON prose"
    ),
    rule!(
        "VcenterVStorageObjectManager",
        "SetVStorageObjectControlFlags",
        [n(On::Arg("datastore"), FM)],
        "JSON, PY param"
    ),
    rule!(
        "VcenterVStorageObjectManager",
        "ClearVStorageObjectControlFlags",
        [n(On::Arg("datastore"), FM)],
        "JSON, PY param"
    ),
    rule!(
        "VcenterVStorageObjectManager",
        "AttachTagToVStorageObject",
        [n(On::Root, "InventoryService.Tagging.AttachTag")],
        "JSON prose"
    ),
    rule!(
        "VcenterVStorageObjectManager",
        "DetachTagFromVStorageObject",
        [n(On::Root, "InventoryService.Tagging.AttachTag")],
        "JSON prose"
    ),
    rule!(
        "VcenterVStorageObjectManager",
        "VstorageObjectVCenterQueryChangedDiskAreas",
        [],
        "JSON, PY: System.View only (the floor)"
    ),
    // ---- CnsVolumeManager (JSON prose; block volumes) ----
    rule!(
        "CnsVolumeManager",
        "CnsCreateVolume",
        [n(On::Arg("createSpecs.datastores"), FM)],
        "JSON prose (FM on the input datastores)"
    ),
    rule!("CnsVolumeManager", "CnsDeleteVolume", [n(On::DiskDatastore("volumeIds.id"), FM)], "JSON prose"),
    rule!("CnsVolumeManager", "CnsExtendVolume", [n(On::DiskDatastore("extendSpecs.volumeId.id"), FM)], "JSON prose"),
    rule!(
        "CnsVolumeManager",
        "CnsUpdateVolumeMetadata",
        [n(On::DiskDatastore("updateSpecs.volumeId.id"), FM)],
        "JSON prose"
    ),
    rule!(
        "CnsVolumeManager",
        "CnsAttachVolume",
        [
            n(On::DiskDatastore("attachSpecs.volumeId.id"), FM),
            n(On::Arg("attachSpecs.vm"), "VirtualMachine.Config.AddExistingDisk"),
            n(On::Arg("attachSpecs.vm"), "VirtualMachine.Config.AddRemoveDevice")
        ],
        "JSON prose"
    ),
    rule!(
        "CnsVolumeManager",
        "CnsDetachVolume",
        [
            n(On::DiskDatastore("detachSpecs.volumeId.id"), FM),
            n(On::Arg("detachSpecs.vm"), "VirtualMachine.Config.RemoveDisk")
        ],
        "JSON prose"
    ),
    rule!(
        "CnsVolumeManager",
        "CnsCreateSnapshots",
        [n(On::DiskDatastore("snapshotSpecs.volumeId.id"), FM)],
        "JSON prose"
    ),
    rule!(
        "CnsVolumeManager",
        "CnsDeleteSnapshots",
        [n(On::DiskDatastore("snapshotDeleteSpecs.volumeId.id"), FM)],
        "JSON prose"
    ),
    rule!(
        "CnsVolumeManager",
        "CnsRelocateVolume",
        [
            n(On::DiskDatastore("relocateSpecs.volumeId.id"), FM),
            n(On::Arg("relocateSpecs.datastore"), FM),
            n(On::Arg("relocateSpecs.datastore"), "Datastore.AllocateSpace")
        ],
        "JSON prose"
    ),
    rule!(
        "CnsVolumeManager",
        "CnsReconfigVolumePolicy",
        [n(On::DiskDatastore("volumePolicyReconfigSpecs.volumeId.id"), FM)],
        "JSON prose"
    ),
    // Not documented; it recomputes and records the volume's usage.
    rule!(
        "CnsVolumeManager",
        "CnsSyncVolume",
        [n(On::DiskDatastore("syncSpecs.volumeId.id"), FM)],
        "not found: FM as for the other volume changes"
    ),
    rule!("CnsVolumeManager", "CnsQueryVolume", [n(On::Root, "Cns.Searchable")], "JSON, PY"),
    rule!("CnsVolumeManager", "CnsQueryAsync", [n(On::Root, "Cns.Searchable")], "JSON, PY"),
    rule!("CnsVolumeManager", "CnsQueryAllVolume", [n(On::Root, "Cns.Searchable")], "not found: as CnsQueryVolume"),
    rule!("CnsVolumeManager", "CnsQueryVolumeInfo", [n(On::Root, "Cns.Searchable")], "not found: as CnsQueryVolume"),
    // ---- Tasks (SEC: Global.CancelTask on the task's object) ----
    rule!("Task", "CancelTask", [n(On::This, "Global.CancelTask")], "SEC 8.0"),
    // ---- Inventory: Rename_Task / Destroy_Task per subtype (JSON) ----
    rule!("VirtualMachine", "Rename_Task", [n(On::This, "VirtualMachine.Config.Rename")], "JSON"),
    rule!(
        "VirtualMachine",
        "Destroy_Task",
        [n(On::This, "VirtualMachine.Inventory.Delete"), n(On::Parent, "VirtualMachine.Inventory.Delete")],
        "JSON (also on the parent)"
    ),
    rule!("Folder", "Rename_Task", [n(On::This, "Folder.Rename")], "JSON"),
    rule!("Folder", "Destroy_Task", [n(On::This, "Folder.Delete"), n(On::Parent, "Folder.Delete")], "JSON"),
    rule!("Datacenter", "Rename_Task", [n(On::This, "Datacenter.Rename")], "JSON"),
    rule!("Datacenter", "Destroy_Task", [n(On::This, "Datacenter.Delete"), n(On::Parent, "Datacenter.Delete")], "JSON"),
    rule!("Datastore", "Rename_Task", [n(On::This, "Datastore.Rename")], "JSON"),
    rule!(
        "Datastore",
        "Destroy_Task",
        [n(On::This, "Datastore.Delete"), n(On::Parent, "Datastore.Delete")],
        "SEC (JSON prints System.Read)"
    ),
    rule!("ResourcePool", "Rename_Task", [n(On::This, "Resource.RenamePool")], "JSON"),
    rule!(
        "ResourcePool",
        "Destroy_Task",
        [n(On::This, "Resource.DeletePool"), n(On::Parent, "Resource.DeletePool")],
        "JSON"
    ),
    rule!("ClusterComputeResource", "Rename_Task", [n(On::This, "Host.Inventory.RenameCluster")], "JSON"),
    rule!(
        "ClusterComputeResource",
        "Destroy_Task",
        [n(On::This, "Host.Inventory.DeleteCluster"), n(On::Parent, "Host.Inventory.DeleteCluster")],
        "JSON"
    ),
    rule!("HostSystem", "Rename_Task", [n(On::This, "Host.Config.Settings")], "JSON"),
    rule!("HostSystem", "Destroy_Task", [n(On::This, "Host.Inventory.RemoveHostFromCluster")], "JSON"),
    rule!(
        "ComputeResource",
        "Rename_Task",
        [n(On::This, "Host.Inventory.RenameCluster")],
        "JSON says none; the cluster's privilege"
    ),
    rule!("ComputeResource", "Destroy_Task", [n(On::This, "Host.Inventory.RemoveHostFromCluster")], "JSON"),
    rule!("Network", "Rename_Task", [n(On::This, "System.Read")], "JSON"),
    rule!("Network", "Destroy_Task", [n(On::This, "System.Read")], "JSON"),
    // ---- Folder ----
    rule!(
        "Folder",
        "CreateVM_Task",
        [
            n(On::DsPath("config.files.vmPathName"), "Datastore.AllocateSpace"),
            n(On::DsPath("config.deviceChange.device.backing.fileName"), "Datastore.AllocateSpace")
        ],
        "JSON (AllocateSpace on every datastore used)"
    ),
    rule!(
        "Folder",
        "RegisterVM_Task",
        [n(On::DsPath("path"), "System.Read")],
        "JSON (System.Read on the VM's datastore)"
    ),
    // ---- VirtualMachine ----
    rule!("VirtualMachine", "UnregisterVM", [], "PY: VirtualMachine.Inventory.Unregister (the floor)"),
];

/// The rule for `method` on an object of type `ty`, if the table has one.
pub fn rule(ty: TypeId, method: &str) -> Option<&'static Rule> {
    RULES.iter().find(|r| r.method == method && TypeId::by_name(r.ty).is_some_and(|t| ty.is_a(t)))
}

/// Methods every logged-in user may call, whatever its role: a NoAccess
/// user may log in (System.Anonymous) and out.
pub fn always_allowed(ty: TypeId, method: &str) -> bool {
    ty == vmodl::types::SessionManager && method == "Logout"
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_rule_names_a_real_type_and_method() {
        for r in RULES {
            let t = TypeId::by_name(r.ty).unwrap_or_else(|| panic!("{} is no type", r.ty));
            assert!(
                vmodl::find_method(t, r.method).is_some() || r.method == "Destroy_Task",
                "{}.{} is no method",
                r.ty,
                r.method
            );
            for need in r.needs {
                let p = need.privilege;
                assert!(
                    p.split('.').count() >= 2 && p.chars().all(|c| c.is_ascii_alphanumeric() || c == '.'),
                    "{p} is not a privilege id"
                );
                assert!(crate::engine::auth::authz::all_privileges().contains(&p));
            }
        }
    }
}
