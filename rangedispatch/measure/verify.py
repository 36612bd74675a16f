"""Is a candidate a correct stand-in for the reference? One check for tuning, MultiKernel and
the plugin.

A candidate must run, return what the reference returns (:func:`rangedispatch.measure.compare`), and
leave the caller's inputs alone. For low-precision floating outputs (float16, bfloat16,
float8) the reference is not the truth: both it and the candidate round. When the plain
comparison fails there, both are compared with a float32 run of the reference (low-precision
inputs upcast) and the candidate passes when each element's error is within
``PRECISION_FACTOR`` times the reference's own largest error plus the dtype's absolute
floor (the rule FlashAttention's tests use) plus two units in the last place of the true
value (one more rounding than the reference's). A kernel more accurate than the reference
therefore always passes, while a wrong row, a wrong boundary or a NaN still fails.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Sequence

from .compare import Mismatch, compare, compare_with_truth, low_precision
from ..errors import first_line

PRECISION_FACTOR = 2.0


@dataclass
class InputSnapshot:
    """Copies of the tensors of one call, to tell whether a callee wrote to them."""

    entries: list[tuple[str, Any, Any]]  # (name, the caller's tensor, a copy)

    @classmethod
    def take(cls, args: Sequence[Any], kwargs: dict[str, Any], names: Sequence[str] = ()) -> InputSnapshot:
        import torch

        entries = []
        items = [(names[i] if i < len(names) else f"arg{i}", a) for i, a in enumerate(args)] + list(kwargs.items())
        for name, value in items:
            if isinstance(value, torch.Tensor) and not value.is_meta:
                entries.append((name, value, value.detach().clone()))
        return cls(entries)

    def changed(self, ignore: Sequence[str] = ()) -> list[str]:
        """Names of the tensors whose values changed (NaN equal to NaN)."""
        import torch

        out = []
        for name, now, before in self.entries:
            if name in ignore:
                continue
            if now.shape != before.shape or now.dtype != before.dtype:
                out.append(name)
                continue
            if now.is_floating_point() or now.is_complex():
                same = torch.equal(now.nan_to_num(0.0), before.nan_to_num(0.0)) and torch.equal(
                    now.isnan(), before.isnan())
            else:
                same = torch.equal(now, before)
            if not same:
                out.append(name)
        return out

    def restore(self) -> None:
        import torch

        with torch.no_grad():
            for _, now, before in self.entries:
                if now.shape == before.shape:
                    now.copy_(before)


def aliased_inputs(out: Any, args: Sequence[Any], kwargs: dict[str, Any], names: Sequence[str] = ()) -> list[str]:
    """Names of the input tensors whose memory an output tensor shares."""
    import torch

    outs = [out] if isinstance(out, torch.Tensor) else [o for o in (out if isinstance(out, (tuple, list)) else ())
                                                          if isinstance(o, torch.Tensor)]
    ptrs = {o.untyped_storage().data_ptr() for o in outs if o.numel() and not o.is_meta}
    found = []
    items = [(names[i] if i < len(names) else f"arg{i}", a) for i, a in enumerate(args)] + list(kwargs.items())
    for name, value in items:
        if isinstance(value, torch.Tensor) and value.numel() and not value.is_meta \
                and value.untyped_storage().data_ptr() in ptrs:
            found.append(name)
    return found


def upcast(args: Sequence[Any], kwargs: dict[str, Any]) -> tuple[tuple[Any, ...], dict[str, Any]]:
    """The call with every low-precision floating tensor in float32."""
    import torch

    def up(v: Any) -> Any:
        return v.float() if isinstance(v, torch.Tensor) and low_precision(v.dtype) else v

    return tuple(up(a) for a in args), {k: up(v) for k, v in kwargs.items()}


def has_low_precision(value: Any) -> bool:
    import torch

    if isinstance(value, torch.Tensor):
        return low_precision(value.dtype)
    if isinstance(value, (tuple, list)):
        return any(has_low_precision(v) for v in value)
    return False


def check_output(
    actual: Any,
    expected: Any,
    truth: Callable[[], Any] | None,
    *,
    rtol: float | None = None,
    atol: float | None = None,
    factor: float = PRECISION_FACTOR,
) -> Mismatch | None:
    """``None`` if ``actual`` is an acceptable result, else why not.

    ``truth()`` computes a higher-precision result of the reference; it is called only when
    the plain comparison fails on a low-precision output (and its failure means: no truth)."""
    found = compare(actual, expected, rtol=rtol, atol=atol)
    if found is None or truth is None or not has_low_precision(expected):
        return found
    try:
        exact = truth()
    except Exception:
        return found
    return compare_with_truth(actual, expected, exact, rtol=rtol, atol=atol, factor=factor)


def input_fault(snapshot: InputSnapshot, out: Any, args: Sequence[Any], kwargs: dict[str, Any],
                names: Sequence[str], owned: Sequence[str], ref_aliases: Sequence[str]) -> str | None:
    """What a call did to its inputs that the reference does not do, or ``None``: wrote to one
    (it is restored) or returned a tensor sharing one's memory."""
    written = snapshot.changed(ignore=owned)
    if written:
        snapshot.restore()
        listed = ", ".join(repr(n) for n in written)
        return (f"writes to its input {listed} in place (the reference does not); the caller's tensor is "
                "changed: return a new tensor or clone the input first")
    shared = [n for n in aliased_inputs(out, args, kwargs, names) if n not in ref_aliases]
    if shared:
        listed = ", ".join(repr(n) for n in shared)
        return (f"returns a tensor that aliases its input {listed} (the reference returns new memory); "
                "a caller writing to one would change the other: return a copy")
    return None


