//! This process as one node of several on a shared store: its lease, the
//! watch on what other nodes do to tasks, and the ending of tasks whose
//! node is gone. On the embedded store there is one node and the watch is
//! a no-op; leases and take-over work the same.
//!
//! A node renews its lease every third of the lease. Every node also looks,
//! as often, for live tasks whose owner's lease has run out and claims them
//! (each row goes to one node: the store skips rows another node is
//! claiming); it then ends them in error. So a node that dies has its tasks
//! ended within the lease plus a third of it — at once, on PostgreSQL,
//! when its database session has ended (a killed process's has): a live
//! node holds an advisory lock on its watch connection, and a node whose
//! lock is not held is gone whatever its lease says. A restarted node ends
//! the tasks of its earlier lives (the same node name) at once.
use super::Engine;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

/// Default lease of a node.
pub const DEFAULT_LEASE: Duration = Duration::from_secs(10);

impl Engine {
    /// Join the store as node `name` (unique among live nodes: host and
    /// port, say) with a lease of `lease`. Returns this life's node id.
    pub fn start_node(self: &Arc<Self>, name: &str, lease: Duration) -> anyhow::Result<String> {
        let id = format!("{name}#{}", &uuid::Uuid::new_v4().simple().to_string()[..12]);
        let previous = format!("{name}#");
        let lease_ms = lease.as_millis().max(1) as i64;
        self.tasks.set_node(&id);
        self.store.heartbeat(&id, lease_ms)?;
        let weak = Arc::downgrade(self);
        self.store.watch_tasks(
            &id,
            Box::new(move |note| {
                if let Some(e) = weak.upgrade() {
                    if let Err(f) = e.tasks.refresh(&note) {
                        // Read everything at the next look instead.
                        e.tasks.needs_resync.store(true, Ordering::SeqCst);
                        tracing::warn!(error = %f.message, "reading other nodes' task changes failed");
                    }
                }
            }),
        )?;
        let n = self.tasks.claim_orphans(&previous).map_err(|f| anyhow::anyhow!(f.message))?;
        if n > 0 {
            tracing::info!(tasks = n, "tasks of stopped nodes ended in error");
        }
        let every = lease / 3;
        // The lease has a thread of its own: slow work elsewhere must not
        // let it run out while this node is well.
        let (weak, id2) = (Arc::downgrade(self), id.clone());
        std::thread::Builder::new().name("vtwin-lease".into()).spawn(move || loop {
            std::thread::sleep(every);
            let Some(e) = weak.upgrade() else { break };
            if e.stopping.load(Ordering::SeqCst) {
                break;
            }
            if let Err(err) = e.store.heartbeat(&id2, lease_ms) {
                tracing::warn!(error = %err, "renewing this node's lease failed");
            }
        })?;
        let weak = Arc::downgrade(self);
        std::thread::Builder::new().name("vtwin-nodes".into()).spawn(move || loop {
            std::thread::sleep(every);
            let Some(e) = weak.upgrade() else { break };
            if e.stopping.load(Ordering::SeqCst) {
                break;
            }
            if e.tasks.needs_resync.swap(false, Ordering::SeqCst) {
                if let Err(f) = e.tasks.refresh(&crate::store::TaskNote::Resync) {
                    e.tasks.needs_resync.store(true, Ordering::SeqCst);
                    tracing::warn!(error = %f.message, "reading all tasks again failed");
                }
            }
            // Users, permissions, inventory and extensions other nodes
            // changed, even while no request comes to this node.
            if let Err(f) = e.refresh_external(true) {
                tracing::warn!(error = %f.message, "reading other nodes' changes failed");
            }
            match e.tasks.claim_orphans(&previous) {
                Ok(0) => {}
                Ok(n) => tracing::info!(tasks = n, "tasks of stopped nodes ended in error"),
                Err(f) => tracing::warn!(error = %f.message, "looking for tasks of stopped nodes failed"),
            }
        })?;
        Ok(id)
    }

    /// Give up the lease at once (an orderly stop): other nodes end this
    /// node's unfinished tasks at their next look.
    pub fn stop_node(&self) {
        self.stopping.store(true, Ordering::SeqCst);
        if let Err(e) = self.store.release(&self.tasks.node()) {
            tracing::warn!(error = %e, "giving up this node's lease failed");
        }
    }
}
