//! `edf`: writes a signal stream as an EDF+ (16-bit) or BDF+ (24-bit) file that EDFbrowser,
//! MNE, pyedflib and clinical viewers open: each channel's physical range taken from the data
//! (so no value is clipped and the quantization is as fine as the format allows), the rows'
//! markers as EDF+ annotations.
//!
//! The ranges are only known at the end, so rows are kept in a temporary file beside the
//! output while the run goes; the EDF file is then written under a temporary name and renamed
//! into place, so nothing half-written ever appears at the path.

use std::fs::File;
use std::io::{BufReader, BufWriter, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use neurostream_engine::{
    Batch, EngineError, NodeConfig, NodeContext, Placement, Result, RowIndex, Schema, Sink, SinkKind, SinkWriter, StreamKind,
    WorkerPos,
};
use serde::{Deserialize, Serialize};

/// Configuration of an `edf` sink.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct EdfSinkConfig {
    /// The file to write (`.edf` or `.bdf`).
    pub path: String,
    /// `edf` (EDF+, 16-bit samples) or `bdf` (BDF+, 24-bit). Default: `bdf` for a `.bdf` path,
    /// else `edf`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub format: Option<String>,
    /// Duration of a data record (default 1 s); the sampling rate × this must be a whole
    /// number of samples. The last record is completed with zeros.
    #[serde(default = "default_record")]
    #[schemars(extend("x-unit" = "s"))]
    pub record_s: f64,
    /// Write the rows' markers as EDF+ annotations (default true).
    #[serde(default = "default_true")]
    pub annotations: bool,
}

fn default_record() -> f64 {
    1.0
}
fn default_true() -> bool {
    true
}

impl NodeConfig for EdfSinkConfig {
    const KIND: &'static str = "edf";
}

/// EDF's 16-bit or BDF's 24-bit samples.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Format {
    Edf,
    Bdf,
}

impl Format {
    fn bytes(self) -> usize {
        match self {
            Format::Edf => 2,
            Format::Bdf => 3,
        }
    }
    fn digital_range(self) -> (i32, i32) {
        match self {
            Format::Edf => (-32768, 32767),
            Format::Bdf => (-8_388_608, 8_388_607),
        }
    }
}

/// The `edf` sink kind.
pub struct EdfSinkKind;

impl SinkKind for EdfSinkKind {
    type Config = EdfSinkConfig;

    fn describe(&self) -> &'static str {
        "EDF+/BDF+ file (ranges from the data, markers as annotations) for EDFbrowser, MNE and clinical viewers"
    }
    fn build(&self, cfg: EdfSinkConfig, ctx: &NodeContext, input: &Arc<Schema>) -> Result<Arc<dyn Sink>> {
        let fail = |m: String| EngineError::config(ctx.label, m);
        let StreamKind::Signal { sample_rate, row_rate } = input.kind else {
            return Err(fail(format!("an EDF file holds signals; the input is {}", input.describe())));
        };
        if row_rate.is_some() {
            return Err(fail(format!(
                "an EDF file holds one row per sample; the input has {} (write it to Parquet)",
                input.describe()
            )));
        }
        let path = ctx.resolve(&cfg.path);
        let format = match cfg.format.as_deref() {
            Some("edf") => Format::Edf,
            Some("bdf") => Format::Bdf,
            Some(other) => return Err(fail(format!("`format` must be \"edf\" or \"bdf\", found \"{other}\""))),
            None if path.extension().is_some_and(|e| e.eq_ignore_ascii_case("bdf")) => Format::Bdf,
            None => Format::Edf,
        };
        let spr = sample_rate * cfg.record_s;
        if !(cfg.record_s > 0.0 && cfg.record_s.is_finite()) || (spr - spr.round()).abs() > 1e-6 || spr.round() < 1.0 {
            return Err(fail(format!(
                "`record_s` = {} s at {sample_rate} Hz is not a whole number of samples per record",
                cfg.record_s
            )));
        }
        let mut labels: Vec<String> = Vec::new();
        for c in &input.channels {
            let label: String = c
                .name
                .chars()
                .filter(|ch| ch.is_ascii() && !ch.is_ascii_control())
                .take(16)
                .collect();
            if label != c.name {
                tracing::warn!(
                    "{}: channel `{}` is written as `{label}` (EDF labels are 16 ASCII characters)",
                    ctx.label,
                    c.name
                );
            }
            if labels.contains(&label) {
                return Err(fail(format!(
                    "channels `{}` and another are both `{label}` in EDF's 16 characters; pick or rename them",
                    c.name
                )));
            }
            labels.push(label);
        }
        let units: Vec<String> = input
            .channels
            .iter()
            .map(|c| {
                c.unit
                    .chars()
                    .filter(|ch| ch.is_ascii() && !ch.is_ascii_control())
                    .take(8)
                    .collect()
            })
            .collect();
        Ok(Arc::new(EdfSink {
            name: ctx.name.to_string(),
            path,
            format,
            spr: spr.round() as usize,
            rate: sample_rate,
            labels,
            units,
            cfg,
        }))
    }
}

