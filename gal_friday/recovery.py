"""Crash recovery: after a restart, know exactly what is owned and which orders are out
before a single new entry is allowed.

On a live start the engine runs ``recover`` after the venue connects and before the risk
manager lets entries through:

1. **Load** what the store believed: orders not final (intents included: written before they
   were sent).
2. **Orders at the exchange**: every working order whose client order id is ours is adopted by
   the ExecutionHandler (its role is in the id; stop / target pairs become siblings again) or,
   with ``execution.orphan_orders = "cancel"``, cancelled. Orders of other clients are left
   alone and named in the log.
3. **Every order the store believed working, as the exchange knows it**: listed, else looked
   up by our client id (Kraken keeps the ``cl_ord_id`` sent with each order). An intent the
   exchange never saw was never sent; an acknowledged order it does not know stops recovery.
4. **Fills**: the exchange's fills of our orders, tied to their orders by what the exchange
   stores (our client id, or its order id as the look-ups and the store's acknowledgements
   give it), beyond the quantity the store already booked per order, are reported in time
   order, so no fill is lost or booked twice and realised P&L comes from matched entries.
5. **Executed = found**: for every order, the exchange's executed quantity must equal the
   fills found for it, or recovery stops naming the difference; orders no longer working get
   their final report.
6. **Balances**: a reconciliation sets the portfolio and the strategy to the exchange's
   holdings; a held quantity not covered by working stop / target orders (for instance after
   the dead man's switch cancelled them) is protected again at the stop and target of the
   round trip it belongs to (its working orders, the stop / target it placed, or its entry
   signal), never another trade's.

If any step fails the bot stays closed to new entries: a HaltEvent with source ``recovery``
says why, and only an operator resumes.
"""

from __future__ import annotations

import logging
from collections import defaultdict
from dataclasses import dataclass, field
from decimal import Decimal

from gal_friday.bus import EventBus
from gal_friday.config import Settings
from gal_friday.events import (
    ExecutionReportEvent,
    HaltEvent,
    OpenOrderState,
    OrderAdoptedEvent,
    OrderStatus,
    OrderType,
    PairRestoredEvent,
    ReconciliationEvent,
    Side,
    now_ns,
)
from gal_friday.execution.handler import ExecutionHandler, Role, role_of
from gal_friday.execution.venue import (
    OrderRequest,
    TradingVenue,
    VenueError,
    VenueFill,
    VenueOrder,
)
from gal_friday.store.base import Store, StoredOrder, StoreUnavailable
from gal_friday.store.schema import INTENT

log = logging.getLogger(__name__)
_ZERO = Decimal(0)
_CLOCK_SLACK_NS = 5 * 1_000_000_000  # our clock and the exchange's may differ by this much
_FINAL_WORDS = {
    "closed": OrderStatus.FILLED,
    "filled": OrderStatus.FILLED,
    "canceled": OrderStatus.CANCELLED,
    "cancelled": OrderStatus.CANCELLED,
    "expired": OrderStatus.EXPIRED,
    "rejected": OrderStatus.REJECTED,
}


@dataclass
class RecoveryResult:
    ok: bool = True
    reason: str = ""
    adopted: list[str] = field(default_factory=list)
    cancelled: list[str] = field(default_factory=list)
    foreign: list[str] = field(default_factory=list)
    resolved: list[str] = field(default_factory=list)
    never_sent: list[str] = field(default_factory=list)
    fills_reported: int = 0
    reprotected: dict[str, Decimal] = field(default_factory=dict)
    store_away: bool = False  # failed because the store could not answer: worth retrying


class RecoveryError(Exception):
    """Recovery could not complete; the bot stays closed to new entries."""


