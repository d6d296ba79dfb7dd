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
                top_k(zr, scale, shift, *k, &mut entries);
                entries.retain(|e| e.1 > 0.0);
            }
        }
        push_sorted(&mut csr, &mut entries);
    }
    csr
}

/// The `k` largest values of `h = scale · z + shift` with their ids (ties: lower id),
/// unordered, into `out`.
///
/// The k kept are a binary heap whose root is the one that ranks lowest, so a value that beats
/// it costs a sift of log k steps (a scan of all k took most of the selection's time). `h` is
/// computed 16 values at a time and a block is offered value by value only when one of its
/// values beats the root: after the first few hundred latents that is rare. Together they
/// took the selection from 18 % of a 4096-token encode at d_sae 16384 to 12.5 % (perf), most
/// of what is left reading the pre-activations back from L3.
fn top_k(z: &[f32], scale: &[f32], shift: &[f32], k: usize, out: &mut Vec<(u32, f32)>) {
    const BLOCK: usize = 16;
    let n = z.len();
    let h = |j: usize| scale[j] * z[j] + shift[j];
    out.extend((0..k.min(n)).map(|j| (j as u32, h(j))));
    if out.is_empty() {
        return;
    }
    for i in (0..out.len() / 2).rev() {
        sift_down(out, i);
    }
    // Later ids lose ties, so only a value strictly above the root enters.
    let offer = |out: &mut Vec<(u32, f32)>, j: usize, v: f32| {
        if v > out[0].1 {
            out[0] = (j as u32, v);
            sift_down(out, 0);
        }
    };
    let mut j0 = k.min(n);
    let mut block = [0f32; BLOCK];
    while j0 + BLOCK <= n {
        let threshold = out[0].1;
        let (zs, ss, bs) = (&z[j0..j0 + BLOCK], &scale[j0..j0 + BLOCK], &shift[j0..j0 + BLOCK]);
        let mut hit = false;
        for (((v, zv), s), b) in block.iter_mut().zip(zs).zip(ss).zip(bs) {
            *v = s * zv + b;
            hit |= *v > threshold;
        }
        if hit {
            for (l, &v) in block.iter().enumerate() {
                offer(out, j0 + l, v);
            }
        }
        j0 += BLOCK;
    }
    for j in j0..n {
        offer(out, j, h(j));
    }
}

/// Restores the heap below `i` in `heap`, whose root ranks lowest under (value desc, id asc).
fn sift_down(heap: &mut [(u32, f32)], mut i: usize) {
    // `worse(a, b)`: a ranks below b.
    let worse = |a: &(u32, f32), b: &(u32, f32)| a.1 < b.1 || (a.1 == b.1 && a.0 > b.0);
    loop {
        let mut lowest = i;
        for child in [2 * i + 1, 2 * i + 2] {
            if child < heap.len() && worse(&heap[child], &heap[lowest]) {
                lowest = child;
            }
        }
        if lowest == i {
            return;
        }
        heap.swap(i, lowest);
        i = lowest;
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

#[cfg(test)]
mod tests {
    use super::*;

    /// The selection equals a full sort by (value desc, id asc) cut at k: ties (many equal
    /// values), lengths around the 16-value blocks, k above the length, and values that rise
    /// along the row (every block beats the kept ones) or fall (none does).
    #[test]
    fn top_k_equals_a_sort_with_ties_to_the_lower_id() {
        let mut seed = 0x2545_f491_4f6c_dd1du64;
        let mut next = move || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed
        };
        for n in [0usize, 1, 5, 15, 16, 17, 31, 33, 100, 1000] {
            for k in [1usize, 3, 16, 32, 40] {
                for pattern in 0..4 {
                    let z: Vec<f32> = (0..n)
                        .map(|j| match pattern {
                            0 => (next() % 1000) as f32 / 100.0 - 5.0,
                            1 => (next() % 4) as f32, // many ties
                            2 => j as f32,            // rising
                            _ => -(j as f32),         // falling
                        })
                        .collect();
                    let scale: Vec<f32> = (0..n).map(|j| 1.0 + (j % 3) as f32 * 0.5).collect();
                    let shift: Vec<f32> = (0..n).map(|j| (j % 5) as f32 * 0.25 - 0.5).collect();
                    let mut want: Vec<(u32, f32)> = (0..n).map(|j| (j as u32, scale[j] * z[j] + shift[j])).collect();
                    want.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
                    want.truncate(k);
                    let mut got = Vec::new();
                    top_k(&z, &scale, &shift, k, &mut got);
                    got.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
                    assert_eq!(got, want, "n {n}, k {k}, pattern {pattern}");
                }
            }
        }
    }
}
