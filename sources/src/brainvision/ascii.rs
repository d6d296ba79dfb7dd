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
use crate::recording::HeldSamples;

/// Longest line read, bytes (65,536 channels of 60 characters).
pub const MAX_LINE_BYTES: usize = 4 << 20;

/// Samples per block of the values kept for the replay.
const HELD_BLOCK_SAMPLES: usize = 4096;

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

    /// Reads every sample of `path`, each line checked to hold `channels` numbers (after
    /// `SkipColumns`), so that a damaged line is an error before anything is replayed. Keeps
    /// the `picked` channels' values times their `scales` (f32, in blocks of
    /// [`HELD_BLOCK_SAMPLES`] samples) while they fit `budget` bytes, for the replay. Returns
    /// the sample count and the blocks (`None` when they did not fit).
    pub fn read_all(
        path: &Path,
        layout: AsciiLayout,
        channels: usize,
        picked: &[usize],
        scales: &[f64],
        budget: usize,
    ) -> Result<(u64, Option<HeldSamples>), String> {
        let mut lines = AsciiLines::open(path, layout)?;
        let (mut n, mut values) = (0u64, Vec::with_capacity(channels));
        let (mut blocks, mut block, mut keep) = (Vec::new(), Vec::new(), !picked.is_empty());
        while lines.next_sample(channels, &mut values)? {
            n += 1;
            if !keep {
                continue;
            }
            block.extend(picked.iter().zip(scales).map(|(&c, s)| (values[c] * s) as f32));
            if n as usize * picked.len() * 4 > budget {
                (keep, blocks, block) = (false, Vec::new(), Vec::new());
            } else if block.len() == HELD_BLOCK_SAMPLES * picked.len() {
                blocks.push(std::mem::take(&mut block));
            }
        }
        if !block.is_empty() {
            blocks.push(block);
        }
        Ok((n, keep.then_some(blocks)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn read_all_keeps_the_picked_scaled_values_in_blocks_or_none_over_the_budget() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a.txt");
        let n = HELD_BLOCK_SAMPLES + 904;
        let text: String = (0..n).map(|s| format!("{s} {} {}\n", s * 2, s as f64 * 0.25 - 7.0)).collect();
        std::fs::write(&path, format!("names\n{text}")).unwrap();
        let layout = AsciiLayout {
            skip_lines: 1,
            skip_columns: 0,
            decimal_comma: false,
        };
        let (count, held) = AsciiLines::read_all(&path, layout, 3, &[2, 0], &[2.0, 0.5], 1 << 30).unwrap();
        assert_eq!(count, n as u64);
        let held = held.expect("kept");
        assert_eq!(
            held.iter().map(Vec::len).collect::<Vec<_>>(),
            [HELD_BLOCK_SAMPLES * 2, 904 * 2]
        );
        let want: Vec<f32> = (0..n)
            .flat_map(|s| [((s as f64 * 0.25 - 7.0) * 2.0) as f32, (s as f64 * 0.5) as f32])
            .collect();
        assert_eq!(held.concat(), want);
        // Over the budget, or nothing picked: counted, nothing kept.
        assert_eq!(
            AsciiLines::read_all(&path, layout, 3, &[1], &[1.0], 4096).unwrap(),
            (n as u64, None)
        );
        assert_eq!(
            AsciiLines::read_all(&path, layout, 3, &[], &[], 1 << 30).unwrap(),
            (n as u64, None)
        );
        // A damaged line is still an error naming it.
        std::fs::write(&path, "names\n1 2 3\n4 x 6\n").unwrap();
        let err = AsciiLines::read_all(&path, layout, 3, &[0], &[1.0], 1 << 30).unwrap_err();
        assert!(err.contains("a.txt: line 3: channel 2: `x` is not a number"), "{err}");
    }
}
