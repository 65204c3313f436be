"""Kraken's private API for the simulator: signed REST (``POST /0/private/<Method>``) and the
token-authenticated WebSocket v2 (``/auth/v2``), both trading through one ``SimTrading``.

The simulator checks credentials the way Kraken does, so the client's signing, nonce and
error handling are exercised end to end over loopback: an unknown ``API-Key`` is
``EAPI:Invalid key``, a wrong ``API-Sign`` is ``EAPI:Invalid signature``, a nonce not above
the last one accepted for the key is ``EAPI:Invalid nonce``, and ``GetWebSocketsToken`` for a
key without the WebSocket permission is ``EGeneral:Permission denied``. Keys are registered
with ``add_key`` (``SimExchange.private.add_key(...)``); with none registered every private
call is refused as an invalid key.

REST methods: ``Balance``, ``GetWebSocketsToken``, ``AddOrder``, ``CancelOrder``,
``CancelAll``, ``CancelAllOrdersAfter``, ``OpenOrders``, ``ClosedOrders``, ``QueryOrders``,
``TradesHistory`` (shapes per Kraken's REST docs; amounts are decimal strings).

WebSocket v2 (``PrivateWebSocket``): every request but ``ping`` carries ``params.token``
from ``GetWebSocketsToken``; an unknown or expired token is ``ESession:Invalid session``
(the text Kraken sends for a stale token). Supported: ``ping``, ``subscribe`` /
``unsubscribe`` for ``executions`` and ``balances``, ``add_order``, ``cancel_order`` (one
response per order), ``cancel_all``, ``cancel_all_orders_after``. A request's response goes
out before the ``executions`` it caused, as clients map ``order_id`` from it first.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import hmac
import json
import secrets
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any
from urllib.parse import parse_qsl

import msgspec
from aiohttp import WSMsgType, web

from gal_friday.kraken.auth import sign
from gal_friday.sim import wire
from gal_friday.sim.instruments import SimInstrument
from gal_friday.sim.trading import (
    ERR_ARGS,
    ERR_UNKNOWN_ORDER,
    ERR_UNKNOWN_PAIR,
    ORDER_TYPES,
    OrderParams,
    SimOrder,
    SimTrading,
    TradingError,
    describe,
    parse_decimal,
    rest_order,
    rest_trade,
)

ERR_INVALID_KEY = "EAPI:Invalid key"
ERR_INVALID_SIGNATURE = "EAPI:Invalid signature"
ERR_INVALID_NONCE = "EAPI:Invalid nonce"
ERR_PERMISSION = "EGeneral:Permission denied"
ERR_METHOD = "EGeneral:Unknown method"
ERR_SESSION = "ESession:Invalid session"
ERR_MALFORMED = "Malformed request"
TOKEN_TTL_S = 900
BALANCE = {"ZUSD": "10000.0000", "XXRP": "0.00000000", "XXDG": "0.00000000"}
PAGE = 50  # rows per page of ClosedOrders and TradesHistory, as on Kraken
MAX_RATE_COUNT = 125  # the Intermediate tier's trading counter threshold
DROP = -1  # call() status meaning: cut the connection instead of answering
_encode = msgspec.json.Encoder(decimal_format="number").encode

Handler = Callable[["_Key", dict[str, str], int], tuple[int, Any]]


@dataclass(frozen=True)
class _Key:
    secret_b64: str
    websocket: bool

    def __repr__(self) -> str:  # never show the secret
        return f"_Key(websocket={self.websocket})"


class PrivateRest:
    """Accepted API keys, the last nonce seen per key, issued tokens and the private methods.
    Without ``trading`` only ``Balance`` (a fixed opening balance) and the token work."""

    def __init__(self, trading: SimTrading | None = None) -> None:
        self._keys: dict[str, _Key] = {}
        self._last_nonce: dict[str, int] = {}
        self.tokens: dict[str, int] = {}  # issued WebSocket token -> expiry (unix ns)
        self.trading = trading
        self._methods: dict[str, Handler] = {
            "Balance": self._balance,
            "GetWebSocketsToken": self._websocket_token,
            "AddOrder": self._traded(self._add_order),
            "CancelOrder": self._traded(self._cancel_order),
            "CancelAll": self._traded(self._cancel_all),
            "CancelAllOrdersAfter": self._traded(self._cancel_after),
            "OpenOrders": self._traded(self._open_orders),
            "ClosedOrders": self._traded(self._closed_orders),
            "QueryOrders": self._traded(self._query_orders),
            "TradesHistory": self._traded(self._trades_history),
        }

    def add_key(self, api_key: str, secret_b64: str, *, websocket: bool = True) -> None:
        """Accept ``api_key`` signed with ``secret_b64``; ``websocket=False`` models a key
        without the "WebSocket interface" permission."""
        try:
            base64.b64decode(secret_b64, validate=True)
        except (binascii.Error, ValueError):
            raise ValueError("the API secret is not valid base64") from None
        self._keys[api_key] = _Key(secret_b64, websocket)

    def token_valid(self, token: object, now_ns: int) -> bool:
        return isinstance(token, str) and self.tokens.get(token, 0) > now_ns

    def call(
        self,
        method: str,
        uri_path: str,
        headers: Mapping[str, str],
        body: bytes,
        json_body: bool,
        now_ns: int,
    ) -> tuple[int, Any]:
        """HTTP status and response body for one private request (transport-free); status
        ``DROP`` asks the transport to cut the connection instead (a fault)."""
        handler = self._methods.get(method)
        if handler is None:
            return 404, {"error": [ERR_METHOD]}
        api_key = headers.get("API-Key", "")
        key = self._keys.get(api_key)
        if key is None:
            return 200, {"error": [ERR_INVALID_KEY]}
        params = _params(body, json_body)
        if params is None:
            return 200, {"error": [ERR_ARGS]}
        nonce_text = params.get("nonce", "")
        expected = sign(uri_path, nonce_text, body, key.secret_b64)
        if not hmac.compare_digest(expected.encode(), headers.get("API-Sign", "").encode()):
            return 200, {"error": [ERR_INVALID_SIGNATURE]}
        try:
            nonce = int(nonce_text)
        except ValueError:
            return 200, {"error": [ERR_INVALID_NONCE]}
        if nonce <= self._last_nonce.get(api_key, 0):
            return 200, {"error": [ERR_INVALID_NONCE]}
        self._last_nonce[api_key] = nonce
        return handler(key, params, now_ns)

    # --- account ---------------------------------------------------------------------------

    def _balance(self, key: _Key, params: dict[str, str], now_ns: int) -> tuple[int, Any]:
        if self.trading is None:
            return 200, {"error": [], "result": dict(BALANCE)}
        return 200, {"error": [], "result": self.trading.account.rest_balance()}

    def _websocket_token(self, key: _Key, params: dict[str, str], now_ns: int) -> tuple[int, Any]:
        if not key.websocket:
            return 200, {"error": [ERR_PERMISSION]}
        token = secrets.token_urlsafe(32)
        self.tokens[token] = now_ns + TOKEN_TTL_S * 1_000_000_000
        return 200, {"error": [], "result": {"token": token, "expires": TOKEN_TTL_S}}

    # --- trading ---------------------------------------------------------------------------

    def _traded(self, method: Callable[[SimTrading, dict[str, str]], Any]) -> Handler:
        """Wrap a trading method: Kraken's envelope, TradingError as its error array."""

        def handler(key: _Key, params: dict[str, str], now_ns: int) -> tuple[int, Any]:
            if self.trading is None:
                return 200, {"error": [ERR_METHOD]}
            try:
                result = method(self.trading, params)
            except TradingError as exc:
                return 200, {"error": [exc.error]}
            if result is _DROPPED:
                return DROP, None
            return 200, {"error": [], "result": result}

        return handler

    def _add_order(self, trading: SimTrading, params: dict[str, str]) -> Any:
        order = trading.place(_rest_order_params(trading, params))
        descr = {"order": describe(order)}
        if order.params.validate:
            return {"descr": descr}
        if trading.take_drop():
            return _DROPPED
        return {"descr": descr, "txid": [order.order_id]}

    def _cancel_order(self, trading: SimTrading, params: dict[str, str]) -> Any:
        txid, cl_ord_id = params.get("txid") or None, params.get("cl_ord_id") or None
        if txid is None and cl_ord_id is None:
            raise TradingError(ERR_ARGS)
        if txid is not None and txid.lstrip("-").isdigit():  # a userref: all its orders
            orders = [o for o in trading.open_orders() if o.params.userref == int(txid)]
            for order in orders:
                trading.cancel(order.order_id)
            return {"count": len(orders), "pending": False}
        trading.cancel(txid, None if txid else cl_ord_id)
        return {"count": 1, "pending": False}

    def _cancel_all(self, trading: SimTrading, params: dict[str, str]) -> Any:
        return {"count": trading.cancel_all()}

    def _cancel_after(self, trading: SimTrading, params: dict[str, str]) -> Any:
        now, trigger = trading.cancel_all_after(_int_param(params, "timeout"))
        return {
            "currentTime": _second(now),
            "triggerTime": _second(trigger) if trigger is not None else "0",
        }

    def _open_orders(self, trading: SimTrading, params: dict[str, str]) -> Any:
        orders = _filtered(trading.open_orders(), params)
        return {"open": {o.order_id: rest_order(o) for o in orders}}

    def _closed_orders(self, trading: SimTrading, params: dict[str, str]) -> Any:
        orders = _filtered(trading.closed_orders(), params)
        orders.sort(key=lambda o: o.closed_ns or 0, reverse=True)
        page = _page(orders, params)
        return {"closed": {o.order_id: rest_order(o) for o in page}, "count": len(orders)}

    def _query_orders(self, trading: SimTrading, params: dict[str, str]) -> Any:
        ids = [t for t in params.get("txid", "").split(",") if t]
        if not ids or len(ids) > PAGE:
            raise TradingError(ERR_ARGS)
        found = [trading.orders[t] for t in ids if t in trading.orders]
        if not found:
            raise TradingError(ERR_UNKNOWN_ORDER)
        return {o.order_id: rest_order(o) for o in found}

    def _trades_history(self, trading: SimTrading, params: dict[str, str]) -> Any:
        start, end = _time_param(params, "start"), _time_param(params, "end")
        fills = [
            f
            for f in reversed(trading.account.fills)
            if (start is None or f.ts_ns > start) and (end is None or f.ts_ns <= end)
        ]
        page = _page(fills, params)
        insts = trading.market.instruments
        return {
            "trades": {f.trade_id: rest_trade(f, insts[f.symbol]) for f in page},
            "count": len(fills),
        }

    async def handle(self, request: web.Request) -> web.StreamResponse:
        """The aiohttp handler for ``POST /0/private/{method}``."""
        body = await request.read()
        status, payload = self.call(
            request.match_info["method"],
            request.path,
            request.headers,
            body,
            request.content_type == "application/json",
            time.time_ns(),
        )
        if status == DROP:
            if request.transport is not None:
                request.transport.abort()
            raise asyncio.CancelledError  # nothing may be written: the client must not know
        return web.Response(body=_encode(payload), status=status, content_type="application/json")


