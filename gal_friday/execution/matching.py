"""Deterministic order matching against recorded or live market data (no asyncio, no bus).

Used by paper trading, the simulator's private API and the backtester. Time is a simulated
clock: every call carries ``ts_ns`` (market events carry ``received_ts_ns``), so the same inputs
always give the same outputs; the seeded RNG only names exchange order ids.

Fill rules
----------
* **Latency.** An order (or a cancel) takes effect ``latency_ns`` after it is sent. At that
  moment it sees the market as of that moment: the last book received at or before it. A market
  event stamped exactly at the effective time is applied first (the order sees it, and that
  event cannot fill the order as a maker); earlier pending actions are applied before the event.
  Every call first applies all actions due by its time, so it may return updates of other orders.
* **Taker** (market orders, and marketable limit orders on arrival): walk the opposite visible
  levels best first, taking ``min(remaining, level qty)`` from each, at the level price worsened
  by ``slippage_bps`` (buy: ``p * (1 + bps/10000)``, sell: ``p * (1 - bps/10000)``), never worse
  than the limit of a limit order. Taken quantity is removed from the engine's copy of the book
  until the next ``BookEvent`` replaces it, so two orders cannot take the same liquidity. A
  market order's remainder beyond the visible depth is **not** filled: it is cancelled with
  reason ``insufficient_depth`` (rejected with ``no_liquidity`` if nothing filled). A limit
  order's remainder rests at its limit. Taker fee.
* **Maker** (resting limit orders) fill at their limit price, never better, with the maker fee:
  - public trade through the limit (buy: trade price < limit): fill the whole remainder;
  - public trade at the limit (a touch): fill at most the trade's quantity, shared first come
    first served between resting orders at that price;
  - opposite best price through the limit (buy: best ask < limit): fill the whole remainder;
  - opposite best price equal to the limit: fill at most that level's quantity (consumed).
  No queue-ahead model by default: a touch fills us before any displayed quantity at our
  price. A backtest's venue (``fills_from_trades``) fills resting orders from trades only (a
  book through the limit fills nothing: the trades say what happened), and gives the orders
  ahead of ours ``queue_share`` of each trade at the limit (1: only a trade through fills).
* **Triggered** orders (STOP_LOSS, TAKE_PROFIT) rest unseen, reserving no liquidity, until the
  market reaches ``trigger_price``: a public trade price, or the best price on the side they
  would sell into (a sell looks at the best bid, a buy at the best ask); with
  ``triggers_from_trades`` the last trade price only, Kraken's default trigger. A sell stop triggers
  at or below its trigger, a sell take-profit at or above (a buy mirrors both). Triggered,
  they execute at once as market orders (taker, slippage, depth walk), in arrival order.
  ``on_trigger`` (optional) may refuse a triggering order, e.g. for want of funds; it is then
  cancelled with that reason.
* Fees are quote currency, ``notional * pct / 100``, exact (not rounded to the quote precision).
* Duplicate ``client_order_id`` (any id ever submitted and not forgotten with
  ``forget_finished``) is rejected; the original is untouched.
  Cancelling an unknown or finished order changes nothing and returns no update.
"""

from __future__ import annotations

import base64
import bisect
import random
from collections.abc import Callable
from dataclasses import dataclass, field
from decimal import Decimal

from gal_friday.events import (
    BookEvent,
    ExecutionReportEvent,
    OrderStatus,
    OrderType,
    Side,
    TradeEvent,
)
from gal_friday.execution.venue import OrderRequest

__all__ = ["MatchingEngine", "OrderRequest", "OrderUpdate", "to_report"]

_ZERO = Decimal(0)
_BPS = Decimal(10000)
_HUNDRED = Decimal(100)

_TERMINAL = frozenset({OrderStatus.FILLED, OrderStatus.CANCELLED, OrderStatus.REJECTED})
_TRIGGERED = frozenset({OrderType.STOP_LOSS, OrderType.TAKE_PROFIT})
TriggerCheck = Callable[[OrderRequest], str | None]


