"""The marker's gradient checks: every branch computes the same function, its backward included."""

# imported here so in-process pytester runs share them (see test_marker)
import hypothesis  # noqa: F401
import pytest
import rangedispatch  # noqa: F401
import torch  # noqa: F401

from .test_plugin import LOAD

PLUGIN_TEST = """
import os, pytest, torch
import rangedispatch as rd
from rangedispatch.testing import FakeBenchmarker

FAULT = os.environ.get("RD_FAULT", "none")


class Scaled(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, w):
        ctx.save_for_backward(x, w)
        return x * w

    @staticmethod
    def backward(ctx, g):
        x, w = ctx.saved_tensors
        return g * w * 1.5, (g * x).sum(0)


@rd.range_dispatch(dispatch_on=("x", 0), split_points=[64], benchmarker=FakeBenchmarker({}), cache=False)
def mul(x, w):
    return x * w


@mul.register_impl
def fused(x, w):
    return torch.mul(w, x)


@mul.register_impl
def faulty(x, w):
    if FAULT == "grad":
        return Scaled.apply(x, w)
    if FAULT == "nograd":
        with torch.no_grad():
            return x * w
    return w * x


@pytest.mark.range_autotune(mul, example=lambda: (torch.randn(8, 16), torch.randn(16)), benchmark=False,
                            dtypes=[torch.float32, torch.bfloat16], layouts=["contiguous"], examples=5,
                            grad="auto" if os.environ.get("RD_GRAD", "auto") == "auto" else False)
def test_mul():
    pass
"""


@pytest.mark.parametrize("fault, grad, failures", [
    ("none", "auto", []),
    ("grad", "auto", ["gradient of 'x' differs from the reference's"]),
    ("nograd", "auto", ["output does not require grad where the reference's does"]),
    ("grad", "off", []),
])
def test_the_plugin_checks_gradients_by_default(pytester, monkeypatch, fault, grad, failures):
    monkeypatch.setenv("RD_FAULT", fault)
    monkeypatch.setenv("RD_GRAD", grad)
    pytester.makepyfile(test_op=PLUGIN_TEST)
    result = pytester.runpytest(*LOAD, "-q", "-W", "ignore::RuntimeWarning")
    outcomes = result.parseoutcomes()
    assert outcomes.get("failed", 0) == (2 if failures else 0), result.stdout.str()[-3000:]
    for said in failures:  # both ranges, naming the input, size, dtype and the error
        result.stdout.fnmatch_lines([f"*range x?0? in ?1, 65), x?0?=*dtype *candidate 'faulty' {said}*"])


def test_a_bad_grad_option_is_refused(pytester):
    pytester.makepyfile(test_bad=PLUGIN_TEST.replace('grad="auto" if os.environ.get("RD_GRAD", "auto") == "auto" else False',
                                                     'grad="always"'))
    result = pytester.runpytest(*LOAD, "-q")
    result.stdout.fnmatch_lines(["*Expected grad='auto', True or False but got grad='always'*"])
