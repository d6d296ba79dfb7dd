//! The `edf` source: replays an EDF/EDF+/BDF/BDF+ recording as a signal stream, in physical
//! units, with its annotations (and those of a separate annotation file, such as a hypnogram)
//! as markers; as fast as possible or paced like the device (`speed`).

use std::sync::Arc;
use std::time::Instant;

use neurostream_engine::{
    Batch, Channel, EngineError, Frame, Marker, NodeConfig, NodeContext, Result, RowIndex, Schema, Source, SourceKind,
    SourceReader, StreamKind, WorkerPos,
};
use serde::{Deserialize, Serialize};

use super::file::EdfFile;

/// Configuration of an `edf` source.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct EdfSourceConfig {
    /// The recording (`.edf` or `.bdf`; EDF+ and BDF+ included).
    pub path: String,
    /// Channels to read, by label or glob pattern (`"EEG*"`), in this order; all must share one
    /// rate (one source per rate, or `resample`). Default: every signal at the highest sampling
    /// rate (the others are listed in the log).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub channels: Option<Vec<String>>,
    /// Samples per frame (default 256).
    #[serde(default = "default_chunk")]
    #[schemars(extend("x-unit" = "samples"))]
    pub chunk: usize,
    /// Replay pace: 0 (default) as fast as possible; 1.0 real time (each chunk is released when its
    /// last sample would have been recorded); 10 ten times faster. Nothing is dropped when the
    /// pipeline falls behind (the replay waits), but falling more than 1 s behind is logged, since
    /// a live device would be overflowing.
    #[serde(default)]
    #[schemars(extend("x-unit" = "× real time"))]
    pub speed: f64,
    /// A separate annotation-only EDF+ file (e.g. a hypnogram) whose annotations join the
    /// recording's, aligned by the two files' start times.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub annotations: Option<String>,
    /// Read the complete records of a file that ends inside a record (default: an error).
    #[serde(default)]
    pub allow_truncated: bool,
    /// Resample channels of lower rates to the highest picked rate (`scipy.signal.resample_poly`,
    /// over the whole recording, which is then held in memory; continuous files). Without it,
    /// picked channels must share one rate. With it and no `channels`, every signal is read.
    #[serde(default)]
    pub resample: bool,
}

fn default_chunk() -> usize {
    256
}

impl EdfSourceConfig {
    /// Reads every signal of `path` at the highest rate, 256 samples per frame, unpaced.
    pub fn new(path: &str) -> EdfSourceConfig {
        EdfSourceConfig {
            path: path.into(),
            channels: None,
            chunk: default_chunk(),
            speed: 0.0,
            annotations: None,
            allow_truncated: false,
            resample: false,
        }
    }
}

impl NodeConfig for EdfSourceConfig {
    const KIND: &'static str = "edf";
}

/// The `edf` source kind.
pub struct EdfSourceKind;

impl SourceKind for EdfSourceKind {
    type Config = EdfSourceConfig;

