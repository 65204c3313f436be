"""Candle features over a whole series with numpy: training, backtests and audits.

Produces exactly the table the incremental path (``incremental.CandleFeatureState``) yields
row by row, NaN warm-up included; the tests hold them to 1e-9. Recursive smoothers (EMA,
Wilder) are first-order linear recurrences, computed with a parallel prefix scan (log2(n)
vectorised passes, no division, no growing powers), so they stay as exact as the loop.
Rolling windows use exact per-window sums and two-pass variances.

Only candle features are here: candle files hold neither a book nor taker sides, so the book
and trade-flow features exist only live. The research CSV therefore has the candle columns
only, the same columns a model trained on it may use.
"""

from __future__ import annotations

import csv
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import numpy.typing as npt
from numpy.lib.stride_tricks import sliding_window_view
from scipy.signal import lfilter  # type: ignore[import-untyped]

from gal_friday.candles import CandleSeries, FloatArray, IntArray, read_candles
from gal_friday.config import FeatureSettings
from gal_friday.features.names import candle_feature_names
from gal_friday.folders import make_folder


@dataclass(frozen=True)
class FeatureTable:
    """Rows of features: ``values[i, j]`` is feature ``names[j]`` of the candle at ``time_s[i]``
    (the interval's start, unix seconds)."""

    time_s: IntArray
    names: tuple[str, ...]
    values: FloatArray

    def __len__(self) -> int:
        return len(self.time_s)

    def column(self, name: str) -> FloatArray:
        return self.values[:, self.names.index(name)]


def batch_candle_features(series: CandleSeries, s: FeatureSettings) -> FeatureTable:
    """Candle features of every row of ``series`` (rows without volume are not rows)."""
    keep = (series.volume > 0.0) & (series.low > 0.0)  # as incremental.is_feature_row
    high, low = series.high[keep], series.low[keep]
    close, volume = series.close[keep], series.volume[keep]
    n = len(close)
    columns = [
        rsi(close, s.rsi_period),
        *macd(close, s.macd_fast, s.macd_slow, s.macd_signal),
        *bollinger(close, s.bb_period, s.bb_k),
        vwap_distance(high, low, close, volume, s.vwap_window),
        *(rate_of_change(close, lookback) for lookback in s.roc_lookbacks),
        *atr(high, low, close, s.atr_period),
        volatility(close, s.volatility_window),
    ]
    values = np.column_stack(columns) if columns else np.empty((n, 0))
    return FeatureTable(series.time_s[keep], candle_feature_names(s), values)


# --- the recurrences -------------------------------------------------------------------------


def linear_scan(decay: float, drive: FloatArray) -> FloatArray:
    """``y[0] = drive[0]``, ``y[i] = decay * y[i-1] + drive[i]``, run in C by
    ``scipy.signal.lfilter``: the same sequential float operations as the live smoother's
    ``y = (1 - gain) * y + gain * x``, in one pass."""
    return np.asarray(lfilter([1.0], [1.0, -decay], drive), dtype=np.float64)


def seeded_smooth(x: FloatArray, n: int, gain: float, start: int = 0) -> FloatArray:
    """``SeededSmoother`` over ``x[start:]``: mean of the first ``n`` values, then
    ``y = (1 - gain) * y + gain * x``; NaN before the seed is complete."""
    out = np.full(len(x), np.nan)
    first = start + n - 1
    if first >= len(x):
        return out
    total = 0.0
    for value in x[start : first + 1].tolist():  # the same summation order as the live seed
        total += value
    drive = gain * x[first:]
    drive[0] = total / n
    out[first:] = linear_scan(1.0 - gain, drive)
    return out


def ema(x: FloatArray, n: int, start: int = 0) -> FloatArray:
    return seeded_smooth(x, n, 2.0 / (n + 1), start)


def wilder(x: FloatArray, n: int, start: int = 0) -> FloatArray:
    return seeded_smooth(x, n, 1.0 / n, start)


# --- indicators --------------------------------------------------------------------------------


def rsi(close: FloatArray, period: int) -> FloatArray:
    """Wilder's RSI: smoothed gains over smoothed gains + losses, in percent."""
    change = np.diff(close, prepend=np.nan)
    gain = wilder(np.where(change > 0.0, change, 0.0), period, start=1)
    loss = wilder(np.where(change < 0.0, -change, 0.0), period, start=1)
    total = gain + loss
    with np.errstate(invalid="ignore", divide="ignore"):
        value = np.where(total > 0.0, 100.0 * gain / total, 50.0)
    value[np.isnan(total)] = np.nan
    return value


def macd(close: FloatArray, fast: int, slow: int, signal: int) -> list[FloatArray]:
    """MACD line, signal and histogram as percentages of the slow EMA (the PPO form)."""
    slow_ema = ema(close, slow)
    line = 100.0 * (ema(close, fast) - slow_ema) / slow_ema
    signal_line = ema(line, signal, start=slow - 1)
    return [line, signal_line, line - signal_line]


def _windows(x: FloatArray, n: int) -> FloatArray:
    return sliding_window_view(x, n)


_CHUNK = 4096  # windows per block in rolling_variance: its temporaries stay in the cache


