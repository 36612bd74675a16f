"""Generated call functions: the eager hot path with the reference's exact signature.

``*args, **kwargs`` forwarding, attribute reads and a ``try`` cost more than the dispatch
itself on small tensors, so each tuned op gets a ``__call__`` generated for its signature
with the boundaries and targets bound as closure constants:

    def __call__(self, x, weight):
        if not _rd_g0(x, weight):          # the signature guard (see below)
            return _rd_miss((x, weight), {})
        _rd_size = x.shape[1]
        return (_f0 if _rd_size < 512 else _f1 if _rd_size < 2048 else _f2)(x, weight)

There is no compile check in it: Dynamo traces another generated function in its place, the
table written out for the trace (see :func:`substitute` and :func:`traced_lines`). A trace
that is not Dynamo's (a non-strict export) runs the eager path with fake tensors, which the
signature guard refuses, so ``_rd_miss`` sends them to the traced path.

The signature guard is, where torch provides it, one C call: Dynamo's ``TensorGuards``
built from a real call's tensors (dtype, device, dispatch keys, ``requires_grad``, tensor
type, rank and every size but the dispatch dims; strides are not checked). It is stricter
than the table's signature, so a call it refuses but the signature accepts teaches the op
another guard (a few at most: grad mode, ``Parameter`` weights, inference mode). Without
it the guard is Python conditions on the same fields.

With the C-level guard, calls at a repeated size skip the size read and the decision too:
reading one size builds a ``torch.Size`` and costs about as much as the guard itself. When
two calls in a row that passed the guard had the same dispatch sizes, the op pins that size:
a second ``TensorGuards``, exact in every dim, and the function the size runs, stored as one
tuple (one atomic write). Calls passing the pin run that function at once:

        _rd_p = _rd_pin
        if _rd_p is not None and _rd_p[0](x, weight):
            return _rd_p[1](x, weight)

The first call at another size that passes the signature guard drops the pin, so a sweep over
changing sizes pays one failed check at most. A pin refused at its own size (another grad
mode) is kept, so alternating modes do not rebuild it. Real models call an op at one size
many times in a row (every layer of a forward pass; every decode step of a batch), where the
pin is all a call costs.

Other signatures' tables (another dtype, other weight shapes: one op serving several layers)
get their own C-level guard and their own written-out dispatch after the main signature's,
a few of them (``MAX_OTHER_SIGNATURES``); past those, and for calls no guard accepts, the op's
slow path finds the table by the call's signature.
"""

from __future__ import annotations

import inspect
import itertools
from bisect import bisect_right
from typing import Any, Callable, Mapping, Sequence

import torch.compiler
from torch.compiler import is_compiling, is_dynamo_compiling

from .. import compat


#: at most this many C-level guards per table (one per way its callers' tensors differ)
MAX_TENSOR_GUARDS = 3
#: the tables of at most this many other signatures are checked in the generated call
MAX_OTHER_SIGNATURES = 4


def compiling_flag() -> str:
    """The compiling flag alone as generated code reads it: what tells the eager path of a
    trace that is not Dynamo's (``is_compiling()`` itself where this torch has no such flag,
    see :mod:`rangedispatch.compat`)."""
    return "_rd_compiler._is_compiling_flag" if compat.have("compiling_flag") else "_is_compiling()"


def compile_check() -> str:
    """``is_compiling()`` without its two Python calls: Dynamo folds ``is_dynamo_compiling()``
    to True before the flag is read (no guard on it); eagerly the flag says whether an export
    is tracing."""
    return f"(_is_dynamo() or {compiling_flag()})" if compat.have("compiling_flag") else "_is_compiling()"


def inline() -> bool:
    """Whether Dynamo can be told to trace another function in the eager call's place (frame
    strategies, see :func:`substitute`); without them the compile check stays in the eager
    call."""
    return compat.have("frame_strategies")


def plain_params(fn: Callable[..., Any]) -> list[str]:
    """``fn``'s named parameters (not ``*args`` / ``**kwargs``)."""
    try:
        params = inspect.signature(fn).parameters.values()
    except (TypeError, ValueError):
        return []
    return [p.name for p in params if p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)]


