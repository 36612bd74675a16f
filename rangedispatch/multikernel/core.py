"""The multi-kernel dispatcher itself: the call, the choice per shape under each policy, its
statistics (see :mod:`rangedispatch.multikernel`)."""

from __future__ import annotations

import functools
import logging
import threading
import time
from typing import Any, Callable, Sequence

import torch
from torch.compiler import is_compiling, is_dynamo_compiling

from ..decide.candidates import short_name
from ..errors import ConfigError, ConfigTypeError, TableError
from ..measure.timing import Benchmarker, default_benchmarker
from ..route.fastcall import MAX_TENSOR_GUARDS, tensor_check
from .builders import BuildersMixin
from .graph import _TRACEABLE, GraphMixin
from .persist import PersistMixin
from .variants import (
    IN_GRAPH,
    POLICIES,
    Variant,
    _Counter,
    _default_sizes,
    _device_type,
    _fastest,
    _first_tensor_sizes,
    _shape_key,
    log2_distance,
)

log = logging.getLogger("rangedispatch")


class MultiKernel(GraphMixin, PersistMixin, BuildersMixin):
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

    def __repr__(self) -> str:
        return f"MultiKernel({self.name!r}, policy={self.policy!r}, variants={[v.name for v in self.variants]})"
