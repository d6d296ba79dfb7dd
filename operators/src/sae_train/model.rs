//! The trainable SAE: parameters, the loss of one mini-batch, and its exact gradients.
//!
//! Notation: `d` = `d_in`, `m` = `d_sae`, `B` rows per batch, inputs already scaled. Encode
//! `h = (x − b_dec)·W_encᵀ + b_enc` (one GEMM, the only dense product), then per architecture:
//!
//! - **TopK**: `a = relu(h)` on each row's `k` largest `h`, 0 elsewhere.
//! - **BatchTopK**: `a = relu(h)` on the batch's `k·B` largest `h`.
//! - **ReLU**: `a = relu(h)`; penalty `λ · mean_b Σ_j a_bj ‖W_dec[j]‖` (decoder norm folded in).
//! - **JumpReLU**: `a = h · H(h − θ)`, `θ = exp(log θ)`; penalty `λ · mean_b L0_b`. `θ` learns
//!   through the straight-through estimator of Rajamanoharan et al. (2024) with a rectangle
//!   kernel of width `ε`: ∂a/∂θ = −(θ/ε)·K((h−θ)/ε), ∂L0/∂θ = −(1/ε)·K((h−θ)/ε).
//!
//! Decode `x̂ = a·W_dec + b_dec`; reconstruction loss `mean_b ‖x̂_b − x_b‖²`. TopK and BatchTopK
//! add `aux_coef ·` AuxK (Gao et al. 2024): the top `k_aux` pre-activations among dead latents
//! reconstruct the residual `x − x̂` (treated as a constant), `mean_b ‖e_b‖²`.
//!
//! Everything after the GEMM is sparse: each row touches only its active (and, for JumpReLU,
//! near-threshold; for AuxK, chosen dead) latents, so the backward pass costs `O(B·nnz·d)`.
//! Accumulation is float32 on the CPU; the test compares one step with a float64 numpy
//! transcription (`tests/python/sae_train_reference.py`).

use serde::{Deserialize, Serialize};

/// The training architectures.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "architecture", rename_all = "lowercase")]
pub enum TrainArch {
    /// `k` largest per row.
    TopK {
        /// Active latents per token.
        k: usize,
    },
    /// `k·B` largest per batch; a global threshold for inference.
    BatchTopK {
        /// Mean active latents per token.
        k: usize,
    },
    /// ReLU with a decoder-norm-weighted L1 penalty.
    Relu {
        /// L1 coefficient λ.
        l1_coefficient: f32,
    },
    /// JumpReLU with an L0 penalty and a learned threshold per latent.
    JumpRelu {
        /// L0 coefficient λ.
        l0_coefficient: f32,
        /// Kernel width ε of the straight-through estimator.
        bandwidth: f32,
        /// Initial threshold.
        init_threshold: f32,
    },
}

impl TrainArch {
    /// Whether AuxK applies (TopK-style architectures).
    pub fn uses_auxk(&self) -> bool {
        matches!(self, TrainArch::TopK { .. } | TrainArch::BatchTopK { .. })
    }
    /// Whether decoder rows are kept at unit norm (all but ReLU, whose penalty carries the norm).
    pub fn unit_norm_decoder(&self) -> bool {
        !matches!(self, TrainArch::Relu { .. })
    }
}

/// The parameters, row-major: `w_enc` is `m × d` (row `j` = latent `j`'s encoder vector),
/// `w_dec` is `m × d`.
#[derive(Clone, Debug, PartialEq)]
pub struct Params {
    /// Input width.
    pub d: usize,
    /// Latents.
    pub m: usize,
    /// Encoder, `m × d`.
    pub w_enc: Vec<f32>,
    /// Encoder bias, `m`.
    pub b_enc: Vec<f32>,
    /// Decoder, `m × d`.
    pub w_dec: Vec<f32>,
    /// Decoder bias, `d`.
    pub b_dec: Vec<f32>,
    /// JumpReLU: log thresholds, `m` (empty otherwise).
    pub log_threshold: Vec<f32>,
}

/// Gradients of the loss with respect to every parameter (same shapes as [`Params`]).
#[derive(Clone, Debug, Default)]
pub struct Grads {
    /// ∂L/∂W_enc.
    pub w_enc: Vec<f32>,
    /// ∂L/∂b_enc.
    pub b_enc: Vec<f32>,
    /// ∂L/∂W_dec.
    pub w_dec: Vec<f32>,
    /// ∂L/∂b_dec.
    pub b_dec: Vec<f32>,
    /// ∂L/∂log θ (JumpReLU).
    pub log_threshold: Vec<f32>,
}

