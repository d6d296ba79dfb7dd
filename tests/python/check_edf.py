"""Checks neurostream's EDF/BDF reading against pyedflib (EDFlib's reader).

  check_edf.py signals REC.edf OUT.parquet   every channel column of OUT (signal layout) equals
      pyedflib's physical samples of the signal with that label; `sample` is 0..n-1 and `time`
      sample / fs. Tolerance: |ours − ref| ≤ 1e-6 · max(|physical min|, |physical max|) (ours
      are float32).
  check_edf.py header REC.edf OURS.json      header fields (per signal too) and the annotations
      (onset within 1 µs, duration, text) equal pyedflib's.
  check_edf.py inspect REC.edf TEXT          `neurostream inspect REC` (TEXT, shown with `-n 1000`)
      states MNE's channel names and count, rate, sample count and duration, and every
      annotation's onset (to the ms, on the sample nearest it) and description, in order.
"""
import datetime
import json
import sys

import numpy as np
import pyarrow.parquet as pq
import pyedflib


def signals(rec, out):
    r = pyedflib.EdfReader(rec)
    labels = r.getSignalLabels()
    t = pq.read_table(out)
    fs_meta = float(t.schema.metadata[b"neurostream.sample_rate"])
    n = t.num_rows
    cols = [c for c in t.column_names if c not in ("time", "sample", "marker")]
    assert cols, "no channel columns"
    sample = t.column("sample").to_numpy()
    assert (sample == np.arange(n)).all(), "sample column is not 0..n-1"
    assert np.allclose(t.column("time").to_numpy(), sample / fs_meta, rtol=0, atol=1e-12)
    worst = 0.0
    for c in cols:
        i = labels.index(c)
        assert abs(r.getSampleFrequency(i) - fs_meta) < 1e-9, f"{c}: rate {r.getSampleFrequency(i)} vs {fs_meta}"
        ref = r.readSignal(i, digital=False)
        ours = t.column(c).to_numpy().astype(np.float64)
        assert len(ours) == len(ref), f"{c}: {len(ours)} samples vs pyedflib {len(ref)}"
        scale = max(abs(r.getPhysicalMinimum(i)), abs(r.getPhysicalMaximum(i)))
        err = np.abs(ours - ref).max() / scale
        worst = max(worst, err)
        assert err <= 1e-6, f"{c}: max error {err:.2e} of the physical range"
    print(f"{rec}: {len(cols)} channels × {n} samples equal pyedflib's (max error {worst:.1e} of range)")


def resampled(rec, out):
    """Channels below the stream's rate equal scipy.signal.resample_poly of pyedflib's samples."""
    from fractions import Fraction
    from scipy import signal
    r = pyedflib.EdfReader(rec)
    labels = r.getSignalLabels()
    t = pq.read_table(out)
    fs = float(t.schema.metadata[b"neurostream.sample_rate"])
    cols = [c for c in t.column_names if c not in ("time", "sample", "marker")]
    worst = 0.0
    for c in cols:
        i = labels.index(c)
        ref = r.readSignal(i, digital=False)
        own = r.getSampleFrequency(i)
        if own != fs:
            q = Fraction(fs / own).limit_denominator(10000)
            ref = signal.resample_poly(ref, q.numerator, q.denominator)
        ours = t.column(c).to_numpy().astype(np.float64)
        assert len(ours) == len(ref), f"{c}: {len(ours)} vs {len(ref)}"
        scale = max(abs(r.getPhysicalMinimum(i)), abs(r.getPhysicalMaximum(i)))
        err = np.abs(ours - ref).max() / scale
        worst = max(worst, err)
        assert err <= 1e-5, f"{c}: resampled values differ by {err:.2e} of the range"
    print(f"{rec}: {len(cols)} channels at {fs} Hz equal pyedflib + resample_poly (max error {worst:.1e} of range)")


