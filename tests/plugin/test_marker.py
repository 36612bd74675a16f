"""The range_autotune marker's generated cases, report, baselines and xdist, through pytester."""

import json

import pytest

# imported here so in-process pytester runs share them: pytester drops modules first imported
# by an inner run, and torch cannot be imported twice in one process
import hypothesis  # noqa: F401
import rangedispatch  # noqa: F401
import torch  # noqa: F401

from .test_plugin import LOAD

# a 3-range op whose candidates can be made wrong in one way each; timings are scripted
OP_FILE = """
import os, pytest, torch
import rangedispatch as rd
from rangedispatch.testing import FakeBenchmarker

BUG = os.environ.get("RD_BUG", "")
SLOW = float(os.environ.get("RD_SLOW", "1"))
TIMES = {"ws": 3.0, "short": lambda s: 1.0 if s < 65 else 4.0, "medium": lambda s: 1.0 if 65 <= s < 513 else 4.0,
         "long": lambda s: SLOW * (1.0 if s >= 513 else 4.0), "dispatch": 1.0}
bench = FakeBenchmarker(TIMES)

@rd.range_dispatch(dispatch_on=("x", 1), split_points=[64, 512], benchmarker=bench, cache=False)
def ws(x, w):
    return x * w

@ws.register_impl
def short(x, w):
    return torch.mul(w, x)

@ws.register_impl
def medium(x, w):
    out = x * w.view(1, 1, -1)
    if BUG == "boundary" and x.shape[1] == 512:
        out = out + 1
    if BUG == "odd" and x.shape[1] % 2:
        out = out * 1.05  # clearly wrong in every dtype: 1% is within bfloat16 rounding of some inputs
    if BUG == "mutate":
        x.zero_()  # right values, but the caller's input is wiped
    return out

@ws.register_impl
def long(x, w):
    out = torch.einsum("bsh,h->bsh", x, w)
    if BUG == "half" and x.dtype == torch.float16:
        out = out.float().add(0.5).half()
    return out

EX = lambda: (torch.randn(2, 100, 8), torch.randn(8))
"""


def make(pytester, body, **files):
    pytester.makepyfile(test_op=OP_FILE + body, **files)


MARKED = """
@pytest.mark.range_autotune(ws, example=EX, examples=10)
def test_ws():
    pass
"""


def test_correct_op_passes_with_readable_ids(pytester):
    make(pytester, MARKED)
    result = pytester.runpytest(*LOAD, "-v", "-p", "no:randomly")
    result.assert_outcomes(passed=15)
    result.stdout.fnmatch_lines([
        "*test_ws?ws-x?1?in?1,65)-short? PASSED*",
        "*test_ws?ws-x?1?in?65,513)-medium? PASSED*",
        "*test_ws?ws-x?1?in?513,inf)-dispatch? PASSED*",
        "*test_ws?ws-x?1?in?513,inf)-bench? PASSED*",
    ])


