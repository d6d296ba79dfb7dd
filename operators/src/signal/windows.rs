//! Cutting a signal stream into analysis windows, shared by the per-window operators
//! (`bandpower`, `decode`): sliding windows (length, step) or epochs around markers (tmin,
//! tmax, baseline correction, peak-to-peak rejection). Windows are cut by row position, so
//! gaps in sample indices (EDF+D) do not shift them; each carries the sample index of its last
//! row (when a causal decision about it can be made) and a label.

use std::collections::VecDeque;

use neurostream_engine::layout::check_values;
use neurostream_engine::{Frame, RowIndex};
use serde::{Deserialize, Serialize};

/// How windows are cut (the keys shared by every per-window operator).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct WindowConfig {
    /// Sliding windows: length in seconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(extend("x-unit" = "s"))]
    pub window_s: Option<f64>,
    /// Sliding windows: step in seconds (default: the length, no overlap).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(extend("x-unit" = "s"))]
    pub step_s: Option<f64>,
    /// Sliding windows: label each window with the marker whose span (onset, duration) covers
    /// its centre (e.g. the sleep stage of a hypnogram), or else the latest instantaneous one.
    #[serde(default)]
    pub label_from_markers: bool,
    /// Epochs: cut one window around each marker whose label is listed (seconds `tmin..tmax`
    /// relative to the marker; `tmin` may be negative).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub epochs: Option<Vec<String>>,
    /// Epochs: start relative to the marker, seconds.
    #[serde(default)]
    #[schemars(extend("x-unit" = "s"))]
    pub tmin: f64,
    /// Epochs: end relative to the marker, seconds (inclusive of the sample at `tmax`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(extend("x-unit" = "s"))]
    pub tmax: Option<f64>,
    /// Epochs: subtract each channel's mean over `[a, b]` seconds relative to the marker.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(extend("x-unit" = "s"))]
    pub baseline: Option<[f64; 2]>,
    /// Epochs: drop an epoch when any channel's peak-to-peak amplitude exceeds this (the
    /// signal's units); drops are counted and reported.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(extend("x-unit" = "signal units"))]
    pub reject_ptp: Option<f64>,
}

/// The resolved cutting rule, in samples.
#[derive(Clone, Debug, PartialEq)]
pub enum WindowSpec {
    /// Every `step` rows, the `length` rows that follow.
    Sliding {
        /// Rows per window.
        length: usize,
        /// Rows between window starts.
        step: usize,
        /// Label windows from covering markers.
        label: bool,
    },
    /// Around each marker with a listed label.
    Epochs {
        /// Labels that start an epoch.
        labels: Vec<String>,
        /// First row relative to the marker's row.
        start: i64,
        /// Rows per epoch (`tmin..=tmax`).
        length: usize,
        /// Baseline rows relative to the marker (`a..=b`).
        baseline: Option<(i64, i64)>,
        /// Peak-to-peak rejection threshold.
        reject_ptp: Option<f64>,
    },
}

impl WindowSpec {
    /// Rows per window or epoch.
    pub fn length(&self) -> usize {
        match self {
            WindowSpec::Sliding { length, .. } | WindowSpec::Epochs { length, .. } => *length,
        }
    }

    /// Output rows per second over an input of `input_rows_per_s`: one per step of sliding
    /// windows, 0 (irregular) for epochs.
    pub fn row_rate(&self, input_rows_per_s: f64) -> f64 {
        match self {
            WindowSpec::Sliding { step, .. } => input_rows_per_s / *step as f64,
            WindowSpec::Epochs { .. } => 0.0,
        }
    }
}

