//! Live consumers over the network: the `arrow_tcp` subscriber server (LZ4 on request,
//! per-subscriber slow policies with the dropped count reported to the subscriber, tokens,
//! request size limit, garbage and half-sent requests) and the `websocket` endpoint (JSON and
//! Arrow IPC messages, refusals in the handshake). Values are checked against the Parquet file
//! the same run writes.

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use arrow::array::{AsArray, RecordBatch};
use arrow::datatypes::{Float32Type, Int64Type, UInt64Type};
use arrow::ipc::reader::StreamReader;
use neurostream::{registry, PipelineSpec, RunOptions, RunReport};

/// 64 channels at 256 Hz for `seconds` in chunks of 1024 samples (256 KiB a batch), into
/// `sink` (TOML of the live sink, input `eeg`) and a Parquet file of the same frames.
fn pipeline(dir: &Path, seconds: f64, sink: &str) -> String {
    format!(
        r#"
[sources.eeg]
kind = "synthetic_eeg"
channels = 64
sample_rate = 256.0
seconds = {seconds}
chunk = 1024
seed = 3

[sinks.file]
kind = "parquet"
input = "eeg"
path = "{}"

{sink}
"#,
        dir.join("eeg.parquet").display()
    )
}

fn start(toml: String) -> std::thread::JoinHandle<neurostream::Result<RunReport>> {
    let pipeline = PipelineSpec::from_toml_str(&toml, ".").unwrap().compile(&registry()).unwrap();
    std::thread::spawn(move || neurostream::run(pipeline, RunOptions::default()))
}

fn address(file: &Path) -> String {
    let started = Instant::now();
    loop {
        if let Ok(a) = std::fs::read_to_string(file) {
            if a.ends_with('\n') || a.contains(':') {
                return a.trim().to_string();
            }
        }
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "the sink never wrote {}",
            file.display()
        );
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// Connects and sends `request`; returns the status line and the connection.
fn subscribe(addr: &str, request: &str) -> (String, BufReader<TcpStream>) {
    let mut s = TcpStream::connect(addr).unwrap();
    s.write_all(request.as_bytes()).unwrap();
    let mut r = BufReader::new(s);
    let mut status = String::new();
    r.read_line(&mut status).unwrap();
    (status.trim().to_string(), r)
}

fn read_all(r: BufReader<TcpStream>) -> Vec<RecordBatch> {
    StreamReader::try_new(r, None).unwrap().map(|b| b.unwrap()).collect()
}

/// (sample, first channel) of every row, from Parquet-layout batches.
fn samples_and_ch0(batches: &[RecordBatch]) -> Vec<(i64, f32)> {
    let mut v = Vec::new();
    for b in batches {
        let s = b.column_by_name("sample").unwrap().as_primitive::<Int64Type>();
        let c = b.column(2).as_primitive::<Float32Type>();
        v.extend(s.values().iter().copied().zip(c.values().iter().copied()));
    }
    v
}

fn temp_file(dir: &Path, name: &str) -> PathBuf {
    dir.join(name)
}

#[test]
fn tcp_subscribers_get_lz4_on_request_and_their_own_slow_policy() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let addr_file = temp_file(d, "addr");
    let sink = format!(
        "[sinks.live]\nkind = \"arrow_tcp\"\ninput = \"eeg\"\nlisten = \"127.0.0.1:0\"\naddress_file = \"{}\"\nqueue_batches = 4\nwait_for_subscribers = 3\n",
        addr_file.display()
    );
    // 600 s: 150 batches of 256 KiB, far more than the socket buffers of a reader that sleeps.
    let run = start(pipeline(d, 600.0, &sink));
    let addr = address(&addr_file);
    let (ok1, fast) = subscribe(&addr, "frames lz4\n");
    let (ok2, slow) = subscribe(&addr, "frames slow=drop_oldest\n");
    let (ok3, cut) = subscribe(&addr, "frames slow=disconnect\n");
    assert_eq!((ok1.as_str(), ok2.as_str(), ok3.as_str()), ("OK", "OK", "OK"));
    let fast = std::thread::spawn(move || read_all(fast));
    // The slow ones read nothing for a while, then everything they are given.
    std::thread::sleep(Duration::from_millis(1500));
    let slow = std::thread::spawn(move || read_all(slow));
    let cut = std::thread::spawn(move || read_all(cut));
    let report = run.join().unwrap().unwrap();
    let (fast, slow, cut) = (fast.join().unwrap(), slow.join().unwrap(), cut.join().unwrap());
    let file = common::read_parquet(&d.join("eeg.parquet"));
    let expected = samples_and_ch0(&file);
    assert_eq!(expected.len(), 600 * 256);
    // The LZ4 subscriber got every row, equal to the Parquet file.
    assert_eq!(
        samples_and_ch0(&fast),
        expected,
        "lz4 subscriber: every row, in order, same values"
    );
    // Drop-oldest: the newest batches, the dropped count in each, received + dropped = sent.
    let last = slow.last().unwrap();
    let dropped = last
        .column_by_name("_dropped_batches")
        .unwrap()
        .as_primitive::<UInt64Type>()
        .value(0);
    assert!(dropped > 0, "the sleeping subscriber fell behind");
    assert_eq!(
        slow.len() as u64 + dropped,
        150,
        "received {} + dropped {dropped} = sent",
        slow.len()
    );
    assert_eq!(
        samples_and_ch0(std::slice::from_ref(last)),
        expected[expected.len() - 1024..].to_vec()
    );
    let counts: Vec<u64> = slow
        .iter()
        .map(|b| {
            b.column_by_name("_dropped_batches")
                .unwrap()
                .as_primitive::<UInt64Type>()
                .value(0)
        })
        .collect();
    assert!(counts.windows(2).all(|w| w[0] <= w[1]), "the count only grows: {counts:?}");
    // Disconnect: cut off early, with the batches it had.
    assert!(cut.len() < 150 && !cut.is_empty(), "{} batches", cut.len());
    assert!(cut[0].column_by_name("_dropped_batches").is_none());
    let line = report.sink_lines.iter().find(|l| l.starts_with("sinks.live:")).unwrap();
    assert!(
        line.contains("3 subscriber(s) served 150 batches") && line.contains("1 cut off"),
        "{line}"
    );
    assert!(line.contains(&format!("{dropped} batches dropped")), "{line}");
}

