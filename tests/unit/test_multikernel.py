"""Multi-kernel dispatch: policies, stats, persistence, variant sources and bad input."""

import json
import subprocess
import sys
import textwrap

import pytest
import torch

import rangedispatch as rd
from rangedispatch.errors import ConfigError, ConfigTypeError, TableError
from rangedispatch.multikernel import log2_distance
from rangedispatch.testing import FakeBenchmarker


def small(a, b):
    return a @ b


def large(a, b):
    return (b.t() @ a.t()).t()


def wrong(a, b):
    return a @ b + 1


MN = lambda a, b: (a.shape[0], b.shape[1])  # noqa: E731


def inputs(m, n=48, k=16):
    return torch.randn(m, k), torch.randn(k, n)


def make(policy="nearest", bench=None, cache=False, **kw):
    return rd.MultiKernel([(small, [64, 64]), (large, [4096, 4096])], policy=policy, sizes=MN,
                          benchmarker=bench, cache=cache, **kw)


def test_log2_distance_is_l1_in_log2_space():
    assert log2_distance([64, 64], [64, 64]) == 0
    assert log2_distance([1024, 512], [4096, 2048]) == pytest.approx(4.0)
    assert log2_distance([0, 8], [1, 8]) == 0  # sizes below 1 count as 1


def test_nearest_picks_the_closest_hint_and_caches_per_shape():
    mk = make("nearest")
    picks = {m: mk.select(*inputs(m, n=m)).name for m in (1, 64, 500, 600, 4096, 10000)}
    # midpoint in log2 between 64 and 4096 is 512: 500 is nearer 64, 600 nearer 4096
    assert picks == {1: "small@64x64", 64: "small@64x64", 500: "small@64x64", 600: "large@4096x4096",
                     4096: "large@4096x4096", 10000: "large@4096x4096"}
    a, b = inputs(600, n=600)
    torch.testing.assert_close(mk(a, b), a @ b)
    torch.testing.assert_close(mk(a, b), a @ b)
    stats = mk.stats()
    assert stats["benchmarks"] == 0 and stats["shapes"] == 6
    assert stats["calls"] == 2 and stats["hits"] == 2
    assert stats["selections"] == {"small@64x64": 0, "large@4096x4096": 2}
    assert mk.get_dispatch_stats() == stats


def test_dims_equal_in_every_hint_do_not_count():
    mk = rd.MultiKernel([(small, [64, 128]), (large, [4096, 128])], policy="nearest", sizes=MN, cache=False)
    # n = 100000 is far from 128 for both hints; only m decides
    assert mk.select(*inputs(70, n=100000)).name == "small@64x128"


def test_benchmark_policy_times_each_new_shape_once_and_picks_the_fastest():
    bench = FakeBenchmarker({"small@64x64": lambda m: 1.0 if m < 300 else 3.0,
                             "large@4096x4096": lambda m: 2.0})
    mk = make("benchmark", bench)
    for m in (100, 100, 1000, 1000, 1000):
        a, b = inputs(m)
        torch.testing.assert_close(mk(a, b), a @ b)
    assert bench.sizes == [100, 1000]  # one benchmark per new shape
    stats = mk.stats()
    assert (stats["calls"], stats["hits"], stats["misses"], stats["benchmarks"]) == (5, 3, 2, 2)
    assert stats["benchmark_ms"] > 0
    assert stats["selections"] == {"small@64x64": 2, "large@4096x4096": 3}


def test_the_hot_path_counts_every_call_and_never_serves_another_signature():
    bench = FakeBenchmarker({"small@64x64": 1.0, "large@4096x4096": 2.0})
    mk = make("benchmark", bench)
    a, b = inputs(100)
    for _ in range(3):
        torch.testing.assert_close(mk(a, b), a @ b)
    # same shapes, other dtype: a decision of its own (timed again), not the float32 one
    a64, b64 = a.double(), b.double()
    torch.testing.assert_close(mk(a64, b64), a64 @ b64)
    mk(a64, b64)
    # requires_grad and a tensor passed twice differ from the learned guard: still served right
    g = a.clone().requires_grad_(True)
    mk(g, b)
    sq = torch.randn(16, 16)
    torch.testing.assert_close(mk(sq, sq), sq @ sq)
    mk(sq, sq)
    assert [size for _, size in bench.calls] == [100, 100, 100, 100, 16, 16]  # 2 variants per decision
    stats = mk.stats()
    assert (stats["calls"], stats["misses"], stats["hits"]) == (8, 3, 5)
    assert stats["selections"] == {"small@64x64": 8, "large@4096x4096": 0}
    mk.policy = "nearest"  # the hot path forgets the benchmark policy's decisions, the counts stay
    assert mk.stats()["calls"] == 8
    mk(a, b)
    assert mk.stats()["misses"] == 4


