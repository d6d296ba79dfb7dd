//! Reading raw FIF files (Neuromag/Elekta/MEGIN MEG systems and MNE-Python's `raw.save`): the
//! tag stream (big-endian `kind, type, size, next` headers, blocks opened and closed by tags),
//! the measurement info (channels with calibrations, units and types, rate), the raw data
//! buffers and skips, MNE's annotations, and the link to the next file of a split recording.
//!
//! Data values are not kept: [`FifRecording::buffers`] lists where each buffer lies, and
//! [`FifRecording::read_buffer`] decodes one when the replay reaches it.
//!
//! A gzip-compressed file (`raw.fif.gz`, which MNE writes and reads when a name ends in `.gz`)
//! is read from its inflated copy ([`crate::gzip_file`]), kept while the recording is.

use crate::gzip_file::{ReadSeek, SharedFile};
use crate::MAX_CHANNELS;
use std::io::{BufReader, Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};

// Block kinds.
const FIFFB_MEAS: i32 = 100;
const FIFFB_MEAS_INFO: i32 = 101;
const FIFFB_RAW_DATA: i32 = 102;
const FIFFB_CONTINUOUS_DATA: i32 = 112;
const FIFFB_CH_INFO: i32 = 113;
const FIFFB_REF: i32 = 118;
const FIFFB_IAS_RAW_DATA: i32 = 119;
const FIFFB_MNE_ANNOTATIONS: i32 = 3810;
// Tag kinds.
const FIFF_FILE_ID: i32 = 100;
const FIFF_BLOCK_START: i32 = 104;
const FIFF_BLOCK_END: i32 = 105;
const FIFF_REF_ROLE: i32 = 115;
const FIFF_REF_FILE_NUM: i32 = 117;
const FIFF_REF_FILE_NAME: i32 = 118;
const FIFF_NCHAN: i32 = 200;
const FIFF_SFREQ: i32 = 201;
const FIFF_CH_INFO: i32 = 203;
const FIFF_COMMENT: i32 = 206;
const FIFF_FIRST_SAMPLE: i32 = 208;
const FIFF_CH_DACQ_NAME: i32 = 258;
const FIFF_DATA_BUFFER: i32 = 300;
const FIFF_DATA_SKIP: i32 = 301;
const FIFF_DATA_SKIP_SAMP: i32 = 303;
const FIFF_MNE_BASELINE_MIN: i32 = 3568;
const FIFF_MNE_BASELINE_MAX: i32 = 3569;
// Data types.
const FIFFT_SHORT: u32 = 2;
const FIFFT_INT: u32 = 3;
const FIFFT_FLOAT: u32 = 4;
const FIFFT_DOUBLE: u32 = 5;
const FIFFT_STRING: u32 = 10;
const FIFFT_DAU_PACK16: u32 = 16;
const FIFFT_CH_INFO_STRUCT: u32 = 30;
// Role of a reference to another file.
const FIFFV_ROLE_NEXT_FILE: i32 = 2;

/// Largest number of tags read from one file (a guard against pointer loops).
const MAX_TAGS: usize = 50_000_000;
/// Largest number of split files followed.
const MAX_SPLITS: usize = 1000;
/// Largest data buffer accepted, bytes (MNE writes about a second per buffer).
const MAX_BUFFER_BYTES: u64 = 1 << 30;
/// Skipped samples (read as zeros) are replayed in buffers of at most this many samples.
const SKIP_PIECE: u64 = 1 << 16;
/// Largest number of skipped samples in one recording (about 50 days at 1 kHz): a file that
/// claims more is lying, and its zeros would take days to replay.
const MAX_SKIPPED_SAMPLES: u64 = 1 << 32;

/// One channel of the measurement info.
#[derive(Clone, Debug, PartialEq)]
pub struct FifChannel {
    /// Its name (the extended name, when the file has one).
    pub name: String,
    /// MNE's type name: `mag`, `grad`, `eeg`, `eog`, `ecg`, `emg`, `stim`, `misc`, `resp`,
    /// `ref_meg`, ...
    pub kind: String,
    /// Its SI unit (`T`, `T/m`, `V`; empty for none).
    pub unit: String,
    /// Stored value × `range × cal` is the value in `unit`.
    pub scale: f64,
}