def rolling_variance(x: FloatArray, n: int, ddof: int) -> FloatArray:
    """Two-pass variance of each window of ``n`` ending at each row; exactly 0 when flat."""
    out = np.full(len(x), np.nan)
    if len(x) < n:
        return out
    windows = _windows(x, n)
    m2 = np.empty(len(windows))
    for i in range(0, len(windows), _CHUNK):  # cache-sized blocks: same sums, 3x faster
        block = windows[i : i + _CHUNK]
        dev = block - block.mean(axis=1)[:, None]
        m2[i : i + _CHUNK] = np.einsum("ij,ij->i", dev, dev)
    out[n - 1 :] = np.where(_flat(x, n) | (m2 <= 0.0), 0.0, m2 / (n - ddof))
    return out


def _flat(x: FloatArray, n: int) -> npt.NDArray[np.bool_]:
    """Whether each window of ``n`` holds one value only (no change between neighbours;
    NaN never equals itself, so a window with NaN is not flat)."""
    changes = np.concatenate(([0], np.cumsum(x[1:] != x[:-1])))
    return changes[n - 1 :] - changes[: len(x) - n + 1] == 0  # type: ignore[no-any-return]


def rolling_mean(x: FloatArray, n: int) -> FloatArray:
    out = np.full(len(x), np.nan)
    if len(x) >= n:
        out[n - 1 :] = _windows(x, n).mean(axis=1)
    return out


def rolling_sum(x: FloatArray, n: int) -> FloatArray:
    out = np.full(len(x), np.nan)
    if len(x) >= n:
        out[n - 1 :] = _windows(x, n).sum(axis=1)
    return out


def bollinger(close: FloatArray, period: int, k: float) -> list[FloatArray]:
    """%b and bandwidth of bands ``mean +- k * std`` (population std, as Bollinger defines)."""
    mean = rolling_mean(close, period)
    std = np.sqrt(rolling_variance(close, period, ddof=0))
    width = 2.0 * k * std
    collapsed = std <= 0.0
    with np.errstate(invalid="ignore", divide="ignore"):
        pctb = np.where(collapsed, 0.5, (close - (mean - k * std)) / width)
        bandwidth = np.where(collapsed, 0.0, width / mean)
    pctb[np.isnan(std)] = np.nan
    bandwidth[np.isnan(std)] = np.nan
    return [pctb, bandwidth]


def vwap_distance(
    high: FloatArray, low: FloatArray, close: FloatArray, volume: FloatArray, window: int
) -> FloatArray:
    """Close's distance from the rolling VWAP of typical prices, in percent of the VWAP."""
    typical = (high + low + close) / 3.0
    turnover = rolling_sum(typical * volume, window)
    shares = rolling_sum(volume, window)
    with np.errstate(invalid="ignore", divide="ignore"):
        vwap = np.where(shares > 0.0, turnover / shares, np.nan)
        return 100.0 * (close - vwap) / vwap


def rate_of_change(close: FloatArray, lookback: int) -> FloatArray:
    """Percent change of the close over ``lookback`` rows."""
    out = np.full(len(close), np.nan)
    if len(close) > lookback:
        out[lookback:] = 100.0 * (close[lookback:] / close[:-lookback] - 1.0)
    return out


def atr(high: FloatArray, low: FloatArray, close: FloatArray, period: int) -> list[FloatArray]:
    """Wilder's average true range, in price units and in percent of the close."""
    prev = np.concatenate(([np.nan], close[:-1]))
    with np.errstate(invalid="ignore"):
        true_range = np.fmax(high - low, np.fmax(np.abs(high - prev), np.abs(low - prev)))
    value = wilder(true_range, period)
    return [value, 100.0 * value / close]


def volatility(close: FloatArray, window: int) -> FloatArray:
    """Sample standard deviation of the last ``window`` one-row log returns."""
    out = np.full(len(close), np.nan)
    if len(close) > 1:
        returns = np.log(close[1:] / close[:-1])
        out[1:] = np.sqrt(rolling_variance(returns, window, ddof=1))
    return out


# --- files --------------------------------------------------------------------------------------


def write_feature_table(candles_path: Path, out_csv: Path, s: FeatureSettings) -> int:
    """Write the candle features of a candle file as CSV; returns the rows written.

    Header ``time_s`` then ``candle_feature_names(s)``; one row per candle with volume, NaN
    (warm-up) as an empty field, floats in shortest round-trip form. Book and trade-flow
    columns are absent: candle files hold neither. Raises ``CandleFileError`` for a bad file.
    """
    table = batch_candle_features(read_candles(candles_path), s)
    make_folder(out_csv.parent, "feature table folder")
    tmp = out_csv.with_name(out_csv.name + ".tmp")
    with tmp.open("w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(("time_s", *table.names))
        for t, row in zip(table.time_s.tolist(), table.values.tolist(), strict=True):
            writer.writerow((t, *("" if math.isnan(v) else repr(v) for v in row)))
    tmp.replace(out_csv)  # never leave a half-written table under the real name
    return len(table)


def read_feature_table(path: Path) -> FeatureTable:
    """Read a table written by ``write_feature_table`` (empty fields are NaN)."""
    with path.open(newline="") as fh:
        reader = csv.reader(fh)
        header = next(reader)
        rows = [row for row in reader if row]
    if not header or header[0] != "time_s":
        raise ValueError(f"{path}: not a feature table (first column must be time_s)")
    times = np.array([int(row[0]) for row in rows], dtype=np.int64)
    values = np.array(
        [[float(v) if v else np.nan for v in row[1:]] for row in rows], dtype=np.float64
    ).reshape(len(rows), len(header) - 1)
    return FeatureTable(times, tuple(header[1:]), values)