impl WindowConfig {
    /// Resolves to samples at `fs` Hz for `channels` channels; errors name the key. A window
    /// (or epoch) of more than [`MAX_VALUES`](neurostream_engine::layout::MAX_VALUES) values is refused: it would have to be held in
    /// memory whole.
    pub fn resolve(&self, fs: f64, channels: usize) -> Result<WindowSpec, String> {
        // Saturating conversion: absurd times become absurd (not wrapped) sample counts, which
        // the size check below refuses.
        let samples = |s: f64| (s * fs).round().clamp(-(1i64 << 52) as f64, (1i64 << 52) as f64) as i64;
        let check = |what: &str, rows: i64| check_values(what, rows.max(0) as usize, channels.max(1));
        match (&self.epochs, self.window_s) {
            (Some(_), Some(_)) => Err("give `window_s` (sliding windows) or `epochs` (around markers), not both".into()),
            (None, None) => Err("give `window_s` (sliding windows) or `epochs` (marker labels to cut epochs around)".into()),
            (None, Some(w)) => {
                let length = samples(w);
                let step = samples(self.step_s.unwrap_or(w));
                if length < 1 || step < 1 {
                    return Err(format!("`window_s` and `step_s` must be at least one sample (1/{fs} s)"));
                }
                check("`window_s` (samples × channels)", length)?;
                Ok(WindowSpec::Sliding {
                    length: length as usize,
                    step: step as usize,
                    label: self.label_from_markers,
                })
            }
            (Some(labels), None) => {
                let Some(tmax) = self.tmax else {
                    return Err("epochs need `tmax` (seconds after the marker)".into());
                };
                let (start, end) = (samples(self.tmin), samples(tmax));
                if end < start {
                    return Err(format!("`tmax` {tmax} is before `tmin` {}", self.tmin));
                }
                check("`tmin`..`tmax` (samples × channels)", end - start + 1)?;
                let baseline = match self.baseline {
                    None => None,
                    Some([a, b]) => {
                        let (a, b) = (samples(a), samples(b));
                        if a < start || b > end || b < a {
                            return Err(format!("`baseline` {:?} must lie within tmin..tmax", self.baseline.unwrap()));
                        }
                        Some((a, b))
                    }
                };
                Ok(WindowSpec::Epochs {
                    labels: labels.clone(),
                    start,
                    length: (end - start + 1) as usize,
                    baseline,
                    reject_ptp: self.reject_ptp,
                })
            }
        }
    }
}

/// One cut window.
#[derive(Clone, Debug, PartialEq)]
pub struct Window {
    /// Stream position (0-based row count) of its first row.
    pub start: u64,
    /// Sample index of its first row.
    pub first_sample: i64,
    /// Sample index of its last row.
    pub last_sample: i64,
    /// `rows × channels`, row-major; empty when the windower keeps no rows (see
    /// [`Windower::take_rows`]).
    pub data: Vec<f32>,
    /// The epoch's marker label, or the covering marker's label.
    pub label: Option<String>,
}

/// What a [`Windower`] holds between frames, for checkpoints: the buffered rows, the stream
/// positions, the pending markers and the counts.
#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
pub struct WindowerState {
    rows: Vec<f32>,
    samples: Vec<i64>,
    base: u64,
    seen: u64,
    next_start: u64,
    markers: Vec<(u64, String, u64)>,
    rejected: u64,
    incomplete: u64,
}

/// Cuts one stream's frames into windows.
pub struct Windower {
    spec: WindowSpec,
    channels: usize,
    /// Buffered rows and their sample indices; `base` is the stream position of `rows[0]`.
    rows: VecDeque<f32>,
    samples: VecDeque<i64>,
    base: u64,
    /// Rows seen so far (stream positions are 0-based row counts).
    seen: u64,
    /// Sliding: position of the next window start.
    next_start: u64,
    /// Markers (position, label, duration in rows), pending or covering.
    markers: VecDeque<(u64, String, u64)>,
    /// Epochs dropped by peak-to-peak rejection, and epochs whose window fell off the stream.
    pub rejected: u64,
    /// Epochs that could not be cut (too close to the start or the end of the stream).
    pub incomplete: u64,
    rate: f64,
    /// Whether rows are buffered here (false: their owner keeps them, e.g. on a GPU).
    keeps_rows: bool,
}

impl Windower {
    /// A windower for a stream of `channels` channels at `rate` Hz.
    pub fn new(spec: WindowSpec, channels: usize, rate: f64) -> Windower {
        Windower {
            spec,
            channels,
            rows: VecDeque::new(),
            samples: VecDeque::new(),
            base: 0,
            seen: 0,
            next_start: 0,
            markers: VecDeque::new(),
            rejected: 0,
            incomplete: 0,
            rate,
            keeps_rows: true,
        }
    }

    /// Its state between frames.
    pub fn state(&self) -> WindowerState {
        self.state_with_rows(self.rows.iter().copied().collect())
    }

    /// Its state between frames, with `rows` as the buffered rows (positions
    /// [`Windower::base`]`..`[`Windower::seen`]), for a windower whose rows live elsewhere.
    pub fn state_with_rows(&self, rows: Vec<f32>) -> WindowerState {
        WindowerState {
            rows,
            samples: self.samples.iter().copied().collect(),
            base: self.base,
            seen: self.seen,
            next_start: self.next_start,
            markers: self.markers.iter().cloned().collect(),
            rejected: self.rejected,
            incomplete: self.incomplete,
        }
    }

