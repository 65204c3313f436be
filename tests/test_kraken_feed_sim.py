"""The real WebSocket and REST clients against the simulator over loopback sockets:
streaming, reconnect after a dropped connection, resync after a bad checksum, recycling of a
silent socket, hostile frames, and REST trading rules."""

from __future__ import annotations

import asyncio
import contextlib
import random
import time
from collections.abc import AsyncIterator, Callable
from decimal import Decimal

import pytest

from gal_friday.bus import EventBus
from gal_friday.config import KrakenSettings, Settings, StalenessSettings
from gal_friday.events import (
    BookEvent,
    BookInvalidatedEvent,
    CandleEvent,
    ComponentState,
    Event,
    InstrumentEvent,
    SystemStatusEvent,
    TradeEvent,
)
from gal_friday.ingest import DataIngestor
from gal_friday.kraken.rest import KrakenError, KrakenPublicRest
from gal_friday.kraken.ws import FatalFeedError, KrakenPublicFeed, backoff_delay
from gal_friday.sim import SimExchange, SyntheticMarket

PAIRS = ("XRP/USD", "DOGE/USD")


def fast_settings(**overrides: object) -> KrakenSettings:
    base: dict[str, object] = dict(
        reconnect_initial_s=0.05,
        reconnect_max_s=0.5,
        silence_limit_s=3.0,
        request_timeout_s=5.0,
        staleness_s=StalenessSettings(book=3.0, ohlc=0, trade=0),
    )
    base.update(overrides)
    return KrakenSettings(**base)  # type: ignore[arg-type]


@pytest.fixture
async def sim() -> AsyncIterator[SimExchange]:
    market = SyntheticMarket(7, PAIRS, rate=40.0, history_hours=1)
    async with SimExchange(market) as exchange:
        yield exchange


class Run:
    """A feed running in the background, collecting what it publishes."""

    def __init__(self, feed: KrakenPublicFeed, events: list[Event]) -> None:
        self.feed = feed
        self.events = events

    async def until(self, predicate: Callable[[], bool], within_s: float = 15.0) -> None:
        deadline = asyncio.get_running_loop().time() + within_s
        while not predicate():
            if asyncio.get_running_loop().time() > deadline:
                raise AssertionError(
                    f"timed out; feed state {self.feed.state}, stats {self.feed.decoder.stats}"
                )
            await asyncio.sleep(0.02)

    def of(self, kind: type[Event], pair: str | None = None) -> list[Event]:
        return [
            e
            for e in self.events
            if isinstance(e, kind) and (pair is None or getattr(e, "pair", None) == pair)
        ]

    def books_ready(self) -> bool:
        return all(self.of(BookEvent, p) for p in PAIRS)


@pytest.fixture
async def run(sim: SimExchange) -> AsyncIterator[Callable[..., Run]]:
    tasks: list[asyncio.Task[None]] = []

    def start(settings: KrakenSettings | None = None, pairs: tuple[str, ...] = PAIRS) -> Run:
        events: list[Event] = []

        async def sink(event: Event) -> None:
            events.append(event)

        feed = KrakenPublicFeed(
            settings or fast_settings(), pairs, sink, url=sim.ws_url, rng=random.Random(1)
        )
        tasks.append(asyncio.create_task(feed.run()))
        return Run(feed, events)

    yield start
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)


async def test_streams_verified_books_candles_and_trades_for_both_pairs(
    run: Callable[..., Run],
) -> None:
    r = run()
    await r.until(lambda: r.books_ready() and len(r.of(BookEvent)) > 40)
    await r.until(lambda: all(r.of(TradeEvent, p) and r.of(CandleEvent, p) for p in PAIRS))
    assert r.feed.decoder.stats.checksum_failures == 0
    for pair in PAIRS:
        book = r.of(BookEvent, pair)[-1]
        assert isinstance(book, BookEvent)
        assert len(book.bids) == len(book.asks) == 10
        assert book.best_bid() < book.best_ask()  # type: ignore[operator]
    states = [e.state for e in r.of(SystemStatusEvent)]
    assert states[:2] == [ComponentState.CONNECTING, ComponentState.CONNECTED]


