"""``gal-friday replay SESSION``: re-run a recorded session's decisions and compare [FR-1008].

The journal (``gal_friday.session``) holds, in bus order, the inputs a decision can depend on
(market data, features, predictions, exchange reports, operator commands, reconciliations) and
the decisions made (proposed signals, risk verdicts, order requests). The replay builds the
same strategy, risk, portfolio and execution code with the session's own configuration, feeds
the recorded inputs in the recorded order on a clock that reads the recorded times, and lets a
``ReplayVenue`` answer orders with the exchange's recorded reports. Every decision the replay
makes is compared with the recorded one; any difference is reported with the first mismatch.

Features and predictions are replayed as recorded (the model's inputs and outputs at the time),
so a replay checks the decision path exactly even when the model files have changed since.
"""

from __future__ import annotations

import asyncio
import logging
import math
from collections import defaultdict, deque
from collections.abc import Iterable
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Any

import msgspec

from gal_friday.bus import EventBus
from gal_friday.config import Settings
from gal_friday.events import (
    BookEvent,
    Event,
    ExecutionReportEvent,
    FeatureEvent,
    FlattenEvent,
    HaltEvent,
    OrderRequestEvent,
    OrderStatus,
    ReconciliationEvent,
    TradeSignalApprovedEvent,
    TradeSignalProposedEvent,
    TradeSignalRejectedEvent,
)
from gal_friday.execution.handler import ExecutionHandler
from gal_friday.execution.venue import (
    NullVenue,
    OrderRejected,
    OrderRequest,
    ReportCallback,
    VenueBusy,
)
from gal_friday.portfolio import PortfolioManager
from gal_friday.risk import RiskManager
from gal_friday.session import read_session
from gal_friday.strategy import StrategyArbitrator

log = logging.getLogger(__name__)
_DECISIONS = (TradeSignalProposedEvent, TradeSignalApprovedEvent, TradeSignalRejectedEvent,
              OrderRequestEvent)
_VERDICTS = (OrderStatus.REJECTED, OrderStatus.ERROR)


@dataclass
class ReplayResult:
    """What the replay reproduced; ``mismatches`` empty means an exact reproduction."""

    session: str
    events: int = 0
    compared: dict[str, int] = field(default_factory=dict)
    mismatches: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.mismatches


class _Clock:
    """The replay's "now": the time of the recorded event being replayed."""

    def __init__(self) -> None:
        self.now = 0

    def __call__(self) -> int:
        return self.now


class ReplayVenue(NullVenue):
    """Answers the replayed handler's orders with the recorded session's exchange reports.

    The k-th order the replay sends is the k-th order the session sent; its recorded client
    order id is mapped to the replay's so recorded reports reach the right order."""

    name = "replay"

    def __init__(self, reports_by_coid: dict[str, list[ExecutionReportEvent]],
                 recorded_requests: list[OrderRequestEvent]) -> None:
        self._reports = reports_by_coid
        self._recorded = deque(recorded_requests)
        self.to_replay: dict[str, str] = {}  # recorded coid -> replay coid
        self.on_report: ReportCallback | None = None

    async def start(self, on_report: ReportCallback) -> None:
        self.on_report = on_report

    async def stop(self) -> None:
        self.on_report = None

    async def submit(self, order: OrderRequest) -> str:
        if not self._recorded:
            raise OrderRejected("replay: the session sent no further order")
        recorded = self._recorded.popleft()
        self.to_replay[recorded.client_order_id] = order.client_order_id
        reports = self._reports.get(recorded.client_order_id, [])
        first = reports[0] if reports else None
        if first is not None and first.exchange_order_id is None and first.status in _VERDICTS:
            reason = first.reason or "refused"
            if first.status is OrderStatus.ERROR:
                raise VenueBusy(reason)
            raise OrderRejected(reason)
        return first.exchange_order_id or "" if first is not None else ""

    def translate(self, report: ExecutionReportEvent) -> ExecutionReportEvent | None:
        """The recorded report addressed to the replay's order, or None if it is a verdict
        the replayed handler makes itself (or belongs to no replayed order)."""
        coid = self.to_replay.get(report.client_order_id)
        if coid is None:
            return None
        if report.exchange_order_id is None and report.status in _VERDICTS:
            return None
        return msgspec.structs.replace(report, client_order_id=coid)


class _SplitBus(EventBus):
    """The replay's bus: recorded events are fed in (``feed``) and reach every module in the
    recorded order; what the modules publish themselves is only collected, so each module
    decides on exactly the inputs it had at the time and its decisions can be compared."""

    def __init__(self) -> None:
        super().__init__()
        self.outputs: dict[str, list[Event]] = defaultdict(list)

    async def publish(self, event: Event) -> None:
        self.outputs[type(event).__name__].append(event)

    async def feed(self, event: Event) -> None:
        await super().publish(event)


