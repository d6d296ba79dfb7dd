"""Exceptions raised by neurostream (the engine's messages, unchanged)."""
from __future__ import annotations

from typing import List, Sequence

__all__ = ["NeurostreamError", "ValidationError", "PipelineError"]


class NeurostreamError(Exception):
    """Base class of the errors the engine reports."""


class ValidationError(NeurostreamError, ValueError):
    """The pipeline is invalid. ``problems`` lists every problem found, each with its location
    (``file:line`` for pipeline files, the node's ``[section.name]`` otherwise)."""

    def __init__(self, message: str, problems: Sequence[str] = ()) -> None:
        super().__init__(message)
        self.problems: List[str] = list(problems)


class PipelineError(NeurostreamError, RuntimeError):
    """The run failed (bad input, a disk that filled up, a device error...). The message names
    the file, stream, row or field involved; outputs already written stay complete."""

    def __init__(self, message: str, problems: Sequence[str] = ()) -> None:
        super().__init__(message)
        self.problems: List[str] = list(problems)
