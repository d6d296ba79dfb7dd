"""Test SAEs in the public formats, and a numpy transcription of each library's encode formula.

  sae_reference.py make DIR FORMAT ARCH D_IN D_SAE SEED [key=value ...]
      writes a random SAE: FORMAT saelens (cfg.json + sae_weights.safetensors), sparsify
      (cfg.json + sae.safetensors), gemmascope (params.npz; key compressed=true for savez_compressed),
      gemmascope2 (params.safetensors + config.json; ARCH transcoder with d_out, affine=true,
      config=false) or llamascope, with the exact file and tensor names those libraries use.
      keys: k, normalize_activations, apply_b_dec_to_input, rescale_acts_by_decoder_norm,
      norm_scaling_factor, dtype (float32|float16), transcode, scalar_threshold, threshold_range=lo,hi,
      d_out (SAELens transcoders: ARCH transcoder, skip_transcoder, jumprelu_transcoder or
      jumprelu_skip_transcoder), threshold_tensor=topk_threshold (a BatchTopK training checkpoint's
      scalar; log_threshold: an older JumpReLU checkpoint's), metadata=true (SAELens 6's nesting
      of model and hook names), activation=groupmax and skip_connection=true (sparsify),
      hook_point_out (Llama Scope; another hook than hook_point_in makes a transcoder),
      layout=r1 (Llama Scope R1 Distill: config.json + sae_weights.safetensors)
  sae_reference.py metrics DIR INPUT.parquet FEATURES.parquet METRICS.parquet [RECON.parquet]
      decodes the engine's features with numpy and checks its per-token reconstruction metrics
      (l0, mse, nmse, cosine, explained_variance) and reconstruction within the same tolerance.
  sae_reference.py check DIR INPUT.parquet FEATURES.parquet
      encodes INPUT's activations in float64 with numpy and compares with the engine's
      features (same ids; values within 1e-5 * max(|ref|, 1); at a top-k or threshold
      boundary, ids whose pre-activations tie within that tolerance may differ).

Formulas transcribed from SAELens (standard_sae.py, topk_sae.py, jumprelu_sae.py,
gated_sae.py, batchtopk_sae.py, sae.py process_sae_in / normalize_activations) and
EleutherAI sparsify (sparse_coder.py: encode = topk(relu((x - b_dec) @ W_enc.T + b_enc));
fused_encoder.py: groupmax = the max of each of k groups of num_latents / k consecutive latents).
"""
import json
import os
import sys

import numpy as np
import pyarrow.parquet as pq
from safetensors.numpy import load_file, save_file

TOL = 1e-5
# SAELens architectures that encode as JumpReLU at inference (BatchTopK and Matryoshka with
# their learned global threshold).
JUMPRELU_FAMILY = ("jumprelu", "batchtopk", "matryoshka_batchtopk", "jumprelu_transcoder", "jumprelu_skip_transcoder")


