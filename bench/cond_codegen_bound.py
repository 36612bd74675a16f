"""What Inductor's cond costs per call, and what other code for it could cost: hand-written
copies of the ``call`` Inductor 2.11 generates on CUDA for the two-winner cmm op of
``compile_vs_upstream.py`` (M x 4096 @ 4096 x 4096, bf16, split at M = 4096), run directly with
its inputs at M = 100, so only the generated code's host time differs:

* ``bare``: the bare compile of the winner (mm into a fresh buffer);
* ``lowered``: the cond as Inductor writes it, each branch a subgraph function that checks its
  inputs again and enters the device guard a second time, then the output checked;
* ``inline``: the branches written inline with one device guard, the output still checked;
* ``inline_noassert``: the same without the output checks: the shape of the code Inductor now
  writes for a table's lowered op (``rangedispatch.inline_cond``), less its few assignments.

Three runs of 21 interleaved rounds of 2000 calls; host us per call (median) and, in
parentheses, the paired ratio over ``bare``. CUDA only.

    cd bench && python cond_codegen_bound.py
"""

from __future__ import annotations

import statistics
import sys

import torch
from torch._inductor.select_algorithm import extern_kernels

from compile_vs_upstream import gpu_warmup, host_us_rounds, paired_ratio

assert_size_stride = torch._C._dynamo.guards.assert_size_stride
assert_alignment = torch._C._dynamo.guards.assert_alignment
empty_strided_cuda = torch._C._dynamo.guards._empty_strided_cuda
DT = torch.bfloat16
# The functions below repeat themselves on purpose: each is a copy of code Inductor writes (its
# branches alike), and what is timed is that code as written.


def bare(args):
    arg0_1, arg1_1, arg2_1, arg3_1 = args
    args.clear()
    s97 = arg0_1
    s98 = arg1_1
    assert_size_stride(arg2_1, (s97, s98), (s98, 1))
    assert_size_stride(arg3_1, (s98, s98), (s98, 1))
    with torch.cuda._DeviceGuard(0):
        torch.cuda.set_device(0)
        buf0 = empty_strided_cuda((s97, s98), (s98, 1), DT)
        extern_kernels.mm(arg2_1, arg3_1, out=buf0)
        del arg2_1
        del arg3_1
    return (buf0, )


def true_graph_0(args):
    true_graph_0_arg0_1, true_graph_0_arg1_1 = args
    args.clear()
    true_graph_0_arg0_1_size = true_graph_0_arg0_1.size()
    s97 = true_graph_0_arg0_1_size[0]
    s98 = true_graph_0_arg0_1_size[1]
    assert_size_stride(true_graph_0_arg0_1, (s97, s98), (s98, 1))
    assert_size_stride(true_graph_0_arg1_1, (s98, s98), (s98, 1))
    with torch.cuda._DeviceGuard(0):
        torch.cuda.set_device(0)
        true_graph_0_buf0 = empty_strided_cuda((s97, s98), (s98, 1), DT)
        extern_kernels.mm(true_graph_0_arg0_1, true_graph_0_arg1_1, out=true_graph_0_buf0)
        del true_graph_0_arg0_1
        del true_graph_0_arg1_1
    return (true_graph_0_buf0, )


false_graph_0 = true_graph_0


def lowered(args):
    arg0_1, arg1_1, arg2_1, arg3_1 = args
    args.clear()
    s97 = arg0_1
    s98 = arg1_1
    assert_size_stride(arg2_1, (s97, s98), (s98, 1))
    assert_size_stride(arg3_1, (s98, s98), (s98, 1))
    with torch.cuda._DeviceGuard(0):
        torch.cuda.set_device(0)
        buf0 = [None] * 1
        if s97 < 4096:
            true_graph_0_args = [arg2_1, arg3_1]
            del arg2_1
            del arg3_1
            buf0 = true_graph_0(true_graph_0_args)
        else:
            false_graph_0_args = [arg2_1, arg3_1]
            buf0 = false_graph_0(false_graph_0_args)
        buf1 = buf0[0]
        assert_size_stride(buf1, (s97, s98), (s98, 1), 'torch.ops.cond')
        assert_alignment(buf1, 16, 'torch.ops.cond')
        del buf0
    return (buf1, )


def inline(args):
    arg0_1, arg1_1, arg2_1, arg3_1 = args
    args.clear()
    s97 = arg0_1
    s98 = arg1_1
    assert_size_stride(arg2_1, (s97, s98), (s98, 1))
    assert_size_stride(arg3_1, (s98, s98), (s98, 1))
    with torch.cuda._DeviceGuard(0):
        torch.cuda.set_device(0)
        buf0 = [None] * 1
        if s97 < 4096:
            t_buf0 = empty_strided_cuda((s97, s98), (s98, 1), DT)
            extern_kernels.mm(arg2_1, arg3_1, out=t_buf0)
            buf0[0] = t_buf0
        else:
            f_buf0 = empty_strided_cuda((s97, s98), (s98, 1), DT)
            extern_kernels.mm(arg2_1, arg3_1, out=f_buf0)
            buf0[0] = f_buf0
        buf1 = buf0[0]
        assert_size_stride(buf1, (s97, s98), (s98, 1), 'torch.ops.cond')
        assert_alignment(buf1, 16, 'torch.ops.cond')
        del buf0
    return (buf1, )


def inline_noassert(args):
    arg0_1, arg1_1, arg2_1, arg3_1 = args
    args.clear()
    s97 = arg0_1
    s98 = arg1_1
    assert_size_stride(arg2_1, (s97, s98), (s98, 1))
    assert_size_stride(arg3_1, (s98, s98), (s98, 1))
    with torch.cuda._DeviceGuard(0):
        torch.cuda.set_device(0)
        if s97 < 4096:
            buf1 = empty_strided_cuda((s97, s98), (s98, 1), DT)
            extern_kernels.mm(arg2_1, arg3_1, out=buf1)
        else:
            buf1 = empty_strided_cuda((s97, s98), (s98, 1), DT)
            extern_kernels.mm(arg2_1, arg3_1, out=buf1)
    return (buf1, )


def main() -> None:
    if not torch.cuda.is_available():
        sys.exit("cond_codegen_bound.py copies Inductor's CUDA code: it needs a GPU")
    n = 4096
    a = torch.randn(100, n, device="cuda", dtype=DT)
    b = torch.randn(n, n, device="cuda", dtype=DT)
    inputs = [100, n, a, b]
    fns = {k: (lambda f=f: f(list(inputs))) for k, f in
           (("bare", bare), ("lowered", lowered), ("inline", inline), ("inline_noassert", inline_noassert))}
    for f in fns.values():
        torch.testing.assert_close(f()[0], a @ b)
    gpu_warmup("cuda")
    for _ in range(3):
        runs = host_us_rounds(fns, device="cuda", calls=2000, rounds=21)
        print(" ".join(f"{k} {statistics.median(runs[k]):.2f} ({paired_ratio(runs, k, 'bare'):.3f})" for k in fns),
              flush=True)


if __name__ == "__main__":
    main()
