"""Backtest engine: no look-ahead, fill arithmetic, touch-or-cross limits, metrics by hand,
determinism. Small hand-made candle series; no files, no network."""

from __future__ import annotations

import argparse
import asyncio
import math
from decimal import Decimal as D
from typing import Any

import numpy as np
import pytest

from gal_friday.backtest.classic import MarketStrategy
from gal_friday.backtest.data import PairData, instrument_for, synthetic_pairs
from gal_friday.backtest.engine import Fill, intrabar_corners, next_point
from gal_friday.backtest.metrics import compute_metrics, drawdown, equity_curve, round_trips
from gal_friday.backtest.report import (
    halt_lines,
    metrics_document,
    rejection_line,
    terminal_chart,
    write_report,
)
from gal_friday.backtest.runner import BacktestResult, run_backtest
from gal_friday.backtest.signals import (
    LookAheadError,
    PairSignals,
    calibrate,
    checked_features,
    crossover,
    default_builder,
    sma,
    sma_cross_signals,
)
from gal_friday.candles import CandleSeries
from gal_friday.config import FeatureSettings, Settings, load_settings
from gal_friday.events import OrderType, Side
from gal_friday.features import FeatureTable, batch_candle_features
from gal_friday.prediction.model import Calibration

T0 = 1_700_000_040  # a minute boundary
NAN = math.nan


def backtest_parser() -> argparse.ArgumentParser:
    """The main parser with only ``backtest`` on it, as ``gal-friday backtest`` parses."""
    from gal_friday.backtest import cli as backtest_cli
    from gal_friday.cli import _common_options

    parser = argparse.ArgumentParser()
    backtest_cli.add_parser(parser.add_subparsers(dest="command"), _common_options())
    return parser


def series(rows: list[tuple[float, float, float, float]], volume: float = 1e6) -> CandleSeries:
    n = len(rows)
    o, h, low, c = (np.array(col, dtype=np.float64) for col in zip(*rows, strict=True))
    return CandleSeries(
        np.arange(n, dtype=np.int64) * 60 + T0,
        o,
        h,
        low,
        c,
        np.full(n, volume),
        np.ones(n, dtype=np.int64),
    )


# the tests of other rules price at the path itself, as before the spread model: no spread,
# a touch fills, today's colour-ordered walk; the spread, queue and intrabar tests set them
AT_THE_PATH = {
    "half_spread_bps": {"XRP/USD": 0, "DOGE/USD": 0},
    "queue_share": 0,
    "intrabar": "path",
}


def settings(**sections: dict[str, Any]) -> Settings:
    base: dict[str, Any] = {
        "backtest": AT_THE_PATH,
        "pairs": ["XRP/USD"],
        "strategy": {"confirm_momentum": False, "max_holding_min": 0, "min_edge_pct": 0},
        "paper": {"latency_ms": 1, "slippage_bps": 0},
        "fees": {"maker_pct": 0, "taker_pct": 0},
        "risk": {
            "max_consecutive_losses": 1000,
            "max_daily_drawdown_pct": 100,
            "max_weekly_drawdown_pct": 100,
            "max_total_drawdown_pct": 100,
        },
    }
    for key, value in sections.items():
        base[key] = {**base.get(key, {}), **value}
    return load_settings(None, base)


def run(
    s: Settings,
    candles: CandleSeries,
    prob: list[float],
    *,
    market: bool = False,
    depth: str = "unlimited",
) -> BacktestResult:
    data = [PairData("XRP/USD", candles, instrument_for("XRP/USD", candles), 60)]
    signals = {"XRP/USD": PairSignals(np.array(prob), (), np.empty((len(prob), 0)), "m")}

    def strat(st: Settings, bus: Any) -> MarketStrategy:
        return MarketStrategy(
            st.strategy, st.fees, bus, venue_brackets=st.execution.protective_orders
        )

    kwargs: dict[str, Any] = {"strategy": strat} if market else {}
    return asyncio.run(
        run_backtest(
            s,
            data,
            signals,
            capital=D(10000),
            depth=depth,  # type: ignore[arg-type]
            **kwargs,
        )
    )


# --- no look-ahead -------------------------------------------------------------------------


def test_a_feature_reading_the_next_candle_is_caught() -> None:
    fs = FeatureSettings()
    candles = synthetic_pairs(["XRP/USD"], seed=3, days=1)[0].candles

    def peeking(s: CandleSeries) -> FeatureTable:
        table = batch_candle_features(s, fs)
        nxt = np.r_[s.close[1:], np.nan][(s.volume > 0) & (s.low > 0)]
        return FeatureTable(
            table.time_s, (*table.names, "next_close"), np.column_stack([table.values, nxt])
        )

    with pytest.raises(LookAheadError, match="next_close"):
        checked_features(candles, peeking)
    table = checked_features(candles, default_builder(fs))  # the real features pass
    assert table.values.shape == (len(candles), len(table.names))


