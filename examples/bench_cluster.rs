//! Times the clustering kernels for `bench/cluster.py` (which runs scikit-learn / scipy.sparse
//! on the same data in the same run and writes the comparison table). Prints one JSON object.
//!
//!   cargo run --release --example bench_cluster -- X.npy CENTROIDS.npy IDS.npy [JACCARD]
//!
//! - k-means assignment (`CpuAssign`, 1 and 2 threads; the wgpu kernel too with
//!   `NEUROSTREAM_BENCH_GPU=1`): rows/s over X against the centroids;
//! - one mini-batch k-means pass (assignment + Sculley update) in batches of 1024 rows;
//! - co-occurrence counting (`PairCounter`, sorted runs of packed pair keys): token windows of the
//!   feature ids in IDS (one row of ids per token), settled every 1024 tokens, all-time and with
//!   a sliding span of 8192 windows (every window later retracted); then reading out the counts;
//! - the same with connected components of the pairs whose Jaccard reaches JACCARD (default
//!   0.05), read every 8192 tokens and at the end, as the operator's reports do.

use std::path::Path;
use std::time::Instant;

use neurostream::operators::cluster::kmeans::{AssignKernels, CpuAssign, GpuAssign, Metric, MiniBatch};
use neurostream::operators::cluster::pair_counts::{EdgeMeasure, PairCounter};
use neurostream::{ComputeDevice, DeviceChoice, DeviceManager, DevicePolicy};

fn read_npy(path: &Path) -> (Vec<f32>, Vec<usize>) {
    let bytes = std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let h = neurostream::tensor::parse_npy_header(&bytes).unwrap();
    let mut out = Vec::new();
    neurostream::tensor::decode_le(h.dtype, &bytes[h.data_offset..], &mut out);
    (out, h.shape)
}

fn best_of<F: FnMut() -> f64>(n: usize, mut f: F) -> f64 {
    (0..n).map(|_| f()).fold(0.0, f64::max)
}

fn assign_rate(k: &mut dyn AssignKernels, x: &[f32], d: usize, c: &[f32], kk: usize) -> f64 {
    best_of(3, || {
        let t = Instant::now();
        let (labels, _) = k.assign(x, d, c, kk).unwrap();
        std::hint::black_box(labels);
        (x.len() / d) as f64 / t.elapsed().as_secs_f64()
    })
}

/// Co-occurrence counting over token windows: tokens/s, seconds to read the pair counts out,
/// pairs at the end, and (with `jaccard`) the components among firing features at the end.
fn cooccurrence_rate(ids: &[f32], l0: usize, span: Option<usize>, jaccard: Option<f64>) -> (f64, f64, usize, usize) {
    let tokens = ids.len() / l0;
    let n_features = ids.iter().fold(0f32, |m, &v| m.max(v)) as usize + 1;
    let mut pc = PairCounter::new(jaccard.map(|t| (EdgeMeasure::Jaccard, t)), n_features);
    let mut window: std::collections::VecDeque<Vec<u32>> = std::collections::VecDeque::new();
    let mut components = 0;
    let mut count_components = |pc: &mut PairCounter| {
        if let Some(labels) = pc.components() {
            let mut roots: Vec<u32> = labels.iter().map(|l| l.1).collect();
            roots.sort_unstable();
            roots.dedup();
            components = roots.len();
        }
    };
    let t = Instant::now();
    for (i, row) in ids.chunks_exact(l0).enumerate() {
        let mut f: Vec<u32> = row.iter().map(|&v| v as u32).collect();
        f.sort_unstable();
        f.dedup();
        pc.update(&f, 1);
        if let Some(s) = span {
            window.push_back(f);
            if window.len() > s {
                let old = window.pop_front().unwrap();
                pc.update(&old, -1);
            }
        }
        if (i + 1) % 1024 == 0 {
            pc.settle();
        }
        if (i + 1) % 8192 == 0 {
            count_components(&mut pc);
        }
    }
    pc.settle();
    count_components(&mut pc);
    let rate = tokens as f64 / t.elapsed().as_secs_f64();
    let t = Instant::now();
    let pairs = pc.pair_counts();
    let read_s = t.elapsed().as_secs_f64();
    (rate, read_s, pairs.len(), components)
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let (x, xs) = read_npy(Path::new(&args[1]));
    let (c, cs) = read_npy(Path::new(&args[2]));
    let (ids, is) = read_npy(Path::new(&args[3]));
    let (d, k) = (xs[1], cs[0]);
    let mut report = serde_json::json!({"rows": xs[0], "d": d, "k": k});
    report["assign_cpu1"] = assign_rate(&mut CpuAssign::new(1), &x, d, &c, k).into();
    report["assign_cpu2"] = assign_rate(&mut CpuAssign::new(2), &x, d, &c, k).into();
    if std::env::var("NEUROSTREAM_BENCH_GPU").is_ok_and(|v| v == "1") {
        let mut m = DeviceManager::new(DevicePolicy {
            allow_software_gpu: true,
            fallback_to_cpu: false,
        });
        if let Ok(ComputeDevice::Gpu(ctx)) = m.resolve(DeviceChoice::Gpu) {
            report["gpu"] = ctx.describe().into();
            let mut g = GpuAssign::new(ctx).unwrap();
            report["assign_gpu"] = assign_rate(&mut g, &x, d, &c, k).into();
        }
    }
    let init: Vec<f64> = c.iter().map(|&v| v as f64).collect();
    report["minibatch_cpu2"] = best_of(3, || {
        let mut mb = MiniBatch::new(init.clone(), d, Metric::Euclidean);
        let mut kern = CpuAssign::new(2);
        let t = Instant::now();
        for b in x.chunks(1024 * d) {
            mb.step(b, &mut kern).unwrap();
        }
        (x.len() / d) as f64 / t.elapsed().as_secs_f64()
    })
    .into();
    let l0 = is[1];
    let jaccard: f64 = args.get(4).map_or(0.05, |t| t.parse().expect("JACCARD is a number"));
    let (all, read_all, pairs_all, _) = cooccurrence_rate(&ids, l0, None, None);
    let (sliding, read_sliding, pairs_sliding, _) = cooccurrence_rate(&ids, l0, Some(8192), None);
    let (all_comp, _, _, components_all) = cooccurrence_rate(&ids, l0, None, Some(jaccard));
    let (sliding_comp, _, _, _) = cooccurrence_rate(&ids, l0, Some(8192), Some(jaccard));
    report["cooc_tokens"] = is[0].into();
    report["cooc_l0"] = l0.into();
    report["cooc_all_time"] = all.into();
    report["cooc_all_time_read_s"] = read_all.into();
    report["cooc_all_time_pairs"] = pairs_all.into();
    report["cooc_sliding"] = sliding.into();
    report["cooc_sliding_read_s"] = read_sliding.into();
    report["cooc_sliding_pairs"] = pairs_sliding.into();
    report["cooc_jaccard"] = jaccard.into();
    report["cooc_all_time_components"] = all_comp.into();
    report["cooc_all_time_component_count"] = components_all.into();
    report["cooc_sliding_components"] = sliding_comp.into();
    println!("{report}");
}
