"""Chance as the baseline of a backtest (``backtest.baseline``): the replay of the engine's
exits agrees with the engine, random entries are unremarkable and a look-ahead cheat is not,
buy-and-hold and the break-even hit rate by hand, the report's keys and lines, and why a run
made no trades. Synthetic candles; no files beyond tmp_path, no network."""

from __future__ import annotations

import argparse
import asyncio
import json
from decimal import Decimal as D
from typing import Any

import numpy as np
import pytest

from gal_friday.backtest import baseline as bl
from gal_friday.backtest.classic import MarketStrategy
from gal_friday.backtest.data import PairData, instrument_for, synthetic_pairs
from gal_friday.backtest.runner import BacktestResult, run_backtest
from gal_friday.backtest.signals import PairSignals
from gal_friday.candles import CandleSeries
from gal_friday.config import Settings, load_settings

PAIRS = ["XRP/USD", "DOGE/USD"]
NO_HALTS = {
    "max_consecutive_losses": 10**6,
    "max_daily_drawdown_pct": 100,
    "max_weekly_drawdown_pct": 100,
    "max_total_drawdown_pct": 100,
}


def settings(**sections: dict[str, Any]) -> Settings:
    base: dict[str, Any] = {
        "pairs": PAIRS,
        "strategy": {"confirm_momentum": False},
        "risk": NO_HALTS,
    }
    for key, value in sections.items():
        base[key] = {**base.get(key, {}), **value}
    return load_settings(None, base)


def market(days: float = 5, seed: int = 7) -> list[PairData]:
    return synthetic_pairs(PAIRS, seed=seed, days=days)


def random_signals(
    data: list[PairData], seed: int, rate: float = 0.01, *, atr: bool = False
) -> dict[str, PairSignals]:
    """Entries at random candles (prob 0.9), a reversal now and then (prob 0.1); with
    ``atr`` an ``atr_14`` feature of 0.1 % to 0.6 % of the close (some brackets then clear
    the fee check, some do not)."""
    rng = np.random.default_rng(seed)
    out = {}
    for d in data:
        n = len(d.candles)
        u = rng.random(n)
        prob = np.where(u < rate, 0.9, np.where(u > 1 - rate / 4, 0.1, 0.5))
        if atr:
            values = (d.candles.close * rng.uniform(0.001, 0.006, n))[:, None]
            out[d.pair] = PairSignals(prob, ("atr_14",), values, "random")
        else:
            out[d.pair] = PairSignals(prob, (), np.empty((n, 0)), "random")
    return out


def cheating_signals(data: list[PairData]) -> dict[str, PairSignals]:
    """Look-ahead: 0.9 where the price rises 1 % within the next half hour before it falls."""
    out = {}
    for d in data:
        c = d.candles
        n = len(c)
        prob = np.full(n, 0.5)
        for i in range(0, n - 31, 7):
            ahead_hi = c.high[i + 2 : i + 31]
            ahead_lo = c.low[i + 2 : i + 31]
            up = np.flatnonzero(ahead_hi >= c.close[i] * 1.012)
            down = np.flatnonzero(ahead_lo <= c.close[i] * 0.994)
            if len(up) and (not len(down) or up[0] < down[0]):
                prob[i] = 0.9
        out[d.pair] = PairSignals(prob, (), np.empty((n, 0)), "cheat")
    return out


def market_strategy(st: Settings, bus: Any) -> MarketStrategy:
    return MarketStrategy(st.strategy, st.fees, bus, venue_brackets=st.execution.protective_orders)


def backtest(
    s: Settings, data: list[PairData], signals: dict[str, PairSignals], **kw: Any
) -> BacktestResult:
    return asyncio.run(run_backtest(s, data, signals, capital=D(10000), **kw))


def against(
    s: Settings,
    data: list[PairData],
    signals: dict[str, PairSignals],
    result: BacktestResult,
    seeds: int = 200,
    market_entry: bool = False,
) -> tuple[dict[str, Any], list[str]]:
    return bl.chance_report(
        s,
        data,
        signals,
        result.metrics,
        result.trades,
        result.stats,
        capital=D(10000),
        seeds=seeds,
        market_entry=market_entry,
    )


# --- the replay against the engine -------------------------------------------------------------


