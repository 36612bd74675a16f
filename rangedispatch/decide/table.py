"""Tuning tables: per range the winner and every candidate's timings, plus the environment.

Tables are plain frozen values with a JSON round trip. :meth:`TuningTable.save` writes
atomically (temporary file, fsync, rename), so an interrupted run never leaves a partial
file where a good one was.
"""

from __future__ import annotations

import json
import math
import os
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Sequence

from .environment import Environment
from ..errors import TableError
from .ranges import Partition, Range

FORMAT = "rangedispatch.decide.table"
VERSION = 1
INNER_CROSSOVER = 0.05  # a rival this much faster at one sample means the winner changes inside the range


def choice_lines(result: RangeResult, kind: str) -> list[str]:
    """A range's (or cell's) line of the tuning summary, and a note where its winner stops
    being the fastest inside it."""
    lines = [f"  {kind} {result.range}: {result.winner}"]
    inner = result.crossover()
    if inner is not None:
        lines.append(f"    note: {inner.describe(result.winner)}")
    return lines


@dataclass(frozen=True)
class Crossover:
    """Inside one range: the winner held up to ``held`` (``None``: at no earlier sample),
    and ``rival`` is ``ratio`` times faster at ``size``."""

    held: Any
    size: Any
    rival: str
    ratio: float

    def describe(self, winner: str) -> str:
        where = f"between {self.held} and {self.size}" if self.held is not None else f"at or below {self.size}"
        return (f"the winner changes inside this range: {self.rival!r} is {self.ratio:.2f}x faster than "
                f"{winner!r} at {self.size}; a split point {where} (or refine_splits=True, or "
                "split_points=\"auto\") would serve both")


