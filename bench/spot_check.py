"""What the load-time spot check costs, against a fresh tuning of the same op.

Per workload, ``--repeats`` times: tune a fresh op into an empty cache directory (wall time
of ``op.tune``), then build the op again, as a new process would, and load its table from
the cache with ``RANGEDISPATCH_CACHE=verify`` (the default: the spot check runs) and with
``trust`` (no check). Reported: ranges checked (of all: the check keeps to 5 % of the
recorded tuning time, taking ranges in a random order), the tuning time, the check's own
time, the first call's wall time in each mode, and check / tuning.

Workloads: ``weighted_scale`` (the plugin example's 3 ranges x 3 candidates, as a decorator
op), ``prefix_sum`` (the demo: automatic split points), and on CUDA causal attention with
the SDPA math backend as reference (4 ranges x 3 backends, from ``decision_quality.py``).

    python bench/spot_check.py                 # CPU, or CUDA when available
    python bench/spot_check.py --device cpu --repeats 5

Writes JSON to $OUT (or --out) when set.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
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


def measure(build, example, repeats: int) -> dict:
    rows = []
    for _ in range(repeats):
        with tempfile.TemporaryDirectory() as cache:
            os.environ["RANGEDISPATCH_CACHE_DIR"] = cache
            os.environ["RANGEDISPATCH_CACHE"] = "verify"
            args = example()
            start = time.perf_counter()
            build().tune(*args)
            tune_s = time.perf_counter() - start
            row = {"tune_s": tune_s}
            for mode in ("verify", "trust"):
                os.environ["RANGEDISPATCH_CACHE"] = mode
                op = build()
                start = time.perf_counter()
                with torch.no_grad():
                    op(*args)
                if args[0].is_cuda:
                    torch.cuda.synchronize()
                row[f"first_call_{mode}_s"] = time.perf_counter() - start
                where = op.provenance
                row[f"{mode}_status"] = where.status if where else "-"
                if mode == "verify" and where is not None and where.check is not None:
                    row["check_s"] = where.check.seconds
                    row["ranges_checked"] = where.check.checked
                    row["ranges"] = where.check.ranges
                    row["passed"] = where.check.passed
            rows.append(row)
    keys = {k for r in rows for k, v in r.items() if isinstance(v, float)}
    med = {k: statistics.median(r.get(k, float("nan")) for r in rows) for k in keys}
    return {"rows": rows, "median": med, "ranges": f"{rows[0].get('ranges_checked')}/{rows[0].get('ranges')}",
            "all_verified": all(r.get("verify_status") == "verified" for r in rows)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--out", default=os.environ.get("OUT"))
    opts = parser.parse_args()
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    name = torch.cuda.get_device_name() if opts.device == "cuda" else f"CPU ({os.cpu_count()} cores)"
    results = {}
    for label, (build, example) in workloads(opts.device).items():
        results[label] = measure(build, example, opts.repeats)
    print(f"spot check vs fresh tuning | {name} | torch {torch.__version__} | median of {opts.repeats}")
    print(f"{'workload':16} {'checked':>7} {'tune s':>8} {'check ms':>9} {'check/tune':>10} "
          f"{'1st call verify ms':>18} {'1st call trust ms':>17} {'verified':>8}")
    for label, r in results.items():
        m = r["median"]
        print(f"{label:16} {r['ranges']:>7} {m['tune_s']:>8.2f} {m.get('check_s', 0) * 1e3:>9.1f} "
              f"{m.get('check_s', 0) / m['tune_s']:>10.1%} {m['first_call_verify_s'] * 1e3:>18.1f} "
              f"{m['first_call_trust_s'] * 1e3:>17.1f} {str(r['all_verified']):>8}")
    if opts.out:
        path = Path(opts.out) / "spot_check.json"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps({"device": name, "torch": torch.__version__, "results": results}, indent=1))


if __name__ == "__main__":
    main()
