"""The cockpit: every binding's effect on the system, state keeping, and separation."""

from __future__ import annotations

import functools
import subprocess
import sys
import time
from decimal import Decimal as D

import cockpit_script as script
from textual.actions import parse as parse_action
from textual.binding import Binding
from textual.pilot import Pilot

from gal_friday.bus import EventBus
from gal_friday.config import Settings
from gal_friday.events import (
    BookEvent,
    CandleEvent,
    Event,
    FlattenEvent,
    HaltEvent,
    OrderType,
    ReduceEvent,
    ResumeEvent,
    Side,
    TradeSignalProposedEvent,
    TradeSignalRejectedEvent,
)
from gal_friday.risk import RiskManager
from gal_friday.tui import render
from gal_friday.tui.app import CockpitApp
from gal_friday.tui.screens import ConfirmScreen
from gal_friday.tui.widgets import CockpitHeader

SETTINGS = Settings(exchange="sim")
CONTROL = (HaltEvent, ReduceEvent, ResumeEvent, FlattenEvent, TradeSignalRejectedEvent)


class Rig:
    """A scripted cockpit plus a sink of the control events it publishes."""

    def __init__(self, settings: Settings = SETTINGS) -> None:
        self.bus = EventBus()
        self.seen: list[Event] = []
        self.bus.subscribe(CONTROL, self.seen.append, name="sink")
        # the trading state's owner, as in a run: the cockpit shows what it announces
        self.risk = RiskManager(settings.risk, self.bus, script.portfolio, taker_fee_pct=D("0.4"))
        self.risk.attach()
        self.app, self.runner = script.scripted_app(settings, bus=self.bus, owner=False)

    async def ready(self, pilot: Pilot[int]) -> None:
        await self.runner.played.wait()
        await pilot.pause()

    async def press(self, pilot: Pilot[int], *keys: str) -> None:
        await pilot.press(*keys)
        await pilot.pause()
        await self.bus.drain()

    def of(self, kind: type[Event]) -> list[Event]:
        return [e for e in self.seen if isinstance(e, kind)]


def entry(sid: str) -> TradeSignalProposedEvent:
    return TradeSignalProposedEvent(
        sid,
        "XRP/USD",
        Side.BUY,
        OrderType.LIMIT,
        D("2.34"),
        D("2.32"),
        D("2.36"),
        0.7,
        "m",
        script.T0,
    )


async def test_halt_acts_at_once_and_risk_then_rejects_entries() -> None:
    rig = Rig()
    risk = rig.risk
    async with rig.app.run_test(size=(160, 48)) as pilot:
        await rig.ready(pilot)
        await rig.press(pilot, "h")
        assert not isinstance(rig.app.screen, ConfirmScreen)  # no question asked
        [halt] = rig.of(HaltEvent)
        assert halt.source == "operator"  # type: ignore[attr-defined]
        assert risk.halted and rig.app.state.halted
        await rig.bus.publish(entry("after-halt"))
        await rig.bus.drain()
        await rig.bus.drain()  # the rejection is published while risk handles the signal
        [rejected] = [e for e in rig.of(TradeSignalRejectedEvent) if e.signal_id == "after-halt"]  # type: ignore[attr-defined]
        assert rejected.reason.startswith("halt")  # type: ignore[attr-defined]
        rig.app.repaint()
        assert rig.app.query_one(CockpitHeader).has_class("-halted")
        await rig.press(pilot, "h")  # already halted: nothing more
        assert len(rig.of(HaltEvent)) == 1


async def test_flatten_publishes_only_after_confirmation() -> None:
    rig = Rig()
    async with rig.app.run_test(size=(160, 48)) as pilot:
        await rig.ready(pilot)
        await rig.press(pilot, "f")
        modal = rig.app.screen
        assert isinstance(modal, ConfirmScreen)
        assert modal.message.startswith(
            "Close 2 positions at market: XRP/USD 1,000, DOGE/USD 5,000."
        )
        assert "Cancel 1 working entry order." in modal.message
        await rig.press(pilot, "n")
        await rig.press(pilot, "f", "escape")
        await rig.press(pilot, "f", "enter")  # Enter lands on Cancel, the focused button
        assert rig.of(FlattenEvent) == []
        await rig.press(pilot, "f", "y")
        assert [e.operator for e in rig.of(FlattenEvent)] == ["cockpit"]  # type: ignore[attr-defined]
        assert not isinstance(rig.app.screen, ConfirmScreen)


