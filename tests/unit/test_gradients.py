"""Branches equal in their gradients too: the backward check, in tuning and in the plugin."""

import contextlib
import math
import warnings

import pytest
import torch
import torch.nn.functional as F

import rangedispatch as rd
from rangedispatch.measure.gradients import differentiable, gradient_fault, gradients
from rangedispatch.testing import FakeBenchmarker


class ScaledGrad(torch.autograd.Function):
    """``x * w`` with the right forward and a gradient of ``x`` 1.5x too large."""

    @staticmethod
    def forward(ctx, x, w):
        ctx.save_for_backward(x, w)
        return x * w

    @staticmethod
    def backward(ctx, g):
        x, w = ctx.saved_tensors
        return g * w * 1.5, (g * x).sum(0)


def scaled_grad(x, w):
    return ScaledGrad.apply(x, w)


def detached(x, w):
    with torch.no_grad():
        return x * w


def mul(x, w):
    return x * w


def mul_op(*impls, **options):
    times = {"mul": 3.0, **{f.__name__: 1.0 for f in impls}, "right": 2.0}
    op = rd.range_dispatch(mul, dispatch_on=("x", 0), split_points=[64],
                           benchmarker=FakeBenchmarker(times), cache=False, **options)
    for impl in impls:
        op.register_impl(impl)
    op.register_impl(lambda x, w: torch.mul(w, x), name="right")
    return op


@pytest.mark.parametrize("faulty, said", [
    (scaled_grad, "gradient of 'x' differs from the reference's: grad x: values differ"),
    (detached, "output does not require grad where the reference's does"),
])
def test_training_calls_tune_with_gradients_checked(faulty, said):
    op = mul_op(faulty)
    x, w = torch.randn(8, 16), torch.randn(16)
    with torch.no_grad():
        op(x, w)  # inference: the faulty candidate is right and fastest
    assert set(op.table.winners.values()) == {faulty.__name__}
    with pytest.warns(RuntimeWarning, match=f"'{faulty.__name__}' loses range .*{said}"):
        y = op(x.requires_grad_(), w.requires_grad_())  # training: a table of its own
    training = [s for s in op.tables if "+grad" in s]
    assert len(op.tables) == 2 and training == ["x:float32[*, 16]@cpu+grad,w:float32[16]@cpu+grad"]
    assert set(op.tables[training[0]].winners.values()) == {"right"}
    y.sum().backward()
    torch.testing.assert_close(w.grad, x.detach().sum(0))
    with torch.no_grad():  # inference calls keep their own table, through the generated call's guard
        assert not op(x, w).requires_grad
    assert op(x, w).requires_grad and len(op.tables) == 2


def test_objective_train_times_forward_plus_backward():
    backwards = []

    class Sin(torch.autograd.Function):
        @staticmethod
        def forward(ctx, x):
            ctx.save_for_backward(x)
            return torch.sin(x)

        @staticmethod
        def backward(ctx, g):
            backwards.append(1)
            return g * torch.cos(ctx.saved_tensors[0])

    with_backward = []

    class Recording(FakeBenchmarker):
        def measure(self, jobs):
            for job in jobs:
                before = len(backwards)
                job.fn()
                with_backward.append(len(backwards) > before)
            return super().measure(jobs)

    def sin(x):
        return torch.sin(x)

    def build(**options):
        op = rd.range_dispatch(sin, dispatch_on=("x", 0), split_points=[64], benchmarker=Recording({}), cache=False,
                               **options)
        op.register_impl(lambda x: Sin.apply(x), name="custom")
        return op

    build(objective="train").tune(torch.randn(8, 4))  # no input requires grad: "train" makes them leaves
    assert with_backward and any(with_backward)  # the custom candidate's timed jobs ran its backward
    with_backward.clear()
    build().tune(torch.randn(8, 4))
    assert with_backward and not any(with_backward)  # the default objective times the forward alone
    with pytest.raises(rd.ConfigError, match="objective to be one of 'device', 'wall', 'train' but got"):
        rd.range_dispatch(lambda x: x, dispatch_on=("x", 0), split_points=[4], objective="fast")


def attention(q, k, v):
    scale = 1 / math.sqrt(q.shape[-1])
    weights = torch.softmax(q @ k.transpose(-1, -2) * scale, dim=-1)
    return weights @ v


