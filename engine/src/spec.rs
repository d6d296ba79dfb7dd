//! Pipeline specifications: the TOML file format, the Rust builder, and validation into a
//! [`CompiledPipeline`] ready to run.
//!
//! ```toml
//! [pipeline]
//! name = "demo"
//! device = "auto"
//!
//! [sources.eeg]
//! kind = "synthetic_eeg"
//! channels = 8
//!
//! [operators.norm]
//! kind = "normalize"
//! input = "eeg"
//! method = "running_zscore"
//!
//! [sinks.out]
//! kind = "parquet"
//! input = "norm"
//! path = "out/norm.parquet"
//! ```

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::device::DeviceChoice;
use crate::error::{EngineError, Result};
use crate::node::{NodeContext, Operator, Registry, Sink, Source};
use crate::schema::Schema;
pub use crate::settings::{GpuFallback, OnInvalid, Overload, PipelineSettings};

/// Which section a node is declared in.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Section {
    /// `[sources.NAME]`
    Source,
    /// `[operators.NAME]`
    Operator,
    /// `[sinks.NAME]`
    Sink,
}

impl Section {
    /// The section's table name: `sources`, `operators` or `sinks` (the first part of a node's
    /// label, as in `operators.band`).
    pub fn table(self) -> &'static str {
        match self {
            Section::Source => "sources",
            Section::Operator => "operators",
            Section::Sink => "sinks",
        }
    }
}

/// One node of a pipeline as written: its section, name, kind, input and kind-specific keys.
#[derive(Clone, Debug, PartialEq)]
pub struct NodeSpec {
    /// Section the node is declared in.
    pub section: Section,
    /// Unique name; operators and sinks name their input by it.
    pub name: String,
    /// The `kind` key.
    pub kind: Option<String>,
    /// The `input` key (operators and sinks).
    pub input: Option<String>,
    /// Per-operator (or computing sink's) `device` override.
    pub device: Option<DeviceChoice>,
    /// Per-source `on_invalid` override.
    pub on_invalid: Option<OnInvalid>,
    /// Per-source overload policy (`overload`, `overload_buffer_rows` keys).
    pub overload: Overload,
    /// The remaining, kind-specific keys.
    pub config: toml::Table,
    /// Where the node's header is in the file, when parsed from text.
    pub position: Option<Position>,
    /// Where each key is in the file, when parsed from text.
    pub key_positions: BTreeMap<String, Position>,
}

/// A place in pipeline text: 1-based line and column (in characters).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Position {
    /// Line, counted from 1.
    pub line: usize,
    /// Column, counted from 1, in characters.
    pub col: usize,
}

impl Position {
    /// The position of byte `offset` of `text`.
    pub fn of(text: &str, offset: usize) -> Position {
        let offset = floor_char_boundary(text, offset);
        let line_start = text[..offset].rfind('\n').map_or(0, |i| i + 1);
        Position {
            line: text[..offset].bytes().filter(|&b| b == b'\n').count() + 1,
            col: text[line_start..offset].chars().count() + 1,
        }
    }

    /// The position of `key` written on the line of byte `value_offset` (its value), before
    /// the value; the value's own position when the key is not found there (dotted keys).
    fn of_key(text: &str, key: &str, value_offset: usize) -> Position {
        let offset = floor_char_boundary(text, value_offset);
        let line_start = text[..offset].rfind('\n').map_or(0, |i| i + 1);
        match text[line_start..offset].rfind(key) {
            Some(i) => Position::of(text, line_start + i),
            None => Position::of(text, offset),
        }
    }
}

fn floor_char_boundary(text: &str, offset: usize) -> usize {
    let mut offset = offset.min(text.len());
    while !text.is_char_boundary(offset) {
        offset -= 1;
    }
    offset
}

/// One problem of a pipeline: where it is, which node it concerns, and what is wrong.
#[derive(Clone, Debug, PartialEq)]
pub struct Problem {
    /// Where in the text, when known.
    pub position: Option<Position>,
    /// The node or section it concerns (`[operators.f]`, `[pipeline]`), if any.
    pub label: Option<String>,
    /// What is wrong.
    pub message: String,
}