class _Replayer:
    def __init__(self, settings: Settings, events: list[Event], session: str) -> None:
        self.settings = settings
        self.events = events
        self.result = ReplayResult(session)
        self.clock = _Clock()
        self.bus = _SplitBus()
        reports: dict[str, list[ExecutionReportEvent]] = defaultdict(list)
        for e in events:
            if isinstance(e, ExecutionReportEvent):
                reports[e.client_order_id].append(e)
        requests = [e for e in events if isinstance(e, OrderRequestEvent)]
        self.venue = ReplayVenue(reports, requests)
        self._wire()

    def _wire(self) -> None:
        s = self.settings
        self.portfolio = PortfolioManager(_initial_cash(s, self.events), pairs=s.pairs)
        self.portfolio.attach(self.bus)
        RiskManager(s.risk, self.bus, self.portfolio.snapshot, taker_fee_pct=s.fees.taker_pct,
                    clock=self.clock)
        StrategyArbitrator(s.strategy, s.fees, self.bus, pairs=s.pairs,
                           venue_brackets=s.execution.protective_orders).attach()
        x = s.execution.model_copy(update={"busy_retries": 0, "reconcile_interval_s": 0})
        self.handler = ExecutionHandler(x, self.venue, self.bus, clock_ns=self.clock)
        self.handler.attach()

    async def run(self) -> ReplayResult:
        await self.venue.start(self.handler.on_venue_report)
        self.bus.start()
        recorded: dict[str, list[Event]] = defaultdict(list)
        try:
            for event in self.events:
                self.result.events += 1
                self.clock.now = max(self.clock.now, _ts(event))
                if isinstance(event, _DECISIONS):
                    recorded[type(event).__name__].append(event)
                await self.bus.feed(event)
                if isinstance(event, ExecutionReportEvent):
                    await self._report(event)
                elif isinstance(event, BookEvent):
                    await self.handler.tick(self.clock.now)
                await self._settle()
        finally:
            await EventBus.stop(self.bus)
        self._compare(recorded)
        return self.result

    async def _report(self, event: ExecutionReportEvent) -> None:
        translated = self.venue.translate(event)
        if translated is not None:
            await self.handler.on_venue_report(translated)

    async def _settle(self) -> None:
        """Let every consequence of the last event happen before the next one. Nothing in a
        replay waits on I/O, so a few loop turns per bus drain suffice; tasks waiting for a
        later recorded report (an exit waiting for its fill) stay pending, as they did live."""
        for _ in range(4):
            await self.bus.drain()
            for _ in range(8):
                await asyncio.sleep(0)

    def _compare(self, recorded: dict[str, list[Event]]) -> None:
        for kind in (t.__name__ for t in _DECISIONS):
            want = [_comparable(e) for e in recorded.get(kind, [])]
            got = [_comparable(e) for e in self.bus.outputs.get(kind, [])]
            self.result.compared[kind] = len(want)
            for i, (w, g) in enumerate(zip(want, got, strict=False)):
                if w != g:
                    self.result.mismatches.append(f"{kind} #{i + 1}: recorded {w}, replayed {g}")
                    break
            if len(want) != len(got):
                self.result.mismatches.append(
                    f"{kind}: recorded {len(want)}, replayed {len(got)}")


_IGNORED = {"ts_ns", "client_order_id"}  # clock readings and ids minted at run time


def _comparable(event: Event) -> dict[str, Any]:
    """The fields a decision is judged by; a NaN (an exit's missing probability) compares
    equal to a NaN, as the same decision must."""
    fields = msgspec.structs.asdict(event)
    return {k: "NaN" if isinstance(v, float) and math.isnan(v) else v
            for k, v in fields.items() if k not in _IGNORED}


def _ts(event: Event) -> int:
    for name in ("received_ts_ns", "ts_ns"):
        value = getattr(event, name, None)
        if isinstance(value, int):
            return value
    return 0


def _initial_cash(settings: Settings, events: Iterable[Event]) -> Decimal:
    """The session's starting cash: its first reconciliation (live), else paper cash."""
    for e in events:
        if isinstance(e, ReconciliationEvent):
            return dict(e.balances).get("USD", Decimal(0))
        if isinstance(e, (TradeSignalProposedEvent, FeatureEvent, HaltEvent, FlattenEvent)):
            break
    return settings.paper.initial_cash_usd


async def replay_session(path: str | Path) -> ReplayResult:
    """Replay one journal and compare its decisions (see the module doc)."""
    header, stream = read_session(path)
    settings = Settings.model_validate(header["config"])
    events = list(stream)
    return await _Replayer(settings, events, str(header["session"])).run()
