"""Automatic split points on workloads nobody tuned for: random cost curves, timed by a script.

Each workload is a reference and two candidates whose cost in ms is a random curve of the
dispatch size, all of one family:

* ``affine``: ``c0 + c1 * s`` (a launch cost and a per-row cost);
* ``power``: ``c0 + c1 * s ** p`` with ``p`` in [0.6, 1.6] (sub- and super-linear kernels);
* ``pipeline``: ``k * 5 us + c1 * s``, ``k`` = 1-5 launches (launch-bound candidates);
* ``tiled``: ``c0 + c1 * ceil(s / T) * T`` with a tile ``T`` of 16-256 per candidate (every
  candidate falls off a cliff at its own tile multiples: a saw-tooth no finite table follows
  exactly).

(:func:`rangedispatch.testing.cost_curves`.) The reference's curve is scaled by 1.3, so it is
not always the best. The fake benchmarker returns the curve's value with lognormal noise
(``--sigma`` per sample, five samples a measurement, seeded), the op tunes with ``split_points="auto"`` over ``[1, 8192]``, and its table is scored on the
noise-free curves at 208 log-spaced sizes: geomean and worst of time(table's choice) /
time(per-size best). The timing is scripted (no kernel runs): this measures the search's
decisions under noise, not speed.

    python bench/random_curves.py [--workloads 150] [--reps 3] [--sigma 0.02] [--families affine power]
"""

from __future__ import annotations

import argparse
import logging
import math
import random
import statistics
import time
import warnings

import torch

import rangedispatch as rd
from rangedispatch.testing import COST_FAMILIES, FakeBenchmarker, cost_curves

SIZES = sorted({round(2 ** (i / 16)) for i in range(13 * 16 + 1)})  # 1 .. 8192


def workload(family: str, seed: int) -> dict:
    return cost_curves(family, random.Random(f"{family}-{seed}"))


def score(curves: dict, sigma: float, seed: int) -> tuple[float, float, int]:
    """Tune an auto op over ``curves``; its geomean and worst loss, and benchmarks spent."""
    def ref(x):
        return x * 2

    op = rd.range_dispatch(ref, dispatch_on=("x", 0), split_points="auto", range_upper_bound=8192,
                           benchmarker=FakeBenchmarker(curves, noise=sigma, seed=seed), cache=False,
                           name="random_curves")
    op.register_impl(lambda x: x + x, name="a")
    op.register_impl(lambda x: 2 * x, name="b")
    op.tune(torch.randn(64))
    losses = [curves[op.table.partition.lookup(s).owner or "ref"](s) / min(f(s) for f in curves.values())
              for s in SIZES]
    return math.exp(statistics.fmean(map(math.log, losses))), max(losses), op.table.settings["benchmarks"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workloads", type=int, default=150, help="random workloads per family")
    parser.add_argument("--reps", type=int, default=3, help="tunings per workload (other noise)")
    parser.add_argument("--sigma", type=float, default=0.02, help="relative noise per sample")
    parser.add_argument("--families", nargs="*", choices=COST_FAMILIES, default=list(COST_FAMILIES))
    opts = parser.parse_args()
    logging.disable(logging.WARNING)
    warnings.simplefilter("ignore")
    began = time.perf_counter()
    print(f"torch {torch.__version__}, sigma {opts.sigma}, {opts.workloads} workloads x {opts.reps} tunings per family")
    print(f"{'family':9s} {'tunings':>7s} {'max geomean':>11s} {'worst > 1.05':>12s} {'worst > 1.10':>12s} "
          f"{'worst > 1.25':>12s} {'max worst':>9s} {'benchmarks':>10s}")
    for family in opts.families:
        rows = [score(workload(family, w), opts.sigma, w * 1000 + r)
                for w in range(opts.workloads) for r in range(opts.reps)]
        geo, worst, spent = zip(*rows)
        print(f"{family:9s} {len(rows):7d} {max(geo):11.4f} {sum(w > 1.05 for w in worst):12d} "
              f"{sum(w > 1.10 for w in worst):12d} {sum(w > 1.25 for w in worst):12d} {max(worst):9.3f} "
              f"{statistics.fmean(spent):10.1f}")
    print(f"({time.perf_counter() - began:.0f} s)")


if __name__ == "__main__":
    main()
