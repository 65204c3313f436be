"""Local L2 order book maintained exactly as Kraken's WebSocket v2 guide specifies.

Rules: apply every level of a message in order (a price may repeat within one message), a
zero quantity deletes the level, then truncate each side to the subscribed depth (Kraken
sends no deletes for levels that fall out of scope), then verify the CRC32 checksum.

Each side keeps three parallel lists sorted best-first: integer sort keys (negated prices for
bids so one ascending bisect serves both sides), ``(price, qty)`` tuples in scaled integers,
and each level's checksum text. The encoded top-ten text of a side is cached and rebuilt only
when a change reaches the top ten, and CRC32 is chained across the two sides, so a typical
one-level update costs a bisect, a list write and one short join.
"""

from __future__ import annotations

import zlib
from bisect import bisect_left
from collections.abc import Iterable, Mapping
from typing import Any

from gal_friday.kraken.checksum import CHECKSUM_LEVELS
from gal_friday.kraken.numbers import _POW10, WireNumberError, to_scaled

CBookSide: Any
try:  # the same BookSide in C, built at install time when a compiler is present
    from gal_friday.kraken._cbook import BookSide as CBookSide
except ImportError:  # pragma: no cover - depends on the build
    CBookSide = None

Level = tuple[int, int]
_N = CHECKSUM_LEVELS
MAX_SCALED = 2**63 - 1  # both implementations hold amounts in signed 64 bits
ACCELERATED = CBookSide is not None


def _scaled(raw: object, precision: int) -> int:
    """Fast path of ``to_scaled`` for the common wire form ``digits.digits``."""
    if type(raw) is str:
        whole, _, frac = raw.partition(".")
        pad = precision - len(frac)
        if pad >= 0 and whole and whole[0] != "-":
            try:
                return int(whole + frac) * _POW10[pad]
            except ValueError:
                pass  # exponent or junk: the careful path decides
    return to_scaled(raw, precision)


class BookSide:
    """One side of the book, best level first."""

    __slots__ = ("_encoded", "_keys", "_sign", "levels", "texts")

    def __init__(self, *, descending: bool) -> None:
        self._sign = -1 if descending else 1
        self._keys: list[int] = []
        self.levels: list[Level] = []
        self.texts: list[str] = []
        self._encoded: bytes | None = b""

    def clear(self) -> None:
        self._keys.clear()
        self.levels.clear()
        self.texts.clear()
        self._encoded = b""

    def __len__(self) -> int:
        return len(self._keys)

    def set(self, price: int, qty: int) -> None:
        """Insert, replace (qty > 0) or delete (qty == 0) the level at ``price``."""
        if price <= 0 or qty < 0 or price > MAX_SCALED or qty > MAX_SCALED:
            raise WireNumberError(f"impossible level {price} x {qty}")
        key = price * self._sign
        keys = self._keys
        idx = bisect_left(keys, key)
        exists = idx < len(keys) and keys[idx] == key
        if qty == 0:
            if not exists:
                return
            del keys[idx], self.levels[idx], self.texts[idx]
        elif exists:
            self.levels[idx] = (price, qty)
            self.texts[idx] = f"{price}{qty}"
        else:
            keys.insert(idx, key)
            self.levels.insert(idx, (price, qty))
            self.texts.insert(idx, f"{price}{qty}")
        if idx < _N:
            self._encoded = None

    def apply(
        self, levels: Iterable[Mapping[str, object]], price_precision: int, qty_precision: int
    ) -> None:
        """Apply wire levels (``{"price": raw, "qty": raw}``) in order."""
        for level in levels:
            self.set(_scaled(level["price"], price_precision), _scaled(level["qty"], qty_precision))

    def top(self, n: int) -> tuple[Level, ...]:
        return tuple(self.levels[:n])

    def truncate(self, depth: int) -> None:
        if len(self._keys) > depth:
            del self._keys[depth:], self.levels[depth:], self.texts[depth:]
            if depth < _N:
                self._encoded = None

    def encoded_top(self) -> bytes:
        """The top ten levels' checksum text, ASCII-encoded, cached until they change."""
        encoded = self._encoded
        if encoded is None:
            encoded = self._encoded = "".join(self.texts[:_N]).encode("ascii")
        return encoded


class OrderBook:
    """L2 book for one pair, prices and quantities as integers scaled by the pair's precision."""

    __slots__ = ("asks", "bids", "depth", "price_precision", "qty_precision", "symbol")

    def __init__(
        self,
        symbol: str,
        depth: int,
        price_precision: int,
        qty_precision: int,
        *,
        accelerated: bool = ACCELERATED,
    ) -> None:
        self.symbol = symbol
        self.depth = depth
        self.price_precision = price_precision
        self.qty_precision = qty_precision
        side: Any = CBookSide if accelerated and CBookSide is not None else BookSide
        self.bids = side(descending=True)
        self.asks = side(descending=False)

    def clear(self) -> None:
        self.bids.clear()
        self.asks.clear()

    def apply_snapshot(
        self, bids: Iterable[Mapping[str, object]], asks: Iterable[Mapping[str, object]]
    ) -> None:
        """Replace the whole book with a snapshot's levels."""
        self.clear()
        self.apply_update(bids, asks)

    def apply_update(
        self, bids: Iterable[Mapping[str, object]], asks: Iterable[Mapping[str, object]]
    ) -> None:
        """Apply wire levels (``{"price": raw, "qty": raw}``) in order, then truncate."""
        pp, qp = self.price_precision, self.qty_precision
        self.bids.apply(bids, pp, qp)
        self.asks.apply(asks, pp, qp)
        depth = self.depth
        if len(self.bids) > depth:
            self.bids.truncate(depth)
        if len(self.asks) > depth:
            self.asks.truncate(depth)

    def set_level(self, is_bid: bool, price: int, qty: int) -> None:
        """Apply one scaled-integer level (used by the simulator and tests)."""
        (self.bids if is_bid else self.asks).set(price, qty)

    def checksum(self) -> int:
        """Kraken's CRC32 over the top ten asks then the top ten bids."""
        return zlib.crc32(self.bids.encoded_top(), zlib.crc32(self.asks.encoded_top()))

    def top(self, n: int) -> tuple[tuple[Level, ...], tuple[Level, ...]]:
        """Best ``n`` bids and asks as scaled-integer ``(price, qty)`` tuples."""
        return self.bids.top(n), self.asks.top(n)

    def is_crossed(self) -> bool:
        """A best bid at or above the best ask means the book cannot be trusted."""
        bid, ask = self.bids.top(1), self.asks.top(1)
        return bool(bid and ask) and bid[0][0] >= ask[0][0]
