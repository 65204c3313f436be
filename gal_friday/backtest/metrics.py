"""Performance figures of a run: equity curve, round trips and the report's metrics.

Conventions (each stated because backtesters differ on them):

* The equity curve is cash plus every held quantity at its pair's latest close, sampled at
  the end of every candle; it starts at the initial capital at the first candle's open.
* Returns for Sharpe and Sortino are those of the curve resampled at a fixed period (daily
  when the run spans at least ten days, else hourly), annualised with 365 days a year (crypto
  trades every day). The risk-free rate is compounded down to the period. Sharpe divides by
  the sample standard deviation (ddof 1); Sortino by the downside deviation
  ``sqrt(mean(min(r - rf, 0) ** 2))`` over all periods. Undefined values are None.
* Maximum drawdown in value and in percent are each the largest over the curve (they may
  occur at different times); the percentage is of the running peak.
* A trade is a round trip from flat to flat in one pair; its P&L is sell proceeds minus buy
  cost minus every fee of both legs. Win rate counts P&L > 0. Profit factor is gross profit
  over gross loss (None when nothing was lost).
* Exposure time is the share of the run's time with any position held.
* Execution costs: the maker share of entries (buy fills) and of exits (sell fills: spot and
  long-only) is by quantity; the spread cost is what taker fills paid over the mid, half the
  spread of the book they took times their quantity (maker fills pay none).
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

import numpy as np

from gal_friday.backtest.engine import Fill
from gal_friday.candles import FloatArray, IntArray
from gal_friday.events import Side

NS = 1_000_000_000
_ZERO = Decimal(0)


@dataclass(frozen=True, slots=True)
class Trade:
    """One round trip (flat to flat) in one pair; money in the quote currency."""

    pair: str
    entry_ns: int
    exit_ns: int
    qty: Decimal
    entry_price: Decimal  # volume-weighted over the buy fills
    exit_price: Decimal
    fees: Decimal
    pnl: Decimal
    exit_type: str  # order type of the closing fill: stop-loss, take-profit or market


def round_trips(fills: Sequence[Fill]) -> list[Trade]:
    """Closed round trips, in the order they closed (open positions are not trades)."""
    open_: dict[str, list[Fill]] = {}
    held: dict[str, Decimal] = {}
    out = []
    for f in fills:
        legs = open_.setdefault(f.pair, [])
        legs.append(f)
        held[f.pair] = held.get(f.pair, _ZERO) + (f.qty if f.side is Side.BUY else -f.qty)
        if held[f.pair] == 0:
            out.append(_trade(legs))
            open_[f.pair] = []
    return out


def _trade(legs: list[Fill]) -> Trade:
    buys = [f for f in legs if f.side is Side.BUY]
    sells = [f for f in legs if f.side is Side.SELL]
    qty = sum((f.qty for f in buys), _ZERO)
    cost = sum((f.qty * f.price for f in buys), _ZERO)
    proceeds = sum((f.qty * f.price for f in sells), _ZERO)
    fees = sum((f.fee for f in legs), _ZERO)
    return Trade(
        legs[0].pair,
        legs[0].ts_ns,
        legs[-1].ts_ns,
        qty,
        cost / qty,
        proceeds / qty,
        fees,
        proceeds - cost - fees,
        str(legs[-1].order_type),
    )


def equity_curve(
    times_ns: IntArray,
    capital: Decimal,
    fills: Sequence[Fill],
    closes: Mapping[str, tuple[IntArray, FloatArray]],
) -> FloatArray:
    """Equity at each of ``times_ns``: cash after the fills before it, plus each pair's held
    quantity at its latest close (``closes[pair] = (candle end times, closes)``)."""
    fill_ts = np.array([f.ts_ns for f in fills], dtype=np.int64)
    cash = [capital]
    for f in fills:
        notional = f.qty * f.price
        cash.append(cash[-1] + (-notional if f.side is Side.BUY else notional) - f.fee)
    cash_f = np.array([float(c) for c in cash])
    after = np.searchsorted(fill_ts, times_ns, side="right")
    equity = cash_f[after]
    for pair, (ends, close) in closes.items():
        mine = [f for f in fills if f.pair == pair]
        if not mine:
            continue
        ts = np.array([f.ts_ns for f in mine], dtype=np.int64)
        # summed exactly: float sums of partial fills leave 1e-17 of a closed position, which
        # would move a flat curve and give it a Sharpe ratio
        held = np.array(
            [
                float(q)
                for q in itertools.accumulate(
                    (f.qty if f.side is Side.BUY else -f.qty for f in mine), initial=_ZERO
                )
            ]
        )
        qty = held[np.searchsorted(ts, times_ns, side="right")]
        j = np.searchsorted(ends, times_ns, side="right") - 1
        price = np.where(j >= 0, close[np.maximum(j, 0)], 0.0)
        equity = equity + qty * price
    return equity


def exposure_fraction(fills: Sequence[Fill], start_ns: int, end_ns: int) -> float:
    """Share of ``[start_ns, end_ns]`` during which any pair had a position."""
    held: dict[str, Decimal] = {}
    busy, since = 0, None
    for f in fills:
        was = any(held.values())
        held[f.pair] = held.get(f.pair, _ZERO) + (f.qty if f.side is Side.BUY else -f.qty)
        now = any(held.values())
        if now and not was:
            since = f.ts_ns
        elif was and not now and since is not None:
            busy += f.ts_ns - since
    if any(held.values()) and since is not None:
        busy += end_ns - since
    span = end_ns - start_ns
    return busy / span if span > 0 else 0.0


def period_returns(times_ns: IntArray, equity: FloatArray, period_ns: int) -> FloatArray:
    """Returns between the equity at consecutive period ends (the first at the start)."""
    if len(times_ns) == 0:
        return np.zeros(0)
    first = int(times_ns[0]) // period_ns * period_ns
    bounds = np.arange(first + period_ns, int(times_ns[-1]) + period_ns, period_ns)
    idx = np.searchsorted(times_ns, bounds, side="right") - 1
    samples = np.concatenate(([equity[0]], equity[np.maximum(idx, 0)]))
    return samples[1:] / samples[:-1] - 1.0


def sharpe_sortino(
    returns: FloatArray, periods_per_year: float, risk_free_pct: float
) -> tuple[float | None, float | None]:
    if len(returns) < 2:
        return None, None
    rf = (1.0 + risk_free_pct / 100.0) ** (1.0 / periods_per_year) - 1.0
    excess = returns - rf
    scale = math.sqrt(periods_per_year)
    std = float(np.std(excess, ddof=1))
    downside = math.sqrt(float(np.mean(np.minimum(excess, 0.0) ** 2)))
    mean = float(np.mean(excess))
    return (
        mean / std * scale if std > 0 else None,
        mean / downside * scale if downside > 0 else None,
    )


def drawdown(equity: FloatArray) -> tuple[float, float]:
    """Largest drawdown in value and in percent of the running peak."""
    if len(equity) == 0:
        return 0.0, 0.0
    peak = np.maximum.accumulate(equity)
    dd = peak - equity
    with np.errstate(invalid="ignore", divide="ignore"):
        pct = np.where(peak > 0, dd / peak, 0.0)
    return float(dd.max()), float(pct.max()) * 100.0


def execution_costs(fills: Sequence[Fill]) -> dict[str, float | None]:
    """Maker share of entries and of exits in percent (None without any) and spread cost."""

    def maker_pct(side: Side) -> float | None:
        qty = sum((f.qty for f in fills if f.side is side), _ZERO)
        maker = sum((f.qty for f in fills if f.side is side and f.liquidity == "maker"), _ZERO)
        return float(maker / qty * 100) if qty else None

    return {
        "maker_entries_pct": maker_pct(Side.BUY),
        "maker_exits_pct": maker_pct(Side.SELL),
        "spread_cost": float(sum((f.spread_cost for f in fills), _ZERO)),
    }


def compute_metrics(
    times_ns: IntArray,
    equity: FloatArray,
    trades: Sequence[Trade],
    *,
    capital: Decimal,
    final_equity: Decimal,
    fees: Decimal,
    exposure: float,
    risk_free_pct: float = 0.0,
    period_s: int | None = None,
) -> dict[str, Any]:
    """Every figure of the report, as JSON-ready values (floats, None when undefined)."""
    span_s = (int(times_ns[-1]) - int(times_ns[0])) / NS if len(times_ns) else 0.0
    period = period_s or (86_400 if span_s >= 10 * 86_400 else 3_600)
    sharpe, sortino = sharpe_sortino(
        period_returns(times_ns, equity, period * NS), 365 * 86_400 / period, risk_free_pct
    )
    dd_value, dd_pct = drawdown(equity)
    pnls = [t.pnl for t in trades]
    wins = [p for p in pnls if p > 0]
    gross_profit = sum(wins, _ZERO)
    gross_loss = -sum((p for p in pnls if p < 0), _ZERO)
    return {
        "initial_capital": float(capital),
        "final_equity": float(final_equity),
        "total_return_pct": float((final_equity / capital - 1) * 100),
        "sharpe": sharpe,
        "sortino": sortino,
        "return_period_s": period,
        "max_drawdown": dd_value,
        "max_drawdown_pct": dd_pct,
        "trades": len(trades),
        "win_rate_pct": len(wins) / len(trades) * 100 if trades else None,
        "profit_factor": float(gross_profit / gross_loss) if gross_loss > 0 else None,
        "avg_pnl_per_trade": float(sum(pnls, _ZERO) / len(pnls)) if pnls else None,
        "exposure_time_pct": exposure * 100,
        "fees_paid": float(fees),
    }
