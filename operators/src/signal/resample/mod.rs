//! `resample`: polyphase rational resampling of signal streams, equal to
//! `scipy.signal.resample_poly(x, up, down, window=("kaiser", 5.0))` over the whole stream: the
//! same anti-aliasing filter (Kaiser-windowed sinc, `20·max(up, down) + 1` taps, cutoff
//! `1 / max(up, down)` of Nyquist, gain `up`), the same centring and zero padding. Each output
//! sample is computed as soon as the inputs it needs have arrived, so the stream is delayed by
//! about half the filter (`10·max(up, down) / up` input samples); the last outputs come when the
//! stream ends (with zeros past its end, as SciPy pads).

use std::collections::HashMap;
use std::sync::Arc;

use neurostream_engine::kernels::Kernels;
use neurostream_engine::{
    wgpu, Batch, ComputeDevice, EngineError, Frame, GpuContext, GpuPass, Marker, NodeConfig, NodeContext, Operator,
    OperatorInstance, OperatorKind, Partitioning, Result, RowIndex, Schema, StreamKind,
};
use serde::{Deserialize, Serialize};

pub use neurostream_engine::dsp::polyphase::{design, CpuResample, Polyphase, ResampleKernels};

/// Configuration of a `resample` operator.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ResampleConfig {
    /// Upsampling factor.
    pub up: usize,
    /// Downsampling factor (the new rate is `rate · up / down`).
    pub down: usize,
}

impl NodeConfig for ResampleConfig {
    const KIND: &'static str = "resample";
}

/// GPU: one invocation per (output, channel).
pub struct GpuResample {
    ctx: Arc<GpuContext>,
    pipeline: Arc<wgpu::ComputePipeline>,
}

const SHADER: &str = include_str!("resample.wgsl");

#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
struct Params {
    outputs: u32,
    channels: u32,
    rows: u32,
    taps: u32,
    up: i32,
    down: i32,
    base: i32,
    pad: u32,
}

impl GpuResample {
    /// Compiles the kernel on `ctx`.
    pub fn new(ctx: Arc<GpuContext>) -> Result<GpuResample> {
        Ok(GpuResample {
            pipeline: ctx.pipeline("resample", SHADER, "resample")?,
            ctx,
        })
    }
}

impl ResampleKernels for GpuResample {
    fn outputs(&mut self, f: &Polyphase, x: &[f32], base: i64, ms: &[i64], channels: usize) -> Result<Vec<f32>> {
        if ms.is_empty() {
            return Ok(Vec::new());
        }
        let (h, up, down) = (&f.h, f.up, f.down);
        let ctx = &self.ctx;
        let hf: Vec<f32> = h.iter().map(|&v| v as f32).collect();
        // Positions relative to a common origin keep the 32-bit indices small on long streams.
        let (m0, b0) = rebase(ms[0], base, up as i64, down as i64);
        let msr: Vec<i32> = ms.iter().map(|&m| (m - m0) as i32).collect();
        let params = Params {
            outputs: ms.len() as u32,
            channels: channels as u32,
            rows: (x.len() / channels) as u32,
            taps: h.len() as u32,
            up: up as i32,
            down: down as i32,
            base: (base - b0) as i32,
            pad: 0,
        };
        let u = ctx.uniform("rs.params", bytemuck::bytes_of(&params));
        let hb = ctx.storage_init("rs.h", bytemuck::cast_slice(&hf));
        let xb = ctx.storage_init("rs.x", bytemuck::cast_slice(x));
        let mb = ctx.storage_init("rs.m", bytemuck::cast_slice(&msr));
        let yb = ctx.storage_zeroed("rs.y", (ms.len() * channels * 4) as u64);
        let bufs = [&*u, &*hb, &*xb, &*mb, &*yb];
        let pass = GpuPass {
            pipeline: &self.pipeline,
            buffers: &bufs,
            workgroups: neurostream_engine::device::workgroups_1d(ms.len() * channels, 64),
        };
        let out = ctx.run(&[pass], Some((&yb, (ms.len() * channels * 4) as u64)))?;
        Ok(bytemuck::cast_slice(&out).to_vec())
    }
}

