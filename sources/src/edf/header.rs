//! The EDF / EDF+ / BDF / BDF+ header: 256 bytes of recording fields, then 256 bytes per signal,
//! all ASCII, space-padded. Every field is checked; an error names the file, the field and the
//! signal it belongs to.

use std::path::Path;

/// Which variant of the format a file is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    /// EDF: 16-bit samples, no annotations.
    Edf,
    /// EDF+: 16-bit samples, an `EDF Annotations` signal; `continuous` false for EDF+D.
    EdfPlus {
        /// EDF+C (true) or EDF+D (false: records may have gaps between them).
        continuous: bool,
    },
    /// BDF (BioSemi): 24-bit samples.
    Bdf,
    /// BDF+: 24-bit samples with a `BDF Annotations` signal.
    BdfPlus {
        /// BDF+C (true) or BDF+D (false).
        continuous: bool,
    },
}

impl Format {
    /// Bytes per stored sample: 2 (EDF) or 3 (BDF).
    pub fn sample_bytes(self) -> usize {
        match self {
            Format::Edf | Format::EdfPlus { .. } => 2,
            Format::Bdf | Format::BdfPlus { .. } => 3,
        }
    }
    /// Whether records may be discontinuous (EDF+D / BDF+D).
    pub fn discontinuous(self) -> bool {
        matches!(
            self,
            Format::EdfPlus { continuous: false } | Format::BdfPlus { continuous: false }
        )
    }
}

/// One signal's header fields.
#[derive(Clone, Debug, PartialEq)]
pub struct SignalHeader {
    /// Label, e.g. `EEG Fpz-Cz`.
    pub label: String,
    /// Transducer type.
    pub transducer: String,
    /// Physical dimension (unit), e.g. `uV`.
    pub unit: String,
    /// Physical minimum (in `unit`).
    pub physical_min: f64,
    /// Physical maximum (in `unit`).
    pub physical_max: f64,
    /// Digital minimum.
    pub digital_min: i32,
    /// Digital maximum.
    pub digital_max: i32,
    /// Prefiltering, e.g. `HP:0.5Hz LP:100Hz`.
    pub prefiltering: String,
    /// Samples per data record.
    pub samples_per_record: usize,
    /// Whether this is the `EDF Annotations` / `BDF Annotations` signal.
    pub is_annotation: bool,
}

impl SignalHeader {
    /// Physical value per digital step (`unit` per count).
    pub fn gain(&self) -> f64 {
        (self.physical_max - self.physical_min) / (self.digital_max - self.digital_min) as f64
    }
    /// The physical value of digital value `d`: `gain·(d − digital_min) + physical_min`.
    pub fn physical(&self, d: i32) -> f64 {
        self.gain() * (d - self.digital_min) as f64 + self.physical_min
    }
}

/// The whole header.
#[derive(Clone, Debug, PartialEq)]
pub struct Header {
    /// Format variant.
    pub format: Format,
    /// Local patient identification.
    pub patient: String,
    /// Local recording identification.
    pub recording: String,
    /// Start date as written (`dd.mm.yy`).
    pub start_date: String,
    /// Start time as written (`hh.mm.ss`).
    pub start_time: String,
    /// Start as seconds since the Unix epoch (the header's local time taken as UTC, as EDF
    /// readers do; years 85-99 are 19xx, 00-84 are 20xx).
    pub start_unix_s: i64,
    /// Header size in bytes (`256 · (signals + 1)`).
    pub header_bytes: usize,
    /// Data records as declared (−1: unknown, to be taken from the file size).
    pub declared_records: i64,
    /// Duration of one data record in seconds (0 for annotation-only files).
    pub record_duration_s: f64,
    /// The signals, in file order.
    pub signals: Vec<SignalHeader>,
}

/// A header problem: the file, the field, and what is wrong.
pub fn header_error(path: &Path, field: &str, message: impl std::fmt::Display) -> String {
    format!("{}: header field `{field}`: {message}", path.display())
}

