"""Ranges over several dimensions: configs, per-cell tuning, merging, eager dispatch, tables."""

import warnings

import pytest
import torch

import rangedispatch as rd
from rangedispatch.op.grid import Cell, cell_points, grid_tree
from rangedispatch.decide.ranges import Range
from rangedispatch.testing import FakeBenchmarker, tuning_calls

inf = float("inf")


def make_op(times, calls, **options):
    """A 2-d op over (x[0], x[1]) whose candidates record which one ran."""

    def scale(x, w):
        calls.append("scale")
        return x * w

    def small(x, w):
        calls.append("small")
        return torch.mul(w, x)

    def wide(x, w):
        calls.append("wide")
        return torch.einsum("bh,h->bh", x, w)

    config = rd.MultiDimRangeConfig(
        dims={"x": {0: [(1, 8), (8, inf)], 1: [(1, 64), (64, inf)]}},
        tie={("x", 1): {"w": 0}},
        implementations=[small, wide],
    )
    return rd.register_custom_op_autotuning(scale, configs=[config], benchmarker=FakeBenchmarker(times),
                                            cache=False, **options)


# small wins at batch < 8, wide at batch >= 8 with hidden >= 64, the reference elsewhere
TIMES = {"scale": 2.0, "small": lambda p: 1.0 if p[0] < 8 else 4.0,
         "wide": lambda p: 1.0 if p[0] >= 8 and p[1] >= 64 else 4.0}


def test_each_cell_is_tuned_at_points_inside_it_and_dispatched_by_size():
    calls = []
    op = make_op(TIMES, calls)
    x, w = torch.randn(4, 16), torch.randn(16)
    op.tune(x, w)
    winners = {str(r.range): r.winner for r in op.table.results}
    assert winners == {"[1, 8) x [1, 64)": "small", "[1, 8) x [64, inf)": "small",
                       "[8, inf) x [1, 64)": "scale", "[8, inf) x [64, inf)": "wide"}
    for result in op.table.results:
        assert len(result.samples) >= 4 and all(p in result.range for p in result.samples)
    # boundaries on both dimensions, one size either side
    expected = {(7, 63): "small", (7, 64): "small", (8, 63): "scale", (8, 64): "wide", (1, 1): "small",
                (300, 5000): "wide", (300, 2): "scale"}
    for (b, h), name in expected.items():
        calls.clear()
        out = op(torch.randn(b, h), torch.randn(h))
        assert calls == [name], (b, h, calls)
        assert out.shape == (b, h)
    # the eager decision is written into the generated call: each size read once, no walker
    source = type(op).__call__.__rd_source__.split("_rd_miss")[-1]  # the eager part, after the guard
    assert source.count("x.shape") == 1 and "_rd_a0 = _rd_s_x[0]" in source and "_rd_a1 = _rd_s_x[1]" in source
    assert "_rd_a0 < 8" in source and "_rd_a1 < 64" in source and "_fn0" not in source


def test_the_tied_tensor_is_resized_with_its_dimension():
    seen = []

    def ref(x, w):
        seen.append((tuple(x.shape), tuple(w.shape)))
        return x * w

    op = rd.range_dispatch(ref, dispatch_on=[("x", 0), {"tensor_name": "x", "dim": 1, "tie": {"w": 0}}],
                           split_points=[[4], [32]], benchmarker=FakeBenchmarker({}), cache=False)
    op.register_impl(lambda x, w: w * x, name="swapped")
    op.tune(torch.randn(2, 8), torch.randn(8))
    assert seen and all(xs[1] == ws[0] for xs, ws in seen)
    assert {xs[0] for xs, _ in seen} >= {1, 4, 5} and {xs[1] for xs, _ in seen} >= {1, 32, 33}


