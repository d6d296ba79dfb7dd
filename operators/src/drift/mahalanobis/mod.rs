//! `mahalanobis`: per-row out-of-distribution score, the Mahalanobis distance of each row to a
//! reference distribution (mean and Ledoit-Wolf-shrunk covariance).
//!
//! The reference is the first `reference_rows` rows of each stream (held back, then scored like
//! every later row), or the rows of a Parquet file (`reference = "ref.parquet"`, activations or
//! signals layout). Output: `mahalanobis` (distance) and `mahalanobis_sq` (its square, what
//! scikit-learn's `LedoitWolf().mahalanobis` returns), one row per input row with the input's
//! row index: token scalars for activations, a signal stream at the input's rate for signals. Windowed summaries and alerts come from a `token_stats` operator on
//! this output (e.g. `mean_above` on `mahalanobis`), which writes the same alert table as the
//! feature monitors.
//!
//! The whitening product `(x − μ) W` (`rows × d × d`) runs on the operator's device.

pub mod reference;

use std::collections::HashMap;
use std::sync::Arc;

use neurostream_engine::kernels::Kernels;
use neurostream_engine::layout::check_values;
use neurostream_engine::{
    Batch, ComputeDevice, EngineError, Frame, NodeConfig, NodeContext, Operator, OperatorInstance, OperatorKind, Partitioning,
    Result, Schema,
};
use serde::{Deserialize, Serialize};

use crate::signal::spatial::{CpuSpatial, GpuSpatial, SpatialKernels};
use reference::{read_parquet_rows, Reference, Shrinkage};

/// Configuration of a `mahalanobis` operator.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct MahalanobisConfig {
    /// A Parquet file of reference rows in the activation or signal layout (as the `parquet` sink
    /// writes them); without it, the first `reference_rows` rows of each stream.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reference: Option<String>,
    /// Rows of the stream that form the reference (default 1000).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(extend("x-unit" = "rows"))]
    pub reference_rows: Option<usize>,
    /// `"ledoit_wolf"` (default) or a fixed coefficient in `[0, 1]`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(with = "Option<serde_json::Value>", extend("x-type" = "string or number"))]
    pub shrinkage: Option<toml::Value>,
}

impl NodeConfig for MahalanobisConfig {
    const KIND: &'static str = "mahalanobis";
}

/// Parses a `shrinkage` key: `"ledoit_wolf"` or a number in `[0, 1]`.
pub fn parse_shrinkage(v: Option<&toml::Value>) -> Result<Shrinkage, String> {
    match v {
        None => Ok(Shrinkage::LedoitWolf),
        Some(toml::Value::String(s)) if s == "ledoit_wolf" => Ok(Shrinkage::LedoitWolf),
        Some(toml::Value::Float(f)) if (0.0..=1.0).contains(f) => Ok(Shrinkage::Fixed(*f)),
        Some(toml::Value::Integer(i)) if (0..=1).contains(i) => Ok(Shrinkage::Fixed(*i as f64)),
        Some(other) => Err(format!(
            "`shrinkage` must be \"ledoit_wolf\" or a number in [0, 1], found {other}"
        )),
    }
}

/// The `mahalanobis` operator kind.
pub struct MahalanobisKind;

impl OperatorKind for MahalanobisKind {
    type Config = MahalanobisConfig;

