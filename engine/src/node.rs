//! The plug-in points of the engine: sources, operators and sinks, and the [`Registry`] of their kinds.
//!
//! Sources, operators and sinks never see timely: they implement these traits and the runtime
//! wires them into the dataflow (capabilities, exchange, frontier-ordered delivery).

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;

use crate::checkpoint::{Checkpointing, Delivery, SinkCommit};
use crate::device::ComputeDevice;
use crate::error::Result;
use crate::frame::Batch;
use crate::reference::{KeyDoc, KindDoc};
use crate::schema::Schema;
use crate::settings::PipelineSettings;
use crate::spec::NodeConfig;

/// The kind-specific keys of a node's TOML table.
pub type ConfigTable = toml::Table;

/// Where a worker sits among all workers of a run (all processes together).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct WorkerPos {
    /// Global worker index, `0..peers`.
    pub index: usize,
    /// Total number of workers across all processes.
    pub peers: usize,
}

/// What a kind's `build` gets to know about the node it builds.
pub struct NodeContext<'a> {
    /// Location label used in messages, e.g. `[operators.norm]`.
    pub label: &'a str,
    /// The node's name.
    pub name: &'a str,
    /// Directory relative paths in the config are resolved against (the pipeline file's directory).
    pub base_dir: &'a Path,
    /// Pipeline-wide settings.
    pub settings: &'a PipelineSettings,
    /// Files and directories the node loaded while building (see [`NodeContext::input_file`]).
    pub loaded: std::cell::RefCell<Vec<std::path::PathBuf>>,
}

impl NodeContext<'_> {
    /// Resolves a path from the config against the pipeline file's directory.
    pub fn resolve(&self, path: &str) -> std::path::PathBuf {
        let p = Path::new(path);
        if p.is_absolute() {
            p.to_path_buf()
        } else {
            self.base_dir.join(p)
        }
    }

    /// Resolves a path from the config naming a file or directory the node *reads* (weights,
    /// statistics, models, reference tables) and records it, so a resumed run refuses when it
    /// changed since the checkpoint. Output paths use [`NodeContext::resolve`] instead.
    pub fn input_file(&self, path: &str) -> std::path::PathBuf {
        let resolved = self.resolve(path);
        self.record_input(&resolved);
        resolved
    }

    /// Records a file or directory the node reads that does not come from its config (a default
    /// model location, say); see [`NodeContext::input_file`].
    pub fn record_input(&self, path: &Path) {
        self.loaded.borrow_mut().push(path.to_path_buf());
    }
}

/// A kind of source (`parquet`, `synthetic_eeg`, ...): builds sources from its typed config.
/// Its name is its config's [`NodeConfig::KIND`] and its keys are that type's fields.
pub trait SourceKind: Send + Sync + 'static {
    /// The node's kind-specific keys.
    type Config: NodeConfig;
    /// One line saying what it reads.
    fn describe(&self) -> &'static str;
    /// Checks `config`, opening files to read schemas.
    fn build(&self, config: Self::Config, ctx: &NodeContext) -> Result<Arc<dyn Source>>;
}

/// A configured source, shared by all workers of a process.
pub trait Source: Send + Sync {
    /// Schema of the frames it produces, known before the run.
    fn schema(&self) -> Arc<Schema>;
    /// Total rows across all workers, when known (for progress bars).
    fn total_rows(&self) -> Option<u64>;
    /// Opens this worker's share of the data.
    fn open(&self, worker: WorkerPos) -> Result<Box<dyn SourceReader>>;
    /// For a source that reads each of its streams whole on one worker: the worker (an index
    /// among `peers`, the workers of every process) each stream is read on, where the ByStream
    /// operators then hold it, so its rows never move. Streams not listed go to the worker
    /// their name hashes to. Every process computes the same list.
    fn stream_placement(&self, _peers: usize) -> Vec<(Arc<str>, usize)> {
        Vec::new()
    }
    /// Whether reopening it yields the same batches in the same order (files, seeded
    /// generators), so a checkpointed run can resume it by skipping what it had emitted.
    fn replayable(&self) -> bool {
        false
    }
    /// The files it reads, so a resumed run can tell when they changed since the checkpoint.
    fn input_files(&self) -> Vec<std::path::PathBuf> {
        Vec::new()
    }
    /// Bytes of input held in memory since it was built (a text recording's parsed samples,
    /// which building it again would parse again); 0 for a source that reads as it goes.
    fn held_bytes(&self) -> u64 {
        0
    }
    /// Told once before the run which `workers` (indices among `peers`, the workers of every
    /// process) this process runs, so it can let go of what only other processes read.
    fn runs_on(&self, _workers: std::ops::Range<usize>, _peers: usize) {}
}

