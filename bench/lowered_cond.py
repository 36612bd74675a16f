"""A table with two winners under ``torch.compile``: where the cond is built, and what it costs.

The cmm op of ``compile_vs_upstream.py`` (M x N @ N x N with a float32-accumulating reference,
one mm allowed below M = 4096 on the GPU and linear on ``b.t()`` from there), registered and
tuned eagerly, then compiled with ``dynamic=True`` four ways, each checked against float32 at
every size first:

* ``bare``: ``torch.compile`` of ``mm1`` alone (what a hand-written compiled call costs);
* ``lowered``: the op in cond mode. Dynamo's graph holds one node of the table's lowered op,
  whose kernel AOTAutograd traces into the cond Inductor compiles (the default);
* ``dynamo cond``: the same with ``rangedispatch.traced.LOWERED = False``, so Dynamo traces
  the cond itself (and guards the pytree code it runs for the cond's outputs);
* ``guards``: ``compiled_dispatch="guards"``, one graph per range and no cond.

Per host-bound size: host us per call (``host_us_rounds``: interleaved rounds of 1000 calls,
medians), each over the bare compile (paired: the median of each round's ratio), and the
guards each form's frame checks (``rangedispatch.testing.GuardCounter``) against the bare one.

    cd bench && python lowered_cond.py [--device cuda] [--rounds 15] 2>/dev/null
"""

from __future__ import annotations

import argparse
import statistics
from typing import Any, Callable

import torch

import rangedispatch as rd
from compile_vs_upstream import cmm_scenario, gpu_warmup, host_us_rounds, mm1, paired_ratio, registered_op, sweep
from rangedispatch import traced
from rangedispatch.testing import GuardCounter


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--rounds", type=int, default=15)
    opts = parser.parse_args()
    device = opts.device
    dtype = torch.bfloat16 if device == "cuda" else torch.float32
    n, split = (4096, 4096) if device == "cuda" else (256, 128)
    sizes = [16, 100, 256, 1000] if device == "cuda" else [16, 100]
    sc = cmm_scenario([*sizes, split + 8], n, split)
    b = torch.randn(n, n, device=device, dtype=dtype)

    def tuned(namespace: str, mode: str) -> Any:
        op = registered_op(sc, namespace)
        rd.dispatcher_of(op).compiled_dispatch = mode
        for m in (16, split + 8):  # an eager call per range: the table, its call written out
            op(*sc.inputs(m, device, dtype))
        return op

    def checked(fn: Callable[..., Any]) -> Callable[..., Any]:
        sweep(fn, sc, device, dtype)  # every size compiled and checked before any timing
        return fn

    lowered_op, guards_op = tuned("rdbench_lowered", "cond"), tuned("rdbench_lowered_guards", "guards")
    fns: dict[str, Callable[..., Any]] = {}
    guards: dict[str, int] = {}
    with GuardCounter() as counter:
        for name, op in (("bare", None), ("lowered", lowered_op), ("guards", guards_op), ("dynamo cond", None)):
            if name == "dynamo cond":  # the op tuned, written out and traced with lowering off
                traced.LOWERED = False
                try:
                    op = tuned("rdbench_lowered_dynamo", "cond")
                    fns[name] = checked(torch.compile(lambda a, b, op=op: op(a, b), dynamic=True))
                finally:
                    traced.LOWERED = True
            elif op is None:
                fns[name] = checked(torch.compile(lambda a, b: mm1(a, b), dynamic=True))
            else:
                fns[name] = checked(torch.compile(lambda a, b, op=op: op(a, b), dynamic=True))
            guards[name] = counter.frames[-1]
    gpu_warmup(device)
    others = [k for k in fns if k != "bare"]
    print(f"guards per frame: {', '.join(f'{k} {v}' for k, v in guards.items())}")
    print(f"{'M':>6} " + " ".join(f"{k + ' us':>15}" for k in fns) + " " + " ".join(f"{k + ' / bare':>18}" for k in others))
    for m in sizes:
        a = torch.randn(m, n, device=device, dtype=dtype)
        runs = host_us_rounds(fns, a, b, device=device, calls=1000, rounds=opts.rounds)
        print(f"{m:>6} " + " ".join(f"{statistics.median(runs[k]):>15.2f}" for k in fns) + " "
              + " ".join(f"{paired_ratio(runs, k, 'bare'):>18.3f}" for k in others), flush=True)


if __name__ == "__main__":
    main()