@dataclass(frozen=True)
class RangeResult:
    """The outcome of tuning one range.

    Args:
        range: the range tuned.
        winner: name of the chosen candidate (the reference's name when nothing beat it).
        samples: dispatch sizes benchmarked.
        timings: candidate name -> median milliseconds per sample size (``inf``: failed).
        disqualified: candidate name -> why it lost the range (error, NaN, wrong values).
        noise: relative run-to-run noise measured for this range.
        dropped: candidate name -> why it was not timed at every sample size (far slower
            than the fastest at one of them); its other times are ``inf``.
        weights: how much of the range each sample stands for in the mean over samples
            (``None``: equal; see :func:`~rangedispatch.decide.tuner.log_weights`).
    """

    range: Range
    winner: str
    samples: tuple[int, ...]
    timings: Mapping[str, tuple[float, ...]]
    disqualified: Mapping[str, str] = field(default_factory=dict)
    noise: float = 0.0
    dropped: Mapping[str, str] = field(default_factory=dict)
    weights: tuple[float, ...] | None = None

    def ratio(self, name: str, reference: str) -> float:
        """Geometric mean over samples of ``time(name) / time(reference)``, each sample
        weighted by ``weights`` when given."""
        ours, ref = self.timings.get(name), self.timings.get(reference)
        if not ours or not ref:
            return math.inf
        logs = [math.log(a / b) for a, b in zip(ours, ref) if b > 0 and math.isfinite(a) and math.isfinite(b) and a > 0]
        if len(logs) != len(ours):
            return math.inf
        weights = self.weights if self.weights is not None and len(self.weights) == len(logs) else (1.0,) * len(logs)
        return math.exp(sum(w * x for w, x in zip(weights, logs)) / sum(weights))

    def ranking(self, reference: str) -> list[tuple[str, float]]:
        """Candidates by ratio to the reference, fastest first (disqualified last)."""
        return sorted(((n, self.ratio(n, reference)) for n in self.timings), key=lambda p: p[1])

    def crossover(self, margin: float = INNER_CROSSOVER) -> Crossover | None:
        """Where the winner stops being the fastest inside this range: the first sample
        size at which another eligible candidate beats it by more than ``margin`` (or the
        range's noise, when larger), with the last sample before it where the winner held.
        One winner per range then costs that much at some sizes; a split point between the
        two serves both. ``None`` when the winner holds at every sample."""
        won = self.timings.get(self.winner)
        if not won or len(won) != len(self.samples):
            return None
        limit = 1 + max(margin, self.noise)
        held = None
        for i, size in enumerate(self.samples):
            rivals = [(ts[i], n) for n, ts in self.timings.items()
                      if n != self.winner and n not in self.disqualified and i < len(ts) and math.isfinite(ts[i])]
            if not rivals or not math.isfinite(won[i]):
                continue
            best, name = min(rivals)
            if best * limit < won[i]:
                return Crossover(held, size, name, won[i] / best)
            held = size
        return None

    def to_json(self) -> dict[str, Any]:
        return {
            "range": self.range.to_json(),
            "winner": self.winner,
            "samples": list(self.samples),
            "timings_ms": {k: [_num(v) for v in vs] for k, vs in self.timings.items()},
            "disqualified": dict(self.disqualified),
            "noise": self.noise,
            "dropped": dict(self.dropped),
            **({"weights": list(self.weights)} if self.weights is not None else {}),
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> RangeResult:
        return cls(
            Range.from_json(data["range"]),
            str(data["winner"]),
            tuple(int(s) for s in data["samples"]),
            {k: tuple(float(v) for v in vs) for k, vs in data["timings_ms"].items()},
            dict(data.get("disqualified", {})),
            float(data.get("noise", 0.0)),
            dict(data.get("dropped", {})),
            tuple(float(w) for w in data["weights"]) if data.get("weights") is not None else None,
        )


def _num(value: float) -> float | str:
    return value if math.isfinite(value) else "inf"


@dataclass(frozen=True)
class TuningTable:
    """Everything tuning decided for one op, and where it was measured."""

    op: str
    dispatch: str | None
    reference: str
    results: tuple[RangeResult, ...]
    candidates: Mapping[str, str]  # name -> fingerprint
    environment: Environment
    signature: str = ""
    settings: Mapping[str, Any] = field(default_factory=dict)
    created: float = field(default_factory=time.time)
    code: Mapping[str, tuple[str, ...]] = field(default_factory=dict)  # name -> what its fingerprint hashed
    tuning_s: float = 0.0  # wall time the tuning took (0: unknown)

    @property
    def partition(self) -> Partition:
        return Partition.build((r.range, r.winner) for r in self.results)

    @property
    def winners(self) -> dict[Range, str]:
        return {r.range: r.winner for r in self.results}

    def code_changes(self, now: Mapping[str, Sequence[str]]) -> list[str]:
        """What changed in the code the candidates run since this table was tuned, from
        ``now`` (name -> :func:`~rangedispatch.decide.fingerprint.fingerprint_parts`): the
        functions, values and environment variables whose hash differs, by label."""
        changes: list[str] = []
        for name, parts in now.items():
            before = self.code.get(name)
            if before is None:
                changes.append(f"candidate {name!r} is new" if name not in self.candidates else
                               f"candidate {name!r} changed")
                continue
            old = {p.rsplit(" ", 1)[0]: p for p in before}
            new = {p.rsplit(" ", 1)[0]: p for p in parts}
            for label in sorted(set(old) | set(new)):
                if old.get(label) != new.get(label) and label not in changes:
                    kind, _, what = label.partition(" ")
                    verb = "added" if label not in old else "removed" if label not in new else "changed"
                    changes.append(f"{what} ({kind}) {verb}")
        return changes

    def result_for(self, size: int) -> RangeResult | None:
        for r in self.results:
            if size in r.range:
                return r
        return None

    def summary(self) -> list[str]:
        """What tuning chose, for the log."""
        lines = [line for r in self.results for line in choice_lines(r, "Range")]
        segments = self.partition.segments
        owners = {s.owner for s in segments if s.owner is not None}
        if len(owners) <= 1:
            gaps = any(s.owner is None for s in segments)
            how = "sizes outside every range run the reference" if gaps else "called directly (no dispatch)"
            lines.append(f"=== All ranges selected the same implementation: "
                         f"'{next(iter(owners), self.reference)}', {how} ===")
        else:
            lines.append("=== Different ranges selected different implementations ===")
            lines.append(f"Generated runtime dispatch for {self.dispatch} with {len(segments)} ranges")
        return lines

    # --- serialisation -------------------------------------------------------------
    def to_json(self) -> dict[str, Any]:
        return {
            "format": FORMAT,
            "version": VERSION,
            "op": self.op,
            "dispatch": self.dispatch,
            "reference": self.reference,
            "candidates": dict(self.candidates),
            "environment": self.environment.to_json(),
            "signature": self.signature,
            "settings": dict(self.settings),
            "created": self.created,
            "ranges": [r.to_json() for r in self.results],
            **({"code": {k: list(v) for k, v in self.code.items()}} if self.code else {}),
            **({"tuning_s": self.tuning_s} if self.tuning_s else {}),
        }

    @classmethod
    def from_json(cls, data: Any) -> TuningTable:
        if not isinstance(data, Mapping) or data.get("format") != FORMAT:
            raise TableError(f"Expected a {FORMAT} document but got {type(data).__name__} without that format tag")
        if data.get("version") != VERSION:
            raise TableError(
                f"Expected table format version {VERSION} but got version={data.get('version')!r}; "
                "re-tune to write a current table"
            )
        try:
            return cls(
                op=str(data["op"]),
                dispatch=data["dispatch"],
                reference=str(data["reference"]),
                results=tuple(RangeResult.from_json(r) for r in data["ranges"]),
                candidates=dict(data["candidates"]),
                environment=Environment.from_json(data["environment"]),
                signature=str(data.get("signature", "")),
                settings=dict(data.get("settings", {})),
                created=float(data.get("created", 0.0)),
                code={str(k): tuple(str(p) for p in v) for k, v in dict(data.get("code") or {}).items()},
                tuning_s=float(data.get("tuning_s", 0.0)),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise TableError(f"Malformed tuning table: {type(exc).__name__}: {exc}") from exc

    def save(self, path: str | os.PathLike[str]) -> Path:
        """Write atomically: a reader sees the old file or the new one, never a torn one."""
        target = Path(path)
        atomic_write_text(target, json.dumps(self.to_json(), indent=1, sort_keys=True))
        return target

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> TuningTable:
        try:
            text = Path(path).read_text()
        except OSError as exc:
            raise TableError(f"Cannot read tuning table {str(path)!r}: {exc}") from exc
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise TableError(f"Tuning table {str(path)!r} is not valid JSON (truncated?): {exc}") from exc
        return cls.from_json(data)

    # --- presentation --------------------------------------------------------------
    def format(self) -> str:
        """A plain-text table: one row per range with the winner and every timing."""
        names = list(self.candidates)
        header = ["range", "winner", "margin"] + names
        rows = [header]
        for r in self.results:
            ranking = [(n, q) for n, q in r.ranking(self.reference) if math.isfinite(q)]
            runner = [q for n, q in ranking if n != r.winner]
            win = r.ratio(r.winner, self.reference)
            margin = f"{(runner[0] / win - 1) * 100:.1f}%" if runner and math.isfinite(win) and win > 0 else "-"
            cells = [str(r.range), r.winner, margin]
            for n in names:
                if n in r.disqualified:
                    cells.append("disq.")
                elif n in r.dropped:
                    cells.append("slower")
                elif n in r.timings:
                    cells.append(_ms(sum(r.timings[n]) / len(r.timings[n])))
                else:
                    cells.append("-")
            rows.append(cells)
        widths = [max(len(row[i]) for row in rows) for i in range(len(header))]
        lines = [
            f"{self.op}: dispatch on {self.dispatch or '(no dispatch)'} | {self.environment.device} | "
            f"torch {self.environment.torch}",
            "mean time per candidate over the range's sample sizes; margin = runner-up / winner - 1",
        ]
        for i, row in enumerate(rows):
            lines.append("  ".join(c.ljust(w) for c, w in zip(row, widths)))
            if i == 0:
                lines.append("  ".join("-" * w for w in widths))
        merged = " | ".join(
            f"{s.range}: {s.owner or self.reference + ' (untuned gap)'}" for s in self.partition.segments
        )
        lines.append(f"dispatch: {merged}")
        return "\n".join(lines)


def _ms(value: float) -> str:
    if not math.isfinite(value):
        return "fail"
    if value < 1:
        return f"{value * 1e3:.1f}us"
    return f"{value:.3f}ms"


def atomic_write_text(target: Path, text: str) -> None:
    """Write ``text`` to ``target`` via a temporary file in the same directory and a rename."""
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    try:
        with os.fdopen(fd, "w") as fh:
            fh.write(text)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, target)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise
