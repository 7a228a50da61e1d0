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
    Some(match method {
        "RetrieveEntityPermissions" => (|| {
            let e = entity_arg(eng, &args, "entity")?;
            let inherited = args.get("inherited").and_then(Value::as_bool).unwrap_or(false);
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
        })(),
        "RetrieveAllPermissions" => {
            let inv = eng.inv.read();
            let out = eng
                .perms
                .all()
                .iter()
                .filter_map(|p| inv.get(&p.entity).map(|e| Value::from(permission(e.moref.clone(), p))))
                .collect();
            Ok(Some(Value::Array(types::Permission, out)))
        }
        "RetrieveRolePermissions" => {
            let id = args.get("roleId").and_then(Value::as_i64).unwrap_or(0) as i32;
            if role_by_id(id).is_none() {
                return Some(Err(Fault::plain_not_found(format!("role {id} not found"))));
            }
            let inv = eng.inv.read();
            let out = eng
                .perms
                .all()
                .iter()
                .filter(|p| p.role_id == id)
                .filter_map(|p| inv.get(&p.entity).map(|e| Value::from(permission(e.moref.clone(), p))))
                .collect();
            Ok(Some(Value::Array(types::Permission, out)))
        }
        "SetEntityPermissions" | "ResetEntityPermissions" => (|| {
            let e = entity_arg(eng, &args, "entity")?;
            let perms: Vec<&Data> = args
                .get("permission")
                .and_then(Value::as_array)
                .unwrap_or(&[])
                .iter()
                .filter_map(Value::as_data)
                .collect();
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
            if method == "ResetEntityPermissions" {
                for old in eng.perms.on_entity(&e.value) {
                    eng.perms.remove(eng.store.as_ref(), &old.entity, &old.principal, old.group)?;
                }
            }
            for r in recs {
                eng.perms.set(eng.store.as_ref(), r)?;
            }
            eng.changed();
            Ok(None)
        })(),
        "RemoveEntityPermission" => (|| {
            let e = entity_arg(eng, &args, "entity")?;
            let user = normalize_principal(args.str("user").unwrap_or(""));
            let group = args.get("isGroup").and_then(Value::as_bool).unwrap_or(false);
            if !eng.perms.remove(eng.store.as_ref(), &e.value, &user, group)? {
                return Err(Fault::plain_not_found(format!("no permission for {user} on {}", e.value)));
            }
            eng.changed();
            Ok(None)
        })(),
        "HasPrivilegeOnEntity" | "HasPrivilegeOnEntities" => (|| {
            let sid = args.str("sessionId").unwrap_or("");
            let user = match eng.sessions.by_key(sid) {
                Some(s) => s.user.clone(),
                None => return Err(Fault::plain_not_found(format!("session {sid} not found"))),
            };
            let privs = strings(&args, "privId");
            let check = |e: &MoRef| privs.iter().map(|p| eng.has_privilege(&user, e, p)).collect::<Vec<bool>>();
            if method == "HasPrivilegeOnEntity" {
                let e = entity_arg(eng, &args, "entity")?;
                Ok(Some(Value::Array(types::boolean, check(&e).into_iter().map(Value::Bool).collect())))
            } else {
                let mut out = vec![];
                for r in args.get("entity").and_then(Value::as_array).unwrap_or(&[]).iter().filter_map(Value::as_moref)
                {
                    let e = eng.resolve(r)?;
                    let avail = privs
                        .iter()
                        .zip(check(&e))
                        .map(|(p, g)| {
                            Value::from(
                                Data::new(types::PrivilegeAvailability).with("privId", p.clone()).with("isGranted", g),
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
        })(),
        "HasUserPrivilegeOnEntities" => (|| {
            let user = normalize_principal(args.str("userName").unwrap_or(""));
            let privs = strings(&args, "privId");
            let mut out = vec![];
            for r in args.get("entities").and_then(Value::as_array).unwrap_or(&[]).iter().filter_map(Value::as_moref) {
                let e = eng.resolve(r)?;
                let avail = privs
                    .iter()
                    .map(|p| {
                        Value::from(
                            Data::new(types::PrivilegeAvailability)
                                .with("privId", p.clone())
                                .with("isGranted", eng.has_privilege(&user, &e, p)),
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
        })(),
        _ => return None,
    })
}
