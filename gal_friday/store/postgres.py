"""The production backend: PostgreSQL through asyncpg.

The DSN comes from ``settings.store.postgres_dsn`` and must not hold a password: libpq's own
places for it (``PGPASSWORD``, ``~/.pgpass``), which asyncpg reads, keep it out of config
files and logs. Extra DSN query parameters become server settings, e.g.
``?search_path=audit`` to use a schema other than ``public``.

One connection, used under a lock: the audit writer is a single task and order intents are
rare, so a pool would only add connections to lose. Every operation has a deadline; a
connection that misses it, or fails with a connection-class error, is dropped and reopened on
the next call, and the failure surfaces as :class:`StoreUnavailable`.
"""

from __future__ import annotations

import asyncio
import re
import time
import zlib
from collections.abc import Awaitable, Callable, Sequence
from decimal import Decimal
from typing import Any, TypeVar
from urllib.parse import parse_qs, urlsplit

import asyncpg  # type: ignore[import-untyped]

from gal_friday.store.base import Record, Store, StoreUnavailable, runs
from gal_friday.store.schema import MIGRATIONS, SCHEMA_VERSION_DDL, Kind, Table, upsert_sql

T = TypeVar("T")
_UNAVAILABLE_CLASSES = ("08", "53", "57", "58")  # connection, resources, shutdown, system
_MIGRATION_LOCK = zlib.crc32(b"gal_friday.store.migrations")


def _unavailable(exc: BaseException) -> bool:
    if isinstance(
        exc, OSError | TimeoutError | asyncpg.InterfaceError | asyncpg.PostgresConnectionError
    ):
        return True
    if isinstance(exc, asyncpg.PostgresError):
        return str(getattr(exc, "sqlstate", "") or "")[:2] in _UNAVAILABLE_CLASSES
    return False


def check_dsn(dsn: str) -> None:
    """Refuse a DSN that carries a password: it belongs in PGPASSWORD or ~/.pgpass."""
    parts = urlsplit(dsn)
    if parts.password or "password" in parse_qs(parts.query):
        raise ValueError(
            "store.postgres_dsn must not contain a password; set PGPASSWORD or use ~/.pgpass"
        )


def numbered(sql: str) -> str:
    """``?`` placeholders renumbered ``$1, $2, ...`` (our SQL has no ``?`` in literals)."""
    count = iter(range(1, 10_000))
    return re.sub(r"\?", lambda _: f"${next(count)}", sql)


def _encode(kind: Kind, value: Any) -> Any:
    if value is None:
        return None
    if kind == "money":
        return value if isinstance(value, Decimal) else Decimal(value)
    if kind == "bool":
        return bool(value)
    if kind == "real":
        return float(value)
    return value


def _params(table: Table, row: Any) -> tuple[Any, ...]:
    return tuple(_encode(kind, row.get(name)) for name, kind in table.columns)


class PostgresStore(Store):
    """The audit store in a PostgreSQL database."""

    dialect = "postgresql"

    def __init__(self, dsn: str, *, timeout_s: float = 10.0) -> None:
        check_dsn(dsn)
        self.dsn = dsn
        self.timeout_s = timeout_s
        self._conn: asyncpg.Connection | None = None
        self._lock = asyncio.Lock()

    async def connect(self) -> None:
        async with self._lock:
            await self._ensure()

    async def close(self) -> None:
        async with self._lock:
            conn, self._conn = self._conn, None
            if conn is not None:
                try:
                    async with asyncio.timeout(self.timeout_s):
                        await conn.close()
                except Exception:
                    conn.terminate()

    async def write(self, records: Sequence[Record]) -> None:
        if records:
            await self._guarded(lambda conn: self._write(conn, records))

    async def fetch(self, sql: str, *params: Any) -> list[dict[str, Any]]:
        async def run(conn: asyncpg.Connection) -> list[dict[str, Any]]:
            return [dict(r) for r in await conn.fetch(numbered(sql), *params)]

        return await self._guarded(run)

    # --- internals ------------------------------------------------------------------------

    async def _guarded(self, op: Callable[[asyncpg.Connection], Awaitable[T]]) -> T:
        async with self._lock:
            conn = await self._ensure()
            try:
                async with asyncio.timeout(self.timeout_s):
                    return await op(conn)
            except Exception as exc:
                if not _unavailable(exc):
                    raise
                self._conn = None
                conn.terminate()
                raise StoreUnavailable(f"postgresql failed: {type(exc).__name__}: {exc}") from exc

    @staticmethod
    async def _write(conn: asyncpg.Connection, records: Sequence[Record]) -> None:
        async with conn.transaction():
            for table, rows in runs(records):
                await conn.executemany(
                    numbered(upsert_sql(table)), [_params(table, r) for r in rows]
                )

    async def _ensure(self) -> asyncpg.Connection:
        if self._conn is not None and not self._conn.is_closed():
            return self._conn
        try:
            conn = await asyncpg.connect(self.dsn, timeout=self.timeout_s)
        except Exception as exc:
            if not _unavailable(exc):
                raise
            raise StoreUnavailable(f"cannot connect to postgresql: {exc}") from exc
        try:
            async with asyncio.timeout(self.timeout_s):
                await _migrate(conn)
        except Exception as exc:
            conn.terminate()
            if not _unavailable(exc):
                raise
            raise StoreUnavailable(f"cannot migrate postgresql: {exc}") from exc
        self._conn = conn
        return conn


async def _migrate(conn: asyncpg.Connection) -> None:
    """Apply every migration newer than the recorded version, each in its own transaction,
    under an advisory lock so two processes starting together do not race."""
    for migration in MIGRATIONS:
        async with conn.transaction():
            await conn.execute("SELECT pg_advisory_xact_lock($1)", _MIGRATION_LOCK)
            await conn.execute(SCHEMA_VERSION_DDL)
            done = await conn.fetchval(
                "SELECT 1 FROM schema_version WHERE version = $1", migration.version
            )
            if done:
                continue
            for statement in migration.statements("postgresql"):
                await conn.execute(statement)
            await conn.execute(
                "INSERT INTO schema_version (version, description, applied_ts_ns) "
                "VALUES ($1, $2, $3)",
                migration.version,
                migration.description,
                time.time_ns(),
            )
