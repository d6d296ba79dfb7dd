//! IIR filters against SciPy: Butterworth and notch designs equal `scipy.signal.butter(...,
//! output="sos")` / `iirnotch`; streaming filtering of real EEG equals `sosfilt` over the whole
//! signal whatever the chunk size; zero-phase equals `sosfiltfilt`; on the CPU and on wgpu.
//! The `hilbert` envelope and phase equal `scipy.signal.hilbert` per block.
//! Tolerances (max error / max |reference| per channel): CPU 1e-5 (float64 arithmetic, float32
//! samples), wgpu 2e-3 (float32 arithmetic through up to 8 sections, or sums over a block).

mod common;

use std::path::Path;

use common::{devices, python, run_ok, run_python};
use neurostream::operators::signal::{butter, notch, BandType};

const PSG: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/examples/data/eeg/short_psg.edf");
const BIOSEMI: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/examples/data/eeg/mne_test.bdf");

#[test]
fn butterworth_and_notch_designs_equal_scipy() {
    let Some(py) = python() else { return };
    let mut cases = Vec::new();
    for order in 1..=8 {
        for fs in [100.0, 250.0, 512.0, 1000.0] {
            let designs: [(BandType, Vec<f64>, &str); 4] = [
                (BandType::Lowpass, vec![fs * 0.2], "lowpass"),
                (BandType::Highpass, vec![0.5], "highpass"),
                (BandType::Bandpass, vec![8.0, 30.0], "bandpass"),
                (BandType::Bandstop, vec![fs * 0.18, fs * 0.22], "bandstop"),
            ];
            for (band, cutoff, name) in designs {
                let sos = butter(order, &cutoff, band, fs).unwrap();
                cases.push(
                    serde_json::json!({"kind": "butter", "order": order, "cutoff": cutoff, "btype": name, "fs": fs, "sos": sos}),
                );
            }
        }
    }
    for (f0, q, fs) in [
        (50.0, 30.0, 250.0),
        (60.0, 35.0, 1000.0),
        (100.0, 10.0, 512.0),
        (150.0, 30.0, 1000.0),
    ] {
        let sos = vec![notch(f0, q, fs).unwrap()];
        cases.push(serde_json::json!({"kind": "notch", "f0": f0, "q": q, "fs": fs, "sos": sos}));
    }
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("cases.json");
    std::fs::write(&path, serde_json::Value::Array(cases).to_string()).unwrap();
    run_python(&py, "check_filters.py", &["design", path.to_str().unwrap()]);
}

fn filter_pipeline(rec: &str, channels: &str, chunk: usize, op: &str, device: &str) -> String {
    format!(
        r#"
[sources.eeg]
kind = "edf"
path = "{rec}"
channels = {channels}
chunk = {chunk}

[operators.f]
input = "eeg"
device = "{device}"
{op}

[sinks.raw]
kind = "parquet"
input = "eeg"
path = "in.parquet"

[sinks.out]
kind = "parquet"
input = "f"
path = "out.parquet"
"#
    )
}

fn check(py: &Path, d: &Path, spec: &str, device: &str) {
    std::fs::write(d.join("spec.json"), spec).unwrap();
    let tol = if device == "gpu" { "2e-3" } else { "1e-5" };
    let s = |n: &str| d.join(n).to_string_lossy().to_string();
    run_python(
        py,
        "check_filters.py",
        &["filter", &s("in.parquet"), &s("out.parquet"), &s("spec.json"), tol],
    );
}