def test_orders_fill_only_after_the_decision_candle() -> None:
    # decision at candle 1's close (price 1.0); candle 1 itself dipped to 0.5 before closing
    candles = series(
        [(1.0, 1.0, 1.0, 1.0), (1.0, 1.0, 0.5, 1.0), (1.2, 1.3, 1.2, 1.25), (1.25, 1.3, 1.2, 1.25)]
    )
    result = run(settings(), candles, [NAN, 0.9, NAN, NAN], market=True)
    fill = result.fills[0]
    assert fill.price == D("1.2")  # the next candle's open, not anything of candle 1
    assert fill.ts_ns >= (T0 + 120) * 10**9


# --- fills ---------------------------------------------------------------------------------


def test_market_fill_fee_and_slippage_arithmetic() -> None:
    s = settings(
        paper={"slippage_bps": 10},
        fees={"taker_pct": "0.4", "maker_pct": "0.1"},
        strategy={"stop_loss_pct": "49", "take_profit_pct": "99"},
    )  # a market exit
    candles = series(
        [(2.0, 2.0, 2.0, 2.0), (2.0, 2.1, 2.0, 2.05), (2.1, 2.2, 2.05, 2.1), (2.1, 2.1, 2.1, 2.1)]
    )
    result = run(s, candles, [0.9, NAN, 0.1, NAN], market=True)
    buy, sell = result.fills
    assert buy.price == D("2.0") * D("1.001") and sell.price == D("2.1") * D("0.999")
    assert buy.fee == buy.qty * buy.price * D("0.004")
    assert sell.fee == sell.qty * sell.price * D("0.004")
    (trade,) = result.trades
    assert trade.pnl == sell.qty * sell.price - buy.qty * buy.price - buy.fee - sell.fee
    assert result.metrics["fees_paid"] == pytest.approx(float(buy.fee + sell.fee))
    assert result.metrics["final_equity"] == pytest.approx(10000 + float(trade.pnl))


def test_limit_entry_does_not_fill_when_price_stays_above() -> None:
    s = settings(execution={"entry_timeout_s": 30})
    candles = series(
        [(1.0, 1.0, 1.0, 1.0), (1.001, 1.01, 1.00001, 1.005), (1.005, 1.01, 1.001, 1.005)]
    )
    result = run(s, candles, [0.9, NAN, NAN])
    assert result.fills == [] and result.stats["orders"] == 1  # sent, never filled


def test_limit_entry_fills_on_touch_at_its_price_as_maker() -> None:
    s = settings(
        fees={"maker_pct": "0.25", "taker_pct": "0.4"},
        execution={"entry_timeout_s": 30, "protective_orders": False},
    )
    candles = series([(1.0, 1.0, 1.0, 1.0), (1.002, 1.01, 1.0, 1.005), (1.005, 1.01, 1.001, 1.005)])
    result = run(s, candles, [0.9, NAN, NAN])
    fill = result.fills[0]  # (the strategy's own take-profit at 1.01 sells it later)
    assert fill.price == D("1.0") and fill.side is Side.BUY  # at the limit, never better
    assert fill.fee == fill.qty * D("1.0") * D("0.0025")


def test_stop_loss_fills_at_its_trigger_on_the_intrabar_path() -> None:
    s = settings(strategy={"stop_loss_pct": "1", "take_profit_pct": "5"})
    candles = series(
        [
            (1.0, 1.0, 1.0, 1.0),
            (1.0, 1.0, 1.0, 1.0),
            (1.0, 1.0, 0.95, 0.96),
            (0.96, 0.96, 0.96, 0.96),
        ]
    )
    result = run(s, candles, [0.9, NAN, NAN, NAN])
    (trade,) = result.trades
    assert trade.exit_type == str(OrderType.STOP_LOSS)
    assert trade.exit_price == D("0.99")  # the trigger, not the candle's low of 0.95


@pytest.mark.parametrize("protective", [True, False])
def test_a_stop_or_target_exactly_at_the_candles_low_or_high_fills(protective: bool) -> None:
    # 1.1 * 1e5 is 110000.00000000001 in floats: prices compare on the pair's integer grid
    s = settings(
        strategy={"stop_loss_pct": "8.33", "take_profit_pct": "10"},
        execution={"protective_orders": protective},
    )
    flat = (1.0, 1.0, 1.0, 1.0)
    up = run(
        s, series([flat, flat, flat, (1.0, 1.1, 1.0, 1.0), flat]), [0.9] + [NAN] * 4, market=True
    )
    (trade,) = up.trades
    assert trade.exit_price == D("1.10000")  # the target, exactly the high
    stop = D("1.2") * (1 - D("8.33") / 100)  # 1.10004 on the grid
    rows = [(1.2, 1.2, 1.2, 1.2)] * 3 + [(1.2, 1.2, float(stop), 1.2), (1.2, 1.2, 1.2, 1.2)]
    down = run(s, series(rows), [0.9] + [NAN] * 4, market=True)
    (trade,) = down.trades
    assert trade.exit_price == stop  # the stop, exactly the low


