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

/// The model records the units it was fitted on (µV): input in millivolts is converted (the
/// same decisions), input in another quantity is refused naming the channel and both units;
/// the same for a normalization statistics file that states its units.
#[test]
fn a_model_fitted_in_microvolts_converts_millivolt_input_and_refuses_other_quantities() {
    let Some(py) = python() else { return };
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let examples = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples");
    let model = examples.join("data/bci/mi_model.json");
    std::fs::write(
        d.join("raw.toml"),
        format!(
            "[sources.rec]\nkind = \"edf\"\npath = \"{}\"\n\n[sinks.out]\nkind = \"parquet\"\ninput = \"rec\"\npath = \"uV.parquet\"\n",
            examples.join("data/eeg/mi_test.edf").display()
        ),
    )
    .unwrap();
    run_ok(d, &["run", "raw.toml", "--quiet"]);
    let s = |n: &str| d.join(n).to_string_lossy().to_string();
    run_python(
        &py,
        "units.py",
        &["rescale", &s("uV.parquet"), &s("mV.parquet"), "0.001", "mV"],
    );
    run_python(
        &py,
        "units.py",
        &["rescale", &s("uV.parquet"), &s("degC.parquet"), "1", "degC"],
    );
    let decode = |input: &str, out: &str| {
        format!(
            "[sources.rec]\nkind = \"parquet\"\npath = \"{input}\"\n\n[operators.dec]\nkind = \"decode\"\ninput = \"rec\"\n\
             model = \"{}\"\nwindow_s = 2.0\nstep_s = 0.5\n\n[sinks.out]\nkind = \"parquet\"\ninput = \"dec\"\npath = \"{out}\"\n",
            model.display()
        )
    };
    std::fs::write(d.join("a.toml"), decode("uV.parquet", "dec_uV.parquet")).unwrap();
    std::fs::write(d.join("b.toml"), decode("mV.parquet", "dec_mV.parquet")).unwrap();
    run_ok(d, &["run", "a.toml", "--quiet"]);
    run_ok(d, &["run", "b.toml", "--quiet"]);
    run_python(
        &py,
        "units.py",
        &[
            "same",
            &s("dec_uV.parquet"),
            &s("dec_mV.parquet"),
            "p:left,p:right,csp0",
            "1e-3",
        ],
    );
    std::fs::write(d.join("c.toml"), decode("degC.parquet", "dec_degC.parquet")).unwrap();
    let err = run_err(d, &["validate", "c.toml"]);
    assert!(
        err.contains("was fitted on channel `C1` in `uV`, but the input's `C1` is in `degC`: not convertible"),
        "{err}"
    );
    // Statistics stating their units: the same conversion and refusal.
    let stats = |unit: &str, scale: f64| {
        format!(
            r#"{{"mean": [{m}, {m}, {m}, {m}, {m}, {m}, {m}, {m}], "std": [{v}, {v}, {v}, {v}, {v}, {v}, {v}, {v}], "units": ["{unit}", "{unit}", "{unit}", "{unit}", "{unit}", "{unit}", "{unit}", "{unit}"]}}"#,
            m = 2.0 * scale,
            v = 10.0 * scale
        )
    };
    std::fs::write(d.join("stats_uV.json"), stats("uV", 1.0)).unwrap();
    std::fs::write(d.join("stats_V.json"), stats("V", 1e-6)).unwrap();
    std::fs::write(d.join("stats_T.json"), stats("T", 1.0)).unwrap();
    let norm = |stats: &str, out: &str| {
        format!(
            "[sources.rec]\nkind = \"parquet\"\npath = \"mV.parquet\"\n\n[operators.z]\nkind = \"normalize\"\ninput = \"rec\"\n\
             method = \"fixed\"\nstats = \"{stats}\"\n\n[sinks.out]\nkind = \"parquet\"\ninput = \"z\"\npath = \"{out}\"\n"
        )
    };
    std::fs::write(d.join("n1.toml"), norm("stats_uV.json", "z_uV.parquet")).unwrap();
    std::fs::write(d.join("n2.toml"), norm("stats_V.json", "z_V.parquet")).unwrap();
    run_ok(d, &["run", "n1.toml", "--quiet"]);
    run_ok(d, &["run", "n2.toml", "--quiet"]);
    run_python(
        &py,
        "units.py",
        &["same", &s("z_uV.parquet"), &s("z_V.parquet"), "C1,C4", "1e-4"],
    );
    std::fs::write(d.join("n3.toml"), norm("stats_T.json", "z_T.parquet")).unwrap();
    let err = run_err(d, &["validate", "n3.toml"]);
    assert!(
        err.contains("was fitted on channel `C1` in `T`, but the input's `C1` is in `mV`"),
        "{err}"
    );
}
