//! Where a benchmark example writes its result table: `bench/NAME`, or
//! `$NEUROSTREAM_BENCH_OUT/NAME` when `bench/all.py` points it at an untracked directory.

use std::path::{Path, PathBuf};

/// The path of the result table `name` (the directory is created).
pub fn results_path(name: &str) -> PathBuf {
    let dir = std::env::var_os("NEUROSTREAM_BENCH_OUT")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("bench"));
    std::fs::create_dir_all(&dir).expect("creating the results directory");
    dir.join(name)
}
