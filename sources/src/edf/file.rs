//! An open EDF/BDF file: its header, its complete data records, the time each record starts,
//! its annotations, and the decoding of one signal of one record to physical values.

use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};

use super::header::Header;
use super::tal::{self, Annotation};

/// An EDF, EDF+, BDF or BDF+ file opened for reading.
pub struct EdfFile {
    /// The file.
    pub path: PathBuf,
    /// Its header.
    pub header: Header,
    /// Complete data records available.
    pub records: usize,
    /// Start of each record in seconds from the first record's start (EDF+D / BDF+D records may
    /// have gaps between them; otherwise `r × record duration`).
    pub record_starts: Vec<f64>,
    /// Every annotation, onsets in seconds from the first record's start, sorted by onset.
    pub annotations: Vec<Annotation>,
    /// When the file ends inside a data record and that was allowed: what was cut.
    pub truncated: Option<String>,
    file: File,
}

impl EdfFile {
    /// Opens and checks `path`. A file that ends inside a data record is an error naming the
    /// record, unless `allow_truncated` (then only the complete records are read).
    pub fn open(path: &Path, allow_truncated: bool) -> Result<EdfFile, String> {
        let mut file = File::open(path).map_err(|e| format!("{}: {e}", path.display()))?;
        let len = file.metadata().map_err(|e| format!("{}: {e}", path.display()))?.len();
        let mut fixed = vec![0u8; 256];
        let got = read_up_to(&mut file, &mut fixed).map_err(|e| format!("{}: {e}", path.display()))?;
        fixed.truncate(got);
        if got < 256 {
            return Err(format!(
                "{}: {got} bytes, shorter than an EDF/BDF header (256 bytes)",
                path.display()
            ));
        }
        super::header::check_version(path, &fixed)?;
        let ns: usize = std::str::from_utf8(&fixed[252..256])
            .ok()
            .and_then(|s| s.trim().parse().ok())
            .ok_or_else(|| super::header::header_error(path, "number of signals", "not a number"))?;
        if 256 * (ns as u64 + 1) > len {
            return Err(super::header::header_error(
                path,
                "number of signals",
                format!(
                    "{ns} signals need a {}-byte header, but the file has {len} bytes",
                    256 * (ns as u64 + 1)
                ),
            ));
        }
        let mut signals = vec![0u8; 256 * ns];
        let got = read_up_to(&mut file, &mut signals).map_err(|e| format!("{}: {e}", path.display()))?;
        signals.truncate(got);
        let header = Header::parse(path, &fixed, &signals)?;
        let record_bytes = header.record_bytes() as u64;
        let data = len.saturating_sub(header.header_bytes as u64);
        let complete = data
            .checked_div(record_bytes)
            .map_or(header.declared_records.max(0) as usize, |n| n as usize);
        let mut truncated = None;
        let records = if header.declared_records >= 0 {
            let declared = header.declared_records as usize;
            if complete < declared {
                let have = data - complete as u64 * record_bytes;
                let why = format!(
                    "{}: data record {} of {declared} is truncated: the file ends after {have} of its {record_bytes} bytes \
                     ({complete} complete records, {:.3} s)",
                    path.display(),
                    complete + 1,
                    complete as f64 * header.record_duration_s
                );
                if !allow_truncated {
                    return Err(format!("{why}; set `allow_truncated = true` to read the complete records"));
                }
                tracing::warn!("{why}; reading the {complete} complete records");
                truncated = Some(why);
                complete
            } else {
                if complete > declared {
                    tracing::warn!(
                        "{}: {} bytes after the {declared} declared data records are ignored",
                        path.display(),
                        data - declared as u64 * record_bytes
                    );
                }
                declared
            }
        } else {
            if record_bytes > 0 && data % record_bytes != 0 {
                let why = format!(
                    "{}: the record count is not declared and the data ({data} bytes) is not a whole number of \
                     {record_bytes}-byte records; the last {} bytes are a partial record",
                    path.display(),
                    data % record_bytes
                );
                if !allow_truncated {
                    return Err(format!("{why}; set `allow_truncated = true` to read the complete records"));
                }
                truncated = Some(why);
            }
            complete
        };
        let mut f = EdfFile {
            path: path.to_path_buf(),
            header,
            records,
            record_starts: Vec::new(),
            annotations: Vec::new(),
            truncated,
            file,
        };
        f.read_annotations()?;
        Ok(f)
    }

