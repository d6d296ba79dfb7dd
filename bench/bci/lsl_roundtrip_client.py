"""Client side of bench/lsl_roundtrip.py (run inside a loopback-only network namespace).

  lsl_roundtrip_client.py relay IN OUT
      The relay a pylsl user would write: an inlet on IN, an outlet OUT; each pull blocks for
      the first sample and takes what came with it, then pushes it on.
  lsl_roundtrip_client.py measure IN OUT CHUNKS OUT.json
      Publishes IN (2 channels at 1 kHz): CHUNKS chunks of 32 samples, one every 10-13 ms,
      each sample carrying its push time (LSL clock: whole seconds, milliseconds); reads OUT
      and writes the push-to-receipt latency of each chunk's first sample to arrive (the first
      100 chunks, while liblsl settles its clock offsets, are left out).
"""
import json
import sys
import threading
import time

import numpy as np
import pylsl

WARM_UP = 100


def relay(name_in, name_out):
    inlet = pylsl.StreamInlet(pylsl.resolve_byprop("name", name_in, 1, 30.0)[0])
    inlet.open_stream(10.0)
    outlet = pylsl.StreamOutlet(pylsl.StreamInfo(name_out, "EEG", 2, 1000.0, "float32", name_out))
    last = time.time()
    while time.time() - last < 3.0:
        first, stamp = inlet.pull_sample(timeout=0.1)
        if first is None:
            continue
        last = time.time()
        rest, stamps = inlet.pull_chunk(timeout=0.0)
        outlet.push_chunk([first] + list(rest), [stamp] + list(stamps))


def measure(name_in, name_out, chunks, out_path):
    chunks = int(chunks)
    outlet = pylsl.StreamOutlet(pylsl.StreamInfo(name_in, "EEG", 2, 1000.0, "float32", name_in), 1, 10)
    latencies, ready = [], threading.Event()

    def listen():
        inlet = pylsl.StreamInlet(pylsl.resolve_byprop("name", name_out, 1, 30.0)[0])
        inlet.open_stream(10.0)
        ready.set()
        seen, last = set(), time.time()
        while time.time() - last < 3.0 and len(seen) < chunks:
            first, _ = inlet.pull_sample(timeout=0.1)
            if first is None:
                continue
            now = pylsl.local_clock()
            last = time.time()
            rest, _ = inlet.pull_chunk(timeout=0.0)
            for s in [first] + list(rest):
                if (s[0], s[1]) not in seen:
                    seen.add((s[0], s[1]))
                    latencies.append((now - (s[0] + s[1] / 1000.0)) * 1e3)

    listener = threading.Thread(target=listen)
    listener.start()
    if not outlet.wait_for_consumers(30.0) or not ready.wait(30.0):
        raise SystemExit("the relay never connected")
    time.sleep(1.0)
    rng = np.random.default_rng(0)
    for _ in range(chunks):
        t = pylsl.local_clock()
        outlet.push_chunk([[float(np.floor(t)), float((t - np.floor(t)) * 1000.0)]] * 32, t)
        time.sleep(0.010 + 0.003 * rng.random())
    listener.join()
    lat = np.array(latencies[WARM_UP:])
    json.dump(dict(chunks=len(lat), p50=float(np.percentile(lat, 50)), p95=float(np.percentile(lat, 95)),
                   p99=float(np.percentile(lat, 99)), max=float(lat.max())), open(out_path, "w"))


if __name__ == "__main__":
    {"relay": relay, "measure": measure}[sys.argv[1]](*sys.argv[2:])
