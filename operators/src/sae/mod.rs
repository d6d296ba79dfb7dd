//! `sae_encode`: encodes dense activations with a sparse autoencoder into sparse feature
//! frames (CSR), on the CPU or wgpu. Formats, architectures and formulas: see [`model`].
//!
//! The output stream has the features layout (`seq_id`, `pos`, `features: list<struct<id, act>>`
//! sorted by activation); a Parquet sink writes it directly.

mod cpu;
mod gpu;
pub mod model;
pub mod npz;
pub mod reconstruct;

use std::sync::Arc;

use neurostream_engine::{
    parse_config, Batch, ComputeDevice, ConfigTable, EngineError, NodeConfig, NodeContext, Operator, OperatorInstance,
    OperatorKind, Partitioning, Result, Schema, SparseFrame, StreamKind,
};
use serde::{Deserialize, Serialize};

pub use cpu::{matmul, CpuSae};
pub use gpu::GpuSae;
pub use model::{Activation, InputNorm, Sae};
pub use reconstruct::{SaeReconstructConfig, SaeReconstructKind};

/// Sparse rows: `offsets` (rows + 1), `ids`, `values`; each row sorted by value, largest first.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Csr {
    /// Row offsets into `ids`/`values`.
    pub offsets: Vec<u32>,
    /// Latent ids.
    pub ids: Vec<u32>,
    /// Latent activations.
    pub values: Vec<f32>,
}

impl Csr {
    /// Appends the rows of `other`.
    pub fn append(&mut self, other: Csr) {
        let base = self.ids.len() as u32;
        self.offsets.extend(other.offsets[1..].iter().map(|o| o + base));
        self.ids.extend(other.ids);
        self.values.extend(other.values);
    }

    /// An empty CSR with room for `rows` rows.
    pub fn with_rows(rows: usize) -> Csr {
        let mut offsets = Vec::with_capacity(rows + 1);
        offsets.push(0);
        Csr {
            offsets,
            ids: Vec::new(),
            values: Vec::new(),
        }
    }
}

/// Loads the SAE at `path` (relative to the pipeline file) for an operator reading `input`:
/// the input must be an activation stream whose width is the SAE's `d_in`.
pub(crate) fn load_for_input(
    path: &str,
    scaling_factor: Option<f32>,
    ctx: &NodeContext,
    input: &Schema,
    kind: &str,
) -> Result<Sae> {
    let fail = |m: String| Err(EngineError::config(ctx.label, m));
    if !matches!(input.kind, StreamKind::Activation { .. }) {
        return fail(format!("{kind} reads activation streams; its input is {}", input.describe()));
    }
    let path = ctx.resolve(path);
    let sae = Sae::load(&path, scaling_factor).map_err(|e| EngineError::config(ctx.label, e.to_string()))?;
    if sae.d_in != input.width() {
        return fail(format!(
            "shape mismatch: the SAE at {} has d_in = {} but its input has d_model = {}",
            path.display(),
            sae.d_in,
            input.width()
        ));
    }
    Ok(sae)
}

/// The encode kernels every backend provides.
pub trait SaeKernels {
    /// Encodes `rows` prepared input rows (normalized, `b_dec` applied), row-major `rows × d_in`.
    fn encode(&mut self, sae: &Sae, input: &[f32], rows: usize) -> Result<Csr>;
}

/// Configuration of a `sae_encode` operator.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SaeEncodeConfig {
    /// SAE directory: SAELens (`cfg.json` + `sae_weights.safetensors`) or sparsify (`cfg.json` + `sae.safetensors`).
    pub sae: String,
    /// Overrides `k` of a top-k SAE.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub k: Option<usize>,
    /// Dataset scaling factor for `normalize_activations = "expected_average_only_in"`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scaling_factor: Option<f32>,
    /// CPU threads per worker for the encoder matmul (default 1: workers provide parallelism).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub threads: Option<usize>,
}

impl NodeConfig for SaeEncodeConfig {
    const KIND: &'static str = "sae_encode";
}

/// The `sae_encode` operator kind.
pub struct SaeEncodeKind;

