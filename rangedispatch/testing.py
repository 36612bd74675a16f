"""Test helpers: a deterministic fake benchmarker for unit tests of tuning logic, and random
cost curves for it.

Never use it for claims about speed: it returns the times it is told to.
"""

from __future__ import annotations

import math
import random
from typing import Any, Callable, Mapping, Sequence

from .measure.timing import Job


class FakeBenchmarker:
    """Returns scripted times and records every job it was asked to time.

    Args:
        times: candidate name -> milliseconds, or ``fn(size) -> milliseconds``.
        default: time for names not in ``times``.
        jitter: relative spread added to the samples (so the measured noise is ``jitter``).
        noise: lognormal noise per sample (its sigma), drawn from a generator seeded with ``seed``:
            random like a real device's, yet the same in every run.

    Example:
        >>> bench = FakeBenchmarker({"fast": 1.0, "slow": lambda size: size * 0.01})
        >>> bench.measure([Job("fast", 8, lambda: None)])
        [[1.0, 1.0, 1.0, 1.0, 1.0]]
    """

    def __init__(
        self,
        times: Mapping[str, float | Callable[[int], float]],
        *,
        default: float = 1.0,
        jitter: float = 0.0,
        noise: float = 0.0,
        seed: int = 0,
    ) -> None:
        self.times = dict(times)
        self.default = default
        self.jitter = jitter
        self.noise = noise
        self.rng = random.Random(seed)
        self.calls: list[tuple[str, int]] = []

    def measure(self, jobs: Sequence[Job]) -> list[list[float]]:
        out = []
        for job in jobs:
            self.calls.append((job.name, job.size))
            t = self.times.get(job.name, self.default)
            value = t(job.size) if callable(t) else float(t)
            if self.noise:
                out.append([value * math.exp(self.rng.gauss(0, self.noise)) for _ in range(5)])
                continue
            spread = [1 - self.jitter, 1 - self.jitter / 2, 1.0, 1 + self.jitter / 2, 1 + self.jitter]
            turn = sum(map(ord, job.name)) % len(spread)  # independent-looking noise per candidate
            out.append([value * s for s in spread[turn:] + spread[:turn]])
        return out

    @property
    def sizes(self) -> list[int]:
        """Distinct sizes benchmarked, in order of first appearance."""
        return list(dict.fromkeys(size for _, size in self.calls))


COST_FAMILIES = ("affine", "power", "pipeline", "tiled")


def cost_curves(family: str, rng: random.Random, names: Sequence[str] = ("ref", "a", "b")) -> dict[str, Any]:
    """Random cost curves (ms at a size) of one family for ``names``, the first (the
    reference's) scaled by 1.3 so it is not always the best: ``affine`` ``c0 + c1 * s``;
    ``power`` ``c0 + c1 * s ** p``, ``p`` in [0.6, 1.6]; ``pipeline`` 1-5 launches of 5 us plus
    ``c1 * s``; ``tiled`` ``c0 + c1 * ceil(s / T) * T``, a tile ``T`` of 16-256 per name (a
    saw-tooth). Workloads nobody tuned for, for :class:`FakeBenchmarker`."""
    def curve() -> Callable[[int], float]:
        if family == "affine":
            c0, c1 = 10 ** rng.uniform(-2, 0), 10 ** rng.uniform(-5, -2)
            return lambda s: c0 + c1 * s
        if family == "power":
            c0, c1, p = 10 ** rng.uniform(-2, -1), 10 ** rng.uniform(-5, -3), rng.uniform(0.6, 1.6)
            return lambda s: c0 + c1 * s ** p
        if family == "pipeline":
            k, c1 = rng.randint(1, 5), 10 ** rng.uniform(-5, -3)
            return lambda s: 0.005 * k + c1 * s
        if family == "tiled":
            tile = rng.choice([16, 32, 48, 64, 96, 128, 256])
            c0, c1 = 10 ** rng.uniform(-2, -1), 10 ** rng.uniform(-4, -2)
            return lambda s: c0 + c1 * math.ceil(s / tile) * tile
        raise ValueError(f"family={family!r}: must be one of {COST_FAMILIES}")

    curves = {name: curve() for name in names}
    first = curves[names[0]]
    curves[names[0]] = lambda s: 1.3 * first(s)
    return curves


