"""Tables per input signature: the C-level guards an op learns, and the route of a call whose
dtypes, devices or other dims differ from the main table's."""

from __future__ import annotations

import logging
import warnings
from typing import Any, Callable, Mapping, Sequence

from torch.compiler import is_compiling

from ..decide.inputs import CallTemplate
from ..decide.table import TuningTable
from ..measure.timing import capturing_cuda_graph
from ..route.fastcall import MAX_OTHER_SIGNATURES, MAX_TENSOR_GUARDS

log = logging.getLogger("rangedispatch")


class SignaturesMixin:
    """An op's tables per input signature and the guards that route to them (a part of
    :class:`RangeDispatchOp`)."""

    def _learn_guard(self, args: Sequence[Any], kwargs: Mapping[str, Any], template: CallTemplate | None,
                     checks: list[Callable[..., bool]]) -> bool:
        """Add to ``checks`` a C-level signature guard built from this call's tensors (see
        fastcall); the caller has checked that the call has ``template``'s signature."""
        import inspect

        from ..route.fastcall import plain_params, tensor_guard, tensor_params

        if template is None or len(checks) >= MAX_TENSOR_GUARDS or capturing_cuda_graph():
            return False
        names = tensor_params(template, plain_params(self.reference_fn))
        try:
            bound = inspect.signature(self.reference_fn).bind(*args, **kwargs).arguments
        except (TypeError, ValueError):
            return False
        import torch

        tensors = [bound.get(n) for n in names]
        if not names or not all(type(t) in (torch.Tensor, torch.nn.Parameter) for t in tensors):
            return False
        check = tensor_guard(tensors, template, names, self._resized)
        if check is None:
            return False
        checks.append(check)
        return True

    @property
    def tables(self) -> dict[str, TuningTable]:
        """Every table in force, by input signature (dtypes, devices, non-dispatch dims)."""
        return dict(self._tables)

    def _miss(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        """Where the generated ``__call__`` sends a call its guard refuses."""
        if is_compiling():  # a non-strict export's fake tensors
            from ..trace.traced import traced_call

            return traced_call(self, args, kwargs)
        return self._other_signature(args, kwargs)

    def _other_signature(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        """A call whose signature differs from the main table's: its own table (tuned on
        first sight, at most ``max_signatures`` of them), never another signature's. Routes are
        found by a cheap key of the call (dtypes, devices, shapes without the dispatch dims,
        scalar values); the full signature is built only the first time a key is seen."""
        key = self._call_key(args, kwargs)
        found = self._key_routes.get(key)
        if found is None:
            with self._lock:
                found = self._other_signature_route(args, kwargs)
            if not capturing_cuda_graph():  # tuned later, outside capture
                self._key_routes[key] = found
        route, signature = found
        if route is self._route:
            if 0 < len(self._tensor_checks) < MAX_TENSOR_GUARDS:
                # the main signature, refused by the C-level guard (grad mode, a Parameter, ...)
                with self._lock:
                    if route is self._route and self._learn_guard(args, kwargs, self._template, self._tensor_checks):
                        self._specialise(*self._route)
        elif self._tensor_checks and signature in self._routes and self._may_learn_other(signature):
            # another signature's table: the generated call checks its own C-level guard too
            with self._lock:
                checks = self._other_checks.setdefault(signature, [])
                if self._learn_guard(args, kwargs, self._templates.get(signature), checks):
                    self._specialise(*self._route)
                elif not checks:
                    del self._other_checks[signature]
        return self._along(route, args, kwargs)

    def _may_learn_other(self, signature: str) -> bool:
        """Whether another signature's table may get one more C-level guard: a few per table,
        for a few tables."""
        known = self._other_checks.get(signature)
        return len(known) < MAX_TENSOR_GUARDS if known is not None else len(self._other_checks) < MAX_OTHER_SIGNATURES

    def _other_signature_route(self, args: Sequence[Any], kwargs: Mapping[str, Any]) -> tuple[Any, str]:
        """The route of this call's signature, its table tuned first if it has none, and
        the signature."""
        template = CallTemplate.from_call(self.reference_fn, args, kwargs)
        signature = template.signature(self.dispatch)
        route = self._routes.get(signature)
        if route is None:
            return self._route_for_new_signature(args, kwargs, signature), signature
        if signature in self._tables:  # a loaded table has no example until a call like this one
            self._templates.setdefault(signature, template)
        return route, signature

    def _call_key(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> tuple[Any, ...]:
        import torch

        resized = self._resized
        params = self._params
        grad = torch.is_grad_enabled()

        def part(name: Any, value: Any) -> Any:
            if isinstance(value, torch.Tensor):
                shape = list(value.shape)
                for dim in resized.get(name, ()):
                    if -len(shape) <= dim < len(shape):
                        shape[dim] = -1
                return value.dtype, value.device.type, tuple(shape), grad and value.requires_grad
            return value if isinstance(value, (bool, int, float, str, type(None))) else type(value)

        return (tuple(part(params[i] if i < len(params) else i, a) for i, a in enumerate(args)),
                tuple((k, part(k, v)) for k, v in kwargs.items()))

    def _route_for_new_signature(self, args: tuple[Any, ...], kwargs: dict[str, Any], signature: str) -> Any:
        if capturing_cuda_graph():  # no tuning inside capture, and nothing kept: tuned after it
            warnings.warn(
                f"{self.name}: a call with input signature {signature} has no table and cannot be tuned "
                f"inside CUDA-graph capture; running the reference {self._ref.name!r}. Tune it beforehand "
                "with op.tune(*example)", RuntimeWarning, stacklevel=4)
            return ((), (self.reference_fn,))
        if len(self._tables) >= self.max_signatures:
            warnings.warn(
                f"{self.name}: a call with input signature {signature} has no table and the op already "
                f"holds {len(self._tables)} tables (max_signatures); running the reference {self._ref.name!r} "
                "for it. Tune it beforehand with op.tune(*example) or raise op.max_signatures",
                RuntimeWarning,
                stacklevel=4,
            )
            route: Any = ((), (self.reference_fn,))
        else:
            log.info("%s: new input signature %s; tuning a table for it", self.name, signature)
            table, template = self._tune_table(args, kwargs, force=False)
            self._tables[signature] = table
            self._templates[signature] = template
            route = self._route_of(table)
        self._routes[signature] = route
        return route
