//! An EEGLAB dataset: the `.set` file (a MAT-file holding the `EEG` struct, or its fields as
//! variables) and its samples, in the `.set` or in the `.fdt` file it names. Read as MNE's
//! `read_raw_eeglab` reads it: channel names from `chanlocs.labels` (`EEG 000`, … without
//! chanlocs), samples in µV, events from `EEG.event` (`type` as the label, `latency` in 1-based
//! samples, `duration` in samples).

use std::io::{self, Cursor, Read};
use std::path::{Path, PathBuf};

use super::mat::{self, dims_text, MatFile, MiType, Numbers, Payload, Value};
use crate::recording::Event;

/// Where a dataset's samples are.
#[derive(Clone, Debug, PartialEq)]
pub enum Samples {
    /// A `.fdt` file: float32, little-endian, every channel of a sample together.
    Fdt(PathBuf),
    /// `EEG.data` in the `.set` (channels × samples, column-major: also a sample at a time).
    InSet(Payload),
    /// `EEG.data`, small enough to have been read with the header.
    Loaded(Vec<f64>),
}

/// An EEGLAB dataset's header, channels and events; the samples are read with [`Dataset::open_samples`].
#[derive(Clone, Debug, PartialEq)]
pub struct Dataset {
    /// The `.set` file.
    pub path: PathBuf,
    /// Sampling rate (`EEG.srate`), Hz.
    pub rate: f64,
    /// Channel labels, in data order.
    pub labels: Vec<String>,
    /// Channel types in MNE's vocabulary (`eeg`, `eog`, …), from `chanlocs.type` where it names
    /// one, else guessed from the label (`eeg` when nothing says otherwise).
    pub kinds: Vec<String>,
    /// Samples per channel (`EEG.pnts`).
    pub samples: u64,
    /// Where the samples are.
    pub data: Samples,
    /// Events with a finite latency, sorted by sample.
    pub events: Vec<Event>,
    /// Events left out because their latency was NaN or empty (as EEGLAB and MNE ignore them).
    pub events_without_latency: usize,
}

/// Channel types `chanlocs.type` may name (MNE's, lowercase) that the engine keeps.
const KNOWN_TYPES: &[&str] = &[
    "eeg",
    "eog",
    "ecg",
    "emg",
    "stim",
    "misc",
    "resp",
    "bio",
    "seeg",
    "ecog",
    "dbs",
    "gsr",
    "temperature",
    "syst",
    "eyegaze",
    "pupil",
    "ref_meg",
    "mag",
    "grad",
];

impl Dataset {
    /// Reads the dataset header of the `.set` file at `path` and checks it against its data.
    /// Errors name the file and the field.
    pub fn open(path: &Path) -> Result<Dataset, String> {
        let at = |e: String| format!("{}: {e}", path.display());
        let file = mat::read(path).map_err(at)?;
        read_dataset(path, &file).map_err(at)
    }

    /// A reader of the samples, channel values of one sample after another, each stored as the
    /// returned type in the returned byte order (`true`: big-endian).
    pub fn open_samples(&self) -> io::Result<(Box<dyn Read + Send>, MiType, bool)> {
        Ok(match &self.data {
            Samples::Fdt(fdt) => (
                Box::new(io::BufReader::with_capacity(1 << 20, std::fs::File::open(fdt)?)),
                MiType::Single,
                false,
            ),
            Samples::InSet(payload) => (payload.open(&self.path)?, payload.mi, payload.big_endian),
            Samples::Loaded(values) => {
                let bytes: Vec<u8> = values.iter().flat_map(|v| v.to_le_bytes()).collect();
                (Box::new(Cursor::new(bytes)), MiType::Double, false)
            }
        })
    }
}

/// The dataset's fields: those of the `EEG` struct, or the file's variables (EEGLAB saves a
/// dataset's fields as variables when asked to).
struct Fields<'a> {
    eeg: Option<&'a Value>,
    file: &'a MatFile,
}

impl<'a> Fields<'a> {
    fn get(&self, name: &str) -> Option<&'a Value> {
        match self.eeg {
            Some(eeg) => eeg.field(name),
            None => self.file.get(name),
        }
    }

    fn number(&self, name: &str) -> Result<f64, String> {
        let v = self
            .get(name)
            .ok_or_else(|| format!("field `{name}` is missing: not an EEGLAB dataset?"))?;
        v.scalar()
            .ok_or_else(|| format!("field `{name}`: a {}, expected one number", v.describe()))
    }

    fn count(&self, name: &str, default: Option<u64>, max: u64) -> Result<u64, String> {
        let n = match (self.get(name), default) {
            (None, Some(d)) => return Ok(d),
            _ => self.number(name)?,
        };
        if !(n.fract() == 0.0 && (0.0..=max as f64).contains(&n)) {
            return Err(format!("field `{name}` is {n}, expected a whole number from 0 to {max}"));
        }
        Ok(n as u64)
    }
}

