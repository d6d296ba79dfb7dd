"""Raw FIF files written by MNE itself (`raw.save`) from a bundled real EEG recording, and
neurostream's reading of them checked against `mne.io.read_raw_fif`.

No MEG recording can be bundled (the MNE sample data are hundreds of MB), so the MEG channels
are the recording's EEG scaled to MEG magnitudes: 3 magnetometers (T, ~100 fT) and 3 planar
gradiometers (T/m, ~10 fT/cm), next to EEG, EOG and ECG (V), a stim channel with trigger pulses
and a misc channel, with the recording's annotations, a measurement date and a first sample of
1000 (as an acquisition that started earlier).

  check_fif.py write REC.edf DIR   writes DIR/single.fif (float32), DIR/int.fif (int32 with
      per-channel calibrations, so cal × range matters), DIR/double_raw.fif (float64, split
      into several files of ~1.2 MB: double_raw.fif, double_raw-1.fif, ...), DIR/nodate.fif (no
      measurement date), DIR/skips.fif (acquisition skips of 1, 2 and 4 buffers, the first
      before any data) and prints them.
  check_fif.py example REC.edf OUT.fif   the bundled MEG example's file: the first 60 s, float32.
  check_fif.py check REC.fif OUT.parquet
      OUT (neurostream's signal layout) equals MNE's reading: names, types, units (fT, fT/cm,
      µV; stim and misc as written), every sample (MNE's SI values × 1e15 / 1e13 / 1e6; float32
      tolerance), and markers: the annotations at `mne.events_from_annotations` samples and the
      stim events of `mne.find_events` (relative to the first sample), labelled with their
      description and value.
"""
import json
import os
import sys

import mne
import numpy as np

mne.set_log_level("ERROR")


def make_raw(rec):
    src = mne.io.read_raw_edf(rec, preload=True)
    x = src.get_data()  # 8 channels, volts
    n = x.shape[1]
    sf = src.info["sfreq"]
    names = ["MEG 0111", "MEG 0121", "MEG 0131", "MEG 0112", "MEG 0113", "MEG 0122", "EEG 001", "EEG 002",
             "EOG 061", "ECG 063", "STI 014", "MISC 001"]
    types = ["mag"] * 3 + ["grad"] * 3 + ["eeg", "eeg", "eog", "ecg", "stim", "misc"]
    data = np.zeros((len(names), n))
    data[0:3] = x[0:3] * 1e-6  # ~1e-13 T
    data[3:6] = x[3:6] * 1e-5  # ~1e-11 T/m
    data[6:8] = x[6:8]
    data[8] = x[0] - x[1]
    data[9] = x[2] + x[3]
    stim = np.zeros(n)
    for k, start in enumerate(range(int(2 * sf), n - 20, int(7.3 * sf))):
        stim[start:start + 10] = 1 + k % 3
    data[10] = stim
    data[11] = 36.5 + 0.001 * np.arange(n)
    info = mne.create_info(names, sf, types)
    info.set_meas_date(1_600_000_000)
    raw = mne.io.RawArray(data, info, first_samp=1000)
    onsets = src.annotations.onset + 1000 / sf  # relative to the measurement date
    raw.set_annotations(mne.Annotations(onsets, src.annotations.duration, src.annotations.description,
                                        orig_time=raw.info["meas_date"]))
    return raw


