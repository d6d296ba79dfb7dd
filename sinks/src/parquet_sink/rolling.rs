//! Rolling, partitioned Parquet output: a directory of parts
//! `[<partition>/]part-<worker>-<seq>.parquet` that grows while the run goes on.
//!
//! A part is written under a hidden temporary name in its partition directory and appears
//! under its final name, complete, when it closes: when its event-time interval
//! (`roll_every`) ends, when it reaches `roll_rows` rows or about `roll_bytes` bytes, when too
//! many parts are open (`max_open_parts`, least recently written first), and when the run
//! ends. In a checkpointed run a part also closes at every checkpoint and appears only when
//! that checkpoint is durable (two-phase commit), so after kill -9 and `--resume` the rows
//! across all parts equal an uninterrupted run's. Each open part encodes on a thread of its own
//! ([`BackgroundWriter`]), so `roll_bytes` is checked against the size that thread reports.
//!
//! Each writer keeps `_manifest/worker-NNNNN.json` (its committed parts, its event-time
//! watermark) and deletes its own parts that `keep` no longer retains; a partition gets
//! `_SUCCESS` once every writer has passed its end (see [`super::manifest`]).

use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use arrow::array::{ArrayRef, AsArray, UInt32Array};
use arrow::datatypes::{DataType, Schema as ArrowSchema, TimeUnit, TimestampNanosecondType};
use arrow::record_batch::RecordBatch;
use arrow::util::display::{ArrayFormatter, FormatOptions};
use neurostream_engine::checkpoint::StagedFile;
use neurostream_engine::files::sync_dir;
use neurostream_engine::Result;
use parquet::arrow::ArrowWriter;
use parquet::file::metadata::KeyValue;
use parquet::file::properties::WriterProperties;
use serde::{Deserialize, Serialize};

use super::background_writer::BackgroundWriter;
use super::manifest::{mark_complete, Manifest, PartInfo, MANIFEST_DIR};
use super::partition::PartitionSpec;
use super::{out_err, OnFailure};

/// How much finished output a writer keeps.
#[derive(Clone, Copy, Debug, PartialEq)]
pub(super) enum Keep {
    /// Its newest N parts.
    Parts(usize),
    /// Parts whose newest row is at most this much event time (ns) behind the watermark.
    Age(i64),
}

/// When parts close, where they go and what is kept: the rolling keys of a `parquet` sink.
#[derive(Debug)]
pub(super) struct RollPolicy {
    /// Event-time interval of a part (ns), aligned to the Unix epoch.
    pub every_ns: Option<i64>,
    /// Rows per part.
    pub rows: Option<u64>,
    /// Bytes per part (approximate: encoded size so far).
    pub bytes: Option<u64>,
    /// Retention.
    pub keep: Option<Keep>,
    /// Rows more than this much event time (ns) behind the watermark are dropped and counted.
    pub late_after_ns: Option<i64>,
    /// Open parts per writer.
    pub max_open: usize,
    /// Partition directories.
    pub partition: PartitionSpec,
    /// Signals: the event time (ns since the Unix epoch) of sample 0, for time partitions.
    pub origin_ns: i64,
    /// Parquet writer settings.
    pub props: WriterProperties,
    /// Pipeline name, in each part's metadata.
    pub pipeline: String,
    /// What a failed run does with the open parts.
    pub on_failure: OnFailure,
}

#[derive(Clone, Debug, PartialEq, Eq)]
struct PartKey {
    partition: String,
    bucket: Option<i64>,
}

struct OpenPart {
    key: PartKey,
    end: Option<i64>,
    seq: u64,
    temp: PathBuf,
    /// Encodes on a thread of its own, like the single-file sink's writer.
    writer: BackgroundWriter,
    rows: u64,
    min_t: Option<i64>,
    max_t: Option<i64>,
    used: u64,
}

/// What a checkpoint records of a rolling writer.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub(super) struct RollingState {
    next_seq: u64,
    /// Committed parts.
    parts: Vec<PartInfo>,
    /// Parts the checkpoint this state belongs to commits (staged since the one before).
    staged: Vec<PartInfo>,
    watermark_ns: Option<i64>,
    /// The watermark when the last checkpoint was taken: how far the committed parts reach.
    committed_watermark_ns: Option<i64>,
    origin_ns: i64,
    late_rows: u64,
    /// Rows written (late rows dropped by `late_after` not included).
    rows: u64,
    checkpoints: u64,
    /// Partitions (and their ends) of committed parts still without `_SUCCESS`.
    pending: Vec<(String, Option<i64>)>,
}

