"""The pytest plugin: options, the ``range_autotune`` marker, generated cases, fixtures, the
report and baselines, and pytest-xdist support.

Loading it imports neither torch nor Hypothesis: both are imported when a marked test is
collected or a fixture is used.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest

from . import records as rec
from .options import (
    DEFAULT_BASELINE,
    DEFAULT_PROFILE,
    DEFAULT_REGRESSION,
    MARKER,
    MARKER_OPTIONS,
    OPTION_BASELINE,
    OPTION_CACHE_DIR,
    OPTION_FAIL_REGRESSION,
    OPTION_NO_BENCHMARK,
    OPTION_PROFILE,
    OPTION_REPORT,
    OPTION_SAVE_BASELINE,
    PROFILES,
)

CASE_ARG = "range_case"
RECORDS = pytest.StashKey[dict]()
BASELINE = pytest.StashKey[Any]()
WORKER_KEY = "rangedispatch_records"
_SAVED = pytest.StashKey[Path]()  # where the controller saved the baseline
_WRITTEN = pytest.StashKey[list]()  # report files written


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("rangedispatch", "range-based autotuning checks")
    group.addoption(OPTION_CACHE_DIR, default=None, metavar="PATH",
                    help="tuning cache directory for the session (default: the usual cache)")
    group.addoption(OPTION_REPORT, nargs="?", const="", default=None, metavar="PATH",
                    help="print a per-op, per-range report at the end; with PATH also write "
                         "PATH.json, PATH.md and (with matplotlib) PATH.png")
    group.addoption(OPTION_SAVE_BASELINE, nargs="?", const=DEFAULT_BASELINE, default=None, metavar="PATH",
                    help=f"save per-range benchmark times as a baseline (default PATH: {DEFAULT_BASELINE})")
    group.addoption(OPTION_BASELINE, default=None, metavar="PATH",
                    help="compare per-range benchmark times with this baseline")
    group.addoption(OPTION_FAIL_REGRESSION, default=DEFAULT_REGRESSION, metavar="PCT",
                    help="fail a range that got slower than the baseline by more than PCT "
                         f"(default {DEFAULT_REGRESSION.replace('%', '%%')})")
    group.addoption(OPTION_PROFILE, default=DEFAULT_PROFILE, choices=PROFILES,
                    help=f"Hypothesis profile of the equivalence sweeps (default {DEFAULT_PROFILE})")
    group.addoption(OPTION_NO_BENCHMARK, action="store_true", default=False,
                    help="skip every generated per-range benchmark case")


def pytest_configure(config: pytest.Config) -> None:
    options = ", ".join(MARKER_OPTIONS)
    config.addinivalue_line(
        "markers",
        f"{MARKER}(op, *more_ops, **options): generate, per range of a rangedispatch op, an equivalence "
        f"check of every candidate and of the dispatched op (Hypothesis sizes, boundaries always included) "
        f"and a benchmark that catches stale tables and regressions. Options: {options}",
    )
    config.stash[RECORDS] = {}
    cache_dir = config.getoption(OPTION_CACHE_DIR)
    if cache_dir:
        os.environ["RANGEDISPATCH_CACHE_DIR"] = str(Path(cache_dir).resolve())
    rec.parse_threshold(config.getoption(OPTION_FAIL_REGRESSION))  # a bad value fails now, not per test
    path = config.getoption(OPTION_BASELINE)
    config.stash[BASELINE] = rec.load_baseline(path) if path else None


# -- generated cases -----------------------------------------------------------------------------

def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    marks = list(metafunc.definition.iter_markers(MARKER))
    if not marks:
        return
    from .cases import cases_for, parse_marker

    cases, seen = [], set()
    for mark in marks:
        try:
            specs = parse_marker(mark)
        except (TypeError, ValueError) as exc:  # shown as a collection error, without a traceback
            raise pytest.Collector.CollectError(f"{metafunc.definition.name}: {exc}") from None
        for spec in specs:
            if id(spec.op) in seen:  # the same op marked at function and class level: once
                continue
            seen.add(id(spec.op))
            cases += cases_for(spec)
    if metafunc.config.getoption(OPTION_NO_BENCHMARK):
        from .cases import BENCH

        cases = [c for c in cases if c.kind != BENCH]
    if CASE_ARG not in metafunc.fixturenames:
        metafunc.fixturenames.append(CASE_ARG)
    metafunc.parametrize(CASE_ARG, cases, ids=[c.id for c in cases])


@pytest.fixture
def range_case(request: pytest.FixtureRequest) -> Any:
    """The generated case of a ``range_autotune`` test (op, range, kind); only on marked tests."""
    raise pytest.UsageError(f"range_case is only available to tests marked with @pytest.mark.{MARKER}")


_CORES_SHARED = False


def _share_cores() -> None:
    """Under pytest-xdist, give each worker its share of the cores for torch's intra-op threads
    (unless ``OMP_NUM_THREADS`` says otherwise): workers whose thread pools each span every core
    spin against each other and run many times slower than a serial run."""
    global _CORES_SHARED
    if _CORES_SHARED:
        return
    _CORES_SHARED = True
    workers = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1") or 1)
    if workers <= 1 or "OMP_NUM_THREADS" in os.environ:
        return
    import torch

    torch.set_num_threads(max(1, (os.cpu_count() or 1) // workers))


@pytest.hookimpl(tryfirst=True)
def pytest_pyfunc_call(pyfuncitem: pytest.Function) -> None:
    """Run the generated check, then let pytest call the test's own body."""
    callspec = getattr(pyfuncitem, "callspec", None)
    if callspec is None or CASE_ARG not in callspec.params:
        return None
    __tracebackhide__ = True
    _share_cores()
    case = callspec.params[CASE_ARG]
    config = pyfuncitem.config
    from .cases import BENCH, COMPILED, GRAPHED, is_grid, is_multikernel
    from .locking import device_lock

    if is_multikernel(case.spec):
        from .hints import HintEquivalence as Equivalence, run_hint_benchmark as run_benchmark
    elif is_grid(case.spec):
        from .cells import CellEquivalence as Equivalence
        from .checks import run_benchmark
    else:
        from .checks import Equivalence, run_benchmark
    dispatch = getattr(case.op, "dispatch", None)
    record = rec.new_record(case.spec.name, str(dispatch) if dispatch else None, case.range)
    try:
        if case.kind in (COMPILED, GRAPHED):
            from .checks import run_compiled, run_graphed

            record["checked"] = [case.kind]
            record["examples"] = (run_compiled if case.kind == COMPILED else run_graphed)(case)
            record["statuses"] = ["ok"]
        elif case.kind == BENCH:
            threshold = rec.parse_threshold(config.getoption(OPTION_FAIL_REGRESSION))
            record.update(run_benchmark(case, baseline=config.stash[BASELINE], threshold=threshold))
            if record["problems"]:
                raise AssertionError("\n".join(record["problems"]))
        else:
            check = Equivalence(case, config.getoption(OPTION_PROFILE))
            device = check.devices[0] if check.devices else "cpu"
            try:
                with device_lock(device, exclusive=False):
                    check.run()
            finally:
                record["examples"] = check.examples
                record["checked"] = [case.kind]
            record["statuses"] = ["ok"]
    except AssertionError as exc:
        if case.kind != BENCH:
            record["statuses"] = ["mismatch"]
            record["problems"] = [str(exc).splitlines()[0]]
        raise
    except pytest.skip.Exception:
        raise
    except Exception as exc:
        record["statuses"] = ["error"]
        record["problems"] = [f"{case.id}: {type(exc).__name__}: {exc}"]
        raise
    finally:
        rec.merge(config.stash[RECORDS], _with_table(record, case))
    return None


