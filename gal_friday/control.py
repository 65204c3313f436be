"""Local control socket: ``gal-friday halt|resume|flatten|status`` for a running instance.

The engine serves a Unix socket under the data directory (only the local user can reach it;
nothing listens on the network). The protocol is one JSON object per line each way:

    -> {"cmd": "halt", "reason": "maintenance", "operator": "alice"}
    <- {"ok": true, "status": {"halted": true, "halt_reason": "maintenance", ...}}
    <- {"ok": false, "error": "unknown command 'hlat'"}

Commands become the same bus events the cockpit's keys publish (HaltEvent, ResumeEvent,
FlattenEvent), so a headless run is steered exactly like one with the UI. ``status`` answers
from a small bus subscriber that keeps the latest HALT state, positions and feed state.
Confirmation is the client's job (the CLI asks before resume and flatten): the server acts
on what it is told, like a key press that was already confirmed.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from gal_friday.bus import EventBus, Policy, Subscription
from gal_friday.config import Settings
from gal_friday.events import (
    ComponentState,
    Event,
    ExecutionReportEvent,
    FeedStatsEvent,
    FlattenEvent,
    HaltEvent,
    PortfolioEvent,
    ReduceEvent,
    ResumeEvent,
    TradingStartedEvent,
    TradingStateChangedEvent,
)
from gal_friday.folders import make_folder
from gal_friday.trading_state import (
    TRADING_COMMANDS,
    TradingCommand,
    TradingStateMachine,
    initial_state,
)

log = logging.getLogger(__name__)

SOCKET_NAME = "control.sock"
MAX_LINE = 64 * 1024
_MAX_SOCKET_PATH = 104  # sun_path is 104-108 bytes depending on the OS
COMMANDS = ("halt", "reduce", "resume", "flatten", "status")


class ControlError(Exception):
    """The control socket cannot be served or reached; the message is for the user."""


def socket_path(settings: Settings) -> Path:
    """Where a run with these settings serves its control socket."""
    return Path(settings.paths.data_dir) / SOCKET_NAME


def mode_label(settings: Settings) -> str:
    """PAPER, LIVE or SIM: what an operator must know before touching anything."""
    if settings.exchange == "sim":
        return "SIM"
    return "LIVE" if settings.mode == "live" else "PAPER"


class StatusTracker:
    """Keeps what ``status`` reports, from the bus only (never the engine's modules)."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.trading = initial_state()
        self._changed = asyncio.Event()
        self.feed_state = ComponentState.STARTING.value
        self.portfolio: PortfolioEvent | None = None
        self.working: dict[str, ExecutionReportEvent] = {}
        # the trading modules have started and every state they announced at start (a HALT
        # remembered from an earlier run) has reached us: before that the state is not known
        self.started = False

    def attach(self, bus: EventBus) -> list[Subscription]:
        return [
            bus.subscribe(
                (TradingStateChangedEvent, ExecutionReportEvent, TradingStartedEvent),
                self.on_event,
                name="control-state",
                maxsize=1024,
            ),
            bus.subscribe(
                (PortfolioEvent, FeedStatsEvent),
                self.on_event,
                name="control-latest",
                policy=Policy.CONFLATE,
                maxsize=8,
            ),
        ]

    def on_event(self, event: Event) -> None:
        if isinstance(event, TradingStateChangedEvent):
            self.trading = event
            self._changed.set()
        elif isinstance(event, ExecutionReportEvent):
            if event.status.is_working:
                self.working[event.client_order_id] = event
            else:
                self.working.pop(event.client_order_id, None)
        elif isinstance(event, TradingStartedEvent):
            self.started = True
        elif isinstance(event, PortfolioEvent):
            self.portfolio = event
        elif isinstance(event, FeedStatsEvent):
            self.feed_state = event.state.value

    async def settled(self, command: TradingCommand, timeout_s: float = 2.0) -> None:
        """Wait until the state the command leads to is announced (when it changes one; the
        owner's rules say whether it will), so a reply shows what the command did."""
        expected = TradingStateMachine(self.trading).apply(command)
        if expected is None:
            return
        deadline = asyncio.get_running_loop().time() + timeout_s
        while self.trading.state is not expected.state:
            self._changed.clear()
            left = deadline - asyncio.get_running_loop().time()
            if left <= 0:
                log.warning(
                    "trading state not announced in time; status may lag",
                    extra={"expected": expected.state.value},
                )
                return
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(left):
                    await self._changed.wait()

    def status(self) -> dict[str, Any]:
        snap = self.portfolio.snapshot if self.portfolio else None
        t = self.trading
        return {
            "pid": os.getpid(),
            "mode": mode_label(self.settings),
            "exchange": self.settings.exchange,
            "pairs": list(self.settings.pairs),
            "started": self.started,
            "state": t.state.value,
            "halted": t.halted,
            "halt_reason": t.reason if t.halted else "",
            "halt_source": t.source if t.halted else "",
            "reducing": t.cause if t.reducing else "",
            "feed": self.feed_state,
            "equity": str(snap.equity) if snap else None,
            "positions": [
                {"pair": p.pair, "qty": str(p.qty)}
                for p in (snap.positions if snap else ())
                if p.qty
            ],
            "working_orders": len(self.working),
        }


class ControlServer:
    """Serves the control socket for one engine run (an async context manager)."""

    def __init__(self, bus: EventBus, settings: Settings, path: Path | None = None) -> None:
        self.bus = bus
        self.path = path or socket_path(settings)
        self.tracker = StatusTracker(settings)
        self._subs = self.tracker.attach(bus)
        self._server: asyncio.AbstractServer | None = None

    async def __aenter__(self) -> ControlServer:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    async def start(self) -> None:
        """Bind the socket; refuse when another live instance already answers on it."""
        _check_length(self.path)
        make_folder(self.path.parent, "data folder")
        if self.path.exists() or self.path.is_symlink():
            if await _answers(self.path):
                raise ControlError(
                    f"another gal-friday is already running here (control "
                    f"socket {self.path} answers); stop it first"
                )
            self.path.unlink()  # left over from a run that did not stop cleanly
        try:
            self._server = await asyncio.start_unix_server(
                self._serve, path=str(self.path), limit=MAX_LINE
            )
        except OSError as exc:  # bind() names no path of its own
            raise ControlError(
                f"cannot create the control socket {self.path}: {exc.strerror or exc}"
            ) from None
        os.chmod(self.path, 0o600)
        log.info("control socket listening", extra={"path": str(self.path)})

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
            self._server = None
            with contextlib.suppress(FileNotFoundError):
                self.path.unlink()
        for sub in self._subs:
            with contextlib.suppress(ValueError):
                await self.bus.unsubscribe(sub)
        self._subs = []

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while line := await reader.readline():
                reply = await self.handle(line)
                writer.write(json.dumps(reply).encode() + b"\n")
                await writer.drain()
        except (ConnectionError, ValueError, asyncio.LimitOverrunError):
            pass  # a client that went away or sent garbage: nothing to answer
        finally:
            writer.close()
            with contextlib.suppress(ConnectionError):
                await writer.wait_closed()

    async def handle(self, line: bytes) -> dict[str, Any]:
        """One request line in, one reply out; never raises on a bad request."""
        try:
            request = json.loads(line)
            cmd = request.get("cmd") if isinstance(request, dict) else None
        except ValueError:
            return {"ok": False, "error": "request is not a JSON object"}
        if cmd not in COMMANDS:
            return {"ok": False, "error": f"unknown command {cmd!r}; one of {list(COMMANDS)}"}
        operator = str(request.get("operator") or "control")
        event = _event_for(cmd, operator, str(request.get("reason") or ""))
        if event is not None:
            await self.bus.publish(event)
            log.warning(
                f"control socket: {cmd} from {operator}", extra={"cmd": cmd, "operator": operator}
            )
            if isinstance(event, TRADING_COMMANDS):
                await self.tracker.settled(event)  # the reply shows what the command did
        return {"ok": True, "status": self.tracker.status()}


def _event_for(cmd: str, operator: str, reason: str) -> Event | None:
    if cmd == "halt":
        return HaltEvent(reason or f"operator halt ({operator})", "operator")
    if cmd == "reduce":
        return ReduceEvent(reason or f"operator reduce ({operator})", "operator")
    if cmd == "resume":
        return ResumeEvent(operator)
    if cmd == "flatten":
        return FlattenEvent(operator)
    return None


def _check_length(path: Path) -> None:
    if len(os.fsencode(path)) >= _MAX_SOCKET_PATH:
        raise ControlError(
            f"control socket path is too long for a Unix socket: {path} "
            f"(use a shorter paths.data_dir)"
        )


async def _answers(path: Path) -> bool:
    try:
        async with asyncio.timeout(1.0):
            _, writer = await asyncio.open_unix_connection(str(path))
    except (OSError, TimeoutError):
        return False
    writer.close()
    with contextlib.suppress(ConnectionError):
        await writer.wait_closed()
    return True


# --- client -------------------------------------------------------------------------------


async def request(
    path: Path, cmd: str, fields: dict[str, str] | None = None, *, timeout_s: float = 5.0
) -> dict[str, Any]:
    """Send one command to the instance serving ``path`` and return its reply."""
    _check_length(path)
    try:
        async with asyncio.timeout(timeout_s):
            reader, writer = await asyncio.open_unix_connection(str(path), limit=MAX_LINE)
    except (FileNotFoundError, ConnectionRefusedError):
        raise ControlError(
            f"no running gal-friday found (no control socket answers at {path})"
        ) from None
    except (OSError, TimeoutError) as exc:
        raise ControlError(f"cannot reach the control socket {path}: {exc}") from None
    try:
        writer.write(json.dumps({"cmd": cmd, **(fields or {})}).encode() + b"\n")
        await writer.drain()
        async with asyncio.timeout(timeout_s):
            line = await reader.readline()
    except (OSError, TimeoutError) as exc:
        raise ControlError(f"the running gal-friday did not answer: {exc or 'timeout'}") from None
    finally:
        writer.close()
        with contextlib.suppress(ConnectionError):
            await writer.wait_closed()
    return _parse_reply(line)


def _parse_reply(line: bytes) -> dict[str, Any]:
    try:
        reply = json.loads(line)
    except ValueError:
        raise ControlError("the running gal-friday sent an unreadable reply") from None
    if not isinstance(reply, dict):
        raise ControlError("the running gal-friday sent an unreadable reply")
    if not reply.get("ok"):
        raise ControlError(str(reply.get("error") or "the command failed"))
    return reply


def describe_status(status: dict[str, Any]) -> str:
    """The human-readable ``gal-friday status`` output."""
    halt = (
        f"HALTED ({status['halt_source']}): {status['halt_reason']}"
        if status["halted"]
        else f"REDUCING ({status['reducing']}): exits only"
        if status.get("reducing")
        else "trading (not halted)"
        if status.get("started", True)
        else "starting (the trading state is not known yet)"
    )
    positions = ", ".join(f"{p['pair']} {p['qty']}" for p in status["positions"]) or "none"
    return "\n".join(
        [
            f"gal-friday pid {status['pid']}: {status['mode']} on {status['exchange']}, "
            f"pairs {', '.join(status['pairs'])}",
            f"state: {halt}",
            f"feed: {status['feed']}; equity: {status['equity'] or '-'} USD",
            f"positions: {positions}; working orders: {status['working_orders']}",
        ]
    )


def flatten_summary(status: dict[str, Any]) -> str:
    """What a flatten will do, for the confirmation question."""
    n = len(status["positions"])
    w = status["working_orders"]
    return (
        f"Close {n} position{'s' * (n != 1)} at market and cancel working entry orders "
        f"({w} working order{'s' * (w != 1)})"
    )


def run_command(
    settings: Settings,
    cmd: str,
    *,
    reason: str = "",
    yes: bool = False,
    as_json: bool = False,
    ask: Callable[[str], bool] | None = None,
) -> int:
    """``gal-friday halt|resume|flatten|status``: 0 on success, 1 with one line on failure.

    Resume and flatten say what they will do and ask first on a terminal, unless ``yes``.
    """
    path = socket_path(settings)
    operator = os.environ.get("USER") or "control"
    try:
        if cmd in ("resume", "flatten") and not yes and ask is not None:
            status = asyncio.run(request(path, "status"))["status"]
            if not ask(_question(cmd, status)):
                print("cancelled; nothing was sent")
                return 0
        fields = {"operator": operator, **({"reason": reason} if reason else {})}
        reply = asyncio.run(request(path, cmd, fields))
    except ControlError as exc:
        print(f"gal-friday: {exc}", file=sys.stderr)
        return 1
    status = reply["status"]
    if as_json:
        print(json.dumps(status, indent=2))
    elif cmd == "status":
        print(describe_status(status))
    else:
        state = (
            "HALTED" if status["halted"] else "REDUCING" if status.get("reducing") else "trading"
        )
        print(f"{cmd} sent to gal-friday pid {status['pid']}; {state}")
    return 0


def _question(cmd: str, status: dict[str, Any]) -> str:
    if cmd == "flatten":
        return f"{flatten_summary(status)} on the {status['mode']} instance? [y/N] "
    if not status["halted"]:
        return "gal-friday is not halted; send resume anyway? [y/N] "
    return (
        f"Resume trading on the {status['mode']} instance (halted by "
        f"{status['halt_source']}: {status['halt_reason']})? [y/N] "
    )


def ask_on_terminal(question: str) -> bool:
    """Ask on a terminal; without one (cron, scripts) there is nobody to ask: go ahead."""
    if not sys.stdin.isatty():
        return True
    try:
        return input(question).strip().lower() in ("y", "yes")
    except EOFError:
        return False
