//! `sae_encode`: encodes dense activations with a sparse autoencoder into sparse feature
//! frames (CSR), on the CPU or wgpu. Formats, architectures and formulas: see [`model`].
//!
//! The output stream has the features layout (`seq_id`, `pos`, `features: list<struct<id, act>>`
//! sorted by activation); a Parquet sink writes it directly.

mod cpu;
mod dense;
mod gpu;
pub mod half_weights;
pub mod model;
pub mod npz;
pub mod packed;
pub mod reconstruct;
mod select;

use std::sync::Arc;

use neurostream_engine::kernels::Kernels;
use neurostream_engine::{
    Batch, ComputeDevice, EngineError, Frame, NodeConfig, NodeContext, Operator, OperatorInstance, OperatorKind, Partitioning,
    Result, Schema, SparseFrame, StreamKind,
};
use serde::{Deserialize, Serialize};

pub use cpu::{CpuSae, CpuWeights};
pub use dense::matmul;
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
    /// The same rows as a GPU left them, when asked to keep them there
    /// ([`SaeKernels::keep_pairs_on_device`]).
    pub device: Option<neurostream_engine::DevicePairs>,
}

impl Csr {
    /// Appends the rows of `other`.
    pub fn append(&mut self, other: Csr) {
        self.device = match (self.device.take(), other.device) {
            (Some(mut a), Some(b)) => {
                a.append(b);
                Some(a)
            }
            (None, b) if self.offsets.len() == 1 => b,
            _ => None, // only some rows are on the device: none are said to be
        };
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
            device: None,
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
    let path = ctx.input_file(path);
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

    /// Encodes the rows of `frames` (raw activations, in order), prepared as
    /// [`Sae::prepare_input`] does; `prepared` is scratch space. This prepares them on the host
    /// (copying rows that live on a GPU back first); GPU kernels prepare them on the device.
    fn encode_frames(&mut self, sae: &Sae, frames: &[&Frame], prepared: &mut Vec<f32>) -> Result<Csr> {
        let d_in = sae.d_in;
        let rows: usize = frames.iter().map(|f| f.rows()).sum();
        prepared.resize(rows * d_in, 0.0);
        let mut targets = prepared.chunks_exact_mut(d_in);
        for frame in frames {
            for row in frame.values()?.chunks_exact(d_in) {
                sae.prepare_input(row, targets.next().expect("one prepared row per input row"));
            }
        }
        self.encode(sae, prepared, rows)
    }

    /// Starts encoding the rows of `frames`, as [`SaeKernels::encode_frames`], and may leave
    /// the last of the work on a GPU ([`Started::finish`] takes it). Kernels that cannot finish
    /// it here (the default).
    fn start_frames(&mut self, sae: &Sae, frames: &[&Frame], prepared: &mut Vec<f32>) -> Result<Started> {
        self.encode_frames(sae, frames, prepared).map(Started::Done)
    }

    /// From now on also leave the sparse result on the device ([`Csr::device`]), for a consumer
    /// there; kernels without a device ignore it.
    fn keep_pairs_on_device(&mut self) {}
}

/// What [`SaeKernels::start_frames`] returns: the encoded rows, or work still on the GPU.
pub enum Started {
    /// The rows, encoded.
    Done(Csr),
    /// All but the last block encoded; the last still computing or being read back.
    InFlight(Box<gpu::InFlight>),
}

impl Started {
    /// Whether the rows are ready, so [`Started::finish`] returns at once (never blocks).
    pub fn is_done(&mut self) -> bool {
        match self {
            Started::Done(_) => true,
            Started::InFlight(work) => work.is_done(),
        }
    }

