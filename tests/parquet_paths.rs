//! The Parquet source reads a file, a directory and a glob alike; the sink's directory mode
//! writes parts that read back as the same rows.

mod common;

use common::{rows, run_ok};

#[test]
fn file_directory_and_glob_read_the_same_rows() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    std::fs::write(
        d.join("gen.toml"),
        "[sources.a]\nkind = \"synthetic_activations\"\nd_model = 8\ntokens = 5000\nchunk = 300\n\
         [sinks.file]\nkind = \"parquet\"\ninput = \"a\"\npath = \"one.parquet\"\nrow_group_size = 512\n\
         [sinks.parts]\nkind = \"parquet\"\ninput = \"a\"\npath = \"parts\"\nrow_group_size = 512\n",
    )
    .unwrap();
    run_ok(d, &["run", "gen.toml", "-w", "3", "--quiet"]);
    assert_eq!(std::fs::read_dir(d.join("parts")).unwrap().count(), 3);
    let want = rows(&d.join("one.parquet"));
    assert_eq!(want.len(), 5000);
    assert!(rows(&d.join("parts")) == want);
    for (i, path) in ["one.parquet", "parts", "parts/part-*.parquet"].iter().enumerate() {
        std::fs::write(
            d.join("copy.toml"),
            format!("[sources.a]\nkind = \"parquet\"\npath = \"{path}\"\n[sinks.out]\nkind = \"parquet\"\ninput = \"a\"\npath = \"copy{i}.parquet\"\n"),
        )
        .unwrap();
        run_ok(d, &["run", "copy.toml", "-w", "2", "--quiet"]);
        assert!(rows(&d.join(format!("copy{i}.parquet"))) == want, "reading {path}");
    }
    let out = run_ok(d, &["inspect", "copy2.parquet", "-n", "2"]);
    assert!(
        out.contains("rows:       5000") && out.contains("neurostream.layout = activations"),
        "{out}"
    );
}

#[test]
fn signal_files_read_back_with_channels_rate_and_markers() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    std::fs::write(
        d.join("gen.toml"),
        "[sources.eeg]\nkind = \"synthetic_eeg\"\nchannels = 5\nsample_rate = 200.0\nseconds = 12.0\nchunk = 64\nmarker_interval = 3.0\n\
         [sinks.file]\nkind = \"parquet\"\ninput = \"eeg\"\npath = \"eeg.parquet\"\nmarkers = true\nrow_group_size = 500\n",
    )
    .unwrap();
    run_ok(d, &["run", "gen.toml", "--quiet"]);
    std::fs::write(
        d.join("copy.toml"),
        "[sources.eeg]\nkind = \"parquet\"\npath = \"eeg.parquet\"\n[operators.z]\nkind = \"normalize\"\ninput = \"eeg\"\nmethod = \"running_zscore\"\n\
         [sinks.raw]\nkind = \"parquet\"\ninput = \"eeg\"\npath = \"copy.parquet\"\nmarkers = true\n\
         [sinks.z]\nkind = \"parquet\"\ninput = \"z\"\npath = \"z.parquet\"\n",
    )
    .unwrap();
    let v = run_ok(d, &["validate", "copy.toml"]);
    assert!(v.contains("[sources.eeg] parquet (signal, 5 channels at 200 Hz)"), "{v}");
    run_ok(d, &["run", "copy.toml", "-w", "2", "--quiet"]);
    assert!(rows(&d.join("copy.parquet")) == rows(&d.join("eeg.parquet")));
    assert_eq!(rows(&d.join("z.parquet")).len(), 2400);
    let inspect = run_ok(d, &["inspect", "copy.parquet", "-n", "0"]);
    assert!(
        inspect.contains("neurostream.sample_rate = 200")
            && inspect.contains("  Fp1: Float32")
            && inspect.contains("marker: Utf8 (nullable)"),
        "{inspect}"
    );
    // Markers survive the round trip: three events (at 3, 6 and 9 s).
    let markers: usize = common::read_parquet(&d.join("copy.parquet"))
        .iter()
        .map(|b| b.column_by_name("marker").unwrap().len() - b.column_by_name("marker").unwrap().null_count())
        .sum();
    assert_eq!(markers, 3);
}
