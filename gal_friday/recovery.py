"""Crash recovery: after a restart, know exactly what is owned and which orders are out
before a single new entry is allowed.

On a live start the engine runs ``recover`` after the venue connects and before the risk
manager lets entries through:

1. **Load** what the store believed: orders not final (intents included: written before they
   were sent) and open round trips with their stop-loss / take-profit.
2. **Orders at the exchange**: every working order whose client order id is ours is adopted by
   the ExecutionHandler (its role is in the id; stop / target pairs become siblings again) or,
   with ``execution.orphan_orders = "cancel"``, cancelled. Orders of other clients are left
   alone and named in the log.
3. **Orders the store believed working but the exchange no longer lists** are looked up by
   client id; their final state is reported (an intent the exchange never saw was never sent).
4. **Fills since the last one the store knew** are reported, so no fill is lost (reports are
   idempotent downstream: the store keys fills by cumulative quantity).
5. **Balances**: a reconciliation sets the portfolio and the strategy to the exchange's
   holdings; a held quantity not covered by working stop / target orders (for instance after
   the dead man's switch cancelled them) is protected again at the recorded brackets.

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

log = logging.getLogger(__name__)
_ZERO = Decimal(0)
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


class RecoveryError(Exception):
    """Recovery could not complete; the bot stays closed to new entries."""


async def recover(
    settings: Settings, store: Store, venue: TradingVenue, handler: ExecutionHandler, bus: EventBus
) -> RecoveryResult:
    """Run every recovery step (see the module doc); never raises: a failure HALTs."""
    result = RecoveryResult()
    try:
        await _recover(settings, store, venue, handler, bus, result)
    except (VenueError, StoreUnavailable, RecoveryError, OSError) as exc:
        result.ok, result.reason = False, f"{type(exc).__name__}: {exc}"
        log.error(
            "recovery failed: closed to new entries until an operator resumes",
            extra={"reason": result.reason},
        )
        await bus.publish(HaltEvent(f"crash recovery incomplete: {result.reason}", "recovery"))
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
    last_fill = await store.last_fill_ts()
    adopt = settings.execution.orphan_orders == "adopt"
    adopted: list[VenueOrder] = []
    for vo in await venue.open_orders():
        if role_of(vo.client_order_id) is None:
            result.foreign.append(vo.client_order_id)
            continue
        believed.pop(vo.client_order_id, None)
        if adopt:
            adopted.append(vo)
        else:
            await venue.cancel(vo.client_order_id)
            result.cancelled.append(vo.client_order_id)
    await _adopt(handler, bus, adopted, signals, result)
    fills = await venue.fills_since((last_fill or 0) + 1)
    reported = await _report_fills(bus, fills, stored)  # fills first: they carry the prices
    result.fills_reported = sum(1 for f in fills if f.client_order_id in reported)
    for record in believed.values():
        await _resolve(venue, bus, record, reported.get(record.client_order_id, _ZERO), result)
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
    await _restore_pairs(settings, store, handler, bus, balances, adopted, result)


def believed_signal_ids(store_orders: list[StoredOrder]) -> dict[str, str]:
    return {o.client_order_id: o.trade_id or o.signal_id or "" for o in store_orders}


async def _adopt(
    handler: ExecutionHandler,
    bus: EventBus,
    adopted: list[VenueOrder],
    signals: dict[str, str],
    result: RecoveryResult,
) -> None:
    """Adopt working orders; stop / target orders of one trade and quantity are siblings.
    Each adoption is published too (the session journal, so a replay adopts it as well)."""
    groups: dict[tuple[str, Decimal], dict[Role, VenueOrder]] = defaultdict(dict)
    for vo in adopted:
        role = role_of(vo.client_order_id)
        if role in (Role.STOP, Role.TARGET):
            groups[(signals.get(vo.client_order_id, ""), vo.qty)][role] = vo
    sibling_of: dict[str, str] = {}
    for pair in groups.values():
        if Role.STOP in pair and Role.TARGET in pair:
            stop, target = pair[Role.STOP].client_order_id, pair[Role.TARGET].client_order_id
            sibling_of[stop], sibling_of[target] = target, stop
    for vo in adopted:
        status = OrderStatus.PARTIALLY_FILLED if vo.filled_qty > 0 else OrderStatus.ACKNOWLEDGED
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


async def _resolve(
    venue: TradingVenue,
    bus: EventBus,
    record: StoredOrder,
    new_fills: Decimal,
    result: RecoveryResult,
) -> None:
    """An order the store believed working that the exchange no longer lists; its final
    report repeats the quantity its fill reports gave (prices travel with fills only)."""
    found = await venue.lookup(record.client_order_id)
    if found is None:
        if record.status != "intent":
            raise RecoveryError(
                f"the exchange does not know order {record.client_order_id}, "
                f"which it had acknowledged"
            )
        result.never_sent.append(record.client_order_id)
        await bus.publish(
            _report(
                record,
                OrderStatus.CANCELLED,
                record.filled_qty,
                None,
                "never sent (found at restart)",
            )
        )
        return
    if found.is_open:
        return  # listed meanwhile; the venue's own reports carry on
    status = _FINAL_WORDS.get(found.status, OrderStatus.CANCELLED)
    if status is OrderStatus.FILLED and found.filled_qty < found.qty:
        status = OrderStatus.CANCELLED  # closed with a remainder
    filled = record.filled_qty + new_fills
    if found.filled_qty != filled:
        log.warning(
            "the exchange's filled quantity differs from the fills found; the "
            "balances reconciliation corrects the portfolio",
            extra={
                "client_order_id": record.client_order_id,
                "exchange": str(found.filled_qty),
                "fills": str(filled),
            },
        )
    await bus.publish(_report(record, status, filled, None, "resolved at restart"))
    result.resolved.append(record.client_order_id)


async def _report_fills(
    bus: EventBus, fills: list[VenueFill], known: list[StoredOrder]
) -> dict[str, Decimal]:
    """Cumulative fill reports for our fills since the last one stored, oldest first; the
    quantity reported per client order id."""
    records = {o.client_order_id: o for o in known}
    cum: dict[str, Decimal] = defaultdict(Decimal)
    for f in sorted(fills, key=lambda f: f.ts_ns):
        coid = f.client_order_id
        if coid is None or role_of(coid) is None:
            continue
        cum[coid] += f.qty
        record = records.get(coid)
        await bus.publish(
            ExecutionReportEvent(
                client_order_id=coid,
                exchange_order_id=f.exchange_order_id,
                signal_id=(record.trade_id or record.signal_id) if record else None,
                pair=f.pair,
                side=f.side,
                order_type=OrderType(record.order_type) if record else OrderType.MARKET,
                status=OrderStatus.PARTIALLY_FILLED,
                order_qty=record.qty if record else cum[coid],
                filled_qty=(record.filled_qty if record else _ZERO) + cum[coid],
                avg_price=None,
                last_fill_qty=f.qty,
                last_fill_price=f.price,
                fee=f.fee,
                fee_asset="USD",
                reason="fill found at restart",
                ts_ns=f.ts_ns,
            )
        )
    return dict(cum)


async def _restore_pairs(
    settings: Settings,
    store: Store,
    handler: ExecutionHandler,
    bus: EventBus,
    balances: dict[str, Decimal],
    adopted: list[VenueOrder],
    result: RecoveryResult,
) -> None:
    """Tell the handler what each pair holds; protect what no working stop covers."""
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
        stop, target, trade_id = await _brackets(store, pair, adopted)
        rest = held - covered
        if rest > 0 and (stop <= 0 or target <= 0):
            raise RecoveryError(
                f"{pair}: {rest} held without a stop-loss and no recorded "
                "brackets to protect it with"
            )
        event = PairRestoredEvent(pair, held, stop, target, max(rest, _ZERO), trade_id, now_ns())
        await bus.publish(event)  # before the protection orders restoring it may send
        restore_pair(handler, event)
        if rest > 0:
            result.reprotected[pair] = rest


async def _brackets(
    store: Store, pair: str, adopted: list[VenueOrder]
) -> tuple[Decimal, Decimal, str]:
    """Stop and target of the pair's open trade: from its working orders, else the last
    stop / target orders the store recorded for the pair, else the trade's signal."""
    stop, target = _ZERO, _ZERO
    for o in adopted:
        if o.pair == pair and o.trigger_price:
            if role_of(o.client_order_id) is Role.STOP:
                stop = o.trigger_price
            elif role_of(o.client_order_id) is Role.TARGET:
                target = o.trigger_price
    trades = await store.fetch(
        "SELECT trade_id FROM trades WHERE pair = ? AND status = 'open' "
        "ORDER BY entry_ts_ns DESC LIMIT 1",
        pair,
    )
    trade_id = str(trades[0]["trade_id"]) if trades else f"recovered-{pair}"
    for kind, prefix in (("stop", "gfs%"), ("target", "gft%")):
        if (stop if kind == "stop" else target) > 0:
            continue
        rows = await store.fetch(
            "SELECT trigger_price FROM orders WHERE pair = ? AND client_order_id LIKE ? "
            "AND trigger_price IS NOT NULL ORDER BY created_ts_ns DESC LIMIT 1",
            pair,
            prefix,
        )
        if rows:
            price = Decimal(str(rows[0]["trigger_price"]))
            stop, target = (price, target) if kind == "stop" else (stop, price)
    if (stop <= 0 or target <= 0) and trades:
        rows = await store.fetch(
            "SELECT stop_loss, take_profit FROM signals WHERE signal_id = ?", trade_id
        )
        if rows:
            stop = stop or Decimal(str(rows[0]["stop_loss"]))
            target = target or Decimal(str(rows[0]["take_profit"]))
    return stop, target, trade_id


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
