"""Hostile frames and stalls the simulator can inflict on its WebSocket clients, and the
fault endpoint's names for every misbehaviour switch.

A trading client must survive what real exchanges do on bad days: frames that are not JSON,
frames with the right channel but wrong types, channels it never asked for, binary frames,
and sockets that stay open while data silently stops. The frames here are what the exchange's
fault API sends; ``Stall`` describes a silence that is held back and released in order when
it ends, so the stream stays protocol-correct afterwards (like a network stall, not a lost
message).

``apply_fault`` is the ``POST /sim/fault/<name>`` endpoint without the HTTP: a fault name and
its parameters (strings, from the query string, a form or a JSON body) applied to the
exchange. Names: ``drop``; ``refuse`` (``seconds``: an outage, every WebSocket handshake
refused); ``corrupt_checksum`` (``symbol``); ``hostile`` (``kind``, optional
``symbol``), ``malformed`` (= hostile with kind malformed); ``stall`` (``seconds``, optional
``channel``, ``symbol``); ``clear``; ``reject_next_orders`` (``n``, ``error``);
``drop_after_accept`` (``n``); ``set_balance`` (``asset``, ``amount``).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any, Protocol

HOSTILE_KINDS = ("malformed", "wrong_types", "unknown_channel", "not_object", "binary")


def hostile_frame(kind: str, symbol: str) -> str | bytes:
    """The frame for one kind of misbehaviour; ValueError for an unknown kind."""
    if kind == "malformed":  # cut off mid-message
        return f'{{"channel":"book","type":"update","data":[{{"symbol":"{symbol}","bids":[{{"pr'
    if kind == "wrong_types":  # a book update whose fields have the wrong JSON types
        return json.dumps(
            {
                "channel": "book",
                "type": "update",
                "data": [
                    {
                        "symbol": symbol,
                        "bids": [{"price": "abc", "qty": None}],
                        "asks": {},
                        "checksum": "not-a-number",
                        "timestamp": 12,
                    }
                ],
            },
            separators=(",", ":"),
        )
    if kind == "unknown_channel":
        return json.dumps(
            {"channel": "nonsense", "type": "update", "data": [{"symbol": symbol, "value": 1}]},
            separators=(",", ":"),
        )
    if kind == "not_object":
        return '[1,"two",{"three":3}]'
    if kind == "binary":
        return b"\x00\xffnot text\x80"
    raise ValueError(f"unknown hostile frame kind {kind!r}; known: {', '.join(HOSTILE_KINDS)}")


@dataclass
class Stall:
    """Silence on one connection until ``until`` (loop time), for everything or for one
    channel and/or symbol. Frames it swallows wait in ``held``."""

    until: float
    channel: str | None = None
    symbol: str | None = None
    held: list[tuple[str | bytes, str | None, str | None]] = field(default_factory=list)

    @property
    def total(self) -> bool:
        """Nothing at all goes out: no data, no acks, no heartbeats."""
        return self.channel is None and self.symbol is None

    def matches(self, channel: str | None, symbol: str | None) -> bool:
        if self.total:
            return True
        if self.channel is not None and self.channel != channel:
            return False
        return self.symbol is None or self.symbol == symbol


# --- the fault endpoint ------------------------------------------------------------------------


class FaultTarget(Protocol):
    """The exchange's misbehaviour switches (``SimExchange`` has them all)."""

    def drop_connections(self) -> int: ...
    def refuse_connections(self, seconds: float) -> int: ...
    def corrupt_next_checksum(self, symbol: str) -> None: ...
    def send_hostile(self, kind: str = ..., symbol: str | None = ...) -> int: ...
    def stall(self, seconds: float, channel: str | None = ..., symbol: str | None = ...) -> int: ...
    def clear_faults(self) -> None: ...
    def reject_next_orders(self, n: int, error: str) -> None: ...
    def drop_after_accept(self, n: int) -> None: ...
    def set_balance(self, asset: str, amount: Decimal | int | str) -> None: ...


def apply_fault(target: FaultTarget, name: str, params: dict[str, str]) -> dict[str, Any] | None:
    """Apply the fault ``name``; returns what to answer, None for an unknown name. Bad or
    missing parameters raise ValueError, KeyError or ArithmeticError."""
    symbol = params.get("symbol") or None
    if name == "drop":
        return {"connections": target.drop_connections()}
    if name == "refuse":
        return {"connections": target.refuse_connections(float(params["seconds"]))}
    if name == "corrupt_checksum":
        target.corrupt_next_checksum(params["symbol"])
        return {"symbol": params["symbol"]}
    if name in ("hostile", "malformed"):
        kind = params.get("kind", "malformed") if name == "hostile" else "malformed"
        if kind not in HOSTILE_KINDS:
            raise ValueError(f"unknown kind {kind!r}; known: {', '.join(HOSTILE_KINDS)}")
        return {"kind": kind, "connections": target.send_hostile(kind, symbol)}
    if name == "stall":
        seconds = float(params["seconds"])
        channel = params.get("channel") or None
        return {"connections": target.stall(seconds, channel, symbol)}
    if name == "clear":
        target.clear_faults()
        return {}
    return _apply_trading_fault(target, name, params)


def _apply_trading_fault(
    target: FaultTarget, name: str, params: dict[str, str]
) -> dict[str, Any] | None:
    if name == "reject_next_orders":
        n = int(params.get("n", "1"))
        target.reject_next_orders(n, params["error"])
        return {"n": n, "error": params["error"]}
    if name == "drop_after_accept":
        n = int(params.get("n", "1"))
        target.drop_after_accept(n)
        return {"n": n}
    if name == "set_balance":
        target.set_balance(params["asset"], Decimal(params["amount"]))
        return {"asset": params["asset"], "amount": params["amount"]}
    return None
