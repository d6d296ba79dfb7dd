//! Streams that end mid-run: an unnamed `arrow_tcp` client's stream ends with its connection,
//! and the end travels through the dataflow behind the stream's last rows. Here two running
//! z-scores in a row, each with a warm-up longer than any stream, hold every row back until
//! the stream ends. With the end, each unnamed client's rows come out when it disconnects (the
//! end passed the first operator on to the second), while a named client
//! that reconnects keeps its stream, and its state, to the end of the run. Without it every row
//! would come out at the end of the run, streams sorted by name. Values: each row's z-score of
//! its z-score over the whole stream (what a warming-up running z-score applies when its
//! stream ends) against a float64 reference (1e-4, relative above 1), on 1 and 2 workers (the
//! end crosses to the worker that owns the stream, the rows to the one writer).

mod common;

use std::net::TcpStream;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use arrow::array::{AsArray, RecordBatch};
use arrow::datatypes::{Float32Type, Schema, UInt64Type};
use neurostream::{registry, PipelineSpec, RunOptions};

const D: usize = 4;
const EPSILON: f64 = 1e-8;

/// The pipeline on `workers` workers; `source` adds keys to the `arrow_tcp` source.
fn pipeline(dir: &Path, workers: usize, source: &str) -> String {
    format!(
        r#"
[pipeline]
workers = {workers}

[sources.live]
kind = "arrow_tcp"
listen = "127.0.0.1:0"
d_model = {D}
address_file = "{addr}"
{source}

[operators.z1]
kind = "normalize"
input = "live"
method = "running_zscore"
warmup = 100000
epsilon = {EPSILON}

[operators.z2]
kind = "normalize"
input = "z1"
method = "running_zscore"
warmup = 100000
epsilon = {EPSILON}

[sinks.out]
kind = "parquet"
input = "z2"
path = "{out}"
"#,
        addr = dir.join("address.txt").display(),
        out = dir.join("out.parquet").display()
    )
}

fn schema(stream: Option<&str>) -> Arc<Schema> {
    let meta: Vec<(&str, &str)> = stream.map(|s| ("neurostream.stream", s)).into_iter().collect();
    common::activation_ipc_schema(D, &meta)
}

/// The rows client `k` sends: `rows` rows whose columns have their own offset and scale.
fn values(k: usize, rows: usize) -> Vec<f32> {
    (0..rows * D)
        .map(|i| {
            let (r, c) = ((i / D) as f32, (i % D) as f32);
            (k as f32 + 1.0) * (c - 1.5) + ((r * 0.37 + c * 1.3 + k as f32).sin() * (c + 1.0))
        })
        .collect()
}

/// A batch of client `seq`'s rows (its sequence id tells its rows apart in the output).
fn batch(schema: &Arc<Schema>, seq: u64, data: &[f32]) -> RecordBatch {
    common::activation_ipc_batch(schema, &vec![seq; data.len() / D], data)
}

fn connect(addr: &str, stream: Option<&str>) -> arrow::ipc::writer::StreamWriter<TcpStream> {
    let s = TcpStream::connect(addr).unwrap();
    arrow::ipc::writer::StreamWriter::try_new(s, &schema(stream)).unwrap()
}

/// Each row's z-score of its z-score, every column over the whole stream, in float64.
fn reference(data: &[f32]) -> Vec<f64> {
    let zscore = |x: &[f64]| -> Vec<f64> {
        let n = (x.len() / D) as f64;
        let mut out = x.to_vec();
        for c in 0..D {
            let mean = x.iter().skip(c).step_by(D).sum::<f64>() / n;
            let var = x.iter().skip(c).step_by(D).map(|v| (v - mean) * (v - mean)).sum::<f64>() / n;
            for v in out.iter_mut().skip(c).step_by(D) {
                *v = (*v - mean) / (var + EPSILON).sqrt();
            }
        }
        out
    };
    zscore(&zscore(&data.iter().map(|&v| v as f64).collect::<Vec<_>>()))
}

