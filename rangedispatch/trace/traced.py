"""The dispatch traced into ``torch.compile`` graphs and ``torch.export`` programs.

Under tracing the op does not run its eager ``bisect``: it builds nested ``torch.cond`` on
the (symbolic) size of the dispatch dimension from the tuned table. Branches whose outcome
is known without a guard (static sizes, or symbolic sizes whose value range decides the
predicate) are resolved at trace time, so static shapes trace only the winning candidate
and a table with a single winner inlines it with no cond at all.

Tuning during tracing uses real tensors: under Dynamo, an internal custom op
(``rangedispatch::observe``) sees the fake inputs in its fake kernel and records their
size hints; a function Dynamo runs for real at trace time (``assume_constant_result``)
then tunes with generated real tensors and returns the plan as constants. A recompile
reuses the table and never re-tunes.
"""

from __future__ import annotations

import contextlib
import functools
import itertools
import logging
import re
import secrets
import warnings
import weakref
from typing import TYPE_CHECKING, Any, Callable, Mapping, Sequence

import torch
from torch.compiler import is_dynamo_compiling
from torch.fx.experimental.symbolic_shapes import statically_known_false, statically_known_true

from .. import compat
from ..compat import inline_cond
from ..errors import first_line
from ..decide.ranges import Partition, tree_leaves

if TYPE_CHECKING:
    from ..op.core import RangeDispatchOp

log = logging.getLogger("rangedispatch")

_OPS: weakref.WeakValueDictionary[str, RangeDispatchOp] = weakref.WeakValueDictionary()
_OBSERVED: dict[str, list[Any]] = {}

OPAQUE = "opaque"
_COND: Any = torch.cond  # module globals: one guard each in compiled frames
#: whether Dynamo can be handed the plan as constants (``compat`` feature ``constant_result``);
#: a global, not a call Dynamo would trace (and guard) through
PLAN_CONSTANTS = True


@compat.on_change
def _features() -> None:
    """What the traced dispatch keeps of :mod:`rangedispatch.compat` in its globals: the cond
    operator itself where it works (fewer guards than on its wrapper), else ``torch.cond``."""
    global _COND, PLAN_CONSTANTS
    _COND = compat.get("cond_operator") or torch.cond
    PLAN_CONSTANTS = compat.have("constant_result")
_TENSOR = "__rangedispatch_tensor_slot__"


def register_op(op: RangeDispatchOp) -> str:
    """Make ``op`` findable from trace-time functions by a constant string key."""
    key = f"rd{id(op)}"
    _OPS[key] = op
    return key


@torch.library.custom_op("rangedispatch::observe", mutates_args=())
def _observe(key: str, tensors: list[torch.Tensor]) -> torch.Tensor:
    """Eager no-op; exists so its fake kernel can see traced inputs."""
    return torch.empty(0)


@_observe.register_fake
def _observe_fake(key: str, tensors: list[torch.Tensor]) -> torch.Tensor:
    _OBSERVED[key] = list(tensors)
    return torch.empty(0)


@compat.constant_result
def _plan(key: str, layout_args: tuple[Any, ...], layout_kwargs: tuple[tuple[str, Any], ...],
          kinds: tuple[tuple[Any, str], ...]) -> Any:
    """The compiled plan (as constants) of the op's table for the call's tensor dtypes and
    device types (``kinds``, in call order), or ``None`` when no table has them yet."""
    op = _OPS[key]
    signature = op._traced_signature(_kinds_by_name(op, layout_args, layout_kwargs, kinds))
    return None if signature is None else compiled_plan(op, signature)


@compat.constant_result
def _tune_observed(key: str, layout_args: tuple[Any, ...], layout_kwargs: tuple[tuple[str, Any], ...]) -> Any:
    """Tune from the observed fake inputs (hints only) plus the constant arguments."""
    op = _OPS[key]
    tensors = iter(_OBSERVED.pop(key, []))
    args = tuple(next(tensors) if a == _TENSOR else a for a in layout_args)
    kwargs = {k: (next(tensors) if v == _TENSOR else v) for k, v in layout_kwargs}
    untuned = op.table is None
    plan = _plan_for_call(op, args, kwargs)
    if untuned and plan != OPAQUE and getattr(type(op).__call__, "__rd_traced__", False):
        _retrace()
    return plan


