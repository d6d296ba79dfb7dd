//! What the workers of a run share: errors, per-node counters, the checkpoint coordinator.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use timely::dataflow::Scope;

use crate::checkpoint::{Checkpoint, Coordinator};

use super::{NodeStats, RunProgress};

#[derive(Default)]
pub(super) struct Shared {
    pub(super) failed: AtomicBool,
    pub(super) errors: Mutex<Vec<String>>,
    pub(super) nodes: Mutex<BTreeMap<String, NodeStats>>,
    pub(super) dropped: Mutex<BTreeMap<String, u64>>,
    pub(super) overload: Mutex<BTreeMap<String, (u64, u64)>>,
    pub(super) sink_lines: Mutex<Vec<String>>,
    pub(super) progress: Option<Arc<RunProgress>>,
    pub(super) metrics: Option<Arc<crate::metrics::Metrics>>,
    pub(super) checkpoint: Option<Arc<Coordinator>>,
    pub(super) restored: Option<Arc<Checkpoint>>,
    pub(super) stop: Option<Arc<AtomicBool>>,
    pub(super) observer: Option<Arc<dyn super::BatchObserver>>,
    /// Sink instances (one per sink and worker) of this process that have written their
    /// final output.
    pub(super) sinks_finished: std::sync::atomic::AtomicUsize,
}

impl Shared {
    pub(super) fn fail(&self, message: String) {
        tracing::error!("{message}");
        self.errors.lock().unwrap().push(message);
        self.failed.store(true, Ordering::SeqCst);
    }
    pub(super) fn failed(&self) -> bool {
        self.failed.load(Ordering::SeqCst)
    }
    /// True once the embedding program asked the run to stop.
    pub(super) fn stop_requested(&self) -> bool {
        self.stop.as_ref().is_some_and(|s| s.load(Ordering::SeqCst))
    }
    pub(super) fn first_error(&self) -> Option<String> {
        self.errors.lock().unwrap().first().cloned()
    }
    /// Hands `batch`, emitted by `node`, to the run's observer if it has one.
    pub(super) fn observe(&self, node: &str, batch: &crate::frame::Batch) {
        if let Some(o) = &self.observer {
            o.observe(node, batch);
        }
    }
    pub(super) fn node_metrics(&self, name: &str) -> Option<Arc<crate::metrics::NodeMetrics>> {
        self.metrics.as_ref().map(|m| m.node(name))
    }
    /// The restored checkpoint's entry for this worker, picked by `pick`.
    pub(super) fn restored<T: Clone>(&self, pick: impl Fn(&Checkpoint) -> Option<&Vec<Option<T>>>, worker: usize) -> Option<T> {
        self.restored
            .as_ref()
            .and_then(|c| pick(c))
            .and_then(|v| v.get(worker).cloned())
            .flatten()
    }
    /// The activator of an operator or sink at `address`; with checkpoints, also registered so
    /// the coordinator can wake it when a checkpoint needs it.
    pub(super) fn activator(&self, scope: &Scope<'_, u64>, address: std::rc::Rc<[usize]>) -> timely::scheduling::Activator {
        if let Some(ck) = &self.checkpoint {
            ck.register(scope.worker().sync_activator_for(address.to_vec()));
        }
        scope.activator_for(address)
    }
    /// For an operator or sink: the coordinator and id of a checkpoint it must report to now,
    /// i.e. once its input frontier has reached the target (every earlier batch is processed and
    /// no later one exists yet). While the frontier trails, it asks to be activated again soon.
    pub(super) fn checkpoint_due(
        &self,
        name: &str,
        worker: usize,
        is_sink: bool,
        frontier: &[u64],
        activator: &timely::scheduling::Activator,
    ) -> Option<(&Coordinator, u64)> {
        let ck = self.checkpoint.as_deref()?;
        let (id, target) = ck.pending(name, worker, is_sink)?;
        if frontier.iter().all(|t| *t >= target) && !self.failed() {
            Some((ck, id))
        } else {
            activator.activate_after(Duration::from_millis(1));
            None
        }
    }
    pub(super) fn add_stats(&self, name: &str, worker: usize, s: &NodeStats) {
        let mut nodes = self.nodes.lock().unwrap();
        let e = nodes.entry(name.to_string()).or_default();
        e.rows_in += s.rows_in;
        e.rows_out += s.rows_out;
        e.bytes_in += s.bytes_in;
        e.busy += s.busy;
        *e.busy_by_worker.entry(worker).or_default() += s.busy;
        e.latencies.merge(&s.latencies);
    }
}
