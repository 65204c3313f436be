"""The audit store: signals, risk verdicts, orders, fills, trades, portfolio, halts and daily
summaries, in SQLite (embedded default) or PostgreSQL (production), same schema in both.

``open_store(settings)`` returns a connected, migrated :class:`Store`; the
:class:`~gal_friday.store.audit.AuditWriter` feeds it from the bus without ever making the
trading path wait on the database.
"""

from __future__ import annotations

from pathlib import Path

from gal_friday.config import Settings
from gal_friday.store.base import (
    Record,
    Store,
    StoredHalt,
    StoredOrder,
    StoredPosition,
    StoreUnavailable,
)

__all__ = [
    "Record",
    "Store",
    "StoreUnavailable",
    "StoredHalt",
    "StoredOrder",
    "StoredPosition",
    "make_store",
    "open_store",
]


def for_run(settings: Settings) -> Settings:
    """The settings with the SQLite file and the spill file named after this run's exchange
    and mode (``gal-friday-kraken-live.sqlite3``), so a paper or simulator run never leaves
    orders that a live run's crash recovery would take for its own."""
    cfg = settings.store
    tag = f"-{settings.exchange}-{settings.mode}"
    sqlite, spill = Path(cfg.sqlite_file), Path(cfg.spill_file)
    return settings.model_copy(
        update={
            "store": cfg.model_copy(
                update={
                    "sqlite_file": str(sqlite.with_name(sqlite.stem + tag + sqlite.suffix)),
                    "spill_file": str(spill.with_name(spill.stem + tag + spill.suffix)),
                }
            )
        }
    )


def make_store(settings: Settings) -> Store:
    """The configured backend, not yet connected."""
    cfg = settings.store
    if cfg.backend == "postgresql":
        from gal_friday.store.postgres import PostgresStore

        return PostgresStore(cfg.postgres_dsn)
    from gal_friday.store.sqlite import SqliteStore

    return SqliteStore(Path(settings.paths.data_dir) / cfg.sqlite_file)


async def open_store(settings: Settings) -> Store:
    """The configured backend, connected and migrated.

    Raises :class:`StoreUnavailable` when the database cannot be reached; a caller that must
    run anyway (the audit writer spills until it returns) can use :func:`make_store` and let
    the first write connect.
    """
    store = make_store(settings)
    await store.connect()
    return store
