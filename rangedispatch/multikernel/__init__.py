"""Multi-kernel dispatch: equivalent variants, each tuned at a size hint, chosen per shape.

Two policies, switchable at any time:

* ``"benchmark"``: the first call with a new shape times every variant on the real inputs,
  checks that they agree with the first variant, caches the fastest for that shape and calls
  it directly afterwards;
* ``"nearest"``: no timing at run time; the variant whose hint is closest to the call's sizes
  (L1 distance in log2 space) is chosen, and cached per shape too.

Hints are sequences of ints compared with the call's *sizes*: by default every dimension of
every tensor argument in order, or the first tensor's dimensions when those have as many
numbers as the hints; pass ``sizes=lambda a, b: (a.shape[0], b.shape[1])`` to compare
other numbers. Dimensions on which all hints agree do not count in the distance. A shape that
equals a variant's hint exactly picks that variant without timing under either policy.
A variant without a hint (``hint=None``, e.g. a library kernel) is timed by ``benchmark`` but
never chosen by ``nearest``.

Variant sources: plain callables (:class:`Variant`), a function compiled once per hint with
``torch.compile`` and primed at the hint (:meth:`MultiKernel.compiled`), and a kernel with
launch configs, the best config per hint chosen by timing at the hint
(:meth:`MultiKernel.tuned_configs`). Decisions persist in the tuning cache (or any file
with :meth:`MultiKernel.save` / :meth:`MultiKernel.load`), written atomically.

Inside ``torch.compile`` and ``torch.export`` the ``nearest`` rule is traced as conditionals
on the symbolic sizes (one graph for every shape). ``in_graph="inline"`` traces the variants'
code into the graph, where the compiler may fuse it with its neighbours but compiles it for
symbolic shapes (a per-hint compile's specialisation is not kept). ``in_graph="opaque"`` calls
each region's variant through one custom op (``torch.ops.rangedispatch_mk.<name>``) instead,
so it runs exactly as it does eagerly: the per-hint compiles keep their specialisation, and variants the compiler cannot
trace (host logic, extensions without fake kernels) work. The default, ``"auto"``, is opaque
under ``torch.compile`` when a hinted variant is a compile (:meth:`MultiKernel.compiled`) and
inline otherwise, and always inline under ``torch.export``.
"""

from __future__ import annotations

import contextlib
import functools
import itertools
import json
import logging
import math
import os
import re
import tempfile
import threading
import time
import types
import warnings
import weakref
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator, Mapping, Sequence

import torch
from torch.compiler import is_compiling, is_dynamo_compiling

from .. import compat
from ..decide.cache import cache_dir, cache_key, cache_path
from ..decide.candidates import short_name, source_hash
from ..decide.environment import Environment
from ..route.fastcall import MAX_TENSOR_GUARDS, tensor_check
from ..errors import ConfigError, ConfigTypeError, TableError
from ..decide.table import atomic_write_text
from ..measure.timing import OK, RACED, Benchmarker, Job, capturing_cuda_graph, default_benchmarker, measure_jobs
from ..measure.verify import reference_run, run_candidate

log = logging.getLogger("rangedispatch")

FORMAT = "rangedispatch.multikernel"
VERSION = 1
POLICIES = ("benchmark", "nearest")
IN_GRAPH = ("auto", "opaque", "inline")


@dataclass(frozen=True)
class Variant:
    """One implementation and the sizes it was tuned for (``None``: no hint; only the
    ``benchmark`` policy can choose it)."""

    fn: Callable[..., Any]
    hint: tuple[int, ...] | None
    name: str = ""
    meta: Mapping[str, Any] = field(default_factory=dict)  # e.g. the launch config chosen

    def __post_init__(self) -> None:
        if not callable(self.fn):
            raise ConfigTypeError(f"Variant fn must be callable, got {type(self.fn).__name__}")
        if self.hint is None:
            if not self.name:
                object.__setattr__(self, "name", short_name(self.fn))
            return
        hint = tuple(self.hint) if isinstance(self.hint, (list, tuple)) else (self.hint,)
        if not hint or not all(isinstance(h, int) and not isinstance(h, bool) and h >= 0 for h in hint):
            raise ConfigError(
                f"Variant hint must be a non-empty sequence of non-negative ints (e.g. [1024, 512]), got {self.hint!r}"
            )
        object.__setattr__(self, "hint", hint)
        if not self.name:
            object.__setattr__(self, "name", f"{short_name(self.fn)}@{'x'.join(map(str, hint))}")