/// How a buffer's values are stored.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SampleType {
    /// Big-endian i16 (`short`, `dau_pack16`).
    Short,
    /// Big-endian i32.
    Int,
    /// Big-endian f32.
    Float,
    /// Big-endian f64.
    Double,
}

impl SampleType {
    fn of(t: u32) -> Option<SampleType> {
        Some(match t {
            FIFFT_SHORT | FIFFT_DAU_PACK16 => SampleType::Short,
            FIFFT_INT => SampleType::Int,
            FIFFT_FLOAT => SampleType::Float,
            FIFFT_DOUBLE => SampleType::Double,
            _ => return None,
        })
    }

    /// Bytes per value.
    pub fn bytes(self) -> usize {
        match self {
            SampleType::Short => 2,
            SampleType::Int | SampleType::Float => 4,
            SampleType::Double => 8,
        }
    }

    fn decode(self, b: &[u8]) -> f64 {
        match self {
            SampleType::Short => i16::from_be_bytes([b[0], b[1]]) as f64,
            SampleType::Int => i32::from_be_bytes(b[..4].try_into().unwrap()) as f64,
            SampleType::Float => f32::from_be_bytes(b[..4].try_into().unwrap()) as f64,
            SampleType::Double => f64::from_be_bytes(b[..8].try_into().unwrap()),
        }
    }
}

/// A stretch of raw data: a buffer in a file, or a skip (zeros) of so many samples.
#[derive(Clone, Debug, PartialEq)]
pub enum Buffer {
    /// Values at `offset` of split file `file`, `samples` × channels, in `kind`.
    Data {
        /// Index into [`FifRecording::files`].
        file: usize,
        /// Byte offset of the values.
        offset: u64,
        /// Samples in it.
        samples: u64,
        /// How they are stored.
        kind: SampleType,
    },
    /// Samples the recording skipped (MNE reads them as zeros).
    Skip(u64),
}

impl Buffer {
    /// Samples it covers.
    pub fn samples(&self) -> u64 {
        match self {
            Buffer::Data { samples, .. } | Buffer::Skip(samples) => *samples,
        }
    }
}

/// An annotation, MNE's way: onset (seconds), duration (seconds), description.
#[derive(Clone, Debug, PartialEq)]
pub struct FifAnnotation {
    /// Seconds from the first sample.
    pub onset_s: f64,
    /// Seconds.
    pub duration_s: f64,
    /// Its text.
    pub description: String,
}

/// A raw FIF recording: its channels, rate, data buffers over every split file, annotations.
pub struct FifRecording {
    /// The files, the first given and the splits that follow it.
    pub files: Vec<PathBuf>,
    /// Sampling rate, Hz.
    pub sfreq: f64,
    /// The channels, in file order.
    pub channels: Vec<FifChannel>,
    /// The first sample's index in the acquisition (MNE's `first_samp`).
    pub first_samp: i64,
    /// The data, in order.
    pub buffers: Vec<Buffer>,
    /// MNE annotations, onsets relative to the first sample.
    pub annotations: Vec<FifAnnotation>,
    /// Per file of [`FifRecording::files`], what reads it (its inflated copy where it is
    /// gzip-compressed).
    inputs: Vec<SharedFile>,
    open: Option<(usize, BufReader<Box<dyn ReadSeek>>)>,
}

/// A tag header.
struct Tag {
    kind: i32,
    ty: u32,
    size: u64,
    pos: u64,
}

/// What one file contributed.
#[derive(Default)]
struct FileParts {
    sfreq: Option<f64>,
    nchan: Option<usize>,
    channels: Vec<FifChannel>,
    dacq_names: Vec<Option<String>>,
    first_samp: Option<i64>,
    buffers: Vec<Buffer>,
    annotations: Vec<FifAnnotation>,
    next_file: Option<PathBuf>,
}

