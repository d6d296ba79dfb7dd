//! `parquet`: reads Parquet files in the activation, signal or features layout (see
//! `neurostream_engine::layout`). `path` is a file, a directory (a dataset: its `*.parquet`
//! files at every depth in path order, as Hive partitioning nests them) or a glob. With several workers (of all processes), row groups are cut into
//! pieces of about a sixteenth of each worker's share and dealt in order to the worker with
//! the fewest rows so far, so workers read about as many rows each and at about the same event
//! times; the event time of a row is its ordinal across all files in order.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use neurostream_engine::layout::Decoder;
use neurostream_engine::parquet_read;
use neurostream_engine::{
    Batch, EngineError, NodeConfig, NodeContext, Result, Schema, Source, SourceKind, SourceReader, SourceWaker, WorkerPos,
};
use parquet::arrow::arrow_reader::{ParquetRecordBatchReader, ParquetRecordBatchReaderBuilder};
use serde::{Deserialize, Serialize};

mod dataset;
pub use dataset::resolve_files;
use dataset::{stream_names, StreamBy};

/// Configuration of a `parquet` source.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ParquetSourceConfig {
    /// A file; a directory, read as a dataset: its `*.parquet` files at every depth (Hive
    /// partitions such as `date=2026-12-03/`), in path order, leaving out names that begin with
    /// `.` or `_`; or a glob pattern.
    pub path: String,
    /// Name of the activation vector column (`fixed_size_list`, `list` or `large_list` of
    /// float32, float64 or float16, read as float32; lengths are checked per row).
    #[serde(default = "default_column")]
    pub column: String,
    /// Sampling rate in Hz for signal files without `neurostream.sample_rate` metadata.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(extend("x-unit" = "Hz"))]
    pub sample_rate: Option<f64>,
    /// Largest frame in rows (default 8192); row groups are read in slices of this size.
    #[serde(default = "default_batch_rows")]
    #[schemars(extend("x-unit" = "rows"))]
    pub batch_rows: usize,
    /// Streams: by default every file is one stream, named by the node. `"file"`: each file is
    /// its own stream (one recording per file), named by its path below the files' common
    /// directory without `.parquet` (`sub-01`). The name of a Hive partition key (`"subject"`):
    /// the files under each `subject=…/` directory form the stream named by its value. Each
    /// stream ends after its last file, so operators finish its windows and let go of its state,
    /// and stateful operators split the streams over the workers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stream_by: Option<String>,
}

fn default_column() -> String {
    "act".into()
}
fn default_batch_rows() -> usize {
    8192
}

impl ParquetSourceConfig {
    /// Reads `path` with default options.
    pub fn new(path: &str) -> ParquetSourceConfig {
        ParquetSourceConfig {
            path: path.into(),
            column: default_column(),
            sample_rate: None,
            batch_rows: default_batch_rows(),
            stream_by: None,
        }
    }
}

impl NodeConfig for ParquetSourceConfig {
    const KIND: &'static str = "parquet";
}

/// The `parquet` source kind.
pub struct ParquetSourceKind;

impl SourceKind for ParquetSourceKind {
    type Config = ParquetSourceConfig;

    fn describe(&self) -> &'static str {
        "Parquet files (file, directory or glob) in the activation, signal or features layout"
    }
    fn build(&self, cfg: ParquetSourceConfig, ctx: &NodeContext) -> Result<Arc<dyn Source>> {
        if cfg.batch_rows == 0 {
            return Err(EngineError::config(ctx.label, "`batch_rows` must be at least 1"));
        }
        let by = StreamBy::parse(cfg.stream_by.as_deref()).map_err(|m| EngineError::config(ctx.label, m))?;
        let files = resolve_files(&ctx.input_file(&cfg.path)).map_err(|m| EngineError::config(ctx.label, m))?;
        let names = stream_names(&files, &by, ctx.name).map_err(|m| EngineError::config(ctx.label, m))?;
        // Each stream's files together, in path order, streams in name order.
        let mut files: Vec<(Arc<str>, PathBuf)> = names.into_iter().zip(files).collect();
        files.sort();
        let source = ParquetSource::open(ctx.name, files, &cfg)?;
        Ok(Arc::new(ParquetSource {
            ends_streams: by != StreamBy::One,
            ..source
        }))
    }
}

/// Rows of the activation-layout files at `path` whose `pos` is at least `skip_first` (reading
/// only that column); `None` when a file has no `pos` column or cannot be read.
pub fn count_rows_from_position(path: &Path, skip_first: u32) -> Option<u64> {
    use arrow::array::{Array, AsArray};
    use arrow::datatypes::UInt32Type;
    let mut total = 0u64;
    for f in resolve_files(path).ok()? {
        let builder = parquet_read::open(&f, Default::default()).ok()?;
        let idx = builder.schema().index_of("pos").ok()?;
        let mask = parquet::arrow::ProjectionMask::roots(builder.parquet_schema(), [idx]);
        let mut reader = builder.with_projection(mask).build().ok()?;
        while let Some(batch) = parquet_read::next_checked(&mut reader) {
            let batch = batch.ok()?;
            let pos = batch.column(0).as_primitive_opt::<UInt32Type>()?;
            total += (0..pos.len())
                .filter(|&r| pos.is_valid(r) && pos.value(r) >= skip_first)
                .count() as u64;
        }
    }
    Some(total)
}

