//! The wgpu kernels allocate no GPU buffer per batch once warmed up (issue 21): storage,
//! uniform and read-back buffers come from the device's pool, keyed by size and usage, and go
//! back to it when a call ends. Each kernel here runs batches of one shape; after the first,
//! `GpuContext::buffers_created` must not move, and a batch run again after others gives the
//! same result as the first time (a reused buffer carries nothing over). The bytes moved
//! between host and device per batch are counted too, and the SAE encoder's two products are
//! checked against the CPU encoder for blocks of every height.
//!
//! Runs on any wgpu adapter (lavapipe in CI); `NEUROSTREAM_SKIP_GPU_TESTS=1` skips it.

use std::sync::Arc;

use neurostream_engine::{ComputeDevice, DeviceChoice, DeviceManager, DevicePolicy, Frame, GpuContext, RowIndex, Rows, Schema};
use neurostream_operators::cluster::kmeans::{AssignKernels, GpuAssign};
use neurostream_operators::normalize::GpuKernels as GpuNormalize;
use neurostream_operators::normalize::NormalizeKernels;
use neurostream_operators::sae::GpuSae;
use neurostream_operators::sae::{Sae, SaeKernels};
use neurostream_operators::signal::bandpower::welch::{GpuPower, PowerKernels};
use neurostream_operators::signal::iir::gpu::GpuSos;
use neurostream_operators::signal::{butter, BandType, SosKernels};

const SAE: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/examples/data/sample_sae");

fn gpu() -> Option<Arc<GpuContext>> {
    if std::env::var("NEUROSTREAM_SKIP_GPU_TESTS").is_ok_and(|v| v == "1") {
        return None;
    }
    let mut manager = DeviceManager::new(DevicePolicy {
        allow_software_gpu: true,
        fallback_to_cpu: false,
    });
    match manager.resolve(DeviceChoice::Gpu) {
        Ok(ComputeDevice::Gpu(ctx)) => Some(ctx),
        Ok(ComputeDevice::Cpu) => unreachable!(),
        Err(e) => panic!("no wgpu adapter (install mesa-vulkan-drivers or set NEUROSTREAM_SKIP_GPU_TESTS=1): {e}"),
    }
}

/// Deterministic values in [-1, 1).
fn values(n: usize, seed: u64) -> Vec<f32> {
    let mut s = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..n)
        .map(|_| {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            (s >> 40) as f32 / (1u64 << 23) as f32 - 1.0
        })
        .collect()
}

/// Runs `batch(seed)` for seeds 0..5 then 0 again: no buffer is created after the first, and
/// the last result equals the first.
fn steady<T: PartialEq + std::fmt::Debug>(what: &str, ctx: &GpuContext, mut batch: impl FnMut(u64) -> T) {
    let before = ctx.buffers_created();
    let first = batch(0);
    let created = ctx.buffers_created();
    assert!(
        created > before,
        "{what}: the first batch took its buffers from somewhere else"
    );
    for seed in 1..5 {
        batch(seed);
        assert_eq!(ctx.buffers_created(), created, "{what}: batch {seed} created GPU buffers");
    }
    assert_eq!(batch(0), first, "{what}: the first batch run again differs");
    assert_eq!(ctx.buffers_created(), created, "{what}: buffers created after warm-up");
}

#[test]
fn gpu_kernels_create_no_buffers_per_batch_after_the_first() {
    let Some(ctx) = gpu() else { return };

    let sae = Sae::load(std::path::Path::new(SAE), None).unwrap();
    let mut encode = GpuSae::new(ctx.clone(), &sae).unwrap();
    let rows = 64;
    steady("sae_encode", &ctx, |seed| {
        encode.encode(&sae, &values(rows * sae.d_in, seed), rows).unwrap()
    });
    // TopK: the rows go up, and only k (value, id) pairs per row come back (not the dense
    // pre-activations): k × 8 bytes per token.
    let k = match sae.activation {
        neurostream_operators::sae::Activation::TopK { k } => k,
        _ => panic!("the sample SAE is TopK"),
    };
    let (up, down) = ctx.bytes_moved();
    encode.encode(&sae, &values(rows * sae.d_in, 7), rows).unwrap();
    let (up, down) = (ctx.bytes_moved().0 - up, ctx.bytes_moved().1 - down);
    assert_eq!(down, (rows * k * 8) as u64, "bytes read back for {rows} tokens");
    let input = (rows * sae.d_in * 4) as u64;
    assert!(up >= input && up <= input + 64, "bytes uploaded: {up} for {input} of input");

    // JumpReLU (the same weights, thresholds keeping about a third of the latents): counts per
    // row, then only the active (id, value) pairs come back: rows × 4 + nnz × 8 bytes.
    let mut jump = sae.clone();
    jump.activation = neurostream_operators::sae::Activation::JumpRelu {
        threshold: vec![0.1; sae.d_sae],
    };
    let mut encode_jump = GpuSae::new(ctx.clone(), &jump).unwrap();
    steady("sae_encode jumprelu", &ctx, |seed| {
        encode_jump.encode(&jump, &values(rows * jump.d_in, seed), rows).unwrap()
    });
    let (_, down) = ctx.bytes_moved();
    let csr = encode_jump.encode(&jump, &values(rows * jump.d_in, 7), rows).unwrap();
    let down = ctx.bytes_moved().1 - down;
    let nnz = csr.ids.len();
    assert!(
        nnz > rows && nnz < rows * jump.d_sae / 2,
        "{nnz} active of {}",
        rows * jump.d_sae
    );
    assert_eq!(down, (rows * 4 + nnz * 8) as u64, "bytes read back for {rows} tokens");

    let mut normalize = GpuNormalize::new(ctx.clone()).unwrap();
    let (width, mean, inv_std) = (32, vec![0.1f64; 32], vec![2.0f64; 32]);
    let channels: Vec<String> = (0..width).map(|c| format!("c{c}")).collect();
    let schema = Arc::new(Schema::signal(&channels, "uV", 250.0));
    let frame = |seed| {
        Frame::new(
            "x".into(),
            schema.clone(),
            RowIndex::Samples((0..256).collect()),
            values(256 * width, seed),
        )
        .unwrap()
    };
    steady("normalize", &ctx, |seed| {
        let rows = normalize.affine(&frame(seed), &mean, &inv_std, true).unwrap();
        assert!(
            matches!(rows, Rows::Device(_)),
            "the GPU leaves normalized rows on the device"
        );
        rows.into_host().unwrap()
    });

    let mut sos = GpuSos::new(ctx.clone()).unwrap();
    let sections = butter(4, &[8.0, 30.0], BandType::Bandpass, 250.0).unwrap();
    let channels = 8;
    steady("butterworth", &ctx, |seed| {
        let mut state = vec![0f64; sections.len() * 2 * channels];
        let mut data = values(32 * channels, seed);
        sos.filter(&sections, &mut state, &mut data, channels).unwrap();
        (data, state)
    });

    let mut welch = GpuPower::new(ctx.clone()).unwrap();
    let mut power = Vec::new();
    steady("welch", &ctx, |seed| {
        welch.power(&values(12 * 64, seed), 64, 33, &mut power).unwrap();
        power.clone()
    });

    let mut assign = GpuAssign::new(ctx.clone()).unwrap();
    let (d, k) = (16, 8);
    let centroids = values(k * d, 99);
    steady("kmeans", &ctx, |seed| {
        assign.assign(&values(128 * d, seed), d, &centroids, k).unwrap()
    });
}

