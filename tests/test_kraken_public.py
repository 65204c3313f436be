"""The public stream decoder: verified books, candles, trades, and no crash on bad input."""

from __future__ import annotations

import json
from decimal import Decimal
from typing import Any
from unittest import mock

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gal_friday.events import BookEvent, BookInvalidatedEvent, CandleEvent, TradeEvent
from gal_friday.kraken.checksum import book_checksum
from gal_friday.kraken.numbers import format_scaled
from gal_friday.kraken.public import PublicStreamDecoder

PAIR = "XRP/USD"
INSTRUMENT = json.dumps(
    {
        "channel": "instrument",
        "type": "snapshot",
        "data": {
            "pairs": [
                {
                    "symbol": PAIR,
                    "base": "XRP",
                    "quote": "USD",
                    "status": "online",
                    "qty_precision": 8,
                    "qty_increment": 1e-08,
                    "qty_min": 1.65,
                    "price_precision": 5,
                    "price_increment": 1e-05,
                    "cost_precision": 5,
                    "cost_min": 0.5,
                    "marginable": False,
                    "has_index": True,
                }
            ]
        },
    }
)


class Exchange:
    """Writes Kraken v2 book messages with true checksums for a scripted book."""

    def __init__(self) -> None:
        self.bids: dict[int, int] = {}
        self.asks: dict[int, int] = {}

    def _levels(self, rows: dict[int, int]) -> str:
        return ",".join(
            f'{{"price":{format_scaled(p, 5)},"qty":{format_scaled(q, 8)}}}'
            for p, q in rows.items()
        )

    def message(
        self, kind: str, bids: dict[int, int], asks: dict[int, int], checksum: int | None = None
    ) -> str:
        for side, rows in ((self.bids, bids), (self.asks, asks)):
            for p, q in rows.items():
                if q:
                    side[p] = q
                else:
                    side.pop(p, None)
        true = book_checksum(
            sorted(self.asks.items())[:10], sorted(self.bids.items(), reverse=True)[:10]
        )
        crc = true if checksum is None else checksum
        return (
            f'{{"channel":"book","type":"{kind}","data":[{{"symbol":"{PAIR}",'
            f'"bids":[{self._levels(bids)}],"asks":[{self._levels(asks)}],"checksum":{crc},'
            '"timestamp":"2026-11-25T10:00:00.123456Z"}]}'
        )


def ready_decoder() -> tuple[PublicStreamDecoder, Exchange]:
    dec = PublicStreamDecoder([PAIR], depth=10)
    dec.feed(INSTRUMENT)
    ex = Exchange()
    events = dec.feed(
        ex.message(
            "snapshot", {210000: 10**9, 209990: 5 * 10**8}, {210010: 7 * 10**8, 210020: 10**8}
        )
    )
    assert len(events) == 1 and isinstance(events[0], BookEvent)
    return dec, ex


def test_instrument_precision_comes_from_the_instrument_channel() -> None:
    dec = PublicStreamDecoder([PAIR], depth=10)
    dec.feed(INSTRUMENT)
    spec = dec.instruments[PAIR]
    assert (spec.price_precision, spec.qty_precision) == (5, 8)
    assert spec.qty_min == Decimal("1.65")


def test_verified_updates_publish_book_events_with_exact_prices() -> None:
    dec, ex = ready_decoder()
    (event,) = dec.feed(ex.message("update", {210005: 2 * 10**8}, {}))
    assert isinstance(event, BookEvent)
    assert event.best_bid() == Decimal("2.10005")
    assert event.best_ask() == Decimal("2.10010")
    assert event.sequence == 2
    assert event.exchange_ts_ns == 1795600800123456000


def test_checksum_mismatch_discards_book_and_asks_for_snapshot() -> None:
    dec, ex = ready_decoder()
    events = dec.feed(ex.message("update", {210001: 10**8}, {}, checksum=12345))
    assert [type(e) for e in events] == [BookInvalidatedEvent]
    assert dec.resync == {PAIR}
    assert not dec.is_valid(PAIR)
    # updates to the discarded book publish nothing, even when their checksum matches
    assert dec.feed(ex.message("update", {209000: 10**8}, {})) == []
    # a fresh snapshot restores it
    ex2 = Exchange()
    (event,) = dec.feed(ex2.message("snapshot", {200000: 10**8}, {201000: 10**8}))
    assert isinstance(event, BookEvent) and event.is_snapshot and dec.is_valid(PAIR)
    assert dec.stats.checksum_failures == 1


def test_crossed_book_is_never_published() -> None:
    dec, ex = ready_decoder()
    events = dec.feed(ex.message("update", {210015: 10**8}, {}))
    assert [type(e) for e in events] == [BookInvalidatedEvent]