def test_a_position_opened_after_a_flat_midnight_is_not_marked_at_its_old_price() -> None:
    # flat across midnight at 2.0, then buy at 1.0: marking the new position at midnight's
    # 2.0 would fake a 9 % drawdown and HALT (limit 5 %)
    s = settings(
        risk={"max_total_drawdown_pct": 5}, strategy={"stop_loss_pct": "5", "take_profit_pct": "50"}
    )
    rows = [(2.0, 2.0, 2.0, 2.0)] * 106 + [(1.0, 1.0, 1.0, 1.0)] * 100  # midnight after 106
    prob = [NAN] * len(rows)
    prob[150], prob[160], prob[170] = 0.9, 0.1, 0.9
    result = run(s, series(rows), prob, market=True)
    assert not result.halts
    assert [f.side for f in result.fills] == [Side.BUY, Side.SELL, Side.BUY]


@pytest.mark.parametrize("protective", [True, False])
def test_an_entry_filled_at_the_open_is_protected_before_the_candle_falls(protective: bool) -> None:
    # the market entry takes effect at open + 1 ms; its stop (10 % below: 1.08) must be in
    # place then, so the candle falling to 1.0 sells at the stop, not at the low
    s = settings(
        strategy={"stop_loss_pct": "10", "take_profit_pct": "50"},
        execution={"protective_orders": protective},
    )
    candles = series([(1.2, 1.2, 1.2, 1.2), (1.2, 1.2, 1.0, 1.2), (1.2, 1.2, 1.2, 1.2)])
    result = run(s, candles, [0.9, NAN, NAN], market=True)
    buy, sell = result.fills
    assert buy.price == D("1.2") and sell.price == D("1.08")
    assert buy.ts_ns == (T0 + 60) * 10**9 + 10**6  # at open + latency


@pytest.mark.parametrize("order", [("DOGE/USD", "XRP/USD"), ("XRP/USD", "DOGE/USD")])
def test_two_pairs_fill_on_their_own_candles_whatever_their_order(order: tuple[str, str]) -> None:
    # XRP decides at candle 0 (close 1.0) and gaps to 1.2 at candle 1; DOGE decides at the
    # end of candle 1. XRP's entry fills at its candle 1 open (1.2), never at its stale 1.0
    s = settings(strategy={"stop_loss_pct": "10", "take_profit_pct": "50"})
    s = s.model_copy(update={"pairs": tuple(order)})
    rows = {
        "XRP/USD": [(1.0, 1.0, 1.0, 1.0), (1.2, 1.25, 1.15, 1.2)] + [(1.2,) * 4] * 2,
        "DOGE/USD": [(0.1,) * 4] * 4,
    }
    probs = {"XRP/USD": [0.9, NAN, NAN, NAN], "DOGE/USD": [NAN, 0.9, NAN, NAN]}
    data = [PairData(p, series(rows[p]), instrument_for(p, series(rows[p])), 60) for p in order]
    signals = {p: PairSignals(np.array(probs[p]), (), np.empty((4, 0)), "m") for p in order}

    def strat(st: Settings, bus: Any) -> MarketStrategy:
        return MarketStrategy(st.strategy, st.fees, bus)

    result = asyncio.run(
        run_backtest(s, data, signals, capital=D(10000), strategy=strat, depth="unlimited")
    )
    prices = {f.pair: f.price for f in result.fills}
    assert prices == {"XRP/USD": D("1.2"), "DOGE/USD": D("0.1")}


def test_partial_fills_when_the_candle_volume_is_small() -> None:
    candles = series(
        [(1.0, 1.0, 1.0, 1.0), (1.0, 1.01, 0.99, 1.0), (1.0, 1.0, 1.0, 1.0), (1.0, 1.0, 1.0, 1.0)],
        volume=40.0,
    )
    result = run(
        settings(execution={"protective_orders": False}),
        candles,
        [0.9, NAN, NAN, NAN],
        market=True,
        depth="volume",
    )
    assert result.fills[0].side is Side.BUY and result.fills[0].qty == D(10)  # 40 / 4


def test_a_resting_limit_the_price_moves_through_fills_no_more_than_the_volume() -> None:
    # a limit buy of ~10,000 XRP at 1.0 rests; the candle (volume 40, so 10 a point) falls
    # through it to 0.99: each point gives at most its share, never the whole order
    s = settings(
        execution={"entry_timeout_s": 30, "protective_orders": False},
        strategy={"stop_loss_pct": "1", "take_profit_pct": "50"},
    )
    candles = series(
        [(1.0, 1.0, 1.0, 1.0), (1.002, 1.01, 0.99, 1.005), (1.005, 1.005, 1.005, 1.005)],
        volume=40.0,
    )
    result = run(s, candles, [0.9, NAN, NAN], depth="volume")
    assert result.fills and all(f.qty <= 10 for f in result.fills)
    assert sum(f.qty for f in result.fills) <= 40


def test_intrabar_path_order_and_waypoints() -> None:
    assert intrabar_corners(10, 15, 5, 12) == [10, 5, 15, 12]  # up candle: low first
    assert intrabar_corners(10, 15, 5, 8) == [10, 15, 5, 8]  # down candle: high first
    assert next_point(10, 5, [7, 14, 8]) == 8 and next_point(5, 15, [7, 14, 20]) == 7
    assert next_point(14, 15, [7, 14, 20]) == 15


# --- signals ------------------------------------------------------------------------------


