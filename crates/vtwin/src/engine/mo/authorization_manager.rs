//! AuthorizationManager: roles, privileges and entity permissions.
use super::managed_entity::permission;
use crate::engine::auth::authz::{all_privileges, normalize_principal, role_by_id, role_privileges, SYSTEM_ROLES};
use crate::engine::{Ctx, Engine, Fault, Reply};
use crate::store::PermissionRecord;
use vmodl::value::Args;
use vmodl::{types, Data, MoRef, Value};

fn group_of(p: &str) -> &str {
    p.rsplit_once('.').map_or(p, |(g, _)| g)
}

fn role(id: i32) -> Option<Data> {
    let r = role_by_id(id)?;
    Some(
        Data::new(types::AuthorizationRole)
            .with("roleId", r.id)
            .with("system", true)
            .with("name", r.name)
            .with("info", Data::new(types::Description).with("label", r.label).with("summary", r.label))
            .with("privilege", Value::array_of_strings(role_privileges(r.id))),
    )
}

pub fn property(_eng: &Engine, _ctx: &Ctx, name: &str) -> Option<Value> {
    Some(match name {
        "privilegeList" => Value::Array(
            types::AuthorizationPrivilege,
            all_privileges()
                .iter()
                .map(|p| {
                    Data::new(types::AuthorizationPrivilege)
                        .with("privId", *p)
                        .with("onParent", false)
                        .with("name", p.rsplit('.').next().unwrap_or(p))
                        .with("privGroupName", group_of(p))
                        .into()
                })
                .collect(),
        ),
        "roleList" => Value::Array(
            types::AuthorizationRole,
            SYSTEM_ROLES.iter().filter_map(|r| role(r.id)).map(Value::from).collect(),
        ),
        "description" => {
            let el = |k: &str| {
                Value::from(Data::new(types::ElementDescription).with("key", k).with("label", k).with("summary", k))
            };
            let mut groups: Vec<&str> = all_privileges().iter().map(|p| group_of(p)).collect();
            groups.dedup();
            Data::new(types::AuthorizationDescription)
                .with(
                    "privilege",
                    Value::Array(types::ElementDescription, all_privileges().iter().map(|p| el(p)).collect()),
                )
                .with("privilegeGroup", Value::Array(types::ElementDescription, groups.iter().map(|g| el(g)).collect()))
                .into()
        }
        _ => return None,
    })
}

fn entity_arg(eng: &Engine, args: &Args, name: &str) -> Result<MoRef, Fault> {
    let r = args
        .get(name)
        .and_then(Value::as_moref)
        .ok_or_else(|| Fault::invalid_argument(name, format!("{name} is required")))?;
    eng.resolve(r)
}

fn strings(args: &Args, name: &str) -> Vec<String> {
    args.get(name)
        .and_then(Value::as_array)
        .map(|a| a.iter().filter_map(|v| v.as_str().map(str::to_string)).collect())
        .unwrap_or_default()
}

pub fn invoke(eng: &Engine, _ctx: &mut Ctx, _this: &MoRef, method: &str, args: Args) -> Option<Reply> {
    let a = &args;
    let flag = |name: &str, default: bool| a.get(name).and_then(Value::as_bool).unwrap_or(default);
    Some(match method {
        "RetrieveEntityPermissions" => {
            entity_arg(eng, a, "entity").and_then(|e| entity_permissions(eng, &e, flag("inherited", false)))
        }
        "RetrieveAllPermissions" => Ok(Some(permissions(eng, |_| true))),
        "RetrieveRolePermissions" => role_permissions(eng, a.get("roleId").and_then(Value::as_i64).unwrap_or(0) as i32),
        "SetEntityPermissions" => entity_arg(eng, a, "entity").and_then(|e| set_permissions(eng, &e, a, false)),
        "ResetEntityPermissions" => entity_arg(eng, a, "entity").and_then(|e| set_permissions(eng, &e, a, true)),
        "RemoveEntityPermission" => entity_arg(eng, a, "entity").and_then(|e| {
            remove_permission(eng, &e, &normalize_principal(a.str("user").unwrap_or("")), flag("isGroup", false))
        }),
        "HasPrivilegeOnEntity" => session_user(eng, a).and_then(|user| {
            let e = entity_arg(eng, a, "entity")?;
            let granted = strings(a, "privId").iter().map(|p| Value::Bool(eng.has_privilege(&user, &e, p))).collect();
            Ok(Some(Value::Array(types::boolean, granted)))
        }),
        "HasPrivilegeOnEntities" => session_user(eng, a)
            .and_then(|user| entity_privileges(eng, &user, morefs(a, "entity"), &strings(a, "privId"))),
        "HasUserPrivilegeOnEntities" => {
            let user = normalize_principal(a.str("userName").unwrap_or(""));
            entity_privileges(eng, &user, morefs(a, "entities"), &strings(a, "privId"))
        }
        _ => return None,
    })
}

