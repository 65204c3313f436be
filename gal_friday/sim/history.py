"""Plausible back-history (trades, hence minute candles) for REST ``Trades`` and ``OHLC``.

A bot warms its models up from the last hours of candles and may page through recent trades,
so the simulator needs a past before its live market starts. Generating a day of prints one
order at a time would take seconds; this cheaper model works per minute with numpy: a
GARCH(1,1) volatility with fat-tailed shocks and slow regime switches drives the minute
log-returns, the print count per minute rises with volatility, and prints scatter around the
minute's path on the side of the spread their taker hit. The path is anchored so that it ends
exactly at the price where the live market opens.
"""

from __future__ import annotations

import math
import zlib
from dataclasses import dataclass

import numpy as np

from gal_friday.sim.instruments import MarketProfile, SimInstrument

NS_PER_S = 1_000_000_000
NS_PER_MIN = 60 * NS_PER_S
_REGIMES = np.array([0.6, 1.0, 2.2])  # calm, normal, hot: volatility multipliers
_REGIME_STAY = 0.985  # per minute: regimes last about an hour on average


@dataclass(frozen=True, slots=True)
class History:
    """Generated prints, sorted by strictly increasing time, scaled integers."""

    ts_ns: np.ndarray
    price: np.ndarray
    qty: np.ndarray
    buy: np.ndarray
    market: np.ndarray


def history_rng(seed: int, symbol: str) -> np.random.Generator:
    """One generator per pair derived from the run's seed (stable across Python runs)."""
    return np.random.default_rng([seed, zlib.crc32(symbol.encode()), 1])


def _volatility(rng: np.random.Generator, minutes: int) -> np.ndarray:
    """Per-minute volatility multipliers with clustering: GARCH(1,1) times a regime."""
    alpha, beta = 0.08, 0.90
    shocks = rng.standard_t(5, minutes) / math.sqrt(5 / 3)
    switches = rng.random(minutes)
    picks = rng.integers(0, len(_REGIMES), minutes)
    scale = np.empty(minutes)
    h, regime = 1.0, 1
    for i in range(minutes):
        if switches[i] > _REGIME_STAY:
            regime = int(picks[i])
        scale[i] = math.sqrt(h) * _REGIMES[regime]
        h = (1 - alpha - beta) + alpha * (shocks[i] ** 2) * h + beta * h
    return scale * shocks  # signed, unit-variance-ish returns before scaling


def _quantities(rng: np.random.Generator, n: int, typical: float, qp: int) -> np.ndarray:
    """Lognormal sizes; a third are whole units, some two-decimal, the rest full precision."""
    size = typical * rng.lognormal(0.0, 1.0, n)
    style = rng.random(n)
    size = np.where(
        style < 0.35,
        np.maximum(np.round(size), 1.0),
        np.where(style < 0.5, np.round(size, 2), size),
    )
    scaled: np.ndarray = np.maximum(np.round(size * 10**qp).astype(np.int64), 1)
    return scaled


def generate_history(
    inst: SimInstrument, seed: int, end_ns: int, hours: float, end_price: int | None = None
) -> History:
    """Prints of the ``hours`` before ``end_ns`` ending at ``end_price`` (scaled; default
    the profile's start price)."""
    profile = inst.profile
    if profile is None or hours <= 0:
        empty = np.zeros(0, dtype=np.int64)
        return History(empty, empty, empty, empty.astype(bool), empty.astype(bool))
    rng = history_rng(seed, inst.symbol)
    first_min = (end_ns - int(hours * 3600 * NS_PER_S)) // NS_PER_MIN
    minutes = end_ns // NS_PER_MIN - first_min + 1
    unit = 10.0**inst.price_precision
    end = end_price if end_price is not None else inst.price_scaled(profile.start_price)
    returns = _volatility(rng, minutes) * (profile.daily_volatility / math.sqrt(1440))
    log_path = np.concatenate(([0.0], np.cumsum(returns)))
    log_path += math.log(end / unit) - log_path[-1]
    intensity = np.abs(returns) / (profile.daily_volatility / math.sqrt(1440))
    counts = rng.poisson(profile.trades_per_minute * (0.4 + 0.6 * np.minimum(intensity, 4.0)))
    return _prints(rng, inst, profile, first_min, end_ns, log_path, returns, counts)


def _prints(
    rng: np.random.Generator,
    inst: SimInstrument,
    profile: MarketProfile,
    first_min: int,
    end_ns: int,
    log_path: np.ndarray,
    returns: np.ndarray,
    counts: np.ndarray,
) -> History:
    """Scatter each minute's prints in time and price around the minute's path."""
    minute = np.repeat(np.arange(len(counts)), counts)
    frac = rng.random(len(minute))
    ts = (first_min + minute) * NS_PER_MIN + (frac * NS_PER_MIN).astype(np.int64)
    order = np.argsort(ts, kind="stable")
    ts, minute, frac = ts[order], minute[order], frac[order]
    keep = ts < end_ns
    ts, minute, frac = ts[keep], minute[keep], frac[keep]
    # strictly increasing nanoseconds: t'[i] = max(t[i], t'[i-1] + 1)
    idx = np.arange(len(ts))
    ts = np.maximum.accumulate(ts - idx) + idx
    step = returns[np.minimum(minute, len(returns) - 1)]
    sigma = profile.daily_volatility / math.sqrt(1440)
    buy = (step / sigma * 0.5 + rng.standard_normal(len(ts))) > 0
    log_px = log_path[minute] + (log_path[minute + 1] - log_path[minute]) * frac
    log_px += rng.standard_normal(len(ts)) * sigma * 0.15
    unit = 10.0**inst.price_precision
    half_spread = profile.grain_ticks * inst.tick * (0.5 + rng.random(len(ts)))
    price = np.round(np.exp(log_px) * unit + np.where(buy, half_spread, -half_spread))
    price = (np.maximum(price, inst.tick) // inst.tick * inst.tick).astype(np.int64)
    typical = float(profile.typical_qty)
    qty = _quantities(rng, len(ts), typical * 0.6, inst.qty_precision)
    market = rng.random(len(ts)) < 0.6
    return History(ts.astype(np.int64), price, qty, buy, market)
