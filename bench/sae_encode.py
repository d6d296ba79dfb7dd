"""Benchmark: SAE encode throughput, neurostream's CPU kernel against PyTorch on the CPU.

Both encode the same activations with the same SAE (written in the SAELens format by
tests/python/sae_reference.py), in batches of 1, 64 and 4096 tokens, for d_in 576 and 768,
d_sae 16384 and 24576, TopK (k = 32) and JumpReLU. PyTorch runs the SAELens formula with
torch.no_grad() on its default threads; neurostream runs `CpuSae` with its GEMM on the same
number of threads (and on 1 thread, as a single dataflow worker does). The matmul peak is
PyTorch's GFLOP/s on one large GEMM of the same shape. Writes bench/SAE_RESULTS.md.

usage: python bench/sae_encode.py [--seconds S]   (needs torch, numpy, safetensors)
"""
import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

import numpy as np
import torch
from safetensors.numpy import load_file

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BENCH = os.path.join(ROOT, "target", "release", "examples", "sae_encode_bench")
sys.path.insert(0, os.path.join(ROOT, "tests", "python"))
import sae_reference  # noqa: E402


def torch_encode_fn(sae_dir, arch):
    t = {n: torch.from_numpy(v.astype(np.float32)) for n, v in load_file(os.path.join(sae_dir, "sae_weights.safetensors")).items()}
    W, b, bd = t["W_enc"], t["b_enc"], t["b_dec"]
    if arch == "topk":
        def enc(x):
            h = (x - bd) @ W + b
            top = torch.topk(h, 32, dim=-1)
            return torch.relu(top.values), top.indices
    else:
        thr = t["threshold"]
        def enc(x):
            h = (x - bd) @ W + b
            return torch.relu(h) * (h > thr)
    return enc


def time_torch(enc, x, batch, seconds):
    rows = x.shape[0]
    with torch.no_grad():
        enc(x[:batch])
        n, i, t0 = 0, 1, time.perf_counter()
        while time.perf_counter() - t0 < seconds:
            s = (i * batch) % (rows - batch + 1)
            enc(x[s:s + batch])
            n += batch
            i += 1
        return n / (time.perf_counter() - t0)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--seconds", type=float, default=2.0)
    args = ap.parse_args()
    subprocess.run(["cargo", "build", "--release", "-p", "neurostream-operators", "--example", "sae_encode_bench"], cwd=ROOT, check=True)
    threads = torch.get_num_threads()
    work = tempfile.mkdtemp(prefix="ns-sae-bench-")
    rows_out = []
    peaks = {}
    for d_in, d_sae in [(576, 16384), (768, 16384), (576, 24576), (768, 24576)]:
        rng = np.random.default_rng(0)
        x = rng.normal(0, 1, (8192, d_in)).astype(np.float32)
        xpath = os.path.join(work, f"x{d_in}.f32")
        x.tofile(xpath)
        xt = torch.from_numpy(x)
        a, w = torch.randn(4096, d_in), torch.randn(d_in, d_sae)
        a @ w
        t0 = time.perf_counter()
        for _ in range(3):
            a @ w
        peaks[(d_in, d_sae)] = 3 * 2 * 4096 * d_in * d_sae / (time.perf_counter() - t0) / 1e9
        for arch in ["topk", "jumprelu"]:
            sae_dir = os.path.join(work, f"sae_{d_in}_{d_sae}_{arch}")
            sae_reference.make(sae_dir, "saelens", arch, d_in, d_sae, 1, {"k": "32", "threshold_range": "2.4,2.9"})
            enc = torch_encode_fn(sae_dir, arch)
            for batch in [1, 64, 4096]:
                t_torch = time_torch(enc, xt, batch, args.seconds)
                ours = {}
                for th in sorted({1, threads}):
                    out = subprocess.run([BENCH, sae_dir, xpath, str(d_in), str(batch), str(args.seconds), str(th)],
                                         capture_output=True, text=True, check=True)
                    ours[th] = json.loads(out.stdout)
                best = ours[threads]
                row = (d_in, d_sae, arch, batch, best["tokens_per_s"], ours[1]["tokens_per_s"], t_torch,
                       best["gflops"], peaks[(d_in, d_sae)], best["mean_l0"])
                rows_out.append(row)
                print(f"{d_in}->{d_sae} {arch:8s} batch {batch:5d}: neurostream {best['tokens_per_s']:9.1f} tok/s "
                      f"(1 thread {ours[1]['tokens_per_s']:9.1f})  torch {t_torch:9.1f}  ratio {best['tokens_per_s'] / t_torch:5.2f}", flush=True)
    cpu = next((l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name")), "unknown")
    lines = [
        "# Benchmark: SAE encode on the CPU",
        "",
        "Command: `python bench/sae_encode.py` (needs torch, numpy, safetensors; builds the `sae_encode_bench` example).",
        "",
        f"Machine: {cpu}, {os.cpu_count()} cores; PyTorch {torch.__version__} on {threads} threads; {time.strftime('%Y-%m-%d')}.",
        "Input: 8192 random tokens; SAEs in the SAELens format with random weights (TopK k = 32; JumpReLU thresholds",
        "uniform in [2.4, 2.9], giving an L0 near that of trained SAEs). Each measurement runs whole batches for "
        f"{args.seconds:g} s after one warm-up batch. neurostream's output is the sorted sparse rows (CSR); PyTorch's is",
        "the top-k values and indices (TopK) or the dense activations (JumpReLU). Peak: PyTorch's GFLOP/s on one",
        "4096 x d_in x d_sae GEMM; neurostream's GFLOP/s counts 2 * d_in * d_sae per token.",
        "",
        f"| d_in | d_sae | activation | batch | neurostream tok/s ({threads} threads) | neurostream tok/s (1 thread) | PyTorch tok/s | ratio | neurostream GFLOP/s | % of peak | mean L0 |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for d_in, d_sae, arch, batch, ns, ns1, pt, gf, peak, l0 in rows_out:
        lines.append(f"| {d_in} | {d_sae} | {arch} | {batch} | {ns:,.0f} | {ns1:,.0f} | {pt:,.0f} | {ns / pt:.2f}x | {gf:.1f} | {100 * gf / peak:.0f}% | {l0:.1f} |")
    lines.append("")
    lines.append("Peaks (PyTorch GEMM, GFLOP/s): " + ", ".join(f"{a}x{b}: {p:.1f}" for (a, b), p in peaks.items()))
    with open(os.path.join(ROOT, "bench", "SAE_RESULTS.md"), "w") as f:
        f.write("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
