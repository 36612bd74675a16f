"""Choosing a winner per range: inputs at several sizes, correctness checks, timing, decision.

The tuner is pure logic over a :class:`~rangedispatch.measure.timing.Benchmarker`; with a fake
benchmarker its choices are exactly testable on the CPU.
"""

from __future__ import annotations

import logging
import math
import statistics
import time
import warnings
from dataclasses import asdict, dataclass, field
from typing import Any, Callable, Mapping, Sequence

from .candidates import Candidate
from .config import Plan
from .environment import Environment
from .inputs import InputFactory
from .ranges import Range
from .table import RangeResult, TuningTable
from ..measure.timing import FAILED, RACED, SLOW, Benchmarker, Job, log_ratios, measure_jobs, two_standard_errors, uncertainty
from ..measure.gradients import Gradients, candidate_gradient_fault, floating_inputs, gradients, train_step
from ..measure.verify import aliased_inputs, reference_run, run_candidate, truth_of

log = logging.getLogger("rangedispatch")

DEFAULT_UNBOUNDED_MIN = 256


OBJECTIVES = ("device", "wall", "train")


@dataclass(frozen=True)
class TunerSettings:
    """How ranges are tuned.

    Args:
        samples_per_range: sizes benchmarked per range: near ``lo``, geometric middles,
            near ``hi - 1`` (or the upper bound for an unbounded range). ``None`` (default):
            3, and more for a range wider than 4 octaves (see :func:`sample_count`).
        upper_bound: largest size benchmarked for an unbounded range (default
            ``max(2 * lo, 256)``).
        min_speedup: a candidate replaces the reference only if at least this much faster.
        noise_floor: the smallest margin by which a candidate must beat the reference; the
            measured noise is used when larger.
        tie: candidates within this relative difference of the fastest tie; the first
            declared of them wins.
        budget_s: wall-clock budget for the timing of one tuning run (``None``: no budget);
            past it, measurements stop after one round per candidate.
        cuda_graphs: on CUDA, time CUDA-graph replays of each candidate.
        check: compare every candidate's output with the reference's during tuning.
        rtol, atol: override the dtype-aware tolerances of that check.
        refine: a hand-given range whose winner stops being the fastest inside it (see
            :meth:`~rangedispatch.decide.table.RangeResult.crossover`) is split where the two cross,
            located by bisection as ``split_points="auto"`` does; the given split points stay.
        objective: what a decision minimises. ``"device"`` (the default): device time per call
            (on CUDA, host work never leaks in: what CUDA graphs and compiled code pay); ``"wall"``:
            wall time per call of back-to-back eager calls, host launches included (what an
            eager caller pays: a five-launch pipeline costs five launches); ``"train"``: device
            time of forward plus backward (every floating input requiring grad). On a CPU the
            first two are the same.
    """

    samples_per_range: int | None = None
    upper_bound: int | None = None
    min_speedup: float = 1.0
    noise_floor: float = 0.02
    tie: float = 0.005
    budget_s: float | None = 60.0
    cuda_graphs: bool = False
    check: bool = True
    rtol: float | None = None
    atol: float | None = None
    refine: bool = False
    objective: str = "device"

    @property
    def base_samples(self) -> int:
        """Samples per range before any widening: ``samples_per_range`` or 3."""
        return DEFAULT_SAMPLES if self.samples_per_range is None else self.samples_per_range

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        if data["objective"] == "device":  # the default: the keys of tables made before it existed
            del data["objective"]
        return data


def range_top(rng: Range, upper_bound: int | None = None) -> int:
    """The largest size tuned or checked in ``rng``: ``hi - 1``, or for an unbounded range
    ``upper_bound`` (default ``max(2 * lo, 256)``)."""
    if rng.hi is not None:
        return rng.hi - 1
    top = upper_bound if upper_bound is not None else max(2 * max(rng.lo, 1), DEFAULT_UNBOUNDED_MIN)
    return max(top, rng.lo)