    /// The encoded rows (waits for work still on the GPU).
    pub fn finish(self) -> Result<Csr> {
        match self {
            Started::Done(csr) => Ok(csr),
            Started::InFlight(work) => work.finish(),
        }
    }
}

/// Configuration of a `sae_encode` operator.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SaeEncodeConfig {
    /// SAE directory: SAELens (`cfg.json` + `sae_weights.safetensors`), EleutherAI sparsify
    /// (`cfg.json` + `sae.safetensors`), Gemma Scope (`params.npz`, or the `.npz` itself), Gemma
    /// Scope 2 (`params.safetensors`, `config.json` optional) or Llama Scope (`hyperparams.json` +
    /// `checkpoints/final.safetensors`, or `config.json` + `sae_weights.safetensors`); tensors in
    /// f32, f16, bf16 or f64.
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
    /// Live traffic: gather rows across frames and streams into one encode of up to this many
    /// rows (default 0: encode every frame as it comes).
    #[serde(default)]
    #[schemars(extend("x-unit" = "rows"))]
    pub max_batch: usize,
    /// With `max_batch`: the longest a row waits for its batch to fill, in milliseconds (default 5).
    #[serde(default = "default_max_delay_ms")]
    #[schemars(extend("x-unit" = "ms"))]
    pub max_delay_ms: f64,
    /// Keep `W_enc` as `f32` (default), `f16` or `bf16`: half the bytes streamed per token,
    /// which bounds small batches; products accumulate in f32 (the CPU widens per column block,
    /// the GPU per weight as it reads it).
    #[serde(default = "default_weight_dtype")]
    pub weight_dtype: half_weights::WeightDtype,
}

fn default_weight_dtype() -> half_weights::WeightDtype {
    half_weights::WeightDtype::F32
}

fn default_max_delay_ms() -> f64 {
    5.0
}

impl NodeConfig for SaeEncodeConfig {
    const KIND: &'static str = "sae_encode";
}

/// The `sae_encode` operator kind.
pub struct SaeEncodeKind;

impl OperatorKind for SaeEncodeKind {
    type Config = SaeEncodeConfig;

    fn describe(&self) -> &'static str {
        "sparse autoencoder encoding (SAELens, sparsify, Gemma Scope, Llama Scope; ReLU, TopK, JumpReLU, BatchTopK, gated, group max) to sparse features"
    }

    fn build(&self, cfg: SaeEncodeConfig, ctx: &NodeContext, input: &Arc<Schema>) -> Result<Arc<dyn Operator>> {
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
        if cfg.max_batch > 0 && !(cfg.max_delay_ms >= 0.0 && cfg.max_delay_ms.is_finite()) {
            return fail(format!(
                "`max_delay_ms` must be a finite number >= 0, got {}",
                cfg.max_delay_ms
            ));
        }
        Ok(Arc::new(SaeEncode {
            sae: Arc::new(sae),
            schema,
            threads,
            batching: (cfg.max_batch > 0).then(|| Batching {
                max_rows: cfg.max_batch,
                max_delay: std::time::Duration::from_secs_f64(cfg.max_delay_ms / 1000.0),
            }),
            name: ctx.name.to_string(),
            weight_dtype: cfg.weight_dtype,
            cpu_weights: std::sync::OnceLock::new(),
        }))
    }
}

struct SaeEncode {
    sae: Arc<Sae>,
    schema: Arc<Schema>,
    threads: usize,
    batching: Option<Batching>,
    name: String,
    weight_dtype: half_weights::WeightDtype,
    /// Prepared once, by the first CPU worker, and shared.
    cpu_weights: std::sync::OnceLock<CpuWeights>,
}

/// Cross-frame batching for live traffic.
#[derive(Clone, Copy, Debug)]
struct Batching {
    max_rows: usize,
    max_delay: std::time::Duration,
}

impl Operator for SaeEncode {
    fn takes_device_rows(&self) -> bool {
        true
    }

    /// One sparse frame per input frame, in order, however they are batched or deferred.
    fn one_output_per_input(&self) -> bool {
        true
    }

    fn output_schema(&self) -> Arc<Schema> {
        self.schema.clone()
    }

    fn partitioning(&self) -> Partitioning {
        Partitioning::Local
    }

    /// Always: frames may wait for their batch (`max_batch_rows`), and on a GPU the last
    /// batch's result is taken while the worker goes on with the next.
    fn holds_back(&self) -> bool {
        true
    }

    /// Frames waiting for their batch, or whose result is still on the GPU, are saved (and
    /// encoded again after a resume).
    fn checkpointing(&self) -> neurostream_engine::Checkpointing {
        neurostream_engine::Checkpointing::Snapshot
    }

