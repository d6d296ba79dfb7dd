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
        for (row_out, row) in out.chunks_exact_mut(width).zip(data.chunks_exact(width)) {
            state.count += 1;
            let n = state.count as f64;
            for c in 0..width {
                let x = row[c] as f64;
                let delta = x - state.mean[c];
                state.mean[c] += delta / n;
                state.m2[c] += delta * (x - state.mean[c]);
                let var = state.m2[c] / n;
                row_out[c] = ((x - state.mean[c]) / (var + epsilon).sqrt()) as f32;
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
