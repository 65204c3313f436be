"""The simulator's public WebSocket v2 protocol: one client's requests in, acks, errors and
snapshots out, by Kraken's rules.

``ping``; ``subscribe`` / ``unsubscribe`` for ``instrument``, ``book`` (depth 10/25/100/500/
1000), ``trade`` and ``ohlc``, one ack (or error, with the ``symbol`` it concerns) per
requested symbol. A request that is not a JSON object, names an unknown method or channel, or
carries parameters of the wrong type is refused as a whole. Subscriptions accepted here are
handed to the ``FanOut``, which sends their snapshots and, from then on, their updates.
"""

from __future__ import annotations

import json
import time
from typing import Any

from gal_friday.sim import wire
from gal_friday.sim.fanout import Conn, FanOut, Sub, sub_key
from gal_friday.sim.instruments import ASSETS
from gal_friday.sim.rest import OHLC_INTERVALS
from gal_friday.sim.source import MarketSource
from gal_friday.sim.stats import SimStats

BOOK_DEPTHS = (10, 25, 100, 500, 1000)
ERR_MALFORMED = "Malformed request"
ERR_ARGS = "EGeneral:Invalid arguments"
ERR_ALREADY = "Already subscribed"
ERR_NOT_FOUND = "Subscription Not Found"
_OHLC_WARNING = "timestamp is deprecated, use interval_begin"
_INSTRUMENT_WARNING = "tick_size is deprecated, use price_increment"


class RequestError(Exception):
    """A request the exchange refuses as a whole (no per-symbol ``symbol`` field)."""


class PublicProtocol:
    """Answers the requests of public WebSocket clients."""

    def __init__(self, market: MarketSource, fanout: FanOut, stats: SimStats) -> None:
        self.market = market
        self.fanout = fanout
        self.stats = stats

    def on_text(self, conn: Conn, text: str) -> None:
        """One text frame from a client."""
        t_in = time.time_ns()
        self.stats.requests += 1
        try:
            msg = json.loads(text)
        except ValueError:
            msg = None
        if not isinstance(msg, dict):
            self.reply_error(conn, None, ERR_MALFORMED, None, t_in)
            return
        method, req_id = msg.get("method"), msg.get("req_id")
        if req_id is not None and type(req_id) is not int:
            self.reply_error(conn, _text(method), f"{ERR_ARGS}:req_id", None, t_in)
            return
        try:
            self._dispatch(conn, method, msg.get("params"), req_id, t_in)
        except RequestError as exc:
            self.reply_error(conn, _text(method), str(exc), req_id, t_in)

    def on_binary(self, conn: Conn) -> None:
        """A binary frame: Kraken answers it as a malformed request."""
        self.reply_error(conn, None, ERR_MALFORMED, None, time.time_ns())

    def _dispatch(
        self, conn: Conn, method: Any, params: Any, req_id: int | None, t_in: int
    ) -> None:
        if method == "ping":
            conn.send(wire.pong(req_id, t_in, time.time_ns()))
            return
        if method not in ("subscribe", "unsubscribe"):
            raise RequestError(f"Method not found: {_text(method)}")
        if not isinstance(params, dict):
            raise RequestError(f"{ERR_ARGS}:params")
        channel = params.get("channel")
        if channel == "instrument":
            self._instrument(conn, method, params, req_id, t_in)
            return
        if channel not in ("book", "trade", "ohlc"):
            raise RequestError(f"Channel {_text(channel)} not supported")
        for sub in self._parse_subs(channel, params):
            if method == "subscribe":
                self._subscribe(conn, sub, req_id, t_in)
            else:
                self._unsubscribe(conn, sub, req_id, t_in)

    def _parse_subs(self, channel: str, params: dict[str, Any]) -> list[Sub]:
        """One subscription per requested symbol, after validating the parameters."""
        symbols = params.get("symbol")
        if (
            not isinstance(symbols, list)
            or not symbols
            or not all(isinstance(s, str) for s in symbols)
        ):
            raise RequestError(f"{ERR_ARGS}:symbol")
        snapshot = params.get("snapshot", channel != "trade")
        if type(snapshot) is not bool:
            raise RequestError(f"{ERR_ARGS}:snapshot")
        depth = interval = 0
        if channel == "book":
            depth = params.get("depth", 10)
            if type(depth) is not int or depth not in BOOK_DEPTHS:
                raise RequestError(f"{ERR_ARGS}:depth")
        elif channel == "ohlc":
            interval = params.get("interval", 1)
            if type(interval) is not int or interval not in OHLC_INTERVALS:
                raise RequestError(f"{ERR_ARGS}:interval")
        return [Sub(channel, s, snapshot, depth, interval) for s in dict.fromkeys(symbols)]

    def _subscribe(self, conn: Conn, sub: Sub, req_id: int | None, t_in: int) -> None:
        symbol = sub.symbol
        assert symbol is not None
        if symbol not in self.market.instruments:
            self.reply_error(
                conn, "subscribe", f"Currency pair not supported {symbol}", req_id, t_in, symbol
            )
            return
        key = sub_key(sub)
        if key in conn.subs:
            self.reply_error(conn, "subscribe", ERR_ALREADY, req_id, t_in, symbol)
            return
        conn.subs[key] = sub
        self.stats.subscriptions += 1
        self.stats.active_subscriptions += 1
        conn.send(wire.ack("subscribe", _result(sub), req_id, t_in, time.time_ns()))
        self.fanout.add(conn, sub)

    def _unsubscribe(self, conn: Conn, sub: Sub, req_id: int | None, t_in: int) -> None:
        held = conn.subs.get(sub_key(sub))
        if held is None or held.depth != sub.depth or held.interval != sub.interval:
            self.reply_error(conn, "unsubscribe", ERR_NOT_FOUND, req_id, t_in, sub.symbol)
            return
        self.fanout.remove(conn, held)
        self.stats.unsubscriptions += 1
        conn.send(wire.ack("unsubscribe", _result(held), req_id, t_in, time.time_ns()))

    def _instrument(
        self, conn: Conn, method: str, params: dict[str, Any], req_id: int | None, t_in: int
    ) -> None:
        """The pair list: one ack, then (on subscribe) one snapshot; no updates follow."""
        snapshot = params.get("snapshot", True)
        if type(snapshot) is not bool:
            raise RequestError(f"{ERR_ARGS}:snapshot")
        sub = Sub("instrument", None, snapshot)
        key = sub_key(sub)
        if method == "unsubscribe":
            if key not in conn.subs:
                raise RequestError(ERR_NOT_FOUND)
            self.fanout.remove(conn, sub)
            self.stats.unsubscriptions += 1
            conn.send(wire.ack(method, _result(sub), req_id, t_in, time.time_ns()))
            return
        if key in conn.subs:
            raise RequestError(ERR_ALREADY)
        conn.subs[key] = sub
        self.stats.subscriptions += 1
        self.stats.active_subscriptions += 1
        conn.send(wire.ack(method, _result(sub), req_id, t_in, time.time_ns()))
        if snapshot:
            used = {a for i in self.market.instruments.values() for a in (i.base, i.quote)}
            assets = [a for a in ASSETS.values() if a.id in used]
            conn.send(
                wire.instrument_snapshot(self.market.instruments.values(), assets), "instrument"
            )

    def reply_error(
        self,
        conn: Conn,
        method: str | None,
        text: str,
        req_id: int | None,
        t_in: int,
        symbol: str | None = None,
    ) -> None:
        self.stats.errors_sent += 1
        conn.send(wire.error(method, text, req_id, t_in, time.time_ns(), symbol))


def _result(sub: Sub) -> dict[str, Any]:
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
