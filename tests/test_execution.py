"""ExecutionHandler on the paper venue: entries, timeouts, stop-loss / take-profit after every
fill with one-cancels-other, exits, and the no-duplicate rules under venue errors."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from decimal import Decimal as D

import pytest

from gal_friday.bus import EventBus
from gal_friday.config import ExecutionSettings, FeeSettings, PaperSettings
from gal_friday.events import (
    BookEvent,
    Event,
    ExecutionReportEvent,
    OrderStatus,
    OrderType,
    ReconciliationEvent,
    Side,
    TradeEvent,
    TradeSignalApprovedEvent,
    TradingState,
    TradingStateChangedEvent,
)
from gal_friday.execution.handler import ClientIds, ExecutionHandler, Role, role_of
from gal_friday.execution.paper import PaperVenue
from gal_friday.execution.venue import (
    OrderRejected,
    OrderRequest,
    VenueBusy,
    VenueOrder,
    VenueUncertain,
)
from gal_friday.portfolio import PortfolioManager

PAIR = "XRP/USD"
S = 1_000_000_000


class Clock:
    def __init__(self) -> None:
        self.now = 1_700_000_000 * S

    def __call__(self) -> int:
        return self.now


def book(bid: str, ask: str, t: int, qty: str = "1000") -> BookEvent:
    p = lambda x: int(D(x).scaleb(5))  # noqa: E731
    q = int(D(qty).scaleb(8))
    return BookEvent(PAIR, ((p(bid), q),), ((p(ask), q),), 5, 8, 0, 1, False, "", t)


def trade(price: str, qty: str, t: int) -> TradeEvent:
    return TradeEvent(PAIR, t, Side.SELL, D(price), D(qty), "market", t, t)


def entry(qty: str = "100", limit: str = "2.00000", sig: str = "sig-1") -> TradeSignalApprovedEvent:
    return TradeSignalApprovedEvent(
        signal_id=sig,
        pair=PAIR,
        side=Side.BUY,
        order_type=OrderType.LIMIT,
        qty=D(qty),
        limit_price=D(limit),
        stop_loss=D("1.90000"),
        take_profit=D("2.20000"),
        ts_ns=0,
    )


def exit_signal(qty: str, sig: str = "sig-x") -> TradeSignalApprovedEvent:
    return TradeSignalApprovedEvent(
        signal_id=sig,
        pair=PAIR,
        side=Side.SELL,
        order_type=OrderType.MARKET,
        qty=D(qty),
        limit_price=None,
        stop_loss=D("1.90000"),
        take_profit=D("2.20000"),
        ts_ns=0,
        is_exit=True,
    )


class Rig:
    """A handler on a paper venue with a manual clock; reports collected from the bus."""

    def __init__(self, venue_wrapper: type[PaperVenue] | None = None, **execution: object) -> None:
        self.clock = Clock()
        self.bus = EventBus()
        settings = PaperSettings(latency_ms=0, slippage_bps=D(0))
        self.venue = (venue_wrapper or PaperVenue)(settings, FeeSettings(), clock_ns=self.clock)
        defaults: dict[str, object] = {"busy_retry_s": 0.001, "reconcile_interval_s": 0}
        self.handler = ExecutionHandler(
            ExecutionSettings(**{**defaults, **execution}),  # type: ignore[arg-type]
            self.venue,
            self.bus,
            clock_ns=self.clock,
        )
        self.reports: list[ExecutionReportEvent] = []
        self.events: list[Event] = []
        self.bus.subscribe(
            (ExecutionReportEvent, ReconciliationEvent), self._collect, name="collector"
        )

    async def _collect(self, event: Event) -> None:
        self.events.append(event)
        if isinstance(event, ExecutionReportEvent):
            self.reports.append(event)

    async def market(self, *events: Event) -> None:
        for event in events:
            self.clock.now = max(self.clock.now, getattr(event, "received_ts_ns", 0))
            await self.venue.on_market(event)
            await self.settle()

    async def settle(self) -> None:
        for _ in range(50):
            await asyncio.sleep(0)
            if self.handler._tasks:
                await asyncio.gather(*list(self.handler._tasks), return_exceptions=True)
        await self.bus.drain()

    def working(self, role: Role) -> list[OrderRequest]:
        return [o.request for o in self.handler.orders.values() if o.role is role and o.working]

    def of_role(self, role: Role) -> list[ExecutionReportEvent]:
        coids = {c for c, o in self.handler.orders.items() if o.role is role}
        return [r for r in self.reports if r.client_order_id in coids]


async def started_rig(venue_wrapper: type[PaperVenue] | None = None, **execution: object) -> Rig:
    """A rig with its bus and venue running and a first book (bid 2.00000, ask 2.00010)."""
    r = Rig(venue_wrapper, **execution)
    r.bus.start()
    await r.venue.start(r.handler.on_venue_report)
    await r.market(book("2.00000", "2.00010", r.clock.now))
    return r


@pytest.fixture
async def rig() -> AsyncIterator[Rig]:
    r = await started_rig()
    yield r
    await r.bus.stop()


async def fill_entry(rig: Rig, qty: str = "100") -> None:
    await rig.handler.on_approved(entry(qty))
    await rig.settle()
    t = rig.clock.now + S
    await rig.market(book("1.99990", "1.99995", t))  # the ask crosses the bid we joined


async def test_limit_entry_fills_and_gets_a_stop_and_a_target_for_the_filled_qty(rig: Rig) -> None:
    await fill_entry(rig)
    entry_reports = rig.of_role(Role.ENTRY)
    assert entry_reports[-1].status is OrderStatus.FILLED
    assert all(r.signal_id == "sig-1" for r in rig.reports)
    (stop,), (target,) = rig.working(Role.STOP), rig.working(Role.TARGET)
    assert (stop.type, stop.qty, stop.trigger_price) == (OrderType.STOP_LOSS, D(100), D("1.90000"))
    assert (target.type, target.qty, target.trigger_price) == (
        OrderType.TAKE_PROFIT,
        D(100),
        D("2.20000"),
    )
    assert all(len(o.client_order_id) <= 18 for o in (stop, target))


async def test_each_partial_fill_is_protected_by_its_own_quantity(rig: Rig) -> None:
    await rig.handler.on_approved(entry("100"))
    await rig.settle()
    await rig.market(trade("2.00000", "30", rig.clock.now + S))  # a touch: 30 of 100
    assert [o.qty for o in rig.working(Role.STOP)] == [D(30)]
    await rig.market(trade("1.99000", "500", rig.clock.now + S))  # through: the rest
    assert sorted(o.qty for o in rig.working(Role.STOP)) == [D(30), D(70)]
    assert sorted(o.qty for o in rig.working(Role.TARGET)) == [D(30), D(70)]
    assert rig.handler.pairs[PAIR].held == D(100)


async def test_stop_fill_cancels_the_target(rig: Rig) -> None:
    await fill_entry(rig)
    await rig.market(book("1.89000", "1.89010", rig.clock.now + S))
    assert rig.of_role(Role.STOP)[-1].status is OrderStatus.FILLED
    assert rig.of_role(Role.TARGET)[-1].status is OrderStatus.CANCELLED
    assert rig.handler.pairs[PAIR].held == 0
    assert rig.handler.working_orders() == []


async def test_target_fill_cancels_the_stop(rig: Rig) -> None:
    await fill_entry(rig)
    await rig.market(book("2.20000", "2.20010", rig.clock.now + S))
    assert rig.of_role(Role.TARGET)[-1].status is OrderStatus.FILLED
    assert rig.of_role(Role.STOP)[-1].status is OrderStatus.CANCELLED
    assert await rig.venue.balances() == {
        "USD": D(10000) - D(200) - D("0.5") + D(220) - D("0.88")
    }  # maker in, taker out


async def test_an_entry_not_filled_in_time_is_cancelled() -> None:
    r = await started_rig(entry_timeout_s=15)
    await r.handler.on_approved(entry(limit="1.99000"))
    await r.handler.tick(r.clock.now + 14 * S)
    await r.settle()
    assert r.working(Role.ENTRY)
    await r.handler.tick(r.clock.now + 16 * S)
    await r.settle()
    assert r.of_role(Role.ENTRY)[-1].status is OrderStatus.CANCELLED
    assert r.of_role(Role.ENTRY_MARKET) == []
    await r.bus.stop()


async def test_timeout_can_send_the_unfilled_rest_at_market() -> None:
    r = await started_rig(entry_timeout_s=15, entry_timeout_action="market")
    await r.handler.on_approved(entry("100", limit="1.99000"))
    await r.settle()
    await r.market(trade("1.99000", "40", r.clock.now + S))  # 40 filled at the limit
    r.clock.now += 16 * S
    await r.handler.tick(r.clock.now)
    await r.settle()
    market = r.of_role(Role.ENTRY_MARKET)
    assert market[-1].status is OrderStatus.FILLED and market[-1].filled_qty == D(60)
    assert market[-1].signal_id == "sig-1"
    assert r.handler.pairs[PAIR].held == D(100)
    assert sum(o.qty for o in r.working(Role.STOP)) == D(100)
    await r.bus.stop()


async def test_exit_cancels_protection_first_then_sells_what_is_held(rig: Rig) -> None:
    await fill_entry(rig)
    await rig.handler.on_approved(exit_signal("100"))
    await rig.settle()
    exits = rig.of_role(Role.EXIT)
    assert exits[-1].status is OrderStatus.FILLED and exits[-1].filled_qty == D(100)
    first_exit = rig.reports.index(exits[0])
    cancels = [i for i, r in enumerate(rig.reports) if r.status is OrderStatus.CANCELLED]
    assert len(cancels) == 2 and max(cancels) < first_exit
    assert rig.handler.working_orders() == []
    assert (await rig.venue.balances()).get("XRP") is None


async def test_refused_order_is_reported_with_its_reason(rig: Rig) -> None:
    await rig.handler.on_approved(entry("100000"))  # 200k USD with 10k in the account
    await rig.settle()
    (report,) = rig.reports
    assert report.status is OrderStatus.REJECTED
    assert report.reason == "insufficient funds" and report.signal_id == "sig-1"


# --- errors: never a duplicate order -------------------------------------------------------


class FlakyVenue(PaperVenue):
    """A paper venue that fails in scripted ways and counts what reaches the engine."""

    script: list[str]

    def __init__(self, *args: object, **kwargs: object) -> None:
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]
        self.script = []
        self.sent: list[str] = []
        self.lookups = 0
        self.lookup_fails = 0

    async def submit(self, order: OrderRequest) -> str:
        step = self.script.pop(0) if self.script else "ok"
        if step == "busy":
            raise VenueBusy("EOrder:Rate limit exceeded")
        if step == "minimum":
            raise OrderRejected("EOrder:Order minimum not met")
        self.sent.append(order.client_order_id)
        if step == "lost":  # the venue got it; the answer never came back
            await super().submit(order)
            raise VenueUncertain("connection lost")
        if step == "dropped":  # the request died before reaching the venue
            self.sent.pop()
            raise VenueUncertain("timeout")
        return await super().submit(order)

    async def lookup(self, client_order_id: str) -> VenueOrder | None:
        self.lookups += 1
        if self.lookup_fails:
            self.lookup_fails -= 1
            raise VenueBusy("EService:Unavailable")
        return await super().lookup(client_order_id)


@pytest.fixture
async def flaky() -> AsyncIterator[Rig]:
    r = await started_rig(FlakyVenue)
    yield r
    await r.bus.stop()


def venue(r: Rig) -> FlakyVenue:
    assert isinstance(r.venue, FlakyVenue)
    return r.venue


async def test_busy_venue_is_retried_with_the_same_client_id(flaky: Rig) -> None:
    venue(flaky).script = ["busy", "busy"]
    await flaky.handler.on_approved(entry())
    await flaky.settle()
    assert len(venue(flaky).sent) == 1
    assert flaky.of_role(Role.ENTRY)[-1].status is OrderStatus.ACKNOWLEDGED
    assert flaky.handler.stats["busy_retries"] == 2


async def test_busy_beyond_the_retries_is_an_error_and_nothing_was_placed(flaky: Rig) -> None:
    venue(flaky).script = ["busy"] * 10
    await flaky.handler.on_approved(entry())
    await flaky.settle()
    assert venue(flaky).sent == []
    assert flaky.reports[-1].status is OrderStatus.ERROR
    assert await flaky.venue.open_orders() == []


async def test_lost_answer_is_looked_up_not_resent(flaky: Rig) -> None:
    venue(flaky).script = ["lost"]
    await flaky.handler.on_approved(entry())
    await flaky.settle()
    assert len(venue(flaky).sent) == 1 and venue(flaky).lookups == 1
    assert len(await flaky.venue.open_orders()) == 1
    assert flaky.handler.stats["resolved_by_lookup"] == 1


async def test_request_that_never_arrived_is_resent_once_the_venue_says_so(flaky: Rig) -> None:
    venue(flaky).script = ["dropped"]
    await flaky.handler.on_approved(entry())
    await flaky.settle()
    assert len(venue(flaky).sent) == 1
    (open_order,) = await flaky.venue.open_orders()
    assert open_order.client_order_id == flaky.working(Role.ENTRY)[0].client_order_id


async def test_unknown_fate_is_never_resent_while_the_venue_cannot_answer(flaky: Rig) -> None:
    venue(flaky).script = ["dropped"]
    venue(flaky).lookup_fails = 3
    await flaky.handler.on_approved(entry())
    await flaky.settle()
    assert venue(flaky).sent == []
    (order,) = flaky.handler.orders.values()
    assert order.unresolved
    await flaky.handler.tick(flaky.clock.now)  # the timer asks again, and now it answers
    await flaky.settle()
    assert not order.unresolved and venue(flaky).sent == []


# --- ids and reconciliation ----------------------------------------------------------------


def test_client_ids_are_short_unique_and_grow_across_restarts() -> None:
    clock = Clock()
    first = ClientIds(clock)
    a = [first.new(Role.ENTRY) for _ in range(1000)]
    clock.now += S  # a restart a second later
    b = ClientIds(clock).new(Role.ENTRY)
    assert len(set(a)) == 1000 and all(len(c) <= 18 and c.isascii() for c in a)
    assert int(b[3:], 36) > int(a[-1][3:], 36)


async def test_reconciliation_brings_the_portfolio_to_the_venue(rig: Rig) -> None:
    portfolio = PortfolioManager(D(10000), pairs=[PAIR])
    portfolio.attach(rig.bus)
    await fill_entry(rig)
    rig.clock.now += 5 * S
    event = await rig.handler.reconcile()
    await rig.settle()
    assert event is not None and dict(event.balances)["XRP"] == D(100)
    assert {o.client_order_id for o in event.open_orders} == {
        o.client_order_id for o in rig.handler.working_orders()
    }
    snap = portfolio.snapshot()
    assert snap.cash == dict(event.balances)["USD"]
    assert [p.qty for p in snap.positions] == [D(100)]


def state(to: TradingState, source: str = "risk") -> TradingStateChangedEvent:
    """The trading state's owner announcing a change (what the handler follows)."""
    return TradingStateChangedEvent(to, TradingState.ACTIVE, "drawdown", source, 0)


