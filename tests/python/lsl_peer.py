"""The pylsl side of the LSL tests (run inside a loopback-only network namespace).

  lsl_peer.py outlet NAME SECONDS OUT.npz [SKIP_FROM]
      Publishes an 8-channel float32 stream NAME at 250 Hz (labels C1..C8, unit uV) in chunks of
      10 samples at real-time pace, with explicit time stamps, and a marker stream NAME-markers
      with "stim" at the time stamp of every 100th sample; waits up to 20 s for a consumer
      first; with SKIP_FROM, the 10-sample chunk starting there is never sent (a loss). Saves
      the data, time stamps and marker times to OUT.npz, then lingers 3 s.
  lsl_peer.py inlet NAME OUT.npz [ROWS MARKS]
      Resolves NAME (20 s), pulls samples until ROWS samples and MARKS markers arrived (or 5 s
      pass without a sample), saves the samples, the channel labels and the marker strings of
      NAME-markers (when it exists) to OUT.npz, and disconnects.
"""
import json
import sys
import time

import numpy as np
import pylsl


def outlet(name, seconds, out, skip_from="-1", units="uV"):
    fs, n_ch = 250.0, 8
    info = pylsl.StreamInfo(name, "EEG", n_ch, fs, "float32", name + "-uid")
    chans = info.desc().append_child("channels")
    for c in range(n_ch):
        ch = chans.append_child("channel")
        ch.append_child_value("label", f"C{c + 1}")
        # "si": volts with MNE-LSL's unit convention (the power of ten of the SI unit).
        ch.append_child_value("unit", "0" if units == "si" else "uV")
        ch.append_child_value("type", "EEG")
    out_sig = pylsl.StreamOutlet(info, 10, 360)
    out_mk = pylsl.StreamOutlet(pylsl.StreamInfo(name + "-markers", "Markers", 1, 0, "string", name + "-mk"))
    if not out_sig.wait_for_consumers(20.0):
        raise SystemExit("no consumer connected")
    out_mk.wait_for_consumers(3.0)  # the marker consumer, when there is one
    total = int(float(seconds) * fs)
    rng = np.random.default_rng(0)
    data = (rng.normal(size=(total, n_ch)) * 20).astype(np.float32)
    t0 = pylsl.local_clock()
    stamps = t0 + np.arange(total) / fs
    marks = []
    for s in range(0, total, 10):
        while pylsl.local_clock() < stamps[s]:
            time.sleep(0.001)
        for k in range(s, s + 10):
            if k % 100 == 0:
                out_mk.push_sample(["stim"], stamps[k])
                marks.append(stamps[k])
        if s == int(skip_from):
            continue  # a lost chunk: its 10 samples never leave
        chunk = data[s:s + 10] * np.float32(1e-6) if units == "si" else data[s:s + 10]
        out_sig.push_chunk(chunk.tolist(), stamps[s + 9])
    np.savez(out, data=data, stamps=stamps, marks=np.array(marks))
    time.sleep(3.0)


def inlet(name, out, want_rows="0", want_marks="0"):
    streams = pylsl.resolve_byprop("name", name, 1, 20.0)
    if not streams:
        raise SystemExit(f"stream {name} not found")
    inl = pylsl.StreamInlet(streams[0], max_buflen=3600)
    info = inl.info(5.0)
    ch = info.desc().child("channels").child("channel")
    labels, types = [], []
    while not ch.empty():
        labels.append(ch.child_value("label"))
        types.append(ch.child_value("type"))
        ch = ch.next_sibling()
    mk_streams = pylsl.resolve_byprop("name", name + "-markers", 1, 2.0)
    mk = pylsl.StreamInlet(mk_streams[0]) if mk_streams else None
    inl.open_stream(5.0)
    if mk is not None:
        mk.open_stream(5.0)
    rows, marks, last = [], [], time.time()
    want_rows, want_marks = int(want_rows), int(want_marks)
    while time.time() - last < 5.0:
        if want_rows and len(rows) >= want_rows and len(marks) >= want_marks:
            break
        chunk, _ = inl.pull_chunk(timeout=0.2)
        if chunk:
            rows.extend(chunk)
            last = time.time()
        if mk is not None:
            while True:
                s, t = mk.pull_sample(timeout=0.0)
                if s is None:
                    break
                marks.append(s[0])
    np.savez(out, data=np.array(rows, dtype=np.float32), labels=np.array(labels), types=np.array(types), marks=np.array(marks))


