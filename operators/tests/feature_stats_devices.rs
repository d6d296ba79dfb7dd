//! `feature_stats` on wgpu against the same operator on the CPU (itself checked against numpy in
//! `tests/feature_stats.rs`), on random sparse streams: two streams interleaved in frames of
//! irregular sizes, rows with no firing feature, negative and zero activations (not firing),
//! repeated ids, activations from 1e-6 to 1e4 (every histogram bin and both clamped ends),
//! sliding windows with panes closing mid-frame, and an all-time run long enough that the
//! device's counts are settled mid-frame. Counts, histograms, L0 distributions, dead flags and
//! top examples must be equal; float columns within 1e-4 relative (the device sums activations
//! in float32 between settles, at most 16384 tokens, before they join the float64 totals).
//! Also checked on wgpu: no buffer is created per frame after warm-up, only the counters come
//! back, and a snapshot taken with counts still on the device restores on either backend to
//! the same tables.
//!
//! The wgpu cases need a Vulkan/Metal/DX12 adapter; a software one (lavapipe) is accepted.
//! Without any adapter they fail, unless NEUROSTREAM_SKIP_GPU_TESTS=1 is set.

mod common;

use std::sync::Arc;

use arrow::array::{Array, AsArray};
use arrow::datatypes::{DataType, Float32Type, Float64Type};
use common::gpu;
use neurostream_engine::{
    Batch, ComputeDevice, NodeContext, OperatorInstance, OperatorKind, PipelineSettings, RowIndex, Schema, SparseFrame,
};
use neurostream_operators::stats::accum::LogBins;
use neurostream_operators::stats::FeatureStatsKind;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

const FEATURES: usize = 701;
const REL: f64 = 1e-4;

fn schema() -> Arc<Schema> {
    Arc::new(Schema::features(FEATURES, None, None, None))
}

fn instance(config: &str, device: &ComputeDevice) -> Box<dyn OperatorInstance> {
    let table: toml::Table = toml::from_str(config).unwrap();
    let settings = PipelineSettings::default();
    let ctx = NodeContext {
        label: "[operators.stats]",
        name: "stats",
        base_dir: std::path::Path::new("."),
        settings: &settings,
        loaded: Default::default(),
    };
    let op = FeatureStatsKind
        .build(neurostream_engine::parse_config(table, &ctx).unwrap(), &ctx, &schema())
        .unwrap();
    op.instantiate(device).unwrap()
}

/// A frame of `rows` tokens of `stream` starting at token `first`, with `entries` entries per
/// row (`None`: 0 to 39).
fn frame(stream: &str, rows: usize, first: usize, entries: Option<usize>, rng: &mut StdRng) -> SparseFrame {
    let (mut offsets, mut ids, mut values) = (vec![0u32], Vec::new(), Vec::new());
    for _ in 0..rows {
        let l0 = entries.unwrap_or_else(|| if rng.random_bool(0.1) { 0 } else { rng.random_range(1..40) });
        for _ in 0..l0 {
            // Low ids fire often, so some features are dense and some never fire.
            let f = (rng.random_range(0.0f64..1.0).powi(3) * (FEATURES - 50) as f64) as u32;
            ids.push(f);
            values.push(match rng.random_range(0..10) {
                0 => -rng.random_range(0.0f32..2.0),
                1 => 0.0,
                // Exactly on a bin edge of `WINDOWED`'s histogram, or just below one.
                2 => {
                    let edge = EDGES[rng.random_range(0..EDGES.len())];
                    f32::from_bits(edge.to_bits() - rng.random_range(0..2))
                }
                _ => 10f32.powf(rng.random_range(-6.0f32..4.0)),
            });
        }
        offsets.push(ids.len() as u32);
    }
    let index = RowIndex::Tokens {
        seq_id: (first..first + rows).map(|t| (t / 50) as u64).collect(),
        pos: (first..first + rows).map(|t| (t % 50) as u32).collect(),
        token: Some((first..first + rows).map(|t| format!("t{t}")).collect()),
        time: None,
    };
    SparseFrame::new(Arc::from(stream), schema(), index, offsets, ids, values).unwrap()
}

/// Frames of two interleaved streams, `tokens` each, in irregular sizes up to `max_rows`.
fn frames(tokens: usize, max_rows: usize, seed: u64) -> Vec<SparseFrame> {
    let mut rng = StdRng::seed_from_u64(seed);
    let mut done = [0usize; 2];
    let mut out = Vec::new();
    while done.iter().any(|&d| d < tokens) {
        let s = if done[0] >= tokens {
            1
        } else if done[1] >= tokens {
            0
        } else {
            rng.random_range(0..2)
        };
        let rows = rng.random_range(1..=max_rows).min(tokens - done[s]);
        out.push(frame(["a", "b"][s], rows, done[s], None, &mut rng));
        done[s] += rows;
    }
    out
}

