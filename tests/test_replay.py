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
from typing import Any

import pytest

from gal_friday.bus import EventBus
from gal_friday.cli import main
from gal_friday.config import Settings
from gal_friday.domain import InstrumentSpec
from gal_friday.events import (
    BookEvent,
    ExecutionReportEvent,
    FeatureEvent,
    HaltEvent,
    InstrumentEvent,
    OrderAdoptedEvent,
    OrderRequestEvent,
    OrderStatus,
    OrderType,
    PairRestoredEvent,
    PredictionEvent,
    ReconciliationEvent,
    ResumeEvent,
    Side,
    TradeSignalApprovedEvent,
    TradeSignalProposedEvent,
    TradingStartedEvent,
)
from gal_friday.execution.handler import ExecutionHandler
from gal_friday.execution.paper import PaperVenue
from gal_friday.execution.venue import NullVenue, OrderRequest
from gal_friday.ingest import DataIngestor
from gal_friday.portfolio import PortfolioManager
from gal_friday.recovery import adopt_order, restore_pair
from gal_friday.replay import replay_session
from gal_friday.risk import RiskManager
from gal_friday.session import SessionRecorder, read_session
from gal_friday.sim.server import SimExchange, build_market
from gal_friday.strategy import StrategyArbitrator
from gal_friday.wiring import build_trading


def session_settings(tmp_path: Path) -> Settings:
    return Settings.model_validate(
        {
            "exchange": "sim",
            "pairs": ["XRP/USD", "DOGE/USD"],
            "paths": {"data_dir": str(tmp_path / "data")},
            "strategy": {
                "confirm_momentum": False,
                "buy_threshold": 0.6,
                "sell_threshold": 0.4,
                "take_profit_pct": 1.5,
                "stop_loss_pct": 1.0,
            },
            "paper": {"latency_ms": 0, "slippage_bps": 0},
            "execution": {
                "entry_timeout_s": 2.0,
                "entry_timeout_action": "market",
                "reconcile_interval_s": 0,
            },
        }
    )


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
        RiskManager(
            settings.risk, bus, portfolio.snapshot, taker_fee_pct=settings.fees.taker_pct
        ).attach()
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


def test_nan_features_and_an_exit_without_probability_survive_the_journal(tmp_path: Path) -> None:
    # JSON has no NaN or infinity (the encoder writes null for both): a feature without data
    # yet, an infinite one and a stop's exit signal (no probability) must come back as they
    # were, not be skipped as unreadable, or a replay would run on other inputs
    recorder = SessionRecorder(session_settings(tmp_path))
    recorder.attach(EventBus())
    features = FeatureEvent(
        "XRP/USD",
        1,
        ("rsi_14", "flow_imbalance_60s", "roc_5", "roc_15"),
        (55.0, math.nan, math.inf, -math.inf),
    )
    exit_signal = TradeSignalProposedEvent(
        "s1",
        "XRP/USD",
        Side.SELL,
        OrderType.MARKET,
        Decimal("2.1"),
        Decimal("2.0"),
        Decimal("2.3"),
        math.nan,
        "stop-loss",
        2,
        is_exit=True,
    )
    recorder.on_event(features)
    recorder.on_event(exit_signal)
    recorder.close()
    _, events = read_session(recorder.path)
    got_features, got_exit = list(events)
    assert isinstance(got_features, FeatureEvent) and got_features.values[0] == 55.0
    assert math.isnan(got_features.values[1])
    assert got_features.values[2:] == (math.inf, -math.inf)
    assert isinstance(got_exit, TradeSignalProposedEvent) and math.isnan(got_exit.prob_up)
    assert got_exit.entry_price == Decimal("2.1") and got_exit.is_exit
    with gzip.open(recorder.path, "rt") as journal:  # an older journal's null is NaN too
        lines = journal.read().splitlines()
    old = tmp_path / "old.jsonl.gz"
    with gzip.open(old, "wt") as journal:
        journal.write("\n".join([*lines[:-1], lines[-1].replace('"NaN"', "null")]) + "\n")
    _, events = read_session(old)
    assert math.isnan(list(events)[-1].prob_up)  # type: ignore[attr-defined]


