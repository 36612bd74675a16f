"""Tuning inputs: a template of the op's call, re-sized along the dispatch dimension.

The template comes from the first real call, from example inputs given to ``tune``, or
(under ``torch.compile``) from fake tensors' size hints. For each sample size the
dispatch tensor and the tensors tied to it get that size; every tensor is then produced by
the user's ``input_gen_fns`` entry, by re-using the template's real data when its shape is
unchanged (so indices and masks keep their values), or by a dtype-aware default.
"""

from __future__ import annotations

import inspect
import logging
import re
import warnings
from dataclasses import dataclass
from typing import Any, Callable, Mapping, Sequence

from .config import dims_by_tensor
from ..errors import ConfigError, ConfigTypeError

log = logging.getLogger("rangedispatch")


@dataclass(frozen=True)
class TensorSpec:
    """Shape, dtype and device of one tensor argument; ``data`` is the real tensor if any."""

    shape: tuple[int, ...]
    dtype: Any
    device: Any
    data: Any = None
    requires_grad: bool = False  # a training call's: it requires grad, with grad mode on

    @classmethod
    def of(cls, t: Any) -> TensorSpec:
        import torch

        from ..compat import is_fake

        shape = tuple(_hint(s) for s in t.shape)
        fake = is_fake(t) or t.device.type == "meta" or shape != tuple(t.shape)
        grad = bool(t.requires_grad) and torch.is_grad_enabled()
        return cls(shape, t.dtype, t.device, None if fake else t, grad)

    def describe(self) -> str:
        return f"{str(self.dtype).replace('torch.', '')}{list(self.shape)}"


_UNBACKED_HINT = 64


def _hint(size: Any) -> int:
    if isinstance(size, int):
        return size
    node = getattr(size, "node", None)
    hint = getattr(node, "hint", None) if node is not None else None
    if hint is None and node is not None:  # unbacked: the tracer's optimisation hint, if any
        from torch.fx.experimental import symbolic_shapes

        try:
            if hasattr(symbolic_shapes, "optimization_hint"):  # torch >= 2.12
                hint = symbolic_shapes.optimization_hint(size, fallback=_UNBACKED_HINT)
            else:
                hint = symbolic_shapes.size_hint(size, allow_none=True)
        except Exception:
            hint = None
    return int(hint if hint is not None else _UNBACKED_HINT)


@dataclass(frozen=True)
class CallTemplate:
    """The op's call with every tensor replaced by its :class:`TensorSpec`."""

    args: tuple[Any, ...]
    kwargs: Mapping[str, Any]
    positions: Mapping[str, int]  # parameter name -> position in ``args`` (if positional)

    @classmethod
    def from_call(cls, fn: Callable[..., Any], args: Sequence[Any], kwargs: Mapping[str, Any]) -> CallTemplate:
        import torch

        convert = lambda v: TensorSpec.of(v) if isinstance(v, torch.Tensor) else v  # noqa: E731
        names = _positional_names(fn, len(args))
        return cls(
            tuple(convert(a) for a in args),
            {k: convert(v) for k, v in kwargs.items()},
            {name: i for i, name in enumerate(names)},
        )

    @property
    def names(self) -> list[str]:
        """Parameter names of the positional arguments, in order."""
        return sorted(self.positions, key=self.positions.__getitem__)

    @property
    def grad_names(self) -> list[str]:
        """The tensors of a training call: they require grad (with grad mode on)."""
        items = [(n, self.args[i]) for n, i in self.positions.items()] + list(self.kwargs.items())
        return [n for n, v in items if isinstance(v, TensorSpec) and v.requires_grad]

    def get(self, name: str) -> Any:
        if name in self.positions:
            return self.args[self.positions[name]]
        return self.kwargs.get(name)

    def dispatch_size(self, spec: Any) -> Any:
        """The example's dispatch size (a tuple of sizes, one per axis, for a grid spec)."""
        axes = getattr(spec, "axes", None)
        if axes is not None:
            return tuple(self.get(a.tensor).shape[a.dim] for a in axes)
        return self.get(spec.tensor).shape[spec.dim]

    def check(self, spec: Any) -> None:
        """Raise if the dispatch tensor is missing or the dimension does not exist."""
        if spec is None:
            return
        for name, dim in spec.resized:
            value = self.get(name)
            if not isinstance(value, TensorSpec):
                raise ConfigTypeError(
                    f"Expected a Tensor for dispatch tensor '{name}' but got "
                    f"{type(value).__name__}; dispatch on a tensor parameter"
                )
            if not -len(value.shape) <= dim < len(value.shape):
                raise ConfigError(
                    f"Dimension index {dim} out of range for tensor '{name}' with shape {list(value.shape)}"
                )

    def signature(self, spec: Any) -> str:
        """Shapes (dispatch dims as ``*``), dtypes and devices: part of the cache key."""
        resized = dims_by_tensor(spec)
        parts = []
        items = [(n, self.args[i]) for n, i in self.positions.items()] + list(self.kwargs.items())
        for name, value in items:
            if isinstance(value, TensorSpec):
                dims = [str(d) for d in value.shape]
                for dim in resized.get(name, ()):
                    dims[dim] = "*"
                grad = "+grad" if value.requires_grad else ""  # training calls get tables of their own
                parts.append(f"{name}:{str(value.dtype).replace('torch.', '')}[{', '.join(dims)}]@{value.device.type}{grad}")
            elif isinstance(value, (int, float, bool, str, type(None))):
                parts.append(f"{name}={value!r}")
            else:
                parts.append(f"{name}:{type(value).__name__}")
        return ",".join(parts)


