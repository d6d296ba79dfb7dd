//! The `gdf` source against MNE's reader (`mne.io.read_raw_gdf`) on GDF 1.25, 2.10 and 2.20 files
//! written byte by byte in the test (int16, int32 and float32 data; µV and mV; event tables of
//! modes 1 and 3): names, every sample and every event. A file MNE cannot read (a type per
//! channel, two rates) against the values written; lying and truncated files as errors naming
//! the file and the field.

mod common;

use std::path::Path;

use common::{python, run_err, run_ok, run_python};

fn pipeline(gdf: &Path, extra: &str) -> String {
    format!(
        "[sources.rec]\nkind = \"gdf\"\npath = \"{}\"\nchunk = 100\n{extra}\n\n\
         [sinks.out]\nkind = \"parquet\"\ninput = \"rec\"\npath = \"out.parquet\"\nmarkers = true\n",
        gdf.display()
    )
}

/// Runs `gdf` (with `extra` source keys) and checks the output with `check_gdf.py check`.
fn run_and_check(py: &Path, d: &Path, variant: &str, extra: &str, against: &[&str]) {
    let gdf = d.join(format!("{variant}.gdf"));
    std::fs::write(d.join("p.toml"), pipeline(&gdf, extra)).unwrap();
    run_ok(d, &["run", "p.toml", "--quiet"]);
    let out = d.join("out.parquet");
    let mut args = vec!["check", gdf.to_str().unwrap(), out.to_str().unwrap()];
    args.extend(against);
    eprintln!("{}", run_python(py, "check_gdf.py", &args));
    std::fs::remove_file(out).unwrap();
}

#[test]
fn every_sample_and_event_equals_mne_on_gdf_1_and_2_files() {
    let Some(py) = python() else { return };
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let names = run_python(&py, "check_gdf.py", &["write", d.to_str().unwrap()]);
    assert!(names.contains("gdf1_int16 gdf2_float32 gdf2_int32_mV"), "{names}");
    for variant in ["gdf1_int16", "gdf2_float32", "gdf2_int32_mV"] {
        run_and_check(&py, d, variant, "", &["mne"]);
    }
}

#[test]
fn a_type_per_channel_and_channels_of_another_rate_are_read_as_written() {
    let Some(py) = python() else { return };
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    run_python(&py, "check_gdf.py", &["write", d.to_str().unwrap()]);
    // By default the three 200 Hz channels (int16, float64, uint8); `Resp` (100 Hz) is left out.
    run_and_check(&py, d, "gdf2_mixed", "", &["npy", "0,1,2"]);
    // Picked by pattern, in the order asked for.
    run_and_check(&py, d, "gdf2_mixed", "channels = [\"Trigger\", \"EEG-*\"]", &["npy", "2,0,1"]);
    let gdf = d.join("gdf2_mixed.gdf");
    std::fs::write(d.join("p.toml"), pipeline(&gdf, "channels = [\"EEG-A\", \"Resp\"]")).unwrap();
    let err = run_err(d, &["validate", "p.toml"]);
    assert!(
        err.contains("gdf2_mixed.gdf: the channels asked for have different sampling rates: EEG-A (200 Hz), Resp (100 Hz)"),
        "{err}"
    );
}

#[test]
fn lying_and_truncated_files_are_errors_naming_the_file_and_field() {
    let Some(py) = python() else { return };
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    run_python(&py, "check_gdf.py", &["write", d.to_str().unwrap()]);
    run_python(&py, "check_gdf.py", &["lies", d.to_str().unwrap()]);
    let cases = [
        (
            "truncated",
            "truncated.gdf: the header declares 12 data records of 2500 bytes, but the file holds 27600",
        ),
        ("not_gdf", "not_gdf.gdf: not a GDF file (its version field is `EDF 1.00`)"),
        (
            "float128",
            "float128.gdf: header field `data type`: signal 2 (`EEG-C3`): GDF type 18 is not read",
        ),
        (
            "flat_scale",
            "flat_scale.gdf: header field `digital minimum/maximum`: signal 2 (`EEG-C3`): digital 32767 to 32767",
        ),
        (
            "lying_events",
            "lying_events.gdf: event table: 100000000 events need 600000000 bytes",
        ),
        ("event_mode", "event_mode.gdf: event table mode 7 (GDF defines 1 and 3)"),
        ("many_signals", "many_signals.gdf: header field `number of signals`: 1000000"),
    ];
    for (name, message) in cases {
        let gdf = d.join(format!("{name}.gdf"));
        std::fs::write(d.join("p.toml"), pipeline(&gdf, "")).unwrap();
        let err = run_err(d, &["run", "p.toml", "--quiet"]);
        assert!(err.contains(message), "{name}: {err}");
        assert!(!d.join("out.parquet").exists(), "{name}: nothing is written");
    }
}
