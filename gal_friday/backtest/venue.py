"""The backtest's plumbing around the live modules: a direct bus and a watched paper venue.

``DirectBus`` is an ``EventBus`` whose ``publish`` hands the event to each subscriber at once,
in subscription order, and returns when all of them have handled it (events a handler
publishes are delivered before ``publish`` returns, depth first). There are no queues and no
worker tasks, so a run is deterministic and an event costs a function call; a handler that
raises stops the backtest instead of being logged and skipped, since a result computed past a
failure would be wrong.

``BacktestVenue`` is the paper venue (``PaperVenue`` over the ``MatchingEngine``) plus what the
backtest loop needs to skip quiet candles: per pair, the prices at which a working order could
fill or trigger and the times at which a sent order or cancel takes effect. It also forgets
finished orders, which the engine and the handler otherwise keep for ever (their scans over
every order ever sent would make long runs slow down super-linearly), and says what spread a
taker fill paid (the report's spread cost) from the paper venue's latest book.

Its matching engine fills resting limits and triggers stops from trades only
(``fills_from_trades``): a resting buy fills when the price trades below it, or, at its price,
after ``backtest.queue_share`` of the quantity traded there; the book (bid and ask) is what
market orders, triggered stops and crossing limits take.
"""

from __future__ import annotations

import inspect
import math
from collections.abc import Callable, Iterable
from decimal import Decimal

from gal_friday.bus import EventBus, Handler, Policy, Subscription
from gal_friday.config import FeeSettings, PaperSettings
from gal_friday.domain import to_decimal
from gal_friday.events import Event, OrderStatus, OrderType, Side
from gal_friday.execution.handler import ExecutionHandler
from gal_friday.execution.matching import OrderUpdate
from gal_friday.execution.paper import PaperVenue
from gal_friday.execution.venue import OrderRequest

_TERMINAL = frozenset(
    {
        OrderStatus.FILLED,
        OrderStatus.CANCELLED,
        OrderStatus.REJECTED,
        OrderStatus.EXPIRED,
        OrderStatus.ERROR,
    }
)
INF = math.inf


class DirectBus(EventBus):
    """Synchronous, in-order delivery for a simulated run (see the module doc)."""

    def __init__(self) -> None:
        super().__init__()
        self._subscribers: list[tuple[tuple[type[Event], ...], Handler, bool]] = []
        self._direct: dict[type[Event], tuple[tuple[Handler, bool], ...]] = {}
        self.published = 0

    def subscribe(
        self,
        types: type[Event] | Iterable[type[Event]],
        handler: Handler,
        *,
        name: str,
        policy: Policy = Policy.BLOCK,
        maxsize: int = 4096,
    ) -> Subscription:
        wanted = (types,) if isinstance(types, type) else tuple(types)
        sub = super().subscribe(wanted, handler, name=name, policy=policy, maxsize=maxsize)
        self._subscribers.append((wanted, handler, inspect.iscoroutinefunction(handler)))
        self._direct.clear()
        return sub

    async def publish(self, event: Event) -> None:
        handlers = self._direct.get(type(event))
        if handlers is None:
            handlers = self._direct[type(event)] = tuple(
                (h, is_async)
                for types, h, is_async in self._subscribers
                if issubclass(type(event), types)
            )
        self.published += 1
        for handler, is_async in handlers:
            result = handler(event)
            if is_async:
                await result  # type: ignore[misc]


