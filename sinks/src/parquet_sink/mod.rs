//! `parquet`: writes frames to Parquet in the layouts of `neurostream_engine::layout`.
//!
//! A `path` ending in `.parquet` is one file written by worker 0 (every batch is routed there,
//! in event-time order). Any other `path` is a directory holding one `part-NNNNN.parquet` per
//! worker that received rows (stale `part-*.parquet` files are removed when the run starts).
//!
//! Every file is written to a hidden temporary name beside its target, fsynced, and renamed
//! over it, so a reader never sees a half-written file. When the run fails, the rows accepted
//! so far are still committed as a complete file whose metadata says
//! `neurostream.status = incomplete: <error>`; when writing itself fails (a full disk), the
//! temporary file is removed and any previous file at the target stays as it was.
//!
//! In a checkpointed run (`neurostream run --checkpoint-dir`) each output is one file that
//! grows in a hidden directory beside it (`.<name>.parquet.segments/`): at every checkpoint its
//! rows so far are written out as row groups, and the footer of the row groups added since the
//! previous checkpoint is staged; the checkpoint fsyncs both off the pipeline's path and commits
//! the footer when it is durable. When the run completes the file is closed and becomes the
//! target (a hard link, renamed into place: nothing is copied), and the directory is removed; a
//! failed run leaves the target alone and keeps the directory for `--resume`. A resumed run
//! seals the rows the checkpoint committed into a complete part (their bytes, then one footer of
//! their row groups: `footer.rs`), drops whatever was written after them, and at the end merges
//! the parts and its own file into the target.
//!
//! With any rolling key (`roll_every`, `roll_rows`, `roll_bytes`, `partition_by`, `keep`) the
//! output is instead a directory that grows during the run, readable at any moment: see
//! `rolling.rs`.

mod background_writer;
mod footer;
mod manifest;
mod partition;
mod rolling;
mod rolling_writers;

use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use arrow::datatypes::Schema as ArrowSchema;
use neurostream_engine::checkpoint::{decode_state, encode_state, Delivery, SinkCommit, StagedFile};
use neurostream_engine::files::sync_dir;
use neurostream_engine::layout::{arrow_schema, frame_to_batch, sparse_to_batch, EncodeOptions};
use neurostream_engine::{
    Batch, EngineError, NodeConfig, NodeContext, Placement, Result, RowIndex, Schema, Sink, SinkKind, SinkWriter, StreamKind,
    WorkerPos,
};
use parquet::arrow::ArrowWriter;
use parquet::file::metadata::KeyValue;
use parquet::file::properties::WriterProperties;
use serde::{Deserialize, Serialize};

use background_writer::{BackgroundWriter, COALESCE_ROWS, SMALL_BATCH_ROWS};
use partition::PartitionSpec;
use rolling::{Keep, RollPolicy};
use rolling_writers::{RollingFrames, RollingTables};

/// Column compression codec.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum Compression {
    /// Zstandard (default; level from `compression_level`, default 3).
    #[default]
    Zstd,
    /// LZ4 (raw).
    Lz4,
    /// Snappy.
    Snappy,
    /// Uncompressed.
    None,
}

/// Configuration of a `parquet` sink.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ParquetSinkConfig {
    /// `*.parquet`: one file (all rows gathered on worker 0, in event-time order); otherwise a
    /// directory of `part-NNNNN.parquet`, one per worker that received rows (stale parts are
    /// removed at start).
    pub path: String,
    /// Codec.
    #[serde(default)]
    pub compression: Compression,
    /// Zstandard level, 1-22 (default 3).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub compression_level: Option<i32>,
    /// Rows per row group (default 65536).
    #[serde(default = "default_row_group")]
    #[schemars(extend("x-unit" = "rows"))]
    pub row_group_size: usize,
    /// Signals: write the nullable `marker` column.
    #[serde(default)]
    pub markers: bool,
    /// Activations: write the `token` column.
    #[serde(default)]
    pub tokens: bool,
    /// Result tables: which tables to write (default: all the producer emits).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tables: Option<Vec<String>>,
    /// When the run fails: `keep` (default) commits the rows accepted before the failure,
    /// marked `neurostream.status = incomplete: …`; `discard` leaves the target as it was.
    #[serde(default)]
    pub on_failure: OnFailure,
    /// Rolling output (a directory `path`): a part closes when its event-time interval of this
    /// length ends, e.g. `"10m"` or `"1h"` (intervals aligned to the Unix epoch, UTC). Rows
    /// without event time never close a part by time.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub roll_every: Option<String>,
    /// Rolling: a part closes at this many rows.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(extend("x-unit" = "rows"))]
    pub roll_rows: Option<u64>,
    /// Rolling: a part closes at about this size: bytes, or text like `"256MiB"` or `"1GB"`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub roll_bytes: Option<ByteSize>,
    /// Rolling: Hive-style partition directories, outer first: `year`, `month`, `day`, `date`
    /// (`YYYY-MM-DD`), `hour`, `minute` of the rows' event time (UTC), or column names of the
    /// written table (e.g. `["date", "hour"]` gives `date=2026-12-03/hour=17/part-….parquet`);
    /// `stream` is the rows' stream where the table has no `stream` column (one directory per
    /// recording of a `stream_by` source, or per `arrow_tcp` client stream).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub partition_by: Vec<String>,
    /// Rolling: retention for unattended runs: an age of event time (`"7d"`: parts whose newest
    /// row is older than that behind the newest row written) or a number of parts per writer.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub keep: Option<KeepSpec>,
    /// Rolling: rows whose event time is more than this behind the newest row written are
    /// dropped and counted (e.g. `"5m"`); by default late rows go to their own partition.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub late_after: Option<String>,
    /// Rolling: parts open at once per writer (default 64); beyond it the least recently
    /// written part closes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_open_parts: Option<usize>,
}

/// A size in bytes: a number, or text with a unit (`"512KiB"`, `"256MB"`, `"1GiB"`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(untagged)]
pub enum ByteSize {
    /// Bytes.
    Bytes(u64),
    /// Text with a unit: B, kB, MB, GB (powers of 1000) or KiB, MiB, GiB (powers of 1024).
    Text(String),
}

impl ByteSize {
    /// The size in bytes.
    pub fn bytes(&self) -> std::result::Result<u64, String> {
        let text = match self {
            ByteSize::Bytes(b) => return Ok(*b),
            ByteSize::Text(t) => t.trim(),
        };
        let split = text.find(|c: char| !(c.is_ascii_digit() || c == '.')).unwrap_or(text.len());
        let (number, unit) = text.split_at(split);
        let number: f64 = number
            .parse()
            .map_err(|_| format!("`{text}` is not a size (e.g. 268435456, \"256MiB\", \"1GB\")"))?;
        let scale = match unit.trim().to_ascii_lowercase().as_str() {
            "" | "b" => 1u64,
            "kb" => 1000,
            "mb" => 1000u64.pow(2),
            "gb" => 1000u64.pow(3),
            "kib" => 1 << 10,
            "mib" => 1 << 20,
            "gib" => 1 << 30,
            u => return Err(format!("`{text}`: unknown unit `{u}` (B, kB, MB, GB, KiB, MiB, GiB)")),
        };
        Ok((number * scale as f64).round() as u64)
    }
}

/// Retention of rolling output: an age of event time or a number of parts.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(untagged)]
pub enum KeepSpec {
    /// The newest N parts of each writer.
    Parts(u64),
    /// Parts whose newest row is at most this far behind the newest row written (`"7d"`, `"12h"`).
    Age(String),
}

/// A duration key (`"10m"`, `"1h 30m"`, `"7d"`) in ns.
fn duration_ns(label: &str, key: &str, text: &str) -> Result<i64> {
    let d = humantime::parse_duration(text)
        .map_err(|e| EngineError::config(label, format!("`{key}` = \"{text}\": {e} (e.g. \"10m\", \"1h\", \"7d\")")))?;
    let ns = i64::try_from(d.as_nanos()).unwrap_or(i64::MAX);
    if ns <= 0 {
        return Err(EngineError::config(label, format!("`{key}` must be longer than zero")));
    }
    Ok(ns)
}