/// An output position `m0` and input index `b0` with `m0·down = b0·up` (a common origin), near
/// `m`, so positions can be expressed relative to it in 32 bits.
fn rebase(m: i64, base: i64, up: i64, down: i64) -> (i64, i64) {
    let g = neurostream_engine::dsp::gcd(up as u64, down as u64) as i64;
    let (u, d) = (up / g, down / g);
    // m0 = k·u, b0 = k·d for the largest k with k·d <= base and k·u <= m.
    let k = (base.div_euclid(d)).min(m.div_euclid(u)).max(0);
    (k * u, k * d)
}

/// The `resample` operator kind.
pub struct ResampleKind;

impl OperatorKind for ResampleKind {
    type Config = ResampleConfig;

    fn describe(&self) -> &'static str {
        "polyphase rational resampling (scipy.signal.resample_poly), streamed with half the filter as delay"
    }
    fn build(&self, cfg: ResampleConfig, ctx: &NodeContext, input: &Arc<Schema>) -> Result<Arc<dyn Operator>> {
        let fail = |m: String| EngineError::config(ctx.label, m);
        let sample_rate = super::sampled_rate(ResampleConfig::KIND, input, ctx)?;
        if cfg.up == 0 || cfg.down == 0 {
            return Err(fail("`up` and `down` must be at least 1".into()));
        }
        let g = neurostream_engine::dsp::gcd(cfg.up as u64, cfg.down as u64) as usize;
        let (up, down) = (cfg.up / g, cfg.down / g);
        let (h, pre) = design(up, down).map_err(fail)?;
        let rate = sample_rate * up as f64 / down as f64;
        tracing::info!("{}: {sample_rate} Hz -> {rate} Hz ({up}/{down}), {} taps", ctx.label, h.len());
        Ok(Arc::new(Resample {
            input: input.clone(),
            schema: Arc::new(Schema {
                kind: StreamKind::Signal {
                    sample_rate: rate,
                    row_rate: None,
                },
                channels: input.channels.clone(),
            }),
            filter: Arc::new(Polyphase { h, up, down }),
            pre: pre as i64,
        }))
    }
}

struct Resample {
    input: Arc<Schema>,
    schema: Arc<Schema>,
    filter: Arc<Polyphase>,
    pre: i64,
}

impl Operator for Resample {
    fn output_schema(&self) -> Arc<Schema> {
        self.schema.clone()
    }
    fn partitioning(&self) -> Partitioning {
        Partitioning::ByStream
    }
    fn checkpointing(&self) -> neurostream_engine::Checkpointing {
        neurostream_engine::Checkpointing::Snapshot
    }
    fn holds_back(&self) -> bool {
        true
    }
    fn instantiate(&self, device: &ComputeDevice) -> Result<Box<dyn OperatorInstance>> {
        let kernels = Kernels::select(
            "resample",
            device,
            |ctx| Ok(Box::new(GpuResample::new(ctx)?) as Box<dyn ResampleKernels>),
            Box::new(|| Box::new(CpuResample) as Box<dyn ResampleKernels>),
        )?;
        Ok(Box::new(ResampleInstance {
            channels: self.input.width(),
            schema: self.schema.clone(),
            filter: self.filter.clone(),
            pre: self.pre,
            kernels,
            streams: HashMap::new(),
        }))
    }
}

#[derive(Default, Serialize, Deserialize)]
struct StreamState {
    /// Input rows kept (row-major) and the input index of the first.
    rows: Vec<f32>,
    base: i64,
    /// Inputs seen.
    seen: i64,
    /// Next output index.
    next: i64,
    /// Sample index of the stream's first input.
    first_sample: Option<i64>,
    /// Markers by input index.
    markers: Vec<(i64, Marker)>,
    arrival_ns: Option<i64>,
}

struct ResampleInstance {
    channels: usize,
    schema: Arc<Schema>,
    filter: Arc<Polyphase>,
    pre: i64,
    kernels: Kernels<dyn ResampleKernels>,
    streams: HashMap<Arc<str>, StreamState>,
}

