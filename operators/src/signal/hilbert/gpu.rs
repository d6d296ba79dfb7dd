//! The wgpu kernel of `hilbert` (`hilbert.wgsl`): the block's imaginary part as a circulant
//! product with `c = Im(ifft(h))` (float64 on the host, cached per block length), the envelope
//! or phase in the same pass. O(N²) per channel, so blocks are limited to
//! [`MAX_GPU_BLOCK`] samples; the CPU kernel (FFT, O(N log N)) has no limit.

use std::collections::HashMap;
use std::sync::Arc;

use neurostream_engine::{wgpu, EngineError, GpuContext, GpuPass, Result};

use super::{circulant_kernel, HilbertKernels, HilbertOutput};

/// Longest block the wgpu kernel takes, in samples.
pub const MAX_GPU_BLOCK: usize = 65_536;

const SHADER: &str = include_str!("hilbert.wgsl");

#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
struct Params {
    rows: u32,
    channels: u32,
    mode: u32,
    pad: u32,
}

/// The wgpu kernel.
pub struct GpuHilbert {
    ctx: Arc<GpuContext>,
    pipeline: Arc<wgpu::ComputePipeline>,
    /// `c` per block length, as uploaded (float32).
    kernels: HashMap<usize, Vec<f32>>,
}

impl GpuHilbert {
    /// Compiles the kernel on `ctx`.
    pub fn new(ctx: Arc<GpuContext>) -> Result<GpuHilbert> {
        Ok(GpuHilbert {
            pipeline: ctx.pipeline("hilbert", SHADER, "hilbert")?,
            ctx,
            kernels: HashMap::new(),
        })
    }
}

impl HilbertKernels for GpuHilbert {
    fn transform(&mut self, data: &mut [f32], channels: usize, output: HilbertOutput) -> Result<()> {
        let rows = data.len() / channels.max(1);
        if rows == 0 {
            return Ok(());
        }
        if rows > MAX_GPU_BLOCK {
            return Err(EngineError::Device(format!(
                "hilbert on wgpu: a block of {rows} samples is longer than {MAX_GPU_BLOCK} (the kernel is a direct O(N²) product); set `block` or run it on the CPU"
            )));
        }
        let c = self
            .kernels
            .entry(rows)
            .or_insert_with(|| circulant_kernel(rows).iter().map(|&v| v as f32).collect());
        let ctx = &self.ctx;
        let params = Params {
            rows: rows as u32,
            channels: channels as u32,
            mode: match output {
                HilbertOutput::Envelope => 0,
                HilbertOutput::Phase => 1,
            },
            pad: 0,
        };
        let bytes = (data.len() * 4) as u64;
        let u = ctx.uniform("hilbert.params", bytemuck::bytes_of(&params));
        let cb = ctx.storage_init("hilbert.kernel", bytemuck::cast_slice(c));
        let xb = ctx.storage_init("hilbert.x", bytemuck::cast_slice(data));
        let yb = ctx.storage_zeroed("hilbert.y", bytes);
        let bufs = [&*u, &*cb, &*xb, &*yb];
        let pass = GpuPass {
            pipeline: &self.pipeline,
            buffers: &bufs,
            workgroups: neurostream_engine::device::workgroups_1d(data.len(), 64),
        };
        let out = ctx.run(&[pass], Some((&yb, bytes)))?;
        data.copy_from_slice(bytemuck::cast_slice(&out));
        Ok(())
    }
}
