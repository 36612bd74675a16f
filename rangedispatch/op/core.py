"""The range-dispatched op: candidates, tuning on first use, and the eager hot path.

:class:`RangeDispatchOp` is what ``@range_dispatch`` returns and what
``register_custom_op_autotuning`` installs as a custom op's kernel. Its eager path is one
``shape[dim]`` read, one ``bisect`` over a tuple of boundaries and one call; when every
range picks the same candidate there is no size read at all.
"""

from __future__ import annotations

import functools
import logging
import sys
import threading
import warnings
from bisect import bisect_right
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

from torch.compiler import is_compiling

from ..decide import cache as cache_mod
from .. import compat
from . import distributed
from .distributed import check_mode
from ..decide.candidates import Candidate, short_name
from ..decide.config import (CustomOpConfig, DispatchSpec, Plan, build_plan, check_input_gen_fns, dims_by_tensor,
                     op_parameters)
from ..decide.environment import Environment
from ..errors import ConfigError, TableError
from ..route.fastcall import MAX_OTHER_SIGNATURES, MAX_TENSOR_GUARDS
from ..decide.inputs import CallTemplate, InputFactory, TensorSpec, signature_kinds
from ..decide.ranges import Range, map_tree, size_getter, tree_leaves
from ..decide.table import TuningTable
from ..measure.timing import Benchmarker, capturing_cuda_graph, default_benchmarker
from ..decide.discover import AutoSettings, refine_range, tune_auto
from ..decide.profile import SizeProfile, profile_path
from ..decide.tuner import TunerSettings, log_summary, tune_plan

log = logging.getLogger("rangedispatch")

_KEYWORD_ONLY = sys.maxsize


