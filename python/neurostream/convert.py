"""Outputs (``pyarrow.Table`` in the engine's Parquet layouts) as numpy, scipy.sparse and polars.

``collect()`` returns Arrow tables, which pandas (``table.to_pandas()``), polars
(``polars.from_arrow(table)``) and DuckDB read without copying; these helpers give the value
matrices the layouts hold.
"""
from __future__ import annotations

from typing import Any, Tuple

import numpy as np

__all__ = ["layout", "to_numpy", "to_scipy_sparse", "to_polars"]

_INDEX = ("time", "sample", "marker", "seq_id", "pos", "token")


def layout(table: Any) -> str:
    """The table's layout: ``signals``, ``activations``, ``features``, ``token_scalars`` or
    ``tables`` (from its ``neurostream.layout`` metadata)."""
    meta = table.schema.metadata or {}
    value = meta.get(b"neurostream.layout")
    if value is None:
        raise ValueError("not a neurostream output: the schema has no neurostream.layout metadata")
    return value.decode()


def to_numpy(table: Any) -> np.ndarray:
    """The values as a float32 ``(n_rows, width)`` matrix: channels of signals and token
    scalars, ``act`` of activations (without copying it when the table is one chunk)."""
    kind = layout(table)
    if kind == "activations":
        act = table["act"].combine_chunks()
        width = act.type.list_size
        flat = act.values.to_numpy(zero_copy_only=act.offset == 0 and act.null_count == 0)
        return flat[act.offset * width : (act.offset + len(act)) * width].reshape(-1, width)
    if kind in ("signals", "token_scalars"):
        cols = [f.name for f in table.schema if f.name not in _INDEX]
        return np.stack([table[c].to_numpy() for c in cols], axis=1).astype(np.float32, copy=False)
    raise ValueError(f"to_numpy: a {kind} table has no dense value matrix (features: to_scipy_sparse)")


def to_scipy_sparse(table: Any) -> Any:
    """Features (the ``features`` layout) as a ``scipy.sparse.csr_matrix`` of shape
    ``(n_rows, n_features)``; rows follow the table's rows (``seq_id``, ``pos``)."""
    import pyarrow as pa
    from scipy import sparse

    if layout(table) != "features":
        raise ValueError("to_scipy_sparse: expected a features table")
    n_features = int(table.schema.metadata[b"neurostream.n_features"])
    lists = table["features"].combine_chunks()
    if isinstance(lists, pa.ChunkedArray):  # pragma: no cover - older pyarrow
        lists = lists.chunk(0)
    offsets = lists.offsets.to_numpy()
    items = lists.values
    ids = items.field("id").to_numpy()
    acts = items.field("act").to_numpy()
    start = offsets[0]
    return sparse.csr_matrix(
        (acts[start : offsets[-1]], ids[start : offsets[-1]], offsets - start), shape=(len(lists), n_features)
    )


def to_polars(table: Any) -> Any:
    """The table as a polars DataFrame (zero copy where Arrow allows)."""
    import polars as pl

    return pl.from_arrow(table)


def index(table: Any) -> Tuple[np.ndarray, ...]:
    """The row index: ``(sample,)`` for signals, ``(seq_id, pos)`` for token layouts."""
    if "sample" in table.column_names:
        return (table["sample"].to_numpy(),)
    return (table["seq_id"].to_numpy(), table["pos"].to_numpy())
