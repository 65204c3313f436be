"""Typed, immutable events: the only way modules talk to each other.

Events are frozen ``msgspec.Struct`` classes: immutable like frozen dataclasses, but built in C
about ten times faster (the book path publishes one per exchange message) and encodable to
JSON as they are, for logs and the audit trail.

Money and book amounts are exact: Decimal, or integers scaled by a stated precision in the hot
book path (``BookEvent``), which converts on demand. Times are UTC nanoseconds since the epoch
(``ts_ns``) so events sort and subtract without timezone work.
"""

from __future__ import annotations

import enum
import time
from decimal import Decimal

import msgspec
from msgspec import field

from gal_friday.domain import InstrumentSpec, PortfolioSnapshot, to_decimal
from gal_friday.timeutil import parse_ts_ns


def now_ns() -> int:
    """Wall-clock UTC nanoseconds; the one clock events are stamped with."""
    return time.time_ns()


class Side(enum.StrEnum):
    BUY = "buy"
    SELL = "sell"


class Event(msgspec.Struct, frozen=True, gc=False):
    """Base of every event on the bus (immutable; holds no reference cycles, hence gc=False)."""


# --- market data -------------------------------------------------------------------------


class MarketDataEvent(Event, frozen=True):
    """Base of book, candle and trade events; ``pair`` is the domain pair, e.g. 'XRP/USD'."""

    pair: str


class BookEvent(MarketDataEvent, frozen=True):
    """Top-N state of a verified L2 book after one exchange message.

    Levels are ``(price, qty)`` integers scaled by ``price_precision`` / ``qty_precision``:
    exact, and cheap enough to publish on every update. Use the helpers for Decimals.
    """

    bids: tuple[tuple[int, int], ...]
    asks: tuple[tuple[int, int], ...]
    price_precision: int
    qty_precision: int
    checksum: int
    sequence: int  # per-pair count of verified book messages since the last snapshot
    is_snapshot: bool
    exchange_ts: str  # RFC3339 as the exchange stamped it; parsed only when someone asks
    received_ts_ns: int

    @property
    def exchange_ts_ns(self) -> int:
        """Exchange time in epoch ns (the receive time when the exchange sent none)."""
        return parse_ts_ns(self.exchange_ts) if self.exchange_ts else self.received_ts_ns

    def best_bid(self) -> Decimal | None:
        return to_decimal(self.bids[0][0], self.price_precision) if self.bids else None

    def best_ask(self) -> Decimal | None:
        return to_decimal(self.asks[0][0], self.price_precision) if self.asks else None

    def mid(self) -> Decimal | None:
        if not (self.bids and self.asks):
            return None
        return to_decimal(self.bids[0][0] + self.asks[0][0], self.price_precision) / 2

    def decimal_levels(self) -> tuple[list[tuple[Decimal, Decimal]], list[tuple[Decimal, Decimal]]]:
        pp, qp = self.price_precision, self.qty_precision
        return (
            [(to_decimal(p, pp), to_decimal(q, qp)) for p, q in self.bids],
            [(to_decimal(p, pp), to_decimal(q, qp)) for p, q in self.asks],
        )


class BookInvalidatedEvent(MarketDataEvent, frozen=True):
    """The local book is known to be wrong (checksum mismatch, gap, disconnect): do not use it
    until the next BookEvent with ``is_snapshot``."""

    reason: str
    ts_ns: int = field(default_factory=now_ns)


class CandleEvent(MarketDataEvent, frozen=True):
    """A 1-min (or ``interval_s``) OHLCV candle; ``closed`` once its interval has rolled over."""

    interval_s: int
    open_ts_ns: int
    open: Decimal
    high: Decimal
    low: Decimal
    close: Decimal
    volume: Decimal
    vwap: Decimal
    trades: int
    closed: bool
    received_ts_ns: int


class TradeEvent(MarketDataEvent, frozen=True):
    """One public trade; ``side`` is the taker's side."""

    trade_id: int
    side: Side
    price: Decimal
    qty: Decimal
    order_type: str
    exchange_ts_ns: int
    received_ts_ns: int


class InstrumentEvent(MarketDataEvent, frozen=True):
    """What the exchange allows for a pair (tick size, lot decimals, minimum order)."""

    spec: InstrumentSpec


# --- features and predictions --------------------------------------------------------------


class FeatureEvent(Event, frozen=True):
    """A feature vector for one pair; names and values are parallel tuples (fixed order)."""

    pair: str
    ts_ns: int
    names: tuple[str, ...]
    values: tuple[float, ...]


class PredictionEvent(Event, frozen=True):
    """Probability that price moves up by the configured threshold within the horizon."""

    pair: str
    ts_ns: int
    model_id: str
    prob_up: float
    features_ts_ns: int
    latency_ns: int


