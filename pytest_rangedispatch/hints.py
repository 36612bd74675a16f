"""Checks of a ``MultiKernel``: its variants and its dispatch, region by region.

A region is the set of shapes the ``nearest`` policy sends to one variant. Every variant must
compute the same function everywhere (the ``benchmark`` policy may pick any of them for any
shape), so each region checks every variant against the reference on Hypothesis-drawn shapes
in the region and, always, on the region's hint and on the last shapes before each boundary
with a neighbouring region (found by bisection along the log2 segment between the hints). The
dispatch case also checks the first shapes past each boundary. The benchmark case times every
variant and the MultiKernel at the region's hint and boundary shapes.
"""

from __future__ import annotations

import math
from typing import Any, Callable, Sequence

import torch

from .cases import DISPATCH, MARKER, RangeCase, _as_list
from .checks import (
    Equivalence,
    Variant,
    _map,
    default_benchmarker,
    describe_inputs,
    seeded,
    summarise,
    time_all,
    with_layout,
)

Shape = tuple[int, ...]


class HintSpace:
    """The geometry of a MultiKernel's hints: which variant owns a shape, the shapes on either
    side of each boundary between regions, and a Hypothesis strategy of shapes in a region."""

    def __init__(self, mk: Any, spread: float = 2.0) -> None:
        self.mk = mk
        self.hints = [tuple(v.hint) for v in mk.hinted]
        self.rank = len(self.hints[0])
        self.varies = [len({h[d] for h in self.hints}) > 1 for d in range(self.rank)]
        # dims equal to each other in every hint (x and y of one shape, under the default
        # sizes) stay equal in every drawn shape: each takes its first twin's value
        self.twin = [next(e for e in range(self.rank) if all(h[e] == h[d] for h in self.hints))
                     for d in range(self.rank)]
        logs = [[math.log2(max(h[d], 1)) for h in self.hints] for d in range(self.rank)]
        # the sweep box: a factor ``spread`` beyond the hints on every varying dimension
        pad = math.log2(spread)
        self.box = [(min(ls) - pad * v, max(ls) + pad * v) for ls, v in zip(logs, self.varies)]

    def owner(self, shape: Sequence[int]) -> int:
        return self.mk.hinted.index(self.mk.nearest(shape))

    def point(self, logs: Sequence[float]) -> Shape:
        return tuple(max(1, round(2 ** logs[t])) if v else h
                     for t, v, h in zip(self.twin, self.varies, self.hints[0]))

    def _log(self, shape: Sequence[int]) -> list[float]:
        return [math.log2(max(x, 1)) for x in shape]

    def boundary(self, i: int, target: Sequence[float]) -> tuple[Shape, Shape] | None:
        """Bisect the log2 segment from hint ``i`` towards ``target`` (log2 sizes): the last
        shape region ``i`` owns and the first it does not, or ``None`` if it owns the whole
        segment."""
        start = self._log(self.hints[i])
        at = lambda t: self.point([a + t * (b - a) for a, b in zip(start, target)])  # noqa: E731
        if self.owner(at(1.0)) == i:
            return None
        lo, hi = 0.0, 1.0
        for _ in range(48):
            mid = (lo + hi) / 2
            lo, hi = (mid, hi) if self.owner(at(mid)) == i else (lo, mid)
        return at(lo), at(hi)

    def edges(self) -> list[list[float]]:
        """Log2 points just outside the sweep box along each varying dimension."""
        out = []
        for d, v in enumerate(self.varies):
            if v:
                for x in self.box[d]:
                    out.append([x if e == d else None for e in range(self.rank)])
        return out

    def fixed_shapes(self, i: int, *, outside: bool) -> list[Shape]:
        """Region ``i``'s hint, the last shapes it owns towards every other hint and towards the
        box's edges, and (``outside``) the first shapes past those boundaries."""
        shapes = [self.hints[i]]
        targets = [self._log(h) for j, h in enumerate(self.hints) if j != i]
        start = self._log(self.hints[i])
        targets += [[s if x is None else x for s, x in zip(start, edge)] for edge in self.edges()]
        for target in targets:
            found = self.boundary(i, target)
            if found is None:
                if self.owner(self.point(target)) == i:
                    shapes.append(self.point(target))  # the box's edge, still in this region
                continue
            shapes.append(found[0])
            if outside:
                shapes.append(found[1])
        return list(dict.fromkeys(shapes))

    def strategy(self, i: int) -> Any:
        """Shapes owned by region ``i``: points along the segments from its hint towards the
        other hints and the box's corners, jittered, kept when the region owns them."""
        from hypothesis import strategies as st

        start = self._log(self.hints[i])
        targets = [self._log(h) for j, h in enumerate(self.hints) if j != i]
        targets += [[lo if c else hi for (lo, hi), c in zip(self.box, bits)]
                    for bits in _corners(self.rank)]

        def build(drawn: tuple[list[float], float, list[float]]) -> Shape:
            target, t, jitter = drawn
            logs = [min(max(a + t * (b - a) + j, lo), hi)
                    for a, b, j, (lo, hi) in zip(start, target, jitter, self.box)]
            return self.point(logs)

        jitter = st.lists(st.floats(-0.5, 0.5), min_size=self.rank, max_size=self.rank)
        return (st.tuples(st.sampled_from(targets), st.floats(0.0, 1.0), jitter).map(build)
                .filter(lambda shape: self.owner(shape) == i))


def _corners(rank: int) -> list[tuple[bool, ...]]:
    return [tuple(bool(n >> d & 1) for d in range(rank)) for n in range(2 ** rank)]