fn feed(op: &mut dyn OperatorInstance, frames: &[SparseFrame], out: &mut Vec<Batch>) {
    for f in frames {
        op.process(Batch::Sparse(f.clone()), out).unwrap();
    }
}

fn run(op: &mut dyn OperatorInstance, frames: &[SparseFrame]) -> Vec<Batch> {
    let mut out = Vec::new();
    feed(op, frames, &mut out);
    op.finish(&mut out).unwrap();
    out
}

/// Equal tables: the same tables in the same order, every column equal (floats within `REL`).
fn assert_same(got: &[Batch], want: &[Batch], what: &str) {
    assert_eq!(got.len(), want.len(), "{what}: table count");
    for (i, (g, w)) in got.iter().zip(want).enumerate() {
        let (Batch::Table(g), Batch::Table(w)) = (g, w) else {
            panic!("{what}: not tables")
        };
        assert_eq!((&g.stream, &g.table), (&w.stream, &w.table), "{what}: table {i}");
        let at = format!("{what}: table {i} ({} of {})", g.table, g.stream);
        assert_eq!(g.data.schema(), w.data.schema(), "{at}");
        assert_eq!(g.data.num_rows(), w.data.num_rows(), "{at}: rows");
        for (c, field) in w.data.schema().fields().iter().enumerate() {
            let (gc, wc) = (g.data.column(c), w.data.column(c));
            let floats: Option<(Vec<f64>, Vec<f64>)> = match field.data_type() {
                DataType::Float64 => Some((
                    gc.as_primitive::<Float64Type>().values().to_vec(),
                    wc.as_primitive::<Float64Type>().values().to_vec(),
                )),
                DataType::Float32 => Some((
                    gc.as_primitive::<Float32Type>().values().iter().map(|&v| v as f64).collect(),
                    wc.as_primitive::<Float32Type>().values().iter().map(|&v| v as f64).collect(),
                )),
                _ => None,
            };
            match floats {
                Some((gv, wv)) => {
                    assert_eq!(gc.nulls(), wc.nulls(), "{at}: nulls of {}", field.name());
                    for (r, (a, b)) in gv.iter().zip(&wv).enumerate() {
                        let ok = a == b || (a - b).abs() <= REL * b.abs() || (a.is_nan() && b.is_nan());
                        assert!(ok, "{at}: {} row {r}: {a} vs {b}", field.name());
                    }
                }
                None => assert_eq!(gc.to_data(), wc.to_data(), "{at}: column {}", field.name()),
            }
        }
    }
}

/// The bin edges of `WINDOWED`'s activation histogram, as float32.
static EDGES: std::sync::LazyLock<Vec<f32>> = std::sync::LazyLock::new(|| {
    LogBins {
        lo: -5.0,
        hi: 3.0,
        bins: 20,
    }
    .f32_thresholds()
});

const WINDOWED: &str = r#"
window = 300
step = 100
dead_after = 150
dense_above = 0.05
top_k = 3
context = 2
activation_bins = [-5.0, 3.0, 20]
"#;

/// All time only, one token short of two device settles per stream.
const ALL_TIME: &str = r#"
window = 0
dead_after = 5000
activation_bins = [-3.0, 2.0, 7]
top_k = 0
"#;

#[test]
fn wgpu_equals_the_cpu_with_windows_closing_mid_frame() {
    let Some(gpu) = gpu() else { return };
    let input = frames(2000, 450, 1);
    let want = run(instance(WINDOWED, &ComputeDevice::Cpu).as_mut(), &input);
    assert!(want.len() > 100, "windows closed: {}", want.len());
    let got = run(instance(WINDOWED, &gpu).as_mut(), &input);
    assert_same(&got, &want, "windowed");
}

#[test]
fn wgpu_equals_the_cpu_over_more_tokens_than_it_leaves_unsettled() {
    let Some(gpu) = gpu() else { return };
    let input = frames(2 * 16_384 - 1, 5000, 2);
    let want = run(instance(ALL_TIME, &ComputeDevice::Cpu).as_mut(), &input);
    let got = run(instance(ALL_TIME, &gpu).as_mut(), &input);
    assert_same(&got, &want, "all time");
}

