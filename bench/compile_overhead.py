"""Where our compiled call's per-call cost goes: our compiled op vs a bare ``torch.compile`` of
the same candidate, on the M-dispatch matmul of ``compile_vs_upstream.py`` at M=16 (host-bound).

Prints host time per call (a loop of calls with one sync) and ``do_bench`` device time, three
rounds each, then a ``torch.profiler`` CPU table of 20 calls of each (look at "TorchDynamo
Cache Lookup": guard evaluation).

    python bench/compile_overhead.py          # needs CUDA
"""

from __future__ import annotations

import torch
from torch.profiler import ProfilerActivity, profile

import rangedispatch as rd
from compile_vs_upstream import M_CANDS, device_ms, host_us, make_op


def main() -> None:
    ours = make_op("rdbench_overhead::mmm")
    rd.register_custom_op_autotuning(ours, configs=[rd.CustomOpConfig(f) for f in M_CANDS],
                                     dispatch_on={"tensor_name": "a", "dim": 0, "range_upper_bound": 16384},
                                     split_points=[256, 4096], cache=False)
    f = torch.compile(lambda a, b: ours(a, b), dynamic=True)
    g = torch.compile(lambda a, b: a @ b, dynamic=True)  # warmed with M=1 too, like ours
    h = torch.compile(lambda a, b: a @ b, dynamic=True)  # never saw M=1: one cache entry
    b = torch.randn(4096, 4096, device="cuda", dtype=torch.bfloat16)
    for m in [1, 16, 100]:
        a = torch.randn(m, 4096, device="cuda", dtype=torch.bfloat16)
        f(a, b)
        g(a, b)
    for m in [16, 100]:
        h(torch.randn(m, 4096, device="cuda", dtype=torch.bfloat16), b)
    a = torch.randn(16, 4096, device="cuda", dtype=torch.bfloat16)
    for _ in range(3):
        print("host us: ours %.1f  plain(1+dyn) %.1f  plain(dyn only) %.1f"
              % tuple(host_us(x, a, b, device="cuda") for x in (f, g, h)))
        print("dev ms: ours %.4f  plain %.4f  plain(dyn only) %.4f"
              % tuple(device_ms(x, a, b, device="cuda") for x in (f, g, h)))
    for name, fn in (("ours", f), ("plain", g)):
        with profile(activities=[ProfilerActivity.CPU]) as prof:
            for _ in range(20):
                fn(a, b)
            torch.cuda.synchronize()
        print(name)
        print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=14))


if __name__ == "__main__":
    main()
