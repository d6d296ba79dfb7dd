//! `W_enc` packed once, at load, into panels of [`NR`] columns (`d_in × 16` contiguous values per
//! panel) for an AVX2 + FMA register-blocked kernel. Small and medium batches are where a
//! general GEMM loses: it repacks the whole weight matrix on every call, which at 64 rows costs
//! about as much as the multiply itself. Packing once removes that; each panel is read from
//! memory once per call and stays in cache while every row block of the batch multiplies it.
//! Weights may be stored as f16 or bf16 (half the bytes), widened to f32 in registers. Where the
//! CPU has AVX-512F (detected at run time) two panels at a time are multiplied with 16-lane
//! vectors, doubling the multiply-adds per instruction.
//!
//! Every product is one multiply-add chain over `d_in` in order, whatever the block's height, so
//! a row's products are the same bits whatever rows share its call (see `panels_range`).

use neurostream_engine::huge_pages;

use super::half_weights::WeightDtype;
use crate::parallel::SharedMut;

/// Columns per panel (two 8-lane vectors).
pub const NR: usize = 16;
/// Rows per register block: 6 rows × 16 columns = 12 accumulators of the 16 AVX registers.
const MR: usize = 6;
/// Rows per register block of the AVX-512 kernel: 12 rows × 32 columns = 24 accumulators of the
/// 32 registers, so each loaded weight vector feeds 12 multiply-adds.
const MR_WIDE: usize = 12;

/// The stored panels.
enum Panels {
    F32(Vec<f32>),
    /// f16 or bf16 bits (`bf16` tells which).
    Half {
        bits: Vec<u16>,
        bf16: bool,
    },
}

/// `W_enc` (`k × n`, row-major on input) in column panels, for CPUs with AVX2 and FMA (and F16C
/// for f16/bf16 storage).
pub struct PackedWeights {
    panels: Panels,
    k: usize,
    n: usize,
    /// The CPU has AVX-512F: pairs of panels are multiplied with 16-lane vectors.
    wide: bool,
}

/// Calls `$f32` or `$half` (the kernels of one vector width) for `$r` rows and `$v` vectors per
/// row, with the weights `self` stores from value `$at` of its panels, writing into a tile.
#[cfg(target_arch = "x86_64")]
macro_rules! run_kernel {
    ($self:ident, $f32:ident, $half:ident, $r:literal, $v:literal, $xs:expr, $ms:expr, $at:expr, $stride:expr, $out:expr, $cols:expr) => {
        match &$self.panels {
            Panels::F32(w) => $f32::<$r, $v>($self.k, $xs, $ms, w.as_ptr().add($at), $stride, $out, TILE, $cols),
            Panels::Half { bits, bf16 } => {
                $half::<$r, $v>($self.k, $xs, $ms, bits.as_ptr().add($at), $stride, *bf16, $out, TILE, $cols)
            }
        }
    };
}

impl PackedWeights {
    /// Packs `w` (`k × n`, row-major) as `dtype` (rounded to nearest for f16/bf16); `None` when
    /// this CPU lacks the instructions the kernel needs (callers then use the general GEMM).
    pub fn new(w: &[f32], k: usize, n: usize, dtype: WeightDtype) -> Option<PackedWeights> {
        if !kernel_supported() {
            return None;
        }
        assert_eq!(w.len(), k * n, "packing a {k} x {n} matrix from {} values", w.len());
        let np = n.div_ceil(NR);
        let gather = |p: usize, i: usize, c: usize| {
            let j = p * NR + c;
            if j < n {
                w[i * n + j]
            } else {
                0.0
            }
        };
        let order = (0..np).flat_map(|p| (0..k).flat_map(move |i| (0..NR).map(move |c| (p, i, c))));
        // Read once per token at batch 1: on huge pages where the system allows.
        let len = np * k * NR;
        let panels = match dtype {
            WeightDtype::F32 => Panels::F32(huge_pages::collect(len, order.map(|(p, i, c)| gather(p, i, c)))),
            WeightDtype::F16 => Panels::Half {
                bits: huge_pages::collect(len, order.map(|(p, i, c)| half::f16::from_f32(gather(p, i, c)).to_bits())),
                bf16: false,
            },
            WeightDtype::Bf16 => Panels::Half {
                bits: huge_pages::collect(len, order.map(|(p, i, c)| half::bf16::from_f32(gather(p, i, c)).to_bits())),
                bf16: true,
            },
        };
        Some(PackedWeights {
            panels,
            k,
            n,
            wide: wide_supported(),
        })
    }

    /// `z = x @ W` for `x` rows × k and `z` rows × n (row-major), the panels split over up to
    /// `threads` threads.
    pub fn matmul(&self, x: &[f32], rows: usize, z: &mut [f32], threads: usize) {
        let n = self.n;
        assert!(z.len() >= rows * n);
        let dst = SharedMut(z.as_mut_ptr());
        self.matmul_tiles(
            x,
            rows,
            threads,
            || (),
            |_, tile| {
                for r in 0..tile.rows {
                    let src = &tile.values[r * tile.stride..][..tile.cols];
                    // SAFETY: `z` holds rows × n values (checked above) and each tile's
                    // columns belong to one thread.
                    unsafe { std::ptr::copy_nonoverlapping(src.as_ptr(), dst.get().add(r * n + tile.col0), tile.cols) };
                }
            },
            |()| (),
        );
    }

