"""Pipelines built, checked and run from Python.

A pipeline is the same thing as a pipeline file: sources, operators and sinks with the keys
the README documents (``neurostream.kinds()`` lists them). Build it from a file, from a dict
or step by step, then ``validate()``, ``run()``, ``collect()`` or ``start()`` it. The engine
runs in native threads with the GIL released; Ctrl-C stops a run cleanly.
"""
from __future__ import annotations

import copy
import itertools
import os
import re
import sys
import threading
import time
from typing import Any, Callable, Dict, Iterator, List, NamedTuple, Optional, Sequence, Tuple, Union

import numpy as np

# The engine picks its Vulkan adapter itself; Mesa's device-select layer only prints
# "XDG_RUNTIME_DIR is invalid" on headless machines while probing (as the CLI does).
os.environ.setdefault("NODEVICE_SELECT", "1")

from . import _native  # noqa: E402
from .errors import ValidationError
from .report import NodeReport, Report

__all__ = ["Pipeline", "Node", "PushSource", "RunHandle", "Stream", "KindInfo", "kinds"]

#: A node or its name.
NodeRef = Union["Node", str]
#: ``progress``: a callable ``(rows_read, total_rows_or_None)``, True for a tqdm bar (or a
#: line on stderr every few seconds without tqdm), or None.
Progress = Union[None, bool, Callable[[int, Optional[int]], None]]

_SECTIONS = ("sources", "operators", "sinks")
_ids = itertools.count()


class KindInfo(NamedTuple):
    """A source, operator or sink kind: its section, name, summary and key reference."""

    section: str
    kind: str
    summary: str
    reference: str


def kinds() -> List[KindInfo]:
    """Every source, operator and sink kind of this build, with its keys (``.reference``)."""
    return [KindInfo(*k) for k in _native.kinds()]


class Node:
    """A node of a pipeline; chain from it with :meth:`then` and :meth:`to`."""

    def __init__(self, pipeline: "Pipeline", section: str, name: str) -> None:
        self.pipeline = pipeline
        #: ``sources``, ``operators`` or ``sinks``.
        self.section = section
        #: The node's name (its key in the pipeline file).
        self.name = name

    def then(self, kind: str, name: Optional[str] = None, **config: Any) -> "Node":
        """Adds an operator of ``kind`` reading this node (keys as in a pipeline file)."""
        return self.pipeline.operator(kind, self, name=name, **config)

    def to(self, kind: str, name: Optional[str] = None, **config: Any) -> "Node":
        """Adds a sink of ``kind`` reading this node."""
        return self.pipeline.sink(kind, self, name=name, **config)

    def collect(self, table: Optional[str] = None, **run_options: Any) -> Any:
        """Runs the pipeline and returns this node's output as a ``pyarrow.Table``."""
        return self.pipeline.collect(self, table=table, **run_options)

    def __repr__(self) -> str:
        return f"<neurostream {self.section}.{self.name}>"


class PushSource(Node):
    """A ``push`` source: rows pushed from Python (any thread) into a bounded queue.

    Arrays are not copied: the engine reads a pushed float32 C-contiguous array in place, one
    frame at a time, so do not write into it until the run has read it. ``close()`` ends the
    stream. A push source feeds one run.
    """

    def __init__(self, pipeline: "Pipeline", name: str, queue: str, width: int, signal: bool, capacity: int) -> None:
        super().__init__(pipeline, "sources", name)
        self._producer = _native.PushProducer(queue, capacity, width, signal)
        #: Row width (channels or d_model).
        self.width = width
        #: True for signals, False for activations.
        self.is_signal = signal

    def push(
        self,
        data: Any,
        *,
        markers: Optional[Sequence[Tuple[int, str, float]]] = None,
        seq_id: Any = None,
        pos: Any = None,
        tokens: Optional[Sequence[str]] = None,
        timeout: Optional[float] = None,
        copy: bool = False,
    ) -> None:
        """Queues ``data``: ``(n_samples, n_channels)`` for signals, ``(n_tokens, d_model)``
        for activations (with ``seq_id`` and ``pos`` per row, ``tokens`` optional). Markers
        are ``(row, label, duration_s)``. Waits while the queue is full (up to ``timeout``
        seconds; Ctrl-C interrupts the wait). Non-float32 or non-contiguous arrays raise,
        unless ``copy=True`` converts them (a copy)."""
        data = _as_rows(data, self.width, "data", copy)
        if seq_id is not None:
            seq_id = np.ascontiguousarray(np.asarray(seq_id).reshape(-1), dtype=np.uint64)
        if pos is not None:
            pos = np.ascontiguousarray(np.asarray(pos).reshape(-1), dtype=np.uint32)
        marks = [(int(r), str(label), float(d)) for r, label, d in (markers or ())]
        self._producer.push(
            data, markers=marks, seq_id=seq_id, pos=pos, tokens=None if tokens is None else list(tokens), timeout=timeout
        )

    def close(self) -> None:
        """Ends the stream: the source ends once it has read what is queued."""
        self._producer.close()

    @property
    def closed(self) -> bool:
        """True once closed."""
        return bool(self._producer.closed)

    @property
    def pending(self) -> int:
        """Chunks queued and not yet read."""
        return int(self._producer.pending)