/// What a `parquet` sink does with its output when the run fails.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum OnFailure {
    /// Commit what was accepted, marked incomplete in the file's metadata.
    #[default]
    Keep,
    /// Write nothing at the target: a failed run leaves it untouched.
    Discard,
}

fn default_row_group() -> usize {
    65536
}

impl ParquetSinkConfig {
    /// Writes to `path` with default options.
    pub fn new(path: &str) -> ParquetSinkConfig {
        ParquetSinkConfig {
            path: path.into(),
            compression: Compression::Zstd,
            compression_level: None,
            row_group_size: default_row_group(),
            markers: false,
            tokens: false,
            tables: None,
            on_failure: OnFailure::Keep,
            roll_every: None,
            roll_rows: None,
            roll_bytes: None,
            partition_by: Vec::new(),
            keep: None,
            late_after: None,
            max_open_parts: None,
        }
    }

    /// True when any rolling key is set.
    fn rolls(&self) -> bool {
        self.roll_every.is_some()
            || self.roll_rows.is_some()
            || self.roll_bytes.is_some()
            || !self.partition_by.is_empty()
            || self.keep.is_some()
            || self.late_after.is_some()
            || self.max_open_parts.is_some()
    }

    /// The rolling policy, when rolling.
    fn roll_policy(&self, label: &str, props: &WriterProperties, pipeline: &str) -> Result<Option<RollPolicy>> {
        if !self.rolls() {
            return Ok(None);
        }
        let fail = |m: String| Err(EngineError::config(label, m));
        let every_ns = self
            .roll_every
            .as_deref()
            .map(|t| duration_ns(label, "roll_every", t))
            .transpose()?;
        if self.roll_rows == Some(0) {
            return fail("`roll_rows` must be at least 1".into());
        }
        let bytes = self
            .roll_bytes
            .as_ref()
            .map(|b| {
                b.bytes()
                    .map_err(|m| EngineError::config(label, format!("`roll_bytes`: {m}")))
            })
            .transpose()?;
        if bytes.is_some_and(|b| b < 1024) {
            return fail("`roll_bytes` must be at least 1 KiB".into());
        }
        let keep = match &self.keep {
            None => None,
            Some(KeepSpec::Parts(0)) => return fail("`keep` must keep at least 1 part".into()),
            Some(KeepSpec::Parts(n)) => Some(Keep::Parts(*n as usize)),
            Some(KeepSpec::Age(t)) => Some(Keep::Age(duration_ns(label, "keep", t)?)),
        };
        let late_after_ns = self
            .late_after
            .as_deref()
            .map(|t| duration_ns(label, "late_after", t))
            .transpose()?;
        let max_open = self.max_open_parts.unwrap_or(64);
        if max_open == 0 {
            return fail("`max_open_parts` must be at least 1".into());
        }
        let partition = PartitionSpec::parse(&self.partition_by).map_err(|m| EngineError::config(label, m))?;
        Ok(Some(RollPolicy {
            every_ns,
            rows: self.roll_rows,
            bytes,
            keep,
            late_after_ns,
            max_open,
            partition,
            origin_ns: neurostream_engine::frame::now_ns(),
            props: props.clone(),
            pipeline: pipeline.to_string(),
            on_failure: self.on_failure,
        }))
    }
}

impl NodeConfig for ParquetSinkConfig {
    const KIND: &'static str = "parquet";
}

/// The `parquet` sink kind.
pub struct ParquetSinkKind;

impl SinkKind for ParquetSinkKind {
    type Config = ParquetSinkConfig;

    fn describe(&self) -> &'static str {
        "Parquet file (or per-worker parts, or one file per result table), committed atomically"
    }
    fn build(&self, cfg: ParquetSinkConfig, ctx: &NodeContext, input: &Arc<Schema>) -> Result<Arc<dyn Sink>> {
        let fail = |m: String| Err(EngineError::config(ctx.label, m));
        if cfg.row_group_size == 0 {
            return fail("`row_group_size` must be at least 1".into());
        }
        let compression = match cfg.compression {
            Compression::Zstd => {
                let level = parquet::basic::ZstdLevel::try_new(cfg.compression_level.unwrap_or(3))
                    .map_err(|e| EngineError::config(ctx.label, format!("`compression_level`: {e}")))?;
                parquet::basic::Compression::ZSTD(level)
            }
            _ if cfg.compression_level.is_some() => return fail("`compression_level` applies only to zstd".into()),
            Compression::Lz4 => parquet::basic::Compression::LZ4_RAW,
            Compression::Snappy => parquet::basic::Compression::SNAPPY,
            Compression::None => parquet::basic::Compression::UNCOMPRESSED,
        };
        if cfg.markers && !input.is_signal() {
            return fail("`markers` applies only to signal streams".into());
        }
        if cfg.tokens && !matches!(input.kind, StreamKind::Activation { .. }) {
            return fail("`tokens` applies only to activation streams".into());
        }
        if let StreamKind::Signal { .. } = input.kind {
            for c in &input.channels {
                if neurostream_engine::layout::SIGNAL_RESERVED.contains(&c.name.as_str()) {
                    return fail(format!(
                        "channel name `{}` collides with a column of the signal layout",
                        c.name
                    ));
                }
            }
        }
        let path = ctx.resolve(&cfg.path);
        let single = path.extension().is_some_and(|e| e == "parquet");
        let tables = match (&input.kind, &cfg.tables) {
            (StreamKind::Tables { tables, .. }, selected) => {
                if single {
                    return fail(format!(
                        "`path` {}: a stream of result tables ({}) is written as one file per table: give a directory",
                        cfg.path,
                        tables.join(", ")
                    ));
                }
                let selected = selected.clone().unwrap_or_else(|| tables.clone());
                if let Some(bad) = selected.iter().find(|t| !tables.contains(t)) {
                    return fail(format!("`tables`: no table `{bad}`; the input has {}", tables.join(", ")));
                }
                Some(selected)
            }
            (_, Some(_)) => return fail("`tables` applies only to streams of result tables".into()),
            (_, None) => None,
        };
        let parent = if single {
            path.parent().map(Path::to_path_buf).unwrap_or_default()
        } else {
            path.clone()
        };
        if parent.exists() && !parent.is_dir() {
            return fail(format!("{} exists and is not a directory", parent.display()));
        }
        let opts = EncodeOptions {
            markers: cfg.markers,
            tokens: cfg.tokens,
            // Decided by the first frame written (see `ParquetFileWriter::writer`).
            time: false,
        };
        let arrow = arrow_schema(input, &opts);
        let mut props = WriterProperties::builder()
            .set_compression(compression)
            .set_max_row_group_row_count(Some(cfg.row_group_size))
            .set_created_by(format!("neurostream {}", env!("CARGO_PKG_VERSION")));
        for column in float_columns(&arrow) {
            props = props.set_column_dictionary_enabled(column, false);
        }
        let props = props.build();
        let rolling = cfg.roll_policy(ctx.label, &props, &ctx.settings.name)?;
        if let Some(policy) = &rolling {
            if single {
                return fail(format!(
                    "`path` {}: rolling output (`roll_*`, `partition_by`, `keep`) is a directory of parts: give a directory",
                    cfg.path
                ));
            }
            if tables.is_none() {
                policy
                    .partition
                    .check_columns(&arrow, "the written rows")
                    .map_err(|m| EngineError::config(ctx.label, m))?;
            }
        }
        Ok(Arc::new(ParquetSink {
            path,
            single,
            tables,
            arrow,
            opts,
            props,
            pipeline: ctx.settings.name.clone(),
            on_failure: cfg.on_failure,
            rolling: rolling.map(Arc::new),
        }))
    }
}

