"""User-facing configuration objects and their translation into a dispatch plan.

``CustomOpConfig`` and ``CustomOpRangeConfig`` mirror upstream PyTorch's
``torch._inductor.kernel.custom_op`` so code written for it runs with only the import
changed. :func:`build_plan` validates them against the op's signature and produces a
:class:`Plan`: the dispatch dimension, the ranges, and the candidates of each range.
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping, Sequence

from .candidates import Candidate, uniquify
from ..errors import ConfigError, ConfigTypeError, describe
from .ranges import Range, check_ranges, parse_range, ranges_from_split_points


class CustomOpConfig:
    """One candidate implementation, optionally restricted to a range of the dispatch dim.

    Args:
        impl: the implementation; ``None`` means the op's own function.
        tensor_name: the op parameter whose size is dispatched on (range form only).
        dim_index: the dimension of that tensor.
        dim_range: ``(start, end)``, half-open; ``end`` may be ``float('inf')``.
        **params: keyword arguments bound to the implementation.

    Example:
        >>> CustomOpConfig(lambda x, scale: x * scale, tensor_name="x", dim_index=1,
        ...                dim_range=(0, 512))  # doctest: +ELLIPSIS
        CustomOpConfig(<lambda>, x[1] in [0, 512))
    """

    def __init__(
        self,
        impl: Callable[..., Any] | None = None,
        /,
        *,
        tensor_name: str | None = None,
        dim_index: int | None = None,
        dim_range: Any = None,
        **params: Any,
    ) -> None:
        if impl is not None and not callable(impl):
            raise ConfigTypeError(
                f"Expected a callable implementation (or None for the op's own function) "
                f"but got {describe('impl', impl)}"
            )
        # upstream's keyword for the implementation
        if impl is None and callable(params.get("decomposition")):
            impl = params.pop("decomposition")
        params.pop("config_patches", None)  # Inductor codegen patches: not used eagerly
        range_args = (tensor_name, dim_index, dim_range)
        if any(a is not None for a in range_args) and not all(a is not None for a in range_args):
            raise ConfigError(
                "Expected tensor_name, dim_index and dim_range together but got "
                f"{describe('tensor_name', tensor_name)}, {describe('dim_index', dim_index)}, "
                f"{describe('dim_range', dim_range)}; give all three for a range config, "
                "or none of them"
            )
        self.impl = impl
        self.tensor_name = tensor_name
        self.dim_index = _check_dim(dim_index, "dim_index") if dim_index is not None else None
        self.dim_range = parse_range(dim_range) if dim_range is not None else None
        self.params = params

    @property
    def is_range(self) -> bool:
        return self.dim_range is not None

    def __repr__(self) -> str:
        name = getattr(self.impl, "__name__", "default") if self.impl is not None else "default"
        parts = [name] + [f"{k}={v!r}" for k, v in self.params.items()]
        if self.is_range:
            parts.append(f"{self.tensor_name}[{self.dim_index}] in {self.dim_range}")
        return f"CustomOpConfig({', '.join(parts)})"


class CustomOpRangeConfig:
    """Several implementations benchmarked in each of several ranges of one dimension.

    Args:
        tensor_name: name of the op's tensor parameter to dispatch on.
        dim_index: 0-based dimension of that tensor.
        ranges: half-open ``(start, end)`` pairs, sorted, non-overlapping.
        implementations: callables with the op's signature, numerically equivalent.

    Example:
        >>> cfg = CustomOpRangeConfig("x", 1, [(0, 512), (512, float("inf"))], [abs, abs])
        >>> [str(r) for r in cfg.ranges]
        ['[0, 512)', '[512, inf)']
    """

    def __init__(
        self,
        tensor_name: str,
        dim_index: int,
        ranges: Sequence[Any],
        implementations: Sequence[Callable[..., Any]],
    ) -> None:
        if not isinstance(tensor_name, str) or not tensor_name:
            raise ConfigTypeError(
                f"Expected a parameter name but got {describe('tensor_name', tensor_name)}"
            )
        parsed = parse_range_list(ranges)
        check_implementations(implementations)
        self.tensor_name = tensor_name
        self.dim_index = _check_dim(dim_index, "dim_index")
        self.ranges = parsed
        self.implementations = tuple(implementations)

    def __repr__(self) -> str:
        names = [getattr(f, "__name__", repr(f)) for f in self.implementations]
        ranges = ", ".join(str(r) for r in self.ranges)
        return f"CustomOpRangeConfig({self.tensor_name}[{self.dim_index}], [{ranges}], {names})"


def check_implementations(implementations: Any) -> None:
    """Raise unless ``implementations`` is a non-empty list of callables."""
    if not isinstance(implementations, (list, tuple)) or not implementations:
        raise ConfigError(
            f"Expected a non-empty list of implementations but got "
            f"{describe('implementations', implementations)}"
        )
    for i, impl in enumerate(implementations):
        if not callable(impl):
            raise ConfigTypeError(f"Implementation {i} must be callable, got {type(impl)}")


def _check_dim(dim: Any, name: str) -> int:
    if isinstance(dim, bool) or not isinstance(dim, int):
        raise ConfigTypeError(
            f"Expected an integer dimension index but got {describe(name, dim)}; "
            "e.g. 1 for x.shape[1]"
        )
    return dim


@dataclass(frozen=True)
class DispatchSpec:
    """Which size is dispatched on: ``tensor.shape[dim]``, plus tensors tied to it.

    ``tied`` lists ``(name, dim)`` pairs that always share the dispatch size (attention's
    q, k, v on the sequence dim); tuning resizes all of them together.
    """

    tensor: str
    dim: int
    tied: tuple[tuple[str, int], ...] = ()
    upper_bound: int | None = None

    def __str__(self) -> str:
        return f"{self.tensor}[{self.dim}]"

    @property
    def resized(self) -> tuple[tuple[str, int], ...]:
        return ((self.tensor, self.dim),) + self.tied


def dims_by_tensor(spec: Any) -> dict[str, tuple[int, ...]]:
    """Tensor name -> the dims a dispatch spec resizes (one per axis it takes part in)."""
    out: dict[str, tuple[int, ...]] = {}
    for name, dim in (spec.resized if spec is not None else ()):
        out[name] = out.get(name, ()) + (dim,)
    return out


@dataclass(frozen=True)
class Plan:
    """The validated registration: dispatch spec, ranges, candidates per range."""

    dispatch: DispatchSpec | None
    ranges: tuple[Range, ...]
    candidates: Mapping[Range, tuple[Candidate, ...]] = field(default_factory=dict)

    @property
    def all_candidates(self) -> tuple[Candidate, ...]:
        seen: dict[str, Candidate] = {}
        for rng in self.ranges:
            for cand in self.candidates[rng]:
                seen.setdefault(cand.name, cand)
        return tuple(seen.values())


def parse_dispatch_on(dispatch_on: Any, *, tie: Any = None) -> DispatchSpec:
    """Accept ``("x", 1)`` or upstream's ``{"tensor_name": "x", "dim": 1, ...}``."""
    upper = None
    if isinstance(dispatch_on, Mapping):
        known = {"tensor_name", "dim", "range_upper_bound", "unbounded_size", "tie"}
        unknown = set(dispatch_on) - known
        if unknown or "tensor_name" not in dispatch_on or "dim" not in dispatch_on:
            raise ConfigError(
                f"Expected dispatch_on with keys 'tensor_name' and 'dim' (optional: "
                f"'range_upper_bound', 'tie') but got {describe('dispatch_on', dispatch_on)}; "
                "e.g. dispatch_on={'tensor_name': 'x', 'dim': 1}"
            )
        name, dim = dispatch_on["tensor_name"], dispatch_on["dim"]
        upper = dispatch_on.get("range_upper_bound", dispatch_on.get("unbounded_size"))
        tie = dispatch_on.get("tie", tie)
    elif isinstance(dispatch_on, (tuple, list)) and len(dispatch_on) == 2:
        name, dim = dispatch_on
    else:
        raise ConfigError(
            f"Expected dispatch_on=(tensor_name, dim) or a dict but got "
            f"{describe('dispatch_on', dispatch_on)}; e.g. dispatch_on=('x', 1)"
        )
    if not isinstance(name, str):
        raise ConfigTypeError(
            f"Expected a parameter name but got {describe('dispatch_on tensor_name', name)}"
        )
    dim = _check_dim(dim, "dispatch_on dim")
    if upper is not None and (isinstance(upper, bool) or not isinstance(upper, int) or upper < 1):
        raise ConfigError(
            f"Expected a positive integer but got {describe('range_upper_bound', upper)}; "
            "it is the size benchmarked for the unbounded range"
        )
    return DispatchSpec(name, dim, _parse_tie(tie), upper)


