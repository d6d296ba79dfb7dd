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