class BacktestVenue(PaperVenue):
    """A ``PaperVenue`` that knows, per pair, what the next candle must reach to matter."""

    def __init__(
        self,
        settings: PaperSettings,
        fees: FeeSettings,
        *,
        clock_ns: Callable[[], int],
        queue_share: Decimal = Decimal(1),
    ) -> None:
        super().__init__(settings, fees, clock_ns=clock_ns)
        self.engine.fills_from_trades = True
        self.engine.queue_share = queue_share
        self.latency_ns = int(settings.latency_ms * 1_000_000)
        self.working: dict[str, dict[str, OrderRequest]] = {}  # pair -> coid -> request
        self.due: dict[str, list[int]] = {}  # pair -> times a sent order / cancel takes effect
        self.submitted = 0

    def half_spread(self, pair: str) -> Decimal:
        """Half the latest book's spread (price units): what a taker paid over the mid."""
        book = self.books.get(pair)
        if book is None or not (book.bids and book.asks):
            return Decimal(0)
        return to_decimal(book.asks[0][0] - book.bids[0][0], book.price_precision) / 2

    async def submit(self, order: OrderRequest) -> str:
        self.submitted += 1
        self._note_due(order.pair)
        self.working.setdefault(order.pair, {})[order.client_order_id] = order
        try:
            venue_id = await super().submit(order)
        except Exception:
            self.working[order.pair].pop(order.client_order_id, None)  # refused
            raise
        self._drop_if_finished(order.client_order_id, order.pair)
        return venue_id

    async def cancel(self, client_order_id: str) -> None:
        request = self._requests.get(client_order_id)
        if request is not None:
            self._note_due(request.pair)
        await super().cancel(client_order_id)

    async def advance(self, ts_ns: int) -> None:
        """Let simulated time pass without market data: orders and cancels due by ``ts_ns``
        take effect against the books as they are."""
        self._now = max(self._now, ts_ns)
        await self._dispatch(self._apply(self.engine.advance(ts_ns)))

    def _note_due(self, pair: str) -> None:
        if self.latency_ns:
            self.due.setdefault(pair, []).append(self._time() + self.latency_ns)

    def _apply(self, updates: list[OrderUpdate]) -> list[OrderUpdate]:
        out = super()._apply(updates)
        for u in updates:
            if u.status in _TERMINAL:
                self.working.get(u.pair, {}).pop(u.client_order_id, None)
        return out

    def _drop_if_finished(self, client_order_id: str, pair: str) -> None:
        update = self._orders.get(client_order_id)  # None: still in flight (latency)
        if update is not None and update.status in _TERMINAL:
            self.working.get(pair, {}).pop(client_order_id, None)

    def watch(self, pair: str, now_ns: int) -> tuple[float, float, float]:
        """``(low_watch, high_watch, time_watch)``: a candle matters to this pair's orders if
        its low reaches ``low_watch``, its high reaches ``high_watch`` or it ends at or after
        ``time_watch`` (an order or cancel in flight takes effect)."""
        lo, hi, when = -INF, INF, INF
        due = self.due.get(pair)
        if due:
            if min(due) <= now_ns:
                due = self.due[pair] = [t for t in due if t > now_ns]
            if due:
                when = float(min(due))
        working = self.working.get(pair)
        if not working:
            return lo, hi, when
        for order in working.values():
            price = order.limit_price if order.type is OrderType.LIMIT else order.trigger_price
            if price is None:  # a market order still working: feed the market until it ends
                return lo, hi, -INF
            falls = (order.type is OrderType.STOP_LOSS) == (order.side is Side.SELL)
            if order.type is OrderType.LIMIT:
                falls = order.side is Side.BUY
            if falls:
                lo = max(lo, float(price))
            else:
                hi = min(hi, float(price))
        return lo, hi, when

    def prices(self, pair: str) -> list[Decimal]:
        """Limit and trigger prices of the pair's working orders (intrabar waypoints)."""
        out = []
        for order in self.working.get(pair, {}).values():
            price = order.limit_price if order.type is OrderType.LIMIT else order.trigger_price
            if price is not None:
                out.append(price)
        return out

    def forget_finished_everywhere(self, handler: ExecutionHandler) -> int:
        """Drop finished orders from the engine, this venue and the handler; returns how many
        left the engine. Orders with an action still in flight are kept everywhere, and the
        handler keeps a finished half of a stop / target pair while the other half works:
        something may still look them up."""
        in_flight = self.engine.in_flight()
        done = self.forget_finished()
        handler.forget_finished(keep=in_flight)
        return len(done)
