//! Replaying a recording file as a signal stream, shared by the file sources (`edf`,
//! `brainvision`): frames of `chunk` samples, the recording's events as markers on the rows
//! they fall on, values converted to the engine's units, and optional real-time pacing.
//!
//! A format supplies its samples as [`Blocks`]; [`Replay`] does the rest.

use std::sync::Arc;
use std::time::Instant;

use neurostream_engine::schema::to_engine_unit;
use neurostream_engine::{Batch, Channel, Frame, Marker, Result, RowIndex, Schema, Source, SourceReader, WorkerPos};

/// The samples of a recording in order, a block at a time (an EDF data record, a slice of a
/// BrainVision data file).
pub trait Blocks: Send {
    /// Appends the next block's rows (row-major, one value per channel of the stream, in the
    /// file's units) to `rows` and their sample indices to `samples`; false when none is left.
    fn read_block(&mut self, rows: &mut Vec<f32>, samples: &mut Vec<i64>) -> Result<bool>;
    /// The sample index of the next block's first row; `None` when none is left.
    fn next_sample(&self) -> Option<i64>;
    /// Where the reader is, for messages (`data record 12`).
    fn location(&self) -> String;
}

/// An event of a recording: its first sample, its label and its duration (seconds, 0 for an
/// instant).
#[derive(Clone, Debug, PartialEq)]
pub struct Event {
    /// Sample index of its onset.
    pub sample: i64,
    /// Its label.
    pub label: String,
    /// Duration in seconds (0 for an instant).
    pub duration_s: f64,
}

/// The stream's channels in the engine's units (µV, fT, fT/cm; see [`to_engine_unit`]) and
/// the factor each channel's file values are multiplied by; `None` when every factor is 1.
pub fn engine_channels(channels: Vec<Channel>) -> (Vec<Channel>, Option<Vec<f32>>) {
    let mut factors = Vec::with_capacity(channels.len());
    let channels = channels
        .into_iter()
        .map(|c| {
            let (unit, factor) = to_engine_unit(&c.unit, &c.kind);
            factors.push(factor as f32);
            Channel { unit, ..c }
        })
        .collect();
    let factors = factors.iter().any(|&f| f != 1.0).then_some(factors);
    (channels, factors)
}

/// The recording sources' default `chunk`: samples per frame.
pub fn default_chunk() -> usize {
    256
}

/// Checks a replay's `chunk` (samples per frame, at least 1) and `speed` (0 or a positive,
/// finite multiple of real time).
pub fn check_pace(chunk: usize, speed: f64) -> std::result::Result<(), String> {
    if chunk == 0 {
        return Err("`chunk` must be at least 1".into());
    }
    if !(speed >= 0.0 && speed.is_finite()) {
        return Err(format!("`speed` must be >= 0 (0: as fast as possible), found {speed}"));
    }
    Ok(())
}

/// Most bytes of samples a text recording keeps from the pass that checks it, so the replay
/// need not parse it again: 1 GiB of f32 (a text file of about 3 GB). A larger file is parsed
/// again as it is replayed.
pub const HELD_SAMPLES_BYTES: usize = 1 << 30;

/// Samples kept from the pass that checked a text recording, in the blocks they were read in
/// (each row-major, one value per channel of the stream).
pub type HeldSamples = Vec<Vec<f32>>;

/// Bytes of the samples in `blocks`.
pub fn held_bytes(blocks: &HeldSamples) -> u64 {
    blocks.iter().map(|b| (b.len() * std::mem::size_of::<f32>()) as u64).sum()
}

/// Samples held in memory in blocks as they were read (each row-major, `width` values per
/// sample, in the file's units), replayed a block at a time.
pub struct HeldBlocks {
    blocks: Arc<HeldSamples>,
    width: usize,
    /// Next block to hand over.
    block: usize,
    /// Next sample to hand over.
    next: usize,
}

impl HeldBlocks {
    /// Replays `blocks`, `width` values per sample (`width` > 0).
    pub fn new(blocks: Arc<HeldSamples>, width: usize) -> HeldBlocks {
        assert!(
            width > 0 && blocks.iter().all(|b| b.len().is_multiple_of(width)),
            "blocks of values not of width {width}"
        );
        HeldBlocks {
            blocks,
            width,
            block: 0,
            next: 0,
        }
    }
}

