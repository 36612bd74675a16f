"""Half-open dispatch ranges ``[lo, hi)``: parsing, validation, and the dispatch partition.

A :class:`Partition` covers every size from 0 to infinity with consecutive segments, each
owned by one candidate name (``None`` for a gap, which runs the reference). Equal
neighbours are merged, so lookup is a single ``bisect`` over a tuple of boundaries.
"""

from __future__ import annotations

import math
from bisect import bisect_right
from dataclasses import dataclass
from typing import Any, Callable, Iterable, Sequence

from ..errors import ConfigError, ConfigTypeError, describe


@dataclass(frozen=True, order=True)
class Range:
    """The half-open range ``[lo, hi)`` of a dispatch dimension; ``hi=None`` is unbounded."""

    lo: int
    hi: int | None = None

    def __contains__(self, size: object) -> bool:
        return isinstance(size, int) and self.lo <= size and (self.hi is None or size < self.hi)

    @property
    def last(self) -> int | None:
        """The largest size inside the range (``None`` when unbounded)."""
        return None if self.hi is None else self.hi - 1

    def within(self, other: Range) -> bool:
        """Whether every size of this range is in ``other``."""
        return other.lo <= self.lo and (other.hi is None or (self.hi is not None and self.hi <= other.hi))

    def __str__(self) -> str:
        return f"[{self.lo}, {'inf' if self.hi is None else self.hi})"

    def to_json(self) -> list[int | None]:
        return [self.lo, self.hi]

    @classmethod
    def from_json(cls, value: Sequence[int | None]) -> Range:
        lo, hi = value
        return cls(int(lo), None if hi is None else int(hi))  # type: ignore[arg-type]


def _bound(value: Any, *, what: str, allow_inf: bool) -> int | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ConfigTypeError(
            f"Expected an integer {what} but got {describe(what, value)}; "
            "range bounds are sizes, e.g. (0, 512) or (2048, float('inf'))"
        )
    if isinstance(value, float):
        if math.isinf(value) and value > 0:
            if not allow_inf:
                raise ConfigError(
                    f"Expected a finite {what} but got {describe(what, value)}; "
                    "only the end of a range may be float('inf')"
                )
            return None
        if not value.is_integer():
            raise ConfigError(
                f"Expected an integer {what} but got {describe(what, value)}; "
                "sizes are whole numbers, round the bound"
            )
        value = int(value)
    if value < 0:
        raise ConfigError(
            f"Expected a non-negative {what} but got {describe(what, value)}; "
            "sizes start at 0"
        )
    return int(value)


def parse_range(value: Any, *, name: str = "dim_range") -> Range:
    """Turn ``(lo, hi)`` (``hi`` may be ``float('inf')`` or ``None``) into a :class:`Range`."""
    if isinstance(value, Range):
        return value
    if not isinstance(value, (tuple, list)) or len(value) != 2:
        raise ConfigTypeError(
            f"Expected a (start, end) pair but got {describe(name, value)}; "
            "write ranges as (0, 512) or (2048, float('inf'))"
        )
    lo = _bound(value[0], what=f"{name} start", allow_inf=False)
    hi = None if value[1] is None else _bound(value[1], what=f"{name} end", allow_inf=True)
    assert lo is not None
    if hi is not None and lo >= hi:
        raise ConfigError(
            f"Expected start < end but got {describe(name, tuple(value))}; "
            "a range [start, end) must hold at least one size"
        )
    return Range(lo, hi)


def check_ranges(ranges: Sequence[Range]) -> None:
    """Raise unless ``ranges`` are pairwise disjoint and sorted by start."""
    for i, a in enumerate(ranges):
        for j in range(i + 1, len(ranges)):
            b = ranges[j]
            if a.lo < (b.hi if b.hi is not None else math.inf) and b.lo < (
                a.hi if a.hi is not None else math.inf
            ):
                raise ConfigError(f"Ranges {i} and {j} overlap: {a} and {b}")
    for i in range(1, len(ranges)):
        if ranges[i].lo < ranges[i - 1].lo:
            raise ConfigError(
                f"Ranges must be sorted by start, but range {i} {ranges[i]} starts before "
                f"range {i - 1} {ranges[i - 1]}; list them in increasing order"
            )


