//! `fir`: linear-phase FIR band-pass (or low/high-pass) designed as MNE's `create_filter(...,
//! method="fir", fir_design="firwin", fir_window="hamming")` with its default lengths and
//! transition bands, applied causally with the last `taps − 1` samples carried across chunks
//! (equal to `scipy.signal.lfilter(h, 1, x)` over the whole signal). The output is delayed by
//! `(taps − 1) / 2` samples, stated in the log (MNE's zero-phase filtering removes that delay
//! offline by looking ahead, which a stream cannot).
//!
//! MNE's defaults: transition bands `l_trans = min(max(0.25·l_freq, 2), l_freq)` and
//! `h_trans = min(max(0.25·h_freq, 2), fs/2 − h_freq)`; length `ceil(3.3 / min(trans) · fs)`,
//! made odd; each band edge a windowed-sinc low-pass of the length its own transition needs,
//! centred and summed (MNE's `_firwin_design`).

use std::collections::HashMap;
use std::sync::Arc;

use neurostream_engine::kernels::Kernels;
use neurostream_engine::{
    wgpu, Batch, ComputeDevice, EngineError, GpuContext, GpuPass, NodeConfig, NodeContext, Operator, OperatorInstance,
    OperatorKind, Partitioning, Result, Schema,
};
use serde::{Deserialize, Serialize};

const HAMMING_FACTOR: f64 = 3.3;

/// Configuration of a `fir` operator.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct FirConfig {
    /// High-pass edge in Hz (omit for a low-pass).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(extend("x-unit" = "Hz"))]
    pub l_freq: Option<f64>,
    /// Low-pass edge in Hz (omit for a high-pass).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(extend("x-unit" = "Hz"))]
    pub h_freq: Option<f64>,
}

impl NodeConfig for FirConfig {
    const KIND: &'static str = "fir";
}

/// scipy's `firwin(n, cutoff, window="hamming", pass_zero=True, fs=2)`: a low-pass with
/// `cutoff` as a fraction of Nyquist, unit gain at 0 Hz.
fn firwin_lowpass(n: usize, cutoff: f64) -> Vec<f64> {
    let alpha = 0.5 * (n as f64 - 1.0);
    let sinc = neurostream_engine::dsp::sinc;
    let mut h: Vec<f64> = (0..n)
        .map(|i| {
            let m = i as f64 - alpha;
            let w = if n > 1 {
                0.54 - 0.46 * (2.0 * std::f64::consts::PI * i as f64 / (n as f64 - 1.0)).cos()
            } else {
                1.0
            };
            cutoff * sinc(cutoff * m) * w
        })
        .collect();
    let s: f64 = h.iter().sum();
    h.iter_mut().for_each(|v| *v /= s);
    h
}

/// The longest filter designed (taps): at 1 kHz, 17 minutes of signal per output sample.
pub const MAX_TAPS: usize = 1 << 20;

/// MNE's FIR design for `l_freq` / `h_freq` (Hz) at `fs` Hz; returns the taps. A design longer
/// than [`MAX_TAPS`] is an error.
pub fn design(l_freq: Option<f64>, h_freq: Option<f64>, fs: f64) -> Result<Vec<f64>, String> {
    let nyq = fs / 2.0;
    let l_trans = l_freq.map(|l| (l * 0.25).max(2.0).min(l));
    let h_trans = h_freq.map(|h| (h * 0.25).max(2.0).min(nyq - h));
    let (freq, gain): (Vec<f64>, Vec<f64>) = match (l_freq, h_freq) {
        (Some(l), Some(h)) if l < h => {
            let (lt, ht) = (l_trans.unwrap(), h_trans.unwrap());
            (vec![0.0, l - lt, l, h, h + ht, nyq], vec![0.0, 0.0, 1.0, 1.0, 0.0, 0.0])
        }
        (Some(l), Some(h)) => return Err(format!("l_freq {l} must be below h_freq {h} (band-stop is not built)")),
        (Some(l), None) => (vec![0.0, l - l_trans.unwrap(), l, nyq], vec![0.0, 0.0, 1.0, 1.0]),
        (None, Some(h)) => (vec![0.0, h, h + h_trans.unwrap(), nyq], vec![1.0, 1.0, 0.0, 0.0]),
        (None, None) => return Err("give `l_freq`, `h_freq` or both".into()),
    };
    for f in l_freq.iter().chain(h_freq.iter()) {
        if !(*f > 0.0 && *f < nyq) {
            return Err(format!("edge {f} Hz must lie between 0 and the Nyquist frequency {nyq} Hz"));
        }
    }
    let min_trans = l_trans.into_iter().chain(h_trans).fold(f64::INFINITY, f64::min);
    if min_trans <= 0.0 {
        return Err("the high edge leaves no transition band below Nyquist".into());
    }
    let taps = (HAMMING_FACTOR / min_trans * fs).ceil();
    if taps.is_nan() || taps > MAX_TAPS as f64 {
        return Err(format!(
            "a transition band of {min_trans:.3e} Hz at {fs} Hz needs {taps:.3e} taps, more than {MAX_TAPS}; raise `l_freq` or lower `h_freq`"
        ));
    }
    let mut n = (taps as usize).max(1);
    n += (n - 1) % 2;
    // _firwin_design on frequencies normalized to Nyquist.
    let freq: Vec<f64> = freq.iter().map(|f| f / nyq).collect();
    let mut h = vec![0f64; n];
    let (mut prev_f, mut prev_g) = (freq[freq.len() - 1], gain[gain.len() - 1]);
    if prev_g == 1.0 {
        h[n / 2] = 1.0;
    }
    for (&f, &g) in freq.iter().rev().skip(1).zip(gain.iter().rev().skip(1)) {
        if g != prev_g {
            let transition = (prev_f - f) / 2.0;
            let mut this_n = (HAMMING_FACTOR / transition).round() as usize;
            this_n += 1 - this_n % 2;
            if this_n > n {
                return Err(format!(
                    "filter length {n} is too short for a transition needing {this_n} taps"
                ));
            }
            let lp = firwin_lowpass(this_n, (prev_f + f) / 2.0);
            let off = (n - this_n) / 2;
            for (k, v) in lp.iter().enumerate() {
                if g == 0.0 {
                    h[off + k] -= v;
                } else {
                    h[off + k] += v;
                }
            }
        }
        prev_g = g;
        prev_f = f;
    }
    Ok(h)
}