    /// `x @ W` for `x` rows × k, handed to `take` a tile of at most 256 columns at a time (every
    /// row, ascending columns) while the tile is in cache, so the `rows × n` products need never be
    /// written. The panels are split over up to `threads` threads in contiguous column
    /// ranges; each thread's state comes from `init` and ends in `finish` (on that thread), and
    /// the results are returned in column order.
    #[allow(clippy::too_many_arguments)]
    pub fn matmul_tiles<S, T: Send>(
        &self,
        x: &[f32],
        rows: usize,
        threads: usize,
        init: impl Fn() -> S + Sync,
        take: impl Fn(&mut S, &Tile) + Sync,
        finish: impl Fn(S) -> T + Sync,
    ) -> Vec<T> {
        let (k, n) = (self.k, self.n);
        assert!(x.len() >= rows * k);
        // x in row blocks of `mr`, interleaved by k (`xp[block][i * mr + r]`), zero-padded.
        let mr = if self.wide { MR_WIDE } else { MR };
        let blocks = rows.div_ceil(mr);
        let mut xp = vec![0f32; blocks * k * mr];
        for r in 0..rows {
            let (b, rr) = (r / mr, r % mr);
            let dst = &mut xp[b * k * mr..(b + 1) * k * mr];
            for (i, &v) in x[r * k..(r + 1) * k].iter().enumerate() {
                dst[i * mr + rr] = v;
            }
        }
        let np = n.div_ceil(NR);
        let threads = threads.clamp(1, np.max(1));
        let per = np.div_ceil(threads).max(1);
        let run = |p0: usize, p1: usize| {
            let mut state = init();
            let mut tile = vec![0f32; rows * TILE];
            // SAFETY: this CPU has AVX2/FMA/F16C (checked in `new`); `tile` holds rows × TILE.
            unsafe {
                self.panels_range(&xp, mr, rows, p0, p1, &mut tile, |col0, cols, values| {
                    take(
                        &mut state,
                        &Tile {
                            values,
                            stride: TILE,
                            rows,
                            col0,
                            cols,
                        },
                    )
                })
            };
            finish(state)
        };
        // Contiguous panel ranges, one per share (the caller takes the first).
        let shares = np.div_ceil(per).max(1);
        crate::parallel::map_shares(shares, |i| run(i * per, ((i + 1) * per).min(np)))
    }

    /// For each row `x_r` of `x` (`rows × k`), the column `j` that minimizes `shift[j] − 2·x_r·W[:, j]`
    /// and that value, written to `best[r]` (ties go to the lower `j`; a row whose every value is
    /// NaN gets `(0, +∞)`). With `shift = ‖c_j‖²` and `W = Cᵀ` this is the nearest centroid up to
    /// the row's own `‖x_r‖²`.
    ///
    /// With f32 weights the arg-min is taken in registers as each block of products completes
    /// (12 × 32 with AVX-512F, 6 × 16 with AVX2), so the `rows × n` products are never written:
    /// a block of rows stays in L1 while every panel passes (k-means: all of `W` in L2). With
    /// f16/bf16 weights it is [`Self::matmul`] and a scan.
    pub fn nearest(&self, x: &[f32], rows: usize, shift: &[f32], best: &mut [(u32, f32)]) {
        let (k, n) = (self.k, self.n);
        assert!(x.len() >= rows * k && shift.len() >= n && best.len() >= rows);
        #[cfg(target_arch = "x86_64")]
        if let Panels::F32(w) = &self.panels {
            // SAFETY: AVX-512F is present where `wide`, AVX2 + FMA always (checked in `new`);
            // the sizes are checked above.
            unsafe {
                if self.wide {
                    nearest_wide(w, k, n, x, rows, shift, best);
                } else {
                    nearest_avx2(w, k, n, x, rows, shift, best);
                }
            }
            return;
        }
        // Blocks of rows bound the products kept at once.
        const BLOCK_ROWS: usize = 256;
        let mut z = vec![0f32; BLOCK_ROWS.min(rows) * n];
        for r0 in (0..rows).step_by(BLOCK_ROWS) {
            let m = BLOCK_ROWS.min(rows - r0);
            self.matmul(&x[r0 * k..(r0 + m) * k], m, &mut z, 1);
            for (zr, out) in z.chunks_exact(n.max(1)).zip(&mut best[r0..r0 + m]) {
                let mut b = (0u32, f32::INFINITY);
                for (j, (&dot, &s)) in zr.iter().zip(shift).enumerate() {
                    let v = s - 2.0 * dot;
                    if v < b.1 {
                        b = (j as u32, v);
                    }
                }
                *out = b;
            }
        }
    }

