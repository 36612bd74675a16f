"""Inductor's code for the conds of a table's lowered op: the branches written inline.

Inductor's Python wrapper writes each branch of a ``torch.cond`` as a function of its own.
A call of it builds an argument list, checks the branch's inputs again, enters the device
guard and sets the device a second time; after the cond, the output's size, stride and
alignment are checked. On the H200 host this costs 2.4-5.0 us per call of a small graph: its
generated code takes 1.14-1.35x a bare compile's, the whole call 1.08-1.15x
(``bench/lowered_cond.py --layers``, the ``subgraph fns`` form).

For the conds a table's lowered op makes (:func:`rangedispatch.trace.traced.lowered_ops`), this
module has Inductor write each branch inline, as its AOT mode does, under the device guard the
caller already holds, and skips the output check where both branches' outputs are fresh
buffers: Inductor itself makes them the strides the cond promises. The predicate stays what
Inductor writes (``if s0 < 65:``), so the graph is the same graph, with the same kernels.

Those conds are told apart by an annotation (``node.meta["custom"]``, see :func:`marked`),
which AOTAutograd keeps on the node it traces. Inductor's lowering of ``torch.cond`` is
wrapped once per process: it lowers every cond as before and, for marked ones, gives the node
this module's code (a cond inside one of its branches is written inline with it, its output
checks kept unless it is marked too: the backward's nested conds are not). Every other cond,
and every mode where Inductor writes C++ or FX code (``cpp_wrapper``, AOTInductor), keeps
Inductor's own code. It is used only where :func:`self_test` passed on this torch (once per
process, the first time a marked cond would be traced); elsewhere nothing is wrapped and
Inductor's code stays, and a failure while writing one cond rolls its lines back and writes
Inductor's code for it. Set :data:`ENABLED` to ``False`` to keep Inductor's code for conds
traced from then on.

Inductor internals this relies on (torch 2.11, 2.13 and 2.15 read): ``lowering.lowerings``, the
``ir.Conditional`` node (``ir.Switch`` from 2.15 on) and its ``MultiOutput`` outputs'
``skip_size_stride_alignment_checks``,
the Python wrapper's ``codegen_subgraph_by_inlining`` (its AOT mode's code for a cond) and a
scheduler's ``default_device_context`` (the device its code starts on). The annotation shows in
``node.meta["custom"]`` of the graphs AOTAutograd makes for Inductor (never under
``torch.export``).
"""

from __future__ import annotations

import contextlib
import functools
import logging
import sys
import threading
from typing import Any, ContextManager, Sequence

import torch

from .registry import feature, have

log = logging.getLogger("rangedispatch")

ENABLED = True
MARK = "rangedispatch_inline_cond"


def marked() -> ContextManager[Any]:
    """The context a lowered op's ``torch.cond`` is traced in: an annotation on the node, where
    Inductor is compiling (AOTAutograd traces the op's kernel for it) and this torch passed
    :func:`self_test` (see :mod:`rangedispatch.compat`, feature ``inline_cond``). Anywhere else
    (``torch.export`` included), nothing."""
    if not ENABLED or "torch._inductor.lowering" not in sys.modules or torch.compiler.is_exporting():
        return contextlib.nullcontext()
    if not (_PROBING.active or have("inline_cond")):
        return contextlib.nullcontext()
    return torch.fx.traceback.annotate({MARK: True})


class _Probing(threading.local):
    active = False


_PROBING = _Probing()


@feature("inline_cond", "Inductor's cond lowering, IR nodes and Python wrapper codegen",
         "Inductor's own code for every cond")
def self_test() -> bool:
    """Whether this torch's Inductor writes a marked cond inline and runs it right: the
    lowering wrapper is installed, a two-winner lowered op is traced and compiled by Inductor
    (CPU, extern kernels only: no C++ build) in a thread of its own (the caller may be inside
    a compile: tracing state, fake modes and Dynamo's frame hook are per thread), and this
    module's code must have written the cond and the values must be right on both sides of
    the split. Where any of it fails the wrapper is taken out again. It costs one small compile
    (1.3 s on the 2-CPU dev machine with torch 2.13), once per process, inside the first Inductor
    compile of a table with several winners."""
    if not _install():
        return False
    result: list[bool] = []
    worker = threading.Thread(target=lambda: result.append(_exercise()), name="rangedispatch-inline-cond-probe")
    worker.start()
    worker.join(timeout=120)
    ok = bool(result and result[0])
    if not ok:
        _uninstall()
    return ok


