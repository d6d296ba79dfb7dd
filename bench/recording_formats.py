"""Benchmark: a recording file to Parquet, neurostream against what a Python user runs.

  python bench/recording_formats.py [--channels 64] [--seconds 600] [--rate 500] [--repeats 3]

Input: `channels` EEG channels at `rate` Hz for `seconds` s (seeded noise plus sinusoids, in µV,
with a marker every 2 s), written once in each format:
- EEGLAB, one file (`.set`, MAT v6, the fields as variables, single samples: EEGLAB's default
  save since 2021), the same as a MAT v7.3 (HDF5) file, as MATLAB saves datasets over 2 GB
  (samples in deflated chunks of 4096; written with h5py in MATLAB's layout by
  tests/python/check_eeglab.py), and two files (`.set` + `.fdt`);
- BrainVision (pybv, IEEE_FLOAT_32);
- CSV (OpenBCI-style text: `, `-separated, 6 decimals, a marker column), alone and as 4 copies
  read through one glob (each file a stream, written to a Parquet directory per stream; Python
  converts the files one after another).

Each is converted to zstd (level 3) Parquet, one float32 column per channel plus the sample
number, by
- neurostream: the format's source -> `parquet` sink (`neurostream run`, release build), wall
  clock from process start to output committed;
- Python: MNE's reader (`read_raw_eeglab` / `read_raw_brainvision`, `preload=True`,
  `get_data()` in µV) or `pandas.read_csv` (C engine), then `pyarrow.parquet.write_table`.

Best of `repeats` each, alternated. The outputs are compared (max error against each channel's
largest value). Writes bench/RECORDING_RESULTS.md.
"""
import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time

import mne
import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.dataset as pads
import pyarrow.parquet as pq
import scipy.io

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from benchlib import cargo_build, cpu_name, results_path  # noqa: E402

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "tests", "python"))
from check_eeglab import savemat73  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BIN = os.path.join(ROOT, "target", "release", "neurostream")
mne.set_log_level("ERROR")


def signals(channels, n, rate):
    rng = np.random.default_rng(3)
    t = np.arange(n) / rate
    x = rng.standard_normal((channels, n)).astype(np.float32) * 5
    x += (20 * np.sin(2 * np.pi * 10 * t)).astype(np.float32)
    return x


def eeglab_fields(x, rate, data):
    channels, n = x.shape
    chanlocs = np.zeros((1, channels), dtype=[("labels", "O"), ("type", "O")])
    for i in range(channels):
        chanlocs[0, i]["labels"] = f"E{i + 1}"
        chanlocs[0, i]["type"] = "EEG"
    onsets = np.arange(rate, n, 2 * rate)
    event = np.zeros((1, len(onsets)), dtype=[("type", "O"), ("latency", "O"), ("duration", "O")])
    for i, s in enumerate(onsets):
        event[0, i]["type"], event[0, i]["latency"], event[0, i]["duration"] = "stim", float(s + 1), 0.0
    return {"setname": "bench", "nbchan": float(channels), "trials": 1.0, "pnts": float(n), "srate": float(rate),
            "xmin": 0.0, "xmax": (n - 1) / rate, "data": data, "chanlocs": chanlocs, "event": event,
            "ref": "common", "icaact": np.zeros((0, 0))}


