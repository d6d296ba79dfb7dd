//! The in-process side of a checkpoint: which node still has to pause, align or report, and
//! writing the checkpoint once all have (see the module docs of [`super`]). In a multi-process
//! run each process has one, for its own workers; process 0's leads (see [`super::message`]).

use std::collections::{BTreeMap, HashMap, HashSet};
use std::ops::Range;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use timely::scheduling::SyncActivator;

use crate::error::Result;
use crate::metrics::Metrics;

use super::message::{ControlMessage, Envelope, Part, PauseSummary};
use super::{commit_staged, Checkpoint, CheckpointStore, SinkCommit, SourcePosition, StagedFile, EXHAUSTED};

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

/// This process's part in the run's checkpoints.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    /// The only process: it decides everything and writes the checkpoints.
    Single,
    /// Process 0 of `processes`: decides when checkpoints start and their targets, gathers the
    /// followers' parts and writes the checkpoints.
    Leader {
        /// Processes in the run.
        processes: usize,
    },
    /// Any other process: follows the leader's steps for its own workers.
    Follower {
        /// This process's index.
        process: usize,
    },
}

type Key = (String, usize);

/// A checkpoint whose every node has reported, being made durable on its own thread.
struct Commit {
    handle: std::thread::JoinHandle<Result<u64>>,
    active: Active,
}

/// Makes a checkpoint durable: fsyncs the staged files it lists (sinks close them without
/// syncing, so a checkpoint pauses nothing for the disk), writes the checkpoint (the commit
/// point), then renames the staged files to their committed names. Returns the checkpoint's size.
fn make_durable(store: &CheckpointStore, ck: &Checkpoint, files: &[StagedFile]) -> Result<u64> {
    super::sync_staged(files)?;
    let bytes = store.write(ck)?;
    commit_staged(files)?;
    Ok(bytes)
}

struct Active {
    id: u64,
    started: Instant,
    /// How long the sources were held: from the pause to the hand-off to the commit.
    held: Duration,
    final_: bool,
    /// Step 1: the next event time each local reader stopped at (`None`: exhausted), and one
    /// past the last time it emitted.
    paused: HashMap<Key, (Option<u64>, u64)>,
    /// Leader: the followers' pauses, by process.
    remote_paused: HashMap<usize, Vec<PauseSummary>>,
    /// Step 2: the target time per source.
    targets: Option<HashMap<String, u64>>,
    aligned: HashMap<Key, SourcePosition>,
    operators: HashMap<Key, Option<Vec<u8>>>,
    sinks: HashMap<Key, Option<SinkCommit>>,
    /// Leader: the followers' parts, by process.
    remote_parts: HashMap<usize, Part>,
    /// Follower: its pause, then its part, went to the leader.
    paused_sent: bool,
    part_sent: bool,
}

impl Active {
    fn new(id: u64, final_: bool) -> Active {
        Active {
            id,
            started: Instant::now(),
            held: Duration::ZERO,
            final_,
            paused: HashMap::new(),
            remote_paused: HashMap::new(),
            targets: None,
            aligned: HashMap::new(),
            operators: HashMap::new(),
            sinks: HashMap::new(),
            remote_parts: HashMap::new(),
            paused_sent: false,
            part_sent: false,
        }
    }

    /// The files this process's sinks staged for the checkpoint.
    fn local_files(&self) -> Vec<StagedFile> {
        self.sinks.values().flatten().flat_map(|c| c.files.iter().cloned()).collect()
    }
}

struct State {
    next_id: u64,
    last: Instant,
    active: Option<Active>,
    final_done: bool,
    exhausted: HashSet<Key>,
    /// Batches each local reader had emitted at the newest durable checkpoint.
    durable: HashMap<Key, u64>,
    /// Leader: followers whose readers have all ended.
    remote_exhausted: HashSet<usize>,
    /// Follower: it told the leader its readers have all ended.
    exhausted_sent: bool,
    /// Leader: followers whose outputs are final.
    remote_finished: HashSet<usize>,
    /// Follower: checkpoints it sent its part of and goes on from, until the leader says they
    /// are durable (then its files are committed).
    awaiting: HashMap<u64, Active>,
    written: u64,
}

