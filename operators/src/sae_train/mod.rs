//! `sae_train`: trains a sparse autoencoder on the activations a pipeline streams into it (a
//! sink), and writes it in the SAELens and sparsify formats, with checkpoints and a report.
//!
//! Rows are gathered into a buffer of `buffer` tokens; a full buffer is shuffled and cut into
//! mini-batches of `batch` tokens, one optimizer step each (rows left over wait for the next
//! fill). The first fill sets the input scale and `b_dec`. See [`model`] for the losses and
//! gradients, [`optim`] for Adam and its schedule, [`trainer`] for checkpoints, [`export`] for
//! the formats.

pub mod export;
pub mod gpu;
pub mod model;
pub mod optim;
pub mod trainer;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

use neurostream_engine::{
    Batch, ComputeDevice, EngineError, NodeConfig, NodeContext, Placement, Result, RowIndex, Schema, Sink, SinkKind, SinkWriter,
    StreamKind, WorkerPos,
};
use serde::{Deserialize, Serialize};

use export::Provenance;
use gpu::GpuTrainKernels;
use model::TrainArch;
use trainer::{TrainSettings, Trainer};

/// Configuration of an `sae_train` sink.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SaeTrainConfig {
    /// Output directory: the SAELens files, `sparsify/`, `train_report.json`, `checkpoints/`.
    pub out: String,
    /// `topk` (default), `batchtopk`, `relu` or `jumprelu`.
    #[serde(default = "default_arch")]
    pub architecture: String,
    /// Latents.
    pub d_sae: usize,
    /// TopK / BatchTopK: active latents per token (default 32).
    #[serde(default = "default_k")]
    pub k: usize,
    /// ReLU: L1 coefficient (default 5.0).
    #[serde(default = "default_l1")]
    pub l1_coefficient: f32,
    /// JumpReLU: L0 coefficient (default 1.0).
    #[serde(default = "default_l0")]
    pub l0_coefficient: f32,
    /// JumpReLU: straight-through estimator kernel width (default 0.001).
    #[serde(default = "default_bandwidth")]
    pub bandwidth: f32,
    /// JumpReLU: initial threshold (default 0.001).
    #[serde(default = "default_init_threshold")]
    pub init_threshold: f32,
    /// Tokens per optimizer step (default 4096).
    #[serde(default = "default_batch")]
    #[schemars(extend("x-unit" = "tokens"))]
    pub batch: usize,
    /// Tokens shuffled together (default 16 batches).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(extend("x-unit" = "tokens"))]
    pub buffer: Option<usize>,
    /// Peak learning rate (default 4e-4).
    #[serde(default = "default_lr")]
    pub lr: f32,
    /// Warm-up, fraction of the planned steps (default 0.05).
    #[serde(default = "default_warmup")]
    pub warmup_fraction: f32,
    /// Linear decay to 0 over this final fraction of the planned steps (default 0.2).
    #[serde(default = "default_decay")]
    pub decay_fraction: f32,
    /// Token budget: sets the schedule; training stops there. Without it the rate stays at its
    /// peak after warm-up and every token streamed is used.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(extend("x-unit" = "tokens"))]
    pub tokens: Option<u64>,
    /// AuxK coefficient (default 1/32).
    #[serde(default = "default_aux")]
    pub aux_coef: f32,
    /// AuxK latents per token (default d_in / 2).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub k_aux: Option<usize>,
    /// Tokens without firing after which a latent is dead (default 100000, at least 50 batches).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(extend("x-unit" = "tokens"))]
    pub dead_after_tokens: Option<u64>,
    /// Write a checkpoint every this many steps (default 0: none).
    #[serde(default)]
    #[schemars(extend("x-unit" = "steps"))]
    pub checkpoint_every: u64,
    /// Resume from a checkpoint directory, or `"latest"` (the newest under `out/checkpoints`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resume: Option<String>,
    /// Drop tokens at positions below this (a language model's attention-sink first token).
    #[serde(default)]
    #[schemars(extend("x-unit" = "tokens"))]
    pub skip_first: u32,
    /// Passes over the data (default 1). More than one keeps every accepted row in memory and
    /// replays it, reshuffled, after the stream ends (for datasets that fit).
    #[serde(default = "default_epochs")]
    pub epochs: usize,
    /// Log metrics every this many steps (default 100).
    #[serde(default = "default_log_every")]
    #[schemars(extend("x-unit" = "steps"))]
    pub log_every: u64,
    /// Storage of the written SAELens weights: `float32` (default) or `float16`.
    #[serde(default = "default_dtype")]
    pub dtype: String,
    /// Output formats (default `["saelens", "sparsify"]`; sparsify only for TopK).
    #[serde(default = "default_formats")]
    pub formats: Vec<String>,
    /// Seed of initialization and shuffling (default 0).
    #[serde(default)]
    pub seed: u64,
    /// Threads of the encoder GEMM (default: all cores).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub threads: Option<usize>,
}