struct EdfSink {
    name: String,
    path: PathBuf,
    format: Format,
    spr: usize,
    rate: f64,
    labels: Vec<String>,
    units: Vec<String>,
    cfg: EdfSinkConfig,
}

impl EdfSink {
    fn samples_temp(&self) -> PathBuf {
        let name = self
            .path
            .file_name()
            .map(|n| n.to_string_lossy().to_string())
            .unwrap_or_default();
        self.path
            .with_file_name(format!(".{name}.samples.{}-0.tmp", std::process::id()))
    }
}

impl Sink for EdfSink {
    fn delivery(&self) -> neurostream_engine::checkpoint::Delivery {
        // A resumed run would see only the rows after the checkpoint: its ranges need every row; rows are staged outside the checkpoints.
        neurostream_engine::checkpoint::Delivery::Unsupported
    }
    fn placement(&self) -> Placement {
        Placement::Single
    }
    fn remove_temporaries(&self, owners: neurostream_engine::process::TempOwners) -> Result<Vec<PathBuf>> {
        let dir = self.path.parent().map(Path::to_path_buf).unwrap_or_default();
        let name = self
            .path
            .file_name()
            .map(|n| n.to_string_lossy().to_string())
            .unwrap_or_default();
        let mut removed = Vec::new();
        for e in std::fs::read_dir(if dir.as_os_str().is_empty() { Path::new(".") } else { &dir })
            .into_iter()
            .flatten()
            .flatten()
        {
            let n = e.file_name().to_string_lossy().to_string();
            if n.starts_with(&format!(".{name}.")) && owners.own(&n) {
                let _ = std::fs::remove_file(e.path());
                removed.push(e.path());
            }
        }
        Ok(removed)
    }
    fn open(&self, _worker: WorkerPos) -> Result<Box<dyn SinkWriter>> {
        if let Some(dir) = self.path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(|e| EngineError::Output {
                path: dir.to_path_buf(),
                message: format!("cannot create the directory: {e}"),
            })?;
        }
        let temp = self.samples_temp();
        let file = File::create(&temp).map_err(|e| EngineError::Output {
            path: temp.clone(),
            message: format!("cannot create a temporary file: {e}"),
        })?;
        let width = self.labels.len();
        Ok(Box::new(EdfWriter {
            sink: EdfSink {
                name: self.name.clone(),
                path: self.path.clone(),
                format: self.format,
                spr: self.spr,
                rate: self.rate,
                labels: self.labels.clone(),
                units: self.units.clone(),
                cfg: self.cfg.clone(),
            },
            temp,
            samples: Some(BufWriter::new(file)),
            rows: 0,
            next_sample: None,
            min: vec![f64::INFINITY; width],
            max: vec![f64::NEG_INFINITY; width],
            markers: Vec::new(),
        }))
    }
}

struct EdfWriter {
    sink: EdfSink,
    temp: PathBuf,
    samples: Option<BufWriter<File>>,
    rows: u64,
    /// The sample index the next row must have (EDF holds a continuous recording).
    next_sample: Option<i64>,
    min: Vec<f64>,
    max: Vec<f64>,
    /// (row, label, duration s)
    markers: Vec<(u64, String, f64)>,
}

impl EdfWriter {
    fn out_err(&self, message: String) -> EngineError {
        EngineError::Output {
            path: self.sink.path.clone(),
            message,
        }
    }
}

/// `x` in at most 8 characters, rounded down (`down`) or up so a range stays a bound.
fn edf_number(x: f64, down: bool) -> Option<String> {
    for decimals in (0..=7).rev() {
        let scale = 10f64.powi(decimals);
        let r = if down { (x * scale).floor() } else { (x * scale).ceil() } / scale;
        let s = format!("{r:.*}", decimals as usize);
        let s = if s.contains('.') {
            s.trim_end_matches('0').trim_end_matches('.').to_string()
        } else {
            s
        };
        if s.len() <= 8 {
            return Some(if s == "-0" { "0".into() } else { s });
        }
    }
    None
}

