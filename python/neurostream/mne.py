"""MNE in and out: ``Raw`` and ``Epochs`` as pipeline sources, signal outputs as ``RawArray``.

The engine holds signals in display units: volts become µV, tesla fT and tesla per metre
fT/cm, as MNE's own plots show them. ``to_mne`` converts back to SI units, as MNE expects.
MNE is imported only when these functions run.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Any, Dict, List, Optional, Sequence, Tuple

import numpy as np

if TYPE_CHECKING:  # pragma: no cover
    from .pipeline import Pipeline, PushSource

__all__ = ["from_mne", "to_mne", "ENGINE_UNITS"]

#: SI unit of an MNE channel -> (engine unit, factor from SI to it).
ENGINE_UNITS: Dict[str, Tuple[str, float]] = {
    "V": ("uV", 1e6),
    "T": ("fT", 1e15),
    "T/m": ("fT/cm", 1e13),
    "": ("", 1.0),
}

#: Engine unit -> factor back to SI.
_TO_SI = {"uV": 1e-6, "µV": 1e-6, "mV": 1e-3, "V": 1.0, "fT": 1e-15, "pT": 1e-12, "T": 1.0, "fT/cm": 1e-13, "T/m": 1.0}


def _si_unit(ch: Dict[str, Any]) -> str:
    from mne.io.constants import FIFF

    unit = ch.get("unit")
    return {FIFF.FIFF_UNIT_V: "V", FIFF.FIFF_UNIT_T: "T", FIFF.FIFF_UNIT_T_M: "T/m"}.get(unit, "")


def _markers(inst: Any, n_samples: int) -> List[Tuple[int, str, float]]:
    """The annotations of a Raw as ``(sample, description, duration_s)`` within its data."""
    ann = inst.annotations
    sfreq = inst.info["sfreq"]
    # With an orig_time, onsets count from the measurement start, where sample first_samp sits
    # at first_time; without one they count from the first sample.
    offset = inst.first_time if ann.orig_time is not None else 0.0
    out = []
    for onset, duration, desc in zip(ann.onset, ann.duration, ann.description):
        sample = int(round((onset - offset) * sfreq))
        if 0 <= sample < n_samples:
            out.append((sample, str(desc), float(duration)))
    return out


def from_mne(pipeline: "Pipeline", inst: Any, name: Optional[str] = None, picks: Any = None, **common: Any) -> "PushSource":
    """Adds a source holding an MNE ``Raw`` (data, sampling rate, channel names and types, units,
    annotations as markers) or ``Epochs`` (epochs one after the other, a marker named after
    each epoch's event at its first sample). Each channel is converted to its display unit, so
    EEG and MEG channels can come together."""
    import mne

    if isinstance(inst, mne.BaseEpochs):
        data = inst.get_data(picks=picks)  # (epochs, channels, times)
        info = inst.info if picks is None else mne.pick_info(inst.info, mne.io.pick._picks_to_idx(inst.info, picks))
        names_by_code = {code: label for label, code in inst.event_id.items()}
        n_times = data.shape[2]
        markers = [(i * n_times, names_by_code.get(int(code), str(code)), 0.0) for i, code in enumerate(inst.events[:, 2])]
        continuous = data.transpose(0, 2, 1).reshape(-1, data.shape[1])
    elif isinstance(inst, mne.io.BaseRaw):
        continuous = inst.get_data(picks=picks).T  # (times, channels), SI units
        info = inst.info if picks is None else mne.pick_info(inst.info, mne.io.pick._picks_to_idx(inst.info, picks))
        markers = _markers(inst, continuous.shape[0])
    else:
        raise TypeError(f"from_mne: expected mne Raw or Epochs, got {type(inst).__name__}")
    # Each channel in its display unit (EEG in µV, magnetometers in fT, gradiometers in fT/cm).
    converted = [ENGINE_UNITS[_si_unit(ch)] for ch in info["chs"]]
    units = [u for u, _ in converted]
    factors = np.array([f for _, f in converted])
    values = np.ascontiguousarray(continuous * factors[None, :], dtype=np.float32)
    types = [mne.channel_type(info, i) for i in range(len(info["ch_names"]))]
    return pipeline.from_numpy(
        values,
        sfreq=float(info["sfreq"]),
        ch_names=list(info["ch_names"]),
        unit=units[0] if len(set(units)) == 1 else units,
        ch_types=types,
        markers=markers,
        name=name,
        **common,
    )


def to_mne(table: Any, ch_type: str = "eeg") -> Any:
    """A signal output (``pyarrow.Table`` in the signal layout) as an MNE ``RawArray``: values
    converted to SI units, sampling rate and channel types from the table's metadata (channels
    without a type: ``ch_type`` when they have a physical unit, else ``misc``), markers as
    annotations."""
    import json

    import mne

    meta = table.schema.metadata or {}
    if meta.get(b"neurostream.layout") != b"signals":
        raise ValueError("to_mne: expected a signal output (neurostream.layout = signals)")
    sfreq = float(meta[b"neurostream.sample_rate"])
    names = [f.name for f in table.schema if f.name not in ("time", "sample", "marker")]
    units = json.loads(meta.get(b"neurostream.units", b"[]")) or [""] * len(names)
    scale = np.array([_TO_SI.get(u, 1.0) for u in units])
    data = np.stack([table[c].to_numpy().astype(np.float64) for c in names]) * scale[:, None]
    known = json.loads(meta.get(b"neurostream.channel_types", b"[]")) or [""] * len(names)
    types = [t or (ch_type if u in _TO_SI else "misc") for t, u in zip(known, units)]
    info = mne.create_info(names, sfreq, ch_types=types)
    raw = mne.io.RawArray(data, info, verbose="error")
    if "marker" in table.column_names:
        first = table["sample"][0].as_py() if table.num_rows else 0
        labels = table["marker"].to_pylist()
        samples = table["sample"].to_pylist()
        onsets = [(s - first) / sfreq for s, m in zip(samples, labels) if m is not None]
        descs = [m for m in labels if m is not None]
        raw.set_annotations(mne.Annotations(onsets, [0.0] * len(onsets), descs))
    return raw
