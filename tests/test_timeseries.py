"""TimeSeriesWriter against a real server speaking InfluxDB's v2 write API on loopback.

The server is VictoriaMetrics at 127.0.0.1:8428 (started by ``scripts/test``): it takes
``/api/v2/write`` and names each series ``<measurement>_<field>``. Every test run tags its
points with a fresh ``run`` id so runs never see each other's points. When the server is not
reachable the run stops before the first test, saying so (``needs_server`` in conftest.py):
the writer's whole point is talking to it.
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
import socket
import time
import uuid
from collections.abc import AsyncIterator
from decimal import Decimal
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from gal_friday.bus import EventBus, Policy
from gal_friday.config import Settings, TimeseriesSettings
from gal_friday.domain import PortfolioSnapshot, Position
from gal_friday.events import (
    BookEvent,
    ComponentState,
    Event,
    FeatureEvent,
    FeedStatsEvent,
    PortfolioEvent,
    PredictionEvent,
    TradingState,
    TradingStateChangedEvent,
)
from gal_friday.timeseries import TimeSeriesWriter, line

VM = "http://127.0.0.1:8428"
D = Decimal


def settings(url: str = VM, **kw: Any) -> Settings:
    ts = {"url": url, "batch_size": 50, "flush_interval_s": 0.05, **kw}
    return Settings(timeseries=TimeseriesSettings(**ts))


def snapshot(ts_ns: int, cash: str = "9000", xrp: str = "2000") -> PortfolioSnapshot:
    positions = (Position("XRP/USD", D(xrp), D("0.5"), D("0.5"), ts_ns),)
    equity = D(cash) + D(xrp) * D("0.5")
    return PortfolioSnapshot(
        ts_ns,
        D(cash),
        D(cash),
        positions,
        equity,
        peak_equity=D("10200"),
        day_start_equity=D("10200"),
        week_start_equity=equity,
        realised_pnl=D("-12.5"),
        fees_paid=D("3"),
        consecutive_losses=2,
    )


def book(pair: str, ts_ns: int, bid: int = 4999, ask: int = 5001) -> BookEvent:
    return BookEvent(pair, ((bid, 100),), ((ask, 100),), 4, 0, 0, 1, True, "", ts_ns)


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=5)) as session:
        try:
            async with session.get(f"{VM}/health") as r:
                assert r.status == 200, f"VictoriaMetrics /health answered {r.status}"
        except aiohttp.ClientError as exc:
            pytest.fail(
                f"VictoriaMetrics is not reachable at {VM} ({exc}); start it with "
                "scripts/test — these tests need a real write-API server"
            )
        yield session


async def export(http: aiohttp.ClientSession, run: str, want: set[str]) -> dict[str, Any]:
    """Series of this run by metric name, polled until every ``want`` name is there."""
    found: dict[str, Any] = {}
    for _ in range(50):
        async with http.get(f"{VM}/internal/force_flush"):
            pass
        form = {"match[]": f'{{run="{run}"}}'}
        async with http.post(f"{VM}/api/v1/export", data=form) as r:
            text = await r.text()
        found = {}
        for row in filter(None, text.splitlines()):
            item = json.loads(row)
            metric = item["metric"]
            key = metric["__name__"] + "".join(
                f"|{k}={metric[k]}" for k in ("pair", "model") if k in metric
            )
            found[key] = item
        if want <= found.keys():
            return found
        await asyncio.sleep(0.1)
    pytest.fail(f"missing series {sorted(want - found.keys())}; got {sorted(found)}")


async def publish_all(bus: EventBus, events: list[Event]) -> None:
    for event in events:
        await bus.publish(event)
        await bus.drain()


# --- against the real server ------------------------------------------------------------------


@pytest.mark.needs_server("victoria-metrics")
async def test_series_reach_the_server(http: aiohttp.ClientSession) -> None:
    run = uuid.uuid4().hex
    bus = EventBus()
    writer = TimeSeriesWriter(settings(), bus, tags={"run": run})
    writer.attach()
    bus.start()
    await writer.start()
    now = time.time_ns()
    names = ("rsi_14", "macd_12_26_pct", "roc_5_pct", "book_spread_pct", "atr_14")
    await publish_all(
        bus,
        [
            PortfolioEvent(snapshot(now)),
            PredictionEvent("XRP/USD", now, "lgbm-a", 0.71, now - 5_000_000, 2_500_000),
            FeatureEvent("XRP/USD", now, names, (61.5, 0.02, 0.3, 0.04, math.nan)),
            book("XRP/USD", now),
            book("XRP/USD", now + 1_000),  # second one sampled out
            book("DOGE/USD", now, 1000, 1002),
            FeedStatsEvent(
                ComponentState.CONNECTED,
                900,
                42.5,
                800,
                1,
                0,
                2,
                "",
                (("XRP/USD", 0.4), ("DOGE/USD", 1.5)),
                now,
            ),
            TradingStateChangedEvent(
                TradingState.HALTED, TradingState.ACTIVE, "test", "operator", now
            ),
        ],
    )
    await writer.stop()
    await bus.stop()

    found = await export(
        http,
        run,
        {
            "portfolio_equity",
            "portfolio_cash",
            "portfolio_drawdown_total_pct",
            "portfolio_drawdown_daily_pct",
            "portfolio_drawdown_weekly_pct",
            "portfolio_exposure",
            "portfolio_exposure_pct",
            "portfolio_consecutive_losses",
            "position_value|pair=XRP/USD",
            "prediction_prob_up|pair=XRP/USD|model=lgbm-a",
            "prediction_latency_ms|pair=XRP/USD|model=lgbm-a",
            "features_rsi_14|pair=XRP/USD",
            "features_roc_5_pct|pair=XRP/USD",
            "features_book_spread_pct|pair=XRP/USD",
            "book_bid|pair=XRP/USD",
            "book_ask|pair=XRP/USD",
            "book_spread|pair=XRP/USD",
            "book_spread|pair=DOGE/USD",
            "feed_frames_per_s",
            "feed_checksum_failures",
            "market_data_age_s|pair=DOGE/USD",
            "control_halted",
        },
    )

    def value(key: str) -> float:
        [v] = found[key]["values"]  # exactly one point per series
        return float(v)

    assert value("portfolio_equity") == 10000.0
    assert value("portfolio_exposure_pct") == 10.0
    assert value("portfolio_drawdown_total_pct") == pytest.approx(100 * 200 / 10200)
    assert value("portfolio_drawdown_weekly_pct") == 0.0
    assert value("prediction_prob_up|pair=XRP/USD|model=lgbm-a") == 0.71
    assert value("prediction_latency_ms|pair=XRP/USD|model=lgbm-a") == 2.5
    assert value("features_rsi_14|pair=XRP/USD") == 61.5
    assert value("book_spread|pair=XRP/USD") == pytest.approx(0.0002)
    assert value("book_bid|pair=DOGE/USD") == 0.1
    assert value("feed_frames_per_s") == 42.5
    assert value("market_data_age_s|pair=DOGE/USD") == 1.5
    assert found["portfolio_equity"]["timestamps"] == [now // 1_000_000]
    assert "features_macd_12_26_pct|pair=XRP/USD" not in found  # not on the chart list
    assert "features_atr_14|pair=XRP/USD" not in found  # NaN while warming up: skipped
    # portfolio, position, prediction, features, 2 book tops, feed, 2 data ages, control
    assert writer.stats() == type(writer.stats())(10, 0, 0, 0)


@pytest.mark.needs_server("victoria-metrics")
async def test_batches_by_size_while_running(http: aiohttp.ClientSession) -> None:
    run = uuid.uuid4().hex
    bus = EventBus()
    writer = TimeSeriesWriter(settings(batch_size=10, flush_interval_s=30), bus, tags={"run": run})
    await writer.start()
    base = time.time_ns() - 1_000_000_000
    for i in range(25):  # a full batch wakes the writer: no waiting for the 30 s interval
        writer.on_event(PredictionEvent("XRP/USD", base + i * 1_000_000, "m", i / 100, 0, 0))
    for _ in range(100):
        if writer.written >= 25:
            break
        await asyncio.sleep(0.02)
    assert writer.stats() == type(writer.stats())(25, 0, 0, 0)
    writer.on_event(PredictionEvent("XRP/USD", base + 10**8, "m", 0.9, 0, 0))
    await asyncio.sleep(0.1)
    assert writer.stats().buffered == 1  # below a batch: waits for the interval (or stop)
    await writer.stop()
    assert writer.stats() == type(writer.stats())(26, 0, 0, 0)
    found = await export(http, run, {"prediction_prob_up|pair=XRP/USD|model=m"})
    for _ in range(50):  # all 25 points of the series, once the server has them all
        if len(found["prediction_prob_up|pair=XRP/USD|model=m"]["values"]) == 26:
            break
        await asyncio.sleep(0.1)
        found = await export(http, run, {"prediction_prob_up|pair=XRP/USD|model=m"})
    assert len(found["prediction_prob_up|pair=XRP/USD|model=m"]["values"]) == 26


# --- server away: dropped, counted, trading path unaffected ------------------------------------


async def test_server_away_drops_and_counts_without_slowing_the_bus() -> None:
    bus = EventBus()
    trading: list[Event] = []
    bus.subscribe(PortfolioEvent, trading.append, name="trading", policy=Policy.BLOCK)
    writer = TimeSeriesWriter(
        settings(f"http://127.0.0.1:{closed_port()}", batch_size=5, flush_interval_s=0.01),
        bus,
        tags={"run": "away"},
    )
    sub = writer.attach()
    bus.start()
    await writer.start()
    now = time.time_ns()
    slowest = 0.0
    for i in range(300):
        t0 = time.perf_counter()
        await bus.publish(PortfolioEvent(snapshot(now + i)))
        slowest = max(slowest, time.perf_counter() - t0)
        if i % 50 == 0:
            await asyncio.sleep(0.02)  # let the writer try (and fail) meanwhile
    await bus.drain()
    for _ in range(100):
        if writer.errors:
            break
        await asyncio.sleep(0.01)
    await writer.stop()
    await bus.stop()
    assert len(trading) == 300  # the trading subscriber saw everything
    assert slowest < 0.05  # publish never waited on the writer
    stats = writer.stats()
    assert stats.written == 0 and stats.errors >= 1 and stats.buffered == 0
    # every point the writer made (two per snapshot: portfolio + one position) was dropped
    assert stats.dropped == 2 * sub.stats().delivered > 0


async def test_full_buffer_drops_newest_and_counts() -> None:
    writer = TimeSeriesWriter(
        settings(f"http://127.0.0.1:{closed_port()}", queue_size=100), EventBus()
    )
    now = time.time_ns()
    for i in range(130):
        writer.on_event(PredictionEvent("XRP/USD", now + i, "m", 0.5, 0, 0))
    assert (writer.stats().buffered, writer.dropped) == (100, 30)
    await writer.stop()  # never started: what is buffered is dropped, not written
    assert writer.stats() == type(writer.stats())(0, 130, 0, 0)


# --- the token ------------------------------------------------------------------------------


async def test_token_sent_but_never_shown(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    token = "s3cr3t-t0ken-" + uuid.uuid4().hex
    monkeypatch.setenv("GF_TEST_INFLUX_TOKEN", token)
    seen: list[str] = []

    async def write(request: web.Request) -> web.Response:
        seen.append(request.headers.get("Authorization", ""))
        return web.Response(status=401, text=f"bad token {token}", headers={"X-Echo": token})

    app = web.Application()
    app.router.add_post("/api/v2/write", write)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    try:
        writer = TimeSeriesWriter(
            settings(f"http://127.0.0.1:{port}", token_env="GF_TEST_INFLUX_TOKEN"), EventBus()
        )
        await writer.start()
        with caplog.at_level(logging.DEBUG):
            writer.on_event(PredictionEvent("XRP/USD", time.time_ns(), "m", 0.5, 0, 0))
            for _ in range(100):
                if writer.errors:
                    break
                await asyncio.sleep(0.01)
            await writer.stop()
    finally:
        await runner.cleanup()
    assert seen and seen[0] == f"Token {token}"
    assert (writer.errors, writer.dropped, writer.written) == (1, 1, 0)
    assert token not in repr(writer) and "127.0.0.1" in repr(writer)
    ours = [r for r in caplog.records if r.name.startswith("gal_friday")]
    logged = "\n".join(f"{r.getMessage()} {r.__dict__}" for r in ours)
    assert "time series write failed" in logged and "401" in logged
    assert token not in logged


# --- line protocol --------------------------------------------------------------------------


def test_line_protocol_escapes_and_skips_nan() -> None:
    assert (
        line("m x", (("run", "a,b=c d"), ("empty", "")), [("f", 1), ("g", math.nan)], 5)
        == r"m\ x,run=a\,b\=c\ d f=1.0 5"
    )
    assert line("m", (), [("f", math.inf), ("g", math.nan)], 5) is None


def test_book_top_sampled_per_pair() -> None:
    writer = TimeSeriesWriter(settings(), EventBus(), book_interval_s=0.25)
    t = time.time_ns()
    kept = [
        bool(writer.points(book(pair, t + ms * 1_000_000)))
        for pair, ms in [
            ("XRP/USD", 0),
            ("XRP/USD", 100),
            ("DOGE/USD", 100),
            ("XRP/USD", 250),
            ("XRP/USD", 400),
            ("XRP/USD", 600),
        ]
    ]
    assert kept == [True, False, True, True, False, True]
    one_sided = BookEvent("XRP/USD", ((4999, 1),), (), 4, 0, 0, 1, True, "", t + 10**10)
    assert writer.points(one_sided) == [None]
