"""Correctness rules of tuning: precision-aware comparison, input mutation, slow candidates,
per-call limits, and the log lines of a table loaded from the cache."""

import logging
import time

import pytest
import torch

import rangedispatch as rd
from rangedispatch.measure.compare import compare_with_truth
from rangedispatch.testing import FakeBenchmarker
from rangedispatch.measure.verify import check_output, run_candidate


def softmax_ref(x):
    return torch.softmax(x, dim=-1)


def test_a_candidate_more_accurate_than_a_low_precision_reference_is_not_disqualified():
    torch.manual_seed(0)
    x = torch.randn(64, 4096, dtype=torch.bfloat16)
    truth = lambda: torch.softmax(x.float(), dim=-1)  # noqa: E731
    # a reference that rounds an intermediate badly: 5 % off on one element in 100
    exact = truth()
    off = torch.rand(exact.shape) < 0.01
    ref = torch.where(off, exact * 1.05, exact).to(torch.bfloat16)
    accurate = exact.to(torch.bfloat16)  # rounds once: more accurate than the reference
    assert rd.compare(accurate, ref) is not None  # the plain comparison would disqualify it
    assert check_output(accurate, ref, truth) is None
    # ... but a candidate twice as far off as the reference still fails
    worse = torch.where(off, exact * 0.85, exact).to(torch.bfloat16)
    assert check_output(worse, ref, truth) is not None


def test_one_more_rounding_than_the_reference_passes_and_a_wrong_scale_does_not():
    """A reference that rounds once is off by half an ulp at most; a fused kernel that stores
    one intermediate in bfloat16 is off by an ulp and a half: not a fault (an H100's
    efficient-attention backward is such a kernel). A gradient 1.5x too large still fails."""
    torch.manual_seed(0)
    large = torch.rand(32, 256) < 0.05  # a few large values in [1, 2) among small ones (a small RMS floor)
    truth = torch.where(large, 1 + torch.rand(32, 256), 0.01 * torch.randn(32, 256))
    ref = truth.to(torch.bfloat16)
    ulp = torch.finfo(torch.bfloat16).eps
    # ... and its small values off by more than the plain comparison allows, within the rule's floor
    one_more = torch.where(large, truth + 1.75 * ulp, truth + 0.006).to(torch.bfloat16)
    assert rd.compare(one_more, ref) is not None
    rms = float(truth.pow(2).mean().sqrt())
    floor = 1e-2 * rms
    err_ref = float((ref.double() - truth.double()).abs().max())
    assert float((one_more.double() - truth.double()).abs().max()) > 2 * err_ref + floor  # the plain 2x rule fails it
    assert compare_with_truth(one_more, ref, truth) is None
    wrong = (truth * 1.5).to(torch.bfloat16)
    found = compare_with_truth(wrong, ref, truth)
    assert found is not None and "ulp" in str(found)


def test_precision_rule_still_catches_a_wrong_row_a_wrong_boundary_and_nan():
    torch.manual_seed(0)
    x = torch.randn(64, 512, dtype=torch.bfloat16)
    truth = torch.softmax(x.float(), dim=-1)
    ref = torch.softmax(x, dim=-1)
    wrong_row = ref.clone()
    wrong_row[7] = wrong_row[7].flip(0)
    boundary = ref.clone()
    boundary[:, -1] = 0
    nan = ref.clone()
    nan[3, 3] = float("nan")
    for bad, text in [(wrong_row, "exceeds"), (boundary, "exceeds"), (nan, "NaN")]:
        found = compare_with_truth(bad, ref, truth)
        assert found is not None and text in str(found)
        assert "index" in str(found)


def test_an_in_place_write_to_an_input_is_rejected_and_undone():
    x = torch.randn(8, 16)
    before = x.clone()

    def scribbles(x):
        out = x * 2
        x.zero_()
        return out

    out, reason = run_candidate(scribbles, (x,), {}, before * 2, names=["x"])
    assert out is None and "writes to its input 'x' in place" in reason
    torch.testing.assert_close(x, before)


def make_op(*impls, **options):
    @rd.range_dispatch(dispatch_on=("x", 1), split_points=[64], cache=False, **options)
    def scale(x, w):
        return x * w

    for f in impls:
        scale.register_impl(f)
    return scale


def test_tuning_drops_a_mutating_candidate_that_would_have_won_and_the_callers_tensor_is_intact():
    def fast_but_scribbles(x, w):
        out = x * w
        x.mul_(0)
        return out

    op = make_op(fast_but_scribbles, benchmarker=FakeBenchmarker({"scale": 2.0, "fast_but_scribbles": 0.1}))
    x, w = torch.randn(2, 100, 8), torch.randn(8)
    keep = x.clone()
    with pytest.warns(RuntimeWarning, match="fast_but_scribbles.*writes to its input 'x' in place"):
        op.tune(x, w)
    assert set(op.table.winners.values()) == {"scale"}
    torch.testing.assert_close(op(x, w), keep * w)
    torch.testing.assert_close(x, keep)


def test_an_extremely_slow_candidate_is_called_a_bounded_number_of_times():
    calls = []

    def slow(x, w):
        calls.append(1)
        time.sleep(0.05)
        return x * w

    def quick(x, w):
        return w * x

    op = make_op(slow, quick)
    t0 = time.perf_counter()
    op.tune(torch.randn(2, 100, 8), torch.randn(8))
    took = time.perf_counter() - t0
    # per range: the correctness check and one timed call, then it is raced out for the range
    assert len(calls) <= 2 * 2, len(calls)
    assert took < 3.0
    assert all(w != "slow" for w in op.table.winners.values())
    assert all("slow" in r.dropped for r in op.table.results)


def test_a_table_loaded_from_the_cache_logs_the_per_range_choice(tmp_path, monkeypatch, caplog):
    monkeypatch.setenv("RANGEDISPATCH_CACHE_DIR", str(tmp_path))

    def build():
        @rd.range_dispatch(dispatch_on=("x", 1), split_points=[64],
                           benchmarker=FakeBenchmarker({"scale": 2.0, "fast": lambda s: 1.0 if s < 64 else 3.0}))
        def scale(x, w):
            return x * w

        @scale.register_impl
        def fast(x, w):
            return w * x

        return scale

    build().tune(torch.randn(2, 100, 8), torch.randn(8))
    caplog.set_level(logging.INFO, logger="rangedispatch")
    build().tune(torch.randn(2, 100, 8), torch.randn(8))
    text = caplog.text
    assert "loaded tuning table" in text
    assert "Range [1, 65): fast" in text and "Range [65, inf): scale" in text
    assert "Generated runtime dispatch" in text
