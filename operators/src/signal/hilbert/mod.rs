//! `hilbert`: the envelope (instantaneous amplitude) or instantaneous phase of signal channels,
//! from the analytic signal of `scipy.signal.hilbert` (FFT, zero negative frequencies, double
//! the positive ones) computed over blocks of `block` samples, or over the whole stream
//! (`block = 0`, held until it ends). Each block equals `scipy.signal.hilbert(x[block], axis=0)`,
//! with its usual edge effects at block ends (as MNE's `apply_hilbert` on epochs).
//!
//! The CPU kernel ([`CpuHilbert`]) runs the FFT in float64; the wgpu kernel
//! ([`gpu::GpuHilbert`]) is the same linear map written as a circulant product.

pub mod gpu;

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;

use neurostream_engine::kernels::Kernels;
use neurostream_engine::layout::check_values;
use neurostream_engine::{
    Batch, ComputeDevice, EngineError, Frame, NodeConfig, NodeContext, Operator, OperatorInstance, OperatorKind, Partitioning,
    Result, Schema,
};
use rustfft::num_complex::Complex;
use rustfft::FftPlanner;
use serde::{Deserialize, Serialize};

/// What `hilbert` emits per channel.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum HilbertOutput {
    /// `|x + i·H(x)|`, in the input's unit.
    Envelope,
    /// `atan2(H(x), x)`, radians in `(−π, π]`.
    Phase,
}

/// Configuration of a `hilbert` operator.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct HilbertConfig {
    /// `envelope` (default: instantaneous amplitude, in the input's unit) or `phase` (radians).
    #[serde(default = "default_output")]
    pub output: HilbertOutput,
    /// Samples per block, each transformed on its own; 0 (default): the whole stream, held until
    /// it ends (offline runs). The wgpu kernel takes blocks of up to 65536 samples.
    #[serde(default)]
    #[schemars(extend("x-unit" = "samples"))]
    pub block: usize,
}

fn default_output() -> HilbertOutput {
    HilbertOutput::Envelope
}

impl NodeConfig for HilbertConfig {
    const KIND: &'static str = "hilbert";
}

/// The FFT method's weights `h`: 1 at DC (and Nyquist for even `n`), 2 for positive
/// frequencies, 0 for negative ones.
fn analytic_weights(n: usize) -> Vec<f64> {
    let mut h = vec![0.0; n];
    if n == 0 {
        return h;
    }
    h[0] = 1.0;
    if n.is_multiple_of(2) {
        h[n / 2] = 1.0;
        h[1..n / 2].iter_mut().for_each(|v| *v = 2.0);
    } else {
        h[1..n.div_ceil(2)].iter_mut().for_each(|v| *v = 2.0);
    }
    h
}

/// `c = Im(ifft(h))` for blocks of `n` samples: the imaginary part of the analytic signal is
/// the circular convolution `c ⊛ x` (its real part is `x`).
pub fn circulant_kernel(n: usize) -> Vec<f64> {
    let mut g: Vec<Complex<f64>> = analytic_weights(n).into_iter().map(|v| Complex::new(v, 0.0)).collect();
    FftPlanner::new().plan_fft_inverse(n).process(&mut g);
    g.iter().map(|z| z.im / n as f64).collect()
}

/// Envelope or phase of one block of a signal.
pub trait HilbertKernels: Send {
    /// Replaces `data` (`rows × channels`, one block) with its envelope or phase per channel.
    fn transform(&mut self, data: &mut [f32], channels: usize, output: HilbertOutput) -> Result<()>;
}

/// The CPU kernel, float64 (rustfft). The Hilbert transform is real for real input, so two
/// channels share one complex FFT pair: with `z = x₁ + i·x₂`, `ifft(−i·sgn(k)·fft(z)) = H(x₁) +
/// i·H(x₂)`, and each analytic signal is `xⱼ + i·H(xⱼ)` (scipy's `ifft(h·fft(x))`, since `h = 1 +
/// sgn`). Plans, the multiplier and the scratch are kept for the last block length.
#[derive(Default)]
pub struct CpuHilbert {
    planner: Option<FftPlanner<f64>>,
    plans: Option<BlockPlans>,
}

/// What a block length needs, reused while blocks keep their length.
struct BlockPlans {
    rows: usize,
    forward: Arc<dyn rustfft::Fft<f64>>,
    inverse: Arc<dyn rustfft::Fft<f64>>,
    /// `−i·sgn(k) / rows`: 0 at DC and (even `rows`) Nyquist.
    multiplier: Vec<Complex<f64>>,
    scratch: Vec<Complex<f64>>,
    z: Vec<Complex<f64>>,
}

