"""Fixtures for the pretraining recipe tests: a shared cache for the tiny model and phantoms."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("OMP_NUM_THREADS", "1")


@pytest.fixture()
def infimed_cache(monkeypatch) -> str:
    """Where ``tiny://`` and ``phantoms://`` are built (kept between runs: both are deterministic)."""
    path = os.environ.get("INFIMED_TEST_CACHE", str(Path.home() / ".cache" / "infimed-tests"))
    monkeypatch.setenv("INFIMED_CACHE", path)
    return path
