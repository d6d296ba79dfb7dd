//! The `xdf` source: replays one stream of an XDF recording (LabRecorder's format) as a
//! signal stream in the engine's units, with the recording's string streams (markers) placed
//! on the samples nearest their time stamps after each stream's clock offsets are applied.

use std::sync::{Arc, Mutex};

use neurostream_engine::{Channel, EngineError, NodeConfig, NodeContext, Result, Schema, Source, SourceKind, StreamKind};
use serde::{Deserialize, Serialize};

use super::file::{ChannelDesc, ChannelFormat, StreamData, StreamHeader, XdfFile};
use crate::recording::{
    default_chunk, engine_channels, handed_over, pick_labels, Blocks, Event, OpenBlocks, RecordingSource, ReplaySettings,
};

/// Configuration of an `xdf` source.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct XdfSourceConfig {
    /// The recording (`.xdf`, or gzip-compressed `.xdfz`), or a glob of recordings: each a
    /// stream of its own, named by its file.
    pub path: String,
    /// The stream to replay, by name. Default: with `type`, the first stream of that type;
    /// else the first numeric stream with a nominal rate.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stream: Option<String>,
    /// The stream to replay, by type (`EEG`), when `stream` is not given.
    #[serde(default, rename = "type", skip_serializing_if = "Option::is_none")]
    pub stream_type: Option<String>,
    /// String streams whose samples become markers, by name. Default: every string stream.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub markers: Option<Vec<String>>,
    /// Channels to read, by label or glob pattern, in this order. Default: every channel.
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
    /// Read a file that ends inside a chunk (a recorder that died) up to its last whole chunk
    /// (default: an error).
    #[serde(default)]
    pub allow_truncated: bool,
}

impl NodeConfig for XdfSourceConfig {
    const KIND: &'static str = "xdf";
}

/// The `xdf` source kind.
pub struct XdfSourceKind;

/// A stream's clock correction, `t + a + b·t` (XDF clock offsets are `remote − local` time
/// differences measured while recording; a least-squares line through them, as pyxdf fits for
/// clean recordings).
fn clock_correction(offsets: &[(f64, f64)]) -> (f64, f64) {
    match offsets.len() {
        0 => (0.0, 0.0),
        1 => (offsets[0].1, 0.0),
        n => {
            let n = n as f64;
            let mt = offsets.iter().map(|o| o.0).sum::<f64>() / n;
            let mv = offsets.iter().map(|o| o.1).sum::<f64>() / n;
            let stt: f64 = offsets.iter().map(|o| (o.0 - mt) * (o.0 - mt)).sum();
            let stv: f64 = offsets.iter().map(|o| (o.0 - mt) * (o.1 - mv)).sum();
            if stt <= 0.0 {
                return (mv, 0.0);
            }
            let b = stv / stt;
            (mv - b * mt, b)
        }
    }
}

fn corrected(data: &StreamData) -> Vec<f64> {
    let (a, b) = clock_correction(&data.clock_offsets);
    data.timestamps.iter().map(|t| t + a + b * t).collect()
}

fn describe_streams(file: &XdfFile) -> String {
    file.streams
        .iter()
        .map(|s| {
            format!(
                "`{}` (type {}, {:?}, {} channels, {} Hz)",
                s.name, s.stream_type, s.format, s.channel_count, s.nominal_srate
            )
        })
        .collect::<Vec<_>>()
        .join(", ")
}

impl SourceKind for XdfSourceKind {
    type Config = XdfSourceConfig;