    /// A windower of `spec` continuing from `state` (saved by [`Windower::state`] with the same
    /// channel count).
    pub fn restored(spec: WindowSpec, channels: usize, rate: f64, state: WindowerState) -> Result<Windower, String> {
        if state.rows.len() != state.samples.len() * channels || state.base + state.samples.len() as u64 != state.seen {
            return Err(format!(
                "the saved window buffer ({} values, {} samples, position {}..{}) does not fit {channels} channels",
                state.rows.len(),
                state.samples.len(),
                state.base,
                state.seen
            ));
        }
        let mut w = Windower::new(spec, channels, rate);
        w.rows = state.rows.into();
        w.samples = state.samples.into();
        w.base = state.base;
        w.seen = state.seen;
        w.next_start = state.next_start;
        w.markers = state.markers.into();
        w.rejected = state.rejected;
        w.incomplete = state.incomplete;
        Ok(w)
    }

    /// Hands over the buffered rows (positions [`Windower::base`]`..`[`Windower::seen`]) and
    /// keeps no rows from then on: windows come with their positions and empty `data`, and the
    /// caller keeps the rows (a GPU operator keeps them on its device). Sliding windows only:
    /// epochs need the rows for baseline correction and rejection.
    pub fn take_rows(&mut self) -> Vec<f32> {
        debug_assert!(matches!(self.spec, WindowSpec::Sliding { .. }));
        self.keeps_rows = false;
        std::mem::take(&mut self.rows).into()
    }

    /// Stream position of the first row still needed (rows before it are dropped).
    pub fn base(&self) -> u64 {
        self.base
    }

    /// Rows seen so far.
    pub fn seen(&self) -> u64 {
        self.seen
    }

    /// Adds a frame; returns the windows it completes, in order.
    pub fn push(&mut self, frame: &Frame) -> Vec<Window> {
        let RowIndex::Samples(samples) = &frame.index else {
            return Vec::new();
        };
        for m in &frame.markers {
            let dur = (m.duration_s * self.rate).round().max(0.0) as u64;
            self.markers.push_back((self.seen + m.row as u64, m.label.clone(), dur));
        }
        if self.keeps_rows {
            self.rows.extend(frame.data.iter().copied());
        }
        self.samples.extend(samples.iter().copied());
        self.seen += samples.len() as u64;
        let mut out = Vec::new();
        match self.spec.clone() {
            WindowSpec::Sliding { length, step, label } => {
                while self.next_start + length as u64 <= self.seen {
                    let start = self.next_start;
                    let mut w = self.cut(start, length);
                    if label {
                        w.label = self.covering_label(start + length as u64 / 2);
                    }
                    out.push(w);
                    self.next_start += step as u64;
                }
                self.trim(self.next_start);
            }
            WindowSpec::Epochs {
                labels,
                start,
                length,
                baseline,
                reject_ptp,
            } => {
                while let Some((at, label, _)) = self.markers.front().cloned() {
                    if !labels.contains(&label) {
                        self.markers.pop_front();
                        continue;
                    }
                    let first = at as i64 + start;
                    if first < self.base as i64 {
                        self.incomplete += 1; // starts before the stream (or before what was kept)
                        self.markers.pop_front();
                        continue;
                    }
                    if first as u64 + length as u64 > self.seen {
                        break; // not complete yet
                    }
                    self.markers.pop_front();
                    let mut w = self.cut(first as u64, length);
                    w.label = Some(label);
                    if let Some((a, b)) = baseline {
                        let c = self.channels;
                        let (a, b) = ((a - start) as usize, (b - start) as usize);
                        for ch in 0..c {
                            let mean = (a..=b).map(|r| w.data[r * c + ch] as f64).sum::<f64>() / (b - a + 1) as f64;
                            for r in 0..length {
                                w.data[r * c + ch] = (w.data[r * c + ch] as f64 - mean) as f32;
                            }
                        }
                    }
                    if let Some(limit) = reject_ptp {
                        if ptp_exceeds(&w.data, self.channels, limit) {
                            self.rejected += 1;
                            continue;
                        }
                    }
                    out.push(w);
                }
                // Keep enough history for epochs that start before their marker.
                let keep_from = self.seen.saturating_sub(start.unsigned_abs().max(1));
                let pending = self
                    .markers
                    .front()
                    .map_or(keep_from, |(at, _, _)| ((*at as i64 + start).max(0) as u64).min(keep_from));
                self.trim(pending.min(keep_from));
            }
        }
        out
    }

    /// Counts epochs whose markers never got their full window (the stream ended).
    pub fn finish(&mut self) {
        if let WindowSpec::Epochs { labels, .. } = &self.spec {
            self.incomplete += self.markers.iter().filter(|(_, l, _)| labels.contains(l)).count() as u64;
            self.markers.clear();
        }
    }

