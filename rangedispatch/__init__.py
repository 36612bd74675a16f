"""rangedispatch: range-based autotuning and multi-kernel dispatch for PyTorch ops.

Example:
    >>> import torch, rangedispatch as rd
    >>> @rd.range_dispatch(dispatch_on=("x", 1), split_points=[512])
    ... def scale(x, w):
    ...     return x * w
    >>> @scale.register_impl
    ... def scale_einsum(x, w):
    ...     return torch.einsum("bsh,h->bsh", x, w)
"""

from __future__ import annotations

from .decide.candidates import Candidate
from .measure.compare import Mismatch, compare, default_tolerance
from .decide.config import CustomOpConfig, CustomOpRangeConfig, DispatchSpec
from .decide.discover import AutoSettings
from .decide.environment import Environment
from .op.grid import Cell, GridDispatchOp, GridSpec, GridTable, MultiDimRangeConfig
from .errors import ConfigError, ConfigTypeError, RangeDispatchError, TableError, TuningError
from .multikernel import MultiKernel, Variant, inductor_multi_kernel
from .op.core import RangeDispatchOp
from .decide.profile import SizeProfile
from .decide.ranges import Partition, Range
from .registration import dispatcher_of, range_dispatch, register_custom_op_autotuning
from .decide.table import RangeResult, TuningTable
from .measure.timing import Benchmark, Benchmarker, CpuBenchmarker, CudaBenchmarker, Job, default_benchmarker
from .decide.tuner import TunerSettings, sample_sizes

__version__ = "0.1.0"

#: the flat paths the modules had before the layers (``rangedispatch.timing``, ...): the same
#: module objects, so imports and monkeypatches written against them keep working
_MOVED = {
    "timing": "measure.timing", "compare": "measure.compare", "verify": "measure.verify",
    **{name: f"decide.{name}" for name in ("candidates", "environment", "ranges", "config", "inputs", "table",
                                           "cache", "profile", "tuner", "discover")},
    "fastcall": "route.fastcall", "traced": "trace.traced", "inline_cond": "compat.inline_cond",
    "grid": "op.grid", "distributed": "op.distributed",
}


def _alias_moved() -> None:
    import importlib
    import sys

    for old, new in _MOVED.items():
        module = importlib.import_module(f"{__name__}.{new}")
        sys.modules.setdefault(f"{__name__}.{old}", module)
        globals().setdefault(old, module)


_alias_moved()

__all__ = [
    "AutoSettings",
    "Benchmark",
    "Benchmarker",
    "Candidate",
    "Cell",
    "ConfigError",
    "ConfigTypeError",
    "CpuBenchmarker",
    "CudaBenchmarker",
    "CustomOpConfig",
    "CustomOpRangeConfig",
    "DispatchSpec",
    "Environment",
    "GridDispatchOp",
    "GridSpec",
    "GridTable",
    "Job",
    "Mismatch",
    "MultiDimRangeConfig",
    "MultiKernel",
    "Partition",
    "Range",
    "RangeDispatchError",
    "RangeDispatchOp",
    "RangeResult",
    "SizeProfile",
    "TableError",
    "TunerSettings",
    "TuningError",
    "TuningTable",
    "Variant",
    "compare",
    "default_benchmarker",
    "default_tolerance",
    "dispatcher_of",
    "inductor_multi_kernel",
    "range_dispatch",
    "register_custom_op_autotuning",
    "sample_sizes",
]
