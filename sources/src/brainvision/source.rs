//! The `brainvision` source: replays a BrainVision recording (`.vhdr` header, `.eeg` data,
//! `.vmrk` markers) as a signal stream in the engine's units, its markers as markers (labelled
//! `type/description`, as MNE names them), fast or paced like the device (`speed`).

use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use neurostream_engine::{Channel, EngineError, NodeConfig, NodeContext, Result, Schema, Source, SourceKind, StreamKind};
use serde::{Deserialize, Serialize};

use super::ascii::AsciiLines;
use super::header::{parse_markers, read_text, DataFormat, Header, SampleFormat};
use crate::recording::{
    default_chunk, engine_channels, pick_labels, Blocks, Event, HeldBlocks, OpenBlocks, RecordingSource, ReplaySettings,
    HELD_SAMPLES_BYTES,
};

/// Configuration of a `brainvision` source.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct BrainVisionSourceConfig {
    /// The header file (`.vhdr`); it names the data and marker files beside it. A glob of
    /// header files reads each as a stream of its own, named by its file.
    pub path: String,
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
    /// Channels of type `eog` (MNE's default list).
    #[serde(default = "default_eog")]
    pub eog: Vec<String>,
}

fn default_eog() -> Vec<String> {
    ["HEOGL", "HEOGR", "VEOGb"].map(String::from).to_vec()
}

impl BrainVisionSourceConfig {
    /// Reads every channel of the recording whose header is `path`, 256 samples per frame.
    pub fn new(path: &str) -> BrainVisionSourceConfig {
        BrainVisionSourceConfig {
            path: path.into(),
            channels: None,
            chunk: default_chunk(),
            speed: 0.0,
            eog: default_eog(),
        }
    }
}

impl NodeConfig for BrainVisionSourceConfig {
    const KIND: &'static str = "brainvision";
}

/// The `brainvision` source kind.
pub struct BrainVisionSourceKind;

/// A recording opened and checked: header, markers, sample count (of a binary data file; an
/// ASCII one is counted as it is read, once the channels are picked).
struct Opened {
    header: Header,
    samples: Option<u64>,
    events: Vec<Event>,
}

/// Checks the header's `DataPoints` (when it states them) against the samples of the data.
fn check_data_points(path: &Path, header: &Header, samples: u64) -> std::result::Result<(), String> {
    match header.data_points {
        Some(points) if points != samples => Err(format!(
            "{}: DataPoints: the header says {points} samples per channel, the data file {} holds {samples}",
            path.display(),
            header.data_file.display()
        )),
        _ => Ok(()),
    }
}

fn open_recording(path: &Path) -> std::result::Result<Opened, String> {
    let header = Header::open(path)?;
    let data_size = std::fs::metadata(&header.data_file)
        .map_err(|e| format!("{}: DataFile: {}: {e}", path.display(), header.data_file.display()))?
        .len();
    let samples = match header.format {
        DataFormat::Binary(format) => {
            let frame_bytes = (format.bytes() * header.channels.len()) as u64;
            if data_size % frame_bytes != 0 {
                return Err(format!(
                    "{}: {} bytes is not a whole number of samples of {} channels × {} bytes: the header disagrees with the data, or the file is truncated",
                    header.data_file.display(),
                    data_size,
                    header.channels.len(),
                    format.bytes()
                ));
            }
            let samples = data_size / frame_bytes;
            check_data_points(path, &header, samples)?;
            Some(samples)
        }
        DataFormat::Ascii(_) => None,
    };
    let events = match &header.marker_file {
        None => Vec::new(),
        Some(m) => {
            let text = read_text(m).map_err(|e| format!("{}: MarkerFile: {e}", path.display()))?;
            let mut entries = parse_markers(&text, m)?;
            // MNE leaves out a leading `New Segment` (it only carries the recording's date).
            if entries.first().is_some_and(|e| e.kind == "New Segment") {
                entries.remove(0);
            }
            let mut events: Vec<Event> = entries
                .into_iter()
                .map(|e| Event {
                    sample: e.sample,
                    label: format!("{}/{}", e.kind, e.description),
                    duration_s: e.points as f64 / header.sample_rate,
                })
                .collect();
            events.sort_by_key(|e| e.sample);
            events
        }
    };
    Ok(Opened { header, samples, events })
}

impl SourceKind for BrainVisionSourceKind {
    type Config = BrainVisionSourceConfig;