/// Sampling rates outside this range (Hz) come from a lying header, not from an amplifier.
const PLAUSIBLE_RATE_HZ: std::ops::RangeInclusive<f64> = 1e-4..=1e7;

/// Checks that the record duration and samples per record give plausible sampling rates and
/// that a data record holds at least one sample, before anything is allocated from them.
/// Annotation-only files may have records of duration 0.
fn check_rates(signals: &[SignalHeader], record_duration_s: f64) -> Result<(), (&'static str, String)> {
    let data: Vec<&SignalHeader> = signals.iter().filter(|s| !s.is_annotation).collect();
    if signals.iter().all(|s| s.samples_per_record == 0) {
        return Err((
            "samples per data record",
            "every signal has 0 samples per data record, so a record holds no data".into(),
        ));
    }
    if data.is_empty() {
        return Ok(());
    }
    if record_duration_s <= 0.0 {
        return Err((
            "duration of a data record",
            format!("{record_duration_s} s, but a file with signals needs records longer than 0 s"),
        ));
    }
    for (i, s) in data.iter().enumerate() {
        if s.samples_per_record == 0 {
            return Err((
                "samples per data record",
                format!("signal {} (`{}`) has 0 samples per data record", i + 1, s.label),
            ));
        }
        let rate = s.samples_per_record as f64 / record_duration_s;
        if !PLAUSIBLE_RATE_HZ.contains(&rate) {
            return Err((
                "duration of a data record",
                format!(
                    "{record_duration_s} s with {} samples per record gives signal {} (`{}`) a sampling rate of {rate:e} Hz, \
                     outside the plausible {:e}..{:e} Hz",
                    s.samples_per_record,
                    i + 1,
                    s.label,
                    PLAUSIBLE_RATE_HZ.start(),
                    PLAUSIBLE_RATE_HZ.end()
                ),
            ));
        }
    }
    Ok(())
}