def tensor_params(template: Any, names: Sequence[str]) -> list[str]:
    """The parameters that are tensors in ``template``, in signature order."""
    from ..decide.inputs import TensorSpec

    return [n for n in names if isinstance(template.get(n), TensorSpec)]


def dispatch_dims(resized: Mapping[str, Sequence[int]], name: str, rank: int) -> set[int]:
    """The dims of tensor ``name`` that carry dispatch sizes (not guarded)."""
    return {d % max(rank, 1) for d in resized.get(name, ())}


def tensor_guard(tensors: Sequence[Any], template: Any, names: Sequence[str],
                 resized: Mapping[str, Sequence[int]]) -> Callable[..., bool] | None:
    """A C-level check that tensors look like ``tensors`` (see the module doc), every size
    but the dispatch dims checked; ``None`` where this torch has no ``TensorGuards``."""
    sizes = []
    for name, t in zip(names, tensors):
        skip = dispatch_dims(resized, name, t.dim())
        sizes.append([None if i in skip else int(d) for i, d in enumerate(t.shape)])
    check = tensor_check(tensors, sizes)
    if check is None or not any(t.requires_grad for t in tensors):
        return check  # the guard's own requires_grad test keeps training calls out
    # tensors that require grad pass the guard whatever the grad mode; the mode then says
    # whether the call is a training call (guards from plain tensors, the common case, pay nothing)
    import torch

    grad_on = torch.is_grad_enabled
    if any(getattr(template.get(n), "requires_grad", False) for n in names):
        return lambda *ts: grad_on() and check(*ts)
    return lambda *ts: not grad_on() and check(*ts)


def tensor_check(tensors: Sequence[Any], sizes: Sequence[Sequence[int | None]]) -> Callable[..., bool] | None:
    """Dynamo's ``TensorGuards.check`` for tensors like ``tensors`` (dtype, device, dispatch
    keys, ``requires_grad``, type, rank) with the given sizes (``None``: any), strides
    unchecked; ``None`` where this torch has no ``TensorGuards``."""
    make = compat.get("tensor_guards")
    if make is None:
        return None
    try:
        return make(tensors, sizes)
    except Exception:  # noqa: BLE001 - tensors the guard cannot take: the Python guard stays
        return None


def guard_source(template: Any, resized: Mapping[str, Sequence[int]], names: Sequence[str], env: dict[str, Any],
                 tensor_checks: Sequence[Callable[..., bool]] = (), prefix: str = "") -> list[str]:
    """Python conditions that hold exactly when a call has ``template``'s signature: each
    tensor's dtype, device type, rank and every dim but the dispatch dims, and the values of
    plain scalar arguments. Constants go into ``env`` (their names start with ``_rd_`` and
    ``prefix``). With ``tensor_checks`` (see :func:`tensor_guard`) the tensors are checked by
    those instead, any one passing."""
    from ..decide.inputs import TensorSpec

    conds = []
    if tensor_checks:
        tensors = ", ".join(tensor_params(template, names))
        for i, check in enumerate(tensor_checks):
            env[f"_rd_g{prefix}{i}"] = check
        conds.append("(" + " or ".join(f"_rd_g{prefix}{i}({tensors})" for i in range(len(tensor_checks))) + ")")
    for name in names:
        value = template.get(name)
        if isinstance(value, TensorSpec):
            if tensor_checks:
                continue
            env[f"_rd_dt_{name}"] = value.dtype
            conds.append(f"{name}.dtype is _rd_dt_{name}")
            conds.append(f"{name}.is_cuda is {value.device.type == 'cuda'}")
            shape = f"(_rd_s_{name} := {name}.shape)"
            conds.append(f"len({shape}) == {len(value.shape)}")
            skip = dispatch_dims(resized, name, len(value.shape))
            conds += [f"_rd_s_{name}[{i}] == {int(d)}" for i, d in enumerate(value.shape) if i not in skip]
        elif value is None:
            conds.append(f"{name} is None")
        elif isinstance(value, (bool, int, float, str)):
            env[f"_rd_v{prefix}_{name}"] = value
            conds.append(f"{name} == _rd_v{prefix}_{name}")
    return conds if tensor_checks else conds + grad_conditions(template, names, env)


