"""MonitoringService: every HALT trigger fires once and blocks the next entry; HALT policy;
no automatic resume; REDUCING; no duplicate HALT while halted.

A real RiskManager and PortfolioManager share the bus with the service, so "blocks the next
entry" means the RiskManager rejected a proposed signal after the HALT. Time is an injected
clock; the periodic loop is driven by calling ``check()``.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from decimal import Decimal
from typing import Any, TypeVar

import pytest

from gal_friday.bus import EventBus
from gal_friday.config import MonitoringSettings, Settings
from gal_friday.domain import InstrumentSpec, PortfolioSnapshot
from gal_friday.events import (
    BookEvent,
    CandleEvent,
    ComponentState,
    Event,
    ExecutionReportEvent,
    FeedStatsEvent,
    FlattenEvent,
    HaltEvent,
    InstrumentEvent,
    OrderStatus,
    OrderType,
    PortfolioEvent,
    ReduceEvent,
    ResumeEvent,
    Side,
    SystemStatusEvent,
    TradeSignalApprovedEvent,
    TradeSignalProposedEvent,
    TradeSignalRejectedEvent,
    TradingState,
    TradingStateChangedEvent,
)
from gal_friday.monitoring import HostSample, MonitoringService
from gal_friday.portfolio import PortfolioManager
from gal_friday.risk import RiskManager

D = Decimal
NS = 1_000_000_000
T0 = 1_800_000_000 * NS
PAIR, DOGE = "XRP/USD", "DOGE/USD"
SPEC = InstrumentSpec(PAIR, 4, 2, D("0.0001"), D("0.01"), D("10"), D("5"))
E = TypeVar("E", bound=Event)


class Clock:
    def __init__(self) -> None:
        self.t = T0

    def __call__(self) -> int:
        return self.t


class Probe:
    def __init__(self) -> None:
        self.sample = HostSample(cpu_pct=20.0, ram_pct=40.0, disk_free_pct=50.0)

    def __call__(self) -> HostSample:
        return self.sample


def book(pair: str, bid: int, ask: int) -> BookEvent:
    return BookEvent(pair, ((bid, 1000),), ((ask, 1000),), 4, 0, 0, 1, True, "", 0)


def feed(
    state: ComponentState = ComponentState.CONNECTED, age: float = 0.2, reason: str = ""
) -> FeedStatsEvent:
    return FeedStatsEvent(state, 100, 20.0, 90, 0, 0, 0, reason, ((PAIR, age), (DOGE, age)))


def candle(close: str, minute: int) -> CandleEvent:
    c = D(close)
    return CandleEvent(PAIR, 60, T0 + minute * 60 * NS, c, c, c, c, D(1), c, 1, False, 0)


def report(
    status: OrderStatus, reason: str | None = None, coid: str = "o1"
) -> ExecutionReportEvent:
    return ExecutionReportEvent(
        coid,
        None,
        None,
        PAIR,
        Side.BUY,
        OrderType.LIMIT,
        status,
        D(100),
        D(0),
        None,
        None,
        None,
        D(0),
        "USD",
        reason,
        T0,
    )


def snapshot(*, equity: str = "10000", day: str = "10000", losses: int = 0) -> PortfolioSnapshot:
    e = D(equity)
    return PortfolioSnapshot(T0, e, e, (), e, D("10000"), D(day), D("10000"), D(0), D(0), losses)


def signal(sid: str, *, is_exit: bool = False) -> TradeSignalProposedEvent:
    side = Side.SELL if is_exit else Side.BUY
    return TradeSignalProposedEvent(
        sid, PAIR, side, OrderType.LIMIT, D("0.5"), D("0.45"), D("0.6"), 0.7, "m", T0, is_exit
    )


class Harness:
    """Bus + PortfolioManager + RiskManager + MonitoringService, on an injected clock."""

    def __init__(self, **monitoring: Any) -> None:
        cfg = {"check_interval_s": 3600.0, **monitoring}  # the tests call check() themselves
        self.settings = Settings(monitoring=MonitoringSettings(**cfg))
        self.clock, self.probe = Clock(), Probe()
        self.bus = EventBus()
        self.out: list[Event] = []
        self.bus.subscribe(
            (
                HaltEvent,
                FlattenEvent,
                ResumeEvent,
                SystemStatusEvent,
                TradeSignalApprovedEvent,
                TradeSignalRejectedEvent,
                TradingStateChangedEvent,
            ),
            self.out.append,
            name="sink",
        )
        self.portfolio = PortfolioManager(D("9950"), pairs=self.settings.pairs)
        self.portfolio.attach(self.bus)
        self.risk = RiskManager(
            self.settings.risk,
            self.bus,
            self.portfolio.snapshot,
            taker_fee_pct=D("0.4"),
            clock=self.clock,
        )
        self.risk.attach()
        self.mon = MonitoringService(
            self.settings, self.bus, clock=self.clock, host_probe=self.probe
        )
        self.mon.attach()
        self.mark = 0

    async def open(self) -> Harness:
        self.bus.start()
        await self.mon.start()
        await self.send(InstrumentEvent(PAIR, SPEC), book(PAIR, 4999, 5001), book(DOGE, 1000, 1002))
        self.portfolio.reconcile({"USD": D("9950"), "XRP": D("100")}, ts_ns=T0)
        return self

    async def close(self) -> None:
        await self.mon.stop()
        await self.bus.stop()

    async def send(self, *events: Event) -> None:
        for event in events:
            await self.bus.publish(event)
            await self.settle()

    async def settle(self) -> None:
        """Drain until quiet: handlers publish in turn (HALT -> status, flatten, verdicts)."""
        for _ in range(4):
            await self.bus.drain()

    async def tick(self, seconds: float, *, fresh: bool = True) -> None:
        """Advance the clock, report healthy market data (unless not ``fresh``), check."""
        self.clock.t += int(seconds * NS)
        if fresh:
            await self.send(feed())
        await self.mon.check()
        await self.settle()

    def of(self, kind: type[E]) -> list[E]:
        return [e for e in self.out if isinstance(e, kind)]

    def halts(self) -> list[HaltEvent]:
        return [e for e in self.of(HaltEvent) if e.source != "operator"]

    def new_halts(self) -> int:
        return len(self.halts()) - self.mark

    def status(self) -> SystemStatusEvent:
        return [e for e in self.of(SystemStatusEvent) if e.component == "monitoring"][-1]

    async def entry_verdict(self, sid: str, *, is_exit: bool = False) -> Event:
        await self.send(signal(sid, is_exit=is_exit))
        return next(
            e
            for e in self.out
            if isinstance(e, TradeSignalApprovedEvent | TradeSignalRejectedEvent)
            and e.signal_id == sid
        )


Fire = Callable[[Harness], Awaitable[None]]


async def fire_connection(h: Harness) -> None:
    await h.send(
        SystemStatusEvent("kraken.ws.private", ComponentState.DISCONNECTED, "reset", h.clock())
    )
    await h.tick(29)
    assert h.new_halts() == 0  # 29 s < connection_down_s 30
    await h.send(
        SystemStatusEvent("kraken.ws.private", ComponentState.CONNECTING, "", h.clock())
    )  # still not back
    await h.tick(2)


async def fire_feed_state(h: Harness) -> None:
    await h.send(feed(ComponentState.DISCONNECTED, reason="checksum storm"))
    await h.tick(20, fresh=False)
    await h.send(feed(ComponentState.DEGRADED))
    assert h.new_halts() == 0
    await h.tick(11, fresh=False)


async def fire_stale_report(h: Harness) -> None:
    await h.tick(100)  # fresh reports keep the pairs fresh without any book or candle
    for silent_s, age in ((50, 50.0), (11, 61.0)):  # then the feed reports growing ages
        h.clock.t += silent_s * NS
        await h.send(feed(age=age))
        await h.tick(0, fresh=False)
        if age < 60:
            assert h.new_halts() == 0


async def fire_silence(h: Harness) -> None:
    await h.tick(59, fresh=False)  # no feed report, no book, no candle for 61 s
    assert h.new_halts() == 0
    await h.tick(2, fresh=False)


async def fire_cpu(h: Harness) -> None:
    h.probe.sample = HostSample(99.0, 40.0, 50.0)
    await h.tick(0)
    await h.tick(59)
    assert h.new_halts() == 0  # over the limit, but not yet for host_breach_s
    await h.tick(1)


async def fire_disk(h: Harness) -> None:
    h.probe.sample = HostSample(20.0, 40.0, 1.0)
    await h.tick(0)
    await h.tick(60)


async def fire_ram(h: Harness) -> None:
    h.probe.sample = HostSample(20.0, 97.0, 50.0)
    await h.tick(0)
    await h.tick(61)


async def fire_drawdown(h: Harness) -> None:
    await h.send(PortfolioEvent(snapshot(equity="9850", day="10000")))  # 1.5 % < 2 %
    assert h.new_halts() == 0
    await h.send(PortfolioEvent(snapshot(equity="9790", day="10000")))  # 2.1 % daily


async def fire_losses(h: Harness) -> None:
    await h.send(PortfolioEvent(snapshot(losses=4)))
    assert h.new_halts() == 0
    await h.send(PortfolioEvent(snapshot(losses=5)))


async def fire_failed_placements(h: Harness) -> None:
    await h.send(
        report(OrderStatus.REJECTED, "Kraken AddOrder: EOrder:Insufficient funds"),
        report(OrderStatus.ERROR, "venue busy; gave up after retries"),
        report(OrderStatus.ACKNOWLEDGED),
    )  # a success resets the count
    assert h.new_halts() == 0
    await h.send(
        *(report(OrderStatus.ERROR, "venue busy; gave up after retries") for _ in range(3))
    )


async def fire_auth(h: Harness) -> None:
    await h.send(
        report(
            OrderStatus.ERROR,
            "Kraken rejected the API key (EAPI:Invalid key) on "
            "AddOrder: check that KRAKEN_API_KEY is the key's public part",
        )
    )


async def fire_volatility_candles(h: Harness) -> None:
    await h.send(candle("0.500", 0))
    await h.tick(60)
    await h.send(candle("0.520", 1))  # 4 %
    await h.tick(60)
    assert h.new_halts() == 0
    await h.send(candle("0.530", 2))  # 6 % within 5 minutes
    await h.tick(1)


async def fire_volatility_book(h: Harness) -> None:
    await h.tick(1)
    await h.send(book(PAIR, 4749, 4751))  # mid 0.475: 0.5 -> 0.475 is 5.26 % of the low
    await h.tick(1)


TRIGGERS: dict[str, tuple[Fire, str]] = {
    "connection": (fire_connection, "connection"),
    "feed_state": (fire_feed_state, "connection"),
    "stale_report": (fire_stale_report, "stale_data"),
    "silence": (fire_silence, "stale_data"),
    "cpu": (fire_cpu, "host"),
    "ram": (fire_ram, "host"),
    "disk": (fire_disk, "host"),
    "drawdown": (fire_drawdown, "drawdown"),
    "consecutive_losses": (fire_losses, "consecutive_losses"),
    "failed_placements": (fire_failed_placements, "api_errors"),
    "auth": (fire_auth, "auth"),
    "volatility_candles": (fire_volatility_candles, "volatility"),
    "volatility_book": (fire_volatility_book, "volatility"),
}


@pytest.mark.parametrize("name", list(TRIGGERS))
async def test_trigger_halts_once_and_blocks_entries(
    name: str, caplog: pytest.LogCaptureFixture
) -> None:
    fire, source = TRIGGERS[name]
    h = await Harness().open()
    try:
        assert isinstance(await h.entry_verdict("before"), TradeSignalApprovedEvent)
        with caplog.at_level(logging.WARNING, "gal_friday.monitoring"):
            await fire(h)
        [halt] = h.halts()
        assert halt.source == source and halt.reason
        assert h.mon.halted and h.risk.halted
        assert [e.operator for e in h.of(FlattenEvent)] == [f"halt:{source}"]
        status = h.status()
        assert status.state is ComponentState.STOPPED
        assert status.detail == f"HALTED ({source}): {halt.reason}"
        logged = [r for r in caplog.records if r.getMessage() == f"HALT: {halt.reason}"]
        assert len(logged) == 1 and logged[0].__dict__["halt_source"] == source
        verdict = await h.entry_verdict("after")
        assert isinstance(verdict, TradeSignalRejectedEvent)
        assert verdict.reason.startswith("halt")
        # the same condition again, and time passing: no second HALT, no second flatten
        h.mark = 1
        await fire(h)
        await h.tick(5, fresh=False)
        assert len(h.halts()) == 1 and len(h.of(FlattenEvent)) == 1
        assert not h.of(ResumeEvent)
    finally:
        await h.close()


async def test_keep_policy_does_not_flatten() -> None:
    h = await Harness(halt_policy="keep").open()
    try:
        await fire_auth(h)
        assert [e.source for e in h.halts()] == ["auth"]
        assert not h.of(FlattenEvent)
        assert isinstance(await h.entry_verdict("after"), TradeSignalRejectedEvent)
    finally:
        await h.close()


async def test_operator_halt_is_respected_without_a_second_halt() -> None:
    h = await Harness().open()
    try:
        await h.send(HaltEvent("maintenance", "operator", h.clock()))
        assert h.mon.halted and h.mon.halt_source == "operator"
        assert h.status().detail == "HALTED (operator): maintenance"
        assert not h.of(FlattenEvent)  # the operator flattens with their own command
        await fire_auth(h)
        await fire_drawdown(h)
        assert not h.halts() and not h.of(FlattenEvent)
        verdict = await h.entry_verdict("x")
        assert isinstance(verdict, TradeSignalRejectedEvent)
        assert verdict.reason.startswith("halt")
    finally:
        await h.close()


async def test_risk_halt_applies_policy_and_is_not_duplicated() -> None:
    h = await Harness().open()
    try:
        await h.send(HaltEvent("daily drawdown 2.10% >= limit 2%", "risk", h.clock()))
        assert h.mon.halted and h.mon.halt_source == "risk"
        assert [e.operator for e in h.of(FlattenEvent)] == ["halt:risk"]
        h.mark = 1
        await fire_drawdown(h)  # monitoring sees the same breach: no HALT of its own
        assert [e.source for e in h.of(HaltEvent)] == ["risk"] and h.mon.halts == 0
        assert len(h.of(FlattenEvent)) == 1
    finally:
        await h.close()


async def test_a_halt_asked_for_twice_is_announced_once_and_flattens_once() -> None:
    h = await Harness().open()
    try:
        # another trigger's HALT request is on its way to the owner when ours fires too
        await h.bus.publish(HaltEvent("feed went quiet", "stale_data", h.clock()))
        await h.mon._trigger("api_errors", "5 failed order placements in a row")
        await h.settle()
        halts = [e for e in h.of(TradingStateChangedEvent) if e.halted]
        assert [(e.source, e.reason) for e in halts] == [("stale_data", "feed went quiet")]
        assert [e.operator for e in h.of(FlattenEvent)] == ["halt:stale_data"]
        assert h.mon.halted and h.mon.halt_source == "stale_data" and h.risk.halted
    finally:
        await h.close()


async def test_no_automatic_resume_only_the_operator() -> None:
    h = await Harness().open()
    try:
        await fire_cpu(h)
        assert h.mon.halted
        h.probe.sample = HostSample(20.0, 40.0, 50.0)  # the condition clears
        for _ in range(5):
            await h.tick(60)
        assert h.mon.halted and not h.mon.active and not h.of(ResumeEvent)
        assert isinstance(await h.entry_verdict("still"), TradeSignalRejectedEvent)
        await h.send(ResumeEvent("alice", h.clock()))
        assert h.mon.state is TradingState.ACTIVE
        assert (h.status().state, h.status().detail) == (ComponentState.CONNECTED, "ACTIVE")
        assert isinstance(await h.entry_verdict("resumed"), TradeSignalApprovedEvent)
        assert [e.operator for e in h.of(ResumeEvent)] == ["alice"]  # never one of ours
    finally:
        await h.close()


async def test_breach_present_at_resume_counts_as_acknowledged() -> None:
    h = await Harness().open()
    try:
        await fire_cpu(h)
        await h.send(ResumeEvent("alice", h.clock()))
        await h.tick(60)  # CPU still high: acknowledged by the operator, no HALT again
        assert len(h.halts()) == 1 and not h.mon.halted
        h.probe.sample = HostSample(20.0, 40.0, 50.0)
        await h.tick(1)  # cleared ...
        h.mark = 1
        await fire_cpu(h)  # ... and back for host_breach_s: a new HALT
        assert len(h.halts()) == 2 and h.mon.halted
    finally:
        await h.close()


async def test_reducing_rejects_entries_approves_exits() -> None:
    h = await Harness().open()
    try:
        await h.send(ReduceEvent("winding down", "operator", h.clock()))
        assert h.mon.state is TradingState.REDUCING
        assert h.status().state is ComponentState.DEGRADED
        assert h.status().detail == "REDUCING (operator: winding down): exits only"
        entry = await h.entry_verdict("entry")
        assert isinstance(entry, TradeSignalRejectedEvent)
        assert entry.reason.startswith("reducing: ")
        exit_ = await h.entry_verdict("exit", is_exit=True)
        assert isinstance(exit_, TradeSignalApprovedEvent) and exit_.qty == D("100")
        assert not h.of(HaltEvent) and not h.of(FlattenEvent)
        await fire_auth(h)  # a HALT while reducing: HALTED wins
        assert h.mon.halted
        await h.send(ResumeEvent("alice", h.clock()))
        assert h.mon.status_detail() == "ACTIVE" and h.risk.reducing is None
        assert isinstance(await h.entry_verdict("again"), TradeSignalApprovedEvent)
    finally:
        await h.close()


async def test_failing_check_halts_fail_safe() -> None:
    h = await Harness().open()

    def broken() -> HostSample:
        raise OSError("no /proc")

    try:
        h.probe.sample = HostSample(0, 0, 0)
        h.mon._probe = broken
        await h.tick(1)
        [halt] = h.halts()
        assert halt.source == "monitoring" and "no /proc" in halt.reason
    finally:
        await h.close()


async def test_periodic_loop_runs_the_checks() -> None:
    h = Harness(check_interval_s=0.01, host_breach_s=5.0)
    await h.open()
    try:
        h.probe.sample = HostSample(99.0, 40.0, 50.0)
        await asyncio.sleep(0.05)
        h.clock.t += 6 * NS
        await h.send(feed())
        for _ in range(100):
            if h.halts():
                break
            await asyncio.sleep(0.01)
        await h.settle()
        assert [e.source for e in h.halts()] == ["host"]
    finally:
        await h.close()