impl Blocks for HeldBlocks {
    fn read_block(&mut self, rows: &mut Vec<f32>, samples: &mut Vec<i64>) -> Result<bool> {
        let Some(values) = self.blocks.get(self.block) else {
            return Ok(false);
        };
        let n = values.len() / self.width;
        rows.extend_from_slice(values);
        samples.extend(self.next as i64..(self.next + n) as i64);
        (self.block, self.next) = (self.block + 1, self.next + n);
        Ok(true)
    }

    fn next_sample(&self) -> Option<i64> {
        (self.block < self.blocks.len()).then_some(self.next as i64)
    }

    fn location(&self) -> String {
        format!("sample {}", self.next)
    }
}

/// Opens a recording's blocks for the worker that replays it.
pub type OpenBlocks = Box<dyn Fn() -> Result<Box<dyn Blocks>> + Send + Sync>;

/// The source of every recording format: one worker (a device stream has one order) replays the
/// blocks `open` gives, the others emit nothing.
pub struct RecordingSource {
    /// How frames are cut, paced, marked and converted.
    pub settings: ReplaySettings,
    /// Every file the recording is read from (fingerprinted by checkpoints).
    pub files: Vec<std::path::PathBuf>,
    /// Samples in the recording.
    pub rows: u64,
    /// Opens the blocks (replays are files: reopening yields the same batches).
    pub open: OpenBlocks,
    /// Bytes of samples `open` replays from memory ([`held_bytes`] of them; 0 when it reads the
    /// file).
    pub held_bytes: u64,
}

impl Source for RecordingSource {
    fn replayable(&self) -> bool {
        true
    }
    fn input_files(&self) -> Vec<std::path::PathBuf> {
        self.files.clone()
    }
    fn held_bytes(&self) -> u64 {
        self.held_bytes
    }
    fn schema(&self) -> Arc<Schema> {
        self.settings.schema.clone()
    }
    fn total_rows(&self) -> Option<u64> {
        Some(self.rows)
    }
    fn open(&self, worker: WorkerPos) -> Result<Box<dyn SourceReader>> {
        let blocks = if worker.index == 0 { Some((self.open)()?) } else { None };
        Ok(Box::new(Replay::new(self.settings.clone(), blocks)))
    }
}

/// What `build` opened and checked, handed to the first reader so headers are not read twice at
/// start-up; later readers (a resumed run's) open the file again with `reopen`.
pub fn handed_over<T>(slot: &std::sync::Mutex<Option<T>>, reopen: impl FnOnce() -> Result<T>) -> Result<T> {
    match slot.lock().unwrap_or_else(|e| e.into_inner()).take() {
        Some(t) => Ok(t),
        None => reopen(),
    }
}

/// One worker's replay of a recording.
pub struct Replay {
    /// `edf `psg``: for messages.
    who: String,
    name: Arc<str>,
    schema: Arc<Schema>,
    rate: f64,
    chunk: usize,
    speed: f64,
    /// `None` on workers that do not replay (a recording has one order: worker 0 reads it).
    blocks: Option<Box<dyn Blocks>>,
    /// Unit factors per channel, when some differ from 1.
    factors: Option<Arc<Vec<f32>>>,
    /// Sorted by sample.
    events: Arc<Vec<Event>>,
    next_event: usize,
    /// Decoded rows not yet emitted (row-major) and their sample indices.
    rows: Vec<f32>,
    samples: Vec<i64>,
    /// The next frame, built ahead to know when it is due.
    staged: Option<Frame>,
    /// When pacing started, and the sample it started at (0, or where a resumed run goes on:
    /// the pace counts from there, not from the recording's start).
    started: Option<(Instant, i64)>,
    behind_reported: bool,
}

/// What a [`Replay`] needs besides its blocks.
#[derive(Clone)]
pub struct ReplaySettings {
    /// The source's kind, for messages (`edf`).
    pub kind: &'static str,
    /// The source's name.
    pub name: Arc<str>,
    /// The stream's schema (units already the engine's).
    pub schema: Arc<Schema>,
    /// Sampling rate, Hz.
    pub rate: f64,
    /// Samples per frame.
    pub chunk: usize,
    /// Pace: 0 as fast as possible, 1 real time.
    pub speed: f64,
    /// Per-channel factors from the file's units to the engine's.
    pub factors: Option<Arc<Vec<f32>>>,
    /// The recording's events, sorted by sample.
    pub events: Arc<Vec<Event>>,
}

