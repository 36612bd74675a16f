"""From ``@pytest.mark.range_autotune(op, ...)`` to the generated cases and their ids.

Per range of the op: one equivalence case per candidate (``[op-x[1]in[512,2048)-medium]``),
one case for the dispatched op across the range's boundaries (``...-dispatch``), one
benchmark case (``...-bench``) unless ``benchmark=False``, a ``...-compiled`` case with
``compiled=True``, and a ``...-cuda_graphs`` case when the example is on CUDA. A
``MultiKernel`` gets the first three kinds per hint region
(``[mk-near[1024x512]-mk@4096x2048]``): the shapes its ``nearest`` policy sends to one variant.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Mapping

from .options import MARKER, MARKER_OPTIONS

LAYOUTS = ("contiguous", "transposed", "sliced")
DISPATCH = "dispatch"
BENCH = "bench"
COMPILED = "compiled"
GRAPHED = "cuda_graphs"
CHECKS = (DISPATCH, BENCH, COMPILED, GRAPHED)  # case kinds that are not a candidate


@dataclass(frozen=True)
class OpSpec:
    """One marker's op and options, validated."""

    op: Any  # the RangeDispatchOp
    target: Any  # what the user passed (custom op, decorated function, RangeDispatchOp)
    options: Mapping[str, Any] = field(default_factory=dict)

    @property
    def name(self) -> str:
        """The op's name in ids and reports: a registered custom op's log name drops its
        ``_autotuned`` suffix, so ``mylib::weighted_scale`` shows as ``weighted_scale``."""
        name = str(self.op.name)
        return name[: -len("_autotuned")] if name.endswith("_autotuned") else name


@dataclass(frozen=True)
class RangeCase:
    """One generated check: ``kind`` is a candidate's name, ``"dispatch"`` or ``"bench"``.

    A test marked with ``range_autotune`` that asks for the ``range_case`` fixture receives
    this object, so it can add its own assertions for the case.
    """

    spec: OpSpec
    range: Any  # rangedispatch.Range
    kind: str

    @property
    def op(self) -> Any:
        return self.spec.op

    @property
    def candidate(self) -> str | None:
        return None if self.kind in CHECKS else self.kind

    @property
    def id(self) -> str:
        return f"{self.spec.name}-{range_id(self.op, self.range)}-{self.kind}"

    @property
    def key(self) -> tuple[str, str]:
        """Report key: op name and range."""
        return self.spec.name, range_label(self.range)

    def __repr__(self) -> str:
        return f"RangeCase({self.id})"


@dataclass(frozen=True)
class HintRegion:
    """The shapes a MultiKernel's ``nearest`` policy sends to one variant: those whose sizes
    are closer (L1 in log2 space) to its hint than to any other hint."""

    index: int
    hint: tuple[int, ...]
    variant: str

    @property
    def lo(self) -> int:  # orders the report
        return self.index

    hi = None

    @property
    def label(self) -> str:
        return f"nearest {'x'.join(map(str, self.hint))}"

    def __str__(self) -> str:
        return self.label


def is_cell(rng: Any) -> bool:
    """Whether a case's range is a grid cell (one range per dispatch dimension)."""
    return hasattr(rng, "ranges")


def range_label(rng: Any) -> str:
    if isinstance(rng, HintRegion):
        return rng.label
    if is_cell(rng):
        return "x".join(range_label(r) for r in rng.ranges)
    hi = "inf" if rng.hi is None else str(rng.hi)
    return f"[{rng.lo},{hi})"


def range_id(op: Any, rng: Any) -> str:
    if isinstance(rng, HintRegion):
        return f"near[{'x'.join(map(str, rng.hint))}]"
    dispatch = op.dispatch
    if is_cell(rng):  # x[0]in[0,32)-x[1]in[1024,inf)
        return "-".join(f"{axis}in{range_label(r)}" for axis, r in zip(dispatch.axes, rng.ranges))
    return f"{dispatch}in{range_label(rng)}" if dispatch is not None else "all"


