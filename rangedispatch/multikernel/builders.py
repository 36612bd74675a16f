"""Where variants come from besides plain callables: one ``torch.compile`` per hint primed at
the hint, launch configs tuned per hint, and upstream Inductor's own multi-kernel to compare."""

from __future__ import annotations

import contextlib
import functools
import json
import os
import tempfile
import types
from typing import TYPE_CHECKING, Any, Callable, Iterator, Mapping, Sequence

import torch
from torch.compiler import is_compiling

from .. import compat
from ..decide.candidates import short_name
from ..errors import ConfigError, TableError
from ..measure.timing import Benchmarker, capturing_cuda_graph, default_benchmarker
from ..route.fastcall import tensor_check
from .variants import Variant, _device_type, _fastest

if TYPE_CHECKING:
    from .core import MultiKernel


def inductor_multi_kernel(
    fn: Callable[..., Any],
    hints: Sequence[int],
    *,
    dynamic: bool | None = True,
    fresh_cache: bool = True,
    **inductor_options: Any,
) -> Callable[..., Any]:
    """``torch.compile(fn)`` with upstream Inductor's own size-hint multi-kernel turned on
    (``triton.multi_kernel=1`` and ``multi_kernel_hints=hints``), to compare with
    :class:`MultiKernel`.

    Upstream's hints are single ints applied to every dynamic dimension, and they only change
    GEMM template choices (with ``max_autotune=True`` in ``inductor_options``); reductions get
    upstream's persistent / non-persistent multi-kernel. The options travel with the compiled
    function, so recompiles keep them. With ``fresh_cache`` (the default) the process's
    Inductor cache directory is pointed at a new empty one first: upstream's multi-kernel
    stores its runtime choices there and has been seen to fail on a warm cache.
    """
    inductor_config = (compat.get("inductor_config") or (None,))[0]
    if not hasattr(inductor_config, "multi_kernel_hints"):
        raise ConfigError(
            f"inductor_multi_kernel: torch {torch.__version__} has no torch._inductor.config.multi_kernel_hints; "
            "use a torch release that has it, or MultiKernel, which does not need it"
        )
    if isinstance(hints, (str, bytes)) or not isinstance(hints, Sequence) or not hints or not all(
        isinstance(h, int) and not isinstance(h, bool) and h > 0 for h in hints
    ):
        raise ConfigError(
            f"inductor_multi_kernel: hints must be a non-empty list of positive ints (upstream applies each to "
            f"every dynamic dimension), e.g. [64, 4096]; got {hints!r}"
        )
    if fresh_cache:
        os.environ["TORCHINDUCTOR_CACHE_DIR"] = tempfile.mkdtemp(prefix="rangedispatch-inductor-")
    options = {"triton.multi_kernel": 1, "multi_kernel_hints": list(hints), **inductor_options}
    return torch.compile(_fresh_function(fn), dynamic=dynamic, options=options)


class _HintCompile:
    """One hint's ``torch.compile``, primed at the hint in each state it is called in.

    Dynamo guards on global state (grad mode) and on each input tensor's dispatch keys as the
    call sees them (inference tensors, the keys a dispatcher kernel runs with excluded). The
    first call in another state (a serving loop under ``torch.inference_mode()``, an opaque
    variant run by a compiled graph) recompiles at *that call's* sizes, and the hint's
    specialisation is lost for every later call in that state. So the first call in each
    state first compiles at the hint's own inputs, made in that state (outside CUDA-graph
    capture, where nothing may compile: there the call goes straight through). The check is
    Dynamo's own: its global-state guard and a ``TensorGuards`` with every size dynamic."""

    def __init__(self, compiled: Callable[..., Any], hint: tuple[int, ...],
                 make_inputs: Callable[[Sequence[int]], tuple[Any, ...]]) -> None:
        self.compiled = compiled
        self.hint = hint
        self.make_inputs = make_inputs
        self.states: list[Callable[[Sequence[Any]], bool]] = []  # one check per primed state
        #: the first primed state: a context entering its dispatch-key include and exclude sets
        #: (resolved once, here: the graph op enters it on every call), and its grad mode
        self.eager_state: tuple[Callable[[], Any], bool] | None = None
        self._torchdynamo_orig_callable = getattr(compiled, "_torchdynamo_orig_callable", compiled)
        self.__name__ = getattr(self._torchdynamo_orig_callable, "__name__", "compiled")

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        if is_compiling():
            return self.compiled(*args, **kwargs)
        # the usual call passes tensors only: checked as they are, without picking them out
        tensors = args if not kwargs else ()
        if not any(state(tensors) for state in self.states):
            tensors = [a for a in (*args, *kwargs.values()) if isinstance(a, torch.Tensor)]
            if not any(state(tensors) for state in self.states):
                self.prime(tensors)
        return self.compiled(*args, **kwargs)

    def prime(self, tensors: Sequence[torch.Tensor], inputs: Sequence[Any] | None = None) -> None:
        """Compile (or find compiled) at the hint's inputs in the state of a call with ``tensors``."""
        if capturing_cuda_graph():
            return
        with _unshared_compile_caches():
            self.compiled(*(self.make_inputs(self.hint) if inputs is None else inputs))
        self.states.append(_state_check(tensors))
        if self.eager_state is None and not is_compiling():
            state = compat.get("dispatch_key_tls")
            keys = functools.partial(state.force, *state.current()) if state is not None else contextlib.nullcontext
            self.eager_state = (keys, torch.is_grad_enabled())


