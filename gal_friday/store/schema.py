"""The audit schema, shared by the SQLite and PostgreSQL backends, and its migrations.

Tables are described once, as :class:`Table` specs, and rendered into each dialect's DDL, so
the two backends cannot drift apart. Column kinds:

* ``money``: an exact Decimal (``NUMERIC`` in PostgreSQL; ``TEXT`` holding the Decimal's string
  in SQLite, whose numeric types are binary floats and would round money).
* ``int``: a 64-bit integer; every time is UTC nanoseconds since the epoch.
* ``real``: a float (model probabilities and thresholds, which are floats to begin with).
* ``json``: a JSON document (``JSONB`` / ``TEXT``), handed over already encoded.
* ``bool``, ``text``: what they say.

Every write is an idempotent upsert keyed by a natural id (signal id, client order id,
(client order id, cumulative filled quantity) for a fill, ...), so a replayed report or a
replayed spill file never inserts a row twice. Rows that evolve (orders, trades, positions,
daily summaries) are only overwritten by a newer state, as the spec's ``guard`` says.

Migrations are numbered and applied in order at connect, each in its own transaction with its
number recorded in ``schema_version``; applying them again does nothing. A later schema change
is a new :class:`Migration`, never an edit of an applied one.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

from gal_friday.events import OrderStatus

Dialect = Literal["sqlite", "postgresql"]
Kind = Literal["text", "int", "money", "real", "json", "bool"]

# an order in one of these is finished: OrderStatus.is_terminal, as the database spells it
FINAL_STATUSES = tuple(s.value for s in OrderStatus if s.is_terminal)
INTENT = "intent"  # status of an order written before it was sent

_TYPES: dict[Dialect, dict[Kind, str]] = {
    "sqlite": {
        "text": "TEXT",
        "int": "INTEGER",
        "money": "TEXT",
        "real": "REAL",
        "json": "TEXT",
        "bool": "INTEGER",
    },
    "postgresql": {
        "text": "TEXT",
        "int": "BIGINT",
        "money": "NUMERIC",
        "real": "DOUBLE PRECISION",
        "json": "JSONB",
        "bool": "BOOLEAN",
    },
}
_SERIAL: dict[Dialect, str] = {
    "sqlite": "id INTEGER PRIMARY KEY AUTOINCREMENT",
    "postgresql": "id BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY",
}


@dataclass(frozen=True, slots=True)
class Table:
    """One kind of write: a table, its key, and how a conflicting row is treated.

    ``update`` empty means insert-or-ignore; otherwise those columns are overwritten (the
    ``coalesce`` ones only by a non-null value) when ``guard`` holds for the stored row.
    ``serial`` tables carry an ``id`` in insertion order and a UNIQUE natural ``key``.
    """

    name: str
    columns: tuple[tuple[str, Kind], ...]
    key: tuple[str, ...]
    update: tuple[str, ...] = ()
    coalesce: tuple[str, ...] = ()
    guard: str = ""
    serial: bool = False

    @property
    def kinds(self) -> dict[str, Kind]:
        return dict(self.columns)


_KIND_OF: dict[str, Kind] = {kind: kind for kind in _TYPES["sqlite"]}


def _cols(spec: str) -> tuple[tuple[str, Kind], ...]:
    """``"a:text b:int"`` -> ``(("a", "text"), ("b", "int"))``: keeps the specs readable."""
    out: list[tuple[str, Kind]] = []
    for item in spec.split():
        name, kind = item.split(":")
        out.append((name, _KIND_OF[kind]))
    return tuple(out)


def _all_but(columns: tuple[tuple[str, Kind], ...], *skip: str) -> tuple[str, ...]:
    return tuple(name for name, _ in columns if name not in skip)


_SIGNALS = _cols(
    "signal_id:text trade_id:text pair:text side:text order_type:text is_exit:bool "
    "entry_price:money stop_loss:money take_profit:money prob_up:real threshold:real "
    "model_id:text prediction_ts_ns:int features_ts_ns:int features:json ts_ns:int"
)
_RISK = _cols(
    "signal_id:text trade_id:text pair:text approved:bool reason:text qty:money "
    "limit_price:money checks:json ts_ns:int"
)
_ORDERS = _cols(
    "client_order_id:text trade_id:text signal_id:text pair:text side:text order_type:text "
    "qty:money limit_price:money trigger_price:money exchange_order_id:text status:text "
    "filled_qty:money avg_price:money fees:money reason:text created_ts_ns:int "
    "updated_ts_ns:int"
)
_ORDER_EVENTS = _cols(
    "event_key:text client_order_id:text trade_id:text signal_id:text status:text "
    "filled_qty:money avg_price:money last_fill_qty:money last_fill_price:money fee:money "
    "fee_asset:text reason:text ts_ns:int"
)
_FILLS = _cols(
    "client_order_id:text cum_qty:money trade_id:text signal_id:text pair:text side:text "
    "qty:money price:money fee:money fee_asset:text liquidity:text realised_pnl:money ts_ns:int"
)
_TRADES = _cols(
    "trade_id:text pair:text status:text entry_ts_ns:int exit_ts_ns:int entry_qty:money "
    "exit_qty:money open_qty:money open_avg:money avg_entry:money avg_exit:money "
    "entry_fees:money "
    "exit_fees:money open_entry_fees:money gross_pnl:money pnl:money fills:int"
)
_POSITIONS = _cols(
    "pair:text qty:money avg_entry:money mark:money unrealised_pnl:money opened_ts_ns:int ts_ns:int"
)
_EQUITY_V1 = _cols(
    "ts_ns:int equity:money cash:money free_cash:money realised_pnl:money unrealised_pnl:money "
    "fees_paid:money peak_equity:money drawdown:money exposure:money consecutive_losses:int"
)
_EQUITY_V2 = _cols("day_start_equity:money week_start_equity:money")  # the risk baselines
_EQUITY = _EQUITY_V1 + _EQUITY_V2
_HALTS = _cols("event_key:text kind:text reason:text source:text operator:text ts_ns:int")
_DAILY = _cols(
    "day:text day_start_ts_ns:int start_equity:money end_equity:money equity_pnl:money "
    "realised_pnl:money fees:money trades:int wins:int losses:int updated_ts_ns:int"
)

_ORDER_REPORT_UPDATE = _all_but(_ORDERS, "client_order_id", "created_ts_ns")

# Write kinds by name; a Record names one of these.
TABLES: dict[str, Table] = {
    "signal": Table("signals", _SIGNALS, ("signal_id",)),
    "risk_decision": Table("risk_decisions", _RISK, ("signal_id",)),
    "order_intent": Table("orders", _ORDERS, ("client_order_id",)),
    "order": Table(
        "orders",
        _ORDERS,
        ("client_order_id",),
        update=_ORDER_REPORT_UPDATE,
        coalesce=("exchange_order_id", "limit_price", "trigger_price", "signal_id", "reason"),
        guard=f"orders.status = '{INTENT}' OR excluded.updated_ts_ns >= orders.updated_ts_ns",
    ),
    "order_event": Table("order_events", _ORDER_EVENTS, ("event_key",), serial=True),
    "fill": Table("fills", _FILLS, ("client_order_id", "cum_qty"), serial=True),
    "trade": Table(
        "trades",
        _TRADES,
        ("trade_id",),
        update=_all_but(_TRADES, "trade_id"),
        guard="excluded.fills >= trades.fills",
    ),
    "position": Table(
        "positions",
        _POSITIONS,
        ("pair",),
        update=_all_but(_POSITIONS, "pair"),
        guard="excluded.ts_ns >= positions.ts_ns",
    ),
    "equity": Table("equity_snapshots", _EQUITY, ("ts_ns",)),
    "halt": Table("halts", _HALTS, ("event_key",), serial=True),
    "daily_summary": Table(
        "daily_summaries",
        _DAILY,
        ("day",),
        update=_all_but(_DAILY, "day"),
        guard="excluded.updated_ts_ns >= daily_summaries.updated_ts_ns",
    ),
}


def create_table(table: Table, dialect: Dialect) -> str:
    types = _TYPES[dialect]
    lines = [_SERIAL[dialect]] if table.serial else []
    lines += [f"{name} {types[kind]}" for name, kind in table.columns]
    key = ", ".join(table.key)
    lines.append(f"UNIQUE ({key})" if table.serial else f"PRIMARY KEY ({key})")
    return f"CREATE TABLE IF NOT EXISTS {table.name} (\n  " + ",\n  ".join(lines) + "\n)"


def _v1(dialect: Dialect) -> list[str]:
    """Every table, and indexes for the joins and reads crash recovery needs."""
    seen: dict[str, Table] = {}
    for table in TABLES.values():
        seen.setdefault(table.name, table)
    seen["equity_snapshots"] = Table("equity_snapshots", _EQUITY_V1, ("ts_ns",))  # as in v1
    statements = [create_table(t, dialect) for t in seen.values()]
    for name in ("signals", "risk_decisions", "orders", "order_events", "fills"):
        statements.append(f"CREATE INDEX IF NOT EXISTS ix_{name}_trade ON {name} (trade_id)")
    statements += [
        "CREATE INDEX IF NOT EXISTS ix_orders_status ON orders (status)",
        "CREATE INDEX IF NOT EXISTS ix_fills_ts ON fills (ts_ns)",
        "CREATE INDEX IF NOT EXISTS ix_halts_ts ON halts (ts_ns)",
    ]
    return statements


def _v2(dialect: Dialect) -> list[str]:
    """The equity snapshots keep the day's and the week's start equity, so a restart carries
    the daily and weekly drawdown limits on instead of starting them from the current cash."""
    money = _TYPES[dialect]["money"]
    return [f"ALTER TABLE equity_snapshots ADD COLUMN {name} {money}" for name, _ in _EQUITY_V2] + [
        "CREATE INDEX IF NOT EXISTS ix_trades_exit ON trades (exit_ts_ns)"
    ]


@dataclass(frozen=True, slots=True)
class Migration:
    version: int
    description: str
    statements: Callable[[Dialect], list[str]]


MIGRATIONS: tuple[Migration, ...] = (
    Migration(
        1,
        "audit trail: signals, risk decisions, orders, fills, trades, portfolio, "
        "halts, daily summaries",
        _v1,
    ),
    Migration(2, "risk baselines in equity snapshots (day and week start equity)", _v2),
)

SCHEMA_VERSION_DDL = (
    "CREATE TABLE IF NOT EXISTS schema_version (version INTEGER PRIMARY KEY, "
    "description TEXT NOT NULL, applied_ts_ns BIGINT NOT NULL)"
)


def upsert_sql(table: Table) -> str:
    """The idempotent INSERT for ``table`` with ``?`` placeholders (the PostgreSQL backend
    renumbers them); the same text is valid in both dialects."""
    names = [name for name, _ in table.columns]
    head = (
        f"INSERT INTO {table.name} ({', '.join(names)}) "
        f"VALUES ({', '.join('?' for _ in names)}) ON CONFLICT ({', '.join(table.key)}) "
    )
    if not table.update:
        return head + "DO NOTHING"
    sets = [
        f"{c} = COALESCE(excluded.{c}, {table.name}.{c})"
        if c in table.coalesce
        else f"{c} = excluded.{c}"
        for c in table.update
    ]
    where = f" WHERE {table.guard}" if table.guard else ""
    return head + "DO UPDATE SET " + ", ".join(sets) + where
