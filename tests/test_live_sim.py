"""Live order routing end to end: the ExecutionHandler and the Kraken trading venue (signed
REST, token WebSocket v2) against the simulator's private API over loopback, with the market
driven by hand so every fill is known.

Signals become orders, fills, stop-loss / take-profit orders at the exchange and P&L; after a
reconciliation the portfolio equals the exchange's balances; exchange errors never duplicate
an order."""

from __future__ import annotations

import asyncio
import base64
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from decimal import Decimal as D

import msgspec
import pytest
from handmarket import HandMarket, move_book
from pydantic import SecretStr

from gal_friday.bus import EventBus
from gal_friday.config import Credentials, ExecutionSettings, KrakenSettings
from gal_friday.events import (
    ExecutionReportEvent,
    OrderStatus,
    OrderType,
    Side,
    TradeSignalApprovedEvent,
)
from gal_friday.execution.handler import ExecutionHandler, Role
from gal_friday.kraken.auth import NonceSource
from gal_friday.kraken.trading import KrakenTradingVenue
from gal_friday.portfolio import PortfolioManager
from gal_friday.sim.server import SimExchange

PAIR = "XRP/USD"
KEY = "live-sim-key"
SECRET = base64.b64encode(bytes(range(7, 71))).decode()


@dataclass
class Live:
    sim: SimExchange
    venue: KrakenTradingVenue
    handler: ExecutionHandler
    portfolio: PortfolioManager
    bus: EventBus
    reports: list[ExecutionReportEvent]

    async def until(self, what: Callable[[], bool], within: float = 5.0) -> None:
        deadline = time.monotonic() + within
        while not what():
            assert time.monotonic() < deadline, "timed out"
            await asyncio.sleep(0.02)
        await self.bus.drain()

    def roles(self, role: Role) -> list[ExecutionReportEvent]:
        coids = {c for c, o in self.handler.orders.items() if o.role is role}
        return [r for r in self.reports if r.client_order_id in coids]

    def working(self, role: Role) -> list[str]:
        return [c for c, o in self.handler.orders.items() if o.role is role and o.working]

    def sim_orders(self) -> list[str]:
        return [o.params.cl_ord_id or "" for o in self.sim.trading.open_orders()]


@pytest.fixture
async def live(tmp_path: object) -> AsyncIterator[Live]:
    sim = SimExchange(HandMarket(), seed=3)
    sim.private.add_key(KEY, SECRET)
    async with sim:
        creds = Credentials(api_key=SecretStr(KEY), api_secret=SecretStr(SECRET))
        settings = KrakenSettings(
            request_timeout_s=2.0, reconnect_initial_s=0.05, reconnect_max_s=0.2
        )
        venue = KrakenTradingVenue(
            settings,
            creds,
            pairs=(PAIR, "DOGE/USD"),
            nonce=NonceSource(),
            ws_url=sim.ws_auth_url,
            rest_url=sim.rest_url,
            dms_interval_s=0.5,
        )
        bus = EventBus()
        handler = ExecutionHandler(
            ExecutionSettings(busy_retry_s=0.01, reconcile_interval_s=0), venue, bus
        )
        reports: list[ExecutionReportEvent] = []
        bus.subscribe(ExecutionReportEvent, reports.append, name="collector")
        await handler.start()
        balances = await venue.balances()
        portfolio = PortfolioManager(balances["USD"], pairs=[PAIR, "DOGE/USD"])
        portfolio.attach(bus)
        handler.attach()
        bus.start()
        try:
            yield Live(sim, venue, handler, portfolio, bus, reports)
        finally:
            await bus.stop()
            await handler.stop()


def entry(qty: str, limit: str, sig: str = "sig-e") -> TradeSignalApprovedEvent:
    return TradeSignalApprovedEvent(
        signal_id=sig,
        pair=PAIR,
        side=Side.BUY,
        order_type=OrderType.LIMIT,
        qty=D(qty),
        limit_price=D(limit),
        stop_loss=D("2.10000"),
        take_profit=D("2.30000"),
        ts_ns=0,
    )


def exit_all(qty: str, sig: str = "sig-x") -> TradeSignalApprovedEvent:
    return TradeSignalApprovedEvent(
        signal_id=sig,
        pair=PAIR,
        side=Side.SELL,
        order_type=OrderType.MARKET,
        qty=D(qty),
        limit_price=None,
        stop_loss=D("2.10000"),
        take_profit=D("2.30000"),
        ts_ns=0,
        is_exit=True,
    )


async def buy_and_protect(live: Live, qty: str = "100") -> None:
    await live.bus.publish(entry(qty, "2.20000"))  # marketable: takes the 2.20000 ask
    await live.until(
        lambda: (
            len(live.working(Role.STOP)) == 1
            and len(live.working(Role.TARGET)) == 1
            and len(live.sim_orders()) == 2
        )
    )


async def test_entry_fill_puts_stop_and_target_at_the_exchange(live: Live) -> None:
    await buy_and_protect(live)
    filled = live.roles(Role.ENTRY)[-1]
    assert filled.status is OrderStatus.FILLED and filled.avg_price == D("2.20000")
    assert filled.fee == D(100) * D("2.20000") * D("0.0040")  # taker
    kinds = sorted(o.params.order_type for o in live.sim.trading.open_orders())
    assert kinds == ["stop-loss", "take-profit"]
    assert {r.signal_id for r in live.reports} == {"sig-e"}


