//! The view of one stream, as the live view keeps it: bounded whatever the run's length.
//! Signals keep [`COLUMNS`] min/max columns (decimated on arrival), feature streams a count
//! per feature and a bounded L0 series, tables their latest rows, token scalars a bounded
//! series of batch means.
//!
//! Each view can merge with the same stream's view from another process (a multi-process
//! run's live view shows the whole run) and turns into JSON for a viewer.

use std::collections::{BTreeMap, VecDeque};

use arrow::datatypes::DataType;
use neurostream_engine::{Batch, Frame, RowIndex, SparseFrame, StreamKind, TableFrame};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use crate::json::{finite, significant};

/// Columns of a signal trace: the view's pixel columns (min and max per column).
pub const COLUMNS: usize = 600;
/// Seconds of signal a trace covers.
pub const TRACE_SECONDS: f64 = 10.0;
/// Channels traced per signal stream (the first ones); a viewer picks which of them it is sent.
pub const MAX_TRACED_CHANNELS: usize = 256;
/// Channels of each signal stream a viewer is sent until it picks others (the first ones).
pub const DEFAULT_TRACES: usize = 8;
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
/// Significant digits of trace values: a trace is drawn at pixel resolution, far coarser.
const TRACE_DIGITS: i32 = 4;

/// One stream's live view, updated by the worker that emits the stream's batches.
#[derive(Clone)]
pub(super) enum View {
    Signal(SignalView),
    Features(FeatureView),
    Tables(BTreeMap<String, TableView>),
    Scalars(ScalarView),
}

impl View {
    /// An empty view for the stream `batch` belongs to.
    pub(super) fn of(batch: &Batch) -> View {
        match batch {
            Batch::Dense(f) if matches!(f.schema.kind, StreamKind::Signal { .. }) => View::Signal(SignalView::new(f)),
            Batch::Dense(f) => View::Scalars(ScalarView::new(f)),
            Batch::Sparse(s) => View::Features(FeatureView::new(s.schema.width())),
            Batch::Table(_) | Batch::End(_) => View::Tables(BTreeMap::new()),
        }
    }

    /// Folds one batch of the stream in.
    pub(super) fn add(&mut self, batch: &Batch) {
        match (self, batch) {
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

    /// A copy that can travel between processes (tables as JSON rows).
    pub(super) fn picture(&self) -> StreamPicture {
        match self {
            View::Signal(v) => StreamPicture::Signal(v.clone()),
            View::Features(v) => StreamPicture::Features(v.clone()),
            View::Scalars(v) => StreamPicture::Scalars(v.clone()),
            View::Tables(t) => StreamPicture::Tables(t.iter().map(|(name, t)| (name.clone(), t.rows())).collect()),
        }
    }
}

/// One stream's view as it travels from a process to process 0 and is merged there.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub(super) enum StreamPicture {
    Signal(SignalView),
    Features(FeatureView),
    Tables(BTreeMap<String, TableRows>),
    Scalars(ScalarView),
}

impl StreamPicture {
    /// Merges the same stream's view from another process into this one.
    pub(super) fn merge(&mut self, other: StreamPicture) {
        match (self, other) {
            (StreamPicture::Signal(a), StreamPicture::Signal(b)) => a.merge(&b),
            (StreamPicture::Features(a), StreamPicture::Features(b)) => a.merge(&b),
            (StreamPicture::Scalars(a), StreamPicture::Scalars(b)) => a.series.merge(&b.series),
            (StreamPicture::Tables(a), StreamPicture::Tables(b)) => {
                for (name, rows) in b {
                    match a.get_mut(&name) {
                        Some(t) => t.merge(rows),
                        None => {
                            a.insert(name, rows);
                        }
                    }
                }
            }
            _ => {} // one stream is of one kind in every process
        }
    }

