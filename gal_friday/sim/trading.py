"""The simulator's trading core: Kraken order semantics on top of the matching engine.

One ``SimTrading`` backs both private faces of the simulator (REST ``AddOrder`` & co. and the
WebSocket v2 ``add_order`` & co.), so an order placed over one shows up on the other, as on
Kraken. It owns the ``MatchingEngine`` (fills, fees, latency, slippage), the ``SimAccount``
(balances, holds, ledger) and the Kraken view of every order (ids, status, times, cumulative
amounts), and it speaks Kraken in both directions:

* requests are validated as Kraken does (unknown pair, ``ordermin``, tick size, ``costmin``,
  ``cl_ord_id`` format and uniqueness among open orders, funds) and refused with Kraken's
  error strings, so a client's error handling meets the real texts;
* every engine update becomes ``executions`` items (``pending_new`` with the full order, then
  sparse ``new``, ``trade``, ``filled``, ``canceled``) and every fill two ``balances`` ledger
  entries; ``listeners`` receive them as ``(channel, items)``.

The market feeds it through ``on_market``; a pair without working orders costs one dict
lookup, because building book events for the engine is only worth it when something can fill.

Triggered orders (stop-loss, take-profit) go to the engine as they are; it watches their
triggers. They hold no funds until they trigger (Kraken checks a trigger order's funds only
then): the engine asks ``on_trigger`` at that moment, which reserves the funds or refuses,
and a refused order is cancelled with reason ``Insufficient funds``.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import re
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation
from typing import Any

from gal_friday.domain import to_decimal
from gal_friday.events import BookEvent, OrderStatus, OrderType, Side, TradeEvent
from gal_friday.execution.matching import MatchingEngine, OrderUpdate
from gal_friday.execution.venue import OrderRequest
from gal_friday.sim.account import (
    ERR_INSUFFICIENT_FUNDS,
    Fill,
    InsufficientFunds,
    LedgerEntry,
    SimAccount,
    format_amount,
    kraken_id,
)
from gal_friday.sim.instruments import SimInstrument
from gal_friday.sim.source import MarketSource
from gal_friday.sim.tape import Trade
from gal_friday.sim.wire import ts_us

ERR_ARGS = "EGeneral:Invalid arguments"
ERR_UNKNOWN_PAIR = "EQuery:Unknown asset pair"
ERR_ORDER_MIN = "EOrder:Order minimum not met"
ERR_COST_MIN = "EOrder:Cost minimum not met"
ERR_TICK = "EOrder:Tick size check failed"
ERR_UNKNOWN_ORDER = "EOrder:Unknown order"
ERR_CL_ORD_ID = "EGeneral:Invalid arguments:cl_ord_id"
REASON_USER = "User requested"
REASON_DEADMAN = "Cancel all orders after timeout"
REASON_FUNDS = "Insufficient funds"
BOOK_LEVELS = 10
TRADE_SNAPSHOT = 50
MAX_TIMEOUT_S = 86400
ORDER_TYPES = {t.value: t for t in OrderType}
_TRIGGERED_TYPES = (OrderType.STOP_LOSS, OrderType.TAKE_PROFIT)
_MARKET_MARGIN = Decimal("1.01")  # a market buy holds 1% above the ask for the walk
_HUNDRED = Decimal(100)
_ZERO = Decimal(0)
_FREE_TEXT = re.compile(r"^[\x21-\x7e]{1,18}$")
_UUID = re.compile(
    r"^[0-9a-fA-F]{8}-?[0-9a-fA-F]{4}-?[0-9a-fA-F]{4}-?[0-9a-fA-F]{4}-?"
    r"[0-9a-fA-F]{12}$"
)
_ENGINE_REASONS = {
    "cancelled by client": REASON_USER,
    "no_liquidity": "No liquidity",
    "insufficient_depth": "Insufficient liquidity",
}

Listener = Callable[[str, list[dict[str, Any]]], None]


class TradingError(Exception):
    """A request Kraken would refuse; ``str()`` is Kraken's error string."""

    def __init__(self, error: str) -> None:
        super().__init__(error)
        self.error = error