def test_equal_neighbouring_cells_merge_into_one_lookup_per_changing_dimension():
    a, b = (Range(0, 8), Range(8, 64), Range(64, None)), (Range(0, 4), Range(4, None))
    owners = {Cell((x, y)): ("p" if x.lo < 64 else "q") for x in a for y in b}
    assert grid_tree([a, b], owners, None) == (0, (64, None), ("p", "q"))
    owners[Cell((a[2], b[1]))] = "r"
    assert grid_tree([a, b], owners, None) == (0, (64, None), ("p", (1, (4, None), ("q", "r"))))
    # a gap below the first range on the second dimension
    b = (Range(2, 4), Range(4, None))
    owners = {Cell((x, y)): "p" for x in a for y in b}
    assert grid_tree([a, b], owners, "gap") == (1, (2, None), ("gap", "p"))


def test_cell_points_are_the_corners_and_the_diagonal_inside_the_cell():
    axes = (rd.DispatchSpec("x", 0), rd.DispatchSpec("x", 1, upper_bound=4096))
    cell = Cell((Range(8, 64), Range(1024, None)))
    points = cell_points(cell, axes, rd.TunerSettings(samples_per_range=3))
    assert {(8, 1024), (8, 4096), (63, 1024), (63, 4096)} <= set(points)
    assert all(p in cell for p in points)
    assert len(points) == 5


def test_sizes_outside_every_cell_run_the_reference_with_one_warning():
    calls = []
    op = make_op(TIMES, calls)
    op.tune(torch.randn(4, 16), torch.randn(16))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        calls.clear()
        op(torch.randn(0, 16), torch.randn(16))
        op(torch.randn(3, 0), torch.randn(0))
    assert calls == ["scale", "scale"]
    messages = [str(w.message) for w in caught if "outside every tuned cell" in str(w.message)]
    assert len(messages) == 1 and "x[0]=0, x[1]=16" in messages[0] and "x[1]: [1, 64), [64, inf)" in messages[0]


def test_a_candidate_failing_in_one_cell_loses_only_that_cell():
    def ref(x):
        return x.sum(1)

    def fragile(x):
        if x.shape[0] >= 8 and x.shape[1] >= 64:
            raise RuntimeError("no kernel for this shape")
        return x.sum(1)

    op = rd.range_dispatch(ref, dispatch_on=[("x", 0), ("x", 1)], split_points=[[7], [63]],
                           benchmarker=FakeBenchmarker({"ref": 2.0, "fragile": 1.0}), cache=False)
    op.register_impl(fragile)
    with pytest.warns(RuntimeWarning, match="candidate 'fragile' loses range"):
        op.tune(torch.randn(4, 16))
    winners = {r.range: r.winner for r in op.table.results}
    assert list(winners.values()) == ["fragile", "fragile", "fragile", "ref"]
    x = torch.randn(100, 100)
    torch.testing.assert_close(op(x), x.sum(1))


def test_tables_round_trip_and_the_cache_serves_a_new_process(tmp_path, monkeypatch):
    monkeypatch.setenv("RANGEDISPATCH_CACHE_DIR", str(tmp_path / "cache"))
    config = rd.MultiDimRangeConfig(dims={"x": {0: [(0, 8), (8, inf)], 1: [(0, 64), (64, inf)]}},
                                    tie={("x", 1): {"w": 0}}, implementations=[_small, _wide])
    times = {"_" + k: v for k, v in TIMES.items()}
    op = rd.register_custom_op_autotuning(_scale, configs=[config], benchmarker=FakeBenchmarker(times))
    op.tune(torch.randn(4, 16), torch.randn(16))
    path = op.save_table(tmp_path / "table.json")
    loaded = rd.GridTable.load(path)
    assert loaded.results == op.table.results and loaded.tree() == op.table.tree()
    assert "x[0] < 8: _small | else: [x[1] < 64: _scale | else: _wide]" in op.table.format()
    again = FakeBenchmarker(times)
    op2 = rd.register_custom_op_autotuning(_scale, configs=[config], benchmarker=again)
    op2.tune(torch.randn(4, 16), torch.randn(16))
    assert tuning_calls(again, op2.table) == [] and op2.table.tree() == op.table.tree()
    op3 = rd.register_custom_op_autotuning(_scale, configs=[config], benchmarker=FakeBenchmarker({}), cache=False)
    op3.load_table(path)
    assert op3.table.tree() == op.table.tree()
    with pytest.raises(rd.TableError, match="format"):
        rd.TuningTable.load(path)


def _scale(x, w):
    return x * w


