"""float64 numpy forward pass of a Llama-architecture GGUF model (SmolLM2), checked against the
engine's candle forward pass.

  llama_reference.py MODEL.gguf CASE_DIR
      CASE_DIR holds ids.u32 (token ids), residuals.f32 ([blocks, tokens, d_model]: the residual
      stream after each block) and logits.f32 (the last position's logits), little-endian, from
      Rust. The weights are read and dequantized by the `gguf` package (llama.cpp's own Python
      reader), then computed in float64 here: RMSNorm, grouped-query attention with RoPE on
      interleaved pairs (llama.cpp's GGUF conversion permutes Q and K for it), SwiGLU MLP, the
      final RMSNorm and the output projection (tied to the embedding when the file has none).
      Checks each token's residual after each block within 1e-4 x that token's max|reference|,
      and the logits within 1e-4 x max|reference logit|; prints the worst errors as JSON.
"""
import json
import os
import sys

import gguf
import numpy as np


def load(path):
    """(metadata dict of scalars, {tensor name: float64 array in [out, in] order})."""
    r = gguf.GGUFReader(path)
    meta = {}
    for k, f in r.fields.items():
        if f.types and f.types[0] != gguf.GGUFValueType.ARRAY and f.data:
            v = f.parts[f.data[0]]
            meta[k] = v.tobytes().decode() if f.types[0] == gguf.GGUFValueType.STRING else v[0].item()
    w = {t.name: gguf.quants.dequantize(t.data, t.tensor_type).astype(np.float64) for t in r.tensors}
    return meta, w


def forward(meta, w, ids):
    n_layers = meta["llama.block_count"]
    nh, nkv = meta["llama.attention.head_count"], meta["llama.attention.head_count_kv"]
    eps = meta.get("llama.attention.layer_norm_rms_epsilon", 1e-5)
    base = meta.get("llama.rope.freq_base", 10000.0)
    x = w["token_embd.weight"][ids]
    t, d = x.shape
    hd = d // nh

    def rms(x, g):
        return x / np.sqrt((x * x).mean(-1, keepdims=True) + eps) * g

    # RoPE on interleaved pairs (2i, 2i+1) of each head, angle pos * base^(-2i / hd).
    ang = np.arange(t)[:, None] * base ** (-np.arange(0, hd, 2) / hd)[None, :]
    cos, sin = np.cos(ang), np.sin(ang)

    def rope(h):  # [heads, t, hd]
        a, b = h[..., 0::2], h[..., 1::2]
        out = np.empty_like(h)
        out[..., 0::2] = a * cos - b * sin
        out[..., 1::2] = a * sin + b * cos
        return out

    causal = np.triu(np.full((t, t), -np.inf), 1)
    residuals = []
    for i in range(n_layers):
        p = f"blk.{i}."
        h = rms(x, w[p + "attn_norm.weight"])
        heads = lambda m, n: (h @ w[p + m + ".weight"].T).reshape(t, n, hd).transpose(1, 0, 2)
        q, k, v = rope(heads("attn_q", nh)), rope(heads("attn_k", nkv)), heads("attn_v", nkv)
        k, v = np.repeat(k, nh // nkv, axis=0), np.repeat(v, nh // nkv, axis=0)
        s = q @ k.transpose(0, 2, 1) / np.sqrt(hd) + causal
        s = np.exp(s - s.max(-1, keepdims=True))
        s /= s.sum(-1, keepdims=True)
        x = x + (s @ v).transpose(1, 0, 2).reshape(t, d) @ w[p + "attn_output.weight"].T
        h = rms(x, w[p + "ffn_norm.weight"])
        gate, up = h @ w[p + "ffn_gate.weight"].T, h @ w[p + "ffn_up.weight"].T
        x = x + (gate / (1 + np.exp(-gate)) * up) @ w[p + "ffn_down.weight"].T
        residuals.append(x)
    head = w.get("output.weight", w["token_embd.weight"])
    logits = rms(x[-1], w["output_norm.weight"]) @ head.T
    return np.stack(residuals), logits


def main():
    path, case = sys.argv[1:3]
    meta, w = load(path)
    ids = np.fromfile(os.path.join(case, "ids.u32"), "<u4").astype(np.int64)
    residuals, logits = forward(meta, w, ids)
    got = np.fromfile(os.path.join(case, "residuals.f32"), "<f4").reshape(residuals.shape)
    got_logits = np.fromfile(os.path.join(case, "logits.f32"), "<f4")
    worst = 0.0
    for l in range(len(residuals)):
        err = (np.abs(got[l] - residuals[l]).max(-1) / np.abs(residuals[l]).max(-1))
        tok = int(err.argmax())
        worst = max(worst, float(err[tok]))
        assert err[tok] <= 1e-4, f"block {l}, token {tok}: max error {err[tok]:.3e} x that token's max|ref|"
    logit_err = float(np.abs(got_logits - logits).max() / np.abs(logits).max())
    assert logit_err <= 1e-4, f"logits: max error {logit_err:.3e} x max|ref|"
    assert int(got_logits.argmax()) == int(logits.argmax()), "the most likely next token differs"
    print(json.dumps({"tokens": len(ids), "blocks": len(residuals), "worst_residual_rel_error": worst,
                      "logits_rel_error": logit_err}))


if __name__ == "__main__":
    main()
