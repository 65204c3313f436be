"""ExecutionHandler: approved signals become orders at a venue, safely.

The same handler drives every venue (Kraken, the simulator's private API, the paper matching
engine), so live, paper and backtest share one order life cycle:

* **Entry**: a limit order at the touch with a client order id; if it is not filled within
  ``entry_timeout_s`` it is cancelled, and with ``entry_timeout_action = "market"`` the
  unfilled rest is sent as a market order once the cancel is confirmed.
* **Protection**: every entry fill (partial fills included) gets a stop-loss and a
  take-profit order for exactly the filled quantity; when one of the two fills, the other is
  cancelled (one-cancels-other, done here because Kraken spot has no OCO). A protective order
  that ends unfilled without our asking (e.g. not enough depth) has its rest protected anew.
* **Exit** (prediction reversal, holding time, flatten): the pair's protective orders are
  cancelled first, then the held quantity is sold at market.
* **Never a duplicate order**: a request the venue definitely did not take (``VenueBusy``) is
  retried with the same client order id; a request with an unknown outcome
  (``VenueUncertain``) is resolved by looking the client order id up at the venue before
  anything is resent, and an order whose fate cannot be resolved is never resent.
* Every state change reaches the bus as an ``ExecutionReportEvent`` carrying the signal id,
  including the handler's own verdicts (REJECTED, ERROR) for orders the venue never took.

The handler reads nothing from other modules: it learns fills only from the venue's reports.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import itertools
import logging
import time
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any, Protocol

import msgspec

from gal_friday.bus import EventBus, Policy
from gal_friday.config import ExecutionSettings
from gal_friday.events import (
    ComponentState,
    ExecutionReportEvent,
    FlattenEvent,
    OpenOrderState,
    OrderRequestEvent,
    OrderStatus,
    OrderType,
    ReconciliationEvent,
    Side,
    SystemStatusEvent,
    TradeSignalApprovedEvent,
    TradingStateChangedEvent,
)
from gal_friday.execution.venue import (
    DeadMansSwitch,
    OrderRejected,
    OrderRequest,
    TradingVenue,
    VenueAuthError,
    VenueBusy,
    VenueError,
    VenueOrder,
    VenueUncertain,
)

log = logging.getLogger(__name__)
_ZERO = Decimal(0)
_NS = 1_000_000_000
_BASE36 = "0123456789abcdefghijklmnopqrstuvwxyz"


class Role(enum.StrEnum):
    ENTRY = "e"
    ENTRY_MARKET = "m"  # the rest of a timed-out entry, at market
    STOP = "s"
    TARGET = "t"
    EXIT = "x"


_PROTECTIVE = (Role.STOP, Role.TARGET)
_ENTRIES = (Role.ENTRY, Role.ENTRY_MARKET)
_NOT_PLACED = frozenset({OrderStatus.REJECTED, OrderStatus.ERROR})
_ROLE_NAMES = {
    Role.ENTRY: "entry",
    Role.ENTRY_MARKET: "entry-market",
    Role.STOP: "stop",
    Role.TARGET: "target",
    Role.EXIT: "exit",
}


class OrderJournal(Protocol):
    """Where an order is written before it is sent, so a restart after a crash knows every
    order that may be at the exchange (the audit store implements it)."""

    async def record_order_intent(self, request: OrderRequest) -> None: ...


def role_of(client_order_id: str) -> Role | None:
    """The role encoded in one of our client order ids; None for an id that is not ours."""
    if len(client_order_id) < 4 or not client_order_id.startswith("gf"):
        return None
    try:
        return Role(client_order_id[2])
    except ValueError:
        return None


class ClientIds:
    """Client order ids unique across restarts and at most 18 characters (Kraken's limit):
    ``gf`` + role + base36 of a counter seeded from the clock in microseconds, so a new run
    starts above anything an earlier run can have used."""

    def __init__(self, clock_ns: Callable[[], int] = time.time_ns) -> None:
        start = clock_ns() // 1000
        if start < 0:
            raise ValueError(f"the clock reads before 1970 ({start} us): not a usable time")
        self._next = itertools.count(start)

    def new(self, role: Role) -> str:
        n, digits = next(self._next), []
        while n:
            n, r = divmod(n, 36)
            digits.append(_BASE36[r])
        return f"gf{role.value}{''.join(reversed(digits))}"


@dataclass(frozen=True, slots=True, eq=False)
class _Wait:
    """An exit waiting for its cancels (released when all end, or at the deadline)."""

    started_ns: int
    deadline_ns: int
    gate: asyncio.Event
    orders: tuple[_Order, ...]


@dataclass(slots=True)
class _Order:
    request: OrderRequest
    role: Role
    signal_id: str
    status: OrderStatus = OrderStatus.SUBMITTED
    filled: Decimal = _ZERO
    sibling: str | None = None  # the other half of a stop / target pair
    cancel_requested: bool = False
    timed_out: bool = False  # an entry cancelled by its timeout (not by HALT or flatten)
    unresolved: bool = False  # sent, outcome unknown, not yet found by lookup
    deadline_ns: int = 0  # entries: when the timeout acts
    done: asyncio.Event = field(default_factory=asyncio.Event)
    submitted: asyncio.Event = field(default_factory=asyncio.Event)  # its request went out

    @property
    def coid(self) -> str:
        return self.request.client_order_id

    @property
    def working(self) -> bool:
        return self.status.is_working


@dataclass(slots=True)
class _Pair:
    """What the handler's own orders hold in one pair, and its brackets."""

    held: Decimal = _ZERO
    unprotected: Decimal = _ZERO
    stop: Decimal = _ZERO
    target: Decimal = _ZERO
    exiting: bool = False


class ExecutionHandler:
    """Routes approvals to one venue and reports every order state change on the bus."""

    def __init__(
        self,
        settings: ExecutionSettings,
        venue: TradingVenue,
        bus: EventBus,
        *,
        clock_ns: Callable[[], int] = time.time_ns,
        ids: ClientIds | None = None,
        tick_s: float = 0.25,
        journal: OrderJournal | None = None,
    ) -> None:
        self.s = settings
        self.venue = venue
        self.journal = journal
        self.bus = bus
        self.clock_ns = clock_ns
        self.ids = ids or ClientIds(clock_ns)
        self.tick_s = tick_s
        self.orders: dict[str, _Order] = {}
        self.pairs: dict[str, _Pair] = {}
        self._tasks: set[asyncio.Task[object]] = set()
        self._timer: asyncio.Task[None] | None = None
        self._in_flight = 0
        self._venue_connected: bool | None = None
        self._halted = False  # HALT or REDUCING: no entry is converted to market
        self._closing = False  # winding down for a stop: no new entry
        self._last_report_ns = 0
        self._last_reconcile_ns = 0
        self._waits: list[_Wait] = []  # exits waiting for their cancels, until a deadline
        self.stats = {
            "submitted": 0,
            "rejected": 0,
            "errors": 0,
            "busy_retries": 0,
            "resolved_by_lookup": 0,
            "reconciliations": 0,
        }

    # --- life cycle ------------------------------------------------------------------------

    def attach(self) -> None:
        self.bus.subscribe(
            TradeSignalApprovedEvent,
            self.on_approved,
            name="execution",
            policy=Policy.BLOCK,
            maxsize=4096,
        )
        self.bus.subscribe(
            (FlattenEvent, TradingStateChangedEvent),
            self.on_control,
            name="execution-control",
            policy=Policy.BLOCK,
        )

    async def on_control(self, event: FlattenEvent | TradingStateChangedEvent) -> None:
        """HALTED, REDUCING or flatten: working entries are cancelled at once (a resting entry
        filling afterwards would be a new entry) and none is converted to market; exits are
        the strategy's, protection stays. Only ACTIVE again lets timed-out entries convert."""
        if isinstance(event, TradingStateChangedEvent):
            self._halted = not event.active
            if event.active:
                return
        log.info("cancelling working entries", extra={"cause": type(event).__name__})
        for order in list(self.orders.values()):
            if order.role in (Role.ENTRY, Role.ENTRY_MARKET) and order.working:
                order.timed_out = False
                self._spawn(self._cancel(order))

    async def start(self) -> None:
        """Start the venue (reports flow from here on) and the timeout timer."""
        await self.venue.start(self.on_venue_report)
        self._timer = asyncio.create_task(self._tick_loop(), name="execution:timer")

    async def wind_down(self, timeout_s: float) -> None:
        """Before a stop, while the bus still runs: leave nothing filled without its stop.

        New entries are refused and working ones cancelled (a resting entry filling after we
        are gone would be a position nobody protects); then, for up to ``timeout_s``, orders
        in flight settle and every filled quantity gets its stop-loss and take-profit, which
        stay at the exchange (a venue's dead man's switch is disarmed once no entry works).
        A quantity that cannot be protected is sold at market."""
        self._closing = True
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s
        while not self._settled() and loop.time() < deadline:
            for order in self.orders.values():
                if order.role in _ENTRIES and order.working and not order.cancel_requested:
                    order.timed_out = False
                    self._spawn(self._cancel(order))
            if self._protection_failed():
                break
            await asyncio.sleep(0.02)
        await self._flatten_unprotected(max(deadline - loop.time(), self.s.cancel_wait_s))
        entries = [o.coid for o in self.orders.values() if o.role in _ENTRIES and o.working]
        held = {p: str(s.held) for p, s in self.pairs.items() if s.held > 0}
        if not entries and isinstance(self.venue, DeadMansSwitch):
            try:
                await self.venue.disarm_dead_mans_switch()
            except VenueError as exc:
                log.warning("dead man's switch not disarmed: %s", exc)
        log.info(
            "execution wound down",
            extra={"held": held, "entries_still_working": entries, "settled": self._settled()},
        )

    def _settled(self) -> bool:
        """No entry working, nothing in flight or pending, everything held protected."""
        return (
            not self._in_flight
            and not self._tasks
            and not any(o.working and o.role in _ENTRIES for o in self.orders.values())
            and not any(o.unresolved for o in self.orders.values())
            and not any(p.unprotected > 0 and p.held > 0 for p in self.pairs.values())
        )

    def _protection_failed(self) -> bool:
        """Quiet, yet something held is unprotected: protecting it was refused."""
        return (
            not self._in_flight
            and not self._tasks
            and any(p.unprotected > 0 and p.held > 0 for p in self.pairs.values())
        )

    async def _flatten_unprotected(self, timeout_s: float) -> None:
        for name, pair in self.pairs.items():
            qty = min(pair.unprotected, pair.held)
            if qty <= 0 or not self.s.protective_orders:
                continue
            log.error(
                "stopping with a quantity that could not be protected; selling it at market",
                extra={"pair": name, "qty": str(qty)},
            )
            pair.unprotected = _ZERO
            order = self._new_order(
                Role.EXIT, f"shutdown-{name}", name, Side.SELL, OrderType.MARKET, qty
            )
            await self._send(order)
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(timeout_s):
                    await order.done.wait()

    async def stop(self) -> None:
        tasks = [*self._tasks, *([self._timer] if self._timer else [])]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await self.venue.stop()

    async def _tick_loop(self) -> None:
        while True:
            await asyncio.sleep(self.tick_s)
            try:
                await self.tick(self.clock_ns())
            except Exception:  # the timer must survive one bad pass
                log.exception("execution timer pass failed")

    async def tick(self, now_ns: int) -> None:
        """Entry timeouts, waits past their deadline, unresolved orders and periodic
        reconciliation, as of ``now_ns``."""
        await self._report_connection()
        for wait in self._waits:
            if now_ns >= wait.deadline_ns or now_ns < wait.started_ns:  # or the clock stepped
                wait.gate.set()
        for order in list(self.orders.values()):
            if (
                order.role is Role.ENTRY
                and order.working
                and not order.cancel_requested
                and order.deadline_ns
                and now_ns >= order.deadline_ns
            ):
                log.info(
                    "entry timed out",
                    extra={"client_order_id": order.coid, "action": self.s.entry_timeout_action},
                )
                order.timed_out = True
                self._spawn(self._cancel(order))
            elif order.unresolved:
                self._spawn(self._resolve_later(order))
        interval = int(self.s.reconcile_interval_s * _NS)
        if interval and now_ns - self._last_reconcile_ns >= interval:
            self._last_reconcile_ns = now_ns
            self._spawn(self.reconcile())

    def adopt(
        self,
        request: OrderRequest,
        *,
        status: OrderStatus,
        filled: Decimal,
        signal_id: str,
        sibling: str | None = None,
        stop: Decimal = _ZERO,
        target: Decimal = _ZERO,
    ) -> None:
        """Take over an order found working at the venue after a restart (crash recovery):
        its reports are handled as if this run had sent it. An entry's ``stop`` and
        ``target`` (its signal's) protect what it fills from now on, as when it was sent."""
        role = role_of(request.client_order_id)
        if role is None:
            raise ValueError(f"{request.client_order_id} is not one of our client order ids")
        order = _Order(request, role, signal_id, status=status, filled=filled, sibling=sibling)
        order.submitted.set()
        self.orders[order.coid] = order
        if role in (Role.ENTRY, Role.ENTRY_MARKET) and stop > 0 and target > 0:
            pair = self._pair(request.pair)
            pair.stop, pair.target = stop, target
        if role is Role.ENTRY:
            order.deadline_ns = self.clock_ns() + int(self.s.entry_timeout_s * _NS)

    def restore_pair(
        self,
        pair: str,
        *,
        held: Decimal,
        stop: Decimal,
        target: Decimal,
        unprotected: Decimal,
        signal_id: str,
    ) -> None:
        """Set what a pair holds after a restart; ``unprotected`` is then protected anew.
        Brackets not given (0) keep what an adopted entry brought: a flat pair with its entry
        still resting must protect that entry's fills at the entry's own stop and target."""
        state = self._pair(pair)
        state.held, state.unprotected = held, _ZERO
        state.stop, state.target = stop or state.stop, target or state.target
        if unprotected > 0 and self.s.protective_orders:
            state.unprotected = unprotected
            self._spawn(self._protect(pair, signal_id))

    async def _report_connection(self) -> None:
        """A venue with a connection (Kraken's private WebSocket) has its state published, so
        monitoring can HALT on a venue that stays away."""
        connected = getattr(self.venue, "connected", None)
        if not isinstance(connected, bool) or connected == self._venue_connected:
            return
        self._venue_connected = connected
        state = ComponentState.CONNECTED if connected else ComponentState.DISCONNECTED
        await self.bus.publish(
            SystemStatusEvent(f"{self.venue.name}.private", state, ts_ns=self.clock_ns())
        )

    # --- approvals ---------------------------------------------------------------------------

    async def on_approved(self, signal: TradeSignalApprovedEvent) -> None:
        if signal.is_exit:
            self._spawn(self._exit(signal))
            return
        if self._closing:
            log.warning("entry not sent: stopping", extra={"signal_id": signal.signal_id})
            return
        pair = self._pair(signal.pair)
        pair.stop, pair.target = signal.stop_loss, signal.take_profit
        role = Role.ENTRY if signal.order_type is OrderType.LIMIT else Role.ENTRY_MARKET
        order = self._new_order(
            role,
            signal.signal_id,
            signal.pair,
            signal.side,
            signal.order_type,
            signal.qty,
            limit=signal.limit_price,
        )
        if role is Role.ENTRY:
            order.deadline_ns = self.clock_ns() + int(self.s.entry_timeout_s * _NS)
        await self._send(order)

    async def _exit(self, signal: TradeSignalApprovedEvent) -> None:
        """Cancel the pair's protective orders, then sell what is held at market."""
        pair = self._pair(signal.pair)
        pair.exiting = True
        try:
            protective = [
                o
                for o in self.orders.values()
                if o.request.pair == signal.pair and o.role in _PROTECTIVE and o.working
            ]
            for order in protective:
                await self._cancel(order)
            await self._until_done(protective, self.s.cancel_wait_s)
            order = self._new_order(
                Role.EXIT,
                signal.signal_id,
                signal.pair,
                signal.side,
                OrderType.MARKET,
                min(signal.qty, pair.held),
            )
            if pair.held <= 0:  # a stop or target sold it meanwhile: nothing to send
                await self._verdict(order, OrderStatus.CANCELLED, "nothing held to sell")
                return
            await self._send(order)
            await order.done.wait()
        finally:
            pair.exiting = False
        if pair.held > 0 and self.s.protective_orders:
            pair.unprotected = pair.held
            await self._protect(signal.pair, signal.signal_id)

    # --- venue reports -----------------------------------------------------------------------

    async def on_venue_report(self, report: ExecutionReportEvent) -> None:
        """Enrich a venue report with its signal, publish it, and act on fills and ends."""
        self._last_report_ns = self.clock_ns()
        order = self.orders.get(report.client_order_id)
        if order is None:
            await self.bus.publish(report)  # not ours (another client, or an earlier run)
            return
        r = order.request
        if (report.signal_id, report.limit_price, report.trigger_price) != (
            order.signal_id,
            r.limit_price,
            r.trigger_price,
        ):
            report = msgspec.structs.replace(
                report,
                signal_id=order.signal_id,
                limit_price=r.limit_price,
                trigger_price=r.trigger_price,
            )
        order.unresolved = False
        delta = report.filled_qty - order.filled
        if delta < 0 or (order.status.is_terminal and delta == 0):
            return  # stale or repeated: never move an order backwards
        order.filled = report.filled_qty
        order.status = report.status
        await self.bus.publish(report)
        if delta > 0:
            self._on_fill(order, delta)
        if report.status.is_terminal:
            order.done.set()
            for wait in self._waits:
                if all(o.done.is_set() for o in wait.orders):
                    wait.gate.set()
            self._on_end(order)

    async def _until_done(self, orders: list[_Order], timeout_s: float) -> None:
        """Until every one of ``orders`` has ended, or ``timeout_s`` has passed on the
        handler's clock (seen by ``tick``: live every ``tick_s``; a backtest or replay on its
        simulated or recorded time, so the wait is the same there as it was live)."""
        if all(o.done.is_set() for o in orders):
            return
        now = self.clock_ns()
        wait = _Wait(now, now + int(timeout_s * _NS), asyncio.Event(), tuple(orders))
        self._waits.append(wait)
        try:
            await wait.gate.wait()
        finally:
            self._waits.remove(wait)

    def _on_fill(self, order: _Order, qty: Decimal) -> None:
        pair = self._pair(order.request.pair)
        if order.request.side is Side.BUY:
            pair.held += qty
            if self.s.protective_orders and order.role in (Role.ENTRY, Role.ENTRY_MARKET):
                pair.unprotected += qty
                self._spawn(self._protect(order.request.pair, order.signal_id))
            return
        pair.held = max(_ZERO, pair.held - qty)
        if order.role in _PROTECTIVE and order.sibling:
            sibling = self.orders.get(order.sibling)
            if sibling is not None and sibling.working and not sibling.cancel_requested:
                log.info(
                    "one of a stop / target pair filled; cancelling the other",
                    extra={"filled": order.coid, "cancel": sibling.coid},
                )
                self._spawn(self._cancel(sibling))

    def _on_end(self, order: _Order) -> None:
        rest = order.request.qty - order.filled
        if (
            order.role is Role.ENTRY
            and rest > 0
            and order.timed_out
            and self.s.entry_timeout_action == "market"
            and not self._halted
            and not self._closing
        ):
            market = self._new_order(
                Role.ENTRY_MARKET,
                order.signal_id,
                order.request.pair,
                order.request.side,
                OrderType.MARKET,
                rest,
            )
            self._spawn(self._send(market))
        elif (
            order.role in _PROTECTIVE
            and rest > 0
            and not order.cancel_requested
            and order.status not in _NOT_PLACED
        ):  # a refusal is _protect's to handle
            self._reprotect(order, rest)

    def _reprotect(self, order: _Order, rest: Decimal) -> None:
        """A protective order ended unfilled without our asking: protect its rest again."""
        pair = self._pair(order.request.pair)
        sibling = self.orders.get(order.sibling or "")
        if sibling is not None and sibling.working:
            if sibling.filled > 0:
                return  # the sibling is selling this quantity
            self._spawn(self._cancel(sibling))
        if pair.exiting or not self.s.protective_orders:
            return
        log.warning(
            "protective order ended unfilled; protecting its rest again",
            extra={"client_order_id": order.coid, "reason": order.status, "qty": str(rest)},
        )
        pair.unprotected += min(rest, pair.held)
        self._spawn(self._protect(order.request.pair, order.signal_id))

    async def _protect(self, pair_name: str, signal_id: str) -> None:
        """Stop-loss and take-profit for the pair's unprotected quantity, as siblings."""
        pair = self._pair(pair_name)
        qty = pair.unprotected
        if qty <= 0 or pair.exiting or pair.stop <= 0 or pair.target <= 0:
            return
        pair.unprotected = _ZERO
        stop = self._new_order(
            Role.STOP, signal_id, pair_name, Side.SELL, OrderType.STOP_LOSS, qty, trigger=pair.stop
        )
        await self._send(stop)
        if pair.exiting:  # an exit began while the stop went out: it cancels the stop and
            return  # sells this quantity, so no take-profit (and nothing left to protect)
        target = None
        if stop.status not in _NOT_PLACED:
            target = self._new_order(
                Role.TARGET,
                signal_id,
                pair_name,
                Side.SELL,
                OrderType.TAKE_PROFIT,
                qty,
                trigger=pair.target,
            )
            stop.sibling, target.sibling = target.coid, stop.coid
            await self._send(target)
        if target is None:  # no stop: the quantity waits to be protected with the next fill
            pair.unprotected += qty
            log.warning(
                "could not protect the filled quantity yet (e.g. below the order "
                "minimum); it is retried with the next fill",
                extra={"pair": pair_name, "qty": str(qty)},
            )
        elif target.status in _NOT_PLACED:  # the stop alone still limits the loss
            stop.sibling = None
            log.warning(
                "take-profit not placed; the stop-loss stays",
                extra={"pair": pair_name, "qty": str(qty), "stop": stop.coid},
            )

    # --- sending, with the safety rules ----------------------------------------------------

    def _new_order(
        self,
        role: Role,
        signal_id: str,
        pair: str,
        side: Side,
        type_: OrderType,
        qty: Decimal,
        *,
        limit: Decimal | None = None,
        trigger: Decimal | None = None,
    ) -> _Order:
        request = OrderRequest(
            self.ids.new(role), pair, side, type_, qty, limit, signal_id, trigger
        )
        order = _Order(request, role, signal_id)
        self.orders[order.coid] = order
        return order

    async def _send(self, order: _Order) -> None:
        """Submit once; retry only what the venue definitely did not take; resolve the rest."""
        if log.isEnabledFor(logging.INFO):  # a backtest logs errors only: skip the strings
            log.info(
                "order request",
                extra={
                    "client_order_id": order.coid,
                    "signal_id": order.signal_id,
                    "role": order.role,
                    "pair": order.request.pair,
                    "side": str(order.request.side),
                    "type": str(order.request.type),
                    "qty": str(order.request.qty),
                    "limit": str(order.request.limit_price),
                    "trigger": str(order.request.trigger_price),
                },
            )
        r = order.request
        await self.bus.publish(
            OrderRequestEvent(
                r.client_order_id,
                order.signal_id,
                _ROLE_NAMES[order.role],
                r.pair,
                r.side,
                r.type,
                r.qty,
                r.limit_price,
                r.trigger_price,
                self.clock_ns(),
            )
        )
        self._in_flight += 1
        try:
            if self.journal is not None:
                await self.journal.record_order_intent(order.request)
            await self._send_with_retries(order)
        finally:
            self._in_flight -= 1
            order.submitted.set()

    async def _send_with_retries(self, order: _Order) -> None:
        for attempt in range(self.s.busy_retries + 1):
            try:
                await self.venue.submit(order.request)
                self.stats["submitted"] += 1
                return
            except OrderRejected as exc:
                await self._verdict(order, OrderStatus.REJECTED, exc.reason)
                return
            except VenueAuthError as exc:
                await self._verdict(order, OrderStatus.ERROR, str(exc))
                return
            except VenueUncertain as exc:
                log.warning(
                    "order request outcome unknown; looking it up by client id",
                    extra={"client_order_id": order.coid, "error": str(exc)},
                )
                found = await self._lookup(order)
                if found is None and order.unresolved:
                    return  # unknown fate: never resend; the timer keeps asking
                if found is not None:
                    return  # the venue has it; its reports carry on from here
            except VenueBusy as exc:
                if attempt == self.s.busy_retries or self._expired(order):
                    break
                self.stats["busy_retries"] += 1
                wait = exc.retry_after_s or self.s.busy_retry_s * 2**attempt
                log.warning(
                    "venue busy; retrying the same client order id",
                    extra={"client_order_id": order.coid, "error": exc.reason, "wait_s": wait},
                )
                await asyncio.sleep(wait)
        await self._verdict(order, OrderStatus.ERROR, "venue busy; gave up after retries")

    def _expired(self, order: _Order) -> bool:
        return bool(order.deadline_ns) and self.clock_ns() >= order.deadline_ns

    async def _lookup(self, order: _Order) -> VenueOrder | None:
        """Ask the venue for the order; None only when the venue answered "never got it"."""
        for _ in range(3):
            try:
                found = await self.venue.lookup(order.coid)
            except VenueError as exc:
                log.warning(
                    "lookup failed", extra={"client_order_id": order.coid, "error": str(exc)}
                )
                await asyncio.sleep(self.s.busy_retry_s)
                continue
            order.unresolved = False
            if found is not None:
                self.stats["resolved_by_lookup"] += 1
                log.info(
                    "uncertain order found at the venue",
                    extra={"client_order_id": order.coid, "status": found.status},
                )
            return found
        order.unresolved = True
        log.error(
            "order state unknown: not resent; asking the venue again",
            extra={"client_order_id": order.coid},
        )
        return None

    async def _resolve_later(self, order: _Order) -> None:
        if order.unresolved:
            order.unresolved = False  # one lookup at a time; _lookup sets it back on failure
            await self._lookup(order)

    async def _cancel(self, order: _Order) -> None:
        """Cancel by client id; cancels are idempotent, so every failure is retried. An
        order whose request has not gone out yet (its intent still being written) is waited
        for first, up to ``cancel_wait_s``: a cancel overtaking it would find nothing to
        cancel, and the order would then rest at the exchange unmanaged."""
        order.cancel_requested = True
        if not order.submitted.is_set():
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self.s.cancel_wait_s):
                    await order.submitted.wait()
            if not order.working:
                return
        for attempt in range(self.s.busy_retries + 1):
            try:
                await self.venue.cancel(order.coid)
                return
            except VenueAuthError as exc:
                log.error(
                    "cancel refused", extra={"client_order_id": order.coid, "error": str(exc)}
                )
                return
            except VenueError as exc:
                log.warning(
                    "cancel failed; retrying",
                    extra={"client_order_id": order.coid, "error": str(exc)},
                )
                await asyncio.sleep(self.s.busy_retry_s * 2**attempt)
        if order.role is Role.ENTRY:
            order.cancel_requested = False  # the timer tries again on its next pass

    async def _verdict(self, order: _Order, status: OrderStatus, reason: str) -> None:
        """Report an end the venue will not report itself (refused, never taken, or not
        needed)."""
        if status is not OrderStatus.CANCELLED:
            self.stats["rejected" if status is OrderStatus.REJECTED else "errors"] += 1
        log.warning(
            "order not placed",
            extra={"client_order_id": order.coid, "status": str(status), "reason": reason},
        )
        r = order.request
        await self.on_venue_report(
            ExecutionReportEvent(
                client_order_id=r.client_order_id,
                exchange_order_id=None,
                signal_id=r.signal_id,
                pair=r.pair,
                side=r.side,
                order_type=r.type,
                status=status,
                order_qty=r.qty,
                filled_qty=_ZERO,
                avg_price=None,
                last_fill_qty=None,
                last_fill_price=None,
                fee=_ZERO,
                fee_asset="USD",
                reason=reason,
                ts_ns=self.clock_ns(),
            )
        )

    # --- reconciliation ----------------------------------------------------------------------

    async def reconcile(self, *, force: bool = False) -> ReconciliationEvent | None:
        """Publish the venue's balances and open orders, read while nothing is in flight
        (``force``: at start, before any order)."""
        quiet_ns = self.clock_ns() - self._last_report_ns
        if not force and (self._in_flight or quiet_ns < 2 * _NS):
            return None  # a fill report may be on its way; try next time
        try:
            open_orders = await self.venue.open_orders()
            balances = await self.venue.balances()
        except VenueError as exc:
            log.warning("reconciliation skipped", extra={"error": str(exc)})
            return None
        event = ReconciliationEvent(
            balances=tuple(sorted(balances.items())),
            open_orders=tuple(
                OpenOrderState(
                    o.client_order_id, o.pair, o.side, o.type, o.qty - o.filled_qty, o.limit_price
                )
                for o in open_orders
            ),
            venue=self.venue.name,
            ts_ns=self.clock_ns(),
        )
        self.stats["reconciliations"] += 1
        await self.bus.publish(event)
        return event

    # --- helpers -----------------------------------------------------------------------------

    def _pair(self, name: str) -> _Pair:
        return self.pairs.setdefault(name, _Pair())

    def _spawn(self, coro: Coroutine[Any, Any, object]) -> None:
        task = asyncio.create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._task_done)

    def _task_done(self, task: asyncio.Task[object]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("execution task failed", exc_info=task.exception())

    def working_orders(self) -> list[OrderRequest]:
        """Orders sent and not finished (for display and flatten)."""
        return [o.request for o in self.orders.values() if o.working]

    # --- long runs ---------------------------------------------------------------------------

    def forget_finished(self, keep: set[str] | frozenset[str] = frozenset()) -> int:
        """Drop finished orders, so a long run (a backtest, a long paper session) does not
        scan every order it ever sent in ``tick`` and exits; returns how many were dropped.

        Kept: orders still working or unresolved, those in ``keep`` (e.g. with an action
        still pending at the venue, whose report may yet arrive), and finished halves of a
        stop / target pair whose other half still works (its fill looks the sibling up)."""
        orders = self.orders
        finished = [
            o for o in orders.values() if not o.working and not o.unresolved and o.coid not in keep
        ]
        dropped = 0
        for order in finished:
            sibling = orders.get(order.sibling or "")
            if sibling is None or not sibling.working:
                del orders[order.coid]
                dropped += 1
        return dropped

    @property
    def busy(self) -> bool:
        """Whether spawned work (protection, one-cancels-other, exits) is still running."""
        return bool(self._tasks)
