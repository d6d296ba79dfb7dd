"""Recomputes feature_stats / token_stats tables with numpy and compares them with the engine's.

  check_feature_stats.py tokens IN.parquet OUT.parquet
      copies activations IN with a `token` column (a word per position) for context checks.
  check_feature_stats.py shift IN.parquet SAE_DIR OUT.parquet FEATURE START SCALE
      plants a distribution shift: from row START on, adds SCALE * (unit encoder direction of
      FEATURE) to every activation, so that feature fires far more often.
  check_feature_stats.py pick IN.parquet SAE_DIR ROWS
      prints a feature of a SAELens TopK SAE that fires on 0.5-5% of the first ROWS rows of IN
      (numpy encode, input scaling and b_dec as SAELens does): a feature to plant a shift on.
  check_feature_stats.py complement_sae SAE_DIR OUT_DIR FEATURE
      writes a SAELens ReLU SAE that reconstructs exactly the part of an activation orthogonal
      to FEATURE's encoder direction (features ±e_i of a basis of that complement): in-
      distribution FVU is small, and a shift along that direction cannot be reconstructed.
  check_feature_stats.py features FEATURES.parquet STATS_DIR INPUT.parquet JSON_SETTINGS
      checks every table of STATS_DIR against numpy on the features the engine wrote:
      counts, L0 and histograms exactly; densities, means and maxima within 1e-6 relative;
      dead/dense flags; top examples and their context; alerts (rule semantics recomputed).
  check_feature_stats.py scalars METRICS.parquet STATS_DIR JSON_SETTINGS
      checks token_stats windows (mean/min/max within 1e-6) and its FVU alerts.

Prints the alerts as `window_end kind feature` lines so the caller can assert on them.
"""
import json
import os
import sys

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

REL = 1e-6  # float64 sums; `"rel"` in the settings overrides it (float32 device sums)


def close(a, b, what):
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    err = np.abs(a - b) / np.maximum(np.abs(b), 1e-12)
    assert np.all(err <= REL), f"{what}: worst relative error {err.max():.3e} at {np.argmax(err)}: {a.ravel()[np.argmax(err)]} vs {b.ravel()[np.argmax(err)]}"


