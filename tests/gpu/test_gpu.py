"""The engine, the multi-kernel dispatcher and the plugin on a CUDA device, with real timing
(CUDA events) and real Triton kernels. Skipped without CUDA."""

from importlib.metadata import entry_points

import hypothesis  # noqa: F401  (imported before pytester's in-process run, as in tests/plugin)
import pytest
import torch

import rangedispatch as rd

INSTALLED = any(ep.value.startswith("pytest_rangedispatch") for ep in entry_points(group="pytest11"))
LOAD = [] if INSTALLED else ["-p", "pytest_rangedispatch.plugin"]
pytestmark = pytest.mark.gpu

DEV = "cuda"


def make_scale_op(name="gpu_scale"):
    @rd.range_dispatch(dispatch_on=("x", 1), split_points=[512, 2048], cache=False, name=name)
    def scale(x, w):
        return x * w

    @scale.register_impl
    def scale_einsum(x, w):
        return torch.einsum("bsh,h->bsh", x, w)

    @scale.register_impl
    def scale_chunked(x, w):
        return torch.cat([c * w for c in x.split(256, dim=1)], dim=1)

    return scale


def test_tuning_uses_cuda_events_and_every_range_dispatches_correctly():
    scale = make_scale_op()
    x, w = torch.randn(4, 700, 256, device=DEV), torch.randn(256, device=DEV)
    table = rd.dispatcher_of(scale).tune(x, w)
    assert table.environment.device.startswith("cuda")
    assert isinstance(rd.default_benchmarker("cuda"), rd.CudaBenchmarker)
    for s in (1, 511, 512, 513, 2047, 2048, 5000):
        x = torch.randn(2, s, 256, device=DEV)
        torch.testing.assert_close(scale(x, w), x * w)


@pytest.mark.compile
def test_compiled_dispatch_on_cuda_is_one_graph_across_ranges():
    from torch._dynamo.testing import CompileCounterWithBackend

    scale = make_scale_op("gpu_scale_compiled")
    w = torch.randn(256, device=DEV)
    rd.dispatcher_of(scale).tune(torch.randn(4, 700, 256, device=DEV), w)
    counter = CompileCounterWithBackend("inductor")
    fn = torch.compile(lambda x, w: scale(x, w) + 1, dynamic=True, fullgraph=True, backend=counter)
    for s in (3, 511, 512, 1000, 2048, 4000):
        x = torch.randn(2, s, 256, device=DEV)
        torch.testing.assert_close(fn(x, w), x * w + 1)
    assert counter.frame_count == 1


def three_winner_op(name):
    """A scale op whose scripted times make each of its three candidates win one of the ranges
    [1, 512], [513, 2048], [2049, inf) (for tests of graphs and code, not of speed)."""
    from rangedispatch.testing import FakeBenchmarker

    bench = FakeBenchmarker({"ro_mul": lambda s: 1 if s < 512 else 5, "ro_einsum": lambda s: 1 if 512 <= s < 2048 else 5,
                             "ro_view": lambda s: 1 if s >= 2048 else 5})

    def ro_mul(x, w):
        return x * w

    op = rd.range_dispatch(dispatch_on=("x", 1), split_points=[512, 2048], cache=False, name=name,
                           benchmarker=bench)(ro_mul)
    op.register_impl(lambda x, w: torch.einsum("bsh,h->bsh", x, w), name="ro_einsum")
    op.register_impl(lambda x, w: x * w.view(1, 1, -1), name="ro_view")
    w = torch.randn(256, device=DEV)
    rd.dispatcher_of(op).tune(torch.randn(2, 700, 256, device=DEV), w)
    assert len({r.winner for r in rd.dispatcher_of(op).table.results}) == 3
    op(torch.randn(2, 700, 256, device=DEV), w)  # the call written out before compiling
    return op, w