@dataclass(frozen=True, slots=True)
class OrderUpdate:
    """One state change of one order; ``fee`` and ``last_fill_*`` belong to this fill only."""

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
    cum_fee: Decimal
    liquidity: str | None  # "maker" / "taker" on fills, else None
    reason: str | None
    ts_ns: int

    @property
    def is_fill(self) -> bool:
        return self.last_fill_qty is not None


def to_report(update: OrderUpdate, *, fee_asset: str = "USD") -> ExecutionReportEvent:
    """The ``ExecutionReportEvent`` for one update."""
    return ExecutionReportEvent(
        client_order_id=update.client_order_id,
        exchange_order_id=update.exchange_order_id,
        signal_id=update.signal_id,
        pair=update.pair,
        side=update.side,
        order_type=update.order_type,
        status=update.status,
        order_qty=update.order_qty,
        filled_qty=update.filled_qty,
        avg_price=update.avg_price,
        last_fill_qty=update.last_fill_qty,
        last_fill_price=update.last_fill_price,
        fee=update.fee,
        fee_asset=fee_asset,
        reason=update.reason,
        ts_ns=update.ts_ns,
        liquidity=update.liquidity,
    )


@dataclass(slots=True)
class _Level:
    price: Decimal
    qty: Decimal


@dataclass(slots=True)
class _Book:
    bids: list[_Level]  # best (highest) first
    asks: list[_Level]  # best (lowest) first


@dataclass(slots=True)
class _OrderState:
    order: OrderRequest
    seq: int
    exchange_order_id: str
    status: OrderStatus = OrderStatus.SUBMITTED
    filled: Decimal = _ZERO
    notional: Decimal = _ZERO
    fees: Decimal = _ZERO

    @property
    def remaining(self) -> Decimal:
        return self.order.qty - self.filled

    @property
    def active(self) -> bool:
        return self.status in (OrderStatus.ACKNOWLEDGED, OrderStatus.PARTIALLY_FILLED)


@dataclass(order=True, slots=True)
class _Pending:
    due_ns: int
    seq: int
    kind: str = field(compare=False)  # "submit" | "cancel"
    client_order_id: str = field(compare=False)


