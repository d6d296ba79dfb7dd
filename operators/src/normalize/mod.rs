//! `normalize`: per-channel normalization of dense frames.
//!
//! Methods (key `method`):
//! - `running_zscore`: per stream and channel, Welford running mean and variance (population,
//!   ddof = 0). Each row first updates the statistics, then is mapped to
//!   `(x - mean) / sqrt(var + epsilon)`. The first `warmup` rows are held back until `warmup`
//!   rows have been seen, then emitted normalized with the statistics of all of them (so early
//!   rows are not scaled by a variance of one or two samples). A stream that ends during
//!   warm-up is emitted with the statistics it has.
//! - `fixed`: `(x - mean) / std` with per-channel `mean` and `std` read from `stats`
//!   (JSON `{"mean": [...], "std": [...]}` or safetensors with 1-D tensors `mean`, `std`).
//! - `l2`: each row scaled to L2 norm `target_norm` (default `sqrt(width)`, as SAEs trained with
//!   SAELens's `normalize_activations = "expected_average_only_in"` expect). All-zero rows stay zero.
//!
//! The statistics of `running_zscore` are kept in float64 on the host for both backends; the
//! wgpu kernel computes each frame's rows against them in float32, so error does not grow with
//! the length of the stream.

mod cpu;
mod gpu;
mod stats_file;

use std::collections::HashMap;
use std::sync::Arc;

use neurostream_engine::checkpoint::{decode_streams, encode_streams, Checkpointing};
use neurostream_engine::kernels::Kernels;
use neurostream_engine::{
    Batch, ComputeDevice, EngineError, Frame, NodeConfig, NodeContext, Operator, OperatorInstance, OperatorKind, Partitioning,
    Result, Rows, Schema,
};
use serde::{Deserialize, Serialize};

pub use cpu::CpuKernels;
pub use gpu::GpuKernels;
pub use stats_file::{load_stats, Stats};

/// Which normalization to apply.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Method {
    /// Running per-channel z-score (Welford).
    RunningZscore,
    /// Fixed per-channel mean and std from a file.
    Fixed,
    /// Scale each row to a target L2 norm.
    L2,
}

/// Configuration of a `normalize` operator (the keys of its TOML table).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct NormalizeConfig {
    /// The method.
    pub method: Method,
    /// `running_zscore`: rows held back, then emitted with the statistics of exactly those rows
    /// (default 0).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub warmup: Option<u64>,
    /// `running_zscore`: added to the variance before the square root (default 1e-8).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub epsilon: Option<f64>,
    /// `fixed`: the statistics file, JSON `{"mean": [...], "std": [...]}` or safetensors with 1-D
    /// `mean` and `std`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stats: Option<String>,
    /// `l2`: target norm of every row (default `sqrt(width)`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target_norm: Option<f64>,
    /// Expected input width; a different input is a shape error at validation.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub channels: Option<usize>,
}

impl NormalizeConfig {
    /// A running z-score holding back `warmup` rows.
    pub fn running_zscore(warmup: u64) -> NormalizeConfig {
        NormalizeConfig {
            method: Method::RunningZscore,
            warmup: Some(warmup),
            epsilon: None,
            stats: None,
            target_norm: None,
            channels: None,
        }
    }

    /// Fixed statistics from `path`.
    pub fn fixed(path: &str) -> NormalizeConfig {
        NormalizeConfig {
            method: Method::Fixed,
            stats: Some(path.to_string()),
            ..NormalizeConfig::running_zscore(0)
        }
    }

    /// L2 scaling to `target_norm` (`None`: `sqrt(width)`).
    pub fn l2(target_norm: Option<f64>) -> NormalizeConfig {
        NormalizeConfig {
            method: Method::L2,
            target_norm,
            ..NormalizeConfig::running_zscore(0)
        }
    }
}

impl NodeConfig for NormalizeConfig {
    const KIND: &'static str = "normalize";
}

/// Default `epsilon` of `running_zscore`.
pub const DEFAULT_EPSILON: f64 = 1e-8;