/// Causal FIR filtering of frames with carried history.
pub trait FirKernels: Send {
    /// Filters `data` (`rows × channels`) in place; `history` holds the previous `taps − 1`
    /// input rows (`(taps − 1) × channels`, oldest first) and is updated.
    fn filter(&mut self, taps: &[f64], history: &mut [f32], data: &mut [f32], channels: usize) -> Result<()>;
}

/// The CPU kernel: float64 accumulation over `[history ‖ chunk]`, channels in the inner loop.
pub struct CpuFir;

impl FirKernels for CpuFir {
    fn filter(&mut self, taps: &[f64], history: &mut [f32], data: &mut [f32], channels: usize) -> Result<()> {
        let (n, rows) = (taps.len(), data.len() / channels);
        let mut buf: Vec<f32> = Vec::with_capacity(history.len() + data.len());
        buf.extend_from_slice(history);
        buf.extend_from_slice(data);
        let mut acc = vec![0f64; channels];
        for r in 0..rows {
            acc.iter_mut().for_each(|a| *a = 0.0);
            // y[r] = Σ_k h[k] · x[r − k]; x[r − k] sits at buffer row r + n − 1 − k.
            for (k, &hk) in taps.iter().enumerate() {
                let row = &buf[(r + n - 1 - k) * channels..(r + n - k) * channels];
                for (a, &v) in acc.iter_mut().zip(row) {
                    *a += hk * v as f64;
                }
            }
            for (d, a) in data[r * channels..(r + 1) * channels].iter_mut().zip(&acc) {
                *d = *a as f32;
            }
        }
        let keep = history.len();
        history.copy_from_slice(&buf[buf.len() - keep..]);
        Ok(())
    }
}

/// The wgpu kernel: one invocation per (row, channel), a dot product over the taps.
pub struct GpuFir {
    ctx: Arc<GpuContext>,
    pipeline: Arc<wgpu::ComputePipeline>,
}

const SHADER: &str = include_str!("fir.wgsl");

#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
struct Params {
    rows: u32,
    channels: u32,
    taps: u32,
    pad: u32,
}

impl GpuFir {
    /// Compiles the kernel on `ctx`.
    pub fn new(ctx: Arc<GpuContext>) -> Result<GpuFir> {
        Ok(GpuFir {
            pipeline: ctx.pipeline("fir", SHADER, "fir")?,
            ctx,
        })
    }
}

impl FirKernels for GpuFir {
    fn filter(&mut self, taps: &[f64], history: &mut [f32], data: &mut [f32], channels: usize) -> Result<()> {
        let rows = data.len() / channels;
        if rows == 0 {
            return Ok(());
        }
        let ctx = &self.ctx;
        let mut buf: Vec<f32> = Vec::with_capacity(history.len() + data.len());
        buf.extend_from_slice(history);
        buf.extend_from_slice(data);
        let h: Vec<f32> = taps.iter().map(|&v| v as f32).collect();
        let params = Params {
            rows: rows as u32,
            channels: channels as u32,
            taps: taps.len() as u32,
            pad: 0,
        };
        let u = ctx.uniform("fir.params", bytemuck::bytes_of(&params));
        let hb = ctx.storage_init("fir.h", bytemuck::cast_slice(&h));
        let xb = ctx.storage_init("fir.x", bytemuck::cast_slice(&buf));
        let yb = ctx.storage_zeroed("fir.y", (data.len() * 4) as u64);
        let bufs = [&*u, &*hb, &*xb, &*yb];
        let pass = GpuPass {
            pipeline: &self.pipeline,
            buffers: &bufs,
            workgroups: neurostream_engine::device::workgroups_1d(rows * channels, 64),
        };
        let out = ctx.run(&[pass], Some((&yb, (data.len() * 4) as u64)))?;
        data.copy_from_slice(bytemuck::cast_slice(&out));
        let keep = history.len();
        history.copy_from_slice(&buf[buf.len() - keep..]);
        Ok(())
    }
}

