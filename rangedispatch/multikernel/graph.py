"""A MultiKernel inside ``torch.compile`` graphs and ``torch.export`` programs: the ``nearest``
rule as conditionals on the symbolic sizes, and the custom op that runs a region's variant
as it runs eagerly (``in_graph="opaque"``)."""

from __future__ import annotations

import functools
import itertools
import re
import warnings
import weakref
from typing import TYPE_CHECKING, Any, Callable, Sequence

import torch
from torch.compiler import is_dynamo_compiling

from .. import compat
from .variants import Variant

if TYPE_CHECKING:
    from .core import MultiKernel


def _twice_max(s: Any, h: Any) -> Any:
    """``2 * max(s, h)`` with ``abs`` only (exported programs allow it; ``sym_max`` they do not)."""
    return s + h + abs(s - h)


def _twice_min(s: Any, h: Any) -> Any:
    return s + h - abs(s - h)


_TRACEABLE: weakref.WeakValueDictionary[str, MultiKernel] = weakref.WeakValueDictionary()


@compat.constant_result
def _traced_plan(key: str) -> tuple[str, tuple[int, ...], tuple[int, ...], tuple[Any, ...]]:
    """A MultiKernel's traced plan as constants under Dynamo (see ``MultiKernel.traced_plan``)."""
    return _TRACEABLE[key].traced_plan()


_GRAPH_OPS: dict[str, str] = {}  # trace key -> the name of its MultiKernel's op in torch.ops.rangedispatch_mk


_GRAPH_OP_COUNT = itertools.count()


@compat.constant_result
def _graph_op_name(key: str) -> str:
    """The custom op running a MultiKernel's hinted variants in a graph, made on first use
    (outside tracing: Dynamo calls this instead of tracing it)."""
    name = _GRAPH_OPS.get(key)
    if name is None:
        name = _GRAPH_OPS[key] = _make_graph_op(key)
    return name


@compat.constant_result
def _graph_form(key: str) -> str:
    """How a MultiKernel's variants go into the graph being traced: "opaque" or "inline"."""
    return _TRACEABLE[key]._in_graph_form()


@compat.constant_result
def _graph_output_single(key: str) -> bool:
    """Whether the variants return one tensor (seen by the op's fake run, which comes first)."""
    return _TRACEABLE[key]._single_output


def _make_graph_op(key: str) -> str:
    """``rangedispatch_mk::<name>(Tensor[] ops, SymInt variant) -> Tensor[]``: runs hinted variant
    ``variant`` on real tensors; on fake tensors, the variants' uncompiled code (the first that
    runs there) gives the output shapes."""
    mk = _TRACEABLE[key]
    name = f"{re.sub(r'[^0-9A-Za-z_]', '_', mk.name)[:40]}_{next(_GRAPH_OP_COUNT)}"

    def owner() -> MultiKernel:
        found = _TRACEABLE.get(key)
        if found is None:
            raise RuntimeError(f"rangedispatch_mk::{name}: the MultiKernel it belongs to no longer exists; keep it "
                               "alive while its compiled or exported graphs run")
        return found

    # a plain library kernel: a quarter of the call overhead of torch.library.custom_op
    _graph_library().define(f"{name}(Tensor[] ops, SymInt variant) -> Tensor[]")

    def run(ops: list[torch.Tensor], variant: int) -> list[torch.Tensor]:
        fn = owner().hinted[variant].fn
        eager = getattr(fn, "eager_state", None)
        if eager is None:
            return _fresh_outputs(fn(*ops), ops)
        # a per-hint compile runs in the state its first eager call primed it in, so the graph
        # reuses that compile instead of making another (the runtime calls this kernel with
        # grad off and autograd keys excluded, which Dynamo guards on); nothing here needs
        # grad (the opaque form is only traced for such calls), so outputs are detached
        keys, grad = eager
        with keys(), torch.set_grad_enabled(grad):
            out = fn(*ops)
        return _fresh_outputs([o.detach() if o.requires_grad else o for o in _outputs(out)], ops)

    _graph_library().impl(name, run, "CompositeExplicitAutograd")

    @torch.library.register_fake(f"rangedispatch_mk::{name}")
    def _(ops: list[torch.Tensor], variant: int) -> list[torch.Tensor]:
        mk = owner()
        failure: Exception | None = None
        for v in (mk.hinted[variant], *mk.hinted):
            try:
                out = _uncompiled(v.fn)(*ops)
            except Exception as exc:  # e.g. a Triton launch, which fake tensors cannot run
                failure = failure or exc
                continue
            mk._single_output = isinstance(out, torch.Tensor)
            return [o.clone() for o in _outputs(out)]
        raise RuntimeError(f"{mk.name}: no variant computes its output shapes on fake tensors; pass "
                           "in_graph='inline' to trace the variants' code instead") from failure

    return name


