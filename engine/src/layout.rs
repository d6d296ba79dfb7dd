//! The Arrow layouts of frames at the edges (Parquet files, IPC streams). Stable and documented
//! in the README; readable by pyarrow, DuckDB and Polars.
//!
//! **Activations**, one row per token: `seq_id: uint64`, `pos: uint32`, optional `token: utf8`,
//! `act: fixed_size_list<float32>[d_model]`. Schema metadata: `neurostream.layout = "activations"`,
//! `neurostream.d_model`, and `neurostream.model` / `neurostream.layer` when known.
//!
//! **Signals**, one row per sample: `time: float64` (seconds, `sample / sample_rate`),
//! `sample: int64`, then one `float32` column per channel named by its label, and optionally a
//! nullable `marker: utf8` column. Schema metadata: `neurostream.layout = "signals"`,
//! `neurostream.sample_rate` (Hz) and `neurostream.units` (JSON list, one unit per channel).
//!
//! **Token scalars** (e.g. reconstruction metrics), one row per token: `seq_id: uint64`,
//! `pos: uint32`, then one `float32` column per scalar. Metadata: `neurostream.layout =
//! "token_scalars"`, `neurostream.producer` when known.
//!
//! **Features** (sparse, e.g. SAE latents), one row per token: `seq_id: uint64`, `pos: uint32`,
//! `features: list<struct<id: uint32, act: float32>>` sorted by activation, largest first.
//! Schema metadata: `neurostream.layout = "features"`, `neurostream.n_features`, and
//! `neurostream.encoder` / `neurostream.model` / `neurostream.layer` when known.

use std::collections::HashMap;
use std::sync::Arc;

use arrow::array::{
    Array, ArrayRef, AsArray, FixedSizeListArray, Float32Array, Float64Array, Int64Array, StringArray, UInt32Array, UInt64Array,
};
use arrow::datatypes::{DataType, Field, Float16Type, Float32Type, Float64Type, Int64Type, Schema as ArrowSchema};
use arrow::record_batch::RecordBatch;

use crate::frame::{Batch, Frame, Marker, RowIndex, SparseFrame};
use crate::schema::{Channel, Schema, StreamKind};

/// The widest activation row accepted from a file or a client (values per row).
pub const MAX_WIDTH: usize = 1 << 20;

/// The most values one frame, or one table a node derives from its configuration, may hold
/// (2^28 values: 1 GiB of f32). Configurations asking for more are refused before anything is
/// allocated.
pub const MAX_VALUES: usize = 1 << 28;

/// Checks that `rows × width` values (a frame of `rows` rows, a table of `rows` entries) stay
/// within [`MAX_VALUES`]; the error names `what`.
pub fn check_values(what: &str, rows: usize, width: usize) -> std::result::Result<(), String> {
    match rows.checked_mul(width) {
        Some(n) if n <= MAX_VALUES => Ok(()),
        _ => Err(format!(
            "{what}: {rows} × {width} values is more than the {MAX_VALUES} one frame or table may hold"
        )),
    }
}

/// Metadata key naming the layout (`activations` or `signals`).
pub const META_LAYOUT: &str = "neurostream.layout";
/// Metadata key of the sampling rate in Hz (signals).
pub const META_SAMPLE_RATE: &str = "neurostream.sample_rate";
/// Metadata key of the rows per second of signals whose rows are not one per sample (windowed
/// outputs; 0 for irregular rows).
pub const META_ROW_RATE: &str = "neurostream.row_rate";
/// Metadata key of the per-channel units, a JSON list (signals).
pub const META_UNITS: &str = "neurostream.units";
/// Signals: JSON list of each channel's type (`eeg`, `mag`, ...; empty when unknown), written
/// when any channel has one.
pub const META_CHANNEL_TYPES: &str = "neurostream.channel_types";
/// Metadata key of the model name (activations).
pub const META_MODEL: &str = "neurostream.model";
/// Metadata key of the layer or hook name (activations).
pub const META_LAYER: &str = "neurostream.layer";
/// Metadata key of the activation width (activations).
pub const META_D_MODEL: &str = "neurostream.d_model";
/// Metadata key of the number of features (features).
pub const META_N_FEATURES: &str = "neurostream.n_features";
/// Metadata key of what produced the features (features).
pub const META_ENCODER: &str = "neurostream.encoder";
/// Name of the activation vector column.
pub const ACT_COLUMN: &str = "act";
/// Column names the signal layout reserves.
pub const SIGNAL_RESERVED: [&str; 3] = ["time", "sample", "marker"];

/// Options for encoding frames.
#[derive(Clone, Debug, Default)]
pub struct EncodeOptions {
    /// Signals: add the nullable `marker` column.
    pub markers: bool,
    /// Activations: add the `token` column (empty strings where unknown).
    pub tokens: bool,
    /// Token layouts (activations, token scalars, features): add the nullable `time` column
    /// (timestamp, ns, UTC; null where a row has no event time).
    pub time: bool,
}

/// The optional event-time column of the token layouts.
pub const TIME_COLUMN: &str = "time";