    /// The view as JSON for a viewer that is sent the trace `channels` of signals.
    pub(super) fn snapshot(&self, channels: &dyn Fn(usize) -> Vec<usize>) -> Value {
        match self {
            StreamPicture::Signal(s) => s.snapshot(&channels(s.channels.len())),
            StreamPicture::Features(f) => f.snapshot(),
            StreamPicture::Tables(t) => json!({
                "type": "tables",
                "tables": t.iter().map(|(name, t)| (name.clone(), t.snapshot())).collect::<serde_json::Map<_, _>>(),
            }),
            StreamPicture::Scalars(s) => s.snapshot(),
        }
    }
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
/// Column `k` holds rows `[k, k + 1) × rows_per_column` of the stream (by sample number or
/// time, not by arrival), so batches
/// that arrive out of order (the chunks of a source read by several workers) land where
/// they belong, and two processes' views of one stream merge column by column. The newest
/// [`COLUMNS`] + 1 columns are kept, in flat planes (`traced` values per column), so that a
/// snapshot's copy, taken under the stream's lock while a worker may wait, is a few memcpys.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub(super) struct SignalView {
    channels: Vec<String>,
    units: Vec<String>,
    sample_rate: f64,
    rows_per_s: f64,
    rows_per_column: usize,
    /// Number of the oldest kept column.
    first: i64,
    /// Columns kept (`first..first + kept`).
    kept: usize,
    /// Minimum of each traced channel in each kept column, column after column (+inf: no row).
    mins: VecDeque<f32>,
    /// Maximum, laid out as `mins` (-inf: no row).
    maxs: VecDeque<f32>,
    markers: VecDeque<(f64, String)>,
    rows: u64,
    /// The newest row's time and values.
    latest: (f64, Vec<f32>),
}

impl SignalView {
    fn new(f: &Frame) -> SignalView {
        let (sample_rate, row_rate) = match f.schema.kind {
            StreamKind::Signal { sample_rate, row_rate } => (sample_rate, row_rate),
            _ => (1.0, None),
        };
        let rows_per_s = row_rate.filter(|&r| r > 0.0).unwrap_or(sample_rate);
        let traced = f.schema.width().min(MAX_TRACED_CHANNELS);
        let rows_per_column = ((rows_per_s * TRACE_SECONDS / COLUMNS as f64).ceil() as usize).max(1);
        SignalView {
            channels: f.schema.channels.iter().take(traced).map(|c| c.name.clone()).collect(),
            units: f.schema.channels.iter().take(traced).map(|c| c.unit.clone()).collect(),
            sample_rate,
            rows_per_s,
            rows_per_column,
            first: 0,
            kept: 0,
            mins: VecDeque::with_capacity((COLUMNS + 1) * traced),
            maxs: VecDeque::with_capacity((COLUMNS + 1) * traced),
            markers: VecDeque::new(),
            rows: 0,
            latest: (f64::NEG_INFINITY, Vec::new()),
        }
    }

