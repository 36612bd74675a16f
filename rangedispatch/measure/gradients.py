"""Is a candidate's gradient the reference's? The backward half of the equivalence check.

A call's floating inputs become fresh leaves that require grad; the reference and the
candidate each run forward, then backward with the same random cotangent (one per floating
output), and the gradient of every floating input is compared with
:func:`~rangedispatch.measure.verify.check_output`'s rule (dtype tolerances; for
low-precision gradients, the reference's own error against a float32 run of it).

A candidate fails when:

- its output does not require grad where the reference's does (it computed under
  ``no_grad``, detached its result, or wrapped a kernel without a backward);
- it gives no gradient for an input the reference's output depends on;
- a gradient differs beyond the tolerance (a custom ``autograd.Function`` with a wrong
  backward, a missing term);
- its backward raises.

Example:
    >>> import torch
    >>> class Twice(torch.autograd.Function):
    ...     @staticmethod
    ...     def forward(ctx, x):
    ...         return x * 2
    ...     @staticmethod
    ...     def backward(ctx, g):
    ...         return g * 3  # wrong: should be g * 2
    >>> x = torch.randn(8)
    >>> ref = gradients(lambda x: x * 2, (x,), {}, ["x"])
    >>> print(gradient_fault(gradients(Twice.apply, (x,), {}, ["x"], ref.cotangents), ref))
    gradient of 'x' differs from the reference's: grad x: values differ ...
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

from ..errors import first_line
from .compare import compare, compare_with_truth, low_precision


@dataclass
class Gradients:
    """One backward pass: whether the output required grad, the gradient per input name
    (``None``: none flowed), the cotangents used, and why it failed to run (if it did)."""

    requires_grad: bool
    grads: dict[str, Any] = field(default_factory=dict)
    cotangents: list[Any] = field(default_factory=list)
    error: str | None = None


def floating_inputs(args: Sequence[Any], kwargs: dict[str, Any], names: Sequence[str]) -> list[str]:
    """Names of the floating (or complex) tensor inputs: those a gradient is taken for."""
    import torch

    items = [(names[i] if i < len(names) else f"arg{i}", a) for i, a in enumerate(args)] + list(kwargs.items())
    return [n for n, v in items if isinstance(v, torch.Tensor) and (v.is_floating_point() or v.is_complex())]


def _leaves(args: Sequence[Any], kwargs: dict[str, Any], names: Sequence[str], wanted: Sequence[str]
            ) -> tuple[tuple[Any, ...], dict[str, Any], dict[str, Any]]:
    """The call with each ``wanted`` tensor replaced by a fresh leaf that requires grad."""
    leaves: dict[str, Any] = {}

    def leaf(name: str, value: Any) -> Any:
        if name in wanted:
            leaves[name] = value.detach().clone().requires_grad_(True)
            return leaves[name]
        return value

    a = tuple(leaf(names[i] if i < len(names) else f"arg{i}", v) for i, v in enumerate(args))
    k = {n: leaf(n, v) for n, v in kwargs.items()}
    return a, k, leaves


def _outputs(out: Any) -> list[Any]:
    import torch

    if isinstance(out, torch.Tensor):
        return [out] if out.is_floating_point() or out.is_complex() else []
    if isinstance(out, (tuple, list)):
        return [o for item in out for o in _outputs(item)]
    return []


def cotangents_for(outputs: Sequence[Any], seed: int = 0) -> list[Any]:
    """A reproducible random cotangent per output, like the output (unit scale)."""
    import torch

    made = []
    for i, o in enumerate(outputs):
        g = torch.Generator(device="cpu").manual_seed(zlib.crc32(f"{seed}:{i}".encode()))
        made.append(torch.randn(o.shape, generator=g, dtype=torch.float32).to(device=o.device, dtype=o.dtype))
    return made


def gradients(call: Callable[..., Any], args: Sequence[Any], kwargs: dict[str, Any], names: Sequence[str],
              cotangents: Sequence[Any] | None = None, wanted: Sequence[str] | None = None,
              sync: Callable[[], None] | None = None) -> Gradients:
    """Run ``call`` forward and backward on fresh leaves of the floating inputs (or
    ``wanted``): the gradient of each, with ``cotangents`` (made when ``None``)."""
    import torch

    wanted = list(wanted) if wanted is not None else floating_inputs(args, kwargs, names)
    a, k, leaves = _leaves(args, kwargs, names, wanted)
    try:
        with torch.enable_grad():
            outs = _outputs(call(*a, **k))
            tracked = [o for o in outs if o.requires_grad]
            if not tracked:
                return Gradients(False, {n: None for n in leaves}, list(cotangents or []))
            cots = list(cotangents) if cotangents is not None and len(cotangents) == len(outs) \
                else cotangents_for(outs)
            pairs = [(o, c) for o, c in zip(outs, cots) if o.requires_grad]
            found = torch.autograd.grad([o for o, _ in pairs], list(leaves.values()),
                                        grad_outputs=[c for _, c in pairs], allow_unused=True)
        if sync is not None:
            sync()
    except Exception as exc:
        return Gradients(True, {}, list(cotangents or []), f"{type(exc).__name__}: {first_line(exc)}")
    return Gradients(True, dict(zip(leaves, found)), cots)


def gradient_fault(got: Gradients, expected: Gradients, *, truth: Callable[[], Gradients] | None = None,
                   rtol: float | None = None, atol: float | None = None, factor: float = 2.0) -> str | None:
    """Why ``got`` (a candidate's :class:`Gradients`) is not the reference's ``expected``, or
    ``None``. ``truth()`` gives the reference's float32 gradients, used for low-precision ones
    whose plain comparison fails."""
    if expected.error is not None or not expected.requires_grad:
        return None  # the reference has no gradient to hold anyone to
    if got.error is not None:
        return f"backward raised {got.error}"
    if not got.requires_grad:
        return ("output does not require grad where the reference's does (computed under no_grad, detached, "
                "or a kernel without a backward): training would not update its inputs")
    for name, want in expected.grads.items():
        have = got.grads.get(name)
        if want is None:
            continue
        if have is None:
            return f"gives no gradient for input {name!r} where the reference gives one (detached from it)"
        found = compare(have, want, rtol=rtol, atol=atol, where=f"grad {name}")
        if found is not None and truth is not None and low_precision(want.dtype):
            exact = truth()
            if exact.error is None and exact.grads.get(name) is not None:
                found = compare_with_truth(have, want, exact.grads[name], rtol=rtol, atol=atol, factor=factor,
                                           where=f"grad {name}")
        if found is not None:
            return f"gradient of {name!r} differs from the reference's: {found}"
    return None


def candidate_gradient_fault(call: Callable[..., Any], reference: Callable[..., Any], args: Sequence[Any],
                             kwargs: dict[str, Any], names: Sequence[str], expected: Gradients, *,
                             rtol: float | None = None, atol: float | None = None,
                             sync: Callable[[], None] | None = None) -> str | None:
    """Why ``call``'s backward is not the reference's (whose :class:`Gradients` on these inputs
    are ``expected``), or ``None``: the same inputs and cotangents, and for low-precision
    gradients the reference's backward on float32 inputs as the truth. The one rule of tuning
    and the plugin."""
    from .verify import upcast

    wanted = list(expected.grads)
    got = gradients(call, args, kwargs, names, expected.cotangents, wanted=wanted, sync=sync)
    up = upcast(args, kwargs)
    return gradient_fault(got, expected, rtol=rtol, atol=atol,
                          truth=lambda: gradients(reference, *up, names, expected.cotangents, wanted=wanted))


def train_step(call: Callable[..., Any], args: Sequence[Any], kwargs: dict[str, Any], names: Sequence[str],
               wanted: Sequence[str], cotangents: Sequence[Any]) -> Callable[[], None]:
    """One forward plus backward of ``call`` on leaves of the ``wanted`` inputs, as a job to
    time (``objective="train"``); the leaves' gradients are dropped after each step."""
    import torch

    a, k, leaves = _leaves(args, kwargs, names, wanted)

    def step() -> None:
        with torch.enable_grad():
            outs = _outputs(call(*a, **k))
            pairs = [(o, c) for o, c in zip(outs, cotangents) if o.requires_grad]
            if pairs:
                torch.autograd.backward([o for o, _ in pairs], [c for _, c in pairs])
        for leaf in leaves.values():
            leaf.grad = None

    return step


def differentiable(call: Callable[..., Any], args: Sequence[Any], kwargs: dict[str, Any],
                   names: Sequence[str]) -> bool:
    """Whether ``call`` has a gradient on this input: floating inputs, an output that
    requires grad, and a backward that runs."""
    if not floating_inputs(args, kwargs, names):
        return False
    found = gradients(call, args, kwargs, names)
    return found.requires_grad and found.error is None and any(g is not None for g in found.grads.values())