/// The kernels every backend provides. Data is row-major `rows × width`.
pub trait NormalizeKernels {
    /// `out[r, c] = (x[r, c] - mean[c]) * inv_std[c]` for the rows of `frame` (host or device);
    /// GPU kernels leave the result on the device when `keep_on_device`.
    fn affine(&mut self, frame: &Frame, mean: &[f64], inv_std: &[f64], keep_on_device: bool) -> Result<Rows>;
    /// Running z-score of `data` continuing `state`, which is updated with every row.
    fn running(&mut self, data: &[f32], width: usize, state: &mut Welford, epsilon: f64) -> Result<Vec<f32>>;
    /// Each row of `frame` scaled to L2 norm `target`; GPU kernels leave the result on the device
    /// when `keep_on_device`.
    fn l2(&mut self, frame: &Frame, target: f64, keep_on_device: bool) -> Result<Rows>;
}

/// Welford running statistics per channel, in float64.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Welford {
    /// Rows seen.
    pub count: u64,
    /// Running mean per channel.
    pub mean: Vec<f64>,
    /// Sum of squared deviations from the mean per channel.
    pub m2: Vec<f64>,
}

impl Welford {
    /// Empty statistics for `width` channels.
    pub fn new(width: usize) -> Welford {
        Welford {
            count: 0,
            mean: vec![0.0; width],
            m2: vec![0.0; width],
        }
    }

    /// Merges the statistics of `n` further rows with per-channel mean `mean` and squared deviations `m2` (Chan et al.).
    pub fn merge(&mut self, n: u64, mean: &[f64], m2: &[f64]) {
        if n == 0 {
            return;
        }
        let (na, nb) = (self.count as f64, n as f64);
        let total = na + nb;
        for c in 0..self.mean.len() {
            let delta = mean[c] - self.mean[c];
            self.mean[c] += delta * nb / total;
            self.m2[c] += m2[c] + delta * delta * na * nb / total;
        }
        self.count += n;
    }

    /// Population variance per channel.
    pub fn variance(&self) -> Vec<f64> {
        let n = self.count.max(1) as f64;
        self.m2.iter().map(|m| m / n).collect()
    }
}

/// The `normalize` operator kind.
pub struct NormalizeKind;

impl OperatorKind for NormalizeKind {
    type Config = NormalizeConfig;

    fn describe(&self) -> &'static str {
        "per-channel running z-score (Welford), fixed mean/std from a file, or L2 row scaling"
    }

    fn build(&self, cfg: NormalizeConfig, ctx: &NodeContext, input: &Arc<Schema>) -> Result<Arc<dyn Operator>> {
        let width = input.width();
        let fail = |m: String| Err(EngineError::config(ctx.label, m));
        if input.is_sparse() {
            return fail(format!("normalize takes dense streams; its input is {}", input.describe()));
        }
        if let Some(expected) = cfg.channels {
            if expected != width {
                return fail(format!(
                    "shape mismatch: expects {expected} channels (key `channels`) but its input has {width} ({})",
                    input.describe()
                ));
            }
        }
        let unused = |key: &str, set: bool| -> Result<()> {
            if set {
                Err(EngineError::config(
                    ctx.label,
                    format!("key `{key}` does not apply to method {:?}", cfg.method),
                ))
            } else {
                Ok(())
            }
        };
        let mode = match cfg.method {
            Method::RunningZscore => {
                unused("stats", cfg.stats.is_some())?;
                unused("target_norm", cfg.target_norm.is_some())?;
                let epsilon = cfg.epsilon.unwrap_or(DEFAULT_EPSILON);
                if !(epsilon >= 0.0 && epsilon.is_finite()) {
                    return fail(format!("`epsilon` must be a finite number >= 0, found {epsilon}"));
                }
                Mode::Running {
                    warmup: cfg.warmup.unwrap_or(0),
                    epsilon,
                }
            }
            Method::Fixed => {
                unused("warmup", cfg.warmup.is_some())?;
                unused("epsilon", cfg.epsilon.is_some())?;
                unused("target_norm", cfg.target_norm.is_some())?;
                let Some(path) = &cfg.stats else {
                    return fail("method fixed needs key `stats` (a JSON or safetensors file with mean and std)".into());
                };
                let path = ctx.input_file(path);
                let Stats { mean, std, units } = load_stats(&path).map_err(|e| EngineError::config(ctx.label, e.to_string()))?;
                if mean.len() != width {
                    return fail(format!(
                        "shape mismatch: `stats` {} holds {} channels but its input has {width} ({})",
                        path.display(),
                        mean.len(),
                        input.describe()
                    ));
                }
                if let Some((c, s)) = std.iter().enumerate().find(|(_, s)| !(**s > 0.0 && s.is_finite())) {
                    return fail(format!(
                        "`stats` {}: std of channel {c} is {s}; it must be positive",
                        path.display()
                    ));
                }
                // Input values × f are in the statistics' units, so (x·f − m)/s = (x − m/f)/(s/f).
                let fitted: Vec<(String, String)> = (0..width)
                    .map(|c| (input.channels[c].name.clone(), units.get(c).cloned().unwrap_or_default()))
                    .collect();
                let picks: Vec<usize> = (0..width).collect();
                let what = format!("`stats` {}", path.display());
                let f = neurostream_engine::schema::fitted_unit_factors(&what, &fitted, input, &picks)
                    .map_err(|m| EngineError::config(ctx.label, m))?;
                let mean: Vec<f64> = mean.iter().zip(&f).map(|(m, f)| m / f).collect();
                let inv_std = std.iter().zip(&f).map(|(s, f)| f / s).collect();
                Mode::Fixed {
                    mean: Arc::new(mean),
                    inv_std: Arc::new(inv_std),
                }
            }
            Method::L2 => {
                unused("warmup", cfg.warmup.is_some())?;
                unused("epsilon", cfg.epsilon.is_some())?;
                unused("stats", cfg.stats.is_some())?;
                let target = cfg.target_norm.unwrap_or((width as f64).sqrt());
                if !(target > 0.0 && target.is_finite()) {
                    return fail(format!("`target_norm` must be positive, found {target}"));
                }
                Mode::L2 { target }
            }
        };
        // Every method divides by a scale of the data: the output is unitless, whatever came in.
        let mut schema = (**input).clone();
        schema.channels.iter_mut().for_each(|c| c.unit.clear());
        Ok(Arc::new(Normalize {
            schema: Arc::new(schema),
            mode,
        }))
    }
}

