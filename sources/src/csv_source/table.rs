//! Reading the rows of a delimited-text recording: the check before the run (every picked cell
//! parsed, in parts on every core where the rows can be cut at line breaks), and the blocks the
//! replay reads when the checked values were too many to keep.

use std::io::{BufRead, BufReader, Read, Seek, SeekFrom};
use std::ops::Range;
use std::sync::Arc;

use arrow::array::{Array, StringArray};
use arrow::csv::reader::Format;
use arrow::datatypes::{DataType, Field};
use neurostream_engine::{EngineError, Result};

use super::head::{Head, MAX_LINE_BYTES};
use crate::gzip_file::SharedFile;
use crate::recording::{Blocks, Event, HeldSamples, HELD_SAMPLES_BYTES};

/// Rows per block read.
const BLOCK_ROWS: usize = 4096;

/// Bytes of rows per part, at least, when the check is split over several threads.
const MIN_PART_BYTES: u64 = 4 << 20;

/// How a table is read: its file, delimiter, comment character, columns.
#[derive(Clone)]
pub(super) struct Layout {
    /// The file (its path names it in messages).
    pub input: SharedFile,
    /// Delimiter and comment character.
    pub format: Format,
    /// Byte offset of the table (after lines skipped).
    pub table_start: u64,
    /// The first row of the table names the columns.
    pub header: bool,
    /// Numbers are written with `,` as the decimal separator.
    pub decimal_comma: bool,
    /// Rows without a value in any picked column (nor a marker) are left out, not errors.
    pub skip_empty_rows: bool,
    /// The channels' columns, in the stream's order.
    pub picked: Vec<usize>,
    /// The marker column.
    pub marker: Option<usize>,
    /// Every column's name, in file order.
    pub names: Vec<String>,
    /// The columns read (picked and marker), ascending: the reader's projection.
    pub read: Vec<usize>,
}

impl Layout {
    /// Reads columns `picked` (and `marker`) of `path`, whose head is `head`.
    pub fn new(input: &SharedFile, head: &Head, options: CellOptions, picked: Vec<usize>, marker: Option<usize>) -> Layout {
        let CellOptions {
            comment,
            decimal_comma,
            skip_empty_rows,
        } = options;
        let mut read: Vec<usize> = picked.iter().copied().chain(marker).collect();
        read.sort_unstable();
        read.dedup();
        Layout {
            input: input.clone(),
            format: Format::default().with_delimiter(head.delimiter).with_comment(comment),
            table_start: head.table_start,
            header: head.header,
            decimal_comma,
            skip_empty_rows,
            picked,
            marker,
            names: head.names.clone(),
            read,
        }
    }
}

/// How the cells are read: comment lines, the decimal separator, rows without values.
#[derive(Clone, Copy)]
pub(super) struct CellOptions {
    /// Lines starting with it are comments.
    pub comment: u8,
    pub decimal_comma: bool,
    pub skip_empty_rows: bool,
}

/// What reading the whole table found.
pub(super) struct Scanned {
    /// Data rows (samples).
    pub rows: u64,
    pub events: Vec<Event>,
    /// The picked values, row-major, in blocks as read, when they fit [`HELD_SAMPLES_BYTES`].
    pub held: Option<HeldSamples>,
    /// Rows left out for holding no value (`skip_empty_rows`).
    pub empty_rows: u64,
}

/// Reads the whole table once, every picked cell checked, keeping its values when they fit.
/// The rows after the header row are cut at line breaks into a part per core (of at least
/// [`MIN_PART_BYTES`]) when no cell is quoted there.
pub(super) fn scan(layout: &Layout, head: &Head) -> std::result::Result<Scanned, String> {
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get()).min(16) as u64;
    let parts = if head.quoted_data {
        1
    } else {
        (head.bytes.saturating_sub(head.data_start) / MIN_PART_BYTES).clamp(1, cores)
    };
    scan_in_parts(layout, head.data_start, head.bytes, parts, HELD_SAMPLES_BYTES)
}

