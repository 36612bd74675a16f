"""The measurement core: how everything in rangedispatch times candidates.

The tuner, ``MultiKernel``'s ``benchmark`` policy and ``tuned_configs``, the plugin's bench
cases and the scripts in ``bench/`` all time through :class:`Benchmark`. It reaches the robust
per-size time of a GPU kernel, the one a careful ``triton.testing.do_bench`` run gives:

1. the device is warmed to steady clocks once per process (an idle GPU starts at a few hundred
   MHz and the first candidate timed would pay for the ramp);
2. each job runs once untimed, then a pilot of three timed calls; a job whose one call is
   slower than ``call_limit_ms`` is not called again (a hung or extremely slow candidate
   cannot stall tuning), and one far slower than the fastest pilot (``race_factor``
   squared) is dropped at once (racing);
3. each remaining job is warmed up, then timed in interleaved rounds (rotating the order, so
   drift spreads over every job). A round of one job is a Triton ``do_bench`` batch on CUDA
   (events around each call, L2 flushed before each call; for a job whose host work per call
   would leak into those events, the covered loop of :class:`CudaTimer`, which times device
   work only) or ``perf_counter`` loops on the CPU; the round's statistic is its median;
4. a job's time is the least of its round medians (interference only ever adds time). After
   ``min_rounds``, jobs slower than ``race_factor`` x the fastest are dropped; the fastest and
   every job whose difference from it is not yet resolved get more rounds, up to
   ``max_rounds`` or the time budget. A difference is resolved when the paired per-round
   ratios agree on its sign beyond their spread, or when it is below ``resolution`` (a tie).

A :class:`Timer` does the device-specific part; a fake timer replays recorded GPU timings
through the same logic on the CPU (``rangedispatch.testing.ReplayTimer``).

Any object with ``measure(jobs) -> list[list[float]]`` is still accepted where a benchmarker
is expected (unit tests script times that way); :func:`measure_jobs` adapts it.
"""

from __future__ import annotations

import functools
import math
import statistics
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Protocol, Sequence


@dataclass(frozen=True)
class Job:
    """One thing to time: ``fn()`` runs candidate ``name`` at dispatch size ``size``."""

    name: str
    size: Any
    fn: Callable[[], Any]

    def __call__(self) -> Any:
        return self.fn()


OK, RACED, SLOW, FAILED = "ok", "raced", "slow", "failed"

PILOT_CALLS = 3  # the pilot estimate is the median of this many single calls
# Racing before the rounds saves time only on slow jobs, and single calls of fast kernels are
# noisy (a cold call can take 20x its steady time): a job is raced out on its first call only
# past FIRST_RACE_MS, on its pilot only past PILOT_RACE_MS; the rounds race the rest.
FIRST_RACE_MS = 10.0
PILOT_RACE_MS = 1.0


@dataclass
class Measurement:
    """What the core found for one job.

    Args:
        ms: the robust time per call in milliseconds (least of the round medians; for a job
            dropped after its pilot, the pilot's time).
        rounds: the per-round medians.
        spread: the relative uncertainty of ``ms``: two standard errors of the round medians
            (relative to their mean), or their relative range when there are only two.
        status: ``ok``; ``raced`` (dropped early as clearly slower than the fastest: ``ms``
            is a lower bound of its time); ``slow`` (one call exceeded the call limit);
            ``failed`` (it raised while being timed).
    """

    name: str
    size: Any
    ms: float
    rounds: list[float] = field(default_factory=list)
    spread: float = 0.0
    status: str = OK
    calls: int = 0

    @property
    def samples(self) -> list[float]:
        return self.rounds or [self.ms]


class Benchmarker(Protocol):
    """Times jobs; returns per job a list of per-repetition times in milliseconds."""

    def measure(self, jobs: Sequence[Job]) -> list[list[float]]: ...


