"""PortfolioManager: fills, fees, reserves, marks, drawdown references, loss streak, reconcile."""

from __future__ import annotations

import dataclasses
import logging
from datetime import UTC, datetime
from decimal import Decimal as D

import pytest

from gal_friday.bus import EventBus
from gal_friday.events import (
    BookEvent,
    ExecutionReportEvent,
    OrderStatus,
    OrderType,
    Side,
    TradeSignalApprovedEvent,
)
from gal_friday.portfolio import Discrepancy, OpenOrder, PortfolioManager, utc_day, utc_week

XRP = "XRP/USD"
DOGE = "DOGE/USD"


def ts(iso: str) -> int:
    return int(datetime.fromisoformat(iso).replace(tzinfo=UTC).timestamp()) * 1_000_000_000


T0 = ts("2024-01-03T10:00:00")  # a Wednesday


def report(
    coid: str,
    status: OrderStatus,
    *,
    side: Side = Side.BUY,
    pair: str = XRP,
    order_qty: str = "100",
    filled: str = "0",
    fill_qty: str | None = None,
    fill_price: str | None = None,
    avg: str | None = None,
    fee: str = "0",
    signal_id: str | None = None,
    t: int = T0,
    order_type: OrderType = OrderType.LIMIT,
) -> ExecutionReportEvent:
    return ExecutionReportEvent(
        client_order_id=coid,
        exchange_order_id=None,
        signal_id=signal_id,
        pair=pair,
        side=side,
        order_type=order_type,
        status=status,
        order_qty=D(order_qty),
        filled_qty=D(filled),
        avg_price=D(avg) if avg else (D(fill_price) if fill_price else None),
        last_fill_qty=D(fill_qty) if fill_qty else None,
        last_fill_price=D(fill_price) if fill_price else None,
        fee=D(fee),
        fee_asset="USD",
        reason=None,
        ts_ns=t,
    )


def fill(
    coid: str,
    side: Side,
    qty: str,
    price: str,
    fee: str = "0",
    *,
    pair: str = XRP,
    t: int = T0,
) -> ExecutionReportEvent:
    """A whole order filled in one go."""
    return report(
        coid,
        OrderStatus.FILLED,
        side=side,
        pair=pair,
        order_qty=qty,
        filled=qty,
        fill_qty=qty,
        fill_price=price,
        fee=fee,
        t=t,
    )


def book(pair: str, bid: str, ask: str, t: int = T0) -> BookEvent:
    pp = 5
    scale = 10**pp
    return BookEvent(
        pair=pair,
        bids=((int(D(bid) * scale), 1000),),
        asks=((int(D(ask) * scale), 1000),),
        price_precision=pp,
        qty_precision=0,
        checksum=0,
        sequence=1,
        is_snapshot=True,
        exchange_ts="",
        received_ts_ns=t,
    )


def pm(cash: str = "1000", start: int = T0) -> PortfolioManager:
    return PortfolioManager(D(cash), start_ts_ns=start)


def test_round_trip_pnl_with_both_fees() -> None:
    p = pm()
    p.on_execution_report(fill("b1", Side.BUY, "100", "0.50", fee="0.13"))
    s = p.snapshot()
    assert s.cash == D("949.87")
    pos = s.position(XRP)
    assert pos is not None and pos.qty == D(100) and pos.avg_entry == D("0.50")
    assert s.realised_pnl == 0  # the buy fee is attributed to the position until it closes
    assert s.fees_paid == D("0.13")
    assert s.equity == D("999.87")  # but equity (cash-based) already reflects it

    p.on_execution_report(fill("s1", Side.SELL, "100", "0.55", fee="0.143"))
    s = p.snapshot()
    # (0.55 - 0.50) * 100 - 0.143 - 0.13
    assert s.realised_pnl == D("4.727")
    assert s.cash == D("1004.727")
    assert s.equity == D("1004.727")
    assert s.fees_paid == D("0.273")
    assert s.positions == ()
    assert s.consecutive_losses == 0


def test_partial_sell_realises_entry_fee_pro_rata() -> None:
    p = pm()
    p.on_execution_report(fill("b1", Side.BUY, "100", "0.50", fee="0.20"))
    p.on_execution_report(fill("s1", Side.SELL, "40", "0.60", fee="0.06"))
    s = p.snapshot()
    # 0.10 * 40 - 0.06 - 0.20 * 40/100
    assert s.realised_pnl == D("3.86")
    pos = s.position(XRP)
    assert pos is not None and pos.qty == D(60) and pos.avg_entry == D("0.50")
    p.on_execution_report(fill("s2", Side.SELL, "60", "0.50", fee="0.03"))
    s = p.snapshot()
    assert s.realised_pnl == D("3.86") - D("0.03") - D("0.12")
    assert s.consecutive_losses == 0  # the trip as a whole won


