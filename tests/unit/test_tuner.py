"""The tuner's decisions, pinned with a fake benchmarker (no real timing)."""

import math

import pytest
import torch

import rangedispatch as rd
from rangedispatch.testing import FakeBenchmarker, tuning_calls
from rangedispatch.decide.tuner import TunerSettings, decide


def ref(x, w):
    return x * w


def a(x, w):
    return x * w


def b(x, w):
    return torch.mul(x, w)


def c(x, w):
    return w * x


def build(times, *, jitter=0.0, **options):
    bench = FakeBenchmarker(times, jitter=jitter)

    @rd.range_dispatch(dispatch_on=("x", 1), ranges=[(0, 512), (512, 2048), (2048, None)],
                       benchmarker=bench, cache=False, **options)
    def op(x, w):
        return x * w

    for f in (a, b, c):
        op.register_impl(f)
    return op, bench


def call(op, size):
    return op(torch.randn(2, size, 4), torch.randn(4))


def test_each_range_gets_its_fastest_candidate_and_boundaries_dispatch_right():
    times = {"op": 10.0, "a": lambda s: 1 if s < 512 else 9, "b": lambda s: 1 if 512 <= s < 2048 else 9,
             "c": lambda s: 1 if s >= 2048 else 9}
    op, _ = build(times)
    call(op, 100)
    assert op.table.winners == {rd.Range(0, 512): "a", rd.Range(512, 2048): "b", rd.Range(2048, None): "c"}
    calls = []
    for name, fn in op.candidates.items():
        original = fn.call
        object.__setattr__(fn, "call", lambda *args, _n=name, _f=original: calls.append(_n) or _f(*args))
    op._install(op.table)
    for size, expected in [(1, "a"), (511, "a"), (512, "b"), (513, "b"), (2047, "b"), (2048, "c"), (2049, "c")]:
        calls.clear()
        x, w = torch.randn(2, size, 4), torch.randn(4)
        torch.testing.assert_close(op(x, w), x * w)
        assert calls == [expected], size


def test_sample_sizes_cover_each_range_near_lo_middle_and_hi():
    op, bench = build({}, samples_per_range=3)
    call(op, 100)
    assert bench.sizes == [1, 23, 511, 512, 1024, 2047, 2048, 2896, 4096]
    # by default a range wider than 4 octaves gets a sample per 2 octaves (at most 6)
    op, bench = build({})
    call(op, 100)
    assert bench.sizes == [1, 3, 12, 42, 147, 511, 512, 1024, 2047, 2048, 2896, 4096]
    # candidates are interleaved per size: reference first, then every candidate
    assert bench.calls[:4] == [("op", 1), ("a", 1), ("b", 1), ("c", 1)]


def test_upper_bound_sets_unbounded_samples():
    op, bench = build({}, range_upper_bound=10000)
    call(op, 100)
    assert bench.sizes[-1] == 10000


def test_equal_neighbours_merge_and_single_winner_is_called_directly():
    op, _ = build({"op": 10.0, "a": 1.0, "b": 5.0, "c": 5.0})
    call(op, 100)
    part = op.table.partition
    assert [(str(s.range), s.owner) for s in part.segments] == [("[0, inf)", "a")]
    assert op._route[0] == ()  # no bounds: no size read, no bisect
    assert "_fn0(x, w)" in type(op).__call__.__rd_source__


def test_noise_margin_keeps_the_reference():
    # 'a' is 3% faster but the measured noise is 10%: not a real win
    op, _ = build({"op": 1.0, "a": 0.97, "b": 2.0, "c": 2.0}, jitter=0.2)
    call(op, 100)
    assert set(op.table.winners.values()) == {"op"}
    assert all(r.noise >= 0.09 for r in op.table.results)


def test_clear_win_beats_noise():
    op, _ = build({"op": 1.0, "a": 0.5, "b": 2.0, "c": 2.0}, jitter=0.2)
    call(op, 100)
    assert set(op.table.winners.values()) == {"a"}