def test_a_shape_equal_to_a_hint_takes_that_variant_without_timing():
    bench = FakeBenchmarker({})
    mk = make("benchmark", bench)
    assert mk.select(*inputs(4096, n=4096)).name == "large@4096x4096"
    assert bench.calls == []


def test_switching_policy_forgets_decisions():
    bench = FakeBenchmarker({"small@64x64": 5.0, "large@4096x4096": 1.0})
    mk = make("benchmark", bench)
    assert mk.select(*inputs(100)).name == "large@4096x4096"
    mk.policy = "nearest"
    assert mk.select(*inputs(100)).name == "small@64x64"
    with pytest.raises(ConfigError, match=r"policy must be one of \['benchmark', 'nearest'\], got 'fastest'"):
        mk.policy = "fastest"


def test_a_variant_that_disagrees_is_dropped_for_that_shape_with_a_warning():
    bench = FakeBenchmarker({"wrong@4096x4096": 0.1, "small@64x64": 1.0})
    mk = rd.MultiKernel([(small, [64, 64]), (wrong, [4096, 4096])], sizes=MN, benchmarker=bench, cache=False)
    a, b = inputs(100)
    with pytest.warns(RuntimeWarning, match=r"variant 'wrong@4096x4096' differs from 'small@64x64' at sizes \[100, 48\]"):
        out = mk(a, b)
    torch.testing.assert_close(out, a @ b)


def test_bad_input_gets_clear_errors():
    with pytest.raises(ConfigError, match="non-empty list of variants"):
        rd.MultiKernel([])
    with pytest.raises(ConfigError, match=r"same number of sizes, got small@64x64: \[64, 64\], large@4096: \[4096\]"):
        rd.MultiKernel([(small, [64, 64]), (large, [4096])])
    with pytest.raises(ConfigError, match=r"hint must be a non-empty sequence of non-negative ints"):
        rd.Variant(small, [64.5])
    with pytest.raises(ConfigTypeError, match="variants\\[1\\] must be a Variant or an \\(fn, hint\\) pair"):
        rd.MultiKernel([(small, [64]), small])
    with pytest.raises(ConfigError, match="variant names must be unique"):
        rd.MultiKernel([(small, [64]), (small, [64])])
    mk = rd.MultiKernel([(small, [64]), (large, [4096])], policy="nearest", cache=False)
    with pytest.raises(ConfigError, match=r"the call's sizes \[100, 16, 16, 48\] have 4 numbers but the hints have 1"):
        mk(*inputs(100))


def test_save_load_round_trip_and_mismatches(tmp_path):
    bench = FakeBenchmarker({"small@64x64": 1.0, "large@4096x4096": 2.0})
    mk = make("benchmark", bench)
    for m in (10, 20, 30):
        mk(*inputs(m))
    path = mk.save(tmp_path / "mk.json")
    fresh = make("benchmark", FakeBenchmarker({}))
    assert fresh.load(path) == 3
    fresh(*inputs(20))
    assert fresh.stats()["benchmarks"] == 0 and fresh.stats()["hits"] == 1
    other = rd.MultiKernel([(small, [64, 64]), (wrong, [4096, 4096])], sizes=MN, cache=False)
    with pytest.raises(TableError, match="its variants .* differ"):
        other.load(path)
    nearest = make("nearest")
    with pytest.raises(TableError, match="made by policy 'benchmark'"):
        nearest.load(path)
    data = json.loads(path.read_text())
    data["environment"]["torch"] = "0.0"
    path.write_text(json.dumps(data))
    with pytest.raises(TableError, match="another environment"):
        make("benchmark").load(path)
    assert make("benchmark").load(path, allow_other_environment=True) == 3


