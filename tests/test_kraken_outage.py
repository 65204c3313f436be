"""Outages detected and paced: the data age counts from the last message received on each
channel and pair whatever the reconnects do, so the stale-data HALT fires at its limit during
an outage; reconnects back off exponentially (with jitter, to the cap) after any failure,
the first after a healthy session included, public and private WebSocket alike. Sans-IO
with a fake clock first, then the real clients against the simulator refusing connections."""

from __future__ import annotations

import asyncio
import base64
import json
import logging
import random
from collections.abc import AsyncIterator, Callable

import aiohttp
import pytest
from pydantic import SecretStr

from gal_friday.bus import EventBus
from gal_friday.config import (
    Credentials,
    KrakenSettings,
    MonitoringSettings,
    Settings,
    StalenessSettings,
)
from gal_friday.events import ComponentState, Event, FeedStatsEvent, HaltEvent
from gal_friday.ingest import DataIngestor
from gal_friday.kraken.auth import NonceSource
from gal_friday.kraken.public import BOOK, OHLC, TRADE, PublicStreamDecoder
from gal_friday.kraken.trading import KrakenTradingVenue
from gal_friday.kraken.ws import KrakenPublicFeed, backoff_delay
from gal_friday.monitoring import HostSample, MonitoringService
from gal_friday.sim import SimExchange, SyntheticMarket
from gal_friday.sim.faults import apply_fault

PAIRS = ("XRP/USD", "DOGE/USD")
NS = 1_000_000_000


class FakeClock:
    """Monotonic seconds for the decoder, epoch ns for monitoring: one time, moved by hand."""

    def __init__(self) -> None:
        self.t = 1000.0

    def mono(self) -> float:
        return self.t

    def ns(self) -> int:
        return int(self.t * NS)


def _instruments() -> str:
    pairs = [
        {
            "symbol": pair,
            "base": pair.partition("/")[0],
            "quote": "USD",
            "status": "online",
            "qty_precision": 8,
            "qty_increment": 1e-08,
            "qty_min": 1,
            "price_precision": 5,
            "price_increment": 1e-05,
            "cost_min": 0.5,
        }
        for pair in PAIRS
    ]
    return json.dumps({"channel": "instrument", "type": "snapshot", "data": {"pairs": pairs}})


def _trade(pair: str, trade_id: int) -> str:
    item = {
        "symbol": pair,
        "side": "buy",
        "price": 0.5,
        "qty": 10,
        "ord_type": "market",
        "trade_id": trade_id,
        "timestamp": "2026-12-03T08:00:00.000000Z",
    }
    return json.dumps({"channel": "trade", "type": "update", "data": [item]})


def _connect(decoder: PublicStreamDecoder) -> None:
    """What a reconnect attempt does to the decoder, at worst (it got as far as subscribing)."""
    decoder.reset_connection("connection refused")
    for pair in PAIRS:
        for channel in (BOOK, OHLC, TRADE):
            decoder.mark_subscribed(channel, pair)


# --- sans-IO, fake clock -----------------------------------------------------------------------


def test_data_age_counts_from_the_last_message_whatever_the_reconnects_do() -> None:
    clock = FakeClock()
    decoder = PublicStreamDecoder(PAIRS, 10, monotonic=clock.mono)
    decoder.feed(_instruments())
    _connect(decoder)
    decoder.feed(_trade("XRP/USD", 1))
    assert decoder.data_age(clock.t, TRADE, "XRP/USD") == 0
    for _ in range(70):  # 35 s of reconnect attempts, one every 0.5 s
        clock.t += 0.5
        _connect(decoder)
    assert decoder.data_age(clock.t, TRADE, "XRP/USD") == 35.0
    assert decoder.data_age(clock.t, TRADE, "DOGE/USD") == 35.0  # asked, never heard from
    # the watchdog still gives the new connection its full limit before recycling it
    limits = {TRADE: 3.0}
    assert decoder.stale(clock.t + 2.9, limits) is None
    reason = decoder.stale(clock.t + 3.1, limits)
    assert reason is not None and "no trade data for XRP/USD in 3.1s" in reason
    decoder.feed(_trade("XRP/USD", 2))
    assert decoder.data_age(clock.t, TRADE, "XRP/USD") == 0