def header(rec, ours_path):
    ours = json.load(open(ours_path))
    r = pyedflib.EdfReader(rec)
    assert ours["records"] == r.datarecords_in_file, (ours["records"], r.datarecords_in_file)
    assert abs(ours["record_duration_s"] - r.datarecord_duration) < 1e-9
    start = r.getStartdatetime().replace(microsecond=0, tzinfo=datetime.timezone.utc).timestamp()
    assert ours["start_unix_s"] == int(start), (ours["start_unix_s"], start)
    heads = [h for h in r.getSignalHeaders()]
    sig = ours["signals"]
    assert len(sig) == len(heads), f"{len(sig)} signals vs pyedflib {len(heads)}"
    for o, h in zip(sig, heads):
        assert o["label"] == h["label"], (o["label"], h["label"])
        assert o["unit"] == h["dimension"], (o["label"], o["unit"], h["dimension"])
        assert o["transducer"] == h["transducer"], (o["label"], o["transducer"], h["transducer"])
        assert o["prefiltering"] == h["prefilter"], (o["label"], o["prefiltering"], h["prefilter"])
        for k, hk in [("physical_min", "physical_min"), ("physical_max", "physical_max"),
                      ("digital_min", "digital_min"), ("digital_max", "digital_max")]:
            assert abs(o[k] - h[hk]) < 1e-9, (o["label"], k, o[k], h[hk])
        assert abs(o["sample_rate"] - h["sample_frequency"]) < 1e-9, (o["label"], o["sample_rate"], h["sample_frequency"])
    onsets, durations, texts = r.readAnnotations()
    ann = ours["annotations"]
    assert len(ann) == len(onsets), f"{len(ann)} annotations vs pyedflib {len(onsets)}"
    for a, on, du, tx in zip(ann, onsets, durations, texts):
        assert abs(a["onset_s"] - on) < 1e-6, (a, on)
        want = None if du < 0 else du
        assert (a["duration_s"] is None) == (want is None), (a, du)
        if want is not None:
            assert abs(a["duration_s"] - want) < 1e-6, (a, du)
        assert a["text"] == tx, (a["text"], tx)
    print(f"{rec}: header of {len(sig)} signals and {len(ann)} annotations equal pyedflib's")


def write_units(rec, out):
    """An EDF with the EEG of REC in V, mV, uV and nV (one channel each), as some devices write it."""
    r = pyedflib.EdfReader(rec)
    labels = r.getSignalLabels()
    eeg = [i for i, l in enumerate(labels) if l.startswith("EEG")][:1]
    x = r.readSignal(eeg[0], digital=False)  # uV
    fs = r.getSampleFrequency(eeg[0])
    units = [("EEG V", "V", 1e-6), ("EEG mV", "mV", 1e-3), ("EEG uV", "uV", 1.0), ("EEG nV", "nV", 1e3)]
    w = pyedflib.EdfWriter(out, len(units), file_type=pyedflib.FILETYPE_EDFPLUS)
    heads = []
    for label, unit, k in units:
        y = x * k
        m = float(np.abs(y).max()) * 1.1
        heads.append({"label": label, "dimension": unit, "sample_frequency": fs, "physical_min": -m,
                      "physical_max": m, "digital_min": -32768, "digital_max": 32767})
    w.setSignalHeaders(heads)
    w.writeSamples([x * k for _, _, k in units])
    w.close()


def units(rec, out):
    """OUT holds every channel of REC in uV: pyedflib's physical values times the unit's factor."""
    factor = {"V": 1e6, "mV": 1e3, "uV": 1.0, "nV": 1e-3}
    r = pyedflib.EdfReader(rec)
    t = pq.read_table(out)
    got_units = json.loads(t.schema.metadata[b"neurostream.units"])
    assert got_units == ["uV"] * r.signals_in_file, got_units
    for i, label in enumerate(r.getSignalLabels()):
        want = r.readSignal(i, digital=False) * factor[r.getPhysicalDimension(i)]
        ours = t.column(label).to_numpy().astype(np.float64)
        err = np.abs(ours - want).max() / np.abs(want).max()
        assert err <= 1e-6, f"{label}: max error {err:.2e}"
    print(f"{rec}: V, mV, uV and nV channels arrive in uV")