/// Wakes a source's worker from another thread: live sources call it when a batch becomes ready.
pub type SourceWaker = Arc<dyn Fn() + Send + Sync>;

/// One worker's reader of a source.
pub trait SourceReader {
    /// The next batch with its event time (row ordinal or first sample index); `None` when done.
    /// Times must not decrease and must be at least the last [`SourceReader::next_time`].
    fn next_batch(&mut self) -> Result<Option<(u64, Batch)>>;
    /// A lower bound on the event time of every batch still to come; `None` when exhausted.
    fn next_time(&self) -> Option<u64>;
    /// Live sources: false while no batch is ready yet (the runtime then polls again shortly
    /// instead of blocking its worker in [`SourceReader::next_batch`]). Files are always ready.
    fn ready(&mut self) -> bool {
        true
    }
    /// Live sources that learn of new data from another thread: keep `waker` and call it when a
    /// batch becomes ready (or the stream ends), and return true; the runtime then waits for
    /// that call instead of polling every millisecond. The default polls.
    fn set_waker(&mut self, _waker: SourceWaker) -> bool {
        false
    }
    /// Where the reader is, for error messages (e.g. `a.parquet, row group 3`).
    fn location(&self) -> String {
        String::new()
    }
    /// Makes everything it has returned durable (a journal fsyncs); called before a checkpoint
    /// records its position. Most readers keep nothing to sync.
    fn sync(&mut self) -> Result<()> {
        Ok(())
    }
    /// Live readers behind a journal (checkpointed runs): called once, before the first live
    /// read, with the run's number in its checkpoint directory (0 for the first start; every
    /// start counts, so names made with it are never reused by a later run) and the streams
    /// that had rows and no end when the journal stopped. The previous process's connections
    /// did not survive it, so a reader whose streams end with their connection ends these
    /// (`arrow_tcp`). The default ignores it.
    fn resume(&mut self, _run: u64, _open_streams: Vec<Arc<str>>) {}
    /// Skips the first `batches` batches (resuming from a checkpoint) and returns the rows in
    /// them. The default reads and discards them; readers that can seek may do better.
    fn skip_batches(&mut self, batches: u64) -> Result<u64> {
        let mut rows = 0;
        for i in 0..batches {
            match self.next_batch()? {
                Some((_, b)) => rows += b.rows() as u64,
                None => {
                    return Err(crate::EngineError::Checkpoint(format!(
                        "the source ended after {i} batches, but the checkpoint says it had emitted {batches}: its data changed since"
                    )))
                }
            }
        }
        Ok(rows)
    }
}

/// How the runtime must route and order an operator's input.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Partitioning {
    /// Stateless per batch: batches are processed where they are, in arrival order.
    Local,
    /// State per stream: all batches of a stream go to one worker and arrive in event-time order.
    ByStream,
}

/// A kind of operator (`normalize`, ...); named by its config's [`NodeConfig::KIND`].
pub trait OperatorKind: Send + Sync + 'static {
    /// The node's kind-specific keys.
    type Config: NodeConfig;
    /// One line saying what it computes.
    fn describe(&self) -> &'static str;
    /// Checks `config` against the input schema (shape mismatches are errors here).
    fn build(&self, config: Self::Config, ctx: &NodeContext, input: &Arc<Schema>) -> Result<Arc<dyn Operator>>;
}

