//! Welch power spectral density, as `scipy.signal.welch(x, fs, window="hann", nperseg,
//! noverlap, detrend="constant", scaling="density", average="mean")`: segments of `nperseg`
//! samples every `nperseg − noverlap`, each detrended (its mean removed) and multiplied by a
//! periodic Hann window; one-sided `|DFT|²` scaled by `1 / (fs · Σ w²)`, doubled except at 0 Hz
//! (and Nyquist for even `nperseg`), averaged over segments.
//!
//! The host prepares the windowed segments; the kernels compute their power spectra: the CPU
//! with a real-input FFT (realfft), the GPU as two GEMMs against cached cosine and sine matrices.

use std::sync::Arc;

use neurostream_engine::PooledBuffer;
use neurostream_engine::{GpuContext, Result};
use realfft::num_complex::Complex;
use realfft::{RealFftPlanner, RealToComplex};

use crate::gpu_gemm::{self, GemmCall};

/// `|DFT|²` of each segment at bins `0..nfreq`.
pub trait PowerKernels: Send {
    /// `segments`: `count × n` (row-major); replaces the contents of `out` with the
    /// `count × nfreq` squared magnitudes (`out` is the caller's, reused across calls: a fresh
    /// buffer of this size per window costs more in page faults than the FFTs).
    fn power(&mut self, segments: &[f32], n: usize, nfreq: usize, out: &mut Vec<f64>) -> Result<()>;
}

/// CPU: a real-input FFT in float64 (realfft: half the work of a complex FFT of the same
/// length, and only the one-sided bins are produced).
pub struct CpuPower {
    planner: RealFftPlanner<f64>,
    plan: Option<Plan>,
}

/// A plan for one segment length with its buffers.
struct Plan {
    n: usize,
    fft: Arc<dyn RealToComplex<f64>>,
    input: Vec<f64>,
    spectrum: Vec<Complex<f64>>,
    scratch: Vec<Complex<f64>>,
}

impl CpuPower {
    /// A kernel with no plan yet.
    pub fn new() -> CpuPower {
        CpuPower {
            planner: RealFftPlanner::new(),
            plan: None,
        }
    }
}

impl Default for CpuPower {
    fn default() -> Self {
        CpuPower::new()
    }
}

impl PowerKernels for CpuPower {
    fn power(&mut self, segments: &[f32], n: usize, nfreq: usize, out: &mut Vec<f64>) -> Result<()> {
        if self.plan.as_ref().is_none_or(|p| p.n != n) {
            let fft = self.planner.plan_fft_forward(n);
            self.plan = Some(Plan {
                n,
                input: fft.make_input_vec(),
                spectrum: fft.make_output_vec(),
                scratch: fft.make_scratch_vec(),
                fft,
            });
        }
        let p = self.plan.as_mut().unwrap();
        out.clear();
        out.reserve(segments.len() / n * nfreq);
        for seg in segments.chunks_exact(n) {
            for (b, &v) in p.input.iter_mut().zip(seg) {
                *b = v as f64;
            }
            p.fft
                .process_with_scratch(&mut p.input, &mut p.spectrum, &mut p.scratch)
                .map_err(|e| neurostream_engine::EngineError::Runtime(format!("welch FFT: {e}")))?;
            out.extend(p.spectrum[..nfreq].iter().map(|c| c.norm_sqr()));
        }
        Ok(())
    }
}

/// GPU: `segments · [cos | sin]` with the shared GEMM, the DFT matrices kept on the device.
pub struct GpuPower {
    ctx: Arc<GpuContext>,
    pipeline: gpu_gemm::Gemm,
    basis: Option<((usize, usize), PooledBuffer)>,
}

impl GpuPower {
    /// Compiles the kernel on `ctx`.
    pub fn new(ctx: Arc<GpuContext>) -> Result<GpuPower> {
        Ok(GpuPower {
            pipeline: gpu_gemm::pipeline(&ctx)?,
            ctx,
            basis: None,
        })
    }
}

impl PowerKernels for GpuPower {
    fn power(&mut self, segments: &[f32], n: usize, nfreq: usize, out: &mut Vec<f64>) -> Result<()> {
        out.clear();
        if segments.len() < n {
            return Ok(());
        }
        let ctx = self.ctx.clone();
        if self.basis.as_ref().is_none_or(|(k, _)| *k != (n, nfreq)) {
            let b = dft_basis(n, nfreq);
            self.basis = Some(((n, nfreq), ctx.storage_init("welch.basis", bytemuck::cast_slice(&b))));
        }
        let basis = &self.basis.as_ref().unwrap().1;
        // Segments per pass: their samples and spectra each within one pass's bytes.
        let per_pass = (ctx.pass_bytes() as usize / (n.max(2 * nfreq) * 4)).max(1);
        let dummy = ctx.storage_zeroed("welch.dummy", 4);
        for chunk in segments.chunks(per_pass * n) {
            let count = chunk.len() / n;
            let x = ctx.storage_init("welch.segments", bytemuck::cast_slice(chunk));
            let y = ctx.storage_zeroed("welch.dft", (count * 2 * nfreq * 4) as u64);
            let call = GemmCall::new(count, 2 * nfreq, n, &x, basis, &y);
            let uniform = call.uniform(&ctx);
            let bufs = call.buffers(&uniform, &dummy);
            let bytes = ctx.run(
                &[gpu_gemm::pass(&self.pipeline, &call, &bufs)],
                Some((&y, (count * 2 * nfreq * 4) as u64)),
            )?;
            let dft: &[f32] = bytemuck::cast_slice(&bytes);
            out.extend(
                dft.chunks_exact(2 * nfreq)
                    .flat_map(|r| (0..nfreq).map(move |k| (r[k] as f64).powi(2) + (r[nfreq + k] as f64).powi(2))),
            );
        }
        Ok(())
    }
}

