//! Times the signal kernels for `bench/bci.py` (which runs SciPy/MNE on the same sizes in the
//! same run and writes the comparison table). Prints one JSON object.
//!
//!   cargo run --release --example bench_signal
//!
//! - offline band-pass: `CpuSos` over `channels × seconds` at 1 kHz (Butterworth order 4
//!   band-pass 8-30 Hz, 4 second-order sections), in 10 000-sample chunks, 1 and 2 threads (`CpuSos::with_threads`, channels split);
//! - streaming: per 32-sample × 64-channel chunk with carried state, p50/p99 over 20 000 chunks;
//! - Welch band power of 1 s × 64-channel windows (nperseg 256), per window;
//! - `hilbert` envelope (`CpuHilbert`): per 1 s × 64-channel block, and over 60 s × 64 channels at once.
//!
//!   cargo run --release --example bench_signal -- gpu CHANNELS SECONDS
//!
//! times the same offline band-pass on wgpu (`GpuSos`, a software adapter allowed and named) for
//! `bench/gpu.py`, with the bytes moved per sample.

use std::time::Instant;

use neurostream::operators::signal::bandpower::welch::{CpuPower, PowerKernels, Welch};
use neurostream::operators::signal::hilbert::{CpuHilbert, HilbertKernels, HilbertOutput};
use neurostream::operators::signal::iir::cpu::{CpuSos, SosKernels};
use neurostream::operators::signal::iir::design::{butter, BandType};

fn signal(rows: usize, channels: usize) -> Vec<f32> {
    // Deterministic pseudo-random samples (a small LCG), µV scale.
    let mut s = 0x2545_f491_4f6c_dd1du64;
    (0..rows * channels)
        .map(|_| {
            s = s.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            ((s >> 40) as f32 / (1u64 << 24) as f32 - 0.5) * 100.0
        })
        .collect()
}

fn offline(channels: usize, seconds: usize, threads: usize) -> f64 {
    let sos = butter(4, &[8.0, 30.0], BandType::Bandpass, 1000.0).unwrap();
    let rows = seconds * 1000;
    let mut data = signal(rows, channels);
    let chunk = 10_000;
    let mut k = CpuSos::with_threads(threads);
    let mut state = vec![0f64; sos.len() * 2 * channels];
    let t0 = Instant::now();
    for c in data.chunks_mut(chunk * channels) {
        k.filter(&sos, &mut state, c, channels).unwrap();
    }
    (rows * channels) as f64 / t0.elapsed().as_secs_f64()
}

fn streaming() -> (f64, f64) {
    let sos = butter(4, &[8.0, 30.0], BandType::Bandpass, 1000.0).unwrap();
    let (channels, rows) = (64, 32);
    let mut k = CpuSos::new();
    let mut state = vec![0f64; sos.len() * 2 * channels];
    let data = signal(rows * 20_000, channels);
    let mut times = Vec::with_capacity(20_000);
    let mut buf = vec![0f32; rows * channels];
    for c in data.chunks_exact(rows * channels) {
        buf.copy_from_slice(c);
        let t0 = Instant::now();
        k.filter(&sos, &mut state, &mut buf, channels).unwrap();
        times.push(t0.elapsed().as_nanos() as f64 / 1e3);
    }
    times.sort_by(f64::total_cmp);
    (times[times.len() / 2], times[times.len() * 99 / 100])
}

fn welch_per_window() -> f64 {
    let (channels, len) = (64, 1000);
    let w = Welch::new(256, 128, 1000.0).unwrap();
    let mut k = CpuPower::new();
    let data = signal(len, channels);
    let n = 500;
    let t0 = Instant::now();
    let mut sink = 0.0;
    // The operator's buffers, reused from window to window as it does.
    let (mut by_channel, mut segs, mut p) = (Vec::new(), Vec::new(), Vec::new());
    for _ in 0..n {
        segs.clear();
        w.push_segments(&data, channels, &mut by_channel, &mut segs);
        k.power(&segs, 256, w.nfreq(), &mut p).unwrap();
        let s = w.segments(len);
        for c in 0..channels {
            sink += w.average(&p[c * s * w.nfreq()..(c + 1) * s * w.nfreq()], s)[10];
        }
    }
    assert!(sink.is_finite());
    t0.elapsed().as_secs_f64() / n as f64 * 1e6
}