#[derive(Clone, Debug)]
struct RowGroup {
    file: usize,
    index: usize,
    /// Ordinal of its first row across all files.
    first: u64,
    /// Row number of its first row within its file.
    file_row: u64,
    /// Rows in the group (a piece: rows of the piece).
    rows: u64,
    /// A piece: rows of the group before it (0: from the group's start).
    skip: u64,
    /// Rows of the whole group.
    group_rows: u64,
}

/// Pieces per worker the row groups are cut into: enough that dealing them evens out the
/// workers' rows within a few percent, few enough that opening each costs nothing.
const PIECES_PER_WORKER: u64 = 16;

/// The pieces worker `index` of `peers` reads, in event-time order: every group cut into
/// pieces of about `total / (peers * PIECES_PER_WORKER)` rows, each given to the worker with
/// the fewest rows so far.
fn deal(groups: &[RowGroup], total: u64, index: usize, peers: usize) -> std::collections::VecDeque<RowGroup> {
    if peers <= 1 {
        return groups.iter().cloned().collect();
    }
    let piece = total.div_ceil(peers as u64 * PIECES_PER_WORKER).max(1);
    let mut load = vec![0u64; peers];
    let mut mine = std::collections::VecDeque::new();
    for g in groups {
        let n = g.rows.div_ceil(piece);
        for k in 0..n {
            let (from, to) = (g.rows * k / n, g.rows * (k + 1) / n);
            let w = (0..peers).min_by_key(|&w| (load[w], w)).expect("peers > 1");
            load[w] += to - from;
            if w == index {
                mine.push_back(RowGroup {
                    first: g.first + from,
                    file_row: g.file_row + from,
                    rows: to - from,
                    skip: g.skip + from,
                    ..g.clone()
                });
            }
        }
    }
    mine
}

/// A configured Parquet source: the files, their row groups and the decoded layout.
#[derive(Debug)]
pub struct ParquetSource {
    name: Arc<str>,
    files: Vec<PathBuf>,
    /// The stream of each file.
    streams: Vec<Arc<str>>,
    /// Whether a stream's end follows its last row ([`Batch::End`]); with one stream, the end
    /// of the run ends it.
    ends_streams: bool,
    groups: Vec<RowGroup>,
    decoder: Decoder,
    total: u64,
    batch_rows: usize,
}

fn open_builder(path: &Path) -> Result<ParquetRecordBatchReaderBuilder<File>> {
    open_builder_with(path, false)
}

/// `page_index`: also read the file's page index, so that a row selection skips whole pages
/// without decoding them.
fn open_builder_with(path: &Path, page_index: bool) -> Result<ParquetRecordBatchReaderBuilder<File>> {
    use parquet::file::metadata::PageIndexPolicy;
    let policy = if page_index {
        PageIndexPolicy::Optional
    } else {
        PageIndexPolicy::Skip
    };
    let options = parquet::arrow::arrow_reader::ArrowReaderOptions::new().with_offset_index_policy(policy);
    parquet_read::open(path, options).map_err(|m| EngineError::input(path, m))
}

impl ParquetSource {
    /// Reads every file's footer and checks they share one layout and shape, and that the
    /// samples of a stream of signals increase from file to file. `files`: each with its
    /// stream, a stream's files together.
    pub fn open(name: &str, files: Vec<(Arc<str>, PathBuf)>, cfg: &ParquetSourceConfig) -> Result<ParquetSource> {
        let (streams, files): (Vec<Arc<str>>, Vec<PathBuf>) = files.into_iter().unzip();
        let mut decoder: Option<Decoder> = None;
        let mut groups = Vec::new();
        let mut total = 0u64;
        // The last file of the current stream with samples, and its last sample.
        let mut last_sample: Option<(usize, i64)> = None;
        for (fi, path) in files.iter().enumerate() {
            let builder = open_builder(path)?;
            let mut d = Decoder::new(builder.schema(), &cfg.column, cfg.sample_rate).map_err(|m| EngineError::input(path, m))?;
            if d.width() == 0 {
                // Variable-length lists without d_model metadata: learn the width from the first row.
                let mut reader = builder
                    .with_batch_size(1)
                    .build()
                    .map_err(|e| EngineError::input(path, e.to_string()))?;
                if let Some(batch) = parquet_read::next_checked(&mut reader) {
                    let batch = batch.map_err(|e| EngineError::input(path, format!("row group 0: {e}")))?;
                    d.decode(&batch, &Arc::from(name), 0, 0, &path.display().to_string())
                        .map_err(|m| EngineError::input(path, m))?;
                }
            }
            let builder = open_builder(path)?;
            let meta = builder.metadata();
            if d.schema.is_signal() {
                if fi > 0 && streams[fi] != streams[fi - 1] {
                    last_sample = None;
                }
                let range = match sample_range(meta) {
                    Some(r) => Some(r),
                    None => read_sample_range(path, meta)?,
                };
                if let Some((first, last)) = range {
                    if let Some((prev, prev_last)) = last_sample.filter(|&(_, l)| first <= l) {
                        return Err(EngineError::input(
                            path,
                            format!(
                                "its samples start at {first}, not after sample {prev_last} where {} ends, and both are read as stream `{}`: \
                                 set `stream_by = \"file\"` to read each file as a recording of its own (or a Hive partition key that groups them)",
                                files[prev].display(),
                                streams[fi]
                            ),
                        ));
                    }
                    last_sample = Some((fi, last));
                }
            }
            let mut file_row = 0u64;
            for (gi, rg) in meta.row_groups().iter().enumerate() {
                let rows = rg.num_rows() as u64; // checked by `parquet_read::open`
                if rows > 0 {
                    groups.push(RowGroup {
                        file: fi,
                        index: gi,
                        first: total,
                        file_row,
                        rows,
                        skip: 0,
                        group_rows: rows,
                    });
                }
                total = total
                    .checked_add(rows)
                    .ok_or_else(|| EngineError::input(path, "the files claim more than 2^64 rows (corrupt footer)"))?;
                file_row += rows;
            }
            match &decoder {
                None => decoder = Some(d),
                Some(first) if first.schema.width() != d.schema.width() && d.width() != 0 => {
                    return Err(EngineError::input(
                        path,
                        format!(
                            "shape mismatch: {} columns wide, but {} is {}",
                            d.schema.describe(),
                            files[0].display(),
                            first.schema.describe()
                        ),
                    ));
                }
                Some(first)
                    if first.schema.is_signal() != d.schema.is_signal()
                        || (first.schema.is_signal() && first.schema.channels != d.schema.channels) =>
                {
                    return Err(EngineError::input(
                        path,
                        format!(
                            "layout differs from {}: {} vs {}",
                            files[0].display(),
                            d.schema.describe(),
                            first.schema.describe()
                        ),
                    ));
                }
                _ => {}
            }
        }
        Ok(ParquetSource {
            name: name.into(),
            files,
            streams,
            ends_streams: false,
            groups,
            decoder: decoder.expect("at least one file"),
            total,
            batch_rows: cfg.batch_rows,
        })
    }
}

