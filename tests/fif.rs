//! The `fif` source against `mne.io.read_raw_fif` on raw FIF files MNE writes in the test from a
//! bundled real EEG (magnetometers, gradiometers, EEG, EOG, ECG, stim and misc channels; float32,
//! int32 with calibrations, float64 split over 8 files, gzip-compressed and split (`.fif.gz`, `.fif-1.gz`),
//! acquisition skips; annotations, a
//! measurement date, a first sample of 1000): samples in fT, fT/cm and µV, names, types, units,
//! annotation and stim-event markers. Then broken and lying files as errors naming the file and
//! the field, and the MEG example.

mod common;

use std::path::{Path, PathBuf};

use common::{python, run_err, run_ok, run_python};

fn recording() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/data/eeg/mi_test.edf")
}

fn pipeline(fif: &str, extra: &str) -> String {
    format!(
        "[sources.rec]\nkind = \"fif\"\npath = \"{fif}\"\nchunk = 100\n{extra}\n\n\
         [sinks.out]\nkind = \"parquet\"\ninput = \"rec\"\npath = \"out.parquet\"\nmarkers = true\n"
    )
}

#[test]
fn every_sample_channel_and_marker_equals_mne_including_split_files() {
    let Some(py) = python() else { return };
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let names = run_python(
        &py,
        "check_fif.py",
        &["write", recording().to_str().unwrap(), d.to_str().unwrap()],
    );
    assert!(
        names.contains("double_raw-1.fif") && names.contains("gz_raw.fif-1.gz"),
        "{names}"
    );
    for f in [
        "single.fif",
        "int.fif",
        "double_raw.fif",
        "nodate.fif",
        "skips.fif",
        "gz_raw.fif.gz",
    ] {
        let fif = d.join(f);
        std::fs::write(d.join("p.toml"), pipeline(fif.to_str().unwrap(), "")).unwrap();
        run_ok(d, &["run", "p.toml", "--quiet"]);
        run_python(
            &py,
            "check_fif.py",
            &["check", fif.to_str().unwrap(), d.join("out.parquet").to_str().unwrap()],
        );
        std::fs::remove_file(d.join("out.parquet")).unwrap();
    }
}

#[test]
fn broken_files_are_errors_naming_the_file_and_field() {
    let Some(py) = python() else { return };
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    run_python(
        &py,
        "check_fif.py",
        &["write", recording().to_str().unwrap(), d.to_str().unwrap()],
    );
    let good = std::fs::read(d.join("single.fif")).unwrap();
    // A skip that claims 2^31 - 1 buffers (of 100 samples): zeros for 68 years at 100 Hz.
    let mut lying_skip = std::fs::read(d.join("skips.fif")).unwrap();
    let skip_tag: [u8; 12] = [0, 0, 1, 45, 0, 0, 0, 3, 0, 0, 0, 4]; // FIFF_DATA_SKIP, int, 4 bytes
    let at = lying_skip.windows(12).rposition(|w| w == skip_tag).expect("a skip tag") + 16;
    lying_skip[at..at + 4].copy_from_slice(&i32::MAX.to_be_bytes());
    let cases: Vec<(&str, Vec<u8>, &str)> = vec![
        ("lying_skip.fif", lying_skip, "samples, more than 4294967296 (corrupt)"),
        ("cut.fif", good[..good.len() / 2].to_vec(), "(truncated or not FIF)"),
        ("text.fif", b"not a fif file at all, just text".to_vec(), "not a FIF file"),
        ("empty.fif", Vec::new(), "not a FIF file"),
        (
            "cut.fif.gz",
            {
                let gz = std::fs::read(d.join("gz_raw.fif.gz")).unwrap();
                gz[..gz.len() / 2].to_vec()
            },
            "inflating the gzip-compressed file",
        ),
    ];
    for (name, bytes, expected) in cases {
        std::fs::write(d.join(name), bytes).unwrap();
        std::fs::write(d.join("p.toml"), pipeline(name, "")).unwrap();
        let err = run_err(d, &["run", "p.toml", "--quiet"]);
        assert!(
            err.contains("[sources.rec]") && err.contains(name) && err.contains(expected),
            "{name}: expected `{expected}` in:\n{err}"
        );
        assert!(!d.join("out.parquet").exists(), "{name}: an output was written");
    }
    // A split file that went missing.
    std::fs::remove_file(d.join("double_raw-3.fif")).unwrap();
    std::fs::write(d.join("p.toml"), pipeline("double_raw.fif", "")).unwrap();
    let err = run_err(d, &["run", "p.toml", "--quiet"]);
    assert!(
        err.contains("FIFF_REF_FILE_NAME: the next split file") && err.contains("double_raw-3.fif does not exist"),
        "{err}"
    );
    // A misspelt stim channel.
    std::fs::write(d.join("p.toml"), pipeline("single.fif", "stim_channel = \"STI 14\"")).unwrap();
    let err = run_err(d, &["validate", "p.toml"]);
    assert!(err.contains("no channel `STI 14`; did you mean `STI 014`?"), "{err}");
}

#[test]
fn the_bundled_meg_example_runs_with_magnetometers_and_gradiometers_in_their_units() {
    let examples = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples");
    let log = run_ok(&examples, &["run", "meg_bandpower.toml"]);
    assert!(log.contains("3 grad, 3 mag"), "{log}");
    let batches = common::read_parquet(&examples.join("out/meg_bandpower.parquet"));
    let rows: usize = batches.iter().map(|b| b.num_rows()).sum();
    assert_eq!(rows, 117, "one row per 0.5 s over 60 s, from the first full 2 s window");
    let file = std::fs::File::open(examples.join("out/meg_bandpower.parquet")).unwrap();
    let builder = parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder::try_new(file).unwrap();
    let units = builder
        .schema()
        .metadata()
        .get("neurostream.units")
        .cloned()
        .expect("units metadata");
    let units: Vec<String> = serde_json::from_str(&units).unwrap();
    assert_eq!(&units[..2], ["fT^2", "fT^2"]);
    assert_eq!(units[6], "(fT/cm)^2");
}
