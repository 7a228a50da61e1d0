//! Users, password hashes and login sessions.
use crate::store::{SessionOp, SessionRecord, Store, UserRecord};
use argon2::password_hash::{rand_core::OsRng, PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::Argon2;
use chrono::{DateTime, TimeZone, Utc};
use parking_lot::RwLock;
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::collections::HashSet;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, OnceLock};

pub const ADMIN_USER: &str = "administrator@vsphere.local";

pub fn hash_password(pw: &str) -> String {
    let salt = SaltString::generate(&mut OsRng);
    Argon2::default().hash_password(pw.as_bytes(), &salt).expect("argon2 hash").to_string()
}

/// Password checks run at once at most (each argon2 check takes ~19 MiB
/// and a core): parallel logins wait their turn instead of exhausting memory.
const PARALLEL_CHECKS: usize = 4;

/// Run a CPU-heavy step (argon2) off the async workers' backs: on the
/// multi-threaded runtime the worker hands its other tasks on first. At
/// most `PARALLEL_CHECKS` run at once.
fn heavy<T>(f: impl FnOnce() -> T) -> T {
    static SLOTS: std::sync::Mutex<usize> = std::sync::Mutex::new(0);
    static FREED: std::sync::Condvar = std::sync::Condvar::new();
    let bounded = || {
        let mut n = SLOTS.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        while *n >= PARALLEL_CHECKS {
            n = FREED.wait(n).unwrap_or_else(std::sync::PoisonError::into_inner);
        }
        *n += 1;
        drop(n);
        let out = f();
        *SLOTS.lock().unwrap_or_else(std::sync::PoisonError::into_inner) -= 1;
        FREED.notify_one();
        out
    };
    crate::engine::off_worker(bounded)
}

/// Spend the time a password check takes, for a user that does not exist,
/// so the answer's timing does not tell which users exist.
pub fn verify_nobody(pw: &str) {
    static DUMMY: OnceLock<String> = OnceLock::new();
    let h = DUMMY.get_or_init(|| hash_password(&hex::encode(rand::random::<[u8; 16]>())));
    if let Ok(ph) = PasswordHash::new(h) {
        heavy(|| {
            let _ = Argon2::default().verify_password(pw.as_bytes(), &ph);
        });
    }
}

/// The store's key for a session token: its SHA-256, so the store (a file
/// in the data directory, or a database) never holds a usable token.
pub fn token_digest(token: &str) -> String {
    hex::encode(Sha256::digest(token.as_bytes()))
}

/// How long sessions live: idle (since the last call) and in all.
#[derive(Debug, Clone, Copy)]
pub struct Lifetimes {
    pub idle_ms: i64,
    pub max_ms: i64,
}

/// vCenter's API session idle timeout is 30 minutes (KB 1031039; 8.0 says
/// up to 120); an absolute bound of a day.
pub const DEFAULT_IDLE_SECS: u64 = 30 * 60;
pub const DEFAULT_MAX_SECS: u64 = 24 * 3600;

impl Default for Lifetimes {
    fn default() -> Self {
        Lifetimes { idle_ms: DEFAULT_IDLE_SECS as i64 * 1000, max_ms: DEFAULT_MAX_SECS as i64 * 1000 }
    }
}

/// Login throttling: failures counted per user and per client address
/// within a window; past a few, further attempts are refused without a
/// password check until a backoff (doubling, bounded) has passed.
#[derive(Default)]
pub struct Throttle {
    failures: parking_lot::Mutex<HashMap<String, (u32, i64)>>,
}

/// Failures allowed in the window before backoff starts (vCenter SSO: 5 in 180 s).
const FREE_FAILURES: u32 = 5;
const WINDOW_MS: i64 = 180_000;
const MAX_BACKOFF_MS: i64 = 60_000;

