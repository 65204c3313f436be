"""Kraken trading venue: sans-IO decoding, dedupe, balances, error mapping and exact numbers,
then the venue against a tiny scripted fake of Kraken's private WS v2 + REST (loopback)."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from decimal import Decimal
from typing import Any

import msgspec
import pytest
from aiohttp import web
from pydantic import SecretStr

from gal_friday.config import Credentials, KrakenSettings
from gal_friday.events import ExecutionReportEvent, OrderStatus, OrderType, Side
from gal_friday.execution.venue import (
    OrderRejected,
    OrderRequest,
    TradingVenue,
    VenueAuthError,
    VenueBusy,
    VenueUncertain,
)
from gal_friday.kraken.auth import NonceSource
from gal_friday.kraken.errors import from_kraken_error
from gal_friday.kraken.executions import ExecutionTracker, venue_order_from_rest
from gal_friday.kraken.private import (
    KrakenPrivateRest,
    KrakenUncertain,
)
from gal_friday.kraken.rest import KrakenUnavailable
from gal_friday.kraken.schemas import encode_request, json_number
from gal_friday.kraken.trading import KrakenTradingVenue, normalise_balances

PAIRS = ("XRP/USD", "DOGE/USD")
SECRET = base64.b64encode(b"fake kraken secret for tests only").decode()
CREDS = Credentials(api_key=SecretStr("test-key"), api_secret=SecretStr(SECRET))
D = Decimal
_DECODER = msgspec.json.Decoder(float_hook=str)  # as the venue decodes

# --- exact numbers ---------------------------------------------------------------------------


def test_json_number_is_exact_decimal_text() -> None:
    frame = encode_request(
        "add_order",
        {
            "order_qty": json_number(D("12.50")),
            "limit_price": json_number(D("0.50001")),
            "triggers": {"price": json_number(D("1E+1"))},
        },
        7,
    )
    text = frame.decode()
    assert '"order_qty":12.50' in text and '"limit_price":0.50001' in text
    assert '"price":10' in text and json.loads(text)["req_id"] == 7
    assert json_number(D("0.1")) == msgspec.Raw(b"0.1")  # never 0.1000000000000000055...
    with pytest.raises(ValueError):
        json_number(D("NaN"))


def test_incoming_numbers_decode_as_exact_text() -> None:
    tracker = ExecutionTracker(PAIRS)
    tracker.feed(_decode(_pending_new("c1", "O1", qty="100.10000000")))
    reports, _ = tracker.feed(_decode(_trade("O1", "T1", 11, qty="0.10000000", price="0.52340")))
    assert reports[0].last_fill_price == D("0.52340")
    assert str(reports[0].last_fill_qty) == "0.10000000"


# --- balances --------------------------------------------------------------------------------


def test_normalise_balances_codes_and_earn() -> None:
    raw = {
        "ZUSD": "100.5",
        "XXRP": "10",
        "XRP.F": "5.5",
        "XXDG": "3",
        "XXBT": "0.1",
        "XBT.F": "0.2",
        "DOT.S": "7",
        "USD.M": "1",
        "ETH.B": "2",
        "SOL.P": "1",
    }
    assert normalise_balances(raw) == {
        "USD": D("100.5"),
        "XRP": D("15.5"),
        "DOGE": D("3"),
        "BTC": D("0.3"),
    }


# --- execution decoding ----------------------------------------------------------------------


def _wire(obj: object) -> str:
    """JSON text with ``_num`` values written as raw numbers, as Kraken sends them."""
    return json.dumps(obj).replace('"#', "").replace('#"', "")


def _decode(obj: dict[str, Any]) -> dict[str, Any]:
    """Through the wire: JSON text decoded as the venue does (numbers as exact text)."""
    out: dict[str, Any] = _DECODER.decode(_wire(obj).encode())
    return out


def _num(value: str) -> str:
    """Mark a value to be written as a raw JSON number by ``_decode``."""
    return f"#{value}#"


def _pending_new(
    coid: str,
    oid: str,
    *,
    qty: str = "20",
    price: str = "0.5",
    symbol: str = "XRP/USD",
    side: str = "buy",
) -> dict[str, Any]:
    # Shape of the docs' executions_pending_new example.
    return {
        "channel": "executions",
        "type": "update",
        "sequence": 8,
        "data": [
            {
                "order_id": oid,
                "cl_ord_id": coid,
                "symbol": symbol,
                "order_qty": _num(qty),
                "cum_cost": _num("0.0"),
                "time_in_force": "GTC",
                "exec_type": "pending_new",
                "side": side,
                "order_type": "limit",
                "limit_price_type": "static",
                "limit_price": _num(price),
                "stop_price": _num("0.0"),
                "order_status": "pending_new",
                "fee_usd_equiv": _num("0.0"),
                "fee_ccy_pref": "fciq",
                "timestamp": "2023-09-22T10:33:05.709950Z",
            }
        ],
    }


def _new(oid: str) -> dict[str, Any]:
    # The docs' sparse executions_new example: no symbol, no cl_ord_id.
    return {
        "channel": "executions",
        "type": "update",
        "sequence": 9,
        "data": [
            {
                "timestamp": "2023-09-22T10:33:05.709982Z",
                "order_status": "new",
                "exec_type": "new",
                "order_userref": 3,
                "order_id": oid,
            }
        ],
    }


def _trade(
    oid: str,
    exec_id: str,
    trade_id: int,
    *,
    qty: str,
    price: str,
    fee: str = "0.01",
    status: str = "partially_filled",
) -> dict[str, Any]:
    # Shape of the docs' executions_trade example.
    return {
        "channel": "executions",
        "type": "update",
        "sequence": 10,
        "data": [
            {
                "order_id": oid,
                "exec_id": exec_id,
                "exec_type": "trade",
                "trade_id": trade_id,
                "symbol": "XRP/USD",
                "side": "buy",
                "last_qty": _num(qty),
                "last_price": _num(price),
                "liquidity_ind": "m",
                "order_type": "limit",
                "order_status": status,
                "timestamp": "2023-09-22T10:33:05.709993Z",
                "fees": [{"asset": "USD", "qty": _num(fee)}],
            }
        ],
    }


def test_order_lifecycle_from_docs_shapes() -> None:
    tracker = ExecutionTracker(PAIRS)
    r1, _ = tracker.feed(_decode(_pending_new("c1", "O1")))
    r2, _ = tracker.feed(_decode(_new("O1")))
    r3, _ = tracker.feed(_decode(_trade("O1", "T1", 1, qty="5", price="0.5")))
    r4, _ = tracker.feed(_decode(_trade("O1", "T2", 2, qty="15", price="0.4", status="filled")))
    r5, _ = tracker.feed(
        {
            "channel": "executions",
            "type": "update",
            "data": [{"order_id": "O1", "exec_type": "filled", "order_status": "filled"}],
        }
    )
    assert [r.status for r in r1 + r2 + r3 + r4] == [
        OrderStatus.SUBMITTED,
        OrderStatus.ACKNOWLEDGED,
        OrderStatus.PARTIALLY_FILLED,
        OrderStatus.FILLED,
    ]
    assert r5 == []  # already FILLED: no second report
    ack, last = r2[0], r4[0]
    assert ack.client_order_id == "c1" and ack.pair == "XRP/USD" and ack.order_qty == D(20)
    assert ack.signal_id is None and ack.exchange_order_id == "O1"
    assert last.filled_qty == D(20) and last.last_fill_qty == D(15)
    assert last.avg_price == (D(5) * D("0.5") + D(15) * D("0.4")) / D(20)
    assert last.fee == D("0.01") and last.fee_asset == "USD"
    assert last.ts_ns == 1695378785709993000


def test_cancel_and_expire_carry_reason() -> None:
    tracker = ExecutionTracker(PAIRS)
    tracker.feed(_decode(_pending_new("c1", "O1")))
    tracker.feed(_decode(_pending_new("c2", "O2")))
    cancelled, _ = tracker.feed(
        {
            "channel": "executions",
            "type": "update",
            "data": [
                {
                    "order_id": "O1",
                    "exec_type": "canceled",
                    "order_status": "canceled",
                    "reason": "User requested",
                }
            ],
        }
    )
    expired, _ = tracker.feed(
        {
            "channel": "executions",
            "type": "update",
            "data": [{"order_id": "O2", "exec_type": "expired", "order_status": "expired"}],
        }
    )
    assert cancelled[0].status is OrderStatus.CANCELLED
    assert cancelled[0].reason == "User requested"
    assert expired[0].status is OrderStatus.EXPIRED


def test_fill_never_reported_twice() -> None:
    tracker = ExecutionTracker(PAIRS)
    tracker.feed(_decode(_pending_new("c1", "O1")))
    first, _ = tracker.feed(_decode(_trade("O1", "T1", 1, qty="5", price="0.5")))
    again, _ = tracker.feed(_decode(_trade("O1", "T1", 1, qty="5", price="0.5")))
    rest = tracker.apply_rest_trade(
        "T1", {"ordertxid": "O1", "vol": "5", "price": "0.5", "fee": "0.01", "time": "1695378785.7"}
    )
    assert len(first) == 1 and again == [] and rest is None
    assert tracker.orders["c1"].filled == D(5)


def test_snapshot_names_suspects_and_adopts_unknown_orders() -> None:
    tracker = ExecutionTracker(PAIRS)
    tracker.feed(_decode(_pending_new("gone", "O1")))  # finished while we were away
    tracker.feed(_decode(_pending_new("more", "O2")))  # filled more than we saw
    tracker.feed(_decode(_pending_new("same", "O3")))
    tracker.feed(_decode(_new("O3")))
    snap = {
        "channel": "executions",
        "type": "snapshot",
        "data": [
            {
                "order_id": "O2",
                "cl_ord_id": "more",
                "symbol": "XRP/USD",
                "side": "buy",
                "order_type": "limit",
                "order_qty": "20",
                "cum_qty": "4",
                "order_status": "partially_filled",
            },
            {
                "order_id": "O3",
                "cl_ord_id": "same",
                "symbol": "XRP/USD",
                "side": "buy",
                "order_type": "limit",
                "order_qty": "20",
                "cum_qty": "0",
                "order_status": "new",
            },
            {
                "order_id": "O9",
                "cl_ord_id": "old-run",
                "symbol": "DOGE/USD",
                "side": "sell",
                "order_type": "limit",
                "order_qty": "100",
                "cum_qty": "0",
                "order_status": "new",
            },
            {
                "order_id": "O8",
                "symbol": "BTC/USD",
                "side": "sell",  # not ours to trade
                "order_type": "limit",
                "order_qty": "1",
                "cum_qty": "0",
                "order_status": "new",
            },
        ],
    }
    reports, suspects = tracker.feed(snap)
    assert {o.client_order_id for o in suspects} == {"gone", "more"}
    assert [(r.client_order_id, r.status) for r in reports] == [
        ("old-run", OrderStatus.ACKNOWLEDGED)
    ]


def test_rest_reconciliation_reports_missed_fills_then_end() -> None:
    tracker = ExecutionTracker(PAIRS)
    tracker.feed(_decode(_pending_new("c1", "O1", qty="10")))
    fill = tracker.apply_rest_trade(
        "TX1",
        {
            "ordertxid": "O1",
            "pair": "XXRPZUSD",
            "vol": "10",
            "price": "0.51",
            "fee": "0.02",
            "time": "1700000000.5",
            "trade_id": 77,
        },
    )
    end = tracker.apply_rest_order("O1", {"status": "closed", "vol_exec": "10"})
    assert fill is not None and fill.status is OrderStatus.FILLED
    assert fill.last_fill_price == D("0.51") and fill.ts_ns == 1700000000500000000
    assert end is None  # FILLED already reported by the fill
    dup, _ = tracker.feed(_decode(_trade("O1", "TX1", 77, qty="10", price="0.51")))
    assert dup == []


def test_sparse_terminal_update_ahead_of_our_fills_is_a_suspect() -> None:
    tracker = ExecutionTracker(PAIRS)
    tracker.feed(_decode(_pending_new("c1", "O1")))
    reports, suspects = tracker.feed(
        {
            "channel": "executions",
            "type": "update",
            "data": [{"order_id": "O1", "exec_type": "filled", "order_status": "filled"}],
        }
    )
    assert reports == [] and [o.client_order_id for o in suspects] == ["c1"]


def test_venue_order_from_rest() -> None:
    info = {
        "status": "open",
        "cl_ord_id": "c1",
        "vol": "30",
        "vol_exec": "0",
        "descr": {"pair": "XDGUSD", "type": "sell", "ordertype": "stop-loss", "price": "0.08"},
    }
    order = venue_order_from_rest("OX", info, PAIRS)
    assert order is not None and order.pair == "DOGE/USD" and order.type is OrderType.STOP_LOSS
    assert order.trigger_price == D("0.08") and order.limit_price is None and order.is_open


# --- fake Kraken (loopback) ------------------------------------------------------------------


class FakeKraken:
    """Scripted private WS v2 + REST. Attributes steer its answers; ``ws_log`` and
    ``rest_log`` record what the venue sent."""

    def __init__(self) -> None:
        self.ws_log: list[tuple[int, dict[str, Any]]] = []
        self.raw_frames: list[str] = []
        self.rest_log: list[tuple[str, dict[str, str]]] = []
        self.tokens = 0
        self.connections = 0
        self.add_error: str | None = None
        self.drop_on_add = False
        self.silent_on_add = False
        self.token_error: str | None = None
        self.snapshot: list[dict[str, Any]] = []
        self.open: dict[str, dict[str, Any]] = {}
        self.closed: dict[str, dict[str, Any]] = {}
        self.trades: dict[str, dict[str, Any]] = {}
        self.sockets: list[web.WebSocketResponse] = []
        self._runner: web.AppRunner | None = None
        self.port = 0

    async def start(self) -> None:
        app = web.Application()
        app.router.add_get("/v2", self._ws)
        app.router.add_post("/0/private/{method}", self._rest)
        self._runner = web.AppRunner(app)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        self.port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]

    async def stop(self) -> None:
        for ws in self.sockets:
            await ws.close()
        if self._runner is not None:
            await self._runner.cleanup()

    def sent(self, method: str) -> list[dict[str, Any]]:
        return [m for _, m in self.ws_log if m.get("method") == method]

    async def drop(self) -> None:
        for ws in list(self.sockets):
            await ws.close()

    # WS

    async def _ws(self, request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        self.connections += 1
        conn = self.connections
        self.sockets.append(ws)
        async for frame in ws:
            self.raw_frames.append(frame.data)
            msg = json.loads(frame.data)
            self.ws_log.append((conn, msg))
            if not await self._answer(ws, msg):
                await ws.close()
                break
        self.sockets.remove(ws)
        return ws

    async def _answer(self, ws: web.WebSocketResponse, msg: dict[str, Any]) -> bool:
        method, params, req_id = msg["method"], msg.get("params", {}), msg.get("req_id")
        ok: dict[str, Any] = {"method": method, "req_id": req_id, "success": True}
        if method == "subscribe":
            await _send(ws, {**ok, "result": {"channel": params["channel"]}})
            if params["channel"] == "executions":
                await _send(
                    ws, {"channel": "executions", "type": "snapshot", "data": self.snapshot}
                )
        elif method == "add_order":
            return await self._add(ws, msg, ok)
        elif method == "cancel_order":
            await _send(ws, {**ok, "result": {"cl_ord_id": params["cl_ord_id"][0]}})
        elif method == "cancel_all":
            await _send(ws, {**ok, "result": {"count": 2}})
        elif method == "cancel_all_orders_after":
            await _send(ws, {**ok, "result": {"currentTime": "x", "triggerTime": "y"}})
        return True

    async def _add(
        self, ws: web.WebSocketResponse, msg: dict[str, Any], ok: dict[str, Any]
    ) -> bool:
        params = msg["params"]
        if self.silent_on_add:
            return True
        if self.drop_on_add:
            oid = f"O-{len(self.sent('add_order'))}"
            self.open[oid] = _rest_order(params, oid)
            return False
        if self.add_error is not None:
            await _send(
                ws,
                {
                    "error": self.add_error,
                    "method": "add_order",
                    "req_id": msg["req_id"],
                    "success": False,
                },
            )
            return True
        oid = f"O-{len(self.sent('add_order'))}"
        self.open[oid] = _rest_order(params, oid)
        await _send(
            ws,
            _pending_new(
                params["cl_ord_id"],
                oid,
                qty=str(params["order_qty"]),
                price=str(params.get("limit_price", 0)),
            ),
        )
        await _send(ws, {**ok, "result": {"order_id": oid}})
        await _send(ws, _new(oid))
        return True

    # REST

    async def _rest(self, request: web.Request) -> web.Response:
        method = request.match_info["method"]
        form = {k: str(v) for k, v in (await request.post()).items()}
        self.rest_log.append((method, form))
        if method == "GetWebSocketsToken":
            if self.token_error:
                return web.json_response({"error": [self.token_error]})
            self.tokens += 1
            return _ok({"token": f"tok-{self.tokens}", "expires": 900})
        coid = form.get("cl_ord_id")
        if method == "OpenOrders":
            return _ok({"open": _filter(self.open, coid)})
        if method == "ClosedOrders":
            return _ok({"closed": _filter(self.closed, coid)})
        if method == "QueryOrders":
            ids = form["txid"].split(",")
            both = {**self.open, **self.closed}
            return _ok({t: both[t] for t in ids if t in both})
        if method == "TradesHistory":
            return _ok({"trades": self.trades, "count": len(self.trades)})
        if method == "Balance":
            return _ok({"ZUSD": "100.0", "XXRP": "1", "XRP.F": "2", "XXDG": "3"})
        if method == "CancelAllOrdersAfter":
            return _ok({"currentTime": "x", "triggerTime": "y"})
        return web.json_response({"error": ["EGeneral:Invalid arguments"]})


async def _send(ws: web.WebSocketResponse, obj: object) -> None:
    await ws.send_str(_wire(obj))


def _ok(result: Any) -> web.Response:
    return web.json_response({"error": [], "result": result})


def _filter(orders: dict[str, dict[str, Any]], coid: str | None) -> dict[str, Any]:
    return {k: v for k, v in orders.items() if coid is None or v.get("cl_ord_id") == coid}


def _rest_order(params: dict[str, Any], oid: str) -> dict[str, Any]:
    return {
        "status": "open",
        "cl_ord_id": params["cl_ord_id"],
        "vol": str(params["order_qty"]),
        "vol_exec": "0",
        "opentm": str(time.time()),
        "descr": {
            "pair": "XRPUSD",
            "type": params["side"],
            "ordertype": "limit",
            "price": str(params.get("limit_price", "0")),
        },
    }


@pytest.fixture
async def fake() -> AsyncIterator[FakeKraken]:
    server = FakeKraken()
    await server.start()
    yield server
    await server.stop()


def _settings(fake: FakeKraken) -> KrakenSettings:
    return KrakenSettings(
        ws_private_url=f"ws://127.0.0.1:{fake.port}/v2",
        rest_url=f"http://127.0.0.1:{fake.port}",
        request_timeout_s=0.3,
        connect_timeout_s=2.0,
        reconnect_initial_s=0.01,
        reconnect_max_s=0.05,
        reconnect_jitter=0.0,
    )


Reports = list[ExecutionReportEvent]


async def _venue(
    fake: FakeKraken, **kw: Any
) -> tuple[KrakenTradingVenue, Reports, Callable[..., Awaitable[None]]]:
    reports: Reports = []

    async def on_report(report: ExecutionReportEvent) -> None:
        reports.append(report)

    kw.setdefault("dms_timeout_s", 0)
    venue = KrakenTradingVenue(_settings(fake), CREDS, pairs=PAIRS, nonce=NonceSource(), **kw)
    await venue.start(on_report)
    return venue, reports, on_report


async def _until(cond: Callable[[], bool]) -> None:
    for _ in range(300):  # 3 s
        if cond():
            return
        await asyncio.sleep(0.01)
    raise AssertionError("condition not reached in time")


def _limit(coid: str, qty: str = "12.50", price: str = "0.50001") -> OrderRequest:
    return OrderRequest(coid, "XRP/USD", Side.BUY, OrderType.LIMIT, D(qty), D(price))


async def test_start_subscribes_and_submit_acks(fake: FakeKraken) -> None:
    venue, reports, _ = await _venue(fake)
    try:
        assert venue.connected
        subs = fake.sent("subscribe")
        assert subs[0]["params"] == {
            "channel": "executions",
            "snap_orders": True,
            "snap_trades": False,
            "token": "tok-1",
        }
        assert subs[1]["params"]["channel"] == "balances"
        assert await venue.submit(_limit("c1")) == "O-1"
        add = next(f for f in fake.raw_frames if '"add_order"' in f)
        assert '"order_qty":12.50' in add and '"limit_price":0.50001' in add
        assert '"time_in_force":"gtc"' in add and '"cl_ord_id":"c1"' in add
        await _until(lambda: len(reports) == 2)
        assert [r.status for r in reports] == [OrderStatus.SUBMITTED, OrderStatus.ACKNOWLEDGED]
        assert reports[0].order_qty == D("12.50")
        await venue.cancel("c1")
        assert fake.sent("cancel_order")[0]["params"]["cl_ord_id"] == ["c1"]
        assert await venue.cancel_all() == 2
        assert await venue.balances() == {"USD": D(100), "XRP": D(3), "DOGE": D(3)}
        assert SECRET not in repr(venue) and "tok-1" not in repr(venue)
    finally:
        await venue.stop()


async def test_stop_loss_sends_triggers(fake: FakeKraken) -> None:
    venue, _, _ = await _venue(fake)
    try:
        await venue.submit(
            OrderRequest(
                "s1", "XRP/USD", Side.SELL, OrderType.STOP_LOSS, D("5"), trigger_price=D("0.4500")
            )
        )
        params = fake.sent("add_order")[0]["params"]
        assert params["order_type"] == "stop-loss" and "limit_price" not in params
        assert params["triggers"] == {"reference": "last", "price_type": "static", "price": 0.45}
        assert '"price":0.4500' in next(f for f in fake.raw_frames if '"add_order"' in f)
    finally:
        await venue.stop()


@pytest.mark.parametrize(
    ("error", "cls", "text"),
    [
        ("EOrder:Insufficient funds", OrderRejected, "Insufficient funds"),
        ("EService:Throttled: 9999999999", VenueBusy, "Throttled"),
        ("EGeneral:Permission denied", VenueAuthError, "Create & modify orders"),
    ],
)
async def test_add_order_errors(
    fake: FakeKraken, error: str, cls: type[Exception], text: str
) -> None:
    venue, _, _ = await _venue(fake)
    fake.add_error = error
    try:
        with pytest.raises(cls, match=text) as info:
            await venue.submit(_limit("e1"))
        if isinstance(info.value, VenueBusy) and "Throttled" in error:
            assert info.value.retry_after_s is not None and info.value.retry_after_s > 0
        assert "e1" not in venue.tracker.orders  # never taken: forgotten
    finally:
        await venue.stop()


async def test_drop_in_flight_is_uncertain_then_lookup_finds_it(fake: FakeKraken) -> None:
    venue, _, _ = await _venue(fake)
    fake.drop_on_add = True
    try:
        with pytest.raises(VenueUncertain):
            await venue.submit(_limit("u1"))
        found = await venue.lookup("u1")
        assert found is not None and found.exchange_order_id == "O-1" and found.is_open
        assert ("OpenOrders", {"cl_ord_id": "u1"}) in [
            (m, {k: v for k, v in f.items() if k != "nonce"}) for m, f in fake.rest_log
        ]
        fake.drop_on_add = False
        await _until(lambda: venue.connected)
        assert await venue.submit(_limit("u1")) == "O-1"  # looked up, not resent
        assert len(fake.sent("add_order")) == 1
        assert venue.stats["reconnects"] == 1
    finally:
        await venue.stop()


async def test_breaker_opens_after_busy_and_stops_sending(fake: FakeKraken) -> None:
    venue, _, _ = await _venue(fake, breaker_fail_max=3)
    fake.add_error = "EService:Unavailable"
    try:
        for i in range(3):
            with pytest.raises(VenueBusy, match="Unavailable"):
                await venue.submit(_limit(f"b{i}"))
        with pytest.raises(VenueBusy, match="circuit breaker open"):
            await venue.submit(_limit("b9"))
        assert len(fake.sent("add_order")) == 3  # nothing sent while open
        await venue.cancel("b0")  # cancels still go out
        assert len(fake.sent("cancel_order")) == 1
    finally:
        await venue.stop()


async def test_no_response_in_time_is_uncertain_and_breaker_recovers(fake: FakeKraken) -> None:
    venue, _, _ = await _venue(fake, breaker_fail_max=1, breaker_reset_s=0.1)
    fake.silent_on_add = True
    try:
        with pytest.raises(VenueUncertain, match="no response in time"):
            await venue.submit(_limit("t1"))
        assert venue.connected  # a slow answer is not a broken connection
        with pytest.raises(VenueBusy, match="circuit breaker open"):
            await venue.submit(_limit("t2"))
        await asyncio.sleep(0.15)
        fake.silent_on_add = False
        assert await venue.submit(_limit("t2")) == "O-2"  # half-open trial succeeds
        assert venue.breaker.current_state == "closed"
        assert venue.stats["errors"] == {"uncertain": 1, "breaker_open": 1}
    finally:
        await venue.stop()


async def test_rejections_do_not_open_the_breaker(fake: FakeKraken) -> None:
    venue, _, _ = await _venue(fake, breaker_fail_max=2)
    fake.add_error = "EOrder:Insufficient funds"
    try:
        for i in range(4):
            with pytest.raises(OrderRejected):
                await venue.submit(_limit(f"r{i}"))
        assert len(fake.sent("add_order")) == 4
        assert venue.breaker.current_state == "closed"
    finally:
        await venue.stop()


async def test_dead_mans_switch_is_rearmed_periodically(fake: FakeKraken) -> None:
    venue, _, _ = await _venue(fake, dms_timeout_s=60, dms_interval_s=0.05)
    try:
        await _until(lambda: len(fake.sent("cancel_all_orders_after")) >= 3)
        assert {m["params"]["timeout"] for m in fake.sent("cancel_all_orders_after")} == {60}
    finally:
        await venue.stop()
    count = len(fake.sent("cancel_all_orders_after"))
    await asyncio.sleep(0.15)
    assert len(fake.sent("cancel_all_orders_after")) == count  # stopped, left armed
    assert not any(m["params"]["timeout"] == 0 for m in fake.sent("cancel_all_orders_after"))


async def test_reconnect_new_token_resubscribes_and_recovers_missed_fill(fake: FakeKraken) -> None:
    venue, reports, _ = await _venue(fake)
    try:
        await venue.submit(_limit("f1", qty="10", price="0.5"))
        await _until(lambda: len(reports) == 2)
        # While disconnected the order fills; the new snapshot no longer lists it.
        fake.closed["O-1"] = {
            **fake.open.pop("O-1"),
            "status": "closed",
            "vol_exec": "10",
            "price": "0.5",
        }
        fake.trades["TX-1"] = {
            "ordertxid": "O-1",
            "pair": "XXRPZUSD",
            "type": "buy",
            "vol": "10",
            "price": "0.5",
            "fee": "0.013",
            "time": str(time.time()),
            "trade_id": 5,
        }
        await fake.drop()
        await _until(lambda: len(reports) >= 3)
        subs = [(conn, m["params"]) for conn, m in fake.ws_log if m["method"] == "subscribe"]
        assert [(c, p["channel"], p["token"]) for c, p in subs] == [
            (1, "executions", "tok-1"),
            (1, "balances", "tok-1"),
            (2, "executions", "tok-2"),
            (2, "balances", "tok-2"),
        ]
        fill = reports[2]
        assert fill.status is OrderStatus.FILLED and fill.last_fill_qty == D(10)
        assert fill.fee == D("0.013") and fill.client_order_id == "f1"
        await asyncio.sleep(0.05)
        assert len(reports) == 3  # the closed order's REST state adds nothing new
        fills = await venue.fills_since(0)
        assert [(f.trade_id, f.client_order_id, f.pair) for f in fills] == [
            ("TX-1", "f1", "XRP/USD")
        ]
    finally:
        await venue.stop()


async def test_dead_mans_switch_falls_back_to_rest(fake: FakeKraken) -> None:
    venue, _, _ = await _venue(fake, dms_timeout_s=60, dms_interval_s=1000)
    try:
        await _until(lambda: venue.dms_armed == 1)  # armed at start, over the WS
        venue.settings = venue.settings.model_copy(update={"reconnect_initial_s": 5.0})
        await fake.drop()
        await _until(lambda: not venue.connected)
        await venue.arm_dead_mans_switch()
        rest = [f for m, f in fake.rest_log if m == "CancelAllOrdersAfter"]
        assert [f["timeout"] for f in rest] == ["60"] and venue.dms_armed == 2
    finally:
        await venue.stop()


async def test_no_secret_or_token_in_logs(
    fake: FakeKraken, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    venue, _, _ = await _venue(fake)
    fake.add_error = "EAPI:Invalid signature"
    try:
        with pytest.raises(VenueAuthError) as info:
            await venue.submit(_limit("s1"))
        await fake.drop()
        await _until(lambda: venue.connected and fake.tokens == 2)
    finally:
        await venue.stop()
    text = caplog.text + str(info.value) + repr(venue) + repr(venue.rest)
    assert SECRET not in text and "tok-1" not in text and "tok-2" not in text


async def test_token_without_websocket_permission_fails_start(fake: FakeKraken) -> None:
    fake.token_error = "EGeneral:Permission denied"
    with pytest.raises(VenueAuthError, match='lacks the "WebSocket interface" permission'):
        await _venue(fake)


# --- private REST transport ------------------------------------------------------------------

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@contextlib.asynccontextmanager
async def _rest_server(handler: Handler) -> AsyncIterator[KrakenPrivateRest]:
    """A one-handler private REST server and a client for it."""
    app = web.Application()
    app.router.add_post("/0/private/{method}", handler)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    rest = KrakenPrivateRest(f"http://127.0.0.1:{port}", CREDS, NonceSource(), timeout_s=1.0)
    try:
        yield rest
    finally:
        await rest.close()
        await runner.cleanup()


async def test_rest_connect_failure_is_unavailable_not_uncertain() -> None:
    rest = KrakenPrivateRest("http://127.0.0.1:9", CREDS, NonceSource(), timeout_s=1.0)
    try:
        with pytest.raises(KrakenUnavailable):
            await rest.add_order("XRP/USD", "buy", "limit", D(1), D("0.5"), "x1")
    finally:
        await rest.close()


async def test_rest_add_order_lost_after_sending_is_uncertain() -> None:
    async def hang_up(request: web.Request) -> web.Response:
        await request.read()
        assert request.transport is not None
        request.transport.close()
        return web.Response()

    async with _rest_server(hang_up) as rest:
        with pytest.raises(KrakenUncertain):
            await rest.add_order("XRP/USD", "buy", "limit", D(1), D("0.5"), "x1")
        with pytest.raises(KrakenUnavailable):  # a read: safe to retry
            await rest.open_orders()


async def test_rest_gateway_error_on_add_order_is_uncertain() -> None:
    async def gateway_timeout(request: web.Request) -> web.Response:
        return web.Response(status=504, text="<html>gateway timeout</html>")

    async with _rest_server(gateway_timeout) as rest:
        with pytest.raises(KrakenUncertain) as info:
            await rest.add_order("XRP/USD", "buy", "limit", D(1), D("0.5"), "x1")
        assert isinstance(from_kraken_error(info.value), VenueUncertain)
        with pytest.raises(KrakenUnavailable):
            await rest.balance()


async def test_rest_read_retries_once_on_invalid_nonce() -> None:
    calls: list[str] = []
    forms: list[dict[str, str]] = []

    async def handler(request: web.Request) -> web.Response:
        calls.append(request.match_info["method"])
        forms.append({k: str(v) for k, v in (await request.post()).items()})
        if len(calls) == 1:
            return web.json_response({"error": ["EAPI:Invalid nonce"]})
        return _ok({"open": {}})

    async with _rest_server(handler) as rest:
        assert await rest.open_orders() == {}
        assert int(forms[1]["nonce"]) > int(forms[0]["nonce"])  # a fresh nonce
        calls.clear()
        with pytest.raises(KrakenUncertain):  # AddOrder: never retried
            await rest.add_order("XRP/USD", "buy", "limit", D("1.50"), D("0.5"), "x1")
        assert calls == ["AddOrder"]
        assert forms[-1]["volume"] == "1.50" and forms[-1]["pair"] == "XRPUSD"


# --- against the real simulator --------------------------------------------------------------


@pytest.fixture
async def sim() -> AsyncIterator[Any]:
    from gal_friday.sim.server import SimExchange

    exchange = SimExchange()
    await exchange.start()
    exchange.private.add_key("sim-key", SECRET)
    yield exchange
    await exchange.stop()


async def _sim_venue(sim: Any, **kw: Any) -> tuple[KrakenTradingVenue, Reports]:
    reports: Reports = []

    async def on_report(report: ExecutionReportEvent) -> None:
        reports.append(report)

    settings = KrakenSettings(
        ws_private_url=sim.ws_auth_url,
        rest_url=sim.rest_url,
        request_timeout_s=2.0,
        reconnect_initial_s=0.01,
        reconnect_max_s=0.05,
        reconnect_jitter=0.0,
    )
    creds = Credentials(api_key=SecretStr("sim-key"), api_secret=SecretStr(SECRET))
    venue = KrakenTradingVenue(settings, creds, pairs=PAIRS, nonce=NonceSource(), **kw)
    await venue.start(on_report)
    return venue, reports


async def test_sim_limit_order_then_cancel(sim: Any) -> None:
    venue, reports = await _sim_venue(sim, dms_interval_s=0.05)
    try:
        order = OrderRequest("sim1", "XRP/USD", Side.BUY, OrderType.LIMIT, D("20"), D("0.10000"))
        oid = await venue.submit(order)
        await _until(lambda: len(reports) >= 2)
        found = await venue.lookup("sim1")
        assert found is not None and found.exchange_order_id == oid and found.is_open
        assert [o.client_order_id for o in await venue.open_orders()] == ["sim1"]
        await venue.cancel("sim1")
        await _until(lambda: reports[-1].status is OrderStatus.CANCELLED)
        assert [r.status for r in reports] == [
            OrderStatus.SUBMITTED,
            OrderStatus.ACKNOWLEDGED,
            OrderStatus.CANCELLED,
        ]
        assert all(r.exchange_order_id == oid and r.client_order_id == "sim1" for r in reports)
        await venue.cancel("sim1")  # finished: not an error
        await _until(lambda: venue.dms_armed >= 2)
        assert (await venue.balances())["USD"] > 0
    finally:
        await venue.stop()


async def test_sim_market_fill_reports_fee_and_fills_since(sim: Any) -> None:
    venue, reports = await _sim_venue(sim, dms_timeout_s=0)
    try:
        await venue.submit(OrderRequest("sim2", "XRP/USD", Side.BUY, OrderType.MARKET, D(20)))
        await _until(lambda: bool(reports) and reports[-1].status is OrderStatus.FILLED)
        fills = [r for r in reports if r.last_fill_qty is not None]
        assert sum((r.last_fill_qty or D(0)) for r in fills) == D(20)
        assert all(r.fee > 0 and r.fee_asset == "USD" for r in fills)
        rest_fills = await venue.fills_since(0)
        assert sum(f.qty for f in rest_fills) == D(20)
        assert {f.client_order_id for f in rest_fills} == {"sim2"}
    finally:
        await venue.stop()


async def test_sim_drop_after_accept_is_uncertain_and_never_duplicated(sim: Any) -> None:
    venue, _ = await _sim_venue(sim, dms_timeout_s=0)
    try:
        sim.drop_after_accept(1)
        order = OrderRequest("sim3", "XRP/USD", Side.BUY, OrderType.LIMIT, D(20), D("0.1"))
        with pytest.raises(VenueUncertain):
            await venue.submit(order)
        found = await venue.lookup("sim3")
        assert found is not None and found.is_open
        assert await venue.submit(order) == found.exchange_order_id
        await _until(lambda: venue.connected)
        assert [o.client_order_id for o in await venue.open_orders()] == ["sim3"]
        sim.reject_next_orders(1, "EOrder:Insufficient funds")
        with pytest.raises(OrderRejected, match="Insufficient funds"):
            await venue.submit(
                OrderRequest("sim4", "XRP/USD", Side.BUY, OrderType.LIMIT, D(20), D("0.1"))
            )
    finally:
        await venue.stop()


async def test_sim_key_without_websocket_permission(sim: Any) -> None:
    sim.private.add_key("sim-key", SECRET, websocket=False)
    with pytest.raises(VenueAuthError, match='"WebSocket interface"'):
        await _sim_venue(sim)


async def test_sim_order_filled_while_disconnected_is_reconciled(sim: Any) -> None:
    venue, reports = await _sim_venue(sim, dms_timeout_s=0)
    try:
        venue.settings = venue.settings.model_copy(update={"reconnect_initial_s": 0.5})
        sim.drop_connections()
        await _until(lambda: not venue.connected)
        # Over the REST fallback; it fills at once while the stream is away.
        oid = await venue.submit(
            OrderRequest("sim5", "XRP/USD", Side.BUY, OrderType.LIMIT, D(20), D("3.00000"))
        )
        assert reports == []
        await _until(lambda: bool(reports) and reports[-1].status is OrderStatus.FILLED)
        assert venue.stats["reconnects"] == 1
        fills = [r for r in reports if r.last_fill_qty is not None]
        assert sum((r.last_fill_qty or D(0)) for r in fills) == D(20)
        assert all(r.exchange_order_id == oid for r in reports)
        await asyncio.sleep(0.1)
        assert len([r for r in reports if r.status is OrderStatus.FILLED]) == 1
    finally:
        await venue.stop()


def test_tracker_forgets_old_finished_orders(monkeypatch: pytest.MonkeyPatch) -> None:
    import gal_friday.kraken.executions as executions

    monkeypatch.setattr(executions, "MAX_DONE", 4)
    tracker = ExecutionTracker(PAIRS)
    for i in range(6):
        tracker.feed(_decode(_pending_new(f"c{i}", f"O{i}")))
        tracker.feed(
            {
                "channel": "executions",
                "type": "update",
                "data": [
                    {"order_id": f"O{i}", "exec_type": "canceled", "order_status": "canceled"}
                ],
            }
        )
    tracker.feed(_decode(_pending_new("live", "OL")))
    assert "live" in tracker.orders and "c0" not in tracker.orders
    assert tracker.by_order_id("O0") is None and len(tracker.orders) <= 5


def test_satisfies_the_trading_venue_protocol_without_showing_secrets() -> None:
    kraken = KrakenTradingVenue(KrakenSettings(), CREDS)
    venue: TradingVenue = kraken  # the protocol check is mypy's
    assert venue.name == "kraken"
    assert SECRET not in repr(venue) and "test-key" not in repr(venue)
    assert SECRET not in repr(kraken.tracker) and "connected=False" in repr(venue)
