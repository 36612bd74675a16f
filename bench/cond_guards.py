"""Host cost of a compiled two-winner dispatch (a real ``torch.cond``) and of a grid op's
nested dispatch (a cond per dimension) against a bare ``torch.compile`` of one candidate, and
how many Dynamo guards each compiled frame checks per call. Runs on any device; tiny tensors,
so the host cost is all there is to see. Host us per call: medians of 9 interleaved rounds of
1000 back-to-back calls.

    python bench/cond_guards.py [--device cuda] [--profile] 2>/dev/null   # Dynamo's guard log goes to stderr

``--profile`` adds where the host time of one compiled call goes (cProfile, per call), ours
next to the bare compile: the functions whose own time differs most.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch
import torch.nn.functional as F

import rangedispatch as rd
from compile_vs_upstream import host_us_interleaved
from rangedispatch.testing import FakeBenchmarker, GuardCounter


def mm1(a, b):
    return a @ b


def mm_lin(a, b):
    return F.linear(a, b.t())


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--profile", action="store_true")
    opts = parser.parse_args()
    device = opts.device

    @torch.library.custom_op("rdbench_guards::mm", mutates_args=())
    def op(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        return a @ b

    @op.register_fake
    def _(a, b):
        return a.new_empty(a.shape[0], b.shape[1])

    # scripted timings: mm1 below 64 rows, mm_lin from 65 on, so the table has two winners
    bench = FakeBenchmarker({"mm1": lambda m: 1.0 if m < 64 else 3.0, "mm_lin": lambda m: 1.0 if m >= 64 else 3.0,
                             "op": 2.0})
    rd.register_custom_op_autotuning(op, configs=[rd.CustomOpConfig(mm1), rd.CustomOpConfig(mm_lin)],
                                     dispatch_on={"tensor_name": "a", "dim": 0, "range_upper_bound": 256},
                                     split_points=[64], benchmarker=bench, cache=False)
    b = torch.randn(16, 32, device=device)
    rd.dispatcher_of(op).tune(torch.randn(100, 16, device=device), b)

    # a grid on (a[0], b[1]): mm_lin only for a >= 64 rows and b >= 24 columns (nested conds)
    grid_bench = FakeBenchmarker({"mm1": lambda p: 1.0 if p[0] < 64 or p[1] < 24 else 3.0,
                                  "mm_lin": lambda p: 1.0 if p[0] >= 64 and p[1] >= 24 else 3.0, "grid_mm": 2.0})
    grid = rd.range_dispatch(mm1, dispatch_on=[{"tensor_name": "a", "dim": 0, "range_upper_bound": 256},
                                               {"tensor_name": "b", "dim": 1, "range_upper_bound": 64}],
                             split_points=[[64], [24]], benchmarker=grid_bench, cache=False, name="grid_mm")
    grid.register_impl(mm_lin)
    grid.tune(torch.randn(100, 16, device=device), b)

    # the same two ranges with compiled_dispatch="guards": one graph per range, no cond
    guarded = rd.range_dispatch(mm1, dispatch_on=("a", 0), split_points=[64], range_upper_bound=256, benchmarker=bench,
                                cache=False, name="op", compiled_dispatch="guards")
    guarded.register_impl(mm_lin)
    guarded.tune(torch.randn(100, 16, device=device), b)

    ours = torch.compile(lambda a, b: op(a, b), dynamic=True)
    ours_grid = torch.compile(lambda a, b: grid(a, b), dynamic=True)
    ours_guarded = torch.compile(lambda a, b: guarded(a, b), dynamic=True)
    single = torch.compile(lambda a, b: mm1(a, b), dynamic=True)
    single_lin = torch.compile(lambda a, b: mm_lin(a, b), dynamic=True)
    guards = {}
    with GuardCounter() as counter:
        for name, fn, m in (("ours", ours, 5), ("grid", ours_grid, 5), ("guards-mode", ours_guarded, 5),
                            ("1-compile", single, 5)):
            fn(torch.randn(m, 16, device=device), b)
            guards[name] = counter.frames[-1] if counter.frames else None

    print(f"{'rows':>6} {'ours us':>9} {'grid us':>9} {'guards-mode us':>15} {'1-compile us':>13} {'eager us':>9}")
    for m in (5, 100):
        a = torch.randn(m, 16, device=device)
        torch.testing.assert_close(ours(a, b), a @ b)
        torch.testing.assert_close(ours_grid(a, b), a @ b)
        torch.testing.assert_close(ours_guarded(a, b), a @ b)
        bare = single if m < 64 else single_lin  # a bare compile of the range's winner
        us = host_us_interleaved({"ours": ours, "grid": ours_grid, "guards": ours_guarded, "bare": bare, "eager": mm1},
                                 a, b, device=device)
        print(f"{m:>6} {us['ours']:9.1f} {us['grid']:9.1f} {us['guards']:15.1f} {us['bare']:13.1f} {us['eager']:9.1f}")
    print("guards checked per call: " + ", ".join(f"{k} {v}" for k, v in guards.items()))
    if device == "cuda":
        reduce_overhead(op, guarded, b)
    print(f"grid dispatch: {grid.table.format().splitlines()[-1]}")
    if opts.profile:
        profile_calls({"ours": ours, "1-compile": single}, torch.randn(5, 16, device=device), b)


def reduce_overhead(op, guarded, b) -> None:
    """``mode="reduce-overhead"`` with ``dynamic=True``: Inductor skips CUDA graphs for a graph
    with a cond, so there the op in cond mode guards its ranges (its lowered op tests the size
    while AOTAutograd traces), like the guards mode: one graph per range, no cond. Host us per
    call and Inductor's CUDA-graph counters, ours against bare compiles."""
    from torch._dynamo.utils import counters

    fns = {"cond mode": lambda a, b: op(a, b), "guards-mode": lambda a, b: guarded(a, b), "1-compile mm1": mm1,
           "1-compile mm_lin": mm_lin}
    print(f"\nreduce-overhead, dynamic=True: {'rows':>5} " + " ".join(f"{n + ' us':>20}" for n in fns))
    compiled = {n: torch.compile(f, mode="reduce-overhead", dynamic=True) for n, f in fns.items()}
    counters.clear()
    for m in (5, 100):
        a = torch.randn(m, 16, device="cuda")
        for fn in compiled.values():
            for _ in range(3):
                torch.testing.assert_close(fn(a, b), a @ b)
        us = host_us_interleaved(compiled, a, b, device="cuda")
        print(f"{'':31s}{m:>5} " + " ".join(f"{us[n]:20.1f}" for n in compiled))
    skipped = {k: v for k, v in counters["inductor"].items() if "cudagraph" in k}
    print(f"inductor cudagraph counters: {skipped or 'none'}")