@pytest.mark.compile
def test_inductor_writes_a_lowered_op_s_branches_inline_under_one_device_guard(monkeypatch):
    """Inductor's code for a three-winner op: the branches inline under the call's one device
    guard, with no branch function and no check of the cond's output; right values at every
    range's edges. With the inline code turned off, Inductor's branch functions come back."""
    from torch._inductor.utils import run_and_get_code

    from rangedispatch import compat
    from rangedispatch.compat import inline_cond

    assert compat.have("inline_cond")  # its self-test compiles a graph: not the one run_and_get_code looks at

    def code_of(name):
        op, w = three_winner_op(name)
        torch._dynamo.reset()
        f = torch.compile(lambda x, w: op(x, w) + 1, dynamic=True, fullgraph=True)
        _, (code, *_) = run_and_get_code(f, torch.randn(2, 700, 256, device=DEV), w)
        for s in (3, 511, 512, 513, 2047, 2048, 2049, 5000):
            x = torch.randn(2, s, 256, device=DEV)
            torch.testing.assert_close(f(x, w), x * w + 1)
        return code

    code = code_of("gpu_inline")
    assert code.count("_DeviceGuard(") == 1 and "def true_graph" not in code, code
    assert "'torch.ops.cond'" not in code and " < 513:" in code and " < 2049:" in code, code  # [1, 512], [513, 2048]
    monkeypatch.setattr(inline_cond, "ENABLED", False)
    code = code_of("gpu_not_inline")
    assert code.count("_DeviceGuard(") > 1 and "def true_graph_0(" in code, code


@pytest.mark.compile
def test_reduce_overhead_keeps_cuda_graphs_for_a_multi_winner_op(monkeypatch):
    """Under ``mode="reduce-overhead"`` the lowered op guards its ranges instead of carrying a
    cond (which makes Inductor skip CUDA graphs): a graph per range reached, none skipped.
    Scripted times decide the winners (this checks graphs, not speed)."""
    from torch._dynamo.utils import counters

    from rangedispatch.trace import traced

    def sweep(op, w):
        counters.clear()
        f = torch.compile(lambda x, w: op(x, w) + 1, dynamic=True, mode="reduce-overhead")
        for s in (100, 700, 3000, 200, 1000, 5000):
            x = torch.randn(2, s, 256, device=DEV)
            for _ in range(3):  # cudagraph trees: warm-up, record, replay
                out = f(x, w)
            torch.testing.assert_close(out, x * w + 1)
        return counters["frames"]["ok"], counters["inductor"]["cudagraph_skips"]  # frames Dynamo compiled

    assert sweep(*three_winner_op("gpu_ro")) == (3, 0)
    monkeypatch.setattr(traced, "CUDA_GRAPH_DEVICES", ())  # the cond: one graph, CUDA graphs skipped
    graphs, skips = sweep(*three_winner_op("gpu_ro_cond"))
    assert graphs == 1 and skips > 0, (graphs, skips)


@pytest.mark.compile
def test_reduce_overhead_keeps_cuda_graphs_for_a_multikernel_in_a_graph():
    """The nearest rule under ``mode="reduce-overhead"``: a graph per region reached, each
    running its variant (outputs name it), and no CUDA graph skipped for a cond."""
    from torch._dynamo.utils import counters

    def tagged(i):
        def variant(x, y):
            return x + y + i

        variant.__name__ = f"v{i}"
        return variant

    mk = rd.MultiKernel([rd.Variant(tagged(i), [h]) for i, h in enumerate([16, 256, 4096])], policy="nearest",
                        cache=False)
    counters.clear()
    f = torch.compile(lambda x, y: mk(x, y) * 2, dynamic=True, mode="reduce-overhead")
    for s in (3, 40, 100, 300, 5000, 70):
        x = torch.zeros(s, device=DEV)
        for _ in range(3):  # cudagraph trees: warm-up, record, replay
            out = f(x, x)
        assert int(out[0]) == 2 * int(mk.nearest((s,)).name[1]), s
    assert (counters["frames"]["ok"], counters["inductor"]["cudagraph_skips"]) == (3, 0)


@pytest.mark.compile
def test_reduce_overhead_runs_per_hint_compiles_of_a_multikernel_in_cuda_graphs():
    """Per-hint compiles go into the graph opaque (each region calls its compile through a
    custom op); under ``mode="reduce-overhead"`` each region reached gets its graph, none
    skipped for CUDA graphs, and computes the function."""
    from torch._dynamo.utils import counters

    def f(x, y):
        return (x * 2.0 + y.sin()).softmax(-1)

    make = lambda h: (torch.randn(*h, device=DEV), torch.randn(*h, device=DEV))  # noqa: E731
    mk = rd.MultiKernel.compiled(f, [[64, 256], [64, 4096]], make, policy="nearest", cache=False,
                                 sizes=lambda x, y: tuple(x.shape))
    counters.clear()
    g = torch.compile(lambda x, y: mk(x, y) + 1, dynamic=True, mode="reduce-overhead")
    for shape in [(64, 200), (64, 3000), (64, 300), (64, 5000)]:
        x, y = make(shape)
        for _ in range(3):  # cudagraph trees: warm-up, record, replay
            out = g(x, y)
        torch.testing.assert_close(out, f(x, y) + 1)
    assert counters["inductor"]["cudagraph_skips"] == 0, dict(counters["inductor"])