fn time_field() -> Field {
    Field::new(
        TIME_COLUMN,
        DataType::Timestamp(arrow::datatypes::TimeUnit::Nanosecond, Some("UTC".into())),
        true,
    )
}

/// The `time` column of `rows` rows from a token index's event times (all null when absent).
fn time_array(time: &Option<Vec<i64>>, rows: usize) -> ArrayRef {
    let a = match time {
        Some(t) => arrow::array::TimestampNanosecondArray::from(t.clone()),
        None => arrow::array::TimestampNanosecondArray::from(vec![None::<i64>; rows]),
    };
    Arc::new(a.with_timezone("UTC"))
}

/// Reads the optional `time` column of a token-layout batch as ns since the Unix epoch: a
/// timestamp of any unit, or int64 nanoseconds. `None` when the batch has no such column.
pub fn read_time_column(batch: &RecordBatch, where_: &str, file_row: u64) -> Result<Option<Vec<i64>>, String> {
    use arrow::datatypes::TimeUnit;
    let Ok(i) = batch.schema().index_of(TIME_COLUMN) else {
        return Ok(None);
    };
    let col = batch.column(i);
    if col.null_count() > 0 {
        let r = (0..col.len()).find(|&r| col.is_null(r)).unwrap_or(0);
        return Err(format!("{where_}, row {}: `time` is null", file_row + r as u64));
    }
    let scale = |unit: &TimeUnit| match unit {
        TimeUnit::Second => 1_000_000_000,
        TimeUnit::Millisecond => 1_000_000,
        TimeUnit::Microsecond => 1_000,
        TimeUnit::Nanosecond => 1,
    };
    let values: Vec<i64> = match col.data_type() {
        DataType::Timestamp(unit, _) => {
            let m = scale(unit);
            let raw = arrow::compute::cast(col, &DataType::Int64).map_err(|e| format!("{where_}: `time`: {e}"))?;
            raw.as_primitive::<Int64Type>()
                .values()
                .iter()
                .map(|v| v.saturating_mul(m))
                .collect()
        }
        DataType::Int64 => col.as_primitive::<Int64Type>().values().to_vec(),
        other => {
            return Err(format!(
                "{where_}: column `time` has type {other}; expected a timestamp or int64 nanoseconds since the Unix epoch"
            ))
        }
    };
    Ok(Some(values))
}

/// The Arrow schema (with metadata) that frames of `schema` encode to.
pub fn arrow_schema(schema: &Schema, opts: &EncodeOptions) -> Arc<ArrowSchema> {
    let mut meta = HashMap::new();
    let fields: Vec<Field> = match &schema.kind {
        StreamKind::Signal { sample_rate, row_rate } => {
            meta.insert(META_LAYOUT.to_string(), "signals".to_string());
            meta.insert(META_SAMPLE_RATE.to_string(), sample_rate.to_string());
            if let Some(r) = row_rate {
                meta.insert(META_ROW_RATE.to_string(), r.to_string());
            }
            let units: Vec<&str> = schema.channels.iter().map(|c| c.unit.as_str()).collect();
            meta.insert(META_UNITS.to_string(), serde_json::to_string(&units).unwrap());
            if schema.channels.iter().any(|c| !c.kind.is_empty()) {
                let types: Vec<&str> = schema.channels.iter().map(|c| c.kind.as_str()).collect();
                meta.insert(META_CHANNEL_TYPES.to_string(), serde_json::to_string(&types).unwrap());
            }
            let mut f = vec![
                Field::new("time", DataType::Float64, false),
                Field::new("sample", DataType::Int64, false),
            ];
            f.extend(schema.channels.iter().map(|c| Field::new(&c.name, DataType::Float32, false)));
            if opts.markers {
                f.push(Field::new("marker", DataType::Utf8, true));
            }
            f
        }
        StreamKind::Activation { model, layer } => {
            meta.insert(META_LAYOUT.to_string(), "activations".to_string());
            meta.insert(META_D_MODEL.to_string(), schema.width().to_string());
            if let Some(m) = model {
                meta.insert(META_MODEL.to_string(), m.clone());
            }
            if let Some(l) = layer {
                meta.insert(META_LAYER.to_string(), l.clone());
            }
            let mut f = vec![
                Field::new("seq_id", DataType::UInt64, false),
                Field::new("pos", DataType::UInt32, false),
            ];
            if opts.time {
                f.push(time_field());
            }
            if opts.tokens {
                f.push(Field::new("token", DataType::Utf8, false));
            }
            f.push(Field::new(
                ACT_COLUMN,
                DataType::FixedSizeList(Arc::new(Field::new("item", DataType::Float32, false)), schema.width() as i32),
                false,
            ));
            f
        }
        StreamKind::TokenScalars { producer } => {
            meta.insert(META_LAYOUT.to_string(), "token_scalars".to_string());
            if let Some(p) = producer {
                meta.insert("neurostream.producer".to_string(), p.clone());
            }
            let mut f = vec![
                Field::new("seq_id", DataType::UInt64, false),
                Field::new("pos", DataType::UInt32, false),
            ];
            if opts.time {
                f.push(time_field());
            }
            f.extend(schema.channels.iter().map(|c| Field::new(&c.name, DataType::Float32, false)));
            f
        }
        // Each table has its own columns, chosen by its producer; see `TableFrame`.
        StreamKind::Tables { .. } => {
            meta.insert(META_LAYOUT.to_string(), "tables".to_string());
            Vec::new()
        }
        StreamKind::Features {
            n_features,
            encoder,
            model,
            layer,
        } => {
            meta.insert(META_LAYOUT.to_string(), "features".to_string());
            meta.insert(META_N_FEATURES.to_string(), n_features.to_string());
            for (k, v) in [(META_ENCODER, encoder), (META_MODEL, model), (META_LAYER, layer)] {
                if let Some(v) = v {
                    meta.insert(k.to_string(), v.clone());
                }
            }
            let mut f = vec![
                Field::new("seq_id", DataType::UInt64, false),
                Field::new("pos", DataType::UInt32, false),
            ];
            if opts.time {
                f.push(time_field());
            }
            f.push(Field::new(
                "features",
                DataType::List(Arc::new(Field::new("item", feature_struct(), false))),
                false,
            ));
            f
        }
    };
    Arc::new(ArrowSchema::new_with_metadata(fields, meta))
}

