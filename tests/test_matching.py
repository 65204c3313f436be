"""MatchingEngine: fees, slippage, depth walking, maker touch/cross rules, latency, cancels."""

from __future__ import annotations

from decimal import Decimal as D

import pytest

from gal_friday.events import (
    BookEvent,
    ExecutionReportEvent,
    OrderStatus,
    OrderType,
    Side,
    TradeEvent,
)
from gal_friday.execution.matching import MatchingEngine, OrderRequest, OrderUpdate, to_report
from gal_friday.execution.venue import OrderRejected

PAIR = "XRP/USD"


def book(
    bids: list[tuple[str, str]], asks: list[tuple[str, str]], ts: int, pair: str = PAIR
) -> BookEvent:
    """Levels as decimal strings; scaled with price precision 2 and qty precision 1."""

    def scale(levels: list[tuple[str, str]]) -> tuple[tuple[int, int], ...]:
        return tuple((int(D(p) * 100), int(D(q) * 10)) for p, q in levels)

    return BookEvent(pair, scale(bids), scale(asks), 2, 1, 0, 1, False, "", ts)


_trade_id = 0


def trade(price: str, qty: str, ts: int, side: Side = Side.SELL) -> TradeEvent:
    global _trade_id
    _trade_id += 1
    return TradeEvent(PAIR, _trade_id, side, D(price), D(qty), "limit", ts, ts)


def market(coid: str, side: Side, qty: str) -> OrderRequest:
    return OrderRequest(coid, PAIR, side, OrderType.MARKET, D(qty))


def limit(coid: str, side: Side, qty: str, price: str) -> OrderRequest:
    return OrderRequest(coid, PAIR, side, OrderType.LIMIT, D(qty), D(price))


def engine(**kw: object) -> MatchingEngine:
    return MatchingEngine(D("0.25"), D("0.40"), **kw)  # type: ignore[arg-type]


def fills(updates: list[OrderUpdate]) -> list[tuple[D | None, D | None]]:
    return [(u.last_fill_qty, u.last_fill_price) for u in updates if u.is_fill]


def statuses(updates: list[OrderUpdate]) -> list[OrderStatus]:
    return [u.status for u in updates]


# --- fees and slippage ------------------------------------------------------------------


def test_taker_fee_on_market_order() -> None:
    eng = engine()
    eng.on_book(book([("99.00", "5")], [("100.00", "5")], ts=0))
    out = eng.submit(market("m1", Side.BUY, "2"), ts_ns=10)
    assert statuses(out) == [OrderStatus.ACKNOWLEDGED, OrderStatus.FILLED]
    f = out[-1]
    assert (f.last_fill_qty, f.last_fill_price) == (D(2), D(100))
    assert f.fee == D("0.80")  # 200 * 0.40 / 100
    assert f.liquidity == "taker"
    assert f.avg_price == D(100)


def test_maker_fee_on_resting_limit() -> None:
    eng = engine()
    eng.on_book(book([("98.00", "5")], [("100.00", "5")], ts=0))
    out = eng.submit(limit("l1", Side.BUY, "2", "99.00"), ts_ns=10)
    assert statuses(out) == [OrderStatus.ACKNOWLEDGED]
    out = eng.on_trade(trade("98.50", "3", ts=20))
    assert fills(out) == [(D(2), D(99))]
    assert out[0].status is OrderStatus.FILLED
    assert out[0].fee == D("0.495")  # 198 * 0.25 / 100
    assert out[0].liquidity == "maker"


def test_slippage_worsens_taker_price_both_sides() -> None:
    eng = engine(slippage_bps=D(10))
    eng.on_book(book([("99.00", "5")], [("100.00", "5")], ts=0))
    buy = eng.submit(market("b", Side.BUY, "1"), ts_ns=1)
    assert fills(buy) == [(D(1), D("100.1"))]  # 100 * (1 + 10/10000)
    assert buy[-1].fee == D("0.4004")  # 100.1 * 0.40 / 100
    sell = eng.submit(market("s", Side.SELL, "1"), ts_ns=2)
    assert fills(sell) == [(D(1), D("98.901"))]  # 99 * (1 - 10/10000)
    assert sell[-1].fee == D("0.395604")


