"""Order-book features of one verified ``BookEvent``.

The book's levels are integers scaled by ``price_precision`` / ``qty_precision``; every sum
and ratio here is taken in exact integer arithmetic and rounded once, when it becomes a
float, so the features are as exact as the book.
"""

from __future__ import annotations

import math

from gal_friday.events import BookEvent

NAN = math.nan


def book_features(book: BookEvent | None, levels: tuple[int, ...]) -> tuple[float, ...]:
    """Values in ``book_feature_names`` order; all NaN without a two-sided book."""
    if book is None or not (book.bids and book.asks):
        return (NAN,) * (2 + 7 * len(levels))
    pp, qp = book.price_precision, book.qty_precision
    best_bid, best_ask = book.bids[0][0], book.asks[0][0]
    mid2 = best_bid + best_ask  # twice the mid, still an exact scaled integer
    values = [(best_ask - best_bid) / 10**pp, 200 * (best_ask - best_bid) / mid2]
    for n in levels:
        bid_qty, bid_value = _side_totals(book.bids, n)
        ask_qty, ask_value = _side_totals(book.asks, n)
        values += [
            _imbalance(bid_qty, ask_qty),
            _wap_distance_pct(bid_value, bid_qty, mid2),
            _wap_distance_pct(ask_value, ask_qty, mid2),
            bid_qty / 10**qp,
            ask_qty / 10**qp,
            bid_value / 10 ** (pp + qp),
            ask_value / 10 ** (pp + qp),
        ]
    return tuple(values)


def _side_totals(side: tuple[tuple[int, int], ...], n: int) -> tuple[int, int]:
    """Scaled quantity and scaled quote value (price * qty) of the best ``n`` levels."""
    qty = value = 0
    for price, size in side[:n]:
        qty += size
        value += price * size
    return qty, value


def _imbalance(bid_qty: int, ask_qty: int) -> float:
    """``(bid - ask) / (bid + ask)`` in [-1, 1]: positive when buyers rest more size."""
    total = bid_qty + ask_qty
    return (bid_qty - ask_qty) / total if total > 0 else NAN


def _wap_distance_pct(value: int, qty: int, mid2: int) -> float:
    """``100 * (wap - mid) / mid`` with ``wap = value / qty``: one rounding, at the end."""
    if qty <= 0:
        return NAN
    return 100 * (2 * value - mid2 * qty) / (mid2 * qty)
