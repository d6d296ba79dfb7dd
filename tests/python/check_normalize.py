"""Reference check of neurostream's normalize outputs, independent of the engine.

Reads the raw and normalized Parquet files with pyarrow, recomputes the normalization with
numpy in float64, and checks the engine's output within 1e-5 * max(|ref|, 1). Also reads the
files with DuckDB and Polars and checks they see the same rows and values.

usage: check_normalize.py signals RAW OUT WARMUP
       check_normalize.py l2 RAW OUT TARGET_NORM|default
       check_normalize.py fixed RAW OUT STATS.json
"""
import json
import sys

import duckdb
import numpy as np
import polars as pl
import pyarrow.parquet as pq

TOL = 1e-5


def close(got, want, what):
    err = np.abs(got.astype(np.float64) - want) / np.maximum(np.abs(want), 1.0)
    worst = float(err.max()) if err.size else 0.0
    assert worst <= TOL, f"{what}: worst error {worst:.3e} at {np.unravel_index(err.argmax(), err.shape)}"
    return worst


def running_zscore(x, warmup, eps=1e-8):
    """Running z-score of float64 rows `x`: population statistics of rows 0..=r from shifted
    cumulative sums (not Welford); the first `warmup` rows use the statistics of exactly those rows."""
    n = np.arange(1, len(x) + 1, dtype=np.float64)[:, None]
    shift = x[:1]
    s1 = np.cumsum(x - shift, axis=0)
    s2 = np.cumsum((x - shift) ** 2, axis=0)
    mean = s1 / n + shift
    var = np.maximum(s2 / n - (s1 / n) ** 2, 0.0)
    out = (x - mean) / np.sqrt(var + eps)
    if warmup > 0:
        w = min(warmup, len(x)) - 1
        out[: w + 1] = (x[: w + 1] - mean[w]) / np.sqrt(var[w] + eps)
    return out


def signals(raw_path, out_path, warmup):
    raw, out = pq.read_table(raw_path), pq.read_table(out_path)
    meta = {k.decode(): v.decode() for k, v in raw.schema.metadata.items()}
    assert meta["neurostream.layout"] == "signals", meta
    rate = float(meta["neurostream.sample_rate"])
    assert raw.column_names[:2] == ["time", "sample"], raw.column_names
    chans = [c for c in raw.column_names if c not in ("time", "sample", "marker")]
    assert chans == [c for c in out.column_names if c not in ("time", "sample", "marker")]
    raw = raw.sort_by("sample")
    out = out.sort_by("sample")
    sample = raw.column("sample").to_numpy()
    assert np.array_equal(sample, np.arange(len(sample))), "samples must be 0..n without gaps"
    assert np.allclose(raw.column("time").to_numpy(), sample / rate, rtol=0, atol=1e-12)
    assert np.array_equal(out.column("sample").to_numpy(), sample)
    x = np.stack([raw.column(c).to_numpy().astype(np.float64) for c in chans], axis=1)
    got = np.stack([out.column(c).to_numpy() for c in chans], axis=1)
    want = running_zscore(x, warmup)
    worst = close(got, want, "running z-score")
    # DuckDB and Polars read the same values.
    c0 = chans[0]
    d = duckdb.sql(f"SELECT count(*), sum(\"{c0}\"), max(sample) FROM read_parquet('{out_path}')").fetchall()[0]
    assert d[0] == len(x) and d[2] == len(x) - 1, d
    assert abs(d[1] - got[:, 0].astype(np.float64).sum()) < 1e-6 * max(1.0, abs(d[1])) + 1e-3, d
    p = pl.read_parquet(out_path).sort("sample")
    assert np.array_equal(p[c0].to_numpy(), got[:, 0])
    print(json.dumps({"check": "signals", "rows": len(x), "channels": len(chans), "worst_rel_error": worst}))


def activations(raw_path, out_path):
    raw, out = pq.read_table(raw_path), pq.read_table(out_path)
    meta = {k.decode(): v.decode() for k, v in raw.schema.metadata.items()}
    assert meta["neurostream.layout"] == "activations", meta
    d_model = int(meta["neurostream.d_model"])
    assert str(raw.schema.field("act").type) == f"fixed_size_list<item: float not null>[{d_model}]", raw.schema.field("act").type
    assert str(raw.schema.field("seq_id").type) == "uint64" and str(raw.schema.field("pos").type) == "uint32"
    key = lambda t: t.column("seq_id").to_numpy().astype(np.uint64) * np.uint64(1 << 32) + t.column("pos").to_numpy()
    ro, oo = np.argsort(key(raw), kind="stable"), np.argsort(key(out), kind="stable")
    assert np.array_equal(key(raw)[ro], key(out)[oo]), "same (seq_id, pos) rows"
    x = raw.column("act").combine_chunks().flatten().to_numpy().reshape(-1, d_model)[ro].astype(np.float64)
    got = out.column("act").combine_chunks().flatten().to_numpy().reshape(-1, d_model)[oo]
    # DuckDB and Polars read the vector column.
    d = duckdb.sql(f"SELECT count(*), sum(pos) FROM read_parquet('{out_path}')").fetchall()[0]
    assert d[0] == len(x) and d[1] == int(out.column("pos").to_numpy().sum()), d
    p = pl.read_parquet(out_path)
    assert p["act"].dtype == pl.Array(pl.Float32, d_model), p["act"].dtype
    assert np.array_equal(np.stack(p["act"].to_numpy()), out.column("act").combine_chunks().flatten().to_numpy().reshape(-1, d_model))
    return x, got


def l2(raw_path, out_path, target):
    x, got = activations(raw_path, out_path)
    t = np.sqrt(x.shape[1]) if target == "default" else float(target)
    norm = np.linalg.norm(x, axis=1, keepdims=True)
    want = np.where(norm > 0, x * t / np.where(norm > 0, norm, 1), 0.0)
    worst = close(got, want, "l2")
    print(json.dumps({"check": "l2", "rows": len(x), "d_model": x.shape[1], "worst_rel_error": worst}))


def fixed(raw_path, out_path, stats_path):
    x, got = activations(raw_path, out_path)
    stats = json.load(open(stats_path))
    want = (x - np.array(stats["mean"])) / np.array(stats["std"])
    worst = close(got, want, "fixed")
    print(json.dumps({"check": "fixed", "rows": len(x), "worst_rel_error": worst}))


if __name__ == "__main__":
    mode, raw, out, arg = sys.argv[1:5]
    if mode == "signals":
        signals(raw, out, int(arg))
    elif mode == "l2":
        l2(raw, out, arg)
    elif mode == "fixed":
        fixed(raw, out, arg)
    else:
        sys.exit(f"unknown mode {mode}")