fn feature_struct() -> DataType {
    DataType::Struct(
        vec![
            Field::new("id", DataType::UInt32, false),
            Field::new("act", DataType::Float32, false),
        ]
        .into(),
    )
}

/// Encodes a sparse frame as a record batch of the features layout; each row's features are
/// written sorted by activation, largest first (ties by id).
pub fn sparse_to_batch(frame: &SparseFrame, target: &Arc<ArrowSchema>) -> Result<RecordBatch, String> {
    let RowIndex::Tokens { seq_id, pos, time, .. } = &frame.index else {
        return Err(format!(
            "stream {}: sparse frames need token (seq_id, pos) rows",
            frame.stream
        ));
    };
    let mut ids = Vec::with_capacity(frame.ids.len());
    let mut acts = Vec::with_capacity(frame.values.len());
    let mut order: Vec<usize> = Vec::new();
    for r in 0..frame.rows() {
        let (row_ids, row_vals) = frame.row(r);
        order.clear();
        order.extend(0..row_ids.len());
        order.sort_by(|&a, &b| row_vals[b].total_cmp(&row_vals[a]).then(row_ids[a].cmp(&row_ids[b])));
        ids.extend(order.iter().map(|&i| row_ids[i]));
        acts.extend(order.iter().map(|&i| row_vals[i]));
    }
    let DataType::Struct(fields) = feature_struct() else {
        unreachable!()
    };
    let values = arrow::array::StructArray::try_new(
        fields,
        vec![Arc::new(UInt32Array::from(ids)), Arc::new(Float32Array::from(acts))],
        None,
    )
    .map_err(|e| e.to_string())?;
    let offsets = arrow::buffer::OffsetBuffer::new(frame.offsets.iter().map(|&o| o as i32).collect::<Vec<i32>>().into());
    let list = arrow::array::ListArray::try_new(
        Arc::new(Field::new("item", feature_struct(), false)),
        offsets,
        Arc::new(values),
        None,
    )
    .map_err(|e| e.to_string())?;
    let mut cols: Vec<ArrayRef> = vec![
        Arc::new(UInt64Array::from(seq_id.clone())),
        Arc::new(UInt32Array::from(pos.clone())),
    ];
    if target.index_of(TIME_COLUMN).is_ok() {
        cols.push(time_array(time, frame.rows()));
    }
    cols.push(Arc::new(list));
    RecordBatch::try_new(target.clone(), cols).map_err(|e| e.to_string())
}

/// Encodes a frame as a record batch of `arrow_schema(frame.schema, opts)`.
pub fn frame_to_batch(frame: &Frame, target: &Arc<ArrowSchema>, opts: &EncodeOptions) -> Result<RecordBatch, String> {
    encode_frame(frame, None, target, opts)
}

/// [`frame_to_batch`], consuming the frame: activation values move into the Arrow array
/// instead of being copied (collecting large outputs in memory).
pub fn frame_into_batch(mut frame: Frame, target: &Arc<ArrowSchema>, opts: &EncodeOptions) -> Result<RecordBatch, String> {
    // Only activations keep their values as one buffer; other layouts are read column by column.
    let data = matches!(frame.schema.kind, StreamKind::Activation { .. }).then(|| std::mem::take(&mut frame.data));
    encode_frame(&frame, data, target, opts)
}

