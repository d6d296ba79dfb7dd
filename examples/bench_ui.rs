//! Viewers must never slow a run: the BCI example's decision latency and the LLM-monitoring
//! pipeline's throughput with 0 and 4 live-view viewers (`--ui`) connected, alternated in one
//! run. Writes `bench/UI_RESULTS.md`.
//!
//!   cargo run --release --example bench_ui -- [--repeats 3] [--tokens 400000] [--viewers 4]
//!
//! - **BCI**: the bundled motor-imagery recording replayed at 10× real time → 8-30 Hz band-pass →
//!   CSP+LDA decoder → Parquet; p50/p95/p99 arrival-to-written latency of the decisions.
//! - **LLM monitoring**: seeded 64-d activations (unpaced) → SAE encode (bundled SAE) →
//!   `feature_stats` with alerts, and `sae_reconstruct` → `token_stats`; tokens per second.
//!
//! Viewers are WebSocket clients in this process that read every snapshot the view pushes
//! (the page's own traffic, without drawing); they share the machine's cores with the run.
#[path = "common/bench_out.rs"]
mod bench_out;

use std::net::TcpStream;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use neurostream::runtime::Latencies;
use neurostream::{registry, PipelineSpec, RunOptions};

const BCI: &str = r#"
[pipeline]
name = "bench-ui-bci"

[sources.amp]
kind = "edf"
path = "data/eeg/mi_test.edf"
chunk = 4
speed = 10.0

[operators.band]
kind = "butterworth"
input = "amp"
btype = "bandpass"
cutoff = [8.0, 30.0]
order = 4

[operators.decoder]
kind = "decode"
input = "band"
model = "data/bci/mi_model.json"
window_s = 2.0
step_s = 0.1

[sinks.decisions]
kind = "parquet"
input = "decoder"
path = "OUT/decisions.parquet"
"#;

const LLM: &str = r#"
[pipeline]
name = "bench-ui-llm"

[sources.acts]
kind = "synthetic_activations"
d_model = 64
features = 256
active = 8
tokens = TOKENS
chunk = 512
seed = 7

[operators.sae]
kind = "sae_encode"
input = "acts"
sae = "data/sample_sae"

[operators.stats]
kind = "feature_stats"
input = "sae"
window = 4096
step = 2048
top_k = 5

[[operators.stats.alerts]]
rule = "dead_fraction_jump"
above = 0.05

[operators.recon]
kind = "sae_reconstruct"
input = "acts"
sae = "data/sample_sae"

[operators.quality]
kind = "token_stats"
input = "recon"
window = 4096
step = 2048

[sinks.stats_out]
kind = "console"
input = "stats"

[sinks.quality_out]
kind = "console"
input = "quality"
"#;