def _as_rows(data: Any, width: int, argument: str, copy: bool) -> np.ndarray:
    """``data`` as a float32 C-contiguous ``(rows, width)`` array, without copying it unless
    ``copy`` allows it."""
    if not isinstance(data, np.ndarray):
        if not copy and not hasattr(data, "__array__"):
            raise TypeError(f"{argument}: expected a numpy array of shape (n_rows, {width}), got {type(data).__name__}")
        data = np.asarray(data)
    if data.ndim == 1 and width == 1:
        data = data.reshape(-1, 1)
    if data.ndim != 2 or data.shape[1] != width:
        raise ValueError(f"{argument}: expected shape (n_rows, {width}), got {data.shape}")
    if data.dtype != np.float32 or not data.flags.c_contiguous:
        if not copy:
            what = f"dtype {data.dtype}" if data.dtype != np.float32 else "a non-C-contiguous array"
            raise TypeError(
                f"{argument}: expected float32 C-contiguous values (read without copying), got {what}; "
                "pass copy=True to convert (one copy), or numpy.ascontiguousarray(data, dtype=numpy.float32)"
            )
        data = np.ascontiguousarray(data, dtype=np.float32)
    return data


class Pipeline:
    """A pipeline: sources → operators → sinks, with the keys of a pipeline file.

    >>> p = Pipeline()
    >>> eeg = p.source("synthetic_eeg", channels=8, sample_rate=250.0, duration_s=4.0)
    >>> bp = eeg.then("butterworth", btype="bandpass", order=4, cutoff=[8, 30])
    >>> table = p.collect(bp)
    """

    def __init__(self, name: Optional[str] = None, *, base_dir: Optional[str] = None, **settings: Any) -> None:
        """An empty pipeline. ``settings`` are ``[pipeline]`` keys (``workers``, ``device``,
        ``on_invalid``...); relative paths resolve against ``base_dir`` (default: the current
        directory when the pipeline runs)."""
        self._text = ""
        self._origin: Optional[str] = None
        self._base_dir = base_dir
        self._spec: Dict[str, Dict[str, Any]] = {"pipeline": {}, "sources": {}, "operators": {}, "sinks": {}}
        if name is not None:
            settings["name"] = name
        self._spec["pipeline"].update(settings)
        self._names: Dict[str, str] = {}

    # -- construction ------------------------------------------------------------------------

    @classmethod
    def from_toml(cls, path: Union[str, "os.PathLike[str]"]) -> "Pipeline":
        """Reads a pipeline file; relative paths in it resolve against its directory, and
        problems are reported as ``FILE:LINE: ...``."""
        path = os.fspath(path)
        try:
            with open(path, encoding="utf-8") as f:
                text = f.read()
        except OSError as e:
            raise FileNotFoundError(f"reading pipeline file {path}: {e.strerror}") from e
        p = cls(base_dir=os.path.dirname(os.path.abspath(path)))
        p._text = text
        p._origin = path
        p._names = _names_in_toml(text)
        return p

    @classmethod
    def from_dict(cls, spec: Dict[str, Any], *, base_dir: Optional[str] = None) -> "Pipeline":
        """A pipeline from nested dicts with the keys of a pipeline file::

            Pipeline.from_dict({"sources": {"eeg": {"kind": "edf", "path": "rec.edf"}},
                                "sinks": {"out": {"kind": "parquet", "input": "eeg", "path": "out.parquet"}}})
        """
        if not isinstance(spec, dict):
            raise TypeError(f"from_dict: expected a dict, got {type(spec).__name__}")
        p = cls(base_dir=base_dir)
        for key, value in spec.items():
            if key not in p._spec:
                # Kept, so validate() reports it with the same message as for a file.
                p._spec[key] = value
                continue
            if not isinstance(value, dict):
                raise TypeError(f"from_dict: `{key}` must be a dict")
            p._spec[key].update(copy.deepcopy(value))
        for section in _SECTIONS:
            for name in p._spec.get(section, {}):
                p._names[name] = section
        return p

    def _add(self, section: str, kind: str, name: Optional[str], config: Dict[str, Any]) -> str:
        if name is None:
            base = kind
            name = base
            for i in itertools.count(2):
                if name not in self._names:
                    break
                name = f"{base}_{i}"
        elif name in self._names:
            raise ValueError(f"a node called {name!r} already exists ({self._names[name]}.{name})")
        entry = {"kind": kind}
        entry.update(config)
        self._spec[section][name] = entry
        self._names[name] = section
        return name

    def source(self, kind: str, name: Optional[str] = None, **config: Any) -> Node:
        """Adds a source of ``kind`` (``edf``, ``parquet``, ``lsl``, ``synthetic_eeg``...)."""
        return Node(self, "sources", self._add("sources", kind, name, config))

    def operator(self, kind: str, input: NodeRef, name: Optional[str] = None, **config: Any) -> Node:
        """Adds an operator of ``kind`` reading ``input``."""
        config["input"] = self._name_of(input)
        return Node(self, "operators", self._add("operators", kind, name, config))

    def sink(self, kind: str, input: NodeRef, name: Optional[str] = None, **config: Any) -> Node:
        """Adds a sink of ``kind`` reading ``input``."""
        config["input"] = self._name_of(input)
        return Node(self, "sinks", self._add("sinks", kind, name, config))

    def node(self, name: str) -> Node:
        """The node called ``name`` (from a file, a dict or the builder)."""
        if name not in self._names:
            raise KeyError(f"no node {name!r}; nodes: {', '.join(self._names) or 'none'}")
        return Node(self, self._names[name], name)

    def push_source(
        self,
        name: Optional[str] = None,
        *,
        channels: Optional[Sequence[str]] = None,
        sfreq: Optional[float] = None,
        unit: Union[str, Sequence[str]] = "uV",
        ch_types: Optional[Sequence[str]] = None,
        d_model: Optional[int] = None,
        model: Optional[str] = None,
        layer: Optional[str] = None,
        queue: int = 64,
        batch_rows: int = 4096,
        **common: Any,
    ) -> PushSource:
        """Adds a source fed from Python with :meth:`PushSource.push`: signals
        (``channels`` names and ``sfreq`` in Hz, values in ``unit`` (one for all, or a list with
        one per channel), optional ``ch_types``
        such as ``eeg`` or ``mag``, one per channel) or activations
        (``d_model``). ``queue`` chunks wait before ``push`` blocks; ``common`` takes the keys
        every source has (``on_invalid``, ``overload``)."""
        if (d_model is None) == (channels is None):
            raise ValueError("push_source: give channels= and sfreq= (signals) or d_model= (activations)")
        signal = channels is not None
        cfg: Dict[str, Any] = {"queue": int(queue), "batch_rows": int(batch_rows)}
        if signal:
            if sfreq is None:
                raise ValueError("push_source: signals need sfreq= (Hz)")
            cfg.update(layout="signal", channels=[str(c) for c in channels], sample_rate=float(sfreq))
            if isinstance(unit, str):
                cfg["unit"] = unit
            else:
                cfg["units"] = [str(u) for u in unit]
            if ch_types is not None:
                cfg["channel_types"] = [str(t) for t in ch_types]
            width = len(cfg["channels"])
        else:
            cfg.update(layout="activations", d_model=int(d_model), model=model, layer=layer)
            width = int(d_model)
        cfg.update(common)
        node_name = self._add("sources", "push", name, cfg)
        queue_name = f"{node_name}#{os.getpid()}-{next(_ids)}"
        self._spec["sources"][node_name]["name"] = queue_name
        return PushSource(self, node_name, queue_name, width, signal, max(1, int(queue)))

    def from_numpy(
        self,
        data: Any,
        *,
        sfreq: Optional[float] = None,
        ch_names: Optional[Sequence[str]] = None,
        unit: Union[str, Sequence[str]] = "uV",
        ch_types: Optional[Sequence[str]] = None,
        markers: Optional[Sequence[Tuple[int, str, float]]] = None,
        seq_id: Any = None,
        pos: Any = None,
        tokens: Optional[Sequence[str]] = None,
        name: Optional[str] = None,
        copy: bool = False,
        **common: Any,
    ) -> PushSource:
        """Adds a source holding ``data`` (read in place, not copied):

        - signals ``(n_samples, n_channels)`` with ``sfreq`` (Hz), ``ch_names`` (default
          ``ch0..``), ``unit``, ``ch_types`` (``eeg``, ``mag``, ...) and ``markers``
          ``(sample, label, duration_s)``;
        - activations ``(n_tokens, d_model)`` with ``seq_id`` and ``pos`` per row (default: one
          sequence 0, positions 0..n-1) and optional ``tokens``.
        """
        arr = np.asarray(data) if not isinstance(data, np.ndarray) else data
        if arr.ndim != 2:
            raise ValueError(f"data: expected a 2-D array (rows, columns), got shape {arr.shape}")
        n, width = arr.shape
        if sfreq is not None:
            names = list(ch_names) if ch_names is not None else [f"ch{i}" for i in range(width)]
            if len(names) != width:
                raise ValueError(f"ch_names: {len(names)} names for {width} columns")
            src = self.push_source(name, channels=names, sfreq=sfreq, unit=unit, ch_types=ch_types, queue=1, **common)
            src.push(arr, markers=markers, copy=copy)
        else:
            if markers:
                raise ValueError("markers apply to signals (give sfreq=)")
            src = self.push_source(name, d_model=width, queue=1, **common)
            if seq_id is None and pos is None:
                seq_id, pos = np.zeros(n, dtype=np.uint64), np.arange(n, dtype=np.uint32)
            elif seq_id is None or pos is None:
                raise ValueError("activations: give both seq_id and pos (or neither)")
            src.push(arr, seq_id=seq_id, pos=pos, tokens=tokens, copy=copy)
        src.close()
        return src

    def from_arrow(self, data: Any, *, name: Optional[str] = None, sfreq: Optional[float] = None, queue: int = 8, **common: Any) -> PushSource:
        """Adds a source reading ``data``, any object with ``__arrow_c_stream__`` (pyarrow
        Table or RecordBatchReader, polars DataFrame, DuckDB relation), through the Arrow C
        stream interface: activations (``seq_id``, ``pos``, ``act`` as a fixed-size list of
        float32, optional ``token``; read in place) or signals (``sample`` and one float
        column per channel, ``sfreq`` when the schema has no ``neurostream.sample_rate``)."""
        reader = _native.ArrowInput(data, None if sfreq is None else float(sfreq))
        if reader.layout == "signal":
            src = self.push_source(name, channels=reader.channels, sfreq=reader.sample_rate, unit=reader.unit or "uV", queue=queue, **common)
        else:
            if reader.width == 0:
                raise ValueError("from_arrow: `act` is a variable-length list; cast it to a fixed-size list of float32")
            model, layer = reader.model_layer
            src = self.push_source(name, d_model=reader.width, model=model, layer=layer, queue=queue, **common)
        reader.pump(src._producer)  # a reader thread pushes every batch, then closes its end
        src.close()
        return src

    def from_mne(self, inst: Any, name: Optional[str] = None, picks: Any = None, **common: Any) -> PushSource:
        """Adds a source holding an MNE ``Raw`` or ``Epochs`` (data converted to µV, fT or
        fT/cm; channel names; sampling rate; annotations or epoch events as markers). See
        :func:`neurostream.mne.from_mne`."""
        from .mne import from_mne

        return from_mne(self, inst, name=name, picks=picks, **common)

    def _name_of(self, node: NodeRef) -> str:
        name = node.name if isinstance(node, Node) else str(node)
        if isinstance(node, Node) and node.pipeline is not self:
            raise ValueError(f"node {name!r} belongs to another pipeline")
        return name

    # -- checking -----------------------------------------------------------------------------

    def to_toml(self) -> str:
        """The pipeline as pipeline-file text."""
        return self._toml({})

    def _toml(self, extra_sinks: Dict[str, Dict[str, Any]]) -> str:
        spec = {k: v for k, v in self._spec.items() if v or k not in ("pipeline", *_SECTIONS)}
        if extra_sinks:
            spec = dict(spec)
            spec["sinks"] = {**spec.get("sinks", {}), **extra_sinks}
        added = _native.toml_from_dict(spec) if spec else ""
        return self._text + ("\n" if self._text and added else "") + added

    def _base(self) -> str:
        return self._base_dir if self._base_dir is not None else os.getcwd()

    def _problems(self, e: ValidationError) -> ValidationError:
        if self._origin is not None:
            return e
        # Line numbers of generated text mean nothing to the caller; the node label stays.
        problems = [re.sub(r"^line \d+(:\d+)?: ", "", p) for p in e.problems]
        message = "invalid pipeline:\n" + "\n".join(f"  - {p}" for p in problems)
        return ValidationError(message, problems)

    def validate(self) -> List[str]:
        """Checks the whole pipeline; raises :class:`ValidationError` listing every problem
        (the CLI's messages), else returns one description line per node."""
        try:
            return list(_native.validate(self._toml({}), self._base(), self._origin))
        except ValidationError as e:
            raise self._problems(e) from None

    # -- running ------------------------------------------------------------------------------

    def start(
        self,
        *,
        workers: int = 0,
        device: Optional[str] = None,
        checkpoint_dir: Optional[Union[str, "os.PathLike[str]"]] = None,
        checkpoint_every: float = 1.0,
        resume: bool = False,
        collect: Sequence[Union[NodeRef, Tuple[NodeRef, str]]] = (),
        stream: Sequence[NodeRef] = (),
        stream_capacity: int = 64,
        slow: str = "drop_oldest",
        ui: Optional[str] = None,
        ui_token: Optional[str] = None,
    ) -> "RunHandle":
        """Starts the run in the background and returns its :class:`RunHandle`.

        ``collect`` lists nodes whose whole output to keep (``(node, table)`` for nodes that
        write several tables); ``stream`` lists nodes to iterate live with
        ``handle.stream(node)``, each with a buffer of ``stream_capacity`` batches and the
        ``slow`` policy when it is full (``drop_oldest``, ``disconnect``, or ``block``, which
        makes the pipeline wait for the reader).

        ``ui`` serves the live view (pipeline graph and counters, signal traces, feature
        densities, alerts) on that address while the handle lives, e.g. ``"127.0.0.1:8765"``
        (port 0 picks a free one; ``handle.ui_url`` says where). Any address but loopback needs
        ``ui_token``."""
        extra: Dict[str, Dict[str, Any]] = {}
        reads: List[Tuple[str, str, Optional[str], str, int, str]] = []
        keys: Dict[Tuple[str, str, Optional[str]], str] = {}
        run_id = next(_ids)
        for mode, items in (("collect", collect), ("stream", stream)):
            for i, item in enumerate(items):
                node, table = (item if isinstance(item, tuple) else (item, None))
                name = self._name_of(node)
                if name not in self._names:
                    raise KeyError(f"no node {name!r} to {mode}; nodes: {', '.join(self._names)}")
                hub = f"__python_{mode}_{i}#{os.getpid()}-{run_id}"
                extra[f"__python_{mode}_{i}"] = {"kind": "channel", "input": name, "name": hub}
                reads.append((hub, name, table, mode, int(stream_capacity), slow))
                keys[(mode, name, table)] = hub
        try:
            run = _native.Run.start(
                self._toml(extra),
                self._base(),
                self._origin,
                int(workers),
                device,
                None if checkpoint_dir is None else os.fspath(checkpoint_dir),
                float(checkpoint_every),
                bool(resume),
                reads,
                ui,
                ui_token,
            )
        except ValidationError as e:
            raise self._problems(e) from None
        return RunHandle(run, keys)

    def run(self, *, progress: Progress = None, collect: Sequence[Union[NodeRef, Tuple[NodeRef, str]]] = (), **options: Any) -> Report:
        """Runs the pipeline to its end and returns the :class:`Report` (with the collected
        tables in ``report.tables``). Options as for :meth:`start` (``workers``, ``device``,
        ``checkpoint_dir``, ``checkpoint_every``, ``resume``). Ctrl-C stops the run cleanly
        (outputs complete, or with checkpoints resumable) and raises KeyboardInterrupt."""
        handle = self.start(collect=collect, **options)
        return handle.wait(progress=progress)

    def collect(self, node: NodeRef, table: Optional[str] = None, **options: Any) -> Any:
        """Runs the pipeline and returns ``node``'s whole output as a ``pyarrow.Table`` (for
        nodes that write several tables, name one with ``table``)."""
        report = self.run(collect=[(node, table)], **options)
        return next(iter(report.tables.values()))

    def __repr__(self) -> str:
        return f"<neurostream.Pipeline {len(self._names)} nodes{' from ' + self._origin if self._origin else ''}>"


