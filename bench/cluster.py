"""Benchmark: clustering and co-occurrence, neurostream against scikit-learn / scipy.sparse, same
machine, same data, same run. Writes bench/CLUSTER_RESULTS.md.

  python bench/cluster.py [--rows 50000] [--tokens 50000]   (needs numpy, scipy, scikit-learn; builds release)

1. k-means assignment throughput (rows/s), d 576, k 256, float32 Gaussian blobs: neurostream's
   CPU kernel (GEMM + arg-min; 1 and 2 threads) against scikit-learn's
   `pairwise_distances_argmin_min` and `KMeans.predict` (BLAS, all cores); one mini-batch
   k-means pass (1024-row batches, assignment + update) against `MiniBatchKMeans.partial_fit`.
2. Co-occurrence update throughput (tokens/s), d_sae 16384, L0 32 (token windows): neurostream's
   `PairCounter`, sorted runs of packed pair keys (all-time, and a sliding span of 8192 windows where each
   window is later retracted) against scipy.sparse (`Xᵀ X` per 1024-token batch added to a
   running sparse count matrix; sliding: minus the expired batches' products).
3. The same with connected components of the pairs whose Jaccard reaches 0.05, read every 8192
   tokens and at the end: neurostream's union-find over the report's pairs against scipy.sparse
   (the Jaccard of every counted pair, thresholded, then `csgraph.connected_components`).
"""
import argparse
import json
import os
import subprocess
import tempfile
import time

import numpy as np
import scipy.sparse as sp
from scipy.sparse.csgraph import connected_components
from sklearn.cluster import KMeans, MiniBatchKMeans
from sklearn.metrics import pairwise_distances_argmin_min
from benchlib import cargo_build, cpu_name, results_path  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def best_of(f, n=3):
    times = []
    for _ in range(n):
        t0 = time.perf_counter()
        f()
        times.append(time.perf_counter() - t0)
    return min(times)


def write_npy(path, a):
    np.save(path, np.ascontiguousarray(a, dtype=np.float32))


JACCARD = 0.05


def components_scipy(counts, singles, threshold):
    """Connected components among firing features of the pairs whose Jaccard reaches `threshold`."""
    c = counts.tocoo()
    na, nb = singles[c.row], singles[c.col]
    keep = c.data / np.maximum(na + nb - c.data, 1) >= threshold
    n = singles.shape[0]
    graph = sp.csr_matrix((np.ones(int(keep.sum())), (c.row[keep], c.col[keep])), shape=(n, n))
    _, labels = connected_components(graph, directed=False)
    return len(np.unique(labels[singles > 0]))


