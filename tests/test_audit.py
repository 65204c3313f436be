"""The AuditWriter: fed from the bus, never blocking it, never losing a record (both backends).

Outages are real failures: for PostgreSQL a loopback proxy between asyncpg and the server is
cut (connections aborted, new ones refused); for SQLite another connection holds the
database's write lock, so every write of ours fails with "database is locked".
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from decimal import Decimal
from pathlib import Path

import pytest
from test_store import (
    ENTRY,
    T0,
    Backend,
    backend,
    count,
    entry_events,
    money,
    run_writer,
    snapshot,
    trade_reports,
)

from gal_friday.bus import EventBus
from gal_friday.config import LoggingSettings, Settings
from gal_friday.events import Event, TradingState, TradingStateChangedEvent
from gal_friday.logs import setup_logging
from gal_friday.store.audit import AuditWriter
from gal_friday.store.ledger import NS_PER_DAY

__all__ = ["backend"]  # the parametrised fixture, shared with test_store

KEY = "MARKER-KEY-7f3a9c"
SECRET = "TUFSS0VSLVNFQ1JFVC03ZjNhOWMtbWFya2VyLXNlY3JldA=="  # base64 of a marker


def halted(reason: str, source: str, ts_ns: int = T0) -> TradingStateChangedEvent:
    return TradingStateChangedEvent(TradingState.HALTED, TradingState.ACTIVE, reason, source, ts_ns)


def halts(n: int, start: int = 0) -> list[Event]:
    return [halted(f"reason {i}", "test", T0 + i) for i in range(start, start + n)]


async def wait_for(predicate: object, timeout_s: float = 5.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not predicate():  # type: ignore[operator]
        assert time.monotonic() < deadline, "timed out"
        await asyncio.sleep(0.01)


async def halt_order(backend: Backend) -> list[int]:
    store = await backend.store()
    return [r["ts_ns"] for r in await store.fetch("SELECT ts_ns FROM halts ORDER BY id")]


async def test_an_outage_loses_no_record_and_replay_keeps_order(backend: Backend) -> None:
    store = await backend.store()
    writer = AuditWriter(store, backend.settings, flush_interval_s=0.01)
    await writer.start()
    for event in halts(5):
        writer.on_event(event)
    await writer.flush()
    assert writer.stats().written == 5

    backend.fail()
    for event in [*halts(20, start=5), *entry_events(), *trade_reports()]:
        writer.on_event(event)
    await writer.record_order_intent(ENTRY)  # durable although the database is down
    await wait_for(lambda: writer.stats().spill_pending >= 20 and not writer.db_available)
    assert writer.stats().queue_depth == 0
    lines = writer.spill.path.read_text().splitlines()
    assert [json.loads(x)["kind"] for x in lines].count("halt") == 20

    backend.restore()
    await wait_for(lambda: writer.stats().spill_pending == 0 and writer.db_available)
    for event in halts(5, start=25):
        writer.on_event(event)
    await writer.stop()
    stats = writer.stats()
    assert stats.replayed >= 20 and stats.spilled >= 20 and stats.rejected == 0
    assert await halt_order(backend) == [T0 + i for i in range(30)]
    check = await backend.store()
    assert await count(check, "fills") == 3 and await count(check, "order_events") == 10
    assert (await check.order("E1")) is not None
    [trade] = await check.fetch("SELECT pnl FROM trades")
    assert money(trade["pnl"]) == Decimal("0.173")


async def test_a_full_queue_spills_instead_of_blocking(backend: Backend) -> None:
    settings = Settings(
        paths=backend.settings.paths.model_dump(),
        store={**backend.settings.store.model_dump(), "queue_size": 100},
    )
    store = await backend.store()
    writer = AuditWriter(store, settings)
    await writer.start()
    for event in halts(350):  # no await in between: the writer task cannot run
        writer.on_event(event)
    stats = writer.stats()
    assert stats.queue_depth == 100 and stats.spilled == 250
    await writer.stop()
    assert writer.stats().spill_pending == 0
    assert await halt_order(backend) == [T0 + i for i in range(350)]


async def test_a_crash_while_spilling_is_replayed_at_the_next_start(backend: Backend) -> None:
    store = await backend.store()
    backend.fail()
    crashed = AuditWriter(store, backend.settings, flush_interval_s=0.01)
    await crashed.start()
    for event in halts(10):
        crashed.on_event(event)
    await wait_for(lambda: crashed.stats().spill_pending == 10)
    assert crashed._task is not None
    crashed._task.cancel()  # the process dies here: no stop(), no flush
    backend.restore()

    again = AuditWriter(await backend.store(), backend.settings)
    assert again.stats().spill_pending == 10
    await again.start()
    for event in halts(2, start=10):
        again.on_event(event)
    await again.stop()
    assert await halt_order(backend) == [T0 + i for i in range(12)]
    assert again.stats().replayed == 10


async def test_daily_summary_at_the_utc_day_roll(backend: Backend) -> None:
    store = await backend.store()
    day2 = (T0 // NS_PER_DAY + 1) * NS_PER_DAY
    await run_writer(
        store,
        backend.settings,
        [
            snapshot(T0, "1000"),
            *entry_events(),
            *trade_reports(),
            snapshot(T0 + 40, "1000.173"),
            snapshot(day2 + 5, "1000.173"),
        ],
    )
    rows = await store.fetch("SELECT * FROM daily_summaries ORDER BY day")
    assert [r["day"] for r in rows] == ["2023-11-14", "2023-11-15"]
    first = rows[0]
    assert (first["trades"], first["wins"], first["losses"]) == (1, 1, 0)
    assert money(first["realised_pnl"]) == Decimal("0.173")
    assert money(first["fees"]) == Decimal("0.327")
    assert (money(first["start_equity"]), money(first["end_equity"])) == (
        Decimal("1000"),
        Decimal("1000.173"),
    )
    assert money(rows[1]["start_equity"]) == Decimal("1000.173")
    assert await count(store, "equity_snapshots") == 2  # T0+40 is within 10 s of T0


async def test_attached_to_the_bus_with_block_policy(backend: Backend) -> None:
    bus = EventBus()
    store = await backend.store()
    writer = AuditWriter(store, backend.settings, bus)
    sub = writer.attach()
    assert sub.policy.name == "BLOCK"
    await writer.start()
    bus.start()
    for event in [*entry_events(), *trade_reports()]:
        await bus.publish(event)
    await bus.drain()
    await bus.stop()
    await writer.stop()
    assert await count(store, "signals") == 1 and await count(store, "fills") == 3


async def test_secrets_never_reach_a_table_or_a_log_file(
    backend: Backend,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("KRAKEN_API_KEY", KEY)
    monkeypatch.setenv("KRAKEN_API_SECRET", SECRET)
    from gal_friday.config import load_credentials

    creds = load_credentials()
    assert creds.api_key is not None and creds.api_secret is not None
    backend.settings._credentials = creds
    logs = tmp_path / "logs" / "bot.jsonl"
    setup_logging(
        LoggingSettings(file=str(logs), stdout=False, level="DEBUG"),
        secrets=[creds.api_key.get_secret_value(), creds.api_secret.get_secret_value()],
    )
    try:
        log = logging.getLogger("gal_friday.test")
        log.error("auth failed for key %s", KEY, extra={"api_secret": SECRET})
        store = await backend.store()
        await run_writer(
            store,
            backend.settings,
            [*entry_events(), *trade_reports(), halted(f"auth failed {KEY}", "execution")],
            intents=(ENTRY,),
        )
        backend.fail()
        writer = await run_writer(store, backend.settings, halts(3))  # spills, logs errors
        backend.restore()
        assert writer.stats().spilled > 0
    finally:
        for handler in logging.getLogger().handlers:
            handler.flush()
        logging.getLogger().handlers.clear()
    dump = await backend.dump()
    assert "sig-1" in dump and "auth failed ***" in dump
    texts = [dump, writer.spill.path.read_text(), *(p.read_text() for p in logs.parent.iterdir())]
    for text in texts:
        assert KEY not in text and SECRET not in text
