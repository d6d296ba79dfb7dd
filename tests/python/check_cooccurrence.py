"""Reference check of the `cooccurrence` operator with numpy / scipy / scikit-learn.

  check_cooccurrence.py make OUT.parquet N_FEATURES GROUPS SEQS SEQ_LEN SEED
      writes a features-layout Parquet file with planted co-firing groups.
  check_cooccurrence.py check FEATURES.parquet OUTDIR SPEC.json
      recomputes every report from the input: window firing sets, the span's pair and feature
      counts (exact), the four measures (1e-12), top partners (values, 1e-12), connected
      components (scipy.sparse.csgraph, identical partition) and spectral clusters
      (sklearn SpectralClustering(affinity="precomputed") on the same matrix: ARI >= 0.95).
"""

import json
import sys

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components
from sklearn.cluster import SpectralClustering
from sklearn.metrics import adjusted_rand_score


def fail(msg):
    print("MISMATCH:", msg)
    sys.exit(1)


def make(out, n_features, groups, seqs, seq_len, seed):
    rng = np.random.default_rng(seed)
    size = n_features // groups
    seq_ids, pos, feats = [], [], []
    for s in range(seqs):
        for p in range(seq_len):
            g = rng.integers(groups)
            members = rng.choice(np.arange(g * size, (g + 1) * size), size=rng.integers(2, 6), replace=False)
            noise = rng.integers(n_features, size=rng.integers(0, 2))
            ids = np.unique(np.concatenate([members, noise])).astype(np.uint32)
            acts = rng.uniform(0.05, 3.0, size=len(ids)).astype(np.float32)
            # A value at or below the threshold must not count as firing.
            if len(ids) > 2:
                acts[0] = 0.0
            order = np.argsort(-acts)
            seq_ids.append(s)
            pos.append(p)
            feats.append([{"id": int(ids[i]), "act": float(acts[i])} for i in order])
    item = pa.struct([("id", pa.uint32()), ("act", pa.float32())])
    schema = pa.schema(
        [("seq_id", pa.uint64()), ("pos", pa.uint32()), ("features", pa.list_(item))],
        metadata={"neurostream.layout": "features", "neurostream.n_features": str(n_features)},
    )
    t = pa.table([pa.array(seq_ids, pa.uint64()), pa.array(pos, pa.uint32()), pa.array(feats, pa.list_(item))], schema=schema)
    pq.write_table(t, out)


def windows(path, spec):
    t = pq.read_table(path).to_pylist()
    thr = spec.get("threshold", 0.0)
    unit = spec.get("window", "token")
    block = spec.get("block_tokens", 256)
    out, cur, cur_rows, cur_seq = [], set(), 0, None
    for row in t:
        if unit != "token" and cur_rows > 0 and row["seq_id"] != cur_seq:
            out.append(cur)
            cur, cur_rows = set(), 0
        cur_seq = row["seq_id"]
        cur |= {f["id"] for f in row["features"] if f["act"] > thr}
        cur_rows += 1
        if unit == "token" or (unit == "block" and cur_rows >= block):
            out.append(cur)
            cur, cur_rows = set(), 0
    if cur_rows > 0:
        out.append(cur)
    return out


def measures(n11, na, nb, n):
    n10, n01 = na - n11, nb - n11
    n00 = n - na - nb + n11
    with np.errstate(divide="ignore", invalid="ignore"):
        j = np.where(n11 + n10 + n01 > 0, n11 / (n11 + n10 + n01), 0.0)
        d = np.where(2 * n11 + n10 + n01 > 0, 2 * n11 / (2 * n11 + n10 + n01), 0.0)
        s = np.where(n > 0, (n11 + n00) / n, 0.0)
        den = np.sqrt(na * (n - na) * nb * (n - nb))
        p = np.where(den > 0, (n11 * n00 - n10 * n01) / np.where(den > 0, den, 1), 0.0)
    return {"jaccard": j, "dice": d, "simple_matching": s, "phi": p}