fn read_dataset(path: &Path, file: &MatFile) -> Result<Dataset, String> {
    if file.get("ALLEEG").is_some() {
        return Err("holds an ALLEEG array of datasets; save one dataset per file (pop_saveset)".into());
    }
    let eeg = match file.get("EEG") {
        Some(v @ Value::Struct { elements, .. }) if elements.len() == 1 => Some(v),
        Some(Value::Struct { elements, .. }) => {
            return Err(format!(
                "variable `EEG` holds {} datasets; save one dataset per file",
                elements.len()
            ))
        }
        Some(other) => return Err(format!("variable `EEG` is a {}, not a dataset struct", other.describe())),
        None => None,
    };
    let fields = Fields { eeg, file };
    let channels = fields.count("nbchan", None, crate::MAX_CHANNELS as u64)?;
    if channels == 0 {
        return Err("field `nbchan` is 0: the dataset has no channels".into());
    }
    let samples = fields.count("pnts", None, u64::MAX >> 8)?;
    if samples == 0 {
        return Err("field `pnts` is 0: the dataset has no samples".into());
    }
    let trials = fields.count("trials", Some(1), u32::MAX as u64)?;
    if trials != 1 {
        return Err(format!(
            "field `trials` is {trials}: the dataset holds epochs, and the eeglab source reads continuous data \
             (read epochs with mne.io.read_epochs_eeglab)"
        ));
    }
    let rate = fields.number("srate")?;
    if !(rate.is_finite() && rate > 0.0 && rate <= 1e9) {
        return Err(format!("field `srate` is {rate}, expected a sampling rate in Hz above 0"));
    }
    let (labels, kinds) = channel_labels(&fields, channels as usize)?;
    let data = samples_of(path, &fields, channels, samples)?;
    let (events, events_without_latency) = events(&fields, rate)?;
    Ok(Dataset {
        path: path.to_path_buf(),
        rate,
        labels,
        kinds,
        samples,
        data,
        events,
        events_without_latency,
    })
}

/// Labels and types from `chanlocs`, or `EEG 000`, `EEG 001`, … (as MNE names them) without.
fn channel_labels(fields: &Fields, channels: usize) -> Result<(Vec<String>, Vec<String>), String> {
    let chanlocs = match fields.get("chanlocs") {
        None => None,
        Some(v) if v.is_empty() => None,
        Some(v) => Some(v),
    };
    let Some(chanlocs) = chanlocs else {
        let labels = (0..channels).map(|i| format!("EEG {i:03}")).collect();
        return Ok((labels, vec!["eeg".into(); channels]));
    };
    let Value::Struct {
        fields: names, elements, ..
    } = chanlocs
    else {
        return Err(format!(
            "field `chanlocs`: a {}, expected a struct array",
            chanlocs.describe()
        ));
    };
    if elements.len() != channels {
        return Err(format!(
            "field `chanlocs` describes {} channels, but `nbchan` is {channels}",
            elements.len()
        ));
    }
    let label_at = names
        .iter()
        .position(|n| n == "labels")
        .ok_or("field `chanlocs` has no `labels`")?;
    let type_at = names.iter().position(|n| n == "type");
    let mut labels = Vec::with_capacity(channels);
    let mut kinds = Vec::with_capacity(channels);
    for (i, e) in elements.iter().enumerate() {
        let label = match &e[label_at] {
            Value::Char(s) => s.trim().to_string(),
            v => match v.scalar() {
                Some(x) => number_text(x, v),
                None => return Err(format!("chanlocs({}).labels: a {}, expected text", i + 1, v.describe())),
            },
        };
        let named = match type_at.map(|t| &e[t]) {
            Some(Value::Char(t)) => Some(t.trim().to_ascii_lowercase()),
            _ => None,
        };
        let kind = match named {
            Some(t) if KNOWN_TYPES.contains(&t.as_str()) => t,
            _ => match neurostream_engine::schema::channel_type_from_label(&label) {
                k if k.is_empty() => "eeg".into(),
                k => k,
            },
        };
        labels.push(label);
        kinds.push(kind);
    }
    Ok((labels, kinds))
}