struct ParquetSink {
    path: PathBuf,
    single: bool,
    /// For result-table streams: the tables to write, one file each.
    tables: Option<Vec<String>>,
    arrow: Arc<ArrowSchema>,
    opts: EncodeOptions,
    props: WriterProperties,
    pipeline: String,
    on_failure: OnFailure,
    /// Rolling output: the policy.
    rolling: Option<Arc<RollPolicy>>,
}

impl ParquetSink {
    /// The directory its files go to, and the prefix of its hidden files (staged segments and
    /// temporaries) there.
    fn output_dir_and_prefix(&self) -> (PathBuf, String) {
        let (dir, prefix) = if self.single {
            let name = self
                .path
                .file_name()
                .map(|n| n.to_string_lossy().to_string())
                .unwrap_or_default();
            (
                self.path.parent().map(Path::to_path_buf).unwrap_or_default(),
                format!(".{name}."),
            )
        } else {
            (self.path.clone(), ".".to_string())
        };
        let dir = if dir.as_os_str().is_empty() { PathBuf::from(".") } else { dir };
        (dir, prefix)
    }
}

/// The outcome of removing `path`: `Ok(false)` when it was already gone (the processes of a
/// cluster that share an output directory all clean up after a killed run, and may race to the
/// same file; or a removal a crash interrupted), else an error saying `what` could not be removed.
fn removed(path: &Path, outcome: std::io::Result<()>, what: &str) -> Result<bool> {
    match outcome {
        Ok(()) => Ok(true),
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => Ok(false),
        Err(err) => Err(out_err(path, format!("cannot remove {what}: {err}"))),
    }
}

/// Removes a temporary file; `false` when it was already gone.
fn remove_temporary(path: &Path) -> Result<bool> {
    removed(path, std::fs::remove_file(path), "a temporary file")
}

fn out_err(path: &Path, message: impl Into<String>) -> EngineError {
    EngineError::Output {
        path: path.to_path_buf(),
        message: message.into(),
    }
}

impl Sink for ParquetSink {
    fn delivery(&self) -> Delivery {
        Delivery::ExactlyOnce
    }
    fn remove_staging(&self) -> Result<()> {
        if self.rolling.is_some() {
            return Ok(()); // parts are committed one by one; nothing is staged at the end
        }
        // Segment directories, and temporary files of a merge a crash interrupted.
        let (dir, prefix) = self.output_dir_and_prefix();
        let Ok(entries) = std::fs::read_dir(&dir) else { return Ok(()) };
        for e in entries.flatten() {
            let n = e.file_name().to_string_lossy().to_string();
            if !n.starts_with(&prefix) || !n.contains(".parquet.") {
                continue;
            }
            let p = e.path();
            let outcome = if n.ends_with(".parquet.segments") {
                std::fs::remove_dir_all(&p)
            } else if n.ends_with(".tmp") {
                std::fs::remove_file(&p)
            } else {
                continue;
            };
            removed(&p, outcome, "staged output")?;
        }
        Ok(())
    }
    fn remove_temporaries(&self, owners: neurostream_engine::process::TempOwners) -> Result<Vec<PathBuf>> {
        if self.rolling.is_some() {
            let mut doomed = Vec::new();
            rolling::walk_files(&self.path, &mut |path, name| {
                if name.starts_with(".part-") && owners.own(name) {
                    doomed.push(path.to_path_buf());
                }
            });
            let mut removed = Vec::new();
            for p in doomed {
                if remove_temporary(&p)? {
                    removed.push(p);
                }
            }
            return Ok(removed);
        }
        let (dir, prefix) = self.output_dir_and_prefix();
        let Ok(entries) = std::fs::read_dir(&dir) else {
            return Ok(Vec::new());
        };
        let mut removed = Vec::new();
        for e in entries.flatten() {
            let n = e.file_name().to_string_lossy().to_string();
            if n.starts_with(&prefix) && n.contains(".parquet.") && owners.own(&n) && remove_temporary(&e.path())? {
                removed.push(e.path());
            }
        }
        Ok(removed)
    }
    fn placement(&self) -> Placement {
        if self.single || self.tables.is_some() {
            Placement::Single
        } else {
            Placement::PerWorker
        }
    }

    fn prepare_output(&self, resume: bool, workers: std::ops::Range<usize>, peers: usize) -> Result<()> {
        if self.rolling.is_none() || resume {
            return Ok(());
        }
        let writers = if self.tables.is_some() { 1 } else { peers };
        if workers.start < writers {
            rolling::remove_earlier_output(&self.path, workers, writers)?;
        }
        Ok(())
    }

    fn open(&self, worker: WorkerPos) -> Result<Box<dyn SinkWriter>> {
        if let Some(policy) = &self.rolling {
            std::fs::create_dir_all(&self.path).map_err(|e| out_err(&self.path, format!("cannot create directory: {e}")))?;
            return Ok(match &self.tables {
                Some(tables) => Box::new(RollingTables::new(self.path.clone(), tables.clone(), policy.clone())),
                None => Box::new(RollingFrames::new(
                    self.path.clone(),
                    worker,
                    self.arrow.clone(),
                    self.opts.clone(),
                    policy.clone(),
                )),
            });
        }
        if let Some(tables) = &self.tables {
            std::fs::create_dir_all(&self.path).map_err(|e| out_err(&self.path, format!("cannot create directory: {e}")))?;
            return Ok(Box::new(TablesWriter {
                dir: self.path.clone(),
                wanted: tables.clone(),
                props: self.props.clone(),
                pipeline: self.pipeline.clone(),
                writers: Vec::new(),
                checkpointed: false,
                on_failure: self.on_failure,
            }));
        }
        let target = if self.single {
            self.path.clone()
        } else {
            std::fs::create_dir_all(&self.path).map_err(|e| out_err(&self.path, format!("cannot create directory: {e}")))?;
            if worker.index == 0 {
                remove_stale_parts(&self.path)?;
            }
            self.path.join(format!("part-{:05}.parquet", worker.index))
        };
        if let Some(dir) = target.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(|e| out_err(dir, format!("cannot create directory: {e}")))?;
        }
        Ok(Box::new(ParquetFileWriter {
            temp: temp_name(&target, worker.index),
            target,
            arrow: self.arrow.clone(),
            opts: self.opts.clone(),
            props: self.props.clone(),
            writer: None,
            rows: 0,
            broken: false,
            single: self.single,
            pipeline: self.pipeline.clone(),
            segments: None,
            on_failure: self.on_failure,
            small_signal: None,
        }))
    }
}

fn remove_stale_parts(dir: &Path) -> Result<()> {
    let entries = std::fs::read_dir(dir).map_err(|e| out_err(dir, e.to_string()))?;
    for e in entries.flatten() {
        let name = e.file_name().to_string_lossy().to_string();
        if name.starts_with("part-") && name.ends_with(".parquet") {
            std::fs::remove_file(e.path()).map_err(|err| out_err(&e.path(), format!("cannot remove stale part: {err}")))?;
        }
    }
    Ok(())
}

fn temp_name(target: &Path, worker: usize) -> PathBuf {
    let name = target
        .file_name()
        .map(|n| n.to_string_lossy().to_string())
        .unwrap_or_default();
    target.with_file_name(format!(".{name}.{}-{worker}.tmp", std::process::id()))
}

struct ParquetFileWriter {
    target: PathBuf,
    temp: PathBuf,
    arrow: Arc<ArrowSchema>,
    opts: EncodeOptions,
    props: WriterProperties,
    /// The open file's writer, encoding on its own thread.
    writer: Option<BackgroundWriter>,
    rows: u64,
    broken: bool,
    single: bool,
    pipeline: String,
    /// Checkpointed runs: where the segments go and how many were staged or committed.
    segments: Option<Segments>,
    on_failure: OnFailure,
    /// Small signal frames joined before they are encoded: a signal row is one column per
    /// channel, so encoding each frame alone builds (and frees) an array per channel per frame.
    small_signal: Option<neurostream_engine::Frame>,
}