impl Problem {
    /// The one location format of every problem: `FILE:LINE:COL: [node] message`
    /// (`line LINE:COL:` for text without a file; no location for built pipelines).
    pub fn render(&self, origin: Option<&str>) -> String {
        let at = match (origin, self.position) {
            (Some(o), Some(p)) => format!("{o}:{}:{}: ", p.line, p.col),
            (Some(o), None) => format!("{o}: "),
            (None, Some(p)) => format!("line {}:{}: ", p.line, p.col),
            (None, None) => String::new(),
        };
        match &self.label {
            Some(l) => format!("{at}{l} {}", self.message),
            None => format!("{at}{}", self.message),
        }
    }
}

/// The position of the first backquoted name in `message` that is one of `keys`.
fn position_of_named_key(message: &str, keys: &BTreeMap<String, Position>) -> Option<Position> {
    message.split('`').skip(1).step_by(2).find_map(|k| keys.get(k).copied())
}

impl NodeSpec {
    /// `operators.norm`: unique across the pipeline, used in reports and logs.
    pub fn qualified_name(&self) -> String {
        format!("{}.{}", self.section.table(), self.name)
    }

    /// `[operators.norm]`
    pub fn label(&self) -> String {
        format!("[{}.{}]", self.section.table(), self.name)
    }
}

/// A whole pipeline as written, before validation.
#[derive(Clone, Debug, PartialEq)]
pub struct PipelineSpec {
    /// The `[pipeline]` settings.
    pub settings: PipelineSettings,
    /// Every node, in declaration order within each section.
    pub nodes: Vec<NodeSpec>,
    /// Directory that relative paths are resolved against.
    pub base_dir: PathBuf,
    /// The file it came from, for messages.
    pub origin: Option<PathBuf>,
    /// Problems found while parsing (reported together with validation problems).
    pub parse_problems: Vec<Problem>,
}

/// Where top-level `key` first appears (`[key]`, `[key.x]`, `[[key...`, `key = ...`).
fn top_level_position(text: &str, key: &str) -> Option<Position> {
    let mut offset = 0;
    for l in text.split_inclusive('\n') {
        let t = l.trim_start();
        let rest = t.trim_start_matches('[').trim_start();
        if (t.starts_with('[') && (rest.starts_with(&format!("{key}.")) || rest.starts_with(&format!("{key}]"))))
            || (t.starts_with(key) && t[key.len()..].trim_start().starts_with('='))
        {
            return Some(Position::of(text, offset + l.len() - t.len()));
        }
        offset += l.len();
    }
    None
}

type SpannedTable = BTreeMap<String, toml::Spanned<toml::Value>>;

#[derive(Deserialize)]
struct RawFile {
    pipeline: Option<toml::Spanned<SpannedTable>>,
    #[serde(default)]
    sources: BTreeMap<String, toml::Spanned<SpannedTable>>,
    #[serde(default)]
    operators: BTreeMap<String, toml::Spanned<SpannedTable>>,
    #[serde(default)]
    sinks: BTreeMap<String, toml::Spanned<SpannedTable>>,
}

/// A table's keys and values, and where each key is written.
fn unspan(text: &str, table: SpannedTable) -> (toml::Table, BTreeMap<String, Position>) {
    let mut values = toml::Table::new();
    let mut positions = BTreeMap::new();
    for (key, value) in table {
        positions.insert(key.clone(), Position::of_key(text, &key, value.span().start));
        values.insert(key, value.into_inner());
    }
    (values, positions)
}

impl PipelineSpec {
    /// An empty spec with default settings, resolving relative paths against `base_dir`.
    pub fn new(base_dir: impl Into<PathBuf>) -> PipelineSpec {
        PipelineSpec {
            settings: PipelineSettings::default(),
            nodes: Vec::new(),
            base_dir: base_dir.into(),
            origin: None,
            parse_problems: Vec::new(),
        }
    }

    /// Reads and parses a pipeline file. Syntax errors fail here; everything else is
    /// collected and reported by [`PipelineSpec::compile`].
    pub fn from_file(path: &Path) -> Result<PipelineSpec> {
        let text =
            std::fs::read_to_string(path).map_err(|e| EngineError::io(format!("reading pipeline file {}", path.display()), e))?;
        let base = path.parent().map(Path::to_path_buf).unwrap_or_default();
        PipelineSpec::parse(&text, base, Some(path))
    }

