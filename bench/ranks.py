"""Rank-consistent tables on a real op: two processes tune bench/grid.py's attention grid op.

Each rank tunes the op three times with real GPU timing: alone (``distributed="off"``), with
``"broadcast"`` and with ``"split"``. The table per rank and mode is printed, with whether the
ranks agree. The process group uses gloo and both ranks share one GPU by default, so the near
ties of this op (see docs/benchmarks.md) can fall either way on different ranks when they tune
alone. Use ``--backend nccl`` on a machine with a GPU per rank.

    python bench/ranks.py [--backend gloo|nccl] [--quick]
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from pathlib import Path

import torch
import torch.distributed as dist
import torch.multiprocessing as mp

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import rangedispatch as rd  # noqa: E402
from grid import attention_workload  # noqa: E402


def rank_main(rank: int, world: int, store: str, backend: str, quick: bool) -> None:
    device = rank % torch.cuda.device_count() if backend == "nccl" else 0
    torch.cuda.set_device(device)
    dist.init_process_group(backend, init_method=f"file://{store}", rank=rank, world_size=world)
    for mode in ("off", "broadcast", "split"):
        op, inputs, example, points = attention_workload(quick, torch.bfloat16)
        op.distributed = mode
        op.tune(*example)
        mine = op.table.tree(gaps="gap")
        everyone: list = [None] * world
        dist.all_gather_object(everyone, mine)
        identical = 0
        for point in points:  # the same inputs on every rank: the outputs must be bit-identical
            torch.manual_seed(sum(point))
            y = op(*inputs(*point)).contiguous()
            y = y if backend == "nccl" else y.cpu()
            ys = [torch.empty_like(y) for _ in range(world)]
            dist.all_gather(ys, y)
            identical += all(torch.equal(ys[0], other) for other in ys[1:])
        if rank == 0:
            agree = all(t == everyone[0] for t in everyone)
            print(f"{mode:>9}: tables agree: {agree}; dispatched outputs bit-identical at {identical} of "
                  f"{len(points)} points")
            for r, tree in enumerate(everyone):
                print(f"           rank {r}: {rd.ranges.describe_tree(tree, ['batch', 'seq'])}")
    dist.barrier()
    dist.destroy_process_group()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backend", default="gloo", choices=["gloo", "nccl"])
    parser.add_argument("--world", type=int, default=2)
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    if not torch.cuda.is_available():
        raise SystemExit("bench/ranks.py needs a CUDA device")
    with tempfile.TemporaryDirectory() as tmp:
        mp.spawn(rank_main, args=(args.world, os.path.join(tmp, "store"), args.backend, args.quick),
                 nprocs=args.world, join=True)


if __name__ == "__main__":
    main()