/// One run of `toml`: without the live view (`None`), or with it and `Some(n)` viewers
/// connected throughout.
fn run(toml: &str, viewers: Option<usize>) -> (neurostream::RunReport, u64) {
    let base = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples");
    let spec = PipelineSpec::from_toml_str(toml, &base).expect("pipeline");
    let pipeline = spec.compile(&registry()).expect("valid pipeline");
    let metrics = neurostream::Metrics::new();
    let Some(viewers) = viewers else {
        let options = RunOptions {
            metrics: Some(metrics),
            ..Default::default()
        };
        return (neurostream::run(pipeline, options).expect("run"), 0);
    };
    let state = neurostream::ui::UiState::new(&spec, metrics.clone());
    let server = neurostream::ui::serve(state.clone(), "127.0.0.1:0", None).expect("live view");
    let received = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let clients: Vec<_> = (0..viewers)
        .map(|_| {
            let (addr, received, stop) = (server.addr, received.clone(), stop.clone());
            std::thread::spawn(move || {
                let stream = TcpStream::connect(addr).unwrap();
                stream.set_read_timeout(Some(Duration::from_millis(200))).unwrap();
                let (mut ws, _) = tungstenite::client(format!("ws://{addr}/ws"), stream).unwrap();
                while !stop.load(Ordering::SeqCst) {
                    match ws.read() {
                        Ok(m) => {
                            received.fetch_add(m.len() as u64, Ordering::Relaxed);
                        }
                        Err(tungstenite::Error::Io(e))
                            if matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut) => {}
                        Err(_) => break,
                    }
                }
            })
        })
        .collect();
    // Let the viewers connect before the run starts.
    std::thread::sleep(Duration::from_millis(300));
    let report = neurostream::run(
        pipeline,
        RunOptions {
            metrics: Some(metrics),
            observer: Some(state),
            ..Default::default()
        },
    )
    .expect("run");
    stop.store(true, Ordering::SeqCst);
    drop(server);
    for c in clients {
        let _ = c.join();
    }
    (report, received.load(Ordering::Relaxed))
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn main() {
    // As the CLI does: keep Mesa's device-select layer quiet on headless machines.
    std::env::set_var("NODEVICE_SELECT", "1");
    let args: Vec<String> = std::env::args().skip(1).collect();
    let get = |name: &str, default: usize| {
        args.iter()
            .position(|a| a == name)
            .and_then(|i| args.get(i + 1))
            .map_or(default, |v| v.parse().expect("a number"))
    };
    let (repeats, tokens, viewers) = (get("--repeats", 3), get("--tokens", 400_000), get("--viewers", 4));
    let out = tempfile::tempdir().unwrap();
    let bci = BCI.replace("OUT", &out.path().display().to_string());
    let llm = LLM.replace("TOKENS", &tokens.to_string());
    // The view-less run twice: the difference between the two is the noise floor.
    let counts = [None, Some(0), Some(viewers), None];
    // Every decision of every repeat, pooled per configuration.
    let mut latency: Vec<Latencies> = vec![Latencies::default(); 4];
    let mut rate: Vec<Vec<f64>> = vec![Vec::new(); 4];
    let mut bytes: Vec<u64> = vec![0; 4];
    for rep in 0..repeats {
        for (i, &v) in counts.iter().enumerate() {
            let (report, got) = run(&bci, v);
            let p = report.nodes["sinks.decisions"].latencies.percentiles_ms().expect("latencies");
            latency[i].merge(&report.nodes["sinks.decisions"].latencies);
            bytes[i] += got;
            let (report, got) = run(&llm, v);
            let r = tokens as f64 / report.elapsed.as_secs_f64();
            rate[i].push(r);
            bytes[i] += got;
            eprintln!(
                "repeat {rep}, viewers {v:?}: BCI p50 {:.3} p99 {:.3} ms; LLM {:.0} tokens/s; {got} bytes to viewers",
                p[0], p[2], r
            );
        }
    }
    let pooled: Vec<[f64; 4]> = latency.iter().map(|l| l.percentiles_ms().expect("latencies")).collect();
    let lat = |i: usize, q: usize| pooled[i][q];
    let rates: Vec<f64> = (0..4).map(|i| median(rate[i].clone())).collect();
    let mut md = format!(
        "# Live view: what the view and its viewers cost a run\n\n`cargo run --release --example bench_ui -- --repeats {repeats} --tokens {tokens} --viewers {viewers}`\n\n\
         Machine: {}. Release build, default target (no `target-cpu=native`). {repeats} alternated runs of each configuration: latency percentiles over all decisions of all runs, throughput the median run; \
         viewers are WebSocket clients in the same process reading every snapshot (one per second).\n\n\
         `no view`: the pipeline alone; `view`: `--ui` (the view observing every batch of every source and operator) with 0 or {viewers} viewers.\n\n\
         `no view (again)`: the pipeline alone once more, after the others in each repeat; its difference from the first is the noise floor.\n\n\
         | workload | no view | view, 0 viewers | view, {viewers} viewers | no view (again) | {viewers} viewers vs 0 | {viewers} viewers vs no view | noise: no view vs again |\n| --- | --- | --- | --- | --- | --- | --- | --- |\n",
        bench_out::machine()
    );
    let pct = |new: f64, old: f64| 100.0 * (new - old) / old;
    for (q, name) in [(0, "p50"), (1, "p95"), (2, "p99")] {
        let (none, zero, some, again) = (lat(0, q), lat(1, q), lat(2, q), lat(3, q));
        md += &format!(
            "| BCI decision latency {name} (ms) | {none:.4} | {zero:.4} | {some:.4} | {again:.4} | {:+.1} % | {:+.1} % | {:+.1} % |\n",
            pct(some, zero),
            pct(some, none),
            pct(again, none)
        );
    }
    md += &format!(
        "| LLM monitoring throughput (tokens/s) | {:.0} | {:.0} | {:.0} | {:.0} | {:+.1} % | {:+.1} % | {:+.1} % |\n\nBytes pushed to the {viewers} viewers over all runs: {}.\n",
        rates[0],
        rates[1],
        rates[2],
        rates[3],
        pct(rates[2], rates[1]),
        pct(rates[2], rates[0]),
        pct(rates[3], rates[0]),
        bytes[2]
    );
    let path = bench_out::results_path("UI_RESULTS.md");
    std::fs::write(&path, &md).unwrap();
    print!("{md}");
}
