"""SAE encode against the best BLAS on the machine (numpy's OpenBLAS), no PyTorch needed.

    python bench/sae_encode_blas.py [--seconds 2]

For d_in 576 and 768 into d_sae 16384 (TopK, k = 32), batches of 1, 64 and 4096 tokens:
neurostream's CPU kernel (`sae_encode_bench`, release build, 2 threads) with the kernel it picks
at run time (AVX-512 where the CPU has it) and with the AVX2 kernel forced
(`NEUROSTREAM_NO_AVX512=1`), against numpy: the same encode (`(x - b_dec) @ W_enc + b_enc`,
then the top 32 by `argpartition`), and the bare products (`sgemm` for 4096 rows, `sgemv` for
one) that bound any encoder built on that BLAS. At batch 1 also the machine's bound: a bare
read of all of W_enc per token on the same 2 threads (`sae_encode_bench ... read`), alternated
three times with neurostream's encode (medians; memory bandwidth on a shared VM drifts).
Reports tokens/s, GFLOP/s, bytes of weights read per second at batch 1, and the ratios. Writes
bench/SAE_BLAS_RESULTS.md.
"""
import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time

import numpy as np
from safetensors.numpy import load_file

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BENCH = os.path.join(ROOT, "target", "release", "examples", "sae_encode_bench")
sys.path.insert(0, os.path.join(ROOT, "tests", "python"))
import sae_reference  # noqa: E402
from benchlib import cargo_build, cpu_name, results_path  # noqa: E402