def make(out, fmt, arch, d_in, d_sae, seed, opts):
    rng = np.random.default_rng(seed)
    dtype = np.float16 if opts.get("dtype") == "float16" else np.float32
    os.makedirs(out, exist_ok=True)
    w_enc = rng.normal(0, 1 / np.sqrt(d_in), (d_in, d_sae))
    w_dec = rng.normal(0, 1 / np.sqrt(d_sae), (d_sae, d_in)) * rng.uniform(0.5, 2.0, (d_sae, 1))
    b_enc = rng.normal(-0.1, 0.1, d_sae)
    b_dec = rng.normal(0, 0.1, d_in)
    k = int(opts.get("k", 8))
    if fmt == "gemmascope":
        # Gemma Scope: params.npz with W_enc, W_dec, b_enc, b_dec, threshold (JumpReLU).
        arrays = {"W_enc": w_enc, "W_dec": w_dec, "b_enc": b_enc, "b_dec": b_dec, "threshold": rng.uniform(0.0, 0.3, d_sae)}
        save = np.savez_compressed if opts.get("compressed") == "true" else np.savez
        save(os.path.join(out, "params.npz"), **{n: v.astype(dtype) for n, v in arrays.items()})
        return
    if fmt == "gemmascope2":
        # Gemma Scope 2 (Gemma 3): params.safetensors with lowercase names, config.json beside it;
        # transcoders (arch transcoder) read pre_feedforward_layernorm and write
        # post_feedforward_layernorm, with d_out and an optional affine_skip_connection [d_in, d_out].
        d_out = int(opts.get("d_out", d_in)) if arch == "transcoder" else d_in
        w_dec = rng.normal(0, 1 / np.sqrt(d_sae), (d_sae, d_out))
        tensors = {"w_enc": w_enc, "w_dec": w_dec, "b_enc": b_enc, "b_dec": rng.normal(0, 0.1, d_out),
                   "threshold": rng.uniform(0.0, 0.3, d_sae)}
        cfg = {"architecture": "jump_relu", "model_name": "gemma-v3-270m-pt", "hf_hook_point_in": "model.layers.5.output"}
        if arch == "transcoder":
            cfg.update({"hf_hook_point_in": "model.layers.5.pre_feedforward_layernorm.output",
                        "hf_hook_point_out": "model.layers.5.post_feedforward_layernorm.output",
                        "affine_connection": opts.get("affine", "false") == "true"})
            if cfg["affine_connection"]:
                tensors["affine_skip_connection"] = rng.normal(0, 0.1, (d_in, d_out))
        save_file({n: np.ascontiguousarray(t.astype(dtype)) for n, t in tensors.items()}, os.path.join(out, "params.safetensors"))
        if opts.get("config", "true") == "true":
            json.dump(cfg, open(os.path.join(out, "config.json"), "w"))
        return
    if fmt == "llamascope":
        # OpenMOSS lm-saes / Llama Scope: hyperparams.json + checkpoints/final.safetensors.
        cfg = {"d_model": d_in, "d_sae": d_sae, "expansion_factor": d_sae // d_in, "act_fn": "jumprelu",
               "jump_relu_threshold": 0.2, "norm_activation": "dataset-wise",
               "dataset_average_activation_norm": {"in": 3.5, "out": 3.5}, "apply_decoder_bias_to_pre_encoder": False,
               "sparsity_include_decoder_norm": True, "top_k": 50, "hook_point_in": "blocks.3.hook_resid_post",
               "hook_point_out": opts.get("hook_point_out", "blocks.3.hook_resid_post"), "use_decoder_bias": True}
        tensors = {"encoder.weight": w_enc.T, "encoder.bias": b_enc, "decoder.weight": w_dec.T, "decoder.bias": b_dec}
        if opts.get("per_latent_threshold") == "true":
            tensors["log_jumprelu_threshold"] = np.log(rng.uniform(0.05, 0.4, d_sae))
        if opts.get("layout") == "r1":  # Llama Scope R1 Distill: config.json + sae_weights.safetensors
            save_file({n: np.ascontiguousarray(t.astype(dtype)) for n, t in tensors.items()}, os.path.join(out, "sae_weights.safetensors"))
            json.dump(cfg, open(os.path.join(out, "config.json"), "w"))
            return
        os.makedirs(os.path.join(out, "checkpoints"), exist_ok=True)
        save_file({n: np.ascontiguousarray(t.astype(dtype)) for n, t in tensors.items()}, os.path.join(out, "checkpoints", "final.safetensors"))
        json.dump(cfg, open(os.path.join(out, "hyperparams.json"), "w"))
        return
    if fmt == "sparsify":
        skip = opts.get("skip_connection", "false") == "true"
        cfg = {"activation": opts.get("activation", "topk"), "k": k, "num_latents": d_sae, "d_in": d_in,
               "transcode": opts.get("transcode", "false") == "true", "expansion_factor": d_sae // d_in, "normalize_decoder": True,
               "skip_connection": skip}
        tensors = {"encoder.weight": w_enc.T, "encoder.bias": b_enc, "W_dec": w_dec, "b_dec": b_dec}
        if skip:
            tensors["W_skip"] = rng.normal(0, 0.1, (d_in, d_in))
        save_file({n: np.ascontiguousarray(t.astype(dtype)) for n, t in tensors.items()}, os.path.join(out, "sae.safetensors"))
        json.dump(cfg, open(os.path.join(out, "cfg.json"), "w"))
        return
    if arch.endswith("transcoder"):
        # SAELens transcoder.py: W_dec [d_sae, d_out], b_dec [d_out] (never subtracted from the
        # input, whatever apply_b_dec_to_input says), W_skip [d_out, d_in] for skip transcoders.
        d_out = int(opts.get("d_out", d_in + 3))
        w_dec = rng.normal(0, 1 / np.sqrt(d_sae), (d_sae, d_out))
        b_dec = rng.normal(0, 0.1, d_out)
    cfg = {"architecture": arch, "d_in": d_in, "d_sae": d_sae, "dtype": "float32", "device": "cpu",
           "model_name": "test-model", "hook_name": "blocks.3.hook_resid_post", "hook_layer": 3,
           "apply_b_dec_to_input": opts.get("apply_b_dec_to_input", "true") == "true",
           "normalize_activations": opts.get("normalize_activations", "none")}
    tensors = {"W_enc": w_enc, "W_dec": w_dec, "b_dec": b_dec}
    if arch in ("topk", "batchtopk", "matryoshka_batchtopk"):
        cfg["k"] = k
        cfg["rescale_acts_by_decoder_norm"] = opts.get("rescale_acts_by_decoder_norm", "false") == "true"
    if arch.endswith("transcoder"):
        cfg.update({"d_out": w_dec.shape[1], "hook_name_out": "blocks.3.hook_mlp_out", "hook_layer_out": 3})
        if "skip" in arch:
            tensors["W_skip"] = rng.normal(0, 0.1, (w_dec.shape[1], d_in))
    if arch in JUMPRELU_FAMILY:
        if opts.get("scalar_threshold") == "true":
            tensors[opts.get("threshold_tensor", "threshold")] = np.array(0.05)
        else:
            lo, hi = (float(v) for v in opts.get("threshold_range", "0.0,0.3").split(","))
            if opts.get("threshold_tensor") == "log_threshold":  # an older SAELens JumpReLU checkpoint
                tensors["log_threshold"] = np.log(rng.uniform(max(lo, 1e-3), hi, d_sae))
            else:
                tensors["threshold"] = rng.uniform(lo, hi, d_sae)
    if arch == "gated":
        tensors.update({"b_gate": rng.normal(-0.1, 0.1, d_sae), "b_mag": rng.normal(0, 0.1, d_sae), "r_mag": rng.normal(0, 0.3, d_sae)})
    else:
        tensors["b_enc"] = b_enc
    if opts.get("metadata") == "true":  # SAELens 6: model and hook names under `metadata`
        cfg["metadata"] = {"model_name": cfg.pop("model_name"), "hook_name": cfg.pop("hook_name"), "hook_layer": cfg.pop("hook_layer")}
    if "norm_scaling_factor" in opts:
        cfg["norm_scaling_factor"] = float(opts["norm_scaling_factor"])
    save_file({n: np.ascontiguousarray(np.asarray(t).astype(dtype)) for n, t in tensors.items()}, os.path.join(out, "sae_weights.safetensors"))
    json.dump(cfg, open(os.path.join(out, "cfg.json"), "w"))


