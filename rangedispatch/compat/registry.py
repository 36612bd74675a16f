"""The feature registry behind :mod:`rangedispatch.compat`: probes run once, kept answers,
forced absences for tests."""

from __future__ import annotations

import contextlib
import logging
import threading
from dataclasses import dataclass
from typing import Any, Callable, Iterator

log = logging.getLogger("rangedispatch")


@dataclass(frozen=True)
class Feature:
    """A private torch API: ``uses`` it, ``fallback`` runs without it; ``probe()`` exercises it
    and returns what the callers use (it raises, or returns ``None`` or ``False``, where it is
    missing or does not do what it should)."""

    name: str
    uses: str
    fallback: str
    probe: Callable[[], Any]


FEATURES: dict[str, Feature] = {}
_RESULTS: dict[str, tuple[bool, Any]] = {}
_FORCED: set[str] = set()
_LOCK = threading.RLock()


def feature(name: str, uses: str, fallback: str) -> Callable[[Callable[[], Any]], Callable[[], Any]]:
    def register(probe: Callable[[], Any]) -> Callable[[], Any]:
        FEATURES[name] = Feature(name, uses, fallback, probe)
        return probe

    return register


def have(name: str) -> bool:
    """Whether the feature works on this torch (its probe runs on the first ask)."""
    return _result(name)[0]


def get(name: str) -> Any:
    """What the feature's probe handed back, or ``None`` where it is absent."""
    ok, value = _result(name)
    return value if ok else None


def _result(name: str) -> tuple[bool, Any]:
    if name in _FORCED:
        return False, None
    found = _RESULTS.get(name)
    if found is not None:
        return found
    with _LOCK:
        found = _RESULTS.get(name)
        if found is None:
            found = _RESULTS[name] = _run_probe(FEATURES[name])
    return found


def _run_probe(f: Feature) -> tuple[bool, Any]:
    try:
        value = f.probe()
    except Exception as exc:  # noqa: BLE001 - any failure means: fall back
        log.debug("torch private API '%s' unusable (%s: %s); fallback: %s", f.name, type(exc).__name__, exc,
                  f.fallback)
        return False, None
    if value is None or value is False:
        log.debug("torch private API '%s' unusable (its self-test failed); fallback: %s", f.name, f.fallback)
        return False, None
    return True, value


_REFRESH: list[Callable[[], None]] = []


def on_change(refresh: Callable[[], None]) -> Callable[[], None]:
    """Register ``refresh``: it recomputes what a module keeps of a feature in its globals (read
    where a function call would cost a guard in compiled frames) when :func:`absent` changes
    what is there. It runs once now."""
    _REFRESH.append(refresh)
    refresh()
    return refresh


@contextlib.contextmanager
def absent(*names: str) -> Iterator[None]:
    """Treat ``names`` as missing from this torch while the block runs (tests of the fallbacks).
    Code generated or traced inside the block keeps its fallback afterwards."""
    unknown = [n for n in names if n not in FEATURES]
    if unknown:
        raise KeyError(f"absent(): no feature {unknown}; the features are {sorted(FEATURES)}")
    before = set(_FORCED)
    _FORCED.update(names)
    for refresh in _REFRESH:
        refresh()
    try:
        yield
    finally:
        _FORCED.clear()
        _FORCED.update(before)
        for refresh in _REFRESH:
            refresh()


def report() -> list[tuple[str, bool, str, str]]:
    """``(feature, works here, private API, fallback)`` for every feature."""
    return [(f.name, have(f.name), f.uses, f.fallback) for f in FEATURES.values()]
