"""Grid ops on the GPU: ops whose best kernel flips with two sizes at once.

Workloads (``--workload``):

* ``attention``: causal attention, ``q, k, v`` of shape (batch, 16 heads, seq, 128), bf16,
  dispatched on (batch, seq) over the SDPA backends (flash, efficient, cuDNN; the reference
  is PyTorch's default choice).
* ``splitk``: a matmul with a narrow output (N = 64) on (M, K): plain ``a @ b`` against
  split-K (batched chunks, then a sum) in 4, 16 and 64 parts.

Per test point, side by side in interleaved rounds, we time:

* ``ours``: the grid op, eagerly;
* ``best``: the fastest candidate at that point, called directly (the per-point oracle);
* ``ref``: the reference, called directly;
* ``ours compiled``: the grid op inside ``torch.compile(dynamic=True)``; one graph serves the
  whole sweep (the frame count is printed), against the per-point best of the candidates
  compiled the same way.

    python bench/grid.py [--workload attention|splitk] [--quick]
"""

from __future__ import annotations

import argparse
import math
import statistics
import sys
import time
from pathlib import Path

import torch
import torch._dynamo.testing
import torch.fx.experimental._config

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import rangedispatch as rd  # noqa: E402
from compile_vs_upstream import gpu_warmup, interleaved_ms  # noqa: E402
from decision_quality import _sdpa, _splitk  # noqa: E402

N = 64


def mm(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    return a @ b


def default(q, k, v):
    return torch.nn.functional.scaled_dot_product_attention(q, k, v, is_causal=True)


def _grid_op(reference, candidates, dispatch_on, split_points, name):
    op = rd.range_dispatch(reference, dispatch_on=dispatch_on, split_points=split_points, cache=False, name=name)
    for cand in candidates:
        op.register_impl(cand, name=cand.__name__)
    return op


def splitk_workload(quick: bool, dtype: torch.dtype):
    ks = [2048, 16384, 65536, 200000] if not quick else [2048, 65536]
    dispatch_on = [{"tensor_name": "a", "dim": 0},
                   {"tensor_name": "a", "dim": 1, "tie": {"b": 0}, "range_upper_bound": max(ks)}]
    op = _grid_op(mm, [_splitk(p) for p in (4, 16, 64)], dispatch_on, [[128, 1024], [8192, 65536]], "grid_mm")

    def inputs(m: int, k: int):
        return (torch.randn(m, k, device="cuda", dtype=dtype), torch.randn(k, N, device="cuda", dtype=dtype))

    points = [(m, k) for m in ([16, 64, 256, 1024, 4096] if not quick else [16, 1024]) for k in ks]
    return op, inputs, inputs(32, 4096), points


def attention_workload(quick: bool, dtype: torch.dtype):
    seqs = [128, 512, 2048, 8192] if not quick else [256, 4096]
    dispatch_on = [{"tensor_name": "q", "dim": 0, "tie": {"k": 0, "v": 0}, "range_upper_bound": 32},
                   {"tensor_name": "q", "dim": 2, "tie": {"k": 2, "v": 2}, "range_upper_bound": max(seqs)}]
    backends = [_sdpa(b) for b in ("FLASH_ATTENTION", "EFFICIENT_ATTENTION", "CUDNN_ATTENTION")]
    op = _grid_op(default, backends, dispatch_on, [[2, 8], [256, 1024, 4096]], "grid_attention")

    def inputs(b: int, s: int):
        return tuple(torch.randn(b, 16, s, 128, device="cuda", dtype=dtype) for _ in range(3))

    points = [(b, s) for b in ([1, 4, 16] if not quick else [1, 16]) for s in seqs]
    return op, inputs, inputs(4, 1024), points


WORKLOADS = {"attention": attention_workload, "splitk": splitk_workload}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workload", default="attention", choices=sorted(WORKLOADS))
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    if not torch.cuda.is_available():
        raise SystemExit("bench/grid.py needs a CUDA device")
    dtype = torch.bfloat16
    # no duck sizing (seq 128 would be tied to head_dim 128, batch 16 to the 16 heads), and
    # room for the candidates' compiles: the SDPA backends share one code object
    torch.fx.experimental._config.use_duck_shape = False
    torch._dynamo.config.recompile_limit = 64
    op, inputs, example, points = WORKLOADS[args.workload](args.quick, dtype)
    gpu_warmup("cuda")
    t0 = time.perf_counter()
    op.tune(*example)
    tune_s = time.perf_counter() - t0
    print(op.table.format())
    print(f"tuning: {tune_s:.1f} s for {len(op.table.results)} cells")
    candidates = {name: cand.call for name, cand in op.candidates.items()}
    counter = torch._dynamo.testing.CompileCounterWithBackend("inductor")
    compiled = torch.compile(op, backend=counter, dynamic=True)
    compiled_cands = {name: torch.compile(fn, dynamic=True) for name, fn in candidates.items()}
    reference = op.table.reference
    rows = []
    for point in points:
        call = inputs(*point)
        fns = {"ours": lambda: op(*call), "ours compiled": lambda: compiled(*call),
               **{name: (lambda f=fn: f(*call)) for name, fn in candidates.items()},
               **{f"{name} compiled": (lambda f=fn: f(*call)) for name, fn in compiled_cands.items()}}
        for fn in fns.values():  # compile and warm outside the timing
            fn()
        torch.cuda.synchronize()
        times = interleaved_ms(fns, device="cuda", rounds=args.rounds)
        best = min(candidates, key=lambda n: times[n])
        best_c = min(candidates, key=lambda n: times[f"{n} compiled"])
        found = op.table.result_for(point)
        chosen = found.winner if found is not None else reference
        rows.append((point, chosen, best, times["ours"] / times[best], times["ours"] / times[reference],
                     times["ours compiled"] / times[f"{best_c} compiled"], times[best]))
    print(f"\n{op.name}, {str(dtype).replace('torch.', '')}, {torch.cuda.get_device_name()}, torch {torch.__version__}; "
          f"ratios of median device times (least of {args.rounds} interleaved rounds)")
    print(f"{'point':>14} {'chosen':>20} {'best':>20} {'ours/best':>9} {'ours/ref':>8} {'compiled/best':>13} {'best ms':>8}")
    for point, chosen, best, r_best, r_ref, r_c, t in rows:
        print(f"{str(point):>14} {chosen:>20} {best:>20} {r_best:>9.3f} {r_ref:>8.3f} {r_c:>13.3f} {t:>8.4f}")
    geo = lambda xs: math.exp(statistics.fmean(math.log(x) for x in xs))  # noqa: E731
    print(f"geomean: ours/best {geo([r[3] for r in rows]):.3f} (worst {max(r[3] for r in rows):.3f}), "
          f"ours/ref {geo([r[4] for r in rows]):.3f}, compiled ours/best compiled {geo([r[5] for r in rows]):.3f} "
          f"(worst {max(r[5] for r in rows):.3f})")
    print(f"compiled frames over the {len(rows)}-point sweep: {counter.frame_count}")


if __name__ == "__main__":
    main()
