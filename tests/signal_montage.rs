//! `pick` and `reref` (common average with exclusions, reference channels, bipolar pairs) on
//! the 128-channel BioSemi recording, CPU and wgpu, against numpy on the same input.
//! Tolerance: max |error| / max |reference| per channel ≤ 1e-5 (CPU) or 1e-4 (wgpu, float32 sums).

mod common;

use common::{python, run_err, run_ok, run_python};

const BIOSEMI: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/examples/data/eeg/mne_test.bdf");

fn pipeline(op: &str, device: &str) -> String {
    format!(
        r#"
[sources.eeg]
kind = "edf"
path = "{BIOSEMI}"
channels = ["A*", "B1", "B2", "Ergo*"]
chunk = 100

[operators.m]
input = "eeg"
device = "{device}"
{op}

[sinks.raw]
kind = "parquet"
input = "eeg"
path = "in.parquet"

[sinks.out]
kind = "parquet"
input = "m"
path = "out.parquet"
"#
    )
}

#[test]
fn pick_and_rereference_equal_numpy_on_both_backends() {
    let Some(py) = python() else { return };
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let devices: &[&str] = if std::env::var("NEUROSTREAM_SKIP_GPU_TESTS").is_ok_and(|v| v == "1") {
        &["cpu"]
    } else {
        &["cpu", "gpu"]
    };
    let cases = [
        (
            "kind = \"pick\"\nchannels = [\"B2\", \"A1*\", \"Ergo-Left\"]\nexclude = [\"A10\"]",
            r#"{"pick": ["B2", "A1", "A11", "A12", "A13", "A14", "A15", "A16", "Ergo-Left"]}"#,
        ),
        (
            "kind = \"reref\"\nmethod = \"average\"\nexclude = [\"Ergo*\"]",
            r#"{"average": {"exclude": ["Ergo-Left", "Ergo-Right"]}}"#,
        ),
        (
            "kind = \"reref\"\nmethod = \"channels\"\nreference = [\"A1\", \"B2\"]\ndrop_reference = true",
            r#"{"channels": {"reference": ["A1", "B2"], "drop": true}}"#,
        ),
        (
            "kind = \"reref\"\nmethod = \"bipolar\"\npairs = [\"A1-A2\", \"B1-A16\", \"Ergo-Left-Ergo-Right\"]",
            r#"{"bipolar": ["A1-A2", "B1-A16", "Ergo-Left-Ergo-Right"]}"#,
        ),
    ];
    for device in devices {
        for (op, spec) in cases {
            std::fs::write(d.join("p.toml"), pipeline(op, device)).unwrap();
            run_ok(d, &["run", "p.toml", "--quiet"]);
            std::fs::write(d.join("spec.json"), spec).unwrap();
            let tol = if *device == "gpu" { "1e-4" } else { "1e-5" };
            let s = |n: &str| d.join(n).to_string_lossy().to_string();
            run_python(
                &py,
                "check_montage.py",
                &[&s("in.parquet"), &s("out.parquet"), &s("spec.json"), tol],
            );
        }
    }
    // Names the input lacks are errors listing what it has.
    std::fs::write(
        d.join("p.toml"),
        pipeline("kind = \"reref\"\nmethod = \"bipolar\"\npairs = [\"A1-Cz\"]", "cpu"),
    )
    .unwrap();
    let e = run_err(d, &["run", "p.toml"]);
    assert!(e.contains("pair `A1-Cz`") && e.contains("Ergo-Right"), "{e}");
    std::fs::write(d.join("p.toml"), pipeline("kind = \"pick\"\nchannels = [\"Cz\"]", "cpu")).unwrap();
    let e = run_err(d, &["run", "p.toml"]);
    assert!(e.contains("no channel `Cz`"), "{e}");
}

/// `pick` by channel type: EDF+ labels name their type (`EEG Fpz-Cz`, `EOG horizontal`), the
/// schema carries it, and `types` keeps those channels, writing their types to the Parquet
/// metadata. An input without types is a clear error.
#[test]
fn pick_by_channel_type() {
    let psg = concat!(env!("CARGO_MANIFEST_DIR"), "/examples/data/eeg/short_psg.edf");
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    for (types, prefix) in [("[\"eeg\"]", "EEG"), ("[\"eog\", \"emg\"]", "EOG")] {
        std::fs::write(
            d.join("p.toml"),
            format!(
                "[sources.psg]\nkind = \"edf\"\npath = \"{psg}\"\n\n[operators.m]\nkind = \"pick\"\ninput = \"psg\"\ntypes = {types}\n\n\
                 [sinks.out]\nkind = \"parquet\"\ninput = \"m\"\npath = \"out.parquet\"\n"
            ),
        )
        .unwrap();
        run_ok(d, &["run", "--quiet", "p.toml"]);
        let file = std::fs::File::open(d.join("out.parquet")).unwrap();
        let schema = parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder::try_new(file)
            .unwrap()
            .schema()
            .clone();
        let names: Vec<&str> = schema
            .fields()
            .iter()
            .map(|f| f.name().as_str())
            .filter(|n| !["time", "sample", "marker"].contains(n))
            .collect();
        assert!(
            !names.is_empty() && names.iter().all(|n| n.starts_with(prefix)),
            "{types}: {names:?}"
        );
        let meta: Vec<String> = serde_json::from_str(&schema.metadata()["neurostream.channel_types"]).unwrap();
        let want: Vec<String> = names
            .iter()
            .map(|n| n.split(' ').next().unwrap().to_ascii_lowercase())
            .collect();
        assert_eq!(meta, want, "{types}");
    }
    std::fs::write(
        d.join("p.toml"),
        "[sources.eeg]\nkind = \"synthetic_eeg\"\nchannels = 2\nseconds = 1.0\n\n[operators.m]\nkind = \"pick\"\ninput = \"eeg\"\ntypes = [\"eeg\"]\n\n\
         [sinks.out]\nkind = \"parquet\"\ninput = \"m\"\npath = \"out.parquet\"\n",
    )
    .unwrap();
    let e = run_err(d, &["run", "p.toml"]);
    assert!(
        e.contains("`types` needs channel types") && e.contains("pick them by name"),
        "{e}"
    );
}