def windows_of(settings, n):
    """(start, end, final) of every window the engine emits for n tokens."""
    w, step = settings["window"], settings.get("step") or settings["window"]
    out = []
    if w == 0:
        return out
    for end in range(step, n + 1, step):
        out.append((max(0, end - w), end, False))
    if n % step:
        panes = w // step
        start = max(0, (n // step - (panes - 1)) * step)
        out.append((start, n, True))
    return out


def log_bin(v, lo, hi, bins):
    x = (np.log10(v) - lo) / (hi - lo) * bins
    return np.clip(np.floor(np.where(x < 0, 0, x)), 0, bins - 1).astype(int)


def check_features(features_path, stats_dir, input_path, settings):
    global REL
    REL = settings.get("rel", REL)
    ft = pq.read_table(features_path).to_pydict()
    n = len(ft["seq_id"])
    d_sae = int(pq.read_schema(features_path).metadata[b"neurostream.n_features"])
    acts = np.zeros((n, d_sae), np.float64)
    for r, row in enumerate(ft["features"]):
        for e in row:
            if e["act"] > 0:
                acts[r, e["id"]] = np.float32(e["act"])
    seq, pos = np.array(ft["seq_id"]), np.array(ft["pos"])
    inp = pq.read_table(input_path).to_pydict()
    words = {(s, p): t for s, p, t in zip(inp["seq_id"], inp["pos"], inp.get("token", [None] * len(inp["seq_id"])))}
    fired = acts > 0

    tables = {name[:-8]: pq.read_table(os.path.join(stats_dir, name)).to_pandas() for name in os.listdir(stats_dir) if name.endswith(".parquet")}
    ab = settings.get("activation_bins", [-3.0, 3.0, 24])
    db = settings.get("density_bins", [-8.0, 0.0, 32])
    dead_after = settings.get("dead_after", settings["window"] or 10000)
    dense_above = settings.get("dense_above", 0.1)

    expected_spans = [(s, e, "window", f) for s, e, f in windows_of(settings, n)]
    step = settings.get("step") or settings["window"]
    ends = [e for _, e, _, _ in expected_spans] or [n]
    expected_spans += [(0, e, "all_time", e == n) for e in ends]
    got = sorted(zip(tables["windows"].window_start, tables["windows"].window_end, tables["windows"].scope))
    assert got == sorted((s, e, sc) for s, e, sc, _ in expected_spans), f"windows {got} vs {expected_spans}"

    def dead_at(end):
        if end < dead_after:
            return np.zeros(d_sae, bool)
        return ~fired[end - dead_after:end].any(axis=0)

    checked = 0
    for start, end, scope, final in expected_spans:
        a, f = acts[start:end], fired[start:end]
        tokens = end - start
        count = f.sum(axis=0)
        density = count / tokens
        mean = np.where(count > 0, a.sum(axis=0) / np.maximum(count, 1), 0.0)
        mx = a.max(axis=0)
        dead = dead_at(end)
        dense = density > dense_above
        sel = lambda t: t[(t.scope == scope) & (t.window_start == start) & (t.window_end == end)]
        w = sel(tables["windows"])
        assert len(w) == 1 and w.tokens.iloc[0] == tokens
        l0 = f.sum(axis=1)
        close(w.mean_l0.iloc[0], l0.mean(), "mean_l0")
        assert w.alive.iloc[0] == (count > 0).sum() and w.dead.iloc[0] == dead.sum() and w.dense.iloc[0] == dense.sum()
        ft_ = sel(tables["features"]).sort_values("feature")
        assert list(ft_.feature) == list(range(d_sae))
        assert np.array_equal(ft_["count"].to_numpy(), count), f"counts differ in {scope} [{start},{end})"
        close(ft_.density, density, "density")
        close(ft_.mean_act, mean, "mean_act")
        close(ft_.max_act, mx, "max_act")
        assert np.array_equal(ft_.dead.to_numpy(), dead), f"dead flags differ at {end}"
        assert np.array_equal(ft_.dense.to_numpy(), dense)
        dh = sel(tables["density_histogram"])
        exp_h = np.zeros(int(db[2]) + 1, int)
        exp_h[0] = (density == 0).sum()
        if (density > 0).any():
            np.add.at(exp_h, 1 + log_bin(density[density > 0], db[0], db[1], int(db[2])), 1)
        assert np.array_equal(dh.features.to_numpy(), exp_h), f"density histogram {dh.features.to_numpy()} vs {exp_h}"
        ah = sel(tables["activation_histogram"])
        r, c = np.nonzero(f)
        bins = log_bin(a[r, c], ab[0], ab[1], int(ab[2]))
        exp = {}
        for fe, b in zip(c, bins):
            exp[(fe, b)] = exp.get((fe, b), 0) + 1
        width = (ab[1] - ab[0]) / ab[2]
        got_ah = {(fe, int(round((lo - ab[0]) / width))): cnt for fe, lo, cnt in zip(ah.feature, ah.log10_act_lo, ah["count"])}
        assert got_ah == exp, "activation histogram differs"
        lt = sel(tables["l0"])
        vals, cnts = np.unique(l0, return_counts=True)
        assert list(lt.l0) == list(vals) and list(lt.tokens) == list(cnts), "L0 distribution differs"
        checked += 1

    if settings.get("top_k", 10) > 0:
        k, ctx = settings.get("top_k", 10), settings.get("context", 5)
        te = tables["top_examples"]
        te = te[te.window_end == n]
        for fe in range(d_sae):
            rows = np.nonzero(fired[:, fe])[0]
            order = sorted(rows, key=lambda r: (-acts[r, fe], seq[r], pos[r]))[:k]
            got_f = te[te.feature == fe].sort_values("rank")
            assert [(seq[r], pos[r]) for r in order] == list(zip(got_f.seq_id, got_f.pos)), f"top examples of feature {fe}"
            close(got_f.act, [acts[r, fe] for r in order], "example act")
            for r, c in zip(order, got_f.context):
                s, p = seq[r], pos[r]
                if words.get((s, p)) is None:
                    assert c is None
                    continue
                left = "".join(words[(s, q)] for q in range(max(0, p - ctx), p) if (s, q) in words)
                right = "".join(words[(s, q)] for q in range(p + 1, p + ctx + 1) if (s, q) in words)
                assert c == f"{left}«{words[(s, p)]}»{right}", f"context {c!r} vs {left}«{words[(s, p)]}»{right}"

    # Alerts, recomputed from the rules' definitions.
    expected = []
    prev = first = None
    prev_dead = None
    for start, end, final in windows_of(settings, n):
        f = fired[start:end]
        tokens = end - start
        density = f.sum(axis=0) / tokens
        dead_frac = dead_at(end).mean()
        for rule in settings.get("alerts", []):
            kind = rule["rule"]
            if kind == "density_ratio":
                ref = {"previous_window": prev, "first_window": first}[rule.get("reference", "previous_window")]
                if ref is None:
                    continue
                feats = rule.get("features", range(d_sae))
                for fe in feats:
                    if max(density[fe] * tokens, ref[fe] * tokens) < rule.get("min_count", 5):
                        continue
                    if "above" in rule and density[fe] > rule["above"] * ref[fe]:
                        expected.append((end, kind, fe))
                    if "below" in rule and density[fe] < rule["below"] * ref[fe]:
                        expected.append((end, kind, fe))
            elif kind == "dead_fraction_jump":
                if prev_dead is not None and dead_frac - prev_dead > rule["above"]:
                    expected.append((end, kind, -1))
            elif kind == "feature_fires":
                for fe in rule["features"]:
                    if f[:, fe].sum() >= rule.get("min_count", 1):
                        expected.append((end, kind, fe))
        if not final or first is None:
            first = density if first is None else first
            prev, prev_dead = density, dead_frac
    got = []
    if "alerts" in tables:
        al = tables["alerts"]
        got = [(e, k, -1 if np.isnan(fe) else int(fe)) for e, k, fe in zip(al.window_end, al.kind, al.feature.astype(float))]
    assert sorted(got) == sorted(expected), f"alerts {sorted(got)} vs expected {sorted(expected)}"
    for e, k, fe in sorted(got):
        print(e, k, fe)
    print(f"checked {checked} spans, {len(got)} alerts", file=sys.stderr)


def check_scalars(metrics_path, stats_dir, settings):
    m = pq.read_table(metrics_path).to_pandas()
    n = len(m)
    cols = [c for c in m.columns if c not in ("seq_id", "pos")]
    t = pq.read_table(os.path.join(stats_dir, "scalars.parquet")).to_pandas()
    spans = [(s, e, "window") for s, e, _ in windows_of(settings, n)]
    ends = [e for _, e, _ in spans] or [n]
    spans += [(0, e, "all_time") for e in ends]
    expected = []
    for start, end, scope in spans:
        for c in cols:
            v = m[c].to_numpy(np.float64)[start:end]
            row = t[(t.scope == scope) & (t.window_start == start) & (t.window_end == end) & (t.column == c)]
            assert len(row) == 1, f"{scope} [{start},{end}) {c}"
            close(row["mean"].iloc[0], v.mean(), f"mean {c}")
            close(row["min"].iloc[0], v.min(), f"min {c}")
            close(row["max"].iloc[0], v.max(), f"max {c}")
        if scope == "window":
            for rule in settings.get("alerts", []):
                if rule["rule"] == "fvu_above":
                    fvu = 1 - m["explained_variance"].to_numpy(np.float64)[start:end].mean()
                    if fvu > rule["above"]:
                        expected.append((end, "fvu_above", -1))
                        print(f"fvu window [{start},{end}) {fvu:.4f}", file=sys.stderr)
    got = []
    path = os.path.join(stats_dir, "alerts.parquet")
    if os.path.exists(path):
        al = pq.read_table(path).to_pandas()
        got = [(e, k, -1) for e, k in zip(al.window_end, al.kind)]
    assert sorted(got) == sorted(expected), f"alerts {sorted(got)} vs expected {sorted(expected)}"
    for e, k, fe in sorted(got):
        print(e, k, fe)


def time_windows_of(times_ns, window_ns, step_ns):
    """Event-time windows as the docs define them, token by token: (start_ns, end_ns, token
    indices, final). Panes are aligned to the epoch; a pane closes when the first token at or
    past its end arrives; late tokens join the open pane; a gap closes at most
    window/step + 1 panes (later ones would repeat an all-empty window)."""
    cap = window_ns // step_ns
    out, closed, cur, open_ = [], [], [], None
    for i, t in enumerate(times_ns):
        p = t // step_ns
        if open_ is None:
            open_ = p
        elif p > open_:
            for _ in range(min(p - open_, cap + 1)):
                closed = (closed + [cur])[-cap:]
                cur = []
                end = (open_ + 1) * step_ns
                out.append((end - window_ns, end, [j for pane in closed for j in pane], False))
                open_ += 1
            open_ = max(open_, p)
        cur.append(i)
    if cur:
        end = (open_ + 1) * step_ns
        panes = closed[-(cap - 1):] if cap > 1 else []
        out.append((end - window_ns, end, [j for pane in panes for j in pane] + cur, True))
    return out


def check_time_windows(features_path, stats_dir, window_s, step_s):
    """Checks the windows and features tables of event-time windows: spans, token counts and
    per-feature counts exactly, densities within REL."""
    ft = pq.read_table(features_path)
    assert "time" in ft.column_names, "the features file keeps the rows' event times"
    times = ft["time"].cast(pa.int64()).to_numpy()
    d_sae = int(ft.schema.metadata[b"neurostream.n_features"])
    fired = np.zeros((len(ft), d_sae), bool)
    for r, row in enumerate(ft["features"].to_pylist()):
        for e in row:
            fired[r, e["id"]] |= e["act"] > 0
    wins = pq.read_table(os.path.join(stats_dir, "windows.parquet")).to_pandas()
    feats = pq.read_table(os.path.join(stats_dir, "features.parquet")).to_pandas()
    wins, feats = wins[wins.scope == "window"], feats[feats.scope == "window"]
    ns = lambda col: col.astype("int64").to_numpy()
    got = sorted(zip(ns(wins.window_start_time), ns(wins.window_end_time), wins.tokens, wins.final))
    expected = time_windows_of(times, int(window_s * 1e9), int(step_s * 1e9))
    assert got == sorted((s, e, len(ix), f) for s, e, ix, f in expected), f"windows {got[:5]}... vs {[(s, e, len(ix), f) for s, e, ix, f in expected][:5]}..."
    fs = ns(feats.window_end_time)
    for s, e, ix, final in expected:
        rows = feats[fs == e].sort_values("feature")
        count = fired[ix].sum(axis=0)
        assert np.array_equal(rows["count"].to_numpy(), count), f"counts differ in window ending {e}"
        if ix:
            close(rows.density, count / len(ix), "density")
    print(f"checked {len(expected)} event-time windows", file=sys.stderr)


def main():
    cmd = sys.argv[1]
    if cmd == "tokens":
        t = pq.read_table(sys.argv[2])
        vocab = [" the", " cat", " sat", " on", " a", " mat", ",", " and", " then", " slept", "."]
        tok = [vocab[(s * 7 + p * 3) % len(vocab)] + str(p) for s, p in zip(t["seq_id"].to_pylist(), t["pos"].to_pylist())]
        t = t.add_column(2, pa.field("token", pa.string(), nullable=False), pa.array(tok, pa.string()))
        pq.write_table(t.replace_schema_metadata(t.schema.metadata), sys.argv[3])
    elif cmd == "shift":
        from safetensors.numpy import load_file
        t = pq.read_table(sys.argv[2])
        w_enc = load_file(os.path.join(sys.argv[3], "sae_weights.safetensors"))["W_enc"].astype(np.float64)
        feature, start, scale = int(sys.argv[5]), int(sys.argv[6]), float(sys.argv[7])
        u = w_enc[:, feature] / np.linalg.norm(w_enc[:, feature])
        x = np.asarray(t["act"].combine_chunks().flatten(), np.float64).reshape(len(t), -1)
        x[start:] += scale * u
        i = t.schema.get_field_index("act")
        arr = pa.FixedSizeListArray.from_arrays(pa.array(x.astype(np.float32).ravel()), type=t.schema.field(i).type)
        t = t.set_column(i, t.schema.field(i), arr)
        pq.write_table(t, sys.argv[4])
    elif cmd == "pick":
        from safetensors.numpy import load_file
        t = pq.read_table(sys.argv[2])
        cfg = json.load(open(os.path.join(sys.argv[3], "cfg.json")))
        w = {k: v.astype(np.float64) for k, v in load_file(os.path.join(sys.argv[3], "sae_weights.safetensors")).items()}
        rows = int(sys.argv[4])
        x = np.asarray(t["act"].combine_chunks().flatten(), np.float64).reshape(len(t), -1)[:rows]
        x = x * cfg.get("norm_scaling_factor", 1.0) - w["b_dec"]
        h = x @ w["W_enc"] + w["b_enc"]
        kth = np.sort(h, axis=1)[:, -cfg["k"]][:, None]
        density = ((h >= kth) & (h > 0)).mean(0)
        ok = np.nonzero((density >= 0.005) & (density <= 0.05))[0]
        print(int(ok[np.argmin(np.abs(density[ok] - 0.02))]))
    elif cmd == "complement_sae":
        from safetensors.numpy import load_file, save_file
        w_enc = load_file(os.path.join(sys.argv[2], "sae_weights.safetensors"))["W_enc"].astype(np.float64)
        u = w_enc[:, int(sys.argv[4])]
        u /= np.linalg.norm(u)
        d = len(u)
        q, _ = np.linalg.qr(np.column_stack([u, np.eye(d)[:, : d - 1]]))
        basis = q[:, 1:].T  # (d-1, d), orthonormal rows, all orthogonal to u
        w_dec = np.vstack([basis, -basis])
        out = sys.argv[3]
        os.makedirs(out, exist_ok=True)
        cfg = {"architecture": "standard", "d_in": d, "d_sae": 2 * (d - 1), "dtype": "float32", "apply_b_dec_to_input": False,
               "normalize_activations": "none", "model_name": "test-model", "hook_name": "blocks.3.hook_resid_post"}
        tensors = {"W_enc": w_dec.T, "W_dec": w_dec, "b_enc": np.zeros(2 * (d - 1)), "b_dec": np.zeros(d)}
        save_file({n: np.ascontiguousarray(t.astype(np.float32)) for n, t in tensors.items()}, os.path.join(out, "sae_weights.safetensors"))
        json.dump(cfg, open(os.path.join(out, "cfg.json"), "w"))
    elif cmd == "timed":
        # Event times: ~10 ms apart (exponential), a 30 s pause at token 1500, and token 700
        # arriving 1.5 s late.
        t = pq.read_table(sys.argv[2])
        rng = np.random.default_rng(5)
        gaps = rng.exponential(0.01, len(t))
        gaps[1500] += 30.0
        secs = 1_764_000_000.25 + np.cumsum(gaps)
        secs[700] -= 1.5
        ts = pa.array((secs * 1e9).astype(np.int64), pa.timestamp("ns", tz="UTC"))
        t = t.append_column(pa.field("time", ts.type, nullable=False), ts)
        pq.write_table(t.replace_schema_metadata(pq.read_schema(sys.argv[2]).metadata), sys.argv[3])
    elif cmd == "time_windows":
        check_time_windows(sys.argv[2], sys.argv[3], float(sys.argv[4]), float(sys.argv[5]))
    elif cmd == "features":
        check_features(sys.argv[2], sys.argv[3], sys.argv[4], json.loads(sys.argv[5]))
    elif cmd == "scalars":
        check_scalars(sys.argv[2], sys.argv[3], json.loads(sys.argv[4]))
    else:
        sys.exit(f"unknown command {cmd}")


if __name__ == "__main__":
    main()
