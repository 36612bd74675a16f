"""Variants and what the dispatcher keys on: hints, sizes, shape keys, the log2 distance, and
the timing race that picks the fastest of several callables."""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping, Sequence

import torch

from ..decide.candidates import short_name
from ..errors import ConfigError, ConfigTypeError
from ..measure.timing import OK, RACED, Benchmarker, Job, measure_jobs
from ..measure.verify import reference_run, run_candidate

FORMAT = "rangedispatch.multikernel"


VERSION = 1


POLICIES = ("benchmark", "nearest")


IN_GRAPH = ("auto", "opaque", "inline")


@dataclass(frozen=True)
class Variant:
    """One implementation and the sizes it was tuned for (``None``: no hint; only the
    ``benchmark`` policy can choose it)."""

    fn: Callable[..., Any]
    hint: tuple[int, ...] | None
    name: str = ""
    meta: Mapping[str, Any] = field(default_factory=dict)  # e.g. the launch config chosen

    def __post_init__(self) -> None:
        if not callable(self.fn):
            raise ConfigTypeError(f"Variant fn must be callable, got {type(self.fn).__name__}")
        if self.hint is None:
            if not self.name:
                object.__setattr__(self, "name", short_name(self.fn))
            return
        hint = tuple(self.hint) if isinstance(self.hint, (list, tuple)) else (self.hint,)
        if not hint or not all(isinstance(h, int) and not isinstance(h, bool) and h >= 0 for h in hint):
            raise ConfigError(
                f"Variant hint must be a non-empty sequence of non-negative ints (e.g. [1024, 512]), got {self.hint!r}"
            )
        object.__setattr__(self, "hint", hint)
        if not self.name:
            object.__setattr__(self, "name", f"{short_name(self.fn)}@{'x'.join(map(str, hint))}")


class _Counter(list):
    """A hot-path call count (``[n]``) and the variant it counts for."""

    def __init__(self, name: str) -> None:
        super().__init__([0])
        self.name = name


def _default_sizes(*args: Any, **kwargs: Any) -> tuple[int, ...]:
    dims: list[int] = []
    for value in [*args, *kwargs.values()]:
        if isinstance(value, torch.Tensor):
            dims.extend(value.shape)  # ints; SymInts while tracing
    return tuple(dims)


def _first_tensor_sizes(args: Sequence[Any], kwargs: Mapping[str, Any], rank: int) -> tuple[int, ...] | None:
    """The first tensor's shape when it has as many dims as the hints (the default sizes of
    every tensor's dims do not fit: ``add(x, y)`` with 1-d hints)."""
    first = next((v for v in [*args, *kwargs.values()] if isinstance(v, torch.Tensor)), None)
    return tuple(first.shape) if first is not None and first.dim() == rank else None


def _shape_key(args: Sequence[Any], kwargs: Mapping[str, Any]) -> tuple[Any, ...]:
    key: list[Any] = []
    for value in [*args, *kwargs.values()]:
        if isinstance(value, torch.Tensor):
            key.append((tuple(value.shape), value.dtype, value.device.type))
    return tuple(key)


def _key_to_json(key: tuple[Any, ...]) -> list[Any]:
    return [[list(shape), str(dtype).replace("torch.", ""), device] for shape, dtype, device in key]


def _key_from_json(items: Sequence[Any]) -> tuple[Any, ...]:
    return tuple((tuple(shape), getattr(torch, dtype), device) for shape, dtype, device in items)


def log2_distance(a: Sequence[int], b: Sequence[int], mask: Sequence[bool] | None = None) -> float:
    """Sum over dims of ``|log2 a - log2 b|`` (sizes below 1 count as 1)."""
    return sum(
        abs(math.log2(max(x, 1)) - math.log2(max(y, 1)))
        for i, (x, y) in enumerate(zip(a, b))
        if mask is None or mask[i]
    )


def _device_type(values: Sequence[Any]) -> str:
    return next((v.device.type for v in values if isinstance(v, torch.Tensor)), "cpu")


def _fastest(
    items: Sequence[tuple[str, str, Callable[[], Any]]],
    *,
    kind: str,
    prefix: str,
    where: str,
    benchmarker: Benchmarker,
    size: int,
    inputs: tuple[Sequence[Any], Mapping[str, Any]] = ((), {}),
    check: bool = True,
    rtol: float | None = None,
    atol: float | None = None,
    stacklevel: int = 3,
) -> int | None:
    """Index of the fastest of ``(job name, label, call)`` items, or ``None`` if all fail.

    Each runs once first: one that raises, writes to one of ``inputs`` that the first one
    does not write to, or (with ``check``) disagrees with the first that ran, is dropped with a
    warning; the rest are timed together by the measurement core."""
    args, kwargs = tuple(inputs[0]), dict(inputs[1])
    sync = _sync_for([*args, *kwargs.values()])
    expected, first, jobs, kept, owned = None, None, [], [], []
    for i, (name, label, call) in enumerate(items):
        run = lambda *_a, _call=call, **_k: _call()  # noqa: E731 - the inputs are bound in the call
        if first is None:
            try:
                expected, owned = reference_run(run, args, kwargs, sync=sync)
            except Exception as exc:
                warnings.warn(f"{prefix}{kind} {label} raised {type(exc).__name__}: {exc} at {where}; "
                              "it is not used there", RuntimeWarning, stacklevel=stacklevel)
                continue
            first = label
        else:
            _, reason = run_candidate(run, args, kwargs, expected, owned=owned, rtol=rtol, atol=atol,
                                      check=check, sync=sync)
            if reason is not None:
                if reason.startswith("wrong output"):
                    reason = f"differs from {first} at {where} {reason[len('wrong output '):]}"
                else:
                    reason = f"{reason} at {where}"
                warnings.warn(f"{prefix}{kind} {label} {reason}; it is not used there",
                              RuntimeWarning, stacklevel=stacklevel)
                continue
        jobs.append(Job(name, size, call))
        kept.append(i)
    if not jobs:
        return None
    measured = measure_jobs(benchmarker, jobs, warm=True)
    times = [m.ms if m.status in (OK, RACED) else math.inf for m in measured]
    if not any(math.isfinite(t) for t in times):
        return None
    return kept[min(range(len(jobs)), key=times.__getitem__)]


def _sync_for(values: Sequence[Any]) -> Callable[[], None] | None:
    if _device_type(values) != "cuda":
        return None
    return torch.cuda.synchronize
