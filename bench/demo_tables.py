"""Do fresh tunings of the demo agree? The tables ``split_points="auto"`` builds for the
``rangedispatch demo`` op (a prefix sum whose fastest candidate changes twice with the row
count), tuned ``--tunings`` times on this machine.

Reported: how many tables have a winner that comes back after another's range (a zigzag:
``[1, 22) prefix_sum | [22, 23) triangular_matmul | [23, 26) prefix_sum | ...``; the demo's
candidates cross over only twice, so every such table is the search's noise, not the
machine's), how many ranges the tables have, and the most common tables. Real kernels on a
shared machine: the counts move a little from run to run.

    python bench/demo_tables.py                     # 100 tunings on CUDA if available, else the CPU
    python bench/demo_tables.py --tunings 40 --device cpu
"""

from __future__ import annotations

import argparse
import collections
import time
import warnings

import torch

from rangedispatch.demo import build_prefix_sum_op


def comes_back(winners: list[str]) -> bool:
    """Whether a winner holds a range after another winner's range (``a, b, a``).

    Example:
        >>> comes_back(["p", "t", "b"]), comes_back(["p", "t", "p", "t", "b"])
        (False, True)
    """
    return any(w in winners[:i - 1] for i, w in enumerate(winners) if i and winners[i - 1] != w)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tunings", type=int, default=100)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--width", type=int, default=512)
    parser.add_argument("--upper", type=int, default=4096)
    opts = parser.parse_args()
    began = time.perf_counter()
    tables = collections.Counter()
    example = torch.randn(64, opts.width, device=opts.device)
    for _ in range(opts.tunings):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            table = build_prefix_sum_op(upper=opts.upper).tune(example, force=True)
        tables[tuple((r.range.lo, r.winner) for r in table.results)] += 1
    zigzags = sum(n for t, n in tables.items() if comes_back([w for _, w in t]))
    sizes = collections.Counter({len(t): 0 for t in tables})
    for t, n in tables.items():
        sizes[len(t)] += n
    device = torch.cuda.get_device_name() if opts.device == "cuda" else "CPU"
    print(f"demo tables | {device} | torch {torch.__version__} | {opts.tunings} tunings in "
          f"{time.perf_counter() - began:.0f} s")
    print(f"a winner comes back (zigzag): {zigzags} of {opts.tunings}")
    print("ranges per table: " + ", ".join(f"{k}: {v}" for k, v in sorted(sizes.items())))
    print("most common tables (first size of each range: winner):")
    for t, n in tables.most_common(5):
        print(f"  {n:4d}  " + " | ".join(f"{lo}: {w}" for lo, w in t))


if __name__ == "__main__":
    main()