impl FifRecording {
    /// Opens `path` and every split file it links to.
    pub fn open(path: &Path) -> Result<FifRecording, String> {
        let mut files = vec![path.to_path_buf()];
        let mut rec = FifRecording {
            files: Vec::new(),
            sfreq: 0.0,
            channels: Vec::new(),
            first_samp: 0,
            buffers: Vec::new(),
            annotations: Vec::new(),
            inputs: Vec::new(),
            open: None,
        };
        let mut i = 0;
        while i < files.len() {
            let file_index = i;
            let input = SharedFile::open(&files[i])?;
            let parts = read_file(&input, file_index)?;
            rec.inputs.push(input);
            let at = |field: &str, m: String| format!("{}: {field}: {m}", files[i].display());
            if i == 0 {
                let sfreq = parts
                    .sfreq
                    .ok_or_else(|| at("FIFF_SFREQ", "the measurement info has no sampling rate".into()))?;
                if !(sfreq.is_finite() && sfreq > 0.0 && sfreq <= 1e7) {
                    return Err(at("FIFF_SFREQ", format!("{sfreq} Hz is not a sampling rate")));
                }
                let nchan = parts.nchan.unwrap_or(parts.channels.len());
                if nchan != parts.channels.len() || nchan == 0 {
                    return Err(at(
                        "FIFF_NCHAN",
                        format!("{nchan} channels, but {} channel infos", parts.channels.len()),
                    ));
                }
                rec.sfreq = sfreq;
                rec.channels = parts.channels.clone();
                for (c, name) in rec.channels.iter_mut().zip(&parts.dacq_names) {
                    if let Some(n) = name {
                        c.name = n.clone();
                    }
                }
                rec.first_samp = parts.first_samp.unwrap_or(0);
                // MNE keeps annotation onsets on the acquisition's clock (from the measurement
                // date, or with none, from sample 0 of the acquisition): the data starts at
                // `first_samp`.
                let shift = rec.first_samp as f64 / sfreq;
                rec.annotations = parts
                    .annotations
                    .iter()
                    .map(|a| FifAnnotation {
                        onset_s: a.onset_s - shift,
                        ..a.clone()
                    })
                    .collect();
            } else if parts.channels.len() != rec.channels.len() {
                return Err(at(
                    "FIFF_NCHAN",
                    format!(
                        "this split file has {} channels, the first {}",
                        parts.channels.len(),
                        rec.channels.len()
                    ),
                ));
            }
            if parts.buffers.is_empty() && i == 0 {
                return Err(format!(
                    "{}: no raw data block (is it an epochs or evoked file?)",
                    files[i].display()
                ));
            }
            rec.buffers.extend(parts.buffers);
            if let Some(next) = parts.next_file {
                if files.len() >= MAX_SPLITS || files.contains(&next) {
                    return Err(at("FIFF_REF_FILE_NAME", format!("split files loop or exceed {MAX_SPLITS}")));
                }
                if !next.exists() {
                    return Err(at(
                        "FIFF_REF_FILE_NAME",
                        format!("the next split file {} does not exist", next.display()),
                    ));
                }
                files.push(next);
            }
            i += 1;
        }
        rec.files = files;
        rec.annotate_skips();
        Ok(rec)
    }

    /// Adds a `BAD_ACQ_SKIP` annotation over each skip inside the data, as MNE's reader does
    /// (consecutive skip buffers are one skip).
    fn annotate_skips(&mut self) {
        let mut at = 0u64;
        let mut run: Option<(u64, u64)> = None;
        let mut skips = Vec::new();
        for b in &self.buffers {
            match b {
                Buffer::Skip(n) => run.get_or_insert((at, 0)).1 += n,
                Buffer::Data { .. } => skips.extend(run.take()),
            }
            at += b.samples();
        }
        skips.extend(run);
        self.annotations.extend(skips.into_iter().map(|(start, n)| FifAnnotation {
            onset_s: start as f64 / self.sfreq,
            duration_s: n as f64 / self.sfreq,
            description: "BAD_ACQ_SKIP".into(),
        }));
    }

    /// Total samples.
    pub fn samples(&self) -> u64 {
        self.buffers.iter().map(Buffer::samples).sum()
    }

