//! `kmeans`: streaming mini-batch k-means over any dense stream (activations, band power,
//! covariance features), per stream.
//!
//! The first `init_rows` rows are held back and seeded by k-means++ (or centroids come from the
//! `init` file); from then on rows are assigned in mini-batches of `batch_size` to the current
//! centroids and move them by Sculley's per-centroid-count rule. Output tables:
//!
//! | table | rows |
//! | --- | --- |
//! | `assignments` | one per input row: `stream`, `seq_id`+`pos` or `sample`, `cluster`, `distance` (squared Euclidean, or `1 − cos`), `marker` (the row's marker label, if any) |
//! | `centroids` | every `window` rows (`scope = window`) and at the end (`all_time`): `cluster`, `count` (rows absorbed), `centroid` (list of `d` floats) |
//! | `windows` | the same moments: `rows`, `inertia` (sum of distances over the window's rows), `mean_distance` |
//! | `label_agreement` | at the end, when rows carried markers: adjusted Rand index and adjusted mutual information between clusters and marker labels |
//!
//! The assignment (the `rows × k × d` product) runs on the operator's device: CPU GEMM or wgpu.

pub mod model;

pub use model::{
    cosine_kmeans, inertia, kmeans_best_of, kmeans_plusplus, lloyd, normalize_rows, AssignKernels, CpuAssign, GpuAssign,
    LloydResult, Metric, MiniBatch,
};

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;

use arrow::array::{ArrayRef, Float64Array, Int64Array, StringArray, UInt32Array, UInt64Array};
use arrow::datatypes::{DataType, Field, Schema as ArrowSchema};
use arrow::record_batch::RecordBatch;
use neurostream_engine::kernels::Kernels;
use neurostream_engine::layout::{check_values, MAX_VALUES};
use neurostream_engine::{
    Batch, ComputeDevice, EngineError, Frame, NodeConfig, NodeContext, Operator, OperatorInstance, OperatorKind, Partitioning,
    Result, RowIndex, Schema, TableFrame,
};
use serde::{Deserialize, Serialize};

use super::metrics::{adjusted_mutual_info, adjusted_rand_index};
use crate::stats::tables::{Scope, TableBuilder};

/// The tables `kmeans` emits, in order.
pub const KMEANS_TABLES: [&str; 4] = ["assignments", "centroids", "windows", "label_agreement"];

/// Configuration of a `kmeans` operator.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct KmeansConfig {
    /// Number of clusters.
    pub k: usize,
    /// `euclidean` (default; squared distance) or `cosine` (spherical k-means, `1 − cos`).
    #[serde(default)]
    pub metric: Metric,
    /// Initial centroids instead of k-means++: a JSON file (`[[...], ...]` or
    /// `{"centroids": [[...], ...]}`) or an `.npy` array, `k × width`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub init: Option<String>,
    /// Rows buffered for k-means++ seeding (default `max(20·k, 1024)`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(extend("x-unit" = "rows"))]
    pub init_rows: Option<usize>,
    /// Rows per mini-batch (default 256).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(extend("x-unit" = "rows"))]
    pub batch_size: Option<usize>,
    /// Rows between `centroids`/`windows` tables (default: only at the end).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(extend("x-unit" = "rows"))]
    pub window: Option<u64>,
    /// Seed of the k-means++ sampling (default 0).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seed: Option<u64>,
    /// CPU threads for the assignment product (default 1: workers provide parallelism).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub threads: Option<usize>,
    /// Write the per-row `assignments` table (default true).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub assignments: Option<bool>,
    /// Expected input width; a different input is a shape error at validation.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub channels: Option<usize>,
}

impl NodeConfig for KmeansConfig {
    const KIND: &'static str = "kmeans";
}

