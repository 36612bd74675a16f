"""Helpers behind the fixtures: boundary sizes, Hypothesis size strategies per range, an
every-candidate boundary check, and device-synchronised timing for pytest-benchmark."""

from __future__ import annotations

from typing import Any, Iterable, Sequence

from .cases import is_cell


def boundary_sizes(rng: Any, *, upper: int = 256) -> list[Any]:
    """lo, lo+1, hi-1 and hi (the first size of the next range) of a range, sizes >= 1; for a
    grid cell, every combination of its dimensions' boundary sizes."""
    if is_cell(rng):
        import itertools

        return sorted(itertools.product(*[boundary_sizes(r, upper=upper) for r in rng.ranges]))
    sizes = {rng.lo, rng.lo + 1}
    if rng.lo > 0:
        sizes.add(rng.lo - 1)
    if rng.hi is not None:
        sizes |= {rng.hi - 1, rng.hi}
    else:
        sizes.add(max(upper, rng.lo + 2))
    return sorted(s for s in sizes if s >= 1)


def assert_branches_equivalent(op: Any, *args: Any, sizes: Iterable[int] | None = None,
                               rtol: float | None = None, atol: float | None = None, **kwargs: Any) -> int:
    """Check every candidate against the reference at every range's boundary sizes.

    Returns the number of (candidate, size) comparisons made. Raises ``AssertionError``
    naming op, range, candidate, size and the mismatch.
    """
    __tracebackhide__ = True
    from rangedispatch import compare, dispatcher_of
    from rangedispatch.decide.inputs import CallTemplate, InputFactory

    rd_op = dispatcher_of(op)
    plan = rd_op.plan
    assert plan is not None, f"{rd_op.name}: no candidates registered"
    template = CallTemplate.from_call(rd_op.reference_fn, args, kwargs)
    template.check(plan.dispatch)
    factory = InputFactory(template, plan.dispatch, rd_op.input_gen_fns, op_name=rd_op.name)
    reference = rd_op.candidates[next(iter(rd_op.candidates))]
    checked = 0
    for rng in plan.ranges:
        wanted: Sequence[Any] = [s for s in (sizes or boundary_sizes(rng)) if s in rng]
        if plan.dispatch is None:
            wanted = [None]
        for size in wanted:
            call_args, call_kwargs = factory.make(size)
            expected = reference.call(*call_args, **call_kwargs)
            for cand in plan.candidates[rng]:
                got = cand.call(*call_args, **call_kwargs)
                found = compare(got, expected, rtol=rtol, atol=atol)
                if found is not None:
                    raise AssertionError(
                        f"{rd_op.name}: candidate {cand.name!r} differs from the reference in range "
                        f"{rng} at {plan.dispatch}={size}: {found}"
                    )
                checked += 1
    return checked


def size_strategies(op: Any, *, max_size: int | None = None) -> dict[Any, Any]:
    """``{range: strategy}``: sizes inside each range, boundaries (lo, lo+1, hi-1) drawn often
    (for a grid op, ``{cell: strategy of points}``)."""
    from hypothesis import strategies as st

    from rangedispatch import dispatcher_of
    from rangedispatch.decide.tuner import effective_upper_bound, range_top

    rd_op = dispatcher_of(op)
    bound = max_size if max_size is not None else effective_upper_bound(rd_op.dispatch, rd_op.settings)
    out = {}
    def sizes(rng: Any) -> Any:
        top = range_top(rng, bound)
        edges = sorted({s for s in (rng.lo, rng.lo + 1, top) if rng.lo <= s <= top})
        return st.one_of(st.sampled_from(edges), st.integers(rng.lo, top))

    for rng in rd_op.plan.ranges:  # a grid cell: a tuple, one size per dimension
        out[rng] = st.tuples(*map(sizes, rng.ranges)) if is_cell(rng) else sizes(rng)
    return out


def synchronised(fn: Any, args: Sequence[Any], kwargs: dict[str, Any]) -> Any:
    """``fn`` followed by a device synchronisation when any tensor argument is on a GPU."""
    devices = {getattr(a, "device", None) for a in [*args, *kwargs.values()]}
    cuda = [d for d in devices if d is not None and getattr(d, "type", None) == "cuda"]
    if not cuda:
        return fn
    import torch

    def timed(*a: Any, **k: Any) -> Any:
        out = fn(*a, **k)
        torch.cuda.synchronize(cuda[0])
        return out

    return timed
