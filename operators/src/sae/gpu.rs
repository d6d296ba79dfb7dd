//! wgpu kernels of `sae_encode` (see `encode.wgsl`, `topk.wgsl`, `compact.wgsl`). The encoder
//! weights and the per-latent epilogue stay resident on the GPU; each block of rows is uploaded
//! once and only the sparse result comes back: k (value, id) pairs per row for TopK; for the
//! other architectures the count of active latents per row, then their (id, value) pairs.
//! Blocks are pipelined within a call, and the last one may stay in flight across calls
//! ([`InFlight`]).

use std::sync::Arc;

use neurostream_engine::device::{workgroups_1d, workgroups_per_item, PendingReads};
use neurostream_engine::{DevicePairs, PairsPart, PooledBuffer};

use neurostream_engine::{wgpu, EngineError, Frame, GpuContext, GpuPass, Result};

use super::half_weights::WeightDtype;
use super::model::{Activation, InputNorm, Sae};
use super::select::push_sorted;
use super::{Csr, SaeKernels, Started};

/// The encoder's kernels, after `const W_FORMAT` and `const BM` (prepended per pipeline).
const ENCODE: &str = concat!(
    include_str!("params.wgsl"),
    include_str!("../gemm_tile.wgsl"),
    include_str!("encode.wgsl")
);
const TOPK: &str = concat!(include_str!("params.wgsl"), include_str!("topk.wgsl"));
/// `TOPK` with the round's arg-max by subgroup operations (adapters that have them).
const TOPK_SUBGROUPS: &str = concat!(
    include_str!("params.wgsl"),
    include_str!("topk.wgsl"),
    include_str!("topk_subgroups.wgsl")
);
/// Blocks of at most this many rows use the column-streaming product (`encode_narrow`).
const NARROW_ROWS: usize = 4;
const COMPACT: &str = concat!(include_str!("params.wgsl"), include_str!("compact.wgsl"));
const PREPARE: &str = include_str!("prepare.wgsl");

#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
struct Params {
    rows: u32,
    d_in: u32,
    d_sae: u32,
    mode: u32,
    k: u32,
    x_row0: u32,
    w_stride: u32,
    pad: u32,
}

#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
struct PrepareParams {
    rows: u32,
    d_in: u32,
    norm: u32,
    src_row0: u32,
    dst_row0: u32,
    scale: f32,
    subtract_b_dec: u32,
    pad: u32,
}

/// The wgpu backend.
pub struct GpuSae {
    ctx: Arc<GpuContext>,
    /// The product for blocks of more than 64 rows (128 × 128 output tiles).
    encode: Arc<wgpu::ComputePipeline>,
    /// The product for blocks of 5 to 64 rows (64 × 128 output tiles).
    encode_short: Arc<wgpu::ComputePipeline>,
    /// The product for blocks of at most [`NARROW_ROWS`] rows (one column per invocation).
    encode_narrow: Arc<wgpu::ComputePipeline>,
    /// The per-row selection of TopK (`topk.wgsl`) or group max (its `groupmax`): k pairs per row.
    select: Arc<wgpu::ComputePipeline>,
    count: Arc<wgpu::ComputePipeline>,
    compact: Arc<wgpu::ComputePipeline>,
    prepare: Arc<wgpu::ComputePipeline>,
    w_enc: PooledBuffer,
    b_dec: PooledBuffer,
    aux: PooledBuffer,
    mode: u32,
    k: u32,
    /// 32-bit words per row of `w_enc`.
    w_stride: u32,
    block: usize,
    /// Keep each block's pairs on the device for a consumer there ([`Csr::device`]).
    keep_pairs: bool,
}

impl GpuSae {
    /// Uploads the SAE's encoder (as f32) and compiles the kernels.
    pub fn new(ctx: Arc<GpuContext>, sae: &Sae) -> Result<GpuSae> {
        GpuSae::with_weight_dtype(ctx, sae, WeightDtype::F32)
    }

