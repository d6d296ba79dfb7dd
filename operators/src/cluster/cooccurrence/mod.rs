//! `cooccurrence`: which sparse features (SAE latents) fire together, over sliding windows of
//! tokens, blocks of tokens or whole sequences, counted incrementally in sorted runs (see
//! [`pair_counts`]).
//!
//! A feature *fires* in a window when its value exceeds `threshold` on any row of the window.
//! Counts cover the last `span_windows` windows (all windows when unset): when a window leaves
//! the span its counts are retracted. Every `report_every` windows and at the end it writes:
//!
//! | table | rows |
//! | --- | --- |
//! | `pairs` | the sparse affinity table: every pair `feature_a < feature_b` co-firing in at least `min_count` windows: `count`, `count_a`, `count_b`, `jaccard`, `dice`, `simple_matching`, `phi` |
//! | `partners` | per feature, its `top_n` partners by `rank_by`: `feature`, `rank`, `partner`, `count`, `value` |
//! | `components` | with `component_threshold`: per firing feature, its connected component in the graph of pairs whose `component_measure` (jaccard or dice) reaches the threshold: `feature`, `component` (smallest feature id in it), `component_size` |
//! | `clusters` | with `clusters = K`: spectral clustering of the features firing in at least `cluster_min_count` windows by `cluster_measure` affinity (negative values count as 0): `feature`, `cluster` |
//! | `summary` | `windows` in the span, `firing_features`, `pairs`, `components` |
//!
//! Every table carries `stream, scope, window_start, window_end` in window ordinals (`scope` is
//! `window` with a finite span, `all_time` without).

pub mod pair_counts;
mod runs;
mod units;

use std::cell::RefCell;
use std::collections::{HashMap, VecDeque};
use std::sync::Arc;

use neurostream_engine::{
    Batch, ComputeDevice, EngineError, NodeConfig, NodeContext, Operator, OperatorInstance, OperatorKind, Partitioning, Result,
    RowIndex, Schema, SparseFrame, TableFrame,
};
use serde::{Deserialize, Serialize};

use super::affinity::Measure;
use super::spectral::{spectral_clustering, Affinity};
use crate::stats::tables::{Scope, TableBuilder};
use pair_counts::{EdgeMeasure, PairCounter};

/// The tables `cooccurrence` emits, in order.
pub const COOCCURRENCE_TABLES: [&str; 5] = ["pairs", "partners", "components", "clusters", "summary"];

/// What one co-occurrence window is.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum WindowUnit {
    /// Each token (row) is a window.
    #[default]
    Token,
    /// `block_tokens` consecutive tokens of one sequence (a sequence's last block may be shorter).
    Block,
    /// A whole sequence (closed when the sequence id changes, or at the end).
    Sequence,
}

/// Configuration of a `cooccurrence` operator.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct CooccurrenceConfig {
    /// `token` (default), `block` or `sequence`.
    #[serde(default)]
    pub window: WindowUnit,
    /// Tokens per block for `window = "block"` (default 256).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(extend("x-unit" = "tokens"))]
    pub block_tokens: Option<usize>,
    /// Windows the counts cover, sliding (default: all windows since the start).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(extend("x-unit" = "windows"))]
    pub span_windows: Option<u64>,
    /// A feature fires when its value is above this (default 0).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub threshold: Option<f32>,
    /// Windows between reports (default: one report at the end).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(extend("x-unit" = "windows"))]
    pub report_every: Option<u64>,
    /// Pairs co-firing in fewer windows are left out of `pairs` (default 1).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_count: Option<u64>,
    /// Partners listed per feature (default 10; 0 writes no `partners` table).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub top_n: Option<usize>,
    /// Measure that ranks partners (default `phi`).
    #[serde(default)]
    pub rank_by: Measure,
    /// Connected components of pairs whose `component_measure` is at least this.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub component_threshold: Option<f64>,
    /// `jaccard` (default) or `dice`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub component_measure: Option<Measure>,
    /// Number of spectral clusters of the features (default: no clustering).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub clusters: Option<usize>,
    /// Affinity of the spectral clustering (default `jaccard`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cluster_measure: Option<Measure>,
    /// Features firing in fewer windows are not clustered (default 1).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cluster_min_count: Option<u64>,
    /// Seed of the clustering's k-means (default 0).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seed: Option<u64>,
}