def _small(x, w):
    return torch.mul(w, x)


def _wide(x, w):
    return torch.einsum("bh,h->bh", x, w)


def test_another_dtype_gets_its_own_grid_table():
    op = make_op(TIMES, [])
    op(torch.randn(4, 16), torch.randn(16))
    out = op(torch.randn(4, 16, dtype=torch.float64), torch.randn(16, dtype=torch.float64))
    assert out.dtype == torch.float64
    assert len(op.tables) == 2


def test_explain_names_the_cell_and_the_ranking():
    op = make_op(TIMES, [])
    assert "not tuned yet" in op.explain((3, 3))
    op.tune(torch.randn(4, 16), torch.randn(16))
    text = op.explain((100, 1000))
    assert text.startswith("x[0]=100, x[1]=1000 is in cell [8, inf) x [64, inf): 'wide'")
    with pytest.raises(rd.ConfigError, match="one size per dimension"):
        op.explain(100)


def test_a_grid_op_works_as_a_registered_custom_op():
    @torch.library.custom_op("rdtest_grid::scale", mutates_args=())
    def scale(x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
        return x * w

    config = rd.MultiDimRangeConfig(dims={"x": {0: [(0, 8), (8, inf)], 1: [(0, 64), (64, inf)]}},
                                    tie={("x", 1): {"w": 0}}, implementations=[_small, _wide])
    times = {"scale": 2.0, "_small": TIMES["small"], "_wide": TIMES["wide"]}
    op = rd.register_custom_op_autotuning(scale, configs=[config], benchmarker=FakeBenchmarker(times), cache=False)
    assert isinstance(op, rd.GridDispatchOp) and rd.dispatcher_of(scale) is op
    x, w = torch.randn(9, 100), torch.randn(100)
    torch.testing.assert_close(scale(x, w), x * w)
    assert op.table.tree() == (0, (8, None), ("_small", (1, (64, None), ("scale", "_wide"))))


@pytest.mark.parametrize("kwargs, message", [
    (dict(dispatch_on=[("x", 0), ("x", 1)], split_points=[[8]]), "one list per dispatch dimension"),
    (dict(dispatch_on=[("x", 0), ("x", 1)], split_points="auto"), "one list of split points per dimension"),
    (dict(dispatch_on=[("x", 0), ("x", 0)], split_points=[[8], [9]]), "list each tensor dimension once"),
    (dict(dispatch_on=[("x", 0), ("y", 1)], split_points=[[8], [9]]), "Tensor 'y' not found"),
    (dict(dispatch_on=[("x", 0), ("x", 1)], split_points=[[8], [9]], ranges=[[(0, 4)], [(0, 4)]]),
     "split_points or ranges"),
    (dict(dispatch_on=[("x", 0), ("x", 1)], ranges=[[(0, 8), (4, inf)], [(0, inf)]]), "overlap"),
])
def test_bad_grid_configs_name_the_argument_and_the_fix(kwargs, message):
    def ref(x):
        return x

    with pytest.raises(rd.ConfigError, match=message):
        op = rd.range_dispatch(ref, **kwargs)
        op.register_impl(lambda x: x + 0)


def test_bad_multidim_configs_and_unsupported_calls_are_refused_clearly():
    with pytest.raises(rd.ConfigError, match="dims"):
        rd.MultiDimRangeConfig(dims={}, implementations=[abs])
    with pytest.raises(rd.ConfigError, match="tie keys"):
        rd.MultiDimRangeConfig(dims={"x": {0: [(0, inf)]}}, tie={("x", 1): {"w": 0}}, implementations=[abs])
    with pytest.raises(rd.ConfigTypeError, match="dims\\[.x.\\]\\[0\\]\\[1\\]"):
        rd.MultiDimRangeConfig(dims={"x": {0: [(0, 8), (8, "big")]}}, implementations=[abs])
    op = make_op(TIMES, [])
    with pytest.raises(rd.ConfigError, match="without ranges on a grid op"):
        op.register_impl(_small, ranges=[(0, 8)])
    with pytest.raises(rd.ConfigError, match="one-dimensional"):
        op.record_sizes()