async def test_halt_cancels_working_entries_but_keeps_protection(rig: Rig) -> None:
    await fill_entry(rig)
    await rig.handler.on_approved(entry("50", limit="1.95000", sig="sig-2"))
    await rig.settle()
    assert len(rig.working(Role.ENTRY)) == 1
    await rig.handler.on_control(state(TradingState.HALTED))
    await rig.settle()
    assert rig.working(Role.ENTRY) == []
    assert len(rig.working(Role.STOP)) == 1 and len(rig.working(Role.TARGET)) == 1


async def test_a_halt_never_turns_a_cancelled_entry_into_a_market_order() -> None:
    r = await started_rig(entry_timeout_s=15, entry_timeout_action="market")
    await r.handler.on_approved(entry("100", limit="1.99000"))
    await r.settle()
    await r.market(trade("1.99000", "40", r.clock.now + S))  # partly filled
    await r.handler.on_control(state(TradingState.HALTED))
    await r.settle()
    assert r.of_role(Role.ENTRY)[-1].status is OrderStatus.CANCELLED
    r.clock.now += 16 * S
    await r.handler.tick(r.clock.now)  # past the timeout: still no market order
    await r.settle()
    assert r.of_role(Role.ENTRY_MARKET) == []
    assert r.handler.pairs[PAIR].held == D(40)
    await r.bus.stop()


