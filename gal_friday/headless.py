"""Headless run (``gal-friday --no-ui``): the engine, JSON logs and a periodic status line.

The status reporter is a display subscriber of the bus with the CONFLATE policy: it keeps only
the newest book per pair and the newest feed statistics, and writes one status line every
``monitoring.status_interval_s``. SIGINT and SIGTERM stop the run cleanly.
"""

from __future__ import annotations

import asyncio
import logging
import signal
from decimal import Decimal

from gal_friday.bus import EventBus, Policy
from gal_friday.config import Settings
from gal_friday.engine import Engine
from gal_friday.events import (
    BookEvent,
    BookInvalidatedEvent,
    ComponentState,
    ExecutionReportEvent,
    FeedStatsEvent,
    PredictionEvent,
    SystemStatusEvent,
    TradeSignalApprovedEvent,
    TradeSignalProposedEvent,
    TradeSignalRejectedEvent,
)
from gal_friday.kraken.ws import RawSink

log = logging.getLogger("gal_friday.status")


class StatusReporter:
    """Keeps the latest state and formats the one-line status."""

    def __init__(self, pairs: tuple[str, ...], mode: str = "paper") -> None:
        self.pairs = pairs
        self.mode = mode.upper()
        self.books: dict[str, BookEvent | None] = dict.fromkeys(pairs)
        self.stats: FeedStatsEvent | None = None
        self.predictions: dict[str, PredictionEvent] = {}
        self.signals = {"proposed": 0, "approved": 0, "rejected": 0, "fills": 0}
        self.connection = ComponentState.STARTING

    def attach(self, bus: EventBus) -> None:
        bus.subscribe(
            (BookEvent, BookInvalidatedEvent, FeedStatsEvent, SystemStatusEvent, PredictionEvent),
            self.on_event,
            name="status-line",
            policy=Policy.CONFLATE,
            maxsize=64,
        )
        bus.subscribe(
            (
                TradeSignalProposedEvent,
                TradeSignalApprovedEvent,
                TradeSignalRejectedEvent,
                ExecutionReportEvent,
            ),
            self.on_trading,
            name="status-counts",
            maxsize=1024,
        )

    def on_event(self, event: object) -> None:
        if isinstance(event, BookEvent):
            self.books[event.pair] = event
        elif isinstance(event, BookInvalidatedEvent):
            self.books[event.pair] = None
        elif isinstance(event, PredictionEvent):
            self.predictions[event.pair] = event
        elif isinstance(event, FeedStatsEvent):
            self.stats = event
        elif isinstance(event, SystemStatusEvent) and event.component.startswith("kraken.ws"):
            self.connection = event.state

    def on_trading(self, event: object) -> None:
        """Counts of the trading path (every event: BLOCK, these are cheap)."""
        if isinstance(event, TradeSignalProposedEvent):
            self.signals["proposed"] += 1
        elif isinstance(event, TradeSignalApprovedEvent):
            self.signals["approved"] += 1
        elif isinstance(event, TradeSignalRejectedEvent):
            self.signals["rejected"] += 1
        elif isinstance(event, ExecutionReportEvent) and event.last_fill_qty:
            self.signals["fills"] += 1

    def line(self) -> str:
        parts = [self.mode, f"conn={self.connection.value}"]
        for pair in self.pairs:
            book = self.books[pair]
            bid, ask = (book.best_bid(), book.best_ask()) if book else (None, None)
            pred = self.predictions.get(pair)
            p_up = f" p_up={pred.prob_up:.3f}" if pred else ""
            parts.append(f"{pair} {_fmt(bid)}/{_fmt(ask)}{p_up}")
        stats = self.stats
        if stats is not None:
            ages = ",".join(f"{p}:{a:.1f}s" for p, a in stats.data_age_s)
            counts = self.signals
            parts.append(
                f"signals={counts['proposed']} approved={counts['approved']} "
                f"rejected={counts['rejected']} fills={counts['fills']}"
            )
            parts += [
                f"msg/s={stats.frames_per_s:.0f}",
                f"checksum_fail={stats.checksum_failures}",
                f"reconnects={stats.reconnects}",
                f"age={ages or '-'}",
            ]
        return " | ".join(parts)

    async def report_every(self, interval_s: float) -> None:
        while True:
            await asyncio.sleep(interval_s)
            log.info(self.line(), extra={"event_type": "status"})


def _fmt(value: Decimal | None) -> str:
    return "-" if value is None else format(value, "f")


async def run_headless(
    settings: Settings,
    *,
    duration_s: float | None = None,
    raw_sink: RawSink | None = None,
    predict: bool = True,
) -> None:
    """Run the engine until SIGINT/SIGTERM or ``duration_s``, printing status lines."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    engine = Engine(settings, raw_sink=raw_sink, predict=predict)
    reporter = StatusReporter(settings.pairs, settings.mode)
    reporter.attach(engine.bus)
    status = asyncio.create_task(reporter.report_every(settings.monitoring.status_interval_s))
    timer = loop.call_later(duration_s, stop.set) if duration_s else None
    log.info(
        "gal-friday started", extra={"exchange": settings.exchange, "pairs": list(settings.pairs)}
    )
    try:
        await engine.run(stop)
    finally:
        if timer is not None:
            timer.cancel()
        status.cancel()
        await asyncio.gather(status, return_exceptions=True)
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(sig)
        log.info("gal-friday stopped", extra={"status": reporter.line()})
