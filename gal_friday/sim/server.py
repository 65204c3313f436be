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
* ``GET /sim/account`` -- the simulated account's balances, orders and fills as JSON
  (``sim/snapshot.py``), the exchange's truth to compare a bot's store with;
* ``http://HOST:PORT/0/private/<Method>`` -- signed private REST (``Balance``,
  ``GetWebSocketsToken``, ``AddOrder``, ``CancelOrder``, ``CancelAll``,
  ``CancelAllOrdersAfter``, ``OpenOrders``, ``ClosedOrders``, ``QueryOrders``,
  ``TradesHistory``) and ``ws://HOST:PORT/auth/v2`` -- the token-authenticated WebSocket v2
  (``executions``, ``balances``, ``add_order``, ``cancel_order``, ``cancel_all``,
  ``cancel_all_orders_after``); both trade through one ``SimTrading`` (``sim.trading``) that
  the market feeds, so orders fill against the simulated book (see ``sim/private.py``).

The market comes from a ``MarketSource``: the seeded ``SyntheticMarket`` or a ``ReplayMarket``.
Book subscribers at the same depth share one ``DepthView`` and one encoded message per change.

This module is the server: the aiohttp application, connections, lifecycle, the fault switches
and the entry points. The public WebSocket protocol (requests, acks, errors) is in
``sim/protocol.py``, the fan-out of market data to subscribers in ``sim/fanout.py``, the
fault endpoint's names and hostile frames in ``sim/faults.py``.

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
import logging
import os
import random
import time
from collections.abc import AsyncIterator, Sequence
from dataclasses import asdict
from decimal import Decimal
from pathlib import Path
from types import TracebackType
from typing import Protocol, overload

from aiohttp import WSMsgType, web

from gal_friday.sim import wire
from gal_friday.sim.account import SimAccount
from gal_friday.sim.fanout import Conn, FanOut
from gal_friday.sim.faults import Stall, apply_fault, hostile_frame
from gal_friday.sim.market import DEFAULT_PAIRS, SyntheticMarket
from gal_friday.sim.private import PrivateRest, PrivateWebSocket
from gal_friday.sim.protocol import PublicProtocol
from gal_friday.sim.replay import ReplayMarket
from gal_friday.sim.rest import PublicRest
from gal_friday.sim.snapshot import account_snapshot
from gal_friday.sim.source import MarketSource
from gal_friday.sim.stats import SimStats
from gal_friday.sim.tape import Trade
from gal_friday.sim.trading import SimTrading

__all__ = [
    "SimConfig",
    "SimExchange",
    "SimStats",
    "build_market",
    "open_sim_exchange",
    "run_sim_exchange",
]

log = logging.getLogger("gal_friday.sim")


