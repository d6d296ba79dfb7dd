//! Decoding signals: CSP spatial filters ([`csp`]) and shrinkage LDA ([`lda`]), fitted offline
//! by the `csp_lda_train` sink (epochs around labelled markers) into a JSON model file
//! ([`BciModel`]), applied online by the `decode` operator to sliding windows or epochs,
//! emitting the CSP log-power features and the class probabilities of each window.

pub mod csp;
pub mod lda;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use neurostream_engine::kernels::Kernels;
use neurostream_engine::{
    Batch, Channel, ComputeDevice, EngineError, Frame, Marker, NodeConfig, NodeContext, Operator, OperatorInstance, OperatorKind,
    Partitioning, Placement, Result, RowIndex, Schema, Sink, SinkKind, SinkWriter, StreamKind, WorkerPos,
};
use serde::{Deserialize, Serialize};

use crate::signal::sampled_rate;
use crate::signal::spatial::{CpuSpatial, GpuSpatial, SpatialKernels};
use crate::signal::windows::{WindowConfig, WindowSpec, Windower};
use csp::Csp;
use lda::Lda;

/// A fitted CSP + LDA decoder, as written to and read from JSON.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct BciModel {
    /// The channels the filters apply to, in order (picked by name from the input).
    pub channels: Vec<String>,
    /// Each channel's unit in the training data (`uV`); empty in models written before units
    /// were recorded. Input in another unit of the same quantity is converted; in another
    /// quantity, refused.
    #[serde(default)]
    pub units: Vec<String>,
    /// Sampling rate of the training data, Hz.
    pub sample_rate: f64,
    /// Class labels (marker labels), in the order of the probabilities.
    pub classes: Vec<String>,
    /// The training epochs' span relative to their markers, seconds.
    pub tmin: f64,
    /// See `tmin`.
    pub tmax: f64,
    /// The spatial filters.
    pub csp: Csp,
    /// The classifier on the CSP features.
    pub lda: Lda,
    /// Epochs trained on.
    pub trained_epochs: usize,
    /// Accuracy on the training epochs.
    pub training_accuracy: f64,
}

impl BciModel {
    /// Reads a model file.
    pub fn load(path: &Path) -> std::result::Result<BciModel, String> {
        let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
        serde_json::from_str(&text).map_err(|e| format!("{}: not a neurostream BCI model: {e}", path.display()))
    }

    /// Writes the model atomically (temporary file, then rename).
    pub fn save(&self, path: &Path) -> std::result::Result<(), String> {
        let text = serde_json::to_string_pretty(self).map_err(|e| e.to_string())?;
        neurostream_engine::files::write_atomic(path, text.as_bytes()).map_err(|e| format!("writing {}: {e}", path.display()))
    }

    /// The class index of the largest probability.
    pub fn predict(&self, features: &[f64]) -> (usize, Vec<f64>) {
        let p = self.lda.proba(features);
        let best = (0..p.len()).max_by(|&a, &b| p[a].total_cmp(&p[b])).unwrap_or(0);
        (best, p)
    }
}

/// Configuration of a `csp_lda_train` sink.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct CspLdaTrainConfig {
    /// The model file to write (JSON).
    pub out: String,
    /// The two class labels (marker labels) to cut epochs around.
    pub epochs: Vec<String>,
    /// Epoch start relative to the marker, seconds.
    #[serde(default)]
    #[schemars(extend("x-unit" = "s"))]
    pub tmin: f64,
    /// Epoch end relative to the marker, seconds.
    #[schemars(extend("x-unit" = "s"))]
    pub tmax: f64,
    /// Drop epochs whose peak-to-peak amplitude exceeds this on any channel.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(extend("x-unit" = "signal units"))]
    pub reject_ptp: Option<f64>,
    /// CSP filters kept (default 4).
    #[serde(default = "default_components")]
    pub n_components: usize,
}

fn default_components() -> usize {
    4
}

impl NodeConfig for CspLdaTrainConfig {
    const KIND: &'static str = "csp_lda_train";
}

/// The `csp_lda_train` sink kind.
pub struct CspLdaTrainKind;

impl SinkKind for CspLdaTrainKind {
    type Config = CspLdaTrainConfig;

