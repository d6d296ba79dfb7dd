"""Benchmark: EEG band power into Parquet, end to end, neurostream against SciPy + pyarrow.

  python bench/bandpower_parquet.py [--channels 64] [--seconds 2400] [--repeats 3]

Input: a recording of `channels` EEG channels at 250 Hz for `seconds` s (the engine's seeded
`synthetic_eeg`, written once to zstd Parquet in the signal layout). Both sides read it, cut
2 s windows every 0.5 s, take each channel's Welch PSD (Hann, nperseg 256, noverlap 128, constant
detrend, density scaling) and sum it over five bands (delta, theta, alpha, beta, gamma), and
write one row per window (`CH:BAND` columns, float32) to zstd level 3 Parquet.

- neurostream: `parquet` source -> `bandpower` -> `parquet` sink (`neurostream run`, release
  build, default workers), wall clock from process start to output committed.
- SciPy + pyarrow: what a user would write: `pq.read_table`, the channels as one float32
  channel-major array, every window at once through `sliding_window_view` into one
  `scipy.signal.welch` call, band sums with masks, `pq.write_table`.

Best of `repeats` each, alternated. The outputs are compared column by column (max relative
error against each column's largest value). Writes bench/BANDPOWER_RESULTS.md.
"""
import argparse
import os
import subprocess
import sys
import tempfile
import time

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import scipy
from scipy import signal

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from benchlib import cargo_build, cpu_name, results_path  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BIN = os.path.join(ROOT, "target", "release", "neurostream")
FS = 250.0
WINDOW, STEP, NPERSEG, NOVERLAP = 500, 125, 256, 128
BANDS = [("delta", 0.5, 4.0), ("theta", 4.0, 8.0), ("alpha", 8.0, 12.0), ("beta", 13.0, 30.0), ("gamma", 30.0, 45.0)]


def run(toml: str, cwd: str) -> None:
    subprocess.run([BIN, "run", toml], cwd=cwd, check=True, capture_output=True, text=True)


def make_input(work: str, channels: int, seconds: float) -> str:
    with open(os.path.join(work, "make.toml"), "w") as f:
        f.write(f"""
[sources.eeg]
kind = "synthetic_eeg"
channels = {channels}
sample_rate = {FS}
seconds = {seconds}
chunk = 2500
seed = 7

[sinks.out]
kind = "parquet"
input = "eeg"
path = "eeg.parquet"
""")
    run("make.toml", work)
    return os.path.join(work, "eeg.parquet")


def pipeline(work: str) -> str:
    bands = ", ".join(f'["{n}", {lo}, {hi}]' for n, lo, hi in BANDS)
    with open(os.path.join(work, "bandpower.toml"), "w") as f:
        f.write(f"""
[sources.eeg]
kind = "parquet"
path = "eeg.parquet"

[operators.power]
kind = "bandpower"
input = "eeg"
window_s = {WINDOW / FS}
step_s = {STEP / FS}
nperseg = {NPERSEG}
noverlap = {NOVERLAP}
bands = [{bands}]

[sinks.out]
kind = "parquet"
input = "power"
path = "ns_power.parquet"
""")
    return "bandpower.toml"


def scipy_bandpower(src: str, dst: str) -> None:
    table = pq.read_table(src)
    names = [n for n in table.column_names if n not in ("time", "sample")]
    x = np.stack([table.column(n).to_numpy() for n in names])  # channels x samples, float32
    windows = np.lib.stride_tricks.sliding_window_view(x, WINDOW, axis=1)[:, ::STEP]
    freqs, psd = signal.welch(windows, fs=FS, nperseg=NPERSEG, noverlap=NOVERLAP, axis=-1)
    df = freqs[1] - freqs[0]
    columns = {"sample": pa.array(np.arange(windows.shape[1]) * STEP + WINDOW - 1, pa.int64())}
    powers = {b: psd[..., (freqs >= lo) & (freqs < hi)].sum(axis=-1) * df for b, lo, hi in BANDS}
    for c, name in enumerate(names):
        for b, _, _ in BANDS:
            columns[f"{name}:{b}"] = pa.array(powers[b][c].astype(np.float32))
    pq.write_table(pa.table(columns), dst, compression="zstd", compression_level=3)


