"""Signal Parquet files in other units, for the unit checks of models and statistics.

  units.py rescale IN.parquet OUT.parquet FACTOR UNIT
      OUT is IN with every channel column × FACTOR and `neurostream.units` set to UNIT for all.
  units.py same A.parquet B.parquet COLUMN[,COLUMN...] TOL
      The listed columns of A and B agree within TOL (absolute), row for row.
"""
import json
import sys

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq


def rescale(src, out, factor, unit):
    t = pq.read_table(src)
    meta = dict(t.schema.metadata)
    cols = [c for c in t.column_names if c not in ("time", "sample", "marker")]
    arrays = [pa.array(t.column(c).to_numpy() * np.float32(factor)) if c in cols else t.column(c)
              for c in t.column_names]
    meta[b"neurostream.units"] = json.dumps([unit] * len(cols)).encode()
    pq.write_table(pa.table(arrays, names=t.column_names).replace_schema_metadata(meta), out)


def same(a, b, columns, tol):
    ta, tb = pq.read_table(a), pq.read_table(b)
    assert ta.num_rows == tb.num_rows > 0, (ta.num_rows, tb.num_rows)
    worst = 0.0
    for c in columns.split(","):
        d = np.abs(ta.column(c).to_numpy().astype(np.float64) - tb.column(c).to_numpy()).max()
        worst = max(worst, d)
        assert d <= float(tol), f"{c}: differs by {d}"
    print(f"{columns}: {ta.num_rows} rows agree within {worst:.1e}")


if __name__ == "__main__":
    {"rescale": rescale, "same": same}[sys.argv[1]](*sys.argv[2:])