def write(rec, out):
    os.makedirs(out, exist_ok=True)
    raw = make_raw(rec)
    raw.save(os.path.join(out, "single.fif"), fmt="single", overwrite=True)
    # int32 needs calibrations that keep the values in range: cal × range per channel.
    ints = raw.copy()
    for ch, cal in zip(ints.info["chs"], [1e-18] * 3 + [1e-16] * 3 + [1e-10] * 4 + [1.0, 1e-6]):
        ch["cal"] = cal
    ints = mne.io.RawArray(raw.get_data(), ints.info, first_samp=1000)
    ints.set_annotations(raw.annotations)
    ints.save(os.path.join(out, "int.fif"), fmt="int", overwrite=True)
    raw.save(os.path.join(out, "double_raw.fif"), fmt="double", split_size="1.2MB", overwrite=True)
    # No measurement date: MNE stores the annotations on the acquisition's clock all the same.
    nodate = raw.copy()
    nodate.set_meas_date(None)
    nodate.save(os.path.join(out, "nodate.fif"), fmt="single", overwrite=True)
    # Acquisition skips: buffers inside a BAD_ACQ_SKIP annotation that fall on whole buffers
    # (1 s each here) are written as FIFF_DATA_SKIP, and MNE reads them back as zeros.
    skips = raw.copy()
    sf = raw.info["sfreq"]
    for first, count in ((0, 1), (3, 2), (9, 4)):
        skips.annotations.append(raw.first_time + first, count - 0.5 / sf, "BAD_ACQ_SKIP")
    skips.save(os.path.join(out, "skips.fif"), fmt="single", buffer_size_sec=1.0, overwrite=True)
    # gzip-compressed, as MNE writes a name ending in .gz, and split (gz_raw.fif-1.gz, ...).
    raw.save(os.path.join(out, "gz_raw.fif.gz"), fmt="single", split_size="1.2MB", overwrite=True)
    splits = sorted(f for f in os.listdir(out) if f.startswith("double_raw"))
    assert len(splits) >= 2, splits
    gz_splits = sorted(f for f in os.listdir(out) if f.startswith("gz_raw"))
    assert len(gz_splits) >= 2, gz_splits
    print("single.fif int.fif double_raw.fif nodate.fif skips.fif gz_raw.fif.gz", "splits:", " ".join(splits + gz_splits))


def example(rec, out):
    """The bundled MEG example's recording: the first 60 s, float32."""
    raw = make_raw(rec)
    raw.crop(0, 60.0 - 1.0 / raw.info["sfreq"])
    raw.save(out, fmt="single", overwrite=True)
    print(out)


def check(fif, out):
    import pyarrow.parquet as pq
    from signal_table import markers
    raw = mne.io.read_raw_fif(fif, preload=True)
    t = pq.read_table(out)
    meta = t.schema.metadata
    cols = [c for c in t.column_names if c not in ("time", "sample", "marker")]
    assert cols == raw.ch_names, (cols, raw.ch_names)
    types = json.loads(meta[b"neurostream.channel_types"])
    assert types == raw.get_channel_types(), (types, raw.get_channel_types())
    units = json.loads(meta[b"neurostream.units"])
    # MNE holds SI values; the engine fT, fT/cm and µV; stim codes and unitless misc as they are.
    want_units = {"mag": "fT", "grad": "fT/cm", "eeg": "uV", "eog": "uV", "ecg": "uV", "misc": "", "stim": ""}
    factor = {"fT": 1e15, "fT/cm": 1e13, "uV": 1e6, "": 1.0}
    for c, ty, u in zip(cols, types, units):
        assert u == want_units[ty], (c, ty, u)
    assert float(meta[b"neurostream.sample_rate"]) == raw.info["sfreq"]
    ref = raw.get_data()
    assert t.num_rows == ref.shape[1], (t.num_rows, ref.shape)
    worst = 0.0
    for i, (c, u) in enumerate(zip(cols, units)):
        want = ref[i] * factor[u]
        ours = t.column(c).to_numpy().astype(np.float64)
        err = np.abs(ours - want).max() / max(np.abs(want).max(), 1e-30)
        worst = max(worst, err)
        assert err <= 2e-6, f"{c}: max error {err:.2e} of its largest magnitude"
    # Every annotation, BAD_ ones included (MNE's default regexp leaves those out).
    events, event_id = mne.events_from_annotations(raw, regexp=None)
    names = {v: k for k, v in event_id.items()}
    want = [(int(s - raw.first_samp), names[v]) for s, _, v in events]
    stim = mne.find_events(raw, stim_channel="STI 014", consecutive="increasing")
    want += [(int(s - raw.first_samp), str(v)) for s, _, v in stim]
    got = markers(t)
    assert sorted(got) == sorted(want), f"markers differ:\n ours {sorted(got)[:6]}\n  mne {sorted(want)[:6]}"
    print(f"{os.path.basename(fif)}: {len(cols)} channels ({', '.join(sorted(set(types)))}) × {t.num_rows} samples, "
          f"{len(got)} markers equal MNE's (max error {worst:.1e})")


if __name__ == "__main__":
    {"write": write, "check": check, "example": example}[sys.argv[1]](*sys.argv[2:])