    /// Multiplies panels `p0..p1` with every row block of `xp` (blocks of `ms` rows).
    ///
    /// Every product is one multiply-add chain over `k` in order, whatever the block's rows, so a
    /// row's products do not depend on the rows that share its call (a stream encodes the same
    /// whatever its micro-batches). Blocks of at most 3 rows, too few for enough independent
    /// chains, take twice the columns at once instead (four times for a call of one row).
    #[cfg(target_arch = "x86_64")]
    #[allow(clippy::too_many_arguments)]
    unsafe fn panels_range(
        &self,
        xp: &[f32],
        ms: usize,
        rows: usize,
        p0: usize,
        p1: usize,
        tile: &mut [f32],
        mut take: impl FnMut(usize, usize, &[f32]),
    ) {
        let (k, n) = (self.k, self.n);
        let stride = k * NR;
        let dst = tile.as_mut_ptr();
        // The tile holds panels `t0..p`; it is handed over when full and at the end. Steps of
        // 4, 2 and 1 panels from `t0` meet its 16 panels exactly.
        let mut t0 = p0;
        macro_rules! hand_over {
            ($p:expr) => {
                take(t0 * NR, ($p * NR).min(n) - t0 * NR, &tile[..rows * TILE])
            };
        }
        macro_rules! hand_over_if_full {
            ($p:expr) => {{
                let p: usize = $p;
                if p - t0 == TILE / NR {
                    hand_over!(p);
                    t0 = p;
                }
            }};
        }
        // Columns from panel `q` on, at most `panels` panels of them.
        let cols_from = |q: usize, panels: usize| (panels * NR).min(n - q * NR);
        let mut p = p0;
        if self.wide {
            // Pairs of panels (32 columns) with 16-lane vectors, or four panels for blocks of at
            // most 3 rows; an odd last panel below.
            while p + 1 < p1 {
                let quad = p + 3 < p1;
                for (b, xb) in xp.chunks_exact(k * ms).enumerate() {
                    let r0 = b * ms;
                    let r = ms.min(rows - r0);
                    macro_rules! call {
                        ($r:literal, $v:literal, $q:expr) => {{
                            let q: usize = $q;
                            let out = dst.add(r0 * TILE + (q - t0) * NR);
                            let cols = cols_from(q, $v);
                            run_kernel!(
                                self,
                                wide_f32,
                                wide_half,
                                $r,
                                $v,
                                xb.as_ptr(),
                                ms,
                                q * stride,
                                stride,
                                out,
                                cols
                            )
                        }};
                    }
                    macro_rules! pairs {
                        ($r:literal) => {{
                            call!($r, 2, p);
                            if quad {
                                call!($r, 2, p + 2);
                            }
                        }};
                    }
                    match r {
                        1 if quad => call!(1, 4, p),
                        2 if quad => call!(2, 4, p),
                        3 if quad => call!(3, 4, p),
                        1 => pairs!(1),
                        2 => pairs!(2),
                        3 => pairs!(3),
                        4 => pairs!(4),
                        5 => pairs!(5),
                        6 => pairs!(6),
                        7 => pairs!(7),
                        8 => pairs!(8),
                        9 => pairs!(9),
                        10 => pairs!(10),
                        11 => pairs!(11),
                        _ => pairs!(12),
                    }
                }
                p += if quad { 4 } else { 2 };
                hand_over_if_full!(p);
            }
        }
        // One panel (two 8-lane vectors per row), or two for blocks of at most 3 rows (2 with
        // f16/bf16 weights: 3 rows of two panels leave no register to widen them in). A call of
        // one row (batch 1, bound by reading the weights) takes four: four weight streams at
        // once drew more bytes/s from memory than two on an AMD EPYC (batch-1 encode +10-40 %).
        let half = matches!(self.panels, Panels::Half { .. });
        while p < p1 {
            let pair = p + 1 < p1;
            let quad = rows == 1 && p + 3 < p1;
            for (b, xb) in xp.chunks_exact(k * ms).enumerate() {
                // Sub-blocks of at most MR rows of the `ms`-row block.
                for sub in (0..ms).step_by(MR) {
                    let r0 = b * ms + sub;
                    if r0 >= rows {
                        break;
                    }
                    let xs = xb.as_ptr().add(sub);
                    // A kernel for exactly the rows present: a lone row (batch 1) does 2
                    // multiply-adds per weight pair, not 12, and stays bound by memory.
                    macro_rules! call {
                        ($r:literal, $v:literal, $q:expr) => {{
                            let q: usize = $q;
                            let out = dst.add(r0 * TILE + (q - t0) * NR);
                            let cols = cols_from(q, $v / 2);
                            run_kernel!(
                                self,
                                block_f32,
                                block_half,
                                $r,
                                $v,
                                xs,
                                ms,
                                q * stride,
                                stride,
                                out,
                                cols
                            )
                        }};
                    }
                    macro_rules! panels {
                        ($r:literal) => {{
                            call!($r, 2, p);
                            if pair {
                                call!($r, 2, p + 1);
                            }
                        }};
                    }
                    match MR.min(rows - r0) {
                        1 if quad => call!(1, 8, p),
                        1 if pair => call!(1, 4, p),
                        2 if pair => call!(2, 4, p),
                        3 if pair && !half => call!(3, 4, p),
                        1 => panels!(1),
                        2 => panels!(2),
                        3 => panels!(3),
                        4 => panels!(4),
                        5 => panels!(5),
                        _ => panels!(6),
                    }
                }
            }
            p += if quad {
                4
            } else if pair {
                2
            } else {
                1
            };
            hand_over_if_full!(p);
        }
        if p1 > t0 {
            hand_over!(p1);
        }
    }