/// The wgpu encoder's two products (one column per invocation for blocks of up to 4 rows,
/// 64 × 64 register tiles above) equal the CPU encoder for blocks of every shape around their
/// edges: TopK and JumpReLU, same latents, values within 1e-4 relative.
#[test]
fn the_gpu_encoder_equals_the_cpu_one_for_blocks_of_any_height() {
    use neurostream_operators::sae::half_weights::WeightDtype;
    use neurostream_operators::sae::{Activation, CpuSae, CpuWeights};
    let Some(ctx) = gpu() else { return };
    let topk = Sae::load(std::path::Path::new(SAE), None).unwrap();
    let mut jump = topk.clone();
    jump.activation = Activation::JumpRelu {
        threshold: vec![0.1; topk.d_sae],
    };
    // 16-bit weights: the GPU reads the same rounded weights the CPU kernel widens, and an odd
    // d_sae pads every row of packed pairs.
    let mut odd = jump.clone();
    let keep: Vec<usize> = (0..odd.d_sae - 1).collect();
    odd.d_sae -= 1;
    odd.w_enc = odd
        .w_enc
        .chunks_exact(jump.d_sae)
        .flat_map(|row| keep.iter().map(|&j| row[j]))
        .collect();
    odd.b_enc.truncate(odd.d_sae);
    odd.w_dec.truncate(odd.d_sae * odd.d_in);
    odd.activation = Activation::JumpRelu {
        threshold: vec![0.1; odd.d_sae],
    };
    let cases = [
        (&topk, WeightDtype::F32),
        (&jump, WeightDtype::F32),
        (&topk, WeightDtype::F16),
        (&jump, WeightDtype::Bf16),
        (&odd, WeightDtype::F16),
        (&odd, WeightDtype::Bf16),
    ];
    for (sae, dtype) in cases {
        let (up, _) = ctx.bytes_moved();
        let mut gpu = GpuSae::with_weight_dtype(ctx.clone(), sae, dtype).unwrap();
        // W_enc goes up once, at 4 or 2 bytes per weight, with the per-latent epilogue and b_dec.
        let up = (ctx.bytes_moved().0 - up) as usize;
        let weights = match dtype {
            WeightDtype::F32 => sae.d_in * sae.d_sae * 4,
            _ => sae.d_in * sae.d_sae.div_ceil(2) * 4,
        };
        assert_eq!(up, weights + (3 * sae.d_sae + sae.d_in) * 4, "{dtype:?}: bytes uploaded");
        let mut cpu = CpuSae::with_weights(sae, 1, CpuWeights::prepare(sae, dtype));
        // 9000 rows run as three blocks of at most 4096, pipelined for TopK.
        for rows in [1, 2, 3, 4, 5, 63, 64, 65, 130, 9000] {
            let x = values(rows * sae.d_in, rows as u64);
            let (g, c) = (gpu.encode(sae, &x, rows).unwrap(), cpu.encode(sae, &x, rows).unwrap());
            assert_eq!(g.offsets, c.offsets, "{dtype:?}, {rows} rows: active latents per row");
            for r in 0..rows {
                let span = c.offsets[r] as usize..c.offsets[r + 1] as usize;
                let mut gi: Vec<(u32, f32)> = span.clone().map(|i| (g.ids[i], g.values[i])).collect();
                let mut ci: Vec<(u32, f32)> = span.map(|i| (c.ids[i], c.values[i])).collect();
                gi.sort_by_key(|p| p.0);
                ci.sort_by_key(|p| p.0);
                for ((gid, gv), (cid, cv)) in gi.iter().zip(&ci) {
                    assert_eq!(gid, cid, "{rows} rows, row {r}: latents differ");
                    assert!(
                        (gv - cv).abs() <= 1e-4 * cv.abs().max(1e-3),
                        "{rows} rows, row {r}, latent {gid}: {gv} vs {cv}"
                    );
                }
            }
        }
    }
}