def test_an_exit_without_probability_compares_equal_to_itself() -> None:
    from gal_friday.replay import _comparable

    def exit_signal(ts: int) -> TradeSignalProposedEvent:
        return TradeSignalProposedEvent(
            "s1",
            "XRP/USD",
            Side.SELL,
            OrderType.MARKET,
            Decimal("2.1"),
            Decimal("2.0"),
            Decimal("2.3"),
            math.nan,
            "stop-loss",
            ts,
            is_exit=True,
        )

    assert _comparable(exit_signal(1)) == _comparable(exit_signal(2))  # clock ignored


# --- a live-like run with a scripted exchange: timing the replay must not depend on ----------

T0 = 1_700_000_000_000_000_000
SEC = 1_000_000_000
XRP = InstrumentSpec(
    "XRP/USD", 5, 8, Decimal("0.00001"), Decimal("1e-8"), Decimal(1), Decimal("0.5")
)
DOGE = InstrumentSpec(
    "DOGE/USD", 7, 8, Decimal("1e-7"), Decimal("1e-8"), Decimal(1), Decimal("0.5")
)


class _Clock:
    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> int:
        return self.now


class _ScriptedVenue(NullVenue):
    """Takes every order; a stop-loss waits at the 'network' until ``gate`` opens."""

    name = "scripted"

    def __init__(self) -> None:
        self.sent: list[OrderRequest] = []
        self.cancels: list[str] = []
        self.gate = asyncio.Event()
        self.gate.set()
        self.on_report: Any = None

    async def start(self, on_report: Any) -> None:
        self.on_report = on_report

    async def submit(self, order: OrderRequest) -> str:
        self.sent.append(order)
        if order.type is OrderType.STOP_LOSS:
            await self.gate.wait()
        return "X" + order.client_order_id

    async def cancel(self, client_order_id: str) -> None:
        self.cancels.append(client_order_id)


class _LiveLike:
    """The live modules on a real (queued) bus with the session recorder, a scripted venue
    and a clock the test moves."""

    def __init__(self, tmp_path: Path, cash: Decimal | None = None) -> None:
        s = session_settings(tmp_path)
        self.clock, self.bus, self.venue = _Clock(), EventBus(), _ScriptedVenue()
        self.recorder = SessionRecorder(s, clock_ns=self.clock)
        self.recorder.attach(self.bus)
        self.modules = build_trading(
            s, self.bus, self.venue, cash=cash or s.paper.initial_cash_usd, clock=self.clock
        )
        self.handler = self.modules.execution

    async def start(self) -> None:
        await self.venue.start(self.handler.on_venue_report)
        self.bus.start()
        await self.publish(InstrumentEvent("XRP/USD", XRP))
        await self.publish(InstrumentEvent("DOGE/USD", DOGE))
        await self.publish(_book("XRP/USD", 200000, 200010, 5, T0))
        await self.publish(_book("DOGE/USD", 1500000, 1500100, 7, T0 + 1))

    async def publish(self, event: Any, at: int | None = None) -> None:
        if at is not None:
            self.clock.now = at
        await self.bus.publish(event)
        await self.settle()

    async def report(
        self,
        order: OrderRequest,
        status: OrderStatus,
        filled: Decimal,
        ts: int,
        price: Decimal | None = None,
    ) -> None:
        self.clock.now = max(self.clock.now, ts)
        price = (price or order.limit_price) if filled else None
        await self.venue.on_report(
            ExecutionReportEvent(
                order.client_order_id,
                "X" + order.client_order_id,
                order.signal_id,
                order.pair,
                order.side,
                order.type,
                status,
                order.qty,
                filled,
                price,
                filled or None,
                price,
                Decimal(0),
                "USD",
                None,
                ts,
            )
        )
        await self.settle()

    async def settle(self) -> None:
        for _ in range(5):
            await self.bus.drain()
            for _ in range(10):
                await asyncio.sleep(0)

    async def finish(self) -> Path:
        await self.settle()
        await self.bus.stop()
        self.recorder.close()
        return self.recorder.path


