//! Stream schemas: what the columns of a [`Frame`](crate::Frame) mean.

use serde::{Deserialize, Serialize};

/// What kind of data a stream carries, with the metadata that kind needs.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum StreamKind {
    /// Sampled signals (EEG, MEG, ...): rows indexed by sample, usually one row per sample.
    Signal {
        /// Sampling rate in Hz (of the sample index).
        sample_rate: f64,
        /// Rows per second when rows are not one per sample: windowed outputs give one row
        /// per step (`sample_rate / step`), `Some(0.0)` when rows come irregularly (one per
        /// epoch around a marker). `None`: one row per sample.
        #[serde(default)]
        row_rate: Option<f64>,
    },
    /// Model activations: one row per token, `d_model` columns.
    Activation {
        /// Model name, when known (e.g. `SmolLM2-135M`).
        model: Option<String>,
        /// Layer or hook name, when known (e.g. `blocks.15.hook_resid_post`).
        layer: Option<String>,
    },
    /// Named per-token scalars (e.g. reconstruction metrics): dense rows indexed by token.
    TokenScalars {
        /// What computed them, when known.
        producer: Option<String>,
    },
    /// Sparse feature activations (e.g. an SAE's latents): carried as `SparseFrame`s.
    Features {
        /// Number of features (`d_sae`); ids are `0..n_features`.
        n_features: usize,
        /// What produced them (e.g. the SAE's path), when known.
        encoder: Option<String>,
        /// Model name of the activations encoded, when known.
        model: Option<String>,
        /// Layer or hook name of the activations encoded, when known.
        layer: Option<String>,
    },
    /// Result tables (statistics, histograms, alerts), carried as
    /// [`TableFrame`](crate::TableFrame)s; each block names the table it belongs to.
    Tables {
        /// The tables the producer emits, in the order documented by it.
        tables: Vec<String>,
        /// What computed them (the operator kind), when known.
        producer: Option<String>,
    },
}

/// One column of a dense stream.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Channel {
    /// Channel label (`Fz`, `C3`) or activation dimension name (`d17`).
    pub name: String,
    /// Physical unit (`uV`, `V`), empty when unitless.
    pub unit: String,
    /// Channel type in MNE's vocabulary (`eeg`, `mag`, `grad`, `eog`, `emg`, `ecg`, `stim`,
    /// `misc`, ...), empty when unknown. Always serialized: frames cross processes in bincode,
    /// which cannot skip fields.
    #[serde(default)]
    pub kind: String,
}

/// Checks a channel type name: lowercase letters, digits and `_` (MNE's vocabulary: `eeg`,
/// `mag`, `grad`, `eog`, `emg`, `ecg`, `stim`, `misc`, `seeg`, `ecog`, ...).
pub fn check_channel_type(kind: &str) -> Result<(), String> {
    if kind.is_empty()
        || !kind
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
    {
        return Err(format!(
            "channel type `{kind}` is not a type name (eeg, mag, grad, eog, emg, ecg, stim, misc, ...)"
        ));
    }
    Ok(())
}

/// The engine's unit for a channel given in `unit` (of channel type `kind`), and the factor
/// that converts values into it. The engine holds signals in display units: µV for voltages
/// (`eeg`, `eog`, `emg`, `ecg`, ...), fT for magnetometers, fT/cm for gradiometers. `unit` is
/// a unit name (`V`, `mV`, `uV`, `µV`, `microvolts`, `T`, `fT`, `T/m`, ...) or, as MNE-LSL
/// publishes it, the power of ten of the type's SI unit (`0`: volts, `-6`: microvolts).
/// Anything else is kept as it is, with factor 1.
pub fn to_engine_unit(unit: &str, kind: &str) -> (String, f64) {
    let u = unit.trim();
    let si = |family: &str, exp: i32| -> Option<(String, f64)> {
        let scale = 10f64.powi(exp);
        match family {
            "V" => Some(("uV".into(), scale * 1e6)),
            "T" => Some(("fT".into(), scale * 1e15)),
            "T/m" => Some(("fT/cm".into(), scale * 1e13)),
            _ => None,
        }
    };
    if let Ok(exp) = u.parse::<i32>() {
        let family = match kind {
            "mag" => "T",
            "grad" => "T/m",
            "eeg" | "eog" | "emg" | "ecg" | "seeg" | "ecog" | "dbs" | "bio" | "" => "V",
            _ => return (String::new(), 1.0),
        };
        return si(family, exp).unwrap_or((u.to_string(), 1.0));
    }
    let (family, exp) = match u.to_ascii_lowercase().as_str() {
        "v" | "volt" | "volts" => ("V", 0),
        "mv" | "millivolt" | "millivolts" => ("V", -3),
        "uv" | "µv" | "μv" | "microvolt" | "microvolts" => ("V", -6),
        "nv" | "nanovolt" | "nanovolts" => ("V", -9),
        "t" | "tesla" => ("T", 0),
        "pt" | "picotesla" => ("T", -12),
        "ft" | "femtotesla" => ("T", -15),
        "t/m" => ("T/m", 0),
        "ft/cm" => ("T/m", -13),
        _ => return (u.to_string(), 1.0),
    };
    si(family, exp).unwrap_or((u.to_string(), 1.0))
}