def parse_marker(mark: Any) -> list[OpSpec]:
    """Validate one marker: ops as positional args, options as keywords."""
    from rangedispatch import MultiKernel, dispatcher_of

    if not mark.args:
        raise TypeError(
            f"@pytest.mark.{MARKER}() needs the op to check as its first argument, e.g. "
            f"@pytest.mark.{MARKER}(my_op, example=lambda: (torch.randn(8, 512),))"
        )
    unknown = sorted(set(mark.kwargs) - set(MARKER_OPTIONS))
    if unknown:
        known = "\n".join(f"  {k}: {v}" for k, v in MARKER_OPTIONS.items())
        raise TypeError(f"@pytest.mark.{MARKER}: unknown option(s) {unknown}; the options are:\n{known}")
    options = dict(mark.kwargs)
    layouts = options.get("layouts")
    if layouts is not None:
        bad = [lay for lay in _as_list(layouts) if lay not in LAYOUTS]
        if bad:
            raise ValueError(f"@pytest.mark.{MARKER}: layouts={bad!r} are not known; use any of {list(LAYOUTS)}")
    if options.get("grad", "auto") not in (True, False, "auto"):
        raise ValueError(f"@pytest.mark.{MARKER}: Expected grad='auto', True or False but got grad={options['grad']!r}; "
                         "'auto' checks gradients where the reference has them")
    for key in ("examples", "max_size"):
        value = options.get(key)
        if value is not None and (not isinstance(value, int) or isinstance(value, bool) or value < 1):
            raise ValueError(f"@pytest.mark.{MARKER}: {key} must be a positive int, got {value!r}")
    specs = []
    for target in mark.args:
        if isinstance(target, MultiKernel):
            if options.get("make_inputs", target.make_inputs) is None:
                raise ValueError(
                    f"@pytest.mark.{MARKER}: MultiKernel {target.name!r} has no make_inputs; pass "
                    "make_inputs=lambda sizes: (...args at those sizes...) to the marker or to MultiKernel(...)"
                )
            specs.append(OpSpec(target, target, options))
            continue
        try:
            op = dispatcher_of(target)
        except Exception as exc:
            raise TypeError(
                f"@pytest.mark.{MARKER}: {target!r} is not a rangedispatch op ({exc}); pass an op "
                "registered with register_custom_op_autotuning or made with @range_dispatch"
            ) from exc
        if op.plan is None:
            raise ValueError(f"@pytest.mark.{MARKER}: op {op.name!r} has no candidates registered yet")
        specs.append(OpSpec(op, target, options))
    return specs


def cases_for(spec: OpSpec) -> list[RangeCase]:
    """Every generated case of one op, range by range (a MultiKernel: hint region by region)."""
    op = spec.op
    if is_multikernel(spec):
        return _hint_cases(spec)
    plan = op.plan
    reference = op._ref.name
    from .examples import wants_graphs

    graphs = wants_graphs(spec)
    float64_reference = spec.options.get("reference") is not None
    out = []
    for rng, cands in op_ranges(spec):
        for cand in cands:
            if cand.name == reference and not float64_reference:
                continue  # the reference against itself proves nothing
            out.append(RangeCase(spec, rng, cand.name))
        if plan.dispatch is not None:
            out.append(RangeCase(spec, rng, DISPATCH))
        if spec.options.get("compiled", False):
            out.append(RangeCase(spec, rng, COMPILED))
        if graphs:
            out.append(RangeCase(spec, rng, GRAPHED))
        if spec.options.get("benchmark", True):
            out.append(RangeCase(spec, rng, BENCH))
    return out


def op_ranges(spec: OpSpec) -> list[tuple[Any, Any]]:
    """The op's ranges with their candidates; an op with ``split_points="auto"`` is tuned on
    the marker's example first, and its discovered ranges are checked."""
    op = spec.op
    if getattr(op, "auto", None) is None:
        return [(rng, op.plan.candidates[rng]) for rng in op.plan.ranges]
    if op.table is None:
        from .examples import ensure_tuned, example_call

        ensure_tuned(spec, *example_call(spec))
    return [(r.range, op.plan.all_candidates) for r in op.table.results]


def is_grid(spec: OpSpec) -> bool:
    from rangedispatch import GridDispatchOp

    return isinstance(spec.op, GridDispatchOp)


def is_multikernel(spec: OpSpec) -> bool:
    from rangedispatch import MultiKernel

    return isinstance(spec.op, MultiKernel)


def _hint_cases(spec: OpSpec) -> list[RangeCase]:
    """Per hint region: every variant but the first (the reference, unless a float64 reference
    is given), the MultiKernel itself, and a benchmark."""
    variants = spec.op.variants
    float64_reference = spec.options.get("reference") is not None
    out = []
    for i, v in enumerate(spec.op.hinted):  # variants without a hint own no region
        region = HintRegion(i, v.hint, v.name)
        out += [RangeCase(spec, region, w.name) for j, w in enumerate(variants) if j or float64_reference]
        out.append(RangeCase(spec, region, DISPATCH))
        if spec.options.get("benchmark", True):
            out.append(RangeCase(spec, region, BENCH))
    return out


def _as_list(value: Any) -> list[Any]:
    return list(value) if isinstance(value, (list, tuple, set, frozenset)) else [value]