@pytest.mark.parametrize("resumed", [True, False])
async def test_after_a_resume_a_timed_out_entry_converts_to_market_again(resumed: bool) -> None:
    r = await started_rig(entry_timeout_s=15, entry_timeout_action="market")
    await r.handler.on_control(state(TradingState.REDUCING, "operator"))
    if resumed:  # resumed: conversions allowed again
        await r.handler.on_control(state(TradingState.ACTIVE, "operator"))
    await r.handler.on_approved(entry("100", limit="1.99000"))
    await r.settle()
    r.clock.now += 16 * S
    await r.handler.tick(r.clock.now)
    await r.settle()
    if resumed:
        assert r.of_role(Role.ENTRY_MARKET)[-1].status is OrderStatus.FILLED  # it converts
    else:
        assert r.of_role(Role.ENTRY_MARKET) == []  # REDUCING: exits only, no market entry


async def test_a_refused_stop_is_not_retried_in_a_loop_and_waits_for_the_next_fill(
    flaky: Rig,
) -> None:
    venue(flaky).script = ["ok", "minimum"]  # the entry goes, its stop is refused
    await flaky.handler.on_approved(entry("100"))
    await flaky.settle()
    await flaky.market(trade("2.00000", "5", flaky.clock.now + S))  # 5 filled: below a minimum
    assert len(venue(flaky).sent) == 1 and flaky.working(Role.STOP) == []  # only the entry
    assert flaky.working(Role.TARGET) == []  # no target without its stop
    assert flaky.handler.pairs[PAIR].unprotected == D(5)
    await flaky.market(trade("1.99000", "500", flaky.clock.now + S))  # the rest fills
    assert [o.qty for o in flaky.working(Role.STOP)] == [D(100)]  # all of it, together
    assert [o.qty for o in flaky.working(Role.TARGET)] == [D(100)]