    fn describe(&self) -> &'static str {
        "per-row Mahalanobis distance to a reference (mean, Ledoit-Wolf covariance) from a reference window or Parquet file"
    }

    fn build(&self, cfg: MahalanobisConfig, ctx: &NodeContext, input: &Arc<Schema>) -> Result<Arc<dyn Operator>> {
        let fail = |m: String| EngineError::config(ctx.label, m);
        if input.is_sparse() || input.is_tables() {
            return Err(fail(format!(
                "mahalanobis takes dense streams; its input is {}",
                input.describe()
            )));
        }
        let d = input.width();
        let shrinkage = parse_shrinkage(cfg.shrinkage.as_ref()).map_err(fail)?;
        let fixed = match &cfg.reference {
            Some(p) => {
                if cfg.reference_rows.is_some() {
                    return Err(fail("`reference_rows` applies only without a `reference` file".into()));
                }
                let path = ctx.input_file(p);
                let rows = read_parquet_rows(&path, d).map_err(fail)?;
                let r = Reference::fit(&rows, d, shrinkage).map_err(|e| fail(format!("reference {}: {e}", path.display())))?;
                tracing::info!(
                    "{}: reference {}: {} rows, shrinkage {:.4}",
                    ctx.label,
                    path.display(),
                    r.rows,
                    r.shrinkage
                );
                Some(Arc::new(r))
            }
            None => None,
        };
        let reference_rows = cfg.reference_rows.unwrap_or(1000);
        if reference_rows < 2 {
            return Err(fail("`reference_rows` must be at least 2".into()));
        }
        check_values("`reference_rows` × channels", reference_rows, d).map_err(fail)?;
        Ok(Arc::new(Mahalanobis {
            schema: Arc::new(match input.sample_rate() {
                Some(fs) => Schema::signal(&["mahalanobis", "mahalanobis_sq"], "", fs),
                None => Schema::token_scalars(&["mahalanobis", "mahalanobis_sq"], Some("mahalanobis".into())),
            }),
            d,
            fixed,
            reference_rows,
            shrinkage,
            name: ctx.label.to_string(),
        }))
    }
}

struct Mahalanobis {
    schema: Arc<Schema>,
    d: usize,
    fixed: Option<Arc<Reference>>,
    reference_rows: usize,
    shrinkage: Shrinkage,
    name: String,
}

impl Operator for Mahalanobis {
    fn output_schema(&self) -> Arc<Schema> {
        self.schema.clone()
    }
    fn partitioning(&self) -> Partitioning {
        if self.fixed.is_some() {
            Partitioning::Local
        } else {
            Partitioning::ByStream
        }
    }
    fn checkpointing(&self) -> neurostream_engine::Checkpointing {
        // The rows collected for a reference, or the fitted whitening.
        neurostream_engine::Checkpointing::Snapshot
    }
    fn holds_back(&self) -> bool {
        self.fixed.is_none()
    }
    fn instantiate(&self, device: &ComputeDevice) -> Result<Box<dyn OperatorInstance>> {
        let kernels = Kernels::select(
            "mahalanobis",
            device,
            |ctx| Ok(Box::new(GpuSpatial::new(ctx)?) as Box<dyn SpatialKernels>),
            Box::new(|| Box::new(CpuSpatial) as Box<dyn SpatialKernels>),
        )?;
        Ok(Box::new(MahalanobisInstance {
            schema: self.schema.clone(),
            d: self.d,
            fixed: self.fixed.clone(),
            reference_rows: self.reference_rows,
            shrinkage: self.shrinkage,
            name: self.name.clone(),
            kernels,
            streams: HashMap::new(),
        }))
    }
}

/// A fitted reference as the kernels take it.
#[derive(Serialize, Deserialize)]
struct Scorer {
    whitening: Vec<f32>,
    whitened_mean: Vec<f64>,
}

impl Scorer {
    fn new(r: &Reference) -> Scorer {
        Scorer {
            whitening: r.whitening.iter().map(|&v| v as f32).collect(),
            whitened_mean: r.whitened_mean(),
        }
    }
}

#[derive(Serialize, Deserialize)]
enum StreamState {
    Collecting(Vec<Frame>, usize),
    Scoring(Scorer),
}

struct MahalanobisInstance {
    schema: Arc<Schema>,
    d: usize,
    fixed: Option<Arc<Reference>>,
    reference_rows: usize,
    shrinkage: Shrinkage,
    name: String,
    kernels: Kernels<dyn SpatialKernels>,
    streams: HashMap<Arc<str>, StreamState>,
}

impl MahalanobisInstance {
    fn score(&mut self, scorer: &Scorer, frame: &Frame) -> Result<Batch> {
        let d = self.d;
        let y = self.kernels.run(|k| k.apply(&frame.data, d, &scorer.whitening, d))?;
        let mut data = Vec::with_capacity(frame.rows() * 2);
        for row in y.chunks_exact(d) {
            let sq: f64 = row
                .iter()
                .zip(&scorer.whitened_mean)
                .map(|(&v, m)| (v as f64 - m) * (v as f64 - m))
                .sum();
            data.push(sq.sqrt() as f32);
            data.push(sq as f32);
        }
        let mut out = Frame::new(frame.stream.clone(), self.schema.clone(), frame.index.clone(), data)?;
        out.markers = frame.markers.clone();
        out.arrival_ns = frame.arrival_ns;
        Ok(Batch::Dense(out))
    }

