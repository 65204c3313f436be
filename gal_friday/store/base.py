"""The one async interface both store backends implement, and what they share.

A backend supplies four primitives (``connect``, ``close``, ``write``, ``fetch``); the reads
crash recovery needs and the order-intent write are built on them here, once, so SQLite and
PostgreSQL answer the same questions with the same SQL.

Errors are sorted by what the caller can do about them: :class:`StoreUnavailable` means the
database cannot be reached or cannot write right now (connection refused or lost, disk
error, locked, timeout), so the records must be kept and retried; any other exception is a
problem with the records themselves and retrying them cannot help.
"""

from __future__ import annotations

import abc
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from gal_friday.execution.venue import OrderRequest
from gal_friday.store.schema import FINAL_STATUSES, INTENT, TABLES, Dialect, Kind, Table


class StoreUnavailable(Exception):
    """The database cannot take writes now; keep the records and try again later."""


class StoreCorrupt(Exception):
    """The database file is damaged (not a database, malformed): no retry can mend it. A run
    refuses to start on it, and one already trading HALTs; the message names the file."""


@dataclass(frozen=True, slots=True)
class Record:
    """One row to upsert: ``kind`` names a :data:`~gal_friday.store.schema.TABLES` entry.
    ``seq`` orders records across the in-memory queue and the spill file."""

    kind: str
    row: Mapping[str, Any]
    seq: int = 0

    @property
    def table(self) -> Table:
        return TABLES[self.kind]


@dataclass(frozen=True, slots=True)
class StoredOrder:
    """An order as the store last saw it (``status`` ``intent``: written, maybe never sent)."""

    client_order_id: str
    trade_id: str | None
    signal_id: str | None
    pair: str
    side: str
    order_type: str
    qty: Decimal
    limit_price: Decimal | None
    trigger_price: Decimal | None
    exchange_order_id: str | None
    status: str
    filled_qty: Decimal
    avg_price: Decimal | None
    fees: Decimal
    reason: str | None
    created_ts_ns: int
    updated_ts_ns: int

    @property
    def is_final(self) -> bool:
        return self.status in FINAL_STATUSES


@dataclass(frozen=True, slots=True)
class StoredPosition:
    pair: str
    qty: Decimal
    avg_entry: Decimal
    mark: Decimal
    unrealised_pnl: Decimal
    opened_ts_ns: int
    ts_ns: int


@dataclass(frozen=True, slots=True)
class StoredHalt:
    """A halt, reduce, resume or flatten, newest first from :meth:`Store.recent_halts`."""

    kind: str  # "halt" | "reduce" | "resume" | "flatten"
    reason: str | None
    source: str | None
    operator: str | None
    ts_ns: int


def intent_record(order: OrderRequest, ts_ns: int | None = None) -> Record:
    """The row an order gets before it is sent: status ``intent``; reports then update it."""
    ts = time.time_ns() if ts_ns is None else ts_ns
    return Record(
        "order_intent",
        {
            "client_order_id": order.client_order_id,
            "trade_id": order.signal_id or order.client_order_id,
            "signal_id": order.signal_id,
            "pair": order.pair,
            "side": str(order.side),
            "order_type": str(order.type),
            "qty": order.qty,
            "limit_price": order.limit_price,
            "trigger_price": order.trigger_price,
            "exchange_order_id": None,
            "status": INTENT,
            "filled_qty": Decimal(0),
            "avg_price": None,
            "fees": Decimal(0),
            "reason": None,
            "created_ts_ns": ts,
            "updated_ts_ns": ts,
        },
    )


def decode_value(kind: Kind, value: Any) -> Any:
    """A stored value back in its Python type (SQLite keeps money as text, bools as 0/1)."""
    if value is None:
        return None
    if kind == "money":
        return value if isinstance(value, Decimal) else Decimal(str(value))
    if kind == "bool":
        return bool(value)
    return value


def decode_row(table: Table, row: Mapping[str, Any]) -> dict[str, Any]:
    kinds = table.kinds
    return {k: decode_value(kinds[k], v) if k in kinds else v for k, v in row.items()}


_FINAL_IN = ", ".join(f"'{s}'" for s in FINAL_STATUSES)
_ORDER_COLS = ", ".join(name for name, _ in TABLES["order"].columns)