#[test]
fn tcp_requests_need_the_token_fit_the_size_limit_and_garbage_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let addr_file = temp_file(d, "addr");
    let sink = format!(
        "[sinks.live]\nkind = \"arrow_tcp\"\ninput = \"eeg\"\nlisten = \"127.0.0.1:0\"\naddress_file = \"{}\"\ntoken = \"s3cret\"\nwait_for_subscribers = 1\n",
        addr_file.display()
    );
    let run = start(pipeline(d, 20.0, &sink));
    let addr = address(&addr_file);
    let (status, _) = subscribe(&addr, "frames\n");
    assert!(status.starts_with("ERR unauthorized"), "{status}");
    let (status, _) = subscribe(&addr, "frames token=wrong\n");
    assert!(status.starts_with("ERR unauthorized"), "{status}");
    let (status, _) = subscribe(&addr, &format!("frames token=s3cret {}\n", "x".repeat(5000)));
    assert!(status.contains("longer than 4096 bytes"), "{status}");
    let (status, _) = subscribe(&addr, "frames please token=s3cret\n");
    assert!(status.contains("unknown option `please`"), "{status}");
    let (status, _) = subscribe(&addr, "alerts token=s3cret\n");
    assert!(status.contains("no `alerts` here") && status.contains("frames"), "{status}");
    // Binary garbage, and a client that leaves halfway through its request line.
    let mut g = TcpStream::connect(&addr).unwrap();
    g.write_all(&[0xff, 0xfe, 0x00, 0x13, b'\n']).unwrap();
    let mut answer = String::new();
    let _ = BufReader::new(g).read_line(&mut answer);
    assert!(answer.starts_with("ERR"), "{answer}");
    let mut half = TcpStream::connect(&addr).unwrap();
    half.write_all(b"fram").unwrap();
    drop(half);
    // Then a proper subscriber gets the whole run.
    let (status, good) = subscribe(&addr, "frames token=s3cret\n");
    assert_eq!(status, "OK");
    let got = read_all(good);
    run.join().unwrap().unwrap();
    assert_eq!(
        samples_and_ch0(&got),
        samples_and_ch0(&common::read_parquet(&d.join("eeg.parquet")))
    );
    // Off loopback without a token is a configuration error.
    let bad = pipeline(
        d,
        1.0,
        "[sinks.live]\nkind = \"arrow_tcp\"\ninput = \"eeg\"\nlisten = \"0.0.0.0:0\"\n",
    );
    let err = PipelineSpec::from_toml_str(&bad, ".")
        .unwrap()
        .compile(&registry())
        .err()
        .unwrap();
    assert!(
        err.to_string().contains("not a loopback address") && err.to_string().contains("token"),
        "{err}"
    );
}