def test_min_speedup_threshold():
    op, _ = build({"op": 1.0, "a": 0.85, "b": 2.0, "c": 2.0}, min_speedup=1.25)
    call(op, 100)
    assert set(op.table.winners.values()) == {"op"}
    op2, _ = build({"op": 1.0, "a": 0.75, "b": 2.0, "c": 2.0}, min_speedup=1.25)
    call(op2, 100)
    assert set(op2.table.winners.values()) == {"a"}


def test_only_true_ties_break_by_declaration_order():
    s = TunerSettings()
    tied = {"ref": (1.0,), "x": (0.5,), "y": (0.498,)}  # 0.4 % apart: below the tie band
    assert decide("ref", ["x", "y"], tied, {}, 0.0, s) == "x"
    assert decide("ref", ["y", "x"], tied, {}, 0.0, s) == "y"
    apart = {"ref": (1.0,), "x": (0.5,), "y": (0.49,)}  # 2 % apart: measurable, the faster wins
    assert decide("ref", ["x", "y"], apart, {}, 0.0, s) == "y"
    assert decide("ref", ["x", "y"], {"ref": (1.0,), "x": (0.6,), "y": (0.4,)}, {}, 0.0, s) == "y"


def test_large_noise_protects_the_reference_but_never_hands_the_range_to_the_first_declared():
    s = TunerSettings()
    # 40 % noise: the old rule let every candidate within 40 % of the fastest win, so the first
    # declared (flash, 1.9x slower) took the range
    timings = {"math": (50.0, 60.0), "flash": (24.0, 26.0), "cudnn": (12.0, 14.0)}
    assert decide("math", ["flash", "cudnn"], timings, {}, 0.4, s) == "cudnn"
    # the same noise keeps the reference when the best gain is within it
    assert decide("math", ["flash", "cudnn"], {"math": (1.0,), "flash": (0.8,), "cudnn": (0.75,)}, {}, 0.4, s) \
        == "math"


def test_geometric_mean_over_samples():
    s = TunerSettings()
    # x wins 2x at one size and loses 1.5x at another: geomean 0.866 < 1/1.02
    assert decide("ref", ["x"], {"ref": (1.0, 1.0), "x": (0.5, 1.5)}, {}, 0.0, s) == "x"
    assert decide("ref", ["x"], {"ref": (1.0, 1.0), "x": (0.5, 2.1)}, {}, 0.0, s) == "ref"


@pytest.mark.parametrize(
    "bad, reason",
    [
        (lambda x, w: (_ for _ in ()).throw(RuntimeError("boom")), "raised RuntimeError: boom"),
        (lambda x, w: x * w * float("nan"), "NaN"),
        (lambda x, w: (x * w)[:, :1], "shape"),
        (lambda x, w: (x * w).double(), "dtype"),
        (lambda x, w: x * w + 1, "values differ"),
        (lambda x, w: (x * w) + (x.shape[1] == 2047), "values differ"),  # wrong only at hi-1
    ],
)
def test_failing_candidate_loses_its_range_with_a_warning(bad, reason):
    bad.__name__ = "bad"
    bench = FakeBenchmarker({"bad": 0.001, "op": 1.0})

    @rd.range_dispatch(dispatch_on=("x", 1), ranges=[(0, 512), (512, 2048)], benchmarker=bench, cache=False)
    def op(x, w):
        return x * w

    op.register_impl(bad)
    with pytest.warns(RuntimeWarning, match="candidate 'bad' loses range"):
        x, w = torch.randn(2, 600, 4), torch.randn(4)
        torch.testing.assert_close(op(x, w), x * w)
    assert any(reason in msg for r in op.table.results for msg in r.disqualified.values())
    for r in op.table.results:
        if "bad" in r.disqualified:
            assert r.winner != "bad"
            assert all(math.isinf(t) for t in r.timings["bad"])
    # the range holding 2047 always catches the boundary-only bug
    assert op.table.winners[rd.Range(512, 2048)] == "op"


