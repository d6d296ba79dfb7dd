"""Checkpoint overhead: the same statistics pipeline with and without exactly-once checkpoints.

    python bench/checkpoint.py [--rows 1000000] [--repeats 3] [--workers 1]

Pipeline: Parquet activations (the bundled 64-d sample, repeated) -> running z-score -> Parquet,
and -> SAE encoding (bundled sample SAE) -> feature statistics (sliding windows, top examples)
-> Parquet tables. Each configuration runs `--repeats` times (release build of `neurostream`);
the table reports the median wall time, rows/s, the ratio to the run without checkpoints, the
checkpoints written and their mean duration and size (from the engine's debug log). Writes
bench/CHECKPOINT_RESULTS.md.
"""
from __future__ import annotations

import argparse
import os
import pathlib
import platform
import re
import shutil
import statistics
import subprocess
import tempfile
import time

import pyarrow as pa
import pyarrow.parquet as pq
from benchlib import results_path  # noqa: E402

ROOT = pathlib.Path(__file__).resolve().parent.parent
BIN = ROOT / "target" / "release" / "neurostream"
SAMPLE = ROOT / "examples" / "data" / "sample_activations.parquet"
SAE = ROOT / "examples" / "data" / "sample_sae"

PIPELINE = """
[pipeline]
name = "checkpoint-bench"

[sources.acts]
kind = "parquet"
path = "acts.parquet"

[operators.z]
kind = "normalize"
input = "acts"
method = "running_zscore"

[operators.enc]
kind = "sae_encode"
input = "acts"
sae = "{sae}"

[operators.stats]
kind = "feature_stats"
input = "enc"
window = 4096
step = 1024
top_k = 5

[sinks.z]
kind = "parquet"
input = "z"
path = "out/z.parquet"

[sinks.stats]
kind = "parquet"
input = "stats"
path = "out/stats"
"""


def run_once(work: pathlib.Path, workers: int, every: float | None) -> tuple[float, list[tuple[float, int, float]]]:
    shutil.rmtree(work / "out", ignore_errors=True)
    shutil.rmtree(work / "ck", ignore_errors=True)
    args = [str(BIN), "run", "p.toml", "--quiet", "-w", str(workers)]
    if every is not None:
        args += ["--checkpoint-dir", "ck", "--checkpoint-every", str(every)]
    env = dict(os.environ, RUST_LOG="neurostream_engine=debug")
    t0 = time.perf_counter()
    out = subprocess.run(args, cwd=work, env=env, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    if out.returncode != 0:
        raise SystemExit(f"run failed:\n{out.stderr[-3000:]}")
    found = re.findall(r"checkpoint \d+ written \((\d+) bytes, ([\d.]+) ms, sources held ([\d.]+) ms", out.stderr)
    checkpoints = [(float(ms), int(b), float(held)) for b, ms, held in found]
    return wall, checkpoints


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rows", type=int, default=1_000_000)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--workers", type=int, default=1)
    a = ap.parse_args()
    if not BIN.exists():
        raise SystemExit("build first: cargo build --release")
    work = pathlib.Path(tempfile.mkdtemp(prefix="ns-ckpt-bench-"))
    sample = pq.read_table(SAMPLE)
    reps = -(-a.rows // sample.num_rows)
    table = pa.concat_tables([sample] * reps).slice(0, a.rows)
    pq.write_table(table, work / "acts.parquet", row_group_size=65536)
    (work / "p.toml").write_text(PIPELINE.format(sae=SAE))
    configs = [("no checkpoints", None), ("checkpoint every 1 s", 1.0), ("checkpoint every 0.1 s", 0.1)]
    results = []
    for label, every in configs:
        walls, cks = [], []
        for _ in range(a.repeats):
            w, c = run_once(work, a.workers, every)
            walls.append(w)
            cks.append(c)
        mid = sorted(range(len(walls)), key=lambda i: walls[i])[len(walls) // 2]
        results.append((label, walls[mid], cks[mid]))
        print(f"{label}: {walls[mid]:.2f} s, {len(cks[mid])} checkpoints", flush=True)
    base = results[0][1]
    lines = [
        "# Checkpoint overhead",
        "",
        f"Command: `python bench/checkpoint.py --rows {a.rows} --repeats {a.repeats} --workers {a.workers}` "
        f"(release build; median of {a.repeats} runs; {platform.processor() or platform.machine()}, {os.cpu_count()} cores).",
        "",
        f"Pipeline: {a.rows:,} rows of 64-d activations from Parquet -> running z-score -> Parquet, and -> SAE encoding "
        "(bundled sample SAE) -> `feature_stats` (window 4096, step 1024, top 5 examples) -> Parquet tables. "
        "Checkpoints save the z-score and statistics state, the source position, and commit the Parquet "
        "segments written since the previous one (fsync + rename, on a commit thread while the sources go on); at the end "
        "the segments are merged into the final files.",
        "",
        "| configuration | wall s | rows/s | throughput vs no checkpoints | checkpoints | mean sources held ms | mean checkpoint ms | mean size KiB |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for label, wall, cks in results:
        mean_ms = statistics.mean(c[0] for c in cks) if cks else float("nan")
        mean_kib = statistics.mean(c[1] for c in cks) / 1024 if cks else float("nan")
        mean_held = statistics.mean(c[2] for c in cks) if cks else float("nan")
        lines.append(
            f"| {label} | {wall:.2f} | {a.rows / wall:,.0f} | {base / wall:.2f} | {len(cks)} | "
            + (f"{mean_held:.1f} | {mean_ms:.1f} | {mean_kib:.0f} |" if cks else "– | – | – |")
        )
    lines += [
        "",
        "Sources held: from the pause of the sources until every operator and sink has reported (the pipeline "
        "drains up to the aligned time, operators snapshot, sinks close their segments); then the sources go on "
        "while a commit thread fsyncs the segments, writes the checkpoint and commits them. Checkpoint ms: from "
        "the pause to the durable commit. The final checkpoint (after every source ended, committed before the "
        "sources are released) and the merge of the segments into the final files are included in the wall time.",
        "",
        "Before the commit moved off the sources' path (session 13, same command): 0.88x at 1 s and 0.81x at 0.1 s "
        "(checkpoints of 100 and 72 ms, the sources held throughout).",
    ]
    pathlib.Path(results_path("CHECKPOINT_RESULTS.md")).write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