impl OperatorKind for SaeEncodeKind {
    fn kind(&self) -> &'static str {
        "sae_encode"
    }

    fn describe(&self) -> &'static str {
        "sparse autoencoder encoding (SAELens, sparsify; ReLU, TopK, JumpReLU, BatchTopK, gated) to sparse features"
    }

    fn build(&self, config: ConfigTable, ctx: &NodeContext, input: &Arc<Schema>) -> Result<Arc<dyn Operator>> {
        let cfg: SaeEncodeConfig = parse_config(config, ctx)?;
        let fail = |m: String| Err(EngineError::config(ctx.label, m));
        let mut sae = load_for_input(&cfg.sae, cfg.scaling_factor, ctx, input, "sae_encode")?;
        let (model, layer) = match &input.kind {
            StreamKind::Activation { model, layer } => (model.clone(), layer.clone()),
            _ => (None, None),
        };
        if let Some(k) = cfg.k {
            match &mut sae.activation {
                Activation::TopK { k: kk } if k >= 1 && k <= sae.d_sae => *kk = k,
                Activation::TopK { .. } => return fail(format!("`k` must be between 1 and d_sae = {}", sae.d_sae)),
                _ => return fail("`k` applies only to top-k SAEs".into()),
            }
        }
        let schema = Arc::new(Schema::features(
            sae.d_sae,
            Some(sae.origin.clone()),
            sae.model.clone().or(model),
            sae.hook.clone().or(layer),
        ));
        let threads = cfg.threads.unwrap_or(1);
        if threads == 0 {
            return fail("`threads` must be at least 1".into());
        }
        Ok(Arc::new(SaeEncode {
            sae: Arc::new(sae),
            schema,
            threads,
        }))
    }
}

struct SaeEncode {
    sae: Arc<Sae>,
    schema: Arc<Schema>,
    threads: usize,
}

impl Operator for SaeEncode {
    fn output_schema(&self) -> Arc<Schema> {
        self.schema.clone()
    }

    fn partitioning(&self) -> Partitioning {
        Partitioning::Local
    }

    fn instantiate(&self, device: &ComputeDevice) -> Result<Box<dyn OperatorInstance>> {
        let kernels: Box<dyn SaeKernels> = match device {
            ComputeDevice::Cpu => Box::new(CpuSae::with_threads(&self.sae, self.threads)),
            ComputeDevice::Gpu(ctx) => Box::new(GpuSae::new(ctx.clone(), &self.sae)?),
        };
        Ok(Box::new(SaeEncodeInstance {
            sae: self.sae.clone(),
            schema: self.schema.clone(),
            kernels,
            prepared: Vec::new(),
        }))
    }
}

struct SaeEncodeInstance {
    sae: Arc<Sae>,
    schema: Arc<Schema>,
    kernels: Box<dyn SaeKernels>,
    prepared: Vec<f32>,
}

impl OperatorInstance for SaeEncodeInstance {
    fn process(&mut self, batch: Batch, out: &mut Vec<Batch>) -> Result<()> {
        let Batch::Dense(frame) = batch else {
            return Err(EngineError::Shape(format!(
                "sae_encode takes dense activations; stream {} is sparse",
                batch.stream()
            )));
        };
        let d_in = self.sae.d_in;
        if frame.width() != d_in {
            return Err(EngineError::Shape(format!(
                "stream {}: rows of width {} but the SAE has d_in = {d_in}",
                frame.stream,
                frame.width()
            )));
        }
        let rows = frame.rows();
        self.prepared.resize(rows * d_in, 0.0);
        for (row, dst) in frame.data.chunks_exact(d_in).zip(self.prepared.chunks_exact_mut(d_in)) {
            self.sae.prepare_input(row, dst);
        }
        let csr = self.kernels.encode(&self.sae, &self.prepared, rows)?;
        out.push(Batch::Sparse(SparseFrame::new(
            frame.stream.clone(),
            self.schema.clone(),
            frame.index,
            csr.offsets,
            csr.ids,
            csr.values,
        )?));
        Ok(())
    }
}
