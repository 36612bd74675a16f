"""Every private torch API rangedispatch uses, each behind a probe and a fallback.

torch changes its private modules in any release. Each piece this package reaches for is a
:class:`Feature`: what it uses, what runs without it, and a probe that exercises it once per
process (a tiny self-test, not a look-up of names) and hands back what the callers use. A
probe that fails or raises makes the feature absent: the fallback runs, and one debug line on
the ``rangedispatch`` logger says why. Nothing a user calls or compiles ever sees an exception
from a missing private piece.

Features (``have(name)`` / ``get(name)``):

======================  ===========================================  =============================================
feature                 private API                                  fallback
======================  ===========================================  =============================================
frame_strategies        Dynamo's ``set_code_exec_strategy``,         the eager call keeps its compile check; a
                        ``FrameAction``, ``FrameExecStrategy``        kernel is wrapped in ``torch.compiler.disable``
tensor_guards           ``torch._C._dynamo.guards.TensorGuards``     Python conditions on dtype, device and sizes
global_state_guard      ``torch._C._dynamo.guards.GlobalStateGuard`` grad and inference mode compared in Python
compiling_flag          ``torch.compiler._is_compiling_flag``        ``torch.compiler.is_compiling()``
constant_result         ``torch._dynamo.assume_constant_result``     under Dynamo the op runs outside the graph
                                                                     (``torch.compiler.disable``: a graph break)
trace_restart           ``UnspecializeRestartAnalysis``, the          the trace goes on along the general path
                        current ``InstructionTranslator``
trace_backend           the current trace's backend                  no CUDA graphs assumed: the cond is kept
cond_operator           ``torch.ops.higher_order.cond`` called       ``torch.cond``
                        directly under Dynamo
inline_cond             Inductor's cond lowering, IR and wrapper     Inductor's own code for every cond
                        codegen (see :mod:`rangedispatch.inline_cond`)
isolated_trace          ``torch._guards.tracing``,                   the trial trace runs in the caller's context
                        ``_disable_current_modes``, Dynamo's         (a failure leaves the op opaque)
                        ``specialize_float``
fake_tensor             ``torch._subclasses.fake_tensor.FakeTensor`` a tensor class of that name is a fake
custom_op_function      ``CustomOpDef._init_fn``, ``_name``,         registering a custom op raises ConfigError,
                        ``_opoverload``                              which names ``@range_dispatch`` instead
custom_op_kernels       ``CustomOpDef._backend_fns``,                kernels through ``register_kernel`` only; the
                        ``_disabled_kernel``, its class              op stays opaque under ``torch.compile``
dispatch_key_tls        ``torch._C._ForceDispatchKeyGuard`` and the  variants run in the caller's dispatch state
                        local include/exclude sets
cuda_sleep              ``torch.cuda._sleep``                        device timing without a spin before each call
inductor_config         ``torch._inductor.config``,                  the options are left as they are
                        ``torch._functorch.config``
guard_log               ``torch._logging.set_logs(guards=True)``     ``GuardCounter`` sees no frames
======================  ===========================================  =============================================

Tests force each fallback with :func:`absent`; ``rangedispatch compat`` prints the table for
the installed torch.
"""

from __future__ import annotations

import contextlib
import logging
import threading
from dataclasses import dataclass
from typing import Any, Callable, Iterator

log = logging.getLogger("rangedispatch")


@dataclass(frozen=True)
class Feature:
    """A private torch API: ``uses`` it, ``fallback`` runs without it; ``probe()`` exercises it
    and returns what the callers use (it raises, or returns ``None`` or ``False``, where it is
    missing or does not do what it should)."""

    name: str
    uses: str
    fallback: str
    probe: Callable[[], Any]


FEATURES: dict[str, Feature] = {}
_RESULTS: dict[str, tuple[bool, Any]] = {}
_FORCED: set[str] = set()
_LOCK = threading.RLock()


def feature(name: str, uses: str, fallback: str) -> Callable[[Callable[[], Any]], Callable[[], Any]]:
    def register(probe: Callable[[], Any]) -> Callable[[], Any]:
        FEATURES[name] = Feature(name, uses, fallback, probe)
        return probe

    return register


def have(name: str) -> bool:
    """Whether the feature works on this torch (its probe runs on the first ask)."""
    return _result(name)[0]


def get(name: str) -> Any:
    """What the feature's probe handed back, or ``None`` where it is absent."""
    ok, value = _result(name)
    return value if ok else None


def _result(name: str) -> tuple[bool, Any]:
    if name in _FORCED:
        return False, None
    found = _RESULTS.get(name)
    if found is not None:
        return found
    with _LOCK:
        found = _RESULTS.get(name)
        if found is None:
            found = _RESULTS[name] = _run_probe(FEATURES[name])
    return found


def _run_probe(f: Feature) -> tuple[bool, Any]:
    try:
        value = f.probe()
    except Exception as exc:  # noqa: BLE001 - any failure means: fall back
        log.debug("torch private API '%s' unusable (%s: %s); fallback: %s", f.name, type(exc).__name__, exc,
                  f.fallback)
        return False, None
    if value is None or value is False:
        log.debug("torch private API '%s' unusable (its self-test failed); fallback: %s", f.name, f.fallback)
        return False, None
    return True, value


_REFRESH: list[Callable[[], None]] = []


def on_change(refresh: Callable[[], None]) -> Callable[[], None]:
    """Register ``refresh``: it recomputes what a module keeps of a feature in its globals (read
    where a function call would cost a guard in compiled frames) when :func:`absent` changes
    what is there. It runs once now."""
    _REFRESH.append(refresh)
    refresh()
    return refresh


@contextlib.contextmanager
def absent(*names: str) -> Iterator[None]:
    """Treat ``names`` as missing from this torch while the block runs (tests of the fallbacks).
    Code generated or traced inside the block keeps its fallback afterwards."""
    unknown = [n for n in names if n not in FEATURES]
    if unknown:
        raise KeyError(f"absent(): no feature {unknown}; the features are {sorted(FEATURES)}")
    before = set(_FORCED)
    _FORCED.update(names)
    for refresh in _REFRESH:
        refresh()
    try:
        yield
    finally:
        _FORCED.clear()
        _FORCED.update(before)
        for refresh in _REFRESH:
            refresh()


def report() -> list[tuple[str, bool, str, str]]:
    """``(feature, works here, private API, fallback)`` for every feature."""
    return [(f.name, have(f.name), f.uses, f.fallback) for f in FEATURES.values()]


# --- the features ------------------------------------------------------------------------------


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


@feature("inline_cond", "Inductor's cond lowering, IR nodes and Python wrapper codegen",
         "Inductor's own code for every cond")
def _inline_cond() -> bool:
    from . import inline_cond

    return inline_cond.self_test()


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

    name = f"rangedispatch_probe::identity_{threading.get_ident()}_{len(_RESULTS)}"

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


@feature("guard_log", "torch._logging.set_logs(guards=True)", "GuardCounter sees no frames")
def _guard_log() -> Callable[[bool], None]:
    import torch._logging

    def switch(on: bool) -> None:
        if on:
            torch._logging.set_logs(guards=True)
        else:
            torch._logging.set_logs()

    switch(False)
    return switch


def main() -> None:
    import torch

    print(f"torch {torch.__version__}")
    for name, ok, uses, fallback in report():
        print(f"{name:20s} {'used' if ok else 'FALLBACK':8s} {uses}" + ("" if ok else f"  ->  {fallback}"))
