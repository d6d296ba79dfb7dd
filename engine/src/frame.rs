//! The data model: dense [`Frame`]s and sparse [`SparseFrame`]s, carried by timely as [`Batch`]es.
//!
//! A frame holds many rows, never one message per sample: operators work on blocks.

use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::error::EngineError;
use crate::resident::{DeviceRows, Rows};
use crate::schema::Schema;
use crate::table::TableFrame;

/// The current wall-clock time in nanoseconds since the Unix epoch (how live sources stamp rows).
pub fn now_ns() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as i64)
}

/// The event time of each row of a frame.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum RowIndex {
    /// Signals: the sample index of each row (seconds = sample / sample_rate).
    Samples(Vec<i64>),
    /// Activations: sequence id and token position of each row, and optionally the token text.
    Tokens {
        /// Sequence (document) id per row.
        seq_id: Vec<u64>,
        /// Token position within its sequence per row.
        pos: Vec<u32>,
        /// Token text per row, when the source knows it.
        token: Option<Vec<String>>,
        /// Event time per row in nanoseconds since the Unix epoch (UTC), when known: read from a
        /// `time` column, or stamped on arrival by live sources. Time windows need it.
        #[serde(default)]
        time: Option<Vec<i64>>,
    },
}

impl RowIndex {
    /// Number of rows indexed.
    pub fn len(&self) -> usize {
        match self {
            RowIndex::Samples(s) => s.len(),
            RowIndex::Tokens { seq_id, .. } => seq_id.len(),
        }
    }

    /// True when no rows are indexed.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Keeps the rows whose `keep` entry is true.
    pub fn retain(&mut self, keep: &[bool]) {
        fn filter<T>(v: &mut Vec<T>, keep: &[bool]) {
            let mut i = 0;
            v.retain(|_| {
                let k = keep[i];
                i += 1;
                k
            });
        }
        match self {
            RowIndex::Samples(s) => filter(s, keep),
            RowIndex::Tokens {
                seq_id,
                pos,
                token,
                time,
            } => {
                filter(seq_id, keep);
                filter(pos, keep);
                if let Some(t) = token {
                    filter(t, keep);
                }
                if let Some(t) = time {
                    filter(t, keep);
                }
            }
        }
    }

    /// A human label for row `i` (`sample 1234` or `seq 3 pos 17`), used in error messages.
    pub fn describe_row(&self, i: usize) -> String {
        match self {
            RowIndex::Samples(s) => format!("sample {}", s[i]),
            RowIndex::Tokens { seq_id, pos, .. } => format!("seq_id {} pos {}", seq_id[i], pos[i]),
        }
    }
}

/// An event marker attached to a row of a signal frame (stimulus, annotation, label).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Marker {
    /// Row within the frame at which the event starts.
    pub row: u32,
    /// Event label, e.g. `left_hand` or `Sleep stage W`.
    pub label: String,
    /// Duration in seconds (0 for instantaneous events).
    pub duration_s: f64,
}

/// A dense block of `f32` values, `rows × width`, row-major, with its schema and row times.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Frame {
    /// Name of the stream this frame belongs to (the source's name unless renamed).
    pub stream: Arc<str>,
    /// Column meaning; shared by all frames of a stream.
    pub schema: Arc<Schema>,
    /// Event time of each row.
    pub index: RowIndex,
    /// Values, row-major, `rows * schema.width()` long; empty while the rows live on a GPU
    /// ([`Frame::device`]).
    pub data: Vec<f32>,
    /// Markers falling within this frame's rows.
    pub markers: Vec<Marker>,
    /// When the data this frame carries arrived in the engine (ns since the Unix epoch): stamped
    /// by the runtime as a source emits it, carried through operators (a frame computed from a
    /// window carries the arrival of the chunk that completed it), read by the sinks to report
    /// arrival-to-output latency.
    #[serde(default)]
    pub arrival_ns: Option<i64>,
    /// Set when the values live in a GPU buffer instead of `data`: a GPU operator left them there
    /// for the next GPU operator on the same worker. The runtime copies them back
    /// ([`Frame::materialize`]) before anything else sees the frame, and never sends such a frame
    /// to another process.
    #[serde(skip)]
    pub device: Option<Arc<DeviceRows>>,
}

