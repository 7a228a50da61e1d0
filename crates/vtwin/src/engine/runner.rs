//! Tasks the engine runs itself (the `…_Task` methods). Work on one entity
//! runs one task at a time, in arrival order: a task waiting for its turn is
//! observably `queued`. The test-control surface can delay a task or make it
//! fail after it has started. Cancellation is cooperative: the record ends at
//! once (error, RequestCanceled) and the work sees `cancelled()` and stops.
use super::tasks::{NewTask, TaskState};
use super::{Ctx, Engine, Fault, Reply};
use parking_lot::Mutex;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;
use vmodl::{types, MoRef, Value};

/// The work of a task. It runs on a blocking thread (it may do file I/O),
/// reports progress through `TaskCtl` and returns the task's result.
pub type Work = Box<dyn FnOnce(&Engine, &TaskCtl) -> Result<Option<Value>, Fault> + Send + 'static>;

/// What the work of a task can see of its task.
pub struct TaskCtl {
    pub key: String,
    eng: Arc<Engine>,
}

impl TaskCtl {
    /// Report progress (0–100); ignored once the task has ended.
    pub fn progress(&self, percent: i32) {
        let _ = self.eng.tasks.update_progress(&self.key, percent);
    }
    /// Has the task been cancelled? Work checks this before each step.
    pub fn cancelled(&self) -> bool {
        self.eng.tasks.get(&self.key).is_none_or(|t| t.cancelled)
    }
}

/// One queue per entity. A task takes its ticket when it is made, on the
/// caller's thread, so the order of turns is the order of arrival whichever
/// worker thread later polls the task (a lock taken inside the spawned task
/// would be first-polled-first-served, and the runtime may poll a later
/// spawn first).
#[derive(Default)]
pub struct Runner {
    queues: Mutex<HashMap<String, Arc<Queue>>>,
}

pub struct Queue {
    next: std::sync::atomic::AtomicU64,
    /// The ticket being served, and tickets given up before their turn.
    state: Mutex<(u64, std::collections::BTreeSet<u64>)>,
    turn: tokio::sync::watch::Sender<u64>,
}

impl Default for Queue {
    fn default() -> Queue {
        Queue { next: Default::default(), state: Default::default(), turn: tokio::sync::watch::Sender::new(0) }
    }
}

/// A place in an entity's queue; its turn ends when it is dropped.
pub struct Ticket {
    q: Arc<Queue>,
    n: u64,
}

impl Ticket {
    /// Wait for this ticket's turn.
    pub async fn turn(&self) {
        let mut rx = self.q.turn.subscribe();
        let _ = rx.wait_for(|s| *s == self.n).await;
    }
}

impl Drop for Ticket {
    fn drop(&mut self) {
        let mut st = self.q.state.lock();
        if st.0 != self.n {
            // Given up before its turn: skipped when the turn comes.
            st.1.insert(self.n);
            return;
        }
        st.0 += 1;
        loop {
            let next = st.0;
            if !st.1.remove(&next) {
                break;
            }
            st.0 += 1;
        }
        self.q.turn.send_replace(st.0);
    }
}

impl Runner {
    fn ticket(&self, moid: &str) -> Ticket {
        let q = self.queues.lock().entry(moid.to_string()).or_default().clone();
        let n = q.next.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        Ticket { q, n }
    }
}

pub struct TaskSpec {
    /// Wire method name (`Rename_Task`).
    pub method: &'static str,
    /// `Type.vmodlMethod` (`Folder.rename`).
    pub description_id: String,
    pub entity: MoRef,
    pub cancelable: bool,
    /// What the task waits its turn on; the entity when unset.
    pub queue: Option<String>,
}

impl TaskSpec {
    /// A task on `entity` that cannot be cancelled and waits its turn on it.
    pub fn on(method: &'static str, description_id: impl Into<String>, entity: MoRef) -> TaskSpec {
        TaskSpec { method, description_id: description_id.into(), entity, cancelable: false, queue: None }
    }
}

