//! The in-process side of a checkpoint: which node still has to pause, align or report, and
//! writing the checkpoint once all have (see the module docs of [`super`]).

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use timely::scheduling::SyncActivator;

use crate::error::Result;
use crate::metrics::Metrics;

use super::{commit_staged, Checkpoint, CheckpointStore, SinkCommit, SourcePosition, EXHAUSTED};

/// What a source reader may do now.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Gate {
    /// Emit its next batch, unless (while a checkpoint aligns) its time is at or after the
    /// given target: readers' `next_time` is only a lower bound, so the batch read may be later.
    Free(Option<u64>),
    /// Wait (a checkpoint is being taken, or it is exhausted and the final one is not yet taken).
    Hold,
    /// Exhausted and the final checkpoint is durable: release the capability and end.
    Release,
}

type Key = (String, usize);

struct Active {
    id: u64,
    started: Instant,
    final_: bool,
    /// Step 1: the next event time each reader stopped at (`None`: exhausted), and one past
    /// the last time it emitted.
    paused: HashMap<Key, (Option<u64>, u64)>,
    /// Step 2: the target time per source.
    targets: Option<HashMap<String, u64>>,
    aligned: HashMap<Key, SourcePosition>,
    operators: HashMap<Key, Option<Vec<u8>>>,
    sinks: HashMap<Key, Option<SinkCommit>>,
}

struct State {
    next_id: u64,
    last: Instant,
    active: Option<Active>,
    final_done: bool,
    exhausted: HashSet<Key>,
    written: u64,
}

/// Runs the checkpoint protocol for the workers of this process.
pub struct Coordinator {
    store: CheckpointStore,
    every: Duration,
    workers: usize,
    sources: Vec<String>,
    operators: Vec<String>,
    sinks: Vec<String>,
    /// The source each operator and sink is fed by.
    roots: HashMap<String, String>,
    state: Mutex<State>,
    activators: Mutex<Vec<SyncActivator>>,
    metrics: Option<Arc<Metrics>>,
}