/// [`scan`] in `parts` parts at most, keeping at most `budget` bytes of values. A damaged
/// table is read again in one part, so its error names the row as a reader from the start
/// sees it.
fn scan_in_parts(
    layout: &Layout,
    data_start: u64,
    bytes: u64,
    parts: u64,
    budget: usize,
) -> std::result::Result<Scanned, String> {
    if parts > 1 {
        let cuts = line_cuts(layout, data_start, bytes, parts).map_err(|e| format!("{}: {e}", layout.input.path().display()))?;
        let per_part = budget / cuts.len();
        let scanned: Vec<std::result::Result<Scanned, String>> = std::thread::scope(|s| {
            let handles: Vec<_> = cuts
                .iter()
                .enumerate()
                .map(|(i, range)| {
                    let range = if i == 0 {
                        layout.table_start..range.end
                    } else {
                        range.clone()
                    };
                    s.spawn(move || scan_part(layout, range, per_part))
                })
                .collect();
            handles
                .into_iter()
                .map(|h| h.join().unwrap_or_else(|p| std::panic::resume_unwind(p)))
                .collect()
        });
        if scanned.iter().all(|s| s.is_ok()) {
            return Ok(finished(
                layout,
                joined(scanned.into_iter().map(|s| s.expect("checked")).collect()),
                budget,
            ));
        }
    }
    scan_part(layout, layout.table_start..bytes, budget).map(|s| finished(layout, s, budget))
}

/// The table's findings, with markers after its last sample moved onto it.
fn finished(layout: &Layout, mut scanned: Scanned, budget: usize) -> Scanned {
    let last = scanned.rows.saturating_sub(1) as i64;
    for e in &mut scanned.events {
        e.sample = e.sample.min(last);
    }
    if scanned.empty_rows > 0 {
        tracing::info!(
            "{}: {} rows without a value in any channel read are not samples (`skip_empty_rows`)",
            layout.input.path().display(),
            scanned.empty_rows
        );
    }
    if scanned.held.is_none() {
        tracing::info!(
            "{}: over {} MiB of samples: parsed again as it is replayed",
            layout.input.path().display(),
            budget >> 20
        );
    }
    scanned
}

/// `parts` byte ranges covering `data_start..bytes`, each from the start of a line.
fn line_cuts(layout: &Layout, data_start: u64, bytes: u64, parts: u64) -> std::io::Result<Vec<Range<u64>>> {
    let mut file = BufReader::new(layout.input.reader()?);
    let mut starts = vec![data_start];
    let mut line = Vec::new();
    for i in 1..parts {
        let at = data_start + (bytes - data_start) * i / parts;
        if at <= *starts.last().expect("one start") {
            continue;
        }
        // The line break at or after `at - 1`: the next line starts after it.
        file.seek(SeekFrom::Start(at - 1))?;
        line.clear();
        let n = file.by_ref().take(MAX_LINE_BYTES + 2).read_until(b'\n', &mut line)? as u64;
        let next = at - 1 + n;
        if line.last() == Some(&b'\n') && next < bytes && next > *starts.last().expect("one start") {
            starts.push(next);
        }
    }
    starts.push(bytes);
    Ok(starts.windows(2).map(|w| w[0]..w[1]).collect())
}

/// The parts' findings as one: rows counted on, markers moved to the table's sample numbers,
/// values kept when every part kept them.
fn joined(parts: Vec<Scanned>) -> Scanned {
    let mut held = parts.iter().all(|p| p.held.is_some()).then(Vec::new);
    let (mut rows, mut events, mut empty_rows) = (0, Vec::new(), 0);
    for part in parts {
        empty_rows += part.empty_rows;
        let first = rows as i64;
        events.extend(part.events.into_iter().map(|e| Event {
            sample: e.sample + first,
            ..e
        }));
        if let (Some(held), Some(blocks)) = (&mut held, part.held) {
            held.extend(blocks);
        }
        rows += part.rows;
    }
    Scanned {
        rows,
        events,
        held,
        empty_rows,
    }
}