    /// The slot of column `k` in the planes, making room for it; `None` when it is older than
    /// every kept column and the window is full.
    fn slot(&mut self, k: i64) -> Option<usize> {
        let traced = self.channels.len();
        let window = COLUMNS as i64 + 1;
        if self.kept > 0 && k < self.first {
            let newest = self.first + self.kept as i64 - 1;
            if newest - k >= window {
                return None;
            }
            let missing = (self.first - k) as usize;
            for _ in 0..missing * traced {
                self.mins.push_front(f32::INFINITY);
                self.maxs.push_front(f32::NEG_INFINITY);
            }
            self.first = k;
            self.kept += missing;
        } else if self.kept == 0 || k - (self.first + self.kept as i64) >= window {
            // The first column, or a jump past the whole window: start over at `k`.
            self.mins.clear();
            self.maxs.clear();
            (self.first, self.kept) = (k, 0);
        }
        let end = self.first + self.kept as i64;
        if k >= end {
            let more = (k - end + 1) as usize;
            self.mins.extend(std::iter::repeat_n(f32::INFINITY, more * traced));
            self.maxs.extend(std::iter::repeat_n(f32::NEG_INFINITY, more * traced));
            self.kept += more;
        }
        if self.kept > COLUMNS + 1 {
            let drop = self.kept - (COLUMNS + 1);
            self.mins.drain(..drop * traced);
            self.maxs.drain(..drop * traced);
            self.first += drop as i64;
            self.kept -= drop;
        }
        Some((k - self.first) as usize)
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
        let mut current: Option<(i64, Option<usize>)> = None;
        for (i, row) in f.data.chunks_exact(w.max(1)).enumerate() {
            // The row's position in rows of the stream (exact for sample numbers, so columns
            // hold `rows_per_column` rows each); rows without a time go in arrival order.
            let position = match &f.index {
                RowIndex::Samples(s) => s[i] as f64 * self.rows_per_s / self.sample_rate,
                RowIndex::Tokens { time: Some(t), .. } => t[i] as f64 * 1e-9 * self.rows_per_s,
                RowIndex::Tokens { .. } => (self.rows + i as u64) as f64,
            };
            let t = position / self.rows_per_s;
            let k = (position / self.rows_per_column as f64).floor() as i64;
            let slot = match current {
                Some((key, slot)) if key == k => slot,
                _ => {
                    let slot = self.slot(k);
                    current = Some((k, slot));
                    slot
                }
            };
            if let Some(slot) = slot {
                let (lo, hi) = (
                    self.mins.range_mut(slot * traced..(slot + 1) * traced),
                    self.maxs.range_mut(slot * traced..(slot + 1) * traced),
                );
                for ((lo, hi), &v) in lo.zip(hi).zip(&row[..traced]) {
                    *lo = lo.min(v);
                    *hi = hi.max(v);
                }
            }
            if i + 1 == f.index.len() && t >= self.latest.0 {
                self.latest = (t, row[..traced].to_vec());
            }
        }
        self.rows += f.index.len() as u64;
    }

    /// Another process's view of the same stream: columns merge by their number (min of
    /// minima, max of maxima), markers by time, row counts add up.
    fn merge(&mut self, other: &SignalView) {
        let traced = self.channels.len();
        if other.channels.len() != traced || other.rows_per_column != self.rows_per_column || other.rows_per_s != self.rows_per_s
        {
            return;
        }
        for j in 0..other.kept {
            let k = other.first + j as i64;
            let theirs = j * traced..(j + 1) * traced;
            if other.mins.range(theirs.clone()).all(|v| *v == f32::INFINITY) {
                continue;
            }
            if let Some(slot) = self.slot(k) {
                for (c, t) in (slot * traced..(slot + 1) * traced).zip(theirs) {
                    self.mins[c] = self.mins[c].min(other.mins[t]);
                    self.maxs[c] = self.maxs[c].max(other.maxs[t]);
                }
            }
        }
        let mut markers: Vec<_> = self.markers.drain(..).chain(other.markers.iter().cloned()).collect();
        markers.sort_by(|a, b| a.0.total_cmp(&b.0));
        let skip = markers.len().saturating_sub(MAX_MARKERS);
        self.markers = markers.into_iter().skip(skip).collect();
        self.rows += other.rows;
        if other.latest.0 > self.latest.0 {
            self.latest = other.latest.clone();
        }
    }

    /// JSON with the traces of `channels` only (indices into the traced channels; others are
    /// left out); every channel's name and latest value are always sent. Columns without a
    /// row are sent as nulls (gaps).
    fn snapshot(&self, channels: &[usize]) -> Value {
        let traced = self.channels.len();
        let channels: Vec<usize> = channels.iter().copied().filter(|&c| c < traced).collect();
        let t: Vec<f64> = (0..self.kept)
            .map(|j| (self.first + j as i64) as f64 * self.rows_per_column as f64 / self.rows_per_s)
            .collect();
        let per_channel = |plane: &VecDeque<f32>| -> Vec<Vec<Value>> {
            channels
                .iter()
                .map(|&c| {
                    plane
                        .iter()
                        .skip(c)
                        .step_by(traced.max(1))
                        .map(|&v| significant(v, TRACE_DIGITS))
                        .collect()
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
            "traced": channels,
            "min": per_channel(&self.mins),
            "max": per_channel(&self.maxs),
            "latest": self.latest.1.iter().map(|&v| finite(v)).collect::<Vec<_>>(),
            "markers": self.markers.iter().map(|(t, l)| json!([t, l])).collect::<Vec<_>>(),
        })
    }
}

/// Seconds since the Unix epoch: series points of several processes are ordered by it.
fn now_s() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}

/// A bounded series of per-batch values over the stream's tokens (L0, batch means).
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub(super) struct Series {
    /// Rows of every batch so far, kept or not.
    tokens: u64,
    /// The newest batches: when each arrived, its rows and its values.
    points: VecDeque<(f64, u64, Vec<f32>)>,
}

impl Series {
    fn push(&mut self, rows: u64, values: Vec<f32>) {
        self.tokens += rows;
        self.points.push_back((now_s(), rows, values));
        if self.points.len() > MAX_POINTS {
            self.points.pop_front();
        }
    }

