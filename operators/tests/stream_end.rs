//! The end of a stream (`Batch::End`: what `arrow_tcp` sends when an unnamed client
//! disconnects). Every operator that keeps state per stream must, at `end_stream`:
//! - emit for the ended stream exactly what it would have emitted for it at the end of the run
//!   (the reference: the same instance fed the same frames without the end, then finished);
//! - let go of its state: a snapshot taken right after the end is smaller than the reference's
//!   at the same point and holds nothing of the stream (restored and finished, it emits nothing
//!   for it);
//! - leave the other stream's outputs unchanged.
//!
//! Outputs are compared exactly on the CPU, and float values within 1e-4 (relative above 1) on
//! the GPU, which adds float32 sums in whatever order its threads run (NaN equals NaN).
//! Operators with device kernels run on the CPU and on wgpu (lavapipe without a GPU; NEUROSTREAM_SKIP_GPU_TESTS=1
//! skips the wgpu half where there is no adapter).

mod common;

use std::sync::Arc;

use neurostream_engine::{
    Batch, ComputeDevice, Frame, NodeContext, Operator, OperatorInstance, PipelineSettings, Registry, RowIndex, Schema,
    SparseFrame,
};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

const FEATURES: usize = 64;
const WIDTH: usize = 8;

fn build(kind: &str, config: &str, input: &Arc<Schema>) -> Arc<dyn Operator> {
    let mut registry = Registry::new();
    neurostream_operators::register(&mut registry);
    let settings = PipelineSettings::default();
    let ctx = NodeContext {
        label: "[operators.op]",
        name: "op",
        base_dir: std::path::Path::new("."),
        settings: &settings,
        loaded: Default::default(),
    };
    let table: toml::Table = toml::from_str(config).unwrap();
    registry
        .operator(kind)
        .unwrap_or_else(|| panic!("no operator kind {kind}"))
        .build_operator(table, &ctx, input)
        .unwrap_or_else(|e| panic!("{kind}: {e}"))
}

fn tokens(first: usize, rows: usize) -> RowIndex {
    RowIndex::Tokens {
        seq_id: (first..first + rows).map(|t| (t / 25) as u64).collect(),
        pos: (first..first + rows).map(|t| (t % 25) as u32).collect(),
        token: Some((first..first + rows).map(|t| format!("t{t}")).collect()),
        time: None,
    }
}

/// What an operator reads.
#[derive(Clone, Copy)]
enum Input {
    /// SAE features: ids with skewed rates, positive activations.
    Features,
    /// Dense activations, `WIDTH` wide, whose mean and scale differ per stream.
    Activations,
    /// Token scalars (`WIDTH` columns, e.g. reconstruction metrics), like the activations.
    Scalars,
    /// EEG: `WIDTH` channels `C1`..`C8` in µV at 100 Hz, like the activations.
    Signal,
}

impl Input {
    fn schema(self) -> Arc<Schema> {
        Arc::new(match self {
            Input::Features => Schema::features(FEATURES, None, None, None),
            Input::Activations => Schema::activation(WIDTH, None, None),
            Input::Scalars => Schema::token_scalars(&(0..WIDTH).map(|c| format!("m{c}")).collect::<Vec<_>>(), None),
            Input::Signal => Schema::signal(&(1..=WIDTH).map(|c| format!("C{c}")).collect::<Vec<_>>(), "uV", 100.0),
        })
    }
}

