"""LSL side of the latency benchmark (run by bench/bci.py inside a loopback-only network
namespace).

  lsl_replay.py outlet TEST.parquet NAME
      Publishes TEST.parquet's 64 channels at 1 kHz as LSL stream NAME (labels in the
      description), 32-sample chunks at real-time pace; waits for a consumer first.
  lsl_replay.py loop TRAIN.parquet NAME OUT.json
      The Python pipeline a user would write: pylsl inlet -> sosfilt with carried zi -> common
      average -> 1 s ring buffer -> every 100 ms MNE CSP.transform -> scikit-learn
      predict_proba, fitted on TRAIN.parquet's epochs. Latency: from a chunk in hand (pull
      returned) to its decision. Writes p50/p95/p99/max to OUT.json.
"""
import json
import sys
import time

import numpy as np
import pyarrow.parquet as pq
import pylsl
from scipy import signal

FS = 1000.0
SOS = signal.butter(4, [8.0, 30.0], "bandpass", fs=FS, output="sos")


def read(path):
    t = pq.read_table(path)
    chans = [c for c in t.column_names if c not in ("time", "sample", "marker")]
    x = np.stack([t.column(c).to_numpy().astype(np.float32) for c in chans], axis=1)
    return t, chans, x


def outlet(path, name):
    _, chans, x = read(path)
    info = pylsl.StreamInfo(name, "EEG", len(chans), FS, "float32", name)
    ch = info.desc().append_child("channels")
    for c in chans:
        ch.append_child("channel").append_child_value("label", c)
    out = pylsl.StreamOutlet(info, 32, 60)
    if not out.wait_for_consumers(30.0):
        raise SystemExit("no consumer")
    time.sleep(0.5)
    t0 = pylsl.local_clock()
    for k in range(len(x) // 32):
        due = t0 + (k + 1) * 32 / FS
        while pylsl.local_clock() < due:
            time.sleep(0.0002)
        out.push_chunk(x[k * 32:(k + 1) * 32].tolist(), due)
    time.sleep(1.0)


def loop(train, name, out_path):
    from mne.decoding import CSP
    from sklearn.discriminant_analysis import LinearDiscriminantAnalysis
    t, chans, x = read(train)
    x = signal.sosfilt(SOS, x.astype(np.float64), axis=0)
    x -= x.mean(axis=1, keepdims=True)
    X, y = [], []
    for r, mk in enumerate(t.column("marker").to_pylist()):
        if mk in ("left", "right") and r + 2500 <= len(x):
            X.append(x[r + 500:r + 2501].T)
            y.append(mk == "right")
    csp = CSP(n_components=4, reg=None, log=True)
    lda = LinearDiscriminantAnalysis(solver="lsqr", shrinkage="auto").fit(csp.fit_transform(np.array(X), np.array(y)), y)
    inlet = pylsl.StreamInlet(pylsl.resolve_byprop("name", name, 1, 30.0)[0], max_chunklen=32)
    inlet.open_stream(10.0)
    zi = np.zeros((SOS.shape[0], 2, len(chans)))
    ring = np.zeros((1000, len(chans)))
    filled, since, last = 0, 0, time.time()
    lat = []
    while time.time() - last < 2.0:
        chunk, _ = inlet.pull_chunk(timeout=0.05, max_samples=32)
        if not chunk:
            continue
        t0 = time.perf_counter()
        last = time.time()
        c = np.asarray(chunk, dtype=np.float64)
        f, zi = signal.sosfilt(SOS, c, axis=0, zi=zi)
        f -= f.mean(axis=1, keepdims=True)
        n = len(f)
        ring = np.roll(ring, -n, axis=0)
        ring[-n:] = f
        filled += n
        since += n
        if filled >= 1000 and since >= 100:
            since -= 100
            lda.predict_proba(csp.transform(ring.T[None]))
            lat.append((time.perf_counter() - t0) * 1e3)
    json.dump(dict(frames=len(lat), p50=float(np.percentile(lat, 50)), p95=float(np.percentile(lat, 95)),
                   p99=float(np.percentile(lat, 99)), max=float(np.max(lat))), open(out_path, "w"))


if __name__ == "__main__":
    {"outlet": outlet, "loop": loop}[sys.argv[1]](*sys.argv[2:])
