//! `normalize` on the CPU and on wgpu against float64 references computed here by other
//! algorithms (cumulative sums, direct formulas). Tolerance: |got - want| <= 1e-5 * max(|want|, 1).
//!
//! The wgpu cases need a Vulkan/Metal/DX12 adapter; a software one (lavapipe) is accepted.
//! Without any adapter they fail, unless NEUROSTREAM_SKIP_GPU_TESTS=1 is set.

use std::path::Path;
use std::sync::Arc;

use neurostream_engine::{
    Batch, ComputeDevice, DeviceChoice, DeviceManager, DevicePolicy, Frame, NodeContext, OperatorKind, PipelineSettings,
    RowIndex, Schema,
};
use neurostream_operators::normalize::NormalizeKind;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

const TOL: f64 = 1e-5;

fn devices() -> Vec<ComputeDevice> {
    let mut out = vec![ComputeDevice::Cpu];
    let mut manager = DeviceManager::new(DevicePolicy {
        allow_software_gpu: true,
        fallback_to_cpu: false,
    });
    match manager.resolve(DeviceChoice::Gpu) {
        Ok(d) => out.push(d),
        Err(e) if std::env::var("NEUROSTREAM_SKIP_GPU_TESTS").is_ok_and(|v| v == "1") => {
            eprintln!("skipping the wgpu backend (NEUROSTREAM_SKIP_GPU_TESTS=1): {e}")
        }
        Err(e) => panic!("no wgpu adapter for the GPU half of the tests: {e}\n(install mesa-vulkan-drivers, or set NEUROSTREAM_SKIP_GPU_TESTS=1)"),
    }
    out
}

fn random_data(rows: usize, width: usize, seed: u64) -> Vec<f32> {
    let mut rng = StdRng::seed_from_u64(seed);
    let offsets: Vec<f64> = (0..width).map(|_| rng.random_range(-20.0..20.0)).collect();
    let scales: Vec<f64> = (0..width).map(|_| rng.random_range(0.1..5.0)).collect();
    (0..rows * width)
        .map(|i| {
            let c = i % width;
            (offsets[c] + scales[c] * (rng.random::<f64>() * 2.0 - 1.0) * 1.7) as f32
        })
        .collect()
}

/// Splits `data` into frames of irregular sizes.
fn frames(data: &[f32], width: usize, sizes: &[usize]) -> Vec<Frame> {
    let schema = Arc::new(Schema::activation(width, None, None));
    let rows = data.len() / width;
    let mut out = Vec::new();
    let mut start = 0;
    let mut k = 0;
    while start < rows {
        let n = sizes[k % sizes.len()].min(rows - start);
        k += 1;
        let index = RowIndex::Tokens {
            seq_id: vec![0; n],
            pos: (start as u32..(start + n) as u32).collect(),
            token: None,
            time: None,
        };
        out.push(
            Frame::new(
                "s".into(),
                schema.clone(),
                index,
                data[start * width..(start + n) * width].to_vec(),
            )
            .unwrap(),
        );
        start += n;
    }
    out
}

fn run_op(config: &str, width: usize, device: &ComputeDevice, input: Vec<Frame>, base: &Path) -> Vec<f32> {
    let table: toml::Table = toml::from_str(config).unwrap();
    let settings = PipelineSettings::default();
    let ctx = NodeContext {
        label: "[operators.norm]",
        name: "norm",
        base_dir: base,
        settings: &settings,
        loaded: Default::default(),
    };
    let op = NormalizeKind
        .build(
            neurostream_engine::parse_config(table, &ctx).unwrap(),
            &ctx,
            &Arc::new(Schema::activation(width, None, None)),
        )
        .unwrap();
    let mut inst = op.instantiate(device).unwrap();
    let mut out = Vec::new();
    for f in input {
        inst.process(Batch::Dense(f), &mut out).unwrap();
    }
    inst.finish(&mut out).unwrap();
    let mut values = Vec::new();
    let mut next_pos = 0u32;
    for b in out {
        let Batch::Dense(f) = b else { panic!("sparse output") };
        // Rows come out in order, none lost or repeated.
        if let RowIndex::Tokens { pos, .. } = &f.index {
            for p in pos {
                assert_eq!(*p, next_pos);
                next_pos += 1;
            }
        }
        values.extend(f.data);
    }
    values
}

