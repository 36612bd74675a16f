"""What a candidate really runs, hashed: the key that keeps cached tables from going stale.

A candidate's fingerprint covers its own source and, transitively, the user code it reaches:
the functions, classes and modules it names through its globals and closure cells, with the
values of the simple ones (numbers, strings, bools, enums, and tuples, lists, dicts and sets
of these) and the environment variables it reads by a literal name (``os.environ["X"]``,
``os.environ.get("X")``, ``os.getenv("X")``). A global that holds a Triton ``JITFunction``
contributes Triton's own cache key, which covers its dependencies the same way.

Installed packages (torch, the standard library, site-packages) are not walked: their
versions are part of the cache key already. Objects the walk cannot hash (tensors, modules
of weights, open handles) are left out; the load-time spot check (:mod:`.spotcheck`) is the
safety net for what they change.

Example:
    >>> SCALE = 2
    >>> def helper(x):
    ...     return x * SCALE
    >>> def ref(x):
    ...     return helper(x) + 1
    >>> before = code_fingerprint(ref)
    >>> SCALE = 3
    >>> code_fingerprint(ref) != before
    True
"""

from __future__ import annotations

import enum
import functools
import hashlib
import inspect
import os
import site
import sys
import sysconfig
import types
from typing import Any, Callable, Iterator, Sequence

# packages whose code is versioned in the cache key (or is this library's own)
NOT_USER = frozenset({"torch", "triton", "pytest", "_pytest",
                      "hypothesis", "numpy", "functorch", "sympy", "pluggy", "xdist", "pytest_benchmark"})
MAX_OBJECTS = 512  # a walk that reaches more user objects than this stops (and says so in the hash)
MAX_ITEMS = 64  # containers with more items than this are not hashed by value
ENV_READERS = frozenset({"environ", "getenv", "environb", "getenvb"})
SIMPLE = (int, float, complex, str, bytes, bool, type(None))


def code_fingerprint(fn: Callable[..., Any]) -> str:
    """A short hash of ``fn``'s code and of everything it transitively reads (see the module
    docstring); stable across processes, different when any of it changes."""
    return _Walk.of(fn).digest()


def fingerprint_parts(fn: Callable[..., Any]) -> list[str]:
    """The labelled pieces ``code_fingerprint`` hashes, for explaining what changed:
    ``"code module.qualname <hash>"``, ``"value module.NAME <hash>"``, ``"env NAME <hash>"``."""
    return list(_Walk.of(fn).parts)


def digest(parts: Sequence[str]) -> str:
    """The fingerprint of a walk's parts."""
    return hashlib.sha256("\n".join(parts).encode()).hexdigest()[:16]


@functools.lru_cache(maxsize=1)
def _installed_roots() -> tuple[str, ...]:
    paths = sysconfig.get_paths()
    roots = {paths.get(k) for k in ("stdlib", "platstdlib", "purelib", "platlib")}
    try:
        roots.update(site.getsitepackages())
    except AttributeError:  # some virtualenv layouts
        pass
    user = getattr(site, "getusersitepackages", lambda: None)()
    roots.add(user)
    roots.add(os.path.dirname(os.__file__))
    return tuple(sorted(os.path.realpath(r) + os.sep for r in roots if r))


@functools.lru_cache(maxsize=1)
def _own_roots() -> tuple[str, ...]:
    """This library's and its plugin's directories (their version is in the key)."""
    here = os.path.dirname(os.path.dirname(os.path.realpath(__file__)))
    return (here + os.sep, os.path.join(os.path.dirname(here), "pytest_rangedispatch") + os.sep)


def is_user_code(module: str | None, filename: str | None) -> bool:
    """Whether code of ``module`` from ``filename`` is the user's (walked and hashed) rather than
    an installed package's or the standard library's."""
    top = (module or "").split(".")[0]
    if top in NOT_USER or top in sys.stdlib_module_names or module == "builtins":
        return False
    if not filename or filename.startswith("<frozen"):
        return False
    if filename.startswith("<"):  # <stdin>, <string>, a notebook cell: the user's
        return True
    real = os.path.realpath(filename)
    return not any(real.startswith(root) for root in _installed_roots() + _own_roots())


