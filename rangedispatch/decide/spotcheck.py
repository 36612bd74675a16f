"""The load-time spot check: a loaded table is put to one cheap test before it is trusted.

For each range of the table, at its cheapest recorded sample size, the winner runs against a
partner (the reference; or, where the reference won, the fastest rival):

- the winner's output must pass tuning's own check against the reference's;
- the winner/partner time ratio must stay within a noise-aware bound of the ratio recorded
  in the table: it may not grow by more than ``SPOT_BOUND`` (or three times the range's noise,
  when larger), which would threaten the decision, nor shrink below ``1 / SPOT_GAIN_BOUND`` of
  it (the winner looking that much better means the machine or the code changed drastically;
  a smaller gain leaves the decision standing, so noise there re-tunes nothing).

A ratio out of bound is timed once more, three times as long, before it counts, so a noisy
moment does not throw a good table away. A change still out of bound but within
``SPOT_GAIN_BOUND`` either way may be a noisy recording rather than a change: the range's
decision is then put to the tuner's own measurement at every sample of the range, and the
table stands if the winner still holds its partner everywhere (within ``SPOT_TIE`` or the
noise). A change beyond that bound fails at once. What the fingerprint cannot see (a torch
backend switch, a mutable object's attribute, another machine under the same name) shows
up here as wrong values or a changed ratio, and the op re-tunes.

The timing is light (a pilot, then three interleaved rounds of ``SPOT_ROUND_MS`` per job, or of
one call for a job longer than that), and
the check keeps to ``SPOT_SHARE`` of the table's recorded tuning time. Each range is priced
before it starts, from the timings the table recorded at its sample (the calls the check will
make) plus the least fixed cost a checked range has shown so far. The cheapest range goes first
and is always checked; the others follow in a random order, each only where its price fits what
is left of the budget, so one costly range (attention at a long sequence) never blows the
bound, and repeated loads cover every range that fits (``bench/spot_check.py`` measures the
cost).
"""

from __future__ import annotations

import contextlib
import functools
import math
import random
import statistics
import time
from dataclasses import dataclass
from typing import Any, Callable, Iterator, Mapping, Sequence

from ..measure.timing import Job, log_ratios, measure_jobs, two_standard_errors
from ..measure.verify import aliased_inputs, reference_run, run_candidate, truth_of
from .table import RangeResult, TuningTable

SPOT_BOUND = 1.5  # a winner/partner ratio grown this much over the recorded one fails the check
SPOT_GAIN_BOUND = 3.0  # ... and one shrunk to a third of it
SPOT_ROUND_MS = 0.25
SPOT_ROUNDS = 3
PHASES = ("inputs", "reference", "candidates", "timing", "second look")  # where a check's time goes
SPOT_TIE = 0.05  # a winner within this of its partner still holds its range (the rest is noise)
SPOT_SHARE = 0.04  # of the table's recorded tuning time: the check's budget (the cheapest range is checked past it)


@dataclass(frozen=True)
class SpotCheck:
    """The outcome: ``problems`` (empty when it passed), ranges checked (of ``ranges``),
    seconds spent, and where they went (``phases``: seconds making inputs, running the
    reference, running the winner and its partner, timing them, and timing them again where
    the first look was out of bound)."""

    problems: tuple[str, ...] = ()
    checked: int = 0
    seconds: float = 0.0
    ranges: int = 0
    phases: tuple[tuple[str, float], ...] = ()

    @property
    def passed(self) -> bool:
        return not self.problems


