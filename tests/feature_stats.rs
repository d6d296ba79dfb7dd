//! `feature_stats` and `token_stats` end to end: bundled activations (with token text) through a
//! test SAE, every statistics table checked against numpy (`tests/python/check_feature_stats.py`),
//! and a planted distribution shift that must raise exactly the expected alerts.

mod common;

use std::path::Path;

use common::{devices, python, run_err, run_ok, run_python};

const SAMPLE: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/examples/data/sample_activations.parquet");

fn make_sae(py: &Path, dir: &Path) -> String {
    let sae = dir.join("sae").to_string_lossy().to_string();
    run_python(
        py,
        "sae_reference.py",
        &["make", &sae, "saelens", "topk", "64", "192", "7", "k=8"],
    );
    sae
}

/// `dir/name` as a string, for script arguments.
fn at(dir: &Path, name: &str) -> String {
    dir.join(name).to_string_lossy().to_string()
}

/// The `window_end kind feature` lines the check script prints for the alerts it verified.
fn alert_lines(out: &str) -> Vec<&str> {
    out.lines().filter(|l| l.starts_with(|c: char| c.is_ascii_digit())).collect()
}

/// Runs `pipeline` (TOML) in `dir` with `workers` workers.
fn run_pipeline(dir: &Path, toml: &str, workers: &str) -> String {
    std::fs::write(dir.join("p.toml"), toml).unwrap();
    run_ok(dir, &["run", "p.toml", "-w", workers, "--quiet"])
}

#[test]
fn feature_statistics_match_numpy() {
    let Some(py) = python() else { return };
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    make_sae(&py, d);
    let input = d.join("acts.parquet");
    run_python(&py, "check_feature_stats.py", &["tokens", SAMPLE, input.to_str().unwrap()]);
    // Sliding windows (2048 tokens every 768 would not divide: use 512), a partial final window,
    // dead after 384 tokens so some features are dead, and alerts of every kind.
    let settings = r#"{"window": 2048, "step": 512, "dead_after": 384, "dense_above": 0.05, "top_k": 4, "context": 3,
        "activation_bins": [-2.0, 1.0, 12], "density_bins": [-4.0, 0.0, 16],
        "alerts": [{"rule": "density_ratio", "above": 1.5, "below": 0.5, "min_count": 20},
                   {"rule": "dead_fraction_jump", "above": 0.0},
                   {"rule": "feature_fires", "features": [3, 100], "min_count": 60}]}"#;
    // On the GPU the counts are summed in float32 between settles: 1e-5 relative.
    let runs = devices().into_iter().map(|d| ("1", d)).chain([("2", "cpu")]);
    for (workers, device) in runs {
        let toml = r#"
[sources.acts]
kind = "parquet"
path = "acts.parquet"
batch_rows = 300

[operators.enc]
kind = "sae_encode"
input = "acts"
sae = "sae"

[operators.stats]
kind = "feature_stats"
input = "enc"
device = "DEVICE"
window = 2048
step = 512
dead_after = 384
dense_above = 0.05
top_k = 4
context = 3
activation_bins = [-2.0, 1.0, 12]
density_bins = [-4.0, 0.0, 16]

[[operators.stats.alerts]]
rule = "density_ratio"
above = 1.5
below = 0.5
min_count = 20

[[operators.stats.alerts]]
rule = "dead_fraction_jump"
above = 0.0

[[operators.stats.alerts]]
rule = "feature_fires"
features = [3, 100]
min_count = 60

[sinks.features]
kind = "parquet"
input = "enc"
path = "features.parquet"

[sinks.stats]
kind = "parquet"
input = "stats"
path = "stats"

[sinks.alerts]
kind = "console"
input = "stats"
"#
        .replace("DEVICE", device);
        let out = run_pipeline(d, &toml, workers);
        let settings = if device == "gpu" {
            settings.replacen('{', r#"{"rel": 1e-5, "#, 1)
        } else {
            settings.to_string()
        };
        let alerts = run_python(
            &py,
            "check_feature_stats.py",
            &[
                "features",
                &at(d, "features.parquet"),
                &at(d, "stats"),
                &at(d, "acts.parquet"),
                &settings,
            ],
        );
        assert!(
            !alert_lines(&alerts).is_empty(),
            "the rules were chosen so that some alerts fire"
        );
        let printed = out.lines().filter(|l| l.starts_with("alerts acts:")).count();
        assert_eq!(printed, alert_lines(&alerts).len(), "console shows every alert live:\n{out}");
    }
    // Stored features replay through a parquet source into the same statistics.
    let toml = std::fs::read_to_string(d.join("p.toml")).unwrap();
    let replay = toml
        .replace(
            "kind = \"parquet\"\npath = \"acts.parquet\"",
            "kind = \"parquet\"\npath = \"features.parquet\"",
        )
        .replace(
            "[operators.enc]\nkind = \"sae_encode\"\ninput = \"acts\"\nsae = \"sae\"\n",
            "",
        )
        .replace("input = \"enc\"", "input = \"acts\"")
        .replace(
            "path = \"features.parquet\"\n\n[sinks.stats]",
            "path = \"features_again.parquet\"\n\n[sinks.stats]",
        )
        .replace("path = \"stats\"", "path = \"stats_replay\"");
    assert!(
        !replay.contains("sae_encode") && replay.contains("path = \"features.parquet\"\nbatch_rows"),
        "{replay}"
    );
    run_pipeline(d, &replay, "1");
    for table in [
        "windows",
        "features",
        "density_histogram",
        "activation_histogram",
        "l0",
        "top_examples",
        "alerts",
    ] {
        let a = read_table(&d.join(format!("stats/{table}.parquet")));
        let b = read_table(&d.join(format!("stats_replay/{table}.parquet")));
        // Only the token column differs: stored features carry no token text.
        let drop = |t: arrow::record_batch::RecordBatch| {
            let keep: Vec<usize> = (0..t.num_columns())
                .filter(|&i| !matches!(t.schema().field(i).name().as_str(), "token" | "context"))
                .collect();
            t.project(&keep).unwrap()
        };
        assert_eq!(drop(a), drop(b), "table {table} differs when replayed from stored features");
    }
}

