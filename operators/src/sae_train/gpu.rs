//! The wgpu backend of [`super::model::loss_and_grads`]: the same loss and gradients, computed
//! densely on the GPU the way GPU trainers do (see `kernels/`).
//!
//! One submission per step: centre the batch, `H = (x − b_dec)·W_encᵀ + b_enc`, select the
//! active set (per-row top-k by rounds of arg-max; BatchTopK's batch-wide cut by a 4-pass
//! radix select; ReLU / JumpReLU elementwise), `x̂ = A·W_dec + b_dec`, `∂L/∂A = ∂L/∂x̂·W_decᵀ`,
//! AuxK on the dead latents, then `∂L/∂W_dec = Aᵀ·∂L/∂x̂`, `∂L/∂W_enc = (∂L/∂H)ᵀ·(x − b_dec)`
//! and the bias and threshold gradients by column reductions. Only the gradients, per-row
//! squared errors and per-latent counts come back; the optimizer runs on the host (shared with
//! the CPU backend), so parameters are uploaded each step.

use std::sync::Arc;

use neurostream_engine::device::{workgroups_1d, workgroups_per_item};
use neurostream_engine::PooledBuffer;
use neurostream_engine::{wgpu, EngineError, GpuContext, GpuPass, Result};

use super::model::{BatchStats, Grads, LossSettings, Params, TrainArch};
use crate::gpu_gemm::GemmCall;

macro_rules! kernel {
    ($file:literal) => {
        concat!(include_str!("kernels/params.wgsl"), include_str!(concat!("kernels/", $file)))
    };
}

#[repr(C)]
#[derive(Clone, Copy, Default, bytemuck::Pod, bytemuck::Zeroable)]
struct TrainParams {
    rows: u32,
    d: u32,
    m: u32,
    arch: u32,
    k: u32,
    want: u32,
    aux: u32,
    pad0: u32,
    lam: f32,
    eps: f32,
    inv_b: f32,
    pad1: f32,
}

type Pipeline = Arc<wgpu::ComputePipeline>;

/// Compiled training kernels on one GPU.
pub struct GpuTrainKernels {
    ctx: Arc<GpuContext>,
    gemm: crate::gpu_gemm::Gemm,
    center: Pipeline,
    topk_rows: Pipeline,
    radix_hist: Pipeline,
    radix_pick: Pipeline,
    batch_activate: Pipeline,
    activate: Pipeline,
    residual: Pipeline,
    row_sq: Pipeline,
    grad_h: Pipeline,
    add_masked: Pipeline,
    col_stats: Pipeline,
    l1_dec: Pipeline,
}

impl GpuTrainKernels {
    /// Compiles the kernels on `ctx`.
    pub fn new(ctx: Arc<GpuContext>) -> Result<GpuTrainKernels> {
        let p = |name: &str, src: &str| ctx.pipeline(&format!("sae_train_{name}"), src, name);
        Ok(GpuTrainKernels {
            gemm: crate::gpu_gemm::pipeline(&ctx)?,
            center: p("center", kernel!("center.wgsl"))?,
            topk_rows: p("topk_rows", kernel!("topk_rows.wgsl"))?,
            radix_hist: p("radix_hist", kernel!("radix_hist.wgsl"))?,
            radix_pick: p("radix_pick", kernel!("radix_pick.wgsl"))?,
            batch_activate: p("batch_activate", kernel!("batch_activate.wgsl"))?,
            activate: p("activate", kernel!("activate.wgsl"))?,
            residual: p("residual", kernel!("residual.wgsl"))?,
            row_sq: p("row_sq", kernel!("row_sq.wgsl"))?,
            grad_h: p("grad_h", kernel!("grad_h.wgsl"))?,
            add_masked: p("add_masked", kernel!("add_masked.wgsl"))?,
            col_stats: p("col_stats", kernel!("col_stats.wgsl"))?,
            l1_dec: p("l1_dec", kernel!("l1_dec.wgsl"))?,
            ctx,
        })
    }

    /// The GPU this backend runs on, in words.
    pub fn describe(&self) -> String {
        self.ctx.describe()
    }