/// Reads the rows in bytes `range` (from the table's start, or from a line after the header
/// row), keeping the values while they fit `budget` bytes.
fn scan_part(layout: &Layout, range: Range<u64>, budget: usize) -> std::result::Result<Scanned, String> {
    let mut blocks = TableBlocks::open_range(layout.clone(), range, None).map_err(|e| e.to_string())?;
    let (mut held, mut held_bytes, mut values) = (Some(Vec::new()), 0, Vec::new());
    let (mut samples, mut events) = (Vec::new(), Vec::new());
    loop {
        samples.clear();
        if !blocks.next_rows(&mut values, &mut samples, Some(&mut events))? {
            break;
        }
        held_bytes += values.len() * 4;
        if held_bytes > budget {
            held = None;
        }
        match &mut held {
            Some(held) if !values.is_empty() => held.push(std::mem::take(&mut values)),
            _ => values.clear(),
        }
    }
    Ok(Scanned {
        rows: blocks.next,
        events,
        held,
        empty_rows: blocks.empty_rows,
    })
}

/// The picked columns of a table, [`BLOCK_ROWS`] rows at a time.
pub(super) struct TableBlocks {
    reader: arrow::csv::reader::BufReader<Box<dyn BufRead + Send>>,
    layout: Layout,
    /// Rows in the table, when counted.
    total: Option<u64>,
    /// Next sample to read, counted from the start of the range read.
    next: u64,
    /// Data rows read (samples, marker rows and rows without values).
    rows_read: u64,
    /// Rows without a value in any picked column (nor a marker) left out.
    empty_rows: u64,
}

impl TableBlocks {
    /// Every row of the table (`total` of them, when counted).
    pub fn open(layout: Layout, total: Option<u64>) -> Result<TableBlocks> {
        let start = layout.table_start;
        TableBlocks::open_range(layout, start..u64::MAX, total)
    }

    /// The rows in bytes `range` of the file: from the table's start (the header row first, when
    /// the layout has one), or from a line after the header row.
    fn open_range(layout: Layout, range: Range<u64>, total: Option<u64>) -> Result<TableBlocks> {
        let header = range.start == layout.table_start && layout.header;
        let mut file = layout
            .input
            .reader()
            .map_err(|e| EngineError::io(format!("opening {}", layout.input.path().display()), e))?;
        file.seek(SeekFrom::Start(range.start))
            .map_err(|e| EngineError::io(format!("reading {}", layout.input.path().display()), e))?;
        let part: Box<dyn BufRead + Send> = Box::new(BufReader::with_capacity(1 << 20, file.take(range.end - range.start)));
        // Every column as text: cells are trimmed and parsed here. Only the picked columns and
        // the markers are built (`layout.read`).
        let fields: Vec<Field> = (0..layout.names.len())
            .map(|i| Field::new(format!("c{i}"), DataType::Utf8, true))
            .collect();
        let reader = arrow::csv::ReaderBuilder::new(Arc::new(arrow::datatypes::Schema::new(fields)))
            .with_format(layout.format.clone().with_header(header))
            .with_projection(layout.read.clone())
            .with_batch_size(BLOCK_ROWS)
            .build_buffered(part)
            .map_err(|e| EngineError::Runtime(format!("{}: {e}", layout.input.path().display())))?;
        Ok(TableBlocks {
            reader,
            layout,
            total,
            next: 0,
            rows_read: 0,
            empty_rows: 0,
        })
    }

