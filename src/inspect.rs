//! `neurostream inspect`: what is in a Parquet file or a recording.

use std::path::Path;

use neurostream_engine::spec::{Built, PipelineSpec};
use neurostream_engine::{parquet_read, Batch, RowIndex, StreamKind, WorkerPos};

/// Prints what `path` holds: a recording's channels, rate, length and markers (the first
/// `rows` of them), for the formats the recording sources read (by extension), read with the
/// source keys `keys` (`sample_rate=250`), else a Parquet file's schema, row count, row
/// groups, metadata and first `rows` rows.
pub fn inspect(path: &Path, rows: usize, keys: &[String]) -> anyhow::Result<()> {
    match recording_kind(path) {
        Some(kind) => inspect_recording(path, kind, rows, keys),
        None if keys.is_empty() && is_dataset(path) => inspect_dataset(path, rows),
        None if keys.is_empty() => inspect_parquet(path, rows),
        None => anyhow::bail!("{}: `--set` is for recordings, not Parquet files", path.display()),
    }
}

/// `key=value` as a TOML line: numbers, booleans, arrays and quoted strings as written, any
/// other value as a string.
fn key_line(key_value: &str) -> anyhow::Result<String> {
    let (key, value) = key_value
        .split_once('=')
        .ok_or_else(|| anyhow::anyhow!("--set {key_value}: not KEY=VALUE"))?;
    let (key, value) = (key.trim(), value.trim());
    if key.is_empty() || !key.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_') {
        anyhow::bail!("--set {key_value}: `{key}` is not a key name");
    }
    let literal = value.parse::<f64>().is_ok() || matches!(value, "true" | "false") || value.starts_with(['[', '"', '\'']);
    Ok(if literal {
        format!("{key} = {value}\n")
    } else {
        format!("{key} = {}\n", serde_json::to_string(value)?)
    })
}

/// The source kind that reads a recording file, by its extension.
fn recording_kind(path: &Path) -> Option<&'static str> {
    let name = path.file_name()?.to_str()?.to_ascii_lowercase();
    // gzip-compressed FIF: `x_raw.fif.gz`, and MNE's split `x_raw.fif-1.gz`.
    let name = name.strip_suffix(".gz").unwrap_or(&name);
    let (_, extension) = name.rsplit_once('.')?;
    let extension = extension
        .rsplit_once('-')
        .filter(|(_, n)| n.parse::<u32>().is_ok())
        .map_or(extension, |(e, _)| e);
    Some(match extension {
        "edf" | "bdf" => "edf",
        "gdf" => "gdf",
        "fif" => "fif",
        "vhdr" => "brainvision",
        "set" => "eeglab",
        "xdf" | "xdfz" => "xdf",
        "csv" | "tsv" | "txt" => "csv",
        _ => return None,
    })
}

