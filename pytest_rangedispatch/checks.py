"""What a generated case does: the equivalence sweep and the per-range benchmark.

Imported only when a marked test runs, so loading the plugin imports neither torch nor
Hypothesis.
"""

from __future__ import annotations

import math
import statistics
import time
import zlib
from dataclasses import dataclass
from typing import Any, Callable, Sequence

import torch

from rangedispatch import compare
from rangedispatch.measure.compare import compare_with_truth
from rangedispatch.errors import first_line
from rangedispatch.measure.gradients import candidate_gradient_fault, differentiable, floating_inputs, gradients
from rangedispatch.measure.verify import (InputSnapshot, aliased_inputs, check_output, has_low_precision, input_fault,
                                          reference_run, truth_of)
from rangedispatch.decide.inputs import CallTemplate, InputFactory
from rangedispatch.measure.timing import OK, RACED, Job, capture_graph, default_benchmarker, measure_jobs
from rangedispatch.decide.tuner import effective_upper_bound, range_top, sample_sizes

from .cases import DISPATCH, LAYOUTS, OpSpec, RangeCase, is_cell
from .examples import ensure_tuned, example_call
from .examples import tensors_of as _tensors
from .locking import device_lock
from .options import DEFAULT_PROFILE, PROFILES
from .records import format_ms as _ms


# -- Hypothesis profiles -------------------------------------------------------------------

def register_profiles() -> None:
    """``rangedispatch-ci`` (reproducible, 25 examples), ``rangedispatch-gpu`` (no deadline,
    15 examples: GPU and compile cold starts) and ``rangedispatch-thorough`` (200 random
    examples with Hypothesis's example database)."""
    from hypothesis import HealthCheck, settings

    quiet = [HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.filter_too_much,
             HealthCheck.differing_executors]
    common = dict(deadline=None, suppress_health_check=quiet, print_blob=True)
    settings.register_profile(PROFILES[0], max_examples=25, derandomize=True, database=None, **common)
    settings.register_profile(PROFILES[1], max_examples=15, derandomize=True, database=None, **common)
    settings.register_profile(PROFILES[2], max_examples=200, **common)


def hypothesis_settings(profile: str | None, examples: int | None) -> Any:
    from hypothesis import settings

    register_profiles()
    base = settings.get_profile(profile or DEFAULT_PROFILE)
    return settings(base, max_examples=examples) if examples else base


# -- inputs ----------------------------------------------------------------------------------

@dataclass(frozen=True)
class Variant:
    dtype: Any
    device: str
    layout: str

    def describe(self) -> str:
        return f"dtype {str(self.dtype).replace('torch.', '')}, device {self.device}, layout {self.layout}"


def example_variant(args: Sequence[Any], kwargs: dict[str, Any]) -> Variant:
    """The example's own variant: its first tensor's dtype (if floating) and device, contiguous."""
    first = next(iter(_tensors(args, kwargs)), None)
    if first is None:
        return Variant(None, "cpu", "contiguous")
    return Variant(first.dtype if first.is_floating_point() else None, str(first.device), "contiguous")


def _map(args: Sequence[Any], kwargs: dict[str, Any], fn: Callable[[Any], Any]) -> tuple[tuple[Any, ...], dict[str, Any]]:
    conv = lambda v: fn(v) if isinstance(v, torch.Tensor) else v  # noqa: E731
    return tuple(conv(a) for a in args), {k: conv(v) for k, v in kwargs.items()}


def with_layout(t: Any, layout: str) -> Any:
    """Same values in another memory layout: column-major last two dims, or a strided slice."""
    if layout == "transposed" and t.dim() >= 2:
        return t.transpose(-1, -2).contiguous().transpose(-1, -2)
    if layout == "sliced" and t.dim() >= 1:
        buf = torch.empty(*t.shape[:-1], 2 * t.shape[-1], dtype=t.dtype, device=t.device)
        view = buf[..., ::2]
        view.copy_(t)
        return view
    return t