def effective_upper_bound(plan_dispatch: Any, settings: TunerSettings) -> int | None:
    """The top of an unbounded range: the dispatch spec's ``range_upper_bound``, else the settings'."""
    if plan_dispatch is not None and plan_dispatch.upper_bound is not None:
        return plan_dispatch.upper_bound
    return settings.upper_bound


def sample_sizes(rng: Range, *, count: int = 3, upper_bound: int | None = None,
                 profile: Any = None) -> tuple[int, ...]:
    """Sizes to benchmark inside ``rng``: near lo, geometric middle(s), near the top; with a
    ``profile`` that has traffic in the range, its traffic quantiles there instead.

    Example:
        >>> sample_sizes(Range(512, 2048))
        (512, 1024, 2047)
        >>> sample_sizes(Range(2048, None))
        (2048, 2896, 4096)
    """
    lo = max(rng.lo, 1)
    if has_traffic(profile, rng):
        inside = profile.quantiles(count, lo=rng.lo, hi=None if rng.hi is None else rng.hi - 1)
        if inside:
            return tuple(inside)
    top = range_top(rng, upper_bound)
    if rng.hi is None:
        top = max(top, lo)
    if top < lo:  # the range [0, 1)
        return (rng.lo,)
    if count <= 1:
        return (round(math.sqrt(lo * top)),)
    points = {round(lo * (top / lo) ** (i / (count - 1))) for i in range(count)}
    return tuple(sorted(min(max(p, lo), top) for p in points))


def has_traffic(profile: Any, rng: Range) -> bool:
    """Whether a recorded size profile has calls inside ``rng``."""
    return profile is not None and profile.total(rng.lo, None if rng.hi is None else rng.hi - 1) > 0


DEFAULT_SAMPLES = 3
#: by default a range wider than this many octaves per gap between its samples gets more samples
OCTAVES_PER_SAMPLE = 2.0
MAX_EXTRA_SAMPLES = 3


def sample_count(rng: Range, samples_per_range: int | None, upper_bound: int | None = None) -> int:
    """The number of sizes to benchmark in ``rng``: ``samples_per_range`` when given; by
    default 3, or one per ``OCTAVES_PER_SAMPLE`` octaves for a wider range (at most
    ``MAX_EXTRA_SAMPLES`` more), so a candidate that wins only in the middle of a wide range
    is seen there (3 samples of ``[1, 129)`` are 1, 11 and 128).

    Example:
        >>> sample_count(Range(1, 129), None), sample_count(Range(512, 2048), None), sample_count(Range(1, 129), 3)
        (5, 3, 3)
    """
    if samples_per_range is not None:
        return samples_per_range
    lo = max(rng.lo, 1)
    octaves = math.log2(max(range_top(rng, upper_bound), lo) / lo)
    return max(DEFAULT_SAMPLES, min(DEFAULT_SAMPLES + MAX_EXTRA_SAMPLES, 1 + math.ceil(octaves / OCTAVES_PER_SAMPLE - 1e-9)))


def log_weights(sizes: Sequence[int]) -> tuple[float, ...] | None:
    """Weights for a mean over geometrically spread sample sizes: each sample stands for the
    stretch of log-size halfway to its neighbours (the trapezoid rule), so the samples near
    ``lo`` and ``hi - 1`` count half a gap each, and the mean is the one over sizes spread
    evenly in log-size through the range. ``None`` (equal weights) below 3 samples.

    Example:
        >>> log_weights([1, 4, 16])
        (0.25, 0.5, 0.25)
    """
    if len(sizes) < 3 or any(s <= 0 for s in sizes):
        return None
    logs = [math.log(s) for s in sizes]
    gaps = [b - a for a, b in zip(logs, logs[1:])]
    raw = [((gaps[i - 1] if i > 0 else 0.0) + (gaps[i] if i < len(gaps) else 0.0)) / 2 for i in range(len(logs))]
    total = sum(raw)
    return tuple(round(w / total, 6) for w in raw) if total > 0 else None


def _sync(device_type: str) -> None:
    if device_type == "cuda":
        import torch

        torch.cuda.synchronize()


