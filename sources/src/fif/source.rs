//! The `fif` source: replays a raw FIF recording (MEG: magnetometers and gradiometers, with
//! EEG, EOG, ECG and stim channels; split files followed) as a signal stream in the engine's
//! units (fT, fT/cm, µV), its MNE annotations and stim-channel events as markers.

use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use neurostream_engine::{
    Channel, EngineError, NodeConfig, NodeContext, Result, Schema, Source, SourceKind, SourceReader, StreamKind, WorkerPos,
};
use serde::{Deserialize, Serialize};

use super::file::{Buffer, FifRecording};
use crate::recording::{engine_channels, pick_labels, Blocks, Event, Replay, ReplaySettings};

/// Configuration of a `fif` source.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct FifSourceConfig {
    /// The recording (`raw.fif`, `*_raw.fif`, `*_meg.fif`; its split files `-1.fif`, ... are
    /// followed).
    pub path: String,
    /// Channels to read, by name or glob pattern (`"MEG*"`), in this order. Default: every
    /// channel.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub channels: Option<Vec<String>>,
    /// The stim channel whose events become markers (default: `STI101`, else `STI 014`, else
    /// the first stim channel); `""` for none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stim_channel: Option<String>,
    /// Samples per frame (default 256).
    #[serde(default = "default_chunk")]
    #[schemars(extend("x-unit" = "samples"))]
    pub chunk: usize,
    /// Replay pace: 0 (default) as fast as possible; 1.0 real time; 10 ten times faster.
    #[serde(default)]
    #[schemars(extend("x-unit" = "× real time"))]
    pub speed: f64,
}

fn default_chunk() -> usize {
    256
}

impl NodeConfig for FifSourceConfig {
    const KIND: &'static str = "fif";
}

/// The `fif` source kind.
pub struct FifSourceKind;

/// Events of a stim channel as `mne.find_events` finds them by default (`consecutive =
/// "increasing"`): a sample where the value rises to a nonzero value, labelled with it.
fn stim_events(values: &[f64]) -> Vec<(i64, i64)> {
    let mut out = Vec::new();
    for i in 1..values.len() {
        let (prev, now) = (values[i - 1], values[i]);
        if now != 0.0 && now > prev {
            out.push((i as i64, now as i64));
        }
    }
    out
}

impl SourceKind for FifSourceKind {
    type Config = FifSourceConfig;

    fn describe(&self) -> &'static str {
        "raw FIF recording (MEG/EEG; Neuromag, MNE) in fT, fT/cm and uV, annotations and stim events as markers"
    }
    fn build(&self, cfg: FifSourceConfig, ctx: &NodeContext) -> Result<Arc<dyn Source>> {
        let fail = |m: String| EngineError::config(ctx.label, m);
        crate::recording::check_pace(cfg.chunk, cfg.speed).map_err(fail)?;
        let path = ctx.input_file(&cfg.path);
        let mut rec = FifRecording::open(&path).map_err(fail)?;
        let names: Vec<&str> = rec.channels.iter().map(|c| c.name.as_str()).collect();
        let picked = match &cfg.channels {
            None => (0..names.len()).collect(),
            Some(list) => pick_labels(&names, list, &path).map_err(fail)?,
        };
        let stim = match cfg.stim_channel.as_deref() {
            Some("") => None,
            Some(name) => Some(rec.channels.iter().position(|c| c.name == name).ok_or_else(|| {
                fail(format!(
                    "key `stim_channel`: {}: no channel `{name}`{}",
                    path.display(),
                    neurostream_engine::suggest::hint(name, rec.channels.iter().map(|c| c.name.as_str()))
                ))
            })?),
            None => ["STI101", "STI 014"]
                .iter()
                .find_map(|n| rec.channels.iter().position(|c| c.name == *n))
                .or_else(|| rec.channels.iter().position(|c| c.kind == "stim")),
        };
        let mut events: Vec<Event> = rec
            .annotations
            .iter()
            .map(|a| Event {
                sample: (a.onset_s * rec.sfreq).round() as i64,
                label: a.description.clone(),
                duration_s: a.duration_s,
            })
            .collect();
        if let Some(s) = stim {
            // One pass over the data for the stim channel's events.
            let mut values = Vec::with_capacity(rec.samples() as usize);
            for b in rec.buffers.clone() {
                rec.read_buffer(&b, &[s], &mut values).map_err(fail)?;
            }
            events.extend(stim_events(&values).into_iter().map(|(sample, value)| Event {
                sample,
                label: value.to_string(),
                duration_s: 0.0,
            }));
        }
        events.retain(|e| e.sample >= 0);
        events.sort_by_key(|e| e.sample);
        let (channels, factors) = engine_channels(
            picked
                .iter()
                .map(|&i| Channel {
                    name: rec.channels[i].name.clone(),
                    unit: rec.channels[i].unit.clone(),
                    kind: rec.channels[i].kind.clone(),
                })
                .collect(),
        );
        let schema = Arc::new(Schema {
            kind: StreamKind::Signal {
                sample_rate: rec.sfreq,
                row_rate: None,
            },
            channels,
        });
        let mut counts: std::collections::BTreeMap<&str, usize> = Default::default();
        for c in &rec.channels {
            *counts.entry(c.kind.as_str()).or_default() += 1;
        }
        tracing::info!(
            "{}: {} file(s), {} channels ({}) × {} samples at {} Hz, {} markers",
            path.display(),
            rec.files.len(),
            rec.channels.len(),
            counts.iter().map(|(k, n)| format!("{n} {k}")).collect::<Vec<_>>().join(", "),
            rec.samples(),
            rec.sfreq,
            events.len()
        );
        Ok(Arc::new(FifSource {
            name: ctx.name.into(),
            files: rec.files.clone(),
            rows: rec.samples(),
            rate: rec.sfreq,
            picked,
            factors: factors.map(Arc::new),
            events: Arc::new(events),
            schema,
            cfg,
            opened: Mutex::new(Some(rec)),
        }))
    }
}

