//! The `feature_stats` operator.

use std::collections::HashMap;
use std::sync::Arc;

use neurostream_engine::checkpoint::{decode_state, encode_state, Checkpointing};
use neurostream_engine::kernels::Kernels;
use neurostream_engine::{
    Batch, ComputeDevice, EngineError, NodeConfig, NodeContext, Operator, OperatorInstance, OperatorKind, Partitioning, Result,
    RowIndex, Schema, SparseFrame, StreamKind, TableFrame,
};
use serde::{Deserialize, Serialize};

use super::accum::{firing, Accum, LogBins};
use super::alerts::{alerts_table, read_reference_densities, read_sparsity_densities, Alert, FeatureRule, Reference};
use super::clock::{PaneClock, WindowUnit};
use super::counters::{CpuCounters, FeatureCounters, GpuCounters, Sums, MAX_UNSETTLED_TOKENS};
use super::examples::TopExamples;
use super::panes::Panes;
use super::tables::{Scope, TableBuilder};

/// The tables `feature_stats` emits, in order.
pub const FEATURE_TABLES: [&str; 7] = [
    "windows",
    "features",
    "density_histogram",
    "activation_histogram",
    "l0",
    "top_examples",
    "alerts",
];

/// When the all-time tables are emitted.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum AllTimeEvery {
    /// With every window (the default; what a live deployment needs).
    #[default]
    Window,
    /// Once, when the input ends.
    End,
}

/// Configuration of a `feature_stats` operator. Token counts are per stream.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct FeatureStatsConfig {
    /// Window length in `window_unit` (0: all-time statistics only). Default 4096 (tokens).
    #[serde(default = "default_window")]
    #[schemars(extend("x-unit" = "window_unit"))]
    pub window: u64,
    /// Spacing of window closes in `window_unit` (default `window`: tumbling windows); `window`
    /// must be a multiple.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(extend("x-unit" = "window_unit"))]
    pub step: Option<u64>,
    /// What `window` and `step` count: `tokens` (default), or `s` / `ms` of event time.
    #[serde(default)]
    pub window_unit: WindowUnit,
    /// When the all-time tables are emitted: `window` (with every window) or `end`.
    #[serde(default)]
    pub all_time: AllTimeEvery,
    /// A feature is dead when it has not fired in the last this many tokens (default `window`, or
    /// 10000 without windows). Nothing is called dead before that many tokens were seen.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(extend("x-unit" = "tokens"))]
    pub dead_after: Option<u64>,
    /// A feature is dense when its density in the scope is above this (default 0.1).
    #[serde(default = "default_dense")]
    pub dense_above: f64,
    /// log10 range and bin count of the feature density histogram (default -8 .. 0, 32 bins).
    #[serde(default = "default_density_bins")]
    pub density_bins: [f64; 3],
    /// log10 range and bin count of the per-feature activation histogram (default -3 .. 3,
    /// 24 bins); `bins = 0` turns the table off.
    #[serde(default = "default_act_bins")]
    pub activation_bins: [f64; 3],
    /// Top activating examples kept per feature, all time (default 10; 0 turns them off).
    #[serde(default = "default_top_k")]
    pub top_k: usize,
    /// Tokens of context kept each side of an example, when the stream carries token text (default 5).
    #[serde(default = "default_context")]
    #[schemars(extend("x-unit" = "tokens"))]
    pub context: usize,
    /// Alert rules evaluated on every window: `[[operators.NAME.alerts]]` tables (see Alerts).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub alerts: Vec<FeatureRule>,
}

fn default_window() -> u64 {
    4096
}
fn default_dense() -> f64 {
    0.1
}
fn default_density_bins() -> [f64; 3] {
    [-8.0, 0.0, 32.0]
}
fn default_act_bins() -> [f64; 3] {
    [-3.0, 3.0, 24.0]
}
fn default_top_k() -> usize {
    10
}
fn default_context() -> usize {
    5
}

impl Default for FeatureStatsConfig {
    fn default() -> Self {
        toml::from_str("").expect("defaults parse")
    }
}

impl NodeConfig for FeatureStatsConfig {
    const KIND: &'static str = "feature_stats";
}