    /// The loss of `x` (`rows × d`, scaled) and its gradients, as
    /// [`super::model::loss_and_grads`] computes them, plus each latent's firings in the batch.
    pub fn loss_and_grads(
        &self,
        p: &Params,
        s: &LossSettings,
        x: &[f32],
        rows: usize,
        dead: &[bool],
    ) -> Result<(Grads, BatchStats, Vec<u32>)> {
        let (d, m) = (p.d, p.m);
        assert_eq!(x.len(), rows * d, "batch is rows x d_in");
        let limit = self.ctx.device.limits().max_storage_buffer_binding_size;
        let largest = (rows.max(d) * m * 4) as u64;
        if largest > limit {
            return Err(EngineError::Device(format!(
                "a batch of {rows} rows × d_sae {m} needs {largest}-byte buffers, over this GPU's storage binding \
                 limit of {limit} bytes: lower `batch`"
            )));
        }
        if rows * m >= u32::MAX as usize {
            return Err(EngineError::Device(format!(
                "batch {rows} × d_sae {m} is too large for 32-bit indexing"
            )));
        }
        let ctx = &self.ctx;
        let f = |label: &str, v: &[f32]| ctx.storage_init(label, bytemuck::cast_slice(v));
        let zeros = |label: &str, n: usize| ctx.storage_zeroed(label, (n * 4) as u64);
        let (arch, k, lam, eps) = match s.arch {
            TrainArch::TopK { k } => (0u32, k, 0.0, 0.0),
            TrainArch::BatchTopK { k } => (1, k, 0.0, 0.0),
            TrainArch::Relu { l1_coefficient } => (2, 0, l1_coefficient, 0.0),
            TrainArch::JumpRelu {
                l0_coefficient,
                bandwidth,
                ..
            } => (3, 0, l0_coefficient, bandwidth),
        };
        let base = TrainParams {
            rows: rows as u32,
            d: d as u32,
            m: m as u32,
            arch,
            k: k.min(m) as u32,
            want: (k * rows).min(rows * m) as u32,
            lam,
            eps,
            inv_b: 1.0 / rows as f32,
            ..Default::default()
        };
        let uniform = |tp: &TrainParams| ctx.uniform("sae_train.params", bytemuck::bytes_of(tp));
        let main_u = uniform(&base);
        let n_dead = dead.iter().filter(|&&v| v).count();
        let use_aux = s.arch.uses_auxk() && s.k_aux > 0 && n_dead > 0;
        let aux_u = uniform(&TrainParams {
            k: s.k_aux.min(n_dead) as u32,
            aux: 1,
            ..base
        });
        let by_row_d = uniform(&TrainParams { aux: 0, ..base });
        let dec_rows_u = uniform(&TrainParams {
            rows: m as u32,
            aux: 1,
            ..base
        });

        // Inputs and parameters.
        let x_b = f("x", x);
        let w_enc = f("w_enc", &p.w_enc);
        let b_enc = f("b_enc", &p.b_enc);
        let w_dec = f("w_dec", &p.w_dec);
        let b_dec = f("b_dec", &p.b_dec);
        let log_threshold = f("log_threshold", &p.log_threshold);
        let dead_u: Vec<u32> = dead.iter().map(|&v| v as u32).collect();
        let dead_b = ctx.storage_init("dead", bytemuck::cast_slice(&dead_u));
        let ones = f("ones", &vec![1.0f32; rows]);
        // Intermediates and outputs.
        let xc = zeros("xc", rows * d);
        let h = zeros("h", rows * m);
        let a = zeros("a", rows * m);
        let x_hat = zeros("x_hat", rows * d);
        let gx = zeros("gx", rows * d);
        let e = zeros("e", rows * d);
        let mse_rows = zeros("mse_rows", rows);
        let ga = zeros("ga", rows * m);
        let dec_norm = zeros("dec_norm", m);
        let gh = zeros("gh", rows * m);
        let a_aux = zeros("a_aux", if use_aux { rows * m } else { 1 });
        let ge = zeros("ge", if use_aux { rows * m } else { 1 });
        let aux_rows = zeros("aux_rows", rows);
        let stats = zeros("col_stats", 4 * m);
        let g_w_dec = zeros("g_w_dec", m * d);
        let g_w_enc = zeros("g_w_enc", m * d);
        let g_b_dec = zeros("g_b_dec", d);
        let sel = ctx.storage_init("radix", bytemuck::cast_slice(&[0u32; 260]));

        let rd = workgroups_1d(rows * d, 256);
        let rm = workgroups_1d(rows * m, 256);
        let per_row = workgroups_per_item(rows);
        let aux_c = 2.0 * s.aux_coef / rows as f32;
        let mut gemms: Vec<GemmCall> = vec![
            // 0: H = (x − b_dec)·W_encᵀ + b_enc
            GemmCall::new(rows, m, d, &xc, &w_enc, &h).transpose_b().bias(&b_enc),
            // 1: x̂ = A·W_dec + b_dec
            GemmCall::new(rows, d, m, &a, &w_dec, &x_hat).bias(&b_dec),
            // 2: ∂L/∂A = gx·W_decᵀ
            GemmCall::new(rows, m, d, &gx, &w_dec, &ga).transpose_b(),
            // 3: e += A_aux·W_dec (AuxK's residual, x̂ − x + dead reconstruction)
            GemmCall::new(rows, d, m, &a_aux, &w_dec, &e).accumulate(),
            // 4: ∂L_aux/∂A_aux = c·e·W_decᵀ
            GemmCall::new(rows, m, d, &e, &w_dec, &ge).transpose_b().alpha(aux_c),
            // 5: ∂L/∂W_dec = Aᵀ·gx
            GemmCall::new(m, d, rows, &a, &gx, &g_w_dec).transpose_a(),
            // 6: ∂L/∂W_dec += c·A_auxᵀ·e
            GemmCall::new(m, d, rows, &a_aux, &e, &g_w_dec)
                .transpose_a()
                .accumulate()
                .alpha(aux_c),
            // 7: ∂L/∂W_enc = (∂L/∂H)ᵀ·(x − b_dec)
            GemmCall::new(m, d, rows, &gh, &xc, &g_w_enc).transpose_a(),
            // 8: ∂L/∂b_dec = Σ_rows gx
            GemmCall::new(1, d, rows, &ones, &gx, &g_b_dec),
            // 9: ∂L/∂b_dec −= (∂L/∂b_enc)·W_enc (through x − b_dec)
            GemmCall::new(1, d, m, &stats, &w_enc, &g_b_dec).accumulate().alpha(-1.0),
        ];
        gemms[9].a_offset = 2 * m;
        let gemm_uniforms: Vec<PooledBuffer> = gemms.iter().map(|g| g.uniform(ctx)).collect();
        let dummy = zeros("dummy", 1);
        let gemm_bufs: Vec<[&wgpu::Buffer; 5]> = gemms.iter().zip(&gemm_uniforms).map(|(g, u)| g.buffers(u, &dummy)).collect();
        let gemm_pass = |i: usize| crate::gpu_gemm::pass(&self.gemm, &gemms[i], &gemm_bufs[i]);

        let center_b = [&*main_u, &*x_b, &*b_dec, &*xc];
        let topk_b = [&*main_u, &*h, &*dead_b, &*a];
        let hist_b = [&*main_u, &*h, &*sel];
        let pick_b = [&*main_u, &*sel];
        let bact_b = [&*main_u, &*h, &*sel, &*a];
        let act_b = [&*main_u, &*h, &*log_threshold, &*a];
        let resid_b = [&*main_u, &*x_b, &*x_hat, &*gx, &*e];
        let mse_b = [&*by_row_d, &*e, &*mse_rows];
        let norm_b = [&*dec_rows_u, &*w_dec, &*dec_norm];
        let gradh_b = [&*main_u, &*a, &*ga, &*dec_norm, &*gh];
        let auxk_b = [&*aux_u, &*h, &*dead_b, &*a_aux];
        let auxsq_b = [&*by_row_d, &*e, &*aux_rows];
        let addm_b = [&*main_u, &*a_aux, &*ge, &*gh];
        let cols_b = [&*main_u, &*a, &*gh, &*h, &*ga, &*log_threshold, &*stats];
        let l1_b = [&*main_u, &*stats, &*dec_norm, &*w_dec, &*g_w_dec];
        let hist_groups = [rows.saturating_mul(m).div_ceil(256).clamp(1, 1024) as u32, 1, 1];

        let mut passes: Vec<GpuPass> = vec![pass(&self.center, &center_b, rd), gemm_pass(0)];
        match s.arch {
            TrainArch::TopK { .. } => passes.push(pass(&self.topk_rows, &topk_b, per_row)),
            TrainArch::BatchTopK { .. } => {
                for _ in 0..4 {
                    passes.push(pass(&self.radix_hist, &hist_b, hist_groups));
                    passes.push(pass(&self.radix_pick, &pick_b, [1, 1, 1]));
                }
                passes.push(pass(&self.batch_activate, &bact_b, rm));
            }
            TrainArch::Relu { .. } | TrainArch::JumpRelu { .. } => passes.push(pass(&self.activate, &act_b, rm)),
        }
        passes.push(gemm_pass(1));
        passes.push(pass(&self.residual, &resid_b, rd));
        passes.push(pass(&self.row_sq, &mse_b, workgroups_1d(rows, 256)));
        passes.push(gemm_pass(2));
        passes.push(pass(&self.row_sq, &norm_b, workgroups_1d(m, 256)));
        passes.push(pass(&self.grad_h, &gradh_b, rm));
        if use_aux {
            passes.push(pass(&self.topk_rows, &auxk_b, per_row));
            passes.push(gemm_pass(3));
            passes.push(pass(&self.row_sq, &auxsq_b, workgroups_1d(rows, 256)));
            passes.push(gemm_pass(4));
            passes.push(pass(&self.add_masked, &addm_b, rm));
        }
        passes.push(pass(&self.col_stats, &cols_b, workgroups_1d(m, 256)));
        passes.push(gemm_pass(5));
        if use_aux {
            passes.push(gemm_pass(6));
        }
        if let TrainArch::Relu { .. } = s.arch {
            passes.push(pass(&self.l1_dec, &l1_b, workgroups_1d(m * d, 256)));
        }
        passes.push(gemm_pass(7));
        passes.push(gemm_pass(8));
        passes.push(gemm_pass(9));

        let md = (m * d * 4) as u64;
        let out = ctx.run_reads(
            &passes,
            &[
                (&g_w_enc, md),
                (&g_w_dec, md),
                (&g_b_dec, (d * 4) as u64),
                (&stats, (4 * m * 4) as u64),
                (&mse_rows, (rows * 4) as u64),
                (&aux_rows, (rows * 4) as u64),
                (&sel, 260 * 4),
            ],
        )?;
        let floats = |b: &[u8]| -> Vec<f32> { bytemuck::cast_slice(b).to_vec() };
        let col = floats(&out[3]);
        let sel: Vec<u32> = bytemuck::cast_slice(&out[6]).to_vec();
        let fires: Vec<u32> = col[..m].iter().map(|&v| v as u32).collect();
        let grads = Grads {
            w_enc: floats(&out[0]),
            b_enc: col[2 * m..3 * m].to_vec(),
            w_dec: floats(&out[1]),
            b_dec: floats(&out[2]),
            log_threshold: if p.log_threshold.is_empty() {
                Vec::new()
            } else {
                col[3 * m..].to_vec()
            },
        };
        let fired: u64 = fires.iter().map(|&c| c as u64).sum();
        let mut stats = BatchStats {
            mse: floats(&out[4]).iter().map(|&v| v as f64).sum::<f64>() / rows as f64,
            aux: if use_aux {
                floats(&out[5]).iter().map(|&v| v as f64).sum::<f64>() / rows as f64
            } else {
                0.0
            },
            l0: fired as f64 / rows as f64,
            ..Default::default()
        };
        match s.arch {
            TrainArch::Relu { l1_coefficient } => {
                let sum_a = &col[m..2 * m];
                stats.penalty = p
                    .w_dec
                    .chunks_exact(d)
                    .zip(sum_a)
                    .map(|(w, &sa)| sa as f64 * w.iter().map(|&v| (v as f64).powi(2)).sum::<f64>().sqrt())
                    .sum::<f64>()
                    * l1_coefficient as f64
                    / rows as f64;
            }
            TrainArch::JumpRelu { l0_coefficient, .. } => {
                stats.penalty = l0_coefficient as f64 * fired as f64 / rows as f64;
            }
            TrainArch::BatchTopK { .. } => {
                let cut = if sel[259] == 1 {
                    f32::MIN_POSITIVE
                } else {
                    f32::from_bits(sel[256])
                };
                stats.min_kept = if fired > 0 { cut.max(0.0) } else { 0.0 };
            }
            TrainArch::TopK { .. } => {}
        }
        stats.loss = stats.mse + s.aux_coef as f64 * stats.aux + stats.penalty;
        let total_sq = super::model::total_variance(x, rows, d);
        stats.fvu = if total_sq > 0.0 {
            stats.mse * rows as f64 / total_sq
        } else {
            0.0
        };
        Ok((grads, stats, fires))
    }
}

fn pass<'a>(pipeline: &'a Pipeline, buffers: &'a [&'a wgpu::Buffer], workgroups: [u32; 3]) -> GpuPass<'a> {
    GpuPass {
        pipeline: pipeline.as_ref(),
        buffers,
        workgroups,
    }
}
