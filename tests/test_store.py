"""The audit store: one suite, run against SQLite and PostgreSQL alike.

PostgreSQL is the server on 127.0.0.1:5432 (database ``test``, user ``postgres``, trust auth)
that ``scripts/test`` starts; each test gets its own schema, dropped afterwards. If the server
is not reachable the run stops before the first test, saying so (``needs_server`` in
conftest.py): the production backend is never silently left untested.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import secrets
import sqlite3
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Any

import asyncpg
import pytest

from gal_friday.config import Settings
from gal_friday.domain import PortfolioSnapshot, Position
from gal_friday.events import (
    Event,
    ExecutionReportEvent,
    FeatureEvent,
    OrderStatus,
    OrderType,
    PortfolioEvent,
    PredictionEvent,
    Side,
    TradeSignalApprovedEvent,
    TradeSignalProposedEvent,
    TradeSignalRejectedEvent,
    TradingState,
    TradingStateChangedEvent,
)
from gal_friday.execution.venue import OrderRequest
from gal_friday.store import Store, make_store, open_store
from gal_friday.store.audit import AuditWriter
from gal_friday.store.postgres import PostgresStore, check_dsn
from gal_friday.store.schema import MIGRATIONS
from gal_friday.store.sqlite import SqliteStore

PG_ADMIN = "postgresql://postgres@127.0.0.1:5432/test"
PAIR = "XRP/USD"
T0 = 1_700_000_000 * 10**9  # 2023-11-14T22:13:20Z
D = Decimal


# --- backends -------------------------------------------------------------------------------


class Proxy:
    """A loopback TCP proxy in front of PostgreSQL that can be cut like a network failure:
    live connections are aborted and new ones are closed at once until restored."""

    def __init__(self, port: int = 5432) -> None:
        self.target = port
        self.down = False
        self.port = 0
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if self.down:
            writer.transport.abort()
            return
        up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.target)
        self._writers |= {writer, up_writer}
        await asyncio.gather(
            self._pipe(reader, up_writer), self._pipe(up_reader, writer), return_exceptions=True
        )

    async def _pipe(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while data := await reader.read(65536):
                writer.write(data)
                await writer.drain()
        finally:
            self._writers.discard(writer)
            writer.transport.abort()

    def cut(self) -> None:
        self.down = True
        for writer in list(self._writers):
            writer.transport.abort()
        self._writers.clear()

    def restore(self) -> None:
        self.down = False

    async def close(self) -> None:
        self.cut()
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()


@dataclass
class Backend:
    """One database for one test, and the means to break it for real and mend it."""

    name: str
    settings: Settings
    make: Callable[[], Store]
    fail: Callable[[], None]
    restore: Callable[[], None]
    dump: Callable[[], Awaitable[str]]
    stores: list[Store] = field(default_factory=list)

    async def store(self) -> Store:
        store = self.make()
        await store.connect()
        self.stores.append(store)
        return store


def _settings(tmp_path: Path, **store: Any) -> Settings:
    return Settings(paths={"data_dir": str(tmp_path / "data")}, store={"retry_s": 0.05, **store})


@contextlib.asynccontextmanager
async def _sqlite_backend(tmp_path: Path) -> AsyncIterator[Backend]:
    settings = _settings(tmp_path)
    path = Path(settings.paths.data_dir) / settings.store.sqlite_file
    locker: list[sqlite3.Connection] = []

    def fail() -> None:  # another writer holds the database: every write of ours fails
        con = sqlite3.connect(path, isolation_level=None, timeout=0.1)
        con.execute("BEGIN EXCLUSIVE")
        locker.append(con)

    def restore() -> None:
        while locker:
            con = locker.pop()
            con.execute("ROLLBACK")
            con.close()

    async def dump() -> str:
        con = sqlite3.connect(path)
        try:
            return "\n".join(con.iterdump())
        finally:
            con.close()

    backend = Backend(
        "sqlite", settings, lambda: SqliteStore(path, busy_timeout_s=0.1), fail, restore, dump
    )
    yield backend
    restore()


@contextlib.asynccontextmanager
async def _postgres_backend(tmp_path: Path) -> AsyncIterator[Backend]:
    schema = f"gf_test_{secrets.token_hex(6)}"
    admin = await asyncpg.connect(PG_ADMIN, timeout=5)  # unreachable: the test fails
    await admin.execute(f"CREATE SCHEMA {schema}")
    proxy = Proxy()
    await proxy.start()
    dsn = f"postgresql://postgres@127.0.0.1:{proxy.port}/test?search_path={schema}"
    settings = _settings(tmp_path, backend="postgresql", postgres_dsn=dsn)

    async def dump() -> str:
        tables = await admin.fetch(
            "SELECT table_name FROM information_schema.tables WHERE table_schema = $1", schema
        )
        out = []
        for t in tables:
            rows = await admin.fetch(f"SELECT * FROM {schema}.{t['table_name']}")
            out += [f"{t['table_name']}: {dict(r)}" for r in rows]
        return "\n".join(out)

    backend = Backend(
        "postgresql",
        settings,
        lambda: PostgresStore(dsn, timeout_s=2),
        proxy.cut,
        proxy.restore,
        dump,
    )
    try:
        yield backend
    finally:
        for store in backend.stores:
            await store.close()
        await proxy.close()
        await admin.execute(f"DROP SCHEMA {schema} CASCADE")
        await admin.close()


@pytest.fixture(
    params=["sqlite", pytest.param("postgresql", marks=pytest.mark.needs_server("postgresql"))]
)
async def backend(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Backend]:
    make = _sqlite_backend if request.param == "sqlite" else _postgres_backend
    async with make(tmp_path) as b:
        try:
            yield b
        finally:
            for store in b.stores:
                await store.close()


# --- events ---------------------------------------------------------------------------------


def report(
    coid: str,
    signal: str | None,
    side: Side,
    otype: OrderType,
    status: OrderStatus,
    ts: int,
    qty: str = "100",
    filled: str = "0",
    last: tuple[str, str] | None = None,
    fee: str = "0",
    limit: str | None = None,
    trigger: str | None = None,
    avg: str | None = None,
) -> ExecutionReportEvent:
    return ExecutionReportEvent(
        client_order_id=coid,
        exchange_order_id=f"O-{coid}",
        signal_id=signal,
        pair=PAIR,
        side=side,
        order_type=otype,
        status=status,
        order_qty=D(qty),
        filled_qty=D(filled),
        avg_price=D(avg) if avg else (D(last[1]) if last else None),
        last_fill_qty=D(last[0]) if last else None,
        last_fill_price=D(last[1]) if last else None,
        fee=D(fee),
        fee_asset="USD",
        reason=None,
        ts_ns=ts,
        limit_price=D(limit) if limit else None,
        trigger_price=D(trigger) if trigger else None,
    )


def snapshot(ts: int, equity: str, qty: str = "0") -> PortfolioEvent:
    positions = (Position(PAIR, D(qty), D("0.5"), D("0.501"), T0),) if qty != "0" else ()
    return PortfolioEvent(
        PortfolioSnapshot(
            ts_ns=ts,
            cash=D(equity),
            free_cash=D(equity),
            positions=positions,
            equity=D(equity),
            peak_equity=D(equity),
            day_start_equity=D("1000"),
            week_start_equity=D("1000"),
            realised_pnl=D(0),
            fees_paid=D(0),
            consecutive_losses=0,
        )
    )


def entry_events(sig: str = "sig-1", t: int = T0) -> list[Event]:
    """Features, prediction, signal and approval of a long XRP entry at 0.5."""
    return [
        FeatureEvent(PAIR, t, ("roc_5_pct", "atr_14"), (0.2, float("nan"))),
        PredictionEvent(PAIR, t + 1, "model-a", 0.72, t, 1000),
        TradeSignalProposedEvent(
            sig,
            PAIR,
            Side.BUY,
            OrderType.LIMIT,
            D("0.5000"),
            D("0.4975"),
            D("0.5050"),
            0.72,
            "model-a",
            t + 2,
        ),
        TradeSignalApprovedEvent(
            sig,
            PAIR,
            Side.BUY,
            OrderType.LIMIT,
            D("100"),
            D("0.5000"),
            D("0.4975"),
            D("0.5050"),
            t + 3,
            checks=(("daily_drawdown", True, "0% < 2%"), ("exposure", True, "5% < 10%")),
        ),
    ]


ENTRY = OrderRequest("E1", PAIR, Side.BUY, OrderType.LIMIT, D("100"), D("0.5000"), "sig-1")


def trade_reports(sig: str = "sig-1", t: int = T0, p: str = "") -> list[Event]:
    """Entry filled in two parts (maker), stop and target placed, target fills (taker), the
    stop is cancelled. P&L = (0.505 - 0.5) * 100 - 0.05 - 0.075 - 0.202 = 0.173."""
    b, s, lo, hi = Side.BUY, Side.SELL, OrderType.STOP_LOSS, OrderType.TAKE_PROFIT
    e, st, tg = f"{p}E1", f"{p}S1", f"{p}T1"
    return [
        report(e, sig, b, OrderType.LIMIT, OrderStatus.SUBMITTED, t + 10, limit="0.5"),
        report(e, sig, b, OrderType.LIMIT, OrderStatus.ACKNOWLEDGED, t + 11, limit="0.5"),
        report(
            e,
            sig,
            b,
            OrderType.LIMIT,
            OrderStatus.PARTIALLY_FILLED,
            t + 12,
            filled="40",
            last=("40", "0.5"),
            fee="0.05",
            limit="0.5",
        ),
        report(
            e,
            sig,
            b,
            OrderType.LIMIT,
            OrderStatus.FILLED,
            t + 13,
            filled="100",
            last=("60", "0.5"),
            fee="0.075",
            limit="0.5",
        ),
        report(st, sig, s, lo, OrderStatus.SUBMITTED, t + 20, trigger="0.4975"),
        report(st, sig, s, lo, OrderStatus.ACKNOWLEDGED, t + 21, trigger="0.4975"),
        report(tg, sig, s, hi, OrderStatus.SUBMITTED, t + 22, trigger="0.5050"),
        report(tg, sig, s, hi, OrderStatus.ACKNOWLEDGED, t + 23, trigger="0.5050"),
        report(
            tg,
            sig,
            s,
            hi,
            OrderStatus.FILLED,
            t + 30,
            filled="100",
            last=("100", "0.5050"),
            fee="0.202",
            trigger="0.5050",
        ),
        report(st, sig, s, lo, OrderStatus.CANCELLED, t + 31, trigger="0.4975"),
    ]


async def run_writer(
    store: Store, settings: Settings, events: list[Event], intents: tuple[OrderRequest, ...] = ()
) -> AuditWriter:
    writer = AuditWriter(store, settings)
    await writer.start()
    for intent in intents:
        await writer.record_order_intent(intent, ts_ns=T0 + 5)
    for event in events:
        writer.on_event(event)
    await writer.stop()
    return writer


def money(value: Any) -> Decimal:
    return D(str(value))


async def count(store: Store, table: str) -> int:
    return int((await store.fetch(f"SELECT COUNT(*) AS n FROM {table}"))[0]["n"])


# --- tests ----------------------------------------------------------------------------------


async def test_migrations_are_applied_once_and_are_idempotent(backend: Backend) -> None:
    first = await backend.store()
    await first.close()
    second, third = await backend.store(), await backend.store()  # reconnects: no-ops
    await second.close()
    await third.connect()
    assert await third.schema_version() == MIGRATIONS[-1].version
    versions = await third.fetch("SELECT version FROM schema_version ORDER BY version")
    assert [r["version"] for r in versions] == [m.version for m in MIGRATIONS]


async def test_open_store_follows_settings(backend: Backend) -> None:
    store = await open_store(backend.settings)
    backend.stores.append(store)
    assert store.dialect == backend.name
    assert await store.schema_version() == MIGRATIONS[-1].version
    assert make_store(backend.settings).dialect == backend.name


def test_a_dsn_with_a_password_is_refused() -> None:
    with pytest.raises(ValueError, match="PGPASSWORD"):
        check_dsn("postgresql://postgres:hunter2@127.0.0.1/db")
    check_dsn("postgresql://postgres@127.0.0.1/db?search_path=audit")


async def test_full_trade_lifecycle_joins_on_one_trade_id(backend: Backend) -> None:
    store = await backend.store()
    await run_writer(
        store,
        backend.settings,
        [*entry_events(), *trade_reports(), snapshot(T0 + 40, "1000.173")],
        intents=(ENTRY,),
    )
    rows = await store.fetch(
        "SELECT t.trade_id, t.status AS trade_status, t.pnl, t.gross_pnl, s.prob_up, "
        "s.threshold, s.model_id, s.features, r.approved, r.checks, o.client_order_id, "
        "o.status, o.fees AS order_fees, f.qty, f.price, f.fee, f.liquidity "
        "FROM trades t "
        "JOIN signals s ON s.trade_id = t.trade_id "
        "JOIN risk_decisions r ON r.signal_id = s.signal_id "
        "JOIN orders o ON o.trade_id = t.trade_id "
        "LEFT JOIN fills f ON f.client_order_id = o.client_order_id "
        "WHERE t.trade_id = ? ORDER BY o.created_ts_ns, f.id",
        "sig-1",
    )
    assert [(r["client_order_id"], r["status"]) for r in rows] == [
        ("E1", "filled"),
        ("E1", "filled"),
        ("S1", "cancelled"),
        ("T1", "filled"),
    ]
    first = rows[0]
    assert (first["trade_status"], money(first["pnl"]), money(first["gross_pnl"])) == (
        "closed",
        D("0.173"),
        D("0.5"),
    )
    assert (first["prob_up"], first["threshold"], first["model_id"]) == (0.72, 0.65, "model-a")
    assert json.loads(first["features"]) == {"roc_5_pct": 0.2, "atr_14": None}
    assert bool(first["approved"])
    assert json.loads(first["checks"])[0] == {
        "check": "daily_drawdown",
        "passed": True,
        "detail": "0% < 2%",
    }
    assert [money(r["qty"]) for r in rows if r["qty"] is not None] == [D(40), D(60), D(100)]
    assert [r["liquidity"] for r in rows] == ["maker", "maker", None, "taker"]
    assert money(first["order_fees"]) == D("0.125")
    events = await store.fetch(
        "SELECT status FROM order_events WHERE trade_id = ? ORDER BY id", "sig-1"
    )
    assert len(events) == 10
    entry = await store.order("E1")
    assert entry is not None and entry.created_ts_ns == T0 + 5  # the intent's time
    assert (entry.exchange_order_id, entry.avg_price) == ("O-E1", D("0.5"))
    assert await store.open_orders() == []
    assert await store.last_fill_ts() == T0 + 30


async def test_replayed_and_duplicate_reports_insert_nothing_twice(backend: Backend) -> None:
    store = await backend.store()
    events = [*entry_events(), *trade_reports()]
    await run_writer(store, backend.settings, events + trade_reports())  # duplicates in-run
    before = {t: await count(store, t) for t in ("fills", "order_events", "orders", "trades")}
    await run_writer(store, backend.settings, events)  # a restart replaying everything
    after = {t: await count(store, t) for t in before}
    assert before == after == {"fills": 3, "order_events": 10, "orders": 3, "trades": 1}
    trade = (await store.fetch("SELECT pnl, fills FROM trades"))[0]
    assert (money(trade["pnl"]), trade["fills"]) == (D("0.173"), 3)


async def test_intent_then_recovery_reads(backend: Backend) -> None:
    store = await backend.store()
    await store.record_order_intent(ENTRY, ts_ns=T0)
    await store.record_order_intent(ENTRY, ts_ns=T0 + 99)  # a retry changes nothing
    [intent] = await store.open_orders()
    assert (intent.status, intent.qty, intent.limit_price, intent.created_ts_ns) == (
        "intent",
        D("100"),
        D("0.5000"),
        T0,
    )
    assert (intent.signal_id, intent.trade_id, intent.is_final) == ("sig-1", "sig-1", False)
    assert await store.order("nope") is None
    assert await store.last_fill_ts() is None
    await run_writer(
        store,
        backend.settings,
        [
            *trade_reports()[:3],
            snapshot(T0 + 12, "1000", qty="40"),
            TradingStateChangedEvent(
                TradingState.HALTED, TradingState.ACTIVE, "daily drawdown", "risk", T0 + 50
            ),
            TradingStateChangedEvent(
                TradingState.ACTIVE, TradingState.HALTED, "", "alice", T0 + 55
            ),
            TradingStateChangedEvent(
                TradingState.REDUCING, TradingState.ACTIVE, "wind down", "bob", T0 + 60
            ),
        ],
    )
    [working] = await store.open_orders()
    assert (working.status, working.filled_qty, working.exchange_order_id) == (
        "partially_filled",
        D("40"),
        "O-E1",
    )
    [position] = await store.positions()
    assert (position.pair, position.qty, position.avg_entry) == (PAIR, D("40"), D("0.5"))
    halts = await store.recent_halts()
    assert [(h.kind, h.reason, h.source, h.operator) for h in halts] == [
        ("reduce", "wind down", "bob", None),
        ("resume", None, "operator", "alice"),
        ("halt", "daily drawdown", "risk", None),
    ]


async def test_rejected_signal_is_recorded_with_every_check(backend: Backend) -> None:
    store = await backend.store()
    await run_writer(
        store,
        backend.settings,
        [
            *entry_events()[:3],
            TradeSignalRejectedEvent(
                "sig-1",
                PAIR,
                "exposure",
                T0 + 3,
                checks=(("daily_drawdown", True, "ok"), ("exposure", False, "12% > 10%")),
            ),
        ],
    )
    [row] = await store.fetch("SELECT approved, reason, checks, qty FROM risk_decisions")
    assert (bool(row["approved"]), row["reason"], row["qty"]) == (False, "exposure", None)
    assert [c["passed"] for c in json.loads(row["checks"])] == [True, False]


async def test_exact_decimals_survive_the_round_trip(backend: Backend) -> None:
    store = await backend.store()
    odd = OrderRequest(
        "X1",
        PAIR,
        Side.BUY,
        OrderType.LIMIT,
        D("123456789.123456789"),
        D("0.000000012345678901"),
        "sig-x",
    )
    await store.record_order_intent(odd)
    got = await store.order("X1")
    assert got is not None
    assert (got.qty, got.limit_price) == (odd.qty, odd.limit_price)


def test_each_exchange_and_mode_has_its_own_sqlite_and_spill_file() -> None:
    from gal_friday.config import Settings
    from gal_friday.store import for_run

    live = for_run(Settings.model_validate({"exchange": "kraken", "mode": "live"})).store
    paper = for_run(Settings.model_validate({"exchange": "sim", "mode": "paper"})).store
    assert (live.sqlite_file, live.spill_file) == (
        "gal-friday-kraken-live.sqlite3",
        "audit-spill-kraken-live.jsonl",
    )
    assert (paper.sqlite_file, paper.spill_file) == (
        "gal-friday-sim-paper.sqlite3",
        "audit-spill-sim-paper.jsonl",
    )
