//! Live metrics of a run: per-node counters and histograms updated by the runtime as it goes,
//! rendered in the Prometheus text format (served on `/metrics` by [`serve`]) and as a one-line
//! console status.
//!
//! Exposed series (every one labelled `node="sources.NAME"` etc.):
//! - `neurostream_rows_in_total`, `neurostream_rows_out_total`, `neurostream_bytes_in_total`,
//!   `neurostream_batches_total` (counters);
//! - `neurostream_busy_seconds_total` (time in the node's own code);
//! - `neurostream_processing_seconds` (histogram: time per batch in the node's code);
//! - `neurostream_latency_seconds` (sinks, histogram: arrival at the source to written);
//! - `neurostream_dropped_rows_total` (sources: NaN/Inf rows dropped);
//! - `neurostream_overload_dropped_rows_total` (sources with a drop policy: rows dropped while
//!   the pipeline was behind);
//! - `neurostream_in_flight_rows` (sources: queue depth, rows between the source and the
//!   slowest sink it feeds);
//! - `neurostream_device_info{device=...}` (operators and computing sinks: 1);
//! - `neurostream_uptime_seconds`.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::error::Result;

/// Upper bounds (seconds) of the histogram buckets: 10 µs to 10 s.
pub const BUCKETS_S: [f64; 13] = [1e-5, 5e-5, 1e-4, 5e-4, 1e-3, 2.5e-3, 5e-3, 1e-2, 5e-2, 0.1, 0.5, 1.0, 10.0];

/// A fixed-bucket histogram of durations, safe to update from any thread.
#[derive(Debug, Default)]
pub struct Histogram {
    counts: [AtomicU64; 13],
    overflow: AtomicU64,
    sum_ns: AtomicU64,
}

impl Histogram {
    /// Records one observation of `ns` nanoseconds (negative values count as 0).
    pub fn observe_ns(&self, ns: i64) {
        let ns = ns.max(0) as u64;
        let s = ns as f64 * 1e-9;
        match BUCKETS_S.iter().position(|&b| s <= b) {
            Some(i) => self.counts[i].fetch_add(1, Ordering::Relaxed),
            None => self.overflow.fetch_add(1, Ordering::Relaxed),
        };
        self.sum_ns.fetch_add(ns, Ordering::Relaxed);
    }

    /// Sum of the observations, seconds.
    pub fn sum_s(&self) -> f64 {
        self.sum_ns.load(Ordering::Relaxed) as f64 * 1e-9
    }

    /// Observations so far.
    pub fn count(&self) -> u64 {
        self.counts.iter().map(|c| c.load(Ordering::Relaxed)).sum::<u64>() + self.overflow.load(Ordering::Relaxed)
    }

    /// The upper bound (seconds) of the bucket holding the `q` quantile (0..=1) of the
    /// observations, `None` before any; `+∞` when it lies beyond the last bucket.
    pub fn quantile_upper_s(&self, q: f64) -> Option<f64> {
        let total = self.count();
        if total == 0 {
            return None;
        }
        let rank = (q.clamp(0.0, 1.0) * total as f64).ceil().max(1.0) as u64;
        let mut cum = 0;
        for (b, c) in BUCKETS_S.iter().zip(&self.counts) {
            cum += c.load(Ordering::Relaxed);
            if cum >= rank {
                return Some(*b);
            }
        }
        Some(f64::INFINITY)
    }

    fn render(&self, out: &mut String, name: &str, labels: &str) {
        let mut cum = 0;
        for (b, c) in BUCKETS_S.iter().zip(&self.counts) {
            cum += c.load(Ordering::Relaxed);
            out.push_str(&format!("{name}_bucket{{{labels},le=\"{b}\"}} {cum}\n"));
        }
        cum += self.overflow.load(Ordering::Relaxed);
        out.push_str(&format!("{name}_bucket{{{labels},le=\"+Inf\"}} {cum}\n"));
        out.push_str(&format!(
            "{name}_sum{{{labels}}} {}\n",
            self.sum_ns.load(Ordering::Relaxed) as f64 * 1e-9
        ));
        out.push_str(&format!("{name}_count{{{labels}}} {cum}\n"));
    }
}