def encode(sae_dir, x):
    """Returns (dense activations, pre-activations used for selection, k or None), float64."""
    if os.path.exists(os.path.join(sae_dir, "params.npz")):  # Gemma Scope: JumpReLU, no b_dec subtraction
        p = {n: v.astype(np.float64) for n, v in np.load(os.path.join(sae_dir, "params.npz")).items()}
        h = x @ p["W_enc"] + p["b_enc"]
        return np.maximum(h, 0.0) * (h > p["threshold"]), h - p["threshold"], None
    if os.path.exists(os.path.join(sae_dir, "params.safetensors")):  # Gemma Scope 2: the same JumpReLU
        p = {n: v.astype(np.float64) for n, v in load_file(os.path.join(sae_dir, "params.safetensors")).items()}
        h = x @ p["w_enc"] + p["b_enc"]
        return np.maximum(h, 0.0) * (h > p["threshold"]), h - p["threshold"], None
    if os.path.exists(os.path.join(sae_dir, "hyperparams.json")) or os.path.exists(os.path.join(sae_dir, "config.json")):
        # Llama Scope, as lm-saes computes it: dataset-wise input scaling, then with
        # sparsity_include_decoder_norm: hidden_pre * ||W_D col||, JumpReLU, / ||W_D col||.
        r1 = not os.path.exists(os.path.join(sae_dir, "hyperparams.json"))
        cfg = json.load(open(os.path.join(sae_dir, "config.json" if r1 else "hyperparams.json")))
        weights = os.path.join(sae_dir, "sae_weights.safetensors" if r1 else os.path.join("checkpoints", "final.safetensors"))
        t = {n: v.astype(np.float64) for n, v in load_file(weights).items()}
        x = x * np.sqrt(cfg["d_model"]) / cfg["dataset_average_activation_norm"]["in"]
        h = x @ t["encoder.weight"].T + t["encoder.bias"]
        norms = np.linalg.norm(t["decoder.weight"], axis=0)
        theta = np.exp(t["log_jumprelu_threshold"]) if "log_jumprelu_threshold" in t else cfg["jump_relu_threshold"]
        scaled = h * norms
        acts = scaled * (scaled > theta) / norms
        return acts, scaled - theta, None
    cfg = json.load(open(os.path.join(sae_dir, "cfg.json")))
    if os.path.exists(os.path.join(sae_dir, "sae.safetensors")):  # sparsify
        t = {n: v.astype(np.float64) for n, v in load_file(os.path.join(sae_dir, "sae.safetensors")).items()}
        sae_in = x if cfg.get("transcode") else x - t["b_dec"]
        h = sae_in @ t["encoder.weight"].T + t["encoder.bias"]
        if cfg.get("activation") == "groupmax":
            return group_max(h, cfg["k"])
        pre = np.maximum(h, 0.0)
        return topk(pre, cfg["k"]), pre, cfg["k"]
    t = {n: v.astype(np.float64) for n, v in load_file(os.path.join(sae_dir, "sae_weights.safetensors")).items()}
    d_in = x.shape[1]
    norm = cfg.get("normalize_activations", "none")
    if norm == "constant_norm_rescale":
        x = x * (np.sqrt(d_in) / np.linalg.norm(x, axis=1, keepdims=True))
    elif norm == "layer_norm":
        mu = x.mean(axis=1, keepdims=True)
        x = x - mu
        x = x / (x.std(axis=1, ddof=1, keepdims=True) + 1e-5)
    elif norm == "expected_average_only_in":
        x = x * cfg["norm_scaling_factor"]
    arch = cfg["architecture"]
    transcoder = arch.endswith("transcoder")  # process_sae_in without the b_dec subtraction
    sae_in = x if transcoder else x - t["b_dec"] * cfg.get("apply_b_dec_to_input", True)
    if arch == "gated":
        z = sae_in @ t["W_enc"]
        gate = (z + t["b_gate"]) > 0
        mag = np.maximum(z * np.exp(t["r_mag"]) + t["b_mag"], 0.0)
        # selection boundary: the gate and the magnitude sign
        return gate * mag, np.where(gate, mag, -1.0), None
    h = sae_in @ t["W_enc"] + t["b_enc"]
    if arch in ("topk", "batchtopk", "matryoshka_batchtopk") and cfg.get("rescale_acts_by_decoder_norm"):
        h = h * np.linalg.norm(t["W_dec"], axis=1)
    if arch == "topk":
        return np.maximum(topk(h, cfg["k"]), 0.0), h, cfg["k"]
    if arch in JUMPRELU_FAMILY:
        thr = t["threshold"] if "threshold" in t else t["topk_threshold"] if "topk_threshold" in t else np.exp(t["log_threshold"])
        thr = np.broadcast_to(thr, h.shape[1:])
        return np.maximum(h, 0.0) * (h > thr), h - thr, None
    return np.maximum(h, 0.0), h, None


