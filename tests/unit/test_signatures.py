"""One table per input signature: a table tuned for one dtype, device, rank or set of
non-dispatch dims is never used for another."""

import pytest
import torch

import rangedispatch as rd
from rangedispatch.testing import FakeBenchmarker


def build(times, **options):
    bench = FakeBenchmarker(times)

    @rd.range_dispatch(dispatch_on=("x", 0), split_points=[50], benchmarker=bench, cache=False, **options)
    def double(x):
        return x * 2

    @double.register_impl
    def add_self(x):
        return x + x

    return double, bench


def test_each_signature_gets_its_own_table_and_the_first_stays_on_the_fast_path():
    op, bench = build({"double": 2.0, "add_self": 1.0})
    x32 = torch.randn(100, 8)
    op(x32)
    assert len(op.tables) == 1
    first = op.table
    seen = []
    for x in (torch.randn(100, 8, dtype=torch.float64), torch.arange(800).reshape(100, 8),
              torch.randn(100, 8, 3), torch.randn(100, 16)):
        bench.calls.clear()
        torch.testing.assert_close(op(x), x * 2)
        assert bench.calls, f"no tuning for {x.dtype} {tuple(x.shape)}"
        seen.append(x)
    assert len(op.tables) == 5
    assert op.table is first  # the main table is still the first signature's
    signatures = set(op.tables)
    assert any("float64[*, 8]" in s for s in signatures) and any("int64[*, 8]" in s for s in signatures)
    assert any("float32[*, 8, 3]" in s for s in signatures) and any("float32[*, 16]" in s for s in signatures)
    # calling again with a known signature does not tune again, and the dispatch size may vary
    bench.calls.clear()
    for x in seen + [torch.randn(7, 8), torch.randn(300, 8, dtype=torch.float64)]:
        torch.testing.assert_close(op(x), x * 2)
    assert bench.calls == []


def test_a_candidate_wrong_only_for_one_dtype_is_disqualified_only_in_that_signatures_table():
    bench = FakeBenchmarker({"ref": 2.0, "bad_for_ints": 1.0})

    @rd.range_dispatch(dispatch_on=("x", 0), split_points=[50], benchmarker=bench, cache=False)
    def ref(x):
        return x * 2

    @ref.register_impl
    def bad_for_ints(x):
        return x * 2 if x.is_floating_point() else x * 3

    x = torch.randn(10)
    torch.testing.assert_close(ref(x), x * 2)
    assert set(ref.table.winners.values()) == {"bad_for_ints"}
    with pytest.warns(RuntimeWarning, match="bad_for_ints"):
        out = ref(torch.arange(10))
    assert out.tolist() == [2 * i for i in range(10)]


def test_past_max_signatures_the_reference_runs_with_one_warning():
    op, bench = build({"double": 2.0, "add_self": 1.0})
    op.max_signatures = 1
    op(torch.randn(100, 8))
    with pytest.warns(RuntimeWarning, match="max_signatures"):
        out = op(torch.randn(100, 8, dtype=torch.float64))
    assert out.dtype == torch.float64
    assert len(op.tables) == 1


def test_explain_names_the_signature():
    op, _ = build({"double": 2.0, "add_self": 1.0})
    op(torch.randn(100, 8))
    assert "input signature x:float32[*, 8]@cpu" in op.explain(10)


def test_the_c_level_guard_learns_parameters_and_inference_mode_and_training_calls_get_their_own_table():
    """The fast guard is stricter than the signature (requires_grad, tensor type, dispatch
    keys): a call it refuses but the signature accepts teaches it, at most a few times. A
    training call (grad mode on, an input that requires grad) has a signature of its own."""
    bench = FakeBenchmarker({"ref": 2.0, "fast": 1.0})

    @rd.range_dispatch(dispatch_on=("x", 0), split_points=[50], benchmarker=bench, cache=False)
    def ref(x, w):
        return x * w

    @ref.register_impl
    def fast(x, w):
        return torch.mul(x, w)

    op = rd.dispatcher_of(ref)
    x, w = torch.randn(80, 4), torch.randn(4)
    ref(x, w)
    if not op._tensor_checks:
        pytest.skip("this torch has no C-level tensor guard")
    misses = []
    miss = op._other_signature
    op._other_signature = lambda a, k: misses.append(1) or miss(a, k)
    op._specialise(*op._route)
    for _ in range(3):
        xs = torch.randn(20, 4)
        torch.testing.assert_close(ref(xs, w), xs * w)
    assert misses == []  # the guard built from the first call accepts calls like it
    param = torch.nn.Parameter(torch.randn(4))
    with torch.inference_mode():
        xi = torch.randn(10, 4)
        for _ in range(3):
            torch.testing.assert_close(ref(xi, param), xi * param)
    assert len(misses) == 1 and len(op.tables) == 1  # a Parameter in inference mode: learned, no new table
    for _ in range(3):
        out = ref(torch.randn(70, 4), param)
        assert out.requires_grad  # the candidate ran with autograd on
    assert len(misses) == 2  # the training call missed once, then its table's guard was learned
    assert len(op._tensor_checks) == 2 and sorted(op.tables)[1].endswith("w:float32[4]@cpu+grad")
    # another dtype goes to its own table too
    ref(torch.randn(10, 4, dtype=torch.float64), w.double())
    assert len(op.tables) == 3


def test_known_signatures_are_checked_in_the_generated_call_each_with_its_own_table():
    """From its first call on (which tunes its table), a call with another signature passes
    that signature's own C-level guard in the generated call (no slow path) and runs that
    signature's table."""
    bench = FakeBenchmarker({"ref": 2.0, "wrong_for_float64": 1.0, "wide": lambda n: 0.5 if n >= 50 else 3.0})

    @rd.range_dispatch(dispatch_on=("x", 0), split_points=[49], benchmarker=bench, cache=False)
    def ref(x, w):
        return x * w

    @ref.register_impl
    def wrong_for_float64(x, w):
        return x * w if x.dtype != torch.float64 else x * w + 1

    @ref.register_impl
    def wide(x, w):
        return x * w if x.shape[1] == 16 else x * w - 1  # right only for 16 columns

    op = rd.dispatcher_of(ref)
    kinds = [(torch.float32, 8), (torch.float64, 8), (torch.float32, 16)]
    with pytest.warns(RuntimeWarning):  # the wrong candidates lose their ranges in those tables
        for dtype, cols in kinds:
            ref(torch.randn(60, cols, dtype=dtype), torch.randn(cols, dtype=dtype))
    if not op._tensor_checks:
        pytest.skip("this torch has no C-level tensor guard")
    assert len(op.tables) == 3
    winners = {sig.split("]")[0]: sorted(set(t.winners.values())) for sig, t in op.tables.items()}
    assert sorted(winners.values()) == [["ref"], ["wide", "wrong_for_float64"], ["wrong_for_float64"]], winners
    misses = []  # calls the generated call sends to the slow path
    slow = op._other_signature
    op._other_signature = lambda a, k: misses.append(1) or slow(a, k)
    for n in (1, 49, 50, 200, 50, 49, 7, 7, 7):
        for dtype, cols in kinds:
            x, w = torch.randn(n, cols, dtype=dtype), torch.randn(cols, dtype=dtype)
            torch.testing.assert_close(ref(x, w), x * w)
    assert misses == []
    ref(torch.randn(5, 3), torch.randn(3))  # a new signature still takes the slow path and tunes
    assert misses == [1] and len(op.tables) == 4
