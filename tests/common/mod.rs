//! Helpers shared by the end-to-end tests: running the CLI, finding Python, reading Parquet,
//! building what an `arrow_tcp` client sends.
#![allow(dead_code)]

pub mod browser;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use arrow::array::{AsArray, RecordBatch};
use arrow::datatypes::{DataType, Float32Type, Int64Type, UInt32Type, UInt64Type};

/// The `neurostream` binary built for these tests.
pub fn bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_neurostream"))
}

/// Runs the CLI with `args` in `dir`, with software GPUs allowed.
pub fn run_cli(dir: &Path, args: &[&str]) -> Output {
    Command::new(bin())
        .args(args)
        .current_dir(dir)
        .env("NEUROSTREAM_ALLOW_SOFTWARE_GPU", "1")
        .output()
        .expect("spawn neurostream")
}

/// Runs the CLI and panics with its output unless it succeeded.
pub fn run_ok(dir: &Path, args: &[&str]) -> String {
    let out = run_cli(dir, args);
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "neurostream {args:?} failed:\n{text}");
    text
}

/// Waits for a spawned engine (see [`spawn_live`]), panics with its output unless it succeeded,
/// and returns stdout + stderr.
pub fn wait_ok(child: std::process::Child) -> String {
    let out = child.wait_with_output().expect("wait for neurostream");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "neurostream failed:\n{text}");
    text
}

/// Runs the CLI, expecting failure; returns stderr.
pub fn run_err(dir: &Path, args: &[&str]) -> String {
    let out = run_cli(dir, args);
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(!out.status.success(), "neurostream {args:?} should have failed:\n{text}");
    text
}

/// The Python interpreter for reference checks: $NEUROSTREAM_PYTHON, the repo's .venv, or python3.
/// Returns None (the caller skips) only when NEUROSTREAM_SKIP_PYTHON_TESTS=1; otherwise a
/// Python without numpy/pyarrow/duckdb/polars fails the test with instructions.
pub fn python() -> Option<PathBuf> {
    if std::env::var("NEUROSTREAM_SKIP_PYTHON_TESTS").is_ok_and(|v| v == "1") {
        eprintln!("skipping Python reference checks (NEUROSTREAM_SKIP_PYTHON_TESTS=1)");
        return None;
    }
    let candidates = [
        std::env::var("NEUROSTREAM_PYTHON").ok().map(PathBuf::from),
        Some(Path::new(env!("CARGO_MANIFEST_DIR")).join(".venv/bin/python")),
        Some(PathBuf::from("python3")),
    ];
    for c in candidates.into_iter().flatten() {
        let ok = Command::new(&c)
            .args(["-c", "import numpy, pyarrow, duckdb, polars, pandas"])
            .output()
            .map(|o| o.status.success())
            .unwrap_or(false);
        if ok {
            return Some(c);
        }
    }
    panic!(
        "no Python with numpy, pyarrow, duckdb and polars: run `python3 -m venv .venv && .venv/bin/pip install -r tests/python/requirements.txt`, \
         or set NEUROSTREAM_PYTHON, or NEUROSTREAM_SKIP_PYTHON_TESTS=1 to skip the reference checks"
    );
}

/// Runs a script from tests/python with arguments; panics with its output on failure.
pub fn run_python(python: &Path, script: &str, args: &[&str]) -> String {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/python").join(script);
    let out = Command::new(python).arg(&path).args(args).output().expect("spawn python");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "{script} failed:\n{text}");
    eprint!("{script}: {text}");
    text
}

/// All record batches of a Parquet file or of every `*.parquet` in a directory.
pub fn read_parquet(path: &Path) -> Vec<RecordBatch> {
    let files: Vec<PathBuf> = if path.is_dir() {
        let mut v: Vec<PathBuf> = std::fs::read_dir(path)
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| p.extension().is_some_and(|e| e == "parquet"))
            .collect();
        v.sort();
        v
    } else {
        vec![path.to_path_buf()]
    };
    let mut out = Vec::new();
    for f in files {
        let file = std::fs::File::open(&f).unwrap();
        let reader = parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder::try_new(file)
            .unwrap()
            .build()
            .unwrap();
        out.extend(reader.map(|b| b.unwrap()));
    }
    out
}

/// Rows as (key, values): key is `sample` for signals or `(seq_id << 32) | pos` for activations;
/// values are the channel values or the activation vector. Sorted by key.
pub fn rows(path: &Path) -> Vec<(u64, Vec<f32>)> {
    let mut out = Vec::new();
    for b in read_parquet(path) {
        let schema = b.schema();
        if let Ok(i) = schema.index_of("act") {
            let seq = b
                .column(schema.index_of("seq_id").unwrap())
                .as_primitive::<UInt64Type>()
                .clone();
            let pos = b.column(schema.index_of("pos").unwrap()).as_primitive::<UInt32Type>().clone();
            let act = b.column(i).as_fixed_size_list().clone();
            for r in 0..b.num_rows() {
                let v = act.value(r);
                out.push((
                    (seq.value(r) << 32) | pos.value(r) as u64,
                    v.as_primitive::<Float32Type>().values().to_vec(),
                ));
            }
        } else {
            let sample = b
                .column(schema.index_of("sample").unwrap())
                .as_primitive::<Int64Type>()
                .clone();
            let chans: Vec<usize> = (0..schema.fields().len())
                .filter(|&i| schema.field(i).data_type() == &DataType::Float32)
                .collect();
            for r in 0..b.num_rows() {
                let v = chans
                    .iter()
                    .map(|&c| b.column(c).as_primitive::<Float32Type>().value(r))
                    .collect();
                out.push((sample.value(r) as u64, v));
            }
        }
    }
    out.sort_by_key(|(k, _)| *k);
    out
}

