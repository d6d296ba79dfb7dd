//! `bandpower`: per window (sliding or epochs, see [`super::windows`]), each channel's Welch
//! PSD ([`super::welch`]) summed over named frequency bands: absolute power
//! `Σ_{lo ≤ f < hi} PSD(f) · Δf` (unit², Δf = fs / nperseg) and, with `relative = true`, that
//! divided by the power over all the bands' range (`min lo ≤ f < max hi`).
//!
//! Output: one row per window at the sample of its last row, channels `CH:BAND` (and
//! `CH:BAND:rel`), the window's label as its marker.

pub mod welch;

use std::collections::HashMap;
use std::sync::Arc;

use neurostream_engine::kernels::Kernels;
use neurostream_engine::{
    Batch, Channel, ComputeDevice, EngineError, Frame, Marker, NodeConfig, NodeContext, Operator, OperatorInstance, OperatorKind,
    Partitioning, Result, RowIndex, Schema, StreamKind,
};
use serde::{Deserialize, Serialize};

use super::windows::{WindowConfig, WindowSpec, Windower};
use welch::{CpuPower, GpuPower, PowerKernels, Welch};

/// Configuration of a `bandpower` operator.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct BandpowerConfig {
    /// How windows are cut.
    #[serde(flatten)]
    pub windows: WindowConfig,
    /// Bands as `[name, low Hz, high Hz]` (default: delta 0.5-4, theta 4-8, alpha 8-12, sigma
    /// 12-15, beta 15-30).
    #[serde(default = "default_bands")]
    #[schemars(extend("x-unit" = "Hz"))]
    pub bands: Vec<(String, f64, f64)>,
    /// Welch segment length in samples (default: min(256, window length), as scipy).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(extend("x-unit" = "samples"))]
    pub nperseg: Option<usize>,
    /// Samples shared by consecutive segments (default nperseg / 2).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(extend("x-unit" = "samples"))]
    pub noverlap: Option<usize>,
    /// Also emit each band's power relative to the bands' total range.
    #[serde(default)]
    pub relative: bool,
}

fn default_bands() -> Vec<(String, f64, f64)> {
    [
        ("delta", 0.5, 4.0),
        ("theta", 4.0, 8.0),
        ("alpha", 8.0, 12.0),
        ("sigma", 12.0, 15.0),
        ("beta", 15.0, 30.0),
    ]
    .into_iter()
    .map(|(n, lo, hi)| (n.to_string(), lo, hi))
    .collect()
}

impl NodeConfig for BandpowerConfig {
    const KIND: &'static str = "bandpower";
}

/// The `bandpower` operator kind.
pub struct BandpowerKind;

impl OperatorKind for BandpowerKind {
    type Config = BandpowerConfig;

    fn describe(&self) -> &'static str {
        "Welch band power (absolute and relative) per channel over sliding windows or epochs"
    }
    fn build(&self, cfg: BandpowerConfig, ctx: &NodeContext, input: &Arc<Schema>) -> Result<Arc<dyn Operator>> {
        let fail = |m: String| EngineError::config(ctx.label, m);
        let fs = super::sampled_rate(BandpowerConfig::KIND, input, ctx)?;
        let spec = cfg.windows.resolve(fs, input.width()).map_err(fail)?;
        let length = spec.length();
        let nperseg = cfg.nperseg.unwrap_or(256.min(length));
        if nperseg > length {
            return Err(fail(format!(
                "`nperseg` {nperseg} is longer than the window ({length} samples)"
            )));
        }
        let welch = Welch::new(nperseg, cfg.noverlap.unwrap_or(nperseg / 2), fs).map_err(fail)?;
        if cfg.bands.is_empty() {
            return Err(fail("`bands` is empty".into()));
        }
        for (name, lo, hi) in &cfg.bands {
            if !(lo < hi && *lo >= 0.0 && *hi <= fs / 2.0 + 1e-9) {
                return Err(fail(format!(
                    "band {name} [{lo}, {hi}] Hz must be increasing within 0..{} Hz",
                    fs / 2.0
                )));
            }
            let bins = (0..welch.nfreq())
                .filter(|&k| welch.freq(k) >= *lo && welch.freq(k) < *hi)
                .count();
            if bins == 0 {
                return Err(fail(format!(
                    "band {name} [{lo}, {hi}] Hz holds no frequency bin at a resolution of {} Hz (raise `nperseg`)",
                    fs / nperseg as f64
                )));
            }
        }
        let mut channels = Vec::new();
        for c in &input.channels {
            let unit = if c.unit.is_empty() {
                String::new()
            } else if c.unit.contains('/') {
                format!("({})^2", c.unit)
            } else {
                format!("{}^2", c.unit)
            };
            for (b, _, _) in &cfg.bands {
                channels.push(Channel {
                    name: format!("{}:{b}", c.name),
                    unit: unit.clone(),
                    kind: c.kind.clone(),
                });
            }
            if cfg.relative {
                for (b, _, _) in &cfg.bands {
                    channels.push(Channel {
                        name: format!("{}:{b}:rel", c.name),
                        unit: String::new(),
                        kind: c.kind.clone(),
                    });
                }
            }
        }
        Ok(Arc::new(Bandpower {
            input: input.clone(),
            schema: Arc::new(Schema {
                kind: StreamKind::Signal {
                    sample_rate: fs,
                    row_rate: Some(spec.row_rate(input.row_rate())),
                },
                channels,
            }),
            spec,
            welch,
            bands: cfg.bands,
            relative: cfg.relative,
            name: ctx.label.to_string(),
        }))
    }
}

struct Bandpower {
    input: Arc<Schema>,
    schema: Arc<Schema>,
    spec: WindowSpec,
    welch: Welch,
    bands: Vec<(String, f64, f64)>,
    relative: bool,
    name: String,
}

