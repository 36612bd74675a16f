"""Every bad input gets a clear error naming the argument, the rule and the fix."""

import pytest
import torch

import rangedispatch as rd
from rangedispatch import CustomOpConfig, CustomOpRangeConfig, register_custom_op_autotuning


def impl(x, weight):
    return x * weight


def make_op(name):
    @torch.library.custom_op(f"rdtest_err::{name}", mutates_args=())
    def op(x: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
        return x * weight

    @op.register_fake
    def _(x, weight):
        return torch.empty_like(x)

    return op


def test_seed_message_tensor_not_found():
    op = make_op("tnf")
    with pytest.raises(ValueError) as info:
        register_custom_op_autotuning(op, configs=[CustomOpRangeConfig("y", 1, [(0, 512)], [impl])])
    assert str(info.value) == "Tensor 'y' not found in function arguments. Available arguments: ['x', 'weight']"


def test_seed_message_dim_out_of_range_at_first_call():
    op = make_op("dim")
    register_custom_op_autotuning(op, configs=[CustomOpRangeConfig("x", 5, [(0, 512)], [impl])], cache=False)
    with pytest.raises(ValueError) as info:
        op(torch.randn(2, 128, 512), torch.randn(512))
    assert str(info.value) == "Dimension index 5 out of range for tensor 'x' with shape [2, 128, 512]"


def test_seed_message_overlap():
    with pytest.raises(ValueError) as info:
        CustomOpRangeConfig("x", 1, [(0, 512), (256, 1024)], [impl])
    assert str(info.value) == "Ranges 0 and 1 overlap: [0, 512) and [256, 1024)"


def test_seed_message_not_callable():
    with pytest.raises(TypeError) as info:
        CustomOpRangeConfig("x", 1, [(0, 512)], [impl, "not_a_function"])
    assert str(info.value) == "Implementation 1 must be callable, got <class 'str'>"


@pytest.mark.parametrize(
    "kwargs, fragment",
    [
        (dict(configs=[]), "at least one config"),
        (dict(configs=None), "configs="),
        (dict(configs=[CustomOpConfig(impl, tensor_name="x", dim_index=1, dim_range=(0, 8)), CustomOpConfig(impl)]),
         "range-based or none"),
        (dict(configs=[CustomOpConfig(impl)], dispatch_on={"tensor_name": "x"}, split_points=[8]), "'dim'"),
        (dict(configs=[CustomOpConfig(impl)], dispatch_on={"tensor_name": "z", "dim": 1}, split_points=[8]),
         "Tensor 'z' not found"),
        (dict(configs=[CustomOpConfig(impl)], dispatch_on=("x", 1), split_points=[8, 4]), "increasing"),
        (dict(configs=[CustomOpConfig(impl)], dispatch_on=("x", 1), split_points=[-3]), "non-negative"),
        (dict(configs=[CustomOpConfig(impl)], dispatch_on=("x", 1.5), split_points=[8]), "integer dimension"),
        (dict(configs=[CustomOpConfig(impl, k_splits=4)]), "k_splits"),
        (dict(configs=[CustomOpConfig(k_splits=4)]), "parameters of the op"),
        (dict(configs=[CustomOpConfig(impl)], input_gen_fns={"q": torch.randn_like}), "input_gen_fns keys"),
        (dict(configs=[CustomOpConfig(impl)], min_speedup=0.5), "min_speedup >= 1.0"),
        (dict(configs=["nope"]), "configs\\[0\\]"),
        (dict(configs=[CustomOpConfig(impl, tensor_name="x", dim_index=1, dim_range=(0, 8)),
                       CustomOpConfig(impl, tensor_name="weight", dim_index=0, dim_range=(8, 16))]),
         "one dimension"),
        (dict(configs=[CustomOpConfig(impl, tensor_name="x", dim_index=1, dim_range=(0, 8)),
                       CustomOpConfig(impl, tensor_name="x", dim_index=1, dim_range=(4, 16))]),
         "overlap"),
    ],
)
def test_registration_errors(kwargs, fragment):
    op = make_op(f"bad{abs(hash(fragment)) % 10**6}")
    with pytest.raises((ValueError, TypeError), match=fragment) as info:
        register_custom_op_autotuning(op, **kwargs)
    assert isinstance(info.value, rd.RangeDispatchError)


def test_partial_range_config_rejected():
    with pytest.raises(ValueError, match="tensor_name, dim_index and dim_range together"):
        CustomOpConfig(impl, tensor_name="x", dim_index=1)


def test_builtin_operator_rejected_with_fix():
    with pytest.raises(TypeError, match="custom_op"):
        register_custom_op_autotuning(torch.ops.aten.mm.default, configs=[CustomOpConfig(impl)])


def test_dispatch_on_non_tensor_argument():
    @rd.range_dispatch(dispatch_on=("n", 0), split_points=[4], cache=False)
    def f(x, n):
        return x * n

    f.register_impl(lambda x, n: x * n)
    with pytest.raises(TypeError, match="Expected a Tensor for dispatch tensor 'n'"):
        f(torch.ones(3), 2)
