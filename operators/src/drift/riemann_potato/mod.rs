//! `riemann_potato`: artifact detection on EEG windows in the style of pyRiemann's Potato.
//!
//! Each window (sliding `window_s`/`step_s`, or epochs around markers, as `bandpower` cuts
//! them) gives a spatial covariance `C = X̃ᵀX̃ / n` (channels centred over the window). The
//! first `reference_windows` windows fit the potato: the Riemannian mean of the clean ones and
//! the mean / std of their log-distances, rejecting windows with z ≥ `threshold` until stable.
//! Every window (reference ones included, once fitted) is then scored. Output: a signal stream (at the
//! input's rate, like `bandpower`) of `distance` (affine-invariant Riemannian distance to the mean), `z` (z-score of its log) and
//! `artifact` (1 when `z ≥ threshold`), one row per window indexed by its last sample, with the
//! window's marker label. Alerts: a `token_stats` operator on this output (`mean_above` on
//! `artifact`).
//!
//! A window whose covariance is not positive definite (a flat channel) is an error naming the
//! window, unless `regularization = ε` adds `ε · trace(C)/c` to the diagonal (documented
//! shrinkage towards a scaled identity). The covariance product runs on the operator's device;
//! the eigen-decompositions on the host in float64.

pub mod riemann;

use std::collections::HashMap;
use std::sync::Arc;

use nalgebra::DMatrix;
use neurostream_engine::kernels::Kernels;
use neurostream_engine::layout::check_values;
use neurostream_engine::{
    Batch, ComputeDevice, EngineError, Frame, GpuContext, Marker, NodeConfig, NodeContext, Operator, OperatorInstance,
    OperatorKind, Partitioning, Result, RowIndex, Schema,
};
use serde::{Deserialize, Serialize};

use crate::gpu_gemm::{self, GemmCall};
use crate::signal::windows::{Window, WindowConfig, WindowSpec, Windower, WindowerState};
use riemann::{eigen_range, Potato};

/// Configuration of a `riemann_potato` operator.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct PotatoConfig {
    /// How windows are cut (as `bandpower`).
    #[serde(flatten)]
    pub windows: WindowConfig,
    /// Windows that fit the potato (default 30).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(extend("x-unit" = "windows"))]
    pub reference_windows: Option<usize>,
    /// z-score of the log-distance at or above which a window is an artifact (default 3).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub threshold: Option<f64>,
    /// Fitting iterations at most (default 100).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub n_iter_max: Option<usize>,
    /// Adds `ε · trace(C)/channels` to every covariance's diagonal (default 0: a singular
    /// covariance is an error).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub regularization: Option<f64>,
}

impl NodeConfig for PotatoConfig {
    const KIND: &'static str = "riemann_potato";
}

/// `XᵀX` of a window (`rows × c`, already centred), float64.
pub trait CovKernels: Send {
    /// The `c × c` Gram matrix of `data`, row-major.
    fn gram(&mut self, data: &[f32], c: usize) -> Result<Vec<f64>>;
}

/// CPU: float64 accumulation.
pub struct CpuCov;

impl CovKernels for CpuCov {
    fn gram(&mut self, data: &[f32], c: usize) -> Result<Vec<f64>> {
        let mut g = vec![0f64; c * c];
        for r in data.chunks_exact(c) {
            for i in 0..c {
                let v = r[i] as f64;
                for j in i..c {
                    g[i * c + j] += v * r[j] as f64;
                }
            }
        }
        for i in 0..c {
            for j in 0..i {
                g[i * c + j] = g[j * c + i];
            }
        }
        Ok(g)
    }
}

/// wgpu: the shared GEMM with a transposed left operand (`Xᵀ · X`).
pub struct GpuCov {
    ctx: Arc<GpuContext>,
    pipeline: gpu_gemm::Gemm,
}

impl GpuCov {
    /// Compiles the kernel on `ctx`.
    pub fn new(ctx: Arc<GpuContext>) -> Result<GpuCov> {
        Ok(GpuCov {
            pipeline: gpu_gemm::pipeline(&ctx)?,
            ctx,
        })
    }
}