def _state_check(tensors: Sequence[torch.Tensor]) -> Callable[[Sequence[Any]], bool]:
    """Whether a call's tensors and the global state look to Dynamo as ``tensors`` and the
    current state do (every size and stride free)."""
    guard = compat.get("global_state_guard")
    state = None if guard is None else guard()
    same = tensor_check(tensors, [[None] * t.dim() for t in tensors])
    if state is None or same is None:
        mode = (torch.is_grad_enabled(), torch.is_inference_mode_enabled())
        return lambda _ts: (torch.is_grad_enabled(), torch.is_inference_mode_enabled()) == mode
    count = len(tensors)

    def check(ts: Sequence[Any]) -> bool:
        try:
            return len(ts) == count and state.check() and same(*ts)
        except TypeError:  # not all tensors
            return False

    return check


@contextlib.contextmanager
def _unshared_compile_caches() -> Iterator[None]:
    """Turn off Inductor's FX-graph caches and the AOTAutograd cache for one compile."""
    configs = compat.get("inductor_config")
    if configs is None:
        yield
        return
    inductor_config, functorch_config = configs
    autograd = {"enable_autograd_cache": False} if hasattr(functorch_config, "enable_autograd_cache") else {}
    inductor = {k: False for k in ("fx_graph_cache", "fx_graph_remote_cache") if hasattr(inductor_config, k)}
    with inductor_config.patch(inductor), functorch_config.patch(autograd):
        yield


def _fresh_function(fn: Callable[..., Any]) -> Callable[..., Any]:
    """A copy of a Python function with its own code object (so Dynamo compiles it anew)."""
    if isinstance(fn, types.FunctionType):
        copy = types.FunctionType(fn.__code__.replace(), fn.__globals__, fn.__name__, fn.__defaults__, fn.__closure__)
        copy.__kwdefaults__ = fn.__kwdefaults__
        copy.__qualname__ = fn.__qualname__
        return copy
    if isinstance(fn, functools.partial):
        return functools.partial(_fresh_function(fn.func), *fn.args, **fn.keywords)
    forward = getattr(fn, "forward", None)  # an nn.Module: compile a fresh bound forward
    if forward is not None and isinstance(getattr(forward, "__func__", None), types.FunctionType):
        return types.MethodType(_fresh_function(forward.__func__), fn)
    return fn