    /// Parses pipeline TOML text; relative paths resolve against `base_dir`.
    pub fn from_toml_str(text: &str, base_dir: impl Into<PathBuf>) -> Result<PipelineSpec> {
        PipelineSpec::parse(text, base_dir.into(), None)
    }

    /// Parses pipeline text that came from `origin` (named in messages), if from a file.
    fn parse(text: &str, base_dir: PathBuf, origin: Option<&Path>) -> Result<PipelineSpec> {
        let mut spec = PipelineSpec::new(base_dir);
        spec.origin = origin.map(Path::to_path_buf);
        let origin = origin.map(|p| p.display().to_string());
        let syntax = |e: toml::de::Error| Problem {
            position: e.span().map(|s| Position::of(text, s.start)),
            label: None,
            message: e.message().to_string(),
        };
        let whole: toml::Table =
            toml::from_str(text).map_err(|e| EngineError::Invalid(vec![syntax(e).render(origin.as_deref())]))?;
        let sections = ["pipeline", "sources", "operators", "sinks"];
        for (key, value) in &whole {
            if !sections.contains(&key.as_str()) {
                spec.parse_problems.push(Problem {
                    position: top_level_position(text, key),
                    label: None,
                    message: format!(
                        "unknown top-level key `{key}`{} (expected [pipeline], [sources.*], [operators.*], [sinks.*])",
                        crate::suggest::hint(key, sections)
                    ),
                });
            } else if !value.is_table() {
                spec.parse_problems.push(Problem {
                    position: top_level_position(text, key),
                    label: None,
                    message: format!("`{key}` must be a table"),
                });
            }
        }
        let raw: RawFile = match toml::from_str(text) {
            Ok(r) => r,
            Err(e) => {
                spec.parse_problems.push(syntax(e));
                return Ok(spec);
            }
        };
        if let Some(p) = raw.pipeline {
            let header = Position::of(text, p.span().start);
            let (table, positions) = unspan(text, p.into_inner());
            match toml::Value::Table(table.clone()).try_into::<PipelineSettings>() {
                Ok(s) => spec.settings = s,
                Err(e) => {
                    let messages = match crate::node::unknown_keys_of(&table, e.message()) {
                        Some(list) => list,
                        None => vec![e.message().to_string()],
                    };
                    for message in messages {
                        spec.parse_problems.push(Problem {
                            position: position_of_named_key(&message, &positions).or(Some(header)),
                            label: Some("[pipeline]".into()),
                            message,
                        });
                    }
                }
            }
        }
        let sections = [
            (Section::Source, raw.sources),
            (Section::Operator, raw.operators),
            (Section::Sink, raw.sinks),
        ];
        for (section, nodes) in sections {
            let mut list: Vec<NodeSpec> = Vec::new();
            for (name, table) in nodes {
                let position = Position::of(text, table.span().start);
                let (config, key_positions) = unspan(text, table.into_inner());
                let mut node = NodeSpec {
                    section,
                    name,
                    kind: None,
                    input: None,
                    device: None,
                    on_invalid: None,
                    overload: Overload::Block,
                    config,
                    position: Some(position),
                    key_positions,
                };
                for message in node.take_common_keys() {
                    spec.parse_problems.push(Problem {
                        position: position_of_named_key(&message, &node.key_positions).or(Some(position)),
                        label: Some(node.label()),
                        message,
                    });
                }
                list.push(node);
            }
            list.sort_by_key(|n| n.position);
            spec.nodes.extend(list);
        }
        Ok(spec)
    }