def ranges_from_split_points(split_points: Any) -> tuple[Range, ...]:
    """Upstream PyTorch's ``split_points``: a point belongs to the range below it.

    ``[512, 2048]`` gives ``[1, 513), [513, 2049), [2049, inf)``, i.e. upstream's inclusive
    ``[1, 512], [513, 2048], [2049, inf)``.
    """
    if not isinstance(split_points, (list, tuple)) or not split_points:
        raise ConfigError(
            f"Expected a non-empty list of increasing sizes but got "
            f"{describe('split_points', split_points)}; e.g. split_points=[512, 2048]"
        )
    points = [_bound(p, what="split point", allow_inf=False) for p in split_points]
    if any(p is None or p < 1 for p in points):
        raise ConfigError(
            f"Expected split points >= 1 but got {describe('split_points', split_points)}"
        )
    if any(b <= a for a, b in zip(points, points[1:])):  # type: ignore[operator]
        raise ConfigError(
            f"Expected strictly increasing split points but got "
            f"{describe('split_points', split_points)}; sort them and drop duplicates"
        )
    edges = [1] + [p + 1 for p in points]  # type: ignore[operator]
    return tuple(Range(lo, hi) for lo, hi in zip(edges, edges[1:] + [None]))


@dataclass(frozen=True)
class Segment:
    """One piece of a partition: sizes in ``range`` go to ``owner`` (``None``: reference, a gap)."""

    range: Range
    owner: str | None


@dataclass(frozen=True)
class Partition:
    """A cover of ``[0, inf)`` by merged segments, ready for ``bisect`` lookup."""

    segments: tuple[Segment, ...]

    @classmethod
    def build(cls, owners: Iterable[tuple[Range, str | None]]) -> Partition:
        """Fill gaps (owner ``None``) and merge equal neighbours."""
        pieces: list[Segment] = []
        cursor = 0
        for rng, owner in sorted(owners, key=lambda item: item[0].lo):
            if rng.lo > cursor:
                pieces.append(Segment(Range(cursor, rng.lo), None))
            pieces.append(Segment(rng, owner))
            if rng.hi is None:
                cursor = -1
                break
            cursor = rng.hi
        if cursor >= 0:
            pieces.append(Segment(Range(cursor, None), None))
        merged: list[Segment] = []
        for seg in pieces:
            if merged and merged[-1].owner == seg.owner:
                merged[-1] = Segment(Range(merged[-1].range.lo, seg.range.hi), seg.owner)
            else:
                merged.append(seg)
        return cls(tuple(merged))

    @property
    def bounds(self) -> tuple[int, ...]:
        """The ``lo`` of every segment after the first: ``bisect_right`` gives the index."""
        return tuple(seg.range.lo for seg in self.segments[1:])

    def lookup(self, size: int) -> Segment:
        return self.segments[bisect_right(self.bounds, size)]

    @property
    def owners(self) -> tuple[str | None, ...]:
        return tuple(seg.owner for seg in self.segments)


# -- decision trees: a leaf is an owner (a name, or a function), a node is
# (dimension index, segment ends, children), the last end ``None``

def tree_leaves(tree: Any) -> list[Any]:
    """The leaves of a decision tree, left to right."""
    if isinstance(tree, tuple):
        return [leaf for child in tree[2] for leaf in tree_leaves(child)]
    return [tree]


def describe_tree(tree: Any, axes: Sequence[str] | None = None) -> str:
    """``d0 < 8: p | else: q`` style, nested with brackets."""
    if not isinstance(tree, tuple):
        return str(tree)
    dim, his, children = tree
    name = axes[dim] if axes else f"d{dim}"
    parts = []
    for hi, child in zip(his, children):
        inner = describe_tree(child, axes)
        inner = f"[{inner}]" if isinstance(child, tuple) else inner
        parts.append(f"{name} < {hi}: {inner}" if hi is not None else f"else: {inner}")
    return " | ".join(parts)


def map_tree(tree: Any, leaf: Callable[[Any], Any]) -> Any:
    """The same tree with ``leaf(owner)`` at every leaf."""
    if isinstance(tree, tuple):
        dim, his, children = tree
        return dim, his, tuple(map_tree(c, leaf) for c in children)
    return leaf(tree)


def size_getter(position: int | None, name: str, dim: int) -> Callable[[tuple[Any, ...], dict[str, Any]], int]:
    """Reads ``name.shape[dim]`` from a call's ``(args, kwargs)``."""
    if position is None:
        return lambda args, kwargs: kwargs[name].shape[dim]

    def get(args: tuple[Any, ...], kwargs: dict[str, Any]) -> int:
        return (args[position] if position < len(args) else kwargs[name]).shape[dim]

    return get
