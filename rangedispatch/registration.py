"""Public entry points: ``register_custom_op_autotuning`` and the ``@range_dispatch`` decorator."""

from __future__ import annotations

from typing import Any, Callable, Mapping, Sequence

from . import compat
from .compat import is_custom_op_def
from .errors import ConfigError, ConfigTypeError, describe
from .trace import traced as _traced_module  # noqa: F401  (its custom op and Dynamo hooks register once, at import)
from .op.grid import GridDispatchOp, is_grid_request
from .op.core import RangeDispatchOp
from .measure.timing import Benchmarker
from .decide.tuner import OBJECTIVES, TunerSettings


def register_custom_op_autotuning(
    custom_op: Any,
    configs: Sequence[Any] | None = None,
    *,
    config_generator: Callable[[dict[str, Any]], Sequence[Any]] | None = None,
    name: str | None = None,
    input_gen_fns: Mapping[str, Callable[..., Any]] | None = None,
    dispatch_on: Any = None,
    split_points: Sequence[int] | str | None = None,
    ranges: Sequence[Any] | None = None,
    tie: Any = None,
    min_speedup: float | None = None,
    min_speedup_threshold: float | None = None,
    benchmark_with_cudagraphs: bool = False,
    tuning_budget_s: float | None = 60.0,
    refine_splits: bool = False,
    samples_per_range: int | None = None,
    range_upper_bound: int | None = None,
    check: bool = True,
    rtol: float | None = None,
    atol: float | None = None,
    benchmarker: Benchmarker | None = None,
    cache: bool | str = True,
    traced: bool = True,
    distributed: str = "broadcast",
    process_group: Any = None,
    objective: str = "device",
) -> RangeDispatchOp:
    """Make a ``torch.library.custom_op`` dispatch per range of one input dimension.

    After this, calling the op (eagerly, inside ``torch.compile``, or through
    ``torch.export``) runs the fastest candidate for the size range of the call. The op's
    own function stays the reference (the correctness oracle and the fallback).

    Args:
        custom_op: a ``CustomOpDef`` from ``@torch.library.custom_op`` (a plain function
            is accepted too and gets a dispatching wrapper, which is returned).
        configs: ``CustomOpConfig`` entries (with or without ``dim_range``), a
            ``CustomOpRangeConfig``, or plain callables.
        config_generator: builds configs from the first call's tensors instead.
        name: the name used in logs and tables (default ``"<op>_autotuned"``).
        input_gen_fns: parameter name -> ``fn(like_tensor) -> tensor`` for tuning inputs.
        dispatch_on: ``{"tensor_name": "x", "dim": 1}`` or ``("x", 1)`` with
            ``split_points`` (upstream's form) or ``ranges``.
        split_points: upstream's split points: ``[512, 2048]`` -> ``[1, 512], [513, 2048],
            [2049, inf)``.
        tie: other tensors sharing the dispatch size, ``{"k": 2, "v": 2}``.
        min_speedup: a candidate must beat the reference by this factor (also
            ``min_speedup_threshold``, upstream's name).
        samples_per_range: sizes benchmarked per range (default: 3, more for a range wider than
            4 octaves). range_upper_bound: the largest size benchmarked for an unbounded range.
        check, rtol, atol: the output check against the reference during tuning.
        benchmarker: the timing strategy (default: the measurement core of
            ``rangedispatch.measure.timing`` with CUDA events or ``perf_counter``).
        benchmark_with_cudagraphs: on CUDA, time replays of a CUDA graph of each candidate
            (the cost inside a captured region, without eager launch gaps); a candidate that
            cannot be captured loses its range.
        tuning_budget_s: wall-clock budget for the timing of one tuning run (``None``: none).
        refine_splits: split a given range where its winner stops being the fastest inside
            it (located by bisection, as ``split_points="auto"`` does); the given split
            points stay. One dispatch dimension only.
        cache: the persistent table cache: ``True`` (the mode ``RANGEDISPATCH_CACHE`` sets,
            ``"verify"`` by default: a loaded table is spot-checked first), ``"verify"``,
            ``"trust"`` (loaded tables used unchecked) or ``False``/``"off"``.
        objective: what a decision minimises: ``"device"`` time (default), ``"wall"`` time of
            eager calls (host launches included) or ``"train"`` (forward plus backward); see
            :class:`~rangedispatch.decide.tuner.TunerSettings`.
        traced: under ``torch.compile``, trace the dispatch into the graph (``False``
            keeps the op opaque; it still dispatches inside its kernel).
        distributed: with ``torch.distributed`` initialised, how the ranks end with one table:
            ``"broadcast"`` (rank 0 tunes), ``"split"`` (ranges shared out), ``"off"``; see
            :mod:`rangedispatch.op.distributed`.
        process_group: the group that agrees (default: the world).

    Several dimensions: pass a ``MultiDimRangeConfig``, or ``dispatch_on`` as a list of
    dimensions with one list of ``split_points`` (or ``ranges``) per dimension; the op is then
    a :class:`~rangedispatch.op.grid.GridDispatchOp`.

    Returns:
        The :class:`RangeDispatchOp` behind the op (``.table``, ``.explain``, ``.tune``).

    Example:
        >>> register_custom_op_autotuning(  # doctest: +SKIP
        ...     my_op, configs=[CustomOpConfig(impl_a), CustomOpConfig(impl_b)],
        ...     dispatch_on={"tensor_name": "x", "dim": 1}, split_points=[512, 2048])
    """
    if min_speedup is not None and min_speedup_threshold is not None and min_speedup != min_speedup_threshold:
        raise ConfigError("Expected min_speedup or min_speedup_threshold, not two different values")
    speedup = min_speedup if min_speedup is not None else (min_speedup_threshold or 1.0)
    settings = make_settings(speedup, samples_per_range, range_upper_bound, check, rtol, atol,
                             benchmark_with_cudagraphs, tuning_budget_s, refine_splits, objective)
    if configs is not None and config_generator is not None:
        raise ConfigError("Expected configs or config_generator, not both; config_generator builds the configs")
    if configs is not None and (not isinstance(configs, (list, tuple)) or not configs):
        raise ConfigError(
            f"Expected at least one config but got {describe('configs', configs)}; pass "
            "CustomOpConfig(impl) entries or a CustomOpRangeConfig"
        )
    if configs is None and config_generator is None:
        raise ConfigError(
            "Expected configs=[...] or config_generator=...; give at least one candidate implementation"
        )
    common = dict(
        configs=configs or (),
        dispatch_on=dispatch_on,
        split_points=split_points,
        ranges=ranges,
        tie=tie,
        input_gen_fns=input_gen_fns,
        config_generator=config_generator,
        settings=settings,
        benchmarker=benchmarker,
        cache=cache,
        traced=traced,
        distributed=distributed,
        process_group=process_group,
    )
    import torch

    kind = GridDispatchOp if is_grid_request(configs, dispatch_on) else RangeDispatchOp
    if is_custom_op_def(custom_op):
        parts = compat.get("custom_op_function")
        if parts is None:
            raise ConfigError(
                f"register_custom_op_autotuning: torch {torch.__version__} keeps a custom op's Python function "
                "where this version of rangedispatch cannot find it; decorate that function with "
                "@rangedispatch.range_dispatch(...) instead (see rangedispatch.compat)")
        fn, op_name, overload = parts(custom_op)
        op = kind(fn, name=name or f"{op_name}_autotuned", opaque_call=overload, **common)  # type: ignore[arg-type]
        _attach(custom_op, op)
        return op
    if compat.is_operator(custom_op):
        raise ConfigTypeError(
            f"Expected a CustomOpDef but got {describe('custom_op', custom_op)}; built-in operators "
            "cannot be re-routed. Wrap the call in a @torch.library.custom_op function, or use "
            "@rangedispatch.range_dispatch on a Python function"
        )
    if callable(custom_op):
        return kind(custom_op, name=name, **common)  # type: ignore[arg-type]
    raise ConfigTypeError(
        f"Expected a CustomOpDef (from @torch.library.custom_op) but got {describe('custom_op', custom_op)}"
    )