fn default_arch() -> String {
    "topk".into()
}
fn default_k() -> usize {
    32
}
fn default_l1() -> f32 {
    5.0
}
fn default_l0() -> f32 {
    1.0
}
fn default_bandwidth() -> f32 {
    0.001
}
fn default_init_threshold() -> f32 {
    0.001
}
fn default_batch() -> usize {
    4096
}
fn default_lr() -> f32 {
    4e-4
}
fn default_warmup() -> f32 {
    0.05
}
fn default_decay() -> f32 {
    0.2
}
fn default_aux() -> f32 {
    1.0 / 32.0
}
fn default_dtype() -> String {
    "float32".into()
}
fn default_epochs() -> usize {
    1
}
fn default_log_every() -> u64 {
    100
}
fn default_formats() -> Vec<String> {
    vec!["saelens".into(), "sparsify".into()]
}

impl NodeConfig for SaeTrainConfig {
    const KIND: &'static str = "sae_train";
}

impl SaeTrainConfig {
    /// Defaults for everything but the output directory and the latent count.
    pub fn new(out: &str, d_sae: usize) -> SaeTrainConfig {
        let mut t = toml::Table::new();
        t.insert("out".into(), out.into());
        t.insert("d_sae".into(), (d_sae as i64).into());
        t.try_into().expect("defaults parse")
    }

    /// The architecture with its settings, checked.
    pub fn arch(&self) -> std::result::Result<TrainArch, String> {
        let arch = match self.architecture.as_str() {
            "topk" => TrainArch::TopK { k: self.k },
            "batchtopk" => TrainArch::BatchTopK { k: self.k },
            "relu" | "standard" => TrainArch::Relu {
                l1_coefficient: self.l1_coefficient,
            },
            "jumprelu" => TrainArch::JumpRelu {
                l0_coefficient: self.l0_coefficient,
                bandwidth: self.bandwidth,
                init_threshold: self.init_threshold,
            },
            other => return Err(format!("`architecture` {other}: expected topk, batchtopk, relu or jumprelu")),
        };
        if matches!(arch, TrainArch::TopK { .. } | TrainArch::BatchTopK { .. }) && (self.k == 0 || self.k > self.d_sae) {
            return Err(format!("`k` must be in 1..=d_sae ({}), got {}", self.d_sae, self.k));
        }
        if let TrainArch::JumpRelu {
            bandwidth,
            init_threshold,
            ..
        } = arch
        {
            if !(bandwidth > 0.0 && init_threshold > 0.0) {
                return Err("`bandwidth` and `init_threshold` must be positive".into());
            }
        }
        Ok(arch)
    }
}

/// The `sae_train` sink kind.
pub struct SaeTrainKind;

impl SinkKind for SaeTrainKind {
    type Config = SaeTrainConfig;