def profile_calls(fns, *args, calls: int = 5000, top: int = 12) -> None:
    """Own time per call (us, under cProfile) of every function each compiled callable runs,
    side by side, the largest differences first."""
    import cProfile
    import pstats

    own = {}
    for name, fn in fns.items():
        fn(*args)
        prof = cProfile.Profile()
        prof.enable()
        for _ in range(calls):
            fn(*args)
        prof.disable()
        stats = pstats.Stats(prof).stats  # (file, line, func) -> (cc, nc, tottime, cumtime, callers)
        own[name] = {f"{Path(k[0]).name}:{k[1]}({k[2]})": (v[1] / calls, v[2] / calls * 1e6) for k, v in stats.items()}
    a, b = list(own)
    keys = sorted(set(own[a]) | set(own[b]), key=lambda k: -abs(own[a].get(k, (0, 0))[1] - own[b].get(k, (0, 0))[1]))
    total = {n: sum(t for _, t in own[n].values()) for n in own}
    print(f"\nhost time under cProfile, us per call: {a} {total[a]:.1f}, {b} {total[b]:.1f}")
    print(f"{'function':70s} {a + ' calls/us':>16s} {b + ' calls/us':>16s}")
    for k in keys[:top]:
        ca, ta = own[a].get(k, (0, 0.0))
        cb, tb = own[b].get(k, (0, 0.0))
        print(f"{k[:70]:70s} {ca:6.0f} {ta:9.2f} {cb:6.0f} {tb:9.2f}")


if __name__ == "__main__":
    main()
