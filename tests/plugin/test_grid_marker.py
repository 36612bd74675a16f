"""The range_autotune marker on a grid op: cases, checks and the report cell by cell."""

import json
import re

# imported here so in-process pytester runs share them (see test_marker.py)
import hypothesis  # noqa: F401
import rangedispatch  # noqa: F401
import torch  # noqa: F401

from .test_plugin import LOAD

GRID_FILE = """
import os, pytest, torch
import rangedispatch as rd
from rangedispatch.testing import FakeBenchmarker

BUG = os.environ.get("RD_BUG", "")
inf = float("inf")
bench = FakeBenchmarker({"ref": 2.0, "small": lambda p: 1.0 if p[0] < 8 else 4.0,
                         "wide": lambda p: 1.0 if p[0] >= 8 and p[1] >= 64 else 4.0})

def ref(x, w):
    return x * w

def small(x, w):
    return torch.mul(w, x)

def wide(x, w):
    out = torch.einsum("bh,h->bh", x, w)
    if BUG == "corner" and x.shape[0] == 8 and x.shape[1] == 64:
        out = out + 1
    if BUG == "inside" and x.shape[0] % 2 and 100 < x.shape[1] < 200:  # no corner is there
        out = out + 1
    return out

op = rd.register_custom_op_autotuning(ref, configs=[rd.MultiDimRangeConfig(
    dims={"x": {0: [(1, 8), (8, inf)], 1: [(1, 64), (64, inf)]}},
    tie={("x", 1): {"w": 0}}, implementations=[small, wide])], benchmarker=bench, cache=False)

@pytest.mark.range_autotune(op, example=lambda: (torch.randn(4, 16), torch.randn(16)), examples=15)
def test_grid():
    pass
"""


def test_a_grid_op_gets_cases_per_cell_and_a_report_per_cell(pytester):
    pytester.makepyfile(test_op=GRID_FILE)
    result = pytester.runpytest(*LOAD, "-v", "-p", "no:randomly", "--rangedispatch-report=rep")
    result.assert_outcomes(passed=16)  # 4 cells x (small, wide, dispatch, bench)
    result.stdout.fnmatch_lines([
        "*test_grid?ref-x?0?in?1,8)-x?1?in?1,64)-small? PASSED*",
        "*test_grid?ref-x?0?in?8,inf)-x?1?in?64,inf)-dispatch? PASSED*",
        "*ref  (x?0?, x?1?) in ?8,inf)x?64,inf)  wide *ok*",
    ])
    report = json.loads((pytester.path / "rep.json").read_text())
    cells = {r["range"]: r for r in report["ranges"]}
    assert set(cells) == {"[1,8)x[1,64)", "[1,8)x[64,inf)", "[8,inf)x[1,64)", "[8,inf)x[64,inf)"}
    assert cells["[8,inf)x[64,inf)"]["winner"] == "wide" and cells["[8,inf)x[1,64)"]["winner"] == "ref"


def test_a_candidate_wrong_at_a_cell_corner_fails_naming_cell_and_point(pytester, monkeypatch):
    monkeypatch.setenv("RD_BUG", "corner")
    pytester.makepyfile(test_op=GRID_FILE)
    result = pytester.runpytest(*LOAD, "-p", "no:randomly", "--rangedispatch-no-benchmark", "-W", "ignore")
    # tuning checked (8, 64), a corner of the cell, and gave that cell to the reference: the
    # dispatched op is right, the candidate's case fails
    result.assert_outcomes(passed=11, failed=1)
    result.stdout.fnmatch_lines([
        "*cell (x?0?, x?1?) in ?8, inf) x ?64, inf), x?0?=8, x?1?=64 *candidate 'wide' differs from the reference*",
    ])


def test_a_candidate_wrong_inside_a_cell_is_found_by_the_sweep(pytester, monkeypatch):
    monkeypatch.setenv("RD_BUG", "inside")  # odd batch and 100 < hidden < 200: no corner, no tuning point
    pytester.makepyfile(test_op=GRID_FILE)
    result = pytester.runpytest(*LOAD, "-p", "no:randomly", "--rangedispatch-no-benchmark", "-W", "ignore")
    failed = [line for line in result.outlines if line.startswith("FAILED")]
    # 'wide' is a candidate of every cell: both cells with hidden >= 64 find it wrong there
    assert any("x[0]in[1,8)-x[1]in[64,inf)-wide" in line for line in failed)
    assert any("x[0]in[8,inf)-x[1]in[64,inf)-" in line for line in failed)
    found = re.findall(r"x\[0\]=(\d+), x\[1\]=(\d+) \(dtype[^\n]*(?:candidate 'wide'|the dispatched op) differs", result.stdout.str())
    assert found and all(int(b) % 2 and 100 < int(h) < 200 for b, h in found)