    fn describe(&self) -> &'static str {
        "trains a sparse autoencoder (TopK, BatchTopK, ReLU, JumpReLU) on the activations; writes SAELens + sparsify"
    }
    fn build(&self, cfg: SaeTrainConfig, ctx: &NodeContext, input: &Arc<Schema>) -> Result<Arc<dyn Sink>> {
        let fail = |m: String| Err(EngineError::config(ctx.label, m));
        let StreamKind::Activation { model, layer } = &input.kind else {
            return fail(format!("sae_train reads activations, not {}", input.describe()));
        };
        let d_in = input.width();
        if d_in == 0 {
            return fail("the input's d_model is unknown".into());
        }
        let arch = match cfg.arch() {
            Ok(a) => a,
            Err(m) => return fail(m),
        };
        if cfg.d_sae == 0 || cfg.batch == 0 || cfg.epochs == 0 {
            return fail("`d_sae`, `batch` and `epochs` must be at least 1".into());
        }
        let buffer = cfg.buffer.unwrap_or(cfg.batch * 16);
        if buffer < cfg.batch {
            return fail(format!("`buffer` ({buffer}) must hold at least one batch ({})", cfg.batch));
        }
        if !matches!(cfg.dtype.as_str(), "float32" | "float16") {
            return fail(format!("`dtype` {}: float32 or float16", cfg.dtype));
        }
        if let Some(bad) = cfg.formats.iter().find(|f| !matches!(f.as_str(), "saelens" | "sparsify")) {
            return fail(format!("`formats`: unknown format {bad} (saelens, sparsify)"));
        }
        let threads = cfg
            .threads
            .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()));
        let dead_after = cfg.dead_after_tokens.unwrap_or_else(|| 100_000u64.max(50 * cfg.batch as u64));
        let settings = TrainSettings {
            arch,
            d_in,
            d_sae: cfg.d_sae,
            batch: cfg.batch,
            lr: cfg.lr,
            warmup_fraction: cfg.warmup_fraction,
            decay_fraction: cfg.decay_fraction,
            tokens: cfg.tokens,
            aux_coef: cfg.aux_coef,
            k_aux: cfg.k_aux.unwrap_or(d_in / 2),
            dead_after_tokens: dead_after,
            seed: cfg.seed,
            threads: threads.max(1),
        };
        let out = ctx.resolve(&cfg.out);
        let resume = match cfg.resume.as_deref() {
            None => None,
            Some("latest") => match Trainer::latest_checkpoint(&out.join("checkpoints")) {
                Some(p) => Some(p),
                None => {
                    return fail(format!(
                        "`resume = \"latest\"`: no checkpoint under {}",
                        out.join("checkpoints").display()
                    ))
                }
            },
            Some(p) => Some(ctx.resolve(p)),
        };
        Ok(Arc::new(SaeTrainSink {
            name: ctx.name.to_string(),
            out,
            buffer,
            resume,
            prov: Provenance {
                model: model.clone(),
                layer: layer.clone(),
                f16: cfg.dtype == "float16",
            },
            cfg,
            settings,
        }))
    }
}

struct SaeTrainSink {
    name: String,
    out: PathBuf,
    buffer: usize,
    resume: Option<PathBuf>,
    prov: Provenance,
    cfg: SaeTrainConfig,
    settings: TrainSettings,
}

impl Sink for SaeTrainSink {
    fn delivery(&self) -> neurostream_engine::checkpoint::Delivery {
        // A resumed run would see only the rows after the checkpoint: its optimizer state lives on the device and is not saved.
        neurostream_engine::checkpoint::Delivery::Unsupported
    }
    fn placement(&self) -> Placement {
        Placement::Single
    }

    fn open(&self, worker: WorkerPos) -> Result<Box<dyn SinkWriter>> {
        self.open_on(worker, &ComputeDevice::Cpu)
    }

    fn computes(&self) -> bool {
        true
    }

    fn open_on(&self, _worker: WorkerPos, device: &ComputeDevice) -> Result<Box<dyn SinkWriter>> {
        // A GPU that fails to set up falls back with `gpu_fallback = "cpu"`; a failure mid-step
        // is the run's error (the optimizer state on the device may be half-updated).
        let mut gpu = neurostream_engine::kernels::gpu_or_cpu("sae_train", device, GpuTrainKernels::new)?;
        let mut trainer = match &self.resume {
            Some(path) => {
                let t = Trainer::load_checkpoint(path, self.settings.clone())
                    .map_err(|m| EngineError::config(format!("sinks.{}", self.name), m))?;
                tracing::info!(
                    "sink `{}`: resumed from {} at step {} ({} tokens)",
                    self.name,
                    path.display(),
                    t.step,
                    t.tokens
                );
                Some(t)
            }
            None => None,
        };
        if let Some(t) = trainer.as_mut() {
            if let Some(k) = gpu.take() {
                t.use_gpu(k);
            }
        }
        let trainer_step = trainer.as_ref().map(|t| t.step);
        Ok(Box::new(TrainWriter {
            name: self.name.clone(),
            out: self.out.clone(),
            capacity: self.buffer,
            cfg: self.cfg.clone(),
            settings: self.settings.clone(),
            prov: self.prov.clone(),
            buffer: Vec::new(),
            store: Vec::new(),
            trainer,
            gpu,
            started: Instant::now(),
            rows_seen: 0,
            skipped: 0,
            failed: false,
            resumed_at: trainer_step,
        }))
    }
}

struct TrainWriter {
    name: String,
    out: PathBuf,
    capacity: usize,
    cfg: SaeTrainConfig,
    settings: TrainSettings,
    prov: Provenance,
    buffer: Vec<f32>,
    /// Every accepted row, when more than one epoch is asked for.
    store: Vec<f32>,
    trainer: Option<Trainer>,
    /// wgpu kernels waiting for the trainer the first buffer creates.
    gpu: Option<GpuTrainKernels>,
    started: Instant,
    rows_seen: u64,
    skipped: u64,
    /// Set by the first error: later batches (already in flight) are ignored, so nothing is
    /// trained or checkpointed past a failure.
    failed: bool,
    /// The step a resumed run started from.
    resumed_at: Option<u64>,
}