@dataclass(frozen=True, slots=True)
class OrderParams:
    """One order request, transport-neutral (REST and WS both parse into this)."""

    symbol: str  # WS v2 symbol
    side: str
    order_type: str
    qty: Decimal
    limit_price: Decimal | None = None
    trigger_price: Decimal | None = None
    cl_ord_id: str | None = None
    userref: int | None = None
    validate: bool = False


@dataclass(slots=True)
class SimOrder:
    """Kraken's view of one order (the engine knows it by ``order_id``)."""

    order_id: str
    params: OrderParams
    inst: SimInstrument
    opened_ns: int
    status: str = "pending"  # REST: pending | open | closed | canceled | expired
    order_status: str = "pending_new"  # WS executions
    closed_ns: int | None = None
    vol_exec: Decimal = _ZERO
    cost: Decimal = _ZERO
    fee: Decimal = _ZERO
    reason: str | None = None
    cancel_reason: str | None = None  # why we asked the engine to cancel, if not the user
    triggered: bool = False
    hold_price: Decimal | None = None  # quote per base unit the hold was computed at
    trades: list[str] = field(default_factory=list)

    @property
    def is_open(self) -> bool:
        return self.status in ("pending", "open")

    @property
    def kind(self) -> OrderType:
        return ORDER_TYPES[self.params.order_type]

    @property
    def avg_price(self) -> Decimal:
        return self.cost / self.vol_exec if self.vol_exec > 0 else _ZERO


