//! Runs a [`CompiledPipeline`] on timely dataflow.
//!
//! Every worker builds the same dataflow. Sources read their share of the data and hold a
//! capability at the event time of the next batch they may emit, so the frontier is the
//! watermark. `ByStream` operators receive each stream on one worker and process it in
//! event-time order once the frontier has passed; sinks write what the frontier has passed,
//! in event-time order, and finish when their input frontier is empty.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::hash::{Hash, Hasher};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use timely::dataflow::channels::pact::{Exchange, ParallelizationContract, Pipeline};
use timely::dataflow::operators::generic::operator::source;
use timely::dataflow::operators::generic::Operator as _;
use timely::dataflow::operators::probe::Handle as ProbeHandle;
use timely::dataflow::operators::{Capability, Probe};
use timely::dataflow::{Scope, StreamVec};

use crate::checkpoint::{
    Checkpoint, CheckpointOptions, CheckpointStore, Checkpointing, Coordinator, Delivery, Fingerprint, Gate, SourcePosition,
    EXHAUSTED,
};
use crate::device::{ComputeDevice, DeviceChoice, DeviceManager, DevicePolicy};
use crate::error::{EngineError, Result};
use crate::frame::{Batch, Frame};
use crate::node::{Operator, Partitioning, Placement, Sink, Source, WorkerPos};
use crate::spec::{Built, CompiledPipeline, GpuFallback, OnInvalid, Overload};

/// Several processes in timely's cluster mode.
#[derive(Clone, Debug)]
pub struct ClusterConfig {
    /// This process's index, `0..addresses.len()`.
    pub process: usize,
    /// `host:port` of every process, in process order (the hostfile's lines).
    pub addresses: Vec<String>,
    /// How long to wait for every peer to connect at start-up before failing (default 60 s).
    pub peer_timeout: Duration,
}

impl ClusterConfig {
    /// Reads a hostfile: one `host:port` per line; blank lines and `#` comments are skipped.
    pub fn from_hostfile(path: &std::path::Path, process: usize) -> Result<ClusterConfig> {
        let text =
            std::fs::read_to_string(path).map_err(|e| EngineError::io(format!("reading hostfile {}", path.display()), e))?;
        let addresses: Vec<String> = text
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty() && !l.starts_with('#'))
            .map(str::to_string)
            .collect();
        for (i, a) in addresses.iter().enumerate() {
            if !a.contains(':') {
                return Err(EngineError::Runtime(format!(
                    "{}: line {}: expected host:port, found `{a}`",
                    path.display(),
                    i + 1
                )));
            }
        }
        if process >= addresses.len() {
            return Err(EngineError::Runtime(format!(
                "process index {process} is out of range: {} lists {} processes",
                path.display(),
                addresses.len()
            )));
        }
        Ok(ClusterConfig {
            process,
            addresses,
            peer_timeout: Duration::from_secs(60),
        })
    }
}

/// How to run a pipeline.
#[derive(Clone, Debug, Default)]
pub struct RunOptions {
    /// Worker threads in this process (0: the pipeline's `workers` setting).
    pub workers: usize,
    /// Multi-process mode; `None` for a single process.
    pub cluster: Option<ClusterConfig>,
    /// Forces every operator onto this device, whatever the pipeline says.
    pub device: Option<DeviceChoice>,
    /// Counters the caller may watch while the run goes (progress bars).
    pub progress: Option<Arc<RunProgress>>,
    /// Live per-node metrics to update (served on `/metrics`, printed as status lines).
    pub metrics: Option<Arc<crate::metrics::Metrics>>,
    /// Exactly-once checkpoints (and resuming from them); `None`: no checkpoints.
    pub checkpoint: Option<CheckpointOptions>,
}

/// Live counters of a run in this process.
#[derive(Debug, Default)]
pub struct RunProgress {
    /// Rows read by this process's sources so far.
    pub rows_read: AtomicU64,
}

/// Per-node counters after a run (this process).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct NodeStats {
    /// Sinks: arrival-to-written latency of each dense frame that carried an arrival stamp, ns.
    pub latencies_ns: Vec<i64>,
    /// Rows received.
    pub rows_in: u64,
    /// Rows emitted.
    pub rows_out: u64,
    /// Payload bytes received.
    pub bytes_in: u64,
    /// Time spent in the node's own code.
    pub busy: Duration,
}

/// What a finished run reports (for this process).
#[derive(Clone, Debug, Default)]
pub struct RunReport {
    /// Counters per node, keyed `sources.NAME`, `operators.NAME`, `sinks.NAME`.
    pub nodes: BTreeMap<String, NodeStats>,
    /// Rows dropped for NaN/Inf per source (with `on_invalid = "drop"`).
    pub dropped_invalid: BTreeMap<String, u64>,
    /// Per source with a drop policy (`overload`): (rows read, rows dropped because the
    /// pipeline was behind). Read = accepted + dropped.
    pub overload: BTreeMap<String, (u64, u64)>,
    /// Device each operator ran on, keyed `operators.NAME`.
    pub devices: BTreeMap<String, String>,
    /// Lines from the sinks (files written, summaries).
    pub sink_lines: Vec<String>,
    /// Wall time of the run.
    pub elapsed: Duration,
    /// Workers in this process and in total.
    pub workers: (usize, usize),
}

#[derive(Default)]
struct Shared {
    failed: AtomicBool,
    errors: Mutex<Vec<String>>,
    nodes: Mutex<BTreeMap<String, NodeStats>>,
    dropped: Mutex<BTreeMap<String, u64>>,
    overload: Mutex<BTreeMap<String, (u64, u64)>>,
    sink_lines: Mutex<Vec<String>>,
    progress: Option<Arc<RunProgress>>,
    metrics: Option<Arc<crate::metrics::Metrics>>,
    checkpoint: Option<Arc<Coordinator>>,
    restored: Option<Arc<Checkpoint>>,
}

