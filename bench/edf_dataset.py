"""Benchmark: band power of a dataset of EDF recordings, neurostream against MNE + SciPy.

  python bench/edf_dataset.py [--recordings 8] [--channels 64] [--seconds 300] [--repeats 3]

Input: `recordings` EDF+ files of `channels` EEG channels at 256 Hz for `seconds` s each (the
engine's seeded `synthetic_eeg`, a different seed per file, written by the `edf` sink). Each
recording on its own: a causal 4th-order Butterworth band-pass 1-40 Hz from rest, 2 s windows
every 0.5 s, each channel's Welch PSD (Hann, nperseg 256, noverlap 128) summed over five bands,
one Parquet file (zstd level 3) of `CH:BAND` float32 columns per recording.

- neurostream: one run, `edf` source with `path = "recs/*.edf"` (each file a stream, the files
  split over the workers) -> `butterworth` -> `bandpower` -> `parquet` with
  `partition_by = ["stream"]`; default workers (one per core) and 1 worker.
- MNE + SciPy, what a user would write: per file `mne.io.read_raw_edf(preload=True)`,
  `get_data()` in µV as float32, `scipy.signal.sosfilt` with `butter(4, [1, 40], output="sos")`,
  every window through `sliding_window_view` into one `scipy.signal.welch`, band masks,
  `pq.write_table`; in a loop, and over a process pool of one process per core
  (`concurrent.futures.ProcessPoolExecutor`), as a user would spread files over cores.

Best of `repeats` each, alternated. Every recording's output is compared column by column
(max relative error against each column's largest value). Writes bench/EDF_DATASET_RESULTS.md
(or $NEUROSTREAM_BENCH_OUT).
"""
import argparse
import concurrent.futures
import glob
import os
import shutil
import subprocess
import sys
import tempfile
import time

import mne
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import scipy
from scipy import signal

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from benchlib import cargo_build, cpu_name, results_path  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BIN = os.path.join(ROOT, "target", "release", "neurostream")
FS = 256.0
WINDOW, STEP, NPERSEG, NOVERLAP = 512, 128, 256, 128
BANDS = [("delta", 1.0, 4.0), ("theta", 4.0, 8.0), ("alpha", 8.0, 12.0), ("beta", 13.0, 30.0), ("gamma", 30.0, 40.0)]


def make_recordings(work: str, recordings: int, channels: int, seconds: float) -> list:
    parts = []
    for i in range(recordings):
        parts.append(f"""
[sources.eeg{i}]
kind = "synthetic_eeg"
channels = {channels}
sample_rate = {FS}
seconds = {seconds}
chunk = 2560
seed = {i + 1}
marker_interval = 4.0

[sinks.edf{i}]
kind = "edf"
input = "eeg{i}"
path = "recs/rec-{i + 1:02d}.edf"
""")
    os.makedirs(os.path.join(work, "recs"), exist_ok=True)
    with open(os.path.join(work, "make.toml"), "w") as f:
        f.write("".join(parts))
    subprocess.run([BIN, "run", "make.toml", "--quiet"], cwd=work, check=True, capture_output=True)
    return sorted(glob.glob(os.path.join(work, "recs", "*.edf")))


def pipeline(work: str) -> str:
    bands = ", ".join(f'["{n}", {lo}, {hi}]' for n, lo, hi in BANDS)
    with open(os.path.join(work, "dataset.toml"), "w") as f:
        f.write(f"""
[sources.eeg]
kind = "edf"
path = "recs/*.edf"
chunk = 2560

[operators.bp]
kind = "butterworth"
input = "eeg"
btype = "bandpass"
order = 4
cutoff = [1.0, 40.0]

[operators.power]
kind = "bandpower"
input = "bp"
window_s = {WINDOW / FS}
step_s = {STEP / FS}
nperseg = {NPERSEG}
noverlap = {NOVERLAP}
bands = [{bands}]

[sinks.out]
kind = "parquet"
input = "power"
path = "ns_power"
partition_by = ["stream"]
compression = "zstd"
compression_level = 3
""")
    return "dataset.toml"


def mne_one(args) -> None:
    src, dst = args
    raw = mne.io.read_raw_edf(src, preload=True, verbose="error")
    x = (raw.get_data() * 1e6).astype(np.float32)  # channels x samples, µV
    sos = signal.butter(4, [1.0, 40.0], btype="bandpass", output="sos", fs=FS)
    x = signal.sosfilt(sos, x, axis=1).astype(np.float32)
    windows = np.lib.stride_tricks.sliding_window_view(x, WINDOW, axis=1)[:, ::STEP]
    freqs, psd = signal.welch(windows, fs=FS, nperseg=NPERSEG, noverlap=NOVERLAP, axis=-1)
    df = freqs[1] - freqs[0]
    columns = {"sample": pa.array(np.arange(windows.shape[1]) * STEP + WINDOW - 1, pa.int64())}
    powers = {b: psd[..., (freqs >= lo) & (freqs < hi)].sum(axis=-1) * df for b, lo, hi in BANDS}
    for c, name in enumerate(raw.ch_names):
        for b, _, _ in BANDS:
            columns[f"{name}:{b}"] = pa.array(powers[b][c].astype(np.float32))
    pq.write_table(pa.table(columns), dst, compression="zstd", compression_level=3)


