//! Encoder weights stored in 16 bits (f16 or bf16): half the bytes of f32 to stream per token,
//! which is what bounds small batches. This is the portable path, for CPUs without the packed
//! kernel's AVX2/FMA/F16C (`packed.rs` widens in registers there): column blocks of `W_enc` are
//! widened to f32 in a small scratch buffer (the `half` crate's slice conversion) and multiplied
//! there, so no full f32 copy is made per call.

use super::dense::{axpy_columns, gemm_block, split_columns};

/// Columns widened per block: `d_in × COLS` f32 of scratch (288 KB at d_in 576).
const COLS: usize = 128;

/// 16-bit float formats for stored weights.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum WeightDtype {
    /// Single precision (no conversion).
    F32,
    /// IEEE half precision.
    F16,
    /// bfloat16.
    Bf16,
}

/// `W_enc` (`k × n`, row-major) in 16 bits.
#[derive(Clone, Debug)]
pub struct HalfWeights {
    bits: Vec<u16>,
    bf16: bool,
}

impl HalfWeights {
    /// Rounds `w` to `dtype` (F16 or BF16; `None` for F32).
    pub fn new(w: &[f32], dtype: WeightDtype) -> Option<HalfWeights> {
        let bits = match dtype {
            WeightDtype::F32 => return None,
            WeightDtype::F16 => w.iter().map(|&v| half::f16::from_f32(v).to_bits()).collect(),
            WeightDtype::Bf16 => w.iter().map(|&v| half::bf16::from_f32(v).to_bits()).collect(),
        };
        Some(HalfWeights {
            bits,
            bf16: dtype == WeightDtype::Bf16,
        })
    }

    fn widen(&self, src: &[u16], dst: &mut [f32]) {
        use half::slice::{HalfBitsSliceExt, HalfFloatSliceExt};
        if self.bf16 {
            src.reinterpret_cast::<half::bf16>().convert_to_f32_slice(dst);
        } else {
            src.reinterpret_cast::<half::f16>().convert_to_f32_slice(dst);
        }
    }

    /// `z = x @ W` for `x` rows × k, W k × n (these weights), `z` rows × n, on up to `threads` threads.
    pub fn matmul(&self, x: &[f32], rows: usize, k: usize, n: usize, z: &mut [f32], threads: usize) {
        assert!(x.len() >= rows * k && self.bits.len() >= k * n && z.len() >= rows * n);
        let threads = threads.max(1);
        let width = n.div_ceil(threads).next_multiple_of(COLS);
        if threads == 1 || width >= n {
            self.columns(x, rows, k, n, 0, n, z);
            return;
        }
        split_columns(rows, n, threads, COLS, z, |c0, c1, part| {
            self.columns(x, rows, k, n, c0, c1, part)
        });
    }

    /// Columns `c0..c1` of `x @ W` into `out` (rows × (c1 − c0), row-major).
    #[allow(clippy::too_many_arguments)]
    fn columns(&self, x: &[f32], rows: usize, k: usize, n: usize, c0: usize, c1: usize, out: &mut [f32]) {
        let cw = c1 - c0;
        let mut scratch = vec![0f32; k * COLS];
        let mut part = vec![0f32; rows * COLS];
        for b0 in (c0..c1).step_by(COLS) {
            let bw = COLS.min(c1 - b0);
            for i in 0..k {
                self.widen(&self.bits[i * n + b0..i * n + b0 + bw], &mut scratch[i * bw..(i + 1) * bw]);
            }
            let w = &scratch[..k * bw];
            if rows <= 8 {
                axpy_columns(x, w, rows, k, bw, 0, bw, &mut part);
            } else {
                part.resize(rows * bw, 0.0);
                gemm_block(x, w, rows, k, bw, 0, bw, part.as_mut_ptr());
            }
            for r in 0..rows {
                let dst = r * cw + (b0 - c0);
                out[dst..dst + bw].copy_from_slice(&part[r * bw..(r + 1) * bw]);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reference(x: &[f32], w: &[f32], rows: usize, k: usize, n: usize) -> Vec<f64> {
        let mut z = vec![0f64; rows * n];
        for r in 0..rows {
            for i in 0..k {
                for j in 0..n {
                    z[r * n + j] += x[r * k + i] as f64 * w[i * n + j] as f64;
                }
            }
        }
        z
    }

    #[test]
    fn half_weight_matmul_equals_float64_on_the_rounded_weights() {
        let (k, n) = (37, 300);
        let w: Vec<f32> = (0..k * n).map(|i| ((i * 7919 % 1000) as f32 / 500.0 - 1.0) * 0.3).collect();
        for dtype in [WeightDtype::F16, WeightDtype::Bf16] {
            let h = HalfWeights::new(&w, dtype).unwrap();
            let rounded: Vec<f32> = match dtype {
                WeightDtype::F16 => w.iter().map(|&v| half::f16::from_f32(v).to_f32()).collect(),
                _ => w.iter().map(|&v| half::bf16::from_f32(v).to_f32()).collect(),
            };
            for (rows, threads) in [(1, 1), (3, 2), (8, 1), (20, 1), (20, 3)] {
                let x: Vec<f32> = (0..rows * k).map(|i| ((i * 31 % 17) as f32 - 8.0) / 8.0).collect();
                let mut z = vec![0f32; rows * n];
                h.matmul(&x, rows, k, n, &mut z, threads);
                let want = reference(&x, &rounded, rows, k, n);
                for (a, b) in z.iter().zip(&want) {
                    assert!(
                        (*a as f64 - b).abs() <= 1e-5 * b.abs().max(1.0),
                        "{dtype:?} rows {rows}: {a} vs {b}"
                    );
                }
            }
        }
    }
}