/// One writer of rolling output under `root`.
pub(super) struct RollingWriter {
    root: PathBuf,
    worker: usize,
    writers: usize,
    policy: Arc<RollPolicy>,
    open: Vec<OpenPart>,
    state: RollingState,
    /// Checkpointed runs: parts closed (staged) since the last checkpoint, for the next one.
    closed: Vec<PartInfo>,
    checkpointed: bool,
    finished: bool,
    broken: bool,
    /// Parts were committed since the manifest was last written.
    manifest_stale: bool,
    tick: u64,
    /// Names the rows in messages (`the written rows`, `table `features``).
    what: String,
}

/// `part-WWWWW-SSSSSS.parquet`.
fn part_name(worker: usize, seq: u64) -> String {
    format!("part-{worker:05}-{seq:06}.parquet")
}

/// The writer and sequence number of a part's file name, final (`part-…`), staged
/// (`.part-….staged`) or temporary (`.part-….parquet.<pid>-<worker>.tmp`).
pub(super) fn parse_part_name(name: &str) -> Option<(usize, u64)> {
    let name = name.strip_prefix('.').unwrap_or(name);
    let rest = name.strip_prefix("part-")?;
    let (worker, rest) = rest.split_once('-')?;
    let (seq, _) = rest.split_once(".parquet")?;
    Some((worker.parse().ok()?, seq.parse().ok()?))
}

/// Calls `visit` with every file below `root` (not in `_manifest`), depth first.
pub(super) fn walk_files(root: &Path, visit: &mut dyn FnMut(&Path, &str)) {
    let Ok(entries) = std::fs::read_dir(root) else { return };
    for e in entries.flatten() {
        let name = e.file_name().to_string_lossy().to_string();
        let Ok(kind) = e.file_type() else { continue };
        if kind.is_dir() {
            if name != MANIFEST_DIR {
                walk_files(&e.path(), visit);
            }
        } else {
            visit(&e.path(), &name);
        }
    }
}

/// Event time of each row in ns since the Unix epoch, from the layout's `time` column
/// (timestamps; signals' seconds since sample 0 count from `origin_ns`) or a result table's
/// `window_end_time` (when the window closed, so its rows go out in time order). `None` when
/// the rows carry no event time.
fn row_times(batch: &RecordBatch, origin_ns: i64) -> Option<Vec<Option<i64>>> {
    let timestamps = |col: &ArrayRef| -> Option<Vec<Option<i64>>> {
        let DataType::Timestamp(..) = col.data_type() else {
            return None;
        };
        let ns = arrow::compute::cast(col, &DataType::Timestamp(TimeUnit::Nanosecond, None)).ok()?;
        Some(ns.as_primitive::<TimestampNanosecondType>().iter().collect())
    };
    if let Some(col) = batch.column_by_name("time") {
        if let Some(secs) = col.as_primitive_opt::<arrow::datatypes::Float64Type>() {
            return Some(
                secs.iter()
                    .map(|s| s.map(|s| origin_ns.saturating_add((s * 1e9).round() as i64)))
                    .collect(),
            );
        }
        return timestamps(col);
    }
    batch.column_by_name("window_end_time").and_then(timestamps)
}

impl RollingWriter {
    /// A writer of parts under `root` for `worker`, one of `writers` sharing it; `what` names
    /// its rows in messages.
    pub(super) fn new(root: PathBuf, worker: usize, writers: usize, policy: Arc<RollPolicy>, what: String) -> RollingWriter {
        let state = RollingState {
            origin_ns: policy.origin_ns,
            ..Default::default()
        };
        RollingWriter {
            root,
            worker,
            writers,
            policy,
            open: Vec::new(),
            state,
            closed: Vec::new(),
            checkpointed: false,
            finished: false,
            broken: false,
            manifest_stale: false,
            tick: 0,
            what,
        }
    }