def write_inputs(work, channels, seconds, rate):
    n = int(seconds * rate)
    x = signals(channels, n, rate)
    scipy.io.savemat(os.path.join(work, "onefile.set"), eeglab_fields(x, rate, x), format="5")
    savemat73(os.path.join(work, "v73.set"), eeglab_fields(x, rate, x))
    x.T.astype("<f4").tofile(os.path.join(work, "twofiles.fdt"))
    scipy.io.savemat(os.path.join(work, "twofiles.set"), eeglab_fields(x, rate, "twofiles.fdt"), format="5")
    import pybv
    pybv.write_brainvision(data=x.astype(np.float64) * 1e-6, sfreq=rate, ch_names=[f"E{i + 1}" for i in range(channels)],
                           fname_base="rec", folder_out=work, fmt="binary_float32", unit="µV", overwrite=True)
    marker = np.zeros(n)
    marker[int(rate)::int(2 * rate)] = 1
    with open(os.path.join(work, "rec.csv"), "w") as f:
        f.write(", ".join(["Sample Index"] + [f"E{i + 1}" for i in range(channels)] + ["Marker"]) + "\n")
        block = 20000
        for s in range(0, n, block):
            part = np.column_stack([np.arange(s, min(n, s + block)), x[:, s:s + block].T, marker[s:s + block]])
            np.savetxt(f, part, fmt=["%d"] + ["%.6f"] * channels + ["%.1f"], delimiter=", ")
    os.makedirs(os.path.join(work, "set"), exist_ok=True)
    for i in range(GLOB_FILES):
        shutil.copy(os.path.join(work, "rec.csv"), os.path.join(work, "set", f"rec{i}.csv"))
    return x


GLOB_FILES = 4
GLOB_CASE = f"CSV, {GLOB_FILES} files in a glob (a stream each)"


CASES = {
    # name: (neurostream source keys, python reader)
    "EEGLAB, one file (.set, MAT v6)": ('kind = "eeglab"\npath = "onefile.set"',
                                        lambda w: mne.io.read_raw_eeglab(os.path.join(w, "onefile.set"), preload=True)),
    "EEGLAB, one file (.set, MAT v7.3 / HDF5, deflated)": (
        'kind = "eeglab"\npath = "v73.set"',
        lambda w: mne.io.read_raw_eeglab(os.path.join(w, "v73.set"), preload=True)),
    "EEGLAB, .set + .fdt": ('kind = "eeglab"\npath = "twofiles.set"',
                            lambda w: mne.io.read_raw_eeglab(os.path.join(w, "twofiles.set"), preload=True)),
    "BrainVision (float32)": ('kind = "brainvision"\npath = "rec.vhdr"',
                              lambda w: mne.io.read_raw_brainvision(os.path.join(w, "rec.vhdr"), preload=True)),
    "CSV (OpenBCI-style text)": (None, None),
    GLOB_CASE: (None, None),
}


def neurostream(work, keys, rate, sink='path = "ns.parquet"'):
    with open(os.path.join(work, "p.toml"), "w") as f:
        f.write(f"[sources.rec]\n{keys}\nchunk = 4096\n\n[sinks.out]\nkind = \"parquet\"\ninput = \"rec\"\n{sink}\n")
    subprocess.run([BIN, "run", "p.toml", "--quiet"], cwd=work, check=True, capture_output=True, text=True)


def python_mne(work, reader):
    raw = reader(work)
    x = raw.get_data() * 1e6
    write(work, raw.ch_names, x)


def python_csv(work, channels, src="rec.csv", out="py.parquet"):
    df = pd.read_csv(os.path.join(work, src), skipinitialspace=True)
    names = [f"E{i + 1}" for i in range(channels)]
    write(work, names, df[names].to_numpy(dtype=np.float32).T, out)


def write(work, names, x, out="py.parquet"):
    cols = {"sample": pa.array(np.arange(x.shape[1], dtype=np.int64))}
    for i, n in enumerate(names):
        cols[n] = pa.array(x[i].astype(np.float32))
    pq.write_table(pa.table(cols), os.path.join(work, out), compression="zstd", compression_level=3)


def compare(work, names, ours="ns.parquet", theirs="py.parquet"):
    got = pads.dataset(os.path.join(work, ours)).to_table().sort_by("sample")
    want = pq.read_table(os.path.join(work, theirs))
    assert got.num_rows == want.num_rows, (got.num_rows, want.num_rows)
    err = 0.0
    for n in names:
        g, w = got.column(n).to_numpy().astype(np.float64), want.column(n).to_numpy().astype(np.float64)
        err = max(err, float(np.abs(g - w).max() / max(np.abs(w).max(), 1e-30)))
    return err