/// Encodes `frame`, whose values are `data` when given (moved out of it), else its own.
fn encode_frame(
    frame: &Frame,
    data: Option<Vec<f32>>,
    target: &Arc<ArrowSchema>,
    opts: &EncodeOptions,
) -> Result<RecordBatch, String> {
    let rows = frame.rows();
    let w = frame.width();
    let mut cols: Vec<ArrayRef> = Vec::new();
    match (&frame.schema.kind, &frame.index) {
        (StreamKind::Signal { sample_rate, .. }, RowIndex::Samples(samples)) => {
            cols.push(Arc::new(Float64Array::from_iter_values(
                samples.iter().map(|&s| s as f64 / sample_rate),
            )));
            cols.push(Arc::new(Int64Array::from(samples.clone())));
            for c in 0..w {
                cols.push(Arc::new(Float32Array::from_iter_values(
                    (0..rows).map(|r| frame.data[r * w + c]),
                )));
            }
            if opts.markers {
                let mut labels: Vec<Option<String>> = vec![None; rows];
                for m in &frame.markers {
                    let slot = &mut labels[m.row as usize];
                    match slot {
                        Some(s) => {
                            s.push(';');
                            s.push_str(&m.label)
                        }
                        None => *slot = Some(m.label.clone()),
                    }
                }
                cols.push(Arc::new(StringArray::from(labels)));
            }
        }
        (
            StreamKind::Activation { .. },
            RowIndex::Tokens {
                seq_id,
                pos,
                token,
                time,
            },
        ) => {
            cols.push(Arc::new(UInt64Array::from(seq_id.clone())));
            cols.push(Arc::new(UInt32Array::from(pos.clone())));
            if opts.time {
                cols.push(time_array(time, rows));
            }
            if opts.tokens {
                match token {
                    Some(t) => cols.push(Arc::new(StringArray::from_iter_values(t.iter()))),
                    None => cols.push(Arc::new(StringArray::from_iter_values(std::iter::repeat_n("", rows)))),
                }
            }
            let values = Float32Array::from(data.unwrap_or_else(|| frame.data.clone()));
            let item = Arc::new(Field::new("item", DataType::Float32, false));
            let list = FixedSizeListArray::try_new(item, w as i32, Arc::new(values), None).map_err(|e| e.to_string())?;
            cols.push(Arc::new(list));
        }
        (StreamKind::TokenScalars { .. }, RowIndex::Tokens { seq_id, pos, time, .. }) => {
            cols.push(Arc::new(UInt64Array::from(seq_id.clone())));
            cols.push(Arc::new(UInt32Array::from(pos.clone())));
            if opts.time {
                cols.push(time_array(time, rows));
            }
            for c in 0..w {
                cols.push(Arc::new(Float32Array::from_iter_values(
                    (0..rows).map(|r| frame.data[r * w + c]),
                )));
            }
        }
        _ => return Err(format!("stream {}: row index does not match its schema kind", frame.stream)),
    }
    RecordBatch::try_new(target.clone(), cols).map_err(|e| e.to_string())
}

/// Which layout an Arrow schema holds, with the frame schema it decodes to.
#[derive(Clone, Debug)]
pub struct Decoder {
    /// The frame schema.
    pub schema: Arc<Schema>,
    layout: Layout,
}

#[derive(Clone, Debug)]
enum Layout {
    Features {
        features: usize,
        seq_id: Option<usize>,
        pos: Option<usize>,
    },
    Activations {
        act: usize,
        seq_id: Option<usize>,
        pos: Option<usize>,
        token: Option<usize>,
        width: usize,
    },
    Signals {
        sample: usize,
        channels: Vec<usize>,
        marker: Option<usize>,
    },
}