class Timer(Protocol):
    """The device-specific part of a measurement."""

    device_type: str

    def warm_device(self) -> None: ...

    def once(self, job: Job) -> float:
        """Milliseconds of one call, synchronised."""
        ...

    def warm_up(self, job: Job, ms: float, estimate_ms: float) -> None: ...

    def batch(self, job: Job, ms: float, estimate_ms: float) -> list[float]:
        """Per-call milliseconds of about ``ms`` worth of calls."""
        ...


# -- timers ---------------------------------------------------------------------------------

class CpuTimer:
    """``perf_counter`` on the host. A sample runs the job enough times (at least
    ``min_calls``) to last ``min_sample_ms`` so clock resolution and call overhead do not
    dominate tiny ops; ``sync`` (if any) runs before a sample and ends it."""

    device_type = "cpu"

    def __init__(self, min_sample_ms: float = 0.2, min_calls: int = 1,
                 sync: Callable[[], None] | None = None) -> None:
        self.min_sample_ms = min_sample_ms
        self.min_calls = min_calls
        self.sync = sync or (lambda: None)

    def warm_device(self) -> None:
        return None

    def once(self, job: Job) -> float:
        self.sync()
        t0 = time.perf_counter()
        job.fn()
        self.sync()
        return max(time.perf_counter() - t0, 1e-7) * 1e3

    def warm_up(self, job: Job, ms: float, estimate_ms: float) -> None:
        for _ in range(int(min(1000, ms // max(estimate_ms, 1e-4)))):
            job.fn()

    def batch(self, job: Job, ms: float, estimate_ms: float) -> list[float]:
        fn, sync = job.fn, self.sync
        number = max(self.min_calls, math.ceil(self.min_sample_ms / max(estimate_ms, 1e-5)))
        count = int(min(50, max(3, ms // max(estimate_ms * number, 1e-5))))
        clock, out = time.perf_counter, []
        sync()
        for _ in range(count):
            t0 = clock()
            for _ in range(number):
                fn()
            sync()
            out.append((clock() - t0) * 1e3 / number)
        return out


class WallTimer(CpuTimer):
    """Wall time per call of back-to-back eager calls on a CUDA device, host work included: a
    sample issues calls for ``min_sample_ms`` (at least ``min_calls``) and synchronises once at
    its end (a :class:`CpuTimer` with the device's sync), so host and device overlap as in an
    eager caller's loop. A call costs the larger of its launches' host time and its device time:
    a pipeline of five small kernels pays five launches (the ``objective="wall"`` timer)."""

    device_type = "cuda"

    def __init__(self, min_sample_ms: float = 1.0, min_calls: int = 10, warm_device_ms: float = 200.0) -> None:
        import torch

        super().__init__(min_sample_ms, min_calls, torch.cuda.synchronize)
        self.warm_device_ms = warm_device_ms

    def warm_device(self) -> None:
        """Busy the GPU once per timer so its clocks leave the idle state."""
        if self.warm_device_ms > 0:
            keep_gpu_busy(self.warm_device_ms)
            self.warm_device_ms = 0.0


_WARMED: set[int] = set()
ONCE_COVER_MAX_MS = 10.0  # a single call's host work up to this is covered by a spin (not seconds of it)


class CudaTimer:
    """Device time per call from CUDA events, the L2 flushed before every call.

    A job whose host work per call (Python wrapper, argument checks, launch) is short next to
    the flush is timed by ``triton.testing.do_bench``: the flush (~55 us on an H200) keeps the
    GPU busy while the host prepares the launch, so the events see only the kernels. Longer
    host work would leak into that time, and unevenly: a wrapper whose host work is about the
    flush's length (``sdpa_kernel`` around a 10 us attention kernel takes ~50 us) gives round
    medians of 14 us in one round and 36 us in the next. Such a job is timed by the covered
    loop instead: the same flush, then a GPU spin (``torch.cuda._sleep``) longer than the job's
    host work, then the events around the call, so every call is timed as device work only.

    Args:
        warm_device_ms: how long the GPU is kept busy once per process so its clocks leave the
            idle state before the first measurement.
        graphs: time the call inside a CUDA graph (``benchmark_with_cudagraphs=True``): the
            launch gaps of a captured region, not of eager launches; the L2 is flushed
            before each call there too (see ``_graph_batch``).
    """

    device_type = "cuda"

    def __init__(self, warm_device_ms: float = 200.0, graphs: bool = False, rewarm_ms: float = 20.0,
                 idle_ms: float = 50.0, cover_from: float = 0.3) -> None:
        self.warm_device_ms = warm_device_ms
        self.rewarm_ms = rewarm_ms
        self.idle_ms = idle_ms
        self.graphs = graphs
        self.cover_from = cover_from  # host work over this fraction of the flush: covered loop
        self._last = 0.0  # when this timer last finished a measurement
        self._graph_cache: dict[int, tuple[Any, Any, Any]] = {}  # fn id: fn, graph, events or calls
        self._flush: Any = None  # the L2 flush buffer of graphed timings
        self._host: dict[int, tuple[Callable[[], Any], float]] = {}  # per job fn: host ms per call

    def warm_device(self) -> None:
        """Busy the GPU for ``warm_device_ms`` once per process, and for ``rewarm_ms`` again
        when it has idled more than ``idle_ms`` since this timer's last measurement (between
        measurements the host checks outputs and builds inputs; an idle GPU drops its clocks)."""
        import torch

        index = torch.cuda.current_device()
        if index not in _WARMED:
            _WARMED.add(index)
            budget = self.warm_device_ms
        elif time.perf_counter() - self._last > self.idle_ms / 1e3:
            budget = self.rewarm_ms
        else:
            return
        keep_gpu_busy(budget)

    def once(self, job: Job) -> float:
        """One call's device time. A call whose host work (timed on the way) is long next to
        the flush, so that it would show up between the events, is timed once more covered
        (see :func:`covered_calls`): pilots and races judge device time, as rounds do."""
        import torch

        torch.cuda.synchronize()
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        began = time.perf_counter()
        job.fn()
        host = (time.perf_counter() - began) * 1e3
        end.record()
        torch.cuda.synchronize()
        ms = max(start.elapsed_time(end), 1e-4)
        if self.graphs or host > ONCE_COVER_MAX_MS or not self.covers(host):
            return ms
        return min(ms, covered_calls(job.fn, 1, host)[0])

    def warm_up(self, job: Job, ms: float, estimate_ms: float) -> None:
        import torch

        for _ in range(int(min(200, ms // max(estimate_ms, 1e-3)))):
            job.fn()
        torch.cuda.synchronize()

    def batch(self, job: Job, ms: float, estimate_ms: float) -> list[float]:
        fn = job.fn
        if self.graphs:
            return self._graph_batch(fn, ms, estimate_ms)
        host = self.host_ms(fn) if spin_available() else 0.0
        if self.covers(host):
            return covered_batch(fn, ms, host)
        from triton.testing import do_bench

        times = do_bench(fn, warmup=0, rep=ms, return_mode="all")
        return [float(t) for t in times] if isinstance(times, (list, tuple)) else [float(times)]

    def covers(self, host_ms: float) -> bool:
        """Whether a call with ``host_ms`` of host work is timed by the covered loop: host work
        over ``cover_from`` of the flush would leak into the events. Needs the GPU spin
        (:func:`spin_available`); without it, ``do_bench`` alone."""
        return spin_available() and host_ms > self.cover_from * _device_constants().flush_ms

    def host_ms(self, fn: Callable[[], Any]) -> float:
        """The host's time to issue one call of ``fn`` (median of three unsynchronised calls),
        measured once per job."""
        known = self._host.get(id(fn))
        if known is not None and known[0] is fn:
            return known[1]
        host = issue_ms(fn)
        self._host[id(fn)] = (fn, host)
        return host

    def _graph_batch(self, fn: Callable[[], Any], ms: float, estimate_ms: float) -> list[float]:
        """Per-call device times of a captured graph of ``n`` calls, each after an L2 flush
        and between two timing events captured with it (:func:`cold_graph_calls`): the launch
        gaps of a captured region, and the same cold cache as every other timing here. Where
        this torch or driver cannot time events inside a graph, each replay of ``n``
        back-to-back calls gives one mean per call instead (with the inputs hot in L2)."""
        import torch

        key = id(fn)
        if key not in self._graph_cache or self._graph_cache[key][0] is not fn:
            flush_ms = _device_constants().flush_ms
            n = int(min(100, max(1, ms // max(estimate_ms + flush_ms, 1e-3))))
            captured = cold_graph_calls(fn, n, self._flush_buffer()) if graph_events_supported() else None
            if captured is None:
                n = int(min(200, max(1, ms // max(estimate_ms, 1e-3))))
                captured = capture_graph(lambda: [fn() for _ in range(n)], warmup=fn)[0], n
            torch.cuda.synchronize()
            self._graph_cache[key] = (fn, *captured)
        _, graph, timing = self._graph_cache[key]
        if not isinstance(timing, int):  # the events of each call
            graph.replay()
            torch.cuda.synchronize()
            return [max(start.elapsed_time(end), 1e-4) for start, end in timing]
        return replay_ms(graph, timing)

    def _flush_buffer(self) -> Any:
        if self._flush is None:
            from triton import runtime

            self._flush = runtime.driver.active.get_empty_cache_for_benchmark()
        return self._flush

    def release(self) -> None:
        self._graph_cache.clear()
        self._flush = None
        self._host.clear()
        self._last = time.perf_counter()


def keep_gpu_busy(ms: float) -> None:
    """Run bf16 matmuls on the current GPU for ``ms`` of wall time, so its clocks are at their
    working level (an idle GPU drops them) before something is timed."""
    import torch

    a = torch.randn(4096, 4096, device="cuda", dtype=torch.bfloat16)
    torch.cuda.synchronize()
    t0 = time.perf_counter()
    while (time.perf_counter() - t0) * 1e3 < ms:
        for _ in range(10):
            a @ a
        torch.cuda.synchronize()


def device_time_ms(fn: Callable[[], Any], rep_ms: float = 40.0) -> float:
    """The median device milliseconds per call of ``fn()`` on CUDA, timed as the core times a
    round (``do_bench``, or the covered loop for host-heavy calls): for benchmark scripts that
    compare callables by the same rule the tuner decides with."""
    import torch

    for _ in range(3):
        fn()
    torch.cuda.synchronize()
    return statistics.median(CudaTimer().batch(Job("", 0, fn), rep_ms, 0.0))


def issue_ms(fn: Callable[[], Any], calls: int = 3) -> float:
    """Host milliseconds to issue one call of ``fn`` without waiting for the device: the median
    of ``calls`` calls, each after the device queue drained."""
    import torch

    times = []
    for _ in range(calls):
        torch.cuda.synchronize()
        t0 = time.perf_counter()
        fn()
        times.append((time.perf_counter() - t0) * 1e3)
    torch.cuda.synchronize()
    return statistics.median(times)


@dataclass(frozen=True)
class _Constants:
    flush_ms: float  # one L2 flush of Triton's benchmark buffer
    cycles_per_ms: float  # of ``torch.cuda._sleep``


_CONSTANTS: dict[int, _Constants] = {}


def _device_constants() -> _Constants:
    """The current device's flush time and spin rate, measured once per process."""
    import torch
    from triton import runtime

    index = torch.cuda.current_device()
    if index not in _CONSTANTS:
        driver = runtime.driver.active
        cache = driver.get_empty_cache_for_benchmark()
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        driver.clear_cache(cache)
        sleep = _spin()
        sleep(1_000_000)  # the first spin loads its kernel
        torch.cuda.synchronize()
        start.record()
        for _ in range(5):
            driver.clear_cache(cache)
        end.record()
        torch.cuda.synchronize()
        flush = start.elapsed_time(end) / 5
        cycles = 2_000_000
        start.record()
        sleep(cycles)
        end.record()
        torch.cuda.synchronize()
        _CONSTANTS[index] = _Constants(flush, cycles / max(start.elapsed_time(end), 1e-3))
    return _CONSTANTS[index]


def _spin() -> Callable[[int], None]:
    """The GPU spin (``torch.cuda._sleep``, see :mod:`rangedispatch.compat`)."""
    from .. import compat

    return compat.get("cuda_sleep")


def covered_batch(fn: Callable[[], Any], ms: float, host_ms: float) -> list[float]:
    """Per-call device milliseconds of ``fn`` with its host work hidden: before each call the
    L2 is flushed (Triton's buffer, as ``do_bench`` does) and the GPU spins for longer than
    ``host_ms``, so the call's kernels are queued before the start event is reached. As many
    calls as fit in ``ms`` of device time, flushes and spins included (at least 5)."""
    first = covered_calls(fn, 1, host_ms)[0]  # the estimate, the call's device time alone
    count = int(min(100, max(5, ms // (first + _spin_ms(host_ms) + _device_constants().flush_ms))))
    return covered_calls(fn, count, host_ms)


def _spin_ms(host_ms: float) -> float:
    return 2 * host_ms + 0.01  # twice the host work: the spin rate was measured once, clocks vary


def spin_available() -> bool:
    """Whether the GPU spin of the covered loop exists (``torch.cuda._sleep``, a private torch
    API reached through :mod:`rangedispatch.compat`)."""
    from .. import compat

    return compat.have("cuda_sleep")


def covered_calls(fn: Callable[[], Any], count: int, host_ms: float) -> list[float]:
    """``count`` calls of ``fn``, each after an L2 flush and a GPU spin longer than its
    ``host_ms`` of host work, timed by events around the call alone (device milliseconds)."""
    import torch
    from triton import runtime

    driver = runtime.driver.active
    cache = driver.get_empty_cache_for_benchmark()
    cycles = int(_device_constants().cycles_per_ms * _spin_ms(host_ms))
    starts = [torch.cuda.Event(enable_timing=True) for _ in range(count)]
    ends = [torch.cuda.Event(enable_timing=True) for _ in range(count)]
    sleep = _spin()
    for start, end in zip(starts, ends):
        driver.clear_cache(cache)
        sleep(cycles)
        start.record()
        fn()
        end.record()
    torch.cuda.synchronize()
    return [max(s.elapsed_time(e), 1e-4) for s, e in zip(starts, ends)]


def capturing_cuda_graph() -> bool:
    """Whether the current CUDA stream is capturing a graph (nothing may be timed or compiled)."""
    import torch

    return bool(torch.cuda.is_available() and torch.cuda.is_current_stream_capturing())


def capture_graph(fn: Callable[[], Any], warmup: Callable[[], Any] | None = None, warmup_calls: int = 1) -> tuple[Any, Any]:
    """``fn()`` captured in a CUDA graph, after ``warmup`` (default ``fn``) ran on a side
    stream as capture requires (lazy initialisation, library handles, autotuning). Returns
    the graph and the captured call's output, whose memory later replays write to.

    A capture that fails (a host sync, a CPU copy) leaves torch's CUDA generator marked as
    capturing, so every later random call raises "Offset increment outside graph capture";
    a trivial capture is made to end that before the error propagates."""
    import torch

    stream = torch.cuda.Stream()
    stream.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(stream):
        for _ in range(warmup_calls):
            (warmup or fn)()
    torch.cuda.current_stream().wait_stream(stream)
    graph = torch.cuda.CUDAGraph()
    try:
        with torch.cuda.graph(graph):
            out = fn()
    except BaseException:
        _settle_failed_capture()
        raise
    return graph, out


def replay_ms(graph: Any, calls: int, replays: int = 3) -> list[float]:
    """Milliseconds per call of each of ``replays`` replays of ``graph``, a graph of ``calls``
    back-to-back calls (whatever they left in L2 stays there for the next)."""
    import torch

    out = []
    for _ in range(replays):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        graph.replay()
        end.record()
        torch.cuda.synchronize()
        out.append(start.elapsed_time(end) / calls)
    return out


@functools.cache
def graph_events_supported() -> bool:
    """Whether timing events recorded inside a captured graph can be read after a replay
    (``torch.cuda.Event(external=True)``), checked once per process on a trivial graph."""
    import torch

    try:
        start, end = (torch.cuda.Event(enable_timing=True, external=True) for _ in range(2))
        buf = torch.zeros(1024, device="cuda")

        def body() -> None:
            start.record()
            buf.add_(1)
            end.record()

        graph, _ = capture_graph(body)
        graph.replay()
        torch.cuda.synchronize()
        return start.elapsed_time(end) >= 0.0
    except Exception:  # an older torch or driver: replays are timed as a whole
        return False


def cold_graph_calls(fn: Callable[[], Any], n: int, flush: Any) -> tuple[Any, list[tuple[Any, Any]]]:
    """A graph of ``n`` calls of ``fn``, each after zeroing ``flush`` (evicting L2, as
    ``do_bench`` does) and between two timing events, and those events. A call that cannot
    be captured raises, as :func:`capture_graph` does."""
    import torch

    pairs = [(torch.cuda.Event(enable_timing=True, external=True), torch.cuda.Event(enable_timing=True, external=True))
             for _ in range(n)]

    def body() -> None:
        for start, end in pairs:
            flush.zero_()
            start.record()
            fn()
            end.record()

    return capture_graph(body, warmup=fn)[0], pairs


def _settle_failed_capture() -> None:
    import torch

    try:
        torch.cuda.synchronize()
        buf = torch.zeros(1, device="cuda")
        with torch.cuda.graph(torch.cuda.CUDAGraph()):
            buf.add_(1)
        torch.cuda.synchronize()
    except Exception:  # the original error is the one worth raising
        pass


# -- the core -------------------------------------------------------------------------------

@dataclass
class Benchmark:
    """The measurement core (see the module docstring). ``measure_jobs`` returns a
    :class:`Measurement` per job; ``measure`` is the plain :class:`Benchmarker` form.

    Args:
        timer: the device part (:class:`CpuTimer`, :class:`CudaTimer`, or a replay).
        round_ms: time spent on one job in one round.
        warmup_ms: warm-up per job before its first round.
        min_rounds, max_rounds: rounds per job before a decision is allowed / at most.
        race_factor: after ``min_rounds``, a job slower than this times the fastest is dropped;
            after the pilot, one slower than its square is.
        resolution: relative differences below this are ties (no more rounds spent on them).
        call_limit_ms: a job whose single call takes longer is timed no further (``slow``).
        budget_s: wall-clock budget of one ``measure_jobs`` call; past it no new rounds start.
    """

    timer: Any = field(default_factory=CpuTimer)
    round_ms: float = 2.0
    warmup_ms: float = 5.0
    min_rounds: int = 3
    max_rounds: int = 9
    race_factor: float = 2.0
    resolution: float = 0.005
    call_limit_ms: float = 2000.0
    budget_s: float | None = None

    def measure(self, jobs: Sequence[Job]) -> list[list[float]]:
        return [m.samples for m in self.measure_jobs(jobs)]

    def measure_jobs(self, jobs: Sequence[Job], *, deadline: float | None = None,
                     warm: bool = False) -> list[Measurement]:
        """Measure ``jobs`` together. ``warm=True``: every job already ran once (the tuner's
        correctness check), so the cold call is skipped. Past ``deadline`` (a
        ``perf_counter`` value) no new round starts once every job has had one."""
        try:
            return self._measure(jobs, deadline, warm)
        finally:
            release = getattr(self.timer, "release", None)
            if release is not None:
                release()

    def _measure(self, jobs: Sequence[Job], deadline: float | None, warm: bool) -> list[Measurement]:
        timer = self.timer
        clock = time.perf_counter
        if self.budget_s is not None:
            own = clock() + self.budget_s
            deadline = own if deadline is None else min(deadline, own)
        timer.warm_device()
        out = [Measurement(j.name, j.size, math.inf) for j in jobs]
        firsts = self._first_calls(jobs, out, warm)
        pilot: dict[int, float] = {}
        quickest = min(firsts.values(), default=math.inf)
        for i, first in firsts.items():
            if first > max(self.race_factor ** 4 * quickest, FIRST_RACE_MS):
                out[i].ms, out[i].status = first, RACED  # far slower on its very first call
                continue
            try:
                calls = [first] + [timer.once(jobs[i]) for _ in range(PILOT_CALLS - 1)]
            except Exception:
                out[i].status = FAILED
                continue
            out[i].calls += PILOT_CALLS - 1
            pilot[i] = statistics.median(calls)
        if not pilot:
            return out
        fastest = min(pilot.values())
        active = []
        for i, ms in pilot.items():
            if ms > max(fastest * self.race_factor ** 2, PILOT_RACE_MS):
                out[i].ms, out[i].status = ms, RACED
            else:
                active.append(i)
        for i in active:
            timer.warm_up(jobs[i], self.warmup_ms, pilot[i])
        rounds: dict[int, list[float]] = {i: [] for i in active}
        for r in range(self.max_rounds):
            if r >= 1 and deadline is not None and clock() > deadline:
                break
            order = active[r % len(active):] + active[: r % len(active)]
            for i in order:
                try:
                    samples = timer.batch(jobs[i], self.round_ms, pilot[i])
                except Exception:
                    out[i].status = FAILED
                    continue
                out[i].calls += len(samples)
                rounds[i].append(statistics.median(samples))
            active = [i for i in active if out[i].status == OK]
            if not active:
                break
            for i in active:
                out[i].ms = min(rounds[i])
            if r + 1 < self.min_rounds:
                continue
            active = self._still_open(active, rounds, out)
            if len(active) <= 1:
                break
        for i, rs in rounds.items():
            out[i].rounds = rs
            if rs:
                out[i].ms = min(rs)
                out[i].spread = uncertainty(rs)
        return out

    def _first_calls(self, jobs: Sequence[Job], out: list[Measurement], warm: bool) -> dict[int, float]:
        """One timed call per job (after a cold one unless ``warm``); jobs over the call limit
        are marked ``slow`` and jobs that raise ``failed``."""
        firsts: dict[int, float] = {}
        for i, job in enumerate(jobs):
            try:
                if not warm:
                    cold = self.timer.once(job)  # compilation, handles, caches
                    out[i].calls += 1
                    if cold > self.call_limit_ms:
                        out[i].ms, out[i].status = cold, SLOW
                        continue
                first = self.timer.once(job)
                out[i].calls += 1
            except Exception:  # a candidate that raises while timed loses, never crashes tuning
                out[i].status = FAILED
                continue
            if first > self.call_limit_ms:
                out[i].ms, out[i].status = first, SLOW
            else:
                firsts[i] = first
        return firsts

    def _still_open(self, active: list[int], rounds: dict[int, list[float]], out: list[Measurement]) -> list[int]:
        """Race out clearly slower jobs; keep the fastest and the jobs not yet resolved against it."""
        best = min(active, key=lambda i: out[i].ms)
        keep = [best]
        for i in active:
            if i == best:
                continue
            if out[i].ms > out[best].ms * self.race_factor:
                out[i].status = RACED
                continue
            if not resolved(rounds[i], rounds[best], self.resolution):
                keep.append(i)
        return keep


def two_standard_errors(values: Sequence[float]) -> float:
    """Twice the standard error of the mean of ``values`` (at least two)."""
    return 2 * statistics.stdev(values) / math.sqrt(len(values))


def log_ratios(a: Sequence[float], b: Sequence[float]) -> list[float]:
    """Per-round ``log(a / b)`` of paired round medians (rounds where both are positive)."""
    return [math.log(x / y) for x, y in zip(a, b) if x > 0 and y > 0]


def uncertainty(rounds: Sequence[float]) -> float:
    """Relative uncertainty of a time from its round medians (two standard errors)."""
    if len(rounds) < 2 or min(rounds) <= 0:
        return 0.0
    if len(rounds) == 2:
        return (max(rounds) - min(rounds)) / min(rounds)
    return two_standard_errors(rounds) / statistics.fmean(rounds)


def resolved(a: Sequence[float], b: Sequence[float], resolution: float) -> bool:
    """Whether paired round medians ``a`` and ``b`` say which is faster, or that they tie.

    The log ratio of the two robust times is compared with the spread of the paired per-round
    log ratios (their standard error, doubled): a difference beyond it is real; a difference
    (and its uncertainty) below ``resolution`` is a tie.
    """
    n = min(len(a), len(b))
    if n < 2:
        return False
    logs = log_ratios(a[:n], b[:n])
    if len(logs) < 2:
        return True
    diff = abs(math.log(min(a) / min(b)))
    err = two_standard_errors(logs)
    return diff > err or (diff + err) < resolution


def measure_jobs(benchmarker: Any, jobs: Sequence[Job], *, deadline: float | None = None,
                 warm: bool = False) -> list[Measurement]:
    """Measurements from any benchmarker: the core's own, or a plain ``measure(jobs)`` one
    (its median per job, and the inter-quartile spread as noise)."""
    if not jobs:
        return []
    detailed = getattr(benchmarker, "measure_jobs", None)
    if detailed is not None:
        return detailed(jobs, deadline=deadline, warm=warm)
    out = []
    for job, samples in zip(jobs, benchmarker.measure(jobs)):
        out.append(Measurement(job.name, job.size, median(samples), list(samples), relative_spread(samples),
                               calls=len(samples)))
    return out


class CpuBenchmarker(Benchmark):
    """The core with a CPU timer."""

    def __init__(self, **options: Any) -> None:
        options.setdefault("round_ms", 3.0)
        options.setdefault("warmup_ms", 2.0)
        super().__init__(CpuTimer(), **options)


class CudaBenchmarker(Benchmark):
    """The core with a CUDA timer (``cuda_graphs=True``: CUDA-graph replays)."""

    def __init__(self, *, cuda_graphs: bool = False, **options: Any) -> None:
        options.setdefault("round_ms", 2.0)
        options.setdefault("warmup_ms", 10.0)
        super().__init__(CudaTimer(graphs=cuda_graphs), **options)


def default_benchmarker(device_type: str, *, cuda_graphs: bool = False, objective: str = "device") -> Benchmark:
    """The measurement core for a device: CUDA events (or graph replay) on CUDA,
    ``perf_counter`` everywhere else; with ``objective="wall"`` on CUDA, the wall time of
    back-to-back eager calls (:class:`WallTimer`)."""
    if device_type == "cuda" and objective == "wall":
        return Benchmark(WallTimer(), round_ms=4.0, warmup_ms=10.0)
    return CudaBenchmarker(cuda_graphs=cuda_graphs) if device_type == "cuda" else CpuBenchmarker()


def median(values: Sequence[float]) -> float:
    return statistics.median(values) if values else math.inf


def relative_spread(values: Sequence[float]) -> float:
    """Inter-quartile range over the median: the run-to-run noise of one measurement."""
    if len(values) < 4:
        return 0.0
    q = statistics.quantiles(values, n=4)
    mid = statistics.median(values)
    return (q[2] - q[0]) / mid if mid > 0 else 0.0
