"""Compiled range dispatch: rangedispatch vs upstream Inductor's register_custom_op_autotuning.

Three ops, one ``torch.compile(dynamic=True)`` sweep per side and op, same candidates and
split points for both sides:

* ``kmm``: a matmul whose K is split 1/4/16/64 ways (bmm + sum), dispatching on K, with K tied
  between ``a`` and ``b``;
* ``mmm``: a matmul dispatching on M (no tied dims; candidates one mm, split-K 4, linear on b.t()),
  where upstream's input generator works;
* ``cmm``: the same product with a float32-accumulating reference, one mm allowed below M=4096
  and linear on b.t() from 4096 on (``dim_range`` per config), so the table has two winners and the
  compiled op carries a real ``torch.cond``.

Per size: our compiled op, upstream's compiled op, the eager per-size best candidate, and
``torch.compile`` of our winner alone (what a hand-written compiled call of that candidate
costs), as device time (ms: ``rangedispatch.timing.device_time_ms`` medians, i.e. ``do_bench`` or
the covered loop for host-heavy calls, the least of 3 interleaved rounds) and as host time per call (us, a loop of
calls with one sync at the end, the median of 15 interleaved rounds by default: shows per-call launch overhead that
device events hide; ``--rounds`` sets their number).
``guards us``: host time of the same table with ``compiled_dispatch="guards"`` (one graph per
range, no cond). ``ours/1c`` and ``guards/1c``: those host times over the 1-compile's, the
median over rounds of each round's ratio (paired: a round's calls run moments apart).
``lookup+``: the us per call that Dynamo's lookup of the graph (its guards) costs in guards mode
beyond the 1-compile's (:func:`guard_eval_us`, best of repeats: the structural part of the
host-time difference, which the host's noise does not move). On CUDA, ``ours RO`` / ``1-cmp RO``: the same two compiled with ``mode="reduce-overhead"`` (CUDA
graphs), interleaved with the rest. Then graph counts and compile (first-call) times.

``--no-asserts`` compiles every graph without Inductor's per-call size and alignment checks
(``size_asserts``, ``alignment_asserts``), which a real ``torch.cond`` runs once more per branch.

    python bench/compile_vs_upstream.py [--device cuda] [--quick] [--profile] [--only cmm] [--rounds 15] [--no-asserts]
"""

from __future__ import annotations

import argparse
import gc
import inspect
import statistics
import tempfile
import time
import timeit
from pathlib import Path
from typing import Any, Callable

import torch
import torch._inductor.config
import torch.nn.functional as F

import rangedispatch as rd
from rangedispatch.measure.timing import keep_gpu_busy

SMALL = 64
K_SPLITS = [4096, 65536]
M_SPLITS = [256, 4096]


def mm_split(a: torch.Tensor, b: torch.Tensor, k_splits: int) -> torch.Tensor:
    """Split-K: K zero-padded to a multiple of ``k_splits`` (no size-dependent branch, so a
    dynamic-shape trace of it holds for every K), one bmm over the chunks, then a sum."""
    m, k = a.shape
    pad = (-k) % k_splits
    a, b = F.pad(a, (0, pad)), F.pad(b, (0, 0, 0, pad))
    chunk = (k + pad) // k_splits
    return torch.bmm(a.view(m, k_splits, chunk).transpose(0, 1), b.view(k_splits, chunk, -1)).sum(0)


def mm1(a, b):
    return a @ b


def mm4(a, b):
    return mm_split(a, b, 4)


def mm16(a, b):
    return mm_split(a, b, 16)


def mm64(a, b):
    return mm_split(a, b, 64)


def mm_lin(a, b):
    """``F.linear`` on the transposed view: cuBLAS sees the problem with other layout flags."""
    return F.linear(a, b.t())


K_CANDS = [mm1, mm4, mm16, mm64]
M_CANDS = [mm1, mm4, mm_lin]


def mm_fp32(a, b):
    """Float32 accumulation and output rounding: exact-ish, slow."""
    return (a.float() @ b.float()).to(a.dtype)


