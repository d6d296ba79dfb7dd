//! `bandpower` over sliding windows with the signal kept on the GPU: each stream's rows that
//! later windows still need stay in a device buffer ([`DeviceHistory`]), a new frame's rows
//! (left on the device by the operator before, or uploaded) are appended by a copy on the
//! device, and three passes turn the windows of the frame into band powers: the detrended,
//! Hann-windowed segments (`segments.wgsl`), their DFT as the shared GEMM against cached
//! cosine and sine matrices, and the band sums (`bands.wgsl`). Only the band powers come
//! back: `windows × channels × bands` values, not the samples.
//!
//! Where the windows start is worked out on the host by the stream's
//! [`Windower`](crate::signal::windows::Windower), which then keeps positions, sample
//! indices and markers but no rows.

use std::sync::Arc;

use neurostream_engine::device::workgroups_per_item;
use neurostream_engine::{wgpu, Frame, GpuContext, GpuPass, PooledBuffer, Result};

use super::plan::BandPlan;
use super::welch::Welch;
use crate::gpu_gemm::{self, GemmCall};
use crate::signal::windows::Window;

/// One stream's rows on the device: the first `rows` rows of `buffer` (`channels` values each)
/// hold the stream positions its windower still needs.
pub struct DeviceHistory {
    buffer: Option<PooledBuffer>,
    rows: usize,
}

impl DeviceHistory {
    /// Rows held.
    pub fn rows(&self) -> usize {
        self.rows
    }
}

#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
struct SegParams {
    items: u32,
    channels: u32,
    n: u32,
    step: u32,
    segs: u32,
    _pad: [u32; 3],
}

#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
struct BandParams {
    items: u32,
    segs: u32,
    nfreq: u32,
    nbands: u32,
    relative: u32,
    total_lo: u32,
    total_hi: u32,
    _pad: u32,
}

/// The kernels and constant buffers of one `bandpower` instance on one GPU.
pub struct DeviceBandpower {
    ctx: Arc<GpuContext>,
    segments: Arc<wgpu::ComputePipeline>,
    bands: Arc<wgpu::ComputePipeline>,
    gemm: gpu_gemm::Gemm,
    /// [`dft_basis`](super::welch::dft_basis) of the segment length.
    basis: PooledBuffer,
    hann: PooledBuffer,
    /// Each band's bin range, as `u32` pairs.
    ranges: PooledBuffer,
    /// Per bin: the PSD weight times the bin width (see [`Welch::bin_weight`]).
    weights: PooledBuffer,
    plan: BandPlan,
    channels: usize,
    /// Rows per window.
    length: usize,
    nperseg: usize,
    step: usize,
    segs: usize,
    nfreq: usize,
}

/// Where [`DeviceBandpower::gather`] finds each stream position: the history's rows, then the
/// new frame's.
struct RowSources<'a> {
    history: &'a DeviceHistory,
    /// The stream position of the history's first row.
    base: u64,
    frame: FrameRows<'a>,
}

