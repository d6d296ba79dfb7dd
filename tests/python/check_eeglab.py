"""EEGLAB datasets written with scipy.io.savemat the way EEGLAB's pop_saveset lays them out, and
neurostream's reading of them checked against MNE's reader (`mne.io.read_raw_eeglab`).

  check_eeglab.py write DIR     writes the variants below into DIR and prints their names:
        fdt            `EEG` struct, samples in fdt.fdt (float32), chanlocs with types (an EOG
                       channel), text event types with durations; MAT v6 (uncompressed)
        fields_zlib    the dataset's fields as variables (pop_saveset's 'savemode','onefile'
                       with -struct), samples in the .set as single (about 1 MB), numeric
                       (double) event types, one event with a NaN latency; MAT v7 (compressed)
        fields_v6      fields_zlib uncompressed (EEGLAB's default since 2021: one file, MAT v6,
                       fields as variables)
        double_nochan  `EEG` struct, samples in the .set as double (uncompressed, 0.5 MB), no
                       chanlocs (MNE names the channels EEG 000, ...), events without durations
        int16_small    `EEG` struct, 3 channels x 100 samples of int16 in the .set (small enough to
                       be read with the header), one event as a 1 x 1 struct
        mne_export     written by mne.export.export_raw(fmt="eeglab") (eeglabio): single samples in
                       the .set, the fields as variables, annotations (one with a duration)
  check_eeglab.py write73 DIR   writes MATLAB v7.3 (HDF5) datasets the way MATLAB's `save -v7.3` lays
      them out (`savemat73`), and prints their names:
        v73_fields     the dataset's fields as variables, samples in the .set as single, chunked
                       and deflated (MATLAB compresses v7.3 variables), chanlocs with types, text
                       events with durations, one with a NaN latency
        v73_struct     `EEG` struct, samples in v73_struct.fdt, numeric (double) event types,
                       one event (a 1 x 1 struct array)
        v73_double     `EEG` struct, samples in the .set as double, contiguous (`-nocompression`),
                       no chanlocs, no events
        v73_hdf5storage  written by another MATLAB-compatible writer, hdf5storage (`EEG` struct,
                       single samples in the .set, compressed; chanlocs and text events)
  check_eeglab.py lies DIR      writes broken datasets (prints their names), v7.3 ones among them
      (cut short; a deflated block of samples damaged)
  check_eeglab.py fdt FILE.set            writes the .fdt a dataset names (float32 noise of the right
      size, seeded; for bundled datasets shipped without their samples) beside it
  check_eeglab.py mat FILE.mat OURS.json   neurostream's reading of a MAT-file (dumped by
      tests/eeglab.rs) equals scipy.io.loadmat's: names, dimensions, every number (real parts;
      exactly), text, struct fields and cells; sparse and opaque (MCOS) values are the ones
      neurostream skips
  check_eeglab.py check FILE.set OUT.parquet [CHANNELS]
      OUT (neurostream's signal layout) equals MNE's reading: names, every sample in µV (MNE's
      volts x 1e6), markers on round(onset x sfreq) labelled with the description; CHANNELS
      (comma-separated indices) when the run picked some. Tolerance 1e-6 of each channel's largest
      magnitude (ours being float32).
"""
import os
import shutil
import sys

import numpy as np
import pyarrow.parquet as pq
from signal_table import channels_equal, markers
import scipy.io


def struct_array(rows, fields):
    """A 1 x n MATLAB struct array from a list of dicts."""
    a = np.zeros((1, len(rows)), dtype=[(f, "O") for f in fields])
    for i, r in enumerate(rows):
        for f in fields:
            a[0, i][f] = r.get(f, np.zeros((0, 0)))
    return a


