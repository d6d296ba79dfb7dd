//! What the live view shows, kept up to date by the taps as batches pass and turned into one
//! JSON snapshot per tick for every viewer.
//!
//! Every view is bounded whatever the run's length: signals keep [`COLUMNS`] min/max columns
//! (decimated on arrival), feature streams a count per feature and a bounded L0 series, tables
//! their latest rows, token scalars a bounded series of batch means.

use std::collections::{BTreeMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use arrow::datatypes::DataType;
use neurostream_engine::{Batch, Frame, Metrics, PipelineSpec, RowIndex, SparseFrame, StreamKind, TableFrame};
use neurostream_sinks::live::Hub;
use serde_json::{json, Value};

use crate::json::{finite, significant};

/// Columns of a signal trace: the view's pixel columns (min and max per column).
pub const COLUMNS: usize = 600;
/// Seconds of signal a trace covers.
pub const TRACE_SECONDS: f64 = 10.0;
/// Channels traced per signal stream (the first ones; the page picks among them).
pub const MAX_TRACED_CHANNELS: usize = 256;
/// Markers kept per signal stream.
const MAX_MARKERS: usize = 200;
/// Rows kept per result table (the newest).
const MAX_TABLE_ROWS: usize = 50;
/// Rows kept of the top-examples tables (one window's worth of examples of many features).
const MAX_EXAMPLE_ROWS: usize = 400;
/// Rows kept of cluster tables (one report of up to this many clusters).
const MAX_CLUSTER_ROWS: usize = 1024;
/// Points kept per series (token scalars, L0).
const MAX_POINTS: usize = 600;
/// Features listed as the most active.
const TOP_FEATURES: usize = 20;
/// Density histogram: log10 bins over [-8, 0].
const DENSITY_BINS: usize = 32;

/// One node of the pipeline graph.
#[derive(Clone, Debug)]
struct GraphNode {
    label: String,
    kind: String,
    input: Option<String>,
}

/// The state of one run's live view, shared by the taps (writers) and the server (readers).
pub struct UiState {
    pipeline: String,
    graph: Vec<GraphNode>,
    metrics: Arc<Metrics>,
    /// Views by node label, then stream name (looked up without allocating).
    views: Mutex<BTreeMap<String, BTreeMap<String, SharedView>>>,
    /// Alert bounds and score thresholds from the pipeline file, drawn on the series they apply to.
    thresholds: Vec<Value>,
    outcome: Mutex<Option<String>>,
    /// The viewers' queues: one snapshot per tick for each, the oldest dropped (and counted)
    /// when a viewer reads too slowly.
    pub(crate) viewers: Hub<tokio_tungstenite::tungstenite::Utf8Bytes>,
    /// Woken when the ticker has queued a snapshot for every viewer, or closed their queues.
    pub(crate) tick: tokio::sync::Notify,
    /// Snapshots handed to viewers' sockets so far.
    pub(crate) sent: AtomicU64,
    /// Viewer connections open (handshakes included), against the server's limit.
    pub(crate) open_viewers: std::sync::atomic::AtomicUsize,
}

/// One stream's view, locked on its own.
type SharedView = Arc<Mutex<View>>;

#[derive(Clone)]
enum View {
    Signal(SignalView),
    Features(FeatureView),
    Tables(BTreeMap<String, TableView>),
    Scalars(ScalarView),
}

impl View {
    /// An empty view for the stream `batch` belongs to.
    fn of(batch: &Batch) -> View {
        match batch {
            Batch::Dense(f) if matches!(f.schema.kind, StreamKind::Signal { .. }) => View::Signal(SignalView::new(f)),
            Batch::Dense(f) => View::Scalars(ScalarView::new(f)),
            Batch::Sparse(s) => View::Features(FeatureView::new(s.schema.width())),
            Batch::Table(_) => View::Tables(BTreeMap::new()),
        }
    }
}

impl UiState {
    /// The view of a run of `spec`, reading node counters from `metrics`.
    pub fn new(spec: &PipelineSpec, metrics: Arc<Metrics>) -> Arc<UiState> {
        let labels: BTreeMap<&str, String> = spec
            .nodes
            .iter()
            .map(|n| (n.name.as_str(), format!("{}.{}", n.section.table(), n.name)))
            .collect();
        let graph = spec
            .nodes
            .iter()
            .map(|n| GraphNode {
                label: labels[n.name.as_str()].clone(),
                kind: n.kind.clone().unwrap_or_default(),
                input: n.input.as_ref().and_then(|i| labels.get(i.as_str()).cloned()),
            })
            .collect();
        let thresholds = thresholds(spec, &labels);
        Arc::new(UiState {
            thresholds,
            pipeline: spec.settings.name.clone(),
            graph,
            metrics,
            views: Mutex::new(BTreeMap::new()),
            outcome: Mutex::new(None),
            viewers: Hub::default(),
            tick: tokio::sync::Notify::new(),
            sent: AtomicU64::new(0),
            open_viewers: std::sync::atomic::AtomicUsize::new(0),
        })
    }

    /// Records how the run ended (`ok` or the error), shown on the page.
    pub fn finish(&self, outcome: &str) {
        *self.outcome.lock().unwrap() = Some(outcome.to_string());
    }

    /// Takes in one batch of the output of `node` (a label such as `operators.band`). Each
    /// stream's view has its own lock, held only while this batch is folded in.
    pub fn take_in(&self, node: &str, batch: &Batch) {
        let view = {
            let mut views = self.views.lock().unwrap();
            let known = views.get(node).and_then(|streams| streams.get(&**batch.stream())).cloned();
            known.unwrap_or_else(|| {
                views
                    .entry(node.to_string())
                    .or_default()
                    .entry(batch.stream().to_string())
                    .or_insert_with(|| Arc::new(Mutex::new(View::of(batch))))
                    .clone()
            })
        };
        let mut view = view.lock().unwrap();
        match (&mut *view, batch) {
            (View::Signal(v), Batch::Dense(f)) => v.add(f),
            (View::Scalars(v), Batch::Dense(f)) => v.add(f),
            (View::Features(v), Batch::Sparse(s)) => v.add(s),
            (View::Tables(tables), Batch::Table(t)) => tables
                .entry(t.table.to_string())
                .or_insert_with(|| TableView::new(&t.table))
                .add(t),
            _ => {} // a stream's batches are all of one kind
        }
    }

    /// The whole view as one JSON value: the graph with each node's counters, then every
    /// stream's view.
    pub fn snapshot(&self) -> Value {
        let uptime = self.metrics.uptime().as_secs_f64();
        let counters = self.metrics.nodes();
        let devices = self.metrics.devices();
        let nodes: Vec<Value> = self
            .graph
            .iter()
            .map(|n| {
                let m = counters.get(&n.label);
                let get = |f: fn(&neurostream_engine::metrics::NodeMetrics) -> u64| m.map_or(0, |m| f(m));
                let rows_in = get(|m| m.rows_in.load(Ordering::Relaxed));
                let rows_out = get(|m| m.rows_out.load(Ordering::Relaxed));
                let busy_s = get(|m| m.busy_ns.load(Ordering::Relaxed)) as f64 * 1e-9;
                let rows = if n.label.starts_with("sources.") { rows_out } else { rows_in };
                let p99 = m.and_then(|m| {
                    if n.label.starts_with("sinks.") && m.latency.count() > 0 {
                        m.latency.quantile_upper_s(0.99)
                    } else {
                        m.processing.quantile_upper_s(0.99)
                    }
                });
                json!({
                    "id": n.label,
                    "kind": n.kind,
                    "input": n.input,
                    "rows": rows,
                    "rows_in": rows_in,
                    "rows_out": rows_out,
                    "rows_per_s": rows as f64 / uptime.max(1e-9),
                    "busy_pct": 100.0 * busy_s / uptime.max(1e-9),
                    "in_flight": get(|m| m.in_flight.load(Ordering::Relaxed)),
                    "p99_ms": p99.map(|s| if s.is_finite() { s * 1e3 } else { -1.0 }),
                    "dropped": get(|m| m.dropped_invalid.load(Ordering::Relaxed) + m.dropped_overload.load(Ordering::Relaxed)),
                    "device": devices.get(&n.label),
                })
            })
            .collect();
        // Copies taken under each view's lock, serialized after it: a tap never waits for JSON.
        let views: Vec<((String, String), SharedView)> = self
            .views
            .lock()
            .unwrap()
            .iter()
            .flat_map(|(node, streams)| streams.iter().map(|(s, v)| ((node.clone(), s.clone()), v.clone())))
            .collect();
        let mut streams = Vec::new();
        for ((node, stream), view) in views {
            let view = view.lock().unwrap().clone();
            let mut v = match &view {
                View::Signal(s) => s.snapshot(),
                View::Features(f) => f.snapshot(),
                View::Tables(t) => json!({
                    "type": "tables",
                    "tables": t.iter().map(|(name, t)| (name.clone(), t.snapshot())).collect::<serde_json::Map<_, _>>(),
                }),
                View::Scalars(s) => s.snapshot(),
            };
            v["node"] = json!(node);
            v["stream"] = json!(stream);
            streams.push(v);
        }
        json!({
            "pipeline": self.pipeline,
            "uptime_s": uptime,
            "outcome": *self.outcome.lock().unwrap(),
            "viewers": {
                "connected": self.viewers.len(),
                "sent": self.sent.load(Ordering::Relaxed),
                "dropped": self.viewers.dropped.load(Ordering::Relaxed),
            },
            "nodes": nodes,
            "thresholds": self.thresholds,
            "streams": streams,
        })
    }
}

impl neurostream_engine::BatchObserver for UiState {
    fn observe(&self, node: &str, batch: &Batch) {
        self.take_in(node, batch);
    }
}

/// The bounds the pipeline file sets on streams the view draws: `riemann_potato`'s z threshold
/// on its own output, and `token_stats` alert bounds on its input's columns (`fvu_above` as the
/// explained variance below which it fires).
fn thresholds(spec: &PipelineSpec, labels: &BTreeMap<&str, String>) -> Vec<Value> {
    use neurostream_engine::toml::Value as T;
    let number = |v: Option<&T>| v.and_then(|v| v.as_float().or_else(|| v.as_integer().map(|i| i as f64)));
    let mut out = Vec::new();
    for n in &spec.nodes {
        let label = &labels[n.name.as_str()];
        match n.kind.as_deref() {
            Some("riemann_potato") => {
                let value = number(n.config.get("threshold")).unwrap_or(3.0);
                out.push(json!({"node": label, "column": "z", "value": value, "rule": "threshold"}));
            }
            Some("token_stats") => {
                let Some(input) = n.input.as_deref().and_then(|i| labels.get(i)) else {
                    continue;
                };
                for alert in n.config.get("alerts").and_then(T::as_array).into_iter().flatten() {
                    let rule = alert.get("rule").and_then(T::as_str).unwrap_or_default();
                    let (column, value) = match rule {
                        "fvu_above" => ("explained_variance".to_string(), number(alert.get("above")).map(|a| 1.0 - a)),
                        "mean_above" | "mean_below" => (
                            alert.get("column").and_then(T::as_str).unwrap_or_default().to_string(),
                            number(alert.get(if rule == "mean_above" { "above" } else { "below" })),
                        ),
                        _ => continue,
                    };
                    if let Some(value) = value {
                        out.push(json!({"node": input, "column": column, "value": value, "rule": rule}));
                    }
                }
            }
            _ => {}
        }
    }
    out
}

/// Seconds of row `i` of `index` (signals: sample / rate; tokens: event time, else none).
fn row_seconds(index: &RowIndex, i: usize, sample_rate: f64) -> Option<f64> {
    match index {
        RowIndex::Samples(s) => Some(s[i] as f64 / sample_rate),
        RowIndex::Tokens { time: Some(t), .. } => Some(t[i] as f64 * 1e-9),
        RowIndex::Tokens { .. } => None,
    }
}

/// A signal stream decimated to min/max columns as it arrives.
///
/// Closed columns are kept in flat planes (`traced` values per column) so that a snapshot's
/// copy, taken under the stream's lock while the worker may be waiting, is a few memory copies.
#[derive(Clone)]
struct SignalView {
    channels: Vec<String>,
    units: Vec<String>,
    sample_rate: f64,
    rows_per_s: f64,
    rows_per_column: usize,
    /// Start time (s) of each closed column, oldest first.
    times: VecDeque<f64>,
    /// Minimum of each traced channel in each closed column, column after column.
    mins: VecDeque<f32>,
    /// Maximum, laid out as `mins`.
    maxs: VecDeque<f32>,
    /// The column being filled.
    open: Column,
    markers: VecDeque<(f64, String)>,
    rows: u64,
    latest: Vec<f32>,
}

#[derive(Clone)]
struct Column {
    t: f64,
    rows: usize,
    min: Vec<f32>,
    max: Vec<f32>,
}

impl Column {
    fn empty(traced: usize) -> Column {
        Column {
            t: 0.0,
            rows: 0,
            min: vec![f32::INFINITY; traced],
            max: vec![f32::NEG_INFINITY; traced],
        }
    }
}

/// Significant digits of trace values: a trace is drawn at pixel resolution, far coarser.
const TRACE_DIGITS: i32 = 4;

impl SignalView {
    fn new(f: &Frame) -> SignalView {
        let (sample_rate, row_rate) = match f.schema.kind {
            StreamKind::Signal { sample_rate, row_rate } => (sample_rate, row_rate),
            _ => (1.0, None),
        };
        let rows_per_s = row_rate.filter(|&r| r > 0.0).unwrap_or(sample_rate);
        let traced = f.schema.width().min(MAX_TRACED_CHANNELS);
        SignalView {
            channels: f.schema.channels.iter().take(traced).map(|c| c.name.clone()).collect(),
            units: f.schema.channels.iter().take(traced).map(|c| c.unit.clone()).collect(),
            sample_rate,
            rows_per_s,
            rows_per_column: ((rows_per_s * TRACE_SECONDS / COLUMNS as f64).ceil() as usize).max(1),
            times: VecDeque::with_capacity(COLUMNS + 1),
            mins: VecDeque::with_capacity((COLUMNS + 1) * traced),
            maxs: VecDeque::with_capacity((COLUMNS + 1) * traced),
            open: Column::empty(traced),
            markers: VecDeque::new(),
            rows: 0,
            latest: Vec::new(),
        }
    }

    fn add(&mut self, f: &Frame) {
        let (w, traced) = (f.schema.width(), self.channels.len());
        for m in &f.markers {
            if let Some(t) = row_seconds(&f.index, m.row as usize, self.sample_rate) {
                self.markers.push_back((t, m.label.clone()));
                if self.markers.len() > MAX_MARKERS {
                    self.markers.pop_front();
                }
            }
        }
        for (i, row) in f.data.chunks_exact(w.max(1)).enumerate() {
            let col = &mut self.open;
            if col.rows == 0 {
                col.t = row_seconds(&f.index, i, self.sample_rate).unwrap_or(0.0);
            }
            for ((lo, hi), &v) in col.min.iter_mut().zip(col.max.iter_mut()).zip(&row[..traced]) {
                *lo = lo.min(v);
                *hi = hi.max(v);
            }
            col.rows += 1;
            if col.rows == self.rows_per_column {
                self.times.push_back(col.t);
                self.mins.extend(col.min.iter().copied());
                self.maxs.extend(col.max.iter().copied());
                if self.times.len() > COLUMNS {
                    self.times.pop_front();
                    self.mins.drain(..traced);
                    self.maxs.drain(..traced);
                }
                col.rows = 0;
                col.min.fill(f32::INFINITY);
                col.max.fill(f32::NEG_INFINITY);
            }
        }
        if let Some(last) = f.data.chunks_exact(w.max(1)).last() {
            self.latest.clear();
            self.latest.extend_from_slice(&last[..traced]);
        }
        self.rows += f.index.len() as u64;
    }

    fn snapshot(&self) -> Value {
        let traced = self.channels.len();
        let open = self.open.rows > 0;
        let mut t: Vec<f64> = self.times.iter().copied().collect();
        if open {
            t.push(self.open.t);
        }
        let per_channel = |closed: &VecDeque<f32>, open_values: &[f32]| -> Vec<Vec<Value>> {
            (0..traced)
                .map(|c| {
                    let mut values: Vec<Value> = closed
                        .iter()
                        .skip(c)
                        .step_by(traced.max(1))
                        .map(|&v| significant(v, TRACE_DIGITS))
                        .collect();
                    if open {
                        values.push(significant(open_values[c], TRACE_DIGITS));
                    }
                    values
                })
                .collect()
        };
        json!({
            "type": "signal",
            "channels": self.channels,
            "units": self.units,
            "rows_per_s": self.rows_per_s,
            "rows": self.rows,
            "rows_per_column": self.rows_per_column,
            "t": t,
            "min": per_channel(&self.mins, &self.open.min),
            "max": per_channel(&self.maxs, &self.open.max),
            "latest": self.latest.iter().map(|&v| finite(v)).collect::<Vec<_>>(),
            "markers": self.markers.iter().map(|(t, l)| json!([t, l])).collect::<Vec<_>>(),
        })
    }
}

/// A sparse feature stream: firings per feature and L0 over time.
#[derive(Clone)]
struct FeatureView {
    fires: Vec<u64>,
    tokens: u64,
    active: u64,
    l0: VecDeque<(u64, f64)>,
}

impl FeatureView {
    fn new(n_features: usize) -> FeatureView {
        FeatureView {
            fires: vec![0; n_features.min(neurostream_engine::layout::MAX_WIDTH)],
            tokens: 0,
            active: 0,
            l0: VecDeque::new(),
        }
    }

    fn add(&mut self, s: &SparseFrame) {
        for &id in &s.ids {
            if let Some(c) = self.fires.get_mut(id as usize) {
                *c += 1;
            }
        }
        let rows = s.index.len() as u64;
        self.tokens += rows;
        self.active += s.ids.len() as u64;
        if rows > 0 {
            self.l0.push_back((self.tokens, s.ids.len() as f64 / rows as f64));
            if self.l0.len() > MAX_POINTS {
                self.l0.pop_front();
            }
        }
    }

    fn snapshot(&self) -> Value {
        let tokens = self.tokens.max(1) as f64;
        let mut histogram = vec![0u64; DENSITY_BINS];
        let mut dead = 0u64;
        for &c in &self.fires {
            if c == 0 {
                dead += 1;
                continue;
            }
            let x = (c as f64 / tokens).log10().clamp(-8.0, 0.0);
            let bin = (((x + 8.0) / 8.0) * DENSITY_BINS as f64).floor() as usize;
            histogram[bin.min(DENSITY_BINS - 1)] += 1;
        }
        let mut order: Vec<usize> = (0..self.fires.len()).filter(|&i| self.fires[i] > 0).collect();
        order.sort_unstable_by_key(|&i| std::cmp::Reverse(self.fires[i]));
        let top: Vec<Value> = order
            .iter()
            .take(TOP_FEATURES)
            .map(|&i| json!({"feature": i, "fires": self.fires[i], "density": self.fires[i] as f64 / tokens}))
            .collect();
        json!({
            "type": "features",
            "n_features": self.fires.len(),
            "tokens": self.tokens,
            "mean_l0": self.active as f64 / tokens,
            "dead": dead,
            "density_histogram": {"log10_from": -8.0, "log10_to": 0.0, "counts": histogram},
            "top": top,
            "l0": {"tokens": self.l0.iter().map(|p| p.0).collect::<Vec<_>>(), "values": self.l0.iter().map(|p| p.1).collect::<Vec<_>>()},
        })
    }
}

/// The newest rows of one result table, kept as Arrow slices (shared, not copied) and turned
/// into JSON only for a snapshot.
#[derive(Clone)]
struct TableView {
    batches: VecDeque<arrow::record_batch::RecordBatch>,
    kept: usize,
    total: u64,
    keep: usize,
}

impl TableView {
    fn new(name: &str) -> TableView {
        TableView {
            batches: VecDeque::new(),
            kept: 0,
            total: 0,
            keep: match name {
                "top_examples" => MAX_EXAMPLE_ROWS,
                "centroids" => MAX_CLUSTER_ROWS,
                _ => MAX_TABLE_ROWS,
            },
        }
    }

    fn add(&mut self, t: &TableFrame) {
        self.total += t.rows() as u64;
        let skip = t.rows().saturating_sub(self.keep);
        // Vector columns (centroids, activations) are not shown: not kept.
        let data = t.data.slice(skip, t.rows() - skip);
        let shown: Vec<usize> = (0..data.num_columns())
            .filter(|&c| {
                !matches!(
                    data.schema().field(c).data_type(),
                    DataType::FixedSizeList(..) | DataType::List(..)
                )
            })
            .collect();
        let Ok(data) = data.project(&shown) else { return };
        self.batches.push_back(data);
        self.kept += t.rows() - skip;
        while self.kept > self.keep {
            let front = self.batches.front().expect("rows kept").num_rows();
            let extra = self.kept - self.keep;
            if extra >= front {
                self.batches.pop_front();
                self.kept -= front;
            } else {
                let b = self.batches.pop_front().expect("rows kept");
                self.batches.push_front(b.slice(extra, front - extra));
                self.kept -= extra;
            }
        }
    }

    fn snapshot(&self) -> Value {
        let columns: Vec<String> = self
            .batches
            .back()
            .map(|b| b.schema().fields().iter().map(|f| f.name().clone()).collect())
            .unwrap_or_default();
        let mut rows = Vec::with_capacity(self.kept);
        for b in &self.batches {
            let mut writer = arrow::json::ArrayWriter::new(Vec::new());
            if writer.write(b).and_then(|_| writer.finish()).is_err() {
                continue;
            }
            if let Ok(Value::Array(r)) = serde_json::from_slice::<Value>(&writer.into_inner()) {
                rows.extend(r);
            }
        }
        json!({"columns": columns, "total_rows": self.total, "rows": rows})
    }
}

/// A dense non-signal stream (activations, token scalars): batch means per column over tokens.
#[derive(Clone)]
struct ScalarView {
    columns: Vec<String>,
    tokens: u64,
    x: VecDeque<u64>,
    /// Per batch, the mean of each column (NaN where a batch had no finite value).
    means: VecDeque<Vec<f32>>,
}

/// Streams wider than this are shown by their mean row norm only (activations).
const MAX_SCALAR_COLUMNS: usize = 16;

impl ScalarView {
    fn new(f: &Frame) -> ScalarView {
        let w = f.schema.width();
        let columns = if w <= MAX_SCALAR_COLUMNS {
            f.schema.channels.iter().map(|c| c.name.clone()).collect()
        } else {
            vec!["row_norm".to_string()]
        };
        ScalarView {
            columns,
            tokens: 0,
            x: VecDeque::new(),
            means: VecDeque::new(),
        }
    }

    fn add(&mut self, f: &Frame) {
        let (w, rows) = (f.schema.width(), f.index.len());
        if rows == 0 || w == 0 {
            return;
        }
        let means: Vec<f64> = if w <= MAX_SCALAR_COLUMNS {
            let mut sums = vec![0f64; w];
            let mut counts = vec![0u64; w];
            for row in f.data.chunks_exact(w) {
                for (c, &v) in row.iter().enumerate() {
                    if v.is_finite() {
                        sums[c] += v as f64;
                        counts[c] += 1;
                    }
                }
            }
            sums.iter()
                .zip(&counts)
                .map(|(s, &n)| if n > 0 { s / n as f64 } else { f64::NAN })
                .collect()
        } else {
            let norms: f64 = f
                .data
                .chunks_exact(w)
                .map(|r| r.iter().map(|&v| v as f64 * v as f64).sum::<f64>().sqrt())
                .sum();
            vec![norms / rows as f64]
        };
        self.tokens += rows as u64;
        self.x.push_back(self.tokens);
        self.means.push_back(means.into_iter().map(|m| m as f32).collect());
        if self.x.len() > MAX_POINTS {
            self.x.pop_front();
            self.means.pop_front();
        }
    }

    fn snapshot(&self) -> Value {
        json!({
            "type": "scalars",
            "columns": self.columns,
            "tokens": self.tokens,
            "x": self.x,
            "means": self.means.iter().map(|m| m.iter().map(|&v| finite(v)).collect::<Vec<_>>()).collect::<Vec<_>>(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use neurostream_engine::Schema;

    fn signal_frame(start: i64, rows: usize, fs: f64) -> Frame {
        let schema = Arc::new(Schema::signal(&["A", "B"], "uV", fs));
        let data: Vec<f32> = (0..rows)
            .flat_map(|i| {
                let s = (start + i as i64) as f32;
                [s, -s]
            })
            .collect();
        Frame::new(
            "eeg".into(),
            schema,
            RowIndex::Samples((start..start + rows as i64).collect()),
            data,
        )
        .unwrap()
    }

    #[test]
    fn signals_are_decimated_to_min_max_columns_and_bounded() {
        let mut v = SignalView::new(&signal_frame(0, 1, 1000.0));
        // 10 s at 1 kHz over 600 columns: 17 rows per column.
        assert_eq!(v.rows_per_column, 17);
        for k in 0..100 {
            v.add(&signal_frame(k * 1000, 1000, 1000.0));
        }
        assert_eq!(v.times.len(), COLUMNS);
        assert_eq!((v.mins.len(), v.maxs.len()), (2 * COLUMNS, 2 * COLUMNS));
        // Every column holds 17 consecutive samples: min and max of channel A are its ends.
        let (min_a, max_a, min_b) = (v.mins[0], v.maxs[0], v.mins[1]);
        assert_eq!(max_a - min_a, 16.0);
        assert_eq!(min_b, -max_a);
        assert_eq!(v.times[0], min_a as f64 / 1000.0);
        let snap = v.snapshot();
        assert_eq!(snap["t"].as_array().unwrap().len(), COLUMNS + 1);
        assert_eq!(snap["min"][0].as_array().unwrap().len(), COLUMNS + 1);
        // Sent with 4 significant digits: within half a unit of the 4th digit.
        let sent = snap["min"][0][0].as_f64().unwrap();
        assert!(
            (sent - min_a as f64).abs() <= 5e-4 * (min_a as f64).abs(),
            "{sent} vs {min_a}"
        );
        let (sent, kept) = (snap["max"][1][COLUMNS - 1].as_f64().unwrap(), v.maxs[2 * COLUMNS - 1] as f64);
        assert!((sent - kept).abs() <= 5e-4 * kept.abs(), "{sent} vs {kept}");
        assert_eq!(snap["latest"], json!([99999.0, -99999.0]));
    }

    #[test]
    fn feature_density_histogram_counts_every_live_feature_once() {
        let schema = Arc::new(Schema::features(8, None, None, None));
        let mut v = FeatureView::new(8);
        let index = RowIndex::Tokens {
            seq_id: vec![0; 4],
            pos: (0..4).collect(),
            token: None,
            time: None,
        };
        // Feature 0 fires on every token, feature 3 on one of four, the rest never.
        let s = SparseFrame::new(
            "f".into(),
            schema,
            index,
            vec![0, 2, 3, 4, 5],
            vec![0, 3, 0, 0, 0],
            vec![1.0; 5],
        )
        .unwrap();
        v.add(&s);
        let snap = v.snapshot();
        assert_eq!(snap["dead"], 6);
        let counts: Vec<u64> = serde_json::from_value(snap["density_histogram"]["counts"].clone()).unwrap();
        assert_eq!(counts.iter().sum::<u64>(), 2);
        assert_eq!(counts[DENSITY_BINS - 1], 1); // density 1.0
        assert_eq!(
            counts[((8.0 - 0.25f64.log10().abs()) / 8.0 * DENSITY_BINS as f64) as usize],
            1
        );
        assert_eq!(snap["top"][0]["feature"], 0);
        assert_eq!(snap["mean_l0"], 1.25);
    }
}
