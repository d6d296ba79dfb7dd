"""Checks `bandpower` against scipy.signal.welch on the same input (signal layout Parquet).

  check_bandpower.py IN.parquet OUT.parquet SPEC.json TOL
      SPEC: {"window": samples, "step": samples} (sliding) or {"epochs": [labels], "start":
      samples, "length": samples, "baseline": [a, b] | null, "reject": ptp | null} (epochs,
      markers read from IN's marker column), plus "nperseg", "noverlap", "bands": [[name, lo,
      hi]], "relative", and optionally "labels": {last_sample: label} expected per window.
      Every output value equals the reference within TOL relative to the channel-band's
      largest value; window sample indices and labels match.
"""
import json
import sys

import numpy as np
import pyarrow.parquet as pq
from scipy import signal


def main(inp, out, spec_path, tol):
    spec = json.load(open(spec_path))
    t = pq.read_table(inp)
    fs = float(t.schema.metadata[b"neurostream.sample_rate"])
    chans = [c for c in t.column_names if c not in ("time", "sample", "marker")]
    x = np.stack([t.column(c).to_numpy().astype(np.float64) for c in chans], axis=1)
    samples = t.column("sample").to_numpy()
    windows = []  # (last_sample, data, label)
    if "window" in spec:
        for s in range(0, len(x) - spec["window"] + 1, spec["step"]):
            windows.append((samples[s + spec["window"] - 1], x[s:s + spec["window"]], None))
    else:
        markers = t.column("marker").to_pylist()
        for r, m in enumerate(markers):
            for label in (m.split(";") if m else []):
                if label not in spec["epochs"]:
                    continue
                a = r + spec["start"]
                if a < 0 or a + spec["length"] > len(x):
                    continue
                ep = x[a:a + spec["length"]].copy()
                if spec.get("baseline"):
                    b0, b1 = (v - spec["start"] for v in spec["baseline"])
                    ep -= ep[b0:b1 + 1].mean(axis=0)
                if spec.get("reject") is not None and (ep.max(0) - ep.min(0)).max() > spec["reject"]:
                    continue
                windows.append((samples[a + spec["length"] - 1], ep, label))
    o = pq.read_table(out)
    assert o.num_rows == len(windows), f"{o.num_rows} output rows vs {len(windows)} windows"
    assert (o.column("sample").to_numpy() == [w[0] for w in windows]).all(), "window sample indices differ"
    bands = spec["bands"]
    names = []
    ref = []
    for last, data, label in windows:
        f, pxx = signal.welch(data, fs=fs, window="hann", nperseg=spec["nperseg"], noverlap=spec["noverlap"],
                              detrend="constant", scaling="density", average="mean", axis=0)
        df = f[1] - f[0]
        row = []
        lo_all, hi_all = min(b[1] for b in bands), max(b[2] for b in bands)
        for ci, c in enumerate(chans):
            absolute = [pxx[(f >= lo) & (f < hi), ci].sum() * df for _, lo, hi in bands]
            row += absolute
            if spec["relative"]:
                total = pxx[(f >= lo_all) & (f < hi_all), ci].sum() * df
                row += [a / total for a in absolute]
        ref.append(row)
    for c in chans:
        names += [f"{c}:{b[0]}" for b in bands]
        if spec["relative"]:
            names += [f"{c}:{b[0]}:rel" for b in bands]
    ref = np.array(ref)
    got_names = [c for c in o.column_names if c not in ("time", "sample", "marker")]
    assert got_names == names, f"columns {got_names[:6]}... vs {names[:6]}..."
    got = np.stack([o.column(c).to_numpy().astype(np.float64) for c in names], axis=1)
    err = np.abs(got - ref).max(0) / np.maximum(np.abs(ref).max(0), 1e-30)
    assert err.max() <= float(tol), f"relative error {err.max():.2e} > {tol} at {names[int(err.argmax())]}"
    if "labels" in spec:
        labels = o.column("marker").to_pylist()
        want = [spec["labels"].get(str(w[0])) for w in windows]
        assert labels == want, f"labels {labels[:8]} vs {want[:8]}"
    elif "epochs" in spec:
        assert o.column("marker").to_pylist() == [w[2] for w in windows]
    print(f"{len(windows)} windows × {len(names)} band powers equal scipy.signal.welch (max relative error {err.max():.1e})")


if __name__ == "__main__":
    main(*sys.argv[1:5])
