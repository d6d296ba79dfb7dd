"""Benchmark: scale-out. The bench pipelines with 1 worker, 2 workers, and 2 processes x 1
worker (a local cluster on loopback, `--processes 2`), same machine, runs alternated, best of
--repeat, wall clock from process start to outputs committed.

  python bench/scale_out.py [--repeat 3] [--quick]

Pipelines (bench/runtime_split.py's, the z-score writing zstd, plus a stateless SAE job):
- Parquet (400k x 256) -> running z-score (one stream) -> zstd Parquet parts;
- Parquet (60k x 576) -> SAE encode (bundled SmolLM2 SAE) -> feature_stats -> Parquet;
- Parquet (60k x 576) -> SAE encode -> Parquet (stateless);
- synthetic EEG 64 ch x 300 s -> band-pass -> band power -> Parquet;
- a dataset of 8 recordings (Parquet, 64 ch x 60 s at 1 kHz each) read with `stream_by = "file"`
  -> band-pass -> band power -> Parquet, a Hive directory per recording: the stateful
  operators split the recordings over the workers.

Targets (issue 22): 2 workers >= 1.8x one worker, 2 processes x 1 worker >= 1.7x. Every run's
outputs are checked to hold the same number of rows as the 1-worker run's. The table also
shows the cores the 1-worker run kept busy (CPU time / wall time: its Parquet writer threads
and read-ahead run beside the worker) and the speed-up this machine's cores allow from there
(cores / that). Writes
SCALE_OUT_RESULTS.md (bench/ or $NEUROSTREAM_BENCH_OUT).
"""
import argparse
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time

import pyarrow.parquet as pq

from benchlib import ROOT, cargo_build, cpu_name, results_path
from runtime_split import EEG, GEN, NORMALIZE, SAE, SAE_STATS

BIN = os.path.join(ROOT, "target", "release", "neurostream")

# runtime_split.py's z-score job, writing zstd level 3 as a bulk job would.
ZSCORE = NORMALIZE.format(out="out/z").replace(
    "row_group_size = 16384", 'compression = "zstd"\ncompression_level = 3\nrow_group_size = 16384'
)

SAE_ONLY = """
[sources.acts]
kind = "parquet"
path = "acts576.parquet"

[operators.sae]
kind = "sae_encode"
input = "acts"
sae = "{sae}"
device = "cpu"

[sinks.features]
kind = "parquet"
input = "sae"
path = "out/features"
"""

RECORDINGS = """
[sources.eeg]
kind = "parquet"
path = "recordings"
stream_by = "file"

[operators.bp]
kind = "butterworth"
input = "eeg"
btype = "bandpass"
order = 4
cutoff = [8.0, 30.0]

[operators.power]
kind = "bandpower"
input = "bp"
window_s = 1.0
step_s = 0.5
nperseg = 1000

[sinks.out]
kind = "parquet"
input = "bp"
path = "out/bp"
partition_by = ["stream"]

[sinks.power]
kind = "parquet"
input = "power"
path = "out/power"
partition_by = ["stream"]
"""


def write_recordings(directory: str, count: int, seconds: float) -> None:
    """`count` recordings of 64 channels at 1 kHz in the signal layout: noise and a 10 Hz rhythm."""
    import numpy as np
    import pyarrow as pa

    os.makedirs(directory, exist_ok=True)
    rng = np.random.default_rng(0)
    n = int(seconds * 1000)
    t = np.arange(n) / 1000.0
    for i in range(count):
        cols = {"time": pa.array(t), "sample": pa.array(np.arange(n, dtype=np.int64))}
        for c in range(64):
            x = rng.standard_normal(n) * 10 + 20 * np.sin(2 * np.pi * 10 * t + c)
            cols[f"EEG{c + 1:02d}"] = pa.array(x.astype(np.float32))
        meta = {"neurostream.layout": "signals", "neurostream.sample_rate": "1000",
                "neurostream.units": "[" + ",".join(['"uV"'] * 64) + "]"}
        table = pa.table(cols).replace_schema_metadata(meta)
        pq.write_table(table, os.path.join(directory, f"sub-{i + 1:02d}.parquet"), row_group_size=65536)


LAYOUTS = [("1 worker", ["-w", "1"]), ("2 workers", ["-w", "2"]), ("2 processes x 1", ["--processes", "2", "-w", "1"])]


def rows_written(cwd: str) -> int:
    total = 0
    for dirpath, _, files in os.walk(os.path.join(cwd, "out")):
        for f in files:
            if f.endswith(".parquet") and not f.startswith((".", "_")):
                total += pq.ParquetFile(os.path.join(dirpath, f)).metadata.num_rows
    return total


def children_cpu_s() -> float:
    """User + system CPU seconds of every child process waited for so far."""
    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


