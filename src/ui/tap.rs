//! `ui_tap`: the sink the live view attaches to every source and operator output; it hands
//! each batch to the view's [`UiState`], which decimates it on arrival (bounded work and memory
//! per batch, never a copy of the data kept).

use std::sync::Arc;

use neurostream_engine::{Batch, NodeConfig, NodeContext, Placement, Result, Schema, Sink, SinkKind, SinkWriter, WorkerPos};
use serde::{Deserialize, Serialize};

use super::state::UiState;

/// Configuration of a `ui_tap` sink (added by `--ui`, not written in pipeline files).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct UiTapConfig {
    /// Label of the node whose output this tap shows (`operators.band`).
    pub node: String,
}

impl NodeConfig for UiTapConfig {
    const KIND: &'static str = "ui_tap";
}

/// The `ui_tap` sink kind, bound to one run's view.
pub struct UiTapKind(pub Arc<UiState>);

impl SinkKind for UiTapKind {
    type Config = UiTapConfig;

    fn describe(&self) -> &'static str {
        "feeds the live view (`neurostream run --ui`); added by the engine, not written in pipeline files"
    }
    fn build(&self, cfg: UiTapConfig, _ctx: &NodeContext, _input: &Arc<Schema>) -> Result<Arc<dyn Sink>> {
        Ok(Arc::new(UiTap {
            node: cfg.node,
            state: self.0.clone(),
        }))
    }
}

struct UiTap {
    node: String,
    state: Arc<UiState>,
}

impl Sink for UiTap {
    fn placement(&self) -> Placement {
        // Each worker feeds the view from where its rows are: no exchange for the view.
        Placement::PerWorker
    }
    fn open(&self, _worker: WorkerPos) -> Result<Box<dyn SinkWriter>> {
        Ok(Box::new(UiTapWriter {
            node: self.node.clone(),
            state: self.state.clone(),
        }))
    }
}

struct UiTapWriter {
    node: String,
    state: Arc<UiState>,
}

impl SinkWriter for UiTapWriter {
    fn write(&mut self, batch: &Batch) -> Result<()> {
        self.state.observe(&self.node, batch);
        Ok(())
    }

    fn finish(self: Box<Self>, _failure: Option<&str>) -> Result<Vec<String>> {
        Ok(Vec::new())
    }
}
