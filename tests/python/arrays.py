"""Activation arrays in .npy and .safetensors files for the `array` source, and the check of
what the engine read from them.

  arrays.py write DIR     writes a.npy ([300, 24] f32), b.npy ([5, 40, 24] f16),
                          c.safetensors (tensors `resid` [250, 24] bf16 and `other` [2, 2] f32),
                          trunc.npy (a.npy cut short)
  arrays.py check OUT.parquet FILE [TENSOR] [SEQ_LEN]
                          compares OUT (activation layout) with the array in FILE converted to
                          float32 exactly as torch/numpy would (f16 and bf16 convert exactly),
                          seq_id/pos from the shape or SEQ_LEN
"""
import json
import os
import sys

import numpy as np
import pyarrow.parquet as pq
from safetensors.numpy import load_file, save_file


def bf16_bytes(x):
    """float32 -> bfloat16 bit patterns (round to nearest even), as uint16."""
    b = np.ascontiguousarray(x, np.float32).view(np.uint32)
    return ((b + 0x7FFF + ((b >> 16) & 1)) >> 16).astype(np.uint16)


def write(d):
    rng = np.random.default_rng(5)
    np.save(os.path.join(d, "a.npy"), rng.normal(size=(300, 24)).astype(np.float32))
    np.save(os.path.join(d, "b.npy"), rng.normal(size=(5, 40, 24)).astype(np.float16))
    # numpy has no bfloat16: write the bit patterns and patch the dtype in the header.
    resid = bf16_bytes(rng.normal(size=(250, 24)))
    save_file({"resid": resid, "other": np.ones((2, 2), np.float32)}, os.path.join(d, "c.safetensors"))
    raw = open(os.path.join(d, "c.safetensors"), "rb").read()
    n = int.from_bytes(raw[:8], "little")
    meta = json.loads(raw[8:8 + n])
    assert meta["resid"]["dtype"] == "U16"
    meta["resid"]["dtype"] = "BF16"
    header = json.dumps(meta, separators=(",", ":")).encode()
    header += b" " * (-len(header) % 8)
    open(os.path.join(d, "c.safetensors"), "wb").write(len(header).to_bytes(8, "little") + header + raw[8 + n:])
    full = open(os.path.join(d, "a.npy"), "rb").read()
    open(os.path.join(d, "trunc.npy"), "wb").write(full[: len(full) - 100])


def load(path, tensor):
    if path.endswith(".npy"):
        return np.load(path).astype(np.float32)
    raw = open(path, "rb").read()
    n = int.from_bytes(raw[:8], "little")
    meta = json.loads(raw[8:8 + n])[tensor]
    a, b = meta["data_offsets"]
    body = raw[8 + n + a:8 + n + b]
    if meta["dtype"] == "BF16":
        bits = np.frombuffer(body, np.uint16).astype(np.uint32) << 16
        return bits.view(np.float32).reshape(meta["shape"])
    return np.frombuffer(body, np.float32).reshape(meta["shape"])


def check(out, path, tensor=None, seq_len=None):
    x = load(path, tensor)
    t = pq.read_table(out)
    if x.ndim == 3:
        s, l, d = x.shape
        seq = np.repeat(np.arange(s), l)
        pos = np.tile(np.arange(l), s)
        x = x.reshape(s * l, d)
    else:
        r = np.arange(len(x))
        seq, pos = (r // seq_len, r % seq_len) if seq_len else (np.zeros_like(r), r)
    got = np.asarray(t["act"].combine_chunks().flatten(), np.float32).reshape(len(t), -1)
    assert got.shape == x.shape, f"{got.shape} vs {x.shape}"
    assert np.array_equal(got, x), f"values differ: max {np.abs(got - x).max()}"
    assert np.array_equal(t["seq_id"].to_numpy(), seq) and np.array_equal(t["pos"].to_numpy(), pos), "seq_id/pos differ"
    print(f"{out}: {len(t)} rows equal to {os.path.basename(path)}")


if __name__ == "__main__":
    if sys.argv[1] == "write":
        write(sys.argv[2])
    else:
        tensor = sys.argv[4] if len(sys.argv) > 4 and sys.argv[4] != "-" else None
        seq_len = int(sys.argv[5]) if len(sys.argv) > 5 else None
        check(sys.argv[2], sys.argv[3], tensor, seq_len)