@pytest.mark.compile
def test_multikernel_compiled_per_hint_with_a_library_variant():
    def f(x, y):
        return (x * 2.0 + y.sin()).softmax(-1)

    def eager(x, y):
        return f(x, y)

    make = lambda h: (torch.randn(*h, device=DEV), torch.randn(*h, device=DEV))  # noqa: E731
    mk = rd.MultiKernel.compiled(f, [[256, 512], [64, 8192]], make, library=[eager], policy="benchmark",
                                 cache=False, sizes=lambda x, y: tuple(x.shape))
    # each hint's fastest of (its compile, eager) is its variant; the losers stay as spares
    assert len(mk.hinted) == 2 and 3 <= len(mk.variants) <= 4
    assert any(v.meta.get("source") == "library" for v in mk.variants)
    for shape in [(256, 512), (100, 3000), (64, 8192), (1000, 100)]:
        x, y = make(shape)
        torch.testing.assert_close(mk(x, y), f(x, y))
    stats = mk.stats()
    assert stats["benchmarks"] == 2  # the two shapes that are not hints, timed once each
    assert stats["benchmark_ms"] > 0


def test_triton_launch_configs_tuned_per_hint_on_the_gpu():
    triton = pytest.importorskip("triton")
    import triton.language as tl

    @triton.jit
    def add_kernel(x_ptr, y_ptr, out_ptr, n, BLOCK: tl.constexpr):
        offs = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
        mask = offs < n
        tl.store(out_ptr + offs, tl.load(x_ptr + offs, mask=mask) + tl.load(y_ptr + offs, mask=mask), mask=mask)

    def add(x, y, BLOCK, num_warps):
        out = torch.empty_like(x)
        add_kernel[(triton.cdiv(x.numel(), BLOCK),)](x, y, out, x.numel(), BLOCK=BLOCK, num_warps=num_warps)
        return out

    configs = [{"BLOCK": 128, "num_warps": 1}, {"BLOCK": 1024, "num_warps": 4}, {"BLOCK": 4096, "num_warps": 8}]
    make = lambda h: (torch.randn(h[0], device=DEV), torch.randn(h[0], device=DEV))  # noqa: E731
    mk = rd.MultiKernel.tuned_configs(add, configs, [[1000], [1 << 24]], make, policy="nearest", cache=False)
    assert all("BLOCK=" in v.name for v in mk.variants)
    for n in (1, 999, 5000, 1 << 22):
        x, y = make([n])
        torch.testing.assert_close(mk(x, y), x + y)


def test_inductor_multi_kernel_helper_compiles_and_matches(monkeypatch, tmp_path):
    import torch._inductor.config as inductor_config

    if not hasattr(inductor_config, "multi_kernel_hints"):
        pytest.skip("this torch has no multi_kernel_hints")
    monkeypatch.setenv("TORCHINDUCTOR_CACHE_DIR", str(tmp_path))  # restored afterwards; the helper moves it
    fn = rd.inductor_multi_kernel(lambda a, b: torch.relu(a @ b), [64, 1024], dynamic=True)
    for m in (8, 300):
        a, b = torch.randn(m, 128, device=DEV), torch.randn(128, 64, device=DEV)
        torch.testing.assert_close(fn(a, b), torch.relu(a @ b), rtol=2e-2, atol=2e-2)


