"""The range-dispatched op: candidates, tuning on first use, and the eager hot path.

:class:`RangeDispatchOp` is what ``@range_dispatch`` returns and what
``register_custom_op_autotuning`` installs as a custom op's kernel. Its eager path is one
``shape[dim]`` read, one ``bisect`` over a tuple of boundaries and one call; when every
range picks the same candidate there is no size read at all.
"""

from __future__ import annotations

import dataclasses
import functools
import logging
import threading
import warnings
from bisect import bisect_right
from typing import Any, Callable, Mapping, Sequence

from torch.compiler import is_compiling

from ..decide.cache import check_mode as check_cache_mode
from ..decide.candidates import Candidate, short_name
from ..decide.config import (
    CustomOpConfig,
    DispatchSpec,
    Plan,
    build_plan,
    check_input_gen_fns,
    op_parameters,
)
from ..decide.discover import AutoSettings
from ..decide.inputs import CallTemplate
from ..decide.profile import SizeProfile
from ..decide.ranges import Range
from ..decide.table import TuningTable
from ..decide.tuner import TunerSettings
from ..errors import ConfigError
from ..measure.timing import Benchmarker, capturing_cuda_graph
from .distributed import check_mode
from .explain import ExplainMixin
from .signatures import SignaturesMixin
from .tables import TablesMixin
from .tracing import TracingMixin
from .writing import WritingMixin

log = logging.getLogger("rangedispatch")

class RangeDispatchOp(TablesMixin, SignaturesMixin, WritingMixin, TracingMixin, ExplainMixin):
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
        cache: bool | str = True,
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
        self.use_cache = check_cache_mode(cache)
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

    def _positional(self) -> list[str]:
        import inspect

        try:
            sig = inspect.signature(self.reference_fn)
        except (TypeError, ValueError):
            return []
        return [p.name for p in sig.parameters.values() if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]

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
                pending = self._provenance.get(table.signature)
                if pending is not None and pending.status == "pending" and \
                        not self._check_loaded(table, template, pending.path or "?").passed:
                    self._setup(args, kwargs, force=True)
                    self._provenance[table.signature] = dataclasses.replace(
                        self._provenance[table.signature], why="the loaded table failed its spot check")
                    return self._along(self._route, args, kwargs)
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



class _RangedImpl:
    """A candidate registered through ``register_impl``, possibly restricted to one range."""

    def __init__(self, fn: Callable[..., Any], rng: Any, params: Mapping[str, Any], name: str | None) -> None:
        if not callable(fn):
            raise ConfigError(f"Expected a callable implementation but got {fn!r}")
        from ..decide.ranges import parse_range

        self.fn, self.params, self.name = fn, dict(params), name
        self.range = parse_range(rng, name="ranges") if rng is not None else None




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





