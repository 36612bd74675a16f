"""Split points nobody has to guess: where along the dispatch size the fastest candidate changes.

``split_points="auto"`` tunes in four steps, every measurement through the same checks and
measurement core as hand-given ranges (:class:`~rangedispatch.decide.tuner.Prober`):

1. every candidate is measured at base sizes: log-spaced over ``[lo, hi]``, or, with a
   recorded traffic profile, at quantiles of the traffic (so each sample stands for an equal
   share of the calls, and the decision weighs sizes by traffic);
2. each size gets its winner (the fastest eligible candidate, the reference kept unless beaten
   by more than the noise margin); runs of equal winners form segments;
3. neighbouring segments merge while one candidate is within ``merge_tolerance`` of the best at
   every size of both (near-ties are not crossovers);
4. the remaining crossovers are bisected (in log space, measuring only their two winners and
   the reference), the one with most at stake first (:func:`stake`), until each is located
   within ``tolerance`` and shows at most ``STAKE_LOSS`` at stake; as soon as its interval is within an
   octave, and again at the end, the roundest size left in the interval and the one above it
   are measured (kernels fall off cliffs at tile multiples: 64 rows fit one tile, 65 need
   two), so a crossover at such an edge is split exactly there before the budget goes to
   bisection; otherwise the split goes in the middle;
5. the result checks itself (:func:`discover_checked`): every candidate is measured beside
   each split (where step 4 measured two), then inside each range, at the midpoints between
   the sizes it was decided on; where a rival wins at a size of a range beyond the noise, or a
   crossover is not located yet and budget is left, steps 2-4 run again over everything measured;
   a zigzag they draw (``a | b | a``, the middle range narrower than ``tolerance``: one noisy
   measurement, far more often than a kernel) has its sizes measured once more, each candidate
   keeping its lower time, before they run again; one that stays, with its winner ahead by at
   most ``STAKE_LOSS`` beyond the noise, is a near-tie the search cannot place finer than
   ``tolerance``, and goes to its neighbours' winner (the simpler table).

The number of (candidate, size) measurements stays within ``budget`` (default: what a 4-range
hand table with 3 samples per range costs, ``12 x candidates``) plus as much again for the
self-check (interior sizes and a re-search), and is reported.
"""

from __future__ import annotations

import dataclasses
import logging
import math
from dataclasses import asdict, dataclass, field
from typing import Any, Sequence

from .candidates import Candidate
from .ranges import Range
from .table import RangeResult
from ..measure.timing import uncertainty
from .tuner import Probe, Prober, judge, paired_noise, range_top

log = logging.getLogger("rangedispatch")

DEFAULT_TOP = 8192
#: a crossover located within the tolerance is bisected on while its ends show more at stake
#: than this (a steep crossover: the winners' ratio changes fast with the size)
STAKE_LOSS = 0.05


@dataclass(frozen=True)
class AutoSettings:
    """How ``split_points="auto"`` searches.

    Args:
        lo, hi: the size interval searched (``hi``: the op's ``range_upper_bound``, else 8192);
            sizes above ``hi`` go to the last range's winner.
        budget: most (candidate, size) measurements (default ``12 x candidates``).
        tolerance: a crossover is located to within this relative width (0.25: the true split
            lies within 25 % of the one chosen).
        merge_tolerance: neighbouring segments merge when one candidate is within this of the
            best at every size of both.
    """

    lo: int = 1
    hi: int | None = None
    budget: int | None = None
    tolerance: float = 0.25
    merge_tolerance: float = 0.03

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class Discovery:
    """What a search measured and found."""

    results: tuple[RangeResult, ...]
    benchmarks: int
    budget: int
    base_sizes: list[int]
    bisections: int
    crossovers: list[tuple[int, int, str, str]] = field(default_factory=list)  # (below, above, from, to)
    probes: dict[int, Probe] = field(default_factory=dict, repr=False)
    paired: frozenset[int] = frozenset()  # sizes a crossover search measured for its two winners only
    checked: int = 0  # interior sizes measured by the self-check
    rounds: int = 0  # searches run again because the self-check found a rival inside a range

    def summary(self) -> str:
        found = ", ".join(f"{a}->{b} in ({lo}, {hi}]" for lo, hi, a, b in self.crossovers) or "none"
        check = (f"; self-check: {self.checked} interior size(s), {self.rounds} re-search(es)"
                 if self.checked or self.rounds else "")
        return (f"{len(self.results)} range(s) from {len(self.base_sizes)} base sizes and {self.bisections} "
                f"bisection step(s); {self.benchmarks} of {self.budget} benchmarks; crossovers: {found}{check}")