/// Reads `k × d` centroids from JSON or `.npy`.
pub fn read_centroids(path: &Path) -> Result<(Vec<f64>, usize, usize), String> {
    let bytes = std::fs::read(path).map_err(|e| format!("{}: cannot read: {e}", path.display()))?;
    if bytes.starts_with(b"\x93NUMPY") {
        let h = neurostream_engine::tensor::parse_npy_header(&bytes).map_err(|e| format!("{}: {e}", path.display()))?;
        if h.shape.len() != 2 {
            return Err(format!(
                "{}: centroids must be a 2-D array, shape is {:?}",
                path.display(),
                h.shape
            ));
        }
        let need = h.data_len;
        let data = bytes
            .get(h.data_offset..h.data_offset + need)
            .ok_or_else(|| format!("{}: truncated: {need} data bytes expected", path.display()))?;
        let mut out = Vec::new();
        neurostream_engine::tensor::decode_le(h.dtype, data, &mut out);
        return Ok((out.into_iter().map(f64::from).collect(), h.shape[0], h.shape[1]));
    }
    let v: serde_json::Value =
        serde_json::from_slice(&bytes).map_err(|e| format!("{}: neither .npy nor JSON: {e}", path.display()))?;
    let rows = v.get("centroids").unwrap_or(&v);
    let rows: Vec<Vec<f64>> = serde_json::from_value(rows.clone())
        .map_err(|e| format!("{}: expected a list of centroid lists: {e}", path.display()))?;
    let d = rows.first().map_or(0, Vec::len);
    if rows.is_empty() || d == 0 || rows.iter().any(|r| r.len() != d) {
        return Err(format!(
            "{}: centroids must be a non-empty k × d list of equal rows",
            path.display()
        ));
    }
    Ok((rows.concat(), rows.len(), d))
}

/// The `kmeans` operator kind.
pub struct KmeansKind;

impl OperatorKind for KmeansKind {
    type Config = KmeansConfig;

    fn describe(&self) -> &'static str {
        "streaming mini-batch k-means (k-means++ seeding, Euclidean or cosine) with per-row assignments and centroid tables"
    }

    fn build(&self, cfg: KmeansConfig, ctx: &NodeContext, input: &Arc<Schema>) -> Result<Arc<dyn Operator>> {
        let fail = |m: String| Err(EngineError::config(ctx.label, m));
        if input.is_sparse() || input.is_tables() {
            return fail(format!("kmeans takes dense streams; its input is {}", input.describe()));
        }
        let d = input.width();
        if let Some(expected) = cfg.channels.filter(|&c| c != d) {
            return fail(format!(
                "shape mismatch: expects {expected} channels (key `channels`) but its input has {d}"
            ));
        }
        if cfg.k == 0 {
            return fail("`k` must be at least 1".into());
        }
        if let Err(m) = check_values("`k` centroids × channels", cfg.k, d) {
            return fail(m);
        }
        let init = match &cfg.init {
            Some(p) => {
                let path = ctx.input_file(p);
                let (c, k, w) = read_centroids(&path).map_err(|e| EngineError::config(ctx.label, e))?;
                if k != cfg.k || w != d {
                    return fail(format!(
                        "shape mismatch: `init` {} holds {k} × {w} centroids; k = {} and the input has {d} channels",
                        path.display(),
                        cfg.k
                    ));
                }
                if c.iter().any(|v| !v.is_finite()) {
                    return fail(format!("`init` {}: centroids contain NaN or Inf", path.display()));
                }
                Some(Arc::new(c))
            }
            None => None,
        };
        // The default seeding buffer shrinks (to no less than k rows) where 20·k rows would not fit.
        let init_rows = cfg
            .init_rows
            .unwrap_or(cfg.k.saturating_mul(20).max(1024).min((MAX_VALUES / d.max(1)).max(cfg.k)));
        if init_rows < cfg.k {
            return fail(format!("`init_rows` {init_rows} must be at least k = {}", cfg.k));
        }
        let batch_size = cfg.batch_size.unwrap_or(256);
        if batch_size == 0 || cfg.window == Some(0) || cfg.threads == Some(0) {
            return fail("`batch_size`, `window` and `threads` must be at least 1".into());
        }
        if let Err(m) = check_values("`init_rows` × channels", init_rows, d)
            .and_then(|()| check_values("`batch_size` × channels", batch_size, d))
        {
            return fail(m);
        }
        Ok(Arc::new(Kmeans(Arc::new(Settings {
            schema: Arc::new(Schema::tables(
                KMEANS_TABLES.iter().map(|s| s.to_string()).collect(),
                Some("kmeans".into()),
            )),
            d,
            k: cfg.k,
            metric: cfg.metric,
            init,
            init_rows,
            batch_size,
            window: cfg.window,
            seed: cfg.seed.unwrap_or(0),
            threads: cfg.threads.unwrap_or(1),
            assignments: cfg.assignments.unwrap_or(true),
            name: ctx.label.to_string(),
        }))))
    }
}

