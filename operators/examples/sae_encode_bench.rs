//! Times `sae_encode`'s CPU or wgpu kernel: encodes the rows of a raw little-endian f32 file
//! with an SAE directory, in batches, and prints one JSON line with tokens/s. Driven by
//! `bench/sae_encode.py` and `bench/sae_encode_blas.py` (CPU) and `bench/gpu.py` (wgpu), which
//! run PyTorch (or numpy) on the same SAE and data.
//!
//! usage: sae_encode_bench SAE_DIR INPUT.f32 D_IN BATCH SECONDS THREADS [f32|f16|bf16] [cpu|gpu|read]
//!
//! With `read`, it encodes nothing: it reads all of `W_enc` (f32) once per pass on THREADS
//! threads, summing it with the widest vectors the CPU has, and prints passes per second as
//! `tokens_per_s`: the memory bound of any batch-1 encoder that streams f32 weights.
//!
//! With `gpu` (a software adapter is allowed, and named), the line also has the adapter, the
//! GPU time per token from timestamp queries, and the bytes moved per token each way.

use std::sync::Arc;
use std::time::Instant;

use neurostream_engine::{ComputeDevice, DeviceChoice, DeviceManager, DevicePolicy, GpuContext};
use neurostream_operators::sae::half_weights::WeightDtype;
use neurostream_operators::sae::{CpuSae, GpuSae, Sae, SaeKernels};

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if !(7..=9).contains(&args.len()) {
        eprintln!("usage: sae_encode_bench SAE_DIR INPUT.f32 D_IN BATCH SECONDS THREADS [f32|f16|bf16] [cpu|gpu]");
        std::process::exit(2);
    }
    let sae = Sae::load(args[1].as_ref(), None).unwrap_or_else(|e| panic!("{e}"));
    let bytes = std::fs::read(&args[2]).expect("read input");
    let x: Vec<f32> = bytes
        .chunks_exact(4)
        .map(|b| f32::from_le_bytes(b.try_into().unwrap()))
        .collect();
    let d_in: usize = args[3].parse().unwrap();
    let batch: usize = args[4].parse().unwrap();
    let seconds: f64 = args[5].parse().unwrap();
    let threads: usize = args[6].parse().unwrap();
    assert_eq!(d_in, sae.d_in);
    let rows = x.len() / d_in;
    let dtype = match args.get(7).map(String::as_str) {
        None | Some("f32") => WeightDtype::F32,
        Some("f16") => WeightDtype::F16,
        Some("bf16") => WeightDtype::Bf16,
        Some(o) => panic!("weights `{o}`: f32, f16 or bf16"),
    };
    let gpu = match args.get(8).map(String::as_str) {
        None | Some("cpu") => None,
        Some("gpu") => Some(gpu_context()),
        Some("read") => {
            let passes = read_bound(&sae.w_enc, threads, seconds);
            println!("{}", serde_json::json!({ "tokens_per_s": passes, "read_only": true }));
            return;
        }
        Some(o) => panic!("device `{o}`: cpu, gpu or read"),
    };
    let mut kernel: Box<dyn SaeKernels> = match &gpu {
        None => Box::new(CpuSae::with_threads(&sae, threads).with_weight_dtype(&sae, dtype)),
        Some(ctx) => Box::new(GpuSae::with_weight_dtype(ctx.clone(), &sae, dtype).unwrap_or_else(|e| panic!("{e}"))),
    };
    let mut prepared = vec![0f32; batch * d_in];
    let (mut tokens, mut nnz) = (0usize, 0usize);
    // Warm-up, then time whole batches until `seconds` have passed.
    let mut run = |start: usize, tokens: &mut usize, nnz: &mut usize| {
        let s = (start * batch) % (rows - batch + 1);
        for (row, dst) in x[s * d_in..(s + batch) * d_in]
            .chunks_exact(d_in)
            .zip(prepared.chunks_exact_mut(d_in))
        {
            sae.prepare_input(row, dst);
        }
        let csr = kernel.encode(&sae, &prepared, batch).unwrap();
        *tokens += batch;
        *nnz += csr.ids.len();
    };
    run(0, &mut 0, &mut 0);
    let moved0 = gpu.as_ref().map(|g| g.bytes_moved()).unwrap_or_default();
    let gpu_s0 = gpu.as_ref().map_or(0.0, |g| gpu_seconds(g));
    let t0 = Instant::now();
    let mut i = 1;
    while t0.elapsed().as_secs_f64() < seconds {
        run(i, &mut tokens, &mut nnz);
        i += 1;
    }
    let secs = t0.elapsed().as_secs_f64();
    let mut out = serde_json::json!({
        "tokens_per_s": tokens as f64 / secs,
        "gflops": 2.0 * (sae.d_in * sae.d_sae) as f64 * tokens as f64 / secs / 1e9,
        "mean_l0": nnz as f64 / tokens as f64,
    });
    if let Some(g) = &gpu {
        let (up, down) = g.bytes_moved();
        out["adapter"] = format!(
            "{} ({:?}, {:?}, driver {} {})",
            g.info.name, g.info.backend, g.info.device_type, g.info.driver, g.info.driver_info
        )
        .into();
        out["software_adapter"] = (g.info.device_type == neurostream_engine::wgpu::DeviceType::Cpu).into();
        out["gpu_s_per_token"] = if g.times_kernels() {
            ((gpu_seconds(g) - gpu_s0) / tokens as f64).into()
        } else {
            serde_json::Value::Null
        };
        out["bytes_up_per_token"] = ((up - moved0.0) as f64 / tokens as f64).into();
        out["bytes_down_per_token"] = ((down - moved0.1) as f64 / tokens as f64).into();
    }
    println!("{out}");
}

