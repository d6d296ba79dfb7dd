//! `console`: reports a summary of each stream it receives when the run ends: rows, time span,
//! and per channel the mean, standard deviation, minimum and maximum (float64 accumulation).
//! A stream that ends during the run (an unnamed live client that disconnected) has its summary
//! printed to stdout then and is forgotten, so a service with clients coming and going keeps no
//! summary per past client; the run report counts them. Rows of result tables named in
//! `print_tables` (default: `alerts`) are printed to stdout as they arrive, one line per row
//! (`table stream: column=value ...`).

use std::collections::BTreeMap;
use std::sync::Arc;

use neurostream_engine::{
    Batch, NodeConfig, NodeContext, Placement, Result, RowIndex, Schema, Sink, SinkKind, SinkWriter, WorkerPos,
};
use serde::{Deserialize, Serialize};

/// Configuration of a `console` sink. Its summary lines appear in
/// [`RunReport::sink_lines`](neurostream_engine::RunReport), which the CLI prints to stdout.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct ConsoleSinkConfig {
    /// Channels listed per stream (the rest are summarized in one line).
    pub max_channels: usize,
    /// Result tables whose rows are printed live, as they arrive.
    pub print_tables: Vec<String>,
}

impl Default for ConsoleSinkConfig {
    fn default() -> Self {
        ConsoleSinkConfig {
            max_channels: 8,
            print_tables: vec!["alerts".into()],
        }
    }
}

impl NodeConfig for ConsoleSinkConfig {
    const KIND: &'static str = "console";
}

/// The `console` sink kind.
pub struct ConsoleSinkKind;

impl SinkKind for ConsoleSinkKind {
    type Config = ConsoleSinkConfig;

    fn describe(&self) -> &'static str {
        "per-stream, per-channel summary in the run report; rows of chosen result tables (alerts) printed live"
    }
    fn build(&self, cfg: ConsoleSinkConfig, _ctx: &NodeContext, input: &Arc<Schema>) -> Result<Arc<dyn Sink>> {
        Ok(Arc::new(ConsoleSink {
            cfg,
            schema: input.clone(),
        }))
    }
}

struct ConsoleSink {
    cfg: ConsoleSinkConfig,
    schema: Arc<Schema>,
}

impl Sink for ConsoleSink {
    fn placement(&self) -> Placement {
        Placement::Single
    }
    fn open(&self, _worker: WorkerPos) -> Result<Box<dyn SinkWriter>> {
        Ok(Box::new(ConsoleWriter {
            cfg: self.cfg.clone(),
            schema: self.schema.clone(),
            streams: BTreeMap::new(),
            tables: BTreeMap::new(),
            ended: 0,
        }))
    }
}

#[derive(Default)]
struct Summary {
    rows: u64,
    first: Option<String>,
    last: Option<String>,
    mean: Vec<f64>,
    m2: Vec<f64>,
    min: Vec<f64>,
    max: Vec<f64>,
    nnz: u64,
}

struct ConsoleWriter {
    cfg: ConsoleSinkConfig,
    schema: Arc<Schema>,
    streams: BTreeMap<String, Summary>,
    /// Rows received per (stream, table).
    tables: BTreeMap<(String, String), u64>,
    /// Streams that ended during the run (summarized when they ended).
    ended: u64,
}

impl ConsoleWriter {
    /// The summary of `stream`: a line with its rows and span, then one per channel.
    fn summary_lines(&self, stream: &str, s: &Summary, failure: Option<&str>) -> Vec<String> {
        let mut lines = vec![format!(
            "stream {stream}: {} rows ({}), {} .. {}{}",
            s.rows,
            self.schema.describe(),
            s.first.as_deref().unwrap_or("-"),
            s.last.as_deref().unwrap_or("-"),
            if failure.is_some() { " [run failed]" } else { "" }
        )];
        if s.nnz > 0 {
            lines.push(format!("  mean L0 {:.2}", s.nnz as f64 / s.rows.max(1) as f64));
        }
        let shown = s.mean.len().min(self.cfg.max_channels);
        for c in 0..shown {
            let std = (s.m2[c] / s.rows.max(1) as f64).sqrt();
            lines.push(format!(
                "  {:>10}  mean {:>11.4}  std {:>10.4}  min {:>11.4}  max {:>11.4}",
                self.schema.channels.get(c).map(|c| c.name.as_str()).unwrap_or("?"),
                s.mean[c],
                std,
                s.min[c],
                s.max[c]
            ));
        }
        if s.mean.len() > shown {
            lines.push(format!("  ... {} more channels", s.mean.len() - shown));
        }
        lines
    }

