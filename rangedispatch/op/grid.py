"""Ranges over several dimensions at once: a grid of cells, tuned cell by cell.

An op that crosses over on two sizes (attention on batch and sequence length, a matmul on M
and K) gets one list of ranges per dimension; their product is the grid. Each cell is tuned
at sizes spread over it (its corners and its diagonal), neighbouring cells that chose the
same candidate are merged, and a call is dispatched by one lookup per dimension:

    >>> import torch, rangedispatch as rd
    >>> @rd.range_dispatch(dispatch_on=[("x", 0), ("x", 1)], split_points=[[32], [1024]])
    ... def double(x):
    ...     return x * 2
    >>> @double.register_impl
    ... def double_add(x):
    ...     return x + x
    >>> double.dispatch, len(double.plan.ranges)
    (GridSpec(x[0], x[1]), 4)

Under ``torch.compile`` and ``torch.export`` the dispatch is traced as nested conditionals,
one level per dimension, so a sweep over both sizes is one graph.
"""

from __future__ import annotations

import functools
import itertools
import logging
import math
from bisect import bisect_right
from dataclasses import dataclass
from typing import Any, Callable, Mapping, Sequence

from ..decide.candidates import Candidate, uniquify
from ..decide.config import (
    CustomOpConfig,
    DispatchSpec,
    Plan,
    _parse_tie,
    check_implementations,
    make_candidate,
    op_parameters,
    parse_dispatch_on,
    parse_range_list,
)
from ..decide.environment import Environment
from ..decide.inputs import InputFactory
from ..decide.ranges import (
    Partition,
    Range,
    describe_tree,
    map_tree,
    ranges_from_split_points,
)
from ..decide.table import FORMAT as TABLE_FORMAT
from ..decide.table import RangeResult, TuningTable, choice_lines
from ..decide.tuner import (
    Budget,
    Prober,
    TunerSettings,
    _tune_range,
    make_table,
    sample_sizes,
)
from ..errors import ConfigError, ConfigTypeError, describe
from ..measure.timing import Benchmarker

log = logging.getLogger("rangedispatch")

GRID_FORMAT = TABLE_FORMAT + ".grid"


@dataclass(frozen=True, order=True)
class Cell:
    """One cell of a grid: a range of every dispatch dimension.

    Example:
        >>> cell = Cell((Range(0, 32), Range(1024, None)))
        >>> str(cell), (8, 2048) in cell, (32, 2048) in cell
        ('[0, 32) x [1024, inf)', True, False)
    """

    ranges: tuple[Range, ...]

    def __contains__(self, point: object) -> bool:
        return (isinstance(point, tuple) and len(point) == len(self.ranges)
                and all(s in r for s, r in zip(point, self.ranges)))

    @property
    def lo(self) -> tuple[int, ...]:
        return tuple(r.lo for r in self.ranges)

    @property
    def hi(self) -> tuple[int | None, ...]:
        return tuple(r.hi for r in self.ranges)

    def __str__(self) -> str:
        return " x ".join(str(r) for r in self.ranges)

    def to_json(self) -> list[list[int | None]]:
        return [r.to_json() for r in self.ranges]

    @classmethod
    def from_json(cls, value: Sequence[Sequence[int | None]]) -> Cell:
        return cls(tuple(Range.from_json(r) for r in value))


@dataclass(frozen=True)
class GridSpec:
    """The dispatch sizes of a grid op: one :class:`DispatchSpec` per dimension (each with
    its tied tensors and its own ``upper_bound``)."""

    axes: tuple[DispatchSpec, ...]

    @property
    def resized(self) -> tuple[tuple[str, int], ...]:
        return tuple(pair for axis in self.axes for pair in axis.resized)

    # the first axis's tensor: where the op's device is read from
    @property
    def tensor(self) -> str:
        return self.axes[0].tensor

    @property
    def dim(self) -> int:
        return self.axes[0].dim

    upper_bound = None

    def __str__(self) -> str:
        return "(" + ", ".join(str(a) for a in self.axes) + ")"

    def __repr__(self) -> str:
        return "GridSpec(" + ", ".join(str(a) for a in self.axes) + ")"

    def at(self, point: Sequence[int]) -> str:
        """``x[0]=8, x[1]=2048``."""
        return ", ".join(f"{a}={s}" for a, s in zip(self.axes, point))