class Store(abc.ABC):
    """The audit database: idempotent batched writes plus the reads a restart needs."""

    dialect: Dialect

    @abc.abstractmethod
    async def connect(self) -> None:
        """Open the database and apply pending migrations (idempotent)."""

    @abc.abstractmethod
    async def close(self) -> None:
        """Close the connection; safe to call twice."""

    @abc.abstractmethod
    async def write(self, records: Sequence[Record]) -> None:
        """Upsert ``records`` in order, all in one transaction (all or nothing).

        Raises :class:`StoreUnavailable` when the database cannot take them now.
        """

    @abc.abstractmethod
    async def fetch(self, sql: str, *params: Any) -> list[dict[str, Any]]:
        """Rows of a read query written with ``?`` placeholders, as dicts (values raw)."""

    async def schema_version(self) -> int:
        rows = await self.fetch("SELECT MAX(version) AS v FROM schema_version")
        return int(rows[0]["v"] or 0)

    async def record_order_intent(self, order: OrderRequest, ts_ns: int | None = None) -> None:
        """Write ``order`` as status ``intent`` and return once it is committed.

        Await this before sending the order: after a crash, an ``intent`` row whose venue
        lookup finds nothing was never sent; one the venue knows was. Writing it twice (a
        retry) changes nothing, and it never overwrites what a report already recorded.
        """
        await self.write([intent_record(order, ts_ns)])

    async def order(self, client_order_id: str) -> StoredOrder | None:
        rows = await self.fetch(
            f"SELECT {_ORDER_COLS} FROM orders WHERE client_order_id = ?", client_order_id
        )
        return _order(rows[0]) if rows else None

    async def open_orders(self) -> list[StoredOrder]:
        """Orders not in a final state (intents included), oldest first."""
        rows = await self.fetch(
            f"SELECT {_ORDER_COLS} FROM orders WHERE status NOT IN ({_FINAL_IN}) "
            "ORDER BY created_ts_ns, client_order_id"
        )
        return [_order(r) for r in rows]

    async def recent_orders(self, since_ts_ns: int) -> list[StoredOrder]:
        """Orders updated at or after ``since_ts_ns`` (final ones included), oldest first."""
        rows = await self.fetch(
            f"SELECT {_ORDER_COLS} FROM orders WHERE updated_ts_ns >= ? "
            "ORDER BY updated_ts_ns, client_order_id",
            since_ts_ns,
        )
        return [_order(r) for r in rows]

    async def last_fill_ts(self) -> int | None:
        """Time of the newest recorded fill: where to resume ``fills_since`` after a restart."""
        rows = await self.fetch("SELECT MAX(ts_ns) AS ts FROM fills")
        value = rows[0]["ts"]
        return None if value is None else int(value)

    async def positions(self) -> list[StoredPosition]:
        """The latest position per pair (flat pairs have qty 0)."""
        table = TABLES["position"]
        rows = await self.fetch("SELECT * FROM positions ORDER BY pair")
        return [StoredPosition(**decode_row(table, r)) for r in rows]

    async def recent_halts(self, limit: int = 20) -> list[StoredHalt]:
        rows = await self.fetch(
            "SELECT kind, reason, source, operator, ts_ns FROM halts "
            "ORDER BY ts_ns DESC, id DESC LIMIT ?",
            limit,
        )
        return [StoredHalt(**r) for r in rows]

    async def open_trades(self) -> list[dict[str, Any]]:
        """Round trips not yet closed, for the AuditWriter to carry on after a restart."""
        table = TABLES["trade"]
        rows = await self.fetch("SELECT * FROM trades WHERE status = 'open' ORDER BY entry_ts_ns")
        return [decode_row(table, r) for r in rows]


def runs(records: Sequence[Record]) -> list[tuple[Table, list[Mapping[str, Any]]]]:
    """Consecutive records of the same kind grouped, order kept, for ``executemany``."""
    out: list[tuple[str, Table, list[Mapping[str, Any]]]] = []
    for rec in records:
        if out and out[-1][0] == rec.kind:
            out[-1][2].append(rec.row)
        else:
            out.append((rec.kind, rec.table, [rec.row]))
    return [(table, rows) for _, table, rows in out]


def _order(row: Mapping[str, Any]) -> StoredOrder:
    return StoredOrder(**decode_row(TABLES["order"], row))
