"""Writes the seed corpora of the fuzz targets (small valid inputs the fuzzer mutates).

  python fuzz/make_seeds.py      (needs numpy, pyarrow, pyedflib, safetensors)

- arrow_ipc: Arrow IPC streams in the activation layout (width 4), with and without `time`
  and `token` columns, several batches, a truncated one, and LZ4- and zstd-compressed ones.
- edf: a tiny EDF (1 signal, 2 records), an EDF+ with annotations, a BDF.
- pipeline_toml: the repository's example pipelines and a few small ones.
- brainvision: header, marker and data file joined by NUL bytes: int16 multiplexed, float32
  vectorized, int32 with DataPoints, a Latin-1 `µV`, markers with a New Segment.
- xdf: small XDF files (2 channels, 40 samples) in float32 with sparse time stamps, double64,
  int16, with a marker stream, clock offsets, a boundary and footers (tests/python/check_xdf.py's
  writer).
- fif: small raw FIF files MNE writes (4 channels: mag, grad, eeg, stim; 64 samples) as
  float32, int32 and float64, with an annotation.
- sae_files: SAELens, sparsify, Gemma Scope (stored and deflated .npz), Gemma Scope 2 and Llama Scope files
  of a d_in 4, d_sae 8 SAE.
- gdf: a GDF 1.25 file (int16, event mode 1) and a GDF 2.20 one (float32 and uint8 at two rates,
  event mode 3).
- csv: a short OpenBCI GUI export (`%` header with the rate, a marker column) and a
  `;`-separated table with quoted names and a blank line.
- eeglab: EEGLAB datasets naming rec.fdt (5 x 8), with int16 samples in the .set, and with zeros
  in a compressed .set (fields as variables).
- parquet: 20-row files in the activation (zstd with a page index and 3 row groups; plain),
  signal (snappy, a marker column) and features (lz4) layouts.
"""
import io
import json
import os
import shutil
import struct
import sys
import tempfile

import numpy as np
import pyarrow as pa
import pyedflib
from safetensors.numpy import save

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
C = os.path.join(HERE, "corpus")


def ipc(batches, schema):
    sink = io.BytesIO()
    with pa.ipc.new_stream(sink, schema) as w:
        for b in batches:
            w.write_batch(b)
    return sink.getvalue()


def arrow_seeds():
    d = 4
    act = pa.list_(pa.float32(), d)
    meta = {"neurostream.layout": "activations", "neurostream.d_model": str(d), "neurostream.stream": "seed"}
    s1 = pa.schema([("seq_id", pa.uint64()), ("pos", pa.uint32()), ("act", act)], metadata=meta)
    rows = lambda n, s: pa.record_batch(
        [pa.array([s] * n, pa.uint64()), pa.array(range(n), pa.uint32()),
         pa.array([[float(i + j) for j in range(d)] for i in range(n)], act)], schema=s1)
    out = {"plain": ipc([rows(3, 0), rows(2, 1)], s1)}
    s2 = pa.schema([("seq_id", pa.uint64()), ("pos", pa.uint32()), ("time", pa.timestamp("ns", tz="UTC")),
                    ("token", pa.string()), ("act", act)], metadata=meta)
    b2 = pa.record_batch([pa.array([7, 7], pa.uint64()), pa.array([0, 1], pa.uint32()),
                          pa.array([1, 2], pa.timestamp("ns", tz="UTC")), pa.array(["a", "b"]),
                          pa.array([[1.0] * d, [2.0] * d], act)], schema=s2)
    out["timed"] = ipc([b2], s2)
    out["truncated"] = out["plain"][: len(out["plain"]) - 10]
    # Compressed buffers (each prefixed with its uncompressed length).
    for codec in ("lz4", "zstd"):
        sink = io.BytesIO()
        with pa.ipc.new_stream(sink, s1, options=pa.ipc.IpcWriteOptions(compression=codec)) as w:
            w.write_batch(rows(64, 0))
        out[f"compressed_{codec}"] = sink.getvalue()
    for k, v in out.items():
        open(os.path.join(C, "arrow_ipc", k), "wb").write(v)