    /// Starts writing: creates the directory, and in a resumed run takes the checkpoint's
    /// state and removes this writer's parts that were written after it.
    pub(super) fn start(&mut self, checkpointed: bool, resume: Option<RollingState>) -> Result<()> {
        self.checkpointed = checkpointed;
        std::fs::create_dir_all(&self.root).map_err(|e| out_err(&self.root, format!("cannot create directory: {e}")))?;
        if let Some(mut state) = resume {
            // The checkpoint's staged parts were committed before the run started.
            for p in std::mem::take(&mut state.staged) {
                let path = self.root.join(&p.path);
                if !path.exists() {
                    return Err(out_err(&path, "a part committed by the checkpoint is missing; cannot resume"));
                }
                state.pending.push((p.partition.clone(), p.partition_end_ns));
                state.parts.push(p);
            }
            state.pending.dedup();
            state.committed_watermark_ns = state.watermark_ns;
            self.state = state;
        }
        if checkpointed {
            // Whatever this writer wrote after the checkpoint (staged or not) is written again.
            let (worker, next) = (self.worker, self.state.next_seq);
            let mut stale = Vec::new();
            walk_files(&self.root, &mut |path, name| {
                if parse_part_name(name).is_some_and(|(w, s)| w == worker && (s >= next || name.ends_with(".staged"))) {
                    stale.push(path.to_path_buf());
                }
            });
            for p in stale {
                std::fs::remove_file(&p)
                    .map_err(|e| out_err(&p, format!("cannot remove a part written after the checkpoint: {e}")))?;
            }
        }
        self.write_manifest()
    }

    /// The state to record in a checkpoint.
    pub(super) fn checkpoint_state(&self) -> &RollingState {
        &self.state
    }

    /// The output directory.
    pub(super) fn root(&self) -> &Path {
        &self.root
    }

    fn manifest(&self) -> Manifest {
        Manifest {
            worker: self.worker,
            writers: self.writers,
            watermark_ns: if self.checkpointed {
                self.state.committed_watermark_ns
            } else {
                self.state.watermark_ns
            },
            finished: self.finished,
            late_rows: self.state.late_rows,
            parts: self.state.parts.clone(),
        }
    }

    /// Rewrites the manifest and writes `_SUCCESS` where every writer is past a partition.
    fn write_manifest(&mut self) -> Result<()> {
        self.manifest_stale = false;
        let manifest = self.manifest();
        manifest.write(&self.root).map_err(|m| out_err(&self.root, m))?;
        let pending = std::mem::take(&mut self.state.pending);
        self.state.pending = mark_complete(&self.root, &manifest, pending).map_err(|m| out_err(&self.root, m))?;
        Ok(())
    }

    /// Writes `batch`, rows of `stream`, splitting it among partitions and parts.
    pub(super) fn write(&mut self, batch: &RecordBatch, stream: &str) -> Result<()> {
        if self.broken {
            return Ok(());
        }
        let times = row_times(batch, self.state.origin_ns);
        let policy = self.policy.clone();
        let columns = policy
            .partition
            .columns(batch, stream, &self.what)
            .map_err(|m| out_err(&self.root, m))?;
        let formatters = columns
            .iter()
            .map(|c| ArrayFormatter::try_new(c.as_ref(), &FormatOptions::default()))
            .collect::<std::result::Result<Vec<_>, _>>()
            .map_err(|e| out_err(&self.root, e.to_string()))?;
        // Rows grouped by part key, in order of first appearance.
        let mut groups: Vec<(PartKey, Option<i64>, Vec<u32>)> = Vec::new();
        let mut last_minute: Option<(i64, String, Option<i64>)> = None;
        let mut dropped = false;
        for r in 0..batch.num_rows() {
            let t = times.as_ref().and_then(|v| v[r]);
            if let Some(t) = t {
                if let (Some(late), Some(w)) = (policy.late_after_ns, self.state.watermark_ns) {
                    if t < w.saturating_sub(late) {
                        self.state.late_rows += 1;
                        dropped = true;
                        continue;
                    }
                }
                self.state.watermark_ns = Some(self.state.watermark_ns.map_or(t, |w| w.max(t)));
            }
            // Time partitions are constant within a UTC minute: reuse the last row's path.
            let minute = t.map(|t| t.div_euclid(60_000_000_000));
            let (partition, end) = match (&last_minute, minute) {
                (Some((m, p, e)), Some(now)) if columns.is_empty() && *m == now => (p.clone(), *e),
                _ => {
                    let p = policy.partition.path(t, &formatters, r).map_err(|m| out_err(&self.root, m))?;
                    let e = policy.partition.end(t);
                    if let Some(m) = minute {
                        last_minute = Some((m, p.clone(), e));
                    }
                    (p, e)
                }
            };
            let key = PartKey {
                partition,
                bucket: policy.every_ns.zip(t).map(|(p, t)| t.div_euclid(p)),
            };
            match groups.iter_mut().rev().find(|g| g.0 == key) {
                Some(g) => g.2.push(r as u32),
                None => groups.push((key, end, vec![r as u32])),
            }
        }
        let whole = groups.len() == 1 && !dropped;
        for (key, end, rows) in groups {
            let part = if whole {
                batch.clone()
            } else {
                let idx = UInt32Array::from(rows.clone());
                let cols = batch
                    .columns()
                    .iter()
                    .map(|c| arrow::compute::take(c.as_ref(), &idx, None))
                    .collect::<std::result::Result<Vec<_>, _>>()
                    .map_err(|e| out_err(&self.root, e.to_string()))?;
                RecordBatch::try_new(batch.schema(), cols).map_err(|e| out_err(&self.root, e.to_string()))?
            };
            let group_times: Option<Vec<Option<i64>>> = times.as_ref().map(|v| rows.iter().map(|&r| v[r as usize]).collect());
            self.write_group(key, end, &part, group_times.as_deref())?;
        }
        // Parts whose interval the newest row has left are complete (late rows included).
        if let (Some(every), Some(w)) = (policy.every_ns, self.state.watermark_ns) {
            let current = w.div_euclid(every);
            while let Some(i) = self.open.iter().position(|o| o.key.bucket.is_some_and(|b| b < current)) {
                self.close(i, "complete")?;
            }
        }
        if self.manifest_stale {
            self.write_manifest()?;
        }
        Ok(())
    }

