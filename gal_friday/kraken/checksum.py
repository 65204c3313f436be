"""Kraken's CRC32 book checksum (identical for WebSocket v1 and v2).

The checksum covers the top ten asks (low to high) then the top ten bids (high to low).
Each level contributes its price and quantity written at the pair's wire precision with the
decimal point removed and leading zeros stripped. Holding prices and quantities as integers
scaled by that precision makes the formatting exact and cheap: ``str(scaled_int)`` is the
level text.
"""

from __future__ import annotations

import zlib
from collections.abc import Iterable
from decimal import Decimal

CHECKSUM_LEVELS = 10


def level_text(price_scaled: int, qty_scaled: int) -> str:
    """One level's contribution to the checksum string."""
    return f"{price_scaled}{qty_scaled}"


def decimal_text(value: Decimal | str, precision: int) -> str:
    """Checksum text for a decimal written at ``precision`` places (trailing zeros kept)."""
    text = format(Decimal(value), f".{precision}f").replace(".", "").lstrip("0")
    return text


def checksum_from_texts(ask_texts: Iterable[str], bid_texts: Iterable[str]) -> int:
    """CRC32 over already formatted level texts, asks first then bids (each best first)."""
    return zlib.crc32(("".join(ask_texts) + "".join(bid_texts)).encode("ascii"))


def book_checksum(asks: Iterable[tuple[int, int]], bids: Iterable[tuple[int, int]]) -> int:
    """Checksum of scaled-integer levels; ``asks`` ascending, ``bids`` descending."""
    ask_texts = [level_text(p, q) for p, q in list(asks)[:CHECKSUM_LEVELS]]
    bid_texts = [level_text(p, q) for p, q in list(bids)[:CHECKSUM_LEVELS]]
    return checksum_from_texts(ask_texts, bid_texts)
