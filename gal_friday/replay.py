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
    Event,
    ExecutionReportEvent,
    FeatureEvent,
    FlattenEvent,
    HaltEvent,
    OrderAdoptedEvent,
    OrderRequestEvent,
    OrderStatus,
    OrderType,
    PairRestoredEvent,
    ReconciliationEvent,
    Side,
    TradeSignalApprovedEvent,
    TradeSignalProposedEvent,
    TradeSignalRejectedEvent,
    TradingStartedEvent,
    TradingStateChangedEvent,
)
from gal_friday.execution.venue import (
    NullVenue,
    OrderRejected,
    OrderRequest,
    ReportCallback,
    VenueBusy,
)
from gal_friday.recovery import adopt_order, restore_pair
from gal_friday.session import SessionError, read_session
from gal_friday.trading_state import TRADING_COMMANDS, TradingStateMachine
from gal_friday.wiring import build_trading

log = logging.getLogger(__name__)
_DECISIONS = (
    TradeSignalProposedEvent,
    TradeSignalApprovedEvent,
    TradeSignalRejectedEvent,
    OrderRequestEvent,
)
_VERDICTS = (OrderStatus.REJECTED, OrderStatus.ERROR)


@dataclass
class ReplayResult:
    """What the replay reproduced; ``mismatches`` empty means an exact reproduction."""

    session: str
    events: int = 0
    compared: dict[str, int] = field(default_factory=dict)
    mismatches: list[str] = field(default_factory=list)
    truncated: bool = False  # the journal ends early (a crash): its tail cannot be checked
    unchecked: dict[str, int] = field(default_factory=dict)  # decisions past a truncated end

    @property
    def ok(self) -> bool:
        return not self.mismatches


class _Clock:
    """The replay's "now": the time of the recorded event being replayed."""

    def __init__(self) -> None:
        self.now = 0

    def __call__(self) -> int:
        return self.now


OrderKey = tuple[str, str, str, str]  # signal id, pair, side, order type


def order_key(signal_id: str | None, pair: str, side: Side, type_: OrderType) -> OrderKey:
    """What an order is, independent of when it was sent among other tasks' orders and of the
    client order id minted at run time: an entry, its stop and its target, an exit and a
    timed-out entry's market rest all differ in it."""
    return (signal_id or "", pair, side.value, type_.value)


