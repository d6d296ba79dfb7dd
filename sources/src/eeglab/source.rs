//! The `eeglab` source: replays a continuous EEGLAB dataset (`.set`, samples in it or in a
//! `.fdt` beside it) as a signal stream in µV, its events as markers labelled with the event
//! type, as MNE's `read_raw_eeglab` annotates them; fast or paced like the device.

use std::io::Read;
use std::sync::Arc;

use neurostream_engine::{Channel, EngineError, NodeConfig, NodeContext, Result, Schema, Source, SourceKind, StreamKind};
use serde::{Deserialize, Serialize};

use super::dataset::{Dataset, Samples};
use super::mat::MiType;
use crate::recording::{default_chunk, pick_labels, Blocks, OpenBlocks, RecordingSource, ReplaySettings};

/// Configuration of an `eeglab` source.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct EeglabSourceConfig {
    /// The dataset's `.set` file (MAT-file v6, v7 or v7.3; its samples in it or in the `.fdt` it names),
    /// or a glob of them: each a stream of its own, named by its file.
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
}

impl EeglabSourceConfig {
    /// Reads every channel of `path`, 256 samples per frame, unpaced.
    pub fn new(path: &str) -> EeglabSourceConfig {
        EeglabSourceConfig {
            path: path.into(),
            channels: None,
            chunk: default_chunk(),
            speed: 0.0,
        }
    }
}

impl NodeConfig for EeglabSourceConfig {
    const KIND: &'static str = "eeglab";
}

/// The `eeglab` source kind.
pub struct EeglabSourceKind;

impl SourceKind for EeglabSourceKind {
    type Config = EeglabSourceConfig;

    fn describe(&self) -> &'static str {
        "continuous EEGLAB dataset (.set, samples in it or in its .fdt) in µV, its events as markers"
    }

    fn build(&self, cfg: EeglabSourceConfig, ctx: &NodeContext) -> Result<Arc<dyn Source>> {
        if let Some(set) = crate::recording_set::glob_set(&EeglabSourceKind, &cfg, &cfg.path, ctx, |c, path| EeglabSourceConfig {
            path,
            ..c
        }) {
            return set;
        }
        let fail = |m: String| EngineError::config(ctx.label, m);
        crate::recording::check_pace(cfg.chunk, cfg.speed).map_err(fail)?;
        let path = ctx.input_file(&cfg.path);
        let set = Dataset::open(&path).map_err(fail)?;
        let labels: Vec<&str> = set.labels.iter().map(String::as_str).collect();
        let picked = match &cfg.channels {
            None => (0..labels.len()).collect(),
            Some(list) => pick_labels(&labels, list, &path).map_err(fail)?,
        };
        // EEGLAB holds every channel in µV, as MNE reads it (its `CAL` of 1e-6 to volts).
        let channels = picked
            .iter()
            .map(|&i| Channel {
                name: set.labels[i].clone(),
                unit: "uV".into(),
                kind: set.kinds[i].clone(),
            })
            .collect();
        let schema = Arc::new(Schema {
            kind: StreamKind::Signal {
                sample_rate: set.rate,
                row_rate: None,
            },
            channels,
        });
        let data_at = match &set.data {
            Samples::Fdt(fdt) => fdt.display().to_string(),
            _ => "the .set".into(),
        };
        tracing::info!(
            "{}: EEGLAB dataset, {} samples of {} channels at {} Hz (data in {data_at}), {} events{}",
            path.display(),
            set.samples,
            picked.len(),
            set.rate,
            set.events.len(),
            match set.events_without_latency {
                0 => String::new(),
                n => format!(" ({n} without a latency left out)"),
            }
        );
        let mut files = vec![path.clone()];
        if let Samples::Fdt(fdt) = &set.data {
            files.push(fdt.clone());
        }
        let settings = ReplaySettings {
            kind: EeglabSourceConfig::KIND,
            name: ctx.name.into(),
            schema,
            rate: set.rate,
            chunk: cfg.chunk,
            speed: cfg.speed,
            factors: None,
            events: Arc::new(set.events.clone()),
        };
        let rows = set.samples;
        let set = Arc::new(set);
        let open: OpenBlocks = Box::new(move || {
            let (reader, mi, big_endian) = set
                .open_samples()
                .map_err(|e| EngineError::io(format!("opening the samples of {}", set.path.display()), e))?;
            Ok(Box::new(SampleBlocks {
                reader,
                mi,
                big_endian,
                set: set.clone(),
                picked: picked.clone(),
                next: 0,
                buffer: Vec::new(),
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

/// Samples per block read, at most.
const BLOCK_SAMPLES: u64 = 1024;

/// Bytes per block read, at most (fewer samples per block for very many channels).
const BLOCK_BYTES: u64 = 4 << 20;

/// The picked channels of a dataset, [`BLOCK_SAMPLES`] samples (at most [`BLOCK_BYTES`]) at a time.
struct SampleBlocks {
    reader: Box<dyn Read + Send>,
    mi: MiType,
    big_endian: bool,
    set: Arc<Dataset>,
    picked: Vec<usize>,
    /// Next sample to read.
    next: u64,
    buffer: Vec<u8>,
}

impl Blocks for SampleBlocks {
    fn read_block(&mut self, rows: &mut Vec<f32>, samples: &mut Vec<i64>) -> Result<bool> {
        let total = self.set.samples;
        if self.next >= total {
            return Ok(false);
        }
        let (width, bytes) = (self.set.labels.len(), self.mi.bytes());
        let fit = (BLOCK_BYTES / (width * bytes) as u64).max(1);
        let n = BLOCK_SAMPLES.min(fit).min(total - self.next) as usize;
        self.buffer.resize(n * width * bytes, 0);
        self.reader.read_exact(&mut self.buffer).map_err(|e| {
            EngineError::Runtime(format!(
                "{}: samples {}..{}: {e} (the data file changed or was truncated while being read)",
                self.set.path.display(),
                self.next + 1,
                self.next + n as u64
            ))
        })?;
        rows.reserve(n * self.picked.len());
        for sample in self.buffer.chunks_exact(width * bytes) {
            for &c in &self.picked {
                rows.push(self.mi.decode(&sample[c * bytes..(c + 1) * bytes], self.big_endian) as f32);
            }
        }
        let first = self.next as i64;
        samples.extend(first..first + n as i64);
        self.next += n as u64;
        Ok(true)
    }

    fn next_sample(&self) -> Option<i64> {
        (self.next < self.set.samples).then_some(self.next as i64)
    }

    fn location(&self) -> String {
        format!("sample {}", self.next + 1)
    }
}