def test_reference_failing_at_a_size_skips_that_size():
    bench = FakeBenchmarker({"op": 1.0, "a": 0.5})

    @rd.range_dispatch(dispatch_on=("x", 1), ranges=[(0, 512)], benchmarker=bench, cache=False)
    def op(x, w):
        if x.shape[1] == 511:
            raise MemoryError("pretend OOM")
        return x * w

    op.register_impl(a)
    with pytest.warns(RuntimeWarning, match="reference 'op' failed at size 511"):
        call(op, 3)
    assert op.table.results[0].samples == (1, 3, 12, 42, 147)  # 511 left out
    assert op.table.winners[rd.Range(0, 512)] == "a"


def test_registering_after_tuning_retunes():
    op, bench = build({"op": 1.0, "a": 0.5})
    call(op, 100)
    n = len(bench.calls)

    with pytest.warns(RuntimeWarning, match="registered after tuning"):
        @op.register_impl
        def d(x, w):
            return x * w

    call(op, 100)
    assert len(bench.calls) > n and ("d", 1) in bench.calls


def test_a_winner_that_stops_being_fastest_inside_its_range_is_pointed_out(caplog):
    # [512, inf) is sampled at 512, 724 and 1024: the reference wins on the geometric mean,
    # but 'big' is 2x faster at 1024, so one winner for the whole range costs 2x there
    def ref(x):
        return x * 2

    times = {"ref": 1.0, "big": lambda s: 4.0 if s < 1000 else 0.5}
    op = rd.range_dispatch(ref, dispatch_on=("x", 0), split_points=[511], benchmarker=FakeBenchmarker(times),
                           cache=False)
    op.register_impl(lambda x: x + x, name="big")
    with caplog.at_level("INFO", logger="rangedispatch"):
        op.tune(torch.randn(600))
    top = op.table.results[-1]
    assert top.winner == "ref" and top.samples == (512, 724, 1024)
    inner = top.crossover()
    assert (inner.held, inner.size, inner.rival) == (724, 1024, "big") and inner.ratio == pytest.approx(2.0)
    note = "the winner changes inside this range: 'big' is 2.00x faster than 'ref' at 1024; a split point between 724 and 1024"
    assert note in caplog.text and "All ranges selected the same implementation: 'ref'" in caplog.text
    assert note in op.explain(900)
    assert op.table.results[0].crossover() is None and "note" not in op.explain(100)


def refined_op(times, split_points, **options):
    def ref(x):
        return x * 2

    op = rd.range_dispatch(ref, dispatch_on=("x", 0), split_points=split_points, benchmarker=FakeBenchmarker(times),
                           refine_splits=True, **options)
    op.register_impl(lambda x: x + x, name="big")
    op.register_impl(lambda x: x.mul(2), name="mid")
    return op


def test_refine_splits_a_given_range_where_its_winner_changes_and_keeps_the_given_split_points(caplog):
    # in [512, inf) (samples 512, 724, 1024) 'big' is 2x faster from 900 on; 'mid' never wins
    times = {"ref": 1.0, "big": lambda s: 4.0 if s < 900 else 0.5, "mid": 1.5}
    op = refined_op(times, [511], cache=False)
    with caplog.at_level("INFO", logger="rangedispatch"):
        op.tune(torch.randn(600))
    ranges = [(r.range.lo, r.range.hi, r.winner) for r in op.table.results]
    assert ranges[0] == (1, 512, "ref") and ranges[1][0] == 512 and ranges[-1][1] is None
    split = ranges[-1][0]
    assert [w for *_, w in ranges] == ["ref", "ref", "big"] and ranges[1][1] == split
    assert 724 < split <= 1024 and split / 900 < 1.25 and 900 / split < 1.25  # located within the tolerance
    assert op.table.partition.lookup(split - 1).owner == "ref" and op.table.partition.lookup(split).owner == "big"
    assert all(r.crossover() is None for r in op.table.results)
    assert f"split at {split} where the fastest candidate changes" in caplog.text
    # the measurements of the search: only the two winners and the reference at the bisection sizes
    sampled = {s for r in op.table.results[:1] for s in r.samples} | {512, 724, 1024}
    bisected = {s for n, s in op.benchmarker.calls if s not in sampled}
    assert bisected and all(n != "mid" for n, s in op.benchmarker.calls if s in bisected)