PLUGIN_TESTS = """
import pytest, torch
import rangedispatch as rd

@rd.range_dispatch(dispatch_on=("x", 1), split_points=[512], cache=False, name="ws_gpu")
def ws(x, w):
    return x * w

@ws.register_impl
def ws_einsum(x, w):
    return torch.einsum("bsh,h->bsh", x, w)

def f(a, b):
    return torch.relu(a @ b)

def lin(a, b):
    return torch.relu(torch.nn.functional.linear(a, b.t()))

make = lambda s: (torch.randn(s[0], 256, device="cuda"), torch.randn(256, 128, device="cuda"))
mk = rd.MultiKernel([rd.Variant(f, [16], name="mm"), rd.Variant(lin, [2048], name="linear")],
                    sizes=lambda a, b: (a.shape[0],), make_inputs=make, cache=False, name="relu_mm")

@pytest.mark.range_autotune(ws, example=lambda: (torch.randn(2, 600, 64, device="cuda"), torch.randn(64, device="cuda")),
                            examples=5, stale_tolerance=10.0)
def test_ws(range_case):
    pass

@pytest.mark.range_autotune(mk, examples=5, stale_tolerance=10.0)
def test_mk(range_case):
    pass

def test_bench(range_benchmark):
    x = torch.randn(4096, 4096, device="cuda")
    out = range_benchmark(torch.mm, x, x, rounds=5)
    assert out.shape == (4096, 4096)
"""


def test_plugin_runs_generated_cases_and_benchmarks_on_the_gpu(pytester):
    pytester.makepyfile(test_gpu_op=PLUGIN_TESTS)
    result = pytester.runpytest(*LOAD, "-q", "-p", "no:cacheprovider", "--rangedispatch-report")
    result.assert_outcomes(passed=15)  # ws: 2 ranges x (einsum, dispatch, cuda_graphs, bench); mk: 6; test_bench
    result.stdout.fnmatch_lines(["*relu_mm*nearest 16*ok*", "*ws_gpu*x?1? in ?513,inf)*ok*"])


GRAPH_TESTS = """
import pytest, torch
import rangedispatch as rd

def make(name):
    @rd.range_dispatch(dispatch_on=("x", 0), split_points=[512], cache=False, name=name)
    def op(x, w):
        return x * w
    return op

good = make("g_good")

@good.register_impl
def good_einsum(x, w):
    return torch.einsum("bh,h->bh", x, w)

syncs = make("g_syncs")

@syncs.register_impl
def host_scaled(x, w):  # reads a value on the host: a sync, which capture forbids
    s = float(w.abs().sum().item()) or 1.0
    return (x * (w / s)) * s

stale = make("g_stale")

@stale.register_impl
def capture_dependent(x, w):  # right eagerly, wrong in the captured graph
    return x * (w.mean() if torch.cuda.is_current_stream_capturing() else w)

@rd.range_dispatch(dispatch_on=("x", 0), split_points=[512], cache=False, name="g_host_ref")
def host_ref(x, w):
    return x * float(w.sum().item())

@host_ref.register_impl
def host_ref_fast(x, w):
    return x * w.sum()

ex = lambda: (torch.randn(4, 700, device="cuda"), torch.randn(700, device="cuda"))

@pytest.mark.range_autotune(good, syncs, stale, example=ex, examples=3, benchmark=False, dtypes=[torch.float32])
def test_ops(range_case):
    pass

@pytest.mark.range_autotune(host_ref, example=ex, examples=3, benchmark=False, dtypes=[torch.float32])
def test_host_ref(range_case):
    pass
"""


def test_the_cuda_graph_case_names_a_capture_breaker_and_a_wrong_replay(pytester):
    pytester.makepyfile(test_graphs=GRAPH_TESTS)
    result = pytester.runpytest(*LOAD, "-q", "-p", "no:cacheprovider", "-W", "ignore")
    # per op and range: the candidate, the dispatch and the cuda_graphs case; the op whose
    # reference syncs skips its two graph cases
    result.assert_outcomes(passed=18, failed=4, skipped=2)
    result.stdout.fnmatch_lines([
        "*g_syncs: range x?0? in ?*, 513), x?0?=* *candidate 'host_scaled' cannot be captured in a CUDA graph "
        "where the reference 'op' can*",
        "*g_stale: range x?0? in ?513, inf), x?0?=* *candidate 'capture_dependent' is wrong when its CUDA graph "
        "is replayed on new inputs*",
    ])
    failed = [line for line in result.outlines if line.startswith("FAILED")]
    assert len(failed) == 4 and all("cuda_graphs" in line and "g_good" not in line for line in failed)


