"""The generated eager path: a size seen twice in a row is pinned (one exact C-level guard
and its function), and a pinned call runs exactly what the table says for its size."""

import pytest
import torch

import rangedispatch as rd
from rangedispatch.testing import FakeBenchmarker


def pin_of(op):
    """The op's current pin, ``(check, fn)`` or ``None``."""
    return type(op).__call__.__globals__.get("_rd_pin", "no pins")


def three_range_op(ran):
    """``x * 2`` with a different winner in each of [1, 50), [50, 100), [100, inf)."""
    times = {"ref": 5.0, "low": lambda n: 1.0 if n < 50 else 9.0, "mid": lambda n: 1.0 if 50 <= n < 100 else 9.0,
             "high": lambda n: 1.0 if n >= 100 else 9.0}

    @rd.range_dispatch(dispatch_on=("x", 0), split_points=[49, 99], benchmarker=FakeBenchmarker(times),
                       cache=False)
    def ref(x, w):
        ran.append("ref")
        return x * w

    for name in ("low", "mid", "high"):
        def impl(x, w, _name=name):
            ran.append(_name)
            return x * w

        impl.__name__ = name
        ref.register_impl(impl)
    return ref


def test_every_call_runs_its_ranges_winner_whether_pinned_or_not():
    ran = []
    op = three_range_op(ran)
    w = torch.randn(4)
    op(torch.randn(60, 4), w)  # tune
    if pin_of(op) == "no pins":
        pytest.skip("this torch has no C-level tensor guard")
    assert [op.table.partition.lookup(n).owner for n in (49, 50, 99, 100)] == ["low", "mid", "mid", "high"]
    sizes = [49, 49, 49, 50, 50, 99, 100, 100, 100, 1, 1, 7, 49, 50, 50, 100, 99, 99, 99, 200, 200]
    for i, n in enumerate(sizes):
        ran.clear()
        x = torch.randn(n, 4)
        torch.testing.assert_close(op(x, w), x * w)
        assert ran == [op.table.partition.lookup(n).owner], f"call {i} at size {n}"
        repeated = i > 0 and sizes[i - 1] == n
        pin = pin_of(op)
        if repeated:  # pinned at this size, to this size's winner
            assert pin is not None and pin[1].__name__ == ran[0] and pin[0](x, w)
            assert not pin[0](torch.randn(n + 1, 4), w) and not pin[0](x.double(), w)
        elif i > 0 and sizes[i - 1] != n:  # the size changed: no pin left behind
            assert pin is None


def test_a_pin_refused_for_grad_mode_is_kept_and_calls_stay_correct():
    ran = []
    op = three_range_op(ran)
    x, w = torch.randn(120, 4), torch.randn(4, requires_grad=True)
    op(x, w)
    if pin_of(op) == "no pins":
        pytest.skip("this torch has no C-level tensor guard")
    with torch.no_grad():
        op(x, w)  # an inference call: grad mode is part of the signature, so a table of its own
    assert len(op.tables) == 2
    ran.clear()  # the tuning calls ran every candidate
    op(x, w), op(x, w)  # two calls in a row at one size
    pin = pin_of(op)
    assert pin is not None
    for _ in range(3):  # the pin was made with grad on; no_grad calls miss it (their own table) but keep it
        with torch.no_grad():
            assert not op(x, w).requires_grad
        assert op(x, w).requires_grad
    assert pin_of(op) is pin
    assert ran.count("high") == len(ran) and len(ran) == 8


def test_a_pin_never_serves_another_scalar_value():
    """``scale`` is part of the input signature: a pinned call at one value must not run the
    table of another value, whose winner may be wrong for it."""
    bench = FakeBenchmarker({"ref": 2.0, "only_for_two": 1.0})

    @rd.range_dispatch(dispatch_on=("x", 0), split_points=[50], benchmarker=bench, cache=False)
    def ref(x, scale: float):
        return x * scale

    @ref.register_impl
    def only_for_two(x, scale: float):
        return x * 2.0

    x = torch.randn(80, 3)
    for _ in range(3):
        torch.testing.assert_close(ref(x, 2.0), x * 2.0)
    assert set(ref.table.winners.values()) == {"only_for_two"}
    with pytest.warns(RuntimeWarning, match="only_for_two"):
        torch.testing.assert_close(ref(x, 3.0), x * 3.0)
    for _ in range(3):
        torch.testing.assert_close(ref(x, 3.0), x * 3.0)
        torch.testing.assert_close(ref(x, 2.0), x * 2.0)


