"""Portfolio accounting [FR-701..706]: cash, reserved cash, positions, P&L, equity, drawdowns.

State changes only through :class:`~gal_friday.events.ExecutionReportEvent` (fills, order
lifecycle) and, for valuation, :class:`~gal_friday.events.BookEvent` marks (the mid). The
RiskManager reads :meth:`PortfolioManager.snapshot` synchronously; it is an immutable
:class:`~gal_friday.domain.PortfolioSnapshot`, cached until the state changes.

Accounting rules
----------------
* Money is ``Decimal`` in the quote currency (USD). A buy fill of ``q`` at ``p`` with fee ``f``
  costs ``q*p + f`` cash; a sell fill yields ``q*p - f``.
* Fills are idempotent: per ``client_order_id`` the cumulative ``filled_qty`` already booked is
  remembered, and only a report whose ``filled_qty`` exceeds it books a fill, of exactly the
  increase. Normally the increase equals ``last_fill_qty`` at ``last_fill_price``; if reports
  were missed, the price of the increase is derived from the cumulative ``avg_price`` (and the
  event is logged). Repeated or out-of-order reports book nothing.
* ``avg_entry`` excludes fees (as ``Position`` documents). Buy fees are *attributed to the
  position*: held as the position's entry fees and realised pro rata to the quantity sold.
  Realised P&L of a sell of ``q`` = ``(sell price - avg_entry) * q - sell fee - q/qty * entry
  fees``. So ``realised_pnl`` (and the loss streak) covers both legs of a round trip, while
  ``equity`` (cash-based) reflects every fee the moment it is paid. ``fees_paid`` counts every
  fee when paid.
* A round trip runs from a flat position to flat again; at close, a net loss (fees included)
  increments ``consecutive_losses``, anything else (>= 0) resets it to 0.
* Free cash = cash - reserve; the reserve of an open buy order is its remaining quantity times
  its limit price (times ``1 + reserve_fee_rate``). The limit price comes from
  :meth:`PortfolioManager.note_order_price` or from the ``TradeSignalApprovedEvent`` whose
  ``signal_id`` the report carries; for a market order (or an unknown price) the latest best
  ask is used. Submitted, acknowledged and partially filled orders reserve; filled, cancelled,
  rejected, expired and error reports release.
* Equity = cash + sum(qty * mark). Peak equity is the running maximum. Day-start and
  week-start equity are the equity just before the first event stamped in a new UTC day / ISO
  week (Monday 00:00 UTC); time is taken from event timestamps only, never the wall clock.
* Fees in another asset than the quote are converted at the fill price and logged (the
  exchange quantity then differs; reconciliation corrects it).
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from decimal import Decimal

from gal_friday.bus import EventBus, Policy, Subscription
from gal_friday.domain import PortfolioMemory, PortfolioSnapshot, Position
from gal_friday.events import (
    BookEvent,
    Event,
    ExecutionReportEvent,
    OrderStatus,
    OrderType,
    ReconciliationEvent,
    Side,
    TradeSignalApprovedEvent,
)

log = logging.getLogger(__name__)

ZERO = Decimal(0)
_NS_PER_DAY = 86_400 * 1_000_000_000
_OPEN_STATUSES = frozenset(
    {OrderStatus.SUBMITTED, OrderStatus.ACKNOWLEDGED, OrderStatus.PARTIALLY_FILLED}
)


def utc_day(ts_ns: int) -> int:
    """Days since the epoch (UTC) of ``ts_ns``."""
    return ts_ns // _NS_PER_DAY


def utc_week(ts_ns: int) -> int:
    """Weeks since the epoch, weeks starting Monday 00:00 UTC (1970-01-01 was a Thursday)."""
    return (utc_day(ts_ns) + 3) // 7


@dataclass(frozen=True, slots=True)
class OpenOrder:
    """An order the exchange reports as open (for reconciliation)."""

    client_order_id: str
    pair: str
    side: Side
    remaining_qty: Decimal
    limit_price: Decimal | None


@dataclass(frozen=True, slots=True)
class Discrepancy:
    """One difference between the exchange's view and ours, found by :meth:`reconcile`."""

    kind: str  # "balance" | "unknown_open_order" | "missing_open_order"
    key: str  # asset name or client order id
    internal: Decimal
    exchange: Decimal