/// The float32 column `name` of a Parquet file or directory, every batch in order.
pub fn column_f32(path: &Path, name: &str) -> Vec<f32> {
    read_parquet(path)
        .iter()
        .flat_map(|b| {
            let column = b.column_by_name(name).unwrap_or_else(|| panic!("no column `{name}`"));
            column.as_primitive::<Float32Type>().values().to_vec()
        })
        .collect()
}

/// Number of rows of a Parquet file or directory.
pub fn row_count(path: &Path) -> usize {
    read_parquet(path).iter().map(|b| b.num_rows()).sum()
}

/// Starts `neurostream run <pipeline> [args]` in `dir` in the background and waits (up to 60 s)
/// until its live source has written its listening address to `dir/address.txt`.
/// The caller waits on the returned child.
#[allow(clippy::zombie_processes)]
pub fn spawn_live(dir: &Path, pipeline: &str, args: &[&str]) -> (std::process::Child, String) {
    let mut child = Command::new(bin())
        .args(["run", pipeline])
        .args(args)
        .current_dir(dir)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("spawn neurostream");
    let start = std::time::Instant::now();
    loop {
        if let Ok(a) = std::fs::read_to_string(dir.join("address.txt")) {
            return (child, a.trim().to_string());
        }
        if start.elapsed() > std::time::Duration::from_secs(60) {
            let _ = child.kill();
            let _ = child.wait();
            panic!("the engine never started listening");
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
}

/// Writes a little-endian float64 `.npy` array of `shape` (C order).
#[allow(dead_code)]
pub fn write_npy_f64(path: &Path, data: &[f64], shape: &[usize]) {
    let dims: Vec<String> = shape.iter().map(|d| d.to_string()).collect();
    let shape_text = if dims.len() == 1 {
        format!("{},", dims[0])
    } else {
        dims.join(", ")
    };
    let mut header = format!("{{'descr': '<f8', 'fortran_order': False, 'shape': ({shape_text}), }}");
    while (10 + header.len() + 1) % 64 != 0 {
        header.push(' ');
    }
    header.push('\n');
    let mut bytes = b"\x93NUMPY\x01\x00".to_vec();
    bytes.extend((header.len() as u16).to_le_bytes());
    bytes.extend(header.as_bytes());
    for v in data {
        bytes.extend(v.to_le_bytes());
    }
    std::fs::write(path, bytes).unwrap();
}

/// The compute devices the kernel tests run on: CPU and wgpu (lavapipe when there is no GPU), or
/// only the CPU with NEUROSTREAM_SKIP_GPU_TESTS=1.
#[allow(dead_code)]
pub fn devices() -> Vec<&'static str> {
    if std::env::var("NEUROSTREAM_SKIP_GPU_TESTS").is_ok_and(|v| v == "1") {
        vec!["cpu"]
    } else {
        vec!["cpu", "gpu"]
    }
}

/// The Arrow schema an `arrow_tcp` client sends: `seq_id`, `pos` and activations `d` wide, with
/// schema `metadata` such as `neurostream.stream` or `neurostream.token`.
pub fn activation_ipc_schema(d: usize, metadata: &[(&str, &str)]) -> std::sync::Arc<arrow::datatypes::Schema> {
    use arrow::datatypes::{Field, Schema};
    let item = std::sync::Arc::new(Field::new("item", DataType::Float32, false));
    let metadata: std::collections::HashMap<String, String> =
        metadata.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
    std::sync::Arc::new(Schema::new_with_metadata(
        vec![
            Field::new("seq_id", DataType::UInt64, false),
            Field::new("pos", DataType::UInt32, false),
            Field::new("act", DataType::FixedSizeList(item, d as i32), false),
        ],
        metadata,
    ))
}

/// A batch of [`activation_ipc_schema`]: `data` row-major, one `seq_id` per row, `pos` 0, 1, ...
pub fn activation_ipc_batch(schema: &std::sync::Arc<arrow::datatypes::Schema>, seq: &[u64], data: &[f32]) -> RecordBatch {
    use arrow::array::{ArrayRef, FixedSizeListArray, Float32Array, UInt32Array, UInt64Array};
    use arrow::datatypes::Field;
    let DataType::FixedSizeList(_, d) = schema.field(2).data_type() else {
        panic!("not an activation schema")
    };
    assert_eq!(seq.len() * *d as usize, data.len(), "one seq_id per row");
    let item = std::sync::Arc::new(Field::new("item", DataType::Float32, false));
    let values = std::sync::Arc::new(Float32Array::from(data.to_vec()));
    let cols: Vec<ArrayRef> = vec![
        std::sync::Arc::new(UInt64Array::from(seq.to_vec())),
        std::sync::Arc::new(UInt32Array::from((0..seq.len() as u32).collect::<Vec<_>>())),
        std::sync::Arc::new(FixedSizeListArray::new(item, *d, values, None)),
    ];
    RecordBatch::try_new(schema.clone(), cols).unwrap()
}
