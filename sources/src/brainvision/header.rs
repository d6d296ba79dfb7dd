//! The BrainVision header (`.vhdr`) and marker (`.vmrk`) files: INI-style text in UTF-8 or,
//! in older recordings, Latin-1 / the Windows ANSI code page, as MNE reads them.
//!
//! The INI layer is read here rather than by a general INI crate because BrainVision files
//! bend it: a free-text `[Comment]` section ends the parameters, keys are case-insensitive,
//! and commas inside fields are written `\1`.

use crate::MAX_CHANNELS;
use std::collections::HashMap;
use std::path::{Path, PathBuf};

/// Largest header or marker file accepted, bytes (real ones are a few kB; marker files of long
/// recordings a few MB).
pub const MAX_TEXT_BYTES: u64 = 64 << 20;

/// How the samples are stored in the data file.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SampleFormat {
    /// `INT_16`: little-endian i16.
    Int16,
    /// `INT_32`: little-endian i32.
    Int32,
    /// `IEEE_FLOAT_32`: little-endian f32.
    Float32,
}

impl SampleFormat {
    /// Bytes per sample value.
    pub fn bytes(self) -> usize {
        match self {
            SampleFormat::Int16 => 2,
            SampleFormat::Int32 | SampleFormat::Float32 => 4,
        }
    }

    /// The value of the little-endian sample at the start of `b`.
    pub fn decode(self, b: &[u8]) -> f64 {
        match self {
            SampleFormat::Int16 => i16::from_le_bytes([b[0], b[1]]) as f64,
            SampleFormat::Int32 => i32::from_le_bytes([b[0], b[1], b[2], b[3]]) as f64,
            SampleFormat::Float32 => f32::from_le_bytes([b[0], b[1], b[2], b[3]]) as f64,
        }
    }
}

/// How an ASCII data file is laid out (`[ASCII Infos]`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AsciiLayout {
    /// Lines before the first sample (`SkipLines`: a line of channel names, say).
    pub skip_lines: usize,
    /// Values at the start of each line that are not channels (`SkipColumns`: a time column).
    pub skip_columns: usize,
    /// Whether the decimal separator is a comma (`DecimalSymbol=,`).
    pub decimal_comma: bool,
}

/// How the data file stores the samples (`DataFormat`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DataFormat {
    /// `BINARY`, in this sample format.
    Binary(SampleFormat),
    /// `ASCII`: a line per sample, a number per channel (multiplexed only, as MNE reads it).
    Ascii(AsciiLayout),
}

/// One channel as the header describes it.
#[derive(Clone, Debug, PartialEq)]
pub struct ChannelInfo {
    /// Its label.
    pub name: String,
    /// Multiplied with a stored value to give the value in `unit`.
    pub resolution: f64,
    /// Its unit as written (`µV` when the header gives none, as the specification says).
    pub unit: String,
}

/// A parsed `.vhdr` file.
#[derive(Clone, Debug, PartialEq)]
pub struct Header {
    /// The header file, for messages.
    pub path: PathBuf,
    /// The data file (`DataFile`, resolved against the header's directory).
    pub data_file: PathBuf,
    /// The marker file (`MarkerFile`), if the header names one.
    pub marker_file: Option<PathBuf>,
    /// Sampling rate, Hz (10⁶ / `SamplingInterval` in µs).
    pub sample_rate: f64,
    /// How the data file stores the samples.
    pub format: DataFormat,
    /// `VECTORIZED` (every sample of channel 1, then of channel 2, ...) rather than
    /// `MULTIPLEXED` (sample 1 of every channel, then sample 2, ...).
    pub vectorized: bool,
    /// `DataPoints`, when given (samples per channel).
    pub data_points: Option<u64>,
    /// The channels, in file order.
    pub channels: Vec<ChannelInfo>,
}

/// INI-style sections: lower-cased section name → lower-cased key → value.
type Sections = HashMap<String, HashMap<String, String>>;

/// Text in UTF-8, else Latin-1 (which the ANSI code page of old recordings agrees with for
/// every character these files use, `µ` included).
pub fn decode_text(bytes: &[u8]) -> String {
    match std::str::from_utf8(bytes) {
        Ok(s) => s.to_string(),
        Err(_) => bytes.iter().map(|&b| b as char).collect(),
    }
}

/// Reads a header or marker file whole, refusing one larger than [`MAX_TEXT_BYTES`].
pub fn read_text(path: &Path) -> Result<String, String> {
    let size = std::fs::metadata(path).map_err(|e| format!("{}: {e}", path.display()))?.len();
    if size > MAX_TEXT_BYTES {
        return Err(format!(
            "{}: {size} bytes is not a BrainVision header or marker file (at most {MAX_TEXT_BYTES})",
            path.display()
        ));
    }
    let bytes = std::fs::read(path).map_err(|e| format!("{}: {e}", path.display()))?;
    Ok(decode_text(&bytes))
}

