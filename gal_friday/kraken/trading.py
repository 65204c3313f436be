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
* Each entry of a batched ``executions`` (or ``balances``) message is applied on its own: one
  that cannot be read is logged with its ids, counted (``stats['unreadable_entries']``) and
  its order looked up over REST like a suspect, so it never costs the fills beside it.
* A circuit breaker (``pybreaker``) counts consecutive ``VenueBusy`` / ``VenueUncertain``
  outcomes; while it is open ``submit`` refuses without touching the exchange. Cancels and
  lookups still go through: they reduce risk or resolve uncertainty. ``OrderRejected`` is the
  exchange working normally and does not count.
* The dead man's switch (``cancel_all_orders_after``) is re-armed every ``dms_interval_s``
  while started. ``stop`` deliberately leaves it armed: a bot that stopped (or crashed) has no
  working orders left once ``dms_timeout_s`` expires; a bot that restarts in time re-arms it.

The secret stays inside ``Credentials`` and the REST client; the WebSocket token is never
logged and no repr or error message contains either.

This module is the venue: connection, token, requests, circuit breaker, dead man's switch,
reconciliation. The sans-IO parts live beside it: ``schemas`` (the private messages as typed
structures), ``errors`` (Kraken's error strings as venue errors) and ``executions`` (the
execution tracker and the converters to domain reports, orders and fills).
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
from decimal import Decimal
from typing import Any, TypeVar

import pybreaker
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidHandshake

from gal_friday.config import Credentials, KrakenSettings
from gal_friday.events import ExecutionReportEvent, OrderType
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
from gal_friday.kraken.errors import UNKNOWN_ORDER, from_kraken_error, venue_error
from gal_friday.kraken.executions import (
    TRIGGERED,
    ExecutionTracker,
    TrackedOrder,
    dec,
    venue_fill_from_rest,
    venue_order_from_rest,
)
from gal_friday.kraken.private import KrakenPrivateRest
from gal_friday.kraken.rest import KrakenError
from gal_friday.kraken.schemas import (
    AddOrderResult,
    CancelAllResult,
    PrivateFrame,
    PrivateMessageError,
    UnreadableEntry,
    balances_message,
    decode_frame,
    encode_request,
    executions_message,
    json_number,
    method_result,
)
from gal_friday.kraken.symbols import asset_code
from gal_friday.kraken.ws import backoff_delay, raise_if_cancelling

