//! `bandpower` over sliding windows on the CPU and on wgpu against a float64 Welch written here
//! (direct DFT, periodic Hann window, constant detrend, one-sided density, band sums), for
//! two streams interleaved in frames of irregular sizes. On wgpu the rows stay on the device
//! between frames: the test also feeds device-resident frames, checks that only the band
//! powers come back (bytes read back), that no buffer is created per frame after warm-up, and
//! that a snapshot taken mid-stream (rows copied back) restores to the same output.
//! Tolerance: |got − want| ≤ 1e-6 · max |want| of the column on the CPU, 1e-3 on wgpu (f32 DFT).
//!
//! The wgpu cases need a Vulkan/Metal/DX12 adapter; a software one (lavapipe) is accepted.
//! Without any adapter they fail, unless NEUROSTREAM_SKIP_GPU_TESTS=1 is set.

mod common;

use std::sync::Arc;

use common::gpu;
use neurostream_engine::{
    Batch, ComputeDevice, DeviceRows, Frame, NodeContext, OperatorInstance, OperatorKind, PipelineSettings, RowIndex, Rows,
    Schema,
};
use neurostream_operators::signal::bandpower::BandpowerKind;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

const FS: f64 = 250.0;
const CHANNELS: usize = 5;

/// Settings of one case: window and step in samples, Welch segment, bands.
struct Case {
    config: &'static str,
    length: usize,
    step: usize,
    nperseg: usize,
    noverlap: usize,
    bands: &'static [(f64, f64)],
    relative: bool,
}

const CASES: [Case; 2] = [
    Case {
        config: "window_s = 1.0\nstep_s = 0.3\nrelative = true\nbands = [[\"theta\", 4.0, 8.0], [\"alpha\", 8.0, 13.0], [\"beta\", 13.0, 30.0]]",
        length: 250,
        step: 75,
        nperseg: 250,
        noverlap: 125,
        bands: &[(4.0, 8.0), (8.0, 13.0), (13.0, 30.0)],
        relative: true,
    },
    Case {
        // Odd segment length, segments that do not tile the window, windows that do not overlap.
        config: "window_s = 0.8\nstep_s = 1.2\nnperseg = 75\nnoverlap = 20\nbands = [[\"low\", 0.0, 10.0], [\"high\", 40.0, 125.0]]",
        length: 200,
        step: 300,
        nperseg: 75,
        noverlap: 20,
        bands: &[(0.0, 10.0), (40.0, 125.0)],
        relative: false,
    },
];

fn schema() -> Arc<Schema> {
    let names: Vec<String> = (0..CHANNELS).map(|c| format!("E{c}")).collect();
    Arc::new(Schema::signal(&names, "uV", FS))
}

fn instance(case: &Case, device: &ComputeDevice) -> Box<dyn OperatorInstance> {
    let table: toml::Table = toml::from_str(case.config).unwrap();
    let settings = PipelineSettings::default();
    let ctx = NodeContext {
        label: "[operators.power]",
        name: "power",
        base_dir: std::path::Path::new("."),
        settings: &settings,
        loaded: Default::default(),
    };
    let op = BandpowerKind
        .build(neurostream_engine::parse_config(table, &ctx).unwrap(), &ctx, &schema())
        .unwrap();
    op.instantiate(device).unwrap()
}

/// A signal with an offset, a few sines and noise per channel: `rows × CHANNELS`.
fn signal(rows: usize, seed: u64) -> Vec<f32> {
    let mut rng = StdRng::seed_from_u64(seed);
    let tones: Vec<(f64, f64, f64)> = (0..CHANNELS)
        .map(|_| {
            (
                rng.random_range(-50.0..50.0),
                rng.random_range(2.0..40.0),
                rng.random_range(1.0..20.0),
            )
        })
        .collect();
    (0..rows * CHANNELS)
        .map(|i| {
            let (t, c) = ((i / CHANNELS) as f64 / FS, i % CHANNELS);
            let (offset, freq, amp) = tones[c];
            (offset + amp * (2.0 * std::f64::consts::PI * freq * t).sin() + rng.random_range(-3.0..3.0)) as f32
        })
        .collect()
}

/// The frames of one stream: `sizes` repeated until `data` is used up.
fn frames(stream: &str, data: &[f32], sizes: &[usize]) -> Vec<Frame> {
    let rows = data.len() / CHANNELS;
    let (mut start, mut k, mut out) = (0, 0, Vec::new());
    while start < rows {
        let n = sizes[k % sizes.len()].min(rows - start);
        k += 1;
        let index = RowIndex::Samples((start as i64..(start + n) as i64).collect());
        let values = data[start * CHANNELS..(start + n) * CHANNELS].to_vec();
        out.push(Frame::new(stream.into(), schema(), index, values).unwrap());
        start += n;
    }
    out
}