async def test_reconnects_and_rebuilds_after_the_connection_drops(
    sim: SimExchange, run: Callable[..., Run]
) -> None:
    r = run()
    await r.until(r.books_ready)
    assert sim.drop_connections() == 1
    await r.until(lambda: r.feed.connections == 2)
    mark = r.events.index(r.of(BookInvalidatedEvent)[0])
    await r.until(
        lambda: all(
            any(isinstance(e, BookEvent) and e.pair == p and e.is_snapshot for e in r.events[mark:])
            for p in PAIRS
        )
    )
    invalidated = {e.pair for e in r.of(BookInvalidatedEvent)}  # type: ignore[attr-defined]
    assert invalidated == set(PAIRS)
    states = [e.state for e in r.of(SystemStatusEvent)]
    assert ComponentState.DISCONNECTED in states and states[-1] is ComponentState.CONNECTED
    assert r.feed.decoder.stats.checksum_failures == 0


async def test_corrupted_checksum_discards_the_book_and_resubscribes(
    sim: SimExchange, run: Callable[..., Run]
) -> None:
    r = run()
    await r.until(r.books_ready)
    sim.corrupt_next_checksum("XRP/USD")
    await r.until(lambda: bool(r.of(BookInvalidatedEvent, "XRP/USD")))
    bad = r.events.index(r.of(BookInvalidatedEvent, "XRP/USD")[0])
    await r.until(
        lambda: any(isinstance(e, BookEvent) and e.pair == "XRP/USD" for e in r.events[bad:])
    )
    after = [e for e in r.events[bad:] if isinstance(e, BookEvent) and e.pair == "XRP/USD"]
    assert after[0].is_snapshot  # nothing was published from the bad state
    assert r.feed.decoder.stats.checksum_failures == 1
    assert r.feed.connections == 1  # resynced in place, no reconnect
    invalidated = r.of(BookInvalidatedEvent, "XRP/USD")[0]
    assert invalidated.reason == "checksum mismatch"  # type: ignore[attr-defined]


async def test_a_channel_that_goes_silent_for_one_pair_recycles_the_connection(
    sim: SimExchange, run: Callable[..., Run]
) -> None:
    r = run(fast_settings(staleness_s=StalenessSettings(book=1.0, ohlc=0, trade=0)))
    await r.until(r.books_ready)
    sim.stall(30, channel="book", symbol="XRP/USD")  # socket open, everything else flowing
    await r.until(lambda: r.feed.connections == 2)
    assert "no book data for XRP/USD" in r.feed.last_disconnect_reason
    mark = r.events.index(r.of(BookInvalidatedEvent, "XRP/USD")[0])
    await r.until(
        lambda: any(isinstance(e, BookEvent) and e.pair == "XRP/USD" for e in r.events[mark:])
    )


async def test_a_socket_that_goes_completely_silent_is_recycled(
    sim: SimExchange, run: Callable[..., Run]
) -> None:
    r = run(fast_settings(silence_limit_s=1.0))
    await r.until(r.books_ready)
    sim.stall(30)
    await r.until(lambda: r.feed.connections == 2)
    assert "no message at all" in r.feed.last_disconnect_reason


async def test_hostile_frames_are_counted_and_streaming_continues(
    sim: SimExchange, run: Callable[..., Run]
) -> None:
    r = run()
    await r.until(r.books_ready)
    for kind in ("malformed", "wrong_types", "unknown_channel", "not_object", "binary"):
        sim.send_hostile(kind, "DOGE/USD")
    await r.until(lambda: r.feed.decoder.stats.malformed >= 5)
    mark = len(r.events)
    await r.until(
        lambda: all(
            any(isinstance(e, BookEvent) and e.pair == p for e in r.events[mark:]) for p in PAIRS
        )
    )
    assert r.feed.connections == 1


async def test_a_pair_the_exchange_does_not_list_is_a_clear_fatal_error(sim: SimExchange) -> None:
    async def sink(event: Event) -> None:
        pass

    feed = KrakenPublicFeed(fast_settings(), ("XRP/USD", "NOPE/USD"), sink, url=sim.ws_url)
    with pytest.raises(FatalFeedError, match="does not list the pair\\(s\\) NOPE/USD"):
        await asyncio.wait_for(feed.run(), 10)


