//! Overload policies: a real-time source far faster than the pipeline (64 channels at 20 kHz
//! into a 13 201-tap FIR, 17 GMAC/s where one core manages about 1 here) with `overload = "drop_newest"` /
//! `"drop_oldest"`. The source's worker runs apart from the filter's (2 workers), so the sinks
//! fall behind the source and the policy drops rows: the run must end with read = accepted +
//! dropped = every row the source produced, the sink holding exactly the accepted rows, some
//! rows dropped, and resident memory bounded (sampled from /proc while it runs).

mod common;

use std::io::Read;
use std::process::{Command, Stdio};

fn rss_kb(pid: u32) -> Option<u64> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    s.lines()
        .find(|l| l.starts_with("VmRSS:"))?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()
}

/// 64 channels at 20 kHz in real time with the overload policy `policy`, into a 13 201-tap FIR
/// (a 20 Hz high-pass: a 5 Hz transition band). Longer filters only make the test slower: the
/// rows accepted are bounded by `max_in_flight_mb`, and each costs the filter its taps.
fn pipeline(policy: &str) -> String {
    format!(
        r#"
[pipeline]
max_in_flight_mb = 0.5

[sources.eeg]
kind = "synthetic_eeg"
channels = 64
sample_rate = 20000.0
seconds = 0.5
chunk = 200
speed = 1.0
{policy}

[operators.hp]
kind = "fir"
input = "eeg"
l_freq = 20.0

[sinks.out]
kind = "parquet"
input = "hp"
path = "out.parquet"
"#
    )
}

#[test]
fn drop_policies_keep_memory_bounded_and_count_every_row() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    for policy in [
        "overload = \"drop_newest\"",
        "overload = \"drop_oldest\"\noverload_buffer_rows = 400",
    ] {
        std::fs::write(d.join("p.toml"), pipeline(policy)).unwrap();
        let mut child = Command::new(common::bin())
            .args(["run", "p.toml", "-w", "2", "--quiet"])
            .current_dir(d)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let pid = child.id();
        let mut max_rss = 0;
        while child.try_wait().unwrap().is_none() {
            max_rss = max_rss.max(rss_kb(pid).unwrap_or(0));
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
        let mut log = String::new();
        child.stderr.take().unwrap().read_to_string(&mut log).unwrap();
        child.stdout.take().unwrap().read_to_string(&mut log).unwrap();
        assert!(child.wait().unwrap().success(), "{log}");
        let line = log
            .lines()
            .find(|l| l.contains("overload sources.eeg"))
            .unwrap_or_else(|| panic!("no overload report:\n{log}"));
        let nums: Vec<u64> = line
            .split(|c: char| !c.is_ascii_digit())
            .filter(|s| !s.is_empty())
            .map(|s| s.parse().unwrap())
            .collect();
        let (read, accepted, dropped) = (nums[0], nums[1], nums[2]);
        eprintln!("{policy}: {line}; max RSS {} MB", max_rss / 1024);
        assert_eq!(read, 10000, "every row the source produced is counted: {line}");
        assert_eq!(accepted + dropped, read);
        assert!(dropped > 0, "the pipeline is slower than the source, rows must drop: {line}");
        assert_eq!(common::row_count(&d.join("out.parquet")), accepted as usize);
        assert!(max_rss < 600 * 1024, "resident memory grew to {} MB", max_rss / 1024);
    }
}

/// The overload drops `/metrics` reports equal the run report's at 1, 2 and 4 workers (each
/// worker adds its own drops to the node's counter).
#[test]
fn metrics_count_the_drops_of_every_worker() {
    let dir = tempfile::tempdir().unwrap();
    let toml = pipeline("overload = \"drop_newest\"");
    for workers in [1usize, 2, 4] {
        let spec = neurostream::PipelineSpec::from_toml_str(&toml, dir.path()).unwrap();
        let pipeline = spec.compile(&neurostream::registry()).unwrap();
        let metrics = neurostream::Metrics::new();
        let report = neurostream::run(
            pipeline,
            neurostream::RunOptions {
                workers,
                metrics: Some(metrics.clone()),
                ..Default::default()
            },
        )
        .unwrap();
        let reported: u64 = report.overload.values().map(|(_, dropped)| dropped).sum();
        let body = metrics.render();
        let scraped: f64 = body
            .lines()
            .filter(|l| l.starts_with("neurostream_overload_dropped_rows_total{node=\"sources.eeg\"}"))
            .map(|l| l.rsplit(' ').next().unwrap().parse::<f64>().unwrap())
            .sum();
        eprintln!("{workers} workers: report {reported}, /metrics {scraped}");
        // With one worker the source shares its thread with the filter and cannot run ahead.
        assert!(
            workers == 1 || reported > 0,
            "{workers} workers: the pipeline is slower than the source, rows must drop"
        );
        assert_eq!(scraped as u64, reported, "{workers} workers:\n{body}");
    }
}
