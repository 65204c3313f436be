"""Kraken as a ``TradingVenue``: the private WebSocket v2 for order flow and order state, the
private REST API for lookups, reconciliation and as a fallback.

Order flow goes over the WebSocket (``add_order``, ``cancel_order``, ``cancel_all``,
``cancel_all_orders_after``) because it is faster and its ``executions`` channel reports every
state change of every order; REST answers the questions a stream cannot ("does this client
order id exist?", "what filled while I was away?").

Safety rules, all about never duplicating or losing an order or a fill:

* A request whose fate is unknown (timeout, connection lost with it in flight, AddOrder's
  nonce refusal) raises ``VenueUncertain``; ``submit`` never sends a client order id it has
  sent before without first looking it up (memory, then OpenOrders / ClosedOrders by
  ``cl_ord_id``).
* Fills are deduplicated by execution id (the trade txid) and per-pair trade id, so a fill
  seen live, again in a reconnect snapshot, and again over REST is reported once.
* After every (re)connect the ``executions`` snapshot is compared with what we believed:
  orders that finished while we were away, or filled more than we saw, are resolved over
  REST (QueryOrders / ClosedOrders, then TradesHistory) and their fills reported.
* A circuit breaker (``pybreaker``) counts consecutive ``VenueBusy`` / ``VenueUncertain``
  outcomes; while it is open ``submit`` refuses without touching the exchange. Cancels and
  lookups still go through: they reduce risk or resolve uncertainty. ``OrderRejected`` is the
  exchange working normally and does not count.
* The dead man's switch (``cancel_all_orders_after``) is re-armed every ``dms_interval_s``
  while started. ``stop`` deliberately leaves it armed: a bot that stopped (or crashed) has no
  working orders left once ``dms_timeout_s`` expires; a bot that restarts in time re-arms it.

The secret stays inside ``Credentials`` and the REST client; the WebSocket token is never
logged and no repr or error message contains either.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import random
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation
from typing import Any, TypeVar

import msgspec
import pybreaker
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidHandshake

from gal_friday.config import Credentials, KrakenSettings
from gal_friday.events import ExecutionReportEvent, OrderStatus, OrderType, Side
from gal_friday.execution.venue import (
    OrderRejected,
    OrderRequest,
    ReportCallback,
    VenueAuthError,
    VenueBusy,
    VenueError,
    VenueFill,
    VenueOrder,
    VenueUncertain,
)
from gal_friday.kraken.auth import NonceSource
from gal_friday.kraken.private import (
    ERR_INVALID_KEY,
    ERR_INVALID_NONCE,
    ERR_INVALID_SIGNATURE,
    ERR_PERMISSION,
    ORDER_METHODS,
    KrakenAuthError,
    KrakenInvalidNonce,
    KrakenPrivateRest,
    KrakenUncertain,
    permission_message,
)
from gal_friday.kraken.rest import KrakenError, KrakenUnavailable
from gal_friday.kraken.symbols import asset_code, pair_from_rest
from gal_friday.kraken.ws import backoff_delay
from gal_friday.timeutil import parse_ts_ns

log = logging.getLogger(__name__)
# The websockets library's own logger: at DEBUG it dumps frames, and every private request
# frame carries the session token. Pinned to INFO so turning on debug logging cannot leak it.
_wire_log = logging.getLogger(f"{__name__}.wire")
_wire_log.setLevel(logging.INFO)
_decoder = msgspec.json.Decoder(float_hook=str)
T = TypeVar("T")
ZERO = Decimal(0)

# --- exact numbers ---------------------------------------------------------------------------


def json_number(value: Decimal) -> msgspec.Raw:
    """A Decimal as a raw JSON number with exactly its digits (``Decimal('0.50')`` -> ``0.50``):
    going through float could turn 0.1 into 0.1000000000000000055 or drop a digit."""
    if not value.is_finite():
        raise ValueError(f"not a finite amount: {value}")
    text = format(value, "f")
    return msgspec.Raw(("0" if text == "-0" else text).encode())


def encode_request(method: str, params: Mapping[str, Any], req_id: int) -> bytes:
    """One WebSocket v2 request frame."""
    return msgspec.json.encode({"method": method, "params": dict(params), "req_id": req_id})


def dec(raw: object) -> Decimal:
    """A wire number (decoded as its text) or string as an exact Decimal."""
    try:
        return Decimal(str(raw))
    except InvalidOperation:
        raise ValueError(f"not a number: {raw!r}") from None


def _ts_ns(raw: object) -> int:
    """RFC3339 (WS) or unix seconds text (REST) as epoch ns; now if absent or unreadable."""
    if isinstance(raw, str) and "T" in raw:
        with contextlib.suppress(ValueError):
            return parse_ts_ns(raw)
    if raw is not None:
        with contextlib.suppress(ValueError):
            return int(dec(raw) * 1_000_000_000)
    return time.time_ns()


# --- balances --------------------------------------------------------------------------------

_logged_untradable: set[str] = set()


def normalise_balances(raw: Mapping[str, object]) -> dict[str, Decimal]:
    """Kraken's Balance result with plain asset codes: ``ZUSD`` -> ``USD``, ``XXDG`` -> ``DOGE``.

    ``.F`` balances (flexible earn / auto-earn) are tradable and are added to their asset
    (``XRP.F`` + ``XXRP`` = ``XRP``). Other suffixes (``.S`` staked, ``.M``, ``.B``, ``.P``)
    cannot be traded, so they are left out (logged once at debug) rather than let the bot
    size orders against money it cannot use.
    """
    out: dict[str, Decimal] = {}
    for code, amount in raw.items():
        base, dot, suffix = code.partition(".")
        if dot and suffix != "F":
            if code not in _logged_untradable:
                _logged_untradable.add(code)
                log.debug("ignoring untradable balance %s", code)
            continue
        asset = asset_code(base)
        out[asset] = out.get(asset, ZERO) + dec(amount)
    return out


# --- errors ----------------------------------------------------------------------------------

_REJECTED = ("EOrder:Insufficient funds", "EOrder:Order minimum not met",
             "EOrder:Cost minimum not met", "EOrder:Tick size check failed",
             "EOrder:Invalid price", "EGeneral:Invalid arguments", "EOrder:Orders limit exceeded",
             "EOrder:Unknown order", "EOrder:Positions limit exceeded")
_BUSY = ("EOrder:Rate limit exceeded", "EOrder:Domain rate limit exceeded",
         "EAPI:Rate limit exceeded", "EGeneral:Too many requests", "EService:Unavailable",
         "EService:Busy", "EService:Throttled", "EService:Market in cancel_only mode",
         "EService:Market in post_only mode", "EGeneral:Temporary lockout",
         "EService:Deadline elapsed")
_THROTTLED = "EService:Throttled"
UNKNOWN_ORDER = "EOrder:Unknown order"


def venue_error(error: str, method: str, *, changes_orders: bool,
                now_s: float | None = None) -> VenueError:
    """The venue error for one Kraken error string on ``method`` (REST or WS name).

    The class says what the caller may safely do next (see ``gal_friday.execution.venue``);
    the message is one line, Kraken's own words prefixed by the method.
    """
    line = f"Kraken {method}: {error}"
    if error.startswith(_REJECTED):
        return OrderRejected(line)
    if error.startswith(_BUSY):
        return VenueBusy(line, _retry_after(error, now_s))
    auth = _auth_message(error, method)
    if auth is not None:
        return VenueAuthError(auth)
    if error.startswith(ERR_INVALID_NONCE):
        # AddOrder is never retried on a nonce refusal: resolve it by lookup instead.
        return VenueUncertain(line) if method in ("AddOrder", "add_order") else VenueBusy(line)
    if error.startswith("EGeneral:Internal error"):
        return VenueUncertain(line) if changes_orders else VenueBusy(line)
    if changes_orders or error.startswith(("EOrder:", "Unsupported field")):
        return OrderRejected(line)
    return VenueBusy(line)


def _retry_after(error: str, now_s: float | None) -> float | None:
    """``EService:Throttled: <unix ts>`` -> seconds until ts."""
    if not error.startswith(_THROTTLED):
        return None
    try:
        until = float(error.rsplit(":", 1)[1].strip())
    except (IndexError, ValueError):
        return None
    return max(0.0, until - (time.time() if now_s is None else now_s))


def _auth_message(error: str, method: str) -> str | None:
    """A user-facing message if ``error`` is about credentials, permissions or the token."""
    if error.startswith(ERR_INVALID_KEY):
        return (f"Kraken rejected the API key ({ERR_INVALID_KEY}) on {method}: check that "
                "KRAKEN_API_KEY is the key's public part and the key still exists.")
    if error.startswith(ERR_INVALID_SIGNATURE):
        return (f"Kraken rejected the request signature ({ERR_INVALID_SIGNATURE}) on {method}: "
                "KRAKEN_API_SECRET does not belong to KRAKEN_API_KEY.")
    if error.startswith(ERR_PERMISSION):
        return permission_message(method)
    if error.startswith("EAuth") or "token" in error.lower():
        return (f"Kraken refused the WebSocket token on {method} ({error}): check the key's "
                '"WebSocket interface" permission and the system clock.')
    return None


def from_kraken_error(exc: KrakenError) -> VenueError:
    """A REST client error as the venue error that says what is safe next."""
    changes = exc.method in ORDER_METHODS
    if isinstance(exc, KrakenUncertain):
        return VenueUncertain(f"Kraken {exc.method}: outcome unknown ({'; '.join(exc.errors)})")
    if isinstance(exc, KrakenAuthError):
        return VenueAuthError(str(exc))
    if isinstance(exc, KrakenInvalidNonce):
        return venue_error(ERR_INVALID_NONCE, exc.method, changes_orders=changes)
    if isinstance(exc, KrakenUnavailable) and not any(e.startswith("E") for e in exc.errors):
        return VenueBusy(f"Kraken {exc.method}: unavailable ({'; '.join(exc.errors)})")
    first = exc.errors[0] if exc.errors else "unknown error"
    return venue_error(first, exc.method, changes_orders=changes)


# --- order state (sans-IO) -------------------------------------------------------------------

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
_KRAKEN_WORD = {None: "pending", OrderStatus.SUBMITTED: "pending",
                OrderStatus.FILLED: "closed", OrderStatus.CANCELLED: "canceled",
                OrderStatus.EXPIRED: "expired", OrderStatus.REJECTED: "rejected"}
TERMINAL = frozenset({OrderStatus.FILLED, OrderStatus.CANCELLED, OrderStatus.EXPIRED,
                      OrderStatus.REJECTED})
_TRIGGERED = (OrderType.STOP_LOSS, OrderType.TAKE_PROFIT)
MAX_DONE = 5000  # finished orders the tracker remembers


def _order_type(raw: object) -> OrderType:
    try:
        return OrderType(str(raw))
    except ValueError:
        log.debug("order type %r is not one the bot uses; treating it as limit", raw)
        return OrderType.LIMIT


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
    opened_s: int = field(default_factory=lambda: int(time.time()))

    @property
    def done(self) -> bool:
        return self.status in TERMINAL

    def venue_order(self) -> VenueOrder:
        return VenueOrder(self.client_order_id, self.order_id or "", self.pair, self.side,
                          self.type, self.qty, self.filled, self.limit_price,
                          self.trigger_price, not self.done,
                          _KRAKEN_WORD.get(self.status, "open"))


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
            tracked = TrackedOrder(order.client_order_id, order.pair, order.side, order.type,
                                   order.qty, limit_price=order.limit_price,
                                   trigger_price=order.trigger_price)
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

    def feed(self, msg: Mapping[str, Any]) -> tuple[list[ExecutionReportEvent],
                                                    list[TrackedOrder]]:
        """One ``executions`` message -> (reports, suspects). Suspects are orders whose fills
        or final state we may have missed; only snapshots and sparse terminal updates whose
        ``cum_qty`` is ahead of ours produce them."""
        data = msg.get("data") or []
        snapshot = msg.get("type") == "snapshot"
        reports: list[ExecutionReportEvent] = []
        suspects: list[TrackedOrder] = []
        seen: set[str] = set()
        for entry in data:
            tracked = self._find_or_create(entry)
            if tracked is None:
                continue
            seen.add(tracked.client_order_id)
            self._update_fields(tracked, entry)
            if snapshot:
                report, suspect = self._snapshot_entry(tracked, entry)
            else:
                report, suspect = self._update_entry(tracked, entry)
            reports.extend(report)
            if suspect:
                suspects.append(tracked)
        if snapshot:
            suspects.extend(o for o in self.orders.values()
                            if o.client_order_id not in seen and not o.done)
        self._prune()
        return reports, suspects

    def _prune(self) -> None:
        """Forget the oldest finished orders beyond ``MAX_DONE`` (a long run must not grow
        without bound; lookups of forgotten orders fall through to REST)."""
        if len(self.orders) <= MAX_DONE:
            return
        done = [c for c, o in self.orders.items() if o.done]
        for coid in done[:max(0, len(done) - MAX_DONE // 2)]:  # halve: prune seldom
            order = self.orders.pop(coid)
            if order.order_id is not None:
                self._by_oid.pop(order.order_id, None)

    def _find_or_create(self, e: Mapping[str, Any]) -> TrackedOrder | None:
        oid, coid = e.get("order_id"), e.get("cl_ord_id")
        tracked = self._by_oid.get(str(oid)) if oid else None
        if tracked is None and coid:
            tracked = self.orders.get(str(coid))
        if tracked is None:
            tracked = self._create(e)
        if tracked is not None and oid:
            self.set_order_id(tracked.client_order_id, str(oid))
        return tracked

    def _create(self, e: Mapping[str, Any]) -> TrackedOrder | None:
        """An order first heard of on the stream (placed by an earlier run, or by hand: then
        its order id stands in for the missing client order id)."""
        if not all(k in e for k in ("symbol", "side", "order_type", "order_qty")):
            log.debug("sparse execution for an unknown order %s", e.get("order_id"))
            return None
        if e["symbol"] not in self.pairs:  # someone else's business on this account
            log.debug("ignoring order %s on unconfigured %s", e.get("order_id"), e["symbol"])
            return None
        coid = str(e.get("cl_ord_id") or e.get("order_id"))
        filled = dec(e.get("cum_qty", 0))
        tracked = TrackedOrder(coid, str(e["symbol"]), Side(str(e["side"])),
                               _order_type(e["order_type"]), dec(e["order_qty"]),
                               filled=filled, cost=dec(e.get("cum_cost", 0)))
        if e.get("avg_price") is not None and filled > 0:
            tracked.avg_price = dec(e["avg_price"])
        self.orders[coid] = tracked
        return tracked

    @staticmethod
    def _update_fields(o: TrackedOrder, e: Mapping[str, Any]) -> None:
        if "order_qty" in e:
            o.qty = dec(e["order_qty"])
        if e.get("limit_price") is not None and o.type is OrderType.LIMIT:
            o.limit_price = dec(e["limit_price"])
        triggers = e.get("triggers")
        if isinstance(triggers, dict) and triggers.get("price") is not None:
            o.trigger_price = dec(triggers["price"])

    def _snapshot_entry(self, o: TrackedOrder, e: Mapping[str, Any]
                        ) -> tuple[list[ExecutionReportEvent], bool]:
        """A snapshot line: a still-open order. Fills beyond ours mean we missed some."""
        cum = dec(e.get("cum_qty", o.filled))
        missed = cum > o.filled
        status = _SNAP_STATUS.get(str(e.get("order_status")), OrderStatus.ACKNOWLEDGED)
        if missed or status == o.status:
            return [], missed
        o.status = status
        return [self._report(o, status, ts_ns=_ts_ns(e.get("timestamp")))], False

    def _update_entry(self, o: TrackedOrder, e: Mapping[str, Any]
                      ) -> tuple[list[ExecutionReportEvent], bool]:
        exec_type = str(e.get("exec_type"))
        if exec_type == "trade":
            report = self._fill(o, _ws_fill_keys(e, o.pair), dec(e["last_qty"]),
                                dec(e["last_price"]), _fee(e.get("fees"), e, o.pair),
                                _ts_ns(e.get("timestamp")), e.get("order_status") == "filled")
            if report is not None and e.get("avg_price") is not None:
                o.avg_price = dec(e["avg_price"])
            return ([report] if report is not None else []), False
        status = _EXEC_STATUS.get(exec_type)
        if status is None or status == o.status or o.done:
            return [], False  # amended / restated / iceberg_refill, or nothing new
        full = o.qty if status is OrderStatus.FILLED else o.filled  # "filled" means all of it
        if status in TERMINAL and dec(e.get("cum_qty", full)) > o.filled:
            return [], True  # fills we never saw: reconcile before reporting the end
        o.status = status
        reason = e.get("reason") if status is not OrderStatus.FILLED else None
        return [self._report(o, status, reason=None if reason is None else str(reason),
                             ts_ns=_ts_ns(e.get("timestamp")))], False

    # -- fills (WS or REST)

    def _fill(self, o: TrackedOrder, keys: set[str], qty: Decimal, price: Decimal,
              fee: Decimal, ts_ns: int, last: bool) -> ExecutionReportEvent | None:
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
        return self._fill(o, keys, dec(t["vol"]), dec(t["price"]), dec(t.get("fee", 0)),
                          _ts_ns(t.get("time")), False)

    def apply_rest_order(self, order_id: str, info: Mapping[str, Any]
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
            log.warning("order %s: %s filled but only %s in trades", order_id, vol_exec,
                        o.filled)
            o.filled = vol_exec
            if info.get("price") is not None and dec(info["price"]) > 0:
                o.avg_price = dec(info["price"])
        if status == o.status:
            return None
        o.status = status
        reason = info.get("reason") if status is OrderStatus.CANCELLED else None
        return self._report(o, status, reason=None if reason is None else str(reason),
                            ts_ns=_ts_ns(info.get("closetm") or info.get("opentm")))

    @staticmethod
    def _report(o: TrackedOrder, status: OrderStatus, *, last_qty: Decimal | None = None,
                last_price: Decimal | None = None, fee: Decimal = ZERO,
                reason: str | None = None, ts_ns: int) -> ExecutionReportEvent:
        return ExecutionReportEvent(
            client_order_id=o.client_order_id, exchange_order_id=o.order_id, signal_id=None,
            pair=o.pair, side=o.side, order_type=o.type, status=status, order_qty=o.qty,
            filled_qty=o.filled, avg_price=o.avg_price, last_fill_qty=last_qty,
            last_fill_price=last_price, fee=fee, fee_asset=o.pair.partition("/")[2],
            reason=reason, ts_ns=ts_ns)


def _ws_fill_keys(e: Mapping[str, Any], pair: str) -> set[str]:
    """Every id a WS fill is known by: exec_id (= the trade txid REST uses) and trade_id."""
    keys = set()
    if e.get("exec_id") is not None:
        keys.add(f"x:{e['exec_id']}")
    if e.get("trade_id") is not None:
        keys.add(f"t:{pair}:{e['trade_id']}")
    return keys or {f"x:{e.get('order_id')}:{e.get('timestamp')}"}


def _fee(fees: object, e: Mapping[str, Any], pair: str) -> Decimal:
    """The fill's fee in the quote currency; a base-currency fee is valued at the fill price."""
    quote = pair.partition("/")[2]
    total = ZERO
    for item in fees if isinstance(fees, list) else []:
        qty = dec(item.get("qty", 0))
        if item.get("asset") == quote:
            total += qty
        else:
            total += qty * dec(e.get("last_price", 0))
    return total


