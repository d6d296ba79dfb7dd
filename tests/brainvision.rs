//! The `brainvision` source against MNE's reader on recordings MNE and pybv write from a bundled
//! real EEG (IEEE_FLOAT_32 and INT_16, multiplexed) and one written by hand for the layouts pybv
//! does not write (INT_32, VECTORIZED, Latin-1 text, µV/mV/V/°C channels, an EOG channel; ASCII
//! with decimal commas): samples, names, types, units and markers; ASCII with a skipped time
//! column against the values written; then lying and incomplete files as clear errors naming the
//! file and the field, with nothing written.

mod common;

use std::path::{Path, PathBuf};

use common::{python, run_err, run_ok, run_python};

fn recording() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/data/eeg/mi_train.edf")
}

fn pipeline(vhdr: &str, extra: &str) -> String {
    format!(
        "[sources.rec]\nkind = \"brainvision\"\npath = \"{vhdr}\"\nchunk = 100\n{extra}\n\n\
         [sinks.out]\nkind = \"parquet\"\ninput = \"rec\"\npath = \"out.parquet\"\nmarkers = true\n"
    )
}

#[test]
fn every_sample_channel_and_marker_equals_mne_on_files_mne_and_pybv_write() {
    let Some(py) = python() else { return };
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let names = run_python(
        &py,
        "check_brainvision.py",
        &["write", recording().to_str().unwrap(), d.to_str().unwrap()],
    );
    let line = names
        .lines()
        .find(|l| l.starts_with("export_float32"))
        .expect("the variants written");
    let variants: Vec<&str> = line.split_whitespace().collect();
    assert_eq!(variants.len(), 4, "{names}");
    for v in variants {
        let vhdr = d.join(format!("{v}.vhdr"));
        std::fs::write(d.join("p.toml"), pipeline(vhdr.to_str().unwrap(), "")).unwrap();
        run_ok(d, &["run", "p.toml", "--quiet"]);
        run_python(
            &py,
            "check_brainvision.py",
            &["check", vhdr.to_str().unwrap(), d.join("out.parquet").to_str().unwrap()],
        );
        std::fs::remove_file(d.join("out.parquet")).unwrap();
    }
}

/// A small multiplexed INT_16 recording written here: 3 channels × 10 samples.
fn tiny(d: &Path, header_extra: &str, data_bytes: usize) -> PathBuf {
    let header = format!(
        "Brain Vision Data Exchange Header File Version 1.0\n[Common Infos]\nDataFile=t.eeg\nMarkerFile=t.vmrk\n\
         DataFormat=BINARY\nDataOrientation=MULTIPLEXED\nNumberOfChannels=3\nSamplingInterval=2000\n{header_extra}\n\
         [Binary Infos]\nBinaryFormat=INT_16\n[Channel Infos]\nCh1=Cz,,0.1,µV\nCh2=Pz,,0.1,µV\nCh3=Oz,,0.1,µV\n"
    );
    std::fs::write(d.join("t.vhdr"), header).unwrap();
    std::fs::write(
        d.join("t.vmrk"),
        "Brain Vision Data Exchange Marker File, Version 1.0\n[Marker Infos]\nMk1=Stimulus,S  2,4,1,0\n",
    )
    .unwrap();
    let data: Vec<u8> = (0..data_bytes).map(|i| (i * 7) as u8).collect();
    std::fs::write(d.join("t.eeg"), data).unwrap();
    d.join("t.vhdr")
}