    /// Uploads the SAE's encoder stored as `dtype` (f16 and bf16 halve the bytes each token
    /// reads; the products accumulate in f32) and compiles the kernels.
    pub fn with_weight_dtype(ctx: Arc<GpuContext>, sae: &Sae, dtype: WeightDtype) -> Result<GpuSae> {
        let limit = ctx.device.limits().max_storage_buffer_binding_size as usize;
        let (format, w_stride, words) = encoder_words(&sae.w_enc, sae.d_in, sae.d_sae, dtype);
        if words.len() * 4 > limit {
            return Err(EngineError::Device(format!(
                "W_enc is {} bytes as {dtype:?}, over this GPU's storage binding limit of {limit} bytes",
                words.len() * 4
            )));
        }
        tracing::debug!("sae_encode: W_enc on the GPU as {dtype:?} ({} bytes)", words.len() * 4);
        let encode_src = |bm: usize| format!("const W_FORMAT: u32 = {format}u;\nconst BM: u32 = {bm}u;\n{ENCODE}");
        let encode_key = |bm: usize| format!("sae_encode_{}_{bm}", ["f32", "f16", "bf16"][format as usize]);
        let (scale, shift) = sae.epilogue();
        let (mode, param, k) = match &sae.activation {
            Activation::Relu => (0, vec![0.0; sae.d_sae], 0),
            Activation::JumpRelu { threshold } => (1, threshold.clone(), 0),
            Activation::Gated { b_gate, .. } => (2, b_gate.clone(), 0),
            Activation::TopK { k } => (3, vec![0.0; sae.d_sae], *k as u32),
            Activation::GroupMax { k, .. } => (4, vec![0.0; sae.d_sae], *k as u32),
        };
        let aux: Vec<f32> = scale.into_iter().chain(shift).chain(param).collect();
        // Rows per dispatch: keep the dense block within one pass's bytes.
        let block = (ctx.pass_bytes() as usize / (sae.d_sae * 4)).clamp(1, 4096);
        Ok(GpuSae {
            encode: ctx.pipeline(&encode_key(128), &encode_src(128), "encode")?,
            encode_short: ctx.pipeline(&encode_key(64), &encode_src(64), "encode")?,
            encode_narrow: ctx.pipeline(&encode_key(64), &encode_src(64), "encode_narrow")?,
            select: if mode == 4 {
                ctx.pipeline("sae_topk", TOPK, "groupmax")?
            } else if ctx.subgroups() {
                ctx.pipeline("sae_topk_subgroups", TOPK_SUBGROUPS, "topk_subgroups")?
            } else {
                ctx.pipeline("sae_topk", TOPK, "topk")?
            },
            count: ctx.pipeline("sae_compact", COMPACT, "count")?,
            compact: ctx.pipeline("sae_compact", COMPACT, "compact")?,
            prepare: ctx.pipeline("sae_prepare", PREPARE, "prepare")?,
            b_dec: ctx.storage_init("sae.b_dec", bytemuck::cast_slice(&sae.b_dec)),
            w_enc: ctx.storage_init("sae.w_enc", bytemuck::cast_slice(&words)),
            aux: ctx.storage_init("sae.aux", bytemuck::cast_slice(&aux)),
            mode,
            k,
            w_stride,
            block,
            keep_pairs: false,
            ctx,
        })
    }
}

/// `W_enc` (`d_in × d_sae`, row-major) as the kernels' 32-bit words, with the format constant
/// `W_FORMAT` of `encode.wgsl`: f32 bits (0), or pairs of f16 (1) / bf16 (2) values, the even
/// column in the low half; and the words per row, each row padded with zeros to a multiple of
/// 4 words so the kernels read it as 16-byte vectors.
fn encoder_words(w: &[f32], d_in: usize, d_sae: usize, dtype: WeightDtype) -> (u32, u32, Vec<u32>) {
    let half = |v: f32| -> u32 {
        match dtype {
            WeightDtype::F16 => half::f16::from_f32(v).to_bits() as u32,
            _ => half::bf16::from_f32(v).to_bits() as u32,
        }
    };
    let (format, columns_per_word) = match dtype {
        WeightDtype::F32 => (0, 1),
        WeightDtype::F16 => (1, 2),
        WeightDtype::Bf16 => (2, 2),
    };
    let stride = d_sae.div_ceil(columns_per_word).next_multiple_of(4);
    let mut words = Vec::with_capacity(d_in * stride);
    for row in w.chunks_exact(d_sae) {
        if format == 0 {
            words.extend(row.iter().map(|v| v.to_bits()));
        } else {
            for pair in row.chunks(2) {
                let high = pair.get(1).map_or(0, |&v| half(v));
                words.push(half(pair[0]) | (high << 16));
            }
        }
        words.resize(words.len().next_multiple_of(stride), 0);
    }
    (format, stride as u32, words)
}

