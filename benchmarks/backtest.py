"""Backtest throughput, and an SMA 10/30 crossover in Gal-Friday's engine and in backtrader.

Usage: ``python benchmarks/backtest.py [--quick] [--candles-dir DIR] [--profile]``

1. SMA 10/30 crossover on the same candles in both engines, fills defined identically: market
   orders at the next candle's open, no fees, no slippage, no spread, unlimited liquidity
   (Gal-Friday: 1 ms latency, so an order sent at a candle's close reaches the next candle's
   open). The 50k run is timed again with the default spread model of ``[backtest]`` (bid and
   ask around the path, pessimistic intrabar rule), whose trades backtrader cannot match.
   Both engines' trades (entry and exit candle and price) are CHECKED to be the same. Run on
   real Kraken candles when ``--candles-dir`` holds ``XBTUSD_60.csv`` (Kraken's OHLCVT
   download; 50k hourly candles) and on 500k synthetic 1-minute candles; prints both
   throughputs, their ratio, and Gal-Friday's throughput at 50k versus 500k candles.
2. The LightGBM strategy over one year of 1-minute candles for two pairs (synthetic), with a
   model trained on earlier synthetic candles: features, batched predictions and the loop.
   Then the report's random baseline (200 random-entry runs with the same exits) on those
   cached candles, signals and trades, and its random runs for many more trades.

``--profile`` only prints where an SMA run's time goes, grouped by module (cProfile).

Last measured (2 cores, about +-10 % run to run): real XBT/USD hourly 101k candles/s vs
backtrader 20.0k (5.0x); synthetic 50k 117k vs 20.1k (5.8x); 500k 115k vs 20.7k (5.6x, 0.99
of the 50k rate); LightGBM year: features + predictions 3.86 s, loop 0.12 s, total 3.99 s.
With the spread model (README, "Tests and benchmarks"): about +4 % of the work per order,
the loop's figures within the machine's noise of those before it.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import tempfile
import time
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import numpy as np

from gal_friday.backtest.classic import MarketStrategy
from gal_friday.backtest.data import PairData, instrument_for, load_pairs
from gal_friday.backtest.runner import BacktestResult, run_backtest
from gal_friday.backtest.signals import default_builder, model_signals, sma_cross_signals
from gal_friday.candles import CandleSeries
from gal_friday.config import Settings, load_settings
from gal_friday.features.batch import linear_scan
from gal_friday.prediction.pipeline import train_from_candles
from gal_friday.prediction.service import load_models
from gal_friday.prediction.training import TrainSpec

START = 1_704_067_200  # 2024-01-01


def synthetic(n: int, seed: int, start_price: float = 2.0, decimals: int = 5) -> CandleSeries:
    """A random walk with clustered volatility as 1-minute OHLCV candles."""
    rng = np.random.default_rng(seed)
    vol = 0.0008 * np.exp(0.5 * linear_scan(0.999, rng.normal(0, 0.03, n)))  # AR(1) log-vol
    steps = rng.standard_t(5, (n, 4)) * vol[:, None] / 2
    path = start_price * np.exp(np.cumsum(steps.ravel())).reshape(n, 4)
    o = np.r_[start_price, path[:-1, 3]]
    c = path[:, 3]
    h = np.maximum(np.maximum(o, c), path.max(axis=1))
    low = np.minimum(np.minimum(o, c), path.min(axis=1))
    r = 10.0**decimals
    return CandleSeries(
        START + np.arange(n, dtype=np.int64) * 60,
        np.round(o * r) / r,
        np.round(h * r) / r,
        np.round(low * r) / r,
        np.round(c * r) / r,
        rng.lognormal(7, 1, n),
        np.ones(n, dtype=np.int64),
    )


def fill_gaps(c: CandleSeries, interval_s: int) -> CandleSeries:
    """Kraken omits intervals without trades; both engines get them back as flat candles at
    the previous close (no volume), so "the next candle's open" means the same in both."""
    slot = (c.time_s - c.time_s[0]) // interval_s
    n = int(slot[-1]) + 1
    src = np.maximum.accumulate(
        np.where(np.isin(np.arange(n), slot), np.searchsorted(slot, np.arange(n)), 0)
    )
    have = np.zeros(n, dtype=bool)
    have[slot] = True
    close = c.close[src]
    pick = lambda a: np.where(have, a[src], close)  # noqa: E731
    return CandleSeries(
        c.time_s[0] + np.arange(n, dtype=np.int64) * interval_s,
        pick(c.open),
        pick(c.high),
        pick(c.low),
        close,
        np.where(have, c.volume[src], 0.0),
        np.where(have, c.trades[src], 0),
    )


def sma_settings() -> Settings:
    return load_settings(
        None,
        {
            "pairs": ["XRP/USD"],
            "strategy": {
                "confirm_momentum": False,
                "max_holding_min": 0,
                "stop_loss_pct": "49",
                "take_profit_pct": "99",
                "min_edge_pct": 0,
            },
            "execution": {"protective_orders": False},
            "paper": {"latency_ms": 1, "slippage_bps": 0},
            "fees": {"maker_pct": 0, "taker_pct": 0},
            # backtrader's fills: at the path price (no spread), today's intrabar walk
            "backtest": {
                "half_spread_bps": {"XBT/USD": 0, "XRP/USD": 0},
                "intrabar": "path",
            },
            "risk": {
                "max_consecutive_losses": 10**9,
                "max_daily_drawdown_pct": 100,
                "max_weekly_drawdown_pct": 100,
                "max_total_drawdown_pct": 100,
            },
        },
    )


def gal_friday_sma(
    pair: str, candles: CandleSeries, interval_s: int, *, spread: bool = False
) -> tuple[float, list[tuple[int, int, float, float]]]:
    """Seconds (signals + run) and trades as (entry candle, exit candle, entry, exit);
    ``spread``: with the default ``[backtest]`` spread model instead of backtrader's fills."""
    s = sma_settings()
    if spread:
        s = s.model_copy(update={"backtest": type(s.backtest)()})
    data = [PairData(pair, candles, instrument_for(pair, candles), interval_s)]

    def strategy(st: Settings, bus: Any) -> MarketStrategy:
        return MarketStrategy(st.strategy, st.fees, bus, venue_brackets=True)

    started = time.perf_counter()
    signals = {pair: sma_cross_signals(candles, 10, 30)}
    result: BacktestResult = asyncio.run(
        run_backtest(
            s, data, signals, capital=Decimal(1_000_000), strategy=strategy, depth="unlimited"
        )
    )
    seconds = time.perf_counter() - started
    opens = candles.time_s * 1_000_000_000
    idx = lambda ts: int(np.searchsorted(opens, ts, "right")) - 1  # noqa: E731
    return seconds, [
        (idx(t.entry_ns), idx(t.exit_ns), float(t.entry_price), float(t.exit_price))
        for t in result.trades
    ]


