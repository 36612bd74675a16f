"""Multi-kernel dispatch over size-hinted compiles: ours (benchmark and nearest policies) vs a
single compile primed at one hint, the per-shape best variant, and upstream Inductor's
``multi_kernel_hints`` where the installed torch has it.

The op is seed 003's ``x * 2.0 + y.sin()`` followed by a row softmax (a reduction whose
Inductor kernel choice depends on the size hints). Variants: one ``torch.compile`` per hint
(each primed at its hint) plus eager PyTorch as a library variant. The sweep mixes the hints,
sizes between them and non-power-of-two shapes (seed 003's 1500x750).

    python bench/multi_kernel.py [--device cuda] [--quick]
"""

from __future__ import annotations

import argparse
import math
import os
import shutil
import tempfile

import torch

import rangedispatch as rd
from compile_vs_upstream import device_ms as timeit  # same timing as the compile benchmark

HINTS = [[1024, 512], [4096, 2048], [256, 8192]]
SHAPES = [(1024, 512), (4096, 2048), (256, 8192), (1500, 750), (2000, 1000), (3000, 3000), (700, 300),
          (8192, 1024), (512, 4096), (6000, 1500)]


def f(x, y):
    return (x * 2.0 + y.sin()).softmax(-1)


def eager(x, y):
    return f(x, y)


def geomean(values):
    return math.exp(sum(math.log(v) for v in values) / len(values))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--quick", action="store_true")
    opts = parser.parse_args()
    device = opts.device
    dtype = torch.bfloat16 if device == "cuda" else torch.float32
    shapes = SHAPES[:4] if opts.quick else SHAPES
    hints = HINTS[:2] if opts.quick else HINTS
    make = lambda h: (torch.randn(*h, device=device, dtype=dtype), torch.randn(*h, device=device, dtype=dtype))  # noqa: E731
    sizes = lambda x, y: tuple(x.shape)  # noqa: E731

    compiled = rd.MultiKernel.compiled(f, hints, make, name="softmax_mk", cache=False, sizes=sizes)
    variants = list(compiled.variants) + [rd.Variant(eager, tuple(hints[0]), name="eager")]
    ours_bench = rd.MultiKernel(variants, policy="benchmark", sizes=sizes, cache=False, name="mk_bench")
    ours_near = rd.MultiKernel(list(compiled.variants), policy="nearest", sizes=sizes, cache=False, name="mk_near")
    single = compiled.variants[0].fn  # one compile primed at the first hint

    upstream = None
    try:
        import torch._inductor.config as inductor_config

        if hasattr(inductor_config.triton, "multi_kernel_hints") and device == "cuda":
            cache = tempfile.mkdtemp(prefix="rd-inductor-")
            os.environ["TORCHINDUCTOR_CACHE_DIR"] = cache  # upstream crashed once on a warm cache
            torch._dynamo.reset()
            with inductor_config.patch({"triton.multi_kernel": 1, "triton.multi_kernel_hints": [h[0] for h in hints]}):
                up = torch.compile(lambda x, y: f(x, y), dynamic=True)
                up(*make(hints[0]))
            upstream = up
    except Exception as exc:  # not in this torch, or failing
        print(f"upstream multi_kernel_hints unavailable: {type(exc).__name__}: {str(exc).splitlines()[0][:120]}")

    rows = []
    for shape in shapes:
        x, y = make(shape)
        ref = f(x.float(), y.float())
        for fn in (ours_bench, ours_near):
            torch.testing.assert_close(fn(x, y).float(), ref, rtol=2e-2, atol=2e-2)
        per_variant = {v.name: timeit(v.fn, x, y, device=device) for v in variants}
        best_name, best = min(per_variant.items(), key=lambda p: p[1])
        row = {
            "shape": shape, "single": timeit(single, x, y, device=device),
            "bench": timeit(ours_bench, x, y, device=device), "near": timeit(ours_near, x, y, device=device),
            "best": best, "best_name": best_name, "pick_bench": ours_bench.select(x, y).name,
            "pick_near": ours_near.select(x, y).name,
            "up": timeit(upstream, x, y, device=device) if upstream is not None else float("nan"),
        }
        rows.append(row)
    print(f"\n{torch.cuda.get_device_name() if device == 'cuda' else 'cpu'}, torch {torch.__version__}, {dtype}, "
          f"hints {hints}; times in ms, speedups over the single compile primed at {hints[0]}")
    print(f"{'shape':>12} {'single':>8} {'bench':>8} {'nearest':>8} {'best':>8} {'upstream':>9} "
          f"{'bench x':>8} {'near x':>7} {'near/bench':>10}  picks (bench | nearest | best)")
    for r in rows:
        print(f"{'x'.join(map(str, r['shape'])):>12} {r['single']:8.4f} {r['bench']:8.4f} {r['near']:8.4f} "
              f"{r['best']:8.4f} {r['up']:9.4f} {r['single'] / r['bench']:8.3f} {r['single'] / r['near']:7.3f} "
              f"{r['bench'] / r['near']:10.3f}  {r['pick_bench']} | {r['pick_near']} | {r['best_name']}")
    gb = geomean([r["single"] / r["bench"] for r in rows])
    gn = geomean([r["single"] / r["near"] for r in rows])
    print(f"geomean speedup over the single compile: benchmark {gb:.3f}, nearest {gn:.3f}; "
          f"best case benchmark {max(r['single'] / r['bench'] for r in rows):.3f}, "
          f"nearest {max(r['single'] / r['near'] for r in rows):.3f}; nearest / benchmark throughput "
          f"{geomean([r['bench'] / r['near'] for r in rows]):.3f}")
    print(f"stats: benchmark {ours_bench.stats()}\n       nearest {ours_near.stats()}")
    if upstream is not None:
        shutil.rmtree(os.environ["TORCHINDUCTOR_CACHE_DIR"], ignore_errors=True)


if __name__ == "__main__":
    main()
