"""Benchmark: SAE training, neurostream's `sae train` against reference trainers, same machine,
same run. Writes bench/SAE_TRAIN_RESULTS.md.

1. Quality (TopK): on the same activations, hyperparameters and token budget, final held-out
   FVU, L0 and dead fraction of neurostream's trainer and of scripts/train_topk_sae.py (the
   numpy trainer written to the same recipe), evaluated by the same numpy code.
2. Throughput (TopK, k = 32, d_in 576, d_sae 4096 and 16384, batch 4096): tokens/s of
   `neurostream sae train` (reading Parquet, shuffling, training) against a PyTorch trainer of
   the same recipe (dense autograd, Adam, AuxK, decoder renormalization) on the CPU, on data
   already in memory.

usage: python bench/sae_train.py [--quick]   (needs torch, numpy, pyarrow, safetensors;
       builds the release binary)
"""
import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import torch

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BIN = os.path.join(ROOT, "target", "release", "neurostream")
sys.path.insert(0, os.path.join(ROOT, "scripts"))
import sae_eval  # noqa: E402
from benchlib import cargo_build, results_path  # noqa: E402


def write_acts(path, x, seq_len=128):
    n, d = x.shape
    item = pa.field("item", pa.float32(), nullable=False)
    t = pa.table({
        "seq_id": pa.array((np.arange(n) // seq_len).astype(np.uint64)),
        "pos": pa.array((np.arange(n) % seq_len).astype(np.uint32)),
        "act": pa.FixedSizeListArray.from_arrays(pa.array(x.astype(np.float32).ravel()), type=pa.list_(item, d)),
    })
    pq.write_table(t.replace_schema_metadata({"neurostream.layout": "activations", "neurostream.d_model": str(d)}), path)


def planted(n, d, features, active, seed):
    """Activations with known sparse structure: power-law feature frequencies, random unit
    directions, coefficients 0.5 + Exp(1), Gaussian noise 0.05."""
    rng = np.random.default_rng(seed)
    dirs = rng.normal(size=(features, d))
    dirs /= np.linalg.norm(dirs, axis=1, keepdims=True)
    p = 1.0 / np.arange(1, features + 1) ** 0.8
    p /= p.sum()
    x = rng.normal(0, 0.05, (n, d))
    for _ in range(active):
        f = rng.choice(features, n, p=p)
        x += (0.5 + rng.exponential(1.0, n))[:, None] * dirs[f]
    return (x + rng.normal(0, 1.0, d) * 0.5).astype(np.float32)  # plus a shared offset


def evaluate(sae_dir, x):
    """Held-out (FVU, L0, dead fraction): the same numpy code as scripts/sae_eval.py."""
    r = sae_eval.evaluate_array(sae_dir, x)
    return r["fvu"], r["l0"], r["dead_fraction"]


def torch_trainer(x, d_sae, k, batch, steps, lr=4e-4, device="cpu"):
    """PyTorch TopK trainer, the recipe of scripts/train_topk_sae.py; returns tokens/s."""
    torch.manual_seed(0)
    torch.set_default_device(device)
    n, d = x.shape
    xt = torch.from_numpy(x).to(device)
    scale = (d / (xt.double() ** 2).sum(1).mean()).sqrt().float()
    w_dec = torch.randn(d_sae, d)
    w_dec /= w_dec.norm(dim=1, keepdim=True)
    params = {"w_enc": w_dec.T.clone().requires_grad_(), "b_enc": torch.zeros(d_sae, requires_grad=True),
              "w_dec": w_dec.requires_grad_(), "b_dec": (xt[:batch] * scale).mean(0).requires_grad_()}
    opt = torch.optim.Adam(params.values(), lr=lr)
    last = torch.zeros(d_sae)
    k_aux = d // 2
    t0 = None
    sync = torch.cuda.synchronize if device == "cuda" else (lambda: None)
    for step in range(steps + 1):
        if step == 1:
            sync()
            t0 = time.perf_counter()  # step 0 is warm-up
        xb = xt[torch.randint(0, n, (batch,))] * scale
        h = (xb - params["b_dec"]) @ params["w_enc"] + params["b_enc"]
        top = torch.topk(h, k, dim=1)
        a = torch.zeros_like(h).scatter(1, top.indices, torch.relu(top.values))
        xh = a @ params["w_dec"] + params["b_dec"]
        loss = ((xh - xb) ** 2).sum(1).mean()
        fired = (a > 0).any(0)
        last[fired] = step
        dead = (step - last) > 50
        if dead.any():
            hd = torch.where(dead, h, torch.full_like(h, -1e30))
            ta = torch.topk(hd, min(k_aux, int(dead.sum())), dim=1)
            aux = torch.zeros_like(h).scatter(1, ta.indices, torch.relu(ta.values))
            loss = loss + ((aux @ params["w_dec"] - (xb - xh).detach()) ** 2).sum(1).mean() / 32
        opt.zero_grad()
        loss.backward()
        with torch.no_grad():
            g, wd = params["w_dec"].grad, params["w_dec"]
            g -= (g * wd).sum(1, keepdim=True) * wd
        opt.step()
        with torch.no_grad():
            params["w_dec"] /= params["w_dec"].norm(dim=1, keepdim=True)
    sync()
    torch.set_default_device("cpu")
    return steps * batch / (time.perf_counter() - t0)


def ours(work, input_path, d_sae, k, batch, lr, tokens=None, name="sae", seed=0, epochs=1, device="cpu"):
    cmd = [BIN, "sae", "train", "--input", input_path, "--out", name, "--d-sae", str(d_sae), "--k", str(k),
           "--batch", str(batch), "--lr", str(lr), "--seed", str(seed), "--epochs", str(epochs), "--quiet",
           "--device", device]
    if tokens:
        cmd += ["--tokens", str(tokens)]
    subprocess.run(cmd, cwd=work, check=True, capture_output=True)
    return json.load(open(os.path.join(work, name, "train_report.json")))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true", help="smaller sizes, for a smoke run")
    ap.add_argument("--device", choices=["cpu", "gpu"], default="cpu",
                    help="gpu: neurostream's wgpu backend against PyTorch on CUDA (throughput only; "
                         "writes bench/SAE_TRAIN_RESULTS_GPU.md)")
    args = ap.parse_args()
    gpu = args.device == "gpu"
    cargo_build("--bin", "neurostream")
    work = tempfile.mkdtemp(prefix="ns-sae-train-")
    threads = torch.get_num_threads()
    lines = ["# Benchmark: SAE training", "",
             "Command: `python bench/sae_train.py` (needs torch, numpy, pyarrow, safetensors; builds the release binary).", "",
             f"Machine: {os.cpu_count()} cores; PyTorch {torch.__version__} on {threads} threads; {time.strftime('%Y-%m-%d')}; "
             f"neurostream built with RUSTFLAGS={os.environ.get('RUSTFLAGS', '(none)')!r}.", ""]

    if gpu:
        lines[0] += " (GPU)"
        lines.append(f"GPU: {torch.cuda.get_device_name() if torch.cuda.is_available() else 'no CUDA device for PyTorch'}.")
        lines.append("")
    # 1. Quality against the numpy reference trainer.
    n_train, n_held, d, m, k, batch, lr, epochs = (65536, 8192, 128, 1024, 16, 1024, 1e-3, 8)
    if args.quick:
        n_train, n_held = 16384, 4096
    x = planted(n_train + n_held, d, features=2048, active=12, seed=1)
    write_acts(os.path.join(work, "train.parquet"), x[:n_train])
    steps = n_train * epochs // batch
    quality = []
    for seed in range(0 if gpu else 6):
        rep = ours(work, "train.parquet", m, k, batch, lr, name=f"ns{seed}", seed=seed, epochs=epochs)
        subprocess.run([sys.executable, os.path.join(ROOT, "scripts", "train_topk_sae.py"), os.path.join(work, "train.parquet"),
                        os.path.join(work, f"ref{seed}"), "--d-sae", str(m), "--k", str(k), "--steps", str(steps),
                        "--batch", str(batch), "--lr", str(lr), "--skip-first", "0", "--seed", str(seed), "--dtype", "float32"],
                       check=True, capture_output=True)
        q_ns = evaluate(os.path.join(work, f"ns{seed}"), x[n_train:])
        q_ref = evaluate(os.path.join(work, f"ref{seed}"), x[n_train:])
        quality.append((seed, q_ns, q_ref, rep["tokens"]))
        print(f"quality seed {seed}: neurostream fvu {q_ns[0]:.4f} l0 {q_ns[1]:.1f} dead {q_ns[2]:.3f}; "
              f"numpy reference fvu {q_ref[0]:.4f} l0 {q_ref[1]:.1f} dead {q_ref[2]:.3f}", flush=True)
    lines += [] if gpu else ["## Quality against the numpy reference trainer (TopK)", "",
              f"Planted sparse activations (d_in {d}, 2048 directions, ~12 active per token, noise), {n_train} training "
              f"tokens, {n_held} held out. d_sae {m}, k {k}, batch {batch}, lr {lr}, {steps} steps each (the same token "
              f"budget: neurostream makes {epochs} shuffled passes, the reference samples batches with replacement); both evaluated on the held-out tokens by the same numpy code. Dead: latents that never fire on "
              "the held-out tokens.", "",
              "| seed | neurostream FVU | reference FVU | FVU ratio | neurostream L0 | reference L0 | neurostream dead | reference dead |",
              "| --- | --- | --- | --- | --- | --- | --- | --- |"]
    for seed, a, b, _ in quality:  # empty on --device gpu
        lines.append(f"| {seed} | {a[0]:.4f} | {b[0]:.4f} | {a[0] / b[0]:.3f} | {a[1]:.1f} | {b[1]:.1f} | {a[2]:.3f} | {b[2]:.3f} |")
    med_ns = float(np.median([a[0] for _, a, _, _ in quality])) if quality else float("nan")
    med_ref = float(np.median([b[0] for _, _, b, _ in quality])) if quality else float("nan")
    lines += [] if gpu else [f"| median | {med_ns:.4f} | {med_ref:.4f} | {med_ns / med_ref:.3f} | | | | |", "",
              "On real activations (SmolLM2-135M layer 15, the shipped sample SAE; `examples/data/smollm2_sae/README.md`): "
              "held-out FVU 0.1794 (neurostream) vs 0.1793 (reference), dead 0.0 vs 0.0005, same data, recipe and budget.", ""]

    # 2. Throughput against PyTorch.
    lines += ["## Throughput against PyTorch (TopK, k = 32, d_in 576, batch 4096)", "",
              "neurostream: `neurostream sae train` end to end (Parquet read, shuffle buffer, training), tokens/s from its "
              "report. PyTorch: the same recipe with autograd on tensors already in memory, after one warm-up step.", "",
              "| d_sae | neurostream tok/s | PyTorch tok/s | ratio |", "| --- | --- | --- | --- |"]
    d, batch, k = 576, 4096, 32
    n = 8 * batch if not args.quick else 4 * batch
    x = np.random.default_rng(2).normal(size=(n, d)).astype(np.float32)
    write_acts(os.path.join(work, "speed.parquet"), x)
    for m in ([4096, 16384] if not args.quick else [4096]):
        rep = ours(work, "speed.parquet", m, k, batch, 4e-4, name=f"speed{m}", device=args.device)
        torch_device = "cuda" if gpu and torch.cuda.is_available() else "cpu"
        pt = torch_trainer(x, m, k, batch, steps=n // batch - 1, device=torch_device)
        lines.append(f"| {m} | {rep['tokens_per_s']:,.0f} | {pt:,.0f} | {rep['tokens_per_s'] / pt:.2f}x |")
        print(f"throughput d_sae {m}: neurostream {rep['tokens_per_s']:.0f} tok/s, torch {pt:.0f} tok/s", flush=True)
    name = "SAE_TRAIN_RESULTS_GPU.md" if gpu else "SAE_TRAIN_RESULTS.md"
    with open(results_path(name), "w") as f:
        f.write("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