/// A new frame's rows: on this device, or on the host (uploaded only where needed).
enum FrameRows<'a> {
    Device(&'a wgpu::Buffer),
    Host(&'a [f32]),
}

/// Buffers are sized in powers of two of rows, so a stream of frames of varying size reuses a
/// few pooled buffers instead of allocating per frame.
fn pooled_rows(rows: usize) -> usize {
    rows.max(1).next_power_of_two()
}

impl DeviceBandpower {
    /// Kernels for windows of `length` rows of `channels` channels, segmented as `welch`,
    /// summed as `plan`.
    pub fn new(ctx: Arc<GpuContext>, welch: &Welch, plan: &BandPlan, channels: usize, length: usize) -> Result<Self> {
        let (n, nfreq) = (welch.nperseg, welch.nfreq());
        let basis = super::welch::dft_basis(n, nfreq);
        let hann: Vec<f32> = welch.window().iter().map(|&w| w as f32).collect();
        let ranges: Vec<u32> = plan.ranges.iter().flat_map(|&(a, b)| [a as u32, b as u32]).collect();
        let df = welch.fs / n as f64;
        let weights: Vec<f32> = (0..nfreq).map(|k| (welch.bin_weight(k) * df) as f32).collect();
        Ok(DeviceBandpower {
            segments: ctx.pipeline("bandpower.segments", include_str!("segments.wgsl"), "segments")?,
            bands: ctx.pipeline("bandpower.bands", include_str!("bands.wgsl"), "bands")?,
            gemm: gpu_gemm::pipeline(&ctx)?,
            basis: ctx.storage_init("bandpower.basis", bytemuck::cast_slice(&basis)),
            hann: ctx.storage_init("bandpower.hann", bytemuck::cast_slice(&hann)),
            ranges: ctx.storage_init("bandpower.ranges", bytemuck::cast_slice(&ranges)),
            weights: ctx.storage_init("bandpower.weights", bytemuck::cast_slice(&weights)),
            plan: plan.clone(),
            channels,
            length,
            nperseg: n,
            step: n - welch.noverlap,
            segs: welch.segments(length),
            nfreq,
            ctx,
        })
    }

    /// A history holding `rows` (`channels` values each), uploaded: a restored checkpoint's,
    /// or a fresh stream's (empty).
    pub fn upload(&self, rows: &[f32]) -> DeviceHistory {
        let count = rows.len() / self.channels.max(1);
        DeviceHistory {
            buffer: (count > 0).then(|| self.ctx.storage_init("bandpower.rows", bytemuck::cast_slice(rows))),
            rows: count,
        }
    }

    /// The rows `history` holds, copied back (for a checkpoint).
    pub fn download(&self, history: &DeviceHistory) -> Result<Vec<f32>> {
        let Some(buffer) = &history.buffer else {
            return Ok(Vec::new());
        };
        let c = self.channels as u64;
        let bytes = history.rows as u64 * c * 4;
        let copy = self.ctx.storage_output("bandpower.snapshot", bytes.max(4));
        self.ctx.copy_buffers(&[(buffer, 0, &copy, 0, bytes)]);
        let read = self.ctx.run(&[], Some((&copy, bytes)))?;
        Ok(bytemuck::cast_slice(&read[..bytes as usize]).to_vec())
    }

    /// Appends `frame`'s rows to `history` (which held the stream positions `base_before..`),
    /// computes the band powers of `windows` (cut by the stream's windower from those rows),
    /// and keeps the rows from `base_after` on. Returns `windows × channels × plan.width()`
    /// values, row-major by window.
    ///
    /// The windows go in groups whose rows, segments and spectra each fit in the context's
    /// [`pass_bytes`](GpuContext::pass_bytes), so a frame of any length or a tiny step never
    /// reaches the adapter's binding limits; a host frame uploads only the rows some window
    /// or the history needs.
    pub fn push(
        &mut self,
        history: &mut DeviceHistory,
        frame: &Frame,
        windows: &[Window],
        base_before: u64,
        base_after: u64,
    ) -> Result<Vec<f32>> {
        let end = base_before + (history.rows + frame.rows()) as u64;
        if self.channels == 0 {
            history.rows = (end - base_after) as usize;
            return Ok(Vec::new());
        }
        let resident = frame.device.as_ref().filter(|rows| Arc::ptr_eq(rows.context(), &self.ctx));
        let host = match resident {
            Some(_) => None,
            None => Some(frame.values()?),
        };
        let sources = RowSources {
            history,
            base: base_before,
            frame: match (resident, &host) {
                (Some(rows), _) => FrameRows::Device(rows.buffer()),
                (None, Some(values)) => FrameRows::Host(values),
                (None, None) => unreachable!("a frame not on this device has host values"),
            },
        };
        let mut values = Vec::with_capacity(windows.len() * self.channels * self.plan.width());
        for group in self.window_groups(windows) {
            let first = group[0].start;
            let rows = self.gather(&sources, first, group[group.len() - 1].start + self.length as u64);
            values.extend(self.band_powers(&rows, group, first)?);
        }
        let kept = self.gather(&sources, base_after, end);
        *history = DeviceHistory {
            buffer: Some(kept),
            rows: (end - base_after) as usize,
        };
        Ok(values)
    }

    /// `windows` (in order) in runs whose rows, segments and DFT each fit in one pass.
    fn window_groups<'w>(&self, windows: &'w [Window]) -> Vec<&'w [Window]> {
        let budget = self.ctx.pass_bytes();
        let per_window = (self.channels * self.segs * 4) as u64 * (self.nperseg + 2 * self.nfreq) as u64;
        let row_bytes = (self.channels * 4) as u64;
        let mut groups = Vec::new();
        let mut rest = windows;
        while !rest.is_empty() {
            let fits = |n: usize| {
                let span = rest[n - 1].start + self.length as u64 - rest[0].start;
                n as u64 * per_window <= budget && pooled_rows(span as usize) as u64 * row_bytes <= budget
            };
            let mut n = 1;
            while n < rest.len() && fits(n + 1) {
                n += 1;
            }
            let (group, tail) = rest.split_at(n);
            groups.push(group);
            rest = tail;
        }
        groups
    }

    /// A buffer holding the stream positions `from..to` of `sources`, row-major.
    fn gather(&self, sources: &RowSources, from: u64, to: u64) -> PooledBuffer {
        let row_bytes = (self.channels * 4) as u64;
        let rows = (to - from) as usize;
        let out = self
            .ctx
            .storage_output("bandpower.rows", pooled_rows(rows) as u64 * row_bytes);
        let held_end = sources.base + sources.history.rows as u64;
        let mut copies = Vec::with_capacity(2);
        if let Some(held) = &sources.history.buffer {
            let (a, b) = (from.max(sources.base), to.min(held_end));
            if a < b {
                let at = (a - sources.base) * row_bytes;
                copies.push((&**held, at, &*out, (a - from) * row_bytes, (b - a) * row_bytes));
            }
        }
        let (a, b) = (from.max(held_end), to);
        if a < b {
            let (at, into, bytes) = ((a - held_end) * row_bytes, (a - from) * row_bytes, (b - a) * row_bytes);
            match sources.frame {
                FrameRows::Device(buffer) => copies.push((buffer, at, &*out, into, bytes)),
                FrameRows::Host(values) => {
                    let c = self.channels;
                    let slice = &values[(a - held_end) as usize * c..(b - held_end) as usize * c];
                    self.ctx.write(&out, into, bytemuck::cast_slice(slice));
                }
            }
        }
        self.ctx.copy_buffers(&copies);
        out
    }

    /// The three passes over the windows of `rows` (row 0 at stream position `base`).
    fn band_powers(&self, rows: &wgpu::Buffer, windows: &[Window], base: u64) -> Result<Vec<f32>> {
        let ctx = &self.ctx;
        let (c, n, segs, nfreq) = (self.channels, self.nperseg, self.segs, self.nfreq);
        let starts: Vec<u32> = windows.iter().map(|w| (w.start - base) as u32).collect();
        let items = windows.len() * c;
        let count = items * segs;
        let seg_params = SegParams {
            items: count as u32,
            channels: c as u32,
            n: n as u32,
            step: self.step as u32,
            segs: segs as u32,
            _pad: [0; 3],
        };
        let band_params = BandParams {
            items: items as u32,
            segs: segs as u32,
            nfreq: nfreq as u32,
            nbands: self.plan.ranges.len() as u32,
            relative: self.plan.relative as u32,
            total_lo: self.plan.total.0 as u32,
            total_hi: self.plan.total.1 as u32,
            _pad: 0,
        };
        let seg_uniform = ctx.uniform("bandpower.segments", bytemuck::bytes_of(&seg_params));
        let band_uniform = ctx.uniform("bandpower.bands", bytemuck::bytes_of(&band_params));
        let starts = ctx.storage_init("bandpower.starts", bytemuck::cast_slice(&starts));
        let segments = ctx.storage_output("bandpower.segs", (count * n * 4) as u64);
        let dft = ctx.storage_zeroed("bandpower.dft", (count * 2 * nfreq * 4) as u64);
        let out_bytes = (items * self.plan.width() * 4) as u64;
        let out = ctx.storage_output("bandpower.out", out_bytes);
        let dummy = ctx.storage_zeroed("bandpower.dummy", 4);
        let call = GemmCall::new(count, 2 * nfreq, n, &segments, &self.basis, &dft);
        let gemm_uniform = call.uniform(ctx);
        let gemm_buffers = call.buffers(&gemm_uniform, &dummy);
        let seg_buffers = [&*seg_uniform, rows, &*starts, &*self.hann, &*segments];
        let band_buffers = [&*band_uniform, &*dft, &*self.ranges, &*self.weights, &*out];
        let passes = [
            GpuPass {
                pipeline: &self.segments,
                buffers: &seg_buffers,
                workgroups: workgroups_per_item(count),
            },
            gpu_gemm::pass(&self.gemm, &call, &gemm_buffers),
            GpuPass {
                pipeline: &self.bands,
                buffers: &band_buffers,
                workgroups: neurostream_engine::device::workgroups_1d(items, 64),
            },
        ];
        let bytes = ctx.run(&passes, Some((&out, out_bytes)))?;
        Ok(bytemuck::cast_slice(&bytes[..out_bytes as usize]).to_vec())
    }
}
