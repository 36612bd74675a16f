"""Per-range records of a session: merging (across cases and xdist workers), the report and
baselines. Plain data and the standard library only: the controller of an xdist run never
imports torch.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import tempfile
from pathlib import Path
from typing import Any, Iterable, Mapping

BASELINE_FORMAT = "rangedispatch.baseline"
REPORT_FORMAT = "rangedispatch.report"
VERSION = 1

# worst first: a range's status is the worst any of its cases reported
SEVERITY = ("mismatch", "error", "regression", "stale", "ok")


# fields a non-benchmark case fills from the op's tuning table
FROM_TABLE = ("winner", "runner_up", "margin")


def new_record(op: str, dispatch: str | None, rng: Any) -> dict[str, Any]:
    """An empty record for a range or a multi-kernel hint region (whose ``lo`` is its
    variant's index, which orders the report)."""
    from .cases import range_label

    return {
        "op": op,
        "dispatch": dispatch,
        "range": range_label(rng),
        "lo": list(rng.lo) if isinstance(rng.lo, tuple) else rng.lo,  # a grid cell's: one per dimension
        "hi": rng.hi,
        "examples": 0,
        "checked": [],
        "statuses": [],
        "problems": [],
    }


def key_of(record: Mapping[str, Any]) -> str:
    return f"{record['op']}|{record['range']}"


def merge(records: dict[str, dict[str, Any]], part: Mapping[str, Any]) -> None:
    """Fold one case's (or one worker's) record into ``records``: counts add up, lists join,
    measured fields are taken from whichever part has them."""
    key = key_of(part)
    into = records.setdefault(key, {k: v for k, v in part.items() if k in ("op", "dispatch", "range", "lo", "hi")})
    into["examples"] = into.get("examples", 0) + int(part.get("examples", 0))
    for name in ("checked", "statuses", "problems", "notes"):
        into[name] = sorted(set(into.get(name, [])) | set(part.get(name, [])))
    measured = part.get("times_ms") is not None  # a benchmark's numbers beat the table's
    for name, value in part.items():
        if name not in into or (into[name] is None and value is not None) or (measured and name in FROM_TABLE):
            into[name] = value


def status(record: Mapping[str, Any]) -> str:
    found = set(record.get("statuses", []))
    return next((s for s in SEVERITY if s in found), "ok")


def ordered(records: Mapping[str, Mapping[str, Any]]) -> list[Mapping[str, Any]]:
    return sorted(records.values(), key=lambda r: (r["op"], r["lo"]))


def format_ms(value: Any) -> str:
    """Milliseconds as ``12.3us`` or ``1.234ms``; ``-`` when missing or infinite."""
    if value is None or not isinstance(value, (int, float)) or not math.isfinite(value):
        return "-"
    return f"{value * 1e3:.1f}us" if value < 1 else f"{value:.3f}ms"


def _pct(value: Any) -> str:
    return "-" if value is None or not math.isfinite(value) else f"{value:+.1%}"


COLUMNS = ("op", "range", "winner", "runner-up", "margin", "dispatched", "best", "regret", "examples", "status")


def rows(records: Mapping[str, Mapping[str, Any]]) -> list[tuple[str, ...]]:
    out = []
    for r in ordered(records):
        rng = f"{r['dispatch']} in {r['range']}" if r.get("dispatch") else r["range"]
        out.append((
            r["op"], rng, r.get("winner") or "-", r.get("runner_up") or "-", _pct(r.get("margin")),
            format_ms(r.get("dispatch_ms")), format_ms(r.get("best_ms")), _pct(r.get("regret")),
            str(r.get("examples", 0)), status(r),
        ))
    return out


def terminal_lines(records: Mapping[str, Mapping[str, Any]]) -> list[str]:
    table = [COLUMNS, *rows(records)]
    widths = [max(len(row[i]) for row in table) for i in range(len(COLUMNS))]
    fmt = lambda row: "  ".join(c.ljust(w) for c, w in zip(row, widths)).rstrip()  # noqa: E731
    lines = [fmt(table[0]), fmt(tuple("-" * w for w in widths))]
    lines += [fmt(row) for row in table[1:]]
    for name, prefix in (("problems", "- "), ("notes", "note: ")):
        found = collected(records, name)
        if found:
            lines += [""] + [prefix + item for item in found]
    found = table_sources(records)
    if found:
        lines += [""] + [f"table: {item}" for item in found]
    return lines


def table_sources(records: Mapping[str, Mapping[str, Any]]) -> list[str]:
    """Where each op's table came from (tuned now, or loaded and verified or trusted), once per op."""
    seen: dict[str, str] = {}
    for r in ordered(records):
        if r.get("table_source"):
            seen.setdefault(r["op"], f"{r['op']}: {r['table_source']}")
    return list(seen.values())


def collected(records: Mapping[str, Mapping[str, Any]], name: str) -> list[str]:
    """Every record's ``name`` list (problems, notes), in report order."""
    return [item for r in ordered(records) for item in r.get(name, [])]


def markdown(records: Mapping[str, Mapping[str, Any]]) -> str:
    lines = ["# rangedispatch report", "",
             "Per op and range: the table's winner, the runner-up and its margin, the dispatched op's time "
             "against the per-size best candidate (regret), equivalence examples run, and the status.", "",
             "| " + " | ".join(COLUMNS) + " |", "|" + "---|" * len(COLUMNS)]
    for row in rows(records):
        lines.append("| " + " | ".join(c.replace("|", "\\|") for c in row) + " |")
    for name, title in (("problems", "Problems"), ("notes", "Notes")):
        found = collected(records, name)
        if found:
            lines += ["", f"## {title}", ""] + [f"- {item}" for item in found]
    found = table_sources(records)
    if found:
        lines += ["", "## Tables", ""] + [f"- {item}" for item in found]
    return "\n".join(lines) + "\n"


def atomic_write(path: Path, text: str) -> None:
    """Write through a temporary file and a rename: an interrupted run leaves the old file.
    (``rangedispatch.decide.table.atomic_write_text`` does the same; importing it would import torch.)"""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "w") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def report_paths(path: str | os.PathLike[str]) -> tuple[Path, Path, Path]:
    """``PATH`` -> ``PATH.json``, ``PATH.md``, ``PATH.png`` (a ``.json`` suffix is dropped first)."""
    base = Path(path)
    if base.suffix in (".json", ".md", ".png"):
        base = base.with_suffix("")
    return base.with_name(base.name + ".json"), base.with_name(base.name + ".md"), base.with_name(base.name + ".png")


