"""Candidate implementations: a callable plus bound keyword params, a stable name and a fingerprint."""

from __future__ import annotations

import functools
import inspect
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping

from .fingerprint import code_fingerprint, digest, fingerprint_parts


def _qualname(fn: Callable[..., Any]) -> str:
    fn = inspect.unwrap(fn) if not isinstance(fn, functools.partial) else fn.func
    module = getattr(fn, "__module__", None) or "?"
    return f"{module}.{getattr(fn, '__qualname__', type(fn).__name__)}"


def source_hash(fn: Callable[..., Any]) -> str:
    """Hash of the code ``fn`` really runs: its source and, transitively, the user functions,
    simple globals, closure values and environment variables it reads (see
    :func:`~rangedispatch.decide.fingerprint.code_fingerprint`)."""
    return code_fingerprint(fn)


def short_name(fn: Callable[..., Any]) -> str:
    if isinstance(fn, functools.partial):
        fn = fn.func
    return getattr(fn, "__name__", None) or type(fn).__name__


@dataclass(frozen=True, eq=False)
class Candidate:
    """One implementation to try: ``fn(*args, **params, **kwargs)``.

    Args:
        fn: the implementation, with the op's signature (plus ``params``).
        params: keyword arguments bound to every call (e.g. ``k_splits=16``).
        name: unique, human-readable name used in tables and logs.
        is_reference: the op's own function, the fallback and the correctness oracle.
    """

    fn: Callable[..., Any]
    params: tuple[tuple[str, Any], ...] = ()
    name: str = ""
    is_reference: bool = False
    call: Callable[..., Any] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        call = functools.partial(self.fn, **dict(self.params)) if self.params else self.fn
        object.__setattr__(self, "call", call)
        if not self.name:
            object.__setattr__(self, "name", default_name(self.fn, dict(self.params)))

    @property
    def key(self) -> tuple[int, tuple[tuple[str, str], ...]]:
        """Identity for de-duplication: the same function with the same params."""
        return (id(self.fn), tuple((k, repr(v)) for k, v in self.params))

    @functools.cached_property
    def code_parts(self) -> tuple[str, ...]:
        """What the fingerprint hashes: labelled hashes of the code and values it reads."""
        return tuple(fingerprint_parts(self.fn))

    @functools.cached_property
    def fingerprint(self) -> str:
        """Qualified name + code hash + params: changes whenever the candidate, or the code and
        values it reads, does."""
        params = ",".join(f"{k}={v!r}" for k, v in self.params)
        return f"{_qualname(self.fn)}:{digest(self.code_parts)}:{params}"


def default_name(fn: Callable[..., Any], params: Mapping[str, Any]) -> str:
    base = short_name(fn)
    if not params:
        return base
    return base + "(" + ", ".join(f"{k}={v!r}" for k, v in params.items()) + ")"


def uniquify(candidates: list[Candidate]) -> list[Candidate]:
    """Rename clashing candidates (two lambdas, say) to ``name#2``, ``name#3``."""
    seen: dict[str, int] = {}
    out = []
    for cand in candidates:
        count = seen.get(cand.name, 0) + 1
        seen[cand.name] = count
        if count > 1:
            cand = Candidate(cand.fn, cand.params, f"{cand.name}#{count}", cand.is_reference)
        out.append(cand)
    return out
