"""Benchmark: SAE encoding on the GPU, neurostream's wgpu kernels against PyTorch on the same
device, same SAEs, same data, same run. Writes bench/GPU_RESULTS.md.

  python bench/gpu.py [--seconds S] [--quick] [--peak-tflops T] [--bandwidth-gbs B]

Then the k-means assignment (d 576, k 256) on the wgpu kernel against PyTorch's
`argmin(|c|^2 - 2 x c^T)` on the same device, the EEG band-pass against torchaudio, and
`feature_stats` (d_sae 16384, L0 32) on wgpu and on the CPU against PyTorch's scatter counting.

For TopK (k = 32) and JumpReLU SAEs at 576 -> 16384, 2304 -> 16384 and 2304 -> 65536 (a
Gemma-2-2B-sized SAE), batches of 1, 64 and 4096 tokens: tokens/s, achieved TFLOP/s (2 d_in d_sae
per token), the share of the card's fp32 peak (`--peak-tflops`) or, at batch 1, of its memory
bandwidth (`--bandwidth-gbs`), the GPU time per token from wgpu timestamp queries, and the bytes
moved between host and device per token each way. PyTorch runs the SAELens formula (`matmul` +
`topk`, or the JumpReLU mask) under `torch.no_grad()` on CUDA, synchronized, and with
`torch.compile` where it works; without CUDA it runs on the CPU and the table says so.

The wgpu adapter is named in the results. On a software adapter (Mesa's lavapipe: no GPU here)
the reduced configuration runs (`--quick` forces it): its numbers show the harness works and how
many bytes move, not GPU speed. Needs numpy, safetensors and torch; builds the release example
`sae_encode_bench`.
"""
import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BENCH = os.path.join(ROOT, "target", "release", "examples", "sae_encode_bench")
sys.path.insert(0, os.path.join(ROOT, "tests", "python"))
import sae_reference  # noqa: E402
from benchlib import cargo_build, results_path  # noqa: E402

FULL = {"shapes": [(576, 16384), (2304, 16384), (2304, 65536)], "batches": [1, 64, 4096]}
QUICK = {"shapes": [(576, 16384)], "batches": [1, 64]}