/// `EEG.data`: the name of a `.fdt` file beside the `.set`, or the samples themselves.
fn samples_of(path: &Path, fields: &Fields, channels: u64, samples: u64) -> Result<Samples, String> {
    let data = fields.get("data").ok_or("field `data` is missing: not an EEGLAB dataset?")?;
    let values = channels
        .checked_mul(samples)
        .ok_or_else(|| format!("`nbchan` {channels} × `pnts` {samples} overflows"))?;
    match data {
        Value::Char(name) => {
            let fdt = fdt_path(path, name)?;
            let len = std::fs::metadata(&fdt)
                .map_err(|e| format!("data file {}: {e}", fdt.display()))?
                .len();
            let want = values.checked_mul(4).ok_or("the data size overflows")?;
            if len != want {
                return Err(format!(
                    "data file {} holds {len} bytes, but `nbchan` {channels} × `pnts` {samples} float32 take {want}{}",
                    fdt.display(),
                    if len < want { " (truncated?)" } else { "" }
                ));
            }
            Ok(Samples::Fdt(fdt))
        }
        Value::Numeric {
            dims, complex, numbers, ..
        } => {
            let shape_ok = dims.len() >= 2 && dims[0] == channels && dims[1] == samples && dims[2..].iter().all(|d| *d == 1);
            if !shape_ok {
                return Err(format!(
                    "field `data` is {}, but `nbchan` × `pnts` is {channels} × {samples}",
                    dims_text(dims)
                ));
            }
            if *complex {
                return Err("field `data` is complex".into());
            }
            Ok(match numbers {
                Numbers::Loaded(v) => Samples::Loaded(v.clone()),
                Numbers::InFile(p) => Samples::InSet(p.clone()),
            })
        }
        other => Err(format!(
            "field `data`: a {}, expected the samples or the name of a .fdt file",
            other.describe()
        )),
    }
}

/// The `.fdt` file `name` names, beside the `.set`; as MNE, the `.set`'s own name with `.fdt`
/// when that one is not there (the files were renamed). Only the file name of `name` is used:
/// a dataset cannot point the reader elsewhere.
fn fdt_path(set: &Path, name: &str) -> Result<PathBuf, String> {
    let base = name.rsplit(['/', '\\']).next().unwrap_or_default().trim();
    if base.to_ascii_lowercase().ends_with(".dat") {
        return Err(format!(
            "field `data` names `{base}`, an old EEGLAB .dat file: resave the dataset in EEGLAB (its samples go to a .fdt)"
        ));
    }
    let dir = set.parent().unwrap_or(Path::new("."));
    let named = dir.join(base);
    if !base.is_empty() && named.is_file() {
        return Ok(named);
    }
    let renamed = set.with_extension("fdt");
    if renamed.is_file() {
        tracing::warn!(
            "{}: field `data` names `{base}`, which is not there; reading {} (the files were renamed?)",
            set.display(),
            renamed.display()
        );
        return Ok(renamed);
    }
    if named == renamed {
        return Err(format!(
            "field `data` names the data file `{base}`: {} is not there",
            named.display()
        ));
    }
    Err(format!(
        "field `data` names the data file `{base}`: found neither {} nor {}",
        named.display(),
        renamed.display()
    ))
}

/// `EEG.event` as events, sorted by sample, and the count of those without a latency.
fn events(fields: &Fields, rate: f64) -> Result<(Vec<Event>, usize), String> {
    let event = match fields.get("event") {
        None => return Ok((Vec::new(), 0)),
        Some(v) if v.is_empty() => return Ok((Vec::new(), 0)),
        Some(v) => v,
    };
    let Value::Struct {
        fields: names, elements, ..
    } = event
    else {
        return Err(format!("field `event`: a {}, expected a struct array", event.describe()));
    };
    let at = |n: &str| names.iter().position(|f| f == n);
    let latency_at = at("latency").ok_or("field `event` has no `latency`")?;
    let (type_at, duration_at) = (at("type"), at("duration"));
    let mut out = Vec::with_capacity(elements.len());
    let mut without = 0;
    for (i, e) in elements.iter().enumerate() {
        let latency = match e[latency_at].scalar() {
            Some(l) if l.is_finite() => l,
            Some(l) if l.is_nan() => {
                without += 1;
                continue;
            }
            None if e[latency_at].is_empty() => {
                without += 1;
                continue;
            }
            _ => {
                return Err(format!(
                    "event({}).latency: a {}, expected a finite sample number",
                    i + 1,
                    e[latency_at].describe()
                ))
            }
        };
        let label = match type_at.map(|t| &e[t]) {
            Some(Value::Char(s)) => s.clone(),
            Some(v) => v.scalar().map(|x| number_text(x, v)).unwrap_or_default(),
            None => String::new(),
        };
        let duration = duration_at
            .and_then(|d| e[d].scalar())
            .filter(|d| d.is_finite() && *d > 0.0)
            .unwrap_or(0.0);
        out.push(Event {
            // EEGLAB latencies count samples from 1.
            sample: (latency - 1.0).round() as i64,
            label,
            duration_s: duration / rate,
        });
    }
    out.sort_by_key(|e| e.sample);
    Ok((out, without))
}

/// A numeric label as MNE writes it (`str()` of what it reads): `1.0` for a double or single,
/// `1` for an integer class.
fn number_text(x: f64, v: &Value) -> String {
    let float = matches!(v, Value::Numeric { class: 6 | 7, .. });
    if float {
        format!("{x:?}")
    } else {
        format!("{x}")
    }
}