/// The first and last `sample` of a signal file without statistics, read from its `sample`
/// column: the first value of its first row group with rows, the last of its last.
fn read_sample_range(path: &Path, meta: &parquet::file::metadata::ParquetMetaData) -> Result<Option<(i64, i64)>> {
    use arrow::array::{Array, AsArray};
    let Some(column) = sample_leaf(meta) else {
        return Ok(None);
    };
    let groups: Vec<usize> = (0..meta.num_row_groups())
        .filter(|&g| meta.row_group(g).num_rows() > 0)
        .collect();
    let (Some(&first), Some(&last)) = (groups.first(), groups.last()) else {
        return Ok(None);
    };
    let values = |group: usize| -> Result<Vec<i64>> {
        let builder = open_builder(path)?;
        let mask = parquet::arrow::ProjectionMask::leaves(builder.parquet_schema(), [column]);
        let reader = builder
            .with_projection(mask)
            .with_row_groups(vec![group])
            .build()
            .map_err(|e| EngineError::input(path, format!("row group {group}: {e}")))?;
        let mut out = Vec::new();
        for batch in reader {
            let batch = batch.map_err(|e| EngineError::input(path, format!("row group {group}: {e}")))?;
            let cast = arrow::compute::cast(batch.column(0), &arrow::datatypes::DataType::Int64)
                .map_err(|e| EngineError::input(path, format!("`sample`: {e}")))?;
            let ints = cast.as_primitive::<arrow::datatypes::Int64Type>();
            out.extend((0..ints.len()).filter(|&r| ints.is_valid(r)).map(|r| ints.value(r)));
        }
        Ok(out)
    };
    let head = values(first)?;
    let tail = if last == first { head.clone() } else { values(last)? };
    Ok(head.first().copied().zip(tail.last().copied()))
}

/// The index of the `sample` column among a file's leaf columns.
fn sample_leaf(meta: &parquet::file::metadata::ParquetMetaData) -> Option<usize> {
    meta.file_metadata()
        .schema_descr()
        .columns()
        .iter()
        .position(|c| c.path().parts() == ["sample"])
}

/// The first and last `sample` of a signal file, from its row groups' statistics (the smallest
/// of the first group, the largest of the last); `None` without them.
fn sample_range(meta: &parquet::file::metadata::ParquetMetaData) -> Option<(i64, i64)> {
    use parquet::file::statistics::Statistics;
    let column = sample_leaf(meta)?;
    let groups: Vec<_> = meta.row_groups().iter().filter(|g| g.num_rows() > 0).collect();
    let bound = |g: &parquet::file::metadata::RowGroupMetaData, max: bool| match g.column(column).statistics()? {
        Statistics::Int64(s) => if max { s.max_opt() } else { s.min_opt() }.copied(),
        Statistics::Int32(s) => if max { s.max_opt() } else { s.min_opt() }.map(|&v| v as i64),
        _ => None,
    };
    Some((bound(groups.first()?, false)?, bound(groups.last()?, true)?))
}

impl ParquetSource {
    /// With `stream_by`: the worker of `peers` each stream is read on, whole
    /// ([`crate::file_streams::place_largest_first`], streams in name order).
    fn placement(&self, peers: usize) -> std::collections::HashMap<Arc<str>, usize> {
        let mut rows: std::collections::BTreeMap<&Arc<str>, u64> = Default::default();
        for g in &self.groups {
            *rows.entry(&self.streams[g.file]).or_default() += g.rows;
        }
        let (streams, sizes): (Vec<&Arc<str>>, Vec<u64>) = rows.into_iter().unzip();
        let placed = crate::file_streams::place_largest_first(&sizes, peers);
        streams.into_iter().cloned().zip(placed).collect()
    }

