"""Soak: a day of traffic through the LLM-monitoring and BCI pipelines, replayed fast, with
rolling Parquet outputs (retention on) and exactly-once checkpoints every 10 s.

    python bench/soak.py [--hours 24] [--tokens-per-s 1000] [--bci-hours 72] [--checkpoint-every 10] [--only llm|bci]

- **LLM monitoring**: synthetic activations of the bundled sample's generator (64-d, planted
  directions) with event times, `--tokens-per-s` of traffic for `--hours` -> SAE encoding
  (bundled SAE) -> hourly `feature_stats` (event-time windows of 1 h every 10 min) -> rolling
  features (10-minute parts in date/hour partitions, 6 h kept) and rolling statistics tables.
- **BCI**: the bundled motor-imagery recording (8 channels at 100 Hz, 24 trials per 150 s)
  tiled to `--bci-hours` of EDF+ (three days by default: a day alone replays in seconds) -> 8-30 Hz band-pass -> CSP+LDA decoder (2 s windows every 0.1 s)
  -> rolling decisions (hourly parts in date/hour partitions, 12 h kept).

Every second the script samples the engine's resident memory (VmRSS), open file descriptors and
the bytes and parts under its output and checkpoint directories; checkpoint durations and sizes
come from the engine's debug log. Release build of `neurostream` (`cargo build --release`).
Writes bench/SOAK_RESULTS.md.
"""
from __future__ import annotations

import argparse
import os
import pathlib
import platform
import re
import shutil
import subprocess
import tempfile
import threading
import time
from benchlib import results_path  # noqa: E402

ROOT = pathlib.Path(__file__).resolve().parent.parent
BIN = ROOT / "target" / "release" / "neurostream"
SAE = ROOT / "examples" / "data" / "sample_sae"
MI_EDF = ROOT / "examples" / "data" / "eeg" / "mi_test.edf"
MI_MODEL = ROOT / "examples" / "data" / "bci" / "mi_model.json"

LLM = """
[pipeline]
name = "soak-llm"

[sources.acts]
kind = "synthetic_activations"
d_model = 64
features = 256
active = 8
tokens = {tokens}
seq_len = 128
chunk = 1000
noise = 0.05
seed = 42
tokens_per_s = {rate}
start_time_s = 1796256000.0

[operators.sae]
kind = "sae_encode"
input = "acts"
sae = "{sae}"

[operators.stats]
kind = "feature_stats"
input = "sae"
window = 3600
step = 600
window_unit = "s"
top_k = 5

[sinks.features]
kind = "parquet"
input = "sae"
path = "out/features"
roll_every = "10m"
partition_by = ["date", "hour"]
keep = "6h"

[sinks.stats]
kind = "parquet"
input = "stats"
path = "out/stats"
roll_every = "1h"
partition_by = ["date"]
keep = "12h"
"""

BCI = """
[pipeline]
name = "soak-bci"
device = "cpu"

[sources.amp]
kind = "edf"
path = "day.edf"
chunk = 10

[operators.band]
kind = "butterworth"
input = "amp"
btype = "bandpass"
order = 4
cutoff = [8.0, 30.0]

[operators.decoder]
kind = "decode"
input = "band"
model = "{model}"
window_s = 2.0
step_s = 0.1
label_from_markers = true

[sinks.decisions]
kind = "parquet"
input = "decoder"
path = "out/decisions"
markers = true
roll_every = "1h"
partition_by = ["date", "hour"]
keep = "12h"
"""


def tile_edf(hours: float, out: pathlib.Path) -> None:
    """Writes `hours` of the bundled motor-imagery recording, tiled, as EDF+ (with its trials)."""
    import numpy as np
    import pyedflib

    r = pyedflib.EdfReader(str(MI_EDF))
    n = r.signals_in_file
    headers = r.getSignalHeaders()
    data = [r.readSignal(i) for i in range(n)]
    onsets, durations, texts = r.readAnnotations()
    length = r.getFileDuration()
    r.close()
    reps = int(np.ceil(hours * 3600 / length))
    w = pyedflib.EdfWriter(str(out), n, file_type=pyedflib.FILETYPE_EDFPLUS)
    w.setSignalHeaders(headers)
    w.writeSamples([np.tile(d, reps) for d in data])
    for k in range(reps):
        for o, d, t in zip(onsets, durations, texts):
            w.writeAnnotation(k * length + o, d if d > 0 else -1, t)
    w.close()