/// A configured operator, shared by all workers of a process.
pub trait Operator: Send + Sync {
    /// Schema of the output frames.
    fn output_schema(&self) -> Arc<Schema>;
    /// Routing and ordering of input batches.
    fn partitioning(&self) -> Partitioning;
    /// True when instances may hold rows back and emit them later (at [`OperatorInstance::finish`]);
    /// the runtime then keeps a capability for the latest processed time.
    fn holds_back(&self) -> bool {
        false
    }
    /// True when its instances on a GPU take dense frames whose values live on that GPU
    /// ([`crate::Frame::device`]), or sparse frames that say where their entries lie there
    /// ([`crate::SparseFrame::device`]), and bind them directly. The runtime then lets a GPU
    /// operator feeding only such operators on the same device leave its output there; every
    /// other consumer gets host values. Instances must still accept host frames.
    fn takes_device_rows(&self) -> bool {
        false
    }
    /// True when every input batch becomes exactly one output batch, in input order, though
    /// perhaps later (an operator that holds rows back to batch them): the runtime then gives
    /// each output at its input's time, so a consumer that orders by time (a ByStream operator
    /// fed by several workers) sees the stream's order. Outputs held across a checkpoint's cut
    /// (saved in the snapshot) leave after the cut.
    fn one_output_per_input(&self) -> bool {
        false
    }
    /// Whether it has device kernels and so takes a `device` (default). Host-only operators
    /// (bookkeeping over a few values per row) run on the host whatever the pipeline's device;
    /// a `device` key on one is a configuration error, so a report never names a GPU that did
    /// no work.
    fn computes(&self) -> bool {
        true
    }
    /// Creates one worker's instance computing on `device`.
    fn instantiate(&self, device: &ComputeDevice) -> Result<Box<dyn OperatorInstance>>;
    /// How instances take part in checkpoints (default: they cannot, and a checkpointed run
    /// refuses the pipeline).
    fn checkpointing(&self) -> Checkpointing {
        Checkpointing::Unsupported
    }
}

/// One worker's running operator.
pub trait OperatorInstance {
    /// Processes one input batch, pushing any outputs to `out`.
    fn process(&mut self, batch: Batch, out: &mut Vec<Batch>) -> Result<()>;
    /// Called once when the input has ended: emit anything still held back.
    fn finish(&mut self, out: &mut Vec<Batch>) -> Result<()> {
        let _ = out;
        Ok(())
    }
    /// Called when `stream` has ended for good ([`crate::StreamEnd`]), after its last batch:
    /// emit what [`OperatorInstance::finish`] would emit for it and drop its state, so a run
    /// whose streams come and go holds state for the open ones only. Operators without state
    /// per stream keep the default, which does nothing.
    fn end_stream(&mut self, stream: &Arc<str>, out: &mut Vec<Batch>) -> Result<()> {
        let _ = (stream, out);
        Ok(())
    }
    /// Called after every activation of an operator that [holds back](Operator::holds_back) rows,
    /// whether or not input arrived: emit what is due (e.g. a batch whose latency budget ran
    /// out) and return when to be called again (`None`: only when input arrives).
    fn poll(&mut self, out: &mut Vec<Batch>) -> Result<Option<std::time::Duration>> {
        let _ = out;
        Ok(None)
    }
    /// Called by the runtime before the first batch when every consumer of this operator takes
    /// rows on its GPU ([`Operator::takes_device_rows`]): from then on the instance may leave its
    /// dense output there ([`crate::Frame::device`]). Without this call, output is on the host,
    /// as anyone driving an instance directly expects.
    fn keep_output_on_device(&mut self) {}
    /// Called by the runtime before the first batch for operators that [hold
    /// back](Operator::holds_back) rows: the instance is polled from then on, so it may return a
    /// batch's output at a later call (`process`, `poll` or `finish`) and overlap work, e.g. let
    /// a GPU compute one batch while the worker prepares the next. Without this call an instance
    /// returns each batch's output as soon as it can, as anyone driving it directly expects.
    fn defer_output(&mut self) {}
    /// Called when a checkpoint reaches the operator's cut, before [`OperatorInstance::snapshot`],
    /// for operators with [one output per input](Operator::one_output_per_input): emit every
    /// row held back now, so it is counted before the cut and leaves at its input's time, and
    /// the snapshot holds none.
    fn release_held(&mut self, _out: &mut Vec<Batch>) -> Result<()> {
        Ok(())
    }
    /// Encodes the instance's state for a checkpoint (operators with [`Checkpointing::Snapshot`]).
    fn snapshot(&self) -> Result<Vec<u8>> {
        Err(crate::EngineError::Checkpoint("this operator cannot save its state".into()))
    }
    /// Restores state saved by [`OperatorInstance::snapshot`] into a fresh instance.
    fn restore(&mut self, state: &[u8]) -> Result<()> {
        let _ = state;
        Err(crate::EngineError::Checkpoint("this operator cannot restore state".into()))
    }
}

