"""Command-line option names, shared by the plugin and its tests."""

from __future__ import annotations

PREFIX = "--rangedispatch-"
OPTION_REPORT = PREFIX + "report"
OPTION_CACHE_DIR = PREFIX + "cache-dir"
MARKER = "range_autotune"
