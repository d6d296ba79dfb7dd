"""Reading neurostream's signal Parquet layout in the reference checks."""


def markers(t):
    """(sample, label) of every marker of table `t` (a row's labels are joined by `;`)."""
    out = []
    for s, m in zip(t.column("sample").to_numpy(), t.column("marker").to_pylist()):
        if m is not None:
            out.extend((int(s), label) for label in m.split(";"))
    return out


def channels_equal(t, columns, want, tol=1e-6):
    """Asserts each column of `t` named in `columns` equals the matching row of `want` (channels x
    samples) within `tol` of that row's largest magnitude (ours being float32); returns the worst
    relative error."""
    import numpy as np

    worst = 0.0
    for c, w in zip(columns, want):
        ours = t.column(c).to_numpy().astype(np.float64)
        w = np.asarray(w, dtype=np.float64)
        err = np.abs(ours - w).max() / max(np.abs(w).max(), 1e-12)
        worst = max(worst, err)
        assert err <= tol, f"{c}: max error {err:.2e} of its largest magnitude"
    return worst
