"""The dispatched op under CUDA graphs, against the same graphs of the per-size best candidate.

Per workload (causal attention b4 h16 d128 bf16 over the sequence length, reference PyTorch's
default SDPA, candidates flash / efficient / cuDNN; split-K over K) and size bucket:

* manual capture: ``torch.cuda.graph`` of one call of the tuned op, and of each candidate alone;
  device time per replay (``rangedispatch.timing.device_time_ms`` of ``graph.replay``, least of 3
  interleaved medians);
* ``torch.compile(mode="reduce-overhead")`` of the op and of the per-size best candidate, same
  timing (cudagraph trees replay each; their host work per call is hidden by the covered loop, so
  the columns compare device time).

The op is tuned before any capture (``benchmark_with_cudagraphs=True``: candidates timed as graph
replays), so nothing is timed or tuned inside a capture. Columns: ours / best captured
candidate, both ways. Needs CUDA.

    python bench/cuda_graphs.py [--only attention splitk] [--buckets]

``--buckets``: the op's ranges are the capture sizes, ``(previous, size]``, each tuned at its
size (``op.tune(..., profile=SizeProfile({size: 1 ...}))``), as a server that pads a batch up to
its bucket's captured graph would set it up.
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import rangedispatch as rd  # noqa: E402
from compile_vs_upstream import gpu_warmup, interleaved_ms  # noqa: E402
from decision_quality import attention_inputs, attention_op, splitk_inputs, splitk_op  # noqa: E402

WORKLOADS = {
    "attention": (lambda splits: attention_op("default", splits or [128, 512, 2048]), attention_inputs,
                  [32, 128, 300, 1024, 4096]),
    "splitk": (lambda splits: splitk_op(splits or [8192, 65536]), splitk_inputs, [1024, 8192, 32768, 131072]),
}


def capture(fn, args) -> torch.cuda.CUDAGraph:
    stream = torch.cuda.Stream()
    stream.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(stream):
        for _ in range(2):
            fn(*args)
    torch.cuda.current_stream().wait_stream(stream)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        fn(*args)
    return graph


def run(name: str, buckets: bool = False) -> list[str]:
    make_op, make_inputs, sizes = WORKLOADS[name]
    # buckets: one range per capture size, (previous size, size], tuned at the size itself (a
    # profile with traffic only there), as a server padding each batch up to its bucket runs it
    op = make_op(sizes if buckets else None)
    disp = rd.dispatcher_of(op)
    disp.settings = dataclasses.replace(disp.settings, cuda_graphs=True)  # benchmark_with_cudagraphs=True
    op.tune(*make_inputs(sizes[len(sizes) // 2]), profile=rd.SizeProfile({n: 1 for n in sizes}) if buckets else None)
    cands = {c: disp._by_name[c].fn for c in disp.candidates}
    ro_ours = torch.compile(op, mode="reduce-overhead")
    lines = [f"\n{name}{' (one range per bucket)' if buckets else ''}: {torch.cuda.get_device_name()}, "
             f"torch {torch.__version__}",
             f"{'size':>8} {'pick':>20} {'graph best':>20} {'ours ms':>9} {'best ms':>9} {'ratio':>6} "
             f"{'ours RO':>9} {'best RO':>9} {'ratio':>6}"]
    ratios, ro_ratios = [], []
    for n in sizes:
        args = make_inputs(n)
        graphs = {}
        for c, fn in cands.items():
            try:
                graphs[c] = capture(fn, args)
            except Exception:  # a candidate that cannot run or be captured at this size
                torch.cuda.synchronize()
        graphs["ours"] = capture(op, args)
        times = interleaved_ms({name: g.replay for name, g in graphs.items()}, device="cuda", rounds=5)
        ours = times.pop("ours")
        best = min(times, key=times.get)
        ro_best = torch.compile(cands[best], mode="reduce-overhead")
        ro = interleaved_ms({"ours": ro_ours, "best": ro_best}, *args, device="cuda")
        torch.testing.assert_close(ro_ours(*args), cands[best](*args), rtol=2e-2, atol=2e-2)
        pick = disp.table.partition.lookup(n).owner or disp.table.reference
        ratios.append(ours / times[best])
        ro_ratios.append(ro["ours"] / ro["best"])
        lines.append(f"{n:>8} {pick:>20} {best:>20} {ours:9.4f} {times[best]:9.4f} {ratios[-1]:6.3f} "
                     f"{ro['ours']:9.4f} {ro['best']:9.4f} {ro_ratios[-1]:6.3f}")
    g = lambda xs: math.exp(sum(map(math.log, xs)) / len(xs))  # noqa: E731
    lines.append(f"geomean ours/best: captured {g(ratios):.3f}, reduce-overhead {g(ro_ratios):.3f}")
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", nargs="*", choices=sorted(WORKLOADS))
    parser.add_argument("--buckets", action="store_true",
                        help="one range per capture size, tuned at that size (instead of the fixed split points)")
    opts = parser.parse_args()
    gpu_warmup("cuda")
    for name in opts.only or sorted(WORKLOADS):
        print("\n".join(run(name, opts.buckets)), flush=True)


if __name__ == "__main__":
    main()