def _exercise() -> bool:
    from torch._inductor.compile_fx import compile_fx
    from torch.fx.experimental.proxy_tensor import make_fx

    def first(x: torch.Tensor, w: torch.Tensor) -> tuple[torch.Tensor]:
        return (torch.mm(x, w),)

    def second(x: torch.Tensor, w: torch.Tensor) -> tuple[torch.Tensor]:
        return (torch.mm(x, w.t()),)

    def dispatch(x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
        with marked():  # what a lowered op's kernel does (see rangedispatch.trace.traced)
            return torch.ops.higher_order.cond(x.size(0) < 8, first, second, (x, w))[0]

    _PROBING.active = True
    written, failed = _WRITTEN
    try:
        w = torch.randn(4, 4)
        results = []
        for rows, expected in ((3, first), (16, second)):
            x = torch.randn(rows, 4)
            with torch.fx.traceback.preserve_node_meta():
                graph = make_fx(dispatch, tracing_mode="symbolic")(x, w)
            results.append(torch.allclose(compile_fx(graph, [x, w])(x, w), expected(x, w)[0]))
        return all(results) and _WRITTEN[0] >= written + 2 and _WRITTEN[1] == failed
    except Exception as exc:  # noqa: BLE001 - any failure: Inductor's own code
        log.debug("inline cond self-test failed: %s: %s", type(exc).__name__, exc)
        return False
    finally:
        _PROBING.active = False


_WRITTEN = [0, 0]  # conds written by this module's code, and those it failed to write (see self_test)
_INLINE_CLASSES: dict[type, type] = {}


def _cond_parts(node: Any, ir: Any) -> tuple[Any, Any, Any] | None:
    """``(predicate, true branch, false branch)`` of a cond node Inductor made: an
    ``ir.Conditional`` (torch up to 2.14) or an ``ir.Switch`` of a cond (its branches in the
    order false, true); ``None`` for any other node."""
    cls = type(node)
    cls = next((base for base, inline in _INLINE_CLASSES.items() if inline is cls), cls)
    if cls.__name__ == "Conditional" and cls is getattr(ir, "Conditional", None):
        return node.predicate, node.true_subgraph, node.false_subgraph
    if cls.__name__ == "Switch" and cls is getattr(ir, "Switch", None) and getattr(node, "is_cond", False):
        false_branch, true_branch = node.branches
        return node.selector, true_branch, false_branch
    return None


def _inline_class(base: type) -> type:
    """``base`` (Inductor's cond node class) whose codegen writes the branches inline."""
    if base not in _INLINE_CLASSES:
        hook = "codegen_conditional" if base.__name__ == "Conditional" else "codegen_switch"

        def codegen(self: Any, wrapper: Any) -> None:
            from torch._inductor.virtualized import V

            graph = V.graph
            if graph.cpp_wrapper or graph.aot_mode or getattr(graph, "fx_wrapper", False):
                return base.codegen(self, wrapper)
            own = vars(wrapper).get(hook)  # a cond in a branch: nested calls
            lines = getattr(wrapper, "lines", None)
            mark = len(lines) if isinstance(lines, list) else None
            setattr(wrapper, hook, functools.partial(_write_inline, wrapper, graph))
            try:
                return base.codegen(self, wrapper)
            except Exception as e:  # noqa: BLE001 - this module's code failed: Inductor's, from scratch
                if mark is None:
                    raise
                log.debug("Inductor's cond code kept for %s: %s: %s", self.get_name(), type(e).__name__, e)
                _WRITTEN[1] += 1
                del lines[mark:]
                setattr(wrapper, hook, getattr(type(wrapper), hook).__get__(wrapper))
                return base.codegen(self, wrapper)
            finally:
                if own is None:
                    delattr(wrapper, hook)
                else:
                    setattr(wrapper, hook, own)

        _INLINE_CLASSES[base] = type(f"Inline{base.__name__}", (base,), {"codegen": codegen})
    return _INLINE_CLASSES[base]


@functools.lru_cache(maxsize=None)
def _install() -> bool:
    """Wrap Inductor's lowering of ``torch.cond`` (once per process)."""
    try:
        from torch._inductor import ir, lowering
        from torch._inductor.codegen import wrapper as codegen
        from torch._inductor.virtualized import V

        original = lowering.lowerings[torch.ops.higher_order.cond]
        for owner, name in ((codegen, "EnterSubgraphLine"), (codegen, "ExitSubgraphLine"),
                            (codegen.PythonWrapperCodegen, "codegen_subgraph_by_inlining"),
                            (torch.fx.traceback, "annotate")):
            getattr(owner, name)
    except Exception as e:  # noqa: BLE001 - any missing piece: Inductor's code
        log.debug("Inductor's cond code kept: %s", e)
        return False
    original = getattr(original, "__rangedispatch_wrapped__", original)

    def lower_cond(*args: Any, **kwargs: Any) -> Any:
        graph = V.graph
        node = getattr(graph, "current_node", None)
        if not (ENABLED and getattr(node, "meta", {}).get("custom", {}).get(MARK)):
            return original(*args, **kwargs)
        before = len(graph.operations)
        out = original(*args, **kwargs)
        try:
            _adopt(graph.operations[before:], ir)
        except Exception as e:  # noqa: BLE001 - a node this module does not know: Inductor's code
            log.debug("Inductor's cond code kept for %s: %s", getattr(node, "name", "a cond"), e)
        return out

    lower_cond.__rangedispatch_wrapped__ = original  # type: ignore[attr-defined]
    lowering.lowerings[torch.ops.higher_order.cond] = lower_cond
    return True


def _uninstall() -> None:
    try:
        from torch._inductor import lowering

        current = lowering.lowerings[torch.ops.higher_order.cond]
        original = getattr(current, "__rangedispatch_wrapped__", None)
        if original is not None:
            lowering.lowerings[torch.ops.higher_order.cond] = original
    except Exception:  # noqa: BLE001 - nothing was installed
        pass
    _install.cache_clear()


def _adopt(operations: Sequence[Any], ir: Any) -> None:
    """Give the cond Inductor just lowered (with its ``MultiOutput`` nodes) this module's code."""
    conds = [(o, parts) for o in operations if (parts := _cond_parts(o, ir)) is not None]
    if len(conds) != 1:
        return
    cond, (_, true_branch, false_branch) = conds[0]
    fresh = all(_fresh_outputs(s.graph) for s in (true_branch, false_branch))
    outputs = list(cond.outputs or ())
    cond.__class__ = _inline_class(type(cond))
    for out in outputs if fresh else ():
        if hasattr(out, "skip_size_stride_alignment_checks"):
            out.skip_size_stride_alignment_checks = True


def _fresh_outputs(graph: Any) -> bool:
    """Whether each output of a branch is a buffer the branch computes, at offset 0: what the
    check after the cond could find wrong (size, stride, alignment) Inductor has already made
    right, since it gives each branch's outputs the strides the cond promises."""
    try:
        return all(
            o.get_name() not in graph.graph_inputs and o.get_name() not in graph.constants
            and o.get_layout().offset == 0
            for o in graph.graph_outputs)
    except (AttributeError, NotImplementedError, TypeError):
        return False


def _write_inline(wrapper: Any, graph: Any, conditional: Any) -> None:
    """``codegen_conditional`` of Inductor's Python wrapper, the branches inline (its AOT mode's
    code) and, where each branch stays on the caller's device, under the caller's guard. A
    branch is not split into graph partitions (nor is it where Inductor writes it as a
    function): each partition would enter the device guard again."""
    from torch._inductor import config, ir
    from torch._inductor.codegen.wrapper import EnterSubgraphLine, ExitSubgraphLine

    parts = _cond_parts(conditional, ir)
    if parts is None:  # pragma: no cover - only nodes _adopt took reach here
        raise TypeError(f"not a cond node: {type(conditional).__name__}")
    condition, true_branch, false_branch = parts
    name = conditional.get_name()
    operands = [buf.codegen_reference() for buf in conditional.operands]
    predicate = condition.codegen_reference()
    if not isinstance(condition, ir.ShapeAsConstantBuffer):
        predicate = f"{predicate}.item()"
    outputs = [f"{name}[{i}]" for i in range(len(conditional.outputs))]
    device = getattr(getattr(graph, "scheduler", None), "current_device", None)
    wrapper.writeline(f"{name} = [None] * {len(conditional.outputs)}")
    _WRITTEN[0] += 1
    for head, subgraph in ((f"if {predicate}:", true_branch), ("else:", false_branch)):
        wrapper.writeline(head)
        wrapper.writeline(EnterSubgraphLine(wrapper, subgraph.graph))
        with _under_device(subgraph.graph, device), config.patch("graph_partition", False):
            wrapper.codegen_subgraph_by_inlining(subgraph, operands, outputs)
        wrapper.writeline(ExitSubgraphLine(wrapper))


@contextlib.contextmanager
def _under_device(graph: Any, device: Any) -> Any:
    """While a branch is written: where all its nodes run on ``device`` (the one whose guard
    the caller holds), its scheduler starts there, so it writes no guard of its own."""
    if device is None:
        yield
        return
    update = graph._update_scheduler

    def update_in_place() -> None:
        update()
        scheduler = graph.scheduler
        devices = {n.get_device() for n in scheduler.nodes} - {None}
        if devices <= {device} and hasattr(scheduler, "default_device_context"):
            scheduler.default_device_context = device

    graph._update_scheduler = update_in_place
    try:
        yield
    finally:
        del graph._update_scheduler
