//! CPU kernel of `sae_encode`: `x' @ W_enc` by the packed-panel kernel (`packed.rs`, AVX2 + FMA)
//! or, on CPUs without it, a tuned GEMM (the `gemm` crate); then the activation and
//! sparsification per row.

use neurostream_engine::Result;

use super::dense::matmul;
use super::half_weights::WeightDtype;
use super::model::{Activation, Sae};
use super::packed::PackedWeights;
use super::{Csr, SaeKernels};

/// Rows per GEMM block (bounds the dense `rows × d_sae` scratch).
const BLOCK: usize = 256;

/// `W_enc` prepared for the CPU kernels once per operator and shared by its workers (cheap to
/// clone): column panels for the packed kernel where the CPU runs it, else 16-bit rows for the
/// portable path when a 16-bit dtype is asked for (f32 then uses the SAE's own weights).
#[derive(Clone, Default)]
pub struct CpuWeights {
    packed: Option<std::sync::Arc<PackedWeights>>,
    half: Option<std::sync::Arc<super::half_weights::HalfWeights>>,
}

impl CpuWeights {
    /// Prepares `sae.w_enc` stored as `dtype`.
    pub fn prepare(sae: &Sae, dtype: WeightDtype) -> CpuWeights {
        let packed = PackedWeights::new(&sae.w_enc, sae.d_in, sae.d_sae, dtype).map(std::sync::Arc::new);
        let half = match packed {
            Some(_) => None,
            None => super::half_weights::HalfWeights::new(&sae.w_enc, dtype).map(std::sync::Arc::new),
        };
        CpuWeights { packed, half }
    }
}

/// The CPU backend.
pub struct CpuSae {
    scale: Vec<f32>,
    shift: Vec<f32>,
    z: Vec<f32>,
    threads: usize,
    weights: CpuWeights,
}

impl CpuSae {
    /// Prepares the per-latent epilogue of `sae`; the GEMM runs on one thread (dataflow workers
    /// provide the parallelism).
    pub fn new(sae: &Sae) -> CpuSae {
        CpuSae::with_threads(sae, 1)
    }

    /// As [`CpuSae::new`], with the GEMM split over `threads` threads (one-shot jobs, benchmarks).
    pub fn with_threads(sae: &Sae, threads: usize) -> CpuSae {
        CpuSae::with_weights(sae, threads, CpuWeights::prepare(sae, WeightDtype::F32))
    }

    /// A kernel on `threads` threads using weights already prepared (shared between workers).
    pub fn with_weights(sae: &Sae, threads: usize, weights: CpuWeights) -> CpuSae {
        let (scale, shift) = sae.epilogue();
        CpuSae {
            scale,
            shift,
            z: Vec::new(),
            threads: threads.max(1),
            weights,
        }
    }

    /// Stores `W_enc` as `dtype` (f16 or bf16 halve the bytes streamed per token; f32 keeps it).
    pub fn with_weight_dtype(mut self, sae: &Sae, dtype: WeightDtype) -> CpuSae {
        self.weights = CpuWeights::prepare(sae, dtype);
        self
    }
}

/// Appends row's nonzero `(id, value)` pairs sorted by value, largest first (ties by id).
pub(crate) fn push_sorted(csr: &mut Csr, entries: &mut [(u32, f32)]) {
    entries.sort_unstable_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
    for &(i, v) in entries.iter() {
        csr.ids.push(i);
        csr.values.push(v);
    }
    csr.offsets.push(csr.ids.len() as u32);
}