@pytest.mark.parametrize(
    "bug, failed, lines",
    [
        # wrong only at 512 = hi - 1 of [65, 513): only that case fails
        ("boundary", 1, ["*range x?1? in ?65, 513), x?1?=512 (dtype float32*candidate 'medium' differs*",
                         "FAILED *test_ws?ws-x?1?in?65,513)-medium?*"]),
        # wrong for odd sizes: every range of 'medium' fails, each shrunk to its smallest odd size
        ("odd", 3, ["*range x?1? in ?1, 65), x?1?=1 (*candidate 'medium' differs*max abs err*first mismatch at index*",
                    "*range x?1? in ?65, 513), x?1?=65 (*candidate 'medium' differs*",
                    "*range x?1? in ?513, inf), x?1?=513 (*candidate 'medium' differs*"]),
        # wrong for float16: 'long' in every range. The dispatched op passes: float16 calls have
        # their own table, whose tuning disqualified 'long' (a float32 table is not reused)
        # right values but zeroes its input: the candidate's case in every range
        ("mutate", 3, ["*range x?1? in ?1, 65), x?1?=1 (*candidate 'medium' writes to its input 'x' in place*",
                       "*range x?1? in ?513, inf), x?1?=513 (*candidate 'medium' writes to its input 'x'*"]),
        ("half", 3, ["*range x?1? in ?1, 65), x?1?=1 (dtype float16*candidate 'long' differs*",
                     "*range x?1? in ?65, 513), x?1?=65 (dtype float16*candidate 'long' differs*",
                     "*range x?1? in ?513, inf), x?1?=513 (dtype float16*candidate 'long' differs*"]),
    ],
)
def test_a_wrong_candidate_fails_naming_range_candidate_and_smallest_size(pytester, bug, failed, lines, monkeypatch):
    monkeypatch.setenv("RD_BUG", bug)
    make(pytester, MARKED.replace("example=EX", "example=EX, benchmark=False"))
    result = pytester.runpytest(*LOAD, "-q", "-W", "ignore::RuntimeWarning")
    result.assert_outcomes(passed=12 - failed, failed=failed)
    result.stdout.fnmatch_lines(lines, consecutive=False)


def test_unknown_marker_option_lists_the_known_ones(pytester):
    make(pytester, """
@pytest.mark.range_autotune(ws, example=EX, dtype=torch.float16)
def test_ws():
    pass
""")
    result = pytester.runpytest(*LOAD, "-q")
    result.assert_outcomes(errors=1)
    result.stdout.fnmatch_lines(["*test_ws: @pytest.mark.range_autotune: unknown option(s) ?'dtype'?; the options are:",
                                 "*dtypes: floating dtypes to check*"])


def test_marker_without_an_op_is_an_error(pytester):
    make(pytester, """
@pytest.mark.range_autotune(example=EX)
def test_ws():
    pass
""")
    result = pytester.runpytest(*LOAD, "-q")
    result.assert_outcomes(errors=1)
    result.stdout.fnmatch_lines(["*needs the op to check as its first argument*"])


def test_stale_table_fails_the_range_benchmark(pytester):
    make(pytester, """
ws.tune(*EX())
bench.times["short"] = 9.0   # short got slower than the reference after tuning: [1, 65) is stale

@pytest.mark.range_autotune(ws, example=EX, examples=5)
def test_ws():
    pass
""")
    result = pytester.runpytest(*LOAD, "-q", "-k", "bench")
    result.assert_outcomes(passed=2, failed=1)
    result.stdout.fnmatch_lines([
        "*ws: range x?1? in ?1, 65): stale table: the table's winner 'short' takes 9.000ms but 'ws' takes 3.000ms*",
    ])


def test_baseline_round_trip_and_per_range_regression(pytester, monkeypatch):
    make(pytester, MARKED)
    base = pytester.path / "base.json"
    result = pytester.runpytest(*LOAD, "-q", "-k", "bench", f"--rangedispatch-save-baseline={base}")
    result.assert_outcomes(passed=3)
    saved = json.loads(base.read_text())
    assert saved["format"] == "rangedispatch.baseline"
    assert saved["ops"]["ws"]["[513,inf)"]["times_ms"]["long"] == pytest.approx(1.0)

    result = pytester.runpytest(*LOAD, "-q", "-k", "bench", f"--rangedispatch-baseline={base}")
    result.assert_outcomes(passed=3)

    monkeypatch.setenv("RD_SLOW", "1.25")  # long, the winner of [513, inf), 25 % slower
    result = pytester.runpytest(*LOAD, "-q", "-k", "bench", f"--rangedispatch-baseline={base}",
                                "--rangedispatch-fail-regression=10%")
    result.assert_outcomes(passed=2, failed=1)
    result.stdout.fnmatch_lines([
        "*ws: range x?1? in ?513, inf): regression: candidate 'long' went from 1.000ms to 1.250ms (+25.0%, threshold 10%)*"
    ])
    result = pytester.runpytest(*LOAD, "-q", "-k", "bench", f"--rangedispatch-baseline={base}",
                                "--rangedispatch-fail-regression=30%")
    result.assert_outcomes(passed=3)
    assert json.loads(base.read_text()) == saved  # comparing never rewrites the baseline