/// The files of one output in a checkpointed run: one open file that grows across checkpoints
/// (each checkpoint commits a footer of the row groups added since the previous one), after
/// the complete parts that runs resumed earlier sealed (see `footer.rs`).
struct Segments {
    dir: PathBuf,
    /// Complete parts committed so far; the open file is part number `next`.
    next: u32,
    /// Footers committed or staged for the open file.
    footers: u32,
    /// Bytes of the open file those footers cover.
    open_bytes: u64,
}

impl Segments {
    fn committed(&self, i: u32) -> PathBuf {
        self.dir.join(format!("seg-{i:06}.parquet"))
    }
    fn open_file(&self) -> PathBuf {
        self.dir.join(format!("seg-{:06}.parquet.open", self.next))
    }
    fn footer(&self, m: u32) -> PathBuf {
        self.dir.join(format!("seg-{:06}.footer-{m:06}", self.next))
    }
    /// The footers committed for the open file.
    fn footers(&self) -> Vec<PathBuf> {
        (0..self.footers).map(|m| self.footer(m)).collect()
    }
}

/// What a checkpoint records of one output file.
#[derive(Clone, Debug, Serialize, Deserialize)]
struct FileState {
    /// Complete parts.
    segments: u32,
    rows: u64,
    time: bool,
    /// Footers of the open file, and the bytes of it they cover (0 in checkpoints written
    /// before the open file grew across checkpoints: then every part is complete).
    #[serde(default)]
    footers: u32,
    #[serde(default)]
    open_bytes: u64,
}

/// `.<name>.segments` beside `target`.
fn segments_dir(target: &Path) -> PathBuf {
    let name = target
        .file_name()
        .map(|n| n.to_string_lossy().to_string())
        .unwrap_or_default();
    target.with_file_name(format!(".{name}.segments"))
}

impl ParquetFileWriter {
    fn current_path(&self) -> PathBuf {
        match &self.segments {
            Some(s) => s.open_file(),
            None => self.temp.clone(),
        }
    }

    fn writer(&mut self) -> Result<&mut BackgroundWriter> {
        if self.writer.is_none() {
            let path = self.current_path();
            let file = File::create(&path).map_err(|e| out_err(&path, format!("cannot create: {e}")))?;
            let w = ArrowWriter::try_new(file, self.arrow.clone(), Some(self.props.clone()))
                .map_err(|e| out_err(&self.target, format!("cannot start Parquet writer: {e}")))?;
            let name = self
                .target
                .file_name()
                .map(|n| n.to_string_lossy().to_string())
                .unwrap_or_default();
            let w = BackgroundWriter::start(w, &name)
                .map_err(|e| out_err(&self.target, format!("cannot start a writer thread: {e}")))?;
            self.writer = Some(w);
        }
        Ok(self.writer.as_mut().unwrap())
    }

    fn discard(&mut self) {
        self.writer = None;
        // A checkpointed run's open file holds rows a checkpoint committed; a resumed run seals
        // those into a part.
        if self.segments.is_none() {
            let _ = std::fs::remove_file(&self.temp);
        }
    }

    /// Enters checkpointed mode: a fresh segment directory, or the one of the checkpoint
    /// resumed from with everything written after it removed (the rows it committed of the
    /// open file are sealed into a complete part, copied out of it).
    fn start_segments(&mut self, resume: Option<FileState>) -> Result<()> {
        let dir = segments_dir(&self.target);
        std::fs::create_dir_all(&dir).map_err(|e| out_err(&dir, format!("cannot create directory: {e}")))?;
        let mut segments = Segments {
            dir,
            next: resume.as_ref().map_or(0, |s| s.segments),
            footers: resume.as_ref().map_or(0, |s| s.footers),
            open_bytes: resume.as_ref().map_or(0, |s| s.open_bytes),
        };
        if segments.footers > 0 {
            let (open, sealed) = (segments.open_file(), segments.committed(segments.next));
            if open.exists() {
                let sealing = sealed.with_extension("parquet.sealing");
                footer::seal_prefix(&open, segments.open_bytes, &segments.footers(), &sealing)
                    .and_then(|()| std::fs::rename(&sealing, &sealed).map_err(|e| format!("rename: {e}")))
                    .map_err(|m| out_err(&open, format!("cannot restore the rows the checkpoint committed: {m}")))?;
                sync_dir(&segments.dir);
            }
            // Sealed already when the file is gone (by a resume that died after it).
            segments.next += 1;
            (segments.footers, segments.open_bytes) = (0, 0);
        }
        let keep = segments.next;
        let entries = std::fs::read_dir(&segments.dir).map_err(|e| out_err(&segments.dir, e.to_string()))?;
        for e in entries.flatten() {
            let name = e.file_name().to_string_lossy().to_string();
            // Complete parts, and the footers they were sealed from (a checkpoint lists them:
            // resuming from it again commits them again).
            let committed = name
                .strip_prefix("seg-")
                .and_then(|n| {
                    n.strip_suffix(".parquet").or_else(|| {
                        n.split_once(".footer-")
                            .filter(|(_, m)| m.parse::<u32>().is_ok())
                            .map(|(i, _)| i)
                    })
                })
                .and_then(|n| n.parse::<u32>().ok())
                .is_some_and(|i| i < keep);
            if !committed {
                std::fs::remove_file(e.path())
                    .map_err(|err| out_err(&e.path(), format!("cannot remove uncommitted segment: {err}")))?;
            }
        }
        for i in 0..keep {
            if !segments.committed(i).exists() {
                return Err(out_err(
                    &segments.committed(i),
                    "a segment committed by the checkpoint is missing; the output cannot be resumed",
                ));
            }
        }
        if let Some(state) = resume {
            self.rows = state.rows;
            if state.time && !self.opts.time {
                self.opts.time = true;
                if let Some(schema) = read_segment_schema(&segments.committed(0)) {
                    self.arrow = schema;
                }
            }
        }
        self.segments = Some(segments);
        Ok(())
    }

    fn state(&self) -> FileState {
        let s = self.segments.as_ref();
        FileState {
            segments: s.map_or(0, |s| s.next),
            rows: self.rows,
            time: self.opts.time,
            footers: s.map_or(0, |s| s.footers),
            open_bytes: s.map_or(0, |s| s.open_bytes),
        }
    }

    /// Writes the open file's rows so far and stages the footer of the row groups added since
    /// the last checkpoint; the checkpoint fsyncs the file and the footer off the pipeline's
    /// path, then commits the footer.
    fn stage_checkpoint(&mut self) -> Result<Vec<StagedFile>> {
        self.flush_signal()?;
        if self.broken {
            return Err(out_err(&self.target, "an earlier write failed"));
        }
        let Some(writer) = self.writer.as_mut() else {
            return Ok(Vec::new());
        };
        let seg = self.segments.as_mut().expect("checkpointed mode");
        let open = seg.open_file();
        let committed = seg.footer(seg.footers);
        let staged = committed.with_file_name(format!(
            "{}.staged",
            committed.file_name().unwrap_or_default().to_string_lossy()
        ));
        let flushed = writer.checkpoint().and_then(|(bytes, groups)| {
            if groups.is_empty() {
                return Ok(None);
            }
            let file = File::create(&staged).map_err(|e| format!("cannot create {}: {e}", staged.display()))?;
            let mut out = std::io::BufWriter::new(file);
            footer::write_footer(&mut out, &self.arrow, &self.props, groups)?;
            std::io::Write::flush(&mut out).map_err(|e| e.to_string())?;
            Ok(Some(bytes))
        });
        match flushed {
            Ok(None) => Ok(Vec::new()),
            Ok(Some(bytes)) => {
                (seg.footers, seg.open_bytes) = (seg.footers + 1, bytes);
                // The open file is listed to be fsynced; it keeps its name.
                Ok(vec![
                    StagedFile {
                        staged: open.clone(),
                        committed: open,
                    },
                    StagedFile { staged, committed },
                ])
            }
            Err(m) => {
                let _ = std::fs::remove_file(&staged);
                self.broken = true;
                Err(out_err(
                    &open,
                    format!("could not write the rows for a checkpoint ({m}); earlier checkpoints stay valid"),
                ))
            }
        }
    }