def tune_plan(
    *,
    op_name: str,
    plan: Plan,
    reference: Candidate,
    factory: InputFactory,
    benchmarker: Benchmarker,
    settings: TunerSettings,
    environment: Environment,
    device_type: str = "cpu",
    profile: Any = None,
    only: Sequence[Range] | None = None,
    refine: Callable[..., list[RangeResult]] | None = None,
) -> TuningTable:
    """Tune every range of ``plan`` (or only the ranges ``only``; the others are left out of
    the table) and return the table, logging as it goes. With a ``profile`` of recorded
    sizes, a range with traffic is sampled at its traffic quantiles. With ``settings.refine``,
    ``refine`` (``discover.refine_range``) splits a range where its winner stops being the
    fastest."""
    log.info("=== Range-based Autotuning for %s ===", op_name)
    log.info("Dispatch dimension: %s", plan.dispatch if plan.dispatch else "(none: one global choice)")
    upper = effective_upper_bound(plan.dispatch, settings)
    results = []
    ranges = [r for r in plan.ranges if only is None or r in only]
    counts = {r: sample_count(r, settings.samples_per_range, upper) if plan.dispatch else 1 for r in ranges}
    budget = Budget(settings.budget_s, sum(counts.values()))
    prober = Prober(op_name, reference, factory, benchmarker, settings, device_type, budget)
    for rng in ranges:
        cands = [c for c in plan.candidates[rng] if c.name != reference.name]
        sizes: Sequence[int | None] = (
            sample_sizes(rng, count=counts[rng], upper_bound=upper, profile=profile)
            if plan.dispatch is not None
            else (None,)
        )
        # geometric samples stand for stretches of log-size; traffic quantiles for equal traffic
        weighted = plan.dispatch is not None and not has_traffic(profile, rng)
        result, probes = _tune_range(rng, cands, sizes, prober, weighted=weighted)
        n = len(plan.candidates[rng])
        log.info(
            "Range %s: Selected implementation '%s' after benchmarking %d candidate%s",
            rng, result.winner, n, "" if n == 1 else "s",
        )
        if settings.refine and plan.dispatch is not None and refine is not None:
            results += refine(result, cands, probes, prober, upper)
        else:
            results.append(result)
    return make_table(op_name, plan, reference, results, factory, settings, environment)


def make_table(op_name: str, plan: Plan, reference: Candidate, results: Sequence[RangeResult],
               factory: InputFactory, settings: TunerSettings, environment: Environment,
               table_type: type = TuningTable) -> Any:
    all_cands = {reference.name: reference}
    for rng in plan.ranges:
        for c in plan.candidates[rng]:
            all_cands.setdefault(c.name, c)
    table = table_type(
        op=op_name,
        dispatch=str(plan.dispatch) if plan.dispatch else None,
        reference=reference.name,
        results=tuple(results),
        candidates={n: c.fingerprint for n, c in all_cands.items()},
        code={n: c.code_parts for n, c in all_cands.items()},
        environment=environment,
        signature=factory.template.signature(plan.dispatch),
        settings=settings.to_json(),
    )
    log_summary(table)
    return table


def log_summary(table: TuningTable) -> None:
    log.info("=== Range-based Autotuning Summary for %s ===", table.op)
    for line in table.summary():
        log.info("%s", line)


class Budget:
    """A wall-clock budget shared by the measurements of one tuning run: each measurement
    gets an equal share of what is left."""

    def __init__(self, seconds: float | None, measurements: int) -> None:
        self.end = None if seconds is None else time.perf_counter() + seconds
        self.left = max(1, measurements)

    def next_deadline(self) -> float | None:
        if self.end is None:
            return None
        share = max(0.0, self.end - time.perf_counter()) / self.left
        self.left = max(1, self.left - 1)
        return time.perf_counter() + share