/// A number for a TAL: seconds with up to 7 decimals, no trailing zeros.
fn tal_seconds(x: f64) -> String {
    let s = format!("{x:.7}");
    let s = s.trim_end_matches('0').trim_end_matches('.');
    if s.is_empty() || s == "-0" {
        "0".into()
    } else {
        s.to_string()
    }
}

fn field(out: &mut Vec<u8>, text: &str, width: usize) {
    let mut b: Vec<u8> = text.bytes().take(width).collect();
    b.resize(width, b' ');
    out.extend_from_slice(&b);
}

impl SinkWriter for EdfWriter {
    fn write(&mut self, batch: &Batch) -> Result<()> {
        let Batch::Dense(frame) = batch else {
            return Ok(());
        };
        let RowIndex::Samples(samples) = &frame.index else {
            return Err(self.out_err("the edf sink writes signals indexed by sample".into()));
        };
        for (r, &s) in samples.iter().enumerate() {
            if let Some(expected) = self.next_sample {
                if s != expected {
                    return Err(self.out_err(format!(
                        "rows jump from sample {} to {s}: an EDF file holds a continuous recording",
                        expected - 1
                    )));
                }
            }
            self.next_sample = Some(s + 1);
            for m in frame.markers.iter().filter(|m| m.row as usize == r) {
                self.markers.push((self.rows + r as u64, m.label.clone(), m.duration_s));
            }
        }
        let width = self.min.len();
        let mut bytes = Vec::with_capacity(frame.data.len() * 4);
        for row in frame.data.chunks_exact(width) {
            for (c, &v) in row.iter().enumerate() {
                if v.is_finite() {
                    self.min[c] = self.min[c].min(v as f64);
                    self.max[c] = self.max[c].max(v as f64);
                }
                bytes.extend_from_slice(&v.to_le_bytes());
            }
        }
        self.rows += samples.len() as u64;
        let temp = self.temp.clone();
        self.samples
            .as_mut()
            .expect("open until finish")
            .write_all(&bytes)
            .map_err(|e| EngineError::Output {
                path: temp,
                message: format!("cannot write the rows (disk full?): {e}"),
            })
    }

    fn finish(mut self: Box<Self>, failure: Option<&str>) -> Result<Vec<String>> {
        let samples = self.samples.take();
        drop(samples.map(|mut s| s.flush()));
        let result = if failure.is_some() {
            Ok(vec![format!(
                "no EDF file written to {} (the run failed)",
                self.sink.path.display()
            )])
        } else {
            self.write_file()
        };
        let _ = std::fs::remove_file(&self.temp);
        result
    }
}

