//! What the live view shows, kept up to date by the taps as batches pass, gathered from every
//! process of a multi-process run, and turned into JSON for each viewer once per tick.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use neurostream_engine::{Batch, Metrics, PipelineSpec};
use neurostream_sinks::live::Hub;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use tokio_tungstenite::tungstenite::Utf8Bytes;

use super::views::{StreamPicture, View, DEFAULT_TRACES, MAX_TRACED_CHANNELS};

/// Signal streams a viewer may pick trace channels of in one message.
pub const MAX_SELECTED_STREAMS: usize = 64;

/// One node of the pipeline graph.
#[derive(Clone, Debug)]
struct GraphNode {
    label: String,
    kind: String,
    input: Option<String>,
}

/// The state of one run's live view, shared by the taps (writers) and the server (readers).
pub struct UiState {
    pipeline: String,
    graph: Vec<GraphNode>,
    metrics: Arc<Metrics>,
    /// Views by node label, then stream name (looked up without allocating).
    views: Mutex<BTreeMap<String, BTreeMap<String, SharedView>>>,
    /// Process 0 of a multi-process run: the latest picture of every other process.
    remote: Mutex<BTreeMap<usize, Picture>>,
    /// Alert bounds and score thresholds from the pipeline file, drawn on the series they apply to.
    thresholds: Vec<Value>,
    outcome: Mutex<Option<String>>,
    /// The viewers' queues: one tick for each, the oldest dropped (and counted) when a viewer
    /// reads too slowly.
    pub(crate) viewers: Hub<Arc<Tick>>,
    /// The newest tick, for a viewer that changes what it shows between ticks.
    pub(crate) latest: Mutex<Option<Arc<Tick>>>,
    /// Woken when the ticker has queued a tick for every viewer, or closed their queues.
    pub(crate) tick: tokio::sync::Notify,
    /// Snapshots handed to viewers' sockets so far.
    pub(crate) sent: AtomicU64,
    /// Viewer connections open (handshakes included), against the server's limit.
    pub(crate) open_viewers: std::sync::atomic::AtomicUsize,
}

/// One stream's view, locked on its own.
type SharedView = Arc<Mutex<View>>;

/// A node's counters in one process, or summed over processes.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
struct NodeCounters {
    rows_in: u64,
    rows_out: u64,
    /// Seconds spent in the node's own code, all workers together.
    busy_s: f64,
    in_flight: u64,
    dropped: u64,
    /// Upper bound of the 99th percentile of processing (sinks: arrival-to-written) latency,
    /// seconds; the largest of the processes'.
    p99_s: Option<f64>,
    device: Option<String>,
}

impl NodeCounters {
    fn merge(&mut self, other: &NodeCounters) {
        self.rows_in += other.rows_in;
        self.rows_out += other.rows_out;
        self.busy_s += other.busy_s;
        self.in_flight += other.in_flight;
        self.dropped += other.dropped;
        self.p99_s = match (self.p99_s, other.p99_s) {
            (Some(a), Some(b)) => Some(a.max(b)),
            (a, b) => a.or(b),
        };
        match (&mut self.device, &other.device) {
            (Some(a), Some(b)) if !a.split(", ").any(|d| d == b) => {
                a.push_str(", ");
                a.push_str(b);
            }
            (a @ None, Some(b)) => *a = Some(b.clone()),
            _ => {}
        }
    }
}

/// Everything one process has seen: its node counters and its streams' views. Processes other
/// than 0 send theirs to process 0, which merges them with its own.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub(crate) struct Picture {
    nodes: BTreeMap<String, NodeCounters>,
    /// By node label, then stream.
    streams: BTreeMap<String, BTreeMap<String, StreamPicture>>,
    /// The processes it covers.
    processes: Vec<usize>,
}

