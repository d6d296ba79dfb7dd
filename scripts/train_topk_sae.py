"""A numpy TopK sparse autoencoder trainer (the recipe of Gao et al., "Scaling and evaluating
sparse autoencoders", 2024), writing the SAELens format. Interim: it made the bundled SmolLM2
SAE until the engine's own `sae_train` lands, and is the reference the engine's trainer will be
compared against.

  train_topk_sae.py ACTS.parquet OUT_DIR [--d-sae 2048] [--k 32] [--steps 3000] [--batch 1024]
                    [--lr 4e-4] [--holdout-from SEQ_ID] [--skip-first 1] [--seed 0] [--dtype float16]

Recipe: inputs scaled so their mean squared norm is d_in (recorded as SAELens
`normalize_activations = expected_average_only_in` with `norm_scaling_factor`); b_dec starts at
the mean of the training inputs; W_dec rows start as random unit vectors and W_enc as their
transpose; encode `topk(relu((x − b_dec)·W_enc + b_enc))`, decode `a·W_dec + b_dec`; loss
MSE + (1/32)·AuxK (the dead latents' top-k_aux = d_in/2 reconstruction of the residual);
Adam (β 0.9, 0.999) with linear warm-up over 5% of steps and linear decay over the last 20%;
decoder rows renormalized to unit norm after every step, their gradient projected first.
Rows with seq_id >= --holdout-from are held out for the evaluation printed at the end (FVU, L0,
dead fraction). Writes cfg.json, sae_weights.safetensors and train_report.json.
"""
import argparse
import json
import os
import time

import numpy as np
import pyarrow.parquet as pq
from safetensors.numpy import save_file


def load(path, holdout_from, skip_first):
    t = pq.read_table(path)
    d = int(t.schema.metadata[b"neurostream.d_model"])
    x = np.asarray(t["act"].combine_chunks().flatten(), np.float32).reshape(-1, d)
    seq = t["seq_id"].to_numpy()
    keep = t["pos"].to_numpy() >= skip_first
    meta = {k.decode(): v.decode() for k, v in t.schema.metadata.items()}
    train = seq < holdout_from if holdout_from is not None else np.ones(len(seq), bool)
    return x[train & keep], x[~train & keep], meta


def topk_mask(h, k):
    idx = np.argpartition(-h, k - 1, axis=1)[:, :k]
    a = np.zeros_like(h)
    np.put_along_axis(a, idx, np.maximum(np.take_along_axis(h, idx, axis=1), 0), axis=1)
    return a