async def test_resume_requires_confirmation() -> None:
    rig = Rig()
    async with rig.app.run_test(size=(160, 48)) as pilot:
        await rig.ready(pilot)
        await rig.press(pilot, "r")  # not halted: nothing to resume, no modal
        assert not isinstance(rig.app.screen, ConfirmScreen)
        await rig.press(pilot, "h", "r")
        modal = rig.app.screen
        assert isinstance(modal, ConfirmScreen) and "operator halt" in modal.message
        await rig.press(pilot, "n")
        assert rig.of(ResumeEvent) == [] and rig.app.state.halted
        await rig.press(pilot, "r", "y")
        assert len(rig.of(ResumeEvent)) == 1 and not rig.app.state.halted


async def test_quit_asks_then_exits_and_stops_the_runner() -> None:
    rig = Rig()
    async with rig.app.run_test(size=(80, 24)) as pilot:
        await rig.ready(pilot)
        await rig.press(pilot, "q")
        assert isinstance(rig.app.screen, ConfirmScreen)
        assert "2 open positions are left" in rig.app.screen.message
        await rig.press(pilot, "n")
        assert rig.app.is_running
        await pilot.press("q", "y")
        await pilot.pause()
    assert rig.app.return_code == 0


async def test_pair_keys_switch_the_visible_pair_when_not_all_fit() -> None:
    rig = Rig()
    async with rig.app.run_test(size=(80, 24)) as pilot:
        await rig.ready(pilot)
        app = rig.app
        assert app.visible_pairs == 1
        hidden = lambda: [w.id for w in app.query(".pair.-hidden")]  # noqa: E731
        assert hidden() == ["pair-1"]
        await rig.press(pilot, "tab")
        assert hidden() == ["pair-0"]
        await rig.press(pilot, "1")
        assert hidden() == ["pair-1"]
        await rig.press(pilot, "9")  # no ninth pair: ignored
        assert app.selected == 0
    wide = Rig()
    async with wide.app.run_test(size=(160, 48)) as pilot:
        await wide.ready(pilot)
        assert wide.app.visible_pairs == 2
        assert not wide.app.check_action("next_pair", ())


def palette_actions(app: CockpitApp) -> set[tuple[str, tuple[object, ...]]]:
    """(action, arguments) of every command the palette offers, from its callbacks."""
    actions: set[tuple[str, tuple[object, ...]]] = set()
    for command in app.get_system_commands(app.screen):
        callback, args = command.callback, ()
        if isinstance(callback, functools.partial):
            callback, args = callback.func, tuple(callback.args)
        name = getattr(callback, "__name__", "")
        if getattr(callback, "__self__", None) is app and name.startswith("action_"):
            actions.add((name.removeprefix("action_"), args))
    return actions


async def test_command_palette_offers_every_action() -> None:
    """Each action a key binding offers is in the palette (ctrl+p) too, with the same
    method and arguments; and choosing one there does what the key does."""
    rig = Rig()
    async with rig.app.run_test(size=(160, 48)) as pilot:
        await rig.ready(pilot)
        offered = palette_actions(rig.app)
        bound = {(b.action, b.key) for b in CockpitApp.BINDINGS if isinstance(b, Binding)}
        assert len(bound) == len(CockpitApp.BINDINGS)
        for action, key in bound:
            _, name, args = parse_action(action)
            if name == "pair" and args[0] >= len(rig.app.pair_names):  # type: ignore[operator]
                continue  # the key of a pair that is not configured does nothing
            assert (name, args) in offered, f"key {key!r} ({action}) is not in the palette"
        assert ("reduce", ()) in offered and ("pair", (1,)) in offered
        titles = [c.title for c in rig.app.get_system_commands(rig.app.screen)]
        for title in (
            "Halt trading",
            "Reduce trading",
            "Resume trading",
            "Flatten",
            "Next pair",
            "Show XRP/USD",
            "Show DOGE/USD",
            "Quit gal-friday",
        ):
            assert title in titles
        for words, kind in (("reduce trading", ReduceEvent), ("halt trading", HaltEvent)):
            await rig.press(pilot, "ctrl+p")
            await pilot.press(*words)
            await pilot.pause(0.3)
            await rig.press(pilot, "enter")
            await pilot.pause()
            await rig.bus.drain()
            assert len(rig.of(kind)) == 1, words
        await rig.press(pilot, "ctrl+p")
        await pilot.press(*"show doge")
        await pilot.pause(0.3)
        await rig.press(pilot, "enter")
        assert rig.app.selected == 1


