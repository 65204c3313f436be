"""JSON text of Kraken WebSocket v2 messages, written by hand.

Kraken sends prices and quantities as JSON numbers "with full precision" (``0.50000000``),
and the book checksum depends on those trailing zeros. No JSON library writes a number like
that from a float, so every message that carries amounts is assembled here from scaled
integers via ``format_scaled``. Messages without amounts (acks, errors) go through ``json``.
The key order of each message follows Kraken's documented examples.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from datetime import UTC, datetime
from typing import Any

from gal_friday.kraken.numbers import format_scaled
from gal_friday.sim.instruments import SimAsset, SimInstrument

Level = tuple[int, int]

_SECONDS: dict[int, str] = {}


def _second_text(seconds: int) -> str:
    """'YYYY-MM-DDTHH:MM:SS' for an epoch second, cached: messages share their second."""
    text = _SECONDS.get(seconds)
    if text is None:
        if len(_SECONDS) > 4096:
            _SECONDS.clear()
        text = datetime.fromtimestamp(seconds, tz=UTC).strftime("%Y-%m-%dT%H:%M:%S")
        _SECONDS[seconds] = text
    return text


def ts_us(ns: int) -> str:
    """RFC3339 with microseconds and 'Z' (most Kraken timestamps)."""
    seconds, rem = divmod(ns, 1_000_000_000)
    return f"{_second_text(seconds)}.{rem // 1000:06d}Z"


def ts_ns(ns: int) -> str:
    """RFC3339 with nanoseconds and 'Z' (Kraken's ohlc ``interval_begin`` and message time)."""
    seconds, rem = divmod(ns, 1_000_000_000)
    return f"{_second_text(seconds)}.{rem:09d}Z"


def _levels(levels: Iterable[Level], pp: int, qp: int) -> str:
    return ",".join(
        f'{{"price":{format_scaled(p, pp)},"qty":{format_scaled(q, qp)}}}' for p, q in levels
    )


def book(
    kind: str,
    symbol: str,
    bids: Iterable[Level],
    asks: Iterable[Level],
    checksum: int,
    ts: int,
    pp: int,
    qp: int,
) -> str:
    """A ``book`` snapshot or update; levels best first, amounts at full precision."""
    return (
        f'{{"channel":"book","type":"{kind}","data":[{{"symbol":"{symbol}",'
        f'"bids":[{_levels(bids, pp, qp)}],"asks":[{_levels(asks, pp, qp)}],'
        f'"checksum":{checksum},"timestamp":"{ts_us(ts)}"}}]}}'
    )


def trade_item(
    symbol: str,
    side: str,
    price: int,
    qty: int,
    ord_type: str,
    trade_id: int,
    ts: int,
    pp: int,
    qp: int,
) -> str:
    """One element of a ``trade`` message's data list."""
    return (
        f'{{"symbol":"{symbol}","side":"{side}","price":{format_scaled(price, pp)},'
        f'"qty":{format_scaled(qty, qp)},"ord_type":"{ord_type}","trade_id":{trade_id},'
        f'"timestamp":"{ts_us(ts)}"}}'
    )


def trades(kind: str, items: Sequence[str]) -> str:
    return f'{{"channel":"trade","type":"{kind}","data":[{",".join(items)}]}}'


def ohlc_item(symbol: str, candle: Sequence[int], interval_min: int, pp: int, qp: int) -> str:
    """One candle: ``candle`` is ``(begin_ns, open, high, low, close, volume, vwap, count)``."""
    begin, o, h, low, c, vol, vwap, count = candle
    end = begin + interval_min * 60_000_000_000
    return (
        f'{{"symbol":"{symbol}","open":{format_scaled(o, pp)},"high":{format_scaled(h, pp)},'
        f'"low":{format_scaled(low, pp)},"close":{format_scaled(c, pp)},"trades":{count},'
        f'"volume":{format_scaled(vol, qp)},"vwap":{format_scaled(vwap, pp)},'
        f'"interval_begin":"{ts_ns(begin)}","interval":{interval_min},'
        f'"timestamp":"{ts_us(end)}"}}'
    )


def ohlc(kind: str, items: Sequence[str], ts: int) -> str:
    return (
        f'{{"channel":"ohlc","type":"{kind}","timestamp":"{ts_ns(ts)}","data":[{",".join(items)}]}}'
    )


def _number(text: str) -> str:
    """A decimal text as a JSON number Kraken would write (always with a fraction)."""
    return text if "." in text else text + ".0"


def _pair(inst: SimInstrument) -> str:
    return (
        f'{{"symbol":"{inst.symbol}","base":"{inst.base}","quote":"{inst.quote}",'
        f'"status":"{inst.status}","qty_precision":{inst.qty_precision},'
        f'"qty_increment":{_number(inst.qty_increment)},'
        f'"price_precision":{inst.price_precision},"cost_precision":{inst.cost_precision},'
        f'"marginable":{json.dumps(inst.marginable)},"has_index":{json.dumps(inst.has_index)},'
        f'"cost_min":{_number(inst.cost_min)},"tick_size":{_number(inst.price_increment)},'
        f'"price_increment":{_number(inst.price_increment)},"qty_min":{_number(inst.qty_min)}}}'
    )


def _asset(asset: SimAsset) -> str:
    return (
        f'{{"id":"{asset.id}","status":"{asset.status}","precision":{asset.precision},'
        f'"precision_display":{asset.precision_display},'
        f'"borrowable":{json.dumps(asset.borrowable)},'
        f'"collateral_value":{_number(asset.collateral_value)},'
        f'"margin_rate":{_number(asset.margin_rate)}}}'
    )


def instrument_snapshot(instruments: Iterable[SimInstrument], assets: Iterable[SimAsset]) -> str:
    """The ``instrument`` channel snapshot (``data`` is an object, not a list)."""
    return (
        f'{{"channel":"instrument","type":"snapshot","data":{{'
        f'"assets":[{",".join(_asset(a) for a in assets)}],'
        f'"pairs":[{",".join(_pair(i) for i in instruments)}]}}}}'
    )


def status(connection_id: int, system: str = "online") -> str:
    return (
        f'{{"channel":"status","type":"update","data":[{{"api_version":"v2",'
        f'"connection_id":{connection_id},"system":"{system}","version":"2.0.0"}}]}}'
    )


HEARTBEAT = '{"channel":"heartbeat"}'


def ack(method: str, result: dict[str, Any], req_id: Any, t_in: int, t_out: int) -> str:
    """A successful response; ``req_id`` is echoed only when the request carried one."""
    msg: dict[str, Any] = {"method": method}
    if req_id is not None:
        msg["req_id"] = req_id
    msg.update(result=result, success=True, time_in=ts_us(t_in), time_out=ts_us(t_out))
    return json.dumps(msg, separators=(",", ":"))


def error(
    method: str | None, text: str, req_id: Any, t_in: int, t_out: int, symbol: str | None = None
) -> str:
    """A failed response, keys in Kraken's (alphabetical) order; WS errors are one string."""
    msg: dict[str, Any] = {"error": text}
    if method is not None:
        msg["method"] = method
    if req_id is not None:
        msg["req_id"] = req_id
    msg["success"] = False
    if symbol is not None:
        msg["symbol"] = symbol
    msg.update(time_in=ts_us(t_in), time_out=ts_us(t_out))
    return json.dumps(msg, separators=(",", ":"))


def pong(req_id: Any, t_in: int, t_out: int) -> str:
    msg: dict[str, Any] = {"method": "pong"}
    if req_id is not None:
        msg["req_id"] = req_id
    msg.update(time_in=ts_us(t_in), time_out=ts_us(t_out))
    return json.dumps(msg, separators=(",", ":"))
