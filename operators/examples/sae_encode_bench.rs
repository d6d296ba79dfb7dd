//! Times `sae_encode`'s CPU kernel: encodes the rows of a raw little-endian f32 file with an SAE
//! directory, in batches, and prints one JSON line with tokens/s. Driven by
//! `bench/sae_encode.py`, which runs PyTorch (or numpy) on the same SAE and data.
//!
//! usage: sae_encode_bench SAE_DIR INPUT.f32 D_IN BATCH SECONDS THREADS [f32|f16|bf16]

use std::time::Instant;

use neurostream_operators::sae::half_weights::WeightDtype;
use neurostream_operators::sae::{CpuSae, Sae, SaeKernels};

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.len() != 7 && args.len() != 8 {
        eprintln!("usage: sae_encode_bench SAE_DIR INPUT.f32 D_IN BATCH SECONDS THREADS [f32|f16|bf16]");
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
    let mut kernel = CpuSae::with_threads(&sae, threads).with_weight_dtype(&sae, dtype);
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
    let t0 = Instant::now();
    let mut i = 1;
    while t0.elapsed().as_secs_f64() < seconds {
        run(i, &mut tokens, &mut nnz);
        i += 1;
    }
    let secs = t0.elapsed().as_secs_f64();
    println!(
        "{{\"tokens_per_s\": {:.1}, \"gflops\": {:.2}, \"mean_l0\": {:.2}}}",
        tokens as f64 / secs,
        2.0 * (sae.d_in * sae.d_sae) as f64 * tokens as f64 / secs / 1e9,
        nnz as f64 / tokens as f64
    );
}
