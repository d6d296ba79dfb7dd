//! Building the Arrow record batches of the statistics tables.

use std::sync::Arc;

use arrow::array::{
    ArrayRef, BooleanArray, FixedSizeListArray, Float32Array, Float64Array, StringArray, TimestampNanosecondArray, UInt32Array,
    UInt64Array,
};
use arrow::datatypes::{DataType, Field, Schema as ArrowSchema, TimeUnit};
use arrow::record_batch::RecordBatch;

/// Which span a row describes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Scope {
    /// The sliding or tumbling window `[window_start, window_end)`.
    Window,
    /// Everything since the start, `[0, window_end)`.
    AllTime,
}

impl Scope {
    /// The `scope` column value.
    pub fn name(self) -> &'static str {
        match self {
            Scope::Window => "window",
            Scope::AllTime => "all_time",
        }
    }
}

/// The columns `window_start_time, window_end_time` (timestamp ns UTC) of windows in event
/// time, each value repeated over `rows` rows.
pub fn time_columns(span: (i64, i64), rows: usize) -> Vec<(Field, ArrayRef)> {
    let ty = DataType::Timestamp(TimeUnit::Nanosecond, Some("UTC".into()));
    [("window_start_time", span.0), ("window_end_time", span.1)]
        .into_iter()
        .map(|(name, v)| {
            let col: ArrayRef = Arc::new(TimestampNanosecondArray::from(vec![v; rows]).with_timezone("UTC"));
            (Field::new(name, ty.clone(), false), col)
        })
        .collect()
}

/// Columns `stream, scope, window_start, window_end` (token ordinals) and, for windows in event
/// time, `window_start_time, window_end_time`, repeated over `n` rows, then the rest.
pub struct TableBuilder {
    fields: Vec<Field>,
    columns: Vec<ArrayRef>,
    rows: usize,
}

impl TableBuilder {
    /// Starts a table of `rows` rows for `stream` over `[start, end)` tokens in `scope`, and the
    /// event-time span `time` (ns since the Unix epoch) for windows in event time.
    pub fn new(stream: &str, scope: Scope, start: u64, end: u64, time: Option<(i64, i64)>, rows: usize) -> TableBuilder {
        let mut b = TableBuilder {
            fields: Vec::new(),
            columns: Vec::new(),
            rows,
        };
        b.push("stream", DataType::Utf8, Arc::new(StringArray::from(vec![stream; rows])));
        b.push("scope", DataType::Utf8, Arc::new(StringArray::from(vec![scope.name(); rows])));
        b.u64("window_start", vec![start; rows]);
        b.u64("window_end", vec![end; rows]);
        for (field, col) in time.map(|t| time_columns(t, rows)).unwrap_or_default() {
            b.fields.push(field);
            b.columns.push(col);
        }
        b
    }

    fn push(&mut self, name: &str, ty: DataType, col: ArrayRef) {
        debug_assert_eq!(col.len(), self.rows, "column {name}");
        // Nullability is fixed per type so every block of a table has the same schema.
        let nullable = ty == DataType::Utf8 && !matches!(name, "stream" | "scope");
        self.fields.push(Field::new(name, ty, nullable));
        self.columns.push(col);
    }

    /// Adds a uint64 column.
    pub fn u64(&mut self, name: &str, v: Vec<u64>) -> &mut Self {
        self.push(name, DataType::UInt64, Arc::new(UInt64Array::from(v)));
        self
    }
    /// Adds a uint32 column.
    pub fn u32(&mut self, name: &str, v: Vec<u32>) -> &mut Self {
        self.push(name, DataType::UInt32, Arc::new(UInt32Array::from(v)));
        self
    }
    /// Adds a float64 column.
    pub fn f64(&mut self, name: &str, v: Vec<f64>) -> &mut Self {
        self.push(name, DataType::Float64, Arc::new(Float64Array::from(v)));
        self
    }
    /// Adds a float32 column.
    pub fn f32(&mut self, name: &str, v: Vec<f32>) -> &mut Self {
        self.push(name, DataType::Float32, Arc::new(Float32Array::from(v)));
        self
    }
    /// Adds a boolean column.
    pub fn bool(&mut self, name: &str, v: Vec<bool>) -> &mut Self {
        self.push(name, DataType::Boolean, Arc::new(BooleanArray::from(v)));
        self
    }
    /// Adds a nullable string column.
    pub fn opt_str(&mut self, name: &str, v: Vec<Option<String>>) -> &mut Self {
        self.push(name, DataType::Utf8, Arc::new(StringArray::from(v)));
        self
    }

    /// Adds a column of fixed-size float32 lists, `width` values per row (`values` row-major).
    pub fn f32_list(&mut self, name: &str, width: usize, values: Vec<f32>) -> &mut Self {
        let item = Arc::new(Field::new("item", DataType::Float32, false));
        let list = FixedSizeListArray::new(item.clone(), width as i32, Arc::new(Float32Array::from(values)), None);
        self.push(name, DataType::FixedSizeList(item, width as i32), Arc::new(list));
        self
    }

    /// The finished record batch.
    pub fn finish(self) -> RecordBatch {
        RecordBatch::try_new(Arc::new(ArrowSchema::new(self.fields)), self.columns).expect("statistics columns agree")
    }
}