    #[cfg(not(target_arch = "x86_64"))]
    #[allow(clippy::too_many_arguments)]
    unsafe fn panels_range(
        &self,
        _: &[f32],
        _: usize,
        _: usize,
        _: usize,
        _: usize,
        _: &mut [f32],
        _: impl FnMut(usize, usize, &[f32]),
    ) {
        unreachable!("packed weights are only built on x86_64")
    }
}

/// True when this CPU has AVX-512F, so the packed kernel uses 16-lane vectors (checked at run
/// time: the default build runs everywhere).
pub fn wide_supported() -> bool {
    if std::env::var_os("NEUROSTREAM_NO_AVX512").is_some() {
        return false; // to compare against the AVX2 kernel on the same machine
    }
    #[cfg(target_arch = "x86_64")]
    {
        std::is_x86_feature_detected!("avx512f")
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

/// True when this CPU runs the packed kernel.
pub fn kernel_supported() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        std::is_x86_feature_detected!("avx2") && std::is_x86_feature_detected!("fma") && std::is_x86_feature_detected!("f16c")
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

/// Columns per tile handed to a [`PackedWeights::matmul_tiles`] epilogue (16 panels): wide
/// enough that the epilogue's cost per row is in its values, not its calls; a 264-row block
/// of it (about 270 KB) stays in L2.
const TILE: usize = 16 * NR;

/// A block of products handed to a [`PackedWeights::matmul_tiles`] epilogue: row `r`, column
/// `col0 + c` of `x @ W` is `values[r * stride + c]`, for `r < rows` and `c < cols`.
pub struct Tile<'a> {
    /// The products, row-major with row stride `stride`.
    pub values: &'a [f32],
    /// Values between the starts of consecutive rows.
    pub stride: usize,
    /// Rows (all rows of the call).
    pub rows: usize,
    /// The first column of `W` in the tile.
    pub col0: usize,
    /// Columns in the tile (at most 256).
    pub cols: usize,
}

/// One step `i` of a block's products: `c[r][v] += x[r] · b[v]` with `xi` pointing at the
/// step's row values and `$v => $load` loading weight vector `v`. With more rows than vectors
/// each weight vector is loaded once and the rows' values broadcast in turn; with fewer, the
/// rows' values are broadcast once and each weight vector loaded in turn: either way few
/// registers beyond the accumulators stay live (AVX2 has 16).
macro_rules! block_step {
    ($c:ident, $xi:expr, $v:ident => $load:expr, $splat:ident, $fma:ident, $zero:expr) => {{
        let xi = $xi;
        if R > V {
            let mut b = [$zero; V];
            for ($v, bv) in b.iter_mut().enumerate() {
                *bv = $load;
            }
            for (r, acc) in $c.iter_mut().enumerate() {
                let a = $splat(*xi.add(r));
                for (av, &bv) in acc.iter_mut().zip(&b) {
                    *av = $fma(a, bv, *av);
                }
            }
        } else {
            let mut a = [$zero; R];
            for (r, ar) in a.iter_mut().enumerate() {
                *ar = $splat(*xi.add(r));
            }
            for $v in 0..V {
                let bv = $load;
                for (acc, &ar) in $c.iter_mut().zip(&a) {
                    acc[$v] = $fma(ar, bv, acc[$v]);
                }
            }
        }
    }};
}

/// One `R` × `8V` block (`R <= 6`; `V` 2, 4 or 8: one, two or four panels) with f32 weights: `xb` is
/// `k × ms` interleaved (row `r` of step `i` at `xb[i * ms + r]`), `w` the first `k × 16` panel
/// and the next `stride` values on; writes `R` rows × `cols` columns at `out` (row stride `ldo`).
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
#[allow(clippy::too_many_arguments)]
unsafe fn block_f32<const R: usize, const V: usize>(
    k: usize,
    xb: *const f32,
    ms: usize,
    w: *const f32,
    stride: usize,
    out: *mut f32,
    ldo: usize,
    cols: usize,
) {
    store_block(&products_block::<R, V>(k, xb, ms, w, stride), out, ldo, cols);
}

/// Where vector `v` (8 lanes) of step `i` lies in panels `stride` values apart.
#[inline(always)]
fn lane_group(v: usize, i: usize, stride: usize) -> usize {
    (v / 2) * stride + i * NR + (v % 2) * 8
}

/// The `R` × `8V` products of [`block_f32`], returned in registers: each is one multiply-add
/// chain over `i` in order.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
#[inline]
unsafe fn products_block<const R: usize, const V: usize>(
    k: usize,
    xb: *const f32,
    ms: usize,
    w: *const f32,
    stride: usize,
) -> [[std::arch::x86_64::__m256; V]; R] {
    use std::arch::x86_64::*;
    let mut c = [[_mm256_setzero_ps(); V]; R];
    for i in 0..k {
        block_step!(c, xb.add(i * ms), v => _mm256_loadu_ps(w.add(lane_group(v, i, stride))), _mm256_set1_ps, _mm256_fmadd_ps, _mm256_setzero_ps());
    }
    c
}

/// As [`block_f32`] with f16 or bf16 weights, widened in registers.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma,f16c")]
#[allow(clippy::too_many_arguments)]
unsafe fn block_half<const R: usize, const V: usize>(
    k: usize,
    xb: *const f32,
    ms: usize,
    w: *const u16,
    stride: usize,
    bf16: bool,
    out: *mut f32,
    ldo: usize,
    cols: usize,
) {
    use std::arch::x86_64::*;
    let mut c = [[_mm256_setzero_ps(); V]; R];
    macro_rules! widen_f16 {
        ($p:expr) => {
            _mm256_cvtph_ps(_mm_loadu_si128($p as *const __m128i))
        };
    }
    macro_rules! widen_bf16 {
        ($p:expr) => {
            _mm256_castsi256_ps(_mm256_slli_epi32(
                _mm256_cvtepu16_epi32(_mm_loadu_si128($p as *const __m128i)),
                16,
            ))
        };
    }
    macro_rules! products {
        ($widen:ident) => {
            for i in 0..k {
                block_step!(c, xb.add(i * ms), v => $widen!(w.add(lane_group(v, i, stride))), _mm256_set1_ps, _mm256_fmadd_ps, _mm256_setzero_ps());
            }
        };
    }
    if bf16 {
        products!(widen_bf16);
    } else {
        products!(widen_f16);
    }
    store_block(&c, out, ldo, cols);
}

/// One `R` × `16V` block (`R <= 12`; `V` 2 or 4 panels) with f32 weights and 16-lane vectors:
/// panels `stride` values apart from `w`; writes `R` rows × `cols` columns at `out` (row
/// stride `ldo`).
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
#[allow(clippy::too_many_arguments)]
unsafe fn wide_f32<const R: usize, const V: usize>(
    k: usize,
    xb: *const f32,
    ms: usize,
    w: *const f32,
    stride: usize,
    out: *mut f32,
    ldo: usize,
    cols: usize,
) {
    store_wide(&products_wide::<R, V>(k, xb, ms, w, stride), out, ldo, cols);
}

/// As [`wide_f32`] with f16 or bf16 weights, widened in registers.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
#[allow(clippy::too_many_arguments)]
unsafe fn wide_half<const R: usize, const V: usize>(
    k: usize,
    xb: *const f32,
    ms: usize,
    w: *const u16,
    stride: usize,
    bf16: bool,
    out: *mut f32,
    ldo: usize,
    cols: usize,
) {
    use std::arch::x86_64::*;
    let mut c = [[_mm512_setzero_ps(); V]; R];
    macro_rules! widen_f16 {
        ($p:expr) => {
            _mm512_cvtph_ps(_mm256_loadu_si256($p as *const __m256i))
        };
    }
    macro_rules! widen_bf16 {
        ($p:expr) => {
            _mm512_castsi512_ps(_mm512_slli_epi32(
                _mm512_cvtepu16_epi32(_mm256_loadu_si256($p as *const __m256i)),
                16,
            ))
        };
    }
    macro_rules! products {
        ($widen:ident) => {
            for i in 0..k {
                block_step!(c, xb.add(i * ms), v => $widen!(w.add(v * stride + i * NR)), _mm512_set1_ps, _mm512_fmadd_ps, _mm512_setzero_ps());
            }
        };
    }
    if bf16 {
        products!(widen_bf16);
    } else {
        products!(widen_f16);
    }
    store_wide(&c, out, ldo, cols);
}

/// [`PackedWeights::nearest`] on AVX-512F with f32 panels: blocks of [`MR_WIDE`] rows packed into
/// an L1-sized buffer, every pair of panels multiplied with them, and each finished 12 × 32
/// block folded into per-row running minima (value and column per lane); one horizontal arg-min
/// per row at the end.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn nearest_wide(w: &[f32], k: usize, n: usize, x: &[f32], rows: usize, shift: &[f32], best: &mut [(u32, f32)]) {
    use std::arch::x86_64::*;
    const R: usize = MR_WIDE;
    let np = n.div_ceil(NR);
    // `shift` padded to whole pairs of panels with +∞, so padded columns never win.
    let mut shift_padded = vec![f32::INFINITY; np.div_ceil(2) * 2 * NR];
    shift_padded[..n].copy_from_slice(&shift[..n]);
    let mut xb = vec![0f32; k * R];
    let lanes = _mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15);
    let two = _mm512_set1_ps(2.0);
    for r0 in (0..rows).step_by(R) {
        let m = R.min(rows - r0);
        interleave_rows(x, k, r0, m, R, &mut xb);
        let mut min_v = [_mm512_set1_ps(f32::INFINITY); R];
        let mut min_j = [_mm512_setzero_si512(); R];
        let mut p = 0;
        while p < np {
            // A lone last panel is paired with itself; its copy's columns have +∞ shifts.
            let stride = if p + 1 < np { k * NR } else { 0 };
            let c = products_wide::<R, 2>(k, xb.as_ptr(), R, w.as_ptr().add(p * k * NR), stride);
            // Shifts and column numbers of the pair's two halves.
            let halves = [p * NR, (p + 1) * NR].map(|col| {
                (
                    _mm512_loadu_ps(shift_padded.as_ptr().add(col)),
                    _mm512_add_epi32(lanes, _mm512_set1_epi32(col as i32)),
                )
            });
            for ((pair, mv), mj) in c.iter().zip(&mut min_v).zip(&mut min_j) {
                for (&acc, &(s, j)) in pair.iter().zip(&halves) {
                    let v = _mm512_fnmadd_ps(two, acc, s);
                    let less = _mm512_cmp_ps_mask::<_CMP_LT_OQ>(v, *mv);
                    *mv = _mm512_mask_mov_ps(*mv, less, v);
                    *mj = _mm512_mask_mov_epi32(*mj, less, j);
                }
            }
            p += 2;
        }
        for r in 0..m {
            let (mut v, mut j) = ([0f32; NR], [0u32; NR]);
            _mm512_storeu_ps(v.as_mut_ptr(), min_v[r]);
            _mm512_storeu_si512(j.as_mut_ptr() as *mut __m512i, min_j[r]);
            best[r0 + r] = lane_argmin(&v, &j);
        }
    }
}

