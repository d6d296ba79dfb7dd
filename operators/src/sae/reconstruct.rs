//! `sae_reconstruct`: encodes and decodes activations with an SAE and emits, per token, the
//! reconstruction metrics (default) or the reconstruction itself.
//!
//! Decode follows SAELens: `x̂' = a @ W_dec + b_dec` (with `a_j / ‖W_dec[j]‖` first when
//! `rescale_acts_by_decoder_norm`), then the inverse of the input normalization
//! (`constant_norm_rescale`: `/ coeff`; `layer_norm`: `· std + mean`; scaling: `/ factor`).
//! Metrics per token, in float64 against the original row `x`:
//! `l0` (active latents), `mse = Σ(x − x̂)² / d_in`, `nmse = Σ(x − x̂)² / Σx²`,
//! `cosine = ⟨x, x̂⟩ / (‖x‖‖x̂‖)`, `explained_variance = 1 − Σ(x − x̂)² / Σ(x − mean(x))²`.

use std::sync::Arc;

use neurostream_engine::device::workgroups_per_item;
use neurostream_engine::PooledBuffer;

use neurostream_engine::kernels::Kernels;
use neurostream_engine::{
    wgpu, Batch, ComputeDevice, EngineError, Frame, GpuContext, GpuPass, NodeConfig, NodeContext, Operator, OperatorInstance,
    OperatorKind, Partitioning, Result, Schema,
};
use serde::{Deserialize, Serialize};

use super::half_weights::WeightDtype;
use super::model::{InputNorm, Sae};
use super::{CpuSae, CpuWeights, Csr, GpuSae, SaeKernels};

/// Names of the metric columns, in order.
pub const METRICS: [&str; 5] = ["l0", "mse", "nmse", "cosine", "explained_variance"];

/// What `sae_reconstruct` emits.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum ReconstructOutput {
    /// Per-token metrics (token scalars layout).
    #[default]
    Metrics,
    /// The reconstructed activations (activation layout).
    Reconstruction,
}

/// Configuration of a `sae_reconstruct` operator.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SaeReconstructConfig {
    /// SAE directory, in any format `sae_encode` reads; transcoders and SAEs with a skip term
    /// are refused.
    pub sae: String,
    /// `metrics` (default) or `reconstruction`.
    #[serde(default)]
    pub output: ReconstructOutput,
    /// Dataset scaling factor for `expected_average_only_in`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scaling_factor: Option<f32>,
    /// CPU threads per worker for the encoder matmul.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub threads: Option<usize>,
}

impl NodeConfig for SaeReconstructConfig {
    const KIND: &'static str = "sae_reconstruct";
}

/// The decode kernels every backend provides.
pub trait DecodeKernels {
    /// `b_dec + Σ vals·W_dec[ids]` per CSR row, row-major `rows × d_in` (before inverse normalization).
    fn decode(&mut self, sae: &Sae, csr: &Csr) -> Result<Vec<f32>>;
}

/// CPU decode: a sparse gather-sum over the active decoder rows.
pub struct CpuDecode;

impl DecodeKernels for CpuDecode {
    fn decode(&mut self, sae: &Sae, csr: &Csr) -> Result<Vec<f32>> {
        let d = sae.d_in;
        let rows = csr.offsets.len() - 1;
        let mut out = Vec::with_capacity(rows * d);
        for r in 0..rows {
            let start = out.len();
            out.extend_from_slice(&sae.b_dec);
            let row = &mut out[start..];
            for e in csr.offsets[r] as usize..csr.offsets[r + 1] as usize {
                let (j, a) = (csr.ids[e] as usize, csr.values[e]);
                for (o, w) in row.iter_mut().zip(&sae.w_dec[j * d..(j + 1) * d]) {
                    *o += a * w;
                }
            }
        }
        Ok(out)
    }
}

const DECODE: &str = include_str!("decode.wgsl");

#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
struct DecodeParams {
    rows: u32,
    d_in: u32,
    pad: [u32; 2],
}

/// wgpu decode with `W_dec` and `b_dec` resident on the GPU.
pub struct GpuDecode {
    ctx: Arc<GpuContext>,
    pipeline: Arc<wgpu::ComputePipeline>,
    w_dec: PooledBuffer,
    b_dec: PooledBuffer,
}

impl GpuDecode {
    /// Uploads the decoder and compiles the kernel.
    pub fn new(ctx: Arc<GpuContext>, sae: &Sae) -> Result<GpuDecode> {
        Ok(GpuDecode {
            pipeline: ctx.pipeline("sae_decode", DECODE, "decode")?,
            w_dec: ctx.storage_init("sae.w_dec", bytemuck::cast_slice(&sae.w_dec)),
            b_dec: ctx.storage_init("sae.b_dec", bytemuck::cast_slice(&sae.b_dec)),
            ctx,
        })
    }
}

