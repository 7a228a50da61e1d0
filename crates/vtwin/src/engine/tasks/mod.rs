//! The task engine: one durable record per task (`record`), the rules and
//! views of each API that uses it (`vim`, `vapi`, `vcd`: the VCD fields
//! live beside the record, so nothing here imports back from a wire or
//! org module), and the `Tasks` service that keeps the records: the store,
//! the in-memory map and its indexes, per-user caps, retention, and the
//! optimistic update loop every change goes through. No HTTP.
mod record;
pub mod vapi;
pub mod vcd;
mod vim;

pub use record::{Kept, NewTask, Retention, TaskRecord, TaskState};
pub use vapi::{VapiStatus, VapiUpdate};

use crate::engine::fault::Fault;
use crate::store::Store;
use chrono::Utc;
use parking_lot::RwLock;
use record::ms;
use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;
use vapi::apply_vapi;
use vmodl::{types, Data, Value};

fn index(by_vcd: &mut HashMap<String, String>, by_parent: &mut HashMap<String, Vec<String>>, t: &TaskRecord) {
    if let Some(v) = &t.vcd {
        by_vcd.insert(v.id.clone(), t.key.clone());
    }
    if let Some(p) = &t.parent_key {
        by_parent.entry(p.clone()).or_default().push(t.key.clone());
    }
}

/// A stored row as a record (None, and a warning, if it cannot be read).
fn parse_row(row: &crate::store::TaskRow) -> Option<TaskRecord> {
    match serde_json::from_str::<TaskRecord>(&row.record) {
        Ok(mut t) => {
            t.version = row.version;
            Some(t)
        }
        Err(e) => {
            tracing::warn!(key = %row.key, error = %e, "unreadable task record skipped");
            None
        }
    }
}

pub struct Tasks {
    store: Arc<dyn Store>,
    map: RwLock<HashMap<String, TaskRecord>>,
    /// Completed tasks by completion order, for pruning.
    completed: RwLock<BTreeMap<(i64, i64), String>>,
    /// Sequence numbers this node may hand out: next, end (exclusive).
    seqs: parking_lot::Mutex<(i64, i64)>,
    /// This node's id: the owner of the tasks it makes.
    node: RwLock<String>,
    /// Tasks claimed from gone nodes and not yet ended (retried).
    orphans: parking_lot::Mutex<Vec<(String, String)>>,
    /// A note from another node could not be taken in: read everything.
    pub needs_resync: std::sync::atomic::AtomicBool,
    retention: Retention,
    changes: tokio::sync::watch::Sender<u64>,
    /// Wake-ups for the workers of running engine tasks, fired on cancel.
    workers: parking_lot::Mutex<HashMap<String, Arc<tokio::sync::Notify>>>,
    /// Indexes: VCD task id → key; parent key → child keys.
    by_vcd: RwLock<HashMap<String, String>>,
    by_parent: RwLock<HashMap<String, Vec<String>>>,
    /// When expired VCD tasks were last looked for (ms).
    vcd_pruned: AtomicI64,
    /// Per user: tasks not ended, VCD tasks kept; and the caps on them.
    quotas: parking_lot::Mutex<Quotas>,
    caps: RwLock<TaskCaps>,
}

/// How many tasks one user may have: not yet ended (any API), and VCD
/// tasks kept (they live until their expiry, ended or not).
#[derive(Debug, Clone, Copy)]
pub struct TaskCaps {
    pub live_per_user: usize,
    pub vcd_per_user: usize,
}

pub const DEFAULT_LIVE_TASKS_PER_USER: usize = 10_000;
pub const DEFAULT_VCD_TASKS_PER_USER: usize = 10_000;

impl Default for TaskCaps {
    fn default() -> Self {
        TaskCaps { live_per_user: DEFAULT_LIVE_TASKS_PER_USER, vcd_per_user: DEFAULT_VCD_TASKS_PER_USER }
    }
}

#[derive(Default)]
struct Quotas {
    live: HashMap<String, usize>,
    vcd: HashMap<String, usize>,
}

impl Quotas {
    fn tally(&mut self, t: &TaskRecord, add: bool) {
        let who = t.quota_user();
        let step = |m: &mut HashMap<String, usize>| {
            if add {
                *m.entry(who.to_string()).or_default() += 1;
            } else if let Some(n) = m.get_mut(who) {
                *n = n.saturating_sub(1);
                if *n == 0 {
                    m.remove(who);
                }
            }
        };
        if !t.state.is_final() {
            step(&mut self.live);
        }
        if t.vcd.is_some() {
            step(&mut self.vcd);
        }
    }
}