/// Whether a sink writes one output (all data routed to worker 0) or one part per worker.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Placement {
    /// One writer on worker 0 receives every batch, in event-time order.
    Single,
    /// Each worker writes its own part, in event-time order.
    PerWorker,
}

/// A kind of sink (`parquet`, `console`, ...).
pub trait SinkKind: Send + Sync + 'static {
    /// The node's kind-specific keys.
    type Config: NodeConfig;
    /// One line saying what it writes.
    fn describe(&self) -> &'static str;
    /// Checks `config` against the input schema.
    fn build(&self, config: Self::Config, ctx: &NodeContext, input: &Arc<Schema>) -> Result<Arc<dyn Sink>>;
}

/// A configured sink, shared by all workers of a process.
pub trait Sink: Send + Sync {
    /// Single writer or one per worker.
    fn placement(&self) -> Placement;
    /// Opens the writer for `worker` (for [`Placement::Single`], only worker 0 opens one).
    fn open(&self, worker: WorkerPos) -> Result<Box<dyn SinkWriter>>;
    /// Whether the sink computes (trains a model, say) and so takes a `device` like operators.
    fn computes(&self) -> bool {
        false
    }
    /// Opens the writer for `worker` computing on `device`; sinks that do not compute ignore it.
    fn open_on(&self, worker: WorkerPos, device: &ComputeDevice) -> Result<Box<dyn SinkWriter>> {
        let _ = device;
        self.open(worker)
    }
    /// What it guarantees when a checkpointed run resumes (default: at-least-once, for live
    /// consumers that simply receive rows).
    fn delivery(&self) -> Delivery {
        Delivery::AtLeastOnce
    }
    /// Removes what a checkpointed run staged (segment files), called once the run is recorded
    /// as complete: until then a crash during the final writes can still be resumed from them.
    fn remove_staging(&self) -> Result<()> {
        Ok(())
    }
    /// Removes the temporary files of `owners` among this sink's outputs: those killed runs
    /// left (when a run starts), or this process's own (when it must stop at once). Returns them.
    fn remove_temporaries(&self, owners: crate::process::TempOwners) -> Result<Vec<std::path::PathBuf>> {
        let _ = owners;
        Ok(Vec::new())
    }
    /// Called once per process before any writer opens: a fresh run (`resume` false) removes
    /// what an earlier run left of the output of `workers` (this process's workers, of `peers`
    /// in all); a resumed run keeps it.
    fn prepare_output(&self, resume: bool, workers: std::ops::Range<usize>, peers: usize) -> Result<()> {
        let _ = (resume, workers, peers);
        Ok(())
    }
}