class Stream:
    """Live batches of one node as ``pyarrow.RecordBatch`` objects, in order, until the run
    ends. ``dropped`` counts batches lost to the slow policy."""

    def __init__(self, run: Any, hub: str) -> None:
        self._run = run
        self._hub = hub
        #: Batches dropped because this reader fell behind (policy ``drop_oldest``).
        self.dropped = 0

    def __iter__(self) -> Iterator[Any]:
        return self

    def __next__(self) -> Any:
        status, batch, dropped = self._run.next_batch(self._hub)
        self.dropped = dropped
        if status == "end":
            raise StopIteration
        return batch

    def next(self, timeout: Optional[float] = None) -> Any:
        """The next batch, None when none came within ``timeout`` seconds; raises
        StopIteration at the end."""
        status, batch, dropped = self._run.next_batch(self._hub, timeout)
        self.dropped = dropped
        if status == "end":
            raise StopIteration
        return batch


class RunHandle:
    """A run going on in the background (:meth:`Pipeline.start`)."""

    def __init__(self, run: Any, keys: Dict[Tuple[str, str, Optional[str]], str]) -> None:
        self._run = run
        self._keys = keys
        self._report: Optional[Report] = None
        self._lock = threading.Lock()

    @property
    def ui_url(self) -> Optional[str]:
        """The live view's address (``http://HOST:PORT/``) when started with ``ui``, else None."""
        return self._run.ui_url

    @property
    def done(self) -> bool:
        """True once the run has ended."""
        return bool(self._run.wait(0.0))

    def stop(self) -> None:
        """Stops the run: sources end now; what they read is processed and written."""
        self._run.stop()

    def progress(self) -> Tuple[int, Optional[int]]:
        """Rows read by the sources so far, and the total when known."""
        return self._run.progress()

    def wait(self, timeout: Optional[float] = None, *, progress: Progress = None) -> Optional[Report]:
        """Waits for the end and returns the :class:`Report` (None if ``timeout`` seconds
        passed first); raises :class:`PipelineError` when the run failed. Ctrl-C while
        waiting stops the run cleanly, then raises KeyboardInterrupt; an exception raised by
        the ``progress`` callback stops it the same way and propagates."""
        show = _progress_display(progress, self._run)
        deadline = None if timeout is None else time.monotonic() + timeout
        try:
            while not self._run.wait(0.1):
                if show:
                    show(False)
                if deadline is not None and time.monotonic() >= deadline:
                    return None
        except BaseException:
            # Ctrl-C, or an exception from the progress callback: stop cleanly, then re-raise.
            self._run.stop()
            while True:
                try:
                    self._run.wait(None)
                    break
                except KeyboardInterrupt:
                    continue
            raise
        finally:
            if show:
                show(True)
        return self._final()

    def _final(self) -> Report:
        with self._lock:
            if self._report is None:
                report = Report._from_native(self._run.report())
                tables = {}
                for (mode, node, table), hub in self._keys.items():
                    if mode == "collect":
                        tables[node if table is None else f"{node}/{table}"] = self._run.collected(hub)
                object.__setattr__(report, "tables", tables)
                self._report = report
            return self._report

    def report(self) -> Report:
        """The report: final once the run has ended, else the counters so far."""
        if self._run.wait(0.0):
            return self._final()
        live = self._run.live()
        nodes = {
            name: NodeReport(name, n["rows_in"], n["rows_out"], n["bytes_in"], n["busy_s"]) for name, n in live.items()
        }
        dropped = {k: n["dropped_invalid"] for k, n in live.items() if n["dropped_invalid"]}
        return Report(elapsed_s=self._run.elapsed(), workers=(0, 0), nodes=nodes, dropped_invalid=dropped)

    def stream(self, node: NodeRef) -> Stream:
        """Iterates the live batches of ``node`` (it must be listed in ``start(stream=...)``)."""
        name = node.name if isinstance(node, Node) else str(node)
        hub = self._keys.get(("stream", name, None))
        if hub is None:
            raise KeyError(f"{name!r} is not streamed; start(stream=[{name!r}]) to iterate it")
        return Stream(self._run, hub)

    def collected(self, node: NodeRef, table: Optional[str] = None) -> Any:
        """The whole output of a collected node as a ``pyarrow.Table`` (waits for the end)."""
        name = node.name if isinstance(node, Node) else str(node)
        report = self.wait()
        assert report is not None
        key = name if table is None else f"{name}/{table}"
        if key not in report.tables:
            raise KeyError(f"{key!r} was not collected; start(collect=[...]) lists what is")
        return report.tables[key]

    def __enter__(self) -> "RunHandle":
        return self

    def __exit__(self, exc_type: Any, *rest: Any) -> None:
        # Leaving the block normally waits for the end; an exception stops the run first.
        if exc_type is not None:
            self.stop()
        while True:
            try:
                self._run.wait(None)
                return
            except KeyboardInterrupt:
                self.stop()


