"""Fan-out of the simulator's public market data to its WebSocket subscribers.

Each client connection (``Conn``) has its own outbound queue, its subscriptions and the
stalls a fault put on it. ``FanOut`` keeps who listens to what: book subscribers of one pair
at one depth share one ``DepthView`` and one encoded message per change (``BookGroup``);
trade and candle subscribers are sets per pair (and interval). ``on_market`` turns one market
change into frames for exactly those subscribers; a client that falls ``MAX_QUEUE`` frames
behind is dropped, and ``drain`` lets a replay wait for slow readers.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass

from aiohttp import web

from gal_friday.sim import wire
from gal_friday.sim.depth import DepthView
from gal_friday.sim.faults import Stall
from gal_friday.sim.source import MarketSource
from gal_friday.sim.stats import SimStats
from gal_friday.sim.tape import Trade

log = logging.getLogger("gal_friday.sim")

TRADE_SNAPSHOT = 50
OHLC_SNAPSHOT = 10
HEARTBEAT_S = 1.0
MAX_QUEUE = 50_000  # frames queued for one client before it is dropped as too slow
HIGH_WATER = 2_000  # replays pause while any client has more than this queued
DRAIN_PATIENCE_S = 5.0


@dataclass(frozen=True)
class Sub:
    """One subscription of one connection (``symbol`` None for ``instrument``)."""

    channel: str
    symbol: str | None
    snapshot: bool
    depth: int = 0
    interval: int = 0


def sub_key(sub: Sub) -> tuple[str, str | None]:
    """What makes a subscription a duplicate: channel (and candle interval) and symbol."""
    if sub.channel == "ohlc":
        return (f"ohlc:{sub.interval}", sub.symbol)
    return (sub.channel, sub.symbol)


class Conn:
    """One client connection: its outbound queue, subscriptions and active stalls."""

    def __init__(self, cid: int, ws: web.WebSocketResponse, request: web.Request) -> None:
        self.cid = cid
        self.ws = ws
        self.transport = request.transport
        self.queue: asyncio.Queue[str | bytes] = asyncio.Queue()
        self.subs: dict[tuple[str, str | None], Sub] = {}
        self.stalls: list[Stall] = []
        self.timers: list[asyncio.TimerHandle] = []  # pending stall releases
        self.last_out = time.monotonic()
        self.closed = False

    def send(
        self, frame: str | bytes, channel: str | None = None, symbol: str | None = None
    ) -> None:
        """Queue a frame, unless a stall matching it holds it back."""
        if self.closed:
            return
        for stall in self.stalls:
            if stall.matches(channel, symbol):
                stall.held.append((frame, channel, symbol))
                return
        self.queue.put_nowait(frame)
        self.last_out = time.monotonic()

    @property
    def silenced(self) -> bool:
        return any(s.total for s in self.stalls)

    def release(self, stall: Stall) -> None:
        """End a stall: its held frames go out in order (or into another active stall)."""
        if stall in self.stalls:
            self.stalls.remove(stall)
            for frame, channel, symbol in stall.held:
                self.send(frame, channel, symbol)
            stall.held.clear()

    def abort(self) -> None:
        """Cut the TCP connection without a close frame, as a crashing server would."""
        self.closed = True
        if self.transport is not None:
            self.transport.abort()


class BookGroup:
    """Book subscribers of one pair at one depth, sharing one view."""

    __slots__ = ("conns", "view")

    def __init__(self, view: DepthView) -> None:
        self.view = view
        self.conns: set[Conn] = set()


class FanOut:
    """The open connections and who is subscribed to what; sends market changes to them."""

    def __init__(self, market: MarketSource, stats: SimStats) -> None:
        self.market = market
        self.stats = stats
        self.conns: set[Conn] = set()
        self.books: dict[str, dict[int, BookGroup]] = {}
        self.trades: dict[str, set[Conn]] = {}
        self.ohlc: dict[str, dict[int, set[Conn]]] = {}
        self.corrupt: set[str] = set()  # pairs whose next book checksum is to be wrong

    # --- market changes ------------------------------------------------------------------------

    def on_market(
        self, symbol: str, trades: Sequence[Trade], book_changed: bool, ts_ns: int
    ) -> None:
        """Fan one market change out to the subscribers of the pair."""
        if trades and self.trades.get(symbol):
            self.send_trades(symbol, "update", trades, self.trades[symbol])
        if book_changed and self.books.get(symbol):
            self._send_book_updates(symbol, ts_ns)
        if trades and self.ohlc.get(symbol):
            self._send_candles(symbol, trades[-1].ts_ns)

    async def drain(self) -> None:
        """Wait while a client is far behind; drop clients that stay behind too long."""
        deadline = time.monotonic() + DRAIN_PATIENCE_S
        while any(c.queue.qsize() > HIGH_WATER for c in self.conns):
            if time.monotonic() > deadline:
                for conn in [c for c in self.conns if c.queue.qsize() > HIGH_WATER]:
                    self.drop_slow(conn)
                return
            await asyncio.sleep(0.005)

    def send_trades(
        self, symbol: str, kind: str, trades: Sequence[Trade], conns: set[Conn]
    ) -> None:
        inst = self.market.instruments[symbol]
        pp, qp = inst.price_precision, inst.qty_precision
        items = [
            wire.trade_item(symbol, t.side, t.price, t.qty, t.ord_type, t.trade_id, t.ts_ns, pp, qp)
            for t in trades
        ]
        self._fan_out(wire.trades(kind, items), "trade", symbol, conns)

    def _send_book_updates(self, symbol: str, ts_ns: int) -> None:
        book = self.market.books[symbol]
        checksum: int | None = None
        for group in list(self.books[symbol].values()):  # a slow client may leave mid-way
            diff = group.view.update()
            if diff is None:
                continue
            if checksum is None:
                checksum = self.checksum_to_send(symbol)
            frame = wire.book(
                "update",
                symbol,
                diff[0],
                diff[1],
                checksum,
                ts_ns,
                book.price_precision,
                book.qty_precision,
            )
            self._fan_out(frame, "book", symbol, group.conns)

    def checksum_to_send(self, symbol: str) -> int:
        """The book's checksum, or a wrong one if the corrupt-checksum fault is armed."""
        checksum = self.market.books[symbol].checksum()
        if symbol in self.corrupt:
            self.corrupt.discard(symbol)
            checksum = (checksum + 1) & 0xFFFFFFFF
        return checksum

    def _send_candles(self, symbol: str, ts_ns: int) -> None:
        inst = self.market.instruments[symbol]
        tape = self.market.tapes[symbol]
        for interval, conns in list(self.ohlc[symbol].items()):
            candle = tape.current(interval, ts_ns)
            item = wire.ohlc_item(
                symbol, candle, interval, inst.price_precision, inst.qty_precision
            )
            self._fan_out(wire.ohlc("update", [item], time.time_ns()), "ohlc", symbol, conns)

    def _fan_out(self, frame: str, channel: str, symbol: str, conns: set[Conn]) -> None:
        for conn in list(conns):
            conn.send(frame, channel, symbol)
            if conn.queue.qsize() > MAX_QUEUE:
                self.drop_slow(conn)

    def drop_slow(self, conn: Conn) -> None:
        log.warning("dropping a client too slow to read", extra={"connection": conn.cid})
        self.stats.slow_disconnects += 1
        conn.abort()
        self.forget(conn)

    # --- subscribers ---------------------------------------------------------------------------

    def add(self, conn: Conn, sub: Sub) -> None:
        """Put a new ``book`` / ``trade`` / ``ohlc`` subscription on its pair's list and send
        its snapshot if it asked for one."""
        symbol = sub.symbol
        assert symbol is not None
        if sub.channel == "book":
            self._add_book(conn, sub)
        elif sub.channel == "trade":
            self.trades.setdefault(symbol, set()).add(conn)
            if sub.snapshot:
                trades = self.market.tapes[symbol].last_trades(TRADE_SNAPSHOT)
                self.send_trades(symbol, "snapshot", trades, {conn})
        else:
            self.ohlc.setdefault(symbol, {}).setdefault(sub.interval, set()).add(conn)
            if sub.snapshot:
                self._send_candle_snapshot(conn, symbol, sub.interval)

    def _add_book(self, conn: Conn, sub: Sub) -> None:
        symbol = sub.symbol
        assert symbol is not None
        groups = self.books.setdefault(symbol, {})
        group = groups.get(sub.depth)
        book = self.market.books[symbol]
        if group is None:
            group = groups[sub.depth] = BookGroup(DepthView(book, sub.depth))
        group.conns.add(conn)
        if sub.snapshot:
            bids, asks = group.view.snapshot()
            conn.send(
                wire.book(
                    "snapshot",
                    symbol,
                    bids,
                    asks,
                    self.checksum_to_send(symbol),
                    time.time_ns(),
                    book.price_precision,
                    book.qty_precision,
                ),
                "book",
                symbol,
            )

    def _send_candle_snapshot(self, conn: Conn, symbol: str, interval: int) -> None:
        inst = self.market.instruments[symbol]
        now = time.time_ns()
        candles = self.market.tapes[symbol].candles(interval, now, OHLC_SNAPSHOT)
        items = [
            wire.ohlc_item(symbol, c, interval, inst.price_precision, inst.qty_precision)
            for c in candles
        ]
        conn.send(wire.ohlc("snapshot", items, now), "ohlc", symbol)

    def remove(self, conn: Conn, sub: Sub) -> None:
        """Forget one subscription of a connection, dropping groups nobody uses."""
        if conn.subs.pop(sub_key(sub), None) is None:
            return
        self.stats.active_subscriptions -= 1
        symbol = sub.symbol
        if sub.channel == "book" and symbol is not None:
            groups = self.books.get(symbol, {})
            group = groups.get(sub.depth)
            if group is not None:
                group.conns.discard(conn)
                if not group.conns:
                    del groups[sub.depth]
        elif sub.channel == "trade" and symbol is not None:
            self.trades.get(symbol, set()).discard(conn)
        elif sub.channel == "ohlc" and symbol is not None:
            intervals = self.ohlc.get(symbol, {})
            intervals.get(sub.interval, set()).discard(conn)
            if not intervals.get(sub.interval, True):
                del intervals[sub.interval]

    def forget(self, conn: Conn) -> None:
        """Remove a connection and all its subscriptions."""
        if conn not in self.conns:
            return
        self.conns.discard(conn)
        conn.closed = True
        for timer in conn.timers:
            timer.cancel()
        self.stats.connections_open -= 1
        for sub in list(conn.subs.values()):
            self.remove(conn, sub)

    async def heartbeats(self) -> None:
        """A heartbeat on each subscribed connection that sent nothing for a second."""
        while True:
            await asyncio.sleep(HEARTBEAT_S / 4)
            now = time.monotonic()
            for conn in list(self.conns):
                if conn.subs and not conn.silenced and now - conn.last_out >= HEARTBEAT_S:
                    conn.send(wire.HEARTBEAT, "heartbeat")