def grad_conditions(template: Any, names: Sequence[str], env: dict[str, Any]) -> list[str]:
    """Python conditions that a call is a training call (grad mode on, these tensors requiring
    grad) exactly when ``template``'s is: inference and training calls have tables of their own.
    For an inference signature: not (grad mode and a floating tensor that requires grad). Only
    where there is no C-level guard (see :func:`tensor_guard`, which handles grad mode itself)."""
    import torch

    from ..decide.inputs import TensorSpec

    specs = [(n, template.get(n)) for n in names if isinstance(template.get(n), TensorSpec)]
    floating = [(n, v) for n, v in specs if v.dtype.is_floating_point or v.dtype.is_complex]
    if not floating:
        return []
    env["_rd_grad_on"] = torch.is_grad_enabled
    if any(v.requires_grad for _, v in floating):
        return ["_rd_grad_on()"] + [f"{n}.requires_grad is {v.requires_grad}" for n, v in floating]
    return [f"not (_rd_grad_on() and ({' or '.join(f'{n}.requires_grad' for n, _ in floating)}))"]


def route_target(bounds: Sequence[int], fns: Sequence[Callable[..., Any]], size: str, env: dict[str, Any],
                 prefix: str = "", indent: str = "    ") -> tuple[list[str], str]:
    """The lines and the expression naming the function a route (``bounds, fns``: segment
    ends and one function per segment) runs for the dispatch size ``size`` (read once into
    ``_rd_size``); functions go into ``env`` under names with ``prefix``."""
    if len(fns) == 1 or not bounds:
        env[f"_fn{prefix}0"] = fns[0]
        return [], f"_fn{prefix}0"
    lines = [] if size == "_rd_size" else [f"{indent}_rd_size = {size}"]
    if len(bounds) <= 4:  # a chain of comparisons beats bisect for a few bounds
        for i, fn in enumerate(fns):
            env[f"_f{prefix}{i}"] = fn
        chain = " else ".join(f"_f{prefix}{i} if _rd_size < {int(b)}" for i, b in enumerate(bounds))
        return lines, f"({chain} else _f{prefix}{len(bounds)})"
    env[f"_fns{prefix}"], env[f"_bounds{prefix}"] = tuple(fns), tuple(bounds)
    return lines, f"_fns{prefix}[_bisect(_bounds{prefix}, _rd_size)]"