def ours(sae_dir, xpath, d_in, batch, seconds, weights="f32"):
    out = subprocess.run([BENCH, sae_dir, xpath, str(d_in), str(batch), str(seconds), "1", weights, "gpu"],
                         capture_output=True, text=True)
    if out.returncode != 0:
        raise SystemExit(f"sae_encode_bench failed:\n{out.stderr}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def torch_encoder(sae_dir, arch, device, compiled):
    import torch
    from sae_encode import torch_encode_fn  # bench/sae_encode.py: the same formula on the CPU bench
    enc = torch_encode_fn(sae_dir, arch, device)
    d_in = sae_d_in(sae_dir)
    if compiled:
        try:
            c = torch.compile(enc)
            c(torch.zeros(2, d_in, device=device))
            return c
        except Exception as e:  # noqa: BLE001 - reported, then the eager function is timed
            print(f"torch.compile failed ({type(e).__name__}); timing eager", flush=True)
    return enc


def sae_d_in(sae_dir):
    with open(os.path.join(sae_dir, "cfg.json")) as f:
        return json.load(f)["d_in"]


def time_torch(enc, x, batch, seconds, device):
    import torch
    from sae_encode import time_torch as timed  # bench/sae_encode.py, with the device's sync
    return timed(enc, x, batch, seconds, torch.cuda.synchronize if device == "cuda" else (lambda: None))


def kmeans_section(work, config, device, seconds):
    """Rows/s of the wgpu k-means assignment (d 576, k 256) and of PyTorch's on the same device."""
    rows, d, k = (8192 if config is QUICK else 262144), 576, 256
    rng = np.random.default_rng(2)
    paths = [os.path.join(work, n) for n in ("kx.npy", "kc.npy", "kids.npy")]
    x = rng.normal(0, 1, (rows, d)).astype(np.float32)
    c = rng.normal(0, 1, (k, d)).astype(np.float32)
    np.save(paths[0], x)
    np.save(paths[1], c)
    np.save(paths[2], np.sort(rng.integers(0, 4096, (64, 8)), axis=1).astype(np.float32))  # co-occurrence: kept tiny
    cargo_build("--example", "bench_cluster")
    out = subprocess.run([os.path.join(ROOT, "target", "release", "examples", "bench_cluster")] + paths,
                         capture_output=True, text=True, env={**os.environ, "NEUROSTREAM_BENCH_GPU": "1"})
    if out.returncode != 0:
        raise SystemExit(f"bench_cluster failed:\n{out.stderr}")
    ours = json.loads(out.stdout.strip().splitlines()[-1]).get("assign_gpu")
    if ours is None:
        print("no wgpu adapter for the k-means assignment", flush=True)
        return None
    peer = None
    if device is not None:
        import torch
        sync = torch.cuda.synchronize if device == "cuda" else (lambda: None)
        xt, ct = torch.from_numpy(x).to(device), torch.from_numpy(c).to(device)
        cn = (ct * ct).sum(1)
        with torch.no_grad():
            torch.argmin(cn - 2 * xt @ ct.T, dim=1)
            sync()
            best = float("inf")
            for _ in range(3):
                t0 = time.perf_counter()
                torch.argmin(cn - 2 * xt @ ct.T, dim=1)
                sync()
                best = min(best, time.perf_counter() - t0)
        peer = rows / best
    print(f"k-means assignment: neurostream {ours:,.0f} rows/s, torch {peer or 0:,.0f}", flush=True)
    return rows, d, k, ours, peer


def eeg_section(config, device):
    """Samples/s of the offline EEG band-pass (Butterworth order 4, 8-30 Hz, 1 kHz) over
    256 channels on wgpu, and of torchaudio's `lfilter` cascade on the same device when installed."""
    channels, seconds = 256, (10 if config is QUICK else 120)
    cargo_build("--example", "bench_signal")
    out = subprocess.run([os.path.join(ROOT, "target", "release", "examples", "bench_signal"), "gpu", str(channels),
                          str(seconds)], capture_output=True, text=True)
    if out.returncode != 0:
        raise SystemExit(f"bench_signal gpu failed:\n{out.stderr}")
    ours = json.loads(out.stdout.strip().splitlines()[-1])
    peer = None
    if device is not None:
        try:
            import torch
            import torchaudio.functional as taf
            from scipy.signal import butter
            sos = butter(4, [8.0, 30.0], btype="bandpass", fs=1000.0, output="sos")
            x = torch.from_numpy(np.random.default_rng(3).normal(0, 50, (channels, seconds * 1000)).astype(np.float32)).to(device)
            sync = torch.cuda.synchronize if device == "cuda" else (lambda: None)
            coeffs = [(torch.tensor(s[:3], device=device), torch.tensor(s[3:], device=device)) for s in sos]
            def run():
                y = x
                for b, a in coeffs:
                    y = taf.lfilter(y, a, b, clamp=False)
                return y
            run()
            sync()
            t0 = time.perf_counter()
            run()
            sync()
            peer = seconds * 1000 / (time.perf_counter() - t0)
        except ImportError as e:
            print(f"no EEG peer: {e}", flush=True)
    print(f"EEG band-pass {channels} ch: neurostream {ours['samples_per_s']:,.0f} samples/s, torchaudio {peer or 0:,.0f}",
          flush=True)
    return ours, peer


def torch_feature_stats(path, d_sae, k, tokens, device, window=4096, bins=24, lo=-3.0, hi=3.0):
    """Seconds for PyTorch to compute what `feature_stats` emits per window, on `device`: per
    feature firing counts (`bincount`), float64 sums (`index_add_`), maxima (`scatter_reduce_`),
    the log10 activation histogram and the L0 distribution, for the window and all time, each
    window's tables copied to the host. (No top examples: the peer does less than the engine.)"""
    import torch
    raw = np.fromfile(path, dtype=np.uint8)
    ids = np.frombuffer(raw[:tokens * k * 4], np.uint32).astype(np.int64).reshape(tokens, k)
    vals = np.frombuffer(raw[tokens * k * 4:], np.float32).reshape(tokens, k).copy()
    i_all, v_all = torch.from_numpy(ids).to(device), torch.from_numpy(vals).to(device)
    sync = torch.cuda.synchronize if device == "cuda" else (lambda: None)

    def run():
        all_c = torch.zeros(d_sae, dtype=torch.int64, device=device)
        all_s = torch.zeros(d_sae, dtype=torch.float64, device=device)
        all_m = torch.zeros(d_sae, device=device)
        all_h = torch.zeros(d_sae * bins, dtype=torch.int64, device=device)
        for t0 in range(0, tokens, window):
            i, v = i_all[t0:t0 + window], v_all[t0:t0 + window]
            fired = v > 0
            fi, fv = i[fired], v[fired]
            c = torch.bincount(fi, minlength=d_sae)
            s = torch.zeros(d_sae, dtype=torch.float64, device=device).index_add_(0, fi, fv.double())
            m = torch.zeros(d_sae, device=device).scatter_reduce_(0, fi, fv, "amax")
            b = ((torch.log10(fv) - lo) / (hi - lo) * bins).floor().clamp(0, bins - 1).long()
            h = torch.bincount(fi * bins + b, minlength=d_sae * bins)
            l0 = torch.bincount(fired.sum(1))
            all_c += c
            all_s += s
            all_m = torch.maximum(all_m, m)
            all_h += h
            [t.cpu() for t in (c, s, m, h, l0, all_c, all_s, all_m, all_h)]
        sync()

    with torch.no_grad():
        run()
        best = float("inf")
        for _ in range(2):
            t0 = time.perf_counter()
            run()
            best = min(best, time.perf_counter() - t0)
    return best


def stats_section(config, device):
    """Tokens/s of `feature_stats` (default settings) on wgpu and on the CPU, and of PyTorch's
    scatter counting on `device`, at d_sae 16384 and L0 32."""
    d_sae, k, tokens, batch = 16384, 32, (100_000 if config is QUICK else 1_000_000), 4096
    cargo_build("--example", "bench_feature_stats")
    runs = {}
    for dev in ["gpu", "cpu"]:
        out = subprocess.run([os.path.join(ROOT, "target", "release", "examples", "bench_feature_stats"), dev, str(d_sae),
                              str(k), str(tokens), str(batch)], capture_output=True, text=True)
        if out.returncode != 0:
            raise SystemExit(f"bench_feature_stats {dev} failed:\n{out.stderr}")
        runs[dev] = json.loads(out.stdout.strip().splitlines()[-1])
    peer = None
    if device is not None:
        peer = tokens / torch_feature_stats(runs["cpu"]["data"], d_sae, k, tokens, device)
    print(f"feature_stats: wgpu {runs['gpu']['tokens_per_s']:,.0f} tok/s, cpu {runs['cpu']['tokens_per_s']:,.0f}, "
          f"torch {peer or 0:,.0f}", flush=True)
    return runs, peer


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--seconds", type=float, default=2.0)
    ap.add_argument("--quick", action="store_true", help="the reduced configuration (automatic on a software adapter)")
    ap.add_argument("--peak-tflops", type=float, default=None, help="the card's fp32 peak, for the %% of peak column")
    ap.add_argument("--bandwidth-gbs", type=float, default=None, help="the card's memory bandwidth, for batch 1")
    ap.add_argument("--out", default=results_path("GPU_RESULTS.md"))
    args = ap.parse_args()
    cargo_build("-p", "neurostream-operators", "--example", "sae_encode_bench")
    try:
        import torch
        device = "cuda" if torch.cuda.is_available() else "cpu"
        peer = f"PyTorch {torch.__version__} on " + (torch.cuda.get_device_name(0) if device == "cuda"
                                                     else f"the CPU ({torch.get_num_threads()} threads; no CUDA here)")
    except ImportError:
        torch, device, peer = None, None, "PyTorch not installed: no peer column"
    work = tempfile.mkdtemp(prefix="ns-gpu-bench-")
    # One probe to name the adapter and pick the configuration.
    probe_dir = os.path.join(work, "probe")
    sae_reference.make(probe_dir, "saelens", "topk", 64, 256, 1, {"k": "32"})
    probe_x = os.path.join(work, "probe.f32")
    np.random.default_rng(0).normal(0, 1, (64, 64)).astype(np.float32).tofile(probe_x)
    probe = ours(probe_dir, probe_x, 64, 8, 0.05)
    software = probe["software_adapter"]
    config = QUICK if (args.quick or software) else FULL
    print(f"adapter: {probe['adapter']}; peer: {peer}; configuration: {'reduced' if config is QUICK else 'full'}", flush=True)
    rows = []
    for d_in, d_sae in config["shapes"]:
        x = np.random.default_rng(1).normal(0, 1, (8192, d_in)).astype(np.float32)
        xpath = os.path.join(work, f"x{d_in}.f32")
        x.tofile(xpath)
        xt = torch.from_numpy(x).to(device) if torch is not None else None
        for arch in ["topk", "jumprelu"]:
            sae_dir = os.path.join(work, f"sae_{d_in}_{d_sae}_{arch}")
            sae_reference.make(sae_dir, "saelens", arch, d_in, d_sae, 1, {"k": "32", "threshold_range": "2.4,2.9"})
            eager = torch_encoder(sae_dir, arch, device, False) if torch is not None else None
            comp = (torch_encoder(sae_dir, arch, device, True)
                    if torch is not None and device == "cuda" and config is FULL else None)
            for batch in config["batches"]:
                t_eager = time_torch(eager, xt, batch, args.seconds, device) if eager else None
                t_comp = time_torch(comp, xt, batch, args.seconds, device) if comp else None
                # Batch 1 reads the whole encoder per token: also with f16 weights, half the bytes.
                for weights in (["f32", "f16"] if batch == 1 else ["f32"]):
                    r = ours(sae_dir, xpath, d_in, batch, args.seconds, weights)
                    rows.append((d_in, d_sae, arch, batch, weights, r, t_eager, t_comp))
                    print(f"{d_in}->{d_sae} {arch:8s} batch {batch:5d} {weights}: neurostream {r['tokens_per_s']:10.1f} "
                          f"tok/s, torch {t_eager or 0:10.1f}, compiled {t_comp or 0:10.1f}", flush=True)
    kmeans = kmeans_section(work, config, device, args.seconds)
    eeg = eeg_section(config, device)
    stats = stats_section(config, device)
    fmt = lambda v, f="{:,.0f}": "—" if v is None else f.format(v)  # noqa: E731
    lines = [
        "# Benchmark: SAE encoding on the GPU (wgpu) against PyTorch",
        "",
        "Command: `python bench/gpu.py" + (" --quick" if config is QUICK and not software else "") + "`",
        "",
        f"wgpu adapter: {probe['adapter']}" + (" — **a software adapter (CPU): no GPU was available; these numbers "
                                                 "show the harness and the bytes moved, not GPU speed**" if software else ""),
        f"Peer: {peer}. {time.strftime('%Y-%m-%d')}. Configuration: {'reduced (software adapter or --quick)' if config is QUICK else 'full'}.",
        "TopK k = 32; JumpReLU thresholds uniform in [2.4, 2.9]; random SAELens-format weights, random tokens; whole batches for "
        f"{args.seconds:g} s after one warm-up batch. GPU time: wgpu timestamp queries around each kernel. Bytes: host to device "
        "(input rows, parameters) and device to host (results) per token.",
        "",
        "| d_in → d_sae | SAE | batch | weights | neurostream tok/s | TFLOP/s | % of fp32 peak | GPU µs/token | bytes up/token | bytes down/token "
        "| PyTorch tok/s | compiled tok/s | ratio to the faster PyTorch |",
        "| --- | --- | ---: | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for d_in, d_sae, arch, batch, weights, r, t_eager, t_comp in rows:
        tflops = r["gflops"] / 1e3
        peak = None
        if batch == 1 and args.bandwidth_gbs:
            bytes_per_weight = 4 if weights == "f32" else 2
            peak = 100 * bytes_per_weight * d_in * d_sae * r["tokens_per_s"] / (args.bandwidth_gbs * 1e9)
        elif args.peak_tflops:
            peak = 100 * tflops / args.peak_tflops
        best_peer = max([t for t in (t_eager, t_comp) if t], default=None)
        gpu_us = None if r.get("gpu_s_per_token") is None else r["gpu_s_per_token"] * 1e6
        lines.append(
            f"| {d_in} → {d_sae} | {arch} | {batch} | {weights} | {fmt(r['tokens_per_s'])} | {tflops:.3f} | "
            f"{fmt(peak, '{:.1f} %') + (' of bandwidth' if peak is not None and batch == 1 and args.bandwidth_gbs else '')} | "
            f"{fmt(gpu_us, '{:.2f}')} | {fmt(r['bytes_up_per_token'])} | {fmt(r['bytes_down_per_token'])} | "
            f"{fmt(t_eager)} | {fmt(t_comp)} | {fmt(None if best_peer is None else r['tokens_per_s'] / best_peer, '{:.2f}x')} |")
    lines += ["", "The wgpu encoder's product runs the register-tiled core every dense product on wgpu shares "
              "(`operators/src/gemm_tile.wgsl`): 128 × 128 output tiles (64 × 128 for blocks of up to 64 rows), 8 × 8 "
              "sums per invocation, 8-deep tiles of both operands double-buffered in workgroup memory with the next "
              "tile's global loads issued before the current tile's products, W_enc read as 16-byte vectors of words "
              "(rows padded to 16 bytes); one column per invocation for blocks of up to 4 rows. The activation is fused as "
              "its epilogue; it writes the pre-activations (TopK) or activations of the block to device "
              "memory. TopK then selects the top k in one workgroup per row (each invocation keeps the best of its strided "
              "columns; k rounds of a parallel arg-max, by subgroup operations where the adapter's subgroups hold at "
              "least 32 lanes, after each of which only the winner's owner rescans its "
              "columns: the row is read about once) and reads back k pairs per token (k × 8 bytes); the "
              "other architectures count the active latents per row and read back 4 bytes per token plus 8 per active "
              "latent. f16 weights are read as packed pairs (`unpack2x16float`, no `shader-f16` needed) and accumulated in "
              "f32. Not yet: on-device top-k without the dense pre-activations (written once and read once per block)."]
    if kmeans:
        rows_k, d, k, r, t_peer = kmeans
        lines += ["", f"## k-means assignment, d {d}, k {k}, {rows_k} rows (float32)", "",
                  "| neurostream wgpu rows/s | TFLOP/s | PyTorch rows/s | ratio |", "| ---: | ---: | ---: | ---: |",
                  f"| {fmt(r)} | {2 * d * k * r / 1e12:.3f} | {fmt(t_peer)} | "
                  f"{fmt(None if not t_peer else r / t_peer, '{:.2f}x')} |", "",
                  "neurostream: `GpuAssign` (the shared GEMM, then an arg-min kernel), best of 3 (`examples/bench_cluster.rs`). "
                  "PyTorch: `argmin(‖c‖² − 2 x cᵀ)` on the same device."]
    if eeg:
        r, t_peer = eeg
        lines += ["", f"## EEG band-pass, {r['channels']} channels, {r['samples']:,} samples at 1 kHz (float32)", "",
                  "| neurostream wgpu samples/s | channel-samples/s | bytes up/sample | bytes down/sample | "
                  "torchaudio samples/s | ratio |", "| ---: | ---: | ---: | ---: | ---: | ---: |",
                  f"| {fmt(r['samples_per_s'])} | {fmt(r['samples_per_s'] * r['channels'])} | "
                  f"{fmt(r['bytes_up_per_sample'])} | {fmt(r['bytes_down_per_sample'])} | {fmt(t_peer)} | "
                  f"{fmt(None if not t_peer else r['samples_per_s'] / t_peer, '{:.2f}x')} |", "",
                  f"neurostream: `GpuSos` (Butterworth order 4 band-pass 8-30 Hz as {r['sections']} second-order sections, one invocation "
                  "per channel walking the chunk, state carried in float64 on the host) in 10 000-sample chunks "
                  "(`examples/bench_signal.rs gpu`). Peer: torchaudio's `lfilter` per section on the same device, when "
                  "installed. In a pipeline, consecutive GPU signal operators keep the samples on the device "
                  "(`tests/gpu_chains.rs`)."]
    if stats:
        runs, t_peer = stats
        g, c = runs["gpu"], runs["cpu"]
        lines += ["", f"## Feature statistics, d_sae {g['d_sae']}, L0 {g['k']}, {g['tokens']:,} tokens in batches of {g['batch']}", "",
                  "| neurostream wgpu tok/s | bytes up/token | bytes down/token | neurostream CPU tok/s | "
                  f"PyTorch{f' ({device})' if device else ''} tok/s | wgpu / PyTorch | wgpu / CPU |", "| ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
                  f"| {fmt(g['tokens_per_s'])} | {fmt(g['bytes_up_per_token'])} | {fmt(g['bytes_down_per_token'])} | "
                  f"{fmt(c['tokens_per_s'])} | {fmt(t_peer)} | "
                  f"{fmt(None if not t_peer else g['tokens_per_s'] / t_peer, '{:.2f}x')} | {g['tokens_per_s'] / c['tokens_per_s']:.2f}x |", "",
                  "neurostream: the `feature_stats` operator with its defaults (windows of 4096 tokens, 24 activation bins, top 10 "
                  "examples per feature, the window and all-time tables built at every window) on TopK-shaped input "
                  "(`examples/bench_feature_stats.rs`); on wgpu the counting runs on the device and the counts come back once per "
                  "window, while the tables and top examples are built on the host. PyTorch: `bincount`, `index_add_` (float64), "
                  "`scatter_reduce_` and the histogram per window on the same device, the tables copied to the host, no top "
                  "examples."]
    with open(args.out, "w") as f:
        f.write("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
