"""BrainVision files written by MNE / pybv (and by hand for the layouts pybv does not write),
and neurostream's reading of them checked against MNE's reader (`mne.io.read_raw_brainvision`).

  check_brainvision.py write REC.edf DIR   writes DIR/<variant>.vhdr (+ .eeg, .vmrk) from the
      first 8 channels of a real recording, with its annotations plus stimulus markers:
        export_float32   mne.export.export_raw (pybv, IEEE_FLOAT_32, µV)
        pybv_int16       pybv.write_brainvision, INT_16 at a resolution per channel (0.1 µV or coarser)
        vectorized_int32 by hand: INT_32, VECTORIZED, DataPoints, Latin-1 text, channels in
                         µV, mV and V, an EOG channel (HEOGL) and a misc one in °C (`C`)
        ascii_comma      by hand: ASCII, multiplexed, a line of names (SkipLines=1), decimal
                         commas, blank-separated values in µV
      and prints the variant names.
  check_brainvision.py check REC.vhdr OUT.parquet
      OUT (neurostream's signal layout) equals MNE's reading: channel names, types (eeg, eog,
      misc), units (MNE's SI values × 1e6 for voltages: µV; others as written), every sample
      (tolerance 1e-6 of the channel's largest magnitude, ours being float32), and markers
      (each annotation on the sample round(onset × sfreq), labelled as MNE describes it).
"""
import json
import os
import sys

import mne
import numpy as np
import pyarrow.parquet as pq
from signal_table import markers

mne.set_log_level("ERROR")


def source_raw(rec):
    raw = mne.io.read_raw_edf(rec, preload=True)
    raw.pick(raw.ch_names[:8])
    raw.crop(0, 30.0 - 1.0 / raw.info["sfreq"])
    # Stimulus markers besides the recording's own annotations (one with a duration).
    onsets = np.arange(1.0, 29.0, 2.5)
    raw.annotations.append(onsets, [0.0] * (len(onsets) - 1) + [0.5], ["Stimulus/S  1"] * len(onsets))
    return raw


def write(rec, out):
    import pybv
    raw = source_raw(rec)
    os.makedirs(out, exist_ok=True)
    mne.export.export_raw(os.path.join(out, "export_float32.vhdr"), raw, fmt="brainvision", overwrite=True)

    sf = raw.info["sfreq"]
    data_uv = raw.get_data() * 1e6
    events = [
        {"onset": int(round(a["onset"] * sf)), "duration": max(1, int(round(a["duration"] * sf))),
         "description": a["description"].split("/")[-1], "type": "Stimulus" if "/" in a["description"] else "Comment"}
        for a in raw.annotations
    ]
    # Per channel, the finest of 0.1 µV, 0.2 µV, 0.5 µV, 1 µV ... that keeps it in int16.
    steps = np.array([0.1, 0.2, 0.5, 1, 2, 5, 10])
    int16_resolution = np.array([steps[np.argmax(steps * 32000 >= np.abs(x).max())] for x in data_uv])
    # pybv takes volts and writes a stimulus as `S  N` from the number N.
    numbered = [dict(e, description=1) if e["type"] == "Stimulus" else e for e in events]
    pybv.write_brainvision(data=raw.get_data(), sfreq=sf, ch_names=raw.ch_names, fname_base="pybv_int16", folder_out=out,
                           events=numbered, resolution=int16_resolution, unit="µV", fmt="binary_int16",
                           overwrite=True)

    # By hand: INT_32, VECTORIZED, mixed units, Latin-1 (as BrainVision Recorder writes with
    # Codepage=ANSI), an EOG channel and a temperature.
    names = ["Fp1", "Fp2", "C3", "C4", "HEOGL", "O1", "O2", "Temp"]
    units = ["µV", "µV", "mV", "µV", "µV", "V", "µV", "C"]
    resolutions = [0.05, 0.05, 0.0001, 0.05, 0.05, 1e-7, 0.05, 0.01]
    scale_to_unit = {"µV": 1.0, "mV": 1e-3, "V": 1e-6}
    n = data_uv.shape[1]
    ints = np.empty((8, n), dtype="<i4")
    for c in range(8):
        x = data_uv[c] if units[c] != "C" else 36.5 + 0.01 * np.arange(n) % 1.0
        x = x * scale_to_unit.get(units[c], 1.0)
        ints[c] = np.round(x / resolutions[c]).astype("<i4")
    ints.tofile(os.path.join(out, "vectorized_int32.eeg"))  # channel after channel
    lines = [
        "Brain Vision Data Exchange Header File Version 1.0",
        "; written by check_brainvision.py",
        "",
        "[Common Infos]",
        "Codepage=ANSI",
        "DataFile=vectorized_int32.eeg",
        "MarkerFile=vectorized_int32.vmrk",
        "DataFormat=BINARY",
        "DataOrientation=VECTORIZED",
        "NumberOfChannels=8",
        f"DataPoints={n}",
        f"SamplingInterval={1e6 / sf:g}",
        "",
        "[Binary Infos]",
        "BinaryFormat=INT_32",
        "",
        "[Channel Infos]",
    ]
    lines += [f"Ch{i + 1}={names[i]},,{resolutions[i]:g},{units[i]}" for i in range(8)]
    lines += ["", "[Comment]", "A=free text, not parameters", ""]
    open(os.path.join(out, "vectorized_int32.vhdr"), "wb").write("\r\n".join(lines).encode("latin-1"))
    mk = [
        "Brain Vision Data Exchange Marker File, Version 1.0",
        "",
        "[Common Infos]",
        "Codepage=ANSI",
        "DataFile=vectorized_int32.eeg",
        "",
        "[Marker Infos]",
        "Mk1=New Segment,,1,1,0,20200101120000000000",
    ]
    for i, e in enumerate(events):
        desc = e["description"].replace(",", r"\1")
        mk.append(f"Mk{i + 2}={e['type']},{desc},{e['onset'] + 1},{e['duration']},0")
    # ASCII: MNE reads the marker file in the locale's encoding.
    mk.append(f"Mk{len(events) + 2}=Comment,cafe\\1 ok,{n // 2},1,0")
    open(os.path.join(out, "vectorized_int32.vmrk"), "wb").write("\r\n".join(mk).encode("latin-1"))

    # By hand: ASCII, multiplexed, a line of channel names first (SkipLines=1), a decimal comma,
    # blank-separated values in µV (as BrainVision Analyzer exports them); the same markers.
    names = raw.ch_names
    text = [" ".join(names)] + [" ".join(f"{v:.4f}".replace(".", ",") for v in data_uv[:, i]) for i in range(n)]
    open(os.path.join(out, "ascii_comma.dat"), "w").write("\r\n".join(text) + "\r\n")
    header = [
        "Brain Vision Data Exchange Header File Version 1.0",
        "",
        "[Common Infos]",
        "Codepage=ANSI",
        "DataFile=ascii_comma.dat",
        "MarkerFile=ascii_comma.vmrk",
        "DataFormat=ASCII",
        "DataOrientation=MULTIPLEXED",
        f"NumberOfChannels={len(names)}",
        f"DataPoints={n}",
        f"SamplingInterval={1e6 / sf:g}",
        "",
        "[ASCII Infos]",
        "DecimalSymbol=,",
        "SkipLines=1",
        "SkipColumns=0",
        "",
        "[Channel Infos]",
    ]
    header += [f"Ch{i + 1}={names[i]},,1,µV" for i in range(len(names))]
    open(os.path.join(out, "ascii_comma.vhdr"), "wb").write(("\r\n".join(header) + "\r\n").encode("latin-1"))
    open(os.path.join(out, "ascii_comma.vmrk"), "wb").write(
        "\r\n".join(mk).replace("vectorized_int32.eeg", "ascii_comma.dat").encode("latin-1"))
    print("export_float32 pybv_int16 vectorized_int32 ascii_comma")


