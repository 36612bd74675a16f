"""The private torch APIs rangedispatch uses, each a feature with a probe that exercises it (see
:mod:`rangedispatch.compat`)."""

from __future__ import annotations

import contextlib
import itertools
from typing import Any, Callable, Iterator

from .registry import feature, get, have

_PROBE_OPS = itertools.count()



@feature("frame_strategies", "torch._dynamo.eval_frame.set_code_exec_strategy, FrameAction, FrameExecStrategy",
         "the eager call keeps its compile check; kernels wrapped in torch.compiler.disable")
def _frame_strategies() -> Callable[[Any, bool], None]:
    from torch._dynamo.eval_frame import set_code_exec_strategy
    from torch._dynamo.types import FrameAction, FrameExecStrategy

    def mark(code: Any, callees: bool) -> None:
        """Dynamo's frame hook runs ``code``'s frames as they are (and every frame they call
        too with ``callees``)."""
        callee = FrameAction.SKIP if callees else FrameAction.DEFAULT
        set_code_exec_strategy(code, FrameExecStrategy(FrameAction.SKIP, callee))

    def probe_target() -> int:
        return 1

    mark(probe_target.__code__, True)
    return mark if probe_target() == 1 else None


@feature("tensor_guards", "torch._C._dynamo.guards.TensorGuards",
         "Python conditions on each tensor's dtype, device, rank and sizes")
def _tensor_guards() -> Callable[..., Callable[..., bool]]:
    import torch
    from torch._C._dynamo.guards import TensorGuards

    def make(tensors: Any, sizes: Any) -> Callable[..., bool]:
        return TensorGuards(*tensors, dynamic_dims_sizes=[list(s) for s in sizes],
                            dynamic_dims_strides=[[None] * t.dim() for t in tensors]).check

    check = make([torch.zeros(2, 3)], [[None, 3]])
    works = (check(torch.zeros(5, 3)) and not check(torch.zeros(5, 4))
             and not check(torch.zeros(5, 3, dtype=torch.int64)) and not check(torch.zeros(5, 3, 1)))
    return make if works else None


@feature("global_state_guard", "torch._C._dynamo.guards.GlobalStateGuard",
         "grad and inference mode compared in Python")
def _global_state_guard() -> Callable[[], Any]:
    import torch
    from torch._C._dynamo.guards import GlobalStateGuard

    state = GlobalStateGuard()
    same = state.check()
    with torch.set_grad_enabled(not torch.is_grad_enabled()):
        other = state.check()
    return GlobalStateGuard if same and not other else None


@feature("compiling_flag", "torch.compiler._is_compiling_flag", "torch.compiler.is_compiling()")
def _compiling_flag() -> str:
    import torch.compiler

    before = torch.compiler._is_compiling_flag
    if not isinstance(before, bool):
        return None  # type: ignore[return-value]
    try:
        torch.compiler._is_compiling_flag = True
        seen = torch.compiler.is_compiling()
    finally:
        torch.compiler._is_compiling_flag = before
    return "_is_compiling_flag" if seen else None  # type: ignore[return-value]


@feature("constant_result", "torch._dynamo.assume_constant_result",
         "under Dynamo the op runs outside the graph (torch.compiler.disable: a graph break)")
def _constant_result() -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    import torch._dynamo

    decorate = torch._dynamo.assume_constant_result

    def probe_target(x: int) -> int:
        return x + 1

    marked = decorate(probe_target)
    ok = marked(1) == 2 and getattr(marked, "_dynamo_marked_constant", False)
    return decorate if ok else None


def constant_result(fn: Callable[..., Any]) -> Callable[..., Any]:
    """``fn`` as a function Dynamo runs for real while it traces, its result a constant of
    the graph; ``fn`` as it is where this torch has no such marker (callers then check
    :func:`have` and keep Dynamo away from it)."""
    decorate = get("constant_result")
    return fn if decorate is None else decorate(fn)


@feature("trace_restart", "torch._dynamo.exc.UnspecializeRestartAnalysis, InstructionTranslator.current_tx()",
         "the trace goes on along the general traced path")
def _trace_restart() -> Callable[[str], None]:
    from torch._dynamo import exc
    from torch._dynamo.symbolic_convert import InstructionTranslator

    restart = exc.UnspecializeRestartAnalysis
    if not (isinstance(restart, type) and issubclass(restart, Exception) and callable(InstructionTranslator.current_tx)):
        return None  # type: ignore[return-value]
    restart(restart_reason="probe")

    def raise_restart(reason: str) -> None:
        """Make Dynamo trace the frame again from its start (its speculation cleared); returns
        where that cannot be done cleanly."""
        try:
            InstructionTranslator.current_tx().speculation_log.clear()
        except Exception:  # noqa: BLE001 - no trace under way, or its log is kept elsewhere
            return
        raise restart(restart_reason=reason)

    return raise_restart


