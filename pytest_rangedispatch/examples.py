"""The marker's example call, the op tuned on it, and where a case runs (a grid cell's sizes:
one dimension at a time, see :mod:`pytest_rangedispatch.cells`): what the generated cases share,
below the checks themselves."""

from __future__ import annotations

import itertools
from dataclasses import replace
from typing import TYPE_CHECKING, Any, Iterable, Sequence

import torch

from rangedispatch.decide.inputs import InputFactory
from rangedispatch.decide.tuner import range_top
from rangedispatch.op.grid import cell_points

from .locking import device_lock
from .options import MARKER

if TYPE_CHECKING:
    from .cases import OpSpec


def tensors_of(args: Sequence[Any], kwargs: dict[str, Any]) -> Iterable[Any]:
    yield from (a for a in args if isinstance(a, torch.Tensor))
    yield from (v for v in kwargs.values() if isinstance(v, torch.Tensor))


def example_call(spec: OpSpec) -> tuple[tuple[Any, ...], dict[str, Any]]:
    """The marker's ``example`` as ``(args, kwargs)``; else the inputs the op was tuned with."""
    example = spec.options.get("example")
    if callable(example):
        example = example()
    if example is None:
        template = spec.op._template
        if template is None:
            raise ValueError(
                f"@pytest.mark.{MARKER}({spec.name}): no example inputs; pass example=... (a tuple "
                "of args, a dict of kwargs, or a callable returning one) so the other dimensions, "
                "dtypes and devices are known"
            )
        factory = InputFactory(template, spec.op.dispatch, spec.op.input_gen_fns, op_name=spec.name)
        size = template.dispatch_size(spec.op.dispatch) if spec.op.dispatch else None
        return factory.make(size)
    if isinstance(example, dict):
        return (), dict(example)
    if (isinstance(example, tuple) and len(example) == 2 and isinstance(example[0], (tuple, list))
            and isinstance(example[1], dict)):
        return tuple(example[0]), dict(example[1])
    if isinstance(example, (tuple, list)):
        return tuple(example), {}
    return (example,), {}


def ensure_tuned(spec: OpSpec, args: Sequence[Any], kwargs: dict[str, Any]) -> Any:
    """The op's table, tuning it on the example inputs if it has none. Tuning times
    candidates, so it holds the device's lock exclusively (under xdist no other worker's
    checks or timings overlap it); a table another worker cached meanwhile is loaded."""
    op = spec.op
    if op.table is None:
        first = next(iter(tensors_of(args, kwargs)), None)
        with device_lock(str(first.device) if first is not None else "cpu", exclusive=True):
            if op.table is None:
                op.tune(*args, **kwargs)
    return op.table


def wants_graphs(spec: OpSpec) -> bool:
    """Whether an op gets a CUDA-graph case per range: ``cuda_graphs=True``, or by default
    when CUDA is present and the marker's example (or its ``devices``) is on CUDA."""
    choice = spec.options.get("cuda_graphs")
    if choice is not None:
        return bool(choice)
    if not torch.cuda.is_available():
        return False
    devices = spec.options.get("devices")
    if devices is not None:
        devices = devices if isinstance(devices, (list, tuple)) else [devices]
        return any(torch.device(d).type == "cuda" for d in devices)
    try:
        args, kwargs = example_call(spec)
    except Exception:
        return False
    return any(t.is_cuda for t in tensors_of(args, kwargs))


def bench_points(spec: Any, cell: Any) -> tuple[tuple[int, ...], ...]:
    """Where a cell's benchmark case times: tuning's points, with the marker's ``max_size``
    as the top of unbounded dimensions."""
    top = spec.options.get("max_size")
    axes = spec.op.dispatch.axes
    if top is not None:
        axes = tuple(replace(a, upper_bound=top) for a in axes)
    return cell_points(cell, axes, spec.op.settings)


def axis_top(spec: Any, axis: Any, rng: Any) -> int:
    top = spec.options.get("max_size")
    if top is None:
        top = axis.upper_bound if axis.upper_bound is not None else spec.op.settings.upper_bound
    return range_top(rng, top)


def axis_window(spec: Any, axis: Any, rng: Any, *, across: bool) -> tuple[int, int]:
    """The sizes a case covers on one dimension; ``across``: one past each boundary too."""
    top = axis_top(spec, axis, rng)
    if across:
        return max(rng.lo - 1, 0), top + (1 if rng.hi is not None else 0)
    return rng.lo, top


def axis_edges(spec: Any, axis: Any, rng: Any, *, across: bool) -> list[int]:
    low, high = axis_window(spec, axis, rng, across=across)
    top = axis_top(spec, axis, rng)
    return sorted(s for s in {rng.lo - 1, rng.lo, rng.lo + 1, top, top + 1} if low <= s <= high)


def corner_points(spec: Any, cell: Any, *, across: bool) -> list[tuple[int, ...]]:
    """Every combination of each dimension's boundary sizes, plus the marker's ``sizes``
    given as points inside the case's window."""
    axes = spec.op.dispatch.axes
    points = set(itertools.product(*[axis_edges(spec, a, r, across=across) for a, r in zip(axes, cell.ranges)]))
    windows = [axis_window(spec, a, r, across=across) for a, r in zip(axes, cell.ranges)]
    for extra in spec.options.get("sizes") or ():
        if isinstance(extra, (tuple, list)) and len(extra) == len(axes) and all(
                lo <= int(s) <= hi for s, (lo, hi) in zip(extra, windows)):
            points.add(tuple(int(s) for s in extra))
    return sorted(points)
