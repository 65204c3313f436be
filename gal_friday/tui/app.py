"""The Textual cockpit: ``gal-friday`` without ``--no-ui``.

The app is one more consumer of the engine's bus. It runs the engine as a task on its own
event loop, keeps the latest state in :class:`CockpitState` (fed by bus subscriptions; the
high-rate ones CONFLATE) and repaints the panels from a timer, never per message. Operator
actions publish the same bus events as the control socket: ``h`` halts at once; resume,
flatten and quit ask first in a modal that says what will happen.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import signal
import time
from collections.abc import Callable, Coroutine, Iterable
from multiprocessing import resource_tracker
from pathlib import Path
from typing import Any, ClassVar

from textual.app import App, ComposeResult, SystemCommand
from textual.binding import Binding, BindingType
from textual.containers import Horizontal, Vertical
from textual.events import Resize
from textual.screen import Screen
from textual.widgets import Footer

from gal_friday.bus import EventBus
from gal_friday.config import Settings
from gal_friday.events import FlattenEvent, HaltEvent, ReduceEvent, ResumeEvent
from gal_friday.tui.render import fmt_qty
from gal_friday.tui.screens import ConfirmScreen
from gal_friday.tui.state import Clock, CockpitState
from gal_friday.tui.widgets import (
    BookPanel,
    CockpitHeader,
    DiffTable,
    EventLog,
    OrdersTable,
    Panel,
    PositionsTable,
    PredictionPanel,
    PricePanel,
    RiskPanel,
)

Runner = Callable[[asyncio.Event], Coroutine[Any, Any, None]]


def stylesheet_dir() -> Path:
    """Where the cockpit's ``.tcss`` files are: beside this module in an installed package
    (the build copies ``styles/`` there, see setup.py), else ``styles/`` at the top of the
    source tree (a checkout, or an editable install)."""
    installed = Path(__file__).resolve().parent / "styles"
    return installed if installed.is_dir() else Path(__file__).resolve().parents[2] / "styles"


STYLES = stylesheet_dir()
PAIR_MIN_WIDTH = 52  # columns one pair's panels need to look right
SIDE_MIN_WIDTH = 40


class CockpitApp(App[int]):
    """Watch and steer one running engine through its bus."""

    CSS_PATH = STYLES / "cockpit.tcss"
    TITLE = "gal-friday"
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("h", "halt", "Halt", id="halt"),
        Binding("d", "reduce", "Reduce", id="reduce"),
        Binding("r", "resume", "Resume…", id="resume"),
        Binding("f", "flatten", "Flatten…", id="flatten"),
        Binding("tab", "next_pair", "Next pair", priority=True, id="next_pair"),
        *(
            Binding(str(i), f"pair({i - 1})", f"Pair {i}", show=False, id=f"pair_{i}")
            for i in range(1, 10)
        ),
        Binding("q", "quit_cockpit", "Quit…", id="quit"),
    ]

    def __init__(
        self,
        settings: Settings,
        bus: EventBus,
        state: CockpitState,
        *,
        runner: Runner | None = None,
        clock: Clock = time.time_ns,
        repaint_hz: float = 8.0,
        animations: bool = True,
        operator: str = "cockpit",
    ) -> None:
        super().__init__()
        self.settings = settings
        self.bus = bus
        self.state = state
        self.clock = clock
        self.operator = operator
        self.runner = runner
        self.runner_error: BaseException | None = None
        self.repaint_hz = repaint_hz
        self.pair_names = tuple(state.pairs)
        self.selected = 0
        self.visible_pairs = 1
        self.ticks = 0  # repaint timer ticks
        self.frames = 0  # ticks that repainted at least one panel
        self._stop = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._tickers: list[Panel | DiffTable | EventLog] = []
        if not animations:
            self.animation_level = "none"

    # --- layout --------------------------------------------------------------------------------

    def compose(self) -> ComposeResult:
        s = self.state
        yield CockpitHeader(s, id="header")
        with Horizontal(id="body"):
            with Horizontal(id="pairs"):
                for i, pair in enumerate(self.pair_names):
                    with Vertical(id=f"pair-{i}", classes="pair"):
                        yield BookPanel(s, pair)
                        yield PricePanel(s, pair)
                        yield PredictionPanel(s, pair)
            with Vertical(id="side"):
                yield RiskPanel(s, id="risk")
                yield PositionsTable(s, id="positions")
                yield OrdersTable(s, id="orders")
                yield EventLog(s, id="log")
        yield Footer()

    def on_mount(self) -> None:
        self.query_one("#risk").border_title = "risk"
        self.query_one("#positions").border_title = "positions"
        self.query_one("#orders").border_title = "working orders"
        self.query_one("#log").border_title = "events"
        self._tickers = [*self.query(Panel), *self.query(DiffTable), *self.query(EventLog)]
        self._layout_pairs(self.size.width)
        self.set_interval(1 / self.repaint_hz, self.repaint, name="repaint")
        if self.runner is not None:
            self._task = asyncio.create_task(self.runner(self._stop), name="cockpit:engine")
            self._task.add_done_callback(self._runner_done)

    async def on_unmount(self) -> None:
        """Stop the engine cleanly (it owns the bus); the cockpit's handlers touch only the
        state, so late events after the widgets are gone are harmless."""
        self._stop.set()
        if self._task is not None:
            with contextlib.suppress(BaseException):
                await self._task

    def _runner_done(self, task: asyncio.Task[None]) -> None:
        if not task.cancelled() and task.exception() is not None:
            self.runner_error = task.exception()
            self.exit(1)
        elif not self._stop.is_set():
            self.exit(0)  # the engine ended by itself (e.g. --duration)

    def on_resize(self, event: Resize) -> None:
        self._layout_pairs(event.size.width)

    def _layout_pairs(self, width: int) -> None:
        """Show as many pairs side by side as fit; the rest are one key (tab, 1-9) away."""
        fit = max(1, (width - SIDE_MIN_WIDTH) // PAIR_MIN_WIDTH)
        self.visible_pairs = min(len(self.pair_names), fit)
        shown = {(self.selected + k) % len(self.pair_names) for k in range(self.visible_pairs)}
        for i in range(len(self.pair_names)):
            self.query_one(f"#pair-{i}").set_class(i not in shown, "-hidden")
        self.screen.set_class(self.visible_pairs > 1, "-wide")
        self.refresh_bindings()

    def repaint(self) -> None:
        """Timer: let every shown panel repaint if what it shows changed (never once the
        app is shutting down and its widgets are going away)."""
        if not self.is_running or not self._tickers:
            return
        self.ticks += 1
        painted = False
        for widget in self._tickers:
            if not (widget.parent and widget.parent.has_class("-hidden")):
                painted = widget.tick() or painted
        self.frames += painted

    # --- actions -------------------------------------------------------------------------------

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        if action in ("next_pair", "pair"):
            if not isinstance(self.screen, Screen) or self.screen.is_modal:
                return False
            return len(self.pair_names) > self.visible_pairs
        return True

    async def action_halt(self) -> None:
        """Halt at once: no confirmation, HALT is the safe direction."""
        if self.state.halted:
            self.notify("already HALTED", severity="warning")
            return
        await self.bus.publish(
            HaltEvent("operator halt from the cockpit", "operator", self.clock())
        )

    async def action_reduce(self) -> None:
        """REDUCING at once (the safe direction): no new entries, positions kept, exits go."""
        if self.state.reducing or self.state.halted:
            self.notify("already REDUCING or HALTED", severity="warning")
            return
        await self.bus.publish(
            ReduceEvent("operator reduce from the cockpit", "operator", self.clock())
        )

    def action_resume(self) -> None:
        if not (self.state.halted or self.state.reducing):
            self.notify("trading is not halted", severity="information")
            return
        s = self.state
        why = (
            f"HALT reason was ({s.halt_source}): {s.halt_reason}"
            if s.halted
            else f"REDUCING since ({s.reducing})"
        )
        message = f"Resume trading: new entries will be allowed again.\n\n{why}"
        self.push_screen(ConfirmScreen("Resume trading?", message, "Resume"), self._resume_answered)

    async def _resume_answered(self, yes: bool | None) -> None:
        if yes:
            await self.bus.publish(ResumeEvent(self.operator, self.clock()))

    def action_flatten(self) -> None:
        self.push_screen(
            ConfirmScreen("Flatten?", self.flatten_message(), "Flatten"), self._flatten_answered
        )

    def flatten_message(self) -> str:
        s = self.state
        snap = s.portfolio.snapshot if s.portfolio else None
        held = [p for p in snap.positions if p.qty] if snap else []
        n, w = len(held), s.working_entries()
        what = ": " + ", ".join(f"{p.pair} {fmt_qty(p.qty)}" for p in held) if held else ""
        lines = [
            f"Close {n} position{_s(n)} at market{what}.",
            f"Cancel {w} working entry order{_s(w)}.",
        ]
        if not s.halted:
            lines.append("Trading is not halted: new entries stay allowed (h halts).")
        return "\n".join(lines)

    async def _flatten_answered(self, yes: bool | None) -> None:
        if yes:
            await self.bus.publish(FlattenEvent(self.operator, self.clock()))

    def action_quit_cockpit(self) -> None:
        n = self.state.open_positions()
        message = (
            f"Stop gal-friday: the engine shuts down and stops trading.\n"
            f"{n} open position{_s(n)} {'is' if n == 1 else 'are'} left as "
            f"{'it is' if n == 1 else 'they are'}."
        )
        self.push_screen(ConfirmScreen("Quit?", message, "Quit"), self._quit_answered)

    def _quit_answered(self, yes: bool | None) -> None:
        if yes:
            self.exit(0)

    def action_next_pair(self) -> None:
        self._select((self.selected + 1) % len(self.pair_names))

    def action_pair(self, index: int) -> None:
        if index < len(self.pair_names):
            self._select(index)

    def _select(self, index: int) -> None:
        self.selected = index
        self._layout_pairs(self.size.width)
        self.repaint()

    def get_system_commands(self, screen: Screen[object]) -> Iterable[SystemCommand]:
        """Every operator action in the command palette too (ctrl+p)."""
        yield SystemCommand(
            "Halt trading", "Stop new entries now (no confirmation)", self.action_halt
        )
        yield SystemCommand(
            "Reduce trading",
            "No new entries; positions kept, exits allowed (no confirmation)",
            self.action_reduce,
        )
        yield SystemCommand(
            "Resume trading", "Allow new entries again (asks first)", self.action_resume
        )
        yield SystemCommand(
            "Flatten",
            "Close every position at market and cancel working entries (asks first)",
            self.action_flatten,
        )
        yield SystemCommand("Next pair", "Show the next configured pair", self.action_next_pair)
        for i, pair in enumerate(self.pair_names):
            yield SystemCommand(
                f"Show {pair}",
                f"Pair {i + 1}: its book, price and prediction panels",
                functools.partial(self.action_pair, i),
            )
        yield SystemCommand(
            "Quit gal-friday", "Stop the engine and leave (asks first)", self.action_quit_cockpit
        )
        yield from super().get_system_commands(screen)


def _s(n: int) -> str:
    return "" if n == 1 else "s"


class StateLogHandler(logging.Handler):
    """Copies warnings and errors from the log into the cockpit's event log."""

    def __init__(self, state: CockpitState) -> None:
        super().__init__(logging.WARNING)
        self.state = state

    def emit(self, record: logging.LogRecord) -> None:
        level = "bad" if record.levelno >= logging.ERROR else "warn"
        self.state.note(int(record.created * 1e9), level, record.getMessage())


async def run_tui(settings: Settings, *, duration_s: float | None = None) -> None:
    """Run the engine under the cockpit until quit, SIGINT/SIGTERM or ``duration_s``."""
    from gal_friday.engine import Engine

    # Textual replaces sys.stderr while it runs; multiprocessing's resource tracker passes
    # stderr's fd to its child when first started, so start it now (the prediction pool's
    # spawned workers need it) rather than under the running app.
    resource_tracker.ensure_running()
    engine = Engine(settings)
    state = CockpitState(settings)
    state.attach(engine.bus)
    app = CockpitApp(settings, engine.bus, state, runner=engine.run)
    handler = StateLogHandler(state)
    logging.getLogger().addHandler(handler)
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, app.exit)
    timer = loop.call_later(duration_s, app.exit) if duration_s else None
    try:
        await app.run_async()
    finally:
        if timer is not None:
            timer.cancel()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(sig)
        logging.getLogger().removeHandler(handler)
    if app.runner_error is not None:
        raise app.runner_error
