"""Paper venue: approved signals become orders that fill only as the market allows, with
reports for every state change and a timeout on resting entries."""

from __future__ import annotations

from decimal import Decimal

from gal_friday.bus import EventBus
from gal_friday.config import FeeSettings, PaperSettings
from gal_friday.events import (
    BookEvent,
    ExecutionReportEvent,
    OrderStatus,
    OrderType,
    Side,
    TradeSignalApprovedEvent,
)
from gal_friday.execution.paper import PaperExecution
from gal_friday.sim.matching import to_report

PAIR = "XRP/USD"
S = 1_000_000_000


def book(bid: str, ask: str, t: int) -> BookEvent:
    p = lambda x: int(Decimal(x).scaleb(5))  # noqa: E731
    return BookEvent(PAIR, ((p(bid), 10**11),), ((p(ask), 10**11),), 5, 8, 0, 1, False, "", t)


def approved(side: Side, kind: OrderType, qty: str, limit: str | None,
             is_exit: bool = False) -> TradeSignalApprovedEvent:
    return TradeSignalApprovedEvent(
        signal_id="sig-XRPUSD-1-1", pair=PAIR, side=side, order_type=kind, qty=Decimal(qty),
        limit_price=Decimal(limit) if limit else None, stop_loss=Decimal("1.9"),
        take_profit=Decimal("2.2"), ts_ns=0, is_exit=is_exit)


def paper(**overrides: object) -> PaperExecution:
    settings = PaperSettings(**{"latency_ms": 0, "slippage_bps": 0, **overrides})  # type: ignore[arg-type]
    return PaperExecution(settings, FeeSettings(), EventBus())


def reports(updates: list) -> list[ExecutionReportEvent]:  # type: ignore[type-arg]
    return [to_report(u) for u in updates]


def test_limit_entry_at_the_bid_rests_then_fills_when_the_ask_comes_down() -> None:
    ex = paper()
    ex.handle(book("2.00000", "2.00010", 1 * S))
    first = reports(ex.handle(approved(Side.BUY, OrderType.LIMIT, "100", "2.00000")))
    assert [r.status for r in first] == [OrderStatus.ACKNOWLEDGED]
    assert ex.handle(book("2.00005", "2.00010", 2 * S)) == []  # market above the limit
    filled = reports(ex.handle(book("1.99990", "1.99995", 3 * S)))
    assert filled[-1].status is OrderStatus.FILLED
    assert filled[-1].last_fill_price == Decimal("2.00000")  # never better than the limit
    assert filled[-1].fee == Decimal("100") * Decimal("2.00000") * Decimal("0.0025")  # maker
    assert filled[-1].signal_id == "sig-XRPUSD-1-1"
    assert len(filled[-1].client_order_id) <= 18


def test_an_entry_not_filled_in_time_is_cancelled() -> None:
    ex = paper(entry_timeout_s=15)
    ex.handle(book("2.00000", "2.00010", 0))
    ex.handle(approved(Side.BUY, OrderType.LIMIT, "100", "1.99000"))
    assert ex.handle(book("2.00000", "2.00010", 14 * S)) == []
    cancelled = reports(ex.handle(book("2.00000", "2.00010", 16 * S)))
    assert [r.status for r in cancelled] == [OrderStatus.CANCELLED]


def test_market_exit_fills_at_once_as_taker() -> None:
    ex = paper()
    ex.handle(book("2.00000", "2.00010", 0))
    done = reports(ex.handle(approved(Side.SELL, OrderType.MARKET, "50", None, is_exit=True)))
    assert done[-1].status is OrderStatus.FILLED
    assert done[-1].last_fill_price == Decimal("2.00000")
    assert done[-1].fee == Decimal("50") * Decimal("2.00000") * Decimal("0.0040")  # taker