impl Grads {
    fn zeroed(p: &Params) -> Grads {
        Grads {
            w_enc: vec![0.0; p.m * p.d],
            b_enc: vec![0.0; p.m],
            w_dec: vec![0.0; p.m * p.d],
            b_dec: vec![0.0; p.d],
            log_threshold: vec![0.0; p.log_threshold.len()],
        }
    }
}

/// What one batch's forward pass measured.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct BatchStats {
    /// Total loss.
    pub loss: f64,
    /// Reconstruction part, `mean_b ‖x̂_b − x_b‖²`.
    pub mse: f64,
    /// Auxiliary (AuxK) part, before its coefficient.
    pub aux: f64,
    /// Sparsity penalty part, after its coefficient.
    pub penalty: f64,
    /// Fraction of variance unexplained (against the batch mean).
    pub fvu: f64,
    /// Mean active latents per token.
    pub l0: f64,
    /// BatchTopK: the smallest activation kept (the inference threshold's sample).
    pub min_kept: f32,
}

/// Loss settings that are not parameters.
#[derive(Clone, Copy, Debug)]
pub struct LossSettings {
    /// The architecture.
    pub arch: TrainArch,
    /// AuxK coefficient (1/32 in Gao et al.).
    pub aux_coef: f32,
    /// Latents AuxK may use per token.
    pub k_aux: usize,
}

/// One row's active latents: `(latent, activation)`.
type Active = Vec<(u32, f32)>;