@dataclass(frozen=True)
class Provenance:
    """Where a table in force came from.

    Args:
        source: ``"tuned"`` (benchmarked in this process), ``"cache"`` or ``"file"``.
        path: the file it was loaded from or saved to (``None``: not on disk).
        status: ``"verified"`` (the spot check passed), ``"trusted"`` (not checked), ``"pending"``
            (a loaded file checked at its first eager call), ``"fresh"`` (just tuned).
        tuned_at: when the table was tuned (seconds since the epoch).
        check: the spot check, when one ran.
        why: for a table tuned now, why it was (no table, code changed, check failed).
    """

    source: str
    path: str | None
    status: str
    tuned_at: float
    check: SpotCheck | None = None
    why: str = ""

    def describe(self) -> str:
        when = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(self.tuned_at))
        where = f" {self.path}" if self.path else ""
        if self.source == "tuned":
            saved = f", saved to{where}" if self.path else ""
            return f"tuned in this process at {when}{saved}" + (f" ({self.why})" if self.why else "")
        origin = "the cache" if self.source == "cache" else "the file"
        head = f"loaded from {origin}{where} (tuned {when})"
        if self.status == "verified" and self.check is not None:
            of = f" of {self.check.ranges}" if self.check.ranges > self.check.checked else ""
            return (f"{head}, verified by a spot check of {self.check.checked}{of} range(s) in "
                    f"{self.check.seconds * 1e3:.0f} ms")
        if self.status == "pending":
            return f"{head}, to be spot-checked at its first eager call"
        return f"{head}, trusted without a check"


def spot_check(table: TuningTable, *, candidates: Mapping[str, Any], reference: Any, factory: Any,
               benchmarker: Any, rtol: float | None = None, atol: float | None = None, check: bool = True,
               sync: Callable[[], None] | None = None, budget_s: float | None = None,
               seed: int | None = None) -> SpotCheck:
    """Check ``table`` against the code and machine of now (see the module docstring).

    Args:
        candidates: name -> :class:`~rangedispatch.decide.candidates.Candidate` (reference included).
        reference: the reference candidate.
        factory: makes inputs at a dispatch size (an :class:`~rangedispatch.decide.inputs.InputFactory`).
        benchmarker: the op's benchmarker; its timer (or its ``measure``) is the clock the
            recorded timings came from.
        budget_s: stop starting ranges once the next one would pass this (at least one range is
            checked: the cheapest by its recorded timings); the rest are taken in a random order
            (``seed``), so repeated loads cover all that fit.
    """
    start = time.perf_counter()
    problems: list[str] = []
    checked = 0
    names = factory.template.names
    order = []  # (range, what to check there, its price)
    for result in table.results:
        pick = _pick(result, table.reference)
        order.append((result, pick, _price(result, pick, table.reference)))
    random.Random(seed).shuffle(order)
    if order:  # the cheapest first (a stable sort): the one range always checked keeps the check cheap
        cheapest = min(order, key=lambda entry: entry[2])
        order.sort(key=lambda entry: entry is not cheapest)
    fixed = math.inf  # the least a checked range cost beyond its price: what each range adds
    phases = dict.fromkeys(PHASES, 0.0)
    for result, pick, price in order:
        began = time.perf_counter()
        if budget_s is not None and checked and began - start + fixed + price > budget_s:
            continue  # too dear for what is left; a cheaper one further on may still fit
        if pick is None:
            continue
        i, partner = pick
        size = result.samples[i] if table.dispatch is not None else None
        where = f"range {result.range} at size {size}" if size is not None else "the example inputs"
        winner = candidates.get(result.winner)
        other = candidates.get(partner)
        if winner is None or other is None:
            problems.append(f"{where}: candidate {result.winner if winner is None else partner!r} is gone")
            continue
        try:
            with _phase(phases, "inputs"):
                args, kwargs = factory.make(size)
            with _phase(phases, "reference"):
                expected, owned = reference_run(reference.call, args, kwargs, names, sync)
        except Exception as exc:
            problems.append(f"{where}: the reference {reference.name!r} now raises {type(exc).__name__}: {exc}")
            continue
        checked += 1
        ref_aliases = aliased_inputs(expected, args, kwargs, names)
        truth = truth_of(reference.call, args, kwargs)
        wrong = None
        with _phase(phases, "candidates"):
            for cand in (winner, other):
                if cand is reference:
                    continue
                _, why = run_candidate(cand.call, args, kwargs, expected, truth=truth, names=names, owned=owned,
                                       rtol=rtol, atol=atol, check=check and cand is winner, sync=sync,
                                       ref_aliases=ref_aliases)
                if why is not None and cand is winner:
                    wrong = f"{where}: the winner {cand.name!r} {why}"
                elif why is not None:
                    wrong = f"{where}: {cand.name!r} {why}"
        if wrong is not None:
            problems.append(wrong)
            continue
        recorded = _recorded(result, result.winner, partner, i)
        jobs = _pair_jobs(winner, other, size or 0, args, kwargs)
        with _phase(phases, "timing"):
            now, spread = light_ratio(benchmarker, jobs)
        bound = max(SPOT_BOUND, 1 + 3 * max(result.noise, spread))
        if not _within(now, recorded, bound):  # a second, longer look before it counts
            with _phase(phases, "second look"):
                again, _ = light_ratio(benchmarker, jobs, rounds=3 * SPOT_ROUNDS, round_ms=4 * SPOT_ROUND_MS)
            if math.isfinite(again):
                now = again
        if not _within(now, recorded, bound):
            changed = (f"{where}: {result.winner!r} takes {now:.2f}x the time of {partner!r} "
                       f"where the table recorded {recorded:.2f}x")
            if _drastic(now, recorded) or table.dispatch is None:
                problems.append(changed)
            else:  # a moderate change, or a noisy recording: does the decision itself still hold?
                with _phase(phases, "second look"):
                    lost = _where_it_loses(result, (winner, other), (i, jobs), factory, benchmarker)
                if lost:
                    problems.append(f"{changed}, and loses to it at {lost}")
        fixed = min(fixed, max(0.0, time.perf_counter() - began - price))
    return SpotCheck(tuple(problems), checked, time.perf_counter() - start, len(table.results),
                     tuple(phases.items()))