impl EdfWriter {
    fn write_file(&self) -> Result<Vec<String>> {
        let s = &self.sink;
        let (dmin, dmax) = s.format.digital_range();
        let width = s.labels.len();
        let records = (self.rows as usize).div_ceil(s.spr).max(1);
        // Physical ranges from the data, rounded outward to what 8 characters hold.
        let mut pmin = Vec::with_capacity(width);
        let mut pmax = Vec::with_capacity(width);
        for c in 0..width {
            let (lo, hi) = if self.min[c] <= self.max[c] {
                (self.min[c], self.max[c])
            } else {
                (0.0, 0.0)
            };
            let (lo, hi) = if hi - lo < 1e-9 * hi.abs().max(1.0) {
                (lo - 1.0, hi + 1.0)
            } else {
                (lo, hi)
            };
            let (Some(a), Some(b)) = (edf_number(lo, true), edf_number(hi, false)) else {
                return Err(self.out_err(format!(
                    "channel `{}` ranges over [{lo}, {hi}], beyond what EDF's 8-character fields hold",
                    s.labels[c]
                )));
            };
            pmin.push(a);
            pmax.push(b);
        }
        // Annotations: each record's time-keeping TAL, then its markers.
        let tals: Vec<Vec<u8>> = (0..records)
            .map(|r| {
                let mut t = format!("+{}\x14\x14\0", tal_seconds(r as f64 * s.cfg.record_s)).into_bytes();
                if s.cfg.annotations {
                    for (row, label, dur) in &self.markers {
                        if (*row as usize) / s.spr == r {
                            let label: String = label.chars().filter(|c| !matches!(c, '\x14' | '\x15' | '\0')).collect();
                            let onset = tal_seconds(*row as f64 / s.rate);
                            let dur = if *dur > 0.0 {
                                format!("\x15{}", tal_seconds(*dur))
                            } else {
                                String::new()
                            };
                            t.extend_from_slice(format!("+{onset}{dur}\x14{label}\x14\0").as_bytes());
                        }
                    }
                }
                t
            })
            .collect();
        let bps = s.format.bytes();
        let ann_samples = tals.iter().map(|t| t.len()).max().unwrap_or(0).max(60).div_ceil(bps);
        let ns = width + 1;
        let mut header = Vec::with_capacity(256 * (ns + 1));
        match s.format {
            Format::Edf => field(&mut header, "0", 8),
            Format::Bdf => {
                header.push(0xff);
                field(&mut header, "BIOSEMI", 7);
            }
        }
        field(&mut header, "X X X X", 80);
        field(&mut header, "Startdate X X X neurostream", 80);
        field(&mut header, "01.01.85", 8);
        field(&mut header, "00.00.00", 8);
        field(&mut header, &(256 * (ns + 1)).to_string(), 8);
        field(&mut header, if s.format == Format::Edf { "EDF+C" } else { "BDF+C" }, 44);
        field(&mut header, &records.to_string(), 8);
        field(&mut header, &tal_seconds(s.cfg.record_s), 8);
        field(&mut header, &ns.to_string(), 4);
        let ann_label = if s.format == Format::Edf {
            "EDF Annotations"
        } else {
            "BDF Annotations"
        };
        let each = |header: &mut Vec<u8>, w: usize, f: &dyn Fn(usize) -> String| {
            for c in 0..ns {
                field(header, &f(c), w);
            }
        };
        each(&mut header, 16, &|c| {
            if c < width {
                s.labels[c].clone()
            } else {
                ann_label.into()
            }
        });
        each(&mut header, 80, &|_| String::new());
        each(&mut header, 8, &|c| {
            if c < width {
                s.units[c].clone()
            } else {
                String::new()
            }
        });
        each(&mut header, 8, &|c| if c < width { pmin[c].clone() } else { "-1".into() });
        each(&mut header, 8, &|c| if c < width { pmax[c].clone() } else { "1".into() });
        each(&mut header, 8, &|_| dmin.to_string());
        each(&mut header, 8, &|_| dmax.to_string());
        each(&mut header, 80, &|_| String::new());
        each(&mut header, 8, &|c| {
            if c < width {
                s.spr.to_string()
            } else {
                ann_samples.to_string()
            }
        });
        each(&mut header, 32, &|_| String::new());
        let gains: Vec<(f64, f64)> = (0..width)
            .map(|c| {
                let (lo, hi): (f64, f64) = (pmin[c].parse().unwrap(), pmax[c].parse().unwrap());
                ((dmax - dmin) as f64 / (hi - lo), lo)
            })
            .collect();
        let write = |temp: &Path| -> std::io::Result<()> {
            let mut out = BufWriter::new(File::create(temp)?);
            out.write_all(&header)?;
            let mut rows = BufReader::new(File::open(&self.temp)?);
            let mut record = vec![0f32; s.spr * width];
            let mut raw = vec![0u8; s.spr * width * 4];
            let mut left = self.rows as usize;
            for tal in &tals {
                let n = left.min(s.spr);
                rows.read_exact(&mut raw[..n * width * 4])?;
                for (i, v) in record.iter_mut().enumerate() {
                    *v = if i < n * width {
                        f32::from_le_bytes(raw[i * 4..i * 4 + 4].try_into().unwrap())
                    } else {
                        0.0
                    };
                }
                left -= n;
                for (c, &(gain, lo)) in gains.iter().enumerate() {
                    for k in 0..s.spr {
                        let x = record[k * width + c] as f64;
                        let d = ((x - lo) * gain + dmin as f64).round().clamp(dmin as f64, dmax as f64) as i32;
                        out.write_all(&d.to_le_bytes()[..bps])?;
                    }
                }
                let mut ann = tal.clone();
                ann.resize(ann_samples * bps, 0);
                out.write_all(&ann)?;
            }
            out.flush()
        };
        neurostream_engine::files::replace_atomic(&s.path, write)
            .map_err(|e| self.out_err(format!("cannot write the EDF file (disk full?): {e}")))?;
        let padded = records * s.spr - self.rows as usize;
        Ok(vec![format!(
            "wrote {} ({} channels × {} samples in {records} records of {} s{}, {} annotations) to {}",
            if s.format == Format::Edf { "EDF+" } else { "BDF+" },
            width,
            self.rows,
            s.cfg.record_s,
            if padded > 0 {
                format!("; the last completed with {padded} zeros")
            } else {
                String::new()
            },
            if s.cfg.annotations { self.markers.len() } else { 0 },
            s.path.display()
        )])
    }
}