/// The rows written, in order, grouped by sequence: `(seq_id, values)`.
fn written(dir: &Path) -> Vec<(u64, Vec<f32>)> {
    let mut got: Vec<(u64, Vec<f32>)> = Vec::new();
    for b in common::read_parquet(&dir.join("out.parquet")) {
        let seq = b.column_by_name("seq_id").unwrap().as_primitive::<UInt64Type>();
        let act = b.column_by_name("act").unwrap().as_fixed_size_list();
        for r in 0..b.num_rows() {
            if got.last().is_none_or(|g| g.0 != seq.value(r)) {
                got.push((seq.value(r), Vec::new()));
            }
            let v = act.value(r);
            got.last_mut().unwrap().1.extend(v.as_primitive::<Float32Type>().values());
        }
    }
    got
}

/// Checks `got` (one stream's rows) against the float64 reference of `data`.
fn assert_zscores(got: &[f32], data: &[f32], at: &str) {
    assert_close(got, &reference(data), at);
}

/// Checks values against float64 ones (1e-4, relative above 1).
fn assert_close(got: &[f32], want: &[f64], at: &str) {
    assert_eq!(got.len(), want.len(), "{at}: values");
    for (i, (g, w)) in got.iter().zip(want.iter().copied()).enumerate() {
        assert!(
            (*g as f64 - w).abs() <= 1e-4 * w.abs().max(1.0),
            "{at}, row {}, column {}: {g} vs {w} (float64)",
            i / D,
            i % D
        );
    }
}

fn start(
    dir: &Path,
    workers: usize,
    source: &str,
) -> (std::thread::JoinHandle<neurostream::Result<neurostream::RunReport>>, String) {
    let compiled = PipelineSpec::from_toml_str(&pipeline(dir, workers, source), ".")
        .unwrap()
        .compile(&registry())
        .unwrap();
    let run = std::thread::spawn(move || neurostream::run(compiled, RunOptions::default()));
    (run, wait_for_address(dir))
}

fn wait_for_address(dir: &Path) -> String {
    let started = Instant::now();
    loop {
        if let Ok(a) = std::fs::read_to_string(dir.join("address.txt")) {
            if !a.trim().is_empty() {
                return a.trim().to_string();
            }
        }
        assert!(started.elapsed() < Duration::from_secs(30), "never listened");
        std::thread::sleep(Duration::from_millis(5));
    }
}

#[test]
fn an_unnamed_clients_stream_ends_with_its_connection_and_a_named_one_continues() {
    for workers in [1, 2] {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        let (run, addr) = start(d, workers, "connections = 8");

        // A named client (sequence 100) opens first and stays connected while six unnamed ones
        // (sequences 1 to 6) come and go; then it reconnects under its name, sends more
        // (sequence 101), leaves.
        let keep = Some("-keep");
        let keep_data = values(9, 90);
        let mut named = connect(&addr, keep);
        named.write(&batch(&schema(keep), 100, &keep_data[..40 * D])).unwrap();
        let mut expected = Vec::new();
        for k in 1..=6u64 {
            let data = values(k as usize, 23 + 7 * k as usize);
            let mut w = connect(&addr, None);
            // Two batches: the state spans frames.
            let half = (data.len() / D / 2) * D;
            w.write(&batch(&schema(None), k, &data[..half])).unwrap();
            w.write(&batch(&schema(None), k, &data[half..])).unwrap();
            w.finish().unwrap();
            expected.push((k, data));
        }
        named.finish().unwrap();
        drop(named);
        let mut again = connect(&addr, keep);
        again.write(&batch(&schema(keep), 101, &keep_data[40 * D..])).unwrap();
        again.finish().unwrap();
        drop(again);
        run.join().unwrap().unwrap();

        let mut got = written(d);
        // Each connection's rows together (one release). On one worker, whose event times
        // order everything, the unnamed ones come as their connections ended (in whatever order
        // the server finished reading them) and the named one last: released at the end of the
        // run with the others it would come first, "live/-keep" sorting before "live/1". (On two
        // workers the named stream's rows take the last time its own worker saw.) The named
        // stream's two connections are read on their own threads: on a busy machine the second
        // one's rows can arrive first.
        let mut order: Vec<u64> = got.iter().map(|g| g.0).collect();
        if workers == 1 {
            let mut last_two = order[order.len().saturating_sub(2)..].to_vec();
            last_two.sort();
            assert_eq!(last_two, [100, 101], "{order:?}: the named stream is not last");
        }
        order.sort();
        let want: Vec<u64> = expected.iter().map(|e| e.0).chain([100, 101]).collect();
        assert_eq!(order, want, "{workers} workers: each connection's rows in one piece");
        got.sort_by_key(|g| g.0);
        for ((seq, rows), (_, data)) in got.iter().zip(&expected) {
            assert_zscores(rows, data, &format!("{workers} workers, sequence {seq}"));
        }
        // The named stream is z-scored over both of its connections' rows.
        let named = reference(&keep_data);
        let at = format!("{workers} workers, the named stream");
        assert_close(&got[6].1, &named[..40 * D], &at);
        assert_close(&got[7].1, &named[40 * D..], &at);
    }
}

