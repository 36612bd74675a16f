"""An op explained: which candidate serves a size, why, and how the others ranked."""

from __future__ import annotations

from typing import Any

from ..decide.ranges import tree_leaves


class ExplainMixin:
    """``explain`` and ``repr`` (a part of :class:`RangeDispatchOp`)."""

    def explain(self, size: int) -> str:
        """Which candidate a dispatch size goes to, and why.

        Example:
            >>> op.explain(1000)  # doctest: +SKIP
            "x[1]=1000 is in [512, 2048): 'medium_impl', 1.31x faster than the reference ..."
        """
        if self._table is None:
            return f"{self.name}: not tuned yet; {self.dispatch}={size} would run after tuning on the first call"
        seg = self._table.partition.lookup(size)
        head = f"{self.dispatch}={size} is in {seg.range}"
        if seg.owner is None:
            return f"{head}: outside every tuned range, runs the reference {self._ref.name!r}"
        result = self._table.result_for(size)
        if result is None:
            return f"{head}: {seg.owner!r}"
        ref = self._table.reference
        ratio = result.ratio(seg.owner, ref)
        lines = [f"{head} (tuned range {result.range}): {seg.owner!r}"]
        if seg.owner != ref and ratio > 0:
            lines.append(f"  {1 / ratio:.2f}x faster than the reference {ref!r} at sizes {list(result.samples)}")
        lines += self._ranking_lines(result, ref)
        lines += self._table_lines()
        return "\n".join(lines)

    def _table_lines(self) -> list[str]:
        """The table's input signature and where it came from (see ``op.provenance``)."""
        lines = [f"  table for input signature {self._table.signature or '(unknown)'}"
                 + (f" ({len(self._tables) - 1} other signature table(s): op.tables)" if len(self._tables) > 1 else "")]
        where = self.provenance
        if where is not None:
            lines.append(f"  table {where.describe()}")
        return lines

    def _ranking_lines(self, result: Any, ref: str) -> list[str]:
        """Every candidate of a tuned range (or cell) with its time over the reference's, or
        why it lost; then the noise margin, and where the winner stops being the fastest
        inside the range, if it does."""
        lines = []
        for name, r in result.ranking(ref):
            if name in result.disqualified:
                status = f"disqualified: {result.disqualified[name]}"
            elif name in result.dropped:
                status = f"slower: {result.dropped[name]}"
            else:
                status = f"{r:.3f}x reference time"
            lines.append(f"  {name}: {status}")
        lines.append(f"  noise margin {max(result.noise, self.settings.noise_floor) * 100:.1f}%")
        inner = result.crossover()
        if inner is not None:
            lines.append(f"  note: {inner.describe(result.winner)}")
        return lines

    def __repr__(self) -> str:
        state = "untuned" if self._table is None else f"{len(tree_leaves(self._decision()))} segment(s)"
        cands = ", ".join(self._by_name)
        kind = type(self).__mro__[1] if type(self).__name__.startswith("_Tuned") else type(self)
        return f"{kind.__name__}({self.name!r}, dispatch_on={self.dispatch}, candidates=[{cands}], {state})"