class FusedAttention(torch.autograd.Function):
    """An attention kernel with a hand-written backward that forgets the softmax's Jacobian
    correction term (a classic fused-kernel bug): right values, wrong dq and dk."""

    @staticmethod
    def forward(ctx, q, k, v):
        scale = 1 / math.sqrt(q.shape[-1])
        p = torch.softmax(q @ k.transpose(-1, -2) * scale, dim=-1)
        ctx.save_for_backward(q, k, v, p)
        return p @ v

    @staticmethod
    def backward(ctx, g):
        q, k, v, p = ctx.saved_tensors
        scale = 1 / math.sqrt(q.shape[-1])
        dv = p.transpose(-1, -2) @ g
        dp = g @ v.transpose(-1, -2)
        ds = p * dp  # missing: - p * (p * dp).sum(-1, keepdim=True)
        return ds @ k * scale, ds.transpose(-1, -2) @ q * scale, dv


def test_an_attention_op_with_a_wrong_fused_backward_loses_its_training_ranges():
    op = rd.range_dispatch(attention, dispatch_on=("q", 2), tie={"k": 2, "v": 2}, split_points=[32],
                           benchmarker=FakeBenchmarker({"attention": 3.0, "fused": 1.0, "sdpa": 2.0}), cache=False)
    op.register_impl(lambda q, k, v: FusedAttention.apply(q, k, v), name="fused")
    op.register_impl(lambda q, k, v: F.scaled_dot_product_attention(q, k, v), name="sdpa")
    q, k, v = (torch.randn(2, 4, 16, 8, requires_grad=True) for _ in range(3))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        out = op(q, k, v)
    lost = [str(w.message) for w in caught if "'fused' loses" in str(w.message)]
    assert len(lost) == 2 and all("gradient of 'q' differs" in m for m in lost)
    assert set(op.table.winners.values()) == {"sdpa"}
    out.sum().backward()
    ref = gradients(attention, (q.detach(), k.detach(), v.detach()), {}, ["q", "k", "v"])
    assert gradient_fault(gradients(F.scaled_dot_product_attention, (q.detach(), k.detach(), v.detach()), {},
                                    ["q", "k", "v"], ref.cotangents), ref) is None


def test_low_precision_gradients_are_judged_against_a_float32_truth():
    x, w = torch.randn(64, 256, dtype=torch.bfloat16), torch.randn(256, dtype=torch.bfloat16)

    def reordered(x, w):  # the same function, rounded in another order
        return (x.float() * w.float()).to(torch.bfloat16)

    ref = gradients(lambda x, w: x * w, (x, w), {}, ["x", "w"])
    up = (x.float(), w.float())
    truth = lambda: gradients(lambda x, w: x * w, up, {}, ["x", "w"], ref.cotangents)  # noqa: E731
    assert gradient_fault(gradients(reordered, (x, w), {}, ["x", "w"], ref.cotangents), ref, truth=truth) is None
    wrong = gradients(lambda x, w: ScaledGrad.apply(x, w), (x, w), {}, ["x", "w"], ref.cotangents)
    assert "gradient of 'x' differs" in gradient_fault(wrong, ref, truth=truth)
    assert not differentiable(lambda n: n * 2, (torch.arange(4),), {}, ["n"])  # integer inputs: no gradient


@pytest.mark.parametrize("guard", ["c-level", "python"])
def test_training_and_inference_calls_keep_their_own_tables_with_either_guard(guard):
    """With Dynamo's C-level tensor guard grad mode is checked only in guards learned from
    tensors that require grad; without it (the Python guard) by conditions of its own."""
    from rangedispatch import compat

    with compat.absent("tensor_guards") if guard == "python" else contextlib.nullcontext():
        op = mul_op()
        x, w = torch.randn(8, 16), torch.randn(16)
        with torch.no_grad():
            op(x, w)
        assert op(x.requires_grad_(), w.requires_grad_()).requires_grad
        for _ in range(2):
            with torch.no_grad():
                assert not op(x, w).requires_grad  # requires-grad tensors, grad mode off: inference
            assert op(x, w).requires_grad
            assert not op(x.detach(), w.detach()).requires_grad
        assert len(op.tables) == 2 and bool(op._tensor_checks) is (guard == "c-level")