def _retrace() -> None:
    """Make Dynamo trace the frame again from its start: the op was just tuned inside this
    trace and its call now has the table written out (see fastcall), whose compiled frame
    guards a few constants instead of everything the general path read (about 30 guards
    against 85 on a two-range op; a frame is never traced again once compiled). Costs the
    trace so far, once per op; no recompile. Where this Dynamo has no such restart the trace
    goes on along the general path."""
    restart = compat.get("trace_restart")
    if restart is None:
        return
    try:  # the restart replays no decision of this attempt (the code it traces changed)
        restart("rangedispatch: op tuned during this trace")
    except Exception:
        log.info("tuned inside a torch.compile trace: tracing the frame again with the table written out")
        raise


def _kinds_by_name(op: RangeDispatchOp, layout_args: Sequence[Any], layout_kwargs: Sequence[tuple[str, Any]],
                   kinds: Sequence[tuple[Any, str]]) -> dict[str, tuple[Any, str]]:
    from ..decide.inputs import _positional_names

    names = _positional_names(op.reference_fn, len(layout_args))
    tensors = [n for n, a in zip(names, layout_args) if a == _TENSOR] + [k for k, v in layout_kwargs if v == _TENSOR]
    return dict(zip(tensors, kinds))


def _kinds(tensors: Sequence[torch.Tensor]) -> tuple[tuple[Any, str], ...]:
    return tuple((t.dtype, t.device.type) for t in tensors)


def _layout(args: Sequence[Any], kwargs: dict[str, Any]) -> tuple[tuple[Any, ...], tuple[tuple[str, Any], ...]]:
    """The call with every tensor replaced by a marker: constants Dynamo can pass on."""
    return (tuple(_TENSOR if isinstance(a, torch.Tensor) else a for a in args),
            tuple((k, _TENSOR if isinstance(v, torch.Tensor) else v) for k, v in kwargs.items()))


def _plan_for_call(op: RangeDispatchOp, args: Sequence[Any], kwargs: dict[str, Any]) -> Any:
    """The compiled plan of the table for a traced call's dtypes and devices; that table is
    tuned first (from the call's size hints) when the op has none for them. A call the op
    cannot tune a table for (``max_signatures`` reached) runs the reference."""
    flat, _ = _flatten(args, kwargs)
    by_name = _kinds_by_name(op, *_layout(args, kwargs), _kinds(flat))
    with op._lock:
        signature = op._traced_signature(by_name)
        if signature is None:
            if op.table is None:
                op._setup(args, kwargs, force=False)
            else:
                op._other_signature_route(args, kwargs)
            signature = op._traced_signature(by_name)
    return (op._ref.name, False) if signature is None else compiled_plan(op, signature)


def merged_segments(table: Any) -> tuple[tuple[str, ...], tuple[Any, ...]]:
    """The owner name per segment and the segment ends, gaps owned by the reference (which
    is what they run when traced) and equal neighbours merged."""
    segments = Partition.build((s.range, s.owner or table.reference) for s in table.partition.segments).segments
    return tuple(s.owner for s in segments), tuple(s.range.hi for s in segments)


@compat.constant_result
def opaque(key: str) -> bool:
    """Whether a tuned op's generated call must take the general traced path (a constant
    under Dynamo): the op is not traced, its cond tree could not be built, or its branches
    need contiguous outputs."""
    op = _OPS[key]
    if not op.traced or op.table is None:
        return True
    plan = compiled_plan(op, op.table.signature)
    return plan == OPAQUE or plan[-1]  # contiguous outputs: the general path adds them


@compat.constant_result
def traced_form(key: str, lowered: bool, *kinds: tuple[str, Any, str]) -> int:
    """How a tuned op's generated call traces (a constant under Dynamo): 0 the general traced
    path (see :func:`opaque`, and a call whose tensors' dtypes and device types, ``kinds``:
    ``(name, dtype, device type)`` each, select another table than the main one, which the
    call is written out for), 1 the cond tree (under ``torch.export``), 2 Python conditionals
    that Dynamo guards (``compiled_dispatch="guards"``), 3 the cond tree under ``torch.compile``,
    where Dynamo gives sizes 0 and 1 graphs of their own, so the segments below 2 are decided in
    Python and sizes from 2 on take the tree without them (see ``fastcall.traced_lines``); 4 and
    5 (where the call has ``lowered`` lines) one node of the op's lowered op (see
    :func:`lowered_ops`), returning one tensor or several. The key is a literal of the generated
    code and the kinds are guarded with the tensors anyway."""
    if opaque(key):
        return 0
    op = _OPS[key]
    if op._traced_signature({name: (dtype, device) for name, dtype, device in kinds}) != op.table.signature:
        return 0
    if torch.compiler.is_exporting():
        return 1
    if op.compiled_dispatch == "guards":
        return 2
    outputs = op._compiled_outputs.get(op.table.signature) if lowered and LOWERED else None
    return {"one": 4, "many": 5}.get(outputs, 3)