def test_recording_sizes_sees_every_call_even_at_a_repeated_size():
    ran = []
    op = three_range_op(ran)
    w = torch.randn(4)
    op(torch.randn(60, 4), w)
    profile = op.record_sizes()
    for _ in range(5):
        op(torch.randn(60, 4), w)
    op(torch.randn(7, 4), w)
    assert profile.counts == {60: 5, 7: 1}


def registered_scaled(name, ran, **options):
    """A custom op ``x * 3`` registered with a winner per range: ``small`` below 64, ``large``
    from 64; every implementation that runs appends its name to ``ran``."""
    times = {"ref": 5.0, "small": lambda n: 1.0 if n < 64 else 9.0, "large": lambda n: 1.0 if n >= 64 else 9.0}

    @torch.library.custom_op(f"rdtest::{name}", mutates_args=(), **options)
    def scaled(x: torch.Tensor) -> torch.Tensor:
        ran.append("ref")
        return x * 3

    def config(impl_name):
        def impl(x):
            ran.append(impl_name)
            return x * 3

        impl.__name__ = impl_name
        return rd.CustomOpConfig(impl)

    rd.register_custom_op_autotuning(scaled, configs=[config("small"), config("large")],
                                     dispatch_on={"tensor_name": "x", "dim": 0}, split_points=[63],
                                     benchmarker=FakeBenchmarker(times, default=9.0), cache=False)
    return scaled


def test_the_registered_custom_ops_kernel_is_pinned_and_dispatches_right():
    ran = []
    scaled = registered_scaled("pinned", ran)
    scaled(torch.randn(5, 2))  # tunes, running every candidate
    for n in (10, 10, 10, 64, 64, 63, 63, 200):
        ran.clear()
        x = torch.randn(n, 2)
        torch.testing.assert_close(scaled(x), x * 3)
        assert ran == ["small" if n < 64 else "large"]


def test_a_registered_ops_kernel_runs_without_dynamo_inside_a_compiled_region_as_torchs_does():
    from torch._C._dynamo.eval_frame import get_eval_frame_callback
    from torch._dynamo.testing import CompileCounter

    ran = []
    scaled = registered_scaled("undynamoed", ran)
    x = torch.randn(5, 2)
    scaled(x), scaled(x)  # tunes, then pins size 5
    hooked = []

    @torch._dynamo.disable(recursive=False)  # Dynamo skips this frame, not what it calls
    def outside_the_graph(t):
        out = torch.ops.rdtest.undynamoed.default(t)  # the kernel runs from here, the frame hook set
        hooked.append(get_eval_frame_callback() is not None)
        return out

    counter = CompileCounter()

    @torch.compile(backend=counter)
    def model(t):
        return outside_the_graph(t.sin()) + 1

    ran.clear()
    torch.testing.assert_close(model(x), x.sin() * 3 + 1)
    assert hooked == [True], "the op must run while the compiled region's frame hook is set"
    assert ran == ["small"]
    # torch's own kernels run with Dynamo off: no frame of the kernel or the candidate compiled
    assert counter.frame_count == 2, "only the model's frame, around the skipped call, is compiled"


def test_a_registered_ops_turned_off_kernel_runs_the_reference_as_torch_does():
    ran = []
    scaled = registered_scaled("switchable", ran, device_types="cpu")
    x, big = torch.randn(5, 2), torch.randn(80, 2)
    scaled(x), scaled(x)  # tunes, then pins size 5
    with scaled.set_kernel_enabled("cpu", enabled=False):
        for t in (x, x, big):
            ran.clear()
            torch.testing.assert_close(scaled(t), t * 3)
            assert ran == ["ref"]
    for t, winner in ((x, "small"), (big, "large"), (big, "large")):
        ran.clear()
        torch.testing.assert_close(scaled(t), t * 3)
        assert ran == [winner]
