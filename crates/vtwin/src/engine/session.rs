//! Users, password hashes and login sessions.
use crate::store::{SessionOp, SessionRecord, Store, UserRecord};
use std::collections::HashSet;
use std::sync::mpsc;
use argon2::password_hash::{rand_core::OsRng, PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::Argon2;
use chrono::{DateTime, TimeZone, Utc};
use parking_lot::RwLock;
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, OnceLock};

pub const ADMIN_USER: &str = "administrator@vsphere.local";

pub fn hash_password(pw: &str) -> String {
    let salt = SaltString::generate(&mut OsRng);
    Argon2::default().hash_password(pw.as_bytes(), &salt).expect("argon2 hash").to_string()
}

/// Verify against the stored argon2 hash. Successful checks are remembered
/// (as a keyed digest, per process) so repeated logins stay cheap.
pub fn verify_password(user: &UserRecord, pw: &str) -> bool {
    static KEY: OnceLock<[u8; 32]> = OnceLock::new();
    static OK: OnceLock<RwLock<HashMap<String, [u8; 32]>>> = OnceLock::new();
    let key = KEY.get_or_init(rand::random);
    let ok = OK.get_or_init(Default::default);
    let mut h = Sha256::new();
    h.update(key);
    h.update(user.password_hash.as_bytes());
    h.update([0]);
    h.update(pw.as_bytes());
    let d: [u8; 32] = h.finalize().into();
    if ok.read().get(&user.name) == Some(&d) {
        return true;
    }
    let good = PasswordHash::new(&user.password_hash)
        .map(|ph| Argon2::default().verify_password(pw.as_bytes(), &ph).is_ok())
        .unwrap_or(false);
    if good {
        ok.write().insert(user.name.clone(), d);
    }
    good
}

pub fn normalize_user(name: &str) -> String {
    super::authz::normalize_principal(name)
}

pub struct Session {
    pub token: String,
    pub key: String,
    pub user: String,
    pub full_name: String,
    pub login_time: DateTime<Utc>,
    pub last_active: AtomicI64,
    pub locale: RwLock<String>,
    pub ip: String,
    pub user_agent: String,
    pub call_count: AtomicI64,
}

impl Session {
    pub fn touch(&self) {
        self.last_active.store(Utc::now().timestamp_millis(), Ordering::Relaxed);
        self.call_count.fetch_add(1, Ordering::Relaxed);
    }
    pub fn last_active(&self) -> DateTime<Utc> {
        Utc.timestamp_millis_opt(self.last_active.load(Ordering::Relaxed)).single().unwrap_or(self.login_time)
    }
    fn from_record(r: SessionRecord, full_name: String) -> Session {
        Session {
            token: r.token,
            key: r.key,
            user: r.user,
            full_name,
            login_time: Utc.timestamp_millis_opt(r.login_time).single().unwrap_or_else(Utc::now),
            last_active: AtomicI64::new(r.last_active),
            locale: RwLock::new(r.locale),
            ip: r.ip,
            user_agent: r.user_agent,
            call_count: AtomicI64::new(0),
        }
    }
}

/// Live sessions, in memory, written to the store by a background writer
/// that commits whatever is queued in one transaction (so a burst of logins
/// costs one commit, not one each).
pub struct Sessions {
    by_token: RwLock<HashMap<String, Arc<Session>>>,
    /// Tokens logged out whose delete is not committed yet: never revived
    /// from the store.
    removed: Arc<parking_lot::Mutex<HashSet<String>>>,
    writer: parking_lot::Mutex<mpsc::Sender<Msg>>,
}

enum Msg {
    Op(SessionOp),
    Flush(mpsc::Sender<()>),
}

impl Sessions {
    pub fn new(store: Arc<dyn Store>) -> Sessions {
        let (tx, rx) = mpsc::channel::<Msg>();
        let removed: Arc<parking_lot::Mutex<HashSet<String>>> = Default::default();
        let rm = removed.clone();
        std::thread::Builder::new()
            .name("session-writer".into())
            .spawn(move || {
                while let Ok(first) = rx.recv() {
                    let mut ops = vec![];
                    let mut acks = vec![];
                    let mut next = Some(first);
                    while let Some(m) = next {
                        match m {
                            Msg::Op(op) => ops.push(op),
                            Msg::Flush(a) => acks.push(a),
                        }
                        next = rx.try_recv().ok();
                    }
                    if !ops.is_empty() {
                        if let Err(e) = store.apply_sessions(&ops) {
                            tracing::warn!(error = %e, "cannot persist sessions");
                        }
                        let mut r = rm.lock();
                        for op in &ops {
                            if let SessionOp::Delete(t) = op {
                                r.remove(t);
                            }
                        }
                    }
                    for a in acks {
                        let _ = a.send(());
                    }
                }
            })
            .expect("spawn session writer");
        Sessions { by_token: Default::default(), removed, writer: parking_lot::Mutex::new(tx) }
    }

    fn send(&self, op: SessionOp) {
        let _ = self.writer.lock().send(Msg::Op(op));
    }

    /// Wait until every queued session change is in the store.
    pub fn flush(&self) {
        let (tx, rx) = mpsc::channel();
        if self.writer.lock().send(Msg::Flush(tx)).is_ok() {
            let _ = rx.recv();
        }
    }

    pub fn create(&self, user: &UserRecord, locale: &str, ip: &str, ua: &str) -> Arc<Session> {
        let now = Utc::now();
        let rec = SessionRecord {
            token: hex::encode(rand::random::<[u8; 20]>()),
            key: uuid::Uuid::new_v4().to_string(),
            user: user.name.clone(),
            login_time: now.timestamp_millis(),
            last_active: now.timestamp_millis(),
            locale: locale.to_string(),
            ip: ip.to_string(),
            user_agent: ua.to_string(),
        };
        let s = Arc::new(Session::from_record(rec.clone(), user.full_name.clone()));
        self.by_token.write().insert(s.token.clone(), s.clone());
        self.send(SessionOp::Put(rec));
        s
    }

    /// The session for a client token; sessions persist, so one made before
    /// a restart is found in the store.
    pub fn lookup(&self, store: &dyn Store, token: &str) -> Option<Arc<Session>> {
        if let Some(s) = self.by_token.read().get(token) {
            return Some(s.clone());
        }
        if self.removed.lock().contains(token) {
            return None;
        }
        let rec = store.get_session(token).ok()??;
        let full = store.get_user(&rec.user).ok().flatten().map(|u| u.full_name).unwrap_or_default();
        let s = Arc::new(Session::from_record(rec, full));
        self.by_token.write().insert(token.to_string(), s.clone());
        Some(s)
    }

    pub fn remove(&self, token: &str) {
        self.removed.lock().insert(token.to_string());
        self.by_token.write().remove(token);
        self.send(SessionOp::Delete(token.to_string()));
    }

    pub fn by_key(&self, key: &str) -> Option<Arc<Session>> {
        self.by_token.read().values().find(|s| s.key == key).cloned()
    }

    pub fn all(&self) -> Vec<Arc<Session>> {
        self.by_token.read().values().cloned().collect()
    }
}
