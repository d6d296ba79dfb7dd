"""Reference check of `neurostream sae geometry` with numpy / scipy / scikit-learn.

  check_geometry.py SAE_DIR REPORT_DIR
      spectrum = numpy eigvalsh of the decoder rows' covariance (1e-9 of the largest);
      power-law slope and R² = numpy polyfit / corrcoef over the reported ranks (1e-9), and
      no range of a decade or more on the same grid is wider with R² >= 0.98 (or, when no power
      law is reported, none reaches it); modularity AMI = sklearn's
      adjusted_mutual_info_score on the written labels (1e-9); k-NN entropy = a scipy cKDTree
      Kozachenko-Leonenko estimate on the numpy PCA projection (1e-6); cosine k-means labels reach
      a cosine objective within 2% of scikit-learn KMeans(n_init=10) on unit rows; PNGs are
      valid images of the stated size.
"""

import json
import struct
import sys

import numpy as np
import pyarrow.parquet as pq
from safetensors.numpy import load_file
from scipy.spatial import cKDTree
from scipy.special import digamma, gammaln
from sklearn.cluster import KMeans
from sklearn.metrics import adjusted_mutual_info_score


def fail(msg):
    print("MISMATCH:", msg)
    sys.exit(1)


def main(sae_dir, report):
    w = load_file(f"{sae_dir}/sae_weights.safetensors")["W_dec"].astype(np.float64)
    n, d = w.shape
    s = json.load(open(f"{report}/summary.json"))
    f = pq.read_table(f"{report}/features.parquet").to_pandas()
    sp = pq.read_table(f"{report}/spectrum.parquet").to_pandas()
    x = w - w.mean(0)
    cov = x.T @ x / n
    ev, vecs = np.linalg.eigh(cov)
    ev, vecs = ev[::-1], vecs[:, ::-1]
    err = np.abs(sp["eigenvalue"].to_numpy() - np.maximum(ev, 0)).max() / ev[0]
    print(f"spectrum: {d} eigenvalues, max error {err:.2e} of the largest")
    if err > 1e-9:
        fail("spectrum differs")
    r = np.arange(1, d + 1)

    def fit(lo, hi):
        m = (r >= lo) & (r <= hi) & (ev > 0)
        slope = np.polyfit(np.log(r[m]), np.log(ev[m]), 1)[0]
        return slope, np.corrcoef(np.log(r[m]), np.log(ev[m]))[0, 1] ** 2

    positive = int(np.argmin(ev > 0)) if (ev <= 0).any() else d
    grid = sorted({int(round(10 ** (j / 8))) for j in range(0, 64) if round(10 ** (j / 8)) <= positive} | {positive})
    fits = [(np.log(hi / lo), lo, hi) + fit(lo, hi) for i, lo in enumerate(grid) for hi in grid[i + 1:] if hi >= 10 * lo]
    good = [f for f in fits if f[4] >= 0.98]
    print(f"power law: {s['power_law_note']}")
    if s["power_law_slope"] is None:
        if good:
            fail(f"no power law reported, but ranks {good[0][1]}-{good[0][2]} reach R² {good[0][4]:.4f}")
    else:
        lo, hi = s["power_law_fit_ranks"]
        slope, r2 = fit(lo, hi)
        print(f"power law: slope {s['power_law_slope']:.9f} vs numpy {slope:.9f}, R² {s['power_law_r2']:.6f} vs {r2:.6f} over ranks {lo}-{hi}")
        if abs(slope - s["power_law_slope"]) > 1e-9 or abs(r2 - s["power_law_r2"]) > 1e-9:
            fail("power-law fit differs")
        widest = max(f[0] for f in good)
        if np.log(hi / lo) < widest - 1e-9:
            fail(f"a wider range fits: {[(f[1], f[2]) for f in good if f[0] >= widest - 1e-9]}")
    g = f[f["cooccurrence_cluster"].notna()]
    ami = adjusted_mutual_info_score(g["cooccurrence_cluster"].astype(int), g["geometric_cluster"])
    print(f"modularity: AMI {s['modularity_ami']:.12f} vs sklearn {ami:.12f}; shuffled {s['shuffled_ami_mean']:.5f} ± {s['shuffled_ami_std']:.5f}")
    if abs(ami - s["modularity_ami"]) > 1e-9:
        fail("AMI differs")
    p, k = s["entropy_dims"], s["knn"]
    proj = x @ vecs[:, :p]
    dist, _ = cKDTree(proj).query(proj, k=k + 1)
    eps = dist[:, k]
    eps = eps[eps > 0]
    ln_vp = p / 2 * np.log(np.pi) - gammaln(p / 2 + 1)
    h = digamma(n) - digamma(k) + ln_vp + p * np.log(eps).mean()
    print(f"knn entropy: {s['knn_entropy']:.9f} vs scipy {h:.9f}")
    if abs(h - s["knn_entropy"]) > 1e-6:
        fail("k-NN entropy differs")
    pcs = proj[:, :2]
    # Principal-component signs are arbitrary: compare up to sign.
    for i, c in enumerate(["pc1", "pc2"]):
        e = min(np.abs(f[c].to_numpy() - pcs[:, i]).max(), np.abs(f[c].to_numpy() + pcs[:, i]).max())
        if e > 1e-6 * np.abs(pcs[:, i]).max():
            fail(f"{c} differs by {e}")
    u = w / np.linalg.norm(w, axis=1, keepdims=True)

    def cos_obj(labels):
        total = 0.0
        for c in np.unique(labels):
            mu = u[labels == c].mean(0)
            mu /= np.linalg.norm(mu)
            total += (1 - u[labels == c] @ mu).sum()
        return total

    ours = cos_obj(f["geometric_cluster"].to_numpy())
    ref = cos_obj(KMeans(n_clusters=s["clusters"], n_init=10, random_state=0).fit(u).labels_)
    print(f"cosine k-means objective {ours:.4f} vs sklearn KMeans on unit rows {ref:.4f} (ratio {ours / ref:.4f})")
    if ours > 1.02 * ref:
        fail("cosine k-means objective worse than sklearn's by more than 2%")
    for name, size in [("spectrum.png", (900, 650)), ("embedding.png", (1500, 720))]:
        b = open(f"{report}/{name}", "rb").read()
        if b[:8] != b"\x89PNG\r\n\x1a\n":
            fail(f"{name} is not a PNG")
        wh = struct.unpack(">II", b[16:24])
        if wh != size:
            fail(f"{name} is {wh}, expected {size}")
    print("plots: valid PNGs")


if __name__ == "__main__":
    main(*sys.argv[1:3])