def test_decisions_persist_in_the_cache_so_a_new_process_does_not_benchmark(tmp_path, monkeypatch):
    monkeypatch.setenv("RANGEDISPATCH_CACHE_DIR", str(tmp_path))
    first = make("benchmark", FakeBenchmarker({"small@64x64": 1.0, "large@4096x4096": 2.0}), cache=True)
    first(*inputs(10))
    assert first.stats()["benchmarks"] == 1
    bench = FakeBenchmarker({})
    second = make("benchmark", bench, cache=True)
    assert second.select(*inputs(10)).name == "small@64x64"
    assert bench.calls == []
    (cached,) = tmp_path.glob("multikernel-small-*.json")
    cached.write_text("{broken")
    with pytest.warns(RuntimeWarning, match="ignoring the cached decisions"):
        make("benchmark", FakeBenchmarker({}), cache=True).select(*inputs(10))


def relu_mm(a, b):
    return torch.relu(a @ b)


def compiled_per_hint():
    """A ``relu_mm`` MultiKernel compiled at 64 and 1024 rows, and the input shapes of every
    graph its compiles make (in order)."""
    graphs = []

    def backend(gm, example_inputs):
        graphs.append([tuple(t.shape) for t in example_inputs if isinstance(t, torch.Tensor)])
        return gm.forward

    mk = rd.MultiKernel.compiled(relu_mm, [[64, 64], [1024, 64]], lambda h: inputs(h[0], n=h[1]),
                                 compile_options={"backend": backend}, policy="nearest", sizes=MN, cache=False)
    return mk, graphs


def test_compiled_source_compiles_once_per_hint_primed_at_the_hint():
    mk, graphs = compiled_per_hint()
    assert len(graphs) == 2  # separate code objects: the second hint did not reuse the first graph
    assert [v.name for v in mk.variants] == ["relu_mm@64x64", "relu_mm@1024x64"]
    a, b = inputs(900, n=64)
    torch.testing.assert_close(mk(a, b), torch.relu(a @ b))
    assert mk.stats()["selections"]["relu_mm@1024x64"] == 1

def test_per_hint_compiles_keep_their_hint_in_every_grad_mode_and_inside_graphs():
    """Dynamo recompiles a compile called under no_grad / inference_mode (or by a compiled
    graph's runtime); that compile must see the hint's sizes, not the first such call's."""
    mk, graphs = compiled_per_hint()
    primed = list(graphs)
    assert primed == [[(64, 16), (16, 64)], [(1024, 16), (16, 64)]]
    a, b = inputs(900, n=64)
    for mode in (torch.no_grad, torch.inference_mode):
        with mode():
            x, y = inputs(900, n=64)
            torch.testing.assert_close(mk(x, y), torch.relu(x @ y))
            mk(*inputs(700, n=64))  # the same state: no compile
    assert graphs[len(primed):] and all(g in primed for g in graphs[len(primed):])
    seen = len(graphs)
    mk(a, b)  # back in the first state: no compile
    assert len(graphs) == seen
    # in a compiled graph (in_graph="auto": opaque for per-hint compiles) the variant runs as
    # eagerly, in the state of its first eager call: that very compile, no other
    assert mk.in_graph == "auto"
    outer = []

    def record(gm, example_inputs):
        outer.append(gm)
        return torch._dynamo.backends.debugging.aot_eager(gm, example_inputs)

    compiled = torch.compile(lambda a, b: mk(a, b) + 1, backend=record, dynamic=True, fullgraph=True)
    torch.testing.assert_close(compiled(a, b), torch.relu(a @ b) + 1)
    assert graphs[seen:] == []
    assert any("rangedispatch_mk" in str(n.target) for m in outer[0].modules() if isinstance(m, torch.fx.GraphModule)
               for n in m.graph.nodes)
    # exported, the variants' code is in the program (it runs without this process's compiles)
    class Model(torch.nn.Module):
        def forward(self, a, b):
            return mk(a, b)

    program = torch.export.export(Model(), (a, b), dynamic_shapes={"a": {0: torch.export.Dim("m", min=2)}, "b": None})
    assert not any("rangedispatch_mk" in str(n.target) for m in program.graph_module.modules()
                   if isinstance(m, torch.fx.GraphModule) for n in m.graph.nodes)
    x = inputs(100, n=64)[0]
    torch.testing.assert_close(program.module()(x, b), torch.relu(x @ b))