    /// Decodes buffer `b` (scaled to each channel's unit) for the channels `picked`, appending
    /// rows of `picked.len()` values.
    pub fn read_buffer(&mut self, b: &Buffer, picked: &[usize], rows: &mut Vec<f64>) -> Result<(), String> {
        let nchan = self.channels.len();
        match *b {
            Buffer::Skip(n) => {
                rows.extend(std::iter::repeat_n(0.0, n as usize * picked.len()));
                Ok(())
            }
            Buffer::Data {
                file,
                offset,
                samples,
                kind,
            } => {
                if self.open.as_ref().is_none_or(|(f, _)| *f != file) {
                    let input = &self.inputs[file];
                    let f = input.reader().map_err(|e| format!("{}: {e}", input.path().display()))?;
                    self.open = Some((file, BufReader::new(f)));
                }
                let (_, reader) = self.open.as_mut().expect("opened above");
                let mut bytes = vec![0u8; samples as usize * nchan * kind.bytes()];
                reader
                    .seek(SeekFrom::Start(offset))
                    .and_then(|_| reader.read_exact(&mut bytes))
                    .map_err(|e| {
                        format!(
                            "{}: reading a data buffer at byte {offset}: {e} (the file changed since it was opened)",
                            self.files[file].display()
                        )
                    })?;
                let w = kind.bytes();
                for sample in bytes.chunks_exact(nchan * w) {
                    rows.extend(picked.iter().map(|&c| kind.decode(&sample[c * w..]) * self.channels[c].scale));
                }
                Ok(())
            }
        }
    }
}

/// MNE's type name and SI unit of a channel info's `kind` and `unit`.
fn type_and_unit(kind: i32, unit: i32) -> (String, String) {
    let unit = match unit {
        107 => "V",
        112 => "T",
        201 => "T/m",
        _ => "",
    };
    let kind = match kind {
        1 if unit == "T/m" => "grad",
        1 => "mag",
        2 => "eeg",
        3 => "stim",
        202 => "eog",
        302 => "emg",
        402 => "ecg",
        602 => "resp",
        301 => "ref_meg",
        802 => "seeg",
        902 => "ecog",
        _ => "misc",
    };
    // Trigger codes are not volts, whatever unit the file gives them.
    let unit = if kind == "stim" { "" } else { unit };
    (kind.to_string(), unit.to_string())
}

struct Reader {
    f: BufReader<Box<dyn ReadSeek>>,
    size: u64,
    path: PathBuf,
}

impl Reader {
    fn at(&self, pos: u64, m: &str) -> String {
        format!("{}: tag at byte {pos}: {m}", self.path.display())
    }

    fn header(&mut self, pos: u64) -> Result<(Tag, i32), String> {
        if pos + 16 > self.size {
            return Err(self.at(pos, "the file ends inside a tag header (truncated)"));
        }
        let mut b = [0u8; 16];
        self.f
            .seek(SeekFrom::Start(pos))
            .and_then(|_| self.f.read_exact(&mut b))
            .map_err(|e| self.at(pos, &e.to_string()))?;
        let kind = i32::from_be_bytes(b[0..4].try_into().unwrap());
        let ty = u32::from_be_bytes(b[4..8].try_into().unwrap());
        let size = i32::from_be_bytes(b[8..12].try_into().unwrap());
        let next = i32::from_be_bytes(b[12..16].try_into().unwrap());
        if size < 0 || pos + 16 + size as u64 > self.size {
            return Err(self.at(
                pos,
                &format!(
                    "tag {kind} claims {size} bytes, the file has {} left (truncated or not FIF)",
                    self.size - pos - 16
                ),
            ));
        }
        Ok((
            Tag {
                kind,
                ty,
                size: size as u64,
                pos,
            },
            next,
        ))
    }

    fn data(&mut self, tag: &Tag) -> Result<Vec<u8>, String> {
        let mut b = vec![0u8; tag.size as usize];
        self.f
            .seek(SeekFrom::Start(tag.pos + 16))
            .and_then(|_| self.f.read_exact(&mut b))
            .map_err(|e| self.at(tag.pos, &e.to_string()))?;
        Ok(b)
    }

    fn int(&mut self, tag: &Tag, what: &str) -> Result<i32, String> {
        let b = self.data(tag)?;
        if tag.ty != FIFFT_INT || b.len() < 4 {
            return Err(self.at(tag.pos, &format!("{what} is not an int")));
        }
        Ok(i32::from_be_bytes(b[..4].try_into().unwrap()))
    }

