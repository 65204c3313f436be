"""Backtests that do not flatter: the ambiguous candle, the spread and the queue.

A candle that touches both a held position's stop and its target takes the stop unless
``backtest.intrabar = "path"``; the book a candle backtest publishes has a bid and an ask a
half-spread either side of the path price; a resting limit fills only when the price trades
through it (or, with a queue share below 1, after that share of the volume at its price).
Small hand-made candle series, as in ``test_backtest``."""

from __future__ import annotations

from decimal import Decimal as D
from typing import Any

import pytest
from test_backtest import NAN, T0, run, series, settings

from gal_friday.backtest.engine import adverse_corners
from gal_friday.events import OrderType

FLAT = (1.0, 1.0, 1.0, 1.0)
# a down candle reaching 0.98 and 1.02: both the 1 % stop and the 1 % target of an entry at 1.0
BOTH = (1.0, 1.02, 0.98, 0.985)


def bracketed(intrabar: str, **backtest: Any) -> Any:
    return settings(
        strategy={"stop_loss_pct": "1", "take_profit_pct": "1"},
        backtest={"intrabar": intrabar, **backtest},
    )


# --- the ambiguous candle ------------------------------------------------------------------


def test_pessimistic_takes_the_stop_on_a_down_candle_touching_both() -> None:
    result = run(
        bracketed("pessimistic"), series([FLAT, FLAT, BOTH, FLAT]), [0.9] + [NAN] * 3, market=True
    )
    (trade,) = result.trades
    assert trade.exit_type == str(OrderType.STOP_LOSS) and trade.exit_price == D("0.99")
    assert result.stats["ambiguous_exits"] == 1


def test_path_keeps_the_colour_ordered_walk_and_still_counts_the_exit() -> None:
    result = run(
        bracketed("path"), series([FLAT, FLAT, BOTH, FLAT]), [0.9] + [NAN] * 3, market=True
    )
    (trade,) = result.trades
    assert trade.exit_type == str(OrderType.TAKE_PROFIT) and trade.exit_price == D("1.01")
    assert result.stats["ambiguous_exits"] == 1  # the report says how many exits are a guess


@pytest.mark.parametrize("intrabar", ["pessimistic", "path"])
def test_an_up_candle_touching_both_takes_the_stop_either_way(intrabar: str) -> None:
    up = (1.0, 1.02, 0.98, 1.015)
    result = run(
        bracketed(intrabar), series([FLAT, FLAT, up, FLAT]), [0.9] + [NAN] * 3, market=True
    )
    (trade,) = result.trades
    assert trade.exit_type == str(OrderType.STOP_LOSS)
    assert result.stats["ambiguous_exits"] == 1


def test_a_position_opened_inside_the_candle_is_not_reordered() -> None:
    # the entry fills at the ambiguous candle's own open: the candle's path (high first) is
    # all that is known about what followed the fill, so nothing is assumed against it
    result = run(bracketed("pessimistic"), series([FLAT, BOTH, FLAT]), [0.9, NAN, NAN], market=True)
    (trade,) = result.trades
    assert trade.exit_type == str(OrderType.TAKE_PROFIT)
    assert result.stats["ambiguous_exits"] == 0


def test_a_candle_touching_only_the_target_is_not_ambiguous() -> None:
    only_target = (1.0, 1.02, 0.995, 0.996)
    result = run(
        bracketed("pessimistic"),
        series([FLAT, FLAT, only_target, FLAT]),
        [0.9] + [NAN] * 3,
        market=True,
    )
    (trade,) = result.trades
    assert trade.exit_type == str(OrderType.TAKE_PROFIT)
    assert result.stats["ambiguous_exits"] == 0


def test_adverse_corners_put_the_extreme_against_the_position_first() -> None:
    assert adverse_corners(10, 15, 5, 8, long=True) == [10, 5, 15, 8]
    assert adverse_corners(10, 15, 5, 12, long=False) == [10, 15, 5, 12]