def timed(f) -> float:
    t0 = time.perf_counter()
    f()
    return time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--channels", type=int, default=64)
    ap.add_argument("--seconds", type=float, default=2400.0)
    ap.add_argument("--repeats", type=int, default=3)
    a = ap.parse_args()
    cargo_build("--bin", "neurostream")
    work = tempfile.mkdtemp(prefix="ns-bandpower-")
    src = make_input(work, a.channels, a.seconds)
    toml = pipeline(work)
    ours, theirs = [], []
    for _ in range(a.repeats):
        ours.append(timed(lambda: run(toml, work)))
        theirs.append(timed(lambda: scipy_bandpower(src, os.path.join(work, "py_power.parquet"))))
        print(f"neurostream {ours[-1]:.2f} s, scipy + pyarrow {theirs[-1]:.2f} s", flush=True)
    got = pq.read_table(os.path.join(work, "ns_power.parquet"))
    want = pq.read_table(os.path.join(work, "py_power.parquet"))
    assert got.num_rows == want.num_rows, (got.num_rows, want.num_rows)
    assert np.array_equal(got.column("sample").to_numpy(), want.column("sample").to_numpy())
    err = 0.0
    for name in want.column_names[1:]:
        g, w = got.column(name).to_numpy().astype(np.float64), want.column(name).to_numpy().astype(np.float64)
        err = max(err, float(np.max(np.abs(g - w)) / max(np.max(np.abs(w)), 1e-30)))
    assert err < 1e-4, f"outputs differ: max relative error {err:.2e}"
    rows, windows, cols = a.channels * a.seconds * FS, got.num_rows, len(want.column_names) - 1
    best_ours, best_theirs = min(ours), min(theirs)
    cpu = cpu_name()
    lines = [
        "# Benchmark: EEG band power into Parquet",
        "",
        f"Command: `python bench/bandpower_parquet.py --channels {a.channels} --seconds {a.seconds:g} "
        f"--repeats {a.repeats}` (builds the release binary).",
        "",
        f"Machine: {cpu}, {os.cpu_count()} cores; numpy {np.__version__}, SciPy {scipy.__version__}, pyarrow "
        f"{pa.__version__}; neurostream release build, default target (RUSTFLAGS="
        f"{os.environ.get('RUSTFLAGS', '(none)')!r}); {time.strftime('%Y-%m-%d')}.",
        "",
        f"{a.channels} channels x {a.seconds:g} s at {FS:g} Hz ({rows / 1e6:.1f} M channel-samples, float32, zstd "
        f"Parquet) -> 2 s windows every 0.5 s -> Welch (nperseg {NPERSEG}, noverlap {NOVERLAP}) -> 5 band sums -> "
        f"{windows} rows x {cols} float32 columns, zstd level 3 Parquet. neurostream: `parquet` -> `bandpower` -> "
        "`parquet` (`neurostream run`, process start to output committed). SciPy + pyarrow: `read_table`, one "
        "`scipy.signal.welch` over every window (`sliding_window_view`, float32 channel-major), band masks, "
        f"`write_table`. Best of {a.repeats}, alternated. Outputs agree to {err:.1e} (max relative error).",
        "",
        "| | wall s (best) | all runs s | channel-samples/s | speed-up |",
        "| --- | ---: | --- | ---: | ---: |",
        f"| neurostream | {best_ours:.2f} | {', '.join(f'{t:.2f}' for t in ours)} | {rows / best_ours / 1e6:.0f} M | "
        f"{best_theirs / best_ours:.2f}x |",
        f"| SciPy + pyarrow | {best_theirs:.2f} | {', '.join(f'{t:.2f}' for t in theirs)} | "
        f"{rows / best_theirs / 1e6:.0f} M | 1.00x |",
    ]
    with open(results_path("BANDPOWER_RESULTS.md"), "w") as f:
        f.write("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
