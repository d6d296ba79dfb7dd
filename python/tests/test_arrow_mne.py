"""Arrow objects (pyarrow, polars, DuckDB) and MNE objects in; numpy, scipy.sparse and MNE out."""
import numpy as np
import pyarrow as pa
import pytest

import neurostream as ns
from neurostream.client import activation_schema


def activations(rows=3000, d=16, seed=0):
    rng = np.random.default_rng(seed)
    acts = rng.standard_normal((rows, d)).astype(np.float32)
    schema = activation_schema(d, with_tokens=True)
    table = pa.table(
        {
            "seq_id": pa.array(np.arange(rows, dtype=np.uint64) // 100),
            "pos": pa.array((np.arange(rows) % 100).astype(np.uint32)),
            "token": pa.array([f"w{i}" for i in range(rows)]),
            "act": pa.FixedSizeListArray.from_arrays(pa.array(acts.reshape(-1)), d),
        },
        schema=pa.schema([schema.field(n) for n in ("seq_id", "pos", "token", "act")]),
    )
    return acts, table


def roundtrip(obj, **kw):
    p = ns.Pipeline()
    src = p.from_arrow(obj, **kw)
    return p.collect(src)


def test_pyarrow_table_and_reader_in():
    acts, table = activations()
    for obj in (table, pa.RecordBatchReader.from_batches(table.schema, table.to_batches(max_chunksize=700))):
        out = roundtrip(obj)
        np.testing.assert_array_equal(ns.to_numpy(out), acts)
        assert out["seq_id"].to_pylist() == table["seq_id"].to_pylist()
        assert out["pos"].to_pylist() == table["pos"].to_pylist()
        assert out["token"].to_pylist() == table["token"].to_pylist()


def test_polars_and_duckdb_in():
    pl = pytest.importorskip("polars")
    duckdb = pytest.importorskip("duckdb")
    acts, table = activations(seed=1)
    out = roundtrip(pl.from_arrow(table))
    np.testing.assert_array_equal(ns.to_numpy(out), acts)
    acts_table = table  # noqa: F841 (DuckDB finds it by name)
    rel = duckdb.sql("SELECT * FROM acts_table ORDER BY seq_id, pos")
    out = roundtrip(rel)
    np.testing.assert_array_equal(ns.to_numpy(out), acts)


def test_signals_round_trip_through_arrow():
    x = np.random.default_rng(3).standard_normal((2000, 3)).astype(np.float32)
    p = ns.Pipeline()
    first = p.collect(p.from_numpy(x, sfreq=200.0, ch_names=["a", "b", "c"], markers=[(10, "go", 0.0)]))
    again = roundtrip(first)
    assert again.equals(first)
    plain = pa.table({"sample": pa.array(np.arange(2000, dtype=np.int64)), "a": x[:, 0], "b": x[:, 1], "c": x[:, 2]})
    with pytest.raises(ValueError, match="sample_rate|sfreq|rate"):
        roundtrip(plain)
    np.testing.assert_array_equal(ns.to_numpy(roundtrip(plain, sfreq=200.0)), x)


def test_non_arrow_objects_are_refused():
    with pytest.raises(ValueError, match="not an Arrow stream"):
        ns.Pipeline().from_arrow([1, 2, 3])


def test_features_out_as_scipy_sparse(tmp_path, repo):
    """SAE features collected from the engine equal a float64 numpy encoding of the same rows
    (TopK of the bundled sample SAE), as CSR."""
    import json

    from safetensors.numpy import load_file

    sae = repo / "examples" / "data" / "sample_sae"
    cfg = json.loads((sae / "cfg.json").read_text())
    w = load_file(str(sae / "sae_weights.safetensors"))
    d = w["W_enc"].shape[0]
    rng = np.random.default_rng(4)
    x = rng.standard_normal((256, d)).astype(np.float32)
    p = ns.Pipeline()
    feats = p.from_numpy(x).then("sae_encode", sae=str(sae), device="cpu")
    csr = ns.to_scipy_sparse(p.collect(feats))
    assert csr.shape == (256, w["W_enc"].shape[1])
    pre = (x.astype(np.float64) - w.get("b_dec", 0)) @ w["W_enc"].astype(np.float64) + w["b_enc"]
    dense = csr.toarray()
    nz = dense != 0
    assert nz.any()
    np.testing.assert_allclose(dense[nz], np.maximum(pre, 0)[nz], rtol=1e-4, atol=1e-4)
    assert cfg  # the config was read by the engine; kept for the reader of this test


def test_mne_raw_in_and_out(repo):
    mne = pytest.importorskip("mne")
    raw = mne.io.read_raw_edf(repo / "examples" / "data" / "eeg" / "mne_test.edf", preload=True, verbose="error")
    raw.pick("eeg")
    raw.set_annotations(mne.Annotations([1.0, 2.5], [0.0, 0.5], ["cue", "move"]))
    p = ns.Pipeline()
    src = p.from_mne(raw)
    table = p.collect(src)
    np.testing.assert_allclose(ns.to_numpy(table), (raw.get_data().T * 1e6).astype(np.float32), rtol=1e-6)
    back = ns.to_mne(table)
    assert back.ch_names == raw.ch_names
    assert back.get_channel_types() == raw.get_channel_types()
    assert back.info["sfreq"] == raw.info["sfreq"]
    np.testing.assert_allclose(back.get_data(), raw.get_data(), rtol=1e-6, atol=1e-12)
    assert list(back.annotations.description) == ["cue", "move"]
    np.testing.assert_allclose(back.annotations.onset, [1.0, 2.5], atol=1 / raw.info["sfreq"])


def test_mne_epochs_in():
    mne = pytest.importorskip("mne")
    sfreq = 100.0
    info = mne.create_info(["C3", "C4"], sfreq, ch_types="eeg")
    data = np.random.default_rng(5).standard_normal((3, 2, 50)) * 1e-5
    events = np.array([[0, 0, 1], [100, 0, 2], [200, 0, 1]])
    epochs = mne.EpochsArray(data, info, events=events, event_id={"left": 1, "right": 2}, verbose="error")
    p = ns.Pipeline()
    table = p.collect(p.from_mne(epochs))
    assert table.num_rows == 150
    marks = [(i, m) for i, m in enumerate(table["marker"].to_pylist()) if m]
    assert marks == [(0, "left"), (50, "right"), (100, "left")]
    np.testing.assert_allclose(ns.to_numpy(table)[:50], (data[0].T * 1e6).astype(np.float32), rtol=1e-6)


def test_eeg_and_meg_together_each_in_its_unit():
    """A Raw with EEG (V) and magnetometer (T) channels: each channel in its display unit
    (µV, fT), back to SI with its type by to_mne; picks select as in MNE."""
    mne = pytest.importorskip("mne")
    info = mne.create_info(["EEG1", "MEG1"], 100.0, ch_types=["eeg", "mag"])
    data = np.stack([np.linspace(-5e-5, 5e-5, 100), np.linspace(-1e-12, 1e-12, 100)])
    raw = mne.io.RawArray(data, info, verbose="error")
    p = ns.Pipeline()
    table = p.collect(p.from_mne(raw))
    assert table.schema.metadata[b"neurostream.units"] == b'["uV","fT"]'
    assert table.schema.metadata[b"neurostream.channel_types"] == b'["eeg","mag"]'
    np.testing.assert_allclose(ns.to_numpy(table), np.stack([np.linspace(-50, 50, 100), np.linspace(-1000, 1000, 100)], 1), rtol=1e-6)
    back = ns.to_mne(table)
    assert back.get_channel_types() == ["eeg", "mag"]
    np.testing.assert_allclose(back.get_data(), raw.get_data(), rtol=1e-6, atol=1e-20)
    p = ns.Pipeline()
    only = p.collect(p.from_mne(raw, picks="mag"))
    assert only.schema.metadata[b"neurostream.units"] == b'["fT"]'
    p = ns.Pipeline()
    p.push_source(channels=["a", "b"], sfreq=10.0, unit=["uV"], name="bad")
    with pytest.raises(ns.ValidationError, match="`units` has 1 entries for 2 channels"):
        p.start()
