//! Roles, privileges and permissions. The privilege catalogue is every
//! privilege the VMODL registry names; the system roles are vCenter's.
use crate::store::{PermissionRecord, Store};
use parking_lot::RwLock;
use std::collections::BTreeSet;
use std::sync::OnceLock;

pub const ROLE_ADMIN: i32 = -1;
pub const ROLE_READONLY: i32 = -2;
pub const ROLE_VIEW: i32 = -3;
pub const ROLE_ANONYMOUS: i32 = -4;
pub const ROLE_NOACCESS: i32 = -5;

pub struct RoleDef {
    pub id: i32,
    pub name: &'static str,
    pub label: &'static str,
}

pub const SYSTEM_ROLES: &[RoleDef] = &[
    RoleDef { id: ROLE_ADMIN, name: "Admin", label: "Administrator" },
    RoleDef { id: ROLE_READONLY, name: "ReadOnly", label: "Read-only" },
    RoleDef { id: ROLE_VIEW, name: "View", label: "View" },
    RoleDef { id: ROLE_ANONYMOUS, name: "Anonymous", label: "Anonymous" },
    RoleDef { id: ROLE_NOACCESS, name: "NoAccess", label: "No access" },
];

pub fn role_by_name(name: &str) -> Option<&'static RoleDef> {
    SYSTEM_ROLES.iter().find(|r| r.name.eq_ignore_ascii_case(name))
}
pub fn role_by_id(id: i32) -> Option<&'static RoleDef> {
    SYSTEM_ROLES.iter().find(|r| r.id == id)
}

/// Every privilege id named anywhere in the registry (methods, parameters,
/// properties) or in our table of per-argument checks, sorted.
pub fn all_privileges() -> &'static [&'static str] {
    static ALL: OnceLock<Vec<&'static str>> = OnceLock::new();
    ALL.get_or_init(|| {
        let mut s = BTreeSet::new();
        s.insert("System.Anonymous");
        s.insert("System.View");
        s.insert("System.Read");
        for t in vmodl::schema::TYPES {
            for p in t.props {
                if let Some(x) = p.privilege {
                    s.insert(x);
                }
            }
            for m in t.methods {
                if let Some(x) = m.privilege {
                    s.insert(x);
                }
                for p in m.params {
                    if let Some(x) = p.privilege {
                        s.insert(x);
                    }
                }
            }
        }
        for r in super::privileges::RULES {
            for n in r.needs {
                s.insert(n.privilege);
            }
        }
        s.into_iter().collect()
    })
}

pub fn role_privileges(role: i32) -> Vec<&'static str> {
    match role {
        ROLE_ADMIN => all_privileges().to_vec(),
        ROLE_READONLY => vec!["System.Anonymous", "System.Read", "System.View"],
        ROLE_VIEW => vec!["System.Anonymous", "System.View"],
        ROLE_ANONYMOUS => vec!["System.Anonymous"],
        _ => vec![],
    }
}

pub fn role_has(role: i32, privilege: &str) -> bool {
    match role {
        ROLE_ADMIN => true,
        ROLE_READONLY => matches!(privilege, "System.Anonymous" | "System.Read" | "System.View"),
        ROLE_VIEW => matches!(privilege, "System.Anonymous" | "System.View"),
        ROLE_ANONYMOUS => privilege == "System.Anonymous",
        _ => false,
    }
}

/// `VSPHERE.LOCAL\user` and `user@vsphere.local` name the same principal.
pub fn normalize_principal(p: &str) -> String {
    match p.split_once('\\') {
        Some((dom, user)) => format!("{}@{}", user.to_lowercase(), dom.to_lowercase()),
        None => match p.split_once('@') {
            Some((user, dom)) => format!("{}@{}", user.to_lowercase(), dom.to_lowercase()),
            None => p.to_lowercase(),
        },
    }
}

#[derive(Default)]
pub struct Permissions {
    perms: RwLock<Vec<PermissionRecord>>,
}

impl Permissions {
    pub fn reload(&self, store: &dyn Store) -> crate::store::Result<()> {
        let all = store.list_permissions()?;
        *self.perms.write() = all;
        Ok(())
    }

    pub fn on_entity(&self, moid: &str) -> Vec<PermissionRecord> {
        self.perms.read().iter().filter(|p| p.entity == moid).cloned().collect()
    }
    pub fn all(&self) -> Vec<PermissionRecord> {
        self.perms.read().clone()
    }

    /// The role of `user` on the entity whose path to the root is `path`
    /// (entity first): the nearest permission, inherited ones only when they
    /// propagate.
    pub fn effective_role(&self, user: &str, path: &[String]) -> Option<i32> {
        let user = normalize_principal(user);
        let perms = self.perms.read();
        for (i, moid) in path.iter().enumerate() {
            if let Some(p) = perms.iter().find(|p| &p.entity == moid && !p.group && p.principal == user) {
                if i == 0 || p.propagate {
                    return Some(p.role_id);
                }
            }
        }
        None
    }

    pub fn set(&self, store: &dyn Store, p: PermissionRecord) -> crate::store::Result<()> {
        store.put_permission(&p)?;
        let mut perms = self.perms.write();
        perms.retain(|q| !(q.entity == p.entity && q.principal == p.principal && q.group == p.group));
        perms.push(p);
        Ok(())
    }

    pub fn remove(&self, store: &dyn Store, entity: &str, principal: &str, group: bool) -> crate::store::Result<bool> {
        let found = store.remove_permission(entity, principal, group)?;
        self.perms.write().retain(|q| !(q.entity == entity && q.principal == principal && q.group == group));
        Ok(found)
    }
}
