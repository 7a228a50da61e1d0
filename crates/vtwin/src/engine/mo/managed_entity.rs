//! What every ManagedEntity has: name, parent, status, permissions, and
//! Rename_Task; Destroy_Task goes to the type's own file.
use crate::engine::inventory::{Entity, Inventory, ROOT_FOLDER};
use crate::engine::runner::TaskSpec;
use crate::engine::{authz, Ctx, Engine, Fault, Reply};
use crate::store::ObjectRecord;
use vmodl::value::Args;
use vmodl::{types, Data, MoRef, Value};

pub fn property(eng: &Engine, ctx: &Ctx, inv: &Inventory, e: &Entity, name: &str) -> Option<Value> {
    Some(match name {
        "name" => Value::String(e.name.clone()),
        "parent" => {
            let p = inv.get(e.parent.as_deref()?)?;
            Value::MoRef(p.moref.clone())
        }
        "overallStatus" | "configStatus" => Value::enum_value(types::ManagedEntityStatus, "green"),
        "alarmActionsEnabled" => Value::Bool(true),
        "effectiveRole" => {
            let user = &ctx.session.as_ref()?.user;
            let role =
                eng.perms.effective_role(user, &inv.path_to_root(&e.moref.value)).unwrap_or(authz::ROLE_NOACCESS);
            Value::Array(types::int, vec![Value::Int(role)])
        }
        "permission" => Value::Array(
            types::Permission,
            eng.perms.on_entity(&e.moref.value).iter().map(|p| permission(e.moref.clone(), p).into()).collect(),
        ),
        "recentTask"
        | "declaredAlarmState"
        | "triggeredAlarmState"
        | "disabledMethod"
        | "configIssue"
        | "customValue"
        | "tag" => return None,
        _ => return None,
    })
}

pub fn permission(entity: MoRef, p: &crate::store::PermissionRecord) -> Data {
    Data::new(types::Permission)
        .with("entity", entity)
        .with("principal", crate::engine::auth::display_user(&p.principal))
        .with("group", p.group)
        .with("roleId", p.role_id)
        .with("propagate", p.propagate)
}

/// Methods every ManagedEntity has: Rename_Task.
pub fn invoke(eng: &Engine, ctx: &mut Ctx, this: &MoRef, method: &str, args: Args) -> Option<Reply> {
    Some(match method {
        "Rename_Task" => rename(eng, ctx, this, args.str("newName").unwrap_or("").to_string()),
        // What destroying means depends on the type.
        "Destroy_Task" if this.ty == types::VirtualMachine => {
            return super::virtual_machine::invoke(eng, ctx, this, method, args)
        }
        _ => return None,
    })
}

fn rename(eng: &Engine, ctx: &Ctx, this: &MoRef, new_name: String) -> Reply {
    if this.value == ROOT_FOLDER {
        return Err(Fault::not_supported("the root folder cannot be renamed"));
    }
    if new_name.trim().is_empty() || new_name.chars().count() > 80 {
        return Err(
            Fault::new(types::InvalidName, format!("'{new_name}' is not a valid name")).with("name", new_name.clone())
        );
    }
    let kind = |t: vmodl::TypeId| if t == types::Folder { "folder" } else { t.name() };
    let spec = TaskSpec::on("Rename_Task", format!("{}.rename", this.ty.name()), this.clone());
    // The name is checked again when the task runs: another rename may
    // have taken it while this one was queued.
    let this = this.clone();
    eng.run_task(
        ctx,
        spec,
        Box::new(move |eng, _ctl| {
            let mut inv = eng.inv.write();
            let e = inv.get(&this.value).ok_or_else(|| Fault::not_found(&this))?;
            if let Some(p) = e.parent.as_deref().and_then(|p| inv.get(p)) {
                let clash = p
                    .children
                    .iter()
                    .filter(|c| **c != this.value)
                    .filter_map(|c| inv.get(c))
                    .any(|c| c.name == new_name && kind(c.moref.ty) == kind(this.ty));
                if clash {
                    return Err(Fault::new(types::DuplicateName, format!("The name '{new_name}' already exists."))
                        .with("name", new_name.clone())
                        .with("object", p.moref.clone()));
                }
            }
            let mut rec = inv.get(&this.value).expect("checked above").clone();
            rec.name = new_name.clone();
            eng.store.put_objects(&[ObjectRecord {
                moid: rec.moref.value.clone(),
                ty: rec.moref.ty.name().into(),
                name: rec.name.clone(),
                parent: rec.parent.clone(),
                attrs: rec.attrs.clone(),
            }])?;
            if let Some(e) = inv.objects.get_mut(&this.value) {
                e.name = new_name;
            }
            drop(inv);
            eng.changed();
            Ok(None)
        }),
    )
}