impl Tasks {
    /// Load the tasks kept in the store. Tasks that other nodes (or an
    /// earlier life of this one) held stay as they are until the node that
    /// holds them is known to be gone: see `claim_orphans`.
    pub fn load(
        store: Arc<dyn Store>,
        retention: Retention,
        changes: tokio::sync::watch::Sender<u64>,
    ) -> crate::store::Result<Tasks> {
        let mut map = HashMap::new();
        let mut completed = BTreeMap::new();
        for row in store.list_tasks()? {
            let Some(t) = parse_row(&row) else { continue };
            if t.state.is_final() && t.vcd.is_none() {
                completed.insert((t.complete_time.unwrap_or(0), t.seq), row.key.clone());
            }
            map.insert(row.key, t);
        }
        let (mut by_vcd, mut by_parent) = (HashMap::new(), HashMap::<String, Vec<String>>::new());
        let mut quotas = Quotas::default();
        for t in map.values() {
            index(&mut by_vcd, &mut by_parent, t);
            quotas.tally(t, true);
        }
        Ok(Tasks {
            store,
            by_vcd: RwLock::new(by_vcd),
            by_parent: RwLock::new(by_parent),
            vcd_pruned: AtomicI64::new(0),
            quotas: parking_lot::Mutex::new(quotas),
            caps: Default::default(),
            map: RwLock::new(map),
            completed: RwLock::new(completed),
            seqs: parking_lot::Mutex::new((0, 0)),
            node: RwLock::new("local".into()),
            orphans: Default::default(),
            needs_resync: Default::default(),
            retention,
            changes,
            workers: Default::default(),
        })
    }

    /// This node's id (tasks it makes are owned by it).
    pub fn node(&self) -> String {
        self.node.read().clone()
    }
    pub fn set_node(&self, id: &str) {
        *self.node.write() = id.to_string();
    }

    /// Take over the tasks of nodes that are gone (their lease ran out, or
    /// they were earlier lives of this node: owners starting with
    /// `previous`) and end them in error. The number ended.
    pub fn claim_orphans(&self, previous: &str) -> Result<usize, Fault> {
        let node = self.node();
        let rows = self.store.claim_orphans(&node, previous)?;
        for row in rows {
            let gone =
                if row.owner.is_empty() { "an earlier vtwin".to_string() } else { format!("node {}", row.owner) };
            if let Some(t) = parse_row(&row) {
                self.install(t);
            }
            self.orphans.lock().push((row.key, gone));
        }
        // Claimed rows are this node's now: until each has ended (or is
        // found ended), it is tried again at every look.
        let pending = std::mem::take(&mut *self.orphans.lock());
        let mut n = 0;
        for (key, gone) in pending {
            let r = self.update(&key, |t| {
                if t.state.is_final() {
                    // Nothing to end; the write clears the row's live mark.
                    return Ok(());
                }
                let f = Fault::system_error(format!(
                    "{gone}, which held this task, stopped while the task was {}; the task did not finish (ended by node {node})",
                    t.state.as_str()
                ));
                let now = ms(Utc::now());
                t.state = TaskState::Error;
                t.blocked = false;
                t.error = Some(Kept(f.data.clone().into()));
                t.error_message = Some(f.message);
                t.start_time.get_or_insert(now);
                t.complete_time = Some(now);
                Ok(())
            });
            match r {
                Ok(_) => n += 1,
                Err(f) if f.data.ty == types::NotFound => {}
                Err(f) => {
                    tracing::warn!(%key, error = %f.message, "ending a gone node's task failed; trying again later");
                    self.orphans.lock().push((key, gone));
                }
            }
        }
        Ok(n)
    }

