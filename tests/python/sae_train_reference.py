"""Float64 numpy reference of one SAE training step's loss and gradients (dense, written from
the formulas in operators/src/sae_train/model.rs's module docs), compared with the engine's.

  sae_train_reference.py grads CASE.safetensors CASE.json OURS.safetensors
      CASE.safetensors: x [B,d], w_enc [m,d], b_enc [m], w_dec [m,d], b_dec [d],
      log_threshold [m] (JumpReLU), dead [m] (1.0 = dead); CASE.json: {"architecture": ...,
      "k", "l1_coefficient", "l0_coefficient", "bandwidth", "aux_coef", "k_aux"}.
      OURS.safetensors: the engine's loss [1] and grad_<param> tensors.
      Checks the loss and every gradient within 1e-4 relative (‖ours − ref‖ / ‖ref‖).
"""
import json
import sys

import numpy as np
from safetensors.numpy import load_file

TOL = 1e-4


def top_mask(h, k):
    """Each row's k largest entries that are > 0 (ties: lower index first)."""
    mask = np.zeros_like(h, bool)
    if k <= 0:
        return mask
    idx = np.argsort(-h, axis=1, kind="stable")[:, :k]
    np.put_along_axis(mask, idx, True, axis=1)
    return mask & (h > 0)


def reference(t, cfg):
    x, we, be, wd, bd = (t[n].astype(np.float64) for n in ["x", "w_enc", "b_enc", "w_dec", "b_dec"])
    B = x.shape[0]
    arch = cfg["architecture"]
    xc = x - bd
    h = xc @ we.T + be
    if arch == "topk":
        mask = top_mask(h, cfg["k"])
    elif arch == "batchtopk":
        flat = h.ravel()
        want = min(cfg["k"] * B, flat.size)
        pos = np.sort(flat[flat > 0])
        cut = pos[-want] if len(pos) > want else np.finfo(np.float32).tiny
        mask = (h > 0) & (h >= cut)
    elif arch == "relu":
        mask = h > 0
    elif arch == "jumprelu":
        theta = np.exp(t["log_threshold"].astype(np.float64))
        mask = (h > theta) & (h > 0)
    else:
        raise SystemExit(f"unknown architecture {arch}")
    a = h * mask
    xh = a @ wd + bd
    err = xh - x
    mse = (err ** 2).sum(1).mean()
    g_xh = 2 * err / B
    g_a = g_xh @ wd.T
    g_wd = a.T @ g_xh
    g_h = g_a * mask
    penalty, g_lt, aux_loss = 0.0, None, 0.0
    if arch == "relu":
        lam = cfg["l1_coefficient"]
        nrm = np.linalg.norm(wd, axis=1)
        penalty = lam * (a * nrm).sum(1).mean()
        g_h = g_h + lam / B * nrm * mask
        g_wd = g_wd + lam / B * (a.sum(0) / nrm)[:, None] * wd
    if arch == "jumprelu":
        lam, eps = cfg["l0_coefficient"], cfg["bandwidth"]
        penalty = lam * mask.sum(1).mean()
        near = np.abs(h - theta) < eps / 2
        g_theta = (near * (g_a * (-theta / eps) + lam / B * (-1.0 / eps))).sum(0)
        g_lt = g_theta * theta
    dead = t["dead"] > 0.5
    if arch in ("topk", "batchtopk") and dead.any() and cfg["k_aux"] > 0:
        hd = np.where(dead, h, -np.inf)
        amask = top_mask(hd, min(cfg["k_aux"], int(dead.sum())))
        aux = np.where(amask, hd, 0.0)
        e = aux @ wd - (x - xh)
        aux_loss = (e ** 2).sum(1).mean()
        g_e = 2 * cfg["aux_coef"] / B * e
        g_h = g_h + (g_e @ wd.T) * amask
        g_wd = g_wd + aux.T @ g_e
    g = {
        "w_enc": g_h.T @ xc,
        "b_enc": g_h.sum(0),
        "w_dec": g_wd,
        "b_dec": g_xh.sum(0) - (g_h @ we).sum(0),
    }
    if g_lt is not None:
        g["log_threshold"] = g_lt
    loss = mse + cfg["aux_coef"] * aux_loss + penalty
    return loss, g, mask.sum(1).mean()


def main():
    if sys.argv[1] != "grads":
        raise SystemExit(__doc__)
    t = load_file(sys.argv[2])
    cfg = json.load(open(sys.argv[3]))
    ours = load_file(sys.argv[4])
    loss, g, l0 = reference(t, cfg)
    rel = abs(float(ours["loss"][0]) - loss) / abs(loss)
    assert rel <= TOL, f"{cfg['architecture']}: loss {float(ours['loss'][0])} vs float64 {loss} (relative {rel:.2e})"
    worst = {}
    for name, ref in g.items():
        got = ours[f"grad_{name}"].astype(np.float64)
        assert got.shape == ref.shape, f"grad {name}: shape {got.shape} vs {ref.shape}"
        denom = np.linalg.norm(ref)
        assert denom > 0, f"{cfg['architecture']}: the reference gradient of {name} is zero (the case tests nothing)"
        err = np.linalg.norm(got - ref) / denom
        worst[name] = err
        assert err <= TOL, f"{cfg['architecture']}: grad {name} relative error {err:.2e} > {TOL}"
    print(f"{cfg['architecture']}: loss {loss:.6f} (rel err {rel:.1e}), L0 {l0:.1f}, gradient errors " +
          ", ".join(f"{k} {v:.1e}" for k, v in worst.items()))


if __name__ == "__main__":
    main()
