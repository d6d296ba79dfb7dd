//! Reading the engine's result tables (Parquet, as the `parquet` sink writes them) for the
//! commands that report on a finished or running job (`sae dashboard`, `sae geometry`): the
//! newest report of a table, column by column, with errors that name the file and column.
//!
//! A table is either one file, `DIR/NAME.parquet`, or a rolling output, `DIR/NAME/` holding
//! `[partition/]part-*.parquet` files (hidden files being written and `_manifest`/`_SUCCESS`
//! are skipped), read while the job is still running if need be.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context};
use arrow::array::{Array, ArrayRef, AsArray, RecordBatch};
use arrow::datatypes::{Float64Type, UInt64Type};

/// The rows of one table that belong to its newest report: the `all_time` scope when the
/// table has such rows, else the newest `window_end`.
pub struct Report {
    /// The table read (a file, or a rolling output's directory).
    pub path: PathBuf,
    batches: Vec<RecordBatch>,
    /// `(batch, row)` of every row of the newest report.
    rows: Vec<(usize, usize)>,
}

/// The Parquet files of table `name` under `dir`: `dir/name.parquet`, else the complete parts
/// of the rolling output `dir/name/` in path order; empty when there is neither.
pub fn table_files(dir: &Path, name: &str) -> anyhow::Result<Vec<PathBuf>> {
    let file = dir.join(format!("{name}.parquet"));
    if file.is_file() {
        return Ok(vec![file]);
    }
    let root = dir.join(name);
    if root.is_dir() {
        return rolling_parts(&root);
    }
    Ok(Vec::new())
}

/// The complete parts of the rolling output `dir` (any depth of partitions), in path order.
pub fn rolling_parts(dir: &Path) -> anyhow::Result<Vec<PathBuf>> {
    let mut files = Vec::new();
    collect_parts(dir, &mut files)?;
    files.sort();
    Ok(files)
}

fn collect_parts(dir: &Path, files: &mut Vec<PathBuf>) -> anyhow::Result<()> {
    for entry in std::fs::read_dir(dir).with_context(|| format!("{}: cannot list", dir.display()))? {
        let path = entry.with_context(|| format!("{}: cannot list", dir.display()))?.path();
        let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
        // Parts being written are hidden; `_manifest` and `_SUCCESS` are bookkeeping.
        if name.starts_with('.') || name.starts_with('_') {
            continue;
        }
        if path.is_dir() {
            collect_parts(&path, files)?;
        } else if name.ends_with(".parquet") {
            files.push(path);
        }
    }
    Ok(())
}

impl Report {
    /// Reads table `name` under `dir` (see [`table_files`]); `None` when it does not exist.
    pub fn read(dir: &Path, name: &str) -> anyhow::Result<Option<Report>> {
        let files = table_files(dir, name)?;
        if files.is_empty() {
            return Ok(None);
        }
        let path = match files.as_slice() {
            [one] if one.parent() == Some(dir) => one.clone(),
            _ => dir.join(name),
        };
        Report::read_files(path, &files).map(Some)
    }

    /// Reads the newest report from `files`, the parts of the table at `path`.
    pub fn read_files(path: PathBuf, files: &[PathBuf]) -> anyhow::Result<Report> {
        // Only the rows of the best report so far are kept as the files are read (a long
        // run's tables hold every window): all_time first, then the newest window_end.
        let mut report = Report {
            path,
            batches: Vec::new(),
            rows: Vec::new(),
        };
        let mut best: Option<(bool, u64)> = None;
        for file in files {
            let reader =
                neurostream_engine::parquet_read::batches(file).map_err(|m| anyhow::anyhow!("{}: {m}", file.display()))?;
            for batch in reader {
                let batch = batch.map_err(|m| anyhow::anyhow!("{}: reading: {m}", file.display()))?;
                let end = u64s(column(&batch, "window_end", file)?, "window_end", file)?;
                let scope = match batch.column_by_name("scope") {
                    Some(c) => strings(c, "scope", file)?,
                    None => vec![None; batch.num_rows()],
                };
                let keys: Vec<(bool, u64)> = (0..end.len())
                    .map(|r| (scope[r].as_deref() == Some("all_time"), end[r]))
                    .collect();
                let newest = keys.iter().copied().max();
                if newest > best {
                    best = newest;
                    report.batches.clear();
                }
                let keep = arrow::array::BooleanArray::from_iter(keys.iter().map(|k| Some(Some(*k) == best)));
                let kept =
                    arrow::compute::filter_record_batch(&batch, &keep).with_context(|| format!("{}: reading", file.display()))?;
                if kept.num_rows() > 0 {
                    report.batches.push(kept);
                }
            }
        }
        report.rows = (0..report.batches.len())
            .flat_map(|b| (0..report.batches[b].num_rows()).map(move |r| (b, r)))
            .collect();
        Ok(report)
    }

    fn column(&self, b: usize, name: &str) -> anyhow::Result<&ArrayRef> {
        column(&self.batches[b], name, &self.path)
    }

    fn strings(&self, b: usize, name: &str) -> anyhow::Result<Vec<Option<String>>> {
        strings(self.column(b, name)?, name, &self.path)
    }

    fn u64s(&self, b: usize, name: &str) -> anyhow::Result<Vec<u64>> {
        u64s(self.column(b, name)?, name, &self.path)
    }