@dataclass
class Probe:
    """The candidates measured at one dispatch size: robust ms (``raced`` ones: a lower
    bound), why some lost, the round medians of the fully measured ones."""

    size: int
    times: dict[str, float]
    lost: dict[str, str]
    raced: set[str] = field(default_factory=set)
    rounds: dict[str, list[float]] = field(default_factory=dict)  # of the fully measured ones

    @property
    def fastest(self) -> float:
        return min(self.times.values(), default=math.inf)

    @property
    def spreads(self) -> list[float]:
        return [uncertainty(r) for r in self.rounds.values()]


class Prober:
    """Checks and times an op's candidates at one dispatch size at a time: the step shared by
    range tuning and split-point discovery. Counts the (candidate, size) measurements."""

    def __init__(self, op_name: str, reference: Candidate, factory: InputFactory, benchmarker: Benchmarker,
                 settings: TunerSettings, device_type: str, budget: Budget | None = None) -> None:
        self.op_name, self.reference, self.factory = op_name, reference, factory
        self.benchmarker, self.settings, self.device_type = benchmarker, settings, device_type
        self.budget = budget or Budget(None, 1)
        self.too_slow: dict[str, str] = {}  # candidates never called again
        self.benchmarks = 0
        self.sync = (lambda: _sync(device_type)) if device_type == "cuda" else None

    def probe(self, size: int | None, cands: Sequence[Candidate], label: str) -> Probe | None:
        """Measure the reference and ``cands`` at ``size``; ``None`` if the reference fails."""
        where = f"size {size}" if size is not None else "the example inputs"
        names = self.factory.template.names
        try:
            args, kwargs = self.factory.make(size)
            expected, owned = reference_run(self.reference.call, args, kwargs, names, self.sync)
        except Exception as exc:
            warnings.warn(
                f"{self.op_name}: {label}: the reference {self.reference.name!r} failed at {where} "
                f"({type(exc).__name__}: {exc}); that size is skipped",
                RuntimeWarning, stacklevel=5,
            )
            return None
        truth = truth_of(self.reference.call, args, kwargs)
        ref_aliases = aliased_inputs(expected, args, kwargs, names)
        lost: dict[str, str] = {}
        grads = self._reference_gradients(args, kwargs)
        jobs = [Job(self.reference.name, size or 0, self._job(self.reference.call, args, kwargs, grads))]
        for cand in cands:
            if cand.name in self.too_slow:
                lost[cand.name] = self.too_slow[cand.name]
                continue
            _, reason = run_candidate(cand.call, args, kwargs, expected, truth=truth, names=names, owned=owned,
                                      rtol=self.settings.rtol, atol=self.settings.atol, check=self.settings.check,
                                      sync=self.sync, ref_aliases=ref_aliases)
            if reason is None and grads is not None:
                reason = candidate_gradient_fault(cand.call, self.reference.call, args, kwargs, names, grads,
                                                  rtol=self.settings.rtol, atol=self.settings.atol, sync=self.sync)
            if reason is not None:
                lost[cand.name] = self._lose(cand.name, label, f"{reason} at {where}")
                continue
            jobs.append(Job(cand.name, size or 0, self._job(cand.call, args, kwargs, grads)))
        measured = measure_jobs(self.benchmarker, jobs, deadline=self.budget.next_deadline(), warm=True)
        self.benchmarks += len(jobs)
        out = Probe(size or 0, {}, lost)
        for m in measured:
            if m.status in (SLOW, FAILED):
                why = (f"too slow: one call took {m.ms:.0f} ms, past the per-call limit" if m.status == SLOW
                       else "raised while being timed")
                if m.name == self.reference.name:
                    out.times[m.name] = m.ms if m.status == SLOW else math.inf
                    continue
                out.lost[m.name] = self._lose(m.name, label, f"{why} at {where}")
                if m.status == SLOW:
                    self.too_slow[m.name] = out.lost[m.name]
                continue
            out.times[m.name] = m.ms
            if m.status == RACED:
                out.raced.add(m.name)
            elif m.rounds:
                out.rounds[m.name] = list(m.rounds)
        if log.isEnabledFor(logging.INFO):
            fastest = min(out.times, key=out.times.__getitem__, default="-")
            log.info("%s: %s at %s: fastest %s (%.4g ms), %d measured, %d lost", self.op_name, label, where,
                     fastest, out.fastest, len(out.times), len(out.lost))
        return out

    def _reference_gradients(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Gradients | None:
        """The reference's gradients at these inputs, for a training call's signature (its
        tensors require grad) or ``objective="train"``; ``None`` when there is nothing to check."""
        names = self.factory.template.names
        wanted = self.factory.template.grad_names
        if not wanted and self.settings.objective == "train":
            wanted = floating_inputs(args, kwargs, names)
        if not wanted:
            return None
        found = gradients(self.reference.call, args, kwargs, names, wanted=wanted, sync=self.sync)
        return found if found.requires_grad and found.error is None else None

    def _job(self, call: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any],
             grads: Gradients | None) -> Callable[[], Any]:
        """What is timed: the call, or with ``objective="train"`` its forward plus backward."""
        if grads is not None and self.settings.objective == "train":
            return train_step(call, args, kwargs, self.factory.template.names, list(grads.grads), grads.cotangents)
        return _bind(call, args, kwargs)

    def _lose(self, name: str, label: str, why: str) -> str:
        warnings.warn(f"{self.op_name}: candidate {name!r} loses {label}: {why}", RuntimeWarning, stacklevel=6)
        return why