/// Computes the loss of `x` (`rows × d`, scaled) and its gradients; `dead[j]` marks latents
/// AuxK may use. Returns the gradients, the stats and each latent's firings in the batch.
/// `threads` splits the encoder GEMM.
pub fn loss_and_grads(
    p: &Params,
    s: &LossSettings,
    x: &[f32],
    rows: usize,
    dead: &[bool],
    threads: usize,
) -> (Grads, BatchStats, Vec<u32>) {
    let (d, m) = (p.d, p.m);
    assert_eq!(x.len(), rows * d, "batch is rows x d_in");
    let bf = rows as f32;
    // Encoder: h = (x − b_dec)·W_encᵀ + b_enc.
    let mut xc = x.to_vec();
    for row in xc.chunks_exact_mut(d) {
        for (v, b) in row.iter_mut().zip(&p.b_dec) {
            *v -= b;
        }
    }
    let mut h = vec![0f32; rows * m];
    encoder_gemm(&xc, &p.w_enc, rows, d, m, &mut h, threads);
    for row in h.chunks_exact_mut(m) {
        for (v, b) in row.iter_mut().zip(&p.b_enc) {
            *v += b;
        }
    }
    let mut stats = BatchStats::default();
    let thetas: Vec<f32> = p.log_threshold.iter().map(|v| v.exp()).collect();
    let active = select_active(&s.arch, &h, rows, m, &thetas, &mut stats);

    let mut g = Grads::zeroed(p);
    // g_h per row: (latent, ∂L/∂h) pairs, accumulated from every loss term.
    let mut g_h: Vec<Vec<(u32, f32)>> = vec![Vec::new(); rows];
    let dec_norm: Vec<f32> = match s.arch {
        TrainArch::Relu { .. } => p.w_dec.chunks_exact(d).map(norm).collect(),
        _ => Vec::new(),
    };
    let mut xh = vec![0f32; d];
    let mut gx = vec![0f32; d];
    let total_sq = total_variance(x, rows, d);
    let mut e = vec![0f32; d];
    for b in 0..rows {
        let xb = &x[b * d..(b + 1) * d];
        xh.copy_from_slice(&p.b_dec);
        for &(j, a) in &active[b] {
            axpy(a, &p.w_dec[j as usize * d..(j as usize + 1) * d], &mut xh);
        }
        let mut sq = 0f64;
        for i in 0..d {
            let err = xh[i] - xb[i];
            sq += (err as f64) * (err as f64);
            gx[i] = 2.0 * err / bf;
        }
        stats.mse += sq / rows as f64;
        // ∂L/∂x̂ flows to b_dec, to the active decoder rows, and to their activations.
        for (gb, v) in g.b_dec.iter_mut().zip(&gx) {
            *gb += v;
        }
        for &(j, a) in &active[b] {
            let wj = &p.w_dec[j as usize * d..(j as usize + 1) * d];
            let ga = dot(&gx, wj);
            axpy(a, &gx, &mut g.w_dec[j as usize * d..(j as usize + 1) * d]);
            let mut gh = ga;
            if let TrainArch::Relu { l1_coefficient } = s.arch {
                let nj = dec_norm[j as usize];
                gh += l1_coefficient / bf * nj;
                if nj > 0.0 {
                    axpy(
                        l1_coefficient / bf * a / nj,
                        wj,
                        &mut g.w_dec[j as usize * d..(j as usize + 1) * d],
                    );
                }
                stats.penalty += (l1_coefficient * a * nj) as f64 / rows as f64;
            }
            g_h[b].push((j, gh));
        }
        if let TrainArch::JumpRelu {
            l0_coefficient,
            bandwidth,
            ..
        } = s.arch
        {
            stats.penalty += (l0_coefficient * active[b].len() as f32) as f64 / rows as f64;
            // θ's pseudo-gradient from every latent within ε/2 of its threshold, active or not.
            let hb = &h[b * m..(b + 1) * m];
            for j in 0..m {
                let theta = thetas[j];
                if (hb[j] - theta).abs() < bandwidth / 2.0 {
                    let ga = dot(&gx, &p.w_dec[j * d..(j + 1) * d]);
                    let g_theta = ga * (-theta / bandwidth) + l0_coefficient / bf * (-1.0 / bandwidth);
                    g.log_threshold[j] += g_theta * theta;
                }
            }
        }
        // AuxK: dead latents reconstruct the residual x − x̂ (a constant here).
        if s.arch.uses_auxk() && s.k_aux > 0 && dead.iter().any(|&v| v) {
            let hb = &h[b * m..(b + 1) * m];
            let aux = top_dead(hb, dead, s.k_aux);
            if !aux.is_empty() {
                for i in 0..d {
                    e[i] = xh[i] - xb[i]; // = −(x − x̂)
                }
                for &(j, a) in &aux {
                    axpy(a, &p.w_dec[j as usize * d..(j as usize + 1) * d], &mut e);
                }
                stats.aux += e.iter().map(|&v| (v as f64) * (v as f64)).sum::<f64>() / rows as f64;
                let c = 2.0 * s.aux_coef / bf;
                for &(j, a) in &aux {
                    let row = j as usize * d..(j as usize + 1) * d;
                    let ga = c * dot(&e, &p.w_dec[row.clone()]);
                    axpy(a * c, &e, &mut g.w_dec[row]);
                    g_h[b].push((j, ga));
                }
            }
        }
    }
    // Encoder gradients from ∂L/∂h: W_enc rows, b_enc, and b_dec through x − b_dec.
    let mut col_sum = vec![0f32; m];
    for (b, list) in g_h.iter().enumerate() {
        let xcb = &xc[b * d..(b + 1) * d];
        for &(j, gh) in list {
            axpy(gh, xcb, &mut g.w_enc[j as usize * d..(j as usize + 1) * d]);
            g.b_enc[j as usize] += gh;
            col_sum[j as usize] += gh;
        }
    }
    for (j, &cs) in col_sum.iter().enumerate() {
        if cs != 0.0 {
            axpy(-cs, &p.w_enc[j * d..(j + 1) * d], &mut g.b_dec);
        }
    }
    stats.loss = stats.mse + s.aux_coef as f64 * stats.aux + stats.penalty;
    stats.fvu = if total_sq > 0.0 {
        stats.mse * rows as f64 / total_sq
    } else {
        0.0
    };
    stats.l0 = active.iter().map(|a| a.len()).sum::<usize>() as f64 / rows as f64;
    let mut fires = vec![0u32; m];
    for &(j, _) in active.iter().flatten() {
        fires[j as usize] += 1;
    }
    (g, stats, fires)
}

/// `Σ_b ‖x_b − mean‖²` of `x` (`rows × d`): the denominator of the FVU.
pub fn total_variance(x: &[f32], rows: usize, d: usize) -> f64 {
    let mut mean = vec![0f64; d];
    for r in x.chunks_exact(d) {
        for (m, &v) in mean.iter_mut().zip(r) {
            *m += v as f64;
        }
    }
    mean.iter_mut().for_each(|m| *m /= rows.max(1) as f64);
    x.chunks_exact(d)
        .map(|r| r.iter().zip(&mean).map(|(&v, m)| (v as f64 - m).powi(2)).sum::<f64>())
        .sum()
}