def test_partial_fills_average_correctly() -> None:
    p = pm()
    p.note_order_price("b1", D("0.55"))
    p.on_execution_report(report("b1", OrderStatus.ACKNOWLEDGED, order_qty="300"))
    p.on_execution_report(
        report(
            "b1",
            OrderStatus.PARTIALLY_FILLED,
            order_qty="300",
            filled="100",
            fill_qty="100",
            fill_price="0.50",
        )
    )
    p.on_execution_report(
        report(
            "b1",
            OrderStatus.FILLED,
            order_qty="300",
            filled="300",
            fill_qty="200",
            fill_price="0.53",
            avg="0.52",
        )
    )
    pos = p.snapshot().position(XRP)
    assert pos is not None and pos.qty == D(300) and pos.avg_entry == D("0.52")
    p.on_execution_report(fill("b2", Side.BUY, "100", "0.60"))
    pos = p.snapshot().position(XRP)
    assert pos is not None and pos.qty == D(400) and pos.avg_entry == D("0.54")
    assert p.snapshot().cash == D(1000) - D(216)


def test_duplicate_and_stale_reports_are_ignored() -> None:
    p = pm()
    first = report(
        "b1",
        OrderStatus.PARTIALLY_FILLED,
        order_qty="200",
        filled="100",
        fill_qty="100",
        fill_price="0.50",
        fee="0.1",
    )
    p.on_execution_report(first)
    after_first = p.snapshot()
    p.on_execution_report(first)  # same coid, same cumulative filled: a repeat
    assert p.snapshot() == after_first
    p.on_execution_report(
        report(
            "b1",
            OrderStatus.FILLED,
            order_qty="200",
            filled="200",
            fill_qty="100",
            fill_price="0.60",
            avg="0.55",
            fee="0.1",
        )
    )
    final = p.snapshot()
    p.on_execution_report(first)  # late, out of order
    p.on_execution_report(
        report(
            "b1",
            OrderStatus.FILLED,
            order_qty="200",
            filled="200",
            fill_qty="100",
            fill_price="0.60",
            avg="0.55",
            fee="0.1",
        )
    )
    assert p.snapshot() == final
    assert final.cash == D(1000) - D(110) - D("0.2")
    assert final.fees_paid == D("0.2")
    assert p.duplicates == 3


def test_missed_fill_report_is_booked_from_the_cumulative_average() -> None:
    p = pm()
    p.on_execution_report(
        report(
            "b1",
            OrderStatus.PARTIALLY_FILLED,
            order_qty="300",
            filled="100",
            fill_qty="100",
            fill_price="0.50",
        )
    )
    # the report for the second 100 @ 0.53 was lost; the third (100 @ 0.53) says 300 filled
    p.on_execution_report(
        report(
            "b1",
            OrderStatus.FILLED,
            order_qty="300",
            filled="300",
            fill_qty="100",
            fill_price="0.53",
            avg="0.52",
        )
    )
    pos = p.snapshot().position(XRP)
    assert pos is not None and pos.qty == D(300) and pos.avg_entry == D("0.52")
    assert p.cash == D(1000) - D(156)


def test_open_buy_reserves_cash_and_cancel_releases_it() -> None:
    p = pm()
    p.note_order_price("b1", D("0.50"))
    p.on_execution_report(report("b1", OrderStatus.ACKNOWLEDGED, order_qty="100"))
    s = p.snapshot()
    assert (s.cash, s.free_cash) == (D(1000), D(950))
    p.on_execution_report(
        report(
            "b1",
            OrderStatus.PARTIALLY_FILLED,
            order_qty="100",
            filled="40",
            fill_qty="40",
            fill_price="0.50",
        )
    )
    s = p.snapshot()
    assert (s.cash, s.free_cash) == (D(980), D(950))  # 60 left reserved at 0.50
    p.on_execution_report(report("b1", OrderStatus.CANCELLED, order_qty="100", filled="40"))
    s = p.snapshot()
    assert (s.cash, s.free_cash) == (D(980), D(980))


@pytest.mark.parametrize("end", [OrderStatus.REJECTED, OrderStatus.EXPIRED, OrderStatus.FILLED])
def test_reserve_released_on_terminal_status(end: OrderStatus) -> None:
    p = pm()
    p.on_event(
        TradeSignalApprovedEvent(
            signal_id="sig",
            pair=XRP,
            side=Side.BUY,
            order_type=OrderType.LIMIT,
            qty=D(100),
            limit_price=D("0.40"),
            stop_loss=D("0.38"),
            take_profit=D("0.44"),
            ts_ns=T0,
        )
    )
    p.on_execution_report(report("b1", OrderStatus.SUBMITTED, signal_id="sig"))
    assert p.snapshot().free_cash == D(960)
    if end is OrderStatus.FILLED:
        p.on_execution_report(
            report("b1", end, filled="100", fill_qty="100", fill_price="0.40", signal_id="sig")
        )
        assert p.snapshot().free_cash == D(960) == p.snapshot().cash
    else:
        p.on_execution_report(report("b1", end, signal_id="sig"))
        assert p.snapshot().free_cash == D(1000)