async def recover(
    settings: Settings,
    store: Store,
    venue: TradingVenue,
    handler: ExecutionHandler,
    bus: EventBus,
) -> RecoveryResult:
    """Run every recovery step (see the module doc); never raises: a failure HALTs, and
    what the exchange holds is still handed to the portfolio, the strategy and the handler
    (so the HALT policy can flatten it: that needs no store)."""
    result = RecoveryResult()
    try:
        await _recover(settings, store, venue, handler, bus, result)
    except (VenueError, StoreUnavailable, RecoveryError, OSError) as exc:
        result.ok, result.reason = False, f"{type(exc).__name__}: {exc}"
        result.store_away = isinstance(exc, StoreUnavailable)
        log.error(
            "recovery failed: closed to new entries until an operator resumes",
            extra={"reason": result.reason},
        )
        await bus.publish(HaltEvent(f"crash recovery incomplete: {result.reason}", "recovery"))
        await _hold_what_is_held(settings, venue, handler, bus)
        return result
    log.info(
        "recovery complete",
        extra={
            "adopted": result.adopted,
            "cancelled": result.cancelled,
            "foreign": result.foreign,
            "resolved": result.resolved,
            "never_sent": result.never_sent,
            "fills_reported": result.fills_reported,
            "reprotected": {p: str(q) for p, q in result.reprotected.items()},
        },
    )
    return result


async def recover_paper(
    settings: Settings,
    store: Store,
    venue: TradingVenue,
    handler: ExecutionHandler,
    bus: EventBus,
) -> RecoveryResult:
    """A paper run carrying on from an earlier one (its account restored into the paper
    venue from the store): the earlier run's working orders died with its venue and are
    closed as cancelled, and every position held gets its own round trip's stop and target
    in the new venue. Never raises: a failure HALTs, as a live recovery's does."""
    result = RecoveryResult()
    try:
        for record in await store.open_orders():
            await bus.publish(
                _report(
                    record,
                    OrderStatus.CANCELLED,
                    record.filled_qty,
                    None,
                    "the paper venue stopped with the earlier run",
                )
            )
            result.resolved.append(record.client_order_id)
        balances = await venue.balances()
        await bus.publish(
            ReconciliationEvent(
                balances=tuple(sorted(balances.items())),
                open_orders=(),
                venue=venue.name,
                ts_ns=now_ns(),
            )
        )
        await _restore_pairs(settings, store, handler, bus, balances, [], {}, result)
    except (VenueError, StoreUnavailable, RecoveryError) as exc:
        result.ok, result.reason = False, f"{type(exc).__name__}: {exc}"
        log.error("paper account not carried on", extra={"reason": result.reason})
        await bus.publish(HaltEvent(f"paper restart incomplete: {result.reason}", "recovery"))
    return result


async def _hold_what_is_held(
    settings: Settings, venue: TradingVenue, handler: ExecutionHandler, bus: EventBus
) -> None:
    """After a failed recovery: the exchange's balances and working orders, without the
    store, so every module knows what is held and a flatten can sell it."""
    try:
        balances = await venue.balances()
        listed = await venue.open_orders()
    except VenueError as exc:
        log.error("the exchange's holdings are unknown too: %s", exc)
        return
    await bus.publish(
        ReconciliationEvent(
            balances=tuple(sorted(balances.items())),
            open_orders=tuple(
                OpenOrderState(
                    o.client_order_id, o.pair, o.side, o.type, o.qty - o.filled_qty, o.limit_price
                )
                for o in listed
            ),
            venue=venue.name,
            ts_ns=now_ns(),
        )
    )
    for pair in settings.pairs:
        held = balances.get(pair.split("/")[0], _ZERO)
        event = PairRestoredEvent(pair, held, _ZERO, _ZERO, _ZERO, "", now_ns())
        await bus.publish(event)
        restore_pair(handler, event)


