"""The simulator's private trading API over real sockets: signed REST and the token WebSocket.

The market here is driven by hand (``HandMarket``): the test sets the book and prints trades,
then tells the exchange, so every fill, fee and balance is known to the last unit.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import time
from collections.abc import AsyncIterator, Callable
from decimal import Decimal
from typing import Any
from urllib.parse import urlencode

import aiohttp
import msgspec
import pytest
from handmarket import HandMarket, move_book, print_trade
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

from gal_friday.kraken.auth import NonceSource, sign
from gal_friday.sim.account import SimAccount
from gal_friday.sim.server import SimExchange

KEY = "sim-test-key"
SECRET = base64.b64encode(bytes(range(64))).decode()
Msg = dict[str, Any]
D = Decimal
_encode = msgspec.json.Encoder(decimal_format="number").encode


@pytest.fixture
async def sim() -> AsyncIterator[SimExchange]:
    exchange = SimExchange(HandMarket(), seed=1)
    exchange.private.add_key(KEY, SECRET)
    async with exchange:
        yield exchange


# --- clients --------------------------------------------------------------------------------

_nonce = NonceSource()


async def rest(sim: SimExchange, method: str, **params: Any) -> Msg:
    """One signed private REST call; amounts decoded exactly."""
    path = f"/0/private/{method}"
    nonce = _nonce.next()
    body = urlencode({"nonce": nonce, **params}).encode()
    headers = {
        "API-Key": KEY,
        "API-Sign": sign(path, nonce, body, SECRET),
        "Content-Type": "application/x-www-form-urlencoded",
    }
    async with (
        aiohttp.ClientSession() as session,
        session.post(sim.rest_url + path, data=body, headers=headers) as resp,
    ):
        payload = json.loads(await resp.read(), parse_float=Decimal)
    assert isinstance(payload, dict)
    return payload


async def result(sim: SimExchange, method: str, **params: Any) -> Any:
    payload = await rest(sim, method, **params)
    assert payload["error"] == [], payload
    return payload["result"]


class WsClient:
    def __init__(self, ws: ClientConnection, token: str) -> None:
        self.ws = ws
        self.token = token
        self.req = 0
        self.backlog: list[Msg] = []

    async def request(self, method: str, token: str | None = None, **params: Any) -> int:
        self.req += 1
        body: Msg = {
            "method": method,
            "req_id": self.req,
            "params": {**params, "token": token or self.token},
        }
        await self.ws.send(_encode(body).decode())  # Decimals as JSON numbers, as Kraken's
        return self.req

    async def recv(self, within: float = 3.0) -> Msg:
        raw = await asyncio.wait_for(self.ws.recv(), within)
        msg = json.loads(raw, parse_float=Decimal)
        assert isinstance(msg, dict)
        return msg

    async def until(self, pred: Callable[[Msg], bool], within: float = 3.0) -> Msg:
        """The first message (skipped earlier, or new) that matches; others are kept for
        later waits, so the order of the waits need not be the order on the wire."""
        for i, msg in enumerate(self.backlog):
            if pred(msg):
                return self.backlog.pop(i)
        deadline = time.monotonic() + within
        while True:
            msg = await self.recv(max(0.01, deadline - time.monotonic()))
            if pred(msg):
                return msg
            self.backlog.append(msg)

    async def response(self, req: int) -> Msg:
        return await self.until(lambda m: m.get("req_id") == req)

    async def call(self, method: str, **params: Any) -> Msg:
        return await self.response(await self.request(method, **params))

    async def execution(self, exec_type: str, within: float = 3.0) -> Msg:
        msg = await self.until(
            lambda m: (
                m.get("channel") == "executions" and m["data"][0].get("exec_type") == exec_type
            ),
            within,
        )
        item = msg["data"][0]
        assert isinstance(item, dict)
        return item

    async def ledger(self, asset: str) -> Msg:
        msg = await self.until(
            lambda m: (
                m.get("channel") == "balances"
                and m["type"] == "update"
                and m["data"][0]["asset"] == asset
            )
        )
        item = msg["data"][0]
        assert isinstance(item, dict)
        return item


@contextlib.asynccontextmanager
async def ws_client(sim: SimExchange, *, subscribe: bool = True) -> AsyncIterator[WsClient]:
    token = (await result(sim, "GetWebSocketsToken"))["token"]
    async with connect(sim.ws_auth_url, compression=None, ping_interval=None) as ws:
        c = WsClient(ws, token)
        assert (await c.recv())["channel"] == "status"
        if subscribe:
            assert (await c.call("subscribe", channel="executions"))["success"] is True
            await c.until(lambda m: m.get("type") == "snapshot")
            assert (await c.call("subscribe", channel="balances"))["success"] is True
            await c.until(lambda m: m.get("type") == "snapshot")
        yield c


def limit_buy(qty: str = "100", price: str = "2.19000", **extra: Any) -> Msg:
    return {
        "order_type": "limit",
        "side": "buy",
        "order_qty": D(qty),
        "limit_price": D(price),
        "symbol": "XRP/USD",
        **extra,
    }


# --- subscriptions ------------------------------------------------------------------------


async def test_subscribe_acks_and_snapshots(sim: SimExchange) -> None:
    async with ws_client(sim, subscribe=False) as c:
        pong = await c.call("ping")
        assert pong["method"] == "pong"
        ack = await c.call("subscribe", channel="executions", snap_trades=True)
        assert ack["success"] is True and ack["method"] == "subscribe"
        assert ack["result"] == {
            "channel": "executions",
            "maxratecount": 125,
            "snap_orders": True,
            "snap_trades": True,
        }
        snap = await c.recv()
        assert (snap["channel"], snap["type"], snap["data"]) == ("executions", "snapshot", [])
        assert isinstance(snap["sequence"], int)
        again = await c.call("subscribe", channel="executions")
        assert again["success"] is False and again["error"] == "Already subscribed"
        await c.call("subscribe", channel="balances")
        snap = await c.until(lambda m: m.get("channel") == "balances")
        usd = next(a for a in snap["data"] if a["asset"] == "USD")
        assert usd["balance"] == D("10000") and usd["wallets"][0]["type"] == "spot"
        assert (await c.call("unsubscribe", channel="balances"))["success"] is True


async def test_bad_or_expired_token_refused(sim: SimExchange) -> None:
    async with ws_client(sim, subscribe=False) as c:
        for method, params in (
            ("subscribe", {"channel": "executions"}),
            ("add_order", limit_buy()),
            ("cancel_all", {}),
        ):
            err = await c.response(await c.request(method, token="nope", **params))
            assert err["success"] is False and err["error"] == "ESession:Invalid session"
            assert err["method"] == method and "time_in" in err and "time_out" in err
        await c.ws.send(json.dumps({"method": "cancel_all", "req_id": 99, "params": {}}))
        assert (await c.response(99))["error"] == "EGeneral:Invalid arguments:token"
        sim.private.tokens[c.token] = 0  # expired before it was used
        err = await c.call("subscribe", channel="executions")
        assert err["error"] == "ESession:Invalid session"
    assert sim.trading.orders == {}


# --- the order life cycle ------------------------------------------------------------------


async def test_limit_buy_rests_then_fills_with_exact_balances(sim: SimExchange) -> None:
    async with ws_client(sim) as c:
        resp = await c.call("add_order", **limit_buy(cl_ord_id="buy-1"))
        assert resp["success"] is True and resp["result"]["cl_ord_id"] == "buy-1"
        order_id = resp["result"]["order_id"]
        pending = await c.execution("pending_new")
        assert pending["order_id"] == order_id and pending["order_status"] == "pending_new"
        assert (pending["symbol"], pending["side"], pending["order_type"]) == (
            "XRP/USD",
            "buy",
            "limit",
        )
        assert pending["order_qty"] == D("100") and pending["limit_price"] == D("2.19000")
        new = await c.execution("new")
        assert new["order_id"] == order_id and new["order_status"] == "new"
        hold = D("100") * D("2.19") * (1 + D("0.40") / 100)
        assert sim.trading.account.available("USD") == D(10000) - hold
        move_book(sim, "XRP/USD", [("2.18000", "1000")], [("2.18500", "1000")])
        trade = await c.execution("trade")
        fee = D("219") * D("0.25") / 100
        assert trade["last_qty"] == D("100") and trade["last_price"] == D("2.19000")
        assert trade["liquidity_ind"] == "m" and trade["order_status"] == "filled"
        assert trade["cum_qty"] == D("100") and trade["avg_price"] == D("2.19")
        assert trade["fees"] == [{"asset": "USD", "qty": fee}]
        assert trade["fee_usd_equiv"] == fee and trade["cl_ord_id"] == "buy-1"
        filled = await c.execution("filled")
        assert filled["order_id"] == order_id and filled["order_status"] == "filled"
        usd = await c.ledger("USD")
        assert usd["amount"] == D("-219") and usd["fee"] == fee
        assert usd["balance"] == D(10000) - D(219) - fee
    assert sim.trading.account.holds == {}
    balance = await result(sim, "Balance")
    assert balance["ZUSD"] == "9780.4525" and balance["XXRP"] == "100.00000000"


async def test_market_sell_takes_the_bid(sim: SimExchange) -> None:
    sim.set_balance("XRP", D(100))
    async with ws_client(sim) as c:
        resp = await c.call(
            "add_order",
            order_type="market",
            side="sell",
            order_qty=50,
            symbol="XRP/USD",
            order_userref=7,
        )
        assert resp["result"]["order_userref"] == 7
        trade = await c.execution("trade")
        assert trade["liquidity_ind"] == "t" and trade["last_price"] == D("2.19000")
        assert trade["order_userref"] == 7
        await c.execution("filled")
    fee = D("109.5") * D("0.40") / 100
    assert sim.trading.account.balance("USD") == D(10000) + D("109.5") - fee
    assert sim.trading.account.balance("XRP") == D(50)


async def test_order_validation_errors(sim: SimExchange) -> None:
    async with ws_client(sim) as c:
        await c.call("add_order", **limit_buy("20", "2.10000", cl_ord_id="dup"))
        cases = [
            ({**limit_buy(), "symbol": "BTC/USD"}, "EQuery:Unknown asset pair"),
            (limit_buy("5"), "EOrder:Order minimum not met"),
            (limit_buy("100", "2.190001"), "EOrder:Tick size check failed"),
            (limit_buy("10000"), "EOrder:Insufficient funds"),
            ({**limit_buy(), "side": "hold"}, "EGeneral:Invalid arguments"),
            (limit_buy(cl_ord_id="x" * 19), "EGeneral:Invalid arguments:cl_ord_id"),
            (limit_buy(cl_ord_id="dup"), "EGeneral:Invalid arguments:cl_ord_id"),
        ]
        for params, error in cases:
            resp = await c.call("add_order", **params)
            assert (resp["success"], resp["error"]) == (False, error), params
        uuid = await c.call(
            "add_order",
            **limit_buy("20", "2.10000", cl_ord_id="2c6be801-1f53-4f79-a0bb-4ea1c95dfae9"),
        )
        assert uuid["success"] is True
        valid = await c.call("add_order", **limit_buy(validate=True))
        assert valid["success"] is True and valid["result"]["order_id"] == ""
    assert len(sim.trading.open_orders()) == 2
    body = await rest(
        sim, "AddOrder", pair="XRPUSD", type="buy", ordertype="limit", volume="5", price="2.1"
    )
    assert body == {"error": ["EOrder:Order minimum not met"]}


async def test_cancel_order_by_cl_ord_id_and_unknown(sim: SimExchange) -> None:
    async with ws_client(sim) as c:
        await c.call("add_order", **limit_buy("20", "2.10000", cl_ord_id="keep"))
        await c.call("add_order", **limit_buy("20", "2.11000", cl_ord_id="drop-me"))
        req = await c.request("cancel_order", cl_ord_id=["drop-me"], order_id=["OXXXXX-NOPE"])
        replies = [await c.response(req), await c.response(req)]
        assert sorted(r["success"] for r in replies) == [False, True]
        bad = next(r for r in replies if not r["success"])
        assert bad["error"] == "EOrder:Unknown order" and bad["method"] == "cancel_order"
        cancelled = await c.execution("canceled")
        assert cancelled["cl_ord_id"] == "drop-me" and cancelled["reason"] == "User requested"
        again = await c.call("cancel_order", cl_ord_id=["drop-me"])
        assert again["error"] == "EOrder:Unknown order"
        # the cl_ord_id is free again once its order is closed
        assert (await c.call("add_order", **limit_buy("20", "2.1", cl_ord_id="drop-me")))[
            "success"
        ] is True
        count = await c.call("cancel_all")
        assert count["result"] == {"count": 2}
    assert sim.trading.open_orders() == [] and sim.trading.account.holds == {}


async def test_dead_mans_switch(sim: SimExchange) -> None:
    async with ws_client(sim) as c:
        await c.call("add_order", **limit_buy("20", "2.10000"))
        armed = await c.call("cancel_all_orders_after", timeout=60)
        assert armed["result"]["triggerTime"] != "0"
        off = await c.call("cancel_all_orders_after", timeout=0)
        assert off["result"]["triggerTime"] == "0" and sim.trading.deadman_trigger_ns is None
        armed = await c.call("cancel_all_orders_after", timeout=1)
        assert set(armed["result"]) == {"currentTime", "triggerTime"}
        assert sim.trading.open_orders()  # nothing happens before the timeout
        cancelled = await c.execution("canceled", within=3)
        assert cancelled["reason"] == "Cancel all orders after timeout"
    assert sim.trading.open_orders() == [] and sim.trading.deadman_trigger_ns is None


# --- REST ---------------------------------------------------------------------------------


async def test_rest_order_visible_on_ws_and_in_queries(sim: SimExchange) -> None:
    async with ws_client(sim) as c:
        added = await result(
            sim,
            "AddOrder",
            pair="XRPUSD",
            type="buy",
            ordertype="limit",
            volume="20",
            price="2.10000",
            cl_ord_id="rest-1",
        )
        assert added["descr"] == {"order": "buy 20.00000000 XRPUSD @ limit 2.10000"}
        txid = added["txid"][0]
        assert (await c.execution("pending_new"))["order_id"] == txid
        opened = (await result(sim, "OpenOrders", cl_ord_id="rest-1"))["open"]
        order = opened[txid]
        assert order["status"] == "open" and order["vol"] == "20.00000000"
        assert order["vol_exec"] == "0.00000000" and order["cl_ord_id"] == "rest-1"
        assert order["descr"]["pair"] == "XRPUSD" and order["descr"]["price"] == "2.10000"
        assert isinstance(order["opentm"], Decimal)
        assert (await result(sim, "OpenOrders", cl_ord_id="other"))["open"] == {}
        assert set(await result(sim, "QueryOrders", txid=txid)) == {txid}
        assert await result(sim, "CancelOrder", cl_ord_id="rest-1") == {
            "count": 1,
            "pending": False,
        }
        assert (await c.execution("canceled"))["order_id"] == txid
    closed = await result(sim, "ClosedOrders", cl_ord_id="rest-1")
    assert closed["count"] == 1 and closed["closed"][txid]["status"] == "canceled"
    assert closed["closed"][txid]["reason"] == "User requested"
    assert "closetm" in closed["closed"][txid]
    assert (await rest(sim, "CancelOrder", txid=txid))["error"] == ["EOrder:Unknown order"]
    after = await result(sim, "CancelAllOrdersAfter", timeout="30")
    assert after["triggerTime"].endswith("Z")
    assert (await result(sim, "CancelAllOrdersAfter", timeout="0"))["triggerTime"] == "0"


async def test_rest_fill_in_trades_history(sim: SimExchange) -> None:
    added = await result(
        sim, "AddOrder", pair="XRP/USD", type="buy", ordertype="market", volume="100"
    )
    txid = added["txid"][0]
    assert added["descr"]["order"] == "buy 100.00000000 XRPUSD @ market"
    history = await result(sim, "TradesHistory")
    assert history["count"] == 1
    (trade,) = history["trades"].values()
    assert trade["ordertxid"] == txid and trade["pair"] == "XXRPZUSD"
    assert (trade["price"], trade["vol"], trade["cost"], trade["fee"]) == (
        "2.20000",
        "100.00000000",
        "220.00000",
        "0.88000",
    )
    assert trade["type"] == "buy" and trade["maker"] is False
    assert (await result(sim, "TradesHistory", ofs="1"))["trades"] == {}
    assert (await result(sim, "TradesHistory", start=str(time.time() + 60)))["count"] == 0
    closed = (await result(sim, "ClosedOrders"))["closed"][txid]
    assert closed["status"] == "closed" and closed["vol_exec"] == "100.00000000"
    assert closed["price"] == "2.20000" and closed["cost"] == "220.00000"
    assert (await result(sim, "Balance"))["ZUSD"] == "9779.1200"
    async with ws_client(sim, subscribe=False) as c:
        await c.call("subscribe", channel="executions", snap_orders=False, snap_trades=True)
        snap = await c.until(lambda m: m.get("type") == "snapshot")
        assert [i["exec_type"] for i in snap["data"]] == ["trade"]


# --- faults -------------------------------------------------------------------------------


async def test_reject_next_orders(sim: SimExchange) -> None:
    sim.reject_next_orders(1, "EOrder:Rate limit exceeded")
    async with (
        aiohttp.ClientSession() as session,
        session.post(
            f"{sim.rest_url}/sim/fault/reject_next_orders",
            params={"n": "1", "error": "EService:Unavailable"},
        ) as resp,
    ):
        assert (await resp.json())["ok"] is True
    async with ws_client(sim) as c:
        first = await c.call("add_order", **limit_buy("20", "2.1"))
        assert first["error"] == "EOrder:Rate limit exceeded"
        body = await rest(
            sim, "AddOrder", pair="XRPUSD", type="buy", ordertype="limit", volume="20", price="2.1"
        )
        assert body == {"error": ["EService:Unavailable"]}
        assert sim.trading.orders == {}
        ok = await c.call("add_order", **limit_buy("20", "2.1"))
        assert ok["success"] is True


async def test_drop_after_accept_ws_then_lookup(sim: SimExchange) -> None:
    sim.drop_after_accept(1)
    async with ws_client(sim) as c:
        await c.request("add_order", **limit_buy("20", "2.1", cl_ord_id="lost-1"))
        with pytest.raises(ConnectionClosed):
            while True:
                msg = await c.recv()
                assert msg.get("method") != "add_order"  # no answer ever arrives
    opened = (await result(sim, "OpenOrders", cl_ord_id="lost-1"))["open"]
    assert len(opened) == 1
    async with ws_client(sim, subscribe=False) as c:
        await c.call("subscribe", channel="executions")
        snap = await c.until(lambda m: m.get("type") == "snapshot")
        assert [i["cl_ord_id"] for i in snap["data"]] == ["lost-1"]


async def test_drop_after_accept_rest(sim: SimExchange) -> None:
    async with (
        aiohttp.ClientSession() as session,
        session.post(f"{sim.rest_url}/sim/fault/drop_after_accept", params={"n": "1"}) as resp,
    ):
        assert (await resp.json())["ok"] is True
    with pytest.raises(aiohttp.ClientError):
        await rest(
            sim,
            "AddOrder",
            pair="XRPUSD",
            type="buy",
            ordertype="limit",
            volume="20",
            price="2.1",
            cl_ord_id="lost-2",
        )
    assert len((await result(sim, "OpenOrders", cl_ord_id="lost-2"))["open"]) == 1


async def test_set_balance_fault_updates_balances_channel(sim: SimExchange) -> None:
    async with ws_client(sim) as c:
        async with (
            aiohttp.ClientSession() as session,
            session.post(
                f"{sim.rest_url}/sim/fault/set_balance", params={"asset": "USD", "amount": "50"}
            ) as resp,
        ):
            assert (await resp.json())["ok"] is True
        entry = await c.ledger("USD")
        assert entry["amount"] == D(-9950) and entry["balance"] == D(50)
        refused = await c.call("add_order", **limit_buy("100", "2.1"))
        assert refused["error"] == "EOrder:Insufficient funds"


async def test_earn_balances_reported_under_dot_f() -> None:
    account = SimAccount({"USD": "500", "XRP": "100"}, earn={"XRP": "40"})
    exchange = SimExchange(HandMarket(), seed=2, account=account)
    exchange.private.add_key(KEY, SECRET)
    async with exchange:
        assert await result(exchange, "Balance") == {
            "ZUSD": "500.0000",
            "XXRP": "60.00000000",
            "XRP.F": "40.00000000",
            "XXDG": "0.00000000",
        }
        async with ws_client(exchange, subscribe=False) as c:
            await c.call("subscribe", channel="balances")
            snap = await c.until(lambda m: m.get("channel") == "balances")
            xrp = next(a for a in snap["data"] if a["asset"] == "XRP")
            assert xrp["balance"] == D(100)
            assert [(w["type"], w["balance"]) for w in xrp["wallets"]] == [
                ("spot", D(60)),
                ("earn", D(40)),
            ]


# --- triggered orders (need the engine's trigger support) ----------------------------------


async def test_triggered_sell_stop_loss_holds_nothing_then_fills_as_market(
    sim: SimExchange,
) -> None:
    sim.set_balance("XRP", D(100))
    async with ws_client(sim) as c:
        resp = await c.call(
            "add_order",
            order_type="stop-loss",
            side="sell",
            order_qty=50,
            symbol="XRP/USD",
            triggers={"price": D("2.15000")},
        )
        assert resp["success"] is True
        await c.execution("new")
        assert sim.trading.account.available("XRP") == D(100)
        move_book(sim, "XRP/USD", [("2.16000", "1000")], [("2.17000", "1000")])
        assert sim.trading.open_orders()  # not yet: the bid is above the trigger
        move_book(sim, "XRP/USD", [("2.14000", "1000")], [("2.14500", "1000")])
        trade = await c.execution("trade")
        assert trade["last_price"] == D("2.14000") and trade["liquidity_ind"] == "t"
        await c.execution("filled")
    assert sim.trading.account.balance("XRP") == D(50)


async def test_triggered_sell_take_profit_on_trade_print(sim: SimExchange) -> None:
    sim.set_balance("XRP", D(100))
    async with ws_client(sim) as c:
        await c.call(
            "add_order",
            order_type="take-profit",
            side="sell",
            order_qty=50,
            symbol="XRP/USD",
            triggers={"price": D("2.25000")},
        )
        move_book(sim, "XRP/USD", [("2.24000", "1000")], [("2.26000", "1000")])
        print_trade(sim, "XRP/USD", "2.25000", "10", "buy")
        trade = await c.execution("trade")
        assert trade["last_price"] == D("2.24000")
    assert sim.trading.account.balance("XRP") == D(50)


async def test_triggered_order_short_of_funds_is_cancelled(sim: SimExchange) -> None:
    sim.set_balance("XRP", D(100))
    async with ws_client(sim) as c:
        await c.call(
            "add_order",
            order_type="stop-loss",
            side="sell",
            order_qty=50,
            symbol="XRP/USD",
            triggers={"price": D("2.15000")},
        )
        sim.set_balance("XRP", D(10))
        move_book(sim, "XRP/USD", [("2.14000", "1000")], [("2.14500", "1000")])
        cancelled = await c.execution("canceled")
        assert cancelled["reason"] == "Insufficient funds"
    assert sim.trading.account.balance("XRP") == D(10)
