//! The `csv` source: a signal recorded as delimited text, a row per sample and a column per
//! channel (OpenBCI GUI's `OpenBCI-RAW-*.txt`, Muse and other device exports, a spreadsheet),
//! replayed like the recording formats. Tokenized by arrow-csv (quotes, comment lines); numbers
//! are parsed here with surrounding blanks trimmed, as device exports write `, 1.25`.
//!
//! The sampling rate comes from `sample_rate` or from an OpenBCI `%Sample Rate = 250 Hz`
//! comment. The whole file is checked before the run (every picked cell a number), so a
//! damaged row is an error naming the row and column before anything is written.

use std::fs::File;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use arrow::array::{Array, StringArray};
use arrow::csv::reader::Format;
use arrow::datatypes::{DataType, Field};
use neurostream_engine::{Channel, EngineError, NodeConfig, NodeContext, Result, Schema, Source, SourceKind, StreamKind};
use serde::{Deserialize, Serialize};

use crate::recording::{default_chunk, engine_channels, pick_labels, Blocks, Event, OpenBlocks, RecordingSource, ReplaySettings};

/// Longest line accepted, bytes: a file without line breaks is not a table of samples.
pub const MAX_LINE_BYTES: u64 = 16 << 20;

/// Rows per block read.
const BLOCK_ROWS: usize = 4096;

/// Configuration of a `csv` source.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct CsvSourceConfig {
    /// The file (`.csv`, `.tsv`, `.txt`): a header row of column names, then a row per sample.
    pub path: String,
    /// Sampling rate, Hz. Default: the file's OpenBCI `%Sample Rate = 250 Hz` line; required
    /// when the file has none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(extend("x-unit" = "Hz"))]
    pub sample_rate: Option<f64>,
    /// Columns to read as channels, by name or glob pattern (`"EXG Channel *"`), in this order.
    /// Default: every column whose first row is a number, except index and time columns
    /// (`Sample Index`, `time`, `Timestamp`, ...) and the `markers` column.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub channels: Option<Vec<String>>,
    /// Unit of the channels' values (`uV`, `mV`, `V`, ...), converted to the engine's (µV for
    /// voltages). Default `uV`, as device exports write EEG.
    #[serde(default = "default_unit")]
    pub unit: String,
    /// A column whose non-empty cells (other than `0`) become markers labelled with the cell.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub markers: Option<String>,
    /// Field delimiter, one character. Default: the header row's most frequent of `,`, tab, `;`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub delimiter: Option<String>,
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
            unit: default_unit(),
            markers: None,
            delimiter: None,
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

/// What the file's head says: comment lines, the header row's names, the first data row.
struct Head {
    comments: Vec<String>,
    names: Vec<String>,
    first_row: Vec<String>,
    delimiter: u8,
}

/// How a table is read: its file, delimiter, comment character, columns.
#[derive(Clone)]
struct Layout {
    path: PathBuf,
    format: Format,
    picked: Vec<usize>,
    marker: Option<usize>,
    /// Every column's name, in file order.
    names: Vec<String>,
}

impl SourceKind for CsvSourceKind {
    type Config = CsvSourceConfig;

    fn describe(&self) -> &'static str {
        "delimited text (OpenBCI, device exports): a row per sample, a column per channel, a marker column"
    }

    fn build(&self, cfg: CsvSourceConfig, ctx: &NodeContext) -> Result<Arc<dyn Source>> {
        let fail = |m: String| EngineError::config(ctx.label, m);
        crate::recording::check_pace(cfg.chunk, cfg.speed).map_err(fail)?;
        let path = ctx.input_file(&cfg.path);
        let comment = one_byte(&cfg.comment, "comment").map_err(fail)?;
        let delimiter = match &cfg.delimiter {
            Some(d) if d == "\\t" => Some(b'\t'),
            Some(d) => Some(one_byte(d, "delimiter").map_err(fail)?),
            None => None,
        };
        let head = read_head(&path, comment, delimiter).map_err(fail)?;
        let rate = match cfg.sample_rate {
            Some(r) => r,
            None => openbci_rate(&head.comments).ok_or_else(|| {
                fail(format!(
                    "{}: key `sample_rate`: required (the file does not say its rate: no `%Sample Rate = ... Hz` line)",
                    path.display()
                ))
            })?,
        };
        if !(rate.is_finite() && rate > 0.0) {
            return Err(fail(format!("key `sample_rate`: {rate} Hz (must be above 0)")));
        }
        let labels: Vec<&str> = head.names.iter().map(String::as_str).collect();
        let marker = match &cfg.markers {
            None => None,
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
            None => default_channels(&path, &head, marker),
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
        let layout = Layout {
            path: path.clone(),
            format: Format::default()
                .with_header(true)
                .with_delimiter(head.delimiter)
                .with_comment(comment),
            picked: picked.clone(),
            marker,
            names: head.names.clone(),
        };
        // Every row checked before the run: the sample count and the markers come with it.
        let (rows, events) = scan(&layout).map_err(fail)?;
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
            picked.iter().map(|&i| head.names[i].as_str()).collect::<Vec<_>>().join(", "),
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
        let open: OpenBlocks = Box::new(move || Ok(Box::new(TableBlocks::open(layout.clone(), Some(rows))?) as Box<dyn Blocks>));
        Ok(Arc::new(RecordingSource {
            settings,
            files: vec![path],
            rows,
            open,
        }))
    }
}

