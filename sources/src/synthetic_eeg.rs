//! `synthetic_eeg`: seeded EEG-like signals with known content.
//!
//! Each channel is the sum of an alpha sinusoid (8-12 Hz, about 10 µV), a beta sinusoid
//! (13-30 Hz, about 4 µV), 1/f ("pink") noise of about 5 µV from the Voss-McCartney scheme,
//! and 0.5 µV white noise. Frequencies, phases and amplitudes per channel follow from the seed.
//! With `marker_interval > 0`, a marker is placed every `marker_interval` seconds with a label
//! drawn from `marker_labels`; for `marker_duration` seconds after a marker labelled with the
//! `j`-th label, the alpha amplitude of channels `c` with `c % labels == j` drops by half (an
//! event-related desynchronization a decoder can learn).
//!
//! Every value is a pure function of (seed, channel, sample), so the data are the same for any
//! chunk size and worker count. The sinusoids are exact (`sin`) every [`PHASOR_BLOCK`] samples
//! and advanced by rotation in between, and each pink-noise octave is drawn once per change:
//! generating stays far cheaper than anything a pipeline does with the samples.

use crate::MAX_CHANNELS;
use std::f64::consts::TAU;
use std::sync::Arc;

use neurostream_engine::layout::check_values;
use neurostream_engine::{
    Batch, EngineError, Frame, Marker, NodeConfig, NodeContext, Result, RowIndex, Schema, Source, SourceKind, SourceReader,
    WorkerPos,
};
use serde::{Deserialize, Serialize};

use crate::hash::{hash, hash_next, signed_unit, unit};

/// Standard 10-20 labels used for the first channels.
const LABELS_10_20: [&str; 19] = [
    "Fp1", "Fp2", "F7", "F3", "Fz", "F4", "F8", "T7", "C3", "Cz", "C4", "T8", "P7", "P3", "Pz", "P4", "P8", "O1", "O2",
];
const PINK_OCTAVES: u32 = 12;
/// Samples between exact evaluations of the sinusoids (rotations in between; the rotation's
/// f64 error over a block is far below the f32 output's resolution).
pub const PHASOR_BLOCK: u64 = 256;

/// Configuration of a `synthetic_eeg` source.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct SyntheticEegConfig {
    /// Number of channels (labelled with 10-20 names, then `EEG20`, `EEG21`, ...).
    pub channels: usize,
    /// Sampling rate in Hz.
    #[schemars(extend("x-unit" = "Hz"))]
    pub sample_rate: f64,
    /// Duration in seconds.
    #[schemars(extend("x-unit" = "s"))]
    pub seconds: f64,
    /// Samples per frame.
    #[schemars(extend("x-unit" = "samples"))]
    pub chunk: usize,
    /// Seed of every random choice.
    pub seed: u64,
    /// Seconds between markers; 0 for none.
    #[schemars(extend("x-unit" = "s"))]
    pub marker_interval: f64,
    /// Marker labels (one drawn per marker).
    pub marker_labels: Vec<String>,
    /// Seconds after a marker during which channels `c % labels == label index` lose half their
    /// alpha (desynchronization).
    #[schemars(extend("x-unit" = "s"))]
    pub marker_duration: f64,
    /// Pace: 0 (default) as fast as possible; 1.0 real time (each chunk is released when its
    /// last sample would have been recorded), like a device.
    #[schemars(extend("x-unit" = "× real time"))]
    pub speed: f64,
}

impl Default for SyntheticEegConfig {
    fn default() -> Self {
        SyntheticEegConfig {
            channels: 8,
            sample_rate: 256.0,
            seconds: 60.0,
            chunk: 256,
            seed: 0,
            marker_interval: 0.0,
            marker_labels: vec!["left".into(), "right".into()],
            marker_duration: 1.0,
            speed: 0.0,
        }
    }
}

impl NodeConfig for SyntheticEegConfig {
    const KIND: &'static str = "synthetic_eeg";
}

/// The `synthetic_eeg` source kind.
pub struct SyntheticEegKind;

impl SourceKind for SyntheticEegKind {
    type Config = SyntheticEegConfig;