impl ResampleInstance {
    /// Emits outputs `state.next..end` for `stream`.
    fn emit(&mut self, stream: &Arc<str>, end: i64, out: &mut Vec<Batch>) -> Result<()> {
        let st = self.streams.get_mut(stream).expect("state");
        if end <= st.next {
            return Ok(());
        }
        let ms: Vec<i64> = (st.next..end).map(|j| j + self.pre).collect();
        let (filter, channels) = (&self.filter, self.channels);
        let data = self.kernels.run(|k| k.outputs(filter, &st.rows, st.base, &ms, channels))?;
        let (up, down) = (self.filter.up as i64, self.filter.down as i64);
        let first_out = st.first_sample.unwrap_or(0) * up / down;
        let samples: Vec<i64> = (st.next..end).map(|j| first_out + j).collect();
        let mut frame = Frame::new(stream.clone(), self.schema.clone(), RowIndex::Samples(samples), data)?;
        // A marker at input i goes on output round(i·up/down).
        let (next, count) = (st.next, end - st.next);
        st.markers.retain(|(i, m)| {
            let j = ((i * up) as f64 / down as f64).round() as i64;
            if j < next + count {
                let mut m = m.clone();
                m.row = (j - next).max(0) as u32;
                frame.markers.push(m);
                false
            } else {
                true
            }
        });
        frame.arrival_ns = st.arrival_ns;
        st.next = end;
        // Drop inputs no later output needs.
        let first_needed = ((st.next + self.pre) * down - self.filter.h.len() as i64 + 1)
            .div_euclid(up)
            .max(0);
        if first_needed > st.base {
            let drop = ((first_needed - st.base) as usize).min(st.rows.len() / self.channels);
            st.rows.drain(..drop * self.channels);
            st.base += drop as i64;
        }
        out.push(Batch::Dense(frame));
        Ok(())
    }
}

impl OperatorInstance for ResampleInstance {
    fn process(&mut self, batch: Batch, out: &mut Vec<Batch>) -> Result<()> {
        let Batch::Dense(frame) = batch else {
            return Err(EngineError::Shape(format!(
                "resample takes dense frames; stream {} is not",
                batch.stream()
            )));
        };
        let st = self.streams.entry(frame.stream.clone()).or_default();
        if st.first_sample.is_none() {
            if let RowIndex::Samples(s) = &frame.index {
                st.first_sample = s.first().copied();
            }
        }
        for m in &frame.markers {
            st.markers.push((st.seen + m.row as i64, m.clone()));
        }
        st.rows.extend_from_slice(&frame.data);
        st.seen += frame.rows() as i64;
        st.arrival_ns = frame.arrival_ns;
        // Output j needs inputs up to floor((j + pre)·down / up).
        let (up, down) = (self.filter.up as i64, self.filter.down as i64);
        let end = ((st.seen - 1) * up).div_euclid(down) - self.pre + 1;
        let stream = frame.stream.clone();
        self.emit(&stream, end, out)
    }

    fn snapshot(&self) -> Result<Vec<u8>> {
        neurostream_engine::checkpoint::encode_streams(&self.streams)
    }

    fn restore(&mut self, state: &[u8]) -> Result<()> {
        for (stream, st) in neurostream_engine::checkpoint::decode_streams::<StreamState>(state, "resample")? {
            if st.rows.len() % self.channels.max(1) != 0 {
                return Err(EngineError::Checkpoint(format!(
                    "resample: the saved rows of stream {stream} do not fit {} channels",
                    self.channels
                )));
            }
            self.streams.insert(stream, st);
        }
        Ok(())
    }

    fn finish(&mut self, out: &mut Vec<Batch>) -> Result<()> {
        for stream in neurostream_engine::stream_names(&self.streams) {
            self.end_stream(&stream, out)?;
        }
        Ok(())
    }

    /// Emits every output sample the stream's input determines (the samples after its last
    /// input are zeros, as `scipy.signal.resample_poly` pads) and drops its state.
    fn end_stream(&mut self, stream: &Arc<str>, out: &mut Vec<Batch>) -> Result<()> {
        let Some(seen) = self.streams.get(stream).map(|st| st.seen) else {
            return Ok(());
        };
        let n_out = (seen * self.filter.up as i64 + self.filter.down as i64 - 1) / self.filter.down as i64;
        self.emit(stream, n_out, out)?;
        self.streams.remove(stream);
        Ok(())
    }
}