@feature("trace_backend", "InstructionTranslator.current_tx().output.compiler_fn",
         "no CUDA graphs assumed: the lowered op keeps its cond under reduce-overhead")
def _trace_backend() -> Callable[[], Any]:
    from torch._dynamo.symbolic_convert import InstructionTranslator

    def backend() -> Any:
        """The backend of the frame Dynamo is tracing (raises outside a trace)."""
        return InstructionTranslator.current_tx().output.compiler_fn

    return backend if callable(InstructionTranslator.current_tx) else None


@feature("cond_operator", "torch.ops.higher_order.cond called directly", "torch.cond")
def _cond_operator() -> Any:
    import torch

    op = torch.ops.higher_order.cond
    x = torch.ones(2)
    got = op(torch.tensor(False), lambda t: (t + 1,), lambda t: (t - 1,), (x,))
    return op if torch.equal(tuple(got)[0], x - 1) else None


@feature("isolated_trace", "torch._guards.tracing, torch.utils._python_dispatch._disable_current_modes, "
         "torch._dynamo.config.specialize_float",
         "the trial trace runs in the caller's context (a failure leaves the op opaque)")
def _isolated_trace() -> Callable[[], Any]:
    from torch._guards import tracing
    from torch.utils._python_dispatch import _disable_current_modes

    import torch._dynamo.config as dynamo_config

    # floats the branches close over stay constants where torch.cond's wrapper compiles them
    # (torch 2.15 lifts them to SymFloat operands, which its cond then refuses)
    floats = {"specialize_float": True} if hasattr(dynamo_config, "specialize_float") else {}

    @contextlib.contextmanager
    def isolated() -> Iterator[None]:
        """No tracing context and no dispatch modes of the caller's; floats specialised."""
        with tracing(None), _disable_current_modes(), dynamo_config.patch(floats):
            yield

    with isolated():
        pass
    return isolated


@feature("fake_tensor", "torch._subclasses.fake_tensor.FakeTensor", "a tensor class named FakeTensor is a fake")
def _fake_tensor() -> type:
    import torch
    from torch._subclasses.fake_tensor import FakeTensor, FakeTensorMode

    with FakeTensorMode():
        t = torch.empty(2)
    return FakeTensor if isinstance(t, FakeTensor) and not isinstance(torch.empty(2), FakeTensor) else None


def is_fake(t: Any) -> bool:
    """Whether ``t`` is a fake tensor (a trace's stand-in, with no data)."""
    cls = get("fake_tensor")
    if cls is not None:
        return isinstance(t, cls)
    return any(c.__name__ == "FakeTensor" for c in type(t).__mro__)  # without the class: its name


def _probe_custom_op() -> Any:
    import torch

    name = f"rangedispatch_probe::identity_{next(_PROBE_OPS)}"

    def identity(x: torch.Tensor) -> torch.Tensor:
        return x.clone()

    identity.__annotations__ = {"x": torch.Tensor, "return": torch.Tensor}  # this module's are strings
    return torch.library.custom_op(name, mutates_args=())(identity), identity


@feature("custom_op_function", "CustomOpDef._init_fn, _name, _opoverload",
         "registering a custom op raises ConfigError naming @range_dispatch instead")
def _custom_op_function() -> Callable[[Any], tuple[Callable[..., Any], str, Any]]:
    import torch

    op, fn = _probe_custom_op()

    def parts(custom_op: Any) -> tuple[Callable[..., Any], str, Any]:
        """The custom op's Python function, its name and its operator overload."""
        return custom_op._init_fn, custom_op._name, custom_op._opoverload

    f, name, overload = parts(op)
    x = torch.ones(2)
    return parts if f is fn and isinstance(name, str) and torch.equal(overload(x), x) else None


def is_custom_op_def(obj: Any) -> bool:
    """Whether ``obj`` is what ``@torch.library.custom_op`` returns."""
    import torch.library

    cls = getattr(torch.library, "CustomOpDef", None)
    if cls is None:
        try:
            from torch._library.custom_ops import CustomOpDef as cls
        except ImportError:
            return False
    return isinstance(obj, cls)


def kernel_devices(custom_op: Any) -> list[str | None]:
    """The device types a custom op has its own kernel for (``[None]``: one for every device,
    which is all :func:`install_kernel`-style routing can know without ``custom_op_kernels``)."""
    if not have("custom_op_kernels"):
        return [None]
    return list(custom_op._backend_fns) or [None]


