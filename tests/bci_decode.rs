//! CSP + LDA decoding against MNE and scikit-learn. No labelled motor-imagery recording is
//! available offline, so `bci_reference.py make` builds one: real EEG background (the bundled
//! Sleep-EDF recording, mixed into 8 channels) with planted class-dependent 9-13 Hz power drops,
//! 24 trials to train on and 24 held out, as EDF+ files with annotations. `neurostream bci train`
//! fits on the first; the `decode` operator applies the model to the held-out epochs (CPU and
//! wgpu); the reference fits `mne.decoding.CSP` + `LinearDiscriminantAnalysis(solver="lsqr",
//! shrinkage="auto")` on the same epochs. CSP features agree within 1e-3 (log power),
//! probabilities within 1e-3, and the held-out accuracy is the same.

mod common;

use std::path::Path;

use common::{python, run_err, run_ok, run_python};

const PSG: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/examples/data/eeg/short_psg.edf");

fn decode_pipeline(device: &str, windows: &str, out: &str) -> String {
    format!(
        r#"
[sources.rec]
kind = "edf"
path = "test.edf"
chunk = 32

[operators.band]
kind = "butterworth"
input = "rec"
cutoff = [8.0, 30.0]

[operators.dec]
kind = "decode"
input = "band"
device = "{device}"
model = "model.json"
{windows}

[sinks.out]
kind = "parquet"
input = "dec"
path = "{out}"
markers = true
"#
    )
}

#[test]
fn csp_lda_trained_and_applied_by_the_engine_equals_mne_and_scikit_learn() {
    let Some(py) = python() else { return };
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let s = |p: &Path| p.to_string_lossy().to_string();
    run_python(&py, "bci_reference.py", &["make", PSG, &s(d), "1"]);
    let log = run_ok(
        d,
        &[
            "bci",
            "train",
            "--input",
            "train.edf",
            "--classes",
            "left",
            "right",
            "--tmin",
            "0.5",
            "--tmax",
            "3.5",
            "--out",
            "model.json",
        ],
    );
    assert!(log.contains("fitted CSP (4 filters) + LDA on 24 epochs"), "{log}");
    let devices: &[&str] = if std::env::var("NEUROSTREAM_SKIP_GPU_TESTS").is_ok_and(|v| v == "1") {
        &["cpu"]
    } else {
        &["cpu", "gpu"]
    };
    for device in devices {
        let epochs = "epochs = [\"left\", \"right\"]\ntmin = 0.5\ntmax = 3.5";
        std::fs::write(d.join("dec.toml"), decode_pipeline(device, epochs, "dec.parquet")).unwrap();
        run_ok(d, &["run", "dec.toml", "--quiet"]);
        run_python(
            &py,
            "bci_reference.py",
            &["check", &s(d), &s(&d.join("dec.parquet")), "0.5", "3.5", "4"],
        );
    }
    // Online: a decision every 100 ms over the last second, from the first full second on.
    std::fs::write(
        d.join("online.toml"),
        decode_pipeline("cpu", "window_s = 1.0\nstep_s = 0.1", "online.parquet"),
    )
    .unwrap();
    run_ok(d, &["run", "online.toml", "--quiet"]);
    let rows: usize = common::read_parquet(&d.join("online.parquet"))
        .iter()
        .map(|b| b.num_rows())
        .sum();
    assert_eq!(rows, (15_000 - 100) / 10 + 1);
    // A model whose channels the stream lacks is refused at start, naming the channel.
    let model = std::fs::read_to_string(d.join("model.json"))
        .unwrap()
        .replace("\"C3\"", "\"Cz\"");
    std::fs::write(d.join("model.json"), model).unwrap();
    let e = run_err(d, &["run", "online.toml"]);
    assert!(e.contains("the model needs channel `Cz`"), "{e}");
}

#[test]
fn the_motor_imagery_example_decodes_the_bundled_recording_with_the_bundled_model() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples");
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    std::fs::create_dir_all(d.join("data/eeg")).unwrap();
    std::fs::create_dir_all(d.join("data/bci")).unwrap();
    std::fs::copy(root.join("data/eeg/mi_test.edf"), d.join("data/eeg/mi_test.edf")).unwrap();
    std::fs::copy(root.join("data/bci/mi_model.json"), d.join("data/bci/mi_model.json")).unwrap();
    // As fast as possible (the example paces at 10x real time), on a free port, without the LSL
    // outlet (LSL announces itself on the network; tests/lsl.rs covers it in a namespace).
    let full = std::fs::read_to_string(root.join("bci_motor_imagery.toml")).unwrap();
    let toml = full[..full.find("[sinks.outlet]").expect("the example publishes to LSL")]
        .replace("speed = 10.0", "speed = 0.0")
        .replace("127.0.0.1:7072", "127.0.0.1:0");
    std::fs::write(d.join("mi.toml"), toml).unwrap();
    let log = run_ok(d, &["run", "mi.toml"]);
    assert!(
        log.contains("latency sinks.decisions: arrival to written, 1481 frames"),
        "{log}"
    );
    let rows: usize = common::read_parquet(&d.join("out/mi_decisions.parquet"))
        .iter()
        .map(|b| b.num_rows())
        .sum();
    assert_eq!(rows, 1481, "a decision every 100 ms from 2 s on over 150 s");
}