def dataset(nbchan, pnts, srate, data, chanlocs, events):
    return {
        "setname": "neurostream test",
        "filename": "",
        "filepath": "",
        "nbchan": float(nbchan),
        "trials": 1.0,
        "pnts": float(pnts),
        "srate": float(srate),
        "xmin": 0.0,
        "xmax": (pnts - 1) / srate,
        "times": np.arange(pnts) * 1000.0 / srate,
        "data": data,
        "icaact": np.zeros((0, 0)),
        "icawinv": np.zeros((0, 0)),
        "icasphere": np.zeros((0, 0)),
        "icaweights": np.zeros((0, 0)),
        "icachansind": np.zeros((0, 0)),
        "chanlocs": chanlocs,
        "urchanlocs": np.zeros((0, 0)),
        "chaninfo": {"plotrad": np.zeros((0, 0)), "nosedir": "+X"},
        "ref": "common",
        "event": events,
        "urevent": np.zeros((0, 0)),
        "eventdescription": np.zeros((1, 0), dtype=object),
        "epoch": np.zeros((0, 0)),
        "epochdescription": np.zeros((1, 0), dtype=object),
        "history": "EEG = pop_loadset();",
        "saved": "yes",
        "etc": {},
    }


def signals(nbchan, pnts, srate, seed):
    rng = np.random.default_rng(seed)
    t = np.arange(pnts) / srate
    x = np.stack([20 * np.sin(2 * np.pi * (8 + c) * t + c) + 5 * rng.standard_normal(pnts) for c in range(nbchan)])
    return x


def fdt_set(out, name="fdt", fdt="fdt.fdt", **changes):
    """fdt: 5 channels x 2000 samples at 250 Hz, samples in a .fdt beside the .set; `changes`
    replace fields of the header (the .fdt is written as it should be)."""
    x = signals(5, 2000, 250.0, 1).astype(np.float32)
    labels = ["Fz", "Cz", "Pz", "Oz", "VEOG"]
    types = ["EEG", "EEG", "EEG", "", "EOG"]
    chanlocs = struct_array([{"labels": l, "type": t} for l, t in zip(labels, types)], ["labels", "type", "theta", "radius"])
    events = struct_array(
        [
            {"type": "stim/left", "latency": 101.0, "duration": 0.0, "urevent": 1.0},
            {"type": "boundary", "latency": 700.7, "duration": 25.0, "urevent": 2.0},
            {"type": "stim/right", "latency": 1250.25, "duration": 50.0, "urevent": 3.0},
            {"type": "end", "latency": 2000.0, "duration": 0.0, "urevent": 4.0},
        ],
        ["type", "latency", "duration", "urevent"],
    )
    x.T.astype("<f4").tofile(os.path.join(out, "fdt.fdt"))  # a sample's channels together
    eeg = dataset(5, 2000, 250.0, fdt, chanlocs, events)
    eeg.update(changes)
    scipy.io.savemat(os.path.join(out, name + ".set"), {"EEG": eeg}, format="5", do_compression=False)


def double_set(out, name="double_nochan", **changes):
    """double_nochan: 4 channels x 16384 samples at 1000 Hz as double in the .set, no chanlocs."""
    x = signals(4, 16384, 1000.0, 3)
    events = struct_array([{"type": "rest", "latency": 4000.0}, {"type": "task", "latency": 9000.0}], ["type", "latency"])
    eeg = dataset(4, 16384, 1000.0, x, np.zeros((0, 0)), events)
    eeg.update(changes)
    scipy.io.savemat(os.path.join(out, name + ".set"), {"EEG": eeg}, format="5", do_compression=False)