@pytest.mark.parametrize(
    ("setting", "message"),
    [
        (
            "backtest.intrabar=optimistic",
            "backtest.intrabar: Input should be 'pessimistic' or 'path'",
        ),
        (
            "backtest.half_spread_bps.XRP/USD=-1",
            "backtest.half_spread_bps.XRP/USD: Input should be greater",
        ),
        ("backtest.half_spread_bps.DOGE/USD=900", "less than or equal to 500"),
        ("backtest.half_spread_bps.xrp=1", "'xrp' is not a pair like 'XRP/USD'"),
        ("backtest.queue_share=1.5", "backtest.queue_share: Input should be less than or equal"),
    ],
)
def test_a_bad_cost_setting_is_one_line_and_exit_2(capsys: Any, setting: str, message: str) -> None:
    from gal_friday.cli import main

    code = main(["backtest", "--synthetic", "1", "--no-progress", "--set", setting])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and message in err, err


# --- the spread ----------------------------------------------------------------------------


def spread(bps: str, **sections: Any) -> Any:
    return settings(backtest={"half_spread_bps": {"XRP/USD": bps}}, **sections)


def test_market_orders_pay_the_half_spread_and_the_report_says_how_much() -> None:
    s = spread("5", strategy={"stop_loss_pct": "49", "take_profit_pct": "99"})
    candles = series(
        [(2.0, 2.0, 2.0, 2.0), (2.0, 2.1, 2.0, 2.05), (2.1, 2.2, 2.05, 2.1), (2.1, 2.1, 2.1, 2.1)]
    )
    result = run(s, candles, [0.9, NAN, 0.1, NAN], market=True)
    buy, sell = result.fills
    assert buy.price == D("2.001") and sell.price == D("2.09895")  # ask at 2.0, bid at 2.1
    assert (buy.liquidity, sell.liquidity) == ("taker", "taker")
    assert buy.spread_cost == buy.qty * D("0.001") and sell.spread_cost == sell.qty * D("0.00105")
    m = result.metrics
    assert m["spread_cost"] == pytest.approx(float(buy.spread_cost + sell.spread_cost))
    assert (m["maker_entries_pct"], m["maker_exits_pct"]) == (0.0, 0.0)


def test_a_tiny_spread_is_still_a_tick_either_side() -> None:
    s = spread("0.001", strategy={"stop_loss_pct": "49", "take_profit_pct": "99"})
    candles = series([(2.0, 2.0, 2.0, 2.0), (2.0, 2.0, 2.0, 2.0), (2.0, 2.0, 2.0, 2.0)])
    result = run(s, candles, [0.9, NAN, NAN], market=True)
    assert result.fills[0].price == D("2.00001")


def test_no_spread_prices_at_the_path_as_before() -> None:
    s = spread("0", strategy={"stop_loss_pct": "49", "take_profit_pct": "99"})
    candles = series([(2.0, 2.0, 2.0, 2.0), (2.0, 2.0, 2.0, 2.0), (2.0, 2.0, 2.0, 2.0)])
    result = run(s, candles, [0.9, NAN, NAN], market=True)
    assert result.fills[0].price == D("2.0") and result.metrics["spread_cost"] == 0.0


# --- resting limits: through, or after the queue --------------------------------------------

ENTRY = {"entry_timeout_s": 300, "protective_orders": False}
BRACKETS = {"stop_loss_pct": "1", "take_profit_pct": "2"}
# decided at 1.0: the entry joins the bid, 10 bps below, at 0.999
TOUCHES = (1.0, 1.0, 0.999, 0.9995)  # reaches the bid, never trades below it
THROUGH = (0.9995, 1.0, 0.9985, 0.999)


@pytest.mark.parametrize(("queue_share", "filled_on"), [("1", 2), ("0", 1)])
def test_a_resting_entry_fills_as_maker_when_traded_through_or_after_its_queue(
    queue_share: str, filled_on: int
) -> None:
    s = settings(
        backtest={"half_spread_bps": {"XRP/USD": "10"}, "queue_share": queue_share},
        execution=ENTRY,
        strategy=BRACKETS,
    )
    result = run(s, series([FLAT, TOUCHES, THROUGH, FLAT]), [0.9, NAN, NAN, NAN])
    (buy,) = result.fills
    assert buy.price == D("0.999") and buy.liquidity == "maker" and buy.spread_cost == 0
    assert (T0 + 60 * filled_on) * 10**9 <= buy.ts_ns < (T0 + 60 * (filled_on + 1)) * 10**9
    assert result.metrics["maker_entries_pct"] == 100.0


