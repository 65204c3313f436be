"""Order-book features from scaled-integer levels, and volume delta from taker trades."""

from __future__ import annotations

import math
from decimal import Decimal

import pytest

from gal_friday.config import FeatureSettings
from gal_friday.events import BookEvent, Side, TradeEvent
from gal_friday.features import book_feature_names, book_features
from gal_friday.features.flow import TradeFlow

NS = 1_000_000_000
T0 = 1_700_000_040 * NS  # a candle's open time


def book(
    bids: list[tuple[int, int]], asks: list[tuple[int, int]], *, snapshot: bool = False
) -> BookEvent:
    """Prices with 4 decimals, quantities with 2 (Kraken-style scaled integers)."""
    return BookEvent("DOGE/USD", tuple(bids), tuple(asks), 4, 2, 0, 1, snapshot, "", 0)


SAMPLE = book(
    bids=[(5000, 100), (4999, 300), (4998, 600)],  # 0.5000 x 1, 0.4999 x 3, ...
    asks=[(5002, 200), (5003, 200), (5005, 1000)],
)


def test_book_features_by_hand() -> None:
    settings = FeatureSettings(book_levels=(2, 3))
    got = dict(zip(book_feature_names(settings), book_features(SAMPLE, (2, 3)), strict=True))
    mid = 0.5001
    expected = {
        "book_spread": 0.0002,
        "book_spread_pct": 100 * 0.0002 / mid,
        "book_imbalance_2": 0.0,  # 4 bid vs 4 ask
        "book_bid_wap_dist_2_pct": 100 * ((0.5 * 1 + 0.4999 * 3) / 4 - mid) / mid,
        "book_ask_wap_dist_2_pct": 100 * ((0.5002 * 2 + 0.5003 * 2) / 4 - mid) / mid,
        "book_bid_depth_2": 4.0,
        "book_ask_depth_2": 4.0,
        "book_bid_depth_quote_2": 1.9997,
        "book_ask_depth_quote_2": 2.001,
        "book_imbalance_3": (10 - 14) / 24,
        "book_bid_depth_3": 10.0,
        "book_ask_depth_3": 14.0,
        "book_bid_depth_quote_3": 4.9985,
        "book_ask_depth_quote_3": 7.006,
    }
    for name, value in expected.items():
        assert got[name] == pytest.approx(value, rel=1e-12, abs=1e-15), name
    assert got["book_bid_wap_dist_3_pct"] < got["book_bid_wap_dist_2_pct"] < 0.0
    assert 0.0 < got["book_ask_wap_dist_2_pct"] < got["book_ask_wap_dist_3_pct"]


def test_levels_beyond_the_book_use_what_is_there() -> None:
    assert book_features(SAMPLE, (3,)) == book_features(SAMPLE, (50,))


def test_no_book_or_a_one_sided_book_gives_nan_features() -> None:
    for missing in (None, book(bids=[(5000, 100)], asks=[])):
        values = book_features(missing, (5, 10))
        assert len(values) == 16 and all(math.isnan(v) for v in values)


def trade(trade_id: int, side: Side, qty: str, seconds: float) -> TradeEvent:
    return TradeEvent(
        "DOGE/USD",
        trade_id,
        side,
        Decimal("0.5"),
        Decimal(qty),
        "market",
        T0 + int(seconds * NS),
        0,
    )


def test_volume_delta_sums_taker_sides_within_the_candle_interval() -> None:
    flow = TradeFlow()
    flow.add(trade(1, Side.BUY, "5", -1))  # before the candle: starts the run, not counted
    flow.add(trade(2, Side.BUY, "30.5", 0))
    flow.add(trade(3, Side.SELL, "10", 30))
    flow.add(trade(4, Side.BUY, "0.25", 59.999))
    flow.add(trade(5, Side.SELL, "100", 60))  # next candle's
    delta, ratio = flow.close(T0, T0 + 60 * NS)
    assert delta == 20.75
    assert ratio == pytest.approx(20.75 / 40.75)
    delta, ratio = flow.close(T0 + 60 * NS, T0 + 120 * NS)
    assert (delta, ratio) == (-100.0, -1.0)


def test_repeated_trades_are_counted_once() -> None:
    flow = TradeFlow()
    for t in [
        trade(1, Side.SELL, "1", -5),
        trade(2, Side.BUY, "4", 10),
        trade(2, Side.BUY, "4", 10),
        trade(1, Side.SELL, "1", -5),
    ]:
        flow.add(t)
    assert flow.close(T0, T0 + 60 * NS) == (4.0, 1.0)
    assert flow.duplicates == 2


def test_flow_is_unknown_until_trades_were_seen_from_before_the_candle() -> None:
    flow = TradeFlow()
    flow.add(trade(1, Side.BUY, "1", 10))  # first trade seen mid-candle: earlier ones unknown
    assert all(math.isnan(v) for v in flow.close(T0, T0 + 60 * NS))
    flow.add(trade(2, Side.BUY, "2", 70))
    assert flow.close(T0 + 60 * NS, T0 + 120 * NS) == (2.0, 1.0)


def test_a_trade_id_gap_or_a_feed_drop_makes_the_candle_unknown() -> None:
    flow = TradeFlow()
    flow.add(trade(1, Side.BUY, "1", -1))
    flow.add(trade(5, Side.BUY, "1", 20))  # ids 2..4 were missed
    assert all(math.isnan(v) for v in flow.close(T0, T0 + 60 * NS))
    flow.add(trade(6, Side.SELL, "3", 61))
    flow.break_run()  # e.g. the connection dropped
    flow.add(trade(7, Side.SELL, "1", 90))
    assert all(math.isnan(v) for v in flow.close(T0 + 60 * NS, T0 + 120 * NS))
    flow.add(trade(8, Side.BUY, "2", 130))
    assert flow.close(T0 + 120 * NS, T0 + 180 * NS) == (2.0, 1.0)


def test_a_trade_arriving_after_its_candle_closed_is_not_counted_later() -> None:
    flow = TradeFlow()
    flow.add(trade(1, Side.BUY, "1", -1))
    delta, ratio = flow.close(T0, T0 + 60 * NS)  # nothing traded in it
    assert delta == 0.0 and math.isnan(ratio)
    flow.add(trade(2, Side.SELL, "7", 59))  # late: belongs to the published candle
    flow.add(trade(3, Side.BUY, "2", 61))
    assert flow.close(T0 + 60 * NS, T0 + 120 * NS) == (2.0, 1.0)
    assert flow.late == 1
