//! CPU kernel of `sae_encode`: a tuned GEMM (the `gemm` crate) for `x' @ W_enc`, then the
//! activation and sparsification per row.

use neurostream_engine::Result;

use super::model::{Activation, Sae};
use super::{Csr, SaeKernels};

/// Rows per GEMM block (bounds the dense `rows × d_sae` scratch).
const BLOCK: usize = 256;

/// The CPU backend.
pub struct CpuSae {
    scale: Vec<f32>,
    shift: Vec<f32>,
    z: Vec<f32>,
    threads: usize,
}

impl CpuSae {
    /// Prepares the per-latent epilogue of `sae`; the GEMM runs on one thread (dataflow workers
    /// provide the parallelism).
    pub fn new(sae: &Sae) -> CpuSae {
        CpuSae::with_threads(sae, 1)
    }

    /// As [`CpuSae::new`], with the GEMM split over `threads` threads (one-shot jobs, benchmarks).
    pub fn with_threads(sae: &Sae, threads: usize) -> CpuSae {
        let (scale, shift) = sae.epilogue();
        CpuSae {
            scale,
            shift,
            z: Vec::new(),
            threads: threads.max(1),
        }
    }
}

/// `z = x @ w` for `x` rows × k and `w` k × n, row-major, on `threads` threads.
pub fn matmul(x: &[f32], w: &[f32], rows: usize, k: usize, n: usize, z: &mut [f32], threads: usize) {
    // SAFETY: all three matrices are dense row-major with the stated shapes (checked by the slices' lengths).
    assert!(x.len() >= rows * k && w.len() >= k * n && z.len() >= rows * n);
    unsafe {
        gemm::gemm(
            rows,
            n,
            k,
            z.as_mut_ptr(),
            1,
            n as isize,
            false,
            x.as_ptr(),
            1,
            k as isize,
            w.as_ptr(),
            1,
            n as isize,
            0.0,
            1.0,
            false,
            false,
            false,
            if threads > 1 { gemm::Parallelism::Rayon(threads) } else { gemm::Parallelism::None },
        );
    }
}

/// Appends row's nonzero `(id, value)` pairs sorted by value, largest first (ties by id).
pub(crate) fn push_sorted(csr: &mut Csr, entries: &mut [(u32, f32)]) {
    entries.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
    for &(i, v) in entries.iter() {
        csr.ids.push(i);
        csr.values.push(v);
    }
    csr.offsets.push(csr.ids.len() as u32);
}

impl SaeKernels for CpuSae {
    fn encode(&mut self, sae: &Sae, input: &[f32], rows: usize) -> Result<Csr> {
        let (d_in, n) = (sae.d_in, sae.d_sae);
        let mut csr = Csr::with_rows(rows);
        let mut entries: Vec<(u32, f32)> = Vec::new();
        let mut order: Vec<u32> = Vec::new();
        for start in (0..rows).step_by(BLOCK) {
            let m = BLOCK.min(rows - start);
            self.z.resize(m * n, 0.0);
            matmul(&input[start * d_in..(start + m) * d_in], &sae.w_enc, m, d_in, n, &mut self.z, self.threads);
            for r in 0..m {
                let z = &self.z[r * n..(r + 1) * n];
                let h: Vec<f32> = z
                    .iter()
                    .zip(&self.scale)
                    .zip(&self.shift)
                    .map(|((z, s), b)| s * z + b)
                    .collect();
                entries.clear();
                let positive = |(j, v): (usize, &f32)| (*v > 0.0).then_some((j as u32, *v));
                match &sae.activation {
                    Activation::Relu => entries.extend(h.iter().enumerate().filter_map(positive)),
                    Activation::JumpRelu { threshold } => entries.extend(
                        h.iter()
                            .zip(threshold)
                            .enumerate()
                            .filter(|(_, (v, t))| v > t)
                            .filter_map(|(j, (v, _))| positive((j, v))),
                    ),
                    Activation::Gated { b_gate, .. } => entries.extend(
                        h.iter()
                            .zip(z.iter().zip(b_gate))
                            .enumerate()
                            .filter(|(_, (_, (z, g)))| *z + *g > 0.0)
                            .filter_map(|(j, (v, _))| positive((j, v))),
                    ),
                    Activation::TopK { k } => {
                        order.clear();
                        order.extend(0..n as u32);
                        let by_value = |a: &u32, b: &u32| h[*b as usize].total_cmp(&h[*a as usize]).then(a.cmp(b));
                        if *k < n {
                            order.select_nth_unstable_by(*k - 1, by_value);
                        }
                        entries.extend(order[..*k].iter().filter_map(|&j| positive((j as usize, &h[j as usize]))));
                    }
                }
                push_sorted(&mut csr, &mut entries);
            }
        }
        Ok(csr)
    }
}
