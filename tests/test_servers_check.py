"""The session-level server check (conftest.py): a server that the selected tests need and
that does not answer stops the run before the first test, with one line saying how to start
it; tests that need no server run without one."""

from __future__ import annotations

import socket
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent

NEEDS_VM = """
import pytest

@pytest.mark.needs_server("victoria-metrics")
def test_talks_to_the_server():
    pass

def test_needs_nothing():
    pass
"""


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def run_pytest(tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """This suite's conftest.py, with VictoriaMetrics moved to a port nobody listens on."""
    conftest = (HERE / "conftest.py").read_text()
    assert conftest.count("127.0.0.1:8428") == 1
    (tmp_path / "conftest.py").write_text(
        conftest.replace("127.0.0.1:8428", f"127.0.0.1:{closed_port()}")
    )
    (tmp_path / "test_vm.py").write_text(NEEDS_VM)
    (tmp_path / "pytest.ini").write_text(
        "[pytest]\naddopts = --strict-markers\nmarkers =\n    needs_server(name): a server\n"
    )
    return subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", *args],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_a_missing_server_stops_the_run_with_one_line_saying_how_to_start_it(
    tmp_path: Path,
) -> None:
    done = run_pytest(tmp_path)
    assert done.returncode == 1, done.stdout
    assert "passed" not in done.stdout and "skipped" not in done.stdout
    [line] = [line for line in done.stdout.splitlines() if "does not answer" in line]
    assert "VictoriaMetrics (http://127.0.0.1:" in line and "bash scripts/test" in line


def test_tests_that_need_no_server_run_without_it(tmp_path: Path) -> None:
    done = run_pytest(tmp_path, "-k", "needs_nothing")
    assert done.returncode == 0, done.stdout
    assert "1 passed" in done.stdout
