//! The GDF header (versions 1.x and 2.x, as biosig and BCI Competition datasets write them) and
//! its event table, read and checked against the file before any data is.
//!
//! Layout (little-endian): a 256-byte fixed header, then 256 bytes per signal stored field by
//! field (all labels, then all transducers, ...), optionally GDF 2's tag-length-value header 3,
//! then `records` data records (each signal's `samples_per_record` values of its own type in
//! turn), then the event table. Field offsets follow MNE's `_read_gdf_header`.

use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

/// The type of a signal's stored values (GDF type codes 1–8, 16, 17).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SampleType {
    /// int8 (code 1).
    I8,
    /// uint8 (code 2).
    U8,
    /// int16 (code 3).
    I16,
    /// uint16 (code 4).
    U16,
    /// int32 (code 5).
    I32,
    /// uint32 (code 6).
    U32,
    /// int64 (code 7).
    I64,
    /// uint64 (code 8).
    U64,
    /// float32 (code 16).
    F32,
    /// float64 (code 17).
    F64,
}

impl SampleType {
    /// The type of GDF code `code`, if this reader decodes it.
    fn from_code(code: u32) -> Option<SampleType> {
        Some(match code {
            1 => SampleType::I8,
            2 => SampleType::U8,
            3 => SampleType::I16,
            4 => SampleType::U16,
            5 => SampleType::I32,
            6 => SampleType::U32,
            7 => SampleType::I64,
            8 => SampleType::U64,
            16 => SampleType::F32,
            17 => SampleType::F64,
            _ => return None,
        })
    }

    /// Bytes per value.
    pub fn bytes(self) -> usize {
        match self {
            SampleType::I8 | SampleType::U8 => 1,
            SampleType::I16 | SampleType::U16 => 2,
            SampleType::I32 | SampleType::U32 | SampleType::F32 => 4,
            SampleType::I64 | SampleType::U64 | SampleType::F64 => 8,
        }
    }

    /// The value stored little-endian at the start of `b`.
    pub fn decode(self, b: &[u8]) -> f64 {
        let a = |n: usize| -> [u8; 8] {
            let mut w = [0u8; 8];
            w[..n].copy_from_slice(&b[..n]);
            w
        };
        match self {
            SampleType::I8 => b[0] as i8 as f64,
            SampleType::U8 => b[0] as f64,
            SampleType::I16 => i16::from_le_bytes([b[0], b[1]]) as f64,
            SampleType::U16 => u16::from_le_bytes([b[0], b[1]]) as f64,
            SampleType::I32 => i32::from_le_bytes([b[0], b[1], b[2], b[3]]) as f64,
            SampleType::U32 => u32::from_le_bytes([b[0], b[1], b[2], b[3]]) as f64,
            SampleType::I64 => i64::from_le_bytes(a(8)) as f64,
            SampleType::U64 => u64::from_le_bytes(a(8)) as f64,
            SampleType::F32 => f32::from_le_bytes([b[0], b[1], b[2], b[3]]) as f64,
            SampleType::F64 => f64::from_le_bytes(a(8)),
        }
    }
}

/// One signal of the variable header.
#[derive(Clone, Debug)]
pub struct Signal {
    /// Label, trimmed.
    pub label: String,
    /// Physical unit: GDF 1's physical dimension text, or GDF 2's ISO 11073 code as text
    /// (`µV`, `mV`, `V`, `nV`; empty when dimensionless or unknown).
    pub unit: String,
    /// Physical value = `gain · stored + offset` (from the physical and digital extremes).
    pub gain: f64,
    /// See `gain`.
    pub offset: f64,
    /// Values per data record.
    pub samples_per_record: usize,
    /// Stored type.
    pub sample_type: SampleType,
    /// Byte offset of this signal's values inside a data record.
    pub record_offset: usize,
}

/// An entry of the event table.
#[derive(Clone, Debug, PartialEq)]
pub struct GdfEvent {
    /// Onset, in samples at the event table's rate, from 0.
    pub position: u64,
    /// Event type code (e.g. 769 for a left-hand cue in BCI Competition IV 2a).
    pub code: u16,
    /// Duration in samples at the event table's rate (at least 1, as MNE reads them).
    pub duration: u64,
}

