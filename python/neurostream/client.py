"""Send model activations to a running neurostream pipeline.

The pipeline reads them with an ``arrow_tcp`` source: each connection is one Arrow IPC stream
of record batches in neurostream's activation layout (``seq_id: uint64``, ``pos: uint32``,
optional ``token: utf8``, ``act: fixed_size_list<float32>[d_model]``), and becomes its own
stream in the pipeline (named after ``stream`` when given).

    from neurostream.client import Client
    with Client(port=7070, stream="server-a") as c:
        c.send(acts, seq_id=17)             # acts: [tokens, d_model] array, one sequence

Results come back live from an ``arrow_tcp`` sink:

    for batch in subscribe("alerts", port=7071):   # pyarrow.RecordBatch, as they are produced
        print(batch.to_pylist())

    # or stream a PyTorch module's output as the model runs:
    handle = stream_module_output(model.model.layers[15], client)

Depends on numpy and pyarrow only (PyTorch only for the hook helper, imported lazily).
"""
from __future__ import annotations

import socket
from typing import Iterable, Optional, Sequence

import numpy as np
import pyarrow as pa

__all__ = ["Client", "send", "stream_module_output", "activation_schema", "subscribe", "SubscribeError"]


MAX_STREAM_NAME_BYTES = 256


def check_stream_name(stream: str) -> None:
    """Raises ``ValueError`` for a stream name the ``arrow_tcp`` source refuses: empty, over 256
    bytes (UTF-8), holding a control character, or beginning with a digit (names of digits are
    the unnamed connections': ``live/3``, ``live/2.3`` after a resume)."""
    if not isinstance(stream, str):
        raise ValueError(f"stream name {stream!r}: a str is needed")
    problem = None
    if not stream:
        problem = "is empty"
    elif len(stream.encode()) > MAX_STREAM_NAME_BYTES:
        problem = f"is longer than {MAX_STREAM_NAME_BYTES} bytes"
    elif stream[0].isascii() and stream[0].isdigit():
        problem = "begins with a digit (names of digits are the unnamed connections')"
    elif any(ord(c) < 0x20 or 0x7F <= ord(c) < 0xA0 for c in stream):
        problem = "holds a control character"
    if problem:
        raise ValueError(f"stream name {stream[:40]!r} {problem}")


def activation_schema(d_model: int, stream: Optional[str] = None, with_tokens: bool = False,
                      token: Optional[str] = None) -> pa.Schema:
    """The Arrow schema of neurostream's activation layout for width ``d_model``.

    ``token`` is the source's shared secret (its ``token`` key), sent as schema metadata."""
    fields = [pa.field("seq_id", pa.uint64(), nullable=False), pa.field("pos", pa.uint32(), nullable=False)]
    if with_tokens:
        fields.append(pa.field("token", pa.string(), nullable=False))
    fields.append(pa.field("act", pa.list_(pa.field("item", pa.float32(), nullable=False), d_model), nullable=False))
    meta = {"neurostream.layout": "activations", "neurostream.d_model": str(d_model)}
    if stream is not None:
        check_stream_name(stream)
        meta["neurostream.stream"] = stream
    if token is not None:
        meta["neurostream.token"] = token
    return pa.schema(fields, metadata=meta)