def check(vhdr, out):
    raw = mne.io.read_raw_brainvision(vhdr, preload=True)
    t = pq.read_table(out)
    meta = t.schema.metadata
    sf = float(meta[b"neurostream.sample_rate"])
    assert abs(sf - raw.info["sfreq"]) < 1e-9, (sf, raw.info["sfreq"])
    cols = [c for c in t.column_names if c not in ("time", "sample", "marker")]
    assert cols == raw.ch_names, (cols, raw.ch_names)
    types = json.loads(meta[b"neurostream.channel_types"])
    units = json.loads(meta[b"neurostream.units"])
    assert types == raw.get_channel_types(), (types, raw.get_channel_types())
    ref = raw.get_data()
    assert t.num_rows == ref.shape[1], (t.num_rows, ref.shape)
    assert (t.column("sample").to_numpy() == np.arange(t.num_rows)).all()
    worst = 0.0
    for i, c in enumerate(cols):
        orig = raw._orig_units.get(c, "")
        voltage = orig in ("V", "mV", "µV", "uV", "nV")
        want = ref[i] * (1e6 if voltage else 1.0)
        assert units[i] == ("uV" if voltage else orig), (c, units[i], orig)
        ours = t.column(c).to_numpy().astype(np.float64)
        scale = max(np.abs(want).max(), 1e-12)
        err = np.abs(ours - want).max() / scale
        worst = max(worst, err)
        assert err <= 1e-6, f"{c}: max error {err:.2e} of its largest magnitude"
    want_markers = sorted((int(round(a["onset"] * sf)), a["description"]) for a in raw.annotations)
    got = sorted(markers(t))
    assert got == want_markers, f"markers differ:\n ours {got[:6]}...\n  mne {want_markers[:6]}..."
    print(f"{os.path.basename(vhdr)}: {len(cols)} channels × {t.num_rows} samples, {len(got)} markers equal MNE's "
          f"(max error {worst:.1e}; types {sorted(set(types))})")


if __name__ == "__main__":
    {"write": write, "check": check}[sys.argv[1]](*sys.argv[2:])