def test_sell_orders_and_market_buys_reserve_sensibly() -> None:
    p = pm()
    p.on_book(book(XRP, "0.49", "0.51"))
    p.on_execution_report(report("m1", OrderStatus.ACKNOWLEDGED, order_type=OrderType.MARKET))
    assert p.snapshot().free_cash == D(1000) - D(51)  # unknown price: best ask
    p.on_execution_report(report("m1", OrderStatus.CANCELLED, order_type=OrderType.MARKET))
    p.on_execution_report(report("s1", OrderStatus.ACKNOWLEDGED, side=Side.SELL))
    assert p.snapshot().free_cash == D(1000)  # sells reserve no cash


def test_equity_peak_and_drawdowns_follow_marks() -> None:
    p = pm()
    p.on_execution_report(fill("b1", Side.BUY, "1000", "0.50"))
    p.on_book(book(XRP, "0.59", "0.61", T0 + 1))
    s = p.snapshot()
    assert s.equity == D(1100) and s.peak_equity == D(1100)
    pos = s.position(XRP)
    assert pos is not None and pos.mark == D("0.60") and pos.unrealised_pnl == D(100)
    assert p.unrealised_pnl() == D(100)
    p.on_book(book(XRP, "0.44", "0.46", T0 + 2))
    s = p.snapshot()
    assert s.equity == D(950) and s.peak_equity == D(1100)
    assert s.total_drawdown == D(150) / D(1100)
    assert s.daily_drawdown == D(50) / D(1000)
    assert s.weekly_drawdown == D(50) / D(1000)
    assert s.exposure == D(450)


def test_day_and_week_start_roll_over_on_event_time() -> None:
    p = pm()
    p.on_execution_report(fill("b1", Side.BUY, "1000", "0.50"))
    p.on_book(book(XRP, "0.54", "0.56", ts("2024-01-03T23:59:59")))  # equity 1050
    assert p.snapshot().day_start_equity == D(1000)
    # first event of Thursday: day start = equity at the boundary, before this event
    p.on_book(book(XRP, "0.59", "0.61", ts("2024-01-04T00:00:01")))
    s = p.snapshot()
    assert (s.day_start_equity, s.week_start_equity, s.equity) == (D(1050), D(1000), D(1100))
    p.on_book(book(XRP, "0.39", "0.41", ts("2024-01-07T23:59:00")))  # Sunday, equity 900
    s = p.snapshot()
    assert s.day_start_equity == D(1100) and s.week_start_equity == D(1000)
    assert s.daily_drawdown == D(200) / D(1100)
    p.on_book(book(XRP, "0.49", "0.51", ts("2024-01-08T00:00:00")))  # Monday 00:00 UTC
    s = p.snapshot()
    assert (s.day_start_equity, s.week_start_equity) == (D(900), D(900))
    assert s.ts_ns == ts("2024-01-08T00:00:00")
    # an older timestamp never moves the clock back nor re-rolls
    p.on_book(book(XRP, "0.49", "0.51", ts("2024-01-07T12:00:00")))
    assert p.snapshot().week_start_equity == D(900)


def test_week_boundaries() -> None:
    assert utc_week(ts("2024-01-07T23:59:59")) + 1 == utc_week(ts("2024-01-08T00:00:00"))
    assert utc_week(ts("2024-01-08T00:00:00")) == utc_week(ts("2024-01-14T23:59:59"))
    assert utc_day(ts("2024-01-08T00:00:00")) - utc_day(ts("2024-01-07T23:59:59")) == 1


def test_consecutive_losses_increment_and_reset() -> None:
    p = pm()

    def trip(n: int, buy: str, sell: str, fee: str) -> int:
        p.on_execution_report(fill(f"b{n}", Side.BUY, "100", buy, fee))
        p.on_execution_report(fill(f"s{n}", Side.SELL, "100", sell, fee))
        return p.snapshot().consecutive_losses

    assert trip(1, "0.50", "0.48", "0") == 1
    assert trip(2, "0.50", "0.50", "0.01") == 2  # flat price, fees make it a loss
    # gross winner of 0.01 but 0.02 of fees on the two legs: still a loss
    assert trip(3, "0.50", "0.5001", "0.01") == 3
    assert trip(4, "0.50", "0.52", "0.01") == 0
    assert trip(5, "0.50", "0.40", "0") == 1