def _book(pair: str, bid: int, ask: int, precision: int, ts: int) -> BookEvent:
    return BookEvent(pair, ((bid, 10**11),), ((ask, 10**11),), precision, 8, 0, 1, True, "", ts)


async def test_an_entry_timed_out_by_the_clock_alone_replays(tmp_path: Path) -> None:
    # live, the handler's timer times the entry out with no market data after its deadline;
    # the replay must time it out too (and send the rest at market) before the cancel report
    live = _LiveLike(tmp_path)
    await live.start()
    await live.publish(PredictionEvent("XRP/USD", T0 + 1000, "m", 0.9, T0, 0), at=T0 + 1000)
    entry = live.venue.sent[0]
    await live.report(entry, OrderStatus.ACKNOWLEDGED, Decimal(0), T0 + 2000)
    live.clock.now = T0 + 2 * SEC + 200_000_000  # the timer, 0.2 s past the 2 s deadline
    await live.handler.tick(live.clock.now)
    await live.settle()
    assert live.venue.cancels == [entry.client_order_id]
    await live.report(entry, OrderStatus.CANCELLED, Decimal(0), T0 + 2 * SEC + 210_000_000)
    assert [o.type for o in live.venue.sent] == [OrderType.LIMIT, OrderType.MARKET]
    result = await replay_session(await live.finish())
    assert result.ok, result.mismatches
    assert result.compared["OrderRequestEvent"] == 2


async def test_orders_interleaved_by_network_waits_replay(tmp_path: Path) -> None:
    # live, the XRP stop-loss waits on the network while a DOGE entry goes out, so the
    # journal holds entry, stop, DOGE entry, target; the replay sends them in another order
    live = _LiveLike(tmp_path)
    await live.start()
    live.venue.gate.clear()
    await live.publish(PredictionEvent("XRP/USD", T0 + 1000, "m", 0.9, T0, 0), at=T0 + 1000)
    entry = live.venue.sent[0]
    await live.report(entry, OrderStatus.FILLED, entry.qty, T0 + 2000)
    await live.publish(PredictionEvent("DOGE/USD", T0 + 3000, "m", 0.9, T0, 0), at=T0 + 3000)
    live.venue.gate.set()
    await live.settle()
    sent = [(o.pair, o.type) for o in live.venue.sent]
    assert sent == [
        ("XRP/USD", OrderType.LIMIT),
        ("XRP/USD", OrderType.STOP_LOSS),
        ("DOGE/USD", OrderType.LIMIT),
        ("XRP/USD", OrderType.TAKE_PROFIT),
    ]
    result = await replay_session(await live.finish())
    assert result.ok, result.mismatches
    assert result.compared["OrderRequestEvent"] == 4


@pytest.mark.parametrize("announced", [True, False])
async def test_a_halt_and_resume_replay_from_the_journal(tmp_path: Path, announced: bool) -> None:
    # live: an entry is working when the operator HALTs; the handler cancels it as the state
    # changes, risk refuses the next entry, and after the resume the one after is approved.
    # A journal from before state changes were recorded (``announced`` False) replays too:
    # the replay derives them from the recorded commands by the same rules
    live = _LiveLike(tmp_path)
    await live.start()
    await live.publish(PredictionEvent("XRP/USD", T0 + 1000, "m", 0.9, T0, 0), at=T0 + 1000)
    entry = live.venue.sent[0]
    await live.report(entry, OrderStatus.ACKNOWLEDGED, Decimal(0), T0 + 2000)
    await live.publish(HaltEvent("maintenance", "operator", T0 + 3000), at=T0 + 3000)
    assert live.venue.cancels == [entry.client_order_id]
    await live.report(entry, OrderStatus.CANCELLED, Decimal(0), T0 + 4000)
    await live.publish(PredictionEvent("XRP/USD", T0 + 5000, "m", 0.9, T0, 0), at=T0 + 5000)
    await live.publish(ResumeEvent("ann", T0 + 6000), at=T0 + 6000)
    await live.publish(PredictionEvent("XRP/USD", T0 + 7000, "m", 0.9, T0, 0), at=T0 + 7000)
    assert len(live.venue.sent) == 2  # the entry after the resume
    path = await live.finish()
    with gzip.open(path) as journal:
        lines = journal.read().splitlines(keepends=True)
    states = [line for line in lines if line.startswith(b'["TradingStateChangedEvent"')]
    assert len(states) == 2  # HALTED, then ACTIVE: recorded as announced
    if not announced:
        path = tmp_path / "old.jsonl.gz"
        with gzip.open(path, "wb") as fh:
            fh.write(b"".join(line for line in lines if line not in states))
    result = await replay_session(path)
    assert result.ok, result.mismatches
    assert result.compared["TradeSignalRejectedEvent"] == 1  # halt: refused while HALTED
    assert result.compared["OrderRequestEvent"] == 2