impl NodeConfig for CooccurrenceConfig {
    const KIND: &'static str = "cooccurrence";
}

/// The `cooccurrence` operator kind.
pub struct CooccurrenceKind;

#[derive(Clone)]
struct Settings {
    schema: Arc<Schema>,
    n_features: usize,
    unit: WindowUnit,
    block: usize,
    span: Option<u64>,
    threshold: f32,
    report_every: Option<u64>,
    min_count: u64,
    top_n: usize,
    rank_by: Measure,
    components: Option<(EdgeMeasure, f64)>,
    clusters: Option<(usize, Measure, u64)>,
    seed: u64,
    name: String,
}

impl OperatorKind for CooccurrenceKind {
    type Config = CooccurrenceConfig;

    fn describe(&self) -> &'static str {
        "feature co-occurrence over sliding windows (incremental counts): affinity table, top partners, components, spectral clusters"
    }

    fn build(&self, cfg: CooccurrenceConfig, ctx: &NodeContext, input: &Arc<Schema>) -> Result<Arc<dyn Operator>> {
        let fail = |m: String| Err(EngineError::config(ctx.label, m));
        if !input.is_sparse() {
            return fail(format!(
                "cooccurrence takes sparse feature streams (e.g. from sae_encode); its input is {}",
                input.describe()
            ));
        }
        if cfg.block_tokens.is_some() && cfg.window != WindowUnit::Block {
            return fail("`block_tokens` applies to window = \"block\" only".into());
        }
        let block = cfg.block_tokens.unwrap_or(256);
        if block == 0 || cfg.span_windows == Some(0) || cfg.report_every == Some(0) || cfg.clusters == Some(0) {
            return fail("`block_tokens`, `span_windows`, `report_every` and `clusters` must be at least 1".into());
        }
        let components = match (cfg.component_threshold, cfg.component_measure) {
            (None, Some(_)) => return fail("`component_measure` needs `component_threshold`".into()),
            (None, None) => None,
            (Some(t), m) => {
                let m = match m.unwrap_or(Measure::Jaccard) {
                    Measure::Jaccard => EdgeMeasure::Jaccard,
                    Measure::Dice => EdgeMeasure::Dice,
                    other => {
                        return fail(format!(
                            "`component_measure` must be jaccard or dice (they need no window count, so components update incrementally); found {}",
                            other.name()
                        ))
                    }
                };
                if !(t > 0.0 && t <= 1.0) {
                    return fail(format!("`component_threshold` must be in (0, 1], found {t}"));
                }
                Some((m, t))
            }
        };
        let threshold = cfg.threshold.unwrap_or(0.0);
        if !threshold.is_finite() {
            return fail("`threshold` must be finite".into());
        }
        Ok(Arc::new(Cooccurrence(Settings {
            schema: Arc::new(Schema::tables(
                COOCCURRENCE_TABLES.iter().map(|s| s.to_string()).collect(),
                Some("cooccurrence".into()),
            )),
            n_features: input.width(),
            unit: cfg.window,
            block,
            span: cfg.span_windows,
            threshold,
            report_every: cfg.report_every,
            min_count: cfg.min_count.unwrap_or(1).max(1),
            top_n: cfg.top_n.unwrap_or(10),
            rank_by: cfg.rank_by,
            components,
            clusters: cfg.clusters.map(|k| {
                (
                    k,
                    cfg.cluster_measure.unwrap_or(Measure::Jaccard),
                    cfg.cluster_min_count.unwrap_or(1),
                )
            }),
            seed: cfg.seed.unwrap_or(0),
            name: ctx.label.to_string(),
        })))
    }
}

struct Cooccurrence(Settings);

impl Operator for Cooccurrence {
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
        // Per stream: the open window, the span's windows (or the all-time counts), counters.
        neurostream_engine::Checkpointing::Snapshot
    }
    /// Host-only: the pair counts live in sorted runs on the host.
    fn computes(&self) -> bool {
        false
    }
    fn instantiate(&self, _device: &ComputeDevice) -> Result<Box<dyn OperatorInstance>> {
        Ok(Box::new(CooccurrenceInstance {
            op: self.0.clone(),
            streams: HashMap::new(),
        }))
    }
}