    fn describe(&self) -> &'static str {
        "seeded EEG-like signals: alpha/beta sinusoids plus 1/f noise, optional markers"
    }
    fn build(&self, cfg: SyntheticEegConfig, ctx: &NodeContext) -> Result<Arc<dyn Source>> {
        Ok(Arc::new(
            SyntheticEeg::new(ctx.name, cfg).map_err(|m| EngineError::config(ctx.label, m))?,
        ))
    }
}

#[derive(Clone, Debug)]
struct ChannelParams {
    alpha_hz: f64,
    alpha_amp: f64,
    alpha_phase: f64,
    beta_hz: f64,
    beta_amp: f64,
    beta_phase: f64,
}

/// A configured synthetic EEG generator.
#[derive(Clone, Debug)]
pub struct SyntheticEeg {
    name: Arc<str>,
    cfg: SyntheticEegConfig,
    schema: Arc<Schema>,
    params: Vec<ChannelParams>,
    total: u64,
}

/// One sinusoid as a unit phasor `(sin θ, cos θ)` advanced by `(sin δ, cos δ)` per sample.
#[derive(Clone, Copy, Debug)]
struct Phasor {
    sin: f64,
    cos: f64,
    step_sin: f64,
    step_cos: f64,
}

impl Phasor {
    /// `sin(2π · hz · sample / rate + phase)` at `sample`, stepping one sample per `advance`.
    fn at(hz: f64, phase: f64, rate: f64, sample: u64) -> Phasor {
        let theta = TAU * hz * (sample as f64 / rate) + phase;
        let delta = TAU * hz / rate;
        Phasor {
            sin: theta.sin(),
            cos: theta.cos(),
            step_sin: delta.sin(),
            step_cos: delta.cos(),
        }
    }

    fn advance(&mut self) {
        let (s, c) = (self.sin, self.cos);
        self.sin = s * self.step_cos + c * self.step_sin;
        self.cos = c * self.step_cos - s * self.step_sin;
    }
}

/// Where one channel's generator stands: its phasors (exact at the last block start) and the
/// pink-noise octaves drawn so far (octave `k` changes every `2^k` samples).
struct ChannelState {
    alpha: Phasor,
    beta: Phasor,
    /// The next sample [`ChannelState::next`] expects.
    sample: u64,
    octaves: [f64; PINK_OCTAVES as usize],
    /// `sample >> k` of each octave's draw (`u64::MAX`: none yet).
    drawn: [u64; PINK_OCTAVES as usize],
    /// `hash(&[seed, channel, 100 + k])` per octave and `hash(&[seed, channel, 99])` (white):
    /// the draws vary only in their last coordinate.
    pink_keys: [u64; PINK_OCTAVES as usize],
    white_key: u64,
}

impl ChannelState {
    /// A state for `channel` ready to produce `sample`: the phasors are exact at the block start
    /// and rotated up to `sample`, so every sample comes out the same however the stream is cut.
    fn at(gen: &SyntheticEeg, channel: usize, sample: u64) -> ChannelState {
        let block = sample - sample % PHASOR_BLOCK;
        let mut state = ChannelState {
            alpha: gen.phasor(channel, block, true),
            beta: gen.phasor(channel, block, false),
            sample: block,
            octaves: [0.0; PINK_OCTAVES as usize],
            drawn: [u64::MAX; PINK_OCTAVES as usize],
            pink_keys: std::array::from_fn(|k| hash(&[gen.cfg.seed, channel as u64, 100 + k as u64])),
            white_key: hash(&[gen.cfg.seed, channel as u64, 99]),
        };
        while state.sample < sample {
            state.alpha.advance();
            state.beta.advance();
            state.sample += 1;
        }
        state
    }

    /// The value at `sample` (the one this state expects; `event`: the label index whose
    /// desynchronization covers it), then steps to the next sample.
    fn next(&mut self, gen: &SyntheticEeg, channel: usize, sample: u64, event: Option<usize>) -> f32 {
        debug_assert_eq!(sample, self.sample);
        if sample.is_multiple_of(PHASOR_BLOCK) {
            self.alpha = gen.phasor(channel, sample, true);
            self.beta = gen.phasor(channel, sample, false);
        }
        let p = &gen.params[channel];
        let labels = gen.cfg.marker_labels.len().max(1);
        let erd = match event {
            Some(j) if channel % labels == j => 0.5,
            _ => 1.0,
        };
        let mut pink = 0.0;
        for k in 0..PINK_OCTAVES as usize {
            let key = sample >> k;
            if self.drawn[k] != key {
                self.drawn[k] = key;
                self.octaves[k] = signed_unit(hash_next(self.pink_keys[k], key));
            }
            pink += self.octaves[k];
        }
        pink *= 5.0 / (PINK_OCTAVES as f64 / 3.0).sqrt();
        let white = 0.5 * signed_unit(hash_next(self.white_key, sample)) * 3f64.sqrt();
        let v = erd * p.alpha_amp * self.alpha.sin + p.beta_amp * self.beta.sin + pink + white;
        self.alpha.advance();
        self.beta.advance();
        self.sample += 1;
        v as f32
    }
}