    /// Take in what another node did: read the named tasks again (all of
    /// them on a resync) and wake waiters.
    pub fn refresh(&self, note: &crate::store::TaskNote) -> Result<(), Fault> {
        use crate::store::TaskNote;
        match note {
            TaskNote::Changed(keys) => {
                let rows = self.store.get_tasks(keys)?;
                let gone: Vec<String> = keys.iter().filter(|k| !rows.iter().any(|r| &r.key == *k)).cloned().collect();
                for row in &rows {
                    if let Some(t) = parse_row(row) {
                        self.install(t);
                    }
                }
                self.remove_local(&gone);
            }
            TaskNote::Resync => {
                let rows = self.store.list_tasks()?;
                let kept: std::collections::HashSet<&str> = rows.iter().map(|r| r.key.as_str()).collect();
                let missing: Vec<String> =
                    self.map.read().keys().filter(|k| !kept.contains(k.as_str())).cloned().collect();
                for row in &rows {
                    if let Some(t) = parse_row(row) {
                        self.install(t);
                    }
                }
                // Made here since the listing was read? Ask again.
                let still = self.store.get_tasks(&missing)?;
                let gone: Vec<String> = missing.into_iter().filter(|k| !still.iter().any(|r| &r.key == k)).collect();
                self.remove_local(&gone);
            }
        }
        self.changes.send_modify(|v| *v += 1);
        Ok(())
    }

    /// Put a record read from or written to the store in the map, unless
    /// the map has the same or a later version. A cancel wakes the task's
    /// worker, wherever the cancel came from.
    fn install(&self, t: TaskRecord) -> bool {
        let mut map = self.map.write();
        let prev = map.get(&t.key);
        if prev.is_some_and(|p| p.version >= t.version) {
            return false;
        }
        let newly_final = t.state.is_final() && prev.is_none_or(|p| !p.state.is_final());
        let newly_cancelled = t.cancelled && prev.is_none_or(|p| !p.cancelled);
        if prev.is_none() {
            index(&mut self.by_vcd.write(), &mut self.by_parent.write(), &t);
        }
        if newly_final && t.vcd.is_none() {
            self.completed.write().insert((t.complete_time.unwrap_or(0), t.seq), t.key.clone());
        }
        if newly_cancelled {
            if let Some(n) = self.workers.lock().get(&t.key) {
                n.notify_one();
            }
        }
        {
            let mut q = self.quotas.lock();
            if let Some(p) = prev {
                q.tally(p, false);
            }
            q.tally(&t, true);
        }
        map.insert(t.key.clone(), t);
        true
    }

    pub fn set_caps(&self, caps: TaskCaps) {
        *self.caps.write() = caps;
    }

    /// May `t`'s user have one more task like it? LimitExceeded if not.
    fn admit(&self, t: &TaskRecord) -> Result<(), Fault> {
        let caps = *self.caps.read();
        let q = self.quotas.lock();
        let over = |m: &HashMap<String, usize>, cap: usize, what: &str| -> Result<(), Fault> {
            if m.get(t.quota_user()).copied().unwrap_or(0) >= cap {
                return Err(Fault::limit_exceeded(
                    "task",
                    cap,
                    format!("user {} already has {cap} {what}; end some first", t.quota_user()),
                ));
            }
            Ok(())
        };
        if !t.state.is_final() {
            over(&q.live, caps.live_per_user, "tasks that have not ended")?;
        }
        if t.vcd.is_some() {
            over(&q.vcd, caps.vcd_per_user, "vCloud Director tasks")?;
        }
        Ok(())
    }

    /// Forget tasks another node deleted.
    fn remove_local(&self, keys: &[String]) {
        if keys.is_empty() {
            return;
        }
        self.forget(keys);
        self.completed.write().retain(|_, k| !keys.contains(k));
    }

    /// Take tasks out of the map and its indexes.
    fn forget(&self, keys: &[String]) {
        let mut map = self.map.write();
        let (mut by_vcd, mut by_parent) = (self.by_vcd.write(), self.by_parent.write());
        for k in keys {
            if let Some(t) = map.remove(k) {
                self.quotas.lock().tally(&t, false);
                if let Some(v) = &t.vcd {
                    by_vcd.remove(&v.id);
                }
                if let Some(p) = &t.parent_key {
                    if let Some(c) = by_parent.get_mut(p) {
                        c.retain(|x| x != k);
                        if c.is_empty() {
                            by_parent.remove(p);
                        }
                    }
                }
            }
        }
    }

    /// The task as the store has it now (and the map updated with it).
    fn fetch(&self, key: &str) -> Result<Option<TaskRecord>, Fault> {
        let rows = self.store.get_tasks(&[key.to_string()])?;
        match rows.first().and_then(parse_row) {
            Some(t) => {
                self.install(t.clone());
                Ok(Some(t))
            }
            None => {
                self.remove_local(&[key.to_string()]);
                Ok(None)
            }
        }
    }