    /// `stream` has ended (frames, whose tables have no `stream` column): with partitions by
    /// stream, its open parts close now rather than at the end of the run, so a dataset of
    /// many recordings holds one recording's parts open, not one per recording.
    pub(super) fn end_stream(&mut self, stream: &str) -> Result<()> {
        let Some(level) = self.policy.partition.stream_level(stream) else {
            return Ok(());
        };
        while let Some(i) = self.open.iter().position(|p| p.key.partition.split('/').any(|c| c == level)) {
            self.close(i, "complete")?;
        }
        if self.manifest_stale {
            self.write_manifest()?;
        }
        Ok(())
    }

    fn write_group(&mut self, key: PartKey, end: Option<i64>, batch: &RecordBatch, times: Option<&[Option<i64>]>) -> Result<()> {
        let mut offset = 0;
        while offset < batch.num_rows() {
            let i = self.part_for(&key, end, batch.schema())?;
            let part = &mut self.open[i];
            let room = self
                .policy
                .rows
                .map_or(usize::MAX, |n| n.saturating_sub(part.rows).max(1) as usize);
            let len = room.min(batch.num_rows() - offset);
            if let Err(e) = part.writer.write(batch.slice(offset, len)) {
                let path = part.temp.clone();
                self.broken = true;
                self.drop_open();
                return Err(out_err(
                    &path,
                    format!("writing failed ({e}); the part was removed, committed parts stay"),
                ));
            }
            part.rows += len as u64;
            if let Some(times) = times {
                for t in times[offset..offset + len].iter().flatten() {
                    part.min_t = Some(part.min_t.map_or(*t, |m| m.min(*t)));
                    part.max_t = Some(part.max_t.map_or(*t, |m| m.max(*t)));
                }
            }
            self.state.rows += len as u64;
            offset += len;
            let full_rows = self.policy.rows.is_some_and(|n| part.rows >= n);
            // Encoded so far, plus the Arrow size of what the part's thread has not written yet.
            let full_bytes = self
                .policy
                .bytes
                .is_some_and(|b| part.writer.size() + part.writer.unwritten_bytes() >= b);
            if full_rows || full_bytes {
                self.close(i, "complete")?;
            }
        }
        Ok(())
    }

