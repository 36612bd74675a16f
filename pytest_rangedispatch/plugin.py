"""Wiring only: options, the marker, fixtures. No torch or Hypothesis import at load time."""

from __future__ import annotations

from typing import Any

import pytest

from .options import MARKER, OPTION_CACHE_DIR, OPTION_REPORT


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("rangedispatch", "range-based autotuning checks")
    group.addoption(
        OPTION_CACHE_DIR,
        default=None,
        metavar="PATH",
        help="tuning cache directory for the session (default: a fresh temporary directory)",
    )
    group.addoption(
        OPTION_REPORT,
        action="store_true",
        default=False,
        help="print a per-op, per-range table of tuned winners at the end of the session",
    )


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        f"{MARKER}(op, ...): check that every candidate of a rangedispatch op computes the same "
        "function as the reference in every range (boundaries included)",
    )


@pytest.fixture
def rangedispatch_cache(tmp_path: Any, monkeypatch: pytest.MonkeyPatch, request: pytest.FixtureRequest) -> Any:
    """An isolated tuning-cache directory for one test (a ``pathlib.Path``)."""
    chosen = request.config.getoption(OPTION_CACHE_DIR)
    from pathlib import Path

    path = Path(chosen) if chosen else tmp_path / "rangedispatch-cache"
    monkeypatch.setenv("RANGEDISPATCH_CACHE_DIR", str(path))
    return path


@pytest.fixture
def assert_branches_equivalent() -> Any:
    """``assert_branches_equivalent(op, *example, sizes=None)``: every candidate matches the
    reference at each range's boundaries (lo, lo+1, hi-1, hi) with dtype-aware tolerances."""
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
