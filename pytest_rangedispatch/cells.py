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

import math
from typing import Any

from .cases import DISPATCH
from .checks import Equivalence, Variant, describe_inputs
from .examples import axis_window, corner_points


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
