//! The inventory tree: folders, datacenters, compute resources, hosts and
//! datastores, kept in memory and persisted through the store.
use crate::store::{ObjectRecord, Store};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use vmodl::{types, MoRef, TypeId};

#[derive(Clone, Debug)]
pub struct Entity {
    pub moref: MoRef,
    pub name: String,
    pub parent: Option<String>,
    pub children: Vec<String>,
    pub attrs: serde_json::Value,
}

impl Entity {
    pub fn attr(&self, k: &str) -> Option<&str> {
        self.attrs.get(k).and_then(|v| v.as_str())
    }
}

#[derive(Default)]
pub struct Inventory {
    pub objects: HashMap<String, Entity>,
    /// Insertion order, for stable listings.
    pub order: Vec<String>,
    next_id: u64,
    /// Where moId numbers come from when several nodes share the store.
    shared_ids: Option<std::sync::Arc<dyn Store>>,
}

pub const ROOT_FOLDER: &str = "group-d1";

/// What `vtwin serve --datacenters/--hosts/--datastores` asks for.
#[derive(Clone, Copy, Debug)]
pub struct Shape {
    pub datacenters: usize,
    pub hosts: usize,
    pub datastores: usize,
}

impl Inventory {
    pub fn get(&self, moid: &str) -> Option<&Entity> {
        self.objects.get(moid)
    }
    pub fn root(&self) -> MoRef {
        MoRef::new(types::Folder, ROOT_FOLDER)
    }

    pub fn alloc(&mut self, prefix: &str) -> String {
        self.next_id += 1;
        if let Some(st) = &self.shared_ids {
            match st.next_object_id() {
                Ok(n) => self.next_id = n as u64,
                Err(e) => tracing::warn!(error = %e, "no shared moId number; numbering locally"),
            }
        }
        format!("{prefix}-{}", self.next_id)
    }

    /// Take over another copy's numbering (a reload keeps it).
    pub fn keep_ids_of(&mut self, old: &Inventory) {
        self.shared_ids = old.shared_ids.clone();
        self.next_id = self.next_id.max(old.next_id);
    }

    /// Number new objects from the store's shared counter (several nodes),
    /// moved past every number used so far.
    pub fn share_ids(&mut self, store: std::sync::Arc<dyn Store>) -> crate::store::Result<()> {
        if self.shared_ids.is_some() {
            return Ok(());
        }
        if store.object_ids(self.next_id as i64)? {
            self.shared_ids = Some(store);
        }
        Ok(())
    }

    /// Take an entity (with no children) out of the tree.
    pub fn remove(&mut self, moid: &str) -> Option<Entity> {
        let e = self.objects.remove(moid)?;
        if let Some(p) = e.parent.as_deref().and_then(|p| self.objects.get_mut(p)) {
            p.children.retain(|c| c != moid);
        }
        self.order.retain(|m| m != moid);
        Some(e)
    }

    pub fn insert(&mut self, e: Entity) {
        if let Some(p) = &e.parent {
            if let Some(pe) = self.objects.get_mut(p) {
                if !pe.children.contains(&e.moref.value) {
                    pe.children.push(e.moref.value.clone());
                }
            }
        }
        self.order.push(e.moref.value.clone());
        self.objects.insert(e.moref.value.clone(), e);
    }

    fn add(&mut self, ty: TypeId, prefix: &str, name: &str, parent: Option<&str>, attrs: serde_json::Value) -> String {
        let moid = if ty == types::Folder && parent.is_none() { ROOT_FOLDER.to_string() } else { self.alloc(prefix) };
        self.insert(Entity {
            moref: MoRef::new(ty, moid.clone()),
            name: name.to_string(),
            parent: parent.map(str::to_string),
            children: vec![],
            attrs,
        });
        moid
    }

    pub fn records(&self) -> Vec<ObjectRecord> {
        self.order
            .iter()
            .filter_map(|m| self.objects.get(m))
            .map(|e| ObjectRecord {
                moid: e.moref.value.clone(),
                ty: e.moref.ty.name().to_string(),
                name: e.name.clone(),
                parent: e.parent.clone(),
                attrs: e.attrs.clone(),
            })
            .collect()
    }

