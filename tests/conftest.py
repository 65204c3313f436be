"""Shared fixtures: a clean environment so no developer setting leaks into a test."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

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


def pytest_configure(config: pytest.Config) -> None:
    """Keep the cockpit's screen snapshots in ``snapshots/`` at the top of the repository.

    pytest-textual-snapshot stores them through syrupy's single-file extension, whose
    ``dirname`` is ``<test dir>/__snapshots__/<test file>``; the plugin has no option for
    it, so its extension's ``dirname`` is replaced once here.
    """
    try:
        from pytest_textual_snapshot import SVGImageExtension
    except ImportError:  # the plugin is not installed: no snapshot tests to place
        return

    def dirname(cls: type, *, test_location: Any) -> str:
        return str(REPO / "snapshots" / test_location.basename)

    SVGImageExtension.dirname = classmethod(dirname)  # type: ignore[method-assign,assignment]
