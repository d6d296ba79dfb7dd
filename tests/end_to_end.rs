//! End to end: synthetic signals and activations -> normalize -> Parquet, on the CPU and on
//! wgpu, read back with pyarrow, DuckDB and Polars and compared with numpy computing the same.

mod common;

use common::{python, run_err, run_ok, run_python};

const PIPELINE: &str = r#"
[pipeline]
name = "e2e"

[sources.eeg]
kind = "synthetic_eeg"
channels = 6
sample_rate = 250.0
seconds = 20.0
chunk = 100
seed = 3
marker_interval = 2.0

[operators.z]
kind = "normalize"
input = "eeg"
method = "running_zscore"
warmup = 300

[sources.acts]
kind = "synthetic_activations"
d_model = 48
features = 96
active = 6
tokens = 3000
chunk = 256
seed = 4

[operators.l2]
kind = "normalize"
input = "acts"
method = "l2"

[sinks.eeg_raw]
kind = "parquet"
input = "eeg"
path = "eeg_raw.parquet"
markers = true

[sinks.eeg_z]
kind = "parquet"
input = "z"
path = "eeg_z.parquet"
compression = "lz4"

[sinks.acts_raw]
kind = "parquet"
input = "acts"
path = "acts_raw.parquet"
compression = "snappy"

[sinks.acts_l2]
kind = "parquet"
input = "l2"
path = "acts_l2.parquet"
compression = "none"
row_group_size = 500
"#;

const FIXED: &str = r#"
[sources.acts]
kind = "parquet"
path = "acts_raw.parquet"
batch_rows = 333

[operators.fixed]
kind = "normalize"
input = "acts"
method = "fixed"
stats = "stats.json"

[sinks.out]
kind = "parquet"
input = "fixed"
path = "acts_fixed.parquet"
"#;

fn check_device(device: &str, workers: &str) {
    let Some(py) = python() else { return };
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    std::fs::write(d.join("p.toml"), PIPELINE).unwrap();
    let log = run_ok(d, &["run", "p.toml", "--device", device, "-w", workers, "--quiet"]);
    assert!(
        log.contains(&format!("device operators.z: {device}")),
        "device not reported:\n{log}"
    );
    let p = |f: &str| d.join(f).to_string_lossy().to_string();
    let out = run_python(
        &py,
        "check_normalize.py",
        &["signals", &p("eeg_raw.parquet"), &p("eeg_z.parquet"), "300"],
    );
    eprintln!("{device}: {out}");
    let out = run_python(
        &py,
        "check_normalize.py",
        &["l2", &p("acts_raw.parquet"), &p("acts_l2.parquet"), "default"],
    );
    eprintln!("{device}: {out}");
    run_python(&py, "write_stats.py", &[&p("acts_raw.parquet"), &p("stats.json")]);
    std::fs::write(d.join("fixed.toml"), FIXED).unwrap();
    run_ok(d, &["run", "fixed.toml", "--device", device, "-w", workers, "--quiet"]);
    let out = run_python(
        &py,
        "check_normalize.py",
        &["fixed", &p("acts_raw.parquet"), &p("acts_fixed.parquet"), &p("stats.json")],
    );
    eprintln!("{device}: {out}");
}

#[test]
fn normalize_on_cpu_matches_numpy() {
    check_device("cpu", "1");
}

#[test]
fn normalize_on_cpu_with_two_workers_matches_numpy() {
    check_device("cpu", "2");
}

#[test]
fn normalize_on_wgpu_matches_numpy() {
    if std::env::var("NEUROSTREAM_SKIP_GPU_TESTS").is_ok_and(|v| v == "1") {
        eprintln!("skipping the wgpu backend (NEUROSTREAM_SKIP_GPU_TESTS=1)");
        return;
    }
    check_device("gpu", "1");
}