impl Shared {
    fn fail(&self, message: String) {
        tracing::error!("{message}");
        self.errors.lock().unwrap().push(message);
        self.failed.store(true, Ordering::SeqCst);
    }
    fn failed(&self) -> bool {
        self.failed.load(Ordering::SeqCst)
    }
    fn first_error(&self) -> Option<String> {
        self.errors.lock().unwrap().first().cloned()
    }
    fn node_metrics(&self, name: &str) -> Option<Arc<crate::metrics::NodeMetrics>> {
        self.metrics.as_ref().map(|m| m.node(name))
    }
    /// The restored checkpoint's entry for this worker, picked by `pick`.
    fn restored<T: Clone>(&self, pick: impl Fn(&Checkpoint) -> Option<&Vec<Option<T>>>, worker: usize) -> Option<T> {
        self.restored
            .as_ref()
            .and_then(|c| pick(c))
            .and_then(|v| v.get(worker).cloned())
            .flatten()
    }
    /// The activator of an operator or sink at `address`; with checkpoints, also registered so
    /// the coordinator can wake it when a checkpoint needs it.
    fn activator(&self, scope: &Scope<'_, u64>, address: std::rc::Rc<[usize]>) -> timely::scheduling::Activator {
        if let Some(ck) = &self.checkpoint {
            ck.register(scope.worker().sync_activator_for(address.to_vec()));
        }
        scope.activator_for(address)
    }
    /// For an operator or sink: the coordinator and id of a checkpoint it must report to now,
    /// i.e. once its input frontier has reached the target (every earlier batch is processed and
    /// no later one exists yet). While the frontier trails, it asks to be activated again soon.
    fn checkpoint_due(
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
    fn add_stats(&self, name: &str, s: &NodeStats) {
        let mut nodes = self.nodes.lock().unwrap();
        let e = nodes.entry(name.to_string()).or_default();
        e.rows_in += s.rows_in;
        e.rows_out += s.rows_out;
        e.bytes_in += s.bytes_in;
        e.busy += s.busy;
        e.latencies_ns.extend_from_slice(&s.latencies_ns);
    }
}

/// The 50th, 95th and 99th percentiles and the maximum of `latencies_ns` (nearest rank), in
/// milliseconds; `None` when empty.
pub fn latency_percentiles_ms(latencies_ns: &[i64]) -> Option<[f64; 4]> {
    if latencies_ns.is_empty() {
        return None;
    }
    let mut v = latencies_ns.to_vec();
    v.sort_unstable();
    let at = |q: f64| v[((q * v.len() as f64).ceil() as usize).clamp(1, v.len()) - 1] as f64 / 1e6;
    Some([at(0.50), at(0.95), at(0.99), *v.last().unwrap() as f64 / 1e6])
}

fn stream_hash(stream: &str) -> u64 {
    let mut h = std::collections::hash_map::DefaultHasher::new();
    stream.hash(&mut h);
    h.finish()
}

/// Runs the pipeline to completion in this process (joining the cluster when configured).
/// Fails with every error the workers hit; outputs already written stay complete and readable.
pub fn run(pipeline: CompiledPipeline, options: RunOptions) -> Result<RunReport> {
    let started = Instant::now();
    let settings = pipeline.settings.clone();
    let mut devices = DeviceManager::new(DevicePolicy {
        allow_software_gpu: settings.allow_software_gpu,
        fallback_to_cpu: settings.gpu_fallback == GpuFallback::Cpu,
    });
    let mut node_devices: HashMap<String, ComputeDevice> = HashMap::new();
    let mut report = RunReport::default();
    for node in &pipeline.nodes {
        if let Built::Operator(_) = node.built {
            let choice = options.device.or(node.spec.device).unwrap_or(settings.device);
            let device = devices.resolve(choice)?;
            report.devices.insert(node.spec.qualified_name(), device.describe());
            node_devices.insert(node.spec.name.clone(), device);
        } else if let Built::Sink(sink) = &node.built {
            if sink.computes() {
                let choice = options.device.or(node.spec.device).unwrap_or(settings.device);
                let device = devices.resolve(choice)?;
                report.devices.insert(node.spec.qualified_name(), device.describe());
                node_devices.insert(node.spec.name.clone(), device);
            } else if node.spec.device.is_some() {
                return Err(EngineError::config(
                    format!("[sinks.{}]", node.spec.name),
                    "`device` applies to operators and to sinks that compute (sae_train), not to this sink",
                ));
            }
        }
    }
    let workers = if options.workers > 0 {
        options.workers
    } else {
        settings.workers.max(1)
    };
    let processes = options.cluster.as_ref().map_or(1, |c| c.addresses.len());
    report.workers = (workers, workers * processes);
    if let Some(m) = &options.metrics {
        for (node, device) in &report.devices {
            m.set_device(node, device);
        }
    }
    let (checkpoint, restored) = match &options.checkpoint {
        None => (None, None),
        Some(o) => match prepare_checkpoints(&pipeline, o, &options, workers * processes)? {
            Prepared::Complete => {
                remove_staging(&pipeline)?;
                report.sink_lines.push(format!(
                    "checkpoint: the run in {} had already completed; its outputs are final",
                    o.dir.display()
                ));
                return Ok(report);
            }
            Prepared::Run(c, r) => (Some(c), r),
        },
    };
    remove_dead_temporaries(&pipeline)?;
    if let Some(r) = &restored {
        tracing::info!(
            "resuming from checkpoint {} in {}",
            r.id,
            options.checkpoint.as_ref().unwrap().dir.display()
        );
    }
    let shared = Arc::new(Shared {
        progress: options.progress.clone(),
        metrics: options.metrics.clone(),
        checkpoint: checkpoint.clone(),
        restored: restored.map(Arc::new),
        ..Default::default()
    });
    let pipeline = Arc::new(pipeline);
    let pipeline_for_cleanup = pipeline.clone();
    let node_devices = Arc::new(node_devices);
    let worker_shared = shared.clone();
    let (builders, communication_guard) = match &options.cluster {
        Some(c) => cluster_builders(c, &pipeline_for_cleanup, workers)?,
        None if workers == 1 => timely::CommunicationConfig::Thread.try_build(),
        None => timely::CommunicationConfig::Process(workers).try_build(),
    }
    .map_err(EngineError::Runtime)?;
    let _peer_watch = options.cluster.as_ref().map(|c| {
        let pipeline = pipeline_for_cleanup.clone();
        crate::cluster::watch_peers(
            c.addresses.clone(),
            Box::new(move || {
                for node in &pipeline.nodes {
                    if let Built::Sink(sink) = &node.built {
                        let _ = sink.remove_temporaries(crate::process::TempOwners::ThisProcess);
                    }
                }
            }),
        )
    });
    let guards = timely::execute::execute_from(
        builders,
        communication_guard,
        timely::WorkerConfig::default(),
        move |worker| {
            let pos = WorkerPos {
                index: worker.index(),
                peers: worker.peers(),
            };
            let shared = worker_shared.clone();
            let pipeline = pipeline.clone();
            let node_devices = node_devices.clone();
            worker.dataflow::<u64, _, _>(|scope| {
                // Each source has a probe on the sinks it feeds; it pauses when it runs too far ahead
                // of them. Streams of different sources never hold each other back.
                let mut probes: HashMap<&str, ProbeHandle<u64>> = HashMap::new();
                let max_in_flight = (pipeline.settings.max_in_flight_mb.max(0.0) * 1048576.0) as u64;
                let mut streams: HashMap<&str, StreamVec<'_, u64, Batch>> = HashMap::new();
                for node in &pipeline.nodes {
                    let name = node.spec.name.as_str();
                    let label = node.spec.qualified_name();
                    let input = node.spec.input.as_deref().and_then(|i| streams.get(i).cloned());
                    match (&node.built, input) {
                        (Built::Source(src), _) => {
                            let policy = node.spec.on_invalid.unwrap_or(pipeline.settings.on_invalid);
                            let window = max_in_flight / (src.schema().width() as u64 * 4 + 16);
                            let probe = probes.entry(name).or_default().clone();
                            let flow = FlowControl {
                                probe,
                                window: window.max(1),
                            };
                            let s = build_source(
                                scope,
                                &label,
                                src.clone(),
                                (policy, node.spec.overload),
                                flow,
                                pos,
                                shared.clone(),
                            );
                            streams.insert(name, s);
                        }
                        (Built::Operator(op), Some(input)) => {
                            let device = node_devices[name].clone();
                            let s = match op.partitioning() {
                                Partitioning::Local => {
                                    build_operator(input, Pipeline, &label, op.clone(), device, pos, shared.clone())
                                }
                                Partitioning::ByStream => build_operator(
                                    input,
                                    Exchange::new(|b: &Batch| stream_hash(b.stream())),
                                    &label,
                                    op.clone(),
                                    device,
                                    pos,
                                    shared.clone(),
                                ),
                            };
                            streams.insert(name, s);
                        }
                        (Built::Sink(sink), Some(input)) => match (
                            sink.placement(),
                            input.probe_with(&probes[pipeline.root_of(node.spec.input.as_deref().unwrap_or_default())]),
                        ) {
                            (Placement::Single, input) => build_sink(
                                input,
                                Exchange::new(|_: &Batch| 0u64),
                                &label,
                                sink.clone(),
                                node_devices.get(name).cloned().unwrap_or(ComputeDevice::Cpu),
                                pos,
                                shared.clone(),
                            ),
                            (Placement::PerWorker, input) => build_sink(
                                input,
                                Pipeline,
                                &label,
                                sink.clone(),
                                node_devices.get(name).cloned().unwrap_or(ComputeDevice::Cpu),
                                pos,
                                shared.clone(),
                            ),
                        },
                        _ => unreachable!("compile orders inputs before consumers"),
                    }
                }
            });
            while worker.step_or_park(Some(Duration::from_millis(20))) {}
        },
    )
    .map_err(EngineError::Runtime)?;
    for r in guards.join() {
        if let Err(panic) = r {
            shared.fail(format!("a worker panicked: {panic}"));
        }
    }
    report.elapsed = started.elapsed();
    report.nodes = shared.nodes.lock().unwrap().clone();
    report.dropped_invalid = shared.dropped.lock().unwrap().clone();
    report.overload = shared.overload.lock().unwrap().clone();
    report.sink_lines = shared.sink_lines.lock().unwrap().clone();
    let errors = shared.errors.lock().unwrap().clone();
    if let (Some(c), Some(o)) = (&checkpoint, &options.checkpoint) {
        if errors.is_empty() {
            c.store().mark_complete()?;
            remove_staging(&pipeline_for_cleanup)?;
        }
        report.sink_lines.push(format!(
            "checkpoint: {} checkpoints written to {}{}",
            c.written(),
            o.dir.display(),
            if errors.is_empty() {
                "; the run is complete"
            } else {
                "; resume with --resume"
            }
        ));
    }
    if errors.is_empty() {
        Ok(report)
    } else {
        for line in &report.sink_lines {
            tracing::warn!("kept after failure: {line}");
        }
        Err(EngineError::Runtime(errors.join("\n")))
    }
}

type Communication = (Vec<timely::communication::AllocatorBuilder>, Box<dyn std::any::Any + Send>);

/// Connects this process to its peers (checking they run the same binary, pipeline and worker
/// count, within the peer time-out) and builds timely's allocators on those sockets.
fn cluster_builders(
    c: &ClusterConfig,
    pipeline: &CompiledPipeline,
    workers: usize,
) -> Result<std::result::Result<Communication, String>> {
    use timely::communication::allocator::zero_copy::initialize::initialize_networking_from_sockets;
    let nodes = serde_json::to_vec(&node_fingerprints(pipeline)).expect("fingerprints serialize");
    let hello = crate::cluster::Hello {
        version: env!("CARGO_PKG_VERSION").to_string(),
        pipeline: format!("{} {:08x} {}", pipeline.settings.name, crc32fast::hash(&nodes), nodes.len()),
        workers,
        processes: c.addresses.len(),
        process: c.process,
    };
    let sockets = crate::cluster::connect(&c.addresses, &hello, c.peer_timeout)?;
    let hooks = timely::communication::Hooks::default();
    let allocators =
        timely::communication::allocator::ProcessBuilder::new_typed_vector(workers, hooks.refill.clone(), hooks.spill.clone());
    Ok(
        initialize_networking_from_sockets(allocators, sockets, c.process, workers, hooks)
            .map(|(builders, guard)| {
                let builders = builders
                    .into_iter()
                    .map(timely::communication::AllocatorBuilder::Tcp)
                    .collect();
                (builders, Box::new(guard) as Box<dyn std::any::Any + Send>)
            })
            .map_err(|e| format!("cluster: cannot start timely's networking: {e}")),
    )
}

/// Removes the temporary files that killed runs left among the sinks' outputs, and says so.
fn remove_dead_temporaries(pipeline: &CompiledPipeline) -> Result<()> {
    for node in &pipeline.nodes {
        if let Built::Sink(sink) = &node.built {
            let removed = sink.remove_temporaries(crate::process::TempOwners::DeadRuns)?;
            if !removed.is_empty() {
                tracing::warn!(
                    "[{}]: removed {} temporary file(s) left by runs that were killed: {}",
                    node.spec.qualified_name(),
                    removed.len(),
                    removed.iter().map(|p| p.display().to_string()).collect::<Vec<_>>().join(", ")
                );
            }
        }
    }
    Ok(())
}

/// Removes the sinks' staged segments once the run is recorded as complete.
fn remove_staging(pipeline: &CompiledPipeline) -> Result<()> {
    for node in &pipeline.nodes {
        if let Built::Sink(sink) = &node.built {
            sink.remove_staging()?;
        }
    }
    Ok(())
}

enum Prepared {
    /// The directory's run already finished.
    Complete,
    /// Run with this coordinator, from this checkpoint (`None`: from the start).
    Run(Arc<Coordinator>, Option<Checkpoint>),
}

/// Every node's kind, input and configuration, keyed by its qualified name.
fn node_fingerprints(pipeline: &CompiledPipeline) -> std::collections::BTreeMap<String, String> {
    pipeline
        .nodes
        .iter()
        .map(|n| {
            let s = &n.spec;
            let config = toml::to_string(&s.config).unwrap_or_default();
            let describe = format!(
                "kind = {:?}, input = {:?}, device = {:?}, on_invalid = {:?}, overload = {:?}\n{config}",
                s.kind, s.input, s.device, s.on_invalid, s.overload
            );
            (s.qualified_name(), describe)
        })
        .collect()
}

/// What identifies a pipeline for its checkpoints: every node's kind, input and configuration.
fn fingerprint(pipeline: &CompiledPipeline, workers: usize) -> Fingerprint {
    let nodes = node_fingerprints(pipeline);
    let inputs = pipeline
        .nodes
        .iter()
        .map(|n| {
            let mut files = n.loaded.clone();
            if let Built::Source(src) = &n.built {
                files.extend(src.input_files());
            }
            files.sort();
            files.dedup();
            (
                n.spec.qualified_name(),
                files.iter().flat_map(|f| file_identities(f)).collect::<Vec<_>>(),
            )
        })
        .filter(|(_, files)| !files.is_empty())
        .collect();
    Fingerprint {
        pipeline: pipeline.settings.name.clone(),
        nodes,
        workers,
        inputs,
    }
}

/// `path (N bytes, modified T)` for a file, or for each file under a directory (an SAE folder,
/// say), sorted: what a resumed run compares to tell that an input changed.
fn file_identities(path: &std::path::Path) -> Vec<String> {
    if path.is_dir() {
        let mut files = Vec::new();
        collect_files(path, 4, &mut files);
        files.sort();
        return files.iter().map(|f| file_identity(f)).collect();
    }
    vec![file_identity(path)]
}

/// Every regular file under `dir`, at most `depth` levels down.
fn collect_files(dir: &std::path::Path, depth: usize, out: &mut Vec<std::path::PathBuf>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for e in entries.flatten() {
        let path = e.path();
        match e.file_type() {
            Ok(t) if t.is_dir() && depth > 0 => collect_files(&path, depth - 1, out),
            Ok(t) if t.is_file() || t.is_symlink() => out.push(path),
            _ => {}
        }
    }
}

/// Files up to this size are identified by their content too (CRC-32), so a replacement that
/// keeps size and modification time (`cp -p`) is still noticed; larger ones by size and time.
const HASHED_INPUT_BYTES: u64 = 64 << 20;

/// `path (N bytes, modified T[, crc32 C])` of one file.
fn file_identity(path: &std::path::Path) -> String {
    match std::fs::metadata(path) {
        Ok(m) => {
            let modified = m
                .modified()
                .ok()
                .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
                .map_or(0, |d| d.as_nanos());
            let content = match m.len() <= HASHED_INPUT_BYTES {
                true => std::fs::read(path).map_or(String::new(), |b| format!(", crc32 {:08x}", crc32fast::hash(&b))),
                false => String::new(),
            };
            format!("{} ({} bytes, modified {modified} ns{content})", path.display(), m.len())
        }
        Err(e) => format!("{} (unreadable: {e})", path.display()),
    }
}

/// Checks that every node can be checkpointed, then opens the directory: fresh, or resuming
/// from its newest checkpoint after finishing that checkpoint's commits.
fn prepare_checkpoints(
    pipeline: &CompiledPipeline,
    o: &CheckpointOptions,
    options: &RunOptions,
    workers: usize,
) -> Result<Prepared> {
    if options.cluster.is_some() {
        return Err(EngineError::Checkpoint(
            "multi-process runs cannot be checkpointed yet; run in one process (workers may be many)".into(),
        ));
    }
    let mut problems = Vec::new();
    let (mut sources, mut operators, mut sinks) = (Vec::new(), Vec::new(), Vec::new());
    let mut roots = HashMap::new();
    for node in &pipeline.nodes {
        let label = node.spec.qualified_name();
        let root = node.spec.input.as_deref().map(|i| format!("sources.{}", pipeline.root_of(i)));
        match &node.built {
            Built::Source(src) => {
                if !src.replayable() {
                    problems.push(format!(
                        "[{label}] cannot be replayed (a live stream): exactly-once restart needs sources that read the same data again"
                    ));
                }
                if node.spec.overload != Overload::Block {
                    problems.push(format!(
                        "[{label}] drops rows when overloaded (`overload`), which a resumed run cannot repeat; use overload = \"block\""
                    ));
                }
                sources.push(label);
            }
            Built::Operator(op) => {
                if op.checkpointing() == Checkpointing::Unsupported {
                    problems.push(format!(
                        "[{label}] (`{}`) cannot save its state in checkpoints yet",
                        node.spec.kind.as_deref().unwrap_or("?")
                    ));
                }
                roots.insert(label.clone(), root.unwrap_or_default());
                operators.push(label);
            }
            Built::Sink(sink) => {
                match sink.delivery() {
                    Delivery::Unsupported => problems.push(format!(
                        "[{label}] (`{}`) cannot take part in checkpoints",
                        node.spec.kind.as_deref().unwrap_or("?")
                    )),
                    Delivery::AtLeastOnce => tracing::info!(
                        "[{label}] is a live consumer: after a resume it receives again what followed the last checkpoint"
                    ),
                    Delivery::ExactlyOnce => {}
                }
                roots.insert(label.clone(), root.unwrap_or_default());
                sinks.push(label);
            }
        }
    }
    if !problems.is_empty() {
        return Err(EngineError::Checkpoint(format!(
            "this pipeline cannot be checkpointed:\n{}",
            problems.iter().map(|p| format!("  - {p}")).collect::<Vec<_>>().join("\n")
        )));
    }
    let fp = fingerprint(pipeline, workers);
    let store = CheckpointStore::open(&o.dir)?;
    let dir = o.dir.display();
    let existing = store.fingerprint()?;
    let mut resumed = None;
    if o.resume && existing.is_none() && store.killed_before_start() {
        tracing::info!("{dir}: the run was killed before it recorded its pipeline; starting from the beginning");
        store.start_fresh(&fp)?;
    } else if o.resume {
        let Some(existing) = existing else {
            return Err(EngineError::Checkpoint(format!(
                "{dir} holds no neurostream checkpoints (no pipeline.json): nothing to resume"
            )));
        };
        if let Some(why) = fp.mismatch(&existing) {
            return Err(EngineError::Checkpoint(format!(
                "{dir} belongs to another run: {why}; refusing to resume from it"
            )));
        }
        if store.is_complete() {
            return Ok(Prepared::Complete);
        }
        resumed = store.latest()?;
        match &resumed {
            Some(ck) => crate::checkpoint::commit_staged(&ck.staged_files())?,
            None => tracing::info!("{dir}: the run stopped before its first checkpoint; starting from the beginning"),
        }
    } else {
        if existing.is_some() && !store.is_complete() {
            return Err(EngineError::Checkpoint(format!(
                "{dir} holds checkpoints of an unfinished run: pass --resume to continue it, or remove the directory to start over"
            )));
        }
        store.start_fresh(&fp)?;
    }
    let coordinator = Coordinator::new(
        store,
        o.every,
        workers,
        sources,
        operators,
        sinks,
        roots,
        resumed.as_ref().map_or(0, |c| c.id),
        options.metrics.clone(),
    );
    Ok(Prepared::Run(Arc::new(coordinator), resumed))
}

/// Applies the NaN/Inf policy to a batch: error, or drop rows and count them.
fn check_invalid(batch: &mut Batch, policy: OnInvalid, location: &str) -> Result<u64> {
    let Batch::Dense(frame) = batch else {
        return Ok(0);
    };
    let Some((row, channel)) = frame.first_non_finite() else {
        return Ok(0);
    };
    match policy {
        OnInvalid::Error => Err(EngineError::NonFinite {
            stream: if location.is_empty() {
                frame.stream.to_string()
            } else {
                format!("{} ({location})", frame.stream)
            },
            row: frame.index.describe_row(row),
            channel,
            name: frame.schema.channels.get(channel).map(|c| c.name.clone()).unwrap_or_default(),
        }),
        OnInvalid::Drop => {
            let w = frame.width();
            let keep: Vec<bool> = frame.data.chunks(w.max(1)).map(|r| r.iter().all(|v| v.is_finite())).collect();
            let dropped = keep.iter().filter(|k| !**k).count() as u64;
            frame.retain_rows(&keep);
            Ok(dropped)
        }
    }
}

/// Bounds the rows between a source and the sinks: the source waits while the sinks' frontier
/// is more than `window` event-time units (rows) behind its next batch.
struct FlowControl {
    probe: ProbeHandle<u64>,
    window: u64,
}

fn build_source<'s>(
    scope: Scope<'s, u64>,
    name: &str,
    src: Arc<dyn Source>,
    (policy, overload): (OnInvalid, Overload),
    flow: FlowControl,
    pos: WorkerPos,
    shared: Arc<Shared>,
) -> StreamVec<'s, u64, Batch> {
    let name = name.to_string();
    source::<_, timely::container::CapacityContainerBuilder<Vec<Batch>>, _, _>(scope, &name.clone(), move |cap, info| {
        let activator = scope.activator_for(info.address);
        let mut stats = NodeStats::default();
        let live = shared.node_metrics(&name);
        let mut dropped = 0u64;
        // Overload policies: rows read, rows dropped, and drop_oldest's buffer.
        let (mut read_rows, mut overload_dropped, mut overload_published) = (0u64, 0u64, 0u64);
        let mut buffer: VecDeque<(u64, Batch)> = VecDeque::new();
        let mut buffered_rows = 0u64;
        // Batches and rows the reader has returned (positions for checkpoints), and a batch read
        // but held back because it falls after a checkpoint's target time.
        let mut position = SourcePosition::default();
        let mut lookahead: Option<(u64, Batch)> = None;
        let mut reader = match src.open(pos).and_then(|mut r| {
            if let Some(p) = shared.restored(|c| c.sources.get(&name), pos.index) {
                let rows = r.skip_batches(p.batches)?;
                if rows != p.rows {
                    return Err(EngineError::Checkpoint(format!(
                        "the {} batches it had emitted hold {rows} rows now, {} when the checkpoint was taken: its data changed since",
                        p.batches, p.rows
                    )));
                }
                // Some readers only learn they are exhausted when asked for one more batch.
                if p.next_time.is_none() && r.next_time().is_some() && r.next_batch()?.is_some() {
                    return Err(EngineError::Checkpoint(format!(
                        "the checkpoint says it had ended after {} batches, but it has more: its data changed since",
                        p.batches
                    )));
                }
                // `next_time` is a lower bound: it may be earlier than the batch actually next.
                let consistent = match (r.next_time(), p.next_time) {
                    (None, None) => true,
                    (Some(now), Some(then)) => now <= then,
                    _ => false,
                };
                if !consistent {
                    return Err(EngineError::Checkpoint(format!(
                        "after skipping the {} batches it had emitted, the next event time is {:?}, but the checkpoint says {:?}: its data changed since",
                        p.batches,
                        r.next_time(),
                        p.next_time
                    )));
                }
                position = p;
            }
            Ok(r)
        }) {
            Ok(r) => Some(r),
            Err(e) => {
                shared.fail(format!("`{name}`: {e}"));
                None
            }
        };
        let mut cap: Option<Capability<u64>> = Some(cap);
        activator.activate();
        move |output| {
            let done = |stats: &NodeStats, dropped: u64, read: u64, overloaded: u64| {
                shared.add_stats(&name, stats);
                if overload != Overload::Block {
                    let mut o = shared.overload.lock().unwrap();
                    let e = o.entry(name.clone()).or_default();
                    e.0 += read;
                    e.1 += overloaded;
                    if overloaded > 0 {
                        tracing::warn!("`{name}`: the pipeline fell behind: dropped {overloaded} of {read} rows ({overload:?})");
                    }
                }
                if dropped > 0 {
                    *shared.dropped.lock().unwrap().entry(name.clone()).or_default() += dropped;
                    tracing::warn!("`{name}`: dropped {dropped} rows holding NaN/Inf");
                }
            };
            let Some(r) = reader.as_mut() else {
                cap = None;
                return;
            };
            let Some(c) = cap.as_mut() else { return };
            if shared.failed() {
                done(&stats, dropped, read_rows, overload_dropped);
                reader = None;
                cap = None;
                return;
            }
            let mut below = None;
            if let Some(ck) = &shared.checkpoint {
                position.next_time = lookahead.as_ref().map(|l| l.0).or_else(|| r.next_time());
                match ck.source_gate(&name, pos.index, position.next_time, &position) {
                    Ok(Gate::Free(b)) => below = b,
                    Ok(Gate::Release) => {}
                    Ok(Gate::Hold) => {
                        let at = position.next_time.unwrap_or(EXHAUSTED);
                        if at > *c.time() {
                            c.downgrade(&at);
                        }
                        activator.activate_after(Duration::from_millis(1));
                        return;
                    }
                    Err(e) => {
                        shared.fail(format!("`{name}`: {e}"));
                        done(&stats, dropped, read_rows, overload_dropped);
                        reader = None;
                        cap = None;
                        return;
                    }
                }
            }
            // Hold the capability at the next batch's time (the watermark), then wait while the
            // sinks are more than the flow-control window behind it.
            match buffer
                .front()
                .map(|b| b.0)
                .or_else(|| lookahead.as_ref().map(|l| l.0))
                .or_else(|| r.next_time())
            {
                Some(t) if t >= *c.time() => c.downgrade(&t),
                Some(_) => {}
                None => {
                    done(&stats, dropped, read_rows, overload_dropped);
                    reader = None;
                    cap = None;
                    return;
                }
            }
            if let Some(m) = &live {
                // Queue depth: how far (in rows or samples) the sinks' frontier trails this source.
                let behind = flow
                    .probe
                    .with_frontier(|f| f.first().map_or(0, |&t| c.time().saturating_sub(t)));
                m.in_flight.store(behind, Ordering::Relaxed);
            }
            if flow.probe.less_than(&c.time().saturating_sub(flow.window)) {
                if overload != Overload::Block {
                    // Keep draining what a live source has ready, so its sender never waits:
                    // drop it (drop_newest) or buffer it, dropping the oldest (drop_oldest).
                    let mut n = 0;
                    while n < 64 && r.ready() && r.next_time().is_some() {
                        n += 1;
                        match r.next_batch() {
                            Ok(Some((time, mut batch))) => {
                                if let Batch::Dense(f) = &mut batch {
                                    f.arrival_ns.get_or_insert_with(crate::frame::now_ns);
                                }
                                let rows = batch.rows() as u64;
                                read_rows += rows;
                                match overload {
                                    Overload::DropOldest(limit) => {
                                        buffered_rows += rows;
                                        buffer.push_back((time, batch));
                                        while buffered_rows > limit {
                                            let (_, old) = buffer.pop_front().expect("over the limit");
                                            buffered_rows -= old.rows() as u64;
                                            overload_dropped += old.rows() as u64;
                                        }
                                    }
                                    _ => overload_dropped += rows,
                                }
                            }
                            Ok(None) => break,
                            Err(e) => {
                                shared.fail(format!("`{name}`: {e}"));
                                done(&stats, dropped, read_rows, overload_dropped);
                                reader = None;
                                cap = None;
                                return;
                            }
                        }
                    }
                    if let Some(m) = &live {
                        // Every worker adds its own drops to the one counter of the node.
                        m.dropped_overload
                            .fetch_add(overload_dropped - overload_published, Ordering::Relaxed);
                        overload_published = overload_dropped;
                    }
                    if let Some(t) = buffer.front().map(|b| b.0) {
                        if t >= *c.time() {
                            c.downgrade(&t);
                        }
                    }
                }
                activator.activate_after(Duration::from_millis(1));
                return;
            }
            if let Some((time, mut batch)) = buffer.pop_front() {
                buffered_rows -= batch.rows() as u64;
                let t0 = Instant::now();
                match check_invalid(&mut batch, policy, &r.location()) {
                    Ok(d) => dropped += d,
                    Err(e) => {
                        shared.fail(format!("`{name}`: {e}"));
                        done(&stats, dropped, read_rows, overload_dropped);
                        reader = None;
                        cap = None;
                        return;
                    }
                }
                let rows = batch.rows() as u64;
                stats.rows_out += rows;
                stats.bytes_in += batch.payload_bytes() as u64;
                if let Some(m) = &live {
                    m.batch(0, rows, batch.payload_bytes() as u64, t0.elapsed());
                }
                if rows > 0 {
                    output.session(&c.delayed(&time)).give(batch);
                }
                activator.activate();
                return;
            }
            if !r.ready() {
                activator.activate_after(Duration::from_millis(1));
                return;
            }
            let t0 = Instant::now();
            let outcome = (|| -> Result<bool> {
                let next = match lookahead.take() {
                    Some(l) => Some(l),
                    None => r.next_batch()?,
                };
                let Some((time, mut batch)) = next else {
                    return Ok(false);
                };
                if below.is_some_and(|t| time >= t) {
                    lookahead = Some((time, batch));
                    return Ok(true);
                }
                position.batches += 1;
                position.rows += batch.rows() as u64;
                position.end_time = position.end_time.max(time + 1);
                if time < *c.time() {
                    return Err(EngineError::Runtime(format!(
                        "`{name}` produced time {time} after promising times >= {}",
                        c.time()
                    )));
                }
                if let Batch::Dense(f) = &mut batch {
                    f.arrival_ns.get_or_insert_with(crate::frame::now_ns);
                }
                let dropped_now = check_invalid(&mut batch, policy, &r.location())?;
                dropped += dropped_now;
                read_rows += batch.rows() as u64 + dropped_now;
                let rows = batch.rows() as u64;
                stats.rows_out += rows;
                stats.bytes_in += batch.payload_bytes() as u64;
                if let Some(m) = &live {
                    m.batch(0, rows, batch.payload_bytes() as u64, t0.elapsed());
                    m.dropped_invalid.fetch_add(dropped_now, Ordering::Relaxed);
                }
                if let Some(p) = &shared.progress {
                    p.rows_read.fetch_add(rows, Ordering::Relaxed);
                }
                if rows > 0 {
                    output.session(&c.delayed(&time)).give(batch);
                }
                Ok(lookahead.is_some() || r.next_time().is_some())
            })();
            stats.busy += t0.elapsed();
            match outcome {
                // With checkpoints the end goes through the gate: held until the final checkpoint.
                Ok(true) => activator.activate(),
                Ok(false) if shared.checkpoint.is_some() => activator.activate(),
                Ok(false) => {
                    done(&stats, dropped, read_rows, overload_dropped);
                    reader = None;
                    cap = None;
                }
                Err(e) => {
                    let loc = r.location();
                    let at = if loc.is_empty() || e.to_string().contains(&loc) {
                        String::new()
                    } else {
                        format!(" (at {loc})")
                    };
                    shared.fail(format!("`{name}`: {e}{at}"));
                    done(&stats, dropped, read_rows, overload_dropped);
                    reader = None;
                    cap = None;
                }
            }
        }
    })
}