/// Live counters of one node.
#[derive(Debug, Default)]
pub struct NodeMetrics {
    /// Rows received (operators, sinks).
    pub rows_in: AtomicU64,
    /// Rows emitted (sources, operators).
    pub rows_out: AtomicU64,
    /// Payload bytes received (sources: read).
    pub bytes_in: AtomicU64,
    /// Batches handled.
    pub batches: AtomicU64,
    /// Nanoseconds in the node's own code.
    pub busy_ns: AtomicU64,
    /// Rows dropped for NaN/Inf (sources).
    pub dropped_invalid: AtomicU64,
    /// Sources with a drop policy: rows dropped because the pipeline was behind.
    pub dropped_overload: AtomicU64,
    /// Sources: rows (event-time units) between this source and the slowest sink it feeds.
    pub in_flight: AtomicU64,
    /// Time per batch in the node's code.
    pub processing: Histogram,
    /// Sinks: arrival-to-written latency per frame.
    pub latency: Histogram,
}

impl NodeMetrics {
    /// Records one batch of `rows` rows handled in `busy`.
    pub fn batch(&self, rows_in: u64, rows_out: u64, bytes: u64, busy: Duration) {
        self.rows_in.fetch_add(rows_in, Ordering::Relaxed);
        self.rows_out.fetch_add(rows_out, Ordering::Relaxed);
        self.bytes_in.fetch_add(bytes, Ordering::Relaxed);
        self.batches.fetch_add(1, Ordering::Relaxed);
        self.busy_ns.fetch_add(busy.as_nanos() as u64, Ordering::Relaxed);
        self.processing.observe_ns(busy.as_nanos() as i64);
    }
}

/// A counter series: name, help text, and how to read it from a node.
type CounterSeries = (&'static str, &'static str, fn(&NodeMetrics) -> f64);

/// The metrics of one run (this process).
#[derive(Debug)]
pub struct Metrics {
    started: Instant,
    nodes: Mutex<BTreeMap<String, Arc<NodeMetrics>>>,
    devices: Mutex<BTreeMap<String, String>>,
    /// GPU devices the run computes on, for their kernel times.
    gpus: Mutex<Vec<Arc<crate::device::GpuContext>>>,
    /// Checkpoints: time from the start of the pause to the durable commit.
    pub checkpoint_duration: Histogram,
    /// Checkpoints: time the sources were held (the pipeline drains to the aligned time,
    /// operators snapshot, sinks close their segments); the commit then runs beside the run.
    pub checkpoint_held: Histogram,
    /// Size in bytes of the newest checkpoint file.
    pub checkpoint_bytes: AtomicU64,
    /// Checkpoints that could not be written.
    pub checkpoint_failures: AtomicU64,
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics {
            started: Instant::now(),
            nodes: Mutex::new(BTreeMap::new()),
            devices: Mutex::new(BTreeMap::new()),
            gpus: Mutex::new(Vec::new()),
            checkpoint_duration: Histogram::default(),
            checkpoint_held: Histogram::default(),
            checkpoint_bytes: AtomicU64::new(0),
            checkpoint_failures: AtomicU64::new(0),
        }
    }
}

impl Metrics {
    /// Empty metrics; the uptime counts from now.
    pub fn new() -> Arc<Metrics> {
        Arc::new(Metrics::default())
    }

    /// The counters of `node` (`sources.NAME`, ...), created on first use and shared by workers.
    pub fn node(&self, node: &str) -> Arc<NodeMetrics> {
        self.nodes.lock().unwrap().entry(node.to_string()).or_default().clone()
    }

    /// Every node's counters so far, by node (`sources.NAME`, ...).
    pub fn nodes(&self) -> BTreeMap<String, Arc<NodeMetrics>> {
        self.nodes.lock().unwrap().clone()
    }

    /// Time since these metrics were created (the run's start).
    pub fn uptime(&self) -> Duration {
        self.started.elapsed()
    }

    /// Records the device `node` computes on.
    pub fn set_device(&self, node: &str, device: &str) {
        self.devices.lock().unwrap().insert(node.to_string(), device.to_string());
    }

    /// Adds a GPU the run computes on: its kernel times appear as
    /// `neurostream_gpu_kernel_seconds` (once per device however often it is added).
    pub fn add_gpu(&self, gpu: &Arc<crate::device::GpuContext>) {
        let mut gpus = self.gpus.lock().unwrap();
        if !gpus.iter().any(|g| Arc::ptr_eq(g, gpu)) {
            gpus.push(gpu.clone());
        }
    }

    /// The device each computing node runs on, by node label.
    pub fn devices(&self) -> BTreeMap<String, String> {
        self.devices.lock().unwrap().clone()
    }