impl Decoder {
    /// Recognizes the layout of `arrow`: activations when it has the vector column `act_column`
    /// (fixed-size or variable list of float32/float64), signals when it has an integer `sample`
    /// column. `sample_rate` overrides or supplies the signal rate.
    pub fn new(arrow: &ArrowSchema, act_column: &str, sample_rate: Option<f64>) -> Result<Decoder, String> {
        let meta = arrow.metadata();
        let find = |name: &str| arrow.index_of(name).ok();
        if meta.get(META_LAYOUT).is_some_and(|l| l == "features") {
            let features = find("features").ok_or("features layout without a `features` column")?;
            let ok = match arrow.field(features).data_type() {
                DataType::List(item) => match item.data_type() {
                    DataType::Struct(fields) => {
                        fields.len() == 2
                            && fields[0].data_type() == &DataType::UInt32
                            && fields[1].data_type() == &DataType::Float32
                    }
                    _ => false,
                },
                _ => false,
            };
            if !ok {
                return Err(format!(
                    "column `features` has type {}; expected list<struct<id: uint32, act: float32>>",
                    arrow.field(features).data_type()
                ));
            }
            let n: usize = meta
                .get(META_N_FEATURES)
                .ok_or(format!("features layout without {META_N_FEATURES} metadata"))?
                .parse()
                .map_err(|_| format!("metadata {META_N_FEATURES} is not a number"))?;
            let schema = Schema::features(
                n,
                meta.get(META_ENCODER).cloned(),
                meta.get(META_MODEL).cloned(),
                meta.get(META_LAYER).cloned(),
            );
            return Ok(Decoder {
                schema: Arc::new(schema),
                layout: Layout::Features {
                    features,
                    seq_id: find("seq_id"),
                    pos: find("pos"),
                },
            });
        }
        if let Some(act) = find(act_column) {
            let width = match arrow.field(act).data_type() {
                DataType::FixedSizeList(item, n) if is_float(item.data_type()) => *n as usize,
                DataType::List(item) | DataType::LargeList(item) if is_float(item.data_type()) => {
                    match meta.get(META_D_MODEL) {
                        Some(d) => d
                            .parse()
                            .map_err(|_| format!("metadata {META_D_MODEL} = {d} is not a number"))?,
                        None => 0, // learned from the first row
                    }
                }
                other => {
                    return Err(format!(
                        "column `{act_column}` has type {other}; expected a list of float32, float64 or float16"
                    ))
                }
            };
            // A schema claiming an absurd width must not make us allocate per-dimension channel
            // names for it (found by fuzzing the live ingest).
            if width > MAX_WIDTH {
                return Err(format!(
                    "column `{act_column}` declares {width} values per row; more than {MAX_WIDTH} is not a plausible activation width"
                ));
            }
            let schema = Schema::activation(width, meta.get(META_MODEL).cloned(), meta.get(META_LAYER).cloned());
            let check_int = |i: Option<usize>, name: &str| -> Result<Option<usize>, String> {
                match i {
                    Some(i) if arrow.field(i).data_type().is_integer() => Ok(Some(i)),
                    Some(i) => Err(format!(
                        "column `{name}` has type {}; expected an integer",
                        arrow.field(i).data_type()
                    )),
                    None => Ok(None),
                }
            };
            return Ok(Decoder {
                schema: Arc::new(schema),
                layout: Layout::Activations {
                    act,
                    seq_id: check_int(find("seq_id"), "seq_id")?,
                    pos: check_int(find("pos"), "pos")?,
                    token: find("token").filter(|&i| matches!(arrow.field(i).data_type(), DataType::Utf8 | DataType::LargeUtf8)),
                    width,
                },
            });
        }
        if let Some(sample) = find("sample") {
            if !arrow.field(sample).data_type().is_integer() {
                return Err(format!(
                    "column `sample` has type {}; expected int64",
                    arrow.field(sample).data_type()
                ));
            }
            let rate = match (sample_rate, meta.get(META_SAMPLE_RATE)) {
                (Some(r), _) => r,
                (None, Some(r)) => r
                    .parse()
                    .map_err(|_| format!("metadata {META_SAMPLE_RATE} = {r} is not a number"))?,
                (None, None) => {
                    return Err(format!(
                        "no sample rate: the file has no {META_SAMPLE_RATE} metadata; set `sample_rate`"
                    ))
                }
            };
            if !(rate.is_finite() && rate > 0.0) {
                return Err(format!(
                    "sample rate {rate} Hz is not a positive number ({META_SAMPLE_RATE} or `sample_rate`)"
                ));
            }
            let units: Vec<String> = meta
                .get(META_UNITS)
                .and_then(|u| serde_json::from_str(u).ok())
                .unwrap_or_default();
            let types: Vec<String> = meta
                .get(META_CHANNEL_TYPES)
                .and_then(|u| serde_json::from_str(u).ok())
                .unwrap_or_default();
            let channels: Vec<usize> = (0..arrow.fields().len())
                .filter(|&i| !SIGNAL_RESERVED.contains(&arrow.field(i).name().as_str()) && is_float(arrow.field(i).data_type()))
                .collect();
            if channels.is_empty() {
                return Err("signal layout without float channel columns".into());
            }
            let row_rate = meta
                .get(META_ROW_RATE)
                .and_then(|r| r.parse::<f64>().ok())
                .filter(|r| r.is_finite() && *r >= 0.0);
            let schema = Schema {
                kind: StreamKind::Signal {
                    sample_rate: rate,
                    row_rate,
                },
                channels: channels
                    .iter()
                    .enumerate()
                    .map(|(k, &i)| Channel {
                        name: arrow.field(i).name().clone(),
                        unit: units.get(k).cloned().unwrap_or_default(),
                        kind: types.get(k).cloned().unwrap_or_default(),
                    })
                    .collect(),
            };
            return Ok(Decoder {
                schema: Arc::new(schema),
                layout: Layout::Signals {
                    sample,
                    channels,
                    marker: find("marker"),
                },
            });
        }
        Err(format!(
            "neither layout: activations need a `{act_column}` list column, signals a `sample` column (columns: {})",
            arrow
                .fields()
                .iter()
                .map(|f| f.name().as_str())
                .collect::<Vec<_>>()
                .join(", ")
        ))
    }

    /// The activation width learned so far (0 for variable lists before the first row).
    pub fn width(&self) -> usize {
        self.schema.width()
    }