fn log_bins(key: &str, v: [f64; 3], allow_off: bool) -> std::result::Result<Option<LogBins>, String> {
    let [lo, hi, bins] = v;
    if bins == 0.0 && allow_off {
        return Ok(None);
    }
    if lo >= hi || bins < 1.0 || bins.fract() != 0.0 || !lo.is_finite() || !hi.is_finite() {
        return Err(format!(
            "`{key}` = [log10 low, log10 high, bins] needs low < high and a whole number of bins >= 1, got {v:?}"
        ));
    }
    Ok(Some(LogBins {
        lo,
        hi,
        bins: bins as usize,
    }))
}

/// The `feature_stats` operator kind.
pub struct FeatureStatsKind;

impl OperatorKind for FeatureStatsKind {
    type Config = FeatureStatsConfig;

    fn describe(&self) -> &'static str {
        "windowed and all-time feature statistics (density, histograms, dead/dense, top examples) and alerts"
    }

    fn build(&self, cfg: FeatureStatsConfig, ctx: &NodeContext, input: &Arc<Schema>) -> Result<Arc<dyn Operator>> {
        let fail = |m: String| EngineError::config(ctx.label, m);
        let StreamKind::Features { n_features, .. } = input.kind else {
            return Err(fail(format!(
                "feature_stats reads a sparse feature stream (e.g. from sae_encode), not {}",
                input.describe()
            )));
        };
        let step = super::window_step(cfg.window, cfg.step, cfg.window_unit).map_err(fail)?;
        let density_bins = log_bins("density_bins", cfg.density_bins, false).map_err(fail)?.unwrap();
        let act_bins = log_bins("activation_bins", cfg.activation_bins, true).map_err(fail)?;
        if !(0.0..=1.0).contains(&cfg.dense_above) {
            return Err(fail(format!("`dense_above` is a density in [0, 1], got {}", cfg.dense_above)));
        }
        if !cfg.alerts.is_empty() && cfg.window == 0 {
            return Err(fail("alerts are evaluated per window: set `window`".into()));
        }
        let mut references = Vec::new();
        for (i, rule) in cfg.alerts.iter().enumerate() {
            let at = |m: String| fail(format!("alerts[{i}]: {m}"));
            let mut reference = None;
            match rule {
                FeatureRule::DensityRatio {
                    above,
                    below,
                    reference: r,
                    features,
                    ..
                } => {
                    if above.is_none() && below.is_none() {
                        return Err(at("density_ratio needs `above`, `below` or both".into()));
                    }
                    if above.is_some_and(|a| a <= 1.0) || below.is_some_and(|b| !(0.0..1.0).contains(&b)) {
                        return Err(at("`above` must be > 1 and `below` in [0, 1)".into()));
                    }
                    check_features(features.as_deref().unwrap_or(&[]), n_features).map_err(at)?;
                    match r {
                        Reference::File(path) => {
                            reference = Some(read_reference_densities(&ctx.input_file(path), n_features).map_err(at)?)
                        }
                        Reference::Sparsity(path) => {
                            reference = Some(read_sparsity_densities(&ctx.input_file(path), n_features).map_err(at)?)
                        }
                        _ => {}
                    }
                }
                FeatureRule::DeadFractionJump { above, .. } => {
                    if !(0.0..1.0).contains(above) {
                        return Err(at("`above` is a fraction of features in [0, 1)".into()));
                    }
                }
                FeatureRule::FeatureFires { features, .. } => {
                    if features.is_empty() {
                        return Err(at("`features` lists no feature".into()));
                    }
                    check_features(features, n_features).map_err(at)?;
                }
            }
            references.push(reference);
        }
        let dead_after = cfg.dead_after.unwrap_or(if cfg.window > 0 { cfg.window } else { 10_000 });
        Ok(Arc::new(FeatureStats {
            schema: Arc::new(Schema::tables(
                FEATURE_TABLES.iter().map(|s| s.to_string()).collect(),
                Some("feature_stats".into()),
            )),
            settings: Arc::new(Settings {
                n_features,
                window: cfg.window,
                step,
                unit: cfg.window_unit,
                all_time: cfg.all_time,
                dead_after,
                dense_above: cfg.dense_above,
                density_bins,
                act_bins,
                top_k: cfg.top_k,
                context: cfg.context,
                rules: cfg.alerts,
                references,
            }),
        }))
    }
}

fn check_features(features: &[u32], n_features: usize) -> std::result::Result<(), String> {
    match features.iter().find(|&&f| f as usize >= n_features) {
        Some(f) => Err(format!("feature {f} >= the input's {n_features} features")),
        None => Ok(()),
    }
}

