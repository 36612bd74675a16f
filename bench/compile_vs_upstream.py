"""Compiled range dispatch: rangedispatch vs upstream Inductor's register_custom_op_autotuning.

Same candidates and split points for both (a matmul with K split 1/4/16 ways, dispatching on
K); one torch.compile(dynamic=True) sweep per side. Prints per size the median time of our
compiled op, upstream's compiled op and the eager per-size best candidate, plus graph counts
and compile (first-call) times.

    python bench/compile_vs_upstream.py [--device cuda] [--quick]
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

import rangedispatch as rd

M = N = 64
SPLITS = [4096, 65536]


def mm_split(a: torch.Tensor, b: torch.Tensor, k_splits: int) -> torch.Tensor:
    m, k = a.shape
    if k % k_splits:
        return a @ b
    parts = torch.bmm(a.view(m, k_splits, k // k_splits).transpose(0, 1), b.view(k_splits, k // k_splits, -1))
    return parts.sum(0)


def mm1(a, b):
    return a @ b


def mm4(a, b):
    return mm_split(a, b, 4)


def mm16(a, b):
    return mm_split(a, b, 16)


def mm64(a, b):
    return mm_split(a, b, 64)


CANDS = [mm1, mm4, mm16, mm64]


def make_op(ns: str):
    @torch.library.custom_op(f"{ns}::kmm", mutates_args=())
    def kmm(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        return a @ b

    @kmm.register_fake
    def _(a, b):
        return a.new_empty(a.shape[0], b.shape[1])

    return kmm


def timeit(fn, *args, device: str) -> float:
    if device == "cuda":
        from triton.testing import do_bench

        return do_bench(lambda: fn(*args), warmup=10, rep=40, return_mode="median")
    for _ in range(2):
        fn(*args)
    ts = []
    for _ in range(7):
        t0 = time.perf_counter()
        fn(*args)
        ts.append((time.perf_counter() - t0) * 1e3)
    return statistics.median(ts)


def sweep(fn, sizes, device, dtype):
    times, first = {}, None
    t0 = time.perf_counter()
    for k in sizes:
        a = torch.randn(M, k, device=device, dtype=dtype)
        b = torch.randn(k, N, device=device, dtype=dtype)
        out = fn(a, b)
        torch.testing.assert_close(out.float(), (a.float() @ b.float()), rtol=3e-2, atol=3e-1 * (k ** 0.5) / 16)
        if first is None:
            if device == "cuda":
                torch.cuda.synchronize()
            first = time.perf_counter() - t0
    total = time.perf_counter() - t0
    for k in sizes:
        a = torch.randn(M, k, device=device, dtype=dtype)
        b = torch.randn(k, N, device=device, dtype=dtype)
        times[k] = timeit(fn, a, b, device=device)
    return times, first, total


def counting_backend():
    from torch._dynamo.testing import CompileCounterWithBackend

    return CompileCounterWithBackend("inductor")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--quick", action="store_true")
    opts = parser.parse_args()
    device, dtype = opts.device, (torch.bfloat16 if opts.device == "cuda" else torch.float32)
    sizes = [256, 1000, 4096, 5000, 16384, 65536, 70000, 262144] if not opts.quick else [256, 1000, 5000, 70000]

    ours = make_op("rdbench_ours")
    rd.register_custom_op_autotuning(
        ours, configs=[rd.CustomOpConfig(f) for f in CANDS],
        dispatch_on={"tensor_name": "a", "dim": 1, "range_upper_bound": 262144}, tie={"b": 0},
        split_points=SPLITS, cache=False, rtol=3e-2, atol=3e-2,
    )
    torch._dynamo.reset()
    counter = counting_backend()
    our_fn = torch.compile(lambda a, b: ours(a, b), dynamic=True, backend=counter)
    our_t, our_first, our_total = sweep(our_fn, sizes, device, dtype)
    our_graphs = counter.frame_count
    table = rd.dispatcher_of(ours).table

    up_t, up_graphs, up_first, up_total = {}, None, None, None
    try:
        from torch._inductor.kernel.custom_op import CustomOpConfig as UpConfig
        from torch._inductor.kernel.custom_op import register_custom_op_autotuning as up_register

        theirs = make_op("rdbench_up")
        up_register(theirs, configs=[UpConfig(f) for f in CANDS],
                    dispatch_on={"tensor_name": "a", "dim": 1, "range_upper_bound": 262144},
                    split_points=SPLITS,
                    input_gen_fns={"a": lambda t: torch.randn_like(t), "b": lambda t: torch.randn_like(t)})
        torch._dynamo.reset()
        counter = counting_backend()
        up_fn = torch.compile(lambda a, b: theirs(a, b), dynamic=True, backend=counter)
        up_t, up_first, up_total = sweep(up_fn, sizes, device, dtype)
        up_graphs = counter.frame_count
    except Exception as exc:  # older torch, or upstream failing on this setup
        print(f"upstream unavailable: {type(exc).__name__}: {str(exc).splitlines()[0][:120]}")

    best = {}
    for k in sizes:
        a = torch.randn(M, k, device=device, dtype=dtype)
        b = torch.randn(k, N, device=device, dtype=dtype)
        per = {f.__name__: timeit(f, a, b, device=device) for f in CANDS}
        best[k] = min(per.items(), key=lambda p: p[1])

    print(f"\n{torch.cuda.get_device_name() if device == 'cuda' else 'cpu'}, torch {torch.__version__}, "
          f"{dtype}, M=N={M}, split_points={SPLITS}")
    print(f"{'K':>8} {'ours ms':>9} {'ours pick':>10} {'upstream ms':>12} {'eager best':>16} "
          f"{'ours/best':>10} {'ours/up':>8}")
    for k in sizes:
        pick = table.partition.lookup(k).owner or table.reference
        up = up_t.get(k)
        print(f"{k:>8} {our_t[k]:9.4f} {pick:>10} {up if up is not None else float('nan'):12.4f} "
              f"{best[k][1]:9.4f} {best[k][0]:>6} {our_t[k] / best[k][1]:10.3f} "
              f"{(our_t[k] / up) if up else float('nan'):8.3f}")
    print(f"graphs: ours {our_graphs}, upstream {up_graphs}; first call (compile+tune) s: ours {our_first:.1f}, "
          f"upstream {up_first if up_first is None else round(up_first, 1)}; whole sweep s: ours {our_total:.1f}, "
          f"upstream {up_total if up_total is None else round(up_total, 1)}")


if __name__ == "__main__":
    main()