def rate(f, batch, seconds):
    f(0)
    n, i, t0 = 0, 0, time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        f(i)
        n += batch
        i += 1
    return n / (time.perf_counter() - t0)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--seconds", type=float, default=2.0)
    ap.add_argument("--rounds", type=int, default=3,
                    help="alternated rounds of neurostream and its peers per row (medians, per-round ratios)")
    a = ap.parse_args()
    cargo_build("-p", "neurostream-operators", "--example", "sae_encode_bench")
    work = tempfile.mkdtemp(prefix="ns-sae-blas-")
    avx512 = "avx512f" in open("/proc/cpuinfo").read()
    cpu = cpu_name()
    rows, bounds = [], []
    for d_in, d_sae in [(576, 16384), (768, 16384)]:
        rng = np.random.default_rng(0)
        x = rng.normal(0, 1, (8192, d_in)).astype(np.float32)
        xpath = os.path.join(work, f"x{d_in}.f32")
        x.tofile(xpath)
        sae = os.path.join(work, f"sae{d_in}")
        sae_reference.make(sae, "saelens", "topk", d_in, d_sae, 1, {"k": "32"})
        w = load_file(os.path.join(sae, "sae_weights.safetensors"))
        W, b, bd = (w[n].astype(np.float32) for n in ("W_enc", "b_enc", "b_dec"))
        for batch in [1, 64, 4096]:
            def encode(i):
                s = (i * batch) % (8192 - batch + 1)
                h = (x[s:s + batch] - bd) @ W + b
                np.argpartition(-h, 32, axis=1)[:, :32]

            def product(i):
                s = (i * batch) % (8192 - batch + 1)
                x[s:s + batch] @ W

            def ours_rate(dtype, env=None, mode="cpu"):
                out = subprocess.run([BENCH, sae, xpath, str(d_in), str(batch), str(a.seconds), "2", dtype, mode],
                                     capture_output=True, text=True, check=True, env={**os.environ, **(env or {})})
                return json.loads(out.stdout)["tokens_per_s"]

            ours = {"avx2": ours_rate("f32", {"NEUROSTREAM_NO_AVX512": "1"}), "f16": ours_rate("f16")}
            # This machine's speed drifts by tens of percent within minutes: the encode and its
            # peers run in alternated rounds and the ratios are taken per round.
            rounds = []
            for _ in range(a.rounds):
                r = {"auto": ours_rate("f32"), "product": rate(product, batch, a.seconds),
                     "encode": rate(encode, batch, a.seconds)}
                if batch == 1:
                    r["read"] = ours_rate("f32", mode="read")
                rounds.append(r)
            med = lambda key: statistics.median(r[key] for r in rounds)  # noqa: E731
            per_round = lambda key: sorted(r["auto"] / r[key] for r in rounds)  # noqa: E731
            ours["auto"] = med("auto")
            np_encode, np_product = med("encode"), med("product")
            rows.append((d_in, d_sae, batch, ours["auto"], ours["avx2"], np_encode, np_product, per_round("product"),
                         ours["f16"]))
            if batch == 1:
                bounds.append((d_in, d_sae, ours["auto"], med("read"), per_round("read"), np_encode, np_product))
            print(f"{d_in}->{d_sae} batch {batch}: neurostream {ours['auto']:.0f} (AVX2 {ours['avx2']:.0f}) tok/s, "
                  f"numpy encode {np_encode:.0f}, bare product {np_product:.0f}", flush=True)
    gf = lambda d_in, d_sae, t: 2 * d_in * d_sae * t / 1e9  # noqa: E731
    lines = [
        "# SAE encode against numpy / OpenBLAS",
        "",
        f"Command: `python bench/sae_encode_blas.py --seconds {a.seconds:g} --rounds {a.rounds}` ({cpu}, {os.cpu_count()} cores; "
        f"numpy {np.__version__} on its wheel's OpenBLAS, all cores; neurostream's default release build, 2 threads, "
        + ("AVX-512 kernel chosen at run time" if avx512 else "no AVX-512 on this CPU: AVX2 kernel")
        + "). TopK SAE, k = 32, f32 weights.",
        "",
        "numpy encode = `(x - b_dec) @ W_enc + b_enc` then `argpartition` for the top 32 (what a numpy user "
        "writes); bare product = `x @ W_enc` alone (`sgemm`, or `sgemv` for one row): the bound of any encoder on "
        "that BLAS. At batch 1 the encoder is bound by reading the weights: GB/s = weight bytes × tokens/s. "
        "f16 weights: `weights = \"f16\"`, `W_enc` stored as f16 (half the bytes) and widened in registers; "
        "their error against f32 weights is in bench/SAE_RESULTS.md. neurostream's f32 encode, the numpy encode "
        f"and the bare product run in {a.rounds} alternated rounds: tok/s are medians, \"neurostream / bare product\" "
        "the median of the per-round ratios (each round's ratio in brackets).",
        "",
        "| d_in → d_sae | batch | neurostream tok/s | GFLOP/s | AVX2 kernel tok/s | numpy encode tok/s | ratio | "
        "bare product tok/s | neurostream / bare product | f16 weights tok/s | f16 / numpy encode |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for d_in, d_sae, batch, auto, avx2, enc, prod, prod_ratios, f16 in rows:
        extra = f" ({4 * d_in * d_sae * auto / 1e9:.1f} GB/s)" if batch == 1 else ""
        shown = ", ".join(f"{r:.2f}" for r in prod_ratios)
        lines.append(
            f"| {d_in} → {d_sae} | {batch} | {auto:,.0f}{extra} | {gf(d_in, d_sae, auto):.0f} | {avx2:,.0f} | {enc:,.0f} | "
            f"{auto / enc:.2f} | {prod:,.0f} | {statistics.median(prod_ratios):.2f} ({shown}) | {f16:,.0f} | {f16 / enc:.2f} |"
        )
    lines += [
        "",
        "Batch 1 against the memory bound: `read` = tokens/s if a token cost nothing but reading all of "
        "`W_enc` (f32) once, on the same 2 threads (each sums its half with the widest vectors the CPU has), "
        "run in the same rounds; medians, per-round ratios in brackets.",
        "",
        "| d_in → d_sae | neurostream tok/s | read bound tok/s (GB/s) | neurostream / bound | numpy encode / bound "
        "| bare sgemv / bound |",
        "| --- | ---: | ---: | ---: | ---: | ---: |",
    ]
    for d_in, d_sae, auto, read, ratios, enc, prod in bounds:
        shown = ", ".join(f"{r:.2f}" for r in ratios)
        lines.append(
            f"| {d_in} → {d_sae} | {auto:,.0f} | {read:,.0f} ({4 * d_in * d_sae * read / 1e9:.1f}) | "
            f"{statistics.median(ratios):.2f} ({shown}) | {enc / read:.2f} | {prod / read:.2f} |"
        )
    lines += ["", f"Machine: {platform.machine()}, {cpu}.", ""]
    with open(results_path("SAE_BLAS_RESULTS.md"), "w") as f:
        f.write("\n".join(lines))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