def test_candles_close_when_the_next_interval_begins() -> None:
    dec, _ = ready_decoder()

    def ohlc(begin: str, close: float) -> str:
        return json.dumps(
            {
                "channel": "ohlc",
                "type": "update",
                "data": [
                    {
                        "symbol": PAIR,
                        "open": 2.1,
                        "high": 2.2,
                        "low": 2.0,
                        "close": close,
                        "trades": 3,
                        "volume": 12.5,
                        "vwap": 2.15,
                        "interval_begin": begin,
                        "interval": 1,
                        "timestamp": begin,
                    }
                ],
            }
        )

    first = dec.feed(ohlc("2026-11-25T10:00:00.000000000Z", 2.11))
    again = dec.feed(ohlc("2026-11-25T10:00:00.000000000Z", 2.12))
    rolled = dec.feed(ohlc("2026-11-25T10:01:00.000000000Z", 2.13))
    assert [c.closed for c in first + again] == [False, False]
    assert [(c.closed, c.close) for c in rolled if isinstance(c, CandleEvent)] == [
        (True, Decimal("2.12")),
        (False, Decimal("2.13")),
    ]


def test_trades_become_trade_events() -> None:
    dec, _ = ready_decoder()
    (trade,) = dec.feed(
        json.dumps(
            {
                "channel": "trade",
                "type": "update",
                "data": [
                    {
                        "symbol": PAIR,
                        "side": "sell",
                        "price": 2.1,
                        "qty": 40.0,
                        "ord_type": "market",
                        "trade_id": 4665906,
                        "timestamp": "2026-11-25T10:00:01.708706Z",
                    }
                ],
            }
        )
    )
    assert isinstance(trade, TradeEvent)
    assert (trade.side, trade.price, trade.qty) == ("sell", Decimal("2.1"), Decimal("40.0"))


def test_subscribe_errors_are_counted_and_kept() -> None:
    dec, _ = ready_decoder()
    dec.feed(
        json.dumps(
            {
                "error": "Currency pair not supported",
                "method": "subscribe",
                "success": False,
                "symbol": "FOO/USD",
                "req_id": 3,
            }
        )
    )
    assert dec.stats.subscribe_errors == 1
    assert "Currency pair not supported" in dec.stats.errors[0]


HOSTILE = [
    "",
    "{",
    "null",
    "[]",
    "42",
    '"str"',
    '{"channel": null}',
    '{"channel": "book"}',
    '{"channel":"book","type":"update","data":"x"}',
    '{"channel":"book","type":"update","data":[{"symbol":"XRP/USD","bids":[{"price":"x"}]}]}',
    '{"channel":"book","type":"update","data":[{"symbol":"XRP/USD","bids":[{"price":-1,'
    '"qty":1}],"asks":[],"checksum":1}]}',
    '{"channel":"book","type":"update","data":[{"symbol":"XRP/USD","bids":[{"price":1e999,'
    '"qty":1}],"asks":[],"checksum":1}]}',
    '{"channel":"ohlc","type":"update","data":[{"symbol":"XRP/USD"}]}',
    '{"channel":"trade","type":"update","data":[{"symbol":"XRP/USD","side":"up"}]}',
    '{"channel":"instrument","type":"snapshot","data":{"pairs":[{"symbol":"XRP/USD",'
    '"price_precision":"five","qty_precision":8}]}}',
    '{"channel":"evil","data":[1,2,3]}',
    "\x00\xff",
    '{"method":"subscribe","success":false}',
]


@pytest.mark.parametrize("frame", HOSTILE)
def test_each_hostile_frame_is_counted_and_never_raises(frame: str) -> None:
    dec, _ = ready_decoder()
    assert dec.feed(frame) in ([], [BookInvalidatedEvent(PAIR, mock.ANY, mock.ANY)])
    assert dec.stats.malformed + dec.stats.subscribe_errors == 1
    if '"channel":"book"' in frame and PAIR in frame:
        # a book hit by a bad message is discarded, never trusted
        assert not dec.is_valid(PAIR) and dec.resync == {PAIR}


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=8),
    lambda children: (
        st.lists(children, max_size=4)
        | st.dictionaries(
            st.sampled_from(
                [
                    "channel",
                    "type",
                    "data",
                    "symbol",
                    "bids",
                    "asks",
                    "price",
                    "qty",
                    "checksum",
                    "method",
                    "success",
                    "timestamp",
                    "interval_begin",
                    "pairs",
                ]
            ),
            children,
            max_size=6,
        )
    ),
    max_leaves=20,
)


@settings(max_examples=300, deadline=None)
@given(st.sampled_from(["book", "ohlc", "trade", "instrument", "heartbeat", None]), json_values)
def test_random_structures_never_crash_the_decoder(channel: str | None, body: Any) -> None:
    dec, _ = ready_decoder()
    frame = {"channel": channel, "type": "update", "data": body} if channel else body
    dec.feed(json.dumps(frame))
    # whatever happened, a valid book is still one whose checksum is right
    book = dec.books[PAIR]
    if dec.is_valid(PAIR):
        assert book.checksum() == book_checksum(book.asks.levels[:10], book.bids.levels[:10])


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=64))
def test_random_bytes_never_crash_the_decoder(blob: bytes) -> None:
    dec, _ = ready_decoder()
    dec.feed(blob)
