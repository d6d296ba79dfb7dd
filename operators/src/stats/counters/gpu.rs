//! `feature_stats` counters on a GPU (`counters.wgsl`): each stream's unsettled counts live in a
//! device buffer; batches are added without waiting, and a settle reads the counts back once
//! (firing counts, sums, maxima, last firings, histogram: `(4 + ⌈bins / 2⌉) × 4` bytes per feature,
//! plus 4 bytes per token for the L0 distribution) and clears them.

use std::collections::{BTreeMap, HashMap};
use std::ops::Range;
use std::sync::Arc;

use neurostream_engine::device::workgroups_per_item;
use neurostream_engine::{wgpu, EngineError, GpuContext, GpuPass, PooledBuffer, Result, SparseFrame};

use super::{FeatureCounters, Sums, Unsettled};
use crate::stats::accum::{Accum, LogBins};

const SHADER: &str = include_str!("counters.wgsl");

/// Tokens a stream may add before its counts are settled: bounds the float32 sums' rounding
/// (each sum adds at most this many activations before it joins the float64 total), the
/// per-token L0 buffer, and each histogram count, kept in 16 bits.
pub const MAX_UNSETTLED_TOKENS: u32 = 16_384;
const _: () = assert!(MAX_UNSETTLED_TOKENS < 1 << 16);

/// `u32` words of counters per feature with `bins` histogram bins (two bins a word).
fn words_per_feature(bins: usize) -> usize {
    4 + bins.div_ceil(2)
}

/// See `counters.wgsl`.
#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
struct Params {
    rows: u32,
    n_features: u32,
    bins: u32,
    first: u32,
    row0: u32,
    fixed_k: u32,
    ids_at: u32,
    values_at: u32,
}

/// One stream's counts on the device.
struct Unsettle {
    /// `words_per_feature(bins) × n_features` u32 (see `counters.wgsl`).
    acc: PooledBuffer,
    /// One L0 per unsettled token.
    l0: PooledBuffer,
    /// The stream's index of the first unsettled token.
    first_token: u64,
    /// Unsettled tokens.
    tokens: u32,
}

/// The GPU kernels.
pub struct GpuCounters {
    ctx: Arc<GpuContext>,
    pipeline: Arc<wgpu::ComputePipeline>,
    n_features: usize,
    bins: usize,
    thresholds: PooledBuffer,
    streams: HashMap<Arc<str>, Unsettle>,
}

impl GpuCounters {
    /// Counters for `n_features` features with `bins` activation bins on `ctx`.
    pub fn new(ctx: Arc<GpuContext>, n_features: usize, bins: Option<LogBins>) -> Result<GpuCounters> {
        let n_bins = bins.map_or(0, |b| b.bins);
        let words = (words_per_feature(n_bins) * n_features) as u64;
        let acc_bytes = words * 4;
        let limit = ctx.device.limits().max_storage_buffer_binding_size;
        if acc_bytes > limit || words > u32::MAX as u64 {
            return Err(EngineError::Device(format!(
                "feature_stats: {n_features} features × ({n_bins} activation bins + 4) counters take {acc_bytes} bytes, more than the GPU binds ({limit}); use fewer `activation_bins` or the CPU"
            )));
        }
        let thresholds = bins.map(|b| b.f32_thresholds()).unwrap_or_default();
        Ok(GpuCounters {
            pipeline: ctx.pipeline("feature_stats", SHADER, "accumulate")?,
            thresholds: ctx.storage_init("feature_stats.thresholds", bytemuck::cast_slice(&thresholds)),
            ctx,
            n_features,
            bins: n_bins,
            streams: HashMap::new(),
        })
    }

    fn acc_bytes(&self) -> u64 {
        (words_per_feature(self.bins) * self.n_features * 4) as u64
    }

    /// Fresh (zeroed) counts for a stream whose next token is `first_token`.
    fn fresh(&self, first_token: u64) -> Unsettle {
        Unsettle {
            acc: self.ctx.storage_zeroed("feature_stats.acc", self.acc_bytes()),
            l0: self.ctx.storage_output("feature_stats.l0", MAX_UNSETTLED_TOKENS as u64 * 4),
            first_token,
            tokens: 0,
        }
    }

    /// Reads `u`'s counts back (waiting for the batches added to it).
    fn read(&self, u: &Unsettle) -> Result<Unsettled> {
        let (n, bins) = (self.n_features, self.bins);
        let mut bytes = self
            .ctx
            .run_reads(&[], &[(&u.acc, self.acc_bytes()), (&u.l0, u.tokens as u64 * 4)])?;
        let l0_bytes = bytes.pop().unwrap_or_default();
        let acc_bytes = bytes.pop().unwrap_or_default();
        let acc: &[u32] = bytemuck::cast_slice(&acc_bytes);
        let l0: &[u32] = bytemuck::cast_slice(&l0_bytes);
        let mut l0_tokens = BTreeMap::new();
        for &v in l0 {
            *l0_tokens.entry(v).or_default() += 1;
        }
        Ok(Unsettled {
            span: Accum {
                tokens: u.tokens as u64,
                count: acc[..n].iter().map(|&c| c as u64).collect(),
                sum: acc[n..2 * n].iter().map(|&b| f32::from_bits(b) as f64).collect(),
                max: acc[2 * n..3 * n].iter().map(|&b| f32::from_bits(b)).collect(),
                hist: unpack_histogram(&acc[4 * n..], n, bins),
                l0: l0_tokens,
            },
            first_token: u.first_token,
            last: acc[3 * n..4 * n].to_vec(),
        })
    }

