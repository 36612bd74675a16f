"""Tables: JSON round trip, atomic save, the persistent cache and its safety rules."""

import json
import os
import subprocess
import sys
import textwrap

import pytest
import torch

import rangedispatch as rd
from rangedispatch.testing import FakeBenchmarker, GuardCounter, tuning_calls


def make(bench, name="cached"):
    @rd.range_dispatch(dispatch_on=("x", 0), split_points=[16], benchmarker=bench, name=name)
    def f(x):
        return x * 2

    @f.register_impl
    def g(x):
        return x + x

    return f


def test_json_round_trip(tmp_path):
    f = make(FakeBenchmarker({"f": 2.0, "g": 1.0}))
    table = f.tune(torch.ones(4))
    path = f.save_table(tmp_path / "t.json")
    again = rd.TuningTable.load(path)
    assert again == table
    assert again.environment.torch == torch.__version__
    assert set(again.candidates) == {"f", "g"}


def test_second_op_instance_loads_cache_without_benchmarking():
    first = FakeBenchmarker({"f": 2.0, "g": 1.0})
    make(first)(torch.ones(4))
    assert first.calls
    second = FakeBenchmarker({"f": 2.0, "g": 1.0})
    f2 = make(second)
    torch.testing.assert_close(f2(torch.ones(4)), torch.full((4,), 2.0))
    assert second.calls and tuning_calls(second, f2.table) == []  # spot-checked, not tuned
    assert f2.provenance.source == "cache" and f2.provenance.status == "verified"
    assert f2.table.winners == {rd.Range(1, 17): "g", rd.Range(17, None): "g"}


def test_second_process_does_zero_benchmarking(tmp_path):
    script = textwrap.dedent("""
        import torch, rangedispatch as rd
        from rangedispatch.testing import FakeBenchmarker, tuning_calls
        bench = FakeBenchmarker({"f": 2.0, "g": 1.0})
        @rd.range_dispatch(dispatch_on=("x", 0), split_points=[16], benchmarker=bench, name="proc")
        def f(x):
            return x * 2
        @f.register_impl
        def g(x):
            return x + x
        f(torch.ones(4))
        print(len(tuning_calls(bench, f.table)))
    """)
    path = tmp_path / "proc.py"
    path.write_text(script)
    env = {**os.environ, "RANGEDISPATCH_CACHE_DIR": str(tmp_path / "c"), "PYTHONPATH": os.getcwd()}
    runs = [subprocess.run([sys.executable, str(path)], env=env, capture_output=True, text=True, check=True)
            for _ in range(2)]
    assert int(runs[0].stdout.split()[-1]) > 0
    assert int(runs[1].stdout.split()[-1]) == 0


def test_changed_candidate_source_invalidates_cache():
    make(FakeBenchmarker({}))(torch.ones(4))
    bench = FakeBenchmarker({})

    @rd.range_dispatch(dispatch_on=("x", 0), split_points=[16], benchmarker=bench, name="cached")
    def f(x):
        return x * 2

    @f.register_impl
    def g(x):  # same name, different body
        return 2 * x

    f(torch.ones(4))
    assert bench.calls


@pytest.mark.parametrize("damage", ["truncate", "version", "device", "garbage"])
def test_untrustworthy_cache_is_ignored_with_warning(damage):
    make(FakeBenchmarker({}))(torch.ones(4))
    cache = rd.cache.cache_dir()
    (path,) = list(cache.glob("cached-*.json"))
    data = json.loads(path.read_text())
    if damage == "truncate":
        path.write_text(path.read_text()[:50])
    elif damage == "version":
        data["version"] = 999
        path.write_text(json.dumps(data))
    elif damage == "device":
        data["environment"]["device"] = "cuda:Imaginary GPU"
        path.write_text(json.dumps(data))
    else:
        path.write_text("\x00\x01 not json")
    bench = FakeBenchmarker({})
    with pytest.warns(RuntimeWarning, match="Ignoring tuning cache"):
        make(bench)(torch.ones(4))
    assert bench.calls  # re-tuned, not trusted
    assert rd.TuningTable.load(path).environment.device != "cuda:Imaginary GPU"  # and repaired


def test_cache_can_be_disabled(monkeypatch):
    monkeypatch.setenv("RANGEDISPATCH_CACHE", "0")
    make(FakeBenchmarker({}))(torch.ones(4))
    bench = FakeBenchmarker({})
    make(bench)(torch.ones(4))
    assert bench.calls


