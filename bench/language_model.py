"""Benchmark: a language model's residual stream over texts into Parquet, neurostream against
Hugging Face transformers on PyTorch (what a SAELens / TransformerLens user runs).

  python bench/language_model.py [--documents 48] [--max-tokens 256] [--layer 15] [--repeats 3]

Input: the first `documents` of the bundled abstracts (examples/data/text/abstracts.txt), cut at
`max-tokens` tokens each. Model: SmolLM2-135M-Instruct, the GGUF Q4_1 file that
`scripts/fetch_models.sh` fetches; both sides dequantize it to float32 when loading.

- neurostream: `language_model` source (`layer`) -> `parquet` sink with token texts
  (`neurostream run`, release build), wall clock from process start to output committed: 1 and 2
  workers, each forward pass on every core (candle's threads), and 2 workers with
  `RAYON_NUM_THREADS=1` (one forward pass per core).
- transformers: `AutoModelForCausalLM.from_pretrained(..., gguf_file=...)` in float32 (without
  the `kernels` package it unpacks every tensor to float32 when loading; the table names the
  class of its linear layers), its decoder cut after block `layer` (no later block and no logits run), a forward hook on that
  block, under `torch.inference_mode()`, one document per forward pass (as the source runs
  them), then `pyarrow.parquet.write_table` of the same columns (zstd level 3). Timed from before
  loading the model to the file written; the imports (several seconds) are not counted.

Model loading is timed apart: for neurostream a run of one token (process start, load, one
token, output committed), for transformers `from_pretrained`; "after loading" divides the tokens
by the total less that. Best of `repeats` each, alternated. The activations are compared token by token (the token texts
must match; error: max |difference| over each token's largest |value|). Writes
bench/LANGUAGE_MODEL_RESULTS.md. Needs torch, transformers and gguf (not in the test venv: a
few GB); the model weights from scripts/fetch_models.sh.
"""
import argparse
import os
import subprocess
import sys
import tempfile
import time

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from benchlib import cargo_build, cpu_name, results_path  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BIN = os.path.join(ROOT, "target", "release", "neurostream")
TEXTS = os.path.join(ROOT, "examples", "data", "text", "abstracts.txt")
MODELS = os.environ.get("NEUROSTREAM_MODELS") or os.path.expanduser("~/.cache/neurostream/models")
GGUF = os.path.join(MODELS, "smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf")


def neurostream(work, a, workers, threads=None, documents=None, max_tokens=None):
    """Runs the pipeline (over `documents` of `max_tokens`, default `a`'s; `threads`: RAYON_NUM_THREADS);
    returns the output's path."""
    out = os.path.join(work, f"ns{workers}_{threads}.parquet" if documents is None else "ns_load.parquet")
    pipeline = os.path.join(work, "lm.toml")
    with open(pipeline, "w") as f:
        f.write(f'[sources.lm]\nkind = "language_model"\nmodel = "smollm2"\nweights = "{GGUF}"\ntexts = "{TEXTS}"\n'
                f"layer = {a.layer}\nmax_tokens = {max_tokens or a.max_tokens}\ndocuments = {documents or a.documents}\n\n"
                f'[sinks.out]\nkind = "parquet"\ninput = "lm"\npath = "{out}"\ntokens = true\n')
    env = dict(os.environ, **({"RAYON_NUM_THREADS": str(threads)} if threads else {}))
    subprocess.run([BIN, "run", pipeline, "--workers", str(workers), "--quiet"], check=True,
                   stdout=subprocess.DEVNULL, env=env)
    return out