struct Settings {
    n_features: usize,
    window: u64,
    step: u64,
    unit: WindowUnit,
    all_time: AllTimeEvery,
    dead_after: u64,
    dense_above: f64,
    density_bins: LogBins,
    act_bins: Option<LogBins>,
    top_k: usize,
    context: usize,
    rules: Vec<FeatureRule>,
    /// Densities read from reference files, per rule.
    references: Vec<Option<Vec<f64>>>,
}

struct FeatureStats {
    schema: Arc<Schema>,
    settings: Arc<Settings>,
}

impl Operator for FeatureStats {
    fn output_schema(&self) -> Arc<Schema> {
        self.schema.clone()
    }
    fn partitioning(&self) -> Partitioning {
        Partitioning::ByStream
    }
    fn holds_back(&self) -> bool {
        true
    }
    /// On a GPU it counts the pairs `sae_encode` left there, uploading nothing.
    fn takes_device_rows(&self) -> bool {
        true
    }
    fn checkpointing(&self) -> Checkpointing {
        Checkpointing::Snapshot
    }
    fn instantiate(&self, device: &ComputeDevice) -> Result<Box<dyn OperatorInstance>> {
        let (n_features, bins) = (self.settings.n_features, self.settings.act_bins);
        let counters = Kernels::select(
            "feature_stats",
            device,
            |ctx| Ok(Box::new(GpuCounters::new(ctx, n_features, bins)?) as Box<dyn FeatureCounters>),
            Box::new(move || Box::new(CpuCounters::new(bins)) as Box<dyn FeatureCounters>),
        )?;
        Ok(Box::new(FeatureStatsInstance {
            schema: self.schema.clone(),
            settings: self.settings.clone(),
            streams: HashMap::new(),
            counters,
        }))
    }
}

/// What a closed window left behind for the next one's alerts.
#[derive(Clone, Serialize, Deserialize)]
struct WindowMemory {
    density: Vec<f64>,
    dead_fraction: f64,
}

#[derive(Clone, Serialize, Deserialize)]
struct StreamState {
    name: Arc<str>,
    tokens: u64,
    clock: PaneClock,
    pane: Accum,
    panes: Panes<Accum>,
    /// Evicted panes kept for reuse (allocations only).
    #[serde(skip)]
    spare: Vec<Accum>,
    all: Accum,
    /// Token index + 1 of each feature's last firing (0: never).
    last_fired: Vec<u64>,
    examples: TopExamples,
    previous: Option<WindowMemory>,
    first: Option<Vec<f64>>,
    /// Token count at the last emission (to skip an empty final window).
    emitted_at: Option<u64>,
    #[serde(skip)]
    ids: Vec<u32>,
    #[serde(skip)]
    acts: Vec<f32>,
}

struct FeatureStatsInstance {
    schema: Arc<Schema>,
    settings: Arc<Settings>,
    streams: HashMap<Arc<str>, StreamState>,
    counters: Kernels<dyn FeatureCounters>,
}

impl StreamState {
    /// The counters firing tokens add to.
    fn sums(&mut self) -> Sums<'_> {
        Sums {
            pane: &mut self.pane,
            all: &mut self.all,
            last_fired: &mut self.last_fired,
        }
    }
}

impl OperatorInstance for FeatureStatsInstance {
    fn process(&mut self, batch: Batch, out: &mut Vec<Batch>) -> Result<()> {
        let Batch::Sparse(frame) = batch else {
            return Err(EngineError::Runtime(format!(
                "feature_stats: stream {} is not a sparse feature stream",
                batch.stream()
            )));
        };
        let s = &self.settings;
        let state = self.streams.entry(frame.stream.clone()).or_insert_with(|| {
            let bins = s.act_bins.map_or(0, |b| b.bins);
            StreamState {
                name: frame.stream.clone(),
                tokens: 0,
                clock: PaneClock::new(s.unit, s.window, s.step),
                pane: Accum::new(s.n_features, bins),
                panes: Panes::new(s.window, s.step),
                spare: Vec::new(),
                all: Accum::new(s.n_features, bins),
                last_fired: vec![0; s.n_features],
                examples: TopExamples::new(s.n_features, s.top_k, s.context),
                previous: None,
                first: None,
                emitted_at: None,
                ids: Vec::new(),
                acts: Vec::new(),
            }
        });
        add_frame(state, s, &self.schema, &mut self.counters, &frame, out)
    }

