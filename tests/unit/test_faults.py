"""Bad input and faults: a clear error naming argument, rule and fix, or graceful degradation
with a warning; nothing the user saved is lost or half-written."""

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import torch

import rangedispatch as rd
from pytest_rangedispatch import records
from rangedispatch.testing import FakeBenchmarker

ROOT = Path(__file__).resolve().parents[2]


def op_with(bad, **options):
    @rd.range_dispatch(dispatch_on=("x", 0), split_points=[64], cache=False,
                       benchmarker=FakeBenchmarker({"ref": 2.0, "bad": 0.1}), **options)
    def ref(x):
        return x * 2

    ref.register_impl(bad, name="bad")
    return ref


@pytest.mark.parametrize("bad, reason", [
    (lambda x: (x * 2).tolist(), "expected a Tensor, got list"),
    (lambda x: None, "expected a Tensor, got NoneType"),
    (lambda x: (x * 2).half(), "dtype"),
    (lambda x: (x * 2)[:-1], "shape"),
    (lambda x: x * float("nan"), "NaN"),
    (lambda x: (_ for _ in ()).throw(MemoryError("out of memory")), "raised MemoryError"),
])
def test_a_broken_candidate_loses_its_ranges_with_a_warning_and_the_op_still_answers(bad, reason):
    op = op_with(bad)
    with pytest.warns(RuntimeWarning, match=reason):
        op.tune(torch.randn(10))
    assert set(op.table.winners.values()) == {"ref"}
    torch.testing.assert_close(op(torch.ones(3)), torch.full((3,), 2.0))


def test_a_cache_path_that_is_a_file_degrades_to_a_warning(tmp_path, monkeypatch):
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("user data")
    monkeypatch.setenv("RANGEDISPATCH_CACHE_DIR", str(blocker))
    @rd.range_dispatch(dispatch_on=("x", 0), split_points=[64], benchmarker=FakeBenchmarker({"ref": 2.0}))
    def ref(x):
        return x * 2

    ref.register_impl(lambda x: x + x, name="plus")
    with pytest.warns(RuntimeWarning, match="could not write tuning cache"):
        ref.tune(torch.randn(10))
    assert blocker.read_text() == "user data"
    torch.testing.assert_close(ref(torch.ones(2)), torch.full((2,), 2.0))


def test_an_interrupted_baseline_write_keeps_the_old_baseline(tmp_path, monkeypatch):
    path = tmp_path / "baseline.json"
    records.save_baseline(path, {"ops": {"a": 1}})
    before = path.read_text()

    def boom(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(records.os, "replace", boom)
    with pytest.raises(KeyboardInterrupt):
        records.save_baseline(path, {"ops": {"a": 2}})
    assert path.read_text() == before
    assert [p.name for p in tmp_path.iterdir()] == ["baseline.json"]


SCRIPT = textwrap.dedent("""
    import sys, time, torch
    import rangedispatch as rd

    SLOW = float(sys.argv[1])
    FORCE = sys.argv[2] == "force"

    @rd.range_dispatch(dispatch_on=("x", 0), split_points=[64, 512])
    def ref(x):
        return x * 2

    @ref.register_impl
    def plus(x):
        time.sleep(SLOW)
        return x + x

    print("tuning", flush=True)
    ref.tune(torch.randn(100), force=FORCE)
    print("done", flush=True)
""")


def run(tmp_path, slow, env, force=False):
    script = tmp_path / "tune_me.py"
    script.write_text(SCRIPT)
    return subprocess.Popen([sys.executable, str(script), str(slow), "force" if force else "-"], env=env,
                            stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, cwd=str(tmp_path))


def cache_env(tmp_path):
    env = dict(os.environ, RANGEDISPATCH_CACHE_DIR=str(tmp_path / "cache"), OMP_NUM_THREADS="1",
               PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    return env


def tables(tmp_path):
    return sorted((tmp_path / "cache").glob("*.json"))


@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGINT])
def test_killing_a_tuning_process_never_leaves_a_half_written_table(tmp_path, sig):
    env = cache_env(tmp_path)
    first = run(tmp_path, 0.0, env)
    assert first.wait(timeout=120) == 0, first.stderr.read()
    [saved] = tables(tmp_path)
    good = saved.read_text()
    # a second process re-tunes (force=True: it will overwrite the same file) and dies mid-way
    victim = run(tmp_path, 5.0, env, force=True)  # its first candidate call takes 5 s
    assert victim.stdout.readline().strip() == "tuning"
    time.sleep(0.5)
    victim.send_signal(sig)
    victim.wait(timeout=60)
    assert saved.read_text() == good  # the earlier table is untouched
    for path in tables(tmp_path):
        json.loads(path.read_text())  # every table file there is whole
    assert not [p for p in (tmp_path / "cache").iterdir() if p.suffix == ".tmp" and sig == signal.SIGINT]


def test_two_processes_tuning_at_once_both_finish_and_leave_one_whole_table(tmp_path):
    env = cache_env(tmp_path)
    procs = [run(tmp_path, 0.0, env) for _ in range(2)]
    for p in procs:
        assert p.wait(timeout=180) == 0, p.stderr.read()
    saved = tables(tmp_path)
    assert len(saved) == 1
    assert rd.TuningTable.load(saved[0]).winners