impl SyntheticEeg {
    /// The exact phasor of `channel`'s alpha (or beta) sinusoid at `sample`.
    fn phasor(&self, channel: usize, sample: u64, alpha: bool) -> Phasor {
        let p = &self.params[channel];
        let rate = self.cfg.sample_rate;
        match alpha {
            true => Phasor::at(p.alpha_hz, p.alpha_phase, rate, sample),
            false => Phasor::at(p.beta_hz, p.beta_phase, rate, sample),
        }
    }

    /// Checks `cfg` and derives the per-channel parameters.
    pub fn new(name: &str, cfg: SyntheticEegConfig) -> std::result::Result<SyntheticEeg, String> {
        if cfg.channels == 0 {
            return Err("`channels` must be at least 1".into());
        }
        if !(cfg.sample_rate > 0.0 && cfg.sample_rate.is_finite()) {
            return Err(format!("`sample_rate` must be positive, found {}", cfg.sample_rate));
        }
        if !(cfg.seconds >= 0.0 && cfg.seconds.is_finite()) {
            return Err(format!("`seconds` must be >= 0, found {}", cfg.seconds));
        }
        if cfg.chunk == 0 {
            return Err("`chunk` must be at least 1".into());
        }
        if cfg.channels > MAX_CHANNELS {
            return Err(format!(
                "`channels` is {}; at most {MAX_CHANNELS} are supported",
                cfg.channels
            ));
        }
        check_values("`chunk` × `channels`", cfg.chunk, cfg.channels)?;
        if !(cfg.speed >= 0.0 && cfg.speed.is_finite()) {
            return Err(format!("`speed` must be >= 0 (0: as fast as possible), found {}", cfg.speed));
        }
        if cfg.marker_interval > 0.0 && cfg.marker_labels.is_empty() {
            return Err("`marker_labels` must not be empty when `marker_interval` > 0".into());
        }
        let names: Vec<String> = (0..cfg.channels)
            .map(|c| {
                LABELS_10_20
                    .get(c)
                    .map(|s| s.to_string())
                    .unwrap_or_else(|| format!("EEG{}", c + 1))
            })
            .collect();
        let seed = cfg.seed;
        let params = (0..cfg.channels as u64)
            .map(|c| ChannelParams {
                alpha_hz: 8.0 + 4.0 * unit(hash(&[seed, c, 1])),
                alpha_amp: 8.0 + 4.0 * unit(hash(&[seed, c, 2])),
                alpha_phase: TAU * unit(hash(&[seed, c, 3])),
                beta_hz: 13.0 + 17.0 * unit(hash(&[seed, c, 4])),
                beta_amp: 3.0 + 2.0 * unit(hash(&[seed, c, 5])),
                beta_phase: TAU * unit(hash(&[seed, c, 6])),
            })
            .collect();
        let total = (cfg.seconds * cfg.sample_rate).round() as u64;
        Ok(SyntheticEeg {
            name: name.into(),
            schema: Arc::new(Schema::signal(&names, "uV", cfg.sample_rate)),
            cfg,
            params,
            total,
        })
    }

    /// Total samples generated.
    pub fn total_samples(&self) -> u64 {
        self.total
    }

    /// The marker (label index) starting at `sample`, if any.
    pub fn marker_at(&self, sample: u64) -> Option<usize> {
        let every = (self.cfg.marker_interval * self.cfg.sample_rate).round() as u64;
        if self.cfg.marker_interval <= 0.0 || every == 0 || sample == 0 || !sample.is_multiple_of(every) {
            return None;
        }
        let k = sample / every;
        Some((hash(&[self.cfg.seed, k, 7]) % self.cfg.marker_labels.len() as u64) as usize)
    }

