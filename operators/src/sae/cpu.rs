//! CPU kernel of `sae_encode`: `x' @ W_enc` by the packed-panel kernel (`packed.rs`, AVX2 + FMA
//! or AVX-512), with the activation and sparsification (`select.rs`) taking each tile of
//! products while it is in cache; on CPUs without it, a tuned GEMM (the `gemm` crate) and the
//! same selection over the dense block.

use neurostream_engine::Result;

use super::dense::matmul;
use super::half_weights::WeightDtype;
use super::model::Sae;
use super::packed::PackedWeights;
use super::select::RowSelection;
use super::{Csr, SaeKernels};

/// Rows per GEMM block (bounds the selection's state, and the dense `rows × d_sae` products
/// of the kernels without tiles).
///
/// A multiple of the packed kernel's row blocks (12 rows with AVX-512, 6 with AVX2): with 256,
/// every block ended in a 4-row remainder that cost as much as a full 12-row block (2 % of a
/// 4096-row encode).
const BLOCK: usize = 264;

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

impl SaeKernels for CpuSae {
    fn encode(&mut self, sae: &Sae, input: &[f32], rows: usize) -> Result<Csr> {
        let (d_in, n) = (sae.d_in, sae.d_sae);
        let activation = &sae.activation;
        let (scale, shift) = (&self.scale, &self.shift);
        let mut csr = Csr::with_rows(rows);
        for start in (0..rows).step_by(BLOCK) {
            let m = BLOCK.min(rows - start);
            let x = &input[start * d_in..(start + m) * d_in];
            let parts = match &self.weights.packed {
                // The selection takes each 256-column tile of products from cache on the thread
                // that computed it: the block's dense products are never written.
                Some(p) => p.matmul_tiles(
                    x,
                    m,
                    self.threads,
                    || RowSelection::new(m),
                    |selection, tile| selection.offer(activation, scale, shift, tile.values, tile.stride, tile.col0, tile.cols),
                    |mut selection| {
                        selection.finish(activation);
                        selection
                    },
                ),
                None => {
                    self.z.resize(m * n, 0.0);
                    match &self.weights.half {
                        Some(h) => h.matmul(x, m, d_in, n, &mut self.z, self.threads),
                        None => matmul(x, &sae.w_enc, m, d_in, n, &mut self.z, self.threads),
                    }
                    let mut selection = RowSelection::new(m);
                    selection.offer(activation, scale, shift, &self.z, n, 0, n);
                    selection.finish(activation);
                    vec![selection]
                }
            };
            RowSelection::append(&parts, activation, &mut csr, self.threads);
        }
        Ok(csr)
    }
}