def written(src, out):
    """OUT, written by the engine's edf sink from SRC's signals at the top rate and its
    annotations, reads back with pyedflib and MNE as SRC: every sample within the two files'
    quantization steps, labels, units, and the annotations (onsets on their samples)."""
    import mne
    a, b = pyedflib.EdfReader(src), pyedflib.EdfReader(out)
    la = a.getSignalLabels()
    lb = b.getSignalLabels()
    fs = b.getSampleFrequency(0)
    picked = [i for i in range(a.signals_in_file) if a.getSampleFrequency(i) == fs]
    assert lb == [la[i] for i in picked], (lb, la)
    worst = 0.0
    for j, i in enumerate(picked):
        x, y = a.readSignal(i), b.readSignal(j)
        n = len(x)
        assert len(y) >= n and len(y) - n < b.getSampleFrequency(j) * b.datarecord_duration + 1, (len(y), n)
        assert np.all(y[n:] == y[n:][0]) if len(y) > n else True
        step = lambda r, k: abs((r.getPhysicalMaximum(k) - r.getPhysicalMinimum(k)) / (r.getDigitalMaximum(k) - r.getDigitalMinimum(k)))  # noqa: E731
        tol = step(a, i) / 2 + step(b, j) / 2 + 1e-6 * max(abs(x).max(), 1.0)
        err = np.abs(y[:n] - x).max()
        worst = max(worst, err / tol)
        assert err <= tol, f"{lb[j]}: error {err} > {tol}"
        assert b.getPhysicalDimension(j) in (a.getPhysicalDimension(i), "uV"), (b.getPhysicalDimension(j), a.getPhysicalDimension(i))
    on_a, _, text_a = a.readAnnotations()
    on_b, _, text_b = b.readAnnotations()
    want = sorted((int(round(o * fs)), t) for o, t in zip(on_a, text_a) if o * fs < len(a.readSignal(picked[0])))
    got = sorted((int(round(o * fs)), t) for o, t in zip(on_b, text_b))
    assert got == want, f"annotations differ: {got[:4]} vs {want[:4]}"
    read = mne.io.read_raw_bdf if out.endswith(".bdf") else mne.io.read_raw_edf
    raw = read(out, verbose="ERROR")
    assert len(raw.annotations) == len(want), (len(raw.annotations), len(want))
    print(f"{out}: {len(picked)} channels within {worst:.2f} of the quantization tolerance, {len(got)} annotations; "
          f"MNE opens it")


def inspect(rec, text):
    import mne

    raw = mne.io.read_raw(rec, preload=False, verbose="error")
    out = open(text).read().splitlines()
    sfreq, n = raw.info["sfreq"], raw.n_times
    want = f"signal:   {len(raw.ch_names)} channels at {sfreq:g} Hz, {n} samples ({n / sfreq:.3f} s)"
    assert want in out, (want, out[:4])
    names = out[out.index("channels:") + 1:out.index(next(l for l in out if l.startswith("markers:")))]
    assert [line[2:].rsplit(None, 2)[0] for line in names] == raw.ch_names, names
    at = out.index(next(l for l in out if l.startswith("markers:")))
    assert out[at] == f"markers:  {len(raw.annotations)}", out[at]
    for line, onset, description in zip(out[at + 1:], raw.annotations.onset, raw.annotations.description):
        seconds, label = line.split(" s  ", 1)
        assert abs(float(seconds) - round(onset * sfreq) / sfreq) < 1e-3 and label == description, (line, onset)
    print(f"{rec}: inspect states {len(raw.ch_names)} channels, {n} samples, {len(raw.annotations)} annotations as MNE")


if __name__ == "__main__":
    {"written": written, "signals": signals, "header": header, "resampled": resampled, "write_units": write_units,
     "units": units, "inspect": inspect}[sys.argv[1]](*sys.argv[2:])