    /// Decodes a record batch of any layout into a batch: sparse for the features layout, dense
    /// otherwise (see [`Decoder::decode`]).
    pub fn decode_batch(
        &mut self,
        batch: &RecordBatch,
        stream: &Arc<str>,
        first_row: u64,
        file_row: u64,
        where_: &str,
    ) -> Result<Batch, String> {
        let Layout::Features { features, seq_id, pos } = &self.layout else {
            return self.decode(batch, stream, first_row, file_row, where_).map(Batch::Dense);
        };
        let rows = batch.num_rows();
        let col = batch.column(*features).as_list::<i32>();
        if col.null_count() > 0 {
            let r = (0..rows).find(|&r| col.is_null(r)).unwrap_or(0);
            return Err(format!("{where_}, row {}: `features` is null", file_row + r as u64));
        }
        let entries = col.values().as_struct();
        let ids = entries.column(0).as_primitive::<arrow::datatypes::UInt32Type>();
        let acts = entries.column(1).as_primitive::<Float32Type>();
        let offsets = col.value_offsets();
        let base = offsets[0] as usize;
        let (start, end) = (base, offsets[rows] as usize);
        let (seq, positions) = token_index(batch, *seq_id, *pos, where_, first_row, file_row)?;
        SparseFrame::new(
            stream.clone(),
            self.schema.clone(),
            RowIndex::Tokens {
                seq_id: seq,
                pos: positions,
                token: None,
                time: read_time_column(batch, where_, file_row)?,
            },
            offsets.iter().map(|&o| (o as usize - base) as u32).collect(),
            ids.values()[start..end].to_vec(),
            acts.values()[start..end].to_vec(),
        )
        .map(Batch::Sparse)
        .map_err(|e| format!("{where_}: {e}"))
    }

    /// Decodes a record batch whose first row is the `first_row`-th (0-based) of the source.
    /// `where_` names the file and row group for errors; row numbers in errors are file rows.
    pub fn decode(
        &mut self,
        batch: &RecordBatch,
        stream: &Arc<str>,
        first_row: u64,
        file_row: u64,
        where_: &str,
    ) -> Result<Frame, String> {
        let rows = batch.num_rows();
        match &mut self.layout {
            Layout::Features { .. } => Err("a features file decodes to sparse batches: use decode_batch".into()),
            Layout::Activations {
                act,
                seq_id,
                pos,
                token,
                width,
            } => {
                let col = batch.column(*act);
                let mut data: Vec<f32> = Vec::with_capacity(rows * *width);
                let mut push_values = |values: &dyn Array, len: usize, r: usize, width: &mut usize| -> Result<(), String> {
                    if *width == 0 {
                        *width = len;
                    }
                    if len != *width {
                        return Err(format!(
                            "{where_}, row {}: `act` has {len} values, expected {}",
                            file_row + r as u64,
                            width
                        ));
                    }
                    if values.null_count() > 0 {
                        return Err(format!("{where_}, row {}: `act` holds nulls", file_row + r as u64));
                    }
                    extend_f32(values, &mut data);
                    Ok(())
                };
                if col.null_count() > 0 {
                    let r = (0..rows).find(|&r| col.is_null(r)).unwrap_or(0);
                    return Err(format!("{where_}, row {}: `act` is null", file_row + r as u64));
                }
                match col.data_type() {
                    DataType::FixedSizeList(_, n) => {
                        let l = col.as_fixed_size_list();
                        if *n as usize != *width && *width != 0 {
                            return Err(format!("{where_}: `act` has {n} values per row, expected {width}"));
                        }
                        let values = l.values().slice(l.offset() * *n as usize, rows * *n as usize);
                        push_values(values.as_ref(), *n as usize, 0, width)?;
                    }
                    DataType::List(_) => {
                        let l = col.as_list::<i32>();
                        for r in 0..rows {
                            let v = l.value(r);
                            push_values(v.as_ref(), v.len(), r, width)?;
                        }
                    }
                    _ => {
                        let l = col.as_list::<i64>();
                        for r in 0..rows {
                            let v = l.value(r);
                            push_values(v.as_ref(), v.len(), r, width)?;
                        }
                    }
                }
                if self.schema.width() != *width {
                    let (model, layer) = match &self.schema.kind {
                        StreamKind::Activation { model, layer } => (model.clone(), layer.clone()),
                        _ => (None, None),
                    };
                    self.schema = Arc::new(Schema::activation(*width, model, layer));
                }
                let (seq, positions) = token_index(batch, *seq_id, *pos, where_, first_row, file_row)?;
                let tokens = token.map(|i| {
                    let col = batch.column(i);
                    (0..rows)
                        .map(|r| match col.data_type() {
                            DataType::Utf8 => col.as_string::<i32>().value(r).to_string(),
                            _ => col.as_string::<i64>().value(r).to_string(),
                        })
                        .collect()
                });
                Frame::new(
                    stream.clone(),
                    self.schema.clone(),
                    RowIndex::Tokens {
                        seq_id: seq,
                        pos: positions,
                        token: tokens,
                        time: read_time_column(batch, where_, file_row)?,
                    },
                    data,
                )
                .map_err(|e| e.to_string())
            }
            Layout::Signals {
                sample,
                channels,
                marker,
            } => {
                let samples: Vec<i64> = int_column_u64(batch.column(*sample), "sample", where_, file_row, i64::MAX as u64)?
                    .into_iter()
                    .map(|s| s as i64)
                    .collect();
                let w = channels.len();
                // The columns one after another (channel-major), then transposed to rows.
                let mut by_channel = Vec::with_capacity(rows * w);
                for &ci in channels.iter() {
                    let col = batch.column(ci);
                    if col.null_count() > 0 {
                        let r = (0..rows).find(|&r| col.is_null(r)).unwrap_or(0);
                        return Err(format!(
                            "{where_}, row {}: channel `{}` is null",
                            file_row + r as u64,
                            batch.schema().field(ci).name()
                        ));
                    }
                    extend_f32(col.as_ref(), &mut by_channel);
                }
                let mut data = vec![0f32; rows * w];
                crate::dsp::transpose_into(&by_channel, w, rows, &mut data);
                let mut frame = Frame::new(stream.clone(), self.schema.clone(), RowIndex::Samples(samples), data)
                    .map_err(|e| e.to_string())?;
                if let Some(mi) = marker {
                    let col = batch.column(*mi);
                    if let Some(s) = col.as_string_opt::<i32>() {
                        for r in 0..rows {
                            if s.is_valid(r) {
                                for label in s.value(r).split(';') {
                                    frame.markers.push(Marker {
                                        row: r as u32,
                                        label: label.to_string(),
                                        duration_s: 0.0,
                                    });
                                }
                            }
                        }
                    }
                }
                Ok(frame)
            }
        }
    }
}