def test_slippage_never_beyond_limit_of_marketable_limit() -> None:
    eng = engine(slippage_bps=D(50))
    eng.on_book(book([("99.00", "5")], [("100.00", "1"), ("101.00", "1"), ("102.00", "5")], 0))
    out = eng.submit(limit("l", Side.BUY, "3", "101.00"), ts_ns=1)
    # 100 * 1.005 = 100.5 ; 101 * 1.005 capped at the 101 limit ; remainder rests at 101
    assert fills(out) == [(D(1), D("100.5")), (D(1), D(101))]
    assert out[-1].status is OrderStatus.PARTIALLY_FILLED
    assert out[-1].fee == D("0.404")  # taker fee on the 101 fill
    assert eng.open_orders() == [limit("l", Side.BUY, "3", "101.00")]
    rest = eng.on_trade(trade("100.90", "1", ts=2))
    assert fills(rest) == [(D(1), D(101))]
    assert rest[0].liquidity == "maker"
    assert rest[0].status is OrderStatus.FILLED


# --- depth ---------------------------------------------------------------------------------


def test_market_order_walks_depth_with_partial_fills() -> None:
    eng = engine()
    eng.on_book(book([("99.00", "5")], [("100.00", "1"), ("101.00", "2"), ("102.00", "5")], 0))
    out = eng.submit(market("m", Side.BUY, "4"), ts_ns=1)
    assert fills(out) == [(D(1), D(100)), (D(2), D(101)), (D(1), D(102))]
    assert statuses(out) == [
        OrderStatus.ACKNOWLEDGED,
        OrderStatus.PARTIALLY_FILLED,
        OrderStatus.PARTIALLY_FILLED,
        OrderStatus.FILLED,
    ]
    assert [u.filled_qty for u in out[1:]] == [D(1), D(3), D(4)]
    assert out[-1].avg_price == D(101)  # (100 + 202 + 102) / 4
    assert out[-1].cum_fee == D("1.616")  # 404 * 0.40 / 100
    # the taken liquidity is gone until the next book: only 4 left at 102
    second = eng.submit(market("m2", Side.BUY, "6"), ts_ns=2)
    assert fills(second) == [(D(4), D(102))]
    assert second[-1].status is OrderStatus.CANCELLED
    assert second[-1].reason == "insufficient_depth"
    assert second[-1].filled_qty == D(4)


def test_market_order_without_liquidity_is_rejected() -> None:
    eng = engine()
    out = eng.submit(market("m", Side.SELL, "1"), ts_ns=1)
    assert statuses(out) == [OrderStatus.ACKNOWLEDGED, OrderStatus.REJECTED]
    assert out[-1].reason == "no_liquidity"


# --- resting limit orders ---------------------------------------------------------------


def test_resting_buy_limit_stays_unfilled_above() -> None:
    eng = engine()
    eng.on_book(book([("98.00", "5")], [("100.00", "5")], ts=0))
    eng.submit(limit("l", Side.BUY, "1", "99.00"), ts_ns=1)
    assert eng.on_trade(trade("99.50", "10", ts=2)) == []
    assert eng.on_trade(trade("99.01", "10", ts=3)) == []
    assert eng.on_book(book([("98.00", "5")], [("99.01", "5")], ts=4)) == []
    assert eng.status("l") is OrderStatus.ACKNOWLEDGED


def test_resting_buy_limit_touch_partial_then_cross_full() -> None:
    eng = engine()
    eng.on_book(book([("98.00", "5")], [("100.00", "5")], ts=0))
    eng.submit(limit("l", Side.BUY, "1", "99.00"), ts_ns=1)
    touch = eng.on_trade(trade("99.00", "0.3", ts=2))
    assert fills(touch) == [(D("0.3"), D(99))]
    assert touch[0].status is OrderStatus.PARTIALLY_FILLED
    cross = eng.on_trade(trade("98.50", "0.1", ts=3))  # through: fills fully at the limit
    assert fills(cross) == [(D("0.7"), D(99))]
    assert cross[0].status is OrderStatus.FILLED
    assert cross[0].filled_qty == D(1)
    assert cross[0].avg_price == D(99)
    assert eng.on_trade(trade("98.00", "5", ts=4)) == []  # finished orders stay finished


