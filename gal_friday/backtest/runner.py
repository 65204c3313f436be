"""One backtest end to end: signals for every pair, the engine, then round trips and metrics.

``run_backtest`` is what ``gal-friday backtest`` and the benchmark call; its result holds
everything the report writes. The same inputs give an identical result: the engine's clock is
simulated, the matching engine is deterministic and the bus delivers in a fixed order.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from typing import TYPE_CHECKING, Any, Literal

import numpy as np

from gal_friday.backtest.data import NS, PairData
from gal_friday.backtest.engine import (
    BacktestEngine,
    Fill,
    Halt,
    Progress,
    RunOutput,
)
from gal_friday.backtest.metrics import (
    Trade,
    compute_metrics,
    equity_curve,
    execution_costs,
    exposure_fraction,
    round_trips,
)
from gal_friday.backtest.signals import PairSignals
from gal_friday.candles import FloatArray, IntArray
from gal_friday.config import Settings
from gal_friday.wiring import StrategyFactory, default_strategy

if TYPE_CHECKING:
    from gal_friday.backtest.recording import RecordingRun


@dataclass
class BacktestResult:
    """Everything a report needs; ``metrics`` is JSON-ready."""

    pairs: tuple[str, ...]
    start_ns: int
    end_ns: int
    times_ns: IntArray
    equity: FloatArray
    trades: list[Trade]
    fills: list[Fill]
    metrics: dict[str, Any]
    stats: dict[str, Any] = field(default_factory=dict)
    open_positions: dict[str, str] = field(default_factory=dict)
    halts: list[Halt] = field(default_factory=list)  # from the first on, entries are refused


def candle_grid(data: Sequence[PairData]) -> IntArray:
    """The run's time axis: the first open, then every candle end of every pair."""
    # each pair's ends are sorted: a stable sort merges the runs in linear time, which beats
    # np.unique's hashing on a million candles
    ends = np.sort(
        np.concatenate([d.candles.time_s * NS + d.interval_s * NS for d in data]), kind="stable"
    )
    ends = ends[np.r_[True, ends[1:] != ends[:-1]]] if len(ends) else ends
    first = min(int(d.candles.time_s[0]) for d in data) * NS
    grid: IntArray = np.concatenate(([first], ends)).astype(np.int64)
    return grid


async def run_backtest(
    settings: Settings,
    data: Sequence[PairData],
    signals: dict[str, PairSignals],
    *,
    capital: Decimal,
    strategy: StrategyFactory = default_strategy,
    depth: Literal["volume", "unlimited"] = "volume",
    progress: Progress | None = None,
) -> BacktestResult:
    """Run the engine over ``data`` and compute the report's figures."""
    started = time.perf_counter()
    engine = BacktestEngine(
        settings, data, signals, capital=capital, strategy=strategy, depth=depth, progress=progress
    )
    out = await engine.run()
    loop_s = time.perf_counter() - started
    # why entries the strategy's gate admitted were not proposed (``skipped_<reason>``), beside
    # the engine's ``rejected_<check>`` of risk: a run with few trades says why
    for reason, n in sorted(getattr(engine.strategy, "skipped", {}).items()):
        out.stats["skipped_" + reason.replace(" ", "_")] = n
    grid = candle_grid(data)
    closes = {d.pair: (d.candles.time_s * NS + d.interval_s * NS, d.candles.close) for d in data}
    equity = equity_curve(grid, capital, out.fills, closes)
    equity[0] = float(capital)
    return backtest_result(
        settings, tuple(d.pair for d in data), grid, equity, out, capital=capital, loop_s=loop_s
    )


def backtest_result(
    settings: Settings,
    pairs: tuple[str, ...],
    times: IntArray,
    equity: FloatArray,
    out: RunOutput | RecordingRun,
    *,
    capital: Decimal,
    loop_s: float,
) -> BacktestResult:
    """A run's fills, curve and counters as the report's figures (both runners)."""
    trades = round_trips(out.fills)
    start, end = int(times[0]), int(times[-1])
    metrics = compute_metrics(
        times,
        equity,
        trades,
        capital=capital,
        final_equity=out.final_equity,
        fees=out.fees_paid,
        exposure=exposure_fraction(out.fills, start, end),
        risk_free_pct=float(settings.backtest.risk_free_rate_pct),
    )
    metrics.update(execution_costs(out.fills))
    # exits on candles reaching both a stop and a target (a recording has no such guess)
    metrics["ambiguous_exits"] = out.stats.get("ambiguous_exits")
    stats: dict[str, Any] = {**out.stats, "loop_seconds": round(loop_s, 3)}
    return BacktestResult(
        pairs,
        start,
        end,
        times,
        equity,
        trades,
        out.fills,
        metrics,
        stats,
        {pair: str(qty) for pair, qty in sorted(out.held.items())},
        out.halts,
    )
