//! 1 worker, 2 workers and 2 processes x 2 workers (timely cluster mode on loopback) write
//! the same rows, bit for bit, from synthetic and Parquet sources, through stateful
//! (running z-score) and stateless (L2) operators, to single-file and per-worker sinks.

mod common;

use std::path::Path;
use std::process::{Command, Stdio};

use common::{bin, rows, run_ok};

const GENERATE: &str = r#"
[sources.acts]
kind = "synthetic_activations"
d_model = 32
features = 64
active = 4
tokens = 20000
chunk = 700
seed = 11

[sinks.file]
kind = "parquet"
input = "acts"
path = "input.parquet"
row_group_size = 1500
"#;

const PIPELINE: &str = r#"
[sources.eeg]
kind = "synthetic_eeg"
channels = 4
sample_rate = 128.0
seconds = 40.0
chunk = 100
seed = 5

[operators.z]
kind = "normalize"
input = "eeg"
method = "running_zscore"
warmup = 200

[sources.acts]
kind = "parquet"
path = "input.parquet"
batch_rows = 600

[operators.l2]
kind = "normalize"
input = "acts"
method = "l2"

[operators.acts_z]
kind = "normalize"
input = "acts"
method = "running_zscore"
warmup = 1000

[sinks.eeg_z]
kind = "parquet"
input = "z"
path = "out/eeg_z.parquet"

[sinks.eeg_raw]
kind = "parquet"
input = "eeg"
path = "out/eeg_raw_parts"

[sinks.l2]
kind = "parquet"
input = "l2"
path = "out/l2_parts"

[sinks.acts_z]
kind = "parquet"
input = "acts_z"
path = "out/acts_z.parquet"

[sinks.acts_z_parts]
kind = "parquet"
input = "acts_z"
path = "out/acts_z_parts"
"#;

fn setup() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("gen.toml"), GENERATE).unwrap();
    run_ok(dir.path(), &["run", "gen.toml", "--quiet"]);
    std::fs::write(dir.path().join("p.toml"), PIPELINE).unwrap();
    dir
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn outputs(dir: &Path) -> Vec<Vec<(u64, Vec<f32>)>> {
    ["eeg_z.parquet", "eeg_raw_parts", "l2_parts", "acts_z.parquet", "acts_z_parts"]
        .iter()
        .map(|f| rows(&dir.join("out").join(f)))
        .collect()
}

