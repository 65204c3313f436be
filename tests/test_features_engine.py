"""FeatureEngine on the bus: one FeatureEvent per new closed candle, never a double count."""

from __future__ import annotations

import math
from collections.abc import AsyncIterator
from decimal import Decimal

import numpy as np
import pytest

from gal_friday.bus import EventBus, Policy
from gal_friday.config import FeatureSettings
from gal_friday.events import (
    BookEvent,
    BookInvalidatedEvent,
    CandleEvent,
    Event,
    FeatureEvent,
    Side,
    TradeEvent,
)
from gal_friday.features import (
    FeatureEngine,
    batch_candle_features,
    candle_feature_names,
    feature_names,
)
from tests.test_features_agreement import candle_event, random_walk

NS = 1_000_000_000
PAIR = "XRP/USD"
SETTINGS = FeatureSettings()


def candle(
    minute: int,
    close: str,
    *,
    closed: bool = True,
    volume: str = "100",
    late_s: float = 1.0,
    pair: str = PAIR,
) -> CandleEvent:
    open_ns = minute * 60 * NS
    price = Decimal(close)
    return CandleEvent(
        pair,
        60,
        open_ns,
        price,
        price + Decimal("0.001"),
        price - Decimal("0.001"),
        price,
        Decimal(volume),
        price,
        5,
        closed,
        open_ns + int((60 + late_s) * NS),
    )


def book(*, snapshot: bool = False) -> BookEvent:
    return BookEvent(PAIR, ((50000, 1000),), ((50010, 3000),), 5, 2, 0, 1, snapshot, "", 0)


class Collected:
    def __init__(self) -> None:
        self.events: list[FeatureEvent] = []

    def __call__(self, event: FeatureEvent) -> None:
        self.events.append(event)


@pytest.fixture
async def running() -> AsyncIterator[tuple[EventBus, FeatureEngine, Collected]]:
    bus = EventBus()
    engine = FeatureEngine(SETTINGS, bus)
    sub = engine.attach()
    assert sub.policy is Policy.BLOCK
    out = Collected()
    bus.subscribe(FeatureEvent, out, name="test-sink")
    bus.start()
    yield bus, engine, out
    await bus.stop()


async def feed(bus: EventBus, *events: Event) -> None:
    for event in events:
        await bus.publish(event)
    for _ in range(2):  # features, then the sink that receives what features published
        await bus.drain()


async def test_one_feature_event_per_closed_candle_in_the_engines_order(
    running: tuple[EventBus, FeatureEngine, Collected],
) -> None:
    bus, engine, out = running
    await feed(
        bus,
        candle(1, "0.5", closed=False),
        candle(1, "0.51", closed=False),
        candle(1, "0.52"),
        candle(2, "0.53", closed=False),
    )
    assert len(out.events) == 1
    event = out.events[0]
    assert (event.pair, event.ts_ns) == (PAIR, 60 * NS)  # the candle's open time
    assert event.names == feature_names(SETTINGS) == engine.names
    assert len(event.values) == len(event.names)
    assert math.isnan(event.values[0])  # warm-up: RSI needs 14 changes