impl DecodeKernels for GpuDecode {
    fn decode(&mut self, sae: &Sae, csr: &Csr) -> Result<Vec<f32>> {
        let rows = csr.offsets.len() - 1;
        if rows == 0 {
            return Ok(Vec::new());
        }
        let ctx = &self.ctx;
        let params = DecodeParams {
            rows: rows as u32,
            d_in: sae.d_in as u32,
            pad: [0; 2],
        };
        let uniform = ctx.uniform("decode.params", bytemuck::bytes_of(&params));
        let offsets = ctx.storage_init("decode.offsets", bytemuck::cast_slice(&csr.offsets));
        let ids = ctx.storage_init("decode.ids", bytemuck::cast_slice(&csr.ids));
        let vals = ctx.storage_init("decode.vals", bytemuck::cast_slice(&csr.values));
        let out_bytes = (rows * sae.d_in * 4) as u64;
        let x_hat = ctx.storage_zeroed("decode.x_hat", out_bytes);
        let buffers = [&*uniform, &*offsets, &*ids, &*vals, &*self.w_dec, &*self.b_dec, &*x_hat];
        let groups = workgroups_per_item(rows);
        let bytes = ctx.run(
            &[GpuPass {
                pipeline: &self.pipeline,
                buffers: &buffers,
                workgroups: groups,
            }],
            Some((&x_hat, out_bytes)),
        )?;
        Ok(bytemuck::cast_slice(&bytes).to_vec())
    }
}

/// The `sae_reconstruct` operator kind.
pub struct SaeReconstructKind;

impl OperatorKind for SaeReconstructKind {
    type Config = SaeReconstructConfig;

    fn describe(&self) -> &'static str {
        "SAE encode + decode: per-token reconstruction metrics (l0, mse, nmse, cosine, explained variance) or the reconstruction"
    }

    fn build(&self, cfg: SaeReconstructConfig, ctx: &NodeContext, input: &Arc<Schema>) -> Result<Arc<dyn Operator>> {
        let fail = |m: String| Err(EngineError::config(ctx.label, m));
        let sae = super::load_for_input(&cfg.sae, cfg.scaling_factor, ctx, input, "sae_reconstruct")?;
        if sae.transcoder {
            return fail(
                "a transcoder reconstructs another activation than its input; sae_reconstruct needs an autoencoder".into(),
            );
        }
        if sae.skip_connection {
            return fail(
                "this SAE's output adds a skip term (W_skip) that sae_reconstruct does not compute; encode it with sae_encode"
                    .into(),
            );
        }
        let schema = match cfg.output {
            ReconstructOutput::Metrics => Arc::new(Schema::token_scalars(&METRICS, Some(sae.origin.clone()))),
            ReconstructOutput::Reconstruction => input.clone(),
        };
        let threads = cfg.threads.unwrap_or(1).max(1);
        Ok(Arc::new(SaeReconstruct {
            sae: Arc::new(sae),
            schema,
            output: cfg.output,
            threads,
            cpu_weights: std::sync::OnceLock::new(),
        }))
    }
}

struct SaeReconstruct {
    sae: Arc<Sae>,
    schema: Arc<Schema>,
    output: ReconstructOutput,
    threads: usize,
    /// Prepared once, by the first CPU worker, and shared.
    cpu_weights: std::sync::OnceLock<CpuWeights>,
}

impl Operator for SaeReconstruct {
    fn output_schema(&self) -> Arc<Schema> {
        self.schema.clone()
    }

    fn partitioning(&self) -> Partitioning {
        Partitioning::Local
    }
    fn checkpointing(&self) -> neurostream_engine::Checkpointing {
        neurostream_engine::Checkpointing::Stateless
    }

    fn instantiate(&self, device: &ComputeDevice) -> Result<Box<dyn OperatorInstance>> {
        // The CPU path shares one prepared copy of the weights between workers; a CPU fallback
        // after a GPU error prepares its own.
        let shared = matches!(device, ComputeDevice::Cpu).then(|| {
            self.cpu_weights
                .get_or_init(|| CpuWeights::prepare(&self.sae, WeightDtype::F32))
                .clone()
        });
        let (sae, threads, gpu_sae) = (self.sae.clone(), self.threads, self.sae.clone());
        let kernels = Kernels::select(
            "sae_reconstruct",
            device,
            move |ctx| {
                Ok(Box::new(ReconstructKernels {
                    encode: Box::new(GpuSae::new(ctx.clone(), &gpu_sae)?),
                    decode: Box::new(GpuDecode::new(ctx, &gpu_sae)?),
                }))
            },
            Box::new(move || {
                let weights = shared.clone().unwrap_or_else(|| CpuWeights::prepare(&sae, WeightDtype::F32));
                Box::new(ReconstructKernels {
                    encode: Box::new(CpuSae::with_weights(&sae, threads, weights)),
                    decode: Box::new(CpuDecode),
                })
            }),
        )?;
        Ok(Box::new(ReconstructInstance {
            sae: self.sae.clone(),
            schema: self.schema.clone(),
            output: self.output,
            kernels,
            dec_inv_norm: self
                .sae
                .rescale_by_decoder_norm
                .then(|| self.sae.decoder_norms().iter().map(|n| 1.0 / n).collect()),
        }))
    }
}