#[test]
fn quickstart_runs_on_the_bundled_data() {
    let dir = tempfile::tempdir().unwrap();
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    // Copy the example so its outputs land in the temp dir, with the bundled data beside it.
    std::fs::create_dir_all(dir.path().join("data/smollm2_sae")).unwrap();
    for f in [
        "sample_activations.parquet",
        "smollm2_l15_sample.parquet",
        "smollm2_sae/cfg.json",
        "smollm2_sae/sae_weights.safetensors",
    ] {
        std::fs::copy(root.join("examples/data").join(f), dir.path().join("data").join(f)).unwrap();
    }
    std::fs::copy(root.join("examples/quickstart.toml"), dir.path().join("quickstart.toml")).unwrap();
    let log = run_ok(dir.path(), &["run", "quickstart.toml", "--quiet"]);
    // The real activations through the bundled SAE: 3 full windows of 256 tokens and a partial
    // one, each with its all-time companion, and top examples carrying the model's token text.
    let windows = common::read_parquet(&dir.path().join("out/smollm2_stats/windows.parquet"));
    assert_eq!(windows.iter().map(|b| b.num_rows()).sum::<usize>(), 8, "{log}");
    let examples = common::read_parquet(&dir.path().join("out/smollm2_stats/top_examples.parquet"));
    let with_text = examples
        .iter()
        .any(|b| b.column_by_name("context").unwrap().null_count() < b.num_rows());
    assert!(with_text, "top examples carry the text around each token");
    assert!(log.contains("wrote 8192 rows"), "{log}");
    assert!(log.contains("wrote 15360 rows"), "{log}");
    assert_eq!(common::row_count(&dir.path().join("out/acts_l2.parquet")), 8192);
    // Every L2-scaled row has norm sqrt(64) = 8.
    for (_, v) in common::rows(&dir.path().join("out/acts_l2.parquet")) {
        let n: f64 = v.iter().map(|&x| (x as f64).powi(2)).sum::<f64>().sqrt();
        assert!((n - 8.0).abs() < 1e-4, "norm {n}");
    }
}

#[test]
fn llm_monitor_example_runs_on_the_bundled_data_and_sae() {
    let dir = tempfile::tempdir().unwrap();
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let d = dir.path();
    std::fs::create_dir_all(d.join("data/sample_sae")).unwrap();
    for f in [
        "sample_activations.parquet",
        "sample_sae/cfg.json",
        "sample_sae/sae_weights.safetensors",
    ] {
        std::fs::copy(root.join("examples/data").join(f), d.join("data").join(f)).unwrap();
    }
    std::fs::copy(root.join("examples/llm_monitor.toml"), d.join("llm_monitor.toml")).unwrap();
    let log = run_ok(d, &["run", "llm_monitor.toml", "--quiet", "-w", "2"]);
    for table in [
        "windows",
        "features",
        "density_histogram",
        "activation_histogram",
        "l0",
        "top_examples",
    ] {
        assert!(d.join(format!("out/monitor/{table}.parquet")).exists(), "{table}: {log}");
    }
    // 7 sliding windows + the final one, each with its all-time companion; 256 features each.
    assert_eq!(common::row_count(&d.join("out/monitor/windows.parquet")), 16);
    assert_eq!(common::row_count(&d.join("out/monitor/features.parquet")), 16 * 256);
    assert_eq!(common::row_count(&d.join("out/quality/scalars.parquet")), 16 * 5);
    // The watched-feature rule fires on the windows where feature 251 fired at least 42 times,
    // and each alert is printed live.
    let printed = log.lines().filter(|l| l.starts_with("alerts acts:")).count();
    assert_eq!(printed, common::row_count(&d.join("out/monitor/alerts.parquet")), "{log}");
    assert!(log.contains("rule=watched feature kind=feature_fires feature=251"), "{log}");
    assert!(
        !log.contains("kind=fvu_above"),
        "the ideal dictionary reconstructs in-distribution data: {log}"
    );
}

/// Host-only operators (`token_stats`, `cooccurrence`) never claim a device: with `--device`
/// the run report says they ran on the host, and a `device` key on one is an error naming it.
#[test]
fn host_only_operators_never_claim_a_device() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let sae = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/data/sample_sae");
    let pipeline = |device_key: &str| {
        format!(
            "[sources.acts]\nkind = \"synthetic_activations\"\nd_model = 64\ntokens = 600\n\n\
             [operators.rec]\nkind = \"sae_reconstruct\"\ninput = \"acts\"\nsae = \"{}\"\n\n\
             [operators.ts]\nkind = \"token_stats\"\ninput = \"rec\"\nwindow = 200\n{device_key}\n\
             [sinks.out]\nkind = \"parquet\"\ninput = \"ts\"\npath = \"out\"\n",
            sae.display()
        )
    };
    std::fs::write(d.join("p.toml"), pipeline("")).unwrap();
    let log = run_ok(d, &["run", "p.toml", "--device", "cpu"]);
    assert!(log.contains("device operators.ts: host (no device kernels)"), "{log}");
    assert!(log.contains("device operators.rec: cpu"), "{log}");
    std::fs::write(d.join("p.toml"), pipeline("device = \"gpu\"\n")).unwrap();
    let err = run_err(d, &["run", "p.toml"]);
    assert!(
        err.contains("[operators.ts]") && err.contains("`device` applies to operators with device kernels"),
        "{err}"
    );
}
