//! `bandpower` against `scipy.signal.welch` + band sums on real recordings, CPU and wgpu:
//! 30 s sleep epochs of the Sleep-EDF PSG labelled with the hypnogram's stages (absolute and
//! relative power), and baseline-corrected epochs around BioSemi markers with peak-to-peak
//! rejection. Tolerance: max |error| / max |reference| per output column ≤ 1e-5 (CPU, float64
//! FFT) or 1e-3 (wgpu, float32 DFT as a GEMM).

mod common;

use std::path::Path;

use common::{devices, python, run_ok, run_python};

const EEG: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/examples/data/eeg");

fn check(py: &Path, d: &Path, spec: &str, device: &str) {
    std::fs::write(d.join("spec.json"), spec).unwrap();
    let tol = if device == "gpu" { "1e-3" } else { "1e-5" };
    let s = |n: &str| d.join(n).to_string_lossy().to_string();
    run_python(
        py,
        "check_bandpower.py",
        &[&s("in.parquet"), &s("out.parquet"), &s("spec.json"), tol],
    );
}

#[test]
fn sleep_epochs_band_power_equals_scipy_welch_with_hypnogram_stages() {
    let Some(py) = python() else { return };
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    for device in devices() {
        let toml = format!(
            r#"
[sources.psg]
kind = "edf"
path = "{EEG}/short_psg.edf"
annotations = "{EEG}/SC4001EC-Hypnogram.edf"
channels = ["EEG Fpz-Cz", "EEG Pz-Oz"]
chunk = 128

[operators.bp]
kind = "bandpower"
input = "psg"
device = "{device}"
window_s = 30.0
label_from_markers = true
relative = true

[sinks.raw]
kind = "parquet"
input = "psg"
path = "in.parquet"
markers = true

[sinks.out]
kind = "parquet"
input = "bp"
path = "out.parquet"
markers = true
"#
        );
        std::fs::write(d.join("p.toml"), toml).unwrap();
        run_ok(d, &["run", "p.toml", "--quiet"]);
        // The excerpt lies in the hypnogram's first span (Sleep stage W, 0-30630 s).
        let labels: String = (1..=10)
            .map(|k| format!("\"{}\": \"Sleep stage W\"", k * 3000 - 1))
            .collect::<Vec<_>>()
            .join(", ");
        let spec = format!(
            r#"{{"window": 3000, "step": 3000, "nperseg": 256, "noverlap": 128, "relative": true,
                "bands": [["delta", 0.5, 4.0], ["theta", 4.0, 8.0], ["alpha", 8.0, 12.0], ["sigma", 12.0, 15.0], ["beta", 15.0, 30.0]],
                "labels": {{{labels}}}}}"#
        );
        check(&py, d, &spec, device);
    }
}

#[test]
fn baseline_corrected_epochs_around_markers_equal_scipy_welch() {
    let Some(py) = python() else { return };
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    for device in devices() {
        for reject in ["", "reject_ptp = 120.0"] {
            let toml = format!(
                r#"
[sources.eeg]
kind = "edf"
path = "{EEG}/mne_test.bdf"
channels = ["A1", "A2", "A3", "B5", "C7"]
chunk = 50

[operators.bp]
kind = "bandpower"
input = "eeg"
device = "{device}"
epochs = ["type A", "type B"]
tmin = -0.1
tmax = 0.5
baseline = [-0.1, 0.0]
nperseg = 128
bands = [["theta", 4.0, 8.0], ["alpha", 8.0, 13.0], ["beta", 13.0, 30.0]]
{reject}

[sinks.raw]
kind = "parquet"
input = "eeg"
path = "in.parquet"
markers = true

[sinks.out]
kind = "parquet"
input = "bp"
path = "out.parquet"
markers = true
"#
            );
            std::fs::write(d.join("p.toml"), toml).unwrap();
            let log = run_ok(d, &["run", "p.toml"]);
            let reject_json = if reject.is_empty() { "null" } else { "120.0" };
            if !reject.is_empty() {
                assert!(log.contains("epochs rejected (peak-to-peak)"), "{log}");
            }
            let spec = format!(
                r#"{{"epochs": ["type A", "type B"], "start": -51, "length": 308, "baseline": [-51, 0], "reject": {reject_json},
                    "nperseg": 128, "noverlap": 64, "relative": false,
                    "bands": [["theta", 4.0, 8.0], ["alpha", 8.0, 13.0], ["beta", 13.0, 30.0]]}}"#
            );
            check(&py, d, &spec, device);
        }
    }
}

#[test]
fn the_sleep_bandpower_example_runs_on_the_bundled_recording() {
    use arrow::array::{Array, AsArray};
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    std::fs::create_dir_all(d.join("data/eeg")).unwrap();
    for f in ["short_psg.edf", "SC4001EC-Hypnogram.edf"] {
        std::fs::copy(root.join("examples/data/eeg").join(f), d.join("data/eeg").join(f)).unwrap();
    }
    std::fs::copy(root.join("examples/sleep_bandpower.toml"), d.join("sleep_bandpower.toml")).unwrap();
    run_ok(d, &["run", "sleep_bandpower.toml", "--quiet"]);
    let batches = common::read_parquet(&d.join("out/sleep_bandpower.parquet"));
    let rows: usize = batches.iter().map(|b| b.num_rows()).sum();
    assert_eq!(rows, 10, "one row per 30 s epoch of the 300 s excerpt");
    for b in &batches {
        let m = b.column_by_name("marker").unwrap().as_string::<i32>();
        assert!((0..m.len()).all(|r| m.is_valid(r) && m.value(r) == "Sleep stage W"));
        assert_eq!(
            b.num_columns(),
            3 + 2 * 5 * 2,
            "time, sample, marker + 2 channels × 5 bands × (abs, rel)"
        );
    }
}