def traced_lines(tensors: Sequence[str], names: Sequence[str], sig: inspect.Signature,
                 tree: tuple[Sequence[tuple[str, int]], Any], key: str, env: dict[str, Any],
                 traced_call: str, guarded: bool = False, label: str = "op",
                 constants: Mapping[str, Any] | None = None, *, hooks: Mapping[str, Any]) -> list[str]:
    """The body Dynamo traces for a signature whose tensors are named parameters: nested
    ``branch`` (``torch.cond``) calls on the dispatch sizes, each branch a closure taking the
    tensors as operands and the other arguments from the call. ``tree`` is ``(axes, node)``:
    the ``(tensor, dim)`` of every dispatch dimension, and the decision, where a node is a
    function (a leaf) or ``(axis index, segment ends, children)``. ``tensors`` are the
    parameters that are tensors, the branches' operands. Nothing in it reads the op, so the
    compiled frame guards only on the candidates' code and the cond itself. A call whose
    tensors have another dtype or device type than the table's (or an opaque op) takes
    ``traced_call``, the source of the general traced path. Empty when the signature does not
    allow it (``*args``, ``**kwargs``, a dispatch tensor that is not a named tensor
    parameter). With ``guarded`` (``compiled_dispatch="guards"``), Dynamo traces
    the decision as Python conditionals on the sizes instead, so it guards the range and the
    graph holds the winner alone; ``torch.export`` still takes the cond tree (the choice is a
    trace-time constant, :func:`~rangedispatch.trace.traced.traced_form`). Without it, under
    ``torch.compile`` segments ending at or below 2 (the reference's gap below the first tuned
    size) are decided by a Python test on the sizes, which Dynamo settles without a guard
    (sizes 0 and 1 get graphs of their own, every other size is known to be at least 2): a
    table whose only split is such a gap compiles its winner with no cond and no ``branch``
    traced, so no guard on it either. That test asks Dynamo whether it traces the lines where
    the eager path runs them too (without frame strategies, see :func:`inline`); elsewhere only
    Dynamo runs them (:func:`substitute`), and a global the lines read is a guard. Where more
    than one candidate runs from size 2 on, and every parameter that is not a tensor has a
    plain value in ``constants`` (the values the table was tuned with: ``None``, a bool, an
    int, a finite float or a string), the lines first offer ``torch.compile`` one call of the
    table's lowered op for calls with those values (forms 4 and 5 of
    :func:`~rangedispatch.trace.traced.traced_form`; ``label`` names the op): the cond tree is then
    built below Dynamo, which guards none of it."""
    branch, lowered_ops, traced_form = hooks["branch"], hooks["lowered_ops"], hooks["traced_form"]
    axes, root = tree
    if any(p.kind in (p.VAR_POSITIONAL, p.VAR_KEYWORD) for p in sig.parameters.values()):
        return []
    if not compat.have("constant_result"):  # the general traced path runs the op outside the graph
        return []
    if not tensors or (isinstance(root, tuple) and any(t not in tensors for t, _ in axes)):
        return []
    env.update({"_rd_form": traced_form, "_rd_branch": branch})
    call = ", ".join(n if sig.parameters[n].kind is not inspect.Parameter.KEYWORD_ONLY else f"{n}={n}" for n in names)
    ops = ", ".join(tensors)
    # the op's key is a literal (a constant of the code, no guard); another dtype or device
    # type has its own table, which the general traced path finds (Dynamo guards dtypes and
    # devices anyway, so passing them adds no guard)
    kinds = "".join(f", ({name!r}, {name}.dtype, {name}.device.type)" for name in tensors)
    fixed = {n: (constants or {}).get(n, _MISSING) for n in names if n not in tensors}
    lowered = not guarded and isinstance(above(root, 2), tuple) and all(plain_constant(v) for v in fixed.values())
    lines: list[str] = [f"        _rd_f = _rd_form({key!r}, {lowered}{kinds})",
                        "        if _rd_f == 0:", f"            return {traced_call}"]
    if lowered:
        keyword = [n for n in names if sig.parameters[n].kind is inspect.Parameter.KEYWORD_ONLY]
        env["_rd_low"], env["_rd_lows"] = lowered_ops(tree, names, label, fixed, keyword)
        same = "".join(f" and {n} is {v!r}" if v is None or isinstance(v, bool) else f" and {n} == {v!r}"
                       for n, v in fixed.items())
        lines += [f"        if _rd_f == 4{same}:", f"            return _rd_low([{ops}])",
                  f"        if _rd_f == 5{same}:", f"            return tuple(_rd_lows([{ops}]))"]
    count = [0, 0]  # leaves, nodes

    def emit(node: Any) -> str:
        if not isinstance(node, tuple):
            i = count[0]
            count[0] += 1
            env[f"_t{i}"] = node
            lines.append(f"        def _rd_b{i}({ops}):")
            lines.append(f"            return _t{i}({call})")
            return f"_rd_b{i}"
        axis, his, children = node
        kids = [emit(child) for child in children]
        j = count[1]
        count[1] += 1
        tensor, dim = axes[axis]
        size = f"{tensor}.size({int(dim)})"  # not .shape: Dynamo guards the tensor's type for that
        later = kids[-1]
        for i in range(len(kids) - 2, -1, -1):  # the tail first: _rd_n{j}_{i} decides segment i or later
            lines.append(f"        def _rd_n{j}_{i}({ops}):")
            lines.append(f"            return _rd_branch({size} < {int(his[i])}, {kids[i]}, {later}, ({ops},))")
            later = f"_rd_n{j}_{i}"
        return later

    top = emit(root)
    if guarded:
        leaves = itertools.count()  # the same leaves, in the same order as emit's
        chain = conditional(root, lambda _: f"_rd_b{next(leaves)}",
                            lambda axis: f"{axes[axis][0]}.size({int(axes[axis][1])})")
        lines.append("        if _rd_f == 2:")
        lines.append(f"            return {chain}({ops})")
    elif (floor := above(root, 2)) != root:  # torch.compile: the segments below 2 decided in Python
        small = " or ".join(f"{t}.size({int(d)}) < 2" for t, d in axes)
        from_two = emit(floor)
        lines.append(f"        if _rd_f == 3{'' if inline() else ' and _is_dynamo()'} and not ({small}):")
        lines.append(f"            return {from_two}({ops})")
    lines.append(f"        return {top}({ops})")
    return lines


