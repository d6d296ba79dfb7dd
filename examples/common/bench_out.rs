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

/// The machine and day a table was measured on, for its header: `CPU model, N cores, YYYY-MM-DD`.
pub fn machine() -> String {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("model name"))
                .map(|l| l.split(':').nth(1).unwrap_or("").trim().to_string())
        })
        .unwrap_or_else(|| std::env::consts::ARCH.to_string());
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    format!("{cpu}, {cores} cores, {}", chrono::Utc::now().format("%Y-%m-%d"))
}