/// All rows of a Parquet file as one record batch.
fn read_table(path: &Path) -> arrow::record_batch::RecordBatch {
    let file = std::fs::File::open(path).unwrap();
    let reader = parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder::try_new(file)
        .unwrap()
        .build()
        .unwrap();
    let batches: Vec<_> = reader.map(|b| b.unwrap()).collect();
    arrow::compute::concat_batches(&batches[0].schema(), &batches).unwrap()
}

/// An encoder that batches frames (here, until 700 rows have come) emits them later than they
/// came; with two workers the statistics must still count the stream in its order, so every
/// table equals the one-worker run's (exactly: the same tokens in the same order). Also with
/// checkpoints every 10 ms, where the encoder lets its waiting frames go at each cut.
#[test]
fn statistics_count_the_stream_in_order_when_the_encoder_batches_on_several_workers() {
    let Some(py) = python() else { return };
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    make_sae(&py, d);
    std::fs::copy(SAMPLE, d.join("acts.parquet")).unwrap();
    let toml = r#"
[sources.acts]
kind = "parquet"
path = "acts.parquet"
batch_rows = 100

[operators.enc]
kind = "sae_encode"
input = "acts"
sae = "sae"
device = "cpu"
max_batch = 700
max_delay_ms = 60000

[operators.stats]
kind = "feature_stats"
input = "enc"
window = 512
step = 256
top_k = 3

[sinks.stats]
kind = "parquet"
input = "stats"
path = "STATS"
"#;
    for workers in ["1", "2"] {
        run_pipeline(d, &toml.replace("STATS", &format!("stats_{workers}")), workers);
    }
    std::fs::write(d.join("ck.toml"), toml.replace("STATS", "stats_ck")).unwrap();
    let checkpoints = ["--checkpoint-dir", "ck", "--checkpoint-every", "0.01"];
    run_ok(d, &[&["run", "ck.toml", "-w", "2", "--quiet"][..], &checkpoints].concat());
    for table in ["windows", "features", "activation_histogram", "l0", "top_examples"] {
        let one = read_table(&d.join(format!("stats_1/{table}.parquet")));
        for run in ["stats_2", "stats_ck"] {
            let two = read_table(&d.join(format!("{run}/{table}.parquet")));
            assert_eq!(
                one, two,
                "table {table} of {run}: two workers counted the tokens in another order"
            );
        }
    }
}