    /// The label index of the event whose desynchronization window covers `sample`.
    fn active_event(&self, sample: u64) -> Option<usize> {
        let every = (self.cfg.marker_interval * self.cfg.sample_rate).round() as u64;
        if self.cfg.marker_interval <= 0.0 || every == 0 {
            return None;
        }
        let start = sample - sample % every;
        let dur = (self.cfg.marker_duration * self.cfg.sample_rate).round() as u64;
        if sample - start < dur {
            self.marker_at(start)
        } else {
            None
        }
    }

    /// The value of `channel` at `sample`, in µV.
    pub fn value(&self, channel: usize, sample: u64) -> f32 {
        let mut state = ChannelState::at(self, channel, sample);
        state.next(self, channel, sample, self.active_event(sample))
    }

    /// Frame of samples `start..start+len`.
    pub fn frame(&self, start: u64, len: usize) -> Frame {
        let w = self.cfg.channels;
        let mut data = vec![0f32; len * w];
        let mut states: Vec<ChannelState> = (0..w).map(|c| ChannelState::at(self, c, start)).collect();
        for (r, s) in (start..start + len as u64).enumerate() {
            let event = self.active_event(s);
            for (c, state) in states.iter_mut().enumerate() {
                data[r * w + c] = state.next(self, c, s, event);
            }
        }
        let samples = (start..start + len as u64).map(|s| s as i64).collect();
        let mut frame = Frame::new(self.name.clone(), self.schema.clone(), RowIndex::Samples(samples), data).expect("shape");
        for (r, s) in (start..start + len as u64).enumerate() {
            if let Some(j) = self.marker_at(s) {
                frame.markers.push(Marker {
                    row: r as u32,
                    label: self.cfg.marker_labels[j].clone(),
                    duration_s: self.cfg.marker_duration,
                });
            }
        }
        frame
    }
}

impl Source for SyntheticEeg {
    fn replayable(&self) -> bool {
        true // a pure function of its files / seed: reopening yields the same batches
    }
    fn schema(&self) -> Arc<Schema> {
        self.schema.clone()
    }
    fn total_rows(&self) -> Option<u64> {
        Some(self.total)
    }
    fn open(&self, worker: WorkerPos) -> Result<Box<dyn SourceReader>> {
        let chunks = self.total.div_ceil(self.cfg.chunk as u64);
        Ok(Box::new(ChunkReader {
            gen: self.clone(),
            chunks: crate::worker_chunks(chunks, worker.index, worker.peers).collect(),
            started: None,
        }))
    }
}

struct ChunkReader {
    gen: SyntheticEeg,
    chunks: std::collections::VecDeque<u64>,
    started: Option<std::time::Instant>,
}

impl SourceReader for ChunkReader {
    fn next_batch(&mut self) -> Result<Option<(u64, Batch)>> {
        let Some(k) = self.chunks.pop_front() else {
            return Ok(None);
        };
        let chunk = self.gen.cfg.chunk as u64;
        let start = k * chunk;
        let len = chunk.min(self.gen.total - start) as usize;
        Ok(Some((start, Batch::Dense(self.gen.frame(start, len)))))
    }
    fn next_time(&self) -> Option<u64> {
        self.chunks.front().map(|&k| k * self.gen.cfg.chunk as u64)
    }
    fn ready(&mut self) -> bool {
        let speed = self.gen.cfg.speed;
        let Some(&k) = self.chunks.front() else {
            return true;
        };
        if speed <= 0.0 {
            return true;
        }
        let started = *self.started.get_or_insert_with(std::time::Instant::now);
        let chunk = self.gen.cfg.chunk as u64;
        let end = (k * chunk + chunk).min(self.gen.total);
        started.elapsed().as_secs_f64() >= end as f64 / self.gen.cfg.sample_rate / speed
    }

