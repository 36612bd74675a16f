"""What the load-time spot check costs, against a fresh tuning of the same op.

Per workload, ``--repeats`` times, each step in a fresh process, as users meet them: tune
into an empty cache directory (wall time of ``op.tune``), then load that table and make the
first call with ``RANGEDISPATCH_CACHE=trust`` (no check) and with ``verify`` (the default: the
spot check runs). Reported: ranges checked (of all: the check keeps to 4 % of the recorded
tuning time: the cheapest range first, then the others in a random order where their
recorded timings fit what is left), the fresh tuning time, the check's own time
and its share of the tuning, the first call's wall time in each mode, and what verify adds to
the first call over trust (its share of the tuning, "extra / tuning"). A fresh process pays
the first use of each library it touches (cuBLAS, cuDNN, CUDA kernels loaded on first use) in
whichever step touches it first; the tuning pays it too. "warm check" is the check once more
in the tuning's process, where those libraries are loaded: the check's own work.

Workloads: ``weighted_scale`` (the plugin example's 3 ranges x 3 candidates, as a decorator
op), ``prefix_sum`` (the demo: automatic split points), and on CUDA causal attention with
the SDPA math backend as reference (4 ranges x 3 backends, from ``decision_quality.py``).

    python bench/spot_check.py                 # CPU, or CUDA when available
    python bench/spot_check.py --device cpu --repeats 5
    python bench/spot_check.py --reloads 16    # how often an unchanged table fails its check

Writes JSON to $OUT (or --out) when set.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import rangedispatch as rd  # noqa: E402
from rangedispatch.demo import RANGES, broadcast_impl, build_prefix_sum_op, chunked_impl, einsum_impl  # noqa: E402


def weighted_scale_op():
    def weighted_scale(x, weight):
        return x * weight

    op = rd.range_dispatch(weighted_scale, dispatch_on=("x", 1), ranges=RANGES, range_upper_bound=4096)
    for impl in (einsum_impl, chunked_impl, broadcast_impl):
        op.register_impl(impl)
    return op


def workloads(device: str) -> dict:
    out = {
        "weighted_scale": (weighted_scale_op, lambda: (torch.randn(4, 256, 512, device=device),
                                                       torch.randn(512, device=device))),
        "prefix_sum": (lambda: build_prefix_sum_op(upper=2048, cache=True),
                       lambda: (torch.randn(64, 512, device=device),)),
    }
    if device == "cuda":
        from decision_quality import attention_inputs, attention_op  # noqa: PLC0415

        out["attention_math"] = (lambda: attention_op("math", [128, 512, 2048], cache=True),
                                 lambda: attention_inputs(256))
    return out


def step(workload: str, mode: str, device: str) -> dict:
    """One step in this (fresh) process: ``tune`` into the cache, or the first call of the op
    loaded from it under ``RANGEDISPATCH_CACHE=mode``."""
    build, example = workloads(device)[workload]
    args = example()
    sync = torch.cuda.synchronize if args[0].is_cuda else (lambda: None)
    if mode == "tune":
        start = time.perf_counter()
        build().tune(*args)
        sync()
        row = {"tune_s": time.perf_counter() - start}
        os.environ["RANGEDISPATCH_CACHE"] = "verify"  # the check where its libraries are warm
        op = build()
        with torch.no_grad():
            op(*args)
        check = op.provenance.check if op.provenance is not None else None
        row["check_warm_s"] = check.seconds if check is not None else float("nan")
        row.update({f"warm phase {k}_s": v for k, v in (check.phases if check is not None else ())})
        return row
    os.environ["RANGEDISPATCH_CACHE"] = mode
    op = build()
    start = time.perf_counter()
    with torch.no_grad():
        op(*args)
    sync()
    row = {f"first_call_{mode}_s": time.perf_counter() - start}
    where = op.provenance
    row[f"{mode}_status"] = where.status if where else "-"
    if mode == "verify" and where is not None and where.check is not None:
        row.update(check_s=where.check.seconds, ranges_checked=where.check.checked, ranges=where.check.ranges,
                   passed=where.check.passed, **{f"phase {k}_s": v for k, v in where.check.phases})
    return row


def in_fresh_process(workload: str, mode: str, device: str, cache: str) -> dict:
    env = dict(os.environ, RANGEDISPATCH_CACHE_DIR=cache, RANGEDISPATCH_CACHE="verify")
    cmd = [sys.executable, __file__, "--step", workload, mode, "--device", device]
    out = subprocess.run(cmd, capture_output=True, text=True, env=env, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def measure(workload: str, device: str, repeats: int) -> dict:
    rows = []
    for _ in range(repeats):
        with tempfile.TemporaryDirectory() as cache:
            row = {}
            for mode in ("tune", "trust", "verify"):
                row.update(in_fresh_process(workload, mode, device, cache))
            row["extra_s"] = row["first_call_verify_s"] - row["first_call_trust_s"]
            rows.append(row)
            print(f"{workload}: tune {row['tune_s']:.2f} s, check {row.get('check_s', 0) * 1e3:.1f} ms, "
                  f"warm check {row['check_warm_s'] * 1e3:.1f} ms", file=sys.stderr, flush=True)
    keys = {k for r in rows for k, v in r.items() if isinstance(v, float)}
    med = {k: statistics.median(r.get(k, float("nan")) for r in rows) for k in keys}
    share = [r.get("check_s", 0) / r["tune_s"] for r in rows]
    return {"rows": rows, "median": med, "ranges": f"{rows[0].get('ranges_checked')}/{rows[0].get('ranges')}",
            "check_share_max": max(share), "all_verified": all(r.get("verify_status") == "verified" for r in rows)}


def reloads(workload: str, device: str, tunings: int, loads: int = 3) -> dict:
    """How often a table loaded unchanged fails its check: ``tunings`` tunings, each into an empty
    cache and loaded ``loads`` times in this process with ``verify``. Nothing changed between
    them, so every re-tune is the check distrusting a table (a noisy recording, or a decision the
    machine's noise does not support). Returns the counts and each re-tune's reason."""
    import warnings

    build, example = workloads(device)[workload]
    args = example()
    why = []
    for _ in range(tunings):
        with tempfile.TemporaryDirectory() as cache:
            os.environ.update(RANGEDISPATCH_CACHE_DIR=cache, RANGEDISPATCH_CACHE="verify")
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                build().tune(*args)
                for _ in range(loads):
                    op = build()
                    with torch.no_grad():
                        op(*args)
                    if op.provenance.source != "cache":
                        why.append(op.provenance.why)
    return {"loads": tunings * loads, "retuned": len(why), "why": why}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--out", default=os.environ.get("OUT"))
    parser.add_argument("--only", nargs="*", help="workloads to run (default: all on this device)")
    parser.add_argument("--reloads", type=int, metavar="N",
                        help="instead: N tunings per workload, each loaded 3 times unchanged; count re-tunes")
    parser.add_argument("--step", nargs=2, help=argparse.SUPPRESS)
    opts = parser.parse_args()
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    if opts.step:
        print(json.dumps(step(*opts.step, opts.device)))
        return
    name = torch.cuda.get_device_name() if opts.device == "cuda" else f"CPU ({os.cpu_count()} cores)"
    if opts.reloads:
        print(f"unchanged tables loaded with verify | {name} | torch {torch.__version__}")
        print(f"{'workload':16} {'loads':>6} {'re-tuned':>9}  the check's reasons (first 3)")
        for label in opts.only or list(workloads(opts.device)):
            r = reloads(label, opts.device, opts.reloads)
            print(f"{label:16} {r['loads']:>6} {r['retuned']:>9}  " + " | ".join(w[:160] for w in r["why"][:3]),
                  flush=True)
        return
    results = {}
    for label in opts.only or list(workloads(opts.device)):
        results[label] = measure(label, opts.device, opts.repeats)
        if opts.out:  # after each workload, so a run cut short keeps what it measured
            path = Path(opts.out) / "spot_check.json"
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(json.dumps({"device": name, "torch": torch.__version__, "results": results}, indent=1))
    print(f"spot check vs fresh tuning, each in a fresh process | {name} | torch {torch.__version__} | "
          f"median of {opts.repeats}")
    print(f"{'workload':16} {'checked':>7} {'tune s':>7} {'check ms':>9} {'check/tune':>15} "
          f"{'1st call trust/verify ms':>24} {'extra/tune':>10} {'warm check/tune':>15} {'verified':>8}")
    for label, r in results.items():
        m = r["median"]
        share = f"{m.get('check_s', 0) / m['tune_s']:.1%} (max {r['check_share_max']:.1%})"
        calls = f"{m['first_call_trust_s'] * 1e3:.1f} / {m['first_call_verify_s'] * 1e3:.1f}"
        print(f"{label:16} {r['ranges']:>7} {m['tune_s']:>7.2f} {m.get('check_s', 0) * 1e3:>9.1f} {share:>15} "
              f"{calls:>24} {m['extra_s'] / m['tune_s']:>10.1%} {m['check_warm_s'] / m['tune_s']:>15.1%} "
              f"{str(r['all_verified']):>8}")
    print("\nwhere the check's time went, ms (median; fresh process | libraries warm):")
    for label, r in results.items():
        m = r["median"]
        cells = [f"{k[6:-2]} {m[k] * 1e3:.1f} | {m.get('warm ' + k, float('nan')) * 1e3:.1f}"
                 for k in sorted(m) if k.startswith("phase ")]
        print(f"{label:16} " + "; ".join(cells))


if __name__ == "__main__":
    main()