class MultiDimRangeConfig:
    """Several implementations benchmarked in every cell of a grid of ranges.

    Args:
        dims: ``{tensor_name: {dim_index: [(start, end), ...]}}``; every listed dimension is
            a dimension of the grid (of one tensor or of several).
        implementations: callables with the op's signature, numerically equivalent.
        tie: ``{(tensor_name, dim_index): {"k": 2, "v": 2}}``: other tensors sharing that
            dimension's size (attention's k and v with q).

    Example:
        >>> inf = float("inf")
        >>> cfg = MultiDimRangeConfig(
        ...     dims={"x": {0: [(0, 32), (32, inf)], 1: [(0, 1024), (1024, inf)]}},
        ...     implementations=[abs, abs])
        >>> [str(a) for a in cfg.axes], len(cfg.cells)
        (['x[0]', 'x[1]'], 4)
    """

    def __init__(self, dims: Mapping[str, Mapping[int, Sequence[Any]]],
                 implementations: Sequence[Callable[..., Any]], *, tie: Any = None) -> None:
        if not isinstance(dims, Mapping) or not dims:
            raise ConfigError(
                f"Expected dims as {{tensor_name: {{dim_index: [(start, end), ...]}}}} but got "
                f"{describe('dims', dims)}; e.g. dims={{'x': {{0: [(0, 32), (32, inf)], 1: [(0, 1024), (1024, inf)]}}}}"
            )
        check_implementations(implementations)
        ties = _grid_ties(tie)
        axes: list[DispatchSpec] = []
        ranges: list[tuple[Range, ...]] = []
        for name, per_dim in dims.items():
            if not isinstance(name, str) or not isinstance(per_dim, Mapping) or not per_dim:
                raise ConfigError(
                    f"Expected dims[{name!r}] as {{dim_index: [(start, end), ...]}} but got "
                    f"{describe(f'dims[{name!r}]', per_dim)}"
                )
            for dim, rngs in per_dim.items():
                spec = parse_dispatch_on((name, dim), tie=ties.pop((name, dim), None))
                axes.append(spec)
                ranges.append(parse_range_list(rngs, f"dims[{name!r}][{dim}]"))
        if ties:
            raise ConfigError(
                f"Expected tie keys that are dimensions of dims but got {sorted(ties)}; "
                f"the dimensions are {[(a.tensor, a.dim) for a in axes]}"
            )
        _check_distinct(axes)
        self.axes = tuple(axes)
        self.axis_ranges = tuple(ranges)
        self.implementations = tuple(implementations)

    @property
    def spec(self) -> GridSpec:
        return GridSpec(self.axes)

    @property
    def cells(self) -> tuple[Cell, ...]:
        return grid_cells(self.axis_ranges)

    def __repr__(self) -> str:
        names = [getattr(f, "__name__", repr(f)) for f in self.implementations]
        dims = "; ".join(f"{a}: {', '.join(str(r) for r in rs)}" for a, rs in zip(self.axes, self.axis_ranges))
        return f"MultiDimRangeConfig({dims}, {names})"


def _grid_ties(tie: Any) -> dict[tuple[str, int], Any]:
    if tie is None:
        return {}
    if not isinstance(tie, Mapping) or not all(isinstance(k, tuple) and len(k) == 2 for k in tie):
        raise ConfigError(
            f"Expected tie as {{(tensor_name, dim): {{'k': 2, 'v': 2}}}} for a grid but got "
            f"{describe('tie', tie)}"
        )
    return {(str(k[0]), int(k[1])): v for k, v in tie.items()}


def _check_distinct(axes: Sequence[DispatchSpec]) -> None:
    seen: dict[tuple[str, int], str] = {}
    for axis in axes:
        for pair in axis.resized:
            if pair in seen:
                raise ConfigError(
                    f"Expected every grid dimension to resize its own tensor dims but {pair[0]}[{pair[1]}] "
                    f"is in {seen[pair]} and in {axis}; list each tensor dimension once"
                )
            seen[pair] = str(axis)


def grid_cells(axis_ranges: Sequence[Sequence[Range]]) -> tuple[Cell, ...]:
    """Every cell of the grid, in order (the last dimension varies fastest)."""
    return tuple(Cell(tuple(combo)) for combo in itertools.product(*axis_ranges))


