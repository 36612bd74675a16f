"""The plugin's equivalence check called directly (no pytester): faults that need a repeated call."""

import pytest
import torch

import rangedispatch as rd
from pytest_rangedispatch.cases import OpSpec, RangeCase
from pytest_rangedispatch.checks import Equivalence, Variant
from rangedispatch.testing import FakeBenchmarker


def build(candidate):
    op = rd.range_dispatch(lambda x, w: x * w, dispatch_on=("x", 1), split_points=[64],
                           benchmarker=FakeBenchmarker({}), cache=False, name="scale")
    op.register_impl(candidate, name="flaky")
    spec = OpSpec(op, op, {"example": lambda: (torch.randn(2, 10, 8), torch.randn(8))})
    return Equivalence(RangeCase(spec, rd.Range(1, 65), "flaky"), None)


def test_a_candidate_whose_repeated_calls_differ_is_reported_as_non_deterministic():
    calls = []

    def flaky(x, w):  # right on the first call of each input, 5 % off on the second
        calls.append(1)
        return x * w * (1.05 if len(calls) % 2 == 0 else 1.0)

    check = build(flaky)
    variant = Variant(torch.float32, "cpu", "contiguous")
    check.check(10, variant)  # one call: indistinguishable from a correct candidate
    with pytest.raises(AssertionError, match=r"scale: range x\[1\] in \[1, 65\), x\[1\]=10 .*candidate 'flaky' is "
                                             r"non-deterministic: two calls on the same input differ"):
        check.check(10, variant, repeat=True)


def test_a_deterministic_candidate_passes_the_repeat():
    check = build(lambda x, w: torch.mul(w, x))
    check.check(10, Variant(torch.float32, "cpu", "contiguous"), repeat=True)