def write(out):
    fdt_set(out)
    double_set(out)
    # fields_zlib: 8 channels x 32768 samples at 512 Hz as single in the .set, compressed.
    x = signals(8, 32768, 512.0, 2).astype(np.float32)
    labels = [f"E{i + 1}" for i in range(8)]
    chanlocs = struct_array([{"labels": l, "type": "EEG"} for l in labels], ["labels", "type"])
    events = struct_array(
        [
            {"type": 1.0, "latency": 513.0, "duration": 1.0},
            {"type": 2.0, "latency": float("nan"), "duration": 1.0},
            {"type": 12.0, "latency": 20000.0, "duration": 256.0},
        ],
        ["type", "latency", "duration"],
    )
    fields = dataset(8, 32768, 512.0, x, chanlocs, events)
    scipy.io.savemat(os.path.join(out, "fields_zlib.set"), fields, format="5", do_compression=True)
    # fields_v6: the same uncompressed, as EEGLAB (2021 on) saves by default: one file, MAT v6,
    # the fields as variables, single samples.
    scipy.io.savemat(os.path.join(out, "fields_v6.set"), fields, format="5", do_compression=False)

    # int16_small: 3 channels x 100 samples of int16 (read with the header), one event.
    x = (signals(3, 100, 100.0, 4) * 10).astype(np.int16)
    chanlocs = struct_array([{"labels": l} for l in ["C3", "C4", "Cz"]], ["labels"])
    events = {"type": "go", "latency": 51.0, "duration": 0.0}
    eeg = dataset(3, 100, 100.0, x, chanlocs, events)
    scipy.io.savemat(os.path.join(out, "int16_small.set"), {"EEG": eeg}, format="5", do_compression=False)
    # mne_export: what MNE users write, mne.export.export_raw(fmt="eeglab") (eeglabio): 6 channels
    # at 200 Hz with annotations, one of them with a duration.
    import mne

    x = signals(6, 3000, 200.0, 5) * 1e-6
    raw = mne.io.RawArray(x, mne.create_info([f"EEG{i}" for i in range(6)], 200.0, "eeg"), verbose="error")
    raw.set_annotations(mne.Annotations([1.0, 4.5, 9.25], [0.0, 0.5, 0.0], ["start", "cue/left", "end"]))
    mne.export.export_raw(os.path.join(out, "mne_export.set"), raw, fmt="eeglab", overwrite=True, verbose="error")
    print("fdt fields_zlib fields_v6 double_nochan int16_small mne_export")