def _code_objects(code: types.CodeType) -> Iterator[types.CodeType]:
    yield code
    for const in code.co_consts:
        if isinstance(const, types.CodeType):
            yield from _code_objects(const)


def _simple(value: Any, depth: int = 0) -> bool:
    if isinstance(value, SIMPLE) or isinstance(value, enum.Enum):
        return True
    if depth > 2:
        return False
    if isinstance(value, (tuple, list, frozenset, set)):
        return len(value) <= MAX_ITEMS and all(_simple(v, depth + 1) for v in value)
    if isinstance(value, dict):
        return len(value) <= MAX_ITEMS and all(_simple(k, depth + 1) and _simple(v, depth + 1) for k, v in value.items())
    return False


def _stable_repr(value: Any) -> str:
    if isinstance(value, (set, frozenset)):
        return f"{type(value).__name__}({sorted(map(_stable_repr, value))})"
    if isinstance(value, dict):
        return "{" + ", ".join(sorted(f"{_stable_repr(k)}: {_stable_repr(v)}" for k, v in value.items())) + "}"
    if isinstance(value, (list, tuple)):
        return f"{type(value).__name__}({[_stable_repr(v) for v in value]})"
    if isinstance(value, enum.Enum):
        return f"{type(value).__qualname__}.{value.name}"
    return repr(value)


def _short(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:12]