#[test]
fn planted_shift_raises_exactly_the_expected_alerts() {
    let Some(py) = python() else { return };
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let sae = make_sae(&py, d);
    // From token 4096 on, every activation moves along feature 42's encoder direction: feature 42
    // then fires ~200x as often, the most affected other feature ~17x (the rule's bound is 50x).
    run_python(
        &py,
        "check_feature_stats.py",
        &[
            "shift",
            SAMPLE,
            &sae,
            d.join("shifted.parquet").to_str().unwrap(),
            "42",
            "4096",
            "3",
        ],
    );
    // The reconstruction SAE reconstructs everything but that direction: FVU ~0.014 before the
    // shift, ~0.27 after (the rule's bound is 0.1).
    run_python(&py, "check_feature_stats.py", &["complement_sae", &sae, &at(d, "csae"), "42"]);
    let toml = r#"
[sources.acts]
kind = "parquet"
path = "shifted.parquet"

[operators.enc]
kind = "sae_encode"
input = "acts"
sae = "sae"

[operators.stats]
kind = "feature_stats"
input = "enc"
window = 1024
top_k = 0

[[operators.stats.alerts]]
rule = "density_ratio"
above = 50.0
reference = "first_window"
min_count = 50

[operators.recon]
kind = "sae_reconstruct"
input = "acts"
sae = "csae"

[operators.quality]
kind = "token_stats"
input = "recon"
window = 1024

[[operators.quality.alerts]]
rule = "fvu_above"
above = FVU_BOUND

[sinks.features]
kind = "parquet"
input = "enc"
path = "features.parquet"

[sinks.metrics]
kind = "parquet"
input = "recon"
path = "metrics.parquet"

[sinks.stats]
kind = "parquet"
input = "stats"
path = "stats"

[sinks.quality]
kind = "parquet"
input = "quality"
path = "quality"
"#;
    run_pipeline(d, &toml.replace("FVU_BOUND", "0.1"), "2");
    let density_alerts = run_python(
        &py,
        "check_feature_stats.py",
        &[
            "features",
            &at(d, "features.parquet"),
            &at(d, "stats"),
            &at(d, "shifted.parquet"),
            r#"{"window": 1024, "top_k": 0, "alerts": [{"rule": "density_ratio", "above": 50.0, "reference": "first_window", "min_count": 50}]}"#,
        ],
    );
    let expected: Vec<String> = (5..=8).map(|w| format!("{} density_ratio 42", w * 1024)).collect();
    assert_eq!(alert_lines(&density_alerts), expected, "density alerts");
    let fvu_alerts = run_python(
        &py,
        "check_feature_stats.py",
        &[
            "scalars",
            &at(d, "metrics.parquet"),
            &at(d, "quality"),
            r#"{"window": 1024, "alerts": [{"rule": "fvu_above", "above": 0.1}]}"#,
        ],
    );
    let expected: Vec<String> = (5..=8).map(|w| format!("{} fvu_above -1", w * 1024)).collect();
    assert_eq!(alert_lines(&fvu_alerts), expected, "FVU alerts");
}

#[test]
fn bad_statistics_configs_are_clear_errors() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let base = r#"
[sources.acts]
kind = "synthetic_activations"
d_model = 16
features = 32
tokens = 64

[operators.norm]
kind = "normalize"
input = "acts"
method = "l2"
"#;
    std::fs::write(
        d.join("a.toml"),
        format!("{base}\n[operators.stats]\nkind = \"feature_stats\"\ninput = \"norm\"\n\n[sinks.s]\nkind = \"console\"\ninput = \"stats\"\n"),
    )
    .unwrap();
    let err = run_err(d, &["validate", "a.toml"]);
    assert!(err.contains("feature_stats reads a sparse feature stream"), "{err}");
    std::fs::write(
        d.join("b.toml"),
        format!("{base}\n[operators.q]\nkind = \"token_stats\"\ninput = \"norm\"\nwindow = 100\nstep = 30\n\n[sinks.s]\nkind = \"console\"\ninput = \"q\"\n"),
    )
    .unwrap();
    let err = run_err(d, &["validate", "b.toml"]);
    assert!(err.contains("token_stats reads token scalars"), "{err}");
}

#[test]
fn event_time_windows_match_numpy() {
    let Some(py) = python() else { return };
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    make_sae(&py, d);
    // ~10 ms between tokens, a 30 s pause (longer than the window: empty windows, then a skip),
    // and one token 1.5 s late.
    run_python(&py, "check_feature_stats.py", &["timed", SAMPLE, &at(d, "acts.parquet")]);
    // Panes closing before a token (and several at once, over the pause) on the GPU too.
    let runs = [("1", "cpu"), ("2", "cpu")]
        .into_iter()
        .chain(devices().contains(&"gpu").then_some(("1", "gpu")));
    for (workers, device) in runs {
        let toml = r#"
[sources.acts]
kind = "parquet"
path = "acts.parquet"
batch_rows = 256

[operators.enc]
kind = "sae_encode"
input = "acts"
sae = "sae"

[operators.stats]
kind = "feature_stats"
input = "enc"
device = "DEVICE"
window_unit = "s"
window = 4
step = 2
top_k = 0

[sinks.features]
kind = "parquet"
input = "enc"
path = "features.parquet"

[sinks.stats]
kind = "parquet"
input = "stats"
path = "stats"
"#
        .replace("DEVICE", device);
        run_pipeline(d, &toml, workers);
        run_python(
            &py,
            "check_feature_stats.py",
            &["time_windows", &at(d, "features.parquet"), &at(d, "stats"), "4", "2"],
        );
    }
    // Rows without event times cannot be put in time windows: a clear error naming the row.
    std::fs::write(
        d.join("untimed.toml"),
        format!(
            "[sources.acts]\nkind = \"parquet\"\npath = \"{SAMPLE}\"\n\n[operators.enc]\nkind = \"sae_encode\"\ninput = \"acts\"\nsae = \"sae\"\n\n\
             [operators.stats]\nkind = \"feature_stats\"\ninput = \"enc\"\nwindow_unit = \"ms\"\nwindow = 500\n\n\
             [sinks.s]\nkind = \"console\"\ninput = \"stats\"\n"
        ),
    )
    .unwrap();
    let err = run_err(d, &["run", "untimed.toml", "--quiet"]);
    assert!(
        err.contains("seq_id 0 pos 0") && err.contains("need rows with event times"),
        "{err}"
    );
}
