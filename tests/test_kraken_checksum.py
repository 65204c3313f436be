"""Kraken's CRC32 book checksum against the values Kraken documents."""

from __future__ import annotations

import json

import pytest

from gal_friday.kraken.book import OrderBook
from gal_friday.kraken.checksum import book_checksum, decimal_text
from gal_friday.kraken.public import decode

# docs.kraken.com "spot-ws-book-v2", Checksum Steps with Example (BTC/USD, precisions 1 and 8),
# written as Kraken's JSON prints it (trailing zeros lost), which is why precision matters.
DOC_ASKS = [
    ("45285.2", "0.001"),
    ("45286.4", "1.54571953"),
    ("45286.6", "1.54571109"),
    ("45289.6", "1.54560911"),
    ("45290.2", "0.1589066"),
    ("45291.8", "1.54553491"),
    ("45294.7", "0.04454749"),
    ("45296.1", "0.3538"),
    ("45297.5", "0.09945542"),
    ("45299.5", "0.18772827"),
]
DOC_BIDS = [
    ("45283.5", "0.1"),
    ("45283.4", "1.54582015"),
    ("45282.1", "0.1"),
    ("45281.0", "0.1"),
    ("45280.3", "1.54592586"),
    ("45279.0", "0.0799"),
    ("45277.6", "0.03310103"),
    ("45277.5", "0.3"),
    ("45277.3", "1.54602737"),
    ("45276.6", "0.15445238"),
]
DOC_CHECKSUM = 3310070434
DOC_ASK_TEXT = (
    "45285210000045286415457195345286615457110945289615456091145290215890660452918154553491"
    "452947445474945296135380000452975994554245299518772827"
)
DOC_BID_TEXT = (
    "452835100000004528341545820154528211000000045281010000000452803154592586452790799000045277"
    "633101034527753000000045277315460273745276615445238"
)


def doc_message() -> str:
    levels = lambda rows: ",".join(f'{{"price":{p},"qty":{q}}}' for p, q in rows)  # noqa: E731
    return (
        '{"channel":"book","type":"snapshot","data":[{"symbol":"BTC/USD",'
        f'"bids":[{levels(DOC_BIDS)}],"asks":[{levels(DOC_ASKS)}],"checksum":{DOC_CHECKSUM}}}]}}'
    )


def test_documented_example_checksum_matches() -> None:
    book = OrderBook("BTC/USD", 10, price_precision=1, qty_precision=8)
    item = decode(doc_message())["data"][0]
    book.apply_snapshot(item["bids"], item["asks"])
    assert book.asks.encoded_top().decode() == DOC_ASK_TEXT
    assert book.bids.encoded_top().decode() == DOC_BID_TEXT
    assert book.checksum() == DOC_CHECKSUM


def test_float_parsing_would_give_the_documented_wrong_value() -> None:
    """Kraken documents 1604409348 as what you get when trailing zeros are lost."""
    parsed = json.loads(doc_message())["data"][0]  # floats: '0.10000000' becomes 0.1

    def naive(rows: list[dict[str, float]]) -> list[tuple[int, int]]:
        return [
            (int(str(r["price"]).replace(".", "")), int(str(r["qty"]).replace(".", "")))
            for r in rows
        ]

    assert book_checksum(naive(parsed["asks"]), naive(parsed["bids"])) == 1604409348


@pytest.mark.parametrize(
    ("value", "precision", "text"),
    [
        ("0.00159953", 8, "159953"),
        ("0.000123", 6, "123"),
        ("45285.21000000", 8, "4528521000000"),
        ("4.0", 8, "400000000"),
        ("0.00000010", 8, "10"),
        ("0", 8, ""),
    ],
)
def test_level_text_strips_point_and_leading_zeros_but_keeps_precision(
    value: str, precision: int, text: str
) -> None:
    assert decimal_text(value, precision) == text


def test_one_wrong_digit_is_detected() -> None:
    """python-kraken-sdk's negative case: 2438868880 must not verify when the CRC differs."""
    book = OrderBook("BTC/USD", 10, 1, 8)
    item = decode(doc_message())["data"][0]
    book.apply_snapshot(item["bids"], item["asks"])
    book.apply_update([{"price": "45283.5", "qty": "0.2"}], [])
    assert book.checksum() != DOC_CHECKSUM