@feature("custom_op_kernels", "CustomOpDef._backend_fns, _disabled_kernel, its __class__",
         "kernels through register_kernel only; the op stays opaque under torch.compile")
def _custom_op_kernels() -> bool:
    import torch

    op, _ = _probe_custom_op()
    op.register_kernel("cpu", lambda x: x + 1)
    fns, off = op._backend_fns, op._disabled_kernel
    if not (isinstance(fns, dict) and "cpu" in fns and isinstance(off, set)):
        return False
    fns["cpu"] = lambda x: x + 2  # the kernel torch runs is the one in _backend_fns
    base = type(op)
    op.__class__ = type("ProbeCustomOpDef", (base,), {})
    x = torch.zeros(2)
    return bool(torch.equal(op(x), x + 2))


@feature("dispatch_key_tls", "torch._C._ForceDispatchKeyGuard, _dispatch_tls_local_include_set/exclude_set",
         "variants run in the caller's dispatch state")
def _dispatch_key_tls() -> Any:
    import torch

    include, exclude = torch._C._dispatch_tls_local_include_set(), torch._C._dispatch_tls_local_exclude_set()
    with torch._C._ForceDispatchKeyGuard(include, exclude):
        torch.ones(1) + 1

    class DispatchState:
        @staticmethod
        def current() -> tuple[Any, Any]:
            return torch._C._dispatch_tls_local_include_set(), torch._C._dispatch_tls_local_exclude_set()

        force = torch._C._ForceDispatchKeyGuard

    return DispatchState


@feature("cuda_sleep", "torch.cuda._sleep", "device timing without a GPU spin before each call (host work may show)")
def _cuda_sleep() -> Callable[[int], None]:
    import torch

    if not torch.cuda.is_available():
        return None  # type: ignore[return-value]
    torch.cuda._sleep(1000)
    torch.cuda.synchronize()
    return torch.cuda._sleep


@feature("inductor_config", "torch._inductor.config, torch._functorch.config", "the options are left as they are")
def _inductor_config() -> tuple[Any, Any]:
    import torch._functorch.config as functorch_config
    import torch._inductor.config as inductor_config

    with inductor_config.patch({}), functorch_config.patch({}):
        pass
    return inductor_config, functorch_config


@feature("guard_log", "torch._logging.set_logs(guards=True), the torch._dynamo.guards logger",
         "GuardCounter sees no frames")
def _guard_log() -> Any:
    import logging

    import torch._logging

    class GuardLog:
        logger = logging.getLogger("torch._dynamo.guards")

        @staticmethod
        def switch(on: bool) -> None:
            if on:
                torch._logging.set_logs(guards=True)
            else:
                torch._logging.set_logs()

    GuardLog.switch(False)
    return GuardLog


@feature("no_dispatch_modes", "torch.utils._python_dispatch._disable_current_modes",
         "tuning during a trace runs under the trace's dispatch modes (it may fail there: the reference runs)")
def _no_dispatch_modes() -> Callable[[], Any]:
    import torch
    from torch.utils._python_dispatch import _disable_current_modes

    with _disable_current_modes():
        torch.ones(1) + 1
    return _disable_current_modes


def no_dispatch_modes() -> Any:
    """A context without the caller's dispatch modes (a trace's fake mode): real tensors inside."""
    found = get("no_dispatch_modes")
    return found() if found is not None else contextlib.nullcontext()


@feature("operator_types", "torch._ops.OpOverload, torch._ops.OpOverloadPacket",
         "built-in operators are told apart by their class names")
def _operator_types() -> tuple[type, ...]:
    import torch

    types = (torch._ops.OpOverload, torch._ops.OpOverloadPacket)
    ok = isinstance(torch.ops.aten.add.Tensor, types) and isinstance(torch.ops.aten.add, types)
    return types if ok else None  # type: ignore[return-value]


def is_operator(obj: Any) -> bool:
    """Whether ``obj`` is a built-in operator (``torch.ops.<ns>.<op>`` or one of its overloads)."""
    types = get("operator_types")
    if types is not None:
        return isinstance(obj, types)
    return type(obj).__name__ in ("OpOverload", "OpOverloadPacket")


def inductor_cudagraphs() -> bool:
    """Inductor's ``triton.cudagraphs`` as it stands (``mode="reduce-overhead"`` patches it on
    while Inductor compiles, AOTAutograd's trace included); off where Inductor is not loaded
    (it is not imported here) or its config cannot be read."""
    import sys

    if "torch._inductor.config" not in sys.modules:
        return False
    configs = get("inductor_config")
    try:
        return configs is not None and bool(configs[0].triton.cudagraphs)
    except AttributeError:
        return False