struct StreamState {
    /// In a cell so a checkpoint (which reads the state through `&self`) can read the counts.
    counter: RefCell<PairCounter>,
    /// Features firing in the open window (unsorted, may repeat) and its rows so far.
    open: Vec<u32>,
    open_rows: usize,
    open_seq: Option<u64>,
    /// Windows in the span, oldest first (kept only with a finite span).
    span: VecDeque<Vec<u32>>,
    closed: u64,
    since_report: u64,
    dirty: bool,
}

/// What a checkpoint keeps of a stream. The runs are rebuilt on restore (components are found
/// from them at each report): from the span's windows when the span is finite, else from the
/// all-time counts.
#[derive(Serialize, Deserialize)]
struct SavedStream {
    open: Vec<u32>,
    open_rows: usize,
    open_seq: Option<u64>,
    span: Vec<Vec<u32>>,
    closed: u64,
    since_report: u64,
    pairs: Vec<((u32, u32), u64)>,
    features: Vec<(u32, u64)>,
}

struct CooccurrenceInstance {
    op: Settings,
    streams: HashMap<Arc<str>, StreamState>,
}

impl CooccurrenceInstance {
    fn close_window(&mut self, stream: &Arc<str>, out: &mut Vec<Batch>) -> Result<()> {
        let op = &self.op;
        let st = self.streams.get_mut(stream).expect("stream state exists");
        let mut features = std::mem::take(&mut st.open);
        features.sort_unstable();
        features.dedup();
        st.open_rows = 0;
        st.counter.get_mut().update(&features, 1);
        if let Some(span) = op.span {
            st.span.push_back(features);
            if st.span.len() as u64 > span {
                let old = st.span.pop_front().expect("non-empty");
                st.counter.get_mut().update(&old, -1);
            }
        }
        st.closed += 1;
        st.since_report += 1;
        st.dirty = true;
        if op.report_every.is_some_and(|r| st.since_report >= r) {
            self.report(stream, out)?;
        }
        Ok(())
    }

