//! The `gdf` source: replays a GDF recording (versions 1.x and 2.x: biosig, BCI Competition
//! datasets) as a signal stream in the engine's units, its event table as markers labelled with
//! the event code (`769`), as MNE's `read_raw_gdf` annotates them; fast or paced like the device.

use std::fs::File;
use std::os::unix::fs::FileExt;
use std::sync::Arc;

use neurostream_engine::{Channel, EngineError, NodeConfig, NodeContext, Result, Schema, Source, SourceKind, StreamKind};
use serde::{Deserialize, Serialize};

use super::header::Header;
use crate::recording::{
    default_chunk, engine_channels, pick_at_one_rate, Blocks, Event, OpenBlocks, RecordingSource, ReplaySettings,
};

/// Configuration of a `gdf` source.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct GdfSourceConfig {
    /// The recording (`.gdf`, GDF 1.x or 2.x), or a glob of recordings: each a stream of its
    /// own, named by its file.
    pub path: String,
    /// Channels to read, by label or glob pattern, in this order; all must share one rate.
    /// Default: every signal at the highest sampling rate (the others are listed in the log).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub channels: Option<Vec<String>>,
    /// Samples per frame (default 256).
    #[serde(default = "default_chunk")]
    #[schemars(extend("x-unit" = "samples"))]
    pub chunk: usize,
    /// Replay pace: 0 (default) as fast as possible; 1.0 real time; 10 ten times faster.
    #[serde(default)]
    #[schemars(extend("x-unit" = "× real time"))]
    pub speed: f64,
}

impl GdfSourceConfig {
    /// Reads every signal of `path` at the highest rate, 256 samples per frame, unpaced.
    pub fn new(path: &str) -> GdfSourceConfig {
        GdfSourceConfig {
            path: path.into(),
            channels: None,
            chunk: default_chunk(),
            speed: 0.0,
        }
    }
}

impl NodeConfig for GdfSourceConfig {
    const KIND: &'static str = "gdf";
}

/// The `gdf` source kind.
pub struct GdfSourceKind;

impl SourceKind for GdfSourceKind {
    type Config = GdfSourceConfig;