    fn instantiate(&self, device: &ComputeDevice) -> Result<Box<dyn OperatorInstance>> {
        // The CPU path shares one prepared copy of the weights between workers; a CPU fallback
        // after a GPU error prepares its own.
        let shared = matches!(device, ComputeDevice::Cpu).then(|| {
            self.cpu_weights
                .get_or_init(|| CpuWeights::prepare(&self.sae, self.weight_dtype))
                .clone()
        });
        let (sae, threads, dtype) = (self.sae.clone(), self.threads, self.weight_dtype);
        let gpu_sae = self.sae.clone();
        let kernels = Kernels::select(
            "sae_encode",
            device,
            move |ctx| Ok(Box::new(GpuSae::with_weight_dtype(ctx, &gpu_sae, dtype)?) as Box<dyn SaeKernels>),
            Box::new(move || {
                let weights = shared.clone().unwrap_or_else(|| CpuWeights::prepare(&sae, dtype));
                Box::new(CpuSae::with_weights(&sae, threads, weights)) as Box<dyn SaeKernels>
            }),
        )?;
        Ok(Box::new(SaeEncodeInstance {
            sae: self.sae.clone(),
            schema: self.schema.clone(),
            kernels,
            prepared: Vec::new(),
            batching: self.batching,
            pending: Vec::new(),
            pending_rows: 0,
            in_flight: None,
            defer: false,
            waits_ms: Vec::new(),
            flushes: 0,
            name: self.name.clone(),
        }))
    }
}

struct SaeEncodeInstance {
    sae: Arc<Sae>,
    schema: Arc<Schema>,
    kernels: Kernels<dyn SaeKernels>,
    prepared: Vec<f32>,
    batching: Option<Batching>,
    /// Frames waiting for their batch, with their arrival time.
    pending: Vec<(neurostream_engine::Frame, std::time::Instant)>,
    pending_rows: usize,
    /// The last batch, whose result is still on the GPU (with [`OperatorInstance::defer_output`]).
    in_flight: Option<(Vec<(neurostream_engine::Frame, std::time::Instant)>, Started)>,
    /// Whether a batch's result may be taken at a later call.
    defer: bool,
    /// Added latency of every batched frame, milliseconds.
    waits_ms: Vec<f64>,
    flushes: u64,
    name: String,
}

impl SaeEncodeInstance {
    /// Encodes the pending frames in one kernel call and splits the result back per frame. With
    /// deferred output, a GPU's last block is left in flight and the batch before it emitted.
    fn flush(&mut self, out: &mut Vec<Batch>) -> Result<()> {
        if self.pending.is_empty() {
            return Ok(());
        }
        let frames = std::mem::take(&mut self.pending);
        self.pending_rows = 0;
        let refs: Vec<&neurostream_engine::Frame> = frames.iter().map(|(f, _)| f).collect();
        let (sae, prepared) = (&self.sae, &mut self.prepared);
        let defer = self.defer && !self.kernels.may_fall_back();
        let started = self.kernels.run(|k| match defer {
            true => k.start_frames(sae, &refs, prepared),
            false => k.encode_frames(sae, &refs, prepared).map(Started::Done),
        })?;
        drop(refs);
        // The batch before this one first: rows leave in order.
        self.take_in_flight(out)?;
        match started {
            Started::Done(csr) => self.emit(frames, &csr, out),
            in_flight => {
                self.in_flight = Some((frames, in_flight));
                Ok(())
            }
        }
    }

    /// Emits the batch in flight, if any (waiting for the GPU).
    fn take_in_flight(&mut self, out: &mut Vec<Batch>) -> Result<()> {
        let Some((frames, started)) = self.in_flight.take() else {
            return Ok(());
        };
        // Nothing is left in flight where a GPU error may fall back to the CPU (see `flush`),
        // so an error here is the run's.
        let csr = started.finish()?;
        self.emit(frames, &csr, out)
    }

    /// Splits `csr` (the rows of `frames`, in order) back per frame.
    fn emit(
        &mut self,
        frames: Vec<(neurostream_engine::Frame, std::time::Instant)>,
        csr: &Csr,
        out: &mut Vec<Batch>,
    ) -> Result<()> {
        let now = std::time::Instant::now();
        let mut first = 0usize;
        for (frame, arrived) in frames {
            if self.batching.is_some() {
                self.waits_ms.push(now.duration_since(arrived).as_secs_f64() * 1000.0);
            }
            let n = frame.rows();
            let (a, b) = (csr.offsets[first] as usize, csr.offsets[first + n] as usize);
            let offsets = csr.offsets[first..=first + n].iter().map(|o| o - a as u32).collect();
            let mut sparse = SparseFrame::new(
                frame.stream.clone(),
                self.schema.clone(),
                frame.index,
                offsets,
                csr.ids[a..b].to_vec(),
                csr.values[a..b].to_vec(),
            )?;
            if let Some(device) = &csr.device {
                sparse = sparse.with_device(device.slice(first..first + n));
            }
            out.push(Batch::Sparse(sparse));
            first += n;
        }
        self.flushes += 1;
        Ok(())
    }
}

