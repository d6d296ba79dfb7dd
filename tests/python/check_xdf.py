"""XDF files written here to the specification (as LabRecorder writes them; pyxdf reads, it
does not write), and neurostream's reading of them checked against pyxdf's `load_xdf`.

  check_xdf.py write REC.edf DIR   writes from the first 8 channels of a real recording (60 s)
      and its annotations:
        float32.xdf  EEG float32 in microvolts, chunks of 32 samples whose first sample alone
                     carries a time stamp, a marker stream, clock offsets drifting linearly
                     (EEG) and constant (markers, a different host), boundary chunks, footers,
                     chunk lengths of 1, 4 and 8 bytes, an unrelated 1 Hz stream in between
        double64_volts.xdf  the EEG as double64 in volts (unit `V`), every time stamp written
        int16.xdf    the EEG as int16 at 1 µV resolution (unit `uV`), no clock offsets
      and prints their names.
  check_xdf.py check REC.xdf OUT.parquet STREAM
      OUT (neurostream's signal layout) equals pyxdf's stream STREAM (synchronize_clocks=True,
      dejitter_timestamps=False): channel labels, units (µV), types, every sample (float32
      tolerance) in µV, and markers: every marker-stream sample on the EEG sample nearest its
      clock-corrected time stamp, with its text.
"""
import os
import struct
import sys

import numpy as np

T0 = 1000.0  # the recording machine's clock at the first EEG sample


def chunk(tag, content, width=None):
    n = len(content) + 2
    if width is None:
        width = 1 if n < 256 else 4
    fmt = {1: "<B", 4: "<I", 8: "<Q"}[width]
    return struct.pack("<B", width) + struct.pack(fmt, n) + struct.pack("<H", tag) + content


def varlen(n):
    return (struct.pack("<BB", 1, n) if n < 256 else struct.pack("<BI", 4, n)) if n < 2**32 else struct.pack("<BQ", 8, n)


def header_xml(name, stype, n, srate, fmt, labels, unit, ch_type):
    chans = "".join(f"<channel><label>{l}</label><unit>{unit}</unit><type>{ch_type}</type></channel>" for l in labels)
    return (f"<?xml version=\"1.0\"?><info><name>{name}</name><type>{stype}</type><channel_count>{n}</channel_count>"
            f"<nominal_srate>{srate}</nominal_srate><channel_format>{fmt}</channel_format><source_id>{name}-1</source_id>"
            f"<desc><channels>{chans}</channels></desc></info>").encode()


def samples(sid, rows, stamps, fmt):
    """A Samples chunk: rows (n × c numeric, or list of strings), stamps (None = no time stamp)."""
    out = struct.pack("<I", sid) + varlen(len(rows))
    for row, t in zip(rows, stamps):
        out += struct.pack("<B", 0) if t is None else struct.pack("<Bd", 8, t)
        if fmt == "string":
            b = row.encode()
            out += varlen(len(b)) + b
        else:
            out += np.asarray(row, dtype={"float32": "<f4", "double64": "<f8", "int16": "<i2"}[fmt]).tobytes()
    return out


def write_one(path, eeg, labels, annotations, fmt, unit, every_stamp, clock):
    n, c = eeg.shape
    fs = 100.0
    eeg_raw_t = T0 + np.arange(n) / fs
    eeg_off = lambda t: 0.5 + 1e-5 * (t - T0)  # noqa: E731
    mk_off = -0.25
    out = b"XDF:" + chunk(1, b"<?xml version=\"1.0\"?><info><version>1.0</version></info>")
    out += chunk(2, struct.pack("<I", 1) + header_xml("EEG-amp", "EEG", c, fs, fmt, labels, unit, "EEG"))
    out += chunk(2, struct.pack("<I", 2) + header_xml("Markers", "Markers", 1, 0, "string", ["marker"], "", "Markers"))
    out += chunk(2, struct.pack("<I", 7) + header_xml("Battery", "Misc", 1, 1, "float32", ["level"], "%", "misc"))
    # Markers at the EEG samples of the annotations, on their own host's clock.
    corrected = eeg_raw_t + eeg_off(eeg_raw_t)
    mk = [(int(round(on * fs)), text) for on, text in annotations]
    mk_t = [corrected[s] - mk_off for s, _ in mk]
    k, m_next, widths = 0, 0, [1, 4, 8]
    while k < n:
        rows = eeg[k:k + 32]
        stamps = [eeg_raw_t[k + j] if (every_stamp or j == 0) else None for j in range(len(rows))]
        out += chunk(3, samples(1, rows, stamps, fmt), width=None if k else 8)
        if clock and k % 500 == 0:
            t = eeg_raw_t[k]
            out += chunk(4, struct.pack("<Idd", 1, t, eeg_off(t)))
            out += chunk(4, struct.pack("<Idd", 2, t, mk_off))
        while m_next < len(mk) and mk[m_next][0] < k + 32:
            out += chunk(3, samples(2, [mk[m_next][1]], [mk_t[m_next]], "string"), width=widths[m_next % 3])
            m_next += 1
        if k % 1000 == 0:
            out += chunk(3, samples(7, [[99.0 - k / 1000]], [eeg_raw_t[k]], "float32"))
            out += chunk(5, bytes(range(16)))
        k += 32
    for sid in (1, 2, 7):
        out += chunk(6, struct.pack("<I", sid) + b"<?xml version=\"1.0\"?><info><first_timestamp>0</first_timestamp></info>")
    open(path, "wb").write(out)


