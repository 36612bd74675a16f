"""The dispatch traced into torch.compile graphs and torch.export programs (slow on the CPU)."""

import functools

import pytest
import torch


class CompileCounter:
    """A backend that counts compiled frames and keeps their graphs. With ``aot``, AOTAutograd
    compiles each one and ``aot_graphs`` keeps the forward graphs it makes (what Inductor
    would compile: a lowered op's cond tree shows there)."""

    def __init__(self, aot=False):
        self.graphs = []
        self.aot_graphs = []
        self.aot = aot

    @property
    def frame_count(self):
        return len(self.graphs)

    def __call__(self, gm, example_inputs):
        self.graphs.append(gm)
        if not self.aot:
            return gm.forward
        from functorch.compile import make_boxed_func
        from torch._dynamo.backends.common import aot_autograd

        def keep(forward, inputs):
            self.aot_graphs.append(forward)
            return make_boxed_func(forward.forward)

        return aot_autograd(fw_compiler=keep)(gm, example_inputs)

import rangedispatch as rd
from rangedispatch import compat
from rangedispatch.testing import FakeBenchmarker

pytestmark = pytest.mark.compile

# the first size differs from the other dims: Dynamo's duck sizing would otherwise tie them
SIZES = [100, 2, 3, 63, 64, 65, 200, 255, 256, 257, 1000]


def a(x, w):
    return x * w


def b(x, w):
    return torch.mul(w, x)


def c(x, w):
    return x * w.view(1, 1, -1)