impl Picture {
    fn merge(&mut self, other: Picture) {
        for (label, counters) in &other.nodes {
            self.nodes.entry(label.clone()).or_default().merge(counters);
        }
        for (node, streams) in other.streams {
            let mine = self.streams.entry(node).or_default();
            for (stream, view) in streams {
                match mine.get_mut(&stream) {
                    Some(v) => v.merge(view),
                    None => {
                        mine.insert(stream, view);
                    }
                }
            }
        }
        self.processes.extend(other.processes);
        self.processes.sort_unstable();
    }
}

/// Which trace channels of which signal streams a viewer is sent: the first
/// [`DEFAULT_TRACES`] of each stream unless it picked others, or all of them.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash)]
pub struct Selection {
    all: bool,
    /// By (node label, stream): channel indices, sorted.
    chosen: BTreeMap<(String, String), Vec<usize>>,
}

/// What a viewer sends to pick its traces.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SelectionMessage {
    traces: Vec<StreamChoice>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct StreamChoice {
    node: String,
    stream: String,
    channels: Vec<usize>,
}

impl Selection {
    /// Every traced channel of every stream (`/api/state`).
    pub fn all() -> Selection {
        Selection {
            all: true,
            ..Selection::default()
        }
    }

    /// The channels of `node`'s `stream` (of `traced` traced channels) to send.
    fn channels(&self, node: &str, stream: &str, traced: usize) -> Vec<usize> {
        if self.all {
            return (0..traced).collect();
        }
        match self.chosen.get(&(node.to_string(), stream.to_string())) {
            Some(c) => c.clone(),
            None => (0..traced.min(DEFAULT_TRACES)).collect(),
        }
    }

    /// Reads a viewer's message `{"traces": [{"node": N, "stream": S, "channels": [i, ...]}]}`:
    /// at most [`MAX_SELECTED_STREAMS`] streams, channel indices below
    /// [`MAX_TRACED_CHANNELS`]. The streams it names replace the viewer's earlier picks.
    pub fn parse(text: &str) -> Result<Selection, String> {
        let message: SelectionMessage = serde_json::from_str(text)
            .map_err(|e| format!("a viewer's message must be {{\"traces\": [{{\"node\", \"stream\", \"channels\"}}]}}: {e}"))?;
        if message.traces.len() > MAX_SELECTED_STREAMS {
            return Err(format!(
                "{} streams picked; at most {MAX_SELECTED_STREAMS}",
                message.traces.len()
            ));
        }
        let mut chosen = BTreeMap::new();
        for c in message.traces {
            if let Some(&bad) = c.channels.iter().find(|&&i| i >= MAX_TRACED_CHANNELS) {
                return Err(format!(
                    "channel {bad} of {} / {}: channels are numbered below {MAX_TRACED_CHANNELS}",
                    c.node, c.stream
                ));
            }
            let mut channels = c.channels;
            channels.sort_unstable();
            channels.dedup();
            chosen.insert((c.node, c.stream), channels);
        }
        Ok(Selection { all: false, chosen })
    }
}

/// One tick's picture of the whole run, rendered once per distinct selection of the viewers.
pub(crate) struct Tick {
    picture: Picture,
    uptime_s: f64,
    rendered: Mutex<HashMap<Selection, Utf8Bytes>>,
}

impl Tick {
    /// The tick as JSON text for a viewer with `selection` (rendered once per selection).
    pub(crate) fn text(&self, state: &UiState, selection: &Selection) -> Utf8Bytes {
        if let Some(t) = self.rendered.lock().unwrap().get(selection) {
            return t.clone();
        }
        let text = Utf8Bytes::from(state.render(&self.picture, self.uptime_s, selection).to_string());
        self.rendered.lock().unwrap().insert(selection.clone(), text.clone());
        text
    }
}