class SimTrading:
    """Orders, fills and balances of the simulated account; see the module docstring."""

    def __init__(
        self,
        market: MarketSource,
        *,
        maker_fee_pct: Decimal = Decimal("0.25"),
        taker_fee_pct: Decimal = Decimal("0.40"),
        latency_ns: int = 0,
        slippage_bps: Decimal = _ZERO,
        account: SimAccount | None = None,
        seed: int = 0,
        clock: Callable[[], int] = time.time_ns,
    ) -> None:
        self.market = market
        self.taker_fee_pct = Decimal(taker_fee_pct)
        self.engine = MatchingEngine(
            Decimal(maker_fee_pct),
            self.taker_fee_pct,
            latency_ns=latency_ns,
            slippage_bps=Decimal(slippage_bps),
            rng_seed=seed,
            on_trigger=self._on_trigger,
        )
        self.account = account if account is not None else SimAccount(seed=seed)
        self.orders: dict[str, SimOrder] = {}  # by order id, in placement order
        self.listeners: list[Listener] = []
        self._clock = clock
        self._last_ns = 0
        self._rng = random.Random(f"{seed}:orders")
        self._working: dict[str, int] = {}  # symbol -> open orders
        self._trade_seq = 1_000_000
        self._rejects: list[str] = []
        self._drops = 0
        self._deadman: asyncio.TimerHandle | None = None
        self.deadman_trigger_ns: int | None = None

    # --- time and notifications ------------------------------------------------------------

    def now(self) -> int:
        """The simulated clock: wall time, never going backwards (the engine needs that)."""
        self._last_ns = max(self._last_ns, self._clock())
        return self._last_ns

    def _emit(self, channel: str, items: list[dict[str, Any]]) -> None:
        for listener in list(self.listeners):
            listener(channel, items)

    # --- faults ----------------------------------------------------------------------------

    def reject_next_orders(self, n: int, error: str) -> None:
        """The next ``n`` placements fail with ``error`` and place nothing."""
        self._rejects.extend([error] * n)

    def drop_after_accept(self, n: int) -> None:
        """The next ``n`` accepted placements are answered by dropping the connection."""
        self._drops += n

    def take_drop(self) -> bool:
        """Whether the transport must drop this accepted request's connection now."""
        if self._drops <= 0:
            return False
        self._drops -= 1
        return True

    def set_balance(self, asset: str, amount: Decimal) -> None:
        entry = self.account.set_balance(asset, Decimal(amount), self.now())
        self._emit("balances", [ledger_item(entry)])

    # --- queries ---------------------------------------------------------------------------

    def open_orders(self) -> list[SimOrder]:
        return [o for o in self.orders.values() if o.is_open]

    def closed_orders(self) -> list[SimOrder]:
        return [o for o in self.orders.values() if not o.is_open]

    def find(
        self, order_id: str | None = None, cl_ord_id: str | None = None, *, open_only: bool = False
    ) -> SimOrder | None:
        """An order by id, or the open (else the latest) order with that ``cl_ord_id``."""
        if order_id is not None:
            order = self.orders.get(order_id)
            return order if order is not None and (order.is_open or not open_only) else None
        found = [o for o in self.orders.values() if o.params.cl_ord_id == cl_ord_id]
        live = [o for o in found if o.is_open]
        if live or open_only:
            return live[-1] if live else None
        return found[-1] if found else None

    # --- placing ---------------------------------------------------------------------------

    def place(self, params: OrderParams) -> SimOrder:
        """Validate, fund and submit one order; raises TradingError as Kraken would refuse.
        With ``params.validate`` nothing is placed (the order is returned unsubmitted)."""
        if self._rejects:
            raise TradingError(self._rejects.pop(0))
        inst = self._validate(params)
        ts = self.now()
        order = SimOrder(kraken_id(self._rng, "O"), params, inst, ts)
        if params.validate:
            self._hold_for(order, check_only=True)
            return order
        self._hold_for(order)
        self._sync_book(inst.symbol, ts)
        self.orders[order.order_id] = order  # the engine may trigger it during submit
        updates = self.engine.submit(self._request(order), ts)
        refused = _refusal(updates, order.order_id)
        if refused is not None:
            del self.orders[order.order_id]
            self.account.release(order.order_id)
            raise TradingError(f"{ERR_ARGS}:{refused}")
        self._working[inst.symbol] = self._working.get(inst.symbol, 0) + 1
        self._emit("executions", [pending_new_item(order)])
        self._apply(updates)
        self._schedule_latency()
        return order

    def _validate(self, p: OrderParams) -> SimInstrument:
        inst = self.market.instruments.get(p.symbol)
        if inst is None:
            raise TradingError(ERR_UNKNOWN_PAIR)
        if p.side not in ("buy", "sell") or p.order_type not in ORDER_TYPES:
            raise TradingError(ERR_ARGS)
        if p.cl_ord_id is not None and p.userref is not None:
            raise TradingError(ERR_ARGS)
        _check_qty(p.qty, inst)
        kind = ORDER_TYPES[p.order_type]
        if kind is OrderType.LIMIT:
            _check_price(p.limit_price, inst, "price")
            assert p.limit_price is not None
            if p.qty * p.limit_price < Decimal(inst.cost_min):
                raise TradingError(ERR_COST_MIN)
        elif kind in _TRIGGERED_TYPES:
            _check_price(p.trigger_price, inst, "price")
        self._check_cl_ord_id(p.cl_ord_id)
        return inst

    def _check_cl_ord_id(self, cl_ord_id: str | None) -> None:
        """Kraken's three formats (UUID with or without dashes, or up to 18 printable ASCII
        characters), unique among open orders."""
        if cl_ord_id is None:
            return
        if not (_UUID.match(cl_ord_id) or _FREE_TEXT.match(cl_ord_id)):
            raise TradingError(ERR_CL_ORD_ID)
        if self.find(cl_ord_id=cl_ord_id, open_only=True) is not None:
            raise TradingError(ERR_CL_ORD_ID)

    def _hold_for(self, order: SimOrder, *, check_only: bool = False) -> None:
        """Reserve the order's funds (limit buy: qty * limit * (1 + taker fee); market buy:
        the same at 1% above the best ask; sell: the quantity). A trigger order holds
        nothing until it triggers (``_on_trigger``)."""
        if order.kind in _TRIGGERED_TYPES:
            return
        asset, amount = self._hold_amount(order, order.params.qty)
        if check_only:
            if amount > self.account.available(asset):
                raise TradingError(ERR_INSUFFICIENT_FUNDS)
            return
        try:
            self.account.reserve(order.order_id, asset, amount)
        except InsufficientFunds:
            raise TradingError(ERR_INSUFFICIENT_FUNDS) from None

    def _hold_amount(self, order: SimOrder, qty: Decimal) -> tuple[str, Decimal]:
        p = order.params
        if p.side == "sell":
            return order.inst.base, qty
        if order.hold_price is None:
            if order.kind is OrderType.LIMIT and p.limit_price is not None:
                order.hold_price = p.limit_price
            else:
                ask = self._touch(order.inst.symbol)[1]
                order.hold_price = (ask or _ZERO) * _MARKET_MARGIN
        fee = 1 + self.taker_fee_pct / _HUNDRED
        return order.inst.quote, qty * order.hold_price * fee

    def _request(self, order: SimOrder) -> OrderRequest:
        p = order.params
        return OrderRequest(
            client_order_id=order.order_id,
            pair=p.symbol,
            side=Side(p.side),
            type=order.kind,
            qty=p.qty,
            limit_price=p.limit_price,
            trigger_price=p.trigger_price,
        )

    def _schedule_latency(self) -> None:
        """With latency, orders reach the book later: advance the engine when they are due,
        even if the market is quiet."""
        if self.engine.latency_ns <= 0:
            return
        with contextlib.suppress(RuntimeError):  # no running loop: market events advance it
            asyncio.get_running_loop().call_later(
                self.engine.latency_ns / 1e9 + 0.001,
                lambda: self._apply(self.engine.advance(self.now())),
            )

    # --- cancelling ------------------------------------------------------------------------

    def cancel(
        self, order_id: str | None = None, cl_ord_id: str | None = None, reason: str | None = None
    ) -> SimOrder:
        """Cancel one open order by id or ``cl_ord_id``; unknown or finished orders are
        ``EOrder:Unknown order``."""
        order = self.find(order_id, cl_ord_id, open_only=True)
        if order is None:
            raise TradingError(ERR_UNKNOWN_ORDER)
        order.cancel_reason = reason
        self._apply(self.engine.cancel(order.order_id, self.now()))
        return order

    def cancel_all(self, reason: str | None = None) -> int:
        """Cancel every open order; returns how many were open."""
        orders = self.open_orders()
        for order in orders:
            self.cancel(order.order_id, reason=reason)
        return len(orders)

    def cancel_all_after(self, timeout_s: int) -> tuple[int, int | None]:
        """Arm (or with 0 disarm) the dead man's switch: when it expires every open order is
        cancelled and the switch stays off until armed again. Returns (now, trigger time)."""
        if not 0 <= timeout_s < MAX_TIMEOUT_S:
            raise TradingError(f"{ERR_ARGS}:timeout")
        now = self.now()
        if self._deadman is not None:
            self._deadman.cancel()
            self._deadman = None
        self.deadman_trigger_ns = None
        if timeout_s == 0:
            return now, None
        self._deadman = asyncio.get_running_loop().call_later(timeout_s, self._deadman_fired)
        self.deadman_trigger_ns = now + timeout_s * 1_000_000_000
        return now, self.deadman_trigger_ns

    def _deadman_fired(self) -> None:
        self._deadman = None
        self.deadman_trigger_ns = None
        self.cancel_all(REASON_DEADMAN)

    def close(self) -> None:
        """Stop timers (the simulator is shutting down)."""
        if self._deadman is not None:
            self._deadman.cancel()
            self._deadman = None

    # --- the market ------------------------------------------------------------------------

    def on_market(self, symbol: str, trades: Sequence[Trade], book_changed: bool) -> None:
        """Show one market change to the engine, if any order of the pair can react."""
        if not self._working.get(symbol):
            return
        ts = self.now()
        inst = self.market.instruments[symbol]
        for trade in trades:
            self._apply(self.engine.on_trade(_trade_event(symbol, trade, inst, ts)))
        if book_changed:
            self._sync_book(symbol, ts)

    def _sync_book(self, symbol: str, ts: int) -> None:
        book = self.market.books.get(symbol)
        if book is None:
            return
        event = BookEvent(
            pair=symbol,
            bids=tuple(book.bids.top(BOOK_LEVELS)),
            asks=tuple(book.asks.top(BOOK_LEVELS)),
            price_precision=book.price_precision,
            qty_precision=book.qty_precision,
            checksum=0,
            sequence=0,  # unread
            is_snapshot=False,
            exchange_ts="",
            received_ts_ns=ts,
        )
        self._apply(self.engine.on_book(event))

    def _touch(self, symbol: str) -> tuple[Decimal | None, Decimal | None]:
        book = self.market.books.get(symbol)
        if book is None:
            return None, None
        pp = book.price_precision
        bid = to_decimal(book.bids.best(), pp) if len(book.bids) else None
        ask = to_decimal(book.asks.best(), pp) if len(book.asks) else None
        return bid, ask

    def _on_trigger(self, request: OrderRequest) -> str | None:
        """The engine is about to execute a trigger order: fund it now or refuse it."""
        order = self.orders.get(request.client_order_id)
        if order is None:
            return None
        order.triggered = True
        asset, amount = self._hold_amount(order, order.params.qty - order.vol_exec)
        try:
            self.account.reserve(order.order_id, asset, amount)
        except InsufficientFunds:
            return REASON_FUNDS
        return None

    # --- engine updates --------------------------------------------------------------------

    def _apply(self, updates: list[OrderUpdate]) -> None:
        for update in updates:
            order = self.orders.get(update.client_order_id)
            if order is None:
                continue
            if update.is_fill:
                self._on_fill(order, update)
            elif update.status is OrderStatus.ACKNOWLEDGED:
                self._on_new(order, update)
            elif update.status in (
                OrderStatus.CANCELLED,
                OrderStatus.REJECTED,
                OrderStatus.EXPIRED,
            ):
                self._on_done(order, update)

    def _on_new(self, order: SimOrder, update: OrderUpdate) -> None:
        if order.order_status != "pending_new":
            return
        order.status, order.order_status = "open", "new"
        self._emit("executions", [new_item(order, update.ts_ns)])

    def _on_fill(self, order: SimOrder, u: OrderUpdate) -> None:
        if order.order_status == "pending_new":
            self._on_new(order, u)
        assert u.last_fill_qty is not None and u.last_fill_price is not None
        self._trade_seq += 1
        p = order.params
        fill = Fill(
            kraken_id(self._rng, "T"),
            self._trade_seq,
            order.order_id,
            p.cl_ord_id,
            p.userref,
            p.symbol,
            p.side,
            p.order_type,
            u.last_fill_price,
            u.last_fill_qty,
            u.last_fill_qty * u.last_fill_price,
            u.fee,
            u.liquidity == "maker",
            u.ts_ns,
        )
        order.vol_exec = u.filled_qty
        order.cost += fill.cost
        order.fee = u.cum_fee
        order.trades.append(fill.trade_id)
        entries = self.account.apply_fill(fill, order.inst.base, order.inst.quote)
        done = u.status is OrderStatus.FILLED
        order.order_status = "filled" if done else "partially_filled"
        self._emit("executions", [trade_item(order, fill)])
        for entry in entries:
            self._emit("balances", [ledger_item(entry)])
        if done:
            self._close(order, "closed", u.ts_ns)
            self._emit("executions", [filled_item(order, u.ts_ns)])
        elif order.order_id in self.account.holds:
            asset, amount = self._hold_amount(order, p.qty - order.vol_exec)
            self.account.set_hold(order.order_id, asset, amount)

    def _on_done(self, order: SimOrder, u: OrderUpdate) -> None:
        if not order.is_open:
            return
        expired = u.status is OrderStatus.EXPIRED
        reason = order.cancel_reason or _ENGINE_REASONS.get(u.reason or "", u.reason)
        order.reason = reason or REASON_USER
        self._close(order, "expired" if expired else "canceled", u.ts_ns)
        self._emit("executions", [canceled_item(order, u.ts_ns)])

    def _close(self, order: SimOrder, status: str, ts_ns: int) -> None:
        order.status = status
        order.order_status = {"closed": "filled"}.get(status, status)
        order.closed_ns = ts_ns
        self.account.release(order.order_id)
        symbol = order.inst.symbol
        self._working[symbol] = max(0, self._working.get(symbol, 0) - 1)

    # --- snapshots -------------------------------------------------------------------------

    def executions_snapshot(self, snap_orders: bool, snap_trades: bool) -> list[dict[str, Any]]:
        """The ``executions`` snapshot: open orders and/or the last 50 fills."""
        items: list[dict[str, Any]] = []
        if snap_orders:
            items += [order_snapshot_item(o) for o in self.open_orders()]
        if snap_trades:
            for fill in self.account.fills[-TRADE_SNAPSHOT:]:
                items.append(trade_item(self.orders[fill.order_id], fill))
        return items

    def balances_snapshot(self) -> list[dict[str, Any]]:
        """The ``balances`` snapshot: each asset with its spot and earn wallets."""
        out: list[dict[str, Any]] = []
        for asset, total in self.account.balances.items():
            earn = self.account.earn_part(asset)
            wallets = [{"type": "spot", "id": "main", "balance": total - earn}]
            if asset in self.account.earn:
                wallets.append({"type": "earn", "id": "flex", "balance": earn})
            out.append(
                {"asset": asset, "asset_class": "currency", "balance": total, "wallets": wallets}
            )
        return out