#[test]
fn wgpu_equals_the_cpu_without_an_activation_histogram_or_examples() {
    let Some(gpu) = gpu() else { return };
    let config = "window = 250\ntop_k = 0\nactivation_bins = [0.0, 0.0, 0]";
    let input = frames(900, 300, 5);
    let want = run(instance(config, &ComputeDevice::Cpu).as_mut(), &input);
    let got = run(instance(config, &gpu).as_mut(), &input);
    assert!(want
        .iter()
        .all(|b| !matches!(b, Batch::Table(t) if &*t.table == "activation_histogram")));
    assert_same(&got, &want, "no histogram");
}

#[test]
fn wgpu_creates_no_buffer_per_frame_and_reads_back_only_the_counters() {
    let Some(gpu) = gpu() else { return };
    let ComputeDevice::Gpu(ctx) = &gpu else { unreachable!() };
    // One stream, tumbling windows of 512 tokens in frames of 128 tokens of 20 entries (the
    // uploads' sizes do not vary): a settle every 4 frames.
    let config = "window = 512\ntop_k = 0\nactivation_bins = [-5.0, 3.0, 20]";
    let mut rng = StdRng::seed_from_u64(3);
    let input: Vec<SparseFrame> = (0..64).map(|i| frame("a", 128, 128 * i, Some(20), &mut rng)).collect();
    let mut op = instance(config, &gpu);
    let mut out = Vec::new();
    feed(op.as_mut(), &input[..16], &mut out);
    let created = ctx.buffers_created();
    let (_, down) = ctx.bytes_moved();
    feed(op.as_mut(), &input[16..], &mut out);
    assert_eq!(ctx.buffers_created(), created, "buffers created per frame after warm-up");
    // 12 settles of 512 tokens: 4 u32 per feature and two 16-bit bins a u32 (20 bins), and one
    // u32 L0 per token.
    let settles = (64 - 16) / 4;
    let per_settle = (4 + 20 / 2) * FEATURES * 4 + 512 * 4;
    assert_eq!(ctx.bytes_moved().1 - down, (settles * per_settle) as u64, "bytes read back");
}

/// Streams that come and go (a long run's clients) do not each keep device counters: a settled
/// stream gives its buffers back, so 40 streams one after another create no more buffers than
/// the first two, and the tables still equal the CPU's.
#[test]
fn streams_that_come_and_go_reuse_the_device_counters() {
    let Some(gpu) = gpu() else { return };
    let ComputeDevice::Gpu(ctx) = &gpu else { unreachable!() };
    let config = "window = 256\ntop_k = 2\nactivation_bins = [-5.0, 3.0, 20]";
    let mut rng = StdRng::seed_from_u64(11);
    // Each stream: one window of 256 tokens in two frames (its pane closes and settles).
    let input: Vec<SparseFrame> = (0..40)
        .flat_map(|s| {
            let name = format!("client-{s}");
            [
                frame(&name, 128, 0, Some(20), &mut rng),
                frame(&name, 128, 128, Some(20), &mut rng),
            ]
        })
        .collect();
    let mut op = instance(config, &gpu);
    let mut out = Vec::new();
    feed(op.as_mut(), &input[..4], &mut out);
    let created = ctx.buffers_created();
    feed(op.as_mut(), &input[4..], &mut out);
    assert_eq!(ctx.buffers_created(), created, "buffers created for each new stream");
    op.finish(&mut out).unwrap();
    let want = run(instance(config, &ComputeDevice::Cpu).as_mut(), &input);
    assert_same(&out, &want, "40 streams one after another");
}

#[test]
fn a_snapshot_with_counts_on_the_device_restores_on_either_backend() {
    let Some(gpu) = gpu() else { return };
    let input = frames(1200, 170, 4);
    let cut = input.len() / 2;
    let want = run(instance(WINDOWED, &ComputeDevice::Cpu).as_mut(), &input);
    let mut op = instance(WINDOWED, &gpu);
    let mut before = Vec::new();
    feed(op.as_mut(), &input[..cut], &mut before);
    let state = op.snapshot().unwrap();
    // The snapshot changed nothing: the instance goes on to the same tables.
    let mut same = before.clone();
    feed(op.as_mut(), &input[cut..], &mut same);
    op.finish(&mut same).unwrap();
    assert_same(&same, &want, "after a snapshot");
    for (device, name) in [(&gpu, "restored on wgpu"), (&ComputeDevice::Cpu, "restored on the CPU")] {
        let mut resumed = instance(WINDOWED, device);
        resumed.restore(&state).unwrap();
        let mut out = before.clone();
        feed(resumed.as_mut(), &input[cut..], &mut out);
        resumed.finish(&mut out).unwrap();
        assert_same(&out, &want, name);
    }
}