/// Per window of `data`: each channel's band powers (and shares), in float64.
fn reference(case: &Case, data: &[f32]) -> Vec<Vec<f64>> {
    let rows = data.len() / CHANNELS;
    let (n, hop) = (case.nperseg, case.nperseg - case.noverlap);
    let segs = (case.length - case.noverlap) / hop;
    let nfreq = n / 2 + 1;
    let hann: Vec<f64> = (0..n)
        .map(|t| 0.5 - 0.5 * (2.0 * std::f64::consts::PI * t as f64 / n as f64).cos())
        .collect();
    let scale = 1.0 / (FS * hann.iter().map(|w| w * w).sum::<f64>());
    let df = FS / n as f64;
    let mut out = Vec::new();
    let mut start = 0;
    while start + case.length <= rows {
        let mut row = Vec::new();
        for c in 0..CHANNELS {
            let mut psd = vec![0f64; nfreq];
            for s in 0..segs {
                let x: Vec<f64> = (0..n).map(|t| data[(start + s * hop + t) * CHANNELS + c] as f64).collect();
                let mean = x.iter().sum::<f64>() / n as f64;
                for (k, p) in psd.iter_mut().enumerate() {
                    let (mut re, mut im) = (0f64, 0f64);
                    for (t, v) in x.iter().enumerate() {
                        let a = 2.0 * std::f64::consts::PI * (t * k) as f64 / n as f64;
                        re += (v - mean) * hann[t] * a.cos();
                        im -= (v - mean) * hann[t] * a.sin();
                    }
                    let one_sided = if k == 0 || (n % 2 == 0 && k == nfreq - 1) { 1.0 } else { 2.0 };
                    *p += (re * re + im * im) * scale * one_sided / segs as f64;
                }
            }
            let band = |lo: f64, hi: f64| -> f64 {
                (0..nfreq)
                    .filter(|&k| k as f64 * df >= lo && (k as f64 * df) < hi)
                    .map(|k| psd[k])
                    .sum::<f64>()
                    * df
            };
            let abs: Vec<f64> = case.bands.iter().map(|&(lo, hi)| band(lo, hi)).collect();
            row.extend(&abs);
            if case.relative {
                let lo = case.bands.iter().map(|b| b.0).fold(f64::INFINITY, f64::min);
                let hi = case.bands.iter().map(|b| b.1).fold(0.0, f64::max);
                let total = band(lo, hi);
                row.extend(abs.iter().map(|v| v / total));
            }
        }
        out.push(row);
        start += case.step;
    }
    out
}

/// Output rows per stream: (last sample, values).
type Rows2 = std::collections::BTreeMap<String, Vec<(i64, Vec<f32>)>>;

fn collect(out: Vec<Batch>, into: &mut Rows2) {
    for b in out {
        let Batch::Dense(f) = b else {
            panic!("bandpower emits dense frames")
        };
        let RowIndex::Samples(samples) = &f.index else {
            panic!("sample-indexed output")
        };
        let w = f.width();
        let values = f.values().unwrap();
        for (r, &s) in samples.iter().enumerate() {
            into.entry(f.stream.to_string())
                .or_default()
                .push((s, values[r * w..(r + 1) * w].to_vec()));
        }
    }
}

/// `got[stream]` equals `want[first..]` (windows `first..` of the stream) within `tol`.
fn assert_close(case: &Case, got: &Rows2, want: &[Vec<f64>], first: usize, stream: &str, tol: f64, what: &str) {
    let got = &got[stream];
    let want = &want[first..];
    assert_eq!(got.len(), want.len(), "{what} {stream}: windows");
    for (i, ((last, g), w)) in got.iter().zip(want).enumerate().map(|(i, x)| (i + first, x)) {
        assert_eq!(
            *last,
            (i * case.step + case.length - 1) as i64,
            "{what}: window {i}'s last sample"
        );
        assert_eq!(g.len(), w.len(), "{what}: values per window");
    }
    for col in 0..want[0].len() {
        let scale = want.iter().map(|r| r[col].abs()).fold(0.0, f64::max);
        for (i, (g, w)) in got.iter().zip(want).enumerate() {
            let err = (g.1[col] as f64 - w[col]).abs();
            assert!(
                err <= tol * scale,
                "{what} {stream}: window {i} column {col}: {} vs {} (scale {scale})",
                g.1[col],
                w[col]
            );
        }
    }
}

