//! Reading the engine's statistics tables (Parquet, as the `parquet` sink writes them) for the
//! dashboard: the newest all-time report of each table, column by column, with errors that name
//! the file and column.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context};
use arrow::array::{Array, ArrayRef, AsArray, RecordBatch};
use arrow::datatypes::{Float64Type, UInt64Type};

/// The rows of one table file that belong to its newest report: the `all_time` scope when the
/// table has it, else the newest window.
pub struct Report {
    /// The file read.
    pub path: PathBuf,
    batches: Vec<RecordBatch>,
    /// `(batch, row)` of every row of the newest report.
    rows: Vec<(usize, usize)>,
}

impl Report {
    /// Reads `dir/NAME.parquet`; `None` when the file does not exist.
    pub fn read(dir: &Path, name: &str) -> anyhow::Result<Option<Report>> {
        let path = dir.join(format!("{name}.parquet"));
        if !path.exists() {
            return Ok(None);
        }
        let file = std::fs::File::open(&path).with_context(|| format!("{}: cannot open", path.display()))?;
        let reader = parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder::try_new(file)
            .and_then(|b| b.build())
            .with_context(|| format!("{}: not a readable Parquet file", path.display()))?;
        // Only the rows of the best report so far are kept as the file is read (a long run's
        // tables hold every window): all_time first, then the newest window_end.
        let mut report = Report {
            path,
            batches: Vec::new(),
            rows: Vec::new(),
        };
        let mut best: Option<(bool, u64)> = None;
        for batch in reader {
            let batch = batch.with_context(|| format!("{}: reading", report.path.display()))?;
            report.batches.push(batch);
            let b = report.batches.len() - 1;
            let scope = report.strings(b, "scope")?;
            let end = report.u64s(b, "window_end")?;
            let keys: Vec<(bool, u64)> = (0..end.len())
                .map(|r| (scope[r].as_deref() == Some("all_time"), end[r]))
                .collect();
            let newest = keys.iter().copied().max();
            if newest > best {
                best = newest;
                let last = report.batches.pop().expect("just pushed");
                report.batches = vec![last];
            }
            let keep = arrow::array::BooleanArray::from_iter(keys.iter().map(|k| Some(Some(*k) == best)));
            let b = report.batches.len() - 1;
            report.batches[b] = arrow::compute::filter_record_batch(&report.batches[b], &keep)
                .with_context(|| format!("{}: reading", report.path.display()))?;
        }
        report.rows = (0..report.batches.len())
            .flat_map(|b| (0..report.batches[b].num_rows()).map(move |r| (b, r)))
            .collect();
        Ok(Some(report))
    }

    fn column(&self, b: usize, name: &str) -> anyhow::Result<&ArrayRef> {
        self.batches[b]
            .column_by_name(name)
            .with_context(|| format!("{}: no column `{name}`", self.path.display()))
    }

    fn strings(&self, b: usize, name: &str) -> anyhow::Result<Vec<Option<String>>> {
        let c = self.column(b, name)?;
        let c = arrow::compute::cast(c, &arrow::datatypes::DataType::Utf8)
            .with_context(|| format!("{}: column `{name}` is not text", self.path.display()))?;
        let c = c.as_string::<i32>();
        Ok((0..c.len()).map(|i| c.is_valid(i).then(|| c.value(i).to_string())).collect())
    }

    fn u64s(&self, b: usize, name: &str) -> anyhow::Result<Vec<u64>> {
        let c = self.column(b, name)?;
        let c = arrow::compute::cast(c, &arrow::datatypes::DataType::UInt64)
            .with_context(|| format!("{}: column `{name}` is not an unsigned integer", self.path.display()))?;
        Ok(c.as_primitive::<UInt64Type>().values().to_vec())
    }

    fn f64s(&self, b: usize, name: &str) -> anyhow::Result<Vec<f64>> {
        let c = self.column(b, name)?;
        let c = arrow::compute::cast(c, &arrow::datatypes::DataType::Float64)
            .with_context(|| format!("{}: column `{name}` is not a number", self.path.display()))?;
        Ok(c.as_primitive::<Float64Type>().values().to_vec())
    }

    /// Column `name` of the newest report's rows, as unsigned integers.
    pub fn u64_column(&self, name: &str) -> anyhow::Result<Vec<u64>> {
        self.gather(name, Self::u64s)
    }

    /// Column `name` of the newest report's rows, as numbers.
    pub fn f64_column(&self, name: &str) -> anyhow::Result<Vec<f64>> {
        self.gather(name, Self::f64s)
    }

    /// Column `name` of the newest report's rows, as text (null: `None`).
    pub fn str_column(&self, name: &str) -> anyhow::Result<Vec<Option<String>>> {
        self.gather(name, Self::strings)
    }

    /// Column `name` of the newest report's rows, as booleans.
    pub fn bool_column(&self, name: &str) -> anyhow::Result<Vec<bool>> {
        let mut cols = Vec::new();
        for b in 0..self.batches.len() {
            let c = self.column(b, name)?;
            let Some(c) = c.as_boolean_opt() else {
                bail!("{}: column `{name}` is not boolean", self.path.display());
            };
            cols.push(c.clone());
        }
        Ok(self.rows.iter().map(|&(b, r)| cols[b].value(r)).collect())
    }

    fn gather<T: Clone>(&self, name: &str, read: fn(&Self, usize, &str) -> anyhow::Result<Vec<T>>) -> anyhow::Result<Vec<T>> {
        let cols = (0..self.batches.len())
            .map(|b| read(self, b, name))
            .collect::<anyhow::Result<Vec<_>>>()?;
        Ok(self.rows.iter().map(|&(b, r)| cols[b][r].clone()).collect())
    }

    /// Rows in the newest report.
    pub fn len(&self) -> usize {
        self.rows.len()
    }
}
