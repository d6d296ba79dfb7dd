//! The wgpu kernel of the section cascades (`sosfilt.wgsl`): one invocation per channel walks
//! the chunk's rows in order, float32. The float64 state lives on the host between chunks and
//! is uploaded with each chunk, so a stream can move between backends and `sosfiltfilt` runs
//! on either.

use std::sync::Arc;

use neurostream_engine::PooledBuffer;
use neurostream_engine::{wgpu, Frame, GpuContext, GpuPass, Result, Rows};

use super::cpu::SosKernels;
use super::design::Section;

const SHADER: &str = include_str!("sosfilt.wgsl");

#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
struct Params {
    rows: u32,
    channels: u32,
    sections: u32,
    first_row: u32,
}

/// The wgpu backend of [`SosKernels`].
pub struct GpuSos {
    ctx: Arc<GpuContext>,
    pipeline: Arc<wgpu::ComputePipeline>,
}

impl GpuSos {
    /// Compiles the kernel on `ctx`.
    pub fn new(ctx: Arc<GpuContext>) -> Result<GpuSos> {
        Ok(GpuSos {
            pipeline: ctx.pipeline("sosfilt", SHADER, "sosfilt")?,
            ctx,
        })
    }
}

impl GpuSos {
    /// Filters the `rows × channels` values in `data` in place on the device, continuing `state`
    /// (read back here); with `read_data` the filtered values come back too.
    fn cascade(
        &mut self,
        sections: &[Section],
        state: &mut [f64],
        data: &wgpu::Buffer,
        rows: usize,
        channels: usize,
        read_data: bool,
    ) -> Result<Option<Vec<u8>>> {
        let ctx = &self.ctx;
        // Rows per dispatch: keep each invocation's loop under ~16k iterations.
        let per_pass = (16384 / (sections.len() + 2)).max(1);
        let uniforms: Vec<PooledBuffer> = (0..rows)
            .step_by(per_pass)
            .map(|first| {
                let params = Params {
                    rows: per_pass.min(rows - first) as u32,
                    channels: channels as u32,
                    sections: sections.len() as u32,
                    first_row: first as u32,
                };
                ctx.uniform("sos.params", bytemuck::bytes_of(&params))
            })
            .collect();
        let coeffs: Vec<f32> = sections.iter().flatten().map(|&v| v as f32).collect();
        let state32: Vec<f32> = state.iter().map(|&v| v as f32).collect();
        let coeff_buf = ctx.storage_init("sos.coeffs", bytemuck::cast_slice(&coeffs));
        let state_buf = ctx.storage_init("sos.state", bytemuck::cast_slice(&state32));
        let buffers: Vec<[&wgpu::Buffer; 4]> = uniforms.iter().map(|u| [&**u, &*coeff_buf, &*state_buf, data]).collect();
        let passes: Vec<GpuPass> = buffers
            .iter()
            .map(|b| GpuPass {
                pipeline: &self.pipeline,
                buffers: b,
                workgroups: [channels.div_ceil(64) as u32, 1, 1],
            })
            .collect();
        let state_read = (&*state_buf, (state.len() * 4) as u64);
        let mut out = match read_data {
            true => ctx.run_reads(&passes, &[state_read, (data, (rows * channels * 4) as u64)])?,
            false => ctx.run_reads(&passes, &[state_read])?,
        };
        let data = read_data.then(|| out.pop().expect("the data was read back"));
        let s: &[f32] = bytemuck::cast_slice(&out[0]);
        for (d, v) in state.iter_mut().zip(s) {
            *d = *v as f64;
        }
        Ok(data)
    }
}

impl SosKernels for GpuSos {
    fn filter(&mut self, sections: &[Section], state: &mut [f64], data: &mut [f32], channels: usize) -> Result<()> {
        let rows = data.len() / channels.max(1);
        if rows == 0 {
            return Ok(());
        }
        let data_buf = self.ctx.storage_init("sos.data", bytemuck::cast_slice(data));
        let out = self.cascade(sections, state, &data_buf, rows, channels, true)?;
        data.copy_from_slice(bytemuck::cast_slice(&out.expect("read back")));
        Ok(())
    }

    fn filter_frame(&mut self, sections: &[Section], state: &mut [f64], frame: &Frame, keep_on_device: bool) -> Result<Rows> {
        let (rows, channels) = (frame.rows(), frame.width());
        if rows == 0 {
            return Ok(Rows::Host(Vec::new()));
        }
        let data = self.ctx.owned_rows("sos.data", frame)?;
        let bytes = self.cascade(sections, state, &data, rows, channels, !keep_on_device)?;
        Ok(Rows::from_kernel(&self.ctx, data, rows * channels, bytes))
    }
}
