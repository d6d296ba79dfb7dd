//! Arrow data in: any object with `__arrow_c_stream__` (pyarrow Table or RecordBatchReader,
//! polars DataFrame, DuckDB relation) read through the Arrow C stream interface into a `push`
//! source, in the engine's layouts.

use std::sync::{Arc, Mutex};

use arrow::array::ffi_stream::RecordBatchStreamReader;
use arrow::array::{Array, AsArray, FixedSizeListArray};
use arrow::buffer::ScalarBuffer;
use arrow::datatypes::{DataType, Float32Type, UInt32Type, UInt64Type};
use arrow::record_batch::{RecordBatch, RecordBatchReader};
use arrow_pyarrow::FromPyArrow;
use neurostream::layout::Decoder;
use neurostream::{Batch, RowIndex, StreamKind};
use neurostream_sources::push_source::{PushChunk, PushIndex, RowData};
use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;

use crate::push::PushProducer;

/// Arrow float32 values, shared with whoever produced them (read in place).
struct ArrowValues(ScalarBuffer<f32>);

impl RowData for ArrowValues {
    fn values(&self) -> &[f32] {
        &self.0
    }
}

/// An Arrow stream, its layout recognized, waiting to be pumped into a push source.
#[pyclass(module = "neurostream._native")]
pub struct ArrowInput {
    reader: Mutex<Option<RecordBatchStreamReader>>,
    decoder: Decoder,
    what: String,
}

#[pymethods]
impl ArrowInput {
    /// Opens the C stream of `obj` and recognizes its layout: activations (an `act` list
    /// column, with `seq_id`/`pos`) or signals (a `sample` column and one float column per
    /// channel; `sample_rate` in Hz when the schema does not carry it).
    #[new]
    #[pyo3(signature = (obj, sample_rate=None))]
    fn new(obj: &Bound<'_, PyAny>, sample_rate: Option<f64>) -> PyResult<ArrowInput> {
        let what = format!(
            "from_arrow({})",
            obj.get_type().name().map(|n| n.to_string()).unwrap_or_default()
        );
        let reader = RecordBatchStreamReader::from_pyarrow_bound(obj).map_err(|e| {
            PyValueError::new_err(format!(
                "{what}: not an Arrow stream (expected an object with __arrow_c_stream__: pyarrow Table or RecordBatchReader, polars DataFrame, DuckDB relation): {e}"
            ))
        })?;
        let decoder =
            Decoder::new(&reader.schema(), "act", sample_rate).map_err(|m| PyValueError::new_err(format!("{what}: {m}")))?;
        if decoder.schema.is_sparse() {
            return Err(PyValueError::new_err(format!(
                "{what}: features tables cannot feed a push source; write them to Parquet and read them with a parquet source"
            )));
        }
        Ok(ArrowInput {
            reader: Mutex::new(Some(reader)),
            decoder,
            what,
        })
    }