def test_vectorised_calibration_equals_the_workers() -> None:
    cal = Calibration((0.1, 0.3, 0.3, 0.5, 0.9), (0.05, 0.2, 0.4, 0.5, 0.95))
    raw = np.r_[np.random.default_rng(1).random(2000), 0.1, 0.3, 0.5, 0.9, 0.0, 1.0]
    assert calibrate(cal, raw).tolist() == [cal.apply(float(p)) for p in raw]


def test_sma_and_crossover_match_backtrader_formulas() -> None:
    close = np.round(1 + np.cumsum(np.random.default_rng(2).normal(0, 0.01, 400)), 4)
    fast = sma(close, 10)
    assert fast[9:].tolist() == [math.fsum(close[i - 9 : i + 1]) / 10 for i in range(9, 400)]
    cross = crossover(np.array([1, 2, 2, 3, 1.0]), np.array([2, 2, 2, 2, 2.0]))
    assert cross.tolist() == [0, 0, 0, 1, -1]  # the zero differences carry the last sign
    sig = sma_cross_signals(series([(c, c, c, c) for c in close]))
    assert set(np.unique(sig.prob[~np.isnan(sig.prob)])) <= {0.0, 1.0}


# --- metrics ------------------------------------------------------------------------------


def _fill(ts: int, side: Side, qty: str, price: str, fee: str = "0") -> Fill:
    return Fill(ts, "XRP/USD", side, D(qty), D(price), D(fee), OrderType.MARKET, "c", "s")


def test_metrics_against_hand_computed_values() -> None:
    hour = 3600 * 10**9
    times = np.arange(5, dtype=np.int64) * hour
    equity = np.array([100.0, 110.0, 99.0, 105.0, 120.0])
    fills = [
        _fill(0, Side.BUY, "10", "1", "0.1"),
        _fill(1, Side.SELL, "10", "2", "0.1"),
        _fill(2, Side.BUY, "10", "2"),
        _fill(3, Side.SELL, "10", "1.5"),
        _fill(4, Side.BUY, "5", "1"),
        _fill(5, Side.SELL, "5", "1.4"),
    ]
    trades = round_trips(fills)
    assert [t.pnl for t in trades] == [D("9.8"), D("-5"), D("2")]
    m = compute_metrics(
        times, equity, trades, capital=D(100), final_equity=D(120), fees=D("0.2"), exposure=0.5
    )
    assert m["total_return_pct"] == pytest.approx(20.0)
    assert m["max_drawdown"] == pytest.approx(11.0) and m["max_drawdown_pct"] == pytest.approx(10.0)
    assert m["win_rate_pct"] == pytest.approx(200 / 3)
    assert m["profit_factor"] == pytest.approx(11.8 / 5)
    assert m["avg_pnl_per_trade"] == pytest.approx(6.8 / 3)
    r = np.array([0.1, 99 / 110 - 1, 105 / 99 - 1, 120 / 105 - 1])  # hourly returns
    scale = math.sqrt(365 * 24)
    assert m["sharpe"] == pytest.approx(r.mean() / r.std(ddof=1) * scale)
    assert m["sortino"] == pytest.approx(
        r.mean() / math.sqrt(np.mean(np.minimum(r, 0) ** 2)) * scale
    )
    assert drawdown(np.array([1.0, 2.0, 1.0, 3.0])) == (1.0, 50.0)


def test_a_position_closed_by_partial_fills_leaves_a_flat_curve() -> None:
    # 0.1 + 0.2 - 0.3 is 5.5e-17 in floats: held exactly, the closed position is worth
    # nothing at any later price, the curve stays flat and has no Sharpe ratio
    hour = 3600 * 10**9
    fills = [
        _fill(1, Side.BUY, "0.1", "100000"),
        _fill(2, Side.BUY, "0.2", "100000"),
        _fill(3, Side.SELL, "0.3", "100000"),
    ]
    times = np.arange(49, dtype=np.int64) * hour
    closes = {"XRP/USD": (times[1:], 1e5 + np.arange(48) * 37.0)}
    equity = equity_curve(times, D(10000), fills, closes)
    assert set(equity.tolist()) == {10000.0}
    m = compute_metrics(
        times,
        equity,
        round_trips(fills),
        capital=D(10000),
        final_equity=D(10000),
        fees=D(0),
        exposure=0.0,
    )
    assert m["sharpe"] is None and m["total_return_pct"] == 0.0


# --- determinism and the report -------------------------------------------------------------


def test_same_inputs_give_an_identical_report(tmp_path: Any) -> None:
    s = load_settings(
        None, {"strategy": {"confirm_momentum": False, "buy_threshold": 0.6, "sell_threshold": 0.4}}
    )
    data = synthetic_pairs(["XRP/USD", "DOGE/USD"], seed=5, days=1)
    signals = {d.pair: sma_cross_signals(d.candles, 5, 20) for d in data}

    def once(out: str) -> tuple[BacktestResult, str]:
        def strat(st: Settings, bus: Any) -> MarketStrategy:
            return MarketStrategy(st.strategy, st.fees, bus)

        result = asyncio.run(run_backtest(s, data, signals, capital=D(10000), strategy=strat))
        paths = write_report(result, tmp_path / out, chart=out == "a")
        return result, paths["trades"].read_text() + paths["metrics"].read_text()

    (first, text_a), (second, text_b) = once("a"), once("b")
    assert first.fills and first.fills == second.fills
    assert text_a == text_b and metrics_document(first) == metrics_document(second)
    assert (tmp_path / "a" / "equity.png").stat().st_size > 1000
    assert terminal_chart(first.equity).count("\n") == 9


