"""A per-device lock across processes, so timings never overlap with other work on a device.

Benchmarks take it exclusively; equivalence checks take it shared. Under pytest-xdist
(or two pytest runs side by side) a benchmark therefore waits until no other check uses the
device, and no check starts while it runs. Without ``fcntl`` (Windows) it is a no-op.
"""

from __future__ import annotations

import contextlib
import getpass
import os
import re
import tempfile
from pathlib import Path
from typing import Iterator

try:
    import fcntl
except ImportError:  # pragma: no cover - Windows
    fcntl = None  # type: ignore[assignment]


def lock_path(device: str) -> Path:
    try:
        user = getpass.getuser()
    except Exception:  # pragma: no cover - no user database
        user = str(os.getuid()) if hasattr(os, "getuid") else "user"
    name = re.sub(r"[^A-Za-z0-9_.-]", "_", f"rangedispatch-{user}-{device}.lock")
    return Path(os.environ.get("RANGEDISPATCH_LOCK_DIR") or tempfile.gettempdir()) / name


@contextlib.contextmanager
def device_lock(device: str, *, exclusive: bool) -> Iterator[None]:
    if fcntl is None:
        yield
        return
    path = lock_path(device)
    with open(path, "a+") as handle:
        fcntl.flock(handle.fileno(), fcntl.LOCK_EX if exclusive else fcntl.LOCK_SH)
        try:
            yield
        finally:
            fcntl.flock(handle.fileno(), fcntl.LOCK_UN)