impl Operator for Bandpower {
    fn output_schema(&self) -> Arc<Schema> {
        self.schema.clone()
    }
    fn partitioning(&self) -> Partitioning {
        Partitioning::ByStream
    }
    fn holds_back(&self) -> bool {
        true
    }
    fn checkpointing(&self) -> neurostream_engine::Checkpointing {
        neurostream_engine::Checkpointing::Snapshot
    }
    fn instantiate(&self, device: &ComputeDevice) -> Result<Box<dyn OperatorInstance>> {
        let kernels = Kernels::select(
            "bandpower",
            device,
            |ctx| Ok(Box::new(GpuPower::new(ctx)?) as Box<dyn PowerKernels>),
            Box::new(|| Box::new(CpuPower::new()) as Box<dyn PowerKernels>),
        )?;
        Ok(Box::new(BandpowerInstance {
            channels: self.input.width(),
            schema: self.schema.clone(),
            spec: self.spec.clone(),
            welch: self.welch.clone(),
            bands: self.bands.clone(),
            relative: self.relative,
            name: self.name.clone(),
            kernels,
            windowers: HashMap::new(),
            scratch: Scratch::default(),
        }))
    }
}

struct BandpowerInstance {
    channels: usize,
    schema: Arc<Schema>,
    spec: WindowSpec,
    welch: Welch,
    bands: Vec<(String, f64, f64)>,
    relative: bool,
    name: String,
    kernels: Kernels<dyn PowerKernels>,
    windowers: HashMap<Arc<str>, Windower>,
    scratch: Scratch,
}

/// Buffers reused from frame to frame (see [`PowerKernels::power`]).
#[derive(Default)]
struct Scratch {
    by_channel: Vec<f32>,
    segments: Vec<f32>,
    power: Vec<f64>,
}

impl OperatorInstance for BandpowerInstance {
    fn process(&mut self, batch: Batch, out: &mut Vec<Batch>) -> Result<()> {
        let Batch::Dense(frame) = batch else {
            return Err(EngineError::Shape(format!(
                "bandpower takes dense frames; stream {} is not",
                batch.stream()
            )));
        };
        let fs = self.welch.fs;
        let (spec, c) = (self.spec.clone(), self.channels);
        let windows = self
            .windowers
            .entry(frame.stream.clone())
            .or_insert_with(|| Windower::new(spec, c, fs))
            .push(&frame);
        if windows.is_empty() {
            return Ok(());
        }
        // All windows × channels × segments of this frame in one kernel call.
        let w = &self.welch;
        let len = windows[0].data.len() / c;
        let segs = w.segments(len);
        let scratch = &mut self.scratch;
        scratch.segments.clear();
        for win in &windows {
            w.push_segments(&win.data, c, &mut scratch.by_channel, &mut scratch.segments);
        }
        let (segments, power) = (&scratch.segments, &mut scratch.power);
        self.kernels.run(|k| k.power(segments, w.nperseg, w.nfreq(), power))?;
        let power = &scratch.power;
        let nfreq = w.nfreq();
        let df = fs / w.nperseg as f64;
        let lo_all = self.bands.iter().map(|b| b.1).fold(f64::INFINITY, f64::min);
        let hi_all = self.bands.iter().map(|b| b.2).fold(f64::NEG_INFINITY, f64::max);
        let width = self.schema.width();
        let mut data = Vec::with_capacity(windows.len() * width);
        let mut samples = Vec::with_capacity(windows.len());
        let mut markers = Vec::new();
        for (wi, win) in windows.iter().enumerate() {
            for ch in 0..c {
                let at = (wi * c + ch) * segs * nfreq;
                let psd = w.average(&power[at..at + segs * nfreq], segs);
                let band = |lo: f64, hi: f64| -> f64 {
                    (0..nfreq)
                        .filter(|&k| w.freq(k) >= lo && w.freq(k) < hi)
                        .map(|k| psd[k])
                        .sum::<f64>()
                        * df
                };
                let abs: Vec<f64> = self.bands.iter().map(|(_, lo, hi)| band(*lo, *hi)).collect();
                data.extend(abs.iter().map(|&v| v as f32));
                if self.relative {
                    let total = band(lo_all, hi_all);
                    data.extend(abs.iter().map(|&v| if total > 0.0 { (v / total) as f32 } else { 0.0 }));
                }
            }
            samples.push(win.last_sample);
            if let Some(label) = &win.label {
                markers.push(Marker {
                    row: wi as u32,
                    label: label.clone(),
                    duration_s: 0.0,
                });
            }
        }
        let mut f = Frame::new(frame.stream.clone(), self.schema.clone(), RowIndex::Samples(samples), data)?;
        f.markers = markers;
        f.arrival_ns = frame.arrival_ns;
        out.push(Batch::Dense(f));
        Ok(())
    }

    fn snapshot(&self) -> Result<Vec<u8>> {
        super::windows::snapshot_windowers(&self.windowers)
    }

    fn restore(&mut self, state: &[u8]) -> Result<()> {
        self.windowers = super::windows::restore_windowers(state, "bandpower", &self.spec, self.channels, self.welch.fs)?;
        Ok(())
    }

    fn finish(&mut self, _out: &mut Vec<Batch>) -> Result<()> {
        for (stream, w) in &mut self.windowers {
            w.finish();
            if w.rejected > 0 || w.incomplete > 0 {
                tracing::info!(
                    "{} stream {stream}: {} epochs rejected (peak-to-peak), {} incomplete at the stream's edges",
                    self.name,
                    w.rejected,
                    w.incomplete
                );
            }
        }
        Ok(())
    }
}