    /// The open part for `key`, opening one (and closing others) as needed.
    fn part_for(&mut self, key: &PartKey, end: Option<i64>, schema: Arc<ArrowSchema>) -> Result<usize> {
        self.tick += 1;
        if let Some(i) = self.open.iter().position(|p| p.key == *key) {
            self.open[i].used = self.tick;
            return Ok(i);
        }
        if self.open.len() >= self.policy.max_open {
            let lru = (0..self.open.len()).min_by_key(|&i| self.open[i].used).unwrap();
            self.close(lru, "complete")?;
        }
        let seq = self.state.next_seq;
        let dir = self.root.join(&key.partition);
        let temp = dir.join(format!(
            ".{}.{}-{}.tmp",
            part_name(self.worker, seq),
            std::process::id(),
            self.worker
        ));
        // Retention may remove an emptied partition directory between the two calls: retry once.
        let create = || std::fs::create_dir_all(&dir).and_then(|()| File::create(&temp));
        let file = create()
            .or_else(|_| create())
            .map_err(|e| out_err(&temp, format!("cannot create a part: {e}")))?;
        let writer = ArrowWriter::try_new(file, schema, Some(self.policy.props.clone()))
            .map_err(|e| out_err(&temp, format!("cannot start Parquet writer: {e}")))?;
        let writer = BackgroundWriter::start(writer, &part_name(self.worker, seq))
            .map_err(|e| out_err(&temp, format!("cannot start a writer thread: {e}")))?;
        self.state.next_seq += 1;
        self.open.push(OpenPart {
            key: key.clone(),
            end,
            seq,
            temp,
            writer,
            rows: 0,
            min_t: None,
            max_t: None,
            used: self.tick,
        });
        Ok(self.open.len() - 1)
    }

    /// Closes open part `i`: commits it (outside checkpoints) or stages it for the next checkpoint.
    fn close(&mut self, i: usize, status: &str) -> Result<()> {
        let part = self.open.swap_remove(i);
        let dir = self.root.join(&part.key.partition);
        let name = part_name(self.worker, part.seq);
        let target = if self.checkpointed {
            dir.join(format!(".{name}.staged"))
        } else {
            dir.join(&name)
        };
        let writer = part.writer;
        let mut meta = vec![
            ("neurostream.status", status.to_string()),
            ("neurostream.pipeline", self.policy.pipeline.clone()),
        ];
        if !part.key.partition.is_empty() {
            meta.push(("neurostream.partition", part.key.partition.clone()));
        }
        let closed = (|| -> std::result::Result<u64, String> {
            for (k, v) in meta {
                writer.append_key_value_metadata(KeyValue::new(k.to_string(), v))?;
            }
            let file = writer.finish()?;
            file.sync_all().map_err(|e| format!("fsync: {e}"))?;
            let bytes = file.metadata().map(|m| m.len()).unwrap_or(0);
            drop(file);
            std::fs::rename(&part.temp, &target).map_err(|e| format!("rename: {e}"))?;
            sync_dir(&dir);
            Ok(bytes)
        })();
        let bytes = match closed {
            Ok(b) => b,
            Err(m) => {
                let _ = std::fs::remove_file(&part.temp);
                self.broken = true;
                return Err(out_err(
                    &dir.join(&name),
                    format!("could not close the part ({m}); it was removed, committed parts stay"),
                ));
            }
        };
        let info = PartInfo {
            path: if part.key.partition.is_empty() {
                name
            } else {
                format!("{}/{name}", part.key.partition)
            },
            partition: part.key.partition,
            seq: part.seq,
            rows: part.rows,
            bytes,
            min_time_ns: part.min_t,
            max_time_ns: part.max_t,
            partition_end_ns: part.end,
            checkpoint: self.state.checkpoints,
        };
        if self.checkpointed {
            self.closed.push(info);
            return Ok(());
        }
        self.committed(info);
        self.apply_retention();
        // Written once per batch (at the end of `write`) however many parts closed in it.
        self.manifest_stale = true;
        Ok(())
    }

    fn committed(&mut self, info: PartInfo) {
        let pending = (info.partition.clone(), info.partition_end_ns);
        if !self.state.pending.contains(&pending) {
            self.state.pending.push(pending);
        }
        self.state.parts.push(info);
    }

    /// Removes the open parts' temporary files.
    fn drop_open(&mut self) {
        for p in self.open.drain(..) {
            drop(p.writer);
            let _ = std::fs::remove_file(&p.temp);
        }
    }