def test_touch_quantity_shared_first_come_first_served() -> None:
    eng = engine()
    eng.submit(limit("a", Side.BUY, "1", "99.00"), ts_ns=1)
    eng.submit(limit("b", Side.BUY, "1", "99.00"), ts_ns=2)
    out = eng.on_trade(trade("99.00", "1.5", ts=3))
    assert [(u.client_order_id, u.last_fill_qty) for u in out] == [("a", D(1)), ("b", D("0.5"))]


def test_resting_limit_filled_by_book_touch_and_cross() -> None:
    eng = engine()
    eng.on_book(book([("98.00", "5")], [("100.00", "5")], ts=0))
    eng.submit(limit("l", Side.BUY, "1", "99.00"), ts_ns=1)
    touch = eng.on_book(book([("98.00", "5")], [("99.00", "0.4")], ts=2))
    assert fills(touch) == [(D("0.4"), D(99))]
    cross = eng.on_book(book([("98.00", "5")], [("97.00", "0.1")], ts=3))
    assert fills(cross) == [(D("0.6"), D(99))]  # never better than the limit
    assert cross[0].status is OrderStatus.FILLED


def test_resting_sell_limit_touch_and_cross() -> None:
    eng = engine()
    eng.on_book(book([("99.00", "5")], [("102.00", "5")], ts=0))
    eng.submit(limit("s", Side.SELL, "2", "101.00"), ts_ns=1)
    assert eng.on_trade(trade("100.99", "5", ts=2, side=Side.BUY)) == []
    touch = eng.on_trade(trade("101.00", "0.5", ts=3, side=Side.BUY))
    assert fills(touch) == [(D("0.5"), D(101))]
    cross = eng.on_book(book([("101.50", "0.1")], [("102.00", "5")], ts=4))
    assert fills(cross) == [(D("1.5"), D(101))]
    assert cross[0].status is OrderStatus.FILLED


# --- latency -------------------------------------------------------------------------------


def test_latency_order_sees_the_moved_market() -> None:
    eng = engine(latency_ns=1_000)
    eng.on_book(book([("99.00", "5")], [("100.00", "5")], ts=0))
    assert eng.submit(market("m", Side.BUY, "1"), ts_ns=500) == []  # in flight until 1500
    assert eng.on_book(book([("104.00", "5")], [("105.00", "5")], ts=1_200)) == []
    out = eng.advance(1_500)
    assert fills(out) == [(D(1), D(105))]
    assert all(u.ts_ns == 1_500 for u in out)


def test_latency_event_at_due_time_is_seen_and_earlier_orders_act_first() -> None:
    eng = engine(latency_ns=1_000)
    eng.on_book(book([("99.00", "5")], [("100.00", "5")], ts=0))
    eng.submit(market("early", Side.BUY, "1"), ts_ns=0)  # due 1000: before the book at 1500
    eng.submit(market("late", Side.BUY, "1"), ts_ns=500)  # due 1500: sees the book at 1500
    out = eng.on_book(book([("104.00", "5")], [("105.00", "5")], ts=1_500))
    assert [(u.client_order_id, u.last_fill_price) for u in out if u.is_fill] == [
        ("early", D(100)),
        ("late", D(105)),
    ]


def test_latency_limit_not_filled_by_trades_before_it_arrives() -> None:
    eng = engine(latency_ns=1_000)
    eng.submit(limit("l", Side.BUY, "1", "99.00"), ts_ns=0)
    assert eng.on_trade(trade("98.00", "5", ts=999)) == []
    assert statuses(eng.on_trade(trade("98.00", "5", ts=1_001))) == [
        OrderStatus.ACKNOWLEDGED,
        OrderStatus.FILLED,
    ]


# --- cancel and duplicates ----------------------------------------------------------------


