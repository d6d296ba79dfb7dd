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
//! In a checkpointed run (`neurostream run --checkpoint-dir`) each output is written as
//! segments in a hidden directory beside it (`.<name>.parquet.segments/`): at every checkpoint
//! the open segment is closed, fsynced and staged, and committed when the checkpoint is durable.
//! A resumed run drops whatever was written after the checkpoint it resumes from. When the run
//! completes, the committed segments are merged in order into the target (atomically, as
//! above) and the directory is removed; a failed run leaves the target alone and keeps the
//! committed segments for `--resume`.

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
        }
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
        let props = WriterProperties::builder()
            .set_compression(compression)
            .set_max_row_group_row_count(Some(cfg.row_group_size))
            .set_created_by(format!("neurostream {}", env!("CARGO_PKG_VERSION")))
            .build();
        Ok(Arc::new(ParquetSink {
            path,
            single,
            tables,
            arrow: arrow_schema(input, &opts),
            opts,
            props,
            pipeline: ctx.settings.name.clone(),
            on_failure: cfg.on_failure,
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
        // Segment directories, and temporary files of a merge a crash interrupted.
        let (dir, prefix) = self.output_dir_and_prefix();
        let Ok(entries) = std::fs::read_dir(&dir) else { return Ok(()) };
        for e in entries.flatten() {
            let n = e.file_name().to_string_lossy().to_string();
            if !n.starts_with(&prefix) || !n.contains(".parquet.") {
                continue;
            }
            let p = e.path();
            let removed = if n.ends_with(".parquet.segments") {
                std::fs::remove_dir_all(&p)
            } else if n.ends_with(".tmp") {
                std::fs::remove_file(&p)
            } else {
                continue;
            };
            removed.map_err(|err| out_err(&p, format!("cannot remove staged output: {err}")))?;
        }
        Ok(())
    }
    fn remove_temporaries(&self, owners: neurostream_engine::process::TempOwners) -> Result<Vec<PathBuf>> {
        let (dir, prefix) = self.output_dir_and_prefix();
        let Ok(entries) = std::fs::read_dir(&dir) else {
            return Ok(Vec::new());
        };
        let mut removed = Vec::new();
        for e in entries.flatten() {
            let n = e.file_name().to_string_lossy().to_string();
            if n.starts_with(&prefix) && n.contains(".parquet.") && owners.own(&n) {
                let p = e.path();
                std::fs::remove_file(&p).map_err(|err| out_err(&p, format!("cannot remove a temporary file: {err}")))?;
                removed.push(p);
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

    fn open(&self, worker: WorkerPos) -> Result<Box<dyn SinkWriter>> {
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
    writer: Option<ArrowWriter<File>>,
    rows: u64,
    broken: bool,
    single: bool,
    pipeline: String,
    /// Checkpointed runs: where the segments go and how many were staged or committed.
    segments: Option<Segments>,
    on_failure: OnFailure,
}

/// The segments of one output in a checkpointed run.
struct Segments {
    dir: PathBuf,
    /// Segments staged or committed so far; the open one (if any) is number `next`.
    next: u32,
}

impl Segments {
    fn committed(&self, i: u32) -> PathBuf {
        self.dir.join(format!("seg-{i:06}.parquet"))
    }
    fn in_progress(&self) -> PathBuf {
        self.dir.join(format!("seg-{:06}.parquet.inprogress", self.next))
    }
}

/// What a checkpoint records of one output file.
#[derive(Clone, Debug, Serialize, Deserialize)]
struct FileState {
    segments: u32,
    rows: u64,
    time: bool,
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
            Some(s) => s.in_progress(),
            None => self.temp.clone(),
        }
    }

    fn writer(&mut self) -> Result<&mut ArrowWriter<File>> {
        if self.writer.is_none() {
            let path = self.current_path();
            let file = File::create(&path).map_err(|e| out_err(&path, format!("cannot create: {e}")))?;
            let w = ArrowWriter::try_new(file, self.arrow.clone(), Some(self.props.clone()))
                .map_err(|e| out_err(&self.target, format!("cannot start Parquet writer: {e}")))?;
            self.writer = Some(w);
        }
        Ok(self.writer.as_mut().unwrap())
    }

    fn discard(&mut self) {
        self.writer = None;
        let _ = std::fs::remove_file(self.current_path());
    }

    /// Enters checkpointed mode: a fresh segment directory, or the one of the checkpoint
    /// resumed from with everything written after it removed.
    fn start_segments(&mut self, resume: Option<FileState>) -> Result<()> {
        let dir = segments_dir(&self.target);
        let keep = resume.as_ref().map_or(0, |s| s.segments);
        if dir.exists() {
            let entries = std::fs::read_dir(&dir).map_err(|e| out_err(&dir, e.to_string()))?;
            for e in entries.flatten() {
                let name = e.file_name().to_string_lossy().to_string();
                let committed = name
                    .strip_prefix("seg-")
                    .and_then(|n| n.strip_suffix(".parquet"))
                    .and_then(|n| n.parse::<u32>().ok())
                    .is_some_and(|i| i < keep);
                if !committed {
                    std::fs::remove_file(e.path())
                        .map_err(|err| out_err(&e.path(), format!("cannot remove uncommitted segment: {err}")))?;
                }
            }
        }
        std::fs::create_dir_all(&dir).map_err(|e| out_err(&dir, format!("cannot create directory: {e}")))?;
        let segments = Segments { dir, next: keep };
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
        FileState {
            segments: self.segments.as_ref().map_or(0, |s| s.next),
            rows: self.rows,
            time: self.opts.time,
        }
    }

    /// Closes the open segment (if any rows went in since the last checkpoint) into a staged file.
    fn stage_segment(&mut self) -> Result<Option<StagedFile>> {
        if self.broken {
            return Err(out_err(&self.target, "an earlier write failed"));
        }
        let Some(writer) = self.writer.take() else { return Ok(None) };
        let seg = self.segments.as_mut().expect("checkpointed mode");
        let path = seg.in_progress();
        let staged = seg.dir.join(format!("seg-{:06}.parquet.staged", seg.next));
        let committed = seg.committed(seg.next);
        let closed = (|| -> std::result::Result<(), String> {
            let file = writer.into_inner().map_err(|e| e.to_string())?;
            file.sync_all().map_err(|e| format!("fsync: {e}"))?;
            drop(file);
            std::fs::rename(&path, &staged).map_err(|e| format!("rename: {e}"))?;
            sync_dir(&seg.dir);
            Ok(())
        })();
        if let Err(m) = closed {
            let _ = std::fs::remove_file(&path);
            self.broken = true;
            return Err(out_err(
                &path,
                format!("could not close the segment for a checkpoint ({m}); earlier checkpoints stay valid"),
            ));
        }
        seg.next += 1;
        Ok(Some(StagedFile { staged, committed }))
    }

    /// Completes a checkpointed output: merges the committed segments and the open one into
    /// the target, or on failure keeps the committed ones for `--resume`.
    fn commit_segments(mut self: Box<Self>, failure: Option<&str>) -> Result<Vec<String>> {
        let seg_dir = self.segments.as_ref().expect("checkpointed mode").dir.clone();
        if failure.is_some() || self.broken {
            self.discard();
            let n = self.segments.as_ref().map_or(0, |s| s.next);
            return Ok(vec![format!(
                "{}: not written (run failed); {n} committed segments kept in {} for --resume",
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
            writer
                .into_inner()
                .and_then(|f| f.sync_all().map_err(|e| parquet::errors::ParquetError::External(Box::new(e))))
                .map_err(|e| out_err(&path, format!("could not close the last segment: {e}")))?;
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
        // Rows with event times add the `time` column, decided by the first frame written.
        if self.writer.is_none() && !self.opts.time {
            let timed = match batch {
                Batch::Dense(f) => Some((&f.schema, &f.index)),
                Batch::Sparse(f) => Some((&f.schema, &f.index)),
                Batch::Table(_) => None,
            };
            if let Some((schema, RowIndex::Tokens { time: Some(_), .. })) = timed {
                self.opts.time = true;
                self.arrow = arrow_schema(schema, &self.opts);
            }
        }
        let record = match batch {
            Batch::Dense(frame) => frame_to_batch(frame, &self.arrow, &self.opts),
            Batch::Sparse(frame) => sparse_to_batch(frame, &self.arrow),
            Batch::Table(t) => Err(format!("table `{}` sent to a sink configured for frames", t.table)),
        }
        .map_err(|m| out_err(&self.target, m))?;
        self.write_record(&record)
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
        let files = self.stage_segment()?.into_iter().collect();
        Ok(SinkCommit {
            state: encode_state(&self.state())?,
            files,
        })
    }
}

impl ParquetFileWriter {
    fn write_record(&mut self, record: &arrow::record_batch::RecordBatch) -> Result<()> {
        if self.broken {
            return Ok(());
        }
        let target = self.target.clone();
        let result = self.writer()?.write(record);
        if let Err(e) = result {
            self.broken = true;
            self.discard();
            return Err(out_err(
                &target,
                format!("writing failed after {} rows ({e}); the target was left untouched", self.rows),
            ));
        }
        self.rows += record.num_rows() as u64;
        Ok(())
    }

    fn commit(mut self: Box<Self>, failure: Option<&str>) -> Result<Vec<String>> {
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
        let mut writer = self.writer.take().unwrap();
        writer.append_key_value_metadata(KeyValue::new("neurostream.status".to_string(), status));
        writer.append_key_value_metadata(KeyValue::new("neurostream.pipeline".to_string(), self.pipeline.clone()));
        let commit = (|| -> std::result::Result<(), String> {
            let file = writer.into_inner().map_err(|e| e.to_string())?;
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
            let first = segments_dir(&self.dir.join(format!("{table}.parquet"))).join("seg-000000.parquet");
            let arrow = read_segment_schema(&first).ok_or_else(|| {
                out_err(
                    &first,
                    "the first committed segment of this table is missing or unreadable; cannot resume",
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
            commit.files.extend(w.stage_segment()?);
            states.push((table.clone(), w.state()));
        }
        commit.state = encode_state(&states)?;
        Ok(commit)
    }
}