def is_grid_request(configs: Any, dispatch_on: Any) -> bool:
    """Whether a registration asks for several dispatch dimensions: a
    :class:`MultiDimRangeConfig` among the configs, or ``dispatch_on`` listing several."""
    items = configs if isinstance(configs, (list, tuple)) else [configs]
    if any(isinstance(c, MultiDimRangeConfig) for c in items):
        return True
    return _axis_list(dispatch_on) is not None


def _axis_list(dispatch_on: Any) -> list[Any] | None:
    """``dispatch_on`` as a list of per-dimension specs, or ``None`` for one dimension."""
    if not isinstance(dispatch_on, (list, tuple)) or not dispatch_on:
        return None
    if len(dispatch_on) == 2 and isinstance(dispatch_on[0], str):
        return None  # ("x", 1)
    if all(isinstance(d, (Mapping, list, tuple)) for d in dispatch_on):
        return list(dispatch_on)
    return None


def build_grid_plan(configs: Sequence[Any], *, reference: Callable[..., Any], ref_name: str,
                    dispatch_on: Any = None, split_points: Any = None, ranges: Any = None,
                    tie: Any = None) -> tuple[Plan, tuple[tuple[Range, ...], ...]]:
    """Validate a grid registration: the :class:`Plan` (its ranges are the cells) and the
    ranges of every dimension."""
    op_params = op_parameters(reference)
    grids = [c for c in configs if isinstance(c, MultiDimRangeConfig)]
    ranged = [c for c in configs if isinstance(c, CustomOpConfig) and c.is_range]
    if ranged or any(type(c).__name__ == "CustomOpRangeConfig" for c in configs):
        raise ConfigError(
            "Expected a grid op's candidates without a single-dimension range, but configs has "
            "CustomOpConfig(dim_range=...) or CustomOpRangeConfig entries; a grid tunes every candidate "
            "in every cell: give plain CustomOpConfig(impl) entries or a MultiDimRangeConfig"
        )
    if grids:
        if dispatch_on is not None or split_points is not None or ranges is not None:
            raise ConfigError(
                "Expected either a MultiDimRangeConfig or dispatch_on/split_points/ranges, not both; "
                "the config already names its dimensions and ranges"
            )
        first = grids[0]
        for other in grids[1:]:
            if (other.axes, other.axis_ranges) != (first.axes, first.axis_ranges):
                raise ConfigError(
                    f"Expected every MultiDimRangeConfig of an op to have the same grid but got "
                    f"{first!r} and {other!r}; merge their implementations into one config"
                )
        axes, axis_ranges = first.axes, first.axis_ranges
    else:
        axes, axis_ranges = _grid_from_args(dispatch_on, split_points, ranges, tie)
    for axis in axes:
        for name, _ in axis.resized:
            if op_params and name not in op_params:
                raise ConfigError(f"Tensor '{name}' not found in function arguments. Available arguments: {op_params}")
    make = functools.partial(make_candidate, reference=reference, ref_name=ref_name, op_params=op_params)
    cands: list[Candidate] = []
    for cfg in configs:
        if isinstance(cfg, MultiDimRangeConfig):
            cands += [make(impl, {}) for impl in cfg.implementations]
        elif isinstance(cfg, CustomOpConfig):
            cands.append(make(cfg.impl, cfg.params))
        elif callable(cfg):
            cands.append(make(cfg, {}))
        else:
            raise ConfigTypeError(
                f"Expected MultiDimRangeConfig, CustomOpConfig or a callable but got {describe('configs', cfg)}"
            )
    unique: dict[Any, Candidate] = {}
    for c in cands:
        unique.setdefault(c.key, c)
    final = tuple(uniquify(list(unique.values())))
    cells = grid_cells(axis_ranges)
    return Plan(GridSpec(tuple(axes)), cells, {cell: final for cell in cells}), tuple(axis_ranges)


