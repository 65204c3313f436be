"""The simulator's full order book per pair and each subscriber depth's view of it.

Kraken serves one book per pair to subscribers of different depths. A subscriber at depth
``d`` holds the top ``d`` levels per side and truncates after every message, so the exchange
must send, per depth: every level whose quantity changed or that newly entered the top ``d``,
and a zero quantity only for levels that left the book entirely. A level merely pushed below
``d`` is not mentioned: the client drops it when it truncates.

``DepthView`` keeps what subscribers at one depth last received and produces exactly that
diff; all subscribers at the same depth share one view (and one encoded message), and a new
subscriber's snapshot is the view's current content. The checksum is the CRC32 of the top ten
levels, the same for every depth of at least ten, so it is computed once per change from the
full book with ``OrderBook.checksum``.
"""

from __future__ import annotations

from bisect import bisect_left

from gal_friday.kraken.book import OrderBook

Level = tuple[int, int]
_UNBOUNDED = 2**31 - 1


class BookSide:
    """One side of the full book: sorted keys for rank access, a dict for quantities."""

    __slots__ = ("_keys", "_sign", "qty", "updated")

    def __init__(self, *, descending: bool) -> None:
        self._sign = -1 if descending else 1
        self._keys: list[int] = []  # price * sign, ascending = best first
        self.qty: dict[int, int] = {}
        self.updated: dict[int, int] = {}  # price -> epoch second of the last change (REST)

    def __len__(self) -> int:
        return len(self._keys)

    def set(self, price: int, qty: int, ts_s: int) -> None:
        """Insert, replace (qty > 0) or delete (qty == 0) the level at ``price``."""
        key = price * self._sign
        if qty == 0:
            if self.qty.pop(price, None) is not None:
                del self._keys[bisect_left(self._keys, key)]
                self.updated.pop(price, None)
            return
        if price not in self.qty:
            keys = self._keys
            keys.insert(bisect_left(keys, key), key)
        self.qty[price] = qty
        self.updated[price] = ts_s

    def best(self) -> int:
        """Best price; the caller guarantees the side is not empty."""
        return self._keys[0] * self._sign

    def price_at(self, rank: int) -> int:
        return self._keys[rank] * self._sign

    def worst(self) -> int:
        return self._keys[-1] * self._sign

    def top(self, n: int) -> list[Level]:
        """Best ``n`` levels as ``(price, qty)``."""
        sign, qty = self._sign, self.qty
        return [(k * sign, qty[k * sign]) for k in self._keys[:n]]

    def clear(self) -> None:
        self._keys.clear()
        self.qty.clear()
        self.updated.clear()


class FullBook:
    """The exchange's own book of one pair, scaled integers, with its Kraken checksum."""

    __slots__ = ("_crc", "asks", "bids", "price_precision", "qty_precision", "symbol")

    def __init__(self, symbol: str, price_precision: int, qty_precision: int) -> None:
        self.symbol = symbol
        self.price_precision = price_precision
        self.qty_precision = qty_precision
        self.bids = BookSide(descending=True)
        self.asks = BookSide(descending=False)
        self._crc = OrderBook(symbol, _UNBOUNDED, price_precision, qty_precision)

    def set(self, is_bid: bool, price: int, qty: int, ts_s: int) -> None:
        """Change one level on both the ranked sides and the checksum book."""
        (self.bids if is_bid else self.asks).set(price, qty, ts_s)
        self._crc.set_level(is_bid, price, qty)

    def side(self, is_bid: bool) -> BookSide:
        return self.bids if is_bid else self.asks

    def checksum(self) -> int:
        return self._crc.checksum()

    def clear(self) -> None:
        self.bids.clear()
        self.asks.clear()
        self._crc.clear()

    def is_crossed(self) -> bool:
        return bool(self.bids and self.asks) and self.bids.best() >= self.asks.best()


def _diff(side: BookSide, held: dict[int, int], depth: int) -> tuple[list[Level], dict[int, int]]:
    """Levels to send so a client holding ``held`` ends with the side's new top ``depth``.

    Deletions come first, as in Kraken's own stream: a client that (wrongly) truncates after
    every level instead of after the whole message then still ends with the right book."""
    top = side.top(depth)
    new = dict(top)
    changed = [level for level in top if held.get(level[0]) != level[1]]
    if len(new) == len(held) and not changed:
        return [], new
    alive = side.qty
    deleted: list[Level] = [(p, 0) for p in held if p not in new and p not in alive]
    return deleted + changed, new


class DepthView:
    """What every subscriber at one depth currently holds for one pair."""

    __slots__ = ("_asks", "_bids", "book", "depth")

    def __init__(self, book: FullBook, depth: int) -> None:
        self.book = book
        self.depth = depth
        self._bids = dict(book.bids.top(depth))
        self._asks = dict(book.asks.top(depth))

    def snapshot(self) -> tuple[list[Level], list[Level]]:
        """The levels a new subscriber starts from, best first (equal to the view's content)."""
        return self.book.bids.top(self.depth), self.book.asks.top(self.depth)

    def update(self) -> tuple[list[Level], list[Level]] | None:
        """Advance the view to the book and return the changed levels, or None if the change
        did not reach this depth (Kraken never sends an empty update)."""
        bids, self._bids = _diff(self.book.bids, self._bids, self.depth)
        asks, self._asks = _diff(self.book.asks, self._asks, self.depth)
        if not bids and not asks:
            return None
        return bids, asks