async def test_a_refused_target_leaves_the_stop_in_place(flaky: Rig) -> None:
    venue(flaky).script = ["ok", "ok", "minimum"]  # entry, stop, then the target refused
    await flaky.handler.on_approved(entry("100"))
    await flaky.settle()
    await flaky.market(book("1.99990", "1.99995", flaky.clock.now + S))
    assert [o.qty for o in flaky.working(Role.STOP)] == [D(100)]
    assert flaky.working(Role.TARGET) == []
    assert flaky.handler.pairs[PAIR].unprotected == 0


async def test_an_exit_after_the_stop_sold_everything_sends_nothing(rig: Rig) -> None:
    await fill_entry(rig)
    await rig.market(book("1.89000", "1.89010", rig.clock.now + S))  # the stop sells it all
    assert rig.handler.pairs[PAIR].held == 0
    await rig.handler.on_approved(exit_signal("100"))
    await rig.settle()
    (report,) = rig.of_role(Role.EXIT)
    assert (report.status, report.reason) == (OrderStatus.CANCELLED, "nothing held to sell")
    assert report.signal_id == "sig-x"  # the strategy's exit is answered
    assert await rig.venue.open_orders() == []
    assert rig.handler.stats["rejected"] == rig.handler.stats["errors"] == 0


async def test_an_exit_while_the_take_profit_is_still_going_out_leaves_no_order_behind(
    rig: Rig,
) -> None:
    """The crash loop's race: the stop went out, the take-profit's intent was still being
    written when the exit began. The exit's cancel of the take-profit used to overtake its
    request ("Kraken does not know it"), and the take-profit then rested at the exchange
    with nothing to sell. The cancel now waits for the request to go out."""
    gate = asyncio.Event()

    class SlowJournal:
        async def record_order_intent(self, request: OrderRequest) -> None:
            if role_of(request.client_order_id) is Role.TARGET:
                await gate.wait()

    rig.handler.journal = SlowJournal()
    await rig.handler.on_approved(entry("100"))
    await rig.settle()
    rig.clock.now += S
    await rig.venue.on_market(book("1.99990", "1.99995", rig.clock.now))  # the entry fills
    for _ in range(20):
        await asyncio.sleep(0)
    assert [o.role for o in rig.handler.orders.values() if o.working] == [Role.STOP, Role.TARGET]
    exiting = asyncio.create_task(rig.handler.on_approved(exit_signal("100")))
    for _ in range(20):
        await asyncio.sleep(0)
    gate.set()
    async with asyncio.timeout(5):  # before: the exit waited for a cancel that never came
        await exiting
    await rig.settle()
    assert rig.of_role(Role.EXIT)[-1].status is OrderStatus.FILLED
    assert await rig.venue.open_orders() == []
    assert rig.handler.working_orders() == []