fn ws_connect(addr: &str, target: &str) -> Result<tungstenite::WebSocket<TcpStream>, (u16, String)> {
    let stream = TcpStream::connect(addr).unwrap();
    match tungstenite::client::client(format!("ws://{addr}{target}"), stream) {
        Ok((ws, _)) => Ok(ws),
        Err(tungstenite::HandshakeError::Failure(tungstenite::Error::Http(resp))) => {
            let body = resp
                .body()
                .as_ref()
                .map(|b| String::from_utf8_lossy(b).to_string())
                .unwrap_or_default();
            Err((resp.status().as_u16(), body))
        }
        Err(e) => panic!("handshake: {e}"),
    }
}

fn ws_messages(mut ws: tungstenite::WebSocket<TcpStream>) -> Vec<tungstenite::Message> {
    let mut out = Vec::new();
    loop {
        match ws.read() {
            Ok(tungstenite::Message::Close(_)) => break,
            Ok(m @ (tungstenite::Message::Text(_) | tungstenite::Message::Binary(_))) => out.push(m),
            Ok(_) => {}
            Err(tungstenite::Error::ConnectionClosed) | Err(tungstenite::Error::AlreadyClosed) => break,
            Err(e) => panic!("websocket read: {e}"),
        }
    }
    out
}

#[test]
fn websocket_clients_get_json_or_arrow_and_bad_requests_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let addr_file = temp_file(d, "addr");
    let sink = format!(
        "[sinks.ws]\nkind = \"websocket\"\ninput = \"eeg\"\nlisten = \"127.0.0.1:0\"\naddress_file = \"{}\"\ntoken = \"t0k\"\nwait_for_subscribers = 2\n",
        addr_file.display()
    );
    let run = start(pipeline(d, 40.0, &sink));
    let addr = address(&addr_file);
    assert_eq!(ws_connect(&addr, "/frames").err().unwrap().0, 401);
    let (status, body) = ws_connect(&addr, "/alerts?token=t0k").err().unwrap();
    assert!(status == 404 && body.contains("frames"), "{status} {body}");
    let (status, body) = ws_connect(&addr, "/frames?token=t0k&format=xml").err().unwrap();
    assert!(status == 400 && body.contains("format=xml"), "{status} {body}");
    let json = ws_connect(&addr, "/frames?token=t0k").unwrap();
    let arrow = ws_connect(&addr, "/frames?token=t0k&format=arrow").unwrap();
    let json = std::thread::spawn(move || ws_messages(json));
    let arrow = std::thread::spawn(move || ws_messages(arrow));
    run.join().unwrap().unwrap();
    let file = common::read_parquet(&d.join("eeg.parquet"));
    let expected = samples_and_ch0(&file);
    assert_eq!(expected.len(), 40 * 256);
    let ch0 = file[0].schema().field(2).name().clone();
    let mut from_json = Vec::new();
    for m in json.join().unwrap() {
        let tungstenite::Message::Text(t) = m else {
            panic!("JSON clients get text messages")
        };
        let v: serde_json::Value = serde_json::from_str(t.as_str()).unwrap();
        assert_eq!(v["output"], "frames");
        assert_eq!(v["dropped"], 0);
        for row in v["rows"].as_array().unwrap() {
            from_json.push((row["sample"].as_i64().unwrap(), row[&ch0].as_f64().unwrap() as f32));
        }
    }
    assert_eq!(from_json, expected, "JSON rows equal the Parquet file");
    let mut from_arrow = Vec::new();
    for m in arrow.join().unwrap() {
        let tungstenite::Message::Binary(b) = m else {
            panic!("Arrow clients get binary messages")
        };
        let batches: Vec<RecordBatch> = StreamReader::try_new(std::io::Cursor::new(b.to_vec()), None)
            .unwrap()
            .map(|b| b.unwrap())
            .collect();
        assert_eq!(batches.len(), 1, "one self-contained IPC stream per message");
        from_arrow.extend(samples_and_ch0(&batches));
    }
    assert_eq!(from_arrow, expected, "Arrow messages equal the Parquet file");
}

