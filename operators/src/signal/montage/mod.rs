//! `pick` and `reref`: channel selection and re-referencing of signal streams, each a fixed
//! spatial map (see [`super::spatial`]) built once from the channel names.
//!
//! - `pick`: the channels named (labels or glob patterns), in that order; `exclude` drops;
//!   `types` keeps only channels of those types (`eeg`, `eog`, `mag`, ...).
//! - `reref`, `method = "average"`: each channel minus the mean of all (common average
//!   reference, as MNE's `set_eeg_reference("average")`); channels in `exclude` (EOG, EMG,
//!   triggers) neither join the mean nor change.
//! - `reref`, `method = "channels"`: each channel minus the mean of the `reference` channels
//!   (linked mastoids `["M1", "M2"]`); `drop_reference = true` removes those channels.
//! - `reref`, `method = "bipolar"`: one output per `pairs` entry `"A-B"` = A − B (a bipolar
//!   montage, as MNE's `set_bipolar_reference`), named as written.

use std::sync::Arc;

use neurostream_engine::kernels::Kernels;
use neurostream_engine::{
    Batch, Channel, ComputeDevice, EngineError, NodeConfig, NodeContext, Operator, OperatorInstance, OperatorKind, Partitioning,
    Result, Schema,
};
use serde::{Deserialize, Serialize};

use super::spatial::{CpuSpatial, GpuSpatial, SpatialKernels};

/// Configuration of a `pick` operator.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct PickConfig {
    /// Channels to keep, by label or glob pattern, in this order (default: all).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub channels: Option<Vec<String>>,
    /// Channels to drop, by label or glob pattern.
    #[serde(default)]
    pub exclude: Vec<String>,
    /// Keep only channels of these types (`eeg`, `mag`, `grad`, `eog`, ...; from the source's
    /// channel metadata), applied after `channels` and `exclude`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub types: Vec<String>,
}

impl NodeConfig for PickConfig {
    const KIND: &'static str = "pick";
}

/// Configuration of a `reref` operator.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RerefConfig {
    /// `average` (default), `channels` or `bipolar`.
    #[serde(default = "default_method")]
    pub method: String,
    /// `channels`: the reference channels (their mean is subtracted).
    #[serde(default)]
    pub reference: Vec<String>,
    /// `channels`: drop the reference channels from the output.
    #[serde(default)]
    pub drop_reference: bool,
    /// `bipolar`: `"A-B"` pairs, one output channel each.
    #[serde(default)]
    pub pairs: Vec<String>,
    /// `average`: channels (labels or patterns) left out of the mean and left unchanged.
    #[serde(default)]
    pub exclude: Vec<String>,
}

fn default_method() -> String {
    "average".into()
}

impl NodeConfig for RerefConfig {
    const KIND: &'static str = "reref";
}

/// Indices of the channels matching `pattern` (a label or a glob pattern), in order; the
/// error names `key`, the key the pattern was written under.
pub fn match_channels(schema: &Schema, key: &str, pattern: &str) -> std::result::Result<Vec<usize>, String> {
    let glob = glob::Pattern::new(pattern).map_err(|e| format!("key `{key}`: pattern `{pattern}`: {e}"))?;
    let hits: Vec<usize> = schema
        .channels
        .iter()
        .enumerate()
        .filter(|(_, c)| c.name == pattern || glob.matches(&c.name))
        .map(|(i, _)| i)
        .collect();
    if hits.is_empty() {
        return Err(no_channel(schema, key, pattern));
    }
    Ok(hits)
}

/// The channels matching each of `patterns` (written under `key`); every pattern that
/// matches nothing is its own problem.
fn match_all(schema: &Schema, key: &str, patterns: &[String], label: &str) -> Result<Vec<Vec<usize>>> {
    let (found, missing): (Vec<_>, Vec<_>) = patterns
        .iter()
        .map(|p| match_channels(schema, key, p))
        .partition(|r| r.is_ok());
    if missing.is_empty() {
        Ok(found.into_iter().flatten().collect())
    } else {
        Err(EngineError::Invalid(
            missing
                .into_iter()
                .filter_map(|r| r.err())
                .map(|m| format!("{label}: {m}"))
                .collect(),
        ))
    }
}

fn no_channel(schema: &Schema, key: &str, name: &str) -> String {
    let names = schema.channel_names();
    format!(
        "key `{key}`: no channel `{name}` in the input{}; it has: {}",
        neurostream_engine::suggest::hint(name, names.iter().copied()),
        names.join(", ")
    )
}

fn one_channel(schema: &Schema, key: &str, name: &str) -> std::result::Result<usize, String> {
    schema
        .channels
        .iter()
        .position(|c| c.name == name)
        .ok_or_else(|| no_channel(schema, key, name))
}