fn assert_close(got: &[f32], want: &[f64], what: &str) {
    assert_eq!(got.len(), want.len(), "{what}: length");
    let mut worst = (0.0f64, 0usize);
    for (i, (&g, &w)) in got.iter().zip(want).enumerate() {
        let err = (g as f64 - w).abs() / w.abs().max(1.0);
        if err > worst.0 {
            worst = (err, i);
        }
    }
    assert!(
        worst.0 <= TOL,
        "{what}: error {:.3e} at {} (got {}, want {})",
        worst.0,
        worst.1,
        got[worst.1],
        want[worst.1]
    );
}

/// Running z-score reference from shifted cumulative sums (not Welford), with warm-up.
fn reference_running(data: &[f32], width: usize, warmup: usize, eps: f64) -> Vec<f64> {
    let rows = data.len() / width;
    let mut out = vec![0.0; data.len()];
    for c in 0..width {
        let shift = data[c] as f64;
        let (mut s1, mut s2) = (0.0f64, 0.0f64);
        let stats = |s1: f64, s2: f64, n: f64| {
            let m = s1 / n;
            (m + shift, (s2 / n - m * m).max(0.0))
        };
        let mut warm = None;
        for r in 0..rows {
            let x = data[r * width + c] as f64;
            s1 += x - shift;
            s2 += (x - shift) * (x - shift);
            let n = (r + 1) as f64;
            if r + 1 == warmup.min(rows) {
                warm = Some(stats(s1, s2, n));
            }
            if r >= warmup {
                let (m, v) = stats(s1, s2, n);
                out[r * width + c] = (x - m) / (v + eps).sqrt();
            }
        }
        if warmup > 0 {
            let (m, v) = warm.unwrap();
            for r in 0..warmup.min(rows) {
                out[r * width + c] = (data[r * width + c] as f64 - m) / (v + eps).sqrt();
            }
        }
    }
    out
}

#[test]
fn running_zscore_matches_reference_on_every_backend() {
    let dir = tempfile::tempdir().unwrap();
    for (width, rows, warmup, sizes) in [
        (37usize, 3000usize, 0usize, vec![1usize, 7, 100, 513, 64]),
        (37, 3000, 250, vec![1, 7, 100, 513, 64]),
        (300, 1200, 1000, vec![333, 1, 2000]),
        (5, 40, 100, vec![8]), // stream ends during warm-up
    ] {
        let data = random_data(rows, width, width as u64 + warmup as u64);
        let want = reference_running(&data, width, warmup, 1e-8);
        for device in devices() {
            let cfg = format!("method = \"running_zscore\"\nwarmup = {warmup}");
            let got = run_op(&cfg, width, &device, frames(&data, width, &sizes), dir.path());
            assert_close(
                &got,
                &want,
                &format!("running_zscore width {width} warmup {warmup} on {}", device.describe()),
            );
        }
    }
}

#[test]
fn running_zscore_does_not_depend_on_frame_boundaries() {
    let dir = tempfile::tempdir().unwrap();
    let (width, rows) = (16, 2000);
    let data = random_data(rows, width, 99);
    for device in devices() {
        let cfg = "method = \"running_zscore\"\nwarmup = 300";
        let a = run_op(cfg, width, &device, frames(&data, width, &[2000]), dir.path());
        let b = run_op(cfg, width, &device, frames(&data, width, &[3, 250, 17, 1000]), dir.path());
        let want: Vec<f64> = a.iter().map(|&v| v as f64).collect();
        assert_close(&b, &want, &format!("chunking on {}", device.describe()));
    }
}