def default_variants(spec: OpSpec, args: Sequence[Any], kwargs: dict[str, Any]) -> tuple[list[Any], list[str], list[str]]:
    opts = spec.options
    floats = [t for t in _tensors(args, kwargs) if t.is_floating_point()]
    first = floats[0] if floats else next(iter(_tensors(args, kwargs)), None)
    if opts.get("dtypes") is not None:
        dtypes = list(opts["dtypes"]) if isinstance(opts["dtypes"], (list, tuple)) else [opts["dtypes"]]
    elif floats:
        dtypes = list(dict.fromkeys([floats[0].dtype, torch.float16, torch.bfloat16]))
    else:
        dtypes = [None]
    if opts.get("devices") is not None:
        devices = [str(d) for d in (opts["devices"] if isinstance(opts["devices"], (list, tuple)) else [opts["devices"]])]
    else:
        devices = [str(first.device) if first is not None else "cpu"]
    layouts = opts.get("layouts", LAYOUTS)
    layouts = list(layouts) if isinstance(layouts, (list, tuple)) else [layouts]
    return dtypes, devices, layouts


def device_available(device: str) -> bool:
    kind = torch.device(device).type
    if kind == "cuda":
        return torch.cuda.is_available()
    if kind == "mps":
        return bool(getattr(torch.backends, "mps", None)) and torch.backends.mps.is_available()
    return True


class Inputs:
    """Builds the op's inputs for a size in a variant, seeded so every draw is reproducible."""

    def __init__(self, spec: OpSpec, args: Sequence[Any], kwargs: dict[str, Any]) -> None:
        self.spec, self.args, self.kwargs = spec, tuple(args), dict(kwargs)
        self._factories: dict[tuple[Any, str], InputFactory] = {}

    def factory(self, dtype: Any, device: str) -> InputFactory:
        key = (dtype, device)
        if key not in self._factories:
            def convert(t: Any) -> Any:
                t = t.to(device)
                return t.to(dtype) if dtype is not None and t.is_floating_point() else t

            args, kwargs = _map(self.args, self.kwargs, convert)
            op = self.spec.op
            template = CallTemplate.from_call(op.reference_fn, args, kwargs)
            template.check(op.dispatch)
            self._factories[key] = InputFactory(template, op.dispatch, op.input_gen_fns, op_name=op.name)
        return self._factories[key]

    def make(self, size: int | None, variant: Variant, salt: str = "") -> tuple[tuple[Any, ...], dict[str, Any]]:
        """``salt`` draws other values of the same shapes."""
        args, kwargs = seeded(f"{self.spec.name}|{size}|{variant}{salt}", variant.device,
                              lambda: self.factory(variant.dtype, variant.device).make(size))
        return _map(args, kwargs, lambda t: with_layout(t, variant.layout))


def seeded(key: str, device: str, build: Callable[[], Any]) -> Any:
    """``build()`` under a random state seeded from ``key`` (the caller's and the device's
    random state are left as they were), so every draw of an input is reproducible."""
    where = torch.device(device)
    with torch.random.fork_rng(devices=[where.index or 0] if where.type == "cuda" else []):
        torch.manual_seed(zlib.crc32(key.encode()))
        return build()


def describe_inputs(args: Sequence[Any], kwargs: dict[str, Any], names: Sequence[str]) -> str:
    parts = []
    for i, a in enumerate(args):
        if isinstance(a, torch.Tensor):
            name = names[i] if i < len(names) else f"arg{i}"
            parts.append(f"{name}: {str(a.dtype).replace('torch.', '')}{list(a.shape)} stride {tuple(a.stride())}")
    for k, v in kwargs.items():
        if isinstance(v, torch.Tensor):
            parts.append(f"{k}: {str(v.dtype).replace('torch.', '')}{list(v.shape)} stride {tuple(v.stride())}")
    return "; ".join(parts)


# -- equivalence -----------------------------------------------------------------------------

CHECK_TOP = 4096  # an unbounded range is checked at least up to this size ...
CHECK_TOP_FACTOR = 4  # ... and up to this multiple of its lower end


def upper_size(spec: OpSpec, rng: Any) -> int:
    """The largest size checked in ``rng``. For an unbounded range: the marker's ``max_size``,
    else the op's ``range_upper_bound``, else the largest recorded size, else
    ``max(4096, 4 * lo)``: sizes serving traffic reaches, not just past the boundary."""
    top = spec.options.get("max_size")
    if top is None:
        top = effective_upper_bound(spec.op.dispatch, spec.op.settings)
    profile = getattr(spec.op, "profile", None)
    if top is None and profile is not None and profile.counts:
        top = max(profile.counts)
    if top is None:
        top = max(CHECK_TOP, CHECK_TOP_FACTOR * max(rng.lo, 1))
    return range_top(rng, top)