    /// Deletes this writer's committed parts that `keep` no longer retains. In a checkpointed
    /// run only parts of checkpoints before the latest durable one go, since resuming from that
    /// one commits its parts again.
    fn apply_retention(&mut self) {
        let Some(keep) = self.policy.keep else { return };
        let current = self.state.checkpoints;
        let deletable = |p: &PartInfo, checkpointed: bool| !checkpointed || p.checkpoint + 1 < current;
        let mut doomed = Vec::new();
        match keep {
            Keep::Parts(n) => {
                let excess = self.state.parts.len().saturating_sub(n);
                for p in self.state.parts.iter().take(excess) {
                    if deletable(p, self.checkpointed) {
                        doomed.push(p.seq);
                    }
                }
            }
            Keep::Age(age) => {
                let Some(w) = self.state.watermark_ns else { return };
                for p in &self.state.parts {
                    if p.max_time_ns.is_some_and(|t| t < w.saturating_sub(age)) && deletable(p, self.checkpointed) {
                        doomed.push(p.seq);
                    }
                }
            }
        }
        if doomed.is_empty() {
            return;
        }
        let mut dirs = Vec::new();
        self.state.parts.retain(|p| {
            if !doomed.contains(&p.seq) {
                return true;
            }
            let path = self.root.join(&p.path);
            match std::fs::remove_file(&path) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => {
                    tracing::warn!("retention: cannot remove {}: {e}", path.display());
                    return true;
                }
            }
            if !p.partition.is_empty() {
                dirs.push(p.partition.clone());
            }
            false
        });
        dirs.dedup();
        let live: Vec<&str> = self.state.parts.iter().map(|p| p.partition.as_str()).collect();
        for d in dirs {
            if !live.contains(&d.as_str()) {
                remove_emptied_partition(&self.root, &d);
            }
        }
        self.state.pending.retain(|(p, _)| p.is_empty() || self.root.join(p).is_dir());
    }

    /// Checkpoint: closes every open part into a staged file committed with the checkpoint.
    pub(super) fn precommit(&mut self) -> Result<Vec<StagedFile>> {
        if self.broken {
            return Err(out_err(&self.root, "an earlier write failed"));
        }
        // Checkpoints complete one after another: the previous one is durable, and its parts
        // are committed.
        for p in std::mem::take(&mut self.state.staged) {
            self.committed(p);
        }
        self.state.checkpoints += 1;
        self.apply_retention();
        self.write_manifest()?;
        self.state.committed_watermark_ns = self.state.watermark_ns;
        while !self.open.is_empty() {
            self.close(0, "complete")?;
        }
        self.state.staged = std::mem::take(&mut self.closed);
        Ok(self.state.staged.iter().map(|p| self.staged_file(p)).collect())
    }

    /// The staged and committed names of a part.
    fn staged_file(&self, p: &PartInfo) -> StagedFile {
        let committed = self.root.join(&p.path);
        let name = committed.file_name().unwrap().to_string_lossy().to_string();
        StagedFile {
            staged: committed.with_file_name(format!(".{name}.staged")),
            committed,
        }
    }

    /// Ends the output; returns the summary line.
    pub(super) fn finish(mut self, failure: Option<&str>) -> Result<String> {
        let root = self.root.display().to_string();
        if self.broken {
            self.drop_open();
            return Ok(format!("{root}: stopped after a write error; committed parts stay"));
        }
        if failure.is_some() && (self.checkpointed || self.policy.on_failure == OnFailure::Discard) {
            self.drop_open();
            let why = if self.checkpointed {
                "rows after the last checkpoint are written again on --resume"
            } else {
                "on_failure = \"discard\" drops the open parts"
            };
            return Ok(format!(
                "{root}: run failed; {} committed parts kept ({why})",
                self.state.parts.len()
            ));
        }
        if self.checkpointed {
            // The run is complete: commit what the final checkpoint staged, and write the rest
            // (nothing, normally) straight to final parts.
            let mut staged = std::mem::take(&mut self.state.staged);
            staged.append(&mut self.closed);
            for p in staged {
                let f = self.staged_file(&p);
                if f.staged.exists() {
                    std::fs::rename(&f.staged, &f.committed).map_err(|e| out_err(&f.committed, format!("cannot commit: {e}")))?;
                }
                self.committed(p);
            }
            self.checkpointed = false;
        }
        let status = match failure {
            None => "complete".to_string(),
            Some(f) => format!("incomplete: {}", f.lines().next().unwrap_or(f)),
        };
        while !self.open.is_empty() {
            self.close(0, &status)?;
        }
        self.finished = failure.is_none();
        if self.finished && !self.state.pending.iter().any(|(p, _)| p.is_empty()) {
            // The output as a whole: `_SUCCESS` at its root once every writer has finished.
            self.state.pending.push((String::new(), None));
        }
        self.state.committed_watermark_ns = self.state.watermark_ns;
        self.apply_retention();
        self.write_manifest()?;
        let late = match self.state.late_rows {
            0 => String::new(),
            n => format!("; {n} late rows dropped (late_after)"),
        };
        Ok(format!(
            "wrote {} rows in {} parts under {root}{late}",
            self.state.rows,
            self.state.parts.len()
        ))
    }
}

