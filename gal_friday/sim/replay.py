"""Replay of a ``gal-friday record`` recording as a market the simulator can serve.

The recording holds the raw frames one client received (at one book depth). Replaying them
verbatim would only serve that client's view, so the replay rebuilds the market instead: the
recorded ``instrument`` snapshot gives the pairs, the recorded ``book`` messages are applied to
the simulator's own full book per pair (truncated to the recorded depth, exactly as the
recording client kept it), and recorded prints go on the tape with fresh trade ids and
timestamps. The exchange server then serves every subscriber its own snapshot and diffs at
its own depth with checksums it computes, and candles are rebuilt from the prints, so REST
and WebSocket agree. Recorded acks, heartbeats, status and ``ohlc`` frames are not replayed.

Timing follows the recorded receive times divided by ``speed`` (0 = as fast as the
subscribers drain). All stamps are the replay's wall-clock time, so the data looks live.
Before serving, the recording's opening frames are applied up to the first book snapshot of
every pair, so early subscribers get a full book rather than an empty one.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import msgspec

from gal_friday.kraken.numbers import WireNumberError, to_scaled
from gal_friday.kraken.recorder import RecordingError, read_recording
from gal_friday.sim.depth import FullBook
from gal_friday.sim.history import generate_history
from gal_friday.sim.instruments import INSTRUMENTS, instrument_from_wire
from gal_friday.sim.source import MarketSink, MarketSource
from gal_friday.sim.tape import Tape, Trade

log = logging.getLogger("gal_friday.sim")

_decoder = msgspec.json.Decoder(float_hook=str)  # amounts stay exact text
_WARMUP_FRAMES = 20_000  # how far to look for the instrument list and first snapshots
_FAST_CHUNK = 200  # frames between yields to the event loop when speed is 0
_FIRST_TRADE_ID = 40_000_000
_FRAME_ERRORS = (KeyError, TypeError, AttributeError, ValueError, IndexError)


class ReplayMarket(MarketSource):
    """A market rebuilt from a recording; see the module docstring."""

    def __init__(
        self,
        path: str | Path,
        *,
        speed: float = 1.0,
        loop: bool = False,
        seed: int = 7,
        history_hours: float = 24.0,
    ) -> None:
        super().__init__()
        if speed < 0:
            raise ValueError("speed must be >= 0")
        self.path = Path(path)
        self.speed = speed
        self.loop = loop
        self.frames_replayed = 0
        self.checksum_mismatches = 0  # recorded checksums our rebuilt book disagreed with
        header, frames = read_recording(self.path)
        self.header = header
        self.depth = int(header.get("depth") or 1000)
        self._frames: Iterator[tuple[int, str]] = frames
        self._pending: tuple[int, str] | None = None
        self._warm_up(header, seed, history_hours)

    # --- opening --------------------------------------------------------------------------

    def _warm_up(self, header: dict[str, Any], seed: int, history_hours: float) -> None:
        """Find the instruments, apply frames up to the first snapshot of every pair, and
        give each pair a back-history ending where the recording starts."""
        wanted = [str(p) for p in header.get("pairs") or []]
        now = time.time_ns()
        seen: set[str] = set()
        for scanned, (t, raw) in enumerate(self._frames, 1):
            msg = _parse(raw)
            channel = msg.get("channel") if msg is not None else None
            try:
                if msg is not None and channel == "instrument":
                    self._load_instruments(msg, wanted)
                elif msg is not None and channel == "book" and self.instruments:
                    seen.update(self._apply_book(msg, now))
                elif msg is not None and channel == "trade" and self.instruments:
                    self._apply_trades(msg, now)
            except _FRAME_ERRORS:
                pass  # a hostile frame the recording client also had to skip
            if self.instruments and seen >= set(self.instruments):
                break
            if scanned >= _WARMUP_FRAMES:
                self._pending = (t, raw)
                break
        if not self.instruments:
            self._instruments_from_table(wanted)
        self._add_history(seed, now, history_hours)

    def _load_instruments(self, msg: dict[str, Any], wanted: list[str]) -> None:
        """Pairs of the recorded instrument snapshot that the recording actually streamed."""
        for pair in msg["data"]["pairs"]:
            if wanted and pair.get("symbol") not in wanted:
                continue
            inst = instrument_from_wire(pair)
            if inst.symbol not in self.instruments:
                self.instruments[inst.symbol] = inst
                self.books[inst.symbol] = FullBook(
                    inst.symbol, inst.price_precision, inst.qty_precision
                )
                self.tapes[inst.symbol] = Tape(
                    _FIRST_TRADE_ID, inst.price_precision, inst.qty_precision
                )

    def _instruments_from_table(self, wanted: list[str]) -> None:
        known = [p for p in wanted if p in INSTRUMENTS]
        if not known:
            raise RecordingError(f"{self.path}: no instrument snapshot and no known pair")
        for symbol in known:
            inst = INSTRUMENTS[symbol]
            self.instruments[symbol] = inst
            self.books[symbol] = FullBook(symbol, inst.price_precision, inst.qty_precision)
            self.tapes[symbol] = Tape(_FIRST_TRADE_ID, inst.price_precision, inst.qty_precision)

    def _add_history(self, seed: int, now: int, hours: float) -> None:
        """Synthetic back-history for REST, ending at the recording's opening price."""
        for symbol, inst in self.instruments.items():
            tape = self.tapes[symbol]
            book = self.books[symbol]
            opening = tape.last_price
            if opening is None and book.bids and book.asks:
                opening = (book.bids.best() + book.asks.best()) // 2
            if opening is None or inst.profile is None:
                continue
            history = generate_history(inst, seed, now - 1, hours, end_price=opening)
            live = Tape(_FIRST_TRADE_ID, inst.price_precision, inst.qty_precision)
            live.load_history(
                history.ts_ns, history.price, history.qty, history.buy, history.market
            )
            for index in range(len(tape.ts)):  # prints seen while warming up come last
                old = tape.trade(index)
                live.add(old.ts_ns, old.price, old.qty, old.side, old.ord_type)
            self.tapes[symbol] = live

    # --- applying frames ---------------------------------------------------------------------

    def _apply_book(self, msg: dict[str, Any], now: int) -> list[str]:
        """Apply a recorded book message to the full book; returns the pairs it touched."""
        touched = []
        snapshot = msg.get("type") == "snapshot"
        ts_s = now // 1_000_000_000
        for item in msg["data"]:
            book = self.books.get(item.get("symbol"))
            if book is None:
                continue
            pp, qp = book.price_precision, book.qty_precision
            try:
                levels = [
                    (True, to_scaled(lv["price"], pp), to_scaled(lv["qty"], qp))
                    for lv in item["bids"]
                ]
                levels += [
                    (False, to_scaled(lv["price"], pp), to_scaled(lv["qty"], qp))
                    for lv in item["asks"]
                ]
            except (KeyError, TypeError, WireNumberError):
                continue  # the recording caught a hostile frame: the client skipped it too
            if snapshot:
                book.clear()
            for is_bid, price, qty in levels:
                book.set(is_bid, price, qty, ts_s)
            self._truncate(book, ts_s)
            if item.get("checksum") != book.checksum():
                self.checksum_mismatches += 1
            touched.append(book.symbol)
        return touched

    def _truncate(self, book: FullBook, ts_s: int) -> None:
        """Drop levels beyond the recorded depth, as the recording client did."""
        for is_bid in (True, False):
            side = book.side(is_bid)
            while len(side) > self.depth:
                book.set(is_bid, side.worst(), 0, ts_s)

    def _apply_trades(self, msg: dict[str, Any], now: int) -> dict[str, list[Trade]]:
        """Put recorded prints on the tapes (snapshots included: they are real prints)."""
        out: dict[str, list[Trade]] = {}
        for item in msg["data"]:
            symbol = item.get("symbol")
            tape = self.tapes.get(symbol)
            if tape is None:
                continue
            try:
                price = to_scaled(item["price"], tape.price_precision)
                qty = to_scaled(item["qty"], tape.qty_precision)
            except (KeyError, TypeError, WireNumberError):
                continue
            side = "sell" if item.get("side") == "sell" else "buy"
            ord_type = "market" if item.get("ord_type") == "market" else "limit"
            out.setdefault(symbol, []).append(tape.add(now, price, qty, side, ord_type))
        return out

    def _feed(self, raw: str, sink: MarketSink) -> None:
        """Apply one recorded frame and notify the sink of what changed."""
        msg = _parse(raw)
        if msg is None:
            return
        channel = msg.get("channel")
        now = time.time_ns()
        self.frames_replayed += 1
        try:
            if channel == "book":
                touched = self._apply_book(msg, now)
                changes: dict[str, list[Trade]] = {}
            elif channel == "trade" and msg.get("type") == "update":
                changes = self._apply_trades(msg, now)
                touched = []
            else:
                return
        except _FRAME_ERRORS:
            return  # a hostile frame the recording client also had to skip
        for symbol in touched:
            sink.on_market(symbol, (), True, now)
        for symbol, trades in changes.items():
            sink.on_market(symbol, trades, False, now)

    # --- running -----------------------------------------------------------------------------

    async def run(self, sink: MarketSink) -> None:
        """Feed the frames at the recorded pace (or as fast as possible); loop if asked."""
        while True:
            before = self.frames_replayed
            await self._play(sink)
            await asyncio.sleep(0)  # a short recording at speed 0 must not hog the loop
            if not self.loop or self.frames_replayed == before:
                break
            _, self._frames = read_recording(self.path)
            self._pending = None
            log.info("replay looping", extra={"path": str(self.path)})
        self.finished = True
        log.info("replay finished", extra={"path": str(self.path), "frames": self.frames_replayed})

    async def _play(self, sink: MarketSink) -> None:
        frames = self._frames
        first = self._pending or next(frames, None)
        self._pending = None
        if first is None:
            return
        loop = asyncio.get_running_loop()
        t0, wall0 = first[0], loop.time()
        self._feed(first[1], sink)
        count = 0
        for t, raw in frames:
            if self.speed > 0:
                delay = wall0 + (t - t0) / 1e9 / self.speed - loop.time()
                if delay > 0.001:
                    await sink.drain()
                    await asyncio.sleep(delay)
            else:
                count += 1
                if count % _FAST_CHUNK == 0:
                    await sink.drain()
                    await asyncio.sleep(0)
            self._feed(raw, sink)
        await sink.drain()


def _parse(raw: str) -> dict[str, Any] | None:
    try:
        msg = _decoder.decode(raw)
    except (msgspec.DecodeError, UnicodeDecodeError):
        return None
    return msg if isinstance(msg, dict) else None
