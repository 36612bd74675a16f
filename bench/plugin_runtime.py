"""Wall time of the plugin's full default check of a 3-range x 3-candidate op.

Writes a test file marking the built-in demo op (``weighted_scale``: einsum, chunked,
broadcast over [0, 512), [512, 2048), [2048, inf)) with ``@pytest.mark.range_autotune`` and no
other options (so: every candidate and the dispatched op in every range, 3 dtypes x 3 layouts,
25 Hypothesis examples plus the boundary sizes, and the per-range benchmark with real timing),
then runs pytest on it in a fresh process, serially and with ``-n 2``.

    python bench/plugin_runtime.py [--device cpu|cuda] [--runs 3]
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

TEST_FILE = '''
import pytest, torch
from rangedispatch.demo import build_demo_op

weighted_scale, op = build_demo_op()
DEVICE = "{device}"

@pytest.mark.range_autotune(weighted_scale, example=lambda: (torch.randn(2, 256, 128, device=DEVICE),
                                                             torch.randn(128, device=DEVICE)))
def test_weighted_scale():
    pass
'''


def run(folder: Path, extra: list[str]) -> tuple[float, str]:
    env = dict(os.environ, RANGEDISPATCH_CACHE_DIR=str(folder / "cache"))
    t0 = time.perf_counter()
    out = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-W", "ignore::RuntimeWarning",
                          "test_demo_op.py", "--rangedispatch-report", *extra],
                         cwd=folder, env=env, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    if out.returncode != 0:
        raise SystemExit(f"pytest failed ({out.returncode}):\n{out.stdout[-4000:]}\n{out.stderr[-2000:]}")
    return wall, out.stdout


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--runs", type=int, default=3)
    opts = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        (folder / "test_demo_op.py").write_text(TEST_FILE.format(device=opts.device))
        results = {}
        last = ""
        for label, extra in (("serial", []), ("-n 2", ["-n", "2"])):
            walls = []
            for _ in range(opts.runs):
                wall, last_out = run(folder, extra)
                walls.append(wall)
                last = last_out if label == "serial" else last
            results[label] = walls
    print(last[last.find("rangedispatch report") - 30:].rstrip())
    print(f"\nplugin full default check of a 3-range x 3-candidate op on {opts.device} "
          f"({os.cpu_count()} CPUs), wall seconds per pytest run (including interpreter and torch start):")
    for label, walls in results.items():
        print(f"  {label:7s} median {statistics.median(walls):6.1f} s   runs {[round(w, 1) for w in walls]}")


if __name__ == "__main__":
    main()