# --- REST shapes -> domain -------------------------------------------------------------------


def venue_order_from_rest(txid: str, info: Mapping[str, Any], pairs: tuple[str, ...]
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
        client_order_id=str(info.get("cl_ord_id") or ""), exchange_order_id=txid, pair=pair,
        side=Side(str(descr.get("type"))), type=otype, qty=dec(info.get("vol", 0)),
        filled_qty=dec(info.get("vol_exec", 0)),
        limit_price=price if otype is OrderType.LIMIT else None,
        trigger_price=price if otype in _TRIGGERED else None,
        is_open=status in ("open", "pending"), status=status)


def venue_fill_from_rest(txid: str, t: Mapping[str, Any], pairs: tuple[str, ...],
                         coid_of: Callable[[str], str | None]) -> VenueFill | None:
    pair = pair_from_rest(str(t.get("pair", "")), pairs)
    if pair is None:
        return None
    oid = str(t.get("ordertxid", ""))
    return VenueFill(trade_id=txid, client_order_id=coid_of(oid), exchange_order_id=oid,
                     pair=pair, side=Side(str(t.get("type"))), qty=dec(t.get("vol", 0)),
                     price=dec(t.get("price", 0)), fee=dec(t.get("fee", 0)),
                     ts_ns=_ts_ns(t.get("time")))