    /// Checks the whole pipeline against `registry` and builds every node.
    /// Every problem found is reported at once, each with its location.
    pub fn compile(&self, registry: &Registry) -> Result<CompiledPipeline> {
        let origin = self.origin.as_ref().map(|p| p.display().to_string());
        // A problem of `node`, at `key` when that key is written, else at its header.
        let at = |node: &NodeSpec, key: Option<&str>, message: String| Problem {
            position: key.and_then(|k| node.key_positions.get(k).copied()).or(node.position),
            label: Some(node.label()),
            message,
        };
        let mut problems: Vec<Problem> = self.parse_problems.clone();

        // Sources and operators share one namespace, since inputs refer to them; sinks, which
        // nothing can read from, have their own (a sink may share its input's name).
        let mut by_name: HashMap<&str, &NodeSpec> = HashMap::new();
        for node in self.nodes.iter().filter(|n| n.section != Section::Sink) {
            if let Some(prev) = by_name.get(node.name.as_str()) {
                problems.push(at(
                    node,
                    None,
                    format!("name `{}` is already used by {}", node.name, prev.label()),
                ));
            } else {
                by_name.insert(node.name.as_str(), node);
            }
        }
        let (src_kinds, op_kinds, sink_kinds) = registry.kinds();
        for node in &self.nodes {
            let known = match node.section {
                Section::Source => &src_kinds,
                Section::Operator => &op_kinds,
                Section::Sink => &sink_kinds,
            };
            match &node.kind {
                None => problems.push(at(node, None, "missing key `kind`".into())),
                Some(k) if !known.contains(&k.as_str()) => problems.push(at(
                    node,
                    Some("kind"),
                    match registry.left_out(k) {
                        Some(feature) => {
                            format!("kind `{k}` is left out of this build; build with the cargo feature `{feature}`")
                        }
                        None => format!(
                            "unknown {} kind `{k}`{} (known: {})",
                            match node.section {
                                Section::Source => "source",
                                Section::Operator => "operator",
                                Section::Sink => "sink",
                            },
                            crate::suggest::hint(k, known.iter().copied()),
                            known.join(", ")
                        ),
                    },
                )),
                _ => {}
            }
            if node.section != Section::Source {
                match &node.input {
                    None => problems.push(at(node, None, "missing key `input`".into())),
                    Some(i) if !by_name.contains_key(i.as_str()) => problems.push(at(
                        node,
                        Some("input"),
                        format!(
                            "input `{i}` is not a source or operator of this pipeline (sinks produce no stream){}",
                            crate::suggest::hint(i, by_name.keys().copied())
                        ),
                    )),
                    Some(_) => {}
                }
            }
        }
        if !self.nodes.iter().any(|n| n.section == Section::Sink) {
            problems.push(Problem {
                position: None,
                label: None,
                message: "pipeline has no sinks: add a [sinks.NAME] table so results land somewhere".into(),
            });
        }

        // Topological order over operators; what is left over either sits on a cycle or
        // downstream of an input that does not resolve (reported above).
        let mut order: Vec<&NodeSpec> = self.nodes.iter().filter(|n| n.section == Section::Source).collect();
        let mut placed: std::collections::HashSet<&str> = order.iter().map(|n| n.name.as_str()).collect();
        let mut pending: Vec<&NodeSpec> = self.nodes.iter().filter(|n| n.section == Section::Operator).collect();
        loop {
            let before = pending.len();
            pending.retain(|n| match &n.input {
                Some(i) if placed.contains(i.as_str()) => {
                    placed.insert(n.name.as_str());
                    order.push(n);
                    false
                }
                _ => true,
            });
            if pending.len() == before {
                break;
            }
        }
        for cycle in cycles(&pending) {
            problems.push(at(
                cycle[0],
                Some("input"),
                format!(
                    "cycle among operators: {} (a pipeline must be acyclic)",
                    cycle.iter().map(|n| n.label()).collect::<Vec<_>>().join(" -> ")
                ),
            ));
        }
        // Unplaced operators are still checked for their keys, against no input.
        order.extend(pending.iter().copied());
        order.extend(self.nodes.iter().filter(|n| n.section == Section::Sink));

        // Build every node whose upstream built, checking shapes on the way.
        let mut schemas: HashMap<&str, Arc<Schema>> = HashMap::new();
        let mut compiled = CompiledPipeline {
            settings: self.settings.clone(),
            nodes: Vec::new(),
        };
        for node in order {
            let label = node.label();
            let ctx = NodeContext {
                label: &label,
                name: &node.name,
                base_dir: &self.base_dir,
                settings: &self.settings,
                loaded: Default::default(),
            };
            let Some(kind) = node.kind.as_deref() else {
                continue;
            };
            let report_one = |msg: String, problems: &mut Vec<Problem>| {
                let msg = msg.strip_prefix(&format!("{label}: ")).unwrap_or(&msg).to_string();
                problems.push(Problem {
                    position: position_of_named_key(&msg, &node.key_positions).or(node.position),
                    label: Some(label.clone()),
                    message: msg,
                });
            };
            // A node may report several problems at once (every unknown key, say).
            let report = |e: EngineError, problems: &mut Vec<Problem>| match e {
                EngineError::Invalid(list) => list.into_iter().for_each(|m| report_one(m, problems)),
                e => report_one(e.to_string(), problems),
            };
            let input_schema = node.input.as_deref().and_then(|i| schemas.get(i).cloned());
            let built = match node.section {
                Section::Source => registry.source(kind).map(|k| {
                    k.build_source(node.config.clone(), &ctx).map(|s| {
                        schemas.insert(&node.name, s.schema());
                        Built::Source(s)
                    })
                }),
                Section::Operator => match &input_schema {
                    None => None,
                    Some(schema) => registry.operator(kind).map(|k| {
                        k.build_operator(node.config.clone(), &ctx, schema).map(|op| {
                            schemas.insert(&node.name, op.output_schema());
                            Built::Operator(op)
                        })
                    }),
                },
                Section::Sink => match &input_schema {
                    None => None,
                    Some(schema) => registry
                        .sink(kind)
                        .map(|k| k.build_sink(node.config.clone(), &ctx, schema).map(Built::Sink)),
                },
            };
            if input_schema.is_none() && node.section != Section::Source {
                // Its input failed to build, so its shapes cannot be checked; its keys still can.
                let kind_entry = match node.section {
                    Section::Operator => registry.operator(kind),
                    _ => registry.sink(kind),
                };
                if let Some(Err(e)) = kind_entry.map(|k| k.check_keys(node.config.clone(), &ctx)) {
                    report(e, &mut problems);
                }
            }
            let misplaced_device = match &built {
                Some(Ok(Built::Operator(op))) if !op.computes() => {
                    Some("`device` applies to operators with device kernels; this one keeps its bookkeeping on the host")
                }
                Some(Ok(Built::Sink(sink))) if !sink.computes() => {
                    Some("`device` applies to operators and to sinks that compute (sae_train), not to this sink")
                }
                _ => None,
            };
            if let (Some(message), Some(_)) = (misplaced_device, node.device) {
                report_one(message.to_string(), &mut problems);
            }
            match built {
                Some(Ok(b)) => compiled.nodes.push(CompiledNode {
                    spec: node.clone(),
                    built: b,
                    loaded: ctx.loaded.take(),
                }),
                Some(Err(e)) => report(e, &mut problems),
                None => {}
            }
        }
        if problems.is_empty() {
            Ok(compiled)
        } else {
            // In the order of the file; problems without a place last.
            problems.sort_by_key(|p| (p.position.is_none(), p.position));
            Err(EngineError::Invalid(
                problems.iter().map(|p| p.render(origin.as_deref())).collect(),
            ))
        }
    }
}