impl GpuSae {
    /// Rows of `d_in` values one input buffer may hold (the storage binding limit).
    fn rows_per_buffer(&self, d_in: usize) -> usize {
        let limit = self.ctx.device.limits().max_storage_buffer_binding_size as usize;
        (limit / (d_in * 4)).max(1)
    }

    /// Prepares rows `src_row0 .. src_row0 + rows` of `x` (raw activations) into rows
    /// `dst_row0 ..` of `out`, as [`Sae::prepare_input`] does on the host.
    fn prepare_rows(
        &self,
        sae: &Sae,
        x: &wgpu::Buffer,
        src_row0: usize,
        rows: usize,
        out: &wgpu::Buffer,
        dst_row0: usize,
    ) -> Result<()> {
        let (norm, scale) = match sae.norm {
            InputNorm::None => (0, 1.0),
            InputNorm::Scale(f) => (1, f),
            InputNorm::ConstantNormRescale => (2, 1.0),
            InputNorm::LayerNorm => (3, 1.0),
        };
        let params = PrepareParams {
            rows: rows as u32,
            d_in: sae.d_in as u32,
            norm,
            src_row0: src_row0 as u32,
            dst_row0: dst_row0 as u32,
            scale,
            subtract_b_dec: sae.apply_b_dec_to_input as u32,
            pad: 0,
        };
        let uniform = self.ctx.uniform("sae.prepare", bytemuck::bytes_of(&params));
        let buffers = [&*uniform, x, &*self.b_dec, out];
        let pass = GpuPass {
            pipeline: &self.prepare,
            buffers: &buffers,
            workgroups: workgroups_per_item(rows),
        };
        self.ctx.run(&[pass], None)?;
        Ok(())
    }