    /// Another process's series of the same stream: tokens add up, and the points of both
    /// are put in the order they arrived in (the newest kept).
    fn merge(&mut self, other: &Series) {
        let mut points: Vec<_> = self.points.drain(..).chain(other.points.iter().cloned()).collect();
        points.sort_by(|a, b| a.0.total_cmp(&b.0));
        let skip = points.len().saturating_sub(MAX_POINTS);
        self.points = points.into_iter().skip(skip).collect();
        self.tokens += other.tokens;
    }

    /// The stream's token count at the end of each kept batch.
    fn x(&self) -> Vec<u64> {
        let kept: u64 = self.points.iter().map(|p| p.1).sum();
        let mut at = self.tokens.saturating_sub(kept);
        self.points
            .iter()
            .map(|p| {
                at += p.1;
                at
            })
            .collect()
    }
}

/// A sparse feature stream: firings per feature and L0 over time.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub(super) struct FeatureView {
    fires: Vec<u64>,
    tokens: u64,
    active: u64,
    l0: Series,
}

impl FeatureView {
    fn new(n_features: usize) -> FeatureView {
        FeatureView {
            fires: vec![0; n_features.min(neurostream_engine::layout::MAX_WIDTH)],
            tokens: 0,
            active: 0,
            l0: Series::default(),
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
            self.l0.push(rows, vec![(s.ids.len() as f64 / rows as f64) as f32]);
        }
    }

    /// Adds another process's counts of the same stream.
    fn merge(&mut self, other: &FeatureView) {
        if other.fires.len() > self.fires.len() {
            self.fires.resize(other.fires.len(), 0);
        }
        for (a, b) in self.fires.iter_mut().zip(&other.fires) {
            *a += b;
        }
        self.tokens += other.tokens;
        self.active += other.active;
        self.l0.merge(&other.l0);
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
            "l0": {
                "tokens": self.l0.x(),
                "values": self.l0.points.iter().map(|p| finite(p.2[0])).collect::<Vec<_>>(),
            },
        })
    }
}

/// The newest rows of one result table, kept as Arrow slices (shared, not copied) and turned
/// into JSON only for a snapshot.
#[derive(Clone)]
pub(super) struct TableView {
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

    /// The kept rows as JSON objects.
    fn rows(&self) -> TableRows {
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
                rows.extend(r.iter().map(Value::to_string));
            }
        }
        TableRows {
            columns,
            total_rows: self.total,
            keep: self.keep,
            rows,
        }
    }
}

/// A table's newest rows, each a JSON object (text, so that it travels in any format).
#[derive(Clone, Debug, Serialize, Deserialize)]
pub(super) struct TableRows {
    columns: Vec<String>,
    total_rows: u64,
    keep: usize,
    rows: Vec<String>,
}

impl TableRows {
    /// Adds another process's rows of the same table (the newest `keep` of both are kept).
    fn merge(&mut self, other: TableRows) {
        if self.columns.is_empty() {
            self.columns = other.columns;
        }
        self.total_rows += other.total_rows;
        self.rows.extend(other.rows);
        let extra = self.rows.len().saturating_sub(self.keep);
        self.rows.drain(..extra);
    }