# --- helpers -----------------------------------------------------------------------------


def parse_decimal(raw: object, what: str) -> Decimal:
    """A wire amount (JSON number kept exact, or text) as a finite Decimal."""
    if isinstance(raw, bool) or not isinstance(raw, (str, int, Decimal)):
        raise TradingError(f"{ERR_ARGS}:{what}")
    try:
        value = Decimal(str(raw).strip())
    except InvalidOperation:
        raise TradingError(f"{ERR_ARGS}:{what}") from None
    if not value.is_finite():
        raise TradingError(f"{ERR_ARGS}:{what}")
    return value


def _check_qty(qty: Decimal, inst: SimInstrument) -> None:
    if qty <= 0 or qty.as_tuple().exponent < -inst.qty_precision:  # type: ignore[operator]
        raise TradingError(f"{ERR_ARGS}:volume")
    if qty < Decimal(inst.ordermin):
        raise TradingError(ERR_ORDER_MIN)


def _check_price(price: Decimal | None, inst: SimInstrument, what: str) -> None:
    if price is None or price <= 0:
        raise TradingError(f"{ERR_ARGS}:{what}")
    if price % Decimal(inst.price_increment) != 0:
        raise TradingError(ERR_TICK)


def _refusal(updates: list[OrderUpdate], order_id: str) -> str | None:
    """The engine's reason if it rejected the order outright (before acknowledging it)."""
    for u in updates:
        if u.client_order_id != order_id:
            continue
        if u.status is OrderStatus.REJECTED:
            return u.reason or "rejected"
        return None
    return None


