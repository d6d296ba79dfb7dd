//! Live metrics of a running pipeline: `neurostream run --metrics 127.0.0.1:0 --status-every S`
//! serves Prometheus text on /metrics while a real-time source plays (counters grow between two
//! scrapes, the sink's latency histogram fills, the operator's device is listed) and prints
//! status lines; at the end the served totals equal the run report's. Checkpoints are timed there.

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::process::{Command, Stdio};

fn scrape(addr: &str) -> String {
    let mut c = TcpStream::connect(addr).unwrap();
    write!(c, "GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
    let mut s = String::new();
    c.read_to_string(&mut s).unwrap();
    s
}

fn value(body: &str, series: &str) -> f64 {
    body.lines()
        .find(|l| l.starts_with(series))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no series {series} in\n{body}"))
}

/// Starts `neurostream run p.toml ARGS --metrics 127.0.0.1:0` in `dir` and waits for the address
/// it serves /metrics on. Returns the child, its stderr and the log so far.
fn run_with_metrics(
    dir: &std::path::Path,
    extra: &[&str],
) -> (std::process::Child, BufReader<std::process::ChildStderr>, String, String) {
    let mut child = Command::new(common::bin())
        .args(["run", "p.toml", "--metrics", "127.0.0.1:0"])
        .args(extra)
        .current_dir(dir)
        .stderr(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut err = BufReader::new(child.stderr.take().unwrap());
    let mut addr = String::new();
    let mut log = String::new();
    while addr.is_empty() {
        let mut line = String::new();
        assert!(err.read_line(&mut line).unwrap() > 0, "ended before serving metrics:\n{log}");
        log.push_str(&line);
        if let Some(rest) = line.trim().strip_prefix("metrics: http://") {
            addr = rest.trim_end_matches("/metrics").to_string();
        }
    }
    (child, err, addr, log)
}

/// Waits for the child to end successfully; returns its whole log (stderr, then stdout).
fn finish(mut child: std::process::Child, mut err: BufReader<std::process::ChildStderr>, mut log: String) -> String {
    let mut rest = String::new();
    err.read_to_string(&mut rest).unwrap();
    log.push_str(&rest);
    child.stdout.take().unwrap().read_to_string(&mut log).unwrap();
    assert!(child.wait().unwrap().success(), "{log}");
    log
}

#[test]
fn metrics_endpoint_and_status_lines_follow_a_live_run() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    std::fs::write(
        d.join("p.toml"),
        r#"
[sources.eeg]
kind = "synthetic_eeg"
channels = 8
sample_rate = 250.0
seconds = 4.0
chunk = 25
speed = 1.0

[operators.z]
kind = "normalize"
input = "eeg"
method = "running_zscore"
device = "cpu"

[sinks.out]
kind = "parquet"
input = "z"
path = "out.parquet"
"#,
    )
    .unwrap();
    // Checkpointed, so the checkpoint series are served too.
    let (child, err, addr, log) = run_with_metrics(
        d,
        &["--status-every", "0.5", "--checkpoint-dir", "ck", "--checkpoint-every", "0.2"],
    );
    std::thread::sleep(std::time::Duration::from_millis(1200));
    let first = scrape(&addr);
    std::thread::sleep(std::time::Duration::from_millis(1000));
    let second = scrape(&addr);
    assert!(first.starts_with("HTTP/1.1 200 OK"), "{first}");
    let rows = |b: &str| value(b, "neurostream_rows_out_total{node=\"sources.eeg\"}");
    assert!(
        rows(&first) > 0.0 && rows(&second) > rows(&first),
        "rows did not grow:\n{first}\n{second}"
    );
    assert!(second.contains("neurostream_device_info{node=\"operators.z\",device=\"cpu\"} 1"));
    assert!(
        second.contains("neurostream_latency_seconds_count{node=\"sinks.out\"}"),
        "{second}"
    );
    assert!(
        second.contains("neurostream_in_flight_rows{node=\"sources.eeg\"}"),
        "{second}"
    );
    assert!(second.contains("neurostream_processing_seconds_bucket{node=\"operators.z\",le=\"+Inf\"}"));
    // Every checkpoint is timed twice: the sources held, and the pause to the durable commit.
    let taken = value(&second, "neurostream_checkpoint_seconds_count{run=\"this\"}");
    assert!(taken >= 3.0, "{second}");
    // (A scrape may fall between the two observations of one checkpoint.)
    let held = value(&second, "neurostream_checkpoint_held_seconds_count{run=\"this\"}");
    assert!((held - taken).abs() <= 1.0, "{second}");
    assert!(
        value(&second, "neurostream_checkpoint_held_seconds_sum{run=\"this\"}")
            <= value(&second, "neurostream_checkpoint_seconds_sum{run=\"this\"}"),
        "{second}"
    );
    let log = finish(child, err, log);
    let status: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("sources.eeg") && l.contains("rows ("))
        .collect();
    assert!(status.len() >= 4, "expected status lines every 0.5 s of a 4 s run:\n{log}");
    assert!(log.contains("sinks.out: wrote 1000 rows"), "{log}");
}