async def _recover(
    settings: Settings,
    store: Store,
    venue: TradingVenue,
    handler: ExecutionHandler,
    bus: EventBus,
    result: RecoveryResult,
) -> None:
    stored = await store.open_orders()
    believed = {o.client_order_id: o for o in stored}
    signals = believed_signal_ids(stored)
    listed = {o.client_order_id: o for o in await venue.open_orders()}
    adopted = await _sort_listed(settings, venue, listed, result)
    await _adopt(store, handler, bus, adopted, signals, result)
    at_exchange = await _as_the_exchange_knows(venue, bus, believed, listed, result)
    new_fills = await _report_fills(store, venue, bus, believed, at_exchange, result)
    await _settle(bus, believed, at_exchange, new_fills, result)
    balances = await venue.balances()
    await bus.publish(
        ReconciliationEvent(
            balances=tuple(sorted(balances.items())),
            open_orders=tuple(
                OpenOrderState(
                    o.client_order_id, o.pair, o.side, o.type, o.qty - o.filled_qty, o.limit_price
                )
                for o in await venue.open_orders()
            ),
            venue=venue.name,
            ts_ns=now_ns(),
            entry_prices=tuple(
                (p.pair, p.avg_entry)
                for p in await store.positions()
                if p.qty > 0 and p.avg_entry > 0
            ),
        )
    )
    entries = _entries(believed, new_fills)
    await _restore_pairs(settings, store, handler, bus, balances, adopted, entries, result)


async def _sort_listed(
    settings: Settings,
    venue: TradingVenue,
    listed: dict[str, VenueOrder],
    result: RecoveryResult,
) -> list[VenueOrder]:
    """Working orders at the exchange: ours adopted (or cancelled, as configured), those of
    other clients named and left alone."""
    adopt = settings.execution.orphan_orders == "adopt"
    adopted: list[VenueOrder] = []
    for coid, vo in listed.items():
        if role_of(coid) is None:
            result.foreign.append(coid)
        elif adopt:
            adopted.append(vo)
        else:
            await venue.cancel(coid)
            result.cancelled.append(coid)
    return adopted


async def _as_the_exchange_knows(
    venue: TradingVenue,
    bus: EventBus,
    believed: dict[str, StoredOrder],
    listed: dict[str, VenueOrder],
    result: RecoveryResult,
) -> dict[str, VenueOrder]:
    """Every order the store believed working, as the exchange has it (by our client id,
    which travels with each order): listed, else looked up. An intent the exchange never
    saw was never sent and is closed here; an acknowledged order it does not know stops
    recovery (the store and the exchange disagree on what was sent)."""
    known: dict[str, VenueOrder] = {}
    for coid, record in believed.items():
        found = listed.get(coid) or await venue.lookup(coid)
        if found is not None:
            known[coid] = found
            continue
        if record.status != INTENT:
            raise RecoveryError(
                f"the exchange does not know order {coid}, which it had acknowledged"
            )
        result.never_sent.append(coid)
        await bus.publish(
            _report(
                record,
                OrderStatus.CANCELLED,
                record.filled_qty,
                None,
                "never sent (found at restart)",
            )
        )
    return known


async def _report_fills(
    store: Store,
    venue: TradingVenue,
    bus: EventBus,
    believed: dict[str, StoredOrder],
    at_exchange: dict[str, VenueOrder],
    result: RecoveryResult,
) -> dict[str, Decimal]:
    """The fills of our orders the store has not booked, oldest first, as cumulative fill
    reports; returns the quantity found per client order id.

    Each fill is tied to its order by what the exchange stores: our client id when the venue
    reports it, else the exchange's order id, which the store kept at acknowledgement and the
    look-ups above returned. Per order, the fills the store already booked (its filled
    quantity, in time order) are skipped, so nothing is booked twice or left out, whatever
    the timestamps of the last fill stored."""
    since = await _fills_since(store, believed)
    fills = await venue.fills_since(since)
    coid_of = {o.exchange_order_id: coid for coid, o in at_exchange.items() if o.exchange_order_id}
    for o in await store.recent_orders(since):
        if o.exchange_order_id:
            coid_of.setdefault(o.exchange_order_id, o.client_order_id)
    per_order: dict[str, list[VenueFill]] = defaultdict(list)
    for f in fills:
        coid = f.client_order_id or coid_of.get(f.exchange_order_id)
        if coid is not None and role_of(coid) is not None:
            per_order[coid].append(f)
    found: dict[str, Decimal] = {}
    reports: list[ExecutionReportEvent] = []
    for coid, order_fills in per_order.items():
        record = believed.get(coid) or await store.order(coid)
        new = _unbooked(order_fills, record.filled_qty if record else _ZERO)
        if new:
            found[coid] = sum((f.qty for f in new), _ZERO)
            reports += _fill_reports(coid, record, new)
    for report in sorted(reports, key=lambda r: r.ts_ns):
        await bus.publish(report)
    result.fills_reported = len(reports)
    return found


