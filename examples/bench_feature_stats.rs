//! Times `feature_stats` (its default settings: windows of 4096 tokens, 24 activation bins, top 10
//! examples) on one device, for `bench/gpu.py`, which runs PyTorch's scatter counting on the
//! same data in the same run. Prints one JSON object.
//!
//!   cargo run --release --example bench_feature_stats -- cpu|gpu D_SAE K TOKENS BATCH
//!
//! The input is TopK-shaped: K features per token, ids skewed towards low ids (so some are
//! dense and some never fire), activations log-uniform in [1e-3, 10]; it is written to
//! `target/bench_feature_stats.bin` (ids then values, little-endian) for the peer to read.

use std::sync::Arc;
use std::time::Instant;

use neurostream::operators::stats::FeatureStatsKind;
use neurostream::{
    Batch, ComputeDevice, DeviceChoice, DeviceManager, DevicePolicy, NodeContext, OperatorKind, PipelineSettings, RowIndex,
    Schema, SparseFrame,
};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

fn device(name: &str) -> ComputeDevice {
    let choice = match name {
        "cpu" => DeviceChoice::Cpu,
        "gpu" => DeviceChoice::Gpu,
        other => panic!("device is cpu or gpu, not {other}"),
    };
    let mut manager = DeviceManager::new(DevicePolicy {
        allow_software_gpu: true,
        fallback_to_cpu: false,
    });
    manager.resolve(choice).unwrap_or_else(|e| panic!("{e}"))
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let arg = |i: usize, default: usize| args.get(i).map_or(default, |v| v.parse().expect("a number"));
    let device = device(args.first().map_or("cpu", String::as_str));
    let (d_sae, k, tokens, batch) = (arg(1, 16384), arg(2, 32), arg(3, 200_000), arg(4, 4096));

    let mut rng = StdRng::seed_from_u64(7);
    let ids: Vec<u32> = (0..tokens * k)
        .map(|_| (rng.random_range(0.0f64..1.0).powi(2) * d_sae as f64) as u32)
        .collect();
    let values: Vec<f32> = (0..tokens * k).map(|_| 10f32.powf(rng.random_range(-3.0..1.0))).collect();
    let raw: Vec<u8> = ids
        .iter()
        .flat_map(|v| v.to_le_bytes())
        .chain(values.iter().flat_map(|v| v.to_le_bytes()))
        .collect();
    let data_path = concat!(env!("CARGO_MANIFEST_DIR"), "/target/bench_feature_stats.bin");
    std::fs::write(data_path, raw).expect("writing the peer's input");

    let schema = Arc::new(Schema::features(d_sae, None, None, None));
    let frames: Vec<SparseFrame> = (0..tokens)
        .step_by(batch)
        .map(|t0| {
            let rows = batch.min(tokens - t0);
            let index = RowIndex::Tokens {
                seq_id: (t0..t0 + rows).map(|t| (t / 128) as u64).collect(),
                pos: (t0..t0 + rows).map(|t| (t % 128) as u32).collect(),
                token: None,
                time: None,
            };
            let offsets = (0..=rows).map(|r| (r * k) as u32).collect();
            let span = t0 * k..(t0 + rows) * k;
            SparseFrame::new(
                Arc::from("s"),
                schema.clone(),
                index,
                offsets,
                ids[span.clone()].to_vec(),
                values[span].to_vec(),
            )
            .unwrap()
        })
        .collect();

    let settings = PipelineSettings::default();
    let ctx = NodeContext {
        label: "[operators.stats]",
        name: "stats",
        base_dir: std::path::Path::new("."),
        settings: &settings,
        loaded: Default::default(),
    };
    let op = FeatureStatsKind
        .build(neurostream::parse_config(toml::Table::new(), &ctx).unwrap(), &ctx, &schema)
        .unwrap();
    let moved = || match &device {
        ComputeDevice::Gpu(ctx) => ctx.bytes_moved(),
        ComputeDevice::Cpu => (0, 0),
    };
    // One warm-up pass (pipelines compiled, buffers pooled), then the timed one.
    let mut best = f64::INFINITY;
    let (mut up, mut down) = (0, 0);
    for _ in 0..2 {
        let mut instance = op.instantiate(&device).unwrap();
        let mut out = Vec::new();
        let before = moved();
        let t0 = Instant::now();
        for f in &frames {
            instance.process(Batch::Sparse(f.clone()), &mut out).unwrap();
            out.clear();
        }
        instance.finish(&mut out).unwrap();
        best = best.min(t0.elapsed().as_secs_f64());
        let after = moved();
        (up, down) = (after.0 - before.0, after.1 - before.1);
    }
    let adapter = match &device {
        ComputeDevice::Gpu(ctx) => ctx.describe(),
        ComputeDevice::Cpu => "cpu".into(),
    };
    let software = matches!(&device, ComputeDevice::Gpu(ctx) if ctx.info.device_type == neurostream::wgpu::DeviceType::Cpu);
    println!(
        "{}",
        serde_json::json!({
            "adapter": adapter,
            "software_adapter": software,
            "d_sae": d_sae,
            "k": k,
            "tokens": tokens,
            "batch": batch,
            "seconds": best,
            "tokens_per_s": tokens as f64 / best,
            "bytes_up_per_token": up as f64 / tokens as f64,
            "bytes_down_per_token": down as f64 / tokens as f64,
            "data": data_path,
        })
    );
}
