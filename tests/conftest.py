"""Shared fixtures: a clean environment so no developer setting leaks into a test; and the
servers some tests talk to, checked once before the first test."""

from __future__ import annotations

import asyncio
import os
import shutil
import subprocess
import sys
import tempfile
import urllib.request
from collections.abc import Callable, Iterator
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


# --- servers ----------------------------------------------------------------------------------

PG_DSN = "postgresql://postgres@127.0.0.1:5432/test"
VM_URL = "http://127.0.0.1:8428"


def _postgresql() -> None:
    import asyncpg

    async def ask() -> None:
        con = await asyncpg.connect(PG_DSN, timeout=5)
        try:
            await con.fetchval("SELECT 1")
        finally:
            await con.close()

    asyncio.run(ask())


def _victoria_metrics() -> None:
    with urllib.request.urlopen(f"{VM_URL}/health", timeout=5) as answer:
        if answer.status != 200:
            raise OSError(f"/health answered {answer.status}")


SERVERS: dict[str, tuple[str, Callable[[], None]]] = {
    "postgresql": (f"PostgreSQL ({PG_DSN}, trust auth)", _postgresql),
    "victoria-metrics": (f"VictoriaMetrics ({VM_URL})", _victoria_metrics),
}


@pytest.hookimpl(trylast=True)  # after -k / -m deselected what will not run
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Tests marked ``needs_server(NAME)`` talk to a real server. When one that the selected
    tests need does not answer, stop before the first test with one line that says how to
    start it: never a skip, and never dozens of connection errors. Tests marked
    ``beside_the_suite`` go last, and the crash loop they check starts now."""
    _check_servers(items)
    late = [item for item in items if item.get_closest_marker("beside_the_suite")]
    if late:
        items[:] = [item for item in items if item not in late] + late
        if not config.option.collectonly:
            config.stash[CRASH_LOOP] = CrashLoop()


def _check_servers(items: list[pytest.Item]) -> None:
    needed = sorted(
        {str(mark.args[0]) for item in items for mark in item.iter_markers("needs_server")}
    )
    unknown = [name for name in needed if name not in SERVERS]
    if unknown:
        raise pytest.UsageError(
            f"needs_server: unknown server(s) {unknown}; known: {sorted(SERVERS)}"
        )
    down = []
    for name in needed:
        what, check = SERVERS[name]
        try:
            check()
        except Exception as exc:
            down.append(f"{what} does not answer ({type(exc).__name__}: {exc})")
    if down:
        pytest.exit(
            f"{'; '.join(down)}. `bash scripts/test` starts the servers and runs the "
            "tests (see README.md)",
            returncode=pytest.ExitCode.TESTS_FAILED,
        )


# --- the crash loop, beside the suite ---------------------------------------------------------

CRASH_LOOP_KILLS = 10


class CrashLoop:
    """``benchmarks/crashloop.py --kills 10`` running in its own folder."""

    def __init__(self) -> None:
        self.folder = Path(tempfile.mkdtemp(prefix="gal-friday-crashloop-"))
        self.proc = subprocess.Popen(
            [
                sys.executable,
                str(REPO / "benchmarks" / "crashloop.py"),
                "--kills",
                str(CRASH_LOOP_KILLS),
                "--seed",
                "10",
                "--dir",
                str(self.folder / "run"),
                "--verbose",
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env={k: v for k, v in os.environ.items() if not k.startswith("KRAKEN_")},
        )

    def result(self, timeout_s: float) -> tuple[int, str, str]:
        out, err = self.proc.communicate(timeout=timeout_s)
        return self.proc.returncode, out, err

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.communicate()
        shutil.rmtree(self.folder, ignore_errors=True)


CRASH_LOOP = pytest.StashKey[CrashLoop]()


def pytest_unconfigure(config: pytest.Config) -> None:
    loop = config.stash.get(CRASH_LOOP, None)
    if loop is not None:
        loop.close()


@pytest.fixture
def crash_loop(request: pytest.FixtureRequest) -> CrashLoop:
    """The crash loop started when collection ended (see ``beside_the_suite``)."""
    return request.config.stash[CRASH_LOOP]