impl Replay {
    /// A replay of `blocks` (`None`: this worker emits nothing).
    pub fn new(settings: ReplaySettings, blocks: Option<Box<dyn Blocks>>) -> Replay {
        Replay {
            who: format!("{} `{}`", settings.kind, settings.name),
            name: settings.name,
            schema: settings.schema,
            rate: settings.rate,
            chunk: settings.chunk,
            speed: settings.speed,
            blocks,
            factors: settings.factors,
            events: settings.events,
            next_event: 0,
            rows: Vec::new(),
            samples: Vec::new(),
            staged: None,
            started: None,
            behind_reported: false,
        }
    }

    fn read_block(&mut self) -> Result<bool> {
        let Some(blocks) = self.blocks.as_mut() else {
            return Ok(false);
        };
        let start = self.rows.len();
        let more = blocks.read_block(&mut self.rows, &mut self.samples)?;
        if let Some(f) = &self.factors {
            for row in self.rows[start..].chunks_exact_mut(f.len()) {
                row.iter_mut().zip(f.iter()).for_each(|(v, f)| *v *= f);
            }
        }
        Ok(more)
    }

    fn build_frame(&mut self) -> Result<Option<Frame>> {
        while self.samples.len() < self.chunk {
            if !self.read_block()? {
                break;
            }
        }
        if self.samples.is_empty() {
            return Ok(None);
        }
        let take = self.chunk.min(self.samples.len());
        let w = self.schema.width();
        let rest_rows = self.rows.split_off(take * w);
        let rest_samples = self.samples.split_off(take);
        let data = std::mem::replace(&mut self.rows, rest_rows);
        let samples = std::mem::replace(&mut self.samples, rest_samples);
        let last = *samples.last().expect("a frame has rows");
        let final_frame = self.samples.is_empty() && self.blocks.as_ref().is_none_or(|b| b.next_sample().is_none());
        let mut markers = Vec::new();
        while let Some(e) = self.events.get(self.next_event) {
            if e.sample > last {
                break;
            }
            let row = samples.partition_point(|s| *s < e.sample);
            markers.push(Marker {
                row: row.min(samples.len() - 1) as u32,
                label: e.label.clone(),
                duration_s: e.duration_s,
            });
            self.next_event += 1;
        }
        if final_frame && self.next_event < self.events.len() {
            let left = self.events.len() - self.next_event;
            tracing::info!(
                "{}: {left} annotations start after the last sample ({:.3} s) and are not emitted",
                self.who,
                (last + 1) as f64 / self.rate
            );
            self.next_event = self.events.len();
        }
        let mut frame = Frame::new(self.name.clone(), self.schema.clone(), RowIndex::Samples(samples), data)?;
        frame.markers = markers;
        Ok(Some(frame))
    }
}

impl SourceReader for Replay {
    fn next_batch(&mut self) -> Result<Option<(u64, Batch)>> {
        let frame = match self.staged.take() {
            Some(f) => Some(f),
            None => self.build_frame()?,
        };
        Ok(frame.map(|f| {
            let t = match &f.index {
                RowIndex::Samples(s) => s[0].max(0) as u64,
                _ => 0,
            };
            (t, Batch::Dense(f))
        }))
    }

    fn next_time(&self) -> Option<u64> {
        if let Some(RowIndex::Samples(s)) = self.staged.as_ref().map(|f| &f.index) {
            return Some(s[0].max(0) as u64);
        }
        if let Some(&s) = self.samples.first() {
            return Some(s.max(0) as u64);
        }
        self.blocks.as_ref()?.next_sample().map(|s| s.max(0) as u64)
    }

    fn ready(&mut self) -> bool {
        if self.speed <= 0.0 {
            return true;
        }
        if self.staged.is_none() {
            match self.build_frame() {
                Ok(Some(f)) => self.staged = Some(f),
                // Exhausted or failing: next_batch reports it.
                _ => return true,
            }
        }
        let Some(RowIndex::Samples(s)) = self.staged.as_ref().map(|f| &f.index) else {
            return true;
        };
        let (started, origin) = *self.started.get_or_insert_with(|| (Instant::now(), s[0]));
        let due = (s[s.len() - 1] + 1 - origin) as f64 / self.rate / self.speed;
        let now = started.elapsed().as_secs_f64();
        if now - due > 1.0 && !self.behind_reported {
            // Nothing is dropped (the replay waits for the pipeline), but the device it stands
            // in for would have overflowed: say so.
            self.behind_reported = true;
            tracing::warn!(
                "{}: the pipeline is {:.1} s behind the real-time replay (a live device's buffer would be overflowing)",
                self.who,
                now - due
            );
        }
        now >= due
    }

    fn location(&self) -> String {
        match &self.blocks {
            Some(b) => format!("{}, {}", self.who, b.location()),
            None => self.who.clone(),
        }
    }
}