async def test_an_exit_while_the_stop_is_still_going_out_sends_no_take_profit(rig: Rig) -> None:
    """The exit began while the stop's intent was being written: the exit cancels the stop
    once it is out and sells; protection sends no take-profit and keeps nothing to protect
    (an unsent take-profit used to stay "working" in the handler, and the quantity was
    counted unprotected after the exit had sold it)."""
    gate = asyncio.Event()

    class SlowJournal:
        async def record_order_intent(self, request: OrderRequest) -> None:
            if role_of(request.client_order_id) is Role.STOP:
                await gate.wait()

    rig.handler.journal = SlowJournal()
    await rig.handler.on_approved(entry("100"))
    await rig.settle()
    rig.clock.now += S
    await rig.venue.on_market(book("1.99990", "1.99995", rig.clock.now))  # the entry fills
    for _ in range(20):
        await asyncio.sleep(0)
    exiting = asyncio.create_task(rig.handler.on_approved(exit_signal("100")))
    for _ in range(20):
        await asyncio.sleep(0)
    gate.set()
    async with asyncio.timeout(5):
        await exiting
    await rig.settle()
    assert rig.of_role(Role.EXIT)[-1].status is OrderStatus.FILLED
    assert not [o for o in rig.handler.orders.values() if o.role is Role.TARGET]
    assert await rig.venue.open_orders() == []
    assert rig.handler.working_orders() == []
    assert rig.handler.pairs[PAIR].unprotected == 0