    fn describe(&self) -> &'static str {
        "XDF recording (LabRecorder): one stream in the engine's units, string streams as markers after clock correction"
    }
    fn build(&self, cfg: XdfSourceConfig, ctx: &NodeContext) -> Result<Arc<dyn Source>> {
        if let Some(set) =
            crate::recording_set::glob_set(&XdfSourceKind, &cfg, &cfg.path, ctx, |c, path| XdfSourceConfig { path, ..c })
        {
            return set;
        }
        let fail = |m: String| EngineError::config(ctx.label, m);
        crate::recording::check_pace(cfg.chunk, cfg.speed).map_err(fail)?;
        let path = ctx.input_file(&cfg.path);
        let mut file = XdfFile::open(&path, cfg.allow_truncated).map_err(fail)?;
        let numeric = |s: &&StreamHeader| s.format != ChannelFormat::String;
        let header = match (&cfg.stream, &cfg.stream_type) {
            (Some(name), _) => file.streams.iter().find(|s| &s.name == name).ok_or_else(|| {
                format!(
                    "key `stream`: {}: no stream named `{name}`{}; the file has {}",
                    path.display(),
                    neurostream_engine::suggest::hint(name, file.streams.iter().map(|s| s.name.as_str())),
                    describe_streams(&file)
                )
            }),
            (None, Some(t)) => file.streams.iter().find(|s| &s.stream_type == t).ok_or_else(|| {
                format!(
                    "key `type`: {}: no stream of type `{t}`; the file has {}",
                    path.display(),
                    describe_streams(&file)
                )
            }),
            (None, None) => file
                .streams
                .iter()
                .filter(numeric)
                .find(|s| s.nominal_srate > 0.0)
                .ok_or_else(|| {
                    format!(
                        "{}: no numeric stream with a nominal rate; the file has {}",
                        path.display(),
                        describe_streams(&file)
                    )
                }),
        }
        .map_err(fail)?
        .clone();
        if header.format == ChannelFormat::String {
            return Err(fail(format!(
                "{}: stream `{}` holds strings; name it in `markers`, and a numeric stream in `stream`",
                path.display(),
                header.name
            )));
        }
        if header.nominal_srate <= 0.0 {
            return Err(fail(format!(
                "{}: stream `{}` has no nominal rate (irregular samples); a signal stream needs one",
                path.display(),
                header.name
            )));
        }
        let marker_streams: Vec<StreamHeader> = match &cfg.markers {
            None => file
                .streams
                .iter()
                .filter(|s| s.format == ChannelFormat::String)
                .cloned()
                .collect(),
            Some(names) => names
                .iter()
                .map(|n| {
                    file.streams
                        .iter()
                        .find(|s| &s.name == n && s.format == ChannelFormat::String)
                        .cloned()
                        .ok_or_else(|| {
                            fail(format!(
                                "key `markers`: {}: no string stream named `{n}`; the file has {}",
                                path.display(),
                                describe_streams(&file)
                            ))
                        })
                })
                .collect::<Result<_>>()?,
        };
        let mut ids = vec![header.id];
        ids.extend(marker_streams.iter().map(|s| s.id));
        let data = file.scan(&ids).map_err(fail)?;
        let signal = &data[0];
        if signal.timestamps.is_empty() {
            return Err(fail(format!("{}: stream `{}` has no samples", path.display(), header.name)));
        }
        if signal.clock_offsets.is_empty() && !marker_streams.is_empty() {
            tracing::info!(
                "{}: stream `{}` has no clock offsets; its time stamps are taken as they are",
                path.display(),
                header.name
            );
        }
        let times = corrected(signal);
        let half = 0.5 / header.nominal_srate;
        let mut events = Vec::new();
        let mut early = 0;
        for (m, d) in marker_streams.iter().zip(&data[1..]) {
            for (t, label) in corrected(d).into_iter().zip(&d.strings) {
                if t < times[0] - half {
                    early += 1;
                    continue;
                }
                let i = times.partition_point(|s| *s < t);
                let nearest = if i == times.len() || (i > 0 && t - times[i - 1] <= times[i] - t) {
                    i.saturating_sub(1)
                } else {
                    i
                };
                let after_end = i == times.len() && t > times[times.len() - 1] + half;
                events.push(Event {
                    sample: if after_end { times.len() as i64 } else { nearest as i64 },
                    label: label.clone(),
                    duration_s: 0.0,
                });
            }
            tracing::debug!("{}: {} markers from stream `{}`", path.display(), d.strings.len(), m.name);
        }
        if early > 0 {
            tracing::info!(
                "{}: {early} markers come before the first sample of `{}` and are left out",
                path.display(),
                header.name
            );
        }
        events.sort_by_key(|e| e.sample);
        let stream_kind = header.stream_type.to_ascii_lowercase();
        let labels: Vec<ChannelDesc> = (0..header.channel_count)
            .map(|i| {
                let d = header.channels.get(i).cloned().unwrap_or_default();
                ChannelDesc {
                    label: if d.label.is_empty() { format!("ch{}", i + 1) } else { d.label },
                    unit: d.unit,
                    kind: if d.kind.is_empty() {
                        stream_kind.clone()
                    } else {
                        d.kind.to_ascii_lowercase()
                    },
                }
            })
            .collect();
        let names: Vec<&str> = labels.iter().map(|c| c.label.as_str()).collect();
        let picked = match &cfg.channels {
            None => (0..names.len()).collect(),
            Some(list) => pick_labels(&names, list, &path).map_err(fail)?,
        };
        let (channels, factors) = engine_channels(
            picked
                .iter()
                .map(|&i| {
                    let kind = &labels[i].kind;
                    Channel {
                        name: labels[i].label.clone(),
                        unit: labels[i].unit.clone(),
                        kind: if neurostream_engine::schema::check_channel_type(kind).is_ok() {
                            kind.clone()
                        } else {
                            String::new()
                        },
                    }
                })
                .collect(),
        );
        let schema = Arc::new(Schema {
            kind: StreamKind::Signal {
                sample_rate: header.nominal_srate,
                row_rate: None,
            },
            channels,
        });
        tracing::info!(
            "{}: stream `{}` ({:?}), {} channels × {} samples at {} Hz, {} markers",
            path.display(),
            header.name,
            header.format,
            header.channel_count,
            times.len(),
            header.nominal_srate,
            events.len()
        );
        let settings = ReplaySettings {
            kind: XdfSourceConfig::KIND,
            name: ctx.name.into(),
            schema,
            rate: header.nominal_srate,
            chunk: cfg.chunk,
            speed: cfg.speed,
            factors: factors.map(Arc::new),
            events: Arc::new(events),
        };
        let rows = times.len() as u64;
        let chunks = Arc::new(signal.chunks.clone());
        let (files, allow_truncated) = (vec![path.clone()], cfg.allow_truncated);
        let opened = Mutex::new(Some(file));
        let open: OpenBlocks = Box::new(move || {
            let file = handed_over(&opened, || {
                XdfFile::open(&path, allow_truncated).map_err(EngineError::Runtime)
            })?;
            Ok(Box::new(XdfBlocks {
                file,
                header: header.clone(),
                chunks: chunks.clone(),
                picked: picked.clone(),
                next_chunk: 0,
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

/// The picked channels of the replayed stream, a samples chunk at a time.
struct XdfBlocks {
    file: XdfFile,
    header: StreamHeader,
    chunks: Arc<Vec<(u64, u64, u64)>>,
    picked: Vec<usize>,
    next_chunk: usize,
    next_sample: i64,
    values: Vec<f64>,
}

impl Blocks for XdfBlocks {
    fn read_block(&mut self, rows: &mut Vec<f32>, samples: &mut Vec<i64>) -> Result<bool> {
        let Some(&chunk) = self.chunks.get(self.next_chunk) else {
            return Ok(false);
        };
        self.values.clear();
        self.file
            .read_chunk_values(&self.header, chunk, &mut self.values)
            .map_err(EngineError::Runtime)?;
        let width = self.header.channel_count;
        for sample in self.values.chunks_exact(width) {
            rows.extend(self.picked.iter().map(|&c| sample[c] as f32));
        }
        let n = (self.values.len() / width) as i64;
        samples.extend(self.next_sample..self.next_sample + n);
        self.next_sample += n;
        self.next_chunk += 1;
        Ok(true)
    }

    fn next_sample(&self) -> Option<i64> {
        (self.next_chunk < self.chunks.len()).then_some(self.next_sample)
    }

    fn location(&self) -> String {
        format!("samples chunk {} of stream `{}`", self.next_chunk, self.header.name)
    }
}