class _Walk:
    """One transitive walk: ``parts`` are the labelled hashes, in visiting order."""

    def __init__(self) -> None:
        self.parts: list[str] = []
        self.seen: set[int] = set()
        self.keep: list[Any] = []  # holds visited objects so their ids stay unique during the walk

    @classmethod
    def of(cls, fn: Callable[..., Any]) -> _Walk:
        walk = cls()
        root = inspect.unwrap(fn) if isinstance(fn, types.FunctionType) else fn
        if isinstance(root, types.FunctionType) and not is_user_code(root.__module__, root.__code__.co_filename):
            # an installed function given as a candidate: its own source still counts
            walk.parts.append(f"code {root.__module__}.{root.__qualname__} {_short(_source(root, root.__code__))}")
        try:
            walk.callable(fn, "fn")
        except RecursionError:
            walk.parts.append("truncated")
        return walk

    def digest(self) -> str:
        return digest(self.parts)

    def _first_visit(self, obj: Any) -> bool:
        if id(obj) in self.seen:
            return False
        if len(self.seen) >= MAX_OBJECTS:
            if "truncated" not in self.parts:
                self.parts.append("truncated")
            return False
        self.seen.add(id(obj))
        self.keep.append(obj)
        return True

    # --- objects ---------------------------------------------------------------------
    def callable(self, obj: Any, label: str) -> None:
        """A function, method, partial, class, callable object or Triton kernel."""
        if isinstance(obj, functools.partial):
            if self._first_visit(obj):
                self.callable(obj.func, label)
                for i, arg in enumerate(obj.args):
                    self.value(f"{label}.args[{i}]", arg)
                for key, arg in sorted(obj.keywords.items()):
                    self.value(f"{label}.{key}", arg)
            return
        if isinstance(obj, (types.MethodType, classmethod, staticmethod)):
            self.callable(obj.__func__, label)
            return
        if isinstance(obj, types.FunctionType):
            self.function(obj)
            return
        if isinstance(obj, type):
            self.cls(obj)
            return
        cache_key = _triton_cache_key(obj)
        if cache_key is not None:
            if self._first_visit(obj):
                self.parts.append(f"triton {label} {_short(cache_key)}")
            return
        kind = type(obj)
        if is_user_code(kind.__module__, _file_of(kind)):
            self.cls(kind)  # a callable object: its class's code (its attributes are values)
            for name, attr in sorted(vars(obj).items()) if hasattr(obj, "__dict__") else ():
                self.value(f"{label}.{name}", attr)
        wrapped = getattr(obj, "__wrapped__", None)
        if wrapped is not None and wrapped is not obj:
            self.callable(wrapped, label)

    def function(self, fn: types.FunctionType) -> None:
        if not self._first_visit(fn):
            return
        code = fn.__code__
        where = f"{fn.__module__}.{fn.__qualname__}"
        if not is_user_code(fn.__module__, code.co_filename):
            self.parts.append(f"installed {where}")
            return
        self.parts.append(f"code {where} {_short(_source(fn, code))}")
        names: set[str] = set()
        strings: set[str] = set()
        for c in _code_objects(code):
            names.update(c.co_names)
            strings.update(k for k in c.co_consts if isinstance(k, str))
        for default in (fn.__defaults__ or ()):
            self.value(f"{where}.<default>", default)
        for key, default in sorted((fn.__kwdefaults__ or {}).items()):
            self.value(f"{where}.<default {key}>", default)
        if fn.__closure__:
            for var, cell in zip(code.co_freevars, fn.__closure__):
                try:
                    content = cell.cell_contents
                except ValueError:  # an empty cell
                    continue
                self.value(f"{where}.<closure {var}>", content, names)
        module_globals = fn.__globals__
        for name in sorted(names):
            if name in module_globals:
                self.value(f"{fn.__module__}.{name}", module_globals[name], names)
        if names & ENV_READERS:
            for key in sorted(strings):
                if key.isidentifier() or key.replace("_", "").isalnum():
                    found = os.environ.get(key)
                    if found is not None:
                        self.parts.append(f"env {key} {_short(found)}")

    def cls(self, kind: type) -> None:
        if not self._first_visit(kind) or not is_user_code(kind.__module__, _file_of(kind)):
            return
        try:
            text = inspect.getsource(kind)
        except (OSError, TypeError):
            text = repr(sorted(vars(kind)))
        self.parts.append(f"class {kind.__module__}.{kind.__qualname__} {_short(text)}")
        for name, attr in sorted(vars(kind).items()):
            if isinstance(attr, (types.FunctionType, classmethod, staticmethod)):
                self.callable(attr, f"{kind.__qualname__}.{name}")
            elif isinstance(attr, property) and attr.fget is not None:
                self.callable(attr.fget, f"{kind.__qualname__}.{name}")
            elif _simple(attr):
                self.value(f"{kind.__qualname__}.{name}", attr)
        for base in kind.__mro__[1:]:
            self.cls(base)

    def value(self, label: str, value: Any, names: set[str] | None = None) -> None:
        """A global, closure cell, default or bound argument."""
        if _simple(value):
            self.parts.append(f"value {label} {_short(_stable_repr(value))}")
        elif isinstance(value, types.ModuleType):
            self.module(value, names or set())
        elif callable(value):
            self.callable(value, label)

    def module(self, module: types.ModuleType, names: set[str]) -> None:
        """A user module named by the code: the attributes of it that the code names too
        (``config.FLAG``, ``kernels.fast``)."""
        if not is_user_code(module.__name__, getattr(module, "__file__", None) or "<module>"):
            return
        for name in sorted(names):
            attr = module.__dict__.get(name)
            if attr is not None and not isinstance(attr, types.ModuleType):
                self.value(f"{module.__name__}.{name}", attr, names)


def _source(fn: types.FunctionType, code: types.CodeType) -> str:
    try:
        return inspect.getsource(fn)
    except (OSError, TypeError):
        return "\n".join(repr(c.co_code) + repr([k for k in c.co_consts if not isinstance(k, types.CodeType)])
                         for c in _code_objects(code))


def _file_of(kind: type) -> str | None:
    module = sys.modules.get(kind.__module__)
    return getattr(module, "__file__", None) or ("<module>" if module is not None else None)


def _triton_cache_key(obj: Any) -> str | None:
    """Triton's own key for a ``JITFunction`` (its source and its dependencies'), or ``None``."""
    if not type(obj).__module__.startswith("triton"):
        return None
    target = obj
    while target is not None and type(target).__name__ != "JITFunction":
        target = getattr(target, "fn", None)  # Autotuner and Heuristics wrap the kernel in .fn
    if target is None:
        return None
    try:
        key = target.cache_key
    except Exception:
        return None
    return key if isinstance(key, str) else None