    /// Reads every record's annotation signal(s): the record start times and the annotations.
    fn read_annotations(&mut self) -> Result<(), String> {
        let dur = self.header.record_duration_s;
        let ann: Vec<usize> = (0..self.header.signals.len())
            .filter(|&i| self.header.signals[i].is_annotation)
            .collect();
        let plus = !matches!(self.header.format, super::Format::Edf | super::Format::Bdf);
        let mut starts = Vec::with_capacity(self.records);
        let mut all = Vec::new();
        for r in 0..self.records {
            let mut start = None;
            for (n, &i) in ann.iter().enumerate() {
                let bytes = self.read_signal_bytes(r, i)?;
                let parsed = tal::parse_record(&bytes, r + 1).map_err(|m| format!("{}: {m}", self.path.display()))?;
                if n == 0 {
                    start = parsed.record_start_s;
                }
                all.extend(parsed.annotations);
            }
            if plus && !ann.is_empty() && start.is_none() && self.header.record_duration_s > 0.0 {
                return Err(format!(
                    "{}: data record {} has no time-keeping annotation (EDF+ requires one per record)",
                    self.path.display(),
                    r + 1
                ));
            }
            starts.push(start.unwrap_or(r as f64 * dur));
        }
        // Times relative to the first record (its time-keeping onset is the sub-second start).
        let origin = starts.first().copied().unwrap_or(0.0);
        for s in &mut starts {
            *s -= origin;
        }
        for a in &mut all {
            a.onset_s -= origin;
        }
        if !self.header.format.discontinuous() {
            // Continuous files: records are back to back whatever the time-keeping says.
            for (r, s) in starts.iter_mut().enumerate() {
                *s = r as f64 * dur;
            }
        }
        all.sort_by(|a, b| a.onset_s.total_cmp(&b.onset_s));
        self.record_starts = starts;
        self.annotations = all;
        Ok(())
    }

    /// The raw bytes of signal `i` in record `r` (0-based).
    pub fn read_signal_bytes(&mut self, r: usize, i: usize) -> Result<Vec<u8>, String> {
        let h = &self.header;
        let n = h.signals[i].samples_per_record * h.format.sample_bytes();
        let at = h.header_bytes as u64 + r as u64 * h.record_bytes() as u64 + h.signal_offset(i) as u64;
        self.read_at(at, n, r)
    }

    /// The raw bytes of record `r` (0-based).
    pub fn read_record(&mut self, r: usize) -> Result<Vec<u8>, String> {
        let h = &self.header;
        let n = h.record_bytes();
        let at = h.header_bytes as u64 + r as u64 * n as u64;
        self.read_at(at, n, r)
    }

    /// `n` bytes at byte `at`, inside record `r` (for the message).
    fn read_at(&mut self, at: u64, n: usize, r: usize) -> Result<Vec<u8>, String> {
        let mut buf = vec![0u8; n];
        self.file
            .seek(SeekFrom::Start(at))
            .and_then(|_| self.file.read_exact(&mut buf))
            .map_err(|e| format!("{}: reading data record {}: {e}", self.path.display(), r + 1))?;
        Ok(buf)
    }

    /// Signal `i`'s samples in `record` (the bytes of one whole record), as physical values.
    pub fn decode(&self, record: &[u8], i: usize, out: &mut Vec<f64>) {
        let h = &self.header;
        let s = &h.signals[i];
        let gain = s.gain();
        let at = h.signal_offset(i);
        let sb = h.format.sample_bytes();
        let bytes = &record[at..at + s.samples_per_record * sb];
        out.clear();
        if sb == 2 {
            out.extend(
                bytes
                    .chunks_exact(2)
                    .map(|b| gain * (i16::from_le_bytes([b[0], b[1]]) as i32 - s.digital_min) as f64 + s.physical_min),
            );
        } else {
            out.extend(bytes.chunks_exact(3).map(|b| {
                let v = i32::from_le_bytes([0, b[0], b[1], b[2]]) >> 8; // sign-extends the 24 bits
                gain * (v - s.digital_min) as f64 + s.physical_min
            }));
        }
    }

    /// Index of the (non-annotation) signal labelled `label`.
    pub fn signal_index(&self, label: &str) -> Option<usize> {
        self.header.signals.iter().position(|s| !s.is_annotation && s.label == label)
    }
}

fn read_up_to(f: &mut File, buf: &mut [u8]) -> std::io::Result<usize> {
    let mut got = 0;
    while got < buf.len() {
        match f.read(&mut buf[got..])? {
            0 => break,
            n => got += n,
        }
    }
    Ok(got)
}