/// Two streams interleaved in frames of 1 to 17 rows: `a` has `a_rows` tokens, `b` 300.
fn frames(input: Input, a_rows: usize, seed: u64) -> Vec<Batch> {
    let mut rng = StdRng::seed_from_u64(seed);
    let total = [a_rows, 300];
    let mut done = [0usize; 2];
    let mut out = Vec::new();
    while done.iter().zip(&total).any(|(d, t)| d < t) {
        let s = match (done[0] < total[0], done[1] < total[1]) {
            (true, true) => rng.random_range(0..2),
            (true, false) => 0,
            _ => 1,
        };
        let rows = rng.random_range(1..=17).min(total[s] - done[s]);
        let stream: Arc<str> = ["a", "b"][s].into();
        let index = match input {
            Input::Signal => RowIndex::Samples((done[s] as i64..(done[s] + rows) as i64).collect()),
            _ => tokens(done[s], rows),
        };
        out.push(if let Input::Features = input {
            let (mut offsets, mut ids, mut values) = (vec![0u32], Vec::new(), Vec::new());
            for _ in 0..rows {
                for _ in 0..rng.random_range(0..9) {
                    ids.push((rng.random_range(0.0f64..1.0).powi(2) * FEATURES as f64) as u32);
                    values.push(10f32.powf(rng.random_range(-2.0f32..1.5)));
                }
                offsets.push(ids.len() as u32);
            }
            Batch::Sparse(SparseFrame::new(stream, input.schema(), index, offsets, ids, values).unwrap())
        } else {
            let (mean, scale) = ([0.5f32, -2.0][s], [1.0f32, 3.0][s]);
            let data = (0..rows * WIDTH)
                .map(|i| mean + (i % WIDTH) as f32 * 0.1 + scale * rng.random_range(-1.0f32..1.0))
                .collect();
            Batch::Dense(Frame::new(stream, input.schema(), index, data).unwrap())
        });
        done[s] += rows;
    }
    out
}

/// The outputs of one stream.
fn of_stream<'a>(out: &'a [Batch], stream: &str) -> Vec<&'a Batch> {
    out.iter().filter(|b| &**b.stream() == stream).collect()
}

/// Whether two floats agree within `rel` (relative above 1, absolute below; NaN equals NaN).
fn close(a: f64, b: f64, rel: f64) -> bool {
    (a.is_nan() && b.is_nan()) || a == b || (a - b).abs() <= rel * a.abs().max(b.abs()).max(1.0)
}

/// Checks two output sequences batch by batch: everything equal but float values, which agree
/// within `rel` (0 on the CPU; the GPU adds float32 sums in whatever order its threads run).
fn assert_same(got: &[&Batch], want: &[&Batch], rel: f64, at: &str) {
    use arrow::array::{Array, AsArray};
    use arrow::datatypes::{DataType, Float32Type, Float64Type};
    assert_eq!(got.len(), want.len(), "{at}: number of output batches");
    for (i, (g, w)) in got.iter().zip(want).enumerate() {
        let at = format!("{at}, output {i}");
        let floats = |a: &[f32], b: &[f32]| a.len() == b.len() && a.iter().zip(b).all(|(x, y)| close(*x as f64, *y as f64, rel));
        match (g, w) {
            (Batch::Table(g), Batch::Table(w)) => {
                assert_eq!((&g.table, g.data.schema()), (&w.table, w.data.schema()), "{at}");
                for (c, field) in g.data.schema().fields().iter().enumerate() {
                    let (x, y) = (g.data.column(c), w.data.column(c));
                    let agree = match field.data_type() {
                        DataType::Float64 => {
                            let (x, y) = (x.as_primitive::<Float64Type>(), y.as_primitive::<Float64Type>());
                            x.len() == y.len()
                                && x.nulls() == y.nulls()
                                && x.values().iter().zip(y.values()).all(|(a, b)| close(*a, *b, rel))
                        }
                        DataType::Float32 => floats(
                            x.as_primitive::<Float32Type>().values(),
                            y.as_primitive::<Float32Type>().values(),
                        ),
                        _ => x == y,
                    };
                    assert!(agree, "{at}: table {}, column {}:\n{x:?}\n{y:?}", g.table, field.name());
                }
            }
            (Batch::Dense(g), Batch::Dense(w)) => {
                assert_eq!(g.index, w.index, "{at}: rows");
                assert!(floats(&g.data, &w.data), "{at}: values");
            }
            (Batch::Sparse(g), Batch::Sparse(w)) => {
                assert_eq!(
                    (&g.index, &g.offsets, &g.ids),
                    (&w.index, &w.offsets, &w.ids),
                    "{at}: entries"
                );
                assert!(floats(&g.values, &w.values), "{at}: values");
            }
            _ => panic!("{at}: {g:?} vs {w:?}"),
        }
    }
}

