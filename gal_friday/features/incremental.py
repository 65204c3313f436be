"""Candle features updated one closed candle at a time, in O(1), with plain Python floats.

This is the live path: no history is recomputed. Smoothed averages (EMA, Wilder) keep one
running value; rolling windows keep a ring buffer with running sums. Running sums drift by
rounding as values enter and leave, so every window recomputes its sums exactly each time the
ring wraps (O(window) once per ``window`` updates: O(1) amortised), and the rolling variance is
updated Welford-style (add / replace) rather than from a sum of squares, which would cancel
catastrophically for prices near 1 with tiny variance. A window whose values are all equal
has variance exactly 0 (tracked by the run length of equal values), as in the batch path.

``gal_friday.features.batch`` computes the same numbers over a whole series with numpy; the
tests hold the two to 1e-9.
"""

from __future__ import annotations

import math
from collections import deque

from gal_friday.config import FeatureSettings

NAN = math.nan


def is_feature_row(low: float, volume: float) -> bool:
    """A candle is a row of the feature series only if something traded in it.

    Kraken's history files omit empty intervals, so the live series skips them too: training
    and live then see the same rows. Gaps in time are otherwise ignored: rows are consecutive.
    A non-positive price is corrupt data, not a market, and is skipped by the same rule.
    """
    return volume > 0.0 and low > 0.0


class SeededSmoother:
    """``y = decay * y + gain * x``, seeded with the mean of the first ``n`` inputs.

    With ``gain = 2 / (n + 1)`` this is the classic EMA; with ``gain = 1 / n``, Wilder's
    smoothing (RSI, ATR). NaN until the seed is complete.
    """

    __slots__ = ("count", "decay", "gain", "n", "total", "value")

    def __init__(self, n: int, gain: float) -> None:
        self.n = n
        self.gain = gain
        self.decay = 1.0 - gain
        self.count = 0
        self.total = 0.0
        self.value = NAN

    def push(self, x: float) -> float:
        if self.count < self.n:
            self.count += 1
            self.total += x
            if self.count == self.n:
                self.value = self.total / self.n
            return self.value
        self.value = self.decay * self.value + self.gain * x
        return self.value


def ema(n: int) -> SeededSmoother:
    return SeededSmoother(n, 2.0 / (n + 1))


def wilder(n: int) -> SeededSmoother:
    return SeededSmoother(n, 1.0 / n)


class RollingStats:
    """Mean and variance of the last ``n`` values (Welford add / replace, exact resync)."""

    __slots__ = ("buf", "count", "last", "m2", "mean", "n", "pos", "run")

    def __init__(self, n: int) -> None:
        self.n = n
        self.buf = [0.0] * n
        self.count = 0
        self.pos = 0
        self.mean = 0.0
        self.m2 = 0.0
        self.run = 0
        self.last = NAN

    @property
    def full(self) -> bool:
        return self.count == self.n

    def push(self, x: float) -> None:
        self.run = self.run + 1 if x == self.last else 1
        self.last = x
        if self.count < self.n:
            self.buf[self.count] = x
            self.count += 1
            delta = x - self.mean
            self.mean += delta / self.count
            self.m2 += delta * (x - self.mean)
            return
        old = self.buf[self.pos]
        self.buf[self.pos] = x
        self.pos = (self.pos + 1) % self.n
        if self.pos == 0:
            self._resync()
            return
        old_mean = self.mean
        self.mean = old_mean + (x - old) / self.n
        self.m2 += (x - old) * (x - self.mean + old - old_mean)

    def _resync(self) -> None:
        """Exact two-pass mean and M2, so rounding from the running updates cannot build up."""
        mean = sum(self.buf) / self.n
        self.mean = mean
        self.m2 = sum((v - mean) * (v - mean) for v in self.buf)

    def variance(self, ddof: int) -> float:
        """Population (ddof 0) or sample (ddof 1) variance; exactly 0 for a flat window."""
        if self.run >= self.n or self.m2 <= 0.0:
            return 0.0
        return self.m2 / (self.n - ddof)


class RollingSums:
    """Sums of two series over the last ``n`` rows (here price * volume and volume)."""

    __slots__ = ("a", "b", "buf_a", "buf_b", "count", "n", "pos")

    def __init__(self, n: int) -> None:
        self.n = n
        self.buf_a = [0.0] * n
        self.buf_b = [0.0] * n
        self.count = 0
        self.pos = 0
        self.a = 0.0
        self.b = 0.0

    @property
    def full(self) -> bool:
        return self.count == self.n

    def push(self, a: float, b: float) -> None:
        pos = self.pos
        self.a += a - self.buf_a[pos]
        self.b += b - self.buf_b[pos]
        self.buf_a[pos] = a
        self.buf_b[pos] = b
        self.pos = (pos + 1) % self.n
        if self.count < self.n:
            self.count += 1
        if self.pos == 0:  # exact sums once per turn of the ring: no drift
            self.a = sum(self.buf_a)
            self.b = sum(self.buf_b)