async def test_unreachable_exchange_backs_off_and_keeps_trying() -> None:
    async def sink(event: Event) -> None:
        pass

    feed = KrakenPublicFeed(fast_settings(), PAIRS, sink, url="ws://127.0.0.1:9/v2")
    task = asyncio.create_task(feed.run())
    deadline = time.monotonic() + 20
    while not (feed.reconnects >= 2 and feed.state is ComponentState.DISCONNECTED):
        assert not task.done() and time.monotonic() < deadline, (feed.reconnects, feed.state)
        await asyncio.sleep(0.02)
    assert not task.done()
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)


def test_backoff_grows_exponentially_with_jitter_and_a_cap() -> None:
    rng = random.Random(3)
    delays = [backoff_delay(n, 0.5, 60.0, 0.5, rng) for n in range(12)]
    for n, delay in enumerate(delays):
        full = min(60.0, 0.5 * 2**n)
        assert full * 0.5 <= delay <= full
    assert delays[-1] <= 60.0
    assert len({round(d, 6) for d in delays}) == len(delays)  # jittered, not lockstep


async def test_rest_asset_pairs_gives_trading_rules_in_domain_names(sim: SimExchange) -> None:
    async with KrakenPublicRest(sim.rest_url) as rest:
        specs = await rest.asset_pairs(PAIRS)
        assert set(specs) == set(PAIRS)  # XDG/USD on the wire is DOGE/USD here
        assert specs["XRP/USD"].price_precision == 5
        assert specs["DOGE/USD"].price_increment == Decimal("0.0000001")
        assert specs["DOGE/USD"].qty_min > 0
        rows, last = await rest.ohlc("XRP/USD", 1)
        assert 0 < len(rows) <= 720 and last > 0
        trades, since = await rest.trades("DOGE/USD", count=100)
        more, _ = await rest.trades("DOGE/USD", since=since, count=100)
        assert trades and all(float(m[2]) >= float(trades[-1][2]) for m in more)
        assert (await rest.server_time()) > 1_700_000_000
        with pytest.raises(KrakenError, match="Unknown asset pair"):
            await rest.asset_pairs(("NOPE/USD",))


async def test_ingestor_puts_market_data_and_trading_rules_on_the_bus(sim: SimExchange) -> None:
    settings = Settings(kraken=fast_settings())
    bus = EventBus()
    seen: list[Event] = []
    bus.subscribe(Event, seen.append, name="recorder")
    ingestor = DataIngestor(
        settings, bus, ws_url=sim.ws_url, rest_url=sim.rest_url, stats_interval_s=0.2
    )
    bus.start()
    task = asyncio.create_task(ingestor.run())
    try:
        for _ in range(300):
            kinds = {type(e).__name__ for e in seen}
            if {"BookEvent", "InstrumentEvent", "FeedStatsEvent"} <= kinds:
                break
            await asyncio.sleep(0.05)
        instruments = {e.pair for e in seen if isinstance(e, InstrumentEvent)}
        assert instruments == set(PAIRS)
        assert any(isinstance(e, BookEvent) for e in seen)
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        await bus.stop()


async def test_a_reconnect_loop_ends_when_a_swallowed_cancel_is_pending() -> None:
    """Python 3.11's wait_for can swallow a cancel whose awaited result arrives at the same
    moment (the review's bot that ignored Ctrl-C and kept trading): the reconnect loops ask
    ``raise_if_cancelling`` at every turn, so the stop still lands."""
    from gal_friday.kraken.ws import raise_if_cancelling

    turns = 0

    async def reconnecting() -> None:
        nonlocal turns
        while True:
            raise_if_cancelling()
            turns += 1
            with contextlib.suppress(asyncio.CancelledError):  # a library swallowed it
                await asyncio.sleep(0.01)

    task = asyncio.create_task(reconnecting())
    await asyncio.sleep(0.03)
    task.cancel()
    done, _ = await asyncio.wait({task}, timeout=2)
    assert task in done and task.cancelled()