    fn snapshot(&self) -> Result<Vec<u8>> {
        // Counts still on a device are added to a copy: a snapshot changes nothing.
        let mut streams = Vec::with_capacity(self.streams.len());
        for state in self.streams.values() {
            streams.push(match self.counters.get().unsettled(&state.name)? {
                Some(counts) => {
                    let mut copy = state.clone();
                    counts.apply(copy.sums());
                    std::borrow::Cow::Owned(copy)
                }
                None => std::borrow::Cow::Borrowed(state),
            });
        }
        streams.sort_by(|a, b| a.name.cmp(&b.name));
        encode_state(&streams.iter().map(|s| s.as_ref()).collect::<Vec<&StreamState>>())
    }

    fn restore(&mut self, state: &[u8]) -> Result<()> {
        let streams: Vec<StreamState> = decode_state(state, "feature_stats")?;
        for mut s in streams {
            s.examples.put_in_order();
            if s.last_fired.len() != self.settings.n_features {
                return Err(EngineError::Checkpoint(format!(
                    "feature_stats: the saved state has {} features, the input has {}",
                    s.last_fired.len(),
                    self.settings.n_features
                )));
            }
            self.streams.insert(s.name.clone(), s);
        }
        Ok(())
    }

    fn finish(&mut self, out: &mut Vec<Batch>) -> Result<()> {
        let names = neurostream_engine::stream_names(&self.streams);
        for name in names {
            self.finish_stream(&name, out)?;
        }
        Ok(())
    }

    fn end_stream(&mut self, stream: &Arc<str>, out: &mut Vec<Batch>) -> Result<()> {
        self.finish_stream(stream, out)?;
        self.streams.remove(stream);
        Ok(())
    }
}

impl FeatureStatsInstance {
    /// Emits a stream's last window and its all-time tables (it ends, or the run does).
    fn finish_stream(&mut self, name: &Arc<str>, out: &mut Vec<Batch>) -> Result<()> {
        let Some(state) = self.streams.get_mut(name) else {
            return Ok(());
        };
        settle(state, &mut self.counters)?;
        if state.clock.late > 0 {
            tracing::info!(
                "feature_stats: stream {name}: {} tokens arrived with an event time before their window's start and were counted in the open window",
                state.clock.late
            );
        }
        if state.emitted_at == Some(state.tokens) && self.settings.all_time == AllTimeEvery::Window {
            return Ok(()); // the last window closed exactly at the end and carried the all-time tables
        }
        let window = self.settings.window > 0 && state.emitted_at != Some(state.tokens);
        emit(state, &self.settings, &self.schema, window, true, true, out);
        Ok(())
    }
}

fn add_frame(
    state: &mut StreamState,
    s: &Settings,
    schema: &Arc<Schema>,
    counters: &mut Kernels<dyn FeatureCounters>,
    frame: &SparseFrame,
    out: &mut Vec<Batch>,
) -> Result<()> {
    let (seq_ids, positions, tokens, times) = match &frame.index {
        RowIndex::Tokens {
            seq_id,
            pos,
            token,
            time,
        } => (Some(seq_id), Some(pos), token.as_ref(), time.as_ref()),
        RowIndex::Samples(_) => (None, None, None, None),
    };
    // Rows `from..` are not counted yet; row `from` is the stream's token `from_token`. They
    // are counted in runs, each up to a pane's close.
    let (mut from, mut from_token) = (0, state.tokens);
    for r in 0..frame.rows() {
        let closes = state.clock.before(times.map(|t| t[r])).map_err(|m| {
            EngineError::Runtime(format!(
                "feature_stats: stream {}, {}: {m}",
                frame.stream,
                frame.index.describe_row(r)
            ))
        })?;
        if closes > 0 {
            count(state, counters, frame, from..r, from_token)?;
            (from, from_token) = (r, state.tokens);
            settle(state, counters)?;
            for _ in 0..closes {
                close_pane(state, s, schema, out);
                state.clock.advance();
            }
        }
        state.tokens += 1;
        if s.top_k > 0 {
            firing(frame.row(r), &mut state.ids, &mut state.acts);
            let seq = seq_ids.map_or(0, |v| v[r]);
            let pos = positions.map_or(r as u32, |v| v[r]);
            state
                .examples
                .add_token(seq, pos, tokens.map(|t| t[r].as_str()), &state.ids, &state.acts);
        }
        if state.clock.after() {
            count(state, counters, frame, from..r + 1, from_token)?;
            (from, from_token) = (r + 1, state.tokens);
            settle(state, counters)?;
            close_pane(state, s, schema, out);
        }
    }
    count(state, counters, frame, from..frame.rows(), from_token)
}