def mne_dataset(files: list, out: str, processes: int) -> None:
    os.makedirs(out, exist_ok=True)
    jobs = [(f, os.path.join(out, os.path.basename(f).replace(".edf", ".parquet"))) for f in files]
    if processes == 1:
        for j in jobs:
            mne_one(j)
    else:
        with concurrent.futures.ProcessPoolExecutor(processes) as pool:
            list(pool.map(mne_one, jobs))


def timed(f) -> float:
    t0 = time.perf_counter()
    f()
    return time.perf_counter() - t0


def neurostream(work: str, toml: str, workers: list) -> None:
    shutil.rmtree(os.path.join(work, "ns_power"), ignore_errors=True)
    subprocess.run([BIN, "run", toml, "--quiet", *workers], cwd=work, check=True, capture_output=True, text=True)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--recordings", type=int, default=8)
    ap.add_argument("--channels", type=int, default=64)
    ap.add_argument("--seconds", type=float, default=300.0)
    ap.add_argument("--repeats", type=int, default=3)
    a = ap.parse_args()
    cores = os.cpu_count() or 1
    cargo_build("--bin", "neurostream")
    work = tempfile.mkdtemp(prefix="ns-edf-dataset-")
    try:
        files = make_recordings(work, a.recordings, a.channels, a.seconds)
        toml = pipeline(work)
        runs = {"ns": [], "ns1": [], "mne": [], "mnep": []}
        for _ in range(a.repeats):
            runs["ns"].append(timed(lambda: neurostream(work, toml, [])))
            runs["mne"].append(timed(lambda: mne_dataset(files, os.path.join(work, "mne_power"), 1)))
            runs["ns1"].append(timed(lambda: neurostream(work, toml, ["-w", "1"])))
            runs["mnep"].append(timed(lambda: mne_dataset(files, os.path.join(work, "mne_power"), cores)))
            print(", ".join(f"{k} {v[-1]:.2f} s" for k, v in runs.items()), flush=True)
        err = 0.0
        for f in files:
            name = os.path.basename(f)[:-4]
            got = pq.read_table(os.path.join(work, "ns_power", f"stream={name}"))
            want = pq.read_table(os.path.join(work, "mne_power", f"{name}.parquet"))
            assert got.num_rows == want.num_rows, (name, got.num_rows, want.num_rows)
            assert np.array_equal(got.column("sample").to_numpy(), want.column("sample").to_numpy()), name
            for col in want.column_names[1:]:
                g = got.column(col).to_numpy().astype(np.float64)
                w = want.column(col).to_numpy().astype(np.float64)
                err = max(err, float(np.max(np.abs(g - w)) / max(np.max(np.abs(w)), 1e-30)))
        assert err < 1e-3, f"outputs differ: max relative error {err:.2e}"
        windows = got.num_rows
    finally:
        shutil.rmtree(work, ignore_errors=True)
    samples = a.recordings * a.channels * a.seconds * FS
    best = {k: min(v) for k, v in runs.items()}
    peer = min(best["mne"], best["mnep"])
    rows = [
        (f"neurostream, {cores} workers (default)", "ns"),
        ("neurostream, 1 worker", "ns1"),
        ("MNE + SciPy, one file after another", "mne"),
        (f"MNE + SciPy, {cores} processes", "mnep"),
    ]
    lines = [
        "# Benchmark: band power of a dataset of EDF recordings",
        "",
        f"Command: `python bench/edf_dataset.py --recordings {a.recordings} --channels {a.channels} "
        f"--seconds {a.seconds:g} --repeats {a.repeats}` (builds the release binary).",
        "",
        f"Machine: {cpu_name()}, {cores} cores; MNE {mne.__version__}, numpy {np.__version__}, SciPy "
        f"{scipy.__version__}, pyarrow {pa.__version__}; neurostream release build, default target (RUSTFLAGS="
        f"{os.environ.get('RUSTFLAGS', '(none)')!r}); {time.strftime('%Y-%m-%d')}.",
        "",
        f"{a.recordings} EDF+ recordings x {a.channels} channels x {a.seconds:g} s at {FS:g} Hz "
        f"({samples / 1e6:.1f} M channel-samples), each on its own: causal Butterworth band-pass (order 4, 1-40 Hz), "
        f"2 s windows every 0.5 s, Welch (nperseg {NPERSEG}, noverlap {NOVERLAP}), 5 band sums, one zstd Parquet "
        f"file per recording ({windows} rows x {a.channels * len(BANDS)} float32 columns each). neurostream: one "
        "run, `edf` source on a glob (each file a stream) -> `butterworth` -> `bandpower` -> `parquet` "
        "(`partition_by = [\"stream\"]`), process start to outputs committed. MNE + SciPy: `read_raw_edf`, "
        "`sosfilt`, one `welch` over every window, `write_table`, per file. "
        f"Best of {a.repeats}, alternated. Outputs agree to {err:.1e} (max relative error).",
        "",
        "| | wall s (best) | all runs s | channel-samples/s | speed-up vs the faster MNE + SciPy |",
        "| --- | ---: | --- | ---: | ---: |",
    ]
    for label, key in rows:
        lines.append(f"| {label} | {best[key]:.2f} | {', '.join(f'{t:.2f}' for t in runs[key])} | "
                     f"{samples / best[key] / 1e6:.0f} M | {peer / best[key]:.2f}x |")
    with open(results_path("EDF_DATASET_RESULTS.md"), "w") as f:
        f.write("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
