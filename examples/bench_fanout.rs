//! Subscriber fan-out on loopback: throughput and latency with 1, 8 and 64 subscribers, for the
//! engine (`arrow_tcp` source -> `arrow_tcp` sink) and for a hand-written pyarrow broadcaster
//! (`bench/fanout_baseline.py`) fed by the same producer and read by the same subscribers.
//! Writes `bench/FANOUT_RESULTS.md`.
//!
//!   cargo run --release --example bench_fanout -- [--batches 2000] [--paced 200] [--rows 512] [--d 256]
//!                                                  [--repeats 3] [--python .venv/bin/python]
//!
//! Each throughput pass runs `repeats` times, the engine and pyarrow alternated; the table shows
//! the median run of each and the range of the per-pair ratios (a one-subscriber pass moves 1 GB
//! in about half a second, so one run is at the mercy of the machine's noise).
//!
//! Throughput pass: the producer sends `batches` record batches of `rows` activations (`d`
//! floats) as fast as TCP lets it. Latency pass: `paced` batches, one every 5 ms. Each row is
//! stamped with its send time in the `time` column (the engine keeps a client's `time`); each
//! subscriber reads its IPC stream to the end; latency is receive time minus send time of each
//! batch's first row. Subscribers use the default `disconnect` policy
//! with a queue deep enough (4096 batches) that none is dropped.
#[path = "common/bench_out.rs"]
mod bench_out;

use std::io::{BufRead, BufReader, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use arrow::array::{ArrayRef, AsArray, FixedSizeListArray, Float32Array, TimestampNanosecondArray, UInt32Array, UInt64Array};
use arrow::datatypes::{DataType, Field, Schema, TimeUnit, TimestampNanosecondType};
use arrow::ipc::reader::StreamReader;
use arrow::ipc::writer::StreamWriter;
use arrow::record_batch::RecordBatch;

struct Args {
    batches: usize,
    /// Latency pass: batches sent, one every `pace` (0: the throughput pass, as fast as possible).
    paced: usize,
    pace: Duration,
    rows: usize,
    d: usize,
    repeats: usize,
    python: Option<PathBuf>,
}

fn parse_args() -> Args {
    let mut a = Args {
        batches: 2000,
        paced: 200,
        pace: Duration::ZERO,
        rows: 512,
        d: 256,
        repeats: 3,
        python: None,
    };
    let v: Vec<String> = std::env::args().skip(1).collect();
    let mut i = 0;
    while i < v.len() {
        let val = v.get(i + 1).cloned().unwrap_or_default();
        match v[i].as_str() {
            "--batches" => a.batches = val.parse().expect("--batches N"),
            "--paced" => a.paced = val.parse().expect("--paced N"),
            "--rows" => a.rows = val.parse().expect("--rows N"),
            "--d" => a.d = val.parse().expect("--d N"),
            "--repeats" => a.repeats = val.parse::<usize>().expect("--repeats N").max(1),
            "--python" => a.python = Some(PathBuf::from(val)),
            other => panic!("unknown argument {other}"),
        }
        i += 2;
    }
    if a.python.is_none() {
        let venv = Path::new(env!("CARGO_MANIFEST_DIR")).join(".venv/bin/python");
        a.python = Some(if venv.exists() { venv } else { PathBuf::from("python3") });
    }
    a
}

fn now_ns() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos() as i64
}

fn schema(d: usize) -> Arc<Schema> {
    let item = Arc::new(Field::new("item", DataType::Float32, false));
    let meta: std::collections::HashMap<String, String> = [
        ("neurostream.layout".to_string(), "activations".to_string()),
        ("neurostream.d_model".to_string(), d.to_string()),
    ]
    .into_iter()
    .collect();
    Arc::new(Schema::new_with_metadata(
        vec![
            Field::new("seq_id", DataType::UInt64, false),
            Field::new("pos", DataType::UInt32, false),
            Field::new("time", DataType::Timestamp(TimeUnit::Nanosecond, Some("UTC".into())), true),
            Field::new("act", DataType::FixedSizeList(item.clone(), d as i32), false),
        ],
        meta,
    ))
}

