//! Properties every ManagedEntity has: name, parent, status, permissions.
use crate::engine::inventory::{Entity, Inventory};
use crate::engine::{authz, Ctx, Engine};
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
            let role = eng.perms.effective_role(user, &inv.path_to_root(&e.moref.value)).unwrap_or(authz::ROLE_NOACCESS);
            Value::Array(types::int, vec![Value::Int(role)])
        }
        "permission" => Value::Array(
            types::Permission,
            eng.perms.on_entity(&e.moref.value).iter().map(|p| permission(e.moref.clone(), p).into()).collect(),
        ),
        "recentTask" | "declaredAlarmState" | "triggeredAlarmState" | "disabledMethod" | "configIssue" | "customValue"
        | "tag" => return None,
        _ => return None,
    })
}

pub fn permission(entity: MoRef, p: &crate::store::PermissionRecord) -> Data {
    Data::new(types::Permission)
        .with("entity", entity)
        .with("principal", super::session_manager::display_user(&p.principal))
        .with("group", p.group)
        .with("roleId", p.role_id)
        .with("propagate", p.propagate)
}
