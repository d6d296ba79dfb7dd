//! Polyphase rational resampling, equal to `scipy.signal.resample_poly(x, up, down,
//! window=("kaiser", 5.0))`: the filter design and the CPU kernel, shared by the `resample`
//! operator (which adds a wgpu kernel) and the EDF source (channels of lower rates).

use crate::error::Result;

fn bessel_i0(x: f64) -> f64 {
    // Power series; converges fast for the arguments a Kaiser window uses.
    let (mut sum, mut term, mut k) = (1.0, 1.0, 1.0);
    let q = x * x / 4.0;
    while term > 1e-17 * sum {
        term *= q / (k * k);
        sum += term;
        k += 1.0;
    }
    sum
}

/// The largest reduced `up` or `down` factor accepted: the filter has `20 · max(up, down) + 1`
/// taps, so 65536 already means 1.3 M taps per output phase set.
pub const MAX_FACTOR: usize = 1 << 16;

/// The padded filter of `resample_poly` and its output alignment: `(h, n_pre_remove)`, for
/// reduced factors `up` and `down` (both at least 1); an error when either exceeds
/// [`MAX_FACTOR`].
pub fn design(up: usize, down: usize) -> std::result::Result<(Vec<f64>, usize), String> {
    let max_rate = up.max(down);
    if up == 0 || down == 0 || max_rate > MAX_FACTOR {
        return Err(format!(
            "resampling by {up}/{down} (reduced) needs factors between 1 and {MAX_FACTOR}; pick a nearby rate with a simpler ratio"
        ));
    }
    let half_len = 10 * max_rate;
    let n = 2 * half_len + 1;
    let fc = 1.0 / max_rate as f64;
    let alpha = 0.5 * (n as f64 - 1.0);
    let beta = 5.0;
    let mut h: Vec<f64> = (0..n)
        .map(|i| {
            let m = i as f64 - alpha;
            let r = 2.0 * i as f64 / (n as f64 - 1.0) - 1.0;
            let w = bessel_i0(beta * (1.0 - r * r).max(0.0).sqrt()) / bessel_i0(beta);
            fc * super::sinc(fc * m) * w
        })
        .collect();
    let s: f64 = h.iter().sum();
    h.iter_mut().for_each(|v| *v = *v / s * up as f64);
    let n_pre_pad = down - half_len % down;
    let n_pre_remove = (half_len + n_pre_pad) / down;
    let mut padded = vec![0.0; n_pre_pad];
    padded.extend(h);
    Ok((padded, n_pre_remove))
}

/// The resampling filter and factors.
#[derive(Clone, Debug, PartialEq)]
pub struct Polyphase {
    /// The padded filter taps.
    pub h: Vec<f64>,
    /// Upsampling factor (reduced).
    pub up: usize,
    /// Downsampling factor (reduced).
    pub down: usize,
}

/// Computes outputs of the polyphase filter.
pub trait ResampleKernels: Send {
    /// For each output position `m` in `ms`, `Σ_i h[m·down − i·up] · x[i]` over the inputs
    /// `x` (`rows × channels`, row 0 = input index `base`; indices outside are zeros).
    fn outputs(&mut self, f: &Polyphase, x: &[f32], base: i64, ms: &[i64], channels: usize) -> Result<Vec<f32>>;
}

/// CPU: float64 sums.
pub struct CpuResample;

impl ResampleKernels for CpuResample {
    fn outputs(&mut self, f: &Polyphase, x: &[f32], base: i64, ms: &[i64], channels: usize) -> Result<Vec<f32>> {
        let h = &f.h;
        let rows = (x.len() / channels) as i64;
        let (up, down, len) = (f.up as i64, f.down as i64, h.len() as i64);
        let mut out = vec![0f32; ms.len() * channels];
        let mut acc = vec![0f64; channels];
        for (o, &m) in ms.iter().enumerate() {
            acc.iter_mut().for_each(|a| *a = 0.0);
            let t = m * down;
            let hi = t.div_euclid(up);
            let lo = (t - len + 1 + up - 1).div_euclid(up).max(0);
            for i in lo..=hi {
                let r = i - base;
                if r < 0 || r >= rows {
                    continue;
                }
                let w = h[(t - i * up) as usize];
                for (a, &v) in acc.iter_mut().zip(&x[r as usize * channels..(r as usize + 1) * channels]) {
                    *a += w * v as f64;
                }
            }
            for (d, a) in out[o * channels..(o + 1) * channels].iter_mut().zip(&acc) {
                *d = *a as f32;
            }
        }
        Ok(out)
    }
}