/// The active latents of every row under `arch`.
fn select_active(arch: &TrainArch, h: &[f32], rows: usize, m: usize, thetas: &[f32], stats: &mut BatchStats) -> Vec<Active> {
    match *arch {
        TrainArch::TopK { k } => h.chunks_exact(m).map(|r| top_positive(r, k)).collect(),
        TrainArch::BatchTopK { k } => {
            // The batch's k·B largest positive pre-activations.
            let want = (k * rows).min(h.len());
            let mut vals: Vec<f32> = h.iter().copied().filter(|&v| v > 0.0).collect();
            let cut = if vals.len() > want {
                let at = vals.len() - want;
                let (_, nth, _) = vals.select_nth_unstable_by(at, |a, b| a.total_cmp(b));
                *nth
            } else {
                f32::MIN_POSITIVE
            };
            let mut kept = 0usize;
            let out: Vec<Active> = h
                .chunks_exact(m)
                .map(|r| {
                    r.iter()
                        .enumerate()
                        .filter(|(_, &v)| v > 0.0 && v >= cut)
                        .map(|(j, &v)| (j as u32, v))
                        .collect::<Active>()
                })
                .inspect(|a| kept += a.len())
                .collect();
            stats.min_kept = if kept > 0 { cut.max(0.0) } else { 0.0 };
            out
        }
        TrainArch::Relu { .. } => h
            .chunks_exact(m)
            .map(|r| {
                r.iter()
                    .enumerate()
                    .filter(|(_, &v)| v > 0.0)
                    .map(|(j, &v)| (j as u32, v))
                    .collect()
            })
            .collect(),
        TrainArch::JumpRelu { .. } => h
            .chunks_exact(m)
            .map(|r| {
                r.iter()
                    .zip(thetas)
                    .enumerate()
                    .filter(|(_, (&v, &t))| v > t && v > 0.0)
                    .map(|(j, (&v, _))| (j as u32, v))
                    .collect()
            })
            .collect(),
    }
}

/// The `k` largest values of `row` that are > 0 (ties: lower index), sorted by latent.
pub fn top_positive(row: &[f32], k: usize) -> Active {
    let mut idx: Vec<u32> = (0..row.len() as u32).collect();
    let k = k.min(row.len());
    if k == 0 {
        return Vec::new();
    }
    let cmp = |a: &u32, b: &u32| row[*b as usize].total_cmp(&row[*a as usize]).then(a.cmp(b));
    idx.select_nth_unstable_by(k - 1, cmp);
    let mut out: Active = idx[..k]
        .iter()
        .filter(|&&j| row[j as usize] > 0.0)
        .map(|&j| (j, row[j as usize]))
        .collect();
    out.sort_unstable_by_key(|e| e.0);
    out
}

/// The `k_aux` largest positive pre-activations among dead latents.
fn top_dead(h: &[f32], dead: &[bool], k_aux: usize) -> Active {
    let masked: Vec<f32> = h
        .iter()
        .zip(dead)
        .map(|(&v, &dd)| if dd { v } else { f32::NEG_INFINITY })
        .collect();
    let n_dead = dead.iter().filter(|&&v| v).count();
    top_positive(&masked, k_aux.min(n_dead))
}

/// `h = x · wᵀ` for `x` rows × d and `w` m × d (both row-major), on `threads` threads.
pub fn encoder_gemm(x: &[f32], w: &[f32], rows: usize, d: usize, m: usize, h: &mut [f32], threads: usize) {
    let par = if threads > 1 {
        gemm::Parallelism::Rayon(threads)
    } else {
        gemm::Parallelism::None
    };
    // SAFETY: x is rows × d, w is m × d and h is rows × m, all row-major and sized as asserted
    // by the callers; wᵀ is read through strides (row stride 1, column stride d).
    unsafe {
        gemm::gemm(
            rows,
            m,
            d,
            h.as_mut_ptr(),
            1,
            m as isize,
            false,
            x.as_ptr(),
            1,
            d as isize,
            w.as_ptr(),
            d as isize,
            1,
            0.0,
            1.0,
            false,
            false,
            false,
            par,
        );
    }
}

fn axpy(a: f32, x: &[f32], y: &mut [f32]) {
    for (yv, xv) in y.iter_mut().zip(x) {
        *yv += a * xv;
    }
}

fn dot(a: &[f32], b: &[f32]) -> f32 {
    // Eight partial sums: vectorizes, and rounds less than one running sum.
    let mut acc = [0f32; 8];
    let chunks = a.len() / 8;
    for c in 0..chunks {
        for l in 0..8 {
            acc[l] += a[c * 8 + l] * b[c * 8 + l];
        }
    }
    let mut s: f32 = acc.iter().sum();
    for i in chunks * 8..a.len() {
        s += a[i] * b[i];
    }
    s
}

fn norm(v: &[f32]) -> f32 {
    dot(v, v).sqrt()
}