def _progress_display(progress: Progress, run: Any) -> Optional[Callable[[bool], None]]:
    """A function showing the run's progress (called about ten times a second, then once with
    ``True`` at the end), or None."""
    if progress is None or progress is False:
        return None
    if callable(progress):
        def call(final: bool) -> None:
            rows, total = run.progress()
            progress(rows, total)

        return call
    try:
        from tqdm.auto import tqdm  # notebooks get a widget, terminals a bar
    except ImportError:
        tqdm = None
    if tqdm is not None:
        bar = tqdm(total=run.progress()[1], unit="rows", unit_scale=True)

        def tick(final: bool) -> None:
            rows, total = run.progress()
            bar.update(rows - bar.n)
            if final:
                bar.close()

        return tick
    state = {"last": 0.0, "t": 0.0}

    def line(final: bool) -> None:
        state["t"] += 0.1
        if final or state["t"] - state["last"] >= 5.0:
            state["last"] = state["t"]
            rows, total = run.progress()
            of = f" of {total}" if total else ""
            print(f"neurostream: {rows}{of} rows read", file=sys.stderr, flush=True)

    return line


def _names_in_toml(text: str) -> Dict[str, str]:
    """Node names defined in pipeline-file text, with their sections."""
    try:
        import tomllib  # Python 3.11+
    except ImportError:  # pragma: no cover
        try:
            import tomli as tomllib  # type: ignore[no-redef]
        except ImportError:
            return {m.group(2): m.group(1) for m in re.finditer(r"^\s*\[(sources|operators|sinks)\.([^\]\s]+)\]", text, re.M)}
    try:
        data = tomllib.loads(text)
    except Exception:
        return {}
    return {name: section for section in _SECTIONS for name in data.get(section, {}) if isinstance(data.get(section), dict)}