    /// Encodes `rows` prepared rows of `x` and appends them to `csr`, after `in_flight` (the
    /// block an earlier call left in flight), all but the last block: that one is returned
    /// still in flight (take it with [`take_block`] before anything else is appended to `csr`).
    ///
    /// Blocks are pipelined, so the device computes the next block while the host sorts the
    /// last one's pairs into `csr`. A TopK block is one submission (k pairs per row come back).
    /// The other architectures take two: the product and each row's count of active latents,
    /// then (once the host has turned the counts into offsets) the compaction of the pairs;
    /// block b + 1's product is queued before block b's compaction, and block b's pairs are
    /// taken after block b + 1's compaction is queued.
    fn encode_rows(
        &mut self,
        sae: &Sae,
        x: &wgpu::Buffer,
        rows: usize,
        csr: &mut Csr,
        mut in_flight: Option<InFlightBlock>,
    ) -> Result<Option<InFlightBlock>> {
        let (d_in, n) = (sae.d_in, sae.d_sae);
        let mut counting: Option<CountedBlock> = None;
        for start in (0..rows).step_by(self.block) {
            let m = self.block.min(rows - start);
            let params = Params {
                rows: m as u32,
                d_in: d_in as u32,
                d_sae: n as u32,
                mode: self.mode,
                k: self.k,
                x_row0: start as u32,
                w_stride: self.w_stride,
                pad: 0,
            };
            let ctx = &self.ctx;
            let uniform = ctx.uniform("sae.params", bytemuck::bytes_of(&params));
            let dense = ctx.storage_output("sae.pre", (m * n * 4) as u64);
            let encode_buffers = [&*uniform, x, &*self.w_enc, &*self.aux, &*dense];
            let encode = if m <= NARROW_ROWS {
                GpuPass {
                    pipeline: &self.encode_narrow,
                    buffers: &encode_buffers,
                    workgroups: workgroups_1d(n, 256),
                }
            } else {
                let (bm, workgroups) = crate::gpu_gemm::tiling(m, n);
                GpuPass {
                    pipeline: if bm == 64 { &self.encode_short } else { &self.encode },
                    buffers: &encode_buffers,
                    workgroups,
                }
            };
            let groups = workgroups_per_item(m);
            let submitted = if self.mode >= 3 {
                let k = self.k as usize;
                let picked = ctx.storage_output("sae.picked", (2 * m * k * 4) as u64);
                let topk_buffers = [&*uniform, &*dense, &*picked];
                let topk = GpuPass {
                    pipeline: &self.select,
                    buffers: &topk_buffers,
                    workgroups: groups,
                };
                InFlightBlock::TopK {
                    reads: ctx.submit_reads(&[encode, topk], &[(&picked, (2 * m * k * 4) as u64)])?,
                    rows: m,
                    k,
                    kept: self.keep_pairs.then_some(picked),
                }
            } else {
                let counts = ctx.storage_output("sae.counts", (m * 4) as u64);
                // Auto-derived layouts drop unused bindings: `count` does not bind the pairs.
                let count_buffers = [&*uniform, &*dense, &*counts];
                let count = GpuPass {
                    pipeline: &self.count,
                    buffers: &count_buffers,
                    workgroups: groups,
                };
                let reads = ctx.submit_reads(&[encode, count], &[(&counts, (m * 4) as u64)])?;
                // The product stays held (not reused by the next block) until it is compacted.
                let Some(previous) = counting.replace(CountedBlock {
                    reads,
                    rows: m,
                    uniform,
                    dense,
                }) else {
                    continue;
                };
                self.compact_block(previous)?
            };
            if let Some(previous) = in_flight.replace(submitted) {
                take_block(&self.ctx, previous, n, csr)?;
            }
        }
        if let Some(last) = counting {
            let submitted = self.compact_block(last)?;
            if let Some(previous) = in_flight.replace(submitted) {
                take_block(&self.ctx, previous, n, csr)?;
            }
        }
        Ok(in_flight)
    }

    /// Waits for a block's counts and queues the compaction of its pairs: rows × 4 + nnz × 8
    /// bytes come back instead of the dense rows × d_sae × 4.
    fn compact_block(&self, block: CountedBlock) -> Result<InFlightBlock> {
        let ctx = &self.ctx;
        let m = block.rows;
        let bytes = ctx.wait(block.reads)?.pop().unwrap_or_default();
        let mut offsets = Vec::with_capacity(m + 1);
        offsets.push(0u32);
        for c in bytemuck::cast_slice::<u8, u32>(&bytes) {
            offsets.push(offsets.last().unwrap() + c);
        }
        let total = offsets[m] as usize;
        if total == 0 {
            // The (zero) offsets go up so a consumer finds every row empty.
            let kept = self.keep_pairs.then(|| {
                let index = ctx.storage_init("sae.offsets", bytemuck::cast_slice(&offsets));
                (ctx.storage_output("sae.pairs", 4), index)
            });
            return Ok(InFlightBlock::Pairs {
                reads: None,
                offsets,
                kept,
            });
        }
        let index = ctx.storage_init("sae.offsets", bytemuck::cast_slice(&offsets));
        // Sized in powers of two, so batches of similar density reuse one buffer.
        let pairs = ctx.storage_output("sae.pairs", (2 * total * 4).next_power_of_two() as u64);
        let compact_buffers = [&*block.uniform, &*block.dense, &*index, &*pairs];
        let compact = GpuPass {
            pipeline: &self.compact,
            buffers: &compact_buffers,
            workgroups: workgroups_per_item(m),
        };
        let reads = ctx.submit_reads(&[compact], &[(&pairs, (2 * total * 4) as u64)])?;
        Ok(InFlightBlock::Pairs {
            reads: Some(reads),
            offsets,
            kept: self.keep_pairs.then_some((pairs, index)),
        })
    }
}