    pub fn exists(&self, key: &str) -> bool {
        self.map.read().contains_key(key) || (key.starts_with("task-") && self.get(key).is_some())
    }

    /// Every task kept, in no particular order.
    pub fn all(&self) -> Vec<TaskRecord> {
        self.map.read().values().cloned().collect()
    }

    /// A task; one another node made a moment ago and this node has not
    /// heard of yet is read from the store.
    pub fn get(&self, key: &str) -> Option<TaskRecord> {
        if let Some(t) = self.map.read().get(key) {
            return Some(t.clone());
        }
        if key.starts_with("task-") {
            return self.fetch(key).ok().flatten();
        }
        None
    }

    pub fn create(&self, n: NewTask) -> Result<TaskRecord, Fault> {
        self.create_vapi(n, &VapiUpdate::default())
    }

    /// Create a task and apply a vAPI create spec's initial values; nothing
    /// is kept when they break a rule.
    pub fn create_vapi(&self, n: NewTask, initial: &VapiUpdate) -> Result<TaskRecord, Fault> {
        let mut t = self.new_record(n)?;
        let now = t.queue_time;
        apply_vapi(&mut t, initial, now)?;
        self.insert_new(t)
    }

    /// Create a task whose first state `init` sets; nothing is kept when it fails.
    pub fn create_with(
        &self,
        n: NewTask,
        init: impl FnOnce(&mut TaskRecord) -> Result<(), Fault>,
    ) -> Result<TaskRecord, Fault> {
        let mut t = self.new_record(n)?;
        init(&mut t)?;
        self.insert_new(t)
    }

    /// The next task sequence number (blocks of them come from the store,
    /// so nodes never hand out the same one).
    fn next_seq(&self) -> Result<i64, Fault> {
        let mut s = self.seqs.lock();
        if s.0 >= s.1 {
            let (first, n) = self.store.task_seqs()?;
            *s = (first, first + n);
        }
        s.0 += 1;
        Ok(s.0 - 1)
    }

    fn new_record(&self, n: NewTask) -> Result<TaskRecord, Fault> {
        let seq = self.next_seq()?;
        let key = format!("task-{seq}");
        let root_key = n
            .parent_key
            .as_ref()
            .map(|p| self.get(p).and_then(|t| t.root_key.or(Some(t.key))).unwrap_or_else(|| p.clone()));
        Ok(TaskRecord {
            key,
            seq,
            version: 1,
            name: n.name,
            description_id: n.description_id,
            entity: n.entity.as_ref().map(|(m, _)| (m.ty.name().to_string(), m.value.clone())),
            entity_name: n.entity.map(|(_, name)| name),
            state: TaskState::Queued,
            cancelable: n.cancelable,
            cancelled: false,
            progress: None,
            description: None,
            result: None,
            error: None,
            error_message: None,
            user: n.user,
            creator: n.creator,
            queue_time: ms(Utc::now()),
            start_time: None,
            complete_time: None,
            event_chain_id: (seq % i32::MAX as i64) as i32,
            change_tag: None,
            parent_key: n.parent_key,
            root_key,
            activation_id: Some(n.activation_id.unwrap_or_else(|| uuid::Uuid::new_v4().to_string())),
            blocked: false,
            progress_total: None,
            progress_completed: None,
            vapi_error: None,
            vapi_result: None,
            target: n.target,
            vcd: None,
        })
    }

    fn insert_new(&self, mut t: TaskRecord) -> Result<TaskRecord, Fault> {
        self.admit(&t)?;
        t.version = 1;
        let record = serde_json::to_string(&t).map_err(|e| Fault::system_error(e.to_string()))?;
        self.store.insert_task(&crate::store::TaskRow {
            key: t.key.clone(),
            seq: t.seq,
            version: 1,
            owner: self.node(),
            live: t.is_live(),
            record,
        })?;
        self.install(t.clone());
        self.changes.send_modify(|v| *v += 1);
        self.prune()?;
        Ok(t)
    }

    /// Apply `f` to a task and persist the result (`f` judges the state).
    pub fn update_with(
        &self,
        key: &str,
        f: impl FnMut(&mut TaskRecord) -> Result<(), Fault>,
    ) -> Result<TaskRecord, Fault> {
        self.update(key, f)
    }

