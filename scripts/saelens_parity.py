"""Parity with sae-lens itself: SAEs in the SAELens format are encoded and decoded by `sae-lens`
(SAE.load_from_disk, sae.encode, sae.decode) and by neurostream (`sae_encode` and
`sae_reconstruct` with output = "reconstruction"), on the same random activations.

Needs torch and sae-lens (large, so not part of CI; CI checks the same formulas against the numpy
transcriptions in tests/python/sae_reference.py):

    python3 -m venv /tmp/parity && /tmp/parity/bin/pip install sae-lens pyarrow
    cargo build --release && /tmp/parity/bin/python scripts/saelens_parity.py

Checks, per SAE: the same active latents on every token and activations within 1e-5 relative
(|ours - theirs| <= 1e-5 * max(|theirs|, 1)), and reconstructions within 1e-5 relative to the
row's norm. Exits non-zero on any mismatch; prints one line per SAE.
"""
import argparse
import json
import os
import subprocess
import sys
import tempfile

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import torch
from sae_lens import SAE

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "tests", "python"))
import sae_reference  # noqa: E402

TOL = 1e-5
D_IN, D_SAE, ROWS = 64, 512, 300

CASES = [
    ("standard", {}),
    ("standard", {"apply_b_dec_to_input": "false"}),
    ("standard", {"normalize_activations": "constant_norm_rescale"}),
    ("topk", {"k": "16"}),
    ("topk", {"k": "16", "rescale_acts_by_decoder_norm": "true"}),
    ("jumprelu", {"threshold_range": "0.0,0.3"}),
    ("gated", {}),
]


def write_input(path, x):
    item = pa.field("item", pa.float32(), nullable=False)
    table = pa.table({
        "seq_id": pa.array(np.repeat(np.arange(ROWS // 50), 50).astype(np.uint64)),
        "pos": pa.array(np.tile(np.arange(50), ROWS // 50).astype(np.uint32)),
        "act": pa.FixedSizeListArray.from_arrays(pa.array(x.ravel()), type=pa.list_(item, D_IN)),
    })
    meta = {"neurostream.layout": "activations", "neurostream.d_model": str(D_IN)}
    pq.write_table(table.replace_schema_metadata(meta), path)


def dense_features(path):
    t = pq.read_table(path).to_pydict()
    out = np.zeros((len(t["seq_id"]), D_SAE), np.float32)
    for r, row in enumerate(t["features"]):
        for e in row:
            out[r, e["id"]] = e["act"]
    return out


def run_engine(binary, work, sae_dir):
    toml = f"""
[sources.acts]
kind = "parquet"
path = "in.parquet"

[operators.enc]
kind = "sae_encode"
input = "acts"
sae = "{sae_dir}"

[operators.rec]
kind = "sae_reconstruct"
input = "acts"
sae = "{sae_dir}"
output = "reconstruction"

[sinks.features]
kind = "parquet"
input = "enc"
path = "features.parquet"

[sinks.recon]
kind = "parquet"
input = "rec"
path = "recon.parquet"
"""
    with open(os.path.join(work, "p.toml"), "w") as f:
        f.write(toml)
    done = subprocess.run([binary, "run", "p.toml", "--quiet", "-w", "1"], cwd=work, capture_output=True, text=True)
    if done.returncode != 0:
        sys.exit(f"neurostream failed on {sae_dir}:\n{done.stderr}")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--bin", default=os.path.join(ROOT, "target", "release", "neurostream"))
    args = ap.parse_args()
    args.bin = os.path.abspath(args.bin)
    if not os.path.exists(args.bin):
        sys.exit(f"{args.bin} not found: run `cargo build --release` first (or pass --bin)")
    import sae_lens
    print(f"sae-lens {sae_lens.__version__}, torch {torch.__version__}")
    failures = 0
    rng = np.random.default_rng(0)
    # Random SAEs written by the test helper, then SAEs trained by `neurostream sae train`
    # (its SAELens output: scale folded into the weights, BatchTopK as jumprelu).
    cases = [(arch, opts, None) for arch, opts in CASES]
    cases += [(f"trained {a}", {}, a) for a in ["topk", "batchtopk", "relu", "jumprelu"]]
    for i, (arch, opts, trained) in enumerate(cases):
        work = tempfile.mkdtemp(prefix="ns-saelens-")
        sae_dir = os.path.join(work, "sae")
        x = rng.normal(0, 1, (ROWS, D_IN)).astype(np.float32) * rng.uniform(0.5, 3.0, (ROWS, 1)).astype(np.float32)
        write_input(os.path.join(work, "in.parquet"), x)
        if trained is None:
            sae_reference.make(sae_dir, "saelens", arch, D_IN, D_SAE, 100 + i, dict(opts))
        else:
            done = subprocess.run([args.bin, "sae", "train", "--input", "in.parquet", "--out", "sae", "--architecture", trained,
                                   "--d-sae", str(D_SAE), "--k", "16", "--batch", "100", "--lr", "0.01", "--quiet"],
                                  cwd=work, capture_output=True, text=True)
            if done.returncode != 0:
                sys.exit(f"sae train failed:\n{done.stderr}")
        run_engine(args.bin, work, sae_dir)
        sae = SAE.load_from_disk(sae_dir, device="cpu")
        with torch.no_grad():
            theirs = sae.encode(torch.from_numpy(x)).numpy()
            recon_theirs = sae.decode(sae.encode(torch.from_numpy(x))).numpy()
        ours = dense_features(os.path.join(work, "features.parquet"))
        recon = pq.read_table(os.path.join(work, "recon.parquet"))
        recon_ours = np.asarray(recon["act"].combine_chunks().flatten(), np.float32).reshape(ROWS, D_IN)
        same_ids = np.mean((ours > 0) == (theirs > 0))
        err = np.max(np.abs(ours - theirs) / np.maximum(np.abs(theirs), 1.0))
        rerr = np.max(np.linalg.norm(recon_ours - recon_theirs, axis=1) / np.maximum(np.linalg.norm(recon_theirs, axis=1), 1e-12))
        ok = same_ids == 1.0 and err <= TOL and rerr <= TOL
        failures += not ok
        label = f"{arch} {json.dumps(opts)}"
        print(f"{'ok  ' if ok else 'FAIL'} {label:70s} active sets agree {100 * same_ids:.3f}%, "
              f"max act error {err:.1e}, max reconstruction error {rerr:.1e}, mean L0 {(ours > 0).sum(1).mean():.1f}")
    sys.exit(1 if failures else 0)


if __name__ == "__main__":
    main()
