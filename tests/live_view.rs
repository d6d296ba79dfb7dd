//! The live view (`neurostream run --ui`) in a real browser: headless Chromium opens the page
//! during live runs and checks that every panel renders with data (numbers in the DOM equal the
//! run's counters, canvases drawn), that no JavaScript error occurs, that the page reconnects
//! when the run restarts, and that a token is required when set. Screenshots are kept in
//! `target/tmp/live_view-*.png`.

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::browser::Browser;
use serde_json::Value;

/// A `neurostream run --ui` in the background, its stderr collected as it comes.
struct Run {
    child: Child,
    addr: String,
    log: Arc<Mutex<String>>,
}

impl Drop for Run {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Run {
    fn start(dir: &Path, pipeline: &str, args: &[&str]) -> Run {
        let mut child = Command::new(common::bin())
            .args(["run", pipeline, "--quiet"])
            .args(args)
            .current_dir(dir)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn neurostream");
        let log = Arc::new(Mutex::new(String::new()));
        for pipe in [
            Box::new(child.stderr.take().unwrap()) as Box<dyn Read + Send>,
            Box::new(child.stdout.take().unwrap()),
        ] {
            let log = log.clone();
            std::thread::spawn(move || {
                for line in BufReader::new(pipe).lines().map_while(Result::ok) {
                    let mut l = log.lock().unwrap();
                    l.push_str(&line);
                    l.push('\n');
                }
            });
        }
        let start = Instant::now();
        loop {
            // A local cluster's launcher prefixes each line with its process (`[process 0] `).
            if let Some(addr) = log.lock().unwrap().lines().find_map(|l| l.split("live view: http://").nth(1)) {
                let addr = addr.trim_end_matches('/').to_string();
                return Run {
                    child,
                    addr,
                    log: log.clone(),
                };
            }
            if start.elapsed() > Duration::from_secs(60) || child.try_wait().unwrap().is_some() {
                let _ = child.kill();
                panic!("the live view never started:\n{}", log.lock().unwrap());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn log(&self) -> String {
        self.log.lock().unwrap().clone()
    }

    /// Waits until the run's report has been printed (the view then lingers).
    fn wait_report(&self) -> String {
        self.wait_reports(1)
    }

    /// Waits until `n` reports have been printed (one per process of a local cluster).
    fn wait_reports(&self, n: usize) -> String {
        let start = Instant::now();
        while self.log().matches("done in ").count() < n {
            assert!(
                start.elapsed() < Duration::from_secs(120),
                "the run did not finish:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        std::thread::sleep(Duration::from_millis(300));
        self.log()
    }
}

/// Rows in and out per node from the printed run report.
fn report_rows(report: &str) -> Vec<(String, u64, u64)> {
    report
        .lines()
        .filter_map(|l| {
            let t: Vec<&str> = l.split_whitespace().collect();
            (t.len() > 6 && t[1] == "in" && t[3] == "rows" && t[4] == "out")
                .then(|| (t[0].to_string(), t[2].parse().unwrap(), t[5].parse().unwrap()))
        })
        .collect()
}

fn shot(browser: &mut Browser, name: &str) {
    let path = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(format!("live_view-{name}.png"));
    browser.screenshot(&path);
    assert!(
        std::fs::metadata(&path).unwrap().len() > 5000,
        "{} is too small to show anything",
        path.display()
    );
}

/// JavaScript: how many pixels of the canvases under `selector` are drawn (not transparent).
fn drawn_pixels(selector: &str) -> String {
    format!(
        "[...document.querySelectorAll('{selector} canvas')].reduce((n, c) => {{ \
           const d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data; \
           let k = 0; for (let i = 3; i < d.length; i += 4) if (d[i] > 0) k++; return n + k; }}, 0)"
    )
}

fn examples() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("examples")
}

const EEG_PIPELINE: &str = r#"
[pipeline]
name = "ui-eeg"

[sources.eeg]
kind = "synthetic_eeg"
channels = 16
sample_rate = 250
seconds = 6
chunk = 25
speed = 1.0
marker_interval = 1.0

[operators.band]
kind = "butterworth"
input = "eeg"
btype = "bandpass"
cutoff = [1.0, 40.0]

[operators.power]
kind = "bandpower"
input = "band"
window_s = 1.0
step_s = 0.5

[operators.potato]
kind = "riemann_potato"
input = "band"
window_s = 1.0
step_s = 0.25
reference_windows = 4

[sinks.out]
kind = "console"
input = "power"
"#;

#[test]
fn signals_view_shows_the_graph_traces_markers_and_band_power_with_the_runs_counts() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("p.toml"), EEG_PIPELINE).unwrap();
    let run = Run::start(dir.path(), "p.toml", &["--ui", "127.0.0.1:0", "--ui-linger", "60"]);
    let mut b = Browser::start();
    b.goto(&format!("http://{}/", run.addr));
    b.wait_for(
        "document.querySelector('#connection').textContent === 'live'",
        Duration::from_secs(30),
    );
    // While the run goes: the source's row count in the DOM grows.
    let first = b.wait_for(
        "+document.querySelector('tr[data-node=\"sources.eeg\"] td[data-field=rows]').textContent",
        Duration::from_secs(30),
    );
    let later = b.wait_for(
        &format!("(() => {{ const n = +document.querySelector('tr[data-node=\"sources.eeg\"] td[data-field=rows]').textContent; return n > {first} ? n : 0; }})()"),
        Duration::from_secs(30),
    );
    assert!(later.as_u64().unwrap() > first.as_u64().unwrap());
    assert_eq!(b.eval("document.querySelectorAll('#dag g[data-node]').length"), 5);
    b.click("nav button[data-panel=signals]");
    b.wait_for(
        "+document.querySelector('#signal-plot').dataset.columns > 20",
        Duration::from_secs(30),
    );
    assert_eq!(b.eval("+document.querySelector('#signal-plot').dataset.channels"), 8);
    assert!(
        b.eval(&drawn_pixels("#signal-plot")).as_u64().unwrap() > 1000,
        "trace canvas is blank"
    );
    // Picking 4 other channels: the server sends those (and the plot draws them) within a
    // moment, not at the next tick only.
    b.eval(
        "(() => { const p = document.querySelector('#signal-channels'); \
           [...p.options].forEach((o, i) => o.selected = i >= 9 && i < 13); \
           p.dispatchEvent(new Event('change')); return 0; })()",
    );
    let shown = "(() => { const [n, s] = document.querySelector('#signal-stream').value.split(' / '); \
                  return latest.streams.find(x => x.node === n && x.stream === s); })()";
    b.wait_for(
        &format!(
            "JSON.stringify({shown}.traced) === '[9,10,11,12]' && +document.querySelector('#signal-plot').dataset.channels === 4"
        ),
        Duration::from_secs(3),
    );
    assert_eq!(b.eval(&format!("{shown}.min.length")), 4);
    // Markers reach the view; band power is shown as bars with a timeline.
    b.wait_for(
        "latest.streams.some(s => s.node === 'sources.eeg' && s.markers.length >= 2)",
        Duration::from_secs(30),
    );
    b.wait_for(
        "document.querySelectorAll('#signal-bars .card[data-stream=\"operators.power\"] .bars div').length === 80",
        Duration::from_secs(30),
    );
    shot(&mut b, "signals");
    // Once the run is over: every node's count in the DOM equals the run's report.
    let report = run.wait_report();
    b.click("nav button[data-panel=pipeline]");
    b.wait_for(
        "document.querySelector('#outcome').textContent.includes('ok')",
        Duration::from_secs(10),
    );
    let rows = report_rows(&report);
    assert_eq!(rows.len(), 5, "{report}");
    for (node, rows_in, rows_out) in rows {
        let expected = if node.starts_with("sources.") { rows_out } else { rows_in };
        let shown = b.eval(&format!(
            "+document.querySelector('tr[data-node=\"{node}\"] td[data-field=rows]').textContent"
        ));
        assert_eq!(
            shown.as_u64(),
            Some(expected),
            "{node}: page shows {shown}, report says {expected}"
        );
    }
    assert_eq!(rows_in_report(&report, "sources.eeg"), 1500);
    shot(&mut b, "pipeline");
    assert!(b.errors.is_empty(), "JavaScript errors: {:?}", b.errors);
}

fn rows_in_report(report: &str, node: &str) -> u64 {
    report_rows(report).into_iter().find(|r| r.0 == node).unwrap().2
}

#[test]
fn features_view_shows_densities_top_features_examples_alerts_and_quality() {
    let dir = tempfile::tempdir().unwrap();
    let data = examples().join("data");
    let pipeline = format!(
        r#"
[pipeline]
name = "ui-llm"

[sources.acts]
kind = "parquet"
path = "{acts}"
batch_rows = 64

[operators.sae]
kind = "sae_encode"
input = "acts"
sae = "{sae}"

[operators.stats]
kind = "feature_stats"
input = "sae"
window = 256
step = 128
top_k = 3
context = 4

[[operators.stats.alerts]]
rule = "feature_fires"
features = [0, 1, 2, 3, 4, 5, 6, 7]
min_count = 1

[operators.recon]
kind = "sae_reconstruct"
input = "acts"
sae = "{sae}"

[operators.quality]
kind = "token_stats"
input = "recon"
window = 256
step = 128

[[operators.quality.alerts]]
rule = "fvu_above"
above = 0.5

[operators.clusters]
kind = "kmeans"
input = "acts"
k = 4
window = 256

[sinks.quality_out]
kind = "console"
input = "quality"

[sinks.clusters_out]
kind = "console"
input = "clusters"

[sinks.stats_out]
kind = "console"
input = "stats"

[sinks.recon_out]
kind = "console"
input = "recon"
"#,
        acts = data.join("smollm2_l15_sample.parquet").display(),
        sae = data.join("smollm2_sae").display()
    );
    std::fs::write(dir.path().join("p.toml"), pipeline).unwrap();
    let run = Run::start(dir.path(), "p.toml", &["--ui", "127.0.0.1:0", "--ui-linger", "60"]);
    let report = run.wait_report();
    let mut b = Browser::start();
    b.goto(&format!("http://{}/", run.addr));
    b.wait_for("latest && latest.outcome === 'ok'", Duration::from_secs(30));
    b.click("nav button[data-panel=features]");
    let tokens = b.wait_for(
        "+document.querySelector('.card[data-stream=\"operators.sae\"] [data-field=tokens]').textContent",
        Duration::from_secs(10),
    );
    assert_eq!(tokens.as_u64(), Some(rows_in_report(&report, "sources.acts")));
    // The density histogram has its 32 bins, and as many features as the SAE has are counted.
    assert_eq!(
        b.eval("document.querySelectorAll('.card[data-stream=\"operators.sae\"] .density div').length"),
        32
    );
    let state: Value = b.eval("latest.streams.find(s => s.node === 'operators.sae')");
    let live: u64 = state["density_histogram"]["counts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c.as_u64().unwrap())
        .sum();
    assert_eq!(live + state["dead"].as_u64().unwrap(), state["n_features"].as_u64().unwrap());
    assert!(
        b.eval("document.querySelectorAll('.card[data-stream=\"operators.sae\"] table.top tbody tr').length")
            .as_u64()
            .unwrap()
            > 0
    );
    // Top examples as token context with the firing token highlighted; alerts as they fired.
    assert!(
        b.eval("document.querySelectorAll('#examples .ctx .hit').length")
            .as_u64()
            .unwrap()
            > 0
    );
    assert!(b.eval("+document.querySelector('#alerts').dataset.total").as_u64().unwrap() > 0);
    // Reconstruction quality over tokens.
    b.wait_for(
        &format!("{} > 500", drawn_pixels("#scalars .card[data-stream=\"operators.recon\"]")),
        Duration::from_secs(10),
    );
    shot(&mut b, "features");
    b.click("nav button[data-panel=structure]");
    b.wait_for(
        "document.querySelectorAll('#structure .card[data-table]').length >= 3",
        Duration::from_secs(10),
    );
    shot(&mut b, "structure");
    assert!(b.errors.is_empty(), "JavaScript errors: {:?}", b.errors);
}

/// A plain HTTP GET of `target` on `addr`; returns the status code.
fn http_status(addr: &str, target: &str) -> u16 {
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    write!(s, "GET {target} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n").unwrap();
    let mut text = String::new();
    let _ = s.read_to_string(&mut text);
    text.split_whitespace().nth(1).and_then(|c| c.parse().ok()).unwrap_or(0)
}

#[test]
fn the_page_reconnects_when_the_run_restarts_and_needs_the_token_when_one_is_set() {
    let dir = tempfile::tempdir().unwrap();
    let short = EEG_PIPELINE.replace("seconds = 6", "seconds = 2");
    std::fs::write(dir.path().join("p.toml"), short).unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let addr = format!("127.0.0.1:{port}");
    let args = ["--ui", addr.as_str(), "--ui-token", "s3cret", "--ui-linger", "1"];
    let first = Run::start(dir.path(), "p.toml", &args);
    for target in ["/", "/api/state", "/app.js", "/?token=wrong"] {
        assert_eq!(http_status(&first.addr, target), 401, "{target} without the token");
    }
    assert_eq!(http_status(&first.addr, "/?token=s3cret"), 200);
    assert_eq!(http_status(&first.addr, "/nothing?token=s3cret"), 404);
    let mut b = Browser::start();
    b.goto(&format!("http://{addr}/?token=s3cret"));
    b.wait_for(
        "document.querySelector('#connection').textContent === 'live'",
        Duration::from_secs(30),
    );
    let uptime_before = b.wait_for("latest.uptime_s > 1 ? latest.uptime_s : 0", Duration::from_secs(30));
    // The run ends: the page says so and keeps trying.
    first.wait_report();
    b.wait_for(
        "document.querySelector('#connection').textContent.startsWith('disconnected')",
        Duration::from_secs(30),
    );
    drop(first);
    let second = Run::start(dir.path(), "p.toml", &args);
    b.wait_for(
        "document.querySelector('#connection').textContent === 'live'",
        Duration::from_secs(30),
    );
    let uptime_after = b.eval("latest.uptime_s");
    assert!(uptime_after.as_f64().unwrap() < uptime_before.as_f64().unwrap() + 1.0);
    shot(&mut b, "reconnected");
    second.wait_report();
    assert!(
        b.errors.iter().all(|e| e.contains("WebSocket")),
        "JavaScript errors: {:?}",
        b.errors
    );
    // Any other address than loopback needs the token.
    let out = common::run_err(dir.path(), &["run", "p.toml", "--ui", "0.0.0.0:0"]);
    assert!(out.contains("ui: 0.0.0.0:") && out.contains("--ui-token"), "{out}");
}

#[test]
fn viewers_that_misbehave_are_closed_and_the_others_keep_their_snapshots() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("p.toml"), EEG_PIPELINE).unwrap();
    let run = Run::start(dir.path(), "p.toml", &["--ui", "127.0.0.1:0", "--ui-linger", "5"]);
    let connect = || {
        let stream = std::net::TcpStream::connect(&run.addr).unwrap();
        stream.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        tungstenite::client(format!("ws://{}/ws", run.addr), stream).unwrap().0
    };
    let mut talker = connect();
    let mut reader = connect();
    // A message over the limit (16 KiB) closes that viewer's connection.
    talker.send(tungstenite::Message::text("x".repeat(20_000))).unwrap();
    let closed = (0..20).any(|_| !matches!(talker.read(), Ok(tungstenite::Message::Text(_))));
    assert!(closed, "an oversized message must close the connection");
    // A request that is not a WebSocket handshake on /ws is refused.
    assert_eq!(http_status(&run.addr, "/ws"), 400);
    // At most 64 viewers at once: the next handshake is refused with 503 until one leaves.
    let mut crowd = Vec::new();
    let refused = loop {
        let stream = std::net::TcpStream::connect(&run.addr).unwrap();
        match tungstenite::client(format!("ws://{}/ws", run.addr), stream) {
            Ok((ws, _)) => crowd.push(ws),
            Err(tungstenite::HandshakeError::Failure(tungstenite::Error::Http(r))) => break r.status(),
            Err(e) => panic!("handshake: {e}"),
        }
        assert!(crowd.len() <= 64, "more than 64 viewers admitted");
    };
    assert_eq!(refused, 503);
    assert_eq!(crowd.len() + 1, 64, "the reader and the crowd fill the 64 places");
    drop(crowd.pop());
    let start = Instant::now();
    let admitted = loop {
        let stream = std::net::TcpStream::connect(&run.addr).unwrap();
        if let Ok((ws, _)) = tungstenite::client(format!("ws://{}/ws", run.addr), stream) {
            break ws;
        }
        assert!(start.elapsed() < Duration::from_secs(10), "a place never came free");
        std::thread::sleep(Duration::from_millis(100));
    };
    drop(admitted);
    drop(crowd);
    // The other viewer keeps receiving a snapshot about once a second.
    let mut snapshots = 0;
    let start = Instant::now();
    while snapshots < 3 {
        assert!(start.elapsed() < Duration::from_secs(20), "snapshots stopped");
        if let Ok(tungstenite::Message::Text(t)) = reader.read() {
            let v: Value = serde_json::from_str(&t).unwrap();
            assert_eq!(v["nodes"].as_array().unwrap().len(), 5);
            snapshots += 1;
        }
    }
}

/// The streams of a snapshot by (node, stream).
fn stream_of<'a>(snapshot: &'a Value, node: &str) -> &'a Value {
    snapshot["streams"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["node"] == node)
        .unwrap_or_else(|| panic!("no stream of {node} in {snapshot}"))
}