def _with_table(record: dict[str, Any], case: Any) -> dict[str, Any]:
    """Winner, runner-up and margin from the op's table when no benchmark case measured them
    (a range the table split further names each piece's winner), and a note where a winner
    stops being the fastest inside its range."""
    table = getattr(case.op, "table", None)
    if table is None:
        return record
    provenance = getattr(case.op, "provenance", None)
    if provenance is not None:
        record = dict(record, table_source=provenance.describe())
    pieces = [r for r in table.results if _within(r.range, case.range)]
    if not pieces:
        return record
    notes = [f"{record['op']} {r.range}: {inner.describe(r.winner)}"
             for r in pieces if (inner := r.crossover()) is not None]
    if notes:
        record = dict(record, notes=notes)
    if record.get("winner"):
        return record
    if len(pieces) > 1:
        return dict(record, winner=", ".join(f"{r.winner} in {r.range}" for r in pieces))
    result = pieces[0]
    ranking = [(n, t) for n, t in result.ranking(table.reference)]
    winner_ratio = dict(ranking).get(result.winner)
    runner = next(((n, t) for n, t in ranking if n != result.winner), None)
    margin = runner[1] / winner_ratio - 1 if runner and winner_ratio and runner[1] != float("inf") else None
    return dict(record, winner=result.winner, runner_up=runner[0] if runner else None, margin=margin)