/// Picks the channels of one stream from a recording whose channels may have several rates:
/// `wanted` (labels or glob patterns, see [`pick_labels`]) or, by default, every channel at the
/// highest rate (the others are logged). `samples_per_record[i]` is channel `i`'s samples per
/// data record and `rate(i)` its rate in Hz. The picked channels must share one rate unless
/// `resample` is `Some(true)` (`Some(false)`: the source can resample, and the error says how;
/// `None`: it cannot); none may be empty.
pub fn pick_at_one_rate(
    path: &std::path::Path,
    labels: &[&str],
    samples_per_record: &[usize],
    rate: &dyn Fn(usize) -> f64,
    wanted: Option<&[String]>,
    resample: Option<bool>,
) -> std::result::Result<Vec<usize>, String> {
    let describe = |i: &usize| format!("{} ({} Hz)", labels[*i], rate(*i));
    let picked: Vec<usize> = match wanted {
        None if resample == Some(true) => (0..labels.len()).collect(),
        None => {
            let top = samples_per_record.iter().copied().max().unwrap_or(0);
            let (keep, skip): (Vec<usize>, Vec<usize>) = (0..labels.len()).partition(|&i| samples_per_record[i] == top);
            if !skip.is_empty() {
                tracing::info!(
                    "{}: reading the channels at the highest rate; left out (other rates; name them in `channels` to read them): {}",
                    path.display(),
                    skip.iter().map(describe).collect::<Vec<_>>().join(", ")
                );
            }
            keep
        }
        Some(list) => pick_labels(labels, list, path)?,
    };
    let Some(&first) = picked.first() else {
        return Err(format!("{}: the recording has no channels", path.display()));
    };
    let spr = samples_per_record[first];
    if resample != Some(true) && picked.iter().any(|&i| samples_per_record[i] != spr) {
        let hint = if resample.is_some() {
            ", or set `resample = true` to bring them to the highest"
        } else {
            ""
        };
        return Err(format!(
            "{}: the channels asked for have different sampling rates: {}. A stream has one rate: pick channels of one \
             rate (one source per rate){hint}",
            path.display(),
            picked.iter().map(describe).collect::<Vec<_>>().join(", ")
        ));
    }
    if picked.iter().any(|&i| samples_per_record[i] == 0) {
        return Err(format!("{}: the channels have no samples", path.display()));
    }
    Ok(picked)
}

/// Indices into `labels` of the channels `wanted` names (labels or glob patterns), in that
/// order, each once. An empty list, or a name that matches nothing, is an error naming the key
/// `channels`, `file` and (for a name) the nearest label.
pub fn pick_labels(labels: &[&str], wanted: &[String], file: &std::path::Path) -> std::result::Result<Vec<usize>, String> {
    if wanted.is_empty() {
        return Err(format!(
            "key `channels`: {}: the list is empty (leave the key out to read every channel)",
            file.display()
        ));
    }
    let mut out = Vec::new();
    for want in wanted {
        let pattern = glob::Pattern::new(want).map_err(|e| format!("key `channels`: pattern `{want}`: {e}"))?;
        let hits: Vec<usize> = (0..labels.len())
            .filter(|&i| labels[i] == want || pattern.matches(labels[i]))
            .filter(|i| !out.contains(i))
            .collect();
        if hits.is_empty() && !labels.iter().any(|l| l == want || pattern.matches(l)) {
            return Err(format!(
                "key `channels`: {}: no channel `{want}`{}; the file has: {}",
                file.display(),
                neurostream_engine::suggest::hint(want, labels.iter().copied()),
                labels.join(", ")
            ));
        }
        out.extend(hits);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_empty_channel_list_or_recording_is_an_error_not_a_panic() {
        let path = std::path::Path::new("rec.gdf");
        let err = pick_labels(&["Cz", "Pz"], &[], path).unwrap_err();
        assert!(err.contains("key `channels`: rec.gdf: the list is empty"), "{err}");
        let err = pick_at_one_rate(path, &["Cz"], &[10], &|_| 100.0, Some(&[]), None).unwrap_err();
        assert!(err.contains("the list is empty"), "{err}");
        let err = pick_at_one_rate(path, &[], &[], &|_| 100.0, None, None).unwrap_err();
        assert!(err.contains("rec.gdf: the recording has no channels"), "{err}");
        assert_eq!(pick_labels(&["Cz", "Pz", "Oz"], &["?z".into()], path).unwrap(), [0, 1, 2]);
    }
}
