//! The `token_stats` operator: windowed and all-time mean, minimum and maximum of every column
//! of a token-scalar stream (e.g. `sae_reconstruct`'s metrics), with alerts such as a windowed
//! fraction of variance unexplained above a bound.

use std::collections::HashMap;
use std::sync::Arc;

use neurostream_engine::checkpoint::{decode_streams, encode_streams, Checkpointing};
use neurostream_engine::{
    Batch, ComputeDevice, EngineError, NodeConfig, NodeContext, Operator, OperatorInstance, OperatorKind, Partitioning, Result,
    RowIndex, Schema, StreamKind, TableFrame,
};
use serde::{Deserialize, Serialize};

use super::alerts::{alerts_table, Alert, ScalarRule};
use super::clock::{PaneClock, WindowUnit};
use super::panes::{Panes, Span};
use super::tables::{Scope, TableBuilder};

/// The tables `token_stats` emits.
pub const TOKEN_TABLES: [&str; 2] = ["scalars", "alerts"];

/// Configuration of a `token_stats` operator. Token counts are per stream.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct TokenStatsConfig {
    /// Window length in `window_unit` (0: all-time only). Default 4096 (tokens).
    #[serde(default = "default_window")]
    #[schemars(extend("x-unit" = "window_unit"))]
    pub window: u64,
    /// Spacing of window closes in `window_unit` (default `window`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(extend("x-unit" = "window_unit"))]
    pub step: Option<u64>,
    /// What `window` and `step` count: `tokens` (default), or `s` / `ms` of event time.
    #[serde(default)]
    pub window_unit: WindowUnit,
    /// Alert rules evaluated on every window.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub alerts: Vec<ScalarRule>,
}

fn default_window() -> u64 {
    4096
}

impl NodeConfig for TokenStatsConfig {
    const KIND: &'static str = "token_stats";
}

/// The `token_stats` operator kind.
pub struct TokenStatsKind;

impl OperatorKind for TokenStatsKind {
    type Config = TokenStatsConfig;

    fn describe(&self) -> &'static str {
        "windowed and all-time mean/min/max of token scalars (e.g. reconstruction metrics) and alerts"
    }
    fn build(&self, cfg: TokenStatsConfig, ctx: &NodeContext, input: &Arc<Schema>) -> Result<Arc<dyn Operator>> {
        let fail = |m: String| EngineError::config(ctx.label, m);
        if !matches!(input.kind, StreamKind::TokenScalars { .. } | StreamKind::Signal { .. }) {
            return Err(fail(format!(
                "token_stats reads token scalars (e.g. sae_reconstruct metrics) or per-window signal scores, not {}",
                input.describe()
            )));
        }
        let step = super::window_step(cfg.window, cfg.step, cfg.window_unit).map_err(fail)?;
        if !cfg.alerts.is_empty() && cfg.window == 0 {
            return Err(fail("alerts are evaluated per window: set `window`".into()));
        }
        let names = input.channel_names();
        let mut rules = Vec::new();
        for (i, rule) in cfg.alerts.iter().enumerate() {
            let column = match rule {
                ScalarRule::FvuAbove { .. } => "explained_variance",
                ScalarRule::MeanAbove { column, .. } | ScalarRule::MeanBelow { column, .. } => column.as_str(),
            };
            let Some(c) = names.iter().position(|n| *n == column) else {
                return Err(fail(format!(
                    "alerts[{i}]: the input has no column `{column}` (it has {})",
                    names.join(", ")
                )));
            };
            rules.push((rule.clone(), c));
        }
        Ok(Arc::new(TokenStats {
            schema: Arc::new(Schema::tables(
                TOKEN_TABLES.iter().map(|s| s.to_string()).collect(),
                Some("token_stats".into()),
            )),
            columns: names.iter().map(|s| s.to_string()).collect(),
            window: cfg.window,
            step,
            unit: cfg.window_unit,
            rules: Arc::new(rules),
        }))
    }
}

struct TokenStats {
    schema: Arc<Schema>,
    columns: Vec<String>,
    window: u64,
    step: u64,
    unit: WindowUnit,
    rules: Arc<Vec<(ScalarRule, usize)>>,
}