    /// With `stream_by`: the row groups of the streams `worker` reads whole
    /// ([`ParquetSource::placement`]; its ByStream operators hold them), one stream after
    /// another, and the event time after each file's stream. Event times count the worker's
    /// rows, so the workers' streams run side by side in event time: dealt in pieces at the
    /// same times, one recording after another, every worker would read the recording that
    /// one worker's operators are busy with.
    fn whole_streams(&self, worker: WorkerPos) -> (std::collections::VecDeque<RowGroup>, Vec<u64>) {
        let placement = self.placement(worker.peers);
        let mut mine = std::collections::VecDeque::new();
        let mut ends = vec![0u64; self.files.len()];
        let mut at = 0u64;
        for g in &self.groups {
            if placement.get(&self.streams[g.file]) == Some(&worker.index) {
                mine.push_back(RowGroup { first: at, ..g.clone() });
                at += g.rows;
            }
        }
        // A stream ends where its last group on this worker does.
        let mut last_end: Option<(&Arc<str>, u64)> = None;
        for g in mine.iter().rev() {
            let stream = &self.streams[g.file];
            let end = match last_end {
                Some((s, e)) if s == stream => e,
                _ => g.first + g.rows,
            };
            ends[g.file] = end;
            last_end = Some((stream, end));
        }
        (mine, ends)
    }
}

impl Source for ParquetSource {
    fn replayable(&self) -> bool {
        true // a pure function of its files / seed: reopening yields the same batches
    }
    fn input_files(&self) -> Vec<std::path::PathBuf> {
        self.files.clone()
    }
    fn schema(&self) -> Arc<Schema> {
        self.decoder.schema.clone()
    }
    fn total_rows(&self) -> Option<u64> {
        Some(self.total)
    }
    fn stream_placement(&self, peers: usize) -> Vec<(Arc<str>, usize)> {
        match self.ends_streams {
            true => self.placement(peers).into_iter().collect(),
            false => Vec::new(),
        }
    }
    fn open(&self, worker: WorkerPos) -> Result<Box<dyn SourceReader>> {
        let (mine, stream_ends) = if self.ends_streams {
            let (groups, ends) = self.whole_streams(worker);
            (groups, Some(ends))
        } else {
            (deal(&self.groups, self.total, worker.index, worker.peers), None)
        };
        let pieces = PieceReader {
            name: self.name.clone(),
            files: self.files.clone(),
            streams: self.streams.clone(),
            stream_ends,
            decoder: self.decoder.clone(),
            groups: mine,
            current: None,
            batch_rows: self.batch_rows,
        };
        // A helper thread only helps where a core would otherwise idle: with as many workers
        // as cores, it competed with them (2 workers on 2 cores: 1.3 s -> 1.6 s for a copy).
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        if worker.peers < cores {
            Ok(Box::new(ParquetReader::Waiting(Box::new(pieces))))
        } else {
            Ok(Box::new(pieces))
        }
    }
}

struct OpenGroup {
    group: RowGroup,
    reader: ParquetRecordBatchReader,
    /// Rows of the group already emitted.
    done: u64,
}

/// Reads one worker's pieces in order, decoding each batch where it is called.
struct PieceReader {
    name: Arc<str>,
    files: Vec<PathBuf>,
    /// The stream of each file.
    streams: Vec<Arc<str>>,
    /// With streams that end ([`ParquetSource::ends_streams`]): the event time after each
    /// file's stream.
    stream_ends: Option<Vec<u64>>,
    decoder: Decoder,
    groups: std::collections::VecDeque<RowGroup>,
    current: Option<OpenGroup>,
    batch_rows: usize,
}

impl PieceReader {
    fn where_(&self, g: &RowGroup) -> String {
        format!("{}: row group {}", self.files[g.file].display(), g.index)
    }

    /// The end of the stream whose last rows `g` holds, at the time after them.
    fn end_after(&self, g: &RowGroup) -> Option<(u64, Batch)> {
        let end = g.first + g.rows;
        (self.stream_ends.as_ref()?[g.file] == end).then(|| {
            let stream = self.streams[g.file].clone();
            let schema = self.decoder.schema.clone();
            (end, Batch::End(neurostream_engine::frame::StreamEnd { stream, schema }))
        })
    }
}

impl SourceReader for PieceReader {
    fn next_batch(&mut self) -> Result<Option<(u64, Batch)>> {
        loop {
            if self.current.is_none() {
                let Some(group) = self.groups.pop_front() else {
                    return Ok(None);
                };
                let path = &self.files[group.file];
                let piece = group.rows < group.group_rows;
                let mut builder = open_builder_with(path, piece)?
                    .with_row_groups(vec![group.index])
                    .with_batch_size(self.batch_rows);
                if piece {
                    use parquet::arrow::arrow_reader::{RowSelection, RowSelector};
                    let mut pick = vec![
                        RowSelector::skip(group.skip as usize),
                        RowSelector::select(group.rows as usize),
                    ];
                    pick.retain(|s| s.row_count > 0);
                    builder = builder.with_row_selection(RowSelection::from(pick));
                }
                let reader = builder
                    .build()
                    .map_err(|e| EngineError::input(path, format!("row group {}: {e}", group.index)))?;
                self.current = Some(OpenGroup { group, reader, done: 0 });
            }
            let cur = self.current.as_mut().unwrap();
            match parquet_read::next_checked(&mut cur.reader) {
                None => {
                    let g = self.current.take().expect("read above").group;
                    if let Some(end) = self.end_after(&g) {
                        return Ok(Some(end));
                    }
                }
                Some(Err(e)) => {
                    let g = cur.group.clone();
                    self.current = None;
                    return Err(EngineError::Input {
                        path: self.files[g.file].clone(),
                        message: format!("row group {}: corrupt or truncated data: {e}", g.index),
                    });
                }
                Some(Ok(batch)) => {
                    let time = cur.group.first + cur.done;
                    let file_row = cur.group.file_row + cur.done;
                    cur.done += batch.num_rows() as u64;
                    let g = cur.group.clone();
                    let where_ = format!("row group {}", g.index);
                    let decoded = self
                        .decoder
                        .decode_batch(&batch, &self.streams[g.file], time, file_row, &where_)
                        .map_err(|m| EngineError::Input {
                            path: self.files[g.file].clone(),
                            message: m,
                        })?;
                    return Ok(Some((time, decoded)));
                }
            }
        }
    }

