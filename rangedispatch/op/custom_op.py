"""A ``torch.library.custom_op`` routed through a range-dispatched op: its kernel on every
device, the class whose calls trace the dispatch under ``torch.compile``, and the devices whose
kernel the user turned off."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Callable, Mapping, Sequence

from torch.compiler import is_compiling

from .. import compat

if TYPE_CHECKING:
    from .core import RangeDispatchOp


def kernel_switch(custom_op: Any) -> set | None:
    """The live set of devices whose kernel is turned off (``set_kernel_enabled``), where this
    torch keeps a custom op's kernels as :func:`install_kernel` expects; ``None`` otherwise."""
    if not compat.have("custom_op_kernels"):
        return None
    off = getattr(custom_op, "_disabled_kernel", None)
    return off if isinstance(off, set) and isinstance(getattr(custom_op, "_backend_fns", None), dict) else None


def install_kernel(custom_op: Any, device: str | None, kernel: Callable[..., Any]) -> None:
    """Make ``kernel`` the custom op's kernel for ``device``. A generated kernel that checks
    :func:`kernel_switch` itself (``__rd_kernel__``, see fastcall) is called directly, its code
    marked so that Dynamo skips its frame and every frame it calls (:func:`skip_dynamo`),
    instead of torch's three wrapper frames (a lookup of the turned-off devices, a lazy
    ``torch._disable_dynamo``, Dynamo's disable context that sets the frame hook four times
    per call). Elsewhere torch's way stays."""
    custom_op.register_kernel(device, kernel)
    if (getattr(kernel, "__rd_kernel__", False) and compat.have("custom_op_kernels")
            and device in custom_op._backend_fns):
        custom_op._backend_fns[device] = skip_dynamo(kernel)


def skip_dynamo(fn: Callable[..., Any]) -> Callable[..., Any]:
    """``fn`` with what ``torch._dynamo.disable`` gives it: a compiled region that ends up calling
    it (a frame Dynamo skipped, a custom op run outside the graph) runs it, and everything it
    calls, without Dynamo. Marked on ``fn``'s code, so that eager calls pay nothing; where this
    torch cannot mark code, behind ``torch._dynamo.disable``'s wrapper."""
    from ..route import fastcall

    if not fastcall.inline():
        import torch.compiler

        return torch.compiler.disable(fn)
    fastcall.mark_frames(fn, callees=True)
    fn._torchdynamo_disable = True  # type: ignore[attr-defined]  # a trace reaching it calls it, as it would torch's
    return fn


def kernel_disabled(custom_op: Any, args: Sequence[Any], kwargs: Mapping[str, Any]) -> bool:
    """Whether torch would run the reference for this call: the kernel of the device the
    call dispatches to (its tensors' device type, or the op's any-device kernel) is off."""
    import torch

    tensors = [a for a in (*args, *kwargs.values()) if isinstance(a, torch.Tensor)]
    device = tensors[0].device.type if tensors else None
    if device not in custom_op._backend_fns:
        device = None
    return device in custom_op._disabled_kernel


def set_custom_op_class(custom_op: Any, op: RangeDispatchOp, written: Mapping[str, Any] | None) -> None:
    """Give a custom op routed through ``op`` its class: a traced op's compiled calls trace
    the dispatch (written out in its ``__call__`` where ``written`` gives the tuned table's
    template, tree and key, so a compiled call runs no layer of ours; otherwise through
    the op's own call); an opaque op keeps the custom op's class."""
    base = custom_op._rd_base if isinstance(custom_op, _TracedCustomOpDef) else type(custom_op)
    # without its class, or without a plan Dynamo can take, the op stays opaque: one node
    traced = op.traced and compat.have("custom_op_kernels") and compat.have("constant_result")
    custom_op.__class__ = _traced_class(base, custom_op, op, written) if traced else base


class _TracedCustomOpDef:
    """Mixin for a custom op whose calls under ``torch.compile`` trace the dispatch."""

    _rd_base: type

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        if is_compiling():  # the op's own call traces the dispatch (see fastcall)
            return _trace_dispatch(self, args, kwargs)
        return self._opoverload(*args, **kwargs)  # type: ignore[attr-defined]

    @property
    def rangedispatch(self) -> RangeDispatchOp:
        return self._rangedispatch  # type: ignore[attr-defined]


_CLASSES: dict[type, type] = {}


def _traced_class(base: type, custom_op: Any, op: RangeDispatchOp, written: Mapping[str, Any] | None) -> type:
    """The class of a traced custom op: the mixin, with a ``__call__`` generated for the op's
    signature where it can be (no ``*args, **kwargs`` forwarding on the eager path; the
    tuned dispatch written out for Dynamo with ``written``)."""
    from ..route.fastcall import generate_call

    call = generate_call(op.reference_fn, tensor=None, dim=0, bounds=(), fns=[custom_op._opoverload],
                         traced=_trace_dispatch, **(written or {}))
    if call is not None:
        return type(f"RangeDispatched{base.__name__}", (_TracedCustomOpDef, base), {"_rd_base": base, "__call__": call})
    if base not in _CLASSES:
        _CLASSES[base] = type(f"RangeDispatched{base.__name__}", (_TracedCustomOpDef, base), {"_rd_base": base})
    return _CLASSES[base]


def _trace_dispatch(custom_op: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    """Under ``torch.compile`` / ``torch.export``: the op's own call traces the dispatch."""
    return custom_op._rangedispatch(*args, **kwargs)