impl TrainWriter {
    fn fail(&self, m: String) -> EngineError {
        EngineError::Runtime(format!("sink `{}`: {m}", self.name))
    }

    /// Trains on the buffered rows: shuffled, in whole batches; the remainder stays buffered.
    fn drain(&mut self) -> Result<()> {
        let d = self.settings.d_in;
        let rows = self.buffer.len() / d;
        if self.trainer.is_none() {
            let mut t = Trainer::new(self.settings.clone(), &self.buffer).map_err(|m| self.fail(m))?;
            if let Some(k) = self.gpu.take() {
                t.use_gpu(k);
            }
            tracing::info!("sink `{}`: forward and backward passes on {}", self.name, t.backend());
            tracing::info!(
                "sink `{}`: input scale {:.4} (mean squared norm -> d_in = {d}), planned steps {}",
                self.name,
                t.scale,
                t.planned_steps()
                    .map_or("until the input ends".to_string(), |s| s.to_string())
            );
            self.trainer = Some(t);
        }
        let trainer = self.trainer.as_mut().unwrap();
        let batch = self.settings.batch;
        let order = trainer.permutation(rows);
        let whole = rows / batch * batch;
        let mut x = vec![0f32; batch * d];
        for chunk in order[..whole].chunks_exact(batch) {
            if trainer.done() {
                break;
            }
            for (dst, &r) in x.chunks_exact_mut(d).zip(chunk) {
                dst.copy_from_slice(&self.buffer[r * d..(r + 1) * d]);
            }
            let s = trainer
                .train_step(&x)
                .map_err(|m| EngineError::Runtime(format!("sink `{}`: {m}", self.name)))?;
            if !s.loss.is_finite() {
                return Err(EngineError::Runtime(format!(
                    "sink `{}`: loss became {} at step {} (learning rate too high?)",
                    self.name, s.loss, trainer.step
                )));
            }
            if trainer.step == 1 || trainer.step.is_multiple_of(self.cfg.log_every.max(1)) {
                let dead = trainer.dead().iter().filter(|&&v| v).count() as f64 / trainer.params.m as f64;
                tracing::info!(
                    "sae_train step {:>6}  tokens {:>10}  loss {:.4}  fvu {:.4}  l0 {:.1}  dead {:.3}  {:.0} tok/s",
                    trainer.step,
                    trainer.tokens,
                    s.loss,
                    s.fvu,
                    s.l0,
                    dead,
                    trainer.tokens as f64 / self.started.elapsed().as_secs_f64()
                );
            }
            if self.cfg.checkpoint_every > 0 && trainer.step.is_multiple_of(self.cfg.checkpoint_every) {
                let path = trainer
                    .save_checkpoint(&self.out.join("checkpoints"))
                    .map_err(|m| EngineError::Output {
                        path: self.out.join("checkpoints"),
                        message: m,
                    })?;
                tracing::info!("sae_train: checkpoint {}", path.display());
            }
        }
        let rest: Vec<f32> = order[whole..]
            .iter()
            .flat_map(|&r| self.buffer[r * d..(r + 1) * d].iter().copied())
            .collect();
        self.buffer = rest;
        Ok(())
    }
}

impl SinkWriter for TrainWriter {
    fn write(&mut self, batch: &Batch) -> Result<()> {
        if self.failed {
            return Ok(());
        }
        let result = self.accept(batch);
        self.failed = result.is_err();
        result
    }

    fn finish(mut self: Box<Self>, failure: Option<&str>) -> Result<Vec<String>> {
        self.complete(failure)
    }
}

impl TrainWriter {
    /// Buffers a frame's rows, training whenever the buffer fills.
    fn accept(&mut self, batch: &Batch) -> Result<()> {
        let Batch::Dense(frame) = batch else {
            return Err(self.fail("sae_train reads dense activation frames".into()));
        };
        if self.trainer.as_ref().is_some_and(|t| t.done()) {
            return Ok(());
        }
        let d = self.settings.d_in;
        if frame.width() != d {
            return Err(self.fail(format!(
                "stream {}: rows of width {}, the SAE is being trained on d_in {d}",
                frame.stream,
                frame.width()
            )));
        }
        if let Some((r, c)) = frame.first_non_finite() {
            return Err(self.fail(format!(
                "stream {}, {}: value {} in column {c} is not finite; training stopped (checkpoints so far are intact)",
                frame.stream,
                frame.index.describe_row(r),
                frame.data[r * d + c]
            )));
        }
        let positions = match &frame.index {
            RowIndex::Tokens { pos, .. } => Some(pos),
            RowIndex::Samples(_) => None,
        };
        for r in 0..frame.rows() {
            self.rows_seen += 1;
            if positions.is_some_and(|p| p[r] < self.cfg.skip_first) {
                self.skipped += 1;
                continue;
            }
            self.buffer.extend_from_slice(&frame.data[r * d..(r + 1) * d]);
            if self.cfg.epochs > 1 {
                self.store.extend_from_slice(&frame.data[r * d..(r + 1) * d]);
            }
            if self.buffer.len() >= self.capacity * d {
                self.drain()?;
            }
        }
        Ok(())
    }