def _trade_event(symbol: str, t: Trade, inst: SimInstrument, ts: int) -> TradeEvent:
    return TradeEvent(
        pair=symbol,
        trade_id=t.trade_id,
        side=Side(t.side),
        price=to_decimal(t.price, inst.price_precision),
        qty=to_decimal(t.qty, inst.qty_precision),
        order_type=t.ord_type,
        exchange_ts_ns=t.ts_ns,
        received_ts_ns=ts,
    )


# --- Kraken shapes: WebSocket executions and balances ------------------------------------


def _ids(order: SimOrder) -> dict[str, Any]:
    out: dict[str, Any] = {"order_id": order.order_id}
    if order.params.userref is not None:
        out["order_userref"] = order.params.userref
    if order.params.cl_ord_id is not None:
        out["cl_ord_id"] = order.params.cl_ord_id
    return out


def _details(order: SimOrder) -> dict[str, Any]:
    p = order.params
    out: dict[str, Any] = {
        "symbol": p.symbol,
        "order_qty": p.qty,
        "cum_cost": order.cost,
        "time_in_force": "GTC",
        "side": p.side,
        "order_type": p.order_type,
    }
    if p.limit_price is not None:
        out["limit_price_type"] = "static"
        out["limit_price"] = p.limit_price
    if p.trigger_price is not None:
        out["triggers"] = {"reference": "last", "price": p.trigger_price, "price_type": "static"}
    return out