    /// Publishes the finished file `path` at the target through a hard link (atomically, by a
    /// rename of the link); false where the file system has no hard links (the caller copies).
    fn publish_linked(&self, path: &Path) -> bool {
        let _ = std::fs::remove_file(&self.temp);
        if std::fs::hard_link(path, &self.temp).is_err() {
            return false;
        }
        if std::fs::rename(&self.temp, &self.target).is_err() {
            let _ = std::fs::remove_file(&self.temp);
            return false;
        }
        if let Some(dir) = self.target.parent().filter(|d| !d.as_os_str().is_empty()) {
            sync_dir(dir);
        }
        true
    }

    /// Completes a checkpointed output: publishes the open file, or (after a resume) merges
    /// the committed parts and the open file into the target; on failure keeps them for
    /// `--resume`.
    fn commit_segments(mut self: Box<Self>, failure: Option<&str>) -> Result<Vec<String>> {
        let seg_dir = self.segments.as_ref().expect("checkpointed mode").dir.clone();
        if failure.is_none() {
            self.flush_signal()?;
        }
        if failure.is_some() || self.broken {
            self.discard();
            return Ok(vec![format!(
                "{}: not written (run failed); the rows of the last checkpoint are kept in {} for --resume",
                self.target.display(),
                seg_dir.display()
            )]);
        }
        let mut parts: Vec<PathBuf> = {
            let s = self.segments.as_ref().unwrap();
            (0..s.next).map(|i| s.committed(i)).collect()
        };
        if let Some(writer) = self.writer.take() {
            let path = self.current_path();
            if parts.is_empty() {
                writer
                    .append_key_value_metadata(KeyValue::new("neurostream.status".to_string(), "complete".to_string()))
                    .and_then(|()| {
                        writer.append_key_value_metadata(KeyValue::new("neurostream.pipeline".to_string(), self.pipeline.clone()))
                    })
                    .map_err(|e| out_err(&path, format!("could not close the output: {e}")))?;
            }
            writer
                .finish()
                .and_then(|f| f.sync_all().map_err(|e| e.to_string()))
                .map_err(|e| out_err(&path, format!("could not close the output: {e}")))?;
            // The usual case, one file that grew across the checkpoints: it becomes the target
            // as it is, through a second name (it stays in the directory until the run is
            // recorded complete, for a resume after a crash before that).
            if parts.is_empty() && self.publish_linked(&path) {
                return Ok(vec![format!("wrote {} rows to {}", self.rows, self.target.display())]);
            }
            parts.push(path);
        }
        if parts.is_empty() && !self.single {
            let _ = std::fs::remove_dir_all(&seg_dir);
            return Ok(Vec::new());
        }
        let merged = (|| -> std::result::Result<(), String> {
            let file = File::create(&self.temp).map_err(|e| format!("cannot create {}: {e}", self.temp.display()))?;
            let file = if parts.is_empty() {
                // A single-file sink that received no rows still produces its (empty) file.
                let mut w =
                    ArrowWriter::try_new(file, self.arrow.clone(), Some(self.props.clone())).map_err(|e| e.to_string())?;
                w.append_key_value_metadata(KeyValue::new("neurostream.status".to_string(), "complete".to_string()));
                w.append_key_value_metadata(KeyValue::new("neurostream.pipeline".to_string(), self.pipeline.clone()));
                w.into_inner().map_err(|e| e.to_string())?
            } else {
                let status = [
                    ("neurostream.status", "complete"),
                    ("neurostream.pipeline", self.pipeline.as_str()),
                ];
                concat_parquet(&parts, file, &self.props, &status)?
            };
            file.sync_all().map_err(|e| format!("fsync: {e}"))?;
            drop(file);
            std::fs::rename(&self.temp, &self.target).map_err(|e| format!("rename from {}: {e}", self.temp.display()))?;
            if let Some(dir) = self.target.parent().filter(|d| !d.as_os_str().is_empty()) {
                sync_dir(dir);
            }
            Ok(())
        })();
        if let Err(m) = merged {
            let _ = std::fs::remove_file(&self.temp);
            return Err(out_err(
                &self.target,
                format!(
                    "could not merge the committed segments ({m}); they stay in {} for --resume",
                    seg_dir.display()
                ),
            ));
        }
        // The segments stay until the run is recorded complete (`remove_staging`): a crash
        // before that resumes and merges them again.
        Ok(vec![format!("wrote {} rows to {}", self.rows, self.target.display())])
    }
}

/// Concatenates Parquet files of one schema into `out` by copying their row groups' column
/// chunks as they are (no decoding or re-compression), keeping the first file's key-value
/// metadata (the Arrow schema among it) and adding `extra`.
fn concat_parquet(
    parts: &[PathBuf],
    out: File,
    props: &WriterProperties,
    extra: &[(&str, &str)],
) -> std::result::Result<File, String> {
    use parquet::column::writer::ColumnCloseResult;
    use parquet::file::metadata::{PageIndexPolicy, ParquetMetaDataReader};
    use parquet::file::writer::SerializedFileWriter;
    let mut inputs = Vec::with_capacity(parts.len());
    for p in parts {
        let f = File::open(p).map_err(|e| format!("{}: {e}", p.display()))?;
        let md = ParquetMetaDataReader::new()
            .with_page_index_policy(PageIndexPolicy::Optional)
            .parse_and_finish(&f)
            .map_err(|e| format!("{}: {e}", p.display()))?;
        inputs.push((f, md));
    }
    let first = inputs[0].1.file_metadata().clone();
    for ((_, md), p) in inputs.iter().zip(parts) {
        if md.file_metadata().schema() != first.schema() {
            return Err(format!("{} has another schema than {}", p.display(), parts[0].display()));
        }
    }
    let mut w = SerializedFileWriter::new(out, first.schema_descr().root_schema_ptr(), Arc::new(props.clone()))
        .map_err(|e| e.to_string())?;
    for (input, md) in &inputs {
        let page_index = md.page_index();
        for (g, rg) in md.row_groups().iter().enumerate() {
            let mut rg_out = w.next_row_group().map_err(|e| e.to_string())?;
            for (c, column) in rg.columns().iter().enumerate() {
                let result = ColumnCloseResult {
                    bytes_written: column.compressed_size() as u64,
                    rows_written: rg.num_rows() as u64,
                    metadata: column.clone(),
                    bloom_filter: None,
                    column_index: page_index.and_then(|pi| pi.column_index(g, c)).cloned(),
                    offset_index: page_index.and_then(|pi| pi.offset_index(g, c)).cloned(),
                };
                rg_out.append_column(input, result).map_err(|e| e.to_string())?;
            }
            rg_out.close().map_err(|e| e.to_string())?;
        }
    }
    for kv in first.key_value_metadata().into_iter().flatten() {
        if !extra.iter().any(|(k, _)| *k == kv.key) {
            w.append_key_value_metadata(kv.clone());
        }
    }
    for (k, v) in extra {
        w.append_key_value_metadata(KeyValue::new(k.to_string(), v.to_string()));
    }
    w.into_inner().map_err(|e| e.to_string())
}

/// The Arrow schema stored in a Parquet file, if it can be read.
fn read_segment_schema(path: &Path) -> Option<Arc<ArrowSchema>> {
    let f = File::open(path).ok()?;
    let b = parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder::try_new(f).ok()?;
    Some(b.schema().clone())
}