impl CpuHilbert {
    fn plans(&mut self, rows: usize) -> &mut BlockPlans {
        if self.plans.as_ref().is_none_or(|p| p.rows != rows) {
            let planner = self.planner.get_or_insert_with(FftPlanner::new);
            let (forward, inverse) = (planner.plan_fft_forward(rows), planner.plan_fft_inverse(rows));
            let scratch = forward.get_inplace_scratch_len().max(inverse.get_inplace_scratch_len());
            let multiplier = analytic_weights(rows)
                .iter()
                .map(|&h| Complex::new(0.0, -(h - 1.0) / rows as f64))
                .collect();
            self.plans = Some(BlockPlans {
                rows,
                forward,
                inverse,
                multiplier,
                scratch: vec![Complex::new(0.0, 0.0); scratch],
                z: vec![Complex::new(0.0, 0.0); rows],
            });
        }
        self.plans.as_mut().expect("plans were just made")
    }
}

impl HilbertKernels for CpuHilbert {
    fn transform(&mut self, data: &mut [f32], channels: usize, output: HilbertOutput) -> Result<()> {
        let rows = data.len() / channels.max(1);
        if rows == 0 {
            return Ok(());
        }
        let p = self.plans(rows);
        let write = |x: f32, hx: f64| -> f32 {
            let x = x as f64;
            (match output {
                HilbertOutput::Envelope => (x * x + hx * hx).sqrt(),
                HilbertOutput::Phase => hx.atan2(x),
            }) as f32
        };
        for first in (0..channels).step_by(2) {
            let second = (first + 1 < channels).then_some(first + 1);
            for (r, v) in p.z.iter_mut().enumerate() {
                let row = &data[r * channels..];
                *v = Complex::new(row[first] as f64, second.map_or(0.0, |c| row[c] as f64));
            }
            p.forward.process_with_scratch(&mut p.z, &mut p.scratch);
            p.z.iter_mut().zip(&p.multiplier).for_each(|(v, m)| *v *= m);
            p.inverse.process_with_scratch(&mut p.z, &mut p.scratch);
            for (r, hz) in p.z.iter().enumerate() {
                let row = &mut data[r * channels..];
                row[first] = write(row[first], hz.re);
                if let Some(c) = second {
                    row[c] = write(row[c], hz.im);
                }
            }
        }
        Ok(())
    }
}

/// The `hilbert` operator kind.
pub struct HilbertKind;

impl OperatorKind for HilbertKind {
    type Config = HilbertConfig;

    fn describe(&self) -> &'static str {
        "envelope (instantaneous amplitude) or instantaneous phase per channel from the analytic signal (scipy.signal.hilbert), per block or over the whole stream"
    }
    fn build(&self, cfg: HilbertConfig, ctx: &NodeContext, input: &Arc<Schema>) -> Result<Arc<dyn Operator>> {
        super::sampled_rate(HilbertConfig::KIND, input, ctx)?;
        check_values("`block` × channels", cfg.block, input.width()).map_err(|m| EngineError::config(ctx.label, m))?;
        let mut schema = (**input).clone();
        if cfg.output == HilbertOutput::Phase {
            schema.channels.iter_mut().for_each(|c| c.unit = "rad".into());
        }
        Ok(Arc::new(Hilbert {
            cfg,
            schema: Arc::new(schema),
        }))
    }
}

struct Hilbert {
    cfg: HilbertConfig,
    schema: Arc<Schema>,
}

impl Operator for Hilbert {
    fn output_schema(&self) -> Arc<Schema> {
        self.schema.clone()
    }
    fn partitioning(&self) -> Partitioning {
        Partitioning::ByStream
    }
    fn checkpointing(&self) -> neurostream_engine::Checkpointing {
        neurostream_engine::Checkpointing::Snapshot
    }
    fn holds_back(&self) -> bool {
        true
    }
    fn instantiate(&self, device: &ComputeDevice) -> Result<Box<dyn OperatorInstance>> {
        let kernels = Kernels::select(
            "hilbert",
            device,
            |ctx| Ok(Box::new(gpu::GpuHilbert::new(ctx)?) as Box<dyn HilbertKernels>),
            Box::new(|| Box::new(CpuHilbert::default()) as Box<dyn HilbertKernels>),
        )?;
        Ok(Box::new(HilbertInstance {
            cfg: self.cfg.clone(),
            schema: self.schema.clone(),
            kernels,
            pending: HashMap::new(),
        }))
    }
}

/// Frames of one stream waiting for their block to fill.
#[derive(Default, Serialize, Deserialize)]
struct Pending {
    frames: VecDeque<Frame>,
    rows: usize,
}

struct HilbertInstance {
    cfg: HilbertConfig,
    schema: Arc<Schema>,
    kernels: Kernels<dyn HilbertKernels>,
    pending: HashMap<Arc<str>, Pending>,
}

