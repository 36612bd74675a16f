"""Tables that cannot go stale: the fingerprint covers the code a candidate really runs, and a
loaded table is spot-checked before it is trusted."""

import enum
import functools
import importlib.util
import logging
import re
import sys
import textwrap
import types
import warnings

import pytest
import torch

import rangedispatch as rd
from rangedispatch.decide.fingerprint import code_fingerprint, fingerprint_parts
from rangedispatch.testing import FakeBenchmarker, tuning_calls

USER_MODULE = textwrap.dedent("""
    import os
    import types

    SCALE = {scale}
    CONFIG = types.SimpleNamespace(shift={shift})  # a mutable object: not hashed, the spot check's job


    def helper(x):
        return x * {factor}


    def make(k):
        def ref(x):
            y = helper(x) * SCALE * k + CONFIG.shift
            if os.environ.get("USEROPS_STALE_MODE") == "neg":
                y = -y
            return y
        return ref


    def fast(x):
        return x * 12
""")
BASE = dict(scale=3, shift=0, factor=2, k=2)  # where 'fast' computes the reference's function
TIMES = {"ref": 2.0, "fast": 1.0}


def run_user_code(tmp_path, times=TIMES, cache=True, **changes):
    """One "process" of a user's program: their module as it is on disk now, a fresh op on it,
    one call. Returns the op and its output on ones(4)."""
    values = {**BASE, **changes}
    path = tmp_path / "userops_stale.py"
    path.write_text(USER_MODULE.format(**values))
    spec = importlib.util.spec_from_file_location("userops_stale", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules["userops_stale"] = module
    spec.loader.exec_module(module)
    op = rd.range_dispatch(module.make(values["k"]), dispatch_on=("x", 0), split_points=[16],
                           benchmarker=FakeBenchmarker(times), name="stale", cache=cache)
    op.register_impl(module.fast)
    with torch.no_grad():
        out = op(torch.ones(4))
    return op, out


@pytest.fixture
def cache_dir(tmp_path, monkeypatch):
    monkeypatch.setenv("RANGEDISPATCH_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.delenv("USEROPS_STALE_MODE", raising=False)
    yield tmp_path
    sys.modules.pop("userops_stale", None)


def test_an_unchanged_op_loads_its_table_with_no_tuning(cache_dir):
    first, _ = run_user_code(cache_dir)
    assert first.provenance.source == "tuned" and set(first.table.winners.values()) == {"fast"}
    again, out = run_user_code(cache_dir)
    assert tuning_calls(again.benchmarker, again.table) == []
    assert again.provenance.source == "cache" and again.provenance.status == "verified"
    torch.testing.assert_close(out, torch.full((4,), 12.0))


@pytest.mark.parametrize("change, said", [
    (dict(factor=3), "userops_stale.helper (code) changed"),  # a helper the reference calls was edited
    (dict(scale=4), "userops_stale.SCALE (value) changed"),  # a module-level flag it reads was flipped
    (dict(k=3), "<closure k> (value) changed"),  # a value its closure holds changed
    ("env", "USEROPS_STALE_MODE (env) added"),  # an environment variable drives a branch
])
def test_a_change_in_what_the_reference_runs_re_tunes(cache_dir, monkeypatch, caplog, change, said):
    run_user_code(cache_dir)
    if change == "env":
        monkeypatch.setenv("USEROPS_STALE_MODE", "neg")
        change = {}
    with caplog.at_level(logging.INFO, logger="rangedispatch"), pytest.warns(RuntimeWarning, match="'fast' loses"):
        op, out = run_user_code(cache_dir, **change)
    assert tuning_calls(op.benchmarker, op.table) != []  # benchmarked again, not served the old table
    assert set(op.table.winners.values()) == {"ref"}  # 'fast' no longer computes the reference's function
    values = {**BASE, **change}
    expected = 1.0 * values["factor"] * values["scale"] * values["k"] * (-1 if "env" in said else 1)
    torch.testing.assert_close(out, torch.full((4,), expected))
    assert said in caplog.text and op.provenance.why.startswith("the code changed")


def test_the_spot_check_catches_what_the_fingerprint_cannot_see(cache_dir, monkeypatch):
    run_user_code(cache_dir)
    # CONFIG.shift is an attribute of a mutable object: same fingerprint, another function
    with pytest.warns(RuntimeWarning, match=r"failed its spot check.*'fast' wrong output"):
        op, out = run_user_code(cache_dir, shift=1)
    torch.testing.assert_close(out, torch.full((4,), 13.0))  # right, from the re-tuned table
    assert set(op.table.winners.values()) == {"ref"} and "spot check" in op.provenance.why
    # trusted, the same stale table would have been served unchecked
    monkeypatch.setenv("RANGEDISPATCH_CACHE_DIR", str(cache_dir / "another"))
    run_user_code(cache_dir)
    op, out = run_user_code(cache_dir, cache="trust", shift=1)
    torch.testing.assert_close(out, torch.full((4,), 12.0))  # wrong: the table trusted is stale
    assert op.provenance.status == "trusted" and set(op.table.winners.values()) == {"fast"}


def test_a_changed_cost_fails_the_spot_check_and_re_tunes(cache_dir):
    run_user_code(cache_dir)
    slower = {"ref": 0.5, "fast": 1.0}  # the machine or a backend switch made the reference 4x faster
    with pytest.warns(RuntimeWarning, match=r"'fast' takes 2.00x the time of 'ref' where the table recorded 0.50x"):
        op, _ = run_user_code(cache_dir, times=slower)
    assert set(op.table.winners.values()) == {"ref"}


@pytest.mark.parametrize("ref_ms, kept", [
    (2.4, True),  # 0.42x where 0.50x was recorded: noise
    (3.4, True),  # 0.29x: the winner looks better, the decision stands
    (8.0, False),  # 0.125x: a quarter of the recorded ratio, something changed drastically
    (1.5, True),  # 0.67x: the winner's advantage shrank 1.33x, within the 1.5x bound
    (1.1, True),  # 0.91x: shrank 1.8x, yet the tuner's own measurement at every sample still backs it
    (0.7, False),  # 1.43x: the winner is now slower than the reference
])
def test_a_cost_change_keeps_the_table_only_within_the_bound(cache_dir, ref_ms, kept):
    run_user_code(cache_dir)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        again, _ = run_user_code(cache_dir, times={"ref": ref_ms, "fast": 1.0})
    retuned = any("failed its spot check" in str(w.message) for w in caught)
    assert retuned is not kept
    assert (again.provenance.status == "verified") is kept


@pytest.mark.parametrize("mode", ["trust", "off"])
def test_the_cache_mode_comes_from_the_environment(cache_dir, monkeypatch, mode):
    run_user_code(cache_dir)
    monkeypatch.setenv("RANGEDISPATCH_CACHE", mode)
    op, _ = run_user_code(cache_dir, times={"ref": 0.5, "fast": 1.0})
    if mode == "trust":  # served unchecked: no timing at all
        assert op.benchmarker.calls == [] and op.provenance.status == "trusted"
    else:  # no cache: tuned from scratch, nothing loaded
        assert op.provenance.source == "tuned" and op.provenance.path is None


def test_a_bad_cache_argument_names_the_values_it_takes():
    with pytest.raises(rd.ConfigError, match=r"cache=True, False, 'verify', 'trust' or 'off' but got cache='always'"):
        rd.range_dispatch(lambda x: x, dispatch_on=("x", 0), split_points=[4], cache="always")


def test_load_table_checks_the_code_and_the_table_unless_trusted(cache_dir, tmp_path):
    op, _ = run_user_code(cache_dir)
    saved = op.save_table(tmp_path / "committed.json")
    sys.modules.pop("userops_stale")
    changed, _ = run_user_code(cache_dir, factor=3)
    with pytest.raises(rd.TableError, match=r"userops_stale.helper \(code\) changed.*trust=True"):
        changed.load_table(saved)
    with pytest.warns(RuntimeWarning, match="trust=True although the code changed"):
        changed.load_table(saved, trust=True)
    assert changed.provenance.status == "trusted"
    # a table that fits the code but not the costs: checked at once (the op has seen this call), dropped
    same, _ = run_user_code(cache_dir, times={"ref": 0.5, "fast": 1.0}, cache="off")
    with pytest.warns(RuntimeWarning, match="failed its spot check"):
        same.load_table(saved)
    assert same.table is None
    with torch.no_grad():
        same(torch.ones(4))
    assert set(same.table.winners.values()) == {"ref"}


def test_explain_says_where_the_table_came_from(cache_dir):
    run_user_code(cache_dir)
    op, _ = run_user_code(cache_dir)
    text = op.explain(8)
    assert "table loaded from the cache" in text
    assert re.search(r"verified by a spot check of (1 of 2|2) range\(s\) in \d+ ms", text), text
    assert str(rd.cache.cache_dir()) in text


class Mode(enum.Enum):
    FAST = 1
    SAFE = 2


def test_the_fingerprint_walks_user_code_only_and_hashes_simple_values():
    state = {"mode": Mode.FAST}

    def inner(x):
        return torch.relu(x) if state["mode"] is Mode.FAST else x

    def outer(x):
        return inner(x) + recursive(3)

    before = code_fingerprint(outer)
    parts = fingerprint_parts(outer)
    assert any("inner" in p and p.startswith("code") for p in parts)
    assert any("recursive" in p for p in parts)  # mutual recursion ends
    assert not any("torch" in p.split()[1] for p in parts)  # installed code is not walked
    state["mode"] = Mode.SAFE  # a dict of enums held by a closure
    assert code_fingerprint(outer) != before
    bound = [code_fingerprint(functools.partial(recursive, n)) for n in (2, 3)]
    assert bound[0] != bound[1]  # a partial's bound simple arguments count
    module = types.ModuleType("cfg_user")
    module.__file__ = "/home/user/project/cfg_user.py"
    module.FLAG = True

    def reads_module(x):
        return x if module.FLAG else -x

    flagged = code_fingerprint(reads_module)
    module.FLAG = False
    assert code_fingerprint(reads_module) != flagged


def recursive(n):
    return 0 if n <= 0 else recursive(n - 1) + 1


def test_a_triton_kernel_contributes_tritons_own_cache_key():
    triton = pytest.importorskip("triton")
    import triton.language as tl

    @triton.jit
    def kernel(x_ptr, BLOCK: tl.constexpr):
        tl.store(x_ptr + tl.arange(0, BLOCK), tl.arange(0, BLOCK))

    def launch(x):
        kernel[(1,)](x, BLOCK=16)
        return x

    assert any(p.startswith("triton ") for p in fingerprint_parts(launch))


@pytest.mark.parametrize("tuning_s, checked", [(1e-9, 1), (0.0, 2)])
def test_the_check_keeps_to_its_share_of_the_recorded_tuning_time(cache_dir, tuning_s, checked):
    import json

    run_user_code(cache_dir)
    (path,) = list(rd.cache.cache_dir().glob("stale-*.json"))
    data = json.loads(path.read_text())
    assert data["tuning_s"] > 0  # recorded by the tuning
    data["tuning_s"] = tuning_s  # a tuning that took no time at all, or a table that does not say
    path.write_text(json.dumps(data))
    op, _ = run_user_code(cache_dir)
    check = op.provenance.check
    assert check.passed and (check.checked, check.ranges) == (checked, 2)  # at least one range, always
    from rangedispatch.decide.spotcheck import PHASES

    spent = dict(check.phases)  # where the time went, within the check's own
    assert list(spent) == list(PHASES) and spent["reference"] > 0 and spent["timing"] > 0
    assert sum(spent.values()) <= check.seconds


def priced_op(bench):
    def ref(x):
        return x * 2

    def fast(x):
        return x + x

    op = rd.range_dispatch(ref, dispatch_on=("x", 0), split_points=[16, 64, 256, 1024],
                           range_upper_bound=4096, benchmarker=bench, name="priced")
    op.register_impl(fast)
    return op


@pytest.mark.parametrize("budget_s, sizes", [(1.0, {1, 17, 65}), (1e-9, {1})])
def test_the_check_prices_each_range_from_its_recorded_timings(cache_dir, budget_s, sizes):
    """The cheapest range goes first and is always checked; a range whose recorded timings would
    pass what is left of the budget is skipped, wherever the random order puts it."""
    import json

    from rangedispatch.decide.spotcheck import SPOT_SHARE

    times = {"ref": lambda size: float(size), "fast": lambda size: size / 2}  # ms per call grows with the size
    priced_op(FakeBenchmarker(times)).tune(torch.ones(8))
    (path,) = list(rd.cache.cache_dir().glob("priced-*.json"))
    data = json.loads(path.read_text())
    data["tuning_s"] = budget_s / SPOT_SHARE
    path.write_text(json.dumps(data))
    for _ in range(4):  # four random orders: the skipped ranges are skipped wherever they come
        bench = FakeBenchmarker(times)
        op = priced_op(bench)
        op(torch.ones(8))
        check = op.provenance.check
        # a range costs about 10 ms per unit of its cheapest sample: 1 + 17 + 65 fit a second, 257 does not
        assert op.provenance.status == "verified" and (check.checked, check.ranges) == (len(sizes), 5)
        assert {size for _, size in bench.calls} == sizes


def test_the_light_timing_takes_one_call_a_round_of_a_call_longer_than_the_round():
    """A costly sample (seconds of attention at a long sequence) is not timed in batches: one
    call a round, so a check of such a range costs a handful of calls, not dozens."""
    from rangedispatch.decide.spotcheck import SPOT_ROUND_MS, SPOT_ROUNDS, light_ratio
    from rangedispatch.measure.timing import Job

    class CountingTimer:
        def __init__(self, ms):
            self.ms, self.once_calls, self.batches = ms, {}, {}

        def once(self, job):
            self.once_calls[job.name] = self.once_calls.get(job.name, 0) + 1
            return self.ms[job.name]

        def batch(self, job, ms, estimate_ms):
            self.batches[job.name] = self.batches.get(job.name, 0) + 1
            return [self.ms[job.name]] * max(1, int(ms // estimate_ms))

    timer = CountingTimer({"long": 4 * SPOT_ROUND_MS, "short": SPOT_ROUND_MS / 10})
    bench = types.SimpleNamespace(timer=timer)
    ratio, spread = light_ratio(bench, [Job("long", 8, lambda: None), Job("short", 8, lambda: None)])
    assert ratio == pytest.approx(40.0) and spread == pytest.approx(0.0)
    assert "long" not in timer.batches and timer.once_calls["long"] == 2 + SPOT_ROUNDS  # pilot + one a round
    assert timer.batches["short"] == SPOT_ROUNDS