@pytest.mark.parametrize(
    ("sections", "market_entry"),
    [
        ({}, False),  # percent bracket, 60-minute holding limit, reversal exits
        ({"strategy": {"max_holding_min": 0, "stop_loss_pct": 1, "take_profit_pct": 2}}, False),
        ({"strategy": {"exit_on_reversal": False, "max_holding_min": 20}}, False),
        ({"execution": {"protective_orders": False}}, False),  # the strategy watches its bracket
        ({}, True),  # at market, without the fee check (the sma strategy)
        ({"strategy": {"stop_mode": "atr"}}, False),  # ATR brackets, some refused for fees
        ({"backtest": {"intrabar": "path", "queue_share": 0}}, False),
    ],
)
def test_the_replay_reproduces_the_engines_trades_on_the_strategys_own_entries(
    sections: dict[str, Any], market_entry: bool
) -> None:
    s = settings(**sections)
    data = market()
    signals = random_signals(
        data, 3, atr="strategy" in sections and "stop_mode" in sections["strategy"]
    )
    kw = {"strategy": market_strategy} if market_entry else {}
    result = backtest(s, data, signals, **kw)
    assert result.metrics["trades"] > 30
    notes, _ = against(s, data, signals, result, seeds=0, market_entry=market_entry)
    rep = notes["baseline"]["replay"]
    assert rep["replayed"] == rep["trades"] == result.metrics["trades"]
    assert rep["mean_abs_diff_bps"] < 0.5
    assert rep["net_bps_per_trade"] == pytest.approx(rep["engine_net_bps_per_trade"], abs=0.2)
    assert rep["total_return_pct"] == pytest.approx(result.metrics["total_return_pct"], abs=0.05)


def test_a_replay_far_from_the_engine_is_said_on_the_console() -> None:
    from dataclasses import replace

    s = settings()
    thin = [  # candles too thin for the orders: the engine fills them partially
        replace(d, candles=replace(d.candles, volume=d.candles.volume / 3000)) for d in market(2)
    ]
    signals = random_signals(thin, 3, rate=0.02)
    result = backtest(s, thin, signals)
    notes, lines = against(s, thin, signals, result, seeds=20)
    rep = notes["baseline"]["replay"]
    assert rep["mean_abs_diff_bps"] > bl.REPLAY_GAP_BPS or rep["replayed"] < rep["trades"]
    (note,) = [line for line in lines if line.startswith("note: the replay")]
    assert f"{rep['replayed']:,} of the {rep['trades']:,} trades" in note
    data = market(2)  # the simulator's own volumes: no note
    signals = random_signals(data, 3, rate=0.02)
    result = backtest(s, data, signals)
    assert not [line for line in against(s, data, signals, result, seeds=20)[1] if "note:" in line]


# --- the null ------------------------------------------------------------------------------------


def test_random_entries_are_unremarkable_and_a_look_ahead_cheat_tops_the_null() -> None:
    s = settings()
    percentiles = []
    for k in range(8):  # strategies entering at random: their percentiles are spread around 50
        data = market(days=4, seed=200 + k)  # each its own market: independent draws
        signals = random_signals(data, 100 + k)
        result = backtest(s, data, signals)
        base = against(s, data, signals, result)[0]["baseline"]
        # the null makes the strategy's number of trades
        assert base["random"]["trades_per_run"] == pytest.approx(result.metrics["trades"], rel=0.03)
        percentiles.append(
            (
                base["random_percentile"],
                base["random_percentile_per_trade"],
                base["random_percentile_gross_per_trade"],
            )
        )
    total, per_trade, gross = np.array(percentiles).T
    for each in (total, per_trade, gross):
        assert 25 <= each.mean() <= 75, percentiles
    assert total.min() < 50 < total.max() and np.count_nonzero(total >= 95) <= 1, percentiles
    data = market(days=4, seed=11)
    signals = cheating_signals(data)
    result = backtest(s, data, signals)
    notes, lines = against(s, data, signals, result)
    base = notes["baseline"]
    assert base["random_percentile"] >= 99 and base["random_percentile_per_trade"] >= 99
    assert base["random_percentile_gross_per_trade"] >= 99
    assert base["beats_chance"] is True
    (chance,) = [line for line in lines if line.startswith("chance: ")]
    assert chance.endswith(": beats chance") and "NOT" not in chance


