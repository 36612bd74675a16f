"""One rank of the collective-tuning tests (run as a script, two processes, gloo).

Usage: python dist_worker.py RANK WORLD STORE_FILE OUT_JSON CACHE_ROOT

Every rank scripts different fake timings, so a table each rank tuned alone would differ:
rank 0 finds ``a`` faster everywhere, rank 1 finds ``b`` faster everywhere.
"""

import json
import sys
import warnings

import torch
import torch.distributed as dist

import rangedispatch as rd
from rangedispatch.testing import FakeBenchmarker

RANK, WORLD, STORE, OUT, CACHE = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3], sys.argv[4], sys.argv[5]
inf = float("inf")


def ref(x):
    return x * 2


def a(x):
    return x + x


def b(x):
    return torch.mul(x, 2)


def c(x):
    return 2 * x


def bench():
    fast, slow = ("a", "b") if RANK == 0 else ("b", "a")
    return FakeBenchmarker({"ref": 4.0, fast: 1.0, slow: 2.0})


class LostDevice(FakeBenchmarker):
    """A benchmarker whose device is lost after a few measurements."""

    def measure(self, jobs):
        if len(self.calls) > 4:
            raise RuntimeError("device lost while timing")
        return super().measure(jobs)


def one_dim(mode, extra=(), **kw):
    op = rd.range_dispatch(ref, dispatch_on=("x", 0), split_points=[8, 64, 512], benchmarker=kw.pop("benchmarker", bench()),
                           distributed=mode, **kw)
    for fn in (a, b, *extra):
        op.register_impl(fn)
    return op


def grid(mode):
    op = rd.range_dispatch(ref, dispatch_on=[("x", 0), ("x", 1)], split_points=[[8], [16]], benchmarker=bench(),
                           distributed=mode, cache=False)
    op.register_impl(a)
    op.register_impl(b)
    return op


def winners(op):
    return [r.winner for r in op.table.results]


def sizes(op):
    return sorted({str(s) for _, s in op.benchmarker.calls})


def main():
    dist.init_process_group("gloo", init_method=f"file://{STORE}", rank=RANK, world_size=WORLD)
    out = {}
    x = torch.randn(4, 3)
    for mode in ("broadcast", "split", "off"):
        op = one_dim(mode, cache=False)
        op(x)
        out[f"1d-{mode}"] = {"winners": winners(op), "sizes": sizes(op)}
        g = grid(mode)
        g(x)
        out[f"grid-{mode}"] = {"winners": winners(g), "sizes": sizes(g)}
    # a refined range comes back from its rank as its pieces: [65, 513) splits where 'b' takes over
    refine = rd.range_dispatch(ref, dispatch_on=("x", 0), split_points=[8, 64, 512], refine_splits=True, cache=False,
                               distributed="split", benchmarker=FakeBenchmarker(
                                   {"ref": 4.0, "a": lambda s: 1.0 if s < 200 else 3.0, "b": 2.0}))
    refine.register_impl(a)
    refine.register_impl(b)
    refine(x)
    out["refine-split"] = [[r.range.lo, r.range.hi, r.winner] for r in refine.table.results]
    # the ranks disagree on the candidates: every rank raises
    try:
        one_dim("broadcast", extra=(c,) if RANK == 1 else (), cache=False)(x)
        out["disagree"] = "no error"
    except rd.TuningError as exc:
        out["disagree"] = str(exc)
    # a rank fails while tuning (its device is lost mid-measurement): every rank raises, none hangs
    for mode, failing in (("split", 1), ("broadcast", 0)):
        try:
            bench_ = LostDevice({"ref": 4.0, "a": 1.0, "b": 2.0}) if RANK == failing else bench()
            one_dim(mode, benchmarker=bench_, cache=False)(x)
            out[f"fail-{mode}"] = "no error"
        except rd.TuningError as exc:
            out[f"fail-{mode}"] = str(exc)
    # each rank has its own cache directory; rank 0's cached table decides for both
    import os

    os.environ["RANGEDISPATCH_CACHE_DIR"] = os.path.join(CACHE, f"rank{RANK}")
    alone = one_dim("off")  # fills this rank's cache with its own choice
    alone(x)
    cached = one_dim("broadcast", benchmarker=FakeBenchmarker({}), cache="trust")  # unchecked: rank 0 decides
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        cached(x)
    out["cache"] = {"alone": winners(alone), "winners": winners(cached), "benchmarked": len(cached.benchmarker.calls)}
    dist.barrier()
    dist.destroy_process_group()
    with open(OUT, "w") as fh:
        json.dump(out, fh)


if __name__ == "__main__":
    main()