/// Feeds `frames`; with `end`, ends stream `a` after its last frame. Returns every output and
/// the snapshot taken right after `a`'s last frame (and its end).
fn run(op: &dyn Operator, device: &ComputeDevice, frames: &[Batch], end: bool) -> (Vec<Batch>, Vec<u8>) {
    let mut inst = op.instantiate(device).unwrap();
    let last_a = frames.iter().rposition(|b| &**b.stream() == "a").unwrap();
    let (mut out, mut snapshot) = (Vec::new(), Vec::new());
    for (i, f) in frames.iter().enumerate() {
        inst.process(f.clone(), &mut out).unwrap();
        if i == last_a {
            if end {
                inst.end_stream(&"a".into(), &mut out).unwrap();
            }
            snapshot = inst.snapshot().unwrap();
        }
    }
    inst.finish(&mut out).unwrap();
    (out, snapshot)
}

/// What a fresh instance restored from `snapshot` emits when finished at once.
fn finish_restored(op: &dyn Operator, device: &ComputeDevice, snapshot: &[u8]) -> Vec<Batch> {
    let mut inst: Box<dyn OperatorInstance> = op.instantiate(device).unwrap();
    inst.restore(snapshot).unwrap();
    let mut out = Vec::new();
    inst.finish(&mut out).unwrap();
    out
}

fn check(kind: &str, config: &str, input: Input, a_rows: usize) {
    let op = build(kind, config, &input.schema());
    let mut devices = vec![ComputeDevice::Cpu];
    if op.computes() {
        devices.extend(common::gpu());
    }
    for device in &devices {
        for seed in 0..3 {
            let frames = frames(input, a_rows, seed);
            let (ended, after_end) = run(op.as_ref(), device, &frames, true);
            let (whole, reference) = run(op.as_ref(), device, &frames, false);
            let at = format!("{kind} on {}, seed {seed}", device.describe());
            let rel = match device {
                ComputeDevice::Cpu => 0.0,
                ComputeDevice::Gpu(_) => 1e-4,
            };
            let a = of_stream(&whole, "a");
            assert!(!a.is_empty(), "{at}: stream a has no output at all");
            assert_same(&of_stream(&ended, "a"), &a, rel, &format!("{at}: stream a"));
            assert_same(
                &of_stream(&ended, "b"),
                &of_stream(&whole, "b"),
                rel,
                &format!("{at}: stream b"),
            );
            let restored = finish_restored(op.as_ref(), device, &after_end);
            assert!(of_stream(&restored, "a").is_empty(), "{at}: state of a after its end");
            assert!(
                after_end.len() < reference.len(),
                "{at}: the snapshot after a's end ({} bytes) is not smaller than with a's state ({} bytes)",
                after_end.len(),
                reference.len()
            );
        }
        // Ending a stream it never saw is nothing.
        let mut inst = op.instantiate(device).unwrap();
        let mut out = Vec::new();
        inst.end_stream(&"never".into(), &mut out).unwrap();
        assert!(out.is_empty(), "{kind}: output for a stream it never saw");
    }
}

#[test]
fn feature_stats_emits_an_ended_streams_last_tables_and_drops_its_counts() {
    // Sliding windows (panes closing mid-frame), top examples, an open window at the end.
    check("feature_stats", "window = 40\nstep = 20\ntop_k = 3", Input::Features, 130);
    // All-time only.
    check("feature_stats", "top_k = 2", Input::Features, 77);
}

#[test]
fn cooccurrence_reports_an_ended_streams_graph_and_drops_its_counts() {
    check(
        "cooccurrence",
        "window = \"block\"\nblock_tokens = 5\nmin_count = 1",
        Input::Features,
        90,
    );
}