#[derive(Clone, Debug)]
enum Mode {
    Running { warmup: u64, epsilon: f64 },
    Fixed { mean: Arc<Vec<f64>>, inv_std: Arc<Vec<f64>> },
    L2 { target: f64 },
}

struct Normalize {
    schema: Arc<Schema>,
    mode: Mode,
}

impl Operator for Normalize {
    fn takes_device_rows(&self) -> bool {
        true
    }

    fn output_schema(&self) -> Arc<Schema> {
        self.schema.clone()
    }

    fn partitioning(&self) -> Partitioning {
        match self.mode {
            Mode::Running { .. } => Partitioning::ByStream,
            _ => Partitioning::Local,
        }
    }

    fn holds_back(&self) -> bool {
        matches!(self.mode, Mode::Running { warmup, .. } if warmup > 0)
    }

    fn checkpointing(&self) -> Checkpointing {
        match self.mode {
            Mode::Running { .. } => Checkpointing::Snapshot,
            _ => Checkpointing::Stateless,
        }
    }

    fn instantiate(&self, device: &ComputeDevice) -> Result<Box<dyn OperatorInstance>> {
        let kernels = Kernels::select(
            "normalize",
            device,
            |ctx| Ok(Box::new(GpuKernels::new(ctx)?) as Box<dyn NormalizeKernels>),
            Box::new(|| Box::new(CpuKernels) as Box<dyn NormalizeKernels>),
        )?;
        Ok(Box::new(NormalizeInstance {
            mode: self.mode.clone(),
            kernels,
            streams: HashMap::new(),
            keep_on_device: false,
        }))
    }
}

/// Per-stream state of a running z-score.
#[derive(Serialize, Deserialize)]
struct StreamState {
    stats: Welford,
    /// Frames held back during warm-up.
    held: Vec<Frame>,
    warmed: bool,
}

struct NormalizeInstance {
    /// The runtime lets GPU output stay on the device.
    keep_on_device: bool,
    mode: Mode,
    kernels: Kernels<dyn NormalizeKernels>,
    streams: HashMap<Arc<str>, StreamState>,
}

impl NormalizeInstance {
    /// Running z-score of `data` continuing `stats` (restored before a CPU retry).
    fn running(&mut self, data: &[f32], width: usize, stats: &mut Welford, epsilon: f64) -> Result<Vec<f32>> {
        let before = stats.clone();
        self.kernels.run(|k| {
            *stats = before.clone();
            k.running(data, width, stats, epsilon)
        })
    }