class _Counter(list):
    """A hot-path call count (``[n]``) and the variant it counts for."""

    def __init__(self, name: str) -> None:
        super().__init__([0])
        self.name = name


def _default_sizes(*args: Any, **kwargs: Any) -> tuple[int, ...]:
    dims: list[int] = []
    for value in [*args, *kwargs.values()]:
        if isinstance(value, torch.Tensor):
            dims.extend(value.shape)  # ints; SymInts while tracing
    return tuple(dims)


def _first_tensor_sizes(args: Sequence[Any], kwargs: Mapping[str, Any], rank: int) -> tuple[int, ...] | None:
    """The first tensor's shape when it has as many dims as the hints (the default sizes of
    every tensor's dims do not fit: ``add(x, y)`` with 1-d hints)."""
    first = next((v for v in [*args, *kwargs.values()] if isinstance(v, torch.Tensor)), None)
    return tuple(first.shape) if first is not None and first.dim() == rank else None


def _shape_key(args: Sequence[Any], kwargs: Mapping[str, Any]) -> tuple[Any, ...]:
    key: list[Any] = []
    for value in [*args, *kwargs.values()]:
        if isinstance(value, torch.Tensor):
            key.append((tuple(value.shape), value.dtype, value.device.type))
    return tuple(key)


def _key_to_json(key: tuple[Any, ...]) -> list[Any]:
    return [[list(shape), str(dtype).replace("torch.", ""), device] for shape, dtype, device in key]


def _key_from_json(items: Sequence[Any]) -> tuple[Any, ...]:
    return tuple((tuple(shape), getattr(torch, dtype), device) for shape, dtype, device in items)


def _twice_max(s: Any, h: Any) -> Any:
    """``2 * max(s, h)`` with ``abs`` only (exported programs allow it; ``sym_max`` they do not)."""
    return s + h + abs(s - h)


def _twice_min(s: Any, h: Any) -> Any:
    return s + h - abs(s - h)


def log2_distance(a: Sequence[int], b: Sequence[int], mask: Sequence[bool] | None = None) -> float:
    """Sum over dims of ``|log2 a - log2 b|`` (sizes below 1 count as 1)."""
    return sum(
        abs(math.log2(max(x, 1)) - math.log2(max(y, 1)))
        for i, (x, y) in enumerate(zip(a, b))
        if mask is None or mask[i]
    )


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
        include, exclude, grad = eager
        state = compat.get("dispatch_key_tls")
        with (state.force(include, exclude) if state is not None and include is not None else contextlib.nullcontext(),
              torch.set_grad_enabled(grad)):
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