    /// The Prometheus text exposition (format 0.0.4).
    pub fn render(&self) -> String {
        let nodes = self.nodes.lock().unwrap().clone();
        let mut out = String::new();
        out.push_str(
            "# HELP neurostream_uptime_seconds Seconds since the run started.\n# TYPE neurostream_uptime_seconds gauge\n",
        );
        out.push_str(&format!(
            "neurostream_uptime_seconds {}\n",
            self.started.elapsed().as_secs_f64()
        ));
        let counters: [CounterSeries; 7] = [
            ("neurostream_rows_in_total", "Rows received.", |m| {
                m.rows_in.load(Ordering::Relaxed) as f64
            }),
            ("neurostream_rows_out_total", "Rows emitted.", |m| {
                m.rows_out.load(Ordering::Relaxed) as f64
            }),
            ("neurostream_bytes_in_total", "Payload bytes received (sources: read).", |m| {
                m.bytes_in.load(Ordering::Relaxed) as f64
            }),
            ("neurostream_batches_total", "Batches handled.", |m| {
                m.batches.load(Ordering::Relaxed) as f64
            }),
            ("neurostream_busy_seconds_total", "Seconds in the node's own code.", |m| {
                m.busy_ns.load(Ordering::Relaxed) as f64 * 1e-9
            }),
            ("neurostream_dropped_rows_total", "Rows dropped for NaN/Inf.", |m| {
                m.dropped_invalid.load(Ordering::Relaxed) as f64
            }),
            (
                "neurostream_overload_dropped_rows_total",
                "Rows a source dropped while the pipeline was behind (overload policy).",
                |m| m.dropped_overload.load(Ordering::Relaxed) as f64,
            ),
        ];
        let nodes: Vec<(String, Arc<NodeMetrics>)> = nodes.into_iter().map(|(n, m)| (label_value(&n), m)).collect();
        for (name, help, get) in counters {
            out.push_str(&format!("# HELP {name} {help}\n# TYPE {name} counter\n"));
            for (node, m) in &nodes {
                out.push_str(&format!("{name}{{node=\"{node}\"}} {}\n", get(m)));
            }
        }
        out.push_str("# HELP neurostream_in_flight_rows Rows between a source and the slowest sink it feeds (queue depth).\n# TYPE neurostream_in_flight_rows gauge\n");
        for (node, m) in nodes.iter().filter(|(n, _)| n.starts_with("sources.")) {
            out.push_str(&format!(
                "neurostream_in_flight_rows{{node=\"{node}\"}} {}\n",
                m.in_flight.load(Ordering::Relaxed)
            ));
        }
        out.push_str("# HELP neurostream_processing_seconds Time per batch in the node's code.\n# TYPE neurostream_processing_seconds histogram\n");
        for (node, m) in &nodes {
            m.processing
                .render(&mut out, "neurostream_processing_seconds", &format!("node=\"{node}\""));
        }
        out.push_str("# HELP neurostream_latency_seconds Arrival at the source to written by the sink, per frame.\n# TYPE neurostream_latency_seconds histogram\n");
        for (node, m) in nodes.iter().filter(|(n, m)| n.starts_with("sinks.") && m.latency.count() > 0) {
            m.latency
                .render(&mut out, "neurostream_latency_seconds", &format!("node=\"{node}\""));
        }
        if self.checkpoint_duration.count() > 0 || self.checkpoint_failures.load(Ordering::Relaxed) > 0 {
            out.push_str("# HELP neurostream_checkpoint_seconds Pause to durable commit, per checkpoint.\n# TYPE neurostream_checkpoint_seconds histogram\n");
            self.checkpoint_duration
                .render(&mut out, "neurostream_checkpoint_seconds", "run=\"this\"");
            out.push_str("# HELP neurostream_checkpoint_held_seconds Time the sources were held, per checkpoint.\n# TYPE neurostream_checkpoint_held_seconds histogram\n");
            self.checkpoint_held
                .render(&mut out, "neurostream_checkpoint_held_seconds", "run=\"this\"");
            out.push_str(&format!(
                "# HELP neurostream_checkpoint_bytes Size of the newest checkpoint file.\n# TYPE neurostream_checkpoint_bytes gauge\nneurostream_checkpoint_bytes {}\n",
                self.checkpoint_bytes.load(Ordering::Relaxed)
            ));
            out.push_str(&format!(
                "# HELP neurostream_checkpoint_failures_total Checkpoints that could not be written.\n# TYPE neurostream_checkpoint_failures_total counter\nneurostream_checkpoint_failures_total {}\n",
                self.checkpoint_failures.load(Ordering::Relaxed)
            ));
        }
        let gpus = self.gpus.lock().unwrap().clone();
        if gpus.iter().any(|g| g.times_kernels()) {
            out.push_str("# HELP neurostream_gpu_kernel_seconds GPU time per kernel dispatch (timestamp queries).\n# TYPE neurostream_gpu_kernel_seconds histogram\n");
            for gpu in &gpus {
                let device = label_value(&gpu.info.name);
                for (kernel, h) in gpu.kernel_times() {
                    h.render(
                        &mut out,
                        "neurostream_gpu_kernel_seconds",
                        &format!("device=\"{device}\",kernel=\"{}\"", label_value(&kernel)),
                    );
                }
            }
        }
        if !gpus.is_empty() {
            out.push_str("# HELP neurostream_gpu_bytes_total Bytes moved between the host and a GPU (up: uploaded; down: read back).\n# TYPE neurostream_gpu_bytes_total counter\n");
            for gpu in &gpus {
                let device = label_value(&gpu.info.name);
                let (up, down) = gpu.bytes_moved();
                out.push_str(&format!(
                    "neurostream_gpu_bytes_total{{device=\"{device}\",direction=\"up\"}} {up}\nneurostream_gpu_bytes_total{{device=\"{device}\",direction=\"down\"}} {down}\n"
                ));
            }
        }
        out.push_str("# HELP neurostream_device_info The device a node computes on.\n# TYPE neurostream_device_info gauge\n");
        for (node, device) in self.devices.lock().unwrap().iter() {
            out.push_str(&format!(
                "neurostream_device_info{{node=\"{}\",device=\"{}\"}} 1\n",
                label_value(node),
                label_value(device)
            ));
        }
        out
    }