/// [`PackedWeights::nearest`] on AVX2 + FMA with f32 panels: as [`nearest_wide`] with blocks of
/// [`MR`] rows, one 16-column panel at a time, and 8-lane running minima.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn nearest_avx2(w: &[f32], k: usize, n: usize, x: &[f32], rows: usize, shift: &[f32], best: &mut [(u32, f32)]) {
    use std::arch::x86_64::*;
    const R: usize = MR;
    let np = n.div_ceil(NR);
    let mut shift_padded = vec![f32::INFINITY; np * NR];
    shift_padded[..n].copy_from_slice(&shift[..n]);
    let mut xb = vec![0f32; k * R];
    let lanes = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
    let two = _mm256_set1_ps(2.0);
    for r0 in (0..rows).step_by(R) {
        let m = R.min(rows - r0);
        interleave_rows(x, k, r0, m, R, &mut xb);
        let mut min_v = [_mm256_set1_ps(f32::INFINITY); R];
        let mut min_j = [_mm256_setzero_si256(); R];
        for p in 0..np {
            let c = products_block::<R, 2>(k, xb.as_ptr(), R, w.as_ptr().add(p * k * NR), 0);
            let halves = [p * NR, p * NR + 8].map(|col| {
                (
                    _mm256_loadu_ps(shift_padded.as_ptr().add(col)),
                    _mm256_add_epi32(lanes, _mm256_set1_epi32(col as i32)),
                )
            });
            for ((pair, mv), mj) in c.iter().zip(&mut min_v).zip(&mut min_j) {
                for (&acc, &(s, j)) in pair.iter().zip(&halves) {
                    let v = _mm256_fnmadd_ps(two, acc, s);
                    let less = _mm256_cmp_ps::<_CMP_LT_OQ>(v, *mv);
                    *mv = _mm256_blendv_ps(*mv, v, less);
                    *mj = _mm256_castps_si256(_mm256_blendv_ps(_mm256_castsi256_ps(*mj), _mm256_castsi256_ps(j), less));
                }
            }
        }
        for r in 0..m {
            let (mut v, mut j) = ([0f32; 8], [0u32; 8]);
            _mm256_storeu_ps(v.as_mut_ptr(), min_v[r]);
            _mm256_storeu_si256(j.as_mut_ptr() as *mut __m256i, min_j[r]);
            best[r0 + r] = lane_argmin(&v, &j);
        }
    }
}

