"""Datasets of recordings: writes them, and checks what DuckDB and pyarrow see of the engine's
Hive-partitioned output.

  check_datasets.py write DIR
      writes DIR/sub-01.parquet (3000 samples), sub-02 (4500) and sub-03 (2000): 4 channels at
      250 Hz in the signal layout, each its own random signal (seeded), row groups of 1000.
  check_datasets.py hive OUT NAME=ROWS ...
      pyarrow.dataset (Hive partitioning) and DuckDB (`hive_partitioning = true`) both read OUT
      as a table with a `stream` column holding exactly NAME with ROWS rows each, and within
      each stream the `sample` column counts 0, 1, 2, ... once sorted (no row lost or doubled).
"""
import sys

import duckdb
import numpy as np
import pyarrow as pa
import pyarrow.dataset as ds
import pyarrow.parquet as pq

LENGTHS = {"sub-01": 3000, "sub-02": 4500, "sub-03": 2000}


def write(directory):
    rng = np.random.default_rng(7)
    for name, n in LENGTHS.items():
        x = rng.standard_normal((n, 4)).astype(np.float32) * rng.uniform(5, 50)
        cols = {"time": pa.array(np.arange(n) / 250.0), "sample": pa.array(np.arange(n, dtype=np.int64))}
        for c in range(4):
            cols[f"C{c + 1}"] = pa.array(x[:, c])
        meta = {"neurostream.layout": "signals", "neurostream.sample_rate": "250",
                "neurostream.units": '["uV","uV","uV","uV"]'}
        pq.write_table(pa.table(cols).replace_schema_metadata(meta), f"{directory}/{name}.parquet", row_group_size=1000)


def hive(out, expected):
    want = {k: int(v) for k, v in (e.split("=") for e in expected)}
    t = ds.dataset(out, format="parquet", partitioning="hive").to_table(columns=["stream", "sample"])
    got = {}
    for name in set(t.column("stream").to_pylist()):
        samples = np.sort(t.filter(ds.field("stream") == name).column("sample").to_numpy())
        assert np.array_equal(samples, np.arange(len(samples))), f"{name}: samples are not 0..{len(samples) - 1}"
        got[name] = len(samples)
    assert got == want, f"pyarrow: {got} != {want}"
    rows = duckdb.sql(
        f"SELECT stream, count(*) FROM read_parquet('{out}/**/*.parquet', hive_partitioning = true) GROUP BY stream"
    ).fetchall()
    assert dict(rows) == want, f"duckdb: {dict(rows)} != {want}"
    print(f"{out}: pyarrow and DuckDB read {len(want)} streams with the expected rows")


if __name__ == "__main__":
    if sys.argv[1] == "write":
        write(sys.argv[2])
    else:
        hive(sys.argv[2], sys.argv[3:])