def test_interrupted_save_keeps_the_old_file(tmp_path, monkeypatch):
    f = make(FakeBenchmarker({}))
    table = f.tune(torch.ones(4))
    path = table.save(tmp_path / "tables" / "t.json")
    before = path.read_text()

    def boom(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(rd.table.os, "replace", boom)
    with pytest.raises(KeyboardInterrupt):
        table.save(path)
    assert path.read_text() == before
    assert [p.name for p in path.parent.iterdir()] == ["t.json"]  # no temp file left


def test_load_table_checks_it_matches(tmp_path):
    f = make(FakeBenchmarker({"f": 2.0, "g": 1.0}))
    f.tune(torch.ones(4))
    path = f.save_table(tmp_path / "t.json")
    bench = FakeBenchmarker({"f": 2.0, "g": 1.0})
    f2 = make(bench, name="other")
    f2.load_table(path)
    assert f2.provenance.status == "pending"
    f2(torch.ones(30))
    assert tuning_calls(bench, f2.table) == [] and f2.table.winners[rd.Range(17, None)] == "g"
    assert f2.provenance.status == "verified" and f2.provenance.path == str(path)

    @rd.range_dispatch(dispatch_on=("x", 0), split_points=[16], benchmarker=bench)
    def h(x):
        return x * 2

    h.register_impl(lambda x: x + x)
    with pytest.raises(rd.TableError, match="does not match"):
        h.load_table(path)


def test_a_loaded_table_serves_compiled_calls_before_any_eager_call_then_eager_adopts_it(tmp_path):
    """A table loaded into a fresh op has no example call: compiled calls still dispatch with
    it (not the reference), and the first eager call with its signature becomes its example
    (signature guard, generated call); a call with another signature gets its own table."""
    from torch._dynamo.testing import EagerAndRecordGraphs

    f = make(FakeBenchmarker({"f": 2.0, "g": 1.0}))
    f.tune(torch.ones(4))
    path = f.save_table(tmp_path / "t.json")
    bench = FakeBenchmarker({"f": 2.0, "g": 1.0})
    for mode in ("cond", "guards"):
        f2 = make(bench, name=f"loaded_{mode}")
        f2.compiled_dispatch = mode
        f2.load_table(path)
        record = EagerAndRecordGraphs()
        compiled = torch.compile(lambda x: f2(x), backend=record, dynamic=True, fullgraph=True)
        for n in (5, 40):
            torch.testing.assert_close(compiled(torch.ones(n)), torch.full((n,), 2.0))
        code = "".join(g.code for g in record.graphs)
        assert "add" in code and "mul" not in code and "observe" not in code, code  # g's x + x, not f's x * 2
    assert bench.calls == []
    # the loaded table's dispatch is written out like a called op's: the frame guards no more
    f.compiled_dispatch = "guards"  # as f2 is after the loop
    f3 = make(bench, name="loaded_counted")
    f3.load_table(path)
    f3.compiled_dispatch = "guards"
    with GuardCounter() as guards:
        torch.compile(lambda x: f(x), backend="eager", dynamic=True)(torch.ones(5))
        called = guards.frames[-1]
        torch.compile(lambda x: f3(x), backend="eager", dynamic=True)(torch.ones(5))
        loaded, text = guards.frames[-1], guards.text[-1]
    assert loaded <= called, (loaded, called)
    assert "_tables" not in text and "_by_name" not in text
    assert f3._template is None and bench.calls == []
    torch.testing.assert_close(f2(torch.ones(30)), torch.full((30,), 2.0))
    assert type(f2).__name__.startswith("_Tuned") and f2._template is not None
    assert tuning_calls(bench, f2.table) == [] and len(f2.tables) == 1  # spot-checked at the first eager call
    checked = len(bench.calls)
    torch.testing.assert_close(f2(torch.ones(30, dtype=torch.float64)), torch.full((30,), 2.0, dtype=torch.float64))
    assert len(bench.calls) > checked and len(f2.tables) == 2


def test_cli_show_and_demo(tmp_path):
    f = make(FakeBenchmarker({"f": 2.0, "g": 1.0}))
    f.tune(torch.ones(4))
    path = f.save_table(tmp_path / "t.json")
    from rangedispatch.cli import main

    assert main(["show", str(path)]) == 0
    (tmp_path / "bad.json").write_text("{")
    assert main(["show", str(tmp_path / "bad.json")]) == 2