    fn next_time(&self) -> Option<u64> {
        match &self.current {
            Some(c) => Some(c.group.first + c.done),
            None => self.groups.front().map(|g| g.first),
        }
    }

    /// Resuming: whole row groups (pieces) are skipped from the metadata (a piece yields
    /// ceil(rows / batch_rows) batches) without reading them; the rest is read and dropped.
    fn skip_batches(&mut self, mut batches: u64) -> Result<u64> {
        let per = self.batch_rows.max(1) as u64;
        let mut rows = 0;
        while self.current.is_none() {
            let Some(g) = self.groups.front() else { break };
            // A group that ends its stream is followed by the stream's end, a batch too.
            let in_group = g.rows.div_ceil(per) + u64::from(self.end_after(g).is_some());
            if in_group > batches {
                break;
            }
            batches -= in_group;
            rows += g.rows;
            self.groups.pop_front();
        }
        for i in 0..batches {
            match self.next_batch()? {
                Some((_, b)) => rows += b.rows() as u64,
                None => {
                    return Err(EngineError::Checkpoint(format!(
                        "`{}` ended {} batches short of the checkpoint's position: its files changed since",
                        self.name,
                        batches - i
                    )))
                }
            }
        }
        Ok(rows)
    }

    fn location(&self) -> String {
        match &self.current {
            Some(c) => self.where_(&c.group),
            None => String::new(),
        }
    }
}

/// Batches a reader's helper thread has decoded ahead of the worker.
const READ_AHEAD: usize = 2;

/// A worker's reader where the machine has more cores than the run has workers: its pieces
/// are read and decoded on a helper thread, [`READ_AHEAD`] batches ahead, so that reading and decompressing overlap with the rest of the pipeline on
/// the worker (a Parquet-to-Parquet copy on one worker otherwise decompresses and compresses
/// in turn on one core). Until the first batch is asked for (a resume skips first), the
/// reader stays on the worker.
enum ParquetReader {
    Waiting(Box<PieceReader>),
    Reading(Box<Prefetch>),
    Moving,
}

struct Prefetch {
    /// Batches, then `Ok(None)` at the end of the data: a channel that closes without it means
    /// the helper died, which is an error, not the end.
    rx: crossbeam_channel::Receiver<Result<Option<(u64, Batch)>>>,
    /// The next item, taken off the channel by `ready`.
    next: Option<Result<Option<(u64, Batch)>>>,
    /// A lower bound on the next batch's time: the end of the last one handed out.
    after_last: u64,
    /// The end of the data (or an error) was handed out.
    done: bool,
    location: String,
}

impl ParquetReader {
    /// Starts the helper thread (once), handing it the pieces still to read.
    fn start(&mut self, waker: Option<SourceWaker>) {
        if !matches!(self, ParquetReader::Waiting(_)) {
            return;
        }
        let ParquetReader::Waiting(reader) = std::mem::replace(self, ParquetReader::Moving) else {
            unreachable!("checked above")
        };
        let mut reader = *reader;
        let after_last = reader.next_time().unwrap_or(0);
        let location = reader.location();
        let (tx, rx) = crossbeam_channel::bounded(READ_AHEAD);
        let spawned = std::thread::Builder::new()
            .name(format!("parquet {}", reader.name))
            .spawn(move || loop {
                let item = reader.next_batch();
                let end = !matches!(item, Ok(Some(_)));
                let sent = tx.send(item).is_ok();
                if let Some(w) = &waker {
                    w();
                }
                if end || !sent {
                    return;
                }
            });
        *self = match spawned {
            Ok(_) => ParquetReader::Reading(Box::new(Prefetch {
                rx,
                next: None,
                after_last,
                done: false,
                location,
            })),
            Err(e) => ParquetReader::Reading(Box::new(Prefetch {
                rx: crossbeam_channel::never(),
                next: Some(Err(EngineError::Runtime(format!(
                    "parquet: cannot start a reader thread: {e}"
                )))),
                after_last,
                done: false,
                location,
            })),
        };
    }
}

impl Prefetch {
    /// Takes the next item off the channel without waiting; false when none is there yet.
    fn poll(&mut self) -> bool {
        if self.next.is_some() || self.done {
            return true;
        }
        match self.rx.try_recv() {
            Ok(item) => self.next = Some(item),
            Err(crossbeam_channel::TryRecvError::Empty) => return false,
            Err(crossbeam_channel::TryRecvError::Disconnected) => self.next = Some(Err(self.died())),
        }
        true
    }