def classes(name, out, want):
    """Reads the string outlet NAME (a decoder's class names) until WANT samples came, and
    writes them, with the stream's nominal rate and format, to OUT (JSON)."""
    import json
    streams = pylsl.resolve_byprop("name", name, 1, 20.0)
    if not streams:
        raise SystemExit(f"stream {name} not found")
    inl = pylsl.StreamInlet(streams[0], max_buflen=3600)
    info = inl.info(5.0)
    inl.open_stream(5.0)
    got, last = [], time.time()
    while time.time() - last < 5.0 and len(got) < int(want):
        s, _ = inl.pull_sample(timeout=0.2)
        if s is not None:
            got.append(s[0])
            last = time.time()
    json.dump({"classes": got, "rate": info.nominal_srate(), "format": info.channel_format(),
               "source_id": info.source_id()}, open(out, "w"))


def check_classes(got, decisions):
    """The class names received equal the decisions' `class` index mapped through the p:<class>
    columns, in order; the outlet is a string stream at the decisions' rate."""
    import json
    import pyarrow.parquet as pq
    seen = json.load(open(got))
    t = pq.read_table(decisions)
    names = [c[2:] for c in t.column_names if c.startswith("p:")]
    want = [names[int(k)] for k in t.column("class").to_numpy()]
    assert seen["format"] == pylsl.cf_string, seen["format"]
    assert abs(seen["rate"] - float(t.schema.metadata[b"neurostream.row_rate"])) < 1e-9, seen["rate"]
    assert seen["classes"] == want[-len(seen["classes"]):] and len(seen["classes"]) >= 0.99 * len(want), \
        (len(seen["classes"]), len(want), seen["classes"][:5], want[:5])
    print(f"{len(seen['classes'])} decisions arrived as class names ({sorted(set(want))}) at {seen['rate']} Hz, "
          f"source id {seen['source_id']}")


if __name__ == "__main__" and not sys.argv[1].startswith("check"):
    {"outlet": outlet, "inlet": inlet, "classes": classes}[sys.argv[1]](*sys.argv[2:])


def check_inlet(sent, ours, units="uV"):
    """OURS (Parquet from the `lsl` source) holds exactly the samples SENT, at their times."""
    import pyarrow.parquet as pq
    s = np.load(sent)
    t = pq.read_table(ours)
    cols = [f"C{c + 1}" for c in range(8)]
    assert [c for c in t.column_names if c.startswith("C")] == cols, t.column_names
    meta = t.schema.metadata
    assert json.loads(meta[b"neurostream.channel_types"]) == ["eeg"] * 8, meta.get(b"neurostream.channel_types")
    assert json.loads(meta[b"neurostream.units"]) == ["uV"] * 8, meta.get(b"neurostream.units")
    got = np.stack([t.column(c).to_numpy() for c in cols], axis=1)
    assert got.shape == s["data"].shape, f"{got.shape} samples vs {s['data'].shape} sent"
    if units == "si":
        # Sent in volts (float32), read back in µV: equal within float32 rounding.
        np.testing.assert_allclose(got, s["data"], rtol=1e-5, atol=1e-4)
    else:
        assert (got == s["data"]).all(), "sample values differ"
    dt = np.abs(t.column("time").to_numpy() - s["stamps"])
    assert dt.max() <= 0.006, f"time column differs from the LSL time stamps by up to {dt.max() * 1e3:.2f} ms"
    rows = [r for r, m in enumerate(t.column("marker").to_pylist()) if m == "stim"]
    assert rows == list(range(0, len(got), 100)), f"markers on rows {rows[:5]}..."
    print(f"{len(got)} samples, {len(rows)} markers as sent; times within {dt.max() * 1e3:.2f} ms")


def check_outlet(got, ref, markers):
    """GOT (pulled by a pylsl inlet) holds exactly the rows of REF (the same stream to Parquet)."""
    import pyarrow.parquet as pq
    g = np.load(got)
    t = pq.read_table(ref)
    cols = [c for c in t.column_names if c not in ("time", "sample", "marker")]
    want = np.stack([t.column(c).to_numpy() for c in cols], axis=1)
    assert list(g["labels"]) == cols, f"labels {list(g['labels'])} vs {cols}"
    meta = t.schema.metadata
    want_types = json.loads(meta.get(b"neurostream.channel_types", b"[]")) or [""] * len(cols)
    assert list(g["types"]) == want_types, f"types {list(g['types'])} vs {want_types}"
    assert g["data"].shape == want.shape, f"{g['data'].shape} pulled vs {want.shape} written"
    assert (g["data"] == want).all(), "pulled samples differ"
    want_marks = [m for m in t.column("marker").to_pylist() if m] if markers == "yes" else []
    assert list(g["marks"]) == want_marks, f"markers {list(g['marks'])} vs {want_marks}"
    print(f"pylsl pulled {len(want)} samples and {len(want_marks)} markers, as written")


if __name__ == "__main__" and sys.argv[1].startswith("check"):
    {"check_inlet": check_inlet, "check_outlet": check_outlet, "check_classes": check_classes}[sys.argv[1]](
        *sys.argv[2:])