def group_max(h, k):
    """sparsify's groupmax on pre-activations h: each of the k groups of consecutive latents
    keeps its largest relu(h). Returns (dense, boundary, None): a latent is active iff
    boundary > 0, i.e. it beats the rest of its group and is positive."""
    g = h.reshape(len(h), k, -1)
    idx = g.argmax(axis=2)
    best = np.take_along_axis(g, idx[:, :, None], axis=2)[:, :, 0]
    out = np.zeros_like(h)
    np.put_along_axis(out, idx + np.arange(k) * g.shape[2], np.maximum(best, 0.0), axis=1)
    second = np.sort(g, axis=2)[:, :, -2] if g.shape[2] > 1 else np.full(best.shape, -np.inf)
    gap = g - np.where(g == best[:, :, None], second[:, :, None], best[:, :, None])
    return out, np.minimum(gap, g).reshape(h.shape), None


def topk(h, k):
    idx = np.argpartition(-h, k - 1, axis=1)[:, :k]
    out = np.zeros_like(h)
    np.put_along_axis(out, idx, np.take_along_axis(h, idx, axis=1), axis=1)
    return out


def check(sae_dir, input_path, features_path):
    inp = pq.read_table(input_path)
    d = int(inp.schema.metadata[b"neurostream.d_model"])
    key = lambda t: t.column("seq_id").to_numpy().astype(np.uint64) * np.uint64(1 << 32) + t.column("pos").to_numpy()
    x = inp.column("act").combine_chunks().flatten().to_numpy().reshape(-1, d).astype(np.float64)[np.argsort(key(inp), kind="stable")]
    feats = pq.read_table(features_path)
    meta = {k.decode(): v.decode() for k, v in feats.schema.metadata.items()}
    assert meta["neurostream.layout"] == "features", meta
    assert str(feats.schema.field("features").type) == "list<item: struct<id: uint32 not null, act: float not null> not null>", feats.schema
    order = np.argsort(key(feats), kind="stable")
    assert np.array_equal(np.sort(key(inp)), key(feats)[order]), "same rows"
    want, boundary, k = encode(sae_dir, x)
    n_feat = want.shape[1]
    assert int(meta["neurostream.n_features"]) == n_feat
    rows = feats.column("features").to_pylist()
    mismatched_rows, worst, l0 = 0, 0.0, 0
    for out_row, r in enumerate(order):
        got = rows[r]
        acts = [g["act"] for g in got]
        assert acts == sorted(acts, reverse=True), f"row {out_row}: not sorted by activation"
        got_ids = {g["id"]: g["act"] for g in got}
        want_ids = {int(j): want[out_row, j] for j in np.nonzero(want[out_row])[0]}
        l0 += len(got_ids)
        if k is not None:
            assert len(got_ids) <= k
        # boundary value: the k-th largest pre-activation for top-k, else 0 (threshold or sign)
        edge = np.sort(boundary[out_row])[-k] if k is not None else 0.0
        for j in set(got_ids) ^ set(want_ids):
            assert abs(boundary[out_row, j] - edge) <= TOL * max(1.0, abs(edge)), (
                f"row {out_row}: latent {j} differs (got {got_ids.get(j)}, want {want_ids.get(j)}, pre {boundary[out_row, j]}, edge {edge})")
            mismatched_rows += 1
        for j in set(got_ids) & set(want_ids):
            err = abs(got_ids[j] - want_ids[j]) / max(1.0, abs(want_ids[j]))
            worst = max(worst, err)
            assert err <= TOL, f"row {out_row}: latent {j}: got {got_ids[j]}, want {want_ids[j]}"
    print(json.dumps({"rows": len(x), "n_features": n_feat, "mean_l0": l0 / len(x), "worst_rel_error": worst, "boundary_ties": mismatched_rows,
                      "model": meta.get("neurostream.model"), "layer": meta.get("neurostream.layer")}))


