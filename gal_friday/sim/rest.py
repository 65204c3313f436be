"""Kraken's public REST API (``/0/public/<Method>``) served from the simulator's market.

Kraken answers HTTP 200 with ``{"error": [], "result": {...}}`` and reports failures in the
``error`` array (still HTTP 200), results keyed by its legacy pair ids (``XXRPZUSD``,
``XDGUSD``) whichever spelling the request used. Amounts are strings at the pair's precision.
This module is transport-free: ``PublicRest.call`` maps a method and its parameters to the
response body, the server wraps it in HTTP.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

from gal_friday.kraken.numbers import format_scaled
from gal_friday.sim import wire
from gal_friday.sim.instruments import FEES_MAKER, FEES_TAKER, SimInstrument
from gal_friday.sim.source import MarketSource
from gal_friday.sim.tape import candle_row

OHLC_INTERVALS = (1, 5, 15, 30, 60, 240, 1440, 10080, 21600)
ERR_UNKNOWN_PAIR = "EQuery:Unknown asset pair"
ERR_ARGS = "EGeneral:Invalid arguments"
ERR_METHOD = "EGeneral:Unknown method"
_OHLC_ROWS = 720
_MAX_TRADES = 1000
_DEPTH_DEFAULT, _DEPTH_MAX = 100, 500
_SECONDS_LIMIT = 10**11  # a ``since`` below this is in seconds (older clients), not ns


class RestError(Exception):
    """A Kraken error string for the ``error`` array."""


def _int_param(params: Mapping[str, str], name: str, default: int | None) -> int | None:
    raw = params.get(name)
    if raw is None or raw == "":
        return default
    try:
        return int(raw)
    except ValueError:
        raise RestError(f"{ERR_ARGS}:{name}") from None


class PublicRest:
    """The public REST methods over one market source."""

    def __init__(self, market: MarketSource) -> None:
        self.market = market

    def call(self, method: str, params: Mapping[str, str], now_ns: int) -> tuple[int, Any]:
        """HTTP status and body for ``/0/public/<method>``."""
        handler = {
            "Time": self._time,
            "SystemStatus": self._system_status,
            "AssetPairs": self._asset_pairs,
            "OHLC": self._ohlc,
            "Trades": self._trades,
            "Depth": self._depth,
        }.get(method)
        if handler is None:
            return 404, {"error": [ERR_METHOD]}
        try:
            return 200, {"error": [], "result": handler(params, now_ns)}
        except RestError as exc:
            return 200, {"error": [str(exc)]}

    # --- pairs -------------------------------------------------------------------------------

    def _lookup(self, names: str) -> list[SimInstrument]:
        """Instruments for a comma-separated ``pair`` list in any Kraken spelling."""
        found: list[SimInstrument] = []
        for name in (n.strip().upper() for n in names.split(",") if n.strip()):
            match = next((i for i in self.market.instruments.values() if name in i.names()), None)
            if match is None:
                raise RestError(ERR_UNKNOWN_PAIR)
            if match not in found:
                found.append(match)
        return found

    def _one_pair(self, params: Mapping[str, str]) -> SimInstrument:
        names = params.get("pair", "")
        if not names.strip():
            raise RestError(f"{ERR_ARGS}:pair")
        return self._lookup(names)[0]

    # --- methods -----------------------------------------------------------------------------

    def _time(self, params: Mapping[str, str], now_ns: int) -> dict[str, Any]:
        now = datetime.fromtimestamp(now_ns / 1e9, tz=UTC)
        return {
            "unixtime": now_ns // 1_000_000_000,
            "rfc1123": now.strftime("%a, %d %b %y %H:%M:%S +0000"),
        }

    def _system_status(self, params: Mapping[str, str], now_ns: int) -> dict[str, Any]:
        return {"status": "online", "timestamp": wire.ts_us(now_ns)[:19] + "Z"}

    def _asset_pairs(self, params: Mapping[str, str], now_ns: int) -> dict[str, Any]:
        names = params.get("pair", "")
        insts = self._lookup(names) if names.strip() else list(self.market.instruments.values())
        return {i.rest_key: asset_pair_info(i) for i in insts}

    def _ohlc(self, params: Mapping[str, str], now_ns: int) -> dict[str, Any]:
        inst = self._one_pair(params)
        interval = _int_param(params, "interval", 1)
        if interval not in OHLC_INTERVALS:
            raise RestError(f"{ERR_ARGS}:interval")
        since = _int_param(params, "since", None)
        since_ns = None if since is None else since * 1_000_000_000
        tape = self.market.tapes[inst.symbol]
        candles = tape.candles(interval, now_ns, _OHLC_ROWS, since_ns)
        rows = [candle_row(c, inst.price_precision, inst.qty_precision) for c in candles]
        # ``last``: the newest committed candle (the row before the one in progress)
        last = candles[-2][0] // 1_000_000_000 if len(candles) >= 2 else (since or 0)
        return {inst.rest_key: rows, "last": last}

    def _trades(self, params: Mapping[str, str], now_ns: int) -> dict[str, Any]:
        inst = self._one_pair(params)
        count = _int_param(params, "count", _MAX_TRADES) or _MAX_TRADES
        count = max(1, min(_MAX_TRADES, count))
        since = _int_param(params, "since", None)
        if since is not None and since < _SECONDS_LIMIT:
            since *= 1_000_000_000
        tape = self.market.tapes[inst.symbol]
        indices, last = tape.page(since, count)
        pp, qp = inst.price_precision, inst.qty_precision
        rows = [
            [
                format_scaled(tape.px[i], pp),
                format_scaled(tape.qty[i], qp),
                round(tape.ts[i] / 1e9, 7),
                "b" if tape.buy[i] else "s",
                "m" if tape.market[i] else "l",
                "",
                tape.trade_id(i),
            ]
            for i in indices
        ]
        return {inst.rest_key: rows, "last": str(last)}

    def _depth(self, params: Mapping[str, str], now_ns: int) -> dict[str, Any]:
        inst = self._one_pair(params)
        count = _int_param(params, "count", _DEPTH_DEFAULT) or _DEPTH_DEFAULT
        count = max(1, min(_DEPTH_MAX, count))
        book = self.market.books[inst.symbol]
        pp, qp = inst.price_precision, inst.qty_precision

        def rows(is_bid: bool) -> list[list[Any]]:
            side = book.side(is_bid)
            return [
                [format_scaled(p, pp), format_scaled(q, qp), side.updated.get(p, 0)]
                for p, q in side.top(count)
            ]

        return {inst.rest_key: {"asks": rows(False), "bids": rows(True)}}


def asset_pair_info(inst: SimInstrument) -> dict[str, Any]:
    """An ``AssetPairs`` entry as Kraken writes it."""
    return {
        "altname": inst.altname,
        "wsname": inst.wsname,
        "aclass_base": "currency",
        "base": inst.rest_base,
        "aclass_quote": "currency",
        "quote": inst.rest_quote,
        "lot": "unit",
        "cost_decimals": inst.cost_precision,
        "pair_decimals": inst.price_precision,
        "lot_decimals": inst.qty_precision,
        "lot_multiplier": 1,
        "leverage_buy": [],
        "leverage_sell": [],
        "fees": [list(f) for f in FEES_TAKER],
        "fees_maker": [list(f) for f in FEES_MAKER],
        "fee_volume_currency": "ZUSD",
        "margin_call": 80,
        "margin_stop": 40,
        "ordermin": inst.ordermin,
        "costmin": inst.cost_min,
        "tick_size": inst.price_increment,
        "status": inst.status,
    }
