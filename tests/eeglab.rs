//! The `eeglab` source against MNE's reader (`mne.io.read_raw_eeglab`) on datasets written with
//! scipy.io.savemat the way EEGLAB lays them out (`tests/python/check_eeglab.py`): samples in a
//! `.fdt`; in the `.set` as single with the fields as variables (MAT v7 compressed, and v6 as
//! EEGLAB saves by default), as double (no chanlocs), as int16 (small), and as MNE exports it
//! (eeglabio): names, every sample and every event. A dataset written by EEGLAB in MATLAB (MNE's
//! testing data) against MNE too, and the MAT-file reader against `scipy.io.loadmat` on files
//! MATLAB wrote (v6 and v7: numbers, complex, 3-D, integers, text, structs, cells; sparse and
//! MCOS objects skipped). MATLAB v7.3 (HDF5): the same dataset saved by EEGLAB as v7.3, and the
//! v7.3 files MATLAB wrote beside the v7 ones (complex, cells, structs, sparse, strings), against
//! MNE and scipy's reading of their v7 twins; datasets written in MATLAB's layout with h5py and by
//! hdf5storage against MNE, and a v7.3 file of every value kind against its level-5 twin. Lying, truncated, damaged and unreadable datasets are errors naming the
//! file and the field.

mod common;

use std::io::Read;
use std::path::Path;

use common::{python, run_err, run_ok, run_python};
use neurostream_sources::eeglab::mat::{self, Numbers, Value};
use serde_json::json;

fn pipeline(set: &Path, extra: &str) -> String {
    format!(
        "[sources.rec]\nkind = \"eeglab\"\npath = \"{}\"\nchunk = 100\n{extra}\n\n\
         [sinks.out]\nkind = \"parquet\"\ninput = \"rec\"\npath = \"out.parquet\"\nmarkers = true\n",
        set.display()
    )
}

/// Runs `eeglab` on `variant` (with `extra` source keys) and checks it with `check_eeglab.py check`.
fn run_and_check(py: &Path, d: &Path, variant: &str, extra: &str, picked: Option<&str>) {
    let set = d.join(format!("{variant}.set"));
    std::fs::write(d.join("p.toml"), pipeline(&set, extra)).unwrap();
    run_ok(d, &["run", "p.toml", "--quiet"]);
    let out = d.join("out.parquet");
    let mut args = vec!["check", set.to_str().unwrap(), out.to_str().unwrap()];
    args.extend(picked);
    eprintln!("{}", run_python(py, "check_eeglab.py", &args));
    std::fs::remove_file(out).unwrap();
}

#[test]
fn every_sample_and_event_equals_mne_wherever_the_samples_are() {
    let Some(py) = python() else { return };
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let names = run_python(&py, "check_eeglab.py", &["write", d.to_str().unwrap()]);
    let variants = [
        "fdt",
        "fields_zlib",
        "fields_v6",
        "double_nochan",
        "int16_small",
        "mne_export",
    ];
    assert!(names.contains(&variants.join(" ")), "{names}");
    for variant in variants {
        run_and_check(&py, d, variant, "", None);
    }
    // Picked by label and pattern, in the order asked for.
    run_and_check(&py, d, "fdt", "channels = [\"VEOG\", \"?z\"]", Some("4,0,1,2,3"));
    // A renamed pair: the .set names `fdt.fdt`, which is gone; the .fdt beside it is read, as MNE does.
    std::fs::copy(d.join("fdt.set"), d.join("renamed.set")).unwrap();
    std::fs::rename(d.join("fdt.fdt"), d.join("renamed.fdt")).unwrap();
    run_and_check(&py, d, "renamed", "", None);
}

#[test]
fn matlab_v7_3_datasets_equal_mne() {
    let Some(py) = python() else { return };
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let names = run_python(&py, "check_eeglab.py", &["write73", d.to_str().unwrap()]);
    let variants = ["v73_fields", "v73_struct", "v73_double", "v73_hdf5storage"];
    assert!(names.contains(&variants.join(" ")), "{names}");
    for variant in variants {
        run_and_check(&py, d, variant, "", None);
    }
    run_and_check(&py, d, "v73_fields", "channels = [\"HEOG\", \"C?\"]", Some("4,2,3"));
    // Values of every kind, read from the v7.3 file, equal scipy's reading of their level-5 twin.
    let file = d.join("values73.mat");
    let read = mat::read(&file).unwrap_or_else(|e| panic!("{}: {e}", file.display()));
    let variables: Vec<serde_json::Value> = read.variables.iter().map(|(n, v)| json!([n, dump(v, &file)])).collect();
    assert_eq!(variables.len(), 12, "{variables:?}");
    let ours = d.join("ours.json");
    std::fs::write(&ours, serde_json::to_vec(&variables).unwrap()).unwrap();
    let twin = d.join("values73_v5.mat");
    eprintln!(
        "{}",
        run_python(
            &py,
            "check_eeglab.py",
            &["mat", twin.to_str().unwrap(), ours.to_str().unwrap()]
        )
    );
}

