"""Reference checks of neurostream's clustering against scikit-learn (and numpy).

Subcommands (each exits non-zero with a message on a mismatch):
  lloyd DATA.npy INIT.npy RESULT.json
      KMeans(init=INIT, n_init=1, algorithm="lloyd") on float64 DATA: labels identical,
      inertia within 1e-5 (relative).
  minibatch DATA.parquet INIT.npy OUTDIR BATCH MAX_RATIO
      neurostream's all-time centroids (OUTDIR/centroids.parquet): inertia on DATA within
      MAX_RATIO of MiniBatchKMeans(init=INIT, n_init=1, batch_size=BATCH); the assignments table
      has one row per input row.
  cosine DATA.parquet INIT.npy OUTDIR BATCH MAX_RATIO
      metric = "cosine": unit-norm centroids; cosine objective sum(1 - max cos) within MAX_RATIO
      of MiniBatchKMeans on unit rows from the same (unit) centroids, centres renormalized.
  agreement OUTDIR
      label_agreement's ARI and AMI equal sklearn's on the assignments table's labelled rows
      (1e-9).
  spectral AFFINITY.npy LABELS.npy K
      SpectralClustering(affinity="precomputed") on the same matrix: ARI >= 0.95.
"""

import json
import sys

import numpy as np
import pyarrow.parquet as pq
from sklearn.cluster import KMeans, MiniBatchKMeans, SpectralClustering
from sklearn.metrics import adjusted_mutual_info_score, adjusted_rand_score


def fail(msg):
    print("MISMATCH:", msg)
    sys.exit(1)


def activations(path):
    t = pq.read_table(path)
    return np.array(t.column("act").to_pylist(), dtype=np.float64)


def lloyd(data_path, init_path, result_path):
    x = np.load(data_path).astype(np.float64)
    init = np.load(init_path).astype(np.float64)
    res = json.load(open(result_path))
    km = KMeans(n_clusters=init.shape[0], init=init, n_init=1, algorithm="lloyd", max_iter=300, tol=1e-4).fit(x)
    ours = np.array(res["labels"])
    diff = int((ours != km.labels_).sum())
    rel = abs(res["inertia"] - km.inertia_) / km.inertia_
    print(f"lloyd: {x.shape[0]} rows, k {init.shape[0]}: {diff} labels differ, inertia {res['inertia']:.6f} vs sklearn {km.inertia_:.6f} (rel {rel:.2e}), iterations {res['iterations']} vs {km.n_iter_}")
    if diff:
        fail(f"{diff} labels differ from sklearn KMeans")
    if rel > 1e-5:
        fail(f"inertia differs by {rel:.2e} (> 1e-5)")


def inertia(x, c):
    d = ((x[:, None, :] - c[None, :, :]) ** 2).sum(-1)
    return d.min(1).sum()


def minibatch(data_path, init_path, outdir, batch, max_ratio):
    x = activations(data_path)
    init = np.load(init_path).astype(np.float64)
    t = pq.read_table(f"{outdir}/centroids.parquet").to_pandas()
    t = t[t["scope"] == "all_time"].sort_values("cluster")
    ours = np.stack(t["centroid"].to_numpy()).astype(np.float64)
    a = pq.read_table(f"{outdir}/assignments.parquet")
    if a.num_rows != x.shape[0]:
        fail(f"assignments has {a.num_rows} rows for {x.shape[0]} input rows")
    ref = []
    for seed in range(5):
        mb = MiniBatchKMeans(n_clusters=init.shape[0], init=init, n_init=1, batch_size=batch, random_state=seed).fit(x)
        ref.append(inertia(x, mb.cluster_centers_))
    ref = float(np.median(ref))
    lloyd_ref = KMeans(n_clusters=init.shape[0], init=init, n_init=1).fit(x).inertia_
    ratio = inertia(x, ours) / ref
    print(f"minibatch: inertia {inertia(x, ours):.4f}, sklearn MiniBatchKMeans (median of 5 seeds) {ref:.4f}, ratio {ratio:.4f}; full Lloyd {lloyd_ref:.4f}")
    if ratio > max_ratio:
        fail(f"inertia ratio {ratio:.4f} > {max_ratio}")