/// Runs two interleaved streams through `inst`, returning its output rows.
fn run_streams(inst: &mut dyn OperatorInstance, a: Vec<Frame>, b: Vec<Frame>) -> Rows2 {
    let mut rows = Rows2::new();
    let mut out = Vec::new();
    let (mut a, mut b) = (a.into_iter(), b.into_iter());
    loop {
        let (x, y) = (a.next(), b.next());
        if x.is_none() && y.is_none() {
            break;
        }
        for f in x.into_iter().chain(y) {
            inst.process(Batch::Dense(f), &mut out).unwrap();
        }
    }
    inst.finish(&mut out).unwrap();
    collect(out, &mut rows);
    rows
}

#[test]
fn sliding_band_power_equals_a_float64_welch_on_both_backends() {
    let (a, b) = (signal(2300, 1), signal(1700, 2));
    let devices: Vec<ComputeDevice> = std::iter::once(ComputeDevice::Cpu).chain(gpu()).collect();
    for case in &CASES {
        let (want_a, want_b) = (reference(case, &a), reference(case, &b));
        for device in &devices {
            let tol = if matches!(device, ComputeDevice::Cpu) { 1e-6 } else { 1e-3 };
            let what = device.describe();
            let mut inst = instance(case, device);
            let got = run_streams(
                inst.as_mut(),
                frames("a", &a, &[7, 64, 1, 250, 33, 120]),
                frames("b", &b, &[300, 5, 49]),
            );
            assert_close(case, &got, &want_a, 0, "a", tol, &what);
            assert_close(case, &got, &want_b, 0, "b", tol, &what);
        }
    }
}

/// Frames whose rows already live on `ctx` (as the operator before leaves them).
fn on_device(ctx: &Arc<neurostream_engine::GpuContext>, frames: Vec<Frame>) -> Vec<Frame> {
    frames
        .into_iter()
        .map(|mut f| {
            let buffer = ctx.storage_init("test.rows", bytemuck::cast_slice(&f.data));
            let values = f.data.len();
            f.set_rows(Rows::Device(Arc::new(DeviceRows::new(ctx.clone(), buffer, values))), true)
                .unwrap();
            f
        })
        .collect()
}

#[test]
fn on_the_device_only_band_powers_come_back_no_buffer_is_made_per_frame_and_snapshots_restore() {
    let Some(device) = gpu() else { return };
    let ComputeDevice::Gpu(ctx) = &device else { unreachable!() };
    let case = &CASES[0];
    let a = signal(6000, 3);
    let want = reference(case, &a);
    let width = CHANNELS * case.bands.len() * 2;
    let all = on_device(ctx, frames("a", &a, &[50]));
    let (head, tail) = all.split_at(40);

    // Device-resident frames in: nothing goes up but the window starts and the uniforms, and
    // nothing comes back but the band powers.
    let mut inst = instance(case, &device);
    let mut out = Vec::new();
    let mut created = 0;
    let (up0, down0) = ctx.bytes_moved();
    for (i, f) in head.iter().enumerate() {
        if i == 20 {
            created = ctx.buffers_created();
        }
        inst.process(Batch::Dense(f.clone()), &mut out).unwrap();
    }
    assert_eq!(ctx.buffers_created(), created, "buffers created per frame after warm-up");
    let (up, down) = ctx.bytes_moved();
    let windows: usize = out.iter().map(Batch::rows).sum();
    assert_eq!(windows, (40 * 50 - case.length) / case.step + 1);
    assert_eq!(
        down - down0,
        (windows * width * 4) as u64,
        "bytes read back: the band powers only"
    );
    let samples_bytes = (40 * 50 * CHANNELS * 4) as u64;
    assert!(
        up - up0 < samples_bytes / 4,
        "uploaded {} bytes for {samples_bytes} bytes of samples",
        up - up0
    );

    // A snapshot mid-stream copies the rows on the device back; a new instance restores it.
    let state = inst.snapshot().unwrap();
    let mut restored = instance(case, &device);
    restored.restore(&state).unwrap();
    for f in tail {
        restored.process(Batch::Dense(f.clone()), &mut out).unwrap();
    }
    restored.finish(&mut out).unwrap();
    let mut rows = Rows2::new();
    collect(out, &mut rows);
    assert_close(case, &rows, &want, 0, "a", 1e-3, "snapshot and restore on wgpu");

    // The snapshot is the CPU's: a CPU instance resumes from it too.
    let mut cpu = instance(case, &ComputeDevice::Cpu);
    cpu.restore(&state).unwrap();
    let mut out = Vec::new();
    for f in tail {
        let mut f = f.clone();
        f.materialize().unwrap();
        cpu.process(Batch::Dense(f), &mut out).unwrap();
    }
    let mut rows = Rows2::new();
    collect(out, &mut rows);
    assert_close(case, &rows, &want, windows, "a", 1e-3, "GPU snapshot resumed on the CPU");
}