def test_a_risk_halt_is_reported_with_its_time_reason_and_skipped_entries(tmp_path: Any) -> None:
    # two losing round trips against a limit of two consecutive losses: the third entry
    # signal finds the limit reached (rejected, HALT), the fourth is skipped while HALTED,
    # and the report says so instead of going quiet
    s = settings(
        risk={"max_consecutive_losses": 2},
        strategy={"stop_loss_pct": "49", "take_profit_pct": "99"},
        execution={"protective_orders": False},
    )
    rows = [(1.0, 1.0, 1.0, 1.0), (1.0, 1.0, 1.0, 1.0), (0.9, 0.9, 0.9, 0.9)] * 4
    prob = [1.0, 0.0, NAN] * 4  # buy at the next open (1.0), sell at the one after (0.9)
    result = run(s, series(rows), prob, market=True)
    assert len(result.trades) == 2 and all(t.pnl < 0 for t in result.trades)
    (halt,) = result.halts
    assert halt.source == "risk" and halt.reason == "consecutive losses 2 >= limit 2"
    assert halt.ts_ns == (T0 + 7 * 60) * 10**9  # the third entry's decision, candle 6's close
    assert result.stats["signals_rejected"] == 1
    assert result.stats["rejected_risk_limits"] == 1  # why, per failed check
    assert "risk_limits 1" in (rejection_line(result) or "")
    assert result.stats["entries_skipped_halted"] == 1
    doc = metrics_document(result)
    assert doc["halts"] == [
        {
            "time": doc["halts"][0]["time"],
            "source": "risk",
            "reason": "consecutive losses 2 >= limit 2",
        }
    ]
    lines = halt_lines(result)
    assert lines[0].startswith("HALTED at ") and "consecutive losses 2 >= limit 2" in lines[0]
    assert "1 entry signals skipped" in lines[1] and "[risk]" in lines[1]


def test_the_terminal_chart_shows_a_drop_inside_a_bucket() -> None:
    # 600 points in 60 columns: the dip to 90 lasts one point, yet the axis and a column
    # reach it
    values = np.full(600, 100.0)
    values[5] = 90.0
    chart = terminal_chart(values)
    lines = chart.splitlines()
    assert lines[0].startswith("      100.00 ┤") and lines[-1].startswith("       90.00 ┤")
    assert lines[-1][14] == "│" and lines[0][14] == "•"  # the first column spans 90..100
    assert set(lines[-1][15:]) == {" "}
    flat = terminal_chart(np.full(10, 5.0)).splitlines()
    assert "5.00" in flat[0] and "5.00" not in flat[-1]


def test_trade_money_in_the_csv_is_rounded_to_1e_8(tmp_path: Any) -> None:
    s = settings(
        fees={"taker_pct": "0.26"},
        strategy={"stop_loss_pct": "49", "take_profit_pct": "99"},
        execution={"protective_orders": False},
    )
    rows = [(1.0, 1.0, 1.0, 1.0), (1.0, 1.0, 1.0, 1.0), (1.1, 1.1, 1.1, 1.1), (1.1, 1.1, 1.1, 1.1)]
    result = run(s, series(rows), [1.0, NAN, 0.0, NAN], market=True)
    (trade,) = result.trades
    text = write_report(result, tmp_path, chart=False)["trades"].read_text()
    fees, pnl = text.splitlines()[1].split(",")[6:8]
    assert D(fees) == trade.fees.quantize(D("1e-8")) and len(fees.split(".")[1]) == 8
    assert D(pnl) == trade.pnl.quantize(D("1e-8"))


def test_the_command_writes_every_report_file(tmp_path: Any, in_tmp: Any) -> None:

    from gal_friday.backtest import cli as backtest_cli
    from gal_friday.cli import settings_from_args

    parser = backtest_parser()
    args = parser.parse_args(
        [
            "backtest",
            "--synthetic",
            "0.5",
            "--strategy",
            "sma",
            "--no-progress",
            "--out",
            str(tmp_path / "r"),
            "--pairs",
            "XRP/USD",
        ]
    )
    assert asyncio.run(backtest_cli.run(settings_from_args(args), args)) == 0
    names = sorted(p.name for p in (tmp_path / "r").iterdir())
    assert names == ["equity.csv", "equity.png", "metrics.json", "trades.csv"]