/// Reads text messages until one satisfies `ok` (within 20 s).
fn read_until(ws: &mut tungstenite::WebSocket<std::net::TcpStream>, ok: impl Fn(&Value) -> bool) -> (Value, usize) {
    let start = Instant::now();
    loop {
        assert!(start.elapsed() < Duration::from_secs(20), "no snapshot came as expected");
        if let Ok(tungstenite::Message::Text(t)) = ws.read() {
            let v: Value = serde_json::from_str(&t).unwrap();
            if ok(&v) {
                return (v, t.len());
            }
        }
    }
}

/// Each viewer is sent the traces of the channels it picked (the first 8 until it picks), so
/// a viewer of 2 channels of a 16-channel stream is sent less; `/api/state` has them all; a
/// selection out of bounds closes that viewer with the reason.
#[test]
fn each_viewer_is_sent_the_traces_it_picked_only() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("p.toml"), EEG_PIPELINE.replace("seconds = 6", "seconds = 20")).unwrap();
    let run = Run::start(dir.path(), "p.toml", &["--ui", "127.0.0.1:0", "--ui-linger", "5"]);
    let connect = || {
        let stream = std::net::TcpStream::connect(&run.addr).unwrap();
        stream.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        tungstenite::client(format!("ws://{}/ws", run.addr), stream).unwrap().0
    };
    let (mut picker, mut bystander) = (connect(), connect());
    let has_traces = |v: &Value| {
        v["streams"].as_array().is_some_and(|a| {
            a.iter()
                .any(|s| s["node"] == "sources.eeg" && s["t"].as_array().unwrap().len() > 10)
        })
    };
    let (first, _) = read_until(&mut picker, has_traces);
    let eeg = stream_of(&first, "sources.eeg");
    assert_eq!(eeg["channels"].as_array().unwrap().len(), 16);
    assert_eq!(eeg["traced"], serde_json::json!([0, 1, 2, 3, 4, 5, 6, 7]));
    assert_eq!(eeg["min"].as_array().unwrap().len(), 8);
    let stream = eeg["stream"].as_str().unwrap().to_string();
    let pick = serde_json::json!({"traces": [{"node": "sources.eeg", "stream": stream, "channels": [12, 3]}]});
    picker.send(tungstenite::Message::text(pick.to_string())).unwrap();
    let (picked, picked_len) = read_until(&mut picker, |v| {
        stream_of(v, "sources.eeg")["traced"] == serde_json::json!([3, 12])
    });
    let eeg = stream_of(&picked, "sources.eeg");
    assert_eq!(eeg["min"].as_array().unwrap().len(), 2);
    assert_eq!(eeg["max"][1].as_array().unwrap().len(), eeg["t"].as_array().unwrap().len());
    // Streams it did not name keep the first 8; the other viewer keeps its own.
    assert_eq!(stream_of(&picked, "operators.band")["traced"].as_array().unwrap().len(), 8);
    let (other, other_len) = read_until(&mut bystander, has_traces);
    assert_eq!(stream_of(&other, "sources.eeg")["traced"].as_array().unwrap().len(), 8);
    assert!(
        picked_len < other_len,
        "2 channels ({picked_len} B) should weigh less than 8 ({other_len} B)"
    );
    // The HTTP snapshot has every channel.
    let mut s = std::net::TcpStream::connect(&run.addr).unwrap();
    write!(s, "GET /api/state HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").unwrap();
    let mut text = String::new();
    s.read_to_string(&mut text).unwrap();
    let api: Value = serde_json::from_str(text.split("\r\n\r\n").nth(1).unwrap()).unwrap();
    assert_eq!(stream_of(&api, "sources.eeg")["traced"].as_array().unwrap().len(), 16);
    // Out of bounds: closed with code 1008 and the reason.
    picker
        .send(tungstenite::Message::text(
            r#"{"traces": [{"node": "sources.eeg", "stream": "x", "channels": [999]}]}"#,
        ))
        .unwrap();
    let start = Instant::now();
    let frame = loop {
        assert!(start.elapsed() < Duration::from_secs(10), "the viewer was not closed");
        match picker.read() {
            Ok(tungstenite::Message::Close(f)) => break f.expect("a close frame with a reason"),
            Ok(_) => {}
            Err(e) => panic!("closed without a close frame: {e}"),
        }
    };
    assert_eq!(frame.code, tungstenite::protocol::frame::coding::CloseCode::Policy);
    assert!(frame.reason.contains("below 256"), "{}", frame.reason);
}