async def test_repeated_and_older_closed_candles_are_ignored(
    running: tuple[EventBus, FeatureEngine, Collected],
) -> None:
    bus, engine, out = running
    await feed(
        bus,
        candle(1, "0.5"),
        candle(2, "0.6"),
        candle(1, "0.5"),
        candle(2, "0.6"),
        candle(3, "0.7"),
    )
    assert [e.ts_ns // (60 * NS) for e in out.events] == [1, 2, 3]
    roc_1 = feature_names(SETTINGS).index("roc_1_pct")
    assert out.events[2].values[roc_1] == pytest.approx(100 * (0.7 / 0.6 - 1))
    assert engine.state(PAIR).repeats == 2


async def test_candles_without_volume_are_not_rows(
    running: tuple[EventBus, FeatureEngine, Collected],
) -> None:
    bus, _, out = running
    await feed(bus, candle(1, "0.5"), candle(2, "0.9", volume="0"), candle(3, "0.6"))
    roc_1 = feature_names(SETTINGS).index("roc_1_pct")
    assert [e.ts_ns // (60 * NS) for e in out.events] == [1, 3]
    assert out.events[1].values[roc_1] == pytest.approx(20.0)  # 0.5 -> 0.6, minute 2 unseen


async def test_old_candles_from_a_snapshot_warm_up_but_publish_nothing(
    running: tuple[EventBus, FeatureEngine, Collected],
) -> None:
    bus, engine, out = running
    await feed(
        bus, *(candle(m, "0.5", late_s=3600 - 60 * m) for m in range(1, 40)), candle(40, "0.5")
    )
    assert [e.ts_ns // (60 * NS) for e in out.events] == [40]
    assert engine.withheld_stale == 39
    candle_values = out.events[0].values[: len(candle_feature_names(SETTINGS))]
    assert not any(math.isnan(v) for v in candle_values)  # history filled the warm-up


async def test_book_features_come_from_the_latest_book_and_vanish_when_it_is_invalid(
    running: tuple[EventBus, FeatureEngine, Collected],
) -> None:
    bus, _, out = running
    spread = feature_names(SETTINGS).index("book_spread")
    imbalance = feature_names(SETTINGS).index("book_imbalance_5")
    await feed(bus, book(snapshot=True), candle(1, "0.5"))
    assert out.events[-1].values[spread] == pytest.approx(0.0001)
    assert out.events[-1].values[imbalance] == pytest.approx((10 - 30) / 40)
    await feed(bus, BookInvalidatedEvent(PAIR, "checksum mismatch"), candle(2, "0.5"))
    assert math.isnan(out.events[-1].values[spread])
    await feed(bus, book(), candle(3, "0.5"))  # an update is not enough after invalidation
    assert math.isnan(out.events[-1].values[spread])
    await feed(bus, book(snapshot=True), candle(4, "0.5"))
    assert out.events[-1].values[spread] == pytest.approx(0.0001)


async def test_volume_delta_comes_from_the_trades_of_the_candles_interval(
    running: tuple[EventBus, FeatureEngine, Collected],
) -> None:
    bus, _, out = running
    delta = feature_names(SETTINGS).index("volume_delta")

    def trade(trade_id: int, side: Side, qty: str, at_s: float) -> TradeEvent:
        return TradeEvent(
            PAIR, trade_id, side, Decimal("0.5"), Decimal(qty), "limit", int(at_s * NS), 0
        )

    await feed(
        bus,
        trade(1, Side.BUY, "1", 59),
        trade(2, Side.BUY, "8", 61),
        trade(3, Side.SELL, "3", 100),
        trade(4, Side.BUY, "50", 121),
        candle(1, "0.5"),
    )
    assert out.events[-1].values[delta] == 5.0
    await feed(bus, trade(4, Side.BUY, "50", 121), candle(2, "0.5"))  # a repeat: once only
    assert out.events[-1].values[delta] == 50.0


async def test_pairs_are_independent(
    running: tuple[EventBus, FeatureEngine, Collected],
) -> None:
    bus, _, out = running
    await feed(
        bus,
        candle(1, "0.5"),
        candle(1, "0.1", pair="DOGE/USD"),
        candle(2, "0.2", pair="DOGE/USD"),
        candle(2, "0.55"),
    )
    roc_1 = feature_names(SETTINGS).index("roc_1_pct")
    by_pair = {(e.pair, e.ts_ns // (60 * NS)): e.values[roc_1] for e in out.events}
    assert by_pair[("DOGE/USD", 2)] == pytest.approx(100.0)
    assert by_pair[(PAIR, 2)] == pytest.approx(10.0)


def test_priming_on_too_little_history_to_converge_warns(caplog: pytest.LogCaptureFixture) -> None:
    # Kraken's REST OHLC gives up to 720 candles: enough for the 210 rows the default
    # indicators need to converge; fewer (a young pair, a gap) leave them depending on where
    # the history began, and the log says by how many rows
    series = random_walk(500, 0.5, seed=2, decimals=6)
    engine = FeatureEngine(SETTINGS, EventBus())
    with caplog.at_level("WARNING", logger="gal_friday.features.engine"):
        engine.prime(PAIR, series.slice(0, 100))
        engine.prime("DOGE/USD", series.slice(0, 210))
    (record,) = caplog.records
    assert "too little history to converge" in record.getMessage()
    assert (record.pair, record.rows, record.needed, record.missing) == (PAIR, 100, 210, 110)  # type: ignore[attr-defined]


def test_priming_from_history_continues_exactly_where_the_batch_table_would() -> None:
    series = random_walk(500, 0.5, seed=2, decimals=6)
    engine = FeatureEngine(SETTINGS, EventBus())
    assert engine.prime(PAIR, series.slice(0, 499)) == 499
    assert engine.published == 0
    assert engine.on_candle(candle_event(series, 498)) is None  # already in the history
    event = engine.on_candle(candle_event(series, 499))
    assert event is not None
    expected = batch_candle_features(series, SETTINGS).values[-1]
    got = np.array(event.values[: len(expected)])
    np.testing.assert_allclose(got, expected, rtol=1e-9, atol=1e-12)
