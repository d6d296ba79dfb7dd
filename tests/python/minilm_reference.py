"""float64 numpy forward pass of a BERT encoder (all-MiniLM-L6-v2) from its safetensors, checked
against the engine's candle forward pass.

  minilm_reference.py MODEL_DIR CASE_DIR
      CASE_DIR holds ids.u32 (token ids), layers.f32 ([n_layers, tokens, d] hidden states after
      each layer) and embedding.f32 (mean-pooled, L2-normalized), all little-endian, from Rust.
      Checks every hidden state within 1e-4 x max|reference| and the embedding within 1e-5.
"""
import json
import os
import sys

import numpy as np
from math import erf, sqrt
from safetensors.numpy import load_file


def forward(model_dir, ids):
    cfg = json.load(open(os.path.join(model_dir, "config.json")))
    w = {k: v.astype(np.float64) for k, v in load_file(os.path.join(model_dir, "model.safetensors")).items() if v.dtype != np.int64}
    eps, nh = cfg["layer_norm_eps"], cfg["num_attention_heads"]

    def ln(x, p):
        mu = x.mean(-1, keepdims=True)
        var = ((x - mu) ** 2).mean(-1, keepdims=True)
        return (x - mu) / np.sqrt(var + eps) * w[p + ".weight"] + w[p + ".bias"]

    lin = lambda x, p: x @ w[p + ".weight"].T + w[p + ".bias"]
    gelu = np.vectorize(lambda v: 0.5 * v * (1.0 + erf(v / sqrt(2.0))))
    t = len(ids)
    x = w["embeddings.word_embeddings.weight"][ids] + w["embeddings.position_embeddings.weight"][:t] + w["embeddings.token_type_embeddings.weight"][0]
    x = ln(x, "embeddings.LayerNorm")
    d = x.shape[1]
    hd = d // nh
    layers = []
    for l in range(cfg["num_hidden_layers"]):
        p = f"encoder.layer.{l}"
        heads = lambda y: y.reshape(t, nh, hd).transpose(1, 0, 2)
        q, k, v = (heads(lin(x, f"{p}.attention.self.{n}")) for n in ("query", "key", "value"))
        s = q @ k.transpose(0, 2, 1) / np.sqrt(hd)
        s = np.exp(s - s.max(-1, keepdims=True))
        s /= s.sum(-1, keepdims=True)
        ctx = (s @ v).transpose(1, 0, 2).reshape(t, d)
        x = ln(x + lin(ctx, f"{p}.attention.output.dense"), f"{p}.attention.output.LayerNorm")
        x = ln(x + lin(gelu(lin(x, f"{p}.intermediate.dense")), f"{p}.output.dense"), f"{p}.output.LayerNorm")
        layers.append(x)
    mean = x.mean(0)
    return np.stack(layers), mean / np.linalg.norm(mean)


def main():
    model_dir, case = sys.argv[1:3]
    ids = np.fromfile(os.path.join(case, "ids.u32"), "<u4").astype(np.int64)
    layers, emb = forward(model_dir, ids)
    got = np.fromfile(os.path.join(case, "layers.f32"), "<f4").reshape(layers.shape)
    got_emb = np.fromfile(os.path.join(case, "embedding.f32"), "<f4")
    worst = 0.0
    for l in range(len(layers)):
        scale = np.abs(layers[l]).max()
        err = np.abs(got[l] - layers[l]).max() / scale
        worst = max(worst, err)
        assert err <= 1e-4, f"layer {l}: max error {err:.3e} x max|ref|"
    emb_err = np.abs(got_emb - emb).max()
    assert emb_err <= 1e-5, f"embedding: max error {emb_err:.3e}"
    print(json.dumps({"tokens": len(ids), "worst_layer_rel_error": worst, "embedding_max_error": emb_err}))


if __name__ == "__main__":
    main()
