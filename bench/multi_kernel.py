"""Multi-kernel dispatch over size-hinted variants: ours (``benchmark`` and ``nearest`` policies)
vs a single compile primed at one hint, the per-shape best variant, and upstream Inductor's
own ``multi_kernel_hints`` where the installed torch has it.

Two ops:

* ``softmax``: seed 003's ``x * 2.0 + y.sin()`` followed by a row softmax (a reduction whose
  Inductor kernel choice depends on the size hints), 2-d hints ``[rows, cols]``, every dim
  dynamic;
* ``relu_mm``: ``relu(a @ b)`` with M dynamic (K = N = 4096), each hint compiled with
  ``max-autotune-no-cudagraphs`` so Inductor picks its GEMM (Triton template or cuBLAS) at
  the hint's M.

Variants (``MultiKernel.compiled(..., library=[eager])``): one ``torch.compile`` per hint, each
primed at its hint, and eager PyTorch as a library variant; at each hint the faster of the
compile and eager becomes the hint's variant (``nearest`` picks among those), the rest stay for
the ``benchmark`` policy. The sweep mixes the hints, sizes between them and non-power-of-two
shapes (seed 003's 1500x750). Device times are ``rangedispatch.timing.device_time_ms`` medians
(``do_bench``, or the covered loop where a call's host work would leak into it), the least
of 3 interleaved rounds; ``x`` columns are speedups over the single compile.

    python bench/multi_kernel.py [--device cuda] [--ops softmax,relu_mm] [--quick]
"""

from __future__ import annotations

import argparse
import math
import time
from dataclasses import dataclass
from typing import Any, Callable

import torch

import rangedispatch as rd
from compile_vs_upstream import gpu_warmup, host_us, interleaved_ms  # the compile benchmark's timing


def softmax_op(x, y):
    return (x * 2.0 + y.sin()).softmax(-1)


def relu_mm(a, b):
    return torch.relu(a @ b)


@dataclass
class Scenario:
    name: str
    fn: Callable[..., Any]
    hints: list[list[int]]
    shapes: list[tuple[int, ...]]
    sizes: Callable[..., tuple[int, ...]]
    make: Callable[[Any, str, Any], tuple[Any, ...]]  # (sizes, device, dtype) -> args
    dynamic: bool | None
    compile_options: dict[str, Any]
    upstream_hints: list[int]
    upstream_options: dict[str, Any]


def _softmax_inputs(sizes, device, dtype):
    return (torch.randn(*sizes, device=device, dtype=dtype), torch.randn(*sizes, device=device, dtype=dtype))


K = N = 4096


def _mm_inputs(sizes, device, dtype):
    a = torch.randn(sizes[0], K, device=device, dtype=dtype)
    torch._dynamo.mark_dynamic(a, 0)  # M varies; K and N are the weights' and stay static
    return a, torch.randn(K, N, device=device, dtype=dtype) / math.sqrt(K)


SCENARIOS = {
    "softmax": Scenario(
        "softmax", softmax_op, [[1024, 512], [4096, 2048], [256, 8192]],
        [(1024, 512), (4096, 2048), (256, 8192), (1500, 750), (2000, 1000), (3000, 3000), (700, 300),
         (8192, 1024), (512, 4096), (6000, 1500), (100, 30000)],
        lambda x, y: tuple(x.shape), _softmax_inputs, True, {}, [512, 2048, 8192], {}),
    "relu_mm": Scenario(
        "relu_mm", relu_mm, [[64], [4096]],
        [(1,), (16,), (64,), (100,), (200,), (500,), (1000,), (1500,), (2048,), (3000,), (4096,), (6000,)],
        lambda a, b: (a.shape[0],), _mm_inputs, None, {"mode": "max-autotune-no-cudagraphs"},
        [64, 4096], {"max_autotune": True}),
}


def geomean(values):
    return math.exp(sum(math.log(v) for v in values) / len(values))


def upstream_compile(sc: Scenario, device, dtype):
    """Upstream Inductor's multi_kernel_hints, or ``(None, reason)``."""
    if device != "cuda":
        return None, "upstream multi-kernel needs CUDA"
    try:
        fn = rd.inductor_multi_kernel(sc.fn, sc.upstream_hints, dynamic=sc.dynamic, **sc.upstream_options)
        t0 = time.perf_counter()
        fn(*sc.make(sc.hints[0], device, dtype))
        torch.cuda.synchronize()
        return fn, f"compiled in {time.perf_counter() - t0:.1f} s"
    except Exception as exc:  # not in this torch, or failing there
        return None, f"{type(exc).__name__}: {str(exc).splitlines()[0][:160]}"


