"""Test helpers: a deterministic fake benchmarker for unit tests of tuning logic.

Never use it for claims about speed: it returns the times it is told to.
"""

from __future__ import annotations

from typing import Callable, Mapping, Sequence

from .timing import Job


class FakeBenchmarker:
    """Returns scripted times and records every job it was asked to time.

    Args:
        times: candidate name -> milliseconds, or ``fn(size) -> milliseconds``.
        default: time for names not in ``times``.
        jitter: relative spread added to the samples (so the measured noise is ``jitter``).

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
    ) -> None:
        self.times = dict(times)
        self.default = default
        self.jitter = jitter
        self.calls: list[tuple[str, int]] = []

    def measure(self, jobs: Sequence[Job]) -> list[list[float]]:
        out = []
        for job in jobs:
            self.calls.append((job.name, job.size))
            t = self.times.get(job.name, self.default)
            value = t(job.size) if callable(t) else float(t)
            spread = [1 - self.jitter, 1 - self.jitter / 2, 1.0, 1 + self.jitter / 2, 1 + self.jitter]
            out.append([value * s for s in spread])
        return out

    @property
    def sizes(self) -> list[int]:
        """Distinct sizes benchmarked, in order of first appearance."""
        return list(dict.fromkeys(size for _, size in self.calls))