impl UiState {
    /// The view of a run of `spec`, reading node counters from `metrics`.
    pub fn new(spec: &PipelineSpec, metrics: Arc<Metrics>) -> Arc<UiState> {
        // A sink may share its name with a source or an operator; inputs name those.
        let inputs: BTreeMap<&str, String> = spec
            .nodes
            .iter()
            .filter(|n| n.section.table() != "sinks")
            .map(|n| (n.name.as_str(), n.qualified_name()))
            .collect();
        let graph = spec
            .nodes
            .iter()
            .map(|n| GraphNode {
                label: n.qualified_name(),
                kind: n.kind.clone().unwrap_or_default(),
                input: n.input.as_ref().and_then(|i| inputs.get(i.as_str()).cloned()),
            })
            .collect();
        let thresholds = thresholds(spec, &inputs);
        Arc::new(UiState {
            thresholds,
            pipeline: spec.settings.name.clone(),
            graph,
            metrics,
            views: Mutex::new(BTreeMap::new()),
            remote: Mutex::new(BTreeMap::new()),
            outcome: Mutex::new(None),
            viewers: Hub::default(),
            latest: Mutex::new(None),
            tick: tokio::sync::Notify::new(),
            sent: AtomicU64::new(0),
            open_viewers: std::sync::atomic::AtomicUsize::new(0),
        })
    }

    /// Records how the run ended (`ok` or the error), shown on the page.
    pub fn finish(&self, outcome: &str) {
        *self.outcome.lock().unwrap() = Some(outcome.to_string());
    }

    /// Takes in one batch of the output of `node` (a label such as `operators.band`). Each
    /// stream's view has its own lock, held only while this batch is folded in.
    pub fn take_in(&self, node: &str, batch: &Batch) {
        if batch.is_end() {
            // The stream will not come back: its view goes, so streams that come and go for
            // days (one per request) do not pile up here.
            if let Some(streams) = self.views.lock().unwrap().get_mut(node) {
                streams.remove(&**batch.stream());
            }
            return;
        }
        let view = {
            let mut views = self.views.lock().unwrap();
            let known = views.get(node).and_then(|streams| streams.get(&**batch.stream())).cloned();
            known.unwrap_or_else(|| {
                views
                    .entry(node.to_string())
                    .or_default()
                    .entry(batch.stream().to_string())
                    .or_insert_with(|| Arc::new(Mutex::new(View::of(batch))))
                    .clone()
            })
        };
        view.lock().unwrap().add(batch);
    }

    /// What this process has seen: its counters and a copy of every stream's view (each
    /// copied under its own lock, converted after it: a tap never waits for a conversion).
    fn local_picture(&self, process: usize) -> Picture {
        let counters = self.metrics.nodes();
        let devices = self.metrics.devices();
        let nodes = counters
            .iter()
            .map(|(label, m)| {
                let p99 = if label.starts_with("sinks.") && m.latency.count() > 0 {
                    m.latency.quantile_upper_s(0.99)
                } else {
                    m.processing.quantile_upper_s(0.99)
                };
                let c = NodeCounters {
                    rows_in: m.rows_in.load(Ordering::Relaxed),
                    rows_out: m.rows_out.load(Ordering::Relaxed),
                    busy_s: m.busy_ns.load(Ordering::Relaxed) as f64 * 1e-9,
                    in_flight: m.in_flight.load(Ordering::Relaxed),
                    dropped: m.dropped_invalid.load(Ordering::Relaxed) + m.dropped_overload.load(Ordering::Relaxed),
                    p99_s: p99,
                    device: devices.get(label).cloned(),
                };
                (label.clone(), c)
            })
            .collect();
        let views: Vec<((String, String), SharedView)> = self
            .views
            .lock()
            .unwrap()
            .iter()
            .flat_map(|(node, streams)| streams.iter().map(|(s, v)| ((node.clone(), s.clone()), v.clone())))
            .collect();
        let mut streams: BTreeMap<String, BTreeMap<String, StreamPicture>> = BTreeMap::new();
        for ((node, stream), view) in views {
            let view = view.lock().unwrap().clone();
            streams.entry(node).or_default().insert(stream, view.picture());
        }
        Picture {
            nodes,
            streams,
            processes: vec![process],
        }
    }