def test_cancel_before_fill() -> None:
    eng = engine()
    eng.on_book(book([("98.00", "5")], [("100.00", "5")], ts=0))
    eng.submit(limit("l", Side.BUY, "1", "99.00"), ts_ns=1)
    out = eng.cancel("l", ts_ns=2)
    assert statuses(out) == [OrderStatus.CANCELLED]
    assert out[0].filled_qty == 0
    assert eng.on_trade(trade("97.00", "5", ts=3)) == []
    assert eng.cancel("l", ts_ns=4) == []  # already finished
    assert eng.cancel("nope", ts_ns=4) == []  # unknown
    assert eng.open_orders() == []


def test_cancel_with_latency_races_a_fill() -> None:
    eng = engine(latency_ns=100)
    eng.submit(limit("l", Side.BUY, "1", "99.00"), ts_ns=0)
    eng.advance(100)
    assert eng.cancel("l", ts_ns=200) == []  # takes effect at 300
    assert fills(eng.on_trade(trade("99.00", "0.4", ts=250))) == [(D("0.4"), D(99))]
    out = eng.advance(300)
    assert statuses(out) == [OrderStatus.CANCELLED]
    assert out[0].filled_qty == D("0.4")


def test_duplicate_client_order_id_rejected() -> None:
    eng = engine()
    eng.submit(limit("dup", Side.BUY, "1", "99.00"), ts_ns=1)
    out = eng.submit(limit("dup", Side.SELL, "5", "120.00"), ts_ns=2)
    assert statuses(out) == [OrderStatus.REJECTED]
    assert out[0].reason == "duplicate client_order_id"
    assert out[0].exchange_order_id is None
    assert eng.open_orders() == [limit("dup", Side.BUY, "1", "99.00")]  # original untouched
    assert fills(eng.on_trade(trade("98.00", "1", ts=3))) == [(D(1), D(99))]
    again = eng.submit(market("dup", Side.BUY, "1"), ts_ns=4)  # finished ids stay taken
    assert statuses(again) == [OrderStatus.REJECTED]


def test_invalid_orders_rejected() -> None:
    eng = engine()
    assert eng.submit(market("z", Side.BUY, "0"), ts_ns=1)[0].status is OrderStatus.REJECTED
    no_px = OrderRequest("n", PAIR, Side.BUY, OrderType.LIMIT, D(1), None)
    assert eng.submit(no_px, ts_ns=1)[0].reason == "limit order needs a limit_price > 0"


# --- determinism and reports --------------------------------------------------------------


def _script(seed: int) -> list[OrderUpdate]:
    eng = engine(latency_ns=50, slippage_bps=D(3), rng_seed=seed)
    out = eng.on_book(book([("99.00", "5")], [("100.00", "1"), ("101.00", "3")], ts=0))
    out += eng.submit(market("m", Side.BUY, "2"), ts_ns=10)
    out += eng.submit(limit("l", Side.BUY, "1", "98.00"), ts_ns=20)
    out += eng.on_trade(trade("98.00", "0.5", ts=100))
    out += eng.on_book(book([("96.00", "5")], [("97.00", "5")], ts=200))
    return out


def test_deterministic_for_a_seed() -> None:
    a, b = _script(7), _script(7)
    assert a == b
    assert len(a) == 6  # m: ack + 2 fills; l: ack, touch, cross
    c = _script(8)
    assert [u.exchange_order_id for u in a] != [u.exchange_order_id for u in c]
    strip = [(u.status, u.last_fill_qty, u.last_fill_price, u.fee) for u in a]
    assert strip == [(u.status, u.last_fill_qty, u.last_fill_price, u.fee) for u in c]


def test_to_report() -> None:
    eng = engine()
    eng.on_book(book([("99.00", "5")], [("100.00", "5")], ts=0))
    order = OrderRequest("r", PAIR, Side.BUY, OrderType.MARKET, D(2), signal_id="sig-1")
    upd = eng.submit(order, ts_ns=10)[-1]
    rep = to_report(upd)
    assert isinstance(rep, ExecutionReportEvent)
    assert rep.client_order_id == "r"
    assert rep.signal_id == "sig-1"
    assert rep.exchange_order_id == upd.exchange_order_id
    assert rep.status is OrderStatus.FILLED
    assert (rep.filled_qty, rep.avg_price, rep.last_fill_qty) == (D(2), D(100), D(2))
    assert (rep.fee, rep.fee_asset, rep.ts_ns) == (D("0.80"), "USD", 10)