def _tune_range(
    rng: Range,
    cands: Sequence[Candidate],
    sizes: Sequence[int | None],
    prober: Prober,
    weighted: bool = False,
) -> tuple[RangeResult, list[Probe]]:
    reference = prober.reference
    timings: dict[str, list[float]] = {c.name: [] for c in [reference, *cands]}
    disqualified: dict[str, str] = {}
    dropped: dict[str, str] = {}
    used_sizes: list[int] = []
    probes: list[Probe] = []
    race = getattr(prober.benchmarker, "race_factor", 2.0) ** 2
    for size in sizes:
        live = [c for c in cands if c.name not in disqualified and c.name not in dropped]
        probe = prober.probe(size, live, f"range {rng}")
        if probe is None:
            continue
        used_sizes.append(probe.size)
        probes.append(probe)
        for name, why in probe.lost.items():
            disqualified.setdefault(name, why)
        for name, ms in probe.times.items():
            timings[name].append(ms)
            if name in probe.raced and ms > race * probe.fastest and name != reference.name:
                dropped[name] = (f"{ms / probe.fastest:.1f}x slower than the fastest at size {probe.size}; "
                                 "not timed at the range's other sizes")
    _confirm(rng, cands, used_sizes, timings, disqualified, dropped, prober)
    n = len(used_sizes)
    final = {  # a dropped candidate keeps the times it has; sizes it skipped are inf
        name: tuple([math.inf] * n) if name in disqualified else tuple(ts[:n]) + (math.inf,) * (n - len(ts))
        for name, ts in timings.items()
    }
    order = [c.name for c in cands]
    weights = log_weights(used_sizes) if weighted else None
    winner, noise = judge(probes, reference.name, order, final, disqualified, prober.settings, weights)
    return RangeResult(rng, winner, tuple(used_sizes), final, disqualified, noise, dropped, weights), probes


def judge(probes: Sequence[Probe], reference: str, order: Sequence[str], timings: dict[str, tuple[float, ...]],
          disqualified: Mapping[str, str], settings: TunerSettings,
          weights: tuple[float, ...] | None = None) -> tuple[str, float]:
    """One decision, for hand-given and discovered ranges alike: the winner (see
    :func:`decide`) and the noise margin it was made with, the paired uncertainty of the
    fastest eligible candidate's speed-up over the reference at the decision's sizes (see
    :func:`paired_noise`), else the median relative spread of their measurements."""
    contender = fastest_eligible(reference, order, timings, dict(disqualified), settings.tie, weights)
    noise = paired_noise(contender[0], reference, probes) if contender is not None else None
    if noise is None:
        spreads = [x for p in probes for x in p.spreads]
        noise = statistics.median(spreads) if spreads else 0.0
    return _accept(reference, contender, noise, settings), noise


