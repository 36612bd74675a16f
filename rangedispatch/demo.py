"""The built-in example op: seed 002's ``weighted_scale`` with three candidates."""

from __future__ import annotations

from typing import Any

import torch

from .config import CustomOpRangeConfig
from .op import RangeDispatchOp
from .registration import register_custom_op_autotuning

RANGES = [(0, 512), (512, 2048), (2048, float("inf"))]


def einsum_impl(x: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    return torch.einsum("bsh,h->bsh", x, weight)


def chunked_impl(x: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    return torch.cat([chunk * weight for chunk in x.split(256, dim=1)], dim=1)


def broadcast_impl(x: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    return x * weight.view(1, 1, -1)


def build_demo_op(*, cache: bool = False, **options: Any) -> tuple[Any, RangeDispatchOp]:
    """Define ``rangedispatch_demo::weighted_scale`` and register its candidates."""

    @torch.library.custom_op("rangedispatch_demo::weighted_scale", mutates_args=())
    def weighted_scale(x: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
        return x * weight

    @weighted_scale.register_fake
    def _(x: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
        return torch.empty_like(x)

    op = register_custom_op_autotuning(
        weighted_scale,
        configs=[CustomOpRangeConfig("x", 1, RANGES, [einsum_impl, chunked_impl, broadcast_impl])],
        input_gen_fns={"x": torch.randn_like, "weight": torch.ones_like},
        cache=cache,
        **options,
    )
    return weighted_scale, op


def run_demo(*, device: str | None = None, hidden: int = 128, batch: int = 2) -> str:
    """Tune the demo op on ``device`` (CUDA if available), check every boundary, return the table."""
    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    weighted_scale, op = build_demo_op()
    weight = torch.randn(hidden, device=device)
    table = op.tune(torch.randn(batch, 256, hidden, device=device), weight, force=True)
    checked = []
    for size in (1, 511, 512, 513, 2047, 2048, 2049, 4096):
        x = torch.randn(batch, size, hidden, device=device)
        torch.testing.assert_close(weighted_scale(x, weight), x * weight)
        checked.append(size)
    return (
        f"{table.format()}\n\nchecked sizes {checked} against the reference on {device}: all equal\n"
        f"{op.explain(1000)}"
    )