    /// Give every compute resource its root resource pool ("Resources");
    /// the records of the pools added.
    pub fn ensure_resource_pools(&mut self) -> Vec<ObjectRecord> {
        let crs: Vec<String> = self
            .order
            .iter()
            .filter(|m| self.objects.get(*m).is_some_and(|e| e.moref.ty.is_a(types::ComputeResource)))
            .filter(|m| {
                !self.objects[*m]
                    .children
                    .iter()
                    .any(|c| self.objects.get(c).is_some_and(|x| x.moref.ty == types::ResourcePool))
            })
            .cloned()
            .collect();
        let mut out = vec![];
        for cr in crs {
            let moid = self.add(types::ResourcePool, "resgroup", "Resources", Some(&cr), serde_json::json!({}));
            let e = &self.objects[&moid];
            out.push(ObjectRecord {
                moid,
                ty: "ResourcePool".into(),
                name: e.name.clone(),
                parent: e.parent.clone(),
                attrs: e.attrs.clone(),
            });
        }
        out
    }

    /// Load from the store; None when the store has no inventory yet.
    pub fn load(store: &dyn Store) -> crate::store::Result<Option<Inventory>> {
        let mut recs = store.list_objects()?;
        if recs.is_empty() {
            return Ok(None);
        }
        // Creation order (the number in the moId), whatever order the
        // backend returns rows in: listings are the same on every backend
        // and after every restart.
        recs.sort_by_key(|r| {
            (r.moid.rsplit('-').next().and_then(|n| n.parse::<u64>().ok()).unwrap_or(u64::MAX), r.moid.clone())
        });
        let mut inv = Inventory::default();
        for r in recs {
            let Some(ty) = TypeId::by_name(&r.ty) else { continue };
            if let Some(n) = r.moid.rsplit('-').next().and_then(|n| n.parse::<u64>().ok()) {
                inv.next_id = inv.next_id.max(n);
            }
            inv.insert(Entity {
                moref: MoRef::new(ty, r.moid),
                name: r.name,
                parent: r.parent,
                children: vec![],
                attrs: r.attrs,
            });
        }
        // Children are linked by insert() only when the parent came first; relink all.
        let links: Vec<(String, String)> = inv
            .order
            .iter()
            .filter_map(|m| inv.objects.get(m).and_then(|e| e.parent.clone().map(|p| (p, m.clone()))))
            .collect();
        for (p, c) in links {
            if let Some(pe) = inv.objects.get_mut(&p) {
                if !pe.children.contains(&c) {
                    pe.children.push(c);
                }
            }
        }
        Ok(Some(inv))
    }

    /// The default inventory, named as vcsim users expect: DC0, DC0_H0 (a
    /// standalone host in its compute resource), LocalDS_0 backed by
    /// `DIR/datastores/LocalDS_0`.
    pub fn bootstrap(shape: Shape, data_dir: &Path) -> std::io::Result<Inventory> {
        let mut inv = Inventory::default();
        let root = inv.add(
            types::Folder,
            "group-d",
            "Datacenters",
            None,
            serde_json::json!({"childType": ["Folder", "Datacenter"]}),
        );
        inv.next_id = 1;
        for d in 0..shape.datacenters {
            let dc_name = format!("DC{d}");
            let dc = inv.add(types::Datacenter, "datacenter", &dc_name, Some(&root), serde_json::json!({}));
            let vm = inv.add(
                types::Folder,
                "group-v",
                "vm",
                Some(&dc),
                serde_json::json!({"childType": ["Folder", "VirtualMachine", "VirtualApp"]}),
            );
            let host = inv.add(
                types::Folder,
                "group-h",
                "host",
                Some(&dc),
                serde_json::json!({"childType": ["Folder", "ComputeResource"]}),
            );
            let ds = inv.add(
                types::Folder,
                "group-s",
                "datastore",
                Some(&dc),
                serde_json::json!({"childType": ["Folder", "Datastore", "StoragePod"]}),
            );
            let net = inv.add(
                types::Folder,
                "group-n",
                "network",
                Some(&dc),
                serde_json::json!({"childType": ["Folder", "Network", "DistributedVirtualSwitch"]}),
            );
            if let Some(e) = inv.objects.get_mut(&dc) {
                e.attrs = serde_json::json!({"vmFolder": vm, "hostFolder": host, "datastoreFolder": ds, "networkFolder": net});
            }
            for h in 0..shape.hosts {
                let name = format!("{dc_name}_H{h}");
                let cr = inv.add(types::ComputeResource, "domain-s", &name, Some(&host), serde_json::json!({}));
                inv.add(
                    types::HostSystem,
                    "host",
                    &name,
                    Some(&cr),
                    serde_json::json!({"uuid": uuid::Uuid::new_v4().to_string()}),
                );
            }
            for s in 0..shape.datastores {
                let name = if d == 0 { format!("LocalDS_{s}") } else { format!("{dc_name}_LocalDS_{s}") };
                let uuid = vmfs_uuid();
                let dir = mount_dir(data_dir, &uuid);
                std::fs::create_dir_all(&dir)?;
                link_by_name(data_dir, &name, &uuid)?;
                inv.add(
                    types::Datastore,
                    "datastore",
                    &name,
                    Some(&ds),
                    serde_json::json!({"uuid": uuid, "path": dir.to_string_lossy(), "url": format!("ds:///vmfs/volumes/{uuid}/")}),
                );
            }
        }
        Ok(inv)
    }