def pending_new_item(order: SimOrder) -> dict[str, Any]:
    """``pending_new``: the full order, as Kraken sends it first."""
    return {
        **_ids(order),
        **_details(order),
        "exec_type": "pending_new",
        "order_status": "pending_new",
        "fee_usd_equiv": _ZERO,
        "fee_ccy_pref": "fciq",
        "timestamp": ts_us(order.opened_ns),
    }


def order_snapshot_item(order: SimOrder) -> dict[str, Any]:
    """An open order in the ``executions`` snapshot."""
    return {
        **_ids(order),
        **_details(order),
        "cum_qty": order.vol_exec,
        "avg_price": order.avg_price,
        "order_status": order.order_status,
        "fee_usd_equiv": order.fee,
        "timestamp": ts_us(order.opened_ns),
    }


def new_item(order: SimOrder, ts_ns: int) -> dict[str, Any]:
    return {"timestamp": ts_us(ts_ns), "order_status": "new", "exec_type": "new", **_ids(order)}


def trade_item(order: SimOrder, fill: Fill) -> dict[str, Any]:
    """``trade``: one fill with the order's cumulative amounts after it."""
    return {
        **_ids(order),
        "exec_id": fill.trade_id,
        "exec_type": "trade",
        "trade_id": fill.trade_seq,
        "symbol": fill.symbol,
        "side": fill.side,
        "last_qty": fill.qty,
        "last_price": fill.price,
        "liquidity_ind": "m" if fill.maker else "t",
        "cost": fill.cost,
        "order_type": fill.order_type,
        "timestamp": ts_us(fill.ts_ns),
        "order_status": order.order_status,
        "cum_qty": order.vol_exec,
        "cum_cost": order.cost,
        "avg_price": order.avg_price,
        "fee_usd_equiv": fill.fee,
        "fees": [{"asset": order.inst.quote, "qty": fill.fee}],
    }