def make_settings(
    min_speedup: float,
    samples_per_range: int | None,
    range_upper_bound: int | None,
    check: bool,
    rtol: float | None,
    atol: float | None,
    cuda_graphs: bool = False,
    budget_s: float | None = 60.0,
    refine: bool = False,
    objective: str = "device",
) -> TunerSettings:
    if not isinstance(min_speedup, (int, float)) or min_speedup < 1.0:
        raise ConfigError(
            f"Expected min_speedup >= 1.0 but got {describe('min_speedup', min_speedup)}; 1.1 means "
            "a candidate must be 10% faster than the reference"
        )
    if samples_per_range is not None and (isinstance(samples_per_range, bool) or not isinstance(samples_per_range, int)
                                          or samples_per_range < 1):
        raise ConfigError(f"Expected samples_per_range >= 1 (or None: 3, more for wide ranges) but got "
                          f"{describe('samples_per_range', samples_per_range)}")
    if range_upper_bound is not None and (not isinstance(range_upper_bound, int) or range_upper_bound < 1):
        raise ConfigError(
            f"Expected a positive integer but got {describe('range_upper_bound', range_upper_bound)}"
        )
    for label, tol in (("rtol", rtol), ("atol", atol)):
        if tol is not None and (not isinstance(tol, (int, float)) or tol < 0):
            raise ConfigError(f"Expected a non-negative tolerance but got {describe(label, tol)}")
    if budget_s is not None and (isinstance(budget_s, bool) or not isinstance(budget_s, (int, float)) or budget_s <= 0):
        raise ConfigError(
            f"Expected a positive number of seconds (or None for no budget) but got "
            f"{describe('tuning_budget_s', budget_s)}"
        )
    if not isinstance(refine, bool):
        raise ConfigError(f"Expected True or False but got {describe('refine_splits', refine)}")
    if objective not in OBJECTIVES:
        raise ConfigError(f"Expected objective to be one of {', '.join(map(repr, OBJECTIVES))} but got "
                          f"{describe('objective', objective)}; 'device' times the kernels, 'wall' eager calls "
                          "with their host work, 'train' forward plus backward")
    return TunerSettings(
        objective=objective,
        refine=refine,
        cuda_graphs=bool(cuda_graphs),
        budget_s=None if budget_s is None else float(budget_s),
        samples_per_range=samples_per_range,
        upper_bound=range_upper_bound,
        min_speedup=float(min_speedup),
        check=check,
        rtol=rtol,
        atol=atol,
    )


