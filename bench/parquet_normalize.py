"""Benchmark: Parquet -> normalize -> Parquet, neurostream against pyarrow + numpy.

Both sides read the same activation file, compute the same normalization and write zstd
(level 3) Parquet; every run is timed end to end (process start to file committed), in the
same session, and the outputs are checked against each other. Writes bench/RESULTS.md.

usage: python bench/parquet_normalize.py [--tokens N] [--d-model D] [--repeat R]
       (builds target/release/neurostream first if it is missing)
"""
import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "tests", "python"))
from check_normalize import running_zscore  # noqa: E402  (the same reference the tests use)
from benchlib import cargo_build, results_path  # noqa: E402
BIN = os.path.join(ROOT, "target", "release", "neurostream")


def neurostream(args, cwd):
    out = subprocess.run([BIN, *args, "--quiet"], cwd=cwd, capture_output=True, text=True)
    if out.returncode != 0:
        sys.exit(f"neurostream {args} failed:\n{out.stdout}{out.stderr}")
    return out.stderr


def pipeline(method, sink):
    extra = 'warmup = 1024\n' if method == "running_zscore" else ""
    return f"""
[sources.acts]
kind = "parquet"
path = "input.parquet"

[operators.norm]
kind = "normalize"
input = "acts"
method = "{method}"
device = "cpu"
{extra}
[sinks.out]
kind = "parquet"
input = "norm"
path = "{sink}"
compression = "zstd"
compression_level = 3
row_group_size = 16384
"""


def numpy_normalize(path, out, method, d):
    t = pq.read_table(path)
    x = t.column("act").combine_chunks().flatten().to_numpy().reshape(-1, d)
    if method == "l2":
        norm = np.linalg.norm(x, axis=1, keepdims=True)
        y = (x * (np.sqrt(d) / np.where(norm > 0, norm, 1))).astype(np.float32)
    else:
        y = running_zscore(x.astype(np.float64), 1024)
        y = y.astype(np.float32)
    act = pa.FixedSizeListArray.from_arrays(pa.array(y.reshape(-1), pa.float32()), d)
    table = pa.table({"seq_id": t.column("seq_id"), "pos": t.column("pos"), "act": act})
    pq.write_table(table, out, compression="zstd", compression_level=3, row_group_size=16384)


def generate(d, n, seed, path):
    """A pipeline that writes `n` seeded activations of width `d` to `path` (zstd level 3)."""
    return f"""
[sources.acts]
kind = "synthetic_activations"
d_model = {d}
features = {4 * d}
active = 16
tokens = {n}
chunk = 4096
seed = {seed}

[sinks.file]
kind = "parquet"
input = "acts"
path = "{path}"
row_group_size = 16384
compression = "zstd"
compression_level = 3
"""


COPY = """
[sources.acts]
kind = "parquet"
path = "copy_input.parquet"

[sinks.out]
kind = "parquet"
input = "acts"
path = "{sink}"
compression = "zstd"
compression_level = 3
row_group_size = 16384
"""


def pyarrow_copy(path, out):
    """The least any tool must do: read the file and write it back, zstd level 3."""
    pq.write_table(pq.read_table(path), out, compression="zstd", compression_level=3, row_group_size=16384)


def copy_rows(work, n, d, repeat):
    """neurostream Parquet -> Parquet (no operator) against pyarrow read_table + write_table."""
    with open(os.path.join(work, "gen_copy.toml"), "w") as f:
        f.write(generate(d, n, 2, "copy_input.parquet"))
    neurostream(["run", "gen_copy.toml"], work)
    src = os.path.join(work, "copy_input.parquet")
    t_pa = best(lambda: pyarrow_copy(src, os.path.join(work, "pyarrow_copy.parquet")), repeat)
    want = pq.ParquetFile(src).metadata.num_rows
    rows = []
    for workers in [1, 2]:
        sink = "copy_out.parquet" if workers == 1 else "copy_parts"
        with open(os.path.join(work, "p.toml"), "w") as f:
            f.write(COPY.format(sink=sink))
        t_ns = best(lambda: neurostream(["run", "p.toml", "-w", str(workers)], work), repeat)
        got = read_act(os.path.join(work, sink), d)
        assert got.shape[0] == want, f"copy wrote {got.shape[0]} rows of {want}"
        rows.append((workers, t_ns, t_pa))
        print(f"copy d={d} w={workers}  neurostream {t_ns:6.2f}s  pyarrow {t_pa:6.2f}s  ratio {t_pa / t_ns:5.2f}x", flush=True)
    return rows


def read_act(path, d):
    t = pq.read_table(path)
    key = t.column("seq_id").to_numpy().astype(np.uint64) * np.uint64(1 << 32) + t.column("pos").to_numpy()
    order = np.argsort(key, kind="stable")
    return t.column("act").combine_chunks().flatten().to_numpy().reshape(-1, d)[order]


