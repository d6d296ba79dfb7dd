//! Reading Parquet files that come from outside (recordings, references, statistics tables).
//!
//! arrow-rs's Parquet reader trusts the footer's row counts (it sums them unchecked) and panics
//! on some corrupt pages instead of returning an error (both found by fuzzing the `parquet`
//! source). [`open`] checks the row counts and [`next_checked`] turns a decoder panic into an
//! error, so a corrupt file is an error the caller names with the file, never a crash, nor (on
//! a read-ahead thread) a read that silently ends early.

use std::fs::File;
use std::path::Path;

use arrow::record_batch::RecordBatch;
use parquet::arrow::arrow_reader::{ArrowReaderOptions, ParquetRecordBatchReader, ParquetRecordBatchReaderBuilder};

/// Opens `path` with `options` and refuses a footer whose row counts are negative or overflow.
/// Errors do not name the file (callers add it).
pub fn open(path: &Path, options: ArrowReaderOptions) -> Result<ParquetRecordBatchReaderBuilder<File>, String> {
    let file = File::open(path).map_err(|e| format!("cannot open: {e}"))?;
    let builder = ParquetRecordBatchReaderBuilder::try_new_with_options(file, options)
        .map_err(|e| format!("not a readable Parquet file: {e}"))?;
    let mut total = 0i64;
    for (gi, rg) in builder.metadata().row_groups().iter().enumerate() {
        total = Some(rg.num_rows())
            .filter(|&n| n >= 0)
            .and_then(|n| total.checked_add(n))
            .ok_or_else(|| format!("row group {gi}: the footer claims {} rows (corrupt footer)", rg.num_rows()))?;
    }
    Ok(builder)
}

/// The next batch of `reader`; a panic of the decoder becomes an error (`corrupt data: ...`).
pub fn next_checked(reader: &mut ParquetRecordBatchReader) -> Option<Result<RecordBatch, String>> {
    match std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| reader.next())) {
        Ok(item) => item.map(|batch| batch.map_err(|e| e.to_string())),
        Err(panic) => Some(Err(format!(
            "corrupt data: the Parquet decoder failed ({})",
            crate::error::panic_message(&*panic)
        ))),
    }
}

/// A reader's batches, each through [`next_checked`].
pub struct Batches(pub ParquetRecordBatchReader);

impl Iterator for Batches {
    type Item = Result<RecordBatch, String>;

    fn next(&mut self) -> Option<Self::Item> {
        next_checked(&mut self.0)
    }
}

/// Every batch of the file at `path` (all columns), opened with [`open`]; errors do not name
/// the file.
pub fn batches(path: &Path) -> Result<Batches, String> {
    let reader = open(path, ArrowReaderOptions::new())?
        .build()
        .map_err(|e| format!("not a readable Parquet file: {e}"))?;
    Ok(Batches(reader))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_batches_and_names_what_is_wrong() {
        use arrow::array::Float32Array;
        use arrow::datatypes::{DataType, Field, Schema};
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("x.parquet");
        let schema = std::sync::Arc::new(Schema::new(vec![Field::new("x", DataType::Float32, false)]));
        let batch = RecordBatch::try_new(
            schema.clone(),
            vec![std::sync::Arc::new(Float32Array::from(vec![1.5f32; 10]))],
        )
        .unwrap();
        let mut w = parquet::arrow::ArrowWriter::try_new(File::create(&path).unwrap(), schema, None).unwrap();
        w.write(&batch).unwrap();
        w.close().unwrap();
        let rows: usize = batches(&path).unwrap().map(|b| b.unwrap().num_rows()).sum();
        assert_eq!(rows, 10);
        let missing = batches(&dir.path().join("none.parquet")).err().unwrap();
        assert!(missing.starts_with("cannot open"), "{missing}");
        std::fs::write(&path, b"PAR1 not really").unwrap();
        let bad = batches(&path).err().unwrap();
        assert!(bad.starts_with("not a readable Parquet file"), "{bad}");
    }
}
