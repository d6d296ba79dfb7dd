//! `butterworth` and `notch`: IIR filters of signal streams as cascades of second-order
//! sections (designed in [`design`]), causal with state carried across chunks, or
//! zero-phase (`zero_phase = true`, forward-backward like `scipy.signal.sosfiltfilt`; the
//! stream is held until it ends, for offline runs).

pub mod cpu;
pub mod design;
pub mod gpu;

use std::collections::HashMap;
use std::sync::Arc;

use neurostream_engine::kernels::Kernels;
use neurostream_engine::{
    Batch, ComputeDevice, EngineError, Frame, NodeConfig, NodeContext, Operator, OperatorInstance, OperatorKind, Partitioning,
    Result, Schema,
};
use serde::{Deserialize, Serialize};

use cpu::{sosfiltfilt, CpuSos, SosKernels};
use design::{butter, notch, BandType, Section};
use gpu::GpuSos;

/// Configuration of a `butterworth` operator.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ButterworthConfig {
    /// `lowpass`, `highpass`, `bandpass` (default) or `bandstop`.
    #[serde(default = "default_band")]
    pub btype: BandType,
    /// Filter order (per edge, as `scipy.signal.butter`; default 4).
    #[serde(default = "default_order")]
    pub order: usize,
    /// Cutoff frequencies in Hz: one for low/highpass (`0.5` or `[0.5]`), `[low, high]` for
    /// band filters.
    #[serde(deserialize_with = "neurostream_engine::node::one_or_many")]
    #[schemars(extend("x-unit" = "Hz"))]
    pub cutoff: Vec<f64>,
    /// Forward-backward (zero phase, squared magnitude); holds the stream until it ends.
    #[serde(default)]
    pub zero_phase: bool,
    /// CPU threads per stream: chunks of at least 64k values are split by channel (default 1;
    /// offline runs over many channels gain from 2 or more).
    #[serde(default = "default_threads")]
    pub threads: usize,
}

fn default_threads() -> usize {
    1
}

fn default_band() -> BandType {
    BandType::Bandpass
}
fn default_order() -> usize {
    4
}

impl NodeConfig for ButterworthConfig {
    const KIND: &'static str = "butterworth";
}

/// Configuration of a `notch` operator.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct NotchConfig {
    /// Line frequency in Hz (default 50).
    #[serde(default = "default_line")]
    #[schemars(extend("x-unit" = "Hz"))]
    pub freq: f64,
    /// How many harmonics to remove: `freq`, `2·freq`, ... (those below Nyquist; default 1).
    #[serde(default = "default_harmonics")]
    pub harmonics: usize,
    /// Quality factor `freq / bandwidth` (default 30, as `scipy.signal.iirnotch` examples).
    #[serde(default = "default_q")]
    pub q: f64,
    /// Forward-backward (zero phase); holds the stream until it ends.
    #[serde(default)]
    pub zero_phase: bool,
    /// CPU threads per stream (see `butterworth`).
    #[serde(default = "default_threads")]
    pub threads: usize,
}

fn default_line() -> f64 {
    50.0
}
fn default_harmonics() -> usize {
    1
}
fn default_q() -> f64 {
    30.0
}

impl NodeConfig for NotchConfig {
    const KIND: &'static str = "notch";
}

/// The `butterworth` operator kind.
pub struct ButterworthKind;

impl OperatorKind for ButterworthKind {
    type Config = ButterworthConfig;

    fn describe(&self) -> &'static str {
        "Butterworth low/high/band-pass/band-stop as second-order sections; causal with carried state, or zero-phase"
    }
    fn build(&self, cfg: ButterworthConfig, ctx: &NodeContext, input: &Arc<Schema>) -> Result<Arc<dyn Operator>> {
        let fs = super::sampled_rate(ButterworthConfig::KIND, input, ctx)?;
        let sections = butter(cfg.order, &cfg.cutoff, cfg.btype, fs).map_err(|m| EngineError::config(ctx.label, m))?;
        tracing::debug!("{}: {} sections {:?}", ctx.label, sections.len(), sections);
        Ok(Arc::new(SosFilter::new(input, sections, cfg.zero_phase, cfg.threads)))
    }
}

/// The `notch` operator kind.
pub struct NotchKind;

impl OperatorKind for NotchKind {
    type Config = NotchConfig;

    fn describe(&self) -> &'static str {
        "IIR notch at the line frequency and its harmonics (scipy.signal.iirnotch), causal or zero-phase"
    }
    fn build(&self, cfg: NotchConfig, ctx: &NodeContext, input: &Arc<Schema>) -> Result<Arc<dyn Operator>> {
        let fs = super::sampled_rate(NotchConfig::KIND, input, ctx)?;
        if cfg.harmonics == 0 {
            return Err(EngineError::config(ctx.label, "`harmonics` must be at least 1"));
        }
        let mut sections = Vec::new();
        for h in 1..=cfg.harmonics {
            let f = cfg.freq * h as f64;
            if h > 1 && f >= fs / 2.0 {
                tracing::info!(
                    "{}: harmonic {h} ({f} Hz) is above Nyquist ({} Hz); skipped",
                    ctx.label,
                    fs / 2.0
                );
                break;
            }
            sections.push(notch(f, cfg.q, fs).map_err(|m| EngineError::config(ctx.label, m))?);
        }
        Ok(Arc::new(SosFilter::new(input, sections, cfg.zero_phase, cfg.threads)))
    }
}

