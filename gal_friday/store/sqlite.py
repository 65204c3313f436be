"""The embedded default backend: one SQLite file through aiosqlite, in WAL mode.

WAL lets readers (the cockpit, ``sqlite3`` on the command line) look at the audit trail while
the bot writes, and ``synchronous=FULL`` makes a committed batch survive a power cut, which
matters for order intents. Money is stored as the Decimal's string (SQLite's numbers are
binary floats). Every ``sqlite3.OperationalError`` (locked, disk I/O error, disk full,
read-only, cannot open) is an environment problem and becomes :class:`StoreUnavailable`;
after one, the connection is reopened on the next call. A damaged file is not: "file is not
a database", "database disk image is malformed", or a failed ``PRAGMA quick_check`` at the
first open become :class:`StoreCorrupt`, for good (no retry can mend the file).
"""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
import time
from collections.abc import Sequence
from decimal import Decimal
from pathlib import Path
from typing import Any

import aiosqlite

from gal_friday.folders import make_folder
from gal_friday.store.base import Record, Store, StoreCorrupt, StoreUnavailable, runs
from gal_friday.store.schema import (
    MIGRATIONS,
    SCHEMA_VERSION_DDL,
    Kind,
    Table,
    upsert_sql,
)

_FAILURES = (sqlite3.OperationalError, sqlite3.DatabaseError, OSError, ValueError)
_DAMAGED = (sqlite3.SQLITE_CORRUPT, sqlite3.SQLITE_NOTADB)


def _damaged(exc: BaseException) -> bool:
    """The file itself is broken ("file is not a database", "database disk image is
    malformed"): waiting for it cannot help, unlike a lock or a disk that is away."""
    return isinstance(exc, sqlite3.DatabaseError) and (
        getattr(exc, "sqlite_errorcode", None) in _DAMAGED
        or any(text in str(exc) for text in ("malformed", "not a database"))
    )


def _unavailable(exc: BaseException) -> bool:
    """The environment failed (locked, I/O, full, closed), not the records themselves."""
    return not _damaged(exc) and (
        isinstance(exc, sqlite3.OperationalError | OSError | ValueError)
        or type(exc) is sqlite3.DatabaseError
    )


def _encode(kind: Kind, value: Any) -> Any:
    if value is None:
        return None
    if kind == "money":
        return str(value if isinstance(value, Decimal) else Decimal(value))
    if kind == "bool":
        return int(bool(value))
    return value


def _params(table: Table, row: Any) -> tuple[Any, ...]:
    return tuple(_encode(kind, row.get(name)) for name, kind in table.columns)