/// The cycles among `pending` operators (those that could not be ordered), each listed once
/// from its first-declared member, following inputs.
fn cycles<'a>(pending: &[&'a NodeSpec]) -> Vec<Vec<&'a NodeSpec>> {
    let by_name: HashMap<&str, &NodeSpec> = pending.iter().map(|n| (n.name.as_str(), *n)).collect();
    let mut seen: std::collections::HashSet<&str> = Default::default();
    let mut found = Vec::new();
    for start in pending {
        let mut path: Vec<&NodeSpec> = Vec::new();
        let mut current = Some(*start);
        while let Some(n) = current {
            if seen.contains(n.name.as_str()) {
                if let Some(i) = path.iter().position(|p| p.name == n.name) {
                    let mut cycle = path[i..].to_vec();
                    let first = (0..cycle.len()).min_by_key(|&k| cycle[k].position).unwrap_or(0);
                    cycle.rotate_left(first);
                    found.push(cycle);
                }
                break;
            }
            seen.insert(n.name.as_str());
            path.push(n);
            current = n.input.as_deref().and_then(|i| by_name.get(i).copied());
        }
    }
    found
}

impl NodeSpec {
    /// Moves the keys every node shares (`kind`, `input`, `device`, `on_invalid`) out of `config`.
    fn take_common_keys(&mut self) -> Vec<String> {
        let mut problems = Vec::new();
        let mut take_str = |key: &str, problems: &mut Vec<String>| -> Option<String> {
            match self.config.remove(key) {
                None => None,
                Some(toml::Value::String(s)) => Some(s),
                Some(other) => {
                    problems.push(format!("`{key}` must be a string, found {}", other.type_str()));
                    None
                }
            }
        };
        self.kind = take_str("kind", &mut problems);
        if self.section != Section::Source {
            self.input = take_str("input", &mut problems);
        }
        if matches!(self.section, Section::Operator | Section::Sink) {
            if let Some(d) = take_str("device", &mut problems) {
                match d.parse() {
                    Ok(d) => self.device = Some(d),
                    Err(e) => problems.push(format!("`device`: {e}")),
                }
            }
        }
        if self.section == Section::Source {
            if let Some(v) = take_str("on_invalid", &mut problems) {
                match v.as_str() {
                    "error" => self.on_invalid = Some(OnInvalid::Error),
                    "drop" => self.on_invalid = Some(OnInvalid::Drop),
                    _ => problems.push(format!("`on_invalid` must be \"error\" or \"drop\", found \"{v}\"")),
                }
            }
            let overload = take_str("overload", &mut problems);
            let buffer = match self.config.remove("overload_buffer_rows") {
                None => None,
                Some(toml::Value::Integer(n)) if n > 0 => Some(n as u64),
                Some(other) => {
                    problems.push(format!("`overload_buffer_rows` must be a positive integer, found {other}"));
                    None
                }
            };
            match overload.as_deref() {
                None | Some("block") => {
                    if buffer.is_some() {
                        problems.push("`overload_buffer_rows` applies to overload = \"drop_oldest\"".into());
                    }
                }
                Some("drop_oldest") => self.overload = Overload::DropOldest(buffer.unwrap_or(65536)),
                Some("drop_newest") => {
                    if buffer.is_some() {
                        problems.push("`overload_buffer_rows` applies to overload = \"drop_oldest\"".into());
                    }
                    self.overload = Overload::DropNewest
                }
                Some(v) => problems.push(format!(
                    "`overload` must be \"block\", \"drop_oldest\" or \"drop_newest\", found \"{v}\""
                )),
            }
        }
        problems
    }
}