def filled_item(order: SimOrder, ts_ns: int) -> dict[str, Any]:
    return {
        **_ids(order),
        "exec_type": "filled",
        "order_status": "filled",
        "cum_qty": order.vol_exec,
        "cum_cost": order.cost,
        "avg_price": order.avg_price,
        "fee_usd_equiv": order.fee,
        "timestamp": ts_us(ts_ns),
    }


def canceled_item(order: SimOrder, ts_ns: int) -> dict[str, Any]:
    kind = "expired" if order.status == "expired" else "canceled"
    return {
        **_ids(order),
        "exec_type": kind,
        "order_status": kind,
        "cum_qty": order.vol_exec,
        "cum_cost": order.cost,
        "reason": order.reason,
        "timestamp": ts_us(ts_ns),
    }


def ledger_item(entry: LedgerEntry) -> dict[str, Any]:
    """One ``balances`` update entry."""
    return {
        "ledger_id": entry.ledger_id,
        "ref_id": entry.ref_id,
        "timestamp": ts_us(entry.ts_ns),
        "type": entry.type,
        "asset": entry.asset,
        "asset_class": "currency",
        "category": entry.type,
        "wallet_type": "spot",
        "wallet_id": "main",
        "amount": entry.amount,
        "fee": entry.fee,
        "balance": entry.balance,
    }