def test_the_null_is_the_same_for_the_same_inputs() -> None:
    s = settings()
    data = market(days=2)
    signals = random_signals(data, 1)
    result = backtest(s, data, signals)
    first, _ = against(s, data, signals, result, seeds=50)
    again, _ = against(s, data, signals, result, seeds=50)
    assert first == again


# --- figures by hand -----------------------------------------------------------------------------


def test_buy_and_hold_equals_a_hand_computation() -> None:
    def pair(name: str, prices: list[float]) -> PairData:
        n = len(prices)
        p = np.array(prices)
        c = CandleSeries(
            np.arange(n, dtype=np.int64) * 60 + 1_700_000_040,
            p,
            p * 1.01,
            p * 0.99,
            np.r_[p[1:], p[-1] * 1.5],
            np.full(n, 1e6),
            np.ones(n, dtype=np.int64),
        )
        return PairData(name, c, instrument_for(name, c), 60)

    data = [pair("XRP/USD", [2.0, 2.1, 2.2]), pair("DOGE/USD", [0.2, 0.19, 0.18])]
    fee = 0.004
    equity = 0.0
    for first_open, last_close in ((2.0, 3.3), (0.2, 0.27)):
        qty = 5000 / (first_open * (1 + fee))  # half the capital, the fee paid on top
        equity += qty * last_close * (1 - fee)
    assert bl.buy_and_hold_pct(data, 0.4) == pytest.approx((equity / 10000 - 1) * 100, rel=1e-12)


def test_the_break_even_hit_rate_gives_zero_expectancy() -> None:
    stop, target, cost = 0.005, 0.01, 0.0067
    p = bl.breakeven_hit_rate(stop, target, cost)
    assert p == pytest.approx((0.005 + 0.0067) / 0.015)
    assert p is not None and p * (target - cost) - (1 - p) * (stop + cost) == pytest.approx(0)
    assert bl.breakeven_hit_rate(0, 0, 0.01) is None


def test_percentile_counts_ties_half() -> None:
    null = np.array([1.0, 2.0, 3.0, 4.0])
    assert bl.percentile(0.0, null) == 0.0
    assert bl.percentile(2.0, null) == 37.5
    assert bl.percentile(9.0, null) == 100.0


# --- why nothing traded --------------------------------------------------------------------------


def test_a_run_below_the_threshold_says_so_with_the_highest_probability() -> None:
    s = settings()
    data = market(days=1)
    signals = {
        d.pair: PairSignals(
            np.linspace(0.3, 0.61 if d.pair == "XRP/USD" else 0.55, len(d.candles)),
            (),
            np.empty((len(d.candles), 0)),
            "m",
        )
        for d in data
    }
    result = backtest(s, data, signals)
    assert result.metrics["trades"] == 0
    notes, lines = against(s, data, signals, result)
    w = notes["why"]
    assert w["buy_threshold"] == 0.65
    assert w["pairs"]["XRP/USD"]["max_prob"] == pytest.approx(0.61)
    assert w["pairs"]["XRP/USD"]["above_threshold"] == 0
    text = "\n".join(lines)
    assert "why 0 trade(s)" in text and "XRP/USD 0.610" in text and "0.65" in text
    assert "no prediction passed the threshold" in text
    assert notes["baseline"]["random_percentile"] is None
    assert result.metrics["net_bps_per_trade"] is None


def test_entries_the_strategy_refused_are_counted_by_reason() -> None:
    s = settings(strategy={"confirm_momentum": True})  # no momentum feature: every entry skipped
    data = market(days=1)
    signals = random_signals(data, 2, rate=0.02)
    result = backtest(s, data, signals)
    assert result.metrics["trades"] == 0
    notes, lines = against(s, data, signals, result)
    skipped = notes["why"]["skipped_by_strategy"]
    assert skipped["no momentum confirmation"] == result.stats["skipped_no_momentum_confirmation"]
    assert skipped["no momentum confirmation"] > 10
    assert any(
        "the strategy skipped" in line and "no momentum confirmation" in line for line in lines
    )
    s = settings(fees={"maker_pct": 1, "taker_pct": 1})  # the target cannot clear the fees
    result = backtest(s, data, signals)
    notes, _ = against(s, data, signals, result)
    assert notes["why"]["skipped_by_strategy"]["take-profit does not clear round-trip fees"] > 10


# --- the command ---------------------------------------------------------------------------------