def backtrader_sma(candles: CandleSeries) -> tuple[float, list[tuple[int, int, float, float]]]:
    import backtrader as bt

    rows = list(
        zip(
            candles.time_s.tolist(),
            candles.open.tolist(),
            candles.high.tolist(),
            candles.low.tolist(),
            candles.close.tolist(),
            candles.volume.tolist(),
            strict=True,
        )
    )

    class ArrayFeed(bt.feed.DataBase):  # type: ignore[misc]
        def start(self) -> None:
            super().start()
            self._rows = iter(rows)

        def _load(self) -> bool:
            row = next(self._rows, None)
            if row is None:
                return False
            t, o, h, low, c, v = row
            lines = self.lines
            lines.datetime[0] = bt.date2num(datetime.fromtimestamp(t, UTC).replace(tzinfo=None))
            lines.open[0], lines.high[0], lines.low[0], lines.close[0] = o, h, low, c
            lines.volume[0], lines.openinterest[0] = v, 0.0
            return True

    fills: list[tuple[int, bool, float]] = []

    class Sma(bt.Strategy):  # type: ignore[misc]
        def __init__(self) -> None:
            self.cross = bt.ind.CrossOver(
                bt.ind.SMA(self.data.close, period=10), bt.ind.SMA(self.data.close, period=30)
            )

        def next(self) -> None:
            if not self.position and self.cross[0] > 0:
                self.buy(size=1)
            elif self.position and self.cross[0] < 0:
                self.close()

        def notify_order(self, order: Any) -> None:
            if order.status == order.Completed:
                fills.append((len(self) - 1, order.isbuy(), order.executed.price))

    cerebro = bt.Cerebro(stdstats=False)
    cerebro.adddata(ArrayFeed())
    cerebro.addstrategy(Sma)
    cerebro.broker.setcash(1e12)
    started = time.perf_counter()
    cerebro.run()
    seconds = time.perf_counter() - started
    trades = [
        (b[0], s[0], b[2], s[2])
        for b, s in zip(fills[::2], fills[1::2], strict=False)
        if b[1] and not s[1]
    ]
    return seconds, trades