/// The DFT of real `n`-sample segments at bins `0..nfreq` as one matrix, `n × 2·nfreq`
/// (row-major): cos(2πtk/n) in the first `nfreq` columns, sin in the rest (`segments · basis`
/// gives each segment's real and imaginary parts, up to the sign of the latter).
pub fn dft_basis(n: usize, nfreq: usize) -> Vec<f32> {
    let mut b = vec![0f32; n * 2 * nfreq];
    for t in 0..n {
        for k in 0..nfreq {
            let a = 2.0 * std::f64::consts::PI * ((t * k) % n) as f64 / n as f64;
            b[t * 2 * nfreq + k] = a.cos() as f32;
            b[t * 2 * nfreq + nfreq + k] = a.sin() as f32;
        }
    }
    b
}

/// The sum of `x` in float64, over 8 interleaved partial sums (one long chain of dependent
/// additions would take 4 cycles per value; numpy's pairwise sum splits the work likewise).
fn sum(x: &[f32]) -> f64 {
    let mut acc = [0f64; 8];
    let mut blocks = x.chunks_exact(8);
    for b in &mut blocks {
        for (a, &v) in acc.iter_mut().zip(b) {
            *a += v as f64;
        }
    }
    let tail: f64 = blocks.remainder().iter().map(|&v| v as f64).sum();
    acc.iter().sum::<f64>() + tail
}

/// Welch settings resolved for one window length.
#[derive(Clone, Debug, PartialEq)]
pub struct Welch {
    /// Samples per segment.
    pub nperseg: usize,
    /// Samples shared by consecutive segments.
    pub noverlap: usize,
    /// Sampling rate, Hz.
    pub fs: f64,
    window: Vec<f64>,
    scale: f64,
}

impl Welch {
    /// Settings for `nperseg`-sample segments overlapping by `noverlap` at `fs` Hz.
    pub fn new(nperseg: usize, noverlap: usize, fs: f64) -> Result<Welch, String> {
        if nperseg < 2 || noverlap >= nperseg {
            return Err(format!(
                "`nperseg` ({nperseg}) must be at least 2 and above `noverlap` ({noverlap})"
            ));
        }
        // scipy's get_window("hann", n): the periodic Hann window.
        let window: Vec<f64> = (0..nperseg)
            .map(|t| 0.5 - 0.5 * (2.0 * std::f64::consts::PI * t as f64 / nperseg as f64).cos())
            .collect();
        let scale = 1.0 / (fs * window.iter().map(|w| w * w).sum::<f64>());
        Ok(Welch {
            nperseg,
            noverlap,
            fs,
            window,
            scale,
        })
    }

    /// The periodic Hann window, `nperseg` values.
    pub fn window(&self) -> &[f64] {
        &self.window
    }

    /// One-sided frequency bins (`nperseg / 2 + 1`).
    pub fn nfreq(&self) -> usize {
        self.nperseg / 2 + 1
    }

    /// Frequency of bin `k`, Hz.
    pub fn freq(&self, k: usize) -> f64 {
        k as f64 * self.fs / self.nperseg as f64
    }

    /// Segments in a window of `len` samples.
    pub fn segments(&self, len: usize) -> usize {
        if len < self.nperseg {
            0
        } else {
            (len - self.noverlap) / (self.nperseg - self.noverlap)
        }
    }

    /// Appends the detrended, windowed segments of every channel of `data` (`len × channels`,
    /// row-major), channel after channel: `channels × segments(len) × nperseg` values. The
    /// window is first made channel-major in `by_channel` (scratch, reused across calls), so
    /// each segment is read and written contiguously.
    pub fn push_segments(&self, data: &[f32], channels: usize, by_channel: &mut Vec<f32>, out: &mut Vec<f32>) {
        if channels == 0 {
            return;
        }
        let len = data.len() / channels;
        let (n, step) = (self.nperseg, self.nperseg - self.noverlap);
        let segs = self.segments(len);
        by_channel.resize(len * channels, 0.0);
        neurostream_engine::dsp::transpose_into(&data[..len * channels], len, channels, by_channel);
        out.reserve(channels * segs * n);
        for x in by_channel.chunks_exact(len) {
            for s in 0..segs {
                let seg = &x[s * step..s * step + n];
                let mean = sum(seg) / n as f64;
                out.extend(seg.iter().zip(&self.window).map(|(&v, &w)| ((v as f64 - mean) * w) as f32));
            }
        }
    }

    /// The PSD (`nfreq` values, unit²/Hz) from the power of `segments` segments (`segments × nfreq`).
    pub fn average(&self, power: &[f64], segments: usize) -> Vec<f64> {
        let nfreq = self.nfreq();
        let mut psd = vec![0f64; nfreq];
        for seg in power.chunks_exact(nfreq).take(segments) {
            for (p, v) in psd.iter_mut().zip(seg) {
                *p += v;
            }
        }
        for (k, p) in psd.iter_mut().enumerate() {
            *p *= self.bin_weight(k) / segments as f64;
        }
        psd
    }

    /// What one segment's `|DFT|²` at bin `k` adds to the one-sided PSD (unit²/Hz per unit²):
    /// the density scale `1 / (fs · Σ w²)`, doubled except at 0 Hz and at Nyquist for even
    /// `nperseg`.
    pub fn bin_weight(&self, k: usize) -> f64 {
        let nyquist = self.nperseg.is_multiple_of(2) && k == self.nfreq() - 1;
        match k > 0 && !nyquist {
            true => 2.0 * self.scale,
            false => self.scale,
        }
    }
}