def transformers_run(work, a):
    """Loads the model, runs every document, writes the Parquet file; returns (path, load seconds,
    forward seconds, the class of its linear layers)."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    folder, name = os.path.split(GGUF)
    t0 = time.perf_counter()
    tok = AutoTokenizer.from_pretrained(folder, gguf_file=name)
    model = AutoModelForCausalLM.from_pretrained(folder, gguf_file=name, dtype=torch.float32).eval()
    load = time.perf_counter() - t0
    base = model.model
    base.layers = base.layers[: a.layer + 1]
    captured = []
    base.layers[a.layer].register_forward_hook(
        lambda _m, _i, out: captured.append((out[0] if isinstance(out, tuple) else out)[0].numpy().copy()))
    with open(TEXTS, encoding="utf-8") as f:
        docs = [line.rstrip("\n") for line in f][: a.documents]
    seq, pos, tokens, acts = [], [], [], []
    forward = 0.0
    with torch.inference_mode():
        for line, text in enumerate(docs):
            ids = tok(text, add_special_tokens=False)["input_ids"][: a.max_tokens]
            t0 = time.perf_counter()
            base(input_ids=torch.tensor([ids]))
            forward += time.perf_counter() - t0
            acts.append(captured.pop())
            seq += [line] * len(ids)
            pos += range(len(ids))
            tokens += tok.batch_decode([[i] for i in ids])
    x = np.concatenate(acts).astype(np.float32)
    table = pa.table({
        "seq_id": pa.array(seq, pa.uint64()),
        "pos": pa.array(pos, pa.uint32()),
        "token": pa.array(tokens, pa.string()),
        "act": pa.FixedSizeListArray.from_arrays(pa.array(x.reshape(-1)), x.shape[1]),
    })
    out = os.path.join(work, "hf.parquet")
    pq.write_table(table, out, compression="zstd", compression_level=3)
    return out, load, forward, type(base.layers[0].mlp.up_proj).__name__


def read(path):
    t = pq.read_table(path, columns=["seq_id", "pos", "token", "act"]).sort_by([("seq_id", "ascending"), ("pos", "ascending")])
    acts = t.column("act").combine_chunks()
    x = acts.values.to_numpy().reshape(len(t), acts.type.list_size)
    return t.column("token").to_pylist(), x


def compare(ours, theirs):
    """Max over tokens of max |difference| / max |reference value|; the token texts must match."""
    (tok_a, a), (tok_b, b) = read(ours), read(theirs)
    assert tok_a == tok_b, f"token texts differ: {len(tok_a)} vs {len(tok_b)} tokens, first difference at " \
        f"{next((i for i, (p, q) in enumerate(zip(tok_a, tok_b)) if p != q), min(len(tok_a), len(tok_b)))}"
    scale = np.abs(b).max(axis=1)
    return float((np.abs(a - b).max(axis=1) / scale).max()), len(tok_a)


def timed(f):
    t0 = time.perf_counter()
    out = f()
    return time.perf_counter() - t0, out


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--documents", type=int, default=48)
    ap.add_argument("--max-tokens", type=int, default=256)
    ap.add_argument("--layer", type=int, default=15)
    ap.add_argument("--repeats", type=int, default=3)
    a = ap.parse_args()
    if not os.path.exists(GGUF):
        sys.exit(f"{GGUF} not found: run scripts/fetch_models.sh")
    import torch
    import transformers
    cargo_build("--bin", "neurostream")
    work = tempfile.mkdtemp(prefix="ns-lm-")
    # (workers, RAYON_NUM_THREADS) -> seconds
    ours = {(1, None): [], (2, None): [], (2, 1): []}
    our_load, theirs, their_load, forward = [], [], [], []
    for _ in range(a.repeats):
        for w, th in ours:
            ours[w, th].append(timed(lambda w=w, th=th: neurostream(work, a, w, th))[0])
        our_load.append(timed(lambda: neurostream(work, a, 1, documents=1, max_tokens=1))[0])
        t, (hf_out, load, fwd, linear) = timed(lambda: transformers_run(work, a))
        theirs.append(t)
        their_load.append(load)
        forward.append(fwd)
        print(f"neurostream {', '.join(f'{w} workers threads {th}: {v[-1]:.2f} s' for (w, th), v in ours.items())}, "
              f"one token {our_load[-1]:.2f} s; "
              f"transformers {t:.2f} s (loading {load:.2f} s, forward passes {fwd:.2f} s)", flush=True)
    errors = {c: compare(os.path.join(work, f"ns{c[0]}_{c[1]}.parquet"), hf_out) for c in ours}
    tokens = errors[1, None][1]
    assert max(e for e, _ in errors.values()) < 1e-3, f"activations differ: {errors}"
    peer, peer_load, load = min(theirs), min(their_load), min(our_load)
    lines = [
        "# Benchmark: a language model's residual stream into Parquet",
        "",
        f"Command: `python bench/language_model.py --documents {a.documents} --max-tokens {a.max_tokens} "
        f"--layer {a.layer} --repeats {a.repeats}` (release build, default target; {cpu_name()}, {os.cpu_count()} cores; "
        f"PyTorch {torch.__version__} on {torch.get_num_threads()} threads, transformers {transformers.__version__} "
        f"(linear layers: `{linear}`), "
        f"pyarrow {pa.__version__}).",
        "",
        f"SmolLM2-135M-Instruct (GGUF Q4_1, dequantized to float32 by both) over the first {a.documents} bundled "
        f"abstracts, at most {a.max_tokens} tokens each ({tokens} tokens), residual stream after block {a.layer} "
        "with each token's text into zstd level 3 Parquet. neurostream: `language_model` source -> `parquet` sink "
        "(`neurostream run`, process start to output committed). transformers: `from_pretrained(gguf_file=...)`, "
        f"the decoder cut after block {a.layer}, a forward hook on it, `torch.inference_mode()`, one document per "
        "forward pass, then `pyarrow.parquet.write_table`; timed from loading the model to the file written "
        "(imports not counted). Loading is timed apart (neurostream: a run of one token; transformers: "
        "`from_pretrained`), and \"after loading\" counts the tokens over the rest. Best of "
        f"{a.repeats}, alternated. Activations agree to the error shown (max over tokens of the largest "
        "difference over that token's largest value); the token texts are equal.",
        "",
        "| side | workers (threads) | total s | loading s | tokens/s | tokens/s after loading | ratio | ratio after loading | max error |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
        f"| transformers | - | {peer:.2f} | {peer_load:.2f} | {tokens / peer:,.0f} | {tokens / (peer - peer_load):,.0f} | 1.00x | 1.00x | - |",
    ]
    for (w, th), times in ours.items():
        s, e = min(times), errors[w, th][0]
        shown = f"{w}" if th is None else f"{w} (`RAYON_NUM_THREADS={th}`)"
        lines.append(f"| neurostream | {shown} | {s:.2f} | {load:.2f} | {tokens / s:,.0f} | {tokens / (s - load):,.0f} | "
                     f"{peer / s:.2f}x | {(peer - peer_load) / (s - load):.2f}x | {e:.1e} |")
    lines += ["", f"transformers' forward passes alone: {min(forward):.2f} s ({tokens / min(forward):,.0f} tokens/s)."]
    with open(results_path("LANGUAGE_MODEL_RESULTS.md"), "w") as f:
        f.write("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