#[test]
fn causal_filters_equal_sosfilt_over_the_whole_signal_at_any_chunk_size() {
    let Some(py) = python() else { return };
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    for device in devices() {
        // Sleep EEG at 100 Hz: 4th-order 0.5-30 Hz band-pass (8 sections of poles near z = 1).
        for chunk in [7, 100, 3000] {
            let op = "kind = \"butterworth\"\nbtype = \"bandpass\"\norder = 4\ncutoff = [0.5, 30.0]";
            std::fs::write(
                d.join("p.toml"),
                filter_pipeline(PSG, r#"["EEG*", "EOG*"]"#, chunk, op, device),
            )
            .unwrap();
            run_ok(d, &["run", "p.toml", "--quiet"]);
            check(&py, d, r#"{"butter": [4, [0.5, 30.0], "bandpass"]}"#, device);
        }
        // 128-channel BioSemi at 512 Hz: 50 Hz notch with two harmonics, and a high-pass.
        let op = "kind = \"notch\"\nfreq = 50.0\nharmonics = 3\nq = 30.0";
        std::fs::write(
            d.join("p.toml"),
            filter_pipeline(BIOSEMI, r#"["A*", "B*", "C*", "D*"]"#, 32, op, device),
        )
        .unwrap();
        run_ok(d, &["run", "p.toml", "--quiet"]);
        check(&py, d, r#"{"notch": [50.0, 30.0, 3]}"#, device);
        let op = "kind = \"butterworth\"\nbtype = \"highpass\"\norder = 2\ncutoff = [1.0]";
        std::fs::write(d.join("p.toml"), filter_pipeline(BIOSEMI, r#"["A*"]"#, 64, op, device)).unwrap();
        run_ok(d, &["run", "p.toml", "--quiet"]);
        check(&py, d, r#"{"butter": [2, [1.0], "highpass"]}"#, device);
    }
}

#[test]
fn zero_phase_filters_equal_sosfiltfilt() {
    let Some(py) = python() else { return };
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    for device in devices() {
        let op = "kind = \"butterworth\"\nbtype = \"lowpass\"\norder = 5\ncutoff = [15.0]\nzero_phase = true";
        std::fs::write(d.join("p.toml"), filter_pipeline(PSG, r#"["EEG*"]"#, 250, op, device)).unwrap();
        run_ok(d, &["run", "p.toml", "--quiet"]);
        check(&py, d, r#"{"butter": [5, [15.0], "lowpass"], "zero_phase": true}"#, device);
        let op = "kind = \"notch\"\nfreq = 50.0\nzero_phase = true";
        std::fs::write(
            d.join("p.toml"),
            filter_pipeline(BIOSEMI, r#"["A1", "A2", "B*"]"#, 100, op, device),
        )
        .unwrap();
        run_ok(d, &["run", "p.toml", "--quiet"]);
        check(&py, d, r#"{"notch": [50.0, 30.0, 1], "zero_phase": true}"#, device);
    }
}

#[test]
fn fir_filters_equal_mne_designs_applied_causally() {
    let Some(py) = python() else { return };
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    for device in devices() {
        for (op, spec, expect_delay) in [
            (
                "l_freq = 8.0\nh_freq = 30.0",
                r#"{"fir": [8.0, 30.0]}"#,
                "845 taps; output delayed by 422 samples",
            ),
            ("h_freq = 40.0", r#"{"fir": [null, 40.0]}"#, "169 taps"),
            ("l_freq = 1.0", r#"{"fir": [1.0, null]}"#, "1691 taps"),
        ] {
            let op = format!("kind = \"fir\"\n{op}");
            std::fs::write(
                d.join("p.toml"),
                filter_pipeline(BIOSEMI, r#"["A1", "A2", "B7"]"#, 37, &op, device),
            )
            .unwrap();
            let log = run_ok(d, &["run", "p.toml"]);
            assert!(log.contains(expect_delay), "{log}");
            check(&py, d, spec, device);
        }
    }
}

#[test]
fn streamed_resampling_equals_resample_poly() {
    let Some(py) = python() else { return };
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    for device in devices() {
        // 512 Hz BioSemi to 256 Hz, 200 Hz (25/64) and 1024 Hz; sleep EEG 100 Hz to 128 Hz.
        for (rec, chunk, up, down) in [
            (BIOSEMI, 37, 1, 2),
            (BIOSEMI, 100, 25, 64),
            (BIOSEMI, 64, 2, 1),
            (PSG, 250, 32, 25),
        ] {
            let channels = if rec == BIOSEMI { r#"["A1", "B7"]"# } else { r#"["EEG*"]"# };
            let op = format!("kind = \"resample\"\nup = {up}\ndown = {down}");
            std::fs::write(d.join("p.toml"), filter_pipeline(rec, channels, chunk, &op, device)).unwrap();
            run_ok(d, &["run", "p.toml", "--quiet"]);
            check(&py, d, &format!(r#"{{"resample": [{up}, {down}]}}"#), device);
        }
    }
}

#[test]
fn hilbert_envelope_and_phase_equal_scipy_per_block() {
    let Some(py) = python() else { return };
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    for device in devices() {
        // Blocks straddling chunks; the whole 6 s BioSemi recording (3072 samples) as one block.
        for (rec, channels, chunk, block, output) in [
            (BIOSEMI, r#"["A1", "A2", "B7"]"#, 37, 0, "envelope"),
            (BIOSEMI, r#"["A1", "A2", "B7"]"#, 37, 500, "phase"),
            (PSG, r#"["EEG*"]"#, 250, 256, "envelope"),
        ] {
            let op = format!("kind = \"hilbert\"\nblock = {block}\noutput = \"{output}\"");
            std::fs::write(d.join("p.toml"), filter_pipeline(rec, channels, chunk, &op, device)).unwrap();
            run_ok(d, &["run", "p.toml", "--quiet"]);
            check(&py, d, &format!(r#"{{"hilbert": [{block}, "{output}"]}}"#), device);
        }
    }
}