/// Adds rows `rows` of `frame` (the first the stream's token `first_token`) to the stream's
/// counters. Where a GPU error may still switch to the CPU, each run is settled at once, so
/// no count is left on a device the CPU kernels would not know of.
fn count(
    state: &mut StreamState,
    counters: &mut Kernels<dyn FeatureCounters>,
    frame: &SparseFrame,
    rows: std::ops::Range<usize>,
    first_token: u64,
) -> Result<()> {
    if rows.is_empty() {
        return Ok(());
    }
    if !counters.may_fall_back() {
        return counters.run(|k| k.add_rows(frame, rows.clone(), first_token, state.sums()));
    }
    let step = MAX_UNSETTLED_TOKENS as usize;
    for start in rows.clone().step_by(step) {
        let run = start..(start + step).min(rows.end);
        let first = first_token + (start - rows.start) as u64;
        counters.run(|k| {
            k.add_rows(frame, run.clone(), first, state.sums())?;
            k.settle(&frame.stream, state.sums())
        })?;
    }
    Ok(())
}

/// Brings the stream's counts into its state (from a device, where they are counted there).
fn settle(state: &mut StreamState, counters: &mut Kernels<dyn FeatureCounters>) -> Result<()> {
    let name = state.name.clone();
    counters.run(|k| k.settle(&name, state.sums()))
}

fn close_pane(state: &mut StreamState, s: &Settings, schema: &Arc<Schema>, out: &mut Vec<Batch>) {
    let bins = s.act_bins.map_or(0, |b| b.bins);
    let fresh = state.spare.pop().unwrap_or_else(|| Accum::new(s.n_features, bins));
    let full = std::mem::replace(&mut state.pane, fresh);
    if let Some(mut old) = state.panes.push(full) {
        old.clear();
        state.spare.push(old);
    }
    let all_time = s.all_time == AllTimeEvery::Window;
    emit(state, s, schema, s.window > 0, all_time, false, out);
}

/// Emits the tables of the current window (when `window`) and of all time (when `all_time`).
fn emit(
    state: &mut StreamState,
    s: &Settings,
    schema: &Arc<Schema>,
    window: bool,
    all_time: bool,
    is_final: bool,
    out: &mut Vec<Batch>,
) {
    let end = state.tokens;
    state.emitted_at = Some(end);
    let dead: Vec<bool> = state
        .last_fired
        .iter()
        .map(|&l| end >= s.dead_after && (l == 0 || l <= end - s.dead_after))
        .collect();
    let mut push = |table: &str, data| {
        out.push(Batch::Table(TableFrame {
            stream: state.name.clone(),
            schema: schema.clone(),
            table: table.into(),
            data,
        }))
    };
    // Event-time spans: the window's, and for all time from the first token to the window's end.
    let span = state.clock.window_span();
    let all_span = state.clock.first_time.zip(span).map(|(first, (_, e))| (first.min(e), e));
    // (scope, first token, event-time span, sums)
    type ScopeSums<'a> = (Scope, u64, Option<(i64, i64)>, std::borrow::Cow<'a, Accum>);
    let mut scopes: Vec<ScopeSums> = Vec::new();
    if window {
        let mut w = Accum::new(s.n_features, s.act_bins.map_or(0, |b| b.bins));
        let partial = state.pane.tokens > 0 && is_final;
        state.panes.merge_window(partial.then_some(&state.pane), &mut w);
        scopes.push((Scope::Window, end - w.tokens, span, std::borrow::Cow::Owned(w)));
    }
    if all_time {
        scopes.push((Scope::AllTime, 0, all_span, std::borrow::Cow::Borrowed(&state.all)));
    }
    for (scope, start, time, acc) in &scopes {
        for (table, data) in scope_tables(&state.name, *scope, *start, end, *time, acc, &dead, s, is_final) {
            push(table, data);
        }
    }
    if all_time && s.top_k > 0 {
        push(
            "top_examples",
            top_examples_table(&state.name, end, all_span, &state.examples),
        );
    }
    if let Some((_, start, time, w)) = scopes.iter().find(|(sc, ..)| *sc == Scope::Window) {
        let dead_fraction = dead.iter().filter(|&&d| d).count() as f64 / s.n_features as f64;
        let density: Vec<f64> = (0..s.n_features).map(|f| w.density(f)).collect();
        let alerts = evaluate(s, w, &density, dead_fraction, state.previous.as_ref(), state.first.as_deref());
        if !alerts.is_empty() {
            push("alerts", alerts_table(&state.name, *start, end, *time, &alerts));
        }
        // Only full windows become references for the next ones.
        if !is_final || state.first.is_none() {
            if state.first.is_none() {
                state.first = Some(density.clone());
            }
            state.previous = Some(WindowMemory { density, dead_fraction });
        }
    }
}

