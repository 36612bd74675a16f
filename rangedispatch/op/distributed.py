"""Tables every rank agrees on, when ``torch.distributed`` is initialised.

A model served with tensor parallelism runs the same op on every rank. Ranks that tuned
separately could pick different candidates for the same size (different numerics; for ops
with collectives inside, different code paths), so with a process group of two or more ranks
an op's tuning is collective, in one of these modes (``distributed=`` on the op):

``"broadcast"`` (the default)
    Rank 0 loads its cached table or tunes; every rank receives that table.
``"split"``
    The ranges (a grid op's cells) are dealt round-robin to the ranks; each rank tunes its
    share on its own device, the results are gathered and rank 0's assembled table is
    broadcast. Tuning takes about ``1 / world_size`` of the time. An op with automatic
    split points tunes as in ``"broadcast"``.
``"off"``
    Every rank tunes on its own; tables may differ.

Before anything else the ranks compare what they are about to tune: the candidates and their
fingerprints, the ranges, the input signature, the environment (device model, library
versions) and the settings. Where any differs, every rank raises :class:`TuningError`
naming the ranks and the difference. Loading from the cache is decided by rank 0 alone, so
a rank with a stale or missing cache file still ends with rank 0's table. A failure while
tuning on one rank is raised on every rank, so none is left waiting in a collective.

Tuning happens on the op's first call (or ``op.tune``), so every rank must reach it: call or
tune collectively-tuned ops in the same order on every rank.
"""

from __future__ import annotations

import logging
from typing import Any, Callable, Mapping

from ..errors import ConfigError, TuningError, describe

log = logging.getLogger("rangedispatch")

MODES = ("broadcast", "split", "off")


def check_mode(mode: Any) -> str:
    if mode not in MODES:
        raise ConfigError(
            f"Expected distributed to be one of {list(MODES)} but got {describe('distributed', mode)}; "
            "'broadcast' tunes on rank 0 and shares the table, 'split' shares the tuning out"
        )
    return mode


def group_for(op: Any) -> Any:
    """The process group ``op`` tunes collectively in, or ``None`` (not distributed, one rank,
    or ``distributed="off"``)."""
    if op.distributed == "off":
        return None
    try:
        import torch.distributed as dist
    except ImportError:  # pragma: no cover - torch built without distributed
        return None
    if not (dist.is_available() and dist.is_initialized()):
        return None
    group = op.process_group if op.process_group is not None else dist.group.WORLD
    return group if dist.get_world_size(group) > 1 else None


def _src(group: Any) -> int:
    import torch.distributed as dist

    return dist.get_global_rank(group, 0) if group is not dist.group.WORLD else 0


def from_rank0(obj: Any, group: Any) -> Any:
    """Rank 0's ``obj`` on every rank."""
    import torch.distributed as dist

    box = [obj]
    dist.broadcast_object_list(box, src=_src(group), group=group)
    return box[0]


def gather(obj: Any, group: Any) -> list[Any]:
    """Every rank's ``obj``, by rank."""
    import torch.distributed as dist

    out: list[Any] = [None] * dist.get_world_size(group)
    dist.all_gather_object(out, obj, group=group)
    return out


def agree(op_name: str, description: Mapping[str, Any], group: Any) -> None:
    """Raise on every rank unless every rank describes the same tuning job."""
    everyone = gather(dict(description), group)
    first = everyone[0]
    problems = []
    for rank, other in enumerate(everyone[1:], start=1):
        for key in sorted(set(first) | set(other)):
            if first.get(key) != other.get(key):
                problems.append(f"rank {rank} {key}: {_short(other.get(key))} != rank 0's {_short(first.get(key))}")
    if problems:
        raise TuningError(
            f"{op_name}: the ranks disagree on what to tune, so they could dispatch differently: "
            + "; ".join(problems[:6])
            + ". Register the same candidates with the same code on every rank, call the op with the same "
            "input signature, and run the same device model and library versions; or pass distributed='off'"
        )


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 160 else text[:157] + "..."


def _attempt(fn: Callable[[], Any]) -> tuple[str, Any]:
    try:
        return "ok", fn()
    except Exception as exc:  # raised on every rank below
        return "error", f"{type(exc).__name__}: {exc}"


def _unwrap(op_name: str, outcomes: list[tuple[int, tuple[str, Any]]]) -> None:
    failed = [f"rank {rank}: {value}" for rank, (status, value) in outcomes if status != "ok"]
    if failed:
        raise TuningError(f"{op_name}: collective tuning failed ({'; '.join(failed)})")


def tune_consistently(op: Any, common: dict[str, Any], tuner: Callable[..., Any]) -> Any:
    """``tuner(**common)`` so that every rank of ``op``'s process group ends with the same
    table (see the module doc); just ``tuner(**common)`` when the op is not distributed."""
    group = group_for(op)
    if group is None:
        return tuner(**common)
    import torch.distributed as dist

    rank, world = dist.get_rank(group), dist.get_world_size(group)
    name = common["op_name"]
    if op.distributed == "split" and getattr(op, "auto", None) is None:
        plan = common["plan"]
        mine = list(plan.ranges[rank::world])
        log.info("%s: rank %d of %d tunes %d of %d ranges", name, rank, world, len(mine), len(plan.ranges))
        part = _attempt(lambda: tuner(**common, only=mine))
        parts = gather(part, group)
        _unwrap(name, list(enumerate(parts)))
        outcome: Any = None
        if rank == 0:
            from ..decide.tuner import make_table

            # each rank's ranges, in order (a refined range comes back as its pieces)
            results = sorted((r for _, table in parts for r in table.results), key=lambda r: r.range.lo)
            outcome = _attempt(lambda: make_table(name, plan, common["reference"], results, common["factory"],
                                                  common["settings"], common["environment"],
                                                  table_type=type(parts[0][1])))
    else:
        outcome = _attempt(lambda: tuner(**common)) if rank == 0 else None
    outcome = from_rank0(outcome, group)
    _unwrap(name, [(0, outcome)])
    return outcome[1]