impl HilbertInstance {
    /// Transforms the first `rows` pending rows of `stream` as one block and emits them.
    fn emit_block(&mut self, stream: &Arc<str>, rows: usize, out: &mut Vec<Batch>) -> Result<()> {
        let pending = self.pending.get_mut(stream).expect("pending stream");
        let mut frames = Vec::new();
        let mut taken = 0;
        while taken < rows {
            let mut f = pending.frames.pop_front().expect("enough pending rows");
            if taken + f.rows() > rows {
                let rest = f.split_off(rows - taken);
                pending.frames.push_front(rest);
            }
            taken += f.rows();
            frames.push(f);
        }
        pending.rows -= rows;
        let w = self.schema.width();
        let original: Vec<f32> = frames.iter().flat_map(|f| f.data.iter().copied()).collect();
        let mut block = original.clone();
        let output = self.cfg.output;
        self.kernels
            .run(|k| {
                block.copy_from_slice(&original);
                k.transform(&mut block, w, output)
            })
            .map_err(|e| match e {
                EngineError::Device(m) => EngineError::Device(format!("stream {stream}: {m}")),
                e => e,
            })?;
        let mut at = 0;
        for mut f in frames {
            let n = f.data.len();
            f.data.copy_from_slice(&block[at..at + n]);
            f.schema = self.schema.clone();
            at += n;
            out.push(Batch::Dense(f));
        }
        Ok(())
    }
}

impl OperatorInstance for HilbertInstance {
    fn process(&mut self, batch: Batch, out: &mut Vec<Batch>) -> Result<()> {
        let Batch::Dense(frame) = batch else {
            return Err(EngineError::Shape(format!(
                "hilbert takes dense frames; stream {} is not",
                batch.stream()
            )));
        };
        let stream = frame.stream.clone();
        let pending = self.pending.entry(stream.clone()).or_default();
        pending.rows += frame.rows();
        pending.frames.push_back(frame);
        let block = self.cfg.block;
        while block > 0 && self.pending[&stream].rows >= block {
            self.emit_block(&stream, block, out)?;
        }
        Ok(())
    }

    fn snapshot(&self) -> Result<Vec<u8>> {
        neurostream_engine::checkpoint::encode_streams(&self.pending)
    }

    fn restore(&mut self, state: &[u8]) -> Result<()> {
        for (stream, p) in neurostream_engine::checkpoint::decode_streams::<Pending>(state, "hilbert")? {
            if p.frames.iter().map(Frame::rows).sum::<usize>() != p.rows {
                return Err(EngineError::Checkpoint(format!(
                    "hilbert: the saved rows of stream {stream} do not add up"
                )));
            }
            self.pending.insert(stream, p);
        }
        Ok(())
    }

    fn finish(&mut self, out: &mut Vec<Batch>) -> Result<()> {
        for stream in neurostream_engine::stream_names(&self.pending) {
            self.end_stream(&stream, out)?;
        }
        Ok(())
    }

    /// Transforms the stream's last, shorter block and drops it.
    fn end_stream(&mut self, stream: &Arc<str>, out: &mut Vec<Batch>) -> Result<()> {
        let rows = self.pending.get(stream).map_or(0, |p| p.rows);
        if rows > 0 {
            self.emit_block(stream, rows, out)?;
        }
        self.pending.remove(stream);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The circulant form equals the FFT form on a block (float64, 1e-9).
    #[test]
    fn circulant_kernel_equals_the_fft_method() {
        for n in [1usize, 2, 7, 64, 101] {
            let x: Vec<f64> = (0..n)
                .map(|i| ((i * 37 % 11) as f64 - 5.0) * 0.3 + (i as f64 * 0.2).sin())
                .collect();
            let c = circulant_kernel(n);
            let mut z: Vec<Complex<f64>> = x.iter().map(|&v| Complex::new(v, 0.0)).collect();
            FftPlanner::new().plan_fft_forward(n).process(&mut z);
            z.iter_mut().zip(analytic_weights(n)).for_each(|(v, w)| *v *= w / n as f64);
            FftPlanner::new().plan_fft_inverse(n).process(&mut z);
            for i in 0..n {
                let imag: f64 = (0..n).map(|m| c[(i + n - m) % n] * x[m]).sum();
                assert!((imag - z[i].im).abs() < 1e-9, "n {n} row {i}: {imag} vs {}", z[i].im);
                assert!((x[i] - z[i].re).abs() < 1e-9, "real part is x");
            }
        }
    }

    /// A cosine's envelope is its amplitude and its phase advances linearly, away from the ends.
    #[test]
    fn envelope_of_a_tone_is_its_amplitude() {
        let n = 1000;
        let tone: Vec<f32> = (0..n)
            .map(|i| 3.0 * (2.0 * std::f32::consts::PI * 0.05 * i as f32).cos())
            .collect();
        let mut env = tone.clone();
        CpuHilbert::default().transform(&mut env, 1, HilbertOutput::Envelope).unwrap();
        assert!(
            env.iter().all(|v| (v - 3.0).abs() < 1e-3),
            "an integer number of periods has no edge effects"
        );
    }
}