def test_a_touch_gives_what_the_queue_ahead_leaves_of_the_volume_there() -> None:
    # volume 40 over four points: 10 trade at the bid when the candle's low touches it, half
    # of which goes to the orders ahead
    s = settings(
        backtest={"half_spread_bps": {"XRP/USD": "10"}, "queue_share": "0.5"},
        execution=ENTRY,
        strategy=BRACKETS,
    )
    candles = series([FLAT, TOUCHES, FLAT, FLAT], volume=40.0)
    result = run(s, candles, [0.9, NAN, NAN, NAN], depth="volume")
    (buy,) = result.fills
    assert buy.qty == 5 and buy.price == D("0.999") and buy.liquidity == "maker"


def test_a_limit_that_crosses_on_arrival_takes_the_ask_as_taker() -> None:
    s = spread("10", execution=ENTRY, strategy=BRACKETS)
    gap = (0.99, 0.995, 0.99, 0.995)  # opens under the 0.999 bid: the ask is 0.99099
    result = run(s, series([FLAT, gap, FLAT]), [0.9, NAN, NAN])
    (buy,) = result.fills
    assert buy.price == D("0.99099") and buy.liquidity == "taker"
    assert buy.spread_cost == buy.qty * D("0.00099")
    assert result.metrics["maker_entries_pct"] == 0.0


def test_the_strategys_own_stop_is_watched_on_the_bid() -> None:
    # stop 1 % under the 0.999 bid: 0.98901; the bid reaches it when the path is at 0.99,
    # a candle whose low stays above the stop itself
    s = spread(
        "10",
        strategy={"stop_loss_pct": "1", "take_profit_pct": "50"},
        execution={"protective_orders": False},
    )
    dip = (1.0, 1.0, 0.99, 1.0)
    result = run(s, series([FLAT, FLAT, dip, FLAT]), [0.9, NAN, NAN, NAN], market=True)
    buy, sell = result.fills
    assert buy.price == D("1.001")  # the ask at the next open
    assert sell.price == D("0.98901") and sell.order_type is OrderType.MARKET
    assert (T0 + 120) * 10**9 <= sell.ts_ns < (T0 + 180) * 10**9


def test_the_report_shows_maker_shares_spread_cost_and_ambiguous_exits(tmp_path: Any) -> None:
    import json

    from rich.console import Console

    from gal_friday.backtest.report import summary_table, write_report

    result = run(
        bracketed("pessimistic"), series([FLAT, FLAT, BOTH, FLAT]), [0.9] + [NAN] * 3, market=True
    )
    metrics = json.loads(write_report(result, tmp_path, chart=False)["metrics"].read_text())[
        "metrics"
    ]
    assert metrics["ambiguous_exits"] == 1 and metrics["maker_exits_pct"] == 0.0
    assert metrics["maker_entries_pct"] == 0.0 and metrics["spread_cost"] == 0.0  # no spread
    console = Console(width=100, record=True)
    console.print(summary_table(result))
    text = console.export_text()
    for label in ("Maker share of entries", "Maker share of exits", "Spread cost", "touching both"):
        assert label in text


def test_a_pair_without_a_configured_spread_gets_one_tick_either_side() -> None:
    import asyncio

    import numpy as np

    from gal_friday.backtest.classic import MarketStrategy
    from gal_friday.backtest.data import PairData, instrument_for
    from gal_friday.backtest.runner import run_backtest
    from gal_friday.backtest.signals import PairSignals

    s = settings(strategy={"stop_loss_pct": "49", "take_profit_pct": "99"})
    s = s.model_copy(update={"pairs": ("ETH/USD",)})
    candles = series([(2000.0, 2000.0, 2000.0, 2000.0)] * 3)
    data = [PairData("ETH/USD", candles, instrument_for("ETH/USD", candles), 60)]
    signals = {"ETH/USD": PairSignals(np.array([0.9, NAN, NAN]), (), np.empty((3, 0)), "m")}

    def strat(st: Any, bus: Any) -> MarketStrategy:
        return MarketStrategy(st.strategy, st.fees, bus)

    result = asyncio.run(run_backtest(s, data, signals, capital=D(10000), strategy=strat))
    tick = D(1).scaleb(-data[0].instrument.price_precision)
    assert result.fills[0].price == D(2000) + tick