/// The configured operator: settings shared by every worker's instance.
struct Kmeans(Arc<Settings>);

impl Operator for Kmeans {
    fn output_schema(&self) -> Arc<Schema> {
        self.0.schema.clone()
    }
    fn partitioning(&self) -> Partitioning {
        Partitioning::ByStream
    }
    fn checkpointing(&self) -> neurostream_engine::Checkpointing {
        // Per stream: the rows waiting for a batch, the centroids and counts, window totals.
        neurostream_engine::Checkpointing::Snapshot
    }
    fn holds_back(&self) -> bool {
        true
    }
    fn instantiate(&self, device: &ComputeDevice) -> Result<Box<dyn OperatorInstance>> {
        let threads = self.0.threads;
        let kernels = Kernels::select(
            "kmeans",
            device,
            |ctx| Ok(Box::new(GpuAssign::new(ctx)?) as Box<dyn AssignKernels>),
            Box::new(move || Box::new(CpuAssign::new(threads)) as Box<dyn AssignKernels>),
        )?;
        Ok(Box::new(KmeansInstance {
            op: self.0.clone(),
            kernels,
            streams: HashMap::new(),
        }))
    }
}

struct Settings {
    schema: Arc<Schema>,
    d: usize,
    k: usize,
    metric: Metric,
    init: Option<Arc<Vec<f64>>>,
    init_rows: usize,
    batch_size: usize,
    window: Option<u64>,
    seed: u64,
    threads: usize,
    assignments: bool,
    name: String,
}

/// Row keys of the rows in flight: `(seq_id, pos)` or `(sample, 0)`, and the marker label.
#[derive(Default, Serialize, Deserialize)]
struct Rows {
    data: Vec<f32>,
    keys: Vec<(i64, u32)>,
    labels: Vec<Option<String>>,
}

impl Rows {
    fn len(&self) -> usize {
        self.keys.len()
    }
}

#[derive(Serialize, Deserialize)]
struct StreamState {
    tokens: bool,
    pending: Rows,
    model: Option<MiniBatch>,
    rows_seen: u64,
    window_start: u64,
    window_rows: u64,
    window_inertia: f64,
    total_inertia: f64,
    labelled: (Vec<u32>, Vec<u32>),
    label_ids: HashMap<String, u32>,
}

struct KmeansInstance {
    op: Arc<Settings>,
    kernels: Kernels<dyn AssignKernels>,
    streams: HashMap<Arc<str>, StreamState>,
}

fn frame_rows(frame: &Frame, metric: Metric) -> Rows {
    let n = frame.rows();
    let keys = match &frame.index {
        RowIndex::Samples(s) => s.iter().map(|&v| (v, 0)).collect(),
        RowIndex::Tokens { seq_id, pos, .. } => seq_id.iter().zip(pos).map(|(&s, &p)| (s as i64, p)).collect(),
    };
    let mut labels = vec![None; n];
    for m in &frame.markers {
        if let Some(l) = labels.get_mut(m.row as usize) {
            *l = Some(m.label.clone());
        }
    }
    let mut data = frame.data.clone();
    if metric == Metric::Cosine {
        normalize_rows(&mut data, frame.width());
    }
    Rows { data, keys, labels }
}

