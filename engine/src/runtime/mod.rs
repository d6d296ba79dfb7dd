//! Runs a [`CompiledPipeline`] on timely dataflow.
//!
//! Every worker builds the same dataflow. Sources read their share of the data and hold a
//! capability at the event time of the next batch they may emit, so the frontier is the
//! watermark. `ByStream` operators receive each stream on one worker and process it in
//! event-time order once the frontier has passed; sinks write what the frontier has passed,
//! in event-time order, and finish when their input frontier is empty.

mod control;
mod journal;
mod latency;
mod operator;
mod pictures;
mod prepare;
mod shared;
mod sink;
mod source;

use std::collections::{BTreeMap, HashMap};
use std::hash::{Hash, Hasher};
use std::sync::atomic::AtomicU64;
use std::sync::Arc;
use std::time::{Duration, Instant};

use timely::dataflow::channels::pact::{Exchange, Pipeline};
use timely::dataflow::operators::probe::Handle as ProbeHandle;
use timely::dataflow::operators::Probe;
use timely::dataflow::StreamVec;

use crate::checkpoint::{CheckpointOptions, Role};
use crate::device::{ComputeDevice, DeviceChoice, DeviceManager, DevicePolicy};
use crate::error::{EngineError, Result};
use crate::frame::Batch;
use crate::node::{Partitioning, Placement, WorkerPos};
use crate::spec::{Built, CompiledPipeline, GpuFallback};

pub use latency::Latencies;
use operator::{build_operator, OperatorDevice};
use prepare::{
    node_fingerprints, prepare_checkpoints, prepare_outputs, prepare_sources, remove_dead_temporaries, remove_staging, Prepared,
};
use shared::Shared;
use sink::build_sink;
use source::{build_source, FlowControl};

/// Several processes in timely's cluster mode.
#[derive(Clone, Debug)]
pub struct ClusterConfig {
    /// This process's index, `0..addresses.len()`.
    pub process: usize,
    /// `host:port` of every process, in process order (the hostfile's lines).
    pub addresses: Vec<String>,
    /// How long to wait for every peer to connect at start-up before failing (default 60 s).
    pub peer_timeout: Duration,
    /// The secret every process must know (`--cluster-token`); required when an address is
    /// not on loopback (see [`ClusterConfig::check_token`]).
    pub token: Option<String>,
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
            token: None,
        })
    }

    /// Refuses a cluster whose processes listen beyond loopback without a token: anyone who
    /// reaches the port could otherwise join the run and feed it data.
    pub fn check_token(&self) -> Result<()> {
        let off_loopback: Vec<&String> = self.addresses.iter().filter(|a| !is_loopback_address(a)).collect();
        if !off_loopback.is_empty() && self.token.as_deref().is_none_or(str::is_empty) {
            return Err(EngineError::Runtime(format!(
                "the hostfile lists addresses beyond loopback ({}): give every process the same secret with --cluster-token (or NEUROSTREAM_CLUSTER_TOKEN)",
                off_loopback.iter().map(|a| a.as_str()).collect::<Vec<_>>().join(", ")
            )));
        }
        Ok(())
    }
}

/// Whether `host:port` names this machine's loopback (`127.x`, `::1`, `localhost`).
fn is_loopback_address(address: &str) -> bool {
    let host = address.rsplit_once(':').map_or(address, |(h, _)| h);
    let host = host.trim_start_matches('[').trim_end_matches(']');
    host.eq_ignore_ascii_case("localhost") || host.parse::<std::net::IpAddr>().is_ok_and(|ip| ip.is_loopback())
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
    /// Set it to stop the run early (Ctrl-C in an embedding program). Without checkpoints the
    /// sources end where they are and everything read is processed and written, so outputs are
    /// complete; with checkpoints the run stops as a failure does, its uncommitted output is
    /// removed and `resume` continues it from the last checkpoint.
    pub stop: Option<Arc<std::sync::atomic::AtomicBool>>,
    /// Sees every batch each source and operator emits, by reference, on the worker that
    /// emits it (the live view): it must be quick and must not block. In a multi-process run,
    /// process 0's observer also receives every other process's picture
    /// ([`BatchObserver::import_picture`]).
    pub observer: Option<Arc<dyn BatchObserver>>,
    /// In a multi-process run, makes the observer of a process other than 0 when process 0
    /// has an observer (it learns this when the processes connect): that observer watches
    /// this process's batches, and its [`BatchObserver::export_picture`] goes to process 0
    /// every [`PICTURE_PERIOD`] and once more when this process's part of the run ends.
    /// Not called (and nothing counted for it) when `observer` is set or process 0 has none.
    pub follower_observer: Option<ObserverFactory>,
}

