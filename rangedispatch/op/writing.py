"""The calls an op writes for itself: its generated ``__call__`` for the tuned table (see
``route.fastcall``), and its custom op's kernel and class."""

from __future__ import annotations

import sys
from typing import Any, Callable, Mapping, Sequence

from .. import compat
from ..decide.config import dims_by_tensor
from ..decide.inputs import CallTemplate, signature_kinds
from ..decide.ranges import map_tree
from ..decide.table import TuningTable


_KEYWORD_ONLY = sys.maxsize  # the position of a keyword-only dispatch tensor


class WritingMixin:
    """The generated call and the custom op's kernel (a part of :class:`RangeDispatchOp`)."""

    def _set_untuned(self) -> None:
        self._table = None
        self._tables: dict[str, TuningTable] = {}
        self._routes: dict[str, Any] = {}  # by signature
        self._key_routes: dict[Any, Any] = {}  # by _call_key, for calls off the main signature
        self._templates: dict[str, CallTemplate] = {}  # the example each table was tuned on
        self._provenance: dict[str, Any] = {}  # where each signature's table came from (spotcheck.Provenance)
        self._compiled_plans = {}
        self._compiled_outputs = {}
        self._route: tuple[tuple[int, ...], tuple[Callable[..., Any], ...]] = ((), (self._first_call,))
        spec = self.dispatch
        self._tensor = spec.tensor if spec else ""
        self._dim = spec.dim if spec else 0
        self._resized = dims_by_tensor(spec)  # tensor -> its dispatch dims
        self._positions = {name: i for i, name in enumerate(self._positional())}
        self._pos = self._positions.get(spec.tensor, _KEYWORD_ONLY) if spec else _KEYWORD_ONLY
        self._set_generic()

    def _set_generic(self) -> None:
        """The generic ``__call__`` and custom-op kernel (no generated code)."""
        if type(self).__name__.startswith("_Tuned"):
            self.__class__ = type(self).__mro__[1]
        if getattr(self, "_custom_op", None) is not None:
            self._route_custom_op(self.eager, None)

    def _route_custom_op(self, kernel: Callable[..., Any], written: Mapping[str, Any] | None) -> None:
        """Make ``kernel`` the custom op's kernel on every device it has, and give the custom
        op the class whose call traces this op's dispatch (written out with ``written``: the
        template, tree and key of :func:`~rangedispatch.route.fastcall.generate_call`)."""
        from .custom_op import install_kernel, set_custom_op_class

        for device in compat.kernel_devices(self._custom_op):
            install_kernel(self._custom_op, device, kernel)
        set_custom_op_class(self._custom_op, self, written)

    def _disabled_kernel_call(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        """A custom op's kernel call while some device's kernel is turned off
        (``set_kernel_enabled``): the reference there, as torch does, the dispatch elsewhere."""
        from .custom_op import kernel_disabled

        if kernel_disabled(self._custom_op, args, kwargs):
            return self.reference_fn(*args, **kwargs)
        return self._other_signature(args, kwargs)

    def _route_of(self, table: TuningTable) -> tuple[tuple[int, ...], tuple[Callable[..., Any], ...]]:
        fns = []
        for seg in table.partition.segments:
            if seg.owner is None:
                fns.append(self._gap_fn(seg.range))
            else:
                fns.append(self._by_name[seg.owner].call)
        bounds = tuple(table.partition.bounds) if len(fns) > 1 else ()
        return bounds, tuple(fns)

    def _install(self, table: TuningTable) -> None:
        bounds, fns = self._route_of(table)
        self._table = table
        self._compiled_plans.clear()
        self._compiled_outputs.clear()
        self._route = (bounds, fns)
        self._tables[table.signature] = table
        self._routes[table.signature] = self._route
        self._key_routes.clear()
        self._specialise(bounds, fns)

    def _specialise(self, bounds: Sequence[int], fns: Sequence[Callable[..., Any]]) -> None:
        """Give this op a generated ``__call__`` for its signature and table (see fastcall).
        A loaded table no call has matched yet gets its dispatch written out for compiled
        calls only (its signature names the tensors); eager calls take the generic path,
        whose first call adopts the table."""
        from ..route.fastcall import generate_call, plain_params
        from ..trace.traced import TRACE_HOOKS, traced_call

        # what Dynamo traces: the op's table written out (see fastcall.traced_lines)
        written: dict[str, Any] = dict(template=self._template, tree=self._written_tree(), key=self._rd_key,
                                       hooks=TRACE_HOOKS,
                                       guarded=self._compiled_dispatch == "guards")
        kernel = None
        if self._awaiting_example:
            kinds = signature_kinds(self._table.signature)
            written["tensors"] = [n for n in plain_params(self.reference_fn) if n in kinds]
            call = generate_call(self.reference_fn, tensor=None, dim=0, bounds=(), fns=[self.eager],
                                 traced=traced_call, **written)
        else:
            recording = self._recording and self.profile is not None
            others = [(self._templates[sig], tuple(checks), *self._routes[sig])
                      for sig, checks in self._other_checks.items()
                      if checks and sig in self._routes and sig in self._templates and not recording]
            # what eager calls check and run (the op's call and the custom op's kernel alike)
            eager = dict(tensor=self._tensor or None, dim=self._dim, bounds=bounds, fns=fns,
                         tensor_checks=tuple(self._tensor_checks), resized=self._resized, others=others,
                         eager_tree=self._eager_tree(fns), record=self.profile.add if recording else None)
            call = generate_call(self.reference_fn, traced=traced_call, miss=self._miss, **written, **eager)
            if self._custom_op is not None:
                from .custom_op import kernel_switch

                off = kernel_switch(self._custom_op)
                kernel = generate_call(self.reference_fn, traced=None, miss=self._other_signature,
                                       template=self._template, **eager,
                                       disabled=None if off is None else (off, self._disabled_kernel_call))
        if self._custom_op is not None:
            self._route_custom_op(kernel or self.eager, written)
        base = type(self).__mro__[1] if type(self).__name__.startswith("_Tuned") else type(self)
        if call is None:
            self.__class__ = base
            return
        self.__class__ = type(f"_Tuned{base.__name__}", (base,), {"__call__": call, "__doc__": base.__doc__})

    def _eager_tree(self, fns: Sequence[Callable[..., Any]]) -> Any:
        """``(axes, decision)`` that ``fastcall`` writes out for eager calls, leaves the
        functions calls run; ``None``: the route's ``bounds, fns`` are written instead."""
        return None

    def _written_tree(self) -> Any:
        """``(axes, decision)`` that ``fastcall`` writes out for Dynamo, with the candidates'
        functions at the leaves."""
        if self._table is None or self.dispatch is None:
            return None
        return self._axes(), map_tree(self._decision(), lambda name: self._by_name[name].call)