/// How soon a batch left on the GPU is looked at again when no input comes meanwhile.
const IN_FLIGHT_RECHECK: std::time::Duration = std::time::Duration::from_micros(200);

impl OperatorInstance for SaeEncodeInstance {
    fn defer_output(&mut self) {
        self.defer = true;
    }

    /// Every consumer reads sparse frames on this GPU: the frames also carry where their pairs
    /// lie there ([`SparseFrame::device`]), so a consumer there uploads nothing.
    fn keep_output_on_device(&mut self) {
        let _ = self.kernels.run(|k| {
            k.keep_pairs_on_device();
            Ok(())
        });
    }

    /// At a checkpoint's cut: every waiting frame is encoded and emitted (the GPU waited for).
    fn release_held(&mut self, out: &mut Vec<Batch>) -> Result<()> {
        self.flush(out)?;
        self.take_in_flight(out)
    }

    fn snapshot(&self) -> Result<Vec<u8>> {
        // The batch in flight first (it is older), then those waiting; rows a GPU operator left
        // on the device are saved from the host.
        let in_flight = self.in_flight.iter().flat_map(|(frames, _)| frames);
        let frames = in_flight
            .chain(&self.pending)
            .map(|(f, _)| match f.is_on_device() {
                true => {
                    let mut host = f.clone();
                    host.materialize().map(|()| std::borrow::Cow::Owned(host))
                }
                false => Ok(std::borrow::Cow::Borrowed(f)),
            })
            .collect::<Result<Vec<_>>>()?;
        let frames: Vec<&neurostream_engine::Frame> = frames.iter().map(|f| f.as_ref()).collect();
        neurostream_engine::checkpoint::encode_state(&frames)
    }

    fn restore(&mut self, state: &[u8]) -> Result<()> {
        let frames: Vec<neurostream_engine::Frame> = neurostream_engine::checkpoint::decode_state(state, "sae_encode")?;
        // Their wait restarts now: the batch they were in is flushed by size or by time again.
        let now = std::time::Instant::now();
        self.pending_rows = frames.iter().map(|f| f.rows()).sum();
        self.pending = frames.into_iter().map(|f| (f, now)).collect();
        Ok(())
    }

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
        self.pending_rows += frame.rows();
        self.pending.push((frame, std::time::Instant::now()));
        match self.batching {
            Some(b) if self.pending_rows < b.max_rows => Ok(()),
            _ => self.flush(out),
        }
    }

    fn poll(&mut self, out: &mut Vec<Batch>) -> Result<Option<std::time::Duration>> {
        if let Some((_, started)) = self.in_flight.as_mut() {
            // A GPU error shows when the result is taken.
            if started.is_done() {
                self.take_in_flight(out)?;
            }
        }
        let recheck = self.in_flight.is_some().then_some(IN_FLIGHT_RECHECK);
        let (Some(b), Some((_, oldest))) = (self.batching, self.pending.first()) else {
            return Ok(recheck);
        };
        let waited = oldest.elapsed();
        if waited >= b.max_delay {
            self.flush(out)?;
            return Ok(self.in_flight.is_some().then_some(IN_FLIGHT_RECHECK));
        }
        let due = b.max_delay - waited;
        Ok(Some(recheck.map_or(due, |r| r.min(due))))
    }

    fn finish(&mut self, out: &mut Vec<Batch>) -> Result<()> {
        self.flush(out)?;
        self.take_in_flight(out)?;
        if self.batching.is_some() && !self.waits_ms.is_empty() {
            let mut w = self.waits_ms.clone();
            w.sort_by(f64::total_cmp);
            let q = |p: f64| w[((w.len() - 1) as f64 * p).round() as usize];
            tracing::info!(
                "sae_encode `{}`: {} frames in {} batches ({:.1} frames per batch); added latency p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms",
                self.name,
                w.len(),
                self.flushes,
                w.len() as f64 / self.flushes.max(1) as f64,
                q(0.5),
                q(0.99),
                w[w.len() - 1]
            );
        }
        Ok(())
    }
}
