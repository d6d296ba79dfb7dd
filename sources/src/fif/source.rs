//! The `fif` source: replays a raw FIF recording (MEG: magnetometers and gradiometers, with
//! EEG, EOG, ECG and stim channels; split files followed) as a signal stream in the engine's
//! units (fT, fT/cm, µV), its MNE annotations and stim-channel events as markers.

use std::sync::{Arc, Mutex};

use neurostream_engine::{Channel, EngineError, NodeConfig, NodeContext, Result, Schema, Source, SourceKind, StreamKind};
use serde::{Deserialize, Serialize};

use super::file::{Buffer, FifRecording};
use crate::recording::{
    default_chunk, engine_channels, handed_over, pick_labels, Blocks, Event, OpenBlocks, RecordingSource, ReplaySettings,
};

/// Configuration of a `fif` source.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct FifSourceConfig {
    /// The recording (`raw.fif`, `*_raw.fif`, `*_meg.fif`, or gzip-compressed `*.fif.gz`; its
    /// split files `-1.fif`, ... are followed), or a glob of recordings: each a stream of its
    /// own, named by its file.
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

impl NodeConfig for FifSourceConfig {
    const KIND: &'static str = "fif";
}

/// The `fif` source kind.
pub struct FifSourceKind;

/// Events of a stim channel as `mne.find_events` finds them by default (`consecutive =
/// "increasing"`): a sample where the value rises to a nonzero value, labelled with it. Fed
/// one buffer at a time, so a long recording is never held whole.
#[derive(Default)]
struct StimEvents {
    /// The last value seen, `None` before the first sample (which is never an event).
    prev: Option<f64>,
    /// Index of the next sample.
    sample: i64,
}

impl StimEvents {
    /// Appends the events among the next `values` as (sample, value).
    fn push(&mut self, values: &[f64], out: &mut Vec<(i64, i64)>) {
        for &now in values {
            if self.prev.is_some_and(|prev| now != 0.0 && now > prev) {
                out.push((self.sample, now as i64));
            }
            self.prev = Some(now);
            self.sample += 1;
        }
    }
}

impl SourceKind for FifSourceKind {
    type Config = FifSourceConfig;

    fn describe(&self) -> &'static str {
        "raw FIF recording (MEG/EEG; Neuromag, MNE) in fT, fT/cm and uV, annotations and stim events as markers"
    }
    fn build(&self, cfg: FifSourceConfig, ctx: &NodeContext) -> Result<Arc<dyn Source>> {
        if let Some(set) =
            crate::recording_set::glob_set(&FifSourceKind, &cfg, &cfg.path, ctx, |c, path| FifSourceConfig { path, ..c })
        {
            return set;
        }
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
            let (mut values, mut found, mut stim_events) = (Vec::new(), Vec::new(), StimEvents::default());
            for b in rec.buffers.clone() {
                values.clear();
                rec.read_buffer(&b, &[s], &mut values).map_err(fail)?;
                stim_events.push(&values, &mut found);
            }
            events.extend(found.into_iter().map(|(sample, value)| Event {
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
        let settings = ReplaySettings {
            kind: FifSourceConfig::KIND,
            name: ctx.name.into(),
            schema,
            rate: rec.sfreq,
            chunk: cfg.chunk,
            speed: cfg.speed,
            factors: factors.map(Arc::new),
            events: Arc::new(events),
        };
        let (files, rows) = (rec.files.clone(), rec.samples());
        let first = path.clone();
        let opened = Mutex::new(Some(rec));
        let open: OpenBlocks = Box::new(move || {
            let rec = handed_over(&opened, || FifRecording::open(&first).map_err(EngineError::Runtime))?;
            Ok(Box::new(FifBlocks {
                buffers: rec.buffers.clone(),
                rec,
                picked: picked.clone(),
                next: 0,
                next_sample: 0,
                values: Vec::new(),
            }) as Box<dyn Blocks>)
        });
        Ok(Arc::new(RecordingSource {
            settings,
            files,
            rows,
            open,
            held_bytes: 0,
        }))
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