    /// Appends the next block's picked values to `rows` and sample numbers to `samples`, and
    /// (when asked) the markers to `events`; false at the end. A row whose picked cells are all
    /// empty but whose marker cell is set (a marker row, as Muse's Mind Monitor writes its
    /// `Elements`) is not a sample: its marker goes on the next sample.
    fn next_rows(
        &mut self,
        rows: &mut Vec<f32>,
        samples: &mut Vec<i64>,
        mut events: Option<&mut Vec<Event>>,
    ) -> std::result::Result<bool, String> {
        let path = self.layout.input.path().display();
        let Some(batch) = self.reader.next() else {
            return Ok(false);
        };
        let batch = batch.map_err(|e| format!("{path}: row {}: {e}", self.rows_read + 1))?;
        let text = |i: usize| -> &StringArray {
            let at = self
                .layout
                .read
                .binary_search(&i)
                .expect("picked and marker columns are read");
            batch.column(at).as_any().downcast_ref().expect("columns are read as text")
        };
        let picked: Vec<&StringArray> = self.layout.picked.iter().map(|&i| text(i)).collect();
        let markers = self.layout.marker.map(text);
        rows.reserve(batch.num_rows() * picked.len());
        let first = self.next;
        for r in 0..batch.num_rows() {
            let row = self.rows_read + r as u64;
            let label = markers
                .map(|m| cell(m, r))
                .filter(|c| !c.is_empty() && number(c, self.layout.decimal_comma) != Some(0.0));
            if let (Some(events), Some(label)) = (events.as_deref_mut(), label) {
                events.push(Event {
                    sample: self.next as i64,
                    label: label.to_string(),
                    duration_s: 0.0,
                });
            }
            if picked.iter().all(|c| cell(c, r).is_empty()) {
                if label.is_some() {
                    continue;
                }
                if self.layout.skip_empty_rows {
                    self.empty_rows += 1;
                    continue;
                }
                return Err(format!(
                    "{path}: data row {} (sample {}): no value in any channel read (a row of another stream, in a \
                     file that interleaves several? `skip_empty_rows = true` leaves such rows out)",
                    row + 1,
                    self.next
                ));
            }
            for (c, column) in picked.iter().enumerate() {
                let cell = cell(column, r);
                let v = number(cell, self.layout.decimal_comma).ok_or_else(|| {
                    format!(
                        "{path}: data row {} (sample {}), column `{}`: `{cell}` is not a number",
                        row + 1,
                        self.next,
                        self.layout.names[self.layout.picked[c]]
                    )
                })?;
                rows.push(v as f32);
            }
            self.next += 1;
        }
        samples.extend(first as i64..self.next as i64);
        self.rows_read += batch.num_rows() as u64;
        Ok(true)
    }
}

/// `cell` as a number, with `,` as the decimal separator when `decimal_comma`.
pub(super) fn number(cell: &str, decimal_comma: bool) -> Option<f64> {
    if !decimal_comma || !cell.contains(',') {
        return cell.parse().ok();
    }
    let mut buf = [0u8; 64];
    match buf.get_mut(..cell.len()) {
        Some(dotted) => {
            for (d, c) in dotted.iter_mut().zip(cell.bytes()) {
                *d = if c == b',' { b'.' } else { c };
            }
            std::str::from_utf8(dotted).ok()?.parse().ok()
        }
        None => cell.replace(',', ".").parse().ok(),
    }
}

/// Row `r` of `column`, without the blanks around it or a UTF-8 byte-order mark (the first cell
/// of a file without a header row, as Excel saves it).
fn cell(column: &StringArray, r: usize) -> &str {
    if column.is_null(r) {
        return "";
    }
    let text = column.value(r).trim_ascii();
    text.strip_prefix('\u{feff}').unwrap_or(text)
}

impl Blocks for TableBlocks {
    fn read_block(&mut self, rows: &mut Vec<f32>, samples: &mut Vec<i64>) -> Result<bool> {
        let before = samples.len();
        // A block of marker rows only holds no sample: read on.
        let mut more = false;
        while self.next_rows(rows, samples, None).map_err(EngineError::Runtime)? {
            if samples.len() > before {
                more = true;
                break;
            }
        }
        // The check before the run counted the samples: a file that now holds others changed.
        match self.total {
            Some(total) if (more && self.next > total) || (!more && self.next < total) => Err(EngineError::Runtime(format!(
                "{}: {} samples where the check before the run counted {total} (the file changed while being read)",
                self.layout.input.path().display(),
                if more {
                    format!("over {total}")
                } else {
                    self.next.to_string()
                }
            ))),
            _ => Ok(more),
        }
    }

    fn next_sample(&self) -> Option<i64> {
        match self.total {
            Some(total) => (self.next < total).then_some(self.next as i64),
            None => Some(self.next as i64),
        }
    }