#[test]
fn token_stats_emits_an_ended_streams_last_window() {
    check("token_stats", "window = 40", Input::Scalars, 130);
}

#[test]
fn running_normalize_releases_a_warm_up_and_drops_the_statistics() {
    // `a` ends during its warm-up: its held rows come out scaled by what it had seen.
    check(
        "normalize",
        "method = \"running_zscore\"\nwarmup = 200",
        Input::Activations,
        60,
    );
    // `a` ends long after it: only the statistics go.
    check(
        "normalize",
        "method = \"running_zscore\"\nwarmup = 20",
        Input::Activations,
        150,
    );
}

#[test]
fn mahalanobis_scores_a_stream_shorter_than_its_reference_at_its_end() {
    check("mahalanobis", "reference_rows = 100", Input::Activations, 70);
    check("mahalanobis", "reference_rows = 50", Input::Activations, 150);
}

#[test]
fn kmeans_emits_an_ended_streams_tables_and_drops_its_model() {
    check(
        "kmeans",
        "k = 3\ninit_rows = 30\nbatch_size = 16\nwindow = 50\nseed = 7",
        Input::Activations,
        140,
    );
}

#[test]
fn kmeans_drops_a_stream_that_ended_before_it_had_k_rows() {
    let frames: Vec<Batch> = frames(Input::Activations, 2, 3);
    let op = build("kmeans", "k = 3\ninit_rows = 30", &Input::Activations.schema());
    let mut inst = op.instantiate(&ComputeDevice::Cpu).unwrap();
    let mut out = Vec::new();
    for f in frames.iter().filter(|b| &**b.stream() == "a") {
        inst.process(f.clone(), &mut out).unwrap();
    }
    // The run goes on (a warning), where a run ending with such a stream fails.
    inst.end_stream(&"a".into(), &mut out).unwrap();
    assert!(out.is_empty());
    inst.finish(&mut out).unwrap();
}

#[test]
fn fir_drops_an_ended_streams_history() {
    check("fir", "h_freq = 20.0", Input::Signal, 120);
}

#[test]
fn butterworth_drops_the_state_or_filters_the_held_frames_of_an_ended_stream() {
    check(
        "butterworth",
        "btype = \"bandpass\"\norder = 4\ncutoff = [8.0, 30.0]",
        Input::Signal,
        120,
    );
    // Zero phase: the ended stream's frames come out filtered forward and back at its end.
    check(
        "butterworth",
        "btype = \"bandpass\"\norder = 4\ncutoff = [8.0, 30.0]\nzero_phase = true",
        Input::Signal,
        120,
    );
}

#[test]
fn bandpower_drops_an_ended_streams_window() {
    check("bandpower", "window_s = 0.5\nstep_s = 0.25", Input::Signal, 170);
}

#[test]
fn resample_emits_an_ended_streams_last_samples() {
    check("resample", "up = 2\ndown = 5", Input::Signal, 133);
}

#[test]
fn hilbert_transforms_an_ended_streams_last_block() {
    check("hilbert", "block = 50", Input::Signal, 133);
}

#[test]
fn riemann_potato_scores_a_stream_shorter_than_its_reference_at_its_end() {
    check(
        "riemann_potato",
        "window_s = 0.4\nstep_s = 0.2\nreference_windows = 8",
        Input::Signal,
        130,
    );
    check(
        "riemann_potato",
        "window_s = 0.4\nstep_s = 0.2\nreference_windows = 4",
        Input::Signal,
        250,
    );
}

#[test]
fn decode_drops_an_ended_streams_window() {
    let model = concat!(env!("CARGO_MANIFEST_DIR"), "/../examples/data/bci/mi_model.json");
    check(
        "decode",
        &format!("model = \"{model}\"\nwindow_s = 2.0\nstep_s = 0.5"),
        Input::Signal,
        330,
    );
}