async def test_an_outage_with_reconnects_halts_for_stale_data_at_its_limit() -> None:
    """Two 35 s outages with a 15 s limit used to never HALT; now the first HALTs within one
    check of the limit, whatever the reconnect attempts in between."""
    clock = FakeClock()
    monitoring_settings = MonitoringSettings(market_data_staleness_s=15.0, connection_down_s=600)
    settings = Settings(monitoring=monitoring_settings)
    bus = EventBus()
    ingestor = DataIngestor(settings, bus)
    decoder = ingestor.feed.decoder = PublicStreamDecoder(PAIRS, 10, monotonic=clock.mono)
    monitoring = MonitoringService(settings, bus, clock=clock.ns, host_probe=_idle_host)
    decoder.feed(_instruments())
    _connect(decoder)
    for n, pair in enumerate(PAIRS):
        decoder.feed(_trade(pair, n))
    outage_began = clock.t
    halted_at = None
    while clock.t - outage_began < 35 and halted_at is None:
        clock.t += 0.5  # a reconnect attempt every 0.5 s, a check every second
        _connect(decoder)
        if clock.t % 1 == 0:
            await monitoring.on_event(_feed_stats(ingestor.data_ages(clock.t)))
            await monitoring.check()
            halted_at = clock.t if monitoring.halts else None
    await ingestor.rest.close()
    assert halted_at is not None, "no HALT in a 35 s outage"
    assert 15.0 < halted_at - outage_began <= 16.0
    assert set(monitoring.active) == {"stale:XRP/USD", "stale:DOGE/USD"}


def _idle_host() -> HostSample:
    return HostSample(10.0, 10.0, 50.0)  # the host is never the reason here


def _feed_stats(ages: tuple[tuple[str, float], ...]) -> FeedStatsEvent:
    return FeedStatsEvent(ComponentState.DISCONNECTED, 0, 0.0, 0, 0, 0, 0, "refused", ages)


def test_a_35_second_outage_costs_a_handful_of_attempts_with_the_default_backoff() -> None:
    """With the default settings (0.5 s doubling to 60 s, up to half of it jittered away) the
    attempts in a 35 s outage, at worst (every delay jittered to its shortest)."""
    k = KrakenSettings()

    class Shortest(random.Random):
        def random(self) -> float:
            return 1.0

    attempts, elapsed = 0, 0.0
    while True:
        elapsed += backoff_delay(
            attempts, k.reconnect_initial_s, k.reconnect_max_s, k.reconnect_jitter, Shortest()
        )
        if elapsed > 35:
            break
        attempts += 1
    assert attempts == 7  # was 91 when the first failure after a healthy session reset it


# --- against the simulator: public feed --------------------------------------------------------


@pytest.fixture
async def sim() -> AsyncIterator[SimExchange]:
    market = SyntheticMarket(7, PAIRS, rate=40.0, history_hours=1)
    async with SimExchange(market) as exchange:
        yield exchange


def _fast(**overrides: object) -> KrakenSettings:
    base: dict[str, object] = dict(
        reconnect_initial_s=0.05,
        reconnect_max_s=0.4,
        reconnect_jitter=0.0,
        silence_limit_s=3.0,
        request_timeout_s=5.0,
        staleness_s=StalenessSettings(book=3.0, ohlc=0, trade=0),
    )
    base.update(overrides)
    return KrakenSettings(**base)  # type: ignore[arg-type]


async def _until(cond: Callable[[], bool], within_s: float = 20.0) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + within_s
    while not cond():
        if loop.time() > deadline:
            raise AssertionError("condition not reached in time")
        await asyncio.sleep(0.02)


def _retry_delays(caplog: pytest.LogCaptureFixture, message: str) -> list[float]:
    return [float(r.retry_in_s) for r in caplog.records if r.getMessage() == message]  # type: ignore[attr-defined]