    /// The table counts of `stream`, taken out of `tables` (its keys are adjacent: the map is
    /// ordered by stream first).
    fn table_count_lines(&mut self, stream: &str) -> Vec<String> {
        let keys: Vec<(String, String)> = self
            .tables
            .range((stream.to_string(), String::new())..)
            .take_while(|((s, _), _)| s == stream)
            .map(|(key, _)| key.clone())
            .collect();
        keys.into_iter()
            .map(|key| {
                let rows = self.tables.remove(&key).unwrap_or_default();
                table_count_line(stream, &key.1, rows)
            })
            .collect()
    }
}

/// The run report's line for the rows of result table `table` a stream sent.
fn table_count_line(stream: &str, table: &str, rows: u64) -> String {
    format!("stream {stream}: table {table}, {rows} rows")
}

/// One line per row: `table stream: col=value col=value ...`.
fn table_lines(t: &neurostream_engine::TableFrame) -> Vec<String> {
    use arrow::util::display::{ArrayFormatter, FormatOptions};
    let opts = FormatOptions::default().with_null("null");
    let schema = t.data.schema();
    let formatters: Vec<_> = t
        .data
        .columns()
        .iter()
        .map(|c| ArrayFormatter::try_new(c.as_ref(), &opts))
        .collect::<std::result::Result<_, _>>()
        .unwrap_or_default();
    (0..t.rows())
        .map(|r| {
            let cols: Vec<String> = formatters
                .iter()
                .zip(schema.fields())
                .map(|(f, field)| format!("{}={}", field.name(), f.value(r)))
                .collect();
            format!("{} {}: {}", t.table, t.stream, cols.join(" "))
        })
        .collect()
}

impl SinkWriter for ConsoleWriter {
    fn write(&mut self, batch: &Batch) -> Result<()> {
        if batch.is_end() {
            return Ok(());
        }
        if let Batch::Table(t) = batch {
            *self.tables.entry((t.stream.to_string(), t.table.to_string())).or_default() += t.rows() as u64;
            if self.cfg.print_tables.iter().any(|p| **p == *t.table) {
                for line in table_lines(t) {
                    println!("{line}");
                }
            }
            return Ok(());
        }
        let s = self.streams.entry(batch.stream().to_string()).or_default();
        let index: &RowIndex = match batch {
            Batch::Dense(f) => &f.index,
            Batch::Sparse(f) => &f.index,
            Batch::Table(_) | Batch::End(_) => unreachable!("handled above"),
        };
        if index.is_empty() {
            return Ok(());
        }
        if s.first.is_none() {
            s.first = Some(index.describe_row(0));
        }
        s.last = Some(index.describe_row(index.len() - 1));
        match batch {
            Batch::Dense(f) => {
                let w = f.width();
                if s.mean.is_empty() {
                    s.mean = vec![0.0; w];
                    s.m2 = vec![0.0; w];
                    s.min = vec![f64::INFINITY; w];
                    s.max = vec![f64::NEG_INFINITY; w];
                }
                for r in 0..f.rows() {
                    s.rows += 1;
                    let n = s.rows as f64;
                    for (c, &v) in f.row(r).iter().enumerate() {
                        let x = v as f64;
                        let d = x - s.mean[c];
                        s.mean[c] += d / n;
                        s.m2[c] += d * (x - s.mean[c]);
                        s.min[c] = s.min[c].min(x);
                        s.max[c] = s.max[c].max(x);
                    }
                }
            }
            Batch::Sparse(f) => {
                s.rows += f.rows() as u64;
                s.nnz += f.ids.len() as u64;
            }
            Batch::Table(_) | Batch::End(_) => {}
        }
        Ok(())
    }

    fn end_stream(&mut self, stream: &str) -> Result<()> {
        let mut lines = match self.streams.remove(stream) {
            Some(s) => self.summary_lines(stream, &s, None),
            None => Vec::new(),
        };
        lines.extend(self.table_count_lines(stream));
        if !lines.is_empty() {
            self.ended += 1;
            lines[0].push_str(" [ended]");
            println!("{}", lines.join("\n"));
        }
        Ok(())
    }

    fn finish(self: Box<Self>, failure: Option<&str>) -> Result<Vec<String>> {
        let mut lines = Vec::new();
        for (stream, s) in &self.streams {
            lines.extend(self.summary_lines(stream, s, failure));
        }
        for ((stream, table), rows) in &self.tables {
            lines.push(table_count_line(stream, table, *rows));
        }
        if self.ended > 0 {
            lines.push(format!(
                "{} streams ended during the run (summarized on stdout as each ended)",
                self.ended
            ));
        } else if self.streams.is_empty() && self.tables.is_empty() {
            lines.push("no rows received".into());
        }
        Ok(lines)
    }
}