def test_refine_leaves_a_range_whose_winner_holds_alone_and_a_refined_table_reloads(tmp_path, monkeypatch):
    monkeypatch.setenv("RANGEDISPATCH_CACHE_DIR", str(tmp_path))
    times = {"ref": 1.0, "big": lambda s: 0.5 if s < 300 else 4.0, "mid": 1.5}
    op = refined_op(times, [511, 4095])
    op.tune(torch.randn(600))
    owners = [(r.range.lo, r.winner) for r in op.table.results]
    assert owners[0] == (1, "big") and owners[-2:] == [(512, "ref"), (4096, "ref")]
    assert len(owners) == 4 and 256 <= owners[1][0] <= 400 and owners[1][1] == "ref"
    again = refined_op(times, [511, 4095])
    again.tune(torch.randn(600))
    assert again.table.results == op.table.results and tuning_calls(again.benchmarker, again.table) == []


def test_refine_splits_is_checked_and_one_dimensional_only():
    with pytest.raises(rd.ConfigError, match="refine_splits"):
        rd.range_dispatch(lambda x: x, dispatch_on=("x", 0), split_points=[8], refine_splits="yes")
    with pytest.raises(rd.ConfigError, match="refine_splits=False on an op that dispatches on several dimensions"):
        rd.range_dispatch(lambda x: x, dispatch_on=[("x", 0), ("x", 1)], split_points=[[8], [8]], refine_splits=True)


def test_a_candidate_winning_inside_a_wide_range_but_not_at_its_ends_takes_it():
    """[1, 129) with a candidate 7 % faster from 2 to 64 and 4 % slower at 1 and above 64:
    over sizes spread evenly in log-size it is the faster one, but 3 samples (1, 11, 128)
    put two of three at the ends. The default samples the 7-octave range 5 times and weighs
    each sample by the stretch of log-size it stands for."""
    inner = lambda size: 0.93 if 2 <= size <= 64 else 1.04  # noqa: E731

    def tuned(**options):
        @rd.range_dispatch(dispatch_on=("x", 1), ranges=[(1, 129)], cache=False,
                           benchmarker=FakeBenchmarker({"mid": inner}), **options)
        def op(x, w):
            return x * w

        op.register_impl(a, name="mid")
        return rd.dispatcher_of(op).tune(torch.randn(2, 8, 4), torch.randn(4))

    three = tuned(samples_per_range=3).results[0]
    assert (three.samples, three.winner) == ((1, 11, 128), "op")
    assert three.weights == pytest.approx((0.25, 0.5, 0.25), abs=0.01)
    wide = tuned().results[0]
    assert wide.samples == (1, 3, 11, 38, 128) and wide.winner == "mid"
    assert wide.weights == pytest.approx((0.125, 0.25, 0.25, 0.25, 0.125), abs=0.02)
    assert wide.ratio("mid", "op") == pytest.approx(0.93 ** 0.75 * 1.04 ** 0.25, rel=0.01)
    # the weights are part of the saved table
    loaded = rd.TuningTable.from_json(tuned().to_json()).results[0]
    assert loaded.weights == wide.weights and loaded.ratio("mid", "op") == wide.ratio("mid", "op")


def test_log_weights_and_sample_counts():
    from rangedispatch.decide.ranges import Range
    from rangedispatch.decide.tuner import log_weights, sample_count

    assert log_weights([1, 4, 16]) == (0.25, 0.5, 0.25)
    assert log_weights([8, 16]) is None and log_weights([]) is None
    assert [sample_count(Range(1, hi), None) for hi in (2, 17, 33, 129, 1 << 20)] == [3, 3, 4, 5, 6]
    assert sample_count(Range(1, 1 << 20), 2) == 2  # an explicit count is kept
    assert sample_count(Range(2048, None), None, 4096) == 3