#: multi-winner tables compile as one node of a lowered op (see :func:`lowered_ops`) where the
#: call's lines offer it (``fastcall.traced_lines``); ``False``, read when Dynamo traces, puts
#: the cond tree in Dynamo's graph instead
LOWERED = True

#: device types whose compiled graphs Inductor runs as CUDA graphs when they are on
#: (``mode="reduce-overhead"``): there the dispatch guards its ranges instead of a cond
CUDA_GRAPH_DEVICES = ("cuda",)


def branch(pred: Any, true_fn: Callable[..., Any], false_fn: Callable[..., Any], operands: tuple[Any, ...]) -> Any:
    """One level of the traced dispatch: ``torch.cond`` unless the predicate is already
    decided (static sizes, or a symbolic size whose value range decides it), or Dynamo traces
    for CUDA graphs (see :func:`_compiles_for_cuda_graphs`)."""
    if statically_known_true(pred):
        return true_fn(*operands)
    if statically_known_false(pred):
        return false_fn(*operands)
    if is_dynamo_compiling():
        if operands and _compiles_for_cuda_graphs(operands[0].device.type):  # operands: the call's tensors
            return true_fn(*operands) if pred else false_fn(*operands)  # Dynamo guards the range
        return _COND(pred, true_fn, false_fn, operands)  # the operator: fewer guards than on its wrapper
    return torch.cond(pred, true_fn, false_fn, operands)  # export / make_fx: the wrapper's subgraphs lower


@compat.constant_result
def _compiles_for_cuda_graphs(device: str) -> bool:
    """Whether the frame Dynamo traces is compiled for CUDA graphs (Inductor with its
    ``triton.cudagraphs`` on, as ``mode="reduce-overhead"`` sets it) for operands on
    ``device``, a device that has them. Inductor would skip CUDA graphs for the whole graph if
    it held a cond, so :func:`branch` tests the size in Python there and Dynamo guards the
    range. Dynamo runs this for real while tracing; ``_lowered_branch`` asks the same while
    AOTAutograd traces."""
    if torch.compiler.is_exporting() or device not in CUDA_GRAPH_DEVICES:
        return False
    current = compat.get("trace_backend")
    if current is None:  # this torch keeps it elsewhere: no CUDA graphs known
        return False
    try:
        backend = current()
    except Exception:  # noqa: BLE001 - no trace under way
        return False
    for _ in range(8):  # through Dynamo's and torch.compile's wrappers of the backend (bounded: no cycles)
        if backend is None or hasattr(backend, "get_compiler_config"):
            break
        backend = next((getattr(backend, a) for a in ("__wrapped__", "_torchdynamo_orig_backend", "compiler_fn")
                        if getattr(backend, a, None) is not None), None)
    try:
        config = backend.get_compiler_config()
    except Exception:  # noqa: BLE001 - no such hook, or it failed: no CUDA graphs known
        return False
    return bool(isinstance(config, dict) and config.get("triton.cudagraphs"))


def guarded_branch(pred: Any, true_fn: Callable[..., Any], false_fn: Callable[..., Any],
                   operands: tuple[Any, ...]) -> Any:
    """One level of the traced dispatch with ``compiled_dispatch="guards"``: under
    ``torch.compile`` a Python ``if`` on the symbolic size, so Dynamo guards the range and
    the graph holds the range's winner alone (one graph per range reached, no cond); under
    ``torch.export`` (which must keep every size) and ``make_fx``, ``torch.cond`` as
    :func:`branch`."""
    if is_dynamo_compiling() and not torch.compiler.is_exporting():
        return true_fn(*operands) if pred else false_fn(*operands)
    return branch(pred, true_fn, false_fn, operands)


