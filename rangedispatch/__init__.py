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

from .candidates import Candidate
from .compare import Mismatch, compare, default_tolerance
from .config import CustomOpConfig, CustomOpRangeConfig, DispatchSpec
from .discover import AutoSettings
from .environment import Environment
from .grid import Cell, GridDispatchOp, GridSpec, GridTable, MultiDimRangeConfig
from .errors import ConfigError, ConfigTypeError, RangeDispatchError, TableError, TuningError
from .multikernel import MultiKernel, Variant, inductor_multi_kernel
from .op import RangeDispatchOp
from .profile import SizeProfile
from .ranges import Partition, Range
from .registration import dispatcher_of, range_dispatch, register_custom_op_autotuning
from .table import RangeResult, TuningTable
from .timing import Benchmark, Benchmarker, CpuBenchmarker, CudaBenchmarker, Job, default_benchmarker
from .tuner import TunerSettings, sample_sizes

__version__ = "0.1.0"

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