def metrics(sae_dir, input_path, features_path, metrics_path, recon_path=None):
    """Decodes the engine's features with numpy (SAELens decode + inverse input normalization)
    and checks the engine's per-token metrics (and reconstruction) against it."""
    cfg = json.load(open(os.path.join(sae_dir, "cfg.json")))
    t = {n: v.astype(np.float64) for n, v in load_file(os.path.join(sae_dir, "sae_weights.safetensors")).items()}
    inp = pq.read_table(input_path)
    d = int(inp.schema.metadata[b"neurostream.d_model"])
    key = lambda tb: tb.column("seq_id").to_numpy().astype(np.uint64) * np.uint64(1 << 32) + tb.column("pos").to_numpy()
    x = inp.column("act").combine_chunks().flatten().to_numpy().reshape(-1, d).astype(np.float64)[np.argsort(key(inp), kind="stable")]
    feats = pq.read_table(features_path)
    rows = [feats.column("features").to_pylist()[i] for i in np.argsort(key(feats), kind="stable")]
    a = np.zeros((len(x), t["W_dec"].shape[0]))
    for r, row in enumerate(rows):
        for e in row:
            a[r, e["id"]] = e["act"]
    if cfg.get("rescale_acts_by_decoder_norm"):
        a = a / np.linalg.norm(t["W_dec"], axis=1)
    rec = a @ t["W_dec"] + t["b_dec"]
    norm = cfg.get("normalize_activations", "none")
    if norm == "constant_norm_rescale":
        rec = rec / (np.sqrt(d) / np.linalg.norm(x, axis=1, keepdims=True))
    elif norm == "layer_norm":
        rec = rec * x.std(axis=1, ddof=1, keepdims=True) + x.mean(axis=1, keepdims=True)
    elif norm == "expected_average_only_in":
        rec = rec / cfg["norm_scaling_factor"]
    err = x - rec
    want = {
        "l0": (a != 0).sum(axis=1).astype(np.float64),
        "mse": (err ** 2).mean(axis=1),
        "nmse": (err ** 2).sum(axis=1) / (x ** 2).sum(axis=1),
        "cosine": (x * rec).sum(axis=1) / (np.linalg.norm(x, axis=1) * np.linalg.norm(rec, axis=1)),
        "explained_variance": 1 - (err ** 2).sum(axis=1) / ((x - x.mean(axis=1, keepdims=True)) ** 2).sum(axis=1),
    }
    m = pq.read_table(metrics_path)
    assert {k.decode(): v.decode() for k, v in m.schema.metadata.items()}["neurostream.layout"] == "token_scalars"
    order = np.argsort(key(m), kind="stable")
    worst = {}
    for name, ref in want.items():
        got = m.column(name).to_numpy()[order].astype(np.float64)
        worst[name] = float(close(got, ref, name))
    if recon_path:
        r = pq.read_table(recon_path)
        got = r.column("act").combine_chunks().flatten().to_numpy().reshape(-1, d)[np.argsort(key(r), kind="stable")]
        worst["reconstruction"] = float(close(got, rec, "reconstruction"))
    print(json.dumps({"rows": len(x), "mean_nmse": float(want["nmse"].mean()), "worst_rel_error": worst}))


def close(got, want, what):
    err = np.abs(got - want) / np.maximum(np.abs(want), 1.0)
    worst = err.max() if err.size else 0.0
    assert worst <= TOL, f"{what}: worst error {worst:.3e} at row {err.argmax()} (got {got.flat[err.argmax()]}, want {want.flat[err.argmax()]})"
    return worst


if __name__ == "__main__":
    if sys.argv[1] == "make":
        out, fmt, arch, d_in, d_sae, seed = sys.argv[2:8]
        opts = dict(a.split("=", 1) for a in sys.argv[8:])
        make(out, fmt, arch, int(d_in), int(d_sae), int(seed), opts)
    elif sys.argv[1] == "check":
        check(*sys.argv[2:5])
    elif sys.argv[1] == "metrics":
        metrics(*sys.argv[2:])
    else:
        sys.exit(f"unknown command {sys.argv[1]}")
