"""Checks neurostream's IIR filters against SciPy.

  check_filters.py design CASES.json
      each case {"kind": "butter", "order", "cutoff", "btype", "fs", "sos"} or
      {"kind": "notch", "f0", "q", "fs", "sos"}: our sections equal scipy.signal.butter(...,
      output="sos") / iirnotch, element by element within 1e-10 (absolute, values are O(1)).
  check_filters.py filter IN.parquet OUT.parquet SPEC.json TOL
      OUT (signal layout) equals scipy.signal.sosfilt (or sosfiltfilt when "zero_phase") of IN
      over the whole signal with the sections of SPEC ({"butter": [order, cutoff, btype]} or
      {"notch": [f0, q, harmonics]}), or scipy.signal.lfilter of MNE's FIR
      ({"fir": [l_freq, h_freq]}: mne.filter.create_filter(..., method="fir",
      fir_design="firwin")), channel by channel:
      max |ours − ref| ≤ TOL · max |ref|.
      {"hilbert": [block, "envelope" | "phase"]}: scipy.signal.hilbert of each block of `block`
      samples (0: the whole signal), its abs (envelope, relative as above) or angle (phase:
      wrapped difference ≤ TOL · π where the envelope is above 1e-3 of its channel's maximum,
      since the phase of a near-zero analytic signal is undefined).
"""
import json
import sys

import numpy as np
import pyarrow.parquet as pq
from scipy import signal


def scalar_if_one(cutoff):
    return cutoff[0] if len(cutoff) == 1 else cutoff


def fir_taps(spec, fs):
    import mne
    l_freq, h_freq = spec["fir"]
    return mne.filter.create_filter(None, fs, l_freq, h_freq, method="fir", fir_design="firwin",
                                    fir_window="hamming", verbose="error")


def sections(spec, fs):
    if "butter" in spec:
        order, cutoff, btype = spec["butter"]
        return signal.butter(order, scalar_if_one(cutoff), btype, output="sos", fs=fs)
    f0, q, harmonics = spec["notch"]
    rows = []
    for h in range(1, harmonics + 1):
        if h > 1 and f0 * h >= fs / 2:
            break
        b, a = signal.iirnotch(f0 * h, q, fs)
        rows.append(np.concatenate([b, a]))
    return np.array(rows)


def design(path):
    cases = json.load(open(path))
    worst = 0.0
    for c in cases:
        if c["kind"] == "butter":
            ref = signal.butter(c["order"], scalar_if_one(c["cutoff"]), c["btype"], output="sos", fs=c["fs"])
        else:
            b, a = signal.iirnotch(c["f0"], c["q"], c["fs"])
            ref = np.concatenate([b, a])[None, :]
        ours = np.array(c["sos"])
        assert ours.shape == ref.shape, f"{c}: shape {ours.shape} vs scipy {ref.shape}"
        err = np.abs(ours - ref).max()
        worst = max(worst, err)
        assert err <= 1e-10, f"{c['kind']} {c}: sections differ from scipy by {err:.2e}\nours\n{ours}\nscipy\n{ref}"
    print(f"{len(cases)} designs equal scipy's (max difference {worst:.1e})")


def read(path):
    t = pq.read_table(path)
    fs = float(t.schema.metadata[b"neurostream.sample_rate"])
    cols = [c for c in t.column_names if c not in ("time", "sample", "marker")]
    return fs, cols, np.stack([t.column(c).to_numpy().astype(np.float64) for c in cols], axis=1)


def filt(inp, out, spec_path, tol):
    spec = json.load(open(spec_path))
    fs, cols, x = read(inp)
    fs2, cols2, y = read(out)
    if "resample" in spec:
        up, down = spec["resample"]
        assert abs(fs2 - fs * up / down) < 1e-9 and cols == cols2, (fs, fs2, cols, cols2)
        ref = signal.resample_poly(x, up, down, axis=0)
        assert y.shape == ref.shape, f"{y.shape} vs scipy {ref.shape}"
        err = np.abs(y - ref).max(axis=0) / np.abs(ref).max(axis=0)
        assert err.max() <= float(tol), f"{spec}: relative error {err.max():.2e} > {tol}"
        print(f"{spec}: {x.shape[1]} channels, {x.shape[0]} -> {y.shape[0]} samples equal scipy (max relative error {err.max():.1e})")
        return
    assert fs == fs2 and cols == cols2, (fs, fs2, cols, cols2)
    assert y.shape == x.shape, f"{y.shape} vs {x.shape}"
    if "hilbert" in spec:
        block, output = spec["hilbert"]
        block = block or x.shape[0]
        z = np.concatenate([signal.hilbert(x[i:i + block], axis=0) for i in range(0, x.shape[0], block)])
        env = np.abs(z)
        if output == "phase":
            diff = np.angle(np.exp(1j * (y - np.angle(z))))
            defined = env > 1e-3 * env.max(axis=0)
            err = np.where(defined, np.abs(diff), 0).max(axis=0) / np.pi
            assert err.max() <= float(tol), f"{spec}: phase error {err.max() * np.pi:.2e} rad > {tol}·π (channel {cols[int(err.argmax())]})"
            print(f"{spec}: {x.shape[1]} channels × {x.shape[0]} samples equal scipy (max phase error {err.max() * np.pi:.1e} rad)")
            return
        ref = env
    elif "fir" in spec:
        ref = signal.lfilter(fir_taps(spec, fs), 1.0, x, axis=0)
    else:
        sos = sections(spec, fs)
        ref = signal.sosfiltfilt(sos, x, axis=0) if spec.get("zero_phase") else signal.sosfilt(sos, x, axis=0)
    err = np.abs(y - ref).max(axis=0) / np.abs(ref).max(axis=0)
    assert err.max() <= float(tol), f"{spec}: relative error {err.max():.2e} > {tol} (channel {cols[int(err.argmax())]})"
    print(f"{spec}: {x.shape[1]} channels × {x.shape[0]} samples equal scipy (max relative error {err.max():.1e})")


if __name__ == "__main__":
    if sys.argv[1] == "design":
        design(sys.argv[2])
    else:
        filt(*sys.argv[2:6])