    fn location(&self) -> String {
        format!("data row {}", self.rows_read + 1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::csv_source::head::read_head;
    use std::path::{Path, PathBuf};

    /// A table of `rows` samples (channels `A`, `B`, a marker every 37th row), with comment and
    /// blank lines among the rows and marker rows (empty `A` and `B`) at the start, every 97th
    /// sample and the end; the values and markers it holds, and the data row (counted from 1)
    /// of the damaged sample.
    struct Table {
        path: PathBuf,
        values: Vec<f32>,
        markers: Vec<(i64, String)>,
        damaged_at: Option<u64>,
    }

    fn table(dir: &Path, rows: usize, damaged_row: Option<usize>, header: bool) -> Table {
        // Without a header row, after a line of EmotivPRO's `key:value` pairs (skipped).
        let mut text = String::new();
        if !header {
            text += "title:t, sampling rate:250, samples:3000,\n";
        }
        text += "%OpenBCI Raw EXG Data\n%Sample Rate = 250 Hz\n";
        if header {
            text += "Sample Index, A, B, Marker\n";
        }
        let (mut values, mut markers, mut data_rows, mut damaged_at) = (Vec::new(), Vec::new(), 0u64, None);
        // A marker row: its marker goes on the next sample (the last one at the end).
        let marker_row = |text: &mut String, data_rows: &mut u64, markers: &mut Vec<(i64, String)>, next: usize, label: &str| {
            *text += &format!(",,  , {label}\n");
            *data_rows += 1;
            markers.push((next.min(rows - 1) as i64, label.to_string()));
        };
        marker_row(&mut text, &mut data_rows, &mut markers, 0, "start");
        for r in 0..rows {
            let (a, b) = (r as f64 * 0.37 - 100.0, (r as f64 * 0.011).sin() * 1e3);
            values.extend([a as f32, b as f32]);
            let marker = if r % 37 == 5 { format!("{}", r % 4 + 1) } else { "0".into() };
            let a = if damaged_row == Some(r) {
                damaged_at = Some(data_rows + 1);
                "1.2.3".to_string()
            } else {
                format!("{a}")
            };
            text += &format!("{r}, {a}, {b:.9}, {marker}\n");
            data_rows += 1;
            if marker != "0" {
                markers.push((r as i64, marker));
            }
            if r % 101 == 50 {
                text += "\n%a comment among the rows\n";
            }
            if r % 97 == 10 {
                marker_row(&mut text, &mut data_rows, &mut markers, r + 1, "blink");
            }
        }
        marker_row(&mut text, &mut data_rows, &mut markers, rows, "end");
        let path = dir.join("t.csv");
        std::fs::write(&path, text).unwrap();
        Table {
            path,
            values,
            markers,
            damaged_at,
        }
    }

    fn layout(path: &Path, header: bool) -> (Layout, Head) {
        let input = SharedFile::open(path).unwrap();
        let head = read_head(&input, b'%', None, header, None).unwrap();
        let options = CellOptions {
            comment: b'%',
            decimal_comma: false,
            skip_empty_rows: false,
        };
        (Layout::new(&input, &head, options, vec![1, 2], Some(3)), head)
    }

    fn events(s: &Scanned) -> Vec<(i64, String)> {
        s.events.iter().map(|e| (e.sample, e.label.clone())).collect()
    }

    #[test]
    fn a_table_read_in_parts_equals_the_values_written() {
        for header in [true, false] {
            read_in_parts(header);
        }
    }

    fn read_in_parts(header: bool) {
        let dir = tempfile::tempdir().unwrap();
        let Table {
            path, values, markers, ..
        } = table(dir.path(), 3000, None, header);
        let (layout, head) = layout(&path, header);
        assert_eq!(head.skipped.len(), !header as usize);
        assert_eq!(head.table_start, if header { 0 } else { 42 });
        let bytes = std::fs::read(&path).unwrap();
        let cuts = line_cuts(&layout, head.data_start, head.bytes, 7).unwrap();
        assert_eq!(cuts.len(), 7);
        assert_eq!((cuts[0].start, cuts[6].end), (head.data_start, bytes.len() as u64));
        for w in cuts.windows(2) {
            assert_eq!(w[0].end, w[1].start);
            assert_eq!(bytes[w[1].start as usize - 1], b'\n', "a part starts at a line");
        }
        for parts in [1, 2, 3, 7] {
            let s = scan_in_parts(&layout, head.data_start, head.bytes, parts, HELD_SAMPLES_BYTES).unwrap();
            assert_eq!(s.rows, 3000, "{parts} parts, header {header}");
            assert_eq!(events(&s), markers, "{parts} parts, header {header}");
            // `{b:.9}` is b to 9 decimals: within 1e-9 of the f64 value, the same f32 but where
            // that rounding crosses an f32 boundary (one ulp).
            let held = s.held.expect("kept").concat();
            assert_eq!(held.len(), values.len());
            for (i, (g, w)) in held.iter().zip(&values).enumerate() {
                assert!(
                    (g - w).abs() <= w.abs() * f32::EPSILON,
                    "{parts} parts, value {i}: {g} vs {w}"
                );
            }
        }
    }

    #[test]
    fn numbers_with_a_decimal_comma_equal_their_dotted_form() {
        for (cell, want) in [
            ("1,25", Some(1.25)),
            ("-0,5e3", Some(-500.0)),
            ("7", Some(7.0)),
            ("1,2,3", None),
            ("", None),
        ] {
            assert_eq!(number(cell, true), want, "{cell}");
        }
        let long = format!("0,{}1", "0".repeat(70));
        assert_eq!(number(&long, true), format!("0.{}1", "0".repeat(70)).parse().ok());
        assert_eq!(number("1,25", false), None, "a comma is not a decimal separator by default");
    }

    #[test]
    fn a_damaged_row_in_a_later_part_is_named_as_from_the_start() {
        let dir = tempfile::tempdir().unwrap();
        let t = table(dir.path(), 3000, Some(2500), true);
        let (layout, head) = layout(&t.path, true);
        let one = scan_in_parts(&layout, head.data_start, head.bytes, 1, HELD_SAMPLES_BYTES)
            .err()
            .unwrap();
        let row = t.damaged_at.unwrap();
        assert!(row > 2501, "marker rows are data rows");
        assert!(
            one.contains(&format!("data row {row} (sample 2500), column `A`: `1.2.3`")),
            "{one}"
        );
        let four = scan_in_parts(&layout, head.data_start, head.bytes, 4, HELD_SAMPLES_BYTES)
            .err()
            .unwrap();
        assert_eq!(four, one);
    }

    #[test]
    fn values_over_the_budget_are_parsed_again_by_the_replay() {
        let dir = tempfile::tempdir().unwrap();
        let Table { path, values, .. } = table(dir.path(), 3000, None, true);
        let (layout, head) = layout(&path, true);
        for parts in [1, 3] {
            let s = scan_in_parts(&layout, head.data_start, head.bytes, parts, 4096).unwrap();
            assert!(s.held.is_none(), "{parts} parts");
            assert_eq!(s.rows, 3000);
        }
        let mut blocks = TableBlocks::open(layout.clone(), Some(3000)).unwrap();
        let (mut rows, mut samples) = (Vec::new(), Vec::new());
        while blocks.read_block(&mut rows, &mut samples).unwrap() {}
        // A file that changed between the check and the replay is an error, not fewer or more rows.
        for counted in [2999, 3001] {
            let mut blocks = TableBlocks::open(layout.clone(), Some(counted)).unwrap();
            let err = loop {
                match blocks.read_block(&mut Vec::new(), &mut Vec::new()) {
                    Ok(true) => {}
                    Ok(false) => panic!("{counted}: the replay ended without an error"),
                    Err(e) => break e.to_string(),
                }
            };
            assert!(
                err.contains(&format!("the check before the run counted {counted} (the file changed")),
                "{err}"
            );
        }
        assert_eq!(samples, (0..3000).collect::<Vec<i64>>());
        for (g, w) in rows.iter().zip(&values) {
            assert!((g - w).abs() <= w.abs() * f32::EPSILON);
        }
        assert_eq!(rows.len(), values.len());
    }
}