async def test_flatten_from_an_operator_closes_the_position_through_the_whole_path() -> None:
    """FlattenEvent -> strategy exit -> risk approval -> protection cancelled -> market sell."""
    from gal_friday.config import RiskSettings, StrategySettings
    from gal_friday.domain import InstrumentSpec
    from gal_friday.events import FlattenEvent, InstrumentEvent, PredictionEvent
    from gal_friday.risk import RiskManager
    from gal_friday.strategy import StrategyArbitrator

    r = Rig()
    portfolio = PortfolioManager(D(10000), pairs=[PAIR])
    portfolio.attach(r.bus)
    RiskManager(
        RiskSettings(), r.bus, portfolio.snapshot, taker_fee_pct=D("0.4"), clock=r.clock
    ).attach()
    StrategyArbitrator(
        StrategySettings(confirm_momentum=False), FeeSettings(), r.bus, pairs=(PAIR,)
    ).attach()
    r.handler.attach()
    r.bus.start()
    await r.venue.start(r.handler.on_venue_report)

    async def market(event: Event) -> None:
        await r.bus.publish(event)  # strategy, risk and portfolio see it
        await r.market(event)  # and the venue

    await r.bus.publish(
        InstrumentEvent(
            PAIR, InstrumentSpec(PAIR, 5, 8, D("0.00001"), D("0.00000001"), D("10"), D("0.5"))
        )
    )
    await market(book("2.00000", "2.00010", r.clock.now))
    await r.bus.publish(PredictionEvent(PAIR, r.clock.now, "m", 0.9, r.clock.now, 0))
    await r.settle()
    await market(book("1.99990", "1.99995", r.clock.now + S))  # the entry fills
    held = r.handler.pairs[PAIR].held
    assert held > 0 and r.working(Role.STOP) and r.working(Role.TARGET)

    await r.bus.publish(FlattenEvent("operator"))
    await r.settle()
    await r.settle()
    exits = r.of_role(Role.EXIT)
    assert exits[-1].status is OrderStatus.FILLED and exits[-1].filled_qty == held
    assert r.handler.working_orders() == [] and r.handler.pairs[PAIR].held == 0
    assert portfolio.snapshot().positions == ()
    await r.bus.stop()


class DeafVenue(PaperVenue):
    """Cancels never reach it (the connection is down): nothing is ever confirmed."""

    async def cancel(self, client_order_id: str) -> None:
        return None


async def turns(n: int = 20) -> None:
    """Let spawned tasks run without waiting for them (an exit may be waiting for good)."""
    for _ in range(n):
        await asyncio.sleep(0)


@pytest.fixture
async def waiting_exit() -> AsyncIterator[Rig]:
    """A filled entry whose exit waits for cancels that never come back (cancel_wait_s 5)."""
    r = await started_rig(DeafVenue, cancel_wait_s=5.0)
    await fill_entry(r)
    await r.handler.on_approved(exit_signal("100"))
    await turns()
    yield r
    await r.bus.stop()


async def test_an_exit_whose_cancels_never_come_back_goes_after_cancel_wait_s(
    waiting_exit: Rig,
) -> None:
    r = waiting_exit
    await r.handler.tick(r.clock.now + 4 * S)  # the timer, before cancel_wait_s
    await turns()
    assert r.of_role(Role.EXIT) == []
    await r.handler.tick(r.clock.now + 6 * S)  # past it: the exit goes out
    await r.settle()
    assert r.of_role(Role.EXIT)[-1].status is OrderStatus.FILLED


async def test_an_exit_waiting_for_cancels_goes_at_once_when_the_clock_steps_back(
    waiting_exit: Rig,
) -> None:
    # NTP stepping the wall clock back an hour must not keep the position unsold an hour
    r = waiting_exit
    await r.handler.tick(r.clock.now - 3600 * S)
    await r.settle()
    assert r.of_role(Role.EXIT)[-1].status is OrderStatus.FILLED