impl Throttle {
    /// The time (ms since the epoch) before which `key` may not try again.
    fn blocked_until(&self, key: &str) -> i64 {
        match self.failures.lock().get(key) {
            Some(&(n, last)) if n >= FREE_FAILURES => {
                last + (1000i64 << (n - FREE_FAILURES).min(6)).min(MAX_BACKOFF_MS)
            }
            _ => 0,
        }
    }
    /// May these keys try now?
    pub fn admits(&self, keys: &[&str]) -> bool {
        let now = Utc::now().timestamp_millis();
        keys.iter().all(|k| self.blocked_until(k) <= now)
    }
    pub fn failed(&self, keys: &[&str]) {
        let now = Utc::now().timestamp_millis();
        let mut m = self.failures.lock();
        if m.len() > 100_000 {
            m.retain(|_, (_, last)| now - *last < WINDOW_MS);
        }
        for k in keys {
            let e = m.entry(k.to_string()).or_insert((0, now));
            if now - e.1 > WINDOW_MS {
                e.0 = 0;
            }
            e.0 += 1;
            e.1 = now;
        }
    }
    pub fn succeeded(&self, user_key: &str) {
        self.failures.lock().remove(user_key);
    }
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
        .is_ok_and(|ph| heavy(|| Argon2::default().verify_password(pw.as_bytes(), &ph).is_ok()));
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
    /// Has the session run out (idle too long, or lived too long)?
    pub fn expired(&self, l: &Lifetimes, now_ms: i64) -> bool {
        now_ms - self.last_active.load(Ordering::Relaxed) > l.idle_ms
            || now_ms - self.login_time.timestamp_millis() > l.max_ms
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
    lifetimes: RwLock<Lifetimes>,
    pub throttle: Throttle,
    /// Sessions per user, and the cap on them.
    per_user: parking_lot::Mutex<HashMap<String, usize>>,
    max_per_user: AtomicI64,
}

/// Sessions one user may hold at once (vCenter's whole pool is 2,000 SOAP
/// sessions before 8.0U3, 3,000 since).
pub const DEFAULT_MAX_SESSIONS_PER_USER: usize = 2_000;

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
        Sessions {
            by_token: Default::default(),
            removed,
            writer: parking_lot::Mutex::new(tx),
            lifetimes: Default::default(),
            throttle: Default::default(),
            per_user: Default::default(),
            max_per_user: AtomicI64::new(DEFAULT_MAX_SESSIONS_PER_USER as i64),
        }
    }

    pub fn set_max_per_user(&self, n: usize) {
        self.max_per_user.store(n as i64, Ordering::Relaxed);
    }

    fn count(&self, user: &str, add: bool) {
        let mut m = self.per_user.lock();
        if add {
            *m.entry(user.to_string()).or_default() += 1;
        } else if let Some(n) = m.get_mut(user) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                m.remove(user);
            }
        }
    }

    pub fn set_lifetimes(&self, l: Lifetimes) {
        *self.lifetimes.write() = l;
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

    /// A new session for `user`, or LimitExceeded when it holds as many as
    /// it may (ended and run-out sessions do not count).
    pub fn create(
        &self,
        user: &UserRecord,
        locale: &str,
        ip: &str,
        ua: &str,
    ) -> Result<Arc<Session>, crate::engine::Fault> {
        let cap = self.max_per_user.load(Ordering::Relaxed) as usize;
        if self.per_user.lock().get(&user.name).copied().unwrap_or(0) >= cap {
            for t in self.expired() {
                self.remove(&t);
            }
            if self.per_user.lock().get(&user.name).copied().unwrap_or(0) >= cap {
                return Err(crate::engine::Fault::limit_exceeded(
                    "session",
                    cap,
                    format!("user {} already holds {cap} sessions; log some out first", user.name),
                ));
            }
        }
        let now = Utc::now();
        let token = hex::encode(rand::random::<[u8; 20]>());
        let rec = SessionRecord {
            token: token_digest(&token),
            key: uuid::Uuid::new_v4().to_string(),
            user: user.name.clone(),
            login_time: now.timestamp_millis(),
            last_active: now.timestamp_millis(),
            locale: locale.to_string(),
            ip: ip.to_string(),
            user_agent: ua.to_string(),
        };
        let mut s = Session::from_record(rec.clone(), user.full_name.clone());
        s.token = token;
        let s = Arc::new(s);
        self.by_token.write().insert(s.token.clone(), s.clone());
        self.count(&s.user, true);
        self.send(SessionOp::Put(rec));
        Ok(s)
    }

    /// The session for a client token; sessions persist, so one made before
    /// a restart is found in the store.
    /// A session that has run out is ended here, as vCenter ends it.
    pub fn lookup(&self, store: &dyn Store, token: &str) -> Option<Arc<Session>> {
        let s = self.lookup_live(store, token)?;
        if s.expired(&self.lifetimes.read(), Utc::now().timestamp_millis()) {
            self.remove(token);
            return None;
        }
        Some(s)
    }

    /// The session of a token, run out or not (to end it).
    pub fn lookup_live(&self, store: &dyn Store, token: &str) -> Option<Arc<Session>> {
        if let Some(s) = self.by_token.read().get(token) {
            return Some(s.clone());
        }
        let digest = token_digest(token);
        if self.removed.lock().contains(&digest) {
            return None;
        }
        let rec = store.get_session(&digest).ok()??;
        let full = store.get_user(&rec.user).ok().flatten().map(|u| u.full_name).unwrap_or_default();
        let mut s = Session::from_record(rec, full);
        s.token = token.to_string();
        let s = Arc::new(s);
        if self.by_token.write().insert(token.to_string(), s.clone()).is_none() {
            self.count(&s.user, true);
        }
        Some(s)
    }

    pub fn remove(&self, token: &str) {
        let digest = token_digest(token);
        self.removed.lock().insert(digest.clone());
        if let Some(s) = self.by_token.write().remove(token) {
            self.count(&s.user, false);
        }
        self.send(SessionOp::Delete(digest));
    }

    /// The tokens of the sessions that have run out.
    pub fn expired(&self) -> Vec<String> {
        let l = *self.lifetimes.read();
        let now = Utc::now().timestamp_millis();
        self.by_token.read().values().filter(|s| s.expired(&l, now)).map(|s| s.token.clone()).collect()
    }

    pub fn by_key(&self, key: &str) -> Option<Arc<Session>> {
        self.by_token.read().values().find(|s| s.key == key).cloned()
    }

    pub fn all(&self) -> Vec<Arc<Session>> {
        self.by_token.read().values().cloned().collect()
    }
}