impl Frame {
    /// Builds a frame, checking that `data` holds exactly `index.len() * schema.width()` values.
    pub fn new(stream: Arc<str>, schema: Arc<Schema>, index: RowIndex, data: Vec<f32>) -> Result<Frame, EngineError> {
        let expected = index.len() * schema.width();
        if data.len() != expected {
            return Err(EngineError::Shape(format!(
                "stream {stream}: frame has {} values, expected {} rows x {} channels = {expected}",
                data.len(),
                index.len(),
                schema.width()
            )));
        }
        Ok(Frame {
            stream,
            schema,
            index,
            data,
            markers: Vec::new(),
            arrival_ns: None,
            device: None,
        })
    }

    /// Replaces the values with `rows` (host or device), which must hold `rows × width` values.
    /// Rows computed on a GPU stay there only with `keep_on_device` (the runtime allowed the
    /// operator's output to stay, see [`crate::OperatorInstance::keep_output_on_device`]);
    /// otherwise they are copied back now.
    pub fn set_rows(&mut self, rows: Rows, keep_on_device: bool) -> Result<(), EngineError> {
        let expected = self.rows() * self.width();
        let (got, host, device) = match rows {
            Rows::Host(v) => (v.len(), v, None),
            Rows::Device(d) => (d.values(), Vec::new(), Some(d)),
        };
        if got != expected {
            return Err(EngineError::Shape(format!(
                "stream {}: a kernel returned {got} values for {} rows x {} channels",
                self.stream,
                self.rows(),
                self.width()
            )));
        }
        self.data = host;
        self.device = device;
        if !keep_on_device {
            self.materialize()?;
        }
        Ok(())
    }

    /// Whether the values live on a GPU (see [`Frame::device`]).
    pub fn is_on_device(&self) -> bool {
        self.device.is_some()
    }

    /// Copies values that live on a GPU back into `data` (waiting for the work that writes them).
    pub fn materialize(&mut self) -> Result<(), EngineError> {
        if let Some(rows) = self.device.take() {
            self.data = rows.download()?;
        }
        Ok(())
    }

    /// The values on the host: `data`, or a copy back from the GPU when they live there.
    pub fn values(&self) -> Result<std::borrow::Cow<'_, [f32]>, EngineError> {
        match &self.device {
            Some(rows) => Ok(std::borrow::Cow::Owned(rows.download()?)),
            None => Ok(std::borrow::Cow::Borrowed(&self.data)),
        }
    }

    /// Number of rows (samples or tokens).
    pub fn rows(&self) -> usize {
        self.index.len()
    }

    /// Number of columns (channels or `d_model`).
    pub fn width(&self) -> usize {
        self.schema.width()
    }

    /// Row `i` as a slice of `width()` values.
    pub fn row(&self, i: usize) -> &[f32] {
        let w = self.width();
        &self.data[i * w..(i + 1) * w]
    }

    /// Keeps the rows whose `keep` entry is true; markers on dropped rows are dropped too.
    pub fn retain_rows(&mut self, keep: &[bool]) {
        debug_assert!(self.device.is_none(), "retain_rows on rows that live on a GPU");
        let w = self.width();
        let mut new_row = vec![u32::MAX; keep.len()];
        let mut out = 0usize;
        for (i, &k) in keep.iter().enumerate() {
            if k {
                if out != i {
                    self.data.copy_within(i * w..(i + 1) * w, out * w);
                }
                new_row[i] = out as u32;
                out += 1;
            }
        }
        self.data.truncate(out * w);
        self.index.retain(keep);
        self.markers.retain_mut(|m| {
            let r = new_row[m.row as usize];
            m.row = r;
            r != u32::MAX
        });
    }

    /// Splits off rows `at..` into a new frame (with their markers), keeping rows `..at` here.
    pub fn split_off(&mut self, at: usize) -> Frame {
        debug_assert!(self.device.is_none(), "split_off on rows that live on a GPU");
        let w = self.width();
        let data = self.data.split_off(at * w);
        let index = match &mut self.index {
            RowIndex::Samples(s) => RowIndex::Samples(s.split_off(at)),
            RowIndex::Tokens {
                seq_id,
                pos,
                token,
                time,
            } => RowIndex::Tokens {
                seq_id: seq_id.split_off(at),
                pos: pos.split_off(at),
                token: token.as_mut().map(|t| t.split_off(at)),
                time: time.as_mut().map(|t| t.split_off(at)),
            },
        };
        let (keep, moved): (Vec<Marker>, Vec<Marker>) = self.markers.drain(..).partition(|m| (m.row as usize) < at);
        self.markers = keep;
        Frame {
            stream: self.stream.clone(),
            schema: self.schema.clone(),
            index,
            data,
            markers: moved
                .into_iter()
                .map(|mut m| {
                    m.row -= at as u32;
                    m
                })
                .collect(),
            arrival_ns: self.arrival_ns,
            device: None,
        }
    }

    /// The first row holding a NaN or infinite value, with the channel index.
    pub fn first_non_finite(&self) -> Option<(usize, usize)> {
        let w = self.width().max(1);
        // Blocks checked without an early exit (the compiler vectorizes it: this runs on every
        // batch a source reads); the position is looked for only in a block that has one.
        const BLOCK: usize = 256;
        let non_finite = |v: &f32| v.to_bits() & 0x7f80_0000 == 0x7f80_0000;
        self.data.chunks(BLOCK).enumerate().find_map(|(b, block)| {
            block.iter().fold(false, |any, v| any | non_finite(v)).then(|| {
                let p = b * BLOCK + block.iter().position(non_finite).expect("the block has one");
                (p / w, p % w)
            })
        })
    }
}