/// A configured cascade.
pub struct SosFilter {
    schema: Arc<Schema>,
    sections: Arc<Vec<Section>>,
    zero_phase: bool,
    threads: usize,
}

impl SosFilter {
    fn new(input: &Arc<Schema>, sections: Vec<Section>, zero_phase: bool, threads: usize) -> SosFilter {
        SosFilter {
            schema: input.clone(),
            sections: Arc::new(sections),
            zero_phase,
            threads: threads.max(1),
        }
    }
}

impl Operator for SosFilter {
    fn takes_device_rows(&self) -> bool {
        true
    }
    fn output_schema(&self) -> Arc<Schema> {
        self.schema.clone()
    }
    fn partitioning(&self) -> Partitioning {
        Partitioning::ByStream
    }
    fn holds_back(&self) -> bool {
        self.zero_phase
    }
    fn checkpointing(&self) -> neurostream_engine::Checkpointing {
        // Causal: the section state; zero phase: the frames held until the end.
        neurostream_engine::Checkpointing::Snapshot
    }
    fn instantiate(&self, device: &ComputeDevice) -> Result<Box<dyn OperatorInstance>> {
        let threads = self.threads;
        let kernels = Kernels::select(
            "filter",
            device,
            |ctx| Ok(Box::new(GpuSos::new(ctx)?) as Box<dyn SosKernels>),
            Box::new(move || Box::new(CpuSos::with_threads(threads)) as Box<dyn SosKernels>),
        )?;
        Ok(Box::new(SosInstance {
            sections: self.sections.clone(),
            zero_phase: self.zero_phase,
            kernels,
            state: HashMap::new(),
            held: HashMap::new(),
            keep_on_device: false,
        }))
    }
}

struct SosInstance {
    sections: Arc<Vec<Section>>,
    zero_phase: bool,
    kernels: Kernels<dyn SosKernels>,
    /// Causal: per-stream section state.
    state: HashMap<Arc<str>, Vec<f64>>,
    /// Zero phase: per-stream frames held until the end.
    held: HashMap<Arc<str>, Vec<Frame>>,
    /// The runtime lets GPU output stay on the device.
    keep_on_device: bool,
}

impl OperatorInstance for SosInstance {
    fn keep_output_on_device(&mut self) {
        self.keep_on_device = true;
    }
    fn snapshot(&self) -> Result<Vec<u8>> {
        if self.zero_phase {
            return neurostream_engine::checkpoint::encode_streams(&self.held);
        }
        neurostream_engine::checkpoint::encode_streams(&self.state)
    }

    fn restore(&mut self, state: &[u8]) -> Result<()> {
        if self.zero_phase {
            for (stream, frames) in neurostream_engine::checkpoint::decode_streams::<Vec<Frame>>(state, "filter")? {
                self.held.insert(stream, frames);
            }
            return Ok(());
        }
        for (stream, s) in neurostream_engine::checkpoint::decode_streams::<Vec<f64>>(state, "filter")? {
            if s.len() % (2 * self.sections.len()) != 0 {
                return Err(EngineError::Checkpoint(format!(
                    "filter: the saved state of stream {stream} does not fit {} sections",
                    self.sections.len()
                )));
            }
            self.state.insert(stream, s);
        }
        Ok(())
    }

    fn process(&mut self, batch: Batch, out: &mut Vec<Batch>) -> Result<()> {
        let Batch::Dense(mut frame) = batch else {
            return Err(EngineError::Shape(format!(
                "filters take dense frames; stream {} is not",
                batch.stream()
            )));
        };
        if self.zero_phase {
            // Filtered forwards and backwards over the whole stream at the end, on the host.
            frame.materialize()?;
            self.held.entry(frame.stream.clone()).or_default().push(frame);
            return Ok(());
        }
        let w = frame.width();
        let n = self.sections.len() * 2 * w;
        let mut state = self.state.remove(&frame.stream).unwrap_or_else(|| vec![0.0; n]);
        let sections = self.sections.clone();
        let (before, keep) = (state.clone(), self.keep_on_device);
        let result = self.kernels.run(|k| {
            state.copy_from_slice(&before);
            k.filter_frame(&sections, &mut state, &frame, keep)
        });
        self.state.insert(frame.stream.clone(), state);
        frame.set_rows(result?, keep)?;
        out.push(Batch::Dense(frame));
        Ok(())
    }

    fn finish(&mut self, out: &mut Vec<Batch>) -> Result<()> {
        let streams = neurostream_engine::stream_names(&self.held);
        for stream in streams {
            self.end_stream(&stream, out)?;
        }
        Ok(())
    }

    /// Zero phase: filters the stream's held frames forward and back and emits them; causal:
    /// drops the section state.
    fn end_stream(&mut self, stream: &Arc<str>, out: &mut Vec<Batch>) -> Result<()> {
        self.state.remove(stream);
        let Some(mut frames) = self.held.remove(stream) else {
            return Ok(());
        };
        let w = frames[0].width();
        let mut all: Vec<f32> = frames.iter().flat_map(|f| f.data.iter().copied()).collect();
        let sections = self.sections.clone();
        let original = all.clone();
        self.kernels
            .run(|k| {
                all.copy_from_slice(&original);
                sosfiltfilt(k, &sections, &mut all, w)
            })
            .map_err(|e| EngineError::Runtime(format!("stream {stream}: {e}")))?;
        let mut at = 0;
        for f in &mut frames {
            let n = f.data.len();
            f.data.copy_from_slice(&all[at..at + n]);
            at += n;
        }
        out.extend(frames.into_iter().map(Batch::Dense));
        Ok(())
    }
}
