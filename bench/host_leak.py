"""Host work leaking into CUDA-event timing: why the core covers host-heavy calls.

Per attention candidate (causal b4 h16 d128 bf16; the SDPA backends behind ``sdpa_kernel``, the
default SDPA call, the math backend) and sequence length: the host's time to issue one call
(back-to-back calls, one sync), then 5 rounds of 2 ms each timed two ways, as the tuner times a
round: ``triton.testing.do_bench`` (L2 flush before each call, events around it) and the core's
covered loop (the flush, a GPU spin longer than the call's host work, then the events). A call
whose host work is about the flush's length gives ``do_bench`` rounds that swing between the
kernel and the host; the covered rounds stay on the kernel. Needs CUDA.

    python bench/host_leak.py [--seqs 1 128]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from decision_quality import _sdpa, attention_inputs  # noqa: E402
from rangedispatch.measure.timing import keep_gpu_busy  # noqa: E402
from rangedispatch.measure.timing import _device_constants, covered_batch, issue_ms  # noqa: E402


def default(q, k, v):
    return torch.nn.functional.scaled_dot_product_attention(q, k, v, is_causal=True)


def host_us(fn, calls: int = 200) -> float:
    for _ in range(10):
        fn()
    torch.cuda.synchronize()
    t0 = time.perf_counter()
    for _ in range(calls):
        fn()
    host = (time.perf_counter() - t0) / calls * 1e6
    torch.cuda.synchronize()
    return host


def main() -> None:
    from triton.testing import do_bench

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seqs", type=int, nargs="+", default=[1, 128])
    parser.add_argument("--rounds", type=int, default=5)
    opts = parser.parse_args()
    keep_gpu_busy(500)
    flush = _device_constants().flush_ms * 1e3
    print(f"{torch.cuda.get_device_name()}, torch {torch.__version__}; L2 flush {flush:.1f} us")
    print(f"{'seq':>4} {'candidate':>20} {'host us':>8}  {'do_bench round medians (us)':<36} {'covered round medians (us)':<36}")
    fns = [_sdpa("FLASH_ATTENTION"), _sdpa("EFFICIENT_ATTENTION"), default, _sdpa("MATH")]
    for seq in opts.seqs:
        args = attention_inputs(seq)
        for fn in fns:
            call = lambda fn=fn: fn(*args)  # noqa: E731
            host = host_us(call)
            bench, covered = [], []
            for _ in range(opts.rounds):  # interleaved, as the core's rounds are
                bench.append(statistics.median(do_bench(call, warmup=0, rep=2, return_mode="all")) * 1e3)
                covered.append(statistics.median(covered_batch(call, 2.0, issue_ms(call))) * 1e3)
            fmt = lambda ts: " ".join(f"{t:6.1f}" for t in ts)  # noqa: E731
            print(f"{seq:4d} {fn.__name__:>20} {host:8.1f}  {fmt(bench):<36} {fmt(covered):<36}")


if __name__ == "__main__":
    main()
