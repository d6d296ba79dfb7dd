//! `bandpower`: per window (sliding or epochs, see [`super::windows`]), each channel's Welch
//! PSD ([`welch`]) summed over named frequency bands: absolute power
//! `Σ_{lo ≤ f < hi} PSD(f) · Δf` (unit², Δf = fs / nperseg) and, with `relative = true`, that
//! divided by the power over all the bands' range (`min lo ≤ f < max hi`).
//!
//! Output: one row per window at the sample of its last row, channels `CH:BAND` (and
//! `CH:BAND:rel`), the window's label as its marker.
//!
//! On a GPU, sliding windows keep the signal on the device ([`device`]): the rows arrive there
//! from the operator before (or are uploaded once) and only the band powers come back. Epochs
//! (baseline correction and rejection look at the rows) and `gpu_fallback = "cpu"` (a fallback
//! must find the rows on the host) cut windows on the host and send their segments.

pub mod device;
pub mod plan;
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
use device::{DeviceBandpower, DeviceHistory};
use plan::BandPlan;
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
            plan: BandPlan::new(&welch, &cfg.bands, cfg.relative),
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
            name: ctx.label.to_string(),
        }))
    }
}

struct Bandpower {
    input: Arc<Schema>,
    schema: Arc<Schema>,
    spec: WindowSpec,
    welch: Welch,
    plan: BandPlan,
    name: String,
}

impl Operator for Bandpower {
    fn takes_device_rows(&self) -> bool {
        matches!(self.spec, WindowSpec::Sliding { .. })
    }
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
        let channels = self.input.width();
        let on_device = match (device, &self.spec) {
            (ComputeDevice::Gpu(ctx), WindowSpec::Sliding { length, .. }) if !ctx.falls_back_to_cpu() => {
                Some(DeviceBandpower::new(ctx.clone(), &self.welch, &self.plan, channels, *length)?)
            }
            _ => None,
        };
        Ok(Box::new(BandpowerInstance {
            channels,
            schema: self.schema.clone(),
            spec: self.spec.clone(),
            welch: self.welch.clone(),
            plan: self.plan.clone(),
            name: self.name.clone(),
            kernels,
            windowers: HashMap::new(),
            scratch: Scratch::default(),
            on_device,
            histories: HashMap::new(),
        }))
    }
}

struct BandpowerInstance {
    channels: usize,
    schema: Arc<Schema>,
    spec: WindowSpec,
    welch: Welch,
    plan: BandPlan,
    name: String,
    kernels: Kernels<dyn PowerKernels>,
    windowers: HashMap<Arc<str>, Windower>,
    scratch: Scratch,
    /// Sliding windows on a GPU: the kernels that keep each stream's rows on the device.
    on_device: Option<DeviceBandpower>,
    /// With `on_device`: each stream's rows on the device (its windower keeps none).
    histories: HashMap<Arc<str>, DeviceHistory>,
}

/// Buffers reused from frame to frame (see [`PowerKernels::power`]).
#[derive(Default)]
struct Scratch {
    by_channel: Vec<f32>,
    segments: Vec<f32>,
    power: Vec<f64>,
}

impl BandpowerInstance {
    /// The band powers of windows cut on the host: every window × channel × segment in one
    /// kernel call, then each channel's PSD summed per band.
    fn host_band_powers(&mut self, windows: &[super::windows::Window]) -> Result<Vec<f32>> {
        let Some(first) = windows.first() else {
            return Ok(Vec::new());
        };
        let (w, c) = (&self.welch, self.channels);
        let segs = w.segments(first.data.len() / c.max(1));
        let scratch = &mut self.scratch;
        scratch.segments.clear();
        for win in windows {
            w.push_segments(&win.data, c, &mut scratch.by_channel, &mut scratch.segments);
        }
        let (segments, power) = (&scratch.segments, &mut scratch.power);
        self.kernels.run(|k| k.power(segments, w.nperseg, w.nfreq(), power))?;
        let nfreq = w.nfreq();
        let df = w.fs / w.nperseg as f64;
        let mut data = Vec::with_capacity(windows.len() * c * self.plan.width());
        for at in (0..windows.len() * c).map(|i| i * segs * nfreq) {
            let psd = w.average(&scratch.power[at..at + segs * nfreq], segs);
            self.plan.push_channel(&psd, df, &mut data);
        }
        Ok(data)
    }
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
        let windower = self
            .windowers
            .entry(frame.stream.clone())
            .or_insert_with(|| Windower::new(spec, c, fs));
        let (windows, data) = match &mut self.on_device {
            Some(dev) => {
                if !matches!(frame.index, RowIndex::Samples(_)) {
                    return Ok(()); // as the host path: windows are cut on sample indices
                }
                let history = match self.histories.get_mut(&frame.stream) {
                    Some(h) => h,
                    // A fresh stream, or one restored from a checkpoint: its rows go to the device.
                    None => self
                        .histories
                        .entry(frame.stream.clone())
                        .or_insert(dev.upload(&windower.take_rows())),
                };
                let before = windower.base();
                let windows = windower.push(&frame);
                let data = dev.push(history, &frame, &windows, before, windower.base())?;
                debug_assert_eq!(history.rows() as u64, windower.seen() - windower.base());
                (windows, data)
            }
            None => {
                let windows = windower.push(&frame);
                let data = self.host_band_powers(&windows)?;
                (windows, data)
            }
        };
        if windows.is_empty() {
            return Ok(());
        }
        let mut samples = Vec::with_capacity(windows.len());
        let mut markers = Vec::new();
        for (wi, win) in windows.iter().enumerate() {
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
        let Some(dev) = &self.on_device else {
            return super::windows::snapshot_windowers(&self.windowers);
        };
        let mut states = HashMap::new();
        for (stream, w) in &self.windowers {
            let state = match self.histories.get(stream) {
                Some(history) => w.state_with_rows(dev.download(history)?),
                None => w.state(),
            };
            states.insert(stream.clone(), state);
        }
        neurostream_engine::checkpoint::encode_streams(&states)
    }

    fn restore(&mut self, state: &[u8]) -> Result<()> {
        self.windowers = super::windows::restore_windowers(state, "bandpower", &self.spec, self.channels, self.welch.fs)?;
        self.histories.clear();
        Ok(())
    }

    fn finish(&mut self, _out: &mut Vec<Batch>) -> Result<()> {
        for (stream, w) in &mut self.windowers {
            report_windows(&self.name, stream, w);
        }
        Ok(())
    }

    /// Drops the stream's window buffer (and its samples on a GPU); an incomplete window
    /// emits nothing, as at the end of the run.
    fn end_stream(&mut self, stream: &Arc<str>, _out: &mut Vec<Batch>) -> Result<()> {
        if let Some(mut w) = self.windowers.remove(stream) {
            report_windows(&self.name, stream, &mut w);
        }
        self.histories.remove(stream);
        Ok(())
    }
}

/// Closes a stream's windows and logs the epochs it could not use.
fn report_windows(name: &str, stream: &str, w: &mut Windower) {
    w.finish();
    if w.rejected > 0 || w.incomplete > 0 {
        tracing::info!(
            "{name} stream {stream}: {} epochs rejected (peak-to-peak), {} incomplete at the stream's edges",
            w.rejected,
            w.incomplete
        );
    }
}