    /// The error for a helper that stopped before the end of its data.
    fn died(&self) -> EngineError {
        EngineError::Runtime(format!(
            "parquet: the reader thread stopped before the end of the data (after {})",
            self.location
        ))
    }
}

impl SourceReader for ParquetReader {
    fn next_batch(&mut self) -> Result<Option<(u64, Batch)>> {
        self.start(None);
        let ParquetReader::Reading(p) = self else {
            unreachable!("started above")
        };
        let item = match p.next.take() {
            Some(item) => item,
            None if p.done => Ok(None),
            None => p.rx.recv().unwrap_or_else(|_| Err(p.died())),
        };
        match item {
            Ok(Some((time, batch))) => {
                p.after_last = time + batch.rows() as u64;
                Ok(Some((time, batch)))
            }
            end_or_error => {
                p.done = true;
                end_or_error
            }
        }
    }

    fn next_time(&self) -> Option<u64> {
        match self {
            ParquetReader::Waiting(r) => r.next_time(),
            ParquetReader::Reading(p) => match &p.next {
                Some(Ok(Some((time, _)))) => Some(*time),
                Some(Ok(None)) => None,
                Some(Err(_)) => Some(p.after_last),
                None if p.done => None,
                None => Some(p.after_last),
            },
            ParquetReader::Moving => None,
        }
    }

    fn ready(&mut self) -> bool {
        match self {
            ParquetReader::Waiting(_) => true,
            ParquetReader::Reading(p) => p.poll(),
            ParquetReader::Moving => true,
        }
    }

    fn set_waker(&mut self, waker: SourceWaker) -> bool {
        self.start(Some(waker));
        true
    }

    fn skip_batches(&mut self, batches: u64) -> Result<u64> {
        match self {
            ParquetReader::Waiting(r) => r.skip_batches(batches),
            _ => Err(EngineError::Runtime("parquet: skipping after reading began".into())),
        }
    }

    fn location(&self) -> String {
        match self {
            ParquetReader::Waiting(r) => r.location(),
            ParquetReader::Reading(p) => p.location.clone(),
            ParquetReader::Moving => String::new(),
        }
    }
}

#[cfg(test)]
mod deal_tests {
    use super::*;

    fn groups(sizes: &[u64]) -> (Vec<RowGroup>, u64) {
        let mut first = 0;
        let groups = sizes
            .iter()
            .enumerate()
            .map(|(i, &rows)| {
                let g = RowGroup {
                    file: 0,
                    index: i,
                    first,
                    file_row: first,
                    rows,
                    skip: 0,
                    group_rows: rows,
                };
                first += rows;
                g
            })
            .collect();
        (groups, first)
    }

    /// A signal file of row groups of `sizes` rows (channel A holds the sample number).
    fn signal_file(dir: &Path, sizes: &[usize]) -> PathBuf {
        signal_file_at(dir, "s.parquet", 0, sizes)
    }

    /// [`signal_file`] named `name` under `dir`, its samples from `start`.
    fn signal_file_at(dir: &Path, name: &str, start: i64, sizes: &[usize]) -> PathBuf {
        use neurostream_engine::layout::{arrow_schema, frame_to_batch, EncodeOptions};
        use neurostream_engine::{Frame, RowIndex};
        let schema = Arc::new(Schema::signal(&["A", "B"], "uV", 100.0));
        let target = arrow_schema(&schema, &EncodeOptions::default());
        let path = dir.join(name);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        // Compressed, so that damaged pages fail to decode rather than read as other numbers.
        let props = parquet::file::properties::WriterProperties::builder()
            .set_compression(parquet::basic::Compression::ZSTD(Default::default()))
            .build();
        let mut w = parquet::arrow::ArrowWriter::try_new(File::create(&path).unwrap(), target.clone(), Some(props)).unwrap();
        let mut at = start;
        for &n in sizes {
            let data: Vec<f32> = (at..at + n as i64).flat_map(|s| [s as f32, -1.0]).collect();
            let f = Frame::new(
                "s".into(),
                schema.clone(),
                RowIndex::Samples((at..at + n as i64).collect()),
                data,
            )
            .unwrap();
            w.write(&frame_to_batch(&f, &target, &EncodeOptions::default()).unwrap())
                .unwrap();
            w.flush().unwrap();
            at += n as i64;
        }
        w.close().unwrap();
        path
    }

    fn drain(r: &mut dyn SourceReader) -> Result<Vec<(u64, Vec<f32>)>> {
        let mut out = Vec::new();
        while let Some((t, b)) = r.next_batch()? {
            let Batch::Dense(f) = b else {
                panic!("signal batches are dense")
            };
            assert!(r.next_time().is_none_or(|n| n >= t + f.rows() as u64));
            out.push((t, f.data.clone()));
        }
        Ok(out)
    }