/// Passes per second over all of `w` split across `threads` threads (each thread sums its part).
fn read_bound(w: &[f32], threads: usize, seconds: f64) -> f64 {
    let part = w.len().div_ceil(threads.max(1));
    let parts: Vec<&[f32]> = w.chunks(part).collect();
    // On the encoder's own pool, so the bound pays what the encoder pays to split a call.
    let pass = || -> f32 {
        neurostream_operators::parallel::map_shares(parts.len(), |i| sum(parts[i]))
            .iter()
            .sum()
    };
    let mut total = pass();
    let (t0, mut passes) = (Instant::now(), 0u64);
    while t0.elapsed().as_secs_f64() < seconds {
        total += pass();
        passes += 1;
    }
    std::hint::black_box(total);
    passes as f64 / t0.elapsed().as_secs_f64()
}

/// The sum of `v` in 64 lanes (vectorized as wide as the CPU allows).
fn sum(v: &[f32]) -> f32 {
    fn lanes(v: &[f32]) -> f32 {
        let mut acc = [0f32; 64];
        let mut chunks = v.chunks_exact(64);
        for c in &mut chunks {
            for (a, x) in acc.iter_mut().zip(c) {
                *a += x;
            }
        }
        acc.iter().sum::<f32>() + chunks.remainder().iter().sum::<f32>()
    }
    #[cfg(target_arch = "x86_64")]
    {
        #[target_feature(enable = "avx512f")]
        unsafe fn wide(v: &[f32]) -> f32 {
            lanes(v)
        }
        #[target_feature(enable = "avx2")]
        unsafe fn avx2(v: &[f32]) -> f32 {
            lanes(v)
        }
        if std::is_x86_feature_detected!("avx512f") {
            // SAFETY: the CPU has AVX-512F (checked above).
            return unsafe { wide(v) };
        }
        if std::is_x86_feature_detected!("avx2") {
            // SAFETY: the CPU has AVX2 (checked above).
            return unsafe { avx2(v) };
        }
    }
    lanes(v)
}

/// The wgpu device: a hardware GPU when there is one, else a software adapter (named in the
/// output, so its numbers are never taken for a GPU's).
fn gpu_context() -> Arc<GpuContext> {
    let mut manager = DeviceManager::new(DevicePolicy {
        allow_software_gpu: true,
        fallback_to_cpu: false,
    });
    match manager.resolve(DeviceChoice::Gpu) {
        Ok(ComputeDevice::Gpu(ctx)) => ctx,
        Ok(ComputeDevice::Cpu) => unreachable!("a GPU was asked for"),
        Err(e) => panic!("no wgpu adapter: {e}"),
    }
}

/// GPU seconds of every kernel timed so far.
fn gpu_seconds(g: &GpuContext) -> f64 {
    g.kernel_times().values().map(|h| h.sum_s()).sum()
}