def write(rec, out):
    import mne
    raw = mne.io.read_raw_edf(rec, preload=True, verbose="ERROR")
    raw.pick(raw.ch_names[:8]).crop(0, 60.0 - 0.01)
    eeg_uv = raw.get_data().T * 1e6
    ann = [(a["onset"], a["description"]) for a in raw.annotations]
    os.makedirs(out, exist_ok=True)
    write_one(os.path.join(out, "float32.xdf"), eeg_uv.astype(np.float32), raw.ch_names, ann, "float32",
              "microvolts", False, True)
    write_one(os.path.join(out, "double64_volts.xdf"), eeg_uv / 1e6, raw.ch_names, ann, "double64", "V", True, True)
    write_one(os.path.join(out, "int16.xdf"), np.round(eeg_uv).astype(np.int16), raw.ch_names, ann, "int16", "uV",
              True, False)
    # float32.xdfz: the same gzip-compressed (pyxdf reads `.xdfz` files so).
    import gzip
    with open(os.path.join(out, "float32.xdf"), "rb") as f, gzip.open(os.path.join(out, "float32.xdfz"), "wb") as z:
        z.write(f.read())
    print("float32 double64_volts int16")


def check(rec, out, stream):
    import json
    import pyarrow.parquet as pq
    from signal_table import markers
    import pyxdf
    streams, _ = pyxdf.load_xdf(rec, synchronize_clocks=True, dejitter_timestamps=False)
    by_name = {s["info"]["name"][0]: s for s in streams}
    s = by_name[stream]
    chans = s["info"]["desc"][0]["channels"][0]["channel"]
    labels = [ch["label"][0] for ch in chans]
    unit = chans[0]["unit"][0]
    factor = {"V": 1e6, "microvolts": 1.0, "uV": 1.0}[unit]
    t = pq.read_table(out)
    meta = t.schema.metadata
    cols = [c for c in t.column_names if c not in ("time", "sample", "marker")]
    assert cols == labels, (cols, labels)
    assert json.loads(meta[b"neurostream.units"]) == ["uV"] * len(cols), meta[b"neurostream.units"]
    assert json.loads(meta[b"neurostream.channel_types"]) == ["eeg"] * len(cols)
    assert float(meta[b"neurostream.sample_rate"]) == float(s["info"]["nominal_srate"][0])
    ref = np.asarray(s["time_series"], dtype=np.float64) * factor
    ours = np.stack([t.column(c).to_numpy() for c in cols], axis=1).astype(np.float64)
    assert ours.shape == ref.shape, (ours.shape, ref.shape)
    err = np.abs(ours - ref).max() / np.abs(ref).max()
    assert err <= 1e-6, f"samples differ by {err:.2e} of the largest"
    times = np.asarray(s["time_stamps"])
    want = []
    for m in (x for x in streams if x["info"]["channel_format"][0] == "string"):
        for ts, (text,) in zip(m["time_stamps"], m["time_series"]):
            want.append((int(np.argmin(np.abs(times - ts))), text))
    got = markers(t)
    assert sorted(got) == sorted(want), f"markers differ:\n ours {sorted(got)[:5]}\n pyxdf {sorted(want)[:5]}"
    print(f"{os.path.basename(rec)}: {ours.shape[1]} channels × {ours.shape[0]} samples and {len(got)} markers "
          f"equal pyxdf's (max error {err:.1e})")


def inspect(rec, text):
    """TEXT (`neurostream inspect REC`) lists pyxdf's streams: id, name, type, channel count,
    value format and nominal rate, in file order."""
    import pyxdf
    streams, _ = pyxdf.load_xdf(rec)
    out = open(text).read().splitlines()
    listed = out[out.index("streams:") + 1:out.index(next(l for l in out if l.startswith("signal:")))]
    want = []
    for s in sorted(streams, key=lambda s: s["info"]["stream_id"]):
        i = s["info"]
        fmt = {"float32": "Float32", "double64": "Double64", "int16": "Int16", "string": "String"}[i["channel_format"][0]]
        want.append(f"  {i['stream_id']:>3}  {i['name'][0]} ({i['type'][0]}): {i['channel_count'][0]} channels of "
                    f"{fmt} at {float(i['nominal_srate'][0]):g} Hz")
    assert listed == want, (listed, want)
    print(f"{rec}: inspect lists pyxdf's {len(want)} streams")


if __name__ == "__main__":
    {"write": write, "check": check, "inspect": inspect}[sys.argv[1]](*sys.argv[2:])
