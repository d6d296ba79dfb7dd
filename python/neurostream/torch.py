"""PyTorch in process: a forward hook that pushes a module's output into an activations
``push`` source on every forward pass (no TCP, no copy beyond the device-to-host transfer).

    src = p.push_source(d_model=model.config.hidden_size, model="SmolLM2-135M", layer="layers.15")
    handle = p.start(...)
    hook = neurostream.torch.attach(src, model.model.layers[15], model=model, tokenizer=tok)
    model.generate(**inputs, max_new_tokens=32)     # prompt and every decoded token reach the pipeline
    hook.remove(); src.close()

Rows carry ``seq_id`` and ``pos``. Positions come from the module's ``position_ids`` or
``cache_position`` keyword (transformer blocks of Hugging Face models receive them), so under
``generate()`` with a KV cache each decode step continues its sequence (same ``seq_id``, the
next ``pos``) instead of starting a new one at 0. A forward pass whose positions start at 0
starts new sequences. Modules that get no positions: every call is a new batch of sequences,
unless it passes a non-empty KV cache (``past_key_value(s)``), which continues them.
With ``model`` and ``tokenizer`` given, each row also carries its token text.
PyTorch is not imported by this module; anything with ``register_forward_hook`` works.
"""
from __future__ import annotations

import itertools
import threading
from typing import Any, Iterable, Iterator, List, Optional

import numpy as np

__all__ = ["attach", "ActivationHook"]


def _numpy(t: Any) -> np.ndarray:
    if hasattr(t, "detach"):
        t = t.detach()
        if hasattr(t, "to"):
            t = t.to("cpu")
        if hasattr(t, "float"):
            t = t.float()
        t = t.numpy()
    return np.asarray(t)


def _positions(kwargs: dict, batch: int, seq: int) -> Optional[np.ndarray]:
    """Token positions ``[batch, seq]`` from the keywords a transformer block receives."""
    for key in ("position_ids", "cache_position"):
        value = kwargs.get(key)
        if value is not None:
            pos = _numpy(value).astype(np.int64)
            if pos.ndim == 1:
                pos = np.broadcast_to(pos[None, :], (batch, pos.shape[0]))
            if pos.shape == (batch, seq):
                return pos
    return None


def _has_cache(kwargs: dict) -> bool:
    for key in ("past_key_value", "past_key_values"):
        cache = kwargs.get(key)
        if cache is None:
            continue
        length = getattr(cache, "get_seq_length", None)
        try:
            return bool(length()) if callable(length) else len(cache) > 0
        except Exception:
            return True
    return False


class ActivationHook:
    """Pushes a module's outputs into a push source; ``remove()`` detaches it."""

    def __init__(self, source: Any, module: Any, model: Any = None, tokenizer: Any = None,
                 seq_ids: Optional[Iterable[int]] = None) -> None:
        if getattr(source, "is_signal", True):
            raise ValueError("attach: the source must be an activations push source (push_source(d_model=...))")
        self.source = source
        self.tokenizer = tokenizer
        self._ids: Iterator[int] = iter(seq_ids) if seq_ids is not None else itertools.count()
        self._lock = threading.Lock()
        #: seq_id and next position of each batch row of the sequences being generated.
        self._current: List[int] = []
        self._next_pos: List[int] = []
        self._input_ids: Optional[np.ndarray] = None
        self._handles = [module.register_forward_hook(self._hook, with_kwargs=True)]
        if model is not None and tokenizer is not None:
            self._handles.append(model.register_forward_pre_hook(self._pre_hook, with_kwargs=True))
        #: Rows pushed so far.
        self.rows = 0

    def _pre_hook(self, _module: Any, args: tuple, kwargs: dict) -> None:
        ids = kwargs.get("input_ids", args[0] if args else None)
        self._input_ids = None if ids is None else _numpy(ids)

    def _hook(self, _module: Any, _args: tuple, kwargs: dict, output: Any) -> None:
        out = output[0] if isinstance(output, (tuple, list)) else output
        acts = _numpy(out)
        if acts.ndim == 2:
            acts = acts[None]
        batch, seq, _ = acts.shape
        positions = _positions(kwargs, batch, seq)
        with self._lock:
            continuing = len(self._current) == batch and (
                (positions is not None and int(positions[0, 0]) > 0) or (positions is None and _has_cache(kwargs))
            )
            if not continuing:
                self._current = [next(self._ids) for _ in range(batch)]
                self._next_pos = [0] * batch
            for b in range(batch):
                pos = positions[b] if positions is not None else np.arange(self._next_pos[b], self._next_pos[b] + seq)
                self._next_pos[b] = int(pos[-1]) + 1
                tokens = None
                if self._input_ids is not None and self.tokenizer is not None and self._input_ids.shape[-1] == seq:
                    row = self._input_ids[b] if self._input_ids.ndim == 2 else self._input_ids
                    tokens = [str(t) for t in self.tokenizer.convert_ids_to_tokens(row.tolist())]
                self.source.push(
                    np.ascontiguousarray(acts[b], dtype=np.float32),
                    seq_id=np.full(seq, self._current[b], dtype=np.uint64),
                    pos=pos.astype(np.uint32),
                    tokens=tokens,
                )
                self.rows += seq

    def remove(self) -> None:
        """Stops pushing (the source stays open; close it to end the stream)."""
        for h in self._handles:
            h.remove()
        self._handles = []

    def __enter__(self) -> "ActivationHook":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.remove()


def attach(source: Any, module: Any, model: Any = None, tokenizer: Any = None,
           seq_ids: Optional[Iterable[int]] = None) -> ActivationHook:
    """Pushes ``module``'s output (the first element when it returns a tuple, as transformer
    blocks do) into ``source`` on every forward pass; ``[batch, seq, d]`` outputs become
    ``batch`` sequences with ids from ``seq_ids`` (default 0, 1, 2, ...). See the module doc
    for how ``generate()`` decode steps continue their sequences."""
    return ActivationHook(source, module, model=model, tokenizer=tokenizer, seq_ids=seq_ids)