def paired_noise(name: str, reference: str, probes: Sequence[Probe]) -> float | None:
    """The uncertainty of ``name``'s speed-up over the reference: two standard errors of the
    per-round log ratios of their interleaved rounds (noise that slows both in the same round
    cancels), the median over the sizes; ``None`` when they were not both timed in rounds."""
    if name == reference:
        return None
    errors = []
    for probe in probes:
        a, b = probe.rounds.get(name), probe.rounds.get(reference)
        logs = log_ratios(a, b) if a and b else []
        if len(logs) >= 2:
            errors.append(two_standard_errors(logs))
    return statistics.median(errors) if errors else None


CONFIRM_WITHIN = 1.3  # the two fastest are re-measured when this close


def _confirm(rng: Range, cands: Sequence[Candidate], sizes: Sequence[int], timings: dict[str, list[float]],
             disqualified: dict[str, str], dropped: dict[str, str], prober: Prober) -> None:
    """A second, later pass over the range's sizes for its two fastest candidates when they are
    close: a noisy stretch of the device that inflated one of them in the first pass is unlikely
    to hit it again, and each keeps its lower time per size."""
    n = len(sizes)
    if n == 0 or getattr(prober.benchmarker, "measure_jobs", None) is None:
        return
    reference = prober.reference.name
    scores = {}
    for name, ts in timings.items():
        if name in disqualified or name in dropped or len(ts) != n or not all(math.isfinite(t) for t in ts):
            continue
        scores[name] = sum(math.log(t / r) for t, r in zip(ts, timings[reference]))
    if len(scores) < 2:
        return
    first, second = sorted(scores, key=scores.__getitem__)[:2]
    if math.exp((scores[second] - scores[first]) / n) > CONFIRM_WITHIN:
        return
    again = [c for c in cands if c.name in (first, second)]
    for i, size in enumerate(sizes):
        probe = prober.probe(size, again, f"range {rng} (confirming)")
        if probe is None:
            return
        for name, ms in probe.times.items():
            if name in timings and i < len(timings[name]) and name not in probe.raced:
                timings[name][i] = min(timings[name][i], ms)


def decide(
    reference: str,
    order: Sequence[str],
    timings: dict[str, tuple[float, ...]],
    disqualified: dict[str, str],
    noise: float,
    settings: TunerSettings,
) -> str:
    """The winner of a range: the fastest eligible candidate (geometric mean over the sample
    sizes of its time over the reference's), if it beats the reference by more than the noise
    margin and ``min_speedup``; else the reference. Candidates within ``settings.tie`` of the
    fastest are a tie, which the first declared wins: a candidate measurably slower than
    another eligible one is never chosen."""
    return _accept(reference, fastest_eligible(reference, order, timings, disqualified, settings.tie), noise, settings)


def _accept(reference: str, found: tuple[str, float] | None, noise: float, settings: TunerSettings) -> str:
    """The fastest eligible candidate if it beats the reference by the margin, else the reference."""
    if found is None:
        return reference
    winner, ratio = found
    threshold = max(settings.min_speedup, 1 + max(noise, settings.noise_floor))
    return winner if ratio * threshold <= 1 else reference


def fastest_eligible(reference: str, order: Sequence[str], timings: dict[str, tuple[float, ...]],
                     disqualified: dict[str, str], tie: float,
                     weights: tuple[float, ...] | None = None) -> tuple[str, float] | None:
    """The fastest candidate that is not disqualified (the first declared within ``tie`` of it)
    and its geometric-mean time ratio to the reference; ``None`` if no candidate has one."""
    probe = RangeResult(Range(0), reference, (), timings, weights=weights)
    ratios = {n: probe.ratio(n, reference) for n in order if n not in disqualified}
    ratios = {n: r for n, r in ratios.items() if math.isfinite(r)}
    if not ratios:
        return None
    best = min(ratios.values())
    winner = next(n for n in order if n in ratios and ratios[n] <= best * (1 + tie))
    return winner, ratios[winner]


def _bind(fn: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any]) -> Callable[[], Any]:
    return lambda: fn(*args, **kwargs)