/// Makes an observer from the run's live counters (see [`RunOptions::follower_observer`]):
/// `metrics` when given, else counters the run creates for it.
#[derive(Clone)]
pub struct ObserverFactory(pub Arc<dyn Fn(Arc<crate::metrics::Metrics>) -> Arc<dyn BatchObserver> + Send + Sync>);

impl std::fmt::Debug for ObserverFactory {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ObserverFactory")
    }
}

/// How often the processes of a watched multi-process run send process 0 their picture.
pub const PICTURE_PERIOD: Duration = Duration::from_secs(1);

/// Watches the batches a run's sources and operators emit (see [`RunOptions::observer`]).
pub trait BatchObserver: Send + Sync {
    /// One batch emitted by `node` (a label such as `operators.band`), or the end of one of its
    /// streams ([`crate::StreamEnd`]: forget what was kept for it).
    fn observe(&self, node: &str, batch: &crate::frame::Batch);

    /// What this process has seen so far, serialized, for process 0's observer; `None` when
    /// there is nothing to send (the default).
    fn export_picture(&self) -> Option<Vec<u8>> {
        None
    }

    /// Process 0: the latest picture of process `process` (from its
    /// [`export_picture`](BatchObserver::export_picture)), which replaces the one before.
    /// An error is logged and the picture ignored; the run goes on.
    fn import_picture(&self, process: usize, picture: &[u8]) -> std::result::Result<(), String> {
        let _ = (process, picture);
        Ok(())
    }
}

impl std::fmt::Debug for dyn BatchObserver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("BatchObserver")
    }
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
    /// Sinks: arrival-to-written latency of the dense frames that carried an arrival stamp.
    pub latencies: Latencies,
    /// Rows received.
    pub rows_in: u64,
    /// Rows emitted.
    pub rows_out: u64,
    /// Payload bytes received.
    pub bytes_in: u64,
    /// Time spent in the node's own code.
    pub busy: Duration,
    /// `busy` per worker (global worker index) of this process: an idle worker beside a busy
    /// one shows where a pipeline does not spread.
    pub busy_by_worker: BTreeMap<usize, Duration>,
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
    /// GPU time per kernel on the devices the run used, by `device: kernel`: (dispatches,
    /// seconds in all, bucket bound of the 99th percentile in seconds). Empty without a GPU or
    /// when the adapter has no timestamp queries.
    pub gpu_kernels: BTreeMap<String, (u64, f64, f64)>,
    /// Bytes moved between the host and each GPU the run used, by device name: (uploaded,
    /// read back). Chains of GPU operators that keep their rows on the device move less.
    pub gpu_bytes: BTreeMap<String, (u64, u64)>,
    /// Wall time of the run.
    pub elapsed: Duration,
    /// Workers in this process and in total.
    pub workers: (usize, usize),
    /// True when the run was stopped early through [`RunOptions::stop`].
    pub stopped: bool,
}

/// The operators whose output may stay on their GPU ([`crate::Frame::device`]): every consumer
/// is an operator that [takes device rows](Operator::takes_device_rows) on the same device, and
/// none is reached through an exchange that may cross processes (a ByStream consumer in a
/// cluster) or watched by an observer (the live view reads values).
fn device_resident_outputs(
    pipeline: &CompiledPipeline,
    devices: &HashMap<String, ComputeDevice>,
    cluster: bool,
    observed: bool,
) -> std::collections::HashSet<String> {
    let gpu_of = |name: &str| match devices.get(name) {
        Some(ComputeDevice::Gpu(ctx)) => Some(Arc::as_ptr(ctx)),
        _ => None,
    };
    let mut resident = std::collections::HashSet::new();
    if observed {
        return resident;
    }
    for node in &pipeline.nodes {
        let (Built::Operator(_), Some(gpu)) = (&node.built, gpu_of(&node.spec.name)) else {
            continue;
        };
        let mut consumers = pipeline
            .nodes
            .iter()
            .filter(|c| c.spec.input.as_deref() == Some(node.spec.name.as_str()))
            .peekable();
        let keep = consumers.peek().is_some()
            && consumers.all(|c| match &c.built {
                Built::Operator(op) => {
                    op.takes_device_rows()
                        && gpu_of(&c.spec.name) == Some(gpu)
                        && !(cluster && op.partitioning() == Partitioning::ByStream)
                }
                _ => false,
            });
        if keep {
            tracing::debug!("`{}` leaves its rows on the GPU for its consumers", node.spec.name);
            resident.insert(node.spec.name.clone());
        }
    }
    resident
}