    fn snapshot(&self) -> Value {
        let rows: Vec<Value> = self.rows.iter().filter_map(|r| serde_json::from_str(r).ok()).collect();
        json!({"columns": self.columns, "total_rows": self.total_rows, "rows": rows})
    }
}

/// A dense non-signal stream (activations, token scalars): batch means per column over tokens.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub(super) struct ScalarView {
    columns: Vec<String>,
    /// Per batch, the mean of each column (NaN where a batch had no finite value).
    series: Series,
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
            series: Series::default(),
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
        self.series.push(rows as u64, means.into_iter().map(|m| m as f32).collect());
    }

    fn snapshot(&self) -> Value {
        json!({
            "type": "scalars",
            "columns": self.columns,
            "tokens": self.series.tokens,
            "x": self.series.x(),
            "means": self.series.points.iter().map(|p| p.2.iter().map(|&v| finite(v)).collect::<Vec<_>>()).collect::<Vec<_>>(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use neurostream_engine::Schema;
    use std::sync::Arc;

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
        assert_eq!(v.kept, COLUMNS + 1);
        assert_eq!((v.mins.len(), v.maxs.len()), (2 * (COLUMNS + 1), 2 * (COLUMNS + 1)));
        // Every column holds 17 consecutive samples: min and max of channel A are its ends.
        let (min_a, max_a, min_b) = (v.mins[0], v.maxs[0], v.mins[1]);
        assert_eq!(max_a - min_a, 16.0);
        assert_eq!(min_b, -max_a);
        assert_eq!(v.first * 17, min_a as i64);
        assert!((snap_t0(&v) - min_a as f64 / 1000.0).abs() < 1e-9);
        let snap = v.snapshot(&[0, 1]);
        assert_eq!(snap["traced"], json!([0, 1]));
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
        // A viewer that shows channel B only is sent B's traces only, and every latest value.
        let only_b = v.snapshot(&[1, 7]);
        assert_eq!(only_b["traced"], json!([1]));
        assert_eq!(only_b["min"].as_array().unwrap().len(), 1);
        assert_eq!(only_b["min"][0], snap["min"][1]);
        assert_eq!(only_b["latest"], snap["latest"]);
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

    fn snap_t0(v: &SignalView) -> f64 {
        v.snapshot(&[])["t"][0].as_f64().unwrap()
    }

    /// Chunks that arrive out of order (a source read by several workers), or in two
    /// processes, give the trace that one process reading them in order gives.
    #[test]
    fn signal_columns_do_not_depend_on_arrival_order_or_process() {
        let chunks: Vec<Frame> = (0..200).map(|k| signal_frame(k * 100, 100, 1000.0)).collect();
        let mut in_order = SignalView::new(&chunks[0]);
        chunks.iter().for_each(|c| in_order.add(c));
        let mut shuffled = SignalView::new(&chunks[0]);
        let mut order: Vec<usize> = (0..chunks.len()).collect();
        order.reverse();
        order.swap(3, 150);
        order.swap(0, 199);
        order.iter().for_each(|&k| shuffled.add(&chunks[k]));
        let all = |v: &SignalView| v.snapshot(&[0, 1]);
        assert_eq!(all(&shuffled), all(&in_order));
        let (mut even, mut odd) = (SignalView::new(&chunks[0]), SignalView::new(&chunks[0]));
        for (k, c) in chunks.iter().enumerate().rev() {
            if k % 2 == 0 { &mut even } else { &mut odd }.add(c);
        }
        let mut merged = StreamPicture::Signal(even);
        merged.merge(StreamPicture::Signal(odd));
        assert_eq!(merged.snapshot(&|_| vec![0, 1]), all(&in_order));
        assert_eq!(all(&in_order)["t"].as_array().unwrap().len(), COLUMNS + 1);
    }

    fn features(n: usize, rows: usize, ids: Vec<u32>, offsets: Vec<u32>) -> SparseFrame {
        let schema = Arc::new(Schema::features(n, None, None, None));
        let index = RowIndex::Tokens {
            seq_id: vec![0; rows],
            pos: (0..rows as u32).collect(),
            token: None,
            time: None,
        };
        let values = vec![1.0; ids.len()];
        SparseFrame::new("f".into(), schema, index, offsets, ids, values).unwrap()
    }

    /// Two processes' views of one feature stream merge into the view one process would have
    /// of all its batches: counts add up, the histogram and the top list come from the sums, and
    /// the L0 series runs over the tokens of both.
    #[test]
    fn feature_views_of_two_processes_merge_into_the_view_of_all_batches() {
        let batches = [
            features(6, 4, vec![0, 1, 0, 5], vec![0, 1, 2, 3, 4]),
            features(6, 2, vec![5, 4, 2], vec![0, 2, 3]),
            features(6, 3, vec![0, 3], vec![0, 1, 1, 2]),
        ];
        let mut whole = FeatureView::new(6);
        let (mut p0, mut p1) = (FeatureView::new(6), FeatureView::new(6));
        for (i, b) in batches.iter().enumerate() {
            whole.add(b);
            if i == 1 { &mut p1 } else { &mut p0 }.add(b);
            std::thread::sleep(std::time::Duration::from_millis(2));
        }
        let mut merged = StreamPicture::Features(p0);
        merged.merge(StreamPicture::Features(p1));
        let StreamPicture::Features(merged) = merged else {
            unreachable!()
        };
        let (a, b) = (merged.snapshot(), whole.snapshot());
        for key in ["tokens", "mean_l0", "dead", "density_histogram", "top", "n_features"] {
            assert_eq!(a[key], b[key], "{key}");
        }
        // Points in arrival order, on the whole stream's token axis.
        assert_eq!(a["l0"]["tokens"], json!([4, 6, 9]));
        assert_eq!(a["l0"], b["l0"]);
    }

    #[test]
    fn a_series_that_dropped_old_points_keeps_its_token_axis() {
        let mut s = Series::default();
        for _ in 0..MAX_POINTS + 10 {
            s.push(3, vec![1.0]);
        }
        let x = s.x();
        assert_eq!(x.len(), MAX_POINTS);
        assert_eq!(*x.last().unwrap(), 3 * (MAX_POINTS as u64 + 10));
        assert_eq!(x[0], 3 * 11);
        let mut other = Series::default();
        other.push(5, vec![2.0]);
        s.merge(&other);
        assert_eq!(s.points.len(), MAX_POINTS);
        assert_eq!(*s.x().last().unwrap(), 3 * (MAX_POINTS as u64 + 10) + 5);
    }

    #[test]
    fn tables_of_two_processes_keep_the_newest_rows_of_both() {
        let rows = |n: usize, from: usize| TableRows {
            columns: vec!["k".into()],
            total_rows: n as u64,
            keep: 5,
            rows: (from..from + n).map(|k| format!("{{\"k\":{k}}}")).collect(),
        };
        let mut a = StreamPicture::Tables([("t".to_string(), rows(4, 0))].into());
        a.merge(StreamPicture::Tables(
            [("t".to_string(), rows(3, 100)), ("u".to_string(), rows(1, 7))].into(),
        ));
        let snap = a.snapshot(&|_| vec![]);
        assert_eq!(snap["tables"]["t"]["total_rows"], 7);
        assert_eq!(
            snap["tables"]["t"]["rows"],
            json!([{"k": 2}, {"k": 3}, {"k": 100}, {"k": 101}, {"k": 102}])
        );
        assert_eq!(snap["tables"]["u"]["rows"], json!([{"k": 7}]));
    }

    /// A picture survives the trip between processes, infinities of open columns included.
    #[test]
    fn pictures_travel_between_processes_unchanged() {
        let mut v = SignalView::new(&signal_frame(0, 1, 1000.0));
        v.add(&signal_frame(0, 40, 1000.0));
        let sent = StreamPicture::Signal(v);
        let bytes = postcard::to_allocvec(&sent).unwrap();
        let back: StreamPicture = postcard::from_bytes(&bytes).unwrap();
        assert_eq!(back.snapshot(&|n| (0..n).collect()), sent.snapshot(&|n| (0..n).collect()));
    }
}