impl Header {
    /// Parses the fixed part (`fixed`, 256 bytes) and, given the signal count it declares,
    /// the signal part (`signals`, 256 bytes per signal).
    pub fn parse(path: &Path, fixed: &[u8], signals: &[u8]) -> Result<Header, String> {
        let err = |field: &str, m: String| header_error(path, field, m);
        if fixed.len() < 256 {
            return Err(format!(
                "{}: {} bytes, shorter than an EDF/BDF header (256 bytes)",
                path.display(),
                fixed.len()
            ));
        }
        let text = |range: std::ops::Range<usize>, field: &str| -> Result<String, String> {
            ascii(&fixed[range], field).map_err(|m| err(field, m))
        };
        check_version(path, fixed)?;
        let bdf = fixed[0] == 0xFF && &fixed[1..8] == b"BIOSEMI";
        let reserved = text(192..236, "reserved")?;
        let format = match (bdf, reserved.as_str()) {
            (false, r) if r.starts_with("EDF+C") => Format::EdfPlus { continuous: true },
            (false, r) if r.starts_with("EDF+D") => Format::EdfPlus { continuous: false },
            (false, _) => Format::Edf,
            (true, r) if r.starts_with("BDF+C") => Format::BdfPlus { continuous: true },
            (true, r) if r.starts_with("BDF+D") => Format::BdfPlus { continuous: false },
            (true, _) => Format::Bdf,
        };
        let start_date = text(168..176, "startdate")?;
        let start_time = text(176..184, "starttime")?;
        let start_unix_s = parse_start(&start_date, &start_time).map_err(|m| err("startdate/starttime", m))?;
        let header_bytes: usize = number(&text(184..192, "header bytes")?).map_err(|m| err("header bytes", m))?;
        let declared_records: i64 =
            number(&text(236..244, "number of data records")?).map_err(|m| err("number of data records", m))?;
        if declared_records < -1 {
            return Err(err("number of data records", format!("{declared_records} is negative")));
        }
        let record_duration_s: f64 =
            number(&text(244..252, "duration of a data record")?).map_err(|m| err("duration of a data record", m))?;
        if !(record_duration_s >= 0.0 && record_duration_s.is_finite()) {
            return Err(err(
                "duration of a data record",
                format!("{record_duration_s} is not a duration in seconds"),
            ));
        }
        let ns: usize = number(&text(252..256, "number of signals")?).map_err(|m| err("number of signals", m))?;
        if header_bytes != 256 * (ns + 1) {
            return Err(err(
                "header bytes",
                format!("{header_bytes}, but {ns} signals need 256 × ({ns} + 1) = {}", 256 * (ns + 1)),
            ));
        }
        if signals.len() < 256 * ns {
            return Err(format!(
                "{}: the header is truncated: {ns} signals need {} bytes of signal fields, the file has {}",
                path.display(),
                256 * ns,
                signals.len()
            ));
        }
        let annotation_label = if bdf { "BDF Annotations" } else { "EDF Annotations" };
        // Field widths and their offsets in the signal block (each field is ns consecutive entries).
        let widths = [16usize, 80, 8, 8, 8, 8, 8, 80, 8, 32];
        let mut offsets = [0usize; 10];
        for i in 1..10 {
            offsets[i] = offsets[i - 1] + widths[i - 1] * ns;
        }
        let mut out = Vec::with_capacity(ns);
        for s in 0..ns {
            let field = |f: usize, name: &str| -> Result<String, String> {
                let start = offsets[f] + s * widths[f];
                ascii(&signals[start..start + widths[f]], name).map_err(|m| err(name, format!("signal {}: {m}", s + 1)))
            };
            let label = field(0, "label")?;
            let sig_err = |name: &str, m: String| err(name, format!("signal {} (`{label}`): {m}", s + 1));
            let num_f =
                |f: usize, name: &str| -> Result<f64, String> { number::<f64>(&field(f, name)?).map_err(|m| sig_err(name, m)) };
            let num_i =
                |f: usize, name: &str| -> Result<i64, String> { number::<i64>(&field(f, name)?).map_err(|m| sig_err(name, m)) };
            let h = SignalHeader {
                is_annotation: label == annotation_label,
                transducer: field(1, "transducer type")?,
                unit: field(2, "physical dimension")?,
                physical_min: num_f(3, "physical minimum")?,
                physical_max: num_f(4, "physical maximum")?,
                digital_min: num_i(5, "digital minimum")? as i32,
                digital_max: num_i(6, "digital maximum")? as i32,
                prefiltering: field(7, "prefiltering")?,
                samples_per_record: num_i(8, "samples per data record")?
                    .try_into()
                    .map_err(|_| sig_err("samples per data record", "negative".into()))?,
                label: label.clone(),
            };
            let (dmin, dmax) = if bdf { (-(1 << 23), (1 << 23) - 1) } else { (-32768, 32767) };
            if h.digital_max <= h.digital_min {
                return Err(sig_err(
                    "digital maximum",
                    format!("{} is not above the digital minimum {}", h.digital_max, h.digital_min),
                ));
            }
            if !h.is_annotation && (h.digital_min < dmin || h.digital_max > dmax) {
                return Err(sig_err(
                    "digital minimum/maximum",
                    format!(
                        "{}..{} is outside the {}-bit range",
                        h.digital_min,
                        h.digital_max,
                        if bdf { 24 } else { 16 }
                    ),
                ));
            }
            if !h.is_annotation && (h.physical_max == h.physical_min || !h.physical_max.is_finite()) {
                return Err(sig_err(
                    "physical maximum",
                    format!("{} equals the physical minimum (no scale)", h.physical_max),
                ));
            }
            out.push(h);
        }
        check_rates(&out, record_duration_s).map_err(|(field, m)| err(field, m))?;
        Ok(Header {
            format,
            patient: text(8..88, "patient")?,
            recording: text(88..168, "recording")?,
            start_date,
            start_time,
            start_unix_s,
            header_bytes,
            declared_records,
            record_duration_s,
            signals: out,
        })
    }

