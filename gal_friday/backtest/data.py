"""Market data for a backtest: candles per pair, from files, downloads or the simulator.

Sources, each giving one ``CandleSeries`` per pair:

* ``--candles FILE`` (one per pair, ``PAIR=FILE`` or in ``--pairs`` order): Kraken's OHLCVT
  CSV layout, read by ``gal_friday.candles.read_candles``;
* the files ``gal-friday download`` writes (``data/XRPUSD_1.csv``) when no file is named;
* the simulator's synthetic history (``gal_friday.sim.history``), aggregated to candles, so a
  backtest runs offline with nothing downloaded.

Exchange rules (tick, lot, minimums) come from the simulator's instrument table, which holds
Kraken's published values for XRP/USD and DOGE/USD; other pairs get rules inferred from the
candles (price decimals from the prices, no minimums), which is enough for research.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path

import numpy as np

from gal_friday.candles import CandleFileError, CandleSeries, read_candles
from gal_friday.domain import InstrumentSpec
from gal_friday.sim.history import generate_history
from gal_friday.sim.instruments import INSTRUMENTS

NS = 1_000_000_000


@dataclass(frozen=True)
class PairData:
    """One pair's candles (float arrays, in time order) and its exchange rules."""

    pair: str
    candles: CandleSeries
    instrument: InstrumentSpec
    interval_s: int


def interval_of(series: CandleSeries) -> int:
    """The candle interval in seconds: the most common gap between rows (gaps are absent
    intervals, so the smallest frequent difference is the interval)."""
    if len(series) < 2:
        return 60
    gaps = np.diff(series.time_s)
    values, counts = np.unique(gaps, return_counts=True)
    return int(values[np.argmax(counts)])


def price_decimals(series: CandleSeries, limit: int = 10) -> int:
    """Fewest decimals that write every price exactly (within float noise)."""
    prices = np.concatenate([series.open, series.high, series.low, series.close])[:200_000]
    for d in range(limit + 1):
        scaled = prices * 10.0**d
        if np.all(np.abs(scaled - np.round(scaled)) <= 1e-9 * np.maximum(1.0, np.abs(scaled))):
            return d
    return limit


def instrument_for(pair: str, series: CandleSeries) -> InstrumentSpec:
    """Kraken's rules for the pair when known, else rules inferred from its prices."""
    sim = INSTRUMENTS.get(pair)
    if sim is not None:
        return sim.spec
    pp = price_decimals(series)
    return InstrumentSpec(
        pair, pp, 8, Decimal(1).scaleb(-pp), Decimal("1e-8"), Decimal("1e-8"), Decimal(0)
    )


def clip_range(series: CandleSeries, start_s: int | None, end_s: int | None) -> CandleSeries:
    """Candles whose interval starts in ``[start_s, end_s)``."""
    lo = 0 if start_s is None else int(np.searchsorted(series.time_s, start_s, "left"))
    hi = len(series) if end_s is None else int(np.searchsorted(series.time_s, end_s, "left"))
    return series.slice(lo, hi)


def load_pairs(
    files: Mapping[str, Path], *, start_s: int | None = None, end_s: int | None = None
) -> list[PairData]:
    """Read one candle file per pair and cut it to the date range."""
    out = []
    for pair, path in files.items():
        series = clip_range(read_candles(path), start_s, end_s)
        if len(series) == 0:
            raise CandleFileError(f"{path}: no candles for {pair} in the requested range")
        out.append(PairData(pair, series, instrument_for(pair, series), interval_of(series)))
    check_one_interval(out)
    return out


def check_one_interval(data: Sequence[PairData]) -> None:
    """Pairs backtested together need candles of one interval: the engine replays the candles
    that end at the same time together, and a longer candle would be replayed after the
    shorter ones inside it had already moved the clock on."""
    intervals = {d.interval_s for d in data}
    if len(intervals) > 1:
        listed = ", ".join(f"{d.pair} {d.interval_s} s" for d in data)
        raise CandleFileError(
            f"the pairs' candles have different intervals ({listed}); give "
            "candle files of one interval"
        )


def candle_files(pairs: Sequence[str], given: Sequence[str], data_dir: Path) -> dict[str, Path]:
    """``PAIR=FILE`` items, bare files in pair order, or the download's default files."""
    from gal_friday.download import default_output

    files: dict[str, Path] = {}
    bare = [g for g in given if "=" not in g]
    for item in given:
        pair, eq, path = item.partition("=")
        if eq:
            files[pair.strip()] = Path(path.strip())
    if bare and len(bare) != len(pairs):
        raise CandleFileError(
            f"{len(bare)} candle files for {len(pairs)} pairs; name them as "
            "PAIR=FILE or give one per pair in --pairs order"
        )
    for pair, path in zip(pairs, bare, strict=False):
        files.setdefault(pair, Path(path))
    for pair in pairs:
        files.setdefault(pair, default_output(data_dir, pair))
    return {pair: files[pair] for pair in pairs}


def synthetic_pairs(
    pairs: Sequence[str], *, seed: int, days: float, end_s: int = 1_767_225_600
) -> list[PairData]:
    """The simulator's synthetic back-history as 1-minute candles (offline backtests)."""
    out = []
    for pair in pairs:
        inst = INSTRUMENTS.get(pair)
        if inst is None:
            raise CandleFileError(f"the simulator has no synthetic market for {pair}")
        history = generate_history(inst, seed, end_s * NS, hours=days * 24)
        series = _minute_candles(
            history.ts_ns, history.price, history.qty, inst.price_precision, inst.qty_precision
        )
        out.append(PairData(pair, series, instrument_for(pair, series), 60))
    return out


def _minute_candles(
    ts_ns: np.ndarray, price: np.ndarray, qty: np.ndarray, pp: int, qp: int
) -> CandleSeries:
    """Aggregate prints (scaled integers, time order) into 1-minute OHLCV candles."""
    minute = ts_ns // (60 * NS)
    starts = np.flatnonzero(np.r_[True, minute[1:] != minute[:-1]])
    ends = np.r_[starts[1:], len(minute)]
    px = price.astype(np.float64) / 10.0**pp
    return CandleSeries(
        time_s=(minute[starts] * 60).astype(np.int64),
        open=px[starts],
        high=np.maximum.reduceat(px, starts),
        low=np.minimum.reduceat(px, starts),
        close=px[ends - 1],
        volume=np.add.reduceat(qty.astype(np.float64), starts) / 10.0**qp,
        trades=(ends - starts).astype(np.int64),
    )