/// Sparse rows in CSR form (e.g. SAE feature activations): row `i` holds
/// `ids[offsets[i]..offsets[i+1]]` with `values` alongside.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SparseFrame {
    /// Name of the stream this frame belongs to.
    pub stream: Arc<str>,
    /// Schema of the feature space (`width()` = number of features).
    pub schema: Arc<Schema>,
    /// Event time of each row.
    pub index: RowIndex,
    /// Row offsets into `ids`/`values`, `rows + 1` long, starting at 0.
    pub offsets: Vec<u32>,
    /// Feature ids, `< schema.width()`.
    pub ids: Vec<u32>,
    /// Feature values, one per id.
    pub values: Vec<f32>,
    /// The same entries on a GPU, where the operator that computed them left them for a
    /// consumer on that device (see [`crate::DevicePairs`]); never saved or sent.
    #[serde(skip)]
    pub device: Option<Arc<crate::DevicePairs>>,
}

impl SparseFrame {
    /// Builds a sparse frame, checking offsets, id bounds and lengths.
    pub fn new(
        stream: Arc<str>,
        schema: Arc<Schema>,
        index: RowIndex,
        offsets: Vec<u32>,
        ids: Vec<u32>,
        values: Vec<f32>,
    ) -> Result<SparseFrame, EngineError> {
        let bad = |m: String| Err(EngineError::Shape(format!("stream {stream}: {m}")));
        if offsets.len() != index.len() + 1 || offsets.first() != Some(&0) {
            return bad(format!(
                "sparse frame needs {} offsets starting at 0, got {}",
                index.len() + 1,
                offsets.len()
            ));
        }
        if offsets.windows(2).any(|w| w[0] > w[1]) {
            return bad("sparse frame offsets decrease".into());
        }
        let nnz = *offsets.last().unwrap() as usize;
        if ids.len() != nnz || values.len() != nnz {
            return bad(format!(
                "sparse frame has {} ids and {} values, offsets say {nnz}",
                ids.len(),
                values.len()
            ));
        }
        if let Some(&id) = ids.iter().find(|&&id| id as usize >= schema.width()) {
            return bad(format!("feature id {id} >= {} features", schema.width()));
        }
        Ok(SparseFrame {
            stream,
            schema,
            index,
            offsets,
            ids,
            values,
            device: None,
        })
    }