    /// Bytes of one data record.
    pub fn record_bytes(&self) -> usize {
        self.signals.iter().map(|s| s.samples_per_record).sum::<usize>() * self.format.sample_bytes()
    }

    /// Sampling rate of signal `i` in Hz (0 when the record duration is 0).
    pub fn sample_rate(&self, i: usize) -> f64 {
        if self.record_duration_s > 0.0 {
            self.signals[i].samples_per_record as f64 / self.record_duration_s
        } else {
            0.0
        }
    }

    /// Byte offset of signal `i`'s samples within a record.
    pub fn signal_offset(&self, i: usize) -> usize {
        self.signals[..i].iter().map(|s| s.samples_per_record).sum::<usize>() * self.format.sample_bytes()
    }
}

/// Checks the first 8 bytes: EDF's `0` or BDF's 0xFF `BIOSEMI`.
pub fn check_version(path: &Path, fixed: &[u8]) -> Result<(), String> {
    if fixed.len() >= 8 && fixed[0] == 0xFF && &fixed[1..8] == b"BIOSEMI" {
        return Ok(());
    }
    let version = String::from_utf8_lossy(&fixed[..fixed.len().min(8)]).trim().to_string();
    if version == "0" {
        return Ok(());
    }
    Err(header_error(
        path,
        "version",
        format!("`{version}` is neither EDF (`0`) nor BDF (0xFF `BIOSEMI`): not an EDF/BDF file"),
    ))
}

fn ascii(bytes: &[u8], field: &str) -> Result<String, String> {
    // EDF asks for printable ASCII; Latin-1 labels exist in the wild, so decode leniently.
    let s: String = bytes.iter().map(|&b| b as char).collect();
    if s.chars().any(|c| c.is_control() && c != '\0') {
        return Err(format!("`{field}` holds control characters: {s:?}"));
    }
    Ok(s.trim_end_matches([' ', '\0']).trim_start().to_string())
}

fn number<T: std::str::FromStr>(s: &str) -> Result<T, String> {
    s.trim().parse::<T>().map_err(|_| format!("`{s}` is not a number"))
}

/// Seconds since the Unix epoch of `dd.mm.yy` `hh.mm.ss`.
fn parse_start(date: &str, time: &str) -> Result<i64, String> {
    let parts = |s: &str| -> Option<[i64; 3]> {
        let v: Vec<i64> = s.split(['.', ':']).map(|p| p.trim().parse().ok()).collect::<Option<_>>()?;
        v.try_into().ok()
    };
    let [day, month, yy] = parts(date).ok_or_else(|| format!("start date `{date}` is not dd.mm.yy"))?;
    let [h, mi, sec] = parts(time).ok_or_else(|| format!("start time `{time}` is not hh.mm.ss"))?;
    if !(1..=31).contains(&day) || !(1..=12).contains(&month) || !(0..=99).contains(&yy) {
        return Err(format!("start date `{date}` is not a date"));
    }
    if !(0..24).contains(&h) || !(0..60).contains(&mi) || !(0..61).contains(&sec) {
        return Err(format!("start time `{time}` is not a time of day"));
    }
    let year = if yy >= 85 { 1900 + yy } else { 2000 + yy };
    Ok(days_from_civil(year, month, day) * 86400 + h * 3600 + mi * 60 + sec)
}

/// Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's algorithm).
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146097 + doe - 719468
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn start_dates_follow_the_edf_century_rule() {
        assert_eq!(parse_start("01.01.85", "00.00.00").unwrap(), 473_385_600);
        assert_eq!(parse_start("01.01.84", "00.00.00").unwrap(), 3_597_523_200);
        assert_eq!(parse_start("24.04.89", "16.13.00").unwrap(), 609_437_580);
        assert_eq!(parse_start("24.01.20", "04.05.56").unwrap(), 1_579_838_756);
        assert!(parse_start("32.01.20", "04.05.56").is_err());
        assert!(parse_start("1.1", "04.05.56").is_err());
    }
}