    fn f64s(&self, b: usize, name: &str) -> anyhow::Result<Vec<f64>> {
        let c = arrow::compute::cast(self.column(b, name)?, &arrow::datatypes::DataType::Float64)
            .with_context(|| format!("{}: column `{name}` is not a number", self.path.display()))?;
        let c = c.as_primitive::<Float64Type>();
        Ok((0..c.len())
            .map(|i| if c.is_valid(i) { c.value(i) } else { f64::NAN })
            .collect())
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

    /// Whether the newest report has no rows (or the table none at all).
    pub fn is_empty(&self) -> bool {
        self.rows.is_empty()
    }
}

fn column<'a>(batch: &'a RecordBatch, name: &str, path: &Path) -> anyhow::Result<&'a ArrayRef> {
    batch
        .column_by_name(name)
        .with_context(|| format!("{}: no column `{name}`", path.display()))
}

fn strings(c: &ArrayRef, name: &str, path: &Path) -> anyhow::Result<Vec<Option<String>>> {
    let c = arrow::compute::cast(c, &arrow::datatypes::DataType::Utf8)
        .with_context(|| format!("{}: column `{name}` is not text", path.display()))?;
    let c = c.as_string::<i32>();
    Ok((0..c.len()).map(|i| c.is_valid(i).then(|| c.value(i).to_string())).collect())
}

fn u64s(c: &ArrayRef, name: &str, path: &Path) -> anyhow::Result<Vec<u64>> {
    let c = arrow::compute::cast(c, &arrow::datatypes::DataType::UInt64)
        .with_context(|| format!("{}: column `{name}` is not an unsigned integer", path.display()))?;
    if c.null_count() > 0 {
        bail!("{}: column `{name}` has missing values", path.display());
    }
    Ok(c.as_primitive::<UInt64Type>().values().to_vec())
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use arrow::array::{StringArray, UInt64Array};
    use arrow::datatypes::{DataType, Field, Schema};

    use super::*;

    fn write(path: &Path, ends: &[u64], scopes: Option<&[&str]>, values: &[u64]) {
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        let mut fields = vec![Field::new("window_end", DataType::UInt64, false)];
        let mut columns: Vec<ArrayRef> = vec![Arc::new(UInt64Array::from(ends.to_vec()))];
        if let Some(s) = scopes {
            fields.push(Field::new("scope", DataType::Utf8, false));
            columns.push(Arc::new(StringArray::from(s.to_vec())));
        }
        fields.push(Field::new("feature", DataType::UInt64, false));
        columns.push(Arc::new(UInt64Array::from(values.to_vec())));
        let batch = RecordBatch::try_new(Arc::new(Schema::new(fields)), columns).unwrap();
        let mut w = parquet::arrow::ArrowWriter::try_new(std::fs::File::create(path).unwrap(), batch.schema(), None).unwrap();
        w.write(&batch).unwrap();
        w.close().unwrap();
    }

    #[test]
    fn the_newest_report_is_read_across_the_parts_of_a_rolling_output() {
        let dir = tempfile::tempdir().unwrap();
        let t = dir.path().join("features");
        // The newest window (200) is split over two parts of two partitions; an older window,
        // a part still being written (hidden) and the bookkeeping files are not read.
        write(
            &t.join("date=2026-12-03/part-00000-000000.parquet"),
            &[100, 100],
            None,
            &[1, 2],
        );
        write(&t.join("date=2026-12-03/part-00000-000001.parquet"), &[200], None, &[3]);
        write(
            &t.join("date=2026-12-04/part-00000-000000.parquet"),
            &[200, 200],
            None,
            &[4, 5],
        );
        write(&t.join("date=2026-12-04/.part-00000-000001.parquet.tmp"), &[300], None, &[9]);
        std::fs::create_dir_all(t.join("_manifest")).unwrap();
        std::fs::write(t.join("date=2026-12-03/_SUCCESS"), "").unwrap();
        let r = Report::read(dir.path(), "features").unwrap().unwrap();
        assert_eq!(r.path, t);
        assert_eq!(r.u64_column("feature").unwrap(), vec![3, 4, 5]);
        assert_eq!(table_files(dir.path(), "features").unwrap().len(), 3);
        assert!(Report::read(dir.path(), "absent").unwrap().is_none());
    }

    #[test]
    fn all_time_rows_win_over_newer_windows_in_a_single_file() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("features.parquet");
        write(
            &f,
            &[100, 300, 200, 200],
            Some(&["window", "window", "all_time", "all_time"]),
            &[1, 2, 3, 4],
        );
        let r = Report::read(dir.path(), "features").unwrap().unwrap();
        assert_eq!((r.path.clone(), r.len()), (f.clone(), 2));
        assert_eq!(r.u64_column("feature").unwrap(), vec![3, 4]);
        let e = r.u64_column("nope").unwrap_err().to_string();
        assert!(e.contains("features.parquet: no column `nope`"), "{e}");
        std::fs::write(dir.path().join("broken.parquet"), b"PAR1 not really").unwrap();
        let e = format!("{:#}", Report::read(dir.path(), "broken").err().unwrap());
        assert!(e.contains("broken.parquet: not a readable Parquet file"), "{e}");
    }
}