@functools.lru_cache(maxsize=None)
def _graph_library() -> Any:
    return torch.library.Library("rangedispatch_mk", "FRAGMENT")


def _outputs(out: Any) -> list[torch.Tensor]:
    if isinstance(out, torch.Tensor):
        return [out]
    if isinstance(out, (tuple, list)) and all(isinstance(o, torch.Tensor) for o in out):
        return list(out)
    raise TypeError(f"a MultiKernel variant in a graph must return a tensor or a tuple of tensors, got "
                    f"{type(out).__name__}")


def _fresh_outputs(out: Any, inputs: Sequence[torch.Tensor]) -> list[torch.Tensor]:
    """The variant's outputs; one that is an input or a view (an op may not return an alias
    of its inputs) is copied when it shares an input's memory."""
    outs = _outputs(out)
    if all(o._base is None and all(o is not t for t in inputs) for o in outs):
        return outs
    held = {t.untyped_storage().data_ptr() for t in inputs if t.numel()}
    return [o.clone() if o.numel() and o.untyped_storage().data_ptr() in held else o for o in outs]


def _uncompiled(fn: Callable[..., Any]) -> Callable[..., Any]:
    """The Python code behind a ``torch.compile`` wrapper (functions and modules)."""
    return getattr(fn, "_torchdynamo_orig_callable", None) or getattr(fn, "_orig_mod", None) or fn


