"""Dtype-aware comparison of a candidate's output with the reference's.

``|actual - expected| <= atol * rms(expected) + rtol * |expected|`` elementwise: the
absolute term is scaled by the reference's RMS so the same tolerance works for outputs of
any magnitude (a split-K sum over 2**18 terms and a unit-scale norm alike). Shapes and
dtypes must match exactly; NaN passes only where the reference is NaN too.

Half-precision and float8 outputs (2 bytes or fewer per element) may hold a few rounding
outliers: two correct kernels that round an intermediate differently (eager rounds
``x * 2 + y.sin()`` to bfloat16 before a softmax, a fused kernel does not) disagree beyond the
tolerance on a handful of elements in millions. Up to one element in 10,000 (at least one) may
exceed the bound, by at most 4 times; a real bug (a wrong row, a wrong boundary, a bad
element far off) still fails.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

OUTLIER_FRACTION = 1e-4  # low-precision outputs: share of elements allowed past the bound
OUTLIER_FACTOR = 4.0  # ... by at most this factor

# (rtol, atol relative to the reference's RMS), by dtype name
_TOLERANCES: dict[str, tuple[float, float]] = {
    "float64": (1e-7, 1e-7),
    "complex128": (1e-7, 1e-7),
    "float32": (1e-4, 1e-4),
    "complex64": (1e-4, 1e-4),
    "float16": (1e-2, 2e-3),
    "bfloat16": (3e-2, 1e-2),
    "float8_e4m3fn": (0.125, 0.0625),
    "float8_e5m2": (0.25, 0.125),
}


def low_precision(dtype: Any) -> bool:
    """Floating dtypes of 2 bytes or fewer (float16, bfloat16, float8): their results round."""
    return bool(getattr(dtype, "is_floating_point", False)) and getattr(dtype, "itemsize", 4) <= 2


def default_tolerance(dtype: Any) -> tuple[float, float]:
    """``(rtol, atol)`` for a dtype; ``(0, 0)`` (exact) for integer and bool dtypes."""
    return _TOLERANCES.get(str(dtype).replace("torch.", ""), (0.0, 0.0))


@dataclass(frozen=True)
class Mismatch:
    """Why a candidate's output differs from the reference's."""

    where: str
    reason: str
    max_abs: float | None = None
    max_rel: float | None = None
    index: tuple[int, ...] | None = None
    actual: Any = None
    expected: Any = None

    def __str__(self) -> str:
        text = f"{self.where}: {self.reason}"
        if self.max_abs is not None:
            text += f" (max abs err {self.max_abs:.3g}, max rel err {self.max_rel:.3g}"
            if self.index is not None:
                text += f", first mismatch at index {self.index}: {self.actual!r} vs {self.expected!r}"
            text += ")"
        return text


def compare(
    actual: Any,
    expected: Any,
    *,
    rtol: float | None = None,
    atol: float | None = None,
    where: str = "output",
) -> Mismatch | None:
    """Return ``None`` when ``actual`` matches ``expected``, else the first :class:`Mismatch`."""
    import torch

    if isinstance(expected, torch.Tensor):
        if not isinstance(actual, torch.Tensor):
            return Mismatch(where, f"expected a Tensor, got {type(actual).__name__}")
        return _compare_tensors(actual, expected, rtol, atol, where)
    if isinstance(expected, (tuple, list)):
        if not isinstance(actual, (tuple, list)) or len(actual) != len(expected):
            return Mismatch(
                where,
                f"expected a sequence of {len(expected)}, got {type(actual).__name__}"
                + (f" of {len(actual)}" if isinstance(actual, (tuple, list)) else ""),
            )
        for i, (a, e) in enumerate(zip(actual, expected)):
            found = compare(a, e, rtol=rtol, atol=atol, where=f"{where}[{i}]")
            if found is not None:
                return found
        return None
    if isinstance(expected, float) and isinstance(actual, (int, float)):
        r, a = (rtol, atol) if rtol is not None and atol is not None else (1e-6, 1e-9)
        if abs(actual - expected) <= a + r * abs(expected) or actual == expected:
            return None
        return Mismatch(where, f"expected {expected!r}, got {actual!r}")
    if actual != expected:
        return Mismatch(where, f"expected {expected!r}, got {actual!r}")
    return None


def _compare_tensors(actual: Any, expected: Any, rtol: float | None, atol: float | None, where: str) -> Mismatch | None:
    import torch

    if actual.shape != expected.shape:
        return Mismatch(where, f"shape {tuple(actual.shape)} != reference {tuple(expected.shape)}")
    if actual.dtype != expected.dtype:
        return Mismatch(where, f"dtype {actual.dtype} != reference {expected.dtype}")
    if actual.device != expected.device:
        return Mismatch(where, f"device {actual.device} != reference {expected.device}")
    if expected.numel() == 0:
        return None
    d_rtol, d_atol = default_tolerance(expected.dtype)
    rtol = d_rtol if rtol is None else rtol
    atol = d_atol if atol is None else atol
    if not (expected.is_floating_point() or expected.is_complex()):
        bad = actual != expected
        if not bool(bad.any()):
            return None
        return _describe(actual, expected, bad, where, "values differ")
    a = actual.detach().to(torch.complex128 if expected.is_complex() else torch.float64)
    e = expected.detach().to(a.dtype)
    nan_a, nan_e = torch.isnan(a), torch.isnan(e)
    if bool((nan_a & ~nan_e).any()):
        return _describe(actual, expected, nan_a & ~nan_e, where, "NaN where the reference is finite")
    finite = torch.isfinite(e)
    scale = float(e[finite].abs().pow(2).mean().sqrt()) if bool(finite.any()) else 1.0
    scale = scale if scale > 0 else 1.0
    diff = (a - e).abs()
    diff = torch.where(nan_e & nan_a, torch.zeros_like(diff), diff)
    inf_ok = ~finite & (a == e)
    bound = atol * scale + rtol * e.abs()
    bad = (diff > bound) & ~inf_ok
    bad = bad | (nan_e & ~nan_a)
    if not bool(bad.any()):
        return None
    if expected.element_size() <= 2 and not expected.is_complex():
        gross = bad & ~(diff <= OUTLIER_FACTOR * bound)
        if not bool(gross.any()) and int(bad.sum()) <= max(1, int(bad.numel() * OUTLIER_FRACTION)):
            return None  # a few rounding outliers of a low-precision output
    return _describe(actual, expected, bad, where, f"values differ beyond rtol={rtol:g}, atol={atol:g}*rms")


def _describe(actual: Any, expected: Any, bad: Any, where: str, reason: str) -> Mismatch:
    import torch

    a = actual.detach().to(torch.float64) if not actual.is_complex() else actual.detach()
    e = expected.detach().to(a.dtype)
    diff = (a - e).abs()
    diff = torch.nan_to_num(diff, nan=float("inf"))
    rel = diff / e.abs().clamp_min(1e-30)
    first = tuple(int(i) for i in bad.nonzero()[0].tolist()) if bad.dim() else ()
    count = int(bad.sum())
    return Mismatch(
        where,
        f"{reason}; {count} of {bad.numel()} elements",
        max_abs=float(diff.max()),
        max_rel=float(rel.max()),
        index=first,
        actual=actual[first].item() if bad.dim() else actual.item(),
        expected=expected[first].item() if bad.dim() else expected.item(),
    )


TRUTH_ULPS = 2.0  # units in the last place a low-precision result may add to the reference's error


def compare_with_truth(
    actual: Any,
    expected: Any,
    truth: Any,
    *,
    rtol: float | None = None,
    atol: float | None = None,
    factor: float = 2.0,
    where: str = "output",
) -> Mismatch | None:
    """Judge a low-precision result against a higher-precision ``truth`` of the reference:
    it passes when each element's error is at most ``factor`` times the low-precision
    reference's (``expected``) own largest error plus the dtype's absolute floor
    (``atol * rms(truth)``) plus ``TRUTH_ULPS`` units in the last place of the true value.
    Other outputs use :func:`compare` against ``expected``."""
    import torch

    if isinstance(expected, (tuple, list)):
        if not isinstance(actual, (tuple, list)) or not isinstance(truth, (tuple, list)) or \
                len(actual) != len(expected) or len(truth) != len(expected):
            return compare(actual, expected, rtol=rtol, atol=atol, where=where)
        for i, (a, e, t) in enumerate(zip(actual, expected, truth)):
            found = compare_with_truth(a, e, t, rtol=rtol, atol=atol, factor=factor, where=f"{where}[{i}]")
            if found is not None:
                return found
        return None
    plain = compare(actual, expected, rtol=rtol, atol=atol, where=where)
    if (plain is None or not isinstance(expected, torch.Tensor) or not isinstance(actual, torch.Tensor)
            or not isinstance(truth, torch.Tensor) or not low_precision(expected.dtype)
            or actual.shape != expected.shape or actual.dtype != expected.dtype
            or truth.shape != expected.shape):
        return plain
    a, e, t = (v.detach().to(torch.float64) for v in (actual, expected, truth.to(actual.device)))
    finite = torch.isfinite(t)
    if bool((torch.isnan(a) & finite).any()):
        return _describe(actual, expected, torch.isnan(a) & finite, where, "NaN where the reference is finite")
    if bool((a[~finite] != t[~finite]).any()):
        return _describe(actual, expected, ~finite & (a != t), where, "non-finite values differ from the reference")
    if not bool(finite.any()):
        return None
    floor = (atol if atol is not None else default_tolerance(expected.dtype)[1]) * float(t[finite].pow(2).mean().sqrt())
    err_ref = float((e - t).abs()[finite].max())
    # per element: the reference's worst error times ``factor``, the absolute floor, and
    # ``TRUTH_ULPS`` units in the last place of the true value (one more rounding than the
    # reference's, say an intermediate stored in the low precision, is not a fault)
    ulp = torch.finfo(expected.dtype).eps * t.abs()
    bound = factor * err_ref + floor + TRUTH_ULPS * ulp
    bad = finite & ((a - t).abs() > bound)
    if not bool(bad.any()):
        return None
    err_ours = float((a - t).abs()[bad].max())
    text = (f"error against a float32 run of the reference {err_ours:.3g} exceeds {factor:g} x the "
            f"reference's own error {err_ref:.3g} + floor {floor:.3g} + {TRUTH_ULPS:g} ulp of the value")
    return _describe(actual, truth.to(actual.device).to(actual.dtype), bad, where, text)