    fn describe(&self) -> &'static str {
        "BrainVision recording (.vhdr/.eeg/.vmrk; int16, int32, float32 multiplexed or vectorized, or ASCII) in the engine's units, markers as markers"
    }
    fn build(&self, cfg: BrainVisionSourceConfig, ctx: &NodeContext) -> Result<Arc<dyn Source>> {
        if let Some(set) = crate::recording_set::glob_set(&BrainVisionSourceKind, &cfg, &cfg.path, ctx, |c, path| {
            BrainVisionSourceConfig { path, ..c }
        }) {
            return set;
        }
        let fail = |m: String| EngineError::config(ctx.label, m);
        crate::recording::check_pace(cfg.chunk, cfg.speed).map_err(fail)?;
        let path = ctx.input_file(&cfg.path);
        let opened = open_recording(&path).map_err(fail)?;
        let h = &opened.header;
        let labels: Vec<&str> = h.channels.iter().map(|c| c.name.as_str()).collect();
        let picked = match &cfg.channels {
            None => (0..labels.len()).collect(),
            Some(list) => pick_labels(&labels, list, &path).map_err(fail)?,
        };
        let (channels, unit_factors) = engine_channels(
            picked
                .iter()
                .map(|&i| {
                    let c = &h.channels[i];
                    let voltage = matches!(c.unit.as_str(), "V" | "mV" | "µV" | "μV" | "uV" | "nV");
                    let kind = if cfg.eog.contains(&c.name) {
                        "eog"
                    } else if voltage {
                        "eeg"
                    } else {
                        "misc"
                    };
                    Channel {
                        name: c.name.clone(),
                        unit: c.unit.clone(),
                        kind: kind.into(),
                    }
                })
                .collect(),
        );
        // Stored value × resolution is the value in the file's unit; × the unit factor, in the
        // engine's. Both are applied while decoding, in f64.
        let scales: Vec<f64> = picked
            .iter()
            .enumerate()
            .map(|(k, &i)| h.channels[i].resolution * unit_factors.as_ref().map_or(1.0, |f| f[k] as f64))
            .collect();
        let schema = Arc::new(Schema {
            kind: StreamKind::Signal {
                sample_rate: h.sample_rate,
                row_rate: None,
            },
            channels,
        });
        // An ASCII data file is read here, every line checked, and its picked values are kept
        // for the replay when they fit, so it is parsed once.
        let (samples, held) = match (opened.samples, h.format) {
            (Some(n), _) => (n, None),
            (None, DataFormat::Ascii(layout)) => {
                let (n, held) =
                    AsciiLines::read_all(&h.data_file, layout, h.channels.len(), &picked, &scales, HELD_SAMPLES_BYTES)
                        .map_err(fail)?;
                check_data_points(&path, h, n).map_err(fail)?;
                (n, held.map(Arc::new))
            }
            (None, DataFormat::Binary(_)) => unreachable!("binary data files are counted when opened"),
        };
        tracing::info!(
            "{}: {:?} {}, {} channels × {} samples at {} Hz, {} markers",
            path.display(),
            h.format,
            if h.vectorized { "vectorized" } else { "multiplexed" },
            h.channels.len(),
            samples,
            h.sample_rate,
            opened.events.len()
        );
        let files = std::iter::once(path.clone())
            .chain(std::iter::once(h.data_file.clone()))
            .chain(h.marker_file.clone())
            .collect();
        let settings = ReplaySettings {
            kind: BrainVisionSourceConfig::KIND,
            name: ctx.name.into(),
            schema,
            rate: h.sample_rate,
            chunk: cfg.chunk,
            speed: cfg.speed,
            // Unit factors are folded into `scales`.
            factors: None,
            events: Arc::new(opened.events),
        };
        let (header, scales) = (opened.header, Arc::new(scales));
        let held_bytes = held.as_deref().map_or(0, crate::recording::held_bytes);
        let open: OpenBlocks = Box::new(move || {
            if let Some(blocks) = &held {
                return Ok(Box::new(HeldBlocks::new(blocks.clone(), picked.len())) as Box<dyn Blocks>);
            }
            let format = match header.format {
                DataFormat::Binary(format) => format,
                DataFormat::Ascii(layout) => {
                    let lines = AsciiLines::open(&header.data_file, layout).map_err(EngineError::Runtime)?;
                    return Ok(Box::new(AsciiBlocks {
                        lines,
                        channels: header.channels.len(),
                        picked: picked.clone(),
                        scales: scales.clone(),
                        samples,
                        next: 0,
                        values: Vec::new(),
                    }) as Box<dyn Blocks>);
                }
            };
            let data = File::open(&header.data_file)
                .map_err(|e| EngineError::io(format!("opening {}", header.data_file.display()), e))?;
            Ok(Box::new(DataBlocks {
                data,
                path: header.data_file.clone(),
                format,
                vectorized: header.vectorized,
                channels: header.channels.len(),
                picked: picked.clone(),
                scales: scales.clone(),
                samples,
                next: 0,
                buffer: Vec::new(),
            }) as Box<dyn Blocks>)
        });
        Ok(Arc::new(RecordingSource {
            settings,
            files,
            rows: samples,
            open,
            held_bytes,
        }))
    }
}