    /// The helper thread hands the worker exactly the batches the worker would read itself,
    /// wakes it when one is ready, and a damaged file's error still names the file.
    #[test]
    fn read_ahead_yields_the_batches_of_reading_in_place() {
        let dir = tempfile::tempdir().unwrap();
        let path = signal_file(dir.path(), &[100, 100, 37]);
        let cfg = ParquetSourceConfig {
            batch_rows: 16,
            sample_rate: None,
            ..ParquetSourceConfig::new(path.to_str().unwrap())
        };
        let src = ParquetSource::open("s", vec![("s".into(), path.clone())], &cfg).unwrap();
        for peers in [1, 2] {
            for index in 0..peers {
                let pieces = || PieceReader {
                    name: "s".into(),
                    files: vec![path.clone()],
                    streams: vec!["s".into()],
                    stream_ends: None,
                    decoder: src.decoder.clone(),
                    groups: deal(&src.groups, src.total, index, peers),
                    current: None,
                    batch_rows: 16,
                };
                let mut ahead = ParquetReader::Waiting(Box::new(pieces()));
                let woken = Arc::new(std::sync::atomic::AtomicUsize::new(0));
                let w = woken.clone();
                assert!(ahead.set_waker(Arc::new(move || {
                    w.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                })));
                assert!(matches!(ahead, ParquetReader::Reading(_)), "not reading ahead");
                let (a, b) = (drain(&mut ahead).unwrap(), drain(&mut pieces()).unwrap());
                assert_eq!(
                    a.iter().map(|b| b.1.len() / 2).sum::<usize>(),
                    b.iter().map(|b| b.1.len() / 2).sum::<usize>()
                );
                assert_eq!(a, b, "worker {index} of {peers}");
                assert!(woken.load(std::sync::atomic::Ordering::SeqCst) >= a.len());
            }
        }
        // Damage the data pages (the footer stays): the error comes through the helper and
        // names the file.
        let mut bytes = std::fs::read(&path).unwrap();
        let at = bytes.len() / 4;
        bytes[at..at + 200].fill(0xA7);
        std::fs::write(&path, &bytes).unwrap();
        let src = ParquetSource::open("s", vec![("s".into(), path.clone())], &cfg).unwrap();
        let err = drain(src.open(WorkerPos { index: 0, peers: 1 }).unwrap().as_mut())
            .unwrap_err()
            .to_string();
        assert!(err.contains("s.parquet"), "{err}");
    }

    /// A copy of a Parquet file written without statistics (beside it, `*.bare`).
    fn without_statistics(path: &Path) -> PathBuf {
        let reader = ParquetRecordBatchReaderBuilder::try_new(File::open(path).unwrap()).unwrap();
        let schema = reader.schema().clone();
        let props = parquet::file::properties::WriterProperties::builder()
            .set_statistics_enabled(parquet::file::properties::EnabledStatistics::None)
            .build();
        let out = path.with_extension("bare");
        let mut w = parquet::arrow::ArrowWriter::try_new(File::create(&out).unwrap(), schema, Some(props)).unwrap();
        for batch in reader.build().unwrap() {
            w.write(&batch.unwrap()).unwrap();
            w.flush().unwrap();
        }
        w.close().unwrap();
        let meta = ParquetRecordBatchReaderBuilder::try_new(File::open(&out).unwrap()).unwrap();
        assert!(sample_range(meta.metadata()).is_none(), "statistics left in");
        out
    }

    /// Everything `reader` yields: (time, stream, first sample or `None` for a stream's end).
    fn stream_events(reader: &mut dyn SourceReader) -> Vec<(u64, String, Option<i64>)> {
        let mut out = Vec::new();
        while let Some((t, b)) = reader.next_batch().unwrap() {
            let first = match &b {
                Batch::Dense(f) => match &f.index {
                    neurostream_engine::RowIndex::Samples(s) => Some(s[0]),
                    other => panic!("{other:?}"),
                },
                Batch::End(_) => None,
                other => panic!("{other:?}"),
            };
            assert!(reader.next_time().is_none_or(|n| n >= t));
            out.push((t, b.stream().to_string(), first));
        }
        out
    }

    fn build(path: &Path, stream_by: Option<&str>, batch_rows: usize) -> Result<Arc<dyn Source>> {
        let cfg = ParquetSourceConfig {
            batch_rows,
            stream_by: stream_by.map(str::to_string),
            ..ParquetSourceConfig::new(path.to_str().unwrap())
        };
        let settings = neurostream_engine::PipelineSettings::default();
        let ctx = NodeContext {
            label: "[sources.eeg]",
            name: "eeg",
            base_dir: Path::new("/"),
            settings: &settings,
            loaded: Default::default(),
        };
        ParquetSourceKind.build(cfg, &ctx)
    }