    fn describe(&self) -> &'static str {
        "fits CSP + shrinkage LDA on epochs around labelled markers; writes a JSON model for `decode`"
    }
    fn build(&self, cfg: CspLdaTrainConfig, ctx: &NodeContext, input: &Arc<Schema>) -> Result<Arc<dyn Sink>> {
        let fail = |m: String| EngineError::config(ctx.label, m);
        let sample_rate = sampled_rate(CspLdaTrainConfig::KIND, input, ctx)?;
        if cfg.epochs.len() != 2 {
            return Err(fail(format!(
                "`epochs` must name two classes (CSP separates two), found {:?}",
                cfg.epochs
            )));
        }
        let spec = WindowConfig {
            epochs: Some(cfg.epochs.clone()),
            tmin: cfg.tmin,
            tmax: Some(cfg.tmax),
            reject_ptp: cfg.reject_ptp,
            ..Default::default()
        }
        .resolve(sample_rate, input.width())
        .map_err(fail)?;
        if cfg.n_components == 0 || cfg.n_components > input.width() {
            return Err(fail(format!(
                "`n_components` {} must be 1..={} (the channels)",
                cfg.n_components,
                input.width()
            )));
        }
        Ok(Arc::new(CspLdaTrain {
            name: ctx.name.to_string(),
            out: ctx.resolve(&cfg.out),
            schema: input.clone(),
            spec,
            rate: sample_rate,
            cfg,
        }))
    }
}

struct CspLdaTrain {
    name: String,
    out: PathBuf,
    schema: Arc<Schema>,
    spec: WindowSpec,
    rate: f64,
    cfg: CspLdaTrainConfig,
}

impl Sink for CspLdaTrain {
    fn delivery(&self) -> neurostream_engine::checkpoint::Delivery {
        // A resumed run would see only the rows after the checkpoint: it fits on every epoch of the run, held in memory.
        neurostream_engine::checkpoint::Delivery::Unsupported
    }
    fn placement(&self) -> Placement {
        Placement::Single
    }
    fn open(&self, _worker: WorkerPos) -> Result<Box<dyn SinkWriter>> {
        Ok(Box::new(TrainWriter {
            name: self.name.clone(),
            out: self.out.clone(),
            schema: self.schema.clone(),
            cfg: self.cfg.clone(),
            rate: self.rate,
            windowers: HashMap::new(),
            spec: self.spec.clone(),
            epochs: Vec::new(),
            labels: Vec::new(),
        }))
    }
}

struct TrainWriter {
    name: String,
    out: PathBuf,
    schema: Arc<Schema>,
    cfg: CspLdaTrainConfig,
    rate: f64,
    spec: WindowSpec,
    windowers: HashMap<Arc<str>, Windower>,
    epochs: Vec<Vec<f32>>,
    labels: Vec<usize>,
}

impl SinkWriter for TrainWriter {
    fn write(&mut self, batch: &Batch) -> Result<()> {
        let Batch::Dense(frame) = batch else {
            return Ok(());
        };
        let (spec, c, rate) = (self.spec.clone(), self.schema.width(), self.rate);
        let w = self
            .windowers
            .entry(frame.stream.clone())
            .or_insert_with(|| Windower::new(spec, c, rate));
        for win in w.push(frame) {
            let label = win.label.unwrap_or_default();
            let class = self.cfg.epochs.iter().position(|l| *l == label).unwrap_or(0);
            self.epochs.push(win.data);
            self.labels.push(class);
        }
        Ok(())
    }

    fn finish(mut self: Box<Self>, failure: Option<&str>) -> Result<Vec<String>> {
        if failure.is_some() {
            return Ok(vec!["no model written (the run failed)".to_string()]);
        }
        let fail = |m: String| EngineError::Runtime(format!("sink `{}`: {m}", self.name));
        let mut rejected = 0;
        for w in self.windowers.values_mut() {
            w.finish();
            rejected += w.rejected;
        }
        let c = self.schema.width();
        let counts: Vec<usize> = (0..2).map(|k| self.labels.iter().filter(|&&l| l == k).count()).collect();
        let csp = Csp::fit(&self.epochs, &self.labels, c, self.cfg.n_components).map_err(fail)?;
        let features: Vec<Vec<f64>> = self.epochs.iter().map(|e| csp.features(e, c)).collect();
        let lda = Lda::fit(&features, &self.labels, 2).map_err(fail)?;
        let correct = features
            .iter()
            .zip(&self.labels)
            .filter(|(f, &l)| {
                let p = lda.proba(f);
                (p[1] > p[0]) as usize == l
            })
            .count();
        let model = BciModel {
            channels: self.schema.channels.iter().map(|ch| ch.name.clone()).collect(),
            units: self.schema.channels.iter().map(|ch| ch.unit.clone()).collect(),
            sample_rate: self.rate,
            classes: self.cfg.epochs.clone(),
            tmin: self.cfg.tmin,
            tmax: self.cfg.tmax,
            csp,
            lda,
            trained_epochs: self.epochs.len(),
            training_accuracy: correct as f64 / self.epochs.len() as f64,
        };
        model.save(&self.out).map_err(|m| EngineError::Output {
            path: self.out.clone(),
            message: m,
        })?;
        Ok(vec![format!(
            "fitted CSP ({} filters) + LDA on {} epochs ({} {}, {} {}; {rejected} rejected), training accuracy {:.3}; wrote {}",
            model.csp.filters.len(),
            model.trained_epochs,
            counts[0],
            model.classes[0],
            counts[1],
            model.classes[1],
            model.training_accuracy,
            self.out.display()
        )])
    }
}