@contextlib.contextmanager
def _phase(phases: dict[str, float], name: str) -> Iterator[None]:
    """Adds the seconds spent in the block to ``phases[name]``."""
    began = time.perf_counter()
    try:
        yield
    finally:
        phases[name] += time.perf_counter() - began


def _pick(result: RangeResult, reference: str) -> tuple[int, str] | None:
    """The sample to check at and the winner's partner: of the samples where both were timed,
    the one where they cost least (any sample of the range shows a changed ratio or wrong
    values; the cheapest keeps the check cheap where a range spans costly sizes)."""
    won = result.timings.get(result.winner)
    if not won:
        return None
    if result.winner != reference:
        partners = [reference]
    else:
        live = [n for n in result.timings if n != reference and n not in result.disqualified]
        partners = sorted(live, key=lambda n: result.ratio(n, reference))[:1]
    for partner in partners:
        theirs = result.timings.get(partner) or ()
        both = [i for i in range(min(len(won), len(theirs)))
                if math.isfinite(won[i]) and math.isfinite(theirs[i]) and won[i] > 0 and theirs[i] > 0]
        if both:
            return min(both, key=lambda i: won[i] + theirs[i]), partner
    return None


def _price(result: RangeResult, pick: tuple[int, str] | None, reference: str) -> float:
    """What checking ``result`` at ``pick`` costs in seconds by the table's recorded timings:
    the reference once, then the winner and its partner once each (values), twice (pilot) and
    ``SPOT_ROUNDS`` rounds of ``SPOT_ROUND_MS`` or one call. A range with nothing to check is free."""
    if pick is None:
        return 0.0
    i, partner = pick
    ms = [result.timings[result.winner][i], result.timings[partner][i]]
    ref = result.timings.get(reference) or ()
    ref_ms = ref[i] if i < len(ref) and math.isfinite(ref[i]) else max(ms)
    return (ref_ms + sum(3 * t + SPOT_ROUNDS * max(t, SPOT_ROUND_MS) for t in ms)) / 1e3


def _drastic(now: float, recorded: float) -> bool:
    """A change of the ratio beyond ``SPOT_GAIN_BOUND`` either way: the code or the machine
    changed, whatever the decision at this sample says."""
    return not (math.isfinite(now) and now > 0) or abs(math.log(now / recorded)) > math.log(SPOT_GAIN_BOUND)


