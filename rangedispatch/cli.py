"""Command line: ``rangedispatch demo | show PATH | tune MODULE:OP ... | cache | compat``."""

from __future__ import annotations

import argparse
import importlib
import json
import logging
import os
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
    tune = sub.add_parser("tune", help="tune an op ahead of time and write its table to a file",
                          description="Tune MODULE:OP (a @range_dispatch op or a registered custom op) on "
                                      "the example inputs that --example returns, and write the table (and "
                                      "the profile, if given) for CI and production to load with "
                                      "op.load_table(PATH).")
    tune.add_argument("target", metavar="MODULE:OP", help="e.g. mypkg.ops:attention")
    tune.add_argument("--example", metavar="MODULE:FN",
                      help="a function returning the example call's args tuple, or (args, kwargs) "
                           "(default: MODULE:<OP>_example, then MODULE:example)")
    tune.add_argument("--profile", metavar="PATH", help="recorded sizes (op.save_table writes <table>.sizes.json)")
    tune.add_argument("--auto", action="store_true", help="discover the split points instead of the op's own")
    tune.add_argument("--lo", type=int, default=1, help="with --auto: smallest size searched")
    tune.add_argument("--hi", type=int, default=None, help="with --auto: largest size searched")
    tune.add_argument("--budget", type=int, default=None, help="with --auto: most (candidate, size) benchmarks")
    tune.add_argument("--out", metavar="PATH", help="table file (default: <op name>.table.json)")
    tune.add_argument("--quiet", action="store_true", help="no progress lines")
    cache = sub.add_parser("cache", help="print the cache directory and its tables")
    cache.add_argument("--clear", action="store_true", help="delete every cached table")
    sub.add_parser("compat", help="which private torch APIs this torch offers, and the fallback used for each missing one")
    opts = parser.parse_args(argv)
    if opts.verbose:
        logging.basicConfig(level=logging.INFO, format="%(levelname)s - %(message)s")

    if opts.command == "demo":
        from .demo import run_demo

        print(run_demo(device=opts.device))
        return 0
    if opts.command == "compat":
        from .compat import main as compat_main

        compat_main()
        return 0
    from .errors import TableError
    from .decide.table import TuningTable

    if opts.command == "tune":
        return _tune(opts)

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
    from .decide.cache import cache_dir

    directory = cache_dir()
    if directory is None:
        print(f"tuning cache is off (RANGEDISPATCH_CACHE={os.environ.get('RANGEDISPATCH_CACHE', 'off')})")
        return 0
    files = sorted(directory.glob("*.json")) if directory.exists() else []
    print(f"{directory}: {len(files)} table(s)")
    for f in files:
        if opts.clear:
            f.unlink()
        else:
            print(f"  {f.name}")
    return 0


def _load(spec: str, what: str) -> object:
    from .errors import ConfigError

    module, _, attr = spec.partition(":")
    if not module or not attr:
        raise ConfigError(f"Expected {what} as MODULE:NAME (e.g. mypkg.ops:attention) but got {spec!r}")
    sys.path.insert(0, ".")
    try:
        return getattr(importlib.import_module(module), attr)
    except (ImportError, AttributeError) as exc:
        raise ConfigError(f"could not load {what} {spec!r}: {exc}") from exc


def _tune(opts: argparse.Namespace) -> int:
    import time

    from .decide.discover import AutoSettings
    from .errors import RangeDispatchError
    from .op.core import RangeDispatchOp
    from .registration import dispatcher_of

    try:
        target = _load(opts.target, "the op")
        op = target if isinstance(target, RangeDispatchOp) else dispatcher_of(target)
        module = opts.target.partition(":")[0]
        candidates = [opts.example] if opts.example else [f"{module}:{opts.target.partition(':')[2]}_example",
                                                          f"{module}:example"]
        example = None
        for spec in candidates:
            try:
                example = _load(spec, "the example")
                break
            except RangeDispatchError:
                continue
        if example is None:
            raise RangeDispatchError(f"no example inputs: pass --example MODULE:FN (tried {', '.join(candidates)})")
        call = example() if callable(example) else example
        args, kwargs = call if (isinstance(call, tuple) and len(call) == 2 and isinstance(call[1], dict)) \
            else (tuple(call), {})
        if opts.auto:
            op.auto = AutoSettings(lo=opts.lo, hi=opts.hi or op.settings.upper_bound, budget=opts.budget)
        if not opts.quiet:
            start = time.perf_counter()
            handler = logging.StreamHandler(sys.stderr)
            handler.setFormatter(logging.Formatter("%(message)s"))
            handler.addFilter(lambda r: setattr(r, "msg", f"[{time.perf_counter() - start:6.1f}s] {r.msg}") or True)
            logger = logging.getLogger("rangedispatch")
            logger.addHandler(handler)
            logger.setLevel(logging.INFO)
        table = op.tune(*args, force=True, profile=opts.profile, **kwargs)
        out = op.save_table(opts.out or f"{op.name}.table.json")
    except RangeDispatchError as exc:
        print(f"rangedispatch: {exc}", file=sys.stderr)
        return 2
    print(table.format())
    if table.settings.get("discovery"):
        print(f"automatic split points: {table.settings['discovery']}")
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
