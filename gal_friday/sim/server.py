"""A loopback exchange that speaks Kraken's public WebSocket v2 and public REST.

One aiohttp server on one port serves:

* ``ws://HOST:PORT/v2`` -- WebSocket v2: ``status`` on connect, ``ping``, ``subscribe`` and
  ``unsubscribe`` for ``instrument``, ``book`` (depth 10/25/100/500/1000, checksummed),
  ``trade`` and ``ohlc``; heartbeats about once a second on an otherwise idle subscribed
  connection;
* ``http://HOST:PORT/0/public/<Method>`` -- REST ``Time``, ``SystemStatus``, ``AssetPairs``,
  ``OHLC``, ``Trades``, ``Depth`` (GET, or POST with a form or JSON body);
* ``POST /sim/fault/<name>`` and ``GET /sim/stats`` -- the misbehaviour switches and counters
  for a simulator started in another process (names below);
* ``http://HOST:PORT/0/private/<Method>`` -- signed private REST (``Balance``,
  ``GetWebSocketsToken``, ``AddOrder``, ``CancelOrder``, ``CancelAll``,
  ``CancelAllOrdersAfter``, ``OpenOrders``, ``ClosedOrders``, ``QueryOrders``,
  ``TradesHistory``) and ``ws://HOST:PORT/auth/v2`` -- the token-authenticated WebSocket v2
  (``executions``, ``balances``, ``add_order``, ``cancel_order``, ``cancel_all``,
  ``cancel_all_orders_after``); both trade through one ``SimTrading`` (``sim.trading``) that
  the market feeds, so orders fill against the simulated book (see ``sim/private.py``).

The market comes from a ``MarketSource``: the seeded ``SyntheticMarket`` or a ``ReplayMarket``.
Book subscribers at the same depth share one ``DepthView`` and one encoded message per change.

Entry points::

    SimExchange(market=None, host="127.0.0.1", port=0, *, seed=7, maker_fee_pct=0.25,
                taker_fee_pct=0.40, latency_ns=0, slippage_bps=0, account=None)
        await start() / await stop(), or ``async with``; ws_url, ws_auth_url, rest_url, port,
        stats, private (API keys), trading (orders, account);
        faults: drop_connections(), corrupt_next_checksum(symbol), send_hostile(kind, symbol),
        stall(seconds, channel=None, symbol=None), clear_faults(),
        reject_next_orders(n, error), drop_after_accept(n), set_balance(asset, amount).

    async def run_sim_exchange(host="127.0.0.1", port=0, seed=7, replay_path=None, speed=1.0,
                               rate=20.0, loop=False, *, pairs=("XRP/USD", "DOGE/USD")) -> None
        Serve until cancelled; logs the URLs once (logger ``gal_friday.sim``). Also accepts
        ``run_sim_exchange(sim_settings, pairs, loop=...)`` with the config's ``[sim]`` section.

    open_sim_exchange(sim_settings, pairs)  -> async context manager yielding a started
        SimExchange (for ``exchange = "sim"``).

HTTP fault names (parameters in the query string, a form or a JSON body): ``drop``;
``corrupt_checksum`` (``symbol``); ``hostile`` (``kind`` = malformed | wrong_types |
unknown_channel | not_object | binary, optional ``symbol``), ``malformed`` (= hostile with
kind malformed); ``stall`` (``seconds``, optional ``channel``, ``symbol``); ``clear``;
``reject_next_orders`` (``n``, ``error``); ``drop_after_accept`` (``n``); ``set_balance``
(``asset``, ``amount``).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import random
import time
from collections.abc import AsyncIterator, Sequence
from dataclasses import asdict, dataclass, field
from decimal import Decimal
from pathlib import Path
from types import TracebackType
from typing import Any, Protocol, overload

from aiohttp import WSMsgType, web

from gal_friday.sim import wire
from gal_friday.sim.account import SimAccount
from gal_friday.sim.depth import DepthView
from gal_friday.sim.faults import HOSTILE_KINDS, Stall, hostile_frame
from gal_friday.sim.instruments import ASSETS
from gal_friday.sim.market import DEFAULT_PAIRS, SyntheticMarket
from gal_friday.sim.private import PrivateRest, PrivateWebSocket
from gal_friday.sim.replay import ReplayMarket
from gal_friday.sim.rest import OHLC_INTERVALS, PublicRest
from gal_friday.sim.source import MarketSource
from gal_friday.sim.tape import Trade
from gal_friday.sim.trading import SimTrading

log = logging.getLogger("gal_friday.sim")

BOOK_DEPTHS = (10, 25, 100, 500, 1000)
TRADE_SNAPSHOT = 50
OHLC_SNAPSHOT = 10
HEARTBEAT_S = 1.0
MAX_QUEUE = 50_000  # frames queued for one client before it is dropped as too slow
HIGH_WATER = 2_000  # replays pause while any client has more than this queued
DRAIN_PATIENCE_S = 5.0
ERR_MALFORMED = "Malformed request"
ERR_ARGS = "EGeneral:Invalid arguments"
ERR_ALREADY = "Already subscribed"
ERR_NOT_FOUND = "Subscription Not Found"
_OHLC_WARNING = "timestamp is deprecated, use interval_begin"
_INSTRUMENT_WARNING = "tick_size is deprecated, use price_increment"


@dataclass
class SimStats:
    """Counters for tests and the ``/sim/stats`` endpoint."""

    connections_accepted: int = 0
    connections_open: int = 0
    subscriptions: int = 0  # successful subscribe acks, ever
    unsubscriptions: int = 0
    active_subscriptions: int = 0
    requests: int = 0
    errors_sent: int = 0
    frames_sent: int = 0
    slow_disconnects: int = 0
    rest_requests: int = 0
    faults: dict[str, int] = field(default_factory=dict)

    def fault(self, name: str) -> None:
        self.faults[name] = self.faults.get(name, 0) + 1


@dataclass(frozen=True)
class _Sub:
    channel: str
    symbol: str | None
    snapshot: bool
    depth: int = 0
    interval: int = 0


class _RequestError(Exception):
    """A request the exchange refuses as a whole (no per-symbol ``symbol`` field)."""


class _Conn:
    """One client connection: its outbound queue, subscriptions and active stalls."""

    def __init__(self, cid: int, ws: web.WebSocketResponse, request: web.Request) -> None:
        self.cid = cid
        self.ws = ws
        self.transport = request.transport
        self.queue: asyncio.Queue[str | bytes] = asyncio.Queue()
        self.subs: dict[tuple[str, str | None], _Sub] = {}
        self.stalls: list[Stall] = []
        self.timers: list[asyncio.TimerHandle] = []  # pending stall releases
        self.last_out = time.monotonic()
        self.closed = False

    def send(self, frame: str | bytes, channel: str | None = None,
             symbol: str | None = None) -> None:
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


class _BookGroup:
    """Book subscribers of one pair at one depth, sharing one view."""

    __slots__ = ("conns", "view")

    def __init__(self, view: DepthView) -> None:
        self.view = view
        self.conns: set[_Conn] = set()


class SimExchange:
    """The simulated Kraken public API on one loopback port; see the module docstring."""

    def __init__(self, market: MarketSource | None = None, host: str = "127.0.0.1",
                 port: int = 0, *, seed: int = 7, maker_fee_pct: Decimal = Decimal("0.25"),
                 taker_fee_pct: Decimal = Decimal("0.40"), latency_ns: int = 0,
                 slippage_bps: Decimal = Decimal(0), account: SimAccount | None = None) -> None:
        self.market = market if market is not None else SyntheticMarket(seed)
        self.host = host
        self._requested_port = port
        self._port: int | None = None
        self.stats = SimStats()
        self._rest = PublicRest(self.market)
        self.trading = SimTrading(self.market, maker_fee_pct=maker_fee_pct,
                                  taker_fee_pct=taker_fee_pct, latency_ns=latency_ns,
                                  slippage_bps=slippage_bps, account=account, seed=seed)
        # accepted API keys: self.private.add_key(key, secret)
        self.private = PrivateRest(self.trading)
        self.private_ws = PrivateWebSocket(self.private, self.trading)
        self._ids = random.Random(seed)
        self._conns: set[_Conn] = set()
        self._books: dict[str, dict[int, _BookGroup]] = {}
        self._trades: dict[str, set[_Conn]] = {}
        self._ohlc: dict[str, dict[int, set[_Conn]]] = {}
        self._corrupt: set[str] = set()
        self._runner: web.AppRunner | None = None
        self._tasks: list[asyncio.Task[None]] = []

    # --- lifecycle ---------------------------------------------------------------------------

    @property
    def port(self) -> int:
        if self._port is None:
            raise RuntimeError("the simulator is not started")
        return self._port

    @property
    def ws_url(self) -> str:
        return f"ws://{self.host}:{self.port}/v2"

    @property
    def ws_auth_url(self) -> str:
        return f"ws://{self.host}:{self.port}/auth/v2"

    @property
    def rest_url(self) -> str:
        return f"http://{self.host}:{self.port}"

    async def start(self) -> None:
        """Listen, then start the market and the heartbeat timer."""
        app = web.Application()
        app.router.add_get("/v2", self._ws_handler)
        app.router.add_get("/auth/v2", self.private_ws.handle)
        app.router.add_route("*", "/0/public/{method}", self._rest_handler)
        app.router.add_post("/0/private/{method}", self.private.handle)
        app.router.add_post("/sim/fault/{name}", self._fault_handler)
        app.router.add_get("/sim/stats", self._stats_handler)
        self._runner = web.AppRunner(app, access_log=None, shutdown_timeout=1.0)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.host, self._requested_port)
        await site.start()
        self._port = int(self._runner.addresses[0][1])
        self._tasks = [asyncio.create_task(self._run_market(), name="sim-market"),
                       asyncio.create_task(self._heartbeats(), name="sim-heartbeats")]

    async def stop(self) -> None:
        """Stop the market, close every connection (going away), stop listening."""
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks = []
        self.trading.close()
        await self.private_ws.close_all()
        for conn in list(self._conns):
            conn.closed = True
            with contextlib.suppress(ConnectionError, RuntimeError, asyncio.TimeoutError):
                await asyncio.wait_for(conn.ws.close(code=1001, message=b"server shutdown"), 2)
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def __aenter__(self) -> SimExchange:
        await self.start()
        return self

    async def __aexit__(self, et: type[BaseException] | None, e: BaseException | None,
                        tb: TracebackType | None) -> None:
        await self.stop()

    async def _run_market(self) -> None:
        try:
            await self.market.run(self)
        except asyncio.CancelledError:
            raise
        except Exception:  # the server keeps serving the last state; say why data stopped
            log.exception("simulated market stopped")

    # --- market notifications (MarketSink) -----------------------------------------------------

    def on_market(self, symbol: str, trades: Sequence[Trade], book_changed: bool,
                  ts_ns: int) -> None:
        """Fan one market change out to the subscribers of the pair, and show it to the
        matching engine (a no-op for pairs without working orders)."""
        self.trading.on_market(symbol, trades, book_changed)
        if trades and self._trades.get(symbol):
            self._send_trades(symbol, "update", trades, self._trades[symbol])
        if book_changed and self._books.get(symbol):
            self._send_book_updates(symbol, ts_ns)
        if trades and self._ohlc.get(symbol):
            self._send_candles(symbol, trades[-1].ts_ns)

    async def drain(self) -> None:
        """Wait while a client is far behind; drop clients that stay behind too long."""
        deadline = time.monotonic() + DRAIN_PATIENCE_S
        while any(c.queue.qsize() > HIGH_WATER for c in self._conns):
            if time.monotonic() > deadline:
                for conn in [c for c in self._conns if c.queue.qsize() > HIGH_WATER]:
                    self._drop_slow(conn)
                return
            await asyncio.sleep(0.005)

    def _send_trades(self, symbol: str, kind: str, trades: Sequence[Trade],
                     conns: set[_Conn]) -> None:
        inst = self.market.instruments[symbol]
        pp, qp = inst.price_precision, inst.qty_precision
        items = [wire.trade_item(symbol, t.side, t.price, t.qty, t.ord_type, t.trade_id,
                                 t.ts_ns, pp, qp) for t in trades]
        self._fan_out(wire.trades(kind, items), "trade", symbol, conns)

    def _send_book_updates(self, symbol: str, ts_ns: int) -> None:
        book = self.market.books[symbol]
        checksum: int | None = None
        for group in list(self._books[symbol].values()):  # a slow client may leave mid-way
            diff = group.view.update()
            if diff is None:
                continue
            if checksum is None:
                checksum = self._checksum_to_send(symbol)
            frame = wire.book("update", symbol, diff[0], diff[1], checksum, ts_ns,
                              book.price_precision, book.qty_precision)
            self._fan_out(frame, "book", symbol, group.conns)

    def _checksum_to_send(self, symbol: str) -> int:
        """The book's checksum, or a wrong one if the corrupt-checksum fault is armed."""
        checksum = self.market.books[symbol].checksum()
        if symbol in self._corrupt:
            self._corrupt.discard(symbol)
            checksum = (checksum + 1) & 0xFFFFFFFF
        return checksum

    def _send_candles(self, symbol: str, ts_ns: int) -> None:
        inst = self.market.instruments[symbol]
        tape = self.market.tapes[symbol]
        for interval, conns in list(self._ohlc[symbol].items()):
            candle = tape.current(interval, ts_ns)
            item = wire.ohlc_item(symbol, candle, interval, inst.price_precision,
                                  inst.qty_precision)
            self._fan_out(wire.ohlc("update", [item], time.time_ns()), "ohlc", symbol, conns)

    def _fan_out(self, frame: str, channel: str, symbol: str, conns: set[_Conn]) -> None:
        for conn in list(conns):
            conn.send(frame, channel, symbol)
            if conn.queue.qsize() > MAX_QUEUE:
                self._drop_slow(conn)

    def _drop_slow(self, conn: _Conn) -> None:
        log.warning("dropping a client too slow to read", extra={"connection": conn.cid})
        self.stats.slow_disconnects += 1
        conn.abort()
        self._forget(conn)

    # --- WebSocket connections ---------------------------------------------------------------

    async def _ws_handler(self, request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse(timeout=2.0, compress=False, max_msg_size=1 << 20)
        await ws.prepare(request)
        conn = _Conn(self._ids.getrandbits(63) | (1 << 63), ws, request)
        self._conns.add(conn)
        self.stats.connections_accepted += 1
        self.stats.connections_open += 1
        conn.send(wire.status(conn.cid))
        writer = asyncio.create_task(self._write(conn))
        try:
            async for msg in ws:
                if msg.type == WSMsgType.TEXT:
                    self._on_request(conn, msg.data)
                elif msg.type == WSMsgType.BINARY:
                    self._reply_error(conn, None, ERR_MALFORMED, None, time.time_ns())
        finally:
            self._forget(conn)
            writer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await writer
        return ws

    async def _write(self, conn: _Conn) -> None:
        """Send queued frames in order; stop quietly when the peer is gone."""
        ws = conn.ws
        try:
            while True:
                frame = await conn.queue.get()
                if isinstance(frame, bytes):
                    await ws.send_bytes(frame)
                else:
                    await ws.send_str(frame)
                self.stats.frames_sent += 1
        except (ConnectionError, RuntimeError):
            conn.closed = True

    def _forget(self, conn: _Conn) -> None:
        """Remove a connection and all its subscriptions."""
        if conn not in self._conns:
            return
        self._conns.discard(conn)
        conn.closed = True
        for timer in conn.timers:
            timer.cancel()
        self.stats.connections_open -= 1
        for sub in list(conn.subs.values()):
            self._remove_sub(conn, sub)

    async def _heartbeats(self) -> None:
        """A heartbeat on each subscribed connection that sent nothing for a second."""
        while True:
            await asyncio.sleep(HEARTBEAT_S / 4)
            now = time.monotonic()
            for conn in list(self._conns):
                if conn.subs and not conn.silenced and now - conn.last_out >= HEARTBEAT_S:
                    conn.send(wire.HEARTBEAT, "heartbeat")

    # --- requests ----------------------------------------------------------------------------

    def _on_request(self, conn: _Conn, text: str) -> None:
        t_in = time.time_ns()
        self.stats.requests += 1
        try:
            msg = json.loads(text)
        except ValueError:
            msg = None
        if not isinstance(msg, dict):
            self._reply_error(conn, None, ERR_MALFORMED, None, t_in)
            return
        method, req_id = msg.get("method"), msg.get("req_id")
        if req_id is not None and type(req_id) is not int:
            self._reply_error(conn, _text(method), f"{ERR_ARGS}:req_id", None, t_in)
            return
        try:
            self._dispatch(conn, method, msg.get("params"), req_id, t_in)
        except _RequestError as exc:
            self._reply_error(conn, _text(method), str(exc), req_id, t_in)

    def _dispatch(self, conn: _Conn, method: Any, params: Any, req_id: int | None,
                  t_in: int) -> None:
        if method == "ping":
            conn.send(wire.pong(req_id, t_in, time.time_ns()))
            return
        if method not in ("subscribe", "unsubscribe"):
            raise _RequestError(f"Method not found: {_text(method)}")
        if not isinstance(params, dict):
            raise _RequestError(f"{ERR_ARGS}:params")
        channel = params.get("channel")
        if channel == "instrument":
            self._instrument(conn, method, params, req_id, t_in)
            return
        if channel not in ("book", "trade", "ohlc"):
            raise _RequestError(f"Channel {_text(channel)} not supported")
        for sub in self._parse_subs(channel, params):
            if method == "subscribe":
                self._subscribe(conn, sub, req_id, t_in)
            else:
                self._unsubscribe(conn, sub, req_id, t_in)

    def _parse_subs(self, channel: str, params: dict[str, Any]) -> list[_Sub]:
        """One subscription per requested symbol, after validating the parameters."""
        symbols = params.get("symbol")
        if (not isinstance(symbols, list) or not symbols
                or not all(isinstance(s, str) for s in symbols)):
            raise _RequestError(f"{ERR_ARGS}:symbol")
        snapshot = params.get("snapshot", channel != "trade")
        if type(snapshot) is not bool:
            raise _RequestError(f"{ERR_ARGS}:snapshot")
        depth = interval = 0
        if channel == "book":
            depth = params.get("depth", 10)
            if type(depth) is not int or depth not in BOOK_DEPTHS:
                raise _RequestError(f"{ERR_ARGS}:depth")
        elif channel == "ohlc":
            interval = params.get("interval", 1)
            if type(interval) is not int or interval not in OHLC_INTERVALS:
                raise _RequestError(f"{ERR_ARGS}:interval")
        return [_Sub(channel, s, snapshot, depth, interval) for s in dict.fromkeys(symbols)]

    def _subscribe(self, conn: _Conn, sub: _Sub, req_id: int | None, t_in: int) -> None:
        symbol = sub.symbol
        assert symbol is not None
        if symbol not in self.market.instruments:
            self._reply_error(conn, "subscribe", f"Currency pair not supported {symbol}",
                              req_id, t_in, symbol)
            return
        key = _key(sub)
        if key in conn.subs:
            self._reply_error(conn, "subscribe", ERR_ALREADY, req_id, t_in, symbol)
            return
        conn.subs[key] = sub
        self.stats.subscriptions += 1
        self.stats.active_subscriptions += 1
        conn.send(wire.ack("subscribe", _result(sub), req_id, t_in, time.time_ns()))
        if sub.channel == "book":
            self._add_book(conn, sub)
        elif sub.channel == "trade":
            self._trades.setdefault(symbol, set()).add(conn)
            if sub.snapshot:
                trades = self.market.tapes[symbol].last_trades(TRADE_SNAPSHOT)
                self._send_trades(symbol, "snapshot", trades, {conn})
        else:
            self._ohlc.setdefault(symbol, {}).setdefault(sub.interval, set()).add(conn)
            if sub.snapshot:
                self._send_candle_snapshot(conn, symbol, sub.interval)

    def _add_book(self, conn: _Conn, sub: _Sub) -> None:
        symbol = sub.symbol
        assert symbol is not None
        groups = self._books.setdefault(symbol, {})
        group = groups.get(sub.depth)
        book = self.market.books[symbol]
        if group is None:
            group = groups[sub.depth] = _BookGroup(DepthView(book, sub.depth))
        group.conns.add(conn)
        if sub.snapshot:
            bids, asks = group.view.snapshot()
            conn.send(wire.book("snapshot", symbol, bids, asks, self._checksum_to_send(symbol),
                                time.time_ns(), book.price_precision, book.qty_precision),
                      "book", symbol)

    def _send_candle_snapshot(self, conn: _Conn, symbol: str, interval: int) -> None:
        inst = self.market.instruments[symbol]
        now = time.time_ns()
        candles = self.market.tapes[symbol].candles(interval, now, OHLC_SNAPSHOT)
        items = [wire.ohlc_item(symbol, c, interval, inst.price_precision, inst.qty_precision)
                 for c in candles]
        conn.send(wire.ohlc("snapshot", items, now), "ohlc", symbol)

    def _unsubscribe(self, conn: _Conn, sub: _Sub, req_id: int | None, t_in: int) -> None:
        held = conn.subs.get(_key(sub))
        if held is None or held.depth != sub.depth or held.interval != sub.interval:
            self._reply_error(conn, "unsubscribe", ERR_NOT_FOUND, req_id, t_in, sub.symbol)
            return
        self._remove_sub(conn, held)
        self.stats.unsubscriptions += 1
        conn.send(wire.ack("unsubscribe", _result(held), req_id, t_in, time.time_ns()))

    def _remove_sub(self, conn: _Conn, sub: _Sub) -> None:
        """Forget one subscription of a connection, dropping groups nobody uses."""
        if conn.subs.pop(_key(sub), None) is None:
            return
        self.stats.active_subscriptions -= 1
        symbol = sub.symbol
        if sub.channel == "book" and symbol is not None:
            groups = self._books.get(symbol, {})
            group = groups.get(sub.depth)
            if group is not None:
                group.conns.discard(conn)
                if not group.conns:
                    del groups[sub.depth]
        elif sub.channel == "trade" and symbol is not None:
            self._trades.get(symbol, set()).discard(conn)
        elif sub.channel == "ohlc" and symbol is not None:
            intervals = self._ohlc.get(symbol, {})
            intervals.get(sub.interval, set()).discard(conn)
            if not intervals.get(sub.interval, True):
                del intervals[sub.interval]

    def _instrument(self, conn: _Conn, method: str, params: dict[str, Any],
                    req_id: int | None, t_in: int) -> None:
        """The pair list: one ack, then (on subscribe) one snapshot; no updates follow."""
        snapshot = params.get("snapshot", True)
        if type(snapshot) is not bool:
            raise _RequestError(f"{ERR_ARGS}:snapshot")
        sub = _Sub("instrument", None, snapshot)
        key = _key(sub)
        if method == "unsubscribe":
            if key not in conn.subs:
                raise _RequestError(ERR_NOT_FOUND)
            self._remove_sub(conn, sub)
            self.stats.unsubscriptions += 1
            conn.send(wire.ack(method, _result(sub), req_id, t_in, time.time_ns()))
            return
        if key in conn.subs:
            raise _RequestError(ERR_ALREADY)
        conn.subs[key] = sub
        self.stats.subscriptions += 1
        self.stats.active_subscriptions += 1
        conn.send(wire.ack(method, _result(sub), req_id, t_in, time.time_ns()))
        if snapshot:
            used = {a for i in self.market.instruments.values() for a in (i.base, i.quote)}
            assets = [a for a in ASSETS.values() if a.id in used]
            conn.send(wire.instrument_snapshot(self.market.instruments.values(), assets),
                      "instrument")

    def _reply_error(self, conn: _Conn, method: str | None, text: str, req_id: int | None,
                     t_in: int, symbol: str | None = None) -> None:
        self.stats.errors_sent += 1
        conn.send(wire.error(method, text, req_id, t_in, time.time_ns(), symbol))

    # --- REST --------------------------------------------------------------------------------

    async def _rest_handler(self, request: web.Request) -> web.Response:
        self.stats.rest_requests += 1
        params = await _request_params(request)
        status, body = self._rest.call(request.match_info["method"], params, time.time_ns())
        return web.json_response(body, status=status)

    # --- faults ------------------------------------------------------------------------------

    def drop_connections(self) -> int:
        """Abruptly cut every WebSocket connection (no close frame); returns how many."""
        self.stats.fault("drop")
        conns = list(self._conns)
        for conn in conns:
            conn.abort()
            self._forget(conn)
        return len(conns) + self.private_ws.drop_all()

    def reject_next_orders(self, n: int, error: str) -> None:
        """The next ``n`` order placements (REST ``AddOrder`` or WS ``add_order``) fail with
        the Kraken error string ``error`` and place nothing."""
        if n < 0 or not error:
            raise ValueError("n must be >= 0 and error a Kraken error string")
        self.stats.fault("reject_next_orders")
        self.trading.reject_next_orders(n, error)

    def drop_after_accept(self, n: int) -> None:
        """The next ``n`` placements are accepted (the order works) but the connection is
        cut before the response: the client must find the order by ``cl_ord_id``."""
        if n < 0:
            raise ValueError("n must be >= 0")
        self.stats.fault("drop_after_accept")
        self.trading.drop_after_accept(n)

    def set_balance(self, asset: str, amount: Decimal | int | str) -> None:
        """Set the account's total of ``asset`` (a ledger adjustment, sent on ``balances``)."""
        self.stats.fault("set_balance")
        self.trading.set_balance(asset, Decimal(amount))

    def corrupt_next_checksum(self, symbol: str) -> None:
        """The next book message for ``symbol`` (to every subscriber of it) carries a wrong
        checksum; later ones, including the snapshot of a resubscription, are right."""
        if symbol not in self.market.instruments:
            raise ValueError(f"unknown symbol {symbol!r}")
        self.stats.fault("corrupt_checksum")
        self._corrupt.add(symbol)

    def send_hostile(self, kind: str = "malformed", symbol: str | None = None) -> int:
        """Send one hostile frame (see ``faults.HOSTILE_KINDS``) to every connection."""
        frame = hostile_frame(kind, symbol or next(iter(self.market.instruments), "XRP/USD"))
        self.stats.fault(f"hostile:{kind}")
        for conn in list(self._conns):
            conn.send(frame)
        return len(self._conns)

    def stall(self, seconds: float, channel: str | None = None,
              symbol: str | None = None) -> int:
        """Keep every open connection open but silent for ``seconds``: entirely (no data,
        acks or heartbeats), or only for one channel and/or symbol. Held frames are
        released in order afterwards. Connections opened later are not affected."""
        if seconds <= 0:
            raise ValueError("seconds must be positive")
        self.stats.fault("stall")
        loop = asyncio.get_running_loop()
        conns = list(self._conns)
        for conn in conns:
            stall = Stall(loop.time() + seconds, channel, symbol)
            conn.stalls.append(stall)
            conn.timers.append(loop.call_later(seconds, conn.release, stall))
        return len(conns)

    def clear_faults(self) -> None:
        """End every stall now and disarm pending checksum corruption."""
        self._corrupt.clear()
        for conn in list(self._conns):
            for stall in list(conn.stalls):
                conn.release(stall)

    async def _fault_handler(self, request: web.Request) -> web.Response:
        params = await _request_params(request)
        name = request.match_info["name"]
        try:
            result = self._apply_fault(name, params)
        except (ValueError, KeyError, ArithmeticError) as exc:
            return web.json_response({"ok": False, "error": str(exc)}, status=400)
        if result is None:
            return web.json_response({"ok": False, "error": f"unknown fault {name!r}"},
                                     status=404)
        return web.json_response({"ok": True, **result})

    def _apply_fault(self, name: str, params: dict[str, str]) -> dict[str, Any] | None:
        symbol = params.get("symbol") or None
        if name == "drop":
            return {"connections": self.drop_connections()}
        if name == "corrupt_checksum":
            self.corrupt_next_checksum(params["symbol"])
            return {"symbol": params["symbol"]}
        if name in ("hostile", "malformed"):
            kind = params.get("kind", "malformed") if name == "hostile" else "malformed"
            if kind not in HOSTILE_KINDS:
                raise ValueError(f"unknown kind {kind!r}; known: {', '.join(HOSTILE_KINDS)}")
            return {"kind": kind, "connections": self.send_hostile(kind, symbol)}
        if name == "stall":
            seconds = float(params["seconds"])
            channel = params.get("channel") or None
            return {"connections": self.stall(seconds, channel, symbol)}
        if name == "clear":
            self.clear_faults()
            return {}
        return self._apply_trading_fault(name, params)

    def _apply_trading_fault(self, name: str, params: dict[str, str]) -> dict[str, Any] | None:
        if name == "reject_next_orders":
            n = int(params.get("n", "1"))
            self.reject_next_orders(n, params["error"])
            return {"n": n, "error": params["error"]}
        if name == "drop_after_accept":
            n = int(params.get("n", "1"))
            self.drop_after_accept(n)
            return {"n": n}
        if name == "set_balance":
            self.set_balance(params["asset"], Decimal(params["amount"]))
            return {"asset": params["asset"], "amount": params["amount"]}
        return None

    async def _stats_handler(self, request: web.Request) -> web.Response:
        return web.json_response(asdict(self.stats))


def _key(sub: _Sub) -> tuple[str, str | None]:
    if sub.channel == "ohlc":
        return (f"ohlc:{sub.interval}", sub.symbol)
    return (sub.channel, sub.symbol)


def _result(sub: _Sub) -> dict[str, Any]:
    """The ``result`` of a subscribe/unsubscribe ack, keys in Kraken's order."""
    result: dict[str, Any] = {"channel": sub.channel}
    if sub.channel == "book":
        result["depth"] = sub.depth
    if sub.channel == "ohlc":
        result["interval"] = sub.interval
    result["snapshot"] = sub.snapshot
    if sub.symbol is not None:
        result["symbol"] = sub.symbol
    if sub.channel == "ohlc":
        result["warnings"] = [_OHLC_WARNING]
    if sub.channel == "instrument":
        result["warnings"] = [_INSTRUMENT_WARNING]
    return result


def _text(value: Any) -> str:
    return value if isinstance(value, str) else json.dumps(value)


async def _request_params(request: web.Request) -> dict[str, str]:
    """Query parameters merged with a POST form or JSON body (values as strings)."""
    params = dict(request.query)
    if request.method == "POST" and request.can_read_body:
        if request.content_type == "application/json":
            try:
                body = await request.json()
            except ValueError:
                body = None
            if isinstance(body, dict):
                params.update({str(k): str(v) for k, v in body.items()})
        else:
            form = await request.post()
            params.update({k: str(v) for k, v in form.items()})
    return params


# --- entry points ----------------------------------------------------------------------------


class SimConfig(Protocol):
    """The ``[sim]`` settings section the CLI and engine pass in (read-only view)."""

    @property
    def host(self) -> str: ...
    @property
    def port(self) -> int: ...
    @property
    def seed(self) -> int: ...
    @property
    def replay(self) -> str: ...
    @property
    def speed(self) -> float: ...
    @property
    def messages_per_second(self) -> float: ...


def build_market(seed: int = 7, pairs: Sequence[str] = DEFAULT_PAIRS,
                 replay_path: str | Path | None = None, speed: float = 1.0,
                 rate: float = 20.0, loop: bool = False) -> MarketSource:
    """A replay of ``replay_path`` if given, else the seeded synthetic market."""
    if replay_path:
        return ReplayMarket(replay_path, speed=speed, loop=loop, seed=seed)
    return SyntheticMarket(seed, pairs, rate=rate)


@overload
async def run_sim_exchange(host: str = ..., port: int = ..., seed: int = ...,
                           replay_path: str | Path | None = ..., speed: float = ...,
                           rate: float = ..., loop: bool = ..., *,
                           pairs: Sequence[str] = ...) -> None: ...


@overload
async def run_sim_exchange(host: SimConfig, port: Sequence[str], *, loop: bool = ...) -> None:
    ...


async def run_sim_exchange(host: str | SimConfig = "127.0.0.1",
                           port: int | Sequence[str] = 0, seed: int = 7,
                           replay_path: str | Path | None = None, speed: float = 1.0,
                           rate: float = 20.0, loop: bool = False, *,
                           pairs: Sequence[str] = DEFAULT_PAIRS) -> None:
    """Serve the simulator until cancelled, logging its URLs once."""
    if not isinstance(host, str):
        config, pairs = host, tuple(port) if not isinstance(port, int) else pairs
        host, port, seed = config.host, config.port, config.seed
        replay_path, speed, rate = config.replay or None, config.speed, config.messages_per_second
    assert isinstance(port, int)
    market = build_market(seed, pairs, replay_path, speed, rate, loop)
    async with SimExchange(market, host, port, seed=seed) as sim:
        source = f"replay of {replay_path}" if replay_path else f"synthetic market, seed {seed}"
        key, secret = os.environ.get("KRAKEN_API_KEY"), os.environ.get("KRAKEN_API_SECRET")
        if key and secret:  # lets a bot started with the same environment trade here
            sim.private.add_key(key, secret)
            source += "; trading API accepts KRAKEN_API_KEY"
        log.info("simulated Kraken exchange: WebSocket %s REST %s (%s)", sim.ws_url,
                 sim.rest_url, source,
                 extra={"ws_url": sim.ws_url, "ws_auth_url": sim.ws_auth_url,
                        "rest_url": sim.rest_url, "source": source})
        await asyncio.Event().wait()


@contextlib.asynccontextmanager
async def open_sim_exchange(config: SimConfig, pairs: Sequence[str], *,
                            maker_fee_pct: Decimal = Decimal("0.25"),
                            taker_fee_pct: Decimal = Decimal("0.40"),
                            ) -> AsyncIterator[SimExchange]:
    """A started simulator for the configured pairs (or replay), stopped on exit; its account
    starts with ``config.initial_usd`` and charges the given fees."""
    market = build_market(config.seed, pairs, config.replay or None, config.speed,
                          config.messages_per_second, bool(getattr(config, "loop", False)))
    account = SimAccount({"USD": getattr(config, "initial_usd", Decimal(10000))},
                         seed=config.seed)
    latency_ns = int(getattr(config, "latency_ms", 0) * 1_000_000)
    async with SimExchange(market, config.host, config.port, seed=config.seed,
                           maker_fee_pct=maker_fee_pct, taker_fee_pct=taker_fee_pct,
                           latency_ns=latency_ns, account=account) as sim:
        yield sim
