"""The port between the ExecutionHandler and a trading venue (Kraken, the paper matching
engine, the backtester), in domain terms only.

A venue accepts ``OrderRequest``s and reports every state change of every order as an
``ExecutionReportEvent`` through the callback given to ``start``. Errors are sorted by what the
caller may safely do next, because that is what decides whether an order can be duplicated:

* ``OrderRejected``: the venue definitely refused the order (insufficient funds, below the
  minimum, invalid price). Nothing is working; do not retry the same order.
* ``VenueBusy``: the venue definitely did not take the request (rate limit, throttled,
  unavailable, circuit open). Safe to retry later with the same client order id.
* ``VenueUncertain``: the request may or may not have reached the venue (timeout, connection
  lost mid-request). Never treat the order as failed and never blindly resend: ask the venue
  with ``lookup(client_order_id)`` and act on the answer.
* ``VenueAuthError``: credentials or permissions are wrong; retrying cannot help. ``str()`` says
  what the user must change.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from decimal import Decimal
from typing import Protocol, runtime_checkable

from gal_friday.events import ExecutionReportEvent, OrderType, Side

ReportCallback = Callable[[ExecutionReportEvent], Awaitable[None]]


@dataclass(frozen=True, slots=True)
class OrderRequest:
    """One order as the bot sends it. ``client_order_id`` is at most 18 ASCII characters
    (Kraken's limit) and unique for the life of the account; ``trigger_price`` is set for
    STOP_LOSS and TAKE_PROFIT orders, ``limit_price`` for LIMIT orders."""

    client_order_id: str
    pair: str
    side: Side
    type: OrderType
    qty: Decimal
    limit_price: Decimal | None = None
    signal_id: str | None = None
    trigger_price: Decimal | None = None


class VenueError(Exception):
    """Base class of the venue errors; ``str()`` is one line for the log and the screen."""


class OrderRejected(VenueError):
    """The venue refused the order; nothing is working for it."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class VenueBusy(VenueError):
    """The request was definitely not taken (rate limit, throttled, unavailable, breaker
    open); retrying later is safe. ``retry_after_s`` is the venue's hint, if any."""

    def __init__(self, reason: str, retry_after_s: float | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.retry_after_s = retry_after_s


class VenueUncertain(VenueError):
    """The request's fate is unknown; resolve it with ``lookup`` before doing anything."""


class VenueAuthError(VenueError):
    """Wrong key, secret or permission; the message tells the user what to fix."""


@dataclass(frozen=True, slots=True)
class VenueOrder:
    """An order the venue reports as known: for reconciliation and for resolving uncertain
    requests by client order id."""

    client_order_id: str
    exchange_order_id: str
    pair: str
    side: Side
    type: OrderType
    qty: Decimal
    filled_qty: Decimal
    limit_price: Decimal | None
    trigger_price: Decimal | None
    is_open: bool
    status: str  # the venue's own word (open, closed, canceled, expired, ...)


@dataclass(frozen=True, slots=True)
class VenueFill:
    """One fill, for reconciling trades the bot may have missed while away."""

    trade_id: str
    client_order_id: str | None
    exchange_order_id: str
    pair: str
    side: Side
    qty: Decimal
    price: Decimal
    fee: Decimal  # in the quote currency
    ts_ns: int


class TradingVenue(Protocol):
    """What the ExecutionHandler needs from a venue. All amounts are exact Decimals; assets are
    plain codes (``USD``, ``XRP``, ``DOGE``): Kraken's X/Z prefixes and ``.F`` earn balances are
    the adapter's business (``.F`` holdings are added to their asset)."""

    name: str

    async def start(self, on_report: ReportCallback) -> None:
        """Connect, authenticate and begin reporting order state changes."""

    async def stop(self) -> None:
        """Disconnect; working orders stay with the venue (the dead man's switch, where the
        venue has one, cancels them if the bot does not come back)."""

    async def submit(self, order: OrderRequest) -> str:
        """Send one order; returns the venue's order id once the venue has accepted it."""

    async def cancel(self, client_order_id: str) -> None:
        """Cancel one order by client order id; unknown or finished orders are not an error."""

    async def cancel_all(self) -> int:
        """Cancel every working order; returns how many."""

    async def lookup(self, client_order_id: str) -> VenueOrder | None:
        """The venue's view of one order by client order id, or None if it never got it."""

    async def open_orders(self) -> list[VenueOrder]:
        """Every working order (triggered orders not yet triggered included)."""

    async def balances(self) -> dict[str, Decimal]:
        """Total balance per asset code."""

    async def fills_since(self, ts_ns: int) -> list[VenueFill]:
        """Fills at or after ``ts_ns``, oldest first."""


@runtime_checkable
class DeadMansSwitch(Protocol):
    """A venue that cancels every working order when the bot stops re-arming a timer
    (Kraken's ``cancel_all_orders_after``). A clean stop, with no entry left working,
    disarms it so the protective orders stay at the exchange while the bot is away."""

    async def disarm_dead_mans_switch(self) -> None: ...


class NullVenue:
    """A venue that knows no orders, balances or fills: the base of stand-ins (a replay
    answering from a journal, a benchmark's stopwatch) that override only what they use."""

    name = "null"

    async def start(self, on_report: ReportCallback) -> None:
        """Nothing to connect to."""

    async def stop(self) -> None:
        """Nothing to disconnect."""

    async def submit(self, order: OrderRequest) -> str:
        raise OrderRejected(f"the {self.name} venue takes no orders")

    async def cancel(self, client_order_id: str) -> None:
        """Nothing is working."""

    async def cancel_all(self) -> int:
        return 0

    async def lookup(self, client_order_id: str) -> VenueOrder | None:
        return None

    async def open_orders(self) -> list[VenueOrder]:
        return []

    async def balances(self) -> dict[str, Decimal]:
        return {}

    async def fills_since(self, ts_ns: int) -> list[VenueFill]:
        return []