/// Passes limited to 4 KiB (one window each here, against hundreds per frame by default): a
/// frame of 2300 rows runs as many passes, on host and device frames alike, and still equals
/// the reference. A host frame uploads only the rows that windows or later frames need.
#[test]
fn frames_of_any_size_run_in_passes_that_fit_the_device_budget() {
    let Some(device) = gpu() else { return };
    let ComputeDevice::Gpu(ctx) = &device else { unreachable!() };
    ctx.limit_pass_bytes(4096);
    assert_eq!(ctx.pass_bytes(), 4096);
    let (a, b) = (signal(2300, 1), signal(1700, 2));
    for case in &CASES {
        let (want_a, want_b) = (reference(case, &a), reference(case, &b));
        let mut inst = instance(case, &device);
        let got = run_streams(
            inst.as_mut(),
            frames("a", &a, &[2300]),
            on_device(ctx, frames("b", &b, &[900, 3, 797])),
        );
        assert_close(case, &got, &want_a, 0, "a", 1e-3, "split passes, host frame");
        assert_close(case, &got, &want_b, 0, "b", 1e-3, "split passes, device frames");
    }

    // Windows of 200 rows every 300: a third of the samples is never uploaded.
    let case = &CASES[1];
    let mut inst = instance(case, &device);
    let (up0, _) = ctx.bytes_moved();
    let mut out = Vec::new();
    for f in frames("a", &a, &[2300]) {
        inst.process(Batch::Dense(f), &mut out).unwrap();
    }
    let (up, _) = ctx.bytes_moved();
    let windows: usize = out.iter().map(Batch::rows).sum();
    assert_eq!(windows, (2300 - case.length) / case.step + 1);
    let needed = (windows * case.length * CHANNELS * 4) as u64;
    let samples = (2300 * CHANNELS * 4) as u64;
    assert!(
        up - up0 < needed + samples / 10,
        "uploaded {} bytes; the windows need {needed} of the frame's {samples}",
        up - up0
    );
}

/// The host-cut GPU path (epochs, `gpu_fallback = "cpu"`): 100 segments in passes of 13 under a
/// 4 KiB budget, each segment's `|DFT|²` equal to a float64 DFT within 1e-4 of the largest.
#[test]
fn host_cut_segments_run_in_passes_that_fit_the_device_budget() {
    use neurostream_operators::signal::bandpower::welch::{GpuPower, PowerKernels};
    let Some(device) = gpu() else { return };
    let ComputeDevice::Gpu(ctx) = &device else { unreachable!() };
    ctx.limit_pass_bytes(4096);
    let (n, nfreq) = (75, 38);
    let mut rng = StdRng::seed_from_u64(9);
    let segments: Vec<f32> = (0..100 * n).map(|_| rng.random_range(-1.0..1.0)).collect();
    let mut got = Vec::new();
    GpuPower::new(ctx.clone())
        .unwrap()
        .power(&segments, n, nfreq, &mut got)
        .unwrap();
    let want: Vec<f64> = segments
        .chunks(n)
        .flat_map(|x| {
            (0..nfreq).map(move |k| {
                let (mut re, mut im) = (0f64, 0f64);
                for (t, &v) in x.iter().enumerate() {
                    let a = 2.0 * std::f64::consts::PI * (t * k) as f64 / n as f64;
                    re += v as f64 * a.cos();
                    im -= v as f64 * a.sin();
                }
                re * re + im * im
            })
        })
        .collect();
    assert_eq!(got.len(), want.len(), "one power per segment and bin");
    let scale = want.iter().fold(0.0, |m: f64, v| m.max(*v));
    for (i, (g, w)) in got.iter().zip(&want).enumerate() {
        assert!(
            (g - w).abs() <= 1e-4 * scale,
            "segment {} bin {}: {g} vs {w}",
            i / nfreq,
            i % nfreq
        );
    }
}