    fn describe(&self) -> &'static str {
        "EDF/EDF+/BDF/BDF+ recording in physical units, annotations as markers, replayed fast or in real time"
    }
    fn build(&self, cfg: EdfSourceConfig, ctx: &NodeContext) -> Result<Arc<dyn Source>> {
        let fail = |m: String| EngineError::config(ctx.label, m);
        if cfg.chunk == 0 {
            return Err(fail("`chunk` must be at least 1".into()));
        }
        if !(cfg.speed >= 0.0 && cfg.speed.is_finite()) {
            return Err(fail(format!(
                "`speed` must be >= 0 (0: as fast as possible), found {}",
                cfg.speed
            )));
        }
        let path = ctx.input_file(&cfg.path);
        let file = EdfFile::open(&path, cfg.allow_truncated).map_err(fail)?;
        let picked = pick_channels(&file, cfg.channels.as_deref(), cfg.resample).map_err(fail)?;
        let h = &file.header;
        let top = *picked
            .iter()
            .max_by_key(|&&i| h.signals[i].samples_per_record)
            .expect("at least one channel");
        let rate = h.sample_rate(top);
        let spr = h.signals[top].samples_per_record;
        let mixed = picked.iter().any(|&i| h.signals[i].samples_per_record != spr);
        if mixed && h.format.discontinuous() {
            return Err(fail(format!(
                "{}: resampling needs a continuous recording; this one is EDF+D/BDF+D",
                path.display()
            )));
        }
        let mut annotations: Vec<(f64, Option<f64>, String)> = file
            .annotations
            .iter()
            .map(|a| (a.onset_s, a.duration_s, a.text.clone()))
            .collect();
        if let Some(extra) = &cfg.annotations {
            let extra_path = ctx.input_file(extra);
            let other = EdfFile::open(&extra_path, cfg.allow_truncated).map_err(fail)?;
            let shift = (other.header.start_unix_s - h.start_unix_s) as f64;
            annotations.extend(
                other
                    .annotations
                    .iter()
                    .map(|a| (a.onset_s + shift, a.duration_s, a.text.clone())),
            );
            annotations.sort_by(|a, b| a.0.total_cmp(&b.0));
        }
        let markers = annotations
            .into_iter()
            .map(|(onset, dur, text)| ((onset * rate).round() as i64, text, dur.unwrap_or(0.0)))
            .collect();
        let record_first_sample = file.record_starts.iter().map(|s| (s * rate).round() as i64).collect();
        let schema = Arc::new(Schema {
            kind: StreamKind::Signal { sample_rate: rate },
            channels: picked
                .iter()
                .map(|&i| Channel {
                    name: h.signals[i].label.clone(),
                    unit: h.signals[i].unit.clone(),
                    kind: neurostream_engine::schema::channel_type_from_label(&h.signals[i].label),
                })
                .collect(),
        });
        tracing::info!(
            "{}: {:?}, {} records of {} s, {} channels at {rate} Hz, {} annotations",
            path.display(),
            h.format,
            file.records,
            h.record_duration_s,
            picked.len(),
            file.annotations.len()
        );
        let records = file.records;
        Ok(Arc::new(EdfSource {
            name: ctx.name.into(),
            cfg,
            path,
            schema,
            picked,
            rate,
            records,
            samples_per_record: spr,
            record_first_sample,
            markers: Arc::new(markers),
            opened: std::sync::Mutex::new(Some(file)),
        }))
    }
}

/// Resolves `wanted` (labels or glob patterns) to signal indices, all at one rate.
fn pick_channels(file: &EdfFile, wanted: Option<&[String]>, resample: bool) -> std::result::Result<Vec<usize>, String> {
    let h = &file.header;
    let data: Vec<usize> = (0..h.signals.len()).filter(|&i| !h.signals[i].is_annotation).collect();
    if data.is_empty() {
        return Err(format!(
            "{}: no signals (an annotation-only file? give it as `annotations` of a recording)",
            file.path.display()
        ));
    }
    let describe = |i: &usize| format!("{} ({} Hz)", h.signals[*i].label, h.sample_rate(*i));
    let picked: Vec<usize> = match wanted {
        None if resample => data.clone(),
        None => {
            let top = data.iter().map(|&i| h.signals[i].samples_per_record).max().unwrap_or(0);
            let (keep, skip): (Vec<usize>, Vec<usize>) = data.iter().partition(|&&i| h.signals[i].samples_per_record == top);
            if !skip.is_empty() {
                tracing::info!(
                    "{}: reading the channels at the highest rate; left out (other rates; name them in `channels` to read them): {}",
                    file.path.display(),
                    skip.iter().map(describe).collect::<Vec<_>>().join(", ")
                );
            }
            keep
        }
        Some(list) => {
            let mut out = Vec::new();
            for want in list {
                let pattern = glob::Pattern::new(want).map_err(|e| format!("`channels`: pattern `{want}`: {e}"))?;
                let hits: Vec<usize> = data
                    .iter()
                    .copied()
                    .filter(|&i| h.signals[i].label == *want || pattern.matches(&h.signals[i].label))
                    .filter(|i| !out.contains(i))
                    .collect();
                if hits.is_empty() {
                    let labels: Vec<&str> = data.iter().map(|&i| h.signals[i].label.as_str()).collect();
                    return Err(format!(
                        "key `channels`: {}: no channel `{want}`{}; the file has: {}",
                        file.path.display(),
                        neurostream_engine::suggest::hint(want, labels.iter().copied()),
                        labels.join(", ")
                    ));
                }
                out.extend(hits);
            }
            out
        }
    };
    let spr = h.signals[picked[0]].samples_per_record;
    if !resample && picked.iter().any(|&i| h.signals[i].samples_per_record != spr) {
        return Err(format!(
            "{}: the channels asked for have different sampling rates: {}. A stream has one rate: pick channels of one \
             rate (one source per rate), or set `resample = true` to bring them to the highest",
            file.path.display(),
            picked.iter().map(describe).collect::<Vec<_>>().join(", ")
        ));
    }
    if picked.iter().any(|&i| h.signals[i].samples_per_record == 0) || h.record_duration_s <= 0.0 {
        return Err(format!("{}: the channels have no samples", file.path.display()));
    }
    Ok(picked)
}