def cooc_scipy(ids, n_features, span_batches=None, batch=1024, jaccard=None, report_batches=8):
    """tokens/s, pairs at the end and (with `jaccard`) components among firing features at the
    end, reading components every `report_batches` batches and at the end."""
    tokens, l0 = ids.shape
    counts = sp.csr_matrix((n_features, n_features), dtype=np.int64)
    singles = np.zeros(n_features, dtype=np.int64)
    ring = []
    components = None
    t0 = time.perf_counter()
    for i, s in enumerate(range(0, tokens, batch)):
        rows = ids[s : s + batch]
        n = rows.shape[0]
        x = sp.csr_matrix((np.ones(rows.size, dtype=np.int64), rows.ravel(), np.arange(0, rows.size + 1, l0)), shape=(n, n_features))
        prod = sp.triu(x.T @ x, k=1).tocsr()
        counts = counts + prod
        fired = np.bincount(rows.ravel(), minlength=n_features) if jaccard is not None else None
        if fired is not None:
            singles += fired
        if span_batches is not None:
            ring.append((prod, fired))
            if len(ring) > span_batches:
                old, old_fired = ring.pop(0)
                counts = counts - old
                counts.eliminate_zeros()
                if old_fired is not None:
                    singles -= old_fired
        if jaccard is not None and ((i + 1) % report_batches == 0 or s + batch >= tokens):
            components = components_scipy(counts, singles, jaccard)
    return tokens / (time.perf_counter() - t0), counts.nnz, components


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--rows", type=int, default=50000)
    ap.add_argument("--tokens", type=int, default=50000)
    a = ap.parse_args()
    rng = np.random.default_rng(0)
    d, k = 576, 256
    centers = rng.normal(size=(k, d)).astype(np.float32) * 3
    x = (centers[rng.integers(k, size=a.rows)] + rng.normal(size=(a.rows, d))).astype(np.float32)
    init = x[rng.choice(a.rows, size=k, replace=False)]
    n_features, l0 = 16384, 32
    # Tokens fire 32 distinct latents; popularity follows a Zipf-like law, as SAE latents do.
    p = 1.0 / np.arange(1, n_features + 1) ** 0.8
    p /= p.sum()
    ids = np.empty((a.tokens, l0), dtype=np.int64)
    for t in range(a.tokens):
        ids[t] = np.sort(rng.choice(n_features, size=l0, replace=False, p=p))
    cargo_build("--example", "bench_cluster")
    with tempfile.TemporaryDirectory() as work:
        paths = [os.path.join(work, n) for n in ("x.npy", "c.npy", "ids.npy")]
        write_npy(paths[0], x)
        write_npy(paths[1], init)
        write_npy(paths[2], ids)
        out = subprocess.run([os.path.join(ROOT, "target", "release", "examples", "bench_cluster")] + paths + [str(JACCARD)],
                             check=True, capture_output=True, text=True, env={**os.environ})
        ours = json.loads(out.stdout.strip().splitlines()[-1])
        # The same binary with its AVX-512 kernels turned off: the AVX2 path on this machine.
        out = subprocess.run([os.path.join(ROOT, "target", "release", "examples", "bench_cluster")] + paths,
                             check=True, capture_output=True, text=True, env={**os.environ, "NEUROSTREAM_NO_AVX512": "1"})
        avx2 = json.loads(out.stdout.strip().splitlines()[-1])
    avx512 = "avx512f" in open("/proc/cpuinfo").read()
    n = a.rows
    t_argmin = best_of(lambda: pairwise_distances_argmin_min(x, init))
    km = KMeans(n_clusters=k, init=init, n_init=1, max_iter=1).fit(x[: 4 * k])
    km.cluster_centers_ = init.copy()
    t_predict = best_of(lambda: km.predict(x))

    def mb():
        m = MiniBatchKMeans(n_clusters=k, init=init, n_init=1, batch_size=1024)
        for s in range(0, n, 1024):
            m.partial_fit(x[s : s + 1024])

    t_mb = best_of(mb, n=2)
    sk_assign = max(n / t_argmin, n / t_predict)
    sc_all, nnz_all, _ = cooc_scipy(ids, n_features)
    sc_slide, nnz_slide, _ = cooc_scipy(ids, n_features, span_batches=8)
    sc_all_comp, _, comps_all = cooc_scipy(ids, n_features, jaccard=JACCARD)
    sc_slide_comp, _, _ = cooc_scipy(ids, n_features, span_batches=8, jaccard=JACCARD)
    if nnz_all != ours["cooc_all_time_pairs"]:
        raise SystemExit(f"pair counts differ: scipy {nnz_all}, neurostream {ours['cooc_all_time_pairs']}")
    if comps_all != ours["cooc_all_time_component_count"]:
        raise SystemExit(f"components differ: scipy {comps_all}, neurostream {ours['cooc_all_time_component_count']}")
    cpu = cpu_name()
    lines = [
        "# Clustering and co-occurrence benchmark",
        "",
        f"Command: `python bench/cluster.py --rows {a.rows} --tokens {a.tokens}` (release build, same machine, same data, same run).",
        f"Machine: {cpu or 'unknown CPU'}, {os.cpu_count()} cores. scikit-learn/numpy use every core (BLAS, OpenMP).",
        "",
        f"## k-means, d {d}, k {k}, {n} rows (float32)",
        "",
        "| | rows/s | ratio vs best scikit-learn |",
        "| --- | ---: | ---: |",
        f"| scikit-learn `pairwise_distances_argmin_min` | {n / t_argmin:,.0f} | {n / t_argmin / sk_assign:.2f} |",
        f"| scikit-learn `KMeans.predict` | {n / t_predict:,.0f} | {n / t_predict / sk_assign:.2f} |",
        f"| neurostream assignment, 1 thread | {ours['assign_cpu1']:,.0f} | {ours['assign_cpu1'] / sk_assign:.2f} |",
        f"| neurostream assignment, 2 threads | {ours['assign_cpu2']:,.0f} | {ours['assign_cpu2'] / sk_assign:.2f} |",
    ]
    if avx512:
        lines += [
            f"| neurostream assignment, 1 thread, AVX2 kernel (`NEUROSTREAM_NO_AVX512=1`) | {avx2['assign_cpu1']:,.0f} | {avx2['assign_cpu1'] / sk_assign:.2f} |",
            f"| neurostream assignment, 2 threads, AVX2 kernel | {avx2['assign_cpu2']:,.0f} | {avx2['assign_cpu2'] / sk_assign:.2f} |",
        ]
    lines += [
        "",
        "Both sides as a user gets them: neurostream's default release build (no `target-cpu`; "
        + ("AVX-512 kernels chosen at run time on this CPU" if avx512 else "this CPU has no AVX-512: AVX2 kernels")
        + "), scikit-learn on its wheel's OpenBLAS.",
    ]
    if "assign_gpu" in ours:
        lines.append(f"| neurostream assignment, wgpu ({ours['gpu']}) | {ours['assign_gpu']:,.0f} | {ours['assign_gpu'] / sk_assign:.2f} |")
    lines += [
        "",
        "| mini-batch pass (1024-row batches) | rows/s | ratio |",
        "| --- | ---: | ---: |",
        f"| scikit-learn `MiniBatchKMeans.partial_fit` | {n / t_mb:,.0f} | 1.00 |",
        f"| neurostream `MiniBatch::step`, 2 threads | {ours['minibatch_cpu2']:,.0f} | {ours['minibatch_cpu2'] * t_mb / n:.2f} |",
        "",
        f"## Co-occurrence, d_sae {n_features}, L0 {l0}, {a.tokens} tokens (token windows)",
        "",
        f"Counts agree: {nnz_all:,} co-firing pairs all-time in both. Sliding: span of 8192 windows (neurostream) / 8 batches of 1024 (scipy).",
        "",
        "| | tokens/s | ratio vs scipy.sparse |",
        "| --- | ---: | ---: |",
        f"| scipy.sparse `Xᵀ X` per batch, all-time | {sc_all:,.0f} | 1.00 |",
        f"| neurostream `PairCounter` (sorted runs), all-time | {ours['cooc_all_time']:,.0f} | {ours['cooc_all_time'] / sc_all:.2f} |",
        f"| scipy.sparse, sliding (add + subtract batches) | {sc_slide:,.0f} | 1.00 |",
        f"| neurostream, sliding (every window retracted) | {ours['cooc_sliding']:,.0f} | {ours['cooc_sliding'] / sc_slide:.2f} |",
        "",
        f"With connected components of the pairs whose Jaccard reaches {JACCARD}, read every 8192 tokens and at the end "
        f"(scipy.sparse: Jaccard of every counted pair, threshold, `csgraph.connected_components`). "
        f"Components among firing features at the end agree: {comps_all:,} in both (all-time).",
        "",
        "| with components | tokens/s | ratio vs scipy.sparse |",
        "| --- | ---: | ---: |",
        f"| scipy.sparse, all-time | {sc_all_comp:,.0f} | 1.00 |",
        f"| neurostream, all-time | {ours['cooc_all_time_components']:,.0f} | {ours['cooc_all_time_components'] / sc_all_comp:.2f} |",
        f"| scipy.sparse, sliding | {sc_slide_comp:,.0f} | 1.00 |",
        f"| neurostream, sliding | {ours['cooc_sliding_components']:,.0f} | {ours['cooc_sliding_components'] / sc_slide_comp:.2f} |",
        "",
        f"Reading all {ours['cooc_all_time_pairs']:,} pair counts out of the sorted runs: {ours['cooc_all_time_read_s'] * 1e3:.0f} ms.",
    ]
    text = "\n".join(lines) + "\n"
    open(results_path("CLUSTER_RESULTS.md"), "w").write(text)
    print(text)


if __name__ == "__main__":
    main()
