//! `console`: reports a summary of each stream it receives when the run ends: rows, time span,
//! and per channel the mean, standard deviation, minimum and maximum (float64 accumulation).

use std::collections::BTreeMap;
use std::sync::Arc;

use neurostream_engine::{
    parse_config, Batch, ConfigTable, NodeConfig, NodeContext, Placement, Result, RowIndex, Schema, Sink, SinkKind, SinkWriter,
    WorkerPos,
};
use serde::{Deserialize, Serialize};

/// Configuration of a `console` sink. Its summary lines appear in
/// [`RunReport::sink_lines`](neurostream_engine::RunReport), which the CLI prints to stdout.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ConsoleSinkConfig {
    /// Channels listed per stream (the rest are summarized in one line).
    pub max_channels: usize,
}

impl Default for ConsoleSinkConfig {
    fn default() -> Self {
        ConsoleSinkConfig { max_channels: 8 }
    }
}

impl NodeConfig for ConsoleSinkConfig {
    const KIND: &'static str = "console";
}

/// The `console` sink kind.
pub struct ConsoleSinkKind;

impl SinkKind for ConsoleSinkKind {
    fn kind(&self) -> &'static str {
        "console"
    }
    fn describe(&self) -> &'static str {
        "per-stream, per-channel summary in the run report (printed by the CLI)"
    }
    fn build(&self, config: ConfigTable, ctx: &NodeContext, input: &Arc<Schema>) -> Result<Arc<dyn Sink>> {
        let cfg: ConsoleSinkConfig = parse_config(config, ctx)?;
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
}

impl SinkWriter for ConsoleWriter {
    fn write(&mut self, batch: &Batch) -> Result<()> {
        let s = self.streams.entry(batch.stream().to_string()).or_default();
        let index: &RowIndex = match batch {
            Batch::Dense(f) => &f.index,
            Batch::Sparse(f) => &f.index,
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
        }
        Ok(())
    }

    fn finish(self: Box<Self>, failure: Option<&str>) -> Result<Vec<String>> {
        let mut lines = Vec::new();
        for (stream, s) in &self.streams {
            lines.push(format!(
                "stream {stream}: {} rows ({}), {} .. {}{}",
                s.rows,
                self.schema.describe(),
                s.first.as_deref().unwrap_or("-"),
                s.last.as_deref().unwrap_or("-"),
                if failure.is_some() { " [run failed]" } else { "" }
            ));
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
        }
        if self.streams.is_empty() {
            lines.push("no rows received".into());
        }
        Ok(lines)
    }
}