def _parse_tie(tie: Any) -> tuple[tuple[str, int], ...]:
    if tie is None:
        return ()
    items = tie.items() if isinstance(tie, Mapping) else tie
    out = []
    for item in items:
        if not (isinstance(item, (tuple, list)) and len(item) == 2 and isinstance(item[0], str)):
            raise ConfigError(
                f"Expected tie as {{'k': 2, 'v': 2}} or [('k', 2), ...] but got "
                f"{describe('tie', tie)}"
            )
        out.append((item[0], _check_dim(item[1], f"tie[{item[0]!r}]")))
    return tuple(out)


def op_parameters(fn: Callable[..., Any]) -> list[str]:
    try:
        return list(inspect.signature(fn).parameters)
    except (TypeError, ValueError):
        return []


def check_tensor_name(name: str, params: Sequence[str]) -> None:
    if params and name not in params:
        raise ConfigError(f"Tensor '{name}' not found in function arguments. Available arguments: {list(params)}")


def _accepts(fn: Callable[..., Any], name: str) -> bool:
    try:
        sig = inspect.signature(fn)
    except (TypeError, ValueError):
        return True
    return name in sig.parameters or any(
        p.kind is inspect.Parameter.VAR_KEYWORD for p in sig.parameters.values()
    )


def make_candidate(
    impl: Callable[..., Any] | None,
    params: Mapping[str, Any],
    *,
    reference: Callable[..., Any],
    ref_name: str,
    op_params: Sequence[str],
) -> Candidate:
    """Build a candidate, checking that every bound param is accepted."""
    fn = impl if impl is not None else reference
    for key in params:
        target_ok = key in op_params if impl is None else _accepts(fn, key)
        if not target_ok:
            owner = "the op" if impl is None else repr(getattr(fn, "__name__", fn))
            raise ConfigError(
                f"Expected params that are parameters of {owner} but got {describe(key, params[key])}; "
                f"available: {op_params if impl is None else op_parameters(fn)}. Add the parameter "
                "to the implementation's signature or drop it from the config"
            )
    name = ref_name if impl is None else ""
    if impl is None and params:
        name = ref_name + "(" + ", ".join(f"{k}={v!r}" for k, v in params.items()) + ")"
    return Candidate(fn, tuple(params.items()), name, is_reference=impl is None and not params)