def window(case: RangeCase) -> tuple[int, int]:
    """Sizes a case covers: its range (capped for an unbounded one); for the dispatched op
    also one size across each boundary."""
    rng, top = case.range, upper_size(case.spec, case.range)
    if case.kind == DISPATCH:
        return max(rng.lo - 1, 0), top + (1 if rng.hi is not None else 0)
    return rng.lo, top


def boundary_sizes(case: RangeCase) -> list[int]:
    """lo, lo+1 and hi-1 (for the dispatched op also lo-1 and hi), plus the marker's ``sizes``
    that fall in the case's window."""
    rng, top = case.range, upper_size(case.spec, case.range)
    low, high = window(case)
    sizes = {rng.lo - 1, rng.lo, rng.lo + 1, top, top + 1}
    sizes |= {int(s) for s in case.spec.options.get("sizes") or ()}
    profile = getattr(case.op, "profile", None)
    if profile is not None:  # the sizes real calls send most often
        sizes |= set(profile.top(RECORDED_SIZES, low, high))
    table = getattr(case.op, "table", None)
    if case.kind == DISPATCH and table is not None and not is_cell(rng):
        for r in table.results:  # where a refined table changes implementation inside the range
            if low < r.range.lo <= high:
                sizes |= {r.range.lo - 1, r.range.lo}
    return sorted(s for s in sizes if low <= s <= high)


RECORDED_SIZES = 16  # most frequent recorded sizes always checked per range
EVERY_SIZE_ALWAYS = 512  # a range this narrow is checked at every size, always;
EVERY_SIZE_MAX = 2048  # one this narrow too ...
EVERY_SIZE_SECONDS = 3.0  # ... when that takes at most this long