def edf_seeds():
    with tempfile.TemporaryDirectory() as t:
        for name, ftype, annot in [("tiny.edf", pyedflib.FILETYPE_EDF, False), ("plus.edf", pyedflib.FILETYPE_EDFPLUS, True),
                                   ("tiny.bdf", pyedflib.FILETYPE_BDF, False)]:
            path = os.path.join(t, name)
            w = pyedflib.EdfWriter(path, 2, file_type=ftype)
            hdr = [{"label": f"C{i}", "dimension": "uV", "sample_frequency": 8, "physical_max": 100.0,
                    "physical_min": -100.0, "digital_max": 32767 if ftype != pyedflib.FILETYPE_BDF else 8388607,
                    "digital_min": -32768 if ftype != pyedflib.FILETYPE_BDF else -8388608} for i in range(2)]
            w.setSignalHeaders(hdr)
            if annot:
                w.writeAnnotation(0.5, 0.25, "left")
                w.writeAnnotation(1.0, -1, "right")
            data = [np.sin(np.arange(16) / 3.0) * 50, np.cos(np.arange(16) / 5.0) * 20]
            w.writeSamples(data)
            w.close()
            shutil.copy(path, os.path.join(C, "edf", name))


def toml_seeds():
    ex = os.path.join(ROOT, "examples")
    for f in sorted(os.listdir(ex)):
        if f.endswith(".toml"):
            shutil.copy(os.path.join(ex, f), os.path.join(C, "pipeline_toml", f))
    small = {
        "eeg.toml": '[sources.eeg]\nkind = "synthetic_eeg"\nchannels = 4\nsample_rate = 100.0\nseconds = 1.0\n\n'
                    '[operators.f]\nkind = "butterworth"\ninput = "eeg"\nbtype = "lowpass"\norder = 2\ncutoff = 10.0\n\n'
                    '[operators.k]\nkind = "kmeans"\ninput = "f"\nk = 2\n\n[sinks.c]\nkind = "console"\ninput = "k"\n',
        "acts.toml": '[sources.a]\nkind = "synthetic_activations"\nd_model = 8\ntokens = 16\n\n'
                     '[operators.m]\nkind = "mahalanobis"\ninput = "a"\nreference_rows = 4\n\n[sinks.c]\nkind = "console"\ninput = "m"\n',
    }
    for k, v in small.items():
        open(os.path.join(C, "pipeline_toml", k), "w").write(v)


def sae_seeds():
    rng = np.random.default_rng(0)
    d, m = 4, 8
    w = {"W_enc": rng.normal(size=(d, m)).astype(np.float32), "b_enc": np.zeros(m, np.float32),
         "W_dec": rng.normal(size=(m, d)).astype(np.float32), "b_dec": np.zeros(d, np.float32)}
    cfg = json.dumps({"architecture": "topk", "d_in": d, "d_sae": m, "k": 2, "dtype": "float32",
                      "apply_b_dec_to_input": True}).encode()
    blob = save(w)
    open(os.path.join(C, "sae_files", "saelens_topk"), "wb").write(b"\x00" + struct.pack("<H", len(cfg)) + cfg + blob)
    cfg2 = json.dumps({"activation": "topk", "k": 2, "num_latents": m, "d_in": d}).encode()
    sp = {"encoder.weight": w["W_enc"].T.copy(), "encoder.bias": w["b_enc"], "W_dec": w["W_dec"], "b_dec": w["b_dec"]}
    open(os.path.join(C, "sae_files", "sparsify_topk"), "wb").write(b"\x01" + struct.pack("<H", len(cfg2)) + cfg2 + save(sp))
    cfg2g = json.dumps({"activation": "groupmax", "k": 2, "num_latents": m, "d_in": d, "skip_connection": True}).encode()
    spg = dict(sp, W_skip=np.eye(d, dtype=np.float32))
    open(os.path.join(C, "sae_files", "sparsify_groupmax_skip"), "wb").write(b"\x01" + struct.pack("<H", len(cfg2g)) + cfg2g + save(spg))
    # Gemma Scope: a params.npz (stored and deflated members), no config.
    gs = {"W_enc": w["W_enc"], "W_dec": w["W_dec"], "b_enc": w["b_enc"], "b_dec": w["b_dec"],
          "threshold": np.full(m, 0.1, np.float32)}
    for name, write in (("gemmascope", np.savez), ("gemmascope_deflated", np.savez_compressed)):
        buf = io.BytesIO()
        write(buf, **gs)
        open(os.path.join(C, "sae_files", name), "wb").write(b"\x02\x00\x00" + buf.getvalue())
    # Llama Scope: hyperparams.json + checkpoints/final.safetensors.
    cfg3 = json.dumps({"d_model": d, "d_sae": m, "act_fn": "jumprelu", "jump_relu_threshold": 0.1,
                       "norm_activation": "dataset-wise", "dataset_average_activation_norm": {"in": 2.0, "out": 2.0},
                       "sparsity_include_decoder_norm": True}).encode()
    ls = {"encoder.weight": w["W_enc"].T.copy(), "encoder.bias": w["b_enc"], "decoder.weight": w["W_dec"].T.copy(),
          "decoder.bias": w["b_dec"]}
    open(os.path.join(C, "sae_files", "llamascope"), "wb").write(b"\x03" + struct.pack("<H", len(cfg3)) + cfg3 + save(ls))
    # Gemma Scope 2: config.json + params.safetensors (lowercase names), an affine transcoder.
    cfg4 = json.dumps({"architecture": "jump_relu", "model_name": "gemma-v3-270m-pt",
                       "hf_hook_point_in": "model.layers.5.pre_feedforward_layernorm.output",
                       "hf_hook_point_out": "model.layers.5.post_feedforward_layernorm.output", "affine_connection": True}).encode()
    gs2 = {"w_enc": w["W_enc"], "w_dec": w["W_dec"], "b_enc": w["b_enc"], "b_dec": w["b_dec"],
           "threshold": np.full(m, 0.1, np.float32), "affine_skip_connection": np.eye(d, dtype=np.float32)}
    open(os.path.join(C, "sae_files", "gemmascope2_transcoder"), "wb").write(b"\x04" + struct.pack("<H", len(cfg4)) + cfg4 + save(gs2))