const CLUSTER_INPUT: &str = r#"
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
path = "in_parts"
row_group_size = 1500
"#;

const CLUSTER_PIPELINE: &str = r#"
[pipeline]
name = "ui-cluster"

[sources.acts]
kind = "parquet"
path = "in_parts"
batch_rows = 500

[operators.l2]
kind = "normalize"
input = "acts"
method = "l2"

[sources.eeg]
kind = "synthetic_eeg"
channels = 4
sample_rate = 128.0
seconds = 8.0
chunk = 64
speed = 1.0

[sinks.out]
kind = "parquet"
input = "l2"
path = "out/l2.parquet"

[sinks.eeg]
kind = "parquet"
input = "eeg"
path = "out/eeg_parts"
"#;

/// A local cluster's live view (served by process 0) shows the whole run: every node's rows
/// are the sums of both processes' reports, and a stream read by both processes is one view.
#[test]
fn the_view_of_a_two_process_run_shows_both_processes() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    std::fs::write(d.join("gen.toml"), CLUSTER_INPUT).unwrap();
    common::run_ok(d, &["run", "gen.toml", "--quiet", "-w", "3"]);
    std::fs::write(d.join("p.toml"), CLUSTER_PIPELINE).unwrap();
    let run = Run::start(
        d,
        "p.toml",
        &["--processes", "2", "-w", "1", "--ui", "127.0.0.1:0", "--ui-linger", "30"],
    );
    let log = run.wait_reports(2);
    let mut totals: std::collections::BTreeMap<String, (u64, u64)> = Default::default();
    for p in 0..2 {
        let prefix = format!("[process {p}] ");
        let report: String = log
            .lines()
            .filter_map(|l| l.strip_prefix(&prefix))
            .map(|l| format!("{l}\n"))
            .collect();
        let rows = report_rows(&report);
        assert_eq!(rows.len(), 5, "process {p}:\n{log}");
        for (node, rows_in, rows_out) in rows {
            let t = totals.entry(node).or_default();
            (t.0, t.1) = (t.0 + rows_in, t.1 + rows_out);
        }
    }
    let read_0 = report_rows(
        &log.lines()
            .filter_map(|l| l.strip_prefix("[process 0] "))
            .collect::<Vec<_>>()
            .join("\n"),
    )
    .into_iter()
    .find(|r| r.0 == "sources.acts")
    .unwrap()
    .2;
    assert!(read_0 > 0 && read_0 < 20000, "process 0 read {read_0} of 20000 rows:\n{log}");
    let mut s = std::net::TcpStream::connect(&run.addr).unwrap();
    write!(s, "GET /api/state HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").unwrap();
    let mut text = String::new();
    s.read_to_string(&mut text).unwrap();
    let state: Value = serde_json::from_str(text.split("\r\n\r\n").nth(1).unwrap()).unwrap();
    assert_eq!(state["processes"], serde_json::json!([0, 1]), "{state}");
    assert_eq!(totals["sources.acts"].1, 20000);
    for (node, (rows_in, rows_out)) in &totals {
        let n = state["nodes"]
            .as_array()
            .unwrap()
            .iter()
            .find(|n| n["id"] == **node)
            .unwrap_or_else(|| panic!("{node} not in {}", state["nodes"]));
        assert_eq!(
            (n["rows_in"].as_u64(), n["rows_out"].as_u64()),
            (Some(*rows_in), Some(*rows_out)),
            "{node}"
        );
    }
    // Once every source has ended, nothing is counted in flight.
    assert!(
        state["nodes"].as_array().unwrap().iter().all(|n| n["in_flight"] == 0),
        "{}",
        state["nodes"]
    );
    // The activations were read by both processes: one view of all 20000 rows.
    assert_eq!(stream_of(&state, "sources.acts")["tokens"], 20000);
    assert_eq!(stream_of(&state, "operators.l2")["tokens"], 20000);
    // The EEG was read by one of them: its whole trace is there.
    assert_eq!(stream_of(&state, "sources.eeg")["rows"], 1024);
}
