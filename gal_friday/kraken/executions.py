"""Kraken order state (sans-IO): ``executions`` messages and REST reconciliation results in,
the bot's ``ExecutionReportEvent``s out.

``ExecutionTracker`` keeps each order's cumulative state (updates are sparse), deduplicates
fills by every id a fill is known by (the exec id = the REST trade txid, and the per-pair
trade id), and after a snapshot names the orders whose fate it may have missed so the venue
can resolve them over REST. The converters turn REST order and trade objects (OpenOrders,
ClosedOrders, QueryOrders, TradesHistory) into the venue port's ``VenueOrder`` / ``VenueFill``.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from typing import Any, NamedTuple

from gal_friday.events import ExecutionReportEvent, OrderStatus, OrderType, Side
from gal_friday.execution.venue import OrderRequest, VenueFill, VenueOrder
from gal_friday.kraken.schemas import ExecutionEntry, ExecutionsMessage, Fee, UnreadableEntry
from gal_friday.kraken.symbols import pair_from_rest
from gal_friday.timeutil import parse_ts_ns

log = logging.getLogger("gal_friday.kraken.trading")  # log lines keep the venue's logger name
ZERO = Decimal(0)


def dec(raw: object) -> Decimal:
    """A wire number (decoded as its text) or string as an exact Decimal."""
    try:
        return Decimal(str(raw))
    except InvalidOperation:
        raise ValueError(f"not a number: {raw!r}") from None


def _ts_ns(raw: object) -> int:
    """RFC3339 (WS) or unix seconds text (REST) as epoch ns; now if absent or unreadable
    (an unreadable time must not cost the fill it stamps: "Infinity" or 1e999999 included)."""
    if isinstance(raw, str) and "T" in raw:
        with contextlib.suppress(ValueError, ArithmeticError):
            return parse_ts_ns(raw)
    if raw is not None:
        with contextlib.suppress(ValueError, ArithmeticError):
            return int(dec(raw) * 1_000_000_000)
    return time.time_ns()


_EXEC_STATUS = {
    "pending_new": OrderStatus.SUBMITTED,
    "new": OrderStatus.ACKNOWLEDGED,
    "filled": OrderStatus.FILLED,
    "canceled": OrderStatus.CANCELLED,
    "expired": OrderStatus.EXPIRED,
}
_SNAP_STATUS = {
    "pending_new": OrderStatus.SUBMITTED,
    "new": OrderStatus.ACKNOWLEDGED,
    "partially_filled": OrderStatus.PARTIALLY_FILLED,
}
_REST_STATUS = {
    "pending": OrderStatus.SUBMITTED,
    "closed": OrderStatus.FILLED,
    "canceled": OrderStatus.CANCELLED,
    "expired": OrderStatus.EXPIRED,
}
# Our status in Kraken's REST words, so a VenueOrder says the same from memory or from REST.
_KRAKEN_WORD = {
    None: "pending",
    OrderStatus.SUBMITTED: "pending",
    OrderStatus.FILLED: "closed",
    OrderStatus.CANCELLED: "canceled",
    OrderStatus.EXPIRED: "expired",
    OrderStatus.REJECTED: "rejected",
}
TERMINAL = frozenset(
    {OrderStatus.FILLED, OrderStatus.CANCELLED, OrderStatus.EXPIRED, OrderStatus.REJECTED}
)
TRIGGERED = (OrderType.STOP_LOSS, OrderType.TAKE_PROFIT)
MAX_DONE = 5000  # finished orders the tracker remembers


def _order_type(raw: object) -> OrderType:
    try:
        return OrderType(str(raw))
    except ValueError:
        log.debug("order type %r is not one the bot uses; treating it as limit", raw)
        return OrderType.LIMIT


class Applied(NamedTuple):
    """What one ``executions`` message did: reports to publish, orders to reconcile over REST
    and entries that could not be read (to look up over REST by the ids they carry)."""

    reports: list[ExecutionReportEvent]
    suspects: list[TrackedOrder]
    unreadable: list[UnreadableEntry]


@dataclass(slots=True)
class TrackedOrder:
    """What we know of one order; ``executions`` updates are sparse, so this keeps the rest."""

    client_order_id: str
    pair: str
    side: Side
    type: OrderType
    qty: Decimal
    order_id: str | None = None
    limit_price: Decimal | None = None
    trigger_price: Decimal | None = None
    filled: Decimal = ZERO
    cost: Decimal = ZERO
    avg_price: Decimal | None = None
    status: OrderStatus | None = None  # None: registered locally, nothing heard yet

    @property
    def done(self) -> bool:
        return self.status in TERMINAL

    def venue_order(self) -> VenueOrder:
        return VenueOrder(
            self.client_order_id,
            self.order_id or "",
            self.pair,
            self.side,
            self.type,
            self.qty,
            self.filled,
            self.limit_price,
            self.trigger_price,
            not self.done,
            _KRAKEN_WORD.get(self.status, "open"),
        )


class ExecutionTracker:
    """Turns ``executions`` messages (and REST reconciliation results) into execution reports.

    Keeps per-order cumulative state because updates carry only what changed, deduplicates
    fills by every id a fill is known by, and after a snapshot names the orders whose fate we
    missed (``suspects``) so the venue can resolve them over REST.
    """

    def __init__(self, pairs: tuple[str, ...]) -> None:
        self.pairs = pairs
        self.orders: dict[str, TrackedOrder] = {}  # by client order id
        self._by_oid: dict[str, TrackedOrder] = {}
        self._seen_fills: set[str] = set()

    # -- bookkeeping

    def register(self, order: OrderRequest) -> TrackedOrder:
        """Remember an order about to be sent, so sparse updates can be completed."""
        tracked = self.orders.get(order.client_order_id)
        if tracked is None:
            tracked = TrackedOrder(
                order.client_order_id,
                order.pair,
                order.side,
                order.type,
                order.qty,
                limit_price=order.limit_price,
                trigger_price=order.trigger_price,
            )
            self.orders[order.client_order_id] = tracked
        return tracked

    def forget(self, client_order_id: str) -> None:
        """Drop an order the exchange definitely never took (rejected, busy)."""
        tracked = self.orders.get(client_order_id)
        if tracked is not None and tracked.status is None:
            del self.orders[client_order_id]
            if tracked.order_id is not None:
                self._by_oid.pop(tracked.order_id, None)

    def set_order_id(self, client_order_id: str, order_id: str) -> None:
        tracked = self.orders.get(client_order_id)
        if tracked is not None and order_id:
            tracked.order_id = order_id
            self._by_oid[order_id] = tracked

    def by_order_id(self, order_id: str) -> TrackedOrder | None:
        return self._by_oid.get(order_id)

    # -- WebSocket

    def feed(
        self, msg: ExecutionsMessage | Mapping[str, Any]
    ) -> tuple[list[ExecutionReportEvent], list[TrackedOrder]]:
        """One ``executions`` message -> (reports, suspects); see ``apply``, which also names
        the entries that could not be read."""
        applied = self.apply(msg)
        return applied.reports, applied.suspects

    def apply(self, msg: ExecutionsMessage | Mapping[str, Any]) -> Applied:
        """One ``executions`` message, each entry on its own: the reports of the entries
        read, the suspects (orders whose fills or final state we may have missed: after a
        snapshot, and sparse terminal updates whose ``cum_qty`` is ahead of ours) and the
        entries that could not be read (the venue looks those up over REST). A message not
        yet typed (a decoded object) is read through the schema first. Raises ValueError
        (``PrivateMessageError``) only if the message as a whole is not readable."""
        if not isinstance(msg, ExecutionsMessage):
            msg = ExecutionsMessage.from_mapping(msg)
        snapshot = msg.snapshot
        out = Applied([], [], list(msg.unreadable))
        seen: set[str] = set()
        for entry in msg.data:
            try:
                self._apply_entry(entry, snapshot, out, seen)
            except Exception as exc:  # a bug must cost this entry only, never its neighbours
                log.exception("execution entry for order %s not applied", entry.order_id)
                out.unreadable.append(
                    UnreadableEntry(
                        problem=f"not applied: {type(exc).__name__}",
                        order_id=entry.order_id,
                        cl_ord_id=entry.cl_ord_id,
                    )
                )
        if snapshot:
            out.suspects.extend(
                o for o in self.orders.values() if o.client_order_id not in seen and not o.done
            )
        self._prune()
        return out

    def _apply_entry(
        self, entry: ExecutionEntry, snapshot: bool, out: Applied, seen: set[str]
    ) -> None:
        tracked = self._find_or_create(entry)
        if tracked is None:
            return
        seen.add(tracked.client_order_id)
        self._update_fields(tracked, entry)
        if snapshot:
            report, suspect = self._snapshot_entry(tracked, entry)
        else:
            report, suspect = self._update_entry(tracked, entry)
        out.reports.extend(report)
        if suspect:
            out.suspects.append(tracked)

    def find(self, order_id: str | None, client_order_id: str | None) -> TrackedOrder | None:
        """The tracked order an entry's ids name, by exchange order id first."""
        tracked = self._by_oid.get(order_id) if order_id else None
        if tracked is None and client_order_id:
            tracked = self.orders.get(client_order_id)
        return tracked

    def working(self) -> list[TrackedOrder]:
        """The orders not finished yet (any of them could have a fill we missed)."""
        return [o for o in self.orders.values() if not o.done]

    def _prune(self) -> None:
        """Forget the oldest finished orders beyond ``MAX_DONE`` (a long run must not grow
        without bound; lookups of forgotten orders fall through to REST)."""
        if len(self.orders) <= MAX_DONE:
            return
        done = [c for c, o in self.orders.items() if o.done]
        for coid in done[: max(0, len(done) - MAX_DONE // 2)]:  # halve: prune seldom
            order = self.orders.pop(coid)
            if order.order_id is not None:
                self._by_oid.pop(order.order_id, None)

    def _find_or_create(self, e: ExecutionEntry) -> TrackedOrder | None:
        oid = e.order_id
        tracked = self.find(oid, e.cl_ord_id)
        if tracked is None:
            tracked = self._create(e)
        if tracked is not None and oid:
            self.set_order_id(tracked.client_order_id, oid)
        return tracked

    def _create(self, e: ExecutionEntry) -> TrackedOrder | None:
        """An order first heard of on the stream (placed by an earlier run, or by hand: then
        its order id stands in for the missing client order id)."""
        if e.symbol is None or e.side is None or e.order_type is None or e.order_qty is None:
            log.debug("sparse execution for an unknown order %s", e.order_id)
            return None
        if e.symbol not in self.pairs:  # someone else's business on this account
            log.debug("ignoring order %s on unconfigured %s", e.order_id, e.symbol)
            return None
        coid = str(e.cl_ord_id or e.order_id)
        filled, cost = _or(e.cum_qty, ZERO), _or(e.cum_cost, ZERO)
        if e.exec_type == "trade" and e.last_qty is not None and e.last_price is not None:
            # cum_qty already counts this fill, which is applied (and reported) next
            filled = max(ZERO, filled - e.last_qty)
            cost = max(ZERO, cost - e.last_qty * e.last_price)
        tracked = TrackedOrder(
            coid,
            e.symbol,
            Side(e.side),
            _order_type(e.order_type),
            e.order_qty,
            filled=filled,
            cost=cost,
        )
        if e.avg_price is not None and filled > 0:
            tracked.avg_price = e.avg_price
        self.orders[coid] = tracked
        return tracked

    @staticmethod
    def _update_fields(o: TrackedOrder, e: ExecutionEntry) -> None:
        if e.order_qty is not None:
            o.qty = e.order_qty
        if e.limit_price is not None and o.type is OrderType.LIMIT:
            o.limit_price = e.limit_price
        if e.triggers is not None and e.triggers.price is not None:
            o.trigger_price = e.triggers.price

    def _snapshot_entry(
        self, o: TrackedOrder, e: ExecutionEntry
    ) -> tuple[list[ExecutionReportEvent], bool]:
        """A snapshot line: a still-open order. Fills beyond ours mean we missed some."""
        cum = _or(e.cum_qty, o.filled)
        missed = cum > o.filled
        status = _SNAP_STATUS.get(str(e.order_status), OrderStatus.ACKNOWLEDGED)
        if missed or status == o.status:
            return [], missed
        o.status = status
        return [self._report(o, status, ts_ns=_ts_ns(e.timestamp))], False

    def _update_entry(
        self, o: TrackedOrder, e: ExecutionEntry
    ) -> tuple[list[ExecutionReportEvent], bool]:
        exec_type = str(e.exec_type)
        if exec_type == "trade":
            report = self._fill(
                o,
                _ws_fill_keys(e, o.pair),
                _required(e.last_qty, "last_qty"),
                _required(e.last_price, "last_price"),
                _fee(e.fees, e, o.pair),
                _ts_ns(e.timestamp),
                e.order_status == "filled",
            )
            if report is not None and e.avg_price is not None:
                o.avg_price = e.avg_price
            return ([report] if report is not None else []), False
        status = _EXEC_STATUS.get(exec_type)
        if status is None or status == o.status or o.done:
            return [], False  # amended / restated / iceberg_refill, or nothing new
        full = o.qty if status is OrderStatus.FILLED else o.filled  # "filled" means all of it
        if status in TERMINAL and _or(e.cum_qty, full) > o.filled:
            return [], True  # fills we never saw: reconcile before reporting the end
        o.status = status
        reason = e.reason if status is not OrderStatus.FILLED else None
        return [self._report(o, status, reason=reason, ts_ns=_ts_ns(e.timestamp))], False

    # -- fills (WS or REST)

    def _fill(
        self,
        o: TrackedOrder,
        keys: set[str],
        qty: Decimal,
        price: Decimal,
        fee: Decimal,
        ts_ns: int,
        last: bool,
    ) -> ExecutionReportEvent | None:
        """Apply one fill unless any of its ids was seen before; returns its report."""
        if keys & self._seen_fills:
            return None
        self._seen_fills |= keys
        o.filled += qty
        o.cost += qty * price
        o.avg_price = o.cost / o.filled if o.filled else None
        if not o.done:  # a late fill never reopens a finished order
            full = last or o.filled >= o.qty
            o.status = OrderStatus.FILLED if full else OrderStatus.PARTIALLY_FILLED
        assert o.status is not None
        return self._report(o, o.status, last_qty=qty, last_price=price, fee=fee, ts_ns=ts_ns)

    def apply_rest_trade(self, txid: str, t: Mapping[str, Any]) -> ExecutionReportEvent | None:
        """One TradesHistory entry for a tracked order (missed while away)."""
        o = self._by_oid.get(str(t.get("ordertxid")))
        if o is None:
            return None
        keys = {f"x:{txid}"}
        if t.get("trade_id") is not None:
            keys.add(f"t:{o.pair}:{t['trade_id']}")
        return self._fill(
            o,
            keys,
            dec(t["vol"]),
            dec(t["price"]),
            dec(t.get("fee", 0)),
            _ts_ns(t.get("time")),
            False,
        )

    def apply_rest_order(
        self, order_id: str, info: Mapping[str, Any]
    ) -> ExecutionReportEvent | None:
        """An order's REST state after its fills were applied: report how it ended."""
        o = self._by_oid.get(order_id)
        if o is None:
            return None
        status = _REST_STATUS.get(str(info.get("status")))
        vol_exec = dec(info.get("vol_exec", o.filled))
        if status is None:  # open
            status = OrderStatus.PARTIALLY_FILLED if vol_exec > 0 else OrderStatus.ACKNOWLEDGED
        if vol_exec > o.filled:  # fills TradesHistory did not show (yet): trust the order
            log.warning("order %s: %s filled but only %s in trades", order_id, vol_exec, o.filled)
            o.filled = vol_exec
            if info.get("price") is not None and dec(info["price"]) > 0:
                o.avg_price = dec(info["price"])
        if status == o.status:
            return None
        o.status = status
        reason = info.get("reason") if status is OrderStatus.CANCELLED else None
        return self._report(
            o,
            status,
            reason=None if reason is None else str(reason),
            ts_ns=_ts_ns(info.get("closetm") or info.get("opentm")),
        )

    def adopt_rest_order(
        self, order_id: str, info: Mapping[str, Any], client_order_id: str | None = None
    ) -> ExecutionReportEvent | None:
        """Track an order first heard of in an entry we could not read, from its REST state
        (as ``_create`` adopts an earlier run's order from a snapshot: what it filled before
        is the baseline, not a fill of ours to report) and report that state. None if it is
        not on one of our pairs."""
        if order_id in self._by_oid:
            return self.apply_rest_order(order_id, info)
        order = venue_order_from_rest(order_id, info, self.pairs)
        if order is None:
            return None
        coid = order.client_order_id or client_order_id or order_id
        tracked = TrackedOrder(
            coid,
            order.pair,
            order.side,
            order.type,
            order.qty,
            limit_price=order.limit_price,
            trigger_price=order.trigger_price,
            filled=order.filled_qty,
        )
        price = info.get("price")
        if order.filled_qty > 0 and price is not None and dec(price) > 0:
            tracked.avg_price = dec(price)
            tracked.cost = order.filled_qty * tracked.avg_price
        self.orders.setdefault(coid, tracked)
        self.set_order_id(coid, order_id)
        return self.apply_rest_order(order_id, info)

    @staticmethod
    def _report(
        o: TrackedOrder,
        status: OrderStatus,
        *,
        last_qty: Decimal | None = None,
        last_price: Decimal | None = None,
        fee: Decimal = ZERO,
        reason: str | None = None,
        ts_ns: int,
    ) -> ExecutionReportEvent:
        return ExecutionReportEvent(
            client_order_id=o.client_order_id,
            exchange_order_id=o.order_id,
            signal_id=None,
            pair=o.pair,
            side=o.side,
            order_type=o.type,
            status=status,
            order_qty=o.qty,
            filled_qty=o.filled,
            avg_price=o.avg_price,
            last_fill_qty=last_qty,
            last_fill_price=last_price,
            fee=fee,
            fee_asset=o.pair.partition("/")[2],
            reason=reason,
            ts_ns=ts_ns,
        )


def _or(value: Decimal | None, default: Decimal) -> Decimal:
    return default if value is None else value


def _required(value: Decimal | None, name: str) -> Decimal:
    if value is None:
        raise KeyError(name)
    return value


def _ws_fill_keys(e: ExecutionEntry, pair: str) -> set[str]:
    """Every id a WS fill is known by: exec_id (= the trade txid REST uses) and trade_id."""
    keys = set()
    if e.exec_id is not None:
        keys.add(f"x:{e.exec_id}")
    if e.trade_id is not None:
        keys.add(f"t:{pair}:{e.trade_id}")
    return keys or {f"x:{e.order_id}:{e.timestamp}"}


def _fee(fees: list[Fee] | None, e: ExecutionEntry, pair: str) -> Decimal:
    """The fill's fee in the quote currency; a base-currency fee is valued at the fill price."""
    quote = pair.partition("/")[2]
    total = ZERO
    for item in fees or []:
        if item.asset == quote:
            total += item.qty
        else:
            total += item.qty * _or(e.last_price, ZERO)
    return total


# --- REST shapes -> domain -------------------------------------------------------------------


def venue_order_from_rest(
    txid: str, info: Mapping[str, Any], pairs: tuple[str, ...]
) -> VenueOrder | None:
    """A REST order object (OpenOrders / ClosedOrders / QueryOrders) as a VenueOrder."""
    descr = info.get("descr") or {}
    pair = pair_from_rest(str(descr.get("pair", "")), pairs)
    if pair is None:
        return None
    otype = _order_type(descr.get("ordertype"))
    price = dec(descr["price"]) if descr.get("price") not in (None, "0", "") else None
    status = str(info.get("status", ""))
    return VenueOrder(
        client_order_id=str(info.get("cl_ord_id") or ""),
        exchange_order_id=txid,
        pair=pair,
        side=Side(str(descr.get("type"))),
        type=otype,
        qty=dec(info.get("vol", 0)),
        filled_qty=dec(info.get("vol_exec", 0)),
        limit_price=price if otype is OrderType.LIMIT else None,
        trigger_price=price if otype in TRIGGERED else None,
        is_open=status in ("open", "pending"),
        status=status,
    )


def venue_fill_from_rest(
    txid: str, t: Mapping[str, Any], pairs: tuple[str, ...], coid_of: Callable[[str], str | None]
) -> VenueFill | None:
    pair = pair_from_rest(str(t.get("pair", "")), pairs)
    if pair is None:
        return None
    oid = str(t.get("ordertxid", ""))
    return VenueFill(
        trade_id=txid,
        client_order_id=coid_of(oid),
        exchange_order_id=oid,
        pair=pair,
        side=Side(str(t.get("type"))),
        qty=dec(t.get("vol", 0)),
        price=dec(t.get("price", 0)),
        fee=dec(t.get("fee", 0)),
        ts_ns=_ts_ns(t.get("time")),
    )
