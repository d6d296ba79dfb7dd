//! The `xdf` source against pyxdf on recordings written here to the XDF specification from a
//! bundled real EEG (float32 with time stamps only on each chunk's first sample, double64 in
//! volts, int16; linear clock drift on the EEG host, a constant offset on the marker host, an
//! unrelated stream, boundaries, footers, 1/4/8-byte chunk lengths; gzip-compressed as `.xdfz`):
//! samples, labels, units, types and markers, and `inspect`. Then truncated and lying files as
//! errors naming the file and the field, and the bundled XDF example.

mod common;

use std::path::{Path, PathBuf};

use common::{python, run_err, run_ok, run_python};

fn recording() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/data/eeg/mi_test.edf")
}

fn pipeline(xdf: &str, extra: &str) -> String {
    format!(
        "[sources.rec]\nkind = \"xdf\"\npath = \"{xdf}\"\nchunk = 100\n{extra}\n\n\
         [sinks.out]\nkind = \"parquet\"\ninput = \"rec\"\npath = \"out.parquet\"\nmarkers = true\n"
    )
}

#[test]
fn every_sample_and_marker_equals_pyxdf_with_clock_offsets_applied() {
    let Some(py) = python() else { return };
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let names = run_python(
        &py,
        "check_xdf.py",
        &["write", recording().to_str().unwrap(), d.to_str().unwrap()],
    );
    let line = names
        .lines()
        .find(|l| l.starts_with("float32"))
        .expect("the variants written");
    let picks = ["", "stream = \"EEG-amp\"", "type = \"EEG\"\nmarkers = [\"Markers\"]", ""];
    let files = line
        .split_whitespace()
        .map(|v| format!("{v}.xdf"))
        .chain(["float32.xdfz".to_string()]);
    for (file, pick) in files.zip(picks) {
        let xdf = d.join(file);
        std::fs::write(d.join("p.toml"), pipeline(xdf.to_str().unwrap(), pick)).unwrap();
        run_ok(d, &["run", "p.toml", "--quiet"]);
        run_python(
            &py,
            "check_xdf.py",
            &[
                "check",
                xdf.to_str().unwrap(),
                d.join("out.parquet").to_str().unwrap(),
                "EEG-amp",
            ],
        );
        std::fs::remove_file(d.join("out.parquet")).unwrap();
        // `inspect` lists the file's streams as pyxdf reads them.
        let text = run_ok(d, &["inspect", xdf.to_str().unwrap()]);
        std::fs::write(d.join("inspect.txt"), text).unwrap();
        run_python(
            &py,
            "check_xdf.py",
            &["inspect", xdf.to_str().unwrap(), d.join("inspect.txt").to_str().unwrap()],
        );
    }
}

#[test]
fn truncated_and_lying_files_are_errors_naming_the_file_and_field() {
    let Some(py) = python() else { return };
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    run_python(
        &py,
        "check_xdf.py",
        &["write", recording().to_str().unwrap(), d.to_str().unwrap()],
    );
    let good = std::fs::read(d.join("float32.xdf")).unwrap();
    let mut cases: Vec<(&str, Vec<u8>, &str, &str)> = vec![
        ("cut.xdf", good[..good.len() * 2 / 3].to_vec(), "", "claims"),
        (
            "magic.xdf",
            b"XDX:".iter().chain(&good[4..]).copied().collect(),
            "",
            "does not start with `XDF:`",
        ),
        (
            "format.xdf",
            String::from_utf8_lossy(&good)
                .replacen(
                    "<channel_format>float32</channel_format>",
                    "<channel_format>float16</channel_format>",
                    1,
                )
                .into_bytes(),
            "",
            "StreamHeader of stream 1: channel_format `float16`",
        ),
        (
            "name.xdf",
            good.clone(),
            "stream = \"EEG-ampp\"",
            "no stream named `EEG-ampp`; did you mean `EEG-amp`?",
        ),
        (
            "strings.xdf",
            good.clone(),
            "stream = \"Markers\"",
            "stream `Markers` holds strings",
        ),
    ];
    // A clock offset that is not a number.
    let mut nan = good.clone();
    let at = (0..nan.len() - 23)
        .find(|&i| nan[i] == 1 && nan[i + 1] == 22 && nan[i + 2] == 4 && nan[i + 3] == 0)
        .expect("a ClockOffset chunk");
    nan[at + 16..at + 24].copy_from_slice(&f64::NAN.to_le_bytes());
    cases.push(("nan.xdf", nan, "", "ClockOffset of stream 1: not finite"));
    for (name, bytes, extra, expected) in cases {
        std::fs::write(d.join(name), bytes).unwrap();
        std::fs::write(d.join("p.toml"), pipeline(name, extra)).unwrap();
        let err = run_err(d, &["run", "p.toml", "--quiet"]);
        assert!(
            err.contains("[sources.rec]") && err.contains(name) && err.contains(expected),
            "{name}: expected `{expected}` in:\n{err}"
        );
        assert!(!d.join("out.parquet").exists(), "{name}: an output was written");
    }
    // A recorder that died mid-chunk: readable up to the last whole chunk when asked.
    std::fs::write(d.join("p.toml"), pipeline("cut.xdf", "allow_truncated = true")).unwrap();
    let log = run_ok(d, &["run", "p.toml"]);
    assert!(log.contains("reading up to the last whole chunk"), "{log}");
}

#[test]
fn the_bundled_xdf_replay_example_runs() {
    let examples = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples");
    let log = run_ok(&examples, &["run", "xdf_replay.toml"]);
    assert!(log.contains("done in"), "{log}");
    let t = common::read_parquet(&examples.join("out/xdf_alpha.parquet"));
    let rows: usize = t.iter().map(|b| b.num_rows()).sum();
    assert!(rows > 100, "{rows} rows");
}