def build_plan(
    configs: Any,
    *,
    reference: Callable[..., Any],
    ref_name: str,
    dispatch_on: Any = None,
    split_points: Any = None,
    ranges: Any = None,
    tie: Any = None,
) -> Plan:
    """Validate ``configs`` (any supported form) and return the :class:`Plan`."""
    op_params = op_parameters(reference)
    if configs is None or (isinstance(configs, (list, tuple)) and not configs):
        raise ConfigError(
            f"Expected at least one config but got {describe('configs', configs)}; pass "
            "CustomOpConfig(impl) entries or a CustomOpRangeConfig"
        )
    if not isinstance(configs, (list, tuple)):
        configs = [configs]
    items: list[Any] = []
    for i, cfg in enumerate(configs):
        if isinstance(cfg, (CustomOpConfig, CustomOpRangeConfig)):
            items.append(cfg)
        elif callable(cfg):
            items.append(CustomOpConfig(cfg))
        else:
            raise ConfigTypeError(
                f"Expected CustomOpConfig, CustomOpRangeConfig or a callable but got "
                f"{describe(f'configs[{i}]', cfg)}"
            )
    ranged = [c for c in items if isinstance(c, CustomOpRangeConfig) or c.is_range]
    if ranged and len(ranged) != len(items):
        raise ConfigError(
            "Expected every config to be range-based or none of them, but configs mixes "
            "CustomOpConfig entries with and without dim_range; give every CustomOpConfig a "
            "dim_range, or use dispatch_on/split_points for range-free configs"
        )
    if ranged and (dispatch_on is not None or split_points is not None):
        raise ConfigError(
            "Expected either range configs or dispatch_on/split_points, not both; the configs "
            "already name their ranges, so drop dispatch_on and split_points"
        )
    make = lambda impl, params: make_candidate(  # noqa: E731
        impl, params, reference=reference, ref_name=ref_name, op_params=op_params
    )
    per_range: dict[Range, list[Candidate]] = {}
    if ranged:
        dims = {(c.tensor_name, c.dim_index) for c in ranged}
        if len(dims) > 1:
            raise ConfigError(
                f"Expected every range config to dispatch on one dimension but got "
                f"{sorted(dims)}; dispatch on one tensor dimension per op"
            )
        (name, dim), = dims
        for cfg in ranged:
            if isinstance(cfg, CustomOpRangeConfig):
                cands = [make(impl, {}) for impl in cfg.implementations]
                for rng in cfg.ranges:
                    per_range.setdefault(rng, []).extend(cands)
            else:
                per_range.setdefault(cfg.dim_range, []).append(make(cfg.impl, cfg.params))
        spec = DispatchSpec(name, dim, _parse_tie(tie))
        all_ranges = tuple(sorted(per_range))
        check_ranges(all_ranges)
    else:
        cands = [make(c.impl, c.params) for c in items]
        if dispatch_on is not None:
            spec = parse_dispatch_on(dispatch_on, tie=tie)
            if split_points is not None and ranges is not None:
                raise ConfigError("Expected split_points or ranges, not both")
            if split_points is not None:
                all_ranges = ranges_from_split_points(split_points)
            elif ranges is not None:
                all_ranges = parse_range_list(ranges)
            else:
                all_ranges = (Range(0, None),)
        elif split_points is not None or ranges is not None:
            raise ConfigError(
                "Expected dispatch_on together with split_points/ranges; name the size to "
                "dispatch on, e.g. dispatch_on={'tensor_name': 'x', 'dim': 1}"
            )
        else:
            spec = None
            all_ranges = (Range(0, None),)
        per_range = {rng: list(cands) for rng in all_ranges}
    if spec is not None:
        check_tensor_name(spec.tensor, op_params)
        for tied_name, _ in spec.tied:
            check_tensor_name(tied_name, op_params)
    # one Candidate object per (fn, params) so names and fingerprints are shared across ranges
    unique: dict[Any, Candidate] = {}
    for cands in per_range.values():
        for c in cands:
            unique.setdefault(c.key, c)
    renamed = dict(zip(unique, uniquify(list(unique.values()))))
    final = {}
    for rng, cands in per_range.items():
        dedup = list({renamed[c.key].name: renamed[c.key] for c in cands}.values())
        final[rng] = tuple(dedup)
    return Plan(spec, tuple(sorted(final)), final)