/// One worker's writer. Batches arrive in event-time order.
pub trait SinkWriter {
    /// Writes one batch. The runtime never hands a writer the end of a stream
    /// ([`crate::StreamEnd`]) here but calls [`SinkWriter::end_stream`]; writers driven by hand
    /// may ignore it.
    fn write(&mut self, batch: &Batch) -> Result<()>;
    /// The stream `stream` ended: no more of its rows come. Writers that keep something per
    /// stream report it and let it go here, so a long run whose clients come and go stays
    /// bounded. Called in order with the writes. The default does nothing.
    fn end_stream(&mut self, _stream: &str) -> Result<()> {
        Ok(())
    }
    /// Writes one batch the writer may take apart: what the runtime calls. Writers that keep
    /// a batch's values (a live sink hands them to its subscribers) move them instead of
    /// copying; the default writes it by reference.
    fn write_owned(&mut self, batch: Batch) -> Result<()> {
        self.write(&batch)
    }
    /// Completes the output. `failure` is set when the run failed: the writer must still leave
    /// everything it accepted in a complete, readable state. Returns lines for the run summary.
    fn finish(self: Box<Self>, failure: Option<&str>) -> Result<Vec<String>>;
    /// Switches to checkpointed output before the first write: output becomes staged segments
    /// committed with each checkpoint. `resume` is the state of the checkpoint resumed from.
    fn start_checkpointed(&mut self, resume: Option<&[u8]>) -> Result<()> {
        let _ = resume;
        Ok(())
    }
    /// Makes everything written since the last checkpoint durable in staged files and returns
    /// them with the writer's state. Sinks without output files return nothing.
    fn precommit(&mut self) -> Result<SinkCommit> {
        Ok(SinkCommit::default())
    }
}

/// A registered kind of any section, built from a TOML table: what the [`Registry`] holds.
/// Implemented for every [`SourceKind`], [`OperatorKind`] and [`SinkKind`].
pub trait RegisteredKind: Send + Sync {
    /// The `kind = "..."` name ([`NodeConfig::KIND`]).
    fn name(&self) -> &'static str;
    /// One line saying what it does.
    fn summary(&self) -> &'static str;
    /// Its keys, from its config type.
    fn keys(&self) -> Vec<KeyDoc>;
    /// Parses `config` into the kind's config type and drops it: reports unknown keys and
    /// wrong types without building (used for nodes whose input failed to build).
    fn check_keys(&self, config: ConfigTable, ctx: &NodeContext) -> Result<()>;
    /// Builds a source (sources only).
    fn build_source(&self, config: ConfigTable, ctx: &NodeContext) -> Result<Arc<dyn Source>> {
        let _ = config;
        Err(crate::EngineError::config(
            ctx.label,
            format!("`{}` is not a source kind", self.name()),
        ))
    }
    /// Builds an operator on `input` (operators only).
    fn build_operator(&self, config: ConfigTable, ctx: &NodeContext, input: &Arc<Schema>) -> Result<Arc<dyn Operator>> {
        let _ = (config, input);
        Err(crate::EngineError::config(
            ctx.label,
            format!("`{}` is not an operator kind", self.name()),
        ))
    }
    /// Builds a sink of `input` (sinks only).
    fn build_sink(&self, config: ConfigTable, ctx: &NodeContext, input: &Arc<Schema>) -> Result<Arc<dyn Sink>> {
        let _ = (config, input);
        Err(crate::EngineError::config(
            ctx.label,
            format!("`{}` is not a sink kind", self.name()),
        ))
    }
}

macro_rules! registered_kind_info {
    () => {
        fn name(&self) -> &'static str {
            K::Config::KIND
        }
        fn summary(&self) -> &'static str {
            self.0.describe()
        }
        fn keys(&self) -> Vec<KeyDoc> {
            crate::reference::keys_of::<K::Config>()
        }
        fn check_keys(&self, config: ConfigTable, ctx: &NodeContext) -> Result<()> {
            parse_config::<K::Config>(config, ctx).map(drop)
        }
    };
}

/// Adapters of typed kinds to [`RegisteredKind`], one per section.
struct SourceEntry<K>(K);
struct OperatorEntry<K>(K);
struct SinkEntry<K>(K);

impl<K: SourceKind> RegisteredKind for SourceEntry<K> {
    registered_kind_info!();
    fn build_source(&self, config: ConfigTable, ctx: &NodeContext) -> Result<Arc<dyn Source>> {
        self.0.build(parse_config(config, ctx)?, ctx)
    }
}

impl<K: OperatorKind> RegisteredKind for OperatorEntry<K> {
    registered_kind_info!();
    fn build_operator(&self, config: ConfigTable, ctx: &NodeContext, input: &Arc<Schema>) -> Result<Arc<dyn Operator>> {
        self.0.build(parse_config(config, ctx)?, ctx, input)
    }
}