#[test]
fn an_oversized_websocket_message_from_a_client_closes_only_that_client() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let addr_file = temp_file(d, "addr");
    let sink = format!(
        "[sinks.ws]\nkind = \"websocket\"\ninput = \"eeg\"\nlisten = \"127.0.0.1:0\"\naddress_file = \"{}\"\nwait_for_subscribers = 2\n",
        addr_file.display()
    );
    let run = start(pipeline(d, 40.0, &sink));
    let addr = address(&addr_file);
    let mut rude = ws_connect(&addr, "/frames").unwrap();
    let polite = ws_connect(&addr, "/frames?format=arrow").unwrap();
    let polite = std::thread::spawn(move || ws_messages(polite));
    let _ = rude.send(tungstenite::Message::text("x".repeat(10_000)));
    // The server drops the rude client; reading from it ends (an error or a close).
    let started = Instant::now();
    loop {
        match rude.read() {
            Ok(tungstenite::Message::Close(_)) | Err(_) => break,
            Ok(_) => assert!(
                started.elapsed() < Duration::from_secs(30),
                "the oversized message was accepted"
            ),
        }
    }
    run.join().unwrap().unwrap();
    let n: usize = polite.join().unwrap().len();
    assert_eq!(n, 10, "the other client still got all 10 batches");
    let _ = rude.get_mut().read(&mut [0u8; 1]);
}

#[test]
fn subscribers_that_leave_are_forgotten_and_the_end_waits_at_most_10_s_for_one_that_never_reads() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let addr_file = temp_file(d, "addr");
    // Real-time EEG in small batches (8 a second) for 6 s; 300 subscribers connect and leave.
    let toml = format!(
        r#"
[sources.eeg]
kind = "synthetic_eeg"
channels = 8
sample_rate = 256.0
seconds = 6.0
chunk = 32
speed = 1.0
seed = 3

[sinks.live]
kind = "arrow_tcp"
input = "eeg"
listen = "127.0.0.1:0"
address_file = "{}"
queue_batches = 4
wait_for_subscribers = 1
"#,
        addr_file.display()
    );
    let run = start(toml);
    let addr = address(&addr_file);
    let (status, keeper) = subscribe(&addr, "frames\n");
    assert_eq!(status, "OK");
    let keeper = std::thread::spawn(move || read_all(keeper));
    for _ in 0..300 {
        let (status, gone) = subscribe(&addr, "frames slow=drop_oldest\n");
        assert_eq!(status, "OK");
        drop(gone);
    }
    let report = run.join().unwrap().unwrap();
    let kept = keeper.join().unwrap();
    assert_eq!(kept.len(), 48, "the subscriber that stayed got every batch");
    let line = report.sink_lines.iter().find(|l| l.starts_with("sinks.live:")).unwrap();
    assert!(
        line.contains("301 subscriber(s) served") && line.contains(" 0 batches dropped"),
        "subscribers that left must not be queued for (phantom drops): {line}"
    );

    // A subscriber that never reads while 37 MB are sent: the end waits at most 10 s for it.
    let sink = format!(
        "[sinks.live]\nkind = \"arrow_tcp\"\ninput = \"eeg\"\nlisten = \"127.0.0.1:0\"\naddress_file = \"{}\"\nqueue_batches = 4\nwait_for_subscribers = 1\n",
        addr_file.display()
    );
    std::fs::remove_file(&addr_file).unwrap();
    let started = Instant::now();
    let run = start(pipeline(d, 600.0, &sink));
    let addr = address(&addr_file);
    let (status, _sleeper) = subscribe(&addr, "frames slow=drop_oldest\n");
    assert_eq!(status, "OK");
    run.join().unwrap().unwrap();
    assert!(
        started.elapsed() < Duration::from_secs(14),
        "the end of the run waited {:?} for a subscriber that never reads",
        started.elapsed()
    );
}