def timed(f):
    t0 = time.perf_counter()
    f()
    return time.perf_counter() - t0


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--channels", type=int, default=64)
    ap.add_argument("--seconds", type=float, default=600.0)
    ap.add_argument("--rate", type=float, default=500.0)
    ap.add_argument("--repeats", type=int, default=3)
    a = ap.parse_args()
    cargo_build("--bin", "neurostream")
    work = tempfile.mkdtemp(prefix="ns-formats-")
    write_inputs(work, a.channels, a.seconds, a.rate)
    names = [f"E{i + 1}" for i in range(a.channels)]
    rows = []
    for case, (keys, reader) in CASES.items():
        sink = 'path = "ns.parquet"'
        if case == GLOB_CASE:
            keys = f'kind = "csv"\npath = "set/*.csv"\nsample_rate = {a.rate}\nchannels = ["E*"]\nmarkers = "Marker"'
            sink = 'path = "ns_set"\npartition_by = ["stream"]'
            peer = lambda: [python_csv(work, a.channels, f"set/rec{i}.csv", f"py{i}.parquet")  # noqa: E731
                            for i in range(GLOB_FILES)]
            peer_name = "pandas.read_csv + pyarrow, per file"
        elif keys is None:
            keys = f'kind = "csv"\npath = "rec.csv"\nsample_rate = {a.rate}\nchannels = ["E*"]\nmarkers = "Marker"'
            peer = lambda: python_csv(work, a.channels)  # noqa: E731
            peer_name = "pandas.read_csv + pyarrow"
        else:
            peer = lambda r=reader: python_mne(work, r)  # noqa: E731
            peer_name = "MNE + pyarrow"
        ours, theirs = [], []
        for _ in range(a.repeats):
            shutil.rmtree(os.path.join(work, "ns_set"), ignore_errors=True)
            ours.append(timed(lambda k=keys, s=sink: neurostream(work, k, a.rate, s)))
            theirs.append(timed(peer))
            print(f"{case}: neurostream {ours[-1]:.2f} s, {peer_name} {theirs[-1]:.2f} s", flush=True)
        if case == GLOB_CASE:
            err = max(compare(work, names, f"ns_set/stream=rec{i}", f"py{i}.parquet") for i in range(GLOB_FILES))
        else:
            err = compare(work, names)
        assert err < 1e-5, f"{case}: outputs differ by {err:.2e}"
        rows.append((case, min(ours), peer_name, min(theirs), err))
    samples = a.channels * a.seconds * a.rate
    lines = [
        "# Benchmark: a recording file to Parquet",
        "",
        f"Command: `python bench/recording_formats.py --channels {a.channels} --seconds {a.seconds:g} --rate {a.rate:g} "
        f"--repeats {a.repeats}` (release build, default target; {cpu_name()}, {os.cpu_count()} cores; "
        f"MNE {mne.__version__}, pandas {pd.__version__}, pyarrow {pa.__version__}).",
        "",
        f"{a.channels} channels x {a.seconds:g} s at {a.rate:g} Hz ({samples / 1e6:.1f} M channel-samples, float32 in µV, "
        "a marker every 2 s), converted to zstd level 3 Parquet (a float32 column per channel). neurostream: the "
        "format's source -> `parquet` sink (`neurostream run`, process start to output committed). Python: MNE's reader "
        "(`preload=True`, `get_data()`) or `pandas.read_csv`, then `pyarrow.parquet.write_table`. Best of "
        f"{a.repeats}, alternated; outputs agree to the error shown (max of each channel's relative error). "
        f"The glob row: {GLOB_FILES} copies of the CSV file through one `path` glob (each a stream, a Parquet "
        "directory per stream with `partition_by = [\"stream\"]`), against pandas converting the files one after another.",
        "",
        "| format | neurostream s | M samples/s | peer | peer s | ratio | max error |",
        "| --- | ---: | ---: | --- | ---: | ---: | ---: |",
    ]
    for case, ours, peer_name, theirs, err in rows:
        n = samples * (GLOB_FILES if case == GLOB_CASE else 1)
        lines.append(f"| {case} | {ours:.2f} | {n / ours / 1e6:.1f} | {peer_name} | {theirs:.2f} | "
                     f"{theirs / ours:.2f}x | {err:.1e} |")
    with open(results_path("RECORDING_RESULTS.md"), "w") as f:
        f.write("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
