"""Writes per-dimension mean and std (numpy, float64) of an activation Parquet file as JSON."""
import json
import sys

import numpy as np
import pyarrow.parquet as pq

t = pq.read_table(sys.argv[1])
d = int(t.schema.metadata[b"neurostream.d_model"])
x = t.column("act").combine_chunks().flatten().to_numpy().reshape(-1, d).astype(np.float64)
json.dump({"mean": x.mean(axis=0).tolist(), "std": x.std(axis=0).tolist()}, open(sys.argv[2], "w"))