def tree_size(path: pathlib.Path) -> tuple[int, int]:
    """Bytes and Parquet parts under `path`."""
    total = parts = 0
    for dirpath, _, files in os.walk(path):
        for f in files:
            try:
                total += os.path.getsize(os.path.join(dirpath, f))
            except FileNotFoundError:
                continue
            parts += f.endswith(".parquet")
    return total, parts


def proc_sample(pid: int) -> tuple[int, int]:
    """Resident memory (bytes) and open file descriptors of `pid`."""
    rss = 0
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                rss = int(line.split()[1]) * 1024
    fds = len(os.listdir(f"/proc/{pid}/fd"))
    return rss, fds


def soak(name: str, work: pathlib.Path, every: float) -> dict:
    shutil.rmtree(work / "out", ignore_errors=True)
    shutil.rmtree(work / "ck", ignore_errors=True)
    args = [str(BIN), "run", "p.toml", "--quiet", "--checkpoint-dir", "ck", "--checkpoint-every", str(every)]
    env = dict(os.environ, RUST_LOG="neurostream_engine=debug")
    t0 = time.perf_counter()
    proc = subprocess.Popen(args, cwd=work, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    checkpoints: list[tuple[float, int, float]] = []
    tail: list[str] = []

    def read_log() -> None:
        for line in proc.stderr:
            m = re.search(r"checkpoint \d+ written \((\d+) bytes, ([\d.]+) ms", line)
            if m:
                checkpoints.append((time.perf_counter() - t0, int(m.group(1)), float(m.group(2))))
            else:
                tail.append(line)
                del tail[:-40]

    reader = threading.Thread(target=read_log, daemon=True)
    reader.start()
    samples = []
    while proc.poll() is None:
        try:
            rss, fds = proc_sample(proc.pid)
        except (FileNotFoundError, ProcessLookupError):
            break
        if rss == 0:  # exiting: an unreaped process has no memory line
            break
        out_bytes, parts = tree_size(work / "out")
        ck_bytes, _ = tree_size(work / "ck")
        samples.append((time.perf_counter() - t0, rss, fds, out_bytes, parts, ck_bytes))
        time.sleep(1.0)
    stdout = proc.stdout.read()
    proc.wait()
    reader.join(timeout=5)
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        raise SystemExit(f"{name}: run failed:\n{''.join(tail)[-3000:]}")
    out_bytes, parts = tree_size(work / "out")
    return {
        "name": name,
        "wall": wall,
        "samples": samples,
        "checkpoints": checkpoints,
        "final_out": (out_bytes, parts),
        "summary": [l for l in stdout.splitlines() if "wrote" in l],
    }


def mib(b: float) -> str:
    return f"{b / 2**20:.1f}"


def report(r: dict, traffic: str, rows: int, seconds: float) -> list[str]:
    s = r["samples"]
    # The first seconds load the model and fill buffers: "start" is the first sample past 10 %.
    warm = [x for x in s if x[0] >= 0.1 * r["wall"]] or s
    rss = [x[1] for x in s]
    fds = [x[2] for x in s]
    outb = [x[3] for x in s]
    cks = r["checkpoints"]
    lines = [
        f"### {r['name']}",
        "",
        f"{traffic}: {rows:,} rows in {r['wall']:.0f} s ({rows / r['wall']:,.0f} rows/s, "
        f"{seconds / r['wall']:,.0f}x real time), {len(cks)} checkpoints.",
        "",
        "| measure | start (10 % in) | end | max |",
        "| --- | ---: | ---: | ---: |",
        f"| resident memory MiB | {mib(warm[0][1])} | {mib(s[-1][1])} | {mib(max(rss))} |",
        f"| open file descriptors | {warm[0][2]} | {s[-1][2]} | {max(fds)} |",
        f"| output MiB (parts) | {mib(warm[0][3])} ({warm[0][4]}) | {mib(s[-1][3])} ({s[-1][4]}) | {mib(max(outb))} |",
        f"| checkpoint dir MiB | {mib(warm[0][5])} | {mib(s[-1][5])} | {mib(max(x[5] for x in s))} |",
    ]
    if cks:
        ms = sorted(c[2] for c in cks)
        lines += [
            f"| checkpoint ms (p50 / max) | {ms[len(ms) // 2]:.0f} | | {ms[-1]:.0f} |",
            f"| checkpoint KiB (first / last / max) | {cks[0][1] / 1024:.0f} | {cks[-1][1] / 1024:.0f} | {max(c[1] for c in cks) / 1024:.0f} |",
        ]
    lines += ["", "Over time (every tenth of the run):", "",
              "| elapsed s | RSS MiB | fds | output MiB | parts | last checkpoint KiB | last checkpoint ms |",
              "| ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]
    for k in range(1, 11):
        t = r["wall"] * k / 10
        x = min(s, key=lambda v: abs(v[0] - t))
        before = [c for c in cks if c[0] <= x[0]]
        c = before[-1] if before else None
        lines.append(
            f"| {x[0]:.0f} | {mib(x[1])} | {x[2]} | {mib(x[3])} | {x[4]} | "
            + (f"{c[1] / 1024:.0f} | {c[2]:.0f} |" if c else "– | – |")
        )
    lines += ["", "Engine summary:", "", "```text", *r["summary"], "```", ""]
    return lines


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--hours", type=float, default=24.0)
    ap.add_argument("--tokens-per-s", type=float, default=1000.0)
    ap.add_argument("--bci-hours", type=float, default=72.0)
    ap.add_argument("--checkpoint-every", type=float, default=10.0)
    ap.add_argument("--only", choices=["llm", "bci"])
    a = ap.parse_args()
    if not BIN.exists():
        raise SystemExit("build first: cargo build --release")
    work = pathlib.Path(tempfile.mkdtemp(prefix="ns-soak-"))
    lines = [
        "# Soak: a day of traffic with rolling outputs and checkpoints",
        "",
        f"Command: `python bench/soak.py --hours {a.hours:g} --tokens-per-s {a.tokens_per_s:g} --bci-hours {a.bci_hours:g} "
        f"--checkpoint-every {a.checkpoint_every:g}` (release build, 1 worker; "
        f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores). Samples every second: "
        "resident memory, open file descriptors, bytes and parts under the outputs and the checkpoint "
        "directory; checkpoint durations and sizes from the engine's debug log. Retention (`keep`) bounds "
        "the outputs, so they should level off once the oldest parts start to go.",
        "",
    ]
    if a.only in (None, "llm"):
        tokens = int(a.hours * 3600 * a.tokens_per_s)
        (work / "p.toml").write_text(LLM.format(tokens=tokens, rate=a.tokens_per_s, sae=SAE))
        r = soak("LLM monitoring", work, a.checkpoint_every)
        lines += report(r, f"{a.hours:g} h at {a.tokens_per_s:g} tokens/s", tokens, a.hours * 3600)
        print("\n".join(lines), flush=True)
    if a.only in (None, "bci"):
        tile_edf(a.bci_hours, work / "day.edf")
        (work / "p.toml").write_text(BCI.format(model=MI_MODEL))
        r = soak("BCI decoding", work, a.checkpoint_every)
        samples = int(a.bci_hours * 3600 * 100)
        lines += report(r, f"{a.bci_hours:g} h of 8-channel EEG at 100 Hz", samples, a.bci_hours * 3600)
        print("\n".join(lines[-30:]), flush=True)
    pathlib.Path(results_path("SOAK_RESULTS.md")).write_text("\n".join(lines) + "\n")
    shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