    fn fit_and_flush(&mut self, stream: &Arc<str>, out: &mut Vec<Batch>) -> Result<()> {
        let Some(StreamState::Collecting(frames, _)) = self.streams.remove(stream) else {
            return Ok(());
        };
        // Exactly the first `reference_rows` rows (all of them when the stream is shorter).
        let take = self.reference_rows * self.d;
        let data: Vec<f32> = frames.iter().flat_map(|f| f.data.iter().copied()).take(take).collect();
        let r = Reference::fit(&data, self.d, self.shrinkage)
            .map_err(|e| EngineError::Runtime(format!("{}: stream {stream}: reference window: {e}", self.name)))?;
        tracing::info!(
            "{} stream {stream}: reference of {} rows, shrinkage {:.4}",
            self.name,
            r.rows,
            r.shrinkage
        );
        let scorer = Scorer::new(&r);
        for f in &frames {
            let b = self.score(&scorer, f)?;
            out.push(b);
        }
        self.streams.insert(stream.clone(), StreamState::Scoring(scorer));
        Ok(())
    }
}

impl OperatorInstance for MahalanobisInstance {
    fn process(&mut self, batch: Batch, out: &mut Vec<Batch>) -> Result<()> {
        let Batch::Dense(frame) = batch else {
            return Err(EngineError::Shape(format!(
                "{}: mahalanobis takes dense frames; stream {} is not",
                self.name,
                batch.stream()
            )));
        };
        if let Some(r) = self.fixed.clone() {
            let scorer = match self.streams.remove(&frame.stream) {
                Some(StreamState::Scoring(s)) => s,
                _ => Scorer::new(&r),
            };
            let b = self.score(&scorer, &frame)?;
            out.push(b);
            self.streams.insert(frame.stream.clone(), StreamState::Scoring(scorer));
            return Ok(());
        }
        let stream = frame.stream.clone();
        match self.streams.remove(&stream) {
            Some(StreamState::Scoring(scorer)) => {
                let b = self.score(&scorer, &frame)?;
                out.push(b);
                self.streams.insert(stream, StreamState::Scoring(scorer));
            }
            state => {
                let (mut frames, mut rows) = match state {
                    Some(StreamState::Collecting(f, r)) => (f, r),
                    _ => (Vec::new(), 0),
                };
                rows += frame.rows();
                frames.push(frame);
                self.streams.insert(stream.clone(), StreamState::Collecting(frames, rows));
                if rows >= self.reference_rows {
                    self.fit_and_flush(&stream, out)?;
                }
            }
        }
        Ok(())
    }

    fn snapshot(&self) -> Result<Vec<u8>> {
        neurostream_engine::checkpoint::encode_streams(&self.streams)
    }

    fn restore(&mut self, state: &[u8]) -> Result<()> {
        for (stream, st) in neurostream_engine::checkpoint::decode_streams::<StreamState>(state, "mahalanobis")? {
            let fits = match &st {
                StreamState::Collecting(frames, rows) => frames.iter().map(Frame::rows).sum::<usize>() == *rows,
                StreamState::Scoring(s) => s.whitening.len() == self.d * self.d && s.whitened_mean.len() == self.d,
            };
            if !fits {
                return Err(EngineError::Checkpoint(format!(
                    "mahalanobis: the saved state of stream {stream} does not fit {} columns",
                    self.d
                )));
            }
            self.streams.insert(stream, st);
        }
        Ok(())
    }

    fn finish(&mut self, out: &mut Vec<Batch>) -> Result<()> {
        let mut pending: Vec<Arc<str>> = self
            .streams
            .iter()
            .filter(|(_, s)| matches!(s, StreamState::Collecting(..)))
            .map(|(k, _)| k.clone())
            .collect();
        pending.sort();
        for stream in pending {
            // A stream shorter than the reference window is scored against itself.
            self.fit_and_flush(&stream, out)?;
        }
        Ok(())
    }

    /// Scores what a stream shorter than the reference window collected, then drops its state.
    fn end_stream(&mut self, stream: &Arc<str>, out: &mut Vec<Batch>) -> Result<()> {
        self.fit_and_flush(stream, out)?;
        self.streams.remove(stream);
        Ok(())
    }
}