class SimExchange:
    """The simulated Kraken public API on one loopback port; see the module docstring."""

    def __init__(
        self,
        market: MarketSource | None = None,
        host: str = "127.0.0.1",
        port: int = 0,
        *,
        seed: int = 7,
        maker_fee_pct: Decimal = Decimal("0.25"),
        taker_fee_pct: Decimal = Decimal("0.40"),
        latency_ns: int = 0,
        slippage_bps: Decimal = Decimal(0),
        account: SimAccount | None = None,
    ) -> None:
        self.market = market if market is not None else SyntheticMarket(seed)
        self.host = host
        self._requested_port = port
        self._port: int | None = None
        self.stats = SimStats()
        self._rest = PublicRest(self.market)
        self.trading = SimTrading(
            self.market,
            maker_fee_pct=maker_fee_pct,
            taker_fee_pct=taker_fee_pct,
            latency_ns=latency_ns,
            slippage_bps=slippage_bps,
            account=account,
            seed=seed,
        )
        # accepted API keys: self.private.add_key(key, secret)
        self.private = PrivateRest(self.trading)
        self.private_ws = PrivateWebSocket(self.private, self.trading)
        self._ids = random.Random(seed)
        self.fanout = FanOut(self.market, self.stats)
        self.protocol = PublicProtocol(self.market, self.fanout, self.stats)
        self._runner: web.AppRunner | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self._refuse_until = 0.0  # loop time until which WebSocket handshakes are refused

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
        app.router.add_get("/auth/v2", self._auth_ws_handler)
        app.router.add_route("*", "/0/public/{method}", self._rest_handler)
        app.router.add_post("/0/private/{method}", self.private.handle)
        app.router.add_post("/sim/fault/{name}", self._fault_handler)
        app.router.add_get("/sim/stats", self._stats_handler)
        app.router.add_get("/sim/account", self._account_handler)
        self._runner = web.AppRunner(app, access_log=None, shutdown_timeout=1.0)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.host, self._requested_port)
        await site.start()
        self._port = int(self._runner.addresses[0][1])
        self._tasks = [
            asyncio.create_task(self._run_market(), name="sim-market"),
            asyncio.create_task(self.fanout.heartbeats(), name="sim-heartbeats"),
        ]

    async def stop(self) -> None:
        """Stop the market, close every connection (going away), stop listening."""
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks = []
        self.trading.close()
        await self.private_ws.close_all()
        for conn in list(self.fanout.conns):
            conn.closed = True
            with contextlib.suppress(ConnectionError, RuntimeError, asyncio.TimeoutError):
                async with asyncio.timeout(2):
                    await conn.ws.close(code=1001, message=b"server shutdown")
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def __aenter__(self) -> SimExchange:
        await self.start()
        return self

    async def __aexit__(
        self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.stop()

    async def _run_market(self) -> None:
        try:
            await self.market.run(self)
        except asyncio.CancelledError:
            raise
        except Exception:  # the server keeps serving the last state; say why data stopped
            log.exception("simulated market stopped")

    # --- market notifications (MarketSink) -----------------------------------------------------

    def on_market(
        self, symbol: str, trades: Sequence[Trade], book_changed: bool, ts_ns: int
    ) -> None:
        """Fan one market change out to the subscribers of the pair, and show it to the
        matching engine (a no-op for pairs without working orders)."""
        self.trading.on_market(symbol, trades, book_changed)
        self.fanout.on_market(symbol, trades, book_changed, ts_ns)

    async def drain(self) -> None:
        """Wait while a client is far behind; drop clients that stay behind too long."""
        await self.fanout.drain()

    # --- WebSocket connections ---------------------------------------------------------------

    def _refusing(self) -> bool:
        """An outage is on: count the attempt and refuse it (HTTP 503, as a gateway would)."""
        if asyncio.get_running_loop().time() >= self._refuse_until:
            return False
        self.stats.connections_refused += 1
        return True

    async def _auth_ws_handler(self, request: web.Request) -> web.StreamResponse:
        if self._refusing():
            return web.Response(status=503, text="service unavailable (simulated outage)")
        return await self.private_ws.handle(request)

    async def _ws_handler(self, request: web.Request) -> web.StreamResponse:
        if self._refusing():
            return web.Response(status=503, text="service unavailable (simulated outage)")
        ws = web.WebSocketResponse(timeout=2.0, compress=False, max_msg_size=1 << 20)
        await ws.prepare(request)
        conn = Conn(self._ids.getrandbits(63) | (1 << 63), ws, request)
        self.fanout.conns.add(conn)
        self.stats.connections_accepted += 1
        self.stats.connections_open += 1
        conn.send(wire.status(conn.cid))
        writer = asyncio.create_task(self._write(conn))
        try:
            async for msg in ws:
                if msg.type == WSMsgType.TEXT:
                    self.protocol.on_text(conn, msg.data)
                elif msg.type == WSMsgType.BINARY:
                    self.protocol.on_binary(conn)
        finally:
            self.fanout.forget(conn)
            writer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await writer
        return ws

    async def _write(self, conn: Conn) -> None:
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
        conns = list(self.fanout.conns)
        for conn in conns:
            conn.abort()
            self.fanout.forget(conn)
        return len(conns) + self.private_ws.drop_all()

    def refuse_connections(self, seconds: float) -> int:
        """An outage: cut every WebSocket connection (as ``drop_connections``) and refuse
        every WebSocket handshake, public and private, for ``seconds`` (HTTP 503; REST keeps
        answering). ``stats.connections_refused`` counts the attempts; ``clear_faults`` ends
        it early. Returns how many connections were cut."""
        if seconds <= 0:
            raise ValueError("seconds must be positive")
        self.stats.fault("refuse")
        self._refuse_until = asyncio.get_running_loop().time() + seconds
        return self.drop_connections()

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
        self.fanout.corrupt.add(symbol)

    def send_hostile(self, kind: str = "malformed", symbol: str | None = None) -> int:
        """Send one hostile frame (see ``faults.HOSTILE_KINDS``) to every connection."""
        frame = hostile_frame(kind, symbol or next(iter(self.market.instruments), "XRP/USD"))
        self.stats.fault(f"hostile:{kind}")
        for conn in list(self.fanout.conns):
            conn.send(frame)
        return len(self.fanout.conns)

    def stall(self, seconds: float, channel: str | None = None, symbol: str | None = None) -> int:
        """Keep every open connection open but silent for ``seconds``: entirely (no data,
        acks or heartbeats), or only for one channel and/or symbol. Held frames are
        released in order afterwards. Connections opened later are not affected."""
        if seconds <= 0:
            raise ValueError("seconds must be positive")
        self.stats.fault("stall")
        loop = asyncio.get_running_loop()
        conns = list(self.fanout.conns)
        for conn in conns:
            stall = Stall(loop.time() + seconds, channel, symbol)
            conn.stalls.append(stall)
            conn.timers.append(loop.call_later(seconds, conn.release, stall))
        return len(conns)

    def clear_faults(self) -> None:
        """End every stall and refusal now and disarm pending checksum corruption."""
        self._refuse_until = 0.0
        self.fanout.corrupt.clear()
        for conn in list(self.fanout.conns):
            for stall in list(conn.stalls):
                conn.release(stall)

    async def _fault_handler(self, request: web.Request) -> web.Response:
        params = await _request_params(request)
        name = request.match_info["name"]
        try:
            result = apply_fault(self, name, params)
        except (ValueError, KeyError, ArithmeticError) as exc:
            return web.json_response({"ok": False, "error": str(exc)}, status=400)
        if result is None:
            return web.json_response({"ok": False, "error": f"unknown fault {name!r}"}, status=404)
        return web.json_response({"ok": True, **result})

    async def _stats_handler(self, request: web.Request) -> web.Response:
        return web.json_response(asdict(self.stats))

    async def _account_handler(self, request: web.Request) -> web.Response:
        return web.json_response(account_snapshot(self.trading))


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


def build_market(
    seed: int = 7,
    pairs: Sequence[str] = DEFAULT_PAIRS,
    replay_path: str | Path | None = None,
    speed: float = 1.0,
    rate: float = 20.0,
    loop: bool = False,
) -> MarketSource:
    """A replay of ``replay_path`` if given, else the seeded synthetic market."""
    if replay_path:
        return ReplayMarket(replay_path, speed=speed, loop=loop, seed=seed)
    return SyntheticMarket(seed, pairs, rate=rate)


@overload
async def run_sim_exchange(
    host: str = ...,
    port: int = ...,
    seed: int = ...,
    replay_path: str | Path | None = ...,
    speed: float = ...,
    rate: float = ...,
    loop: bool = ...,
    *,
    pairs: Sequence[str] = ...,
) -> None: ...


@overload
async def run_sim_exchange(host: SimConfig, port: Sequence[str], *, loop: bool = ...) -> None: ...


async def run_sim_exchange(
    host: str | SimConfig = "127.0.0.1",
    port: int | Sequence[str] = 0,
    seed: int = 7,
    replay_path: str | Path | None = None,
    speed: float = 1.0,
    rate: float = 20.0,
    loop: bool = False,
    *,
    pairs: Sequence[str] = DEFAULT_PAIRS,
) -> None:
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
        log.info(
            "simulated Kraken exchange: WebSocket %s REST %s (%s)",
            sim.ws_url,
            sim.rest_url,
            source,
            extra={
                "ws_url": sim.ws_url,
                "ws_auth_url": sim.ws_auth_url,
                "rest_url": sim.rest_url,
                "source": source,
            },
        )
        await asyncio.Event().wait()


@contextlib.asynccontextmanager
async def open_sim_exchange(
    config: SimConfig,
    pairs: Sequence[str],
    *,
    maker_fee_pct: Decimal = Decimal("0.25"),
    taker_fee_pct: Decimal = Decimal("0.40"),
) -> AsyncIterator[SimExchange]:
    """A started simulator for the configured pairs (or replay), stopped on exit; its account
    starts with ``config.initial_usd`` and charges the given fees."""
    market = build_market(
        config.seed,
        pairs,
        config.replay or None,
        config.speed,
        config.messages_per_second,
        bool(getattr(config, "loop", False)),
    )
    account = SimAccount({"USD": getattr(config, "initial_usd", Decimal(10000))}, seed=config.seed)
    latency_ns = int(getattr(config, "latency_ms", 0) * 1_000_000)
    async with SimExchange(
        market,
        config.host,
        config.port,
        seed=config.seed,
        maker_fee_pct=maker_fee_pct,
        taker_fee_pct=taker_fee_pct,
        latency_ns=latency_ns,
        account=account,
    ) as sim:
        yield sim