/// Sends the batches to `addr` as one IPC stream, each stamped with its send time.
fn produce(addr: &str, a: &Args) {
    let schema = schema(a.d);
    let values: Vec<f32> = (0..a.rows * a.d).map(|i| (i % 97) as f32 * 0.01).collect();
    let item = Arc::new(Field::new("item", DataType::Float32, false));
    let act: ArrayRef = Arc::new(FixedSizeListArray::new(
        item,
        a.d as i32,
        Arc::new(Float32Array::from(values)),
        None,
    ));
    let stream = TcpStream::connect(addr).expect("connect to the producer port");
    stream.set_nodelay(true).unwrap();
    let mut w = StreamWriter::try_new(std::io::BufWriter::new(stream), &schema).unwrap();
    let next = Instant::now();
    for b in 0..a.batches {
        if !a.pace.is_zero() {
            let due = next + a.pace * b as u32;
            if let Some(wait) = due.checked_duration_since(Instant::now()) {
                std::thread::sleep(wait);
            }
        }
        let t = now_ns();
        let columns: Vec<ArrayRef> = vec![
            Arc::new(UInt64Array::from(vec![b as u64; a.rows])),
            Arc::new(UInt32Array::from_iter_values(0..a.rows as u32)),
            Arc::new(TimestampNanosecondArray::from(vec![t; a.rows]).with_timezone("UTC")),
            act.clone(),
        ];
        w.write(&RecordBatch::try_new(schema.clone(), columns).unwrap()).unwrap();
        w.flush().unwrap();
    }
    w.finish().unwrap();
}

/// Connects, asks for `frames`, reads to the end: (rows, latencies in ms).
fn subscribe(addr: &str) -> std::thread::JoinHandle<(usize, Vec<f64>)> {
    let mut s = TcpStream::connect(addr).expect("connect as a subscriber");
    s.write_all(b"frames\n").unwrap();
    std::thread::spawn(move || {
        let mut r = BufReader::new(s);
        let mut status = String::new();
        r.read_line(&mut status).unwrap();
        assert_eq!(status.trim(), "OK", "subscription refused");
        let (mut rows, mut lat) = (0, Vec::new());
        for b in StreamReader::try_new(r, None).unwrap() {
            let b = b.unwrap();
            let t = b.column_by_name("time").unwrap().as_primitive::<TimestampNanosecondType>();
            if !t.is_empty() {
                lat.push((now_ns() - t.value(0)) as f64 / 1e6);
            }
            rows += b.num_rows();
        }
        (rows, lat)
    })
}

fn wait_file(path: &Path) -> String {
    let t = Instant::now();
    loop {
        if let Ok(s) = std::fs::read_to_string(path) {
            if !s.trim().is_empty() {
                return s.trim().to_string(); // both servers write the file atomically
            }
        }
        assert!(t.elapsed() < Duration::from_secs(60), "{} never appeared", path.display());
        std::thread::sleep(Duration::from_millis(2));
    }
}

struct Outcome {
    wall: f64,
    rows: Vec<usize>,
    lat: Vec<f64>,
}

fn finish(started: Instant, subs: Vec<std::thread::JoinHandle<(usize, Vec<f64>)>>) -> Outcome {
    let mut rows = Vec::new();
    let mut lat = Vec::new();
    for s in subs {
        let (r, l) = s.join().unwrap();
        rows.push(r);
        lat.extend(l);
    }
    Outcome {
        wall: started.elapsed().as_secs_f64(),
        rows,
        lat,
    }
}

fn engine(n: usize, a: &Args, dir: &Path) -> Outcome {
    let (src, sink) = (dir.join("src.addr"), dir.join("sink.addr"));
    let _ = std::fs::remove_file(&src);
    let _ = std::fs::remove_file(&sink);
    let toml = format!(
        r#"
[sources.live]
kind = "arrow_tcp"
listen = "127.0.0.1:0"
d_model = {d}
connections = 1
address_file = "{src}"

[sinks.out]
kind = "arrow_tcp"
input = "live"
listen = "127.0.0.1:0"
address_file = "{sink}"
wait_for_subscribers = {n}
queue_batches = 4096
"#,
        d = a.d,
        src = src.display(),
        sink = sink.display()
    );
    let pipeline = neurostream::PipelineSpec::from_toml_str(&toml, dir)
        .unwrap()
        .compile(&neurostream::registry())
        .unwrap();
    let run = std::thread::spawn(move || neurostream::run(pipeline, neurostream::RunOptions::default()));
    let sink_addr = wait_file(&sink);
    let subs: Vec<_> = (0..n).map(|_| subscribe(&sink_addr)).collect();
    let src_addr = wait_file(&src);
    let started = Instant::now();
    produce(&src_addr, a);
    let out = finish(started, subs);
    run.join().unwrap().expect("the engine run failed");
    out
}

fn baseline(n: usize, a: &Args, dir: &Path) -> Outcome {
    let file = dir.join("py.addr");
    let _ = std::fs::remove_file(&file);
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("bench/fanout_baseline.py");
    let mut child = std::process::Command::new(a.python.as_ref().unwrap())
        .arg(script)
        .args(["--subscribers", &n.to_string(), "--address-file"])
        .arg(&file)
        .spawn()
        .expect("start the Python baseline");
    let ports = wait_file(&file);
    let (prod, sub) = ports.split_once(' ').unwrap();
    let subs: Vec<_> = (0..n).map(|_| subscribe(&format!("127.0.0.1:{sub}"))).collect();
    let started = Instant::now();
    produce(&format!("127.0.0.1:{prod}"), a);
    let out = finish(started, subs);
    assert!(child.wait().unwrap().success(), "the Python baseline failed");
    out
}

