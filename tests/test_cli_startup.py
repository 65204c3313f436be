"""The control commands start fast: they never import the engine's heavy libraries.

``gal-friday status`` (and halt, reduce, resume, flatten, config, --help) only parse options,
read the configuration and talk to the control socket; the engine, backtest, training, cockpit
and simulator modules, and numpy / scipy / LightGBM / Textual / matplotlib / aiohttp with
them, are imported inside the commands that use them. Checked by what the real command
imports (``python -X importtime -m gal_friday ...``), not by how long it takes.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

HEAVY = {"numpy", "scipy", "lightgbm", "textual", "matplotlib", "aiohttp"}


def imported_modules(*args: str, cwd: Path) -> tuple[int, set[str]]:
    """Exit code of ``python -X importtime -m gal_friday ARGS`` and every module it imported."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("GAL_FRIDAY_", "KRAKEN_"))}
    done = subprocess.run(
        [sys.executable, "-X", "importtime", "-m", "gal_friday", *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    modules = {
        line.rsplit("|", 1)[1].strip()
        for line in done.stderr.splitlines()
        if line.startswith("import time:") and line.count("|") == 2
    }
    assert "gal_friday.cli" in modules, done.stderr[-2000:]  # the listing was read
    return done.returncode, modules


@pytest.mark.parametrize(
    ("args", "code"),
    [
        (("status",), 1),  # no instance running: one line, exit 1
        (("status", "--json"), 1),
        (("halt", "--reason", "test"), 1),
        (("reduce",), 1),
        (("resume", "--yes"), 1),
        (("flatten", "--yes"), 1),
        (("config",), 0),
        (("config", "--json"), 0),
        (("--help",), 0),
        (("status", "--help"), 0),
        (("backtest", "--help"), 0),
    ],
)
def test_control_commands_do_not_import_heavy_modules(
    args: tuple[str, ...], code: int, tmp_path: Path
) -> None:
    returncode, modules = imported_modules(*args, cwd=tmp_path)
    assert returncode == code
    top_level = {name.split(".")[0] for name in modules}
    assert not top_level & HEAVY, sorted(top_level & HEAVY)
    engine = {
        "gal_friday.engine",
        "gal_friday.headless",
        "gal_friday.tui.app",
        "gal_friday.backtest.cli",
        "gal_friday.prediction",
        "gal_friday.sim",
        "gal_friday.features",
    }
    assert not modules & engine, sorted(modules & engine)


def test_the_check_sees_heavy_imports_when_a_command_makes_them(tmp_path: Path) -> None:
    """The same listing shows numpy and the backtest engine once the backtest command runs
    (here it stops at once on a bad option): the check above is not vacuous."""
    returncode, modules = imported_modules("backtest", "--synthetic", "-1", cwd=tmp_path)
    assert returncode == 2
    assert {"numpy", "gal_friday.backtest.cli"} <= modules