    fn floats(&mut self, tag: &Tag, what: &str) -> Result<Vec<f64>, String> {
        let b = self.data(tag)?;
        let kind = match tag.ty {
            FIFFT_FLOAT => SampleType::Float,
            FIFFT_DOUBLE => SampleType::Double,
            _ => return Err(self.at(tag.pos, &format!("{what} is not float or double (type {})", tag.ty))),
        };
        Ok(b.chunks_exact(kind.bytes()).map(|c| kind.decode(c)).collect())
    }

    fn string(&mut self, tag: &Tag, what: &str) -> Result<String, String> {
        let b = self.data(tag)?;
        if tag.ty != FIFFT_STRING {
            return Err(self.at(tag.pos, &format!("{what} is not a string")));
        }
        Ok(String::from_utf8_lossy(&b).trim_end_matches('\0').to_string())
    }
}

/// Walks the tags of one file, collecting what a raw recording needs.
fn read_file(input: &SharedFile, file_index: usize) -> Result<FileParts, String> {
    let path = input.path();
    let mut r = Reader {
        f: BufReader::new(input.reader().map_err(|e| format!("{}: {e}", path.display()))?),
        size: input.size(),
        path: path.to_path_buf(),
    };
    let (first, _) = r
        .header(0)
        .map_err(|_| format!("{}: not a FIF file (shorter than a tag)", path.display()))?;
    if first.kind != FIFF_FILE_ID {
        return Err(format!(
            "{}: not a FIF file (it does not start with a file id tag)",
            path.display()
        ));
    }
    let mut parts = FileParts::default();
    let mut blocks: Vec<i32> = Vec::new();
    let mut pos = 0u64;
    let mut tags = 0usize;
    // Skips (in buffers) wait for the next buffer, whose length they take, as MNE reads them;
    // one before the first buffer moves the first sample instead of adding zeros.
    let mut pending_skip: u64 = 0;
    let mut skipped: u64 = 0;
    let mut seen_buffer = false;
    let mut annotation = (Vec::new(), Vec::new(), Vec::new());
    let mut next_ref: (Option<i32>, Option<String>, Option<i32>) = (None, None, None);
    loop {
        tags += 1;
        if tags > MAX_TAGS {
            return Err(format!("{}: more than {MAX_TAGS} tags", path.display()));
        }
        let (tag, next) = r.header(pos)?;
        let parent = blocks.last().copied();
        let grandparent = blocks.len().checked_sub(2).map(|i| blocks[i]);
        match tag.kind {
            FIFF_BLOCK_START => {
                let kind = r.int(&tag, "a block start")?;
                if kind == FIFFB_CH_INFO {
                    parts.dacq_names.push(None);
                }
                if kind == FIFFB_REF {
                    next_ref = (None, None, None);
                }
                blocks.push(kind);
            }
            FIFF_BLOCK_END => {
                let ended = blocks.pop();
                if ended == Some(FIFFB_REF) && next_ref.0 == Some(FIFFV_ROLE_NEXT_FILE) {
                    let dir = path.parent().unwrap_or(Path::new("."));
                    let name = match (&next_ref.1, next_ref.2) {
                        (Some(n), _) => dir.join(n),
                        (None, Some(num)) => {
                            // MNE's naming of splits: NAME.fif, NAME-1.fif, NAME-2.fif ...
                            // (NAME.fif.gz, NAME.fif-1.gz, ... when compressed).
                            let name = path.file_name().unwrap_or_default().to_string_lossy();
                            let (stem, ext) = name.rsplit_once('.').unwrap_or((name.as_ref(), "fif"));
                            let base = stem
                                .rsplit_once('-')
                                .filter(|(_, n)| n.parse::<u32>().is_ok())
                                .map_or(stem, |(b, _)| b);
                            dir.join(format!("{base}-{num}.{ext}"))
                        }
                        (None, None) => {
                            return Err(r.at(tag.pos, "a reference to the next file names no file"));
                        }
                    };
                    parts.next_file = Some(name);
                }
            }
            FIFF_NCHAN if parent == Some(FIFFB_MEAS_INFO) && grandparent == Some(FIFFB_MEAS) => {
                let n = r.int(&tag, "FIFF_NCHAN")?;
                if n <= 0 || n as usize > MAX_CHANNELS {
                    return Err(r.at(tag.pos, &format!("FIFF_NCHAN: {n} (1 to {MAX_CHANNELS})")));
                }
                parts.nchan = Some(n as usize);
            }
            FIFF_SFREQ if parent == Some(FIFFB_MEAS_INFO) && grandparent == Some(FIFFB_MEAS) => {
                parts.sfreq = r.floats(&tag, "FIFF_SFREQ")?.first().copied();
            }
            FIFF_CH_INFO if parent == Some(FIFFB_MEAS_INFO) && grandparent == Some(FIFFB_MEAS) => {
                if tag.ty != FIFFT_CH_INFO_STRUCT || tag.size < 96 {
                    return Err(r.at(tag.pos, "FIFF_CH_INFO is not a channel info struct"));
                }
                if parts.channels.len() >= MAX_CHANNELS {
                    return Err(r.at(tag.pos, "FIFF_CH_INFO: too many channels"));
                }
                let b = r.data(&tag)?;
                let i32_at = |o: usize| i32::from_be_bytes(b[o..o + 4].try_into().unwrap());
                let f32_at = |o: usize| f32::from_be_bytes(b[o..o + 4].try_into().unwrap()) as f64;
                let (kind, range, cal, unit) = (i32_at(8), f32_at(12), f32_at(16), i32_at(72));
                let name_bytes = &b[80..96];
                let end = name_bytes.iter().position(|&c| c == 0).unwrap_or(16);
                let name = String::from_utf8_lossy(&name_bytes[..end]).to_string();
                let scale = range * cal;
                if !scale.is_finite() {
                    return Err(r.at(tag.pos, &format!("FIFF_CH_INFO of `{name}`: range × cal is {scale}")));
                }
                let (kind, unit) = type_and_unit(kind, unit);
                parts.channels.push(FifChannel { name, kind, unit, scale });
            }
            FIFF_CH_DACQ_NAME if parent == Some(FIFFB_CH_INFO) => {
                let name = r.string(&tag, "FIFF_CH_DACQ_NAME")?;
                if let Some(slot) = parts.dacq_names.last_mut() {
                    *slot = Some(name);
                }
            }
            FIFF_FIRST_SAMPLE if is_raw(parent) => {
                parts.first_samp = Some(r.int(&tag, "FIFF_FIRST_SAMPLE")? as i64);
            }
            FIFF_DATA_SKIP if is_raw(parent) => {
                let n = r.int(&tag, "FIFF_DATA_SKIP")?;
                if n < 0 {
                    return Err(r.at(tag.pos, &format!("FIFF_DATA_SKIP: {n} buffers")));
                }
                pending_skip = n as u64;
            }
            FIFF_DATA_SKIP_SAMP if is_raw(parent) => {
                let n = r.int(&tag, "FIFF_DATA_SKIP_SAMP")?;
                if n < 0 {
                    return Err(r.at(tag.pos, &format!("FIFF_DATA_SKIP_SAMP: {n} samples")));
                }
                push_skip(&mut parts, &mut skipped, n as u64).map_err(|m| r.at(tag.pos, &m))?;
            }
            FIFF_DATA_BUFFER if is_raw(parent) => {
                let kind = SampleType::of(tag.ty).ok_or_else(|| {
                    r.at(
                        tag.pos,
                        &format!("FIFF_DATA_BUFFER of type {} (short, int, float or double)", tag.ty),
                    )
                })?;
                let nchan = parts.nchan.unwrap_or(parts.channels.len());
                if nchan == 0 {
                    return Err(r.at(tag.pos, "FIFF_DATA_BUFFER before the channel infos"));
                }
                let per = (nchan * kind.bytes()) as u64;
                if tag.size > MAX_BUFFER_BYTES {
                    return Err(r.at(
                        tag.pos,
                        &format!("FIFF_DATA_BUFFER of {} bytes (at most {MAX_BUFFER_BYTES})", tag.size),
                    ));
                }
                if tag.size % per != 0 {
                    return Err(r.at(
                        tag.pos,
                        &format!(
                            "FIFF_DATA_BUFFER of {} bytes is not a whole number of samples of {nchan} channels",
                            tag.size
                        ),
                    ));
                }
                let samples = tag.size / per;
                if pending_skip > 0 {
                    if seen_buffer {
                        push_skip(&mut parts, &mut skipped, pending_skip.saturating_mul(samples))
                            .map_err(|m| r.at(tag.pos, &m))?;
                    } else {
                        parts.first_samp = Some(parts.first_samp.unwrap_or(0) + (pending_skip * samples) as i64);
                    }
                    pending_skip = 0;
                }
                seen_buffer = true;
                parts.buffers.push(Buffer::Data {
                    file: file_index,
                    offset: tag.pos + 16,
                    samples,
                    kind,
                });
            }
            FIFF_MNE_BASELINE_MIN if parent == Some(FIFFB_MNE_ANNOTATIONS) => {
                annotation.0 = r.floats(&tag, "annotation onsets")?;
            }
            FIFF_MNE_BASELINE_MAX if parent == Some(FIFFB_MNE_ANNOTATIONS) => {
                annotation.1 = r.floats(&tag, "annotation ends")?;
            }
            FIFF_COMMENT if parent == Some(FIFFB_MNE_ANNOTATIONS) => {
                let text = r.string(&tag, "annotation descriptions")?;
                annotation.2 = if text.is_empty() {
                    Vec::new()
                } else {
                    text.split(':').map(|d| d.replace("{COLON}", ":")).collect()
                };
            }
            FIFF_REF_ROLE if parent == Some(FIFFB_REF) => next_ref.0 = Some(r.int(&tag, "FIFF_REF_ROLE")?),
            FIFF_REF_FILE_NAME if parent == Some(FIFFB_REF) => next_ref.1 = Some(r.string(&tag, "FIFF_REF_FILE_NAME")?),
            FIFF_REF_FILE_NUM if parent == Some(FIFFB_REF) => next_ref.2 = Some(r.int(&tag, "FIFF_REF_FILE_NUM")?),
            _ => {}
        }
        let following = tag.pos + 16 + tag.size;
        pos = match next {
            0 => following,
            -1 => break,
            n if (n as u64) > tag.pos => n as u64,
            n => return Err(r.at(tag.pos, &format!("its next tag at byte {n} points backwards"))),
        };
        if pos >= r.size {
            break;
        }
    }
    let (onsets, ends, descriptions) = annotation;
    if onsets.len() != ends.len() || onsets.len() != descriptions.len() {
        return Err(format!(
            "{}: annotations: {} onsets, {} ends, {} descriptions",
            path.display(),
            onsets.len(),
            ends.len(),
            descriptions.len()
        ));
    }
    parts.annotations = onsets
        .iter()
        .zip(&ends)
        .zip(descriptions)
        .map(|((&on, &end), description)| FifAnnotation {
            onset_s: on,
            duration_s: end - on,
            description,
        })
        .collect();
    Ok(parts)
}

/// Appends `n` skipped samples to `parts` as buffers of at most [`SKIP_PIECE`] samples,
/// counting them in `skipped` (the file's total so far).
fn push_skip(parts: &mut FileParts, skipped: &mut u64, n: u64) -> Result<(), String> {
    *skipped = skipped.saturating_add(n);
    if *skipped > MAX_SKIPPED_SAMPLES {
        return Err(format!(
            "FIFF_DATA_SKIP: the file skips {} samples, more than {MAX_SKIPPED_SAMPLES} (corrupt)",
            *skipped
        ));
    }
    let mut left = n;
    while left > 0 {
        let piece = left.min(SKIP_PIECE);
        parts.buffers.push(Buffer::Skip(piece));
        left -= piece;
    }
    Ok(())
}

fn is_raw(block: Option<i32>) -> bool {
    matches!(block, Some(FIFFB_RAW_DATA | FIFFB_CONTINUOUS_DATA | FIFFB_IAS_RAW_DATA))
}
