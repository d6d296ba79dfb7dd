//! Result tables (statistics, histograms, alerts) carried through the dataflow as Arrow record batches.
//!
//! Stateful analysis operators emit rows whose columns differ from table to table (a per-feature
//! table, a histogram, an alert log), so they travel as [`TableFrame`]s: a named Arrow
//! [`RecordBatch`] tagged with the stream it describes. Sinks write each table on its own
//! (`<dir>/<table>.parquet`). Between processes a table is serialized as an Arrow IPC stream.

use std::sync::Arc;

use arrow::record_batch::RecordBatch;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::schema::Schema;

/// One block of rows of a named result table.
#[derive(Clone, Debug, PartialEq)]
pub struct TableFrame {
    /// The stream the rows describe (e.g. the features stream the statistics were computed on).
    pub stream: Arc<str>,
    /// The schema of the producing operator's output (kind [`StreamKind::Tables`](crate::StreamKind::Tables)).
    pub schema: Arc<Schema>,
    /// The table the rows belong to (`features`, `alerts`, ...).
    pub table: Arc<str>,
    /// The rows; every block of one table has the same Arrow schema.
    pub data: RecordBatch,
}

impl TableFrame {
    /// Number of rows.
    pub fn rows(&self) -> usize {
        self.data.num_rows()
    }
}

#[derive(Serialize, Deserialize)]
struct TableWire {
    stream: Arc<str>,
    schema: Arc<Schema>,
    table: Arc<str>,
    ipc: Vec<u8>,
}

fn to_ipc(batch: &RecordBatch) -> Result<Vec<u8>, arrow::error::ArrowError> {
    let mut buf = Vec::new();
    let mut w = arrow::ipc::writer::StreamWriter::try_new(&mut buf, &batch.schema())?;
    w.write(batch)?;
    w.finish()?;
    drop(w);
    Ok(buf)
}

fn from_ipc(bytes: &[u8]) -> Result<RecordBatch, String> {
    let mut r = arrow::ipc::reader::StreamReader::try_new(std::io::Cursor::new(bytes), None).map_err(|e| e.to_string())?;
    match r.next() {
        Some(b) => b.map_err(|e| e.to_string()),
        None => Err("empty Arrow IPC stream".into()),
    }
}

impl Serialize for TableFrame {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let ipc = to_ipc(&self.data).map_err(serde::ser::Error::custom)?;
        TableWire {
            stream: self.stream.clone(),
            schema: self.schema.clone(),
            table: self.table.clone(),
            ipc,
        }
        .serialize(s)
    }
}

impl<'de> Deserialize<'de> for TableFrame {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let w = TableWire::deserialize(d)?;
        let data = from_ipc(&w.ipc).map_err(serde::de::Error::custom)?;
        Ok(TableFrame {
            stream: w.stream,
            schema: w.schema,
            table: w.table,
            data,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::array::{Float64Array, UInt32Array};
    use arrow::datatypes::{DataType, Field, Schema as ArrowSchema};

    #[test]
    fn round_trips_through_serde() {
        let schema = Arc::new(ArrowSchema::new(vec![
            Field::new("feature", DataType::UInt32, false),
            Field::new("density", DataType::Float64, false),
        ]));
        let data = RecordBatch::try_new(
            schema,
            vec![
                Arc::new(UInt32Array::from(vec![1, 7])),
                Arc::new(Float64Array::from(vec![0.25, 1e-3])),
            ],
        )
        .unwrap();
        let t = TableFrame {
            stream: "feats".into(),
            schema: Arc::new(Schema::tables(vec!["features".into()], Some("test".into()))),
            table: "features".into(),
            data,
        };
        let json = serde_json::to_string(&t).unwrap();
        let back: TableFrame = serde_json::from_str(&json).unwrap();
        assert_eq!(back, t);
    }
}