impl Engine {
    /// Start a task for `spec` and return its Task reference at once; the
    /// work runs when the entity is free.
    pub fn run_task(&self, ctx: &Ctx, spec: TaskSpec, work: Work) -> Reply {
        let eff = self.control.fire(Some(spec.method), Some(&spec.description_id), Some(&spec.entity.value), true);
        if let Some(f) = eff.sync_fault {
            return Err(f);
        }
        let eng = self.shared().ok_or_else(|| Fault::system_error("the engine is not running tasks"))?;
        let rt =
            tokio::runtime::Handle::try_current().map_err(|_| Fault::system_error("no runtime to run tasks on"))?;
        let entity_name =
            self.inv.read().get(&spec.entity.value).map_or_else(|| spec.entity.value.clone(), |e| e.name.clone());
        let session_user = ctx.session()?.user.clone();
        let user = super::auth::display_user(&session_user);
        let t = self.tasks.create(NewTask {
            name: Some(spec.method.to_string()),
            description_id: spec.description_id,
            entity: Some((spec.entity.clone(), entity_name)),
            cancelable: spec.cancelable,
            user,
            creator: Some(session_user),
            parent_key: None,
            activation_id: None,
            target: None,
        })?;
        let key = t.key.clone();
        let cancel = self.tasks.worker(&key);
        let ticket = self.runner.ticket(spec.queue.as_deref().unwrap_or(&spec.entity.value));
        rt.spawn(async move {
            ticket.turn().await;
            let _turn = ticket;
            if eng.tasks.set_state(&key, TaskState::Running, None, None).is_err() {
                // Cancelled while queued.
                eng.tasks.worker_done(&key);
                return;
            }
            if !eff.delay.is_zero() {
                tokio::select! {
                    _ = tokio::time::sleep(eff.delay) => {}
                    _ = cancel.notified() => {}
                }
            }
            let ctl = TaskCtl { key: key.clone(), eng: eng.clone() };
            let outcome = if ctl.cancelled() {
                None
            } else if let Some(f) = eff.task_fault {
                Some(Err(f))
            } else {
                let e2 = eng.clone();
                match tokio::task::spawn_blocking(move || {
                    let r = work(&e2, &ctl);
                    (r, ctl)
                })
                .await
                {
                    Ok((r, _)) => Some(r),
                    Err(e) => Some(Err(Fault::system_error(format!("the task's work failed: {e}")))),
                }
            };
            // A cancelled task has already ended; its state is final.
            match outcome {
                Some(Ok(v)) => {
                    let _ = eng.tasks.set_state(&key, TaskState::Success, v.as_ref(), None);
                }
                Some(Err(f)) => {
                    let f = eng.scrub(f);
                    let _ = eng.tasks.set_state(&key, TaskState::Error, None, Some(&f));
                }
                None => {}
            }
            eng.tasks.worker_done(&key);
        });
        Ok(Some(Value::MoRef(MoRef::new(types::Task, t.key))))
    }

    /// A task created for a client to drive (CreateTask, the vAPI
    /// extension API) that a test-control rule makes fail: after the rule's
    /// delay it ends in error, and the client's later updates are refused.
    pub fn fail_later(&self, key: &str, delay: Duration, fault: Fault) {
        let (Some(eng), Ok(rt)) = (self.shared(), tokio::runtime::Handle::try_current()) else { return };
        let key = key.to_string();
        rt.spawn(async move {
            tokio::time::sleep(delay).await;
            if let Some(t) = eng.tasks.get(&key) {
                if t.state == TaskState::Queued {
                    let _ = eng.tasks.set_state(&key, TaskState::Running, None, None);
                }
            }
            let _ = eng.tasks.set_state(&key, TaskState::Error, None, Some(&fault));
        });
    }
}