def compiled_plan(op: RangeDispatchOp, signature: str) -> Any:
    """``(decision, contiguous)`` for the op's table of ``signature``: its decision tree over
    owner names (see ``op._decision``) and whether branches must return contiguous outputs;
    or ``OPAQUE`` when the traced dispatch could not be built."""
    if signature in op._compiled_plans:
        return op._compiled_plans[signature]
    table = op._tables[signature]
    decision = op._decision(table)
    owners = tree_leaves(decision)
    plan: Any = (decision, False)
    if len(owners) == 1:
        log.info("%s: one implementation for every range: '%s' inlined, no torch.cond", op.name, owners[0])
    else:
        log.info("=== Generating runtime dispatch with torch.cond ===")
        log.info("Generating torch.cond dispatch for %s with %d ranges", table.dispatch, len(owners))
        template = op._templates.get(signature)
        outputs: list[str] = []
        problem = _preflight_isolated(op, plan, template, outputs)
        if problem is None and outputs:
            op._compiled_outputs[signature] = outputs[-1]
        if problem is not None:
            # branches whose outputs differ in layout (e.g. attention kernels): cond needs one
            # layout, so each branch returns contiguous outputs (a copy only where it was not)
            retry = (decision, True)
            if _preflight_isolated(op, retry, template) is None:
                log.info("%s: traced with contiguous branch outputs (%s)", op.name, problem)
                plan, problem = retry, None
        if problem is None:
            log.info("Successfully generated torch.cond dispatch tree with %d conditional branches",
                     len(owners) - 1)
        else:
            warnings.warn(
                f"{op.name}: could not build the torch.cond dispatch ({problem}); "
                "falling back to the opaque op, which dispatches at run time",
                RuntimeWarning,
                stacklevel=2,
            )
            plan = OPAQUE
    op._compiled_plans[signature] = plan
    return plan


def _preflight_isolated(op: RangeDispatchOp, plan: Any, template: Any, outputs: list[str] | None = None) -> str | None:
    """:func:`_preflight` outside any tracing context: the plan is built by a function Dynamo
    runs for real while it traces, and the trial trace must not pick up Dynamo's fake mode
    and shape environment (its symbols would end up in the compiled frame's guards)."""
    isolated = compat.get("isolated_trace")
    with isolated() if isolated is not None else contextlib.nullcontext():
        return _preflight(op, plan, template, outputs)


def _preflight(op: RangeDispatchOp, plan: Any, template: Any, outputs: list[str] | None = None) -> str | None:
    """Trace the cond tree once with make_fx on small real inputs; report a failure. The kind
    of its output (see :func:`output_kind`) goes into ``outputs``."""
    from torch.fx.experimental.proxy_tensor import make_fx

    from ..decide.inputs import InputFactory

    if template is None or op.dispatch is None:
        return None
    factory = InputFactory(template, op.dispatch, op.input_gen_fns, op_name=op.name)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            args, kwargs = factory.make(op._trial_size(template))
            flat, rebuild = _flatten(args, kwargs)

            def fn(*tensors: torch.Tensor) -> Any:
                a, k = rebuild(tensors)
                out = build_dispatch(op, plan, a, k)
                if outputs is not None:
                    outputs.append(output_kind(out))
                return out

            make_fx(fn, tracing_mode="symbolic")(*flat)
    except Exception as exc:  # any failure means: do not trace, stay opaque
        return f"{type(exc).__name__}: {first_line(exc)}"
    return None