async def _fills_since(store: Store, believed: dict[str, StoredOrder]) -> int:
    """From a little before the oldest order still believed working (its fills may predate
    the last fill stored), else just after the last fill stored."""
    last = await store.last_fill_ts()
    starts = [o.created_ts_ns - _CLOCK_SLACK_NS for o in believed.values()]
    starts.append((last + 1) if last is not None else now_ns() - _CLOCK_SLACK_NS)
    return max(0, min(starts))


def _unbooked(fills: list[VenueFill], booked: Decimal) -> list[VenueFill]:
    """The fills after the first ``booked`` quantity, in the order the exchange made them."""
    out: list[VenueFill] = []
    cum = _ZERO
    for f in sorted(fills, key=lambda f: (f.ts_ns, f.trade_id)):
        cum += f.qty
        if cum > booked:
            out.append(f)
    return out


def _fill_reports(
    coid: str, record: StoredOrder | None, fills: list[VenueFill]
) -> list[ExecutionReportEvent]:
    cum = record.filled_qty if record else _ZERO
    reports = []
    for f in fills:
        cum += f.qty
        reports.append(
            ExecutionReportEvent(
                client_order_id=coid,
                exchange_order_id=f.exchange_order_id,
                signal_id=(record.trade_id or record.signal_id) if record else None,
                pair=f.pair,
                side=f.side,
                order_type=OrderType(record.order_type) if record else OrderType.MARKET,
                status=OrderStatus.PARTIALLY_FILLED,
                order_qty=record.qty if record else cum,
                filled_qty=cum,
                avg_price=None,
                last_fill_qty=f.qty,
                last_fill_price=f.price,
                fee=f.fee,
                fee_asset="USD",
                reason="fill found at restart",
                ts_ns=f.ts_ns,
            )
        )
    return reports


async def _settle(
    bus: EventBus,
    believed: dict[str, StoredOrder],
    at_exchange: dict[str, VenueOrder],
    new_fills: dict[str, Decimal],
    result: RecoveryResult,
) -> None:
    """The exchange's executed quantity of every order must equal the fills found for it,
    or recovery stops naming the difference (a P&L booked from the wrong quantity is worse
    than no trading); orders no longer working get their final report."""
    differences = []
    for coid, found in at_exchange.items():
        record = believed[coid]
        filled = record.filled_qty + new_fills.get(coid, _ZERO)
        if found.filled_qty != filled:
            differences.append(
                f"{coid}: the exchange executed {found.filled_qty}, the fills found add up "
                f"to {filled}"
            )
            continue
        if found.is_open and coid not in result.cancelled:
            continue  # adopted: the venue's own reports carry on
        status = _FINAL_WORDS.get(found.status, OrderStatus.CANCELLED)
        if coid in result.cancelled or (
            status is OrderStatus.FILLED and found.filled_qty < found.qty
        ):
            status = OrderStatus.CANCELLED  # cancelled by us now, or closed with a remainder
        await bus.publish(_report(record, status, filled, None, "resolved at restart"))
        result.resolved.append(coid)
    if differences:
        raise RecoveryError("fills missing: " + "; ".join(differences))


def believed_signal_ids(store_orders: list[StoredOrder]) -> dict[str, str]:
    return {o.client_order_id: o.trade_id or o.signal_id or "" for o in store_orders}