def make_op(qualname: str, fp32_reference: bool = False):
    @torch.library.custom_op(qualname, mutates_args=())
    def op(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        return mm_fp32(a, b) if fp32_reference else a @ b

    @op.register_fake
    def _(a, b):
        return a.new_empty(a.shape[0], b.shape[1])

    return op


def device_ms(fn, *args, device: str) -> float:
    if device == "cuda":  # do_bench, or the covered loop where host work would leak into it
        from rangedispatch.measure.timing import device_time_ms

        return device_time_ms(lambda: fn(*args), rep_ms=40)
    for _ in range(2):
        fn(*args)
    ts = []
    for _ in range(7):
        t0 = time.perf_counter()
        fn(*args)
        ts.append((time.perf_counter() - t0) * 1e3)
    return statistics.median(ts)


def interleaved_ms(fns: dict[str, Callable[..., Any]], *args, device: str, rounds: int = 3) -> dict[str, float]:
    """``device_ms`` of every callable, measured in ``rounds`` interleaved rounds (each callable
    warmed first), each round in another order; the minimum of each callable's round medians.
    Interleaving spreads clock and background-activity drift over all callables instead of
    charging it to whichever ran then."""
    for fn in fns.values():
        for _ in range(3):
            fn(*args)
    if device == "cuda":
        torch.cuda.synchronize()
    best = {name: float("inf") for name in fns}
    names = list(fns)
    for r in range(rounds):  # each round starts one callable later: none always runs after the same one
        for name in names[r % len(names):] + names[:r % len(names)]:
            best[name] = min(best[name], device_ms(fns[name], *args, device=device))
    return best


def gpu_warmup(device: str, seconds: float = 2.0) -> None:
    """Run matmuls for a while so the GPU is at its working clocks before the first timing."""
    if device == "cuda":
        keep_gpu_busy(seconds * 1e3)


def host_us(fn, *args, device: str, calls: int = 200) -> float:
    """Wall time per call of back-to-back calls: max(host overhead, device time); the median
    of 5 loops (:func:`host_us_rounds` of this one callable)."""
    return statistics.median(host_us_rounds({"fn": fn}, *args, device=device, calls=calls, rounds=5)["fn"])


def host_us_interleaved(fns: dict[str, Callable[..., Any]], *args, device: str, calls: int = 1000,
                        rounds: int = 9) -> dict[str, float]:
    """:func:`host_us` of several callables in interleaved rounds (the order rotating each
    round, so drift on a busy host hits every one alike): the median per callable."""
    runs = host_us_rounds(fns, *args, device=device, calls=calls, rounds=rounds)
    return {name: statistics.median(v) for name, v in runs.items()}


def paired_ratio(runs: dict[str, list[float]], name: str, base: str) -> float:
    """The median over rounds of ``name``'s time over ``base``'s in the same round."""
    return statistics.median(a / b for a, b in zip(runs[name], runs[base]))


def host_us_rounds(fns: dict[str, Callable[..., Any]], *args, device: str, calls: int = 1000,
                   rounds: int = 9) -> dict[str, list[float]]:
    """Host us per call of each callable in each of ``rounds`` interleaved rounds (see
    :func:`host_us_interleaved`)."""
    for fn in fns.values():
        for _ in range(5):
            fn(*args)
    sync = torch.cuda.synchronize if device == "cuda" else (lambda: None)
    runs: dict[str, list[float]] = {name: [] for name in fns}
    names = list(fns)
    collecting = gc.isenabled()
    gc.disable()  # as timeit does: a collection inside one loop would charge its pause to one callable
    try:
        for r in range(rounds):
            for name in names[r % len(names):] + names[:r % len(names)]:
                sync()
                t0 = time.perf_counter()
                for _ in range(calls):
                    fns[name](*args)
                sync()
                runs[name].append((time.perf_counter() - t0) / calls * 1e6)
    finally:
        if collecting:
            gc.enable()
    return runs


def dynamo_cache(compiled: Any) -> tuple[Any, list[Any]]:
    """The function ``torch.compile`` wrapped in ``compiled``, and the entries Dynamo cached for
    its frame (its debug view; ``ImportError`` where this torch lacks it)."""
    from torch._C._dynamo.eval_frame import _debug_get_cache_entry_list

    frame = inspect.unwrap(compiled._torchdynamo_orig_callable)
    return frame, _debug_get_cache_entry_list(frame.__code__)


def guard_eval_us(compiled: Any, *args: Any) -> float:
    """Host us Dynamo spends finding the graph for a call of ``compiled`` with ``args``: every
    cached entry of its frame checked in order until one passes, as Dynamo's lookup does (best
    of 7 ``timeit`` repeats: the frame's structural cost, apart from the host's noise). Reads
    Dynamo's debug view of the frame's cache; ``nan`` where this torch lacks it."""
    try:
        frame, entries = dynamo_cache(compiled)
    except ImportError:
        return float("nan")
    code = frame.__code__
    local = dict.fromkeys(code.co_varnames)
    local.update(zip(code.co_varnames, args))
    local.update(zip(code.co_freevars, (c.cell_contents for c in frame.__closure__ or ())))
    checks = [entry.guard_manager.check for entry in entries]

    def lookup() -> bool:
        return any(check(local) for check in checks)

    if not lookup():
        return float("nan")
    return min(timeit.repeat(lookup, number=2000, repeat=7)) / 2000 * 1e6


class Scenario:
    def __init__(self, name: str, cands: list, splits: list[int] | None, sizes: list[int],
                 shapes: Callable[[int], tuple[tuple[int, int], tuple[int, int]]],
                 dispatch_on: dict[str, Any] | None, tie: dict[str, int] | None,
                 ranges: dict[str, tuple[int, float]] | None = None):
        self.name, self.cands, self.splits, self.sizes = name, cands, splits, sizes
        self.shapes, self.dispatch_on, self.tie = shapes, dispatch_on, tie
        self.ranges = ranges  # candidate name -> dim_range (the fp32-reference scenario)

    def configs(self, config_cls: Any) -> list[Any]:
        if self.ranges is None:
            return [config_cls(f) for f in self.cands]
        return [config_cls(f, tensor_name="a", dim_index=0, dim_range=self.ranges[f.__name__]) for f in self.cands]

    def register_kwargs(self) -> dict[str, Any]:
        if self.ranges is not None:
            return {}
        return {"dispatch_on": self.dispatch_on, "split_points": self.splits}

    def inputs(self, n: int, device: str, dtype: torch.dtype):
        (sa, sb) = self.shapes(n)
        return torch.randn(*sa, device=device, dtype=dtype), torch.randn(*sb, device=device, dtype=dtype)


def cmm_scenario(sizes: list[int], n: int, split: int = 4096) -> Scenario:
    """Two winners, so the compiled op really carries a torch.cond: M x n @ n x n with a
    float32-accumulating reference, one mm allowed below M = ``split`` and linear on b.t() from it."""
    return Scenario("cmm", [mm1, mm_lin], None, sizes, lambda m: ((m, n), (n, n)), None, None,
                    ranges={"mm1": (1, split), "mm_lin": (split, float("inf"))})


def sweep(fn, sc: Scenario, device, dtype):
    """Call ``fn`` at every size once (checking the result): first-call and whole-sweep seconds."""
    first = None
    t0 = time.perf_counter()
    for n in sc.sizes:
        a, b = sc.inputs(n, device, dtype)
        out = fn(a, b)
        ref = a.float() @ b.float()
        err = (out.float() - ref).norm() / ref.norm()
        assert err < 2e-2, f"{sc.name} size {n}: relative error {err:.3g}"
        if first is None:
            if device == "cuda":
                torch.cuda.synchronize()
            first = time.perf_counter() - t0
    total = time.perf_counter() - t0
    return first, total


def counting_backend():
    from torch._dynamo.testing import CompileCounterWithBackend

    return CompileCounterWithBackend("inductor")


def registered_op(sc: Scenario, namespace: str):
    """The scenario's op, registered for our autotuning (not tuned yet)."""
    op = make_op(f"{namespace}::{sc.name}", fp32_reference=sc.ranges is not None)
    rd.register_custom_op_autotuning(op, configs=sc.configs(rd.CustomOpConfig), tie=sc.tie, cache=False,
                                     rtol=3e-2, atol=3e-2, **sc.register_kwargs())
    return op


def run_ours(sc: Scenario, device, dtype):
    op = registered_op(sc, "rdbench_ours")
    torch._dynamo.reset()
    counter = counting_backend()
    fn = torch.compile(lambda a, b: op(a, b), dynamic=True, backend=counter)
    first, total = sweep(fn, sc, device, dtype)
    # the same op under CUDA graphs (cudagraph trees record one graph per size); eager on the CPU
    ro = torch.compile(lambda a, b: op(a, b), dynamic=True, mode="reduce-overhead") if device == "cuda" else fn
    # the same table with compiled_dispatch="guards": one graph per range, no cond
    guarded = registered_op(sc, "rdbench_guards")
    with tempfile.TemporaryDirectory() as tmp:
        rd.dispatcher_of(guarded).load_table(rd.dispatcher_of(op).save_table(Path(tmp) / "table.json"))
    rd.dispatcher_of(guarded).compiled_dispatch = "guards"
    guards_fn = torch.compile(lambda a, b: guarded(a, b), dynamic=True)
    sweep(guards_fn, sc, device, dtype)
    return fn, ro, guards_fn, rd.dispatcher_of(op), first, total, counter.frame_count


def run_upstream(sc: Scenario, device, dtype):
    try:
        from torch._inductor.kernel.custom_op import CustomOpConfig as UpConfig
        from torch._inductor.kernel.custom_op import register_custom_op_autotuning as up_register
    except ImportError as exc:
        return None, f"not in this torch ({exc})"
    try:
        op = make_op(f"rdbench_up::{sc.name}", fp32_reference=sc.ranges is not None)
        up_register(op, configs=sc.configs(UpConfig), **sc.register_kwargs(),
                    input_gen_fns={"a": lambda t: torch.randn_like(t), "b": lambda t: torch.randn_like(t)})
        counter = counting_backend()
        fn = torch.compile(lambda a, b: op(a, b), dynamic=True, backend=counter)
        first, total = sweep(fn, sc, device, dtype)
        return (fn, first, total, counter.frame_count), None
    except Exception as exc:  # upstream failing on this setup
        return None, f"{type(exc).__name__}: {str(exc).splitlines()[0][:160]}"


def report(sc: Scenario, device, dtype, profile: bool, rounds: int = 15) -> list[str]:
    fn, ro, guards_fn, disp, our_first, our_total, our_graphs = run_ours(sc, device, dtype)
    table = disp.table
    up, up_err = run_upstream(sc, device, dtype)

    our_dev, up_dev, best, single_dev, our_host, single_host, eager_host = {}, {}, {}, {}, {}, {}, {}
    guards_host, paired, lookup = {}, {}, {}
    ro_dev, single_ro_dev = {}, {}
    single_fns = {}
    for n in sc.sizes:
        a, b = sc.inputs(n, device, dtype)
        allowed = sc.cands
        if sc.ranges is not None:
            allowed = [mm_fp32] + [f for f in sc.cands if sc.ranges[f.__name__][0] <= n < sc.ranges[f.__name__][1]]
        pick = table.partition.lookup(n).owner or table.reference
        impl = disp._by_name[pick].fn if pick in disp._by_name else sc.cands[0]
        if pick not in single_fns:
            single_fns[pick] = (torch.compile(impl, dynamic=True),
                                torch.compile(impl, dynamic=True, mode="reduce-overhead") if device == "cuda" else impl)
        fns = {"ours": fn, "1-compile": single_fns[pick][0], "ours RO": ro, "1-compile RO": single_fns[pick][1],
               **{f.__name__: f for f in allowed}}
        if up:
            fns["upstream"] = up[0]
        times = interleaved_ms(fns, a, b, device=device)
        our_dev[n], single_dev[n], up_dev[n] = times.pop("ours"), times.pop("1-compile"), times.pop("upstream", None)
        ro_dev[n], single_ro_dev[n] = times.pop("ours RO"), times.pop("1-compile RO")
        best[n] = min(times.items(), key=lambda p: p[1])
        runs = host_us_rounds({"ours": fn, "guards": guards_fn, "1-compile": single_fns[pick][0],
                               "eager": dict((f.__name__, f) for f in allowed)[best[n][0]]},
                              a, b, device=device, calls=200, rounds=rounds)
        host = {name: statistics.median(v) for name, v in runs.items()}
        our_host[n], single_host[n], eager_host[n] = host["ours"], host["1-compile"], host["eager"]
        guards_host[n] = host["guards"]
        paired[n] = (paired_ratio(runs, "ours", "1-compile"), paired_ratio(runs, "guards", "1-compile"))
        lookup[n] = guard_eval_us(guards_fn, a, b) - guard_eval_us(single_fns[pick][0], a, b)

    if profile and device == "cuda":
        n = sc.sizes[len(sc.sizes) // 2]
        a, b = sc.inputs(n, device, dtype)
        from torch.profiler import ProfilerActivity, profile as prof

        for _ in range(3):
            fn(a, b)
        torch.cuda.synchronize()
        with prof(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as p:
            for _ in range(10):
                fn(a, b)
            torch.cuda.synchronize()
        print(f"--- profile of our compiled {sc.name} at size {n}, 10 calls ---")
        print(p.key_averages().table(sort_by="cpu_time_total", row_limit=25))

    lines = [f"\n{sc.name}: {torch.cuda.get_device_name() if device == 'cuda' else 'cpu'}, "
             f"torch {torch.__version__}, {dtype}, "
             + (f"dim_range={sc.ranges}" if sc.ranges else f"split_points={sc.splits}, dispatch_on={sc.dispatch_on}")
             + (f", tie={sc.tie}" if sc.tie else "")]
    lines.append(f"{'size':>8} {'pick':>9} {'ours ms':>9} {'up ms':>9} {'best ms':>9} {'best':>9} "
                 f"{'1-compile':>9} {'ours/best':>9} {'ours/up':>8} {'ours us':>8} {'guards us':>9} {'1-cmp us':>8} "
                 f"{'eager us':>8} {'ours/1c':>7} {'guards/1c':>9} {'lookup+':>7} "
                 f"{'ours RO':>9} {'1-cmp RO':>9} {'RO ratio':>8}")
    for n in sc.sizes:
        pick = table.partition.lookup(n).owner or table.reference
        up_ms = up_dev.get(n)
        lines.append(
            f"{n:>8} {pick:>9} {our_dev[n]:9.4f} {up_ms if up_ms is not None else float('nan'):9.4f} "
            f"{best[n][1]:9.4f} {best[n][0]:>9} {single_dev[n]:9.4f} {our_dev[n] / best[n][1]:9.3f} "
            f"{(our_dev[n] / up_ms) if up_ms else float('nan'):8.3f} {our_host[n]:8.1f} {guards_host[n]:9.1f} "
            f"{single_host[n]:8.1f} "
            f"{eager_host[n]:8.1f} {paired[n][0]:7.3f} {paired[n][1]:9.3f} {lookup[n]:7.2f} {ro_dev[n]:9.4f} {single_ro_dev[n]:9.4f} {ro_dev[n] / single_ro_dev[n]:8.3f}")
    if up:
        lines.append(f"graphs: ours {our_graphs}, upstream {up[3]}; first call s: ours {our_first:.1f}, upstream "
                     f"{up[1]:.1f}; whole sweep s: ours {our_total:.1f}, upstream {up[2]:.1f}")
    else:
        lines.append(f"graphs: ours {our_graphs}; first call s: ours {our_first:.1f}; whole sweep s: ours "
                     f"{our_total:.1f}; upstream failed: {up_err}")
    lines.append(table.format())
    return lines


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--profile", action="store_true", help="print a torch.profiler table per op")
    parser.add_argument("--only", choices=["kmm", "mmm", "cmm"], default=None)
    parser.add_argument("--rounds", type=int, default=15, help="interleaved rounds of the host-time columns")
    parser.add_argument("--no-asserts", action="store_true",
                        help="compile every side without Inductor's per-call size and alignment checks")
    opts = parser.parse_args()
    if opts.no_asserts:  # every graph alike, ours and the bare compiles
        torch._inductor.config.size_asserts = False
        torch._inductor.config.alignment_asserts = False
    device, dtype = opts.device, (torch.bfloat16 if opts.device == "cuda" else torch.float32)
    gpu_warmup(device)
    k_sizes = [256, 1000, 4096, 5000, 16384, 65536, 70000, 262144]
    m_sizes = [1, 16, 100, 256, 1000, 4096, 5000, 16384]
    if opts.quick:
        k_sizes, m_sizes = [256, 5000, 70000], [16, 1000, 5000]
    big = 4096 if device == "cuda" else 512
    scenarios = [
        Scenario("kmm", K_CANDS, K_SPLITS, k_sizes, lambda k: ((SMALL, k), (k, SMALL)),
                 {"tensor_name": "a", "dim": 1, "range_upper_bound": 262144}, {"b": 0}),
        Scenario("mmm", M_CANDS, M_SPLITS, m_sizes, lambda m: ((m, big), (big, big)),
                 {"tensor_name": "a", "dim": 0, "range_upper_bound": 16384}, None),
        cmm_scenario(m_sizes, big),
    ]
    for sc in scenarios:
        if opts.only in (None, sc.name):
            print("\n".join(report(sc, device, dtype, opts.profile, opts.rounds)), flush=True)


if __name__ == "__main__":
    main()
