"""A MultiKernel's decisions on disk: its JSON form, ``save``/``load`` and the tuning cache."""

from __future__ import annotations

import json
import logging
import warnings
from pathlib import Path
from typing import Any, Mapping

import torch

from ..decide.cache import cache_dir, cache_key, cache_path
from ..decide.candidates import source_hash
from ..decide.environment import Environment
from ..decide.table import atomic_write_text
from ..errors import TableError
from .variants import FORMAT, VERSION, _key_from_json, _key_to_json

log = logging.getLogger("rangedispatch")


def _read(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise TableError(f"cannot read multi-kernel decisions from {path}: {exc}") from exc
    if not isinstance(data, dict):
        raise TableError(f"{path} does not hold a multi-kernel table")
    return data


class PersistMixin:
    """Decisions saved and loaded (a part of :class:`~rangedispatch.multikernel.MultiKernel`)."""

    def _fingerprints(self) -> dict[str, str]:
        return {v.name: f"{source_hash(v.fn)}:{v.hint and list(v.hint)}:{sorted(v.meta.items())}" for v in self.variants}

    def to_json(self, environment: Environment | None = None) -> dict[str, Any]:
        return {
            "format": FORMAT,
            "version": VERSION,
            "name": self.name,
            "policy": self.policy,
            "environment": (environment or self._environment()).to_json(),
            "variants": self._fingerprints(),
            "decisions": [{"key": _key_to_json(k), "variant": v.name} for k, v in self._choice.items()],
        }

    def save(self, path: str | Path) -> Path:
        """Write the per-shape decisions atomically."""
        target = Path(path)
        atomic_write_text(target, json.dumps(self.to_json(), indent=2) + "\n")
        return target

    def load(self, path: str | Path, *, allow_other_environment: bool = False) -> int:
        """Read decisions saved by :meth:`save`; returns how many were taken. Raises
        :class:`TableError` if the file is not ours, its variants differ, or (unless allowed)
        it was made in another environment or under the other policy."""
        data = _read(Path(path))
        problem = self._mismatch(data, allow_other_environment)
        if problem:
            raise TableError(f"{self.name}: cannot use {path}: {problem}")
        return self._take(data)

    def _mismatch(self, data: Mapping[str, Any], allow_other_environment: bool) -> str | None:
        if data.get("format") != FORMAT or data.get("version") != VERSION:
            return f"not a multi-kernel table of version {VERSION}"
        if data.get("variants") != self._fingerprints():
            return "its variants (names, sources or hints) differ from this object's"
        if data.get("policy") != self.policy:
            return f"its decisions were made by policy {data.get('policy')!r}, this object uses {self.policy!r}"
        if not allow_other_environment:
            diff = Environment.from_json(data["environment"]).differences(self._environment())
            if diff:
                return "made in another environment (" + "; ".join(diff) + ")"
        return None

    def _take(self, data: Mapping[str, Any]) -> int:
        self._fold_fast()  # a loaded decision may replace one the hot path knows
        taken = 0
        for item in data.get("decisions", []):
            variant = self._by_name.get(item.get("variant")) if isinstance(item, dict) else None
            try:
                key = _key_from_json(item["key"]) if variant is not None else None
            except (KeyError, TypeError, ValueError, AttributeError):  # a damaged entry is skipped
                key = None
            if key is not None:
                self._choice[key] = variant
                taken += 1
        return taken

    def _environment(self) -> Environment:
        return Environment.current("cuda" if torch.cuda.is_available() else "cpu")

    def _cache_file(self) -> Path | None:
        if not self.use_cache or cache_dir() is None:
            return None
        key = cache_key({"kind": FORMAT, "name": self.name, "variants": self._fingerprints(),
                         "policy": self.policy, "environment": self._environment().to_json()})
        return cache_path(f"multikernel-{self.name}", key)

    def _load_cache(self) -> None:
        path = self._cache_file()
        if path is None or not path.exists():
            return
        try:
            data = _read(path)
            problem = self._mismatch(data, allow_other_environment=False)
        except TableError as exc:
            problem = str(exc)
        if problem:
            warnings.warn(f"{self.name}: ignoring the cached decisions in {path}: {problem}", RuntimeWarning,
                          stacklevel=4)
            return
        self._take(data)

    def _store_cache(self) -> None:
        path = self._cache_file()
        if path is not None:
            try:
                self.save(path)
            except OSError as exc:  # a read-only cache never breaks the call
                log.warning("%s: could not write the multi-kernel cache %s: %s", self.name, path, exc)
