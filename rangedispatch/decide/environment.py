"""The environment a table was tuned in: device name and library versions."""

from __future__ import annotations

import platform
import sys
from dataclasses import asdict, dataclass
from functools import lru_cache
from typing import Any, Mapping


@dataclass(frozen=True)
class Environment:
    """Where timings were taken; a table is only trusted in an equal environment."""

    device: str
    torch: str
    triton: str | None
    python: str

    @classmethod
    def current(cls, device: Any = "cpu") -> Environment:
        return cls(device_name(str(device)), *_versions())

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Environment:
        return cls(str(data["device"]), str(data["torch"]), data.get("triton"), str(data["python"]))

    def differences(self, other: Environment) -> list[str]:
        return [
            f"{k}: {a!r} != {b!r}"
            for k, a, b in zip(asdict(self), asdict(self).values(), asdict(other).values())
            if a != b
        ]


@lru_cache(maxsize=None)
def _versions() -> tuple[str, str | None, str]:
    import torch

    try:
        import triton

        triton_version: str | None = triton.__version__
    except Exception:  # triton is optional at run time
        triton_version = None
    return torch.__version__, triton_version, platform.python_version() or sys.version.split()[0]


@lru_cache(maxsize=None)
def device_name(device: str) -> str:
    """``cuda:NVIDIA H100 80GB HBM3`` / ``cpu:x86_64`` style names."""
    import torch

    kind = device.split(":")[0]
    if kind == "cuda" and torch.cuda.is_available():
        index = int(device.split(":")[1]) if ":" in device else torch.cuda.current_device()
        return f"cuda:{torch.cuda.get_device_name(index)}"
    return f"{kind}:{platform.machine() or 'unknown'}"