@pytest.mark.parametrize(
    ("options", "code", "message"),
    [
        (["--candles", "{tmp}/missing.csv"], 1, "candle file not found: {tmp}/missing.csv"),
        (["--candles", "{tmp}/bad.csv"], 1, "bad.csv:1: expected 7 columns"),
        (
            [
                "--candles",
                "{tmp}/bad.csv",
                "--candles",
                "{tmp}/bad.csv",
                "--candles",
                "{tmp}/x.csv",
            ],
            1,
            "3 candle files for 1 pairs",
        ),
        (
            ["--synthetic", "1", "--capital", "abc"],
            2,
            "--capital must be an amount of USD, got 'abc'",
        ),
        (["--synthetic", "1", "--capital", "-5"], 2, "--capital must be positive"),
        (["--synthetic", "-1"], 2, "--synthetic needs a positive number of days, got -1"),
        (["--synthetic", "1", "--start", "2025-01-01"], 2, "do not apply to --synthetic"),
        (["--candles", "{tmp}/bad.csv", "--start", "2025-13-01"], 2, "not a date: '2025-13-01'"),
        (
            ["--candles", "{tmp}/bad.csv", "--start", "2025-02-01", "--end", "2025-01-01"],
            2,
            "--end (2025-01-01) must be after --start (2025-02-01)",
        ),
        # short.csv: 25 one-minute candles from 2023-11-14T22:14Z
        (
            ["--candles", "{tmp}/short.csv", "--start", "2023-11-14T22:00"],
            2,
            "--start 2023-11-14T22:00 is before the first XRP/USD candle in {tmp}/short.csv "
            "(2023-11-14T22:14Z): the indicators need 30 rows of history before the start",
        ),
        (
            ["--candles", "{tmp}/short.csv", "--start", "2023-11-14T22:24"],
            2,
            "{tmp}/short.csv: 10 rows of XRP/USD before --start 2023-11-14T22:24, too few to "
            "warm up: the indicators need at least 30 (30 to converge); give a file that "
            "begins earlier",
        ),
        (
            ["--strategy", "model", "--candles", "{tmp}/short.csv", "--start", "2023-11-14T22:24"],
            2,
            "10 rows of XRP/USD before --start 2023-11-14T22:24, too few to warm up: the "
            "indicators need at least 33 (210 to converge)",
        ),
        (
            ["--candles", "{tmp}/short.csv"],
            2,
            "{tmp}/short.csv: 25 rows of XRP/USD, too few to warm up: the indicators need 30 "
            "rows before the first candle traded (30 to converge); give a longer file",
        ),
    ],
)
def test_bad_options_and_files_get_one_line_and_an_exit_code(
    tmp_path: Any, in_tmp: Any, capsys: Any, options: list[str], code: int, message: str
) -> None:

    from gal_friday.backtest import cli as backtest_cli
    from gal_friday.cli import settings_from_args

    (tmp_path / "bad.csv").write_text("1700000040,1,2\n")
    (tmp_path / "short.csv").write_text(
        "".join(f"{T0 + 60 * k},1.0,1.1,0.9,1.0,10,1\n" for k in range(25))
    )
    parser = backtest_parser()
    args = parser.parse_args(
        [
            "backtest",
            "--strategy",
            "sma",
            "--no-progress",
            "--pairs",
            "XRP/USD",
            "--out",
            str(tmp_path / "r"),
            *(o.format(tmp=tmp_path) for o in options),
        ]
    )
    assert asyncio.run(backtest_cli.run(settings_from_args(args), args)) == code
    out = capsys.readouterr().out
    assert out.count("\n") == 1 and out.startswith("gal-friday: ")
    assert message.format(tmp=tmp_path) in out
    assert not (tmp_path / "r").exists()  # nothing written for a run that never started


def test_pairs_with_candles_of_different_intervals_are_refused(
    tmp_path: Any, in_tmp: Any, capsys: Any
) -> None:

    from gal_friday.backtest import cli as backtest_cli
    from gal_friday.cli import settings_from_args

    for name, step in (("xrp.csv", 60), ("doge.csv", 300)):
        rows = [f"{T0 + k * step},1.0,1.0,1.0,1.0,10,1" for k in range(50)]
        (tmp_path / name).write_text("\n".join(rows) + "\n")
    parser = backtest_parser()
    args = parser.parse_args(
        [
            "backtest",
            "--strategy",
            "sma",
            "--no-progress",
            "--pairs",
            "XRP/USD,DOGE/USD",
            "--out",
            str(tmp_path / "r"),
            "--candles",
            f"XRP/USD={tmp_path / 'xrp.csv'}",
            "--candles",
            f"DOGE/USD={tmp_path / 'doge.csv'}",
        ]
    )
    assert asyncio.run(backtest_cli.run(settings_from_args(args), args)) == 1
    out = capsys.readouterr().out
    assert "different intervals (XRP/USD 60 s, DOGE/USD 300 s)" in out and out.count("\n") == 1


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("1700000040000,1,1,1,1,5,1\n", "bad.csv:1: time is not unix seconds (milliseconds?)"),
        (
            "1700000040,1,1,1,1,5,1\n1700000100,nan,1,1,1,5,1\n",
            "bad.csv:2: prices must be finite and positive",
        ),
        ("1700000040,1,1,1,1,5,1\n1700000100,1,1,1,1,-5,1\n", "bad.csv:2: volume must be finite"),
        (
            "1700000040,1,1,1,1,5,1\n1700000040,1,1,1,1,5,1\n",
            "bad.csv:2: rows are not in strictly increasing time order",
        ),
        ("1700000040,1,1,1,1,5,1\n1700000100,one,1,1,1,5,1\n", "bad.csv:2: not a number"),
    ],
)
def test_a_bad_candle_row_is_named_by_its_line(tmp_path: Any, text: str, message: str) -> None:
    from gal_friday.candles import CandleFileError, read_candles

    (tmp_path / "bad.csv").write_text(text)
    with pytest.raises(CandleFileError) as caught:
        read_candles(tmp_path / "bad.csv")
    assert str(caught.value).endswith(message) or message in str(caught.value)


