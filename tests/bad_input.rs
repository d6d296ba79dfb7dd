//! Bad input gets a clear error naming the file, row group, row and field, and what was
//! already accepted is kept in complete, readable files.

mod common;

use std::path::Path;
use std::sync::Arc;

use arrow::array::{ArrayRef, Float32Builder, ListBuilder, RecordBatch, UInt32Array, UInt64Array};
use arrow::datatypes::{DataType, Field, Schema};
use common::{run_err, run_ok};
use parquet::arrow::ArrowWriter;
use parquet::file::properties::WriterProperties;

/// Writes activations as `act: list<float32>` with the given rows, one row group per `group` rows.
fn write_list_file(path: &Path, rows: &[Vec<f32>], group: usize) {
    let schema = Arc::new(Schema::new(vec![
        Field::new("seq_id", DataType::UInt64, false),
        Field::new("pos", DataType::UInt32, false),
        Field::new(
            "act",
            DataType::List(Arc::new(Field::new("item", DataType::Float32, true))),
            false,
        ),
    ]));
    let props = WriterProperties::builder()
        .set_max_row_group_row_count(Some(group))
        .set_compression(parquet::basic::Compression::ZSTD(Default::default()))
        .build();
    let mut w = ArrowWriter::try_new(std::fs::File::create(path).unwrap(), schema.clone(), Some(props)).unwrap();
    let mut list = ListBuilder::new(Float32Builder::new());
    for r in rows {
        list.values().append_slice(r);
        list.append(true);
    }
    let n = rows.len();
    let cols: Vec<ArrayRef> = vec![
        Arc::new(UInt64Array::from(vec![0u64; n])),
        Arc::new(UInt32Array::from((0..n as u32).collect::<Vec<_>>())),
        Arc::new(list.finish()),
    ];
    w.write(&RecordBatch::try_new(schema, cols).unwrap()).unwrap();
    w.close().unwrap();
}

fn pipeline(dir: &Path, source_extra: &str) {
    let toml = format!(
        "[sources.acts]\nkind = \"parquet\"\npath = \"in.parquet\"\n{source_extra}\n[operators.l2]\nkind = \"normalize\"\ninput = \"acts\"\nmethod = \"l2\"\n[sinks.out]\nkind = \"parquet\"\ninput = \"l2\"\npath = \"out.parquet\"\n"
    );
    std::fs::write(dir.join("p.toml"), toml).unwrap();
}

fn good_rows(n: usize, width: usize) -> Vec<Vec<f32>> {
    (0..n)
        .map(|r| (0..width).map(|c| (r * width + c) as f32 * 0.01 + 1.0).collect())
        .collect()
}

fn status(path: &Path) -> String {
    let file = std::fs::File::open(path).unwrap();
    let reader = parquet::file::reader::SerializedFileReader::new(file).unwrap();
    use parquet::file::reader::FileReader;
    let kv = reader
        .metadata()
        .file_metadata()
        .key_value_metadata()
        .cloned()
        .unwrap_or_default();
    kv.into_iter()
        .find(|k| k.key == "neurostream.status")
        .and_then(|k| k.value)
        .unwrap_or_default()
}

#[test]
fn truncated_parquet_names_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    write_list_file(&d.join("in.parquet"), &good_rows(100, 4), 50);
    let bytes = std::fs::read(d.join("in.parquet")).unwrap();
    std::fs::write(d.join("in.parquet"), &bytes[..bytes.len() / 2]).unwrap();
    pipeline(d, "");
    let err = run_err(d, &["validate", "p.toml"]);
    assert!(err.contains("in.parquet: not a readable Parquet file"), "{err}");
}

#[test]
fn corrupt_row_group_names_file_and_row_group_and_keeps_earlier_rows() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    write_list_file(&d.join("in.parquet"), &good_rows(3000, 16), 1000);
    // Overwrite the page header of row group 1's `act` column chunk.
    let meta = {
        use parquet::file::reader::FileReader;
        let r = parquet::file::reader::SerializedFileReader::new(std::fs::File::open(d.join("in.parquet")).unwrap()).unwrap();
        let c = r.metadata().row_group(1).column(2).clone();
        (c.data_page_offset() as usize, c.compressed_size() as usize)
    };
    let mut bytes = std::fs::read(d.join("in.parquet")).unwrap();
    assert!(meta.1 > 64);
    for b in &mut bytes[meta.0..meta.0 + 16] {
        *b ^= 0xA5;
    }
    std::fs::write(d.join("in.parquet"), &bytes).unwrap();
    pipeline(d, "");
    let err = run_err(d, &["run", "p.toml", "--quiet"]);
    assert!(err.contains("in.parquet") && err.contains("row group 1"), "{err}");
    // Row group 0 was accepted before the failure: it is in a complete, readable file marked incomplete.
    let rows = common::rows(&d.join("out.parquet"));
    assert_eq!(rows.len(), 1000, "{err}");
    assert!(status(&d.join("out.parquet")).starts_with("incomplete:"));
}