def command(tmp_path: Any, *options: str) -> argparse.Namespace:
    from gal_friday.backtest import cli as backtest_cli
    from gal_friday.cli import _common_options

    parser = argparse.ArgumentParser()
    backtest_cli.add_parser(parser.add_subparsers(dest="command"), _common_options())
    return parser.parse_args(
        [
            "backtest",
            "--synthetic",
            "2",
            "--strategy",
            "sma",
            "--no-progress",
            "--no-chart",
            "--out",
            str(tmp_path / "r"),
            *options,
        ]
    )


def test_metrics_json_and_the_console_carry_the_baseline(
    tmp_path: Any, in_tmp: Any, capsys: Any
) -> None:
    from gal_friday.backtest import cli as backtest_cli
    from gal_friday.cli import settings_from_args

    args = command(tmp_path, "--baseline-seeds", "50")
    assert asyncio.run(backtest_cli.run(settings_from_args(args), args)) == 0
    doc = json.loads((tmp_path / "r" / "metrics.json").read_text())
    m, base = doc["metrics"], doc["baseline"]
    assert m["trades"] > 0
    assert isinstance(base["buy_hold_return_pct"], float)
    assert 0 <= base["random_percentile"] <= 100 and base["seeds"] == 50
    assert m["gross_bps_per_trade"] - m["net_bps_per_trade"] > 0  # fees cost something
    assert 0 < m["breakeven_hit_rate"] < 1
    assert base["replay"]["replayed"] == m["trades"]
    out = capsys.readouterr().out
    assert out.count("chance: the strategy's return is at the ") == 1
    assert "buy-and-hold of the same pairs" in out and "bps before fees" in out


def test_thresholds_above_every_probability_say_why_nothing_traded(
    tmp_path: Any, in_tmp: Any, capsys: Any
) -> None:
    from gal_friday.backtest import cli as backtest_cli
    from gal_friday.cli import settings_from_args
    from gal_friday.prediction.pipeline import train_from_candles
    from gal_friday.prediction.training import TrainSpec

    (history,) = synthetic_pairs(["XRP/USD"], seed=3, days=1)
    train_from_candles(
        load_settings(None, {}),
        history.candles.slice(0, 800),
        tmp_path / "model",
        spec=TrainSpec(min_auc=0.0, min_brier_skill=None, rounds=20, folds=2),
        model_id="tiny",
        progress=False,
    )
    args = command(  # the last --strategy given wins
        tmp_path,
        "--strategy",
        "model",
        "--pairs",
        "XRP/USD",
        "--set",
        f'prediction.models=["{tmp_path / "model"}"]',
        "--set",
        "strategy.buy_threshold=0.99",
    )
    assert asyncio.run(backtest_cli.run(settings_from_args(args), args)) == 0
    doc = json.loads((tmp_path / "r" / "metrics.json").read_text())
    assert doc["metrics"]["trades"] == 0
    why = doc["why"]
    top = why["pairs"]["XRP/USD"]["max_prob"]
    assert why["buy_threshold"] == 0.99 and 0 < top < 0.99
    assert why["pairs"]["XRP/USD"]["above_threshold"] == 0
    out = capsys.readouterr().out
    assert (
        "why 0 trade(s): the highest probability reached, against buy_threshold 0.99: "
        f"XRP/USD {top:.3f} (0 candles above); no prediction passed the threshold"
    ) in " ".join(out.split())
    assert "chance: no trades" in out


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("abc", "--baseline-seeds must be a whole number of runs, got 'abc'"),
        ("-3", "--baseline-seeds must be 0 or more, got '-3'"),
        ("2.5", "--baseline-seeds must be a whole number of runs, got '2.5'"),
    ],
)
def test_a_bad_baseline_seeds_gets_one_line_and_exit_2(
    tmp_path: Any, in_tmp: Any, capsys: Any, value: str, message: str
) -> None:
    from gal_friday.backtest import cli as backtest_cli
    from gal_friday.cli import settings_from_args

    args = command(tmp_path, "--baseline-seeds", value)
    assert asyncio.run(backtest_cli.run(settings_from_args(args), args)) == 2
    out = capsys.readouterr().out
    assert out.count("\n") == 1 and out.startswith("gal-friday: ") and message in out
    assert not (tmp_path / "r").exists()
