//! Drift scores against scikit-learn and pyRiemann, CPU and wgpu:
//! - `mahalanobis` on the bundled SmolLM2 activations, reference = the first 400 rows (a stream
//!   window) or a Parquet file: squared distances equal `LedoitWolf().mahalanobis` within 1e-4
//!   (CPU) / 2e-3 (wgpu, float32 products), relative to the largest; a `token_stats` alert on
//!   the windowed mean distance fires exactly where the sklearn distances say it should;
//! - `riemann_potato` on motor-imagery EEG: distances to the reference mean and z-scores equal
//!   pyRiemann's Potato within 1e-6 (CPU) / 1e-3 (wgpu);
//! - a rank-deficient covariance (average reference) is an error naming the window, and
//!   `regularization` makes it usable.

mod common;

use common::{devices, python, run_err, run_ok, run_python};

const ACTS: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/examples/data/smollm2_l15_sample.parquet");
const EEG: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/examples/data/eeg");

#[test]
fn mahalanobis_equals_scikit_learn_ledoit_wolf_and_alerts_fire_on_window_means() {
    let Some(py) = python() else { return };
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    for device in devices() {
        for (case, reference, ref_rows) in [
            ("window", "reference_rows = 400", "400"),
            ("file", "reference = \"ACTS\"", "0"),
        ] {
            let reference = reference.replace("ACTS", ACTS);
            let out = format!("{device}_{case}");
            let toml = format!(
                r#"
[sources.acts]
kind = "parquet"
path = "{ACTS}"
batch_rows = 128

[operators.ood]
kind = "mahalanobis"
input = "acts"
device = "{device}"
{reference}

[operators.watch]
kind = "token_stats"
input = "ood"
window = 200

[[operators.watch.alerts]]
rule = "mean_above"
column = "mahalanobis"
above = 24.0

[sinks.scores]
kind = "parquet"
input = "ood"
path = "{out}/scores.parquet"

[sinks.stats]
kind = "parquet"
input = "watch"
path = "{out}"
"#
            );
            std::fs::write(d.join("p.toml"), toml).unwrap();
            run_ok(d, &["run", "p.toml", "--quiet"]);
            std::fs::write(d.join(&out).join("bound.txt"), "24.0").unwrap();
            let tol = if device == "gpu" { "2e-3" } else { "1e-4" };
            eprintln!("[{device} {case}]");
            run_python(
                &py,
                "check_drift.py",
                &["mahalanobis", ACTS, &d.join(&out).to_string_lossy(), ref_rows, tol],
            );
        }
    }
}

fn potato_pipeline(device: &str, extra: &str) -> String {
    format!(
        r#"
[sources.mi]
kind = "edf"
path = "{EEG}/mi_train.edf"
chunk = 50

{extra}

[operators.potato]
kind = "riemann_potato"
input = "SIGNAL"
device = "{device}"
window_s = 2.0
step_s = 1.0
reference_windows = 40
threshold = 2.0

[sinks.raw]
kind = "parquet"
input = "SIGNAL"
path = "raw.parquet"

[sinks.out]
kind = "parquet"
input = "potato"
path = "{device}.parquet"
"#
    )
}

#[test]
fn riemann_potato_equals_pyriemann() {
    let Some(py) = python() else { return };
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let spec = r#"{"fs": 100.0, "window_s": 2.0, "step_s": 1.0, "reference_windows": 40, "threshold": 2.0}"#;
    std::fs::write(d.join("spec.json"), spec).unwrap();
    for device in devices() {
        std::fs::write(d.join("p.toml"), potato_pipeline(device, "").replace("SIGNAL", "mi")).unwrap();
        run_ok(d, &["run", "p.toml", "--quiet"]);
        let tol = if device == "gpu" { "1e-3" } else { "1e-6" };
        let s = |n: &str| d.join(n).to_string_lossy().to_string();
        eprintln!("[{device}]");
        run_python(
            &py,
            "check_drift.py",
            &[
                "potato",
                &s("raw.parquet"),
                &s(&format!("{device}.parquet")),
                &s("spec.json"),
                tol,
            ],
        );
    }
}

#[test]
fn rank_deficient_covariance_is_an_error_unless_regularized() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let car = "[operators.car]\nkind = \"reref\"\ninput = \"mi\"\nmethod = \"average\"";
    std::fs::write(d.join("p.toml"), potato_pipeline("cpu", car).replace("SIGNAL", "car")).unwrap();
    let err = run_err(d, &["run", "p.toml", "--quiet"]);
    assert!(
        err.contains("is not positive definite") && err.contains("window ending at sample"),
        "{err}"
    );
    let fixed = potato_pipeline("cpu", car)
        .replace("SIGNAL", "car")
        .replace("threshold = 2.0", "threshold = 2.0\nregularization = 1e-3");
    std::fs::write(d.join("p.toml"), fixed).unwrap();
    run_ok(d, &["run", "p.toml", "--quiet"]);
    assert_eq!(common::row_count(&d.join("cpu.parquet")), 149);
}
