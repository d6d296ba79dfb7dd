//! `neurostream inspect`: what is in a Parquet file.

use std::path::Path;

use neurostream_engine::parquet_read;

/// Prints the schema, row count, row groups, key-value metadata and the first `rows` rows.
pub fn inspect(path: &Path, rows: usize) -> anyhow::Result<()> {
    let builder = parquet_read::open(path, Default::default()).map_err(|m| anyhow::anyhow!("{}: {m}", path.display()))?;
    let meta = builder.metadata().clone();
    let fmeta = meta.file_metadata();
    println!("file:       {}", path.display());
    println!("rows:       {}", fmeta.num_rows());
    println!("row groups: {}", meta.num_row_groups());
    if let Some(by) = fmeta.created_by() {
        println!("created by: {by}");
    }
    println!("schema:");
    for f in builder.schema().fields() {
        println!(
            "  {}: {}{}",
            f.name(),
            f.data_type(),
            if f.is_nullable() { " (nullable)" } else { "" }
        );
    }
    let mut kv: Vec<(String, String)> = builder
        .schema()
        .metadata()
        .iter()
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    if let Some(extra) = fmeta.key_value_metadata() {
        for e in extra {
            if e.key != "ARROW:schema" {
                kv.push((e.key.clone(), e.value.clone().unwrap_or_default()));
            }
        }
    }
    kv.sort();
    kv.dedup();
    if !kv.is_empty() {
        println!("metadata:");
        for (k, v) in kv {
            println!("  {k} = {v}");
        }
    }
    if rows > 0 {
        let mut reader = builder.with_batch_size(rows).with_limit(rows).build()?;
        if let Some(batch) = parquet_read::next_checked(&mut reader) {
            let batch = batch.map_err(|m| anyhow::anyhow!("{}: row group 0: {m}", path.display()))?;
            println!("first {} rows:", batch.num_rows());
            println!("{}", arrow::util::pretty::pretty_format_batches(&[batch])?);
        }
    }
    Ok(())
}