impl CovKernels for GpuCov {
    fn gram(&mut self, data: &[f32], c: usize) -> Result<Vec<f64>> {
        let rows = data.len() / c;
        let ctx = &self.ctx;
        let x = ctx.storage_init("potato.x", bytemuck::cast_slice(data));
        let g = ctx.storage_zeroed("potato.gram", (c * c * 4) as u64);
        let dummy = ctx.storage_zeroed("potato.dummy", 4);
        let call = GemmCall::new(c, c, rows, &x, &x, &g).transpose_a();
        let uniform = call.uniform(ctx);
        let bufs = call.buffers(&uniform, &dummy);
        let out = ctx.run(
            &[gpu_gemm::pass(&self.pipeline, &call, &bufs)],
            Some((&g, (c * c * 4) as u64)),
        )?;
        Ok(bytemuck::cast_slice::<u8, f32>(&out).iter().map(|&v| v as f64).collect())
    }
}

/// The `riemann_potato` operator kind.
pub struct PotatoKind;

impl OperatorKind for PotatoKind {
    type Config = PotatoConfig;

    fn describe(&self) -> &'static str {
        "EEG artifact detection: Riemannian distance of window covariances to a reference mean, z-scored (pyRiemann Potato)"
    }

    fn build(&self, cfg: PotatoConfig, ctx: &NodeContext, input: &Arc<Schema>) -> Result<Arc<dyn Operator>> {
        let fail = |m: String| EngineError::config(ctx.label, m);
        let fs = crate::signal::sampled_rate(PotatoConfig::KIND, input, ctx)?;
        let spec = cfg.windows.resolve(fs, input.width()).map_err(fail)?;
        let length = spec.length();
        let c = input.width();
        if length <= c {
            return Err(fail(format!(
                "windows of {length} samples cannot give a full-rank covariance of {c} channels (need more samples than channels)"
            )));
        }
        let reference_windows = cfg.reference_windows.unwrap_or(30);
        if reference_windows < 2 {
            return Err(fail("`reference_windows` must be at least 2".into()));
        }
        check_values("`reference_windows` × channels²", reference_windows, c * c).map_err(fail)?;
        let regularization = cfg.regularization.unwrap_or(0.0);
        if !(regularization >= 0.0 && regularization.is_finite()) {
            return Err(fail(format!("`regularization` must be ≥ 0, found {regularization}")));
        }
        Ok(Arc::new(PotatoOp(Arc::new(Settings {
            schema: Arc::new(Schema::signal(&["distance", "z", "artifact"], "", fs)),
            spec,
            channels: c,
            fs,
            reference_windows,
            threshold: cfg.threshold.unwrap_or(3.0),
            n_iter_max: cfg.n_iter_max.unwrap_or(100).max(1),
            regularization,
            name: ctx.label.to_string(),
        }))))
    }
}

struct Settings {
    schema: Arc<Schema>,
    spec: WindowSpec,
    channels: usize,
    fs: f64,
    reference_windows: usize,
    threshold: f64,
    n_iter_max: usize,
    regularization: f64,
    name: String,
}

struct PotatoOp(Arc<Settings>);

impl Operator for PotatoOp {
    fn output_schema(&self) -> Arc<Schema> {
        self.0.schema.clone()
    }
    fn partitioning(&self) -> Partitioning {
        Partitioning::ByStream
    }
    fn holds_back(&self) -> bool {
        true
    }
    fn checkpointing(&self) -> neurostream_engine::Checkpointing {
        neurostream_engine::Checkpointing::Snapshot
    }
    fn instantiate(&self, device: &ComputeDevice) -> Result<Box<dyn OperatorInstance>> {
        let kernels = Kernels::select(
            "riemann_potato",
            device,
            |ctx| Ok(Box::new(GpuCov::new(ctx)?) as Box<dyn CovKernels>),
            Box::new(|| Box::new(CpuCov) as Box<dyn CovKernels>),
        )?;
        Ok(Box::new(PotatoInstance {
            op: self.0.clone(),
            kernels,
            streams: HashMap::new(),
        }))
    }
}

/// A scored-or-pending window: covariance, last sample, label.
type Pending = (DMatrix<f64>, i64, Option<String>);

struct StreamState {
    windower: Windower,
    pending: Vec<Pending>,
    potato: Option<Potato>,
}

