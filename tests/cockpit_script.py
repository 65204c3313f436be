"""A fixed, scripted market for the cockpit: snapshot tests and the load benchmark.

Everything is derived from integers and a fixed start time, so the same script always
paints the same screen: no simulator, no randomness, no wall clock. The scripted bus has
an owner of the trading state on it (:class:`StateOwner`, the RiskManager's state machine
without its checks, so scripted signals stay unanswered), as a run has, so the cockpit's HALT,
REDUCE and RESUME keys change what it shows the way they do live.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from decimal import Decimal

from gal_friday.bus import EventBus
from gal_friday.config import Settings
from gal_friday.domain import PortfolioSnapshot, Position
from gal_friday.events import (
    BookEvent,
    CandleEvent,
    ComponentState,
    Event,
    ExecutionReportEvent,
    FeedStatsEvent,
    OrderStatus,
    OrderType,
    PortfolioEvent,
    PredictionEvent,
    Side,
    SystemStatusEvent,
    TradeSignalApprovedEvent,
    TradeSignalProposedEvent,
)
from gal_friday.trading_state import TRADING_COMMANDS, TradingCommand, TradingStateMachine
from gal_friday.tui.app import CockpitApp
from gal_friday.tui.state import CockpitState

T0 = 1_736_173_800_000_000_000  # 2025-01-06 14:30:00 UTC
MINUTE = 60_000_000_000
D = Decimal
# pair -> (mid in price ticks, price precision, qty precision, base qty)
MARKETS = {"XRP/USD": (23_405, 4, 2, 4_000), "DOGE/USD": (143_200, 6, 2, 90_000)}


def frozen_clock() -> int:
    """The script's 'now': two seconds after the last scripted event."""
    return T0 + 2_000_000_000


