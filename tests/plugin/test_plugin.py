"""The pytest plugin, tested through pytester."""

import subprocess
import sys
from importlib.metadata import entry_points

# installed: pytest loads the plugin through its entry point; from a bare checkout: -p
INSTALLED = any(ep.value.startswith("pytest_rangedispatch") for ep in entry_points(group="pytest11"))
LOAD = [] if INSTALLED else ["-p", "pytest_rangedispatch.plugin"]


def test_plugin_loads_without_importing_torch_or_hypothesis():
    code = (
        "import sys, pytest_rangedispatch.plugin;"
        "print('torch' in sys.modules, 'hypothesis' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["False", "False"]


def test_marker_and_options_are_documented(pytester):
    result = pytester.runpytest(*LOAD, "--markers")
    result.stdout.fnmatch_lines(["*range_autotune(op, *more_ops, **options)*"])
    result = pytester.runpytest(*LOAD, "--help")
    result.stdout.fnmatch_lines(["*--rangedispatch-cache-dir*", "*--rangedispatch-report*"])


def test_assert_branches_equivalent_catches_a_boundary_bug(pytester):
    pytester.makepyfile(
        """
        import torch, rangedispatch as rd
        from rangedispatch.testing import FakeBenchmarker

        def make(bug_at):
            @rd.range_dispatch(dispatch_on=("x", 1), ranges=[(0, 512), (512, 2048)],
                               benchmarker=FakeBenchmarker({}), cache=False)
            def scale(x, w):
                return x * w

            @scale.register_impl
            def medium(x, w):
                out = x * w
                return out + 1 if x.shape[1] == bug_at else out
            return scale

        def test_correct(assert_branches_equivalent):
            n = assert_branches_equivalent(make(-1), torch.randn(2, 8, 4), torch.randn(4))
            assert n == 5  # sizes 1, 511 | 512, 513, 2047

        def test_off_by_one(assert_branches_equivalent):
            assert_branches_equivalent(make(2047), torch.randn(2, 8, 4), torch.randn(4))
        """
    )
    result = pytester.runpytest(*LOAD, "-q")
    result.assert_outcomes(passed=1, failed=1)
    result.stdout.fnmatch_lines(["*candidate 'medium' differs from the reference in range ?512, 2048) at x?1?=2047*"])