@dataclass(slots=True)
class _Holding:
    qty: Decimal
    avg_entry: Decimal
    entry_fees: Decimal  # buy fees attributed to the open quantity, not yet realised
    opened_ts_ns: int
    trip_pnl: Decimal  # realised so far in this round trip


@dataclass(slots=True)
class _Order:
    pair: str
    side: Side
    order_qty: Decimal
    booked_qty: Decimal  # cumulative filled qty already applied
    booked_notional: Decimal  # sum of booked qty * price (to derive prices of missed fills)
    limit_price: Decimal | None
    order_type: OrderType
    open: bool


class PortfolioManager:
    """Books fills and marks into the portfolio and serves consistent snapshots."""

    def __init__(
        self,
        initial_cash: Decimal,
        *,
        pairs: Iterable[str] = ("XRP/USD", "DOGE/USD"),
        quote: str = "USD",
        start_ts_ns: int = 0,
        reserve_fee_rate: Decimal = ZERO,
        balance_tolerance: Decimal = Decimal("1e-8"),
        bus: EventBus | None = None,
    ) -> None:
        self._bus = bus
        self.quote = quote
        self.pairs = tuple(pairs)
        self._base_of = {p: p.split("/")[0] for p in self.pairs}
        self._pair_of_base = {b: p for p, b in self._base_of.items()}
        self.reserve_fee_rate = reserve_fee_rate
        self.balance_tolerance = balance_tolerance

        self._cash = Decimal(initial_cash)
        self._holdings: dict[str, _Holding] = {}
        self._marks: dict[str, Decimal] = {}
        self._asks: dict[str, Decimal] = {}
        self._orders: dict[str, _Order] = {}
        self._open_ids: set[str] = set()  # keeps reserve and snapshot O(open orders)
        self._signal_prices: dict[str, Decimal] = {}
        self._order_prices: dict[str, Decimal] = {}
        self._realised = ZERO
        self._fees = ZERO
        self._losses = 0

        self._ts_ns = start_ts_ns
        equity = self._cash
        self._peak = equity
        self._day_start = equity
        self._week_start = equity
        self._day = utc_day(start_ts_ns)
        self._week = utc_week(start_ts_ns)
        self._snapshot: PortfolioSnapshot | None = None
        self.duplicates = 0  # reports that booked nothing because already seen

    # --- restart ---------------------------------------------------------------------------

    def restore(self, memory: PortfolioMemory, *, cash: bool = False) -> None:
        """Carry on from the previous run (read from the audit store) before the first event:
        its open round trips (entry price, entry fees, P&L so far), peak equity, the day's and
        the week's start equity, realised P&L, fees and the loss counter, so a restart resets
        no risk limit. The clock resumes at the last snapshot's time, so a restart in a later
        UTC day or week rolls those baselines exactly as a run that never stopped would.
        ``cash`` takes the last snapshot's cash too (paper trading, whose account lives only
        here); a live run keeps the exchange's balance it was built with."""
        for trip in memory.trips:
            if trip.qty > 0:
                self._holdings[trip.pair] = _Holding(
                    trip.qty, trip.avg_entry, trip.entry_fees, trip.opened_ts_ns, trip.pnl
                )
        self._losses = memory.consecutive_losses
        last = memory.last
        if last is not None:
            if cash:
                self._cash = last.cash
            self._realised, self._fees = last.realised_pnl, last.fees_paid
            self._ts_ns = max(self._ts_ns, last.ts_ns)
            self._day, self._week = utc_day(self._ts_ns), utc_week(self._ts_ns)
            self._day_start, self._week_start = last.day_start_equity, last.week_start_equity
            self._peak = max(last.peak_equity, self.equity())
        log.info(
            "portfolio carried on from the store",
            extra={
                "open_trips": [t.pair for t in memory.trips],
                "peak_equity": str(self._peak),
                "day_start_equity": str(self._day_start),
                "week_start_equity": str(self._week_start),
                "consecutive_losses": self._losses,
            },
        )
        self._snapshot = None

    # --- reading -----------------------------------------------------------------------

    @property
    def cash(self) -> Decimal:
        return self._cash

    @property
    def reserved(self) -> Decimal:
        total = ZERO
        for coid in self._open_ids:
            order = self._orders[coid]
            if order.side is Side.BUY:
                total += self._reserve_of(order)
        return total

    def equity(self) -> Decimal:
        total = self._cash
        for pair, h in self._holdings.items():
            total += h.qty * self._mark_of(pair, h)
        return total

    def unrealised_pnl(self) -> Decimal:
        """Mark-to-market of open quantity against ``avg_entry`` (entry fees not deducted)."""
        return sum(
            ((self._mark_of(p, h) - h.avg_entry) * h.qty for p, h in self._holdings.items()), ZERO
        )

    def snapshot(self) -> PortfolioSnapshot:
        """The current state as one immutable value (cached until the next change)."""
        snap = self._snapshot
        if snap is None:
            positions = tuple(
                Position(p, h.qty, h.avg_entry, self._mark_of(p, h), h.opened_ts_ns)
                for p, h in self._holdings.items()
            )
            cash = self._cash
            snap = PortfolioSnapshot(
                ts_ns=self._ts_ns,
                cash=cash,
                free_cash=cash - self.reserved,
                positions=positions,
                equity=cash + sum((pos.value for pos in positions), ZERO),
                peak_equity=self._peak,
                day_start_equity=self._day_start,
                week_start_equity=self._week_start,
                realised_pnl=self._realised,
                fees_paid=self._fees,
                consecutive_losses=self._losses,
            )
            self._snapshot = snap
        return snap

    # --- bus --------------------------------------------------------------------------

    def attach(self, bus: EventBus | None = None, *, name: str = "portfolio") -> Subscription:
        """Subscribe (BLOCK: nothing dropped) to execution reports, books and approvals, on
        ``bus`` or the one given at construction."""
        bus = bus or self._bus
        if bus is None:
            raise ValueError("PortfolioManager.attach needs a bus")
        return bus.subscribe(
            (ExecutionReportEvent, BookEvent, TradeSignalApprovedEvent, ReconciliationEvent),
            self.on_event,
            name=name,
            policy=Policy.BLOCK,
        )

    async def start(self) -> None:
        """Nothing of its own to run: the portfolio only answers events and reads."""

    async def stop(self) -> None:
        """Nothing to stop (see :meth:`start`)."""

    def on_event(self, event: Event) -> None:
        if isinstance(event, BookEvent):
            self.on_book(event)
        elif isinstance(event, ExecutionReportEvent):
            self.on_execution_report(event)
        elif isinstance(event, TradeSignalApprovedEvent) and event.limit_price is not None:
            self._signal_prices[event.signal_id] = event.limit_price
        elif isinstance(event, ReconciliationEvent):
            self.reconcile(
                dict(event.balances),
                [
                    OpenOrder(o.client_order_id, o.pair, o.side, o.remaining_qty, o.limit_price)
                    for o in event.open_orders
                ],
                ts_ns=event.ts_ns,
                entry_prices=dict(event.entry_prices),
            )

    def note_order_price(self, client_order_id: str, limit_price: Decimal) -> None:
        """Tell the portfolio an order's limit price (reports do not carry it)."""
        self._order_prices[client_order_id] = limit_price
        order = self._orders.get(client_order_id)
        if order is not None:
            order.limit_price = limit_price
            self._snapshot = None

    # --- marks ------------------------------------------------------------------------

    def on_book(self, event: BookEvent) -> None:
        self._advance(event.received_ts_ns)
        ask = event.best_ask()
        if ask is not None:
            self._asks[event.pair] = ask
        mid = event.mid()
        if mid is None or self._marks.get(event.pair) == mid:
            return
        self._marks[event.pair] = mid
        if event.pair in self._holdings:
            self._changed()
        elif any(
            self._orders[c].pair == event.pair and self._orders[c].limit_price is None
            for c in self._open_ids
        ):
            self._snapshot = None  # market-order reserve follows the ask

    def set_mark(self, pair: str, price: Decimal, ts_ns: int) -> None:
        """Value ``pair`` at ``price`` (e.g. from candles in a backtest)."""
        self._advance(ts_ns)
        self._marks[pair] = price
        self._changed()

    # --- execution reports ----------------------------------------------------------------

    def on_execution_report(self, r: ExecutionReportEvent) -> None:
        self._advance(r.ts_ns)
        order = self._orders.get(r.client_order_id)
        if order is None:
            price = self._order_prices.get(r.client_order_id)
            if price is None and r.signal_id is not None:
                price = self._signal_prices.get(r.signal_id)
            order = _Order(r.pair, r.side, r.order_qty, ZERO, ZERO, price, r.order_type, True)
            self._orders[r.client_order_id] = order
            self._open_ids.add(r.client_order_id)
        elif r.order_qty != order.order_qty and r.order_qty > 0:
            order.order_qty = r.order_qty  # amended

        delta = r.filled_qty - order.booked_qty
        if delta > 0:
            price = self._fill_price(r, order, delta)
            fee = self._fee_in_quote(r, price)
            if order.side is Side.BUY:
                self._book_buy(r.pair, delta, price, fee, r.ts_ns)
            else:
                self._book_sell(r.pair, delta, price, fee)
            order.booked_qty = r.filled_qty
            order.booked_notional += delta * price
        elif r.last_fill_qty:
            self.duplicates += 1
            log.debug(
                "duplicate fill report ignored",
                extra={
                    "client_order_id": r.client_order_id,
                    "filled_qty": str(r.filled_qty),
                    "booked_qty": str(order.booked_qty),
                },
            )

        was_open = order.open
        self._set_open(
            r.client_order_id,
            order,
            r.status in _OPEN_STATUSES and order.booked_qty < order.order_qty,
        )
        if not order.open:
            self._signal_prices.pop(r.signal_id or "", None)
            self._order_prices.pop(r.client_order_id, None)
        if was_open != order.open or delta > 0:
            self._changed()

    def _fill_price(self, r: ExecutionReportEvent, order: _Order, delta: Decimal) -> Decimal:
        if r.last_fill_qty == delta and r.last_fill_price is not None:
            return r.last_fill_price
        if r.avg_price is not None:
            price = (r.avg_price * r.filled_qty - order.booked_notional) / delta
        elif r.last_fill_price is not None:
            price = r.last_fill_price
        else:
            raise ValueError(f"fill of {r.client_order_id} carries no price")
        log.warning(
            "fill quantity gap; price derived from the cumulative report",
            extra={
                "client_order_id": r.client_order_id,
                "delta": str(delta),
                "last_fill_qty": str(r.last_fill_qty),
                "price": str(price),
            },
        )
        return price

    def _fee_in_quote(self, r: ExecutionReportEvent, price: Decimal) -> Decimal:
        if not r.fee or r.fee_asset in (self.quote, ""):
            return r.fee
        fee = r.fee * price
        log.warning(
            "fee not in the quote currency; converted at the fill price",
            extra={
                "client_order_id": r.client_order_id,
                "fee": str(r.fee),
                "fee_asset": r.fee_asset,
                "fee_quote": str(fee),
            },
        )
        return fee

    def _book_buy(self, pair: str, qty: Decimal, price: Decimal, fee: Decimal, ts: int) -> None:
        self._cash -= qty * price + fee
        self._fees += fee
        h = self._holdings.get(pair)
        if h is None:
            self._holdings[pair] = _Holding(qty, price, fee, ts, ZERO)
            return
        new_qty = h.qty + qty
        h.avg_entry = (h.avg_entry * h.qty + price * qty) / new_qty
        h.qty = new_qty
        h.entry_fees += fee

    def _book_sell(self, pair: str, qty: Decimal, price: Decimal, fee: Decimal) -> None:
        self._cash += qty * price - fee
        self._fees += fee
        h = self._holdings.get(pair)
        if h is None or qty > h.qty:
            log.error(
                "sell exceeds the position; realising only the held quantity",
                extra={"pair": pair, "sell_qty": str(qty), "held_qty": str(h.qty if h else ZERO)},
            )
        if h is None:
            self._realised -= fee
            return
        closed = min(qty, h.qty)
        entry_fee = h.entry_fees if closed == h.qty else h.entry_fees * closed / h.qty
        # proceeds of any excess over the holding are not P&L we can attribute; only fees are
        pnl = (price - h.avg_entry) * closed - fee - entry_fee
        self._realised += pnl
        h.trip_pnl += pnl
        h.entry_fees -= entry_fee
        h.qty -= closed
        if h.qty <= 0:
            self._close(pair, h)

    def _close(self, pair: str, h: _Holding) -> None:
        del self._holdings[pair]
        if h.trip_pnl < 0:
            self._losses += 1
        else:
            self._losses = 0
        if log.isEnabledFor(logging.INFO):
            log.info(
                "round trip closed",
                extra={"pair": pair, "pnl": str(h.trip_pnl), "consecutive_losses": self._losses},
            )

    # --- reconciliation -------------------------------------------------------------------

    def reconcile(
        self,
        balances: Mapping[str, Decimal],
        open_orders: Iterable[OpenOrder] | None = None,
        *,
        ts_ns: int | None = None,
        entry_prices: Mapping[str, Decimal] | None = None,
    ) -> list[Discrepancy]:
        """Compare exchange balances (and open orders, when given) with internal state.

        Every difference beyond ``balance_tolerance`` is logged and returned, and the internal
        state is set to the exchange's: cash, position quantities (a position that appears is
        valued at entry = current mark; one that vanishes is dropped without P&L), and open-order
        reserves (orders the exchange no longer lists are closed; unknown open orders are
        adopted). Assets of pairs we do not trade are ignored.
        """
        if ts_ns is not None:
            self._advance(ts_ns)
        diffs: list[Discrepancy] = []
        tol = self.balance_tolerance

        exchange_cash = balances.get(self.quote)
        if exchange_cash is not None and abs(exchange_cash - self._cash) > tol:
            diffs.append(Discrepancy("balance", self.quote, self._cash, exchange_cash))
            self._cash = exchange_cash

        for base, pair in self._pair_of_base.items():
            h = self._holdings.get(pair)
            internal = h.qty if h else ZERO
            exchange = balances.get(base, ZERO)
            if abs(exchange - internal) <= tol:
                continue
            diffs.append(Discrepancy("balance", base, internal, exchange))
            if exchange <= 0:
                self._holdings.pop(pair, None)
            elif h is None:
                mark = self._marks.get(pair, ZERO)
                entry = (entry_prices or {}).get(pair) or mark  # recorded entry, else the mark
                self._holdings[pair] = _Holding(exchange, entry, ZERO, self._ts_ns, ZERO)
            else:
                if exchange < h.qty:
                    h.entry_fees = h.entry_fees * exchange / h.qty
                h.qty = exchange

        if open_orders is not None:
            listed = {o.client_order_id: o for o in open_orders}
            for coid in sorted(self._open_ids - listed.keys()):
                order = self._orders[coid]
                remaining = order.order_qty - order.booked_qty
                diffs.append(Discrepancy("missing_open_order", coid, remaining, ZERO))
                self._set_open(coid, order, False)
            for coid, o in listed.items():
                known = self._orders.get(coid)
                if known is not None and known.open:
                    continue
                diffs.append(Discrepancy("unknown_open_order", coid, ZERO, o.remaining_qty))
                self._orders[coid] = _Order(
                    o.pair,
                    o.side,
                    o.remaining_qty,
                    ZERO,
                    ZERO,
                    o.limit_price,
                    OrderType.LIMIT if o.limit_price is not None else OrderType.MARKET,
                    True,
                )
                self._open_ids.add(coid)

        for d in diffs:
            log.warning(
                "reconciliation difference corrected",
                extra={
                    "kind": d.kind,
                    "key": d.key,
                    "internal": str(d.internal),
                    "exchange": str(d.exchange),
                },
            )
        if diffs:
            self._changed()
        else:
            log.info("reconciliation clean", extra={"assets": sorted(balances)})
        return diffs

    # --- internals ------------------------------------------------------------------------

    def _set_open(self, coid: str, order: _Order, is_open: bool) -> None:
        order.open = is_open
        if is_open:
            self._open_ids.add(coid)
        else:
            self._open_ids.discard(coid)

    def _mark_of(self, pair: str, h: _Holding) -> Decimal:
        return self._marks.get(pair, h.avg_entry)

    def _reserve_of(self, order: _Order) -> Decimal:
        remaining = order.order_qty - order.booked_qty
        if remaining <= 0:
            return ZERO
        price = order.limit_price
        if price is None:
            price = self._asks.get(order.pair) or self._marks.get(order.pair, ZERO)
        return remaining * price * (1 + self.reserve_fee_rate)

    def _advance(self, ts_ns: int) -> None:
        """Move the clock to ``ts_ns`` (never backwards) and roll day/week references."""
        if ts_ns <= self._ts_ns:
            return
        self._ts_ns = ts_ns
        day = utc_day(ts_ns)
        if day != self._day:
            equity = self.equity()
            self._day = day
            self._day_start = equity
            week = utc_week(ts_ns)
            if week != self._week:
                self._week = week
                self._week_start = equity
        self._snapshot = None

    def _changed(self) -> None:
        equity = self.equity()
        if equity > self._peak:
            self._peak = equity
        self._snapshot = None