/// `end_named_streams_after_s`: a named stream whose client stays away longer ends (its rows
/// come out z-scored alone), and one that comes back in time continues (z-scored together).
#[test]
fn a_named_stream_ends_when_its_clients_stay_away_past_the_limit() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let (run, addr) = start(d, 1, "connections = 3\nend_named_streams_after_s = 2.0");
    let name = Some("replica");
    let send = |seq: u64, data: &[f32]| {
        let mut w = connect(&addr, name);
        w.write(&batch(&schema(name), seq, data)).unwrap();
        w.finish().unwrap();
    };
    let (first, second, third) = (values(1, 40), values(2, 30), values(3, 25));
    send(1, &first);
    // Away for 4.5 s: the stream ends 2 s after the connection closed (margins for a busy
    // machine on both sides).
    std::thread::sleep(Duration::from_millis(4500));
    // Back: a fresh stream, which the next connection continues at once.
    send(2, &second);
    std::thread::sleep(Duration::from_millis(100));
    send(3, &third);
    run.join().unwrap().unwrap();
    let mut got = written(d);
    assert_eq!(got[0].0, 1, "the first connection's rows come first, when its stream ended");
    assert_zscores(&got[0].1, &first, "the stream that ended");
    // The two later connections were read side by side, in either order; the z-scores use the
    // statistics of both together.
    got[1..].sort_by_key(|g| g.0);
    let order: Vec<u64> = got.iter().map(|g| g.0).collect();
    assert_eq!(order, [1, 2, 3], "each connection's rows in one piece");
    let joined: Vec<f32> = second.iter().chain(&third).copied().collect();
    let want = reference(&joined);
    assert_close(&got[1].1, &want[..second.len()], "the stream that came back");
    assert_close(&got[2].1, &want[second.len()..], "the connection that continued it");
}