def test_bad_regression_threshold_and_missing_baseline_are_usage_errors(pytester):
    make(pytester, MARKED)
    result = pytester.runpytest(*LOAD, "-q", "--rangedispatch-fail-regression=ten")
    assert result.ret != 0
    result.stderr.fnmatch_lines(["*--rangedispatch-fail-regression='ten': expected a percentage such as 10%*"])
    result = pytester.runpytest(*LOAD, "-q", "--rangedispatch-baseline=nope.json")
    assert result.ret != 0
    result.stderr.fnmatch_lines(["*--rangedispatch-baseline=nope.json: no such file*"])


def report_rows(path):
    data = json.loads(path.read_text())
    keep = ("op", "range", "winner", "runner_up", "margin", "examples", "status", "checked", "dispatch_ms", "best_ms")
    return [{k: round(r[k], 9) if isinstance(r.get(k), float) else r.get(k) for k in keep} for r in data["ranges"]]


def test_report_terminal_and_files(pytester, monkeypatch):
    monkeypatch.setenv("RD_BUG", "boundary")
    make(pytester, MARKED)
    result = pytester.runpytest(*LOAD, "-q", "-W", "ignore::RuntimeWarning", "--rangedispatch-report=out/rep")
    result.assert_outcomes(passed=14, failed=1)
    result.stdout.fnmatch_lines([
        "*= rangedispatch report =*",
        "op*range*winner*runner-up*margin*dispatched*best*regret*examples*status",
        "ws*x?1? in ?1,65)*short*ws*+200.0%*1.000ms*1.000ms*+0.0%*ok",
        "ws*x?1? in ?65,513)*ws*short*mismatch",  # medium lost the range in tuning (wrong at 512)
        "ws*x?1? in ?513,inf)*long*ws*+200.0%*1.000ms*1.000ms*+0.0%*ok",
        "- ws: range x?1? in ?65, 513), x?1?=512*",
        "table: ws: tuned in this process at *",  # where the table came from
        "report written: *rep.json",
        "report written: *rep.md",
    ])
    rows = report_rows(pytester.path / "out" / "rep.json")
    assert [r["status"] for r in rows] == ["ok", "mismatch", "ok"]
    assert rows[0]["checked"] == ["dispatch", "long", "medium", "short"]
    assert all(r["examples"] > 4 * 10 for r in rows)
    markdown = (pytester.path / "out" / "rep.md").read_text()
    assert "| ws | x[1] in [65,513) | ws | short |" in markdown and "## Tables\n\n- ws: tuned in this process" in markdown


CROSSING = """
import os, pytest, torch
import rangedispatch as rd
from rangedispatch.testing import FakeBenchmarker

# in [65, inf) 'big' is 2x faster from 700 on and 4x slower below
TIMES = {"sc": 1.0, "big": lambda s: 4.0 if s < 700 else 0.5}

@rd.range_dispatch(dispatch_on=("x", 1), split_points=[64], range_upper_bound=1024, benchmarker=FakeBenchmarker(TIMES),
                   cache=False, refine_splits=os.environ.get("RD_REFINE") == "1")
def sc(x, w):
    return x * w

@sc.register_impl
def big(x, w):
    return torch.mul(w, x)

@pytest.mark.range_autotune(sc, example=lambda: (torch.randn(2, 100, 8), torch.randn(8)), examples=3,
                            benchmark=False, dtypes=[torch.float32], layouts=["contiguous"])
def test_sc():
    pass
"""


