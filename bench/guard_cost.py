"""How much of a compiled call's host time over a bare compile is Dynamo's guard evaluation.

The kmm op of ``compile_vs_upstream.py`` (64 x K @ K x 64, K tied between the operands,
dispatching on K), tuned eagerly, compiled (``dynamic=True``) in cond mode and in guards mode,
against ``torch.compile`` of its winner alone. Every form runs the same graph, so what differs
per call is the frame's guards. Host us per call (``host_us_rounds``: 31 interleaved rounds
of 200 calls, medians, and the paired ratios) with Dynamo's guards evaluated, then with
``torch.compiler.set_stance(skip_guard_eval_unsafe=True)`` (which skips them); ``lookup+``
is the guards-mode lookup alone over the bare compile's (``guard_eval_us``, best of repeats).

    python bench/guard_cost.py [--device cuda] 2>/dev/null
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
from contextlib import nullcontext
from pathlib import Path

import torch

import rangedispatch as rd
from compile_vs_upstream import (K_CANDS, K_SPLITS, SMALL, Scenario, gpu_warmup, guard_eval_us, host_us_rounds,
                                 paired_ratio, registered_op)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    opts = parser.parse_args()
    device = opts.device
    dtype = torch.bfloat16 if device == "cuda" else torch.float32
    gpu_warmup(device)
    sc = Scenario("kmm", K_CANDS, K_SPLITS, [256, 1000, 5000, 16384, 70000], lambda k: ((SMALL, k), (k, SMALL)),
                  {"tensor_name": "a", "dim": 1, "range_upper_bound": 262144}, {"b": 0})
    cond_op, guards_op = registered_op(sc, "rdbench_guard_cost_cond"), registered_op(sc, "rdbench_guard_cost_guards")
    cond = rd.dispatcher_of(cond_op)
    cond.tune(*sc.inputs(1000, device, dtype))
    with tempfile.TemporaryDirectory() as tmp:
        rd.dispatcher_of(guards_op).load_table(cond.save_table(Path(tmp) / "table.json"))
    rd.dispatcher_of(guards_op).compiled_dispatch = "guards"
    winner = cond._by_name[cond.table.partition.lookup(1000).owner].fn
    fns = {"cond": torch.compile(lambda a, b: cond_op(a, b), dynamic=True),
           "guards": torch.compile(lambda a, b: guards_op(a, b), dynamic=True),
           "bare": torch.compile(winner, dynamic=True)}
    for k in sc.sizes:
        for fn in fns.values():
            fn(*sc.inputs(k, device, dtype))
    print(f"torch {torch.__version__}, {torch.cuda.get_device_name() if device == 'cuda' else 'cpu'}, {dtype}, "
          f"winner {winner.__name__} at every size")
    print(f"{'K':>6} {'guards':>8} " + " ".join(f"{n + ' us':>10}" for n in fns)
          + f" {'cond/bare':>9} {'guards/bare':>11} {'lookup+':>7}")
    for k in (256, 1000, 16384):
        a, b = sc.inputs(k, device, dtype)
        lookup = guard_eval_us(fns["guards"], a, b) - guard_eval_us(fns["bare"], a, b)
        for skipped in (False, True):
            stance = torch.compiler.set_stance("default", skip_guard_eval_unsafe=True) if skipped else nullcontext()
            with stance:
                runs = host_us_rounds(fns, a, b, device=device, calls=200, rounds=31)
            med = {n: statistics.median(v) for n, v in runs.items()}
            print(f"{k:>6} {'skipped' if skipped else 'checked':>8} " + " ".join(f"{med[n]:10.2f}" for n in fns)
                  + f" {paired_ratio(runs, 'cond', 'bare'):9.3f} {paired_ratio(runs, 'guards', 'bare'):11.3f}"
                  + f" {lookup:7.2f}")


if __name__ == "__main__":
    main()