impl Coordinator {
    /// A coordinator writing into `store` every `every`, for `workers` workers running the given
    /// nodes (qualified names; `roots` maps each operator and sink to its source). `last_id` is
    /// the id of the checkpoint resumed from (0 when starting afresh).
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        store: CheckpointStore,
        every: Duration,
        workers: usize,
        sources: Vec<String>,
        operators: Vec<String>,
        sinks: Vec<String>,
        roots: HashMap<String, String>,
        last_id: u64,
        metrics: Option<Arc<Metrics>>,
    ) -> Coordinator {
        Coordinator {
            store,
            every,
            workers,
            sources,
            operators,
            sinks,
            roots,
            state: Mutex::new(State {
                next_id: last_id + 1,
                last: Instant::now(),
                active: None,
                final_done: false,
                exhausted: HashSet::new(),
                written: 0,
            }),
            activators: Mutex::new(Vec::new()),
            metrics,
        }
    }

    /// The checkpoint directory (locked by this run).
    pub fn store(&self) -> &CheckpointStore {
        &self.store
    }

    /// Registers an operator or sink to wake when a checkpoint needs it.
    pub fn register(&self, activator: SyncActivator) {
        self.activators.lock().unwrap().push(activator);
    }

    fn wake_all(&self) {
        for a in self.activators.lock().unwrap().iter() {
            let _ = a.activate();
        }
    }

    /// Checkpoints written so far in this run.
    pub fn written(&self) -> u64 {
        self.state.lock().unwrap().written
    }

    /// Whether a checkpoint is being taken (operators must not emit on their own then).
    pub fn in_progress(&self) -> bool {
        self.state.lock().unwrap().active.is_some()
    }

    /// Called by a source reader before each batch: `next` is the event time of its next batch
    /// (`None`: exhausted), `position` where it is.
    pub fn source_gate(&self, source: &str, worker: usize, next: Option<u64>, position: &SourcePosition) -> Result<Gate> {
        let key = (source.to_string(), worker);
        let mut st = self.state.lock().unwrap();
        if next.is_none() {
            st.exhausted.insert(key.clone());
        }
        if st.active.is_none() {
            if st.final_done {
                return Ok(Gate::Release);
            }
            let all_exhausted = st.exhausted.len() == self.sources.len() * self.workers;
            if !all_exhausted && (next.is_none() || st.last.elapsed() < self.every) {
                return Ok(if next.is_none() { Gate::Hold } else { Gate::Free(None) });
            }
            let id = st.next_id;
            st.next_id += 1;
            st.active = Some(Active {
                id,
                started: Instant::now(),
                final_: all_exhausted,
                paused: HashMap::new(),
                targets: None,
                aligned: HashMap::new(),
                operators: HashMap::new(),
                sinks: HashMap::new(),
            });
        }
        let expected = self.sources.len() * self.workers;
        let active = st.active.as_mut().unwrap();
        if active.targets.is_none() {
            active.paused.insert(key.clone(), (next, position.end_time));
            if active.paused.len() < expected {
                return Ok(Gate::Hold);
            }
            // A source aligns past everything any of its readers emitted: the latest next batch,
            // or for an exhausted reader one past its last batch (it may have run far ahead of
            // the others before it ended). When all are exhausted the target is EXHAUSTED.
            let mut targets: HashMap<String, u64> = HashMap::new();
            for ((s, _), (next, end)) in &active.paused {
                let e = targets.entry(s.clone()).or_insert(0);
                *e = (*e).max(next.unwrap_or(*end));
            }
            for (s, t) in targets.iter_mut() {
                if active.paused.iter().all(|((s2, _), (next, _))| s2 != s || next.is_none()) {
                    *t = EXHAUSTED;
                }
            }
            active.targets = Some(targets);
            drop(st);
            self.wake_all();
            st = self.state.lock().unwrap();
        }
        let active = st.active.as_mut().unwrap();
        let target = active.targets.as_ref().unwrap()[source];
        if let Some(n) = next {
            if n < target {
                return Ok(Gate::Free(Some(target)));
            }
        }
        active.aligned.entry(key).or_insert_with(|| position.clone());
        drop(st);
        self.try_complete()?;
        Ok(Gate::Hold)
    }

    /// For an operator or sink on `worker`: the id and target time of a checkpoint it still has
    /// to report to, once every source has paused.
    pub fn pending(&self, node: &str, worker: usize, is_sink: bool) -> Option<(u64, u64)> {
        let st = self.state.lock().unwrap();
        let active = st.active.as_ref()?;
        let targets = active.targets.as_ref()?;
        let key = (node.to_string(), worker);
        let reported = if is_sink {
            active.sinks.contains_key(&key)
        } else {
            active.operators.contains_key(&key)
        };
        if reported {
            return None;
        }
        let root = self.roots.get(node)?;
        Some((active.id, *targets.get(root)?))
    }

    /// An operator's state for checkpoint `id` (`None`: stateless).
    pub fn report_operator(&self, id: u64, node: &str, worker: usize, state: Option<Vec<u8>>) -> Result<()> {
        self.report(id, |a| {
            a.operators.insert((node.to_string(), worker), state);
        })
    }

    /// A sink's pre-commit for checkpoint `id` (`None`: no writer on this worker).
    pub fn report_sink(&self, id: u64, node: &str, worker: usize, commit: Option<SinkCommit>) -> Result<()> {
        self.report(id, |a| {
            a.sinks.insert((node.to_string(), worker), commit);
        })
    }

    /// Records a report into checkpoint `id` if it is still the one being taken, then completes it
    /// when it was the last.
    fn report(&self, id: u64, record: impl FnOnce(&mut Active)) -> Result<()> {
        match self.state.lock().unwrap().active.as_mut() {
            Some(a) if a.id == id => record(a),
            _ => return Ok(()),
        }
        self.try_complete()
    }

    /// Writes the checkpoint when every node of every worker has reported, then commits the
    /// staged files.
    fn try_complete(&self) -> Result<()> {
        let mut st = self.state.lock().unwrap();
        let Some(active) = st.active.as_ref() else { return Ok(()) };
        let w = self.workers;
        if active.targets.is_none()
            || active.aligned.len() < self.sources.len() * w
            || active.operators.len() < self.operators.len() * w
            || active.sinks.len() < self.sinks.len() * w
        {
            return Ok(());
        }
        let active = st.active.take().unwrap();
        let mut ck = Checkpoint {
            id: active.id,
            final_: active.final_,
            ..Default::default()
        };
        for s in &self.sources {
            let per: Vec<Option<SourcePosition>> = (0..w).map(|i| active.aligned.get(&(s.clone(), i)).cloned()).collect();
            ck.sources.insert(s.clone(), per);
        }
        for o in &self.operators {
            let per = (0..w)
                .map(|i| active.operators.get(&(o.clone(), i)).cloned().flatten())
                .collect();
            ck.operators.insert(o.clone(), per);
        }
        let mut sinks: BTreeMap<String, Vec<Option<SinkCommit>>> = BTreeMap::new();
        for k in &self.sinks {
            let per = (0..w).map(|i| active.sinks.get(&(k.clone(), i)).cloned().flatten()).collect();
            sinks.insert(k.clone(), per);
        }
        ck.sinks = sinks;
        let written = self.store.write(&ck).and_then(|bytes| {
            commit_staged(&ck.staged_files())?;
            Ok(bytes)
        });
        let bytes = match written {
            Ok(b) => b,
            Err(e) => {
                if let Some(m) = &self.metrics {
                    m.checkpoint_failures.fetch_add(1, Ordering::Relaxed);
                }
                return Err(e);
            }
        };
        let took = active.started.elapsed();
        tracing::debug!(
            "checkpoint {} written ({bytes} bytes, {:.1} ms, final {}): targets {:?}, sources {:?}",
            ck.id,
            took.as_secs_f64() * 1e3,
            ck.final_,
            active.targets,
            ck.sources
        );
        if let Some(m) = &self.metrics {
            m.checkpoint_duration.observe_ns(took.as_nanos() as i64);
            m.checkpoint_bytes.store(bytes, Ordering::Relaxed);
        }
        st.written += 1;
        st.last = Instant::now();
        if active.final_ {
            st.final_done = true;
        }
        drop(st);
        self.wake_all();
        Ok(())
    }
}