async def test_public_reconnects_back_off_after_a_healthy_session_until_healthy_again(
    sim: SimExchange, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="gal_friday.kraken.ws")
    events: list[Event] = []

    async def sink(event: Event) -> None:
        events.append(event)

    feed = KrakenPublicFeed(_fast(), PAIRS, sink, url=sim.ws_url, rng=random.Random(1))
    task = asyncio.create_task(feed.run())
    try:
        await _until(lambda: feed._ready)
        sim.refuse_connections(120)
        message = "kraken public feed disconnected"
        await _until(lambda: len(_retry_delays(caplog, message)) >= 7)
        delays = _retry_delays(caplog, message)[:7]
        assert delays == [0.05, 0.1, 0.2, 0.4, 0.4, 0.4, 0.4]  # the first after healthy too
        assert sim.stats.connections_refused >= 6
        sim.clear_faults()  # the outage ends: a healthy connection resets the backoff
        await _until(lambda: feed.connections == 2 and feed._ready)
        before = len(_retry_delays(caplog, message))
        sim.drop_connections()
        await _until(lambda: len(_retry_delays(caplog, message)) > before)
        assert _retry_delays(caplog, message)[before] == 0.05
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


async def test_an_outage_longer_than_the_stale_limit_halts_during_it(sim: SimExchange) -> None:
    settings = Settings(
        kraken=_fast(reconnect_max_s=0.2),
        monitoring=MonitoringSettings(
            market_data_staleness_s=1.5, check_interval_s=0.1, connection_down_s=600
        ),
    )
    bus = EventBus()
    halts: list[HaltEvent] = []
    bus.subscribe(HaltEvent, halts.append, name="halts")
    ingestor = DataIngestor(
        settings, bus, ws_url=sim.ws_url, rest_url=sim.rest_url, stats_interval_s=0.1
    )
    monitoring = MonitoringService(settings, bus, host_probe=_idle_host)
    monitoring.attach()
    bus.start()
    await monitoring.start()
    task = asyncio.create_task(ingestor.run())
    try:
        await _until(lambda: ingestor.feed._ready)
        assert halts == []
        sim.refuse_connections(120)  # far longer than the limit; reconnects every 0.2 s
        await _until(lambda: bool(halts))
        assert ingestor.feed.reconnects >= 5  # the attempts did not reset the data age
        assert sim.stats.connections_refused >= 4
        assert halts[0].source == "stale_data" and "no market data for" in halts[0].reason
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        await monitoring.stop()
        await bus.stop()


# --- against the simulator: private WebSocket --------------------------------------------------

SECRET = base64.b64encode(b"fake kraken secret for tests only").decode()


async def test_private_reconnects_back_off_after_a_healthy_session(
    sim: SimExchange, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="gal_friday.kraken.trading")
    sim.private.add_key("sim-key", SECRET)
    settings = _fast(ws_private_url=sim.ws_auth_url, rest_url=sim.rest_url)
    creds = Credentials(api_key=SecretStr("sim-key"), api_secret=SecretStr(SECRET))
    venue = KrakenTradingVenue(settings, creds, pairs=PAIRS, nonce=NonceSource(), dms_timeout_s=0)

    async def on_report(report: Event) -> None:
        pass

    await venue.start(on_report)
    try:
        assert venue.connected
        sim.refuse_connections(120)
        message = "kraken private WebSocket disconnected"
        await _until(lambda: len(_retry_delays(caplog, message)) >= 6)
        assert _retry_delays(caplog, message)[:6] == [0.05, 0.1, 0.2, 0.4, 0.4, 0.4]
        sim.clear_faults()
        await _until(lambda: venue.connected)
        before = len(_retry_delays(caplog, message))
        sim.drop_connections()
        await _until(lambda: len(_retry_delays(caplog, message)) > before)
        assert _retry_delays(caplog, message)[before] == 0.05  # healthy again: reset
    finally:
        await venue.stop()


async def test_the_refuse_fault_is_an_outage_of_every_websocket_until_cleared(
    sim: SimExchange,
) -> None:
    assert apply_fault(sim, "refuse", {"seconds": "60"}) == {"connections": 0}
    async with aiohttp.ClientSession() as http:
        for url in (sim.ws_url, sim.ws_auth_url):
            with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
                await http.ws_connect(url)
            assert refused.value.status == 503
        assert sim.stats.connections_refused == 2
        apply_fault(sim, "clear", {})
        async with http.ws_connect(sim.ws_url) as ws:
            assert json.loads((await ws.receive()).data)["channel"] == "status"
    with pytest.raises(ValueError):
        sim.refuse_connections(0)