_MISSING = object()


def plain_constant(value: Any) -> bool:
    """Whether ``value`` can be written as a literal the traced lines compare a call's argument
    with (``None``, a bool, an int, a finite float, a string)."""
    if isinstance(value, float):
        return value == value and value not in (float("inf"), float("-inf"))
    return value is None or isinstance(value, (bool, int, str))


def above(node: Any, floor: int) -> Any:
    """The decision tree for sizes from ``floor`` on in every dimension: the segments ending at
    or below it dropped.

    Example:
        >>> above((0, [1, 64], ["ref", "a", "b"]), 2)
        (0, [64], ['a', 'b'])
        >>> above((0, [1], ["ref", "a"]), 2)
        'a'
    """
    if not isinstance(node, tuple):
        return node
    axis, his, children = node
    keep = [i for i in range(len(children)) if i == len(children) - 1 or his[i] > floor]
    kids = [above(children[i], floor) for i in keep]
    return kids[0] if len(kids) == 1 else (axis, [his[i] for i in keep[:-1]], kids)


def eager_lines(eager_tree: tuple[Sequence[tuple[str, int]], Any], names: Sequence[str], sig: inspect.Signature,
                conds: Sequence[str], env: dict[str, Any]) -> tuple[list[str], str, list[str]] | None:
    """The eager dispatch of a decision over several dimensions: the lines reading each size
    once, the nested conditional expression naming the function to call, and the names of
    the sizes it compares. ``None`` when a dispatch tensor is not a plain named parameter."""
    axes, root = eager_tree
    plain = {n for n in names if sig.parameters[n].kind in (inspect.Parameter.POSITIONAL_OR_KEYWORD,
                                                               inspect.Parameter.POSITIONAL_ONLY,
                                                               inspect.Parameter.KEYWORD_ONLY)}
    if any(t not in plain for t, _ in axes):
        return None
    joined = " ".join(conds)
    lines = []
    shapes: dict[str, str] = {}  # a torch.Size is built per .shape read: one read per tensor
    for tensor, _ in axes:
        if tensor not in shapes:
            shapes[tensor] = f"_rd_s_{tensor}"
            if f"_rd_s_{tensor} :=" not in joined:
                lines.append(f"    _rd_s_{tensor} = {tensor}.shape")
    for i, (tensor, dim) in enumerate(axes):
        lines.append(f"    _rd_a{i} = {shapes[tensor]}[{int(dim)}]")
    numbers = itertools.count()

    def leaf(fn: Any) -> str:
        name = f"_rd_e{next(numbers)}"
        env[name] = fn
        return name

    return lines, conditional(root, leaf, lambda axis: f"_rd_a{axis}"), [f"_rd_a{i}" for i in range(len(axes))]


def conditional(node: Any, leaf: Callable[[Any], str], size: Callable[[int], str]) -> str:
    """A decision tree (a leaf, or ``(axis, segment ends, children)``) written as one nested
    conditional expression; ``leaf(node)`` names a leaf (depth first, left to right) and
    ``size(axis)`` the size an axis compares.

    Example:
        >>> conditional((0, [64], ["a", (1, [8], ["b", "c"])]), str, lambda axis: f"n{axis}")
        '(a if n0 < 64 else (b if n1 < 8 else c))'
    """
    if not isinstance(node, tuple):
        return leaf(node)
    axis, his, children = node
    kids = [conditional(child, leaf, size) for child in children]
    chain = " else ".join(f"{kid} if {size(axis)} < {int(his[i])}" for i, kid in enumerate(kids[:-1]))
    return f"({chain} else {kids[-1]})" if chain else kids[-1]


def mark_frames(fn: Callable[..., Any], callees: bool) -> None:
    """Mark ``fn``'s code so that Dynamo's frame hook runs its frames as they are, and with
    ``callees`` every frame they call too (what ``torch._dynamo.disable`` gives, without a
    wrapper: eager calls pay nothing). Only where :func:`inline`."""
    compat.get("frame_strategies")(fn.__code__, callees)