def test_cuda_graph_timing_measures_replays_and_a_capture_breaker_loses_its_range():
    import warnings

    from rangedispatch.measure.timing import CudaBenchmarker, Job

    # many tiny launches: a graph replay removes the launch gaps, so it must time well below eager
    x = torch.randn(64, device=DEV)

    def chain():
        y = x
        for _ in range(50):
            y = y + 1
        return y

    eager = CudaBenchmarker().measure_jobs([Job("chain", 64, chain)])[0]
    graphed = CudaBenchmarker(cuda_graphs=True).measure_jobs([Job("chain", 64, chain)])[0]
    assert eager.status == graphed.status == "ok"
    assert graphed.ms < 0.7 * eager.ms, (graphed.ms, eager.ms)

    @rd.range_dispatch(dispatch_on=("x", 0), split_points=[1024], cache=False, name="gpu_graph_op",
                       benchmark_with_cudagraphs=True)
    def op(x):
        return x * 2

    @op.register_impl
    def syncs(x):  # a host sync: cannot be captured
        if bool((x != x).any()):
            return x * 2
        return x + x

    @op.register_impl
    def adds(x):
        return x + x

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        table = rd.dispatcher_of(op).tune(torch.randn(4096, device=DEV))
    assert "syncs" not in table.winners.values(), table
    assert any("syncs" in str(w.message) for w in caught)
    for n in (1, 1023, 1024, 5000):
        v = torch.randn(n, device=DEV)
        torch.testing.assert_close(op(v), v * 2)


