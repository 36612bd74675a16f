"""How candidates are timed: the :class:`Benchmarker` protocol and its CPU and CUDA versions.

The tuner hands a benchmarker a list of :class:`Job` (candidate name, sample size, a
zero-argument callable). The benchmarker returns, per job, a list of per-repetition times
in milliseconds. Jobs are interleaved (round-robin, rotating the start) so drift in clock
or temperature spreads over every candidate instead of favouring whichever ran first.
"""

from __future__ import annotations

import math
import statistics
import time
from dataclasses import dataclass
from typing import Any, Callable, Protocol, Sequence


@dataclass(frozen=True)
class Job:
    """One thing to time: ``fn()`` runs candidate ``name`` at dispatch size ``size``."""

    name: str
    size: int
    fn: Callable[[], Any]

    def __call__(self) -> Any:
        return self.fn()


class Benchmarker(Protocol):
    """Times jobs; returns per job a list of per-repetition times in milliseconds."""

    def measure(self, jobs: Sequence[Job]) -> list[list[float]]: ...


def _rounds(reps: int, n: int) -> list[list[int]]:
    """Round-robin order, rotated each repetition."""
    return [[(r + i) % n for i in range(n)] for r in range(reps)]


@dataclass
class CpuBenchmarker:
    """``perf_counter`` medians for CPU tensors.

    Args:
        budget_ms: time spent per job after warm-up (spread over repetitions).
        min_sample_ms: each sample runs the job enough times to last at least this long,
            so the clock's resolution and call overhead do not dominate tiny ops.
        min_reps, max_reps: bounds on the number of samples per job.
    """

    budget_ms: float = 20.0
    min_sample_ms: float = 0.2
    min_reps: int = 5
    max_reps: int = 41

    def measure(self, jobs: Sequence[Job]) -> list[list[float]]:
        estimates = []
        for job in jobs:
            job()  # warm-up: allocator, caches, lazy init
            t0 = time.perf_counter()
            job()
            estimates.append(max(time.perf_counter() - t0, 1e-7) * 1e3)
        number = [max(1, math.ceil(self.min_sample_ms / est)) for est in estimates]
        per_sample = max(est * k for est, k in zip(estimates, number))
        reps = int(min(self.max_reps, max(self.min_reps, self.budget_ms // per_sample)))
        samples: list[list[float]] = [[] for _ in jobs]
        clock = time.perf_counter
        for order in _rounds(reps, len(jobs)):
            for i in order:
                fn, k = jobs[i].fn, number[i]
                t0 = clock()
                for _ in range(k):
                    fn()
                samples[i].append((clock() - t0) * 1e3 / k)
        return samples


@dataclass
class CudaBenchmarker:
    """CUDA-event timing with warm-up and an L2 flush before every repetition.

    As in Triton's ``do_bench``: a buffer larger than L2 is zeroed before each timed run so
    every candidate starts cold, and events bracket only the candidate.
    """

    budget_ms: float = 25.0
    warmup_ms: float = 5.0
    min_reps: int = 10
    max_reps: int = 200
    flush_bytes: int = 256 * 1024 * 1024

    def measure(self, jobs: Sequence[Job]) -> list[list[float]]:
        import torch

        torch.cuda.synchronize()
        cache = torch.empty(self.flush_bytes, dtype=torch.int8, device="cuda")
        estimates = []
        for job in jobs:
            job()
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            for _ in range(3):
                job()
            end.record()
            torch.cuda.synchronize()
            estimates.append(max(start.elapsed_time(end) / 3, 1e-4))
            for _ in range(int(min(100, self.warmup_ms // estimates[-1]))):
                job()
        reps = int(min(self.max_reps, max(self.min_reps, self.budget_ms // max(estimates))))
        events = [
            [(torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)) for _ in range(reps)]
            for _ in jobs
        ]
        for r, order in enumerate(_rounds(reps, len(jobs))):
            for i in order:
                cache.zero_()
                events[i][r][0].record()
                jobs[i].fn()
                events[i][r][1].record()
        torch.cuda.synchronize()
        return [[s.elapsed_time(e) for s, e in evs] for evs in events]


def default_benchmarker(device_type: str) -> Benchmarker:
    """CUDA events on a CUDA device, ``perf_counter`` everywhere else."""
    return CudaBenchmarker() if device_type == "cuda" else CpuBenchmarker()


def median(values: Sequence[float]) -> float:
    return statistics.median(values) if values else math.inf


def relative_spread(values: Sequence[float]) -> float:
    """Inter-quartile range over the median: the run-to-run noise of one measurement."""
    if len(values) < 4:
        return 0.0
    q = statistics.quantiles(values, n=4)
    mid = statistics.median(values)
    return (q[2] - q[0]) / mid if mid > 0 else 0.0