def substitute(eager: Callable[..., Any], traced: Callable[..., Any]) -> None:
    """Make Dynamo trace ``traced`` where a traced frame calls ``eager``, so that ``eager``
    needs no compile check: Dynamo inlines a function's ``_torchdynamo_inline`` in its place
    (the attribute ``torch.compile`` gives its own wrappers). A frame that runs ``eager``
    under Dynamo's frame hook without a trace around it (the op called from code Dynamo
    skipped) runs it as it is, and the candidate it calls is compiled as a frame of its own:
    the eager path itself never becomes a graph."""
    eager._torchdynamo_inline = traced  # type: ignore[attr-defined]
    mark_frames(eager, callees=False)


def tuned_values(template: Any, sig: inspect.Signature) -> dict[str, Any] | None:
    """The value of every parameter that is not a tensor in ``template`` (its default where
    the example left it out); ``None`` without a template."""
    from ..decide.inputs import TensorSpec

    if template is None:
        return None
    values = {}
    for name, p in sig.parameters.items():
        if name in template.positions or name in template.kwargs:
            value = template.get(name)
            if not isinstance(value, TensorSpec):
                values[name] = value
        elif p.default is not p.empty:
            values[name] = p.default
    return values


def make_pin(tensors: Sequence[Any], fn: Callable[..., Any]) -> tuple[Callable[..., bool], Callable[..., Any]] | None:
    """``(check, fn)``: a C-level guard passing exactly for tensors like ``tensors`` with their
    sizes (every dim), and the function calls passing it run; ``None`` without the guard."""
    check = tensor_check(tensors, [list(t.shape) for t in tensors])
    return None if check is None else (check, fn)