/// The `pick` operator kind.
pub struct PickKind;

impl OperatorKind for PickKind {
    type Config = PickConfig;

    fn describe(&self) -> &'static str {
        "keeps the signal channels named (labels or glob patterns), in that order"
    }
    fn build(&self, cfg: PickConfig, ctx: &NodeContext, input: &Arc<Schema>) -> Result<Arc<dyn Operator>> {
        let fail = |m: String| EngineError::config(ctx.label, m);
        super::signal_rate(PickConfig::KIND, input, ctx)?;
        let mut keep: Vec<usize> = Vec::new();
        match &cfg.channels {
            None => keep.extend(0..input.width()),
            Some(list) => {
                for i in match_all(input, "channels", list, ctx.label)?.into_iter().flatten() {
                    if !keep.contains(&i) {
                        keep.push(i);
                    }
                }
            }
        }
        for drop in match_all(input, "exclude", &cfg.exclude, ctx.label)? {
            keep.retain(|i| !drop.contains(i));
        }
        if !cfg.types.is_empty() {
            for t in &cfg.types {
                neurostream_engine::schema::check_channel_type(t).map_err(fail)?;
            }
            if input.channels.iter().all(|c| c.kind.is_empty()) {
                return Err(fail(format!(
                    "`types` needs channel types, and the input's channels have none ({}); pick them by name",
                    input.channel_names().join(", ")
                )));
            }
            keep.retain(|&i| cfg.types.contains(&input.channels[i].kind));
        }
        if keep.is_empty() {
            let types: Vec<String> = input
                .channels
                .iter()
                .map(|c| format!("{} ({})", c.name, if c.kind.is_empty() { "no type" } else { &c.kind }))
                .collect();
            return Err(fail(format!("no channels left; the input has {}", types.join(", "))));
        }
        let cin = input.width();
        let mut matrix = vec![0f32; cin * keep.len()];
        for (o, &i) in keep.iter().enumerate() {
            matrix[i * keep.len() + o] = 1.0;
        }
        let channels = keep.iter().map(|&i| input.channels[i].clone()).collect();
        Ok(Arc::new(SpatialMap::new(input, channels, matrix)))
    }
}

/// The `reref` operator kind.
pub struct RerefKind;

impl OperatorKind for RerefKind {
    type Config = RerefConfig;

    fn describe(&self) -> &'static str {
        "re-references signals: common average, reference channels, or bipolar pairs"
    }
    fn build(&self, cfg: RerefConfig, ctx: &NodeContext, input: &Arc<Schema>) -> Result<Arc<dyn Operator>> {
        let fail = |m: String| EngineError::config(ctx.label, m);
        super::signal_rate(RerefConfig::KIND, input, ctx)?;
        let cin = input.width();
        let unused = |key: &str, set: bool| {
            if set {
                Err(fail(format!("key `{key}` does not apply to method {}", cfg.method)))
            } else {
                Ok(())
            }
        };
        let (channels, matrix): (Vec<Channel>, Vec<f32>) = match cfg.method.as_str() {
            "average" => {
                unused("reference", !cfg.reference.is_empty())?;
                unused("pairs", !cfg.pairs.is_empty())?;
                let mut excluded = vec![false; cin];
                for i in match_all(input, "exclude", &cfg.exclude, ctx.label)?.into_iter().flatten() {
                    excluded[i] = true;
                }
                let n = excluded.iter().filter(|&&e| !e).count();
                if n < 2 {
                    return Err(fail(format!("an average reference needs at least 2 channels, {n} are left")));
                }
                let mut m = vec![0f32; cin * cin];
                for o in 0..cin {
                    m[o * cin + o] = 1.0;
                    if !excluded[o] {
                        for (i, &e) in excluded.iter().enumerate() {
                            if !e {
                                m[i * cin + o] -= 1.0 / n as f32;
                            }
                        }
                    }
                }
                (input.channels.clone(), m)
            }
            "channels" => {
                unused("pairs", !cfg.pairs.is_empty())?;
                unused("exclude", !cfg.exclude.is_empty())?;
                if cfg.reference.is_empty() {
                    return Err(fail("method channels needs `reference` (e.g. [\"M1\", \"M2\"])".into()));
                }
                let refs: Vec<usize> = cfg
                    .reference
                    .iter()
                    .map(|r| one_channel(input, "reference", r))
                    .collect::<std::result::Result<_, _>>()
                    .map_err(fail)?;
                let outs: Vec<usize> = (0..cin).filter(|i| !(cfg.drop_reference && refs.contains(i))).collect();
                let cout = outs.len();
                let mut m = vec![0f32; cin * cout];
                for (o, &c) in outs.iter().enumerate() {
                    m[c * cout + o] += 1.0;
                    for &r in &refs {
                        m[r * cout + o] -= 1.0 / refs.len() as f32;
                    }
                }
                (outs.iter().map(|&i| input.channels[i].clone()).collect(), m)
            }
            "bipolar" => {
                unused("reference", !cfg.reference.is_empty())?;
                unused("exclude", !cfg.exclude.is_empty())?;
                if cfg.pairs.is_empty() {
                    return Err(fail("method bipolar needs `pairs` (e.g. [\"Fp1-F7\", \"F7-T7\"])".into()));
                }
                let cout = cfg.pairs.len();
                let mut m = vec![0f32; cin * cout];
                let mut channels = Vec::new();
                for (o, pair) in cfg.pairs.iter().enumerate() {
                    // Labels may contain '-' themselves (`EEG Fpz-Cz`): try every split point.
                    let split = pair
                        .match_indices('-')
                        .map(|(at, _)| (&pair[..at], &pair[at + 1..]))
                        .find(|(a, b)| {
                            one_channel(input, "pairs", a.trim()).is_ok() && one_channel(input, "pairs", b.trim()).is_ok()
                        });
                    let Some((a, b)) = split else {
                        return Err(fail(format!(
                            "key `pairs`: pair `{pair}` is not `A-B` with two channels of the input ({})",
                            input.channel_names().join(", ")
                        )));
                    };
                    let (a, b) = (
                        one_channel(input, "pairs", a.trim()).unwrap(),
                        one_channel(input, "pairs", b.trim()).unwrap(),
                    );
                    m[a * cout + o] += 1.0;
                    m[b * cout + o] -= 1.0;
                    channels.push(Channel {
                        name: pair.clone(),
                        unit: input.channels[a].unit.clone(),
                        kind: input.channels[a].kind.clone(),
                    });
                }
                (channels, m)
            }
            other => return Err(fail(format!("`method` {other}: average, channels or bipolar"))),
        };
        Ok(Arc::new(SpatialMap::new(input, channels, matrix)))
    }
}

