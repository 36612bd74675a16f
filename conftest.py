"""Repository-wide test setup: an isolated tuning cache and a quiet Hypothesis profile."""

from __future__ import annotations


import pytest

pytest_plugins = ["pytester"]


@pytest.fixture(autouse=True)
def _isolated_tuning_cache(tmp_path, monkeypatch):
    """Every test gets its own cache directory so tables never leak between tests."""
    monkeypatch.setenv("RANGEDISPATCH_CACHE_DIR", str(tmp_path / "rangedispatch-cache"))
    monkeypatch.delenv("RANGEDISPATCH_CACHE", raising=False)
    yield


def pytest_collection_modifyitems(config, items):
    import torch

    if not torch.cuda.is_available():
        skip = pytest.mark.skip(reason="needs a CUDA device")
        for item in items:
            if "gpu" in item.keywords:
                item.add_marker(skip)


