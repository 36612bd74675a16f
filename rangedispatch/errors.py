"""Exceptions raised by rangedispatch.

Every error derives from :class:`RangeDispatchError` and also from the builtin class a
caller would expect (``ValueError`` for a bad value, ``TypeError`` for a bad type), so
``except ValueError`` keeps working for code written against upstream PyTorch.
"""

from __future__ import annotations


class RangeDispatchError(Exception):
    """Root of every error raised by rangedispatch."""


class ConfigError(RangeDispatchError, ValueError):
    """A registration argument has a bad value (ranges, names, dims, params)."""


class ConfigTypeError(RangeDispatchError, TypeError):
    """A registration argument has the wrong type (e.g. a candidate that is not callable)."""


class TableError(RangeDispatchError, ValueError):
    """A tuning table file cannot be used: truncated, foreign format, or not matching the op."""


class TuningError(RangeDispatchError, RuntimeError):
    """Tuning cannot proceed at all (e.g. the reference itself fails on every tuning input)."""


def first_line(exc: BaseException) -> str:
    """The first line of an exception's message ("" when it has none)."""
    text = str(exc)
    return text.splitlines()[0] if text else ""


def describe(name: str, value: object) -> str:
    """Render ``name=value!r`` for error messages, trimmed to a readable length."""
    text = repr(value)
    if len(text) > 120:
        text = text[:117] + "..."
    return f"{name}={text}"