    /// The whole run's picture: this process's, merged with every other process's latest.
    fn picture(&self) -> Picture {
        let mut picture = self.local_picture(0);
        let remote: Vec<Picture> = self.remote.lock().unwrap().values().cloned().collect();
        for p in remote {
            picture.merge(p);
        }
        picture
    }

    /// A tick of the whole run now.
    pub(crate) fn new_tick(&self) -> Arc<Tick> {
        Arc::new(Tick {
            picture: self.picture(),
            uptime_s: self.metrics.uptime().as_secs_f64(),
            rendered: Mutex::new(HashMap::new()),
        })
    }

    /// The whole view as one JSON value, every traced channel included (`/api/state`).
    pub fn snapshot(&self) -> Value {
        self.render(&self.picture(), self.metrics.uptime().as_secs_f64(), &Selection::all())
    }

    /// `picture` as JSON: the graph with each node's counters, then every stream's view, with
    /// the traces `selection` asks for.
    fn render(&self, picture: &Picture, uptime: f64, selection: &Selection) -> Value {
        let nodes: Vec<Value> = self
            .graph
            .iter()
            .map(|n| {
                let c = picture.nodes.get(&n.label).cloned().unwrap_or_default();
                let rows = if n.label.starts_with("sources.") {
                    c.rows_out
                } else {
                    c.rows_in
                };
                json!({
                    "id": n.label,
                    "kind": n.kind,
                    "input": n.input,
                    "rows": rows,
                    "rows_in": c.rows_in,
                    "rows_out": c.rows_out,
                    "rows_per_s": rows as f64 / uptime.max(1e-9),
                    "busy_pct": 100.0 * c.busy_s / uptime.max(1e-9),
                    "in_flight": c.in_flight,
                    "p99_ms": c.p99_s.map(|s| if s.is_finite() { s * 1e3 } else { -1.0 }),
                    "dropped": c.dropped,
                    "device": c.device,
                })
            })
            .collect();
        let mut streams = Vec::new();
        for (node, by_stream) in &picture.streams {
            for (stream, view) in by_stream {
                let mut v = view.snapshot(&|traced| selection.channels(node, stream, traced));
                v["node"] = json!(node);
                v["stream"] = json!(stream);
                streams.push(v);
            }
        }
        json!({
            "pipeline": self.pipeline,
            "uptime_s": uptime,
            "processes": picture.processes,
            "outcome": *self.outcome.lock().unwrap(),
            "viewers": {
                "connected": self.viewers.len(),
                "sent": self.sent.load(Ordering::Relaxed),
                "dropped": self.viewers.dropped.load(Ordering::Relaxed),
            },
            "nodes": nodes,
            "thresholds": self.thresholds,
            "streams": streams,
        })
    }
}

impl neurostream_engine::BatchObserver for UiState {
    fn observe(&self, node: &str, batch: &Batch) {
        self.take_in(node, batch);
    }

    fn export_picture(&self) -> Option<Vec<u8>> {
        // The process index is set by the receiver, which knows who sent it.
        postcard::to_allocvec(&self.local_picture(0)).ok()
    }

    fn import_picture(&self, process: usize, picture: &[u8]) -> Result<(), String> {
        let mut picture: Picture = postcard::from_bytes(picture).map_err(|e| format!("it does not decode: {e}"))?;
        picture.processes = vec![process];
        self.remote.lock().unwrap().insert(process, picture);
        Ok(())
    }
}

