"""Delimited-text recordings as devices export them, and neurostream's reading of them checked
against pandas.read_csv.

  check_csv.py write DIR     writes DIR/openbci.txt (OpenBCI GUI v5 layout: `%` header lines with
      the sample rate, `, `-separated columns: Sample Index, 4 EXG channels, 3 accelerometer
      channels, Timestamp, a Marker Channel with a few non-zero codes, Timestamp (Formatted))
      and DIR/semicolon.csv (`;`-separated, a `time` column, two channels in mV, quoted header
      names, a blank line) and DIR/brainflow.csv (BrainFlow's `DataFilter.write_file` of a Cyton:
      tab-separated, no header row, 24 columns: package number, 8 EXG, 3 accelerometer, 7 other,
      3 analog, a Unix timestamp, a marker channel) and DIR/mindmonitor.txt (Muse via Mind
      Monitor: a datetime TimeStamp, the RAW_ channels, marker rows in `Elements` with every
      other cell empty, one of them after the last sample) and DIR/german.csv (`;`-separated,
      decimal commas, a text marker column) and DIR/emotiv.csv (EmotivPRO: a first line of
      `key:value` pairs with the rate, motion rows interleaved with the EEG rows) and prints
      their names
  check_csv.py check FILE OUT.parquet COLUMNS SCALE [MARKERS [RATE]]
      OUT (neurostream's signal layout) holds pandas' values of COLUMNS (comma-separated names)
      times SCALE (the unit factor to µV), every row (tolerance 1e-6 of each column's largest
      magnitude, ours being float32), and, with MARKERS, a marker on each row whose MARKERS cell
      is not 0, labelled with the cell as written (without a header row, columns are named by
      position from 0); a row with none of COLUMNS' values is not a sample, its marker is on
      the next sample (the last at the end); with RATE, the rows' times are sample / RATE
"""
import os
import sys

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
from signal_table import channels_equal, markers


def write(out):
    rng = np.random.default_rng(7)
    n, rate = 1000, 250
    exg = rng.standard_normal((n, 4)) * 30
    accel = rng.standard_normal((n, 3)) * 0.01
    stamps = 1700000000.0 + np.arange(n) / rate
    marker = np.zeros(n)
    marker[[100, 400, 401, 900]] = [1, 2, 2, 3]
    lines = [
        "%OpenBCI Raw EXG Data",
        "%Number of channels = 4",
        "%Sample Rate = 250 Hz",
        "%Board = OpenBCI_GUI$BoardGanglionBLE",
    ]
    names = (["Sample Index"] + [f"EXG Channel {i}" for i in range(4)] + [f"Accel Channel {i}" for i in range(3)]
             + ["Timestamp", "Marker Channel", "Timestamp (Formatted)"])
    lines.append(", ".join(names))
    for i in range(n):
        cells = ([f"{i % 256:.1f}"] + [f"{v:.6f}" for v in exg[i]] + [f"{v:.3f}" for v in accel[i]]
                 + [f"{stamps[i]:.6f}", f"{marker[i]:.1f}", "2023-11-14 22:13:20.000"])
        lines.append(", ".join(cells))
    open(os.path.join(out, "openbci.txt"), "w").write("\n".join(lines) + "\n")

    x = rng.standard_normal((500, 2)) * 0.05
    lines = ['"time";"Fp1 (mV)";"Fp2 (mV)"']
    for i in range(500):
        lines.append(f"{i / 500:.4f};{x[i, 0]:.6f};{x[i, 1]:.6f}")
        if i == 250:
            lines.append("")
    open(os.path.join(out, "semicolon.csv"), "w").write("\r\n".join(lines) + "\r\n")

    n = 750
    rows = np.zeros((n, 24))
    rows[:, 0] = np.arange(n) % 256
    rows[:, 1:9] = rng.standard_normal((n, 8)) * 40
    rows[:, 9:12] = rng.standard_normal((n, 3)) * 0.02
    rows[:, 19:22] = rng.integers(0, 1024, (n, 3))
    rows[:, 22] = 1700000000.0 + np.arange(n) / 250
    rows[[60, 300, 301], 23] = [1, 2, 7]
    with open(os.path.join(out, "brainflow.csv"), "w") as f:
        for r in rows:
            f.write("\t".join(f"{v:.6f}" for v in r) + "\n")

    # Muse via Mind Monitor: a datetime time stamp, band powers, the raw channels, and `Elements`
    # rows (blinks, the app's marker buttons) with every other cell empty.
    raw = rng.standard_normal((600, 4)) * 20 + 800
    lines = ["TimeStamp,Delta_TP9,RAW_TP9,RAW_AF7,RAW_AF8,RAW_TP10,AUX_RIGHT,HeadBandOn,Battery,Elements"]
    elements = {0: "/muse/event/connected Muse-1234", 100: "/muse/elements/blink", 250: "/Marker/1",
                251: "/Marker/2", 600: "/muse/elements/jaw_clench"}
    for i in range(601):
        stamp = f"2023-11-14 22:13:{20 + i // 256:02d}.{(i % 256) * 1000 // 256:03d}"
        if i in elements:
            lines.append(f"{stamp},,,,,,,,,{elements[i]}")
        if i < 600:
            lines.append(f"{stamp},0.5,{raw[i, 0]:.3f},{raw[i, 1]:.3f},{raw[i, 2]:.3f},{raw[i, 3]:.3f},0.0,1.0,80,")
    open(os.path.join(out, "mindmonitor.txt"), "w").write("\n".join(lines) + "\n")

    # A spreadsheet saved in a German locale: `;` between cells, `,` before the decimals.
    x = rng.standard_normal((400, 2)) * 12.5
    lines = ["Zeit;C3;C4;Ereignis"]
    for i in range(400):
        event = "S  1" if i % 90 == 7 else ("0" if i % 2 else "")
        lines.append(f"{i / 200:.3f};{x[i, 0]:.5f};{x[i, 1]:.5f};{event}".replace(".", ","))
    open(os.path.join(out, "german.csv"), "w").write("\n".join(lines) + "\n")

    # EmotivPRO: a first line of `key:value` pairs with the rate, then the header row; motion
    # rows (every 4th time stamp) interleaved with the EEG rows, the EEG cells empty there.
    eeg = rng.standard_normal((512, 5)) * 15 + 4200
    lines = ["title:bench, start timestamp:1623658701.491566, stop timestamp:1623658705.491566, headset type:INSIGHT, "
             "headset serial:7AEC4253, headset firmware:931, channels:13, sampling rate:128, samples:640, version:2.1,",
             "Timestamp,EEG.Counter,EEG.Interpolated,EEG.AF3,EEG.T7,EEG.Pz,EEG.T8,EEG.AF4,MOT.Q0,MOT.AccX,"
             "MarkerIndex,MarkerType,MarkerValueInt"]
    for i in range(512):
        stamp = 1623658701.491566 + i / 128
        marker = {40: "1,1,22", 300: "2,1,23"}.get(i, ",,")
        lines.append(f"{stamp:.6f},{i % 128},0," + ",".join(f"{v:.6f}" for v in eeg[i]) + f",,,{marker}")
        if i % 4 == 0:
            lines.append(f"{stamp:.6f},,,,,,,,{0.5 + i / 1e4:.4f},{-0.1:.4f},,,")
    open(os.path.join(out, "emotiv.csv"), "w").write("\r\n".join(lines) + "\r\n")
    # openbci.txt.gz: the OpenBCI export gzip-compressed (pandas reads it by its extension).
    import gzip
    with open(os.path.join(out, "openbci.txt"), "rb") as f, gzip.open(os.path.join(out, "openbci.txt.gz"), "wb") as z:
        z.write(f.read())
    print("openbci.txt semicolon.csv brainflow.csv mindmonitor.txt german.csv emotiv.csv openbci.txt.gz")