_TENSOR_PART = re.compile(r"(\w+):(\w+)\[[^\]]*\]@(\w+)")


def signature_kinds(signature: str) -> dict[str, tuple[Any, str]]:
    """Each tensor's ``(dtype, device type)`` by name, read back from a signature written by
    :meth:`CallTemplate.signature`.

    Example:
        >>> signature_kinds("x:float32[*, 8]@cpu,scale=2.0")
        {'x': (torch.float32, 'cpu')}
    """
    import torch

    return {name: (getattr(torch, dtype, None), device) for name, dtype, device in _TENSOR_PART.findall(signature)}


def _positional_names(fn: Callable[..., Any], count: int) -> list[str]:
    try:
        params = list(inspect.signature(fn).parameters.values())
    except (TypeError, ValueError):
        return [f"arg{i}" for i in range(count)]
    names = []
    for i in range(count):
        if i < len(params) and params[i].kind in (params[i].POSITIONAL_ONLY, params[i].POSITIONAL_OR_KEYWORD):
            names.append(params[i].name)
        else:
            names.append(f"arg{i}")
    return names


class InputFactory:
    """Makes real tuning inputs for a dispatch size from a :class:`CallTemplate` (for a grid
    spec, a tuple of sizes: one per axis)."""

    def __init__(
        self,
        template: CallTemplate,
        spec: Any,
        input_gen_fns: Mapping[str, Callable[..., Any]],
        *,
        op_name: str,
    ) -> None:
        self.template = template
        self.spec = spec
        self.gen_fns = dict(input_gen_fns)
        self.op_name = op_name
        self._warned: set[str] = set()

    def make(self, size: Any) -> tuple[tuple[Any, ...], dict[str, Any]]:
        resized: dict[str, dict[int, int]] = {}  # tensor -> {dim: size}
        if self.spec is not None and size is not None:
            axes = getattr(self.spec, "axes", None)
            per_axis = zip(axes, size) if axes is not None else [(self.spec, size)]
            for axis, value in per_axis:
                for name, dim in axis.resized:
                    resized.setdefault(name, {})[dim] = int(value)
        names = {i: n for n, i in self.template.positions.items()}
        args = tuple(
            self._value(names.get(i, f"arg{i}"), v, resized) for i, v in enumerate(self.template.args)
        )
        kwargs = {k: self._value(k, v, resized) for k, v in self.template.kwargs.items()}
        return args, kwargs

    def _value(self, name: str, value: Any, resized: Mapping[str, Mapping[int, int]]) -> Any:
        if not isinstance(value, TensorSpec):
            return value
        shape = list(value.shape)
        for dim, size in resized.get(name, {}).items():
            shape[dim] = size
        shape_t = tuple(shape)
        gen = self.gen_fns.get(name)
        if gen is not None:
            made = self._generate(name, gen, value, shape_t)
            if made is not None:
                return made
        if value.data is not None and shape_t == value.shape:
            return value.data
        return default_tensor(value, shape_t)

    def _generate(self, name: str, gen: Callable[..., Any], spec: TensorSpec, shape: tuple[int, ...]) -> Any:
        import torch

        try:
            like = torch.empty(shape, dtype=spec.dtype, device=spec.device)
            out = gen(like)
        except Exception as exc:  # a generator for another device, say: fall back, once per name
            self._warn(name, f"input_gen_fns[{name!r}] raised {type(exc).__name__}: {exc}; "
                             "using rangedispatch's default generator for it")
            return None
        if not isinstance(out, torch.Tensor) or tuple(out.shape) != shape:
            got = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
            self._warn(name, f"input_gen_fns[{name!r}] returned {got}, expected a tensor of shape "
                             f"{shape}; generators must keep the shape of the tensor they are given")
            return None
        if out.device != spec.device:
            self._warn(name, f"input_gen_fns[{name!r}] made a tensor on {out.device} but the op is "
                             f"called with {spec.device}; moving it there")
            out = out.to(spec.device)
        return out

    def _warn(self, name: str, message: str) -> None:
        if name not in self._warned:
            self._warned.add(name)
            warnings.warn(f"{self.op_name}: {message}", RuntimeWarning, stacklevel=4)


def default_tensor(spec: TensorSpec, shape: tuple[int, ...]) -> Any:
    """Random values that look like the template: randn for floats, the template's value
    range for integers, its density for bools."""
    import torch

    dtype, device, data = spec.dtype, spec.device, spec.data
    if dtype.is_floating_point or dtype.is_complex:
        return torch.randn(shape, device=device).to(dtype) if dtype.itemsize < 2 else torch.randn(shape, dtype=dtype, device=device)
    if dtype == torch.bool:
        density = float(data.float().mean()) if data is not None and data.numel() else 0.5
        return torch.rand(shape, device=device) < density
    if data is not None and data.numel():
        lo, hi = int(data.min()), int(data.max())
        return torch.randint(lo, hi + 1, shape, dtype=dtype, device=device)
    return torch.zeros(shape, dtype=dtype, device=device)