class MultiKernel:
    """Call it like any of its variants; it picks one per input shape.

    Args:
        variants: :class:`Variant` objects, or ``(fn, hint)`` pairs.
        policy: ``"benchmark"`` or ``"nearest"`` (settable later through ``.policy``).
        sizes: ``sizes(*args, **kwargs) -> tuple of ints`` compared with the hints.
        name: used in logs, stats and the cache file name.
        benchmarker: timing for the ``benchmark`` policy (CUDA events or ``perf_counter``).
        check: under ``benchmark``, compare each variant's output with the first variant's
            and drop (with a warning) variants that differ for that shape.
        rtol, atol: tolerances of that check (default: by dtype).
        cache: persist per-shape decisions in the tuning cache directory.
        make_inputs: ``make_inputs(sizes)`` builds one call's inputs (a tuple of args) at
            sizes like a hint; the pytest plugin's equivalence sweeps and benchmarks use it.
            :meth:`compiled` and :meth:`tuned_configs` keep the one they were given.
        in_graph: inside ``torch.compile`` / ``torch.export``, ``"inline"`` traces the
            variants' code into the graph; ``"opaque"`` runs each region's variant through a
            custom op, exactly as eagerly (calls with tensor arguments only, none needing
            gradients; others are traced inline). ``"auto"`` (default): opaque inside
            ``torch.compile`` when a hinted variant is itself a compile (its hint's
            specialisation is what it is for), inline otherwise and always under
            ``torch.export`` (a self-contained program). See the module doc.

    Example:
        >>> mk = MultiKernel([(small_impl, [64, 64]), (large_impl, [4096, 4096])],
        ...                  policy="nearest", sizes=lambda a, b: (a.shape[0], b.shape[1]))
        >>> out = mk(a, b); mk.stats()["selections"]
    """

    def __init__(
        self,
        variants: Sequence[Variant | tuple[Callable[..., Any], Sequence[int]]],
        *,
        policy: str = "benchmark",
        sizes: Callable[..., Sequence[int]] | None = None,
        name: str | None = None,
        benchmarker: Benchmarker | None = None,
        check: bool = True,
        rtol: float | None = None,
        atol: float | None = None,
        cache: bool = True,
        make_inputs: Callable[[Sequence[int]], Any] | None = None,
        in_graph: str = "auto",
    ) -> None:
        if in_graph not in IN_GRAPH:
            raise ConfigError(f"Expected in_graph to be one of {list(IN_GRAPH)} but got {in_graph!r}; 'opaque' runs "
                              "each variant as it runs eagerly, 'inline' traces its code into the graph, 'auto' "
                              "picks opaque for per-hint compiles under torch.compile")
        if isinstance(variants, (str, bytes)) or not isinstance(variants, Sequence) or not variants:
            raise ConfigError(
                f"MultiKernel needs a non-empty list of variants (Variant(fn, hint) or (fn, hint) pairs), got {variants!r}"
            )
        made = []
        for i, v in enumerate(variants):
            if isinstance(v, Variant):
                made.append(v)
            elif isinstance(v, tuple) and len(v) == 2:
                made.append(Variant(v[0], v[1]))
            else:
                raise ConfigTypeError(f"variants[{i}] must be a Variant or an (fn, hint) pair, got {type(v).__name__}")
        hinted = [v for v in made if v.hint is not None]
        if not hinted:
            raise ConfigError("at least one variant needs a hint (the sizes it was tuned for), e.g. Variant(fn, [1024, 512])")
        ranks = {len(v.hint) for v in hinted}
        if len(ranks) != 1:
            raise ConfigError(
                "every variant's hint must have the same number of sizes, got "
                + ", ".join(f"{v.name}: {list(v.hint)}" for v in hinted)
            )
        names = [v.name for v in made]
        if len(set(names)) != len(names):
            raise ConfigError(f"variant names must be unique, got {names}; pass Variant(..., name=...)")
        self.variants: tuple[Variant, ...] = tuple(made)
        self.hinted: tuple[Variant, ...] = tuple(hinted)  # the ones ``nearest`` chooses from
        self.rank = ranks.pop()
        self.policy = policy
        self.sizes_fn = sizes or _default_sizes
        self.name = name or short_name(made[0].fn)
        self.benchmarker = benchmarker
        self.check, self.rtol, self.atol = check, rtol, atol
        self.use_cache = cache
        self.make_inputs = make_inputs
        hints = [v.hint for v in hinted]
        self._mask = [len({h[i] for h in hints}) > 1 for i in range(self.rank)]
        self._choice: dict[tuple[Any, ...], Variant] = {}
        self._fast: dict[tuple[Any, ...], list[tuple[Callable[..., bool], Callable[..., Any], _Counter]]] = {}
        self._by_name = {v.name: v for v in made}
        self._lock = threading.RLock()  # re-entered: a decision loads the cache, which folds the hot path
        self._stats = {"calls": 0, "hits": 0, "misses": 0, "benchmarks": 0, "benchmark_ms": 0.0}
        self._selected = {v.name: 0 for v in made}
        self._loaded = False
        self._warned_trace = False
        self.in_graph = in_graph
        self._single_output = True
        self._trace_key = f"mk{id(self)}"
        _TRACEABLE[self._trace_key] = self

    # -- policy ------------------------------------------------------------------------------

    @property
    def policy(self) -> str:
        return self._policy

    @policy.setter
    def policy(self, value: str) -> None:
        if value not in POLICIES:
            raise ConfigError(f"policy must be one of {list(POLICIES)}, got {value!r}")
        if getattr(self, "_policy", value) != value:
            self._fold_fast()
            self._choice.clear()  # decisions of one policy are not the other's
        self._policy = value

    # -- the call ----------------------------------------------------------------------------

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        # the hot path: tensor-only positional calls are looked up by their shapes, and one C
        # call (Dynamo's TensorGuards) confirms dtypes, devices and the rest of the signature.
        # Fake tensors (non-strict export) fail that check; calls passing one tensor twice do
        # too, and take the general path.
        fn = None
        if not kwargs and not is_dynamo_compiling():
            try:
                for check, fn, count in self._fast[tuple([a.shape for a in args])]:
                    if check(*args):
                        break
                else:
                    fn = None
            except (AttributeError, KeyError, TypeError):
                fn = None
            if fn is not None:
                count[0] += 1
                return fn(*args)
        return self._call(args, kwargs)

    def _call(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        if is_compiling():
            return self._traced_call(args, kwargs)
        self._stats["calls"] += 1
        key = _shape_key(args, kwargs)
        variant = self._choice.get(key)
        if variant is None:
            variant = self._decide(key, args, kwargs)
        else:
            self._stats["hits"] += 1
        self._selected[variant.name] += 1
        if not kwargs:
            self._learn_fast(args, variant)
        return variant.fn(*args, **kwargs)

    def _learn_fast(self, args: tuple[Any, ...], variant: Variant) -> None:
        """Let calls like this one (every argument a tensor) take the hot path: one guard per
        way the callers' tensors differ (grad mode, ``requires_grad``, device index), a few at most."""
        if not args or not all(type(a) is torch.Tensor for a in args) or len({id(a) for a in args}) < len(args):
            return  # (one tensor passed twice never passes the guard)
        shapes = tuple(a.shape for a in args)
        known = self._fast.setdefault(shapes, [])
        if len(known) >= MAX_TENSOR_GUARDS:
            return
        check = tensor_check(args, [[int(d) for d in a.shape] for a in args])
        if check is not None:
            with self._lock:
                known.append((check, variant.fn, _Counter(variant.name)))

    def _fold_fast(self) -> None:
        """Move the hot path's counts into the statistics and forget its entries."""
        with self._lock:
            self._add_fast_counts(self._stats, self._selected)
            self._fast.clear()

    def _add_fast_counts(self, stats: dict[str, Any], selected: dict[str, int]) -> None:
        """Add the hot path's calls (all hits) to ``stats`` and ``selected``."""
        for entries in list(self._fast.values()):
            for _, _, count in entries:
                stats["calls"] += count[0]
                stats["hits"] += count[0]
                selected[count.name] += count[0]

    def select(self, *args: Any, **kwargs: Any) -> Variant:
        """The variant a call with these inputs runs (deciding, and caching, if needed)."""
        key = _shape_key(args, kwargs)
        return self._choice.get(key) or self._decide(key, args, kwargs)

    def _decide(self, key: tuple[Any, ...], args: tuple[Any, ...], kwargs: dict[str, Any]) -> Variant:
        with self._lock:
            if not self._loaded:
                self._loaded = True
                self._load_cache()
                if key in self._choice:
                    self._stats["hits"] += 1
                    return self._choice[key]
            self._stats["misses"] += 1
            sizes = tuple(int(s) for s in self._sizes(args, kwargs))
            exact = next((v for v in self.hinted if v.hint == sizes), None)
            if exact is not None or len(self.variants) == 1:
                variant = exact or self.variants[0]
            elif self.policy == "nearest":
                variant = self.nearest(sizes)
            else:
                variant = self._benchmark(sizes, args, kwargs)
            self._choice[key] = variant
            log.info("%s: %s -> %s (%s)", self.name, list(sizes), variant.name,
                     "exact hint" if exact is not None else self.policy)
            self._store_cache()
            return variant

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

    def _sizes(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> tuple[Any, ...]:
        """The call's sizes to compare with the hints (SymInts while tracing)."""
        sizes = tuple(self.sizes_fn(*args, **kwargs))
        if len(sizes) != self.rank and self.sizes_fn is _default_sizes:
            sizes = _first_tensor_sizes(args, kwargs, self.rank) or sizes
        if len(sizes) != self.rank:
            raise ConfigError(
                f"{self.name}: the call's sizes {list(sizes)} have {len(sizes)} numbers but the hints have "
                f"{self.rank} (e.g. {list(self.hinted[0].hint)}); pass sizes=lambda *args: (...) returning "
                f"{self.rank} numbers to compare with the hints"
            )
        return sizes

    def nearest(self, sizes: Sequence[int]) -> Variant:
        """The variant whose hint has the smallest L1 log2 distance to ``sizes`` (first on ties)."""
        return min(self.hinted, key=lambda v: log2_distance(sizes, v.hint, self._mask))

    def _benchmark(self, sizes: Sequence[int], args: tuple[Any, ...], kwargs: dict[str, Any]) -> Variant:
        t0 = time.perf_counter()
        benchmarker = self.benchmarker or default_benchmarker(_device_type([*args, *kwargs.values()]))
        items = [(v.name, repr(v.name), functools.partial(v.fn, *args, **kwargs)) for v in self.variants]
        best = _fastest(items, kind="variant", prefix=f"{self.name}: ", where=f"sizes {list(sizes)}",
                        benchmarker=benchmarker, size=sizes[0] if sizes else 0, check=self.check,
                        inputs=(args, kwargs),
                        rtol=self.rtol, atol=self.atol, stacklevel=5)
        if best is None:
            raise TableError(f"{self.name}: every variant failed at sizes {list(sizes)}")
        self._stats["benchmarks"] += 1
        self._stats["benchmark_ms"] += (time.perf_counter() - t0) * 1e3
        return self.variants[best]

    # -- stats and persistence -------------------------------------------------------------

    def stats(self) -> dict[str, Any]:
        """Calls, cache hits and misses, benchmarks run and their wall time (ms), shapes
        cached, and how often each variant ran."""
        stats, selected = dict(self._stats), dict(self._selected)
        self._add_fast_counts(stats, selected)
        return {**stats, "shapes": len(self._choice), "policy": self.policy, "selections": selected}

    get_dispatch_stats = stats  # the name seed 003's dispatcher used

    def reset(self) -> None:
        """Forget every per-shape decision and the statistics."""
        self._fast.clear()
        self._choice.clear()
        self._stats.update(calls=0, hits=0, misses=0, benchmarks=0, benchmark_ms=0.0)
        self._selected = {v.name: 0 for v in self.variants}

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

    # -- variant sources ---------------------------------------------------------------------

    @classmethod
    def compiled(
        cls,
        fn: Callable[..., Any],
        hints: Sequence[Sequence[int]],
        make_inputs: Callable[[Sequence[int]], tuple[Any, ...]],
        *,
        dynamic: bool | None = True,
        compile_options: Mapping[str, Any] | None = None,
        library: Sequence[Callable[..., Any]] = (),
        benchmarker: Benchmarker | None = None,
        **options: Any,
    ) -> MultiKernel:
        """One ``torch.compile`` of ``fn`` per hint, each primed by a first call on
        ``make_inputs(hint)`` so Inductor's size-dependent choices specialise to that hint.

        Each compile gets its own copy of ``fn``'s code object: Dynamo keys compiled code by
        code object, so compiling the same function twice would otherwise reuse the first
        hint's graph for every hint. The priming compiles also bypass Inductor's FX-graph and
        AOTAutograd caches: torch 2.11 served the second hint's compile from the first hint's
        cache entry (the key holds the graph, not the size hints), so every "variant" was the
        first hint's code.

        ``library``: equivalent functions that need no compile (eager ``fn``, a cuBLAS or SDPA
        call). At each hint the compile and the library functions are timed on the hint's
        inputs (and checked against the compile's output); the fastest becomes that hint's
        variant, which ``nearest`` picks. The others stay as variants without a hint, which
        the ``benchmark`` policy still times.
        """
        hinted: list[Variant] = []
        spare: dict[str, Variant] = {}
        for hint in hints:
            label = "x".join(map(str, hint))
            compiled = _HintCompile(torch.compile(_fresh_function(fn), dynamic=dynamic, **dict(compile_options or {})),
                                    tuple(hint), make_inputs)
            inputs = make_inputs(hint)
            # compiles with this hint's sizes as Inductor's size hints
            compiled.prime([a for a in inputs if isinstance(a, torch.Tensor)], inputs)
            mine = Variant(compiled, None, name=f"{short_name(fn)}@{label}", meta={"source": "torch.compile"})
            pool = [mine] + [Variant(f, None, meta={"source": "library"}) for f in library]
            best = 0
            if library:
                items = [(v.name, repr(v.name), functools.partial(v.fn, *inputs)) for v in pool]
                found = _fastest(items, kind="variant", prefix="", where=f"hint {list(hint)}",
                                 benchmarker=benchmarker or default_benchmarker(_device_type(inputs)),
                                 size=int(hint[0]), inputs=(inputs, {}),
                                 rtol=options.get("rtol"), atol=options.get("atol"))
                best = 0 if found is None else found
            chosen = pool[best]
            hinted.append(Variant(chosen.fn, tuple(hint), name=chosen.name if best == 0 else f"{chosen.name}@{label}",
                                  meta=chosen.meta))
            for i, v in enumerate(pool):
                if i != best:
                    spare.setdefault(v.name, v)
        chosen_fns = {id(v.fn) for v in hinted}
        spare_list = [v for v in spare.values() if id(v.fn) not in chosen_fns]
        options.setdefault("make_inputs", make_inputs)
        return cls(hinted + spare_list, name=options.pop("name", short_name(fn)), benchmarker=benchmarker, **options)

    @classmethod
    def tuned_configs(
        cls,
        launch: Callable[..., Any],
        configs: Sequence[Mapping[str, Any]],
        hints: Sequence[Sequence[int]],
        make_inputs: Callable[[Sequence[int]], tuple[Any, ...]],
        *,
        benchmarker: Benchmarker | None = None,
        **options: Any,
    ) -> MultiKernel:
        """One variant per hint: ``launch(*args, **config)`` with the config that is fastest
        at ``make_inputs(hint)`` (and agrees with the first config's output). ``launch`` is
        typically a small wrapper that launches a Triton kernel with the config's block sizes
        and ``num_warps``; timing uses the same benchmarker as the engine (CUDA events with an
        L2 flush, as in Triton's ``do_bench``)."""
        if not configs:
            raise ConfigError("tuned_configs needs at least one launch config")
        variants = []
        for hint in hints:
            args = make_inputs(hint)
            items = [(str(i), str(dict(c)), functools.partial(launch, *args, **c)) for i, c in enumerate(configs)]
            best = _fastest(items, kind="config", prefix="", where=f"hint {list(hint)}",
                            benchmarker=benchmarker or default_benchmarker(_device_type(args)), size=int(hint[0]),
                            inputs=(args, {}))
            if best is None:
                raise TableError(f"every launch config failed at hint {list(hint)}")
            config = configs[best]
            label = ",".join(f"{k}={v}" for k, v in config.items())
            variants.append(Variant(functools.partial(launch, **config), tuple(hint),
                                    name=f"{short_name(launch)}@{'x'.join(map(str, hint))}[{label}]",
                                    meta={"config": json.dumps(dict(config), sort_keys=True)}))
        options.setdefault("make_inputs", make_inputs)
        return cls(variants, name=options.pop("name", short_name(launch)), benchmarker=benchmarker, **options)

    def __repr__(self) -> str:
        return f"MultiKernel({self.name!r}, policy={self.policy!r}, variants={[v.name for v in self.variants]})"


def inductor_multi_kernel(
    fn: Callable[..., Any],
    hints: Sequence[int],
    *,
    dynamic: bool | None = True,
    fresh_cache: bool = True,
    **inductor_options: Any,
) -> Callable[..., Any]:
    """``torch.compile(fn)`` with upstream Inductor's own size-hint multi-kernel turned on
    (``triton.multi_kernel=1`` and ``multi_kernel_hints=hints``), to compare with
    :class:`MultiKernel`.

    Upstream's hints are single ints applied to every dynamic dimension, and they only change
    GEMM template choices (with ``max_autotune=True`` in ``inductor_options``); reductions get
    upstream's persistent / non-persistent multi-kernel. The options travel with the compiled
    function, so recompiles keep them. With ``fresh_cache`` (the default) the process's
    Inductor cache directory is pointed at a new empty one first: upstream's multi-kernel
    stores its runtime choices there and has been seen to fail on a warm cache.
    """
    inductor_config = (compat.get("inductor_config") or (None,))[0]
    if not hasattr(inductor_config, "multi_kernel_hints"):
        raise ConfigError(
            f"inductor_multi_kernel: torch {torch.__version__} has no torch._inductor.config.multi_kernel_hints; "
            "use a torch release that has it, or MultiKernel, which does not need it"
        )
    if isinstance(hints, (str, bytes)) or not isinstance(hints, Sequence) or not hints or not all(
        isinstance(h, int) and not isinstance(h, bool) and h > 0 for h in hints
    ):
        raise ConfigError(
            f"inductor_multi_kernel: hints must be a non-empty list of positive ints (upstream applies each to "
            f"every dynamic dimension), e.g. [64, 4096]; got {hints!r}"
        )
    if fresh_cache:
        os.environ["TORCHINDUCTOR_CACHE_DIR"] = tempfile.mkdtemp(prefix="rangedispatch-inductor-")
    options = {"triton.multi_kernel": 1, "multi_kernel_hints": list(hints), **inductor_options}
    return torch.compile(_fresh_function(fn), dynamic=dynamic, options=options)


class _HintCompile:
    """One hint's ``torch.compile``, primed at the hint in each state it is called in.

    Dynamo guards on global state (grad mode) and on each input tensor's dispatch keys as the
    call sees them (inference tensors, the keys a dispatcher kernel runs with excluded). The
    first call in another state (a serving loop under ``torch.inference_mode()``, an opaque
    variant run by a compiled graph) recompiles at *that call's* sizes, and the hint's
    specialisation is lost for every later call in that state. So the first call in each
    state first compiles at the hint's own inputs, made in that state (outside CUDA-graph
    capture, where nothing may compile: there the call goes straight through). The check is
    Dynamo's own: its global-state guard and a ``TensorGuards`` with every size dynamic."""

    def __init__(self, compiled: Callable[..., Any], hint: tuple[int, ...],
                 make_inputs: Callable[[Sequence[int]], tuple[Any, ...]]) -> None:
        self.compiled = compiled
        self.hint = hint
        self.make_inputs = make_inputs
        self.states: list[Callable[[Sequence[Any]], bool]] = []  # one check per primed state
        #: the first primed state's dispatch-key include and exclude sets and grad mode
        self.eager_state: tuple[Any, Any, bool] | None = None
        self._torchdynamo_orig_callable = getattr(compiled, "_torchdynamo_orig_callable", compiled)
        self.__name__ = getattr(self._torchdynamo_orig_callable, "__name__", "compiled")

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        if is_compiling():
            return self.compiled(*args, **kwargs)
        # the usual call passes tensors only: checked as they are, without picking them out
        tensors = args if not kwargs else ()
        if not any(state(tensors) for state in self.states):
            tensors = [a for a in (*args, *kwargs.values()) if isinstance(a, torch.Tensor)]
            if not any(state(tensors) for state in self.states):
                self.prime(tensors)
        return self.compiled(*args, **kwargs)

    def prime(self, tensors: Sequence[torch.Tensor], inputs: Sequence[Any] | None = None) -> None:
        """Compile (or find compiled) at the hint's inputs in the state of a call with ``tensors``."""
        if capturing_cuda_graph():
            return
        with _unshared_compile_caches():
            self.compiled(*(self.make_inputs(self.hint) if inputs is None else inputs))
        self.states.append(_state_check(tensors))
        if self.eager_state is None and not is_compiling():
            state = compat.get("dispatch_key_tls")
            self.eager_state = (*(state.current() if state is not None else (None, None)), torch.is_grad_enabled())


def _state_check(tensors: Sequence[torch.Tensor]) -> Callable[[Sequence[Any]], bool]:
    """Whether a call's tensors and the global state look to Dynamo as ``tensors`` and the
    current state do (every size and stride free)."""
    guard = compat.get("global_state_guard")
    state = None if guard is None else guard()
    same = tensor_check(tensors, [[None] * t.dim() for t in tensors])
    if state is None or same is None:
        mode = (torch.is_grad_enabled(), torch.is_inference_mode_enabled())
        return lambda _ts: (torch.is_grad_enabled(), torch.is_inference_mode_enabled()) == mode
    count = len(tensors)

    def check(ts: Sequence[Any]) -> bool:
        try:
            return len(ts) == count and state.check() and same(*ts)
        except TypeError:  # not all tensors
            return False

    return check


@contextlib.contextmanager
def _unshared_compile_caches() -> Iterator[None]:
    """Turn off Inductor's FX-graph caches and the AOTAutograd cache for one compile."""
    configs = compat.get("inductor_config")
    if configs is None:
        yield
        return
    inductor_config, functorch_config = configs
    autograd = {"enable_autograd_cache": False} if hasattr(functorch_config, "enable_autograd_cache") else {}
    inductor = {k: False for k in ("fx_graph_cache", "fx_graph_remote_cache") if hasattr(inductor_config, k)}
    with inductor_config.patch(inductor), functorch_config.patch(autograd):
        yield


def _device_type(values: Sequence[Any]) -> str:
    return next((v.device.type for v in values if isinstance(v, torch.Tensor)), "cpu")


def _fastest(
    items: Sequence[tuple[str, str, Callable[[], Any]]],
    *,
    kind: str,
    prefix: str,
    where: str,
    benchmarker: Benchmarker,
    size: int,
    inputs: tuple[Sequence[Any], Mapping[str, Any]] = ((), {}),
    check: bool = True,
    rtol: float | None = None,
    atol: float | None = None,
    stacklevel: int = 3,
) -> int | None:
    """Index of the fastest of ``(job name, label, call)`` items, or ``None`` if all fail.

    Each runs once first: one that raises, writes to one of ``inputs`` that the first one
    does not write to, or (with ``check``) disagrees with the first that ran, is dropped with a
    warning; the rest are timed together by the measurement core."""
    args, kwargs = tuple(inputs[0]), dict(inputs[1])
    sync = _sync_for([*args, *kwargs.values()])
    expected, first, jobs, kept, owned = None, None, [], [], []
    for i, (name, label, call) in enumerate(items):
        run = lambda *_a, _call=call, **_k: _call()  # noqa: E731 - the inputs are bound in the call
        if first is None:
            try:
                expected, owned = reference_run(run, args, kwargs, sync=sync)
            except Exception as exc:
                warnings.warn(f"{prefix}{kind} {label} raised {type(exc).__name__}: {exc} at {where}; "
                              "it is not used there", RuntimeWarning, stacklevel=stacklevel)
                continue
            first = label
        else:
            _, reason = run_candidate(run, args, kwargs, expected, owned=owned, rtol=rtol, atol=atol,
                                      check=check, sync=sync)
            if reason is not None:
                if reason.startswith("wrong output"):
                    reason = f"differs from {first} at {where} {reason[len('wrong output '):]}"
                else:
                    reason = f"{reason} at {where}"
                warnings.warn(f"{prefix}{kind} {label} {reason}; it is not used there",
                              RuntimeWarning, stacklevel=stacklevel)
                continue
        jobs.append(Job(name, size, call))
        kept.append(i)
    if not jobs:
        return None
    measured = measure_jobs(benchmarker, jobs, warm=True)
    times = [m.ms if m.status in (OK, RACED) else math.inf for m in measured]
    if not any(math.isfinite(t) for t in times):
        return None
    return kept[min(range(len(jobs)), key=times.__getitem__)]


def _sync_for(values: Sequence[Any]) -> Callable[[], None] | None:
    if _device_type(values) != "cuda":
        return None
    return torch.cuda.synchronize


def _fresh_function(fn: Callable[..., Any]) -> Callable[..., Any]:
    """A copy of a Python function with its own code object (so Dynamo compiles it anew)."""
    if isinstance(fn, types.FunctionType):
        copy = types.FunctionType(fn.__code__.replace(), fn.__globals__, fn.__name__, fn.__defaults__, fn.__closure__)
        copy.__kwdefaults__ = fn.__kwdefaults__
        copy.__qualname__ = fn.__qualname__
        return copy
    if isinstance(fn, functools.partial):
        return functools.partial(_fresh_function(fn.func), *fn.args, **fn.keywords)
    forward = getattr(fn, "forward", None)  # an nn.Module: compile a fresh bound forward
    if forward is not None and isinstance(getattr(forward, "__func__", None), types.FunctionType):
        return types.MethodType(_fresh_function(forward.__func__), fn)
    return fn


def _read(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise TableError(f"cannot read multi-kernel decisions from {path}: {exc}") from exc
    if not isinstance(data, dict):
        raise TableError(f"{path} does not hold a multi-kernel table")
    return data