async def test_a_journal_cut_by_a_crash_checks_what_it_holds(tmp_path: Path) -> None:
    live = _LiveLike(tmp_path)
    await live.start()
    await live.publish(PredictionEvent("XRP/USD", T0 + 1000, "m", 0.9, T0, 0), at=T0 + 1000)
    path = await live.finish()
    with gzip.open(path) as journal:
        lines = journal.read().splitlines(keepends=True)
    cut_at = next(i for i, line in enumerate(lines) if line.startswith(b'["PredictionEvent"'))
    cut = tmp_path / "cut.jsonl.gz"
    with gzip.open(cut, "wb") as fh:  # the prediction was written, half the next line too
        fh.write(b"".join(lines[: cut_at + 1]) + lines[cut_at + 1][:25])
    cut.write_bytes(cut.read_bytes()[:-8])  # and no gzip trailer: the process was killed
    result = await replay_session(cut)
    assert result.truncated and result.ok, result.mismatches
    # the strategy's proposal for the last prediction was lost with the tail: counted, and
    # not called a difference (each module is fed its recorded inputs, so risk and the
    # handler had no recorded proposal or approval to act on)
    assert result.unchecked == {"TradeSignalProposedEvent": 1}
    whole = await replay_session(path)  # the whole journal: everything checked
    assert not whole.truncated and whole.ok and not whole.unchecked
    assert whole.compared["OrderRequestEvent"] == 1


async def test_an_exit_after_unconfirmed_cancels_replays(tmp_path: Path) -> None:
    # live, the exchange never confirms the cancels of the stop and the target: the exit is
    # sent when cancel_wait_s has passed on the handler's clock (its timer); the replay waits
    # on the recorded clock, not for real seconds, and sends it too
    live = _LiveLike(tmp_path)
    await live.start()
    await live.publish(PredictionEvent("XRP/USD", T0 + 1000, "m", 0.9, T0, 0), at=T0 + 1000)
    entry = live.venue.sent[0]
    await live.report(entry, OrderStatus.FILLED, entry.qty, T0 + 2000)
    stop, target = live.venue.sent[1:]
    await live.report(stop, OrderStatus.ACKNOWLEDGED, Decimal(0), T0 + 3000)
    await live.report(target, OrderStatus.ACKNOWLEDGED, Decimal(0), T0 + 4000)
    await live.publish(PredictionEvent("XRP/USD", T0 + SEC, "m", 0.1, T0, 0), at=T0 + SEC)
    assert sorted(live.venue.cancels) == sorted([stop.client_order_id, target.client_order_id])
    await live.handler.tick(T0 + SEC + 1000)  # the timer, before cancel_wait_s (5 s) passed
    await live.settle()
    assert len(live.venue.sent) == 3
    live.clock.now = T0 + 7 * SEC
    await live.handler.tick(live.clock.now)  # the timer, past it: the exit goes out
    await live.settle()
    (exit_order,) = live.venue.sent[3:]
    assert exit_order.type is OrderType.MARKET and exit_order.side is Side.SELL
    await live.report(exit_order, OrderStatus.FILLED, exit_order.qty, T0 + 7 * SEC + 1000)
    started = time.monotonic()
    result = await replay_session(await live.finish())
    assert result.ok, result.mismatches
    assert result.compared["OrderRequestEvent"] == 4
    assert time.monotonic() - started < 4  # nobody waited the 5 s for real