/// Removes a partition directory that retention emptied (its `_SUCCESS` included), and its
/// emptied parents up to `root`. Best effort: another writer may be adding a part.
fn remove_emptied_partition(root: &Path, partition: &str) {
    let dir = root.join(partition);
    let only_marker = std::fs::read_dir(&dir)
        .map(|entries| entries.flatten().all(|e| e.file_name() == "_SUCCESS"))
        .unwrap_or(false);
    if !only_marker {
        return;
    }
    let _ = std::fs::remove_file(dir.join("_SUCCESS"));
    let mut d = dir.as_path();
    while d != root && std::fs::remove_dir(d).is_ok() {
        match d.parent() {
            Some(p) => d = p,
            None => break,
        }
    }
}

/// Before a fresh run: removes the parts, manifests and `_SUCCESS` files an earlier run left
/// under `root` for `workers` (worker 0 also takes writers at or beyond `writers`, and every
/// `_SUCCESS`).
pub(super) fn remove_earlier_output(root: &Path, workers: std::ops::Range<usize>, writers: usize) -> Result<()> {
    let mine = |w: usize| workers.contains(&w) || (workers.start == 0 && w >= writers);
    let mut doomed = Vec::new();
    walk_files(root, &mut |path, name| {
        let part = parse_part_name(name).is_some_and(|(w, _)| mine(w));
        if part || (workers.start == 0 && name == "_SUCCESS") {
            doomed.push(path.to_path_buf());
        }
    });
    let mut manifests = Vec::new();
    collect_manifests(root, &mut manifests);
    for m in manifests {
        let w = m
            .file_name()
            .and_then(|n| n.to_str())
            .and_then(|n| n.strip_prefix("worker-"))
            .and_then(|n| n.strip_suffix(".json"))
            .and_then(|n| n.parse().ok());
        if w.is_some_and(mine) {
            doomed.push(m);
        }
    }
    for p in doomed {
        std::fs::remove_file(&p).map_err(|e| out_err(&p, format!("cannot remove the output of an earlier run: {e}")))?;
    }
    remove_empty_dirs(root, root);
    Ok(())
}

/// Removes the empty directories below `dir` (partitions an earlier run left empty).
fn remove_empty_dirs(root: &Path, dir: &Path) {
    let Ok(entries) = std::fs::read_dir(dir) else { return };
    for e in entries.flatten() {
        if e.file_type().is_ok_and(|t| t.is_dir()) {
            remove_empty_dirs(root, &e.path());
        }
    }
    if dir != root {
        let _ = std::fs::remove_dir(dir); // fails, as it should, unless empty
    }
}

/// Every `_manifest/*.json` below `root`.
fn collect_manifests(root: &Path, out: &mut Vec<PathBuf>) {
    let Ok(entries) = std::fs::read_dir(root) else { return };
    for e in entries.flatten() {
        if !e.file_type().is_ok_and(|t| t.is_dir()) {
            continue;
        }
        if e.file_name() == MANIFEST_DIR {
            if let Ok(files) = std::fs::read_dir(e.path()) {
                out.extend(files.flatten().map(|f| f.path()));
            }
        } else {
            collect_manifests(&e.path(), out);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn part_names_parse_in_every_state() {
        assert_eq!(parse_part_name("part-00001-000042.parquet"), Some((1, 42)));
        assert_eq!(parse_part_name(".part-00001-000042.parquet.staged"), Some((1, 42)));
        assert_eq!(parse_part_name(".part-00000-000007.parquet.123-0.tmp"), Some((0, 7)));
        assert_eq!(parse_part_name("part-00001.parquet"), None);
        assert_eq!(parse_part_name("_SUCCESS"), None);
    }
}