def cosine(data_path, init_path, outdir, batch, max_ratio):
    x = activations(data_path)
    u = x / np.linalg.norm(x, axis=1, keepdims=True)
    init = np.load(init_path).astype(np.float64)
    init /= np.linalg.norm(init, axis=1, keepdims=True)
    t = pq.read_table(f"{outdir}/centroids.parquet").to_pandas()
    t = t[t["scope"] == "all_time"].sort_values("cluster")
    ours = np.stack(t["centroid"].to_numpy()).astype(np.float64)
    norms = np.linalg.norm(ours, axis=1)
    if np.abs(norms - 1).max() > 1e-5:
        fail(f"cosine centroids are not unit vectors: norms {norms}")
    a = pq.read_table(f"{outdir}/assignments.parquet").to_pandas()
    if not ((a["distance"] >= 0) & (a["distance"] <= 2 + 1e-6)).all():
        fail("cosine distances outside [0, 2]")

    def objective(c):
        c = c / np.linalg.norm(c, axis=1, keepdims=True)
        return (1 - (u @ c.T).max(1)).sum()

    ref = []
    for seed in range(5):
        mb = MiniBatchKMeans(n_clusters=init.shape[0], init=init, n_init=1, batch_size=batch, random_state=seed).fit(u)
        ref.append(objective(mb.cluster_centers_))
    ref = float(np.median(ref))
    ratio = objective(ours) / ref
    print(f"cosine: objective {objective(ours):.4f}, sklearn MiniBatchKMeans on unit rows {ref:.4f}, ratio {ratio:.4f}")
    if ratio > max_ratio:
        fail(f"cosine objective ratio {ratio:.4f} > {max_ratio}")


def agreement(outdir):
    a = pq.read_table(f"{outdir}/assignments.parquet").to_pandas()
    a = a[a["marker"].notna()]
    g = pq.read_table(f"{outdir}/label_agreement.parquet").to_pandas().iloc[0]
    ari = adjusted_rand_score(a["marker"], a["cluster"])
    ami = adjusted_mutual_info_score(a["marker"], a["cluster"])
    print(f"agreement: {len(a)} labelled rows: ARI {g['adjusted_rand_index']:.12f} vs sklearn {ari:.12f}, AMI {g['adjusted_mutual_info']:.12f} vs {ami:.12f}")
    if int(g["labelled_rows"]) != len(a):
        fail("labelled row counts differ")
    if abs(g["adjusted_rand_index"] - ari) > 1e-9 or abs(g["adjusted_mutual_info"] - ami) > 1e-9:
        fail("ARI/AMI differ from sklearn")


def spectral(aff_path, labels_path, k):
    a = np.load(aff_path)
    ours = np.load(labels_path)
    sc = SpectralClustering(n_clusters=k, affinity="precomputed", random_state=0).fit(a)
    ari = adjusted_rand_score(sc.labels_, ours)
    print(f"spectral: {a.shape[0]} nodes, k {k}: ARI vs sklearn {ari:.4f}")
    if ari < 0.95:
        fail(f"ARI {ari:.4f} < 0.95")


if __name__ == "__main__":
    cmd, args = sys.argv[1], sys.argv[2:]
    if cmd == "lloyd":
        lloyd(*args)
    elif cmd == "minibatch":
        minibatch(args[0], args[1], args[2], int(args[3]), float(args[4]))
    elif cmd == "cosine":
        cosine(args[0], args[1], args[2], int(args[3]), float(args[4]))
    elif cmd == "agreement":
        agreement(args[0])
    elif cmd == "spectral":
        spectral(args[0], args[1], int(args[2]))
    else:
        fail(f"unknown subcommand {cmd}")
