"""Per-call dispatch overhead on tiny CPU tensors, measured side by side in interleaved rounds.

Rows: a direct call of the implementation; the ``@range_dispatch`` form (3 ranges, the
winner differs per range), called at one size (what a model's layers do) and with the size
changing every call (alternating between two ranges: no call repeats the last size); a
second input signature; a grid op on two dims (three winners); a plain
``torch.library.custom_op``; the same kind of op after ``register_custom_op_autotuning``; both
called as ``torch.ops.<namespace>.<name>.default`` (the kernel alone, not the op's ``__call__``).
Every row runs the same loop over a list of argument tuples. Prints medians over rounds and
the differences: the median over rounds of each round's difference to the baseline row (paired,
so drift between rounds cancels), and the difference of the best rounds.

    python bench/overhead.py [--rounds 15] [--calls 20000] [--parts] [--device cuda]

``--device cuda`` makes the same tensors on the GPU: the guard then checks a CUDA device (the
implementations return their input, so no kernel runs; the custom ops' clone launches one).

``--parts`` also times the pieces a dispatched call is made of on this host (``timeit``, best
of 7): calling an instance's ``__call__``, the compile check, the C-level signature guard on
the call's tensors, one size read.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import time
import timeit
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import rangedispatch as rd  # noqa: E402


def impl_a(x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    return x


def impl_b(x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    return x


def impl_c(x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    return x


class ByName:
    """A fake benchmarker that makes a chosen candidate win each range, so the table
    really dispatches to different functions (timings of identical no-ops are noise)."""

    def __init__(self, winners: dict[int, str]) -> None:
        self.winners = winners

    def measure(self, jobs):
        out = []
        for job in jobs:
            lo = max(k for k in self.winners if k <= job.size)
            out.append([1.0 if job.name == self.winners[lo] else 2.0] * 5)
        return out


def build():
    winners = {0: "impl_a", 512: "impl_b", 2048: "impl_c"}

    @rd.range_dispatch(dispatch_on=("x", 1), ranges=[(0, 512), (512, 2048), (2048, None)],
                       benchmarker=ByName(winners), cache=False)
    def deco(x, w):
        return x

    for f in (impl_a, impl_b, impl_c):
        deco.register_impl(f)

    @torch.library.custom_op("rdbench::plain", mutates_args=())
    def plain(x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
        return x.clone()

    @torch.library.custom_op("rdbench::tuned", mutates_args=())
    def tuned(x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
        return x.clone()

    clone = lambda name: (lambda x, w: x.clone())  # noqa: E731
    ca, cb, cc = clone("a"), clone("b"), clone("c")
    ca.__name__, cb.__name__, cc.__name__ = "impl_a", "impl_b", "impl_c"
    rd.register_custom_op_autotuning(
        tuned,
        configs=[rd.CustomOpConfig(ca), rd.CustomOpConfig(cb), rd.CustomOpConfig(cc)],
        dispatch_on={"tensor_name": "x", "dim": 1},
        split_points=[511, 2047],
        benchmarker=ByName({0: "impl_a", 512: "impl_b", 2048: "impl_c"}),
        cache=False,
    )
    # a grid on (x[0], x[1]): impl_a for batch < 8, then impl_b / impl_c by sequence length
    grid_winners = {(0, 0): "impl_a", (0, 512): "impl_a", (8, 0): "impl_b", (8, 512): "impl_c"}
    grid = rd.range_dispatch(lambda x, w: x, dispatch_on=[("x", 0), ("x", 1)],
                             ranges=[[(0, 8), (8, None)], [(0, 512), (512, None)]],
                             benchmarker=ByCell(grid_winners), cache=False, name="grid")
    for f in (impl_a, impl_b, impl_c):
        grid.register_impl(f)
    return deco, plain, tuned, grid


class ByCell:
    """``ByName`` for a grid: the winner of the cell whose lower corner is at or below the point."""

    def __init__(self, winners: dict[tuple[int, int], str]) -> None:
        self.winners = winners

    def measure(self, jobs):
        out = []
        for job in jobs:
            corner = max(k for k in self.winners if k[0] <= job.size[0] and k[1] <= job.size[1])
            out.append([1.0 if job.name == self.winners[corner] else 2.0] * 5)
        return out


def per_call_us(fn, calls: list) -> float:
    t0 = time.perf_counter()
    for args in calls:
        fn(*args)
    return (time.perf_counter() - t0) / len(calls) * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--calls", type=int, default=20000)
    parser.add_argument("--parts", action="store_true", help="also time the pieces of a dispatched call")
    parser.add_argument("--device", default="cpu", help="where the tensors live (default: cpu)")
    opts = parser.parse_args()
    deco, plain, tuned, grid = build()
    x, w = torch.randn(1, 1000, 1, device=opts.device), torch.randn(1, device=opts.device)
    x64, w64 = x.double(), w.double()
    small = torch.randn(1, 100, 1, device=opts.device)  # another range than x: another winner
    same = [(x, w)] * opts.calls
    changing = [(x, w), (small, w)] * (opts.calls // 2)
    deco(x, w), tuned(x, w), grid(x, w)  # tune
    deco(x64, w64)  # a second input signature: its own table
    assert deco.table.partition.lookup(1000).owner == "impl_b"
    assert grid.table.result_for((1, 1000)).winner == "impl_a"
    rows = {
        "direct impl call": (impl_b, same),
        "@range_dispatch (3 ranges)": (deco, same),
        "@range_dispatch, size changing": (deco, changing),
        "@range_dispatch, 2nd signature": (deco, [(x64, w64)] * opts.calls),
        "@range_dispatch grid (2 dims)": (grid, same),
        "plain custom_op": (plain, same),
        "register_custom_op_autotuning": (tuned, same),
        "plain, through torch.ops": (torch.ops.rdbench.plain.default, same),
        "tuned, through torch.ops": (torch.ops.rdbench.tuned.default, same),
    }
    samples: dict[str, list[float]] = {k: [] for k in rows}
    for r in range(opts.rounds):  # interleaved: drift hits every row alike
        names = list(rows)
        names = names[r % len(names):] + names[: r % len(names)]
        for name in names:
            fn, calls = rows[name]
            samples[name].append(per_call_us(fn, calls))
    med = {k: statistics.median(v) for k, v in samples.items()}
    low = {k: min(v) for k, v in samples.items()}
    print(f"torch {torch.__version__}, {os.cpu_count()} CPUs, {opts.device} tensors, {opts.rounds} interleaved rounds x {opts.calls} calls")
    print(f"{'path':34s} {'median us/call':>15s} {'vs baseline':>12s} {'best round':>11s} {'vs baseline':>12s}")
    base = {"@range_dispatch (3 ranges)": "direct impl call", "@range_dispatch, 2nd signature": "direct impl call",
            "@range_dispatch, size changing": "direct impl call",
            "@range_dispatch grid (2 dims)": "direct impl call",
            "register_custom_op_autotuning": "plain custom_op",
            "tuned, through torch.ops": "plain, through torch.ops"}
    for name, value in med.items():
        ref = base.get(name)
        # paired: each round's difference to its baseline, measured moments apart in that round
        paired = statistics.median(a - b for a, b in zip(samples[name], samples[ref])) if ref else 0.0
        extra = f"{paired:+.3f} us" if ref else ""
        extra_low = f"{low[name] - low[ref]:+.3f} us" if ref else ""
        print(f"{name:34s} {value:15.3f} {extra:>12s} {low[name]:11.3f} {extra_low:>12s}")
    if opts.parts:
        parts(x, w)


def parts(x: torch.Tensor, w: torch.Tensor) -> None:
    """ns per piece of a dispatched call, each timed alone."""
    from torch._C._dynamo.guards import TensorGuards
    from torch.compiler import is_dynamo_compiling

    def body(x, w):
        return impl_b(x, w)

    class Callable:
        def __call__(self, x, w):
            return impl_b(x, w)

    free = lambda t: [[None] * t.dim()]  # noqa: E731
    guard = TensorGuards(x, w, dynamic_dims_sizes=[list(x.shape), list(w.shape)],
                         dynamic_dims_strides=free(x) + free(w)).check
    env = {"impl_b": impl_b, "body": body, "obj": Callable(), "guard": guard, "dyn": is_dynamo_compiling,
           "x": x, "w": w}
    pieces = [("direct call", "impl_b(x, w)"), ("through a function", "body(x, w)"),
              ("through an instance __call__", "obj(x, w)"), ("is_dynamo_compiling()", "dyn()"),
              ("TensorGuards check, 2 tensors", "guard(x, w)"), ("x.shape[1]", "x.shape[1]"),
              ("3-way size chain", "(1 if 1000 < 512 else 2 if 1000 < 2048 else 3)")]
    print(f"\npieces of a call (Python {platform.python_version()}), ns, best of 7 x 200000:")
    for name, stmt in pieces:
        best = min(timeit.repeat(stmt, globals=env, number=200000, repeat=7)) / 200000 * 1e9
        print(f"  {name:32s} {best:7.1f}")


if __name__ == "__main__":
    main()