fn morefs<'a>(args: &'a Args, name: &str) -> Vec<&'a MoRef> {
    args.get(name).and_then(Value::as_array).unwrap_or(&[]).iter().filter_map(Value::as_moref).collect()
}

/// The permissions `keep` selects, on entities that exist.
fn permissions(eng: &Engine, keep: impl Fn(&PermissionRecord) -> bool) -> Value {
    let inv = eng.inv.read();
    let out = eng
        .perms
        .all()
        .iter()
        .filter(|p| keep(p))
        .filter_map(|p| inv.get(&p.entity).map(|e| Value::from(permission(e.moref.clone(), p))))
        .collect();
    Value::Array(types::Permission, out)
}

fn entity_permissions(eng: &Engine, e: &MoRef, inherited: bool) -> Reply {
    let inv = eng.inv.read();
    let path = if inherited { inv.path_to_root(&e.value) } else { vec![e.value.clone()] };
    let mut out = vec![];
    for (i, moid) in path.iter().enumerate() {
        let Some(ent) = inv.get(moid) else { continue };
        for p in eng.perms.on_entity(moid) {
            if i == 0 || p.propagate {
                out.push(Value::from(permission(ent.moref.clone(), &p)));
            }
        }
    }
    Ok(Some(Value::Array(types::Permission, out)))
}

fn role_permissions(eng: &Engine, id: i32) -> Reply {
    if role_by_id(id).is_none() {
        return Err(Fault::plain_not_found(format!("role {id} not found")));
    }
    Ok(Some(permissions(eng, |p| p.role_id == id)))
}

/// SetEntityPermissions, or ResetEntityPermissions (`reset`: the entity's
/// other permissions go).
fn set_permissions(eng: &Engine, e: &MoRef, args: &Args, reset: bool) -> Reply {
    let perms = args.get("permission").and_then(Value::as_array).unwrap_or(&[]).iter().filter_map(Value::as_data);
    let mut recs = vec![];
    for p in perms {
        let principal = normalize_principal(p.str("principal").unwrap_or(""));
        let group = p.get("group").and_then(Value::as_bool).unwrap_or(false);
        let role_id = p.get("roleId").and_then(Value::as_i64).unwrap_or(0) as i32;
        if role_by_id(role_id).is_none() {
            return Err(Fault::invalid_argument("roleId", format!("role {role_id} does not exist")));
        }
        if !group && eng.user(&principal)?.is_none() {
            return Err(Fault::user_not_found(p.str("principal").unwrap_or("")));
        }
        recs.push(PermissionRecord {
            entity: e.value.clone(),
            principal,
            group,
            role_id,
            propagate: p.get("propagate").and_then(Value::as_bool).unwrap_or(true),
        });
    }
    if reset {
        for old in eng.perms.on_entity(&e.value) {
            eng.perms.remove(eng.store.as_ref(), &old.entity, &old.principal, old.group)?;
        }
    }
    for r in recs {
        eng.perms.set(eng.store.as_ref(), r)?;
    }
    eng.changed();
    Ok(None)
}

fn remove_permission(eng: &Engine, e: &MoRef, user: &str, group: bool) -> Reply {
    if !eng.perms.remove(eng.store.as_ref(), &e.value, user, group)? {
        return Err(Fault::plain_not_found(format!("no permission for {user} on {}", e.value)));
    }
    eng.changed();
    Ok(None)
}

/// The user of the session `sessionId` names.
fn session_user(eng: &Engine, args: &Args) -> Result<String, Fault> {
    let sid = args.str("sessionId").unwrap_or("");
    eng.sessions
        .by_key(sid)
        .map(|s| s.user.clone())
        .ok_or_else(|| Fault::plain_not_found(format!("session {sid} not found")))
}

/// An EntityPrivilege per entity: whether `user` holds each of `privs` on it.
fn entity_privileges(eng: &Engine, user: &str, entities: Vec<&MoRef>, privs: &[String]) -> Reply {
    let mut out = vec![];
    for r in entities {
        let e = eng.resolve(r)?;
        let avail = privs
            .iter()
            .map(|p| {
                Value::from(
                    Data::new(types::PrivilegeAvailability)
                        .with("privId", p.clone())
                        .with("isGranted", eng.has_privilege(user, &e, p)),
                )
            })
            .collect();
        out.push(Value::from(
            Data::new(types::EntityPrivilege)
                .with("entity", e)
                .with("privAvailability", Value::Array(types::PrivilegeAvailability, avail)),
        ));
    }
    Ok(Some(Value::Array(types::EntityPrivilege, out)))
}
