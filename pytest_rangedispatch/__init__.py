"""pytest plugin for rangedispatch: equivalence checks per range and branch, tuning-cache
isolation. Loading it imports neither torch nor Hypothesis; they load when a test uses it."""

from .options import OPTION_CACHE_DIR, OPTION_REPORT

__all__ = ["OPTION_CACHE_DIR", "OPTION_REPORT"]
