"""Built-in example ops: seed 002's ``weighted_scale`` (a registered custom op with three
candidates, used in the plugin's examples) and ``prefix_sum``, whose candidates cross over twice
on any machine (the ``rangedispatch demo`` job)."""

from __future__ import annotations

from typing import Any

import torch

from .decide.config import CustomOpRangeConfig
from .op.core import RangeDispatchOp
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


def _triangular(n: int, like: torch.Tensor) -> torch.Tensor:
    return torch.ones(n, n, dtype=like.dtype, device=like.device).tril_()


def build_prefix_sum_op(*, upper: int = 4096, cache: bool = False, **options: Any) -> RangeDispatchOp:
    """A prefix sum over rows, ``x.cumsum(0)`` for ``x`` of shape ``(n, d)``, with candidates
    whose ranking flips twice with ``n`` on a CPU: the scan itself wins for a handful of rows,
    one triangular matmul (BLAS, O(n^2)) for tens of rows, and a blocked scan (64-row
    triangular matmuls plus a carry) from about a hundred rows on. Split points are found
    automatically."""
    from .registration import range_dispatch

    @range_dispatch(dispatch_on=("x", 0), split_points="auto", range_upper_bound=upper, cache=cache,
                    name="prefix_sum", **options)
    def prefix_sum(x: torch.Tensor) -> torch.Tensor:
        return torch.cumsum(x, 0)

    @prefix_sum.register_impl
    def triangular_matmul(x: torch.Tensor) -> torch.Tensor:
        return _triangular(x.shape[0], x) @ x

    @prefix_sum.register_impl
    def blocked_scan(x: torch.Tensor) -> torch.Tensor:
        n, block = x.shape[0], 64
        pad = (-n) % block
        xp = torch.nn.functional.pad(x, (0, 0, 0, pad)) if pad else x
        inner = torch.matmul(_triangular(block, x), xp.reshape(-1, block, x.shape[1]))
        totals = inner[:, -1]
        carry = totals.cumsum(0) - totals
        return (inner + carry[:, None]).reshape(-1, x.shape[1])[:n]

    return prefix_sum


def run_demo(*, device: str | None = None, width: int = 512, upper: int = 4096) -> str:
    """Tune the prefix-sum demo on ``device`` (CUDA if available) with automatic split points,
    check sizes around every split against the reference, and return the table and one
    ``explain`` per range."""
    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    op = build_prefix_sum_op(upper=upper)
    table = op.tune(torch.randn(64, width, device=device), force=True)
    checked = []
    for r in table.results:
        for size in {max(r.range.lo - 1, 1), r.range.lo, r.range.lo + 1}:
            x = torch.randn(size, width, device=device)
            torch.testing.assert_close(op(x), x.cumsum(0), rtol=1e-4, atol=1e-3)
            checked.append(size)
    explained = []
    for r in table.results:
        size = r.samples[len(r.samples) // 2] if r.samples else r.range.lo
        explained.append(op.explain(size))
    winners = sorted({r.winner for r in table.results})
    return (
        f"{table.format()}\n{table.settings.get('discovery', '')}\n\n"
        f"{len(winners)} different winner(s): {', '.join(winners)}\n"
        f"checked sizes {sorted(checked)} against the reference on {device}: all equal\n\n"
        + "\n\n".join(explained)
    )
