"""Shared fixtures: a clean environment so no developer setting leaks into a test."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    for key in list(os.environ):
        if key.startswith(("GAL_FRIDAY_", "KRAKEN_")):
            monkeypatch.delenv(key)
    yield


@pytest.fixture
def in_tmp(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Run in an empty directory (no ./config.toml), so only explicit files count."""
    monkeypatch.chdir(tmp_path)
    return tmp_path


REPO = Path(__file__).resolve().parent.parent
