//! Who may do what: users and their sessions (`session`), roles and
//! permissions (`authz`), the privilege each method and argument needs
//! (`privileges`), and the one login check every API goes through.
pub mod authz;
pub mod privileges;
pub mod session;

use crate::engine::{Engine, Fault};
use crate::store::UserRecord;
use session::{normalize_user, verify_password};

/// vCenter shows `user@vsphere.local` as `VSPHERE.LOCAL\user`.
pub fn display_user(u: &str) -> String {
    match u.split_once('@') {
        Some((user, dom)) => format!("{}\\{}", dom.to_uppercase(), user),
        None => u.to_string(),
    }
}

impl Engine {
    /// Check a user name and password: the user's record, or InvalidLogin.
    /// Every login of every API comes here: failures are throttled per user
    /// and per client address (`Throttle`), and an unknown user costs the same
    /// password check as a known one.
    pub fn authenticate(&self, name: &str, pw: &str, ip: &str) -> Result<UserRecord, Fault> {
        let name = normalize_user(name);
        let (user_key, ip_key) = (format!("user:{name}"), format!("ip:{ip}"));
        let keys = [user_key.as_str(), ip_key.as_str()];
        let throttle = &self.sessions.throttle;
        if !throttle.admits(&keys) {
            return Err(Fault::invalid_login());
        }
        let found = self.user(&name)?;
        let Some(mut user) = found else {
            session::verify_nobody(pw);
            throttle.failed(&keys);
            return Err(Fault::invalid_login());
        };
        if !verify_password(&user, pw) {
            // The password may have just been changed by `vtwin user add`.
            self.refresh_external(true)?;
            let again = self.user(&name)?;
            match again {
                Some(u) if verify_password(&u, pw) => user = u,
                _ => {
                    throttle.failed(&keys);
                    return Err(Fault::invalid_login());
                }
            }
        }
        throttle.succeeded(&user_key);
        Ok(user)
    }
}
