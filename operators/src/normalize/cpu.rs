//! CPU kernels of `normalize`. Statistics accumulate in float64.

use neurostream_engine::{Frame, Result, Rows};

use super::{NormalizeKernels, Welford};

/// The CPU backend.
pub struct CpuKernels;

impl NormalizeKernels for CpuKernels {
    fn affine(&mut self, frame: &Frame, mean: &[f64], inv_std: &[f64], _keep_on_device: bool) -> Result<Rows> {
        let (data, width) = (frame.values()?, frame.width());
        let mean32: Vec<f32> = mean.iter().map(|&m| m as f32).collect();
        let inv32: Vec<f32> = inv_std.iter().map(|&s| s as f32).collect();
        let mut out = vec![0.0f32; data.len()];
        for (row_out, row) in out.chunks_exact_mut(width).zip(data.chunks_exact(width)) {
            for c in 0..width {
                row_out[c] = (row[c] - mean32[c]) * inv32[c];
            }
        }
        Ok(Rows::Host(out))
    }

    fn running(&mut self, data: &[f32], width: usize, state: &mut Welford, epsilon: f64) -> Result<Vec<f32>> {
        let mut out = vec![0.0f32; data.len()];
        let (mean, m2) = (&mut state.mean[..width], &mut state.m2[..width]);
        for (row_out, row) in out.chunks_exact_mut(width).zip(data.chunks_exact(width)) {
            state.count += 1;
            let inv_n = 1.0 / state.count as f64;
            // Statistics in f64; the scaling of the output in f32, its own precision, which
            // lets the square roots and divisions run 8 lanes wide.
            for ((o, &x), (m, s)) in row_out.iter_mut().zip(row).zip(mean.iter_mut().zip(m2.iter_mut())) {
                let x = x as f64;
                let delta = x - *m;
                *m += delta * inv_n;
                let centred = x - *m;
                *s += delta * centred;
                let var = (*s * inv_n + epsilon) as f32;
                *o = centred as f32 / var.sqrt();
            }
        }
        Ok(out)
    }

    fn l2(&mut self, frame: &Frame, target: f64, _keep_on_device: bool) -> Result<Rows> {
        let (data, width) = (frame.values()?, frame.width());
        let mut out = vec![0.0f32; data.len()];
        for (row_out, row) in out.chunks_exact_mut(width).zip(data.chunks_exact(width)) {
            let sumsq: f64 = row.iter().map(|&x| (x as f64) * (x as f64)).sum();
            let scale = if sumsq > 0.0 { (target / sumsq.sqrt()) as f32 } else { 0.0 };
            for (o, &x) in row_out.iter_mut().zip(row) {
                *o = x * scale;
            }
        }
        Ok(Rows::Host(out))
    }
}
