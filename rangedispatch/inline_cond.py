"""Inductor's code for the conds of a table's lowered op: the branches written inline.

Inductor's Python wrapper writes each branch of a ``torch.cond`` as a function of its own.
A call of it builds an argument list, checks the branch's inputs again, enters the device
guard and sets the device a second time; after the cond, the output's size, stride and
alignment are checked. On the H200 host this costs 2.4-5.0 us per call of a small graph: its
generated code takes 1.14-1.35x a bare compile's, the whole call 1.08-1.15x
(``bench/lowered_cond.py --layers``, the ``subgraph fns`` form).

For the conds a table's lowered op makes (:func:`rangedispatch.traced.lowered_ops`), this
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
Inductor's own code. Where this torch lacks a piece the wrapper needs, nothing is wrapped and
Inductor's code stays. Set :data:`ENABLED` to ``False`` to keep Inductor's code for conds
traced from then on.

Inductor internals this relies on (torch 2.11 and 2.13 read): ``lowering.lowerings``, the
``ir.Conditional`` node and its ``MultiOutput`` outputs' ``skip_size_stride_alignment_checks``,
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
from typing import Any, ContextManager, Sequence

import torch

log = logging.getLogger("rangedispatch")

ENABLED = True
MARK = "rangedispatch_inline_cond"


def marked() -> ContextManager[Any]:
    """The context a lowered op's ``torch.cond`` is traced in: an annotation on the node, where
    Inductor is compiling (AOTAutograd traces the op's kernel for it) and its lowering could be
    wrapped. Anywhere else (``torch.export`` included), nothing."""
    if (not ENABLED or "torch._inductor.lowering" not in sys.modules or torch.compiler.is_exporting()
            or not _install()):
        return contextlib.nullcontext()
    return torch.fx.traceback.annotate({MARK: True})


@functools.lru_cache(maxsize=None)
def _install() -> bool:
    try:
        from torch._inductor import ir, lowering
        from torch._inductor.codegen import wrapper as codegen
        from torch._inductor.virtualized import V

        original = lowering.lowerings[torch.ops.higher_order.cond]
        missing = [name for owner, name in ((codegen, "EnterSubgraphLine"), (codegen, "ExitSubgraphLine"),
                                            (codegen.PythonWrapperCodegen, "codegen_subgraph_by_inlining"),
                                            (torch.fx.traceback, "annotate"))
                   if not hasattr(owner, name)]
        if missing:
            raise AttributeError(f"this torch has no {', '.join(missing)}")
    except (ImportError, AttributeError, KeyError) as e:
        log.debug("Inductor's cond code kept: %s", e)
        return False
    original = getattr(original, "__rangedispatch_wrapped__", original)

    class InlineConditional(ir.Conditional):  # type: ignore[misc, valid-type]
        """A marked cond: its branches written inline by the Python wrapper."""

        def codegen(self, wrapper: Any) -> None:
            graph = V.graph
            if graph.cpp_wrapper or graph.aot_mode or getattr(graph, "fx_wrapper", False):
                return super().codegen(wrapper)
            own = vars(wrapper).get("codegen_conditional")  # a cond in a branch: nested calls
            wrapper.codegen_conditional = functools.partial(_write_inline, wrapper, graph)
            try:
                return super().codegen(wrapper)
            finally:
                if own is None:
                    del wrapper.codegen_conditional
                else:
                    wrapper.codegen_conditional = own

    def lower_cond(*args: Any, **kwargs: Any) -> Any:
        graph = V.graph
        node = getattr(graph, "current_node", None)
        if not (ENABLED and getattr(node, "meta", {}).get("custom", {}).get(MARK)):
            return original(*args, **kwargs)
        before = len(graph.operations)
        out = original(*args, **kwargs)
        _adopt(graph.operations[before:], ir, InlineConditional)
        return out

    lower_cond.__rangedispatch_wrapped__ = original  # type: ignore[attr-defined]
    lowering.lowerings[torch.ops.higher_order.cond] = lower_cond
    return True


def _adopt(operations: Sequence[Any], ir: Any, inline_class: type) -> None:
    """Give the cond Inductor just lowered (with its ``MultiOutput`` nodes) this module's code."""
    conds = [o for o in operations if type(o) is ir.Conditional]
    if len(conds) != 1:
        return
    cond = conds[0]
    try:
        fresh = all(_fresh_outputs(s.graph) for s in (cond.true_subgraph, cond.false_subgraph))
        outputs = list(cond.outputs or ())
    except AttributeError:  # a node this module does not know: Inductor's code
        return
    cond.__class__ = inline_class
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

    name = conditional.get_name()
    operands = [buf.codegen_reference() for buf in conditional.operands]
    predicate = conditional.predicate.codegen_reference()
    if not isinstance(conditional.predicate, ir.ShapeAsConstantBuffer):
        predicate = f"{predicate}.item()"
    outputs = [f"{name}[{i}]" for i in range(len(conditional.outputs))]
    device = getattr(getattr(graph, "scheduler", None), "current_device", None)
    wrapper.writeline(f"{name} = [None] * {len(conditional.outputs)}")
    for head, subgraph in ((f"if {predicate}:", conditional.true_subgraph),
                           ("else:", conditional.false_subgraph)):
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
