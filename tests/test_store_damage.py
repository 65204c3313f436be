"""A damaged SQLite store is told apart from one that is merely locked or away.

Damage ("file is not a database", "database disk image is malformed", a failed
``PRAGMA quick_check``) cannot be waited out: the store says so at its first open, and a run
that finds it later HALTs with the reason. A lock or a missing disk stays what it was: the
records are spilled and retried. Real files, damaged on disk.
"""

from __future__ import annotations

import asyncio
import json
import logging
import sqlite3
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from gal_friday.bus import EventBus
from gal_friday.config import Settings
from gal_friday.events import HaltEvent, TradingState, TradingStateChangedEvent
from gal_friday.store import StoreUnavailable
from gal_friday.store.audit import AuditWriter
from gal_friday.store.base import StoreCorrupt
from gal_friday.store.sqlite import SqliteStore

PAGE = 4096


def halted(i: int) -> TradingStateChangedEvent:
    return TradingStateChangedEvent(TradingState.HALTED, TradingState.ACTIVE, f"r{i}", "t", i + 1)


async def wait_for(predicate: object, timeout_s: float = 5.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not predicate():  # type: ignore[operator]
        assert time.monotonic() < deadline, "timed out"
        await asyncio.sleep(0.01)


def settings(tmp_path: Path) -> Settings:
    return Settings(paths={"data_dir": str(tmp_path)}, store={"retry_s": 0.05})


async def filled_store(tmp_path: Path, rows: int = 300) -> Path:
    """A real audit store holding ``rows`` halts, checkpointed into its main file."""
    path = tmp_path / "audit.sqlite3"
    store = SqliteStore(path)
    writer = AuditWriter(store, settings(tmp_path))
    await writer.start()
    for i in range(rows):
        writer.on_event(halted(i))
    await writer.stop()
    await store.close()
    checkpoint(path)
    return path


def checkpoint(path: Path) -> None:
    con = sqlite3.connect(path)
    try:
        con.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    finally:
        con.close()


def garble_pages(path: Path) -> None:
    """Overwrite every page after the first (the header stays valid): a damaged disk."""
    data = bytearray(path.read_bytes())
    assert len(data) > 4 * PAGE
    data[PAGE:] = b"\x5a" * (len(data) - PAGE)
    path.write_bytes(bytes(data))


def flip_one_page(path: Path) -> None:
    """Damage one page's header, one that only a full check reads (SQLite's own
    ``quick_check`` run here lists it): normal use may not touch it for a long time."""
    data = path.read_bytes()
    for start in range(len(data) - PAGE, 0, -PAGE):
        damaged = bytearray(data)
        damaged[start : start + 16] = bytes(b ^ 0xFF for b in data[start : start + 16])
        path.write_bytes(bytes(damaged))
        con = sqlite3.connect(path)
        try:
            if con.execute("PRAGMA quick_check").fetchall() != [("ok",)]:
                return
        except sqlite3.DatabaseError:
            pass  # a page every read needs: not the kind of damage meant here
        finally:
            con.close()
    raise AssertionError("no page whose damage only quick_check finds")


@pytest.mark.parametrize(
    ("damage", "found"),
    [
        (lambda path: path.write_bytes(b"\x00\x01garbage" * 1000), "(file is not a database)"),
        (garble_pages, "(database disk image is malformed)"),
        (flip_one_page, "(quick_check: Page "),
    ],
    ids=["not a database", "garbled pages", "one damaged page"],
)
async def test_a_damaged_file_is_refused_at_open_naming_it(
    tmp_path: Path, damage: Callable[[Path], None], found: str
) -> None:
    path = await filled_store(tmp_path)
    damage(path)
    before = path.read_bytes()
    store = SqliteStore(path)
    with pytest.raises(StoreCorrupt) as caught:
        await store.connect()
    message = str(caught.value)
    assert message.startswith(f"the audit store {path} is damaged {found}")
    assert "\n" not in message
    with pytest.raises(StoreCorrupt):  # for good: no call reaches the file again
        await store.fetch("SELECT 1")
    assert path.read_bytes() == before  # nothing written into the damaged file


async def test_a_locked_store_at_open_is_only_unavailable_and_opens_once_free(
    tmp_path: Path,
) -> None:
    path = await filled_store(tmp_path)
    locker = sqlite3.connect(path, isolation_level=None)
    locker.execute("BEGIN EXCLUSIVE")
    store = SqliteStore(path, busy_timeout_s=0.1)
    try:
        with pytest.raises(StoreUnavailable):
            await store.connect()
    finally:
        locker.execute("ROLLBACK")
        locker.close()
    await store.connect()
    assert (await store.fetch("SELECT COUNT(*) AS n FROM halts"))[0]["n"] == 300
    await store.close()


async def test_a_writer_started_on_a_locked_store_spills_and_retries_without_a_halt(
    tmp_path: Path,
) -> None:
    path = await filled_store(tmp_path)
    locker = sqlite3.connect(path, isolation_level=None)
    locker.execute("BEGIN EXCLUSIVE")
    bus = EventBus()
    halts: list[HaltEvent] = []
    bus.subscribe(HaltEvent, halts.append, name="sink")
    store = SqliteStore(path, busy_timeout_s=0.1)
    writer = AuditWriter(store, settings(tmp_path), bus, flush_interval_s=0.01)
    try:
        await writer.start()  # as before: the run starts, the store is only away
        bus.start()
        writer.on_event(halted(300))
        await wait_for(lambda: writer.stats().spill_pending >= 1)
        assert not writer.db_available and writer.damage is None
    finally:
        locker.execute("ROLLBACK")
        locker.close()
    await wait_for(lambda: writer.db_available and writer.stats().spill_pending == 0)
    await writer.stop()
    await bus.stop()
    await store.close()
    assert halts == []
    check = SqliteStore(path)
    assert (await check.fetch("SELECT COUNT(*) AS n FROM halts"))[0]["n"] == 301
    await check.close()


async def test_the_audit_writer_refuses_to_start_on_a_damaged_store(tmp_path: Path) -> None:
    path = await filled_store(tmp_path)
    garble_pages(path)
    writer = AuditWriter(SqliteStore(path), settings(tmp_path))
    with pytest.raises(StoreCorrupt, match="is damaged"):
        await writer.start()


async def test_damage_found_while_running_halts_with_the_reason_and_loses_nothing(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "audit.sqlite3"
    store = SqliteStore(path)
    bus = EventBus()
    halts: list[HaltEvent] = []
    bus.subscribe(HaltEvent, halts.append, name="sink")
    writer = AuditWriter(store, settings(tmp_path), bus, flush_interval_s=0.01)
    await writer.start()
    bus.start()
    try:
        for i in range(300):
            writer.on_event(halted(i))
        await writer.flush()
        checkpoint(path)
        garble_pages(path)  # the disk goes bad under the running bot
        with caplog.at_level(logging.INFO, logger="gal_friday.store.audit"):
            for i in range(300, 305):
                writer.on_event(halted(i))
            await wait_for(lambda: writer.damage is not None)
            await wait_for(lambda: halts)
    finally:
        await writer.stop()
        await bus.stop()
        await store.close()
    [halt] = halts
    assert halt.source == "store"
    assert halt.reason.startswith(f"the audit store {path} is damaged (")
    assert "unavailable" not in caplog.text  # not "database away": it is not coming back
    assert writer.stats().written == 300 and writer.stats().rejected == 0
    spilled = [json.loads(line)["row"] for line in writer.spill.path.read_text().splitlines()]
    kept = [row.get("reason") for row in spilled]
    assert [f"r{i}" for i in range(300, 305)] == [r for r in kept if r and r.startswith("r3")]