fn one_byte(text: &str, key: &str) -> std::result::Result<u8, String> {
    match text.as_bytes() {
        [b] if b.is_ascii() => Ok(*b),
        _ => Err(format!("key `{key}`: `{text}` is not one ASCII character")),
    }
}

/// Reads the comment lines, the header row and the first data row (checking every line's
/// length on the way), and picks the delimiter.
fn read_head(path: &Path, comment: u8, delimiter: Option<u8>) -> std::result::Result<Head, String> {
    let file = File::open(path).map_err(|e| format!("{}: {e}", path.display()))?;
    check_line_lengths(path)?;
    let mut lines = BufReader::new(file).lines();
    let mut comments = Vec::new();
    let mut table = Vec::new();
    for line in lines.by_ref() {
        let line = line.map_err(|e| format!("{}: {e}", path.display()))?;
        let line = line.trim_start_matches('\u{feff}').to_string();
        if line.as_bytes().first() == Some(&comment) {
            comments.push(line);
        } else if !line.trim().is_empty() {
            table.push(line);
            if table.len() == 2 {
                break;
            }
        }
    }
    let Some(header) = table.first() else {
        return Err(format!(
            "{}: no header row (the file is empty or all comments)",
            path.display()
        ));
    };
    let delimiter = delimiter.unwrap_or_else(|| {
        [b',', b'\t', b';']
            .into_iter()
            .max_by_key(|d| header.bytes().filter(|b| b == d).count())
            .expect("three candidates")
    });
    let split = |line: &str| -> Vec<String> {
        line.split(delimiter as char)
            .map(|f| f.trim().trim_matches('"').to_string())
            .collect()
    };
    // The names as the CSV tokenizer reads them (quotes, comment lines), trimmed.
    let format = Format::default()
        .with_header(true)
        .with_delimiter(delimiter)
        .with_comment(comment);
    let file = File::open(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let (schema, _) = format
        .infer_schema(BufReader::new(file), Some(0))
        .map_err(|e| format!("{}: the header row: {e}", path.display()))?;
    // A UTF-8 byte-order mark (Excel writes one) is not part of the first name.
    let names: Vec<String> = schema
        .fields()
        .iter()
        .map(|f| f.name().trim_start_matches('\u{feff}').trim().to_string())
        .collect();
    let mut seen = std::collections::HashSet::new();
    if let Some(dup) = names.iter().find(|n| !seen.insert(n.as_str())) {
        return Err(format!("{}: the header row names column `{dup}` twice", path.display()));
    }
    Ok(Head {
        comments,
        first_row: table.get(1).map(|l| split(l)).unwrap_or_default(),
        names,
        delimiter,
    })
}

/// Refuses a file with a line longer than [`MAX_LINE_BYTES`] (the CSV tokenizer would hold it).
fn check_line_lengths(path: &Path) -> std::result::Result<(), String> {
    let mut file = BufReader::with_capacity(1 << 20, File::open(path).map_err(|e| format!("{}: {e}", path.display()))?);
    let (mut run, mut line) = (0u64, 1u64);
    loop {
        let buf = file.fill_buf().map_err(|e| format!("{}: {e}", path.display()))?;
        if buf.is_empty() {
            return Ok(());
        }
        let mut rest = buf;
        loop {
            let (segment, ended) = match memchr::memchr(b'\n', rest) {
                Some(i) => (i as u64, Some(i)),
                None => (rest.len() as u64, None),
            };
            run += segment;
            if run > MAX_LINE_BYTES {
                return Err(format!(
                    "{}: line {line} is longer than {MAX_LINE_BYTES} bytes: not a table of samples",
                    path.display()
                ));
            }
            match ended {
                Some(i) => {
                    (run, line) = (0, line + 1);
                    rest = &rest[i + 1..];
                }
                None => break,
            }
        }
        let n = buf.len();
        file.consume(n);
    }
}

/// The rate of an OpenBCI GUI export: `%Sample Rate = 250 Hz`.
fn openbci_rate(comments: &[String]) -> Option<f64> {
    comments.iter().find_map(|c| {
        let (key, value) = c.trim_start_matches('%').split_once('=')?;
        if !key.trim().eq_ignore_ascii_case("sample rate") {
            return None;
        }
        value.trim().trim_end_matches("Hz").trim().parse().ok()
    })
}

/// Index and time columns, which are not channels by default.
fn is_index_or_time(name: &str) -> bool {
    let n = name.to_ascii_lowercase();
    matches!(n.as_str(), "sample index" | "sample" | "index" | "time" | "t" | "seconds")
        || n.starts_with("time")
        || n.contains("timestamp")
}

/// Every column whose first row holds a number, but index and time columns and the markers.
fn default_channels(path: &Path, head: &Head, marker: Option<usize>) -> Vec<usize> {
    let left_out: Vec<&str> = head
        .names
        .iter()
        .enumerate()
        .filter(|(i, n)| Some(*i) == marker || is_index_or_time(n))
        .map(|(_, n)| n.as_str())
        .collect();
    let picked: Vec<usize> = (0..head.names.len())
        .filter(|&i| Some(i) != marker && !is_index_or_time(&head.names[i]))
        .filter(|&i| head.first_row.get(i).is_some_and(|v| v.parse::<f64>().is_ok()))
        .collect();
    if !left_out.is_empty() {
        tracing::info!(
            "{}: not read as channels (index, time or marker columns): {}",
            path.display(),
            left_out.join(", ")
        );
    }
    picked
}

/// Reads the whole table once: its row count and its markers, every picked cell checked.
fn scan(layout: &Layout) -> std::result::Result<(u64, Vec<Event>), String> {
    let mut blocks = TableBlocks::open(layout.clone(), None).map_err(|e| e.to_string())?;
    let (mut rows, mut samples, mut events) = (Vec::new(), Vec::new(), Vec::new());
    loop {
        rows.clear();
        samples.clear();
        match blocks.next_rows(&mut rows, &mut samples, Some(&mut events)) {
            Ok(true) => {}
            Ok(false) => return Ok((blocks.next, events)),
            Err(e) => return Err(e),
        }
    }
}

/// The picked columns of a table, [`BLOCK_ROWS`] rows at a time.
struct TableBlocks {
    reader: arrow::csv::reader::BufReader<BufReader<File>>,
    layout: Layout,
    /// Rows in the table, when counted.
    total: Option<u64>,
    /// Next row (sample) to read.
    next: u64,
}

impl TableBlocks {
    fn open(layout: Layout, total: Option<u64>) -> Result<TableBlocks> {
        let file = File::open(&layout.path).map_err(|e| EngineError::io(format!("opening {}", layout.path.display()), e))?;
        // Every column as text: cells are trimmed and parsed here.
        let fields: Vec<Field> = (0..layout.names.len())
            .map(|i| Field::new(format!("c{i}"), DataType::Utf8, true))
            .collect();
        let reader = arrow::csv::ReaderBuilder::new(Arc::new(arrow::datatypes::Schema::new(fields)))
            .with_format(layout.format.clone())
            .with_batch_size(BLOCK_ROWS)
            .build_buffered(BufReader::with_capacity(1 << 20, file))
            .map_err(|e| EngineError::Runtime(format!("{}: {e}", layout.path.display())))?;
        Ok(TableBlocks {
            reader,
            layout,
            total,
            next: 0,
        })
    }

    /// Appends the next block's picked values to `rows` and sample numbers to `samples`, and
    /// (when asked) the markers to `events`; false at the end.
    fn next_rows(
        &mut self,
        rows: &mut Vec<f32>,
        samples: &mut Vec<i64>,
        events: Option<&mut Vec<Event>>,
    ) -> std::result::Result<bool, String> {
        let path = self.layout.path.display();
        let Some(batch) = self.reader.next() else {
            return Ok(false);
        };
        let batch = batch.map_err(|e| format!("{path}: row {}: {e}", self.next + 1))?;
        let text = |i: usize| -> &StringArray { batch.column(i).as_any().downcast_ref().expect("columns are read as text") };
        let picked: Vec<&StringArray> = self.layout.picked.iter().map(|&i| text(i)).collect();
        rows.reserve(batch.num_rows() * picked.len());
        for r in 0..batch.num_rows() {
            for (c, column) in picked.iter().enumerate() {
                let cell = if column.is_null(r) { "" } else { column.value(r).trim_ascii() };
                let v: f64 = cell.parse().map_err(|_| {
                    format!(
                        "{path}: data row {} (sample {}), column `{}`: `{cell}` is not a number",
                        self.next + r as u64 + 1,
                        self.next + r as u64,
                        self.layout.names[self.layout.picked[c]]
                    )
                })?;
                rows.push(v as f32);
            }
        }
        if let (Some(events), Some(m)) = (events, self.layout.marker) {
            let column = text(m);
            for r in 0..batch.num_rows() {
                let cell = if column.is_null(r) { "" } else { column.value(r).trim_ascii() };
                if !cell.is_empty() && !cell.parse::<f64>().is_ok_and(|v| v == 0.0) {
                    events.push(Event {
                        sample: (self.next + r as u64) as i64,
                        label: cell.to_string(),
                        duration_s: 0.0,
                    });
                }
            }
        }
        let first = self.next as i64;
        samples.extend(first..first + batch.num_rows() as i64);
        self.next += batch.num_rows() as u64;
        Ok(true)
    }
}

impl Blocks for TableBlocks {
    fn read_block(&mut self, rows: &mut Vec<f32>, samples: &mut Vec<i64>) -> Result<bool> {
        self.next_rows(rows, samples, None).map_err(EngineError::Runtime)
    }

    fn next_sample(&self) -> Option<i64> {
        match self.total {
            Some(total) => (self.next < total).then_some(self.next as i64),
            None => Some(self.next as i64),
        }
    }

    fn location(&self) -> String {
        format!("data row {}", self.next + 1)
    }
}