# --- triggered orders (stop-loss, take-profit) -------------------------------------------


def triggered(coid: str, kind: OrderType, side: Side, qty: str, trigger: str) -> OrderRequest:
    return OrderRequest(coid, PAIR, side, kind, D(qty), trigger_price=D(trigger))


def test_sell_stop_rests_unseen_until_the_bid_falls_to_its_trigger() -> None:
    eng = engine()
    eng.on_book(book([("99.00", "5")], [("100.00", "5")], ts=0))
    out = eng.submit(triggered("sl", OrderType.STOP_LOSS, Side.SELL, "2", "98.00"), ts_ns=1)
    assert statuses(out) == [OrderStatus.ACKNOWLEDGED]
    assert fills(eng.on_book(book([("98.01", "5")], [("100.00", "5")], ts=2))) == []
    out = eng.on_book(book([("98.00", "1"), ("97.90", "5")], [("99.00", "5")], ts=3))
    assert fills(out) == [(D(1), D("98.00")), (D(1), D("97.90"))]  # market: walks the bids
    assert out[-1].status is OrderStatus.FILLED and out[-1].liquidity == "taker"
    assert out[-1].fee == D("97.90") * D("0.40") / 100


def test_a_public_trade_at_the_trigger_fires_a_stop() -> None:
    eng = engine()
    eng.on_book(book([("99.00", "5")], [("100.00", "5")], ts=0))
    eng.submit(triggered("sl", OrderType.STOP_LOSS, Side.SELL, "1", "98.50"), ts_ns=1)
    out = eng.on_trade(trade("98.50", "1", ts=2))
    assert fills(out) == [(D(1), D("99.00"))]


def test_sell_take_profit_triggers_at_or_above_and_stays_armed_below() -> None:
    eng = engine()
    eng.on_book(book([("99.00", "5")], [("100.00", "5")], ts=0))
    eng.submit(triggered("tp", OrderType.TAKE_PROFIT, Side.SELL, "1", "101.00"), ts_ns=1)
    assert fills(eng.on_trade(trade("100.99", "1", ts=2))) == []
    out = eng.on_book(book([("101.00", "5")], [("101.50", "5")], ts=3))
    assert fills(out) == [(D(1), D("101.00"))]


def test_buy_side_triggers_mirror_the_sell_side() -> None:
    eng = engine()
    eng.on_book(book([("99.00", "5")], [("100.00", "5")], ts=0))
    eng.submit(triggered("bs", OrderType.STOP_LOSS, Side.BUY, "1", "101.00"), ts_ns=1)
    eng.submit(triggered("bt", OrderType.TAKE_PROFIT, Side.BUY, "1", "98.00"), ts_ns=1)
    out = eng.on_book(book([("100.50", "5")], [("101.00", "5")], ts=2))
    assert [u.client_order_id for u in out if u.is_fill] == ["bs"]
    out = eng.on_book(book([("97.00", "5")], [("98.00", "5")], ts=3))
    assert [u.client_order_id for u in out if u.is_fill] == ["bt"]


def test_cancelled_stop_never_fires() -> None:
    eng = engine()
    eng.on_book(book([("99.00", "5")], [("100.00", "5")], ts=0))
    eng.submit(triggered("sl", OrderType.STOP_LOSS, Side.SELL, "1", "98.00"), ts_ns=1)
    assert statuses(eng.cancel("sl", ts_ns=2)) == [OrderStatus.CANCELLED]
    assert eng.on_book(book([("90.00", "5")], [("91.00", "5")], ts=3)) == []


