"""The simulated exchange over real sockets: WebSocket v2, REST, faults, replay, entry points."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import aiohttp
import msgspec
import pytest
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosedError

from gal_friday.config import SimSettings
from gal_friday.kraken.book import OrderBook
from gal_friday.kraken.recorder import Recorder
from gal_friday.sim.instruments import INSTRUMENTS
from gal_friday.sim.market import SyntheticMarket
from gal_friday.sim.replay import ReplayMarket
from gal_friday.sim.server import SimExchange, open_sim_exchange, run_sim_exchange

_decode = msgspec.json.Decoder(float_hook=str).decode
Msg = dict[str, Any]
TS_RE = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z$")


class Client:
    """A bare WebSocket client that keeps the raw text of every frame."""

    def __init__(self, ws: ClientConnection) -> None:
        self.ws = ws
        self.req = 0
        self.raw: list[str] = []

    async def request(self, method: str, **params: Any) -> int:
        self.req += 1
        msg: Msg = {"method": method, "req_id": self.req}
        if params:
            msg["params"] = params
        await self.ws.send(msgspec.json.encode(msg).decode())
        return self.req

    async def recv(self, within: float = 3.0) -> Msg:
        raw = await asyncio.wait_for(self.ws.recv(), within)
        assert isinstance(raw, str)
        self.raw.append(raw)
        msg = _decode(raw)
        assert isinstance(msg, dict)
        return msg

    async def until(self, pred: Callable[[Msg], bool], within: float = 3.0) -> Msg:
        deadline = time.monotonic() + within
        while True:
            msg = await self.recv(max(0.01, deadline - time.monotonic()))
            if pred(msg):
                return msg

    async def collect(self, seconds: float) -> list[Msg]:
        """Every frame received within ``seconds`` (one deadline, no nested timeouts: on
        Python 3.11 an outer timeout can be lost when the inner receive just completed)."""
        out: list[Msg] = []
        deadline = time.monotonic() + seconds
        while (left := deadline - time.monotonic()) > 0:
            try:
                out.append(await self.recv(left))
            except TimeoutError:
                break
        return out


@contextlib.asynccontextmanager
async def client(sim: SimExchange) -> AsyncIterator[Client]:
    async with connect(sim.ws_url, compression=None, ping_interval=None, max_queue=None) as ws:
        c = Client(ws)
        status = await c.recv()
        assert status["channel"] == "status"
        yield c


def is_book(symbol: str, kind: str | None = None) -> Callable[[Msg], bool]:
    return lambda m: (
        m.get("channel") == "book"
        and m["data"][0]["symbol"] == symbol
        and (kind is None or m["type"] == kind)
    )


@pytest.fixture
async def sim() -> AsyncIterator[SimExchange]:
    async with SimExchange(SyntheticMarket(13, rate=100, history_hours=1)) as s:
        yield s


# --- WebSocket basics ---------------------------------------------------------------------


async def test_status_on_connect_and_ping(sim: SimExchange) -> None:
    async with connect(sim.ws_url) as ws:
        status = _decode(await ws.recv())
        assert status["channel"] == "status" and status["type"] == "update"
        data = status["data"][0]
        assert data["api_version"] == "v2" and data["system"] == "online"
        assert data["version"] == "2.0.0" and 2**63 <= data["connection_id"] < 2**64
        c = Client(ws)
        req = await c.request("ping")
        pong = await c.recv()
        assert pong["method"] == "pong" and pong["req_id"] == req
        assert TS_RE.match(pong["time_in"]) and TS_RE.match(pong["time_out"])
    assert sim.stats.connections_accepted == 1


@pytest.mark.parametrize("depth", [10, 25])
async def test_book_acks_snapshot_and_updates_verify(sim: SimExchange, depth: int) -> None:
    async with client(sim) as c:
        req = await c.request(
            "subscribe", channel="book", symbol=["XRP/USD", "DOGE/USD"], depth=depth
        )
        books: dict[str, OrderBook] = {}
        acks, updates = [], 0
        while updates < 150:
            msg = await c.recv()
            if msg.get("method") == "subscribe":
                acks.append(msg)
                continue
            if msg.get("channel") != "book":
                continue
            item = msg["data"][0]
            symbol = item["symbol"]
            assert TS_RE.match(item["timestamp"])
            if msg["type"] == "snapshot":
                inst = INSTRUMENTS[symbol]
                books[symbol] = OrderBook(symbol, depth, inst.price_precision, inst.qty_precision)
                books[symbol].apply_snapshot(item["bids"], item["asks"])
                assert len(item["bids"]) == depth == len(item["asks"])
            else:
                assert item["bids"] or item["asks"]
                books[symbol].apply_update(item["bids"], item["asks"])
                updates += 1
            assert books[symbol].checksum() == item["checksum"]
            assert not books[symbol].is_crossed()
    assert [a["result"] for a in acks] == [
        {"channel": "book", "depth": depth, "snapshot": True, "symbol": s}
        for s in ("XRP/USD", "DOGE/USD")
    ]
    assert all(a["success"] is True and a["req_id"] == req for a in acks)
    assert sim.stats.subscriptions == 2


async def test_book_numbers_keep_full_precision(sim: SimExchange) -> None:
    async with client(sim) as c:
        await c.request("subscribe", channel="book", symbol=["DOGE/USD"])
        await c.until(is_book("DOGE/USD", "snapshot"))
        raw = c.raw[-1]
    prices = re.findall(r'"price":([0-9.]+)', raw)
    qtys = re.findall(r'"qty":([0-9.]+)', raw)
    assert len(prices) == 20 and all(len(p.split(".")[1]) == 7 for p in prices)
    assert all(len(q.split(".")[1]) == 8 for q in qtys)


async def test_subscribe_errors(sim: SimExchange) -> None:
    async with client(sim) as c:
        req = await c.request("subscribe", channel="book", symbol=["XYZ/USD", "XRP/USD"])
        err = await c.until(lambda m: m.get("success") is False)
        assert err == {
            "error": "Currency pair not supported XYZ/USD",
            "method": "subscribe",
            "req_id": req,
            "success": False,
            "symbol": "XYZ/USD",
            "time_in": err["time_in"],
            "time_out": err["time_out"],
        }
        ok = await c.until(lambda m: m.get("method") == "subscribe")
        assert ok["success"] is True and ok["result"]["symbol"] == "XRP/USD"
        for params, text in (
            ({"channel": "book", "symbol": ["XRP/USD"], "depth": 11}, "depth"),
            ({"channel": "ohlc", "symbol": ["XRP/USD"], "interval": 2}, "interval"),
            ({"channel": "nonsense", "symbol": ["XRP/USD"]}, "not supported"),
            ({"channel": "trade", "symbol": "XRP/USD"}, "symbol"),
            ({"channel": "book", "symbol": ["XRP/USD"]}, "Already subscribed"),
        ):
            req = await c.request("subscribe", **params)
            err = await c.until(lambda m: m.get("success") is False)
            assert text in err["error"] and err["req_id"] == req
        req = await c.request("unsubscribe", channel="trade", symbol=["XRP/USD"])
        err = await c.until(lambda m: m.get("success") is False)
        assert err["error"] == "Subscription Not Found" and err["symbol"] == "XRP/USD"
        # junk from the client gets an error and the connection stays usable
        await c.ws.send("{not json")
        err = await c.until(lambda m: m.get("success") is False)
        assert err["error"] == "Malformed request"
        await c.ws.send(b"\x01\x02")
        await c.until(lambda m: m.get("success") is False)
        await c.request("launch_rockets")
        err = await c.until(lambda m: m.get("success") is False)
        assert err["method"] == "launch_rockets"
        req = await c.request("ping")
        assert (await c.until(lambda m: m.get("method") == "pong"))["req_id"] == req


async def test_unsubscribe_acks_and_stops_updates(sim: SimExchange) -> None:
    async with client(sim) as c:
        await c.request("subscribe", channel="book", symbol=["XRP/USD"], depth=25)
        await c.until(is_book("XRP/USD", "update"))
        req = await c.request("unsubscribe", channel="book", symbol=["XRP/USD"], depth=25)
        ack = await c.until(lambda m: m.get("method") == "unsubscribe")
        assert ack["success"] is True and ack["req_id"] == req
        assert ack["result"] == {
            "channel": "book",
            "depth": 25,
            "snapshot": True,
            "symbol": "XRP/USD",
        }
        later = await c.collect(0.3)
        assert not [m for m in later if m.get("channel") == "book"]
    assert sim.stats.unsubscriptions == 1 and sim.stats.active_subscriptions == 0


async def test_trade_snapshot_and_updates(sim: SimExchange) -> None:
    async with client(sim) as c:
        await c.request("subscribe", channel="trade", symbol=["XRP/USD"], snapshot=True)
        ack = await c.until(lambda m: m.get("method") == "subscribe")
        assert ack["result"] == {"channel": "trade", "snapshot": True, "symbol": "XRP/USD"}
        snap = await c.until(lambda m: m.get("channel") == "trade")
        assert snap["type"] == "snapshot" and len(snap["data"]) == 50
        update = await c.until(lambda m: m.get("channel") == "trade", within=5)
        assert update["type"] == "update"
        trade = update["data"][0]
        assert set(trade) == {"symbol", "side", "price", "qty", "ord_type", "trade_id", "timestamp"}
        assert trade["side"] in ("buy", "sell") and trade["ord_type"] in ("market", "limit")
        assert trade["trade_id"] > snap["data"][-1]["trade_id"]
        assert TS_RE.match(trade["timestamp"])
        ids = [t["trade_id"] for t in snap["data"]]
        assert ids == sorted(ids) and len(set(ids)) == 50


async def test_trade_snapshot_defaults_off(sim: SimExchange) -> None:
    async with client(sim) as c:
        await c.request("subscribe", channel="trade", symbol=["DOGE/USD"])
        ack = await c.until(lambda m: m.get("method") == "subscribe")
        assert ack["result"]["snapshot"] is False
        first = await c.until(lambda m: m.get("channel") == "trade", within=5)
        assert first["type"] == "update"


async def test_ohlc_snapshot_and_updates(sim: SimExchange) -> None:
    async with client(sim) as c:
        await c.request("subscribe", channel="ohlc", symbol=["XRP/USD"], interval=1)
        ack = await c.until(lambda m: m.get("method") == "subscribe")
        assert ack["result"] == {
            "channel": "ohlc",
            "interval": 1,
            "snapshot": True,
            "symbol": "XRP/USD",
            "warnings": ["timestamp is deprecated, use interval_begin"],
        }
        snap = await c.until(lambda m: m.get("channel") == "ohlc")
        assert snap["type"] == "snapshot" and len(snap["data"]) == 10
        update = await c.until(lambda m: m.get("channel") == "ohlc", within=5)
        candle = update["data"][0]
        assert update["type"] == "update"
        assert list(candle) == [
            "symbol",
            "open",
            "high",
            "low",
            "close",
            "trades",
            "volume",
            "vwap",
            "interval_begin",
            "interval",
            "timestamp",
        ]
        assert re.match(r"^\d{4}-.*T\d\d:\d\d:00\.000000000Z$", candle["interval_begin"])
        assert candle["interval_begin"] >= snap["data"][-1]["interval_begin"]
        assert candle["trades"] >= 1 and candle["interval"] == 1


async def test_instrument_snapshot(sim: SimExchange) -> None:
    async with client(sim) as c:
        req = await c.request("subscribe", channel="instrument")
        ack = await c.recv()
        assert ack["success"] is True and ack["req_id"] == req
        assert ack["result"]["channel"] == "instrument"
        snap = await c.recv()
        raw = c.raw[-1]
    assert snap["channel"] == "instrument" and snap["type"] == "snapshot"
    pairs = {p["symbol"]: p for p in snap["data"]["pairs"]}
    xrp, doge = pairs["XRP/USD"], pairs["DOGE/USD"]
    assert (xrp["price_precision"], xrp["qty_precision"]) == (5, 8)
    assert (doge["price_precision"], doge["qty_precision"]) == (7, 8)
    assert xrp["price_increment"] == "0.00001" and doge["qty_min"] == "50.0"
    assert xrp["status"] == "online" and xrp["marginable"] is False and xrp["has_index"]
    assert '"qty_increment":0.00000001' in raw and '"price_increment":0.0000001' in raw
    assert {a["id"] for a in snap["data"]["assets"]} == {"USD", "XRP", "DOGE"}


async def test_heartbeats_only_on_idle_subscribed_connections(sim: SimExchange) -> None:
    async with client(sim) as idle, client(sim) as quiet, client(sim) as busy:
        await quiet.request("subscribe", channel="instrument")
        await busy.request("subscribe", channel="book", symbol=["XRP/USD"])
        idle_msgs, quiet_msgs, busy_msgs = await asyncio.gather(
            idle.collect(1.6), quiet.collect(2.2), busy.collect(1.6)
        )
    assert idle_msgs == []
    beats = [m for m in quiet_msgs if m == {"channel": "heartbeat"}]
    assert 1 <= len(beats) <= 3
    assert not [m for m in busy_msgs if m.get("channel") == "heartbeat"]


# --- REST ------------------------------------------------------------------------------------


@pytest.fixture
async def rest_sim() -> AsyncIterator[SimExchange]:
    async with SimExchange(SyntheticMarket(5, rate=50, history_hours=13)) as s:
        yield s


async def rest(sim: SimExchange, method: str, **params: str) -> Msg:
    async with (
        aiohttp.ClientSession() as session,
        session.get(f"{sim.rest_url}/0/public/{method}", params=params) as resp,
    ):
        assert resp.status == 200
        body = _decode(await resp.read())
        assert isinstance(body, dict)
        return body


async def test_rest_time_and_asset_pairs(rest_sim: SimExchange) -> None:
    result = (await rest(rest_sim, "Time"))["result"]
    assert abs(result["unixtime"] - time.time()) < 5 and result["rfc1123"].endswith("+0000")
    for spelling in ("XRPUSD,XDGUSD", "XXRPZUSD,DOGE/USD", "XRP/USD,XDG/USD"):
        body = await rest(rest_sim, "AssetPairs", pair=spelling)
        assert body["error"] == [] and set(body["result"]) == {"XXRPZUSD", "XDGUSD"}
    pairs = (await rest(rest_sim, "AssetPairs"))["result"]
    xrp, doge = pairs["XXRPZUSD"], pairs["XDGUSD"]
    assert (xrp["altname"], xrp["wsname"], xrp["base"], xrp["quote"]) == (
        "XRPUSD",
        "XRP/USD",
        "XXRP",
        "ZUSD",
    )
    assert (doge["altname"], doge["wsname"], doge["base"]) == ("XDGUSD", "XDG/USD", "XXDG")
    assert (xrp["pair_decimals"], xrp["lot_decimals"], doge["pair_decimals"]) == (5, 8, 7)
    assert xrp["ordermin"] == "10" and doge["ordermin"] == "50" and xrp["costmin"] == "0.5"
    assert xrp["tick_size"] == "0.00001" and xrp["status"] == "online"
    assert xrp["fees"][0] == [0, "0.4"] and xrp["fees_maker"][0] == [0, "0.25"]
    assert xrp["fee_volume_currency"] == "ZUSD" and xrp["lot_multiplier"] == 1
    assert (await rest(rest_sim, "AssetPairs", pair="XYZUSD")) == {
        "error": ["EQuery:Unknown asset pair"]
    }


async def test_rest_ohlc(rest_sim: SimExchange) -> None:
    body = (await rest(rest_sim, "OHLC", pair="XRPUSD", interval="1"))["result"]
    rows = body["XXRPZUSD"]
    assert len(rows) == 720
    now_minute = int(time.time()) // 60 * 60
    assert rows[-1][0] in (now_minute, now_minute - 60)  # the candle in progress is last
    assert body["last"] == rows[-2][0]
    row = rows[100]
    assert isinstance(row[0], int) and isinstance(row[7], int)
    assert all(len(v.split(".")[1]) == 5 for v in row[1:6]) and len(row[6].split(".")[1]) == 8
    newer = (await rest(rest_sim, "OHLC", pair="XRPUSD", since=str(body["last"])))["result"]
    assert [r[0] for r in newer["XXRPZUSD"]] == [rows[-1][0]]
    five = (await rest(rest_sim, "OHLC", pair="XDGUSD", interval="5"))["result"]["XDGUSD"]
    assert 150 < len(five) <= 160 and five[1][0] - five[0][0] == 300
    bad = await rest(rest_sim, "OHLC", pair="XRPUSD", interval="7")
    assert bad["error"] == ["EGeneral:Invalid arguments:interval"]


async def test_rest_trades_paginate(rest_sim: SimExchange) -> None:
    first = (await rest(rest_sim, "Trades", pair="DOGE/USD", count="5"))["result"]
    assert len(first["XDGUSD"]) == 5  # no since: the most recent trades
    price, volume, when, side, kind, misc, trade_id = first["XDGUSD"][0]
    assert len(price.split(".")[1]) == 7 and len(volume.split(".")[1]) == 8
    assert side in ("b", "s") and kind in ("m", "l") and misc == ""
    assert isinstance(trade_id, int) and isinstance(first["last"], str)
    assert abs(float(when) - time.time()) < 120
    since, pages = str(time.time_ns() - 14 * 3600 * 10**9), 0
    ids: list[int] = []
    while True:
        page = (await rest(rest_sim, "Trades", pair="XDGUSD", since=since))["result"]
        rows = page["XDGUSD"]
        if not rows:
            break
        assert len(rows) <= 1000
        ids.extend(r[6] for r in rows)
        since, pages = page["last"], pages + 1
    assert pages > 5 and ids == list(range(ids[0], ids[0] + len(ids)))


async def test_rest_depth_post_and_unknown_method(rest_sim: SimExchange) -> None:
    async with aiohttp.ClientSession() as session:
        async with session.post(
            f"{rest_sim.rest_url}/0/public/Depth", data={"pair": "XRPUSD", "count": "7"}
        ) as resp:
            body = _decode(await resp.read())
        async with session.get(f"{rest_sim.rest_url}/0/public/Nope") as resp:
            assert resp.status == 404
            assert _decode(await resp.read()) == {"error": ["EGeneral:Unknown method"]}
    book = body["result"]["XXRPZUSD"]
    assert len(book["asks"]) == 7 == len(book["bids"])
    assert float(book["bids"][0][0]) < float(book["asks"][0][0])
    assert [float(a[0]) for a in book["asks"]] == sorted(float(a[0]) for a in book["asks"])
    assert isinstance(book["asks"][0][2], int) and len(book["asks"][0][1].split(".")[1]) == 8


async def test_rest_client_of_the_bot_works(rest_sim: SimExchange) -> None:
    from gal_friday.kraken.rest import KrakenPublicRest

    async with KrakenPublicRest(rest_sim.rest_url) as client_:
        specs = await client_.asset_pairs(("XRP/USD", "DOGE/USD"))
        assert specs["DOGE/USD"].price_precision == 7
        rows, last = await client_.ohlc("DOGE/USD")
        assert len(rows) == 720 and last == rows[-2][0]
        trades, cursor = await client_.trades("XRP/USD", since=0, count=1000)
        assert len(trades) == 1000 and cursor > 0


# --- faults ---------------------------------------------------------------------------------


async def test_drop_connections_cuts_without_close_frame(sim: SimExchange) -> None:
    async with client(sim) as c:
        await c.request("subscribe", channel="book", symbol=["XRP/USD"])
        await c.until(is_book("XRP/USD", "update"))
        assert sim.drop_connections() == 1
        with pytest.raises(ConnectionClosedError) as info:
            await c.collect(2.0)
        assert info.value.rcvd is None
    assert sim.stats.connections_open == 0 and sim.stats.faults["drop"] == 1
    async with client(sim):  # the server still accepts new connections
        assert sim.stats.connections_accepted == 2


async def test_corrupt_checksum_then_fresh_snapshot(sim: SimExchange) -> None:
    async with client(sim) as c:
        await c.request("subscribe", channel="book", symbol=["XRP/USD"])
        snap = (await c.until(is_book("XRP/USD", "snapshot")))["data"][0]
        book = OrderBook("XRP/USD", 10, 5, 8)
        book.apply_snapshot(snap["bids"], snap["asks"])
        sim.corrupt_next_checksum("XRP/USD")
        bad = (await c.until(is_book("XRP/USD", "update")))["data"][0]
        book.apply_update(bad["bids"], bad["asks"])
        assert book.checksum() != bad["checksum"]
        await c.request("unsubscribe", channel="book", symbol=["XRP/USD"])
        await c.request("subscribe", channel="book", symbol=["XRP/USD"])
        fresh = (await c.until(is_book("XRP/USD", "snapshot")))["data"][0]
        book.apply_snapshot(fresh["bids"], fresh["asks"])
        assert book.checksum() == fresh["checksum"]
        for _ in range(20):
            item = (await c.until(is_book("XRP/USD", "update")))["data"][0]
            book.apply_update(item["bids"], item["asks"])
            assert book.checksum() == item["checksum"]


@pytest.mark.parametrize(
    "kind", ["malformed", "wrong_types", "unknown_channel", "not_object", "binary"]
)
async def test_hostile_frames_arrive_and_connection_survives(sim: SimExchange, kind: str) -> None:
    async with client(sim) as c:
        assert sim.send_hostile(kind, "DOGE/USD") == 1
        frame = await asyncio.wait_for(c.ws.recv(), 2)
        if kind == "binary":
            assert isinstance(frame, bytes)
        elif kind == "malformed":
            with pytest.raises(msgspec.DecodeError):
                _decode(frame)
        elif kind == "wrong_types":
            assert _decode(frame)["data"][0]["bids"][0]["price"] == "abc"
        elif kind == "unknown_channel":
            assert _decode(frame)["channel"] == "nonsense"
        else:
            assert isinstance(_decode(frame), list)
        req = await c.request("ping")
        assert (await c.until(lambda m: m.get("method") == "pong"))["req_id"] == req


async def test_total_stall_silences_everything_then_releases(sim: SimExchange) -> None:
    async with client(sim) as c:
        await c.request("subscribe", channel="book", symbol=["XRP/USD"])
        await c.until(is_book("XRP/USD", "update"))
        await c.collect(0.05)
        sim.stall(1.0)
        await c.request("ping")
        t0 = time.monotonic()
        first = await c.recv(within=3)  # nothing (not even the pong) before the stall ends
        assert time.monotonic() - t0 >= 0.9
        book_msgs = [first, *await c.collect(0.5)]
        assert any(m.get("method") == "pong" for m in book_msgs)
        assert not [m for m in book_msgs if m.get("channel") == "heartbeat"]


async def test_channel_stall_stops_one_book_only(sim: SimExchange) -> None:
    async with client(sim) as c:
        await c.request("subscribe", channel="book", symbol=["XRP/USD", "DOGE/USD"])
        books: dict[str, OrderBook] = {}

        def track(msg: Msg) -> None:
            if msg.get("channel") != "book":
                return
            item = msg["data"][0]
            symbol = item["symbol"]
            if msg["type"] == "snapshot":
                inst = INSTRUMENTS[symbol]
                books[symbol] = OrderBook(symbol, 10, inst.price_precision, inst.qty_precision)
                books[symbol].apply_snapshot(item["bids"], item["asks"])
            else:
                books[symbol].apply_update(item["bids"], item["asks"])
            assert books[symbol].checksum() == item["checksum"]

        for msg in await c.collect(0.3):
            track(msg)
        assert sim.stall(1.0, channel="book", symbol="XRP/USD") == 1
        for msg in await c.collect(0.1):  # frames already in flight when it began
            track(msg)
        during = await c.collect(0.7)
        for msg in during:
            track(msg)
        symbols = {m["data"][0]["symbol"] for m in during if m.get("channel") == "book"}
        assert symbols == {"DOGE/USD"}
        after = await c.collect(0.6)  # held XRP updates arrive in order: checksums hold
        for msg in after:
            track(msg)
        assert {m["data"][0]["symbol"] for m in after if m.get("channel") == "book"} == {
            "XRP/USD",
            "DOGE/USD",
        }


async def test_http_fault_endpoints_and_stats(sim: SimExchange) -> None:
    async with client(sim) as c, aiohttp.ClientSession() as session:
        await c.request("subscribe", channel="book", symbol=["XRP/USD"])
        await c.until(is_book("XRP/USD", "update"))

        async def fault(name: str, **params: str) -> Msg:
            async with session.post(f"{sim.rest_url}/sim/fault/{name}", params=params) as r:
                body = _decode(await r.read())
                assert isinstance(body, dict)
                return body

        assert (await fault("hostile", kind="unknown_channel"))["connections"] == 1
        await c.until(lambda m: m.get("channel") == "nonsense")
        assert (await fault("malformed"))["ok"] is True
        assert (await fault("corrupt_checksum", symbol="XRP/USD"))["ok"] is True
        async with session.post(
            f"{sim.rest_url}/sim/fault/stall", json={"seconds": 5, "channel": "book"}
        ) as r:
            assert (await r.json())["connections"] == 1
        assert (await fault("clear"))["ok"] is True
        assert (await fault("nope"))["ok"] is False
        assert (await fault("hostile", kind="weird"))["ok"] is False
        assert (await fault("drop"))["connections"] == 1
        async with session.get(f"{sim.rest_url}/sim/stats") as r:
            stats = await r.json()
    assert stats["connections_accepted"] == 1 and stats["connections_open"] == 0
    assert stats["faults"]["drop"] == 1 and stats["faults"]["stall"] == 1
    assert stats["subscriptions"] == 1


async def test_bot_feed_recovers_from_faults(sim: SimExchange) -> None:
    """The bot's own WebSocket client resyncs after a bad checksum and reconnects after a
    drop, against the simulator."""
    from gal_friday.config import KrakenSettings
    from gal_friday.kraken.ws import KrakenPublicFeed

    async def sink(event: object) -> None:
        return None

    settings = KrakenSettings(reconnect_initial_s=0.05, reconnect_max_s=0.1)
    feed = KrakenPublicFeed(settings, ("XRP/USD", "DOGE/USD"), sink, url=sim.ws_url)
    task = asyncio.create_task(feed.run())
    try:
        await _wait_for(lambda: feed.decoder.book_ready())
        sim.corrupt_next_checksum("DOGE/USD")
        await _wait_for(lambda: feed.decoder.stats.checksum_failures == 1)
        await _wait_for(lambda: feed.decoder.is_valid("DOGE/USD"))
        sim.drop_connections()
        await _wait_for(lambda: feed.connections == 2 and feed.decoder.book_ready())
        assert feed.decoder.stats.malformed == 0
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


async def _wait_for(pred: Callable[[], bool], within: float = 5.0) -> None:
    deadline = time.monotonic() + within
    while not pred():
        assert time.monotonic() < deadline, "condition not reached in time"
        await asyncio.sleep(0.02)


# --- replay ---------------------------------------------------------------------------------


async def record_sim(sim: SimExchange, path: Path, seconds: float) -> dict[str, OrderBook]:
    """Record the simulator's own output like ``gal-friday record`` does; returns the books
    the recording client held at the end."""
    recorder = Recorder(path, source=sim.ws_url, pairs=("XRP/USD", "DOGE/USD"), depth=10)
    books: dict[str, OrderBook] = {}
    try:
        async with connect(sim.ws_url, compression=None) as ws:
            c = Client(ws)
            await c.request("subscribe", channel="instrument")
            await c.request("subscribe", channel="book", symbol=["XRP/USD", "DOGE/USD"])
            await c.request("subscribe", channel="trade", symbol=["XRP/USD", "DOGE/USD"])
            await c.request("subscribe", channel="ohlc", symbol=["XRP/USD"])
            deadline = time.monotonic() + seconds
            while time.monotonic() < deadline:
                raw = await asyncio.wait_for(ws.recv(), 2)
                assert isinstance(raw, str)
                recorder.write(time.time_ns(), raw)
                msg = _decode(raw)
                if msg.get("channel") == "book":
                    item = msg["data"][0]
                    inst = INSTRUMENTS[item["symbol"]]
                    book = books.setdefault(
                        item["symbol"],
                        OrderBook(item["symbol"], 10, inst.price_precision, inst.qty_precision),
                    )
                    if msg["type"] == "snapshot":
                        book.apply_snapshot(item["bids"], item["asks"])
                    else:
                        book.apply_update(item["bids"], item["asks"])
    finally:
        recorder.close()
    return books


async def test_replay_of_a_recording_serves_its_own_depths(
    sim: SimExchange, tmp_path: Path
) -> None:
    path = tmp_path / "rec.jsonl.gz"
    recorded = await record_sim(sim, path, 1.0)
    market = ReplayMarket(path, speed=0, history_hours=1)
    assert set(market.instruments) == {"XRP/USD", "DOGE/USD"}
    async with SimExchange(market) as replay:
        async with client(replay) as c10, client(replay) as c25:
            await c10.request("subscribe", channel="book", symbol=["XRP/USD", "DOGE/USD"])
            await c25.request("subscribe", channel="book", symbol=["XRP/USD"], depth=25)
            await c10.request("subscribe", channel="trade", symbol=["XRP/USD"])
            books10 = await _follow_books(c10, 10, lambda: market.finished)
            books25 = await _follow_books(c25, 25, lambda: market.finished)
        assert market.finished and market.checksum_mismatches == 0
        assert market.frames_replayed > 50
        for symbol in ("XRP/USD", "DOGE/USD"):
            assert books10[symbol].top(10) == recorded[symbol].top(10)
        assert books25["XRP/USD"].top(10) == recorded["XRP/USD"].top(10)
        body = await rest(replay, "OHLC", pair="XRPUSD")
        assert body["error"] == [] and len(body["result"]["XXRPZUSD"]) >= 60


async def _follow_books(c: Client, depth: int, done: Callable[[], bool]) -> dict[str, OrderBook]:
    """Apply book messages (checking every checksum) until the replay is over and quiet."""
    books: dict[str, OrderBook] = {}
    while True:
        try:
            msg = await c.recv(within=0.5)
        except TimeoutError:
            if done():
                return books
            continue
        if msg.get("channel") != "book":
            continue
        item = msg["data"][0]
        inst = INSTRUMENTS[item["symbol"]]
        book = books.setdefault(
            item["symbol"],
            OrderBook(item["symbol"], depth, inst.price_precision, inst.qty_precision),
        )
        if msg["type"] == "snapshot":
            book.apply_snapshot(item["bids"], item["asks"])
        else:
            book.apply_update(item["bids"], item["asks"])
        assert book.checksum() == item["checksum"]


async def test_replay_paces_and_loops(sim: SimExchange, tmp_path: Path) -> None:
    path = tmp_path / "rec.jsonl.gz"
    await record_sim(sim, path, 0.6)
    paced = ReplayMarket(path, speed=2.0, history_hours=0)
    async with SimExchange(paced):
        t0 = time.monotonic()
        await _wait_for(lambda: paced.finished, within=3)
        assert 0.15 < time.monotonic() - t0 < 1.5  # ~0.3 s of recording at double speed
    looping = ReplayMarket(path, speed=0, loop=True, history_hours=0)
    async with SimExchange(looping):
        # more frames than the file holds (the paced run replayed all of them): it looped
        await _wait_for(lambda: looping.frames_replayed > paced.frames_replayed, within=20)
    assert not looping.finished and paced.frames_replayed > 0
    with pytest.raises(Exception, match="not a gal-friday recording"):
        bad = tmp_path / "bad.gz"
        bad.write_bytes(b"junk")
        ReplayMarket(bad)


# --- entry points -----------------------------------------------------------------------------


@pytest.mark.parametrize("style", ["arguments", "settings"])
async def test_run_sim_exchange_logs_urls_and_serves(
    caplog: pytest.LogCaptureFixture, style: str
) -> None:
    caplog.set_level(logging.INFO, logger="gal_friday.sim")
    if style == "arguments":
        task = asyncio.create_task(run_sim_exchange("127.0.0.1", 0, seed=3, rate=10.0))
    else:
        settings = SimSettings(seed=3, messages_per_second=10.0)
        task = asyncio.create_task(run_sim_exchange(settings, ("XRP/USD",), loop=False))
    try:
        await _wait_for(lambda: any("ws://" in r.getMessage() for r in caplog.records))
        line = next(r.getMessage() for r in caplog.records if "ws://" in r.getMessage())
        rest_url = re.search(r"REST (http://\S+)", line)
        assert rest_url and re.search(r"WebSocket ws://127\.0\.0\.1:\d+/v2", line)
        async with (
            aiohttp.ClientSession() as session,
            session.get(f"{rest_url.group(1)}/0/public/AssetPairs") as resp,
        ):
            pairs = (await resp.json())["result"]
        assert set(pairs) == ({"XXRPZUSD", "XDGUSD"} if style == "arguments" else {"XXRPZUSD"})
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


async def test_open_sim_exchange_from_settings() -> None:
    async with open_sim_exchange(SimSettings(seed=4), ("DOGE/USD",)) as sim:
        assert sim.ws_url.startswith("ws://127.0.0.1:") and sim.ws_url.endswith("/v2")
        assert sim.rest_url == f"http://127.0.0.1:{sim.port}"
        async with client(sim) as c:
            await c.request("subscribe", channel="book", symbol=["DOGE/USD"])
            await c.until(is_book("DOGE/USD", "snapshot"))
    with pytest.raises(OSError):  # stopped: nothing listens any more
        async with connect(sim.ws_url, open_timeout=1):
            pass