/// A checkpointed run killed (SIGKILL) while an unnamed client is connected: the resumed run
/// ends that stream before it accepts anyone (its connection died with the process), so its
/// held rows come out z-scored over its own rows, and a new unnamed client gets a name of its
/// own (`live/1.0`) and fresh state. Before, the new client was `live/0` again and continued
/// the dead client's statistics, and the dead stream stayed open to the end of the run.
#[test]
fn a_resumed_run_ends_the_unnamed_streams_of_the_killed_one() {
    for workers in [1, 2] {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        std::fs::write(d.join("p.toml"), pipeline(d, workers, "connections = 1")).unwrap();
        let run = |resume: bool| {
            let _ = std::fs::remove_file(d.join("address.txt"));
            let mut cmd = std::process::Command::new(common::bin());
            cmd.current_dir(d)
                .args([
                    "run",
                    "p.toml",
                    "--quiet",
                    "--checkpoint-dir",
                    "ck",
                    "--checkpoint-every",
                    "0.05",
                ])
                .stdout(std::process::Stdio::null())
                .stderr(std::process::Stdio::piped());
            if resume {
                cmd.arg("--resume");
            }
            let child = cmd.spawn().unwrap();
            (child, wait_for_address(d))
        };
        let (first, second) = (values(1, 60), values(2, 45));
        let (mut killed, addr) = run(false);
        let mut dead = connect(&addr, None);
        dead.write(&batch(&schema(None), 1, &first)).unwrap();
        dead.flush().unwrap();
        // Killed once the source has read the rows: they are in its journal (and, checkpoints
        // coming every 50 ms, most likely in a checkpoint too).
        let journal = d.join("ck/journal");
        let started = Instant::now();
        while !journaled(&journal) {
            assert!(
                started.elapsed() < Duration::from_secs(60),
                "the rows never reached the journal"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        std::thread::sleep(Duration::from_millis(300));
        killed.kill().unwrap();
        killed.wait().unwrap();
        drop(dead);

        let (resumed, addr) = run(true);
        let mut fresh = connect(&addr, None);
        fresh.write(&batch(&schema(None), 2, &second)).unwrap();
        fresh.finish().unwrap();
        drop(fresh);
        common::wait_ok(resumed);

        let got = written(d);
        let order: Vec<u64> = got.iter().map(|g| g.0).collect();
        assert_eq!(
            order,
            [1, 2],
            "{workers} workers: the dead client's rows first, when the resume ended its stream"
        );
        assert_zscores(&got[0].1, &first, &format!("{workers} workers, the killed run's client"));
        assert_zscores(&got[1].1, &second, &format!("{workers} workers, the resumed run's client"));
    }
}

/// Whether a checkpoint's journals (`JOURNAL/<source>.<worker>/`) hold a record.
fn journaled(journal: &Path) -> bool {
    let readers = std::fs::read_dir(journal).into_iter().flatten().flatten();
    let files = readers.flat_map(|r| std::fs::read_dir(r.path()).into_iter().flatten().flatten());
    files
        .into_iter()
        .any(|e| e.file_name().to_string_lossy().ends_with(".wal") && e.metadata().is_ok_and(|m| m.len() > 0))
}

/// The console sink summarizes a stream when it ends (on stdout, marked `[ended]`) and forgets
/// it; the run report then counts the ended streams instead of listing every past client. The
/// summary's mean and standard deviation are checked against float64.
#[test]
fn the_console_sink_summarizes_a_stream_when_it_ends() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    std::fs::write(
        d.join("p.toml"),
        format!(
            "[sources.live]\nkind = \"arrow_tcp\"\nlisten = \"127.0.0.1:0\"\nd_model = {D}\n\
             address_file = \"address.txt\"\nconnections = 3\n\n\
             [sinks.show]\nkind = \"console\"\ninput = \"live\"\n"
        ),
    )
    .unwrap();
    let (child, addr) = common::spawn_live(d, "p.toml", &["--quiet"]);
    let sent: Vec<Vec<f32>> = (1..=3).map(|k| values(k, 10 + k)).collect();
    for (k, data) in sent.iter().enumerate() {
        let mut w = connect(&addr, None);
        w.write(&batch(&schema(None), k as u64, data)).unwrap();
        w.finish().unwrap();
    }
    let out = common::wait_ok(child);
    for (k, data) in sent.iter().enumerate() {
        let head = format!("stream live/{k}: {} rows", data.len() / D);
        let at = out.find(&head).unwrap_or_else(|| panic!("no summary of live/{k}:\n{out}"));
        let line = out[at..].lines().next().unwrap();
        assert!(line.ends_with("[ended]"), "{line}");
        // The first channel's line follows: its mean and standard deviation (population).
        let column: Vec<f64> = data.iter().step_by(D).map(|&v| v as f64).collect();
        let mean = column.iter().sum::<f64>() / column.len() as f64;
        let std = (column.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / column.len() as f64).sqrt();
        let channel = out[at..].lines().nth(1).unwrap();
        let number = |key: &str| -> f64 {
            let rest = &channel[channel.find(key).unwrap() + key.len()..];
            rest.split_whitespace().next().unwrap().parse().unwrap()
        };
        assert!((number("mean") - mean).abs() < 1e-4, "{channel}: mean {mean}");
        assert!((number("std") - std).abs() < 1e-4, "{channel}: std {std}");
    }
    assert!(out.contains("3 streams ended during the run"), "{out}");
    assert_eq!(out.matches("stream live/0:").count(), 1, "summarized twice:\n{out}");
}