/// Rows `r0..r0 + m` of `x` (`k` wide) into `xb` interleaved by k (`xb[i * ms + r]`); the
/// block's remaining rows zero.
fn interleave_rows(x: &[f32], k: usize, r0: usize, m: usize, ms: usize, xb: &mut [f32]) {
    if m < ms {
        xb.fill(0.0);
    }
    for r in 0..m {
        for (i, &v) in x[(r0 + r) * k..(r0 + r + 1) * k].iter().enumerate() {
            xb[i * ms + r] = v;
        }
    }
}

/// The smallest of per-lane minima `v` (their columns `j`), ties to the lower column: the
/// first minimum of the row, as a scan would find it.
fn lane_argmin(v: &[f32], j: &[u32]) -> (u32, f32) {
    let mut b = (0u32, f32::INFINITY);
    for (&v, &j) in v.iter().zip(j) {
        if v < b.1 || (v == b.1 && j < b.0) {
            b = (j, v);
        }
    }
    b
}

/// One `R` × `16V` block (`R <= 12`) of products over `V` f32 panels (`stride` values apart from
/// `w`) with 16-lane vectors, returned in registers: `xb` is `k × ms` interleaved (row `r` of
/// step `i` at `xb[i * ms + r]`). Each is one multiply-add chain over `i` in order.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
#[inline]
unsafe fn products_wide<const R: usize, const V: usize>(
    k: usize,
    xb: *const f32,
    ms: usize,
    w: *const f32,
    stride: usize,
) -> [[std::arch::x86_64::__m512; V]; R] {
    use std::arch::x86_64::*;
    let mut c = [[_mm512_setzero_ps(); V]; R];
    for i in 0..k {
        block_step!(c, xb.add(i * ms), v => _mm512_loadu_ps(w.add(v * stride + i * NR)), _mm512_set1_ps, _mm512_fmadd_ps, _mm512_setzero_ps());
    }
    c
}