class SqliteStore(Store):
    """The audit store in one SQLite file."""

    dialect = "sqlite"

    def __init__(self, path: Path | str, *, busy_timeout_s: float = 5.0) -> None:
        self.path = Path(path)
        self.busy_timeout_s = busy_timeout_s
        self._db: aiosqlite.Connection | None = None
        self._lock = asyncio.Lock()
        self._checked = False  # PRAGMA quick_check passed once for this file
        self._damage: StoreCorrupt | None = None  # once found, every later call says so

    async def connect(self) -> None:
        async with self._lock:
            await self._ensure()

    async def close(self) -> None:
        async with self._lock:
            await self._drop()

    async def write(self, records: Sequence[Record]) -> None:
        if not records:
            return
        async with self._lock:
            db = await self._ensure()
            try:
                await self._write(db, records)
            except Exception as exc:
                await self._rollback(db)
                await self._check_damage(exc)
                if not _unavailable(exc):
                    raise
                await self._drop()
                raise StoreUnavailable(f"sqlite write failed: {exc}") from exc

    async def fetch(self, sql: str, *params: Any) -> list[dict[str, Any]]:
        async with self._lock:
            db = await self._ensure()
            try:
                async with db.execute(sql, params) as cursor:
                    names = [d[0] for d in cursor.description]
                    return [dict(zip(names, row, strict=True)) for row in await cursor.fetchall()]
            except Exception as exc:
                await self._check_damage(exc)
                if not _unavailable(exc):
                    raise
                await self._drop()
                raise StoreUnavailable(f"sqlite read failed: {exc}") from exc

    # --- internals ------------------------------------------------------------------------

    async def _write(self, db: aiosqlite.Connection, records: Sequence[Record]) -> None:
        await db.execute("BEGIN IMMEDIATE")
        for table, rows in runs(records):
            await db.executemany(upsert_sql(table), [_params(table, r) for r in rows])
        await db.execute("COMMIT")

    async def _ensure(self) -> aiosqlite.Connection:
        if self._damage is not None:
            raise self._damage
        if self._db is not None:
            return self._db
        try:
            make_folder(self.path.parent, "audit store folder")
            db = await aiosqlite.connect(
                self.path, isolation_level=None, timeout=self.busy_timeout_s
            )
        except _FAILURES as exc:
            raise StoreUnavailable(f"cannot open {self.path}: {exc}") from exc
        try:
            await db.execute(f"PRAGMA busy_timeout = {int(self.busy_timeout_s * 1000)}")
            await db.execute("PRAGMA journal_mode = WAL")
            await db.execute("PRAGMA synchronous = FULL")
            if not self._checked:
                await self._quick_check(db)
            await _migrate(db)
        except _FAILURES as exc:
            await db.close()
            await self._check_damage(exc)
            raise StoreUnavailable(f"cannot prepare {self.path}: {exc}") from exc
        except StoreCorrupt:
            await db.close()
            raise
        self._checked = True
        self._db = db
        return db

    async def _quick_check(self, db: aiosqlite.Connection) -> None:
        """At the first open: SQLite's own check of the file's pages and indexes, so damage
        is found before the run trusts the store, not when a read stumbles on it."""
        async with db.execute("PRAGMA quick_check") as cursor:
            rows = [tuple(row) for row in await cursor.fetchall()]
        if rows != [("ok",)]:
            first = str(rows[0][0]) if rows else "no answer"
            first = " ".join(first.replace("*** in database main ***", "").split())  # one line
            self._damage = _corrupt(self.path, f"quick_check: {first}")
            raise self._damage

    async def _check_damage(self, exc: BaseException) -> None:
        """Raise StoreCorrupt (and remember it) when ``exc`` says the file is broken."""
        if _damaged(exc):
            await self._drop()
            self._damage = _corrupt(self.path, str(exc))
            raise self._damage from exc

    async def _drop(self) -> None:
        db, self._db = self._db, None
        if db is not None:
            with contextlib.suppress(*_FAILURES):
                await db.close()

    @staticmethod
    async def _rollback(db: aiosqlite.Connection) -> None:
        with contextlib.suppress(*_FAILURES):
            if db.in_transaction:
                await db.execute("ROLLBACK")


def _corrupt(path: Path, detail: str) -> StoreCorrupt:
    return StoreCorrupt(
        f"the audit store {path} is damaged ({detail}); restore it from a backup, or move "
        "it aside to start a new one (its orders and fills are then not known to the bot)"
    )


async def _migrate(db: aiosqlite.Connection) -> None:
    """Apply every migration newer than the recorded version, each in its own transaction
    (BEGIN IMMEDIATE serialises two processes migrating the same file)."""
    await db.execute(SCHEMA_VERSION_DDL)
    for migration in MIGRATIONS:
        await db.execute("BEGIN IMMEDIATE")
        try:
            async with db.execute(
                "SELECT 1 FROM schema_version WHERE version = ?", (migration.version,)
            ) as cursor:
                done = await cursor.fetchone() is not None
            if not done:
                for statement in migration.statements("sqlite"):
                    await db.execute(statement)
                await db.execute(
                    "INSERT INTO schema_version (version, description, applied_ts_ns) "
                    "VALUES (?, ?, ?)",
                    (migration.version, migration.description, time.time_ns()),
                )
            await db.execute("COMMIT")
        except BaseException:
            await db.execute("ROLLBACK")
            raise