    /// `stream_by`: each recording is a stream of its own, named by its file or partition, in
    /// name order, its end right after its last rows (on the worker reading them); a resume
    /// skips ends as batches. By default, files whose samples do not follow on are an error that
    /// names both files and the key.
    #[test]
    fn streams_by_file_or_partition_end_after_their_rows() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("ds");
        signal_file_at(&root, "sub-02.parquet", 0, &[30, 10]);
        signal_file_at(&root, "sub-01.parquet", 0, &[25]);
        let src = build(&root, Some("file"), 16).unwrap();
        let events = stream_events(src.open(WorkerPos { index: 0, peers: 1 }).unwrap().as_mut());
        let s = |n: &str| n.to_string();
        assert_eq!(
            events,
            [
                (0, s("sub-01"), Some(0)),
                (16, s("sub-01"), Some(16)),
                (25, s("sub-01"), None),
                (25, s("sub-02"), Some(0)),
                (41, s("sub-02"), Some(16)),
                (55, s("sub-02"), Some(30)),
                (65, s("sub-02"), None),
            ]
        );
        // Two, three workers: each recording whole on the worker it is placed on (the larger
        // first, each to the worker with the fewest rows), its batches as one worker reads them,
        // its times counting that worker's rows: the recordings run side by side in event time.
        for peers in [2, 3] {
            let placed: std::collections::HashMap<String, usize> = src
                .stream_placement(peers)
                .into_iter()
                .map(|(s, w)| (s.to_string(), w))
                .collect();
            assert_eq!(placed, [(s("sub-02"), 0), (s("sub-01"), 1)].into_iter().collect());
            let rebased = |name: &str, start: u64| -> Vec<_> {
                let events = events.iter().filter(|e| e.1 == name);
                events.map(|(t, n, f)| (t - start, n.clone(), *f)).collect()
            };
            let want = [rebased("sub-02", 25), rebased("sub-01", 0), Vec::new()];
            for (w, want) in want.iter().take(peers).enumerate() {
                let got = stream_events(src.open(WorkerPos { index: w, peers }).unwrap().as_mut());
                assert_eq!(&got, want, "worker {w} of {peers}");
            }
        }
        // Resuming after 3 batches (sub-01's two and its end) starts at sub-02.
        let mut r = src.open(WorkerPos { index: 0, peers: 1 }).unwrap();
        assert_eq!(r.skip_batches(3).unwrap(), 25);
        assert_eq!(stream_events(r.as_mut())[0], (25, s("sub-02"), Some(0)));
        let mut r = src.open(WorkerPos { index: 0, peers: 1 }).unwrap();
        assert_eq!(r.skip_batches(2).unwrap(), 25);
        assert_eq!(stream_events(r.as_mut())[0], (25, s("sub-01"), None));

        // By default, one stream: the second recording's samples restart (told from the
        // statistics, or from the column where a writer left them out).
        let err = build(&root, None, 16).err().expect("samples restart").to_string();
        assert!(
            err.contains("sub-02.parquet") && err.contains("sub-01.parquet") && err.contains("stream_by = \"file\""),
            "{err}"
        );
        let bare = dir.path().join("bare");
        for (name, start) in [("a.parquet", 0), ("b.parquet", 0)] {
            let path = signal_file_at(&bare, name, start, &[10, 10]);
            let rewritten = without_statistics(&path);
            std::fs::rename(rewritten, &path).unwrap();
        }
        let err = build(&bare, None, 16).err().expect("samples restart").to_string();
        assert!(err.contains("b.parquet") && err.contains("a.parquet"), "{err}");
        signal_file_at(&bare, "b.parquet", 20, &[10]);
        let b = bare.join("b.parquet");
        std::fs::rename(without_statistics(&b), &b).unwrap();
        assert!(build(&bare, None, 16).is_ok(), "samples that follow on are one stream");
        // Parts of one recording whose samples follow on are one stream, by default or by key.
        let parts = dir.path().join("parts");
        signal_file_at(&parts, "subject=1/part-0.parquet", 0, &[20]);
        signal_file_at(&parts, "subject=1/part-1.parquet", 20, &[20]);
        signal_file_at(&parts, "subject=2/part-0.parquet", 0, &[5]);
        let src = build(&parts, Some("subject"), 64).unwrap();
        let events = stream_events(src.open(WorkerPos { index: 0, peers: 1 }).unwrap().as_mut());
        assert_eq!(
            events,
            [
                (0, s("1"), Some(0)),
                (20, s("1"), Some(20)),
                (40, s("1"), None),
                (40, s("2"), Some(0)),
                (45, s("2"), None),
            ]
        );
        assert!(build(&parts.join("subject=1"), None, 64).is_ok());
        let err = build(&parts, Some("session"), 64).err().unwrap().to_string();
        assert!(err.contains("no `session=…` directory"), "{err}");
    }

    /// Every row is read by exactly one worker, each worker's pieces come in event-time order,
    /// and the workers' shares differ by at most one piece (4 groups of 16384 rows and a short
    /// one gave 55 % / 45 % when whole groups were dealt).
    #[test]
    fn pieces_cover_every_row_once_in_order_and_even_out_the_workers() {
        for (sizes, peers) in [
            (vec![16384, 16384, 16384, 10848], 2),
            (vec![5, 1, 700, 3], 3),
            (vec![1], 4),
            (vec![1000; 7], 2),
        ] {
            let (gs, total) = groups(&sizes);
            let shares: Vec<_> = (0..peers).map(|w| deal(&gs, total, w, peers)).collect();
            let mut seen = vec![0u8; total as usize];
            for share in &shares {
                for p in share {
                    assert_eq!(p.first, gs[p.index].first + p.skip);
                    assert!(p.skip + p.rows <= p.group_rows);
                    seen[p.first as usize..(p.first + p.rows) as usize]
                        .iter_mut()
                        .for_each(|s| *s += 1);
                }
                assert!(share
                    .iter()
                    .zip(share.iter().skip(1))
                    .all(|(a, b)| a.first + a.rows <= b.first));
            }
            assert!(seen.iter().all(|&s| s == 1), "{sizes:?} x {peers}");
            let rows: Vec<u64> = shares.iter().map(|s| s.iter().map(|p| p.rows).sum()).collect();
            let piece = total.div_ceil(peers as u64 * PIECES_PER_WORKER).max(1);
            let (lo, hi) = (*rows.iter().min().unwrap(), *rows.iter().max().unwrap());
            assert!(hi - lo <= 2 * piece, "{sizes:?} x {peers}: {rows:?}");
        }
        let (gs, total) = groups(&[10, 20]);
        assert_eq!(deal(&gs, total, 0, 1).len(), 2);
    }
}