/// The `seq_id` and `pos` of a batch's rows: from their columns when present, else the row
/// ordinal (from `first_row`) and position 0.
fn token_index(
    batch: &RecordBatch,
    seq_id: Option<usize>,
    pos: Option<usize>,
    where_: &str,
    first_row: u64,
    file_row: u64,
) -> Result<(Vec<u64>, Vec<u32>), String> {
    let rows = batch.num_rows();
    let seq = match seq_id {
        Some(i) => int_column_u64(batch.column(i), "seq_id", where_, file_row, u64::MAX)?,
        None => (0..rows as u64).map(|r| first_row + r).collect(),
    };
    let positions = match pos {
        Some(i) => int_column_u64(batch.column(i), "pos", where_, file_row, u32::MAX as u64)?
            .into_iter()
            .map(|p| p as u32)
            .collect(),
        None => vec![0u32; rows],
    };
    Ok((seq, positions))
}

fn is_float(t: &DataType) -> bool {
    matches!(t, DataType::Float32 | DataType::Float64 | DataType::Float16)
}

/// Appends the values of a float column ([`is_float`]: f32, f64 or f16) to `out` as f32.
fn extend_f32(values: &dyn Array, out: &mut Vec<f32>) {
    match values.data_type() {
        DataType::Float32 => out.extend_from_slice(values.as_primitive::<Float32Type>().values()),
        DataType::Float16 => out.extend(values.as_primitive::<Float16Type>().values().iter().map(|v| v.to_f32())),
        _ => out.extend(values.as_primitive::<Float64Type>().values().iter().map(|&v| v as f32)),
    }
}