fn run_cluster(dir: &Path, workers: &str) {
    write_hosts(dir);
    let children: Vec<_> = (0..2).map(|p| spawn_process(dir, "p.toml", workers, p, &[])).collect();
    for (p, c) in children.into_iter().enumerate() {
        let out = c.wait_with_output().unwrap();
        assert!(
            out.status.success(),
            "process {p} failed:\n{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

#[test]
fn one_worker_two_workers_and_two_processes_write_the_same_rows() {
    let dir = setup();
    let d = dir.path();
    run_ok(d, &["run", "p.toml", "-w", "1", "--quiet"]);
    let one = outputs(d);
    assert_eq!(one[0].len(), 40 * 128);
    assert_eq!(one[2].len(), 20000);
    assert_eq!(one[3].len(), 20000);
    std::fs::remove_dir_all(d.join("out")).unwrap();

    let log = run_ok(d, &["run", "p.toml", "-w", "2"]);
    let two = outputs(d);
    // Per-worker sinks wrote one part per worker that received rows.
    assert_eq!(std::fs::read_dir(d.join("out/l2_parts")).unwrap().count(), 2);
    // The report shows each worker's busy time, here for both writers of the parts.
    let line = log
        .lines()
        .find(|l| l.contains("busy per worker sinks.l2:"))
        .unwrap_or_else(|| panic!("{log}"));
    assert!(line.contains(" 0: ") && line.contains(" 1: "), "{line}");
    // The running z-score gathers its one stream on one worker; the parts after it are still
    // written by both workers, each about half of the rows.
    let parts: Vec<usize> = std::fs::read_dir(d.join("out/acts_z_parts"))
        .unwrap()
        .map(|e| rows(&e.unwrap().path()).len())
        .collect();
    assert_eq!(parts.len(), 2, "{parts:?}");
    assert!(parts.iter().all(|&n| n >= 8000), "{parts:?}");
    std::fs::remove_dir_all(d.join("out")).unwrap();

    run_cluster(d, "2");
    let cluster = outputs(d);
    assert_eq!(std::fs::read_dir(d.join("out/l2_parts")).unwrap().count(), 4);

    for (i, name) in ["eeg_z", "eeg_raw", "l2", "acts_z", "acts_z_parts"].iter().enumerate() {
        assert!(one[i] == two[i], "{name}: 2 workers differ from 1 worker");
        assert!(one[i] == cluster[i], "{name}: 2 processes x 2 workers differ from 1 worker");
    }
}

#[test]
fn tight_flow_control_neither_deadlocks_nor_changes_rows() {
    let dir = setup();
    let d = dir.path();
    run_ok(d, &["run", "p.toml", "-w", "1", "--quiet"]);
    let free = outputs(d);
    std::fs::remove_dir_all(d.join("out")).unwrap();
    // A window of ~360 rows: smaller than a row group (1500) and than the gaps between a worker's batches.
    std::fs::write(
        d.join("tight.toml"),
        format!("[pipeline]\nmax_in_flight_mb = 0.05\n{PIPELINE}"),
    )
    .unwrap();
    run_ok(d, &["run", "tight.toml", "-w", "2", "--quiet"]);
    assert!(free == outputs(d));
}

#[test]
fn bad_hostfile_and_process_index_are_clear_errors() {
    let dir = setup();
    let d = dir.path();
    std::fs::write(d.join("hosts.txt"), "127.0.0.1:1\nnot-an-address\n").unwrap();
    let err = common::run_err(d, &["run", "p.toml", "--hostfile", "hosts.txt", "--process", "0"]);
    assert!(err.contains("line 2: expected host:port"), "{err}");
    std::fs::write(d.join("hosts.txt"), "127.0.0.1:1\n127.0.0.1:2\n").unwrap();
    let err = common::run_err(d, &["run", "p.toml", "--hostfile", "hosts.txt", "--process", "2"]);
    assert!(err.contains("process index 2 is out of range"), "{err}");
}

/// Starts process `p` of a two-process run of `pipeline` with `workers` workers.
fn spawn_process(dir: &Path, pipeline: &str, workers: &str, p: usize, extra: &[&str]) -> std::process::Child {
    Command::new(bin())
        .args([
            "run",
            pipeline,
            "-w",
            workers,
            "--hostfile",
            "hosts.txt",
            "--process",
            &p.to_string(),
            "--quiet",
        ])
        .args(extra)
        .current_dir(dir)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

fn failed_with(child: std::process::Child) -> String {
    let out = child.wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr).to_string();
    assert_eq!(out.status.code(), Some(1), "expected a clean failure (exit 1):\n{err}");
    err
}

fn write_hosts(dir: &Path) {
    let hosts = format!("127.0.0.1:{}\n127.0.0.1:{}\n", free_port(), free_port());
    std::fs::write(dir.join("hosts.txt"), hosts).unwrap();
}

#[test]
fn peers_with_other_worker_counts_or_pipelines_are_refused_at_start() {
    let dir = setup();
    let d = dir.path();
    write_hosts(d);
    let (a, b) = (
        spawn_process(d, "p.toml", "2", 0, &[]),
        spawn_process(d, "p.toml", "1", 1, &[]),
    );
    for err in [failed_with(a), failed_with(b)] {
        assert!(err.contains("workers per process"), "{err}");
    }
    std::fs::write(d.join("q.toml"), PIPELINE.replace("acts_z.parquet", "other.parquet")).unwrap();
    write_hosts(d);
    let (a, b) = (
        spawn_process(d, "p.toml", "1", 0, &[]),
        spawn_process(d, "q.toml", "1", 1, &[]),
    );
    for err in [failed_with(a), failed_with(b)] {
        assert!(err.contains("different pipeline"), "{err}");
    }
    assert!(!d.join("out/other.parquet").exists() && !d.join("out/acts_z.parquet").exists());
}

#[test]
fn a_peer_that_never_connects_fails_after_the_timeout_naming_it() {
    let dir = setup();
    let d = dir.path();
    write_hosts(d);
    let started = std::time::Instant::now();
    let err = failed_with(spawn_process(d, "p.toml", "1", 0, &["--peer-timeout", "1.5"]));
    assert!(
        err.contains("process 1") && err.contains("never connected within 1.5 s"),
        "{err}"
    );
    assert!(started.elapsed() < std::time::Duration::from_secs(30));
}

#[test]
fn a_killed_peer_fails_the_survivor_cleanly_without_temporary_files() {
    let dir = setup();
    let d = dir.path();
    // A run far too long to finish before process 1 is killed.
    let endless = r#"
[sources.eeg]
kind = "synthetic_eeg"
channels = 4
sample_rate = 1000.0
seconds = 100000.0
chunk = 50
seed = 5

[sinks.eeg_raw]
kind = "parquet"
input = "eeg"
path = "out/endless.parquet"
"#;
    std::fs::write(d.join("slow.toml"), endless).unwrap();
    write_hosts(d);
    let survivor = spawn_process(d, "slow.toml", "1", 0, &[]);
    let mut victim = spawn_process(d, "slow.toml", "1", 1, &[]);
    // Wait until process 0 writes output, then kill -9 process 1.
    let started = std::time::Instant::now();
    let writing = |d: &Path| {
        std::fs::read_dir(d.join("out"))
            .map(|es| es.flatten().any(|e| e.file_name().to_string_lossy().ends_with(".tmp")))
            .unwrap_or(false)
    };
    while !writing(d) && started.elapsed() < std::time::Duration::from_secs(60) {
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
    victim.kill().unwrap();
    victim.wait().unwrap();
    let err = failed_with(survivor);
    assert!(err.contains("lost the connection to process 1"), "{err}");
    let left: Vec<String> = walk_names(&d.join("out"));
    assert!(left.iter().all(|n| !n.ends_with(".tmp")), "temporary files left: {left:?}");
}

fn walk_names(dir: &Path) -> Vec<String> {
    let mut names = Vec::new();
    if let Ok(es) = std::fs::read_dir(dir) {
        for e in es.flatten() {
            if e.path().is_dir() {
                names.extend(walk_names(&e.path()));
            } else {
                names.push(e.file_name().to_string_lossy().to_string());
            }
        }
    }
    names
}

/// One command starts a local cluster: `run --processes 2` picks loopback ports, starts both
/// processes and writes the same rows as one process; a process that fails stops the run with
/// its reason.
#[test]
fn processes_2_without_a_hostfile_starts_a_local_cluster_with_the_same_rows() {
    let dir = setup();
    let d = dir.path();
    run_ok(d, &["run", "p.toml", "-w", "1", "--quiet"]);
    let one = outputs(d);
    std::fs::remove_dir_all(d.join("out")).unwrap();
    let log = run_ok(d, &["run", "p.toml", "--processes", "2", "-w", "1", "--quiet"]);
    assert!(log.contains("starting 2 processes on 127.0.0.1:"), "{log}");
    let cluster = outputs(d);
    assert_eq!(std::fs::read_dir(d.join("out/l2_parts")).unwrap().count(), 2);
    for (i, name) in ["eeg_z", "eeg_raw", "l2", "acts_z"].iter().enumerate() {
        assert!(
            one[i] == cluster[i],
            "{name}: the local 2-process cluster differs from 1 process"
        );
    }
    // Checkpointed, the cluster writes the same rows (kill trials: tests/checkpoint.rs).
    std::fs::remove_dir_all(d.join("out")).unwrap();
    run_ok(
        d,
        &[
            "run",
            "p.toml",
            "--processes",
            "2",
            "-w",
            "1",
            "--checkpoint-dir",
            "ck",
            "--quiet",
        ],
    );
    assert!(d.join("ck/COMPLETE").exists());
    assert_eq!(outputs(d), cluster, "the checkpointed cluster differs");
    let err = common::run_err(d, &["run", "p.toml", "--processes", "1"]);
    assert!(err.contains("a local cluster needs at least 2"), "{err}");
}

/// Bulk analytics across processes: a directory of Parquet files is spread over every worker of
/// every process (by file and row group); the local 2-process × 2-worker cluster writes the rows
/// one process writes, and each process read a share.
#[test]
fn a_directory_of_parquet_files_is_split_across_processes() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    std::fs::write(
        d.join("gen.toml"),
        GENERATE.replace("path = \"input.parquet\"", "path = \"in_parts\""),
    )
    .unwrap();
    run_ok(d, &["run", "gen.toml", "--quiet", "-w", "3"]);
    assert_eq!(std::fs::read_dir(d.join("in_parts")).unwrap().count(), 3);
    std::fs::write(
        d.join("p.toml"),
        "[sources.acts]\nkind = \"parquet\"\npath = \"in_parts\"\nbatch_rows = 500\n\n\
         [operators.l2]\nkind = \"normalize\"\ninput = \"acts\"\nmethod = \"l2\"\n\n\
         [sinks.out]\nkind = \"parquet\"\ninput = \"l2\"\npath = \"out/l2.parquet\"\n",
    )
    .unwrap();
    run_ok(d, &["run", "p.toml", "--quiet", "-w", "1"]);
    let one = rows(&d.join("out/l2.parquet"));
    std::fs::remove_dir_all(d.join("out")).unwrap();
    let log = run_ok(d, &["run", "p.toml", "--processes", "2", "-w", "2", "--quiet"]);
    let two = rows(&d.join("out/l2.parquet"));
    assert_eq!(one.len(), 20000);
    assert!(one == two, "the 2-process run's rows differ from the 1-process run's");
    for p in 0..2 {
        let read: u64 = log
            .lines()
            .filter(|l| l.starts_with(&format!("[process {p}]")) && l.contains("sources.acts"))
            .filter_map(|l| l.split("out").nth(1)?.split_whitespace().next()?.parse::<u64>().ok())
            .sum();
        assert!(read > 0, "process {p} read nothing:\n{log}");
    }
}
