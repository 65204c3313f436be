"""Kraken public WebSocket v2 client: connection, subscriptions, resync, watchdog, reconnect.

The client owns one connection at a time. Each connection: subscribe to ``instrument`` (for
each pair's price and quantity precision, on which the checksum depends), then ``book`` at the
configured depth, ``ohlc`` and ``trade`` for every pair. Frames go to the sans-IO
``PublicStreamDecoder``; the domain events it returns go to the sink.

Failure handling:
* a book whose checksum fails is discarded and re-subscribed for a fresh snapshot;
* a connection that stays open while data stops (no frame at all for ``silence_limit_s``, or a
  channel silent for one pair beyond its staleness limit) is recycled;
* every disconnect is followed by exponential backoff with jitter, then a full resubscribe:
  after any failure, the first after a healthy session included (that one waits
  ``reconnect_initial_s``), doubling to ``reconnect_max_s``; only a connection that delivered
  live books again resets it, so an outage costs a handful of connection attempts, not one
  every few milliseconds;
* data age counts from the last message received per channel and pair, whatever the
  reconnects do, so the stale-data HALT fires at its limit during an outage.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import random
import time
from collections.abc import Awaitable, Callable
from typing import Any

import msgspec
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidURI

from gal_friday.config import KrakenSettings
from gal_friday.events import ComponentState, Event, SystemStatusEvent
from gal_friday.kraken.public import BOOK, INSTRUMENT, OHLC, TRADE, PublicStreamDecoder

log = logging.getLogger(__name__)

COMPONENT = "kraken.ws.public"
EventSink = Callable[[Event], Awaitable[None]]
RawSink = Callable[[int, str], None]
_encode = msgspec.json.encode


class Recycle(Exception):
    """The connection is open but no longer trustworthy; drop it and reconnect."""


class FatalFeedError(Exception):
    """A problem reconnecting cannot fix (e.g. a configured pair Kraken does not list)."""


def backoff_delay(
    attempt: int, initial: float, maximum: float, jitter: float, rng: random.Random
) -> float:
    """Exponential backoff capped at ``maximum``, shortened by up to ``jitter`` of itself so
    many clients do not reconnect in lockstep."""
    base: float = min(maximum, initial * 2.0 ** min(attempt, 30))
    return base * (1.0 - jitter * rng.random())


class KrakenPublicFeed:
    """Keeps a verified public market-data stream alive for the configured pairs."""

    def __init__(
        self,
        settings: KrakenSettings,
        pairs: tuple[str, ...],
        sink: EventSink,
        *,
        raw_sink: RawSink | None = None,
        url: str | None = None,
        rng: random.Random | None = None,
    ) -> None:
        self.settings = settings
        self.pairs = pairs
        self.url = url or settings.ws_public_url
        self.decoder = PublicStreamDecoder(
            pairs, settings.book_depth, interval_min=settings.ohlc_interval_min
        )
        self._sink = sink
        self._raw_sink = raw_sink
        self._rng = rng or random.Random()
        self._req_ids = itertools.count(1)
        self.state = ComponentState.STARTING
        self.connections = 0
        self.reconnects = 0
        self.last_disconnect_reason = ""
        self._ready = False  # this connection has delivered a verified book for every pair
        self._limits = {
            BOOK: settings.staleness_s.book,
            OHLC: settings.staleness_s.ohlc,
            TRADE: settings.staleness_s.trade,
        }

    async def run(self) -> None:
        """Connect, stream and reconnect until cancelled."""
        attempt = 0
        while True:
            raise_if_cancelling()
            self._ready = False  # healthy means this attempt got live books, not the last one
            try:
                await self._session()
            except FatalFeedError:
                raise
            except (OSError, TimeoutError, ConnectionClosed, InvalidHandshake, Recycle) as exc:
                reason = _describe(exc)
            except InvalidURI as exc:
                raise FatalFeedError(f"bad Kraken WebSocket URL {self.url!r}: {exc}") from None
            else:
                reason = "connection closed by peer"
            healthy = self._ready  # only a healthy connection resets the backoff
            self.last_disconnect_reason = reason
            await self._set_state(ComponentState.DISCONNECTED, reason)
            for event in self.decoder.reset_connection(reason):
                await self._sink(event)
            attempt = 0 if healthy else attempt + 1
            delay = backoff_delay(
                attempt,
                self.settings.reconnect_initial_s,
                self.settings.reconnect_max_s,
                self.settings.reconnect_jitter,
                self._rng,
            )
            log.warning(
                "kraken public feed disconnected",
                extra={"reason": reason, "retry_in_s": round(delay, 3)},
            )
            self.reconnects += 1
            await asyncio.sleep(delay)

    async def _session(self) -> None:
        """One connection's life; ``self._ready`` tells whether it got as far as live books."""
        await self._set_state(ComponentState.CONNECTING, self.url)
        async with connect(
            self.url,
            open_timeout=self.settings.connect_timeout_s,
            max_size=2**25,
            compression=None,
            ping_interval=20,
            ping_timeout=20,
            close_timeout=2,
        ) as ws:
            self.connections += 1
            self._ready = False
            self.decoder.stats.last_frame_mono = time.monotonic()
            await self._subscribe_instruments(ws)
            await self._subscribe_market(ws)
            reader = asyncio.ensure_future(self._read(ws))
            watchdog = asyncio.ensure_future(self._watch())
            try:
                done, _ = await asyncio.wait(
                    {reader, watchdog}, return_when=asyncio.FIRST_COMPLETED
                )
            finally:
                for task in (reader, watchdog):
                    task.cancel()
                await asyncio.gather(reader, watchdog, return_exceptions=True)
            for task in done:
                exc = task.exception()
                if exc is not None:
                    raise exc

    async def _send(self, ws: ClientConnection, method: str, params: dict[str, Any]) -> None:
        await ws.send(
            _encode({"method": method, "params": params, "req_id": next(self._req_ids)}).decode()
        )

    async def _subscribe_instruments(self, ws: ClientConnection) -> None:
        """Ask for the instrument list and wait until every configured pair is known."""
        await self._send(ws, "subscribe", {"channel": INSTRUMENT, "snapshot": True})
        deadline = time.monotonic() + self.settings.request_timeout_s
        while self.decoder.missing_instruments():
            if self.decoder.instruments_received:
                missing = ", ".join(self.decoder.missing_instruments())
                raise FatalFeedError(f"the exchange does not list the pair(s) {missing}")
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise Recycle("no instrument list from the exchange in time")
            async with asyncio.timeout(remaining):
                raw = await ws.recv()
            await self._handle(raw)

    async def _subscribe_market(self, ws: ClientConnection) -> None:
        pairs = list(self.pairs)
        await self._send(
            ws,
            "subscribe",
            {"channel": BOOK, "symbol": pairs, "depth": self.settings.book_depth, "snapshot": True},
        )
        await self._send(
            ws,
            "subscribe",
            {
                "channel": OHLC,
                "symbol": pairs,
                "interval": self.settings.ohlc_interval_min,
                "snapshot": True,
            },
        )
        await self._send(ws, "subscribe", {"channel": TRADE, "symbol": pairs, "snapshot": False})
        for pair in pairs:
            for channel in (BOOK, OHLC, TRADE):
                self.decoder.mark_subscribed(channel, pair)
        await self._set_state(ComponentState.CONNECTED, self.url)

    async def _read(self, ws: ClientConnection) -> None:
        async for raw in ws:
            await self._handle(raw)
            if self.decoder.resync:
                await self._resubscribe_books(ws)
            if not self._ready and self.decoder.book_ready():
                self._ready = True

    async def _handle(self, raw: str | bytes) -> None:
        if self._raw_sink is not None:
            text = raw if isinstance(raw, str) else raw.decode("utf-8", "replace")
            self._raw_sink(time.time_ns(), text)
        for event in self.decoder.feed(raw):
            await self._sink(event)

    async def _resubscribe_books(self, ws: ClientConnection) -> None:
        """Unsubscribe and subscribe again: Kraken then sends a fresh snapshot."""
        pairs = sorted(self.decoder.resync)
        self.decoder.resync.clear()
        depth = self.settings.book_depth
        await self._send(ws, "unsubscribe", {"channel": BOOK, "symbol": pairs, "depth": depth})
        await self._send(
            ws, "subscribe", {"channel": BOOK, "symbol": pairs, "depth": depth, "snapshot": True}
        )
        for pair in pairs:
            self.decoder.mark_subscribed(BOOK, pair)

    async def _watch(self) -> None:
        """Recycle a connection that is open but silent (the known failure of other bots)."""
        silence = self.settings.silence_limit_s
        tick = min(1.0, silence / 4)
        while True:
            await asyncio.sleep(tick)
            now = time.monotonic()
            quiet = now - self.decoder.stats.last_frame_mono
            if quiet > silence:
                raise Recycle(f"no message at all for {quiet:.1f}s (limit {silence:g}s)")
            stale = self.decoder.stale(now, self._limits)
            if stale:
                raise Recycle(stale)

    async def _set_state(self, state: ComponentState, detail: str) -> None:
        if state is not self.state:
            self.state = state
            await self._sink(SystemStatusEvent(COMPONENT, state, detail))


def raise_if_cancelling() -> None:
    """A reconnect loop stops when its task is being cancelled, even if a library swallowed
    the CancelledError on its way up (Python 3.11's ``wait_for`` can, when the awaited result
    arrives as the cancel does): a stop must never be lost to a reconnect."""
    task = asyncio.current_task()
    if task is not None and task.cancelling():
        raise asyncio.CancelledError


def _describe(exc: BaseException) -> str:
    if isinstance(exc, Recycle):
        return f"recycled: {exc}"
    if isinstance(exc, ConnectionClosed):
        return f"connection closed ({exc.rcvd.code if exc.rcvd else 'no close frame'})"
    if isinstance(exc, TimeoutError):
        return "timed out"
    return f"{type(exc).__name__}: {exc}"
