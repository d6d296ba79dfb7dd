//! Parquet footers for the row groups of a file that is still open: what lets a checkpointed
//! output grow as one file across checkpoints instead of a file per checkpoint merged at the end.
//!
//! At a checkpoint the open file's row groups so far are flushed and the footer of the ones
//! added since the previous checkpoint is written to a file of its own. A resumed run takes the
//! open file's bytes the checkpoint covered and appends one footer of all those row
//! groups: the file's offsets are unchanged, so that is a complete Parquet file again (written
//! beside it: the open file may also be the finished output's data).

use std::fs::File;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use arrow::datatypes::Schema as ArrowSchema;
use parquet::arrow::{add_encoded_arrow_schema_to_metadata, ArrowSchemaConverter};
use parquet::file::metadata::{FileMetaData, ParquetMetaData, ParquetMetaDataReader, ParquetMetaDataWriter, RowGroupMetaData};
use parquet::file::properties::WriterProperties;

/// Writes to `out` the footer (metadata, its length, `PAR1`) of a file of `arrow`'s schema
/// written with `props` that holds `groups`, with the key-value metadata an `ArrowWriter` writes
/// (the Arrow schema among it), so Arrow readers see the same schema.
pub(super) fn write_footer(
    out: impl Write,
    arrow: &ArrowSchema,
    props: &WriterProperties,
    groups: Vec<RowGroupMetaData>,
) -> std::result::Result<(), String> {
    let descr = ArrowSchemaConverter::new()
        .with_coerce_types(props.coerce_types())
        .convert(arrow)
        .map_err(|e| e.to_string())?;
    let mut with_schema = props.clone();
    add_encoded_arrow_schema_to_metadata(arrow, &mut with_schema);
    let file = FileMetaData::new(
        props.writer_version().as_num(),
        0,
        Some(props.created_by().to_string()),
        with_schema.key_value_metadata().cloned(),
        Arc::new(descr),
        None,
    );
    write_metadata(out, file, groups)
}

fn write_metadata(out: impl Write, file: FileMetaData, groups: Vec<RowGroupMetaData>) -> std::result::Result<(), String> {
    let rows = groups.iter().map(|g| g.num_rows()).sum();
    let file = FileMetaData::new(
        file.version(),
        rows,
        file.created_by().map(str::to_string),
        file.key_value_metadata().cloned(),
        file.schema_descr_ptr(),
        file.column_orders().cloned(),
    );
    ParquetMetaDataWriter::new(out, &ParquetMetaData::new(file, groups))
        .finish()
        .map_err(|e| e.to_string())
}

fn read_footer(path: &Path) -> std::result::Result<ParquetMetaData, String> {
    let file = File::open(path).map_err(|e| format!("{}: {e}", path.display()))?;
    ParquetMetaDataReader::new()
        .parse_and_finish(&file)
        .map_err(|e| format!("{}: {e}", path.display()))
}