/// How a per-worker sink's writers get their rows.
#[derive(Clone, Copy, PartialEq, Eq)]
enum SinkRouting {
    /// Each worker writes its own rows.
    Local,
    /// Signals: each stream's rows go to one writer, so that every recording's samples are
    /// written in order to one writer's files (parts of other writers would interleave them).
    ByStream,
    /// Rows gathered by stream upstream (a ByStream operator) are dealt over every worker (of
    /// every process): one writer would do all the encoding while the others idle.
    Spread,
}

fn sink_routing(pipeline: &CompiledPipeline, node: &crate::spec::NodeSpec) -> SinkRouting {
    let mut input = node.input.as_deref();
    let signals = input
        .and_then(|name| pipeline.nodes.iter().find(|n| n.spec.name == name))
        .is_some_and(|n| match &n.built {
            Built::Source(s) => s.schema().is_signal(),
            Built::Operator(op) => op.output_schema().is_signal(),
            Built::Sink(_) => false,
        });
    if signals {
        return SinkRouting::ByStream;
    }
    while let Some(name) = input {
        let Some(up) = pipeline
            .nodes
            .iter()
            .find(|n| n.spec.name == name && !matches!(n.built, Built::Sink(_)))
        else {
            return SinkRouting::Local;
        };
        if let Built::Operator(op) = &up.built {
            if op.partitioning() == Partitioning::ByStream {
                return SinkRouting::Spread;
            }
        }
        input = up.spec.input.as_deref();
    }
    SinkRouting::Local
}

/// Where the ByStream exchanges send each stream: the workers sources placed their streams on
/// ([`crate::Source::stream_placement`]), else a hash of the name.
#[derive(Clone, Default)]
struct StreamRouting {
    placed: HashMap<Arc<str>, usize>,
}

impl StreamRouting {
    fn new(pipeline: &CompiledPipeline, peers: usize) -> StreamRouting {
        let mut placed = HashMap::new();
        for node in &pipeline.nodes {
            if let Built::Source(src) = &node.built {
                placed.extend(src.stream_placement(peers).into_iter().filter(|&(_, w)| w < peers));
            }
        }
        StreamRouting { placed }
    }