/// Writes the `R × cols` valid part of a block of 16-lane accumulators (`V` per row).
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn store_wide<const R: usize, const V: usize>(
    c: &[[std::arch::x86_64::__m512; V]; R],
    out: *mut f32,
    ldo: usize,
    cols: usize,
) {
    use std::arch::x86_64::*;
    for (r, row) in c.iter().enumerate() {
        let dst = out.add(r * ldo);
        if cols == V * NR {
            for (v, &acc) in row.iter().enumerate() {
                _mm512_storeu_ps(dst.add(v * NR), acc);
            }
        } else {
            let mut tmp = [0f32; 4 * NR];
            for (v, &acc) in row.iter().enumerate() {
                _mm512_storeu_ps(tmp.as_mut_ptr().add(v * NR), acc);
            }
            std::ptr::copy_nonoverlapping(tmp.as_ptr(), dst, cols);
        }
    }
}

/// Writes the `R × cols` valid part of a block of 8-lane accumulators (`V` per row).
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
unsafe fn store_block<const R: usize, const V: usize>(
    c: &[[std::arch::x86_64::__m256; V]; R],
    out: *mut f32,
    ldo: usize,
    cols: usize,
) {
    use std::arch::x86_64::*;
    for (r, row) in c.iter().enumerate() {
        let dst = out.add(r * ldo);
        if cols == V * 8 {
            for (v, &acc) in row.iter().enumerate() {
                _mm256_storeu_ps(dst.add(v * 8), acc);
            }
        } else {
            let mut tmp = [0f32; 4 * NR];
            for (v, &acc) in row.iter().enumerate() {
                _mm256_storeu_ps(tmp.as_mut_ptr().add(v * 8), acc);
            }
            std::ptr::copy_nonoverlapping(tmp.as_ptr(), dst, cols);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn packed_matmul_equals_float64_on_the_stored_weights() {
        if !kernel_supported() {
            eprintln!("skipped: this CPU lacks AVX2/FMA/F16C (the packed kernel is not used here)");
            return;
        }
        // Neither a multiple of the block sizes; 53 columns fill 4 panels (2 wide pairs, or one
        // AVX2 quad for a lone row, its last panel partial), 40 fill 3 (a pair and a lone
        // panel); 600 and 520 span several 256-column tiles, with thread shares that end inside
        // a pair. Both the 16-lane (where the CPU has it) and the 8-lane kernels.
        for (k, n, wide) in [
            (37, 53, true),
            (37, 40, true),
            (37, 53, false),
            (37, 600, true),
            (37, 520, true),
            (37, 520, false),
        ] {
            if wide && !wide_supported() {
                eprintln!("this CPU lacks AVX-512F: only the AVX2 kernel is checked");
                continue;
            }
            check_packed(k, n, wide);
        }
    }

    /// `nearest` (fused arg-min with AVX-512F and with AVX2, product and scan for f16 weights)
    /// against a float64 scan: the chosen column's float64 value is within 1e-5 (relative) of the float64
    /// minimum, and the reported value equals it within the same bound.
    #[test]
    fn nearest_column_equals_a_float64_scan() {
        if !kernel_supported() {
            eprintln!("skipped: this CPU lacks AVX2/FMA/F16C (the packed kernel is not used here)");
            return;
        }
        // 53 columns: 4 panels (two pairs, the last part padding); 40: a pair and a lone panel.
        for (k, n) in [(37, 53), (37, 40), (64, 16), (5, 300)] {
            let w: Vec<f32> = (0..k * n).map(|i| ((i * 7919 % 1000) as f32 / 500.0 - 1.0) * 0.3).collect();
            let shift: Vec<f32> = (0..n).map(|j| ((j * 13 % 29) as f32) / 29.0).collect();
            // f16 weights take the product-then-scan path; the reference uses the stored values.
            let w16: Vec<f32> = w.iter().map(|&v| half::f16::from_f32(v).to_f32()).collect();
            for (wide, dtype) in [(true, WeightDtype::F32), (false, WeightDtype::F32), (true, WeightDtype::F16)] {
                let w = if dtype == WeightDtype::F16 { &w16 } else { &w };
                let mut packed = PackedWeights::new(w, k, n, dtype).unwrap();
                packed.wide = wide && wide_supported();
                for rows in [1, 5, 12, 13, 30] {
                    let x: Vec<f32> = (0..rows * k).map(|i| ((i * 31 % 17) as f32 - 8.0) / 8.0).collect();
                    let mut best = vec![(u32::MAX, f32::NAN); rows];
                    packed.nearest(&x, rows, &shift, &mut best);
                    for (r, &(j, v)) in best.iter().enumerate() {
                        let value = |j: usize| {
                            shift[j] as f64 - 2.0 * (0..k).map(|i| x[r * k + i] as f64 * w[i * n + j] as f64).sum::<f64>()
                        };
                        let min = (0..n).map(value).fold(f64::INFINITY, f64::min);
                        let tol = 1e-5 * min.abs().max(1.0);
                        assert!((j as usize) < n, "k {k} n {n} rows {rows} row {r}: column {j}");
                        assert!(
                            value(j as usize) - min <= tol,
                            "k {k} n {n} row {r}: column {j} is not the nearest"
                        );
                        assert!((v as f64 - min).abs() <= tol, "k {k} n {n} row {r}: value {v}, float64 {min}");
                    }
                }
            }
        }
    }

    /// A row's products are the same, bit for bit, whatever rows share its call: alone, in
    /// blocks of 2 and 3 rows (the kernels that take more columns at once), in full and partial
    /// blocks, on 1 to 3 threads, with each kernel width and weight type. A stream's micro-batches
    /// (sized by time, cut at checkpoints) must not change what it computes.
    #[test]
    fn products_do_not_depend_on_the_rows_sharing_a_call() {
        if !kernel_supported() {
            eprintln!("skipped: this CPU lacks AVX2/FMA/F16C (the packed kernel is not used here)");
            return;
        }
        // 600 columns: 38 panels (quads, pairs and a lone half-full panel); 40: a pair and a
        // lone panel.
        for (k, n) in [(37, 600), (300, 40)] {
            let w: Vec<f32> = (0..k * n).map(|i| ((i * 7919 % 1000) as f32 / 500.0 - 1.0) * 0.3).collect();
            let rows = 30;
            let x: Vec<f32> = (0..rows * k)
                .map(|i| ((i * 7907 % 1013) as f32 / 500.0 - 1.0) * 1.7)
                .collect();
            for wide in [true, false] {
                if wide && !wide_supported() {
                    continue;
                }
                for dtype in [WeightDtype::F32, WeightDtype::F16, WeightDtype::Bf16] {
                    let mut packed = PackedWeights::new(&w, k, n, dtype).unwrap();
                    packed.wide = wide;
                    let mut all = vec![f32::NAN; rows * n];
                    packed.matmul(&x, rows, &mut all, 1);
                    for (start, len, threads) in [
                        (0, 1, 1),
                        (5, 1, 2),
                        (7, 2, 1),
                        (9, 3, 3),
                        (12, 4, 1),
                        (13, 13, 2),
                        (0, 30, 3),
                    ] {
                        let mut z = vec![f32::NAN; len * n];
                        packed.matmul(&x[start * k..], len, &mut z, threads);
                        for (i, (got, want)) in z.iter().zip(&all[start * n..]).enumerate() {
                            assert_eq!(
                                got.to_bits(),
                                want.to_bits(),
                                "{dtype:?} wide {wide} k {k}: row {} column {} is {got} in a call of {len} rows, {want} in one of {rows}",
                                start + i / n,
                                i % n
                            );
                        }
                    }
                }
            }
        }
    }

    fn check_packed(k: usize, n: usize, wide: bool) {
        let w: Vec<f32> = (0..k * n).map(|i| ((i * 7919 % 1000) as f32 / 500.0 - 1.0) * 0.3).collect();
        for dtype in [WeightDtype::F32, WeightDtype::F16, WeightDtype::Bf16] {
            let stored: Vec<f32> = match dtype {
                WeightDtype::F32 => w.clone(),
                WeightDtype::F16 => w.iter().map(|&v| half::f16::from_f32(v).to_f32()).collect(),
                WeightDtype::Bf16 => w.iter().map(|&v| half::bf16::from_f32(v).to_f32()).collect(),
            };
            let mut packed = PackedWeights::new(&w, k, n, dtype).unwrap();
            packed.wide = wide;
            for (rows, threads) in [(1, 1), (5, 2), (6, 1), (13, 3), (64, 2)] {
                let x: Vec<f32> = (0..rows * k).map(|i| ((i * 31 % 17) as f32 - 8.0) / 8.0).collect();
                let mut z = vec![f32::NAN; rows * n];
                packed.matmul(&x, rows, &mut z, threads);
                for r in 0..rows {
                    for j in 0..n {
                        let want: f64 = (0..k).map(|i| x[r * k + i] as f64 * stored[i * n + j] as f64).sum();
                        let got = z[r * n + j] as f64;
                        assert!(
                            (got - want).abs() <= 1e-5 * want.abs().max(1.0),
                            "{dtype:?} wide {wide} rows {rows} threads {threads} z[{r},{j}] = {got}, float64 {want}"
                        );
                    }
                }
            }
        }
    }
}