fn build_operator<'s, P>(
    input: StreamVec<'s, u64, Batch>,
    pact: P,
    name: &str,
    op: Arc<dyn Operator>,
    device: ComputeDevice,
    pos: WorkerPos,
    shared: Arc<Shared>,
) -> StreamVec<'s, u64, Batch>
where
    P: ParallelizationContract<u64, Vec<Batch>>,
{
    let name = name.to_string();
    let ordered = op.partitioning() == Partitioning::ByStream;
    let holds_back = op.holds_back();
    let scope = input.scope();
    input.unary_frontier::<timely::container::CapacityContainerBuilder<Vec<Batch>>, _, _, _>(
        pact,
        &name.clone(),
        move |initial, info| {
            let activator = shared.activator(&scope, info.address);
            let checkpointing = op.checkpointing();
            let mut instance = match op.instantiate(&device).and_then(|mut i| {
                if let Some(state) = shared.restored(|c| c.operators.get(&name), pos.index) {
                    i.restore(&state)?;
                }
                Ok(i)
            }) {
                Ok(i) => Some(i),
                Err(e) => {
                    shared.fail(format!("`{name}`: {e}"));
                    None
                }
            };
            let mut stash: BTreeMap<u64, (Capability<u64>, Vec<Batch>)> = BTreeMap::new();
            // Operators that hold rows back keep a capability from the start: restored state may
            // have rows to emit at the end even when no input reaches this worker after a resume.
            let mut held: Option<Capability<u64>> = holds_back.then_some(initial);
            let mut stats = NodeStats::default();
            let live = shared.node_metrics(&name);
            let mut finished = false;
            let mut out: Vec<Batch> = Vec::new();
            move |(input, frontier), output| {
                let mut ready: Vec<(Capability<u64>, Vec<Batch>)> = Vec::new();
                input.for_each(|cap, data| {
                    let Some(c) = cap.retain_least(0) else { return };
                    if ordered {
                        let entry = stash.entry(*c.time()).or_insert_with(|| (c, Vec::new()));
                        entry.1.append(data);
                    } else {
                        ready.push((c, std::mem::take(data)));
                    }
                });
                while let Some(entry) = stash.first_entry() {
                    if frontier.less_equal(entry.key()) {
                        break;
                    }
                    ready.push(entry.remove());
                }
                for (cap, batches) in ready {
                    let Some(inst) = instance.as_mut() else { continue };
                    if shared.failed() {
                        continue;
                    }
                    for batch in batches {
                        let (rows_in, bytes_in) = (batch.rows() as u64, batch.payload_bytes() as u64);
                        stats.rows_in += rows_in;
                        stats.bytes_in += bytes_in;
                        let t0 = Instant::now();
                        let r = inst.process(batch, &mut out);
                        let busy = t0.elapsed();
                        stats.busy += busy;
                        if let Some(m) = &live {
                            m.batch(rows_in, out.iter().map(|b| b.rows() as u64).sum(), bytes_in, busy);
                        }
                        if let Err(e) = r {
                            shared.fail(format!("`{name}`: {e}"));
                            out.clear();
                            break;
                        }
                        if !out.is_empty() {
                            stats.rows_out += out.iter().map(|b| b.rows() as u64).sum::<u64>();
                            output.session(&cap).give_iterator(out.drain(..));
                        }
                    }
                    if holds_back {
                        held = Some(cap);
                    }
                }
                // Operators that hold rows back may have some due now (a latency budget ran out);
                // not while a checkpoint is taken, when nothing may be emitted past its target time.
                let checkpointing_now = shared.checkpoint.as_ref().is_some_and(|c| c.in_progress());
                if let (Some(inst), Some(cap), false, false) =
                    (instance.as_mut(), held.as_ref(), shared.failed(), checkpointing_now)
                {
                    let t0 = Instant::now();
                    let r = inst.poll(&mut out);
                    stats.busy += t0.elapsed();
                    match r {
                        Ok(next) => {
                            if !out.is_empty() {
                                stats.rows_out += out.iter().map(|b| b.rows() as u64).sum::<u64>();
                                output.session(cap).give_iterator(out.drain(..));
                            }
                            if let Some(after) = next {
                                activator.activate_after(after);
                            }
                        }
                        Err(e) => {
                            shared.fail(format!("`{name}`: {e}"));
                            out.clear();
                        }
                    }
                }
                // The held capability only needs to cover what may still arrive: keep it at the
                // input frontier so it never holds the watermark back behind processed data.
                if let (Some(h), Some(&f)) = (held.as_mut(), frontier.frontier().first()) {
                    if f > *h.time() {
                        h.downgrade(&f);
                    }
                }
                // A checkpoint: once the input frontier reaches its target every earlier batch has
                // been processed and no later one exists yet, so the state is exactly the cut.
                if let Some((ck, id)) = shared.checkpoint_due(&name, pos.index, false, &frontier.frontier(), &activator) {
                    let state = match (checkpointing, instance.as_ref()) {
                        (Checkpointing::Snapshot, Some(inst)) => inst.snapshot().map(Some),
                        _ => Ok(None),
                    };
                    if let Err(e) = state.and_then(|st| ck.report_operator(id, &name, pos.index, st)) {
                        shared.fail(format!("`{name}`: {e}"));
                    }
                }
                if frontier.is_empty() && stash.is_empty() && !finished {
                    finished = true;
                    if let (Some(inst), false) = (instance.as_mut(), shared.failed()) {
                        match inst.finish(&mut out) {
                            Ok(()) if !out.is_empty() => match &held {
                                Some(cap) => {
                                    stats.rows_out += out.iter().map(|b| b.rows() as u64).sum::<u64>();
                                    output.session(cap).give_iterator(out.drain(..));
                                }
                                None => {
                                    shared.fail(format!(
                                        "`{name}` emitted rows at the end without holding a capability (declare holds_back)"
                                    ));
                                    out.clear();
                                }
                            },
                            Ok(()) => {}
                            Err(e) => shared.fail(format!("`{name}`: {e}")),
                        }
                    }
                    held = None;
                    shared.add_stats(&name, &stats);
                }
            }
        },
    )
}