impl SinkWriter for ParquetFileWriter {
    fn write(&mut self, batch: &Batch) -> Result<()> {
        if self.broken {
            return Ok(());
        }
        if let Batch::Dense(frame) = batch {
            if joinable_signal(frame) {
                return self.join_signal(frame);
            }
        }
        self.flush_signal()?;
        self.encode_and_write(batch)
    }

    fn finish(self: Box<Self>, failure: Option<&str>) -> Result<Vec<String>> {
        if self.segments.is_some() {
            return self.commit_segments(failure);
        }
        self.commit(failure)
    }

    fn start_checkpointed(&mut self, resume: Option<&[u8]>) -> Result<()> {
        let state = resume
            .map(|b| decode_state::<FileState>(b, &self.target.display().to_string()))
            .transpose()?;
        self.start_segments(state)
    }

    fn precommit(&mut self) -> Result<SinkCommit> {
        let files = self.stage_checkpoint()?;
        Ok(SinkCommit {
            state: encode_state(&self.state())?,
            files,
        })
    }
}

/// Whether `frame` is a small signal frame on the host, which waits to be joined with the next.
fn joinable_signal(frame: &neurostream_engine::Frame) -> bool {
    matches!(frame.index, RowIndex::Samples(_)) && frame.rows() < SMALL_BATCH_ROWS && !frame.is_on_device()
}

/// Encodes a frame into a record batch of the sink's layout. With `decide`, a frame whose rows
/// carry event times adds the `time` column to the layout (the first frame written decides).
fn encode_frame(
    batch: &Batch,
    arrow: &mut Arc<ArrowSchema>,
    opts: &mut EncodeOptions,
    decide: bool,
    target: &Path,
) -> Result<arrow::record_batch::RecordBatch> {
    if decide && !opts.time {
        let timed = match batch {
            Batch::Dense(f) => Some((&f.schema, &f.index)),
            Batch::Sparse(f) => Some((&f.schema, &f.index)),
            Batch::Table(_) | Batch::End(_) => None,
        };
        if let Some((schema, RowIndex::Tokens { time: Some(_), .. })) = timed {
            opts.time = true;
            *arrow = arrow_schema(schema, opts);
        }
    }
    match batch {
        Batch::Dense(frame) => frame_to_batch(frame, arrow, opts),
        Batch::Sparse(frame) => sparse_to_batch(frame, arrow),
        Batch::Table(t) => Err(format!("table `{}` sent to a sink configured for frames", t.table)),
        Batch::End(e) => Err(format!("the end of stream {} has no rows to write", e.stream)),
    }
    .map_err(|m| out_err(target, m))
}

impl ParquetFileWriter {
    /// Encodes `batch` and writes it.
    fn encode_and_write(&mut self, batch: &Batch) -> Result<()> {
        // The first frame decides the layout; one waiting among the small ones has decided it.
        let decide = self.writer.is_none() && !self.opts.time;
        let record = encode_frame(batch, &mut self.arrow, &mut self.opts, decide, &self.target)?;
        self.write_record(&record)
    }

    /// Appends a small signal frame to the one waiting (same stream and schema), or starts one.
    fn join_signal(&mut self, frame: &neurostream_engine::Frame) -> Result<()> {
        let joined = match &mut self.small_signal {
            Some(waiting) if waiting.stream == frame.stream && Arc::ptr_eq(&waiting.schema, &frame.schema) => {
                let (RowIndex::Samples(to), RowIndex::Samples(from)) = (&mut waiting.index, &frame.index) else {
                    unreachable!("joinable signal frames are sample-indexed");
                };
                let offset = to.len() as u32;
                to.extend_from_slice(from);
                waiting.data.extend_from_slice(&frame.data);
                waiting
                    .markers
                    .extend(frame.markers.iter().map(|m| neurostream_engine::Marker {
                        row: m.row + offset,
                        ..m.clone()
                    }));
                true
            }
            _ => false,
        };
        if !joined {
            self.flush_signal()?;
            self.small_signal = Some(frame.clone());
        }
        if self.small_signal.as_ref().is_some_and(|f| f.rows() >= COALESCE_ROWS) {
            self.flush_signal()?;
        }
        Ok(())
    }

    /// Encodes and writes the signal frame waiting, if any.
    fn flush_signal(&mut self) -> Result<()> {
        match self.small_signal.take() {
            Some(frame) => self.encode_and_write(&Batch::Dense(frame)),
            None => Ok(()),
        }
    }

    /// Writes `record` (the writer gathers small ones before encoding them).
    fn write_record(&mut self, record: &arrow::record_batch::RecordBatch) -> Result<()> {
        if self.broken {
            return Ok(());
        }
        self.write_now(record)
    }

    fn write_now(&mut self, record: &arrow::record_batch::RecordBatch) -> Result<()> {
        let target = self.target.clone();
        let result = self.writer()?.write(record.clone());
        if let Err(e) = result {
            self.broken = true;
            self.discard();
            return Err(out_err(
                &target,
                format!(
                    "writing failed ({e}) after {} rows were accepted; the target was left untouched",
                    self.rows
                ),
            ));
        }
        self.rows += record.num_rows() as u64;
        Ok(())
    }

    fn commit(mut self: Box<Self>, failure: Option<&str>) -> Result<Vec<String>> {
        // Everything accepted goes in, also when the run failed (the file says so).
        if failure.is_none() || self.on_failure != OnFailure::Discard {
            self.flush_signal()?;
        }
        if self.broken {
            return Ok(vec![format!("{}: not written (write error)", self.target.display())]);
        }
        if failure.is_some() && self.on_failure == OnFailure::Discard {
            drop(self.writer.take());
            let _ = std::fs::remove_file(&self.temp);
            return Ok(vec![format!(
                "{}: not written (run failed; on_failure = \"discard\" leaves it as it was)",
                self.target.display()
            )]);
        }
        if self.writer.is_none() {
            if !self.single {
                return Ok(Vec::new()); // a worker that received no rows writes no part
            }
            self.writer()?; // a single-file sink always produces its file, even with no rows
        }
        let status = match failure {
            None => "complete".to_string(),
            Some(f) => format!("incomplete: {}", f.lines().next().unwrap_or(f)),
        };
        let writer = self.writer.take().unwrap();
        let commit = (|| -> std::result::Result<(), String> {
            writer.append_key_value_metadata(KeyValue::new("neurostream.status".to_string(), status))?;
            writer.append_key_value_metadata(KeyValue::new("neurostream.pipeline".to_string(), self.pipeline.clone()))?;
            let file = writer.finish()?;
            file.sync_all().map_err(|e| format!("fsync: {e}"))?;
            drop(file);
            std::fs::rename(&self.temp, &self.target).map_err(|e| format!("rename from {}: {e}", self.temp.display()))?;
            if let Some(dir) = self.target.parent() {
                sync_dir(dir);
            }
            Ok(())
        })();
        if let Err(m) = commit {
            let _ = std::fs::remove_file(&self.temp);
            return Err(out_err(
                &self.target,
                format!("could not commit ({m}); the target was left untouched"),
            ));
        }
        let note = if failure.is_some() {
            " (run failed: rows accepted before the failure)"
        } else {
            ""
        };
        Ok(vec![format!("wrote {} rows to {}{note}", self.rows, self.target.display())])
    }
}

/// Writes each result table of a `Tables` stream to `<dir>/<table>.parquet`, each file committed
/// atomically like any other output. The Arrow schema of a table comes from its first block.
struct TablesWriter {
    dir: PathBuf,
    wanted: Vec<String>,
    props: WriterProperties,
    pipeline: String,
    writers: Vec<(String, Box<ParquetFileWriter>)>,
    checkpointed: bool,
    on_failure: OnFailure,
}