#[allow(clippy::too_many_arguments)]
fn scope_tables(
    stream: &str,
    scope: Scope,
    start: u64,
    end: u64,
    time: Option<(i64, i64)>,
    acc: &Accum,
    dead: &[bool],
    s: &Settings,
    is_final: bool,
) -> Vec<(&'static str, arrow::record_batch::RecordBatch)> {
    let n = s.n_features;
    let density: Vec<f64> = (0..n).map(|f| acc.density(f)).collect();
    let dense: Vec<bool> = density.iter().map(|&d| d > s.dense_above).collect();
    let mut tables = Vec::new();

    let nnz: u64 = acc.l0.iter().map(|(l0, t)| *l0 as u64 * t).sum();
    let mut w = TableBuilder::new(stream, scope, start, end, time, 1);
    w.u64("tokens", vec![acc.tokens])
        .f64(
            "mean_l0",
            vec![if acc.tokens > 0 { nnz as f64 / acc.tokens as f64 } else { 0.0 }],
        )
        .u64("alive", vec![acc.count.iter().filter(|&&c| c > 0).count() as u64])
        .u64("dead", vec![dead.iter().filter(|&&d| d).count() as u64])
        .u64("dense", vec![dense.iter().filter(|&&d| d).count() as u64])
        .f64("dead_fraction", vec![dead.iter().filter(|&&d| d).count() as f64 / n as f64])
        .bool("final", vec![is_final]);
    tables.push(("windows", w.finish()));

    let mut f = TableBuilder::new(stream, scope, start, end, time, n);
    f.u32("feature", (0..n as u32).collect())
        .u64("count", acc.count.clone())
        .f64("density", density.clone())
        .f64("mean_act", (0..n).map(|i| acc.mean_act(i)).collect())
        .f32("max_act", acc.max.clone())
        .bool("dead", dead.to_vec())
        .bool("dense", dense);
    tables.push(("features", f.finish()));

    let b = &s.density_bins;
    let mut counts = vec![0u64; b.bins];
    let mut zero = 0u64;
    for &d in &density {
        if d > 0.0 {
            counts[b.bin(d)] += 1;
        } else {
            zero += 1;
        }
    }
    let mut lo = vec![f64::NEG_INFINITY];
    let mut hi = vec![f64::NEG_INFINITY];
    for i in 0..b.bins {
        let (l, h) = b.edges(i);
        lo.push(l);
        hi.push(h);
    }
    let mut h = TableBuilder::new(stream, scope, start, end, time, b.bins + 1);
    h.f64("log10_density_lo", lo)
        .f64("log10_density_hi", hi)
        .u64("features", std::iter::once(zero).chain(counts).collect());
    tables.push(("density_histogram", h.finish()));

    if let Some(ab) = &s.act_bins {
        let (mut feat, mut lo, mut hi, mut cnt) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
        for fi in 0..n {
            for bi in 0..ab.bins {
                let c = acc.hist[fi * ab.bins + bi];
                if c > 0 {
                    let (l, h) = ab.edges(bi);
                    feat.push(fi as u32);
                    lo.push(l);
                    hi.push(h);
                    cnt.push(c as u64);
                }
            }
        }
        let mut t = TableBuilder::new(stream, scope, start, end, time, feat.len());
        t.u32("feature", feat)
            .f64("log10_act_lo", lo)
            .f64("log10_act_hi", hi)
            .u64("count", cnt);
        tables.push(("activation_histogram", t.finish()));
    }

    let mut l = TableBuilder::new(stream, scope, start, end, time, acc.l0.len());
    l.u32("l0", acc.l0.keys().copied().collect())
        .u64("tokens", acc.l0.values().copied().collect());
    tables.push(("l0", l.finish()));
    tables
}