/// The bounds the pipeline file sets on streams the view draws: `riemann_potato`'s z threshold
/// on its own output, and `token_stats` alert bounds on its input's columns (`fvu_above` as the
/// explained variance below which it fires).
fn thresholds(spec: &PipelineSpec, inputs: &BTreeMap<&str, String>) -> Vec<Value> {
    use neurostream_engine::toml::Value as T;
    let number = |v: Option<&T>| v.and_then(|v| v.as_float().or_else(|| v.as_integer().map(|i| i as f64)));
    let mut out = Vec::new();
    for n in &spec.nodes {
        let label = n.qualified_name();
        match n.kind.as_deref() {
            Some("riemann_potato") => {
                let value = number(n.config.get("threshold")).unwrap_or(3.0);
                out.push(json!({"node": label, "column": "z", "value": value, "rule": "threshold"}));
            }
            Some("token_stats") => {
                let Some(input) = n.input.as_deref().and_then(|i| inputs.get(i)) else {
                    continue;
                };
                for alert in n.config.get("alerts").and_then(T::as_array).into_iter().flatten() {
                    let rule = alert.get("rule").and_then(T::as_str).unwrap_or_default();
                    let (column, value) = match rule {
                        "fvu_above" => ("explained_variance".to_string(), number(alert.get("above")).map(|a| 1.0 - a)),
                        "mean_above" | "mean_below" => (
                            alert.get("column").and_then(T::as_str).unwrap_or_default().to_string(),
                            number(alert.get(if rule == "mean_above" { "above" } else { "below" })),
                        ),
                        _ => continue,
                    };
                    if let Some(value) = value {
                        out.push(json!({"node": input, "column": column, "value": value, "rule": rule}));
                    }
                }
            }
            _ => {}
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn viewers_pick_their_traces_within_limits() {
        let s = Selection::parse(r#"{"traces": [{"node": "sources.eeg", "stream": "eeg", "channels": [9, 3, 9]}]}"#).unwrap();
        assert_eq!(s.channels("sources.eeg", "eeg", 16), vec![3, 9]);
        // Streams it did not name: the first channels.
        assert_eq!(
            s.channels("operators.band", "eeg", 16),
            (0..DEFAULT_TRACES).collect::<Vec<_>>()
        );
        assert_eq!(s.channels("operators.power", "eeg", 3), vec![0, 1, 2]);
        assert_eq!(Selection::all().channels("x", "y", 20).len(), 20);
        for (bad, why) in [
            ("not json", "must be"),
            (
                r#"{"traces": [{"node": "a", "stream": "b", "channels": [256]}]}"#,
                "below 256",
            ),
            (r#"{"traces": [], "more": 1}"#, "unknown field"),
            (r#"{"traces": [{"node": "a", "stream": "b", "channels": [-1]}]}"#, "must be"),
        ] {
            let e = Selection::parse(bad).unwrap_err();
            assert!(e.contains(why), "{bad}: {e}");
        }
        let many = format!(
            r#"{{"traces": [{}]}}"#,
            vec![r#"{"node": "a", "stream": "b", "channels": []}"#; MAX_SELECTED_STREAMS + 1].join(",")
        );
        assert!(Selection::parse(&many).unwrap_err().contains("at most"));
    }

    #[test]
    fn node_counters_of_processes_add_up() {
        let mut a = NodeCounters {
            rows_in: 10,
            busy_s: 1.0,
            p99_s: Some(0.002),
            device: Some("cpu".into()),
            ..NodeCounters::default()
        };
        let b = NodeCounters {
            rows_in: 5,
            busy_s: 0.5,
            dropped: 2,
            p99_s: Some(0.004),
            device: Some("gpu: X".into()),
            ..NodeCounters::default()
        };
        a.merge(&b);
        a.merge(&NodeCounters {
            device: Some("cpu".into()),
            ..NodeCounters::default()
        });
        assert_eq!((a.rows_in, a.busy_s, a.dropped, a.p99_s), (15, 1.5, 2, Some(0.004)));
        assert_eq!(a.device.as_deref(), Some("cpu, gpu: X"));
    }
}
