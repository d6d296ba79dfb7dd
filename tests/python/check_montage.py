"""Checks `pick` / `reref` outputs against numpy on the same input (signal layout Parquet).

  check_montage.py IN.parquet OUT.parquet SPEC.json TOL
      SPEC: {"pick": [names]} | {"average": {"exclude": [names]}} |
            {"channels": {"reference": [names], "drop": bool}} | {"bipolar": ["A-B", ...]}
      Output channel names and values must match: max |ours − ref| ≤ TOL · max |ref| per channel.
"""
import json
import sys

import numpy as np
import pyarrow.parquet as pq


def read(path):
    t = pq.read_table(path)
    cols = [c for c in t.column_names if c not in ("time", "sample", "marker")]
    return cols, {c: t.column(c).to_numpy().astype(np.float64) for c in cols}


def main(inp, out, spec_path, tol):
    spec = json.load(open(spec_path))
    names, x = read(inp)
    got_names, y = read(out)
    if "pick" in spec:
        ref = {c: x[c] for c in spec["pick"]}
    elif "average" in spec:
        excl = set(spec["average"].get("exclude", []))
        inc = [c for c in names if c not in excl]
        mean = np.mean([x[c] for c in inc], axis=0)
        ref = {c: (x[c] if c in excl else x[c] - mean) for c in names}
    elif "channels" in spec:
        refs = spec["channels"]["reference"]
        mean = np.mean([x[c] for c in refs], axis=0)
        ref = {c: x[c] - mean for c in names if not (spec["channels"].get("drop") and c in refs)}
    else:
        ref = {}
        for pair in spec["bipolar"]:
            a, b = next((pair[:i], pair[i + 1:]) for i in range(len(pair)) if pair[i] == "-" and pair[:i] in x and pair[i + 1:] in x)
            ref[pair] = x[a] - x[b]
    assert got_names == list(ref), f"channels {got_names} vs expected {list(ref)}"
    worst = 0.0
    for c, r in ref.items():
        err = np.abs(y[c] - r).max() / max(np.abs(r).max(), 1e-12)
        worst = max(worst, err)
        assert err <= float(tol), f"{spec}: channel {c} relative error {err:.2e} > {tol}"
    print(f"{list(spec)[0]}: {len(ref)} channels equal numpy (max relative error {worst:.1e})")


if __name__ == "__main__":
    main(*sys.argv[1:5])
