//! BrainVision ASCII data files (`DataFormat=ASCII`, multiplexed): after `SkipLines` lines, a
//! line per sample holding `SkipColumns` values to ignore and then a number per channel,
//! separated by blanks (or, on lines without any, by `;` or `,`), with `,` as the decimal
//! separator when `DecimalSymbol=,`. Blank lines are ignored. Every line is checked when the
//! file is opened. Lines are read with a length
//! limit, so a file without line breaks cannot make the reader hold it whole.

use std::fs::File;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};

use super::header::AsciiLayout;

/// Longest line read, bytes (65,536 channels of 60 characters).
pub const MAX_LINE_BYTES: usize = 4 << 20;

/// The lines of an ASCII data file, a sample at a time.
pub struct AsciiLines {
    reader: BufReader<File>,
    path: PathBuf,
    layout: AsciiLayout,
    /// Lines read so far (the next line's number is this + 1).
    line_no: u64,
    line: Vec<u8>,
}

impl AsciiLines {
    /// Opens `path` and skips its `SkipLines` lines.
    pub fn open(path: &Path, layout: AsciiLayout) -> Result<AsciiLines, String> {
        let file = File::open(path).map_err(|e| format!("{}: {e}", path.display()))?;
        let mut lines = AsciiLines {
            reader: BufReader::with_capacity(1 << 16, file),
            path: path.to_path_buf(),
            layout,
            line_no: 0,
            line: Vec::new(),
        };
        for _ in 0..layout.skip_lines {
            if !lines.next_line()? {
                break;
            }
        }
        Ok(lines)
    }

    /// Reads the next line into `self.line` (without its line break); false at the end.
    fn next_line(&mut self) -> Result<bool, String> {
        self.line.clear();
        loop {
            let buf = self
                .reader
                .fill_buf()
                .map_err(|e| format!("{}: line {}: {e}", self.path.display(), self.line_no + 1))?;
            if buf.is_empty() {
                if self.line.is_empty() {
                    return Ok(false);
                }
                break;
            }
            let (take, done) = match buf.iter().position(|&b| b == b'\n') {
                Some(i) => (i + 1, true),
                None => (buf.len(), false),
            };
            if self.line.len() + take > MAX_LINE_BYTES {
                return Err(format!(
                    "{}: line {} is longer than {MAX_LINE_BYTES} bytes: not a BrainVision ASCII data file",
                    self.path.display(),
                    self.line_no + 1
                ));
            }
            self.line.extend_from_slice(&buf[..take]);
            self.reader.consume(take);
            if done {
                break;
            }
        }
        self.line_no += 1;
        while matches!(self.line.last(), Some(b'\n' | b'\r')) {
            self.line.pop();
        }
        Ok(true)
    }

    /// Reads the next sample's `channels` values into `out` (cleared first); false at the end.
    pub fn next_sample(&mut self, channels: usize, out: &mut Vec<f64>) -> Result<bool, String> {
        out.clear();
        loop {
            if !self.next_line()? {
                return Ok(false);
            }
            if self.line.iter().any(|b| !b.is_ascii_whitespace()) {
                break;
            }
        }
        let at = |m: String| format!("{}: line {}: {m}", self.path.display(), self.line_no);
        let mut text = String::from_utf8_lossy(&self.line).into_owned();
        if self.layout.decimal_comma {
            text = text.replace(',', ".");
        }
        let text = text.trim();
        let fields: Vec<&str> = if text.contains(char::is_whitespace) {
            text.split_whitespace().collect()
        } else if text.contains(';') {
            text.split(';').collect()
        } else {
            text.split(',').collect()
        };
        let want = channels + self.layout.skip_columns;
        if fields.len() != want {
            return Err(at(format!(
                "{} values, but the header has {channels} channels{}",
                fields.len(),
                match self.layout.skip_columns {
                    0 => String::new(),
                    n => format!(" after {n} skipped columns"),
                }
            )));
        }
        for (c, field) in fields[self.layout.skip_columns..].iter().enumerate() {
            let v: f64 = field
                .trim()
                .parse()
                .map_err(|_| at(format!("channel {}: `{field}` is not a number", c + 1)))?;
            out.push(v);
        }
        Ok(true)
    }

    /// The data file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Counts the samples of `path`, each checked to hold `channels` numbers (after
    /// `SkipColumns`), so that a damaged line is an error before anything is replayed.
    pub fn count(path: &Path, layout: AsciiLayout, channels: usize) -> Result<u64, String> {
        let mut lines = AsciiLines::open(path, layout)?;
        let (mut n, mut values) = (0u64, Vec::with_capacity(channels));
        while lines.next_sample(channels, &mut values)? {
            n += 1;
        }
        Ok(n)
    }
}