    fn report(&mut self, stream: &Arc<str>, out: &mut Vec<Batch>) -> Result<()> {
        let op = &self.op;
        let st = self.streams.get_mut(stream).expect("stream state exists");
        st.counter.get_mut().settle();
        st.dirty = false;
        st.since_report = 0;
        let n = op.span.map_or(st.closed, |s| st.closed.min(s));
        let (scope, start, end) = match op.span {
            Some(_) => (Scope::Window, st.closed - n, st.closed),
            None => (Scope::AllTime, 0, st.closed),
        };
        let singles = st.counter.get_mut().feature_counts();
        let mut count_of = vec![0u64; op.n_features];
        for &(f, c) in &singles {
            count_of[f as usize] = c;
        }
        let pairs = st.counter.get_mut().pair_counts();
        let table = |name: &str, data| {
            Batch::Table(TableFrame {
                stream: stream.clone(),
                schema: op.schema.clone(),
                table: name.into(),
                data,
            })
        };
        // pairs
        let kept: Vec<&((u32, u32), u64)> = pairs.iter().filter(|p| p.1 >= op.min_count).collect();
        let mut t = TableBuilder::new(stream, scope, start, end, None, kept.len());
        t.u32("feature_a", kept.iter().map(|p| p.0 .0).collect())
            .u32("feature_b", kept.iter().map(|p| p.0 .1).collect())
            .u64("count", kept.iter().map(|p| p.1).collect())
            .u64("count_a", kept.iter().map(|p| count_of[p.0 .0 as usize]).collect())
            .u64("count_b", kept.iter().map(|p| count_of[p.0 .1 as usize]).collect());
        for m in Measure::ALL {
            let v = kept
                .iter()
                .map(|&&((a, b), c)| m.value(c, count_of[a as usize], count_of[b as usize], n))
                .collect();
            t.f64(m.name(), v);
        }
        out.push(table("pairs", t.finish()));
        // partners
        if op.top_n > 0 {
            let mut lists: HashMap<u32, Vec<(f64, u32, u64)>> = HashMap::new();
            for &((a, b), c) in &pairs {
                let v = op.rank_by.value(c, count_of[a as usize], count_of[b as usize], n);
                lists.entry(a).or_default().push((v, b, c));
                lists.entry(b).or_default().push((v, a, c));
            }
            let mut features: Vec<u32> = lists.keys().copied().collect();
            features.sort_unstable();
            let (mut f, mut rank, mut partner, mut count, mut value) = (vec![], vec![], vec![], vec![], vec![]);
            for feat in features {
                let list = lists.get_mut(&feat).expect("listed");
                list.sort_by(|x, y| y.0.total_cmp(&x.0).then(x.1.cmp(&y.1)));
                for (r, &(v, p, c)) in list.iter().take(op.top_n).enumerate() {
                    f.push(feat);
                    rank.push(r as u32 + 1);
                    partner.push(p);
                    count.push(c);
                    value.push(v);
                }
            }
            let rows = f.len();
            let mut t = TableBuilder::new(stream, scope, start, end, None, rows);
            t.u32("feature", f)
                .u32("rank", rank)
                .u32("partner", partner)
                .u64("count", count)
                .f64("value", value)
                .opt_str("measure", vec![Some(op.rank_by.name().to_string()); rows]);
            out.push(table("partners", t.finish()));
        }
        // components
        let mut n_components = 0u64;
        if let Some(labels) = st.counter.get_mut().components() {
            let mut size: HashMap<u32, u64> = HashMap::new();
            for &(_, l) in &labels {
                *size.entry(l).or_insert(0) += 1;
            }
            n_components = size.len() as u64;
            let mut t = TableBuilder::new(stream, scope, start, end, None, labels.len());
            t.u32("feature", labels.iter().map(|x| x.0).collect())
                .u32("component", labels.iter().map(|x| x.1).collect())
                .u64("component_size", labels.iter().map(|x| size[&x.1]).collect());
            out.push(table("components", t.finish()));
        }
        // clusters
        if let Some((k, measure, min_count)) = op.clusters {
            let nodes: Vec<u32> = singles.iter().filter(|s| s.1 >= min_count).map(|s| s.0).collect();
            if nodes.len() < k {
                return Err(EngineError::Runtime(format!(
                    "{}: stream {stream}: spectral clustering into {k} clusters needs at least {k} features firing in ≥ {min_count} windows; {} do (lower `clusters` or `cluster_min_count`, or feed more data)",
                    op.name,
                    nodes.len()
                )));
            }
            let mut local = vec![u32::MAX; op.n_features];
            for (i, &f) in nodes.iter().enumerate() {
                local[f as usize] = i as u32;
            }
            let edges = pairs
                .iter()
                .filter(|((a, b), _)| local[*a as usize] != u32::MAX && local[*b as usize] != u32::MAX)
                .map(|&((a, b), c)| {
                    let w = measure.value(c, count_of[a as usize], count_of[b as usize], n).max(0.0);
                    (local[a as usize], local[b as usize], w)
                })
                .filter(|e| e.2 > 0.0)
                .collect();
            let aff = Affinity { n: nodes.len(), edges };
            let labels = spectral_clustering(&aff, k, 10, op.seed)
                .map_err(|e| EngineError::Runtime(format!("{}: stream {stream}: {e}", op.name)))?;
            let mut t = TableBuilder::new(stream, scope, start, end, None, nodes.len());
            t.u32("feature", nodes).u32("cluster", labels);
            out.push(table("clusters", t.finish()));
        }
        let mut t = TableBuilder::new(stream, scope, start, end, None, 1);
        t.u64("windows", vec![n])
            .u64("firing_features", vec![singles.len() as u64])
            .u64("pairs", vec![pairs.len() as u64])
            .u64("components", vec![n_components]);
        out.push(table("summary", t.finish()));
        Ok(())
    }
}

fn seq_ids(frame: &SparseFrame) -> Option<&[u64]> {
    match &frame.index {
        RowIndex::Tokens { seq_id, .. } => Some(seq_id),
        RowIndex::Samples(_) => None,
    }
}