/// Opens `path` as the `kind` source would in a pipeline and replays it to the end.
fn inspect_recording(path: &Path, kind: &str, rows: usize, keys: &[String]) -> anyhow::Result<()> {
    // A JSON string is a TOML basic string: the same escapes.
    let quoted = serde_json::to_string(&path.display().to_string())?;
    let keys = keys.iter().map(|k| key_line(k)).collect::<anyhow::Result<String>>()?;
    let text = format!(
        "[sources.recording]\nkind = \"{kind}\"\npath = {quoted}\nchunk = 4096\n{keys}\n\
         [sinks.out]\nkind = \"console\"\ninput = \"recording\"\n"
    );
    // Paths are resolved against the base folder; an absolute one stays as it is.
    let compiled = PipelineSpec::from_toml_str(&text, Path::new(""))
        .and_then(|spec| spec.compile(&crate::registry()))
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    let source = compiled
        .nodes
        .iter()
        .find_map(|n| match &n.built {
            Built::Source(s) => Some(s.clone()),
            _ => None,
        })
        .expect("the pipeline has its source");
    let schema = source.schema();
    let StreamKind::Signal { sample_rate, .. } = schema.kind else {
        anyhow::bail!("{}: not a signal recording", path.display());
    };
    let mut reader = source.open(WorkerPos { index: 0, peers: 1 })?;
    let (mut samples, mut markers) = (0u64, Vec::new());
    // A glob of recordings: each one's stream, samples and markers, in the order read.
    let mut recordings: Vec<(String, u64, usize)> = Vec::new();
    while let Some((_, batch)) = reader.next_batch()? {
        let Batch::Dense(frame) = batch else { continue };
        if recordings.last().is_none_or(|r| r.0 != *frame.stream) {
            recordings.push((frame.stream.to_string(), 0, 0));
        }
        let recording = recordings.last_mut().expect("pushed above");
        if let RowIndex::Samples(index) = &frame.index {
            for m in &frame.markers {
                let at = index[m.row as usize] as f64 / sample_rate;
                markers.push((at, m.label.clone(), frame.stream.to_string()));
            }
        }
        recording.1 += frame.rows() as u64;
        recording.2 += frame.markers.len();
        samples += frame.rows() as u64;
    }
    let several = recordings.len() > 1;
    println!("file:     {}", path.display());
    println!("format:   {kind}");
    if kind == "xdf" {
        // Every stream of the file; the source replays one (below) and takes markers from the
        // string streams.
        let file = neurostream_sources::xdf::XdfFile::open(path, true).map_err(|e| anyhow::anyhow!("{e}"))?;
        println!("streams:");
        for s in &file.streams {
            println!(
                "  {:>3}  {} ({}): {} channels of {:?} at {} Hz",
                s.id, s.name, s.stream_type, s.channel_count, s.format, s.nominal_srate
            );
        }
    }
    println!(
        "signal:   {} channels at {sample_rate} Hz, {samples} samples ({:.3} s)",
        schema.channels.len(),
        samples as f64 / sample_rate
    );
    if several {
        println!("recordings: {} (each a stream of its own)", recordings.len());
        for (name, n, m) in &recordings {
            println!(
                "  {name:<24} {n:>10} samples ({:>10.3} s)  {m} markers",
                *n as f64 / sample_rate
            );
        }
    }
    println!("channels:");
    for c in &schema.channels {
        let kind = if c.kind.is_empty() { "-" } else { &c.kind };
        println!("  {:<16} {:<6} {kind}", c.name, c.unit);
    }
    println!("markers:  {}", markers.len());
    for (at, label, stream) in markers.iter().take(rows) {
        match several {
            true => println!("  {stream:<24} {at:>12.3} s  {label}"),
            false => println!("  {at:>12.3} s  {label}"),
        }
    }
    if markers.len() > rows {
        println!("  ... ({} more; `-n` shows more)", markers.len() - rows);
    }
    Ok(())
}

/// Whether `path` names several Parquet files: a directory, or a glob that is not a file.
fn is_dataset(path: &Path) -> bool {
    path.is_dir() || (path.to_string_lossy().contains(['*', '?', '[']) && !path.is_file())
}

/// Files of a dataset listed one per line, at most this many.
const LISTED_FILES: usize = 20;

/// A Parquet dataset (a directory, as the `parquet` source reads it, or a glob): its files
/// with their rows, the total, then the first file as [`inspect_parquet`] shows it.
fn inspect_dataset(path: &Path, rows: usize) -> anyhow::Result<()> {
    let files = neurostream_sources::parquet_source::resolve_files(path).map_err(|m| anyhow::anyhow!("{m}"))?;
    let mut total = 0u64;
    println!("dataset:    {} ({} files)", path.display(), files.len());
    for (i, f) in files.iter().enumerate() {
        let builder = parquet_read::open(f, Default::default()).map_err(|m| anyhow::anyhow!("{}: {m}", f.display()))?;
        let n = builder.metadata().file_metadata().num_rows().max(0) as u64;
        total += n;
        if i < LISTED_FILES {
            let shown = f.strip_prefix(path).unwrap_or(f);
            println!("  {:>12} rows  {}", n, shown.display());
        }
    }
    if files.len() > LISTED_FILES {
        println!("  ... ({} more files)", files.len() - LISTED_FILES);
    }
    println!("rows:       {total} in all");
    println!();
    inspect_parquet(&files[0], rows)
}

/// Prints the schema, row count, row groups, key-value metadata and the first `rows` rows.
fn inspect_parquet(path: &Path, rows: usize) -> anyhow::Result<()> {
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