    /// Emits the held warm-up frames normalized with the statistics of exactly the warm-up rows.
    fn release_held(&mut self, state: &mut StreamState, epsilon: f64, out: &mut Vec<Batch>) -> Result<()> {
        state.warmed = true;
        let mean = state.stats.mean.clone();
        let inv_std: Vec<f64> = state.stats.variance().iter().map(|v| 1.0 / (v + epsilon).sqrt()).collect();
        for mut frame in std::mem::take(&mut state.held) {
            let keep = self.keep_on_device;
            let rows = self.kernels.run(|k| k.affine(&frame, &mean, &inv_std, keep))?;
            frame.set_rows(rows, keep)?;
            out.push(Batch::Dense(frame));
        }
        Ok(())
    }
}

impl OperatorInstance for NormalizeInstance {
    fn keep_output_on_device(&mut self) {
        self.keep_on_device = true;
    }

    fn snapshot(&self) -> Result<Vec<u8>> {
        // The statistics, and during a warm-up the frames held back for it.
        encode_streams(&self.streams)
    }

    fn restore(&mut self, state: &[u8]) -> Result<()> {
        for (name, st) in decode_streams::<StreamState>(state, "normalize")? {
            self.streams.insert(name, st);
        }
        Ok(())
    }

    fn process(&mut self, batch: Batch, out: &mut Vec<Batch>) -> Result<()> {
        let Batch::Dense(mut frame) = batch else {
            return Err(EngineError::Shape(format!(
                "normalize takes dense frames; stream {} is sparse",
                batch.stream()
            )));
        };
        let (w, keep) = (frame.width(), self.keep_on_device);
        match self.mode.clone() {
            Mode::Fixed { mean, inv_std } => {
                let rows = self.kernels.run(|k| k.affine(&frame, &mean, &inv_std, keep))?;
                frame.set_rows(rows, keep)?;
                out.push(Batch::Dense(frame));
            }
            Mode::L2 { target } => {
                let rows = self.kernels.run(|k| k.l2(&frame, target, keep))?;
                frame.set_rows(rows, keep)?;
                out.push(Batch::Dense(frame));
            }
            Mode::Running { warmup, epsilon } => {
                // The running statistics are merged on the host, so its rows come here.
                frame.materialize()?;
                let stream = frame.stream.clone();
                let mut state = self.streams.remove(&stream).unwrap_or_else(|| StreamState {
                    stats: Welford::new(w),
                    held: Vec::new(),
                    warmed: warmup == 0,
                });
                let result = (|| -> Result<()> {
                    if !state.warmed {
                        // Warm-up: fold exactly `warmup` rows into the statistics and hold them back.
                        let needed = (warmup - state.stats.count) as usize;
                        let tail = (frame.rows() > needed).then(|| frame.split_off(needed));
                        self.running(&frame.data, w, &mut state.stats, epsilon)?;
                        state.held.push(frame);
                        if state.stats.count >= warmup {
                            self.release_held(&mut state, epsilon, out)?;
                        }
                        match tail {
                            Some(t) => frame = t,
                            None => return Ok(()),
                        }
                    }
                    frame.data = self.running(&frame.data, w, &mut state.stats, epsilon)?;
                    out.push(Batch::Dense(frame));
                    Ok(())
                })();
                self.streams.insert(stream, state);
                result?;
            }
        }
        Ok(())
    }

    fn finish(&mut self, out: &mut Vec<Batch>) -> Result<()> {
        let Mode::Running { epsilon, .. } = self.mode else {
            return Ok(());
        };
        let mut streams: Vec<Arc<str>> = self
            .streams
            .iter()
            .filter(|(_, s)| !s.warmed)
            .map(|(k, _)| k.clone())
            .collect();
        streams.sort();
        for stream in streams {
            let mut state = self.streams.remove(&stream).unwrap();
            self.release_held(&mut state, epsilon, out)?;
            self.streams.insert(stream, state);
        }
        Ok(())
    }

    /// Releases rows a warm-up still holds and drops the stream's statistics.
    fn end_stream(&mut self, stream: &Arc<str>, out: &mut Vec<Batch>) -> Result<()> {
        let Mode::Running { epsilon, .. } = self.mode else {
            return Ok(());
        };
        match self.streams.remove(stream) {
            Some(mut state) if !state.warmed => self.release_held(&mut state, epsilon, out)?,
            _ => {}
        }
        Ok(())
    }
}