def brainvision_seeds():
    rng = np.random.default_rng(0)
    cases = {
        "int16_multiplexed": ("INT_16", "MULTIPLEXED", "<i2", "", "utf-8"),
        "float32_vectorized": ("IEEE_FLOAT_32", "VECTORIZED", "<f4", "DataPoints=6\n", "utf-8"),
        "int32_latin1": ("INT_32", "MULTIPLEXED", "<i4", "DataPoints=6\n", "latin-1"),
    }
    for name, (fmt, orient, dtype, points, enc) in cases.items():
        hdr = ("Brain Vision Data Exchange Header File Version 1.0\n; seed\n\n[Common Infos]\n"
               "Codepage=UTF-8\nDataFile=rec.eeg\nMarkerFile=rec.vmrk\nDataFormat=BINARY\n"
               f"DataOrientation={orient}\nNumberOfChannels=3\n{points}SamplingInterval=4000\n\n"
               f"[Binary Infos]\nBinaryFormat={fmt}\n\n[Channel Infos]\n"
               "Ch1=Fp1,,0.1,µV\nCh2=Fp2\\1x,,0.5,µV\nCh3=Temp,,1,C\n\n[Comment]\nfree text = here\n")
        mrk = ("Brain Vision Data Exchange Marker File, Version 1.0\n\n[Common Infos]\nCodepage=UTF-8\n"
               "DataFile=rec.eeg\n\n[Marker Infos]\nMk1=New Segment,,1,1,0,20200101120000000000\n"
               "Mk2=Stimulus,S  1,3,1,0\nMk3=Comment,a\\1b,5,2,0\n")
        data = (rng.normal(size=(6, 3)) * 100).astype(dtype)
        if orient == "VECTORIZED":
            data = data.T.copy()
        blob = hdr.encode(enc) + b"\x00" + mrk.encode(enc) + b"\x00" + data.tobytes()
        open(os.path.join(C, "brainvision", name), "wb").write(blob)


def xdf_seeds():
    import sys
    sys.path.insert(0, os.path.join(ROOT, "tests", "python"))
    import check_xdf
    rng = np.random.default_rng(0)
    eeg = rng.normal(size=(40, 2)) * 20
    ann = [(0.05, "left"), (0.3, "right")]
    for fmt, unit, every, clock in [("float32", "microvolts", False, True), ("double64", "V", True, True),
                                    ("int16", "uV", True, False)]:
        data = {"float32": eeg.astype(np.float32), "double64": eeg / 1e6, "int16": np.round(eeg).astype(np.int16)}[fmt]
        check_xdf.write_one(os.path.join(C, "xdf", fmt), data, ["Cz", "Pz"], ann, fmt, unit, every, clock)