def _grid_from_args(dispatch_on: Any, split_points: Any, ranges: Any,
                    tie: Any) -> tuple[tuple[DispatchSpec, ...], tuple[tuple[Range, ...], ...]]:
    specs = _axis_list(dispatch_on)
    if specs is None:
        raise ConfigError(
            f"Expected dispatch_on as a list of dimensions for a grid but got {describe('dispatch_on', dispatch_on)}; "
            "e.g. dispatch_on=[('x', 0), ('x', 1)] with split_points=[[32], [1024]]"
        )
    ties = _grid_ties(tie)
    axes = []
    for spec in specs:
        parsed = parse_dispatch_on(spec)
        extra = ties.pop((parsed.tensor, parsed.dim), None)
        if extra is not None:
            parsed = DispatchSpec(parsed.tensor, parsed.dim, parsed.tied + _parse_tie(extra), parsed.upper_bound)
        axes.append(parsed)
    if ties:
        raise ConfigError(f"Expected tie keys among the dispatch dimensions but got {sorted(ties)}")
    _check_distinct(axes)
    if (split_points is None) == (ranges is None):
        raise ConfigError(
            "Expected split_points or ranges for a grid (one list per dimension), exactly one of them; "
            "e.g. split_points=[[32], [1024]]"
        )
    given, what = (split_points, "split_points") if split_points is not None else (ranges, "ranges")
    if isinstance(given, str):
        raise ConfigError(
            f"Expected one list per dimension but got {describe(what, given)}; automatic split points "
            "are found for one dimension only: give the grid's split points"
        )
    if not isinstance(given, (list, tuple)) or len(given) != len(axes):
        raise ConfigError(
            f"Expected {what} with one list per dispatch dimension ({len(axes)}) but got "
            f"{describe(what, given)}; e.g. {what}=[[32], [1024]]"
        )
    parse = ranges_from_split_points if split_points is not None else parse_range_list
    return tuple(axes), tuple(parse(v) for v in given)


# -- tuning ----------------------------------------------------------------------------------