def traced_call(op: RangeDispatchOp, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    """What a call of ``op`` becomes while ``torch.compile`` or ``torch.export`` traces it."""
    opaque = op._opaque_call
    if not op.traced and opaque is not None:
        return opaque(*args, **kwargs)
    if not PLAN_CONSTANTS and torch.compiler.is_dynamo_compiling():
        # Dynamo cannot be handed the plan: the custom op as one node, or a graph break
        return opaque(*args, **kwargs) if opaque is not None else outside_graph(op.eager, *args, **kwargs)
    if torch.compiler.is_dynamo_compiling():
        key = op._rd_key
        flat, _ = _flatten(args, kwargs)
        layout_args, layout_kwargs = _layout(args, kwargs)
        plan = _plan(key, layout_args, layout_kwargs, _kinds(flat))
        if plan is None:
            torch.ops.rangedispatch.observe(key, flat)
            plan = _tune_observed(key, layout_args, layout_kwargs)
    else:
        plan = _plan_for_call(op, args, kwargs)
    if plan == OPAQUE:
        if opaque is not None:
            return opaque(*args, **kwargs)
        return op.reference_fn(*args, **kwargs)
    return build_dispatch(op, plan, args, kwargs)


@torch.compiler.disable
def outside_graph(fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    """``fn(*args, **kwargs)`` run eagerly between the graphs Dynamo makes around it (a graph
    break): where this torch cannot hand Dynamo a constant plan (see :mod:`rangedispatch.compat`)."""
    return fn(*args, **kwargs)


def build_dispatch(op: RangeDispatchOp, plan: Any, args: Sequence[Any], kwargs: dict[str, Any]) -> Any:
    """Nested ``torch.cond`` over the plan's decision tree, one level per dispatch dimension,
    each reading its size from the operands of the level above."""
    decision, contiguous = plan
    getters = op._getters()

    def build(node: Any, a: Sequence[Any], k: dict[str, Any]) -> Any:
        if not isinstance(node, tuple):
            fn = op._by_name[node].call
            return (_contiguous_outputs(fn) if contiguous else fn)(*a, **k)
        dim, his, children = node
        flat, rebuild = _flatten(a, k)
        kids = [functools.partial(lambda child, *ca, **ck: build(child, ca, ck), child) for child in children]
        return _cond_tree(kids, his, 0, getters[dim](tuple(a), k), flat, rebuild, split)

    split = guarded_branch if op.compiled_dispatch == "guards" else branch

    return build(decision, args, kwargs)


def _contiguous_outputs(fn: Callable[..., Any]) -> Callable[..., Any]:
    def call(*args: Any, **kwargs: Any) -> Any:
        out = fn(*args, **kwargs)
        if isinstance(out, torch.Tensor):
            return out.contiguous()
        if isinstance(out, (tuple, list)):
            return type(out)(o.contiguous() if isinstance(o, torch.Tensor) else o for o in out)
        return out

    return call


def _cond_tree(
    fns: Sequence[Callable[..., Any]],
    his: Sequence[Any],
    i: int,
    size: Any,
    flat: Sequence[torch.Tensor],
    rebuild: Callable[[Sequence[torch.Tensor]], tuple[tuple[Any, ...], dict[str, Any]]],
    split: Callable[..., Any] = branch,
) -> Any:
    fn = fns[i]

    def take(*ops: torch.Tensor) -> Any:
        a, k = rebuild(ops)
        return fn(*a, **k)

    if i == len(fns) - 1:
        return take(*flat)

    def rest(*ops: torch.Tensor) -> Any:
        return _cond_tree(fns, his, i + 1, size, ops, rebuild, split)

    return split(size < his[i], take, rest, tuple(flat))


def _flatten(args: Sequence[Any], kwargs: dict[str, Any]) -> tuple[list[torch.Tensor], Callable[..., Any]]:
    """Tensors of a call, and a function putting replacement tensors back in their places."""
    slots = [i for i, a in enumerate(args) if isinstance(a, torch.Tensor)]
    keys = [k for k, v in kwargs.items() if isinstance(v, torch.Tensor)]
    flat = [args[i] for i in slots] + [kwargs[k] for k in keys]

    def rebuild(tensors: Sequence[torch.Tensor]) -> tuple[tuple[Any, ...], dict[str, Any]]:
        a = list(args)
        for j, i in enumerate(slots):
            a[i] = tensors[j]
        k = dict(kwargs)
        for j, key in enumerate(keys):
            k[key] = tensors[len(slots) + j]
        return tuple(a), k

    return flat, rebuild


def output_kind(out: Any) -> str:
    """``"one"`` for a tensor, ``"many"`` for a tuple or list of tensors, else ``"other"``."""
    if isinstance(out, torch.Tensor):
        return "one"
    if isinstance(out, (tuple, list)) and out and all(isinstance(o, torch.Tensor) for o in out):
        return "many"
    return "other"


_LOWERED: dict[Any, tuple[Any, Any]] = {}
_LOWERED_COUNT = itertools.count()
_LOWERED_RUN = secrets.token_hex(4)  # lowered ops' names differ between processes (see lowered_ops)


def lowered_ops(tree: tuple[Sequence[tuple[str, int]], Any], names: Sequence[str], label: str,
                constants: Mapping[str, Any] | None = None, keyword: Sequence[str] = ()) -> tuple[Any, Any]:
    """The op a multi-winner table compiles to: ``rangedispatch_rd::<label>_<n>(Tensor[] ops)``,
    returning one tensor (``.default``) or a list (``.many``). ``names`` are the signature's
    parameters in order; those in ``constants`` have that value in every call the op serves
    (the generated lines check it), the others are the tensors, passed in ``ops`` in that order.
    Candidates get the names in ``keyword`` as keyword arguments, the rest positionally.

    Its kernel is ``CompositeImplicitAutograd``: the decision tree of ``tree`` (``(axes, node)``
    with the candidates at the leaves, as ``fastcall.traced_lines`` takes it) as nested
    ``torch.cond`` on the operands' sizes, branches decided on static sizes resolved at once.
    Dynamo puts the op in its graph as one node, guarding nothing of the tree; AOTAutograd
    traces the kernel into the graph Inductor compiles, which gets the cond (the way upstream
    Inductor lowers its range dispatch). Dynamo's own trace of a cond costs guards on the
    pytree code it runs for the branches' operands and outputs: on the H200 host a quarter of
    a two-winner call's host time over a bare compile. A backend that runs the Dynamo graph as it is
    (``"eager"``) runs the kernel on real tensors: the winner for the sizes.

    Names are new per table and per process (the kernel is the table): AOTAutograd's cache,
    keyed on Dynamo's graph, never serves one table's graph for another's; Inductor's cache,
    keyed on the graph with the cond, still does for the same table."""
    axes, root = tree
    constants = dict(constants or {})
    key = (tuple(axes), _tree_key(root), tuple(names), tuple((n, type(v), v) for n, v in constants.items()),
           tuple(keyword))
    found = _LOWERED.get(key)
    if found is not None:
        return found
    operands = [n for n in names if n not in constants]
    index = {n: i for i, n in enumerate(operands)}
    where = [(index[t], int(d)) for t, d in axes]

    def call(fn: Callable[..., Any], ops: tuple[torch.Tensor, ...]) -> Any:
        values = {**constants, **dict(zip(operands, ops))}
        return fn(*(values[n] for n in names if n not in keyword), **{n: values[n] for n in keyword})

    def decide(node: Any, ops: tuple[torch.Tensor, ...]) -> tuple[torch.Tensor, ...]:
        if not isinstance(node, tuple):
            out = call(node, ops)
            return (out,) if isinstance(out, torch.Tensor) else tuple(out)
        axis, his, children = node
        i, d = where[axis]
        kids = [functools.partial(lambda child, *o: decide(child, o), child) for child in children]
        return _cond_tree(kids, his, 0, ops[i].size(d), ops, lambda o: (tuple(o), {}), _lowered_branch)

    name = f"{re.sub(r'[^0-9A-Za-z_]', '_', label)[:40]}_{_LOWERED_RUN}_{next(_LOWERED_COUNT)}"
    lib = _lowered_library()
    lib.define(f"{name}(Tensor[] ops) -> Tensor")
    lib.define(f"{name}.many(Tensor[] ops) -> Tensor[]")
    lib.impl(name, lambda ops: decide(root, tuple(ops))[0], "CompositeImplicitAutograd")
    lib.impl(f"{name}.many", lambda ops: list(decide(root, tuple(ops))), "CompositeImplicitAutograd")
    packet = getattr(torch.ops.rangedispatch_rd, name)
    found = _LOWERED[key] = (packet.default, packet.many)
    return found


def _tree_key(node: Any) -> Any:
    if not isinstance(node, tuple):
        return node  # a candidate: hashed by identity
    axis, his, children = node
    return axis, tuple(his), tuple(_tree_key(c) for c in children)


@functools.lru_cache(maxsize=None)
def _lowered_library() -> Any:
    return torch.library.Library("rangedispatch_rd", "FRAGMENT")


def _lowered_branch(pred: Any, true_fn: Callable[..., Any], false_fn: Callable[..., Any],
                    operands: tuple[Any, ...]) -> Any:
    """:func:`branch` inside the lowered op's kernel: the cond operator itself (its Python
    wrapper would compile the cond with Dynamo), branches returning tuples of tensors.

    Where Inductor compiles the graph for CUDA graphs, a cond would cost the whole graph its
    CUDA graphs (Inductor skips graphs with control flow). There the size is tested in Python
    instead: the guard this adds while AOTAutograd traces becomes one of the frame's guards,
    so each range reached gets its own graph with its winner alone, as in guards mode."""
    if statically_known_true(pred):
        return true_fn(*operands)
    if statically_known_false(pred):
        return false_fn(*operands)
    if operands and operands[0].device.type in CUDA_GRAPH_DEVICES and compat.inductor_cudagraphs():
        return true_fn(*operands) if pred else false_fn(*operands)
    with inline_cond.marked():
        return tuple(_COND(pred, true_fn, false_fn, tuple(operands)))


#: what the generated calls' written-out dispatch calls (see ``route.fastcall.traced_lines``)
TRACE_HOOKS = {"branch": branch, "lowered_ops": lowered_ops, "traced_form": traced_form}