log = logging.getLogger(__name__)
# The websockets library's own logger: at DEBUG it dumps frames, and every private request
# frame carries the session token. Pinned to INFO so turning on debug logging cannot leak it.
_wire_log = logging.getLogger(f"{__name__}.wire")
_wire_log.setLevel(logging.INFO)
T = TypeVar("T")
ZERO = Decimal(0)
QUERY_ORDERS_MAX = 50  # txids per QueryOrders call
MAX_UNKNOWN_LOOKUPS = 100  # untracked orders waiting to be found (a hostile stream is bounded)

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
        self.rest = rest or KrakenPrivateRest(
            rest_url or settings.rest_url,
            credentials,
            nonce or NonceSource(),
            settings.request_timeout_s,
        )
        self.tracker = ExecutionTracker(pairs)
        self.breaker = pybreaker.CircuitBreaker(
            fail_max=breaker_fail_max,
            reset_timeout=breaker_reset_s,
            exclude=[lambda e: not _is_breaker_failure(e)],
            throw_new_error_on_trip=False,
            name="kraken",
        )
        self.dms_timeout_s = dms_timeout_s
        self.dms_interval_s = dms_interval_s
        self._rng = rng or random.Random()
        self._ids = itertools.count(1)
        self._pending: dict[int, asyncio.Future[PrivateFrame]] = {}
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
        self.unreadable_entries = 0  # private message entries not read (each looked up)
        self._orders_wanted: dict[str, TrackedOrder] = {}  # to look up over REST, by coid
        self._unknown_wanted: dict[str, UnreadableEntry] = {}  # untracked orders to find
        self._lookup_task: asyncio.Future[None] | None = None
        self.last_disconnect_reason = ""

    def __repr__(self) -> str:
        return (
            f"KrakenTradingVenue(ws_url={self.ws_url!r}, rest_url={self.rest.base_url!r}, "
            f"connected={self._connected})"
        )

    @property
    def connected(self) -> bool:
        """True while the private WebSocket is up and subscribed."""
        return self._connected

    @property
    def stats(self) -> dict[str, object]:
        return {
            "connections": self.connections,
            "reconnects": self.reconnects,
            "requests": self.requests,
            "dms_armed": self.dms_armed,
            "unreadable_entries": self.unreadable_entries,
            "errors": dict(self.errors),
            "breaker": self.breaker.current_state,
        }

    # --- lifecycle -------------------------------------------------------------------------

    async def start(self, on_report: ReportCallback) -> None:
        """Connect, authenticate, subscribe; raises VenueAuthError if the credentials cannot
        work. A transient failure on the first attempt is not fatal: reconnecting continues in
        the background and requests fall back to REST meanwhile."""
        self._on_report = on_report
        self._run_task = asyncio.create_task(self._run(), name="kraken-private-ws")
        waiters = [
            asyncio.ensure_future(self._ready.wait()),
            asyncio.ensure_future(self._attempted.wait()),
        ]
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
        """Disconnect. The dead man's switch is left armed (unless a clean stop disarmed it
        first): unless the bot comes back and re-arms it, every working order is cancelled
        when it expires."""
        for task in (self._dms_task, self._run_task, *self._tasks):
            if task is not None:
                task.cancel()
        await asyncio.gather(
            *(t for t in (self._dms_task, self._run_task, *self._tasks) if t is not None),
            return_exceptions=True,
        )
        self._dms_task = self._run_task = None
        self._tasks.clear()
        await self.rest.close()

    async def _run(self) -> None:
        """Connect, serve, reconnect with backoff until cancelled."""
        attempt = 0
        first = True
        while True:
            raise_if_cancelling()
            self._healthy = False
            try:
                await self._session()
                reason = "connection closed by peer"
            except VenueAuthError:
                if first:
                    raise
                log.exception("kraken private WebSocket: credentials refused")
                reason = "credentials refused"
            except (
                OSError,
                TimeoutError,
                ConnectionClosed,
                InvalidHandshake,
                VenueBusy,
                VenueUncertain,
                _ConnectionLost,
            ) as exc:
                reason = f"{type(exc).__name__}: {exc}"
            except Exception as exc:  # a venue must outlive its own bugs; log and reconnect
                log.exception("kraken private WebSocket failed")
                reason = f"{type(exc).__name__}: {exc}"
            first = False
            self._attempted.set()
            self.last_disconnect_reason = reason
            self.errors["disconnect"] += 1
            attempt = 0 if self._healthy else attempt + 1
            delay = backoff_delay(
                attempt,
                self.settings.reconnect_initial_s,
                self.settings.reconnect_max_s,
                self.settings.reconnect_jitter,
                self._rng,
            )
            log.warning(
                "kraken private WebSocket disconnected",
                extra={"reason": reason, "retry_in_s": round(delay, 3)},
            )
            self.reconnects += 1
            await asyncio.sleep(delay)

    async def _session(self) -> None:
        """One connection: fresh token, connect, subscribe, read. ``_healthy`` says whether it
        got as far as subscribed (a healthy connection resets the backoff)."""
        token = await self._rest_call(self.rest.websocket_token)
        async with connect(
            self.ws_url,
            open_timeout=self.settings.connect_timeout_s,
            max_size=2**22,
            compression=None,
            ping_interval=20,
            ping_timeout=20,
            close_timeout=2,
            logger=_wire_log,
        ) as ws:
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
        await self._request(
            "subscribe",
            {"channel": "executions", "snap_orders": True, "snap_trades": False},
            changes_orders=False,
            subscribing=True,
        )
        await self._request(
            "subscribe",
            {"channel": "balances", "snapshot": True},
            changes_orders=False,
            subscribing=True,
        )

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
            frame = decode_frame(raw)
        except PrivateMessageError:
            log.warning("undecodable private WebSocket frame")
            self.errors["decode"] += 1
            self._look_up(self.tracker.working())  # it may have been a fill of any of them
            return
        if frame is None:  # JSON, but not an object: nothing we read
            return
        if frame.method is not None and frame.req_id is not None:
            fut = self._pending.get(frame.req_id)
            if fut is not None and not fut.done():
                fut.set_result(frame)
            return
        if frame.channel == "executions":
            await self._executions(frame)
        elif frame.channel == "balances":
            self._balances(frame)

    async def _executions(self, frame: PrivateFrame) -> None:
        """Apply each entry on its own: the readable ones are reported now, the unreadable
        ones are counted and their orders looked up over REST (nothing they said is lost)."""
        try:
            applied = self.tracker.apply(executions_message(frame))
        except PrivateMessageError as exc:  # data not even a list: no entry, no id to read
            log.warning("unreadable executions message", extra={"detail": str(exc)[:200]})
            self.errors["decode"] += 1
            self._look_up(self.tracker.working())  # it may have carried a fill of any of them
            return
        await self._emit(applied.reports)
        self._look_up(applied.suspects)
        for entry in applied.unreadable:
            self._unreadable_entry(entry)

    def _unreadable_entry(self, entry: UnreadableEntry) -> None:
        """Log and count an unreadable entry and look its order up over REST: a tracked
        order is reconciled; an order we do not track is found by its ids; an entry that
        names no order could be a fill of any working order, so all of them are."""
        self.unreadable_entries += 1
        log.warning(
            "unreadable executions entry; looking its order up over REST",
            extra={
                "problem": entry.problem,
                "order_id": entry.order_id,
                "cl_ord_id": entry.cl_ord_id,
            },
        )
        tracked = self.tracker.find(entry.order_id, entry.cl_ord_id)
        if tracked is not None:
            self._look_up([tracked])
        elif entry.order_id or entry.cl_ord_id:
            key = entry.order_id or f"c:{entry.cl_ord_id}"
            if key in self._unknown_wanted or len(self._unknown_wanted) < MAX_UNKNOWN_LOOKUPS:
                self._unknown_wanted[key] = entry
                self._look_up([])
            else:
                self.errors["lookups_dropped"] += 1
        else:
            self._look_up(self.tracker.working())

    def _look_up(self, orders: Iterable[TrackedOrder]) -> None:
        """Queue orders for a REST look-up (suspects after a snapshot, orders named by an
        unreadable entry). One look-up runs at a time and takes everything queued meanwhile,
        50 orders per QueryOrders, so a burst of unreadable entries costs a few REST calls
        (Kraken's REST counter is small), not a few per entry, and an order named twice is
        looked up once."""
        for order in orders:
            self._orders_wanted[order.client_order_id] = order
        busy = self._lookup_task is not None and not self._lookup_task.done()
        if not busy and (self._orders_wanted or self._unknown_wanted):
            self._lookup_task = self._spawn(self._drain_lookups())

    async def _drain_lookups(self) -> None:
        """Run the queued look-ups until none is left; one that fails on an answer it cannot
        read is logged and the others still run (a venue must outlive its own bugs)."""
        while self._orders_wanted or self._unknown_wanted:
            unknown = list(self._unknown_wanted.values())
            self._unknown_wanted.clear()
            batch = list(self._orders_wanted.values())[:QUERY_ORDERS_MAX]
            for order in batch:
                del self._orders_wanted[order.client_order_id]
            for entry in unknown:
                await _logged(self._adopt_unreadable(entry))
            if batch:
                await _logged(self._reconcile(batch))

    async def _adopt_unreadable(self, entry: UnreadableEntry) -> None:
        """An unreadable entry for an order we do not track (placed by an earlier run):
        QueryOrders by its order id, or Open/ClosedOrders by its client id; if it is on one
        of our pairs, track it from what REST says and report its state."""
        try:
            if entry.order_id:
                infos = await self._rest_call(self.rest.query_orders, [entry.order_id])
                found = next(iter(infos.items()), None)
            else:
                found = await self._rest_find(str(entry.cl_ord_id))
        except VenueError as exc:
            log.warning("look-up of an unreadable entry's order failed: %s", exc)
            return
        if found is None:
            return
        adopted = self.tracker.adopt_rest_order(found[0], found[1], entry.cl_ord_id)
        if adopted is not None:
            await self._emit([adopted])

    def _balances(self, frame: PrivateFrame) -> None:
        """Keep the streamed balances (per asset and wallet) for ``ws_balances``; an
        unreadable entry is counted and skipped (REST ``Balance`` stays the source of truth
        for recovery and sizing), the others are kept."""
        try:
            msg = balances_message(frame)
        except PrivateMessageError as exc:
            log.warning("unreadable balances message", extra={"detail": str(exc)[:200]})
            self.errors["decode"] += 1
            return
        for bad in msg.unreadable:
            self.unreadable_entries += 1
            log.warning("unreadable balances entry", extra={"problem": bad.problem})
        for e in msg.data:
            asset = asset_code(str(e.asset))
            if msg.snapshot:
                for w in e.wallets or []:
                    key = (asset, str(w.type), str(w.id))
                    self.ws_balances[key] = w.balance
            elif e.balance is not None:
                key = (asset, str(e.wallet_type), str(e.wallet_id))
                self.ws_balances[key] = e.balance

    async def _emit(self, reports: Iterable[ExecutionReportEvent]) -> None:
        for report in reports:
            if self._on_report is None:
                continue
            try:
                await self._on_report(report)
            except Exception:
                log.exception("on_report failed for %s", report.client_order_id)

    def _spawn(self, coro: Awaitable[None]) -> asyncio.Future[None]:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    # --- requests --------------------------------------------------------------------------

    async def _request(
        self,
        method: str,
        params: Mapping[str, Any],
        *,
        changes_orders: bool,
        subscribing: bool = False,
    ) -> PrivateFrame:
        """Send one WS request and wait for its response (matched by req_id); returns the
        successful response (its result read with ``method_result``)."""
        ws = self._ws
        if ws is None or not (self._connected or subscribing):
            raise VenueBusy(f"Kraken {method}: private WebSocket not connected")
        req_id = next(self._ids)
        fut: asyncio.Future[PrivateFrame] = asyncio.get_running_loop().create_future()
        self._pending[req_id] = fut
        self.requests += 1
        try:
            try:
                await ws.send(
                    encode_request(method, {**params, "token": self._token}, req_id).decode()
                )
            except ConnectionClosed:  # raised before anything was written: not sent
                self.errors["busy"] += 1
                raise VenueBusy(f"Kraken {method}: connection closed before sending") from None
            msg = await self._await_response(method, fut, changes_orders)
        finally:
            self._pending.pop(req_id, None)
        if msg.success:
            return msg
        raise self._count(venue_error(msg.error_text, method, changes_orders=changes_orders))

    async def _await_response(
        self, method: str, fut: asyncio.Future[PrivateFrame], changes_orders: bool
    ) -> PrivateFrame:
        timeout = self.settings.request_timeout_s
        try:
            async with asyncio.timeout(timeout):
                return await fut
        except (TimeoutError, _ConnectionLost) as exc:
            why = "no response in time" if isinstance(exc, TimeoutError) else str(exc)
            line = f"Kraken {method}: {why}"
            raise self._count(VenueUncertain(line) if changes_orders else VenueBusy(line)) from None

    def _count(self, exc: VenueError) -> VenueError:
        kind = {
            OrderRejected: "rejected",
            VenueBusy: "busy",
            VenueUncertain: "uncertain",
            VenueAuthError: "auth",
        }.get(type(exc), "other")
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
                raise VenueBusy(
                    "circuit breaker open after repeated busy/uncertain outcomes; not sending",
                    self.breaker.reset_timeout,
                ) from None
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
                log.info(
                    "order %s already at Kraken as %s; not resending", coid, known.exchange_order_id
                )
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
            "order_type": order.type.value,
            "side": order.side.value,
            "order_qty": json_number(order.qty),
            "symbol": order.pair,
            "cl_ord_id": order.client_order_id,
        }
        if order.type is OrderType.LIMIT:
            params["limit_price"] = json_number(_need(order.limit_price, order))
        if order.type in TRIGGERED:
            params["triggers"] = {
                "reference": "last",
                "price_type": "static",
                "price": json_number(_need(order.trigger_price, order)),
            }
        if order.type is not OrderType.MARKET:
            params["time_in_force"] = "gtc"
        response = await self._request("add_order", params, changes_orders=True)
        try:
            oid = method_result(response, AddOrderResult).order_id
        except PrivateMessageError:
            oid = None  # accepted, but its id unreadable: the same uncertainty as no id
        if not oid:
            raise self._count(VenueUncertain("Kraken add_order: accepted without an order id"))
        return str(oid)

    async def _rest_add(self, order: OrderRequest) -> str:
        price = order.limit_price if order.type is OrderType.LIMIT else order.trigger_price
        return await self._rest_call(
            self.rest.add_order,
            order.pair,
            order.side.value,
            order.type.value,
            order.qty,
            price,
            order.client_order_id,
        )

    async def cancel(self, client_order_id: str) -> None:
        """Cancel one order; unknown or already finished orders are not an error."""
        try:
            await self._guarded(lambda: self._cancel(client_order_id), refuse_when_open=False)
        except OrderRejected as exc:
            if UNKNOWN_ORDER not in exc.reason:
                raise
            log.info(
                "cancel %s: Kraken does not know it (finished or never placed)", client_order_id
            )

    async def _cancel(self, coid: str) -> None:
        if self._connected:
            await self._request("cancel_order", {"cl_ord_id": [coid]}, changes_orders=True)
        else:
            await self._rest_call(self.rest.cancel_order, cl_ord_id=coid)

    async def cancel_all(self) -> int:
        """Cancel every working order; returns Kraken's count."""

        async def run() -> int:
            if self._connected:
                response = await self._request("cancel_all", {}, changes_orders=True)
                return method_result(response, CancelAllResult).count
            return await self._rest_call(self.rest.cancel_all)

        return await self._guarded(run, refuse_when_open=False)

    # --- queries ---------------------------------------------------------------------------

    async def lookup(self, client_order_id: str) -> VenueOrder | None:
        """Memory first (the executions stream), then OpenOrders and ClosedOrders by
        ``cl_ord_id``; None means Kraken never got the order."""
        return await self._guarded(lambda: self._lookup(client_order_id), refuse_when_open=False)

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
        orders = await self._guarded(
            lambda: self._rest_call(self.rest.open_orders), refuse_when_open=False
        )
        out = [venue_order_from_rest(txid, info, self.pairs) for txid, info in orders.items()]
        return [o for o in out if o is not None]

    async def balances(self) -> dict[str, Decimal]:
        raw = await self._guarded(
            lambda: self._rest_call(self.rest.balance), refuse_when_open=False
        )
        return normalise_balances(raw)

    async def fills_since(self, ts_ns: int) -> list[VenueFill]:
        trades = await self._guarded(
            lambda: self._rest_call(self.rest.trades_history, start=ts_ns // 1_000_000_000 - 1),
            refuse_when_open=False,
        )
        fills = [
            venue_fill_from_rest(txid, t, self.pairs, self._coid_of) for txid, t in trades.items()
        ]
        return sorted(
            (f for f in fills if f is not None and f.ts_ns >= ts_ns), key=lambda f: f.ts_ns
        )

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
                await self._request(
                    "cancel_all_orders_after", {"timeout": self.dms_timeout_s}, changes_orders=True
                )
                self.dms_armed += 1
                return
            except (VenueBusy, VenueUncertain) as exc:
                log.info("dead man's switch over WS failed (%s); trying REST", exc)
        await self._rest_call(self.rest.cancel_all_orders_after, self.dms_timeout_s)
        self.dms_armed += 1

    async def disarm_dead_mans_switch(self) -> None:
        """Stop re-arming the switch and disarm it (timeout 0), so the protective orders
        stay at Kraken after a clean stop (see ``DeadMansSwitch``)."""
        task, self._dms_task = self._dms_task, None
        if task is not None:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
        if self.dms_timeout_s <= 0:
            return
        if self._connected:
            with contextlib.suppress(VenueBusy, VenueUncertain):
                await self._request("cancel_all_orders_after", {"timeout": 0}, changes_orders=True)
                return
        await self._rest_call(self.rest.cancel_all_orders_after, 0)


async def _logged(lookup: Awaitable[None]) -> None:
    """Run one REST look-up; a failure on an answer it cannot read is logged, not raised."""
    try:
        await lookup
    except Exception:
        log.exception("REST look-up of missed order state failed")


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
    if order.type in TRIGGERED and order.trigger_price is None:
        raise OrderRejected(f"{order.type.value} order {coid} has no trigger price")


def _match_coid(
    orders: Mapping[str, dict[str, Any]], coid: str
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
    return VenueOrder(
        coid,
        order.exchange_order_id,
        order.pair,
        order.side,
        order.type,
        order.qty,
        order.filled_qty,
        order.limit_price,
        order.trigger_price,
        order.is_open,
        order.status,
    )