    /// Queues the kernel over `rows` of `frame`, the `first`th unsettled tokens on: over the
    /// pairs the frame left on this device, else over an upload of its host entries.
    fn dispatch(&self, frame: &SparseFrame, rows: Range<usize>, first: u32, u: &Unsettle) -> Result<()> {
        if let Some(device) = frame.device.as_ref().filter(|d| Arc::ptr_eq(d.context(), &self.ctx)) {
            let mut first = first;
            for part in device.slice(rows).parts {
                let params = self.params(part.rows, first, part.row0, part.fixed_k, part.ids_at, part.values_at);
                // Without offsets the kernel reads none: any buffer fills the binding.
                let offsets = part.offsets.as_deref().unwrap_or(&self.thresholds);
                self.submit(params, offsets, &part.pairs, u)?;
                first += part.rows as u32;
            }
            return Ok(());
        }
        let (start, end) = (frame.offsets[rows.start] as usize, frame.offsets[rows.end] as usize);
        let offsets: Vec<u32> = frame.offsets[rows.start..=rows.end]
            .iter()
            .map(|&o| o - start as u32)
            .collect();
        let mut words: Vec<u32> = Vec::with_capacity(2 * (end - start));
        words.extend_from_slice(&frame.ids[start..end]);
        words.extend(frame.values[start..end].iter().map(|v| v.to_bits()));
        let params = self.params(rows.len(), first, 0, 0, 0, (end - start) as u32);
        let offsets = self
            .ctx
            .storage_upload("feature_stats.offsets", bytemuck::cast_slice(&offsets));
        let pairs = self.ctx.storage_upload("feature_stats.pairs", bytemuck::cast_slice(&words));
        self.submit(params, &offsets, &pairs, u)
    }

    fn params(&self, rows: usize, first: u32, row0: u32, fixed_k: u32, ids_at: u32, values_at: u32) -> Params {
        Params {
            rows: rows as u32,
            n_features: self.n_features as u32,
            bins: self.bins as u32,
            first,
            row0,
            fixed_k,
            ids_at,
            values_at,
        }
    }

    /// Queues one dispatch (not waited for: the next settle's read-back comes after it on the
    /// queue).
    fn submit(&self, params: Params, offsets: &wgpu::Buffer, pairs: &wgpu::Buffer, u: &Unsettle) -> Result<()> {
        let uniform = self.ctx.uniform("feature_stats.params", bytemuck::bytes_of(&params));
        let buffers = [&*uniform, offsets, pairs, &*self.thresholds, &*u.acc, &*u.l0];
        self.ctx.submit_reads(
            &[GpuPass {
                pipeline: &self.pipeline,
                buffers: &buffers,
                workgroups: workgroups_per_item(params.rows as usize),
            }],
            &[],
        )?;
        Ok(())
    }
}

/// The `n × bins` histogram counts from their 16-bit halves (`words`: `n × ⌈bins / 2⌉`).
fn unpack_histogram(words: &[u32], n: usize, bins: usize) -> Vec<u32> {
    let per = bins.div_ceil(2);
    let mut out = Vec::with_capacity(n * bins);
    for f in 0..n {
        out.extend((0..bins).map(|b| (words[f * per + b / 2] >> (16 * (b % 2))) & 0xffff));
    }
    out
}

impl FeatureCounters for GpuCounters {
    fn add_rows(&mut self, frame: &SparseFrame, rows: Range<usize>, first_token: u64, mut sums: Sums<'_>) -> Result<()> {
        // Entries per dispatch, so its inputs stay within one pass's byte budget.
        let max_entries = (self.ctx.pass_bytes() / 8).max(1) as usize;
        let mut row = rows.start;
        while row < rows.end {
            if !self.streams.contains_key(&*frame.stream) {
                let fresh = self.fresh(first_token + (row - rows.start) as u64);
                self.streams.insert(frame.stream.clone(), fresh);
            }
            let u = &self.streams[&*frame.stream];
            debug_assert_eq!(u.first_token + u.tokens as u64, first_token + (row - rows.start) as u64);
            if u.tokens == MAX_UNSETTLED_TOKENS {
                self.settle(&frame.stream, sums.reborrow())?;
                continue;
            }
            let room = (MAX_UNSETTLED_TOKENS - u.tokens) as usize;
            let mut end = (row + room).min(rows.end);
            // Fewer rows when their entries pass the budget (at least one row per dispatch).
            let budget_end = frame.offsets[row] as usize + max_entries;
            if frame.offsets[end] as usize > budget_end {
                let fit = frame.offsets[row + 1..=end].partition_point(|&o| o as usize <= budget_end);
                end = row + fit.max(1);
            }
            self.dispatch(frame, row..end, u.tokens, u)?;
            self.streams.get_mut(&*frame.stream).unwrap().tokens += (end - row) as u32;
            row = end;
        }
        Ok(())
    }

    fn settle(&mut self, stream: &str, sums: Sums<'_>) -> Result<()> {
        let Some(u) = self.streams.get(stream) else { return Ok(()) };
        if u.tokens == 0 {
            return Ok(());
        }
        let counts = self.read(u)?;
        counts.apply(sums);
        // The buffers go back to the pool and the stream takes fresh ones with its next rows:
        // device memory follows the streams with unsettled counts, not every stream seen (a
        // long run whose clients come and go).
        self.streams.remove(stream);
        Ok(())
    }

    fn unsettled(&self, stream: &str) -> Result<Option<Unsettled>> {
        match self.streams.get(stream) {
            Some(u) if u.tokens > 0 => Ok(Some(self.read(u)?)),
            _ => Ok(None),
        }
    }
}