#[test]
fn fixed_statistics_from_json_match_reference() {
    let dir = tempfile::tempdir().unwrap();
    let (width, rows) = (24, 777);
    let data = random_data(rows, width, 5);
    let mut rng = StdRng::seed_from_u64(6);
    let mean: Vec<f64> = (0..width).map(|_| rng.random_range(-10.0..10.0)).collect();
    let std: Vec<f64> = (0..width).map(|_| rng.random_range(0.2..4.0)).collect();
    let json = serde_json::json!({"mean": mean, "std": std});
    std::fs::write(dir.path().join("stats.json"), json.to_string()).unwrap();
    let want: Vec<f64> = data
        .iter()
        .enumerate()
        .map(|(i, &x)| (x as f64 - mean[i % width]) / std[i % width])
        .collect();
    for device in devices() {
        let got = run_op(
            "method = \"fixed\"\nstats = \"stats.json\"",
            width,
            &device,
            frames(&data, width, &[100, 3]),
            dir.path(),
        );
        assert_close(&got, &want, &format!("fixed on {}", device.describe()));
    }
}

#[test]
fn l2_scaling_matches_reference() {
    let dir = tempfile::tempdir().unwrap();
    for (width, target) in [(576usize, None), (7, Some(2.5f64)), (1000, Some(1.0))] {
        let rows = 150;
        let mut data = random_data(rows, width, width as u64);
        for v in &mut data[..width] {
            *v = 0.0; // an all-zero row stays zero
        }
        let t = target.unwrap_or((width as f64).sqrt());
        let mut want = vec![0.0; data.len()];
        for r in 0..rows {
            let row = &data[r * width..(r + 1) * width];
            let norm = row.iter().map(|&x| (x as f64).powi(2)).sum::<f64>().sqrt();
            for c in 0..width {
                want[r * width + c] = if norm > 0.0 { row[c] as f64 * t / norm } else { 0.0 };
            }
        }
        let cfg = match target {
            Some(t) => format!("method = \"l2\"\ntarget_norm = {t:?}"),
            None => "method = \"l2\"".to_string(),
        };
        for device in devices() {
            let got = run_op(&cfg, width, &device, frames(&data, width, &[64]), dir.path());
            assert_close(&got, &want, &format!("l2 width {width} on {}", device.describe()));
        }
    }
}

#[test]
fn config_errors_are_clear() {
    let dir = tempfile::tempdir().unwrap();
    let settings = PipelineSettings::default();
    let ctx = NodeContext {
        label: "[operators.norm]",
        name: "norm",
        base_dir: dir.path(),
        settings: &settings,
        loaded: Default::default(),
    };
    let schema = Arc::new(Schema::activation(32, None, None));
    let build = |cfg: &str| {
        let table: toml::Table = toml::from_str(cfg).unwrap();
        neurostream_engine::parse_config(table, &ctx)
            .and_then(|c| NormalizeKind.build(c, &ctx, &schema))
            .err()
            .unwrap()
            .to_string()
    };
    assert!(build("method = \"running_zscore\"\nchannels = 64").contains("expects 64 channels"));
    assert!(build("method = \"fixed\"").contains("needs key `stats`"));
    assert!(build("method = \"fixed\"\nstats = \"missing.json\"").contains("missing.json"));
    assert!(build("method = \"l2\"\nwarmup = 3").contains("`warmup` does not apply"));
    assert!(build("method = \"zscore\"").contains("unknown variant"));
    assert!(build("method = \"l2\"\ntarget = 3").contains("unknown field `target`"));
    std::fs::write(dir.path().join("s.json"), r#"{"mean":[0,0],"std":[1,1]}"#).unwrap();
    assert!(build("method = \"fixed\"\nstats = \"s.json\"").contains("holds 2 channels but its input has 32"));
}