impl KmeansInstance {
    fn seed_model(&mut self, stream: &Arc<str>) -> Result<()> {
        let op = &self.op;
        let st = self.streams.get_mut(stream).expect("stream state exists");
        let init = match &op.init {
            Some(c) => c.as_ref().clone(),
            None => kmeans_plusplus(&st.pending.data, op.d, op.k, op.seed)
                .map_err(|e| EngineError::Runtime(format!("{}: stream {stream}: k-means++ seeding: {e}", op.name)))?,
        };
        st.model = Some(MiniBatch::new(init, op.d, op.metric));
        Ok(())
    }

    fn consume(&mut self, stream: &Arc<str>, rows: Rows, out: &mut Vec<Batch>) -> Result<()> {
        let d = self.op.d;
        let mut start = 0;
        let mut table = Rows::default();
        let mut clusters = Vec::new();
        let mut distances = Vec::new();
        while start < rows.len() {
            let st = self.streams.get_mut(stream).expect("stream state exists");
            let to_boundary = self.op.window.map_or(u64::MAX, |w| w - st.window_rows) as usize;
            let n = self.op.batch_size.min(rows.len() - start).min(to_boundary);
            let model = st.model.as_mut().expect("seeded");
            // `step` assigns before it moves the centroids, so a failed GPU assignment retries cleanly.
            let batch = &rows.data[start * d..(start + n) * d];
            let (labels, dist) = self.kernels.run(|k| model.step(batch, k))?;
            st.rows_seen += n as u64;
            st.window_rows += n as u64;
            let batch_inertia = dist.iter().map(|&v| v as f64).sum::<f64>();
            st.window_inertia += batch_inertia;
            st.total_inertia += batch_inertia;
            for (i, &l) in labels.iter().enumerate() {
                if let Some(label) = &rows.labels[start + i] {
                    let next = st.label_ids.len() as u32;
                    let id = *st.label_ids.entry(label.clone()).or_insert(next);
                    st.labelled.0.push(l);
                    st.labelled.1.push(id);
                }
            }
            if self.op.assignments {
                table.keys.extend_from_slice(&rows.keys[start..start + n]);
                table.labels.extend_from_slice(&rows.labels[start..start + n]);
                clusters.extend(labels);
                distances.extend(dist.iter().map(|&v| v as f64));
            }
            start += n;
            if self.op.window.is_some_and(|w| st.window_rows >= w) {
                if !clusters.is_empty() {
                    out.push(self.assignment_table(stream, &table, &clusters, &distances));
                    table = Rows::default();
                    clusters.clear();
                    distances.clear();
                }
                self.emit_state(stream, Scope::Window, out);
            }
        }
        if !clusters.is_empty() {
            out.push(self.assignment_table(stream, &table, &clusters, &distances));
        }
        Ok(())
    }

    fn table(&self, stream: &Arc<str>, name: &str, data: RecordBatch) -> Batch {
        Batch::Table(TableFrame {
            stream: stream.clone(),
            schema: self.op.schema.clone(),
            table: name.into(),
            data,
        })
    }