/// The activation and sparsification of `z` (rows × d_sae), as CSR rows.
fn sparsify_rows(sae: &Sae, scale: &[f32], shift: &[f32], z: &[f32]) -> Csr {
    let n = sae.d_sae;
    let rows = z.len() / n;
    let mut csr = Csr::with_rows(rows);
    let mut h = vec![0f32; n];
    let mut entries: Vec<(u32, f32)> = Vec::new();
    for zr in z.chunks_exact(n) {
        entries.clear();
        // One pass per row: the affine epilogue fused with the test, so nothing dense is
        // written back for the sparse activations (most latents are rejected).
        match &sae.activation {
            Activation::Relu => {
                for (j, ((zv, s), b)) in zr.iter().zip(scale).zip(shift).enumerate() {
                    let v = s * zv + b;
                    if v > 0.0 {
                        entries.push((j as u32, v));
                    }
                }
            }
            Activation::JumpRelu { threshold } => {
                for (j, (((zv, s), b), t)) in zr.iter().zip(scale).zip(shift).zip(threshold).enumerate() {
                    let v = s * zv + b;
                    if v > *t && v > 0.0 {
                        entries.push((j as u32, v));
                    }
                }
            }
            Activation::Gated { b_gate, .. } => {
                for (j, (((zv, s), b), g)) in zr.iter().zip(scale).zip(shift).zip(b_gate).enumerate() {
                    let v = s * zv + b;
                    if zv + g > 0.0 && v > 0.0 {
                        entries.push((j as u32, v));
                    }
                }
            }
            Activation::TopK { k } => {
                for ((hv, zv), (s, b)) in h.iter_mut().zip(zr).zip(scale.iter().zip(shift)) {
                    *hv = s * zv + b;
                }
                top_k(&h, *k, &mut entries);
                entries.retain(|e| e.1 > 0.0);
            }
        }
        push_sorted(&mut csr, &mut entries);
    }
    csr
}

/// The `k` largest values of `h` with their ids (ties: lower id), unordered, into `out`.
fn top_k(h: &[f32], k: usize, out: &mut Vec<(u32, f32)>) {
    out.extend(h.iter().take(k).enumerate().map(|(j, &v)| (j as u32, v)));
    // `worse(a, b)`: a ranks below b under (value desc, id asc).
    let worse = |a: &(u32, f32), b: &(u32, f32)| a.1 < b.1 || (a.1 == b.1 && a.0 > b.0);
    let find_worst = |out: &[(u32, f32)]| {
        (0..out.len())
            .reduce(|a, b| if worse(&out[b], &out[a]) { b } else { a })
            .unwrap_or(0)
    };
    let mut worst = find_worst(out);
    for (j, &v) in h.iter().enumerate().skip(k) {
        if v > out[worst].1 {
            out[worst] = (j as u32, v);
            worst = find_worst(out);
        }
    }
}

impl SaeKernels for CpuSae {
    fn encode(&mut self, sae: &Sae, input: &[f32], rows: usize) -> Result<Csr> {
        let (d_in, n) = (sae.d_in, sae.d_sae);
        let mut csr = Csr::with_rows(rows);
        for start in (0..rows).step_by(BLOCK) {
            let m = BLOCK.min(rows - start);
            self.z.resize(m * n, 0.0);
            let x = &input[start * d_in..(start + m) * d_in];
            match (&self.weights.packed, &self.weights.half) {
                (Some(p), _) => p.matmul(x, m, &mut self.z, self.threads),
                (None, Some(h)) => h.matmul(x, m, d_in, n, &mut self.z, self.threads),
                (None, None) => matmul(x, &sae.w_enc, m, d_in, n, &mut self.z, self.threads),
            }
            let per = m.div_ceil(self.threads);
            let (scale, shift, z) = (&self.scale, &self.shift, &self.z);
            if self.threads == 1 || m < 2 {
                csr.append(sparsify_rows(sae, scale, shift, z));
            } else {
                let parts: Vec<Csr> = std::thread::scope(|s| {
                    let handles: Vec<_> = z
                        .chunks(per * n)
                        .map(|zc| s.spawn(move || sparsify_rows(sae, scale, shift, zc)))
                        .collect();
                    handles.into_iter().map(|h| h.join().expect("encode thread")).collect()
                });
                for p in parts {
                    csr.append(p);
                }
            }
        }
        Ok(csr)
    }
}