/// The factor converting values in unit `from` into unit `to` for a channel of type `kind`
/// (`mV` → `uV`: 1000; `V` → `uV`: 10⁶), when both measure the same quantity in units
/// [`to_engine_unit`] knows, or are the same text; `None` otherwise.
pub fn unit_factor(from: &str, to: &str, kind: &str) -> Option<f64> {
    if from.trim() == to.trim() {
        return Some(1.0);
    }
    let (engine_from, f_from) = to_engine_unit(from, kind);
    let (engine_to, f_to) = to_engine_unit(to, kind);
    let known = ["uV", "fT", "fT/cm"].contains(&engine_from.as_str());
    (known && engine_from == engine_to).then(|| f_from / f_to)
}

/// For each `(channel, unit it was fitted on)` of a model or statistics file (`what`, for
/// messages), matched to input channel `picks[i]`: the factor that brings the input's values
/// into the fitted unit. Different quantities are an error naming the channel and both units;
/// a file that recorded no units is assumed to match, with a warning, since files written
/// before units were recorded say nothing.
pub fn fitted_unit_factors(what: &str, fitted: &[(String, String)], input: &Schema, picks: &[usize]) -> Result<Vec<f64>, String> {
    if fitted.iter().all(|(_, u)| u.is_empty()) {
        if picks.iter().any(|&p| !input.channels[p].unit.is_empty()) {
            tracing::warn!("{what} records no units; assuming it was fitted on data in the input's units");
        }
        return Ok(vec![1.0; picks.len()]);
    }
    fitted
        .iter()
        .zip(picks)
        .map(|((name, unit), &p)| {
            let c = &input.channels[p];
            if unit.is_empty() || c.unit.is_empty() {
                return Ok(1.0);
            }
            unit_factor(&c.unit, unit, &c.kind).ok_or_else(|| {
                format!(
                    "{what} was fitted on channel `{name}` in `{unit}`, but the input's `{}` is in `{}`: not convertible",
                    c.name, c.unit
                )
            })
        })
        .collect()
}

/// The type an EDF+ label names by its conventional prefix (`EEG Fpz-Cz` → `eeg`, `EOG
/// horizontal` → `eog`), or empty.
pub fn channel_type_from_label(label: &str) -> String {
    let head = label.split([' ', '-', '_']).next().unwrap_or_default().to_ascii_uppercase();
    match head.as_str() {
        "EEG" => "eeg",
        "EOG" => "eog",
        "EMG" => "emg",
        "ECG" | "EKG" => "ecg",
        "RESP" => "resp",
        "STI" | "STIM" | "STATUS" | "TRIGGER" => "stim",
        _ => "",
    }
    .to_string()
}

/// The schema of a dense stream: its kind and its channels, in column order.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Schema {
    /// Signal or activation, with kind-specific metadata.
    pub kind: StreamKind,
    /// One entry per column, in order; `channels.len()` is the row width of dense streams
    /// (empty for [`StreamKind::Features`], whose width is `n_features`).
    pub channels: Vec<Channel>,
}

impl Schema {
    /// A signal schema: channels named `names`, all in `unit`, sampled at `sample_rate` Hz.
    pub fn signal<S: AsRef<str>>(names: &[S], unit: &str, sample_rate: f64) -> Schema {
        Schema {
            kind: StreamKind::Signal {
                sample_rate,
                row_rate: None,
            },
            channels: names
                .iter()
                .map(|n| Channel {
                    name: n.as_ref().to_string(),
                    unit: unit.to_string(),
                    kind: String::new(),
                })
                .collect(),
        }
    }

    /// An activation schema of width `d_model`, dimensions named `d0..d{d_model-1}`.
    pub fn activation(d_model: usize, model: Option<String>, layer: Option<String>) -> Schema {
        Schema {
            kind: StreamKind::Activation { model, layer },
            channels: (0..d_model)
                .map(|i| Channel {
                    name: format!("d{i}"),
                    ..Channel::default()
                })
                .collect(),
        }
    }

    /// Number of columns per row (channels, or `d_model`).
    pub fn width(&self) -> usize {
        match self.kind {
            StreamKind::Features { n_features, .. } => n_features,
            _ => self.channels.len(),
        }
    }

    /// Per-token scalar columns named `names`, computed by `producer`.
    pub fn token_scalars<S: AsRef<str>>(names: &[S], producer: Option<String>) -> Schema {
        Schema {
            kind: StreamKind::TokenScalars { producer },
            channels: names
                .iter()
                .map(|n| Channel {
                    name: n.as_ref().to_string(),
                    ..Channel::default()
                })
                .collect(),
        }
    }