/// Samples per block read from the data file, at most.
const BLOCK_SAMPLES: u64 = 4096;
/// Bytes per block read from the data file, at most (many channels mean fewer samples).
const BLOCK_BYTES: u64 = 4 << 20;

/// The picked channels of a BrainVision data file, a block of samples at a time.
struct DataBlocks {
    data: File,
    path: PathBuf,
    format: SampleFormat,
    vectorized: bool,
    /// Channels in the file.
    channels: usize,
    picked: Vec<usize>,
    scales: Arc<Vec<f64>>,
    /// Samples per channel in the file.
    samples: u64,
    /// Next sample to read.
    next: u64,
    buffer: Vec<u8>,
}

impl DataBlocks {
    fn read_at(&mut self, offset: u64, len: usize) -> Result<()> {
        self.buffer.resize(len, 0);
        self.data.read_exact_at(&mut self.buffer, offset).map_err(|e| {
            EngineError::Runtime(format!(
                "{}: reading {len} bytes at offset {offset}: {e} (the file changed or was truncated while being read)",
                self.path.display()
            ))
        })
    }
}

impl Blocks for DataBlocks {
    fn read_block(&mut self, rows: &mut Vec<f32>, samples: &mut Vec<i64>) -> Result<bool> {
        if self.next >= self.samples {
            return Ok(false);
        }
        let fmt = self.format;
        let bps = fmt.bytes();
        let nch = self.channels;
        let per_block = (BLOCK_BYTES / (nch * bps) as u64).clamp(1, BLOCK_SAMPLES);
        let n = per_block.min(self.samples - self.next) as usize;
        let w = self.picked.len();
        let base = rows.len();
        rows.resize(base + n * w, 0.0);
        if self.vectorized {
            for (c, &ch) in self.picked.clone().iter().enumerate() {
                let offset = (ch as u64 * self.samples + self.next) * bps as u64;
                self.read_at(offset, n * bps)?;
                let scale = self.scales[c];
                for (s, b) in self.buffer.chunks_exact(bps).enumerate() {
                    rows[base + s * w + c] = (fmt.decode(b) * scale) as f32;
                }
            }
        } else {
            let frame = nch * bps;
            self.read_at(self.next * frame as u64, n * frame)?;
            for (s, sample) in self.buffer.chunks_exact(frame).enumerate() {
                for (c, &ch) in self.picked.iter().enumerate() {
                    rows[base + s * w + c] = (fmt.decode(&sample[ch * bps..]) * self.scales[c]) as f32;
                }
            }
        }
        samples.extend((self.next as i64..).take(n));
        self.next += n as u64;
        Ok(true)
    }

    fn next_sample(&self) -> Option<i64> {
        (self.next < self.samples).then_some(self.next as i64)
    }

    fn location(&self) -> String {
        format!("sample {}", self.next)
    }
}

/// The picked channels of a BrainVision ASCII data file, [`BLOCK_SAMPLES`] lines at a time.
struct AsciiBlocks {
    lines: AsciiLines,
    /// Channels in the file.
    channels: usize,
    picked: Vec<usize>,
    scales: Arc<Vec<f64>>,
    /// Samples per channel in the file (counted when it was opened).
    samples: u64,
    /// Next sample to read.
    next: u64,
    values: Vec<f64>,
}

impl Blocks for AsciiBlocks {
    fn read_block(&mut self, rows: &mut Vec<f32>, samples: &mut Vec<i64>) -> Result<bool> {
        let first = self.next;
        while self.next < self.samples && self.next - first < BLOCK_SAMPLES {
            if !self
                .lines
                .next_sample(self.channels, &mut self.values)
                .map_err(EngineError::Runtime)?
            {
                return Err(EngineError::Runtime(format!(
                    "{} ends at sample {} of {} (the file changed while being read)",
                    self.lines.path().display(),
                    self.next,
                    self.samples
                )));
            }
            rows.extend(
                self.picked
                    .iter()
                    .zip(self.scales.iter())
                    .map(|(&c, s)| (self.values[c] * s) as f32),
            );
            self.next += 1;
        }
        samples.extend(first as i64..self.next as i64);
        Ok(self.next > first)
    }

    fn next_sample(&self) -> Option<i64> {
        (self.next < self.samples).then_some(self.next as i64)
    }

    fn location(&self) -> String {
        format!("sample {}", self.next)
    }
}