def _within(piece: Any, rng: Any) -> bool:
    """Whether a table's range is ``rng`` or (for a refined table) a part of it."""
    from .cases import is_cell

    if piece == rng:
        return True
    return not (is_cell(piece) or is_cell(rng)) and piece.within(rng)


# -- xdist: workers send their records, the controller merges them ----------------------------

def pytest_sessionfinish(session: pytest.Session) -> None:
    config = session.config
    workeroutput = getattr(config, "workeroutput", None)
    if workeroutput is not None:  # an xdist worker: hand the records to the controller
        workeroutput[WORKER_KEY] = rec.dumps(config.stash[RECORDS])
        return
    records = config.stash[RECORDS]
    save = config.getoption(OPTION_SAVE_BASELINE)
    if save and records:
        config.stash[_SAVED] = rec.save_baseline(save, rec.baseline_from(records, _previous(save)))
    report = config.getoption(OPTION_REPORT)
    if report and records:
        config.stash[_WRITTEN] = rec.write_report(report, records)


def _previous(path: str) -> Any:
    try:
        return rec.load_baseline(path)
    except ValueError:
        return None


@pytest.hookimpl(optionalhook=True)
def pytest_testnodedown(node: Any, error: Any) -> None:
    data = getattr(node, "workeroutput", {}).get(WORKER_KEY)
    if data:
        rec.merge_all(node.config.stash[RECORDS], rec.loads(data).values())


def pytest_terminal_summary(terminalreporter: Any, exitstatus: int, config: pytest.Config) -> None:
    if getattr(config, "workeroutput", None) is not None:
        return
    records = config.stash.get(RECORDS, {})
    if config.getoption(OPTION_REPORT) is not None:
        terminalreporter.section("rangedispatch report")
        if not records:
            terminalreporter.write_line(f"no @pytest.mark.{MARKER} cases ran")
        for line in rec.terminal_lines(records) if records else []:
            terminalreporter.write_line(line)
        for path in config.stash.get(_WRITTEN, []):
            terminalreporter.write_line(f"report written: {path}")
    saved = config.stash.get(_SAVED, None)
    if saved is not None:
        terminalreporter.write_line(f"rangedispatch baseline saved: {saved}")


# -- fixtures for users' own checks ----------------------------------------------------------------

@pytest.fixture
def rangedispatch_cache(tmp_path: Any, monkeypatch: pytest.MonkeyPatch, request: pytest.FixtureRequest) -> Any:
    """An isolated tuning-cache directory for one test (a ``pathlib.Path``)."""
    chosen = request.config.getoption(OPTION_CACHE_DIR)
    path = Path(chosen) if chosen else tmp_path / "rangedispatch-cache"
    monkeypatch.setenv("RANGEDISPATCH_CACHE_DIR", str(path))
    return path


@pytest.fixture
def assert_branches_equivalent() -> Any:
    """``assert_branches_equivalent(op, *example, sizes=None, rtol=None, atol=None)``: every
    candidate matches the reference at each range's boundaries (lo-1, lo, lo+1, hi-1, hi)."""
    from .equivalence import assert_branches_equivalent as check

    return check


@pytest.fixture
def range_sizes() -> Any:
    """``range_sizes(op)``: ``{range: [boundary sizes]}`` for a rangedispatch op."""
    from .equivalence import boundary_sizes

    def sizes(op: Any) -> Any:
        from rangedispatch import dispatcher_of

        plan = dispatcher_of(op).plan
        return {rng: boundary_sizes(rng) for rng in plan.ranges}

    return sizes


@pytest.fixture
def range_strategies() -> Any:
    """``range_strategies(op, max_size=None)``: ``{range: Hypothesis strategy of sizes}``; each
    strategy draws inside the range and favours its boundary sizes."""
    from .equivalence import size_strategies

    return size_strategies


@pytest.fixture
def range_benchmark(request: pytest.FixtureRequest) -> Any:
    """``range_benchmark(fn, *args, **kwargs)``: pytest-benchmark's ``benchmark`` fixture with a
    device synchronisation inside every timed call when the arguments live on a GPU, so its
    statistics, storage and ``--benchmark-compare`` see device time, not launch time."""
    benchmark = request.getfixturevalue("benchmark")
    from .equivalence import synchronised

    def run(fn: Any, *args: Any, rounds: int | None = None, warmup_rounds: int = 3, **kwargs: Any) -> Any:
        timed = synchronised(fn, args, kwargs)
        if rounds is None:
            return benchmark(timed, *args, **kwargs)
        return benchmark.pedantic(timed, args=args, kwargs=kwargs, rounds=rounds, warmup_rounds=warmup_rounds)

    return run