def run(args: list[str], cwd: str) -> tuple[float, float]:
    """Runs the pipeline; returns (wall s, CPU s of its processes)."""
    shutil.rmtree(os.path.join(cwd, "out"), ignore_errors=True)
    cpu0 = children_cpu_s()
    t0 = time.perf_counter()
    out = subprocess.run([BIN, "run", "p.toml", *args, "--quiet"], cwd=cwd, capture_output=True, text=True)
    elapsed = time.perf_counter() - t0
    if out.returncode != 0:
        sys.exit(f"neurostream {args} failed:\n{out.stdout}{out.stderr}")
    return elapsed, children_cpu_s() - cpu0


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--quick", action="store_true", help="smaller inputs, one repeat")
    args = ap.parse_args()
    repeat = 1 if args.quick else args.repeat
    scale = 4 if args.quick else 1
    cargo_build("--bin", "neurostream")
    work = tempfile.mkdtemp(prefix="ns-scale-")
    try:
        for d, tokens in [(256, 400_000 // scale), (576, 60_000 // scale)]:
            with open(os.path.join(work, "gen.toml"), "w") as f:
                f.write(GEN.format(d=d, features=4 * d, tokens=tokens, path=f"acts{d}.parquet"))
            subprocess.run([BIN, "run", "gen.toml", "--quiet"], cwd=work, check=True, capture_output=True)
        write_recordings(os.path.join(work, "recordings"), 8, 60.0 / scale)
        cases = [
            (f"Parquet ({400 // scale}k x 256) -> running z-score -> zstd Parquet", ZSCORE),
            (f"Parquet ({60 // scale}k x 576) -> SAE encode -> feature_stats -> Parquet",
             SAE_STATS.format(sae=SAE, out="out/features")),
            (f"Parquet ({60 // scale}k x 576) -> SAE encode -> Parquet", SAE_ONLY.format(sae=SAE)),
            (f"synthetic EEG 64 ch x {300 // scale} s -> band-pass -> band power -> Parquet",
             EEG.format(out="out/bp").replace("seconds = 300.0", f"seconds = {300.0 / scale}")),
            (f"Parquet dataset, 8 recordings x 64 ch x {60 // scale} s (`stream_by = \"file\"`) -> band-pass -> "
             "band power -> Parquet per recording", RECORDINGS),
        ]
        table = []
        for name, toml in cases:
            with open(os.path.join(work, "p.toml"), "w") as f:
                f.write(toml)
            best = {label: (float("inf"), 0.0) for label, _ in LAYOUTS}
            rows = {}
            for _ in range(repeat):
                for label, layout in LAYOUTS:
                    best[label] = min(best[label], run(layout, work))
                    rows[label] = rows_written(work)
            if len(set(rows.values())) != 1:
                sys.exit(f"{name}: the layouts wrote different row counts: {rows}")
            one, one_cpu = best["1 worker"]
            busy = one_cpu / one
            table.append((name, one, busy, best["2 workers"][0], best["2 processes x 1"][0]))
            print(f"{name}: 1 worker {one:.2f} s ({busy:.2f} cores busy), 2 workers {best['2 workers'][0]:.2f} s "
                  f"({one / best['2 workers'][0]:.2f}x), 2 processes {best['2 processes x 1'][0]:.2f} s "
                  f"({one / best['2 processes x 1'][0]:.2f}x)", file=sys.stderr)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    cores = os.cpu_count() or 1
    lines = [
        "# Benchmark: scale-out (issue 22)",
        "",
        f"Command: `python bench/scale_out.py{' --quick' if args.quick else f' --repeat {repeat}'}`; "
        "`cargo build --release` (no `target-cpu`). Wall clock per run, process start to outputs committed, "
        f"best of {repeat}, layouts alternated. 2 processes x 1 worker is a local cluster on loopback "
        "(`--processes 2`). Every layout wrote the same number of rows.",
        "",
        f"Machine: {cpu_name()}, {cores} cores; {time.strftime('%Y-%m-%d')}.",
        "",
        "| pipeline | 1 worker s | cores busy at 1 worker | speed-up the cores allow | 2 workers s | speed-up "
        "| 2 processes x 1 s | speed-up |",
        "| --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for name, one, busy, two, procs in table:
        lines.append(f"| {name} | {one:.2f} | {busy:.2f} | {cores / busy:.2f}x | {two:.2f} | {one / two:.2f}x "
                     f"| {procs:.2f} | {one / procs:.2f}x |")
    lines.append("")
    lines.append("Targets: 2 workers >= 1.8x, 2 processes x 1 worker >= 1.7x. Cores busy = CPU time (user + "
                 "system, every thread of the process) / wall time of the best 1-worker run; the speed-up "
                 "the cores allow = cores / cores busy, the most a layout can gain on this machine if it needs "
                 "the same CPU time (a 1-worker run slowed by the kernel's page zeroing needs more, and a "
                 "ratio can then pass it).")
    with open(results_path("SCALE_OUT_RESULTS.md"), "w") as f:
        f.write("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