impl Operator for TokenStats {
    fn output_schema(&self) -> Arc<Schema> {
        self.schema.clone()
    }
    fn partitioning(&self) -> Partitioning {
        Partitioning::ByStream
    }
    fn holds_back(&self) -> bool {
        true
    }
    fn checkpointing(&self) -> Checkpointing {
        Checkpointing::Snapshot
    }
    /// Host-only: a running sum, minimum and maximum per column of a few token scalars; no
    /// kernel worth a device.
    fn computes(&self) -> bool {
        false
    }
    fn instantiate(&self, _device: &ComputeDevice) -> Result<Box<dyn OperatorInstance>> {
        Ok(Box::new(TokenStatsInstance {
            schema: self.schema.clone(),
            columns: self.columns.clone(),
            window: self.window,
            step: self.step,
            unit: self.unit,
            rules: self.rules.clone(),
            streams: HashMap::new(),
        }))
    }
}

/// Per-column sums over a span of tokens (float64).
#[derive(Clone, Serialize, Deserialize)]
struct Sums {
    tokens: u64,
    sum: Vec<f64>,
    min: Vec<f64>,
    max: Vec<f64>,
}

impl Sums {
    fn new(width: usize) -> Sums {
        Sums {
            tokens: 0,
            sum: vec![0.0; width],
            min: vec![f64::INFINITY; width],
            max: vec![f64::NEG_INFINITY; width],
        }
    }
    fn add(&mut self, row: &[f32]) {
        self.tokens += 1;
        for (c, &v) in row.iter().enumerate() {
            let v = v as f64;
            self.sum[c] += v;
            self.min[c] = self.min[c].min(v);
            self.max[c] = self.max[c].max(v);
        }
    }
    fn mean(&self, c: usize) -> f64 {
        if self.tokens == 0 {
            f64::NAN
        } else {
            self.sum[c] / self.tokens as f64
        }
    }
}

impl Span for Sums {
    fn merge(&mut self, o: &Sums) {
        self.tokens += o.tokens;
        for c in 0..self.sum.len() {
            self.sum[c] += o.sum[c];
            self.min[c] = self.min[c].min(o.min[c]);
            self.max[c] = self.max[c].max(o.max[c]);
        }
    }
}

#[derive(Serialize, Deserialize)]
struct StreamState {
    tokens: u64,
    clock: PaneClock,
    pane: Sums,
    panes: Panes<Sums>,
    all: Sums,
    emitted_at: Option<u64>,
}

struct TokenStatsInstance {
    schema: Arc<Schema>,
    columns: Vec<String>,
    window: u64,
    step: u64,
    unit: WindowUnit,
    rules: Arc<Vec<(ScalarRule, usize)>>,
    streams: HashMap<Arc<str>, StreamState>,
}

impl TokenStatsInstance {
    fn close_pane(&self, name: &Arc<str>, state: &mut StreamState, out: &mut Vec<Batch>) {
        let full = std::mem::replace(&mut state.pane, Sums::new(self.columns.len()));
        state.panes.push(full);
        self.emit(name, state, false, out);
    }

    fn emit(&self, name: &Arc<str>, state: &mut StreamState, is_final: bool, out: &mut Vec<Batch>) {
        let end = state.tokens;
        state.emitted_at = Some(end);
        let width = self.columns.len();
        let span = state.clock.window_span();
        let all_span = state.clock.first_time.zip(span).map(|(first, (_, e))| (first.min(e), e));
        let mut scopes = Vec::new();
        if self.window > 0 {
            let mut w = Sums::new(width);
            let partial = is_final && state.pane.tokens > 0;
            state.panes.merge_window(partial.then_some(&state.pane), &mut w);
            scopes.push((Scope::Window, end - w.tokens, span, w));
        }
        scopes.push((Scope::AllTime, 0, all_span, state.all.clone()));
        let mut push = |table: &str, data| {
            out.push(Batch::Table(TableFrame {
                stream: name.clone(),
                schema: self.schema.clone(),
                table: table.into(),
                data,
            }))
        };
        for (scope, start, time, s) in &scopes {
            let mut t = TableBuilder::new(name, *scope, *start, end, *time, width);
            t.u64("tokens", vec![s.tokens; width])
                .opt_str("column", self.columns.iter().map(|c| Some(c.clone())).collect())
                .f64("mean", (0..width).map(|c| s.mean(c)).collect())
                .f64("min", s.min.clone())
                .f64("max", s.max.clone())
                .bool("final", vec![is_final; width]);
            push("scalars", t.finish());
        }
        if let Some((_, start, time, w)) = scopes.iter().find(|(sc, ..)| *sc == Scope::Window) {
            let mut alerts = Vec::new();
            for (rule, c) in self.rules.iter() {
                let mean = w.mean(*c);
                let (name, kind, observed, bound, fired, message) = match rule {
                    ScalarRule::FvuAbove { name, above } => {
                        let fvu = 1.0 - mean;
                        (
                            name,
                            "fvu_above",
                            fvu,
                            *above,
                            fvu > *above,
                            format!("FVU {fvu:.4} above {above}"),
                        )
                    }
                    ScalarRule::MeanAbove { name, column, above } => (
                        name,
                        "mean_above",
                        mean,
                        *above,
                        mean > *above,
                        format!("mean {column} {mean:.4} above {above}"),
                    ),
                    ScalarRule::MeanBelow { name, column, below } => (
                        name,
                        "mean_below",
                        mean,
                        *below,
                        mean < *below,
                        format!("mean {column} {mean:.4} below {below}"),
                    ),
                };
                if fired {
                    alerts.push(Alert {
                        rule: name.clone().unwrap_or_else(|| kind.to_string()),
                        kind,
                        feature: None,
                        observed,
                        expected: bound,
                        threshold: bound,
                        message,
                    });
                }
            }
            if !alerts.is_empty() {
                push("alerts", alerts_table(name, *start, end, *time, &alerts));
            }
        }
    }
}

