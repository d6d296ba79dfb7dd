"""Reference checks of the drift operators.

  check_drift.py mahalanobis ACTS.parquet OUTDIR REF_ROWS TOL
      OUTDIR/scores.parquet (token scalars mahalanobis, mahalanobis_sq) against scikit-learn
      LedoitWolf().fit(X[:REF_ROWS]).mahalanobis(X) (REF_ROWS = 0: all rows): relative error
      <= TOL; OUTDIR/alerts.parquet (token_stats mean_above on mahalanobis, windows of 200)
      fires exactly for the windows whose mean sklearn distance is above the bound (read from
      OUTDIR/bound.txt), with observed within TOL.
  check_drift.py potato RAW.parquet OUT.parquet SPEC.json TOL
      window covariances from the raw signal (numpy), pyRiemann Potato(threshold).fit on the
      first reference windows; distance to covmean_ and z-score (transform) within TOL.
"""

import json
import sys

import numpy as np
import pyarrow.parquet as pq


def fail(msg):
    print("MISMATCH:", msg)
    sys.exit(1)


def mahalanobis(acts, outdir, ref_rows, tol):
    from sklearn.covariance import LedoitWolf

    x = np.array(pq.read_table(acts).column("act").to_pylist(), dtype=np.float64)
    ref_rows = int(ref_rows) or x.shape[0]
    lw = LedoitWolf().fit(x[:ref_rows])
    ref = lw.mahalanobis(x)
    t = pq.read_table(f"{outdir}/scores.parquet").to_pandas().sort_values(["seq_id", "pos"])
    src = pq.read_table(acts).to_pandas()[["seq_id", "pos"]]
    order = np.lexsort((src["pos"].to_numpy(), src["seq_id"].to_numpy()))
    ref = ref[order]
    ours = t["mahalanobis_sq"].to_numpy()
    rel = np.abs(ours - ref).max() / np.abs(ref).max()
    rel_d = np.abs(t["mahalanobis"].to_numpy() - np.sqrt(ref)).max() / np.sqrt(ref).max()
    print(f"mahalanobis: {x.shape[0]} rows × {x.shape[1]}, reference {ref_rows} rows, shrinkage {lw.shrinkage_:.4f}: max rel error {rel:.2e} (squared), {rel_d:.2e} (distance)")
    if len(ours) != len(ref) or rel > float(tol) or rel_d > float(tol):
        fail(f"relative error {rel:.2e} > {tol}")
    bound_path = f"{outdir}/bound.txt"
    try:
        bound = float(open(bound_path).read())
    except FileNotFoundError:
        return
    d = np.sqrt(ref)
    means = [d[i : i + 200].mean() for i in range(0, len(d), 200)]
    expected = [i for i, m in enumerate(means) if m > bound]
    alerts = pq.read_table(f"{outdir}/alerts.parquet").to_pandas() if expected else None
    got = [] if alerts is None else sorted(int(s) // 200 for s in alerts["window_start"])
    print(f"alerts: windows {got} fired, expected {expected} (bound {bound})")
    if got != expected:
        fail("alerts differ")
    if alerts is not None:
        err = max(abs(o - means[w]) / means[w] for o, w in zip(alerts.sort_values("window_start")["observed"], got))
        if err > float(tol):
            fail(f"alert observed values differ by {err:.2e}")


def potato(raw, out, spec_path, tol):
    from pyriemann.artifact_detection import Potato
    from pyriemann.utils.distance import distance_riemann

    spec = json.load(open(spec_path))
    t = pq.read_table(raw).to_pandas()
    chans = [c for c in t.columns if c not in ("time", "sample", "marker")]
    x = t[chans].to_numpy(dtype=np.float64)
    fs = spec["fs"]
    length, step = int(round(spec["window_s"] * fs)), int(round(spec["step_s"] * fs))
    covs, ends = [], []
    for s in range(0, x.shape[0] - length + 1, step):
        w = x[s : s + length]
        w = w - w.mean(0)
        covs.append(w.T @ w / length)
        ends.append(int(t["sample"].iloc[s + length - 1]))
    covs = np.array(covs)
    o = pq.read_table(out).to_pandas()
    if list(o["sample"]) != ends:
        fail(f"{len(o)} windows ending at {list(o['sample'])[:5]}..., numpy has {len(ends)} ending at {ends[:5]}...")
    p = Potato(threshold=spec["threshold"]).fit(covs[: spec["reference_windows"]])
    z = p.transform(covs)
    d = np.array([distance_riemann(c, p.covmean_) for c in covs])
    ed = np.abs(o["distance"].to_numpy() - d).max() / d.max()
    ez = np.abs(o["z"].to_numpy() - z).max()
    art = (z >= spec["threshold"]).astype(float)
    print(f"potato: {len(covs)} windows, {int(art.sum())} artifacts: distance rel error {ed:.2e}, z abs error {ez:.2e}")
    if ed > float(tol) or ez > 10 * float(tol):
        fail("potato scores differ from pyRiemann")
    if (o["artifact"].to_numpy() != art)[np.abs(z - spec["threshold"]) > 1e-3].any():
        fail("artifact flags differ")


if __name__ == "__main__":
    if sys.argv[1] == "mahalanobis":
        mahalanobis(*sys.argv[2:6])
    else:
        potato(*sys.argv[2:6])
