"""Benchmark: the runtime before and after its split into runtime/ (issue 16), same machine, same
run, same inputs, runs interleaved (before, after, before, after, ...), best of --repeat.

  python bench/runtime_split.py --before BIN --after BIN [--repeat 3]

BIN: a `neurostream` release binary. Before = commit 30c45bf (the last with engine/src/runtime.rs
in one file): `git worktree add /tmp/presplit 30c45bf && (cd /tmp/presplit && cargo build
--release)`. After: this checkout's `target/release/neurostream`. Outputs of both are compared
(same rows, same values). Writes bench/RUNTIME_SPLIT_RESULTS.md.
"""
import argparse
import os
import subprocess
import sys
import tempfile
import time

import numpy as np
import pyarrow.parquet as pq

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from benchlib import cpu_name  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SAE = os.path.join(ROOT, "examples", "data", "smollm2_sae")

GEN = """
[sources.acts]
kind = "synthetic_activations"
d_model = {d}
features = {features}
active = 16
tokens = {tokens}
chunk = 4096
seed = 1

[sinks.file]
kind = "parquet"
input = "acts"
path = "{path}"
row_group_size = 16384
"""

NORMALIZE = """
[sources.acts]
kind = "parquet"
path = "acts256.parquet"

[operators.norm]
kind = "normalize"
input = "acts"
method = "running_zscore"
warmup = 1024
device = "cpu"

[sinks.out]
kind = "parquet"
input = "norm"
path = "{out}"
row_group_size = 16384
"""

SAE_STATS = """
[sources.acts]
kind = "parquet"
path = "acts576.parquet"

[operators.sae]
kind = "sae_encode"
input = "acts"
sae = "{sae}"
device = "cpu"

[operators.stats]
kind = "feature_stats"
input = "sae"
window = 8192

[sinks.features]
kind = "parquet"
input = "sae"
path = "{out}"

[sinks.stats]
kind = "parquet"
input = "stats"
path = "{out}_stats"
"""

EEG = """
[sources.eeg]
kind = "synthetic_eeg"
channels = 64
sample_rate = 1000.0
seconds = 300.0
chunk = 256

[operators.bp]
kind = "butterworth"
input = "eeg"
btype = "bandpass"
order = 4
cutoff = [8.0, 30.0]
device = "cpu"

[operators.power]
kind = "bandpower"
input = "bp"
window_s = 1.0
step_s = 0.5
nperseg = 1000

[sinks.out]
kind = "parquet"
input = "bp"
path = "{out}"

[sinks.power]
kind = "parquet"
input = "power"
path = "{out}_power.parquet"
"""

CASES = [
    ("Parquet -> running z-score -> Parquet (400k x 256)", NORMALIZE, 1),
    ("Parquet -> running z-score -> Parquet (400k x 256)", NORMALIZE, 2),
    ("Parquet -> SAE encode -> feature_stats -> Parquet (60k x 576)", SAE_STATS, 1),
    ("Parquet -> SAE encode -> feature_stats -> Parquet (60k x 576)", SAE_STATS, 2),
    ("synthetic EEG 64 ch x 300 s -> band-pass -> band power -> Parquet", EEG, 1),
]


def run(binary, toml, workers, cwd):
    with open(os.path.join(cwd, "p.toml"), "w") as f:
        f.write(toml)
    t0 = time.perf_counter()
    out = subprocess.run([binary, "run", "p.toml", "-w", str(workers), "--quiet"], cwd=cwd, capture_output=True,
                         text=True)
    if out.returncode != 0:
        sys.exit(f"{binary} failed:\n{out.stdout}{out.stderr}")
    return time.perf_counter() - t0


def table(path):
    """All rows of a file or a directory of parts, sorted by every column, for comparison."""
    t = pq.read_table(path) if os.path.isfile(path) else pq.ParquetDataset(path).read()
    t = t.select(sorted(t.column_names))
    return t.sort_by([(c, "ascending") for c in t.column_names if not str(t.schema.field(c).type).startswith(("list", "fixed", "large_list"))])


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--before", required=True)
    ap.add_argument("--after", default=os.path.join(ROOT, "target", "release", "neurostream"))
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args()
    work = tempfile.mkdtemp(prefix="ns-split-")
    for d, tokens in [(256, 400_000), (576, 60_000)]:
        with open(os.path.join(work, "gen.toml"), "w") as f:
            f.write(GEN.format(d=d, features=4 * d, tokens=tokens, path=f"acts{d}.parquet"))
        subprocess.run([args.after, "run", "gen.toml", "--quiet"], cwd=work, check=True, capture_output=True)
    rows = []
    for name, template, workers in CASES:
        times = {"before": [], "after": []}
        for _ in range(args.repeat):
            for side in ["before", "after"]:
                out = f"{side}_out" + (".parquet" if workers == 1 and template is not SAE_STATS else "")
                times[side].append(run(getattr(args, side), template.format(out=out, sae=SAE), workers, work))
        same = "yes"
        for suffix in ([".parquet"] if workers == 1 and template is not SAE_STATS else [""]):
            a, b = table(os.path.join(work, "before_out" + suffix)), table(os.path.join(work, "after_out" + suffix))
            if a.num_rows != b.num_rows or not a.equals(b):
                same = f"no ({a.num_rows} vs {b.num_rows} rows)"
        tb, ta = min(times["before"]), min(times["after"])
        rows.append((name, workers, tb, ta, same))
        print(f"{name} w={workers}: before {tb:.2f}s after {ta:.2f}s ratio {tb / ta:.3f} same output: {same}", flush=True)
    cpu = cpu_name()
    lines = ["# Benchmark: the runtime before and after the split (issue 16)", "",
             f"Command: `python bench/runtime_split.py --before BIN --after target/release/neurostream --repeat {args.repeat}`; "
             "before = commit 30c45bf (one `runtime.rs`), after = this checkout, both `cargo build --release` with the "
             "same profile and no `target-cpu` flags. Wall clock per run, process start to outputs committed, best of "
             f"{args.repeat}, runs interleaved. Outputs compared row for row (sorted).", "",
             f"Machine: {cpu}, {os.cpu_count()} cores; {time.strftime('%Y-%m-%d')}.", "",
             "| pipeline | workers | before s | after s | before / after | same output |",
             "| --- | --- | --- | --- | --- | --- |"]
    for name, workers, tb, ta, same in rows:
        lines.append(f"| {name} | {workers} | {tb:.2f} | {ta:.2f} | {tb / ta:.3f} | {same} |")
    lines += ["", "A ratio above 1 means the split runtime is faster."]
    with open(os.path.join(ROOT, "bench", "RUNTIME_SPLIT_RESULTS.md"), "w") as f:
        f.write("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