def lies(out):
    # The .fdt cut short.
    fdt_set(out, "short_fdt", "short.fdt")
    with open(os.path.join(out, "fdt.fdt"), "rb") as f:
        data = f.read()
    with open(os.path.join(out, "short.fdt"), "wb") as f:
        f.write(data[: len(data) - 20])
    fdt_set(out, "nbchan_lie", nbchan=6.0)  # chanlocs for 5 channels
    fdt_set(out, "epochs", trials=2.0)
    fdt_set(out, "missing_fdt", "gone.fdt")  # and no missing_fdt.fdt
    fdt_set(out, "srate0", srate=0.0)
    double_set(out, "shape_lie", pnts=16000.0)
    # The .set cut in the middle of its data.
    with open(os.path.join(out, "double_nochan.set"), "rb") as f:
        data = f.read()
    with open(os.path.join(out, "cut.set"), "wb") as f:
        f.write(data[: len(data) // 2])
    # A v7.3 (HDF5) MAT-file's header.
    header = b"MATLAB 7.3 MAT-file, Platform: GLNXA64, Created on: Thu Dec  3 10:00:00 2026 HDF5 schema 1.00 ."
    with open(os.path.join(out, "v73.set"), "wb") as f:
        f.write(header.ljust(116) + b"\0" * 8 + b"\x00\x02IM" + b"\0" * 512)
    with open(os.path.join(out, "text.set"), "wb") as f:
        f.write(b"this is a text file, not a MAT-file\n" * 8)
    # A v7.3 dataset cut in the middle of its samples, and one whose `data` lost its class.
    write73(out)
    with open(os.path.join(out, "v73_fields.set"), "rb") as f:
        data = f.read()
    with open(os.path.join(out, "v73_cut.set"), "wb") as f:
        f.write(data[: len(data) * 2 // 3])
    import h5py

    with h5py.File(os.path.join(out, "v73_fields.set"), "r") as f:
        chunk = f["data"].id.get_chunk_info(1)  # the second block of 4096 samples, deflated
    damaged = bytearray(data)
    for i in range(chunk.byte_offset + 100, chunk.byte_offset + 300):
        damaged[i] ^= 0x5A
    with open(os.path.join(out, "v73_damaged.set"), "wb") as f:
        f.write(damaged)
    # A v7.3 dataset whose `chanlocs` is a cell holding itself (a reference cycle).
    shutil.copy(os.path.join(out, "v73_struct.set"), os.path.join(out, "v73_cycle.set"))
    with h5py.File(os.path.join(out, "v73_cycle.set"), "r+") as f:
        eeg = f["EEG"]
        del eeg["chanlocs"]
        loop = f["#refs#"].create_dataset("loop", (1, 1), dtype=h5py.ref_dtype)
        loop.attrs.create("MATLAB_class", np.bytes_("cell"))
        loop[0, 0] = loop.ref
        cell = eeg.create_dataset("chanlocs", (1, 1), dtype=h5py.ref_dtype)
        cell.attrs.create("MATLAB_class", np.bytes_("cell"))
        cell[0, 0] = loop.ref
    print("short_fdt nbchan_lie epochs missing_fdt srate0 shape_lie cut v73 text v73_cut v73_damaged v73_cycle")


def savemat73(path, variables):
    """Writes `variables` (name -> value) as MATLAB's `save -v7.3` lays a MAT-file out: HDF5 behind
    a 512-byte user block holding the MAT header; every value with its `MATLAB_class`; dims
    reversed (MATLAB is column-major); text as uint16 code units; struct field names in order in
    `MATLAB_fields`; empty arrays as their dims with
    `MATLAB_empty`; a 1 x 1 struct (a dict) as a group of its fields; a struct array (a numpy
    record array from `struct_array`) as a group whose fields are datasets of object references
    into `#refs#`, one per element; numeric arrays over 4 KiB chunked and deflated."""
    import h5py

    counter = [0]

    def tag(obj, cls, **attrs):
        obj.attrs.create("MATLAB_class", np.bytes_(cls))
        for k, v in attrs.items():
            obj.attrs.create(k, v)

    def field_names(group, names):
        """MATLAB's `MATLAB_fields`: the struct's field names in order, each a sequence of bytes."""
        seqs = np.empty(len(names), dtype=object)
        for i, n in enumerate(names):
            seqs[i] = np.frombuffer(n.encode(), dtype="S1")
        group.attrs.create("MATLAB_fields", seqs, dtype=h5py.vlen_dtype(np.dtype("S1")))

    def put(group, name, value):
        if isinstance(value, dict):
            g = group.create_group(name)
            tag(g, "struct")
            field_names(g, list(value))
            for k, v in value.items():
                put(g, k, v)
            return g
        if isinstance(value, np.ndarray) and value.dtype.names:
            g = group.create_group(name)
            tag(g, "struct")
            field_names(g, list(value.dtype.names))
            refs = f.require_group("#refs#")
            flat = value.flatten(order="F")
            for field in value.dtype.names:
                targets = []
                for element in flat:
                    counter[0] += 1
                    targets.append(put(refs, f"r{counter[0]}", element[field]).ref)
                shape = tuple(reversed(value.shape))
                d = g.create_dataset(field, shape, dtype=h5py.ref_dtype)
                d[...] = np.array(targets, dtype=object).reshape(value.shape, order="F").T
            return g
        if isinstance(value, str):
            if not value:
                d = group.create_dataset(name, data=np.array([0, 0], dtype=np.uint64))
                tag(d, "char", MATLAB_empty=np.uint8(1))
                return d
            codes = np.frombuffer(value.encode("utf-16-le"), dtype=np.uint16).reshape(1, -1)
            d = group.create_dataset(name, data=codes.T)
            tag(d, "char", MATLAB_int_decode=np.int32(2))
            return d
        a = np.asarray(value)
        if a.ndim < 2:
            a = a.reshape(1, -1) if a.ndim == 1 else a.reshape(1, 1)
        if a.dtype == object:  # a cell array: references to its cells
            if a.size == 0:
                d = group.create_dataset(name, data=np.array(a.shape, dtype=np.uint64))
                tag(d, "cell", MATLAB_empty=np.uint8(1))
                return d
            refs = f.require_group("#refs#")
            targets = []
            for item in a.flatten(order="F"):
                counter[0] += 1
                targets.append(put(refs, f"r{counter[0]}", item).ref)
            d = group.create_dataset(name, tuple(reversed(a.shape)), dtype=h5py.ref_dtype)
            d[...] = np.array(targets, dtype=object).reshape(a.shape, order="F").T
            tag(d, "cell")
            return d
        if a.dtype == bool:
            a, cls = a.astype(np.uint8), "logical"
        else:
            cls = {"float64": "double", "float32": "single", "int8": "int8", "int16": "int16", "int32": "int32", "uint8": "uint8", "uint16": "uint16", "int64": "int64", "uint64": "uint64"}[a.dtype.name]
        if a.size == 0:
            d = group.create_dataset(name, data=np.array(a.shape, dtype=np.uint64))
            tag(d, cls, MATLAB_empty=np.uint8(1))
            return d
        big = a.nbytes > 4096
        d = group.create_dataset(
            name, data=a.T, chunks=(min(a.shape[1], 4096), a.shape[0]) if big else None, compression="gzip" if big else None
        )
        tag(d, cls)
        return d

    with h5py.File(path, "w", userblock_size=512, libver="earliest") as f:
        for name, value in variables.items():
            put(f, name, value)
    header = b"MATLAB 7.3 MAT-file, Platform: GLNXA64, Created on: Thu Dec  3 10:00:00 2026 HDF5 schema 1.00 ."
    with open(path, "r+b") as out:
        out.write(header.ljust(116) + b"\0" * 8 + b"\x00\x02IM")


def write73(out):
    # v73_fields: 6 channels x 20000 samples at 500 Hz, single, in the .set.
    x = signals(6, 20000, 500.0, 6).astype(np.float32)
    labels = ["Fp1", "Fp2", "C3", "C4", "HEOG", "ECG"]
    types = ["EEG", "EEG", "EEG", "EEG", "EOG", "ECG"]
    chanlocs = struct_array([{"labels": l, "type": t, "X": float(i)} for i, (l, t) in enumerate(zip(labels, types))], ["labels", "type", "X"])
    events = struct_array(
        [
            {"type": "cue", "latency": 250.0, "duration": 0.0},
            {"type": "boundary", "latency": float("nan"), "duration": 0.0},
            {"type": "resp/ok", "latency": 7001.25, "duration": 100.0},
            {"type": "end", "latency": 19999.0, "duration": 0.0},
        ],
        ["type", "latency", "duration"],
    )
    savemat73(os.path.join(out, "v73_fields.set"), dataset(6, 20000, 500.0, x, chanlocs, events))
    # v73_struct: 5 channels x 3000 samples at 250 Hz in a .fdt, one numeric event.
    x = signals(5, 3000, 250.0, 7).astype("<f4")
    x.T.tofile(os.path.join(out, "v73_struct.fdt"))
    chanlocs = struct_array([{"labels": l} for l in ["O1", "O2", "Oz", "Pz", "Cz"]], ["labels"])
    events = struct_array([{"type": 7.0, "latency": 1500.0, "duration": 25.0}], ["type", "latency", "duration"])
    savemat73(os.path.join(out, "v73_struct.set"), {"EEG": dataset(5, 3000, 250.0, "v73_struct.fdt", chanlocs, events)})
    # v73_double: 3 channels x 4000 samples at 1000 Hz as double, contiguous; no chanlocs.
    x = signals(3, 4000, 1000.0, 8)
    eeg = dataset(3, 4000, 1000.0, x, np.zeros((0, 0)), np.zeros((0, 0)))
    savemat73(os.path.join(out, "v73_double.set"), {"EEG": eeg})
    # v73_hdf5storage: 4 channels x 5000 samples at 250 Hz, written by hdf5storage.
    import hdf5storage

    x = signals(4, 5000, 250.0, 9).astype(np.float32)
    chanlocs = struct_array([{"labels": l, "type": "EEG"} for l in ["Fz", "Cz", "Pz", "Oz"]], ["labels", "type"])
    events = struct_array(
        [{"type": "go", "latency": 100.0, "duration": 0.0}, {"type": "stop", "latency": 4000.0, "duration": 10.0}],
        ["type", "latency", "duration"],
    )
    eeg = {"setname": "hdf5storage", "nbchan": 4.0, "trials": 1.0, "pnts": 5000.0, "srate": 250.0, "data": x,
           "chanlocs": chanlocs, "event": events}
    path = os.path.join(out, "v73_hdf5storage.set")
    hdf5storage.savemat(path, {"EEG": eeg}, format="7.3", oned_as="row", matlab_compatible=True,
                        store_python_metadata=False)
    os.replace(path + ".mat", path)  # hdf5storage appends .mat
    # values73.mat: MATLAB values of every kind the reader builds, and their level-5 twin written
    # by scipy (what `check_eeglab.py mat` compares neurostream's reading of values73.mat with).
    cells = np.empty((1, 3), dtype=object)
    cells[0, 0], cells[0, 1], cells[0, 2] = "text", np.arange(6.0).reshape(2, 3), np.array([[7]], dtype=np.int16)
    values = {
        "cube": np.arange(24.0).reshape(2, 3, 4),
        "column": np.arange(5, dtype=np.float32).reshape(5, 1),
        "counts": np.array([[1, -2, 3], [-4, 5, -6]], dtype=np.int16),
        "big": np.sin(np.arange(30000.0)).reshape(100, 300),
        "flags": np.array([[True, False, True]]),
        "bytes": np.array([[0, 255, 7]], dtype=np.uint8),
        "name": "µV and ünïcode",
        "nothing": np.zeros((0, 3)),
        "blank": "",
        "nested": {"inner": {"x": 2.5, "label": "deep"}, "n": np.array([[1.0, 2.0]])},
        "items": cells,
        "grid": struct_array([{"a": 1.0, "b": "one"}, {"a": 2.0, "b": "two"}, {"a": np.zeros((0, 0)), "b": ""}], ["a", "b"]),
    }
    savemat73(os.path.join(out, "values73.mat"), values)
    scipy.io.savemat(os.path.join(out, "values73_v5.mat"), values, format="5", do_compression=False)
    print("v73_fields v73_struct v73_double v73_hdf5storage")


def write_fdt(set_path):
    try:
        eeg = scipy.io.loadmat(set_path, squeeze_me=True, struct_as_record=False)["EEG"]
        pnts, nbchan, data = int(eeg.pnts), int(eeg.nbchan), str(eeg.data)
    except NotImplementedError:  # a v7.3 (HDF5) file: read as MNE reads it
        from pymatreader import read_mat

        eeg = read_mat(set_path)["EEG"]
        pnts, nbchan, data = int(eeg["pnts"]), int(eeg["nbchan"]), str(eeg["data"])
    rng = np.random.default_rng(5)
    x = (rng.standard_normal((pnts, nbchan)) * 10).astype("<f4")
    x.tofile(os.path.join(os.path.dirname(set_path), data))
    print(f"{data}: {nbchan} channels x {pnts} samples")


def same(ours, theirs, where):
    """Asserts neurostream's dump `ours` of a MATLAB value equals scipy's `theirs`."""
    if "unsupported" in ours:
        kind = type(theirs).__name__
        assert kind in ("csc_matrix", "csc_array", "MatlabOpaque", "MatlabFunction"), f"{where}: ours skipped, scipy has {kind}"
        return
    if "char" in ours:
        rows = [str(r).rstrip() for r in np.asarray(theirs).flat] if np.asarray(theirs).size else []
        text = "\n".join(rows) if len(rows) > 1 else (str(np.asarray(theirs).flat[0]) if rows else "")
        assert ours["char"] == text, f"{where}: {ours['char']!r} != {text!r}"
        return
    theirs = np.asarray(theirs)
    assert list(theirs.shape) == ours["dims"], f"{where}: dims {ours['dims']} != {theirs.shape}"
    flat = theirs.flatten(order="F")
    if "fields" in ours:
        assert list(theirs.dtype.names) == ours["fields"], f"{where}: fields {ours['fields']} != {theirs.dtype.names}"
        for i, (element, theirs_el) in enumerate(zip(ours["elements"], flat)):
            for f, value in zip(ours["fields"], element):
                same(value, theirs_el[f], f"{where}({i + 1}).{f}")
        return
    if "cells" in ours:
        for i, (item, theirs_item) in enumerate(zip(ours["cells"], flat)):
            same(item, theirs_item, f"{where}{{{i + 1}}}")
        return
    assert ours["complex"] == np.iscomplexobj(theirs), f"{where}: complex {ours['complex']}"
    got = np.array([np.nan if v is None else v for v in ours["values"]], dtype=np.float64)
    want = np.real(flat).astype(np.float64)
    assert np.array_equal(got, want, equal_nan=True), f"{where}: values differ"


def check_mat(mat_path, ours_json):
    import json

    ours = json.load(open(ours_json))
    theirs = scipy.io.loadmat(mat_path, squeeze_me=False, struct_as_record=True, chars_as_strings=True)
    names = [n for n, _ in ours if n]
    for name, value in ours:
        if not name:
            continue  # the subsystem data (MCOS class definitions), which scipy keeps to itself
        if name not in theirs:
            # scipy files opaque objects under the key `None`.
            assert "unsupported" in value and type(theirs.get("None")).__name__ == "MatlabOpaque", name
            continue
        same(value, theirs[name], name)
    missing = [k for k in theirs if not k.startswith("__") and k != "None" and k not in names]
    assert not missing, f"scipy reads variables neurostream does not: {missing}"
    print(f"{os.path.basename(mat_path)}: {len(names)} variables equal scipy.io.loadmat's")


def check(set_path, out, channels=None):
    import mne

    mne.set_log_level("ERROR")
    t = pq.read_table(out)
    meta = t.schema.metadata
    sf = float(meta[b"neurostream.sample_rate"])
    cols = [c for c in t.column_names if c not in ("time", "sample", "marker")]
    assert (t.column("sample").to_numpy() == np.arange(t.num_rows)).all()
    raw = mne.io.read_raw_eeglab(set_path, preload=True)
    assert abs(sf - raw.info["sfreq"]) < 1e-9, (sf, raw.info["sfreq"])
    picks = [int(c) for c in channels.split(",")] if channels else list(range(len(raw.ch_names)))
    assert cols == [raw.ch_names[i] for i in picks], (cols, raw.ch_names)
    want = raw.get_data()[picks] * 1e6
    last = t.num_rows - 1
    # Markers on the sample nearest each onset; MNE keeps annotations past the end, ours stop there.
    want_markers = sorted(
        (int(round(a["onset"] * sf)), a["description"]) for a in raw.annotations if round(a["onset"] * sf) <= last
    )
    assert t.num_rows == want.shape[1], (t.num_rows, want.shape)
    worst = channels_equal(t, cols, want)
    got = sorted(markers(t))
    assert got == want_markers, f"markers differ:\n ours {got}\n  mne {want_markers}"
    print(
        f"{os.path.basename(set_path)} against mne: {len(cols)} channels x {t.num_rows} samples, {len(got)} markers equal "
        f"(max error {worst:.1e})"
    )


if __name__ == "__main__":
    {"write": write, "write73": write73, "lies": lies, "check": check, "fdt": write_fdt, "mat": check_mat}[sys.argv[1]](*sys.argv[2:])