async def _adopt(
    store: Store,
    handler: ExecutionHandler,
    bus: EventBus,
    adopted: list[VenueOrder],
    signals: dict[str, str],
    result: RecoveryResult,
) -> None:
    """Adopt working orders; stop / target orders of one trade and quantity are siblings; an
    entry brings its own signal's stop and target (what it fills after the restart is
    protected by them). Each adoption is published too (the session journal, so a replay
    adopts it as well)."""
    groups: dict[tuple[str, Decimal], dict[Role, VenueOrder]] = defaultdict(dict)
    for vo in adopted:
        role = role_of(vo.client_order_id)
        if role in (Role.STOP, Role.TARGET):
            groups[(signals.get(vo.client_order_id, ""), vo.qty)][role] = vo
    sibling_of: dict[str, str] = {}
    for pair in groups.values():
        if Role.STOP in pair and Role.TARGET in pair:
            stop_id, target_id = pair[Role.STOP].client_order_id, pair[Role.TARGET].client_order_id
            sibling_of[stop_id], sibling_of[target_id] = target_id, stop_id
    for vo in adopted:
        status = OrderStatus.PARTIALLY_FILLED if vo.filled_qty > 0 else OrderStatus.ACKNOWLEDGED
        trade_id = signals.get(vo.client_order_id, "")
        entry = role_of(vo.client_order_id) in (Role.ENTRY, Role.ENTRY_MARKET)
        stop, target = await _signal_brackets(store, trade_id) if entry else (_ZERO, _ZERO)
        event = OrderAdoptedEvent(
            vo.client_order_id,
            vo.pair,
            vo.side,
            vo.type,
            vo.qty,
            vo.limit_price,
            vo.trigger_price,
            status,
            vo.filled_qty,
            signals.get(vo.client_order_id, ""),
            sibling_of.get(vo.client_order_id),
            now_ns(),
            stop,
            target,
        )
        adopt_order(handler, event)
        await bus.publish(event)
        result.adopted.append(vo.client_order_id)


def adopt_order(handler: ExecutionHandler, event: OrderAdoptedEvent) -> None:
    """Hand an adopted order to the handler (recovery, and a replay of its journal)."""
    handler.adopt(
        OrderRequest(
            event.client_order_id,
            event.pair,
            event.side,
            event.order_type,
            event.qty,
            event.limit_price,
            event.signal_id or None,
            event.trigger_price,
        ),
        status=event.status,
        filled=event.filled,
        signal_id=event.signal_id,
        sibling=event.sibling,
        stop=event.stop,
        target=event.target,
    )


def restore_pair(handler: ExecutionHandler, event: PairRestoredEvent) -> None:
    """Tell the handler what a pair holds (recovery, and a replay of its journal)."""
    handler.restore_pair(
        event.pair,
        held=event.held,
        stop=event.stop,
        target=event.target,
        unprotected=event.unprotected,
        signal_id=event.signal_id,
    )


async def _restore_pairs(
    settings: Settings,
    store: Store,
    handler: ExecutionHandler,
    bus: EventBus,
    balances: dict[str, Decimal],
    adopted: list[VenueOrder],
    entries: dict[str, str],
    result: RecoveryResult,
) -> None:
    """Tell the handler what each pair holds; protect what no working stop covers, at the
    stop and target of the round trip that holds it."""
    for pair in settings.pairs:
        held = balances.get(pair.split("/")[0], _ZERO)
        covered = sum(
            (
                o.qty - o.filled_qty
                for o in adopted
                if o.pair == pair and role_of(o.client_order_id) is Role.STOP
            ),
            _ZERO,
        )
        rest = held - covered
        trade_id = await _holding_trade(store, pair, adopted, entries) if held > 0 else ""
        stop, target = (
            await _brackets(store, trade_id, pair, adopted) if trade_id else (_ZERO, _ZERO)
        )
        if rest > 0 and (stop <= 0 or target <= 0):
            raise RecoveryError(
                f"{pair}: {rest} held without a stop-loss, and no round trip with recorded "
                "brackets to protect it with"
            )
        event = PairRestoredEvent(pair, held, stop, target, max(rest, _ZERO), trade_id, now_ns())
        await bus.publish(event)  # before the protection orders restoring it may send
        restore_pair(handler, event)
        if rest > 0:
            result.reprotected[pair] = rest


