//! The wgpu kernels allocate no GPU buffer per batch once warmed up (issue 21): storage,
//! uniform and read-back buffers come from the device's pool, keyed by size and usage, and go
//! back to it when a call ends. Each kernel here runs batches of one shape; after the first,
//! `GpuContext::buffers_created` must not move, and a batch run again after others gives the
//! same result as the first time (a reused buffer carries nothing over). The bytes moved
//! between host and device per batch are counted too, the SAE encoder's products are checked
//! against the CPU encoder for blocks of every height, and the shared GEMM against a float64
//! product for every layout.
//!
//! Runs on any wgpu adapter (lavapipe in CI); `NEUROSTREAM_SKIP_GPU_TESTS=1` skips it.

use std::sync::Arc;

use neurostream_engine::{ComputeDevice, DeviceChoice, DeviceManager, DevicePolicy, Frame, GpuContext, RowIndex, Rows, Schema};
use neurostream_operators::cluster::kmeans::{AssignKernels, GpuAssign};
use neurostream_operators::gpu_gemm::{self, GemmCall};
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

/// The wgpu encoder's three products (one column per invocation for blocks of up to 4 rows,
/// 64 × 128 register tiles up to 64 rows, 128 × 128 above) equal the CPU encoder for blocks of
/// every shape around their edges: TopK (also over several columns per selecting invocation,
/// with ties; with the arg-max by subgroup operations where the adapter has them, and without) and
/// JumpReLU, same latents, values within 1e-4 relative.
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
    // TopK SAEs whose latent j is a copy of the sample's latent base(j): exact ties, broken by
    // the lower id.
    let copies = |d_sae: usize, base: &dyn Fn(usize) -> usize| {
        let mut sae = topk.clone();
        sae.d_sae = d_sae;
        sae.w_enc = topk
            .w_enc
            .chunks_exact(topk.d_sae)
            .flat_map(|row| (0..d_sae).map(|j| row[base(j)]).collect::<Vec<_>>())
            .collect();
        sae.b_enc = (0..d_sae).map(|j| topk.b_enc[base(j)]).collect();
        sae.w_dec = (0..d_sae)
            .flat_map(|j| topk.w_dec[base(j) * topk.d_in..(base(j) + 1) * topk.d_in].iter().copied())
            .collect();
        sae
    };
    // 805 latents, the 256 repeated in turn: each selecting invocation owns several columns of
    // a row, and the ties are within one invocation's columns.
    let wide = copies(3 * topk.d_sae + 37, &|j| j % topk.d_sae);
    // Each latent three times in a row: the ties are between neighbouring invocations (one
    // subgroup, or two).
    let triple = copies(3 * topk.d_sae, &|j| j / 3);
    // The TopK selection with each round's arg-max by subgroup operations, where the device
    // has them (lavapipe has, 8 lanes wide: narrower than the kernels use by default).
    let subgroups = gpu().unwrap();
    let with_subgroups = if subgroups.set_subgroups(true) { &subgroups } else { &ctx };
    let cases = [
        (&topk, WeightDtype::F32, &ctx),
        (&wide, WeightDtype::F32, &ctx),
        (&wide, WeightDtype::F32, with_subgroups),
        (&triple, WeightDtype::F32, &ctx),
        (&triple, WeightDtype::F32, with_subgroups),
        (&topk, WeightDtype::F16, with_subgroups),
        (&jump, WeightDtype::F32, &ctx),
        (&topk, WeightDtype::F16, &ctx),
        (&jump, WeightDtype::Bf16, &ctx),
        (&odd, WeightDtype::F16, &ctx),
        (&odd, WeightDtype::Bf16, &ctx),
    ];
    for (sae, dtype, ctx) in cases {
        let (up, _) = ctx.bytes_moved();
        let mut gpu = GpuSae::with_weight_dtype(ctx.clone(), sae, dtype).unwrap();
        // W_enc goes up once, at 4 or 2 bytes per weight (rows padded to 16 bytes), with the
        // per-latent epilogue and b_dec.
        let up = (ctx.bytes_moved().0 - up) as usize;
        let weights = match dtype {
            WeightDtype::F32 => sae.d_in * sae.d_sae.next_multiple_of(4) * 4,
            _ => sae.d_in * sae.d_sae.div_ceil(2).next_multiple_of(4) * 4,
        };
        assert_eq!(up, weights + (3 * sae.d_sae + sae.d_in) * 4, "{dtype:?}: bytes uploaded");
        let mut cpu = CpuSae::with_weights(sae, 1, CpuWeights::prepare(sae, dtype));
        // 9000 rows run as three blocks of at most 4096, pipelined for TopK.
        for rows in [1, 2, 3, 4, 5, 63, 64, 65, 128, 129, 130, 9000] {
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

/// A row's encoding does not depend on the rows sharing its block, on the GPU as on the CPU:
/// one call of 130 rows (128 × 128 tiles) equals calls of 1 to 4 rows (one column per
/// invocation) and of 60 (64 × 128 tiles) bit for bit, for TopK and JumpReLU. Every kernel
/// sums each product as one fused multiply-add chain over d_in, in order. A stream's
/// micro-batches are cut by time and by checkpoints, and must not change what it computes.
#[test]
fn a_rows_encoding_does_not_depend_on_the_rows_sharing_its_block() {
    use neurostream_operators::sae::{Activation, CpuSae, Csr};
    let Some(ctx) = gpu() else { return };
    let topk = Sae::load(std::path::Path::new(SAE), None).unwrap();
    let mut jump = topk.clone();
    jump.activation = Activation::JumpRelu {
        threshold: vec![0.1; topk.d_sae],
    };
    // Row r's (latent, value bits), by latent.
    let row = |csr: &Csr, r: usize| {
        let span = csr.offsets[r] as usize..csr.offsets[r + 1] as usize;
        let mut pairs: Vec<(u32, u32)> = span.map(|i| (csr.ids[i], csr.values[i].to_bits())).collect();
        pairs.sort_unstable();
        pairs
    };
    let rows = 130;
    for (name, sae) in [("TopK", &topk), ("JumpReLU", &jump)] {
        let x = values(rows * sae.d_in, 11);
        let kernels: [(&str, Box<dyn SaeKernels>); 2] = [
            ("gpu", Box::new(GpuSae::new(ctx.clone(), sae).unwrap())),
            ("cpu", Box::new(CpuSae::new(sae))),
        ];
        for (device, mut kernels) in kernels {
            let whole = kernels.encode(sae, &x, rows).unwrap();
            let mut start = 0;
            for len in [1, 2, 3, 4, 60, 60] {
                let part = kernels.encode(sae, &x[start * sae.d_in..], len).unwrap();
                for r in 0..len {
                    assert_eq!(
                        row(&part, r),
                        row(&whole, start + r),
                        "{device}, {name}: row {} encoded in a block of {len} rows differs from the same row in one of {rows}",
                        start + r
                    );
                }
                start += len;
            }
        }
    }
}

/// `sae_encode` on a GPU, polled by a runtime (`defer_output`), leaves each batch's last block
/// in flight and emits it at the next call: a batch's rows come out when the next batch has
/// been submitted, or when a poll finds the GPU done, or at the end. The rows equal the CPU
/// instance's, in order; a snapshot taken with a batch in flight saves it, and an instance
/// restored from it emits that batch. For TopK (k pairs per row) and for ReLU, whose blocks
/// are counted, then compacted.
#[test]
fn a_polled_gpu_encoder_leaves_the_last_batch_in_flight_and_loses_nothing() {
    let Some(ctx) = gpu() else { return };
    check_deferred(&ctx, std::path::Path::new(SAE));
    // The same weights as a ReLU ("standard") SAE.
    let relu = tempfile::tempdir().unwrap();
    let cfg = std::fs::read_to_string(format!("{SAE}/cfg.json")).unwrap();
    assert!(cfg.contains(r#""architecture": "topk""#));
    std::fs::write(
        relu.path().join("cfg.json"),
        cfg.replace(r#""architecture": "topk""#, r#""architecture": "standard""#),
    )
    .unwrap();
    std::fs::copy(
        format!("{SAE}/sae_weights.safetensors"),
        relu.path().join("sae_weights.safetensors"),
    )
    .unwrap();
    check_deferred(&ctx, relu.path());
}

fn check_deferred(ctx: &Arc<GpuContext>, dir: &std::path::Path) {
    use neurostream_engine::{Batch, NodeContext, OperatorKind, PipelineSettings};
    let sae = Sae::load(dir, None).unwrap();
    let d_in = sae.d_in;
    let settings = PipelineSettings::default();
    let node = NodeContext {
        label: "[operators.enc]",
        name: "enc",
        base_dir: std::path::Path::new("."),
        settings: &settings,
        loaded: Default::default(),
    };
    let schema = Arc::new(Schema::activation(d_in, None, None));
    let table: toml::Table = toml::from_str(&format!("sae = {:?}", dir.display().to_string())).unwrap();
    let op = neurostream_operators::sae::SaeEncodeKind
        .build(neurostream_engine::parse_config(table, &node).unwrap(), &node, &schema)
        .unwrap();
    let frame = |i: usize, rows: usize| {
        let index = RowIndex::Tokens {
            seq_id: vec![i as u64; rows],
            pos: (0..rows as u32).collect(),
            token: None,
            time: None,
        };
        Frame::new("s".into(), schema.clone(), index, values(rows * d_in, i as u64)).unwrap()
    };
    let sizes = [40, 1, 300, 17, 64];
    let rows_of = |out: &[Batch]| -> Vec<(u64, Vec<u32>, Vec<f32>)> {
        out.iter()
            .flat_map(|b| {
                let Batch::Sparse(f) = b else { panic!("sparse output") };
                let RowIndex::Tokens { seq_id, .. } = &f.index else {
                    panic!("token rows")
                };
                (0..f.rows())
                    .map(|r| {
                        let (ids, vals) = f.row(r);
                        (seq_id[r], ids.to_vec(), vals.to_vec())
                    })
                    .collect::<Vec<_>>()
            })
            .collect()
    };

    let mut cpu = op.instantiate(&ComputeDevice::Cpu).unwrap();
    let mut want = Vec::new();
    for (i, &n) in sizes.iter().enumerate() {
        cpu.process(Batch::Dense(frame(i, n)), &mut want).unwrap();
    }
    cpu.finish(&mut want).unwrap();

    let mut gpu_inst = op.instantiate(&ComputeDevice::Gpu(ctx.clone())).unwrap();
    gpu_inst.defer_output();
    let mut got = Vec::new();
    gpu_inst.process(Batch::Dense(frame(0, sizes[0])), &mut got).unwrap();
    assert!(got.is_empty(), "the first batch is still in flight");
    gpu_inst.process(Batch::Dense(frame(1, sizes[1])), &mut got).unwrap();
    assert_eq!(
        got.iter().map(Batch::rows).sum::<usize>(),
        sizes[0],
        "batch 0 out once batch 1 went in"
    );
    // Polling until the GPU is done emits batch 1 without new input.
    let t0 = std::time::Instant::now();
    while got.iter().map(Batch::rows).sum::<usize>() < sizes[0] + sizes[1] {
        let again = gpu_inst.poll(&mut got).unwrap();
        assert!(t0.elapsed().as_secs() < 30, "a poll never found batch 1 done");
        if got.iter().map(Batch::rows).sum::<usize>() < sizes[0] + sizes[1] {
            assert!(again.is_some(), "a batch in flight asks to be polled again");
            std::thread::sleep(std::time::Duration::from_millis(1));
        }
    }
    assert_eq!(gpu_inst.poll(&mut got).unwrap(), None, "nothing in flight: no poll needed");
    gpu_inst.process(Batch::Dense(frame(2, sizes[2])), &mut got).unwrap();
    // A checkpoint now saves batch 2 (in flight); an instance restored from it emits batch 2.
    let state = gpu_inst.snapshot().unwrap();
    let mut restored = op.instantiate(&ComputeDevice::Gpu(ctx.clone())).unwrap();
    restored.restore(&state).unwrap();
    let mut replayed = Vec::new();
    restored.finish(&mut replayed).unwrap();
    let same = |got: &[(u64, Vec<u32>, Vec<f32>)], want: &[(u64, Vec<u32>, Vec<f32>)], what: &str| {
        assert_eq!(got.len(), want.len(), "{what}: rows");
        for (r, (g, w)) in got.iter().zip(want).enumerate() {
            assert_eq!((g.0, &g.1), (w.0, &w.1), "{what}: row {r}: in order, the same latents");
            for (a, b) in g.2.iter().zip(&w.2) {
                assert!((a - b).abs() <= 1e-4 * b.abs().max(1.0), "{what}: row {r}: {a} vs {b}");
            }
        }
    };
    let want_rows = rows_of(&want);
    let batch2 = &want_rows[sizes[0] + sizes[1]..][..sizes[2]];
    same(&rows_of(&replayed), batch2, "restored with batch 2 in flight");
    for (i, &n) in sizes.iter().enumerate().skip(3) {
        gpu_inst.process(Batch::Dense(frame(i, n)), &mut got).unwrap();
    }
    gpu_inst.finish(&mut got).unwrap();
    same(&rows_of(&got), &want_rows, "deferred GPU against the CPU");
}

fn le_bytes(v: &[f32]) -> Vec<u8> {
    v.iter().flat_map(|x| x.to_le_bytes()).collect()
}

/// The shared GEMM (`gemm.wgsl`: 64 × 128 tiles up to 64 rows, 128 × 128 above, 8-deep tiles)
/// equals a float64 product for each of the four transpose layouts, on shapes around the tile
/// edges and at a depth of 70,000 (lavapipe miscomputes loops past ~65,536 iterations per
/// invocation), with a bias, accumulation into the output, a scale and an offset into A:
/// within 1e-5 of the largest magnitude in each product, or √k·2⁻²⁴ of the output's Σ|a·b|
/// where that is larger (f32 sums of k terms).
#[test]
fn the_shared_gemm_equals_a_float64_product_for_every_layout_and_tile_edge() {
    let Some(ctx) = gpu() else { return };
    let gemm = gpu_gemm::pipeline(&ctx).unwrap();
    // The last depth would take an invocation past 65,536 loop iterations if the steps within
    // a tile were loops the driver does not unroll (they are written out).
    let shapes = [
        (1, 1, 1),
        (8, 127, 7),
        (64, 129, 9),
        (65, 300, 600),
        (129, 130, 17),
        (200, 5, 64),
        (2, 3, 70_000),
    ];
    for (case, &(m, n, k)) in shapes.iter().enumerate() {
        for (ta, tb) in [(false, false), (true, false), (false, true), (true, true)] {
            let seed = (case * 4 + 2 * ta as usize + tb as usize) as u64;
            let off = 3;
            let a = values(off + m * k, seed);
            let b = values(k * n, seed + 100);
            let bias = values(n, seed + 200);
            let c0 = values(m * n, seed + 300);
            let accumulate = case % 2 == 1;
            let with_bias = ta != tb;
            let alpha = 0.75f32;
            let a_at = |i: usize, kk: usize| if ta { a[off + kk * m + i] } else { a[off + i * k + kk] } as f64;
            let b_at = |kk: usize, j: usize| if tb { b[j * k + kk] } else { b[kk * n + j] } as f64;
            let mut want = vec![0f64; m * n];
            // Σ|a·b| per output: f32 sums of k terms err by about √k·2⁻²⁴ of it.
            let mut magnitude = vec![0f64; m * n];
            for i in 0..m {
                for j in 0..n {
                    magnitude[i * n + j] = alpha as f64 * (0..k).map(|kk| (a_at(i, kk) * b_at(kk, j)).abs()).sum::<f64>();
                    let mut v = alpha as f64 * (0..k).map(|kk| a_at(i, kk) * b_at(kk, j)).sum::<f64>();
                    if with_bias {
                        v += bias[j] as f64;
                    }
                    if accumulate {
                        v += c0[i * n + j] as f64;
                    }
                    want[i * n + j] = v;
                }
            }
            let a_buf = ctx.storage_init("test.a", &le_bytes(&a));
            let b_buf = ctx.storage_init("test.b", &le_bytes(&b));
            let bias_buf = ctx.storage_init("test.bias", &le_bytes(&bias));
            let c_buf = ctx.storage_init("test.c", &le_bytes(&c0));
            let mut call = GemmCall::new(m, n, k, &a_buf, &b_buf, &c_buf).alpha(alpha);
            call.a_offset = off;
            if ta {
                call = call.transpose_a();
            }
            if tb {
                call = call.transpose_b();
            }
            if with_bias {
                call = call.bias(&bias_buf);
            }
            if accumulate {
                call = call.accumulate();
            }
            let uniform = call.uniform(&ctx);
            let dummy = ctx.storage_output("test.dummy", 4);
            let bufs = call.buffers(&uniform, &dummy);
            let out = ctx
                .run(&[gpu_gemm::pass(&gemm, &call, &bufs)], Some((&c_buf, (m * n * 4) as u64)))
                .unwrap();
            let got: Vec<f32> = out
                .chunks_exact(4)
                .map(|w| f32::from_le_bytes(w.try_into().unwrap()))
                .collect();
            let scale = want.iter().fold(1e-3f64, |s, v| s.max(v.abs()));
            for (at, (g, w)) in got.iter().zip(&want).enumerate() {
                let tolerance = (1e-5 * scale).max((k as f64).sqrt() * magnitude[at] / (1u64 << 24) as f64);
                assert!(
                    (*g as f64 - w).abs() <= tolerance,
                    "{m}x{n}x{k}, ta {ta}, tb {tb}: c[{}, {}] = {g}, want {w}",
                    at / n,
                    at % n
                );
            }
        }
    }
}
