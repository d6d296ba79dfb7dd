//! The head of a delimited-text recording: its comment lines, header row, first data row and
//! delimiter, the default channels, and a first pass over every line (lengths, quotes).

use std::io::{BufRead, BufReader, Seek, SeekFrom};
use std::path::Path;

use arrow::csv::reader::Format;

use super::table::number;
use crate::gzip_file::SharedFile;

/// Data rows read with the head, to find the numeric columns past marker rows.
const HEAD_ROWS: usize = 16;

/// Longest line accepted, bytes: a file without line breaks is not a table of samples.
pub const MAX_LINE_BYTES: u64 = 16 << 20;

/// What the file's head says: comment lines, the header row's names, the first data row.
pub(super) struct Head {
    pub comments: Vec<String>,
    /// Lines before the table (`skip_lines`, or EmotivPRO's line of `key:value` pairs).
    pub skipped: Vec<String>,
    /// Byte offset of the table (its header row, or its first row): after the skipped lines.
    pub table_start: u64,
    /// The first row names the columns; without it they are named by position, `0`, `1`, ...
    pub header: bool,
    pub names: Vec<String>,
    /// The first data rows (at most [`HEAD_ROWS`]), split at the delimiter.
    pub first_rows: Vec<Vec<String>>,
    pub delimiter: u8,
    /// Byte offset of the first data row's line (after the header row's).
    pub data_start: u64,
    /// The file's length, bytes.
    pub bytes: u64,
    /// A `"` somewhere after the header row: a quoted cell may then hold a line break, so the
    /// rows cannot be cut at line breaks and parsed in parts.
    pub quoted_data: bool,
}

/// Reads the comment lines, the header row (when `header`) and the first data rows (checking
/// every line's length on the way), and picks the delimiter. The first `skip_lines` lines are
/// not part of the table; by default none, or EmotivPRO's first line (`title:..., sampling
/// rate:128, ...`).
pub(super) fn read_head(
    input: &SharedFile,
    comment: u8,
    delimiter: Option<u8>,
    header: bool,
    skip_lines: Option<usize>,
) -> Result<Head, String> {
    let path = input.path();
    let file = input.reader().map_err(|e| format!("{}: {e}", path.display()))?;
    let lines = check_lines(input)?;
    let mut reader = BufReader::new(file);
    let (mut comments, mut skipped, mut table) = (Vec::new(), Vec::new(), Vec::new());
    let (mut offset, mut data_start, mut table_start, mut raw) = (0u64, 0u64, 0u64, Vec::new());
    for line_no in 1.. {
        raw.clear();
        let n = reader
            .read_until(b'\n', &mut raw)
            .map_err(|e| format!("{}: {e}", path.display()))?;
        if n == 0 {
            break;
        }
        let line_start = offset;
        offset += n as u64;
        let line = std::str::from_utf8(&raw).map_err(|_| format!("{}: line {line_no} is not UTF-8 text", path.display()))?;
        let line = line.trim_end_matches(['\n', '\r']).trim_start_matches('\u{feff}');
        let skip = match skip_lines {
            Some(n) => line_no <= n,
            None => line_no == 1 && is_emotiv_line(line),
        };
        if skip {
            skipped.push(line.to_string());
            table_start = offset;
        } else if line.as_bytes().first() == Some(&comment) {
            comments.push(line.to_string());
        } else if !line.trim().is_empty() {
            table.push(line.to_string());
            if table.len() == 1 {
                data_start = if header { offset } else { line_start };
            }
            if table.len() == HEAD_ROWS + header as usize {
                break;
            }
        }
    }
    let Some(first_line) = table.first() else {
        return Err(format!(
            "{}: no {} (the file is empty or all comments)",
            path.display(),
            if header { "header row" } else { "rows" }
        ));
    };
    let delimiter = delimiter.unwrap_or_else(|| {
        [b',', b'\t', b';']
            .into_iter()
            .max_by_key(|d| first_line.bytes().filter(|b| b == d).count())
            .expect("three candidates")
    });
    let split = |line: &str| -> Vec<String> {
        line.split(delimiter as char)
            .map(|f| f.trim().trim_matches('"').to_string())
            .collect()
    };
    // The names as the CSV tokenizer reads them (quotes, comment lines), trimmed; without a
    // header row, the first row's positions.
    let format = Format::default()
        .with_header(header)
        .with_delimiter(delimiter)
        .with_comment(comment);
    let mut file = input.reader().map_err(|e| format!("{}: {e}", path.display()))?;
    file.seek(SeekFrom::Start(table_start))
        .map_err(|e| format!("{}: {e}", path.display()))?;
    let (schema, _) = format
        .infer_schema(BufReader::new(file), Some(0))
        .map_err(|e| format!("{}: the header row: {e}", path.display()))?;
    // A UTF-8 byte-order mark (Excel writes one) is not part of the first name.
    let names: Vec<String> = match header {
        true => schema
            .fields()
            .iter()
            .map(|f| f.name().trim_start_matches('\u{feff}').trim().to_string())
            .collect(),
        false => (0..schema.fields().len()).map(|i| i.to_string()).collect(),
    };
    let mut seen = std::collections::HashSet::new();
    if let Some(dup) = names.iter().find(|n| !seen.insert(n.as_str())) {
        return Err(format!("{}: the header row names column `{dup}` twice", path.display()));
    }
    Ok(Head {
        comments,
        skipped,
        table_start,
        header,
        first_rows: table.iter().skip(header as usize).map(|l| split(l)).collect(),
        names,
        delimiter,
        data_start,
        bytes: lines.bytes,
        quoted_data: lines.last_quote.is_some_and(|q| q >= data_start),
    })
}

