"""Host time of one compiled call through each form of a tuned op, against a bare compile of
the winner, and the guards each compiled frame checks.

Forms: ``torch.compile`` of the winner itself and of a lambda calling it (the bare compiles);
a custom op after ``register_custom_op_autotuning`` with ``compiled_dispatch="cond"`` and
``"guards"``; a ``@range_dispatch`` op in guards mode. Every op has one winner (a scripted
benchmarker makes ``mm1`` win every range), so the graphs are the same and what differs is
the frame: its guards and the Python it runs. Each compiled function first sweeps the sizes
(one graph per range in guards mode), then host us per call are the medians of 3 x 7
interleaved rounds of 200 calls (``compile_vs_upstream.host_us_interleaved``). The ``guards``
row under each size: us of Dynamo's lookup of the graph for that call, per form
(``compile_vs_upstream.guard_eval_us``, best of repeats), and the most any form adds to the
bare compile's, also as a share of its host time.

    python bench/compiled_forms.py [--device cuda] [--profile] 2>/dev/null
"""

from __future__ import annotations

import argparse
import statistics

import torch

import rangedispatch as rd
from compile_vs_upstream import guard_eval_us, gpu_warmup, host_us_interleaved, make_op, mm1, mm_lin
from cond_guards import profile_calls
from rangedispatch.testing import FakeBenchmarker, GuardCounter

SPLITS = [256, 4096]
SWEEP = [1, 16, 100, 256, 1000, 4096, 5000]


def build(device: str, dtype: torch.dtype, big: int) -> dict:
    bench = FakeBenchmarker({"mm1": 1.0, "mm_lin": 2.0, "op": 3.0, "deco": 3.0})

    def registered(namespace: str, mode: str):
        op = make_op(f"{namespace}::op")
        rd.register_custom_op_autotuning(op, configs=[rd.CustomOpConfig(mm1), rd.CustomOpConfig(mm_lin)],
                                         dispatch_on={"tensor_name": "a", "dim": 0, "range_upper_bound": 16384},
                                         split_points=SPLITS, benchmarker=bench, cache=False)
        rd.dispatcher_of(op).compiled_dispatch = mode
        return op

    cond_op, guards_op = registered("rdbench_forms_cond", "cond"), registered("rdbench_forms_guards", "guards")
    deco = rd.range_dispatch(lambda a, b: a @ b, dispatch_on=("a", 0), split_points=SPLITS, range_upper_bound=16384,
                             benchmarker=bench, cache=False, name="deco", compiled_dispatch="guards")
    deco.register_impl(mm1)
    deco.register_impl(mm_lin)
    b = torch.randn(big, big, device=device, dtype=dtype)
    for op in (rd.dispatcher_of(cond_op), rd.dispatcher_of(guards_op), deco):
        op.tune(torch.randn(100, big, device=device, dtype=dtype), b)
    return {"1-compile": torch.compile(mm1, dynamic=True),
            "1-compile lambda": torch.compile(lambda a, b: mm1(a, b), dynamic=True),
            "registered cond": torch.compile(lambda a, b: cond_op(a, b), dynamic=True),
            "registered guards": torch.compile(lambda a, b: guards_op(a, b), dynamic=True),
            "decorator guards": torch.compile(lambda a, b: deco(a, b), dynamic=True)}, b


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--profile", action="store_true", help="where the host time of one call goes (cProfile)")
    opts = parser.parse_args()
    device = opts.device
    dtype = torch.bfloat16 if device == "cuda" else torch.float32
    big = 4096 if device == "cuda" else 256
    gpu_warmup(device)
    fns, b = build(device, dtype, big)
    guards = {}
    with GuardCounter() as counter:
        for name, fn in fns.items():
            start = len(counter.frames)
            for m in SWEEP:
                fn(torch.randn(m, big, device=device, dtype=dtype), b)
            guards[name] = counter.frames[start:]
    print(f"torch {torch.__version__}, {torch.cuda.get_device_name() if device == 'cuda' else 'cpu'}, {dtype}, "
          f"a: M x {big} @ {big} x {big}")
    print("guards per compiled frame: " + "; ".join(f"{k} {v}" for k, v in guards.items()))
    print(f"{'M':>6} " + " ".join(f"{k + ' us':>22}" for k in fns) + f" {'worst / 1-compile':>18}")
    for m in (16, 1000):
        a = torch.randn(m, big, device=device, dtype=dtype)
        rounds = {k: [] for k in fns}
        for _ in range(3):
            us = host_us_interleaved(fns, a, b, device=device, calls=200, rounds=7)
            for k in fns:
                rounds[k].append(us[k])
        med = {k: statistics.median(v) for k, v in rounds.items()}
        worst = max(med[k] for k in fns if not k.startswith("1-compile")) / med["1-compile"]
        print(f"{m:>6} " + " ".join(f"{med[k]:22.1f}" for k in fns) + f" {worst:18.3f}")
        lookup = {k: guard_eval_us(fn, a, b) for k, fn in fns.items()}
        extra = max(lookup[k] for k in fns if not k.startswith("1-compile")) - lookup["1-compile"]
        share = f"+{extra:.2f} us = {extra / med['1-compile']:.1%}"
        print(f"{'guards':>6} " + " ".join(f"{lookup[k]:22.2f}" for k in fns) + f" {share:>18}")
    if opts.profile:
        a = torch.randn(16, big, device=device, dtype=dtype)
        profile_calls({"registered guards": fns["registered guards"], "1-compile": fns["1-compile"]}, a, b, calls=2000)


if __name__ == "__main__":
    main()
