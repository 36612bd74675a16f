"""The private-API layer: probes that exercise each feature, fallbacks that hold without it."""

import logging

import pytest
import torch

from rangedispatch import compat
from rangedispatch.cli import main


def test_the_cli_lists_every_feature_with_what_this_torch_does(capsys):
    assert main(["compat"]) == 0
    out = capsys.readouterr().out
    assert out.startswith(f"torch {torch.__version__}")
    for name in compat.FEATURES:
        assert name in out
    with compat.absent("tensor_guards"):
        main(["compat"])
    line = next(l for l in capsys.readouterr().out.splitlines() if l.startswith("tensor_guards"))
    assert "FALLBACK" in line and "Python conditions" in line


def test_a_failing_probe_means_the_fallback_and_one_debug_line(caplog):
    def broken():
        raise AttributeError("module 'torch._inductor.ir' has no attribute 'Conditional'")

    compat.FEATURES["_broken"] = compat.Feature("_broken", "torch._inductor.ir.Conditional", "Inductor's code", broken)
    try:
        with caplog.at_level(logging.DEBUG, logger="rangedispatch"):
            assert not compat.have("_broken") and compat.get("_broken") is None
            assert not compat.have("_broken")  # asked again: the answer is kept, no second line
        lines = [r.getMessage() for r in caplog.records if "_broken" in r.getMessage()]
        assert len(lines) == 1 and "Conditional" in lines[0] and "Inductor's code" in lines[0], lines
    finally:
        del compat.FEATURES["_broken"]
        compat.registry._RESULTS.pop("_broken", None)


def test_fakes_are_told_apart_with_and_without_the_fake_tensor_class():
    from torch._subclasses.fake_tensor import FakeTensorMode

    with FakeTensorMode():
        fake = torch.empty(3)
    real = torch.empty(3)
    assert compat.is_fake(fake) and not compat.is_fake(real)
    with compat.absent("fake_tensor"):
        assert compat.is_fake(fake) and not compat.is_fake(real)


def test_the_python_guard_takes_over_without_tensor_guards():
    import rangedispatch as rd

    with compat.absent("tensor_guards"):
        @rd.range_dispatch(dispatch_on=("x", 0), split_points=[8], cache=False)
        def scale(x, w):
            return x * w

        scale.register_impl(lambda x, w: torch.mul(w, x), name="swapped")
        w = torch.randn(3)
        for n in (2, 8, 20):
            x = torch.randn(n, 3)
            torch.testing.assert_close(scale(x, w), x * w)
        torch.testing.assert_close(scale(x.double(), w.double()), x.double() * w.double())  # another signature
        assert not scale._tensor_checks and ".dtype is _rd_dt_x" in type(scale).__call__.__rd_source__


def test_timing_on_the_cpu_never_asks_for_the_gpu_spin():
    if torch.cuda.is_available():
        pytest.skip("on a GPU the spin is there")
    assert not compat.have("cuda_sleep")


@pytest.mark.parametrize("answer", [None, False])
def test_a_probe_answering_none_or_false_means_absent(answer):
    compat.FEATURES["_no"] = compat.Feature("_no", "x", "y", lambda: answer)
    try:
        assert not compat.have("_no") and compat.get("_no") is None
    finally:
        del compat.FEATURES["_no"]
        compat.registry._RESULTS.pop("_no", None)