/// What a pass over every byte found.
struct Lines {
    bytes: u64,
    /// Offset of the last `"`.
    last_quote: Option<u64>,
}

/// Refuses a file with a line longer than [`MAX_LINE_BYTES`] (the CSV tokenizer would hold it),
/// and finds its length and last quote.
fn check_lines(input: &SharedFile) -> Result<Lines, String> {
    let path = input.path();
    let mut file = BufReader::with_capacity(1 << 20, input.reader().map_err(|e| format!("{}: {e}", path.display()))?);
    let (mut run, mut line, mut at, mut last_quote) = (0u64, 1u64, 0u64, None);
    loop {
        let buf = file.fill_buf().map_err(|e| format!("{}: {e}", path.display()))?;
        if buf.is_empty() {
            return Ok(Lines { bytes: at, last_quote });
        }
        if let Some(q) = memchr::memrchr(b'"', buf) {
            last_quote = Some(at + q as u64);
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
        at += n as u64;
        file.consume(n);
    }
}

/// EmotivPRO's first line: `title:foo, start timestamp:..., sampling rate:128, samples:2855, ...`.
fn is_emotiv_line(line: &str) -> bool {
    line.starts_with("title:") && line.contains("sampling rate:")
}

/// The rate a file states: OpenBCI GUI's `%Sample Rate = 250 Hz` comment, or EmotivPRO's
/// `sampling rate:128` (older exports: `sampling rate:eeg_128;mot_32`, the EEG rate) among the
/// skipped lines.
pub(super) fn stated_rate(head: &Head) -> Option<f64> {
    let openbci = head.comments.iter().find_map(|c| {
        let (key, value) = c.trim_start_matches('%').split_once('=')?;
        if !key.trim().eq_ignore_ascii_case("sample rate") {
            return None;
        }
        value.trim().trim_end_matches("Hz").trim().parse().ok()
    });
    let emotiv = || {
        head.skipped.iter().find_map(|line| {
            let (_, rest) = line.split_once("sampling rate:")?;
            let value = rest.split([',', ';']).next()?.trim();
            value.trim_start_matches("eeg_").parse().ok()
        })
    };
    openbci.or_else(emotiv)
}

/// Index and time columns, which are not channels by default.
fn is_index_or_time(name: &str) -> bool {
    let n = name.to_ascii_lowercase();
    matches!(n.as_str(), "sample index" | "sample" | "index") || is_time(&n)
}

/// A time column's name (lower case).
fn is_time(n: &str) -> bool {
    matches!(n, "time" | "t" | "seconds") || n.starts_with("time") || n.contains("timestamp")
}

/// For an error asking for the rate: what the first rows' time column says, when its steps are
/// even (`the `time` column steps by 0.004: 250 Hz if it counts seconds`).
pub(super) fn rate_hint(head: &Head, decimal_comma: bool) -> Option<String> {
    let column = head.names.iter().position(|n| is_time(&n.to_ascii_lowercase()))?;
    let times: Vec<f64> = head
        .first_rows
        .iter()
        .filter_map(|row| number(row.get(column)?, decimal_comma))
        .collect();
    let (first, last) = (*times.first()?, *times.last()?);
    let step = (last - first) / (times.len() - 1) as f64;
    let even = step > 0.0 && times.windows(2).all(|w| ((w[1] - w[0]) - step).abs() <= step * 1e-2);
    let hz = format!("{:.2}", 1.0 / step);
    even.then(|| {
        format!(
            "; its `{}` column steps by {step:.6}: {} Hz if it counts seconds",
            head.names[column],
            hz.trim_end_matches('0').trim_end_matches('.')
        )
    })
}

/// Every column whose first sample holds a number, but index and time columns and the
/// markers. The first sample is the first data row with a value outside those columns (a marker
/// row, as Mind Monitor writes them, has none).
pub(super) fn default_channels(path: &Path, head: &Head, marker: Option<usize>, decimal_comma: bool) -> Vec<usize> {
    let left_out: Vec<&str> = head
        .names
        .iter()
        .enumerate()
        .filter(|(i, n)| Some(*i) == marker || is_index_or_time(n))
        .map(|(_, n)| n.as_str())
        .collect();
    let candidates: Vec<usize> = (0..head.names.len())
        .filter(|&i| Some(i) != marker && !is_index_or_time(&head.names[i]))
        .collect();
    let first_sample = head
        .first_rows
        .iter()
        .find(|row| candidates.iter().any(|&i| row.get(i).is_some_and(|v| !v.is_empty())));
    let picked: Vec<usize> = candidates
        .into_iter()
        .filter(|&i| {
            first_sample
                .and_then(|row| row.get(i))
                .is_some_and(|v| number(v, decimal_comma).is_some())
        })
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