    /// The frame with its entries also on a GPU (`device` must hold exactly its rows).
    pub fn with_device(mut self, device: crate::DevicePairs) -> SparseFrame {
        debug_assert_eq!(device.rows(), self.rows());
        self.device = Some(Arc::new(device));
        self
    }

    /// Number of rows.
    pub fn rows(&self) -> usize {
        self.index.len()
    }

    /// Ids and values of row `i`.
    pub fn row(&self, i: usize) -> (&[u32], &[f32]) {
        let (a, b) = (self.offsets[i] as usize, self.offsets[i + 1] as usize);
        (&self.ids[a..b], &self.values[a..b])
    }
}

/// The end of a stream: no row of it will come again (an `arrow_tcp` client without a stream
/// name disconnected, so its stream cannot continue). It follows the stream's last rows through
/// the dataflow; each operator emits what it would emit for the stream at the end of the run
/// and lets go of its state ([`crate::OperatorInstance::end_stream`]), so a run whose streams
/// come and go for days holds state for the open ones only. Sinks never receive it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct StreamEnd {
    /// The stream that ended.
    pub stream: Arc<str>,
    /// The schema of the edge it travels on.
    pub schema: Arc<Schema>,
}

/// The streams a map holds state for, in name order: the order operators finish them in, so
/// a run's last outputs never depend on hashing.
pub fn stream_names<V>(streams: &std::collections::HashMap<Arc<str>, V>) -> Vec<Arc<str>> {
    let mut names: Vec<Arc<str>> = streams.keys().cloned().collect();
    names.sort();
    names
}

/// What flows along a dataflow edge: a dense or a sparse frame, a block of a result table, or
/// the end of a stream.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum Batch {
    /// Dense rows.
    Dense(Frame),
    /// Sparse rows.
    Sparse(SparseFrame),
    /// Rows of a named result table.
    Table(TableFrame),
    /// The end of a stream (no rows; last so journals written before it still decode).
    End(StreamEnd),
}

impl Batch {
    /// The stream name.
    pub fn stream(&self) -> &Arc<str> {
        match self {
            Batch::Dense(f) => &f.stream,
            Batch::Sparse(f) => &f.stream,
            Batch::Table(t) => &t.stream,
            Batch::End(e) => &e.stream,
        }
    }

    /// The schema.
    pub fn schema(&self) -> &Arc<Schema> {
        match self {
            Batch::Dense(f) => &f.schema,
            Batch::Sparse(f) => &f.schema,
            Batch::Table(t) => &t.schema,
            Batch::End(e) => &e.schema,
        }
    }

    /// Number of rows.
    pub fn rows(&self) -> usize {
        match self {
            Batch::Dense(f) => f.rows(),
            Batch::Sparse(f) => f.rows(),
            Batch::Table(t) => t.rows(),
            Batch::End(_) => 0,
        }
    }

    /// Whether it is a dense frame whose values live on a GPU.
    pub fn is_on_device(&self) -> bool {
        matches!(self, Batch::Dense(f) if f.is_on_device())
    }

    /// Copies values that live on a GPU back to the host ([`Frame::materialize`]); a sparse
    /// frame lets go of its GPU copy.
    pub fn materialize(&mut self) -> Result<(), EngineError> {
        match self {
            Batch::Dense(f) => f.materialize(),
            Batch::Sparse(f) => {
                f.device = None; // the host's entries are the frame; the GPU copy is let go
                Ok(())
            }
            _ => Ok(()),
        }
    }

    /// Whether it is the end of its stream ([`StreamEnd`]).
    pub fn is_end(&self) -> bool {
        matches!(self, Batch::End(_))
    }