/// [`StreamState`] for a checkpoint: matrices as their `channels²` entries (column-major).
#[derive(Serialize, Deserialize)]
struct SavedState {
    windower: WindowerState,
    pending: Vec<(Vec<f64>, i64, Option<String>)>,
    /// The fitted potato: mean matrix, log-distance mean and std, clean count, threshold.
    potato: Option<(Vec<f64>, f64, f64, usize, f64)>,
}

impl SavedState {
    fn of(st: &StreamState) -> SavedState {
        SavedState {
            windower: st.windower.state(),
            pending: st
                .pending
                .iter()
                .map(|(m, s, l)| (m.as_slice().to_vec(), *s, l.clone()))
                .collect(),
            potato: st
                .potato
                .as_ref()
                .map(|p| (p.mean.as_slice().to_vec(), p.log_mean, p.log_std, p.clean, p.threshold)),
        }
    }

    fn into_state(self, op: &Settings) -> std::result::Result<StreamState, String> {
        let c = op.channels;
        let matrix = |v: Vec<f64>| {
            if v.len() == c * c {
                Ok(DMatrix::from_vec(c, c, v))
            } else {
                Err(format!("a saved covariance has {} entries, not {c}²", v.len()))
            }
        };
        Ok(StreamState {
            windower: Windower::restored(op.spec.clone(), c, op.fs, self.windower)?,
            pending: self
                .pending
                .into_iter()
                .map(|(m, s, l)| Ok((matrix(m)?, s, l)))
                .collect::<std::result::Result<_, String>>()?,
            potato: match self.potato {
                None => None,
                Some((mean, log_mean, log_std, clean, threshold)) => Some(Potato {
                    mean: matrix(mean)?,
                    log_mean,
                    log_std,
                    clean,
                    threshold,
                }),
            },
        })
    }
}

struct PotatoInstance {
    op: Arc<Settings>,
    kernels: Kernels<dyn CovKernels>,
    streams: HashMap<Arc<str>, StreamState>,
}

impl PotatoInstance {
    fn covariance(&mut self, stream: &str, w: &Window) -> Result<DMatrix<f64>> {
        let c = self.op.channels;
        let n = w.data.len() / c;
        let mut mean = vec![0f64; c];
        for r in w.data.chunks_exact(c) {
            mean.iter_mut().zip(r).for_each(|(m, &v)| *m += v as f64);
        }
        mean.iter_mut().for_each(|m| *m /= n as f64);
        let centred: Vec<f32> = w
            .data
            .chunks_exact(c)
            .flat_map(|r| r.iter().zip(&mean).map(|(&v, m)| (v as f64 - m) as f32))
            .collect();
        let g = self.kernels.run(|k| k.gram(&centred, c))?;
        let mut cov = DMatrix::from_row_slice(c, c, &g) / n as f64;
        cov = (&cov + cov.transpose()) * 0.5;
        if self.op.regularization > 0.0 {
            let add = self.op.regularization * cov.trace() / c as f64;
            for i in 0..c {
                cov[(i, i)] += add;
            }
        }
        let (lo, hi) = eigen_range(&cov);
        if !(lo > hi * 1e-12 && lo > 0.0) {
            return Err(EngineError::Runtime(format!(
                "{}: stream {stream}: the covariance of the window ending at sample {} is not positive definite (smallest eigenvalue {lo:.3e}; a flat or duplicated channel?): set `regularization`, e.g. 1e-3",
                self.op.name, w.last_sample
            )));
        }
        Ok(cov)
    }

    fn emit(
        &self,
        stream: &Arc<str>,
        potato: &Potato,
        windows: &[Pending],
        arrival: Option<i64>,
        out: &mut Vec<Batch>,
    ) -> Result<()> {
        if windows.is_empty() {
            return Ok(());
        }
        let mut data = Vec::with_capacity(windows.len() * 3);
        let mut samples = Vec::with_capacity(windows.len());
        let mut markers = Vec::new();
        for (i, (cov, last, label)) in windows.iter().enumerate() {
            let (d, z) = potato.score(cov);
            data.extend([d as f32, z as f32, if z >= potato.threshold { 1.0 } else { 0.0 }]);
            samples.push(*last);
            if let Some(l) = label {
                markers.push(Marker {
                    row: i as u32,
                    label: l.clone(),
                    duration_s: 0.0,
                });
            }
        }
        let mut f = Frame::new(stream.clone(), self.op.schema.clone(), RowIndex::Samples(samples), data)?;
        f.markers = markers;
        f.arrival_ns = arrival;
        out.push(Batch::Dense(f));
        Ok(())
    }

