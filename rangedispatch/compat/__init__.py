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
                        codegen (see :mod:`rangedispatch.compat.inline_cond`)
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
no_dispatch_modes       ``_disable_current_modes``                   tuning during a trace runs under its modes
operator_types          ``torch._ops.OpOverload(Packet)``            operators told apart by class name
======================  ===========================================  =============================================

Tests force each fallback with :func:`absent`; ``rangedispatch compat`` prints the table for
the installed torch.
"""

from __future__ import annotations

from . import inline_cond  # noqa: F401  (registers its feature, inline_cond)
from .features import (constant_result, inductor_cudagraphs, is_custom_op_def, is_fake, is_operator, kernel_devices,
                       no_dispatch_modes)
from .registry import FEATURES, Feature, absent, feature, get, have, on_change, report

__all__ = ["FEATURES", "Feature", "absent", "constant_result", "feature", "get", "have", "inductor_cudagraphs",
           "is_custom_op_def", "is_fake", "is_operator", "kernel_devices", "no_dispatch_modes", "on_change", "report"]


def main() -> None:
    import torch

    print(f"torch {torch.__version__}")
    for name, ok, uses, fallback in report():
        print(f"{name:20s} {'used' if ok else 'FALLBACK':8s} {uses}" + ("" if ok else f"  ->  {fallback}"))
