//! Spatial maps: every row of a frame times a `channels_in × channels_out` matrix. Channel
//! picking, re-referencing (common average, reference channels, bipolar pairs) and spatial
//! filters (CSP) are all such maps, so they share these kernels.

use std::sync::Arc;

use neurostream_engine::PooledBuffer;
use neurostream_engine::{wgpu, Frame, GpuContext, Result, Rows};

use crate::gpu_gemm::{self, GemmCall};

/// `out (rows × cout) = data (rows × cin) · matrix (cin × cout)`.
pub trait SpatialKernels: Send {
    /// Applies `matrix` (row-major `cin × cout`) to every row of `data` (`rows × cin`).
    fn apply(&mut self, data: &[f32], cin: usize, matrix: &[f32], cout: usize) -> Result<Vec<f32>>;

    /// Applies `matrix` to the rows of `frame` (host or device). This maps a host copy; GPU
    /// kernels map on the device and leave the result there when `keep_on_device`.
    fn apply_frame(&mut self, frame: &Frame, matrix: &[f32], cout: usize, keep_on_device: bool) -> Result<Rows> {
        let _ = keep_on_device;
        let data = frame.values()?;
        self.apply(&data, frame.width(), matrix, cout).map(Rows::Host)
    }
}

/// The CPU kernel: float64 accumulation; sparse maps (picks, bipolar pairs) touch only their
/// non-zero weights, dense ones (average reference, CSP) run as row-times-matrix `axpy`s that
/// vectorize over the output channels.
pub struct CpuSpatial;

impl SpatialKernels for CpuSpatial {
    fn apply(&mut self, data: &[f32], cin: usize, matrix: &[f32], cout: usize) -> Result<Vec<f32>> {
        let rows = data.len() / cin.max(1);
        let mut out = vec![0f32; rows * cout];
        let mut acc = vec![0f64; cout];
        let nonzero = matrix.iter().filter(|v| **v != 0.0).count();
        if nonzero * 4 < matrix.len() {
            // Non-zero entries per input channel: (output, weight).
            let nz: Vec<Vec<(usize, f64)>> = (0..cin)
                .map(|c| {
                    (0..cout)
                        .filter(|&o| matrix[c * cout + o] != 0.0)
                        .map(|o| (o, matrix[c * cout + o] as f64))
                        .collect()
                })
                .collect();
            for (x, y) in data.chunks_exact(cin).zip(out.chunks_exact_mut(cout)) {
                acc.iter_mut().for_each(|v| *v = 0.0);
                for (c, list) in nz.iter().enumerate() {
                    let v = x[c] as f64;
                    for &(o, w) in list {
                        acc[o] += v * w;
                    }
                }
                for (d, a) in y.iter_mut().zip(&acc) {
                    *d = *a as f32;
                }
            }
        } else {
            let m: Vec<f64> = matrix.iter().map(|&v| v as f64).collect();
            for (x, y) in data.chunks_exact(cin).zip(out.chunks_exact_mut(cout)) {
                acc.iter_mut().for_each(|v| *v = 0.0);
                for (c, &v) in x.iter().enumerate() {
                    let v = v as f64;
                    for (a, w) in acc.iter_mut().zip(&m[c * cout..(c + 1) * cout]) {
                        *a += v * w;
                    }
                }
                for (d, a) in y.iter_mut().zip(&acc) {
                    *d = *a as f32;
                }
            }
        }
        Ok(out)
    }
}

/// The wgpu kernel: the shared GEMM, with the matrix kept on the GPU while it stays the same.
pub struct GpuSpatial {
    ctx: Arc<GpuContext>,
    pipeline: gpu_gemm::Gemm,
    matrix: Option<(Vec<f32>, PooledBuffer)>,
}

impl GpuSpatial {
    /// Compiles the kernel on `ctx`.
    pub fn new(ctx: Arc<GpuContext>) -> Result<GpuSpatial> {
        Ok(GpuSpatial {
            pipeline: gpu_gemm::pipeline(&ctx)?,
            ctx,
            matrix: None,
        })
    }
}

impl GpuSpatial {
    /// `y = x · matrix` for `rows` rows of `cin` values in `x`, into a device buffer; with `read`,
    /// `y` also comes back in the same submission.
    fn map(
        &mut self,
        x: &wgpu::Buffer,
        rows: usize,
        cin: usize,
        matrix: &[f32],
        cout: usize,
        read: bool,
    ) -> Result<(PooledBuffer, Option<Vec<u8>>)> {
        let ctx = self.ctx.clone();
        if self.matrix.as_ref().is_none_or(|(m, _)| m.as_slice() != matrix) {
            let buf = ctx.storage_init("spatial.matrix", bytemuck::cast_slice(matrix));
            self.matrix = Some((matrix.to_vec(), buf));
        }
        let m_buf = &self.matrix.as_ref().unwrap().1;
        let y = ctx.storage_zeroed("spatial.y", (rows * cout * 4) as u64);
        let dummy = ctx.storage_zeroed("spatial.dummy", 4);
        let call = GemmCall::new(rows, cout, cin, x, m_buf, &y);
        let uniform = call.uniform(&ctx);
        let bufs = call.buffers(&uniform, &dummy);
        let pass = gpu_gemm::pass(&self.pipeline, &call, &bufs);
        let bytes = ctx.run(&[pass], read.then_some((&*y, (rows * cout * 4) as u64)))?;
        Ok((y, read.then_some(bytes)))
    }
}

impl SpatialKernels for GpuSpatial {
    fn apply(&mut self, data: &[f32], cin: usize, matrix: &[f32], cout: usize) -> Result<Vec<f32>> {
        let rows = data.len() / cin.max(1);
        if rows == 0 {
            return Ok(Vec::new());
        }
        let x = self.ctx.storage_init("spatial.x", bytemuck::cast_slice(data));
        let (_, out) = self.map(&x, rows, cin, matrix, cout, true)?;
        Ok(bytemuck::cast_slice(&out.unwrap_or_default()).to_vec())
    }

    fn apply_frame(&mut self, frame: &Frame, matrix: &[f32], cout: usize, keep_on_device: bool) -> Result<Rows> {
        let rows = frame.rows();
        if rows == 0 {
            return Ok(Rows::Host(Vec::new()));
        }
        let x = self.ctx.input_rows("spatial.x", frame)?;
        let (y, bytes) = self.map(&x, rows, frame.width(), matrix, cout, !keep_on_device)?;
        Ok(Rows::from_kernel(&self.ctx, y, rows * cout, bytes))
    }
}
