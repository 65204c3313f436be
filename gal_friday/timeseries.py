"""Time series for dashboards: equity, drawdowns, predictions, features, book top, feed health.

``TimeSeriesWriter`` is one more bus subscriber. It turns events into InfluxDB line-protocol
points and writes them in batches through ``influxdb-client``'s v2 write API (InfluxDB itself,
or anything speaking ``/api/v2/write`` such as VictoriaMetrics).

It never touches the trading path:

* it subscribes with ``Policy.CONFLATE``, so ``bus.publish`` never waits for it; a slow writer
  sees the newest event per (type, pair) instead of a backlog;
* its handler only formats a few lines and appends them to a bounded buffer;
* a separate task writes the buffer every ``flush_interval_s`` (or as soon as ``batch_size``
  points wait).

Time series are not audit records (the relational store is), so loss is acceptable and
counted rather than prevented: a point that finds the buffer full is dropped, and a batch the
server does not take (server away, refused, timed out) is dropped too. While the server is
away the writer backs off (doubling up to ``MAX_BACKOFF_S``) instead of hammering it.

Why ``InfluxDBClientAsync`` rather than the sync client in a thread: its writes are aiohttp
requests on the engine's own event loop, so no thread, no cross-thread hand-off of the buffer
and no lock are needed, and ``stop()`` can cancel a write in flight. The client is created in
``start()`` because it must be built inside a running loop.

The token comes from the environment variable named by ``token_env`` (it may be empty for a
server without authentication) and is never logged, shown in ``repr`` or in error messages.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import os
from collections import deque
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from influxdb_client.client.influxdb_client_async import InfluxDBClientAsync
from influxdb_client.client.write_api_async import WriteApiAsync

from gal_friday.bus import EventBus, Policy, Subscription
from gal_friday.config import Settings
from gal_friday.domain import PortfolioSnapshot
from gal_friday.events import (
    BookEvent,
    ComponentState,
    Event,
    FeatureEvent,
    FeedStatsEvent,
    PortfolioEvent,
    PredictionEvent,
    TradingStateChangedEvent,
    now_ns,
)

log = logging.getLogger(__name__)

# Features worth a chart, by name prefix (names carry their parameters, e.g. ``rsi_14``).
DEFAULT_FEATURE_PREFIXES: tuple[str, ...] = (
    "rsi_",
    "macd_hist_",
    "roc_",
    "atr_",
    "volatility_",
    "book_spread_pct",
    "book_imbalance_",
    "volume_delta_ratio",
)
BOOK_INTERVAL_S = 0.25  # at most four book-top points per second and pair
MAX_BACKOFF_S = 30.0
WRITE_TIMEOUT_S = 5.0

Field = tuple[str, float]
Tags = tuple[tuple[str, str], ...]


@dataclass(frozen=True, slots=True)
class WriterStats:
    """Points written, dropped (buffer full or server away) and failed write requests."""

    written: int
    dropped: int
    errors: int
    buffered: int


# --- line protocol ---------------------------------------------------------------------------


def _escape(text: str, specials: str) -> str:
    text = text.replace("\\", "\\\\")
    for char in specials:
        text = text.replace(char, "\\" + char)
    return text


def _escape_tag(text: str) -> str:
    return _escape(text, ",= ")


def line(measurement: str, tags: Tags, fields: Iterable[Field], ts_ns: int) -> str | None:
    """One line-protocol point, or None when no field has a finite value (NaN is not
    representable, and a warming-up indicator is NaN)."""
    body = ",".join(f"{_escape_tag(k)}={float(v)!r}" for k, v in fields if math.isfinite(v))
    if not body:
        return None
    tag_text = "".join(f",{_escape_tag(k)}={_escape_tag(v)}" for k, v in tags if v)
    return f"{_escape(measurement, ', ')}{tag_text} {body} {ts_ns}"


def _f(value: Decimal | float | int) -> float:
    return float(value)


# --- event -> points -------------------------------------------------------------------------


def portfolio_points(snap: PortfolioSnapshot, base: Tags, ts_ns: int) -> list[str | None]:
    """Equity, cash, drawdowns (in %) and exposure; one ``position`` point per holding."""
    equity = snap.equity
    exposure = snap.exposure
    exposure_pct = exposure / equity * 100 if equity > 0 else Decimal(0)
    fields = [
        ("equity", _f(equity)),
        ("cash", _f(snap.cash)),
        ("free_cash", _f(snap.free_cash)),
        ("exposure", _f(exposure)),
        ("exposure_pct", _f(exposure_pct)),
        ("realised_pnl", _f(snap.realised_pnl)),
        ("fees_paid", _f(snap.fees_paid)),
        ("drawdown_total_pct", _f(snap.total_drawdown * 100)),
        ("drawdown_daily_pct", _f(snap.daily_drawdown * 100)),
        ("drawdown_weekly_pct", _f(snap.weekly_drawdown * 100)),
        ("consecutive_losses", float(snap.consecutive_losses)),
        ("positions", float(sum(1 for p in snap.positions if p.qty))),
    ]
    points = [line("portfolio", base, fields, ts_ns)]
    for pos in snap.positions:
        points.append(
            line(
                "position",
                (*base, ("pair", pos.pair)),
                [
                    ("qty", _f(pos.qty)),
                    ("value", _f(pos.value)),
                    ("unrealised_pnl", _f(pos.unrealised_pnl)),
                    ("mark", _f(pos.mark)),
                ],
                ts_ns,
            )
        )
    return points


def book_point(event: BookEvent, base: Tags) -> str | None:
    bid, ask = event.best_bid(), event.best_ask()
    if bid is None or ask is None:
        return None
    mid = (bid + ask) / 2
    spread = ask - bid
    return line(
        "book",
        (*base, ("pair", event.pair)),
        [
            ("bid", _f(bid)),
            ("ask", _f(ask)),
            ("mid", _f(mid)),
            ("spread", _f(spread)),
            ("spread_bps", _f(spread / mid * 10_000) if mid > 0 else math.nan),
        ],
        event.received_ts_ns,
    )


def feed_points(event: FeedStatsEvent, base: Tags, ts_ns: int) -> list[str | None]:
    points = [
        line(
            "feed",
            base,
            [
                ("frames_per_s", event.frames_per_s),
                ("frames", float(event.frames)),
                ("book_messages", float(event.book_messages)),
                ("checksum_failures", float(event.checksum_failures)),
                ("malformed", float(event.malformed)),
                ("reconnects", float(event.reconnects)),
                ("connected", 1.0 if event.state is ComponentState.CONNECTED else 0.0),
            ],
            ts_ns,
        )
    ]
    for pair, age in event.data_age_s:
        points.append(line("market_data", (*base, ("pair", pair)), [("age_s", age)], ts_ns))
    return points


# --- the writer ------------------------------------------------------------------------------


class TimeSeriesWriter:
    """Bus subscriber writing time series in batches; see the module docstring.

    Lifecycle: ``attach()`` (subscribe; before or after ``bus.start()``), ``await start()``
    (client and flush task), ``await stop()`` (last flush within ``WRITE_TIMEOUT_S``, then
    close). ``stats()`` gives the counters. The writer does not look at
    ``settings.timeseries.enabled``: the engine decides whether to build one.
    """

    NAME = "timeseries"

    def __init__(
        self,
        settings: Settings,
        bus: EventBus,
        *,
        tags: Mapping[str, str] | None = None,
        feature_prefixes: Sequence[str] = DEFAULT_FEATURE_PREFIXES,
        book_interval_s: float = BOOK_INTERVAL_S,
        clock: Callable[[], int] = now_ns,
    ) -> None:
        self.settings = settings.timeseries
        self._bus = bus
        self._token = os.environ.get(self.settings.token_env, "")
        self._base: Tags = tuple(sorted((tags or {}).items()))
        self._prefixes = tuple(feature_prefixes)
        self._book_interval_ns = int(book_interval_s * 1e9)
        self._clock = clock
        self._buffer: deque[str] = deque()
        self._wake = asyncio.Event()
        self._last_book: dict[str, int] = {}
        self._feature_index: dict[tuple[str, ...], tuple[int, ...]] = {}
        self._client: InfluxDBClientAsync | None = None
        self._api: WriteApiAsync | None = None
        self._task: asyncio.Task[None] | None = None
        self._sub: Subscription | None = None
        self._failing = 0  # consecutive failed writes (drives the back-off)
        self.written = 0
        self.dropped = 0
        self.errors = 0

    def __repr__(self) -> str:  # never the token
        s = self.settings
        return f"TimeSeriesWriter(url={s.url!r}, org={s.org!r}, bucket={s.bucket!r})"

    # --- lifecycle -------------------------------------------------------------------------

    def attach(self) -> Subscription:
        """Subscribe (CONFLATE: the publisher never waits for the time series)."""
        if self._sub is None:
            self._sub = self._bus.subscribe(
                (
                    PortfolioEvent,
                    PredictionEvent,
                    FeatureEvent,
                    BookEvent,
                    FeedStatsEvent,
                    TradingStateChangedEvent,
                ),
                self.on_event,
                name=self.NAME,
                policy=Policy.CONFLATE,
            )
        return self._sub

    async def start(self) -> None:
        if self._task is not None:
            return
        s = self.settings
        self._client = InfluxDBClientAsync(
            url=s.url,
            token=self._token,
            org=s.org,  # empty token: no auth header
            timeout=int(WRITE_TIMEOUT_S * 1000),
        )
        self._api = self._client.write_api()
        self._task = asyncio.create_task(self._run(), name="timeseries:flush")

    async def stop(self) -> None:
        """Stop the flush task, write what is buffered (points that fail are dropped)."""
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None
            self._failing = 0
            await self._flush()
        self.dropped += len(self._buffer)
        self._buffer.clear()
        if self._client is not None:
            await self._client.close()  # type: ignore[no-untyped-call]
            self._client = self._api = None

    async def __aenter__(self) -> TimeSeriesWriter:
        self.attach()
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    def stats(self) -> WriterStats:
        return WriterStats(self.written, self.dropped, self.errors, len(self._buffer))

    # --- events -> buffer ------------------------------------------------------------------

    def on_event(self, event: Event) -> None:
        """Format the event's points and buffer them; never waits, never raises on I/O."""
        for point in self.points(event):
            if point is not None:
                self._add(point)

    def points(self, event: Event) -> list[str | None]:
        """The line-protocol points for one event (empty when it is not charted)."""
        base = self._base
        if isinstance(event, BookEvent):
            return self._book(event)
        if isinstance(event, PortfolioEvent):
            return portfolio_points(event.snapshot, base, event.snapshot.ts_ns or self._clock())
        if isinstance(event, PredictionEvent):
            return [
                line(
                    "prediction",
                    (*base, ("pair", event.pair), ("model", event.model_id)),
                    [("prob_up", event.prob_up), ("latency_ms", event.latency_ns / 1e6)],
                    event.ts_ns,
                )
            ]
        if isinstance(event, FeatureEvent):
            return [self._features(event)]
        if isinstance(event, FeedStatsEvent):
            return feed_points(event, base, event.ts_ns)
        if isinstance(event, TradingStateChangedEvent):
            return [
                line(
                    "control",
                    base,
                    [("halted", float(event.halted)), ("reducing", float(event.reducing))],
                    event.ts_ns,
                )
            ]
        return []

    def _book(self, event: BookEvent) -> list[str | None]:
        ts = event.received_ts_ns
        if ts - self._last_book.get(event.pair, -self._book_interval_ns) < self._book_interval_ns:
            return []  # sampling, not loss: the chart needs a few points a second
        self._last_book[event.pair] = ts
        return [book_point(event, self._base)]

    def _features(self, event: FeatureEvent) -> str | None:
        index = self._feature_index.get(event.names)
        if index is None:
            index = tuple(
                i for i, name in enumerate(event.names) if name.startswith(self._prefixes)
            )
            self._feature_index[event.names] = index
        fields = [(event.names[i], event.values[i]) for i in index]
        return line("features", (*self._base, ("pair", event.pair)), fields, event.ts_ns)

    def _add(self, point: str) -> None:
        if len(self._buffer) >= self.settings.queue_size:
            self.dropped += 1
            return
        self._buffer.append(point)
        if len(self._buffer) >= self.settings.batch_size:
            self._wake.set()

    # --- buffer -> server ------------------------------------------------------------------

    async def _run(self) -> None:
        interval = self.settings.flush_interval_s
        while True:
            if self._failing:
                await asyncio.sleep(min(interval * 2**self._failing, MAX_BACKOFF_S))
            else:
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(interval):
                        await self._wake.wait()
            self._wake.clear()
            await self._flush()

    async def _flush(self) -> None:
        """Write everything buffered, one batch at a time; stop at the first failure."""
        size = self.settings.batch_size
        while self._buffer:
            n = min(size, len(self._buffer))
            batch = [self._buffer.popleft() for _ in range(n)]
            if not await self._write(batch):
                return

    async def _write(self, batch: list[str]) -> bool:
        api, s = self._api, self.settings
        try:
            if api is None:
                raise RuntimeError("writer not started")
            # the default precision is nanoseconds, as the points are stamped
            async with asyncio.timeout(WRITE_TIMEOUT_S):
                await api.write(bucket=s.bucket, org=s.org, record=batch)
        except asyncio.CancelledError:
            self.dropped += len(batch)
            raise
        except Exception as exc:
            self._failed(batch, exc)
            return False
        self.written += len(batch)
        if self._failing:
            log.info("time series server reachable again", extra={"url": s.url})
        self._failing = 0
        return True

    def _failed(self, batch: list[str], exc: Exception) -> None:
        self.errors += 1
        self.dropped += len(batch)
        self._failing += 1
        if self._failing == 1:  # once per outage, not once per batch
            log.warning(
                "time series write failed; dropping points until it recovers",
                extra={
                    "url": self.settings.url,
                    "error": self._describe(exc),
                    "dropped": len(batch),
                },
            )

    def _describe(self, exc: Exception) -> str:
        """A one-line cause without the token (or response headers) in it."""
        status: Any = getattr(exc, "status", None)
        text = f"HTTP {status}" if status else (str(exc).splitlines() or [""])[0]
        text = f"{type(exc).__name__}: {text}"
        return text.replace(self._token, "***") if self._token else text