def compare(
    label: str, pair: str, candles: CandleSeries, interval_s: int, with_backtrader: bool
) -> float:
    n = len(candles)
    gf_s, gf_trades = gal_friday_sma(pair, candles, interval_s)
    print(
        f"{label}: {n:,} candles, {len(gf_trades):,} trades; Gal-Friday {n / gf_s:,.0f} candles/s",
        end="",
    )
    if not with_backtrader:
        print()
        return n / gf_s
    bt_s, bt_trades = backtrader_sma(candles)
    same = gf_trades == bt_trades
    print(
        f"; backtrader {n / bt_s:,.0f} candles/s; ratio {bt_s / gf_s:.1f}x; "
        f"trades identical: {same}"
    )
    if not same:
        diff = (
            next(i for i, (a, b) in enumerate(zip(gf_trades, bt_trades, strict=False)) if a != b)
            if gf_trades and bt_trades
            else 0
        )
        print(
            f"  first difference at trade {diff}: gal-friday "
            f"{gf_trades[diff : diff + 1]} backtrader {bt_trades[diff : diff + 1]} "
            f"(counts {len(gf_trades)} / {len(bt_trades)})"
        )
        raise SystemExit(1)
    return n / gf_s


def lightgbm_year(days: int) -> None:
    """The model strategy over ``days`` of 1-minute candles for XRP/USD and DOGE/USD."""
    settings = load_settings(None, {"pairs": ["XRP/USD", "DOGE/USD"]})
    n = days * 1440
    pairs = [
        ("XRP/USD", synthetic(n + 20_000, 11, 2.0, 5)),
        ("DOGE/USD", synthetic(n + 20_000, 12, 0.18, 7)),
    ]
    with tempfile.TemporaryDirectory() as tmp:
        spec = TrainSpec(min_auc=0.0, min_brier_skill=None, rounds=100, folds=2)
        train = pairs[0][1].slice(0, 20_000)  # trained on the candles before the backtest
        train_from_candles(settings, train, Path(tmp), spec=spec, model_id="bench", progress=False)
        models = load_models([Path(tmp)], None, default_builder(settings.features)(train).names)
        data = [
            PairData(p, c.slice(20_000, n + 20_000), instrument_for(p, c), 60) for p, c in pairs
        ]
        started = time.perf_counter()
        build = default_builder(settings.features)
        signals = {d.pair: model_signals(d.candles, models, "mean", build) for d in data}
        prepared = time.perf_counter()
        result = asyncio.run(run_backtest(settings, data, signals, capital=Decimal(10_000)))
        done = time.perf_counter()
        total = sum(len(d.candles) for d in data)
        print(
            f"LightGBM strategy, {days} days x 2 pairs = {total:,} candles: features + "
            f"predictions {prepared - started:.2f} s, loop {done - prepared:.2f} s, total "
            f"{done - started:.2f} s ({total / (done - started):,.0f} candles/s); "
            f"{result.stats['decisions']:,} decisions, {result.metrics['trades']} trades"
        )
        random_baseline(settings, data, signals, result, "the model's")
        busy_baseline(settings, data, signals, 0.55)


def busy_baseline(
    settings: Settings, data: list[PairData], signals: dict[str, Any], threshold: float
) -> None:
    """The random runs' cost for many trades, without the engine's run of them (which takes
    minutes on the spread model's thin candles): the strategy's trades are its replayed
    entries at every probability above ``threshold`` once flat, then 200 random runs of as
    many."""
    from gal_friday.backtest.baseline import Market, Rules, candidates, random_runs, replay

    rules = Rules.of(settings, Decimal(10_000))
    rng = np.random.default_rng(0)
    took, trades = 0.0, 0
    for d in data:
        m = Market(d, signals[d.pair], rules)
        cand = candidates(m, rules)
        want = cand[signals[d.pair].prob[cand] > threshold]
        decide, free = [], 0
        while (j := int(np.searchsorted(want, free))) < len(want):
            one = replay(m, want[j : j + 1], rules)
            decide.append(int(want[j]))
            if one.exit_candle[0] < 0:
                break
            free = int(one.exit_candle[0])
        own = replay(m, np.array(decide, dtype=np.int64), rules)
        trades += len(decide)
        started = time.perf_counter()
        random_runs(m, own, rules, 200, rng)
        took += time.perf_counter() - started
    print(
        f"  random runs, 200 seeds, {trades:,} trades (replayed entries above {threshold}): "
        f"{took:.2f} s (aim: at most 30 s)"
    )