/// A GDF file's header, checked against the file's size, and its events.
#[derive(Clone, Debug)]
pub struct Header {
    /// The file.
    pub path: PathBuf,
    /// Version text (`GDF 1.25`, `GDF 2.20`).
    pub version: String,
    /// Byte offset of the first data record.
    pub data_offset: u64,
    /// Number of data records.
    pub records: u64,
    /// Duration of a data record, seconds.
    pub record_duration_s: f64,
    /// Bytes per data record.
    pub record_bytes: usize,
    /// The signals.
    pub signals: Vec<Signal>,
    /// The event table's sampling rate, Hz (0 when the file gives none).
    pub event_rate: f64,
    /// The event table, in file order.
    pub events: Vec<GdfEvent>,
}

/// Per signal: unit, physical minimum, physical maximum, digital minimum, digital maximum.
type Ranges = (Vec<String>, Vec<f64>, Vec<f64>, Vec<f64>, Vec<f64>);

/// Size of the fixed header and of each signal's share of the variable header.
const BLOCK: usize = 256;

/// Reads little-endian fields of the variable header, where each field is stored for every
/// signal in turn.
struct Fields<'a> {
    bytes: &'a [u8],
    at: usize,
    n: usize,
}

impl Fields<'_> {
    /// The next field, `width` bytes per signal: one slice per signal.
    fn next(&mut self, width: usize) -> Vec<&[u8]> {
        let start = self.at;
        self.at += width * self.n;
        (0..self.n)
            .map(|i| &self.bytes[start + i * width..start + (i + 1) * width])
            .collect()
    }
}

fn text(b: &[u8]) -> String {
    let end = b.iter().position(|&c| c == 0).unwrap_or(b.len());
    b[..end].iter().map(|&c| c as char).collect::<String>().trim().to_string()
}

fn u16_at(b: &[u8]) -> u16 {
    u16::from_le_bytes([b[0], b[1]])
}

fn u32_at(b: &[u8]) -> u32 {
    u32::from_le_bytes([b[0], b[1], b[2], b[3]])
}

fn i64_at(b: &[u8]) -> i64 {
    i64::from_le_bytes(b[..8].try_into().expect("8 bytes"))
}

fn f64_at(b: &[u8]) -> f64 {
    f64::from_le_bytes(b[..8].try_into().expect("8 bytes"))
}

/// The unit of a GDF 2 physical dimension code (ISO 11073-10101: the unit in the upper 11
/// bits, the decimal prefix in the lower 5).
fn unit_of_code(code: u16) -> String {
    match code {
        4256 => "V",
        4274 => "mV",
        4275 => "µV",
        4276 => "nV",
        _ => "",
    }
    .into()
}

