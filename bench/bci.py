"""Benchmark: the BCI signal path, neurostream against SciPy / MNE / scikit-learn, same machine,
same run. Writes bench/BCI_RESULTS.md.

  python bench/bci.py          (needs numpy, scipy, mne, scikit-learn, pyarrow; builds release)

1. Offline band-pass throughput (channel-samples/s), Butterworth order 4 band-pass 8-30 Hz
   (8 sections) at 1 kHz: neurostream's CPU kernel (1 and 2 threads, `threads` key) against
   scipy.signal.sosfilt and mne.filter.filter_data (IIR, same sections, forward) on 64 channels
   x 600 s and 306 channels x 120 s.
2. Streaming cost per 32-sample x 64-channel chunk with carried state: neurostream's kernel
   against sosfilt with zi in a Python loop (p50 / p99).
3. Welch band power of a 1 s x 64-channel window (nperseg 256): neurostream against
   scipy.signal.welch.
3b. `hilbert` envelope of 64 channels at 1 kHz: per 1 s block and over 60 s at once, against
   numpy.abs(scipy.signal.hilbert(x, axis=0)) on the same data as float64 (what MNE holds; SciPy
   then computes in complex128, as neurostream does) and as float32 (SciPy computes in complex64).
4. Decision latency, 64 channels at 1 kHz arriving in real time in 32-sample chunks: band-pass ->
   common average -> 1 s window every 100 ms -> CSP -> LDA. neurostream: the engine's
   arrival-to-written latency of each decision (`bench/bci/online_64ch.toml`, real-time source).
   Python: the same steps per chunk (sosfilt with zi, CAR, ring buffer, MNE CSP.transform,
   scikit-learn predict_proba), timed from chunk in hand to probabilities out, on the same data.
5. The same through Lab Streaming Layer (when run as root with pylsl: inside a loopback-only
   network namespace): a pylsl outlet publishes the recording in real time; neurostream's `lsl`
   source -> ... -> `lsl` sink, against a Python loop pylsl inlet -> SciPy -> MNE ->
   scikit-learn; both timed from a chunk in hand (pull returned) to its decision.
"""
import json
import os
import re
import subprocess
import sys
import tempfile
import time

import numpy as np
import pyarrow.parquet as pq
from scipy import signal
from benchlib import cargo_build, results_path  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BIN = os.path.join(ROOT, "target", "release", "neurostream")
FS = 1000.0
SOS = signal.butter(4, [8.0, 30.0], "bandpass", fs=FS, output="sos")


def data(rows, channels, seed=0):
    return np.random.default_rng(seed).normal(scale=30.0, size=(rows, channels))


def best_of(f, n=3):
    times = []
    for _ in range(n):
        t0 = time.perf_counter()
        f()
        times.append(time.perf_counter() - t0)
    return min(times)


def offline_python(channels, seconds):
    import mne
    x = data(int(seconds * FS), channels)
    n = x.size
    t_scipy = best_of(lambda: signal.sosfilt(SOS, x, axis=0))
    xt = np.ascontiguousarray(x.T)
    iir = dict(sos=SOS)
    t_mne = best_of(lambda: mne.filter.filter_data(xt, FS, 8.0, 30.0, method="iir", iir_params=iir, phase="forward",
                                                   verbose="error"))
    return n / t_scipy, n / t_mne


def streaming_python():
    x = data(32 * 20000, 64)
    zi = np.zeros((SOS.shape[0], 2, 64))
    times = []
    for k in range(20000):
        chunk = x[k * 32:(k + 1) * 32]
        t0 = time.perf_counter()
        _, zi = signal.sosfilt(SOS, chunk, axis=0, zi=zi)
        times.append((time.perf_counter() - t0) * 1e6)
    return float(np.percentile(times, 50)), float(np.percentile(times, 99))


def welch_python():
    """µs per window: float64 time-major data (what MNE and a recording hold) and float32
    channel-major data (SciPy then runs complex64 FFTs on contiguous segments)."""
    x = data(1000, 64)
    x32 = np.ascontiguousarray(x.T.astype(np.float32))
    t64 = best_of(lambda: [signal.welch(x, fs=FS, nperseg=256, noverlap=128, axis=0) for _ in range(100)])
    t32 = best_of(lambda: [signal.welch(x32, fs=FS, nperseg=256, noverlap=128, axis=-1) for _ in range(100)])
    return t64 / 100 * 1e6, t32 / 100 * 1e6