# --- trading decisions ---------------------------------------------------------------------


class OrderType(enum.StrEnum):
    """Order kinds the bot sends; STOP_LOSS and TAKE_PROFIT are triggered market orders (they
    rest unseen until the market reaches their trigger price, then take liquidity)."""

    LIMIT = "limit"
    MARKET = "market"
    STOP_LOSS = "stop-loss"
    TAKE_PROFIT = "take-profit"


class TradeSignalProposedEvent(Event, frozen=True):
    """The strategy wants to enter (or exit) a position; risk has not looked at it yet."""

    signal_id: str
    pair: str
    side: Side
    order_type: OrderType
    entry_price: Decimal
    stop_loss: Decimal
    take_profit: Decimal
    prob_up: float
    model_id: str
    ts_ns: int
    is_exit: bool = False


class TradeSignalApprovedEvent(Event, frozen=True):
    """Risk approved the signal and sized it."""

    signal_id: str
    pair: str
    side: Side
    order_type: OrderType
    qty: Decimal
    limit_price: Decimal | None
    stop_loss: Decimal
    take_profit: Decimal
    ts_ns: int
    is_exit: bool = False
    checks: tuple[tuple[str, bool, str], ...] = ()  # (check, passed, detail), for the audit


class TradeSignalRejectedEvent(Event, frozen=True):
    """Risk refused the signal; ``reason`` names the failed check."""

    signal_id: str
    pair: str
    reason: str
    ts_ns: int
    checks: tuple[tuple[str, bool, str], ...] = ()  # (check, passed, detail), for the audit


class OrderStatus(enum.StrEnum):
    """Where one order is in its life; :attr:`is_working` / :attr:`is_terminal` are the one
    definition of "can still fill" and "finished" that every module and venue uses."""

    SUBMITTED = "submitted"
    ACKNOWLEDGED = "acknowledged"
    PARTIALLY_FILLED = "partially_filled"
    FILLED = "filled"
    CANCELLED = "cancelled"
    REJECTED = "rejected"
    EXPIRED = "expired"
    ERROR = "error"  # the order could not be placed (gave up after retries, fatal venue error)

    @property
    def is_terminal(self) -> bool:
        """Finished: nothing more will fill (filled, cancelled, rejected, expired, error)."""
        return self in _TERMINAL_STATUSES

    @property
    def is_working(self) -> bool:
        """Still able to fill: sent, acknowledged or partly filled."""
        return self not in _TERMINAL_STATUSES


_TERMINAL_STATUSES = frozenset(
    {
        OrderStatus.FILLED,
        OrderStatus.CANCELLED,
        OrderStatus.REJECTED,
        OrderStatus.EXPIRED,
        OrderStatus.ERROR,
    }
)


class ExecutionReportEvent(Event, frozen=True):
    """A state change of one order; fills carry the last fill's price, quantity and fee."""

    client_order_id: str
    exchange_order_id: str | None
    signal_id: str | None
    pair: str
    side: Side
    order_type: OrderType
    status: OrderStatus
    order_qty: Decimal
    filled_qty: Decimal
    avg_price: Decimal | None
    last_fill_qty: Decimal | None
    last_fill_price: Decimal | None
    fee: Decimal
    fee_asset: str
    reason: str | None
    ts_ns: int
    limit_price: Decimal | None = None
    trigger_price: Decimal | None = None  # stop-loss / take-profit orders
    liquidity: str | None = None  # "maker" / "taker" on a fill, when the venue says


class OrderRequestEvent(Event, frozen=True):
    """The ExecutionHandler is about to send this order (published before it leaves): the
    "order request" step of a trade's audit trail, and what a session replay compares."""

    client_order_id: str
    signal_id: str
    role: str  # entry, entry-market, stop, target, exit
    pair: str
    side: Side
    order_type: OrderType
    qty: Decimal
    limit_price: Decimal | None
    trigger_price: Decimal | None
    ts_ns: int


class OpenOrderState(Event, frozen=True):
    """One order the venue lists as working, as seen by a reconciliation."""

    client_order_id: str
    pair: str
    side: Side
    order_type: OrderType
    remaining_qty: Decimal
    limit_price: Decimal | None


class ReconciliationEvent(Event, frozen=True):
    """The venue's balances (plain asset codes, ``.F`` earn balances included) and working
    orders, read while no order request was in flight; the portfolio corrects itself to it."""

    balances: tuple[tuple[str, Decimal], ...]
    open_orders: tuple[OpenOrderState, ...]
    venue: str
    ts_ns: int
    # average entry per pair from the store, for holdings found at a restart (P&L stays right)
    entry_prices: tuple[tuple[str, Decimal], ...] = ()


