//! Replays every fuzz corpus and regression input (`fuzz/corpus/<target>/`, including the
//! inputs that once crashed, kept after their fix) through the fuzz targets' code on stable Rust,
//! so each test run re-checks that none panics. The fuzzing itself: see fuzz/README.md.

use std::path::Path;

fn replay(target: &str, f: fn(&[u8])) {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/corpus").join(target);
    let mut n = 0;
    for entry in std::fs::read_dir(&dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display())) {
        let path = entry.unwrap().path();
        let data = std::fs::read(&path).unwrap();
        let outcome = std::panic::catch_unwind(|| f(&data));
        assert!(outcome.is_ok(), "{} panics on {}", target, path.display());
        n += 1;
    }
    assert!(n > 0, "empty corpus {}", dir.display());
    eprintln!("{target}: {n} inputs replayed");
}

#[test]
fn arrow_ipc_corpus() {
    replay("arrow_ipc", neurostream::fuzz_support::arrow_ipc);
}

#[test]
fn edf_corpus() {
    replay("edf", neurostream::fuzz_support::edf);
}

#[test]
fn pipeline_toml_corpus() {
    replay("pipeline_toml", neurostream::fuzz_support::pipeline_toml);
}

#[test]
fn sae_files_corpus() {
    replay("sae_files", neurostream::fuzz_support::sae_files);
}