def hilbert_python(rows, repeat, dtype):
    x = data(rows, 64).astype(dtype)
    best = float("inf")
    for _ in range(repeat + 1):
        t0 = time.perf_counter()
        env = np.abs(signal.hilbert(x, axis=0))
        best = min(best, time.perf_counter() - t0)
    assert np.isfinite(env[0, 0])
    return best


def run(args, cwd):
    out = subprocess.run([BIN] + args, cwd=cwd, check=True, capture_output=True, text=True)
    return out.stdout + out.stderr


def latency(work):
    """The engine's online pipeline, then the Python loop on the same data and model recipe."""
    import shutil
    for f in ["train_64ch.toml", "online_64ch.toml"]:
        shutil.copy(os.path.join(ROOT, "bench", "bci", f), work)
    run(["run", "train_64ch.toml"], work)
    log = run(["run", "online_64ch.toml"], work)
    m = re.search(r"latency sinks.decisions: arrival to written, (\d+) frames: p50 ([\d.]+) ms  p95 ([\d.]+) ms  "
                  r"p99 ([\d.]+) ms  max ([\d.]+) ms", log)
    ours = dict(zip(["frames", "p50", "p95", "p99", "max"], [float(v) for v in m.groups()]))
    # The same recordings for Python: export them from the engine's generator.
    export = """
[sources.train]
kind = "synthetic_eeg"
channels = 64
sample_rate = 1000.0
seconds = 240.0
chunk = 1000
seed = 1
marker_interval = 4.0
marker_labels = ["left", "right"]
marker_duration = 3.0

[sources.test]
kind = "synthetic_eeg"
channels = 64
sample_rate = 1000.0
seconds = 60.0
chunk = 1000
seed = 2
marker_interval = 4.0
marker_labels = ["left", "right"]
marker_duration = 3.0

[sinks.a]
kind = "parquet"
input = "train"
path = "train.parquet"
markers = true

[sinks.b]
kind = "parquet"
input = "test"
path = "test.parquet"
"""
    open(os.path.join(work, "export.toml"), "w").write(export)
    run(["run", "export.toml"], work)
    from mne.decoding import CSP
    from sklearn.discriminant_analysis import LinearDiscriminantAnalysis
    t = pq.read_table(os.path.join(work, "train.parquet"))
    chans = [c for c in t.column_names if c not in ("time", "sample", "marker")]
    x = np.stack([t.column(c).to_numpy().astype(np.float64) for c in chans], axis=1)
    x = signal.sosfilt(SOS, x, axis=0)
    x -= x.mean(axis=1, keepdims=True)
    X, y = [], []
    for r, mk in enumerate(t.column("marker").to_pylist()):
        if mk in ("left", "right") and r + 2500 <= len(x):
            X.append(x[r + 500:r + 2501].T)
            y.append(mk == "right")
    csp = CSP(n_components=4, reg=None, log=True)
    lda = LinearDiscriminantAnalysis(solver="lsqr", shrinkage="auto").fit(csp.fit_transform(np.array(X), np.array(y)), y)
    t = pq.read_table(os.path.join(work, "test.parquet"))
    x = np.stack([t.column(c).to_numpy().astype(np.float64) for c in chans], axis=1)
    zi = np.zeros((SOS.shape[0], 2, 64))
    ring = np.zeros((1000, 64))
    filled, since = 0, 0
    times = []
    for k in range(len(x) // 32):
        chunk = x[k * 32:(k + 1) * 32]
        t0 = time.perf_counter()
        f, zi = signal.sosfilt(SOS, chunk, axis=0, zi=zi)
        f -= f.mean(axis=1, keepdims=True)
        ring = np.roll(ring, -32, axis=0)
        ring[-32:] = f
        filled += 32
        since += 32
        if filled >= 1000 and since >= 100:
            since -= 100
            lda.predict_proba(csp.transform(ring.T[None]))
            times.append((time.perf_counter() - t0) * 1e3)
    py = dict(frames=len(times), p50=float(np.percentile(times, 50)), p95=float(np.percentile(times, 95)),
              p99=float(np.percentile(times, 99)), max=float(np.max(times)))
    return ours, py


LSL_CFG = "[ports]\nIPv6 = disable\n\n[multicast]\nResolveScope = machine\n\n[lab]\nKnownPeers = {127.0.0.1}\n"


def latency_lsl(work):
    """Section 5, inside `unshare -n` (LSL discovery must not leave the machine)."""
    import shutil
    try:
        import pylsl
    except ImportError:
        return None
    if os.geteuid() != 0 or shutil.which("unshare") is None:
        return None
    liblsl = os.path.join(os.path.dirname(pylsl.__file__), "lib", "liblsl.so")
    shutil.copy(os.path.join(ROOT, "bench", "bci", "online_lsl.toml"), work)
    open(os.path.join(work, "lsl_api.cfg"), "w").write(LSL_CFG)
    replay = os.path.join(ROOT, "bench", "bci", "lsl_replay.py")
    py = sys.executable
    env = dict(os.environ, LSLAPICFG=os.path.join(work, "lsl_api.cfg"), NEUROSTREAM_LIBLSL=liblsl)
    script = (f"ip link set lo up && {py} {replay} outlet test.parquet BenchEEG & {BIN} run online_lsl.toml; "
              f"s=$?; wait; [ $s = 0 ] && ({py} {replay} outlet test.parquet BenchEEG & "
              f"{py} {replay} loop train.parquet BenchEEG py_lsl.json; wait)")
    out = subprocess.run(["unshare", "-n", "sh", "-c", script], cwd=work, env=env, capture_output=True, text=True)
    log = out.stdout + out.stderr
    m = re.search(r"latency sinks.outlet: arrival to written, (\d+) frames: p50 ([\d.]+) ms  p95 ([\d.]+) ms  "
                  r"p99 ([\d.]+) ms  max ([\d.]+) ms", log)
    if out.returncode != 0 or m is None:
        print(log[-3000:])
        return None
    ours = dict(zip(["frames", "p50", "p95", "p99", "max"], [float(v) for v in m.groups()]))
    return ours, json.load(open(os.path.join(work, "py_lsl.json")))


def main():
    cargo_build("--bin", "neurostream", "--example", "bench_signal")
    ours = json.loads(subprocess.run([os.path.join(ROOT, "target", "release", "examples", "bench_signal")],
                                     check=True, capture_output=True, text=True).stdout)
    import mne
    import sklearn
    lines = ["# Benchmark: the BCI signal path", "",
             "Command: `python bench/bci.py` (needs numpy, scipy, mne, scikit-learn, pyarrow; builds the release binary).", "",
             f"Machine: {os.cpu_count()} cores; SciPy {signal.__name__ and __import__('scipy').__version__}, MNE {mne.__version__}, "
             f"scikit-learn {sklearn.__version__}; {time.strftime('%Y-%m-%d')}; neurostream built with "
             f"RUSTFLAGS={os.environ.get('RUSTFLAGS', '(none)')!r}.", "",
             "## Offline band-pass (8 sections, 1 kHz), channel-samples/s", "",
             "| channels x seconds | neurostream 1 thread | neurostream 2 threads | scipy sosfilt | MNE filter_data (IIR) | ratio 1t / scipy | ratio 2t / scipy | ratio 1t / MNE |",
             "| --- | --- | --- | --- | --- | --- | --- | --- |"]
    for ch, secs in [(64, 600), (306, 120)]:
        sp, mn = offline_python(ch, secs)
        a, b = ours[f"offline_{ch}_1t"], ours[f"offline_{ch}_2t"]
        lines.append(f"| {ch} x {secs} | {a / 1e6:.0f} M | {b / 1e6:.0f} M | {sp / 1e6:.0f} M | {mn / 1e6:.0f} M | "
                     f"{a / sp:.1f}x | {b / sp:.1f}x | {a / mn:.1f}x |")
        print(lines[-1], flush=True)
    p50, p99 = streaming_python()
    lines += ["", "## Streaming, per 32-sample x 64-channel chunk with carried state (8 sections)", "",
              "| | p50 | p99 |", "| --- | --- | --- |",
              f"| neurostream kernel | {ours['chunk_p50_us']:.1f} µs | {ours['chunk_p99_us']:.1f} µs |",
              f"| sosfilt with zi, Python loop | {p50:.1f} µs | {p99:.1f} µs |",
              f"| ratio | {p50 / ours['chunk_p50_us']:.1f}x | {p99 / ours['chunk_p99_us']:.1f}x |"]
    w64, w32 = welch_python()
    wb = min(w64, w32)
    lines += ["", "## Welch PSD of a 1 s x 64-channel window (nperseg 256, half overlap)", "",
              "| neurostream (incl. band sums) | scipy.signal.welch, float64 time-major | scipy.signal.welch, float32 channel-major | ratio to the faster SciPy |",
              "| --- | --- | --- | --- |",
              f"| {ours['welch_window_us']:.0f} µs | {w64:.0f} µs | {w32:.0f} µs | {wb / ours['welch_window_us']:.2f}x |"]
    lines += ["", "## Hilbert envelope, 64 channels at 1 kHz (`hilbert` CPU kernel, float64 FFTs, vs numpy.abs(scipy.signal.hilbert(x, axis=0)))", "",
              "| block | neurostream | SciPy, float64 data | ratio | SciPy, float32 data (complex64 FFTs) | ratio |",
              "| --- | --- | --- | --- | --- | --- |"]
    for label, rows, repeat, ours_s in [("1 s (1000 samples)", 1000, 200, ours["hilbert_block_us"] / 1e6),
                                        ("60 s at once", 60_000, 5, ours["hilbert_60s_ms"] / 1e3)]:
        d64, d32 = hilbert_python(rows, repeat, np.float64), hilbert_python(rows, repeat, np.float32)
        lines.append(f"| {label} | {ours_s * 1e3:.2f} ms | {d64 * 1e3:.2f} ms | {d64 / ours_s:.2f}x | "
                     f"{d32 * 1e3:.2f} ms | {d32 / ours_s:.2f}x |")
    print("\n".join(lines[-4:]), flush=True)
    work = tempfile.mkdtemp(prefix="ns-bci-")
    lat, py = latency(work)
    lines += ["", "## Decision latency: 64 ch at 1 kHz, 32-sample chunks in real time, band-pass -> CAR -> 1 s window / 100 ms -> CSP -> LDA", "",
              "neurostream: chunk arrival (stamped as the source emits it) to the decision written to the live "
              "`arrow_tcp` sink, over a 60 s real-time run. Python: chunk in hand to probabilities out, same steps "
              "with SciPy, NumPy, MNE and scikit-learn, on the same data (no LSL in either).", "",
              "| | decisions | p50 | p95 | p99 | max |", "| --- | --- | --- | --- | --- | --- |",
              f"| neurostream | {lat['frames']:.0f} | {lat['p50']:.3f} ms | {lat['p95']:.3f} ms | {lat['p99']:.3f} ms | {lat['max']:.3f} ms |",
              f"| Python (SciPy + MNE + scikit-learn) | {py['frames']} | {py['p50']:.3f} ms | {py['p95']:.3f} ms | {py['p99']:.3f} ms | {py['max']:.3f} ms |",
              "", "Target: p99 under 2 ms."]
    lsl = latency_lsl(work)
    if lsl is not None:
        ol, pl = lsl
        lines += ["", "## The same through Lab Streaming Layer", "",
                  "A pylsl outlet publishes the recording at 1 kHz in 32-sample chunks; neurostream: `lsl` source -> "
                  "band-pass -> CAR -> decode -> `lsl` sink (`bench/bci/online_lsl.toml`); Python: pylsl inlet -> "
                  "sosfilt with zi -> CAR -> ring buffer -> MNE CSP.transform -> scikit-learn predict_proba "
                  "(`bench/bci/lsl_replay.py`, pylsl directly; MNE-LSL is not installed here). Both from a chunk in "
                  "hand to its decision pushed (neurostream) or computed (Python). Loopback-only network namespace.", "",
                  "| | decisions | p50 | p95 | p99 | max |", "| --- | --- | --- | --- | --- | --- |",
                  f"| neurostream (to the LSL outlet) | {ol['frames']:.0f} | {ol['p50']:.3f} ms | {ol['p95']:.3f} ms | {ol['p99']:.3f} ms | {ol['max']:.3f} ms |",
                  f"| Python (pylsl + SciPy + MNE + scikit-learn) | {pl['frames']} | {pl['p50']:.3f} ms | {pl['p95']:.3f} ms | {pl['p99']:.3f} ms | {pl['max']:.3f} ms |"]
    with open(results_path("BCI_RESULTS.md"), "w") as f:
        f.write("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
