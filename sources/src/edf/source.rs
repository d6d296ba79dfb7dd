//! The `edf` source: replays an EDF/EDF+/BDF/BDF+ recording as a signal stream, in physical
//! units, with its annotations (and those of a separate annotation file, such as a hypnogram)
//! as markers; as fast as possible or paced like the device (`speed`).

use std::sync::Arc;

use neurostream_engine::{Channel, EngineError, NodeConfig, NodeContext, Result, Schema, Source, SourceKind, StreamKind};
use serde::{Deserialize, Serialize};

use super::file::EdfFile;
use crate::recording::{
    default_chunk, engine_channels, handed_over, pick_at_one_rate, Blocks, Event, OpenBlocks, RecordingSource, ReplaySettings,
};

/// Configuration of an `edf` source.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct EdfSourceConfig {
    /// The recording (`.edf` or `.bdf`; EDF+ and BDF+ included), or a glob of recordings
    /// (`"sleep/*-PSG.edf"`): each a stream of its own, named by its file, read whole on one
    /// worker, ended after its last sample.
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
        if crate::recording_set::is_set(ctx, &cfg.path) && cfg.annotations.is_some() {
            return Err(EngineError::config(
                ctx.label,
                "`annotations` names the annotation file of one recording; it cannot go with a glob `path`",
            ));
        }
        if let Some(set) =
            crate::recording_set::glob_set(&EdfSourceKind, &cfg, &cfg.path, ctx, |c, path| EdfSourceConfig { path, ..c })
        {
            return set;
        }
        let fail = |m: String| EngineError::config(ctx.label, m);
        crate::recording::check_pace(cfg.chunk, cfg.speed).map_err(fail)?;
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
        let events = annotations
            .into_iter()
            .map(|(onset, dur, text)| Event {
                sample: (onset * rate).round() as i64,
                label: text,
                duration_s: dur.unwrap_or(0.0),
            })
            .collect();
        let record_first_sample: Arc<[i64]> = file.record_starts.iter().map(|s| (s * rate).round() as i64).collect();
        let (channels, factors) = engine_channels(
            picked
                .iter()
                .map(|&i| Channel {
                    name: h.signals[i].label.clone(),
                    unit: h.signals[i].unit.clone(),
                    kind: neurostream_engine::schema::channel_type_from_label(&h.signals[i].label),
                })
                .collect(),
        );
        let schema = Arc::new(Schema {
            kind: StreamKind::Signal {
                sample_rate: rate,
                row_rate: None,
            },
            channels,
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
        let mut files = vec![path.clone()];
        files.extend(cfg.annotations.as_ref().map(|a| ctx.input_file(a)));
        let settings = ReplaySettings {
            kind: EdfSourceConfig::KIND,
            name: ctx.name.into(),
            schema,
            rate,
            chunk: cfg.chunk,
            speed: cfg.speed,
            factors: factors.map(Arc::new),
            events: Arc::new(events),
        };
        let opened = std::sync::Mutex::new(Some(without_index(file)));
        let allow_truncated = cfg.allow_truncated;
        let open: OpenBlocks = Box::new(move || {
            let file = handed_over(&opened, || {
                EdfFile::open(&path, allow_truncated)
                    .map(without_index)
                    .map_err(EngineError::Runtime)
            })?;
            Ok(Box::new(EdfBlocks {
                file,
                picked: picked.clone(),
                records,
                record_first_sample: record_first_sample.clone(),
                next_record: 0,
                scratch: Vec::new(),
                spr,
                resampled: None,
            }) as Box<dyn Blocks>)
        });
        Ok(Arc::new(RecordingSource {
            settings,
            files,
            rows: (records * spr) as u64,
            open,
            held_bytes: 0,
        }))
    }
}

/// `file` without its record start times and annotations, which the reader does not need once
/// the replay has them (as first samples and events): a multi-day recording's index would
/// otherwise stay in memory twice for the whole run (~10 MiB for 72 h of the bundled recording).
fn without_index(mut file: EdfFile) -> EdfFile {
    file.record_starts = Vec::new();
    file.annotations = Vec::new();
    file
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
    let labels: Vec<&str> = data.iter().map(|&i| h.signals[i].label.as_str()).collect();
    let spr: Vec<usize> = data.iter().map(|&i| h.signals[i].samples_per_record).collect();
    let rate = |k: usize| h.sample_rate(data[k]);
    let picked: Vec<usize> = pick_at_one_rate(&file.path, &labels, &spr, &rate, wanted, Some(resample))?
        .into_iter()
        .map(|k| data[k])
        .collect();
    if h.record_duration_s <= 0.0 {
        return Err(format!("{}: the channels have no samples", file.path.display()));
    }
    Ok(picked)
}

/// The picked channels of an EDF file, a data record at a time.
struct EdfBlocks {
    file: EdfFile,
    picked: Vec<usize>,
    records: usize,
    record_first_sample: Arc<[i64]>,
    next_record: usize,
    scratch: Vec<f64>,
    /// Samples per record at the stream's rate (the highest picked).
    spr: usize,
    /// With channels of mixed rates: every channel of the whole recording at the stream's rate.
    resampled: Option<Vec<Vec<f32>>>,
}

impl EdfBlocks {
    /// Reads every picked channel of the whole recording and resamples those below the
    /// stream's rate (`resample_poly`, Kaiser β 5), once.
    fn load_resampled(&mut self) -> Result<()> {
        use neurostream_engine::dsp::polyphase::{design, CpuResample, Polyphase, ResampleKernels};
        let file = &mut self.file;
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
            let (h, pre) = design(up, down).map_err(|m| {
                EngineError::Runtime(format!(
                    "{}: channel `{}`: {m}",
                    file.path.display(),
                    file.header.signals[i].label
                ))
            })?;
            let n_out = self.records * self.spr;
            let ms: Vec<i64> = (0..n_out as i64).map(|j| j + pre as i64).collect();
            let f = Polyphase { h, up, down };
            out.push(CpuResample.outputs(&f, &x, 0, &ms, 1)?);
        }
        self.resampled = Some(out);
        Ok(())
    }
}

impl Blocks for EdfBlocks {
    fn read_block(&mut self, rows: &mut Vec<f32>, samples: &mut Vec<i64>) -> Result<bool> {
        if self.next_record >= self.records {
            return Ok(false);
        }
        let mixed = self
            .picked
            .iter()
            .any(|&i| self.file.header.signals[i].samples_per_record != self.spr);
        if mixed && self.resampled.is_none() {
            self.load_resampled()?;
        }
        let r = self.next_record;
        let w = self.picked.len();
        let n = self.spr;
        let base = rows.len();
        rows.resize(base + n * w, 0.0);
        if let Some(all) = &self.resampled {
            for (c, ch) in all.iter().enumerate() {
                for (s, v) in ch[r * n..(r + 1) * n].iter().enumerate() {
                    rows[base + s * w + c] = *v;
                }
            }
        } else {
            let record = self.file.read_record(r).map_err(EngineError::Runtime)?;
            for (c, &i) in self.picked.iter().enumerate() {
                self.file.decode(&record, i, &mut self.scratch);
                for (s, v) in self.scratch.iter().enumerate() {
                    rows[base + s * w + c] = *v as f32;
                }
            }
        }
        let first = self.record_first_sample[r];
        samples.extend((0..n as i64).map(|s| first + s));
        self.next_record += 1;
        Ok(true)
    }

    fn next_sample(&self) -> Option<i64> {
        self.record_first_sample.get(self.next_record).copied()
    }

    fn location(&self) -> String {
        format!("data record {}", self.next_record)
    }
}