def is_marker(cell):
    """A marker cell: not empty, and not a number equal to 0."""
    if cell == "":
        return False
    try:
        return float(cell) != 0
    except ValueError:
        return True


def check(path, out, columns, scale, marker_column=None, rate=None):
    if os.path.basename(path).startswith("brainflow"):
        options = dict(sep="\t", header=None)
    elif os.path.basename(path).startswith("german"):
        options = dict(sep=";", decimal=",")
    elif os.path.basename(path).startswith("emotiv"):
        options = dict(skiprows=1)
    else:
        options = dict(comment="%", sep=";" if path.endswith(".csv") else ",", skipinitialspace=True)
    want = pd.read_csv(path, **options)
    text = pd.read_csv(path, dtype=str, **options)
    want.columns = text.columns = [str(c) for c in want.columns]
    t = pq.read_table(out)
    columns = columns.split(",")
    got_cols = [c for c in t.column_names if c not in ("time", "sample", "marker")]
    assert got_cols == columns, (got_cols, columns)
    # A row with none of the columns' values is not a sample (a marker row, or with
    # `skip_empty_rows` another stream's row): its marker goes on the next sample (the last one
    # at the end).
    labels = text[marker_column].fillna("").str.strip() if marker_column else pd.Series([""] * len(want))
    marked = labels.map(is_marker).to_numpy(dtype=bool)
    is_sample = ~want[columns].isna().all(axis=1).to_numpy()
    samples = want[columns][is_sample]
    assert t.num_rows == len(samples), (t.num_rows, len(samples))
    assert (t.column("sample").to_numpy() == np.arange(t.num_rows)).all()
    if rate:
        time = t.column("time").to_numpy()
        assert np.abs(time - np.arange(t.num_rows) / float(rate)).max() < 1e-9, f"not at {rate} Hz: {time[:3]}"
    worst = channels_equal(t, columns, [samples[c].to_numpy(dtype=np.float64) * float(scale) for c in columns])
    got = markers(t) if "marker" in t.column_names else []
    if marker_column:
        before = np.cumsum(is_sample) - is_sample
        expect = [(min(int(before[i]), len(samples) - 1), labels[i]) for i in np.flatnonzero(marked)]
        assert got == expect, f"markers: ours {got}, pandas {expect}"
    print(f"{os.path.basename(path)}: {len(columns)} columns x {t.num_rows} rows equal pandas (max error {worst:.1e}), "
          f"{len(got)} markers")


if __name__ == "__main__":
    {"write": write, "check": check}[sys.argv[1]](*sys.argv[2:])
