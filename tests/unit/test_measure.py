"""The measurement core's logic (pilot, racing, adaptive rounds, limits), with scripted timers."""

import itertools
import math
import time

import pytest

from rangedispatch.measure.timing import FAILED, OK, RACED, SLOW, Benchmark, CpuTimer, Job, measure_jobs, resolved


class ScriptedTimer:
    """Per-call times from ``times[name](round_index)`` (ms); records how often each job ran."""

    device_type = "fake"

    def __init__(self, times):
        self.times = times
        self.calls = {}
        self.rounds = {}

    def _t(self, job):
        t = self.times[job.name]
        if isinstance(t, Exception):
            raise t
        r = self.rounds.get(job.name, 0)
        return t(r) if callable(t) else t

    def warm_device(self):
        pass

    def once(self, job):
        self.calls[job.name] = self.calls.get(job.name, 0) + 1
        return self._t(job)

    def warm_up(self, job, ms, estimate_ms):
        pass

    def batch(self, job, ms, estimate_ms):
        value = self._t(job)
        self.rounds[job.name] = self.rounds.get(job.name, 0) + 1
        self.calls[job.name] = self.calls.get(job.name, 0) + 10
        return [value] * 10


def jobs(*names):
    return [Job(n, 1, lambda: None) for n in names]


def by_name(measured):
    return {m.name: m for m in measured}


def test_clear_differences_stop_after_min_rounds_and_the_robust_time_is_the_least_round_median():
    noisy = itertools.cycle([1.3, 1.0, 1.1])
    timer = ScriptedTimer({"a": lambda r: next(noisy), "b": 1.5})
    m = by_name(Benchmark(timer, min_rounds=3, max_rounds=9).measure_jobs(jobs("a", "b")))
    assert m["a"].ms == pytest.approx(1.0)
    assert len(m["a"].rounds) == 3 and len(m["b"].rounds) == 3
    assert m["a"].status == m["b"].status == OK


def test_an_unresolved_close_contest_gets_more_rounds_and_a_settled_loser_does_not():
    # a and b are 1 % apart with round-to-round noise of several percent: more rounds until the budget
    wobble_a = itertools.cycle([1.00, 1.06, 0.97, 1.04])
    wobble_b = itertools.cycle([1.05, 0.99, 1.03, 1.00])
    timer = ScriptedTimer({"a": lambda r: next(wobble_a), "b": lambda r: next(wobble_b), "c": 1.4})
    m = by_name(Benchmark(timer, min_rounds=3, max_rounds=8).measure_jobs(jobs("a", "b", "c")))
    assert len(m["a"].rounds) == len(m["b"].rounds) == 8
    assert len(m["c"].rounds) == 3


def test_candidates_far_slower_are_raced_out_early():
    timer = ScriptedTimer({"fast": 1.0, "slow": 2.6, "hopeless": 50.0})
    m = by_name(Benchmark(timer, race_factor=2.0).measure_jobs(jobs("fast", "slow", "hopeless")))
    assert m["hopeless"].status == RACED and m["hopeless"].rounds == []  # after its pilot
    assert m["slow"].status == RACED and len(m["slow"].rounds) == 3  # after the minimum rounds
    assert m["fast"].status == OK
    assert timer.calls["hopeless"] <= 4


def test_fast_kernels_are_not_raced_on_one_noisy_cold_call():
    # a 5 us kernel whose first timed call took 150 us (a cold call) is still timed in rounds
    first = iter([0.150, 0.005, 0.005])
    timer = ScriptedTimer({"ref": 0.005, "k": lambda r: next(first, 0.004)})
    m = by_name(Benchmark(timer).measure_jobs(jobs("ref", "k"), warm=True))
    assert m["k"].status == OK and m["k"].ms == pytest.approx(0.004)


def test_a_call_past_the_limit_is_not_repeated_and_a_raising_job_fails_without_stopping_the_others():
    timer = ScriptedTimer({"ok": 1.0, "hung": 5000.0, "bad": RuntimeError("boom")})
    m = by_name(Benchmark(timer, call_limit_ms=2000).measure_jobs(jobs("ok", "hung", "bad")))
    assert m["hung"].status == SLOW and timer.calls["hung"] == 1
    assert m["bad"].status == FAILED
    assert m["ok"].status == OK and m["ok"].ms == 1.0


def test_past_the_deadline_only_one_round_is_run():
    timer = ScriptedTimer({"a": lambda r: 1.0 + 0.05 * (r % 2), "b": lambda r: 1.02 - 0.05 * (r % 2)})
    m = by_name(Benchmark(timer, max_rounds=9).measure_jobs(jobs("a", "b"), deadline=time.perf_counter() - 1))
    assert len(m["a"].rounds) == 1


def test_resolved_tells_real_differences_ties_and_open_questions_apart():
    assert resolved([1.0, 1.01, 1.0], [1.2, 1.21, 1.2], 0.005)  # clearly different
    assert resolved([1.0, 1.0, 1.0], [1.001, 1.001, 1.001], 0.005)  # a tie
    assert not resolved([1.0, 1.08, 0.96], [1.02, 0.97, 1.05], 0.005)  # within the noise


def test_plain_measure_benchmarkers_are_adapted():
    class Plain:
        def measure(self, js):
            return [[2.0, 1.0, 3.0, 2.0, 2.0] for _ in js]

    m = measure_jobs(Plain(), jobs("a"))
    assert m[0].ms == 2.0 and m[0].status == OK


def test_the_cpu_timer_really_times():
    timer = CpuTimer(min_sample_ms=0.5)
    spin = Job("spin", 1, lambda: sum(range(20000)))
    m = Benchmark(timer, round_ms=2.0, warmup_ms=1.0).measure_jobs([spin, Job("noop", 1, lambda: None)])
    assert m[0].ms > m[1].ms > 0
    assert math.isfinite(m[0].ms)