/// A configured `edf` source.
pub struct EdfSource {
    name: Arc<str>,
    cfg: EdfSourceConfig,
    path: std::path::PathBuf,
    schema: Arc<Schema>,
    picked: Vec<usize>,
    rate: f64,
    records: usize,
    samples_per_record: usize,
    record_first_sample: Vec<i64>,
    /// (sample, label, duration s), sorted by sample.
    markers: Arc<Vec<(i64, String, f64)>>,
    /// The file as `build` opened and checked it, handed to the first reader so the header
    /// and annotations are not read twice at start-up.
    opened: std::sync::Mutex<Option<EdfFile>>,
}

impl Source for EdfSource {
    fn replayable(&self) -> bool {
        true // a pure function of its files / seed: reopening yields the same batches
    }
    fn input_files(&self) -> Vec<std::path::PathBuf> {
        vec![self.path.clone()]
    }
    fn schema(&self) -> Arc<Schema> {
        self.schema.clone()
    }
    fn total_rows(&self) -> Option<u64> {
        Some((self.records * self.samples_per_record) as u64)
    }
    fn open(&self, worker: WorkerPos) -> Result<Box<dyn SourceReader>> {
        // One worker replays the recording: a device stream has one order.
        let file = if worker.index == 0 {
            let opened = self.opened.lock().unwrap_or_else(|e| e.into_inner()).take();
            match opened {
                Some(f) => Some(f),
                None => Some(
                    EdfFile::open(&self.path, self.cfg.allow_truncated)
                        .map_err(|m| EngineError::config(self.name.as_ref(), m))?,
                ),
            }
        } else {
            None
        };
        Ok(Box::new(EdfReader {
            name: self.name.clone(),
            schema: self.schema.clone(),
            picked: self.picked.clone(),
            rate: self.rate,
            chunk: self.cfg.chunk,
            speed: self.cfg.speed,
            records: if file.is_some() { self.records } else { 0 },
            record_first_sample: self.record_first_sample.clone(),
            markers: self.markers.clone(),
            file,
            next_record: 0,
            next_marker: 0,
            rows: Vec::new(),
            samples: Vec::new(),
            scratch: Vec::new(),
            staged: None,
            started: None,
            spr: self.samples_per_record,
            resampled: None,
            behind_reported: false,
        }))
    }
}

struct EdfReader {
    name: Arc<str>,
    schema: Arc<Schema>,
    picked: Vec<usize>,
    rate: f64,
    chunk: usize,
    speed: f64,
    records: usize,
    record_first_sample: Vec<i64>,
    markers: Arc<Vec<(i64, String, f64)>>,
    file: Option<EdfFile>,
    next_record: usize,
    next_marker: usize,
    /// Decoded rows not yet emitted (row-major) and their sample indices.
    rows: Vec<f32>,
    samples: Vec<i64>,
    scratch: Vec<f64>,
    /// The next frame, built ahead to know when it is due.
    staged: Option<Frame>,
    started: Option<Instant>,
    /// Samples per record at the stream's rate (the highest picked).
    spr: usize,
    /// With channels of mixed rates: every channel of the whole recording at the stream's rate.
    resampled: Option<Vec<Vec<f32>>>,
    /// Whether falling behind the replay's pace was reported.
    behind_reported: bool,
}

impl EdfReader {
    /// Reads every picked channel of the whole recording and resamples those below the
    /// stream's rate (`resample_poly`, Kaiser β 5), once.
    fn load_resampled(&mut self) -> Result<()> {
        use neurostream_engine::dsp::polyphase::{design, CpuResample, Polyphase, ResampleKernels};
        let file = self.file.as_mut().expect("worker 0 has the file");
        let mut channels: Vec<Vec<f64>> = vec![Vec::new(); self.picked.len()];
        for r in 0..self.records {
            let record = file.read_record(r).map_err(EngineError::Runtime)?;
            for (c, &i) in self.picked.iter().enumerate() {
                file.decode(&record, i, &mut self.scratch);
                channels[c].extend_from_slice(&self.scratch);
            }
        }
        let mut out = Vec::with_capacity(channels.len());
        for (c, &i) in self.picked.iter().enumerate() {
            let own = file.header.signals[i].samples_per_record;
            let x: Vec<f32> = channels[c].iter().map(|&v| v as f32).collect();
            if own == self.spr {
                out.push(x);
                continue;
            }
            let g = neurostream_engine::dsp::gcd(self.spr as u64, own as u64) as usize;
            let (up, down) = (self.spr / g, own / g);
            let (h, pre) = design(up, down);
            let n_out = self.records * self.spr;
            let ms: Vec<i64> = (0..n_out as i64).map(|j| j + pre as i64).collect();
            let f = Polyphase { h, up, down };
            out.push(CpuResample.outputs(&f, &x, 0, &ms, 1)?);
        }
        self.resampled = Some(out);
        Ok(())
    }