/// Runs the checkpoint protocol for the workers of this process.
pub struct Coordinator {
    /// The directory, locked; `None` on a follower (the leader writes).
    store: Option<Arc<CheckpointStore>>,
    /// A checkpoint being made durable in the background (its staged files fsynced, the
    /// checkpoint written, its files committed) while the sources go on.
    committing: Mutex<Option<Commit>>,
    /// The checkpoint directory (every process's; live sources' journals live in it).
    dir: std::path::PathBuf,
    every: Duration,
    role: Role,
    /// Global indices of this process's workers.
    local: Range<usize>,
    /// Workers of all processes.
    total: usize,
    sources: Vec<String>,
    operators: Vec<String>,
    sinks: Vec<String>,
    /// The source each operator and sink is fed by.
    roots: HashMap<String, String>,
    state: Mutex<State>,
    activators: Mutex<Vec<SyncActivator>>,
    /// Messages to other processes, and what wakes the control dataflow that sends them.
    outbox: Mutex<Vec<Envelope>>,
    outbox_waker: Mutex<Option<SyncActivator>>,
    metrics: Option<Arc<Metrics>>,
}

/// The nodes a coordinator runs the protocol for: qualified names, and the source feeding each
/// operator and sink.
#[derive(Clone, Debug, Default)]
pub struct CheckpointedNodes {
    /// Sources.
    pub sources: Vec<String>,
    /// Operators.
    pub operators: Vec<String>,
    /// Sinks.
    pub sinks: Vec<String>,
    /// Operator or sink → its source.
    pub roots: HashMap<String, String>,
}