impl OperatorInstance for TokenStatsInstance {
    fn snapshot(&self) -> Result<Vec<u8>> {
        encode_streams(&self.streams)
    }

    fn restore(&mut self, state: &[u8]) -> Result<()> {
        for (name, s) in decode_streams::<StreamState>(state, "token_stats")? {
            if s.all.sum.len() != self.columns.len() {
                return Err(EngineError::Checkpoint(format!(
                    "token_stats: the saved state has {} columns, the input has {}",
                    s.all.sum.len(),
                    self.columns.len()
                )));
            }
            self.streams.insert(name, s);
        }
        Ok(())
    }

    fn process(&mut self, batch: Batch, out: &mut Vec<Batch>) -> Result<()> {
        let Batch::Dense(frame) = batch else {
            return Err(EngineError::Runtime(format!(
                "token_stats: stream {} is not a dense token-scalar stream",
                batch.stream()
            )));
        };
        let width = self.columns.len();
        let name = frame.stream.clone();
        let mut state = self.streams.remove(&name).unwrap_or_else(|| StreamState {
            tokens: 0,
            clock: PaneClock::new(self.unit, self.window, self.step),
            pane: Sums::new(width),
            panes: Panes::new(self.window, self.step),
            all: Sums::new(width),
            emitted_at: None,
        });
        let times = match &frame.index {
            RowIndex::Tokens { time, .. } => time.as_ref(),
            RowIndex::Samples(_) => None,
        };
        for r in 0..frame.rows() {
            let closes = match state.clock.before(times.map(|t| t[r])) {
                Ok(c) => c,
                Err(m) => {
                    let row = frame.index.describe_row(r);
                    self.streams.insert(name.clone(), state);
                    return Err(EngineError::Runtime(format!("token_stats: stream {name}, {row}: {m}")));
                }
            };
            for _ in 0..closes {
                self.close_pane(&name, &mut state, out);
                state.clock.advance();
            }
            let row = frame.row(r);
            state.pane.add(row);
            state.all.add(row);
            state.tokens += 1;
            if state.clock.after() {
                self.close_pane(&name, &mut state, out);
            }
        }
        self.streams.insert(name, state);
        Ok(())
    }

    fn finish(&mut self, out: &mut Vec<Batch>) -> Result<()> {
        let names = neurostream_engine::stream_names(&self.streams);
        for name in names {
            self.end_stream(&name, out)?;
        }
        Ok(())
    }

    /// Emits the stream's last window and all-time row and drops its state.
    fn end_stream(&mut self, name: &Arc<str>, out: &mut Vec<Batch>) -> Result<()> {
        let Some(mut state) = self.streams.remove(name) else {
            return Ok(());
        };
        if state.clock.late > 0 {
            tracing::info!(
                "token_stats: stream {name}: {} tokens arrived with an event time before their window's start and were counted in the open window",
                state.clock.late
            );
        }
        if state.emitted_at != Some(state.tokens) {
            self.emit(name, &mut state, true, out);
        }
        Ok(())
    }
}