#[test]
fn a_page_the_parquet_decoder_panics_on_fails_the_run_naming_the_file() {
    // A 20-row file (3 row groups) whose `act` page claims dictionary encoding without a
    // dictionary: arrow-rs's decoder panics on it. Read ahead on a helper thread, that panic
    // used to look like the end of the data, and the run succeeded with the rows before it.
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let input = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/corpus/parquet/regression-dict-decoder-panic");
    std::fs::copy(input, d.join("in.parquet")).unwrap();
    pipeline(d, "");
    for workers in ["1", "2"] {
        let err = run_err(d, &["run", "p.toml", "--quiet", "-w", workers]);
        // Two workers read pieces through the page index, which is corrupt too.
        let named = err.contains("row group") && err.contains("corrupt data") || err.contains("not a readable Parquet file");
        assert!(err.contains("in.parquet") && named, "{workers} workers: {err}");
        assert!(status(&d.join("out.parquet")).starts_with("incomplete:"), "{workers} workers");
    }
}

#[test]
fn list_of_the_wrong_length_names_file_and_row() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let mut rows = good_rows(20, 4);
    rows[13] = vec![1.0, 2.0, 3.0];
    write_list_file(&d.join("in.parquet"), &rows, 8);
    pipeline(d, "");
    let err = run_err(d, &["run", "p.toml", "--quiet"]);
    assert!(
        err.contains("in.parquet: row group 1, row 13: `act` has 3 values, expected 4"),
        "{err}"
    );
}

#[test]
fn nan_is_an_error_by_default_and_dropped_and_counted_on_request() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let mut rows = good_rows(50, 4);
    rows[5][2] = f32::NAN;
    rows[40][0] = f32::INFINITY;
    write_list_file(&d.join("in.parquet"), &rows, 25);
    pipeline(d, "");
    let err = run_err(d, &["run", "p.toml", "--quiet"]);
    assert!(err.contains("non-finite value at seq_id 0 pos 5, channel 2 (d2)"), "{err}");
    assert!(err.contains("on_invalid = \"drop\""), "{err}");

    pipeline(d, "on_invalid = \"drop\"");
    let log = run_ok(d, &["run", "p.toml", "--quiet"]);
    assert!(log.contains("dropped 2 rows with NaN/Inf from sources.acts"), "{log}");
    let out = common::rows(&d.join("out.parquet"));
    assert_eq!(out.len(), 48);
    assert!(out.iter().all(|(_, v)| v.iter().all(|x| x.is_finite())));
    assert_eq!(status(&d.join("out.parquet")), "complete");
}

#[test]
fn previous_output_survives_a_run_that_fails_validation() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    write_list_file(&d.join("in.parquet"), &good_rows(10, 4), 10);
    pipeline(d, "");
    run_ok(d, &["run", "p.toml", "--quiet"]);
    let before = std::fs::read(d.join("out.parquet")).unwrap();
    pipeline(d, "batch_rows = 0");
    let err = run_err(d, &["run", "p.toml", "--quiet"]);
    assert!(err.contains("`batch_rows` must be at least 1"), "{err}");
    assert_eq!(std::fs::read(d.join("out.parquet")).unwrap(), before);
    // No temporary files are left behind.
    let leftovers: Vec<_> = std::fs::read_dir(d)
        .unwrap()
        .filter_map(|e| e.ok())
        .filter(|e| e.file_name().to_string_lossy().ends_with(".tmp"))
        .collect();
    assert!(leftovers.is_empty());
}

#[test]
fn a_file_of_another_layout_is_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let schema = Arc::new(Schema::new(vec![Field::new("x", DataType::Float32, false)]));
    let mut w = ArrowWriter::try_new(std::fs::File::create(d.join("in.parquet")).unwrap(), schema.clone(), None).unwrap();
    w.write(&RecordBatch::try_new(schema, vec![Arc::new(arrow::array::Float32Array::from(vec![1.0f32]))]).unwrap())
        .unwrap();
    w.close().unwrap();
    pipeline(d, "");
    let err = run_err(d, &["validate", "p.toml"]);
    assert!(
        err.contains("in.parquet: neither layout: activations need a `act` list column, signals a `sample` column (columns: x)"),
        "{err}"
    );
}