    fn cut(&self, start: u64, length: usize) -> Window {
        let c = self.channels;
        let off = (start - self.base) as usize;
        let data: Vec<f32> = match self.keeps_rows {
            true => copy_range(&self.rows, off * c..(off + length) * c),
            false => Vec::new(),
        };
        Window {
            start,
            first_sample: self.samples[off],
            last_sample: self.samples[off + length - 1],
            data,
            label: None,
        }
    }

    /// The label of the latest marker whose span covers `centre`, else of the latest
    /// instantaneous marker before it.
    fn covering_label(&self, centre: u64) -> Option<String> {
        let started = || self.markers.iter().filter(|m| m.0 <= centre);
        started()
            .rfind(|m| m.2 > 0 && centre < m.0 + m.2)
            .or_else(|| started().rfind(|m| m.2 == 0))
            .map(|m| m.1.clone())
    }

    /// Drops buffered rows before stream position `pos`, and markers that can no longer matter.
    fn trim(&mut self, pos: u64) {
        if pos > self.base {
            let n = ((pos - self.base) as usize).min(self.samples.len());
            if self.keeps_rows {
                self.rows.drain(..n * self.channels);
            }
            self.samples.drain(..n);
            self.base += n as u64;
        }
        if let WindowSpec::Sliding { .. } = self.spec {
            // Keep the latest marker that started before `pos` (it may still cover later windows).
            while self.markers.len() > 1 && self.markers[1].0 <= pos {
                self.markers.pop_front();
            }
        }
    }
}

fn ptp_exceeds(data: &[f32], channels: usize, limit: f64) -> bool {
    (0..channels).any(|c| {
        let (lo, hi) = data
            .iter()
            .skip(c)
            .step_by(channels)
            .fold((f32::INFINITY, f32::NEG_INFINITY), |(lo, hi), &v| (lo.min(v), hi.max(v)));
        (hi - lo) as f64 > limit
    })
}

/// The checkpoint state of per-stream windowers (what `bandpower` and `decode` save).
pub fn snapshot_windowers(
    windowers: &std::collections::HashMap<std::sync::Arc<str>, Windower>,
) -> neurostream_engine::Result<Vec<u8>> {
    let states: std::collections::HashMap<std::sync::Arc<str>, WindowerState> =
        windowers.iter().map(|(k, w)| (k.clone(), w.state())).collect();
    neurostream_engine::checkpoint::encode_streams(&states)
}

/// Per-stream windowers of `spec` restored from [`snapshot_windowers`]; `what` names the
/// operator in errors.
pub fn restore_windowers(
    bytes: &[u8],
    what: &str,
    spec: &WindowSpec,
    channels: usize,
    rate: f64,
) -> neurostream_engine::Result<std::collections::HashMap<std::sync::Arc<str>, Windower>> {
    neurostream_engine::checkpoint::decode_streams::<WindowerState>(bytes, what)?
        .into_iter()
        .map(|(stream, s)| {
            Windower::restored(spec.clone(), channels, rate, s)
                .map(|w| (stream.clone(), w))
                .map_err(|m| neurostream_engine::EngineError::Checkpoint(format!("{what} stream {stream}: {m}")))
        })
        .collect()
}
/// `rows[range]` as a vector, copied from the ring's (at most two) contiguous slices: each
/// overlapping window is a copy of its rows, and an element-by-element ring iterator was ~5 %
/// of a band power run.
fn copy_range(rows: &VecDeque<f32>, range: std::ops::Range<usize>) -> Vec<f32> {
    let (a, b) = rows.as_slices();
    let mut out = Vec::with_capacity(range.len());
    if range.start < a.len() {
        out.extend_from_slice(&a[range.start..range.end.min(a.len())]);
    }
    if range.end > a.len() {
        out.extend_from_slice(&b[range.start.saturating_sub(a.len())..range.end - a.len()]);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every range of a ring that wraps around its buffer (and of one that does not) equals the
    /// ring's own element-by-element range.
    #[test]
    fn copy_range_equals_the_ring_range_across_the_wrap() {
        let mut ring: VecDeque<f32> = VecDeque::with_capacity(16);
        for wrapped in [false, true] {
            ring.clear();
            ring.extend((0..12).map(|v| v as f32));
            if wrapped {
                ring.drain(..7);
                ring.extend((12..20).map(|v| v as f32));
                assert!(!ring.as_slices().1.is_empty(), "the ring wraps");
            }
            for lo in 0..=ring.len() {
                for hi in lo..=ring.len() {
                    let want: Vec<f32> = ring.range(lo..hi).copied().collect();
                    assert_eq!(copy_range(&ring, lo..hi), want, "{lo}..{hi}, wrapped {wrapped}");
                }
            }
        }
    }
}