    /// One line for terminals: uptime, then rows and rows/s of every source and sink.
    pub fn status_line(&self) -> String {
        let secs = self.started.elapsed().as_secs_f64().max(1e-9);
        let nodes = self.nodes.lock().unwrap();
        let mut parts = vec![format!("[{secs:.1} s]")];
        for (node, m) in nodes.iter() {
            let rows = if node.starts_with("sources.") {
                m.rows_out.load(Ordering::Relaxed)
            } else if node.starts_with("sinks.") {
                m.rows_in.load(Ordering::Relaxed)
            } else {
                continue;
            };
            parts.push(format!("{node} {rows} rows ({:.0}/s)", rows as f64 / secs));
        }
        parts.join("  ")
    }
}

/// A running `/metrics` endpoint; stops when dropped.
pub type MetricsServer = crate::http::HttpServer;

/// Limits of the `/metrics` server (those of every engine HTTP server).
pub use crate::http::limits;

/// Serves `GET /metrics` on `addr` with hyper (see [`crate::http::serve`]). Loopback addresses
/// serve anyone on the machine; any other address needs `token`, which clients present as
/// `Authorization: Bearer TOKEN`.
pub fn serve(metrics: Arc<Metrics>, addr: &str, token: Option<String>) -> Result<MetricsServer> {
    let has_token = token.as_deref().is_some_and(|t| !t.is_empty());
    crate::http::serve(
        "metrics",
        addr,
        has_token,
        "--metrics-token",
        handler(metrics, token.map(Arc::from)),
    )
}

fn handler(metrics: Arc<Metrics>, token: Option<Arc<str>>) -> crate::http::Handler {
    Arc::new(move |req| {
        let response = respond(&req, &metrics, token.as_deref());
        Box::pin(async move { response })
    })
}

/// The bytes the server answers to a client that sends `request` and then closes its side:
/// the same connection handling as [`serve`], over an in-memory pipe (fuzzing and tests).
pub fn answer(request: &[u8], metrics: &Arc<Metrics>, token: Option<&str>) -> Vec<u8> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a tokio runtime");
    runtime.block_on(async {
        let (mut client, server) = tokio::io::duplex(64 << 10);
        let served = tokio::spawn(crate::http::serve_connection(
            server,
            handler(metrics.clone(), token.map(Arc::from)),
        ));
        let request = request.to_vec();
        let (mut read_half, mut write_half) = tokio::io::split(&mut client);
        let send = async move {
            let _ = write_half.write_all(&request).await;
            let _ = write_half.shutdown().await;
        };
        let mut response = Vec::new();
        let receive = read_half.read_to_end(&mut response);
        let _ = tokio::join!(send, receive);
        let _ = served.await;
        response
    })
}