/// Waits for a block's pairs and appends its rows to `csr`, each sorted by value. TopK pairs
/// (values, then ids) drop non-positive values and padding ids (at least `d_sae`).
fn take_block(ctx: &Arc<GpuContext>, mut block: InFlightBlock, d_sae: usize, csr: &mut Csr) -> Result<()> {
    if let Some(part) = block.take_kept() {
        let pairs = DevicePairs::new(ctx.clone(), vec![part]);
        match &mut csr.device {
            Some(device) => device.append(pairs),
            None => csr.device = Some(pairs),
        }
    }
    match block {
        InFlightBlock::TopK { reads, rows, k, .. } => {
            let mut entries = Vec::with_capacity(k);
            let bytes = ctx.wait(reads)?.pop().unwrap_or_default();
            let out: &[f32] = bytemuck::cast_slice(&bytes);
            for r in 0..rows {
                entries.clear();
                for c in 0..k {
                    let v = out[r * k + c];
                    let id = out[rows * k + r * k + c].to_bits();
                    if v > 0.0 && (id as usize) < d_sae {
                        entries.push((id, v));
                    }
                }
                push_sorted(csr, &mut entries);
            }
        }
        InFlightBlock::Pairs { reads, offsets, .. } => {
            let rows = offsets.len() - 1;
            let Some(reads) = reads else {
                (0..rows).for_each(|_| push_sorted(csr, &mut []));
                return Ok(());
            };
            let bytes = ctx.wait(reads)?.pop().unwrap_or_default();
            let out: &[u32] = bytemuck::cast_slice(&bytes);
            let (ids, values) = out.split_at(offsets[rows] as usize);
            let mut entries: Vec<(u32, f32)> = Vec::new();
            for r in 0..rows {
                let (a, b) = (offsets[r] as usize, offsets[r + 1] as usize);
                entries.clear();
                entries.extend((a..b).map(|i| (ids[i], f32::from_bits(values[i]))));
                push_sorted(csr, &mut entries);
            }
        }
    }
    Ok(())
}

/// A block whose pairs are still being computed or read back.
enum InFlightBlock {
    /// TopK: k (value, id) pairs per row, values first; `kept`: their buffer, when the pairs
    /// stay on the device too.
    TopK {
        reads: PendingReads,
        rows: usize,
        k: usize,
        kept: Option<PooledBuffer>,
    },
    /// The other architectures: the compacted pairs (ids, then values) at the rows' `offsets`
    /// (rows + 1 of them); no read when no latent is active. `kept`: the pairs' buffer and the
    /// offsets' on the device, when the pairs stay there too.
    Pairs {
        reads: Option<PendingReads>,
        offsets: Vec<u32>,
        kept: Option<(PooledBuffer, PooledBuffer)>,
    },
}

impl InFlightBlock {
    /// Where the block's pairs lie on the device, when they are kept there (the buffers move
    /// into the part).
    fn take_kept(&mut self) -> Option<PairsPart> {
        match self {
            InFlightBlock::TopK { rows, k, kept, .. } => kept.take().map(|picked| PairsPart {
                rows: *rows,
                pairs: Arc::new(picked),
                offsets: None,
                fixed_k: *k as u32,
                row0: 0,
                ids_at: (*rows * *k) as u32,
                values_at: 0,
            }),
            InFlightBlock::Pairs { offsets, kept, .. } => kept.take().map(|(pairs, index)| {
                let rows = offsets.len() - 1;
                PairsPart {
                    rows,
                    pairs: Arc::new(pairs),
                    offsets: Some(Arc::new(index)),
                    fixed_k: 0,
                    row0: 0,
                    ids_at: 0,
                    values_at: offsets[rows],
                }
            }),
        }
    }

