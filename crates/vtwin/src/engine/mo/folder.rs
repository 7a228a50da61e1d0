//! Folder: the containers of the inventory tree.
use super::refs;
use crate::engine::inventory::{Entity, Inventory};
use crate::engine::{Ctx, Engine, Fault, Reply};
use vmodl::value::Args;
use vmodl::{types, MoRef, TypeId, Value};

pub fn property(inv: &Inventory, e: &Entity, name: &str) -> Option<Value> {
    match name {
        "childType" => Some(Value::Array(
            types::string,
            e.attrs
                .get("childType")?
                .as_array()?
                .iter()
                .filter_map(|v| v.as_str())
                .map(|s| Value::String(s.into()))
                .collect(),
        )),
        "childEntity" => Some(refs(e.children.iter().filter_map(|c| inv.get(c)).map(|c| c.moref.clone()))),
        _ => None,
    }
}

fn child_types(e: &Entity) -> Vec<String> {
    e.attrs
        .get("childType")
        .and_then(|v| v.as_array())
        .map(|a| a.iter().filter_map(|v| v.as_str().map(str::to_string)).collect())
        .unwrap_or_default()
}

fn new_child(eng: &Engine, this: &MoRef, name: &str, ty: TypeId) -> Reply {
    let name = name.trim();
    if name.is_empty() || name.len() > 80 {
        return Err(Fault::new(types::InvalidName, format!("'{name}' is not a valid name")).with("name", name));
    }
    let mut inv = eng.inv.write();
    let parent = inv.get(&this.value).ok_or_else(|| Fault::not_found(this))?.clone();
    if !child_types(&parent).iter().any(|t| t == ty.name()) {
        return Err(Fault::not_supported(format!("{} cannot contain a {}", parent.name, ty.name())));
    }
    if parent.children.iter().filter_map(|c| inv.get(c)).any(|c| c.name == name) {
        return Err(Fault::new(types::DuplicateName, format!("The name '{name}' already exists."))
            .with("name", name)
            .with("object", this.clone()));
    }
    let seq = eng.next_seq();
    let mut new = vec![];
    let moid;
    if ty == types::Folder {
        moid = format!("group-f{seq}-{}", uuid::Uuid::new_v4().simple());
        new.push(Entity {
            moref: MoRef::new(types::Folder, moid.clone()),
            name: name.to_string(),
            parent: Some(this.value.clone()),
            children: vec![],
            attrs: serde_json::json!({"childType": child_types(&parent)}),
        });
    } else {
        let u = uuid::Uuid::new_v4().simple().to_string();
        moid = format!("datacenter-{}", &u[..12]);
        let f = |k: &str| format!("group-{k}{}", &u[..12]);
        new.push(Entity {
            moref: MoRef::new(types::Datacenter, moid.clone()),
            name: name.to_string(),
            parent: Some(this.value.clone()),
            children: vec![],
            attrs: serde_json::json!({"vmFolder": f("v"), "hostFolder": f("h"), "datastoreFolder": f("s"), "networkFolder": f("n")}),
        });
        for (k, n, ct) in [
            ("v", "vm", vec!["Folder", "VirtualMachine", "VirtualApp"]),
            ("h", "host", vec!["Folder", "ComputeResource"]),
            ("s", "datastore", vec!["Folder", "Datastore", "StoragePod"]),
            ("n", "network", vec!["Folder", "Network", "DistributedVirtualSwitch"]),
        ] {
            new.push(Entity {
                moref: MoRef::new(types::Folder, f(k)),
                name: n.into(),
                parent: Some(moid.clone()),
                children: vec![],
                attrs: serde_json::json!({"childType": ct}),
            });
        }
    }
    let recs: Vec<_> = new
        .iter()
        .map(|e| crate::store::ObjectRecord {
            moid: e.moref.value.clone(),
            ty: e.moref.ty.name().into(),
            name: e.name.clone(),
            parent: e.parent.clone(),
            attrs: e.attrs.clone(),
        })
        .collect();
    eng.store.put_objects(&recs)?;
    for e in new {
        inv.insert(e);
    }
    drop(inv);
    eng.changed();
    Ok(Some(Value::MoRef(MoRef::new(ty, moid))))
}

pub fn invoke(eng: &Engine, ctx: &mut Ctx, this: &MoRef, method: &str, args: Args) -> Option<Reply> {
    Some(match method {
        "RegisterVM_Task" => super::virtual_machine::register(eng, ctx, this, &args),
        "CreateVM_Task" => super::virtual_machine::create(eng, ctx, this, &args),
        "CreateFolder" => new_child(eng, this, args.str("name").unwrap_or(""), types::Folder),
        "CreateDatacenter" => new_child(eng, this, args.str("name").unwrap_or(""), types::Datacenter),
        _ => return None,
    })
}