/// `1234567.8` as `1,234,568`.
fn thousands(x: f64) -> String {
    let digits = format!("{:.0}", x);
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(c);
    }
    out
}

fn pct(v: &mut [f64], q: f64) -> f64 {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    v[((q * v.len() as f64).ceil() as usize).clamp(1, v.len()) - 1]
}

fn main() {
    let a = parse_args();
    let dir = tempfile::tempdir().unwrap();
    let mb = (a.batches * a.rows * a.d * 4) as f64 / 1e6;
    let mut lines = vec![
        "# Subscriber fan-out on loopback".to_string(),
        String::new(),
        format!(
            "Command: `cargo run --release --example bench_fanout -- --batches {} --rows {} --d {} --repeats {}` ({}; release build, default target; producer, server and subscribers on the same machine).",
            a.batches,
            a.rows,
            a.d,
            a.repeats,
            bench_out::machine()
        ),
        String::new(),
        format!(
            "{} batches of {} activations × {} float32 ({mb:.0} MB) sent as fast as TCP allows, fanned out to every subscriber as Arrow IPC. \
             Engine: `arrow_tcp` source -> `arrow_tcp` sink (release build, 1 worker). Baseline: `bench/fanout_baseline.py`, \
             the same fan-out hand-written with pyarrow (a thread and a queue per subscriber). Throughput counts rows delivered \
             to all subscribers together; latency is send to receive of each batch's first row, over all subscribers.",
            a.batches, a.rows, a.d
        ),
        String::new(),
        "| subscribers | server | wall s | rows/s delivered (all subscribers) | MB/s delivered | throughput vs pyarrow | latency p50 ms | p99 ms | max ms (paced, 200 batches/s) |".to_string(),
        "| ---: | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |".to_string(),
    ];
    let paced = Args {
        batches: a.paced,
        pace: Duration::from_millis(5),
        python: a.python.clone(),
        ..a
    };
    let mut spreads = Vec::new();
    for n in [1usize, 8, 64] {
        let rate = |o: &Outcome| o.rows.iter().sum::<usize>() as f64 / o.wall;
        let (mut es, mut ps) = (Vec::new(), Vec::new());
        for _ in 0..a.repeats {
            es.push(engine(n, &a, dir.path()));
            ps.push(baseline(n, &a, dir.path()));
        }
        for (o, what) in es.iter().map(|o| (o, "engine")).chain(ps.iter().map(|o| (o, "pyarrow"))) {
            assert!(
                o.rows.iter().all(|&r| r == a.batches * a.rows),
                "{what} with {n} subscribers: some subscriber missed rows: {:?}",
                o.rows
            );
        }
        let mut pairs: Vec<f64> = es.iter().zip(&ps).map(|(e, p)| rate(e) / rate(p)).collect();
        pairs.sort_by(|x, y| x.partial_cmp(y).unwrap());
        spreads.push(format!(
            "{n} subscriber{}: {:.2}–{:.2}x",
            if n == 1 { "" } else { "s" },
            pairs[0],
            pairs[pairs.len() - 1]
        ));
        let median = |mut v: Vec<Outcome>| {
            v.sort_by(|x, y| x.wall.partial_cmp(&y.wall).unwrap());
            v.swap_remove(v.len() / 2)
        };
        let (e, p) = (median(es), median(ps));
        let mut e_lat = engine(n, &paced, dir.path()).lat;
        let mut p_lat = baseline(n, &paced, dir.path()).lat;
        let (re, rp) = (rate(&e), rate(&p));
        for (o, lat, what, ratio) in [
            (&e, &mut e_lat, "neurostream", re / rp),
            (&p, &mut p_lat, "pyarrow (hand-written)", 1.0),
        ] {
            let r = rate(o);
            let line = format!(
                "| {n} | {what} | {:.2} | {} | {:.0} | {ratio:.2} | {:.2} | {:.2} | {:.2} |",
                o.wall,
                thousands(r),
                r * (a.d * 4) as f64 / 1e6,
                pct(lat, 0.5),
                pct(lat, 0.99),
                pct(lat, 1.0),
            );
            println!("{line}");
            lines.push(line);
        }
    }
    lines.push(String::new());
    lines.push(format!(
        "Throughput: the median of {} alternated runs of each server (wall s and rows/s are that run's; the ratio is of the two medians). \
         Range of the ratio over the {} pairs of runs: {}.",
        a.repeats,
        a.repeats,
        spreads.join(", ")
    ));
    let out = bench_out::results_path("FANOUT_RESULTS.md");
    std::fs::write(&out, lines.join("\n") + "\n").unwrap();
    println!("wrote {}", out.display());
}