/// Seconds per `hilbert` envelope of `rows × 64` channels, best of `repeat` (after one warm-up).
fn hilbert_envelope(rows: usize, repeat: usize) -> f64 {
    let channels = 64;
    let data = signal(rows, channels);
    let mut k = CpuHilbert::default();
    let mut best = f64::INFINITY;
    for _ in 0..=repeat {
        let mut buf = data.clone();
        let t0 = Instant::now();
        k.transform(&mut buf, channels, HilbertOutput::Envelope).unwrap();
        best = best.min(t0.elapsed().as_secs_f64());
        assert!(buf[0].is_finite());
    }
    best
}

/// The offline band-pass of `channels × seconds` at 1 kHz on wgpu, in 10 000-sample chunks.
fn gpu_bandpass(channels: usize, seconds: usize) -> serde_json::Value {
    use neurostream::operators::signal::iir::gpu::GpuSos;
    use neurostream::{ComputeDevice, DeviceChoice, DeviceManager, DevicePolicy};
    let mut manager = DeviceManager::new(DevicePolicy {
        allow_software_gpu: true,
        fallback_to_cpu: false,
    });
    let ctx = match manager.resolve(DeviceChoice::Gpu) {
        Ok(ComputeDevice::Gpu(ctx)) => ctx,
        Ok(ComputeDevice::Cpu) => unreachable!("a GPU was asked for"),
        Err(e) => panic!("no wgpu adapter: {e}"),
    };
    let sos = butter(4, &[8.0, 30.0], BandType::Bandpass, 1000.0).unwrap();
    let rows = seconds * 1000;
    let mut data = signal(rows, channels);
    let chunk = 10_000;
    let mut k = GpuSos::new(ctx.clone()).unwrap();
    let mut state = vec![0f64; sos.len() * 2 * channels];
    k.filter(&sos, &mut state, &mut signal(chunk, channels), channels).unwrap();
    let (up0, down0) = ctx.bytes_moved();
    let t0 = Instant::now();
    for c in data.chunks_mut(chunk * channels) {
        k.filter(&sos, &mut state, c, channels).unwrap();
    }
    let elapsed = t0.elapsed().as_secs_f64();
    let (up, down) = ctx.bytes_moved();
    serde_json::json!({
        "adapter": ctx.describe(),
        "software_adapter": ctx.info.device_type == neurostream::wgpu::DeviceType::Cpu,
        "channels": channels,
        "sections": sos.len(),
        "samples": rows,
        "seconds": elapsed,
        "samples_per_s": rows as f64 / elapsed,
        "bytes_up_per_sample": (up - up0) as f64 / rows as f64,
        "bytes_down_per_sample": (down - down0) as f64 / rows as f64,
    })
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.first().map(String::as_str) == Some("gpu") {
        let arg = |i: usize, default: usize| args.get(i).map_or(default, |v| v.parse().expect("a number"));
        println!("{}", gpu_bandpass(arg(1, 256), arg(2, 60)));
        return;
    }
    let (p50, p99) = streaming();
    let out = serde_json::json!({
        "offline_64_1t": offline(64, 600, 1),
        "offline_64_2t": offline(64, 600, 2),
        "offline_306_1t": offline(306, 120, 1),
        "offline_306_2t": offline(306, 120, 2),
        "chunk_p50_us": p50,
        "chunk_p99_us": p99,
        "welch_window_us": welch_per_window(),
        "hilbert_block_us": hilbert_envelope(1000, 200) * 1e6,
        "hilbert_60s_ms": hilbert_envelope(60_000, 5) * 1e3,
    });
    println!("{out}");
}