#[test]
fn lying_truncated_and_unreadable_datasets_are_errors_naming_the_file_and_field() {
    let Some(py) = python() else { return };
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    run_python(&py, "check_eeglab.py", &["write", d.to_str().unwrap()]);
    run_python(&py, "check_eeglab.py", &["lies", d.to_str().unwrap()]);
    let cases = [
        (
            "short_fdt",
            "short.fdt holds 39980 bytes, but `nbchan` 5 × `pnts` 2000 float32 take 40000 (truncated?)",
        ),
        (
            "nbchan_lie",
            "nbchan_lie.set: field `chanlocs` describes 5 channels, but `nbchan` is 6",
        ),
        ("epochs", "epochs.set: field `trials` is 2: the dataset holds epochs"),
        (
            "missing_fdt",
            "missing_fdt.set: field `data` names the data file `gone.fdt`: found neither",
        ),
        (
            "srate0",
            "srate0.set: field `srate` is 0, expected a sampling rate in Hz above 0",
        ),
        (
            "shape_lie",
            "shape_lie.set: field `data` is 4 × 16384, but `nbchan` × `pnts` is 4 × 16000",
        ),
        (
            "cut",
            "cut.set: variable 1 (byte 128) declares 657952 bytes, but the file has 328908 after its tag (truncated?)",
        ),
        (
            "v73",
            "v73.set: a MATLAB v7.3 MAT-file (HDF5) that cannot be read: invalid HDF5 magic bytes",
        ),
        ("text", "text.set: not a MAT-file of level 5"),
        (
            "v73_cut",
            "v73_cut.set: a MATLAB v7.3 MAT-file (HDF5) that cannot be read: unexpected end of data",
        ),
        ("v73_cycle", "v73_cycle.set: `EEG.chanlocs{1}{1}`: refers to an object"),
    ];
    for (name, message) in cases {
        let set = d.join(format!("{name}.set"));
        std::fs::write(d.join("p.toml"), pipeline(&set, "")).unwrap();
        let err = run_err(d, &["run", "p.toml", "--quiet"]);
        assert!(err.contains(message), "{name}: {err}");
        assert!(!d.join("out.parquet").exists(), "{name}: nothing is written");
    }
    // Damaged samples are found as they are read: the run fails naming the file and the sample.
    let set = d.join("v73_damaged.set");
    std::fs::write(d.join("p.toml"), pipeline(&set, "")).unwrap();
    let err = run_err(d, &["run", "p.toml", "--quiet"]);
    assert!(err.contains("v73_damaged.set: samples 1..1024: rows 0..20000"), "{err}");
    assert!(err.contains("chunk at offsets [4096, 0]"), "{err}");
}

#[test]
fn a_dataset_written_by_eeglab_in_matlab_equals_mne() {
    let Some(py) = python() else { return };
    // As MAT v6 and as MAT v7.3 (HDF5), both saved by EEGLAB.
    for name in ["eeglab_test_raw", "eeglab_test_raw_h5"] {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        let bundled = Path::new(env!("CARGO_MANIFEST_DIR")).join(format!("examples/data/eeg/{name}.set"));
        std::fs::copy(&bundled, d.join(format!("{name}.set"))).unwrap();
        // Shipped without its samples: the .fdt it names is written (noise of the right size).
        let wrote = run_python(
            &py,
            "check_eeglab.py",
            &["fdt", d.join(format!("{name}.set")).to_str().unwrap()],
        );
        assert!(wrote.contains("test_raw.fdt: 32 channels x 30504 samples"), "{wrote}");
        run_and_check(&py, d, name, "", None);
    }
}

/// neurostream's reading of a MATLAB value as JSON, for `check_eeglab.py mat` (NaN as null).
fn dump(value: &Value, file: &Path) -> serde_json::Value {
    match value {
        Value::Numeric {
            dims, complex, numbers, ..
        } => {
            let values: Vec<f64> = match numbers {
                Numbers::Loaded(v) => v.clone(),
                Numbers::InFile(payload) => {
                    let mut bytes = Vec::new();
                    payload.open(file).unwrap().read_to_end(&mut bytes).unwrap();
                    let width = payload.mi.bytes();
                    bytes
                        .chunks_exact(width)
                        .map(|b| payload.mi.decode(b, payload.big_endian))
                        .collect()
                }
            };
            json!({"dims": dims, "complex": complex, "values": values})
        }
        Value::Char(text) => json!({ "char": text }),
        Value::Struct { dims, fields, elements } => {
            let elements: Vec<Vec<serde_json::Value>> =
                elements.iter().map(|e| e.iter().map(|v| dump(v, file)).collect()).collect();
            json!({"dims": dims, "fields": fields, "elements": elements})
        }
        Value::Cell { dims, items } => {
            let cells: Vec<serde_json::Value> = items.iter().map(|v| dump(v, file)).collect();
            json!({"dims": dims, "cells": cells})
        }
        Value::Unsupported(what) => json!({ "unsupported": what }),
    }
}

#[test]
fn mat_files_written_by_matlab_read_as_scipy_reads_them() {
    let Some(py) = python() else { return };
    let dir = tempfile::tempdir().unwrap();
    let data = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/data");
    let mut files: Vec<_> = std::fs::read_dir(data.join("matlab"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "mat"))
        .collect();
    files.sort();
    assert_eq!(files.len(), 11, "{files:?}");
    files.push(data.join("eeg/eeglab_test_raw.set"));
    for file in files {
        // scipy does not read v7.3 files: a v7.3 file is compared with its v7 twin.
        let name = file.file_name().unwrap().to_str().unwrap();
        let reference = match name.strip_suffix("v73.mat") {
            Some(stem) => file.with_file_name(format!("{stem}v7.mat")),
            None => file.clone(),
        };
        let read = mat::read(&file).unwrap_or_else(|e| panic!("{}: {e}", file.display()));
        let variables: Vec<serde_json::Value> = read.variables.iter().map(|(n, v)| json!([n, dump(v, &file)])).collect();
        let ours = dir.path().join("ours.json");
        std::fs::write(&ours, serde_json::to_vec(&variables).unwrap()).unwrap();
        eprintln!(
            "{}",
            run_python(
                &py,
                "check_eeglab.py",
                &["mat", reference.to_str().unwrap(), ours.to_str().unwrap()]
            )
        );
    }
}