class Equivalence:
    """The check of one case: the subject (a candidate or the dispatched op) against the
    reference, on Hypothesis-drawn sizes and on every boundary size, in every variant."""

    def __init__(self, case: RangeCase, profile: str | None) -> None:
        spec = case.spec
        self.op = spec.op
        args, kwargs = example_call(spec)
        self.inputs = Inputs(spec, args, kwargs)
        self._setup(case, profile, *default_variants(spec, args, kwargs))
        if case.kind == DISPATCH:
            ensure_tuned(spec, args, kwargs)
            self.subject: Callable[..., Any] = spec.target if callable(spec.target) else self.op
            self.subject_name = "the dispatched op"
        else:
            cand = self.op.candidates[case.kind]
            self.subject = cand.call
            self.subject_name = f"candidate {cand.name!r}"
        self.reference = self.op._ref.call
        self.names = list(self.op._params)

    def _setup(self, case: RangeCase, profile: str | None, dtypes: list[Any], devices: list[str],
               layouts: list[str]) -> None:
        """What every equivalence check holds besides its subject, reference and inputs."""
        self.case, self.profile = case, profile
        self.dtypes, self.layouts = dtypes, layouts
        self.devices = [d for d in devices if device_available(d)]
        self.unavailable = [d for d in devices if d not in self.devices]
        self.float64 = case.spec.options.get("reference")
        self.rtol, self.atol = case.spec.options.get("rtol"), case.spec.options.get("atol")
        self.examples = 0
        self.skipped = 0
        self.owned: list[str] = []  # inputs the reference itself writes to
        self.grad = case.spec.options.get("grad", "auto")  # validated with the marker
        self.grad_checks = 0
        # the dispatched op's gradient is its candidates' (each checked in its own case) unless
        # asked for: running it on inputs that require grad tunes a table for training calls
        self._grad_state: bool | None = None if case.kind != DISPATCH or self.grad is True else False

    def wants_grad(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> bool:
        """Whether this case checks gradients: ``grad=True``, or ``"auto"`` and the reference has
        one on the first inputs drawn (floating inputs, an output that requires grad, a
        backward that runs). Decided once per case."""
        if self._grad_state is None:
            if self.grad is True:
                self._grad_state = True
            elif self.grad is False:
                self._grad_state = False
            else:
                self._grad_state = differentiable(self.reference, args, kwargs, self.names)
        return self._grad_state

    def check_gradients(self, args: tuple[Any, ...], kwargs: dict[str, Any], where: str) -> None:
        """Backward of the subject against the reference's, with the same random cotangent: the
        gradient of every floating input (see :mod:`rangedispatch.measure.gradients`)."""
        __tracebackhide__ = True
        if not floating_inputs(args, kwargs, self.names):
            return
        self.grad_checks += 1
        expected = gradients(self.reference, args, kwargs, self.names)
        if expected.error is not None or not expected.requires_grad:
            if self.grad is True:
                raise AssertionError(f"{where}: grad=True but the reference has no gradient here "
                                     f"({expected.error or 'its output does not require grad'}); pass grad=False")
            return
        fault = candidate_gradient_fault(self.subject, self.reference, args, kwargs, self.names, expected,
                                         rtol=self.rtol, atol=self.atol)
        if fault is not None:
            raise AssertionError(f"{where}: {self.subject_name} {fault}")

    def check(self, size: int, variant: Variant, repeat: bool = False, grad: bool = True) -> None:
        """One example: the subject's output (and, where the case checks gradients and ``grad``,
        its backward) against the reference's at ``size`` in ``variant``."""
        __tracebackhide__ = True
        self.examples += 1
        args, kwargs = self.inputs.make(size, variant)
        try:
            expected = self._expected(args, kwargs)
        except Exception:
            self.skipped += 1  # the reference does not support this variant: nothing to compare
            return
        where = self._where(size, variant, args, kwargs)
        snapshot = InputSnapshot.take(args, kwargs, self.names)
        try:
            got = self.subject(*args, **kwargs)
        except Exception as exc:
            raise AssertionError(
                f"{where}: {self.subject_name} raised {type(exc).__name__}: {exc} where the reference runs"
            ) from exc
        fault = input_fault(snapshot, got, args, kwargs, self.names, self.owned,
                            aliased_inputs(expected, args, kwargs, self.names))
        if fault is not None:
            raise AssertionError(f"{where}: {self.subject_name} {fault}")
        if repeat:
            again = self.subject(*args, **kwargs)
            drift = compare(again, got, rtol=self.rtol, atol=self.atol)
            if drift is not None:
                raise AssertionError(
                    f"{where}: {self.subject_name} is non-deterministic: two calls on the same input differ "
                    f"beyond the tolerance ({drift})"
                )
        if self.float64 is not None:
            found = compare_with_truth(got, self.reference(*args, **kwargs), expected, rtol=self.rtol,
                                       atol=self.atol) if has_low_precision(got) else \
                compare(got, _cast_like(expected, got), rtol=self.rtol, atol=self.atol)
        else:
            found = check_output(got, expected, truth_of(self.reference, args, kwargs), rtol=self.rtol,
                                 atol=self.atol)
        if found is not None:
            raise AssertionError(f"{where}: {self.subject_name} differs from the reference: {found}")
        # a backward runs on fresh leaves (contiguous copies): one layout per dtype says it all
        if grad and variant.layout == self.layouts[0] and self.wants_grad(args, kwargs):
            self.check_gradients(args, kwargs, where)

    def _expected(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        if self.float64 is None:
            expected, self.owned = reference_run(self.reference, args, kwargs, self.names)
            return expected
        up = lambda t: t.double() if t.is_floating_point() else t  # noqa: E731
        a, k = _map(args, kwargs, up)
        return self.float64(*a, **k)

    def _where(self, size: int, variant: Variant, args: tuple[Any, ...], kwargs: dict[str, Any]) -> str:
        case = self.case
        dispatch = self.op.dispatch
        at = size_at(dispatch, size)
        return (f"{case.spec.name}: range {dispatch} in {case.range}, {at} ({variant.describe()}; "
                f"inputs {describe_inputs(args, kwargs, self.names)})")

    def strategy(self) -> Any:
        """Hypothesis strategy of the sizes to sweep (``None``: nothing to sweep)."""
        from hypothesis import strategies as st

        if self.op.dispatch is None:
            return None
        low, high = window(self.case)
        if high <= max(low, 1) * 4:
            return st.integers(low, high)
        # uniform and log-uniform: a wide range gets small and large sizes alike, and
        # failures still shrink towards the low end
        lo_log, hi_log = math.log(max(low, 1)), math.log(high)
        log_uniform = st.floats(lo_log, hi_log).map(lambda v: min(high, max(low, round(math.exp(v)))))
        return st.one_of(st.integers(low, high), log_uniform)

    def examples_for(self, base: int) -> int:
        """More examples for wide ranges: x1 up to 16x wide, up to x2 beyond."""
        low, high = window(self.case)
        width = math.log2(max(high, 2) / max(low, 1))
        return int(base * min(2.0, max(1.0, width / 4)))

    def fixed_sizes(self) -> list[Any]:
        """Sizes always checked after the sweep."""
        return boundary_sizes(self.case) if self.op.dispatch is not None else [None]

    def run(self) -> int:
        """Hypothesis first (so failures shrink to the smallest size), then every boundary size
        in every variant. Returns the number of examples run."""
        __tracebackhide__ = True
        from hypothesis import given, strategies as st

        if not self.devices:
            import pytest

            pytest.skip(f"no device available among {self.unavailable}")
        variants = [Variant(d, dev, lay) for d in self.dtypes for dev in self.devices for lay in self.layouts]
        settings = hypothesis_settings(self.profile, self.case.spec.options.get("examples"))
        if self.case.spec.options.get("examples") is None:
            settings = type(settings)(settings, max_examples=self.examples_for(settings.max_examples))
        strategy = self.strategy()
        if strategy is not None:
            @settings
            @given(size=strategy, variant=st.sampled_from(variants))
            def sweep(size: Any, variant: Variant) -> None:
                self.check(size, variant)

            sweep()
        sizes = self.fixed_sizes()
        for size in sizes:
            for variant in variants:
                self.check(size, variant, repeat=True)
        self.every_size(variants[0])
        if self.skipped == self.examples:
            raise AssertionError(
                f"{self.case.spec.name}: the reference raised on every input built from the example; "
                "check the marker's example, dtypes and devices"
            )
        if self.case.kind == DISPATCH:
            self.opcheck(sizes[len(sizes) // 2] if sizes else None, variants[0])
        return self.examples

    def every_size(self, variant: Variant) -> None:
        """Every size of a narrow range in one variant, when checks are cheap: a candidate
        wrong at one interior size is then found for certain, not by luck."""
        __tracebackhide__ = True
        if self.op.dispatch is None:
            return
        low, high = window(self.case)
        count = high - low + 1
        if count > EVERY_SIZE_MAX:
            return
        if count <= EVERY_SIZE_ALWAYS:
            for size in range(low, high + 1):
                self.check(size, variant, grad=False)
            return
        took = []
        for _ in range(3):  # the least of three: the first call may pay one-time costs
            t0 = time.perf_counter()
            self.check((low + high) // 2, variant, grad=False)
            took.append(time.perf_counter() - t0)
        if count * min(took) > EVERY_SIZE_SECONDS:
            return
        for size in range(low, high + 1):
            self.check(size, variant, grad=False)

    def opcheck(self, size: Any, variant: Variant) -> None:
        """``torch.library.opcheck`` of a registered custom op at one size of the range: its
        schema (undeclared input mutation, aliasing), fake-tensor kernel and autograd
        registration. The compile-based test is left to the compiled checks."""
        __tracebackhide__ = True
        custom = getattr(self.op, "_custom_op", None)
        opcheck = getattr(torch.library, "opcheck", None)
        if custom is None or opcheck is None:
            return
        args, kwargs = self.inputs.make(size, variant)
        try:
            opcheck(custom, args, kwargs,
                    test_utils=("test_schema", "test_autograd_registration", "test_faketensor"))
        except Exception as exc:
            where = self._where(size, variant, args, kwargs)
            raise AssertionError(f"{where}: torch.library.opcheck failed: {first_line(exc)}") from exc


def size_at(dispatch: Any, size: Any) -> str:
    """``x[1]=512``, ``x[0]=8, x[1]=512`` for a grid, or ``the example size``."""
    if dispatch is None or size is None:
        return "the example size"
    return dispatch.at(size) if hasattr(dispatch, "at") else f"{dispatch}={size}"


def _cast_like(expected: Any, got: Any) -> Any:
    if isinstance(expected, torch.Tensor) and isinstance(got, torch.Tensor):
        return expected.to(got.dtype)
    if isinstance(expected, (tuple, list)) and isinstance(got, (tuple, list)):
        return type(expected)(_cast_like(e, g) for e, g in zip(expected, got))
    return expected


# -- benchmark -------------------------------------------------------------------------------

def geomean(values: Sequence[float]) -> float:
    finite = [v for v in values if math.isfinite(v) and v > 0]
    if len(finite) != len(values) or not finite:
        return math.inf
    return math.exp(sum(math.log(v) for v in finite) / len(finite))


def run_benchmark(case: RangeCase, *, baseline: dict[str, Any] | None, threshold: float | None) -> dict[str, Any]:
    """Time every candidate of the range and the dispatched op at the range's sample sizes.

    Returns the report record. ``record["problems"]`` lists what failed: a stale table (the
    table's winner slower than the fastest beyond noise and the tolerance) and regressions
    against the baseline.
    """
    spec, rng = case.spec, case.range
    op = spec.op
    args, kwargs = example_call(spec)
    table = ensure_tuned(spec, args, kwargs)
    result = next((r for r in table.results if r.range == rng), None)
    winner = result.winner if result is not None else table.partition.lookup(rng.lo).owner or table.reference
    disqualified = dict(result.disqualified) if result is not None else {}
    inputs = Inputs(spec, args, kwargs)
    variant = example_variant(args, kwargs)
    device = variant.device
    if is_cell(rng):
        from .examples import bench_points

        sizes: Sequence[Any] = bench_points(spec, rng)
    else:
        sizes = (sample_sizes(rng, count=op.settings.base_samples, upper_bound=upper_size(spec, rng))
                 if op.dispatch is not None else (None,))
    cands = [c for c in op.plan.candidates.get(rng, op.plan.all_candidates) if c.name not in disqualified]
    if op._ref.name not in {c.name for c in cands}:
        cands.insert(0, op._ref)
    subject = spec.target if callable(spec.target) else op
    benchmarker = op.benchmarker or default_benchmarker(torch.device(device).type)
    subjects = [(c.name, c.call) for c in cands] + [(DISPATCH, subject)]
    per_size, noises = time_all(subjects, sizes, lambda size: inputs.make(size, variant), benchmarker, device,
                                points=is_cell(rng))
    label = f"{spec.name}: range {op.dispatch} in {rng}"
    record = summarise(case, per_size, noises, winner=winner, label=label, baseline=baseline, threshold=threshold,
                       fix="re-tune with op.tune(..., force=True) or clear the cache")
    record.update(per_size={n: [list(p) for p in pts] for n, pts in per_size.items()},
                  sizes=[s for s in sizes if s is not None], device=device)
    return record


def time_all(subjects: Sequence[tuple[str, Callable[..., Any]]], sizes: Sequence[Any],
             make: Callable[[Any], tuple[tuple[Any, ...], dict[str, Any]]], benchmarker: Any,
             device: str, points: bool = False) -> tuple[dict[str, list[tuple[Any, float]]], list[float]]:
    """Median ms of every ``(name, fn)`` at every size (inputs from ``make(size)``), timed
    together per size under the device's exclusive lock; plus each job's relative spread."""
    per_size: dict[str, list[tuple[Any, float]]] = {name: [] for name, _ in subjects}
    noises: list[float] = []
    with device_lock(device, exclusive=True):
        for size in sizes:
            a, k = make(size)
            # a MultiKernel's shape is weighted by its first size, as its own benchmarks do; a
            # grid cell's point is the size, as in tuning
            weight = size if isinstance(size, int) or points else (int(size[0]) if size else 0)
            jobs = [Job(name, weight, _bind(fn, a, k)) for name, fn in subjects]
            for m in measure_jobs(benchmarker, jobs):
                per_size[m.name].append((size if size is not None else 0, m.ms if m.status in (OK, RACED) else math.inf))
                if m.status == OK:
                    noises.append(m.spread)
    return per_size, noises


def summarise(case: RangeCase, per_size: dict[str, list[tuple[Any, float]]], noises: Sequence[float], *,
              winner: str, label: str, baseline: dict[str, Any] | None, threshold: float | None,
              fix: str, stale: str = "stale table", owner: str = "the table's winner") -> dict[str, Any]:
    """The report record of one benchmark case from its timings: ``per_size`` maps each
    candidate (and ``"dispatch"``) to ``(size, ms)`` pairs at the same sizes. Flags a stale
    winner (slower than the fastest beyond the noise and ``stale_tolerance``) and regressions
    against the baseline."""
    spec = case.spec
    times = {name: geomean([t for _, t in pts]) for name, pts in per_size.items()}
    cand_times = {n: t for n, t in times.items() if n != DISPATCH}
    ranked = sorted(cand_times.items(), key=lambda p: p[1])
    fastest, fastest_ms = ranked[0]
    noise = statistics.median(noises) if noises else 0.0
    tolerance = float(spec.options.get("stale_tolerance", 0.05))
    count = len(per_size[DISPATCH])
    best_per_size = [min(per_size[n][i][1] for n in cand_times) for i in range(count)]
    dispatch_ms = times[DISPATCH]
    best_ms = geomean(best_per_size)
    runner_up = next(((n, t) for n, t in ranked if n != winner), (None, math.inf))
    winner_ms = cand_times.get(winner, math.inf)
    record: dict[str, Any] = {
        "winner": winner,
        "runner_up": runner_up[0],
        "margin": (runner_up[1] / winner_ms - 1) if math.isfinite(runner_up[1]) and winner_ms > 0 else None,
        "dispatch_ms": dispatch_ms,
        "best_ms": best_ms,
        "regret": dispatch_ms / best_ms - 1 if best_ms > 0 and math.isfinite(best_ms) else None,
        "fastest": fastest,
        "noise": noise,
        "times_ms": cand_times,
        "problems": [],
        "statuses": [],
    }
    if fastest != winner and winner_ms / fastest_ms - 1 > max(tolerance, noise):
        record["statuses"].append("stale")
        record["problems"].append(
            f"{label}: {stale}: {owner} {winner!r} takes {_ms(winner_ms)} but {fastest!r} "
            f"takes {_ms(fastest_ms)} ({winner_ms / fastest_ms - 1:+.1%}, beyond the noise {noise:.1%} and "
            f"the tolerance {tolerance:.0%}); {fix}"
        )
    old = ((baseline or {}).get("ops", {}).get(spec.name, {}) or {}).get(case.key[1])
    if old and threshold is not None:
        compared = [(f"candidate {winner!r}", old.get("times_ms", {}).get(winner), winner_ms),
                    (f"the dispatched op (winner {winner!r})", old.get("dispatch_ms"), dispatch_ms)]
        for what, before, now in compared:
            if before and math.isfinite(now) and now / before - 1 > threshold:
                record["statuses"].append("regression")
                record["problems"].append(
                    f"{label}: regression: {what} went from {_ms(before)} to {_ms(now)} "
                    f"({now / before - 1:+.1%}, threshold {threshold:.0%})"
                )
    if not record["statuses"]:
        record["statuses"].append("ok")
    return record


def _bind(fn: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any]) -> Callable[[], Any]:
    return lambda: fn(*args, **kwargs)


# -- compiled and CUDA graphs -----------------------------------------------------------------

@dataclass
class EdgeCheck:
    """What the compiled and CUDA-graph cases share: the op tuned on its example, the inputs
    in the example's variant, the range's candidates (not the reference) and the dispatched
    op as subjects, and the sizes: lo, lo+1 and the top (a cell: every combination of them)."""

    spec: OpSpec
    rng: Any
    inputs: Inputs
    variant: Variant
    subjects: list[tuple[str, Callable[..., Any]]]
    sizes: list[Any]

    @classmethod
    def of(cls, case: RangeCase) -> "EdgeCheck":
        spec, rng = case.spec, case.range
        op = spec.op
        args, kwargs = example_call(spec)
        ensure_tuned(spec, args, kwargs)
        variant = example_variant(args, kwargs)
        subjects = [(f"candidate {c.name!r}", c.call) for c in op.plan.candidates.get(rng, op.plan.all_candidates)
                    if c.name != op._ref.name]
        subjects.append(("the dispatched op", spec.target if callable(spec.target) else op))
        if is_cell(rng):  # the corners of lo, lo+1 and the top on every dimension
            from .examples import corner_points

            sizes: list[Any] = corner_points(spec, rng, across=False)
        else:
            top = upper_size(spec, rng)
            sizes = sorted({rng.lo, min(rng.lo + 1, top), top} if op.dispatch is not None else {None})
        return cls(spec, rng, Inputs(spec, args, kwargs), variant, subjects, sizes)

    def where(self, size: Any) -> str:
        op = self.spec.op
        return f"{self.spec.name}: range {op.dispatch} in {self.rng}, {size_at(op.dispatch, size)} ({self.variant.describe()})"

    def differs(self, got: Any, expected: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> str | None:
        ref = self.spec.op._ref.call
        return check_output(got, expected, truth_of(ref, args, kwargs), rtol=self.spec.options.get("rtol"),
                            atol=self.spec.options.get("atol"))


def run_compiled(case: RangeCase) -> int:
    """Every candidate of the range and the op itself under ``torch.compile(dynamic=True)``,
    at the range's boundary sizes in the example's variant, against the eager reference: a
    candidate that is right eagerly but wrong (or failing) when compiled is named."""
    __tracebackhide__ = True
    edge = EdgeCheck.of(case)
    op = edge.spec.op
    checked = 0
    for what, fn in edge.subjects:
        torch.compiler.reset()
        compiled = torch.compile(fn, dynamic=True)
        for size in edge.sizes:
            a, k = edge.inputs.make(size, edge.variant)
            expected = op._ref.call(*a, **k)
            try:
                got = compiled(*a, **k)
            except Exception as exc:
                raise AssertionError(f"{edge.where(size)}: {what} raised under torch.compile: "
                                     f"{type(exc).__name__}: {first_line(exc)}") from exc
            found = edge.differs(got, expected, a, k)
            if found is not None:
                raise AssertionError(f"{edge.where(size)}: {what} differs from the reference under torch.compile: {found}")
            checked += 1
    return checked


def _failure(exc: BaseException) -> str:
    """``Type: first line``, led by the error that started it when one error raised another
    (a failed capture's own end raises too)."""
    chain = []
    while exc is not None and len(chain) < 3:
        chain.append(f"{type(exc).__name__}: {first_line(exc)}")
        exc = exc.__context__
    return "; ".join(reversed(chain))


GRAPH_WARMUP = 2  # eager calls on a side stream before capture: lazy init, library handles, autotuning


def capture(fn: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any]) -> tuple[Any, Any]:
    return capture_graph(lambda: fn(*args, **kwargs), warmup_calls=GRAPH_WARMUP)


def replayed(graph: Any, static: tuple[tuple[Any, ...], dict[str, Any]],
             fresh: tuple[tuple[Any, ...], dict[str, Any]]) -> None:
    """Copy ``fresh``'s values into the captured call's input tensors, then replay."""
    for s, f in zip(_tensors(*static), _tensors(*fresh)):
        s.copy_(f)
    graph.replay()
    torch.cuda.synchronize()


def run_graphed(case: RangeCase) -> int:
    """Every candidate of the range and the op itself captured in a CUDA graph at the range's
    boundary sizes, then replayed on new input values and compared with the eager reference
    on those values. Names a candidate that cannot be captured (a host sync, a CPU copy) or
    whose replay is wrong (a value read on the host at capture time, a stale workspace).
    Skipped when the reference itself cannot be captured: the op is not graph-safe by design."""
    __tracebackhide__ = True
    import pytest

    edge = EdgeCheck.of(case)
    if torch.device(edge.variant.device).type != "cuda" or not torch.cuda.is_available():
        pytest.skip(f"CUDA-graph checks need the example on a CUDA device (it is on {edge.variant.device})")
    ref = edge.spec.op._ref
    checked = 0
    for size in edge.sizes:
        fresh = edge.inputs.make(size, edge.variant, salt="|replay")
        a, k = _map(*fresh, torch.clone)
        expected = ref.call(*a, **k)
        static = edge.inputs.make(size, edge.variant)
        try:
            capture(ref.call, *static)
        except Exception as exc:
            pytest.skip(f"{edge.where(size)}: the reference {ref.name!r} cannot be captured in a CUDA graph "
                        f"({_failure(exc)}); nothing to hold the candidates to")
        for what, fn in edge.subjects:
            static = edge.inputs.make(size, edge.variant)
            try:
                graph, out = capture(fn, *static)
            except Exception as exc:
                raise AssertionError(
                    f"{edge.where(size)}: {what} cannot be captured in a CUDA graph where the reference "
                    f"{ref.name!r} can: {_failure(exc)}") from exc
            replayed(graph, static, fresh)
            found = edge.differs(out, expected, *fresh)
            if found is not None:
                raise AssertionError(
                    f"{edge.where(size)}: {what} is wrong when its CUDA graph is replayed on new inputs "
                    f"(captured at the same size on other values): {found}")
            checked += 1
    return checked

