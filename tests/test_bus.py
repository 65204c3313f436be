"""Event bus: routing by type, back-pressure, conflation, isolation, queue depth."""

from __future__ import annotations

import asyncio
import logging
from decimal import Decimal

import pytest

from gal_friday.bus import EventBus, Policy
from gal_friday.events import (
    BookEvent,
    CandleEvent,
    Event,
    HaltEvent,
    MarketDataEvent,
    TradeEvent,
)


def book(pair: str, seq: int) -> BookEvent:
    return BookEvent(pair, ((100, 1),), ((101, 1),), 2, 0, 0, seq, False, "", 0)


def candle(pair: str) -> CandleEvent:
    one = Decimal(1)
    return CandleEvent(pair, 60, 0, one, one, one, one, one, one, 1, True, 0)


def test_events_are_immutable() -> None:
    event = book("XRP/USD", 1)
    with pytest.raises(AttributeError):
        event.sequence = 2  # type: ignore[misc]


async def test_subscribers_get_their_types_and_subtypes_only() -> None:
    bus = EventBus()
    books: list[Event] = []
    market: list[Event] = []
    bus.subscribe(BookEvent, books.append, name="books")
    bus.subscribe(MarketDataEvent, market.append, name="market")
    bus.start()
    await bus.publish(book("XRP/USD", 1))
    await bus.publish(candle("XRP/USD"))
    await bus.publish(HaltEvent("test", "operator"))
    await bus.drain()
    await bus.stop()
    assert [type(e) for e in books] == [BookEvent]
    assert [type(e) for e in market] == [BookEvent, CandleEvent]


async def test_trading_path_subscriber_never_drops_and_publisher_waits() -> None:
    bus = EventBus()
    seen: list[int] = []
    gate = asyncio.Event()

    async def slow(event: BookEvent) -> None:
        await gate.wait()
        seen.append(event.sequence)

    sub = bus.subscribe(BookEvent, slow, name="strategy", policy=Policy.BLOCK, maxsize=2)
    bus.start()
    publisher = asyncio.create_task(_publish_many(bus, 10))
    await asyncio.sleep(0.05)
    assert not publisher.done()  # back-pressure: the queue is full, the publisher waits
    assert sub.stats().depth == 2
    gate.set()
    await publisher
    await bus.drain()
    await bus.stop()
    assert seen == list(range(10))
    assert sub.stats().max_depth == 2


async def _publish_many(bus: EventBus, n: int) -> None:
    for i in range(n):
        await bus.publish(book("XRP/USD", i))


async def test_display_subscriber_conflates_to_latest_per_pair() -> None:
    bus = EventBus()
    seen: list[tuple[str, int]] = []
    sub = bus.subscribe(
        BookEvent,
        lambda e: seen.append((e.pair, e.sequence)),
        name="screen",
        policy=Policy.CONFLATE,
        maxsize=8,
    )
    bus.start()
    for i in range(100):  # no await between publishes: the screen cannot keep up
        await bus.publish(book("XRP/USD", i))
        await bus.publish(book("DOGE/USD", i))
    await bus.drain()
    await bus.stop()
    assert seen == [("XRP/USD", 99), ("DOGE/USD", 99)]
    assert sub.stats().conflated == 198


async def test_a_failing_subscriber_is_isolated(caplog: pytest.LogCaptureFixture) -> None:
    bus = EventBus()
    good: list[int] = []

    def bad(event: TradeEvent) -> None:
        raise RuntimeError("boom")

    failing = bus.subscribe(BookEvent, bad, name="buggy")
    bus.subscribe(BookEvent, lambda e: good.append(e.sequence), name="fine")
    bus.start()
    with caplog.at_level(logging.ERROR):
        for i in range(3):
            await bus.publish(book("XRP/USD", i))
        await bus.drain()
    await bus.stop()
    assert good == [0, 1, 2]
    assert failing.stats().errors == 3
    assert any("subscriber failed" in r.message for r in caplog.records)


async def test_stats_expose_queue_depth_per_subscriber() -> None:
    bus = EventBus()
    bus.subscribe(BookEvent, lambda e: None, name="a", maxsize=16)
    bus.subscribe(CandleEvent, lambda e: None, name="b", policy=Policy.CONFLATE)
    for i in range(5):
        await bus.publish(book("XRP/USD", i))  # not started: events wait in the queue
    depths = {s.name: s.depth for s in bus.stats()}
    assert depths == {"a": 5, "b": 0}
    bus.start()
    await bus.drain()
    await bus.stop()
    assert {s.name: s.delivered for s in bus.stats()} == {"a": 5, "b": 0}


def test_duplicate_subscriber_names_are_refused() -> None:
    bus = EventBus()
    bus.subscribe(BookEvent, lambda e: None, name="x")
    with pytest.raises(ValueError, match="already taken"):
        bus.subscribe(BookEvent, lambda e: None, name="x")


async def test_a_stop_lets_the_journal_finish_while_nobody_else_acts() -> None:
    # at shutdown the session journal must get what was published, but no other module may
    # go on deciding (an approval handled then would send an order nobody manages)
    bus = EventBus()
    acted: list[BookEvent] = []
    journal: list[BookEvent] = []

    async def slow(event: BookEvent) -> None:
        await asyncio.sleep(0.05)
        acted.append(event)

    async def record(event: BookEvent) -> None:
        await asyncio.sleep(0)
        journal.append(event)

    bus.subscribe(BookEvent, slow, name="strategy")
    session = bus.subscribe(BookEvent, record, name="session")
    bus.start()
    for seq in range(20):
        await bus.publish(book("XRP/USD", seq))
    await bus.stop(finish=session, timeout_s=2)
    assert [e.sequence for e in journal] == list(range(20))
    assert len(acted) <= 1
