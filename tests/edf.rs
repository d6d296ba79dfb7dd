//! The `edf` source on every bundled real recording (Sleep-EDF PSG in EDF and BDF, a 128-channel
//! BioSemi BDF+, an EDF+ with sub-second annotations, an annotation-only hypnogram): samples,
//! header fields and annotations against pyedflib; markers in the stream; real-time pacing;
//! truncated and inconsistent files, missing channels and mixed rates as clear errors.

mod common;

use std::path::{Path, PathBuf};
use std::time::Instant;

use common::{python, run_err, run_ok, run_python};
use neurostream::sources::edf::EdfFile;

fn eeg(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/data/eeg").join(name)
}

fn pipeline(rec: &Path, extra: &str, out: &str) -> String {
    format!(
        r#"
[sources.rec]
kind = "edf"
path = "{}"
chunk = 100
{extra}

[sinks.out]
kind = "parquet"
input = "rec"
path = "{out}"
markers = true
"#,
        rec.display()
    )
}

/// The header and annotations as our reader sees them, for `check_edf.py header`.
fn header_json(file: &EdfFile) -> serde_json::Value {
    let h = &file.header;
    let signals: Vec<serde_json::Value> = h
        .signals
        .iter()
        .enumerate()
        .filter(|(_, s)| !s.is_annotation)
        .map(|(i, s)| {
            serde_json::json!({
                "label": s.label, "unit": s.unit, "transducer": s.transducer, "prefiltering": s.prefiltering,
                "physical_min": s.physical_min, "physical_max": s.physical_max,
                "digital_min": s.digital_min, "digital_max": s.digital_max, "sample_rate": h.sample_rate(i),
            })
        })
        .collect();
    let annotations: Vec<serde_json::Value> = file
        .annotations
        .iter()
        .map(|a| serde_json::json!({"onset_s": a.onset_s, "duration_s": a.duration_s, "text": a.text}))
        .collect();
    serde_json::json!({
        "records": file.records, "record_duration_s": h.record_duration_s, "start_unix_s": h.start_unix_s,
        "signals": signals, "annotations": annotations,
    })
}