def random_baseline(
    settings: Settings,
    data: list[PairData],
    signals: dict[str, Any],
    result: BacktestResult,
    label: str,
) -> None:
    """The report's baseline (buy-and-hold, 200 random-entry runs with the same exits) on a
    run's cached candles, signals and trades."""
    from gal_friday.backtest.baseline import chance_report, ordinal

    started = time.perf_counter()
    notes, _ = chance_report(
        settings,
        data,
        signals,
        dict(result.metrics),
        result.trades,
        result.stats,
        capital=Decimal(10_000),
        seeds=200,
    )
    took = time.perf_counter() - started
    base = notes["baseline"]
    pct = base["random_percentile"]
    print(
        f"  random baseline, 200 seeds, {label} {result.metrics['trades']:,} trades: "
        f"{took:.2f} s (aim: at most 30 s); strategy at the "
        f"{'n/a' if pct is None else ordinal(pct)} percentile, replay of its trades "
        f"{base['replay']['mean_abs_diff_bps'] or 0:.3f} bps from the engine's per trade"
    )


_GROUPS = (  # where the time of a round trip goes: the backtest's own code, or the live modules
    ("backtest engine and bus", ("gal_friday/backtest/",)),
    ("strategy", ("gal_friday/strategy.py",)),
    ("risk", ("gal_friday/risk.py",)),
    ("portfolio", ("gal_friday/portfolio.py",)),
    ("execution handler", ("gal_friday/execution/handler.py", "gal_friday/execution/venue.py")),
    ("paper venue and matching engine", ("gal_friday/execution/paper.py", "gal_friday/sim/")),
    ("events and domain types", ("gal_friday/events.py", "gal_friday/domain.py")),
    ("asyncio", ("/asyncio/",)),
)


def profile_sma(candles: CandleSeries) -> None:
    """Where an SMA run's time goes (cProfile's own-time per function, grouped; the profiler
    slows everything, so the shares matter, not the seconds)."""
    import cProfile
    import pstats

    profiler = cProfile.Profile()
    profiler.enable()
    _, trades = gal_friday_sma("XRP/USD", candles, 60)
    profiler.disable()
    own: dict[str, float] = {}
    stats: Any = pstats.Stats(profiler).stats
    for (path, _, _), (_, _, tottime, _, _) in stats.items():
        group = next(
            (name for name, keys in _GROUPS if any(k in path for k in keys)),
            "other (numpy, Decimal, builtins, logging)",
        )
        own[group] = own.get(group, 0.0) + tottime
    total = sum(own.values())
    print(f"where the time goes ({len(candles):,} candles, {len(trades):,} round trips, profiled):")
    for group, seconds in sorted(own.items(), key=lambda kv: -kv[1]):
        print(f"  {group:<42} {seconds / total:6.1%}")
    engine = own.get(_GROUPS[0][0], 0.0) + own.get("asyncio", 0.0)
    print(
        f"  with a backtest engine costing nothing, the same run would be at most "
        f"{total / (total - engine):.2f}x faster"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="skip backtrader at 500k")
    parser.add_argument("--candles-dir", type=Path, default=Path("/work/shared/data/kraken_ohlcvt"))
    parser.add_argument("--days", type=int, default=365)
    parser.add_argument("--model-only", action="store_true", help="only the LightGBM run")
    parser.add_argument(
        "--profile", action="store_true", help="only where the SMA run's time goes, by module"
    )
    args = parser.parse_args()
    logging.disable(logging.WARNING)
    if args.profile:
        profile_sma(synthetic(50_000, 3))
        return
    if args.model_only:
        lightgbm_year(args.days)
        return
    real = args.candles_dir / "XBTUSD_60.csv"
    if real.is_file():
        (xbt,) = load_pairs({"XBT/USD": real})
        candles = fill_gaps(xbt.candles, xbt.interval_s)
        compare(
            "real Kraken XBT/USD hourly (gaps filled)", "XBT/USD", candles, xbt.interval_s, True
        )
    big = synthetic(500_000, 3)
    small_rate = compare("synthetic 50k", "XRP/USD", big.slice(0, 50_000), 60, True)
    spread_s, _ = gal_friday_sma("XRP/USD", big.slice(0, 50_000), 60, spread=True)
    print(f"synthetic 50k with the spread model: Gal-Friday {50_000 / spread_s:,.0f} candles/s")
    large_rate = compare("synthetic 500k", "XRP/USD", big, 60, not args.quick)
    print(
        f"Gal-Friday throughput 500k vs 50k: {large_rate / small_rate:.2f} "
        f"({'within' if abs(large_rate / small_rate - 1) <= 0.2 else 'OUTSIDE'} 20 %)"
    )
    lightgbm_year(args.days)


if __name__ == "__main__":
    main()