    /// The exchange key of `stream` (timely sends key `k` to worker `k % peers`).
    fn key(&self, stream: &str) -> u64 {
        self.placed.get(stream).map_or_else(|| stream_hash(stream), |&w| w as u64)
    }
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
        // A `device` key on a node that does not compute is a compile error (`spec.rs`).
        if let Built::Operator(op) = &node.built {
            if !op.computes() {
                report
                    .devices
                    .insert(node.spec.qualified_name(), "host (no device kernels)".into());
                node_devices.insert(node.spec.name.clone(), ComputeDevice::Cpu);
                continue;
            }
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
    let mut gpus: Vec<Arc<crate::device::GpuContext>> = Vec::new();
    for device in node_devices.values() {
        if let ComputeDevice::Gpu(ctx) = device {
            if !gpus.iter().any(|g| Arc::ptr_eq(g, ctx)) {
                gpus.push(ctx.clone());
            }
        }
    }
    let (checkpoint, restored) = match &options.checkpoint {
        None => (None, None),
        Some(o) => match prepare_checkpoints(&pipeline, o, &options, workers)? {
            Prepared::Complete => {
                // Process 0 removes the shared staging; two processes removing the same
                // directories would race.
                if options.cluster.as_ref().is_none_or(|c| c.process == 0) {
                    remove_staging(&pipeline)?;
                }
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
    let process = options.cluster.as_ref().map_or(0, |c| c.process);
    prepare_outputs(
        &pipeline,
        restored.is_some(),
        process * workers..(process + 1) * workers,
        workers * processes,
    )?;
    prepare_sources(&pipeline, process * workers..(process + 1) * workers, workers * processes);
    if let Some(r) = &restored {
        tracing::info!(
            "resuming from checkpoint {} in {}",
            r.id,
            options.checkpoint.as_ref().unwrap().dir.display()
        );
    }
    let ((builders, communication_guard), leader_watches) = match &options.cluster {
        Some(c) => cluster_builders(
            c,
            &pipeline,
            workers,
            options.checkpoint.as_ref().map(|_| restored.as_ref().map_or(0, |r| r.id)),
            options.observer.is_some(),
        )?,
        None if workers == 1 => (
            timely::CommunicationConfig::Thread
                .try_build()
                .map_err(EngineError::Runtime)?,
            false,
        ),
        None => (
            timely::CommunicationConfig::Process(workers)
                .try_build()
                .map_err(EngineError::Runtime)?,
            false,
        ),
    };
    // Process 0 gathers every process's picture when it watches the run.
    let gather_pictures = processes > 1 && leader_watches;
    let mut metrics = options.metrics.clone();
    let observer = match (&options.observer, &options.cluster, &options.follower_observer) {
        (Some(o), _, _) => Some(o.clone()),
        (None, Some(c), Some(make)) if c.process > 0 && gather_pictures => {
            let m = metrics.get_or_insert_with(crate::metrics::Metrics::new).clone();
            Some((make.0)(m))
        }
        _ => None,
    };
    if let Some(m) = &metrics {
        for (node, device) in &report.devices {
            m.set_device(node, device);
        }
        gpus.iter().for_each(|g| m.add_gpu(g));
    }
    let shared = Arc::new(Shared {
        progress: options.progress.clone(),
        metrics,
        checkpoint: checkpoint.clone(),
        restored: restored.map(Arc::new),
        stop: options.stop.clone(),
        observer,
        ..Default::default()
    });
    if let Some(o) = &options.checkpoint {
        // What a resume can promise for a stream that cannot be read again.
        let mut lines = shared.sink_lines.lock().unwrap();
        for node in &pipeline.nodes {
            if let Built::Source(src) = &node.built {
                if !src.replayable() {
                    lines.push(format!(
                        "checkpoint: [{}] is live: every row it read is journaled in {} and processed exactly once across a crash; \
                         rows sent to it while the run was down are not read (at-least-once needs senders that send them again)",
                        node.spec.qualified_name(),
                        o.dir.join(crate::checkpoint::JOURNAL_DIR).display()
                    ));
                }
            }
        }
    }
    let pipeline = Arc::new(pipeline);
    let pipeline_for_cleanup = pipeline.clone();
    let resident = device_resident_outputs(&pipeline, &node_devices, options.cluster.is_some(), shared.observer.is_some());
    let node_devices = Arc::new(node_devices);
    let worker_shared = shared.clone();
    let control = checkpoint.as_ref().is_some_and(|c| c.role() != Role::Single);
    let sink_count = pipeline.nodes.iter().filter(|n| matches!(n.built, Built::Sink(_))).count();
    let checkpointed = checkpoint.is_some();
    let _peer_watch = options.cluster.as_ref().map(|c| {
        let pipeline = pipeline_for_cleanup.clone();
        crate::cluster::watch_peers(
            c.addresses.clone(),
            Box::new(move || {
                // With checkpoints, staged files may belong to a checkpoint the lost peer has
                // already written: `--resume` commits them and removes the rest.
                if checkpointed {
                    return;
                }
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
            let routing = Arc::new(StreamRouting::new(&pipeline, pos.peers));
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
                            let device = OperatorDevice {
                                device: node_devices[name].clone(),
                                keep_output: resident.contains(name),
                            };
                            let s = match op.partitioning() {
                                Partitioning::Local => {
                                    build_operator(input, Pipeline, &label, op.clone(), device, pos, shared.clone())
                                }
                                Partitioning::ByStream => build_operator(
                                    input,
                                    Exchange::new({
                                        let routing = routing.clone();
                                        move |b: &Batch| routing.key(b.stream())
                                    }),
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
                            (Placement::PerWorker, input) => {
                                let device = node_devices.get(name).cloned().unwrap_or(ComputeDevice::Cpu);
                                match sink_routing(&pipeline, &node.spec) {
                                    SinkRouting::Local => {
                                        build_sink(input, Pipeline, &label, sink.clone(), device, pos, shared.clone())
                                    }
                                    SinkRouting::ByStream => build_sink(
                                        input,
                                        Exchange::new({
                                            let routing = routing.clone();
                                            move |b: &Batch| routing.key(b.stream())
                                        }),
                                        &label,
                                        sink.clone(),
                                        device,
                                        pos,
                                        shared.clone(),
                                    ),
                                    SinkRouting::Spread => {
                                        let mut next = pos.index;
                                        let deal = Exchange::new(move |_: &Batch| {
                                            next += 1;
                                            next as u64
                                        });
                                        build_sink(input, deal, &label, sink.clone(), device, pos, shared.clone())
                                    }
                                }
                            }
                        },
                        _ => unreachable!("compile orders inputs before consumers"),
                    }
                }
            });
            if control {
                let shared = worker_shared.clone();
                worker.dataflow::<u64, _, _>(|scope| control::build_control(scope, pos, workers, sink_count, shared));
            }
            if gather_pictures {
                let shared = worker_shared.clone();
                worker.dataflow::<u64, _, _>(|scope| pictures::build_pictures(scope, pos, workers, sink_count, shared));
            }
            while worker.step_or_park(Some(Duration::from_millis(20))) {}
        },
    )
    .map_err(EngineError::Runtime)?;
    for r in guards.join() {
        if let Err(panic) = r {
            shared.fail(format!("a worker panicked: {panic}"));
        }
    }
    if let Some(c) = &checkpoint {
        if let Err(e) = c.drain() {
            shared.fail(format!("checkpoint: {e}"));
        }
    }
    report.elapsed = started.elapsed();
    report.nodes = shared.nodes.lock().unwrap().clone();
    report.dropped_invalid = shared.dropped.lock().unwrap().clone();
    report.overload = shared.overload.lock().unwrap().clone();
    report.sink_lines = shared.sink_lines.lock().unwrap().clone();
    report.stopped = shared.stop_requested();
    // The run's own devices (the manager above opened them), so their times are this run's.
    for gpu in &gpus {
        let moved = report.gpu_bytes.entry(gpu.info.name.clone()).or_default();
        let (up, down) = gpu.bytes_moved();
        (moved.0, moved.1) = (moved.0 + up, moved.1 + down);
        for (kernel, h) in gpu.kernel_times() {
            let p99 = h.quantile_upper_s(0.99).unwrap_or(0.0);
            report
                .gpu_kernels
                .insert(format!("{}: {kernel}", gpu.info.name), (h.count(), h.sum_s(), p99));
        }
    }
    let errors = shared.errors.lock().unwrap().clone();
    if let (Some(c), Some(o)) = (&checkpoint, &options.checkpoint) {
        // The leader marks the run complete once every process's outputs are final (the
        // control dataflow ends only then); a follower leaves that, and the staging, to it.
        if errors.is_empty() && !matches!(c.role(), Role::Follower { .. }) {
            c.mark_complete()?;
            remove_staging(&pipeline_for_cleanup)?;
        }
        let written = match c.role() {
            Role::Follower { .. } => "taken (process 0 writes them) in",
            _ => "written to",
        };
        report.sink_lines.push(format!(
            "checkpoint: {} checkpoints {written} {}{}",
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
/// Also says whether process 0 watches the run (this process's `watched`, or what process 0
/// said when it connected).
fn cluster_builders(
    c: &ClusterConfig,
    pipeline: &CompiledPipeline,
    workers: usize,
    resumes_from: Option<u64>,
    watched: bool,
) -> Result<(Communication, bool)> {
    use timely::communication::allocator::zero_copy::initialize::initialize_networking_from_sockets;
    let nodes = serde_json::to_vec(&node_fingerprints(pipeline)).expect("fingerprints serialize");
    let hello = crate::cluster::Hello {
        version: env!("CARGO_PKG_VERSION").to_string(),
        pipeline: format!("{} {:08x} {}", pipeline.settings.name, crc32fast::hash(&nodes), nodes.len()),
        workers,
        processes: c.addresses.len(),
        process: c.process,
        resumes_from,
        watched,
    };
    c.check_token()?;
    let connected = crate::cluster::connect(&c.addresses, &hello, c.token.as_deref(), c.peer_timeout)?;
    let leader_watches = match &connected.peers[0] {
        Some(leader) => leader.watched,
        None => watched,
    };
    let sockets = connected.sockets;
    let hooks = timely::communication::Hooks::default();
    let allocators =
        timely::communication::allocator::ProcessBuilder::new_typed_vector(workers, hooks.refill.clone(), hooks.spill.clone());
    let communication = initialize_networking_from_sockets(allocators, sockets, c.process, workers, hooks)
        .map(|(builders, guard)| {
            let builders = builders
                .into_iter()
                .map(timely::communication::AllocatorBuilder::Tcp)
                .collect();
            (builders, Box::new(guard) as Box<dyn std::any::Any + Send>)
        })
        .map_err(|e| EngineError::Runtime(format!("cluster: cannot start timely's networking: {e}")))?;
    Ok((communication, leader_watches))
}
