"""The simulated account as one JSON document (``GET /sim/account``): what the exchange
holds, every order it was sent and every fill it made, for the crash-loop benchmark and tests
that compare the bot's store with the exchange's truth. Simulator only (Kraken has no such
thing), read without a signature, so it never touches the nonces of the bot's API key."""

from __future__ import annotations

from typing import Any

from gal_friday.sim.account import Fill
from gal_friday.sim.trading import SimOrder, SimTrading


def account_snapshot(trading: SimTrading) -> dict[str, Any]:
    """Balances (total per asset, holds included), orders in placement order, fills in
    execution order; amounts are decimal strings, exact."""
    account = trading.account
    return {
        "balances": {asset: str(total) for asset, total in account.balances.items()},
        "orders": [_order(o) for o in trading.orders.values()],
        "fills": [_fill(f) for f in account.fills],
    }


def _order(order: SimOrder) -> dict[str, Any]:
    p = order.params
    return {
        "order_id": order.order_id,
        "cl_ord_id": p.cl_ord_id,
        "symbol": p.symbol,
        "side": p.side,
        "order_type": p.order_type,
        "qty": str(p.qty),
        "limit_price": None if p.limit_price is None else str(p.limit_price),
        "trigger_price": None if p.trigger_price is None else str(p.trigger_price),
        "status": order.status,
        "vol_exec": str(order.vol_exec),
        "cost": str(order.cost),
        "fee": str(order.fee),
        "opened_ns": order.opened_ns,
    }


def _fill(fill: Fill) -> dict[str, Any]:
    return {
        "trade_id": fill.trade_id,
        "order_id": fill.order_id,
        "cl_ord_id": fill.cl_ord_id,
        "symbol": fill.symbol,
        "side": fill.side,
        "price": str(fill.price),
        "qty": str(fill.qty),
        "cost": str(fill.cost),
        "fee": str(fill.fee),
        "maker": fill.maker,
        "ts_ns": fill.ts_ns,
    }
