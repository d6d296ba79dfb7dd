//! A directory of recordings read with `stream_by`: each recording is filtered and windowed on
//! its own (equal to SciPy applied to that file alone), on one worker, two workers or two
//! processes; `partition_by = ["stream"]` writes a Hive directory per recording that DuckDB
//! and pyarrow read, and that `stream_by = "stream"` reads back as the same recordings.

mod common;

use std::path::Path;

use common::{python, rows, run_err, run_ok, run_python};

fn s(path: &Path) -> &str {
    path.to_str().unwrap()
}

/// A table's rows as `common::rows` gives them.
type Rows = Vec<(u64, Vec<f32>)>;

const RECORDINGS: [(&str, usize); 3] = [("sub-01", 3000), ("sub-02", 4500), ("sub-03", 2000)];

fn pipeline(stream_by: &str) -> String {
    format!(
        r#"
[sources.eeg]
kind = "parquet"
path = "recordings"
batch_rows = 512
{stream_by}

[operators.bp]
kind = "butterworth"
input = "eeg"
btype = "bandpass"
order = 4
cutoff = [8.0, 30.0]

[operators.power]
kind = "bandpower"
input = "bp"
window_s = 2.0
step_s = 1.0
nperseg = 128
bands = [["theta", 4.0, 8.0], ["alpha", 8.0, 13.0], ["beta", 13.0, 30.0]]

[sinks.filtered]
kind = "parquet"
input = "bp"
path = "out/filtered"
partition_by = ["stream"]

[sinks.power]
kind = "parquet"
input = "power"
path = "out/power"
partition_by = ["stream"]
"#
    )
}

#[test]
fn each_recording_of_a_dataset_is_a_stream_of_its_own() {
    let Some(py) = python() else { return };
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    std::fs::create_dir_all(d.join("recordings")).unwrap();
    run_python(&py, "check_datasets.py", &["write", s(&d.join("recordings"))]);

    // Read as one stream, the second recording's samples restart: an error naming both files.
    std::fs::write(d.join("one.toml"), pipeline("")).unwrap();
    let err = run_err(d, &["run", "one.toml"]);
    assert!(
        err.contains("sub-02.parquet") && err.contains("sub-01.parquet") && err.contains("stream_by = \"file\""),
        "{err}"
    );

    std::fs::write(d.join("p.toml"), pipeline("stream_by = \"file\"")).unwrap();
    let filter = r#"{"butter": [4, [8.0, 30.0], "bandpass"]}"#;
    let power = r#"{"window": 500, "step": 250, "nperseg": 128, "noverlap": 64, "relative": false,
                    "bands": [["theta", 4.0, 8.0], ["alpha", 8.0, 13.0], ["beta", 13.0, 30.0]]}"#;
    let (filter_json, power_json) = (d.join("filter.json"), d.join("power.json"));
    std::fs::write(&filter_json, filter).unwrap();
    std::fs::write(&power_json, power).unwrap();
    // Each recording's filtered rows from the first layout.
    let mut first: Option<Vec<Rows>> = None;
    for layout in [&["-w", "1"][..], &["-w", "2"], &["--processes", "2", "-w", "1"]] {
        let _ = std::fs::remove_dir_all(d.join("out"));
        run_ok(d, &[&["run", "p.toml", "--quiet"][..], layout].concat());
        let mut outputs = Vec::new();
        for (name, samples) in RECORDINGS {
            let input = d.join(format!("recordings/{name}.parquet"));
            let filtered = d.join(format!("out/filtered/stream={name}"));
            let power = d.join(format!("out/power/stream={name}"));
            // Tolerances: float32 filter state and spectra against float64 SciPy, as in
            // tests/signal_filters.rs and tests/signal_bandpower.rs.
            if first.is_none() {
                run_python(
                    &py,
                    "check_filters.py",
                    &["filter", s(&input), s(&filtered), s(&filter_json), "1e-4"],
                );
                run_python(&py, "check_bandpower.py", &[s(&filtered), s(&power), s(&power_json), "1e-4"]);
            }
            assert_eq!(rows(&power).len(), (samples - 500) / 250 + 1, "{name}: windows");
            outputs.push(rows(&filtered));
        }
        let counts: Vec<String> = RECORDINGS.iter().map(|(n, rows)| format!("{n}={rows}")).collect();
        let mut args = vec!["hive".to_string(), s(&d.join("out/filtered")).to_string()];
        args.extend(counts);
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        run_python(&py, "check_datasets.py", &args);
        match &first {
            None => first = Some(outputs),
            // Other layouts: the same rows as one worker (checked against SciPy above).
            Some(want) => assert!(*want == outputs, "{layout:?} wrote other rows than one worker"),
        }
    }

    let out = run_ok(d, &["inspect", "out/filtered", "-n", "0"]);
    for want in [
        "(3 files)",
        "stream=sub-01/part-",
        "9500 in all",
        "neurostream.layout = signals",
    ] {
        assert!(out.contains(want), "inspect: no `{want}` in\n{out}");
    }

    // The output reads back by its partition key as the same recordings.
    std::fs::write(
        d.join("back.toml"),
        "[sources.eeg]\nkind = \"parquet\"\npath = \"out/filtered\"\nstream_by = \"stream\"\n\
         [sinks.copy]\nkind = \"parquet\"\ninput = \"eeg\"\npath = \"copy\"\npartition_by = [\"stream\"]\n",
    )
    .unwrap();
    run_ok(d, &["run", "back.toml", "-w", "2", "--quiet"]);
    for (i, (name, _)) in RECORDINGS.iter().enumerate() {
        let copy = rows(&d.join(format!("copy/stream={name}")));
        assert!(copy == first.as_ref().unwrap()[i], "{name} read back differs");
    }
}