def base_sizes(lo: int, hi: int, count: int, profile: Any = None) -> list[int]:
    """Sizes measured for every candidate: log-spaced over ``[lo, hi]``, or the ends plus
    traffic quantiles of ``profile`` (a :class:`~rangedispatch.decide.profile.SizeProfile`)."""
    count = max(2, count)
    if profile is not None and profile.total(lo, hi) > 0:
        inner = profile.quantiles(count - 2, lo=lo, hi=hi)
        return sorted({lo, hi, *inner})
    if hi <= lo:
        return [lo]
    return sorted({round(lo * (hi / lo) ** (i / (count - 1))) for i in range(count)})


def roundest(a: int, b: int) -> int | None:
    """The size in ``[a, b)`` with the most trailing zero bits (the likeliest tile edge; its
    neighbour above is in ``(a, b]``), ``None`` when the interval is already exact.

    Example:
        >>> roundest(51, 81), roundest(170, 210), roundest(64, 80), roundest(7, 8)
        (64, 192, 64, None)
    """
    if b - a < 2:
        return None
    step = 1 << b.bit_length()
    while step >= 1:
        edge = -(-a // step) * step
        if edge < b:
            return edge
        step >>= 1
    return None


@dataclass
class _Crossing:
    """A crossover being located: the winner changes from ``a_name`` (at ``a``) to ``b_name`` (at
    ``b``); ``pair`` the candidates measured there besides the reference, ``rivals`` their names."""

    a: int
    b: int
    a_name: str
    b_name: str
    pair: list[Candidate]
    rivals: list[str]
    pinned: bool = False
    stopped: bool = False

    @property
    def ends(self) -> tuple[int, int, str, str]:
        """``(a, b, a_name, b_name)``: the crossover as :class:`Discovery` records it."""
        return self.a, self.b, self.a_name, self.b_name


def stake(probes: dict[int, Probe], a: int, b: int, a_name: str, b_name: str) -> float:
    """What a split anywhere in ``(a, b]`` surely loses, as the ends show it: the larger of
    ``b_name``'s time over ``a_name``'s at ``a`` and ``a_name``'s over ``b_name``'s at ``b`` (a
    misplaced split sends sizes near one end to the other end's winner), each less its
    measurement's noise (two standard errors of the pair's per-round log ratios): noise alone
    is never at stake, so a crossover on a noisy machine is not bisected to the last size."""
    return max(loss_at(probes, a, b_name, a_name), loss_at(probes, b, a_name, b_name))


def loss_at(probes: dict[int, Probe], size: int, slow: str, fast: str) -> float:
    """``slow``'s time over ``fast``'s at ``size``, less the measurement's noise (two standard
    errors of the pair's per-round log ratios, else the larger of their own spreads): what
    giving that size to ``slow`` surely loses; inf where ``fast`` was not timed there."""
    probe = probes[size]
    t_fast = probe.times.get(fast, math.inf)
    if not 0 < t_fast < math.inf:
        return math.inf
    noise = paired_noise(slow, fast, [probe])
    if noise is None:
        noise = max(uncertainty(probe.rounds.get(n, ())) for n in (slow, fast))
    return probe.times.get(slow, math.inf) / t_fast * math.exp(-noise)


def unsettled(probes: dict[int, Probe], a: int, b: int, a_name: str, b_name: str, tolerance: float) -> bool:
    """Whether a crossover in ``(a, b]`` is still to be located: not exact, and wider than
    ``tolerance`` or with more than ``STAKE_LOSS`` at stake (a steep one)."""
    return b - a > 1 and (b / a > 1 + tolerance or stake(probes, a, b, a_name, b_name) > 1 + STAKE_LOSS)


def discover(
    prober: Prober,
    candidates: Sequence[Candidate],
    settings: AutoSettings,
    *,
    upper_bound: int | None = None,
    profile: Any = None,
    seeded: dict[int, Probe] | None = None,
    paired: frozenset[int] = frozenset(),
) -> Discovery:
    """Find the ranges and their winners (see the module docstring). With ``seeded`` probes
    (sizes already measured, e.g. a hand-given range's samples or an earlier search's) those
    are the base sizes, but for the ``paired`` ones (measured for a crossover's two winners
    only: a candidate missing there is not a loser), and nothing more is measured for step 1."""
    reference = prober.reference
    cands = [c for c in candidates if c.name != reference.name]
    order = [c.name for c in cands]
    by_name = {c.name: c for c in cands}
    lo = max(1, settings.lo)
    hi = max(lo, settings.hi or upper_bound or DEFAULT_TOP)
    width = len(cands) + 1
    budget = settings.budget or 12 * width
    count = int(min(16, max(4, (budget * 0.6) // width)))
    probes: dict[int, Probe] = dict(seeded or {})
    sizes = sorted(probes) or base_sizes(lo, hi, count, profile)
    start = prober.benchmarks
    for size in sizes:
        if size not in probes and (probe := prober.probe(size, cands, f"size {size}")) is not None:
            probes[probe.size] = probe
    names = [reference.name, *order]
    paired = set(paired)
    for size in sorted(paired & set(probes)):  # an earlier search's pair-only sizes: the others measured too
        missing = [c for c in cands if not _covers(probes[size], [c.name])]
        if missing:
            if prober.benchmarks - start + len(missing) + 1 > budget:
                break
            probe = prober.probe(size, missing, f"size {size}")
            if probe is None:
                continue
            probes[size] = _joined(probes[size], probe)
        paired.discard(size)
    measured = sorted(probes)
    if not measured:
        return Discovery((RangeResult(Range(lo, None), reference.name, (), {}),), prober.benchmarks - start,
                         budget, sizes, 0)
    winners = {s: _winner([s], probes, reference.name, order, prober)[0] for s in measured}
    segments = _merge([[s] for s in measured], winners, probes, names, settings.merge_tolerance)
    owners = [_winner(seg, probes, reference.name, order, prober)[0] for seg in segments]
    search = [_Crossing(left[-1], right[0], a_name, b_name, [by_name[n] for n in (a_name, b_name) if n in by_name],
                        [n for n in order if n in (a_name, b_name)])
              for left, right, a_name, b_name in zip(segments, segments[1:], owners, owners[1:])]

    def afford(crossing: _Crossing, probes_needed: int) -> bool:
        return prober.benchmarks - start + probes_needed * (len(crossing.pair) + 1) <= budget

    def measure(crossing: _Crossing, size: int) -> str | None:
        """The winner of the crossing's pair (and the reference) at ``size``, measured (or known
        from an earlier measurement that covers the pair)."""
        known = probes.get(size)
        if known is None or not _covers(known, [c.name for c in crossing.pair]):
            probe = prober.probe(size, crossing.pair, f"size {size}")
            if probe is None:
                return None
            probes[size] = probe if known is None else _joined(known, probe)
            if known is None and len(crossing.pair) < len(cands):
                paired.add(size)
        return _winner([size], probes, reference.name, crossing.rivals, prober)[0]

    def pin_edge(crossing: _Crossing) -> None:
        """Kernels fall off cliffs at tile multiples (64 rows in one tile, 65 in two): the
        roundest size in the interval and the one above it, measured, pin such a crossover
        exactly, or else narrow the interval like a bisection step."""
        a, b = crossing.a, crossing.b
        edge = roundest(a, b)
        if edge is None or not afford(crossing, 2):
            return
        sides = [measure(crossing, size) for size in (edge, edge + 1)]
        if sides == [crossing.a_name, crossing.b_name]:
            crossing.a, crossing.b = edge, edge + 1
        elif sides[:1] == [crossing.b_name]:
            crossing.b = edge
        elif sides == [crossing.a_name, crossing.a_name]:
            crossing.a = edge + 1

    steps = 0
    while True:  # the crossing with the most at stake first, one step at a time
        open_ = [c for c in search if not c.stopped and unsettled(probes, *c.ends, settings.tolerance)]
        if not open_:
            break
        crossing = max(open_, key=lambda c: (stake(probes, *c.ends), c.b / c.a))
        if not crossing.pinned and crossing.b <= 2 * crossing.a:  # within an octave: an exact edge needs no bisection
            crossing.pinned = True
            pin_edge(crossing)
            continue
        if not afford(crossing, 1):
            crossing.stopped = True
            continue
        mid = min(max(round(math.sqrt(crossing.a * crossing.b)), crossing.a + 1), crossing.b - 1)
        winner = measure(crossing, mid)
        steps += 1
        if winner is None:
            crossing.stopped = True
        elif winner == crossing.a_name:
            crossing.a = mid
        else:
            crossing.b = mid
    for crossing in sorted(search, key=lambda c: -stake(probes, *c.ends)):
        pin_edge(crossing)
    splits = [min(max(round(math.sqrt(c.a * c.b)), c.a + 1), c.b) for c in search]
    crossovers = [c.ends for c in search]
    edges = [lo, *splits]
    results = []
    for i, owner in enumerate(owners):
        rng = Range(edges[i], edges[i + 1] if i + 1 < len(edges) else None)
        inside = [s for s in sorted(probes) if s in rng]
        timings, lost = _evidence(inside, probes, names)
        skipped = {n: "not timed at the crossover search's sizes (a contender elsewhere)"
                   for n, ts in timings.items() if n not in lost and any(math.isinf(t) for t in ts)}
        noise = _winner(inside, probes, reference.name, order, prober)[1] if inside else 0.0
        results.append(RangeResult(rng, owner, tuple(inside), timings, lost, noise, skipped))
    found = Discovery(tuple(results), prober.benchmarks - start, budget, measured, steps, crossovers, probes,
                      frozenset(paired))
    log.info("%s: %s", "crossover search" if seeded else "split_points='auto'", found.summary())
    return found


SELF_CHECK_ROUNDS = 3  # searches run again at most this often
SELF_CHECK_SHARE = 1.0  # of the search's budget, spent on interior sizes (half) and a re-search
ZIGZAG_SIZES = 2  # sizes of the narrow ranges a re-search draws that may be measured again past the budget


def discover_checked(prober: Prober, candidates: Sequence[Candidate], settings: AutoSettings, *,
                     upper_bound: int | None = None, profile: Any = None) -> Discovery:
    """:func:`discover`, then a check of its own result: every candidate is measured at the
    geometric midpoints between the sizes each range was decided on (its interior, where no
    one looked), and where a rival beats a range's winner beyond the noise at any size of
    that range (an interior one, or one the crossover search measured) the search runs
    again over everything measured so far. The within-range crossover that tuning notes is
    thus an input to the search, not only a message."""
    reference = prober.reference
    cands = [c for c in candidates if c.name != reference.name]
    found = discover(prober, cands, settings, upper_bound=upper_bound, profile=profile)
    names = [reference.name, *[c.name for c in cands]]
    start = prober.benchmarks - found.benchmarks
    extra = int(found.budget * SELF_CHECK_SHARE)
    interior_cap = found.budget + extra // 2  # half the extra for interior sizes, half for a re-search
    confirm_cap = found.budget + extra + ZIGZAG_SIZES * (len(cands) + 1)  # a zigzag may take a little more
    checked = rounds = 0
    confirmed: set[int] = set()  # sizes measured a second time (each at most once)
    for _ in range(SELF_CHECK_ROUNDS + 1):
        probes, paired = dict(found.probes), set(found.paired)
        for size in _beside_splits(found) + _interior(found.results, probes):
            if prober.benchmarks - start + len(cands) + 1 > interior_cap:
                break
            probe = prober.probe(size, cands, f"size {size} (self-check)")
            checked += 1
            if probe is not None:
                probes[size] = probe
                paired.discard(size)
        # a zigzag (A | B | A, the middle narrower than the tolerance) is what one noisy
        # measurement draws far more often than a kernel does: its sizes are measured once more
        retaken = False
        for size in _zigzag_sizes(found.results, probes, settings.tolerance):
            if size in confirmed or prober.benchmarks - start + len(cands) + 1 > confirm_cap:
                continue
            probe = prober.probe(size, cands, f"size {size} (confirming a narrow range)")
            confirmed.add(size)
            if probe is not None:
                probes[size] = _lower(probes[size], probe)
                paired.discard(size)
                retaken = True
        left = found.budget + extra - (prober.benchmarks - start)
        room = left >= 2 * (len(cands) + 1)
        rival = retaken or _rival_inside(found.results, probes, names, prober)
        # a crossover not located yet (the search's budget ran out) is searched on with what is left
        loose = room and any(unsettled(probes, *ends, settings.tolerance) for ends in found.crossovers)
        if not (rival or loose) or rounds == SELF_CHECK_ROUNDS:
            found = dataclasses.replace(found, probes=probes, paired=frozenset(paired))
            break
        rounds += 1
        log.info("split_points='auto': %s; searching again over %d measured sizes%s",
                 "a narrow range between two of one winner was measured again" if retaken
                 else "a rival wins inside a range" if rival else "a crossover is not located yet", len(probes),
                 "" if room else " (no budget left: no new measurements)")
        # with no budget left, the segments are rebuilt from what was measured (splits go between
        # the measured sizes whose winners differ) and nothing more is measured
        again = discover(prober, cands, dataclasses.replace(settings, budget=max(left, 1)), upper_bound=upper_bound,
                         seeded=probes, paired=frozenset(paired))
        found = dataclasses.replace(again, budget=found.budget)
        if not room:
            break
    results = tuple(_with_sizes(r, found.probes, names, prober)
                    for r in join_equal_neighbours(_near_tie_zigzags_joined(found.results, found.probes, settings.tolerance)))
    found = dataclasses.replace(found, results=results, benchmarks=prober.benchmarks - start, checked=checked,
                                # grown only by what a zigzag's second look took past it
                                rounds=rounds, budget=max(found.budget + extra, prober.benchmarks - start))
    log.info("split_points='auto': %s", found.summary())
    return found


def join_equal_neighbours(results: Sequence[RangeResult]) -> list[RangeResult]:
    """Neighbouring ranges with one winner (a re-search can leave them) as one range.

    Example:
        >>> a, b, c = (RangeResult(Range(lo, hi), w, (), {}) for lo, hi, w in
        ...            [(1, 65, "flash"), (65, 91, "default"), (91, None, "default")])
        >>> [(str(r.range), r.winner) for r in join_equal_neighbours([a, b, c])]
        [('[1, 65)', 'flash'), ('[65, inf)', 'default')]
    """
    merged: list[RangeResult] = []
    for r in results:
        if merged and merged[-1].winner == r.winner and merged[-1].range.hi == r.range.lo:
            prev = merged.pop()
            r = dataclasses.replace(prev, range=Range(prev.range.lo, r.range.hi))
        merged.append(r)
    return merged


def _covers(probe: Probe, names: Sequence[str]) -> bool:
    """Whether ``probe`` measured (or disqualified) every one of ``names``."""
    return all(n in probe.times or n in probe.lost for n in names)


def _joined(old: Probe, new: Probe) -> Probe:
    """Two measurements at one size as one (``new``'s where both measured a candidate)."""
    return dataclasses.replace(new, times={**old.times, **new.times}, lost={**old.lost, **new.lost},
                               raced=old.raced | new.raced, rounds={**old.rounds, **new.rounds})


def _beside_splits(found: Discovery) -> list[int]:
    """The sizes at each side of every split that the crossover search measured with its two
    winners only: a third candidate that wins between two segments (a narrow one the base
    sizes stepped over) shows up there first."""
    return list(dict.fromkeys(size for lo, hi, *_ in found.crossovers for size in (lo, hi) if size in found.paired))


def _interior(results: Sequence[RangeResult], probes: dict[int, Probe]) -> list[int]:
    """Geometric midpoints between neighbouring measured sizes inside each range (and between a
    range's lower end and its first size), not measured yet; widest gaps first."""
    gaps = []
    for r in results:
        inside = sorted(s for s in probes if s in r.range)
        points = ([r.range.lo] if r.range.lo not in inside and r.range.lo >= 1 else []) + inside
        for a, b in zip(points, points[1:]):
            mid = round(math.sqrt(a * b))
            if a < mid < b and mid not in probes:
                gaps.append((b / a, mid))
    return [mid for _, mid in sorted(gaps, reverse=True)]


def _zigzag_sizes(results: Sequence[RangeResult], probes: dict[int, Probe], tolerance: float) -> list[int]:
    """The measured sizes inside every range narrower than ``tolerance`` (``hi <= lo x (1 +
    tolerance)``) whose two neighbours share another winner: ``[1, 20) a | [20, 24) b | [24, 25) a |
    [25, 118) b`` has two such ranges, 23 and 24 their sizes.

    Example:
        >>> parts = [RangeResult(Range(lo, hi), w, (), {}) for lo, hi, w in
        ...          [(1, 20, "a"), (20, 24, "b"), (24, 25, "a"), (25, 118, "b"), (118, None, "c")]]
        >>> _zigzag_sizes(parts, dict.fromkeys([1, 17, 23, 24, 27, 128]), 0.25)
        [23, 24]
    """
    measured = sorted(probes)
    sizes: list[int] = []
    for left, mid, right in zip(results, results[1:], results[2:]):
        hi = mid.range.hi
        if left.winner == right.winner != mid.winner and hi is not None and hi <= mid.range.lo * (1 + tolerance):
            sizes.extend(s for s in measured if s in mid.range)  # the ranges are disjoint: no size twice
    return sizes


def _near_tie_zigzags_joined(results: Sequence[RangeResult], probes: dict[int, Probe],
                              tolerance: float) -> list[RangeResult]:
    """``results`` with each zigzag's narrow middle range (:func:`_zigzag_sizes`) given to its
    neighbours' winner where that winner loses at most ``STAKE_LOSS`` beyond the noise at every
    size measured there (a near-tie the search cannot place finer than ``tolerance``: the
    simpler table, which fresh processes agree on). A narrow range won by more stays."""
    out = list(results)
    for i in range(1, len(out) - 1):
        left, mid, right = out[i - 1], out[i], out[i + 1]
        sizes = _zigzag_sizes([left, mid, right], probes, tolerance)
        if sizes and all(loss_at(probes, s, left.winner, mid.winner) <= 1 + STAKE_LOSS for s in sizes):
            out[i] = dataclasses.replace(mid, winner=left.winner)
    return out


def _lower(old: Probe, new: Probe) -> Probe:
    """Two measurements of every candidate at one size as one: each keeps its lower time (and
    that measurement's rounds), as the confirming pass of hand-given ranges does: a noisy
    stretch that inflated a candidate once is unlikely to hit it twice."""
    lost = {**old.lost, **new.lost}
    times, rounds, raced = {}, {}, set()
    for name in (old.times.keys() | new.times.keys()) - lost.keys():
        src = new if new.times.get(name, math.inf) <= old.times.get(name, math.inf) else old
        times[name] = src.times[name]
        if name in src.rounds:
            rounds[name] = src.rounds[name]
        if name in src.raced:
            raced.add(name)
    return dataclasses.replace(new, times=times, rounds=rounds, raced=raced, lost=lost)


def _rival_inside(results: Sequence[RangeResult], probes: dict[int, Probe], names: Sequence[str],
                  prober: Prober) -> bool:
    """Whether some measured size inside a range has another winner than the range (the rule
    and the noise margin that built the segments), or a rival beats the range's winner there
    beyond the range's noise (the rule of the within-range note,
    :meth:`~rangedispatch.decide.table.RangeResult.crossover`)."""
    for r in results:
        for size in (s for s in probes if s in r.range):
            if _winner([size], probes, names[0], names[1:], prober)[0] != r.winner:
                return True
        if _with_sizes(r, probes, names, prober).crossover() is not None:
            return True
    return False


def _with_sizes(result: RangeResult, probes: dict[int, Probe], names: Sequence[str], prober: Prober) -> RangeResult:
    """``result`` with the evidence of every size measured inside its range (the self-check's
    interior sizes included) and the largest noise any of them was judged with; its winner kept."""
    inside = [s for s in sorted(probes) if s in result.range]
    if not inside or tuple(inside) == tuple(result.samples):
        return result
    timings, lost = _evidence(inside, probes, names)
    skipped = {n: "not timed at the crossover search's sizes (a contender elsewhere)"
               for n, ts in timings.items() if n not in lost and any(math.isinf(t) for t in ts)}
    # the largest noise a size of the range was judged with: a rival inside it beyond that is
    # a winner the segments would have given that size (the self-check's re-search finds it)
    noise = max([_winner(inside, probes, names[0], names[1:], prober)[1]]
                + [_winner([s], probes, names[0], names[1:], prober)[1] for s in inside])
    return dataclasses.replace(result, samples=tuple(inside), timings=timings, disqualified=lost, dropped=skipped,
                               noise=noise)


def _evidence(sizes: Sequence[int], probes: dict[int, Probe],
              names: Sequence[str]) -> tuple[dict[str, tuple[float, ...]], dict[str, str]]:
    """Every name's times at ``sizes`` (inf where it was not timed) and why any lost there."""
    timings = {n: tuple(probes[s].times.get(n, math.inf) for s in sizes) for n in names}
    lost: dict[str, str] = {}
    for s in sizes:
        for n, why in probes[s].lost.items():
            lost.setdefault(n, why)
    return timings, lost


def _winner(sizes: Sequence[int], probes: dict[int, Probe], reference: str, order: Sequence[str],
            prober: Prober) -> tuple[str, float]:
    """The winner over ``sizes`` and the noise margin it was decided with: the rule and the
    noise of hand-given ranges, from the probes at those sizes."""
    timings, lost = _evidence(sizes, probes, [reference, *order])
    return judge([probes[s] for s in sizes], reference, order, timings, lost, prober.settings)


def _merge(segments: list[list[int]], winners: dict[int, str], probes: dict[int, Probe],
           names: Sequence[str], tolerance: float) -> list[list[int]]:
    """Join runs of equal winners, then neighbours that one candidate serves within
    ``tolerance`` of the best at every size."""
    out: list[list[int]] = []
    for seg in segments:
        if out and winners[out[-1][-1]] == winners[seg[0]]:
            out[-1].extend(seg)
        else:
            out.append(list(seg))
    changed = True
    while changed and len(out) > 1:
        changed = False
        for i in range(len(out) - 1):
            union = out[i] + out[i + 1]
            if _serves_all(union, probes, names, tolerance):
                out[i:i + 2] = [union]
                changed = True
                break
    return out


def _serves_all(sizes: Sequence[int], probes: dict[int, Probe], names: Sequence[str], tolerance: float) -> bool:
    for name in names:
        if all(probes[s].times.get(name, math.inf) <= probes[s].fastest * (1 + tolerance) and name not in probes[s].lost
               for s in sizes):
            return True
    return False


def tune_auto(*, op_name: str, plan: Any, reference: Candidate, factory: Any, benchmarker: Any, settings: Any,
              environment: Any, device_type: str, auto: AutoSettings, profile: Any = None) -> Any:
    """The table of an op with ``split_points="auto"``: discovered ranges and winners."""
    from .tuner import Budget, effective_upper_bound, make_table

    log.info("=== Range-based Autotuning for %s (automatic split points) ===", op_name)
    log.info("Dispatch dimension: %s", plan.dispatch)
    cands = list(plan.all_candidates)
    prober = Prober(op_name, reference, factory, benchmarker, settings, device_type,
                    Budget(settings.budget_s, (auto.budget or 12 * (len(cands) + 1)) // max(1, len(cands) + 1)))
    found = discover_checked(prober, cands, auto, upper_bound=effective_upper_bound(plan.dispatch, settings),
                             profile=profile)
    for r in found.results:
        log.info("Range %s: Selected implementation '%s'", r.range, r.winner)
    table = make_table(op_name, plan, reference, found.results, factory, settings, environment)
    return dataclasses.replace(table, settings={**table.settings, "auto": auto.to_json(),
                                                "discovery": found.summary(), "benchmarks": found.benchmarks,
                                                "budget": found.budget})


#: (candidate, size) measurements a refined range may spend on locating its crossovers
REFINE_BUDGET = 24


def refine_range(result: RangeResult, cands: Sequence[Candidate], probes: Sequence[Probe], prober: Prober,
                 upper: int | None) -> list[RangeResult]:
    """``result`` split where its winner stops being the fastest (``refine=True``): the range's
    sample sizes seed the crossover search of ``split_points="auto"``, which bisects between
    the sizes whose winners differ; ``[result]`` when no crossover is found or it holds no split."""
    rng = result.range
    if result.crossover() is None or len(probes) < 2:
        return [result]
    search = AutoSettings(lo=max(rng.lo, 1), hi=range_top(rng, upper), budget=REFINE_BUDGET)
    found = discover(prober, cands, search, seeded={p.size: p for p in probes}).results
    if len(found) < 2:
        return [result]
    first, last = found[0], found[-1]
    found = (dataclasses.replace(first, range=Range(rng.lo, first.range.hi)), *found[1:-1],
             dataclasses.replace(last, range=Range(last.range.lo, rng.hi)))
    log.info("Range %s: split at %s where the fastest candidate changes: %s", rng,
             ", ".join(str(r.range.lo) for r in found[1:]),
             ", ".join(f"{r.range} -> '{r.winner}'" for r in found))
    return list(found)