impl<K: SinkKind> RegisteredKind for SinkEntry<K> {
    registered_kind_info!();
    fn build_sink(&self, config: ConfigTable, ctx: &NodeContext, input: &Arc<Schema>) -> Result<Arc<dyn Sink>> {
        self.0.build(parse_config(config, ctx)?, ctx, input)
    }
}

/// The kinds of sources, operators and sinks a pipeline may name.
#[derive(Default, Clone)]
pub struct Registry {
    sources: BTreeMap<&'static str, Arc<dyn RegisteredKind>>,
    operators: BTreeMap<&'static str, Arc<dyn RegisteredKind>>,
    sinks: BTreeMap<&'static str, Arc<dyn RegisteredKind>>,
    /// Kinds this build leaves out, with the cargo feature that brings each in.
    left_out: BTreeMap<&'static str, &'static str>,
}

impl Registry {
    /// An empty registry.
    pub fn new() -> Registry {
        Registry::default()
    }

    /// Adds a source kind.
    pub fn add_source<K: SourceKind>(&mut self, kind: K) -> &mut Self {
        self.sources.insert(K::Config::KIND, Arc::new(SourceEntry(kind)));
        self
    }

    /// Adds an operator kind.
    pub fn add_operator<K: OperatorKind>(&mut self, kind: K) -> &mut Self {
        self.operators.insert(K::Config::KIND, Arc::new(OperatorEntry(kind)));
        self
    }

    /// Adds a sink kind.
    pub fn add_sink<K: SinkKind>(&mut self, kind: K) -> &mut Self {
        self.sinks.insert(K::Config::KIND, Arc::new(SinkEntry(kind)));
        self
    }

    /// Records that `kind` exists but this build leaves it out (cargo feature `feature` off), so
    /// a pipeline naming it is told how to get it rather than that it does not exist.
    pub fn leave_out(&mut self, kind: &'static str, feature: &'static str) -> &mut Self {
        self.left_out.insert(kind, feature);
        self
    }

    /// The cargo feature that brings in `kind`, when this build leaves it out.
    pub fn left_out(&self, kind: &str) -> Option<&'static str> {
        self.left_out.get(kind).copied()
    }

    /// The source kind named `kind`.
    pub fn source(&self, kind: &str) -> Option<&Arc<dyn RegisteredKind>> {
        self.sources.get(kind)
    }

    /// The operator kind named `kind`.
    pub fn operator(&self, kind: &str) -> Option<&Arc<dyn RegisteredKind>> {
        self.operators.get(kind)
    }

    /// The sink kind named `kind`.
    pub fn sink(&self, kind: &str) -> Option<&Arc<dyn RegisteredKind>> {
        self.sinks.get(kind)
    }

    /// Names of the registered kinds: (sources, operators, sinks).
    pub fn kinds(&self) -> (Vec<&'static str>, Vec<&'static str>, Vec<&'static str>) {
        (
            self.sources.keys().copied().collect(),
            self.operators.keys().copied().collect(),
            self.sinks.keys().copied().collect(),
        )
    }

    /// Every registered kind with its keys, by section (sources, operators, sinks), each by name.
    pub fn reference(&self) -> Vec<KindDoc> {
        let section = |name: &'static str, kinds: &BTreeMap<&'static str, Arc<dyn RegisteredKind>>| {
            kinds
                .values()
                .map(|k| KindDoc {
                    section: name,
                    kind: k.name(),
                    summary: k.summary(),
                    keys: k.keys(),
                })
                .collect::<Vec<_>>()
        };
        let mut v = section("source", &self.sources);
        v.extend(section("operator", &self.operators));
        v.extend(section("sink", &self.sinks));
        v
    }
}