/// The `fir` operator kind.
pub struct FirKind;

impl OperatorKind for FirKind {
    type Config = FirConfig;

    fn describe(&self) -> &'static str {
        "linear-phase FIR band/low/high-pass (MNE's firwin design and lengths), causal with its delay stated"
    }
    fn build(&self, cfg: FirConfig, ctx: &NodeContext, input: &Arc<Schema>) -> Result<Arc<dyn Operator>> {
        let sample_rate = super::sampled_rate(FirConfig::KIND, input, ctx)?;
        let taps = design(cfg.l_freq, cfg.h_freq, sample_rate).map_err(|m| EngineError::config(ctx.label, m))?;
        tracing::info!(
            "{}: {} taps; output delayed by {} samples ({:.1} ms)",
            ctx.label,
            taps.len(),
            (taps.len() - 1) / 2,
            (taps.len() - 1) as f64 / 2.0 / sample_rate * 1e3
        );
        Ok(Arc::new(Fir {
            schema: input.clone(),
            taps: Arc::new(taps),
        }))
    }
}

struct Fir {
    schema: Arc<Schema>,
    taps: Arc<Vec<f64>>,
}

impl Operator for Fir {
    fn output_schema(&self) -> Arc<Schema> {
        self.schema.clone()
    }
    fn partitioning(&self) -> Partitioning {
        Partitioning::ByStream
    }
    fn checkpointing(&self) -> neurostream_engine::Checkpointing {
        neurostream_engine::Checkpointing::Snapshot
    }
    fn instantiate(&self, device: &ComputeDevice) -> Result<Box<dyn OperatorInstance>> {
        let kernels = Kernels::select(
            "fir",
            device,
            |ctx| Ok(Box::new(GpuFir::new(ctx)?) as Box<dyn FirKernels>),
            Box::new(|| Box::new(CpuFir) as Box<dyn FirKernels>),
        )?;
        Ok(Box::new(FirInstance {
            taps: self.taps.clone(),
            kernels,
            history: HashMap::new(),
        }))
    }
}

struct FirInstance {
    taps: Arc<Vec<f64>>,
    kernels: Kernels<dyn FirKernels>,
    history: HashMap<Arc<str>, Vec<f32>>,
}

impl OperatorInstance for FirInstance {
    fn end_stream(&mut self, stream: &Arc<str>, _out: &mut Vec<Batch>) -> Result<()> {
        self.history.remove(stream);
        Ok(())
    }

    fn snapshot(&self) -> Result<Vec<u8>> {
        neurostream_engine::checkpoint::encode_streams(&self.history)
    }

    fn restore(&mut self, state: &[u8]) -> Result<()> {
        for (stream, h) in neurostream_engine::checkpoint::decode_streams::<Vec<f32>>(state, "fir")? {
            if h.len() % (self.taps.len() - 1).max(1) != 0 {
                return Err(EngineError::Checkpoint(format!(
                    "fir: the saved history of stream {stream} does not fit {} taps",
                    self.taps.len()
                )));
            }
            self.history.insert(stream, h);
        }
        Ok(())
    }

    fn process(&mut self, batch: Batch, out: &mut Vec<Batch>) -> Result<()> {
        let Batch::Dense(mut frame) = batch else {
            return Err(EngineError::Shape(format!(
                "fir takes dense frames; stream {} is not",
                batch.stream()
            )));
        };
        let w = frame.width();
        let n = (self.taps.len() - 1) * w;
        let history = self.history.entry(frame.stream.clone()).or_insert_with(|| vec![0.0; n]);
        // The kernels filter in place: keep what a retry on the CPU must start from.
        let before = self.kernels.may_fall_back().then(|| (history.clone(), frame.data.clone()));
        let taps = &self.taps;
        self.kernels.run(|k| {
            if let Some((h, d)) = &before {
                history.copy_from_slice(h);
                frame.data.copy_from_slice(d);
            }
            k.filter(taps, history, &mut frame.data, w)
        })?;
        out.push(Batch::Dense(frame));
        Ok(())
    }
}