impl OperatorInstance for CooccurrenceInstance {
    fn process(&mut self, batch: Batch, out: &mut Vec<Batch>) -> Result<()> {
        let Batch::Sparse(frame) = batch else {
            return Err(EngineError::Shape(format!(
                "{}: cooccurrence takes sparse feature frames; stream {} is not",
                self.op.name,
                batch.stream()
            )));
        };
        let stream = frame.stream.clone();
        let components = self.op.components;
        self.streams.entry(stream.clone()).or_insert_with(|| StreamState {
            counter: RefCell::new(PairCounter::new(components, self.op.n_features)),
            open: Vec::new(),
            open_rows: 0,
            open_seq: None,
            span: VecDeque::new(),
            closed: 0,
            since_report: 0,
            dirty: false,
        });
        let seqs = seq_ids(&frame);
        for r in 0..frame.rows() {
            let seq = seqs.map(|s| s[r]);
            let st = self.streams.get_mut(&stream).expect("inserted");
            if self.op.unit != WindowUnit::Token && st.open_rows > 0 && st.open_seq != seq {
                self.close_window(&stream, out)?;
            }
            let st = self.streams.get_mut(&stream).expect("inserted");
            st.open_seq = seq;
            let (ids, values) = frame.row(r);
            if let Some((_, v)) = ids.iter().zip(values).find(|(_, v)| !v.is_finite()) {
                return Err(EngineError::Runtime(format!(
                    "{}: stream {stream}: non-finite feature value {v} at {}",
                    self.op.name,
                    frame.index.describe_row(r)
                )));
            }
            st.open.extend(
                ids.iter()
                    .zip(values)
                    .filter(|(_, &v)| v > self.op.threshold)
                    .map(|(&i, _)| i),
            );
            st.open_rows += 1;
            let full = match self.op.unit {
                WindowUnit::Token => true,
                WindowUnit::Block => st.open_rows >= self.op.block,
                WindowUnit::Sequence => false,
            };
            if full {
                self.close_window(&stream, out)?;
            }
        }
        // Consolidate the batch's pair updates into one run.
        if let Some(st) = self.streams.get_mut(&stream) {
            if st.dirty {
                st.counter.get_mut().settle();
                st.dirty = false;
            }
        }
        Ok(())
    }

    fn snapshot(&self) -> Result<Vec<u8>> {
        let mut saved: HashMap<Arc<str>, SavedStream> = HashMap::new();
        for (stream, st) in &self.streams {
            let mut counter = st.counter.borrow_mut();
            counter.settle();
            let (pairs, features) = if self.op.span.is_some() {
                (Vec::new(), Vec::new())
            } else {
                (counter.pair_counts(), counter.feature_counts())
            };
            saved.insert(
                stream.clone(),
                SavedStream {
                    open: st.open.clone(),
                    open_rows: st.open_rows,
                    open_seq: st.open_seq,
                    span: st.span.iter().cloned().collect(),
                    closed: st.closed,
                    since_report: st.since_report,
                    pairs,
                    features,
                },
            );
        }
        neurostream_engine::checkpoint::encode_streams(&saved)
    }

    fn restore(&mut self, state: &[u8]) -> Result<()> {
        for (stream, saved) in neurostream_engine::checkpoint::decode_streams::<SavedStream>(state, "cooccurrence")? {
            let n = self.op.n_features as u32;
            let fits = saved.open.iter().chain(saved.span.iter().flatten()).all(|&f| f < n)
                && saved.pairs.iter().all(|&((a, b), _)| a < b && b < n)
                && saved.features.iter().all(|&(f, _)| f < n);
            if !fits {
                return Err(EngineError::Checkpoint(format!(
                    "{}: the checkpoint's feature ids do not fit {n} features",
                    self.op.name
                )));
            }
            let mut counter = PairCounter::new(self.op.components, self.op.n_features);
            if self.op.span.is_some() {
                for w in &saved.span {
                    counter.update(w, 1);
                }
            } else {
                counter.load(&saved.pairs, &saved.features);
            }
            counter.settle();
            self.streams.insert(
                stream,
                StreamState {
                    counter: RefCell::new(counter),
                    open: saved.open,
                    open_rows: saved.open_rows,
                    open_seq: saved.open_seq,
                    span: saved.span.into(),
                    closed: saved.closed,
                    since_report: saved.since_report,
                    dirty: false,
                },
            );
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

    /// Closes the stream's open window, reports its graph and drops its counts.
    fn end_stream(&mut self, stream: &Arc<str>, out: &mut Vec<Batch>) -> Result<()> {
        self.finish_stream(stream, out)?;
        self.streams.remove(stream);
        Ok(())
    }
}

impl CooccurrenceInstance {
    /// Closes the stream's open window and reports what is not reported yet (it ends, or the
    /// run does).
    fn finish_stream(&mut self, stream: &Arc<str>, out: &mut Vec<Batch>) -> Result<()> {
        let Some(st) = self.streams.get(stream) else {
            return Ok(());
        };
        if st.open_rows > 0 {
            self.close_window(stream, out)?;
        }
        let st = &self.streams[stream];
        if st.since_report > 0 || st.closed == 0 || self.op.report_every.is_none() {
            self.report(stream, out)?;
        }
        Ok(())
    }
}