async def test_book_flood_is_conflated_and_keys_still_answer() -> None:
    """1,000 book updates a second for a second: the cockpit sees the newest per pair and a
    key press still reaches the bus quickly."""
    rig = Rig()
    async with rig.app.run_test(size=(160, 48)) as pilot:
        await rig.ready(pilot)
        start = time.perf_counter()
        latency = float("inf")
        for i in range(1000):
            pair = ("XRP/USD", "DOGE/USD")[i % 2]
            await rig.bus.publish(script.book(pair, seq=i + 2, ts_ns=script.T0))
            if i == 500:
                pressed_at = time.perf_counter()
                await pilot.press("h")
                await rig.bus.drain()
                latency = time.perf_counter() - pressed_at
            target = start + (i + 1) / 1000
            delay = target - time.perf_counter()
            if delay > 0:
                await pilot.pause(delay)
        await rig.bus.drain()
        stats = {s.name: s for s in rig.bus.stats()}["tui-latest"]
        assert stats.conflated > 0
        assert rig.app.state.pairs["XRP/USD"].book is not None
        assert rig.app.state.pairs["XRP/USD"].book.sequence == 1000
        assert len(rig.of(HaltEvent)) == 1
        assert latency < 0.5


def test_state_keeps_candle_history_by_minute() -> None:
    from gal_friday.tui.state import CockpitState

    state = CockpitState(SETTINGS, clock=script.frozen_clock)
    for c in script.candles("XRP/USD", minutes=5):
        state.on_every(c)
        state.on_every(c)  # the same minute again updates, not appends
    closes = state.pairs["XRP/USD"].closes
    assert closes is not None and len(closes) == 5
    older = CandleEvent(
        "XRP/USD", 60, script.T0 - 3600 * 10**9, D(1), D(1), D(1), D(1), D(1), D(1), 1, True, 0
    )
    state.on_every(older)  # out of order: ignored
    assert len(closes) == 5


def test_render_helpers() -> None:
    assert render.bar(0.5, 4) == "██  "
    assert render.bar(2.0, 3) == "███"
    assert render.sparkline([1, 2, 3], width=3, height=1) == ["▁▅█"]
    assert render.fmt_qty(D("1234567")) == "1.23M" and render.fmt_qty(D("0.5")) == "0.5"
    styles = {
        role: render.Style()
        for role in ("bid", "ask", "ok", "warn", "bad", "muted", "value", "chart")
    }
    book: BookEvent = script.book("XRP/USD")
    text = render.ladder(book, "", 0.3, rows=8, width=40, styles=styles).plain
    assert "spread 0.0002" in text and "age 0.3s" in text
    assert (
        "checksum" in render.ladder(book, "checksum", None, rows=8, width=40, styles=styles).plain
    )


async def test_live_mode_header_is_loud() -> None:
    live = Settings(exchange="kraken", mode="live")
    app, runner = script.scripted_app(live, events=[])
    assert isinstance(app, CockpitApp) and app.state.mode == "LIVE"
    async with app.run_test(size=(80, 24)) as pilot:
        await runner.played.wait()
        app.repaint()
        await pilot.pause()
        header = app.query_one(CockpitHeader)
        assert header.has_class("-live")
        live_style = header.get_component_rich_style("header--live")
        assert live_style.bold and live_style.bgcolor is not None


def test_engine_never_imports_textual() -> None:
    """Every gal_friday module except the cockpit imports without Textual."""
    code = """
import importlib, pkgutil, sys
import gal_friday
for mod in pkgutil.walk_packages(gal_friday.__path__, "gal_friday."):
    if mod.name.startswith("gal_friday.tui") or mod.name == "gal_friday.__main__":
        continue
    importlib.import_module(mod.name)
assert "gal_friday.engine" in sys.modules and "gal_friday.control" in sys.modules
bad = sorted(m for m in sys.modules if m == "textual" or m.startswith("textual."))
assert not bad, bad
print("ok")
"""
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0 and done.stdout.strip() == "ok", done.stderr


async def test_reduce_acts_at_once_then_risk_takes_exits_only() -> None:
    rig = Rig()
    risk = rig.risk
    async with rig.app.run_test(size=(160, 48)) as pilot:
        await rig.ready(pilot)
        await rig.press(pilot, "d")
        assert not isinstance(rig.app.screen, ConfirmScreen)
        [reduce] = rig.of(ReduceEvent)
        assert reduce.source == "operator"  # type: ignore[attr-defined]
        await rig.bus.drain()
        assert risk.reducing and rig.app.state.reducing
        await rig.bus.publish(entry("while-reducing"))
        await rig.bus.drain()
        await rig.bus.drain()
        [rejected] = [
            e for e in rig.of(TradeSignalRejectedEvent) if e.signal_id == "while-reducing"
        ]  # type: ignore[attr-defined]
        assert rejected.reason.startswith("reducing")  # type: ignore[attr-defined]
        await rig.press(pilot, "r")
        assert isinstance(rig.app.screen, ConfirmScreen)  # resume still asks