fn build_sink<'s, P>(
    input: StreamVec<'s, u64, Batch>,
    pact: P,
    name: &str,
    sink: Arc<dyn Sink>,
    device: ComputeDevice,
    pos: WorkerPos,
    shared: Arc<Shared>,
) where
    P: ParallelizationContract<u64, Vec<Batch>>,
{
    let name = name.to_string();
    let mut writer = if sink.placement() == Placement::Single && pos.index != 0 {
        None
    } else {
        let opened = sink.open_on(pos, &device).and_then(|mut w| {
            if shared.checkpoint.is_some() {
                let state = shared.restored(|c| c.sinks.get(&name), pos.index);
                w.start_checkpointed(state.as_ref().map(|s| s.state.as_slice()))?;
            }
            Ok(w)
        });
        match opened {
            Ok(w) => Some(w),
            Err(e) => {
                shared.fail(format!("`{name}`: {e}"));
                None
            }
        }
    };
    let mut stash: BTreeMap<u64, Vec<Batch>> = BTreeMap::new();
    let mut stats = NodeStats::default();
    let live = shared.node_metrics(&name);
    let mut finished = false;
    let scope = input.scope();
    let _ = input.unary_frontier::<timely::container::CapacityContainerBuilder<Vec<Batch>>, _, _, _>(
        pact,
        &name.clone(),
        move |_cap, info| {
            let activator = shared.activator(&scope, info.address);
            move |(input, frontier), _output| {
                input.for_each(|cap, data| {
                    if let Some(c) = cap.retain_least(0) {
                        stash.entry(*c.time()).or_default().append(data);
                    }
                });
                while let Some(entry) = stash.first_entry() {
                    if frontier.less_equal(entry.key()) {
                        break;
                    }
                    let batches = entry.remove();
                    let Some(w) = writer.as_mut() else { continue };
                    for b in &batches {
                        stats.rows_in += b.rows() as u64;
                        stats.bytes_in += b.payload_bytes() as u64;
                        let t0 = Instant::now();
                        let r = w.write(b);
                        let busy = t0.elapsed();
                        stats.busy += busy;
                        if let Some(m) = &live {
                            m.batch(b.rows() as u64, 0, b.payload_bytes() as u64, busy);
                        }
                        if let Batch::Dense(Frame {
                            arrival_ns: Some(at), ..
                        }) = b
                        {
                            let latency = crate::frame::now_ns() - at;
                            stats.latencies_ns.push(latency);
                            if let Some(m) = &live {
                                m.latency.observe_ns(latency);
                            }
                        }
                        if let Err(e) = r {
                            shared.fail(format!("`{name}`: {e}"));
                            break;
                        }
                    }
                }
                // A checkpoint: the frontier at its target means every earlier batch is written.
                if let Some((ck, id)) = shared.checkpoint_due(&name, pos.index, true, &frontier.frontier(), &activator) {
                    let commit = writer.as_mut().map(|w| w.precommit()).transpose();
                    if let Err(e) = commit.and_then(|c| ck.report_sink(id, &name, pos.index, c)) {
                        shared.fail(format!("`{name}`: {e}"));
                    }
                }
                if frontier.is_empty() && !finished {
                    finished = true;
                    if let Some(w) = writer.take() {
                        let failure = shared.first_error();
                        match w.finish(failure.as_deref()) {
                            Ok(lines) => shared
                                .sink_lines
                                .lock()
                                .unwrap()
                                .extend(lines.into_iter().map(|l| format!("{name}: {l}"))),
                            Err(e) => shared.fail(format!("`{name}`: {e}")),
                        }
                    }
                    shared.add_stats(&name, &stats);
                }
            }
        },
    );
}