def run_candidate(
    call: Callable[..., Any],
    args: Sequence[Any],
    kwargs: dict[str, Any],
    expected: Any,
    *,
    truth: Callable[[], Any] | None = None,
    names: Sequence[str] = (),
    owned: Sequence[str] = (),
    rtol: float | None = None,
    atol: float | None = None,
    check: bool = True,
    sync: Callable[[], None] | None = None,
    ref_aliases: Sequence[str] = (),
) -> tuple[Any, str | None]:
    """Run ``call`` once and judge it: ``(output, None)`` or ``(None, why it is rejected)``.

    Inputs it writes to (other than ``owned``, those the reference writes too) are restored
    and reported, and so are outputs that alias an input the reference's outputs do not
    (``ref_aliases``); the output is checked with :func:`check_output` when ``check``."""
    snapshot = InputSnapshot.take(args, dict(kwargs), names)
    try:
        out = call(*args, **kwargs)
        if sync is not None:
            sync()
    except Exception as exc:
        snapshot.restore()
        return None, f"raised {type(exc).__name__}: {first_line(exc)}"
    fault = input_fault(snapshot, out, args, kwargs, names, owned, ref_aliases)
    if fault is not None:
        return None, fault
    if not check:
        return out, None
    found = check_output(out, expected, truth, rtol=rtol, atol=atol)
    return (out, None) if found is None else (None, f"wrong output ({found})")


def reference_run(
    call: Callable[..., Any], args: Sequence[Any], kwargs: dict[str, Any], names: Sequence[str] = (),
    sync: Callable[[], None] | None = None,
) -> tuple[Any, list[str]]:
    """The reference's output and the inputs it writes to (restored afterwards, so every
    candidate sees the same inputs)."""
    snapshot = InputSnapshot.take(args, dict(kwargs), names)
    out = call(*args, **kwargs)
    if sync is not None:
        sync()
    owned = snapshot.changed()
    if owned:
        snapshot.restore()
    return out, owned


def truth_of(call: Callable[..., Any], args: Sequence[Any], kwargs: dict[str, Any]) -> Callable[[], Any]:
    """A lazy float32 run of ``call`` on upcast inputs (cached after the first use)."""
    box: list[Any] = []

    def run() -> Any:
        if not box:
            a, k = upcast(args, kwargs)
            box.append(call(*a, **k))
        return box[0]

    return run