#[test]
fn channels_are_picked_by_label_or_pattern_and_values_scaled_by_resolution() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    tiny(d, "", 60);
    std::fs::write(d.join("p.toml"), pipeline("t.vhdr", "channels = [\"Oz\", \"C*\"]")).unwrap();
    run_ok(d, &["run", "p.toml", "--quiet"]);
    let batches = common::read_parquet(&d.join("out.parquet"));
    let col = |name: &str| -> Vec<f32> {
        batches
            .iter()
            .flat_map(|b| {
                let a = b.column_by_name(name).unwrap();
                let a = a.as_any().downcast_ref::<arrow::array::Float32Array>().unwrap();
                a.values().to_vec()
            })
            .collect()
    };
    let bytes: Vec<u8> = (0..60).map(|i| (i * 7) as u8).collect();
    let raw = |s: usize, c: usize| i16::from_le_bytes([bytes[(s * 3 + c) * 2], bytes[(s * 3 + c) * 2 + 1]]) as f64 * 0.1;
    let (oz, cz) = (col("Oz"), col("Cz"));
    assert_eq!((oz.len(), cz.len()), (10, 10));
    for s in 0..10 {
        assert!(
            (oz[s] as f64 - raw(s, 2)).abs() <= 1e-3,
            "Oz sample {s}: {} vs {}",
            oz[s],
            raw(s, 2)
        );
        assert!((cz[s] as f64 - raw(s, 0)).abs() <= 1e-3, "Cz sample {s}");
    }
    assert_eq!(batches[0].schema().fields().iter().filter(|f| f.name() == "Pz").count(), 0);
}

/// A small ASCII recording written here: a time column to skip, `;`-separated values at
/// resolution 0.5, a blank line; `lines` replaces the data lines when given.
fn tiny_ascii(d: &Path, lines: Option<&str>) -> PathBuf {
    let header = "Brain Vision Data Exchange Header File Version 1.0\n[Common Infos]\nDataFile=a.txt\n\
                  DataFormat=ASCII\nDataOrientation=MULTIPLEXED\nNumberOfChannels=2\nSamplingInterval=4000\n\
                  [ASCII Infos]\nSkipLines=2\nSkipColumns=1\n[Channel Infos]\nCh1=Fz,,0.5,µV\nCh2=Cz,,0.5,mV\n";
    std::fs::write(d.join("a.vhdr"), header).unwrap();
    let data = lines.map(str::to_string).unwrap_or_else(|| {
        let rows: Vec<String> = (0..7).map(|s| format!("{};{};{}", s * 4, s * 10 - 20, 3 - s)).collect();
        format!(
            "exported\ntime;Fz;Cz\n{}\n\n{}\n",
            rows[..3].join("\n"),
            rows[3..].join("\r\n")
        )
    });
    std::fs::write(d.join("a.txt"), data).unwrap();
    d.join("a.vhdr")
}

#[test]
fn ascii_data_skip_their_lines_and_columns_and_scale_by_resolution() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    tiny_ascii(d, None);
    std::fs::write(d.join("p.toml"), pipeline("a.vhdr", "")).unwrap();
    run_ok(d, &["run", "p.toml", "--quiet"]);
    let batches = common::read_parquet(&d.join("out.parquet"));
    let col = |name: &str| -> Vec<f32> {
        batches
            .iter()
            .flat_map(|b| {
                let a = b.column_by_name(name).unwrap();
                a.as_any()
                    .downcast_ref::<arrow::array::Float32Array>()
                    .unwrap()
                    .values()
                    .to_vec()
            })
            .collect()
    };
    // Fz: stored × 0.5 µV; Cz: stored × 0.5 mV, in the engine's µV.
    let fz: Vec<f32> = (0..7).map(|s| (s * 10 - 20) as f32 * 0.5).collect();
    let cz: Vec<f32> = (0..7).map(|s| (3 - s) as f32 * 500.0).collect();
    assert_eq!(col("Fz"), fz);
    assert_eq!(col("Cz"), cz);
    // A line with a value missing, and a value that is not a number: errors naming the line.
    for (data, message) in [
        (
            "x\ny\n0;1;2\n4;5\n",
            "a.txt: line 4: 2 values, but the header has 2 channels after 1 skipped columns",
        ),
        ("x\ny\n0;1;2\n4;5;zz\n", "a.txt: line 4: channel 2: `zz` is not a number"),
    ] {
        std::fs::remove_file(d.join("out.parquet")).ok();
        tiny_ascii(d, Some(data));
        let err = run_err(d, &["run", "p.toml", "--quiet"]);
        assert!(err.contains(message), "{err}");
        assert!(!d.join("out.parquet").exists());
    }
}

