//! The `csv` source: a signal recorded as delimited text, a row per sample and a column per
//! channel (OpenBCI GUI's `OpenBCI-RAW-*.txt`, BrainFlow, EmotivPRO, Muse Mind Monitor and
//! other device exports, a spreadsheet), replayed like the recording formats. Tokenized by
//! arrow-csv (quotes, comment lines); numbers are parsed here with surrounding blanks trimmed,
//! as device exports write `, 1.25`.
//!
//! The sampling rate comes from `sample_rate`, an OpenBCI `%Sample Rate = 250 Hz` comment or
//! EmotivPRO's first line (`sampling rate:128`). The whole file is checked before the run
//! (every picked cell a number), so a damaged row is an error naming the row and column before
//! anything is written. That check parses the rows on every core (when no cell after the
//! header row is quoted, the rows are cut at line breaks) and its values are replayed (up to
//! [`crate::recording::HELD_SAMPLES_BYTES`]), so the file is parsed once.
//!
//! Rows with a marker and no channel value (Muse Mind Monitor's `Elements` rows) are markers on
//! the next sample; rows with neither are errors or, with `skip_empty_rows`, another stream's
//! rows left out; files without a header row (BrainFlow) name their columns by position.

mod head;
mod table;

use std::sync::Arc;

use neurostream_engine::{Channel, EngineError, NodeConfig, NodeContext, Result, Schema, Source, SourceKind, StreamKind};
use serde::{Deserialize, Serialize};

pub use head::MAX_LINE_BYTES;

use crate::recording::{
    default_chunk, engine_channels, pick_labels, Blocks, HeldBlocks, OpenBlocks, RecordingSource, ReplaySettings,
};
use head::{default_channels, rate_hint, read_head, stated_rate};
use table::{scan, CellOptions, Layout, Scanned, TableBlocks};

/// Configuration of a `csv` source.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct CsvSourceConfig {
    /// The file (`.csv`, `.tsv`, `.txt`, or any of them gzip-compressed, `.csv.gz`): a header row
    /// of column names, then a row per sample. A glob of files reads each as a stream of its own,
    /// named by its file.
    pub path: String,
    /// Sampling rate, Hz. Default: the file's OpenBCI `%Sample Rate = 250 Hz` line or
    /// EmotivPRO `sampling rate:128`; required when the file says none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(extend("x-unit" = "Hz"))]
    pub sample_rate: Option<f64>,
    /// Columns to read as channels, by name or glob pattern (`"EXG Channel *"`), in this order.
    /// Default: every column whose first row is a number, except index and time columns
    /// (`Sample Index`, `time`, `Timestamp`, ...) and the `markers` column. Required without
    /// a header row.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub channels: Option<Vec<String>>,
    /// The first row names the columns (default). `false` for a file without one (BrainFlow's
    /// `DataFilter.write_file`, OpenBCI GUI's `BrainFlow-RAW` files): its columns are then named
    /// by position from 0 (`"1"` is the second), as BrainFlow numbers them
    /// (`BoardShim.get_eeg_channels`), in `channels` and `markers`.
    #[serde(default = "default_header")]
    pub header: bool,
    /// Unit of the channels' values (`uV`, `mV`, `V`, ...), converted to the engine's (µV for
    /// voltages). Default `uV`, as device exports write EEG.
    #[serde(default = "default_unit")]
    pub unit: String,
    /// A column whose non-empty cells (other than `0`) become markers labelled with the cell.
    /// Default: a column named `Marker Channel` (OpenBCI GUI), `Marker` or `Markers`. A
    /// row with a marker and no value in any channel (a marker row, as Muse's Mind Monitor
    /// writes its `Elements`) is not a sample: its marker goes on the next sample.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub markers: Option<String>,
    /// Field delimiter, one character. Default: the header row's most frequent of `,`, tab, `;`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub delimiter: Option<String>,
    /// Decimal separator of the numbers: `.` (default) or `,` (spreadsheets saved in German,
    /// French and other locales, with `;` as the delimiter).
    #[serde(default = "default_decimal")]
    pub decimal: String,
    /// Lines before the table (its header row, or its first row without one), not read.
    /// Default: none, or an EmotivPRO export's first line (`title:..., sampling rate:128, ...`),
    /// whose rate is then the stream's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(extend("x-unit" = "lines"))]
    pub skip_lines: Option<usize>,
    /// Rows without a value in any channel read (and no marker) are left out: rows of another
    /// stream in a file that interleaves several (an EmotivPRO or Mind Monitor export with
    /// motion or band-power rows). Default `false`: such a row is an error naming it.
    #[serde(default)]
    pub skip_empty_rows: bool,
    /// Lines starting with this character are comments (OpenBCI's header lines start with `%`).
    #[serde(default = "default_comment")]
    pub comment: String,
    /// Samples per frame (default 256).
    #[serde(default = "default_chunk")]
    #[schemars(extend("x-unit" = "samples"))]
    pub chunk: usize,
    /// Replay pace: 0 (default) as fast as possible; 1.0 real time; 10 ten times faster.
    #[serde(default)]
    #[schemars(extend("x-unit" = "× real time"))]
    pub speed: f64,
}