    /// Approximate payload size in bytes (values and indices), for throughput metrics.
    pub fn payload_bytes(&self) -> usize {
        match self {
            Batch::Dense(f) => f.rows() * (f.width() * 4 + 12),
            Batch::Sparse(f) => f.ids.len() * 8 + f.offsets.len() * 4 + f.rows() * 12,
            Batch::Table(t) => t.data.get_array_memory_size(),
            Batch::End(_) => 0,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn signal_frame(rows: usize, width: usize) -> Frame {
        let schema = Arc::new(Schema::signal(
            &(0..width).map(|c| format!("c{c}")).collect::<Vec<_>>(),
            "uV",
            100.0,
        ));
        let data = (0..rows * width).map(|i| i as f32).collect();
        let mut f = Frame::new("s".into(), schema, RowIndex::Samples((0..rows as i64).collect()), data).unwrap();
        f.markers = vec![
            Marker {
                row: 1,
                label: "a".into(),
                duration_s: 0.0,
            },
            Marker {
                row: 4,
                label: "b".into(),
                duration_s: 1.0,
            },
        ];
        f
    }

    #[test]
    fn new_checks_the_shape() {
        let schema = Arc::new(Schema::activation(3, None, None));
        let index = RowIndex::Tokens {
            seq_id: vec![0, 0],
            pos: vec![0, 1],
            token: None,
            time: None,
        };
        let err = Frame::new("acts".into(), schema, index, vec![0.0; 5])
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("stream acts: frame has 5 values, expected 2 rows x 3 channels = 6"),
            "{err}"
        );
    }

    #[test]
    fn split_off_moves_rows_and_markers() {
        let mut f = signal_frame(6, 2);
        let tail = f.split_off(3);
        assert_eq!(f.data, (0..6).map(|i| i as f32).collect::<Vec<_>>());
        assert_eq!(tail.data, (6..12).map(|i| i as f32).collect::<Vec<_>>());
        assert_eq!(tail.index, RowIndex::Samples(vec![3, 4, 5]));
        assert_eq!(f.markers.len(), 1);
        assert_eq!((tail.markers[0].row, tail.markers[0].label.as_str()), (1, "b"));
    }

    #[test]
    fn retain_rows_keeps_data_index_and_markers_aligned() {
        let mut f = signal_frame(6, 2);
        f.retain_rows(&[true, false, true, true, true, false]);
        assert_eq!(f.data, vec![0.0, 1.0, 4.0, 5.0, 6.0, 7.0, 8.0, 9.0]);
        assert_eq!(f.index, RowIndex::Samples(vec![0, 2, 3, 4]));
        assert_eq!(f.markers.len(), 1);
        assert_eq!((f.markers[0].row, f.markers[0].label.as_str()), (3, "b"));
    }

    #[test]
    fn first_non_finite_finds_row_and_channel() {
        let mut f = signal_frame(4, 3);
        assert_eq!(f.first_non_finite(), None);
        f.data[7] = f32::NAN;
        f.data[10] = f32::INFINITY;
        assert_eq!(f.first_non_finite(), Some((2, 1)));
        // Beyond the first block of 256 values, and the largest finite values are not flagged.
        let mut f = signal_frame(300, 3);
        f.data[0] = f32::MAX;
        f.data[1] = f32::MIN;
        assert_eq!(f.first_non_finite(), None);
        f.data[899] = f32::NEG_INFINITY;
        assert_eq!(f.first_non_finite(), Some((299, 2)));
        f.data[700] = -f32::NAN;
        assert_eq!(f.first_non_finite(), Some((233, 1)));
    }

    #[test]
    fn sparse_frame_checks_offsets_and_ids() {
        let schema = Arc::new(Schema::activation(10, None, None));
        let index = || RowIndex::Tokens {
            seq_id: vec![0, 0],
            pos: vec![0, 1],
            token: None,
            time: None,
        };
        let ok = SparseFrame::new(
            "f".into(),
            schema.clone(),
            index(),
            vec![0, 2, 3],
            vec![1, 9, 4],
            vec![0.5, 1.0, 2.0],
        )
        .unwrap();
        assert_eq!(ok.row(1), (&[4u32][..], &[2.0f32][..]));
        let bad_id = SparseFrame::new(
            "f".into(),
            schema.clone(),
            index(),
            vec![0, 1, 2],
            vec![1, 10],
            vec![1.0, 1.0],
        );
        assert!(bad_id.unwrap_err().to_string().contains("feature id 10 >= 10 features"));
        let bad_off = SparseFrame::new("f".into(), schema, index(), vec![0, 2, 1], vec![1, 2], vec![1.0, 1.0]);
        assert!(bad_off.unwrap_err().to_string().contains("offsets decrease"));
    }
}