# --- Kraken shapes: REST ------------------------------------------------------------------


def unix_time(ts_ns: int) -> Decimal:
    """Kraken's REST time: unix seconds with four decimals, as a JSON number."""
    return Decimal(ts_ns).scaleb(-9).quantize(Decimal("0.0001"))


def describe(order: SimOrder) -> str:
    """``descr.order``, e.g. 'buy 30.00000000 XRPUSD @ limit 2.10000'."""
    p, inst = order.params, order.inst
    head = f"{p.side} {format_amount(p.qty, inst.qty_precision)} {inst.altname} @ "
    price = p.limit_price if p.limit_price is not None else p.trigger_price
    text = format_amount(price, inst.price_precision) if price is not None else ""
    return (
        head
        + {
            "limit": f"limit {text}",
            "market": "market",
            "stop-loss": f"stop loss {text}",
            "take-profit": f"take profit {text}",
        }[p.order_type]
    )


def rest_order(order: SimOrder) -> dict[str, Any]:
    """One order object as ``OpenOrders``/``ClosedOrders``/``QueryOrders`` report it."""
    p, inst = order.params, order.inst
    pp, cp = inst.price_precision, inst.cost_precision
    price = p.limit_price if p.limit_price is not None else p.trigger_price
    out: dict[str, Any] = {
        "refid": None,
        "userref": p.userref if p.userref is not None else 0,
        "cl_ord_id": p.cl_ord_id,
        "status": order.status,
        "opentm": unix_time(order.opened_ns),
        "starttm": 0,
        "expiretm": 0,
        "descr": {
            "pair": inst.altname,
            "type": p.side,
            "ordertype": p.order_type,
            "price": format_amount(price, pp) if price is not None else "0",
            "price2": "0",
            "leverage": "none",
            "order": describe(order),
            "close": "",
        },
        "vol": format_amount(p.qty, inst.qty_precision),
        "vol_exec": format_amount(order.vol_exec, inst.qty_precision),
        "cost": format_amount(order.cost, cp),
        "fee": format_amount(order.fee, cp),
        "price": format_amount(order.avg_price, pp),
        "stopprice": format_amount(p.trigger_price or _ZERO, pp),
        "limitprice": format_amount(p.limit_price or _ZERO, pp),
        "misc": "",
        "oflags": "fciq",
        "reason": order.reason,
        "trades": list(order.trades),
    }
    if order.closed_ns is not None:
        out["closetm"] = unix_time(order.closed_ns)
    return out


def rest_trade(fill: Fill, inst: SimInstrument) -> dict[str, Any]:
    """One ``TradesHistory`` entry."""
    pp, cp = inst.price_precision, inst.cost_precision
    return {
        "ordertxid": fill.order_id,
        "postxid": "",
        "pair": inst.rest_key,
        "time": unix_time(fill.ts_ns),
        "type": fill.side,
        "ordertype": fill.order_type,
        "price": format_amount(fill.price, pp),
        "cost": format_amount(fill.cost, cp),
        "fee": format_amount(fill.fee, cp),
        "vol": format_amount(fill.qty, inst.qty_precision),
        "margin": format_amount(_ZERO, cp),
        "leverage": "0",
        "misc": "",
        "trade_id": fill.trade_seq,
        "maker": fill.maker,
    }