class GraphMixin:
    """The traced call (a part of :class:`~rangedispatch.multikernel.MultiKernel`)."""

    def _traced_call(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        """Under ``torch.compile`` / ``torch.export``: the ``nearest`` rule as conditionals on
        the symbolic sizes (one graph for every shape; exported programs keep the regions).
        Timing is impossible while tracing, so the ``benchmark`` policy also uses it there."""
        from ..trace import traced
        from ..trace.traced import _flatten, branch, outside_graph

        if not traced.PLAN_CONSTANTS and is_dynamo_compiling():
            return outside_graph(self._call, args, kwargs)  # Dynamo cannot be handed the plan: a graph break
        if self.policy != "nearest" and not self._warned_trace:
            self._warned_trace = True
            warnings.warn(f"{self.name}: traced by torch.compile/export, where nothing can be timed; the "
                          "'nearest' rule picks the variant per shape in the graph", RuntimeWarning, stacklevel=3)
        sizes = self._sizes(args, kwargs)
        # the plan as constants: ints read from the variants while tracing could turn symbolic
        kind, dims, owners, values = _traced_plan(self._trace_key)  # owners: indices into self.hinted
        flat, rebuild = _flatten(args, kwargs)
        # gradients do not flow through the op: a call that needs them traces the code inline
        opaque = (_graph_form(self._trace_key) == "opaque" and not kwargs and all(isinstance(a, torch.Tensor) for a in args)
                  and not (torch.is_grad_enabled() and any(a.requires_grad for a in args)))
        key = self._trace_key

        def run(owner: int, ops: Sequence[Any]) -> Any:
            if opaque:  # the variant exactly as it runs eagerly, behind a custom op
                out = getattr(torch.ops.rangedispatch_mk, _graph_op_name(key))(list(ops), owner)
                return out[0] if _graph_output_single(key) else tuple(out)
            a, k = rebuild(ops)
            return self.hinted[owner].fn(*a, **k)

        if kind == "intervals":  # one size varies: its regions are intervals, plain thresholds
            def segment(i: int, ops: Sequence[Any]) -> Any:
                if i == len(owners) - 1:
                    return run(owners[i], ops)
                return branch(sizes[dims[0]] < values[i], lambda *o: run(owners[i], o),
                              lambda *o: segment(i + 1, o), tuple(ops))

            return segment(0, flat)
        # |log2 s - log2 h| summed over dims compares as a product of ratios max(s,h)/min(s,h):
        # d_i <= d_j  <=>  num_i * den_j <= num_j * den_i, all in (symbolic) integers
        num, den = [], []
        for hint in values:
            n, d = 1, 1
            for j, h in zip(dims, hint):  # twice max and min on both sides of each comparison: the 2s cancel
                s = _twice_max(sizes[j], 1) // 2  # sizes below 1 count as 1
                n, d = n * _twice_max(s, h), d * _twice_min(s, h)
            num.append(n)
            den.append(d)

        def chain(i: int, ops: Sequence[Any]) -> Any:  # owners are every hinted variant, in order
            if i == len(owners) - 1:
                return run(owners[i], ops)
            # the first variant no farther than every later one is the nearest (first on ties)
            pred: Any = True
            for j in range(i + 1, len(owners)):
                pred = pred & (num[i] * den[j] <= num[j] * den[i])
            return branch(pred, lambda *o: run(owners[i], o), lambda *o: chain(i + 1, o), tuple(ops))

        return chain(0, flat)

    def _in_graph_form(self) -> str:
        """``in_graph`` with ``"auto"`` resolved for the trace under way (see the class doc)."""
        if self.in_graph != "auto":
            return self.in_graph
        if torch.compiler.is_exporting():
            return "inline"
        return "opaque" if any(_uncompiled(v.fn) is not v.fn for v in self.hinted) else "inline"

    def traced_plan(self) -> tuple[str, tuple[int, ...], tuple[int, ...], tuple[Any, ...]]:
        """How ``nearest`` is traced: ``("intervals", (dim,), owners, ends)`` when one size
        varies (owners index ``hinted``, ends exclusive), else ``("products", dims, all
        hinted, their hints on those dims)``."""
        dims = tuple(j for j in range(self.rank) if self._mask[j])
        if len(dims) <= 1:
            owners, his = self._intervals(dims[0] if dims else 0)
            index = {id(v): i for i, v in enumerate(self.hinted)}
            return "intervals", dims or (0,), tuple(index[id(v)] for v in owners), tuple(his)
        hints = tuple(tuple(max(int(v.hint[j]), 1) for j in dims) for v in self.hinted)
        return "products", dims, tuple(range(len(self.hinted))), hints

    def _intervals(self, dim: int) -> tuple[list[Variant], list[int]]:
        """The ``nearest`` choice along one varying size as intervals: the variant per
        interval and each interval's end (exclusive), found with :meth:`nearest` itself."""
        base = list(self.hinted[0].hint)

        def at(s: int) -> Variant:
            base[dim] = s
            return self.nearest(base)

        values = sorted({max(int(v.hint[dim]), 1) for v in self.hinted})
        owners, his = [at(1)], []
        for a, b in zip(values, values[1:]):
            if at(b) is owners[-1]:
                continue
            lo, hi = a, b  # the first size in (a, b] whose nearest is not owners[-1]
            while hi - lo > 1:
                mid = (lo + hi) // 2
                lo, hi = (mid, hi) if at(mid) is owners[-1] else (lo, mid)
            owners.append(at(hi))
            his.append(hi)
        return owners, his