/// An integer column as `u64`, refusing nulls, negative values and values above `max`, each
/// with the file row it is in.
fn int_column_u64(col: &ArrayRef, name: &str, where_: &str, file_row: u64, max: u64) -> Result<Vec<u64>, String> {
    if col.null_count() > 0 {
        let r = (0..col.len()).find(|&r| col.is_null(r)).unwrap_or(0);
        return Err(format!("{where_}, row {}: `{name}` is null", file_row + r as u64));
    }
    let values: Vec<u64> = if let DataType::UInt64 = col.data_type() {
        col.as_primitive::<arrow::datatypes::UInt64Type>().values().to_vec()
    } else {
        let cast = arrow::compute::cast_with_options(
            col,
            &DataType::Int64,
            &arrow::compute::CastOptions {
                safe: false,
                ..Default::default()
            },
        )
        .map_err(|e| format!("{where_}: column `{name}`: {e}"))?;
        let v = cast.as_primitive::<Int64Type>();
        if let Some(r) = v.values().iter().position(|&x| x < 0) {
            return Err(format!(
                "{where_}, row {}: `{name}` is {}, but it must not be negative",
                file_row + r as u64,
                v.value(r)
            ));
        }
        v.values().iter().map(|&x| x as u64).collect()
    };
    if let Some(r) = values.iter().position(|&x| x > max) {
        return Err(format!(
            "{where_}, row {}: `{name}` is {}, above its maximum {max}",
            file_row + r as u64,
            values[r]
        ));
    }
    Ok(values)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signals_round_trip_with_markers() {
        let schema = Arc::new(Schema::signal(&["Fz", "Cz"], "uV", 250.0));
        let mut f = Frame::new(
            "eeg".into(),
            schema.clone(),
            RowIndex::Samples(vec![10, 11, 12]),
            vec![1.0, 2.0, 3.0, 4.0, 5.0, 6.0],
        )
        .unwrap();
        f.markers.push(Marker {
            row: 1,
            label: "left".into(),
            duration_s: 0.0,
        });
        let opts = EncodeOptions {
            markers: true,
            tokens: false,
            time: false,
        };
        let arrow = arrow_schema(&schema, &opts);
        let batch = frame_to_batch(&f, &arrow, &opts).unwrap();
        assert_eq!(batch.column(0).as_primitive::<Float64Type>().values()[2], 12.0 / 250.0);
        let mut dec = Decoder::new(&arrow, ACT_COLUMN, None).unwrap();
        assert_eq!(dec.schema, schema);
        let back = dec.decode(&batch, &"eeg".into(), 10, 0, "test").unwrap();
        assert_eq!(back.data, f.data);
        assert_eq!(back.index, f.index);
        assert_eq!(back.markers[0].label, "left");
        assert_eq!(back.markers[0].row, 1);
    }

    #[test]
    fn activations_round_trip_with_tokens_and_metadata() {
        let schema = Arc::new(Schema::activation(3, Some("m".into()), Some("blocks.2".into())));
        let index = RowIndex::Tokens {
            seq_id: vec![4, 4],
            pos: vec![0, 1],
            token: Some(vec!["The".into(), " cat".into()]),
            time: Some(vec![1_764_000_000_123_456_789, 1_764_000_000_223_456_789]),
        };
        let f = Frame::new("a".into(), schema.clone(), index, vec![1.0, 2.0, 3.0, 4.0, 5.0, 6.0]).unwrap();
        let opts = EncodeOptions {
            markers: false,
            tokens: true,
            time: true,
        };
        let arrow = arrow_schema(&schema, &opts);
        assert_eq!(arrow.metadata()[META_LAYER], "blocks.2");
        let batch = frame_to_batch(&f, &arrow, &opts).unwrap();
        let mut dec = Decoder::new(&arrow, ACT_COLUMN, None).unwrap();
        let back = dec.decode(&batch, &"a".into(), 0, 0, "test").unwrap();
        assert_eq!(back, f);
    }

    #[test]
    fn half_precision_activations_and_channels_decode_to_f32() {
        use arrow::array::{Float16Array, LargeListArray};
        use arrow::buffer::OffsetBuffer;
        let values: Vec<f32> = (0..6).map(|i| i as f32 * 0.25 - 0.5).collect(); // exact in f16
        let half: Float16Array = values.iter().map(|&v| Some(half::f16::from_f32(v))).collect();
        let item = Arc::new(Field::new("element", DataType::Float16, true));
        let act = LargeListArray::new(item.clone(), OffsetBuffer::from_lengths([3, 3]), Arc::new(half.clone()), None);
        let arrow = Arc::new(ArrowSchema::new(vec![Field::new("act", act.data_type().clone(), false)]));
        let batch = RecordBatch::try_new(arrow.clone(), vec![Arc::new(act)]).unwrap();
        let mut dec = Decoder::new(&arrow, ACT_COLUMN, None).unwrap();
        let frame = dec.decode(&batch, &"a".into(), 0, 0, "test").unwrap();
        assert_eq!((frame.rows(), frame.schema.width()), (2, 3));
        assert_eq!(frame.data, values);

        let signal = Arc::new(ArrowSchema::new(vec![
            Field::new("sample", DataType::Int64, false),
            Field::new("Cz", DataType::Float16, false),
            Field::new("Pz", DataType::Float32, false),
        ]));
        let batch = RecordBatch::try_new(
            signal.clone(),
            vec![
                Arc::new(Int64Array::from(vec![0i64, 1, 2, 3, 4, 5])),
                Arc::new(half),
                Arc::new(Float32Array::from(vec![9f32; 6])),
            ],
        )
        .unwrap();
        let mut dec = Decoder::new(&signal, ACT_COLUMN, Some(250.0)).unwrap();
        let frame = dec.decode(&batch, &"s".into(), 0, 0, "test").unwrap();
        let cz: Vec<f32> = frame.data.chunks(2).map(|row| row[0]).collect();
        assert_eq!(cz, values);
        assert!(frame.data.chunks(2).all(|row| row[1] == 9.0));
    }

    #[test]
    fn signals_without_a_rate_need_one() {
        let arrow = ArrowSchema::new(vec![
            Field::new("sample", DataType::Int64, false),
            Field::new("x", DataType::Float32, false),
        ]);
        let err = Decoder::new(&arrow, ACT_COLUMN, None).unwrap_err();
        assert!(err.contains("set `sample_rate`"), "{err}");
        assert_eq!(
            Decoder::new(&arrow, ACT_COLUMN, Some(100.0)).unwrap().schema.sample_rate(),
            Some(100.0)
        );
        // A file that lies about its rate (or a setting that does) is refused, not filtered at NaN.
        for rate in ["0", "-250", "nan", "inf"] {
            let meta: HashMap<String, String> = [(META_SAMPLE_RATE.to_string(), rate.to_string())].into();
            let lying = ArrowSchema::new_with_metadata(arrow.fields().clone(), meta);
            let err = Decoder::new(&lying, ACT_COLUMN, None).unwrap_err();
            assert!(err.contains("is not a positive number"), "{rate}: {err}");
        }
        assert!(Decoder::new(&arrow, ACT_COLUMN, Some(0.0)).is_err());
    }
}