def parse_range_list(ranges: Any, name: str = "ranges") -> tuple[Range, ...]:
    """A non-empty list of ``(start, end)`` ranges, parsed and checked (no overlap)."""
    if not isinstance(ranges, (list, tuple)) or not ranges:
        raise ConfigError(
            f"Expected a non-empty list of (start, end) ranges but got {describe(name, ranges)}; "
            "e.g. [(0, 512), (512, float('inf'))]"
        )
    parsed = tuple(parse_range(r, name=f"{name}[{i}]") for i, r in enumerate(ranges))
    check_ranges(parsed)
    return parsed


def check_input_gen_fns(input_gen_fns: Any, op_params: Sequence[str]) -> dict[str, Callable[..., Any]]:
    if input_gen_fns is None:
        return {}
    if not isinstance(input_gen_fns, Mapping):
        raise ConfigTypeError(
            f"Expected a dict of parameter name -> generator but got "
            f"{describe('input_gen_fns', input_gen_fns)}"
        )
    for key, fn in input_gen_fns.items():
        if op_params and key not in op_params:
            raise ConfigError(
                f"Expected input_gen_fns keys that are parameters of the op but got "
                f"{key!r}; available: {list(op_params)}"
            )
        if not callable(fn):
            raise ConfigTypeError(
                f"Expected a callable generator but got {describe(f'input_gen_fns[{key!r}]', fn)}"
            )
    return dict(input_gen_fns)