_DROPPED = object()


def _params(body: bytes, json_body: bool) -> dict[str, str] | None:
    """The request's parameters from a form or JSON body (values as strings)."""
    try:
        if json_body:
            data = json.loads(body or b"{}", parse_float=Decimal)
            if not isinstance(data, dict):
                return None
            return {str(k): _param_text(v) for k, v in data.items()}
        return dict(parse_qsl(body.decode(), keep_blank_values=True))
    except (ValueError, UnicodeDecodeError):
        return None


def _param_text(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, list):
        return ",".join(str(v) for v in value)
    return str(value)


def _rest_pair(trading: SimTrading, name: str) -> SimInstrument:
    wanted = name.upper()
    for inst in trading.market.instruments.values():
        if wanted in inst.names():
            return inst
    raise TradingError(ERR_UNKNOWN_PAIR)


def _rest_order_params(trading: SimTrading, p: dict[str, str]) -> OrderParams:
    """AddOrder's form fields: ``price`` is the limit price of a limit order and the trigger
    price of a stop-loss or take-profit."""
    if not p.get("pair") or "volume" not in p or "type" not in p or "ordertype" not in p:
        raise TradingError(ERR_ARGS)
    inst = _rest_pair(trading, p["pair"])
    kind = p["ordertype"]
    if kind not in ORDER_TYPES:
        raise TradingError(f"{ERR_ARGS}:ordertype")
    price = parse_decimal(p["price"], "price") if p.get("price") else None
    userref = _int_param(p, "userref") if p.get("userref") else None
    return OrderParams(
        symbol=inst.symbol,
        side=p["type"],
        order_type=kind,
        qty=parse_decimal(p["volume"], "volume"),
        limit_price=price if kind == "limit" else None,
        trigger_price=price if kind in ("stop-loss", "take-profit") else None,
        cl_ord_id=p.get("cl_ord_id") or None,
        userref=userref,
        validate=p.get("validate", "").lower() in ("true", "1"),
    )


