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


@dataclass(frozen=True, slots=True)
class Position:
    """An open position in one pair (long only on spot; qty in base units)."""

    pair: str
    qty: Decimal
    avg_entry: Decimal  # fees excluded; a buy fee is realised when that quantity is sold
    mark: Decimal  # latest mid used to value it
    opened_ts_ns: int

    @property
    def value(self) -> Decimal:
        return self.qty * self.mark

    @property
    def unrealised_pnl(self) -> Decimal:
        return (self.mark - self.avg_entry) * self.qty


@dataclass(frozen=True, slots=True)
class PortfolioSnapshot:
    """The consistent state the RiskManager reads synchronously at the moment of a check.

    Money in the quote currency (USD). Drawdowns are fractions of the reference equity
    (peak, start of the UTC day, start of the UTC week), 0 when at or above it.
    """

    ts_ns: int
    cash: Decimal  # total quote balance
    free_cash: Decimal  # cash not reserved by open buy orders
    positions: tuple[Position, ...]
    equity: Decimal  # cash + sum of position values
    peak_equity: Decimal
    day_start_equity: Decimal
    week_start_equity: Decimal
    realised_pnl: Decimal  # fees included
    fees_paid: Decimal
    consecutive_losses: int

    def position(self, pair: str) -> Position | None:
        return next((p for p in self.positions if p.pair == pair), None)

    @property
    def exposure(self) -> Decimal:
        return sum((p.value for p in self.positions), Decimal(0))

    @staticmethod
    def _drawdown(reference: Decimal, equity: Decimal) -> Decimal:
        if reference <= 0 or equity >= reference:
            return Decimal(0)
        return (reference - equity) / reference

    @property
    def total_drawdown(self) -> Decimal:
        return self._drawdown(self.peak_equity, self.equity)

    @property
    def daily_drawdown(self) -> Decimal:
        return self._drawdown(self.day_start_equity, self.equity)

    @property
    def weekly_drawdown(self) -> Decimal:
        return self._drawdown(self.week_start_equity, self.equity)


@dataclass(frozen=True, slots=True)
class OpenTrip:
    """A round trip still open when the previous run stopped, as the audit store recorded it:
    what a restart carries on from (its entry price and fees, not the mark of the moment)."""

    pair: str
    trade_id: str
    qty: Decimal
    avg_entry: Decimal  # fees excluded, as in Position
    entry_fees: Decimal  # buy fees of the open quantity, realised when it is sold
    pnl: Decimal  # realised so far in this round trip (partial exits), fees included
    opened_ts_ns: int


@dataclass(frozen=True, slots=True)
class PortfolioMemory:
    """The portfolio of the previous run, read back from the audit store at start, so a
    restart resets no risk limit: its last snapshot (cash, peak, the day's and week's start
    equity, realised P&L, fees; positions empty, ``trips`` has them), the open round trips,
    and the loss counter as the closed round trips give it."""

    last: PortfolioSnapshot | None
    trips: tuple[OpenTrip, ...]
    consecutive_losses: int