def _split_k(a, b, parts=8):
    m, k = a.shape
    pad = -k % parts
    if pad:
        a, b = torch.nn.functional.pad(a, (0, pad)), torch.nn.functional.pad(b, (0, 0, 0, pad))
    out = torch.bmm(a.view(m, parts, -1).transpose(0, 1), b.view(parts, (k + pad) // parts, -1))
    return out.sum(0, dtype=torch.float32).to(a.dtype)


def test_graphed_timing_flushes_l2_before_every_call_like_eager_timing():
    """benchmark_with_cudagraphs changes the launch gaps, not the cache state: a memory-bound
    call whose data fits in L2 times as a cold call inside the graph, as do_bench times it
    eagerly, and slower than back-to-back replays with its data hot in L2."""
    import statistics

    from rangedispatch.measure.timing import CudaBenchmarker, Job, capture_graph, graph_events_supported, replay_ms

    assert graph_events_supported()
    x = torch.randn(4 * 1024 * 1024, device=DEV, dtype=torch.bfloat16)  # 8 MB: fits in L2

    def scale():
        return x * 2

    eager = CudaBenchmarker().measure_jobs([Job("scale", 1, scale)])[0]
    graphed = CudaBenchmarker(cuda_graphs=True).measure_jobs([Job("scale", 1, scale)])[0]
    assert eager.status == graphed.status == "ok"
    graph, _ = capture_graph(lambda: [scale() for _ in range(50)], warmup=scale)
    hot = replay_ms(graph, 50, replays=5)
    assert 0.7 * eager.ms < graphed.ms < 1.3 * eager.ms, (graphed.ms, eager.ms)
    assert statistics.median(hot) < graphed.ms, (hot, graphed.ms)


def test_a_grid_op_tunes_per_cell_with_cuda_timing_and_compiles_to_one_graph():
    def mm(a, b):
        return a @ b

    op = rd.range_dispatch(mm, dispatch_on=[("a", 0), {"tensor_name": "a", "dim": 1, "tie": {"b": 0},
                                                      "range_upper_bound": 16384}],
                           split_points=[[64], [4096]], cache=False, name="gpu_grid_mm")
    op.register_impl(_split_k, name="split_k8")
    a, b = torch.randn(16, 8192, device=DEV, dtype=torch.bfloat16), torch.randn(8192, 512, device=DEV, dtype=torch.bfloat16)
    table = op.tune(a, b)
    assert isinstance(table, rd.GridTable) and table.environment.device.startswith("cuda")
    assert len(table.results) == 4 and all(r.samples and all(p in r.range for p in r.samples) for r in table.results)
    print(table.format())
    counter = torch._dynamo.testing.CompileCounterWithBackend("inductor")
    compiled = torch.compile(op, backend=counter, dynamic=True)
    for m, k in [(3, 100), (63, 4095), (64, 4096), (65, 4097), (1000, 300), (17, 12000), (2000, 9000)]:
        a = torch.randn(m, k, device=DEV, dtype=torch.bfloat16)
        b = torch.randn(k, 512, device=DEV, dtype=torch.bfloat16)
        expected = (a.float() @ b.float())
        for got in (op(a, b), compiled(a, b)):
            torch.testing.assert_close(got.float(), expected, rtol=2e-2, atol=2e-2 * expected.abs().max().item())
    assert counter.frame_count == 1


def _busy_host(us: float) -> None:
    import time

    end = time.perf_counter() + us / 1e6
    while time.perf_counter() < end:
        pass


def test_host_work_before_a_launch_is_not_timed_as_device_time():
    """A call that spends 250 us on the host before a short kernel: do_bench's flush hides only
    part of that, so its events time the host; the core's covered loop times the kernel."""
    from triton.testing import do_bench

    from rangedispatch.measure.timing import CudaTimer, Job, device_time_ms

    x = torch.randn(1 << 16, device=DEV)
    bare = lambda: x.mul_(1.0)  # noqa: E731
    heavy = lambda: (_busy_host(250), x.mul_(1.0))  # noqa: E731
    kernel = device_time_ms(bare)
    timer = CudaTimer()
    assert timer.host_ms(heavy) > 0.24
    covered = sorted(timer.batch(Job("heavy", 0, heavy), 5.0, 0.2))
    assert len(covered) >= 5
    median = covered[len(covered) // 2]
    leaked = do_bench(heavy, warmup=5, rep=20, return_mode="median")
    assert leaked > 0.15  # the host's 250 us show in do_bench's events
    assert median < kernel + 0.02, (median, kernel)  # the covered loop shows the kernel
    assert device_time_ms(heavy) < kernel + 0.02


def test_private_torch_features_on_the_gpu_and_timing_without_the_spin():
    """Every private feature the GPU path uses works on this torch (the probes exercise them);
    without ``torch.cuda._sleep`` timing falls back to do_bench and still tunes and dispatches
    an op right on every range."""
    from rangedispatch import compat
    from rangedispatch.measure.timing import CudaTimer, Job

    for name in ("cuda_sleep", "tensor_guards", "frame_strategies", "constant_result", "inline_cond",
                 "custom_op_kernels"):
        assert compat.have(name), name
    x = torch.randn(1 << 16, device=DEV)
    with compat.absent("cuda_sleep"):
        times = CudaTimer().batch(Job("scale", 0, lambda: (_busy_host(250), x.mul_(1.0))), 5.0, 0.2)
        assert len(times) >= 1 and all(t > 0 for t in times)
        op = make_scale_op("gpu_scale_nospin")
        w = torch.randn(64, device=DEV)
        op.tune(torch.randn(2, 100, 64, device=DEV), w)
        for s in (1, 511, 512, 513, 2047, 2048, 2049, 5000):
            xs = torch.randn(2, s, 64, device=DEV)
            torch.testing.assert_close(op(xs, w), xs * w)


def _sdpa_backend(backend):
    from torch.nn.attention import SDPBackend, sdpa_kernel

    kind = getattr(SDPBackend, backend)

    def run(q, k, v):
        with sdpa_kernel([kind]):
            return torch.nn.functional.scaled_dot_product_attention(q, k, v, is_causal=True)

    run.__name__ = backend.lower()
    return run


def test_sdpa_backends_gradients_match_the_math_reference_and_a_wrong_backward_loses():
    """Training calls of an attention op: flash, efficient and cuDNN backward agree with the math
    backend's under the low-precision rule, and a fused kernel with a wrong backward loses."""
    import warnings

    from rangedispatch.measure.gradients import gradient_fault, gradients

    names = ["q", "k", "v"]
    q, k, v = (torch.randn(2, 8, 256, 64, device=DEV, dtype=torch.bfloat16) for _ in range(3))
    math_ref = _sdpa_backend("MATH")
    ref = gradients(math_ref, (q, k, v), {}, names)
    up = tuple(t.float() for t in (q, k, v))
    truth = lambda: gradients(math_ref, up, {}, names, ref.cotangents)  # noqa: E731
    for backend in ("FLASH_ATTENTION", "EFFICIENT_ATTENTION", "CUDNN_ATTENTION"):
        got = gradients(_sdpa_backend(backend), (q, k, v), {}, names, ref.cotangents)
        if got.error is not None and "No available kernel" in got.error:
            continue  # a backend this GPU or build lacks
        assert gradient_fault(got, ref, truth=truth) is None, backend

    def wrong_backward(q, k, v):  # right values; every gradient 1.5x too large
        return _Halved.apply(_sdpa_backend("FLASH_ATTENTION")(q, k, v))

    op = rd.range_dispatch(math_ref, dispatch_on=("q", 2), tie={"k": 2, "v": 2}, split_points=[512], cache=False,
                           name="sdpa_train")
    op.register_impl(_sdpa_backend("FLASH_ATTENTION"), name="flash")
    op.register_impl(wrong_backward, name="wrong_backward")
    leaves = [t.clone().requires_grad_() for t in (q, k, v)]
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        out = op(*leaves)
    assert any("'wrong_backward' loses" in str(w.message) and "gradient of" in str(w.message) for w in caught)
    assert "wrong_backward" not in op.table.winners.values() and "+grad" in op.table.signature
    out.float().sum().backward()
    assert all(t.grad is not None for t in leaves)


class _Halved(torch.autograd.Function):
    """Identity forward; the gradient flowing back is 1.5x too large."""

    @staticmethod
    def forward(ctx, x):
        return x.clone()

    @staticmethod
    def backward(ctx, g):
        return g * 1.5


def test_the_wall_objective_times_host_work_and_the_device_objective_does_not():
    """``objective="wall"`` times eager calls with their host work (a millisecond of Python
    before a tiny kernel counts), the default device timing does not."""
    import time as _time

    from rangedispatch.measure.timing import Job, WallTimer, measure_jobs

    x = torch.randn(1024, device=DEV)

    def host_heavy():
        _time.sleep(1e-3)
        return x * 2

    job = [Job("host_heavy", 1024, host_heavy), Job("plain", 1024, lambda: x * 2)]
    wall = rd.default_benchmarker("cuda", objective="wall")
    assert isinstance(wall.timer, WallTimer)
    by_wall = {m.name: m.ms for m in measure_jobs(wall, job)}
    by_device = {m.name: m.ms for m in measure_jobs(rd.default_benchmarker("cuda"), job)}
    assert by_wall["host_heavy"] >= 1.0 > by_wall["plain"] * 5
    assert by_device["host_heavy"] < 0.5  # the kernel alone


def _default_attention_op():
    def attention(q, k, v):  # PyTorch's own choice of backend, under its global switches
        return torch.nn.functional.scaled_dot_product_attention(q, k, v, is_causal=True)

    # over the batch at a sequence of 1024: even the cheapest sample is one the math backend pays for
    op = rd.range_dispatch(attention, dispatch_on=("q", 0), tie={"k": 0, "v": 0}, split_points=[4],
                           range_upper_bound=16, name="sdpa_switch")
    # no faster than the default's pick, so the reference holds its ranges until the switch
    op.register_impl(_sdpa_backend("EFFICIENT_ATTENTION"), name="efficient")
    return op


def test_a_backend_switch_the_fingerprint_cannot_see_fails_the_spot_check_on_load():
    """Tuned while SDPA picks its fastest backend, then loaded where a switch leaves it only the
    math backend: same code, same fingerprint, a reference many times slower. The load-time
    check sees it and re-tunes; loaded again under the same switch, the new table is verified."""
    import warnings

    from torch.nn.attention import SDPBackend, sdpa_kernel

    q, k, v = (torch.randn(4, 8, 1024, 64, device=DEV, dtype=torch.float16) for _ in range(3))
    with torch.no_grad():
        first = _default_attention_op()
        first(q, k, v)
        assert first.provenance.source == "tuned" and "attention" in first.table.winners.values()
        with sdpa_kernel([SDPBackend.MATH]):
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")
                switched = _default_attention_op()
                out = switched(q, k, v)
            assert any("failed its spot check" in str(w.message) for w in caught), [str(w.message) for w in caught]
            assert switched.provenance.source == "tuned" and "spot check" in switched.provenance.why
            assert set(switched.table.winners.values()) == {"efficient"}  # the math reference loses
            torch.testing.assert_close(out, _sdpa_backend("MATH")(q, k, v), rtol=1e-2, atol=1e-2)
            again = _default_attention_op()
            again(q, k, v)
        assert again.provenance.source == "cache" and again.provenance.status == "verified", again.provenance
