"""What an op hands the traced dispatch (``trace.traced``): its compiled-dispatch mode, its
decision tree over owner names, the getters of its dispatch sizes."""

from __future__ import annotations

from typing import Any, Callable, Mapping

from ..decide.inputs import CallTemplate, signature_kinds
from ..decide.ranges import size_getter
from ..errors import ConfigError


class TracingMixin:
    """The compiled dispatch's inputs (a part of :class:`RangeDispatchOp`)."""

    @property
    def compiled_dispatch(self) -> str:
        """How the dispatch goes into ``torch.compile`` graphs.

        ``"cond"`` (default): nested ``torch.cond`` on the symbolic size, one graph for every
        size, whose branches Inductor writes inline (:mod:`rangedispatch.compat.inline_cond`); where
        Inductor compiles for CUDA graphs (``mode="reduce-overhead"``, CUDA tensors), which it
        skips for graphs with a cond, the ranges are guarded instead, as below. ``"guards"``: a Python ``if`` that Dynamo guards, so each range reached gets its
        own graph holding its winner alone: no cond to run per call (a bare compile's host
        time and guards, plus the range's bounds) and CUDA graphs under
        ``mode="reduce-overhead"``, for at most one recompile per range (mind
        ``torch._dynamo.config.recompile_limit``). ``torch.export`` always keeps the cond (an
        exported program serves every size)."""
        return self._compiled_dispatch

    @compiled_dispatch.setter
    def compiled_dispatch(self, value: str) -> None:
        if value not in ("cond", "guards"):
            raise ConfigError(f"Expected compiled_dispatch 'cond' (one graph, a torch.cond per range) or 'guards' "
                              f"(one graph per range, no cond) but got {value!r}")
        with self._lock:
            self._compiled_dispatch = value
            if self._table is not None:
                self._specialise(*self._route)

    # --- the decision, for the traced dispatch (traced.compiled_plan) and fastcall ------
    def _axes(self) -> list[tuple[str, int]]:
        """The ``(tensor, dim)`` of every dispatch dimension."""
        return [(self.dispatch.tensor, self.dispatch.dim)] if self.dispatch is not None else []

    def _getters(self) -> list[Callable[[tuple[Any, ...], dict[str, Any]], int]]:
        """Per dispatch dimension, a function reading its size from a call's ``(args, kwargs)``."""
        return [size_getter(self._positions.get(t), t, d) for t, d in self._axes()]

    def _decision(self, table: Any = None) -> Any:
        """A table (default: the main one) as a decision tree over owner names (see
        ``ranges.map_tree``), merged, with gaps owned by the reference (what they run when
        traced): a name, or ``(0, segment ends, names)``."""
        from ..trace.traced import merged_segments

        table = table or self._table
        assert table is not None
        owners, his = merged_segments(table)
        return owners[0] if len(owners) == 1 else (0, his, owners)

    def _traced_signature(self, kinds: Mapping[str, tuple[Any, str]]) -> str | None:
        """The signature of the table a traced call uses: the first (the main table first,
        then those tuned or matched by an eager call) whose signature names the call's dtype
        and device type for every tensor (``kinds``: name -> (dtype, device type)). Under
        tracing the other dims are symbolic, so they do not select a table; ``None`` when no
        table matches."""
        main = self._table.signature if self._table is not None else None
        for signature in sorted(self._tables, key=lambda s: (s != main, s not in self._templates)):
            named = signature_kinds(signature)
            if all(named.get(n) == kind for n, kind in kinds.items()):
                return signature
        return None

    def _trial_size(self, template: CallTemplate) -> Any:
        """A size to trace the dispatch at once, to see that it builds (not 0 or 1: those
        specialise)."""
        return max(2, template.dispatch_size(self.dispatch))