def custom_scale(name):
    """A fresh ``x * w`` custom op with a fake kernel."""
    @torch.library.custom_op(f"rdtest_compile::{name}", mutates_args=())
    def op(x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
        return x * w

    @op.register_fake
    def _(x, w):
        return torch.empty_like(x)

    return op


def register(name, times, **options):
    op = custom_scale(name)
    handle = rd.register_custom_op_autotuning(
        op,
        configs=[rd.CustomOpRangeConfig("x", 1, [(0, 64), (64, 256), (256, float("inf"))], [a, b, c])],
        benchmarker=FakeBenchmarker(times),
        **options,
    )
    return op, handle


THREE_WINNERS = {"op": 9.0, "a": lambda s: 1 if s < 64 else 5, "b": lambda s: 1 if 64 <= s < 256 else 5,
                 "c": lambda s: 1 if s >= 256 else 5}


def graph_ops(gm):
    return [str(n.target) for n in gm.graph.nodes if n.op == "call_function"]


def lowered(gm):
    """The nodes of a Dynamo graph that call a table's lowered op (see traced.lowered_ops)."""
    return [t for t in graph_ops(gm) if "rangedispatch_rd." in t]


def one_lowered_node_with_cond(cnt, i=-1, conds=1):
    """Graph ``i`` of ``cnt`` (an ``aot`` counter) holds the table as one lowered node and no
    cond of Dynamo's; the graph AOTAutograd makes of it has ``conds`` conds at its top level."""
    ops = graph_ops(cnt.graphs[i])
    assert len(lowered(cnt.graphs[i])) == 1 and not any("cond" in t for t in ops), ops
    assert sum("cond" in t for t in graph_ops(cnt.aot_graphs[i])) == conds, graph_ops(cnt.aot_graphs[i])


def test_dynamic_sweep_is_one_graph_with_nested_cond():
    op, handle = register("sweep", THREE_WINNERS)
    handle.tune(torch.randn(2, 8, 4), torch.randn(4))
    cnt = CompileCounter(aot=True)
    f = torch.compile(lambda x, w: op(x, w).relu(), backend=cnt, dynamic=True, fullgraph=True)
    w = torch.randn(4)
    for size in SIZES:
        x = torch.randn(2, size, 4)
        torch.testing.assert_close(f(x, w), (x * w).relu())
    assert cnt.frame_count == 1
    one_lowered_node_with_cond(cnt)  # outer cond; inner one nested


def test_first_call_under_compile_tunes_with_real_tensors_once():
    seen_types = []

    def gen(like):
        seen_types.append(type(like))
        return torch.randn_like(like)

    op, handle = register("cold", THREE_WINNERS, input_gen_fns={"x": gen})
    bench = handle.benchmarker
    cnt = CompileCounter()
    f = torch.compile(lambda x, w: op(x, w), backend=cnt, dynamic=True, fullgraph=True)
    w = torch.randn(4)
    for size in SIZES:
        x = torch.randn(2, size, 4)
        torch.testing.assert_close(f(x, w), x * w)
    assert seen_types and all(t is torch.Tensor for t in seen_types)
    n = len(bench.calls)
    assert n > 0 and handle.table is not None
    torch._dynamo.reset()  # a recompile reuses the table
    g = torch.compile(lambda x, w: op(x, w) + 1, backend=cnt, dynamic=True)
    g(torch.randn(2, 70, 4), w)
    assert len(bench.calls) == n


def test_static_shapes_trace_only_the_winning_branch():
    op, handle = register("static", THREE_WINNERS)
    handle.tune(torch.randn(2, 8, 4), torch.randn(4))
    cnt = CompileCounter()
    f = torch.compile(lambda x, w: op(x, w), backend=cnt, dynamic=False)
    w = torch.randn(4)
    for size in (1, 100, 300):  # 1 is a size Dynamo specialises
        x = torch.randn(2, size, 4)
        torch.testing.assert_close(f(x, w), x * w)
    assert cnt.frame_count == 3
    assert all(not any("cond" in t for t in graph_ops(g)) for g in cnt.graphs)


def test_single_winner_inlines_and_fuses():
    from torch._inductor.utils import run_and_get_code

    op, handle = register("fused", {"op": 9.0, "a": 5.0, "b": 1.0, "c": 5.0})
    handle.tune(torch.randn(2, 8, 4), torch.randn(4))
    f = torch.compile(lambda x, w: op(x, w).relu() * 3, dynamic=True, fullgraph=True)
    x, w = torch.randn(2, 100, 4), torch.randn(4)
    out, (code, *_) = run_and_get_code(f, x, w)
    torch.testing.assert_close(out, (x * w).relu() * 3)
    assert "cond" not in code and "rdtest_compile" not in code
    assert code.count("def kernel") + code.count("cpp_fused") >= 1
    assert code.count("cpp_fused_") <= 2  # mul, relu and scale in one fused kernel


def test_opaque_switch_keeps_the_op_in_the_graph():
    op, handle = register("opaque", THREE_WINNERS, traced=False)
    handle.tune(torch.randn(2, 8, 4), torch.randn(4))
    cnt = CompileCounter()
    f = torch.compile(lambda x, w: op(x, w), backend=cnt, dynamic=True, fullgraph=True)
    for size in (10, 100, 300):
        x, w = torch.randn(2, size, 4), torch.randn(4)
        torch.testing.assert_close(f(x, w), x * w)
    assert cnt.frame_count == 1
    assert any("rdtest_compile.opaque" in t for t in graph_ops(cnt.graphs[0]))


def test_export_keeps_the_dispatch_and_aoti_package_runs(tmp_path):
    op, handle = register("export", THREE_WINNERS)
    handle.tune(torch.randn(2, 8, 4), torch.randn(4))

    class M(torch.nn.Module):
        def forward(self, x, w):
            return op(x, w) + 1

    seq = torch.export.Dim("seq", min=2, max=4096)
    ep = torch.export.export(M(), (torch.randn(2, 100, 4), torch.randn(4)), dynamic_shapes=({1: seq}, None))
    assert any("cond" in str(n.target) for n in ep.graph.nodes)
    for size in (2, 63, 64, 255, 256, 1000):
        x, w = torch.randn(2, size, 4), torch.randn(4)
        torch.testing.assert_close(ep.module()(x, w), x * w + 1)
    path = torch._inductor.aoti_compile_and_package(ep, package_path=str(tmp_path / "m.pt2"))
    # the package runs in a fresh process that never imports rangedispatch: nothing of ours left
    run_in_fresh_process(_RUN_PACKAGE, path)


def test_an_aoti_package_of_a_multikernel_runs_each_region_s_variant(tmp_path):
    """The nearest rule's regions survive AOTInductor: the package, run where rangedispatch
    is never imported, gives each size its region's variant (the outputs name it)."""
    import json

    mk = rd.MultiKernel([rd.Variant(_tagged(i), [h]) for i, h in enumerate([16, 256, 4096])], policy="nearest",
                        cache=False)

    class K(torch.nn.Module):
        def forward(self, x, y):
            return mk(x, y)

    z = torch.zeros(40)
    ep = torch.export.export(K(), (z, z), dynamic_shapes=({0: torch.export.Dim("s", min=2, max=100000)},) * 2)
    path = torch._inductor.aoti_compile_and_package(ep, package_path=str(tmp_path / "k.pt2"))
    sizes = [2, 63, 64, 65, 1000, 1023, 1024, 1025, 5000, 99999]
    expected = {s: int(mk.nearest((s,)).name[1]) for s in sizes}
    assert len(set(expected.values())) == 3
    run_in_fresh_process(_RUN_REGIONS, path, json.dumps(expected))


_RUN_REGIONS = """
import json, sys, torch
loaded = torch._inductor.aoti_load_package(sys.argv[1])
for s, want in json.loads(sys.argv[2]).items():
    x = torch.zeros(int(s))
    assert int(loaded(x, x)[0]) == want, (s, int(loaded(x, x)[0]), want)
"""


_RUN_PACKAGE = """
import sys, torch
loaded = torch._inductor.aoti_load_package(sys.argv[1])
for size in (2, 63, 64, 255, 256, 1000):
    x, w = torch.randn(2, size, 4), torch.randn(4)
    torch.testing.assert_close(loaded(x, w), x * w + 1)
"""

_PLAIN_PACKAGE = """
import os, sys, tempfile, torch
class M(torch.nn.Module):
    def forward(self, x, w):
        return x * w + 1
ep = torch.export.export(M(), (torch.randn(2, 8, 4), torch.randn(4)))
path = torch._inductor.aoti_compile_and_package(ep, package_path=os.path.join(tempfile.mkdtemp(), "p.pt2"))
torch._inductor.aoti_load_package(path)
"""


def run_in_fresh_process(script, *args):
    """Run ``script`` in a new interpreter; where it crashes (a signal), and loading a package
    of a plain ``x * w + 1`` crashes too, this torch build cannot load AOTInductor packages
    here at all (torch 2.11's CUDA wheel on one host segfaults in ``aoti_load_package``): skip."""
    import subprocess
    import sys

    done = subprocess.run([sys.executable, "-c", script, *args], capture_output=True, text=True, timeout=600)
    if done.returncode < 0 and _plain_package_load_signal():
        pytest.skip(f"aoti_load_package crashes (signal {_plain_package_load_signal()}) on a plain package with this torch")
    assert done.returncode == 0, done.stderr[-3000:]


@functools.lru_cache(maxsize=None)
def _plain_package_load_signal():
    """The signal that kills loading a plain package in a new interpreter, or 0 (asked once)."""
    import subprocess
    import sys

    plain = subprocess.run([sys.executable, "-c", _PLAIN_PACKAGE], capture_output=True, text=True, timeout=600)
    return -plain.returncode if plain.returncode < 0 else 0


def test_for_cuda_graphs_the_lowered_op_guards_its_ranges_instead_of_a_cond(monkeypatch):
    """With Inductor's CUDA graphs on (``mode="reduce-overhead"``), a cond would cost the graph
    its CUDA graphs: the lowered op tests the size in Python while AOTAutograd traces, and the
    guard that adds is the frame's, so each range reached gets a graph with its winner alone.
    Only on devices that have CUDA graphs (the CPU joins them here to show it)."""
    from rangedispatch.trace import traced

    op, handle = register("for_cuda_graphs", THREE_WINNERS)
    handle.tune(torch.randn(2, 8, 4), torch.randn(4))
    w = torch.randn(4)

    def sweep(cnt):
        f = torch.compile(lambda x, w: op(x, w) + 1, backend=cnt, dynamic=True)
        with torch._inductor.config.patch({"triton.cudagraphs": True}):
            for size in (100, 300, 20, 150, 1000, 30, 64, 255, 256):
                x = torch.randn(2, size, 4)
                torch.testing.assert_close(f(x, w), x * w + 1)
        return cnt

    cnt = sweep(CompileCounter(aot=True))  # the CPU has no CUDA graphs: one graph with the cond
    assert cnt.frame_count == 1
    one_lowered_node_with_cond(cnt)
    monkeypatch.setattr(traced, "CUDA_GRAPH_DEVICES", ("cpu", "cuda"))
    cnt = sweep(CompileCounter(aot=True))
    assert cnt.frame_count == 3  # [64, 256), [256, inf), [1, 64): the ranges in the order reached
    for i in range(3):
        one_lowered_node_with_cond(cnt, i, conds=0)
    views = ["view" in " ".join(graph_ops(g)) for g in cnt.aot_graphs]
    assert views == [False, True, False], views  # c (w.view) won [256, inf) alone


class CudaGraphsCounter(CompileCounter):
    """A counting backend that compiles for CUDA graphs, as Inductor says it does under
    ``mode="reduce-overhead"`` (the config Dynamo's backend wrapper reports)."""

    def get_compiler_config(self):
        return {"triton.cudagraphs": True}


def test_for_cuda_graphs_the_conds_dynamo_traces_become_range_guards(monkeypatch):
    """Where Dynamo itself traces the dispatch (a MultiKernel's nearest rule, a table with
    lowering off) and the backend compiles for CUDA graphs, each region reached gets a graph
    with its variant alone instead of a cond; other backends keep one graph with the cond."""
    from rangedispatch.trace import traced

    monkeypatch.setattr(traced, "CUDA_GRAPH_DEVICES", ("cpu", "cuda"))
    mk = rd.MultiKernel([rd.Variant(_tagged(i), [h]) for i, h in enumerate([16, 256, 4096])], policy="nearest",
                        cache=False)
    for cnt, frames in ((CudaGraphsCounter(), 3), (CompileCounter(), 1)):
        f = torch.compile(lambda x, y: mk(x, y) * 2, backend=cnt, dynamic=True)
        for s in (3, 40, 100, 300, 5000, 70):
            x = torch.zeros(s)
            assert int(f(x, x)[0]) == 2 * int(mk.nearest((s,)).name[1]), s
        assert cnt.frame_count == frames
        assert any("cond" in t for g in cnt.graphs for t in graph_ops(g)) == (frames == 1)

    monkeypatch.setattr(traced, "LOWERED", False)
    op, handle = register("cuda_graphs_dynamo", THREE_WINNERS)
    handle.tune(torch.randn(2, 8, 4), torch.randn(4))
    cnt = CudaGraphsCounter()
    f = torch.compile(lambda x, w: op(x, w) + 1, backend=cnt, dynamic=True)
    w = torch.randn(4)
    for size in (100, 300, 20, 150, 1000, 30):
        x = torch.randn(2, size, 4)
        torch.testing.assert_close(f(x, w), x * w + 1)
    assert cnt.frame_count == 3
    assert not any("cond" in t for g in cnt.graphs for t in graph_ops(g))


def test_sizes_0_and_1_cost_one_graph_each_and_never_retune():
    op, handle = register("zero_one", THREE_WINNERS)
    handle.tune(torch.randn(2, 8, 4), torch.randn(4))
    tuned_calls = len(handle.benchmarker.calls)
    w = torch.randn(4)
    cnt = CompileCounter(aot=True)
    f = torch.compile(lambda x, w: op(x, w) + 1, backend=cnt, dynamic=True)
    for size in [0, 1, 2, 100, 300, 1, 0]:
        x = torch.randn(2, size, 4)
        torch.testing.assert_close(f(x, w), x * w + 1)
    # Dynamo specialises sizes 0 and 1: a graph each, plus one dynamic graph for the rest
    assert cnt.frame_count == 3
    one_lowered_node_with_cond(cnt, 2)
    for i in (0, 1):  # static sizes: the lowered op resolves to the winner, no cond
        one_lowered_node_with_cond(cnt, i, conds=0)
    assert len(handle.benchmarker.calls) == tuned_calls


def test_compiles_per_hint_never_share_an_inductor_cache_entry(monkeypatch, tmp_path):
    from torch._dynamo.utils import counters

    monkeypatch.setenv("TORCHINDUCTOR_CACHE_DIR", str(tmp_path / "inductor"))

    def f(x):
        return (x * 2.0).softmax(-1)

    make = lambda h: (torch.randn(*h),)  # noqa: E731
    counters.clear()
    for _ in range(2):  # the second build would hit the first one's entries if caching were on
        mk = rd.MultiKernel.compiled(f, [[8, 16], [64, 256]], make, policy="nearest", cache=False)
    assert counters["inductor"]["fxgraph_cache_hit"] == 0
    assert counters["aot_autograd"]["autograd_cache_hit"] == 0
    x = torch.randn(40, 200)
    torch.testing.assert_close(mk(x), f(x))


def compiled_three_winners(registered=None, cold=False, **options):
    """A tuned ``range_dispatch`` op (or, with ``registered``, a custom op of that name after
    ``register_custom_op_autotuning``) with a winner per range, compiled (``dynamic=True``,
    frames counted) and a bare compile of one candidate; the guards each checks at 100, and
    the op's guard text. With ``cold`` the op is not tuned first: the compiled call tunes it."""
    from rangedispatch.testing import GuardCounter

    if registered:
        ref, handle = register(registered, THREE_WINNERS, cache=False)
        handle.compiled_dispatch = options.get("compiled_dispatch", "cond")
    else:
        @rd.range_dispatch(dispatch_on=("x", 1), split_points=[63, 255], benchmarker=FakeBenchmarker(
            {"ref": 9.0, **{k: v for k, v in THREE_WINNERS.items() if k != "op"}}), cache=False, **options)
        def ref(x, w):
            return x * w

        for fn in (a, b, c):
            ref.register_impl(fn)
        handle = ref
    if not cold:
        handle.tune(torch.randn(2, 8, 4), torch.randn(4))
    cnt = CompileCounter()
    torch._dynamo.reset()  # the bare lambda's code may be cached from another test: it must compile here
    ours = torch.compile(lambda x, w: ref(x, w), backend=cnt, dynamic=True)
    bare = torch.compile(lambda x, w: b(x, w), backend="eager", dynamic=True)
    with GuardCounter() as guards:
        ours(torch.randn(2, 100, 4), torch.randn(4))
        ours_text, ours_count = guards.text[-1], guards.frames[-1]
        before = len(guards.frames)
        bare(torch.randn(2, 100, 4), torch.randn(4))
        assert len(guards.frames) == before + 1, guards.frames
        bare_count = guards.frames[-1]
    return ref, ours, cnt, ours_count, bare_count, ours_text


def test_the_compiled_dispatch_guards_the_candidates_not_the_op():
    """The traced dispatch is written out per signature: the compiled frame of a table with
    three winners holds one node of its lowered op and guards what the guards mode's frames
    guard, never the op's tables or attributes, nor the candidates' code."""
    ref, ours, cnt, ours_count, bare_count, ours_text = compiled_three_winners()
    w = torch.randn(4)
    for size in (2, 63, 64, 255, 256, 1000):
        x = torch.randn(2, size, 4)
        torch.testing.assert_close(ours(x, w), x * w)
    assert cnt.frame_count == 1 and len(lowered(cnt.graphs[0])) == 1
    assert ours_count <= bare_count + GUARDS_OVER_BARE, (ours_count, bare_count)
    for internal in ("_by_name", "_plan", "_tables", "_route", "_template"):
        assert internal not in ours_text, internal


def sweep_is_one_cond_graph(compile_with):
    """Compile (``compile_with(counter)``, Dynamo reset first) an ``x * w`` op and sweep it
    over every range: right values, one graph, the table's lowered op in it."""
    torch._dynamo.reset()
    cnt = CompileCounter(aot=True)
    fn = compile_with(cnt)
    w = torch.randn(4)
    for size in SIZES:
        x = torch.randn(2, size, 4)
        torch.testing.assert_close(fn(x, w), x * w)
    assert cnt.frame_count == 1
    one_lowered_node_with_cond(cnt)


def test_dynamo_traces_the_written_out_dispatch_in_place_of_the_eager_call():
    """The eager call has no compile check: Dynamo traces the written-out dispatch in its place,
    whether a compiled function calls the op or the op itself is compiled (one graph for a sweep
    over every range). Called from a frame Dynamo skips inside a compiled region, the eager
    call runs as it is and Dynamo compiles the winner's frame alone, never the eager path."""
    from rangedispatch.route.fastcall import inline

    if not inline():
        pytest.skip("this torch cannot mark a frame for Dynamo to skip")
    ref = compiled_three_winners()[0]
    eager = type(ref).__call__.__rd_source__.split("def _rd_in_graph")[0]
    assert "_is_dynamo" not in eager and "_is_compiling" not in eager, eager
    sweep_is_one_cond_graph(lambda cnt: torch.compile(lambda x, w: ref(x, w), backend=cnt, dynamic=True))
    sweep_is_one_cond_graph(lambda cnt: torch.compile(ref, backend=cnt, dynamic=True))
    w = torch.randn(4)

    @torch._dynamo.disable(recursive=False)  # Dynamo skips this frame, not what it calls
    def outside_the_graph(x, w):
        return ref(x, w)

    torch._dynamo.reset()
    cnt = CompileCounter()
    model = torch.compile(lambda x, w: outside_the_graph(x.sin(), w) + 1, backend=cnt, dynamic=True)
    x = torch.randn(2, 300, 4)
    torch.testing.assert_close(model(x, w), x.sin() * w + 1)
    # the model's two frames around the skipped call, and c (the winner at 300) alone
    assert cnt.frame_count == 3, [graph_ops(g) for g in cnt.graphs]
    assert graph_ops(cnt.graphs[1]) == ["<built-in function mul>"]
    assert not any("cond" in t for g in cnt.graphs for t in graph_ops(g))


def test_without_frame_strategies_the_eager_call_keeps_its_compile_check(monkeypatch):
    """On a torch that cannot mark frames the compile check stays in the eager call, and a
    compiled sweep still traces the written-out dispatch: one graph, the right values."""
    with compat.absent("frame_strategies"):
        ref = compiled_three_winners()[0]
    source = type(ref).__call__.__rd_source__
    assert "_is_dynamo()" in source and "_rd_in_graph" not in source, source
    assert not hasattr(type(ref).__call__, "_torchdynamo_inline")
    sweep_is_one_cond_graph(lambda cnt: torch.compile(lambda x, w: ref(x, w), backend=cnt, dynamic=True))


#: what the guards mode's frame checks besides a bare compile's: the op's type, that its
#: instance has no ``__call__`` of its own and that call's code, the generated code's globals
#: dict and ``traced_form``'s code (the candidate's code takes the place of the bare compile's
#: function; Dynamo reaches the traced body through the call, so it guards no global for it)
GUARDS_OVER_BARE = 5


def test_guards_mode_compiles_one_bare_graph_per_range_and_exports_with_cond():
    """compiled_dispatch="guards": Dynamo guards each range, so a sweep over 3 ranges gives 3
    graphs without a cond, each guarded about as much as a bare compile of its winner."""
    ref, ours, cnt, ours_count, bare_count, _ = compiled_three_winners(compiled_dispatch="guards")
    w = torch.randn(4)
    for size in SIZES:
        x = torch.randn(2, size, 4)
        torch.testing.assert_close(ours(x, w), x * w)
    assert cnt.frame_count == 3  # one per range, each with its winner alone
    assert not any("cond" in t for g in cnt.graphs for t in graph_ops(g))
    assert ours_count <= bare_count + GUARDS_OVER_BARE, (ours_count, bare_count)

    class M(torch.nn.Module):
        def forward(self, x, w):
            return ref(x, w)

    ep = torch.export.export(M(), (torch.randn(2, 100, 4), w), dynamic_shapes=({1: torch.export.Dim("s", min=2)}, None))
    assert any("cond" in str(n.target) for n in ep.graph.nodes)
    for size in (2, 64, 300):
        x = torch.randn(2, size, 4)
        torch.testing.assert_close(ep.module()(x, w), x * w)
    with pytest.raises(rd.ConfigError, match="compiled_dispatch"):
        ref.compiled_dispatch = "branches"


@pytest.mark.parametrize("mode", ["cond", "guards"])
def test_a_registered_op_compiles_with_its_dispatch_written_out_in_its_own_call(mode):
    """A registered custom op's compiled call traces the dispatch written out in the custom
    op's own call: no layer of ours in between, so the frame guards as little as the
    decorator form's and nothing of the op behind it."""
    deco_count = compiled_three_winners(compiled_dispatch=mode)[3]  # first: each build resets Dynamo
    op, ours, cnt, ours_count, bare_count, text = compiled_three_winners(f"written_{mode}", compiled_dispatch=mode)
    w = torch.randn(4)
    for size in SIZES:
        x = torch.randn(2, size, 4)
        torch.testing.assert_close(ours(x, w), x * w)
    assert cnt.frame_count == (3 if mode == "guards" else 1)
    assert ours_count <= deco_count, (ours_count, deco_count)
    assert ours_count <= bare_count + GUARDS_OVER_BARE, (ours_count, bare_count)
    assert "._rangedispatch" not in text and "._opoverload" not in text


@pytest.mark.parametrize("form,mode", [("decorator", "guards"), ("registered", "guards"), ("decorator", "cond")])
def test_a_cold_compile_tunes_inside_the_trace_and_compiles_the_written_out_dispatch(form, mode):
    """The first call is compiled, so the op tunes while Dynamo traces it; the trace then
    starts over on the tuned op's call, and the one compiled frame guards what a compile of
    an op tuned beforehand guards, none of the general traced path."""
    registered = f"cold_{form}" if form == "registered" else None
    op, ours, cnt, ours_count, bare_count, text = compiled_three_winners(registered, cold=True,
                                                                         compiled_dispatch=mode)
    assert rd.dispatcher_of(op).table is not None
    w = torch.randn(4)
    for size in SIZES:
        x = torch.randn(2, size, 4)
        torch.testing.assert_close(ours(x, w), x * w)
    # guards: one per range (the restarted trace compiled no frame of its own); cond: one
    assert cnt.frame_count == (3 if mode == "guards" else 1)
    assert ours_count <= bare_count + GUARDS_OVER_BARE, (ours_count, bare_count)
    for internal in ("_by_name", "_flatten", "traced_call", "_rangedispatch"):
        assert internal not in text, internal


def test_without_lowering_dynamo_traces_the_cond_tree(monkeypatch):
    """With ``traced.LOWERED`` off, Dynamo traces the cond tree itself: one graph with the
    cond, and more guards (those of the pytree code Dynamo runs for the cond's outputs)."""
    from rangedispatch.trace import traced

    lowered_count = compiled_three_winners()[3]
    monkeypatch.setattr(traced, "LOWERED", False)
    ref, ours, cnt, ours_count, bare_count, _ = compiled_three_winners()
    w = torch.randn(4)
    for size in SIZES:
        x = torch.randn(2, size, 4)
        torch.testing.assert_close(ours(x, w), x * w)
    assert cnt.frame_count == 1 and not lowered(cnt.graphs[0])
    assert sum("cond" in t for t in graph_ops(cnt.graphs[0])) == 1
    assert ours_count > lowered_count, (ours_count, lowered_count)


def two_winners(reference, first, second):
    """A ``range_dispatch`` op on ``x``'s dim 1 split at 64, ``first`` winning below and
    ``second`` from 65 on (not tuned yet)."""
    times = {reference.__name__: 9.0, "first": lambda s: 1 if s < 64 else 5, "second": lambda s: 1 if s >= 64 else 5}
    op = rd.range_dispatch(dispatch_on=("x", 1), split_points=[64], cache=False,
                           benchmarker=FakeBenchmarker(times))(reference)
    op.register_impl(first)
    op.register_impl(second)
    return op


def test_a_lowered_op_with_two_outputs_compiles_runs_eagerly_and_through_inductor():
    """A table whose candidates return two tensors lowers to the op's list-returning form:
    right values across the ranges through AOTAutograd, through the ``eager`` backend (the
    kernel runs on real tensors) and through Inductor, whose code calls no op of ours."""
    from torch._inductor.utils import run_and_get_code

    def scale_shift(x, w):
        return x * w, x + w

    def first(x, w):
        return torch.mul(w, x), torch.add(w, x)

    def second(x, w):
        return x * w.view(1, 1, -1), x + w.view(1, 1, -1)

    op = two_winners(scale_shift, first, second)
    w = torch.randn(4)
    op.tune(torch.randn(2, 100, 4), w)
    torch._dynamo.reset()
    cnt = CompileCounter(aot=True)
    compiled = {"aot": torch.compile(lambda x, w: op(x, w), backend=cnt, dynamic=True),
                "eager": torch.compile(lambda x, w: op(x, w), backend="eager", dynamic=True)}
    for size in (100, 2, 63, 64, 300):
        x = torch.randn(2, size, 4)
        for name, fn in compiled.items():
            out = fn(x, w)
            assert isinstance(out, tuple) and len(out) == 2, name
            torch.testing.assert_close(out, scale_shift(x, w))
    assert cnt.frame_count == 1
    one_lowered_node_with_cond(cnt)
    torch._dynamo.reset()
    inductor = torch.compile(lambda x, w: op(x, w)[0] + 1, dynamic=True)
    x = torch.randn(2, 100, 4)
    out, (code, *_) = run_and_get_code(inductor, x, w)
    torch.testing.assert_close(out, x * w + 1)
    assert "rangedispatch_rd" not in code and " < 65:" in code, code  # split_points=[64]: [1, 64], [65, inf)
    for size in (2, 63, 64, 300):
        x = torch.randn(2, size, 4)
        torch.testing.assert_close(inductor(x, w), x * w + 1)


def test_inductor_writes_the_lowered_op_s_conds_inline_and_a_user_s_cond_as_it_does(monkeypatch):
    """Inductor's code for a three-winner table (nested conds) next to a cond of the user's:
    the table's branches are written inline, with no branch function and no check of their
    outputs; the user's cond keeps Inductor's functions and checks. Right values at every range's
    edges. With :data:`rangedispatch.inline_cond.ENABLED` off, the table's branches are functions
    again (the GPU test shows the device guard each would enter)."""
    from torch._inductor.utils import run_and_get_code

    from rangedispatch.compat import inline_cond

    op, handle = register("inline", THREE_WINNERS)
    handle.tune(torch.randn(2, 8, 4), torch.randn(4))
    compat.have("inline_cond")  # its self-test compiles a graph: not the one run_and_get_code looks at

    def fn(x, w):
        return op(x, w) + torch.cond(x.sum() > 0, lambda t: t + 1, lambda t: t - 1, (x,))

    def compiled_code():
        torch._dynamo.reset()
        f = torch.compile(fn, dynamic=True, fullgraph=True)
        w = torch.randn(4)
        _, (code, *_) = run_and_get_code(f, torch.randn(2, 100, 4), w)
        for size in SIZES:
            x = torch.randn(2, size, 4)
            torch.testing.assert_close(f(x, w), x * w + torch.where(x.sum() > 0, x + 1, x - 1))
        return code, [line.strip() for line in code.splitlines() if line.startswith("def ") and "_graph_" in line]

    code, functions = compiled_code()
    assert sorted(functions) == ["def false_graph_1(args):", "def true_graph_1(args):"], functions  # the user's
    assert " < 64:" in code and " < 256:" in code and code.count("'torch.ops.cond'") == 2, code  # the user's checks
    monkeypatch.setattr(inline_cond, "ENABLED", False)
    code, functions = compiled_code()
    assert "def false_graph_0_true_graph_0(args):" in functions and len(functions) == 6, functions
    monkeypatch.setattr(inline_cond, "ENABLED", True)
    with compat.absent("inline_cond"):  # a torch whose Inductor failed the self-test: its own code
        code, functions = compiled_code()
    assert "def false_graph_0_true_graph_0(args):" in functions and len(functions) == 6, functions


def _tagged(i):
    def variant(x, y):
        return x + y + i  # deliberately not equal: the output names the variant that ran

    variant.__name__ = f"v{i}"
    return variant


def test_multikernel_nearest_regions_compile_to_one_graph_and_export():
    """The nearest rule traced as conditionals on the symbolic sizes: one graph over a 2-d
    sweep with the same choice as eager per shape, and exported programs keep the regions
    (1 varying size: plain thresholds; 2: products of sizes, strict export)."""
    import itertools
    import warnings

    hints = [[16, 64], [256, 64], [16, 2048], [1024, 1024]]
    mk = rd.MultiKernel([rd.Variant(_tagged(i), h) for i, h in enumerate(hints)], policy="nearest", cache=False)
    cnt = CompileCounter()
    f = torch.compile(lambda x, y: mk(x, y), backend=cnt, dynamic=True, fullgraph=True)
    shapes = list(itertools.product([2, 7, 40, 64, 130, 700, 3000], [3, 50, 300, 1500, 5000]))
    for m, n in shapes:
        x = torch.zeros(m, n)
        assert int(f(x, x)[0, 0]) == int(mk.nearest((m, n)).name[1]), (m, n)
    assert cnt.frame_count == 1

    class Two(torch.nn.Module):
        def forward(self, x, y):
            return mk(x, y)

    dm, dn = torch.export.Dim("m", min=2, max=10000), torch.export.Dim("n", min=2, max=10000)
    ep = torch.export.export(Two(), (torch.zeros(40, 50), torch.zeros(40, 50)),
                             dynamic_shapes=({0: dm, 1: dn}, {0: dm, 1: dn}), strict=True)
    assert any("cond" in str(n.target) for n in ep.graph.nodes)
    for m, n in shapes[::3]:
        x = torch.zeros(m, n)
        assert int(ep.module()(x, x)[0, 0]) == int(mk.nearest((m, n)).name[1]), (m, n)

    one = rd.MultiKernel([rd.Variant(_tagged(i), [h]) for i, h in enumerate([64, 16, 2048, 300, 300])],
                         cache=False, name="one")  # benchmark policy: traced with the nearest rule

    class One(torch.nn.Module):
        def forward(self, x, y):
            return one(x, y)

    d = torch.export.Dim("s", min=0, max=100000)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        ep = torch.export.export(One(), (torch.zeros(40), torch.zeros(40)), dynamic_shapes=({0: d}, {0: d}))
    assert any("nearest" in str(w.message) for w in caught)
    boundaries = [1, 2, 31, 32, 33, 138, 139, 784, 785, 786, 99999]
    for s in boundaries + list(range(3, 2100, 37)):
        x = torch.zeros(s)
        assert int(ep.module()(x, x)[0]) == int(one.nearest((s,)).name[1]), s


def test_multikernel_in_a_graph_runs_each_variant_as_it_runs_eagerly():
    """in_graph="opaque": each region calls its variant through a custom op, so the variant runs
    as it does eagerly (here: its Python, which Dynamo could not trace inside a cond, runs on
    every call, on the real tensor); the default traces the variants' code into the graph."""
    seen = []

    def variant(i):
        def fn(x):
            seen.append((i, x.shape[0], type(x) is torch.Tensor))  # runs only when the variant runs
            return x + i

        fn.__name__ = f"v{i}"
        return fn

    hints = [[16], [256], [4096]]

    def make(**options):
        return rd.MultiKernel([rd.Variant(variant(i), h) for i, h in enumerate(hints)], policy="nearest",
                              cache=False, **options)

    mk = make(in_graph="opaque")
    cnt = CompileCounter()
    f = torch.compile(lambda x: mk(x) * 2, backend=cnt, dynamic=True, fullgraph=True)
    for s in (3, 40, 100, 300, 5000, 70):
        seen.clear()
        want = int(mk.nearest((s,)).name[1])
        assert int(f(torch.zeros(s))[0]) == 2 * want, s
        assert [e for e in seen if e[2]] == [(want, s, True)], (s, seen)
    assert cnt.frame_count == 1

    class M(torch.nn.Module):
        def forward(self, x):
            return mk(x)

    def exported_targets(m):
        ep = torch.export.export(m, (torch.zeros(40),), dynamic_shapes=({0: torch.export.Dim("s", min=2, max=9999)},))
        targets = [str(n.target) for g in ep.graph_module.modules() if isinstance(g, torch.fx.GraphModule)
                   for n in g.graph.nodes]
        assert [int(ep.module()(torch.zeros(s))[0]) for s in (5, 200, 3000)] == [0, 1, 2]
        return targets

    assert sum("rangedispatch_mk" in t for t in exported_targets(M())) == 3  # one call per region, in the conds

    pure = rd.MultiKernel([rd.Variant(lambda x, i=i: x + i, h, name=f"v{i}") for i, h in enumerate(hints)],
                          policy="nearest", cache=False)

    class Inline(torch.nn.Module):
        def forward(self, x):
            return pure(x)

    assert not any("rangedispatch_mk" in t for t in exported_targets(Inline()))  # the variants' own ops

    scaled = rd.MultiKernel([rd.Variant(lambda x, i=i: x * (i + 2), h, name=f"v{i}") for i, h in enumerate(hints)],
                            policy="nearest", cache=False, in_graph="opaque")
    x = torch.zeros(300, requires_grad=True)  # gradients cannot flow through the op: traced inline
    torch.compile(lambda x: scaled(x), backend=CompileCounter(), dynamic=True)(x).sum().backward()
    assert torch.equal(x.grad, torch.full((300,), 3.0))
    with pytest.raises(rd.ConfigError, match="in_graph"):
        make(in_graph="fused")


def test_branches_with_different_output_layouts_trace_with_contiguous_outputs():
    """torch.cond needs one output layout; candidates that differ (attention kernels do)
    are traced with contiguous outputs instead of falling back to the reference."""

    def transposed(x, w):  # same values, a non-contiguous layout
        return (x.transpose(1, 2).contiguous() * w.view(1, -1, 1)).transpose(1, 2)

    @rd.range_dispatch(dispatch_on=("x", 1), split_points=[64], cache=False, benchmarker=FakeBenchmarker(
        {"ref": 9.0, "a": lambda s: 1 if s < 64 else 5, "transposed": lambda s: 1 if s >= 64 else 5}))
    def ref(x, w):
        return x * w

    ref.register_impl(a)
    ref.register_impl(transposed)
    w = torch.randn(4)
    ref.tune(torch.randn(2, 100, 4), w)
    cnt = CompileCounter()
    f = torch.compile(lambda x, w: ref(x, w) + 1, backend=cnt, dynamic=True)
    for size in (100, 2, 63, 64, 300):
        x = torch.randn(2, size, 4)
        torch.testing.assert_close(f(x, w), x * w + 1)
    assert cnt.frame_count == 1
    assert any("cond" in t for t in graph_ops(cnt.graphs[0]))


def _grid_op(name):
    op = custom_scale(name)
    inf = float("inf")
    times = {"op": 9.0, "a": lambda p: 1 if p[0] < 8 else 5, "b": lambda p: 1 if p[0] >= 8 and p[1] < 64 else 5,
             "c": lambda p: 1 if p[0] >= 8 and p[1] >= 64 else 5}
    # x: (batch, 3, hidden), w: (hidden,): the grid is batch x hidden, w tied to hidden
    config = rd.MultiDimRangeConfig(dims={"x": {0: [(0, 8), (8, inf)], 2: [(0, 64), (64, inf)]}},
                                    tie={("x", 2): {"w": 0}}, implementations=[a, b, c])
    # candidates written for 3-d x and 1-d w
    handle = rd.register_custom_op_autotuning(op, configs=[config], benchmarker=FakeBenchmarker(times))
    return op, handle


# the first point's sizes differ from each other and from x's middle dim (3): Dynamo's duck
# sizing would otherwise tie them
GRID_POINTS = [(5, 7), (2, 2), (7, 63), (7, 64), (8, 63), (8, 64), (100, 3), (3, 100), (200, 300)]


def _cond_nodes(gm):
    """cond calls in a graph and in the subgraphs of its conds, depth-first."""
    found = [n for n in gm.graph.nodes if n.op == "call_function" and "cond" in str(n.target)]
    nested = [getattr(gm, n.target) for n in gm.graph.nodes if n.op == "get_attr" and hasattr(getattr(gm, n.target), "graph")]
    return found + [c for sub in nested for c in _cond_nodes(sub)]


def test_a_grid_op_sweeps_both_sizes_in_one_graph_and_exports():
    op, handle = _grid_op("grid")
    cnt = CompileCounter(aot=True)
    f = torch.compile(lambda x, w: op(x, w).relu(), backend=cnt, dynamic=True, fullgraph=True)
    for batch, hidden in GRID_POINTS:  # the first call tunes, from the traced inputs' size hints
        x, w = torch.randn(batch, 3, hidden), torch.randn(hidden)
        torch.testing.assert_close(f(x, w), (x * w).relu())
    assert cnt.frame_count == 1
    assert handle.table is not None and handle.table.tree() == (0, (8, None), ("a", (1, (64, None), ("b", "c"))))
    assert len(lowered(cnt.graphs[0])) == 1
    assert len(_cond_nodes(cnt.aot_graphs[0])) == 2  # batch, then hidden in the batch >= 8 branch

    class M(torch.nn.Module):
        def forward(self, x, w):
            return op(x, w) + 1

    batch, hidden = torch.export.Dim("batch", min=2, max=4096), torch.export.Dim("hidden", min=2, max=4096)
    ep = torch.export.export(M(), (torch.randn(4, 3, 16), torch.randn(16)),
                             dynamic_shapes=({0: batch, 2: hidden}, {0: hidden}))
    assert len(_cond_nodes(ep.graph_module)) == 2
    for b_, h in GRID_POINTS:
        x, w = torch.randn(b_, 3, h), torch.randn(h)
        torch.testing.assert_close(ep.module()(x, w), x * w + 1)


def test_a_compiled_call_of_another_dtype_uses_its_own_table():
    # ``float32_only`` is the fastest, but only accurate to float32's tolerance: the float64
    # table must give it up, also when the calls are compiled
    @rd.range_dispatch(dispatch_on=("x", 1), split_points=[64], cache=False, name="by_dtype",
                       benchmarker=FakeBenchmarker({"by_dtype": 9.0, "float32_only": 1.0, "b": 2.0}))
    def by_dtype(x, w):
        return x * w

    @by_dtype.register_impl
    def float32_only(x, w):
        return x * w * (1 + 1e-6)

    by_dtype.register_impl(b)
    cnt = CompileCounter()
    f = torch.compile(lambda x, w: by_dtype(x, w), backend=cnt, dynamic=True, fullgraph=True)
    for dtype in (torch.float32, torch.float64):
        w = torch.randn(4, dtype=dtype)
        for size in (30, 100):
            x = torch.randn(2, size, 4, dtype=dtype)
            got = f(x, w)
            if dtype == torch.float64:  # b, exactly; float32_only would be 1e-6 off
                torch.testing.assert_close(got, x * w, rtol=1e-12, atol=0)
    tables = {t.signature: {r.winner for r in t.results} for t in by_dtype.tables.values()}
    assert len(tables) == 2
    assert [w for s, w in tables.items() if "float64" in s] == [{"b"}]
    assert [w for s, w in tables.items() if "float32" in s] == [{"float32_only"}]
    assert cnt.frame_count == 2  # one graph per dtype


def test_the_gap_below_size_2_takes_no_cond_so_one_winner_compiles_as_in_guards_mode():
    """Tuned ranges start at 1, so the reference owns [0, 1). Under torch.compile Dynamo gives
    sizes 0 and 1 graphs of their own, so the traced dispatch decides that gap in Python: from
    2 on the frame traces the winner alone (no cond, no branch helper guarded), as guards mode
    does, and size 0 still runs the reference."""
    from rangedispatch.testing import GuardCounter

    def doubled(x, w):
        return x + x

    @rd.range_dispatch(dispatch_on=("x", 1), split_points=[63], benchmarker=FakeBenchmarker(
        {"ref": 9.0, "doubled": 1.0}), cache=False)
    def ref(x, w):
        return x * w

    ref.register_impl(doubled)
    w = torch.full((4,), 2.0)
    ref.tune(torch.randn(2, 8, 4), w)
    assert "[0, 1): ref" in ref.table.format(), ref.table.format()
    counts = {}
    for mode in ("cond", "guards"):
        ref.compiled_dispatch = mode
        torch._dynamo.reset()
        cnt = CompileCounter()
        compiled = torch.compile(lambda x, w: ref(x, w), backend=cnt, dynamic=True)
        with GuardCounter() as guards:
            for size in (100, 7, 0):
                x = torch.randn(2, size, 4)
                torch.testing.assert_close(compiled(x, w), x * 2)
        counts[mode] = guards.frames[0]
        assert cnt.frame_count == 2  # the sizes from 2 on, and size 0
        assert graph_ops(cnt.graphs[0]) == ["<built-in function add>"], graph_ops(cnt.graphs[0])  # the winner
        assert graph_ops(cnt.graphs[1]) == ["<built-in function mul>"], graph_ops(cnt.graphs[1])  # the reference
    assert counts["cond"] <= counts["guards"], counts


def test_gradients_flow_through_a_lowered_op():
    """The lowered op's kernel is ``CompositeImplicitAutograd``: under autograd it is the cond
    tree, whose backward AOTAutograd traces, so a compiled training step gets the candidates'
    gradients in every range."""
    ref = compiled_three_winners()[0]
    torch._dynamo.reset()
    cnt = CompileCounter(aot=True)
    step = torch.compile(lambda x, w: ref(x, w).sum(), backend=cnt, dynamic=True)
    w = torch.randn(4)
    for size in (100, 3, 63, 64, 300):
        x, ww = torch.randn(2, size, 4, requires_grad=True), w.clone().requires_grad_()
        step(x, ww).backward()
        torch.testing.assert_close(x.grad, ww.detach().expand_as(x))
        torch.testing.assert_close(ww.grad, x.detach().sum((0, 1)))
    assert cnt.frame_count == 1 and len(lowered(cnt.graphs[0])) == 1
    assert any("cond" in t for g in cnt.aot_graphs for t in graph_ops(g))  # forward and backward


def test_a_call_with_the_tuned_scalar_arguments_lowers_and_other_values_still_dispatch():
    """Arguments that are not tensors keep the values the table was tuned with in the lowered
    op's kernel (positional, defaulted and keyword-only alike): calls with those values compile
    to its node, a call with other values traces the cond itself, and every one computes the
    reference's values."""
    def scaled(x, w, alpha=0.5, *, shift=True):
        return x * w * alpha + (1.0 if shift else 0.0)

    def first(x, w, alpha=0.5, *, shift=True):
        return torch.mul(w, x) * alpha + (1.0 if shift else 0.0)

    def second(x, w, alpha=0.5, *, shift=True):
        return x * w.view(1, 1, -1) * alpha + (1.0 if shift else 0.0)

    op = two_winners(scaled, first, second)
    w = torch.randn(4)
    op.tune(torch.randn(2, 100, 4), w, 0.25, shift=False)
    torch._dynamo.reset()
    cnt = CompileCounter(aot=True)
    f = torch.compile(lambda x, w: op(x, w, 0.25, shift=False), backend=cnt, dynamic=True)
    for size in (100, 2, 63, 64, 300):
        x = torch.randn(2, size, 4)
        torch.testing.assert_close(f(x, w), scaled(x, w, 0.25, shift=False))
    assert cnt.frame_count == 1
    one_lowered_node_with_cond(cnt)
    g = torch.compile(lambda x, w: op(x, w, 2.0), backend=cnt, dynamic=True)
    for size in (100, 2, 300):
        x = torch.randn(2, size, 4)
        torch.testing.assert_close(g(x, w), scaled(x, w, 2.0))
    assert cnt.frame_count == 2 and not lowered(cnt.graphs[1])


FALLBACK_SIZES = (3, 63, 64, 255, 256, 1000)  # not 2: the batch dim's size (duck sizing)


def right_everywhere(fn, label):
    """``fn(x, w)`` (an ``x * w`` op) is right eagerly, under ``torch.compile`` (AOTAutograd,
    ``dynamic=True``) and through ``torch.export`` with a dynamic size, across every range's
    edges; returns the ops of each graph Dynamo made."""
    torch._dynamo.reset()
    w = torch.randn(4)
    cnt = CompileCounter(aot=True)
    compiled = torch.compile(lambda x, w: fn(x, w) + 1, backend=cnt, dynamic=True)

    class M(torch.nn.Module):
        def forward(self, x, w):
            return fn(x, w) + 1

    seq = torch.export.Dim("seq", min=2, max=4096)
    exported = torch.export.export(M(), (torch.randn(2, 100, 4), w), dynamic_shapes=({1: seq}, None)).module()
    for size in FALLBACK_SIZES:
        x = torch.randn(2, size, 4)
        for how, run in (("eagerly", lambda: fn(x, w) + 1), ("compiled", lambda: compiled(x, w)),
                         ("exported", lambda: exported(x, w))):
            torch.testing.assert_close(run(), x * w + 1, msg=lambda m: f"{label} {how} at {size}: {m}")
    return [graph_ops(g) for g in cnt.graphs]


def three_winner_ops(tag, registered=True):
    """A tuned decorator op and (with ``registered``) a registered custom op, three winners each."""
    @rd.range_dispatch(dispatch_on=("x", 1), split_points=[63, 255], benchmarker=FakeBenchmarker(
        {"ref": 9.0, **{k: v for k, v in THREE_WINNERS.items() if k != "op"}}), cache=False)
    def ref(x, w):
        return x * w

    for fn in (a, b, c):
        ref.register_impl(fn)
    ref.tune(torch.randn(2, 8, 4), torch.randn(4))
    ops = {"decorator": ref}
    if registered:
        op, handle = register(f"fallback_{tag}", THREE_WINNERS, cache=False)
        handle.tune(torch.randn(2, 8, 4), torch.randn(4))
        ops["registered"] = op
    return ops


def _source(op):
    return type(op).__call__.__rd_source__


#: what each fallback shows besides right values (the feature absent while the op was made)
FALLBACK_SIGNS = {
    "frame_strategies": lambda ops, graphs: "_rd_in_graph" not in _source(ops["decorator"])
    and ("_is_dynamo()" in _source(ops["decorator"]) or "_is_compiling()" in _source(ops["decorator"])),
    "tensor_guards": lambda ops, graphs: not ops["decorator"]._tensor_checks
    and ".dtype is _rd_dt_x" in _source(ops["decorator"]),
    "compiling_flag": lambda ops, graphs: "_is_compiling_flag" not in _source(ops["decorator"]),
    # Dynamo cannot take the plan: the decorator op breaks the graph, the custom op is one node
    "constant_result": lambda ops, graphs: not any("rangedispatch_rd" in t or "cond" in t
                                                   for g in graphs["decorator"] for t in g) and (
        "registered" not in ops
        or graphs["registered"] == [["rdtest_compile.fallback_constant_result.default", "<built-in function add>"]]),
    "custom_op_kernels": lambda ops, graphs: "registered" not in ops
    or not type(ops["registered"]).__name__.startswith("RangeDispatched"),
}


@pytest.mark.parametrize("feature", sorted(compat.FEATURES) + ["all"])
def test_without_each_private_torch_feature_ops_stay_right_eagerly_compiled_and_exported(feature):
    """Each private torch API marked absent in turn (and all at once): the probe's fallback runs,
    and a decorator op and a registered custom op with three winners give the right values
    eagerly, compiled and exported at every range edge (more graphs allowed). Where the feature
    has a visible fallback, it shows."""
    names = sorted(compat.FEATURES) if feature == "all" else [feature]
    assert set(names) <= set(compat.FEATURES)
    with compat.absent(*names):
        assert not any(compat.have(n) for n in names)
        registered = "custom_op_function" not in names
        ops = three_winner_ops(feature, registered)
        if not registered:  # the custom op's function cannot be found: a clear error, not a crash later
            with pytest.raises(rd.ConfigError, match="range_dispatch"):
                register(f"fallback_{feature}_error", THREE_WINNERS, cache=False)
        graphs = {label: right_everywhere(op, f"{label} op without {feature}") for label, op in ops.items()}
        for name in names:
            sign = FALLBACK_SIGNS.get(name, lambda ops, graphs: True)
            assert sign(ops, graphs), (name, graphs, _source(ops["decorator"]))


def test_every_private_feature_is_listed_with_its_fallback_and_probed_once():
    """The compat table names every feature's private API and fallback; a probe runs once and
    its answer is kept; forcing a feature absent is undone on leaving the block."""
    calls = []
    compat.FEATURES["_probe_counter"] = compat.Feature("_probe_counter", "nothing", "nothing",
                                                       lambda: calls.append(1) or "value")
    try:
        assert compat.get("_probe_counter") == "value" and compat.have("_probe_counter") and calls == [1]
        with compat.absent("_probe_counter"):
            assert not compat.have("_probe_counter") and compat.get("_probe_counter") is None
        assert compat.have("_probe_counter") and calls == [1]
    finally:
        del compat.FEATURES["_probe_counter"]
        compat.registry._RESULTS.pop("_probe_counter", None)
    with pytest.raises(KeyError, match="no feature"):
        with compat.absent("no_such_feature"):
            pass
    rows = compat.report()
    assert {r[0] for r in rows} == set(compat.FEATURES) and all(r[2] and r[3] for r in rows)


@pytest.mark.parametrize("feature", ["constant_result", "tensor_guards", "global_state_guard", "dispatch_key_tls",
                                     "all"])
def test_without_a_private_torch_feature_a_multikernel_stays_right_eagerly_compiled_and_exported(feature):
    """A MultiKernel (nearest rule, variants that name themselves in their output) with the
    private torch APIs it uses marked absent: the same variant per size eagerly, compiled (a
    graph break where Dynamo cannot take the plan) and exported."""
    names = sorted(compat.FEATURES) if feature == "all" else [feature]
    hints = [[16], [256], [4096]]
    with compat.absent(*names):
        for in_graph in ("inline", "opaque"):
            mk = rd.MultiKernel([rd.Variant(_tagged(i), h) for i, h in enumerate(hints)], policy="nearest",
                                cache=False, in_graph=in_graph, name=f"fallback_{in_graph}")
            torch._dynamo.reset()
            compiled = torch.compile(lambda x, y: mk(x, y) * 2, backend=CompileCounter(), dynamic=True)

            class M(torch.nn.Module):
                def forward(self, x, y):
                    return mk(x, y)

            d = torch.export.Dim("s", min=2, max=9999)
            exported = torch.export.export(M(), (torch.zeros(40), torch.zeros(40)),
                                           dynamic_shapes=({0: d}, {0: d})).module()
            for s in (3, 40, 100, 300, 5000, 70):
                x = torch.zeros(s)
                want = int(mk.nearest((s,)).name[1])
                got = (int(mk(x, x)[0]), int(compiled(x, x)[0]) // 2, int(exported(x, x)[0]))
                assert got == (want, want, want), (feature, in_graph, s, got)