def range_dispatch(
    fn: Callable[..., Any] | None = None,
    /,
    *,
    dispatch_on: Any = None,
    split_points: Sequence[int] | str | None = None,
    ranges: Sequence[Any] | None = None,
    tie: Any = None,
    name: str | None = None,
    input_gen_fns: Mapping[str, Callable[..., Any]] | None = None,
    min_speedup: float = 1.0,
    samples_per_range: int | None = None,
    range_upper_bound: int | None = None,
    check: bool = True,
    rtol: float | None = None,
    atol: float | None = None,
    benchmarker: Benchmarker | None = None,
    benchmark_with_cudagraphs: bool = False,
    tuning_budget_s: float | None = 60.0,
    refine_splits: bool = False,
    cache: bool | str = True,
    distributed: str = "broadcast",
    process_group: Any = None,
    compiled_dispatch: str = "cond",
    objective: str = "device",
) -> Any:
    """Decorate a reference function; add candidates with ``@op.register_impl``.

    The decorated function is the reference (oracle and fallback). Candidates are tuned per
    range on the first call (or ``op.tune(*example)``); afterwards a call costs one size
    read and one ``bisect`` more than calling the winner directly.

    ``dispatch_on=[("x", 0), ("x", 1)]`` with ``split_points=[[32], [1024]]`` (one list per
    dimension) dispatches on a grid of both sizes (a :class:`~rangedispatch.op.grid.GridDispatchOp`).

    ``compiled_dispatch="guards"`` compiles one graph per range instead of a ``torch.cond``
    per range in one graph (see :attr:`RangeDispatchOp.compiled_dispatch`).

    Example:
        >>> import torch, rangedispatch as rd
        >>> @rd.range_dispatch(dispatch_on=("x", 1), ranges=[(0, 512), (512, float("inf"))])
        ... def scale(x, w):
        ...     return x * w
        >>> @scale.register_impl
        ... def scale_einsum(x, w):
        ...     return torch.einsum("bsh,h->bsh", x, w)
        >>> scale(torch.ones(1, 4, 2), torch.ones(2)).shape
        torch.Size([1, 4, 2])
    """
    settings = make_settings(min_speedup, samples_per_range, range_upper_bound, check, rtol, atol,
                             benchmark_with_cudagraphs, tuning_budget_s, refine_splits, objective)

    kind = GridDispatchOp if is_grid_request((), dispatch_on) else RangeDispatchOp

    def wrap(reference: Callable[..., Any]) -> RangeDispatchOp:
        op = kind(
            reference,
            name=name,
            dispatch_on=dispatch_on,
            split_points=split_points,
            ranges=ranges,
            tie=tie,
            input_gen_fns=input_gen_fns,
            settings=settings,
            benchmarker=benchmarker,
            cache=cache,
            distributed=distributed,
            process_group=process_group,
        )
        op.compiled_dispatch = compiled_dispatch
        return op

    return wrap if fn is None else wrap(fn)


def dispatcher_of(op: Any) -> RangeDispatchOp:
    """The :class:`RangeDispatchOp` behind a registered custom op (or the op itself)."""
    if isinstance(op, RangeDispatchOp):
        return op
    found = getattr(op, "_rangedispatch", None)
    if found is None:
        raise ConfigError(
            f"Expected an op registered with register_custom_op_autotuning but got {describe('op', op)}"
        )
    return found


def _attach(custom_op: Any, op: RangeDispatchOp) -> None:
    """Route the custom op's kernel through ``op`` and, if traced, its compiled calls too."""
    op._custom_op = custom_op
    custom_op._rangedispatch = op
    op.reset()  # registers op.eager as the kernel for every device the op has, and the class