def generate_call(
    reference: Callable[..., Any],
    *,
    tensor: str | None,
    dim: int,
    bounds: Sequence[int],
    fns: Sequence[Callable[..., Any]],
    traced: Callable[..., Any] | None,
    template: Any = None,
    resized: Mapping[str, Sequence[int]] | None = None,
    miss: Callable[..., Any] | None = None,
    record: Callable[[int], None] | None = None,
    tensor_checks: Sequence[Callable[..., bool]] = (),
    tree: tuple[Sequence[tuple[str, int]], Any] | None = None,
    key: str | None = None,
    eager_tree: tuple[Sequence[tuple[str, int]], Any] | None = None,
    guarded: bool = False,
    others: Sequence[tuple[Any, Sequence[Callable[..., bool]], Sequence[int], Sequence[Callable[..., Any]]]] = (),
    tensors: Sequence[str] = (),
    disabled: tuple[Any, Callable[..., Any]] | None = None,
    hooks: Mapping[str, Any] | None = None,
) -> Callable[..., Any] | None:
    """A ``__call__(self, ...)`` for ``reference``'s signature, or ``None`` if the signature
    cannot be reproduced (builtins, odd defaults); the generic path is used then.

    With ``traced=None`` the result is a plain function without ``self`` and without the
    compile check: a custom op's kernel, which only ever sees real tensors.

    With a ``template``, a call whose signature differs from it (dtypes, devices, ranks,
    non-dispatch dims, scalar values) goes to ``miss(args_tuple, kwargs_dict)`` instead.
    With ``record``, every call passes its dispatch size to ``record(size)`` first.
    ``tensor_checks`` replace the template's tensor conditions (see :func:`tensor_guard`).
    With ``tree`` (the dispatch dimensions and the traced decision), the op's ``key`` and the
    trace layer's ``hooks`` (``trace.traced.TRACE_HOOKS``: ``branch``, ``lowered_ops``,
    ``traced_form``, which the written lines call), Dynamo traces the dispatch written out for
    this signature (see :func:`traced_lines`) instead of
    the general traced path: fewer guards on every compiled call. With ``eager_tree`` (the
    same form, leaves the functions eager calls run: a grid op's decision), the eager dispatch
    is written out as one nested conditional expression over the dimensions' sizes. ``others``
    are the tables of other signatures, ``(template, C-level guards, bounds, fns)`` each:
    with the C-level guard, a call the main guard refuses tries those before ``miss``.
    ``tensors`` name the tensor parameters for the traced dispatch where there is no
    ``template`` (a loaded table no call has matched yet). ``disabled`` is a custom op's
    kernel check, ``(devices, fallback)``: while the live set ``devices`` is not empty (a
    device's kernel was turned off with ``set_kernel_enabled``), calls go to
    ``fallback(args_tuple, kwargs_dict)``; the function is then marked ``__rd_kernel__`` (it
    keeps the custom op's own kernel semantics and can be installed without torch's wrapper)."""
    try:
        sig = inspect.signature(reference)
    except (TypeError, ValueError):
        return None
    names = list(sig.parameters)
    if "self" in names or any(n.startswith("_rd_") for n in names):
        return None
    env: dict[str, Any] = {
        "_is_compiling": is_compiling,
        "_is_dynamo": is_dynamo_compiling,
        "_rd_compiler": torch.compiler,
        "_traced": traced,
        "_bisect": bisect_right,
    }
    params, call, pos, kw = [], [], [], []
    seen_kwonly_marker = False
    for i, p in enumerate(sig.parameters.values()):
        default = ""
        if p.default is not p.empty:
            env[f"_rd_d{i}"] = p.default
            default = f"=_rd_d{i}"
        if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD):
            params.append(f"{p.name}{default}")
            call.append(p.name)
            pos.append(p.name)
        elif p.kind is p.VAR_POSITIONAL:
            params.append(f"*{p.name}")
            call.append(f"*{p.name}")
            pos.append(f"*{p.name}")
            seen_kwonly_marker = True
        elif p.kind is p.KEYWORD_ONLY:
            if not seen_kwonly_marker:
                params.append("*")
                seen_kwonly_marker = True
            params.append(f"{p.name}{default}")
            call.append(f"{p.name}={p.name}")
            kw.append(f"{p.name!r}: {p.name}")
        else:  # VAR_KEYWORD
            params.append(f"**{p.name}")
            call.append(f"**{p.name}")
            kw.append(f"**{p.name}")
    positional_only = [p.name for p in sig.parameters.values() if p.kind is p.POSITIONAL_ONLY]
    if positional_only:
        last = max(i for i, p in enumerate(sig.parameters.values()) if p.kind is p.POSITIONAL_ONLY)
        params.insert(last + 1, "/")
    args_src = ", ".join(call)
    pos_src = "(" + "".join(f"{a}, " for a in pos) + ")"
    # with the C-level guard only Dynamo needs the check here: the fake tensors of a
    # non-strict export fail that guard, and ``miss`` sends them to the traced path
    checked = bool(tensor_checks) and miss is not None
    compiling = "_is_dynamo()" if checked else compile_check()
    inlined = inline()
    traced_written = False
    traced_src: list[str] = []
    if traced is None:
        lines = [f"def __call__({', '.join(params)}):"]
        if disabled is not None:  # an empty set: one truth test per call
            env["_rd_off"], env["_rd_offcall"] = disabled
            lines += ["    if _rd_off:", f"        return _rd_offcall({pos_src}, {{{', '.join(kw)}}})"]
    else:
        head = f"(self, {', '.join(params)}):" if params else "(self):"
        general = f"_traced(self, {pos_src}, {{{', '.join(kw)}}})"
        operands = tensor_params(template, names) if template is not None else list(tensors)
        written = (traced_lines(operands, names, sig, tree, key, env, general, guarded,
                                getattr(reference, "__name__", "op"), tuned_values(template, sig), hooks=hooks)
                   if tree and key and hooks else [])
        traced_written = bool(written)
        body = written or [f"        return {general}"]
        lines = [f"def __call__{head}"]
        if inlined:  # Dynamo traces a function of its own (see :func:`substitute`); the eager path
            # checks only the compiling flag of traces that are not Dynamo's (a non-strict export),
            # which take the general traced path
            traced_src = [f"def _rd_in_graph{head}"] + [line[4:] for line in body]
            if not checked:
                lines += [f"    if {compiling_flag()}:", f"        return {general}"]
        elif written:
            # a function of its own, defined where it runs: branches reading other parameters would make
            # those cells of every eager call, and the body inline costs ~50 ns per eager call (dev CPU);
            # defined in the branch, its code is a constant of this one, so Dynamo guards no global for it
            lines += [f"    if {compiling}:", f"        def _rd_traced{head}"]
            lines += [f"    {line}" for line in written]
            lines.append(f"        return _rd_traced(self{', ' if args_src else ''}{args_src})")
        else:
            lines += [f"    if {compiling}:", *body]
    plain = plain_params(reference)
    conds = (guard_source(template, resized or {}, plain, env, tensor_checks)
             if template is not None and miss is not None else [])
    dispatchable = tensor is not None and tensor in names and sig.parameters[tensor].kind not in (
        inspect.Parameter.VAR_POSITIONAL, inspect.Parameter.VAR_KEYWORD)
    if tensor is not None and not dispatchable and (len(fns) > 1 or record is not None):
        return None
    written_eager = eager_lines(eager_tree, names, sig, conds, env) if eager_tree is not None else None
    sizes = written_eager[2] if written_eager else ["_rd_size"]  # what the decision compares
    # a pin: the C-level guard of the last size seen twice in a row, exact in every dim, and
    # the function that size runs (see the module doc); only with the C-level guard, and not
    # while sizes are recorded (every call must reach the recorder)
    pinned = bool(tensor_checks) and bool(conds) and record is None and bool(written_eager or len(fns) > 1)
    pin_args = ", ".join(tensor_params(template, plain)) if pinned else ""
    if pinned:
        env.update({"_rd_pin": None, "_rd_make_pin": make_pin})
        lines.insert(1, "    global _rd_pin, " + ", ".join(f"_rd_l{i}" for i in range(len(sizes))))
        lines.append("    _rd_p = _rd_pin")
        lines.append(f"    if _rd_p is not None and {' and '.join(conds[1:] + [f'_rd_p[0]({pin_args})'])}:")
        lines.append(f"        return _rd_p[1]({args_src})")
    if conds:
        env["_rd_miss"] = miss
        lines.append(f"    if not ({' and '.join(conds)}):")
        if tensor_checks:  # the other signatures' tables, each behind its own C-level guard
            for j, (other, checks, other_bounds, other_fns) in enumerate(others):
                prefix = f"o{j}_"
                other_conds = guard_source(other, resized or {}, plain, env, checks, prefix)
                body, other_target = route_target(other_bounds, other_fns, f"{tensor}.shape[{int(dim)}]", env,
                                                  prefix, "            ")
                lines.append(f"        if {' and '.join(other_conds)}:")
                lines += body
                lines.append(f"            return {other_target}({args_src})")
        lines.append(f"        return _rd_miss({pos_src}, {{{', '.join(kw)}}})")
    shape = f"_rd_s_{tensor}" if conds and f"_rd_s_{tensor} :=" in " ".join(conds) else f"{tensor}.shape"
    size = f"{shape}[{int(dim)}]"
    if record is not None and dispatchable:
        env["_rd_rec"] = record
        lines.append(f"    _rd_size = {size}")
        lines.append("    _rd_rec(_rd_size)")
        size = "_rd_size"
    if written_eager:
        lines += written_eager[0]
        target = written_eager[1]
    else:
        body, target = route_target(bounds if tensor is not None else (), fns, size, env)
        lines += body
    if pinned:
        for i in range(len(sizes)):
            env[f"_rd_l{i}"] = None
        lines.append(f"    _rd_t = {target}")
        lines.append(f"    if {' and '.join(f'{a} == _rd_l{i}' for i, a in enumerate(sizes))}:")
        lines.append("        if _rd_p is None:")  # a pin refused for another reason (grad mode) stays
        lines.append(f"            _rd_pin = _rd_make_pin(({pin_args},), _rd_t)")
        lines.append("    else:")
        lines.append(f"        {', '.join(f'_rd_l{i}' for i in range(len(sizes)))} = {', '.join(sizes)}")
        lines.append("        if _rd_p is not None:")
        lines.append("            _rd_pin = None")
        target = "_rd_t"
    lines.append(f"    return {target}({args_src})")
    source = "\n".join(lines + traced_src)
    exec(compile(source, f"<rangedispatch call of {getattr(reference, '__name__', 'op')}>", "exec"), env)
    fn = env.pop("__call__")
    if traced_src:
        substitute(fn, env["_rd_in_graph"])
    fn.__rd_source__ = source
    fn.__rd_kernel__ = traced is None and disabled is not None
    fn.__rd_traced__ = traced_written  # Dynamo traces the table written out
    return fn