/// A built node: the kind's object ready to instantiate per worker.
#[derive(Clone)]
pub enum Built {
    /// A source.
    Source(Arc<dyn Source>),
    /// An operator.
    Operator(Arc<dyn Operator>),
    /// A sink.
    Sink(Arc<dyn Sink>),
}

/// A node after validation.
#[derive(Clone)]
pub struct CompiledNode {
    /// As written.
    pub spec: NodeSpec,
    /// As built.
    pub built: Built,
    /// Files and directories it read while building (weights, statistics, models), which a
    /// checkpoint fingerprints besides the sources' input files.
    pub loaded: Vec<std::path::PathBuf>,
}

/// A validated pipeline, nodes in topological order (sources, operators, sinks).
#[derive(Clone)]
pub struct CompiledPipeline {
    /// The `[pipeline]` settings.
    pub settings: PipelineSettings,
    /// Nodes in an order where every input precedes its consumers.
    pub nodes: Vec<CompiledNode>,
}

impl CompiledPipeline {
    /// Sum of the sources' known row counts, for progress bars.
    pub fn total_source_rows(&self) -> Option<u64> {
        let mut total = 0;
        for n in &self.nodes {
            if let Built::Source(s) = &n.built {
                total += s.total_rows()?;
            }
        }
        Some(total)
    }

    /// The source whose data the stream `name` (a source or an operator) carries: its input
    /// chain followed back to a source.
    pub fn root_of<'a>(&'a self, name: &'a str) -> &'a str {
        let mut current = name;
        for _ in 0..=self.nodes.len() {
            match self
                .nodes
                .iter()
                .find(|n| n.spec.section != Section::Sink && n.spec.name == current)
            {
                Some(n) if n.spec.section == Section::Source => return &n.spec.name,
                Some(n) => current = n.spec.input.as_deref().unwrap_or(current),
                None => break,
            }
        }
        current
    }