    /// Trains on what is left, writes the SAE and the report.
    fn complete(&mut self, failure: Option<&str>) -> Result<Vec<String>> {
        if failure.is_some() || self.failed {
            return Ok(vec![format!(
                "sink `{}`: run failed; no SAE written (checkpoints under {} are intact)",
                self.name,
                self.out.join("checkpoints").display()
            )]);
        }
        let d = self.settings.d_in;
        if self.buffer.len() >= self.settings.batch * d || (self.trainer.is_none() && !self.buffer.is_empty()) {
            self.drain()?;
        }
        // Further epochs replay the stored rows through the same shuffle buffer.
        let store = std::mem::take(&mut self.store);
        for epoch in 1..self.cfg.epochs {
            if self.trainer.as_ref().is_none_or(|t| t.done()) {
                break;
            }
            tracing::info!("sae_train: epoch {} of {}", epoch + 1, self.cfg.epochs);
            for row in store.chunks_exact(d) {
                self.buffer.extend_from_slice(row);
                if self.buffer.len() >= self.capacity * d {
                    self.drain()?;
                }
            }
            if self.buffer.len() >= self.settings.batch * d {
                self.drain()?;
            }
        }
        let left = self.buffer.len() / d;
        let Some(t) = self.trainer.as_ref() else {
            return Err(self.fail(format!(
                "no activations to train on ({} rows arrived, {} skipped by skip_first)",
                self.rows_seen, self.skipped
            )));
        };
        if t.step == 0 {
            return Err(self.fail(format!(
                "{} tokens arrived, fewer than one batch of {}: nothing trained",
                left, self.settings.batch
            )));
        }
        let out_err = |m: String| EngineError::Output {
            path: self.out.clone(),
            message: m,
        };
        let mut lines = Vec::new();
        if self.cfg.formats.iter().any(|f| f == "saelens") {
            export::write_saelens(t, &self.out, &self.prov).map_err(out_err)?;
            lines.push(format!("wrote the SAE (SAELens format) to {}", self.out.display()));
        }
        if self.cfg.formats.iter().any(|f| f == "sparsify") && matches!(t.settings.arch, TrainArch::TopK { .. }) {
            let hook = self.prov.layer.clone().unwrap_or_else(|| "sae".into());
            let dir = self.out.join("sparsify").join(&hook);
            export::write_sparsify(t, &dir).map_err(out_err)?;
            lines.push(format!("wrote the sparsify format to {}", dir.display()));
        }
        let dead = t.dead().iter().filter(|&&v| v).count() as f64 / t.params.m as f64;
        let secs = self.started.elapsed().as_secs_f64();
        let report = serde_json::json!({
            "settings": t.settings,
            "steps": t.step,
            "tokens": t.tokens,
            "tokens_left_unused": left,
            "tokens_skipped": self.skipped,
            "norm_scaling_factor": t.scale,
            "batchtopk_threshold": t.threshold,
            "final_batch": {"loss": t.last.loss, "mse": t.last.mse, "fvu": t.last.fvu, "l0": t.last.l0, "aux": t.last.aux},
            "dead_fraction": dead,
            "never_fired_fraction": t.fired.iter().filter(|&&c| c == 0).count() as f64 / t.params.m as f64,
            "seconds": secs,
            "tokens_per_s": t.tokens as f64 / secs,
        });
        export::write_json(&self.out.join("train_report.json"), &report).map_err(out_err)?;
        if self.resumed_at == Some(t.step) {
            lines.push(format!(
                "resumed at step {}: the token budget was already used, nothing more trained",
                t.step
            ));
            return Ok(lines);
        }
        lines.push(format!(
            "trained {} steps on {} tokens ({:.0} tok/s): final batch fvu {:.4}, l0 {:.1}, dead {:.3}",
            t.step,
            t.tokens,
            t.tokens as f64 / secs,
            t.last.fvu,
            t.last.l0,
            dead
        ));
        Ok(lines)
    }
}