    fn assignment_table(&self, stream: &Arc<str>, rows: &Rows, clusters: &[u32], dist: &[f64]) -> Batch {
        let st = &self.streams[stream];
        let n = clusters.len();
        let mut fields = vec![Field::new("stream", DataType::Utf8, false)];
        let mut cols: Vec<ArrayRef> = vec![Arc::new(StringArray::from(vec![stream.as_ref(); n]))];
        if st.tokens {
            fields.push(Field::new("seq_id", DataType::UInt64, false));
            fields.push(Field::new("pos", DataType::UInt32, false));
            cols.push(Arc::new(UInt64Array::from_iter_values(rows.keys.iter().map(|k| k.0 as u64))));
            cols.push(Arc::new(UInt32Array::from_iter_values(rows.keys.iter().map(|k| k.1))));
        } else {
            fields.push(Field::new("sample", DataType::Int64, false));
            cols.push(Arc::new(Int64Array::from_iter_values(rows.keys.iter().map(|k| k.0))));
        }
        fields.extend([
            Field::new("cluster", DataType::UInt32, false),
            Field::new("distance", DataType::Float64, false),
            Field::new("marker", DataType::Utf8, true),
        ]);
        cols.push(Arc::new(UInt32Array::from(clusters.to_vec())));
        cols.push(Arc::new(Float64Array::from(dist.to_vec())));
        cols.push(Arc::new(StringArray::from(rows.labels.clone())));
        let data = RecordBatch::try_new(Arc::new(ArrowSchema::new(fields)), cols).expect("assignment columns agree");
        self.table(stream, "assignments", data)
    }

    /// Emits the `centroids` and `windows` tables for the current window (or all time).
    fn emit_state(&mut self, stream: &Arc<str>, scope: Scope, out: &mut Vec<Batch>) {
        let (k, d) = (self.op.k, self.op.d);
        let st = self.streams.get_mut(stream).expect("stream state exists");
        let Some(model) = &st.model else { return };
        let (start, end) = match scope {
            Scope::Window => (st.window_start, st.rows_seen),
            Scope::AllTime => (0, st.rows_seen),
        };
        let mut c = TableBuilder::new(stream, scope, start, end, None, k);
        c.u32("cluster", (0..k as u32).collect())
            .u64("count", model.counts.clone())
            .f32_list("centroid", d, model.centroids.iter().map(|&v| v as f32).collect());
        let centroids = c.finish();
        let rows = if scope == Scope::Window {
            st.window_rows
        } else {
            st.rows_seen
        };
        let inertia = if scope == Scope::Window {
            st.window_inertia
        } else {
            st.total_inertia
        };
        let mut w = TableBuilder::new(stream, scope, start, end, None, 1);
        w.u64("rows", vec![rows])
            .f64("inertia", vec![inertia])
            .f64("mean_distance", vec![inertia / rows.max(1) as f64]);
        if scope == Scope::Window {
            st.window_start = st.rows_seen;
            st.window_rows = 0;
            st.window_inertia = 0.0;
        }
        let windows = w.finish();
        out.push(self.table(stream, "centroids", centroids));
        out.push(self.table(stream, "windows", windows));
    }
}

impl OperatorInstance for KmeansInstance {
    fn snapshot(&self) -> Result<Vec<u8>> {
        neurostream_engine::checkpoint::encode_streams(&self.streams)
    }

    fn restore(&mut self, state: &[u8]) -> Result<()> {
        for (stream, st) in neurostream_engine::checkpoint::decode_streams::<StreamState>(state, "kmeans")? {
            let d = self.op.d;
            let fits = st.pending.data.len() == st.pending.len() * d
                && st.pending.labels.len() == st.pending.len()
                && st
                    .model
                    .as_ref()
                    .is_none_or(|m| m.d == d && m.centroids.len() == m.counts.len() * d);
            if !fits {
                return Err(EngineError::Checkpoint(format!(
                    "kmeans: the saved state of stream {stream} does not fit rows of {d} columns"
                )));
            }
            self.streams.insert(stream, st);
        }
        Ok(())
    }

