"""range_autotune on a MultiKernel: every variant checked per hint region, boundaries included."""

# imported here so in-process pytester runs share them (see test_marker.py)
import hypothesis  # noqa: F401
import pytest
import torch
from hypothesis import given, settings

import rangedispatch as rd
from pytest_rangedispatch.hints import HintSpace

from .test_plugin import LOAD

MK_FILE = """
import os, pytest, torch
import rangedispatch as rd
from rangedispatch.testing import FakeBenchmarker

BUG = os.environ.get("RD_BUG", "")

def small(x, y):
    return (x * 2.0 + y.sin()).softmax(-1)

def large(x, y):
    out = torch.softmax(x * 2.0 + torch.sin(y), dim=-1)
    if BUG == "large_rows" and x.shape[0] > 300:
        out = out + 1e-2
    return out

make = lambda s: (torch.randn(*s), torch.randn(*s))
# timed by rows (the first size): 'small' wins below the boundary at sqrt(16 * 512) ~ 90.5
bench = FakeBenchmarker({"small": lambda rows: 1.0 if rows <= 90 else 3.0, "large": 2.0, "dispatch": 1.0})
mk = rd.MultiKernel([rd.Variant(small, (16, 64), name="small"), rd.Variant(large, (512, 64), name="large")],
                    policy="nearest", sizes=lambda x, y: tuple(x.shape), make_inputs=make, benchmarker=bench,
                    cache=False, name="sm")
"""

MARKED = """
@pytest.mark.range_autotune(mk, examples=10)
def test_sm():
    pass
"""


def test_every_variant_and_the_dispatch_are_checked_per_region(pytester):
    pytester.makepyfile(test_mk=MK_FILE + MARKED)
    result = pytester.runpytest(*LOAD, "-v", "--rangedispatch-report")
    result.assert_outcomes(passed=6)
    result.stdout.fnmatch_lines([
        "*test_sm?sm-near?16x64?-large? PASSED*",
        "*test_sm?sm-near?16x64?-dispatch? PASSED*",
        "*test_sm?sm-near?512x64?-bench? PASSED*",
        "sm *nearest 16x64 *small *large *ok",
        "sm *nearest 512x64 *large *small *ok",
    ])


def test_a_variant_wrong_in_one_region_fails_there_naming_region_and_sizes(pytester, monkeypatch):
    monkeypatch.setenv("RD_BUG", "large_rows")
    pytester.makepyfile(test_mk=MK_FILE + MARKED.replace("examples=10", "examples=10, benchmark=False"))
    result = pytester.runpytest(*LOAD, "-q")
    # rows <= 90 belong to the 16x64 region: the bug (rows > 300) shows only in the other one
    result.assert_outcomes(passed=2, failed=2)
    result.stdout.fnmatch_lines([
        "*sm: region nearest 512x64, sizes ?*, 64? (nearest hint ?512, 64?; dtype float32*variant 'large' differs*",
        "FAILED *test_sm?sm-near?512x64?-large?*",
        "FAILED *test_sm?sm-near?512x64?-dispatch?*",
    ], consecutive=False)


def test_a_hint_whose_variant_is_not_the_fastest_in_its_region_is_stale(pytester):
    pytester.makepyfile(test_mk=MK_FILE + 'bench.times["large"] = 5.0\n' + MARKED)
    result = pytester.runpytest(*LOAD, "-q", "-k", "bench")
    result.assert_outcomes(passed=1, failed=1)
    result.stdout.fnmatch_lines([
        "*sm: region nearest 512x64: stale hints: the variant of this region's hint 'large' takes 5.000ms "
        "but 'small' takes 3.000ms*move the hints*",
    ])


def test_a_multikernel_without_make_inputs_is_a_collection_error(pytester):
    pytester.makepyfile(test_mk=MK_FILE + "mk.make_inputs = None\n" + MARKED)
    result = pytester.runpytest(*LOAD, "-q")
    result.assert_outcomes(errors=1)
    result.stdout.fnmatch_lines(["*MultiKernel 'sm' has no make_inputs; pass make_inputs=lambda sizes*"])


def test_make_inputs_that_disagree_with_sizes_fail_with_the_rule(pytester):
    body = MARKED.replace("examples=10", "examples=2, make_inputs=lambda s: (torch.randn(s[0], 8), torch.randn(s[0], 8))")
    pytester.makepyfile(test_mk=MK_FILE + body)
    result = pytester.runpytest(*LOAD, "-q", "-k", "dispatch")
    result.assert_outcomes(failed=2)
    result.stdout.fnmatch_lines(["*make_inputs(?16, 64?) built inputs whose sizes are ?16, 8?; make_inputs and the "
                                 "MultiKernel's sizes= must agree*"])


def test_a_hint_free_variant_is_checked_in_every_region_but_owns_none(pytester):
    extra = MK_FILE.replace("rd.Variant(large, (512, 64), name=\"large\")]",
                            "rd.Variant(large, (512, 64), name=\"large\"), rd.Variant(small, None, name=\"lib\")]")
    pytester.makepyfile(test_mk=extra + MARKED.replace("examples=10", "examples=5, benchmark=False"))
    result = pytester.runpytest(*LOAD, "-q", "--collect-only")
    result.stdout.fnmatch_lines(["*sm-near?16x64?-lib*", "*sm-near?512x64?-lib*"], consecutive=False)
    assert "near[None]" not in result.stdout.str()


THREE = rd.MultiKernel([rd.Variant(lambda x: x, (16, 64), name="a"), rd.Variant(lambda x: x, (512, 64), name="b"),
                        rd.Variant(lambda x: x, (32, 1024), name="c")], policy="nearest", sizes=lambda x: tuple(x.shape),
                       cache=False)


@pytest.mark.parametrize("region", [0, 1, 2])
def test_boundary_shapes_sit_on_either_side_of_each_region_boundary(region):
    space = HintSpace(THREE)
    inside = space.fixed_shapes(region, outside=False)
    both = space.fixed_shapes(region, outside=True)
    assert inside[0] == THREE.hinted[region].hint
    assert all(space.owner(s) == region for s in inside)
    outside = [s for s in both if s not in inside]
    # past the boundary with each neighbour (and where a neighbour cuts the sweep's edges)
    assert len(outside) >= 2 and all(space.owner(s) != region for s in outside)
    for shape in outside:  # each is one rounding step from a shape the region owns
        assert any(max(abs(a - b) for a, b in zip(shape, s)) <= 1 for s in inside)


@settings(max_examples=40, deadline=None, database=None)
@given(data=hypothesis.strategies.data())
def test_the_region_strategy_draws_only_shapes_the_region_owns(data):
    space = HintSpace(THREE)
    region = data.draw(hypothesis.strategies.sampled_from([0, 1, 2]))
    shape = data.draw(space.strategy(region))
    assert space.owner(shape) == region and len(shape) == 2 and min(shape) >= 1


def test_dims_equal_in_every_hint_stay_equal_in_drawn_shapes():
    # the default sizes of f(x, y): x's dims then y's, equal in every hint
    mk = rd.MultiKernel([rd.Variant(lambda x, y: x, (16, 64, 16, 64), name="a"),
                         rd.Variant(lambda x, y: x, (512, 8, 512, 8), name="b")], policy="nearest", cache=False)
    space = HintSpace(mk)
    shapes = space.fixed_shapes(0, outside=True) + space.fixed_shapes(1, outside=True)

    @settings(max_examples=30, deadline=None, database=None)
    @given(shape=space.strategy(1))
    def drawn(shape):
        shapes.append(shape)

    drawn()
    assert all(s[0] == s[2] and s[1] == s[3] for s in shapes)