def check(features, outdir, spec_path):
    spec = json.load(open(spec_path))
    nf = int(pq.read_schema(features).metadata[b"neurostream.n_features"])
    wins = windows(features, spec)
    pairs_t = pq.read_table(f"{outdir}/pairs.parquet").to_pandas()
    summary = pq.read_table(f"{outdir}/summary.parquet").to_pandas()
    span = spec.get("span_windows")
    reports = sorted(summary["window_end"].unique())
    expect_reports = []
    if spec.get("report_every"):
        expect_reports = list(range(spec["report_every"], len(wins) + 1, spec["report_every"]))
    if not expect_reports or expect_reports[-1] != len(wins):
        expect_reports.append(len(wins))
    if [int(r) for r in reports] != expect_reports:
        fail(f"reports at {reports}, expected {expect_reports}")
    for end in [int(r) for r in reports]:
        start = 0 if span is None else max(0, end - span)
        span_wins = wins[start:end]
        n = len(span_wins)
        x = np.zeros((n, nf), dtype=np.int64)
        for i, w in enumerate(span_wins):
            x[i, list(w)] = 1
        co = x.T @ x
        single = np.diag(co).copy()
        a, b = np.nonzero(np.triu(co, 1) >= spec.get("min_count", 1))
        ours = pairs_t[pairs_t["window_end"] == end].sort_values(["feature_a", "feature_b"])
        if len(ours) != len(a) or (ours["feature_a"].to_numpy() != a).any() or (ours["feature_b"].to_numpy() != b).any():
            fail(f"report {end}: {len(ours)} pairs, numpy has {len(a)} (or different pairs)")
        n11 = co[a, b].astype(float)
        if (ours["count"].to_numpy() != n11).any() or (ours["count_a"].to_numpy() != single[a]).any() or (ours["count_b"].to_numpy() != single[b]).any():
            fail(f"report {end}: counts differ")
        ms = measures(n11, single[a].astype(float), single[b].astype(float), float(n))
        for name, ref in ms.items():
            err = np.abs(ours[name].to_numpy() - ref).max() if len(ref) else 0.0
            if err > 1e-12:
                fail(f"report {end}: {name} differs by {err}")
        srow = summary[summary["window_end"] == end].iloc[0]
        if int(srow["windows"]) != n or int(srow["firing_features"]) != int((single > 0).sum()):
            fail(f"report {end}: summary {srow.to_dict()} vs {n} windows, {(single > 0).sum()} features")
        # top partners by rank_by over all co-firing pairs
        top_n = spec.get("top_n", 10)
        if top_n:
            partners = pq.read_table(f"{outdir}/partners.parquet").to_pandas()
            partners = partners[partners["window_end"] == end]
            a_all, b_all = np.nonzero(np.triu(co, 1) >= 1)
            vals = measures(co[a_all, b_all].astype(float), single[a_all].astype(float), single[b_all].astype(float), float(n))[spec.get("rank_by", "phi")]
            per = {}
            for i, j, v in zip(a_all, b_all, vals):
                per.setdefault(i, []).append(v)
                per.setdefault(j, []).append(v)
            for f, vs in per.items():
                ref = sorted(vs, reverse=True)[:top_n]
                got = partners[partners["feature"] == f].sort_values("rank")["value"].to_numpy()
                if len(got) != len(ref) or np.abs(got - np.array(ref)).max() > 1e-12:
                    fail(f"report {end}: partners of feature {f}: {got} vs {ref}")
        # components over pairs whose measure reaches the threshold
        thr = spec.get("component_threshold")
        if thr is not None:
            comp = pq.read_table(f"{outdir}/components.parquet").to_pandas()
            comp = comp[comp["window_end"] == end].sort_values("feature")
            a_all, b_all = np.nonzero(np.triu(co, 1) >= 1)
            m = measures(co[a_all, b_all].astype(float), single[a_all].astype(float), single[b_all].astype(float), float(n))[spec.get("component_measure", "jaccard")]
            keep = m >= thr
            g = coo_matrix((np.ones(keep.sum()), (a_all[keep], b_all[keep])), shape=(nf, nf))
            _, labels = connected_components(g, directed=False)
            firing = np.nonzero(single > 0)[0]
            ref = {}
            for f in firing:
                ref.setdefault(labels[f], []).append(f)
            ref_label = {f: min(members) for members in ref.values() for f in members}
            got = dict(zip(comp["feature"], comp["component"]))
            if set(got) != set(int(f) for f in firing) or any(got[f] != ref_label[f] for f in got):
                fail(f"report {end}: components differ")
            print(f"report {end}: {len(ref)} components agree")
        k = spec.get("clusters")
        if k:
            cl = pq.read_table(f"{outdir}/clusters.parquet").to_pandas()
            cl = cl[cl["window_end"] == end].sort_values("feature")
            nodes = np.nonzero(single >= spec.get("cluster_min_count", 1))[0]
            if (cl["feature"].to_numpy() != nodes).any():
                fail(f"report {end}: clustered features differ")
            a_all, b_all = np.nonzero(np.triu(co, 1) >= 1)
            w = measures(co[a_all, b_all].astype(float), single[a_all].astype(float), single[b_all].astype(float), float(n))[spec.get("cluster_measure", "jaccard")]
            w = np.maximum(w, 0)
            aff = np.zeros((nf, nf))
            aff[a_all, b_all] = w
            aff = aff + aff.T
            aff = aff[np.ix_(nodes, nodes)]
            ref = SpectralClustering(n_clusters=k, affinity="precomputed", random_state=0).fit(aff).labels_
            ari = adjusted_rand_score(ref, cl["cluster"].to_numpy())
            print(f"report {end}: spectral clusters of {len(nodes)} features: ARI vs sklearn {ari:.4f}")
            if ari < 0.95:
                fail(f"report {end}: ARI {ari:.4f} < 0.95")
        print(f"report {end}: {n} windows, {len(a)} pairs agree with numpy")


if __name__ == "__main__":
    if sys.argv[1] == "make":
        make(sys.argv[2], *[int(v) for v in sys.argv[3:8]])
    else:
        check(*sys.argv[2:5])