    /// The task with VCD id `id`.
    pub fn by_vcd_id(&self, id: &str) -> Option<TaskRecord> {
        let key = self.by_vcd.read().get(id).cloned()?;
        self.get(&key)
    }

    /// The tasks whose parent is `key`, oldest first.
    pub fn children(&self, key: &str) -> Vec<TaskRecord> {
        let keys = self.by_parent.read().get(key).cloned().unwrap_or_default();
        let map = self.map.read();
        keys.iter().filter_map(|k| map.get(k).cloned()).collect()
    }

    /// The VCD tasks `pred` accepts, oldest first.
    pub fn vcd_tasks(&self, pred: impl Fn(&vcd::VcdTask) -> bool) -> Vec<TaskRecord> {
        let mut v: Vec<TaskRecord> =
            self.map.read().values().filter(|t| t.vcd.as_ref().is_some_and(&pred)).cloned().collect();
        v.sort_by_key(|t| t.seq);
        v
    }

    /// The wake-up of a running engine task's worker, if it has one.
    pub fn worker_notify(&self, key: &str) -> Option<Arc<tokio::sync::Notify>> {
        self.workers.lock().get(key).cloned()
    }

    /// Apply `f` to a task and persist the result. The write succeeds only
    /// if nobody (another request, another node) changed the task since it
    /// was read; otherwise the task is read again and `f` judges it anew.
    fn update(&self, key: &str, mut f: impl FnMut(&mut TaskRecord) -> Result<(), Fault>) -> Result<TaskRecord, Fault> {
        let not_found = || Fault::plain_not_found(format!("task {key} not found"));
        let mut cur = self.get(key).ok_or_else(not_found)?;
        let mut fresh = false;
        for _ in 0..64 {
            let mut next = cur.clone();
            if let Err(e) = f(&mut next) {
                // Judged on this node's copy, which another node may have
                // moved on: judge the store's record before refusing.
                if fresh {
                    return Err(e);
                }
                cur = self.fetch(key)?.ok_or_else(not_found)?;
                fresh = true;
                continue;
            }
            vcd::follow_engine(&mut next);
            let json = serde_json::to_string(&next).map_err(|e| Fault::system_error(e.to_string()))?;
            match self.store.update_task(key, cur.version, next.is_live(), &json)? {
                Some(v) => {
                    next.version = v;
                    self.install(next.clone());
                    self.changes.send_modify(|v| *v += 1);
                    return Ok(next);
                }
                None => {
                    cur = self.fetch(key)?.ok_or_else(not_found)?;
                    fresh = true;
                }
            }
        }
        Err(Fault::system_error(format!("task {key} keeps changing under this update; try again")))
    }

    fn invalid_state(t: &TaskRecord, what: &str) -> Fault {
        Fault::new(
            types::InvalidState,
            format!("{what}: task {} is {}{}", t.key, t.state.as_str(), if t.cancelled { " (cancelled)" } else { "" }),
        )
    }

    /// SetTaskState: queued → running → success | error; a finished task
    /// never changes again.
    pub fn set_state(
        &self,
        key: &str,
        state: TaskState,
        result: Option<&Value>,
        fault: Option<&Fault>,
    ) -> Result<TaskRecord, Fault> {
        self.update(key, |t| {
            if t.state.is_final() {
                return Err(Self::invalid_state(t, "the task has already completed"));
            }
            if state == TaskState::Queued && t.state == TaskState::Running {
                return Err(Self::invalid_state(t, "a running task cannot go back to queued"));
            }
            let now = ms(Utc::now());
            if state != TaskState::Queued && t.start_time.is_none() {
                t.start_time = Some(now);
            }
            match state {
                TaskState::Error => {
                    let f = fault.cloned().unwrap_or_else(|| Fault::system_error("the task failed"));
                    t.error = Some(Kept(f.data.clone().into()));
                    t.error_message = Some(f.message);
                    t.complete_time = Some(now);
                }
                TaskState::Success => {
                    t.complete_time = Some(now);
                    t.progress = Some(100);
                }
                _ => {}
            }
            if let Some(r) = result {
                t.result = Some(Kept(r.clone()));
            }
            t.blocked = false;
            t.state = state;
            Ok(())
        })
    }