/// Splits INI-style `text` into sections, stopping at `[Comment]` (free text follows).
fn sections(text: &str) -> Sections {
    let mut out: Sections = HashMap::new();
    let mut current = String::new();
    for line in text.lines().skip(1) {
        let line = line.trim();
        if line.is_empty() || line.starts_with(';') {
            continue;
        }
        if let Some(name) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
            current = name.trim().to_ascii_lowercase();
            if current == "comment" {
                break;
            }
            out.entry(current.clone()).or_default();
            continue;
        }
        if let Some((k, v)) = line.split_once('=') {
            out.entry(current.clone())
                .or_default()
                .insert(k.trim().to_ascii_lowercase(), v.trim().to_string());
        }
    }
    out
}

impl Header {
    /// Parses the header file at `path`.
    pub fn open(path: &Path) -> Result<Header, String> {
        Header::parse(&read_text(path)?, path)
    }

    /// Parses header `text` read from `path` (companion files resolve against its directory).
    pub fn parse(text: &str, path: &Path) -> Result<Header, String> {
        let at = |field: &str, m: String| format!("{}: {field}: {m}", path.display());
        let first = text.lines().next().unwrap_or_default();
        if !first.contains("Data Exchange Header File") {
            return Err(format!(
                "{}: not a BrainVision header (its first line should say `Brain Vision Data Exchange Header File`, found `{}`)",
                path.display(),
                first.chars().take(80).collect::<String>()
            ));
        }
        let s = sections(text);
        let common = s
            .get("common infos")
            .ok_or_else(|| format!("{}: no [Common Infos] section", path.display()))?;
        let get = |key: &str| -> Result<&str, String> {
            common
                .get(&key.to_ascii_lowercase())
                .map(String::as_str)
                .ok_or_else(|| format!("{}: [Common Infos] has no `{key}`", path.display()))
        };
        let dir = path.parent().unwrap_or(Path::new("."));
        let data_file = dir.join(get("DataFile")?);
        let marker_file = common.get("markerfile").filter(|m| !m.is_empty()).map(|m| dir.join(m));
        let vectorized = match get("DataOrientation")? {
            "MULTIPLEXED" => false,
            "VECTORIZED" => true,
            other => return Err(at("DataOrientation", format!("`{other}` is not MULTIPLEXED or VECTORIZED"))),
        };
        let interval: f64 = get("SamplingInterval")?.parse().map_err(|_| {
            at(
                "SamplingInterval",
                format!("`{}` is not a number of µs", common["samplinginterval"]),
            )
        })?;
        if !(interval.is_finite() && (0.1..=1e10).contains(&interval)) {
            return Err(at(
                "SamplingInterval",
                format!("{interval} µs is not a plausible sampling interval (0.1 µs to 10⁴ s)"),
            ));
        }
        let n_channels: usize = get("NumberOfChannels")?
            .parse()
            .map_err(|_| at("NumberOfChannels", format!("`{}` is not a count", common["numberofchannels"])))?;
        if n_channels == 0 || n_channels > MAX_CHANNELS {
            return Err(at("NumberOfChannels", format!("{n_channels} (must be 1 to {MAX_CHANNELS})")));
        }
        let data_points = match common.get("datapoints") {
            None => None,
            Some(v) => Some(
                v.parse::<u64>()
                    .map_err(|_| at("DataPoints", format!("`{v}` is not a count")))?,
            ),
        };
        let format = match get("DataFormat")? {
            "BINARY" => DataFormat::Binary(binary_format(&s, path)?),
            "ASCII" if vectorized => return Err(at(
                "DataOrientation",
                "ASCII data in VECTORIZED order (a line per channel) is not read (nor by MNE): export it MULTIPLEXED or BINARY"
                    .into(),
            )),
            "ASCII" => DataFormat::Ascii(ascii_layout(&s, path)?),
            other => return Err(at("DataFormat", format!("`{other}` is not BINARY or ASCII"))),
        };
        let infos = s
            .get("channel infos")
            .ok_or_else(|| format!("{}: no [Channel Infos] section", path.display()))?;
        let mut channels = Vec::with_capacity(n_channels);
        for i in 1..=n_channels {
            let key = format!("ch{i}");
            let value = infos.get(&key).ok_or_else(|| {
                at(
                    "Channel Infos",
                    format!("no entry `Ch{i}` (NumberOfChannels is {n_channels})"),
                )
            })?;
            channels.push(parse_channel(value).map_err(|m| at(&format!("Ch{i}"), m))?);
        }
        Ok(Header {
            path: path.to_path_buf(),
            data_file,
            marker_file,
            sample_rate: 1e6 / interval,
            format,
            vectorized,
            data_points,
            channels,
        })
    }
}

/// `[Binary Infos] BinaryFormat`.
fn binary_format(s: &Sections, path: &Path) -> Result<SampleFormat, String> {
    match s.get("binary infos").and_then(|b| b.get("binaryformat")).map(String::as_str) {
        Some("INT_16") => Ok(SampleFormat::Int16),
        Some("INT_32") => Ok(SampleFormat::Int32),
        Some("IEEE_FLOAT_32") => Ok(SampleFormat::Float32),
        Some(other) => Err(format!(
            "{}: BinaryFormat: `{other}` is not supported (INT_16, INT_32 or IEEE_FLOAT_32)",
            path.display()
        )),
        None => Err(format!("{}: [Binary Infos] has no `BinaryFormat`", path.display())),
    }
}