    fn process(&mut self, batch: Batch, out: &mut Vec<Batch>) -> Result<()> {
        let Batch::Dense(frame) = batch else {
            return Err(EngineError::Shape(format!(
                "{}: kmeans takes dense frames; stream {} is not",
                self.op.name,
                batch.stream()
            )));
        };
        if let Some((row, channel)) = frame.first_non_finite() {
            return Err(EngineError::NonFinite {
                stream: frame.stream.to_string(),
                row: frame.index.describe_row(row),
                channel,
                name: frame.schema.channels.get(channel).map_or(String::new(), |c| c.name.clone()),
            });
        }
        let stream = frame.stream.clone();
        let rows = frame_rows(&frame, self.op.metric);
        let st = self.streams.entry(stream.clone()).or_insert_with(|| StreamState {
            tokens: matches!(frame.index, RowIndex::Tokens { .. }),
            pending: Rows::default(),
            model: None,
            rows_seen: 0,
            window_start: 0,
            window_rows: 0,
            window_inertia: 0.0,
            total_inertia: 0.0,
            labelled: (Vec::new(), Vec::new()),
            label_ids: HashMap::new(),
        });
        if st.model.is_some() {
            return self.consume(&stream, rows, out);
        }
        st.pending.data.extend(rows.data);
        st.pending.keys.extend(rows.keys);
        st.pending.labels.extend(rows.labels);
        if st.pending.len() >= self.op.init_rows || self.op.init.is_some() {
            self.seed_model(&stream)?;
            let pending = std::mem::take(&mut self.streams.get_mut(&stream).unwrap().pending);
            self.consume(&stream, pending, out)?;
        }
        Ok(())
    }

    fn finish(&mut self, out: &mut Vec<Batch>) -> Result<()> {
        let streams = neurostream_engine::stream_names(&self.streams);
        for stream in streams {
            self.finish_stream(&stream, true, out)?;
        }
        Ok(())
    }

    /// Emits the stream's last tables and drops its model. A live stream that ended before it
    /// had `k` rows is logged and dropped: the run goes on with the others.
    fn end_stream(&mut self, stream: &Arc<str>, out: &mut Vec<Batch>) -> Result<()> {
        self.finish_stream(stream, false, out)?;
        self.streams.remove(stream);
        Ok(())
    }
}

impl KmeansInstance {
    /// Fits a stream still collecting its first rows, then emits its last window, all-time and
    /// label-agreement tables (it ends, or the run does). Fewer rows than `k` are an error when
    /// `short_is_error`, else a warning and nothing is emitted.
    fn finish_stream(&mut self, stream: &Arc<str>, short_is_error: bool, out: &mut Vec<Batch>) -> Result<()> {
        let Some(st) = self.streams.get(stream) else {
            return Ok(());
        };
        if st.model.is_none() {
            let n = st.pending.len();
            if n < self.op.k {
                let m = format!(
                    "{}: stream {stream} ended after {n} rows, fewer than the k = {} clusters asked for",
                    self.op.name, self.op.k
                );
                if short_is_error {
                    return Err(EngineError::Runtime(m));
                }
                tracing::warn!("{m}: it is not clustered");
                return Ok(());
            }
            self.seed_model(stream)?;
            let pending = std::mem::take(&mut self.streams.get_mut(stream).unwrap().pending);
            self.consume(stream, pending, out)?;
        }
        if self.streams[stream].window_rows > 0 {
            self.emit_state(stream, Scope::Window, out);
        }
        self.emit_state(stream, Scope::AllTime, out);
        let st = &self.streams[stream];
        if !st.labelled.0.is_empty() {
            let (clusters, labels) = &st.labelled;
            let ari = adjusted_rand_index(clusters, labels);
            let ami = adjusted_mutual_info(clusters, labels);
            tracing::info!(
                "{} stream {stream}: clusters vs marker labels over {} labelled rows: ARI {ari:.4}, AMI {ami:.4}",
                self.op.name,
                clusters.len()
            );
            let mut t = TableBuilder::new(stream, Scope::AllTime, 0, st.rows_seen, None, 1);
            t.u64("labelled_rows", vec![clusters.len() as u64])
                .u64("labels", vec![st.label_ids.len() as u64])
                .f64("adjusted_rand_index", vec![ari])
                .f64("adjusted_mutual_info", vec![ami]);
            let data = t.finish();
            out.push(self.table(stream, "label_agreement", data));
        }
        Ok(())
    }
}