    /// The vAPI extension-task update.
    pub fn update_vapi(&self, key: &str, u: &VapiUpdate) -> Result<TaskRecord, Fault> {
        self.update(key, |t| apply_vapi(t, u, ms(Utc::now())))
    }

    /// UpdateProgress: only while running; values outside 0–100 are clamped.
    pub fn update_progress(&self, key: &str, percent: i32) -> Result<TaskRecord, Fault> {
        self.update(key, |t| {
            if t.state != TaskState::Running {
                return Err(Self::invalid_state(t, "progress can only be reported while the task runs"));
            }
            let p = percent.clamp(0, 100);
            t.progress = Some(p);
            t.progress_total = Some(100);
            t.progress_completed = Some(p as i64);
            Ok(())
        })
    }

    pub fn set_description(&self, key: &str, message: &Data) -> Result<TaskRecord, Fault> {
        self.update(key, |t| {
            if t.state.is_final() {
                return Err(Self::invalid_state(t, "the task has already completed"));
            }
            t.description = Some(Kept(message.clone().into()));
            Ok(())
        })
    }

    /// CancelTask: NotSupported when the task is not cancelable, InvalidState
    /// when it has finished. Cancelling is final: the task ends in error with
    /// RequestCanceled and no later state change is accepted.
    pub fn cancel(&self, key: &str) -> Result<TaskRecord, Fault> {
        self.update(key, |t| {
            if !t.cancelable {
                return Err(Fault::not_supported(format!("task {} cannot be cancelled", t.key)));
            }
            if t.state.is_final() {
                return Err(Self::invalid_state(t, "the task has already completed"));
            }
            let now = ms(Utc::now());
            let f = Fault::new(types::RequestCanceled, "The task was canceled by a user.");
            t.cancelled = true;
            t.state = TaskState::Error;
            t.error = Some(Kept(f.data.clone().into()));
            t.error_message = Some(f.message);
            t.start_time.get_or_insert(now);
            t.complete_time = Some(now);
            Ok(())
        })
    }

    /// Register the worker of an engine task: the Notify fires on cancel.
    pub fn worker(&self, key: &str) -> Arc<tokio::sync::Notify> {
        self.workers.lock().entry(key.to_string()).or_default().clone()
    }
    pub fn worker_done(&self, key: &str) {
        self.workers.lock().remove(key);
    }

    /// Tasks not finished, and those finished in the last ten minutes, newest
    /// last (as TaskManager.recentTask shows them).
    /// Tasks running or completed in the last 10 minutes (the last 200)
    /// that `visible` admits.
    pub fn recent(&self, visible: impl Fn(&TaskRecord) -> bool) -> Vec<String> {
        let horizon = ms(Utc::now()) - 10 * 60 * 1000;
        let map = self.map.read();
        let mut v: Vec<&TaskRecord> = map
            .values()
            .filter(|t| (!t.state.is_final() || t.complete_time.unwrap_or(0) >= horizon) && visible(t))
            .collect();
        v.sort_by_key(|t| t.seq);
        let skip = v.len().saturating_sub(200);
        v.into_iter().skip(skip).map(|t| t.key.clone()).collect()
    }

    /// Drop completed tasks beyond the retention count or age.
    pub fn prune(&self) -> Result<usize, Fault> {
        let now = ms(Utc::now());
        let oldest_allowed = now - self.retention.max_age.as_millis() as i64;
        let mut drop = vec![];
        // VCD tasks live until their expiryTime, whatever their state
        // (looked for at most once a second).
        if now - self.vcd_pruned.swap(now, Ordering::Relaxed) >= 1000 {
            drop.extend(
                self.map
                    .read()
                    .values()
                    .filter(|t| t.vcd.as_ref().is_some_and(|v| v.expiry.is_some_and(|e| e <= now)))
                    .map(|t| t.key.clone()),
            );
        }
        {
            let mut done = self.completed.write();
            while let Some((&(when, seq), _)) = done.iter().next() {
                if done.len() > self.retention.max_completed || when < oldest_allowed {
                    if let Some(k) = done.remove(&(when, seq)) {
                        drop.push(k);
                    }
                } else {
                    break;
                }
            }
        }
        if !drop.is_empty() {
            self.store.delete_tasks(&drop)?;
            self.forget(&drop);
        }
        Ok(drop.len())
    }
}