class RangeDispatchOp:
    """An op with a reference implementation and candidates, dispatched per size range.

    Build it with :func:`rangedispatch.range_dispatch` or
    :func:`rangedispatch.register_custom_op_autotuning`; call it like the reference.

    Example:
        >>> import torch, rangedispatch as rd
        >>> @rd.range_dispatch(dispatch_on=("x", 0), split_points=[64])
        ... def double(x):
        ...     return x * 2
        >>> @double.register_impl
        ... def double_add(x):
        ...     return x + x
        >>> double(torch.ones(3)).tolist()
        [2.0, 2.0, 2.0]
    """

    def __init__(
        self,
        reference: Callable[..., Any],
        *,
        name: str | None = None,
        configs: Sequence[Any] = (),
        dispatch_on: Any = None,
        split_points: Any = None,
        ranges: Any = None,
        tie: Any = None,
        input_gen_fns: Mapping[str, Callable[..., Any]] | None = None,
        config_generator: Callable[[dict[str, Any]], Sequence[Any]] | None = None,
        settings: TunerSettings | None = None,
        benchmarker: Benchmarker | None = None,
        cache: bool = True,
        traced: bool = True,
        opaque_call: Callable[..., Any] | None = None,
        distributed: str = "broadcast",
        process_group: Any = None,
    ) -> None:
        if not callable(reference):
            raise ConfigError(f"Expected a callable reference implementation but got {reference!r}")
        self.reference_fn = reference
        self.name = name or short_name(reference)
        self._params = op_parameters(reference)
        self._ref = Candidate(reference, (), short_name(reference), is_reference=True)
        self.settings = settings or TunerSettings()
        self.auto: AutoSettings | None = None
        if isinstance(split_points, str):
            if split_points != "auto":
                raise ConfigError(f"Expected split_points='auto' or a list of sizes but got {split_points!r}")
            if dispatch_on is None:
                raise ConfigError("Expected dispatch_on with split_points='auto'; name the size to split, "
                                  "e.g. dispatch_on=('x', 1)")
            if ranges is not None:
                raise ConfigError("Expected split_points='auto' or ranges, not both")
            self.auto = AutoSettings(hi=self.settings.upper_bound)
            split_points = None
        self.profile: SizeProfile | None = None
        self._recording = False
        self._plan_args = dict(dispatch_on=dispatch_on, split_points=split_points, ranges=ranges, tie=tie)
        self._configs: list[Any] = list(configs)
        self._config_generator = config_generator
        self.input_gen_fns = check_input_gen_fns(input_gen_fns, self._params)
        self.benchmarker = benchmarker
        self.use_cache = cache
        self.traced = traced
        self._compiled_dispatch = "cond"
        self._opaque_call = opaque_call
        self.distributed = check_mode(distributed)  # how ranks agree on tables (see .distributed)
        self.process_group = process_group
        self._lock = threading.RLock()
        self._plan: Plan | None = None
        self._table: TuningTable | None = None
        self._template: CallTemplate | None = None
        self._tensor_checks: list[Callable[..., bool]] = []  # C-level signature guards (fastcall)
        self._other_checks: dict[str, list[Callable[..., bool]]] = {}  # the same, for other signatures' tables
        self._by_name: dict[str, Candidate] = {self._ref.name: self._ref}
        self._warned_capture = False
        self.max_signatures = 8  # tables per op, one per input signature
        self._compiled_plans: dict[str, Any] = {}  # the traced dispatch per signature (traced.compiled_plan)
        self._compiled_outputs: dict[str, str] = {}  # what it returns, per signature (traced.output_kind)
        self._custom_op: Any = None  # the CustomOpDef whose kernel this op is, if any
        from ..trace.traced import register_op

        self._rd_key = register_op(self)
        if self._configs and config_generator is None:
            self._plan = self._build_plan(self._configs)
        elif self._plan_args["dispatch_on"] is not None:
            # validate the dispatch spec now, before any candidate is registered
            self._build_plan([CustomOpConfig()])
        self._set_untuned()

    # --- registration ----------------------------------------------------------------
    def register_impl(
        self,
        fn: Callable[..., Any] | None = None,
        /,
        *,
        name: str | None = None,
        ranges: Sequence[Any] | None = None,
        **params: Any,
    ) -> Any:
        """Add a candidate (usable as ``@op.register_impl`` or ``@op.register_impl(k=4)``).

        Args:
            fn: the implementation, with the reference's signature.
            name: name in tables and logs (default: the function's name plus params).
            ranges: restrict the candidate to these ranges (default: every range).
            **params: keyword arguments bound to every call of ``fn``.
        """

        def add(impl: Callable[..., Any]) -> Callable[..., Any]:
            if ranges is not None:
                for rng in ranges:
                    self._configs.append(_RangedImpl(impl, rng, params, name))
            else:
                self._configs.append(_RangedImpl(impl, None, params, name))
            with self._lock:
                self._plan = self._build_plan(self._configs)
                if self._table is not None:
                    warnings.warn(
                        f"{self.name}: candidate {getattr(impl, '__name__', impl)!r} registered after "
                        "tuning; the table is discarded and the op re-tunes on its next call",
                        RuntimeWarning,
                        stacklevel=3,
                    )
                self._set_untuned()
            return impl

        return add if fn is None else add(fn)

    def _build_plan(self, configs: Sequence[Any]) -> Plan:
        converted = []
        restricted: dict[Any, list[Range]] = {}
        for cfg in configs:
            if isinstance(cfg, _RangedImpl):
                converted.append(CustomOpConfig(cfg.fn, **cfg.params))
                if cfg.range is not None:
                    restricted.setdefault(id(converted[-1]), []).append(cfg.range)
            else:
                converted.append(cfg)
        plan = build_plan(converted, reference=self.reference_fn, ref_name=self._ref.name, **self._plan_args)
        plan = _apply_names_and_restrictions(plan, configs, self._ref)
        self._by_name = {self._ref.name: self._ref, **{c.name: c for c in plan.all_candidates}}
        return plan

    # --- state -----------------------------------------------------------------------
    @property
    def plan(self) -> Plan | None:
        return self._plan

    @property
    def table(self) -> TuningTable | None:
        """The tuning table in force (``None`` before the first call or ``tune``)."""
        return self._table

    @property
    def dispatch(self) -> DispatchSpec | None:
        return self._plan.dispatch if self._plan is not None else None

    @property
    def candidates(self) -> dict[str, Candidate]:
        """Every candidate by name, the reference included."""
        return dict(self._by_name)

    def _set_untuned(self) -> None:
        self._table = None
        self._tables: dict[str, TuningTable] = {}
        self._routes: dict[str, Any] = {}  # by signature
        self._key_routes: dict[Any, Any] = {}  # by _call_key, for calls off the main signature
        self._templates: dict[str, CallTemplate] = {}  # the example each table was tuned on
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
        template, tree and key of :func:`~rangedispatch.fastcall.generate_call`)."""
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

    def _positional(self) -> list[str]:
        import inspect

        try:
            sig = inspect.signature(self.reference_fn)
        except (TypeError, ValueError):
            return []
        return [p.name for p in sig.parameters.values() if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]

    @property
    def compiled_dispatch(self) -> str:
        """How the dispatch goes into ``torch.compile`` graphs.

        ``"cond"`` (default): nested ``torch.cond`` on the symbolic size, one graph for every
        size, whose branches Inductor writes inline (:mod:`rangedispatch.inline_cond`); where
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

    def reset(self) -> None:
        """Forget the table; the next call tunes again (or loads from the cache)."""
        with self._lock:
            self._set_untuned()
            self._template = None
            self._tensor_checks = []
            self._other_checks = {}

    # --- the hot path ----------------------------------------------------------------
    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        # the generic path; a tuned op gets a generated __call__ with its exact signature
        if is_compiling():
            from ..trace.traced import traced_call

            return traced_call(self, args, kwargs)
        return self.eager(*args, **kwargs)

    def eager(self, *args: Any, **kwargs: Any) -> Any:
        """The eager dispatch without the compile check (a custom op's kernel)."""
        if self._awaiting_example:
            return self._adopt(args, kwargs)
        return self._along(self._route, args, kwargs)

    @property
    def _awaiting_example(self) -> bool:
        """A table loaded (:meth:`load_table`, or from the cache) and no call seen since: no call
        template yet, so its first eager call adopts it."""
        return self._template is None and self._table is not None

    def _adopt(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        """The first eager call after :meth:`load_table`: a call with the table's signature
        becomes its example (the signature guard and the generated call follow); another
        signature gets its own table."""
        template = CallTemplate.from_call(self.reference_fn, args, kwargs)
        with self._lock:
            table = self._table
            if self._awaiting_example and template.signature(self.dispatch) == table.signature:
                self._template = template
                self._templates[table.signature] = template
                self._learn_guard(args, kwargs, template, self._tensor_checks)
                self._specialise(*self._route)
                return self._along(self._route, args, kwargs)
        return self._other_signature(args, kwargs)

    def _along(self, route: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        """Call the target of ``route`` (bounds, fns) for this call's dispatch size."""
        bounds, fns = route
        if bounds:
            try:
                t = args[self._pos]
            except IndexError:
                t = kwargs[self._tensor]
            return fns[bisect_right(bounds, t.shape[self._dim])](*args, **kwargs)
        return fns[0](*args, **kwargs)

    def _first_call(self, *args: Any, **kwargs: Any) -> Any:
        if capturing_cuda_graph():
            if not self._warned_capture:
                self._warned_capture = True
                warnings.warn(
                    f"{self.name}: first called inside CUDA-graph capture, where timing is "
                    "impossible; running the reference. Call the op (or .tune) once before capture",
                    RuntimeWarning,
                    stacklevel=3,
                )
            return self.reference_fn(*args, **kwargs)
        with self._lock:
            if self._table is None:
                self._setup(args, kwargs, force=False)
        return self.eager(*args, **kwargs)

    # --- tuning ----------------------------------------------------------------------
    def tune(self, *args: Any, force: bool = False, profile: Any = None, **kwargs: Any) -> TuningTable:
        """Tune on example inputs (other dims, dtypes and devices are taken from them).

        Args:
            *args, **kwargs: an example call of the op.
            force: re-benchmark even if a valid cached table exists.
            profile: recorded sizes (a :class:`SizeProfile` or the path of a saved one):
                samples and automatic split points go where the traffic is.
        """
        if profile is not None:
            self.profile = profile if isinstance(profile, SizeProfile) else SizeProfile.load(profile)
        with self._lock:
            return self._setup(args, kwargs, force=force)

    def _setup(self, args: Sequence[Any], kwargs: Mapping[str, Any], *, force: bool) -> TuningTable:
        table, template = self._tune_table(args, kwargs, force=force)
        self._template = template
        self._tensor_checks = []
        self._other_checks.pop(table.signature, None)
        self._learn_guard(args, kwargs, template, self._tensor_checks)
        self._templates[table.signature] = template
        self._install(table)
        return table

    def _learn_guard(self, args: Sequence[Any], kwargs: Mapping[str, Any], template: CallTemplate | None,
                     checks: list[Callable[..., bool]]) -> bool:
        """Add to ``checks`` a C-level signature guard built from this call's tensors (see
        fastcall); the caller has checked that the call has ``template``'s signature."""
        import inspect

        from ..route.fastcall import plain_params, tensor_guard, tensor_params

        if template is None or len(checks) >= MAX_TENSOR_GUARDS or capturing_cuda_graph():
            return False
        names = tensor_params(template, plain_params(self.reference_fn))
        try:
            bound = inspect.signature(self.reference_fn).bind(*args, **kwargs).arguments
        except (TypeError, ValueError):
            return False
        import torch

        tensors = [bound.get(n) for n in names]
        if not names or not all(type(t) in (torch.Tensor, torch.nn.Parameter) for t in tensors):
            return False
        check = tensor_guard(tensors, template, names, self._resized)
        if check is None:
            return False
        checks.append(check)
        return True

    def _tune_table(self, args: Sequence[Any], kwargs: Mapping[str, Any], *,
                    force: bool) -> tuple[TuningTable, CallTemplate]:
        """The table for this call's signature: from the cache, or tuned (and cached)."""
        import torch

        template = CallTemplate.from_call(self.reference_fn, args, kwargs)
        if self._config_generator is not None:
            self._plan = self._generate_plan(args, kwargs)
        if self._plan is None:
            raise ConfigError(
                f"{self.name}: Expected at least one candidate before the first call but none is "
                "registered; add one with @op.register_impl or pass configs=[...]"
            )
        template.check(self._plan.dispatch)
        device = _device_of(template, self._plan.dispatch)
        environment = Environment.current(device)
        factory = InputFactory(template, self._plan.dispatch, self.input_gen_fns, op_name=self.name)
        fingerprints = {self._ref.name: self._ref.fingerprint,
                        **{c.name: c.fingerprint for c in self._plan.all_candidates}}
        signature = template.signature(self._plan.dispatch)
        path = self._cache_path(environment, fingerprints, signature)
        group = distributed.group_for(self)
        if group is not None:  # every rank must be about to tune the same thing
            distributed.agree(self.name, {
                "candidates": fingerprints, "ranges": [str(r) for r in self._plan.ranges],
                "dispatch": str(self._plan.dispatch), "signature": signature,
                "environment": environment.to_json(), "settings": self.settings.to_json(),
                "mode": self.distributed, "force": force}, group)
        if not force:
            cached = cache_mod.load_cached(path, environment=environment, candidates=fingerprints,
                                           signature=signature, table_type=self._table_type)
            if cached is not None and not self._fits(cached):
                cached = None
            if group is not None:  # rank 0's cache decides for every rank
                cached = distributed.from_rank0(cached, group)
            if cached is not None:
                log.info("%s: loaded tuning table from %s (no benchmarking)", self.name, path)
                log_summary(cached)
                return cached, template
        benchmarker = self.benchmarker or default_benchmarker(getattr(device, "type", str(device)),
                                                              cuda_graphs=self.settings.cuda_graphs)
        common = dict(op_name=self.name, plan=self._plan, reference=self._ref, factory=factory,
                      benchmarker=benchmarker, settings=self.settings, environment=environment,
                      device_type=getattr(device, "type", str(device)), profile=self.profile)
        with compat.no_dispatch_modes(), torch.no_grad():  # real tensors while tracing
            table = self._run_tuner(common)
        if path is not None:
            try:
                table.save(path)
            except OSError as exc:
                warnings.warn(f"{self.name}: could not write tuning cache {str(path)!r}: {exc}",
                              RuntimeWarning, stacklevel=3)
        return table, template

    _table_type: type = TuningTable

    def _run_tuner(self, common: dict[str, Any]) -> TuningTable:
        """Tune with ``common`` (the tuner's arguments), collectively under torch.distributed."""
        if self.auto is not None:
            return distributed.tune_consistently(self, common, functools.partial(tune_auto, auto=self.auto))
        return distributed.tune_consistently(self, common, functools.partial(tune_plan, refine=refine_range))

    def _generate_plan(self, args: Sequence[Any], kwargs: Mapping[str, Any]) -> Plan:
        import inspect

        import torch

        bound = inspect.signature(self.reference_fn).bind(*args, **kwargs).arguments
        tensors = {k: v for k, v in bound.items() if isinstance(v, torch.Tensor)}
        assert self._config_generator is not None
        configs = list(self._config_generator(tensors))
        return self._build_plan(configs)

    def _cache_path(self, environment: Environment, fingerprints: Mapping[str, str], signature: str) -> Path | None:
        if not self.use_cache:
            return None
        assert self._plan is not None
        key = cache_mod.cache_key({
            "op": self.name,
            "reference": self._ref.fingerprint,
            "candidates": fingerprints,
            "ranges": {str(r): sorted(c.name for c in cs) for r, cs in self._plan.candidates.items()},
            "dispatch": repr(getattr(self._plan.dispatch, "axes", self._plan.dispatch)),  # with ties and bounds
            "signature": signature,
            "environment": environment.to_json(),
            "settings": self.settings.to_json(),
            "input_gen_fns": {k: _fn_id(v) for k, v in sorted(self.input_gen_fns.items())},
            "auto": self.auto.to_json() if self.auto is not None else None,
            "profile": sorted(self.profile.counts.items()) if self.profile is not None and self.profile.counts else None,
        })
        return cache_mod.cache_path(self.name, key)

    def _fits(self, table: TuningTable) -> bool:
        assert self._plan is not None
        ranges = [r.range for r in table.results]
        ranges_ok = (self.auto is not None or ranges == list(self._plan.ranges)
                     or (self.settings.refine and _refines(ranges, self._plan.ranges)))
        names_ok = all(r.winner in self._by_name for r in table.results)
        return ranges_ok and names_ok

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

    @property
    def tables(self) -> dict[str, TuningTable]:
        """Every table in force, by input signature (dtypes, devices, non-dispatch dims)."""
        return dict(self._tables)

    def _miss(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        """Where the generated ``__call__`` sends a call its guard refuses."""
        if is_compiling():  # a non-strict export's fake tensors
            from ..trace.traced import traced_call

            return traced_call(self, args, kwargs)
        return self._other_signature(args, kwargs)

    def _other_signature(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        """A call whose signature differs from the main table's: its own table (tuned on
        first sight, at most ``max_signatures`` of them), never another signature's. Routes are
        found by a cheap key of the call (dtypes, devices, shapes without the dispatch dims,
        scalar values); the full signature is built only the first time a key is seen."""
        key = self._call_key(args, kwargs)
        found = self._key_routes.get(key)
        if found is None:
            with self._lock:
                found = self._other_signature_route(args, kwargs)
            if not capturing_cuda_graph():  # tuned later, outside capture
                self._key_routes[key] = found
        route, signature = found
        if route is self._route:
            if 0 < len(self._tensor_checks) < MAX_TENSOR_GUARDS:
                # the main signature, refused by the C-level guard (grad mode, a Parameter, ...)
                with self._lock:
                    if route is self._route and self._learn_guard(args, kwargs, self._template, self._tensor_checks):
                        self._specialise(*self._route)
        elif self._tensor_checks and signature in self._routes and self._may_learn_other(signature):
            # another signature's table: the generated call checks its own C-level guard too
            with self._lock:
                checks = self._other_checks.setdefault(signature, [])
                if self._learn_guard(args, kwargs, self._templates.get(signature), checks):
                    self._specialise(*self._route)
                elif not checks:
                    del self._other_checks[signature]
        return self._along(route, args, kwargs)

    def _may_learn_other(self, signature: str) -> bool:
        """Whether another signature's table may get one more C-level guard: a few per table,
        for a few tables."""
        known = self._other_checks.get(signature)
        return len(known) < MAX_TENSOR_GUARDS if known is not None else len(self._other_checks) < MAX_OTHER_SIGNATURES

    def _other_signature_route(self, args: Sequence[Any], kwargs: Mapping[str, Any]) -> tuple[Any, str]:
        """The route of this call's signature, its table tuned first if it has none, and
        the signature."""
        template = CallTemplate.from_call(self.reference_fn, args, kwargs)
        signature = template.signature(self.dispatch)
        route = self._routes.get(signature)
        if route is None:
            return self._route_for_new_signature(args, kwargs, signature), signature
        if signature in self._tables:  # a loaded table has no example until a call like this one
            self._templates.setdefault(signature, template)
        return route, signature

    def _call_key(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> tuple[Any, ...]:
        import torch

        resized = self._resized
        params = self._params

        def part(name: Any, value: Any) -> Any:
            if isinstance(value, torch.Tensor):
                shape = list(value.shape)
                for dim in resized.get(name, ()):
                    if -len(shape) <= dim < len(shape):
                        shape[dim] = -1
                return value.dtype, value.device.type, tuple(shape)
            return value if isinstance(value, (bool, int, float, str, type(None))) else type(value)

        return (tuple(part(params[i] if i < len(params) else i, a) for i, a in enumerate(args)),
                tuple((k, part(k, v)) for k, v in kwargs.items()))

    def _route_for_new_signature(self, args: tuple[Any, ...], kwargs: dict[str, Any], signature: str) -> Any:
        if capturing_cuda_graph():  # no tuning inside capture, and nothing kept: tuned after it
            warnings.warn(
                f"{self.name}: a call with input signature {signature} has no table and cannot be tuned "
                f"inside CUDA-graph capture; running the reference {self._ref.name!r}. Tune it beforehand "
                "with op.tune(*example)", RuntimeWarning, stacklevel=4)
            return ((), (self.reference_fn,))
        if len(self._tables) >= self.max_signatures:
            warnings.warn(
                f"{self.name}: a call with input signature {signature} has no table and the op already "
                f"holds {len(self._tables)} tables (max_signatures); running the reference {self._ref.name!r} "
                "for it. Tune it beforehand with op.tune(*example) or raise op.max_signatures",
                RuntimeWarning,
                stacklevel=4,
            )
            route: Any = ((), (self.reference_fn,))
        else:
            log.info("%s: new input signature %s; tuning a table for it", self.name, signature)
            table, template = self._tune_table(args, kwargs, force=False)
            self._tables[signature] = table
            self._templates[signature] = template
            route = self._route_of(table)
        self._routes[signature] = route
        return route

    def record_sizes(self, on: bool = True) -> SizeProfile:
        """Count the dispatch size of every eager call in ``op.profile`` (a compact histogram,
        one dict update per call); ``op.save_table(path)`` saves it next to the table."""
        with self._lock:
            if self.profile is None:
                self.profile = SizeProfile()
            self._recording = bool(on) and self.dispatch is not None
            if self._table is not None:
                self._specialise(*self._route)
        return self.profile

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

    def _trial_size(self, template: CallTemplate) -> Any:
        """A size to trace the dispatch at once, to see that it builds (not 0 or 1: those
        specialise)."""
        return max(2, template.dispatch_size(self.dispatch))

    def _gap_fn(self, rng: Any) -> Callable[..., Any]:
        tuned = ", ".join(str(r) for r in (self._plan.ranges if self._plan else ()))
        return self._warning_reference(
            lambda args, kwargs: f"{self.name}: {self.dispatch} size in {rng} is outside every tuned range ({tuned}); "
                                 f"running the reference {self._ref.name!r}. Add a range covering it")

    def _warning_reference(self, message: Callable[[tuple[Any, ...], dict[str, Any]], str]) -> Callable[..., Any]:
        """The reference, warning once (``message(args, kwargs)``) the first time it runs:
        what sizes outside every tuned range run."""
        ref = self.reference_fn
        state = {"warned": False}

        @functools.wraps(ref)
        def gap(*args: Any, **kwargs: Any) -> Any:
            if not state["warned"]:
                state["warned"] = True
                warnings.warn(message(args, kwargs), RuntimeWarning, stacklevel=3)
            return ref(*args, **kwargs)

        return gap

    # --- tables ----------------------------------------------------------------------
    def save_table(self, path: str | Path) -> Path:
        """Write the table in force to ``path`` (atomically), and the recorded sizes, if any,
        to ``<path>.sizes.json`` beside it."""
        if self._table is None:
            raise TableError(f"{self.name}: Expected a tuned op but it has no table yet; call it or .tune() first")
        if self.profile is not None and self.profile.counts:
            self.profile.save(profile_path(path))
        return self._table.save(path)

    def load_table(self, path: str | Path, *, allow_other_environment: bool = False) -> TuningTable:
        """Use a saved table instead of tuning; it must match the op's candidates and ranges.

        Args:
            path: a file written by :meth:`save_table` or ``rangedispatch tune``.
            allow_other_environment: accept a table timed on another device or library
                version (a warning is still issued).
        """
        table = self._table_type.load(path)
        if self._plan is None:
            raise TableError(f"{self.name}: Expected candidates before loading a table; register them first")
        fingerprints = {self._ref.name: self._ref.fingerprint,
                        **{c.name: c.fingerprint for c in self._plan.all_candidates}}
        problems = cache_mod.mismatch(table, environment=None, candidates=fingerprints, signature=None)
        if problems or not self._fits(table):
            raise TableError(
                f"{self.name}: table {str(path)!r} does not match this op "
                f"({'; '.join(problems) or 'different ranges'}); re-tune with op.tune(...)"
            )
        if self._template is not None:
            device = _device_of(self._template, self._plan.dispatch)
            diffs = table.environment.differences(Environment.current(device))
            if diffs:
                if not allow_other_environment:
                    raise TableError(
                        f"{self.name}: table {str(path)!r} was tuned elsewhere ({'; '.join(diffs)}); "
                        "pass allow_other_environment=True to use it anyway"
                    )
                warnings.warn(f"{self.name}: using a table tuned elsewhere ({'; '.join(diffs)})",
                              RuntimeWarning, stacklevel=2)
        side = profile_path(path)
        if side.exists():
            self.profile = SizeProfile.load(side)
        with self._lock:
            self._install(table)
        return table

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
        lines.append(f"  table for input signature {self._table.signature or '(unknown)'}"
                     + (f" ({len(self._tables) - 1} other signature table(s): op.tables)" if len(self._tables) > 1 else ""))
        return "\n".join(lines)

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


class _RangedImpl:
    """A candidate registered through ``register_impl``, possibly restricted to one range."""

    def __init__(self, fn: Callable[..., Any], rng: Any, params: Mapping[str, Any], name: str | None) -> None:
        if not callable(fn):
            raise ConfigError(f"Expected a callable implementation but got {fn!r}")
        from ..decide.ranges import parse_range

        self.fn, self.params, self.name = fn, dict(params), name
        self.range = parse_range(rng, name="ranges") if rng is not None else None


def _refines(ranges: Sequence[Range], given: Sequence[Range]) -> bool:
    """Whether ``ranges`` split ``given`` (contiguous, same ends, every given bound kept)."""
    if not ranges or not given or ranges[0].lo != given[0].lo or ranges[-1].hi != given[-1].hi:
        return False
    if any(a.hi != b.lo for a, b in zip(ranges, ranges[1:])):
        return False
    bounds = {r.lo for r in ranges}
    return all(g.lo in bounds for g in given)


def _apply_names_and_restrictions(plan: Plan, configs: Sequence[Any], ref: Candidate) -> Plan:
    """Apply ``register_impl``'s explicit names and per-range restrictions to a plan."""
    named = {(id(c.fn), tuple(sorted(c.params.items(), key=lambda p: p[0]))): c.name
             for c in configs if isinstance(c, _RangedImpl) and c.name}
    allowed: dict[int, set[Range]] = {}
    for c in configs:
        if isinstance(c, _RangedImpl):
            s = allowed.setdefault(id(c.fn), set())
            if c.range is None:
                s.add(None)  # type: ignore[arg-type]
            else:
                s.add(c.range)
    if not named and not any(None not in s for s in allowed.values()):
        return plan
    renames: dict[str, Candidate] = {}
    for cand in plan.all_candidates:
        key = (id(cand.fn), tuple(sorted(cand.params, key=lambda p: p[0])))
        if key in named:
            renames[cand.name] = Candidate(cand.fn, cand.params, named[key], cand.is_reference)
    per_range = {}
    for rng, cands in plan.candidates.items():
        kept = []
        for cand in cands:
            ok = allowed.get(id(cand.fn))
            if ok is not None and None not in ok and not any(rng.within(r) for r in ok):
                continue
            kept.append(renames.get(cand.name, cand))
        per_range[rng] = tuple(kept)
    return Plan(plan.dispatch, plan.ranges, per_range)


def _device_of(template: CallTemplate, spec: DispatchSpec | None) -> Any:
    if spec is not None:
        value = template.get(spec.tensor)
        if isinstance(value, TensorSpec):
            return value.device
    for value in list(template.args) + list(template.kwargs.values()):
        if isinstance(value, TensorSpec):
            return value.device
    import torch

    return torch.device("cpu")


def _fn_id(fn: Callable[..., Any]) -> str:
    from ..decide.candidates import source_hash

    return f"{getattr(fn, '__qualname__', type(fn).__name__)}:{source_hash(fn)}"