class HintInputs:
    """``make_inputs(sizes)`` in a variant (dtype, device, layout), seeded per shape, with a
    check that the inputs' sizes are the sizes asked for."""

    def __init__(self, name: str, mk: Any, make_inputs: Callable[[Shape], Any]) -> None:
        self.name, self.mk, self.make_inputs = name, mk, make_inputs
        self._checked: set[Shape] = set()

    def raw(self, shape: Shape) -> tuple[tuple[Any, ...], dict[str, Any]]:
        made = self.make_inputs(tuple(shape))
        args = tuple(made) if isinstance(made, (tuple, list)) else (made,)
        if shape not in self._checked:
            got = tuple(int(s) for s in self.mk.sizes_fn(*args))
            if got != tuple(shape):
                raise ValueError(
                    f"@pytest.mark.{MARKER}({self.name}): make_inputs({list(shape)}) built inputs whose sizes are "
                    f"{list(got)}; make_inputs and the MultiKernel's sizes= must agree (the sizes are what the "
                    "hints are compared with)"
                )
            self._checked.add(shape)
        return args, {}

    def make(self, shape: Shape, variant: Variant) -> tuple[tuple[Any, ...], dict[str, Any]]:
        args, kwargs = seeded(f"{self.name}|{shape}|{variant}", variant.device, lambda: self.raw(shape))

        def convert(t: Any) -> Any:
            t = t.to(variant.device)
            if variant.dtype is not None and t.is_floating_point():
                t = t.to(variant.dtype)
            return with_layout(t, variant.layout)

        return _map(args, kwargs, convert)


def _inputs(case: RangeCase) -> HintInputs:
    spec = case.spec
    return HintInputs(spec.name, spec.op, spec.options.get("make_inputs") or spec.op.make_inputs)


def _default_variant(inputs: HintInputs, case: RangeCase) -> tuple[Any, str]:
    args, _ = inputs.raw(case.range.hint)
    first = next((a for a in args if isinstance(a, torch.Tensor)), None)
    return (first.dtype if first is not None and first.is_floating_point() else None,
            str(first.device) if first is not None else "cpu")


class HintEquivalence(Equivalence):
    """A variant (or the MultiKernel) against the reference over one hint region.

    Variants default to the inputs' own dtype, device and layout: variants are usually
    compiled or tuned for one dtype. The marker's ``dtypes``, ``devices`` and ``layouts`` add
    more."""

    def __init__(self, case: RangeCase, profile: str | None) -> None:
        spec = case.spec
        self.op = mk = spec.op
        self.space = HintSpace(mk)
        self.inputs = _inputs(case)
        dtype, device = _default_variant(self.inputs, case)
        opts = spec.options
        self._setup(case, profile, _listed(opts.get("dtypes"), dtype),
                    [str(d) for d in _listed(opts.get("devices"), device)], _listed(opts.get("layouts"), "contiguous"))
        by_name = {v.name: v for v in mk.variants}
        if case.kind == DISPATCH:
            self.subject: Callable[..., Any] = mk
            self.subject_name = f"the MultiKernel (policy {mk.policy!r})"
        else:
            self.subject = by_name[case.kind].fn
            self.subject_name = f"variant {case.kind!r}"
        self.reference = mk.variants[0].fn
        self.names: list[str] = []

    def strategy(self) -> Any:
        return self.space.strategy(self.case.range.index)

    def examples_for(self, base: int) -> int:
        return base

    def every_size(self, variant: Any) -> None:
        return None  # regions are multi-dimensional: the sweep and the boundary shapes cover them

    def fixed_sizes(self) -> list[Any]:
        return self.space.fixed_shapes(self.case.range.index, outside=self.case.kind == DISPATCH)

    def _where(self, size: Any, variant: Variant, args: tuple[Any, ...], kwargs: dict[str, Any]) -> str:
        region = self.case.range
        nearest = self.space.hints[self.space.owner(size)]
        return (f"{self.case.spec.name}: region {region.label}, sizes {list(size)} (nearest hint {list(nearest)}; "
                f"{variant.describe()}; inputs {describe_inputs(args, kwargs, self.names)})")


def _listed(value: Any, default: Any) -> list[Any]:
    return [default] if value is None else _as_list(value)


def run_hint_benchmark(case: RangeCase, *, baseline: dict[str, Any] | None,
                       threshold: float | None) -> dict[str, Any]:
    """Every variant and the MultiKernel, timed at the region's hint and boundary shapes. The
    region's own variant plays the table's winner: it is stale when another variant is faster
    over the region beyond the noise and the tolerance."""
    spec, region = case.spec, case.range
    mk = spec.op
    space = HintSpace(mk)
    inputs = _inputs(case)
    dtype, device = _default_variant(inputs, case)
    shapes = space.fixed_shapes(region.index, outside=False)
    built = {shape: inputs.make(shape, Variant(dtype, device, "contiguous")) for shape in shapes}
    subjects = []
    for v in mk.variants:  # a variant that fails here is the equivalence cases' to report
        try:
            for a, k in built.values():
                v.fn(*a, **k)
        except Exception:
            continue
        subjects.append((v.name, v.fn))
    for a, k in built.values():  # decide (and, under "benchmark", time) outside the measurement
        mk(*a, **k)
    subjects.append((DISPATCH, mk))
    benchmarker = mk.benchmarker or default_benchmarker(torch.device(device).type)
    per_size, noises = time_all(subjects, shapes, built.__getitem__, benchmarker, device)
    record = summarise(case, per_size, noises, winner=region.variant, baseline=baseline, threshold=threshold,
                       label=f"{spec.name}: region {region.label}", stale="stale hints",
                       owner="the variant of this region's hint",
                       fix="move the hints, add a variant tuned for these shapes, or use policy='benchmark'")
    record.update(sizes=[list(s) for s in shapes], device=device)
    return record