    /// A sparse feature schema of `n_features` features.
    pub fn features(n_features: usize, encoder: Option<String>, model: Option<String>, layer: Option<String>) -> Schema {
        Schema {
            kind: StreamKind::Features {
                n_features,
                encoder,
                model,
                layer,
            },
            channels: Vec::new(),
        }
    }

    /// A schema for result tables named `tables`, produced by `producer`.
    pub fn tables(tables: Vec<String>, producer: Option<String>) -> Schema {
        Schema {
            kind: StreamKind::Tables { tables, producer },
            channels: Vec::new(),
        }
    }

    /// True for result-table streams.
    pub fn is_tables(&self) -> bool {
        matches!(self.kind, StreamKind::Tables { .. })
    }

    /// True for sparse feature streams.
    pub fn is_sparse(&self) -> bool {
        matches!(self.kind, StreamKind::Features { .. })
    }

    /// Sampling rate in Hz for signal streams, `None` for activations.
    pub fn sample_rate(&self) -> Option<f64> {
        match self.kind {
            StreamKind::Signal { sample_rate, .. } => Some(sample_rate),
            _ => None,
        }
    }

    /// Rows per second: the sampling rate for signals of one row per sample, the window rate
    /// of windowed outputs, 0 for irregular rows (epochs) and for streams that are not signals.
    pub fn row_rate(&self) -> f64 {
        match self.kind {
            StreamKind::Signal { sample_rate, row_rate } => row_rate.unwrap_or(sample_rate),
            _ => 0.0,
        }
    }

    /// True for signal streams.
    pub fn is_signal(&self) -> bool {
        matches!(self.kind, StreamKind::Signal { .. })
    }

    /// Channel names in column order.
    pub fn channel_names(&self) -> Vec<&str> {
        self.channels.iter().map(|c| c.name.as_str()).collect()
    }

    /// A short human description, e.g. `signal, 8 channels at 256 Hz`.
    pub fn describe(&self) -> String {
        match &self.kind {
            StreamKind::Signal { sample_rate, row_rate } => match row_rate {
                None => format!("signal, {} channels at {} Hz", self.width(), sample_rate),
                Some(0.0) => format!(
                    "signal, {} channels, irregular rows (samples at {sample_rate} Hz)",
                    self.width()
                ),
                Some(r) => format!("signal, {} channels, {r} rows/s (samples at {sample_rate} Hz)", self.width()),
            },
            StreamKind::Activation { model, layer } => {
                let mut s = format!("activations, d_model {}", self.width());
                if let Some(m) = model {
                    s.push_str(&format!(", model {m}"));
                }
                if let Some(l) = layer {
                    s.push_str(&format!(", layer {l}"));
                }
                s
            }
            StreamKind::TokenScalars { producer } => {
                let mut s = format!("token scalars ({})", self.channel_names().join(", "));
                if let Some(p) = producer {
                    s.push_str(&format!(", from {p}"));
                }
                s
            }
            StreamKind::Tables { tables, producer } => {
                let mut s = format!("tables ({})", tables.join(", "));
                if let Some(p) = producer {
                    s.push_str(&format!(", from {p}"));
                }
                s
            }
            StreamKind::Features { n_features, encoder, .. } => {
                let mut s = format!("features, {n_features} sparse");
                if let Some(e) = encoder {
                    s.push_str(&format!(", from {e}"));
                }
                s
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn close(a: f64, b: f64) -> bool {
        (a - b).abs() <= 1e-9 * b.abs().max(1.0)
    }

    #[test]
    fn units_convert_to_display_units() {
        for (unit, kind, want, factor) in [
            ("0", "eeg", "uV", 1e6),
            ("-6", "eeg", "uV", 1.0),
            ("0", "mag", "fT", 1e15),
            ("0", "grad", "fT/cm", 1e13),
            ("microvolts", "eeg", "uV", 1.0),
            ("µV", "", "uV", 1.0),
            ("mV", "ecg", "uV", 1e3),
            ("V", "eeg", "uV", 1e6),
            ("pT", "mag", "fT", 1e3),
            ("fT/cm", "grad", "fT/cm", 1.0),
        ] {
            let (u, f) = to_engine_unit(unit, kind);
            assert_eq!(u, want, "{unit} {kind}");
            assert!(close(f, factor), "{unit} {kind}: {f} vs {factor}");
        }
        assert_eq!(to_engine_unit("0", "stim"), (String::new(), 1.0));
        assert_eq!(to_engine_unit("degC", "temperature"), ("degC".into(), 1.0));
    }

    #[test]
    fn edf_label_prefixes_name_types() {
        assert_eq!(channel_type_from_label("EEG Fpz-Cz"), "eeg");
        assert_eq!(channel_type_from_label("EOG horizontal"), "eog");
        assert_eq!(channel_type_from_label("Fp1"), "");
        assert!(check_channel_type("eeg").is_ok() && check_channel_type("EEG").is_err());
    }
}
