"""The skipping backtest equals the brute-force one: visiting every candle and publishing every
prediction (the strategy ignoring what its own gate refuses) gives the same fills, HALTs and
final portfolio as jumping to the next candle that can matter, over random configurations
(spread, queue share and intrabar rule included)."""

from __future__ import annotations

import asyncio
import random
from decimal import Decimal as D
from typing import Any

import numpy as np
import pytest

from gal_friday.backtest.classic import MarketStrategy
from gal_friday.backtest.data import PairData, synthetic_pairs
from gal_friday.backtest.engine import BacktestEngine, RunOutput
from gal_friday.backtest.signals import PairSignals
from gal_friday.config import Settings, load_settings

PAIRS = ("XRP/USD", "DOGE/USD")
DATA = synthetic_pairs(PAIRS, seed=11, days=1.5)


def random_settings(rng: random.Random) -> dict[str, Any]:
    sl = rng.choice(["0.2", "0.5", "1", "3"])
    return {
        "pairs": list(rng.choice([PAIRS, PAIRS[:1]])),
        "strategy": {
            "confirm_momentum": False,
            "min_edge_pct": 0,
            "buy_threshold": rng.choice([0.55, 0.6, 0.7]),
            "sell_threshold": rng.choice([0.3, 0.4, 0.45]),
            "stop_loss_pct": sl,
            "take_profit_pct": rng.choice(["0.8", "1", "2", "5"]),
            "max_holding_min": rng.choice([0, 5, 30, 240]),
            "exit_on_reversal": rng.random() < 0.7,
        },
        "execution": {
            "protective_orders": rng.random() < 0.7,
            "entry_timeout_s": rng.choice([30, 90, 600]),
            "entry_timeout_action": rng.choice(["cancel", "market"]),
        },
        "paper": {"latency_ms": rng.choice([1, 250, 2000]), "slippage_bps": rng.choice([0, 2])},
        "fees": {"maker_pct": "0.25", "taker_pct": "0.40"},
        "risk": {
            "max_consecutive_losses": rng.choice([2, 3, 1000]),
            "max_daily_drawdown_pct": rng.choice([1, 100]),
            "max_weekly_drawdown_pct": 100,
            "max_total_drawdown_pct": 100,
        },
        "backtest": {
            "intrabar": rng.choice(["pessimistic", "path"]),
            "half_spread_bps": dict.fromkeys(PAIRS, rng.choice([0, 1, 5])),
            "queue_share": rng.choice([0, "0.5", 1]),
        },
    }


def random_signals(rng: random.Random, data: list[PairData]) -> dict[str, PairSignals]:
    out = {}
    for d in data:
        n = len(d.candles.close)
        prob = np.array([rng.random() for _ in range(n)])
        prob[np.array([rng.random() < 0.5 for _ in range(n)])] = np.nan
        out[d.pair] = PairSignals(prob, (), np.empty((n, 0)), "m")
    return out


def run(
    settings: Settings,
    data: list[PairData],
    signals: dict[str, PairSignals],
    strategy: Any,
    *,
    exhaustive: bool,
    depth: str,
) -> RunOutput:
    kwargs = {"strategy": strategy} if strategy is not None else {}
    engine = BacktestEngine(
        settings,
        data,
        signals,
        capital=D(10000),
        depth=depth,  # type: ignore[arg-type]
        exhaustive=exhaustive,
        **kwargs,
    )
    return asyncio.run(engine.run())


def market(st: Settings, bus: Any) -> MarketStrategy:
    return MarketStrategy(
        st.strategy, st.fees, bus, pairs=st.pairs, venue_brackets=st.execution.protective_orders
    )


def both_ways(s: Settings, rng: random.Random) -> tuple[RunOutput, RunOutput]:
    """One random configuration's run skipping quiet candles, and visiting every candle."""
    data = [d for d in DATA if d.pair in s.pairs]
    signals = random_signals(rng, data)
    strategy = market if rng.random() < 0.5 else None
    depth = rng.choice(["volume", "unlimited"])
    fast = run(s, data, signals, strategy, exhaustive=False, depth=depth)
    every = run(s, data, signals, strategy, exhaustive=True, depth=depth)
    return fast, every


@pytest.mark.parametrize("seed", range(40))
def test_skipping_candles_changes_nothing(seed: int) -> None:
    rng = random.Random(seed)
    s = load_settings(None, random_settings(rng))
    fast, every = both_ways(s, rng)
    assert fast.fills, "a configuration that trades, or the comparison proves little"
    assert [(f.ts_ns, f.pair, f.side, f.qty, f.price, f.fee, f.order_type) for f in fast.fills] == [
        (f.ts_ns, f.pair, f.side, f.qty, f.price, f.fee, f.order_type) for f in every.fills
    ]
    assert (fast.final_cash, fast.final_equity, fast.fees_paid, fast.held) == (
        every.final_cash,
        every.final_equity,
        every.fees_paid,
        every.held,
    )
    assert fast.halts == every.halts
    assert fast.stats["entries_skipped_halted"] == every.stats["entries_skipped_halted"]
    assert fast.stats["ambiguous_exits"] == every.stats["ambiguous_exits"]
    assert [(f.liquidity, f.spread_cost) for f in fast.fills] == [
        (f.liquidity, f.spread_cost) for f in every.fills
    ]


@pytest.mark.parametrize("seed", [s for s in range(13) if s != 7])  # 7 meets no such candle
def test_skipping_candles_changes_nothing_when_candles_touch_both_barriers(seed: int) -> None:
    # brackets inside a minute's range: many exits fall on candles reaching the stop and the
    # target, where the intrabar rule decides
    rng = random.Random(1000 + seed)
    cfg = random_settings(rng)
    cfg["strategy"].update(stop_loss_pct=rng.choice(["0.02", "0.03"]), take_profit_pct="0.03")
    cfg["fees"] = {"maker_pct": 0, "taker_pct": 0}
    cfg["risk"].update(max_consecutive_losses=1000, max_daily_drawdown_pct=100)
    s = load_settings(None, cfg)
    fast, every = both_ways(s, rng)
    assert fast.stats["ambiguous_exits"] > 0, "no ambiguous candle: the comparison proves little"
    assert fast.stats["ambiguous_exits"] == every.stats["ambiguous_exits"]
    assert [(f.ts_ns, f.side, f.qty, f.price, f.order_type, f.liquidity) for f in fast.fills] == [
        (f.ts_ns, f.side, f.qty, f.price, f.order_type, f.liquidity) for f in every.fills
    ]
    assert (fast.final_cash, fast.held, fast.halts) == (every.final_cash, every.held, every.halts)