/// `[ASCII Infos]`: `SkipLines`, `SkipColumns` (0 when absent) and `DecimalSymbol` (`.` when absent).
fn ascii_layout(s: &Sections, path: &Path) -> Result<AsciiLayout, String> {
    let infos = s.get("ascii infos");
    let count = |key: &str| -> Result<usize, String> {
        match infos.and_then(|i| i.get(&key.to_ascii_lowercase())) {
            None => Ok(0),
            Some(v) => v
                .parse::<usize>()
                .ok()
                .filter(|n| *n <= 1_000_000)
                .ok_or_else(|| format!("{}: {key}: `{v}` is not a count", path.display())),
        }
    };
    let decimal_comma = match infos.and_then(|i| i.get("decimalsymbol")).map(String::as_str) {
        None | Some(".") => false,
        Some(",") => true,
        Some(other) => return Err(format!("{}: DecimalSymbol: `{other}` is not `.` or `,`", path.display())),
    };
    Ok(AsciiLayout {
        skip_lines: count("SkipLines")?,
        skip_columns: count("SkipColumns")?,
        decimal_comma,
    })
}

/// `name,reference,resolution,unit` (reference, resolution and unit may be empty or absent).
fn parse_channel(value: &str) -> Result<ChannelInfo, String> {
    let fields: Vec<&str> = value.split(',').collect();
    let name = fields[0].replace("\\1", ",").trim().to_string();
    if name.is_empty() {
        return Err("the channel has no name".into());
    }
    let unit = match fields.get(3).map(|u| u.trim()) {
        None | Some("") => "µV".to_string(),
        Some(u) => u.replace('\u{c2}', ""),
    };
    let resolution = match fields.get(2).map(|r| r.trim()) {
        None | Some("") => 1.0,
        Some(r) => r.parse::<f64>().map_err(|_| format!("resolution `{r}` is not a number"))?,
    };
    if !resolution.is_finite() || resolution == 0.0 {
        return Err(format!("resolution {resolution} must be finite and not 0"));
    }
    Ok(ChannelInfo { name, resolution, unit })
}

/// One marker of a `.vmrk` file.
#[derive(Clone, Debug, PartialEq)]
pub struct MarkerEntry {
    /// `Stimulus`, `Response`, `Comment`, `New Segment`, ...
    pub kind: String,
    /// Its description (`S  1`).
    pub description: String,
    /// First sample, counted from 0 (the file counts from 1).
    pub sample: i64,
    /// Length in samples (0 or 1 for an instant).
    pub points: i64,
}

/// Largest number of markers accepted.
pub const MAX_MARKERS: usize = 10_000_000;

/// Parses marker file `text` read from `path`: the entries of `[Marker Infos]` in order
/// (`Mk<n>=type,description,position,points,channel[,date]`).
pub fn parse_markers(text: &str, path: &Path) -> Result<Vec<MarkerEntry>, String> {
    let first = text.lines().next().unwrap_or_default();
    if !first.contains("Data Exchange Marker File") {
        return Err(format!(
            "{}: not a BrainVision marker file (its first line should say `Brain Vision Data Exchange Marker File`, found `{}`)",
            path.display(),
            first.chars().take(80).collect::<String>()
        ));
    }
    let mut out = Vec::new();
    let mut in_markers = false;
    for (line_no, line) in text.lines().enumerate().skip(1) {
        let line = line.trim();
        if let Some(name) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
            in_markers = name.trim().eq_ignore_ascii_case("marker infos");
            continue;
        }
        if !in_markers || line.starts_with(';') {
            continue;
        }
        let Some((key, value)) = line.split_once('=') else { continue };
        if !key.trim().to_ascii_lowercase().starts_with("mk") {
            continue;
        }
        let at = |m: String| format!("{}: line {}: {}: {m}", path.display(), line_no + 1, key.trim());
        let fields: Vec<&str> = value.split(',').collect();
        if fields.len() < 4 {
            return Err(at(format!("`{value}` is not `type,description,position,points,channel`")));
        }
        let position: i64 = fields[2]
            .trim()
            .parse()
            .map_err(|_| at(format!("position `{}` is not a sample number", fields[2])))?;
        if position < 1 {
            return Err(at(format!("position {position} (samples count from 1)")));
        }
        let points = fields[3].trim().parse::<i64>().unwrap_or(0).max(0);
        if out.len() >= MAX_MARKERS {
            return Err(format!("{}: more than {MAX_MARKERS} markers", path.display()));
        }
        out.push(MarkerEntry {
            kind: fields[0].replace("\\1", ","),
            description: fields[1].replace("\\1", ","),
            sample: position - 1,
            points,
        });
    }
    Ok(out)
}