def test_partial_close_does_not_count_a_trade() -> None:
    p = pm()
    p.on_execution_report(fill("b1", Side.BUY, "100", "0.50"))
    p.on_execution_report(fill("s1", Side.SELL, "50", "0.40"))
    assert p.snapshot().consecutive_losses == 0
    p.on_execution_report(fill("s2", Side.SELL, "50", "0.70"))  # trip: -5 + 10 = +5
    assert p.snapshot().consecutive_losses == 0
    assert p.snapshot().realised_pnl == D(5)


def test_reconcile_logs_and_corrects_differences(caplog: pytest.LogCaptureFixture) -> None:
    p = pm()
    p.on_execution_report(fill("b1", Side.BUY, "100", "0.50", fee="0.13"))
    p.on_book(book(DOGE, "0.09", "0.11"))
    p.note_order_price("b2", D("0.45"))
    p.on_execution_report(report("b2", OrderStatus.ACKNOWLEDGED, order_qty="10"))
    with caplog.at_level(logging.WARNING, logger="gal_friday.portfolio"):
        diffs = p.reconcile(
            {"USD": D("949.00"), "XRP": D("99.9"), "DOGE": D("10"), "ETH": D(1)},
            [OpenOrder("x9", XRP, Side.BUY, D(20), D("0.40"))],
        )
    assert set(diffs) == {
        Discrepancy("balance", "USD", D("949.87"), D("949.00")),
        Discrepancy("balance", "XRP", D(100), D("99.9")),
        Discrepancy("balance", "DOGE", D(0), D(10)),
        Discrepancy("missing_open_order", "b2", D(10), D(0)),
        Discrepancy("unknown_open_order", "x9", D(0), D(20)),
    }
    logged = [r for r in caplog.records if r.getMessage() == "reconciliation difference corrected"]
    assert {getattr(r, "key", None) for r in logged} == {"USD", "XRP", "DOGE", "b2", "x9"}
    s = p.snapshot()
    assert s.cash == D("949.00")
    assert s.free_cash == D("949.00") - D(8)  # only the adopted x9 reserves now
    xrp, doge = s.position(XRP), s.position(DOGE)
    assert xrp is not None and xrp.qty == D("99.9") and xrp.avg_entry == D("0.50")
    assert doge is not None and doge.qty == D(10) and doge.avg_entry == D("0.10")
    # once corrected, the same balances reconcile clean
    again = p.reconcile(
        {"USD": D("949.00"), "XRP": D("99.9"), "DOGE": D("10")},
        [OpenOrder("x9", XRP, Side.BUY, D(20), D("0.40"))],
    )
    assert again == []
    # a position the exchange no longer holds is dropped
    assert p.reconcile({"USD": D("949.00"), "XRP": D(0), "DOGE": D("10")})[0].key == "XRP"
    assert p.snapshot().position(XRP) is None


def test_snapshot_is_cached_and_immutable() -> None:
    p = pm()
    p.on_execution_report(fill("b1", Side.BUY, "100", "0.50"))
    s1 = p.snapshot()
    assert p.snapshot() is s1
    with pytest.raises(dataclasses.FrozenInstanceError):
        s1.cash = D(0)  # type: ignore[misc]
    p.on_book(book(XRP, "0.59", "0.61", T0 + 5))
    s2 = p.snapshot()
    assert s2 is not s1 and s1.equity == D(1000) and s2.equity == D(1010)


async def test_attach_books_events_from_the_bus() -> None:
    bus = EventBus()
    p = pm()
    sub = p.attach(bus)
    assert sub.policy.value == "block"
    bus.start()
    await bus.publish(fill("b1", Side.BUY, "100", "0.50", fee="0.13"))
    await bus.publish(book(XRP, "0.59", "0.61", T0 + 1))
    await bus.drain()
    await bus.stop()
    s = p.snapshot()
    assert s.cash == D("949.87") and s.equity == D("1009.87")


def test_a_holding_found_at_a_restart_keeps_its_recorded_entry_price() -> None:
    pm = PortfolioManager(D("1000"), pairs=["XRP/USD"])
    pm.set_mark("XRP/USD", D("2.5"), 1)
    pm.reconcile(
        {"USD": D("1000"), "XRP": D("100")}, [], ts_ns=2, entry_prices={"XRP/USD": D("2.0")}
    )
    (position,) = pm.snapshot().positions
    assert position.avg_entry == D("2.0") and position.unrealised_pnl == D("50.0")
    fresh = PortfolioManager(D("1000"), pairs=["XRP/USD"])
    fresh.set_mark("XRP/USD", D("2.5"), 1)
    fresh.reconcile({"USD": D("1000"), "XRP": D("100")}, [], ts_ns=2)  # nothing recorded
    assert fresh.snapshot().positions[0].avg_entry == D("2.5")