class Client:
    """One connection to an ``arrow_tcp`` source: one stream of activations.

    ``compression`` is ``"lz4"`` (default), ``"zstd"`` or ``None`` (IPC buffer compression).
    ``d_model`` and whether tokens are sent are fixed by the first :meth:`send` unless given.
    The connection is opened on the first send; :meth:`close` (or leaving a ``with`` block)
    ends the stream cleanly. ``token`` is the source's shared secret, when it has one.
    """

    def __init__(self, host: str = "127.0.0.1", port: int = 7070, stream: Optional[str] = None,
                 compression: Optional[str] = "lz4", d_model: Optional[int] = None, with_tokens: Optional[bool] = None,
                 timeout: float = 30.0, token: Optional[str] = None):
        if stream is not None:
            check_stream_name(stream)
        self.host, self.port, self.stream, self.token = host, port, stream, token
        self.compression, self.d_model, self.with_tokens, self.timeout = compression, d_model, with_tokens, timeout
        self._sock = None
        self._file = None
        self._writer = None
        self.rows_sent = 0

    def _open(self, d_model: int, with_tokens: bool):
        self.d_model, self.with_tokens = d_model, with_tokens
        self._sock = socket.create_connection((self.host, self.port), timeout=self.timeout)
        self._file = self._sock.makefile("wb")
        options = pa.ipc.IpcWriteOptions(compression=self.compression)
        self._writer = pa.ipc.new_stream(self._file, activation_schema(d_model, self.stream, with_tokens, self.token), options=options)

    def send(self, array, seq_id: int | Sequence[int], pos: Optional[Sequence[int]] = None,
             tokens: Optional[Sequence[str]] = None) -> int:
        """Sends ``array`` (``[tokens, d_model]``, converted to float32) as one record batch.

        ``seq_id`` is one id for every row, or one per row; ``pos`` defaults to ``0..tokens``
        (one sequence). ``tokens`` are the token texts, when known. Returns the rows sent.
        """
        x = np.ascontiguousarray(np.asarray(array, dtype=np.float32))
        if x.ndim == 1:
            x = x[None, :]
        if x.ndim != 2:
            raise ValueError(f"expected a [tokens, d_model] array, got shape {x.shape}")
        n, d = x.shape
        if self._writer is None:
            self._open(d, tokens is not None if self.with_tokens is None else self.with_tokens)
        if d != self.d_model:
            raise ValueError(f"this stream sends d_model {self.d_model}, got an array of width {d}")
        if (tokens is not None) != self.with_tokens:
            raise ValueError("send tokens with every batch of a stream, or with none")
        seq = np.broadcast_to(np.asarray(seq_id, dtype=np.uint64), (n,))
        positions = np.arange(n, dtype=np.uint32) if pos is None else np.asarray(pos, dtype=np.uint32)
        if positions.shape != (n,):
            raise ValueError(f"pos has shape {positions.shape}, expected ({n},)")
        columns = [pa.array(seq, pa.uint64()), pa.array(positions, pa.uint32())]
        if self.with_tokens:
            if len(tokens) != n:
                raise ValueError(f"{len(tokens)} tokens for {n} rows")
            columns.append(pa.array(list(tokens), pa.string()))
        schema = activation_schema(d, self.stream, self.with_tokens, self.token)
        columns.append(pa.FixedSizeListArray.from_arrays(pa.array(x.ravel(), pa.float32()), type=schema.field("act").type))
        self._writer.write_batch(pa.record_batch(columns, schema=schema))
        self._file.flush()
        self.rows_sent += n
        return n

    def close(self):
        """Ends the stream (the engine sees a clean end) and closes the connection."""
        if self._writer is not None:
            self._writer.close()
            self._file.close()
            self._sock.close()
            self._writer = self._file = self._sock = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def send(array, seq_id, host: str = "127.0.0.1", port: int = 7070, stream: Optional[str] = None, **kwargs) -> int:
    """Opens a connection, sends one array (see :meth:`Client.send`) and closes it.

    Without ``stream`` each call is a stream of its own, which ends when the call returns: the
    pipeline emits its final statistics then. Name a ``stream`` to count many calls as one."""
    with Client(host, port, stream) as c:
        return c.send(array, seq_id, **kwargs)


def stream_module_output(module, client: Client, seq_ids: Optional[Iterable[int]] = None):
    """Registers a PyTorch forward hook that sends ``module``'s output (the first element when it
    returns a tuple, as transformer blocks do) to ``client``: a ``[batch, seq, d]`` output is sent
    as ``batch`` sequences with ids from ``seq_ids`` (default 0, 1, 2, ...). Returns the hook
    handle; call ``handle.remove()`` to stop.
    """
    import itertools

    ids = iter(seq_ids) if seq_ids is not None else itertools.count()

    def hook(_module, _inputs, output):
        out = output[0] if isinstance(output, (tuple, list)) else output
        acts = out.detach().to("cpu").float().numpy()
        if acts.ndim == 2:
            acts = acts[None]
        for seq in acts:
            client.send(seq, next(ids))

    return module.register_forward_hook(hook)


class SubscribeError(RuntimeError):
    """The sink refused the subscription (e.g. no such table); the message says why."""


def subscribe(what: str, host: str = "127.0.0.1", port: int = 7071, timeout: Optional[float] = None,
              lz4: bool = False, slow: str = "disconnect", token: Optional[str] = None):
    """Subscribes to an ``arrow_tcp`` sink and yields ``pyarrow.RecordBatch`` es as the pipeline
    produces them, until the run ends.

    ``what`` is a table of a result-table stream (``"alerts"``, ``"windows"``, ``"features"``,
    ...) or ``"frames"`` for a stream of frames. ``timeout`` (seconds) bounds each wait for data
    (``None``: wait as long as the run goes). ``lz4=True`` asks for LZ4-compressed IPC buffers.
    ``slow`` is what the server does when this subscriber falls ``queue_batches`` behind:
    ``"disconnect"`` (default) or ``"drop_oldest"`` (its oldest queued batches are dropped; each
    batch then carries a ``_dropped_batches`` column with the count so far). ``token`` is the
    server's shared secret, when it has one. Raises :class:`SubscribeError` when the sink
    refuses (the message says why, e.g. the tables it offers).
    """
    if slow not in ("disconnect", "drop_oldest"):
        raise ValueError(f"slow must be 'disconnect' or 'drop_oldest', not {slow!r}")
    request = [what, f"slow={slow}"]
    if lz4:
        request.append("lz4")
    if token is not None:
        request.append(f"token={token}")
    sock = socket.create_connection((host, port), timeout=30.0)
    try:
        sock.sendall((" ".join(request) + "\n").encode())
        f = sock.makefile("rb")
        status = f.readline().decode().strip()
        if status != "OK":
            raise SubscribeError(f"{host}:{port} refused `{what}`: {status.removeprefix('ERR ').strip() or 'connection closed'}")
        sock.settimeout(timeout)
        if not f.peek(1):
            return  # the run ended before any batch of `what`
        reader = pa.ipc.open_stream(f)
        for batch in reader:
            yield batch
    finally:
        sock.close()