impl TablesWriter {
    fn file_writer(&self, table: &str, arrow: Arc<ArrowSchema>) -> Box<ParquetFileWriter> {
        let target = self.dir.join(format!("{table}.parquet"));
        Box::new(ParquetFileWriter {
            temp: temp_name(&target, 0),
            target,
            arrow,
            opts: EncodeOptions::default(),
            props: self.props.clone(),
            writer: None,
            rows: 0,
            broken: false,
            single: true,
            pipeline: self.pipeline.clone(),
            segments: None,
            on_failure: self.on_failure,
            small_signal: None,
        })
    }
}

impl SinkWriter for TablesWriter {
    fn write(&mut self, batch: &Batch) -> Result<()> {
        let Batch::Table(t) = batch else {
            return Err(out_err(&self.dir, "frames sent to a sink configured for result tables"));
        };
        if !self.wanted.iter().any(|w| **w == *t.table) {
            return Ok(());
        }
        let i = match self.writers.iter().position(|(name, _)| **name == *t.table) {
            Some(i) => i,
            None => {
                let mut meta = t.data.schema().metadata().clone();
                meta.insert("neurostream.layout".to_string(), format!("table:{}", t.table));
                let arrow = Arc::new(t.data.schema().as_ref().clone().with_metadata(meta));
                let mut w = self.file_writer(&t.table, arrow);
                if self.checkpointed {
                    w.start_segments(None)?;
                }
                self.writers.push((t.table.to_string(), w));
                self.writers.len() - 1
            }
        };
        let w = &mut self.writers[i].1;
        if t.data.schema().fields() != w.arrow.fields() {
            return Err(out_err(
                &w.target,
                format!(
                    "table `{}` changed its columns mid-run: {:?}",
                    t.table,
                    t.data.schema().fields()
                ),
            ));
        }
        let record = t
            .data
            .clone()
            .with_schema(w.arrow.clone())
            .map_err(|e| out_err(&w.target, e.to_string()))?;
        w.write_record(&record)
    }

    fn finish(self: Box<Self>, failure: Option<&str>) -> Result<Vec<String>> {
        let mut lines = Vec::new();
        let mut first_err = None;
        for (_, w) in self.writers {
            let committed = if w.segments.is_some() {
                w.commit_segments(failure)
            } else {
                w.commit(failure)
            };
            match committed {
                Ok(l) => lines.extend(l),
                Err(e) => {
                    lines.push(e.to_string());
                    first_err.get_or_insert(e);
                }
            }
        }
        if lines.is_empty() {
            lines.push(format!("{}: no table rows received", self.dir.display()));
        }
        match first_err {
            Some(e) => Err(e),
            None => Ok(lines),
        }
    }

    fn start_checkpointed(&mut self, resume: Option<&[u8]>) -> Result<()> {
        self.checkpointed = true;
        let states: Vec<(String, FileState)> = resume
            .map(|b| decode_state(b, &self.dir.display().to_string()))
            .transpose()?
            .unwrap_or_default();
        // Segment directories of tables the checkpoint does not know were written after it.
        let entries = std::fs::read_dir(&self.dir).map_err(|e| out_err(&self.dir, e.to_string()))?;
        for e in entries.flatten() {
            let name = e.file_name().to_string_lossy().to_string();
            let known = states.iter().any(|(t, _)| name == format!(".{t}.parquet.segments"));
            if name.starts_with('.') && name.ends_with(".parquet.segments") && !known {
                std::fs::remove_dir_all(e.path())
                    .map_err(|err| out_err(&e.path(), format!("cannot remove uncommitted segments: {err}")))?;
            }
        }
        for (table, state) in states {
            if state.segments == 0 && state.footers == 0 {
                continue; // no rows committed: the table starts afresh at its next rows
            }
            // The first complete part, or the first footer of the open file: both hold the schema.
            let first_part = Segments {
                dir: segments_dir(&self.dir.join(format!("{table}.parquet"))),
                next: 0,
                footers: 0,
                open_bytes: 0,
            };
            let first = match state.segments {
                0 => first_part.footer(0),
                _ => first_part.committed(0),
            };
            let arrow = read_segment_schema(&first).ok_or_else(|| {
                out_err(
                    &first,
                    "the first committed part of this table is missing or unreadable; cannot resume",
                )
            })?;
            let mut w = self.file_writer(&table, arrow);
            w.start_segments(Some(state))?;
            self.writers.push((table, w));
        }
        Ok(())
    }

    fn precommit(&mut self) -> Result<SinkCommit> {
        let mut commit = SinkCommit::default();
        let mut states = Vec::new();
        for (table, w) in &mut self.writers {
            commit.files.extend(w.stage_checkpoint()?);
            states.push((table.clone(), w.state()));
        }
        commit.state = encode_state(&states)?;
        Ok(commit)
    }
}

