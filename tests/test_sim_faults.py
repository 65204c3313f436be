"""The simulator's fault endpoint without HTTP: names and parameters to switch calls."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import pytest

from gal_friday.sim.faults import HOSTILE_KINDS, apply_fault, hostile_frame


class Recorder:
    """Every FaultTarget switch, recorded."""

    def __init__(self) -> None:
        self.calls: list[tuple[Any, ...]] = []

    def drop_connections(self) -> int:
        self.calls.append(("drop",))
        return 2

    def corrupt_next_checksum(self, symbol: str) -> None:
        self.calls.append(("corrupt", symbol))

    def send_hostile(self, kind: str = "malformed", symbol: str | None = None) -> int:
        self.calls.append(("hostile", kind, symbol))
        return 1

    def stall(self, seconds: float, channel: str | None = None, symbol: str | None = None) -> int:
        self.calls.append(("stall", seconds, channel, symbol))
        return 3

    def clear_faults(self) -> None:
        self.calls.append(("clear",))

    def reject_next_orders(self, n: int, error: str) -> None:
        self.calls.append(("reject", n, error))

    def drop_after_accept(self, n: int) -> None:
        self.calls.append(("drop_after_accept", n))

    def set_balance(self, asset: str, amount: Decimal | int | str) -> None:
        self.calls.append(("set_balance", asset, amount))


def test_fault_names_and_parameters() -> None:
    t = Recorder()
    assert apply_fault(t, "drop", {}) == {"connections": 2}
    assert apply_fault(t, "corrupt_checksum", {"symbol": "XRP/USD"}) == {"symbol": "XRP/USD"}
    assert apply_fault(t, "hostile", {"kind": "binary"}) == {"kind": "binary", "connections": 1}
    assert apply_fault(t, "malformed", {"kind": "binary", "symbol": "DOGE/USD"}) == {
        "kind": "malformed",
        "connections": 1,
    }
    assert apply_fault(t, "stall", {"seconds": "1.5", "channel": "book", "symbol": ""}) == {
        "connections": 3
    }
    assert apply_fault(t, "clear", {}) == {}
    assert apply_fault(t, "reject_next_orders", {"error": "EOrder:Insufficient funds"}) == {
        "n": 1,
        "error": "EOrder:Insufficient funds",
    }
    assert apply_fault(t, "drop_after_accept", {"n": "2"}) == {"n": 2}
    assert apply_fault(t, "set_balance", {"asset": "USD", "amount": "12.50"}) == {
        "asset": "USD",
        "amount": "12.50",
    }
    assert t.calls == [
        ("drop",),
        ("corrupt", "XRP/USD"),
        ("hostile", "binary", None),
        ("hostile", "malformed", "DOGE/USD"),
        ("stall", 1.5, "book", None),
        ("clear",),
        ("reject", 1, "EOrder:Insufficient funds"),
        ("drop_after_accept", 2),
        ("set_balance", "USD", Decimal("12.50")),
    ]


def test_unknown_names_and_bad_parameters() -> None:
    t = Recorder()
    assert apply_fault(t, "nonsense", {}) is None
    with pytest.raises(ValueError, match="unknown kind 'loud'"):
        apply_fault(t, "hostile", {"kind": "loud"})
    with pytest.raises(KeyError):
        apply_fault(t, "corrupt_checksum", {})
    with pytest.raises(ValueError):
        apply_fault(t, "stall", {"seconds": "soon"})
    assert t.calls == []


@pytest.mark.parametrize("kind", HOSTILE_KINDS)
def test_every_hostile_kind_has_a_frame(kind: str) -> None:
    assert hostile_frame(kind, "XRP/USD")