async def test_what_crash_recovery_handed_over_replays(tmp_path: Path) -> None:
    # a live start: the exchange's USD sizes the entries, recovery restored 100 XRP held from
    # the earlier run and adopted its working DOGE entry; the replay must start from the same
    # cash, sell the restored XRP on a reversal, and time the adopted entry out to market
    cash = Decimal(2000)
    live = _LiveLike(tmp_path, cash)
    await live.bus.publish(TradingStartedEvent("live", cash, T0 - 10))
    await live.bus.publish(
        ReconciliationEvent(
            (("USD", cash), ("XRP", Decimal(100))),
            (),
            "sim",
            T0 - 9,
            (("XRP/USD", Decimal("1.9")),),
        )
    )
    adopted = OrderAdoptedEvent(
        "gfeold1",
        "DOGE/USD",
        Side.BUY,
        OrderType.LIMIT,
        Decimal(1000),
        Decimal("0.14"),
        None,
        OrderStatus.ACKNOWLEDGED,
        Decimal(0),
        "sig-old",
        None,
        T0 - 8,
    )
    live.clock.now = T0 - 8
    adopt_order(live.handler, adopted)
    await live.bus.publish(adopted)
    restored = PairRestoredEvent(
        "XRP/USD",
        Decimal(100),
        Decimal("1.8"),
        Decimal("2.2"),
        Decimal(0),
        "recovered-XRP/USD",
        T0 - 7,
    )
    await live.bus.publish(restored)
    restore_pair(live.handler, restored)
    await live.start()
    await live.publish(PredictionEvent("XRP/USD", T0 + 1000, "m", 0.1, T0, 0), at=T0 + 1000)
    (exit_order,) = live.venue.sent
    assert exit_order.side is Side.SELL and exit_order.qty == 100
    await live.report(exit_order, OrderStatus.FILLED, exit_order.qty, T0 + 2000, Decimal("2.0"))
    live.clock.now = T0 + 3 * SEC  # past the adopted entry's 2 s timeout
    await live.handler.tick(live.clock.now)
    await live.settle()
    assert live.venue.cancels == ["gfeold1"]
    await live.venue.on_report(
        ExecutionReportEvent(
            "gfeold1",
            "Xold",
            "sig-old",
            "DOGE/USD",
            Side.BUY,
            OrderType.LIMIT,
            OrderStatus.CANCELLED,
            Decimal(1000),
            Decimal(0),
            None,
            None,
            None,
            Decimal(0),
            "USD",
            None,
            T0 + 3 * SEC + 1000,
        )
    )
    await live.settle()
    rest = live.venue.sent[-1]
    assert (rest.pair, rest.type, rest.qty) == ("DOGE/USD", OrderType.MARKET, 1000)
    await live.publish(PredictionEvent("XRP/USD", T0 + 5 * SEC, "m", 0.9, T0, 0), at=T0 + 5 * SEC)
    entry = live.venue.sent[-1]
    assert (entry.pair, entry.type) == ("XRP/USD", OrderType.LIMIT)
    assert entry.qty * entry.limit_price < cash  # sized on the exchange's cash, not paper's
    result = await replay_session(await live.finish())
    assert result.ok, result.mismatches
    assert result.compared["OrderRequestEvent"] == 3


def test_two_runs_started_in_the_same_second_keep_both_journals(tmp_path: Path) -> None:
    settings = session_settings(tmp_path)
    first, second = (SessionRecorder(settings, clock_ns=lambda: T0) for _ in range(2))
    first.attach(EventBus())
    second.attach(EventBus())
    first.close()
    second.close()
    assert first.path != second.path and first.path.exists() and second.path.exists()
    assert read_session(second.path)[0]["session"] == second.path.name.removesuffix(".jsonl.gz")