def tuning_calls(bench: FakeBenchmarker, table: Any) -> list[tuple[str, Any]]:
    """``bench``'s calls beyond a load-time spot check of ``table`` (two candidates, the winner
    and its partner, at one sample size per range): empty when the op took its table from the
    cache or a file without tuning.

    Example:
        >>> op = ...  # doctest: +SKIP
        >>> assert tuning_calls(op.benchmarker, op.table) == []  # doctest: +SKIP
    """
    allowed = {}
    for result in table.results:
        for size in result.samples:
            allowed.setdefault(size, set()).add(result.winner)
    spent: dict[Any, list[str]] = {}
    extra = []
    for name, size in bench.calls:
        seen = spent.setdefault(size, [])
        if size in allowed and len(seen) < 2 and name not in seen:
            seen.append(name)
            continue
        extra.append((name, size))
    checked = [names for names in spent.values() if names]
    if any(not allowed.get(size, set()) & set(names) for size, names in spent.items() if names):
        return list(bench.calls)  # a size without its range's winner: not a spot check
    return extra if len(checked) <= len(table.results) else list(bench.calls)


class ReplayTimer:
    """A :class:`~rangedispatch.measure.timing.Timer` that replays recorded per-call GPU timings.

    ``rows`` are recorded sizes, each ``{"size": n, "raw": {name: [us, ...]}, "failed": [...]}``
    with the raw calls in interleaved rounds of ``round_calls`` (the format of the shared H100
    recordings). A job at any size replays the row of the nearest recorded size (in log
    space): ``once`` returns the next recorded call, ``batch`` the next recorded round. Lets
    the measurement core and the tuner's decisions be tested against real GPU noise on a CPU.

    Args:
        rows: the recorded rows.
        names: our candidate name -> the recording's name (default: the same).
        round_calls: calls per recorded round.
        unit_ms: milliseconds per recorded unit (1e-3 for microseconds).
    """

    device_type = "replay"

    def __init__(self, rows: Sequence[Mapping[str, object]], *, names: Mapping[str, str] | None = None,
                 round_calls: int = 30, unit_ms: float = 1e-3, offset: int = 0) -> None:
        self.rows = sorted(rows, key=lambda r: int(r["size"]))  # type: ignore[arg-type]
        self.names = dict(names or {})
        self.round_calls = round_calls
        self.unit_ms = unit_ms
        self.offset = offset  # where every replay starts: another offset, another process's noise
        self._cursor: dict[tuple[str, int], int] = {}
        self._round: dict[tuple[str, int], int] = {}
        self.device_ms = 0.0  # simulated device time spent timing

    def row(self, size: int) -> Mapping[str, object]:
        import math

        target = math.log(max(int(size), 1))
        return min(self.rows, key=lambda r: abs(math.log(max(int(r["size"]), 1)) - target))  # type: ignore[arg-type]

    def _raw(self, job: Job) -> tuple[tuple[str, int], list[float]]:
        name = self.names.get(job.name, job.name)
        row = self.row(int(job.size or 1))
        if name in (row.get("failed") or ()):  # type: ignore[operator]
            raise RuntimeError(f"{name} has no kernel at size {row['size']}")
        return (name, int(row["size"])), [t * self.unit_ms for t in row["raw"][name]]  # type: ignore[index]

    def warm_device(self) -> None:
        return None

    def once(self, job: Job) -> float:
        key, raw = self._raw(job)
        i = self._cursor.get(key, self.offset * 7)
        self._cursor[key] = i + 1
        self.device_ms += raw[i % len(raw)]
        return raw[i % len(raw)]

    def warm_up(self, job: Job, ms: float, estimate_ms: float) -> None:
        self._raw(job)

    def batch(self, job: Job, ms: float, estimate_ms: float) -> list[float]:
        key, raw = self._raw(job)
        r = self._round.get(key, self.offset)
        self._round[key] = r + 1
        rounds = max(1, len(raw) // self.round_calls)
        start = (r % rounds) * self.round_calls
        out = raw[start:start + self.round_calls]
        self.device_ms += sum(out)
        return out


def replay_tuning(
    rows: Sequence[Mapping[str, object]],
    *,
    reference: str,
    candidates: Sequence[str],
    split_points: Sequence[int] | str | None,
    upper_bound: int | None = None,
    benchmark_options: Mapping[str, object] | None = None,
    offset: int = 0,
    truth: str = "truth",
    **op_options: object,
) -> dict[str, object]:
    """Tune an op whose candidates are recorded GPU kernels and score its decisions.

    The op dispatches on the length of a 1-d tensor; each candidate returns a copy of its
    input (raising where the recording says the kernel failed); the measurement core times
    them through a :class:`ReplayTimer`. Every recorded size is then scored with the recorded
    robust times (``truth``, or another per-row key of truths such as ``"wall"``): the time of
    the candidate the table dispatches to over the fastest candidate's at that size.
    ``offset`` starts the replay elsewhere in the recorded rounds (another fresh process).

    Returns a dict with ``op``, ``table``, ``losses`` (size -> (chosen, loss)), ``geomean``,
    ``worst``, ``device_ms`` (simulated timing time) and ``timer``.
    """
    import math

    import torch

    import rangedispatch as rd

    from .measure.timing import Benchmark

    timer = ReplayTimer(rows, offset=offset)

    def make(name: str) -> Callable[..., object]:
        def fn(x: torch.Tensor) -> torch.Tensor:
            row = timer.row(max(int(x.shape[0]), 1))
            if name in (row.get("failed") or ()):  # type: ignore[operator]
                raise RuntimeError(f"{name} has no kernel at size {row['size']}")
            return x.clone()

        fn.__name__ = fn.__qualname__ = name
        return fn

    top = upper_bound or max(int(r["size"]) for r in rows)  # type: ignore[arg-type]
    bench = Benchmark(timer, **dict(benchmark_options or {}))  # type: ignore[arg-type]
    op = rd.range_dispatch(make(reference), dispatch_on=("x", 0), split_points=split_points,
                           range_upper_bound=top, benchmarker=bench, cache=False, **op_options)
    for name in candidates:
        op.register_impl(make(name), name=name)
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        table = op.tune(torch.zeros(max(1, int(rows[0]["size"]))))  # type: ignore[arg-type]
    names = [reference, *candidates]
    losses: dict[int, tuple[str, float]] = {}
    for row in rows:
        size = int(row["size"])  # type: ignore[arg-type]
        truths = {n: t for n, t in row[truth].items() if n in names}  # type: ignore[union-attr]
        chosen = table.partition.lookup(size).owner or reference
        losses[size] = (chosen, truths.get(chosen, math.inf) / min(truths.values()))
    logs = [math.log(v) for _, v in losses.values()]
    return {
        "op": op,
        "table": table,
        "losses": losses,
        "geomean": math.exp(sum(logs) / len(logs)),
        "worst": max(v for _, v in losses.values()),
        "device_ms": timer.device_ms,
        "timer": timer,
    }


class GuardCounter:
    """Counts the guards Dynamo checks per compiled frame (from its ``guards`` log).

        with GuardCounter() as guards:
            compiled(*args)
        guards.frames   # one count per frame compiled inside the block
        guards.text     # the guard trees, for assertions on what is guarded
    """

    KINDS = ("MATCH:", "CHECK:", "GUARD:", "CONTAINS:", "ALIASING", "STATE:", "STACK:", "DEVICE:")

    def __init__(self) -> None:
        import logging

        self.frames: list[int] = []
        self.text: list[str] = []
        counter = self

        class _Handler(logging.Handler):
            def emit(self, record: logging.LogRecord) -> None:
                text = record.getMessage()
                if "TREE_GUARD_MANAGER" in text or "RootGuardManager" in text:
                    counter.frames.append(sum(1 for line in text.splitlines()
                                              if any(k in line for k in counter.KINDS)))
                    counter.text.append(text)

        self._handler = _Handler()
        from .compat import get

        self._guard_log = get("guard_log")  # without it: no frames seen
        self._log = self._guard_log.logger if self._guard_log is not None else logging.getLogger(__name__)

    def __enter__(self) -> GuardCounter:
        self._switch = self._guard_log.switch if self._guard_log is not None else (lambda on: None)
        self._switch(True)
        self._log.addHandler(self._handler)
        return self

    def __exit__(self, *exc: Any) -> None:
        self._log.removeHandler(self._handler)
        self._switch(False)
