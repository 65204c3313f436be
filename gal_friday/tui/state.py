"""What the cockpit shows, kept up to date from the bus and free of Textual.

Bus handlers only assign the latest event into plain fields (cheap, and safe after the
widgets are gone); the widgets read this state on a timer. High-rate events (books, candles,
predictions, portfolio, feed statistics) arrive through a CONFLATE subscription, so a burst of
1,000 book updates per second costs the screen one update per pair per drain. Events that must
not be lost (HALT, orders, signals, component status, candles) arrive through a small BLOCK
subscription whose handler is equally cheap.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from decimal import Decimal

from gal_friday.bus import EventBus, Policy, Subscription
from gal_friday.config import Settings
from gal_friday.control import mode_label
from gal_friday.events import (
    BookEvent,
    BookInvalidatedEvent,
    CandleEvent,
    ComponentState,
    Event,
    ExecutionReportEvent,
    FeedStatsEvent,
    FlattenEvent,
    OrderStatus,
    OrderType,
    PortfolioEvent,
    PredictionEvent,
    SystemStatusEvent,
    TradeSignalApprovedEvent,
    TradeSignalProposedEvent,
    TradeSignalRejectedEvent,
    TradingStateChangedEvent,
)

Clock = Callable[[], int]
LATEST_TYPES = (BookEvent, BookInvalidatedEvent, PredictionEvent, PortfolioEvent, FeedStatsEvent)
# Candles go with the events that must not be lost: a history snapshot arrives as a burst.
EVERY_TYPES = (
    TradingStateChangedEvent,
    FlattenEvent,
    SystemStatusEvent,
    ExecutionReportEvent,
    TradeSignalProposedEvent,
    TradeSignalApprovedEvent,
    TradeSignalRejectedEvent,
    CandleEvent,
)


@dataclass(frozen=True, slots=True)
class LogLine:
    """One event-log entry; ``level`` picks its style (info, good, warn, bad)."""

    seq: int
    ts_ns: int
    level: str
    text: str


@dataclass(slots=True)
class PairState:
    book: BookEvent | None = None
    invalid_reason: str = ""
    closes: deque[tuple[int, Decimal]] | None = None
    prediction: PredictionEvent | None = None
    data_age_s: float | None = None

    def add_candle(self, candle: CandleEvent, keep: int) -> None:
        """Append a new minute's close or update the current minute's."""
        if self.closes is None:
            self.closes = deque(maxlen=keep)
        if self.closes and self.closes[-1][0] == candle.open_ts_ns:
            self.closes[-1] = (candle.open_ts_ns, candle.close)
        elif not self.closes or candle.open_ts_ns > self.closes[-1][0]:
            self.closes.append((candle.open_ts_ns, candle.close))


class CockpitState:
    """The latest of everything the cockpit displays; ``version`` counts changes."""

    def __init__(
        self,
        settings: Settings,
        *,
        clock: Clock = time.time_ns,
        log_size: int = 500,
        candles: int = 240,
    ) -> None:
        self.settings = settings
        self.clock = clock
        self.mode = mode_label(settings)
        self.pairs: dict[str, PairState] = {p: PairState() for p in settings.pairs}
        self.portfolio: PortfolioEvent | None = None
        self.feed: FeedStatsEvent | None = None
        self.components: dict[str, ComponentState] = {}
        self.halted = False
        self.reducing = ""  # "source: reason" while REDUCING
        self.halt_reason = ""
        self.halt_source = ""
        self.orders: dict[str, ExecutionReportEvent] = {}
        self.log: deque[LogLine] = deque(maxlen=log_size)
        self.version = 0
        self._seq = 0
        self._candles = candles
        self._subs: list[Subscription] = []

    def attach(self, bus: EventBus) -> None:
        self._subs = [
            bus.subscribe(
                LATEST_TYPES, self.on_latest, name="tui-latest", policy=Policy.CONFLATE, maxsize=64
            ),
            bus.subscribe(EVERY_TYPES, self.on_every, name="tui-events", maxsize=4096),
        ]

    # --- handlers (cheap: assignment only) ---------------------------------------------------

    def on_latest(self, event: Event) -> None:
        self.version += 1
        if isinstance(event, BookEvent):
            pair = self._pair(event.pair)
            pair.book, pair.invalid_reason = event, ""
        elif isinstance(event, BookInvalidatedEvent):
            self._pair(event.pair).invalid_reason = event.reason
            self.note(event.ts_ns, "warn", f"{event.pair} book invalidated: {event.reason}")
        elif isinstance(event, PredictionEvent):
            self._pair(event.pair).prediction = event
        elif isinstance(event, PortfolioEvent):
            self.portfolio = event
        elif isinstance(event, FeedStatsEvent):
            self._on_feed(event)

    def on_every(self, event: Event) -> None:
        self.version += 1
        if isinstance(event, TradingStateChangedEvent):
            self._on_trading_state(event)
        elif isinstance(event, FlattenEvent):
            self.note(event.ts_ns, "warn", f"flatten requested by {event.operator}")
        elif isinstance(event, SystemStatusEvent):
            self._on_component(event)
        elif isinstance(event, ExecutionReportEvent):
            self._on_report(event)
        elif isinstance(event, CandleEvent):
            self._pair(event.pair).add_candle(event, self._candles)
        else:
            self._on_signal(event)

    def _pair(self, pair: str) -> PairState:
        return self.pairs.setdefault(pair, PairState())

    def _on_feed(self, event: FeedStatsEvent) -> None:
        self.feed = event
        for pair, age in event.data_age_s:
            self._pair(pair).data_age_s = age

    def _on_trading_state(self, event: TradingStateChangedEvent) -> None:
        self.halted = event.halted
        self.halt_reason, self.halt_source = (
            (event.reason, event.source) if event.halted else ("", "")
        )
        self.reducing = event.cause if event.reducing else ""
        if event.halted:
            self.note(event.ts_ns, "bad", f"HALT ({event.source}): {event.reason}")
        elif event.reducing:
            self.note(event.ts_ns, "warn", f"REDUCING ({event.source}): {event.reason}")
        else:
            self.note(event.ts_ns, "good", f"resumed by {event.source}")

    def _on_component(self, event: SystemStatusEvent) -> None:
        before = self.components.get(event.component)
        self.components[event.component] = event.state
        if before is not event.state:
            level = "good" if event.state is ComponentState.CONNECTED else "warn"
            detail = f" ({event.detail})" if event.detail else ""
            self.note(event.ts_ns, level, f"{event.component}: {event.state.value}{detail}")

    def _on_report(self, event: ExecutionReportEvent) -> None:
        before = self.orders.get(event.client_order_id)
        if event.status.is_working:
            self.orders[event.client_order_id] = event
        else:
            self.orders.pop(event.client_order_id, None)
        if before is None or before.status is not event.status:
            level = {
                OrderStatus.FILLED: "good",
                OrderStatus.REJECTED: "bad",
                OrderStatus.ERROR: "bad",
            }.get(event.status, "info")
            price = event.avg_price or event.limit_price or event.trigger_price or ""
            extra = f" ({event.reason})" if event.reason else ""
            self.note(
                event.ts_ns,
                level,
                f"{event.pair} {event.side.value} {event.order_type.value} "
                f"{event.filled_qty}/{event.order_qty} @ {price} "
                f"{event.status.value}{extra}",
            )

    def _on_signal(self, event: Event) -> None:
        if isinstance(event, TradeSignalProposedEvent):
            kind = "exit" if event.is_exit else "entry"
            self.note(
                event.ts_ns,
                "info",
                f"{event.pair} signal {event.side.value} {kind} p_up={event.prob_up:.3f}",
            )
        elif isinstance(event, TradeSignalApprovedEvent):
            self.note(event.ts_ns, "good", f"{event.pair} approved {event.side.value} {event.qty}")
        elif isinstance(event, TradeSignalRejectedEvent):
            self.note(event.ts_ns, "warn", f"{event.pair} rejected: {event.reason}")

    def note(self, ts_ns: int, level: str, text: str) -> None:
        """Add a line to the event log (also used for the operator's own actions)."""
        self._seq += 1
        self.log.append(LogLine(self._seq, ts_ns, level, text))
        self.version += 1

    # --- derived views -----------------------------------------------------------------------

    @property
    def connection(self) -> ComponentState:
        """The market-data connection: the feed statistics' state, else the websocket's."""
        if self.feed is not None:
            return self.feed.state
        ws = [s for c, s in self.components.items() if c.startswith("kraken.ws")]
        return ws[0] if ws else ComponentState.STARTING

    def open_positions(self) -> int:
        snap = self.portfolio.snapshot if self.portfolio else None
        return sum(1 for p in snap.positions if p.qty) if snap else 0

    def working_entries(self) -> int:
        return sum(
            1 for o in self.orders.values() if o.order_type in (OrderType.LIMIT, OrderType.MARKET)
        )

    def protective(self, pair: str) -> tuple[Decimal | None, Decimal | None]:
        """The working stop-loss and take-profit trigger prices of ``pair``."""
        sl = tp = None
        for order in self.orders.values():
            if order.pair == pair and order.order_type is OrderType.STOP_LOSS:
                sl = order.trigger_price
            elif order.pair == pair and order.order_type is OrderType.TAKE_PROFIT:
                tp = order.trigger_price
        return sl, tp
