"""Held-out evaluation of a TopK SAE in the SAELens format, in float64 numpy, and the split that
holds tokens out.

  sae_eval.py split ACTS.parquet TRAIN.parquet HELD.parquet --holdout-from SEQ_ID
      rows with seq_id < SEQ_ID go to TRAIN, the rest to HELD (metadata kept).
  sae_eval.py eval SAE_DIR HELD.parquet [--skip-first N] [--json OUT.json]
      FVU (against the held-out mean), mean L0, and the fraction of latents that never fire on
      the held-out tokens; tokens at positions < N are left out (attention sinks).
"""
import argparse
import json
import os

import numpy as np
import pyarrow.compute as pc
import pyarrow.parquet as pq
from safetensors.numpy import load_file


def split(src, train, held, holdout_from):
    t = pq.read_table(src)
    meta = t.schema.metadata
    is_held = pc.greater_equal(t["seq_id"], holdout_from)
    pq.write_table(t.filter(pc.invert(is_held)).replace_schema_metadata(meta), train)
    pq.write_table(t.filter(is_held).replace_schema_metadata(meta), held)
    print(f"{len(t) - pc.sum(is_held).as_py()} training rows, {pc.sum(is_held).as_py()} held out")


def evaluate(sae_dir, path, skip_first=0):
    """Held-out metrics of the activations in a Parquet file (tokens at positions < skip_first left out)."""
    t = pq.read_table(path)
    d = t.schema.field("act").type.list_size
    x = np.asarray(t["act"].combine_chunks().flatten(), np.float64).reshape(-1, d)
    return evaluate_array(sae_dir, x[t["pos"].to_numpy() >= skip_first])


def evaluate_array(sae_dir, x):
    """FVU (against the mean of x), mean L0 and never-firing fraction of a TopK SAE on x [tokens, d_in]."""
    cfg = json.load(open(os.path.join(sae_dir, "cfg.json")))
    w = {k: v.astype(np.float64) for k, v in load_file(os.path.join(sae_dir, "sae_weights.safetensors")).items()}
    s = cfg.get("norm_scaling_factor", 1.0) if cfg.get("normalize_activations") == "expected_average_only_in" else 1.0
    xs = x * s
    h = (xs - w["b_dec"]) @ w["W_enc"] + w["b_enc"]
    k = cfg["k"]
    idx = np.argpartition(-h, k - 1, axis=1)[:, :k]
    a = np.zeros_like(h)
    np.put_along_axis(a, idx, np.maximum(np.take_along_axis(h, idx, 1), 0), 1)
    xh = a @ w["W_dec"] + w["b_dec"]
    return {
        "tokens": int(len(x)),
        "fvu": float(((xs - xh) ** 2).sum() / ((xs - xs.mean(0)) ** 2).sum()),
        "l0": float((a > 0).sum(1).mean()),
        "dead_fraction": float(((a > 0).sum(0) == 0).mean()),
    }


def main():
    ap = argparse.ArgumentParser()
    sub = ap.add_subparsers(dest="cmd", required=True)
    sp = sub.add_parser("split")
    sp.add_argument("src")
    sp.add_argument("train")
    sp.add_argument("held")
    sp.add_argument("--holdout-from", type=int, required=True)
    ev = sub.add_parser("eval")
    ev.add_argument("sae")
    ev.add_argument("held")
    ev.add_argument("--skip-first", type=int, default=0)
    ev.add_argument("--json")
    a = ap.parse_args()
    if a.cmd == "split":
        split(a.src, a.train, a.held, a.holdout_from)
    else:
        r = evaluate(a.sae, a.held, a.skip_first)
        print(json.dumps(r, indent=2))
        if a.json:
            json.dump(r, open(a.json, "w"), indent=2)


if __name__ == "__main__":
    main()