def test_a_header_line_and_an_excel_bom_are_fine_and_a_directory_is_refused(tmp_path: Any) -> None:
    from gal_friday.candles import CandleFileError, read_candles

    (tmp_path / "excel.csv").write_bytes(
        "\ufefftime,open,high,low,close,volume,count\r\n"
        "1700000040,1.5,1.6,1.4,1.55,10,3\r\n".encode()
    )
    series = read_candles(tmp_path / "excel.csv")
    assert series.time_s.tolist() == [1700000040] and series.close.tolist() == [1.55]
    with pytest.raises(CandleFileError, match="cannot be read"):
        read_candles(tmp_path)


@pytest.mark.parametrize("strategy", ["sma", "model"])
def test_with_start_the_signals_are_warmed_by_the_candles_before_it(
    tmp_path: Any, in_tmp: Any, strategy: str
) -> None:
    # live, the indicators start warm (REST OHLC); a backtest from --start reads the
    # candles before it as history, so its signals equal those of the whole file

    from gal_friday.backtest import cli as backtest_cli
    from gal_friday.cli import settings_from_args

    (data,) = synthetic_pairs(["XRP/USD"], seed=3, days=1)
    c = data.candles
    rows = [
        f"{t},{o},{h},{lo},{cl},{v},{n}"
        for t, o, h, lo, cl, v, n in zip(
            c.time_s.tolist(),
            c.open.tolist(),
            c.high.tolist(),
            c.low.tolist(),
            c.close.tolist(),
            c.volume.tolist(),
            c.trades.tolist(),
            strict=True,
        )
    ]
    (tmp_path / "xrp.csv").write_text("\n".join(rows) + "\n")
    start = int(c.time_s[1000])
    parser = backtest_parser()
    base = [
        "backtest",
        "--strategy",
        "sma",
        "--sma",
        "5,20",
        "--pairs",
        "XRP/USD",
        "--candles",
        f"XRP/USD={tmp_path / 'xrp.csv'}",
    ]
    if strategy == "model":
        base = [*base[:2], "model", *base[5:]]
        from gal_friday.prediction.pipeline import train_from_candles
        from gal_friday.prediction.training import TrainSpec

        train_from_candles(
            load_settings(None, {}),
            c.slice(0, 800),
            tmp_path / "model",
            spec=TrainSpec(min_auc=0.0, min_brier_skill=None, rounds=20, folds=2),
            model_id="warm",
            progress=False,
        )
        base += ["--set", f'prediction.models=["{tmp_path / "model"}"]']

    def inputs(*extra: str) -> tuple[list[PairData], dict[str, PairSignals]]:
        args = parser.parse_args([*base, *extra])
        data, signals, _, _ = backtest_cli.warmed_inputs(settings_from_args(args), args)
        return data, signals

    # without --start the file's first rows only warm the indicators: the period starts
    # once they have converged (the slow SMA window; the model's 210 rows)
    (whole,), whole_signals = inputs()
    need = 20 if strategy == "sma" else 210
    assert int(whole.candles.time_s[0]) == int(c.time_s[need])
    from datetime import UTC, datetime

    (period,), period_signals = inputs(
        "--start", datetime.fromtimestamp(start, UTC).strftime("%Y-%m-%dT%H:%M")
    )
    assert int(period.candles.time_s[0]) == start and len(period.candles) == len(c) - 1000
    got, want = period_signals["XRP/USD"].prob, whole_signals["XRP/USD"].prob[1000 - need :]
    np.testing.assert_array_equal(got, want)
    if strategy == "model":  # a prediction from the period's first candle on
        assert not np.isnan(got[0])


# --- warm-up that converges --------------------------------------------------------------------

DAY_S = 86_400
WARM_STRATEGY = [  # a strategy that trades the weak model's probabilities, ATR stops
    "strategy.confirm_momentum=false",
    "strategy.min_edge_pct=0",
    "strategy.buy_threshold=0.53",
    "strategy.sell_threshold=0.47",
    "strategy.stop_mode=atr",
    "risk.max_consecutive_losses=1000",
    "risk.max_daily_drawdown_pct=100",
    "risk.max_weekly_drawdown_pct=100",
    "risk.max_total_drawdown_pct=100",
]


def write_candles(c: CandleSeries, path: Any) -> Any:
    rows = zip(
        c.time_s.tolist(),
        c.open.tolist(),
        c.high.tolist(),
        c.low.tolist(),
        c.close.tolist(),
        c.volume.tolist(),
        c.trades.tolist(),
        strict=True,
    )
    path.write_text("".join(",".join(map(str, row)) + "\n" for row in rows))
    return path