/// A GPU operator's kernels are timed on the device (timestamp queries; lavapipe has them):
/// `/metrics` serves `neurostream_gpu_kernel_seconds` per kernel while the run goes, and the run
/// report lists each kernel's dispatches and GPU time.
#[test]
fn gpu_kernel_times_reach_metrics_and_the_report() {
    if std::env::var("NEUROSTREAM_SKIP_GPU_TESTS").is_ok_and(|v| v == "1") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    std::fs::write(
        d.join("p.toml"),
        r#"
[pipeline]
allow_software_gpu = true

[sources.eeg]
kind = "synthetic_eeg"
channels = 8
sample_rate = 250.0
seconds = 3.0
chunk = 25
speed = 1.0

[operators.band]
kind = "butterworth"
input = "eeg"
btype = "bandpass"
cutoff = [8.0, 30.0]
order = 4
device = "gpu"

[sinks.out]
kind = "parquet"
input = "band"
path = "out.parquet"
"#,
    )
    .unwrap();
    let (child, err, addr, log) = run_with_metrics(d, &[]);
    std::thread::sleep(std::time::Duration::from_millis(1500));
    let body = scrape(&addr);
    let log = finish(child, err, log);
    // Adapters without timestamp queries time nothing, and say so: no series, no report line.
    let mut devices = neurostream_engine::DeviceManager::new(neurostream_engine::DevicePolicy {
        allow_software_gpu: true,
        fallback_to_cpu: false,
    });
    let Ok(neurostream_engine::ComputeDevice::Gpu(ctx)) = devices.resolve(neurostream_engine::DeviceChoice::Gpu) else {
        panic!("the run used a GPU, this test finds none")
    };
    // Bytes moved are counted on every adapter: 8 channels × 750 samples of f32 at least go up.
    let up = body
        .lines()
        .find(|l| l.starts_with("neurostream_gpu_bytes_total{") && l.contains("direction=\"up\""))
        .unwrap_or_else(|| panic!("no GPU bytes series in\n{body}"));
    let up: f64 = up.rsplit(' ').next().unwrap().parse().unwrap();
    assert!(up > 0.0, "nothing uploaded yet after 1.5 s of a 3 s run:\n{body}");
    assert!(log.contains("bytes read back"), "the report gives the bytes moved:\n{log}");
    if !ctx.times_kernels() {
        assert!(!body.contains("neurostream_gpu_kernel_seconds"), "{body}");
        assert!(!log.contains("gpu kernel"), "{log}");
        return;
    }
    let count = body
        .lines()
        .find(|l| l.starts_with("neurostream_gpu_kernel_seconds_count{") && l.contains("kernel=\"sos"))
        .unwrap_or_else(|| panic!("no GPU kernel series in\n{body}"));
    let dispatches: f64 = count.rsplit(' ').next().unwrap().parse().unwrap();
    assert!(dispatches >= 1.0, "{count}");
    let report = log
        .lines()
        .find(|l| l.contains("gpu kernel") && l.contains("sos"))
        .unwrap_or_else(|| panic!("no GPU kernel line in the report:\n{log}"));
    assert!(report.contains("dispatches") && report.contains("ms GPU time"), "{report}");
}