def book(pair: str, seq: int = 1, *, depth: int = 10, ts_ns: int = T0) -> BookEvent:
    """A deterministic book around the pair's mid; ``seq`` shifts it a little."""
    mid, pp, qp, base = MARKETS.get(pair, (10_000, 4, 2, 1_000))
    mid += seq % 7 - 3
    scale = 10**qp
    bids = tuple(
        (mid - 1 - i, (base + (i * 3_917 + seq * 131) % base) * scale // 10) for i in range(depth)
    )
    asks = tuple(
        (mid + 1 + i, (base + (i * 5_113 + seq * 97) % base) * scale // 10) for i in range(depth)
    )
    return BookEvent(
        pair, bids, asks, pp, qp, (seq * 2_654_435_761) % 2**32, seq, seq == 1, "", ts_ns
    )


def candles(pair: str, minutes: int = 90) -> list[CandleEvent]:
    mid, pp, _, _ = MARKETS.get(pair, (10_000, 4, 2, 1_000))
    out = []
    for m in range(minutes):
        wave = (m * 37) % 23 - 11 + (m // 9) * 2 - ((m * m) % 13)
        close = D(mid + wave * 3).scaleb(-pp)
        ts = T0 - (minutes - m) * MINUTE
        out.append(
            CandleEvent(
                pair,
                60,
                ts,
                close,
                close,
                close,
                close,
                D(1000),
                close,
                10,
                m < minutes - 1,
                ts + MINUTE,
            )
        )
    return out


def report(
    coid: str,
    pair: str,
    side: Side,
    kind: OrderType,
    status: OrderStatus,
    qty: str,
    filled: str,
    *,
    price: str | None = None,
    trigger: str | None = None,
    avg: str | None = None,
    ts_ns: int = T0,
) -> ExecutionReportEvent:
    return ExecutionReportEvent(
        coid,
        None,
        None,
        pair,
        side,
        kind,
        status,
        D(qty),
        D(filled),
        D(avg) if avg else None,
        None,
        None,
        D(0),
        "USD",
        None,
        ts_ns,
        D(price) if price else None,
        D(trigger) if trigger else None,
    )


def portfolio(ts_ns: int = T0) -> PortfolioSnapshot:
    positions = (
        Position("XRP/USD", D("1000"), D("2.3310"), D("2.3405"), T0 - 20 * MINUTE),
        Position("DOGE/USD", D("5000"), D("0.143950"), D("0.143200"), T0 - 9 * MINUTE),
    )
    return PortfolioSnapshot(
        ts_ns,
        D("7004.20"),
        D("6400.00"),
        positions,
        D("10060.70"),
        D("10250.00"),
        D("10120.00"),
        D("10300.00"),
        D("60.70"),
        D("11.30"),
        2,
    )


def trading_events(ts_ns: int = T0) -> list[Event]:
    """A filled XRP entry with its stop-loss and take-profit working, a DOGE entry waiting."""
    buy = Side.BUY
    return [
        TradeSignalProposedEvent(
            "s1",
            "XRP/USD",
            buy,
            OrderType.LIMIT,
            D("2.3310"),
            D("2.3193"),
            D("2.3543"),
            0.712,
            "sim-demo",
            ts_ns,
        ),
        TradeSignalApprovedEvent(
            "s1",
            "XRP/USD",
            buy,
            OrderType.LIMIT,
            D("1000"),
            D("2.3310"),
            D("2.3193"),
            D("2.3543"),
            ts_ns,
        ),
        report(
            "e1",
            "XRP/USD",
            buy,
            OrderType.LIMIT,
            OrderStatus.FILLED,
            "1000",
            "1000",
            price="2.3310",
            avg="2.3310",
            ts_ns=ts_ns,
        ),
        report(
            "sl1",
            "XRP/USD",
            Side.SELL,
            OrderType.STOP_LOSS,
            OrderStatus.ACKNOWLEDGED,
            "1000",
            "0",
            trigger="2.3193",
            ts_ns=ts_ns,
        ),
        report(
            "tp1",
            "XRP/USD",
            Side.SELL,
            OrderType.TAKE_PROFIT,
            OrderStatus.ACKNOWLEDGED,
            "1000",
            "0",
            trigger="2.3543",
            ts_ns=ts_ns,
        ),
        report(
            "e2",
            "DOGE/USD",
            buy,
            OrderType.LIMIT,
            OrderStatus.ACKNOWLEDGED,
            "2500",
            "0",
            price="0.143100",
            ts_ns=ts_ns,
        ),
    ]


def scripted_events(pairs: tuple[str, ...]) -> list[Event]:
    """The whole normal-running scene, in publication order."""
    events: list[Event] = [
        SystemStatusEvent("kraken.ws.public", ComponentState.CONNECTED, "", T0 - MINUTE),
    ]
    for pair in pairs:
        events += candles(pair)
        events.append(book(pair, seq=1200))
    probs = {"XRP/USD": 0.712, "DOGE/USD": 0.468}
    for pair in pairs:
        events.append(
            PredictionEvent(
                pair,
                T0 - 3_000_000_000,
                "sim-demo",
                probs.get(pair, 0.5),
                T0 - 3_100_000_000,
                4_200_000,
            )
        )
    events += trading_events(T0 - 1_000_000_000)
    events.append(PortfolioEvent(portfolio()))
    events.append(
        FeedStatsEvent(
            ComponentState.CONNECTED,
            5000,
            40.0,
            4800,
            0,
            0,
            0,
            "",
            tuple((p, 0.3) for p in pairs),
            T0,
        )
    )
    return events


class StateOwner:
    """Announces the trading state from the commands, by the one set of rules."""

    def __init__(self, bus: EventBus) -> None:
        self.bus = bus
        self.machine = TradingStateMachine()
        bus.subscribe(TRADING_COMMANDS, self.on_command, name="script-state-owner")

    async def on_command(self, command: TradingCommand) -> None:
        changed = self.machine.apply(command)
        if changed is not None:
            await self.bus.publish(changed)


class ScriptedRunner:
    """Stands in for the engine: starts the bus, plays the events, idles until stopped."""

    def __init__(self, bus: EventBus, events: list[Event]) -> None:
        self.bus = bus
        self.events = events
        self.played = asyncio.Event()

    async def __call__(self, stop: asyncio.Event) -> None:
        self.bus.start()
        try:
            for event in self.events:
                await self.bus.publish(event)
            await self.bus.drain()
            self.played.set()
            await stop.wait()
        finally:
            await self.bus.stop()


def scripted_app(
    settings: Settings | None = None,
    *,
    events: list[Event] | None = None,
    clock: Callable[[], int] = frozen_clock,
    bus: EventBus | None = None,
    owner: bool = True,
) -> tuple[CockpitApp, ScriptedRunner]:
    """A cockpit on a scripted bus with a frozen clock and no animation (deterministic);
    ``owner=False`` when the caller puts a RiskManager (the real owner) on the bus."""
    settings = settings or Settings(exchange="sim")
    bus = bus or EventBus()
    state = CockpitState(settings, clock=clock)
    state.attach(bus)
    if owner:
        StateOwner(bus)
    runner = ScriptedRunner(bus, scripted_events(settings.pairs) if events is None else events)
    app = CockpitApp(settings, bus, state, runner=runner, clock=clock, animations=False)
    return app, runner