    /// `signal` or `activations`.
    #[getter]
    fn layout(&self) -> &'static str {
        if self.decoder.schema.is_signal() {
            "signal"
        } else {
            "activations"
        }
    }

    /// Row width: channels or d_model (0 when a variable-length `act` column has not shown a
    /// row yet).
    #[getter]
    fn width(&self) -> usize {
        self.decoder.width()
    }

    /// Signal channel names.
    #[getter]
    fn channels(&self) -> Vec<String> {
        if self.decoder.schema.is_signal() {
            self.decoder.schema.channel_names().iter().map(|s| s.to_string()).collect()
        } else {
            Vec::new()
        }
    }

    /// Unit of the first channel (signals).
    #[getter]
    fn unit(&self) -> Option<String> {
        self.decoder.schema.channels.first().map(|c| c.unit.clone())
    }

    /// Sampling rate in Hz (signals).
    #[getter]
    fn sample_rate(&self) -> Option<f64> {
        self.decoder.schema.sample_rate()
    }

    /// Model and layer names carried by activation schemas.
    #[getter]
    fn model_layer(&self) -> (Option<String>, Option<String>) {
        match &self.decoder.schema.kind {
            StreamKind::Activation { model, layer } => (model.clone(), layer.clone()),
            _ => (None, None),
        }
    }

    /// Starts a thread that reads every batch and pushes it into `producer`, then closes it.
    /// Activations whose `act` column is a fixed-size list of float32 are pushed in place (no
    /// copy); other layouts are decoded into rows first (one copy). An unreadable batch ends
    /// the stream with the error logged and raised by the run as a bad chunk.
    fn pump(&self, producer: &PushProducer) -> PyResult<()> {
        let reader = self
            .reader
            .lock()
            .unwrap()
            .take()
            .ok_or_else(|| PyValueError::new_err(format!("{}: this stream was already read", self.what)))?;
        let mut decoder = self.decoder.clone();
        let what = self.what.clone();
        let producer = producer.inner();
        std::thread::Builder::new()
            .name("neurostream-arrow-in".into())
            .spawn(move || {
                let mut producer = producer;
                let stream: Arc<str> = Arc::from("arrow");
                let mut row = 0u64;
                for (i, batch) in reader.enumerate() {
                    let chunk = batch
                        .map_err(|e| format!("{what}: batch {i}: {e}"))
                        .and_then(|b| chunk_of(&b, &mut decoder, &stream, row, &format!("{what}, batch {i}")));
                    match chunk {
                        Ok(c) => {
                            row += c.rows as u64;
                            if producer.push(c, None).is_err() {
                                break; // the run ended
                            }
                        }
                        Err(message) => {
                            let bad = PushChunk {
                                data: Arc::new(Vec::<f32>::new()),
                                rows: 0,
                                index: PushIndex::Failed(message),
                                markers: Vec::new(),
                            };
                            let _ = producer.push(bad, None);
                            break;
                        }
                    }
                }
                producer.close();
            })
            .map_err(|e| PyValueError::new_err(format!("cannot start the reader thread: {e}")))?;
        Ok(())
    }
}

/// One record batch as a push chunk: in place for fixed-size float32 activations, decoded
/// otherwise.
fn chunk_of(
    batch: &RecordBatch,
    decoder: &mut Decoder,
    stream: &Arc<str>,
    first_row: u64,
    what: &str,
) -> Result<PushChunk, String> {
    if let Some(chunk) = in_place(batch) {
        return Ok(chunk);
    }
    match decoder.decode_batch(batch, stream, first_row, first_row, what)? {
        Batch::Dense(frame) => {
            let rows = frame.rows();
            let index = match frame.index {
                RowIndex::Samples(_) => PushIndex::Continue,
                RowIndex::Tokens { seq_id, pos, token, .. } => PushIndex::Tokens { seq_id, pos, token },
            };
            Ok(PushChunk {
                data: Arc::new(frame.data),
                rows,
                index,
                markers: frame.markers,
            })
        }
        _ => Err(format!("{what}: not a dense layout")),
    }
}

/// Activations with `act: fixed_size_list<float32>`, `seq_id: uint64`, `pos: uint32` and no
/// nulls: the chunk reads the `act` values buffer itself.
fn in_place(batch: &RecordBatch) -> Option<PushChunk> {
    let schema = batch.schema();
    let act = batch.column(schema.index_of("act").ok()?);
    let DataType::FixedSizeList(item, width) = act.data_type() else {
        return None;
    };
    if item.data_type() != &DataType::Float32 || act.null_count() > 0 {
        return None;
    }
    let list: &FixedSizeListArray = act.as_fixed_size_list();
    let values = list.values().as_primitive_opt::<Float32Type>()?;
    if values.null_count() > 0 {
        return None;
    }
    let seq = batch
        .column(schema.index_of("seq_id").ok()?)
        .as_primitive_opt::<UInt64Type>()?;
    let pos = batch.column(schema.index_of("pos").ok()?).as_primitive_opt::<UInt32Type>()?;
    if seq.null_count() > 0 || pos.null_count() > 0 {
        return None;
    }
    let token = match schema.index_of("token") {
        Ok(i) => {
            let t = batch.column(i).as_string_opt::<i32>()?;
            Some((0..t.len()).map(|r| t.value(r).to_string()).collect())
        }
        Err(_) => None,
    };
    let rows = list.len();
    let width = *width as usize;
    let start = list.offset() * width;
    let data = values.values().slice(start, rows * width);
    Some(PushChunk {
        data: Arc::new(ArrowValues(data)),
        rows,
        index: PushIndex::Tokens {
            seq_id: seq.values().to_vec(),
            pos: pos.values().to_vec(),
            token,
        },
        markers: Vec::new(),
    })
}