impl Header {
    /// Reads and checks the header and event table of `path`.
    pub fn open(path: &Path) -> Result<Header, String> {
        let who = path.display();
        let file = std::fs::File::open(path).map_err(|e| format!("{who}: {e}"))?;
        let len = file.metadata().map_err(|e| format!("{who}: {e}"))?.len();
        let read = |offset: u64, n: usize| -> Result<Vec<u8>, String> {
            let mut b = vec![0u8; n];
            file.read_exact_at(&mut b, offset)
                .map_err(|e| format!("{who}: reading {n} bytes at offset {offset}: {e}"))?;
            Ok(b)
        };
        if len < BLOCK as u64 {
            return Err(format!("{who}: {len} bytes is shorter than a GDF header (256 bytes)"));
        }
        let fixed = read(0, BLOCK)?;
        let version = text(&fixed[0..8]);
        let number: f64 = match version.strip_prefix("GDF") {
            Some(v) => v
                .trim()
                .parse()
                .map_err(|_| format!("{who}: version field `{version}` is not `GDF n.nn`"))?,
            None => return Err(format!("{who}: not a GDF file (its version field is `{version}`)")),
        };
        let v2 = number >= 1.9;
        let ns = if v2 {
            u16_at(&fixed[252..254]) as usize
        } else {
            u32_at(&fixed[252..256]) as usize
        };
        if ns == 0 || ns > crate::MAX_CHANNELS {
            return Err(format!(
                "{who}: header field `number of signals`: {ns} (1 to {})",
                crate::MAX_CHANNELS
            ));
        }
        let header_bytes = if v2 {
            u16_at(&fixed[184..186]) as u64 * BLOCK as u64
        } else {
            let h = i64_at(&fixed[184..192]);
            u64::try_from(h).map_err(|_| format!("{who}: header field `header length`: {h}"))?
        };
        let needed = (BLOCK * (ns + 1)) as u64;
        if header_bytes < needed || header_bytes > len {
            return Err(format!(
                "{who}: header field `header length`: {header_bytes} bytes, but {ns} signals need at least {needed} and the file has {len}"
            ));
        }
        let (num, den) = (u32_at(&fixed[244..248]), u32_at(&fixed[248..252]));
        if den == 0 {
            return Err(format!("{who}: header field `duration of a data record`: {num}/{den} s"));
        }
        // MNE reads a zero numerator as one second (with a warning).
        let record_duration_s = if num == 0 {
            tracing::warn!("{who}: the duration of a data record is 0/{den} s; reading it as 1 s, as MNE does");
            1.0 / den as f64
        } else {
            num as f64 / den as f64
        };
        let variable = read(BLOCK as u64, BLOCK * ns)?;
        let mut f = Fields {
            bytes: &variable,
            at: 0,
            n: ns,
        };
        let labels: Vec<String> = f.next(16).into_iter().map(text).collect();
        f.next(80); // transducer
        let (units, pmin, pmax, dmin, dmax): Ranges = if v2 {
            f.next(6); // physical dimension text, obsolete
            let units = f.next(2).into_iter().map(|b| unit_of_code(u16_at(b))).collect();
            let pmin = f.next(8).into_iter().map(f64_at).collect();
            let pmax = f.next(8).into_iter().map(f64_at).collect();
            let dmin = f.next(8).into_iter().map(f64_at).collect();
            let dmax = f.next(8).into_iter().map(f64_at).collect();
            f.next(68); // prefiltering text, obsolete
            f.next(12); // low-pass, high-pass, notch (float32 each)
            (units, pmin, pmax, dmin, dmax)
        } else {
            let units = f.next(8).into_iter().map(text).collect();
            let pmin = f.next(8).into_iter().map(f64_at).collect();
            let pmax = f.next(8).into_iter().map(f64_at).collect();
            let dmin = f.next(8).into_iter().map(|b| i64_at(b) as f64).collect();
            let dmax = f.next(8).into_iter().map(|b| i64_at(b) as f64).collect();
            f.next(80); // prefiltering
            (units, pmin, pmax, dmin, dmax)
        };
        let spr: Vec<u32> = f.next(4).into_iter().map(u32_at).collect();
        let types: Vec<u32> = f.next(4).into_iter().map(u32_at).collect();
        let mut signals = Vec::with_capacity(ns);
        let mut record_bytes = 0usize;
        for i in 0..ns {
            let field = |name: &str, detail: String| {
                format!("{who}: header field `{name}`: signal {} (`{}`): {detail}", i + 1, labels[i])
            };
            let sample_type = SampleType::from_code(types[i]).ok_or_else(|| {
                field(
                    "data type",
                    format!(
                        "GDF type {} is not read (int8 to uint64: 1-8, float32: 16, float64: 17)",
                        types[i]
                    ),
                )
            })?;
            let (lo, hi) = (dmin[i], dmax[i]);
            if !(lo.is_finite() && hi.is_finite() && pmin[i].is_finite() && pmax[i].is_finite()) || lo == hi {
                return Err(field(
                    "digital minimum/maximum",
                    format!("digital {lo} to {hi}, physical {} to {}: no finite scale", pmin[i], pmax[i]),
                ));
            }
            let gain = (pmax[i] - pmin[i]) / (hi - lo);
            let bytes = (spr[i] as usize)
                .checked_mul(sample_type.bytes())
                .and_then(|b| record_bytes.checked_add(b))
                .filter(|&b| b as u64 <= len)
                .ok_or_else(|| field("samples per record", format!("{} do not fit in the file", spr[i])))?;
            signals.push(Signal {
                label: labels[i].clone(),
                unit: units[i].clone(),
                gain,
                offset: pmin[i] - gain * lo,
                samples_per_record: spr[i] as usize,
                sample_type,
                record_offset: record_bytes,
            });
            record_bytes = bytes;
        }
        if record_bytes == 0 {
            return Err(format!(
                "{who}: the signals have no samples (every `samples per record` is 0)"
            ));
        }
        let data_bytes = len - header_bytes;
        let declared = i64_at(&fixed[236..244]);
        let records = if declared < 0 {
            // -1: unknown (a recording that was not closed); the data then runs to the end.
            let n = data_bytes / record_bytes as u64;
            tracing::warn!("{who}: the number of data records is unknown ({declared}); reading the {n} whole records the file holds, and no event table");
            n
        } else {
            declared as u64
        };
        let data_end = (record_bytes as u64)
            .checked_mul(records)
            .and_then(|b| b.checked_add(header_bytes))
            .filter(|&end| end <= len)
            .ok_or_else(|| {
                format!(
                    "{who}: the header declares {records} data records of {record_bytes} bytes, but the file holds {} after its {header_bytes}-byte header (truncated, or the header is wrong)",
                    data_bytes
                )
            })?;
        let (event_rate, events) = if declared < 0 || data_end == len {
            (0.0, Vec::new())
        } else {
            read_events(&read, data_end, len, number, &who.to_string())?
        };
        Ok(Header {
            path: path.to_path_buf(),
            version,
            data_offset: header_bytes,
            records,
            record_duration_s,
            record_bytes,
            signals,
            event_rate,
            events,
        })
    }