async def test_stop_fill_cancels_the_target_and_books_the_loss(live: Live) -> None:
    await buy_and_protect(live)
    move_book(live.sim, PAIR, [("2.09000", "1000")], [("2.09500", "1000")])
    await live.until(lambda: live.sim_orders() == [] and not live.handler.working_orders())
    assert live.roles(Role.STOP)[-1].status is OrderStatus.FILLED
    assert live.roles(Role.TARGET)[-1].status is OrderStatus.CANCELLED
    snap = live.portfolio.snapshot()
    assert snap.positions == () and snap.realised_pnl < 0 and snap.consecutive_losses == 1


async def test_exit_cancels_protection_then_sells_and_reconciles_clean(live: Live) -> None:
    await buy_and_protect(live)
    await live.bus.publish(exit_all("100"))
    await live.until(
        lambda: (
            bool(live.roles(Role.EXIT)) and live.roles(Role.EXIT)[-1].status is OrderStatus.FILLED
        )
    )
    assert live.sim_orders() == []
    # reconciliation waits for a quiet venue (2 s without a report): ask until it answers
    deadline = time.monotonic() + 20
    while (event := await live.handler.reconcile()) is None:
        assert time.monotonic() < deadline, "reconciliation never found the venue quiet"
        await asyncio.sleep(0.1)
    await live.bus.drain()
    exchange = dict(event.balances)
    snap = live.portfolio.snapshot()
    assert snap.cash == exchange["USD"] == live.sim.trading.account.balances["USD"]
    assert snap.positions == () and not exchange.get("XRP")
    expected = D(10000) - D(220) - D("0.88") + D("219.0") - D("0.876")
    assert snap.cash == expected


async def test_lost_ack_is_looked_up_by_client_id_not_resent(live: Live) -> None:
    live.sim.drop_after_accept(1)  # placed at the exchange; the answer never arrives
    await live.bus.publish(entry("100", "2.15000"))  # rests below the market
    await live.until(lambda: live.handler.stats["resolved_by_lookup"] == 1, within=10)
    await live.until(lambda: len(live.sim_orders()) == 1)
    await asyncio.sleep(0.3)
    assert len(live.sim.trading.open_orders()) == 1  # exactly one order, never two


async def test_rate_limited_orders_are_retried_once_accepted_never_twice(live: Live) -> None:
    live.sim.reject_next_orders(2, "EOrder:Rate limit exceeded")
    await live.bus.publish(entry("100", "2.15000"))
    await live.until(lambda: len(live.sim_orders()) == 1)
    await asyncio.sleep(0.3)
    assert len(live.sim_orders()) == 1 and live.handler.stats["busy_retries"] == 2


async def test_insufficient_funds_is_a_rejection_with_its_reason(live: Live) -> None:
    await live.bus.publish(entry("100000", "2.15000"))
    await live.until(lambda: bool(live.reports))
    (report,) = live.reports
    assert report.status is OrderStatus.REJECTED and "Insufficient funds" in (report.reason or "")
    assert live.sim_orders() == []


async def test_service_unavailable_gives_up_cleanly_with_nothing_placed(live: Live) -> None:
    live.sim.reject_next_orders(10, "EService:Unavailable")
    await live.bus.publish(entry("100", "2.15000"))
    await live.until(lambda: bool(live.reports), within=10)
    assert live.reports[-1].status is OrderStatus.ERROR
    assert live.sim_orders() == []


async def test_a_stop_during_an_entry_protects_its_fill_and_leaves_protection_armed(
    live: Live,
) -> None:
    """SIGTERM while an entry is on its way (the review's naked 1,825 XRP): the stop waits
    for it, protects the fill at the exchange and disarms the dead man's switch, so the stop
    and target outlive the bot; a resting entry is cancelled rather than left to fill."""
    assert live.sim.trading.deadman_trigger_ns is not None  # armed while trading
    await live.bus.publish(entry("100", "2.20000"))  # marketable: fills at once
    await live.bus.publish(entry("50", "2.15000", sig="sig-rest"))  # rests below the market
    await live.until(lambda: live.handler.stats["submitted"] >= 1)
    await live.handler.wind_down(5.0)
    await live.bus.drain()
    assert protection_at_exchange(live) == [
        ("stop-loss", D(100), D("2.10000")),
        ("take-profit", D(100), D("2.30000")),
    ]
    assert live.working(Role.ENTRY) == []
    assert live.sim.trading.deadman_trigger_ns is None  # the protection stays
    await live.bus.publish(entry("10", "2.20000", sig="sig-late"))  # after the stop began
    await live.bus.drain()
    assert "sig-late" not in {r.signal_id for r in live.reports}


async def test_a_stop_sells_what_it_cannot_protect(live: Live) -> None:
    unbracketed = msgspec.structs.replace(entry("100", "2.20000"), stop_loss=D(0))
    await live.bus.publish(unbracketed)  # filled, with no stop to protect it at
    await live.until(lambda: PAIR in live.handler.pairs and live.handler.pairs[PAIR].held > 0)
    await live.handler.wind_down(5.0)
    await live.until(lambda: live.sim.trading.account.balances.get("XRP", D(0)) == 0)
    exits = live.roles(Role.EXIT)
    assert exits and exits[-1].status is OrderStatus.FILLED


def protection_at_exchange(live: Live) -> list[tuple[str, D, D]]:
    return sorted(
        (o.params.order_type, D(str(o.params.qty)), D(str(o.params.trigger_price)))
        for o in live.sim.trading.open_orders()
    )
