"""A/A test of the tuner's decisions: candidates that run the very same kernel as the reference.

A copy of the reference can only win a range by noise, so every range a copy takes is a false
decision (a table that flips between runs, a ``torch.cond`` where one winner would do). Each
repetition tunes a fresh op (no cache) whose reference and three candidates all compute
``a @ b`` (``@``, ``torch.mm``, ``torch.matmul``: one cuBLAS call each; ``mm1`` and the
custom op are ``compile_vs_upstream``'s), in three forms:

* ``m``: ``@range_dispatch`` on M of ``(M, 4096) @ (4096, 4096)``, split points 256 / 4096;
* ``k``: ``@range_dispatch`` on K of ``(64, K) @ (K, 64)`` (K tied), split points 4096 / 65536;
* ``registered``: the ``m`` problem as a ``torch.library.custom_op`` after
  ``register_custom_op_autotuning`` (the reference is the custom op's own function).

Prints every table's dispatch line and, per form, the ranges the reference kept, the ranges a
copy took, and the largest advantage a copy showed over the reference (the geometric mean over
the range's samples of the reference's time over the copy's, minus 1: what the tuner compares
with its noise margin, at least 2%).

    python bench/aa_decisions.py [--reps 6] [--device cuda] [--forms m,k,registered]
"""

from __future__ import annotations

import argparse
import time

import torch

import rangedispatch as rd
from compile_vs_upstream import make_op, mm1


def mm_mm(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    return torch.mm(a, b)


def mm_matmul(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    return torch.matmul(a, b)


COPIES = (mm1, mm_mm, mm_matmul)


def problem(form: str, device: str) -> tuple[dict, tuple[tuple[int, int], tuple[int, int]]]:
    """The dispatch settings (``register_custom_op_autotuning``'s names) and the example
    shapes of a form."""
    n = 4096 if device == "cuda" else 256
    if form == "k":
        return (dict(dispatch_on={"tensor_name": "a", "dim": 1,
                                  "range_upper_bound": 262144 if device == "cuda" else 131072},
                     split_points=[4096, 65536], tie={"b": 0}), ((64, 1024), (1024, 64)))
    return (dict(dispatch_on={"tensor_name": "a", "dim": 0, "range_upper_bound": 16384}, split_points=[256, 4096]),
            ((64, n), (n, n)))


def fresh_op(form: str, rep: int, device: str):
    """A fresh op of the form with the three copies (no cache), and its dispatcher."""
    settings, _ = problem(form, device)
    if form == "registered":
        op = make_op(f"rdbench_aa::mm{rep}")
        rd.register_custom_op_autotuning(op, configs=[rd.CustomOpConfig(f) for f in COPIES], cache=False, **settings)
        return rd.dispatcher_of(op)

    def ref(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        return a @ b

    on = settings.pop("dispatch_on")
    ref = rd.range_dispatch(ref, dispatch_on=(on["tensor_name"], on["dim"]),
                            range_upper_bound=on["range_upper_bound"], cache=False, name=f"aa_{form}{rep}", **settings)
    for fn in COPIES:
        ref.register_impl(fn)
    return ref


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reps", type=int, default=6)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--forms", default="m,k,registered", help="the forms to run, in this order")
    opts = parser.parse_args()
    dtype = torch.bfloat16 if opts.device == "cuda" else torch.float32
    print(f"torch {torch.__version__}, "
          f"{torch.cuda.get_device_name() if opts.device == 'cuda' else 'cpu'}, {dtype}, {opts.reps} reps")
    summary = []  # a form may run twice (early and late in the run: the GPU's clocks change)
    for form in opts.forms.split(","):
        kept = taken = 0
        worst = 0.0  # the largest advantage of a copy over the reference, as the decision sees it
        for rep in range(opts.reps):
            op = fresh_op(form, rep, opts.device)
            example = [torch.randn(*shape, device=opts.device, dtype=dtype) for shape in problem(form, opts.device)[1]]
            t0 = time.perf_counter()
            table = op.tune(*example)
            for result in table.results:
                if result.winner == table.reference:
                    kept += 1
                else:
                    taken += 1
                ratios = [result.ratio(n, table.reference) for n in result.timings if n != table.reference]
                worst = max([worst] + [1 / r - 1 for r in ratios if 0 < r < float("inf")])
            print(f"{form:>10} rep {rep} ({time.perf_counter() - t0:4.1f} s): {table.format().splitlines()[-1]}")
            if taken:
                print(table.format())
        summary.append((form, kept, taken, worst))
    print(f"\n{'form':>10} {'kept':>5} {'taken':>6} {'largest copy advantage':>23}")
    for form, kept, taken, worst in summary:
        print(f"{form:>10} {kept:5d} {taken:6d} {worst:22.1%}")


if __name__ == "__main__":
    main()