@pytest.mark.parametrize("refine", [False, True])
def test_the_report_notes_a_winner_that_changes_inside_a_range_and_names_a_refined_ranges_pieces(
        pytester, monkeypatch, refine):
    monkeypatch.setenv("RD_REFINE", "1" if refine else "0")
    pytester.makepyfile(test_op=CROSSING)
    result = pytester.runpytest(*LOAD, "-q", "-W", "ignore::RuntimeWarning", "--rangedispatch-report=out/rep")
    result.assert_outcomes(passed=4)
    top = report_rows(pytester.path / "out" / "rep.json")[-1]
    text = (pytester.path / "out" / "rep.md").read_text()
    if refine:
        assert top["winner"].startswith("sc in [65, ") and ", big in [" in top["winner"] and "## Notes" not in text
        assert "note:" not in result.stdout.str()
    else:
        note = "sc [65, inf): the winner changes inside this range: 'big' is 2.00x faster than 'sc' at 1024"
        assert top["winner"] == "sc" and f"- {note}" in text.split("## Notes")[1]
        result.stdout.fnmatch_lines([f"note: {note}*refine_splits=True*"])


def test_xdist_run_gives_the_serial_report(pytester):
    pytest.importorskip("xdist")
    make(pytester, MARKED)
    serial = pytester.runpytest_subprocess(*LOAD, "-q", "--rangedispatch-report=serial")
    serial.assert_outcomes(passed=15)
    parallel = pytester.runpytest_subprocess(*LOAD, "-q", "-n", "2", "--rangedispatch-report=parallel")
    parallel.assert_outcomes(passed=15)
    assert report_rows(pytester.path / "serial.json") == report_rows(pytester.path / "parallel.json")
    parallel.stdout.fnmatch_lines(["*= rangedispatch report =*", "ws*x?1? in ?513,inf)*long*ok"])


def test_range_case_fixture_reaches_the_test_body(pytester):
    make(pytester, """
SEEN = []

@pytest.mark.range_autotune(ws, example=EX, examples=3, benchmark=False, layouts=["contiguous"], dtypes=[torch.float32])
def test_ws(range_case):
    SEEN.append(range_case.id)
    assert range_case.op.name == "ws"
    assert range_case.range.lo in (1, 65, 513)

def test_all_seen():
    assert len(SEEN) == 12 and SEEN[0] == "ws-x[1]in[1,65)-short"
""")
    result = pytester.runpytest(*LOAD, "-q", "-p", "no:randomly")
    result.assert_outcomes(passed=13)


def test_user_fixtures_strategies_and_synchronised_benchmark(pytester):
    make(pytester, """
from hypothesis import given, settings

def test_strategies(range_strategies):
    strategies = range_strategies(ws, max_size=1000)
    assert [str(r) for r in strategies] == ["[1, 65)", "[65, 513)", "[513, inf)"]
    for rng, strategy in strategies.items():
        seen = []

        @settings(max_examples=30, deadline=None, database=None)
        @given(strategy)
        def inside(size):
            seen.append(size)
            assert size in rng and size <= 1000

        inside()
        assert rng.lo in seen  # boundaries are favoured

def test_benchmark(range_benchmark):
    x, w = EX()
    out = range_benchmark(ws, x, w, rounds=3)
    torch.testing.assert_close(out, x * w)
""")
    result = pytester.runpytest(*LOAD, "-q")
    result.assert_outcomes(passed=2)


