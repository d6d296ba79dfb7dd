//! The shared dense product of the wgpu kernels: `c = alpha·op(a)·op(b) [+ bias] [+ c]` with
//! transpose flags (`gemm.wgsl`), used by SAE training, k-means and the signal operators'
//! spatial maps. Its register-tiled core (`gemm_tile.wgsl`) is also the SAE encoder's.

use std::sync::Arc;

use neurostream_engine::{wgpu, GpuContext, GpuPass, Result};

/// The GEMM's pipelines: 128 × 128 output tiles, and 64 × 128 for products of at most 64 rows.
pub struct Gemm {
    tall: Arc<wgpu::ComputePipeline>,
    short: Arc<wgpu::ComputePipeline>,
}

/// Rows of `c` up to which the 64-row tiles are used.
const SHORT_ROWS: usize = 64;

/// Output rows per tile of `gemm_tile.wgsl` (its `BM`) for a product of `rows` rows, and the
/// workgroups of that product with `cols` columns (128 per tile).
pub fn tiling(rows: usize, cols: usize) -> (usize, [u32; 3]) {
    let bm = if rows <= SHORT_ROWS { 64 } else { 128 };
    (bm, [cols.div_ceil(128) as u32, rows.div_ceil(bm) as u32, 1])
}

/// Compiles (once per context) the GEMM pipelines.
pub fn pipeline(ctx: &GpuContext) -> Result<Gemm> {
    let source = |bm: usize| {
        format!(
            "const BM: u32 = {bm}u;\n{}{}",
            include_str!("gemm_tile.wgsl"),
            include_str!("gemm.wgsl")
        )
    };
    Ok(Gemm {
        tall: ctx.pipeline("gemm_128", &source(128), "gemm")?,
        short: ctx.pipeline("gemm_64", &source(64), "gemm")?,
    })
}

#[repr(C)]
#[derive(Clone, Copy, Default, bytemuck::Pod, bytemuck::Zeroable)]
pub(crate) struct GemmParams {
    m: u32,
    n: u32,
    k: u32,
    ta: u32,
    tb: u32,
    accumulate: u32,
    use_bias: u32,
    a_off: u32,
    alpha: f32,
    pad: [f32; 3],
}

/// One GEMM: `c = alpha·op(a)·op(b) [+ bias over columns] [+ c]`, all float32 row-major.
pub struct GemmCall<'a> {
    /// Rows of `c`.
    pub m: usize,
    /// Columns of `c`.
    pub n: usize,
    /// The shared dimension.
    pub k: usize,
    /// `a`: `m × k`, or `k × m` when `a_transposed`.
    pub a: &'a wgpu::Buffer,
    /// Read `a` as stored `k × m`.
    pub a_transposed: bool,
    /// First element of `a` used (elements, not bytes).
    pub a_offset: usize,
    /// `b`: `k × n`, or `n × k` when `b_transposed`.
    pub b: &'a wgpu::Buffer,
    /// Read `b` as stored `n × k`.
    pub b_transposed: bool,
    /// Added to every row of the product, `n` values.
    pub bias: Option<&'a wgpu::Buffer>,
    /// The output, `m × n`.
    pub c: &'a wgpu::Buffer,
    /// Add to the existing `c` instead of overwriting it.
    pub accumulate: bool,
    /// Scale of the product.
    pub alpha: f32,
}

impl<'a> GemmCall<'a> {
    /// `c (m × n) = a (m × k) · b (k × n)`.
    pub fn new(m: usize, n: usize, k: usize, a: &'a wgpu::Buffer, b: &'a wgpu::Buffer, c: &'a wgpu::Buffer) -> Self {
        GemmCall {
            m,
            n,
            k,
            a,
            a_transposed: false,
            a_offset: 0,
            b,
            b_transposed: false,
            bias: None,
            c,
            accumulate: false,
            alpha: 1.0,
        }
    }
    /// Builder: transpose a.
    pub fn transpose_a(mut self) -> Self {
        self.a_transposed = true;
        self
    }
    /// Builder: transpose b.
    pub fn transpose_b(mut self) -> Self {
        self.b_transposed = true;
        self
    }
    /// Builder: bias.
    pub fn bias(mut self, b: &'a wgpu::Buffer) -> Self {
        self.bias = Some(b);
        self
    }
    /// Builder: accumulate.
    pub fn accumulate(mut self) -> Self {
        self.accumulate = true;
        self
    }
    /// Builder: alpha.
    pub fn alpha(mut self, alpha: f32) -> Self {
        self.alpha = alpha;
        self
    }
    /// The buffers bound by the kernel, `dummy` standing in for a missing bias.
    pub fn buffers(&self, uniform: &'a wgpu::Buffer, dummy: &'a wgpu::Buffer) -> [&'a wgpu::Buffer; 5] {
        [uniform, self.a, self.b, self.bias.unwrap_or(dummy), self.c]
    }
    /// The uniform buffer of this call's shapes and flags.
    pub fn uniform(&self, ctx: &GpuContext) -> neurostream_engine::PooledBuffer {
        let g = GemmParams {
            m: self.m as u32,
            n: self.n as u32,
            k: self.k as u32,
            ta: self.a_transposed as u32,
            tb: self.b_transposed as u32,
            accumulate: self.accumulate as u32,
            use_bias: self.bias.is_some() as u32,
            a_off: self.a_offset as u32,
            alpha: self.alpha,
            pad: [0.0; 3],
        };
        ctx.uniform("sae_train.gemm", bytemuck::bytes_of(&g))
    }
}

/// The pass of `call` with its bound buffers (from [`GemmCall::buffers`]).
pub fn pass<'a>(gemm: &'a Gemm, call: &GemmCall, bufs: &'a [&'a wgpu::Buffer; 5]) -> GpuPass<'a> {
    let (bm, workgroups) = tiling(call.m, call.n);
    GpuPass {
        pipeline: if bm == 64 { &gemm.short } else { &gemm.tall },
        buffers: bufs,
        workgroups,
    }
}