def fif_seeds():
    import mne
    rng = np.random.default_rng(0)
    info = mne.create_info(["MEG 0111", "MEG 0112", "EEG 001", "STI 014"], 100.0, ["mag", "grad", "eeg", "stim"])
    data = rng.normal(size=(4, 64)) * np.array([[1e-13], [1e-11], [1e-5], [0]])
    data[3, 10:20] = 1
    raw = mne.io.RawArray(data, info, verbose="ERROR")
    raw.set_annotations(mne.Annotations([0.1], [0.05], ["left"]))
    for ch, cal in zip(raw.info["chs"], [1e-18, 1e-16, 1e-10, 1.0]):
        ch["cal"] = cal
    raw = mne.io.RawArray(raw.get_data(), raw.info, verbose="ERROR").set_annotations(raw.annotations)
    with tempfile.TemporaryDirectory() as d:
        for fmt in ("single", "int", "double"):
            p = os.path.join(d, f"{fmt}_raw.fif")
            raw.save(p, fmt=fmt, overwrite=True, verbose="ERROR")
            shutil.copy(p, os.path.join(C, "fif", fmt))


def parquet_seeds():
    import pyarrow.parquet as pq
    d = 4
    act = pa.list_(pa.float32(), d)
    n = 20
    acts = pa.table({"seq_id": pa.array([i // 8 for i in range(n)], pa.uint64()),
                     "pos": pa.array([i % 8 for i in range(n)], pa.uint32()),
                     "act": pa.array([[float(i * d + j) for j in range(d)] for i in range(n)], act)}).replace_schema_metadata(
        {"neurostream.layout": "activations", "neurostream.d_model": str(d)})
    sig = pa.table({"time": pa.array([i / 100 for i in range(n)], pa.float64()), "sample": pa.array(range(n), pa.int64()),
                    "C3": pa.array([float(i) for i in range(n)], pa.float32()),
                    "C4": pa.array([-float(i) for i in range(n)], pa.float32()),
                    "marker": pa.array(["go" if i == 5 else None for i in range(n)], pa.string())}).replace_schema_metadata(
        {"neurostream.layout": "signals", "neurostream.sample_rate": "100", "neurostream.units": '["uV", "uV"]'})
    feat = pa.list_(pa.struct([("id", pa.uint32()), ("act", pa.float32())]))
    feats = pa.table({"seq_id": pa.array([0] * n, pa.uint64()), "pos": pa.array(range(n), pa.uint32()),
                      "features": pa.array([[{"id": i % 16, "act": 1.5}, {"id": 3, "act": 0.5}][: 1 + i % 2] for i in range(n)],
                                           feat)}).replace_schema_metadata(
        {"neurostream.layout": "features", "neurostream.n_features": "16"})
    cases = {"activations_zstd_page_index": (acts, dict(compression="zstd", write_page_index=True, row_group_size=8)),
             "activations_plain": (acts, dict(compression="none", use_dictionary=False)),
             "signals_snappy": (sig, dict(compression="snappy", row_group_size=6)),
             "features_lz4": (feats, dict(compression="lz4"))}
    for k, (t, opts) in cases.items():
        sink = io.BytesIO()
        pq.write_table(t, sink, **opts)
        open(os.path.join(C, "parquet", k), "wb").write(sink.getvalue())


def gdf_seeds():
    # Small GDF 1.25 and 2.20 files with event tables (modes 1 and 3), written by the test's writer.
    sys.path.insert(0, os.path.join(HERE, "..", "tests", "python"))
    from check_gdf import write_gdf
    x = [np.linspace(-50, 50, 24), np.linspace(10, -10, 24)]
    write_gdf(os.path.join(C, "gdf", "gdf1_int16"), "1.25", ["EEG-Cz", "EOG-left"], ["uV", "uV"], ["int16", "int16"],
              [8, 8], 1, 1, [(-100.0, 100.0)] * 2, [(-32768, 32767)] * 2, x, [(3, 769, 1), (20, 770, 1)], mode=1)
    write_gdf(os.path.join(C, "gdf", "gdf2_mixed_mode3"), "2.20", ["C3", "Resp"], ["uV", "mV"], ["float32", "uint8"],
              [8, 4], 1, 2, [(-1.0, 1.0), (0.0, 1.0)], [(-1.0, 1.0), (0, 255)], [x[0], np.linspace(0, 1, 12)],
              [(0, 1, 4), (9, 2, 2)], mode=3)


def eeglab_seeds():
    # Small EEGLAB datasets in the test's layout: samples in rec.fdt (5 x 8, the fuzz target writes
    # it), int16 samples in the .set, and zeros as double in a compressed .set (large enough to be
    # streamed from the zlib stream, small once compressed), fields as variables.
    sys.path.insert(0, os.path.join(HERE, "..", "tests", "python"))
    import scipy.io
    from check_eeglab import dataset, struct_array
    chanlocs = struct_array([{"labels": l, "type": "EEG"} for l in ["Fz", "Cz", "Pz", "Oz", "EOG"]], ["labels", "type"])
    events = struct_array([{"type": "a", "latency": 2.0, "duration": 1.0}, {"type": 7.0, "latency": 6.5}], ["type", "latency", "duration"])
    scipy.io.savemat(os.path.join(C, "eeglab", "fdt"), {"EEG": dataset(5, 8, 100.0, "rec.fdt", chanlocs, events)}, format="5")
    x = (np.arange(24).reshape(3, 8) - 12).astype(np.int16)
    scipy.io.savemat(os.path.join(C, "eeglab", "int16"), {"EEG": dataset(3, 8, 100.0, x, chanlocs[:, :3], events)}, format="5")
    z = np.zeros((2, 8192))
    scipy.io.savemat(os.path.join(C, "eeglab", "zlib_fields"), dataset(2, 8192, 256.0, z, chanlocs[:, :2], events),
                     format="5", do_compression=True)


def csv_seeds():
    open(os.path.join(C, "csv", "openbci"), "w").write(
        "%OpenBCI Raw EXG Data\n%Number of channels = 2\n%Sample Rate = 250 Hz\n"
        "Sample Index, EXG Channel 0, EXG Channel 1, Timestamp, Marker Channel\n"
        "0.0, 1.5, -2.25, 1700000000.000, 0.0\n1.0, 3.0, 4.5, 1700000000.004, 2.0\n2.0, -1e-3, 7, 1700000000.008, 0.0\n")
    open(os.path.join(C, "csv", "semicolon"), "w").write('"time";"Fp1";"Fp2"\r\n0;1,5;2\r\n\r\n0.01;-3;4e2\r\n')
    open(os.path.join(C, "csv", "brainflow"), "w").write(
        "0.000000\t1.500000\t-2.250000\t0.000000\n1.000000\t3.000000\t4.500000\t2.000000\n")
    open(os.path.join(C, "csv", "emotiv"), "w").write(
        "title:t, start timestamp:1623658701.49, headset type:INSIGHT, channels:6, sampling rate:128, samples:3,\r\n"
        "Timestamp,EEG.AF3,EEG.T7,MOT.AccX,MarkerIndex,MarkerValueInt\r\n1623658701.49,4200.5,4190.25,,1,22\r\n"
        "1623658701.49,,,0.5,,\r\n1623658701.498,4201,4189,,,\r\n")
    open(os.path.join(C, "csv", "mindmonitor"), "w").write(
        "TimeStamp,RAW_TP9,RAW_AF7,Elements\n2023-11-14 22:13:20.000,,,/muse/elements/blink\n"
        "2023-11-14 22:13:20.003,801.5,799.25,\n2023-11-14 22:13:20.007,802.0,798.0,\n"
        "2023-11-14 22:13:20.010,,,/Marker/1\n")


if __name__ == "__main__":
    for t in ("arrow_ipc", "edf", "pipeline_toml", "sae_files", "brainvision", "xdf", "fif", "parquet", "gdf", "eeglab", "csv"):
        os.makedirs(os.path.join(C, t), exist_ok=True)
    arrow_seeds()
    edf_seeds()
    toml_seeds()
    sae_seeds()
    brainvision_seeds()
    xdf_seeds()
    fif_seeds()
    parquet_seeds()
    gdf_seeds()
    eeglab_seeds()
    csv_seeds()
    print("seeds written to", C)