/// The Parquet columns of `schema` that hold floating-point values (channels, activations,
/// feature values). Measured values almost never repeat, so a dictionary only costs: hashing
/// every value took a third of an EEG pipeline's time before the writer gave up on it.
fn float_columns(schema: &arrow::datatypes::Schema) -> Vec<parquet::schema::types::ColumnPath> {
    use parquet::basic::Type;
    match parquet::arrow::ArrowSchemaConverter::new().convert(schema) {
        Ok(descr) => descr
            .columns()
            .iter()
            .filter(|c| matches!(c.physical_type(), Type::FLOAT | Type::DOUBLE))
            .map(|c| c.path().clone())
            .collect(),
        Err(_) => Vec::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::datatypes::{DataType, Field, Schema};

    /// Two signal channels at 100 Hz.
    fn signal_schema() -> Arc<neurostream_engine::Schema> {
        Arc::new(neurostream_engine::Schema::signal(&["C3", "C4"], "uV", 100.0))
    }

    /// The one worker's writer of a `parquet` sink configured by `config` (TOML) in `dir`.
    fn open_sink(dir: &Path, config: &str, schema: &Arc<neurostream_engine::Schema>) -> Box<dyn SinkWriter> {
        use neurostream_engine::SinkKind;
        let settings = neurostream_engine::PipelineSettings::default();
        let ctx = NodeContext {
            label: "[sinks.out]",
            name: "out",
            base_dir: dir,
            settings: &settings,
            loaded: Default::default(),
        };
        let cfg: ParquetSinkConfig =
            neurostream_engine::parse_config(neurostream_engine::toml::from_str(config).unwrap(), &ctx).unwrap();
        let sink = ParquetSinkKind.build(cfg, &ctx, schema).unwrap();
        sink.open(neurostream_engine::WorkerPos { index: 0, peers: 1 }).unwrap()
    }

    /// Small signal frames of two streams, with markers, around a large one: the file holds
    /// every row in arrival order with its sample, values and marker, as when each frame was
    /// written on its own.
    #[test]
    fn small_signal_frames_are_joined_without_changing_the_rows() {
        use arrow::array::{Array, AsArray};
        use neurostream_engine::{Frame, Marker};
        let dir = tempfile::tempdir().unwrap();
        let schema = signal_schema();
        let mut writer = open_sink(dir.path(), "path = \"out.parquet\"\nmarkers = true", &schema);
        let mut expected: Vec<(i64, [f32; 2], Option<String>)> = Vec::new();
        let mut next = [0i64, 10_000];
        let frames = [
            (0, 1usize),
            (0, 3),
            (0, 2),
            (1, 1),
            (1, 5),
            (0, 700),
            (0, 1),
            (0, 2),
            (1, 4096),
            (1, 2),
            (0, 3),
        ];
        for (k, (s, rows)) in frames.into_iter().enumerate() {
            let stream = ["a", "b"][s];
            let samples: Vec<i64> = (next[s]..next[s] + rows as i64).collect();
            next[s] += rows as i64;
            let data: Vec<f32> = samples.iter().flat_map(|&t| [t as f32, -(t as f32)]).collect();
            let mut frame = Frame::new(stream.into(), schema.clone(), RowIndex::Samples(samples.clone()), data).unwrap();
            if rows > 1 {
                frame.markers.push(Marker {
                    row: 1,
                    label: format!("m{k}"),
                    duration_s: 0.0,
                });
            }
            for (r, &t) in samples.iter().enumerate() {
                let label = (rows > 1 && r == 1).then(|| format!("m{k}"));
                expected.push((t, [t as f32, -(t as f32)], label));
            }
            writer.write(&Batch::Dense(frame)).unwrap();
        }
        writer.finish(None).unwrap();
        let file = File::open(dir.path().join("out.parquet")).unwrap();
        let reader = parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder::try_new(file)
            .unwrap()
            .build()
            .unwrap();
        let mut got = Vec::new();
        for batch in reader {
            let b = batch.unwrap();
            let col = |n: &str| b.column_by_name(n).unwrap().clone();
            let (sample, c3, c4, marker) = (col("sample"), col("C3"), col("C4"), col("marker"));
            let (sample, c3, c4) = (
                sample.as_primitive::<arrow::datatypes::Int64Type>(),
                c3.as_primitive::<arrow::datatypes::Float32Type>(),
                c4.as_primitive::<arrow::datatypes::Float32Type>(),
            );
            let marker = marker.as_string::<i32>();
            for r in 0..b.num_rows() {
                let label = marker.is_valid(r).then(|| marker.value(r).to_string());
                got.push((sample.value(r), [c3.value(r), c4.value(r)], label));
            }
        }
        assert_eq!(got, expected);
    }

    /// A disk that fills up (the file being written is /dev/full): the write error names the
    /// target and its cause, and the target is not created.
    #[test]
    fn a_full_disk_fails_the_write_with_the_file_and_the_cause() {
        use neurostream_engine::Frame;
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("out.parquet");
        std::os::unix::fs::symlink("/dev/full", temp_name(&target, 0)).unwrap();
        let schema = signal_schema();
        let mut writer = open_sink(dir.path(), "path = \"out.parquet\"\nrow_group_size = 1000", &schema);
        let mut failed = None;
        for k in 0..100i64 {
            let samples: Vec<i64> = (k * 1000..(k + 1) * 1000).collect();
            let data: Vec<f32> = samples.iter().flat_map(|&t| [t as f32, 1.0]).collect();
            let frame = Frame::new("a".into(), schema.clone(), RowIndex::Samples(samples), data).unwrap();
            if let Err(e) = writer.write(&Batch::Dense(frame)) {
                failed = Some(e.to_string());
                break;
            }
        }
        let failed = failed.or_else(|| writer.finish(None).err().map(|e| e.to_string()));
        let message = failed.expect("writing 100,000 rows to a full disk failed");
        assert!(message.contains("out.parquet"), "{message}");
        assert!(message.contains("No space left"), "{message}");
        assert!(!target.exists(), "a failed write leaves no target");
    }

    /// Frames of samples `from..to` on both channels (values from the sample number).
    fn signal_frame(schema: &Arc<neurostream_engine::Schema>, from: i64, to: i64) -> Batch {
        let samples: Vec<i64> = (from..to).collect();
        let data: Vec<f32> = samples.iter().flat_map(|&t| [t as f32, -(t as f32)]).collect();
        Batch::Dense(neurostream_engine::Frame::new("a".into(), schema.clone(), RowIndex::Samples(samples), data).unwrap())
    }

    /// The `C3` column of a Parquet file.
    fn c3(path: &Path) -> Vec<f32> {
        let reader = parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder::try_new(File::open(path).unwrap())
            .unwrap()
            .build()
            .unwrap();
        reader
            .flat_map(|b| {
                let b = b.unwrap();
                let c = b
                    .column_by_name("C3")
                    .unwrap()
                    .as_any()
                    .downcast_ref::<arrow::array::Float32Array>()
                    .unwrap()
                    .clone();
                c.values().to_vec()
            })
            .collect()
    }

    /// A checkpointed output grows as one file: the finished target is that file (no copy). A
    /// run killed after a checkpoint resumes with exactly the rows it committed, also when the
    /// resumed run dies before its own first checkpoint and is resumed again.
    #[test]
    fn a_checkpointed_file_is_published_without_a_copy_and_resumes_to_the_committed_rows() {
        use neurostream_engine::checkpoint::{commit_staged, sync_staged};
        use std::os::unix::fs::MetadataExt;
        let dir = tempfile::tempdir().unwrap();
        let (target, config) = (
            dir.path().join("out.parquet"),
            "path = \"out.parquet\"\nrow_group_size = 1000",
        );
        let schema = signal_schema();
        let checkpoint = |w: &mut Box<dyn SinkWriter>| {
            let commit = w.precommit().unwrap();
            sync_staged(&commit.files).unwrap();
            commit_staged(&commit.files).unwrap();
            commit
        };

        // Uninterrupted: two checkpoints, then the end.
        let mut w = open_sink(dir.path(), config, &schema);
        w.start_checkpointed(None).unwrap();
        w.write(&signal_frame(&schema, 0, 1500)).unwrap();
        checkpoint(&mut w);
        w.write(&signal_frame(&schema, 1500, 2600)).unwrap();
        checkpoint(&mut w);
        w.write(&signal_frame(&schema, 2600, 3000)).unwrap();
        let open = segments_dir(&target).join("seg-000000.parquet.open");
        w.finish(None).unwrap();
        assert_eq!(c3(&target), (0..3000).map(|t| t as f32).collect::<Vec<_>>());
        assert_eq!(
            std::fs::metadata(&target).unwrap().ino(),
            std::fs::metadata(&open).unwrap().ino(),
            "the target is the grown file itself"
        );
        std::fs::remove_dir_all(segments_dir(&target)).unwrap();
        std::fs::remove_file(&target).unwrap();

        // Killed after a checkpoint at 1500 rows, with 700 more rows written after it.
        let mut w = open_sink(dir.path(), config, &schema);
        w.start_checkpointed(None).unwrap();
        w.write(&signal_frame(&schema, 0, 1500)).unwrap();
        let state = checkpoint(&mut w).state;
        w.write(&signal_frame(&schema, 1500, 2200)).unwrap();
        let _ = w.precommit().unwrap(); // staged, never committed: the kill came first
        drop(w);
        // Resumed: dies again before its first checkpoint, after sealing the committed rows.
        let mut w = open_sink(dir.path(), config, &schema);
        w.start_checkpointed(Some(&state)).unwrap();
        w.write(&signal_frame(&schema, 1500, 1600)).unwrap();
        drop(w);
        // Resumed from the same checkpoint again: the rows after 1500 come again and finish.
        let mut w = open_sink(dir.path(), config, &schema);
        w.start_checkpointed(Some(&state)).unwrap();
        w.write(&signal_frame(&schema, 1500, 2600)).unwrap();
        checkpoint(&mut w);
        w.write(&signal_frame(&schema, 2600, 3000)).unwrap();
        w.finish(None).unwrap();
        assert_eq!(
            c3(&target),
            (0..3000).map(|t| t as f32).collect::<Vec<_>>(),
            "every row once, in order"
        );
    }

    #[test]
    fn only_floating_point_columns_go_without_a_dictionary() {
        let item = Arc::new(Field::new("item", DataType::Float32, false));
        let schema = Schema::new(vec![
            Field::new("sample", DataType::Int64, false),
            Field::new("Cz", DataType::Float32, false),
            Field::new("act", DataType::FixedSizeList(item, 4), false),
            Field::new("token", DataType::Utf8, true),
            Field::new("score", DataType::Float64, true),
        ]);
        let names: Vec<String> = float_columns(&schema).iter().map(|c| c.string()).collect();
        assert_eq!(names.len(), 3, "{names:?}");
        assert_eq!(names[0], "Cz");
        assert!(names[1].starts_with("act."), "{names:?}");
        assert_eq!(names[2], "score");
    }
}