class TradingStartedEvent(Event, frozen=True):
    """Trading begins with this cash (paper: the configured amount; live: the exchange's USD
    balance), so a replay of the session starts its portfolio where the run did."""

    mode: str
    cash: Decimal
    ts_ns: int


class OrderAdoptedEvent(Event, frozen=True):
    """Crash recovery handed the execution handler an order of an earlier run found working
    at the venue; its reports are handled as if this run had sent it. An entry carries its
    signal's stop and target, which protect what it fills from now on (0: not known, as in
    journals written before they were carried)."""

    client_order_id: str
    pair: str
    side: Side
    order_type: OrderType
    qty: Decimal
    limit_price: Decimal | None
    trigger_price: Decimal | None
    status: OrderStatus
    filled: Decimal
    signal_id: str
    sibling: str | None
    ts_ns: int
    stop: Decimal = Decimal(0)
    target: Decimal = Decimal(0)


class PairRestoredEvent(Event, frozen=True):
    """Crash recovery told the execution handler what a pair holds, its stop and target, and
    how much of it no working stop covers (protected anew at once)."""

    pair: str
    held: Decimal
    stop: Decimal
    target: Decimal
    unprotected: Decimal
    signal_id: str
    ts_ns: int


# --- control and health ---------------------------------------------------------------------


class HaltEvent(Event, frozen=True):
    """A request to HALT now (no new entries); ``source`` is the trigger (operator, drawdown,
    stale data, ...). The trading state's owner turns it into a TradingStateChangedEvent."""

    reason: str
    source: str
    ts_ns: int = field(default_factory=now_ns)


class ReduceEvent(Event, frozen=True):
    """REDUCING: no new entries, positions kept, only orders that shrink exposure (exits) pass.
    Softer than a HALT; like it, only a ``ResumeEvent`` ends it."""

    reason: str
    source: str
    ts_ns: int = field(default_factory=now_ns)


class TradingState(enum.StrEnum):
    """Whether the bot may trade: ACTIVE (entries and exits), REDUCING (exits only, positions
    kept) or HALTED (no entries; positions closed or kept per the HALT policy)."""

    ACTIVE = "ACTIVE"
    REDUCING = "REDUCING"
    HALTED = "HALTED"


class TradingStateChangedEvent(Event, frozen=True):
    """The trading state changed. Published only by its owner (``gal_friday.trading_state``,
    run by the RiskManager); every other module follows this event, never the commands
    (HaltEvent, ReduceEvent, ResumeEvent are requests the owner may find already met)."""

    state: TradingState
    previous: TradingState
    reason: str  # why, as the command or breach said ("" for ACTIVE)
    source: str  # who: operator, risk, monitoring's trigger name, recovery, ...
    ts_ns: int
    # a state remembered from an earlier run, announced again at start (no new decision:
    # a HALT policy already ran when it was first announced)
    restored: bool = False

    @property
    def cause(self) -> str:
        """``"source: reason"``, as the cockpit, the control socket and risk verdicts say it."""
        return f"{self.source}: {self.reason}"

    @property
    def halted(self) -> bool:
        return self.state is TradingState.HALTED

    @property
    def reducing(self) -> bool:
        return self.state is TradingState.REDUCING

    @property
    def active(self) -> bool:
        return self.state is TradingState.ACTIVE


class FlattenEvent(Event, frozen=True):
    """An operator asks to close every position at market and cancel working entries."""

    operator: str
    ts_ns: int = field(default_factory=now_ns)


class PortfolioEvent(Event, frozen=True):
    """The portfolio as of ``snapshot.ts_ns``, published when it changes (at a bounded rate)
    for display and monitoring; the RiskManager reads the portfolio directly instead."""

    snapshot: PortfolioSnapshot


class ResumeEvent(Event, frozen=True):
    """A request to trade again after a HALT or REDUCING; only an operator sends one."""

    operator: str
    ts_ns: int = field(default_factory=now_ns)


class ComponentState(enum.StrEnum):
    STARTING = "starting"
    CONNECTING = "connecting"
    CONNECTED = "connected"
    DEGRADED = "degraded"
    DISCONNECTED = "disconnected"
    STOPPED = "stopped"


class SystemStatusEvent(Event, frozen=True):
    """Health of one component (e.g. 'kraken.ws.public'), for monitoring and display."""

    component: str
    state: ComponentState
    detail: str = ""
    ts_ns: int = field(default_factory=now_ns)


class FeedStatsEvent(Event, frozen=True):
    """Market-data feed counters, published about once a second for monitoring and display."""

    state: ComponentState
    frames: int
    frames_per_s: float
    book_messages: int
    checksum_failures: int
    malformed: int
    reconnects: int
    last_disconnect_reason: str
    data_age_s: tuple[tuple[str, float], ...] = ()  # (pair, seconds since its last message)
    ts_ns: int = field(default_factory=now_ns)