class BuildersMixin:
    """The constructors ``compiled`` and ``tuned_configs`` (a part of
    :class:`~rangedispatch.multikernel.MultiKernel`)."""

    @classmethod
    def compiled(
        cls,
        fn: Callable[..., Any],
        hints: Sequence[Sequence[int]],
        make_inputs: Callable[[Sequence[int]], tuple[Any, ...]],
        *,
        dynamic: bool | None = True,
        compile_options: Mapping[str, Any] | None = None,
        library: Sequence[Callable[..., Any]] = (),
        benchmarker: Benchmarker | None = None,
        **options: Any,
    ) -> MultiKernel:
        """One ``torch.compile`` of ``fn`` per hint, each primed by a first call on
        ``make_inputs(hint)`` so Inductor's size-dependent choices specialise to that hint.

        Each compile gets its own copy of ``fn``'s code object: Dynamo keys compiled code by
        code object, so compiling the same function twice would otherwise reuse the first
        hint's graph for every hint. The priming compiles also bypass Inductor's FX-graph and
        AOTAutograd caches: torch 2.11 served the second hint's compile from the first hint's
        cache entry (the key holds the graph, not the size hints), so every "variant" was the
        first hint's code.

        ``library``: equivalent functions that need no compile (eager ``fn``, a cuBLAS or SDPA
        call). At each hint the compile and the library functions are timed on the hint's
        inputs (and checked against the compile's output); the fastest becomes that hint's
        variant, which ``nearest`` picks. The others stay as variants without a hint, which
        the ``benchmark`` policy still times.
        """
        hinted: list[Variant] = []
        spare: dict[str, Variant] = {}
        for hint in hints:
            label = "x".join(map(str, hint))
            compiled = _HintCompile(torch.compile(_fresh_function(fn), dynamic=dynamic, **dict(compile_options or {})),
                                    tuple(hint), make_inputs)
            inputs = make_inputs(hint)
            # compiles with this hint's sizes as Inductor's size hints
            compiled.prime([a for a in inputs if isinstance(a, torch.Tensor)], inputs)
            mine = Variant(compiled, None, name=f"{short_name(fn)}@{label}", meta={"source": "torch.compile"})
            pool = [mine] + [Variant(f, None, meta={"source": "library"}) for f in library]
            best = 0
            if library:
                items = [(v.name, repr(v.name), functools.partial(v.fn, *inputs)) for v in pool]
                found = _fastest(items, kind="variant", prefix="", where=f"hint {list(hint)}",
                                 benchmarker=benchmarker or default_benchmarker(_device_type(inputs)),
                                 size=int(hint[0]), inputs=(inputs, {}),
                                 rtol=options.get("rtol"), atol=options.get("atol"))
                best = 0 if found is None else found
            chosen = pool[best]
            hinted.append(Variant(chosen.fn, tuple(hint), name=chosen.name if best == 0 else f"{chosen.name}@{label}",
                                  meta=chosen.meta))
            for i, v in enumerate(pool):
                if i != best:
                    spare.setdefault(v.name, v)
        chosen_fns = {id(v.fn) for v in hinted}
        spare_list = [v for v in spare.values() if id(v.fn) not in chosen_fns]
        options.setdefault("make_inputs", make_inputs)
        return cls(hinted + spare_list, name=options.pop("name", short_name(fn)), benchmarker=benchmarker, **options)

    @classmethod
    def tuned_configs(
        cls,
        launch: Callable[..., Any],
        configs: Sequence[Mapping[str, Any]],
        hints: Sequence[Sequence[int]],
        make_inputs: Callable[[Sequence[int]], tuple[Any, ...]],
        *,
        benchmarker: Benchmarker | None = None,
        **options: Any,
    ) -> MultiKernel:
        """One variant per hint: ``launch(*args, **config)`` with the config that is fastest
        at ``make_inputs(hint)`` (and agrees with the first config's output). ``launch`` is
        typically a small wrapper that launches a Triton kernel with the config's block sizes
        and ``num_warps``; timing uses the same benchmarker as the engine (CUDA events with an
        L2 flush, as in Triton's ``do_bench``)."""
        if not configs:
            raise ConfigError("tuned_configs needs at least one launch config")
        variants = []
        for hint in hints:
            args = make_inputs(hint)
            items = [(str(i), str(dict(c)), functools.partial(launch, *args, **c)) for i, c in enumerate(configs)]
            best = _fastest(items, kind="config", prefix="", where=f"hint {list(hint)}",
                            benchmarker=benchmarker or default_benchmarker(_device_type(args)), size=int(hint[0]),
                            inputs=(args, {}))
            if best is None:
                raise TableError(f"every launch config failed at hint {list(hint)}")
            config = configs[best]
            label = ",".join(f"{k}={v}" for k, v in config.items())
            variants.append(Variant(functools.partial(launch, **config), tuple(hint),
                                    name=f"{short_name(launch)}@{'x'.join(map(str, hint))}[{label}]",
                                    meta={"config": json.dumps(dict(config), sort_keys=True)}))
        options.setdefault("make_inputs", make_inputs)
        return cls(variants, name=options.pop("name", short_name(launch)), benchmarker=benchmarker, **options)