/// Configuration of a `decode` operator.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct DecodeConfig {
    /// The model file written by `csp_lda_train` / `neurostream bci train`.
    pub model: String,
    /// Which windows to decode (sliding `window_s`/`step_s`, or `epochs` for evaluation).
    #[serde(flatten)]
    pub windows: WindowConfig,
}

impl NodeConfig for DecodeConfig {
    const KIND: &'static str = "decode";
}

/// The `decode` operator kind.
pub struct DecodeKind;

impl OperatorKind for DecodeKind {
    type Config = DecodeConfig;

    fn describe(&self) -> &'static str {
        "applies a CSP + LDA model to windows: CSP log-power features and class probabilities per window"
    }
    fn build(&self, cfg: DecodeConfig, ctx: &NodeContext, input: &Arc<Schema>) -> Result<Arc<dyn Operator>> {
        let fail = |m: String| EngineError::config(ctx.label, m);
        let sample_rate = sampled_rate(DecodeConfig::KIND, input, ctx)?;
        let model = BciModel::load(&ctx.input_file(&cfg.model)).map_err(fail)?;
        if (model.sample_rate - sample_rate).abs() > 1e-9 {
            return Err(fail(format!(
                "the model was trained at {} Hz, the input is at {sample_rate} Hz",
                model.sample_rate
            )));
        }
        let picks: Vec<usize> = model
            .channels
            .iter()
            .map(|name| {
                input.channels.iter().position(|c| c.name == *name).ok_or_else(|| {
                    format!(
                        "the model needs channel `{name}`, missing from the input ({})",
                        input.channel_names().join(", ")
                    )
                })
            })
            .collect::<std::result::Result<_, _>>()
            .map_err(fail)?;
        if cfg.windows.reject_ptp.is_some() {
            return Err(fail(
                "`reject_ptp` is for training (csp_lda_train); decode scores every window".into(),
            ));
        }
        let spec = cfg.windows.resolve(sample_rate, input.width()).map_err(fail)?;
        let fitted: Vec<(String, String)> = model
            .channels
            .iter()
            .enumerate()
            .map(|(i, c)| (c.clone(), model.units.get(i).cloned().unwrap_or_default()))
            .collect();
        let what = format!("the model {}", cfg.model);
        let scales = neurostream_engine::schema::fitted_unit_factors(&what, &fitted, input, &picks).map_err(fail)?;
        let n = model.csp.filters.len();
        // One matrix: pick the model's channels, bring them to the training units and apply
        // the filters (input width × n).
        let mut matrix = vec![0f32; input.width() * n];
        for (k, w) in model.csp.filters.iter().enumerate() {
            for (ci, &p) in picks.iter().enumerate() {
                matrix[p * n + k] = (w[ci] * scales[ci]) as f32;
            }
        }
        let mut channels: Vec<Channel> = (0..n)
            .map(|k| Channel {
                name: format!("csp{k}"),
                ..Channel::default()
            })
            .collect();
        channels.extend(model.classes.iter().map(|c| Channel {
            name: format!("p:{c}"),
            ..Channel::default()
        }));
        channels.push(Channel {
            name: "class".into(),
            ..Channel::default()
        });
        Ok(Arc::new(Decode {
            schema: Arc::new(Schema {
                kind: StreamKind::Signal {
                    sample_rate,
                    row_rate: Some(spec.row_rate(input.row_rate())),
                },
                channels,
            }),
            matrix: Arc::new(matrix),
            model: Arc::new(model),
            spec,
            rate: sample_rate,
        }))
    }
}