class ReplayVenue(NullVenue):
    """Answers the replayed handler's orders with the recorded session's exchange reports.

    An order the replay sends is paired with the session's next order of the same signal,
    pair, side and type (live, tasks interleave their orders differently than in a replay);
    its recorded client order id is mapped to the replay's so recorded reports reach it."""

    name = "replay"

    def __init__(
        self,
        reports_by_coid: dict[str, list[ExecutionReportEvent]],
        recorded_requests: list[OrderRequestEvent],
    ) -> None:
        self._reports = reports_by_coid
        self._recorded: dict[OrderKey, deque[OrderRequestEvent]] = defaultdict(deque)
        for r in recorded_requests:
            self._recorded[order_key(r.signal_id, r.pair, r.side, r.order_type)].append(r)
        self.to_replay: dict[str, str] = {}  # recorded coid -> replay coid
        self.on_report: ReportCallback | None = None

    async def start(self, on_report: ReportCallback) -> None:
        self.on_report = on_report

    async def stop(self) -> None:
        self.on_report = None

    async def submit(self, order: OrderRequest) -> str:
        same = self._recorded.get(order_key(order.signal_id, order.pair, order.side, order.type))
        if not same:
            raise OrderRejected("replay: the session sent no such order")
        recorded = same.popleft()
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
    def __init__(
        self, settings: Settings, events: list[Event], session: str, *, truncated: bool = False
    ) -> None:
        self.settings = settings
        self.events = events
        self.result = ReplayResult(session, truncated=truncated)
        self.clock = _Clock()
        self.bus = _SplitBus()
        reports: dict[str, list[ExecutionReportEvent]] = defaultdict(list)
        for e in events:
            if isinstance(e, ExecutionReportEvent):
                reports[e.client_order_id].append(e)
        requests = [e for e in events if isinstance(e, OrderRequestEvent)]
        self.venue = ReplayVenue(reports, requests)
        # modules follow the trading state as it was announced live (the replay's own risk
        # manager re-derives it, but its announcements, like all its outputs, are only
        # collected); journals written before the announcements were recorded get them derived
        self._derive_states = not any(isinstance(e, TradingStateChangedEvent) for e in events)
        self._states = TradingStateMachine()
        self._wire()

    def _wire(self) -> None:
        s = self.settings
        x = s.execution.model_copy(update={"busy_retries": 0, "reconcile_interval_s": 0})
        modules = build_trading(
            s,
            self.bus,
            self.venue,
            cash=_initial_cash(s, self.events),
            clock=self.clock,
            execution=x,
        )
        self.portfolio, self.handler = modules.portfolio, modules.execution

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
                # time passes, then the event arrives: entries past their deadline time out
                # first, as the live timer would have timed them out meanwhile
                await self.handler.tick(self.clock.now)
                await self._settle()
                if isinstance(event, OrderAdoptedEvent):  # recovery's direct hand-over
                    adopt_order(self.handler, event)
                    self.venue.to_replay[event.client_order_id] = event.client_order_id
                await self.bus.feed(event)
                if self._derive_states and isinstance(event, TRADING_COMMANDS):
                    changed = self._states.apply(event)  # a journal from before they were
                    if changed is not None:  # recorded: derive what was announced
                        await self.bus.feed(changed)
                if isinstance(event, PairRestoredEvent):
                    restore_pair(self.handler, event)
                elif isinstance(event, ExecutionReportEvent):
                    await self._report(event)
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
        """Signals and verdicts in order; order requests in order per order key (tasks
        interleave them differently live). A truncated journal may lack the decisions made
        after its last line: replayed ones beyond the recorded are counted as unchecked."""
        for kind in (t.__name__ for t in _DECISIONS):
            want, got = recorded.get(kind, []), self.bus.outputs.get(kind, [])
            self.result.compared[kind] = len(want)
            if kind == OrderRequestEvent.__name__:
                self._compare_orders(want, got)
            else:
                self._compare_sequence(kind, want, got)

    def _compare_sequence(self, kind: str, want: list[Event], got: list[Event]) -> None:
        for i, (w, g) in enumerate(zip(want, got, strict=False)):
            a, b = _comparable(w), _comparable(g)
            if a != b:
                self.result.mismatches.append(f"{kind} #{i + 1}: recorded {a}, replayed {b}")
                return
        if len(got) > len(want) and self.result.truncated:
            self.result.unchecked[kind] = self.result.unchecked.get(kind, 0) + len(got) - len(want)
        elif len(want) != len(got):
            self.result.mismatches.append(f"{kind}: recorded {len(want)}, replayed {len(got)}")

    def _compare_orders(self, want: list[Event], got: list[Event]) -> None:
        def by_key(events: list[Event]) -> dict[OrderKey, list[Event]]:
            groups: dict[OrderKey, list[Event]] = defaultdict(list)
            for e in events:
                assert isinstance(e, OrderRequestEvent)
                groups[order_key(e.signal_id, e.pair, e.side, e.order_type)].append(e)
            return groups

        recorded, replayed = by_key(want), by_key(got)
        for key in sorted(set(recorded) | set(replayed)):
            self._compare_sequence(
                f"OrderRequestEvent {'/'.join(key)}", recorded.get(key, []), replayed.get(key, [])
            )


_IGNORED = {"ts_ns", "client_order_id"}  # clock readings and ids minted at run time


def _comparable(event: Event) -> dict[str, Any]:
    """The fields a decision is judged by; a NaN (an exit's missing probability) compares
    equal to a NaN, as the same decision must."""
    fields = msgspec.structs.asdict(event)
    return {
        k: "NaN" if isinstance(v, float) and math.isnan(v) else v
        for k, v in fields.items()
        if k not in _IGNORED
    }


def _ts(event: Event) -> int:
    for name in ("received_ts_ns", "ts_ns"):
        value = getattr(event, name, None)
        if isinstance(value, int):
            return value
    return 0


def _initial_cash(settings: Settings, events: Iterable[Event]) -> Decimal:
    """The session's starting cash as it recorded it; for a journal from before that was
    recorded, its first reconciliation (live), else paper cash."""
    events = list(events)
    started = next((e for e in events if isinstance(e, TradingStartedEvent)), None)
    if started is not None:
        return started.cash
    for e in events:
        if isinstance(e, ReconciliationEvent):
            return dict(e.balances).get("USD", Decimal(0))
        if isinstance(e, (TradeSignalProposedEvent, FeatureEvent, HaltEvent, FlattenEvent)):
            break
    return settings.paper.initial_cash_usd


async def replay_session(path: str | Path) -> ReplayResult:
    """Replay one journal and compare its decisions (see the module doc)."""
    header, stream = read_session(path)
    try:
        settings = Settings.model_validate(header["config"])
    except (KeyError, ValueError) as exc:  # pydantic's ValidationError is a ValueError
        first = str(exc).splitlines()[0]
        raise SessionError(f"{path}: the journal's configuration is unusable ({first})") from None
    events = list(stream)
    return await _Replayer(
        settings, events, str(header["session"]), truncated=stream.truncated
    ).run()