    /// Sampling rate of signal `i`, Hz.
    pub fn sample_rate(&self, i: usize) -> f64 {
        self.signals[i].samples_per_record as f64 / self.record_duration_s
    }
}

/// Reads the event table at `at` (mode 1: positions and types; mode 3: also channels and
/// durations). Before GDF 1.94 its header is the event rate (3 bytes) then the count (4 bytes);
/// from 1.94 the count (3 bytes) then the rate (float32).
fn read_events(
    read: &dyn Fn(u64, usize) -> Result<Vec<u8>, String>,
    at: u64,
    len: u64,
    version: f64,
    who: &str,
) -> Result<(f64, Vec<GdfEvent>), String> {
    if len - at < 8 {
        return Err(format!(
            "{who}: the event table after the data is {} bytes, shorter than its 8-byte header",
            len - at
        ));
    }
    let head = read(at, 8)?;
    let mode = head[0];
    if mode != 1 && mode != 3 {
        return Err(format!("{who}: event table mode {mode} (GDF defines 1 and 3)"));
    }
    let u24 = |b: &[u8]| b[0] as u64 | (b[1] as u64) << 8 | (b[2] as u64) << 16;
    let (rate, n) = if version < 1.94 {
        (u24(&head[1..4]) as f64, u32_at(&head[4..8]) as u64)
    } else {
        (
            f32::from_le_bytes([head[4], head[5], head[6], head[7]]) as f64,
            u24(&head[1..4]),
        )
    };
    if !(rate.is_finite() && rate >= 0.0) {
        return Err(format!("{who}: event table: sampling rate {rate}"));
    }
    let per_event = if mode == 3 { 12 } else { 6 };
    let bytes = n * per_event;
    if bytes > len - at - 8 {
        return Err(format!(
            "{who}: event table: {n} events need {bytes} bytes, the file has {} after the table's header",
            len - at - 8
        ));
    }
    let table = read(at + 8, bytes as usize)?;
    let n = n as usize;
    let pos = |i: usize| u32_at(&table[4 * i..]) as u64;
    let code = |i: usize| u16_at(&table[4 * n + 2 * i..]);
    let duration = |i: usize| {
        if mode == 3 {
            u32_at(&table[8 * n + 4 * i..]) as u64
        } else {
            1
        }
    };
    let events = (0..n)
        .map(|i| GdfEvent {
            // Positions are 1-based.
            position: pos(i).saturating_sub(1),
            code: code(i),
            duration: duration(i).max(1),
        })
        .collect();
    Ok((rate, events))
}
