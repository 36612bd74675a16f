"""Checks of a grid op (several dispatch dimensions), cell by cell.

A cell is checked like a range, one dimension at a time: on each dimension the sizes a case
covers are the cell's range (for the dispatched op, one size past each boundary too), and
the points always checked are every combination of each dimension's boundary sizes (lo,
lo+1 and the top; for the dispatched op also lo-1 and top+1). Hypothesis draws points
inside the cell between them. An unbounded dimension is checked up to the marker's
``max_size``, else that dimension's ``range_upper_bound``, else the tuning's upper bound
(``max(2 * lo, 256)``): a grid's points multiply, so its default tops stay near the sizes tuning used.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import replace
from typing import Any

from rangedispatch.grid import cell_points
from rangedispatch.tuner import range_top

from .cases import DISPATCH
from .checks import Equivalence, Variant, describe_inputs


def axis_top(spec: Any, axis: Any, rng: Any) -> int:
    top = spec.options.get("max_size")
    if top is None:
        top = axis.upper_bound if axis.upper_bound is not None else spec.op.settings.upper_bound
    return range_top(rng, top)


def axis_window(spec: Any, axis: Any, rng: Any, *, across: bool) -> tuple[int, int]:
    """The sizes a case covers on one dimension; ``across``: one past each boundary too."""
    top = axis_top(spec, axis, rng)
    if across:
        return max(rng.lo - 1, 0), top + (1 if rng.hi is not None else 0)
    return rng.lo, top


def axis_edges(spec: Any, axis: Any, rng: Any, *, across: bool) -> list[int]:
    low, high = axis_window(spec, axis, rng, across=across)
    top = axis_top(spec, axis, rng)
    return sorted(s for s in {rng.lo - 1, rng.lo, rng.lo + 1, top, top + 1} if low <= s <= high)


def corner_points(spec: Any, cell: Any, *, across: bool) -> list[tuple[int, ...]]:
    """Every combination of each dimension's boundary sizes, plus the marker's ``sizes``
    given as points inside the case's window."""
    axes = spec.op.dispatch.axes
    points = set(itertools.product(*[axis_edges(spec, a, r, across=across) for a, r in zip(axes, cell.ranges)]))
    windows = [axis_window(spec, a, r, across=across) for a, r in zip(axes, cell.ranges)]
    for extra in spec.options.get("sizes") or ():
        if isinstance(extra, (tuple, list)) and len(extra) == len(axes) and all(
                lo <= int(s) <= hi for s, (lo, hi) in zip(extra, windows)):
            points.add(tuple(int(s) for s in extra))
    return sorted(points)


def bench_points(spec: Any, cell: Any) -> tuple[tuple[int, ...], ...]:
    """Where a cell's benchmark case times: tuning's points, with the marker's ``max_size``
    as the top of unbounded dimensions."""
    top = spec.options.get("max_size")
    axes = spec.op.dispatch.axes
    if top is not None:
        axes = tuple(replace(a, upper_bound=top) for a in axes)
    return cell_points(cell, axes, spec.op.settings)


class CellEquivalence(Equivalence):
    """A candidate (or the dispatched op) against the reference over one grid cell."""

    def _axes(self) -> list[tuple[Any, Any]]:
        return list(zip(self.op.dispatch.axes, self.case.range.ranges))

    def strategy(self) -> Any:
        from hypothesis import strategies as st

        across = self.case.kind == DISPATCH
        per_axis = []
        for axis, rng in self._axes():
            low, high = axis_window(self.case.spec, axis, rng, across=across)
            if high <= max(low, 1) * 4:
                per_axis.append(st.integers(low, high))
                continue
            lo_log, hi_log = math.log(max(low, 1)), math.log(high)
            log_uniform = st.floats(lo_log, hi_log).map(
                lambda v, lo=low, hi=high: min(hi, max(lo, round(math.exp(v)))))
            per_axis.append(st.one_of(st.integers(low, high), log_uniform))
        return st.tuples(*per_axis)

    def examples_for(self, base: int) -> int:
        return base

    def fixed_sizes(self) -> list[Any]:
        return corner_points(self.case.spec, self.case.range, across=self.case.kind == DISPATCH)

    def every_size(self, variant: Any) -> None:
        return None  # the corners and the sweep cover a cell

    def _where(self, size: Any, variant: Variant, args: tuple[Any, ...], kwargs: dict[str, Any]) -> str:
        return (f"{self.case.spec.name}: cell {self.op.dispatch} in {self.case.range}, "
                f"{self.op.dispatch.at(size)} ({variant.describe()}; inputs {describe_inputs(args, kwargs, self.names)})")