    /// One line per node: `[operators.norm] normalize <- eeg (signal, 8 channels at 256 Hz)`.
    pub fn describe(&self) -> Vec<String> {
        let mut schemas: HashMap<&str, Arc<Schema>> = HashMap::new();
        let mut lines = Vec::new();
        for n in &self.nodes {
            let kind = n.spec.kind.as_deref().unwrap_or("?");
            let schema = match &n.built {
                Built::Source(s) => Some(s.schema()),
                Built::Operator(o) => Some(o.output_schema()),
                Built::Sink(_) => None,
            };
            let input = n.spec.input.as_deref().map(|i| format!(" <- {i}")).unwrap_or_default();
            let out = schema.as_ref().map(|s| format!(" ({})", s.describe())).unwrap_or_default();
            lines.push(format!("{} {kind}{input}{out}", n.spec.label()));
            if let Some(s) = schema {
                schemas.insert(&n.spec.name, s);
            }
        }
        lines
    }
}

/// A typed node configuration usable with [`PipelineBuilder`]: a serializable config whose
/// TOML form is exactly the node's kind-specific keys.
pub trait NodeConfig: Serialize + serde::de::DeserializeOwned + schemars::JsonSchema {
    /// The kind name this config builds.
    const KIND: &'static str;
}

/// Builds the same pipelines as TOML files, in code.
///
/// ```ignore
/// let spec = PipelineBuilder::new(".")
///     .source("eeg", &SyntheticEegConfig { channels: 8, ..Default::default() })?
///     .operator("norm", "eeg", &NormalizeConfig::running_zscore(256))?
///     .sink("out", "norm", &ParquetSinkConfig::new("out/norm.parquet"))?
///     .build();
/// ```
pub struct PipelineBuilder {
    spec: PipelineSpec,
}

impl PipelineBuilder {
    /// A builder resolving relative paths against `base_dir`.
    pub fn new(base_dir: impl Into<PathBuf>) -> PipelineBuilder {
        PipelineBuilder {
            spec: PipelineSpec::new(base_dir),
        }
    }

    /// Replaces the `[pipeline]` settings.
    pub fn settings(mut self, settings: PipelineSettings) -> Self {
        self.spec.settings = settings;
        self
    }

    fn node<C: NodeConfig>(mut self, section: Section, name: &str, input: Option<&str>, config: &C) -> Result<Self> {
        let value = toml::Value::try_from(config)
            .map_err(|e| EngineError::config(format!("[{}.{name}]", section.table()), e.to_string()))?;
        let toml::Value::Table(mut table) = value else {
            return Err(EngineError::config(name, "config must serialize to a table"));
        };
        let device = match table.remove("device") {
            Some(toml::Value::String(s)) => Some(s.parse().map_err(|e: String| EngineError::config(name, e))?),
            _ => None,
        };
        self.spec.nodes.push(NodeSpec {
            section,
            name: name.to_string(),
            kind: Some(C::KIND.to_string()),
            input: input.map(str::to_string),
            device,
            on_invalid: None,
            overload: Overload::Block,
            config: table,
            position: None,
            key_positions: BTreeMap::new(),
        });
        Ok(self)
    }

    /// Adds a source named `name`.
    pub fn source<C: NodeConfig>(self, name: &str, config: &C) -> Result<Self> {
        self.node(Section::Source, name, None, config)
    }

    /// Adds an operator named `name` reading `input`.
    pub fn operator<C: NodeConfig>(self, name: &str, input: &str, config: &C) -> Result<Self> {
        self.node(Section::Operator, name, Some(input), config)
    }

    /// Adds an operator computing on `device` rather than the pipeline's device.
    pub fn operator_on<C: NodeConfig>(self, name: &str, input: &str, device: DeviceChoice, config: &C) -> Result<Self> {
        let mut b = self.node(Section::Operator, name, Some(input), config)?;
        b.spec.nodes.last_mut().unwrap().device = Some(device);
        Ok(b)
    }

    /// Adds a sink named `name` writing `input`.
    pub fn sink<C: NodeConfig>(self, name: &str, input: &str, config: &C) -> Result<Self> {
        self.node(Section::Sink, name, Some(input), config)
    }

    /// The finished spec; call [`PipelineSpec::compile`] to validate it.
    pub fn build(self) -> PipelineSpec {
        self.spec
    }
}