def test_a_variant_without_a_hint_is_timed_by_benchmark_but_never_chosen_by_nearest():
    bench = FakeBenchmarker({"small@64x64": 3.0, "large@4096x4096": 3.0, "wrong": 9.0, "library": 1.0})

    def library(a, b):
        return torch.mm(a, b)

    variants = [rd.Variant(small, [64, 64]), rd.Variant(large, [4096, 4096]), rd.Variant(library, None)]
    mk = rd.MultiKernel(variants, policy="benchmark", sizes=MN, benchmarker=bench, cache=False)
    assert [v.name for v in mk.hinted] == ["small@64x64", "large@4096x4096"]
    assert mk.select(*inputs(300)).name == "library"
    mk.policy = "nearest"
    assert mk.select(*inputs(300)).name == "small@64x64"
    with pytest.raises(ConfigError, match="at least one variant needs a hint"):
        rd.MultiKernel([rd.Variant(library, None)])


def test_library_kernels_compete_with_the_compile_at_each_hint():
    def backend(gm, example_inputs):
        return gm.forward

    def f(a, b):
        return torch.relu(a @ b)

    def cublas(a, b):
        return torch.relu(torch.mm(a, b))

    # scripted timings: the compile wins at the small hint, the library kernel at the large one
    bench = FakeBenchmarker({"f@64x64": 1.0, "f@4096x64": 3.0, "cublas": 2.0})
    mk = rd.MultiKernel.compiled(f, [[64, 64], [4096, 64]], lambda h: inputs(h[0], n=h[1]), library=[cublas],
                                 compile_options={"backend": backend}, benchmarker=bench, policy="nearest",
                                 sizes=MN, cache=False)
    assert [(v.name, v.hint) for v in mk.hinted] == [("f@64x64", (64, 64)), ("cublas@4096x64", (4096, 64))]
    assert [v.name for v in mk.variants if v.hint is None] == ["f@4096x64"]  # kept for the benchmark policy
    assert mk.make_inputs is not None
    a, b = inputs(3000, n=64)
    torch.testing.assert_close(mk(a, b), torch.relu(a @ b))
    assert mk.stats()["selections"]["cublas@4096x64"] == 1


def test_inductor_multi_kernel_rejects_bad_hints():
    with pytest.raises(ConfigError, match=r"hints must be a non-empty list of positive ints .* got \[\[64, 128\]\]"):
        rd.inductor_multi_kernel(small, [[64, 128]])
    with pytest.raises(ConfigError, match="non-empty list of positive ints"):
        rd.inductor_multi_kernel(small, [])


TRITON_SCRIPT = textwrap.dedent("""
    import os
    os.environ["TRITON_INTERPRET"] = "1"
    import torch, triton, triton.language as tl
    import rangedispatch as rd
    from rangedispatch.testing import FakeBenchmarker

    @triton.jit
    def scale_kernel(x_ptr, out_ptr, n, BLOCK: tl.constexpr):
        offs = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
        mask = offs < n
        tl.store(out_ptr + offs, tl.load(x_ptr + offs, mask=mask) * 2.0, mask=mask)

    def scale(x, BLOCK):
        out = torch.empty_like(x)
        scale_kernel[(triton.cdiv(x.numel(), BLOCK),)](x, out, x.numel(), BLOCK=BLOCK)
        return out

    # scripted timings: big blocks win for big inputs
    bench = FakeBenchmarker({"0": lambda n: 1.0 if n < 1000 else 5.0, "1": lambda n: 2.0})
    mk = rd.MultiKernel.tuned_configs(scale, [{"BLOCK": 16}, {"BLOCK": 256}], [[64], [4096]],
                                      lambda h: (torch.randn(h[0]),), benchmarker=bench,
                                      policy="nearest", cache=False)
    print([v.name for v in mk.variants])
    for n in (50, 3000):
        x = torch.randn(n)
        torch.testing.assert_close(mk(x), x * 2)
    print(mk.stats()["selections"])
""")


def test_triton_configs_tuned_per_hint_under_the_interpreter():
    pytest.importorskip("triton")
    out = subprocess.run([sys.executable, "-c", TRITON_SCRIPT], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    lines = out.stdout.strip().splitlines()
    assert lines[0] == "['scale@64[BLOCK=16]', 'scale@4096[BLOCK=256]']"
    assert lines[1] == "{'scale@64[BLOCK=16]': 1, 'scale@4096[BLOCK=256]': 1}"