/// Deserializes a node's config table into its typed config. Errors name the offending key
/// (`key `channels`: invalid type: string "many", expected usize`).
pub fn parse_config<T: serde::de::DeserializeOwned>(config: ConfigTable, ctx: &NodeContext) -> Result<T> {
    let text = toml::to_string(&config).map_err(|e| crate::error::EngineError::config(ctx.label, e.to_string()))?;
    toml::from_str::<T>(&text).map_err(|e| {
        let msg = e.message().to_string();
        if let Some(expected) = expected_fields(&msg) {
            return unknown_keys(&config, &expected, ctx.label);
        }
        let key = e.span().and_then(|span| {
            let start = text[..span.start.min(text.len())].rfind('\n').map_or(0, |i| i + 1);
            let line = &text[start..];
            let key = line.split('=').next()?.trim().trim_matches('"');
            (!key.is_empty() && !key.starts_with('[') && line.contains('=')).then(|| key.to_string())
        });
        let msg = match key {
            Some(k) if !msg.contains(&format!("`{k}`")) => format!("key `{k}`: {msg}"),
            _ => msg,
        };
        crate::error::EngineError::config(ctx.label, msg)
    })
}

/// The field names serde lists in an unknown-field error (`unknown field `x`, expected one of
/// `a`, `b`` or `expected `a` or `b``); `None` for other errors.
fn expected_fields(message: &str) -> Option<Vec<String>> {
    let rest = message.strip_prefix("unknown field `")?;
    let (_, expected) = rest.split_once("`, expected ")?;
    Some(expected.split('`').skip(1).step_by(2).map(str::to_string).collect())
}

/// Every key of `config` that is not one of `expected`, each its own problem with a suggestion.
fn unknown_keys(config: &ConfigTable, expected: &[String], label: &str) -> crate::error::EngineError {
    let problems = unknown_key_messages(config, expected)
        .into_iter()
        .map(|m| format!("{label}: {m}"))
        .collect();
    crate::error::EngineError::Invalid(problems)
}

/// When `message` is serde's unknown-field error for `config`: one message for every key of
/// `config` that is not a field (serde stops at the first).
pub(crate) fn unknown_keys_of(config: &ConfigTable, message: &str) -> Option<Vec<String>> {
    Some(unknown_key_messages(config, &expected_fields(message)?))
}

fn unknown_key_messages(config: &ConfigTable, expected: &[String]) -> Vec<String> {
    let listed = expected.iter().map(|e| format!("`{e}`")).collect::<Vec<_>>().join(", ");
    config
        .keys()
        .filter(|k| !expected.contains(k))
        .map(|k| {
            let hint = crate::suggest::hint(k, expected.iter().map(String::as_str));
            format!("unknown field `{k}`{hint} (expected one of {listed})")
        })
        .collect()
}

/// Serde helper for config keys that take a list but accept a single value where that is
/// unambiguous (`cutoff = 0.5` for `cutoff = [0.5]`): `#[serde(deserialize_with = "one_or_many")]`.
pub fn one_or_many<'de, D, T>(deserializer: D) -> std::result::Result<Vec<T>, D::Error>
where
    D: serde::Deserializer<'de>,
    T: serde::Deserialize<'de>,
{
    #[derive(serde::Deserialize)]
    #[serde(untagged)]
    enum OneOrMany<T> {
        One(T),
        Many(Vec<T>),
    }
    Ok(match <OneOrMany<T> as serde::Deserialize>::deserialize(deserializer)? {
        OneOrMany::One(v) => vec![v],
        OneOrMany::Many(v) => v,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::spec::PipelineSpec;

    /// A kind the build leaves out is named with the feature that brings it in, not as unknown.
    #[test]
    fn a_kind_left_out_of_the_build_names_its_feature() {
        let mut registry = Registry::new();
        registry.leave_out("language_model", "language-models");
        let spec = PipelineSpec::from_toml_str(
            "[sources.lm]\nkind = \"language_model\"\n\n[sources.other]\nkind = \"nope\"\n",
            ".",
        )
        .unwrap();
        let err = spec.compile(&registry).err().expect("refused").to_string();
        assert!(
            err.contains("kind `language_model` is left out of this build; build with the cargo feature `language-models`"),
            "{err}"
        );
        assert!(err.contains("unknown source kind `nope`"), "{err}");
    }
}
