"""The paper venue: a local MatchingEngine fed with the live (or simulated) market data.

Paper trading runs the same strategy, risk, portfolio and ExecutionHandler code as live; only
the venue differs. Limit orders fill only when the market touches or crosses them, with
maker/taker fees, slippage and latency from configuration; stop-loss and take-profit orders
trigger as at the exchange. The venue keeps its own balances the way an exchange account does:
a buy that the free quote balance cannot pay for (open buy orders reserve theirs) and a sell
of more than the free base balance are refused, so paper results cannot spend money the
account does not have.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping
from decimal import Decimal

from gal_friday.bus import EventBus, Policy
from gal_friday.config import FeeSettings, PaperSettings
from gal_friday.events import (
    BookEvent,
    BookInvalidatedEvent,
    Event,
    OrderStatus,
    OrderType,
    Side,
    TradeEvent,
)
from gal_friday.execution.matching import MatchingEngine, OrderUpdate, to_report
from gal_friday.execution.venue import (
    OrderRejected,
    OrderRequest,
    ReportCallback,
    VenueFill,
    VenueOrder,
)

log = logging.getLogger(__name__)
_ZERO = Decimal(0)
_HUNDRED = Decimal(100)
_TERMINAL = frozenset(
    {
        OrderStatus.FILLED,
        OrderStatus.CANCELLED,
        OrderStatus.REJECTED,
        OrderStatus.EXPIRED,
        OrderStatus.ERROR,
    }
)
_TRIGGERED = frozenset({OrderType.STOP_LOSS, OrderType.TAKE_PROFIT})


class PaperVenue:
    """A TradingVenue backed by a MatchingEngine; market data arrives through the bus."""

    name = "paper"

    def __init__(
        self,
        settings: PaperSettings,
        fees: FeeSettings,
        *,
        quote: str = "USD",
        clock_ns: Callable[[], int] = time.time_ns,
    ) -> None:
        self.engine = MatchingEngine(
            fees.maker_pct,
            fees.taker_pct,
            latency_ns=int(settings.latency_ms * 1_000_000),
            slippage_bps=settings.slippage_bps,
            on_trigger=self._can_trigger,
        )
        self.taker_rate = fees.taker_pct / _HUNDRED
        self.quote = quote
        self.clock_ns = clock_ns
        self.balance: dict[str, Decimal] = {quote: Decimal(settings.initial_cash_usd)}
        self._orders: dict[str, OrderUpdate] = {}  # client order id -> latest update
        self._requests: dict[str, OrderRequest] = {}
        self._fills: list[VenueFill] = []
        self.books: dict[str, BookEvent] = {}  # pair -> the latest book with an ask
        self._now = 0
        self._on_report: ReportCallback | None = None

    def restore_account(self, balances: Mapping[str, Decimal]) -> None:
        """Carry the paper account on from an earlier run (its cash and holdings, as the
        audit store recorded them): an account lives only here, so without this a restart
        would sell what the portfolio still holds from an account that no longer has it."""
        self.balance = {asset: qty for asset, qty in balances.items() if qty}
        self.balance.setdefault(self.quote, _ZERO)

    def attach(self, bus: EventBus) -> None:
        """Receive the market data the engine matches against (never dropped), and the word
        that a pair's book is wrong (a checksum failure, a gap): nothing fills against it."""
        bus.subscribe(
            (BookEvent, TradeEvent, BookInvalidatedEvent),
            self.on_market,
            name="paper-venue",
            policy=Policy.BLOCK,
            maxsize=8192,
        )

    async def on_market(self, event: Event) -> None:
        await self._dispatch(self.on_market_now(event))

    def on_market_now(self, event: Event) -> list[OrderUpdate]:
        """The order updates one market event causes (synchronous, for the backtester)."""
        if isinstance(event, BookEvent):
            self._now = max(self._now, event.received_ts_ns)
            if event.asks:  # read as a Decimal only when an order needs it
                self.books[event.pair] = event
            return self._apply(self.engine.on_book(event))
        if isinstance(event, TradeEvent):
            self._now = max(self._now, event.received_ts_ns)
            return self._apply(self.engine.on_trade(event))
        if isinstance(event, BookInvalidatedEvent):
            self.books.pop(event.pair, None)
            self.engine.invalidate_book(event.pair)
        return []

    # --- TradingVenue ------------------------------------------------------------------------

    async def start(self, on_report: ReportCallback) -> None:
        self._on_report = on_report

    async def stop(self) -> None:
        self._on_report = None

    async def submit(self, order: OrderRequest) -> str:
        refusal = self._refusal(order)
        if refusal is not None:
            raise OrderRejected(refusal)
        self._requests[order.client_order_id] = order
        updates = self._apply(self.engine.submit(order, self._time()))
        mine = [u for u in updates if u.client_order_id == order.client_order_id]
        if mine and mine[0].status is OrderStatus.REJECTED and mine[0].exchange_order_id is None:
            raise OrderRejected(mine[0].reason or "rejected")
        await self._dispatch(updates)
        return self.engine.exchange_order_id(order.client_order_id) or ""

    async def cancel(self, client_order_id: str) -> None:
        await self._dispatch(self._apply(self.engine.cancel(client_order_id, self._time())))

    async def cancel_all(self) -> int:
        open_ids = [o.client_order_id for o in self.engine.open_orders()]
        for coid in open_ids:
            await self.cancel(coid)
        return len(open_ids)

    async def lookup(self, client_order_id: str) -> VenueOrder | None:
        request = self._requests.get(client_order_id)
        if request is None:
            return None
        return self._venue_order(request)

    async def open_orders(self) -> list[VenueOrder]:
        return [self._venue_order(r) for r in self.engine.open_orders()]

    async def balances(self) -> dict[str, Decimal]:
        return {asset: qty for asset, qty in self.balance.items() if qty}

    async def fills_since(self, ts_ns: int) -> list[VenueFill]:
        return [f for f in self._fills if f.ts_ns >= ts_ns]

    def forget_finished(self) -> list[str]:
        """Forget finished orders (``MatchingEngine.forget_finished``) here and in the engine;
        their client order ids. Long runs call it so that scans over open orders (the free
        balance of every buy) stay as short as the orders actually open. Fills are kept."""
        done = self.engine.forget_finished()
        for coid in done:
            self._orders.pop(coid, None)
            self._requests.pop(coid, None)
        return done

    # --- the account -------------------------------------------------------------------------

    def _time(self) -> int:
        self._now = max(self._now, self.clock_ns())
        return self._now

    def _base(self, pair: str) -> str:
        return pair.split("/")[0]

    def _free(self, asset: str) -> Decimal:
        """Balance minus what open orders have reserved (triggered orders reserve nothing)."""
        reserved = _ZERO
        for open_order in self.engine.open_orders():
            if open_order.type in _TRIGGERED:
                continue
            rest = open_order.qty - self._filled(open_order.client_order_id)
            if open_order.side is Side.SELL and self._base(open_order.pair) == asset:
                reserved += rest
            elif open_order.side is Side.BUY and asset == self.quote:
                reserved += rest * self._price(open_order) * (1 + self.taker_rate)
        return self.balance.get(asset, _ZERO) - reserved

    def _filled(self, client_order_id: str) -> Decimal:
        update = self._orders.get(client_order_id)
        return update.filled_qty if update else _ZERO

    def _price(self, order: OrderRequest) -> Decimal:
        if order.limit_price is not None:
            return order.limit_price
        return (self._ask(order.pair) or _ZERO) * Decimal("1.01")

    def _ask(self, pair: str) -> Decimal | None:
        book = self.books.get(pair)
        return book.best_ask() if book is not None else None

    def _refusal(self, order: OrderRequest) -> str | None:
        if order.type in _TRIGGERED:
            return None  # checked when triggered, as at Kraken
        if order.side is Side.BUY:
            price = self._price(order)  # a market buy's is 0 while there is no ask
            if not price:
                return "no market price yet"
            cost = order.qty * price * (1 + self.taker_rate)
            if cost > self._free(self.quote):
                return "insufficient funds"
        elif order.qty > self._free(self._base(order.pair)):
            return "insufficient funds"
        return None

    def _can_trigger(self, order: OrderRequest) -> str | None:
        if order.side is Side.SELL and order.qty > self._free(self._base(order.pair)):
            return "insufficient funds at trigger"
        return None

    def _apply(self, updates: list[OrderUpdate]) -> list[OrderUpdate]:
        """Book fills into the balances; remember each order's latest state."""
        for u in updates:
            self._orders[u.client_order_id] = u
            if not u.is_fill or u.last_fill_qty is None or u.last_fill_price is None:
                continue
            qty, notional, base = (
                u.last_fill_qty,
                u.last_fill_qty * u.last_fill_price,
                self._base(u.pair),
            )
            sign = 1 if u.side is Side.BUY else -1
            self.balance[base] = self.balance.get(base, _ZERO) + sign * qty
            self.balance[self.quote] -= sign * notional + u.fee
            self._fills.append(
                VenueFill(
                    f"P{len(self._fills) + 1}",
                    u.client_order_id,
                    u.exchange_order_id or "",
                    u.pair,
                    u.side,
                    qty,
                    u.last_fill_price,
                    u.fee,
                    u.ts_ns,
                )
            )
        return updates

    async def _dispatch(self, updates: list[OrderUpdate]) -> None:
        if self._on_report is None:
            return
        for update in updates:
            await self._on_report(to_report(update, fee_asset=self.quote))

    def _venue_order(self, request: OrderRequest) -> VenueOrder:
        update = self._orders.get(request.client_order_id)
        status = update.status if update else OrderStatus.SUBMITTED
        return VenueOrder(
            client_order_id=request.client_order_id,
            exchange_order_id=self.engine.exchange_order_id(request.client_order_id) or "",
            pair=request.pair,
            side=request.side,
            type=request.type,
            qty=request.qty,
            filled_qty=update.filled_qty if update else _ZERO,
            limit_price=request.limit_price,
            trigger_price=request.trigger_price,
            is_open=status not in _TERMINAL,
            status=str(status),
        )