@pytest.fixture(scope="module")
def long_history(tmp_path_factory: Any) -> dict[str, Any]:
    """Three months of the simulator's XRP/USD minutes, --start two days before their end, a
    model trained on their first days, and candle files beginning three months, one week and
    100 rows before --start."""
    from gal_friday.prediction.pipeline import train_from_candles
    from gal_friday.prediction.training import TrainSpec

    tmp = tmp_path_factory.mktemp("warmup")
    (data,) = synthetic_pairs(["XRP/USD"], seed=5, days=92)
    c = data.candles
    first = int(np.searchsorted(c.time_s, int(c.time_s[-1]) - 2 * DAY_S))
    week = int(np.searchsorted(c.time_s, int(c.time_s[first]) - 7 * DAY_S))
    train_from_candles(
        load_settings(None, {}),
        c.slice(0, 4000),
        tmp / "model",
        spec=TrainSpec(min_auc=0.0, min_brier_skill=None, rounds=20, folds=2),
        model_id="warm",
        progress=False,
    )
    return {
        "candles": c,
        "first": first,
        "model": tmp / "model",
        "files": {
            "three months": write_candles(c, tmp / "long.csv"),
            "one week": write_candles(c.slice(week, len(c)), tmp / "week.csv"),
            "100 rows": write_candles(c.slice(first - 100, len(c)), tmp / "short.csv"),
        },
    }


def warm_backtest(
    history: dict[str, Any], file: str, out: Any
) -> tuple[PairSignals, list[str], dict[str, Any], int]:
    """Backtest the model from --start on one of the files: the period's signals, the trades
    (trades.csv rows), metrics.json and the exit code."""
    import json
    from datetime import UTC, datetime

    from gal_friday.backtest import cli as backtest_cli
    from gal_friday.cli import settings_from_args

    start = int(history["candles"].time_s[history["first"]])
    parser = backtest_parser()
    args = parser.parse_args(
        [
            "backtest",
            "--pairs",
            "XRP/USD",
            "--candles",
            f"XRP/USD={history['files'][file]}",
            "--start",
            datetime.fromtimestamp(start, UTC).strftime("%Y-%m-%dT%H:%M"),
            "--no-progress",
            "--no-chart",
            "--out",
            str(out),
            "--set",
            f'prediction.models=["{history["model"]}"]',
            *(item for s in WARM_STRATEGY for item in ("--set", s)),
        ]
    )
    s = settings_from_args(args)
    (period,), signals, _, _ = backtest_cli.warmed_inputs(s, args)
    assert int(period.candles.time_s[0]) == start
    code = asyncio.run(backtest_cli.run(s, args))
    trades = (out / "trades.csv").read_text().splitlines()[1:]
    return signals["XRP/USD"], trades, json.loads((out / "metrics.json").read_text()), code


def test_a_backtest_from_start_does_not_depend_on_where_the_candle_file_begins(
    long_history: dict[str, Any], tmp_path: Any, in_tmp: Any, capsys: Any
) -> None:
    from gal_friday.backtest.report import iso

    c, first = long_history["candles"], long_history["first"]
    runs = {
        name: warm_backtest(long_history, name, tmp_path / name.replace(" ", "_"))
        for name in ("three months", "one week")
    }
    assert "converge" not in capsys.readouterr().out  # enough history: no warning
    # at --start the features are those of the whole three months: RSI, MACD and ATR have
    # forgotten where the file began (warmed on 34 rows, RSI was off by points and the MACD
    # histogram could have the wrong sign)
    reference = batch_candle_features(c, FeatureSettings()).values[first:]
    for signals, _, metrics, code in runs.values():
        assert code == 0
        np.testing.assert_allclose(signals.features, reference, rtol=1e-9, atol=1e-12)
        warmup = metrics["warmup"]["pairs"]["XRP/USD"]
        assert warmup["missing_rows"] == 0 and warmup["history_rows"] >= 7 * 1440 - 60
    # after the first day: the same signals and the same trades, bit for bit
    (long, long_trades, _, _), (week, week_trades, _, _) = runs.values()
    day = int(np.searchsorted(c.time_s[first:], int(c.time_s[first]) + DAY_S))
    np.testing.assert_array_equal(long.features[day:], week.features[day:])
    np.testing.assert_array_equal(long.prob[day:], week.prob[day:])
    after = iso((int(c.time_s[first]) + DAY_S) * 1_000_000_000)
    later = [
        [t for t in trades if t.split(",")[1] >= after] for trades in (long_trades, week_trades)
    ]
    assert later[0] == later[1] and len(later[0]) > 0


def test_too_little_history_to_converge_runs_and_says_how_many_rows_were_missing(
    long_history: dict[str, Any], tmp_path: Any, in_tmp: Any, capsys: Any
) -> None:
    _, _, metrics, code = warm_backtest(long_history, "100 rows", tmp_path / "r")
    assert code == 0
    assert metrics["warmup"]["rows_to_converge"] == 210
    assert metrics["warmup"]["pairs"]["XRP/USD"] == {"history_rows": 100, "missing_rows": 110}
    out = capsys.readouterr().out
    assert "XRP/USD has 100 rows of history before the period, 110 fewer than the 210" in out