def write_report(path: str | os.PathLike[str], records: Mapping[str, Mapping[str, Any]]) -> list[Path]:
    json_path, md_path, png_path = report_paths(path)
    data = {"format": REPORT_FORMAT, "version": VERSION,
            "ranges": [dict(r, status=status(r)) for r in ordered(records)]}
    atomic_write(json_path, json.dumps(data, indent=2, sort_keys=True, default=_jsonable) + "\n")
    atomic_write(md_path, markdown(records))
    written = [json_path, md_path]
    if plot(png_path, records):
        written.append(png_path)
    return written


def _jsonable(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return str(value)


def plot(path: Path, records: Mapping[str, Mapping[str, Any]]) -> bool:
    """Time vs size per candidate, one panel per op, the chosen ranges shaded; needs matplotlib."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    by_op: dict[str, list[Mapping[str, Any]]] = {}
    for r in ordered(records):
        if r.get("per_size") and isinstance(r["lo"], (int, float)):  # a grid's cells have no size axis
            by_op.setdefault(r["op"], []).append(r)
    if not by_op:
        return False
    fig, axes = plt.subplots(len(by_op), 1, figsize=(8, 3.2 * len(by_op)), squeeze=False)
    for ax, (op, recs) in zip(axes[:, 0], by_op.items()):
        series: dict[str, list[tuple[float, float]]] = {}
        for i, r in enumerate(recs):
            for name, pts in r["per_size"].items():
                series.setdefault(name, []).extend((max(s, 1), t) for s, t in pts)
            hi = r["hi"] if r["hi"] is not None else max(s for s in r.get("sizes", [r["lo"]]) or [r["lo"]]) * 1.2
            ax.axvspan(max(r["lo"], 1), max(hi, r["lo"] + 1), alpha=0.08 * (1 + i % 2), color="grey")
            ax.text(max(r["lo"], 1), 1.0, f" {r.get('winner', '')}", transform=ax.get_xaxis_transform(),
                    va="top", fontsize=8)
        for name, pts in sorted(series.items()):
            pts.sort()
            ax.plot([p[0] for p in pts], [p[1] for p in pts], marker="o", lw=2.4 if name == "dispatch" else 1.2,
                    ls="--" if name == "dispatch" else "-", label=name)
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_title(f"{op}: time vs {recs[0].get('dispatch') or 'size'} (shaded: tuned ranges)")
        ax.set_xlabel("size")
        ax.set_ylabel("ms")
        ax.legend(fontsize=8)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp.png")
    fig.savefig(tmp, dpi=110)
    plt.close(fig)
    os.replace(tmp, path)
    return True


# -- baselines ---------------------------------------------------------------------------------

def parse_threshold(text: str) -> float:
    """``"10%"`` or ``"0.1"`` -> 0.1."""
    value = str(text).strip()
    try:
        number = float(value[:-1]) / 100 if value.endswith("%") else float(value)
    except ValueError:
        raise ValueError(
            f"--rangedispatch-fail-regression={text!r}: expected a percentage such as 10% (or a fraction such as 0.1)"
        ) from None
    if not number > 0:
        raise ValueError(f"--rangedispatch-fail-regression={text!r}: the threshold must be above 0")
    return number


def load_baseline(path: str | os.PathLike[str]) -> dict[str, Any]:
    p = Path(path)
    try:
        data = json.loads(p.read_text())
    except FileNotFoundError:
        raise ValueError(f"--rangedispatch-baseline={p}: no such file; save one first with --rangedispatch-save-baseline") from None
    except json.JSONDecodeError as exc:
        raise ValueError(f"--rangedispatch-baseline={p}: not valid JSON ({exc})") from None
    if not isinstance(data, dict) or data.get("format") != BASELINE_FORMAT:
        raise ValueError(f"--rangedispatch-baseline={p}: not a rangedispatch baseline (format {data.get('format') if isinstance(data, dict) else None!r})")
    if data.get("version") != VERSION:
        raise ValueError(f"--rangedispatch-baseline={p}: baseline version {data.get('version')!r}, this plugin reads {VERSION}")
    return data


def baseline_from(records: Mapping[str, Mapping[str, Any]], previous: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """A baseline of every benchmarked range; ranges not measured this run keep their old entry."""
    ops: dict[str, dict[str, Any]] = {op: dict(ranges) for op, ranges in ((previous or {}).get("ops") or {}).items()}
    for r in ordered(records):
        if r.get("times_ms") is None:
            continue
        ops.setdefault(r["op"], {})[r["range"]] = {
            "winner": r.get("winner"),
            "times_ms": {k: v for k, v in r["times_ms"].items() if isinstance(v, (int, float)) and math.isfinite(v)},
            "dispatch_ms": r.get("dispatch_ms"),
            "sizes": r.get("sizes", []),
            "device": r.get("device"),
        }
    return {"format": BASELINE_FORMAT, "version": VERSION, "ops": ops}


def save_baseline(path: str | os.PathLike[str], data: Mapping[str, Any]) -> Path:
    p = Path(path)
    atomic_write(p, json.dumps(data, indent=2, sort_keys=True, default=_jsonable) + "\n")
    return p


def dumps(records: Mapping[str, Any]) -> str:
    return json.dumps(records, default=_jsonable)


def loads(text: str) -> dict[str, Any]:
    return json.loads(text)


def merge_all(records: dict[str, dict[str, Any]], parts: Iterable[Mapping[str, Any]]) -> None:
    for part in parts:
        merge(records, part)