    fn reads(&mut self) -> Option<&mut PendingReads> {
        match self {
            InFlightBlock::TopK { reads, .. } => Some(reads),
            InFlightBlock::Pairs { reads, .. } => reads.as_mut(),
        }
    }
}

/// A block of a non-TopK encoder whose product and counts are queued: the product's buffers
/// stay held until its compaction is queued (see [`GpuSae::compact_block`]).
struct CountedBlock {
    reads: PendingReads,
    rows: usize,
    uniform: PooledBuffer,
    dense: PooledBuffer,
}

/// Frames encoded but for their last block, still in flight (see
/// [`SaeKernels::start_frames`]); it finishes itself.
pub struct InFlight {
    ctx: Arc<GpuContext>,
    d_sae: usize,
    csr: Csr,
    last: InFlightBlock,
}

impl InFlight {
    /// Whether the last block is done (never blocks).
    pub(super) fn is_done(&mut self) -> bool {
        match self.last.reads() {
            Some(reads) => self.ctx.ready(reads),
            None => true,
        }
    }

    /// The encoded rows, the last block taken (waits for it).
    pub(super) fn finish(self: Box<Self>) -> Result<Csr> {
        let InFlight {
            ctx,
            d_sae,
            mut csr,
            last,
        } = *self;
        take_block(&ctx, last, d_sae, &mut csr)?;
        Ok(csr)
    }
}

impl SaeKernels for GpuSae {
    fn encode(&mut self, sae: &Sae, input: &[f32], rows: usize) -> Result<Csr> {
        let d_in = sae.d_in;
        let mut csr = Csr::with_rows(rows);
        for start in (0..rows).step_by(self.rows_per_buffer(d_in)) {
            let m = self.rows_per_buffer(d_in).min(rows - start);
            let x = self
                .ctx
                .storage_init("sae.x", bytemuck::cast_slice(&input[start * d_in..(start + m) * d_in]));
            if let Some(last) = self.encode_rows(sae, &x, m, &mut csr, None)? {
                take_block(&self.ctx, last, sae.d_sae, &mut csr)?;
            }
        }
        Ok(csr)
    }

    fn encode_frames(&mut self, sae: &Sae, frames: &[&Frame], prepared: &mut Vec<f32>) -> Result<Csr> {
        self.start_frames(sae, frames, prepared)?.finish()
    }

    fn keep_pairs_on_device(&mut self) {
        self.keep_pairs = true;
    }

    /// Prepares the rows on the device, reading rows that a GPU operator left there in place,
    /// so only the sparse result crosses the bus; the last TopK block stays in flight.
    fn start_frames(&mut self, sae: &Sae, frames: &[&Frame], _prepared: &mut Vec<f32>) -> Result<Started> {
        let d_in = sae.d_in;
        let rows: usize = frames.iter().map(|f| f.rows()).sum();
        let mut csr = Csr::with_rows(rows);
        if rows == 0 {
            return Ok(Started::Done(csr));
        }
        let mut last = None;
        let capacity = self.rows_per_buffer(d_in).min(rows);
        let prepared = self.ctx.storage_output("sae.prepared", (capacity * d_in * 4) as u64);
        let mut filled = 0;
        for frame in frames {
            let input = self.ctx.input_rows("sae.x", frame)?;
            let mut done = 0;
            while done < frame.rows() {
                let m = (capacity - filled).min(frame.rows() - done);
                self.prepare_rows(sae, &input, done, m, &prepared, filled)?;
                (filled, done) = (filled + m, done + m);
                if filled == capacity {
                    // Rows go into `csr` in order: the previous call's last block first.
                    last = self.encode_rows(sae, &prepared, filled, &mut csr, last.take())?;
                    filled = 0;
                }
            }
        }
        if filled > 0 {
            last = self.encode_rows(sae, &prepared, filled, &mut csr, last.take())?;
        }
        Ok(match last {
            None => Started::Done(csr),
            Some(block) => Started::InFlight(Box::new(InFlight {
                ctx: self.ctx.clone(),
                d_sae: sae.d_sae,
                csr,
                last: block,
            })),
        })
    }
}