def run(sc: Scenario, device: str, dtype, quick: bool) -> list[str]:
    from torch._dynamo.utils import counters

    shapes = sc.shapes[:5] if quick else sc.shapes
    make = lambda s: sc.make(s, device, dtype)  # noqa: E731
    fn = sc.fn

    def eager(*args):  # the library variant: plain PyTorch (cuBLAS, ATen's softmax)
        return fn(*args)

    counters.clear()
    t0 = time.perf_counter()
    ours_near = rd.MultiKernel.compiled(fn, sc.hints, make, dynamic=sc.dynamic, compile_options=sc.compile_options,
                                        library=[eager], policy="nearest", name=f"{sc.name}_near", cache=False,
                                        sizes=sc.sizes, rtol=3e-2, atol=3e-2)
    compile_s = time.perf_counter() - t0
    fx = {k: v for k, v in counters["inductor"].items() if k.startswith("fxgraph")}
    ours_bench = rd.MultiKernel(ours_near.variants, policy="benchmark", sizes=sc.sizes, cache=False,
                                name=f"{sc.name}_bench", rtol=3e-2, atol=3e-2)
    by_name = {v.name: v for v in ours_near.variants}
    single = by_name[f"{fn.__name__}@{'x'.join(map(str, sc.hints[0]))}"].fn  # the compile primed at hint 0
    upstream, upstream_note = upstream_compile(sc, device, dtype)
    from torch._dynamo.testing import CompileCounterWithBackend

    # the nearest rule traced into one dynamic graph: each variant behind a custom op, run as
    # eagerly (in_graph="opaque", what "auto" picks for per-hint compiles), and the variants'
    # code traced inline
    inline_graphs = CompileCounterWithBackend("inductor")
    near_inline = rd.MultiKernel(ours_near.variants, policy="nearest", sizes=sc.sizes, cache=False,
                                 name=f"{sc.name}_inline", in_graph="inline")
    in_graph_inline = torch.compile(lambda *a: near_inline(*a), dynamic=True, backend=inline_graphs)
    near_opaque = rd.MultiKernel(ours_near.variants, policy="nearest", sizes=sc.sizes, cache=False,
                                 name=f"{sc.name}_opaque", in_graph="opaque")
    graphs = CompileCounterWithBackend("inductor")
    in_graph = torch.compile(lambda *a: near_opaque(*a), dynamic=True, backend=graphs)

    rows = []
    for shape in shapes:
        args = make(shape)
        ref = fn(*(a.float() for a in args))
        for mk in (ours_bench, ours_near, in_graph, in_graph_inline):
            torch.testing.assert_close(mk(*args).float(), ref, rtol=3e-2, atol=3e-2)
        fns = {"single": single, "bench": ours_bench, "near": ours_near, "graph": in_graph, "inline": in_graph_inline,
               **{v.name: v.fn for v in ours_near.variants}}
        if upstream is not None:
            fns["up"] = upstream
        t = interleaved_ms(fns, *args, device=device)
        per_variant = {v.name: t[v.name] for v in ours_near.variants}
        best_name, best = min(per_variant.items(), key=lambda p: p[1])
        # host time per call: the MultiKernel's own cost shows where the call is host-bound
        host = {k: host_us(f, *args, device=device) for k, f in
                (("best", by_name[best_name].fn), ("bench", ours_bench), ("near", ours_near))}
        rows.append({
            "shape": shape, "single": t["single"], "bench": t["bench"], "near": t["near"], "best": best,
            "graph": t["graph"], "inline": t["inline"],
            "best_name": best_name, "per_variant": per_variant, "up": t.get("up", float("nan")), "host": host,
            "pick_bench": ours_bench.select(*args).name, "pick_near": ours_near.select(*args).name,
        })

    name = torch.cuda.get_device_name() if device == "cuda" else "cpu"
    hinted = ", ".join(f"{list(v.hint)}: {v.name}" for v in ours_near.hinted)
    out = [f"\n## {sc.name}: {name}, torch {torch.__version__}, {str(dtype).replace('torch.', '')}, "
           f"compile options {sc.compile_options or 'default'}",
           f"variants per hint (fastest at the hint of its compile and eager): {hinted}; without a hint: "
           f"{[v.name for v in ours_near.variants if v.hint is None]}",
           f"built in {compile_s:.1f} s; Inductor FX-graph cache during the compiles: {fx or 'no events'}",
           f"upstream multi_kernel_hints={sc.upstream_hints} {sc.upstream_options or ''}: {upstream_note}",
           "ms: device-time medians, least of 3 interleaved rounds; x = speedup over the single compile primed at "
           f"{sc.hints[0]}; best/ours = the per-shape best variant's time over ours (1.0: as fast as the best)",
           f"{'shape':>10} {'single':>8} {'bench':>8} {'nearest':>8} {'best':>8} {'upstream':>9} {'bench x':>8} "
           f"{'near x':>7} {'best/bench':>10} {'best/near':>9} {'near/bench':>10} {'up x':>6}  "
           "picks: bench | nearest | best"]
    for r in rows:
        out.append(
            f"{'x'.join(map(str, r['shape'])):>10} {r['single']:8.4f} {r['bench']:8.4f} {r['near']:8.4f} "
            f"{r['best']:8.4f} {r['up']:9.4f} {r['single'] / r['bench']:8.3f} {r['single'] / r['near']:7.3f} "
            f"{r['best'] / r['bench']:10.3f} {r['best'] / r['near']:9.3f} {r['bench'] / r['near']:10.3f} "
            f"{r['single'] / r['up']:6.3f}  {r['pick_bench']} | {r['pick_near']} | {r['best_name']}")
    out.append("host us/call (back-to-back calls, one sync): " + "; ".join(
        f"{'x'.join(map(str, r['shape']))}: best variant {r['host']['best']:.1f}, benchmark "
        f"{r['host']['bench']:.1f}, nearest {r['host']['near']:.1f}" for r in rows))
    out.append("per-variant ms: " + "; ".join(
        f"{'x'.join(map(str, r['shape']))}: " + ", ".join(f"{k} {v:.4f}" for k, v in r["per_variant"].items())
        for r in rows))
    sb = [r["single"] / r["bench"] for r in rows]
    sn = [r["single"] / r["near"] for r in rows]
    out.append(
        f"geomean over the single compile: benchmark {geomean(sb):.3f}x (best shape {max(sb):.3f}x), nearest "
        f"{geomean(sn):.3f}x (best shape {max(sn):.3f}x); nearest / benchmark throughput "
        f"{geomean([r['bench'] / r['near'] for r in rows]):.3f}; worst best/ours: benchmark "
        f"{min(r['best'] / r['bench'] for r in rows):.3f}, nearest {min(r['best'] / r['near'] for r in rows):.3f}"
        + (f"; upstream {geomean([r['single'] / r['up'] for r in rows]):.3f}x" if upstream is not None else ""))
    for label, key, counter in (("opaque", "graph", graphs), ("inline", "inline", inline_graphs)):
        out.append(f"nearest traced into torch.compile(dynamic=True), in_graph={label!r}: {counter.frame_count} "
                   f"graph(s) over {len(rows)} shapes; best/in-graph geomean "
                   f"{geomean([r['best'] / r[key] for r in rows]):.3f}, worst {min(r['best'] / r[key] for r in rows):.3f}; "
                   "in-graph / nearest per shape: " + ", ".join(f"{r[key] / r['near']:.3f}" for r in rows))
    st_b, st_n = ours_bench.stats(), ours_near.stats()
    out.append(f"runtime benchmarks: benchmark policy {st_b['benchmarks']} ({st_b['benchmark_ms']:.0f} ms), "
               f"nearest policy {st_n['benchmarks']}")
    return out


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--ops", default=",".join(SCENARIOS))
    parser.add_argument("--quick", action="store_true")
    opts = parser.parse_args()
    dtype = torch.bfloat16 if opts.device == "cuda" else torch.float32
    gpu_warmup(opts.device)
    for name in opts.ops.split(","):
        print("\n".join(run(SCENARIOS[name], opts.device, dtype, opts.quick)), flush=True)


if __name__ == "__main__":
    main()
