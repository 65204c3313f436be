"""AuditWriter: the bus subscriber that puts the audit trail in the store, never losing a record
and never making the trading path wait on the database.

Flow: the bus hands each event to :meth:`AuditWriter.on_event`, which only turns it into rows
(in memory, :class:`~gal_friday.store.ledger.AuditLedger`) and appends them to a bounded
queue. A writer task takes batches off the queue and upserts each batch in one transaction.

Nothing is dropped:

* queue full -> the rows go to the spill file instead of waiting or being discarded;
* database down (:class:`StoreUnavailable`) -> the batch and everything queued after it go to
  the spill file (JSON lines, fsync'd per batch), and every ``settings.store.retry_s`` the
  writer replays the file, oldest record first (every record carries a sequence number), then
  truncates it; new records keep going to the file until it is empty, so order is kept;
* a process crash -> what is in the spill file is replayed at the next start.

Replays are safe to repeat: every row is an upsert keyed by its natural id, so rows that did
reach the database before a failure are not inserted twice. A record the database refuses
for what it is (not because it is down) is written to ``<spill>.rejected`` and logged, so one
bad row cannot block the trail behind it.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import time
from collections import deque
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Any

from gal_friday.bus import EventBus, Policy, Subscription
from gal_friday.config import Settings
from gal_friday.events import Event, HaltEvent
from gal_friday.execution.venue import OrderRequest
from gal_friday.folders import make_folder
from gal_friday.logs import REDACTED
from gal_friday.store.base import (
    Record,
    Store,
    StoreCorrupt,
    StoreUnavailable,
    decode_row,
    intent_record,
)
from gal_friday.store.ledger import AUDITED, NS_PER_DAY, AuditLedger, Row
from gal_friday.store.memory import day_figures
from gal_friday.store.schema import TABLES

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class AuditStats:
    """Counters for monitoring: rows committed directly, spilled to the file, replayed from
    it, rejected by the database as invalid; rows waiting in memory and in the file."""

    written: int
    spilled: int
    replayed: int
    rejected: int
    queue_depth: int
    spill_pending: int
    db_available: bool


def _credential_values(settings: Settings) -> list[str]:
    creds = settings.credentials
    return [v.get_secret_value() for v in (creds.api_key, creds.api_secret) if v is not None]


def _json_default(value: Any) -> str:
    if isinstance(value, Decimal):
        return str(value)
    raise TypeError(f"cannot spill {type(value).__name__}")


class SpillFile:
    """Append-only JSON-lines file of records, each line ``{"seq", "kind", "row"}``."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.pending = 0
        self.max_seq = 0
        if path.exists():
            records, _ = self.read()
            self.pending = len(records)
            self.max_seq = max((r.seq for r in records), default=0)

    def append(self, records: Sequence[Record]) -> None:
        """Write and fsync: once this returns, the records survive a crash."""
        if not records:
            return
        make_folder(self.path.parent, "audit spill folder")
        lines = "".join(
            json.dumps(
                {"seq": r.seq, "kind": r.kind, "row": r.row},
                default=_json_default,
                separators=(",", ":"),
            )
            + "\n"
            for r in records
        )
        with self.path.open("a", encoding="utf-8") as fh:
            fh.write(lines)
            fh.flush()
            os.fsync(fh.fileno())
        self.pending += len(records)

    def read(self) -> tuple[list[Record], int]:
        """Every complete record, sorted by sequence, and the byte offset read up to."""
        try:
            data = self.path.read_bytes()
        except FileNotFoundError:
            return [], 0
        end = data.rfind(b"\n") + 1  # a torn last line (crash mid-write) is not a record
        records = []
        for line in data[:end].splitlines():
            if line.strip():
                obj = json.loads(line)
                kind = obj["kind"]
                records.append(Record(kind, decode_row(TABLES[kind], obj["row"]), obj["seq"]))
        records.sort(key=lambda r: r.seq)
        return records, end

    def consume(self, offset: int) -> None:
        """Drop the first ``offset`` bytes (replayed), keeping anything appended since."""
        data = self.path.read_bytes()[offset:]
        tmp = self.path.with_name(self.path.name + ".tmp")
        with tmp.open("wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, self.path)
        self.pending = data.count(b"\n")


class AuditWriter:
    """Records the trading lifecycle from the bus into a :class:`Store`.

    ``writer = AuditWriter(store, settings, bus); writer.attach(); await writer.start()``;
    at shutdown, after the bus has stopped, ``await writer.stop()``.
    """

    def __init__(
        self,
        store: Store,
        settings: Settings,
        bus: EventBus | None = None,
        *,
        equity_interval_s: float = 10.0,
        batch_size: int = 500,
        flush_interval_s: float = 0.2,
        spill_path: Path | None = None,
        clock: Callable[[], float] = time.monotonic,
        secrets: Iterable[str] | None = None,
    ) -> None:
        cfg = settings.store
        self.secrets = tuple(
            s for s in (secrets if secrets is not None else _credential_values(settings)) if s
        )
        self.store = store
        self.bus = bus
        self.capacity = cfg.queue_size
        self.retry_s = cfg.retry_s
        self.batch_size = batch_size
        self.flush_interval_s = flush_interval_s
        self.ledger = AuditLedger(
            settings.strategy, settings.fees, equity_interval_s=equity_interval_s
        )
        self.spill = SpillFile(spill_path or Path(settings.paths.data_dir) / cfg.spill_file)
        self._clock = clock
        self._queue: deque[Record] = deque()
        self._inflight: list[Record] = []
        self._seq = self.spill.max_seq
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._retry_at = 0.0
        self._stopping = False
        self._closed = False
        self.written = self.spilled = self.replayed = self.rejected = 0
        self.db_available = True
        self.damage: str | None = None  # the store's file is damaged: never written again
        self._halt_sent = False

    # --- wiring -----------------------------------------------------------------------------

    def attach(
        self, bus: EventBus | None = None, *, name: str = "audit", maxsize: int = 4096
    ) -> Subscription:
        """Subscribe (BLOCK: the bus never drops an audit event; the handler never waits)."""
        bus = bus or self.bus
        if bus is None:
            raise ValueError("no bus to attach to")
        return bus.subscribe(
            AUDITED, self.on_event, name=name, policy=Policy.BLOCK, maxsize=maxsize
        )

    async def start(self) -> None:
        """Open the store, replay what a previous run spilled, pick up open trades, start the
        writer task. A damaged database raises StoreCorrupt (the run must not start on it);
        one that is away is spilled to until it returns."""
        with contextlib.suppress(StoreUnavailable):  # _replay and _restore report it
            await self.store.connect()
        if self.spill.pending:
            log.warning(
                "audit spill file found; replaying it",
                extra={"records": self.spill.pending, "path": str(self.spill.path)},
            )
            await self._replay()
        await self._restore()
        self._task = asyncio.create_task(self._run(), name="audit-writer")

    async def stop(self, timeout_s: float = 10.0) -> None:
        """Write the day's summary, flush what is queued (or spill it if the database is
        down), and end the writer task. Records arriving later go to the spill file."""
        self._enqueue(self.ledger.day_summary())
        self._stopping = True
        self._wake.set()
        task, self._task = self._task, None
        if task is not None:
            try:
                async with asyncio.timeout(timeout_s):
                    await asyncio.shield(task)
            except TimeoutError:
                task.cancel()
                await asyncio.gather(task, return_exceptions=True)
        self._closed = True
        self._spill_queue()

    # --- the bus side (never waits on the database) ----------------------------------------

    def on_event(self, event: Event) -> None:
        rows = self.ledger.handle(event)
        if rows:
            self._enqueue(rows)

    def _enqueue(self, rows: Sequence[Row]) -> None:
        records = [self._record(kind, row) for kind, row in rows]
        if self._closed or len(self._queue) + len(records) > self.capacity:
            self._spill_records(records)
        else:
            self._queue.extend(records)
        self._wake.set()

    def _record(self, kind: str, row: dict[str, Any]) -> Record:
        if self.secrets:
            row = {k: self._redact(v) if isinstance(v, str) else v for k, v in row.items()}
        return Record(kind, row, self._next_seq())

    def _redact(self, text: str) -> str:
        """A credential that slipped into a reason or error text is not kept (as in logs)."""
        for secret in self.secrets:
            text = text.replace(secret, REDACTED)
        return text

    async def record_order_intent(self, order: OrderRequest, ts_ns: int | None = None) -> None:
        """Make ``order`` durable before it is sent: committed to the store, or, when the
        store is down or behind its spill file, fsync'd to the spill file. Never raises for
        a database outage, so an outage does not stop trading."""
        record = intent_record(order, ts_ns)
        record = Record(record.kind, record.row, self._next_seq())
        if self.spill.pending or not self.db_available or self._closed:
            self._spill_records([record])
            return
        try:
            await self.store.write([record])
            self.written += 1
        except (StoreUnavailable, StoreCorrupt) as exc:
            self._went_down(exc)
            self._spill_records([record])

    def _next_seq(self) -> int:
        self._seq += 1
        return self._seq

    # --- the writer task ----------------------------------------------------------------------

    async def _run(self) -> None:
        while True:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self.flush_interval_s):
                    await self._wake.wait()
            self._wake.clear()
            try:
                await self._cycle()
            except Exception:  # e.g. the spill disk itself failed: keep trying, loudly
                log.exception("audit writer cycle failed; retrying")
                await asyncio.sleep(self.retry_s)
            if self._stopping and self._settled():
                return

    def _settled(self) -> bool:
        """Nothing left that could still go to the store now."""
        return (
            not self._queue
            and not self._inflight
            and not (self.spill.pending and self.db_available)
        )

    async def _cycle(self) -> None:
        if self.damage is not None:
            await self._request_halt()
            self._spill_queue()  # kept in the spill file: nothing is lost
            return
        if self.spill.pending:
            self._spill_queue()
            if self._clock() >= self._retry_at or self._stopping:
                await self._replay()
            if self.spill.pending:
                return
        while self._queue:
            batch = [self._queue.popleft() for _ in range(min(self.batch_size, len(self._queue)))]
            if not await self._commit(batch):
                self._spill_records(batch)
                self._spill_queue()
                return

    async def _commit(self, batch: list[Record], *, replay: bool = False) -> bool:
        """Write one batch; False when the database is down (the caller keeps the batch).

        A batch taken off the queue stays in ``_inflight`` until this returns, so a stop
        that has to cancel the write still spills it."""
        if not replay:
            self._inflight = batch
        try:
            await self.store.write(batch)
        except (StoreUnavailable, StoreCorrupt) as exc:
            self._inflight = []
            self._went_down(exc)
            return False
        except Exception:
            log.exception("audit batch refused; writing its records one by one")
            ok = await self._isolate(batch, replay=replay)
            self._inflight = []
            return ok
        self._inflight = []
        self._count(len(batch), replay)
        if not self.db_available:
            self.db_available = True
            log.info("audit store reachable again")
        return True

    async def _isolate(self, batch: list[Record], *, replay: bool) -> bool:
        for i, record in enumerate(batch):
            try:
                await self.store.write([record])
            except (StoreUnavailable, StoreCorrupt) as exc:
                self._went_down(exc)
                if not replay:
                    self._queue.extendleft(reversed(batch[i + 1 :]))
                    batch[:] = [record]
                return False
            except Exception as exc:
                self._reject(record, exc)
                continue
            self._count(1, replay)
        return True

    async def _replay(self) -> None:
        """Write the spill file to the store in order; truncate it when all went in."""
        records, offset = self.spill.read()
        for start in range(0, len(records), self.batch_size):
            if not await self._commit(records[start : start + self.batch_size], replay=True):
                return
        self.spill.consume(offset)
        if records:
            log.info("audit spill replayed", extra={"records": len(records)})

    async def _restore(self) -> None:
        try:
            trades = await self.store.open_trades()
            orders = await self.store.recent_orders(time.time_ns() - NS_PER_DAY)
            day = await day_figures(self.store, time.time_ns() // NS_PER_DAY)
            positions = await self.store.positions()
        except StoreUnavailable as exc:
            log.warning(
                "audit store unreachable at start; open trades not restored",
                extra={"error": str(exc)},
            )
            self._went_down(exc)
            return
        self.ledger.restore(trades, orders, day, positions)

    # --- spilling and counters ----------------------------------------------------------------

    def _spill_records(self, records: Sequence[Record]) -> None:
        self.spill.append(records)
        self.spilled += len(records)

    def _spill_queue(self) -> None:
        records = self._inflight + list(self._queue)
        self._inflight = []
        self._queue.clear()
        self._spill_records(records)

    def _went_down(self, exc: Exception) -> None:
        self._retry_at = self._clock() + self.retry_s
        if isinstance(exc, StoreCorrupt):
            self._damaged(exc)
        elif self.db_available:
            log.error(
                "audit store unavailable; spilling to file until it returns",
                extra={"error": str(exc), "spill_file": str(self.spill.path)},
            )
        self.db_available = False

    def _damaged(self, exc: StoreCorrupt) -> None:
        """A damaged database is not "away": it is never retried, everything goes to the
        spill file, and the run HALTs with the reason (the writer task asks for it)."""
        if self.damage is None:
            log.error(
                "audit store damaged; requesting a HALT, keeping every record in the spill file",
                extra={"error": str(exc), "spill_file": str(self.spill.path)},
            )
        self.damage = str(exc)
        self.db_available = False
        self._wake.set()

    async def _request_halt(self) -> None:
        if self._halt_sent or self.bus is None:
            return
        self._halt_sent = True
        await self.bus.publish(HaltEvent(str(self.damage), "store"))

    def _reject(self, record: Record, exc: Exception) -> None:
        self.rejected += 1
        path = self.spill.path.with_name(self.spill.path.name + ".rejected")
        with path.open("a", encoding="utf-8") as fh:
            fh.write(
                json.dumps(
                    {"seq": record.seq, "kind": record.kind, "row": record.row, "error": str(exc)},
                    default=_json_default,
                )
                + "\n"
            )
        log.error(
            "audit record refused by the store; kept in the rejected file",
            extra={"kind": record.kind, "error": str(exc), "path": str(path)},
        )

    def _count(self, n: int, replay: bool) -> None:
        if replay:
            self.replayed += n
        else:
            self.written += n

    def stats(self) -> AuditStats:
        return AuditStats(
            self.written,
            self.spilled,
            self.replayed,
            self.rejected,
            len(self._queue),
            self.spill.pending,
            self.db_available,
        )

    async def flush(self, timeout_s: float = 5.0) -> None:
        """Wait until everything queued is in the store (or spilled while it is down)."""
        deadline = self._clock() + timeout_s
        while not self._settled() and self._clock() < deadline:
            self._wake.set()
            await asyncio.sleep(0.005)
