"""GDF files written by hand, byte for byte as the GDF 1.x / 2.x layouts define them (MNE's
`_read_gdf_header` reads the same offsets), and neurostream's reading of them checked against
MNE's reader (`mne.io.read_raw_gdf`) and against the values written.

  check_gdf.py write DIR     writes DIR/<variant>.gdf and DIR/<variant>.npy (the physical values
      written, channels x samples, in the file's units) and prints the variant names:
        gdf1_int16     GDF 1.25, 5 channels (EEG-*, EOG-left) int16 in uV, 250 Hz, 1 s records,
                       event table mode 1 (BCI Competition IV codes)
        gdf2_float32   GDF 2.20, 4 channels float32 in uV (code 4275), 256 Hz, 0.5 s records,
                       event table mode 3 (durations)
        gdf2_int32_mV  GDF 2.10, 3 channels int32 in mV (code 4274) with an offset, 100 Hz
        gdf2_mixed     GDF 2.20, int16 / float64 / uint8 channels at 200 Hz and a 100 Hz `Resp`
                       channel (MNE reads neither mixed types nor, without resampling, rates)
  check_gdf.py lies DIR      writes broken variants of gdf1_int16 (prints their names)
  check_gdf.py check FILE.gdf OUT.parquet [mne|npy] [CHANNELS]
      OUT (neurostream's signal layout) equals MNE's reading (`mne`: names, every sample in µV,
      markers on round(onset × sfreq) labelled with the event code) or the values written
      (`npy`, for the channels CHANNELS, comma-separated indices); tolerance 1e-6 of each
      channel's largest magnitude (ours being float32).
"""
import os
import struct
import sys

import numpy as np
import pyarrow.parquet as pq
from signal_table import channels_equal, markers

UNIT_CODES = {"uV": 4275, "mV": 4274, "V": 4256}
TYPES = {"int8": 1, "uint8": 2, "int16": 3, "uint16": 4, "int32": 5, "uint32": 6, "int64": 7, "float32": 16, "float64": 17}


def pad(text, n):
    b = text.encode("latin-1")
    return b + b" " * (n - len(b))


def signals(n, rate, seed):
    t = np.arange(n) / rate
    rng = np.random.default_rng(seed)
    return t, rng


