"""The plugin's equivalence check called directly (no pytester): faults that need a repeated call."""

import pytest
import torch

import rangedispatch as rd
from pytest_rangedispatch.cases import OpSpec, RangeCase
from pytest_rangedispatch.checks import Equivalence, Variant
from rangedispatch.testing import FakeBenchmarker


def scale_op(candidate, name):
    op = rd.range_dispatch(lambda x, w: x * w, dispatch_on=("x", 1), split_points=[64],
                           benchmarker=FakeBenchmarker({}), cache=False, name="scale")
    op.register_impl(candidate, name=name)
    return op


def example():
    return torch.randn(2, 10, 8), torch.randn(8)


def build(candidate):
    op = scale_op(candidate, "flaky")
    spec = OpSpec(op, op, {"example": example})
    return Equivalence(RangeCase(spec, rd.Range(1, 65), "flaky"), None)


def test_a_candidate_whose_repeated_calls_differ_is_reported_as_non_deterministic():
    calls = []

    def flaky(x, w):  # right on the first call of each input, 5 % off on the second
        calls.append(1)
        return x * w * (1.05 if len(calls) % 2 == 0 else 1.0)

    check = build(flaky)
    variant = Variant(torch.float32, "cpu", "contiguous")
    check.check(10, variant, grad=False)  # one call: indistinguishable from a correct candidate
    with pytest.raises(AssertionError, match=r"scale: range x\[1\] in \[1, 65\), x\[1\]=10 .*candidate 'flaky' is "
                                             r"non-deterministic: two calls on the same input differ"):
        check.check(10, variant, repeat=True, grad=False)


def test_a_deterministic_candidate_passes_the_repeat():
    check = build(lambda x, w: torch.mul(w, x))
    check.check(10, Variant(torch.float32, "cpu", "contiguous"), repeat=True)


def test_cuda_graph_cases_follow_the_example_device_and_the_option():
    from pytest_rangedispatch.cases import GRAPHED, cases_for

    op = scale_op(lambda x, w: torch.mul(w, x), "mul")
    kinds = lambda **opts: [c.kind for c in cases_for(OpSpec(op, op, {"example": example, **opts}))]  # noqa: E731
    assert GRAPHED not in kinds()  # a CPU example: nothing to capture
    assert GRAPHED not in kinds(cuda_graphs=False)
    assert kinds(cuda_graphs=True).count(GRAPHED) == 2  # one per range


def test_a_forced_cuda_graph_case_skips_with_the_reason_on_a_cpu_example():
    from pytest_rangedispatch.checks import run_graphed

    op = scale_op(lambda x, w: torch.mul(w, x), "mul")
    spec = OpSpec(op, op, {"example": example, "cuda_graphs": True})
    with pytest.raises(pytest.skip.Exception, match="need the example on a CUDA device .it is on cpu"):
        run_graphed(RangeCase(spec, rd.Range(1, 65), "cuda_graphs"))


def test_the_dispatch_case_checks_both_sides_of_a_split_the_table_made_inside_the_range():
    from pytest_rangedispatch.cases import DISPATCH
    from pytest_rangedispatch.checks import boundary_sizes

    times = {"<lambda>": 1.0, "big": lambda s: 4.0 if s < 700 else 0.5}
    op = rd.range_dispatch(lambda x, w: x * w, dispatch_on=("x", 1), split_points=[64], range_upper_bound=1024,
                           refine_splits=True, benchmarker=FakeBenchmarker(times), cache=False, name="scale")
    op.register_impl(lambda x, w: torch.mul(w, x), name="big")
    spec = OpSpec(op, op, {"example": example})
    case = RangeCase(spec, rd.Range(65, None), DISPATCH)
    before = boundary_sizes(case)
    op.tune(*example())
    split = op.table.results[-1].range.lo
    assert [r.winner for r in op.table.results] == ["<lambda>", "<lambda>", "big"] and 512 < split < 1024
    assert {split - 1, split} <= set(boundary_sizes(case)) and split not in before
