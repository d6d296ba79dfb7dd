"""Reading neurostream's signal Parquet layout in the reference checks."""


def markers(t):
    """(sample, label) of every marker of table `t` (a row's labels are joined by `;`)."""
    out = []
    for s, m in zip(t.column("sample").to_numpy(), t.column("marker").to_pylist()):
        if m is not None:
            out.extend((int(s), label) for label in m.split(";"))
    return out