#[test]
fn negative_or_out_of_range_ids_are_refused_naming_the_row() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let write = |seq: Vec<i64>, pos: Vec<i64>| {
        let n = seq.len();
        let schema = Arc::new(Schema::new(vec![
            Field::new("seq_id", DataType::Int64, false),
            Field::new("pos", DataType::Int64, false),
            Field::new(
                "act",
                DataType::List(Arc::new(Field::new("item", DataType::Float32, true))),
                false,
            ),
        ]));
        let mut list = ListBuilder::new(Float32Builder::new());
        for r in good_rows(n, 4) {
            list.values().append_slice(&r);
            list.append(true);
        }
        let cols: Vec<ArrayRef> = vec![
            Arc::new(arrow::array::Int64Array::from(seq)),
            Arc::new(arrow::array::Int64Array::from(pos)),
            Arc::new(list.finish()),
        ];
        let mut w = ArrowWriter::try_new(std::fs::File::create(d.join("in.parquet")).unwrap(), schema.clone(), None).unwrap();
        w.write(&RecordBatch::try_new(schema, cols).unwrap()).unwrap();
        w.close().unwrap();
    };
    pipeline(d, "");
    write(vec![0, 1, 2, -5, 4], vec![0; 5]);
    let e = run_err(d, &["run", "p.toml", "--quiet"]);
    assert!(
        e.contains("in.parquet") && e.contains("row 3") && e.contains("`seq_id` is -5"),
        "{e}"
    );
    write(vec![0; 3], vec![0, 1, 1 << 40]);
    let e = run_err(d, &["run", "p.toml", "--quiet"]);
    assert!(
        e.contains("row 2") && e.contains("`pos`") && e.contains("above its maximum"),
        "{e}"
    );
    write(vec![7; 3], vec![0, 1, 2]);
    run_ok(d, &["run", "p.toml", "--quiet"]);
}

#[test]
fn a_failed_sae_encode_leaves_the_output_path_as_it_was_and_drop_skips_bad_rows() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let sae = concat!(env!("CARGO_MANIFEST_DIR"), "/examples/data/sample_sae");
    let mut rows = good_rows(50, 64);
    rows[30][7] = f32::NAN;
    write_list_file(&d.join("in.parquet"), &rows, 10);
    std::fs::write(d.join("out.parquet"), b"an earlier result").unwrap();
    let encode = |extra: &[&str]| {
        let mut args = vec![
            "sae",
            "encode",
            "--sae",
            sae,
            "--input",
            "in.parquet",
            "--output",
            "out.parquet",
        ];
        args.extend_from_slice(extra);
        args.push("--quiet");
        common::run_cli(d, &args)
    };
    let out = encode(&[]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{err}");
    assert!(err.contains("NaN") || err.contains("non-finite"), "{err}");
    assert_eq!(
        std::fs::read(d.join("out.parquet")).unwrap(),
        b"an earlier result",
        "a failed encode must leave the output path as it was"
    );
    let leftovers: Vec<_> = std::fs::read_dir(d)
        .unwrap()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().starts_with('.'))
        .collect();
    assert!(leftovers.is_empty(), "temporary files left: {leftovers:?}");
    let out = encode(&["--on-invalid", "drop"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(common::row_count(&d.join("out.parquet")), 49);
}

/// A drift reference must be dense rows: a features file (sparse SAE output) is refused at
/// validation, naming the file, and a reference of another width names both widths.
#[test]
fn a_drift_reference_of_sparse_features_or_another_width_is_refused_by_name() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let sae = concat!(env!("CARGO_MANIFEST_DIR"), "/examples/data/smollm2_sae");
    std::fs::write(
        d.join("encode.toml"),
        format!(
            r#"
[sources.acts]
kind = "synthetic_activations"
d_model = 576
tokens = 64
chunk = 32

[operators.sae]
kind = "sae_encode"
input = "acts"
sae = "{sae}"

[sinks.features]
kind = "parquet"
input = "sae"
path = "features.parquet"

[sinks.acts]
kind = "parquet"
input = "acts"
path = "acts.parquet"
"#
        ),
    )
    .unwrap();
    run_ok(d, &["run", "encode.toml", "--quiet"]);
    for (reference, width, expect) in [
        ("features.parquet", 576, "holds sparse features"),
        ("acts.parquet", 64, "rows of width 576 but the stream has 64 columns"),
    ] {
        std::fs::write(
            d.join("drift.toml"),
            format!(
                r#"
[sources.acts]
kind = "synthetic_activations"
d_model = {width}
tokens = 64

[operators.drift]
kind = "mahalanobis"
input = "acts"
reference = "{reference}"

[sinks.out]
kind = "parquet"
input = "drift"
path = "drift.parquet"
"#
            ),
        )
        .unwrap();
        let err = run_err(d, &["validate", "drift.toml"]);
        assert!(err.contains(reference) && err.contains(expect), "{err}");
    }
}