impl Coordinator {
    /// A coordinator for this process's workers (`local`, global indices, of `total`) running
    /// `nodes`, taking a checkpoint every `every` into `dir`. `store` is the locked directory
    /// (`None` on a follower); `last_id` is the id of the checkpoint resumed from (0 when
    /// starting afresh).
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        dir: std::path::PathBuf,
        store: Option<CheckpointStore>,
        every: Duration,
        role: Role,
        local: Range<usize>,
        total: usize,
        nodes: CheckpointedNodes,
        last_id: u64,
        metrics: Option<Arc<Metrics>>,
    ) -> Coordinator {
        Coordinator {
            dir,
            store: store.map(Arc::new),
            committing: Mutex::new(None),
            every,
            role,
            local,
            total,
            sources: nodes.sources,
            operators: nodes.operators,
            sinks: nodes.sinks,
            roots: nodes.roots,
            state: Mutex::new(State {
                next_id: last_id + 1,
                last: Instant::now(),
                active: None,
                final_done: false,
                exhausted: HashSet::new(),
                durable: HashMap::new(),
                remote_exhausted: HashSet::new(),
                exhausted_sent: false,
                remote_finished: HashSet::new(),
                awaiting: HashMap::new(),
                written: 0,
            }),
            activators: Mutex::new(Vec::new()),
            outbox: Mutex::new(Vec::new()),
            outbox_waker: Mutex::new(None),
            metrics,
        }
    }

    /// Where the journal of a live source's reader on `worker` goes (see `runtime::journal`).
    pub fn journal_dir(&self, source: &str, worker: usize) -> std::path::PathBuf {
        self.dir.join(super::JOURNAL_DIR).join(format!("{source}.{worker}"))
    }

    /// The batches the reader of `source` on `worker` had emitted at the newest durable
    /// checkpoint of this run (`None` before the first).
    pub fn durable_batches(&self, source: &str, worker: usize) -> Option<u64> {
        self.state.lock().unwrap().durable.get(&(source.to_string(), worker)).copied()
    }

    /// This process's role.
    pub fn role(&self) -> Role {
        self.role
    }

    /// Records the run as complete in the directory (the leader's or single process's job; a
    /// follower does nothing).
    pub fn mark_complete(&self) -> Result<()> {
        match &self.store {
            Some(s) => s.mark_complete(),
            None => Ok(()),
        }
    }

    /// Registers an operator or sink to wake when a checkpoint needs it.
    pub fn register(&self, activator: SyncActivator) {
        self.activators.lock().unwrap().push(activator);
    }

    /// Registers what sends the outbox (the control dataflow's source on this process).
    pub fn register_outbox(&self, activator: SyncActivator) {
        *self.outbox_waker.lock().unwrap() = Some(activator);
    }

    /// Takes the messages waiting to go to other processes.
    pub fn take_outbox(&self) -> Vec<Envelope> {
        std::mem::take(&mut *self.outbox.lock().unwrap())
    }

    /// Whether this process's part in the run's checkpoints is over: the final checkpoint is
    /// durable and nothing is left to send.
    pub fn finished(&self) -> bool {
        self.state.lock().unwrap().final_done && self.outbox.lock().unwrap().is_empty()
    }

    /// Leader: whether every follower has written its final outputs.
    pub fn followers_finished(&self) -> bool {
        match self.role {
            Role::Leader { processes } => self.state.lock().unwrap().remote_finished.len() == processes - 1,
            _ => true,
        }
    }

    fn send(&self, to: usize, message: ControlMessage) {
        self.outbox.lock().unwrap().push(Envelope { to, message });
        if let Some(a) = self.outbox_waker.lock().unwrap().as_ref() {
            let _ = a.activate();
        }
    }

    fn to_followers(&self, message: ControlMessage) {
        if let Role::Leader { processes } = self.role {
            for p in 1..processes {
                self.send(p, message.clone());
            }
        }
    }

    fn wake_all(&self) {
        for a in self.activators.lock().unwrap().iter() {
            let _ = a.activate();
        }
    }

    /// Checkpoints written (or, on a follower, committed) so far in this run.
    pub fn written(&self) -> u64 {
        self.state.lock().unwrap().written
    }

    /// Whether a checkpoint is being taken (operators must not emit on their own then).
    pub fn in_progress(&self) -> bool {
        self.state.lock().unwrap().active.is_some()
    }

    fn local_readers(&self) -> usize {
        self.sources.len() * self.local.len()
    }

    /// Called by a source reader before each batch: `next` is the event time of its next batch
    /// (`None`: exhausted), `position` where it is.
    pub fn source_gate(&self, source: &str, worker: usize, next: Option<u64>, position: &SourcePosition) -> Result<Gate> {
        let key = (source.to_string(), worker);
        let mut st = self.state.lock().unwrap();
        // False while the previous checkpoint is still being made durable: it is handed to its
        // commit thread under the state lock, so this holds as long as `st` is.
        let idle = self.reap_locked(&mut st, false)?;
        if next.is_none() {
            st.exhausted.insert(key.clone());
        }
        let local_exhausted = st.exhausted.len() == self.local_readers();
        if let Role::Follower { process } = self.role {
            if local_exhausted && !st.exhausted_sent {
                st.exhausted_sent = true;
                self.send(0, ControlMessage::Exhausted { process });
            }
        }
        if st.active.is_none() {
            if st.final_done {
                return Ok(Gate::Release);
            }
            let all_exhausted = match self.role {
                Role::Single => local_exhausted,
                Role::Leader { processes } => local_exhausted && st.remote_exhausted.len() == processes - 1,
                // A follower starts a checkpoint only when the leader says so.
                Role::Follower { .. } => return Ok(if next.is_none() { Gate::Hold } else { Gate::Free(None) }),
            };
            // One checkpoint at a time: the next begins once the previous one is durable.
            if !idle || (!all_exhausted && (next.is_none() || st.last.elapsed() < self.every)) {
                return Ok(if next.is_none() { Gate::Hold } else { Gate::Free(None) });
            }
            let id = st.next_id;
            st.next_id += 1;
            st.active = Some(Active::new(id, all_exhausted));
            self.to_followers(ControlMessage::Start {
                id,
                final_: all_exhausted,
            });
        }
        let active = st.active.as_mut().unwrap();
        if active.targets.is_none() {
            active.paused.insert(key.clone(), (next, position.end_time));
            if !self.try_targets(active) {
                return Ok(Gate::Hold);
            }
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

    /// This process's pause per source, once every local reader has paused.
    fn local_pause(&self, active: &Active) -> Option<Vec<PauseSummary>> {
        if active.paused.len() < self.local_readers() {
            return None;
        }
        // A source aligns past everything any of its readers emitted: the latest next batch,
        // or for an exhausted reader one past its last batch (it may have run far ahead of the
        // others before it ended).
        let mut by_source: BTreeMap<&str, PauseSummary> = BTreeMap::new();
        for ((s, _), (next, end)) in &active.paused {
            let e = by_source.entry(s).or_insert_with(|| PauseSummary {
                source: s.clone(),
                latest: 0,
                ended: true,
            });
            e.latest = e.latest.max(next.unwrap_or(*end));
            e.ended &= next.is_none();
        }
        Some(by_source.into_values().collect())
    }

    /// Step 2 once every reader (of every process) has paused: sets the targets (the leader
    /// also sends them), or, on a follower, sends its pause to the leader. True when the targets
    /// are set.
    fn try_targets(&self, active: &mut Active) -> bool {
        if active.targets.is_some() {
            return true;
        }
        let Some(local) = self.local_pause(active) else { return false };
        let processes = match self.role {
            Role::Follower { process } => {
                if !active.paused_sent {
                    active.paused_sent = true;
                    self.send(
                        0,
                        ControlMessage::Paused {
                            id: active.id,
                            process,
                            sources: local,
                        },
                    );
                }
                return false;
            }
            Role::Single => 1,
            Role::Leader { processes } => processes,
        };
        if active.remote_paused.len() < processes - 1 {
            return false;
        }
        // When every reader of a source has ended, its target is EXHAUSTED.
        let mut combined: HashMap<String, (u64, bool)> = HashMap::new();
        for p in local.iter().chain(active.remote_paused.values().flatten()) {
            let e = combined.entry(p.source.clone()).or_insert((0, true));
            e.0 = e.0.max(p.latest);
            e.1 &= p.ended;
        }
        let targets: HashMap<String, u64> = combined
            .into_iter()
            .map(|(s, (latest, ended))| (s, if ended { EXHAUSTED } else { latest }))
            .collect();
        let mut sorted: Vec<(String, u64)> = targets.iter().map(|(s, t)| (s.clone(), *t)).collect();
        sorted.sort();
        self.to_followers(ControlMessage::Targets {
            id: active.id,
            targets: sorted,
        });
        active.targets = Some(targets);
        true
    }

    /// A message from another process's coordinator.
    pub fn receive(&self, message: ControlMessage) -> Result<()> {
        let mut st = self.state.lock().unwrap();
        match message {
            ControlMessage::Exhausted { process } => {
                st.remote_exhausted.insert(process);
            }
            ControlMessage::Finished { process } => {
                st.remote_finished.insert(process);
            }
            ControlMessage::Start { id, final_ } => {
                st.next_id = id + 1;
                st.active = Some(Active::new(id, final_));
            }
            ControlMessage::Paused { id, process, sources } => {
                if let Some(a) = st.active.as_mut().filter(|a| a.id == id) {
                    a.remote_paused.insert(process, sources);
                    self.try_targets(a);
                }
            }
            ControlMessage::Targets { id, targets } => {
                if let Some(a) = st.active.as_mut().filter(|a| a.id == id) {
                    a.targets = Some(targets.into_iter().collect());
                }
            }
            ControlMessage::Part { id, process, part } => {
                if let Some(a) = st.active.as_mut().filter(|a| a.id == id) {
                    a.remote_parts.insert(process, part);
                }
                drop(st);
                return self.try_complete();
            }
            ControlMessage::Committed { id } => {
                let Some(active) = st.active.take_if(|a| a.id == id).or_else(|| st.awaiting.remove(&id)) else {
                    return Ok(());
                };
                // The leader's checkpoint lists these files; a resume would commit them too.
                commit_staged(&active.local_files())?;
                self.finish_checkpoint(&mut st, &active, None);
            }
        }
        drop(st);
        self.wake_all();
        Ok(())
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

    /// Whether every local node has reported to `active`.
    fn locally_complete(&self, active: &Active) -> bool {
        let w = self.local.len();
        active.targets.is_some()
            && active.aligned.len() == self.sources.len() * w
            && active.operators.len() == self.operators.len() * w
            && active.sinks.len() == self.sinks.len() * w
    }

    /// Once every node of every worker has reported: writes the checkpoint and commits the
    /// staged files (a follower sends its part to the leader instead and waits for its word).
    fn try_complete(&self) -> Result<()> {
        let mut st = self.state.lock().unwrap();
        let Some(active) = st.active.as_mut() else { return Ok(()) };
        if !self.locally_complete(active) {
            return Ok(());
        }
        let processes = match self.role {
            Role::Follower { process } => {
                if !active.part_sent {
                    active.part_sent = true;
                    let id = active.id;
                    // The leader writes the checkpoint once it has every part: this process's
                    // files must be durable by then.
                    super::sync_staged(&active.local_files())?;
                    let part = Part {
                        sources: active.aligned.iter().map(|((n, w), p)| (n.clone(), *w, p.clone())).collect(),
                        operators: active
                            .operators
                            .iter()
                            .map(|((n, w), s)| (n.clone(), *w, s.clone()))
                            .collect(),
                        sinks: active.sinks.iter().map(|((n, w), c)| (n.clone(), *w, c.clone())).collect(),
                    };
                    self.send(0, ControlMessage::Part { id, process, part });
                    active.held = active.started.elapsed();
                    // It goes on at once (its files commit when the leader says the checkpoint
                    // is durable), except after the final one, which releases the sources.
                    if !active.final_ {
                        let active = st.active.take().unwrap();
                        st.awaiting.insert(id, active);
                        drop(st);
                        self.wake_all();
                    }
                }
                return Ok(());
            }
            Role::Single => 1,
            Role::Leader { processes } => processes,
        };
        if active.remote_parts.len() < processes - 1 {
            return Ok(());
        }
        // The state stays locked until the checkpoint is durable (the final one) or handed to its
        // commit thread, so no source starts another in between.
        let mut active = st.active.take().unwrap();
        active.held = active.started.elapsed();
        let ck = self.assemble(&active);
        let files = active.local_files();
        let store = self.store.clone().expect("the leader holds the checkpoint directory");
        if active.final_ {
            // The final checkpoint releases the sources: durable before anything goes on.
            let bytes = make_durable(&store, &ck, &files).inspect_err(|_| self.count_failure())?;
            self.after_durable(&mut st, ck.id, active, bytes);
        } else {
            // Everyone goes on while the checkpoint is made durable.
            let handle = std::thread::Builder::new()
                .name("checkpoint-commit".into())
                .spawn(move || make_durable(&store, &ck, &files))
                .map_err(|e| crate::EngineError::Checkpoint(format!("cannot start the commit thread: {e}")))?;
            *self.committing.lock().unwrap() = Some(Commit { handle, active });
        }
        drop(st);
        self.wake_all();
        Ok(())
    }

    /// Collects the checkpoint being made durable in the background, once it is (or, with
    /// `wait`, waiting for it), under the state lock so nothing starts or completes another
    /// checkpoint in between. True when none is in flight any more; its failure is returned.
    fn reap_locked(&self, st: &mut State, wait: bool) -> Result<bool> {
        let commit = {
            let mut c = self.committing.lock().unwrap();
            match c.as_ref() {
                None => return Ok(true),
                Some(x) if !wait && !x.handle.is_finished() => return Ok(false),
                Some(_) => c.take().unwrap(),
            }
        };
        let bytes = commit
            .handle
            .join()
            .unwrap_or_else(|_| Err(crate::EngineError::Checkpoint("the checkpoint commit thread panicked".into())))
            .inspect_err(|_| self.count_failure())?;
        let id = commit.active.id;
        self.after_durable(st, id, commit.active, bytes);
        Ok(true)
    }

    /// Waits for a checkpoint still being made durable (at the end of the run).
    pub fn drain(&self) -> Result<()> {
        let mut st = self.state.lock().unwrap();
        self.reap_locked(&mut st, true).map(|_| ())
    }

    fn count_failure(&self) {
        if let Some(m) = &self.metrics {
            m.checkpoint_failures.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Once checkpoint `id` is durable: the followers commit their files, the bookkeeping.
    fn after_durable(&self, st: &mut State, id: u64, active: Active, bytes: u64) {
        self.to_followers(ControlMessage::Committed { id });
        tracing::debug!(
            "checkpoint {id} written ({bytes} bytes, {:.1} ms, sources held {:.1} ms, final {}): targets {:?}, sources {:?}",
            active.started.elapsed().as_secs_f64() * 1e3,
            active.held.as_secs_f64() * 1e3,
            active.final_,
            active.targets,
            active.aligned
        );
        self.finish_checkpoint(st, &active, Some(bytes));
    }

    /// The checkpoint from this process's reports and the followers' parts, per global worker.
    fn assemble(&self, active: &Active) -> Checkpoint {
        let mut aligned = active.aligned.clone();
        let mut operators = active.operators.clone();
        let mut sinks = active.sinks.clone();
        for part in active.remote_parts.values() {
            aligned.extend(part.sources.iter().map(|(n, w, p)| ((n.clone(), *w), p.clone())));
            operators.extend(part.operators.iter().map(|(n, w, s)| ((n.clone(), *w), s.clone())));
            sinks.extend(part.sinks.iter().map(|(n, w, c)| ((n.clone(), *w), c.clone())));
        }
        let per_worker = |name: &String| -> Vec<Key> { (0..self.total).map(|i| (name.clone(), i)).collect() };
        Checkpoint {
            id: active.id,
            final_: active.final_,
            sources: self
                .sources
                .iter()
                .map(|s| (s.clone(), per_worker(s).iter().map(|k| aligned.get(k).cloned()).collect()))
                .collect(),
            operators: self
                .operators
                .iter()
                .map(|o| {
                    (
                        o.clone(),
                        per_worker(o).iter().map(|k| operators.get(k).cloned().flatten()).collect(),
                    )
                })
                .collect(),
            sinks: self
                .sinks
                .iter()
                .map(|k| {
                    (
                        k.clone(),
                        per_worker(k).iter().map(|key| sinks.get(key).cloned().flatten()).collect(),
                    )
                })
                .collect(),
        }
    }

    /// Bookkeeping once checkpoint `active` is durable (`bytes`: its size, where written here).
    fn finish_checkpoint(&self, st: &mut State, active: &Active, bytes: Option<u64>) {
        if let Some(m) = &self.metrics {
            m.checkpoint_duration.observe_ns(active.started.elapsed().as_nanos() as i64);
            m.checkpoint_held.observe_ns(active.held.as_nanos() as i64);
            if let Some(b) = bytes {
                m.checkpoint_bytes.store(b, Ordering::Relaxed);
            }
        }
        st.durable.extend(active.aligned.iter().map(|(k, p)| (k.clone(), p.batches)));
        st.written += 1;
        st.last = Instant::now();
        if active.final_ {
            st.final_done = true;
        }
    }
}
