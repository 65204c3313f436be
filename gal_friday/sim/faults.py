"""Hostile frames and stalls the simulator can inflict on its WebSocket clients.

A trading client must survive what real exchanges do on bad days: frames that are not JSON,
frames with the right channel but wrong types, channels it never asked for, binary frames,
and sockets that stay open while data silently stops. The frames here are what the exchange's
fault API sends; ``Stall`` describes a silence that is held back and released in order when
it ends, so the stream stays protocol-correct afterwards (like a network stall, not a lost
message).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field

HOSTILE_KINDS = ("malformed", "wrong_types", "unknown_channel", "not_object", "binary")


def hostile_frame(kind: str, symbol: str) -> str | bytes:
    """The frame for one kind of misbehaviour; ValueError for an unknown kind."""
    if kind == "malformed":  # cut off mid-message
        return f'{{"channel":"book","type":"update","data":[{{"symbol":"{symbol}","bids":[{{"pr'
    if kind == "wrong_types":  # a book update whose fields have the wrong JSON types
        return json.dumps({"channel": "book", "type": "update", "data": [
            {"symbol": symbol, "bids": [{"price": "abc", "qty": None}], "asks": {},
             "checksum": "not-a-number", "timestamp": 12}]}, separators=(",", ":"))
    if kind == "unknown_channel":
        return json.dumps({"channel": "nonsense", "type": "update",
                           "data": [{"symbol": symbol, "value": 1}]}, separators=(",", ":"))
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
