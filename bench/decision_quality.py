"""How good are the tuner's decisions on a GPU? Per workload, over >= 40 sizes:

- geomean and worst time(dispatched op) / time(per-size best candidate), robust times
  (least of 5 interleaved medians of device time, warm GPU: ``triton.testing.do_bench``, or for
  host-heavy calls the core's covered loop, ``rangedispatch.timing.device_time_ms``);
- the tuner's time per candidate and range against the robust time at the same sizes;
- the noise the tuner measured per range, its tuning wall time, and whether 3 fresh
  processes produced the same table.
- the same for ``split_points="auto"`` and for the guessed split points with
  ``refine_splits=True`` (a range split further where its winner changes).

Workloads (user-guessed split points): causal attention b4 h16 d128 bf16 with the SDPA math
backend as reference and with PyTorch's default SDPA as reference (candidates flash,
efficient, cuDNN; q/k/v tied on the sequence dim); split-K of a (64, K) @ (K, 64) bf16 matmul
over K; top-8 of a (64, n) float32 tensor over n.

    python bench/decision_quality.py                # everything (about 5 minutes on an H100)
    python bench/decision_quality.py --only topk --processes 1
    python bench/decision_quality.py --only logsumexp --auto-only --objective wall   # eager callers' truth

Writes JSON to $OUT (or --out) when set. Needs CUDA.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import rangedispatch as rd  # noqa: E402
from rangedispatch.measure.timing import keep_gpu_busy  # noqa: E402

# -- workloads --------------------------------------------------------------------------------


def _op(ref, impls: dict, split_points, options: dict, **kwargs):
    """The workload's op: ``ref`` with the candidates ``impls`` (name -> fn), no cache unless
    ``options`` asks for one."""
    op = rd.range_dispatch(ref, split_points=split_points, **{**kwargs, "cache": False, **options})
    for name, fn in impls.items():
        op.register_impl(fn, name=name)
    return op


def _randn(seed, *shapes, dtype=torch.float32):
    """Inputs of these shapes, the same for a given size in every process."""
    g = torch.Generator(device="cuda").manual_seed(seed)
    return tuple(torch.randn(*shape, device="cuda", dtype=dtype, generator=g) for shape in shapes)


def _rotated(names: list, r: int) -> list:
    """``names`` starting at the ``r``-th: each round of an interleaved timing starts elsewhere."""
    return names[r % len(names):] + names[: r % len(names)]


def _sdpa(backend):
    from torch.nn.attention import SDPBackend, sdpa_kernel

    kind = getattr(SDPBackend, backend)

    def run(q, k, v):
        with sdpa_kernel([kind]):
            return F.scaled_dot_product_attention(q, k, v, is_causal=True)

    run.__name__ = run.__qualname__ = backend.lower()
    return run


def attention_op(reference: str, split_points, **options):
    if reference == "math":
        ref = _sdpa("MATH")
    else:
        def ref(q, k, v):
            return F.scaled_dot_product_attention(q, k, v, is_causal=True)
        ref.__name__ = ref.__qualname__ = "default"
    backends = ("FLASH_ATTENTION", "EFFICIENT_ATTENTION", "CUDNN_ATTENTION")
    return _op(ref, {b.lower(): _sdpa(b) for b in backends}, split_points, options, dispatch_on=("q", 2),
               tie={"k": 2, "v": 2}, range_upper_bound=8192, name=f"attention_{reference}")


def attention_inputs(seq):
    return _randn(seq, *[(4, 16, seq, 128)] * 3, dtype=torch.bfloat16)


def _splitk(splits):
    def run(a, b):
        m, k = a.shape
        k0 = k - k % splits
        a3 = a[:, :k0].reshape(m, splits, k0 // splits).transpose(0, 1)
        b3 = b[:k0].reshape(splits, k0 // splits, b.shape[1])
        return torch.bmm(a3, b3).sum(0) + a[:, k0:] @ b[k0:]

    run.__name__ = run.__qualname__ = f"splitk{splits}"
    return run


def splitk_op(split_points, **options):
    def mm(a, b):
        return a @ b

    return _op(mm, {f"splitk{s}": _splitk(s) for s in (4, 16, 64)}, split_points, options, dispatch_on=("a", 1),
               tie={"b": 0}, range_upper_bound=262144, name="splitk")


def splitk_inputs(k):
    return _randn(k, (64, k), (k, 64), dtype=torch.bfloat16)


def topk_op(split_points, **options):
    def topk(x):
        return torch.topk(x, 8, dim=-1).values

    def sort(x):
        return torch.sort(x, dim=-1, descending=True).values[:, :8]

    return _op(topk, {"sort": sort}, split_points, options, dispatch_on=("x", 1), range_upper_bound=1 << 20,
               name="topk")


def topk_inputs(n):
    return _randn(n, (64, n))


# -- workloads nobody tuned for: memory-, compute- and launch-bound ----------------------------

_rmsnorm_kernel = None


def _triton_rmsnorm():
    """A one-row-per-program Triton RMSNorm (the kind of kernel users write themselves)."""
    global _rmsnorm_kernel
    if _rmsnorm_kernel is None:
        import triton
        import triton.language as tl

        @triton.jit
        def kernel(x_ptr, w_ptr, out_ptr, n_cols, eps, BLOCK: tl.constexpr):
            row = tl.program_id(0)
            cols = tl.arange(0, BLOCK)
            mask = cols < n_cols
            x = tl.load(x_ptr + row * n_cols + cols, mask=mask, other=0.0).to(tl.float32)
            inv = 1.0 / tl.sqrt(tl.sum(x * x, axis=0) / n_cols + eps)
            w = tl.load(w_ptr + cols, mask=mask, other=0.0).to(tl.float32)
            tl.store(out_ptr + row * n_cols + cols, (x * inv * w).to(out_ptr.dtype.element_ty), mask=mask)

        _rmsnorm_kernel = kernel
    return _rmsnorm_kernel


def rmsnorm_op(split_points, **options):
    """Memory-bound: RMSNorm of (n, 4096) bf16 rows; the reference is the eager composite
    (five kernels), against ``F.rms_norm`` and a hand-written Triton kernel."""
    def composite(x, w):
        xf = x.float()
        return (xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + 1e-6)).to(x.dtype) * w

    def fused(x, w):
        return F.rms_norm(x, (x.shape[-1],), w, eps=1e-6)

    def triton_rows(x, w):
        import triton

        out = torch.empty_like(x)
        _triton_rmsnorm()[(x.shape[0],)](x, w, out, x.shape[1], 1e-6, BLOCK=triton.next_power_of_2(x.shape[1]))
        return out

    return _op(composite, {"rms_norm": fused, "triton_rows": triton_rows}, split_points, options,
               dispatch_on=("x", 0), range_upper_bound=65536, name="rmsnorm")


def rmsnorm_inputs(n):
    return _randn(n, (n, 4096), (4096,), dtype=torch.bfloat16)


def cdist_op(split_points, **options):
    """Compute-bound: distances from n points to 4096 points in 256 dims (fp32); ``cdist``
    through a GEMM, ``cdist`` computed directly, and the expansion written out (five kernels)."""
    def via_mm(x, y):
        return torch.cdist(x, y, compute_mode="use_mm_for_euclid_dist")

    def direct(x, y):
        return torch.cdist(x, y, compute_mode="donot_use_mm_for_euclid_dist")

    def expanded(x, y):
        sq = (x * x).sum(-1, keepdim=True) + (y * y).sum(-1) - 2 * (x @ y.T)
        return sq.clamp_min_(0).sqrt_()

    return _op(via_mm, {"direct": direct, "expanded": expanded}, split_points, options, dispatch_on=("x", 0),
               range_upper_bound=32768, name="cdist", rtol=1e-3, atol=1e-3)


def cdist_inputs(n):
    return _randn(n, (n, 256), (4096, 256))


def lse_op(split_points, **options):
    """Launch-bound at small sizes: logsumexp over rows of (n, 2048) fp32; ``torch.logsumexp``,
    a stable pipeline of five small kernels, and a three-kernel one."""
    def lse(x):
        return torch.logsumexp(x, dim=-1)

    def five(x):
        m = x.amax(-1, keepdim=True)
        return (x - m).exp().sum(-1).log() + m.squeeze(-1)

    def three(x):
        return x.exp().sum(-1).log()

    return _op(lse, {"five_kernels": five, "three_kernels": three}, split_points, options, dispatch_on=("x", 0),
               range_upper_bound=1 << 17, name="logsumexp")


def lse_inputs(n):
    return _randn(n, (n, 2048))


def _logspace(lo, hi, count, multiple=1):
    out = sorted({max(lo, round(lo * (hi / lo) ** (i / (count - 1)) / multiple) * multiple) for i in range(count)})
    return out


WORKLOADS = {
    "attention-math": dict(build=lambda sp, **o: attention_op("math", sp, **o), inputs=attention_inputs,
                           split_points=[128, 512, 2048], sizes=_logspace(1, 8192, 42), example=256),
    "attention-default": dict(build=lambda sp, **o: attention_op("default", sp, **o), inputs=attention_inputs,
                              split_points=[128, 512, 2048], sizes=_logspace(1, 8192, 42), example=256),
    "splitk": dict(build=splitk_op, inputs=splitk_inputs, split_points=[8192, 65536],
                   sizes=_logspace(256, 262144, 42, multiple=64), example=1024),
    "topk": dict(build=topk_op, inputs=topk_inputs, split_points=[1024, 16384],
                 sizes=_logspace(16, 1 << 20, 42), example=1024),
    "rmsnorm": dict(build=rmsnorm_op, inputs=rmsnorm_inputs, split_points=[64, 1024],
                    sizes=_logspace(1, 65536, 40), example=256, kind="memory"),
    "cdist": dict(build=cdist_op, inputs=cdist_inputs, split_points=[256, 4096],
                  sizes=_logspace(1, 32768, 40), example=512, kind="compute"),
    "logsumexp": dict(build=lse_op, inputs=lse_inputs, split_points=[512, 16384],
                      sizes=_logspace(1, 1 << 17, 40), example=1024, kind="launch"),
}
NEW = ("rmsnorm", "cdist", "logsumexp")  # added without tuning anything for them


OURS = ("dispatched", "auto", "refined")  # the ops under test; the per-size best is among the others

# -- timing -----------------------------------------------------------------------------------

def robust(fns: dict, args, rounds: int = 5, more: int = 5, unstable: float = 1.2, same: dict | None = None,
           agree: float = 1.03) -> dict:
    """Least of ``rounds`` interleaved device-time medians per callable (ms; ``device_time_ms``:
    ``do_bench``, or the covered loop for host-heavy calls); inf if it raises.
    A callable over 3x the fastest after two rounds is timed no further (it only heats the
    GPU for the others). When any callable still timed has round medians more than
    ``unstable`` apart (a slow stretch of the device or host hit a whole round), or two
    callables that run the same kernel (``same``: an op -> the candidate it dispatches to here)
    differ by more than ``agree`` (the truth has not settled: on device time they cost the same),
    every one of them gets up to ``more`` rounds, the same for all."""
    from rangedispatch.measure.timing import device_time_ms

    seen = {n: [] for n in fns}
    names = list(fns)

    def one_round(r: int) -> None:
        for n in _rotated(names, r):
            try:
                t = device_time_ms(lambda f=fns[n]: f(*args), rep_ms=30)
            except Exception:
                t = math.inf
            seen[n].append(t)

    for r in range(rounds + more):
        if r >= 2:
            fastest = min(min(ts) for ts in seen.values())
            names = [n for n in names if min(seen[n]) <= 3 * fastest or n in OURS]
        settled = all(max(min(seen[a]), min(seen[b])) <= agree * min(min(seen[a]), min(seen[b]))
                      for a, b in (same or {}).items() if seen.get(a) and seen.get(b))
        if r >= rounds and settled and all(max(seen[n]) <= unstable * min(seen[n]) for n in names):
            break
        one_round(r)
    return {n: min(ts) if ts else math.inf for n, ts in seen.items()}


def wall_ms(fn, args, rounds: int = 3) -> float:
    """Wall time per call of back-to-back eager calls (host work included): the least of
    ``rounds`` medians of ``WallTimer`` batches, the ``objective="wall"`` truth."""
    from rangedispatch.measure.timing import Job, WallTimer

    timer = WallTimer(warm_device_ms=0)
    job = Job("x", 0, lambda: fn(*args))
    try:
        est = timer.once(job)
        return min(statistics.median(timer.batch(job, 5.0, est)) for _ in range(rounds))
    except Exception:
        return math.inf


def record(names: list, path: Path, calls: int = 30, rounds: int = 3) -> None:
    """Raw per-call timings in the format of the shared recordings (see tests/data/README.md):
    per size and candidate, ``rounds`` interleaved rounds of ``calls`` CUDA-event timings (µs,
    an L2 flush before each call, the order rotated per round), the robust device ``truth``,
    and the eager ``wall`` truth per call."""
    from rangedispatch.measure.timing import device_time_ms

    flush = torch.empty(256 * 1024 * 1024, dtype=torch.int8, device="cuda")
    out = {"device": torch.cuda.get_device_name(), "torch": torch.__version__, "unit": "us", "workloads": {}}
    for name in names:
        spec = WORKLOADS[name]
        op = spec["build"](spec["split_points"])
        cands = {n: c.call for n, c in op.candidates.items()}
        rows = []
        for size in spec["sizes"]:
            args = spec["inputs"](size)
            raw, failed = {n: [] for n in cands}, []
            for n, fn in cands.items():
                try:
                    fn(*args)
                except Exception:
                    failed.append(n)
            live = [n for n in cands if n not in failed]
            keep_gpu_busy(30)
            for r in range(rounds):
                for n in _rotated(live, r):
                    for _ in range(calls):
                        flush.zero_()
                        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
                        start.record()
                        cands[n](*args)
                        end.record()
                        torch.cuda.synchronize()
                        raw[n].append(round(start.elapsed_time(end) * 1e3, 2))
            truth = {n: round(min(device_time_ms(lambda f=cands[n], a=args: f(*a), rep_ms=30) for _ in range(3)) * 1e3, 3)
                     for n in live}
            wall = {n: round(wall_ms(cands[n], args) * 1e3, 3) for n in live}
            rows.append({"size": size, "raw": {n: v for n, v in raw.items() if v}, "truth": truth, "wall": wall,
                         "failed": failed})
            del args
            torch.cuda.empty_cache()
        out["workloads"][name] = {"description": (spec["build"].__doc__ or name).split("\n")[0].strip(),
                                  "kind": spec.get("kind", ""), "rows": rows}
        print(f"recorded {name}: {len(rows)} sizes", flush=True)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(out))


# -- one tuning, in this process or a fresh one --------------------------------------------

def tune(name: str, split_points, objective: str = "device", **options) -> tuple[object, float]:
    spec = WORKLOADS[name]
    if objective != "device":
        options["objective"] = objective
    op = spec["build"](split_points, **options)
    t0 = time.perf_counter()
    op.tune(*spec["inputs"](spec["example"]))
    return op, time.perf_counter() - t0


def tune_in_fresh_process(name: str, split_points, objective: str = "device") -> dict:
    cmd = [sys.executable, __file__, "--tune-only", name, "--split-points", json.dumps(split_points),
           "--objective", objective]
    out = subprocess.run(cmd, capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def _table_cost(winners: list, per_size: list) -> tuple[float, float]:
    """Geomean and worst time(choice) / best over the sweep's robust times, for a table given
    as ``[[range, winner], ...]`` (a fresh process's)."""
    def owner(size):
        for rng, winner in winners:
            lo, hi = rng.strip("[)").split(", ")
            if int(lo) <= size and (hi == "inf" or size < int(hi)):
                return winner
        return None

    losses = []
    for p in per_size:
        times = p["times_ms"]
        best = min(t for n, t in times.items() if n not in OURS)
        losses.append(times.get(owner(p["size"]), math.inf) / best)
    return math.exp(sum(map(math.log, losses)) / len(losses)), max(losses)


def _choice(table, size) -> str:
    """The candidate ``table`` runs at ``size``."""
    return table.partition.lookup(size).owner or table.reference


def _winners(table) -> list:
    return [[str(r.range), r.winner] for r in table.results]


# -- the report -------------------------------------------------------------------------------

def wall_times(fns: dict, args, rounds: int = 3) -> dict:
    """The ``objective="wall"`` truth of each callable: the least of ``rounds`` interleaved
    :func:`wall_ms` measurements (ms per eager call, host work included)."""
    seen = {n: [] for n in fns}
    for r in range(rounds):
        for n in _rotated(list(fns), r):
            seen[n].append(wall_ms(fns[n], args, rounds=1))
    return {n: min(ts) for n, ts in seen.items()}


def evaluate(name: str, processes: int, split_points=None, auto_only: bool = False, every: int = 1,
             objective: str = "device") -> dict:
    """``auto_only``: fresh processes and the refined table only for ``split_points="auto"``;
    ``every``: score every ``every``-th size of the sweep; ``objective``: the ops tune for it and
    are scored on its truth (``"device"``: robust device time; ``"wall"``: wall time per eager call)."""
    spec = WORKLOADS[name]
    split_points = spec["split_points"] if split_points is None else split_points
    fresh = [] if auto_only else [tune_in_fresh_process(name, split_points, objective) for _ in range(processes)]
    auto_fresh = [tune_in_fresh_process(name, "auto", objective) for _ in range(processes)]
    op, wall = tune(name, split_points, objective)
    auto_op, auto_wall = tune(name, "auto", objective)
    refined_op, refined_wall = ((auto_op, auto_wall) if auto_only
                                else tune(name, split_points, objective, refine_splits=True))

    def truth_of_times(fns: dict, args, same: dict | None = None) -> dict:
        # on wall time an op is not its candidate (it adds its own dispatch): nothing to agree on
        return wall_times(fns, args) if objective == "wall" else robust(fns, args, same=same)

    table = op.table
    cands = {n: c.call for n, c in op.candidates.items()}
    per_size, losses, decision, auto_losses, refined_losses = [], [], [], [], []
    for size in spec["sizes"][::every]:
        args = spec["inputs"](size)
        keep_gpu_busy(30)  # building inputs idles the GPU; keep its clocks up
        ours = {"dispatched": op, "auto": auto_op, **({} if auto_only else {"refined": refined_op})}
        # on device time an op costs what the candidate it runs here costs: until the two agree
        # the truth has not settled
        same = {n: _choice(o.table, size) for n, o in ours.items()}
        times = truth_of_times({**cands, **ours}, args, same=same)
        times.setdefault("refined", times["auto"])
        best = min(t for n, t in times.items() if n not in OURS)
        loss = times["dispatched"] / best
        losses.append(loss)
        auto_losses.append(times["auto"] / best)
        refined_losses.append(times["refined"] / best)
        chosen = _choice(table, size)
        decision.append(times[chosen] / best)
        per_size.append({"size": size, "chosen": chosen, "loss": loss, "decision_loss": decision[-1],
                         "best": min((n for n in cands), key=lambda n: times[n]), "times_ms": times})
        del args
        torch.cuda.empty_cache()
    tuned_vs_robust = []
    for r in () if auto_only else table.results:
        for i, size in enumerate(r.samples):
            args = spec["inputs"](size)
            keep_gpu_busy(30)
            live = [n for n, ts in r.timings.items() if math.isfinite(ts[i])]
            times = truth_of_times({n: cands[n] for n in live}, args)
            for n in live:
                tuned_vs_robust.append({"range": str(r.range), "size": size, "candidate": n,
                                        "tuned_ms": r.timings[n][i], "robust_ms": times[n],
                                        "ratio": r.timings[n][i] / times[n]})
            del args
    same = all(f["winners"] == _winners(table) for f in fresh)
    fresh_cost = [_table_cost(f["winners"], per_size) for f in fresh]  # what a differing table loses here
    auto_fresh_cost = [_table_cost(f["winners"], per_size) for f in auto_fresh]
    return {
        "workload": name, "split_points": split_points, "objective": objective,
        "geomean": math.exp(sum(map(math.log, losses)) / len(losses)), "worst": max(losses),
        "decision_geomean": math.exp(sum(map(math.log, decision)) / len(decision)), "decision_worst": max(decision),
        "auto_geomean": math.exp(sum(map(math.log, auto_losses)) / len(auto_losses)), "auto_worst": max(auto_losses),
        "auto_tuning_s": auto_wall, "auto_benchmarks": auto_op.table.settings.get("benchmarks"),
        "hand_budget": 4 * 3 * len(cands), "auto_winners": _winners(auto_op.table),
        "auto_discovery": auto_op.table.settings.get("discovery"),
        "auto_fresh_winners": [f["winners"] for f in auto_fresh], "auto_fresh_cost": auto_fresh_cost,
        "auto_same": all(f["winners"] == _winners(auto_op.table) for f in auto_fresh),
        "refined_geomean": math.exp(sum(map(math.log, refined_losses)) / len(refined_losses)),
        "refined_worst": max(refined_losses), "refined_tuning_s": refined_wall,
        "refined_winners": _winners(refined_op.table),
        "sizes": len(losses), "tuning_s": wall, "fresh_tuning_s": [f["wall_s"] for f in fresh],
        "same_table": same, "fresh_winners": [f["winners"] for f in fresh], "winners": _winners(table),
        "fresh_chosen": fresh_cost,
        "noise": {str(r.range): r.noise for r in table.results},
        "disqualified": {str(r.range): dict(r.disqualified) for r in table.results},
        "tuned_vs_robust": tuned_vs_robust, "per_size": per_size,
    }


def _print_alternative(results: list, key: str, title: str, head: str, cell) -> None:
    """One section per alternative table (auto, refined), its losses beside the guessed table's."""
    print(f"\n== {title} ==")
    print(f"{'workload':18s} {'geomean':>8s} {'worst':>6s} {'guessed':>8s} {head} {'tune s':>7s}  ranges")
    for r in results:
        ranges = " ".join(f"{rng}:{w}" for rng, w in r[f"{key}_winners"])
        print(f"{r['workload']:18s} {r[f'{key}_geomean']:8.3f} {r[f'{key}_worst']:6.2f} {r['geomean']:8.3f} {cell(r)} "
              f"{r[f'{key}_tuning_s']:7.1f}  {ranges}")


def print_report(results: list) -> None:
    print("\n== time(dispatched op) / time(per-size best); 'chosen': time(table's choice) / best, robust times ==")
    print(f"{'workload':18s} {'sizes':>5s} {'geomean':>8s} {'worst':>6s} {'chosen':>7s} {'worst':>6s} {'tune s':>7s} "
          f"{'fresh s':>14s} {'same':>5s}")
    for r in results:
        fresh = ",".join(f"{t:.1f}" for t in r["fresh_tuning_s"])
        print(f"{r['workload']:18s} {r['sizes']:5d} {r['geomean']:8.3f} {r['worst']:6.2f} {r['decision_geomean']:7.3f} "
              f"{r['decision_worst']:6.2f} {r['tuning_s']:7.1f} {fresh:>14s} {str(r['same_table']):>5s}")
    _print_alternative(results, "auto", "split_points='auto': time(dispatched) / time(per-size best), same robust times",
                       f"{'benchmarks':>11s}", lambda r: f"{r['auto_benchmarks']:>5}/{r['hand_budget']:<5}")
    print("\n== split_points='auto' in fresh processes: the same table, or the cost of theirs on these times ==")
    for r in results:
        costs = " ".join(f"{g:.3f}/{w:.2f}" for g, w in r.get("auto_fresh_cost", []))
        spread = (max(g for g, _ in r["auto_fresh_cost"]) / min(g for g, _ in r["auto_fresh_cost"]) - 1
                  if r.get("auto_fresh_cost") else 0.0)
        print(f"{r['workload']:18s} same {str(r.get('auto_same')):5s} geomean/worst per process {costs}  "
              f"cost spread {spread:.1%}")
    _print_alternative(results, "refined", "refine_splits=True (the guessed split points, split further where the "
                       "winner changes)", f"{'worst':>6s}", lambda r: f"{r['worst']:6.2f}")
    print("\n== per range: winner, noise, tuned / robust time per candidate (median over samples) ==")
    for r in results:
        for rng, winner in r["winners"]:
            rows = [t for t in r["tuned_vs_robust"] if t["range"] == rng]
            ratios = {}
            for t in rows:
                ratios.setdefault(t["candidate"], []).append(t["ratio"])
            text = " ".join(f"{n}={statistics.median(v):.2f}" for n, v in ratios.items())
            print(f"{r['workload']:18s} {rng:14s} {winner:20s} noise {r['noise'][rng]:.3f}  {text}")
    print("\n== worst sizes ==")
    for r in results:
        worst = sorted(r["per_size"], key=lambda p: -p["loss"])[:3]
        print(f"{r['workload']:18s} " + "; ".join(f"{p['size']}: {p['chosen']} vs {p['best']} {p['loss']:.2f} "
                                                  f"(chosen {p['decision_loss']:.2f})" for p in worst))
        for w, (geo, worst) in zip(r["fresh_winners"], r.get("fresh_chosen", [])):
            if w != r["winners"]:
                print(f"{'':18s} a fresh process chose: {w} (chosen {geo:.3f} / worst {worst:.2f} on these times)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--only", nargs="*", choices=sorted(WORKLOADS), help="workloads to run")
    parser.add_argument("--processes", type=int, default=3, help="fresh processes that tune, to compare tables")
    parser.add_argument("--tune-only", help=argparse.SUPPRESS)
    parser.add_argument("--auto-only", action="store_true", help="fresh processes for split_points='auto' only")
    parser.add_argument("--every", type=int, default=1, help="score every n-th size of each sweep")
    parser.add_argument("--objective", choices=("device", "wall"), default="device",
                        help="tune for this objective and score on its truth (default: device)")
    parser.add_argument("--record", help="write raw per-call timings of the workloads (--only) to this JSON file")
    parser.add_argument("--split-points", help=argparse.SUPPRESS)
    parser.add_argument("--out", default=os.environ.get("OUT"), help="folder for the JSON results")
    args = parser.parse_args()
    if not torch.cuda.is_available():
        sys.exit("decision_quality needs a CUDA device")
    if args.record:
        record(args.only or list(NEW), Path(args.record))
        return
    if args.tune_only:
        keep_gpu_busy(100)
        split_points = json.loads(args.split_points)
        op, wall = tune(args.tune_only, split_points, args.objective)
        print(json.dumps({"winners": _winners(op.table), "wall_s": wall}))
        return
    keep_gpu_busy(300)
    results = []
    for name in args.only or list(WORKLOADS):
        t0 = time.perf_counter()
        results.append(evaluate(name, args.processes, auto_only=args.auto_only, every=args.every,
                                objective=args.objective))
        print(f"{name}: done in {time.perf_counter() - t0:.0f} s", flush=True)
        if args.out:
            Path(args.out).mkdir(parents=True, exist_ok=True)
            Path(args.out, "decision_quality.json").write_text(json.dumps(results, indent=1, default=str))
    print(f"device: {torch.cuda.get_device_name()}, torch {torch.__version__}, objective {args.objective}")
    print_report(results)


if __name__ == "__main__":
    main()