#[test]
fn every_sample_header_field_and_annotation_equals_pyedflib() {
    let Some(py) = python() else { return };
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    // (file, channel groups of one rate each: None = the default, every channel at the top rate)
    let cases: Vec<(&str, Vec<Option<&str>>)> = vec![
        (
            "short_psg.edf",
            vec![
                None,
                Some(r#"["Resp oro-nasal", "EMG submental", "Temp rectal", "Event marker"]"#),
            ],
        ),
        ("short_psg.bdf", vec![None, Some(r#"["Resp*", "Temp rectal"]"#)]),
        ("mne_test.bdf", vec![None]),
        ("mne_test.edf", vec![None]),
        ("test_subsecond.edf", vec![None]),
    ];
    for (name, groups) in cases {
        let rec = eeg(name);
        let file = EdfFile::open(&rec, false).unwrap();
        let json = d.join(format!("{name}.json"));
        std::fs::write(&json, header_json(&file).to_string()).unwrap();
        run_python(
            &py,
            "check_edf.py",
            &["header", rec.to_str().unwrap(), json.to_str().unwrap()],
        );
        for (g, channels) in groups.into_iter().enumerate() {
            let extra = channels.map(|c| format!("channels = {c}")).unwrap_or_default();
            let out = format!("{name}_{g}.parquet");
            std::fs::write(d.join("p.toml"), pipeline(&rec, &extra, &out)).unwrap();
            run_ok(d, &["run", "p.toml", "--quiet"]);
            run_python(
                &py,
                "check_edf.py",
                &["signals", rec.to_str().unwrap(), d.join(&out).to_str().unwrap()],
            );
        }
    }
    // The annotation-only hypnogram, alone.
    let hyp = EdfFile::open(&eeg("SC4001EC-Hypnogram.edf"), false).unwrap();
    assert_eq!(hyp.annotations.len(), 154);
    let json = d.join("hyp.json");
    std::fs::write(&json, header_json(&hyp).to_string()).unwrap();
    run_python(
        &py,
        "check_edf.py",
        &[
            "header",
            eeg("SC4001EC-Hypnogram.edf").to_str().unwrap(),
            json.to_str().unwrap(),
        ],
    );
}

#[test]
fn inspect_states_the_channels_rate_length_and_annotations_as_mne_reads_them() {
    let Some(py) = python() else { return };
    let dir = tempfile::tempdir().unwrap();
    for name in ["mi_test.edf", "mne_test.bdf", "test_subsecond.edf"] {
        let rec = eeg(name);
        let text = run_ok(dir.path(), &["inspect", rec.to_str().unwrap(), "-n", "1000"]);
        let out = dir.path().join("inspect.txt");
        std::fs::write(&out, text).unwrap();
        eprintln!(
            "{}",
            run_python(
                &py,
                "check_edf.py",
                &["inspect", rec.to_str().unwrap(), out.to_str().unwrap()]
            )
        );
    }
}

#[test]
fn annotations_become_markers_at_their_samples_including_a_separate_hypnogram() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    // Sub-second onsets at 128 Hz: each marker sits on the sample nearest its onset.
    std::fs::write(d.join("p.toml"), pipeline(&eeg("test_subsecond.edf"), "", "sub.parquet")).unwrap();
    run_ok(d, &["run", "p.toml", "--quiet"]);
    let file = EdfFile::open(&eeg("test_subsecond.edf"), false).unwrap();
    let markers = read_markers(&d.join("sub.parquet"));
    assert_eq!(markers.len(), file.annotations.len(), "{markers:?}");
    for (a, (sample, label)) in file.annotations.iter().zip(&markers) {
        assert_eq!(*sample, (a.onset_s * 128.0).round() as i64, "{a:?}");
        assert_eq!(label, &a.text);
    }
    // The PSG with its hypnogram: the first stage starts at the first sample; stages past the
    // 300 s excerpt are not emitted.
    let extra = format!("annotations = \"{}\"", eeg("SC4001EC-Hypnogram.edf").display());
    std::fs::write(d.join("h.toml"), pipeline(&eeg("short_psg.edf"), &extra, "psg.parquet")).unwrap();
    let log = run_ok(d, &["run", "h.toml"]);
    assert!(log.contains("annotations start after the last sample"), "{log}");
    let markers = read_markers(&d.join("psg.parquet"));
    assert_eq!(markers, vec![(0, "Sleep stage W".to_string())]);
}

fn read_markers(path: &Path) -> Vec<(i64, String)> {
    use arrow::array::{Array, AsArray, Int64Array};
    let mut out = Vec::new();
    for b in common::read_parquet(path) {
        let sample = b
            .column_by_name("sample")
            .unwrap()
            .as_any()
            .downcast_ref::<Int64Array>()
            .unwrap()
            .clone();
        let marker = b.column_by_name("marker").unwrap().as_string::<i32>().clone();
        for r in 0..b.num_rows() {
            if marker.is_valid(r) {
                for l in marker.value(r).split(';') {
                    out.push((sample.value(r), l.to_string()));
                }
            }
        }
    }
    out
}

#[test]
fn channels_of_lower_rates_are_resampled_like_resample_poly() {
    let Some(py) = python() else { return };
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let extra = "resample = true\nchannels = [\"EEG Fpz-Cz\", \"Resp oro-nasal\", \"Temp rectal\"]";
    std::fs::write(d.join("p.toml"), pipeline(&eeg("short_psg.edf"), extra, "out.parquet")).unwrap();
    run_ok(d, &["run", "p.toml", "--quiet"]);
    let rec = eeg("short_psg.edf");
    run_python(
        &py,
        "check_edf.py",
        &["resampled", rec.to_str().unwrap(), d.join("out.parquet").to_str().unwrap()],
    );
}

#[test]
fn real_time_replay_releases_chunks_at_the_recording_pace() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    // 300 s at 100x: at least 3 s of wall time (an upper bound would be a timing test).
    std::fs::write(
        d.join("p.toml"),
        pipeline(&eeg("short_psg.edf"), "speed = 100.0", "out.parquet"),
    )
    .unwrap();
    let t0 = Instant::now();
    run_ok(d, &["run", "p.toml", "--quiet"]);
    let took = t0.elapsed().as_secs_f64();
    assert!(took >= 2.9, "300 s replayed at speed 100 took only {took:.2} s");
}

#[test]
fn bad_files_and_bad_picks_are_clear_errors() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let bytes = std::fs::read(eeg("short_psg.edf")).unwrap();
    // Truncated inside the last record: an error naming the file and the record...
    let cut = d.join("cut.edf");
    std::fs::write(&cut, &bytes[..bytes.len() - 1000]).unwrap();
    std::fs::write(d.join("p.toml"), pipeline(&cut, "", "out.parquet")).unwrap();
    let e = run_err(d, &["run", "p.toml"]);
    assert!(
        e.contains("cut.edf") && e.contains("data record 10 of 10 is truncated"),
        "{e}"
    );
    // ...and with allow_truncated, the 9 complete records (270 s at 100 Hz) are read.
    std::fs::write(d.join("p.toml"), pipeline(&cut, "allow_truncated = true", "out.parquet")).unwrap();
    run_ok(d, &["run", "p.toml", "--quiet"]);
    let rows: usize = common::read_parquet(&d.join("out.parquet"))
        .iter()
        .map(|b| b.num_rows())
        .sum();
    assert_eq!(rows, 27_000);
    // An inconsistent header: the digital maximum of signal 2 below its minimum.
    let mut bad = bytes.clone();
    let ns = 7usize;
    let dig_max_field = 256 + ns * (16 + 80 + 8 + 8 + 8 + 8) + 8; // digital maximum of signal 2
    bad[dig_max_field..dig_max_field + 8].copy_from_slice(b"-4000   ");
    let badf = d.join("bad.edf");
    std::fs::write(&badf, &bad).unwrap();
    std::fs::write(d.join("p.toml"), pipeline(&badf, "", "out.parquet")).unwrap();
    let e = run_err(d, &["run", "p.toml"]);
    assert!(
        e.contains("bad.edf") && e.contains("digital maximum") && e.contains("signal 2 (`EEG Pz-Oz`)"),
        "{e}"
    );
    // Not an EDF file at all.
    let junk = d.join("junk.edf");
    std::fs::write(&junk, vec![b'x'; 600]).unwrap();
    std::fs::write(d.join("p.toml"), pipeline(&junk, "", "out.parquet")).unwrap();
    let e = run_err(d, &["run", "p.toml"]);
    assert!(e.contains("junk.edf") && e.contains("version"), "{e}");
    // A channel the file does not have: the error lists those it has.
    std::fs::write(
        d.join("p.toml"),
        pipeline(&eeg("short_psg.edf"), r#"channels = ["EEG Cz"]"#, "out.parquet"),
    )
    .unwrap();
    let e = run_err(d, &["run", "p.toml"]);
    assert!(e.contains("no channel `EEG Cz`") && e.contains("EEG Fpz-Cz"), "{e}");
    // Channels of different rates in one stream.
    std::fs::write(
        d.join("p.toml"),
        pipeline(&eeg("short_psg.edf"), r#"channels = ["EEG*", "Temp rectal"]"#, "out.parquet"),
    )
    .unwrap();
    let e = run_err(d, &["run", "p.toml"]);
    assert!(
        e.contains("different sampling rates") && e.contains("Temp rectal (1 Hz)") && e.contains("resample = true"),
        "{e}"
    );
}

/// Overwrites the fixed-header field at `at` (width `width`) with `value`, space padded.
fn set_field(bytes: &mut [u8], at: usize, width: usize, value: &str) {
    let mut v = value.as_bytes().to_vec();
    v.resize(width, b' ');
    bytes[at..at + width].copy_from_slice(&v);
}

#[test]
fn lying_headers_are_refused_before_anything_is_allocated() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let bytes = std::fs::read(eeg("short_psg.edf")).unwrap();
    let ns = 7usize;
    // A record duration of 1e-300 s: a sampling rate of ~1e302 Hz.
    let mut tiny = bytes.clone();
    set_field(&mut tiny, 244, 8, "1e-300");
    std::fs::write(d.join("tiny.edf"), &tiny).unwrap();
    std::fs::write(d.join("p.toml"), pipeline(&d.join("tiny.edf"), "", "out.parquet")).unwrap();
    let e = run_err(d, &["validate", "p.toml"]);
    assert!(
        e.contains("tiny.edf") && e.contains("duration of a data record") && e.contains("plausible"),
        "{e}"
    );
    // 0 samples per record in every signal and 99,999,999 records: refused at once.
    let mut empty = bytes[..256 * (ns + 1)].to_vec();
    set_field(&mut empty, 236, 8, "99999999");
    let spr = 256 + ns * (16 + 80 + 8 + 8 + 8 + 8 + 8 + 80);
    for s in 0..ns {
        set_field(&mut empty, spr + s * 8, 8, "0");
    }
    std::fs::write(d.join("empty.edf"), &empty).unwrap();
    std::fs::write(d.join("p.toml"), pipeline(&d.join("empty.edf"), "", "out.parquet")).unwrap();
    let started = std::time::Instant::now();
    let e = run_err(d, &["validate", "p.toml"]);
    assert!(e.contains("empty.edf") && e.contains("samples per data record"), "{e}");
    assert!(
        started.elapsed() < std::time::Duration::from_secs(2),
        "{:?}",
        started.elapsed()
    );
    // A signal count whose header would be larger than the file.
    let mut many = bytes[..256].to_vec();
    set_field(&mut many, 252, 4, "9999");
    set_field(&mut many, 184, 8, &(256 * 10000).to_string());
    std::fs::write(d.join("many.edf"), &many).unwrap();
    std::fs::write(d.join("p.toml"), pipeline(&d.join("many.edf"), "", "out.parquet")).unwrap();
    let e = run_err(d, &["validate", "p.toml"]);
    assert!(e.contains("many.edf") && e.contains("number of signals"), "{e}");
}

#[test]
fn channels_in_volts_millivolts_and_nanovolts_arrive_in_microvolts() {
    let Some(py) = python() else { return };
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let rec = d.join("units.edf");
    run_python(
        &py,
        "check_edf.py",
        &["write_units", eeg("short_psg.edf").to_str().unwrap(), rec.to_str().unwrap()],
    );
    std::fs::write(d.join("p.toml"), pipeline(&rec, "", "out.parquet")).unwrap();
    run_ok(d, &["run", "p.toml", "--quiet"]);
    run_python(
        &py,
        "check_edf.py",
        &["units", rec.to_str().unwrap(), d.join("out.parquet").to_str().unwrap()],
    );
}

/// The `edf` sink writes EDF+ and BDF+ files that pyedflib and MNE read back as the recording
/// they came from: samples within the quantization steps, labels, units, annotations.
#[test]
fn the_edf_sink_writes_edf_and_bdf_that_read_back_as_the_source() {
    let Some(py) = python() else { return };
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    for (rec, out, extra) in [
        ("mi_test.edf", "copy.edf", ""),
        ("test_subsecond.edf", "copy.bdf", "record_s = 0.5"),
        ("short_psg.edf", "psg.edf", "format = \"edf\"\nrecord_s = 30.0"),
    ] {
        let src = eeg(rec);
        std::fs::write(
            d.join("w.toml"),
            format!(
                "[sources.rec]\nkind = \"edf\"\npath = \"{}\"\nchunk = 77\n\n[sinks.out]\nkind = \"edf\"\ninput = \"rec\"\npath = \"{out}\"\n{extra}\n",
                src.display()
            ),
        )
        .unwrap();
        let log = run_ok(d, &["run", "w.toml"]);
        assert!(log.contains(&format!("to {out}")), "{log}");
        run_python(
            &py,
            "check_edf.py",
            &["written", src.to_str().unwrap(), d.join(out).to_str().unwrap()],
        );
    }
    // Rows that are not one per sample, or a record length that is not a whole number of
    // samples, are refused before anything runs.
    std::fs::write(
        d.join("bad.toml"),
        format!(
            "[sources.rec]\nkind = \"edf\"\npath = \"{}\"\n[sinks.out]\nkind = \"edf\"\ninput = \"rec\"\npath = \"x.edf\"\nrecord_s = 0.015\n",
            eeg("mi_test.edf").display()
        ),
    )
    .unwrap();
    let err = run_err(d, &["validate", "bad.toml"]);
    assert!(err.contains("is not a whole number of samples per record"), "{err}");
    assert!(!d.join("x.edf").exists());
    // Its ranges need every row of the run: a checkpointed run refuses it up front.
    let err = run_err(d, &["run", "w.toml", "--checkpoint-dir", "ck"]);
    assert!(err.contains("[sinks.out] (`edf`) cannot take part in checkpoints"), "{err}");
}

/// A glob of recordings: each file is a stream of its own (filtered and windowed alone, its
/// markers kept), the same rows on one worker and two, equal to running the pipeline on that
/// file alone; a recording with other channels is an error naming it.
#[test]
fn a_glob_of_recordings_runs_each_as_a_stream_of_its_own() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    std::fs::create_dir_all(d.join("recs")).unwrap();
    for f in ["mi_train.edf", "mi_test.edf"] {
        std::fs::copy(eeg(f), d.join("recs").join(f)).unwrap();
    }
    let chain = |path: &str, sink: &str| {
        format!(
            "[sources.rec]\nkind = \"edf\"\npath = \"{path}\"\nchunk = 100\n\
             [operators.bp]\nkind = \"butterworth\"\ninput = \"rec\"\nbtype = \"bandpass\"\norder = 4\ncutoff = [8.0, 30.0]\n\
             [operators.power]\nkind = \"bandpower\"\ninput = \"bp\"\nwindow_s = 2.0\nstep_s = 1.0\nnperseg = 100\n\
             [sinks.filtered]\nkind = \"parquet\"\ninput = \"bp\"\nmarkers = true\n{sink}\n\
             [sinks.power]\nkind = \"parquet\"\ninput = \"power\"\n{}\n",
            sink.replace("filtered", "power")
        )
    };
    let mut alone = Vec::new();
    for name in ["mi_test", "mi_train"] {
        let toml = chain(
            &format!("recs/{name}.edf"),
            &format!("path = \"alone/{name}_filtered.parquet\""),
        );
        std::fs::write(d.join("alone.toml"), toml).unwrap();
        run_ok(d, &["run", "alone.toml", "--quiet"]);
        let filtered = d.join(format!("alone/{name}_filtered.parquet"));
        let power = d.join(format!("alone/{name}_power.parquet"));
        assert!(!read_markers(&filtered).is_empty(), "{name} has markers");
        alone.push((name, common::rows(&filtered), common::rows(&power), read_markers(&filtered)));
    }
    let toml = chain("recs/*.edf", "path = \"set/filtered\"\npartition_by = [\"stream\"]");
    std::fs::write(d.join("set.toml"), toml).unwrap();
    for workers in ["1", "2"] {
        let _ = std::fs::remove_dir_all(d.join("set"));
        run_ok(d, &["run", "set.toml", "-w", workers, "--quiet"]);
        for (name, filtered, power, markers) in &alone {
            let part = d.join(format!("set/filtered/stream={name}"));
            assert!(
                common::rows(&part) == *filtered,
                "{name}, {workers} workers: filtered rows differ"
            );
            assert_eq!(read_markers(&part), *markers, "{name}, {workers} workers");
            let part = d.join(format!("set/power/stream={name}"));
            assert!(common::rows(&part) == *power, "{name}, {workers} workers: band power differs");
        }
    }
    let out = run_ok(d, &["inspect", "recs/*.edf", "-n", "2"]);
    for want in ["recordings: 2", "mi_test ", "mi_train ", "15000 samples", "markers:  48"] {
        assert!(out.contains(want), "inspect: no `{want}` in\n{out}");
    }
    std::fs::write(d.join("dir.toml"), chain("recs", "path = \"x\"")).unwrap();
    let err = run_err(d, &["run", "dir.toml"]);
    assert!(err.contains("is a directory") && err.contains("`recs/*.edf`"), "{err}");
    let hypnogram = chain("recs/*.edf", "path = \"x\"").replace("chunk = 100", "chunk = 100\nannotations = \"h.edf\"");
    std::fs::write(d.join("hypnogram.toml"), hypnogram).unwrap();
    let err = run_err(d, &["run", "hypnogram.toml"]);
    assert!(err.contains("cannot go with a glob"), "{err}");
    std::fs::copy(eeg("short_psg.edf"), d.join("recs/short_psg.edf")).unwrap();
    let err = run_err(d, &["run", "set.toml"]);
    assert!(err.contains("short_psg.edf") && err.contains("other channels"), "{err}");
}
