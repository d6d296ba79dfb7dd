//! wgpu kernels of `normalize` (see `shader.wgsl`).

use std::sync::Arc;

use neurostream_engine::device::{workgroups_1d, workgroups_per_item};
use neurostream_engine::{EngineError, Frame, GpuContext, GpuPass, PooledBuffer, Result, Rows};

use super::{NormalizeKernels, Welford};

const SHADER: &str = include_str!("shader.wgsl");
const WG: u32 = 256;

#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
struct Params {
    rows: u32,
    width: u32,
    epsilon: f32,
    target: f32,
}

/// The wgpu backend.
pub struct GpuKernels {
    ctx: Arc<GpuContext>,
    affine: Arc<wgpu::ComputePipeline>,
    running: Arc<wgpu::ComputePipeline>,
    l2: Arc<wgpu::ComputePipeline>,
}

use neurostream_engine::wgpu;

impl GpuKernels {
    /// Compiles (or fetches from the context's cache) the three pipelines.
    pub fn new(ctx: Arc<GpuContext>) -> Result<GpuKernels> {
        Ok(GpuKernels {
            affine: ctx.pipeline("normalize", SHADER, "affine")?,
            running: ctx.pipeline("normalize", SHADER, "running")?,
            l2: ctx.pipeline("normalize", SHADER, "l2")?,
            ctx,
        })
    }

    /// Runs `pipeline` over `input` (`values` f32 values) into a fresh output of `out_len`
    /// values; with `read`, the output also comes back in the same submission.
    #[allow(clippy::too_many_arguments)]
    fn dispatch(
        &self,
        pipeline: &wgpu::ComputePipeline,
        params: Params,
        input: &wgpu::Buffer,
        values: usize,
        aux: Option<&[f32]>,
        out_len: usize,
        groups: [u32; 3],
        read: bool,
    ) -> Result<(PooledBuffer, Option<Vec<u8>>)> {
        let ctx = &self.ctx;
        let limit = ctx.device.limits().max_storage_buffer_binding_size as usize;
        if values * 4 > limit || out_len * 4 > limit {
            return Err(EngineError::Device(format!(
                "frame of {} bytes exceeds the GPU's storage binding limit of {limit} bytes; use smaller chunks",
                values * 4
            )));
        }
        let uniform = ctx.uniform("normalize.params", bytemuck::bytes_of(&params));
        let output = ctx.storage_zeroed("normalize.y", (out_len * 4) as u64);
        // Auto-derived layouts drop unused bindings, so `aux` is bound only for kernels that read it.
        let aux = aux.map(|a| ctx.storage_init("normalize.aux", bytemuck::cast_slice(a)));
        let mut buffers = vec![&*uniform, input, &*output];
        buffers.extend(aux.as_deref());
        let bytes = ctx.run(
            &[GpuPass {
                pipeline,
                buffers: &buffers,
                workgroups: groups,
            }],
            read.then_some((&*output, (out_len * 4) as u64)),
        )?;
        Ok((output, read.then_some(bytes)))
    }

    /// Runs a kernel that maps `frame`'s rows to rows of the same shape, left on the device
    /// when `keep_on_device`.
    fn map_rows(
        &self,
        pipeline: &wgpu::ComputePipeline,
        params: Params,
        frame: &Frame,
        aux: Option<&[f32]>,
        groups: [u32; 3],
        keep_on_device: bool,
    ) -> Result<Rows> {
        let values = frame.rows() * frame.width();
        let input = self.ctx.input_rows("normalize.x", frame)?;
        let (output, bytes) = self.dispatch(pipeline, params, &input, values, aux, values, groups, !keep_on_device)?;
        Ok(Rows::from_kernel(&self.ctx, output, values, bytes))
    }
}

impl NormalizeKernels for GpuKernels {
    fn affine(&mut self, frame: &Frame, mean: &[f64], inv_std: &[f64], keep_on_device: bool) -> Result<Rows> {
        if frame.rows() == 0 {
            return Ok(Rows::Host(Vec::new()));
        }
        let aux: Vec<f32> = mean.iter().chain(inv_std).map(|&v| v as f32).collect();
        let values = frame.rows() * frame.width();
        let params = Params {
            rows: frame.rows() as u32,
            width: frame.width() as u32,
            epsilon: 0.0,
            target: 0.0,
        };
        let groups = workgroups_1d(values, WG);
        self.map_rows(&self.affine, params, frame, Some(&aux), groups, keep_on_device)
    }

    fn running(&mut self, data: &[f32], width: usize, state: &mut Welford, epsilon: f64) -> Result<Vec<f32>> {
        if data.is_empty() {
            return Ok(Vec::new());
        }
        let rows = data.len() / width;
        let mut aux = Vec::with_capacity(1 + 2 * width);
        aux.push(state.count as f32);
        // Rows are shifted by the carried mean, or by the first row when nothing is carried yet,
        // so the float32 accumulation sees small numbers.
        if state.count == 0 {
            aux.extend_from_slice(&data[..width]);
        } else {
            aux.extend(state.mean.iter().map(|&m| m as f32));
        }
        aux.extend(state.m2.iter().map(|&m| m as f32));
        let params = Params {
            rows: rows as u32,
            width: width as u32,
            epsilon: epsilon as f32,
            target: 0.0,
        };
        let input = self.ctx.storage_init("normalize.x", bytemuck::cast_slice(data));
        let out_len = data.len() + 2 * width;
        let (_, bytes) = self.dispatch(
            &self.running,
            params,
            &input,
            data.len(),
            Some(&aux),
            out_len,
            workgroups_1d(width, WG),
            true,
        )?;
        let mut out: Vec<f32> = bytemuck::cast_slice(&bytes.unwrap_or_default()).to_vec();
        // Merge the frame's statistics into the float64 state. The kernel's mean is relative to
        // the float32 carried mean, so shift it back by exactly that value.
        let local_mean: Vec<f64> = (0..width).map(|c| out[data.len() + c] as f64 + aux[1 + c] as f64).collect();
        let local_m2: Vec<f64> = (0..width).map(|c| out[data.len() + width + c] as f64).collect();
        state.merge(rows as u64, &local_mean, &local_m2);
        out.truncate(data.len());
        Ok(out)
    }

    fn l2(&mut self, frame: &Frame, target: f64, keep_on_device: bool) -> Result<Rows> {
        if frame.rows() == 0 {
            return Ok(Rows::Host(Vec::new()));
        }
        let params = Params {
            rows: frame.rows() as u32,
            width: frame.width() as u32,
            epsilon: 0.0,
            target: target as f32,
        };
        let groups = workgroups_per_item(frame.rows());
        self.map_rows(&self.l2, params, frame, None, groups, keep_on_device)
    }
}