class CandleFeatureState:
    """Every candle feature of one pair, updated per closed candle (see ``candle_feature_names``
    for the order of the returned values)."""

    def __init__(self, s: FeatureSettings) -> None:
        self.rsi_gain = wilder(s.rsi_period)
        self.rsi_loss = wilder(s.rsi_period)
        self.ema_fast = ema(s.macd_fast)
        self.ema_slow = ema(s.macd_slow)
        self.ema_signal = ema(s.macd_signal)
        self.bands = RollingStats(s.bb_period)
        self.bb_k = s.bb_k
        self.vwap = RollingSums(s.vwap_window)
        self.roc_lookbacks = s.roc_lookbacks
        self.closes: deque[float] = deque(maxlen=max(s.roc_lookbacks, default=0) + 1)
        self.atr = wilder(s.atr_period)
        self.returns = RollingStats(s.volatility_window)
        self.prev_close = NAN
        self.rows = 0

    def update(self, high: float, low: float, close: float, volume: float) -> tuple[float, ...]:
        """Take one closed candle (a feature row) and return its candle features."""
        prev = self.prev_close
        first = self.rows == 0
        values = (
            self._rsi(close, prev, first),
            *self._macd(close),
            *self._bollinger(close),
            self._vwap_dist(high, low, close, volume),
            *self._roc(close),
            *self._atr(high, low, close, prev, first),
            self._volatility(close, prev, first),
        )
        self.prev_close = close
        self.rows += 1
        return values

    def _rsi(self, close: float, prev: float, first: bool) -> float:
        if first:
            return NAN
        change = close - prev
        gain = self.rsi_gain.push(change if change > 0.0 else 0.0)
        loss = self.rsi_loss.push(-change if change < 0.0 else 0.0)
        return rsi_value(gain, loss)

    def _macd(self, close: float) -> tuple[float, float, float]:
        fast = self.ema_fast.push(close)
        slow = self.ema_slow.push(close)
        if math.isnan(slow):
            return NAN, NAN, NAN
        line = 100.0 * (fast - slow) / slow
        signal = self.ema_signal.push(line)
        return line, signal, line - signal

    def _bollinger(self, close: float) -> tuple[float, float]:
        self.bands.push(close)
        if not self.bands.full:
            return NAN, NAN
        std = math.sqrt(self.bands.variance(ddof=0))
        return bollinger_values(close, self.bands.mean, std, self.bb_k)

    def _vwap_dist(self, high: float, low: float, close: float, volume: float) -> float:
        typical = (high + low + close) / 3.0
        self.vwap.push(typical * volume, volume)
        if not self.vwap.full or self.vwap.b <= 0.0:
            return NAN
        vwap = self.vwap.a / self.vwap.b
        return 100.0 * (close - vwap) / vwap

    def _roc(self, close: float) -> list[float]:
        closes = self.closes
        closes.append(close)
        have = len(closes)
        return [
            100.0 * (close / closes[-1 - n] - 1.0) if have > n else NAN for n in self.roc_lookbacks
        ]

    def _atr(
        self, high: float, low: float, close: float, prev: float, first: bool
    ) -> tuple[float, float]:
        span = high - low
        tr = span if first else max(span, abs(high - prev), abs(low - prev))
        atr = self.atr.push(tr)
        return atr, 100.0 * atr / close

    def _volatility(self, close: float, prev: float, first: bool) -> float:
        if first:
            return NAN
        self.returns.push(math.log(close / prev))
        if not self.returns.full:
            return NAN
        return math.sqrt(self.returns.variance(ddof=1))


def rsi_value(avg_gain: float, avg_loss: float) -> float:
    """``100 * gain / (gain + loss)`` (= 100 - 100 / (1 + RS)); 50 when nothing moved."""
    total = avg_gain + avg_loss
    if math.isnan(total):
        return NAN
    return 100.0 * avg_gain / total if total > 0.0 else 50.0


def bollinger_values(close: float, mean: float, std: float, k: float) -> tuple[float, float]:
    """(%b, bandwidth); collapsed bands (std 0) give %b 0.5 and bandwidth 0."""
    if std <= 0.0:
        return 0.5, 0.0
    width = 2.0 * k * std
    return (close - (mean - k * std)) / width, width / mean
