"""Recorded dispatch sizes: a compact histogram of what real calls see.

``op.record_sizes()`` turns recording on: every eager call adds its dispatch size to
``op.profile`` (one dict update, cheap enough to leave on in a serving process). The profile
saves next to the op's table (``op.save_table(path)`` writes ``<path>.sizes.json`` too) and
drives tuning: samples and automatic split points go where the traffic is, and each sample
stands for an equal share of the calls. The plugin always checks the most frequent sizes.

A profile keeps exact sizes up to ``max_sizes`` distinct values; past that it folds sizes into
log-spaced buckets (8 per power of two), so memory stays bounded whatever the traffic.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any, Iterable, Mapping

from ..errors import TableError

FORMAT = "rangedispatch.sizes"
VERSION = 1


class SizeProfile:
    """Counts of dispatch sizes seen by an op.

    Example:
        >>> p = SizeProfile()
        >>> for s in [1, 1, 8, 64, 64, 64]:
        ...     p.add(s)
        >>> p.top(2)
        [64, 1]
        >>> p.quantiles(1)
        [8]
    """

    def __init__(self, counts: Mapping[int, int] | None = None, *, max_sizes: int = 4096) -> None:
        self.counts: dict[int, int] = {int(k): int(v) for k, v in (counts or {}).items()}
        self.max_sizes = max_sizes
        self.folded = False

    def add(self, size: int) -> None:
        """Count one call at ``size`` (the recording hot path)."""
        counts = self.counts
        counts[size] = counts.get(size, 0) + 1
        if len(counts) > self.max_sizes:
            self._fold()

    def update(self, sizes: Iterable[int]) -> SizeProfile:
        for s in sizes:
            self.add(int(s))
        return self

    def _fold(self) -> None:
        folded: dict[int, int] = {}
        for size, n in self.counts.items():
            key = _bucket(size)
            folded[key] = folded.get(key, 0) + n
        self.counts = folded
        self.folded = True

    def total(self, lo: int = 0, hi: int | None = None) -> int:
        return sum(n for s, n in self.counts.items() if s >= lo and (hi is None or s <= hi))

    def top(self, n: int, lo: int = 0, hi: int | None = None) -> list[int]:
        """The ``n`` most frequent sizes in ``[lo, hi]``, most frequent first."""
        inside = [(c, s) for s, c in self.counts.items() if s >= lo and (hi is None or s <= hi)]
        return [s for _, s in sorted(inside, key=lambda p: (-p[0], p[1]))[:n]]

    def quantiles(self, k: int, lo: int = 0, hi: int | None = None) -> list[int]:
        """``k`` sizes splitting the traffic in ``[lo, hi]`` into ``k + 1`` equal shares."""
        inside = sorted((s, c) for s, c in self.counts.items() if s >= lo and (hi is None or s <= hi))
        total = sum(c for _, c in inside)
        if not inside or k <= 0:
            return []
        out, seen, i = [], 0, 0
        for j in range(1, k + 1):
            target = total * j / (k + 1)
            while i < len(inside) - 1 and seen + inside[i][1] < target:
                seen += inside[i][1]
                i += 1
            out.append(inside[i][0])
        return sorted(set(out))

    def to_json(self) -> dict[str, Any]:
        return {"format": FORMAT, "version": VERSION, "folded": self.folded,
                "counts": {str(s): n for s, n in sorted(self.counts.items())}}

    @classmethod
    def from_json(cls, data: Any) -> SizeProfile:
        if not isinstance(data, Mapping) or data.get("format") != FORMAT or data.get("version") != VERSION:
            raise TableError(f"Expected a {FORMAT} document (version {VERSION}); record sizes again with "
                             "op.record_sizes()")
        try:
            profile = cls({int(k): int(v) for k, v in data["counts"].items()})
        except (KeyError, TypeError, ValueError) as exc:
            raise TableError(f"Expected counts of sizes in the profile but got {exc}") from exc
        profile.folded = bool(data.get("folded", False))
        return profile

    def save(self, path: str | Path) -> Path:
        from .table import atomic_write_text

        target = Path(path)
        atomic_write_text(target, json.dumps(self.to_json(), indent=1))
        return target

    @classmethod
    def load(cls, path: str | Path) -> SizeProfile:
        try:
            return cls.from_json(json.loads(Path(path).read_text()))
        except (OSError, ValueError) as exc:
            raise TableError(f"could not read the size profile {str(path)!r}: {exc}") from exc

    def __repr__(self) -> str:
        return f"SizeProfile({len(self.counts)} sizes, {self.total()} calls)"


def _bucket(size: int) -> int:
    """The representative of ``size``'s log bucket (8 per power of two)."""
    if size < 16:
        return size
    e = math.floor(math.log2(size))
    step = 2 ** e / 8
    return int(2 ** e + step * math.floor((size - 2 ** e) / step))


def profile_path(table_path: str | Path) -> Path:
    """Where a table's profile lives: ``table.json`` -> ``table.sizes.json``."""
    p = Path(table_path)
    return p.with_name(p.stem + ".sizes.json")