    /// The datacenter an entity belongs to.
    pub fn datacenter_of(&self, moid: &str) -> Option<&Entity> {
        let mut cur = self.objects.get(moid);
        while let Some(e) = cur {
            if e.moref.ty == types::Datacenter {
                return Some(e);
            }
            cur = e.parent.as_deref().and_then(|p| self.objects.get(p));
        }
        None
    }

    /// Every entity below `moid` (not itself), depth first.
    pub fn descendants(&self, moid: &str, recursive: bool, out: &mut Vec<MoRef>) {
        if let Some(e) = self.objects.get(moid) {
            for c in &e.children {
                if let Some(ce) = self.objects.get(c) {
                    out.push(ce.moref.clone());
                    if recursive {
                        self.descendants(c, true, out);
                    }
                }
            }
        }
    }

    /// Entities of type `ty` inside the datacenter `dc` (datastores, hosts).
    pub fn in_datacenter(&self, dc: &str, ty: TypeId) -> Vec<MoRef> {
        let mut all = vec![];
        self.descendants(dc, true, &mut all);
        all.into_iter().filter(|m| m.ty == ty).collect()
    }

    /// Ancestors from the entity up to the root, the entity first.
    pub fn path_to_root(&self, moid: &str) -> Vec<String> {
        let mut out = vec![];
        let mut cur = Some(moid.to_string());
        while let Some(m) = cur {
            cur = self.objects.get(&m).and_then(|e| e.parent.clone());
            out.push(m);
        }
        out
    }
}

/// `DIR/datastores/<name>`: the datastore by name (a link to its mount).
pub fn datastore_dir(data_dir: &Path, name: &str) -> PathBuf {
    data_dir.join("datastores").join(name)
}

/// `DIR/vmfs/volumes/<uuid>`: where a datastore is mounted. Files that name
/// another datastore's files embed this path, as ESXi's embed
/// `/vmfs/volumes/<uuid>`, and it is a real directory, so qemu-img can
/// follow them.
pub fn mount_dir(data_dir: &Path, uuid: &str) -> PathBuf {
    data_dir.join("vmfs").join("volumes").join(uuid)
}

/// Point `DIR/datastores/<name>` at the volume `uuid`.
pub fn link_by_name(data_dir: &Path, name: &str, uuid: &str) -> std::io::Result<()> {
    let link = datastore_dir(data_dir, name);
    std::fs::create_dir_all(link.parent().expect("datastores dir"))?;
    if link.symlink_metadata().is_ok() {
        std::fs::remove_file(&link)?;
    }
    std::os::unix::fs::symlink(Path::new("../vmfs/volumes").join(uuid), &link)
}

/// A VMFS-style volume uuid: `5f3e1c2a-0c1d2e3f-4a5b-001122334455`.
pub fn vmfs_uuid() -> String {
    let u = uuid::Uuid::new_v4().simple().to_string();
    format!("{}-{}-{}-{}", &u[0..8], &u[8..16], &u[16..20], &u[20..32])
}