def best(fn, repeat):
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return min(times)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--tokens", type=int, default=400_000)
    ap.add_argument("--d-model", type=int, default=256)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--copy-tokens", type=int, default=200_000, help="rows of the 576-wide read + write table")
    args = ap.parse_args()
    if not os.path.exists(BIN):
        cargo_build()
    d, n = args.d_model, args.tokens
    work = tempfile.mkdtemp(prefix="ns-bench-")
    try:
        with open(os.path.join(work, "gen.toml"), "w") as f:
            f.write(generate(d, n, 1, "input.parquet"))
        neurostream(["run", "gen.toml"], work)
        size_mb = os.path.getsize(os.path.join(work, "input.parquet")) / 1e6
        payload_mb = n * d * 4 / 1e6
        rows = []
        for method in ["l2", "running_zscore"]:
            ref_out = os.path.join(work, f"numpy_{method}.parquet")
            t_np = best(lambda: numpy_normalize(os.path.join(work, "input.parquet"), ref_out, method, d), args.repeat)
            ref = read_act(ref_out, d)
            for workers in [1, 2]:
                sink = "out.parquet" if workers == 1 else "out_parts"
                with open(os.path.join(work, "p.toml"), "w") as f:
                    f.write(pipeline(method, sink))
                t_ns = best(lambda: neurostream(["run", "p.toml", "-w", str(workers)], work), args.repeat)
                got = read_act(os.path.join(work, sink), d)
                err = float(np.max(np.abs(got.astype(np.float64) - ref) / np.maximum(np.abs(ref), 1.0)))
                assert err < 1e-5, f"{method} outputs differ: {err}"
                rows.append((method, workers, t_ns, t_np, err))
                print(f"{method:15s} w={workers}  neurostream {t_ns:6.2f}s  pyarrow+numpy {t_np:6.2f}s  ratio {t_np / t_ns:5.2f}x", flush=True)
        cpu = "unknown"
        try:
            for line in open("/proc/cpuinfo"):
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
        except OSError:
            pass
        lines = [
            "# Benchmark: Parquet -> normalize -> Parquet",
            "",
            "Command: `python bench/parquet_normalize.py"
            + (f" --tokens {n}" if n != 400_000 else "")
            + (f" --d-model {d}" if d != 256 else "")
            + "` (with the repo's `.venv`; builds `target/release/neurostream`).",
            "",
            f"Input: {n:,} tokens x d_model {d} activations (`fixed_size_list<float32>`), "
            f"{payload_mb:.0f} MB of float32, {size_mb:.0f} MB as zstd Parquet, row groups of 16384 rows. "
            "Both sides read it, normalize, and write zstd level 3 Parquet with 16384-row groups; times are "
            f"wall clock end to end (process start to output committed), best of {args.repeat}. "
            "neurostream runs its CPU kernels (`device = \"cpu\"`); with 2 workers it writes one part per worker. "
            "pyarrow + numpy is the single-process script a user would write (`bench/parquet_normalize.py:numpy_normalize`). "
            "Outputs are checked against each other (max relative error column).",
            "",
            f"Machine: {cpu}, {os.cpu_count()} cores, {platform.system()} {platform.release()}; "
            f"numpy {np.__version__}, pyarrow {pa.__version__}; {time.strftime('%Y-%m-%d')}.",
            "",
            "| method | workers | neurostream s | rows/s | MB/s | pyarrow+numpy s | rows/s | MB/s | speed-up | max rel. error |",
            "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
        ]
        for method, workers, t_ns, t_np, err in rows:
            lines.append(
                f"| {method} | {workers} | {t_ns:.2f} | {n / t_ns:,.0f} | {payload_mb / t_ns:,.0f} | {t_np:.2f} | "
                f"{n / t_np:,.0f} | {payload_mb / t_np:,.0f} | {t_np / t_ns:.2f}x | {err:.1e} |"
            )
        lines.append("")
        lines.append("MB/s counts the float32 payload (tokens x d_model x 4 bytes).")
        copy_d, copy_n = 576, args.copy_tokens
        copies = copy_rows(work, copy_n, copy_d, args.repeat)
        copy_mb = copy_n * copy_d * 4 / 1e6
        lines += [
            "",
            "## Read + write alone",
            "",
            f"{copy_n:,} tokens x d_model {copy_d} (`fixed_size_list<float32>`, zstd level 3, 16384-row groups): "
            "neurostream's `parquet` source straight into its `parquet` sink against pyarrow's "
            "`write_table(read_table(...))` with the same settings (pyarrow reads with its own thread pool). "
            f"Best of {args.repeat}, wall clock.",
            "",
            "| workers | neurostream s | MB/s | pyarrow s | MB/s | speed-up |",
            "| --- | --- | --- | --- | --- | --- |",
        ]
        for workers, t_ns, t_pa in copies:
            lines.append(
                f"| {workers} | {t_ns:.2f} | {copy_mb / t_ns:,.0f} | {t_pa:.2f} | {copy_mb / t_pa:,.0f} | {t_pa / t_ns:.2f}x |"
            )
        with open(results_path("RESULTS.md"), "w") as f:
            f.write("\n".join(lines) + "\n")
        print("\n".join(lines))
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
