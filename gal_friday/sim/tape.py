"""The time-and-sales tape of one pair and its one-minute candles.

Everything REST ``Trades``/``OHLC`` and the WebSocket ``trade``/``ohlc`` channels serve comes
from here, so history and live data agree. Trades are stored as parallel lists (a day of
history is tens of thousands of rows) with contiguous trade ids and strictly increasing
nanosecond times, which makes Kraken's ``since`` pagination an exact bisect. Candles of any
interval are aggregated from the minute candles on request.
"""

from __future__ import annotations

from bisect import bisect_right
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from gal_friday.kraken.numbers import format_scaled

NS_PER_MIN = 60_000_000_000
MAX_TRADES = 1_500_000  # older rows are dropped beyond this (about two weeks at 1/s)
MAX_MINUTES = 43_200  # thirty days of candles
# A candle: (begin_ns, open, high, low, close, volume, vwap, count), scaled integers.
Candle = tuple[int, int, int, int, int, int, int, int]


@dataclass(frozen=True, slots=True)
class Trade:
    """One print: the taker's side and order type, as Kraken reports them."""

    trade_id: int
    ts_ns: int
    price: int
    qty: int
    side: str  # "buy" | "sell"
    ord_type: str  # "market" | "limit"


class Tape:
    """Trades and minute candles of one pair, append-only in time order."""

    def __init__(self, first_trade_id: int, price_precision: int, qty_precision: int) -> None:
        self.price_precision = price_precision
        self.qty_precision = qty_precision
        self._first_id = first_trade_id
        self.ts: list[int] = []
        self.px: list[int] = []
        self.qty: list[int] = []
        self.buy: list[bool] = []
        self.market: list[bool] = []
        # minute candles, parallel lists; minute index = begin_ns // NS_PER_MIN
        self._m0 = 0
        self._o: list[int] = []
        self._h: list[int] = []
        self._l: list[int] = []
        self._c: list[int] = []
        self._v: list[int] = []
        self._pv: list[int] = []
        self._n: list[int] = []

    # --- trades --------------------------------------------------------------------------

    @property
    def next_id(self) -> int:
        return self._first_id + len(self.ts)

    @property
    def last_price(self) -> int | None:
        return self.px[-1] if self.px else None

    def add(self, ts_ns: int, price: int, qty: int, side: str, ord_type: str) -> Trade:
        """Record a live print (time forced strictly after the previous one)."""
        if self.ts and ts_ns <= self.ts[-1]:
            ts_ns = self.ts[-1] + 1
        trade = Trade(self.next_id, ts_ns, price, qty, side, ord_type)
        self.ts.append(ts_ns)
        self.px.append(price)
        self.qty.append(qty)
        self.buy.append(side == "buy")
        self.market.append(ord_type == "market")
        self._candle_add(ts_ns // NS_PER_MIN, price, qty)
        if len(self.ts) > MAX_TRADES:
            self._trim_trades(len(self.ts) - MAX_TRADES * 2 // 3)
        return trade

    def load_history(
        self,
        ts_ns: np.ndarray,
        px: np.ndarray,
        qty: np.ndarray,
        buy: np.ndarray,
        market: np.ndarray,
    ) -> None:
        """Bulk-load generated back-history (sorted, strictly increasing times) into an empty
        tape, building the minute candles with numpy instead of a Python loop."""
        if self.ts:
            raise ValueError("history must be loaded before any live trade")
        if len(ts_ns) == 0:
            return
        self.ts = ts_ns.tolist()
        self.px = px.tolist()
        self.qty = qty.tolist()
        self.buy = buy.tolist()
        self.market = market.tolist()
        self._candles_from_arrays(ts_ns // NS_PER_MIN, px, qty)

    def trade_id(self, index: int) -> int:
        return self._first_id + index

    def trade(self, index: int) -> Trade:
        return Trade(
            self._first_id + index,
            self.ts[index],
            self.px[index],
            self.qty[index],
            "buy" if self.buy[index] else "sell",
            "market" if self.market[index] else "limit",
        )

    def last_trades(self, n: int) -> list[Trade]:
        """The ``n`` most recent prints, oldest first (the ``trade`` channel snapshot)."""
        start = max(0, len(self.ts) - n)
        return [self.trade(i) for i in range(start, len(self.ts))]

    def page(self, since_ns: int | None, count: int) -> tuple[range, int]:
        """Indices of up to ``count`` prints after ``since_ns`` (the most recent ``count``
        without it), and the ``last`` cursor Kraken returns for the next call."""
        if since_ns is None:
            start = max(0, len(self.ts) - count)
        else:
            start = bisect_right(self.ts, since_ns)
        stop = min(len(self.ts), start + count)
        if stop > start:
            last = self.ts[stop - 1]
        else:
            last = since_ns if since_ns is not None else (self.ts[-1] if self.ts else 0)
        return range(start, stop), last

    def _trim_trades(self, drop: int) -> None:
        del self.ts[:drop], self.px[:drop], self.qty[:drop], self.buy[:drop]
        del self.market[:drop]
        self._first_id += drop

    # --- candles -------------------------------------------------------------------------

    def _candles_from_arrays(self, minutes: np.ndarray, px: np.ndarray, qty: np.ndarray) -> None:
        first, last = int(minutes[0]), int(minutes[-1])
        starts = np.flatnonzero(np.r_[True, minutes[1:] != minutes[:-1]])
        ends = np.r_[starts[1:], len(minutes)] - 1
        n = last - first + 1
        count = np.zeros(n, dtype=np.int64)
        slots = minutes[starts] - first
        count[slots] = ends - starts + 1
        close = np.zeros(n, dtype=np.int64)
        close[slots] = px[ends]
        # minutes without a trade are flat at the previous close
        filled = np.maximum.accumulate(np.where(count > 0, np.arange(n), 0))
        close = close[filled]
        openp, high, low = close.copy(), close.copy(), close.copy()
        openp[slots] = px[starts]
        high[slots] = np.maximum.reduceat(px, starts)
        low[slots] = np.minimum.reduceat(px, starts)
        vol = np.zeros(n, dtype=np.int64)
        vol[slots] = np.add.reduceat(qty, starts)
        pv = [0] * n  # price * qty overflows int64: exact Python ints
        for slot, a, b in zip(slots.tolist(), starts.tolist(), (ends + 1).tolist(), strict=True):
            pv[slot] = sum(p * q for p, q in zip(self.px[a:b], self.qty[a:b], strict=True))
        self._m0 = first
        self._o, self._h, self._l = openp.tolist(), high.tolist(), low.tolist()
        self._c, self._v, self._n = close.tolist(), vol.tolist(), count.tolist()
        self._pv = pv

    def _extend_to(self, minute: int) -> None:
        """Append flat candles (at the last close) up to and including ``minute``."""
        if not self._c:
            return
        last = self._m0 + len(self._c) - 1
        if minute <= last:
            return
        gap = minute - last
        close = self._c[-1]
        self._o.extend([close] * gap)
        self._h.extend([close] * gap)
        self._l.extend([close] * gap)
        self._c.extend([close] * gap)
        self._v.extend([0] * gap)
        self._pv.extend([0] * gap)
        self._n.extend([0] * gap)
        if len(self._c) > MAX_MINUTES:
            drop = len(self._c) - MAX_MINUTES * 2 // 3
            for column in (self._o, self._h, self._l, self._c, self._v, self._pv, self._n):
                del column[:drop]
            self._m0 += drop

    def _candle_add(self, minute: int, price: int, qty: int) -> None:
        if not self._c:
            self._m0 = minute
            self._o, self._h, self._l, self._c = [price], [price], [price], [price]
            self._v, self._pv, self._n = [qty], [price * qty], [1]
            return
        self._extend_to(minute)
        i = minute - self._m0
        if i < 0:
            return  # older than the candles kept: the trade is on the tape, not in a candle
        if self._n[i] == 0:
            self._o[i] = self._h[i] = self._l[i] = price
        else:
            self._h[i] = max(self._h[i], price)
            self._l[i] = min(self._l[i], price)
        self._c[i] = price
        self._v[i] += qty
        self._pv[i] += price * qty
        self._n[i] += 1

    def roll_to(self, now_ns: int) -> None:
        """Open the (possibly empty) candle of the current minute, as Kraken's last row is."""
        self._extend_to(now_ns // NS_PER_MIN)

    def candles(
        self, interval_min: int, now_ns: int, limit: int, since_ns: int | None = None
    ) -> list[Candle]:
        """Up to ``limit`` most recent candles of ``interval_min`` minutes, ending with the
        one in progress at ``now_ns``; with ``since_ns`` only those beginning after it."""
        self.roll_to(now_ns)
        if not self._c:
            return []
        step = interval_min
        first_bucket = self._m0 // step
        last_bucket = (self._m0 + len(self._c) - 1) // step
        lo = max(first_bucket, last_bucket - limit + 1)
        if since_ns is not None:
            lo = max(lo, since_ns // (step * NS_PER_MIN) + 1)
        return [self._bucket(b, step) for b in range(lo, last_bucket + 1)]

    def current(self, interval_min: int, ts_ns: int) -> Candle:
        """The candle of ``interval_min`` minutes containing ``ts_ns``."""
        self.roll_to(ts_ns)
        return self._bucket(ts_ns // NS_PER_MIN // interval_min, interval_min)

    def _bucket(self, bucket: int, step: int) -> Candle:
        """Aggregate the minute candles of one interval bucket (open and close from minutes
        that traded; an interval without trades is flat at the previous close)."""
        a = max(0, bucket * step - self._m0)
        b = min(len(self._c), (bucket + 1) * step - self._m0)
        begin = bucket * step * NS_PER_MIN
        traded = [i for i in range(a, b) if self._n[i]]
        if not traded:  # its minutes were filled flat at the previous close
            flat = self._c[a] if a < b else self._c[-1]
            return (begin, flat, flat, flat, flat, 0, 0, 0)
        vol = sum(self._v[i] for i in traded)
        pv = sum(self._pv[i] for i in traded)
        return (
            begin,
            self._o[traded[0]],
            max(self._h[i] for i in traded),
            min(self._l[i] for i in traded),
            self._c[traded[-1]],
            vol,
            (pv + vol // 2) // vol,
            sum(self._n[i] for i in traded),
        )


def candle_row(candle: Sequence[int], pp: int, qp: int) -> list[object]:
    """A REST ``OHLC`` row: ``[time, open, high, low, close, vwap, volume, count]``."""
    begin, o, h, low, c, vol, vwap, count = candle
    return [
        begin // 1_000_000_000,
        format_scaled(o, pp),
        format_scaled(h, pp),
        format_scaled(low, pp),
        format_scaled(c, pp),
        format_scaled(vwap, pp),
        format_scaled(vol, qp),
        count,
    ]