def _entries(believed: dict[str, StoredOrder], new_fills: dict[str, Decimal]) -> dict[str, str]:
    """Pair -> trade id of the newest entry whose fills were found now (the store may not
    have written its round trip yet)."""
    out: dict[str, tuple[int, str]] = {}
    for coid in new_fills:
        record = believed.get(coid)
        if record is None or role_of(coid) not in (Role.ENTRY, Role.ENTRY_MARKET):
            continue
        trade = record.trade_id or record.signal_id or coid
        if record.pair not in out or record.created_ts_ns > out[record.pair][0]:
            out[record.pair] = (record.created_ts_ns, trade)
    return {pair: trade for pair, (_, trade) in out.items()}


async def _holding_trade(
    store: Store, pair: str, adopted: list[VenueOrder], entries: dict[str, str]
) -> str:
    """The round trip a held quantity belongs to: the one its working stop or target
    protects, else the entry found filled now, else the store's open round trip."""
    trades = await store.fetch(
        "SELECT trade_id FROM trades WHERE pair = ? AND status = 'open' "
        "ORDER BY entry_ts_ns DESC LIMIT 1",
        pair,
    )
    stored = str(trades[0]["trade_id"]) if trades else ""
    for o in adopted:
        if o.pair == pair and role_of(o.client_order_id) in (Role.STOP, Role.TARGET):
            record = await store.order(o.client_order_id)
            if record is not None and (record.trade_id or record.signal_id):
                return str(record.trade_id or record.signal_id)
    return entries.get(pair) or stored


async def _brackets(
    store: Store, trade_id: str, pair: str, adopted: list[VenueOrder]
) -> tuple[Decimal, Decimal]:
    """Stop and target of one round trip: its working orders, else the stop and target
    orders it placed, else its entry signal's. Never another trade's."""
    stop, target = _ZERO, _ZERO
    for o in adopted:
        if o.pair == pair and o.trigger_price:
            if role_of(o.client_order_id) is Role.STOP:
                stop = o.trigger_price
            elif role_of(o.client_order_id) is Role.TARGET:
                target = o.trigger_price
    rows = await store.fetch(
        "SELECT client_order_id, trigger_price FROM orders WHERE trade_id = ? "
        "AND trigger_price IS NOT NULL ORDER BY created_ts_ns DESC",
        trade_id,
    )
    for row in rows:
        price = Decimal(str(row["trigger_price"]))
        role = role_of(str(row["client_order_id"]))
        if role is Role.STOP and stop <= 0:
            stop = price
        elif role is Role.TARGET and target <= 0:
            target = price
    if stop <= 0 or target <= 0:
        signal_stop, signal_target = await _signal_brackets(store, trade_id)
        stop, target = stop or signal_stop, target or signal_target
    return stop, target


async def _signal_brackets(store: Store, trade_id: str) -> tuple[Decimal, Decimal]:
    """The stop and target of the round trip's entry signal; zeros when unknown."""
    rows = await store.fetch(
        "SELECT stop_loss, take_profit FROM signals WHERE signal_id = ?", trade_id
    )
    if not rows:
        return _ZERO, _ZERO
    return Decimal(str(rows[0]["stop_loss"] or 0)), Decimal(str(rows[0]["take_profit"] or 0))


def _report(
    record: StoredOrder, status: OrderStatus, filled: Decimal, avg: Decimal | None, reason: str
) -> ExecutionReportEvent:
    return ExecutionReportEvent(
        client_order_id=record.client_order_id,
        exchange_order_id=record.exchange_order_id,
        signal_id=record.trade_id or record.signal_id,
        pair=record.pair,
        side=Side(record.side),
        order_type=OrderType(record.order_type),
        status=status,
        order_qty=record.qty,
        filled_qty=filled,
        avg_price=avg,
        last_fill_qty=None,
        last_fill_price=None,
        fee=_ZERO,
        fee_asset="USD",
        reason=reason,
        ts_ns=now_ns(),
        limit_price=record.limit_price,
        trigger_price=record.trigger_price,
    )
