"""A table with two winners under ``torch.compile``: where the cond is built, and what it costs.

The cmm op of ``compile_vs_upstream.py`` (M x N @ N x N with a float32-accumulating reference,
one mm allowed below M = 4096 on the GPU and linear on ``b.t()`` from there), registered and
tuned eagerly, then compiled with ``dynamic=True`` four ways, each checked against float32 at
every size first:

* ``bare``: ``torch.compile`` of ``mm1`` alone (what a hand-written compiled call costs);
* ``lowered``: the op in cond mode. Dynamo's graph holds one node of the table's lowered op,
  whose kernel AOTAutograd traces into the cond Inductor compiles, its branches written inline
  (``rangedispatch.inline_cond``; the default);
* ``subgraph fns``: the same with ``rangedispatch.inline_cond.ENABLED = False``: Inductor's own
  code for a cond, each branch a function;
* ``dynamo cond``: the same with ``rangedispatch.traced.LOWERED = False``, so Dynamo traces
  the cond itself (and guards the pytree code it runs for the cond's outputs);
* ``guards``: ``compiled_dispatch="guards"``, one graph per range and no cond.

Per host-bound size: host us per call (``host_us_rounds``: interleaved rounds of 1000 calls,
medians), each over the bare compile (paired: the median of each round's ratio), and the
guards each form's frame checks (``rangedispatch.testing.GuardCounter``) against the bare one.

``--layers`` splits each call's host time by layer: the whole call; Dynamo's compiled function
called directly with the graph's arguments (AOTAutograd's wrappers and Inductor's code); and
Inductor's generated ``call`` alone with its inputs (both captured from one real call). Frame =
call - compiled function (Dynamo's lookup and the frame's own code), AOT = compiled function -
Inductor. It adds two forms: ``op node``, a frame that calls the table's lowered op directly
(guarded like the bare frame), and ``user cond``, ``torch.cond`` written in the frame (what
Dynamo gets from upstream-style code).

    cd bench && python lowered_cond.py [--device cuda] [--rounds 15] [--layers] 2>/dev/null
"""

from __future__ import annotations

import argparse
import statistics
from typing import Any, Callable

import torch

import rangedispatch as rd
from compile_vs_upstream import (cmm_scenario, dynamo_cache, gpu_warmup, host_us_rounds, mm1, mm_lin, paired_ratio,
                                 registered_op, sweep)
from rangedispatch import inline_cond, traced
from rangedispatch.testing import GuardCounter


def layers(compiled: Callable[..., Any], *args: Any) -> tuple[Callable[[], Any], Callable[[], Any]]:
    """What one call of ``compiled(*args)`` runs below its frame, captured from a real call:
    Dynamo's compiled function with the graph's arguments, and Inductor's generated ``call``
    with its inputs (each returned as a callable repeating that call)."""
    from torch._inductor.output_code import CompiledFxGraph

    frame, entries = dynamo_cache(compiled)
    names = {n for e in entries for n in e.code.co_names if n.startswith("__compiled_fn")}
    saved = {n: frame.__globals__[n] for n in names}
    seen: dict[str, Any] = {}

    def recording(fn: Callable[..., Any]) -> Callable[..., Any]:
        def record(*graph_args: Any) -> Any:
            seen.setdefault("graph", (fn, graph_args))
            return fn(*graph_args)
        return record

    inductor_call = CompiledFxGraph.__call__

    def record_inductor(self: Any, inputs: Any) -> Any:
        seen.setdefault("inductor", (self.current_callable, list(inputs)))
        return inductor_call(self, inputs)

    try:
        frame.__globals__.update({n: recording(fn) for n, fn in saved.items()})
        CompiledFxGraph.__call__ = record_inductor
        compiled(*args)
    finally:
        frame.__globals__.update(saved)
        CompiledFxGraph.__call__ = inductor_call
    (graph, graph_args), (call, inputs) = seen["graph"], seen["inductor"]
    return (lambda: graph(*graph_args)), (lambda: call(list(inputs)))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--layers", action="store_true", help="split each call's host time by layer")
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

    lowered_op = tuned("rdbench_lowered", "cond")
    node = list(traced._LOWERED.values())[-1][0]  # the lowered op its table was written out with
    guards_op = tuned("rdbench_lowered_guards", "guards")
    forms = ["bare", "lowered", "subgraph fns", "guards", "dynamo cond"] + (["op node", "user cond"] * opts.layers)
    fns: dict[str, Callable[..., Any]] = {}
    guards: dict[str, int] = {}
    with GuardCounter() as counter:
        for name in forms:
            op = {"lowered": lowered_op, "guards": guards_op}.get(name)
            if name == "op node":
                fns[name] = checked(torch.compile(lambda a, b: node([a, b]), dynamic=True))
            elif name == "user cond":
                fns[name] = checked(torch.compile(lambda a, b: torch.cond(a.size(0) < split, mm1, mm_lin, (a, b)),
                                                  dynamic=True))
            elif name in ("dynamo cond", "subgraph fns"):  # tuned, written out and compiled with a switch off
                module, switch = (traced, "LOWERED") if name == "dynamo cond" else (inline_cond, "ENABLED")
                setattr(module, switch, False)
                try:
                    op = tuned(f"rdbench_lowered_{switch.lower()}", "cond")
                    fns[name] = checked(torch.compile(lambda a, b, op=op: op(a, b), dynamic=True))
                finally:
                    setattr(module, switch, True)
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
    if opts.layers:
        print("\nlayers, host us per call (medians; frame = call - compiled fn, AOT = compiled fn - Inductor's call)")
        print(f"{'M':>6} {'form':>12} {'call':>8} {'frame':>8} {'AOT':>8} {'Inductor':>9} {'call / bare':>12} "
              f"{'Inductor / bare':>16}")
        for m in sizes:
            a = torch.randn(m, n, device=device, dtype=dtype)
            parts: dict[str, Callable[..., Any]] = {}
            for name, fn in fns.items():
                graph, call = layers(fn, a, b)
                parts.update({name: lambda fn=fn: fn(a, b), f"{name}/graph": graph, f"{name}/call": call})
            runs = host_us_rounds(parts, device=device, calls=1000, rounds=opts.rounds)
            med = {k: statistics.median(v) for k, v in runs.items()}
            for name in fns:
                total, graph, call = med[name], med[f"{name}/graph"], med[f"{name}/call"]
                print(f"{m:>6} {name:>12} {total:>8.2f} {total - graph:>8.2f} {graph - call:>8.2f} {call:>9.2f} "
                      f"{paired_ratio(runs, name, 'bare'):>12.3f} {paired_ratio(runs, name + '/call', 'bare/call'):>16.3f}",
                      flush=True)


if __name__ == "__main__":
    main()
