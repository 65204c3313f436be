"""Session journal and replay: a trading session on the simulator is recorded, then replayed
through the same strategy, risk, portfolio and execution code, which must make exactly the
same decisions; a changed decision is caught."""

from __future__ import annotations

import asyncio
import gzip
import json
import math
import time
from decimal import Decimal
from pathlib import Path

from gal_friday.bus import EventBus
from gal_friday.cli import main
from gal_friday.config import Settings
from gal_friday.events import (
    BookEvent,
    FeatureEvent,
    OrderRequestEvent,
    OrderType,
    PredictionEvent,
    Side,
    TradeSignalApprovedEvent,
    TradeSignalProposedEvent,
)
from gal_friday.execution.handler import ExecutionHandler
from gal_friday.execution.paper import PaperVenue
from gal_friday.ingest import DataIngestor
from gal_friday.portfolio import PortfolioManager
from gal_friday.replay import replay_session
from gal_friday.risk import RiskManager
from gal_friday.session import SessionRecorder, read_session
from gal_friday.sim.server import SimExchange, build_market
from gal_friday.strategy import StrategyArbitrator


def session_settings(tmp_path: Path) -> Settings:
    return Settings.model_validate({
        "exchange": "sim", "pairs": ["XRP/USD", "DOGE/USD"],
        "paths": {"data_dir": str(tmp_path / "data")},
        "strategy": {"confirm_momentum": False, "buy_threshold": 0.6, "sell_threshold": 0.4,
                     "take_profit_pct": 1.5, "stop_loss_pct": 1.0},
        "paper": {"latency_ms": 0, "slippage_bps": 0},
        "execution": {"entry_timeout_s": 2.0, "entry_timeout_action": "market",
                      "reconcile_interval_s": 0},
    })


async def record_sim_session(settings: Settings, seconds: float) -> Path:
    """The trading path on the simulator's live market, predictions scripted (up, down, ...)
    so that entries, fills, protective orders and exits happen within seconds."""
    market = build_market(11, settings.pairs, None, 1.0, 200.0, False)
    async with SimExchange(market, seed=11) as sim:
        bus = EventBus()
        recorder = SessionRecorder(settings, models=("scripted",))
        recorder.attach(bus)
        venue = PaperVenue(settings.paper, settings.fees)
        venue.attach(bus)
        handler = ExecutionHandler(settings.execution, venue, bus)
        portfolio = PortfolioManager(settings.paper.initial_cash_usd, pairs=settings.pairs)
        portfolio.attach(bus)
        RiskManager(settings.risk, bus, portfolio.snapshot, taker_fee_pct=settings.fees.taker_pct)
        StrategyArbitrator(settings.strategy, settings.fees, bus).attach()
        handler.attach()
        ingestor = DataIngestor(settings, bus, ws_url=sim.ws_url, rest_url=sim.rest_url)
        await handler.start()
        bus.start()
        feed = asyncio.create_task(ingestor.run())
        try:
            await predict_script(bus, settings.pairs, seconds)
            await bus.drain()
        finally:
            feed.cancel()
            await asyncio.gather(feed, return_exceptions=True)
            await bus.stop()
            await handler.stop()
            recorder.close()
        return recorder.path


async def predict_script(bus: EventBus, pairs: tuple[str, ...], seconds: float) -> None:
    deadline = time.monotonic() + seconds
    step = 0
    while time.monotonic() < deadline:
        await asyncio.sleep(0.4)
        step += 1
        for pair in pairs:
            prob = 0.9 if (step // 4) % 2 == 0 else 0.1  # hold about 1.6 s, then reverse
            now = time.time_ns()
            await bus.publish(PredictionEvent(pair, now, "scripted", prob, now, 0))


async def test_a_simulator_session_replays_to_the_same_decisions(tmp_path: Path) -> None:
    settings = session_settings(tmp_path)
    path = await record_sim_session(settings, seconds=8)
    header, events = read_session(path)
    recorded = list(events)
    assert header["mode"] == "paper" and header["models"] == ["scripted"]
    assert sum(isinstance(e, BookEvent) for e in recorded) > 100
    requests = [e for e in recorded if isinstance(e, OrderRequestEvent)]
    roles = {e.role for e in requests}
    assert {"entry", "stop", "target", "exit"} <= roles, roles

    result = await replay_session(path)
    assert result.ok, result.mismatches
    assert result.compared["OrderRequestEvent"] == len(requests)
    assert result.compared["TradeSignalApprovedEvent"] >= 2

    # The CLI says so too, and finds the journal by name in the sessions directory.
    argv = ["--set", f"paths.data_dir={tmp_path / 'data'}", "replay", path.name]
    assert await asyncio.to_thread(main, argv) == 0


async def test_a_changed_decision_is_caught(tmp_path: Path) -> None:
    settings = session_settings(tmp_path)
    path = await record_sim_session(settings, seconds=4)
    tampered = tmp_path / "tampered.jsonl.gz"
    with gzip.open(path, "rt") as src, gzip.open(tampered, "wt") as dst:
        header = json.loads(src.readline())
        dst.write(json.dumps(header) + "\n")
        changed = False
        for line in src:
            name, fields = json.loads(line)
            if name == TradeSignalApprovedEvent.__name__ and not changed:
                fields["qty"] = str(int(float(fields["qty"])) + 1)
                changed = True
            dst.write(json.dumps([name, fields]) + "\n")
    assert changed
    result = await replay_session(tampered)
    assert not result.ok
    assert any("TradeSignalApprovedEvent" in m for m in result.mismatches)


def test_nan_features_and_an_exit_without_probability_survive_the_journal(
        tmp_path: Path) -> None:
    # JSON has no NaN (the encoder writes null): a feature without data yet and a stop's exit
    # signal (no probability) must come back as NaN, not be skipped as unreadable, or a
    # replay would run on different inputs than the session had
    recorder = SessionRecorder(session_settings(tmp_path))
    recorder.attach(EventBus())
    features = FeatureEvent("XRP/USD", 1, ("rsi_14", "flow_imbalance_60s"), (55.0, math.nan))
    exit_signal = TradeSignalProposedEvent(
        "s1", "XRP/USD", Side.SELL, OrderType.MARKET, Decimal("2.1"), Decimal("2.0"),
        Decimal("2.3"), math.nan, "stop-loss", 2, is_exit=True)
    recorder.on_event(features)
    recorder.on_event(exit_signal)
    recorder.close()
    _, events = read_session(recorder.path)
    got_features, got_exit = list(events)
    assert isinstance(got_features, FeatureEvent) and got_features.values[0] == 55.0
    assert math.isnan(got_features.values[1])
    assert isinstance(got_exit, TradeSignalProposedEvent) and math.isnan(got_exit.prob_up)
    assert got_exit.entry_price == Decimal("2.1") and got_exit.is_exit


def test_an_exit_without_probability_compares_equal_to_itself() -> None:
    from gal_friday.replay import _comparable

    def exit_signal(ts: int) -> TradeSignalProposedEvent:
        return TradeSignalProposedEvent("s1", "XRP/USD", Side.SELL, OrderType.MARKET,
                                        Decimal("2.1"), Decimal("2.0"), Decimal("2.3"),
                                        math.nan, "stop-loss", ts, is_exit=True)

    assert _comparable(exit_signal(1)) == _comparable(exit_signal(2))  # clock ignored
