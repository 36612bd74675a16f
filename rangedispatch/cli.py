"""Command line: ``rangedispatch demo | show PATH | tune MODULE:OP ... | cache``."""

from __future__ import annotations

import argparse
import importlib
import json
import logging
import sys
from typing import Sequence


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="rangedispatch", description="Range-based autotuning for PyTorch ops")
    parser.add_argument("-v", "--verbose", action="store_true", help="log tuning decisions (INFO)")
    sub = parser.add_subparsers(dest="command", required=True)
    demo = sub.add_parser("demo", help="tune the built-in weighted_scale op and print its table")
    demo.add_argument("--device", default=None, help="cpu or cuda (default: cuda if available)")
    show = sub.add_parser("show", help="print a saved tuning table")
    show.add_argument("path")
    show.add_argument("--json", action="store_true", help="print the raw JSON")
    export = sub.add_parser("export", help="copy a table, validated, to another path")
    export.add_argument("path")
    export.add_argument("dest")
    cache = sub.add_parser("cache", help="print the cache directory and its tables")
    cache.add_argument("--clear", action="store_true", help="delete every cached table")
    opts = parser.parse_args(argv)
    if opts.verbose:
        logging.basicConfig(level=logging.INFO, format="%(levelname)s - %(message)s")

    if opts.command == "demo":
        from .demo import run_demo

        print(run_demo(device=opts.device))
        return 0
    from .errors import TableError
    from .table import TuningTable

    if opts.command in ("show", "export"):
        try:
            table = TuningTable.load(opts.path)
        except TableError as exc:
            print(f"rangedispatch: {exc}", file=sys.stderr)
            return 2
        if opts.command == "export":
            print(f"wrote {table.save(opts.dest)}")
        elif opts.json:
            print(json.dumps(table.to_json(), indent=1))
        else:
            print(table.format())
        return 0
    from .cache import cache_dir

    directory = cache_dir()
    if directory is None:
        print("tuning cache is off (RANGEDISPATCH_CACHE=0)")
        return 0
    files = sorted(directory.glob("*.json")) if directory.exists() else []
    print(f"{directory}: {len(files)} table(s)")
    for f in files:
        if opts.clear:
            f.unlink()
        else:
            print(f"  {f.name}")
    return 0


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