/// Writes to `out` a complete Parquet file of the first `bytes` bytes of the open file `open`,
/// whose row groups are those of the `footers` files ([`write_footer`]) in order: those bytes,
/// then one footer of them all; fsynced. `open` is only read: the finished output may share its
/// data (a hard link).
pub(super) fn seal_prefix(open: &Path, bytes: u64, footers: &[PathBuf], out: &Path) -> std::result::Result<(), String> {
    let mut file_metadata = None;
    let mut groups = Vec::new();
    for f in footers {
        let footer = read_footer(f)?;
        groups.extend(footer.row_groups().iter().cloned());
        file_metadata.get_or_insert_with(|| footer.file_metadata().clone());
    }
    let file_metadata = file_metadata.ok_or("no footer to seal the file with")?;
    let source = File::open(open).map_err(|e| format!("{}: {e}", open.display()))?;
    let len = source.metadata().map_err(|e| e.to_string())?.len();
    if len < bytes {
        return Err(format!(
            "{} holds {len} bytes, fewer than the {bytes} the checkpoint committed",
            open.display()
        ));
    }
    let mut sealed = File::create(out).map_err(|e| format!("cannot create {}: {e}", out.display()))?;
    // File to file: the kernel copies (or shares the blocks, where the file system can).
    std::io::copy(&mut source.take(bytes), &mut sealed).map_err(|e| format!("copy: {e}"))?;
    let mut tail = std::io::BufWriter::new(&mut sealed);
    write_metadata(&mut tail, file_metadata, groups)?;
    tail.flush().map_err(|e| e.to_string())?;
    drop(tail);
    sealed.sync_all().map_err(|e| format!("fsync: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::array::{Float32Array, StringArray, UInt64Array};
    use arrow::datatypes::{DataType, Field};
    use arrow::record_batch::RecordBatch;
    use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
    use parquet::arrow::ArrowWriter;

    fn batch(start: u64, rows: usize) -> RecordBatch {
        let schema = Arc::new(ArrowSchema::new(vec![
            Field::new("seq", DataType::UInt64, false),
            Field::new("x", DataType::Float32, false),
            Field::new("token", DataType::Utf8, true),
        ]));
        RecordBatch::try_new(
            schema,
            vec![
                Arc::new(UInt64Array::from_iter_values(start..start + rows as u64)),
                Arc::new(Float32Array::from_iter_values((0..rows).map(|i| i as f32 * 0.25))),
                Arc::new(StringArray::from_iter(
                    (0..rows).map(|i| (i % 3 != 0).then(|| format!("t{i}"))),
                )),
            ],
        )
        .unwrap()
    }

    fn read(path: &Path) -> Vec<RecordBatch> {
        ParquetRecordBatchReaderBuilder::try_new(File::open(path).unwrap())
            .unwrap()
            .build()
            .unwrap()
            .map(|b| b.unwrap())
            .collect()
    }

    #[test]
    fn a_sealed_prefix_reads_back_the_rows_of_its_row_groups_and_nothing_after() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("open.parquet");
        let props = WriterProperties::builder()
            .set_compression(parquet::basic::Compression::ZSTD(Default::default()))
            .build();
        let first = batch(0, 1000);
        let mut w = ArrowWriter::try_new(File::create(&path).unwrap(), first.schema(), Some(props.clone())).unwrap();
        // Two checkpoints: a footer per checkpoint holds the row groups added since the last.
        let mut footers = Vec::new();
        let mut reported = 0;
        for b in [batch(0, 1000), batch(1000, 700)] {
            w.write(&b).unwrap();
            w.flush().unwrap();
            w.sync().unwrap();
            let footer = dir.path().join(format!("footer-{}", footers.len()));
            let groups = w.flushed_row_groups()[reported..].to_vec();
            reported = w.flushed_row_groups().len();
            write_footer(File::create(&footer).unwrap(), &first.schema(), &props, groups).unwrap();
            footers.push(footer);
        }
        let committed = w.bytes_written() as u64;
        // Rows after the last checkpoint reach the file, then the process dies.
        w.write(&batch(1700, 5000)).unwrap();
        w.flush().unwrap();
        w.sync().unwrap();
        drop(w);
        assert!(std::fs::metadata(&path).unwrap().len() > committed);

        let sealed = dir.path().join("sealed.parquet");
        seal_prefix(&path, committed, &footers, &sealed).unwrap();
        let back = read(&sealed);
        assert_eq!(back[0].schema(), first.schema(), "the Arrow schema is in the footer");
        let rows = arrow::compute::concat_batches(&first.schema(), &back).unwrap();
        assert_eq!(
            rows,
            arrow::compute::concat_batches(&first.schema(), &[batch(0, 1000), batch(1000, 700)]).unwrap()
        );

        // Sealing again (a resume that died before it finished) gives the same file.
        let again = dir.path().join("again.parquet");
        seal_prefix(&path, committed, &footers, &again).unwrap();
        assert_eq!(std::fs::read(&again).unwrap(), std::fs::read(&sealed).unwrap());

        let err = seal_prefix(&path, 1 << 30, &footers, &again).unwrap_err();
        assert!(err.contains("fewer than"), "{err}");
    }
}