struct ReconstructInstance {
    sae: Arc<Sae>,
    schema: Arc<Schema>,
    output: ReconstructOutput,
    kernels: Kernels<ReconstructKernels>,
    dec_inv_norm: Option<Vec<f32>>,
}

/// The encoder and decoder kernels of one instance, on one device.
struct ReconstructKernels {
    encode: Box<dyn SaeKernels>,
    decode: Box<dyn DecodeKernels>,
}

/// Undoes the input normalization of `x` on its reconstruction `recon`.
fn denormalize(sae: &Sae, x: &[f32], recon: &mut [f32]) {
    let d = x.len() as f64;
    match sae.norm {
        InputNorm::None => {}
        InputNorm::Scale(f) => recon.iter_mut().for_each(|v| *v /= f),
        InputNorm::ConstantNormRescale => {
            let n = x.iter().map(|&v| (v as f64).powi(2)).sum::<f64>().sqrt();
            let coeff = if n > 0.0 { d.sqrt() / n } else { 1.0 };
            recon.iter_mut().for_each(|v| *v = (*v as f64 / coeff) as f32);
        }
        InputNorm::LayerNorm => {
            let mean = x.iter().map(|&v| v as f64).sum::<f64>() / d;
            let std = (x.iter().map(|&v| (v as f64 - mean).powi(2)).sum::<f64>() / (d - 1.0).max(1.0)).sqrt();
            recon.iter_mut().for_each(|v| *v = (*v as f64 * std + mean) as f32);
        }
    }
}

/// The metrics of one row, in the order of [`METRICS`].
fn metrics(x: &[f32], recon: &[f32], l0: usize) -> [f32; 5] {
    let (mut se, mut xx, mut rr, mut xr) = (0.0f64, 0.0f64, 0.0f64, 0.0f64);
    let mean = x.iter().map(|&v| v as f64).sum::<f64>() / x.len() as f64;
    let mut var = 0.0f64;
    for (&a, &b) in x.iter().zip(recon) {
        let (a, b) = (a as f64, b as f64);
        se += (a - b) * (a - b);
        xx += a * a;
        rr += b * b;
        xr += a * b;
        var += (a - mean) * (a - mean);
    }
    let cosine = if xx > 0.0 && rr > 0.0 {
        xr / (xx.sqrt() * rr.sqrt())
    } else {
        0.0
    };
    let nmse = if xx > 0.0 { se / xx } else { 0.0 };
    let ev = if var > 0.0 { 1.0 - se / var } else { 0.0 };
    [l0 as f32, (se / x.len() as f64) as f32, nmse as f32, cosine as f32, ev as f32]
}

impl OperatorInstance for ReconstructInstance {
    fn process(&mut self, batch: Batch, out: &mut Vec<Batch>) -> Result<()> {
        let Batch::Dense(frame) = batch else {
            return Err(EngineError::Shape(format!(
                "sae_reconstruct takes dense activations; stream {} is sparse",
                batch.stream()
            )));
        };
        let d = self.sae.d_in;
        let rows = frame.rows();
        let mut prepared = vec![0f32; rows * d];
        for (row, dst) in frame.data.chunks_exact(d).zip(prepared.chunks_exact_mut(d)) {
            self.sae.prepare_input(row, dst);
        }
        let (sae, dec_inv_norm) = (&self.sae, &self.dec_inv_norm);
        let (l0, mut recon) = self.kernels.run(|k| {
            let mut csr = k.encode.encode(sae, &prepared, rows)?;
            let l0: Vec<usize> = csr.offsets.windows(2).map(|w| (w[1] - w[0]) as usize).collect();
            if let Some(inv) = dec_inv_norm {
                for (v, &j) in csr.values.iter_mut().zip(&csr.ids) {
                    *v *= inv[j as usize];
                }
            }
            Ok((l0, k.decode.decode(sae, &csr)?))
        })?;
        for (x, r) in frame.data.chunks_exact(d).zip(recon.chunks_exact_mut(d)) {
            denormalize(&self.sae, x, r);
        }
        let data = match self.output {
            ReconstructOutput::Reconstruction => recon,
            ReconstructOutput::Metrics => frame
                .data
                .chunks_exact(d)
                .zip(recon.chunks_exact(d))
                .zip(&l0)
                .flat_map(|((x, r), &l)| metrics(x, r, l))
                .collect(),
        };
        out.push(Batch::Dense(Frame::new(
            frame.stream.clone(),
            self.schema.clone(),
            frame.index,
            data,
        )?));
        Ok(())
    }
}