def _int_param(p: Mapping[str, Any], name: str) -> int:
    raw = p.get(name)
    if isinstance(raw, bool):
        raise TradingError(f"{ERR_ARGS}:{name}")
    try:
        return int(str(raw))
    except ValueError:
        raise TradingError(f"{ERR_ARGS}:{name}") from None


def _time_param(p: dict[str, str], name: str) -> int | None:
    raw = p.get(name)
    if not raw:
        return None
    return int(parse_decimal(raw, name).scaleb(9))


def _filtered(orders: list[SimOrder], p: dict[str, str]) -> list[SimOrder]:
    cl_ord_id = p.get("cl_ord_id") or None
    userref = _int_param(p, "userref") if p.get("userref") else None
    return [
        o
        for o in orders
        if (cl_ord_id is None or o.params.cl_ord_id == cl_ord_id)
        and (userref is None or o.params.userref == userref)
    ]


def _page(rows: list[Any], p: dict[str, str]) -> list[Any]:
    ofs = _int_param(p, "ofs") if p.get("ofs") else 0
    return rows[max(0, ofs) : max(0, ofs) + PAGE]


def _second(ts_ns: int) -> str:
    """'2023-09-21T15:49:29Z', the format of cancel_all_orders_after's times."""
    return datetime.fromtimestamp(ts_ns // 1_000_000_000, tz=UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


# --- WebSocket v2 ----------------------------------------------------------------------------


@dataclass(eq=False)
class _AuthConn:
    """One private WebSocket connection: outbound queue, subscriptions, sequences."""

    ws: web.WebSocketResponse
    transport: asyncio.Transport | None
    queue: asyncio.Queue[str] = field(default_factory=asyncio.Queue)
    channels: set[str] = field(default_factory=set)
    sequence: int = 0
    closed: bool = False

    def send(self, frame: str) -> None:
        if not self.closed:
            self.queue.put_nowait(frame)

    def next_sequence(self) -> int:
        self.sequence += 1
        return self.sequence

    def abort(self) -> None:
        """Cut the TCP connection without a close frame."""
        self.closed = True
        if self.transport is not None:
            self.transport.abort()


class PrivateWebSocket:
    """Kraken's authenticated WebSocket v2 (``/auth/v2``) over one ``SimTrading``."""

    def __init__(self, rest: PrivateRest, trading: SimTrading) -> None:
        self.rest = rest
        self.trading = trading
        self.conns: set[_AuthConn] = set()
        self._held: list[tuple[str, list[dict[str, Any]]]] | None = None
        self._in_use: set[str] = set()  # tokens of live private subscriptions never expire
        trading.listeners.append(self._on_trading)

    async def handle(self, request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse(timeout=2.0, compress=False, max_msg_size=1 << 20)
        await ws.prepare(request)
        transport = request.transport
        conn = _AuthConn(ws, transport if isinstance(transport, asyncio.Transport) else None)
        self.conns.add(conn)
        conn.send(wire.status(secrets.randbits(63) | (1 << 63)))
        writer = asyncio.create_task(self._write(conn))
        try:
            async for msg in ws:
                if msg.type == WSMsgType.TEXT:
                    self.on_text(conn, msg.data)
                elif msg.type == WSMsgType.BINARY:
                    conn.send(wire.error(None, ERR_MALFORMED, None, time.time_ns(), time.time_ns()))
        finally:
            conn.closed = True
            self.conns.discard(conn)
            writer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await writer
        return ws

    async def _write(self, conn: _AuthConn) -> None:
        try:
            while True:
                await conn.ws.send_str(await conn.queue.get())
        except (ConnectionError, RuntimeError):
            conn.closed = True

    def drop_all(self) -> int:
        conns = list(self.conns)
        for conn in conns:
            conn.abort()
            self.conns.discard(conn)
        return len(conns)

    async def close_all(self) -> None:
        for conn in list(self.conns):
            conn.closed = True
            with contextlib.suppress(ConnectionError, RuntimeError, asyncio.TimeoutError):
                async with asyncio.timeout(2):
                    await conn.ws.close(code=1001, message=b"server shutdown")

    # --- updates ---------------------------------------------------------------------------

    def _on_trading(self, channel: str, items: list[dict[str, Any]]) -> None:
        if self._held is not None:  # a request is being answered: its response goes first
            self._held.append((channel, items))
            return
        for conn in list(self.conns):
            if channel in conn.channels:
                conn.send(_data(channel, "update", items, conn.next_sequence()))

    def _release(self) -> None:
        held, self._held = self._held or [], None
        for channel, items in held:
            self._on_trading(channel, items)

    # --- requests --------------------------------------------------------------------------

    def on_text(self, conn: _AuthConn, text: str) -> None:
        """Answer one request; updates it causes are sent after its response(s)."""
        t_in = time.time_ns()
        try:
            msg = json.loads(text, parse_float=Decimal)
        except ValueError:
            msg = None
        if not isinstance(msg, dict):
            conn.send(wire.error(None, ERR_MALFORMED, None, t_in, time.time_ns()))
            return
        method, req_id = msg.get("method"), msg.get("req_id")
        if req_id is not None and type(req_id) is not int:
            req_id = None
        params = msg.get("params")
        self._held = []
        try:
            self._dispatch(
                conn, str(method), params if isinstance(params, dict) else {}, req_id, t_in
            )
        except TradingError as exc:
            conn.send(wire.error(str(method), exc.error, req_id, t_in, time.time_ns()))
        finally:
            self._release()

    def _dispatch(
        self, conn: _AuthConn, method: str, params: dict[str, Any], req_id: int | None, t_in: int
    ) -> None:
        if method == "ping":
            conn.send(wire.pong(req_id, t_in, time.time_ns()))
            return
        handler = {
            "subscribe": self._subscribe,
            "unsubscribe": self._unsubscribe,
            "add_order": self._add_order,
            "cancel_order": self._cancel_order,
            "cancel_all": self._cancel_all,
            "cancel_all_orders_after": self._cancel_after,
        }.get(method)
        if handler is None:
            raise TradingError(f"Method not found: {method}")
        token = params.get("token")
        if token is None:
            raise TradingError(f"{ERR_ARGS}:token")
        if not (token in self._in_use or self.rest.token_valid(token, t_in)):
            raise TradingError(ERR_SESSION)
        handler(conn, params, req_id, t_in)

    def _ack(
        self, conn: _AuthConn, method: str, result: dict[str, Any], req_id: int | None, t_in: int
    ) -> None:
        conn.send(wire.ack(method, result, req_id, t_in, time.time_ns()))

    def _subscribe(
        self, conn: _AuthConn, params: dict[str, Any], req_id: int | None, t_in: int
    ) -> None:
        channel = params.get("channel")
        if channel not in ("executions", "balances"):
            raise TradingError(f"Channel {channel} not supported")
        if channel in conn.channels:
            raise TradingError("Already subscribed")
        if channel == "executions":
            snap_orders = _flag(params, "snap_orders", "snapshot", True)
            snap_trades = _flag(params, "snap_trades", "snapshot_trades", False)
            result: dict[str, Any] = {
                "channel": channel,
                "maxratecount": MAX_RATE_COUNT,
                "snap_orders": snap_orders,
                "snap_trades": snap_trades,
            }
            items = self.trading.executions_snapshot(snap_orders, snap_trades)
            snapshot = True
        else:
            snapshot = _flag(params, "snapshot", "snapshot", True)
            result = {"channel": channel, "snapshot": snapshot}
            items = self.trading.balances_snapshot()
        conn.channels.add(channel)
        self._in_use.add(str(params["token"]))
        self._ack(conn, "subscribe", result, req_id, t_in)
        if snapshot or channel == "executions":
            conn.send(_data(channel, "snapshot", items, conn.next_sequence()))

    def _unsubscribe(
        self, conn: _AuthConn, params: dict[str, Any], req_id: int | None, t_in: int
    ) -> None:
        channel = params.get("channel")
        if channel not in conn.channels:
            raise TradingError("Subscription Not Found")
        conn.channels.discard(str(channel))
        self._ack(conn, "unsubscribe", {"channel": channel}, req_id, t_in)

    def _add_order(
        self, conn: _AuthConn, params: dict[str, Any], req_id: int | None, t_in: int
    ) -> None:
        order = self.trading.place(_ws_order_params(params))
        if not order.params.validate and self.trading.take_drop():
            conn.abort()
            self.conns.discard(conn)
            return
        result: dict[str, Any] = {"order_id": "" if order.params.validate else order.order_id}
        if order.params.userref is not None:
            result["order_userref"] = order.params.userref
        if order.params.cl_ord_id is not None:
            result["cl_ord_id"] = order.params.cl_ord_id
        self._ack(conn, "add_order", result, req_id, t_in)

    def _cancel_order(
        self, conn: _AuthConn, params: dict[str, Any], req_id: int | None, t_in: int
    ) -> None:
        targets: list[tuple[str | None, str | None]] = [
            (i, None) for i in _str_list(params, "order_id")
        ]
        targets += [(None, c) for c in _str_list(params, "cl_ord_id")]
        if not targets:
            raise TradingError(ERR_ARGS)
        for order_id, cl_ord_id in targets:
            try:
                order = self.trading.cancel(order_id, cl_ord_id)
            except TradingError as exc:
                conn.send(wire.error("cancel_order", exc.error, req_id, t_in, time.time_ns()))
                continue
            result = {"order_id": order.order_id}
            if cl_ord_id is not None:
                result["cl_ord_id"] = cl_ord_id
            self._ack(conn, "cancel_order", result, req_id, t_in)

    def _cancel_all(
        self, conn: _AuthConn, params: dict[str, Any], req_id: int | None, t_in: int
    ) -> None:
        self._ack(conn, "cancel_all", {"count": self.trading.cancel_all()}, req_id, t_in)

    def _cancel_after(
        self, conn: _AuthConn, params: dict[str, Any], req_id: int | None, t_in: int
    ) -> None:
        timeout = params.get("timeout")
        if type(timeout) is not int:
            raise TradingError(f"{ERR_ARGS}:timeout")
        now, trigger = self.trading.cancel_all_after(timeout)
        result = {
            "currentTime": _second(now),
            "triggerTime": _second(trigger) if trigger is not None else "0",
        }
        self._ack(conn, "cancel_all_orders_after", result, req_id, t_in)


def _data(channel: str, kind: str, items: list[dict[str, Any]], sequence: int) -> str:
    return _encode({"channel": channel, "type": kind, "data": items, "sequence": sequence}).decode()


def _flag(params: dict[str, Any], name: str, legacy: str, default: bool) -> bool:
    value = params.get(name, params.get(legacy, default))
    if type(value) is not bool:
        raise TradingError(f"{ERR_ARGS}:{name}")
    return value


def _str_list(params: dict[str, Any], name: str) -> list[str]:
    value = params.get(name)
    if value is None:
        return []
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise TradingError(f"{ERR_ARGS}:{name}")
    return list(value)


def _ws_order_params(p: dict[str, Any]) -> OrderParams:
    """add_order's params: ``limit_price`` for limit orders, ``triggers.price`` for
    stop-loss and take-profit; ``cl_ord_id`` xor ``order_userref``."""
    kind = p.get("order_type")
    symbol = p.get("symbol")
    if not isinstance(kind, str) or kind not in ORDER_TYPES or not isinstance(symbol, str):
        raise TradingError(ERR_ARGS)
    tif = p.get("time_in_force", "gtc")
    if tif != "gtc" or p.get("post_only", False) or p.get("margin", False):
        raise TradingError(ERR_ARGS)
    triggers = p.get("triggers")
    trigger = None
    if isinstance(triggers, dict) and "price" in triggers:
        trigger = parse_decimal(triggers["price"], "triggers")
    limit = parse_decimal(p["limit_price"], "limit_price") if "limit_price" in p else None
    userref = p.get("order_userref")
    cl_ord_id = p.get("cl_ord_id")
    if (userref is not None and type(userref) is not int) or (
        cl_ord_id is not None and not isinstance(cl_ord_id, str)
    ):
        raise TradingError(ERR_ARGS)
    return OrderParams(
        symbol=symbol,
        side=str(p.get("side")),
        order_type=kind,
        qty=parse_decimal(p.get("order_qty"), "order_qty"),
        limit_price=limit if kind == "limit" else None,
        trigger_price=trigger if kind in ("stop-loss", "take-profit") else None,
        cl_ord_id=cl_ord_id,
        userref=userref,
        validate=p.get("validate") is True,
    )