/// A fixed spatial map from the input channels to named output channels.
pub struct SpatialMap {
    schema: Arc<Schema>,
    cin: usize,
    matrix: Arc<Vec<f32>>,
}

impl SpatialMap {
    /// The map `matrix` (`input.width() × channels.len()`, row-major) to `channels`.
    pub fn new(input: &Schema, channels: Vec<Channel>, matrix: Vec<f32>) -> SpatialMap {
        SpatialMap {
            cin: input.width(),
            schema: Arc::new(Schema {
                kind: input.kind.clone(),
                channels,
            }),
            matrix: Arc::new(matrix),
        }
    }
}

impl Operator for SpatialMap {
    fn takes_device_rows(&self) -> bool {
        true
    }
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
        let kernels = Kernels::select(
            "spatial map",
            device,
            |ctx| Ok(Box::new(GpuSpatial::new(ctx)?) as Box<dyn SpatialKernels>),
            Box::new(|| Box::new(CpuSpatial) as Box<dyn SpatialKernels>),
        )?;
        Ok(Box::new(SpatialInstance {
            schema: self.schema.clone(),
            cin: self.cin,
            matrix: self.matrix.clone(),
            kernels,
            keep_on_device: false,
        }))
    }
}

struct SpatialInstance {
    schema: Arc<Schema>,
    cin: usize,
    matrix: Arc<Vec<f32>>,
    kernels: Kernels<dyn SpatialKernels>,
    /// The runtime lets GPU output stay on the device.
    keep_on_device: bool,
}

impl OperatorInstance for SpatialInstance {
    fn keep_output_on_device(&mut self) {
        self.keep_on_device = true;
    }

    fn process(&mut self, batch: Batch, out: &mut Vec<Batch>) -> Result<()> {
        let Batch::Dense(mut frame) = batch else {
            return Err(EngineError::Shape(format!(
                "spatial maps take dense frames; stream {} is not",
                batch.stream()
            )));
        };
        let cout = self.schema.width();
        if frame.width() != self.cin {
            return Err(EngineError::Shape(format!(
                "stream {}: rows of width {} but the map takes {}",
                frame.stream,
                frame.width(),
                self.cin
            )));
        }
        let matrix = &self.matrix;
        let keep = self.keep_on_device;
        let rows = self.kernels.run(|k| k.apply_frame(&frame, matrix, cout, keep))?;
        frame.schema = self.schema.clone();
        frame.set_rows(rows, keep)?;
        out.push(Batch::Dense(frame));
        Ok(())
    }
}