CUSTOM_OP_FILE = """
import os, pytest, torch
import rangedispatch as rd
from rangedispatch.testing import FakeBenchmarker

BAD_FAKE = os.environ.get("RD_BAD_FAKE") == "1"

@torch.library.custom_op("rdtest::scale_{suffix}", mutates_args=())
def scale(x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    return x * w

@scale.register_fake
def _(x, w):
    return x.new_empty(x.shape[0], 1, x.shape[2]) if BAD_FAKE else torch.empty_like(x)

def einsum_impl(x, w):
    return torch.einsum("bsh,h->bsh", x, w)

rd.register_custom_op_autotuning(scale, configs=[rd.CustomOpConfig(einsum_impl)],
                                 dispatch_on={"tensor_name": "x", "dim": 1}, split_points=[64],
                                 benchmarker=FakeBenchmarker({}), cache=False)

@pytest.mark.range_autotune(scale, example=lambda: (torch.randn(2, 100, 8), torch.randn(8)), benchmark=False,
                            dtypes=[torch.float32], layouts=["contiguous"])
def test_scale():
    pass
"""


@pytest.mark.parametrize("bad", [False, True])
def test_custom_ops_get_torch_library_opcheck_in_the_dispatch_case(pytester, monkeypatch, bad):
    monkeypatch.setenv("RD_BAD_FAKE", "1" if bad else "0")
    pytester.makepyfile(test_op=CUSTOM_OP_FILE.replace("{suffix}", "bad" if bad else "good"))
    # in a subprocess: opcheck imports parts of torch that an in-process run would unload after it
    result = pytester.runpytest_subprocess(*LOAD, "-q", "-W", "ignore::RuntimeWarning", "-k", "dispatch")
    if bad:
        result.assert_outcomes(failed=2)
        result.stdout.fnmatch_lines(["*torch.library.opcheck failed*"])
    else:
        result.assert_outcomes(passed=2)


AUTO_OP_FILE = """
import pytest, torch
import rangedispatch as rd
from rangedispatch.testing import FakeBenchmarker

bench = FakeBenchmarker({"ref": 5.0, "small": lambda s: 1.0 if s < 300 else 9.0,
                         "large": lambda s: 9.0 if s < 300 else 1.0})

@rd.range_dispatch(dispatch_on=("x", 0), split_points="auto", range_upper_bound=4096, benchmarker=bench, cache=False)
def ref(x):
    return x * 2

@ref.register_impl
def small(x):
    return x + x

@ref.register_impl
def large(x):
    return 2 * x

ref.record_sizes().update([7, 7, 7, 1500])

@pytest.mark.range_autotune(ref, example=lambda: (torch.randn(64),), benchmark=False, dtypes=[torch.float32])
def test_ref():
    pass
"""


def test_an_auto_op_is_checked_per_discovered_range(pytester):
    pytester.makepyfile(test_auto=AUTO_OP_FILE)
    result = pytester.runpytest(*LOAD, "-q", "--collect-only")
    ids = [line for line in result.stdout.lines if "test_ref[" in line]
    assert any("in[1," in i and "-small]" in i for i in ids), ids
    assert any(",inf)-large]" in i for i in ids), ids
    result = pytester.runpytest(*LOAD, "-q")
    result.assert_outcomes(passed=6)


FAULTS_FILE = """
import os, pytest, torch
import rangedispatch as rd
from rangedispatch.testing import FakeBenchmarker

FAULT = os.environ.get("RD_FAULT", "")

@rd.range_dispatch(dispatch_on=("x", 1), ranges=[(0, 64), (64, 512), (512, None)],
                   benchmarker=FakeBenchmarker({"scale": 3.0, "good_a": 1.0, "good_b": 2.0, "faulty": 9.0}), cache=False)
def scale(x, w):
    return x * w

@scale.register_impl
def good_a(x, w):
    return torch.mul(w, x)

@scale.register_impl
def good_b(x, w):
    return torch.einsum("bsh,h->bsh", x, w)

@scale.register_impl
def faulty(x, w):
    out = x * w
    if FAULT == "nan_above_3000" and x.shape[1] > 3000:
        out = out * float("nan")
    if FAULT == "zeroes_input":
        x.zero_()
    if FAULT == "wrong_at_300" and x.shape[1] == 300:
        out = out + 1
    return out

@pytest.mark.range_autotune(scale, example=lambda: (torch.randn(2, 100, 8), torch.randn(8)))
def test_scale():
    pass
"""


