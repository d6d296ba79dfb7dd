"""neurostream: a streaming dataflow engine for model activations and neural signals.

Build a pipeline, check it and run it in this process (the engine runs in native threads with
the GIL released)::

    import neurostream as ns
    p = ns.Pipeline.from_toml("examples/quickstart.toml")
    report = p.run()                      # Report: rows, MB, busy time, latency per node
    print(report)

    p = ns.Pipeline()
    eeg = p.source("edf", path="recording.edf")
    bp = eeg.then("butterworth", btype="bandpass", order=4, cutoff=[8, 30])
    table = p.collect(bp)                 # pyarrow.Table

Data in: ``p.from_numpy(...)``, ``p.push_source(...)``, ``p.from_mne(raw)``, ``p.from_arrow(obj)``,
``neurostream.torch.attach(source, module)``. Data out: ``collect()`` (pyarrow), live
``handle.stream(node)``, ``to_numpy``, ``to_scipy_sparse``, ``to_mne``.
``neurostream.client`` (pure Python) talks to pipelines running elsewhere over TCP.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .errors import NeurostreamError, PipelineError, ValidationError

__all__ = [
    "Pipeline",
    "Node",
    "PushSource",
    "Report",
    "RunHandle",
    "Stream",
    "NeurostreamError",
    "PipelineError",
    "ValidationError",
    "kinds",
    "to_mne",
    "to_numpy",
    "to_scipy_sparse",
    "__version__",
]

if TYPE_CHECKING:  # pragma: no cover
    from .pipeline import Node, Pipeline, PushSource, RunHandle, Stream, kinds
    from .convert import to_numpy, to_scipy_sparse
    from .mne import to_mne
    from .report import Report

_LAZY = {
    "Pipeline": ".pipeline",
    "Node": ".pipeline",
    "PushSource": ".pipeline",
    "RunHandle": ".pipeline",
    "Stream": ".pipeline",
    "kinds": ".pipeline",
    "Report": ".report",
    "to_mne": ".mne",
    "to_numpy": ".convert",
    "to_scipy_sparse": ".convert",
}


def __getattr__(name: str) -> Any:
    # The engine is imported on first use, so `neurostream.client` works without it.
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name], __name__), name)
    if name == "__version__":
        from ._native import version

        return version()
    raise AttributeError(f"module 'neurostream' has no attribute {name!r}")
