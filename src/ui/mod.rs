//! The live view of a run (`neurostream run PIPELINE --ui`): a page served by the engine that
//! shows the pipeline's graph with each node's rate, busy time, queue depth, p99 latency and
//! drops; every signal stream as scrolling traces (decimated on the server, markers as lines);
//! band power and decoder outputs; feature densities, the most active features, top examples
//! and alerts of SAE monitoring; drift scores and cluster tables.
//!
//! How: [`attach`] adds a `ui_tap` sink to the output of every source and operator; each tap
//! hands its batches to the run's [`UiState`], which keeps a bounded, decimated picture. The
//! server ([`serve`]) pushes a JSON snapshot of it to every viewer once per second over a
//! WebSocket, each viewer with its own small drop-oldest queue, so viewers never slow the run.

mod server;
mod state;
mod tap;

use std::sync::Arc;

use neurostream_engine::spec::NodeSpec;
use neurostream_engine::{Metrics, Overload, PipelineSpec, Registry, RunReport};

pub use server::{serve, UiServer, MAX_CLIENT_MESSAGE, SEND_TIMEOUT, TICK, VIEWER_QUEUE};
pub use state::{UiState, COLUMNS, MAX_TRACED_CHANNELS, TRACE_SECONDS};
pub use tap::{UiTapConfig, UiTapKind};

/// Names of the taps [`attach`] adds start with this (pipeline files cannot use it).
pub const TAP_PREFIX: &str = "__ui_";

/// Whether a node name is one of the live view's taps.
pub fn is_tap(name: &str) -> bool {
    name.starts_with(TAP_PREFIX)
}

/// Adds a tap to every source and operator of `spec` and the `ui_tap` kind to `registry`;
/// returns the view they feed, reading node counters from `metrics`.
pub fn attach(spec: &mut PipelineSpec, registry: &mut Registry, metrics: Arc<Metrics>) -> Arc<UiState> {
    let state = UiState::new(spec, metrics);
    let tapped: Vec<(String, String)> = spec
        .nodes
        .iter()
        .filter(|n| n.section != neurostream_engine::spec::Section::Sink)
        .map(|n| (n.name.clone(), format!("{}.{}", n.section.table(), n.name)))
        .collect();
    for (name, label) in tapped {
        let mut config = neurostream_engine::toml::Table::new();
        config.insert("node".into(), neurostream_engine::toml::Value::String(label));
        spec.nodes.push(NodeSpec {
            section: neurostream_engine::spec::Section::Sink,
            name: format!("{TAP_PREFIX}{name}"),
            kind: Some(<UiTapConfig as neurostream_engine::NodeConfig>::KIND.to_string()),
            input: Some(name),
            device: None,
            on_invalid: None,
            overload: Overload::Block,
            config,
            position: None,
            key_positions: Default::default(),
        });
    }
    registry.add_sink(UiTapKind(state.clone()));
    state
}

/// Removes the taps from a run's report (they are the view's, not the user's).
pub fn strip_taps(report: &mut RunReport) {
    let tap_label = |label: &String| label.strip_prefix("sinks.").is_some_and(is_tap);
    report.nodes.retain(|label, _| !tap_label(label));
}