/// A configured `fif` source.
pub struct FifSource {
    name: Arc<str>,
    cfg: FifSourceConfig,
    files: Vec<PathBuf>,
    schema: Arc<Schema>,
    rate: f64,
    picked: Vec<usize>,
    rows: u64,
    factors: Option<Arc<Vec<f32>>>,
    events: Arc<Vec<Event>>,
    /// The recording as `build` opened it, handed to the first reader.
    opened: Mutex<Option<FifRecording>>,
}

impl Source for FifSource {
    fn replayable(&self) -> bool {
        true
    }
    fn input_files(&self) -> Vec<PathBuf> {
        self.files.clone()
    }
    fn schema(&self) -> Arc<Schema> {
        self.schema.clone()
    }
    fn total_rows(&self) -> Option<u64> {
        Some(self.rows)
    }
    fn open(&self, worker: WorkerPos) -> Result<Box<dyn SourceReader>> {
        let settings = ReplaySettings {
            kind: FifSourceConfig::KIND,
            name: self.name.clone(),
            schema: self.schema.clone(),
            rate: self.rate,
            chunk: self.cfg.chunk,
            speed: self.cfg.speed,
            factors: self.factors.clone(),
            events: self.events.clone(),
        };
        // One worker replays the recording: a device stream has one order.
        let blocks = if worker.index == 0 {
            let opened = self.opened.lock().unwrap_or_else(|e| e.into_inner()).take();
            let rec = match opened {
                Some(r) => r,
                None => FifRecording::open(&self.files[0]).map_err(EngineError::Runtime)?,
            };
            Some(Box::new(FifBlocks {
                buffers: rec.buffers.clone(),
                rec,
                picked: self.picked.clone(),
                next: 0,
                next_sample: 0,
                values: Vec::new(),
            }) as Box<dyn Blocks>)
        } else {
            None
        };
        Ok(Box::new(Replay::new(settings, blocks)))
    }
}

/// The picked channels of a FIF recording, a data buffer at a time.
struct FifBlocks {
    rec: FifRecording,
    buffers: Vec<Buffer>,
    picked: Vec<usize>,
    next: usize,
    next_sample: i64,
    values: Vec<f64>,
}

impl Blocks for FifBlocks {
    fn read_block(&mut self, rows: &mut Vec<f32>, samples: &mut Vec<i64>) -> Result<bool> {
        let Some(b) = self.buffers.get(self.next).cloned() else {
            return Ok(false);
        };
        self.values.clear();
        self.rec
            .read_buffer(&b, &self.picked, &mut self.values)
            .map_err(EngineError::Runtime)?;
        rows.extend(self.values.iter().map(|&v| v as f32));
        let n = b.samples() as i64;
        samples.extend(self.next_sample..self.next_sample + n);
        self.next_sample += n;
        self.next += 1;
        Ok(true)
    }

    fn next_sample(&self) -> Option<i64> {
        (self.next < self.buffers.len()).then_some(self.next_sample)
    }

    fn location(&self) -> String {
        format!("data buffer {}", self.next)
    }
}