@pytest.mark.parametrize("fault, lines", [
    ("", []),
    ("nan_above_3000", ["*scale: range x?1? in ?512, inf), x?1?=3001 (*candidate 'faulty' differs*NaN*"]),
    ("zeroes_input", ["*range x?1? in ?0, 64), x?1?=1 (*candidate 'faulty' writes to its input 'x' in place*"]),
    ("wrong_at_300", ["*range x?1? in ?64, 512), x?1?=300 (*candidate 'faulty' differs*"]),
])
def test_the_default_run_catches_real_faults_and_passes_a_correct_op(pytester, monkeypatch, fault, lines):
    monkeypatch.setenv("RD_FAULT", fault)
    pytester.makepyfile(test_fault_op=FAULTS_FILE)
    result = pytester.runpytest(*LOAD, "-q", "-W", "ignore::RuntimeWarning", "-k", "faulty or dispatch")
    if not fault:
        result.assert_outcomes(passed=6)
        return
    outcomes = result.parseoutcomes()
    assert outcomes.get("failed", 0) >= 1, result.stdout.str()[-3000:]
    result.stdout.fnmatch_lines(lines, consecutive=False)


ALIAS_FILE = """
import pytest, torch
import rangedispatch as rd
from rangedispatch.testing import FakeBenchmarker

@rd.range_dispatch(dispatch_on=("x", 0), split_points=[64], benchmarker=FakeBenchmarker({}), cache=False)
def flat(x):
    return x.reshape(-1).clone()

@flat.register_impl
def flat_view(x):
    return x.reshape(-1)  # the same values, but the caller's tensor and the result share memory

@pytest.mark.range_autotune(flat, example=lambda: (torch.randn(10, 4),), benchmark=False)
def test_flat():
    pass
"""


def test_an_output_aliasing_an_input_fails_when_the_reference_returns_new_memory(pytester):
    pytester.makepyfile(test_alias=ALIAS_FILE)
    result = pytester.runpytest(*LOAD, "-q", "-W", "ignore::RuntimeWarning")
    result.assert_outcomes(passed=2, failed=2)  # flat_view in both ranges; the dispatch never reaches it
    result.stdout.fnmatch_lines(["*range x?0? in ?1, 65), x?0?=1 (*candidate 'flat_view' returns a tensor that "
                                 "aliases its input 'x'*"])


COMPILED_FILE = """
import pytest, torch
import rangedispatch as rd
from rangedispatch.testing import FakeBenchmarker

@rd.range_dispatch(dispatch_on=("x", 0), ranges=[(1, None)], range_upper_bound=256,
                   benchmarker=FakeBenchmarker({"ref": 2.0, "fine_eagerly": 1.0}), cache=False)
def ref(x):
    return x * 2

@ref.register_impl
def fine_eagerly(x):
    if torch.compiler.is_compiling():  # a bug only the compiled path has
        return x * 3
    return x + x

@pytest.mark.range_autotune(ref, example=lambda: (torch.randn(16),), benchmark=False, compiled=True,
                            dtypes=[torch.float32], layouts=["contiguous"])
def test_ref():
    pass
"""


@pytest.mark.compile
def test_the_opt_in_compiled_case_names_a_candidate_wrong_only_under_torch_compile(pytester):
    pytester.makepyfile(test_compiled_op=COMPILED_FILE)
    # in a subprocess: torch.compile imports parts of torch that an in-process run would unload
    result = pytester.runpytest_subprocess(*LOAD, "-q", "-W", "ignore::RuntimeWarning")
    result.assert_outcomes(passed=2, failed=1)
    result.stdout.fnmatch_lines(["*ref: range x?0? in ?1, inf), x?0?=1 (*candidate 'fine_eagerly' differs from the "
                                 "reference under torch.compile*"])