    fn decode_next_record(&mut self) -> Result<()> {
        let mixed = {
            let file = self.file.as_ref().expect("worker 0 has the file");
            self.picked
                .iter()
                .any(|&i| file.header.signals[i].samples_per_record != self.spr)
        };
        if mixed && self.resampled.is_none() {
            self.load_resampled()?;
        }
        let r = self.next_record;
        let w = self.picked.len();
        let n = self.spr;
        let base = self.rows.len();
        self.rows.resize(base + n * w, 0.0);
        if let Some(all) = &self.resampled {
            for (c, ch) in all.iter().enumerate() {
                for (s, v) in ch[r * n..(r + 1) * n].iter().enumerate() {
                    self.rows[base + s * w + c] = *v;
                }
            }
        } else {
            let file = self.file.as_mut().expect("worker 0 has the file");
            let record = file.read_record(r).map_err(EngineError::Runtime)?;
            for (c, &i) in self.picked.iter().enumerate() {
                file.decode(&record, i, &mut self.scratch);
                for (s, v) in self.scratch.iter().enumerate() {
                    self.rows[base + s * w + c] = *v as f32;
                }
            }
        }
        let first = self.record_first_sample[r];
        self.samples.extend((0..n as i64).map(|s| first + s));
        self.next_record += 1;
        Ok(())
    }

    fn build_frame(&mut self) -> Result<Option<Frame>> {
        while self.samples.len() < self.chunk && self.next_record < self.records {
            self.decode_next_record()?;
        }
        if self.samples.is_empty() {
            return Ok(None);
        }
        let take = self.chunk.min(self.samples.len());
        let w = self.picked.len();
        let rest_rows = self.rows.split_off(take * w);
        let rest_samples = self.samples.split_off(take);
        let data = std::mem::replace(&mut self.rows, rest_rows);
        let samples = std::mem::replace(&mut self.samples, rest_samples);
        let last = *samples.last().unwrap();
        let final_frame = self.samples.is_empty() && self.next_record >= self.records;
        let mut markers = Vec::new();
        while let Some((at, label, dur)) = self.markers.get(self.next_marker) {
            if *at > last {
                break;
            }
            let row = samples.partition_point(|s| s < at);
            markers.push(Marker {
                row: row.min(samples.len() - 1) as u32,
                label: label.clone(),
                duration_s: *dur,
            });
            self.next_marker += 1;
        }
        if final_frame && self.next_marker < self.markers.len() {
            let left = self.markers.len() - self.next_marker;
            tracing::info!(
                "edf `{}`: {left} annotations start after the last sample ({:.3} s) and are not emitted",
                self.name,
                (last + 1) as f64 / self.rate
            );
            self.next_marker = self.markers.len();
        }
        let mut frame = Frame::new(self.name.clone(), self.schema.clone(), RowIndex::Samples(samples), data)?;
        frame.markers = markers;
        Ok(Some(frame))
    }
}

impl SourceReader for EdfReader {
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
        if let Some(f) = &self.staged {
            if let RowIndex::Samples(s) = &f.index {
                return Some(s[0].max(0) as u64);
            }
        }
        if let Some(&s) = self.samples.first() {
            return Some(s.max(0) as u64);
        }
        (self.next_record < self.records).then(|| self.record_first_sample[self.next_record].max(0) as u64)
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
        let started = *self.started.get_or_insert_with(Instant::now);
        let Some(RowIndex::Samples(s)) = self.staged.as_ref().map(|f| &f.index) else {
            return true;
        };
        let due = (s[s.len() - 1] + 1) as f64 / self.rate / self.speed;
        let now = started.elapsed().as_secs_f64();
        if now - due > 1.0 && !self.behind_reported {
            // Nothing is dropped (the replay waits for the pipeline), but the device it stands
            // in for would have overflowed: say so.
            self.behind_reported = true;
            tracing::warn!(
                "edf `{}`: the pipeline is {:.1} s behind the real-time replay (a live device's buffer would be \
                 overflowing)",
                self.name,
                now - due
            );
        }
        now >= due
    }

    fn location(&self) -> String {
        format!("edf `{}`, data record {}", self.name, self.next_record)
    }
}