# --- the venue -------------------------------------------------------------------------------


class _ConnectionLost(Exception):
    """The WebSocket went away with requests in flight."""


def _is_breaker_failure(exc: BaseException) -> bool:
    return isinstance(exc, VenueBusy | VenueUncertain)


class KrakenTradingVenue:
    """Kraken spot trading over the private WebSocket v2 with REST lookups and fallback."""

    name = "kraken"

    def __init__(
        self,
        settings: KrakenSettings,
        credentials: Credentials,
        *,
        pairs: tuple[str, ...] = ("XRP/USD", "DOGE/USD"),
        nonce: NonceSource | None = None,
        rest: KrakenPrivateRest | None = None,
        ws_url: str | None = None,
        rest_url: str | None = None,
        breaker_fail_max: int = 5,
        breaker_reset_s: float = 30.0,
        dms_timeout_s: int = 60,
        dms_interval_s: float = 20.0,
        rng: random.Random | None = None,
    ) -> None:
        self.settings = settings
        self.pairs = pairs
        self.ws_url = ws_url or settings.ws_private_url
        self.rest = rest or KrakenPrivateRest(rest_url or settings.rest_url, credentials,
                                              nonce or NonceSource(), settings.request_timeout_s)
        self.tracker = ExecutionTracker(pairs)
        self.breaker = pybreaker.CircuitBreaker(
            fail_max=breaker_fail_max, reset_timeout=breaker_reset_s,
            exclude=[lambda e: not _is_breaker_failure(e)], throw_new_error_on_trip=False,
            name="kraken")
        self.dms_timeout_s = dms_timeout_s
        self.dms_interval_s = dms_interval_s
        self._rng = rng or random.Random()
        self._ids = itertools.count(1)
        self._pending: dict[int, asyncio.Future[dict[str, Any]]] = {}
        self._ws: ClientConnection | None = None
        self._token: str | None = None
        self._connected = False
        self._healthy = False
        self._on_report: ReportCallback | None = None
        self._tasks: set[asyncio.Task[Any]] = set()
        self._run_task: asyncio.Task[None] | None = None
        self._dms_task: asyncio.Task[None] | None = None
        self._ready = asyncio.Event()
        self._attempted = asyncio.Event()
        self._sent: set[str] = set()
        self.ws_balances: dict[tuple[str, str, str], Decimal] = {}
        self.connections = 0
        self.reconnects = 0
        self.requests = 0
        self.dms_armed = 0
        self.errors: Counter[str] = Counter()
        self.last_disconnect_reason = ""

    def __repr__(self) -> str:
        return (f"KrakenTradingVenue(ws_url={self.ws_url!r}, rest_url={self.rest.base_url!r}, "
                f"connected={self._connected})")

    @property
    def connected(self) -> bool:
        """True while the private WebSocket is up and subscribed."""
        return self._connected

    @property
    def stats(self) -> dict[str, object]:
        return {"connections": self.connections, "reconnects": self.reconnects,
                "requests": self.requests, "dms_armed": self.dms_armed,
                "errors": dict(self.errors), "breaker": self.breaker.current_state}

    # --- lifecycle -------------------------------------------------------------------------

    async def start(self, on_report: ReportCallback) -> None:
        """Connect, authenticate, subscribe; raises VenueAuthError if the credentials cannot
        work. A transient failure on the first attempt is not fatal: reconnecting continues in
        the background and requests fall back to REST meanwhile."""
        self._on_report = on_report
        self._run_task = asyncio.create_task(self._run(), name="kraken-private-ws")
        waiters = [asyncio.ensure_future(self._ready.wait()),
                   asyncio.ensure_future(self._attempted.wait())]
        try:
            await asyncio.wait([*waiters, self._run_task], return_when=asyncio.FIRST_COMPLETED)
        finally:
            for w in waiters:
                w.cancel()
        if self._run_task.done():
            exc = self._run_task.exception()
            await self.stop()
            raise exc if exc is not None else VenueBusy("Kraken private WebSocket ended")
        if self.dms_timeout_s > 0 and self.dms_interval_s > 0:
            self._dms_task = asyncio.create_task(self._dms_loop(), name="kraken-dms")

    async def stop(self) -> None:
        """Disconnect. The dead man's switch is left armed on purpose: unless the bot comes
        back and re-arms it, every working order is cancelled when it expires."""
        for task in (self._dms_task, self._run_task, *self._tasks):
            if task is not None:
                task.cancel()
        await asyncio.gather(*(t for t in (self._dms_task, self._run_task, *self._tasks)
                               if t is not None), return_exceptions=True)
        self._dms_task = self._run_task = None
        self._tasks.clear()
        await self.rest.close()

    async def _run(self) -> None:
        """Connect, serve, reconnect with backoff until cancelled."""
        attempt = 0
        first = True
        while True:
            self._healthy = False
            try:
                await self._session()
                reason = "connection closed by peer"
            except VenueAuthError:
                if first:
                    raise
                log.exception("kraken private WebSocket: credentials refused")
                reason = "credentials refused"
            except (OSError, TimeoutError, ConnectionClosed, InvalidHandshake, VenueBusy,
                    VenueUncertain, _ConnectionLost) as exc:
                reason = f"{type(exc).__name__}: {exc}"
            except Exception as exc:  # a venue must outlive its own bugs; log and reconnect
                log.exception("kraken private WebSocket failed")
                reason = f"{type(exc).__name__}: {exc}"
            first = False
            self._attempted.set()
            self.last_disconnect_reason = reason
            self.errors["disconnect"] += 1
            attempt = 0 if self._healthy else attempt + 1
            delay = backoff_delay(attempt, self.settings.reconnect_initial_s,
                                  self.settings.reconnect_max_s, self.settings.reconnect_jitter,
                                  self._rng)
            log.warning("kraken private WebSocket disconnected",
                        extra={"reason": reason, "retry_in_s": round(delay, 3)})
            self.reconnects += 1
            await asyncio.sleep(delay)

    async def _session(self) -> None:
        """One connection: fresh token, connect, subscribe, read. ``_healthy`` says whether it
        got as far as subscribed (a healthy connection resets the backoff)."""
        token = await self._rest_call(self.rest.websocket_token)
        async with connect(self.ws_url, open_timeout=self.settings.connect_timeout_s,
                           max_size=2**22, compression=None, ping_interval=20,
                           ping_timeout=20, close_timeout=2, logger=_wire_log) as ws:
            self.connections += 1
            self._ws, self._token = ws, token
            reader = asyncio.create_task(self._read(ws))
            try:
                await self._subscribe()
                self._connected = self._healthy = True
                self._ready.set()
                await reader
            finally:
                self._connected = False
                self._ws = None
                reader.cancel()
                await asyncio.gather(reader, return_exceptions=True)
                self._fail_pending()

    async def _subscribe(self) -> None:
        await self._request("subscribe", {"channel": "executions", "snap_orders": True,
                                          "snap_trades": False}, changes_orders=False,
                            subscribing=True)
        await self._request("subscribe", {"channel": "balances", "snapshot": True},
                            changes_orders=False, subscribing=True)

    def _fail_pending(self) -> None:
        for fut in self._pending.values():
            if not fut.done():
                fut.set_exception(_ConnectionLost("connection lost with the request in flight"))
        self._pending.clear()

    # --- reading ---------------------------------------------------------------------------

    async def _read(self, ws: ClientConnection) -> None:
        try:
            async for raw in ws:
                await self._handle(raw)
        finally:
            self._connected = False
            self._fail_pending()

    async def _handle(self, raw: str | bytes) -> None:
        try:
            msg = _decoder.decode(raw)
        except msgspec.DecodeError:
            log.warning("undecodable private WebSocket frame")
            self.errors["decode"] += 1
            return
        if not isinstance(msg, dict):
            return
        req_id = msg.get("req_id")
        if "method" in msg and isinstance(req_id, int):
            fut = self._pending.get(req_id)
            if fut is not None and not fut.done():
                fut.set_result(msg)
            return
        channel = msg.get("channel")
        if channel == "executions":
            await self._executions(msg)
        elif channel == "balances":
            self._balances(msg)

    async def _executions(self, msg: dict[str, Any]) -> None:
        try:
            reports, suspects = self.tracker.feed(msg)
        except (ValueError, KeyError, TypeError):
            log.exception("unreadable executions message")
            self.errors["decode"] += 1
            return
        await self._emit(reports)
        if suspects:
            self._spawn(self._reconcile(suspects))

    def _balances(self, msg: dict[str, Any]) -> None:
        """Keep the streamed balances (per asset and wallet) for ``ws_balances``."""
        for e in msg.get("data") or []:
            asset = asset_code(str(e.get("asset", "")))
            if msg.get("type") == "snapshot":
                for w in e.get("wallets") or []:
                    key = (asset, str(w.get("type")), str(w.get("id")))
                    self.ws_balances[key] = dec(w.get("balance", 0))
            elif e.get("balance") is not None:
                key = (asset, str(e.get("wallet_type")), str(e.get("wallet_id")))
                self.ws_balances[key] = dec(e["balance"])

    async def _emit(self, reports: Iterable[ExecutionReportEvent]) -> None:
        for report in reports:
            if self._on_report is None:
                continue
            try:
                await self._on_report(report)
            except Exception:
                log.exception("on_report failed for %s", report.client_order_id)

    def _spawn(self, coro: Awaitable[None]) -> None:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    # --- requests --------------------------------------------------------------------------

    async def _request(self, method: str, params: Mapping[str, Any], *, changes_orders: bool,
                       subscribing: bool = False) -> dict[str, Any]:
        """Send one WS request and wait for its response (matched by req_id)."""
        ws = self._ws
        if ws is None or not (self._connected or subscribing):
            raise VenueBusy(f"Kraken {method}: private WebSocket not connected")
        req_id = next(self._ids)
        fut: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self._pending[req_id] = fut
        self.requests += 1
        try:
            try:
                await ws.send(encode_request(method, {**params, "token": self._token}, req_id)
                              .decode())
            except ConnectionClosed:  # raised before anything was written: not sent
                self.errors["busy"] += 1
                raise VenueBusy(f"Kraken {method}: connection closed before sending") from None
            msg = await self._await_response(method, fut, changes_orders)
        finally:
            self._pending.pop(req_id, None)
        if msg.get("success"):
            result = msg.get("result")
            return result if isinstance(result, dict) else {}
        raise self._count(venue_error(str(msg.get("error")), method,
                                      changes_orders=changes_orders))

    async def _await_response(self, method: str, fut: asyncio.Future[dict[str, Any]],
                              changes_orders: bool) -> dict[str, Any]:
        timeout = self.settings.request_timeout_s
        try:
            return await asyncio.wait_for(fut, timeout)
        except (TimeoutError, _ConnectionLost) as exc:
            why = "no response in time" if isinstance(exc, TimeoutError) else str(exc)
            line = f"Kraken {method}: {why}"
            raise self._count(VenueUncertain(line) if changes_orders else VenueBusy(line)
                              ) from None

    def _count(self, exc: VenueError) -> VenueError:
        kind = {OrderRejected: "rejected", VenueBusy: "busy", VenueUncertain: "uncertain",
                VenueAuthError: "auth"}.get(type(exc), "other")
        self.errors[kind] += 1
        return exc

    async def _rest_call(self, fn: Callable[..., Awaitable[T]], *args: Any, **kw: Any) -> T:
        """A REST client call with its errors as venue errors."""
        self.requests += 1
        try:
            return await fn(*args, **kw)
        except KrakenError as exc:
            raise self._count(from_kraken_error(exc)) from None

    async def _guarded(self, fn: Callable[[], Awaitable[T]], *, refuse_when_open: bool) -> T:
        """Run ``fn`` under the circuit breaker. While it is open, refuse (submit) or run
        unguarded (cancels and lookups: they reduce risk or resolve uncertainty)."""
        try:
            with self.breaker.calling():
                return await fn()
        except pybreaker.CircuitBreakerError:
            if refuse_when_open:
                self.errors["breaker_open"] += 1
                raise VenueBusy("circuit breaker open after repeated busy/uncertain outcomes; "
                                "not sending", self.breaker.reset_timeout) from None
        return await fn()

    # --- orders ----------------------------------------------------------------------------

    async def submit(self, order: OrderRequest) -> str:
        """Send one order; returns Kraken's order id. A client order id sent before is looked
        up first and, if Kraken has it, not sent again."""
        _check_order(order)
        return await self._guarded(lambda: self._submit(order), refuse_when_open=True)

    async def _submit(self, order: OrderRequest) -> str:
        coid = order.client_order_id
        if coid in self._sent or coid in self.tracker.orders:
            known = await self._lookup(coid)
            if known is not None:
                log.info("order %s already at Kraken as %s; not resending", coid,
                         known.exchange_order_id)
                return known.exchange_order_id
        self.tracker.register(order)
        self._sent.add(coid)
        try:
            oid = await (self._ws_add(order) if self._connected else self._rest_add(order))
        except (OrderRejected, VenueBusy, VenueAuthError):
            self.tracker.forget(coid)
            raise
        self.tracker.set_order_id(coid, oid)
        return oid

    async def _ws_add(self, order: OrderRequest) -> str:
        params: dict[str, Any] = {
            "order_type": order.type.value, "side": order.side.value,
            "order_qty": json_number(order.qty), "symbol": order.pair,
            "cl_ord_id": order.client_order_id,
        }
        if order.type is OrderType.LIMIT:
            params["limit_price"] = json_number(_need(order.limit_price, order))
        if order.type in _TRIGGERED:
            params["triggers"] = {"reference": "last", "price_type": "static",
                                  "price": json_number(_need(order.trigger_price, order))}
        if order.type is not OrderType.MARKET:
            params["time_in_force"] = "gtc"
        result = await self._request("add_order", params, changes_orders=True)
        oid = result.get("order_id")
        if not oid:
            raise self._count(VenueUncertain("Kraken add_order: accepted without an order id"))
        return str(oid)

    async def _rest_add(self, order: OrderRequest) -> str:
        price = order.limit_price if order.type is OrderType.LIMIT else order.trigger_price
        return await self._rest_call(self.rest.add_order, order.pair, order.side.value,
                                     order.type.value, order.qty, price,
                                     order.client_order_id)

    async def cancel(self, client_order_id: str) -> None:
        """Cancel one order; unknown or already finished orders are not an error."""
        try:
            await self._guarded(lambda: self._cancel(client_order_id), refuse_when_open=False)
        except OrderRejected as exc:
            if UNKNOWN_ORDER not in exc.reason:
                raise
            log.info("cancel %s: Kraken does not know it (finished or never placed)",
                     client_order_id)

    async def _cancel(self, coid: str) -> None:
        if self._connected:
            await self._request("cancel_order", {"cl_ord_id": [coid]}, changes_orders=True)
        else:
            await self._rest_call(self.rest.cancel_order, cl_ord_id=coid)

    async def cancel_all(self) -> int:
        """Cancel every working order; returns Kraken's count."""
        async def run() -> int:
            if self._connected:
                result = await self._request("cancel_all", {}, changes_orders=True)
                return int(result.get("count", 0))
            return await self._rest_call(self.rest.cancel_all)
        return await self._guarded(run, refuse_when_open=False)

    # --- queries ---------------------------------------------------------------------------

    async def lookup(self, client_order_id: str) -> VenueOrder | None:
        """Memory first (the executions stream), then OpenOrders and ClosedOrders by
        ``cl_ord_id``; None means Kraken never got the order."""
        return await self._guarded(lambda: self._lookup(client_order_id),
                                   refuse_when_open=False)

    async def _lookup(self, client_order_id: str) -> VenueOrder | None:
        tracked = self.tracker.orders.get(client_order_id)
        if tracked is not None and tracked.order_id:
            return tracked.venue_order()
        found = await self._rest_find(client_order_id)
        if found is None:
            return None
        txid, info = found
        self.tracker.set_order_id(client_order_id, txid)
        order = venue_order_from_rest(txid, info, self.pairs)
        if order is not None and not order.client_order_id:
            order = _with_coid(order, client_order_id)
        return order

    async def _rest_find(self, coid: str) -> tuple[str, dict[str, Any]] | None:
        for fetch in (self.rest.open_orders, self.rest.closed_orders):
            orders = await self._rest_call(fetch, cl_ord_id=coid)
            match = _match_coid(orders, coid)
            if match is not None:
                return match
        return None

    async def open_orders(self) -> list[VenueOrder]:
        orders = await self._guarded(lambda: self._rest_call(self.rest.open_orders),
                                     refuse_when_open=False)
        out = [venue_order_from_rest(txid, info, self.pairs) for txid, info in orders.items()]
        return [o for o in out if o is not None]

    async def balances(self) -> dict[str, Decimal]:
        raw = await self._guarded(lambda: self._rest_call(self.rest.balance),
                                  refuse_when_open=False)
        return normalise_balances(raw)

    async def fills_since(self, ts_ns: int) -> list[VenueFill]:
        trades = await self._guarded(
            lambda: self._rest_call(self.rest.trades_history, start=ts_ns // 1_000_000_000 - 1),
            refuse_when_open=False)
        fills = [venue_fill_from_rest(txid, t, self.pairs, self._coid_of)
                 for txid, t in trades.items()]
        return sorted((f for f in fills if f is not None and f.ts_ns >= ts_ns),
                      key=lambda f: f.ts_ns)

    def _coid_of(self, order_id: str) -> str | None:
        tracked = self.tracker.by_order_id(order_id)
        return tracked.client_order_id if tracked is not None else None

    # --- reconciliation --------------------------------------------------------------------

    async def _reconcile(self, suspects: list[TrackedOrder]) -> None:
        """Resolve orders whose end or fills we missed: their REST state, then their fills
        from TradesHistory (deduplicated), then the final status."""
        try:
            infos = await self._suspect_infos(suspects)
            if not infos:
                return
            start = min(int(dec(i.get("opentm", time.time()))) for i in infos.values()) - 1
            trades = await self._rest_call(self.rest.trades_history, start=start)
        except VenueError as exc:
            log.warning("reconciliation after reconnect failed: %s", exc)
            return
        reports = []
        for txid, t in sorted(trades.items(), key=lambda kv: dec(kv[1].get("time", 0))):
            if str(t.get("ordertxid")) in infos:
                reports.append(self.tracker.apply_rest_trade(txid, t))
        for oid, info in infos.items():
            reports.append(self.tracker.apply_rest_order(oid, info))
        await self._emit(r for r in reports if r is not None)

    async def _suspect_infos(self, suspects: list[TrackedOrder]) -> dict[str, dict[str, Any]]:
        known = [o.order_id for o in suspects if o.order_id]
        infos = await self._rest_call(self.rest.query_orders, known) if known else {}
        for o in suspects:
            if o.order_id is None:
                found = await self._rest_find(o.client_order_id)
                if found is not None:
                    self.tracker.set_order_id(o.client_order_id, found[0])
                    infos[found[0]] = found[1]
        return infos

    # --- dead man's switch -----------------------------------------------------------------

    async def _dms_loop(self) -> None:
        while True:
            try:
                await self.arm_dead_mans_switch()
            except VenueError as exc:
                log.warning("dead man's switch not re-armed: %s", exc)
            await asyncio.sleep(self.dms_interval_s)

    async def arm_dead_mans_switch(self) -> None:
        """``cancel_all_orders_after(dms_timeout_s)`` over the WS, REST if that fails. With
        ``dms_timeout_s`` 0 it does nothing (sending 0 would disarm a switch set elsewhere)."""
        if self.dms_timeout_s <= 0:
            return
        if self._connected:
            try:
                await self._request("cancel_all_orders_after", {"timeout": self.dms_timeout_s},
                                    changes_orders=True)
                self.dms_armed += 1
                return
            except (VenueBusy, VenueUncertain) as exc:
                log.info("dead man's switch over WS failed (%s); trying REST", exc)
        await self._rest_call(self.rest.cancel_all_orders_after, self.dms_timeout_s)
        self.dms_armed += 1


def _need(value: Decimal | None, order: OrderRequest) -> Decimal:
    if value is None:  # _check_order makes this unreachable; keeps the types honest
        raise OrderRejected(f"{order.type.value} order {order.client_order_id} has no price")
    return value


def _check_order(order: OrderRequest) -> None:
    """Refuse locally what Kraken would refuse anyway (and never count it as an outage)."""
    coid = order.client_order_id
    if not coid or (len(coid) > 18 and len(coid.replace("-", "")) != 32) or not coid.isascii():
        raise OrderRejected(f"client order id {coid!r} is not 1-18 ASCII characters or a UUID")
    if order.qty <= 0:
        raise OrderRejected(f"order {coid}: quantity must be positive")
    if order.type is OrderType.LIMIT and order.limit_price is None:
        raise OrderRejected(f"limit order {coid} has no limit price")
    if order.type in _TRIGGERED and order.trigger_price is None:
        raise OrderRejected(f"{order.type.value} order {coid} has no trigger price")


def _match_coid(orders: Mapping[str, dict[str, Any]], coid: str
                ) -> tuple[str, dict[str, Any]] | None:
    """The order with ``cl_ord_id`` == coid; an entry without the field counts only if it is
    the sole answer to a query filtered by that id."""
    for txid, info in orders.items():
        if info.get("cl_ord_id") == coid:
            return txid, info
    if len(orders) == 1:
        txid, info = next(iter(orders.items()))
        if info.get("cl_ord_id") is None:
            return txid, info
    return None


def _with_coid(order: VenueOrder, coid: str) -> VenueOrder:
    return VenueOrder(coid, order.exchange_order_id, order.pair, order.side, order.type,
                      order.qty, order.filled_qty, order.limit_price, order.trigger_price,
                      order.is_open, order.status)
