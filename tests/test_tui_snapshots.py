"""Screen snapshots of the cockpit (stored in snapshots/; update with --snapshot-update).

Each screen is a fixed scripted sequence of bus events with a frozen clock and no
animation, so it paints the same on every run.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

import cockpit_script as script
import pytest
from textual.pilot import Pilot

from gal_friday.tui.app import CockpitApp

SnapCompare = Callable[..., bool]


@pytest.fixture(autouse=True)
def plain_terminal(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """A developer's NO_COLOR or TEXTUAL_THEME would change every screen."""
    for key in ("NO_COLOR", "TEXTUAL_THEME", "TEXTUAL_ANIMATIONS", "FORCE_COLOR"):
        monkeypatch.delenv(key, raising=False)
    yield


def scene(*keys: str) -> tuple[CockpitApp, Callable[[Pilot[int]], object]]:
    app, runner = script.scripted_app()

    async def run_before(pilot: Pilot[int]) -> None:
        await runner.played.wait()
        if keys:
            await pilot.press(*keys)
            await pilot.pause()
            await runner.bus.drain()
        app.repaint()
        await pilot.pause()

    return app, run_before


def test_normal_running(snap_compare: SnapCompare) -> None:
    app, before = scene()
    assert snap_compare(app, terminal_size=(160, 48), run_before=before)


def test_halted_with_reason(snap_compare: SnapCompare) -> None:
    app, before = scene("h")
    assert snap_compare(app, terminal_size=(160, 48), run_before=before)


def test_flatten_confirmation(snap_compare: SnapCompare) -> None:
    app, before = scene("f")
    assert snap_compare(app, terminal_size=(160, 48), run_before=before)


def test_narrow_80x24(snap_compare: SnapCompare) -> None:
    app, before = scene()
    assert snap_compare(app, terminal_size=(80, 24), run_before=before)