struct Decode {
    schema: Arc<Schema>,
    matrix: Arc<Vec<f32>>,
    model: Arc<BciModel>,
    spec: WindowSpec,
    rate: f64,
}

impl Operator for Decode {
    fn output_schema(&self) -> Arc<Schema> {
        self.schema.clone()
    }
    fn takes_device_rows(&self) -> bool {
        true
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
            "decode",
            device,
            |ctx| Ok(Box::new(GpuSpatial::new(ctx)?) as Box<dyn SpatialKernels>),
            Box::new(|| Box::new(CpuSpatial) as Box<dyn SpatialKernels>),
        )?;
        let sources = Arc::new(Schema {
            kind: StreamKind::Signal {
                sample_rate: self.rate,
                row_rate: None,
            },
            channels: self.schema.channels[..self.model.csp.filters.len()].to_vec(),
        });
        Ok(Box::new(DecodeInstance {
            sources,
            schema: self.schema.clone(),
            matrix: self.matrix.clone(),
            model: self.model.clone(),
            spec: self.spec.clone(),
            rate: self.rate,
            kernels,
            windowers: HashMap::new(),
        }))
    }
}

struct DecodeInstance {
    schema: Arc<Schema>,
    /// The CSP sources' schema (the windows are cut from them).
    sources: Arc<Schema>,
    matrix: Arc<Vec<f32>>,
    model: Arc<BciModel>,
    spec: WindowSpec,
    rate: f64,
    kernels: Kernels<dyn SpatialKernels>,
    windowers: HashMap<Arc<str>, Windower>,
}

impl OperatorInstance for DecodeInstance {
    fn process(&mut self, batch: Batch, out: &mut Vec<Batch>) -> Result<()> {
        let Batch::Dense(frame) = batch else {
            return Err(EngineError::Shape(format!(
                "decode takes dense frames; stream {} is not",
                batch.stream()
            )));
        };
        // The projection is linear per sample, so each chunk is projected once as it arrives
        // and the windows are cut from the n CSP sources, not from every channel.
        let n = self.model.csp.filters.len();
        // Rows a GPU filter left on the device are projected there: only the n sources come back.
        let projected = {
            let matrix = &self.matrix;
            self.kernels.run(|k| k.apply_frame(&frame, matrix, n, false))?.into_host()?
        };
        let mut sources = Frame::new(frame.stream.clone(), self.sources.clone(), frame.index.clone(), projected)?;
        sources.markers = frame.markers.clone();
        let (spec, rate) = (self.spec.clone(), self.rate);
        let windows = self
            .windowers
            .entry(frame.stream.clone())
            .or_insert_with(|| Windower::new(spec, n, rate))
            .push(&sources);
        if windows.is_empty() {
            return Ok(());
        }
        let mut data = Vec::with_capacity(windows.len() * self.schema.width());
        let mut markers = Vec::new();
        for (i, w) in windows.iter().enumerate() {
            let feats = Csp::log_power(&w.data, n);
            let (best, p) = self.model.predict(&feats);
            data.extend(feats.iter().map(|&v| v as f32));
            data.extend(p.iter().map(|&v| v as f32));
            data.push(best as f32);
            if let Some(l) = &w.label {
                markers.push(Marker {
                    row: i as u32,
                    label: l.clone(),
                    duration_s: 0.0,
                });
            }
        }
        let samples = windows.iter().map(|w| w.last_sample).collect();
        let mut f = Frame::new(frame.stream.clone(), self.schema.clone(), RowIndex::Samples(samples), data)?;
        f.markers = markers;
        f.arrival_ns = frame.arrival_ns;
        out.push(Batch::Dense(f));
        Ok(())
    }

    /// Drops the stream's window buffer (an incomplete window decides nothing, as at the end).
    fn end_stream(&mut self, stream: &Arc<str>, _out: &mut Vec<Batch>) -> Result<()> {
        self.windowers.remove(stream);
        Ok(())
    }

    fn snapshot(&self) -> Result<Vec<u8>> {
        crate::signal::windows::snapshot_windowers(&self.windowers)
    }

    fn restore(&mut self, state: &[u8]) -> Result<()> {
        let n = self.model.csp.filters.len();
        self.windowers = crate::signal::windows::restore_windowers(state, "decode", &self.spec, n, self.rate)?;
        Ok(())
    }
}