def write_gdf(path, version, labels, units, dtypes, spr, rec_num, rec_den, phys, digi, phys_values, events=None, mode=1, event_rate=None):
    """Writes a GDF file; phys_values[c] holds channel c's physical values (records * spr[c])."""
    ns = len(labels)
    v2 = float(version) >= 1.9
    records = len(phys_values[0]) // spr[0]
    fixed = bytearray(256)
    fixed[0:8] = pad("GDF " + version, 8)
    header_bytes = 256 * (ns + 1)
    if v2:
        fixed[8:74] = pad("X X", 66)
        fixed[88:152] = pad("neurostream test", 64)
        struct.pack_into("<H", fixed, 184, header_bytes // 256)
        struct.pack_into("<q", fixed, 236, records)
        struct.pack_into("<II", fixed, 244, rec_num, rec_den)
        struct.pack_into("<H", fixed, 252, ns)
    else:
        fixed[8:88] = pad("X X", 80)
        fixed[88:168] = pad("neurostream test", 80)
        fixed[168:184] = pad("2026120312000000", 16)
        struct.pack_into("<q", fixed, 184, header_bytes)
        struct.pack_into("<q", fixed, 236, records)
        struct.pack_into("<II", fixed, 244, rec_num, rec_den)
        struct.pack_into("<I", fixed, 252, ns)
    var = bytearray()
    var += b"".join(pad(l, 16) for l in labels)
    var += b"".join(pad("", 80) for _ in labels)
    if v2:
        var += b"".join(pad("", 6) for _ in labels)
        var += b"".join(struct.pack("<H", UNIT_CODES.get(u, 512)) for u in units)
        var += b"".join(struct.pack("<d", p[0]) for p in phys)
        var += b"".join(struct.pack("<d", p[1]) for p in phys)
        var += b"".join(struct.pack("<d", d[0]) for d in digi)
        var += b"".join(struct.pack("<d", d[1]) for d in digi)
        var += b"".join(pad("", 68) for _ in labels)
        var += b"".join(struct.pack("<fff", 100.0, 0.1, 50.0) for _ in labels)
        var += b"".join(struct.pack("<I", s) for s in spr)
        var += b"".join(struct.pack("<I", TYPES[t]) for t in dtypes)
        var += b"".join(struct.pack("<fff", 0.0, 0.0, 0.0) for _ in labels)
        var += b"".join(struct.pack("<fffff", 1.0, 0, 0, 0, 0) if float(version) >= 2.19 else bytes([255]) + bytes(19) for _ in labels)
    else:
        var += b"".join(pad(u, 8) for u in units)
        var += b"".join(struct.pack("<d", p[0]) for p in phys)
        var += b"".join(struct.pack("<d", p[1]) for p in phys)
        var += b"".join(struct.pack("<q", int(d[0])) for d in digi)
        var += b"".join(struct.pack("<q", int(d[1])) for d in digi)
        var += b"".join(pad("", 80) for _ in labels)
        var += b"".join(struct.pack("<I", s) for s in spr)
        var += b"".join(struct.pack("<I", TYPES[t]) for t in dtypes)
        var += bytes(32 * ns)
    assert len(var) == 256 * ns, len(var)
    # Stored values: digital = (physical - pmin) / gain + dmin, rounded for integer types.
    stored, written = [], []
    for c in range(ns):
        gain = (phys[c][1] - phys[c][0]) / (digi[c][1] - digi[c][0])
        d = (np.asarray(phys_values[c], np.float64) - phys[c][0]) / gain + digi[c][0]
        if not dtypes[c].startswith("float"):
            d = np.round(d)
        d = d.astype("<" + np.dtype(dtypes[c]).str[1:])
        stored.append(d)
        written.append((d.astype(np.float64) - digi[c][0]) * gain + phys[c][0])
    body = bytearray()
    for r in range(records):
        for c in range(ns):
            body += stored[c][r * spr[c]:(r + 1) * spr[c]].tobytes()
    table = b""
    if events is not None:
        pos = np.array([e[0] + 1 for e in events], "<u4")
        typ = np.array([e[1] for e in events], "<u2")
        n = len(events)
        rate = event_rate if event_rate is not None else spr[0] * rec_den / rec_num
        if float(version) < 1.94:
            head = struct.pack("<B", mode) + int(rate).to_bytes(3, "little") + struct.pack("<I", n)
        else:
            head = struct.pack("<B", mode) + n.to_bytes(3, "little") + struct.pack("<f", rate)
        table = head + pos.tobytes() + typ.tobytes()
        if mode == 3:
            table += np.zeros(n, "<u2").tobytes() + np.array([e[2] for e in events], "<u4").tobytes()
    with open(path, "wb") as f:
        f.write(bytes(fixed) + bytes(var) + bytes(body) + table)
    return written


def write(out):
    os.makedirs(out, exist_ok=True)
    # gdf1_int16: BCI Competition IV 2a-like channels and codes.
    n, rate = 250 * 12, 250.0
    t, rng = signals(n, rate, 1)
    labels = ["EEG-Fz", "EEG-C3", "EEG-Cz", "EEG-C4", "EOG-left"]
    x = [20 * np.sin(2 * np.pi * (8 + c) * t) + rng.normal(0, 5, n) for c in range(5)]
    events = [(250, 768, 1), (500, 769, 1), (1300, 770, 1), (1301, 1023, 1), (2999, 32766, 1)]
    w = write_gdf(os.path.join(out, "gdf1_int16.gdf"), "1.25", labels, ["uV"] * 5, ["int16"] * 5, [250] * 5, 1, 1,
                  [(-100.0, 100.0)] * 5, [(-32768, 32767)] * 5, x, events, mode=1)
    np.save(os.path.join(out, "gdf1_int16.npy"), np.array(w))
    # gdf2_float32: 0.5 s records, event table mode 3 with durations.
    n, rate = 128 * 20, 256.0
    t, rng = signals(n, rate, 2)
    x = [15 * np.cos(2 * np.pi * (10 + c) * t) + rng.normal(0, 3, n) for c in range(4)]
    events = [(0, 1, 256), (128, 2, 64), (1000, 3, 1), (2000, 4, 500)]
    w = write_gdf(os.path.join(out, "gdf2_float32.gdf"), "2.20", ["C3", "Cz", "C4", "Pz"], ["uV"] * 4, ["float32"] * 4,
                  [128] * 4, 1, 2, [(-1e6, 1e6)] * 4, [(-1e6, 1e6)] * 4, x, events, mode=3)
    np.save(os.path.join(out, "gdf2_float32.npy"), np.array(w))
    # gdf2_int32_mV: millivolts, physical and digital ranges offset from each other.
    n, rate = 100 * 15, 100.0
    t, rng = signals(n, rate, 3)
    x = [0.05 * np.sin(2 * np.pi * 3 * t) + 0.01 * rng.normal(0, 1, n) + 0.2 * c for c in range(3)]
    w = write_gdf(os.path.join(out, "gdf2_int32_mV.gdf"), "2.10", ["EEG 1", "EEG 2", "EEG 3"], ["mV"] * 3, ["int32"] * 3,
                  [100] * 3, 1, 1, [(-1.0, 3.0)] * 3, [(-1e6, 3e6)] * 3, x, [(10, 7, 1)], mode=1)
    np.save(os.path.join(out, "gdf2_int32_mV.npy"), np.array(w))
    # gdf2_mixed: per-channel types, and a channel at half the rate.
    records, rate = 10, 200.0
    t, rng = signals(200 * records, rate, 4)
    x = [30 * np.sin(2 * np.pi * 5 * t), rng.normal(0, 40, t.size), 2.0 * (np.arange(t.size) % 100)]
    resp = 500 + 100 * np.sin(2 * np.pi * 0.3 * np.arange(100 * records) / 100.0)
    w = write_gdf(os.path.join(out, "gdf2_mixed.gdf"), "2.20", ["EEG-A", "EEG-B", "Trigger", "Resp"], ["uV", "uV", "", ""],
                  ["int16", "float64", "uint8", "uint16"], [200, 200, 200, 100], 1, 1,
                  [(-200.0, 200.0), (-1.0, 1.0), (0.0, 255.0), (0.0, 65535.0)],
                  [(-32768, 32767), (-1.0, 1.0), (0, 255), (0, 65535)], x + [resp], [(400, 9, 1)], mode=1)
    np.save(os.path.join(out, "gdf2_mixed.npy"), np.array(w[:3]))
    np.save(os.path.join(out, "gdf2_mixed_resp.npy"), np.array(w[3:]))
    print("gdf1_int16 gdf2_float32 gdf2_int32_mV gdf2_mixed")


def lies(out):
    """Broken copies of gdf1_int16.gdf (written by `write` first)."""
    src = open(os.path.join(out, "gdf1_int16.gdf"), "rb").read()
    ns = 5
    type_at = 256 + ns * (16 + 80 + 8 + 8 + 8 + 8 + 8 + 80 + 4)
    dmin_at = 256 + ns * (16 + 80 + 8 + 8 + 8)
    header_end = 256 * (ns + 1)
    record = 250 * 2 * ns
    variants = {
        "truncated": src[:header_end + 11 * record + 100],
        "not_gdf": b"EDF 1.00" + src[8:],
        "float128": src[:type_at + 4] + struct.pack("<I", 18) + src[type_at + 8:],
        "flat_scale": src[:dmin_at + 8] + struct.pack("<q", 32767) + src[dmin_at + 16:],
        "lying_events": src[:header_end + 12 * record + 4] + struct.pack("<I", 10**8) + src[header_end + 12 * record + 8:],
        "event_mode": src[:header_end + 12 * record] + bytes([7]) + src[header_end + 12 * record + 1:],
        "many_signals": src[:252] + struct.pack("<I", 10**6) + src[256:],
    }
    for name, data in variants.items():
        open(os.path.join(out, name + ".gdf"), "wb").write(data)
    print(" ".join(variants))


def check(gdf, out, against="mne", channels=None):
    t = pq.read_table(out)
    meta = t.schema.metadata
    sf = float(meta[b"neurostream.sample_rate"])
    cols = [c for c in t.column_names if c not in ("time", "sample", "marker")]
    assert (t.column("sample").to_numpy() == np.arange(t.num_rows)).all()
    if against == "mne":
        import mne
        mne.set_log_level("ERROR")
        raw = mne.io.read_raw_gdf(gdf, preload=True)
        assert abs(sf - raw.info["sfreq"]) < 1e-9, (sf, raw.info["sfreq"])
        assert cols == raw.ch_names, (cols, raw.ch_names)
        want = raw.get_data() * 1e6  # every channel written here is a voltage
        want_markers = sorted((int(round(a["onset"] * sf)), a["description"]) for a in raw.annotations)
    else:
        want = np.load(gdf[:-4] + ".npy")
        if channels:
            want = want[[int(c) for c in channels.split(",")]]
        want_markers = None
    assert t.num_rows == want.shape[1], (t.num_rows, want.shape)
    worst = channels_equal(t, cols, want)
    got = sorted(markers(t))
    if want_markers is not None:
        assert got == want_markers, f"markers differ:\n ours {got}\n  mne {want_markers}"
    print(f"{os.path.basename(gdf)} against {against}: {len(cols)} channels x {t.num_rows} samples, {len(got)} markers equal "
          f"(max error {worst:.1e})")


if __name__ == "__main__":
    {"write": write, "lies": lies, "check": check}[sys.argv[1]](*sys.argv[2:])
