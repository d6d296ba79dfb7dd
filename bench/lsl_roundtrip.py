"""Benchmark: Lab Streaming Layer in and straight back out, neurostream against a pylsl relay.

  python bench/lsl_roundtrip.py [--chunks 1100] [--repeats 3]      (root: a network namespace)

A pylsl outlet publishes 2 channels at 1 kHz, a 32-sample chunk every 10-13 ms, each sample
carrying its push time; a relay passes the stream on as another LSL stream; a pylsl inlet on
that one records, for each chunk, the time from its push to its first sample's receipt (one
machine, one LSL clock). Relays, alternated `repeats` times:

- neurostream: `lsl` source -> `lsl` sink (`bench/bci/lsl_roundtrip.toml`, release build);
- pylsl: the relay a user would write (`bench/bci/lsl_roundtrip_client.py relay`): the inlet's
  pull blocks for the first sample and takes what came with it, then the outlet pushes it.

The first 100 chunks of each run are left out (liblsl settles its clock offsets then). Like
every LSL test here it runs inside a loopback-only network namespace (`unshare -n`, needs
root) with `ResolveScope = machine`, so discovery never leaves the machine. Writes
bench/LSL_RESULTS.md.
"""
import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from benchlib import cargo_build, cpu_name, results_path  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BIN = os.path.join(ROOT, "target", "release", "neurostream")
CLIENT = os.path.join(ROOT, "bench", "bci", "lsl_roundtrip_client.py")
LSL_CFG = "[ports]\nIPv6 = disable\n\n[multicast]\nResolveScope = machine\n\n[lab]\nKnownPeers = {127.0.0.1}\n"


def one_run(relay: str, work: str, chunks: int, env: dict) -> dict:
    out = os.path.join(work, f"{relay}.json")
    py = sys.executable
    start = (f"{BIN} run lsl_roundtrip.toml" if relay == "neurostream"
             else f"{py} {CLIENT} relay RoundTripIn RoundTripOut")
    script = f"ip link set lo up && ({start} > {relay}.log 2>&1 &) && {py} {CLIENT} measure RoundTripIn RoundTripOut {chunks} {out}"
    done = subprocess.run(["unshare", "-n", "sh", "-c", script], cwd=work, env=env, capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(f"{relay} run failed:\n{done.stdout[-2000:]}{done.stderr[-2000:]}")
    time.sleep(3.5)  # the relay ends once the stream has been quiet for its time-out
    return json.load(open(out))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--chunks", type=int, default=1100)
    ap.add_argument("--repeats", type=int, default=3)
    a = ap.parse_args()
    try:
        import pylsl
    except ImportError:
        raise SystemExit("skipped: pylsl is not installed")
    if os.geteuid() != 0 or shutil.which("unshare") is None or shutil.which("ip") is None:
        raise SystemExit("skipped: needs root, unshare and ip (LSL runs in a loopback-only network namespace)")
    cargo_build("--bin", "neurostream")
    work = tempfile.mkdtemp(prefix="ns-lsl-")
    shutil.copy(os.path.join(ROOT, "bench", "bci", "lsl_roundtrip.toml"), work)
    open(os.path.join(work, "lsl_api.cfg"), "w").write(LSL_CFG)
    liblsl = os.path.join(os.path.dirname(pylsl.__file__), "lib", "liblsl.so")
    env = dict(os.environ, LSLAPICFG=os.path.join(work, "lsl_api.cfg"), NEUROSTREAM_LIBLSL=liblsl)
    runs = {"neurostream": [], "pylsl": []}
    for _ in range(a.repeats):
        for relay in runs:
            runs[relay].append(one_run(relay, work, a.chunks, env))
            r = runs[relay][-1]
            print(f"{relay}: p50 {r['p50']:.3f} ms  p95 {r['p95']:.3f}  p99 {r['p99']:.3f}  max {r['max']:.3f}", flush=True)
    cpu = cpu_name()
    lines = [
        "# Benchmark: LSL in and straight back out",
        "",
        f"Command: `python bench/lsl_roundtrip.py --chunks {a.chunks} --repeats {a.repeats}` (root; builds the release binary).",
        "",
        f"Machine: {cpu}, {os.cpu_count()} cores; pylsl {pylsl.__version__} (liblsl {pylsl.library_version()}); "
        f"neurostream release build, default target; {time.strftime('%Y-%m-%d')}.",
        "",
        "A pylsl outlet publishes 2 channels at 1 kHz, a 32-sample chunk every 10-13 ms, each sample carrying its "
        "push time; the relay passes it on as another LSL stream; a pylsl inlet measures push to receipt of each "
        "chunk (its first sample to arrive), one machine, one LSL clock, loopback-only network namespace. "
        f"neurostream: `lsl` source -> `lsl` sink; pylsl: a blocking-pull relay in Python. {a.chunks - 100} chunks "
        f"per run after 100 of warm-up; percentiles over all {a.repeats} runs' chunks pooled would hide the run "
        "spread, so each run is a row.",
        "",
        "| relay | run | chunks | p50 ms | p95 ms | p99 ms | max ms |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for relay, rs in runs.items():
        for i, r in enumerate(rs):
            lines.append(f"| {relay} | {i + 1} | {r['chunks']} | {r['p50']:.3f} | {r['p95']:.3f} | {r['p99']:.3f} | {r['max']:.3f} |")
    med = {k: float(np.median([r["p50"] for r in v])) for k, v in runs.items()}
    lines += ["", f"Median p50 over the runs: neurostream {med['neurostream']:.3f} ms, pylsl {med['pylsl']:.3f} ms "
              f"(ratio {med['pylsl'] / med['neurostream']:.2f}x)."]
    with open(results_path("LSL_RESULTS.md"), "w") as f:
        f.write("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