def _where_it_loses(result: RangeResult, pair: tuple[Any, Any], first: tuple[int, Sequence[Job]], factory: Any,
                    benchmarker: Any) -> str:
    """The range's decision put to the tuner's own measurement: the winner against its partner
    at every sample of the range. Returns where the winner now loses beyond noise (``""``: it
    holds everywhere, so the recorded ratio was off, not the decision). A winner that was a
    near-tie at a sample may stay one."""
    winner, other = pair
    for k, size in enumerate(result.samples):
        jobs = first[1] if k == first[0] else _pair_jobs(winner, other, size, *factory.make(size))
        a, b = measure_jobs(benchmarker, jobs, warm=k == first[0])
        if not (math.isfinite(a.ms) and math.isfinite(b.ms) and b.ms > 0):
            return f"size {size} ({winner.name!r}: {a.status}, {other.name!r}: {b.status})"
        was = _recorded(result, winner.name, other.name, k)
        tolerance = 1 + max(SPOT_TIE, 3 * max(result.noise, a.spread, b.spread))
        if a.ms / b.ms > max(was, 1.0) * tolerance:
            return f"size {size} ({a.ms / b.ms:.2f}x)"
    return ""


def _pair_jobs(winner: Any, other: Any, size: int, args: Sequence[Any], kwargs: Mapping[str, Any]) -> list[Job]:
    """The winner and its partner on one input, as jobs to time."""
    return [Job(c.name, size, functools.partial(c.call, *args, **kwargs)) for c in (winner, other)]


def _recorded(result: RangeResult, name: str, partner: str, k: int) -> float:
    """``name``'s recorded time over ``partner``'s at sample ``k`` (1.0 where either was not timed)."""
    a, b = (result.timings.get(n) or () for n in (name, partner))
    if k < min(len(a), len(b)) and b[k] > 0 and math.isfinite(a[k] / b[k]):
        return a[k] / b[k]
    return 1.0


def _within(now: float, recorded: float, bound: float) -> bool:
    """Whether the winner/partner ratio ``now`` still backs the decision recorded as ``recorded``."""
    if not (math.isfinite(now) and now > 0 and recorded > 0):
        return False
    change = math.log(now / recorded)
    return -math.log(max(bound, SPOT_GAIN_BOUND)) <= change <= math.log(bound)


def light_ratio(benchmarker: Any, jobs: Sequence[Job], rounds: int = SPOT_ROUNDS,
                round_ms: float = SPOT_ROUND_MS) -> tuple[float, float]:
    """``jobs[0]``'s time over ``jobs[1]``'s and the relative uncertainty of that ratio, from a
    short measurement: the core's timer in ``rounds`` interleaved rounds of ``round_ms`` per job,
    a job whose call is longer than that timed by one call a round (no device warm-up beyond
    the rounds themselves: the ratio of two jobs timed in turn holds on a GPU whose clocks are
    still rising), or a plain benchmarker's ``measure``."""
    timer = getattr(benchmarker, "timer", None)
    if timer is None or not hasattr(timer, "batch"):
        measured = measure_jobs(benchmarker, jobs, warm=True)
        a, b = measured[0], measured[1]
        ratio = a.ms / b.ms if b.ms > 0 and math.isfinite(b.ms) else math.inf
        return ratio, max(a.spread, b.spread)
    try:
        pilot = [statistics.median(timer.once(j) for _ in range(2)) for j in jobs]
        seen: list[list[float]] = [[], []]
        for _ in range(rounds):
            for k, job in enumerate(jobs):  # a call longer than a round is one call a round
                seen[k].append(timer.once(job) if pilot[k] >= round_ms
                               else statistics.median(timer.batch(job, round_ms, pilot[k])))
    except Exception:
        return math.inf, 0.0
    finally:
        release = getattr(timer, "release", None)
        if release is not None:
            release()
    logs = log_ratios(seen[0], seen[1])
    spread = math.expm1(two_standard_errors(logs)) if len(logs) >= 2 else 0.0
    return min(seen[0]) / min(seen[1]), spread