/// The answer to one request: 401 without the token, `/metrics` to `GET`, 404 or 405 otherwise.
pub fn respond<B>(req: &hyper::Request<B>, metrics: &Metrics, token: Option<&str>) -> hyper::Response<crate::http::Body> {
    let presented = crate::http::presented_token(req);
    let (status, body) = if !crate::net::token_ok(token, presented.as_deref()) {
        (401, "missing or wrong bearer token\n".to_string())
    } else if req.method() != hyper::Method::GET {
        (405, "GET only\n".to_string())
    } else if req.uri().path() != "/metrics" {
        (404, "only /metrics is served\n".to_string())
    } else {
        (200, metrics.render())
    };
    crate::http::response(status, "text/plain; version=0.0.4; charset=utf-8", body)
}

/// A label value in the Prometheus text format: backslash, double quote and newline escaped.
pub fn label_value(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for c in value.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Write};

    #[test]
    fn quantiles_are_bucket_upper_bounds() {
        let h = Histogram::default();
        assert_eq!(h.quantile_upper_s(0.99), None);
        for _ in 0..98 {
            h.observe_ns(200_000); // 0.2 ms: bucket 0.5 ms
        }
        h.observe_ns(20_000_000); // 20 ms: bucket 50 ms
        h.observe_ns(20_000_000_000); // 20 s: beyond the last
        assert_eq!(h.quantile_upper_s(0.5), Some(5e-4));
        assert_eq!(h.quantile_upper_s(0.99), Some(5e-2));
        assert_eq!(h.quantile_upper_s(1.0), Some(f64::INFINITY));
    }
    use std::net::{SocketAddr, TcpStream};

    fn get(addr: SocketAddr, path: &str, auth: Option<&str>) -> String {
        let mut c = TcpStream::connect(addr).unwrap();
        let auth = auth.map(|t| format!("Authorization: Bearer {t}\r\n")).unwrap_or_default();
        write!(c, "GET {path} HTTP/1.1\r\nHost: x\r\n{auth}\r\n").unwrap();
        let mut s = String::new();
        c.read_to_string(&mut s).unwrap();
        s
    }

    #[test]
    fn checkpoint_series_appear_once_a_checkpoint_is_taken() {
        let m = Metrics::new();
        assert!(!m.render().contains("neurostream_checkpoint"));
        m.checkpoint_duration.observe_ns(30_000_000);
        m.checkpoint_held.observe_ns(8_000_000);
        m.checkpoint_bytes.store(4096, Ordering::Relaxed);
        let body = m.render();
        assert!(
            body.contains("neurostream_checkpoint_seconds_bucket{run=\"this\",le=\"0.05\"} 1"),
            "{body}"
        );
        assert!(
            body.contains("neurostream_checkpoint_seconds_count{run=\"this\"} 1"),
            "{body}"
        );
        assert!(
            body.contains("neurostream_checkpoint_held_seconds_bucket{run=\"this\",le=\"0.01\"} 1"),
            "{body}"
        );
        assert!(body.contains("neurostream_checkpoint_bytes 4096"), "{body}");
        assert!(body.contains("neurostream_checkpoint_failures_total 0"), "{body}");
    }

    #[test]
    fn serves_counters_and_histograms_in_prometheus_text() {
        let m = Metrics::new();
        let n = m.node("sinks.out");
        n.batch(10, 0, 400, Duration::from_micros(30));
        n.latency.observe_ns(2_000_000);
        m.set_device("operators.x", "cpu");
        let server = serve(m.clone(), "127.0.0.1:0", None).unwrap();
        let body = get(server.addr, "/metrics", None);
        assert!(body.starts_with("HTTP/1.1 200 OK"), "{body}");
        assert!(body.contains("neurostream_rows_in_total{node=\"sinks.out\"} 10"), "{body}");
        assert!(
            body.contains("neurostream_latency_seconds_bucket{node=\"sinks.out\",le=\"0.0025\"} 1"),
            "{body}"
        );
        assert!(
            body.contains("neurostream_latency_seconds_bucket{node=\"sinks.out\",le=\"0.001\"} 0"),
            "{body}"
        );
        assert!(body.contains("neurostream_device_info{node=\"operators.x\",device=\"cpu\"} 1"));
        assert!(get(server.addr, "/other", None).starts_with("HTTP/1.1 404"));
        assert!(m.status_line().contains("sinks.out 10 rows"));
    }

    #[test]
    fn token_is_required_when_set() {
        let m = Metrics::new();
        let server = serve(m, "127.0.0.1:0", Some("s3cret".into())).unwrap();
        assert!(get(server.addr, "/metrics", None).starts_with("HTTP/1.1 401"));
        assert!(get(server.addr, "/metrics", Some("wrong")).starts_with("HTTP/1.1 401"));
        assert!(get(server.addr, "/metrics", Some("s3cret")).starts_with("HTTP/1.1 200"));
    }

    #[test]
    fn non_loopback_without_token_is_refused() {
        let err = serve(Metrics::new(), "0.0.0.0:0", None).err().unwrap().to_string();
        assert!(err.contains("token"), "{err}");
    }

    #[test]
    fn label_values_are_escaped() {
        let m = Metrics::new();
        m.node("operators.a\"b\\c\nd").batch(1, 1, 4, Duration::from_micros(1));
        m.set_device("operators.a\"b\\c\nd", "gpu \"x\"");
        let body = m.render();
        assert!(
            body.contains("neurostream_rows_in_total{node=\"operators.a\\\"b\\\\c\\nd\"} 1"),
            "{body}"
        );
        assert!(body.contains("device=\"gpu \\\"x\\\"\"} 1"), "{body}");
        // Every sample line is one line: the raw newline never reaches the output.
        assert!(
            body.lines().all(|l| l.starts_with('#') || l.starts_with("neurostream_")),
            "{body}"
        );
    }

    #[test]
    fn slow_idle_and_oversized_clients_never_block_a_scrape() {
        let m = Metrics::new();
        m.node("sinks.out").batch(5, 0, 20, Duration::from_micros(3));
        let server = serve(m, "127.0.0.1:0", None).unwrap();
        // 20 idle connections and one sending a byte every 1.5 s.
        let idle: Vec<TcpStream> = (0..20).map(|_| TcpStream::connect(server.addr).unwrap()).collect();
        let mut slow = TcpStream::connect(server.addr).unwrap();
        slow.write_all(b"G").unwrap();
        let dripping = std::thread::spawn(move || {
            for b in b"ET /metrics HTTP/1.1\r\n" {
                std::thread::sleep(Duration::from_millis(1500));
                if slow.write_all(&[*b]).is_err() {
                    return true; // cut off by the head time-out
                }
            }
            false
        });
        let started = std::time::Instant::now();
        let body = get(server.addr, "/metrics", None);
        assert!(body.starts_with("HTTP/1.1 200"), "{body}");
        assert!(
            started.elapsed() < Duration::from_secs(2),
            "a scrape waited {:?}",
            started.elapsed()
        );
        // A request line with no end: refused once it passes the head limit, memory bounded.
        let mut huge = TcpStream::connect(server.addr).unwrap();
        huge.set_write_timeout(Some(Duration::from_secs(3))).unwrap();
        let chunk = vec![b'a'; 64 << 10];
        let mut sent = 0usize;
        while sent < (64 << 20) {
            match huge.write(&chunk) {
                Ok(n) => sent += n,
                Err(_) => break,
            }
        }
        assert!(sent < (64 << 20), "the server kept reading a request line of {sent} bytes");
        assert!(dripping.join().unwrap(), "the dripping client was never cut off");
        drop(idle);
        assert!(get(server.addr, "/metrics", None).starts_with("HTTP/1.1 200"));
    }

    #[test]
    fn in_memory_answers_match_the_rules() {
        let m = Metrics::new();
        let ok = answer(
            b"GET /metrics HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer t\r\n\r\n",
            &m,
            Some("t"),
        );
        assert!(ok.starts_with(b"HTTP/1.1 200"), "{}", String::from_utf8_lossy(&ok));
        let no = answer(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n", &m, Some("t"));
        assert!(no.starts_with(b"HTTP/1.1 401"), "{}", String::from_utf8_lossy(&no));
        let post = answer(b"POST /metrics HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n", &m, None);
        assert!(post.starts_with(b"HTTP/1.1 405"), "{}", String::from_utf8_lossy(&post));
        let garbage = answer(&[0xff, 0x00, b'\n', b'\n'], &m, None);
        assert!(
            garbage.is_empty() || garbage.starts_with(b"HTTP/1.1 4"),
            "{}",
            String::from_utf8_lossy(&garbage)
        );
        let huge = answer(&vec![b'a'; 100_000], &m, None);
        assert!(
            huge.is_empty() || huge.starts_with(b"HTTP/1.1 4"),
            "{}",
            String::from_utf8_lossy(&huge)
        );
    }
}