fn top_examples_table(stream: &str, end: u64, time: Option<(i64, i64)>, ex: &TopExamples) -> arrow::record_batch::RecordBatch {
    let (mut feat, mut rank, mut act, mut seq, mut pos, mut tok, mut ctx) = (
        Vec::new(),
        Vec::new(),
        Vec::new(),
        Vec::new(),
        Vec::new(),
        Vec::new(),
        Vec::new(),
    );
    for f in 0..ex.n_features() {
        for (r, e) in ex.ranked(f).iter().enumerate() {
            feat.push(f as u32);
            rank.push(r as u32);
            act.push(e.act);
            seq.push(e.seq_id);
            pos.push(e.pos);
            tok.push(e.token.clone());
            ctx.push(e.context());
        }
    }
    let mut t = TableBuilder::new(stream, Scope::AllTime, 0, end, time, feat.len());
    t.u32("feature", feat)
        .u32("rank", rank)
        .f32("act", act)
        .u64("seq_id", seq)
        .u32("pos", pos)
        .opt_str("token", tok)
        .opt_str("context", ctx);
    t.finish()
}

fn evaluate(
    s: &Settings,
    w: &Accum,
    density: &[f64],
    dead_fraction: f64,
    previous: Option<&WindowMemory>,
    first: Option<&[f64]>,
) -> Vec<Alert> {
    let mut alerts = Vec::new();
    for (rule, file_ref) in s.rules.iter().zip(&s.references) {
        match rule {
            FeatureRule::DensityRatio {
                name,
                above,
                below,
                reference,
                features,
                min_count,
            } => {
                let expected: Option<&[f64]> = match reference {
                    Reference::PreviousWindow => previous.map(|p| p.density.as_slice()),
                    Reference::FirstWindow => first,
                    Reference::File(_) | Reference::Sparsity(_) => file_ref.as_deref(),
                };
                let Some(expected) = expected else { continue };
                let name = name.clone().unwrap_or_else(|| "density_ratio".into());
                let all: Vec<u32>;
                let watched = match features {
                    Some(f) => f.as_slice(),
                    None => {
                        all = (0..s.n_features as u32).collect();
                        &all
                    }
                };
                let tokens = w.tokens as f64;
                for &f in watched {
                    let (obs, exp) = (density[f as usize], expected[f as usize]);
                    if (obs * tokens).max(exp * tokens) < *min_count {
                        continue;
                    }
                    let mut fire = |bound: f64, word: &str| {
                        alerts.push(Alert {
                            rule: name.clone(),
                            kind: "density_ratio",
                            feature: Some(f),
                            observed: obs,
                            expected: exp,
                            threshold: bound,
                            message: format!(
                                "feature {f} fired on {:.3e} of tokens, {word} {bound} x its reference {:.3e}",
                                obs, exp
                            ),
                        })
                    };
                    if let Some(a) = above {
                        if obs > a * exp {
                            fire(*a, "above");
                        }
                    }
                    if let Some(b) = below {
                        if obs < b * exp {
                            fire(*b, "below");
                        }
                    }
                }
            }
            FeatureRule::DeadFractionJump { name, above } => {
                let Some(prev) = previous else { continue };
                if dead_fraction - prev.dead_fraction > *above {
                    alerts.push(Alert {
                        rule: name.clone().unwrap_or_else(|| "dead_fraction_jump".into()),
                        kind: "dead_fraction_jump",
                        feature: None,
                        observed: dead_fraction,
                        expected: prev.dead_fraction,
                        threshold: *above,
                        message: format!(
                            "dead features rose from {:.2}% to {:.2}% (more than {:.2} points)",
                            prev.dead_fraction * 100.0,
                            dead_fraction * 100.0,
                            above * 100.0
                        ),
                    });
                }
            }
            FeatureRule::FeatureFires {
                name,
                features,
                min_count,
            } => {
                for &f in features {
                    let c = w.count[f as usize];
                    if c >= *min_count {
                        alerts.push(Alert {
                            rule: name.clone().unwrap_or_else(|| "feature_fires".into()),
                            kind: "feature_fires",
                            feature: Some(f),
                            observed: c as f64,
                            expected: 0.0,
                            threshold: *min_count as f64,
                            message: format!("feature {f} fired {c} times in the window"),
                        });
                    }
                }
            }
        }
    }
    alerts
}
