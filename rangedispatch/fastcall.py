"""Generated call functions: the eager hot path with the reference's exact signature.

``*args, **kwargs`` forwarding, attribute reads and a ``try`` cost more than the dispatch
itself on small tensors, so each tuned op gets a ``__call__`` generated for its signature
with the boundaries and targets bound as closure constants:

    def __call__(self, x, weight):
        if _is_compiling():
            return _traced(self, (x, weight), {})
        return _fns[_bisect(_bounds, x.shape[1])](x, weight)
"""

from __future__ import annotations

import inspect
from bisect import bisect_right
from typing import Any, Callable, Sequence

from torch.compiler import is_compiling


def guard_source(template: Any, resized: dict[str, int], names: Sequence[str], env: dict[str, Any]) -> list[str]:
    """Python conditions that hold exactly when a call has ``template``'s signature: each
    tensor's dtype, device type, rank and every dim but the dispatch dims, and the values of
    plain scalar arguments. Constants go into ``env``."""
    from .inputs import TensorSpec

    conds = []
    for name in names:
        value = template.get(name)
        if isinstance(value, TensorSpec):
            env[f"_rd_dt_{name}"] = value.dtype
            conds.append(f"{name}.dtype is _rd_dt_{name}")
            conds.append(f"{name}.is_cuda is {value.device.type == 'cuda'}")
            shape = f"(_rd_s_{name} := {name}.shape)"
            conds.append(f"len({shape}) == {len(value.shape)}")
            skip = resized.get(name)
            skip = None if skip is None else skip % max(len(value.shape), 1)
            conds += [f"_rd_s_{name}[{i}] == {int(d)}" for i, d in enumerate(value.shape) if i != skip]
        elif value is None:
            conds.append(f"{name} is None")
        elif isinstance(value, (bool, int, float, str)):
            env[f"_rd_v_{name}"] = value
            conds.append(f"{name} == _rd_v_{name}")
    return conds


def generate_call(
    reference: Callable[..., Any],
    *,
    tensor: str | None,
    dim: int,
    bounds: Sequence[int],
    fns: Sequence[Callable[..., Any]],
    traced: Callable[..., Any] | None,
    template: Any = None,
    resized: dict[str, int] | None = None,
    miss: Callable[..., Any] | None = None,
    record: Callable[[int], None] | None = None,
) -> Callable[..., Any] | None:
    """A ``__call__(self, ...)`` for ``reference``'s signature, or ``None`` if the signature
    cannot be reproduced (builtins, odd defaults); the generic path is used then.

    With ``traced=None`` the result is a plain function without ``self`` and without the
    compile check: a custom op's kernel, which only ever sees real tensors.

    With a ``template``, a call whose signature differs from it (dtypes, devices, ranks,
    non-dispatch dims, scalar values) goes to ``miss(args_tuple, kwargs_dict)`` instead.
    With ``record``, every call passes its dispatch size to ``record(size)`` first."""
    try:
        sig = inspect.signature(reference)
    except (TypeError, ValueError):
        return None
    names = list(sig.parameters)
    if "self" in names or any(n.startswith("_rd_") for n in names):
        return None
    env: dict[str, Any] = {
        "_is_compiling": is_compiling,
        "_traced": traced,
        "_bisect": bisect_right,
        "_bounds": tuple(bounds),
        "_fns": tuple(fns),
        "_fn0": fns[0],
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
    if traced is None:
        lines = [f"def __call__({', '.join(params)}):"]
    else:
        lines = [
            f"def __call__(self, {', '.join(params)}):" if params else "def __call__(self):",
            "    if _is_compiling():",
            f"        return _traced(self, {pos_src}, {{{', '.join(kw)}}})",
        ]
    plain = [n for n in names if sig.parameters[n].kind not in (inspect.Parameter.VAR_POSITIONAL,
                                                                 inspect.Parameter.VAR_KEYWORD)]
    conds = guard_source(template, resized or {}, plain, env) if template is not None and miss is not None else []
    if conds:
        env["_rd_miss"] = miss
        lines.append(f"    if not ({' and '.join(conds)}):")
        lines.append(f"        return _rd_miss({pos_src}, {{{', '.join(kw)}}})")
    dispatchable = tensor is not None and tensor in names and sig.parameters[tensor].kind not in (
        inspect.Parameter.VAR_POSITIONAL, inspect.Parameter.VAR_KEYWORD)
    if tensor is not None and not dispatchable and (len(fns) > 1 or record is not None):
        return None
    shape = f"_rd_s_{tensor}" if conds and f"_rd_s_{tensor} :=" in " ".join(conds) else f"{tensor}.shape"
    size = f"{shape}[{int(dim)}]"
    if record is not None and dispatchable:
        env["_rd_rec"] = record
        lines.append(f"    _rd_size = {size}")
        lines.append("    _rd_rec(_rd_size)")
        size = "_rd_size"
    if len(fns) == 1 or tensor is None:
        lines.append(f"    return _fn0({args_src})")
    else:
        lines.append(f"    return _fns[_bisect(_bounds, {size})]({args_src})")
    source = "\n".join(lines)
    namespace: dict[str, Any] = {}
    exec(compile(source, f"<rangedispatch call of {getattr(reference, '__name__', 'op')}>", "exec"), env, namespace)
    fn = namespace["__call__"]
    fn.__rd_source__ = source
    return fn
