"""Domain types shared by every module, free of any exchange's wire format."""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal


@dataclass(frozen=True, slots=True)
class InstrumentSpec:
    """What the exchange allows for one pair: precisions, increments and minimums."""

    pair: str
    price_precision: int
    qty_precision: int
    price_increment: Decimal
    qty_increment: Decimal
    qty_min: Decimal
    cost_min: Decimal
    status: str = "online"

    @property
    def tradable(self) -> bool:
        return self.status == "online"


def to_decimal(scaled: int, precision: int) -> Decimal:
    """The exact Decimal for an integer scaled by ``10**precision`` (``12345, 2`` -> 123.45)."""
    return Decimal(scaled).scaleb(-precision)
