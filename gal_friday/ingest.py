"""DataIngestor: brings verified Kraken market data onto the event bus.

It runs the public WebSocket feed (books, candles, trades, already standardised into domain
events by the Kraken adapter), fetches each pair's trading rules from REST ``AssetPairs``
(tick size, lot decimals, minimum order) and publishes feed statistics once a second for the
monitor and the status display.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time

from gal_friday.bus import EventBus
from gal_friday.candles import CandleSeries
from gal_friday.config import Settings
from gal_friday.domain import InstrumentSpec
from gal_friday.events import Event, FeedStatsEvent, InstrumentEvent
from gal_friday.kraken.rest import KrakenError, KrakenPublicRest
from gal_friday.kraken.ws import FatalFeedError, KrakenPublicFeed, RawSink, backoff_delay

log = logging.getLogger(__name__)


class DataIngestor:
    """Owns the market-data connection for the configured pairs."""

    def __init__(
        self,
        settings: Settings,
        bus: EventBus,
        *,
        ws_url: str | None = None,
        rest_url: str | None = None,
        raw_sink: RawSink | None = None,
        stats_interval_s: float = 1.0,
    ) -> None:
        self.settings = settings
        self.bus = bus
        self.feed = KrakenPublicFeed(
            settings.kraken,
            settings.pairs,
            self._publish,
            raw_sink=raw_sink,
            url=ws_url or settings.kraken.ws_public_url,
        )
        self.rest = KrakenPublicRest(
            rest_url or settings.kraken.rest_url, settings.kraken.request_timeout_s
        )
        self.instruments: dict[str, InstrumentSpec] = {}
        self.published = 0
        self._stats_interval_s = stats_interval_s

    async def _publish(self, event: Event) -> None:
        self.published += 1
        await self.bus.publish(event)

    async def run(self) -> None:
        """Stream until cancelled; raises FatalFeedError for problems a retry cannot fix."""
        tasks = [
            asyncio.create_task(self.feed.run(), name="ingest:feed"),
            asyncio.create_task(self._load_instruments(), name="ingest:instruments"),
            asyncio.create_task(self._publish_stats(), name="ingest:stats"),
        ]
        try:
            done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_EXCEPTION)
            for task in done:
                if not task.cancelled() and task.exception() is not None:
                    raise task.exception()  # type: ignore[misc]
            await asyncio.gather(*tasks)
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            await self.rest.close()

    async def _load_instruments(self) -> None:
        """AssetPairs once at start, retried with backoff while Kraken is unreachable."""
        rng = random.Random()
        attempt = 0
        while True:
            try:
                specs = await self.rest.asset_pairs(self.settings.pairs)
                break
            except KrakenError as exc:
                if not exc.retryable:
                    raise FatalFeedError(f"Kraken AssetPairs: {exc}") from None
                k = self.settings.kraken
                delay = backoff_delay(
                    attempt, k.reconnect_initial_s, k.reconnect_max_s, k.reconnect_jitter, rng
                )
                log.warning(
                    "AssetPairs unavailable, retrying",
                    extra={"error": str(exc), "retry_in_s": round(delay, 3)},
                )
                attempt += 1
                await asyncio.sleep(delay)
        for pair, spec in specs.items():
            self.instruments[pair] = spec
            log.info(
                "instrument",
                extra={
                    "pair": pair,
                    "tick": format(spec.price_increment, "f"),
                    "lot_decimals": spec.qty_precision,
                    "ordermin": format(spec.qty_min, "f"),
                    "costmin": format(spec.cost_min, "f"),
                },
            )
            await self._publish(InstrumentEvent(pair, spec))

    async def _publish_stats(self) -> None:
        last_frames, last_t = 0, time.monotonic()
        while True:
            await asyncio.sleep(self._stats_interval_s)
            now = time.monotonic()
            stats = self.feed.decoder.stats
            rate = (stats.frames - last_frames) / max(now - last_t, 1e-9)
            last_frames, last_t = stats.frames, now
            await self._publish(
                FeedStatsEvent(
                    state=self.feed.state,
                    frames=stats.frames,
                    frames_per_s=rate,
                    book_messages=stats.book_messages,
                    checksum_failures=stats.checksum_failures,
                    malformed=stats.malformed,
                    reconnects=self.feed.reconnects,
                    last_disconnect_reason=self.feed.last_disconnect_reason,
                    data_age_s=self.data_ages(now),
                )
            )

    async def recent_candles(self, pair: str) -> CandleSeries:
        """Closed 1-min candles from REST, to warm indicators up before live data."""
        return await self.rest.recent_candles(pair, self.settings.kraken.ohlc_interval_min)

    def data_ages(self, now: float) -> tuple[tuple[str, float], ...]:
        """Seconds since each pair's newest market-data message (any channel)."""
        newest: dict[str, float] = {}
        for (_, pair), seen in self.feed.decoder.last_seen.items():
            newest[pair] = max(newest.get(pair, 0.0), seen)
        return tuple((p, round(now - newest[p], 3)) for p in self.settings.pairs if p in newest)