    fn fit(&mut self, stream: &Arc<str>, arrival: Option<i64>, out: &mut Vec<Batch>) -> Result<()> {
        let st = self.streams.get_mut(stream).expect("stream state exists");
        let mats: Vec<DMatrix<f64>> = st.pending.iter().map(|p| p.0.clone()).collect();
        let potato = Potato::fit(&mats, self.op.threshold, self.op.n_iter_max)
            .map_err(|e| EngineError::Runtime(format!("{}: stream {stream}: {e}", self.op.name)))?;
        tracing::info!(
            "{} stream {stream}: potato fitted on {} windows, {} kept as clean",
            self.op.name,
            mats.len(),
            potato.clean
        );
        let pending = std::mem::take(&mut st.pending);
        self.emit(stream, &potato, &pending, arrival, out)?;
        self.streams.get_mut(stream).expect("exists").potato = Some(potato);
        Ok(())
    }
}

impl OperatorInstance for PotatoInstance {
    fn snapshot(&self) -> Result<Vec<u8>> {
        let saved: HashMap<Arc<str>, SavedState> = self.streams.iter().map(|(k, st)| (k.clone(), SavedState::of(st))).collect();
        neurostream_engine::checkpoint::encode_streams(&saved)
    }

    fn restore(&mut self, state: &[u8]) -> Result<()> {
        for (stream, saved) in neurostream_engine::checkpoint::decode_streams::<SavedState>(state, "riemann_potato")? {
            let st = saved
                .into_state(&self.op)
                .map_err(|m| EngineError::Checkpoint(format!("riemann_potato stream {stream}: {m}")))?;
            self.streams.insert(stream, st);
        }
        Ok(())
    }

    fn process(&mut self, batch: Batch, out: &mut Vec<Batch>) -> Result<()> {
        let Batch::Dense(frame) = batch else {
            return Err(EngineError::Shape(format!(
                "{}: riemann_potato takes dense signal frames; stream {} is not",
                self.op.name,
                batch.stream()
            )));
        };
        let stream = frame.stream.clone();
        let op = self.op.clone();
        let st = self.streams.entry(stream.clone()).or_insert_with(|| StreamState {
            windower: Windower::new(op.spec.clone(), op.channels, op.fs),
            pending: Vec::new(),
            potato: None,
        });
        let windows = st.windower.push(&frame);
        let mut scored = Vec::new();
        for w in &windows {
            let cov = self.covariance(&stream, w)?;
            scored.push((cov, w.last_sample, w.label.clone()));
        }
        let st = self.streams.get_mut(&stream).expect("exists");
        if let Some(p) = st.potato.clone() {
            return self.emit(&stream, &p, &scored, frame.arrival_ns, out);
        }
        st.pending.extend(scored);
        if st.pending.len() >= op.reference_windows {
            self.fit(&stream, frame.arrival_ns, out)?;
        }
        Ok(())
    }

    fn finish(&mut self, out: &mut Vec<Batch>) -> Result<()> {
        let streams = neurostream_engine::stream_names(&self.streams);
        for stream in streams {
            self.finish_stream(&stream, out)?;
        }
        Ok(())
    }

    /// Scores what a stream shorter than the reference span collected, then drops its state.
    fn end_stream(&mut self, stream: &Arc<str>, out: &mut Vec<Batch>) -> Result<()> {
        if self.streams.contains_key(stream) {
            self.finish_stream(stream, out)?;
            self.streams.remove(stream);
        }
        Ok(())
    }
}

impl PotatoInstance {
    /// Closes the stream's windows; a stream shorter than the reference span is fitted on the
    /// windows it has and they are scored.
    fn finish_stream(&mut self, stream: &Arc<str>, out: &mut Vec<Batch>) -> Result<()> {
        let st = self.streams.get_mut(stream).expect("exists");
        st.windower.finish();
        if st.potato.is_none() && !st.pending.is_empty() {
            self.fit(stream, None, out)?;
        }
        Ok(())
    }
}