fn default_unit() -> String {
    "uV".into()
}

fn default_header() -> bool {
    true
}

fn default_decimal() -> String {
    ".".into()
}

fn default_comment() -> String {
    "%".into()
}

impl CsvSourceConfig {
    /// Reads the numeric columns of `path` at `sample_rate` Hz, in µV.
    pub fn new(path: &str, sample_rate: f64) -> CsvSourceConfig {
        CsvSourceConfig {
            path: path.into(),
            sample_rate: Some(sample_rate),
            channels: None,
            header: default_header(),
            unit: default_unit(),
            markers: None,
            delimiter: None,
            decimal: default_decimal(),
            skip_lines: None,
            skip_empty_rows: false,
            comment: default_comment(),
            chunk: default_chunk(),
            speed: 0.0,
        }
    }
}

impl NodeConfig for CsvSourceConfig {
    const KIND: &'static str = "csv";
}

/// The `csv` source kind.
pub struct CsvSourceKind;

impl SourceKind for CsvSourceKind {
    type Config = CsvSourceConfig;

    fn describe(&self) -> &'static str {
        "delimited text (OpenBCI, device exports): a row per sample, a column per channel, a marker column"
    }

    fn build(&self, cfg: CsvSourceConfig, ctx: &NodeContext) -> Result<Arc<dyn Source>> {
        if let Some(set) =
            crate::recording_set::glob_set(&CsvSourceKind, &cfg, &cfg.path, ctx, |c, path| CsvSourceConfig { path, ..c })
        {
            return set;
        }
        let fail = |m: String| EngineError::config(ctx.label, m);
        crate::recording::check_pace(cfg.chunk, cfg.speed).map_err(fail)?;
        let path = ctx.input_file(&cfg.path);
        let comment = one_byte(&cfg.comment, "comment").map_err(fail)?;
        let delimiter = match &cfg.delimiter {
            Some(d) if d == "\\t" => Some(b'\t'),
            Some(d) => Some(one_byte(d, "delimiter").map_err(fail)?),
            None => None,
        };
        let decimal_comma = match one_byte(&cfg.decimal, "decimal").map_err(fail)? {
            b'.' => false,
            b',' => true,
            _ => return Err(fail(format!("key `decimal`: `{}` (`.` or `,`)", cfg.decimal))),
        };
        if !cfg.header && cfg.channels.is_none() {
            return Err(fail(format!(
                "{}: key `channels`: required with `header = false` (the columns are named by position from 0: \
                 [\"1\", \"2\"] are the second and third)",
                path.display()
            )));
        }
        let input = crate::gzip_file::SharedFile::open(&path).map_err(fail)?;
        let head = read_head(&input, comment, delimiter, cfg.header, cfg.skip_lines).map_err(fail)?;
        if decimal_comma && head.delimiter == b',' {
            return Err(fail(format!(
                "{}: key `decimal`: `,` is also the delimiter{}",
                path.display(),
                if delimiter.is_none() {
                    " (the header row's most frequent); set `delimiter` (`;` in most such files)"
                } else {
                    ""
                }
            )));
        }
        let rate = match cfg.sample_rate {
            Some(r) => r,
            None => stated_rate(&head).ok_or_else(|| {
                fail(format!(
                    "{}: key `sample_rate`: required (the file does not say its rate: no OpenBCI `%Sample Rate = ... Hz` \
                     line or EmotivPRO `sampling rate:...` pair{})",
                    path.display(),
                    rate_hint(&head, decimal_comma).unwrap_or_default()
                ))
            })?,
        };
        if !(rate.is_finite() && rate > 0.0) {
            return Err(fail(format!("key `sample_rate`: {rate} Hz (must be above 0)")));
        }
        let labels: Vec<&str> = head.names.iter().map(String::as_str).collect();
        let marker = match &cfg.markers {
            None => labels
                .iter()
                .position(|l| matches!(l.to_ascii_lowercase().as_str(), "marker channel" | "marker" | "markers")),
            Some(m) => Some(labels.iter().position(|l| l == m).ok_or_else(|| {
                fail(format!(
                    "key `markers`: {}: no column `{m}`{}",
                    path.display(),
                    neurostream_engine::suggest::hint(m, labels.iter().copied())
                ))
            })?),
        };
        let picked = match &cfg.channels {
            Some(list) => pick_labels(&labels, list, &path).map_err(fail)?,
            None => default_channels(&path, &head, marker, decimal_comma),
        };
        if picked.is_empty() {
            return Err(fail(format!(
                "{}: no numeric column to read (columns: {}); name them in `channels`",
                path.display(),
                labels.join(", ")
            )));
        }
        if picked.len() > crate::MAX_CHANNELS {
            return Err(fail(format!(
                "{}: {} channels (at most {})",
                path.display(),
                picked.len(),
                crate::MAX_CHANNELS
            )));
        }
        let options = CellOptions {
            comment,
            decimal_comma,
            skip_empty_rows: cfg.skip_empty_rows,
        };
        let layout = Layout::new(&input, &head, options, picked.clone(), marker);
        // Every row checked before the run: the sample count, the markers and (when they fit)
        // the samples come with it.
        let Scanned { rows, events, held, .. } = scan(&layout, &head).map_err(fail)?;
        let (channels, factors) = engine_channels(
            picked
                .iter()
                .map(|&i| Channel {
                    name: head.names[i].clone(),
                    unit: cfg.unit.clone(),
                    kind: neurostream_engine::schema::channel_type_from_label(&head.names[i]),
                })
                .collect(),
        );
        tracing::info!(
            "{}: {rows} rows of {} channels at {rate} Hz ({}), {} markers",
            path.display(),
            picked.len(),
            some_names(&picked.iter().map(|&i| head.names[i].as_str()).collect::<Vec<_>>()),
            events.len()
        );
        let settings = ReplaySettings {
            kind: CsvSourceConfig::KIND,
            name: ctx.name.into(),
            schema: Arc::new(Schema {
                kind: StreamKind::Signal {
                    sample_rate: rate,
                    row_rate: None,
                },
                channels,
            }),
            rate,
            chunk: cfg.chunk,
            speed: cfg.speed,
            factors: factors.map(Arc::new),
            events: Arc::new(events),
        };
        let width = picked.len();
        let held_bytes = held.as_ref().map_or(0, crate::recording::held_bytes);
        let open: OpenBlocks = match held {
            Some(blocks) => {
                let blocks = Arc::new(blocks);
                Box::new(move || Ok(Box::new(HeldBlocks::new(blocks.clone(), width)) as Box<dyn Blocks>))
            }
            None => Box::new(move || Ok(Box::new(TableBlocks::open(layout.clone(), Some(rows))?) as Box<dyn Blocks>)),
        };
        Ok(Arc::new(RecordingSource {
            settings,
            files: vec![path],
            rows,
            open,
            held_bytes,
        }))
    }
}

/// `names` for a log line: all of up to 8, else the first 4, `...` and the last 2.
fn some_names(names: &[&str]) -> String {
    if names.len() <= 8 {
        return names.join(", ");
    }
    format!("{}, ..., {}", names[..4].join(", "), names[names.len() - 2..].join(", "))
}

fn one_byte(text: &str, key: &str) -> std::result::Result<u8, String> {
    match text.as_bytes() {
        [b] if b.is_ascii() => Ok(*b),
        _ => Err(format!("key `{key}`: `{text}` is not one ASCII character")),
    }
}
