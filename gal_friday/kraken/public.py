"""Sans-IO decoder for Kraken's public WebSocket v2 stream.

``PublicStreamDecoder.feed(raw)`` takes one text frame exactly as received and returns the
domain events it produces. It owns the local books, verifies every checksum, tracks when each
channel last spoke for each pair, and lists the books that need a fresh snapshot. It never
raises on bad input: malformed or hostile frames are counted and logged, and a book touched by
one is discarded and marked for resubscription, because trading on a book known to be wrong
is worse than trading on none.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

import msgspec

from gal_friday.domain import InstrumentSpec
from gal_friday.events import (
    BookEvent,
    BookInvalidatedEvent,
    CandleEvent,
    Event,
    Side,
    TradeEvent,
)
from gal_friday.kraken.book import OrderBook
from gal_friday.timeutil import parse_ts_ns

log = logging.getLogger(__name__)

_decoder = msgspec.json.Decoder(float_hook=str)  # numbers stay exact text, never floats

BOOK, OHLC, TRADE, INSTRUMENT = "book", "ohlc", "trade", "instrument"


class FrameError(ValueError):
    """A frame that is valid JSON but not a well-formed Kraken message."""


def decode(raw: str | bytes) -> Any:
    """Parse one frame with numbers kept as their exact text."""
    return _decoder.decode(raw)


def _dec(raw: object) -> Decimal:
    if type(raw) is str or type(raw) is int:
        value = Decimal(raw)
        if value.is_finite():
            return value
    raise FrameError(f"not a number: {raw!r}")


def instrument_from_wire(item: dict[str, Any]) -> InstrumentSpec:
    """An ``instrument`` channel pair entry as a domain InstrumentSpec."""
    pp, qp = item["price_precision"], item["qty_precision"]
    if type(pp) is not int or type(qp) is not int or not (0 <= pp <= 18 and 0 <= qp <= 18):
        raise FrameError(f"bad precisions for {item.get('symbol')!r}")
    return InstrumentSpec(
        pair=str(item["symbol"]),
        price_precision=pp,
        qty_precision=qp,
        price_increment=_dec(item.get("price_increment", item.get("tick_size", "0"))),
        qty_increment=_dec(item.get("qty_increment", "0")),
        qty_min=_dec(item.get("qty_min", "0")),
        cost_min=_dec(item.get("cost_min", "0")),
        status=str(item.get("status", "online")),
    )


@dataclass
class DecoderStats:
    """Counters for the status line and monitoring."""

    frames: int = 0
    book_messages: int = 0
    malformed: int = 0
    checksum_failures: int = 0
    invalidations: int = 0
    subscribe_errors: int = 0
    last_frame_mono: float = 0.0
    errors: list[str] = field(default_factory=list)


@dataclass
class _OpenCandle:
    begin_ns: int
    event: CandleEvent


class PublicStreamDecoder:
    """Turns Kraken v2 public frames into verified domain events for the configured pairs."""

    def __init__(
        self,
        pairs: Iterable[str],
        depth: int,
        *,
        interval_min: int = 1,
        clock: Callable[[], int] = time.time_ns,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self.pairs = tuple(pairs)
        self.depth = depth
        self.interval_s = interval_min * 60
        self._clock = clock
        self._monotonic = monotonic
        self.instruments: dict[str, InstrumentSpec] = {}
        self.books: dict[str, OrderBook] = {}
        self._valid: dict[str, bool] = {}
        self._seq: dict[str, int] = {}
        self._candles: dict[str, _OpenCandle] = {}
        self.resync: set[str] = set()
        self.instruments_received = False
        # When each channel last spoke for each pair: the data age monitoring HALTs on. Only
        # a message moves it; reconnects and subscriptions never do.
        self.last_seen: dict[tuple[str, str], float] = {}
        # When each channel was last asked for on the current connection: the watchdog gives
        # a new subscription its full limit before it recycles the connection.
        self._asked: dict[tuple[str, str], float] = {}
        self.stats = DecoderStats()

    # --- connection lifecycle ------------------------------------------------------------

    def reset_connection(self, reason: str) -> list[Event]:
        """A new connection starts with no books; every known book is invalid until its
        snapshot arrives."""
        events: list[Event] = []
        for pair, book in self.books.items():
            book.clear()
            if self._valid.get(pair):
                events.append(BookInvalidatedEvent(pair, reason))
            self._valid[pair] = False
        self.resync.clear()
        self._asked.clear()
        return events

    def mark_subscribed(self, channel: str, pair: str) -> None:
        """We asked for a channel and pair on this connection: the watchdog's clock starts
        now. The data age starts here only if nothing was ever received (so a feed that
        never delivers still ages); otherwise it keeps counting from the last message,
        whatever the reconnects do, so the stale-data HALT fires during an outage."""
        now = self._monotonic()
        self._asked[(channel, pair)] = now
        self.last_seen.setdefault((channel, pair), now)

    def book_ready(self) -> bool:
        return bool(self.books) and all(self._valid.get(p) for p in self.pairs)

    def is_valid(self, pair: str) -> bool:
        return self._valid.get(pair, False)

    # --- frames ------------------------------------------------------------------------------

    def feed(self, raw: str | bytes) -> list[Event]:
        """Decode one frame; never raises for bad input."""
        stats = self.stats
        stats.frames += 1
        stats.last_frame_mono = self._monotonic()
        try:
            msg = _decoder.decode(raw)
        except (msgspec.DecodeError, UnicodeDecodeError) as exc:
            return self._malformed(f"undecodable frame: {exc}")
        if type(msg) is not dict:
            return self._malformed("frame is not a JSON object")
        channel = msg.get("channel")
        try:
            if channel == BOOK:
                return self._on_book(msg)
            if channel == OHLC:
                return self._on_ohlc(msg)
            if channel == TRADE:
                return self._on_trade(msg)
            if channel == INSTRUMENT:
                return self._on_instrument(msg)
            if channel in ("heartbeat", "status"):
                return []
            if "method" in msg:
                return self._on_response(msg)
        except (KeyError, TypeError, ValueError, IndexError, AttributeError) as exc:
            return self._malformed(f"bad {channel or 'unknown'} message: {exc!r}")
        return self._malformed(f"unknown channel {str(channel)[:40]!r}")

    def _malformed(self, why: str) -> list[Event]:
        self.stats.malformed += 1
        log.warning("malformed kraken message", extra={"detail": why[:300]})
        return []

    # --- book --------------------------------------------------------------------------------

    def _on_book(self, msg: dict[str, Any]) -> list[Event]:
        is_snapshot = msg["type"] == "snapshot"
        received = self._clock()
        events: list[Event] = []
        for item in msg["data"]:
            pair = item["symbol"]
            book = self.books.get(pair)
            if book is None:
                continue  # not ours, or instrument not known yet
            self.stats.book_messages += 1
            self.last_seen[(BOOK, pair)] = self.stats.last_frame_mono
            if not is_snapshot and not self._valid[pair]:
                continue  # waiting for a fresh snapshot; updates to a discarded book mean nothing
            try:
                if is_snapshot:
                    book.apply_snapshot(item["bids"], item["asks"])
                    self._seq[pair] = 0
                else:
                    book.apply_update(item["bids"], item["asks"])
                expected = item["checksum"]
            except (KeyError, TypeError, ValueError) as exc:
                self.stats.malformed += 1
                events.extend(self._invalidate(pair, f"malformed book message: {exc}"))
                continue
            if book.checksum() != expected:
                self.stats.checksum_failures += 1
                events.extend(self._invalidate(pair, "checksum mismatch"))
                continue
            bids, asks = book.top(self.depth)
            if bids and asks and bids[0][0] >= asks[0][0]:
                events.extend(self._invalidate(pair, "crossed book"))
                continue
            if not self._valid[pair]:
                self._valid[pair] = True
                self.resync.discard(pair)
            seq = self._seq[pair] = self._seq[pair] + 1
            ts = item.get("timestamp")
            events.append(
                BookEvent(
                    pair,
                    bids,
                    asks,
                    book.price_precision,
                    book.qty_precision,
                    expected,
                    seq,
                    is_snapshot,
                    ts if type(ts) is str else "",
                    received,
                )
            )
        return events

    def _invalidate(self, pair: str, reason: str) -> list[Event]:
        """Discard the book and ask for a fresh snapshot; never publish from the bad state."""
        log.warning("book discarded, resubscribing", extra={"pair": pair, "reason": reason})
        self.books[pair].clear()
        self.stats.invalidations += 1
        was_valid = self._valid.get(pair, False)
        self._valid[pair] = False
        self.resync.add(pair)
        return [BookInvalidatedEvent(pair, reason)] if was_valid else []

    # --- candles and trades ------------------------------------------------------------------

    def _ours(self, msg: dict[str, Any], channel: str) -> Iterator[tuple[str, dict[str, Any]]]:
        """The data items for our pairs, each marking its channel as alive for that pair."""
        for item in msg["data"]:
            pair = item["symbol"]
            if pair in self.books:
                self.last_seen[(channel, pair)] = self.stats.last_frame_mono
                yield pair, item

    def _on_ohlc(self, msg: dict[str, Any]) -> list[Event]:
        events: list[Event] = []
        received = self._clock()
        for pair, item in self._ours(msg, OHLC):
            if item.get("interval", self.interval_s // 60) * 60 != self.interval_s:
                continue
            begin = parse_ts_ns(item["interval_begin"])
            candle = CandleEvent(
                pair,
                self.interval_s,
                begin,
                _dec(item["open"]),
                _dec(item["high"]),
                _dec(item["low"]),
                _dec(item["close"]),
                _dec(item["volume"]),
                _dec(item.get("vwap", item["close"])),
                int(item.get("trades", 0)),
                False,
                received,
            )
            events.extend(self._roll_candle(pair, begin, candle))
        return events

    def _roll_candle(self, pair: str, begin: int, candle: CandleEvent) -> list[Event]:
        """Kraken re-sends the open candle until it rolls; a newer ``interval_begin`` closes
        the previous one. Older candles (a snapshot's history) are closed on arrival."""
        open_candle = self._candles.get(pair)
        if open_candle is not None and begin < open_candle.begin_ns:
            return [_closed(candle)]
        events: list[Event] = []
        if open_candle is not None and begin > open_candle.begin_ns:
            events.append(_closed(open_candle.event))
        self._candles[pair] = _OpenCandle(begin, candle)
        events.append(candle)
        return events

    def _on_trade(self, msg: dict[str, Any]) -> list[Event]:
        events: list[Event] = []
        received = self._clock()
        for pair, item in self._ours(msg, TRADE):
            events.append(
                TradeEvent(
                    pair,
                    int(item["trade_id"]),
                    Side(item["side"]),
                    _dec(item["price"]),
                    _dec(item["qty"]),
                    str(item.get("ord_type", "")),
                    parse_ts_ns(item["timestamp"]),
                    received,
                )
            )
        return events

    # --- instruments and responses -----------------------------------------------------------

    def _on_instrument(self, msg: dict[str, Any]) -> list[Event]:
        self.instruments_received = True
        wanted = set(self.pairs)
        for item in msg["data"]["pairs"]:
            if item.get("symbol") not in wanted:
                continue
            spec = instrument_from_wire(item)
            old = self.instruments.get(spec.pair)
            self.instruments[spec.pair] = spec
            book = self.books.get(spec.pair)
            if book is None:
                self.books[spec.pair] = OrderBook(
                    spec.pair, self.depth, spec.price_precision, spec.qty_precision
                )
                self._valid[spec.pair] = False
                self._seq[spec.pair] = 0
            elif old is not None and (
                (old.price_precision, old.qty_precision)
                != (spec.price_precision, spec.qty_precision)
            ):
                book.price_precision, book.qty_precision = spec.price_precision, spec.qty_precision
                return self._invalidate(spec.pair, "instrument precision changed")
        return []

    def missing_instruments(self) -> list[str]:
        return [p for p in self.pairs if p not in self.instruments]

    def _on_response(self, msg: dict[str, Any]) -> list[Event]:
        if msg.get("success") is False:
            self.stats.subscribe_errors += 1
            text = f"{msg.get('method')} {msg.get('symbol', '')}: {msg.get('error')}"
            self.stats.errors.append(text[:200])
            del self.stats.errors[:-20]
            log.error("kraken refused a request", extra={"detail": text[:300]})
        return []

    def stale(self, now: float, limits: dict[str, float]) -> str | None:
        """The first channel/pair silent on this connection for longer than its limit (since
        its last message or, if later, since we asked for it), as a reason, or None."""
        for key, seen in self.last_seen.items():
            channel, pair = key
            limit = limits.get(channel, 0.0)
            quiet = now - max(seen, self._asked.get(key, seen))
            if limit > 0 and quiet > limit:
                return f"no {channel} data for {pair} in {quiet:.1f}s (limit {limit:g}s)"
        return None

    def data_age(self, now: float, channel: str, pair: str) -> float | None:
        """Seconds since the channel last spoke for the pair (None: never asked for)."""
        seen = self.last_seen.get((channel, pair))
        return None if seen is None else now - seen


def _closed(candle: CandleEvent) -> CandleEvent:
    return CandleEvent(
        candle.pair,
        candle.interval_s,
        candle.open_ts_ns,
        candle.open,
        candle.high,
        candle.low,
        candle.close,
        candle.volume,
        candle.vwap,
        candle.trades,
        True,
        candle.received_ts_ns,
    )
