"""MNE-LSL on the other end of neurostream's LSL outlets and inlets (run inside the loopback-only
network namespace of tests/lsl.rs).

  mne_lsl_peer.py stream SIGNAL_NAME DECISIONS_NAME N_ROWS OUT.json
      MNE-LSL's StreamLSL connects to both outlets, collects N_ROWS samples of the signal
      stream (in a buffer that holds them all), and writes what it saw to OUT.json: sfreq,
      channel names, types, unit multipliers, the last samples (channels × up to N_ROWS), and the
      decision stream's sfreq, names and types.
  mne_lsl_peer.py check_stream OUT.json REF.parquet DECISIONS.parquet STEP_S
      What StreamLSL saw equals the engine's own Parquet output of the same streams: the
      signal's sfreq, names, types, units (µV: unit_mul -6) and every sample (float32); the
      decision stream's sfreq is one per step (1 / STEP_S), and its names are the decoder's.
  mne_lsl_peer.py play REC.edf NAME SECONDS
      MNE-LSL's PlayerLSL plays the first SECONDS of REC (volts, as MNE holds them) on a loop.
  mne_lsl_peer.py check_played REC.edf SECONDS OURS.parquet
      The engine's inlet received a stretch of the played recording in µV: names, types,
      sfreq, and every sample equal to MNE's (× 1e6, float32 tolerance) at the matching offset
      of the loop.
"""
import json
import sys
import time

import numpy as np

def stream(signal_name, decisions_name, n_rows, out):
    from mne_lsl.stream import StreamLSL

    n_rows = int(n_rows)
    sig = StreamLSL(bufsize=600.0, name=signal_name).connect(acquisition_delay=0.001, timeout=30)
    dec = StreamLSL(bufsize=600.0, name=decisions_name).connect(acquisition_delay=0.001, timeout=30)
    # Until the stream has stopped for 2 s. StreamLSL may miss the first few samples pushed
    # while it finishes connecting (it flushes its inlet), so the end of the stream is compared.
    got, last_new, deadline = 0, time.time(), time.time() + 120
    while time.time() < deadline and (got == 0 or time.time() - last_new < 2.0):
        time.sleep(0.05)
        new = sig.n_new_samples
        if new:
            got += new
            last_new = time.time()
            sig.get_data(winsize=1.0 / sig.info["sfreq"])  # marks the samples seen
    assert got >= 0.99 * n_rows, f"StreamLSL received {got} of {n_rows} samples"
    data, _ = sig.get_data(winsize=min(got, n_rows) / sig.info["sfreq"])
    info = sig.info
    result = {
        "sfreq": info["sfreq"],
        "ch_names": info["ch_names"],
        "types": sig.get_channel_types(),
        "unit_mul": [int(ch["unit_mul"]) for ch in info["chs"]],
        "data": data.tolist(),
        "dec_sfreq": dec.info["sfreq"],
        "dec_names": dec.info["ch_names"],
    }
    sig.disconnect()
    dec.disconnect()
    json.dump(result, open(out, "w"))
    print(f"StreamLSL: {got} samples of {len(info['ch_names'])} channels at {info['sfreq']} Hz")


def check_stream(out, ref, decisions, step_s):
    import pyarrow.parquet as pq

    seen = json.load(open(out))
    t = pq.read_table(ref)
    meta = t.schema.metadata
    cols = [c for c in t.column_names if c not in ("time", "sample", "marker")]
    assert seen["sfreq"] == float(meta[b"neurostream.sample_rate"]), seen["sfreq"]
    assert seen["ch_names"] == cols, (seen["ch_names"], cols)
    assert seen["types"] == json.loads(meta[b"neurostream.channel_types"]), seen["types"]
    assert seen["unit_mul"] == [-6] * len(cols), seen["unit_mul"]
    data = np.array(seen["data"])
    ref_data = np.stack([t.column(c).to_numpy() for c in cols])
    n = data.shape[1]
    # StreamLSL's buffer holds the last n samples it received: the end of the stream.
    want = ref_data[:, -n:]
    err = np.abs(data - want).max()
    assert err <= 1e-6 * np.abs(want).max(), f"samples differ by {err}"
    d = pq.read_table(decisions)
    dcols = [c for c in d.column_names if c not in ("time", "sample", "marker")]
    assert abs(seen["dec_sfreq"] - 1.0 / float(step_s)) < 1e-9, seen["dec_sfreq"]
    assert float(d.schema.metadata[b"neurostream.row_rate"]) == 1.0 / float(step_s)
    assert seen["dec_names"] == dcols, (seen["dec_names"], dcols)
    print(f"MNE-LSL StreamLSL read {len(cols)} channels at {seen['sfreq']} Hz (types {sorted(set(seen['types']))}, "
          f"µV) equal to the engine's, and decisions at {seen['dec_sfreq']} Hz")


def _raw(rec, seconds):
    import mne

    raw = mne.io.read_raw_edf(rec, preload=True, verbose="ERROR")
    raw.crop(0, float(seconds) - 1.0 / raw.info["sfreq"])
    return raw


def play(rec, name, seconds):
    from mne_lsl.player import PlayerLSL

    player = PlayerLSL(_raw(rec, seconds), chunk_size=10, name=name, annotations=False).start()
    time.sleep(120)  # the engine's inlet ends the test; the namespace takes the player down
    player.stop()


def check_played(rec, seconds, ours):
    import pyarrow.parquet as pq

    raw = _raw(rec, seconds)
    t = pq.read_table(ours)
    meta = t.schema.metadata
    cols = [c for c in t.column_names if c not in ("time", "sample", "marker")]
    assert cols == raw.ch_names, (cols, raw.ch_names)
    assert float(meta[b"neurostream.sample_rate"]) == raw.info["sfreq"]
    assert json.loads(meta[b"neurostream.units"]) == ["uV"] * len(cols), meta[b"neurostream.units"]
    assert json.loads(meta[b"neurostream.channel_types"]) == raw.get_channel_types()
    ref = raw.get_data() * 1e6
    ours_data = np.stack([t.column(c).to_numpy() for c in cols]).astype(np.float64)
    n, period = ours_data.shape[1], ref.shape[1]
    assert n >= period, f"only {n} samples received"
    looped = np.concatenate([ref] * (n // period + 2), axis=1)
    # The player was already running when the inlet connected: find where the stream started.
    offsets = [k for k in range(period) if np.allclose(looped[:, k], ours_data[:, 0], rtol=1e-5, atol=1e-3)]
    assert offsets, "the first received sample is not a sample of the recording"
    k = offsets[0]
    err = np.abs(looped[:, k:k + n] - ours_data).max()
    assert err <= 1e-5 * np.abs(ref).max(), f"samples differ by {err}"
    print(f"PlayerLSL → engine inlet: {n} samples of {len(cols)} channels in µV equal MNE's (offset {k})")


if __name__ == "__main__":
    {"stream": stream, "check_stream": check_stream, "play": play, "check_played": check_played}[sys.argv[1]](
        *sys.argv[2:])