    fn location(&self) -> String {
        format!("synthetic_eeg `{}`", self.gen.name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn gen(chunk: usize) -> SyntheticEeg {
        SyntheticEeg::new(
            "eeg",
            SyntheticEegConfig {
                channels: 3,
                seconds: 8.0,
                chunk,
                marker_interval: 2.0,
                ..Default::default()
            },
        )
        .unwrap()
    }

    fn read_all(src: &SyntheticEeg, peers: usize) -> Vec<(u64, Frame)> {
        let mut out = Vec::new();
        for index in 0..peers {
            let mut r = src.open(WorkerPos { index, peers }).unwrap();
            while let Some((t, Batch::Dense(f))) = r.next_batch().unwrap() {
                out.push((t, f));
            }
        }
        out.sort_by_key(|(t, _)| *t);
        out
    }

    #[test]
    fn data_do_not_depend_on_chunking_or_workers() {
        let concat = |frames: Vec<(u64, Frame)>| frames.into_iter().flat_map(|(_, f)| f.data).collect::<Vec<f32>>();
        let a = concat(read_all(&gen(256), 1));
        let b = concat(read_all(&gen(100), 3));
        assert_eq!(a.len(), 8 * 256 * 3);
        assert_eq!(a, b);
    }

    #[test]
    fn markers_every_interval_and_times_are_first_samples() {
        let frames = read_all(&gen(100), 2);
        let markers: Vec<i64> = frames
            .iter()
            .flat_map(|(_, f)| {
                let RowIndex::Samples(s) = &f.index else { panic!() };
                f.markers.iter().map(|m| s[m.row as usize]).collect::<Vec<_>>()
            })
            .collect();
        assert_eq!(markers, vec![512, 1024, 1536]);
        for (t, f) in &frames {
            let RowIndex::Samples(s) = &f.index else { panic!() };
            assert_eq!(*t, s[0] as u64);
        }
    }

    /// The rotated phasors stay on the exact sinusoids: every sample of a few blocks (cut at
    /// odd places) equals the direct formula within 1e-6 µV, and the pink noise equals a fresh
    /// draw of every octave.
    #[test]
    fn values_equal_the_direct_formula() {
        let src = gen(97);
        let direct = |c: usize, s: u64| -> f64 {
            let p = &src.params[c];
            let t = s as f64 / src.cfg.sample_rate;
            let labels = src.cfg.marker_labels.len().max(1);
            let erd = match src.active_event(s) {
                Some(j) if c % labels == j => 0.5,
                _ => 1.0,
            };
            let seed = src.cfg.seed;
            let pink: f64 = (0..PINK_OCTAVES)
                .map(|k| signed_unit(hash(&[seed, c as u64, 100 + k as u64, s >> k])))
                .sum::<f64>()
                * (5.0 / (PINK_OCTAVES as f64 / 3.0).sqrt());
            let white = 0.5 * signed_unit(hash(&[seed, c as u64, 99, s])) * 3f64.sqrt();
            erd * p.alpha_amp * (TAU * p.alpha_hz * t + p.alpha_phase).sin()
                + p.beta_amp * (TAU * p.beta_hz * t + p.beta_phase).sin()
                + pink
                + white
        };
        let mut worst = 0f64;
        for (start, len) in [(0u64, 700usize), (255, 3), (1_000_003, 600)] {
            let f = src.frame(start, len);
            let w = src.cfg.channels;
            for r in 0..len {
                for c in 0..w {
                    let want = direct(c, start + r as u64);
                    worst = worst.max((f.data[r * w + c] as f64 - want).abs());
                    assert_eq!(f.data[r * w + c], src.value(c, start + r as u64));
                }
            }
        }
        assert!(worst < 1e-5, "max |frame - formula| = {worst} µV");
    }

    #[test]
    fn alpha_dominates_the_spectrum() {
        // Power at the channel's alpha frequency (Goertzel-style projection) far above a 40 Hz probe.
        let src = SyntheticEeg::new(
            "eeg",
            SyntheticEegConfig {
                channels: 1,
                seconds: 20.0,
                ..Default::default()
            },
        )
        .unwrap();
        let n = src.total_samples();
        let power = |hz: f64| {
            let (mut re, mut im) = (0.0, 0.0);
            for s in 0..n {
                let v = src.value(0, s) as f64;
                let ph = TAU * hz * s as f64 / 256.0;
                re += v * ph.cos();
                im += v * ph.sin();
            }
            (re * re + im * im) / n as f64
        };
        let alpha = power(src.params[0].alpha_hz);
        assert!(alpha > 50.0 * power(41.3), "alpha {alpha} vs {}", power(41.3));
    }
}