def test_on_trigger_can_refuse_a_triggering_order() -> None:
    eng = engine(on_trigger=lambda order: "insufficient funds")
    eng.on_book(book([("99.00", "5")], [("100.00", "5")], ts=0))
    eng.submit(triggered("sl", OrderType.STOP_LOSS, Side.SELL, "1", "98.00"), ts_ns=1)
    out = eng.on_book(book([("97.00", "5")], [("98.00", "5")], ts=2))
    assert [(u.status, u.reason) for u in out] == [(OrderStatus.CANCELLED, "insufficient funds")]


def test_triggered_order_without_trigger_price_is_rejected() -> None:
    eng = engine()
    out = eng.submit(OrderRequest("x", PAIR, Side.SELL, OrderType.STOP_LOSS, D(1)), ts_ns=1)
    assert statuses(out) == [OrderStatus.REJECTED]


def test_nothing_fills_against_a_book_the_feed_invalidated() -> None:
    # a checksum failure: the last book may be far from the market; a market order finds no
    # liquidity, a stop that a trade reaches waits, and fills at the next valid book
    eng = engine()
    eng.on_book(book([("99.00", "5")], [("100.00", "5")], ts=0))
    eng.submit(triggered("sl", OrderType.STOP_LOSS, Side.SELL, "1", "98.50"), ts_ns=1)
    eng.invalidate_book(PAIR)
    out = eng.submit(market("m1", Side.BUY, "1"), ts_ns=2)
    assert statuses(out) == [OrderStatus.ACKNOWLEDGED, OrderStatus.REJECTED]
    assert out[-1].reason == "no_liquidity"
    assert fills(eng.on_trade(trade("98.00", "1", ts=3))) == []  # triggered, not executed
    out = eng.on_book(book([("97.50", "5")], [("97.60", "5")], ts=4))
    assert fills(out) == [(D(1), D("97.50"))]  # at the fresh book, not the stale 99.00


def test_a_stop_a_trade_reached_while_the_book_was_invalid_fires_at_the_next_book() -> None:
    # the market printed through the stop during the gap and came back above it: the stop
    # was triggered all the same and sells at the first valid book
    eng = engine()
    eng.on_book(book([("99.00", "5")], [("100.00", "5")], ts=0))
    eng.submit(triggered("sl", OrderType.STOP_LOSS, Side.SELL, "1", "98.50"), ts_ns=1)
    eng.submit(triggered("tp", OrderType.TAKE_PROFIT, Side.SELL, "1", "120.00"), ts_ns=1)
    eng.invalidate_book(PAIR)
    assert fills(eng.on_trade(trade("98.00", "1", ts=3))) == []
    out = eng.on_book(book([("99.20", "5")], [("99.30", "5")], ts=4))
    assert [(u.client_order_id, u.last_fill_price) for u in out if u.is_fill] == [
        ("sl", D("99.20"))
    ]  # the take-profit, not triggered, still waits
    eng.cancel("tp", ts_ns=5)


async def test_the_paper_venue_hears_that_a_book_was_invalidated() -> None:
    from gal_friday.config import Settings
    from gal_friday.events import BookInvalidatedEvent
    from gal_friday.execution.paper import PaperVenue

    s = Settings.model_validate({"paper": {"latency_ms": 0}})
    venue = PaperVenue(s.paper, s.fees, clock_ns=lambda: 10)
    reports: list[ExecutionReportEvent] = []

    async def on_report(r: ExecutionReportEvent) -> None:
        reports.append(r)

    await venue.start(on_report)
    await venue.on_market(book([("99.00", "5")], [("100.00", "5")], ts=0))
    await venue.submit(market("m1", Side.BUY, "1"))
    assert [r.status for r in reports] == [OrderStatus.ACKNOWLEDGED, OrderStatus.FILLED]
    await venue.on_market(BookInvalidatedEvent(PAIR, "checksum mismatch", 5))
    with pytest.raises(OrderRejected, match="no market price"):
        await venue.submit(market("m2", Side.BUY, "1"))
    await venue.submit(market("m3", Side.SELL, "1"))  # the XRP bought: no book to sell into
    assert [r.status for r in reports[2:]] == [OrderStatus.ACKNOWLEDGED, OrderStatus.REJECTED]
