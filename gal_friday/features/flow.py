"""Trade flow of one pair: taker buy volume minus taker sell volume per candle interval.

Trades are kept until the candle of their interval closes, then summed exactly (Decimal).
The sum is only trusted when the trade stream is known to be complete for the whole interval:

* Kraken's v2 trade ids are sequential per pair, so an id already seen is a repeat (dropped,
  never double-counted) and a jump means trades were missed;
* a ``BookInvalidatedEvent`` (disconnects raise one) may hide missed trades too.

Either starts a new *run* at the next trade. A candle gets flow features only if the current
run began before the candle opened; otherwise they are NaN (unknown is not zero).
"""

from __future__ import annotations

import math
from collections import deque
from decimal import Decimal

from gal_friday.events import Side, TradeEvent

NAN = math.nan
_ZERO = Decimal(0)


class TradeFlow:
    """Pending trades of one pair and the continuity of its trade stream."""

    def __init__(self) -> None:
        self._pending: deque[tuple[int, Decimal, bool]] = deque()  # (ts_ns, qty, taker buys)
        self._last_id: int | None = None
        self._run_start_ns: int | None = None
        self._closed_until_ns = 0
        self.duplicates = 0
        self.late = 0

    def add(self, trade: TradeEvent) -> None:
        """Queue one trade for its candle; repeats are dropped, id gaps restart the run."""
        last = self._last_id
        if last is not None and trade.trade_id <= last:
            self.duplicates += 1
            return
        if last is None or trade.trade_id != last + 1 or self._run_start_ns is None:
            self._run_start_ns = trade.exchange_ts_ns
        self._last_id = trade.trade_id
        if trade.exchange_ts_ns < self._closed_until_ns:
            self.late += 1  # its candle has been published already
            return
        self._pending.append((trade.exchange_ts_ns, trade.qty, trade.side is Side.BUY))

    def break_run(self) -> None:
        """Trades may have been missed (the feed dropped): distrust until the next trade."""
        self._run_start_ns = None

    def close(self, open_ns: int, end_ns: int) -> tuple[float, float]:
        """(volume delta, delta / total) of trades in ``[open_ns, end_ns)``; drops older ones."""
        buys = sells = _ZERO
        pending = self._pending
        while pending and pending[0][0] < end_ns:
            ts, qty, taker_buys = pending.popleft()
            if ts < open_ns:
                continue
            if taker_buys:
                buys += qty
            else:
                sells += qty
        self._closed_until_ns = max(self._closed_until_ns, end_ns)
        run_start = self._run_start_ns
        if run_start is None or run_start >= open_ns:
            return NAN, NAN
        total = buys + sells
        delta = float(buys - sells)
        return delta, (delta / float(total) if total > 0 else NAN)