def cell_points(cell: Cell, axes: Sequence[DispatchSpec], settings: TunerSettings) -> tuple[tuple[int, ...], ...]:
    """Where a cell is benchmarked: every corner of its sample box and its diagonal, the
    sample sizes of each dimension's range (see :func:`~rangedispatch.decide.tuner.sample_sizes`).

    Example:
        >>> from rangedispatch.decide.tuner import TunerSettings
        >>> cell = Cell((Range(1, 33), Range(1, 1025)))
        >>> cell_points(cell, GridSpec((DispatchSpec("x", 0), DispatchSpec("x", 1))).axes, TunerSettings())
        ((1, 1), (1, 1024), (6, 32), (32, 1), (32, 1024))
    """
    per_axis = [sample_sizes(r, count=settings.base_samples,
                             upper_bound=a.upper_bound if a.upper_bound is not None else settings.upper_bound)
                for r, a in zip(cell.ranges, axes)]
    corners = itertools.product(*[(s[0], s[-1]) for s in per_axis])
    diagonal = [tuple(s[min(i * (len(s) - 1) // max(1, settings.base_samples - 1), len(s) - 1)]
                      for s in per_axis) for i in range(settings.base_samples)]
    return tuple(sorted(set(corners) | set(diagonal)))


def tune_grid(*, op_name: str, plan: Plan, reference: Candidate, factory: InputFactory, benchmarker: Benchmarker,
              settings: TunerSettings, environment: Environment, device_type: str = "cpu", profile: Any = None,
              only: Sequence[Cell] | None = None) -> GridTable:
    """Tune every cell of a grid plan (or only the cells ``only``; the others are left out
    of the table) and return the :class:`GridTable`."""
    spec = plan.dispatch
    assert isinstance(spec, GridSpec)
    log.info("=== Range-based Autotuning for %s over the grid %s ===", op_name, spec)
    cells = [c for c in plan.ranges if only is None or c in only]
    points = {cell: cell_points(cell, spec.axes, settings) for cell in cells}
    budget = Budget(settings.budget_s, sum(len(p) for p in points.values()))
    prober = Prober(op_name, reference, factory, benchmarker, settings, device_type, budget)
    results = []
    for cell in cells:
        cands = [c for c in plan.candidates[cell] if c.name != reference.name]
        result, _ = _tune_range(cell, cands, points[cell], prober)
        log.info("Cell %s: Selected implementation '%s'", cell, result.winner)
        results.append(result)
    return make_table(op_name, plan, reference, results, factory, settings, environment, table_type=GridTable)


# -- the table -------------------------------------------------------------------------------

@dataclass(frozen=True)
class GridTable(TuningTable):
    """A grid op's tuning table: one result per cell (``results[i].range`` is a
    :class:`Cell`, its ``samples`` are points)."""

    @property
    def partition(self) -> Partition:
        raise TypeError(f"{self.op}: a grid table has cells, not one partition; use table.tree(...)")

    @property
    def cells(self) -> tuple[Cell, ...]:
        return tuple(r.range for r in self.results)

    @property
    def axis_names(self) -> list[str]:
        """``["x[0]", "x[1]"]`` from the table's dispatch ``"(x[0], x[1])"``."""
        return (self.dispatch or "").strip("()").split(", ")

    def result_for(self, size: Any) -> RangeResult | None:
        return next((r for r in self.results if size in r.range), None)

    def axis_ranges(self) -> tuple[tuple[Range, ...], ...]:
        """The ranges of every dimension, as the cells have them."""
        if not self.results:
            return ()
        count = len(self.results[0].range.ranges)
        return tuple(tuple(sorted({r.range.ranges[d] for r in self.results})) for d in range(count))

    def tree(self, *, gaps: str | None = None) -> Any:
        """The dispatch as a nested decision: a leaf is an owner name (``gaps`` where no cell
        covers the sizes), a node ``(dimension, segment ends, children)``; neighbours with
        equal subtrees are merged at every level (see :func:`grid_tree`)."""
        owners = {r.range: r.winner for r in self.results}
        return grid_tree(self.axis_ranges(), owners, gaps)

    def to_json(self) -> dict[str, Any]:
        data = super().to_json()
        data["format"] = GRID_FORMAT
        for entry, r in zip(data["ranges"], self.results):
            entry["samples"] = [list(p) for p in r.samples]
        return data

    @classmethod
    def from_json(cls, data: Any) -> GridTable:
        from ..errors import TableError

        if not isinstance(data, Mapping) or data.get("format") != GRID_FORMAT:
            raise TableError(f"Expected a {GRID_FORMAT} document but got {type(data).__name__} without that format tag")
        try:
            plain = dict(data, format=TABLE_FORMAT, ranges=[])
            base = TuningTable.from_json(plain)
            results = tuple(
                RangeResult(Cell.from_json(r["range"]), str(r["winner"]), tuple(tuple(int(s) for s in p) for p in r["samples"]),
                            {k: tuple(float(v) for v in vs) for k, vs in r["timings_ms"].items()},
                            dict(r.get("disqualified", {})), float(r.get("noise", 0.0)), dict(r.get("dropped", {})))
                for r in data["ranges"])
        except (KeyError, TypeError, ValueError) as exc:
            raise TableError(f"Malformed grid tuning table: {type(exc).__name__}: {exc}") from exc
        fields = {k: getattr(base, k) for k in base.__dataclass_fields__}
        return cls(**dict(fields, results=results))

    def summary(self) -> list[str]:
        lines = [line for r in self.results for line in choice_lines(r, "Cell")]
        owners = {r.winner for r in self.results}
        if len(owners) == 1:
            lines.append(f"=== Every cell selected the same implementation: '{next(iter(owners))}' ===")
        else:
            lines.append(f"=== Different cells selected different implementations: "
                         f"{describe_tree(self.tree(), self.axis_names)} ===")
        return lines

    def format(self) -> str:
        names = list(self.candidates)
        header = ["cell", "winner", "margin"] + names
        rows = [header]
        for r in self.results:
            cells = [str(r.range), r.winner, _margin(r, self.reference)]
            for n in names:
                ts = r.timings.get(n)
                cells.append("disq." if n in r.disqualified else "slower" if n in r.dropped
                             else _ms(sum(ts) / len(ts)) if ts else "-")
            rows.append(cells)
        widths = [max(len(row[i]) for row in rows) for i in range(len(header))]
        lines = [f"{self.op}: dispatch on {self.dispatch} | {self.environment.device} | torch {self.environment.torch}",
                 "mean time per candidate over the cell's sample points; margin = runner-up / winner - 1"]
        for i, row in enumerate(rows):
            lines.append("  ".join(c.ljust(w) for c, w in zip(row, widths)))
            if i == 0:
                lines.append("  ".join("-" * w for w in widths))
        lines.append(f"dispatch: {describe_tree(self.tree(gaps=self.reference + ' (untuned gap)'), self.axis_names)}")
        return "\n".join(lines)


def _margin(r: RangeResult, reference: str) -> str:
    ranking = [(n, q) for n, q in r.ranking(reference) if math.isfinite(q)]
    runner = [q for n, q in ranking if n != r.winner]
    win = r.ratio(r.winner, reference)
    return f"{(runner[0] / win - 1) * 100:.1f}%" if runner and math.isfinite(win) and win > 0 else "-"


def _ms(value: float) -> str:
    if not math.isfinite(value):
        return "fail"
    return f"{value * 1e3:.1f}us" if value < 1 else f"{value:.3f}ms"


def grid_tree(axis_ranges: Sequence[Sequence[Range]], owners: Mapping[Cell, str], gaps: str | None) -> Any:
    """The nested dispatch of a grid: dimension by dimension, the segments of ``[0, inf)``
    that the dimension's ranges (and the gaps between them) make; a cell's owner at the
    leaves. Equal neighbouring subtrees are merged and a node whose children are all equal is
    replaced by that child, so a dimension on which nothing changes costs no lookup.

    Example:
        >>> a, b = (Range(0, 8), Range(8, None)), (Range(0, 4), Range(4, None))
        >>> owners = {Cell((x, y)): "p" if x.lo == 0 else "q" for x in a for y in b}
        >>> grid_tree([a, b], owners, None)
        (0, (8, None), ('p', 'q'))
    """
    segments = [Partition.build((r, i) for i, r in enumerate(rs)).segments for rs in axis_ranges]  # type: ignore[misc]

    def node(dim: int, chosen: tuple[Range, ...]) -> Any:
        if dim == len(segments):
            return owners.get(Cell(chosen), gaps)
        children: list[Any] = []
        his: list[int | None] = []
        for seg in segments[dim]:
            child = gaps if seg.owner is None else node(dim + 1, chosen + (axis_ranges[dim][seg.owner],))  # type: ignore[index]
            if children and children[-1] == child:
                his[-1] = seg.range.hi
            else:
                children.append(child)
                his.append(seg.range.hi)
        return children[0] if len(children) == 1 else (dim, tuple(his), tuple(children))

    return node(0, ())


def eager_walker(tree: Any, getters: Sequence[Callable[[tuple[Any, ...], dict[str, Any]], int]]) -> Callable[..., Any]:
    """A function calling the leaf (a callable) of ``tree`` that a call's sizes lead to: one
    comparison (two segments) or one ``bisect`` per dimension on the way. The generic path;
    the generated ``__call__`` writes the tree out as one expression (``walker.tree``)."""
    if not isinstance(tree, tuple):
        return tree
    dim, his, children = tree
    kids = tuple(eager_walker(c, getters) for c in children)
    bounds = tuple(his[:-1])
    get = getters[dim]
    if len(kids) == 2:
        (k0, k1), (b0,) = kids, bounds

        def walk(*args: Any, **kwargs: Any) -> Any:
            return (k0 if get(args, kwargs) < b0 else k1)(*args, **kwargs)
    else:
        def walk(*args: Any, **kwargs: Any) -> Any:
            return kids[bisect_right(bounds, get(args, kwargs))](*args, **kwargs)

    walk.tree = tree  # type: ignore[attr-defined]
    return walk


# -- the op ----------------------------------------------------------------------------------

from . import distributed  # noqa: E402
from .core import RangeDispatchOp, _apply_names_and_restrictions, _RangedImpl  # noqa: E402


class GridDispatchOp(RangeDispatchOp):
    """A :class:`RangeDispatchOp` over several dispatch dimensions: ``dispatch`` is a
    :class:`GridSpec`, the plan's ranges are the grid's cells, and its table is a
    :class:`GridTable`. Everything else (candidates, the cache, input signatures, custom-op
    registration, ``torch.compile`` and ``torch.export``) works as for one dimension.

    See the module's example.
    """

    _table_type = GridTable

    def __init__(self, reference: Callable[..., Any], **kwargs: Any) -> None:
        if isinstance(kwargs.get("split_points"), str):
            raise ConfigError(
                f"Expected one list of split points per dimension but got "
                f"{describe('split_points', kwargs['split_points'])}; automatic split points are found "
                "for one dimension only"
            )
        settings = kwargs.get("settings")
        if settings is not None and settings.refine:
            raise ConfigError(
                "Expected refine_splits=False on an op that dispatches on several dimensions; split "
                "points are refined on one dimension only (give finer split points per dimension instead)"
            )
        self.axis_ranges: tuple[tuple[Range, ...], ...] = ()
        super().__init__(reference, **kwargs)

    def register_impl(self, fn: Callable[..., Any] | None = None, /, *, name: str | None = None,
                      ranges: Sequence[Any] | None = None, **params: Any) -> Any:
        if ranges is not None:
            raise ConfigError(
                f"{self.name}: Expected register_impl without ranges on a grid op but got "
                f"{describe('ranges', ranges)}; every candidate is tuned in every cell, and a cell where "
                "it is slow or wrong is simply not given to it"
            )
        return super().register_impl(fn, name=name, **params)

    def _build_plan(self, configs: Sequence[Any]) -> Plan:
        converted = [CustomOpConfig(c.fn, **c.params) if isinstance(c, _RangedImpl) else c for c in configs]
        args = self._plan_args
        plan, self.axis_ranges = build_grid_plan(converted, reference=self.reference_fn, ref_name=self._ref.name,
                                                 dispatch_on=args["dispatch_on"], split_points=args["split_points"],
                                                 ranges=args["ranges"], tie=args["tie"])
        plan = _apply_names_and_restrictions(plan, configs, self._ref)
        self._by_name = {self._ref.name: self._ref, **{c.name: c for c in plan.all_candidates}}
        return plan

    def _run_tuner(self, common: dict[str, Any]) -> GridTable:
        return distributed.tune_consistently(self, common, tune_grid)

    def _axes(self) -> list[tuple[str, int]]:
        return [(a.tensor, a.dim) for a in self.dispatch.axes]

    def _route_of(self, table: TuningTable) -> tuple[tuple[int, ...], tuple[Callable[..., Any], ...]]:
        assert isinstance(table, GridTable)
        gap = self._grid_gap()
        tree = map_tree(table.tree(), lambda owner: gap if owner is None else self._by_name[owner].call)
        return (), (eager_walker(tree, self._getters()),)

    def _eager_tree(self, fns: Sequence[Callable[..., Any]]) -> Any:
        walked = getattr(fns[0], "tree", None)  # see eager_walker; a lone leaf has none
        return None if walked is None else (self._axes(), walked)

    def _grid_gap(self) -> Callable[..., Any]:
        """What sizes outside every tuned cell run: the reference, with one warning."""
        getters, spec = self._getters(), self.dispatch
        tuned = "; ".join(f"{a}: {', '.join(str(r) for r in rs)}" for a, rs in zip(spec.axes, self.axis_ranges))
        return self._warning_reference(
            lambda args, kwargs: f"{self.name}: {spec.at(tuple(get(args, kwargs) for get in getters))} is outside "
                                 f"every tuned cell ({tuned}); running the reference {self._ref.name!r}. Add ranges "
                                 "covering it")

    def _decision(self, table: Any = None) -> Any:
        table = table or self._table
        assert isinstance(table, GridTable)
        return table.tree(gaps=table.reference)

    def _trial_size(self, template: Any) -> Any:
        return tuple(max(2, s) for s in template.dispatch_size(self.dispatch))

    def record_sizes(self, on: bool = True) -> Any:
        raise ConfigError(
            f"{self.name}: Expected a one-dimensional op for record_sizes but {self.name} dispatches on "
            f"{self.dispatch}; size profiles are recorded per dimension of one-dimensional ops only"
        )

    def explain(self, size: Any) -> str:
        """Which candidate a point (one size per dimension) goes to, and why."""
        spec = self.dispatch
        assert isinstance(spec, GridSpec)
        if not isinstance(size, (tuple, list)) or len(size) != len(spec.axes):
            raise ConfigError(
                f"{self.name}: Expected one size per dimension {spec} but got {describe('size', size)}; "
                f"e.g. op.explain({tuple(r[0].lo for r in self.axis_ranges)})"
            )
        point = tuple(int(s) for s in size)
        if self._table is None:
            return f"{self.name}: not tuned yet; {spec.at(point)} would run after tuning on the first call"
        result = self._table.result_for(point)
        if result is None:
            return f"{spec.at(point)}: outside every tuned cell, runs the reference {self._ref.name!r}"
        ref = self._table.reference
        lines = [f"{spec.at(point)} is in cell {result.range}: {result.winner!r}",
                 f"  sample points {[list(p) for p in result.samples]}"]
        lines += self._ranking_lines(result, ref)
        lines += self._table_lines()
        return "\n".join(lines)
