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
from test_backtest import NAN, run, series, settings

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
        ("backtest.half_spread_bps=-1", "backtest.half_spread_bps: Input should be greater than"),
        ("backtest.pair_half_spread_bps.XRP/USD=900", "less than or equal to 500"),
        ("backtest.queue_share=1.5", "backtest.queue_share: Input should be less than or equal"),
    ],
)
def test_a_bad_cost_setting_is_one_line_and_exit_2(capsys: Any, setting: str, message: str) -> None:
    from gal_friday.cli import main

    code = main(["backtest", "--synthetic", "1", "--no-progress", "--set", setting])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and message in err, err
