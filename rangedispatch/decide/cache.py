"""The persistent tuning cache: one JSON table per (op, candidates, shapes, environment).

The directory defaults to ``$XDG_CACHE_HOME/rangedispatch`` (``~/.cache/rangedispatch``);
``RANGEDISPATCH_CACHE_DIR`` moves it. ``RANGEDISPATCH_CACHE`` sets the mode:

- ``verify`` (the default): a cached table is used after a load-time spot check passes
  (see :mod:`.spotcheck`); one that fails is re-tuned, with a warning that says why;
- ``trust``: a cached table is used as it is;
- ``off`` (or ``0``): no cache at all.

The key covers the code each candidate really runs (:mod:`.fingerprint`), so edited
helpers, flipped flags and changed environment variables get a new table. A file that is
truncated, of another format version, or from another device or library version is ignored
with a warning and never trusted; it is overwritten by the next tuning.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import warnings
from pathlib import Path
from typing import Any, Mapping

from .environment import Environment
from ..errors import ConfigError, TableError
from .table import VERSION, TuningTable

ENV_DIR = "RANGEDISPATCH_CACHE_DIR"
ENV_SWITCH = "RANGEDISPATCH_CACHE"
VERIFY, TRUST, OFF = "verify", "trust", "off"  # the cache's modes
MODES = (VERIFY, TRUST, OFF)


_SPELLINGS = {"0": OFF, "false": OFF, "off": OFF, "no": OFF, "1": VERIFY, "true": VERIFY, "on": VERIFY,
              "yes": VERIFY, "": VERIFY, VERIFY: VERIFY, TRUST: TRUST}


def env_mode() -> str:
    """The mode ``RANGEDISPATCH_CACHE`` asks for (``verify`` when unset)."""
    raw = os.environ.get(ENV_SWITCH, VERIFY).strip().lower()
    if raw not in _SPELLINGS:
        warnings.warn(f"Expected {ENV_SWITCH} to be one of verify, trust, off but got {raw!r}; using verify",
                      RuntimeWarning, stacklevel=3)
        return VERIFY
    return _SPELLINGS[raw]


def check_mode(cache: Any) -> bool | str:
    """Validate an op's ``cache`` argument: ``True`` (the environment's mode), ``False``,
    ``"verify"``, ``"trust"`` or ``"off"``."""
    if isinstance(cache, bool) or cache in MODES:
        return cache
    raise ConfigError(f"Expected cache=True, False, 'verify', 'trust' or 'off' but got cache={cache!r}; "
                      "'verify' spot-checks a loaded table, 'trust' uses it unchecked")


def cache_mode(cache: bool | str = True) -> str:
    """The mode in force for an op whose ``cache`` argument is ``cache``: ``off`` when either
    says off; else the op's explicit ``verify``/``trust``; else the environment's."""
    env = env_mode()
    if env == OFF or cache is False or cache == OFF:
        return OFF
    return cache if cache in (VERIFY, TRUST) else env


def cache_dir() -> Path | None:
    """The cache directory in force, or ``None`` when caching is off."""
    if env_mode() == OFF:
        return None
    explicit = os.environ.get(ENV_DIR)
    if explicit:
        return Path(explicit).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "rangedispatch"


def cache_key(parts: Mapping[str, Any]) -> str:
    """A stable hash over everything a table depends on."""
    blob = json.dumps({**parts, "format_version": VERSION}, sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:24]


def cache_path(op_name: str, key: str, directory: Path | None = None) -> Path | None:
    directory = directory if directory is not None else cache_dir()
    if directory is None:
        return None
    safe = re.sub(r"[^A-Za-z0-9_.-]+", "_", op_name)[:80]
    return directory / f"{safe}-{key}.json"


def load_cached(
    path: Path | None,
    *,
    environment: Environment,
    candidates: Mapping[str, str],
    signature: str,
    table_type: type = TuningTable,
) -> Any:
    """The table (a ``table_type``) at ``path`` if it exists and matches, else ``None`` (with
    a warning if it exists but cannot be trusted)."""
    if path is None or not path.exists():
        return None
    try:
        table = table_type.load(path)
    except TableError as exc:
        warnings.warn(f"Ignoring tuning cache {str(path)!r}: {exc}", RuntimeWarning, stacklevel=3)
        return None
    problems = mismatch(table, environment=environment, candidates=candidates, signature=signature)
    if problems:
        warnings.warn(
            f"Ignoring tuning cache {str(path)!r}: it was made for a different setup "
            f"({'; '.join(problems)})",
            RuntimeWarning,
            stacklevel=3,
        )
        return None
    return table


def mismatch(
    table: TuningTable,
    *,
    environment: Environment | None,
    candidates: Mapping[str, str],
    signature: str | None,
) -> list[str]:
    """Why ``table`` does not fit: candidate fingerprints, shapes, environment."""
    problems = []
    if dict(table.candidates) != dict(candidates):
        changed = sorted(set(table.candidates.items()) ^ set(candidates.items()))
        problems.append("candidates changed: " + ", ".join(n for n, _ in changed[:4]))
    if signature is not None and table.signature != signature:
        problems.append(f"input signature {table.signature!r} != {signature!r}")
    if environment is not None:
        problems.extend(table.environment.differences(environment))
    return problems