def fvu(x, xh):
    return float(((x - xh) ** 2).sum() / ((x - x.mean(0)) ** 2).sum())


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("acts")
    ap.add_argument("out")
    ap.add_argument("--d-sae", type=int, default=2048)
    ap.add_argument("--k", type=int, default=32)
    ap.add_argument("--steps", type=int, default=3000)
    ap.add_argument("--batch", type=int, default=1024)
    ap.add_argument("--lr", type=float, default=4e-4)
    ap.add_argument("--holdout-from", type=int, default=None)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--skip-first", type=int, default=1,
                    help="drop each sequence's first N tokens (a language model's first token is an attention sink whose norm is ~100x the others)")
    ap.add_argument("--dtype", default="float16")
    a = ap.parse_args()
    rng = np.random.default_rng(a.seed)
    train, held, meta = load(a.acts, a.holdout_from, a.skip_first)
    n, d = train.shape
    m, k = a.d_sae, a.k
    scale = float(np.sqrt(d / np.mean((train.astype(np.float64) ** 2).sum(1))))
    x_all = (train * scale).astype(np.float32)
    w_dec = rng.normal(size=(m, d)).astype(np.float32)
    w_dec /= np.linalg.norm(w_dec, axis=1, keepdims=True)
    w_enc = w_dec.T.copy()
    b_enc = np.zeros(m, np.float32)
    b_dec = x_all.mean(0).astype(np.float32)
    params = [w_enc, b_enc, w_dec, b_dec]
    mom = [np.zeros_like(p) for p in params]
    vel = [np.zeros_like(p) for p in params]
    last_fired = np.zeros(m, np.int64)
    k_aux, aux_coef = d // 2, 1.0 / 32
    dead_after = max(50, 100_000 // a.batch)  # steps: a latent silent for ~100k tokens is dead
    t0 = time.time()
    for step in range(1, a.steps + 1):
        xb = x_all[rng.integers(0, n, a.batch)]
        xc = xb - b_dec
        h = xc @ w_enc + b_enc
        act = topk_mask(h, k)
        xh = act @ w_dec + b_dec
        err = xh - xb
        fired = (act > 0).any(0)
        last_fired[fired] = step
        dead = (step - last_fired) > dead_after
        # d(mean over batch of sum of squares)/d xh
        g_xh = 2 * err / a.batch
        g_h = (g_xh @ w_dec.T) * (act > 0)
        g_wdec = act.T @ g_xh
        g_bdec = g_xh.sum(0)
        if dead.any():
            # AuxK: reconstruct the residual with the top k_aux dead latents.
            hd = np.where(dead, h, -np.inf)
            kk = min(k_aux, int(dead.sum()))
            aux = topk_mask(np.where(np.isfinite(hd), hd, -1e30), kk) * dead
            res = xb - xh
            e_aux = aux @ w_dec - res
            g_eaux = aux_coef * 2 * e_aux / a.batch
            g_h = g_h + (g_eaux @ w_dec.T) * (aux > 0)
            g_wdec += aux.T @ g_eaux
        g_wenc = xc.T @ g_h
        g_benc = g_h.sum(0)
        g_bdec += -(g_h @ w_enc.T).sum(0)
        # Project out the gradient component along each (unit) decoder row.
        g_wdec -= (g_wdec * w_dec).sum(1, keepdims=True) * w_dec
        warm, decay_start = max(1, a.steps // 20), int(a.steps * 0.8)
        lr = a.lr * min(1.0, step / warm) * (1.0 if step < decay_start else (a.steps - step) / (a.steps - decay_start))
        for p, g, mo, ve in zip(params, [g_wenc, g_benc, g_wdec, g_bdec], mom, vel):
            mo *= 0.9
            mo += 0.1 * g
            ve *= 0.999
            ve += 0.001 * g * g
            p -= lr * (mo / (1 - 0.9 ** step)) / (np.sqrt(ve / (1 - 0.999 ** step)) + 1e-8)
        w_dec /= np.linalg.norm(w_dec, axis=1, keepdims=True)
        if step % 250 == 0 or step == 1:
            print(f"step {step:5d}  mse {float((err ** 2).sum(1).mean()):.4f}  fvu {fvu(xb, xh):.4f}  "
                  f"dead {dead.mean():.3f}  {time.time() - t0:.0f}s", flush=True)

    def evaluate(x):
        xs = x * scale
        a_ = topk_mask((xs - b_dec) @ w_enc + b_enc, k)
        return fvu(xs, a_ @ w_dec + b_dec), float((a_ > 0).sum(1).mean()), a_

    f_tr, l0_tr, _ = evaluate(train[:20000])
    report = {"tokens_train": int(n), "d_in": d, "d_sae": m, "k": k, "steps": a.steps, "batch": a.batch,
              "norm_scaling_factor": scale, "fvu_train": f_tr, "l0_train": l0_tr,
              "dead_fraction_train_end": float(((a.steps - last_fired) > dead_after).mean())}
    if len(held):
        f_h, l0_h, acts_h = evaluate(held)
        report.update({"tokens_heldout": int(len(held)), "fvu_heldout": f_h, "l0_heldout": l0_h,
                       "dead_fraction_heldout": float(((acts_h > 0).sum(0) == 0).mean())})
    os.makedirs(a.out, exist_ok=True)
    dt = np.float16 if a.dtype == "float16" else np.float32
    save_file({"W_enc": w_enc.astype(dt), "b_enc": b_enc.astype(dt), "W_dec": w_dec.astype(dt), "b_dec": b_dec.astype(dt)},
              os.path.join(a.out, "sae_weights.safetensors"))
    cfg = {"architecture": "topk", "k": k, "d_in": d, "d_sae": m, "dtype": a.dtype, "apply_b_dec_to_input": True,
           "normalize_activations": "expected_average_only_in", "norm_scaling_factor": scale,
           "rescale_acts_by_decoder_norm": False, "model_name": meta.get("neurostream.model"),
           "hook_name": meta.get("neurostream.layer"), "trainer": "scripts/train_topk_sae.py (numpy reference trainer)"}
    json.dump(cfg, open(os.path.join(a.out, "cfg.json"), "w"), indent=2)
    json.dump(report, open(os.path.join(a.out, "train_report.json"), "w"), indent=2)
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
