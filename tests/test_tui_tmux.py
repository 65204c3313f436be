"""The real ``gal-friday --exchange sim`` cockpit in a real terminal (tmux), end to end."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

TMUX = shutil.which("tmux") or "/usr/bin/tmux"
pytestmark = pytest.mark.skipif(not os.path.exists(TMUX), reason="tmux is not installed")


def pane(session: str) -> str:
    return subprocess.run(
        [TMUX, "capture-pane", "-p", "-t", session], capture_output=True, text=True, check=True
    ).stdout


def wait_for(session: str, needle: str, within_s: float) -> str:
    deadline = time.monotonic() + within_s
    text = ""
    while time.monotonic() < deadline:
        text = pane(session)
        if needle in text:
            return text
        time.sleep(0.2)
    pytest.fail(f"{needle!r} not on the screen within {within_s}s; screen:\n{text}")


def test_cockpit_in_tmux_shows_header_and_h_halts(in_tmp: Path) -> None:
    session = f"gf-test-{uuid.uuid4().hex[:8]}"
    # a clean environment: the tmux server's own may hold anyone's GAL_FRIDAY_* or NO_COLOR
    command = (
        f"cd {in_tmp} && env -i HOME=$HOME PATH=$PATH TERM=$TERM LANG=C.UTF-8 "
        f"{sys.executable} -m gal_friday --exchange sim; sleep 5"
    )
    subprocess.run(
        [TMUX, "new-session", "-d", "-s", session, "-x", "160", "-y", "48", command], check=True
    )
    try:
        screen = wait_for(session, "feed connected", within_s=90)
        assert "SIM" in screen and "gal-friday" in screen and "TRADING" in screen
        assert "XRP/USD book" in screen and "risk" in screen
        subprocess.run([TMUX, "send-keys", "-t", session, "h"], check=True)
        screen = wait_for(session, "HALTED", within_s=5)
        assert "operator halt from the cockpit" in screen
        status = subprocess.run(
            [sys.executable, "-m", "gal_friday", "status"],
            cwd=in_tmp,
            capture_output=True,
            text=True,
            timeout=30,
        )
        assert status.returncode == 0 and "HALTED (operator)" in status.stdout
        subprocess.run([TMUX, "send-keys", "-t", session, "q"], check=True)
        wait_for(session, "Quit?", within_s=5)
        subprocess.run([TMUX, "send-keys", "-t", session, "y"], check=True)
        deadline = time.monotonic() + 20
        while (in_tmp / "data" / "control.sock").exists() and time.monotonic() < deadline:
            time.sleep(0.2)
        assert not (in_tmp / "data" / "control.sock").exists()  # stopped cleanly
    finally:
        subprocess.run([TMUX, "kill-session", "-t", session], check=False, capture_output=True)