class MatchingEngine:
    """Simulated exchange matching for any number of pairs; see the module doc for the rules."""

    def __init__(
        self,
        maker_fee_pct: Decimal,
        taker_fee_pct: Decimal,
        *,
        latency_ns: int = 0,
        slippage_bps: Decimal = _ZERO,
        rng_seed: int = 0,
        on_trigger: TriggerCheck | None = None,
    ) -> None:
        if latency_ns < 0:
            raise ValueError("latency_ns must be >= 0")
        if maker_fee_pct < 0 or taker_fee_pct < 0 or slippage_bps < 0:
            raise ValueError("fees and slippage must be >= 0")
        self.maker_fee_pct = Decimal(maker_fee_pct)
        self.taker_fee_pct = Decimal(taker_fee_pct)
        self.latency_ns = latency_ns
        self.slippage_bps = Decimal(slippage_bps)
        self._rng = random.Random(rng_seed)
        self._orders: dict[str, _OrderState] = {}
        self._resting: list[_OrderState] = []  # active limit orders, arrival order
        self._armed: list[_OrderState] = []  # triggered orders waiting for their price
        self._triggered: list[_OrderState] = []  # triggered while the pair had no valid book
        self._on_trigger = on_trigger
        self._pending: list[_Pending] = []  # sorted by (due_ns, seq)
        self._books: dict[str, _Book] = {}
        self._seq = 0
        self._now_ns = 0
        # a book that moved through a resting limit fills all of it (the market traded
        # through); a backtest on candles, whose one-level books stand for a share of the
        # candle's volume, caps such fills at the level's quantity instead
        self.crossing_fills_take_depth = False
        # a backtest's venue: resting limits follow the trades only (the book serves takers),
        # and ``queue_share`` of the quantity traded at a resting limit's price goes to the
        # orders ahead of it (1: a touch never fills, only a trade through); a candle
        # backtest's triggers follow the trades only too (its bid is a modelled spread below
        # the path, which a stop's trigger must not see)
        self.fills_from_trades = False
        self.triggers_from_trades = False
        self.queue_share = _ZERO
        self._last_trade: dict[str, Decimal] = {}

    # --- queries -------------------------------------------------------------------------

    def open_orders(self) -> list[OrderRequest]:
        """Orders sent and not finished (pending ones included), in arrival order."""
        states = sorted(
            (s for s in self._orders.values() if s.status not in _TERMINAL), key=lambda s: s.seq
        )
        return [s.order for s in states]

    def exchange_order_id(self, client_order_id: str) -> str | None:
        state = self._orders.get(client_order_id)
        return state.exchange_order_id if state else None

    def status(self, client_order_id: str) -> OrderStatus | None:
        state = self._orders.get(client_order_id)
        return state.status if state else None

    def in_flight(self) -> frozenset[str]:
        """Client order ids with a submit or cancel still travelling (latency)."""
        return frozenset(p.client_order_id for p in self._pending)

    def forget_finished(self) -> list[str]:
        """Drop finished orders that no pending action refers to; their client order ids.

        A long run (the backtester, a long paper session) would otherwise keep every order
        ever sent, and ``open_orders`` scans them all. A forgotten order is unknown from then
        on: ``status`` and ``exchange_order_id`` return None and its client order id is no
        longer refused as a duplicate, so call this only when ids are never reused (the
        ExecutionHandler's never are)."""
        pending = self.in_flight()
        done = [
            coid
            for coid, s in self._orders.items()
            if s.status in _TERMINAL and coid not in pending
        ]
        for coid in done:
            del self._orders[coid]
        return done

    # --- order entry ---------------------------------------------------------------------

    def submit(self, order: OrderRequest, ts_ns: int) -> list[OrderUpdate]:
        """Send an order at ``ts_ns``; it reaches the book at ``ts_ns + latency_ns``."""
        out = self._run_due(ts_ns, inclusive=True)
        if order.client_order_id in self._orders:
            out.append(self._reject_detached(order, "duplicate client_order_id", ts_ns))
            return out
        self._seq += 1
        state = _OrderState(order, self._seq, self._new_exchange_id())
        self._orders[order.client_order_id] = state
        reason = self._invalid(order)
        if reason is not None:
            state.status = OrderStatus.REJECTED
            out.append(self._update(state, ts_ns, reason=reason))
            return out
        self._schedule(ts_ns + self.latency_ns, "submit", order.client_order_id)
        out.extend(self._run_due(ts_ns, inclusive=True))
        return out

    def cancel(self, client_order_id: str, ts_ns: int) -> list[OrderUpdate]:
        """Request a cancel at ``ts_ns``; it takes effect at ``ts_ns + latency_ns``."""
        out = self._run_due(ts_ns, inclusive=True)
        if client_order_id in self._orders:
            self._schedule(ts_ns + self.latency_ns, "cancel", client_order_id)
            out.extend(self._run_due(ts_ns, inclusive=True))
        return out

    def advance(self, ts_ns: int) -> list[OrderUpdate]:
        """Move the clock to ``ts_ns`` without market data, applying due orders and cancels."""
        return self._run_due(ts_ns, inclusive=True)

    # --- market data ---------------------------------------------------------------------

    def on_book(self, book: BookEvent) -> list[OrderUpdate]:
        ts = book.received_ts_ns
        out = self._run_due(ts, inclusive=False)
        bids, asks = book.decimal_levels()
        self._books[book.pair] = _Book(
            [_Level(p, q) for p, q in bids if q > 0], [_Level(p, q) for p, q in asks if q > 0]
        )
        if self._resting and not self.fills_from_trades:
            out.extend(self._match_book(book.pair, ts))
        if self._triggered:
            out.extend(self._execute_triggered(book.pair, ts))
        if self._armed:
            out.extend(self._fire_triggers(book.pair, None, ts))
        out.extend(self._run_due(ts, inclusive=True))
        return out

    def invalidate_book(self, pair: str) -> None:
        """Forget ``pair``'s book until the next one arrives (the feed found it wrong): market
        orders find no liquidity and triggered orders wait for a valid book, instead of
        filling at prices the market may have left."""
        self._books.pop(pair, None)

    def on_trade(self, trade: TradeEvent) -> list[OrderUpdate]:
        ts = trade.received_ts_ns
        out = self._run_due(ts, inclusive=False)
        self._last_trade[trade.pair] = trade.price
        if self._resting:
            out.extend(self._match_trade(trade, ts))
        if self._armed:
            out.extend(self._fire_triggers(trade.pair, trade.price, ts))
        out.extend(self._run_due(ts, inclusive=True))
        return out

    def _match_trade(self, trade: TradeEvent, ts: int) -> list[OrderUpdate]:
        """Resting limits a public trade fills: what a trade can give is shared first come
        first served; at the limit what the queue ahead leaves, through it everything (or,
        capped by depth, the trade's quantity)."""
        out: list[OrderUpdate] = []
        available = trade.qty
        touch = trade.qty * (1 - self.queue_share)
        for state in list(self._resting):
            if state.order.pair != trade.pair or not state.active:
                continue
            limit = _limit(state)
            through = trade.price < limit if state.order.side is Side.BUY else trade.price > limit
            if through and not self.crossing_fills_take_depth:
                qty = state.remaining
            elif through and available > 0:
                qty = min(state.remaining, available)
                available -= qty
            elif trade.price == limit and min(touch, available) > 0:
                qty = min(state.remaining, touch, available)
                touch -= qty
                available -= qty
            else:
                continue
            out.append(self._fill(state, qty, limit, maker=True, ts_ns=ts))
        return out

    # --- internals -----------------------------------------------------------------------

    def _new_exchange_id(self) -> str:
        """Kraken's ``OXXXXX-XXXXX-XXXXXX`` shape: 80 random bits as 16 base32 characters
        (the alphabet ``A-Z2-7``), one RNG draw instead of sixteen ``choice`` calls."""
        chars = base64.b32encode(self._rng.getrandbits(80).to_bytes(10, "big")).decode()
        return f"O{chars[:5]}-{chars[5:10]}-{chars[10:]}"

    @staticmethod
    def _invalid(order: OrderRequest) -> str | None:
        if order.qty <= 0:
            return "qty must be > 0"
        if order.type is OrderType.LIMIT and (order.limit_price is None or order.limit_price <= 0):
            return "limit order needs a limit_price > 0"
        if order.type in _TRIGGERED and (order.trigger_price is None or order.trigger_price <= 0):
            return f"{order.type} order needs a trigger_price > 0"
        return None

    def _schedule(self, due_ns: int, kind: str, client_order_id: str) -> None:
        self._seq += 1
        bisect.insort(self._pending, _Pending(due_ns, self._seq, kind, client_order_id))

    def _run_due(self, ts_ns: int, *, inclusive: bool) -> list[OrderUpdate]:
        out: list[OrderUpdate] = []
        if not self._pending or self._pending[0].due_ns > ts_ns:  # nothing due: the usual
            if ts_ns > self._now_ns:
                self._now_ns = ts_ns
            return out
        while self._pending:
            head = self._pending[0]
            if head.due_ns > ts_ns or (not inclusive and head.due_ns == ts_ns):
                break
            self._pending.pop(0)
            self._now_ns = max(self._now_ns, head.due_ns)
            state = self._orders[head.client_order_id]
            if head.kind == "submit":
                out.extend(self._activate(state, head.due_ns))
            else:
                out.extend(self._cancel_now(state, head.due_ns))
        self._now_ns = max(self._now_ns, ts_ns)
        return out

    def _cancel_now(self, state: _OrderState, ts_ns: int) -> list[OrderUpdate]:
        if state.status in _TERMINAL:
            return []
        if state in self._resting:
            self._resting.remove(state)
        if state in self._armed:
            self._armed.remove(state)
        if state in self._triggered:
            self._triggered.remove(state)
        state.status = OrderStatus.CANCELLED
        return [self._update(state, ts_ns, reason="cancelled by client")]

    def _activate(self, state: _OrderState, ts_ns: int) -> list[OrderUpdate]:
        if state.status is not OrderStatus.SUBMITTED:
            return []  # cancelled while in flight
        order = state.order
        state.status = OrderStatus.ACKNOWLEDGED
        out = [self._update(state, ts_ns)]
        if order.type in _TRIGGERED:
            self._armed.append(state)
            return [*out, *self._fire_triggers(order.pair, None, ts_ns)]
        return [*out, *self._execute(state, ts_ns)]

    def _execute(self, state: _OrderState, ts_ns: int) -> list[OrderUpdate]:
        """Take liquidity now; a limit remainder rests, any other remainder is cancelled."""
        order = state.order
        book = self._books.get(order.pair)
        levels = (book.asks if order.side is Side.BUY else book.bids) if book else []
        out = self._take(state, levels, ts_ns)
        if state.status in _TERMINAL:
            return out
        if order.type is OrderType.LIMIT:
            self._resting.append(state)
        else:
            state.status = OrderStatus.CANCELLED if state.filled > 0 else OrderStatus.REJECTED
            reason = "insufficient_depth" if state.filled > 0 else "no_liquidity"
            out.append(self._update(state, ts_ns, reason=reason))
        return out

    def _fire_triggers(
        self, pair: str, trade_price: Decimal | None, ts_ns: int
    ) -> list[OrderUpdate]:
        """Execute the armed orders of ``pair`` whose trigger the market has reached."""
        out: list[OrderUpdate] = []
        book = self._books.get(pair)
        if book is None:  # no valid book: a trade still triggers, the execution waits for one
            for state in list(self._armed):
                if (
                    state.order.pair == pair
                    and trade_price is not None
                    and _triggers(state.order, trade_price)
                ):
                    self._armed.remove(state)
                    self._triggered.append(state)
            return out
        last = trade_price if trade_price is not None else self._last_trade.get(pair)
        for state in list(self._armed):
            order = state.order
            if order.pair != pair or state not in self._armed:
                continue
            if self.triggers_from_trades:  # the last trade price, Kraken's default trigger
                prices = [last] if last is not None else []
            else:
                sell = order.side is Side.SELL
                touch = book.bids if sell else book.asks
                prices = [
                    p for p in (trade_price, touch[0].price if touch else None) if p is not None
                ]
            if not any(_triggers(order, p) for p in prices):
                continue
            self._armed.remove(state)
            out.extend(self._execute_trigger(state, ts_ns))
        return out

    def _execute_triggered(self, pair: str, ts_ns: int) -> list[OrderUpdate]:
        """Orders a trade triggered while ``pair`` had no valid book, now that it has one."""
        ready = [s for s in self._triggered if s.order.pair == pair]
        self._triggered = [s for s in self._triggered if s.order.pair != pair]
        return [u for state in ready for u in self._execute_trigger(state, ts_ns)]

    def _execute_trigger(self, state: _OrderState, ts_ns: int) -> list[OrderUpdate]:
        refusal = self._on_trigger(state.order) if self._on_trigger else None
        if refusal is not None:
            state.status = OrderStatus.CANCELLED
            return [self._update(state, ts_ns, reason=refusal)]
        return self._execute(state, ts_ns)

    def _take(self, state: _OrderState, levels: list[_Level], ts_ns: int) -> list[OrderUpdate]:
        """Fill ``state`` as taker against ``levels`` (opposite side, best first)."""
        out: list[OrderUpdate] = []
        buy = state.order.side is Side.BUY
        limit = state.order.limit_price if state.order.type is OrderType.LIMIT else None
        slip = self.slippage_bps / _BPS
        while levels and state.remaining > 0:
            level = levels[0]
            if limit is not None and (level.price > limit if buy else level.price < limit):
                break
            price = level.price * (1 + slip) if buy else level.price * (1 - slip)
            if limit is not None:
                price = min(price, limit) if buy else max(price, limit)
            qty = min(state.remaining, level.qty)
            level.qty -= qty
            if level.qty <= 0:
                levels.pop(0)
            out.append(self._fill(state, qty, price, maker=False, ts_ns=ts_ns))
        return out

    def _match_book(self, pair: str, ts_ns: int) -> list[OrderUpdate]:
        book = self._books[pair]
        out: list[OrderUpdate] = []
        for state in list(self._resting):
            if state.order.pair != pair or not state.active:
                continue
            buy = state.order.side is Side.BUY
            levels = book.asks if buy else book.bids
            if not levels:
                continue
            limit = _limit(state)
            best = levels[0]
            crossed = best.price < limit if buy else best.price > limit
            if crossed and not self.crossing_fills_take_depth:
                qty = state.remaining
            elif crossed or best.price == limit:
                qty = min(state.remaining, best.qty)
                best.qty -= qty
                if best.qty <= 0:
                    levels.pop(0)
            else:
                continue
            out.append(self._fill(state, qty, limit, maker=True, ts_ns=ts_ns))
        return out

    def _fill(
        self, state: _OrderState, qty: Decimal, price: Decimal, *, maker: bool, ts_ns: int
    ) -> OrderUpdate:
        pct = self.maker_fee_pct if maker else self.taker_fee_pct
        fee = qty * price * pct / _HUNDRED
        state.filled += qty
        state.notional += qty * price
        state.fees += fee
        if state.remaining <= 0:
            state.status = OrderStatus.FILLED
            if state in self._resting:
                self._resting.remove(state)
        else:
            state.status = OrderStatus.PARTIALLY_FILLED
        return self._update(
            state,
            ts_ns,
            last_qty=qty,
            last_price=price,
            fee=fee,
            liquidity="maker" if maker else "taker",
        )

    def _update(
        self,
        state: _OrderState,
        ts_ns: int,
        *,
        reason: str | None = None,
        last_qty: Decimal | None = None,
        last_price: Decimal | None = None,
        fee: Decimal = _ZERO,
        liquidity: str | None = None,
    ) -> OrderUpdate:
        o = state.order
        return OrderUpdate(
            client_order_id=o.client_order_id,
            exchange_order_id=state.exchange_order_id,
            signal_id=o.signal_id,
            pair=o.pair,
            side=o.side,
            order_type=o.type,
            status=state.status,
            order_qty=o.qty,
            filled_qty=state.filled,
            avg_price=state.notional / state.filled if state.filled > 0 else None,
            last_fill_qty=last_qty,
            last_fill_price=last_price,
            fee=fee,
            cum_fee=state.fees,
            liquidity=liquidity,
            reason=reason,
            ts_ns=ts_ns,
        )

    @staticmethod
    def _reject_detached(order: OrderRequest, reason: str, ts_ns: int) -> OrderUpdate:
        return OrderUpdate(
            client_order_id=order.client_order_id,
            exchange_order_id=None,
            signal_id=order.signal_id,
            pair=order.pair,
            side=order.side,
            order_type=order.type,
            status=OrderStatus.REJECTED,
            order_qty=order.qty,
            filled_qty=_ZERO,
            avg_price=None,
            last_fill_qty=None,
            last_fill_price=None,
            fee=_ZERO,
            cum_fee=_ZERO,
            liquidity=None,
            reason=reason,
            ts_ns=ts_ns,
        )


def _limit(state: _OrderState) -> Decimal:
    price = state.order.limit_price
    assert price is not None  # only limit orders rest
    return price


def _triggers(order: OrderRequest, price: Decimal) -> bool:
    """Whether ``price`` reaches a triggered order's trigger (see the module doc)."""
    trigger = order.trigger_price
    assert trigger is not None  # checked on submit
    falling = (order.type is OrderType.STOP_LOSS) == (order.side is Side.SELL)
    return price <= trigger if falling else price >= trigger