    fn describe(&self) -> &'static str {
        "GDF 1.x/2.x recording (biosig, BCI Competition) in the engine's units, its event table as markers"
    }

    fn build(&self, cfg: GdfSourceConfig, ctx: &NodeContext) -> Result<Arc<dyn Source>> {
        if let Some(set) =
            crate::recording_set::glob_set(&GdfSourceKind, &cfg, &cfg.path, ctx, |c, path| GdfSourceConfig { path, ..c })
        {
            return set;
        }
        let fail = |m: String| EngineError::config(ctx.label, m);
        crate::recording::check_pace(cfg.chunk, cfg.speed).map_err(fail)?;
        let path = ctx.input_file(&cfg.path);
        let header = Header::open(&path).map_err(fail)?;
        let picked = pick_channels(&header, cfg.channels.as_deref()).map_err(fail)?;
        let rate = header.sample_rate(picked[0]);
        let spr = header.signals[picked[0]].samples_per_record;
        let (channels, unit_factors) = engine_channels(
            picked
                .iter()
                .map(|&i| {
                    let s = &header.signals[i];
                    Channel {
                        name: s.label.clone(),
                        unit: s.unit.clone(),
                        kind: neurostream_engine::schema::channel_type_from_label(&s.label),
                    }
                })
                .collect(),
        );
        // Physical value × the unit factor, applied while decoding, in f64.
        let scales: Vec<(f64, f64)> = picked
            .iter()
            .enumerate()
            .map(|(k, &i)| {
                let f = unit_factors.as_ref().map_or(1.0, |f| f[k] as f64);
                (header.signals[i].gain * f, header.signals[i].offset * f)
            })
            .collect();
        // Event positions are at the event table's rate (the signal rate when it gives none).
        let to_samples = if header.event_rate > 0.0 {
            rate / header.event_rate
        } else {
            1.0
        };
        let mut events: Vec<Event> = header
            .events
            .iter()
            .map(|e| Event {
                sample: (e.position as f64 * to_samples).round() as i64,
                label: e.code.to_string(),
                duration_s: e.duration as f64 * to_samples / rate,
            })
            .collect();
        events.sort_by_key(|e| e.sample);
        let schema = Arc::new(Schema {
            kind: StreamKind::Signal {
                sample_rate: rate,
                row_rate: None,
            },
            channels,
        });
        tracing::info!(
            "{}: {}, {} records of {} s, {} channels at {rate} Hz, {} events",
            path.display(),
            header.version,
            header.records,
            header.record_duration_s,
            picked.len(),
            events.len()
        );
        let settings = ReplaySettings {
            kind: GdfSourceConfig::KIND,
            name: ctx.name.into(),
            schema,
            rate,
            chunk: cfg.chunk,
            speed: cfg.speed,
            // Unit factors are folded into `scales`.
            factors: None,
            events: Arc::new(events),
        };
        let rows = header.records * spr as u64;
        let (header, files, scales) = (Arc::new(header), vec![path.clone()], Arc::new(scales));
        let open: OpenBlocks = Box::new(move || {
            let data = File::open(&header.path).map_err(|e| EngineError::io(format!("opening {}", header.path.display()), e))?;
            Ok(Box::new(RecordBlocks {
                data,
                header: header.clone(),
                picked: picked.clone(),
                scales: scales.clone(),
                spr,
                next: 0,
                record: Vec::new(),
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

/// Resolves `wanted` (labels or glob patterns) to signal indices, all at one rate; by default
/// the signals at the highest rate.
fn pick_channels(h: &Header, wanted: Option<&[String]>) -> std::result::Result<Vec<usize>, String> {
    let labels: Vec<&str> = h.signals.iter().map(|s| s.label.as_str()).collect();
    let spr: Vec<usize> = h.signals.iter().map(|s| s.samples_per_record).collect();
    pick_at_one_rate(&h.path, &labels, &spr, &|i| h.sample_rate(i), wanted, None)
}

/// The picked channels of a GDF file, a data record at a time.
struct RecordBlocks {
    data: File,
    header: Arc<Header>,
    picked: Vec<usize>,
    /// Per picked channel, `(gain, offset)` to the engine's unit.
    scales: Arc<Vec<(f64, f64)>>,
    /// Samples per record of the picked channels.
    spr: usize,
    /// Next record to read.
    next: u64,
    record: Vec<u8>,
}

impl Blocks for RecordBlocks {
    fn read_block(&mut self, rows: &mut Vec<f32>, samples: &mut Vec<i64>) -> Result<bool> {
        let h = &self.header;
        if self.next >= h.records {
            return Ok(false);
        }
        let offset = h.data_offset + self.next * h.record_bytes as u64;
        self.record.resize(h.record_bytes, 0);
        self.data.read_exact_at(&mut self.record, offset).map_err(|e| {
            EngineError::Runtime(format!(
                "{}: data record {} (offset {offset}): {e} (the file changed or was truncated while being read)",
                h.path.display(),
                self.next + 1
            ))
        })?;
        let (w, n) = (self.picked.len(), self.spr);
        let base = rows.len();
        rows.resize(base + n * w, 0.0);
        for (c, &i) in self.picked.iter().enumerate() {
            let s = &h.signals[i];
            let (gain, shift) = self.scales[c];
            let bytes = s.sample_type.bytes();
            let values = &self.record[s.record_offset..s.record_offset + n * bytes];
            for (k, b) in values.chunks_exact(bytes).enumerate() {
                rows[base + k * w + c] = (s.sample_type.decode(b) * gain + shift) as f32;
            }
        }
        let first = (self.next * n as u64) as i64;
        samples.extend(first..first + n as i64);
        self.next += 1;
        Ok(true)
    }

    fn next_sample(&self) -> Option<i64> {
        (self.next < self.header.records).then_some((self.next * self.spr as u64) as i64)
    }

    fn location(&self) -> String {
        format!("data record {}", self.next + 1)
    }
}