/// Something done to a good recording's files to make them lie.
type Spoil = Box<dyn Fn(&Path)>;

#[test]
fn lying_and_incomplete_files_are_errors_naming_the_file_and_field_and_nothing_is_written() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let cases: Vec<(&str, usize, Spoil, &str)> = vec![
        (
            "",
            59,
            Box::new(|_| {}),
            "t.eeg: 59 bytes is not a whole number of samples of 3 channels × 2 bytes",
        ),
        (
            "DataPoints=12",
            60,
            Box::new(|_| {}),
            "DataPoints: the header says 12 samples per channel",
        ),
        (
            "",
            60,
            Box::new(|d| std::fs::remove_file(d.join("t.eeg")).unwrap()),
            "t.vhdr: DataFile:",
        ),
        (
            "",
            60,
            Box::new(|d| std::fs::remove_file(d.join("t.vmrk")).unwrap()),
            "t.vhdr: MarkerFile:",
        ),
        (
            "",
            60,
            Box::new(|d| {
                let h = std::fs::read_to_string(d.join("t.vhdr")).unwrap();
                std::fs::write(d.join("t.vhdr"), h.replace("INT_16", "INT_24")).unwrap()
            }),
            "BinaryFormat: `INT_24` is not supported",
        ),
        (
            "",
            60,
            Box::new(|d| {
                let h = std::fs::read_to_string(d.join("t.vhdr")).unwrap();
                std::fs::write(d.join("t.vhdr"), h.replace("SamplingInterval=2000", "SamplingInterval=0")).unwrap()
            }),
            "SamplingInterval: 0 µs is not a plausible sampling interval",
        ),
        (
            "",
            60,
            Box::new(|d| {
                let h = std::fs::read_to_string(d.join("t.vhdr")).unwrap();
                std::fs::write(d.join("t.vhdr"), h.replace("Ch3=Oz,,0.1,µV\n", "")).unwrap()
            }),
            "Channel Infos: no entry `Ch3` (NumberOfChannels is 3)",
        ),
        (
            "",
            60,
            Box::new(|d| {
                std::fs::write(
                    d.join("t.vmrk"),
                    "Brain Vision Data Exchange Marker File, Version 1.0\n[Marker Infos]\nMk1=Stimulus,S  2,zero,1,0\n",
                )
                .unwrap()
            }),
            "t.vmrk: line 3: Mk1: position `zero` is not a sample number",
        ),
        (
            "",
            60,
            Box::new(|d| std::fs::write(d.join("t.vhdr"), "not a header\n").unwrap()),
            "t.vhdr: not a BrainVision header",
        ),
    ];
    for (extra, bytes, spoil, expected) in cases {
        for f in ["t.vhdr", "t.vmrk", "t.eeg", "out.parquet"] {
            let _ = std::fs::remove_file(d.join(f));
        }
        tiny(d, extra, bytes);
        spoil(d);
        std::fs::write(d.join("p.toml"), pipeline("t.vhdr", "")).unwrap();
        let err = run_err(d, &["run", "p.toml", "--quiet"]);
        assert!(
            err.contains("[sources.rec]") && err.contains(expected),
            "expected `{expected}` in:\n{err}"
        );
        assert!(!d.join("out.parquet").exists(), "{expected}: an output was written");
    }
    // A typo in a channel name: the nearest label is suggested.
    tiny(d, "", 60);
    std::fs::write(d.join("p.toml"), pipeline("t.vhdr", "channels = [\"CZ\"]")).unwrap();
    let err = run_err(d, &["validate", "p.toml"]);
    assert!(err.contains("no channel `CZ`; did you mean `Cz`?"), "{err}");
}
